//! The one interface every authentication method implements, and what a request presents to
//! it. A method says whether the presented credentials are its to judge, then judges them; the
//! order of methods, rate limiting and failure accounting live in [`super::Authenticator`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue};

use super::authorization::{BearerToken, Credentials, MAX_AUTHORIZATION_LEN};
use super::client_cert::CertIdentity;
use crate::identity::{Identity, Method};

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
    /// Every verification slot and the queue were taken: refused with 503 without verifying.
    Busy,
}

impl Failure {
    pub const ALL: [Failure; 9] = [
        Failure::NoCredentials,
        Failure::BadCredentials,
        Failure::Malformed,
        Failure::Expired,
        Failure::Revoked,
        Failure::OriginatorNotAllowed,
        Failure::RateLimited,
        Failure::Unavailable,
        Failure::Busy,
    ];

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
            Failure::Busy => "busy",
        }
    }
}

/// A refused authentication. `reason` is safe to send to the client and to log: it never
/// contains a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub failure: Failure,
    /// Method whose credentials were refused (`None` when no method took them).
    pub method: Option<Method>,
    pub reason: &'static str,
    /// For `RateLimited`: when to try again.
    pub retry_after: Option<Duration>,
}

impl AuthError {
    pub fn new(failure: Failure, method: Option<Method>, reason: &'static str) -> Self {
        AuthError {
            failure,
            method,
            reason,
            retry_after: None,
        }
    }

    /// The `method` label: the method's name, or "none".
    pub fn method_label(&self) -> &'static str {
        self.method.map_or(NO_METHOD, Method::as_str)
    }
}

/// Label of failures no method took.
pub const NO_METHOD: &str = "none";

/// A method's verdict against credentials it claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub failure: Failure,
    pub reason: &'static str,
    /// Counted towards the rate limit: the client's fault (wrong secret), not the
    /// configuration's or a service's.
    pub counted: bool,
}

impl Rejection {
    /// A wrong credential: counted towards the rate limit.
    pub fn counted(failure: Failure, reason: &'static str) -> Self {
        Rejection {
            failure,
            reason,
            counted: true,
        }
    }

    /// Not the client's guess being wrong (revoked certificate, unusable originator, service
    /// down): not counted.
    pub fn uncounted(failure: Failure, reason: &'static str) -> Self {
        Rejection {
            failure,
            reason,
            counted: false,
        }
    }
}

impl Rejection {
    /// The refusal of `method`'s credentials.
    pub fn into_error(self, method: Method) -> AuthError {
        AuthError::new(self.failure, Some(method), self.reason)
    }
}

/// Whether the presented credentials are a method's to judge.
pub enum Claim<T> {
    Mine(T),
    /// This method's scheme, but unusable: refused as malformed, never passed on.
    Malformed(&'static str),
    /// The next method is asked.
    NotMine,
}

/// What failed attempts are counted against.
pub enum Limit<'p> {
    /// Not rate limited (a verified certificate is no guess).
    Off,
    ClientAddress,
    /// The client address and the user name (Basic).
    ClientAddressAndUser(&'p str),
}

/// Everything a request presents to be authenticated, parsed once.
pub struct Presented<'a> {
    pub client_cert: Option<&'a CertIdentity>,
    pub client_ip: Option<IpAddr>,
    /// The `Authorization` header(s), parsed; `Err` is a reason safe to send back.
    pub credentials: Result<Option<Credentials<'a>>, &'static str>,
    authorization: Vec<&'a HeaderValue>,
    /// The request's headers, for methods with a header of their own ([`Self::header`]).
    headers: Option<&'a HeaderMap>,
    /// The method that judges a Bearer header, decided by [`super::Authenticator`] (by the
    /// token's form when it parsed, else the method that owns malformed Bearer headers).
    pub(super) bearer_owner: Option<Method>,
}

impl<'a> Presented<'a> {
    pub fn new(
        client_cert: Option<&'a CertIdentity>,
        authorization: Vec<&'a HeaderValue>,
        client_ip: Option<IpAddr>,
    ) -> Self {
        Presented {
            client_cert,
            client_ip,
            credentials: super::authorization::parse(&authorization),
            authorization,
            headers: None,
            bearer_owner: None,
        }
    }

    /// With the request's headers, and its `Authorization` header(s) from them.
    pub fn from_headers(
        client_cert: Option<&'a CertIdentity>,
        headers: &'a HeaderMap,
        client_ip: Option<IpAddr>,
    ) -> Self {
        let authorization = headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .collect();
        Presented {
            headers: Some(headers),
            ..Presented::new(client_cert, authorization, client_ip)
        }
    }

    /// The value of a header that carries a method's credentials (such as `X-API-Key`): never
    /// several, never longer than an `Authorization` header, visible ASCII only.
    pub fn header(&self, name: &str) -> Claim<&'a str> {
        let Some(headers) = self.headers else {
            return Claim::NotMine;
        };
        let mut values = headers.get_all(name).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Claim::NotMine,
            (Some(_), Some(_)) => return Claim::Malformed("several credential headers"),
            (Some(value), None) => value,
        };
        if value.len() > MAX_AUTHORIZATION_LEN {
            return Claim::Malformed("credential header too long");
        }
        match value.to_str() {
            Ok(text) if !text.trim().is_empty() => Claim::Mine(text.trim()),
            _ => Claim::Malformed("malformed credential header"),
        }
    }

    /// The credentials of an `Authorization` header of a scheme no built-in method parses
    /// (`ApiKey <credentials>`): what follows the scheme, trimmed.
    pub fn authorization_scheme(&self, scheme: &str) -> Claim<&'a str> {
        let (Ok(Some(Credentials::Other)), [value]) = (&self.credentials, &self.authorization[..])
        else {
            return match self.credentials {
                Err(reason) if self.scheme_is(scheme) => Claim::Malformed(reason),
                _ => Claim::NotMine,
            };
        };
        // `Other` parsed: visible ASCII
        let text = value.to_str().unwrap_or_default().trim();
        let (name, rest) = text.split_once(' ').unwrap_or((text, ""));
        match (name.eq_ignore_ascii_case(scheme), rest.trim()) {
            (false, _) => Claim::NotMine,
            (true, "") => Claim::Malformed("malformed Authorization credentials"),
            (true, rest) => Claim::Mine(rest),
        }
    }

    /// Whether the single `Authorization` header uses `scheme` (so its parse error belongs to it).
    fn scheme_is(&self, scheme: &str) -> bool {
        self.authorization.iter().any(|v| {
            v.as_bytes()
                .get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme.as_bytes()))
        })
    }

    /// Basic credentials: user name and password.
    pub fn basic(&self) -> Claim<(&str, &[u8])> {
        match &self.credentials {
            Ok(Some(Credentials::Basic { user, password })) => Claim::Mine((user, password)),
            Err(reason) if self.scheme_is("basic") => Claim::Malformed(reason),
            _ => Claim::NotMine,
        }
    }

    /// A Bearer token, if `method` is the one that judges it.
    pub fn bearer(&self, method: Method) -> Claim<&BearerToken<'a>> {
        if self.bearer_owner != Some(method) {
            return Claim::NotMine;
        }
        match &self.credentials {
            Ok(Some(Credentials::Bearer(token))) => Claim::Mine(token),
            Err(reason) if self.scheme_is("bearer") => Claim::Malformed(reason),
            _ => Claim::NotMine,
        }
    }

    /// Whether the request carries a Bearer header at all (well-formed or not).
    pub(super) fn has_bearer(&self) -> bool {
        matches!(self.credentials, Ok(Some(Credentials::Bearer(_))))
            || (self.credentials.is_err() && self.scheme_is("bearer"))
    }
}

/// The request-time half of an authentication method; its file declares the rest in its
/// descriptor (`super::method`), and `super` says how to add a method.
#[async_trait]
pub trait Verifier: Send + Sync {
    fn method(&self) -> Method;

    /// Whether the presented credentials are this method's to judge (the first method in
    /// `auth.methods` that says `Mine` or `Malformed` decides).
    fn claims(&self, presented: &Presented<'_>) -> Claim<()>;

    /// What failed attempts with these credentials are counted against.
    fn limit<'p>(&self, _presented: &'p Presented<'_>) -> Limit<'p> {
        Limit::ClientAddress
    }

    /// Judge credentials this method claimed.
    async fn verify(&self, presented: &Presented<'_>) -> Result<Arc<Identity>, Rejection>;
}

/// `Claim<T>` reduced to whether it is a claim (for [`Verifier::claims`]).
impl<T> Claim<T> {
    pub fn unit(self) -> Claim<()> {
        match self {
            Claim::Mine(_) => Claim::Mine(()),
            Claim::Malformed(reason) => Claim::Malformed(reason),
            Claim::NotMine => Claim::NotMine,
        }
    }
}

/// The rejection for credentials that `verify` finds not to be its own after `claims` said
/// they were: unreachable by construction, refused rather than trusted.
pub const NOT_CLAIMED: Rejection = Rejection {
    failure: Failure::Malformed,
    reason: "credentials not usable by this method",
    counted: false,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    fn header<'a>(h: &'a HeaderMap, name: &str) -> Claim<&'a str> {
        Presented::from_headers(None, h, None).header(name)
    }

    #[test]
    fn a_credential_header_is_read_once_and_refused_when_unusable() {
        let one = headers(&[("x-api-key", b" k1 ")]);
        assert!(matches!(header(&one, "x-api-key"), Claim::Mine("k1")));
        assert!(matches!(header(&one, "X-Api-Key"), Claim::Mine("k1")));
        assert!(matches!(header(&one, "x-other"), Claim::NotMine));
        let two = headers(&[("x-api-key", b"a"), ("x-api-key", b"b")]);
        assert!(matches!(header(&two, "x-api-key"), Claim::Malformed(_)));
        let long = "k".repeat(MAX_AUTHORIZATION_LEN + 1);
        let long = headers(&[("x-api-key", long.as_bytes())]);
        assert!(matches!(header(&long, "x-api-key"), Claim::Malformed(_)));
        for bad in [&b"\xe9"[..], b"  "] {
            let bad = headers(&[("x-api-key", bad)]);
            assert!(matches!(header(&bad, "x-api-key"), Claim::Malformed(_)));
        }
    }

    #[test]
    fn another_authorization_scheme_is_its_methods_alone() {
        let scheme = |h: &[(&'static str, &[u8])], s: &str| {
            let h = headers(h);
            match Presented::from_headers(None, &h, None).authorization_scheme(s) {
                Claim::Mine(v) => Ok(Some(v.to_string())),
                Claim::NotMine => Ok(None),
                Claim::Malformed(r) => Err(r),
            }
        };
        let auth = |v: &'static [u8]| [("authorization", v)];
        assert_eq!(scheme(&auth(b"ApiKey k1"), "apikey"), Ok(Some("k1".into())));
        assert_eq!(scheme(&auth(b"ApiKeys k1"), "apikey"), Ok(None));
        assert_eq!(scheme(&auth(b"Bearer k1"), "apikey"), Ok(None));
        assert!(scheme(&auth(b"ApiKey"), "apikey").is_err());
        let two = [
            ("authorization", &b"ApiKey a"[..]),
            ("authorization", b"ApiKey b"),
        ];
        assert!(scheme(&two, "apikey").is_err());
        assert_eq!(scheme(&[], "apikey"), Ok(None));
    }
}
