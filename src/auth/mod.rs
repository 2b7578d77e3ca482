//! Authentication: each enabled method turns the credentials a request carries into one
//! `Identity`, or a reason to refuse. The first method in `auth.methods` whose credentials are
//! present decides; present but wrong credentials never fall through to another method, nor to
//! anonymous access.
//!
//! Each method is one file implementing [`Verifier`]; this file holds the list of methods and
//! what they share: the order, which bearer-type method a token belongs to, rate limiting and
//! failure accounting, and the roles of `auth.roles`.
//!
//! Adding a method (see `method.rs` for what a descriptor holds):
//! 1. its config struct and its `Option<…>` field in `AuthConfig` (`config/auth.rs`);
//! 2. its file here: a `pub const METHOD: Descriptor`, the [`method::MethodState`] it builds (with
//!    its reloadables; a file kind of its own is a `FileKind::Auth`) and its [`Verifier`]
//!    (credentials from [`Presented`]: `header`, `authorization_scheme`, …);
//! 3. `pub mod` and one line in `methods!` below (its place there is its place in `Method::ALL`);
//! 4. docs: its labels in docs/operations.md (a test compares them), its section in configuration.md.
//!
//! A method of the `Bearer` scheme also needs its rule in [`Authenticator`]'s `bearer_owner`.

pub mod authorization;
pub mod basic;
pub mod bearer;
pub mod client_cert;
pub mod fetch;
pub mod introspection;
pub mod jwk;
pub mod jwks;
pub mod jwt;
pub mod jwt_crypto;
pub mod method;
pub mod mtls;
pub mod queue;
pub mod ratelimit;
pub mod roles;
pub mod verifier;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::AuthConfig;
use crate::identity::{Identity, Method};
use authorization::{BearerToken, Credentials};
use ratelimit::FailureLimiter;
use roles::Roles;
pub use verifier::{AuthError, Claim, Failure, Limit, Presented, Rejection, Verifier, NO_METHOD};

// The authentication methods, in the order of `Method::ALL` (the labels of the metrics).
method::methods! {
    Mtls = mtls::METHOD;
    Basic = basic::METHOD;
    Bearer = bearer::METHOD;
    Jwt = jwt::METHOD;
    Introspection = introspection::METHOD;
}

pub struct Authenticator {
    /// The enabled methods, in `auth.methods` order.
    verifiers: Vec<Arc<dyn Verifier>>,
    /// Plain bearer tokens go to the introspection endpoint too.
    introspect_plain: bool,
    /// `auth.roles`, replaced whole by a config reload.
    roles: Arc<ArcSwap<Roles>>,
    limiter: FailureLimiter,
    /// Headers besides `Authorization` that carry the enabled methods' credentials.
    credential_headers: Vec<http::HeaderName>,
}

fn rate_limited(method: Method, wait: Duration) -> AuthError {
    AuthError {
        failure: Failure::RateLimited,
        method: Some(method),
        reason: "too many failed authentication attempts",
        retry_after: Some(wait),
    }
}

impl Authenticator {
    /// `verifiers` in the order of `auth.methods`.
    pub fn new(
        config: &AuthConfig,
        verifiers: Vec<Arc<dyn Verifier>>,
        roles: Arc<ArcSwap<Roles>>,
    ) -> Self {
        let credential_headers = verifiers
            .iter()
            .flat_map(|v| v.method().descriptor().headers)
            .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        Authenticator {
            credential_headers,
            verifiers,
            introspect_plain: config
                .introspection
                .as_ref()
                .is_some_and(|i| i.plain_bearer),
            roles,
            limiter: FailureLimiter::from_config(&config.rate_limit),
        }
    }

    /// Removed from requests before they are forwarded: the credentials are the proxy's to
    /// check, not the upstream's to see.
    pub fn credential_headers(&self) -> &[http::HeaderName] {
        &self.credential_headers
    }

    fn enabled(&self, method: Method) -> bool {
        self.verifiers.iter().any(|v| v.method() == method)
    }

    /// Which bearer-type method judges the request's Bearer header. A well-formed token goes
    /// by its form: a JWT to `jwt`, an `IDENTITY-TOKEN//` token to `introspection`, any other
    /// to the tokens file (`bearer`), or to `introspection` when it takes plain tokens and
    /// `bearer` is off; a form whose method is not enabled falls back to `bearer`. A malformed
    /// header belongs to `bearer` if enabled, else to the first enabled of `jwt` and
    /// `introspection`.
    fn bearer_owner(&self, presented: &Presented<'_>) -> Option<Method> {
        match &presented.credentials {
            Ok(Some(Credentials::Bearer(token))) => Some(match token {
                BearerToken::Token(t) if self.enabled(Method::Jwt) && jwt::looks_like_jwt(t) => {
                    Method::Jwt
                }
                BearerToken::IdentityToken(_) if self.enabled(Method::Introspection) => {
                    Method::Introspection
                }
                BearerToken::Token(_)
                    if self.introspect_plain
                        && self.enabled(Method::Introspection)
                        && !self.enabled(Method::Bearer) =>
                {
                    Method::Introspection
                }
                _ => Method::Bearer,
            }),
            _ if presented.has_bearer() => {
                if self.enabled(Method::Bearer) {
                    Some(Method::Bearer)
                } else {
                    self.verifiers
                        .iter()
                        .map(|v| v.method())
                        .find(|m| matches!(*m, Method::Jwt | Method::Introspection))
                }
            }
            _ => None,
        }
    }

    /// The first enabled method whose credentials are present decides.
    pub async fn authenticate(
        &self,
        mut presented: Presented<'_>,
    ) -> Result<Arc<Identity>, AuthError> {
        presented.bearer_owner = self.bearer_owner(&presented);
        for verifier in &self.verifiers {
            let method = verifier.method();
            match verifier.claims(&presented) {
                Claim::NotMine => continue,
                Claim::Malformed(reason) => {
                    return Err(self.failed(
                        presented.client_ip,
                        method,
                        Failure::Malformed,
                        reason,
                    ))
                }
                Claim::Mine(()) => {
                    return self
                        .judge(verifier.as_ref(), &presented)
                        .await
                        .map(|identity| self.roles.load().apply(identity))
                }
            }
        }
        match presented.credentials {
            Ok(None) => Err(AuthError::new(
                Failure::NoCredentials,
                None,
                "authentication required",
            )),
            // Present but not usable by any enabled method: refused, never anonymous.
            Ok(Some(_)) => Err(AuthError::new(
                Failure::Malformed,
                None,
                "Authorization scheme not accepted here",
            )),
            Err(reason) => Err(AuthError::new(Failure::Malformed, None, reason)),
        }
    }

    /// Charge the guess, verify, refund it if it was right (or never judged). A guess is
    /// charged before it is verified, so guesses arriving together cannot all be verified.
    async fn judge(
        &self,
        verifier: &dyn Verifier,
        presented: &Presented<'_>,
    ) -> Result<Arc<Identity>, AuthError> {
        let method = verifier.method();
        let user = match verifier.limit(presented) {
            Limit::Off => {
                return verifier
                    .verify(presented)
                    .await
                    .map_err(|r| r.into_error(method))
            }
            Limit::ClientAddress => None,
            Limit::ClientAddressAndUser(user) => Some(user),
        };
        let charge = self.charge(method, presented.client_ip, user)?;
        match verifier.verify(presented).await {
            Ok(identity) => {
                charge.refund();
                Ok(identity)
            }
            // a wrong guess: the charge stands
            Err(r) if r.counted => Err(r.into_error(method)),
            Err(r) => {
                charge.refund();
                Err(r.into_error(method))
            }
        }
    }

    /// One guess charged to the limiter, or the 429 that refuses it (counted per bucket).
    fn charge<'a>(
        &'a self,
        method: Method,
        ip: Option<IpAddr>,
        user: Option<&'a str>,
    ) -> Result<ratelimit::Charge<'a>, AuthError> {
        self.limiter.charge(method, ip, user).map_err(|refused| {
            crate::metrics::rate_limited(method.as_str(), refused.bucket.label());
            rate_limited(method, refused.wait)
        })
    }

    /// Malformed credentials of a method count as a failed guess of the client.
    fn failed(
        &self,
        ip: Option<IpAddr>,
        method: Method,
        failure: Failure,
        reason: &'static str,
    ) -> AuthError {
        match self.charge(method, ip, None) {
            Ok(_kept) => AuthError::new(failure, Some(method), reason),
            Err(limited) => limited,
        }
    }
}
