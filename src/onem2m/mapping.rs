//! Which oneM2M answer a failure gets: refused authentication, a Pingora error on either side,
//! and the `WWW-Authenticate` challenges of a 401.

use pingora::{Error, ErrorSource, ErrorType};

use super::M2mError;
use crate::auth::{AuthError, Failure};
use crate::identity::{Method, Scheme};

/// The answer to a refused authentication.
pub fn auth_error(e: &AuthError) -> M2mError {
    match e.failure {
        Failure::OriginatorNotAllowed => M2mError::forbidden(e.reason),
        Failure::RateLimited => {
            M2mError::too_many_attempts(e.retry_after.map_or(1, |d| d.as_secs().max(1)))
        }
        // fail closed: the verification service, not the client, is the problem
        Failure::Unavailable => M2mError::upstream(503, e.reason),
        Failure::Busy => M2mError::busy(e.reason),
        _ => M2mError::unauthenticated(e.reason),
    }
}

/// The `WWW-Authenticate` values of a 401, one per distinct scheme of the enabled methods.
pub fn challenges_for(methods: &[Method], realm: &str, basic_realm: &str) -> Vec<String> {
    let mut challenges: Vec<String> = Vec::new();
    for m in methods {
        let c = match m.scheme() {
            Scheme::ClientCertificate => format!("ClientCertificate realm=\"{realm}\""),
            Scheme::Basic => format!("Basic realm=\"{basic_realm}\", charset=\"UTF-8\""),
            Scheme::Bearer => format!("Bearer realm=\"{realm}\""),
            Scheme::Named(name) => format!("{name} realm=\"{realm}\""),
        };
        if !challenges.contains(&c) {
            challenges.push(c);
        }
    }
    challenges
}

/// RFC 6750: a refused bearer-type token gets `error` and `error_description` in its
/// challenge (the reason never holds token content).
pub fn challenges_for_refusal(
    challenges: &[String],
    method: Option<Method>,
    failure: Failure,
    reason: &str,
) -> Vec<String> {
    let bearer_type = method.is_some_and(|m| m.scheme() == Scheme::Bearer);
    let error = match failure {
        Failure::Malformed if bearer_type => "invalid_request",
        Failure::BadCredentials | Failure::Expired if bearer_type => "invalid_token",
        _ => return challenges.to_vec(),
    };
    let description: String = reason
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect();
    challenges
        .iter()
        .map(|c| {
            if c.starts_with("Bearer ") {
                format!("{c}, error=\"{error}\", error_description=\"{description}\"")
            } else {
                c.clone()
            }
        })
        .collect()
}

/// Kinds of upstream failure, the `kind` label of the upstream-error metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    Refused,
    Timeout,
    InvalidResponse,
    Closed,
    Other,
}

impl UpstreamError {
    pub const ALL: [UpstreamError; 5] = [
        UpstreamError::Refused,
        UpstreamError::Timeout,
        UpstreamError::InvalidResponse,
        UpstreamError::Closed,
        UpstreamError::Other,
    ];

    pub fn of(e: &Error) -> Self {
        use ErrorType::*;
        match e.etype() {
            ConnectRefused | ConnectNoRoute => UpstreamError::Refused,
            ConnectTimedout | ReadTimedout | WriteTimedout => UpstreamError::Timeout,
            InvalidHTTPHeader | H1Error => UpstreamError::InvalidResponse,
            ConnectionClosed | ReadError | WriteError => UpstreamError::Closed,
            _ => UpstreamError::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            UpstreamError::Refused => "refused",
            UpstreamError::Timeout => "timeout",
            UpstreamError::InvalidResponse => "invalid_response",
            UpstreamError::Closed => "closed",
            UpstreamError::Other => "other",
        }
    }
}

/// Pingora error types the proxy raises itself for WebSocket failures.
pub const WEBSOCKET_NEGOTIATION: &str = "WebSocketNegotiation";
pub const WEBSOCKET_FRAMING: &str = "WebSocketFraming";

/// The oneM2M answer to a failure, or `None` when the client is gone anyway.
pub fn pingora_error(e: &Error) -> Option<M2mError> {
    use ErrorType::*;
    if let HTTPStatus(code) = e.etype() {
        let reason = match code {
            413 => "request body too large",
            // the buffer budget (crate::buffers): try again soon
            503 => return Some(M2mError::busy("proxy buffer budget exhausted; try again")),
            _ => "request refused",
        };
        return Some(M2mError::other(*code, reason));
    }
    if let Custom(WEBSOCKET_NEGOTIATION) = e.etype() {
        return Some(M2mError::upstream(
            502,
            "upstream CSE did not accept a oneM2M WebSocket subprotocol",
        ));
    }
    match e.esource() {
        ErrorSource::Upstream => Some(match e.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout => {
                M2mError::upstream(504, "upstream CSE did not answer in time")
            }
            _ => M2mError::upstream(502, "upstream CSE not reachable"),
        }),
        ErrorSource::Downstream => match e.etype() {
            ReadError | WriteError | ConnectionClosed | ReadTimedout | WriteTimedout => None,
            _ => Some(M2mError::other(400, "malformed request")),
        },
        ErrorSource::Internal | ErrorSource::Unset => Some(M2mError::other(500, "internal error")),
    }
}
