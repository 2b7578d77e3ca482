//! Authentication: each enabled method turns the credentials a request carries into one
//! `Identity`, or a reason to refuse. The first method in `auth.methods` whose credentials are
//! present decides; present but wrong credentials never fall through to another method, nor to
//! anonymous access.

pub mod authorization;
pub mod basic;
pub mod bearer;
pub mod mtls;
pub mod ratelimit;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::config::{AuthConfig, Method};
use crate::identity::Identity;
use crate::tls::TlsState;
use authorization::{BearerToken, Credentials};
use basic::{BasicAuth, BasicOutcome};
use bearer::{BearerAuth, BearerOutcome};
use mtls::CertIdentity;
use ratelimit::FailureLimiter;

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

fn rate_limited(method: &'static str, wait: Duration) -> AuthError {
    AuthError {
        failure: Failure::RateLimited,
        method,
        reason: "too many failed authentication attempts",
        retry_after: Some(wait),
    }
}

/// Whether the single `Authorization` header uses `scheme` (so its parse error belongs to it).
fn scheme_is(values: &[&HeaderValue], scheme: &str) -> bool {
    values.iter().any(|v| {
        v.as_bytes()
            .get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme.as_bytes()))
    })
}

/// Reason given when a connection's certificate was revoked or its CA removed by a reload.
pub const REVOKED: &str = "client certificate no longer trusted";

/// Everything a request presents to be authenticated.
pub struct Presented<'a> {
    pub client_cert: Option<&'a CertIdentity>,
    pub authorization: Vec<&'a HeaderValue>,
    pub client_ip: Option<IpAddr>,
}

pub struct Authenticator {
    methods: Vec<Method>,
    tls: Option<Arc<TlsState>>,
    basic: Option<Arc<BasicAuth>>,
    bearer: Option<Arc<BearerAuth>>,
    limiter: FailureLimiter,
}

impl Authenticator {
    pub fn new(
        config: &AuthConfig,
        tls: Option<Arc<TlsState>>,
        basic: Option<Arc<BasicAuth>>,
        bearer: Option<Arc<BearerAuth>>,
    ) -> Self {
        Authenticator {
            methods: config.methods.clone(),
            tls,
            basic,
            bearer,
            limiter: FailureLimiter::from_config(&config.rate_limit),
        }
    }

    /// The first enabled method whose credentials are present decides.
    pub async fn authenticate(&self, req: &Presented<'_>) -> Result<Arc<Identity>, AuthError> {
        let credentials = authorization::parse(&req.authorization);
        for method in &self.methods {
            match (method, &credentials) {
                (Method::Mtls, _) => {
                    if let Some(cert) = req.client_cert {
                        return self.mtls(cert);
                    }
                }
                (Method::Basic, Err(reason)) if scheme_is(&req.authorization, "basic") => {
                    return Err(self.failed(
                        req.client_ip,
                        None,
                        "basic",
                        Failure::Malformed,
                        reason,
                    ));
                }
                (Method::Basic, Ok(Some(Credentials::Basic { user, password }))) => {
                    return self.basic(req.client_ip, user, password).await;
                }
                (Method::Bearer, Err(reason)) if scheme_is(&req.authorization, "bearer") => {
                    return Err(self.failed(
                        req.client_ip,
                        None,
                        "bearer",
                        Failure::Malformed,
                        reason,
                    ));
                }
                (Method::Bearer, Ok(Some(Credentials::Bearer(token)))) => {
                    return self.bearer(req.client_ip, token);
                }
                _ => {}
            }
        }
        match credentials {
            Ok(None) => Err(AuthError::new(
                Failure::NoCredentials,
                "none",
                "authentication required",
            )),
            // Present but not usable by any enabled method: refused, never anonymous.
            Ok(Some(_)) => Err(AuthError::new(
                Failure::Malformed,
                "none",
                "Authorization scheme not accepted here",
            )),
            Err(reason) => Err(AuthError::new(Failure::Malformed, "none", reason)),
        }
    }

    /// Count a failure; it becomes `RateLimited` once the client or user is over its limit.
    fn failed(
        &self,
        ip: Option<IpAddr>,
        user: Option<&str>,
        method: &'static str,
        failure: Failure,
        reason: &'static str,
    ) -> AuthError {
        match self.limiter.record_failure(ip, user) {
            Some(wait) => rate_limited(method, wait),
            None => AuthError::new(failure, method, reason),
        }
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

    async fn basic(
        &self,
        ip: Option<IpAddr>,
        user: &str,
        password: &[u8],
    ) -> Result<Arc<Identity>, AuthError> {
        let Some(basic) = self.basic.clone() else {
            return Err(AuthError::new(
                Failure::Malformed,
                "basic",
                "Basic authentication not configured",
            ));
        };
        if let Some(wait) = self.limiter.blocked(ip, Some(user)) {
            return Err(rate_limited("basic", wait));
        }
        let outcome = match basic.verify_cached(user, password) {
            Some(outcome) => outcome,
            None => {
                // bcrypt takes tens of milliseconds: keep it off the request-serving threads.
                let (user, password) = (user.to_owned(), password.to_vec());
                tokio::task::spawn_blocking(move || basic.verify(&user, &password))
                    .await
                    .unwrap_or(BasicOutcome::Invalid)
            }
        };
        match outcome {
            BasicOutcome::Valid(identity) => Ok(Arc::new(identity)),
            BasicOutcome::Invalid => Err(self.failed(
                ip,
                Some(user),
                "basic",
                Failure::BadCredentials,
                "invalid user name or password",
            )),
            BasicOutcome::NoOriginator => Err(AuthError::new(
                Failure::OriginatorNotAllowed,
                "basic",
                "user name is not usable as an originator and none is configured",
            )),
        }
    }

    fn bearer(
        &self,
        ip: Option<IpAddr>,
        token: &BearerToken<'_>,
    ) -> Result<Arc<Identity>, AuthError> {
        let Some(bearer) = &self.bearer else {
            return Err(AuthError::new(
                Failure::Malformed,
                "bearer",
                "Bearer authentication not configured",
            ));
        };
        if let Some(wait) = self.limiter.blocked(ip, None) {
            return Err(rate_limited("bearer", wait));
        }
        let outcome = match token {
            BearerToken::Token(t) => bearer.verify(t),
            BearerToken::Declared(name) => bearer.declared(name),
        };
        match outcome {
            BearerOutcome::Valid(identity) => Ok(identity),
            BearerOutcome::Expired => {
                Err(self.failed(ip, None, "bearer", Failure::Expired, "token expired"))
            }
            BearerOutcome::Invalid => {
                Err(self.failed(ip, None, "bearer", Failure::BadCredentials, "invalid token"))
            }
            BearerOutcome::DeclaredRefused => Err(self.failed(
                ip,
                None,
                "bearer",
                Failure::BadCredentials,
                "declared identities (SYSTEM//) are not accepted",
            )),
        }
    }
}
