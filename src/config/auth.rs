//! `auth`: which methods authenticate, in which order, and each method's own section.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::claim_path::ClaimPath;
use super::value::{duration, FilePath, KeyError};
use crate::identity::Method;
use crate::originator_syntax::validate_originator;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub methods: Vec<Method>,
    pub mtls: MtlsConfig,
    pub basic: Option<BasicConfig>,
    pub bearer: Option<BearerConfig>,
    pub jwt: Option<JwtConfig>,
    pub introspection: Option<IntrospectionConfig>,
    /// Roles given to identities: `role: {methods: [...], names: [...], patterns: [regexes on
    /// the identity name]}`, or `role: [names]`. Used by the authorization rules and logged.
    pub roles: BTreeMap<String, RoleMembers>,
    pub rate_limit: RateLimitConfig,
    pub anonymous: Anonymous,
    /// Forward the client's `Authorization` header to the upstream (off: it is removed).
    pub forward_authorization: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            methods: vec![Method::Mtls],
            mtls: MtlsConfig::default(),
            basic: None,
            bearer: None,
            jwt: None,
            introspection: None,
            roles: Default::default(),
            rate_limit: RateLimitConfig::default(),
            anonymous: Anonymous::Deny,
            forward_authorization: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    /// htpasswd file as Apache's `htpasswd` tool writes it.
    pub htpasswd: FilePath,
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Accept plain-text entries (warned about at start). DES crypt is refused even then.
    #[serde(default)]
    pub allow_insecure_hashes: bool,
    /// Originator of a user when it is not the user name itself.
    #[serde(default)]
    pub originators: BTreeMap<String, String>,
    #[serde(default)]
    pub cache: CacheConfig,
    /// Every password check costs at least a bcrypt check of this cost (also for unknown users
    /// and cheaper hashes); default: the most expensive hash in the file.
    #[serde(default)]
    pub timing_floor: Option<u32>,
}

pub fn default_realm() -> String {
    "oneM2M".to_string()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Successful verifications remembered (0 disables the cache).
    pub max_entries: usize,
    #[serde(with = "duration")]
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 10_000,
            ttl: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerConfig {
    /// YAML file of tokens stored as SHA-256 hashes.
    pub tokens: FilePath,
    /// Accept Arrowhead's `Bearer SYSTEM//<name>`, a claim without any proof. Never in production.
    #[serde(default)]
    pub allow_declared: bool,
}

/// JWTs issued elsewhere, verified with the issuer's keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub issuers: Vec<JwtIssuerConfig>,
    /// Allowed clock difference for `exp` and `nbf`.
    #[serde(default = "default_jwt_leeway", with = "duration")]
    pub leeway: Duration,
}

fn default_jwt_leeway() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// Expected `iss`; also how a token finds its issuer here.
    pub issuer: String,
    /// Accepted `aud` values; the token needs one of them.
    pub audiences: Vec<String>,
    /// Default: every asymmetric algorithm (RS*, PS*, ES256, ES384, EdDSA).
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Keys: exactly one of a JWKS file (hot-reloaded), a JWKS URL (HTTPS), or a shared secret
    /// file (only with HS* algorithms).
    #[serde(default)]
    pub jwks_file: Option<FilePath>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub secret_file: Option<FilePath>,
    /// CA bundle (PEM) that signs the JWKS URL's server certificate.
    #[serde(default)]
    pub jwks_ca: Option<FilePath>,
    /// How long fetched keys are used before they are fetched again.
    #[serde(default = "default_jwks_refresh", with = "duration")]
    pub jwks_refresh: Duration,
    /// An unknown `kid` fetches the keys again at most this often.
    #[serde(default = "default_jwks_min_refetch", with = "duration")]
    pub jwks_min_refetch: Duration,
    /// Connect + answer time limit of a JWKS fetch.
    #[serde(default = "default_fetch_timeout", with = "duration")]
    pub jwks_timeout: Duration,
    /// Claim holding the originator: a name, a dotted path for nested claims, a quoted
    /// segment or a list of names for names with dots ([`ClaimPath`]).
    #[serde(default = "default_sub")]
    pub originator_claim: ClaimPath,
    /// Array claim of further originators (patterns) the token may use in verify mode.
    #[serde(default)]
    pub originators_claim: Option<ClaimPath>,
    /// Claim naming the identity in logs; default: the originator claim.
    #[serde(default)]
    pub name_claim: Option<ClaimPath>,
    /// Array (or string) claim of roles.
    #[serde(default)]
    pub roles_claim: Option<ClaimPath>,
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(600)
}

fn default_jwks_min_refetch() -> Duration {
    Duration::from_secs(30)
}

fn default_fetch_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_sub() -> ClaimPath {
    ClaimPath::from("sub")
}

/// Tokens only a verification service can judge (RFC 7662 introspection, Arrowhead's
/// identity service).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// HTTPS endpoint; POST `token=<token>` (form-encoded).
    pub url: String,
    /// CA bundle (PEM) that signs the endpoint's certificate.
    pub ca: FilePath,
    /// Client certificate and key (PEM) the proxy presents to the endpoint.
    #[serde(default)]
    pub client_cert: Option<FilePath>,
    #[serde(default)]
    pub client_key: Option<FilePath>,
    /// Basic credentials for the endpoint: user name and a file holding the password.
    #[serde(default)]
    pub basic_user: Option<String>,
    #[serde(default)]
    pub basic_password_file: Option<FilePath>,
    /// Also send plain bearer tokens (not only `IDENTITY-TOKEN//<token>`) to the endpoint.
    #[serde(default)]
    pub plain_bearer: bool,
    /// Answer field holding the originator (a [`ClaimPath`], like `originator_claim`).
    #[serde(default = "default_sub")]
    pub originator_field: ClaimPath,
    /// Answer field naming the identity in logs; default: the originator field.
    #[serde(default)]
    pub name_field: Option<ClaimPath>,
    /// Boolean answer field that makes the identity a system operator (role `sysop`).
    #[serde(default)]
    pub operator_field: Option<ClaimPath>,
    /// Positive answers are kept this long (or until the answer's `exp`, if sooner).
    #[serde(default = "default_introspection_ttl", with = "duration")]
    pub cache_ttl: Duration,
    /// Negative answers (inactive tokens) are kept this long.
    #[serde(default = "default_introspection_negative_ttl", with = "duration")]
    pub negative_ttl: Duration,
    /// Connect + answer time limit; slower is a failure (503), never an admission.
    #[serde(default = "default_fetch_timeout", with = "duration")]
    pub timeout: Duration,
    /// Calls to the endpoint at once (over kept-alive connections), and waiting for a turn;
    /// more are refused at once (503) without a call.
    #[serde(default = "default_introspection_concurrent")]
    pub max_concurrent: usize,
    #[serde(default = "default_introspection_queued")]
    pub max_queued: usize,
    /// Accepted `aud` values; when set, an answer needs one of them (`aud` a string or a list).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Expected `iss` of an answer; when set, an answer without it or with another is refused.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `token_type` values (compared without case); when set, an answer needs one.
    #[serde(default)]
    pub token_types: Vec<String>,
    /// Allowed clock difference for `nbf` and `iat` (never for `exp`: a cached answer does not
    /// outlive it).
    #[serde(default = "default_jwt_leeway", with = "duration")]
    pub leeway: Duration,
}

fn default_introspection_concurrent() -> usize {
    16
}

fn default_introspection_queued() -> usize {
    64
}

fn default_introspection_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_introspection_negative_ttl() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Failed attempts allowed per minute, per client address (prefix) and per user name.
    pub failures_per_minute: u32,
    /// Failures allowed in a burst before the rate applies.
    pub burst: u32,
    /// IPv4 client addresses share a bucket per prefix of this length (32: each address).
    pub ipv4_prefix: u8,
    /// IPv6 client addresses share a bucket per prefix of this length (64: each /64 network).
    pub ipv6_prefix: u8,
    /// One more budget per authentication method, shared by every client (off by default).
    pub global: Option<Budget>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            failures_per_minute: 10,
            burst: 10,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            global: None,
        }
    }
}

/// A failure budget: a burst, refilled at a rate.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub failures_per_minute: u32,
    pub burst: u32,
}

impl RateLimitConfig {
    fn validate(&self) -> Result<(), KeyError> {
        if self.failures_per_minute == 0 || self.burst == 0 {
            return Err(KeyError::new(
                "auth.rate_limit",
                "expected failures_per_minute and burst >= 1",
            ));
        }
        if self.ipv4_prefix > 32 {
            return Err(KeyError::new(
                "auth.rate_limit.ipv4_prefix",
                format!("expected a prefix length 0 to 32, got {}", self.ipv4_prefix),
            ));
        }
        if self.ipv6_prefix > 128 {
            return Err(KeyError::new(
                "auth.rate_limit.ipv6_prefix",
                format!(
                    "expected a prefix length 0 to 128, got {}",
                    self.ipv6_prefix
                ),
            ));
        }
        if let Some(global) = &self.global {
            if global.failures_per_minute == 0 || global.burst == 0 {
                return Err(KeyError::new(
                    "auth.rate_limit.global",
                    "expected failures_per_minute and burst >= 1",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertField {
    Uri,
    Dns,
    Email,
    Cn,
}

impl CertField {
    pub fn as_str(self) -> &'static str {
        match self {
            CertField::Uri => "uri",
            CertField::Dns => "dns",
            CertField::Email => "email",
            CertField::Cn => "cn",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtlsConfig {
    /// Certificate fields that may name the client; the first present wins.
    pub identity: Vec<CertField>,
    /// Regex on that value; the named group `originator` (or the whole match) is the originator.
    pub originator: String,
}

impl Default for MtlsConfig {
    fn default() -> Self {
        MtlsConfig {
            identity: vec![
                CertField::Uri,
                CertField::Dns,
                CertField::Email,
                CertField::Cn,
            ],
            originator: "^(?P<originator>.+)$".to_string(),
        }
    }
}

/// Who holds a role: identity names or patterns, as proven by some methods.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleMembers {
    /// The methods whose identities the names and patterns grant to; `None`: not written, so
    /// valid only while one method is enabled (an identity name means nothing without the
    /// method that proved it: a Basic user may be named like a certificate's SAN).
    pub methods: Option<Vec<Method>>,
    pub names: Vec<String>,
    /// Regexes on the identity name.
    pub patterns: Vec<String>,
}

impl<'de> Deserialize<'de> for RoleMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            #[serde(default)]
            methods: Option<Vec<Method>>,
            #[serde(default)]
            names: Vec<String>,
            #[serde(default)]
            patterns: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Names(Vec<String>),
            Spec(Spec),
        }
        match Form::deserialize(d).map_err(|_| {
            serde::de::Error::custom(format!(
                "expected `{{methods: [mtls, ...], names: [...], patterns: [...]}}` (methods: {}), or a list of identity names",
                Method::names()
            ))
        })? {
            Form::Names(names) => Ok(RoleMembers {
                methods: None,
                names,
                patterns: Vec::new(),
            }),
            Form::Spec(s) => Ok(RoleMembers {
                methods: s.methods,
                names: s.names,
                patterns: s.patterns,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    #[default]
    Deny,
    Allow,
}

impl Anonymous {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Anonymous::Deny => "deny",
            Anonymous::Allow => "allow",
        }
    }
}

impl AuthConfig {
    /// Checks that need nothing but this section (the builders of the methods check the rest).
    pub fn validate(&self) -> Result<(), KeyError> {
        if self.methods.is_empty() && self.anonymous == Anonymous::Deny {
            return Err(KeyError::new(
                "auth.methods",
                format!(
                    "expected at least one of {} (or auth.anonymous: allow)",
                    Method::names()
                ),
            ));
        }
        let mut seen = HashSet::new();
        for m in &self.methods {
            if !seen.insert(*m) {
                return Err(KeyError::new(
                    "auth.methods",
                    format!("`{}` is listed twice", m.as_str()),
                ));
            }
        }
        // each method's section: present when the method is enabled, and valid when written
        for method in Method::ALL {
            let d = method.descriptor();
            if let Some(what) = d.needs {
                if self.methods.contains(&method) && !(d.configured)(self) {
                    return Err(KeyError::new(
                        d.section,
                        format!("auth method `{}` needs {what}", d.name),
                    ));
                }
            }
        }
        for method in Method::ALL {
            (method.descriptor().validate)(self)?;
        }
        for (role, members) in &self.roles {
            let empty = members.names.is_empty() && members.patterns.is_empty();
            if role.is_empty() || empty || members.names.iter().any(String::is_empty) {
                return Err(KeyError::new(
                    "auth.roles",
                    "expected `role: {methods: [...], names: [...], patterns: [...]}` with non-empty names",
                ));
            }
            if members.methods.as_ref().is_some_and(Vec::is_empty) {
                return Err(KeyError::new(
                    format!("auth.roles.{role}.methods"),
                    format!("expected at least one of {}", Method::names()),
                ));
            }
        }
        self.rate_limit.validate()
    }
}

impl BasicConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        if self.realm.is_empty()
            || self.realm.contains(['"', '\\'])
            || self.realm.chars().any(char::is_control)
        {
            return Err(KeyError::new(
                "auth.basic.realm",
                "expected a non-empty realm without quotes, backslashes or control characters",
            ));
        }
        if let Some(cost) = self.timing_floor {
            if !(4..=31).contains(&cost) {
                return Err(KeyError::new(
                    "auth.basic.timing_floor",
                    format!("expected a bcrypt cost 4 to 31, got {cost}"),
                ));
            }
        }
        for (user, originator) in &self.originators {
            validate_originator(originator).map_err(|m| {
                KeyError::new(
                    "auth.basic.originators",
                    format!("originator of {user:?}: {m}"),
                )
            })?;
        }
        Ok(())
    }
}

impl JwtConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        if self.issuers.is_empty() {
            return Err(KeyError::new(
                "auth.jwt.issuers",
                "expected at least one issuer",
            ));
        }
        let mut names = HashSet::new();
        for issuer in &self.issuers {
            if !names.insert(issuer.issuer.as_str()) {
                return Err(KeyError::new(
                    "auth.jwt.issuers",
                    format!("issuer {:?} is listed twice", issuer.issuer),
                ));
            }
        }
        Ok(())
    }
}

impl IntrospectionConfig {
    pub fn validate(&self) -> Result<(), KeyError> {
        if !self.url.starts_with("https://") {
            return Err(KeyError::new(
                "auth.introspection.url",
                format!("expected an https:// URL, got {:?}", self.url),
            ));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(KeyError::new(
                "auth.introspection.client_cert",
                "expected client_cert and client_key together",
            ));
        }
        if self.basic_user.is_some() != self.basic_password_file.is_some() {
            return Err(KeyError::new(
                "auth.introspection.basic_user",
                "expected basic_user and basic_password_file together",
            ));
        }
        if self.timeout.is_zero() || self.cache_ttl.is_zero() {
            return Err(KeyError::new(
                "auth.introspection",
                "expected timeout and cache_ttl > 0",
            ));
        }
        if self.max_concurrent == 0 {
            return Err(KeyError::new(
                "auth.introspection.max_concurrent",
                "expected at least 1",
            ));
        }
        let empty = |values: &[String]| values.iter().any(String::is_empty);
        if empty(&self.audiences) {
            return Err(KeyError::new(
                "auth.introspection.audiences",
                "expected non-empty audience values",
            ));
        }
        if empty(&self.token_types) {
            return Err(KeyError::new(
                "auth.introspection.token_types",
                "expected non-empty token types (e.g. access_token)",
            ));
        }
        if self.issuer.as_deref() == Some("") {
            return Err(KeyError::new(
                "auth.introspection.issuer",
                "expected the issuer's identifier, or no key",
            ));
        }
        Ok(())
    }
}
