//! Responses the proxy makes itself, in the form oneM2M clients expect: HTTP status,
//! `X-M2M-RSC`, the request's `X-M2M-RI` echoed, and a JSON body `{"m2m:dbg": "reason"}`.
//! Which failure gets which answer (and which `WWW-Authenticate` challenge) is in `mapping`.

pub mod mapping;
pub mod operation;

use std::borrow::Cow;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

/// oneM2M response status codes (TS-0004) the proxy answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rsc {
    BadRequest = 4000,
    OperationNotAllowed = 4005,
    UnsupportedMediaType = 4015,
    OriginatorHasNoPrivilege = 4103,
    SecurityAssociationRequired = 4107,
    InternalServerError = 5000,
    TargetNotReachable = 5103,
}

/// Longest `X-M2M-RI` echoed; longer ones are not echoed (and never trusted as anything).
pub const MAX_RI_LEN: usize = 256;

#[derive(Debug, Clone)]
pub struct M2mError {
    pub status: u16,
    pub rsc: Rsc,
    pub reason: Cow<'static, str>,
    /// Add the `WWW-Authenticate` challenges (401 only).
    pub challenge: bool,
    /// Seconds for `Retry-After` (429, and 503 when the proxy itself is busy).
    pub retry_after: Option<u64>,
    /// The `Allow` header (405 only).
    pub allow: Option<&'static str>,
}

impl Rsc {
    pub fn code(self) -> u16 {
        self as u16
    }
}

impl M2mError {
    pub fn unauthenticated(reason: impl Into<Cow<'static, str>>) -> Self {
        M2mError {
            status: 401,
            rsc: Rsc::SecurityAssociationRequired,
            reason: reason.into(),
            challenge: true,
            retry_after: None,
            allow: None,
        }
    }

    pub fn too_many_attempts(retry_after: u64) -> Self {
        M2mError {
            status: 429,
            rsc: Rsc::SecurityAssociationRequired,
            reason: "too many failed authentication attempts".into(),
            challenge: false,
            retry_after: Some(retry_after.max(1)),
            allow: None,
        }
    }

    /// The proxy is at a limit of its own (verification slots, buffer budget): try again soon.
    pub fn busy(reason: impl Into<Cow<'static, str>>) -> Self {
        M2mError {
            status: 503,
            rsc: Rsc::InternalServerError,
            reason: reason.into(),
            challenge: false,
            retry_after: Some(1),
            allow: None,
        }
    }

    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        M2mError {
            status: 403,
            rsc: Rsc::OriginatorHasNoPrivilege,
            reason: reason.into(),
            challenge: false,
            retry_after: None,
            allow: None,
        }
    }

    pub fn upstream(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        M2mError {
            status,
            rsc: Rsc::TargetNotReachable,
            reason: reason.into(),
            challenge: false,
            retry_after: None,
            allow: None,
        }
    }

    /// 405 / RSC 4005 with `Allow`: a method the proxy does not forward.
    pub fn method_not_allowed(reason: impl Into<Cow<'static, str>>, allow: &'static str) -> Self {
        M2mError {
            status: 405,
            rsc: Rsc::OperationNotAllowed,
            reason: reason.into(),
            challenge: false,
            retry_after: None,
            allow: Some(allow),
        }
    }

    /// 415 / RSC 4015: a body in a media type the proxy must read and cannot.
    pub fn unsupported_media_type(reason: impl Into<Cow<'static, str>>) -> Self {
        M2mError {
            status: 415,
            rsc: Rsc::UnsupportedMediaType,
            reason: reason.into(),
            challenge: false,
            retry_after: None,
            allow: None,
        }
    }

    pub fn other(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        let rsc = if status >= 500 {
            Rsc::InternalServerError
        } else {
            Rsc::BadRequest
        };
        M2mError {
            status,
            rsc,
            reason: reason.into(),
            challenge: false,
            retry_after: None,
            allow: None,
        }
    }

    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({ "m2m:dbg": self.reason });
        Bytes::from(body.to_string())
    }

    /// The complete response header; `challenges` are the `WWW-Authenticate` values of the
    /// enabled methods.
    pub fn response_header(
        &self,
        request_id: Option<&str>,
        challenges: &[String],
        body_len: usize,
    ) -> Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(self.status, Some(6))?;
        resp.insert_header("Content-Type", "application/json")?;
        resp.insert_header("Content-Length", body_len.to_string())?;
        resp.insert_header("X-M2M-RSC", (self.rsc as u16).to_string())?;
        if let Some(ri) = request_id {
            resp.insert_header("X-M2M-RI", ri)?;
        }
        if let Some(allow) = self.allow {
            resp.insert_header("Allow", allow)?;
        }
        if let Some(seconds) = self.retry_after {
            resp.insert_header("Retry-After", seconds.to_string())?;
        }
        if self.challenge {
            for c in challenges {
                resp.append_header("WWW-Authenticate", c.as_str())?;
            }
        }
        Ok(resp)
    }
}

/// The request's `X-M2M-RI`, if it is one reasonable header value worth echoing.
pub fn request_id(req: &RequestHeader) -> Option<String> {
    // a constant name: no parsing of "X-M2M-RI" for each request
    const RI: http::HeaderName = http::HeaderName::from_static("x-m2m-ri");
    let value = req.headers.get(&RI)?.to_str().ok()?;
    (!value.is_empty() && value.len() <= MAX_RI_LEN).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_and_escapes_reason() {
        let e = M2mError::forbidden("a \"quoted\" reason");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["m2m:dbg"], "a \"quoted\" reason");
    }

    #[test]
    fn header_carries_rsc_ri_and_challenges() {
        let e = M2mError::unauthenticated("no credentials");
        let h = e
            .response_header(Some("ri-1"), &["Basic realm=\"oneM2M\"".into()], 10)
            .unwrap();
        assert_eq!(h.status.as_u16(), 401);
        assert_eq!(h.headers["X-M2M-RSC"], "4107");
        assert_eq!(h.headers["X-M2M-RI"], "ri-1");
        assert_eq!(h.headers["WWW-Authenticate"], "Basic realm=\"oneM2M\"");
    }
}
