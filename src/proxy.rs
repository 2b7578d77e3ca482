//! The request's story, phase by phase: capture the connection's identity, authenticate, apply
//! the originator policy, rewrite headers, forward, answer failures in oneM2M form.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::auth::mtls::CertIdentity;
use crate::auth::{AuthError, Authenticator, ConnectionCredentials};
use crate::config::{Anonymous, Method};
use crate::headers::{self, Forwarding};
use crate::identity::Identity;
use crate::onem2m::{self, M2mError};
use crate::originator::OriginatorPolicy;

/// How long an upgraded (WebSocket) connection may stay silent. Pingora's default downstream
/// read timeout (60 s) would otherwise close idle WebSockets.
const WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

pub struct AuthProxy {
    pub auth: Authenticator,
    pub policy: OriginatorPolicy,
    pub anonymous: Anonymous,
    pub forward_authorization: bool,
    pub upstream: HttpPeer,
    pub tls: bool,
    /// `WWW-Authenticate` values for a 401, one per enabled method.
    pub challenges: Vec<String>,
}

#[derive(Default)]
pub struct RequestCtx {
    request_id: Option<String>,
    identity: Option<Arc<Identity>>,
    /// What the upstream receives as `X-M2M-Origin`; `None` for anonymous requests.
    originator: Option<String>,
}

impl AuthProxy {
    pub fn challenges_for(methods: &[Method], realm: &str) -> Vec<String> {
        methods
            .iter()
            .map(|m| match m {
                // No standard scheme exists for client certificates; this one names what is
                // missing for clients and humans reading the response.
                Method::Mtls => format!("ClientCertificate realm=\"{realm}\""),
                Method::Basic => format!("Basic realm=\"{realm}\", charset=\"UTF-8\""),
                Method::Bearer => format!("Bearer realm=\"{realm}\""),
            })
            .collect()
    }

    /// Answer the request ourselves; `Ok(true)` tells Pingora the request is done.
    async fn refuse(&self, session: &mut Session, ctx: &RequestCtx, err: M2mError) -> Result<bool> {
        self.respond(session, ctx.request_id.as_deref(), &err)
            .await?;
        Ok(true)
    }

    async fn respond(&self, session: &mut Session, ri: Option<&str>, err: &M2mError) -> Result<()> {
        let body = err.body();
        let header = err.response_header(ri, &self.challenges, body.len())?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await?;
        Ok(())
    }

    fn authenticate(&self, session: &Session) -> Result<Option<Arc<Identity>>, M2mError> {
        let client_cert = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|tls| tls.extension.get::<CertIdentity>());
        let conn = ConnectionCredentials { client_cert };
        match self.auth.authenticate(&conn) {
            Ok(identity) => Ok(Some(identity)),
            Err(AuthError::NoCredentials) if self.anonymous == Anonymous::Allow => Ok(None),
            Err(AuthError::NoCredentials) => {
                Err(M2mError::unauthenticated("authentication required"))
            }
            Err(AuthError::Refused(reason)) => Err(M2mError::unauthenticated(reason)),
            Err(AuthError::NotAllowed(reason)) => Err(M2mError::forbidden(reason)),
        }
    }
}

#[async_trait]
impl ProxyHttp for AuthProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = onem2m::request_id(session.req_header());

        let identity = match self.authenticate(session) {
            Ok(identity) => identity,
            Err(err) => return self.refuse(session, ctx, err).await,
        };

        if let Some(identity) = &identity {
            let claimed = headers::client_originators(session.req_header());
            match self.policy.decide(identity, &claimed) {
                Ok(originator) => ctx.originator = Some(originator.to_owned()),
                Err(refusal) => {
                    return self
                        .refuse(session, ctx, M2mError::forbidden(refusal.reason()))
                        .await
                }
            }
        }
        ctx.identity = identity;

        if session.is_upgrade_req() {
            session.set_read_timeout(Some(WEBSOCKET_IDLE_TIMEOUT));
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.upstream.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client_ip = match session.client_addr() {
            Some(SocketAddr::Inet(addr)) => Some(addr.ip()),
            _ => None,
        };
        headers::rewrite_upstream(
            upstream_request,
            &Forwarding {
                originator: ctx.originator.as_deref(),
                client_ip,
                proto: if self.tls { "https" } else { "http" },
                forward_authorization: self.forward_authorization,
            },
        )
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let err = error_response(e);
        let code = match err {
            Some(err) if session.response_written().is_none() => {
                if let Err(write_err) = self.respond(session, ctx.request_id.as_deref(), &err).await
                {
                    log::debug!("cannot send error response: {write_err}");
                }
                err.status
            }
            _ => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

/// The oneM2M answer to a failure, or `None` when the client is gone anyway.
fn error_response(e: &Error) -> Option<M2mError> {
    use ErrorType::*;
    if let HTTPStatus(code) = e.etype() {
        return Some(M2mError::other(*code, "request refused"));
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
