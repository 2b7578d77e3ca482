//! Authentication: each enabled method turns the credentials a request carries into one
//! `Identity`, or a reason to refuse. The first method in `auth.methods` whose credentials are
//! present decides; present but wrong credentials never fall through to another method, nor to
//! anonymous access.

pub mod authorization;
pub mod basic;
pub mod bearer;
pub mod fetch;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod mtls;
pub mod ratelimit;

use std::collections::HashMap;
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
use introspection::{Introspection, IntrospectionError};
use jwt::{JwtAuth, JwtError};
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
    /// The token verification service did not answer usably: refused with 503.
    Unavailable,
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
            Failure::Unavailable => "unavailable",
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

/// The verifiers of the credential-based methods that are configured.
#[derive(Default, Clone)]
pub struct Verifiers {
    pub basic: Option<Arc<BasicAuth>>,
    pub bearer: Option<Arc<BearerAuth>>,
    pub jwt: Option<Arc<JwtAuth>>,
    pub introspection: Option<Arc<Introspection>>,
}

pub struct Authenticator {
    methods: Vec<Method>,
    tls: Option<Arc<TlsState>>,
    basic: Option<Arc<BasicAuth>>,
    bearer: Option<Arc<BearerAuth>>,
    jwt: Option<Arc<JwtAuth>>,
    introspection: Option<Arc<Introspection>>,
    /// Plain bearer tokens go to the introspection endpoint too.
    introspect_plain: bool,
    /// Identity name -> roles from `auth.roles`.
    roles: HashMap<String, Vec<String>>,
    limiter: FailureLimiter,
}

impl Authenticator {
    pub fn new(config: &AuthConfig, tls: Option<Arc<TlsState>>, verifiers: Verifiers) -> Self {
        let mut roles: HashMap<String, Vec<String>> = HashMap::new();
        for (role, names) in &config.roles {
            for name in names {
                roles.entry(name.clone()).or_default().push(role.clone());
            }
        }
        Authenticator {
            methods: config.methods.clone(),
            tls,
            basic: verifiers.basic,
            bearer: verifiers.bearer,
            jwt: verifiers.jwt,
            introspection: verifiers.introspection,
            introspect_plain: config
                .introspection
                .as_ref()
                .is_some_and(|i| i.plain_bearer),
            roles,
            limiter: FailureLimiter::from_config(&config.rate_limit),
        }
    }

    /// Which bearer-type method a token belongs to, by its form: a JWT to `jwt`, an
    /// `IDENTITY-TOKEN//` token to `introspection`, any other to the tokens file (`bearer`),
    /// or to `introspection` when it takes plain tokens and `bearer` is off. A form whose
    /// method is not enabled falls back to `bearer`.
    fn bearer_method(&self, token: &BearerToken<'_>) -> Method {
        let enabled = |m: Method| self.methods.contains(&m);
        match token {
            BearerToken::Token(t) if enabled(Method::Jwt) && jwt::looks_like_jwt(t) => Method::Jwt,
            BearerToken::IdentityToken(_) if enabled(Method::Introspection) => {
                Method::Introspection
            }
            BearerToken::Token(_)
                if self.introspect_plain
                    && enabled(Method::Introspection)
                    && !enabled(Method::Bearer) =>
            {
                Method::Introspection
            }
            _ => Method::Bearer,
        }
    }

    /// `auth.roles` added to an identity that has roles there.
    fn with_roles(&self, identity: Arc<Identity>) -> Arc<Identity> {
        match self.roles.get(&identity.name) {
            Some(extra) if !self.roles.is_empty() => {
                let mut with = (*identity).clone();
                for r in extra {
                    if !with.roles.contains(r) {
                        with.roles.push(r.clone());
                    }
                }
                Arc::new(with)
            }
            _ => identity,
        }
    }

    /// The first enabled method whose credentials are present decides.
    pub async fn authenticate(&self, req: &Presented<'_>) -> Result<Arc<Identity>, AuthError> {
        self.authenticate_inner(req)
            .await
            .map(|identity| self.with_roles(identity))
    }

    async fn authenticate_inner(&self, req: &Presented<'_>) -> Result<Arc<Identity>, AuthError> {
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
                (
                    Method::Bearer | Method::Jwt | Method::Introspection,
                    Ok(Some(Credentials::Bearer(token))),
                ) if self.bearer_method(token) == *method => {
                    return match method {
                        Method::Jwt => self.jwt(req.client_ip, token).await,
                        Method::Introspection => self.introspect(req.client_ip, token).await,
                        _ => self.bearer(req.client_ip, token),
                    };
                }
                (Method::Jwt | Method::Introspection, Err(reason))
                    if scheme_is(&req.authorization, "bearer")
                        && !self.methods.contains(&Method::Bearer) =>
                {
                    let label = method.as_str();
                    return Err(self.failed(
                        req.client_ip,
                        None,
                        label,
                        Failure::Malformed,
                        reason,
                    ));
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
            BearerToken::Token(t) | BearerToken::IdentityToken(t) => bearer.verify(t),
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

    async fn jwt(
        &self,
        ip: Option<IpAddr>,
        token: &BearerToken<'_>,
    ) -> Result<Arc<Identity>, AuthError> {
        let (Some(jwt), BearerToken::Token(token)) = (&self.jwt, token) else {
            return Err(AuthError::new(
                Failure::Malformed,
                "jwt",
                "JWT authentication not configured",
            ));
        };
        if let Some(wait) = self.limiter.blocked(ip, None) {
            return Err(rate_limited("jwt", wait));
        }
        match jwt.verify(token).await {
            Ok(identity) => Ok(identity),
            Err(JwtError::Expired) => {
                Err(self.failed(ip, None, "jwt", Failure::Expired, "JWT expired"))
            }
            Err(JwtError::Invalid(reason)) => {
                Err(self.failed(ip, None, "jwt", Failure::BadCredentials, reason))
            }
        }
    }

    async fn introspect(
        &self,
        ip: Option<IpAddr>,
        token: &BearerToken<'_>,
    ) -> Result<Arc<Identity>, AuthError> {
        let (Some(service), BearerToken::Token(token) | BearerToken::IdentityToken(token)) =
            (&self.introspection, token)
        else {
            return Err(AuthError::new(
                Failure::Malformed,
                "introspection",
                "token introspection not configured",
            ));
        };
        if let Some(wait) = self.limiter.blocked(ip, None) {
            return Err(rate_limited("introspection", wait));
        }
        match service.verify(token).await {
            Ok(identity) => Ok(identity),
            Err(IntrospectionError::Inactive) => Err(self.failed(
                ip,
                None,
                "introspection",
                Failure::BadCredentials,
                "token not active",
            )),
            Err(IntrospectionError::Unusable(reason)) => Err(AuthError::new(
                Failure::BadCredentials,
                "introspection",
                reason,
            )),
            // not the client's fault: no rate-limit count
            Err(IntrospectionError::Unavailable) => Err(AuthError::new(
                Failure::Unavailable,
                "introspection",
                "token verification service unavailable",
            )),
        }
    }
}
