//! Authentication: each enabled method turns the credentials a request carries into one
//! `Identity`, or a reason to refuse. The first method in `auth.methods` whose credentials are
//! present decides; present but wrong credentials never fall through to another method, nor to
//! anonymous access.

pub mod authorization;
pub mod mtls;
pub mod ratelimit;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{AuthConfig, Method};
use crate::identity::Identity;
use crate::tls::TlsState;
use mtls::CertIdentity;

/// Why authentication failed; also the `reason` label of the failure metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NoCredentials,
    BadCredentials,
    Malformed,
    Expired,
    Revoked,
    OriginatorNotAllowed,
    RateLimited,
}

impl Failure {
    pub fn label(self) -> &'static str {
        match self {
            Failure::NoCredentials => "no_credentials",
            Failure::BadCredentials => "bad_credentials",
            Failure::Malformed => "malformed",
            Failure::Expired => "expired",
            Failure::Revoked => "revoked",
            Failure::OriginatorNotAllowed => "originator_not_allowed",
            Failure::RateLimited => "rate_limited",
        }
    }
}

/// A refused authentication. `reason` is safe to send to the client and to log: it never
/// contains a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub failure: Failure,
    /// Method whose credentials were refused ("none" when there were none).
    pub method: &'static str,
    pub reason: &'static str,
    /// For `RateLimited`: when to try again.
    pub retry_after: Option<Duration>,
}

impl AuthError {
    pub fn new(failure: Failure, method: &'static str, reason: &'static str) -> Self {
        AuthError {
            failure,
            method,
            reason,
            retry_after: None,
        }
    }
}

/// Reason given when a connection's certificate was revoked or its CA removed by a reload.
pub const REVOKED: &str = "client certificate no longer trusted";

/// What the connection contributes to a request's authentication.
pub struct ConnectionCredentials<'a> {
    pub client_cert: Option<&'a CertIdentity>,
}

pub struct Authenticator {
    methods: Vec<Method>,
    tls: Option<Arc<TlsState>>,
}

impl Authenticator {
    pub fn from_config(config: &AuthConfig, tls: Option<Arc<TlsState>>) -> Self {
        Authenticator {
            methods: config.methods.clone(),
            tls,
        }
    }

    pub fn authenticate(
        &self,
        conn: &ConnectionCredentials<'_>,
    ) -> Result<Arc<Identity>, AuthError> {
        for method in &self.methods {
            match method {
                Method::Mtls => {
                    if let Some(cert) = conn.client_cert {
                        return self.mtls(cert);
                    }
                }
                Method::Basic | Method::Bearer => {}
            }
        }
        Err(AuthError::new(
            Failure::NoCredentials,
            "none",
            "authentication required",
        ))
    }

    fn mtls(&self, cert: &CertIdentity) -> Result<Arc<Identity>, AuthError> {
        let trust = self.tls.as_ref().and_then(|t| t.trust.as_ref());
        if !trust.is_some_and(|t| cert.still_trusted(t)) {
            return Err(AuthError::new(Failure::Revoked, "mtls", REVOKED));
        }
        match &cert.result {
            Ok(identity) => Ok(Arc::clone(identity)),
            Err(reason) => Err(AuthError::new(
                Failure::OriginatorNotAllowed,
                "mtls",
                reason,
            )),
        }
    }
}
