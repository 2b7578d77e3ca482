//! The YAML configuration: types, defaults and validation.
//!
//! Key names are a contract with users' files, tests and deploy manifests. Unknown keys are
//! errors so that a typo never silently disables a security setting.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {message}")]
    Invalid {
        file: PathBuf,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public listener, e.g. "0.0.0.0:8443".
    pub listen: String,
    /// Worker threads; default: number of CPUs.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Omitted: plain HTTP (only behind something that already terminates TLS).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    pub upstream: UpstreamConfig,
    /// Admin listener for /metrics, /healthz and /readyz; never on the public listener.
    #[serde(default = "default_admin")]
    pub admin: String,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub originator: OriginatorConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub websocket: WebSocketConfig,
}

/// The oneM2M WebSocket binding: every request primitive's `fr` is held to the proven identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Largest WebSocket message (reassembled from its fragments) the client may send; larger
    /// closes the connection with 1009.
    #[serde(default = "default_ws_max_message")]
    pub max_message: usize,
    /// Let upgrades that offer neither `oneM2M.json` nor `oneM2M.cbor` through uninspected.
    /// Off by default: otherwise omitting the subprotocol would bypass the `fr` check.
    #[serde(default)]
    pub allow_opaque: bool,
    /// `fr` of the responses the proxy sends when it refuses a primitive; default: the
    /// CSE-ID that starts the request's `to` (`/id-in/...` -> `/id-in`).
    #[serde(default)]
    pub cse_id: Option<String>,
    /// How long an upgraded connection may stay silent in both directions.
    #[serde(default = "default_ws_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_message: default_ws_max_message(),
            allow_opaque: false,
            cse_id: None,
            idle_timeout: default_ws_idle_timeout(),
        }
    }
}

fn default_ws_max_message() -> usize {
    1024 * 1024
}

fn default_ws_idle_timeout() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Request line plus headers, in bytes; larger -> 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Request body, in bytes; larger -> 413 (WebSocket traffic after the upgrade is not a body).
    #[serde(default = "default_max_body")]
    pub max_body: u64,
    /// Open client connections (TLS listener); more are closed at accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// From accept to the first complete request head, TLS handshake included (TLS listener).
    #[serde(default = "default_header_timeout", with = "duration")]
    pub header_timeout: Duration,
    /// Idle keep-alive connections are closed after this long without a new request.
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: default_max_header_bytes(),
            max_body: default_max_body(),
            max_connections: default_max_connections(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

fn default_max_header_bytes() -> usize {
    16 * 1024
}

fn default_max_body() -> u64 {
    10 * 1024 * 1024
}

fn default_max_connections() -> usize {
    10_000
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// One JSON line per request on stdout.
    #[serde(default = "default_true")]
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { access: true }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Periodic content check, for file systems without change events.
    #[serde(default = "default_poll", with = "duration")]
    pub poll_interval: Duration,
    /// React to file-system events in the files' directories (off: SIGHUP and polling only).
    #[serde(default = "default_true")]
    pub watch: bool,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            poll_interval: default_poll(),
            watch: true,
        }
    }
}

fn default_poll() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Default: `required` when `client_ca` is set, `off` otherwise.
    #[serde(default)]
    pub client_cert: Option<ClientCertMode>,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// CRLs (PEM) for client certificates, checked at the handshake and reloaded at run time.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Offer TLS session tickets (resumption). Off by default: every connection then does a
    /// full handshake with certificate verification.
    #[serde(default)]
    pub session_tickets: bool,
    /// Key-exchange groups in OpenSSL's list syntax ("X25519:P-256"); default: OpenSSL's,
    /// which puts the post-quantum hybrid X25519MLKEM768 first.
    #[serde(default)]
    pub groups: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    Off,
    Optional,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

impl ClientCertMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientCertMode::Off => "off",
            ClientCertMode::Optional => "optional",
            ClientCertMode::Required => "required",
        }
    }
}

impl TlsConfig {
    pub fn client_cert_mode(&self) -> ClientCertMode {
        match (self.client_cert, &self.client_ca) {
            (Some(mode), _) => mode,
            (None, Some(_)) => ClientCertMode::Required,
            (None, None) => ClientCertMode::Off,
        }
    }
}

/// `upstream: "http://host:port"` or the long form with timeouts.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamLong {
    url: String,
    #[serde(default, with = "opt_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    timeout: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum UpstreamForms {
    Short(String),
    Long(UpstreamLong),
}

impl<'de> Deserialize<'de> for UpstreamConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let form = UpstreamForms::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a URL string like \"http://127.0.0.1:8080\" or a map with keys url, connect_timeout, timeout",
            )
        })?;
        Ok(match form {
            UpstreamForms::Short(url) => UpstreamConfig {
                url,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                timeout: DEFAULT_UPSTREAM_TIMEOUT,
            },
            UpstreamForms::Long(l) => UpstreamConfig {
                url: l.url,
                connect_timeout: l.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                timeout: l.timeout.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT),
            },
        })
    }
}

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Mtls,
    Basic,
    Bearer,
    Jwt,
    Introspection,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Mtls => "mtls",
            Method::Basic => "basic",
            Method::Bearer => "bearer",
            Method::Jwt => "jwt",
            Method::Introspection => "introspection",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default = "default_methods")]
    pub methods: Vec<Method>,
    #[serde(default)]
    pub mtls: MtlsConfig,
    #[serde(default)]
    pub basic: Option<BasicConfig>,
    #[serde(default)]
    pub bearer: Option<BearerConfig>,
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    #[serde(default)]
    pub introspection: Option<IntrospectionConfig>,
    /// Roles given to identities by name, e.g. `sysop: [Cadmin-tool]`; logged only for now.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub anonymous: Anonymous,
    /// Forward the client's `Authorization` header to the upstream (off: it is removed).
    #[serde(default)]
    pub forward_authorization: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            methods: default_methods(),
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    /// htpasswd file as Apache's `htpasswd` tool writes it.
    pub htpasswd: PathBuf,
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
}

pub fn default_realm() -> String {
    "oneM2M".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Successful verifications remembered (0 disables the cache).
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
    #[serde(default = "default_cache_ttl", with = "duration")]
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: default_cache_entries(),
            ttl: default_cache_ttl(),
        }
    }
}

fn default_cache_entries() -> usize {
    10_000
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerConfig {
    /// YAML file of tokens stored as SHA-256 hashes.
    pub tokens: PathBuf,
    /// Accept Arrowhead's `Bearer SYSTEM//<name>`, a claim without any proof. Never in production.
    #[serde(default)]
    pub allow_declared: bool,
}

/// JWTs issued elsewhere, verified with the issuer's keys.
#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// CA bundle (PEM) that signs the JWKS URL's server certificate.
    #[serde(default)]
    pub jwks_ca: Option<PathBuf>,
    /// How long fetched keys are used before they are fetched again.
    #[serde(default = "default_jwks_refresh", with = "duration")]
    pub jwks_refresh: Duration,
    /// An unknown `kid` fetches the keys again at most this often.
    #[serde(default = "default_jwks_min_refetch", with = "duration")]
    pub jwks_min_refetch: Duration,
    /// Connect + answer time limit of a JWKS fetch.
    #[serde(default = "default_fetch_timeout", with = "duration")]
    pub jwks_timeout: Duration,
    /// Claim (dotted path for nested claims) holding the originator.
    #[serde(default = "default_sub")]
    pub originator_claim: String,
    /// Array claim of further originators (patterns) the token may use in verify mode.
    #[serde(default)]
    pub originators_claim: Option<String>,
    /// Claim naming the identity in logs; default: the originator claim.
    #[serde(default)]
    pub name_claim: Option<String>,
    /// Array (or string) claim of roles.
    #[serde(default)]
    pub roles_claim: Option<String>,
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

fn default_sub() -> String {
    "sub".into()
}

/// Tokens only a verification service can judge (RFC 7662 introspection, Arrowhead's
/// identity service).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// HTTPS endpoint; POST `token=<token>` (form-encoded).
    pub url: String,
    /// CA bundle (PEM) that signs the endpoint's certificate.
    pub ca: PathBuf,
    /// Client certificate and key (PEM) the proxy presents to the endpoint.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Basic credentials for the endpoint: user name and a file holding the password.
    #[serde(default)]
    pub basic_user: Option<String>,
    #[serde(default)]
    pub basic_password_file: Option<PathBuf>,
    /// Also send plain bearer tokens (not only `IDENTITY-TOKEN//<token>`) to the endpoint.
    #[serde(default)]
    pub plain_bearer: bool,
    /// Answer field (dotted path) holding the originator.
    #[serde(default = "default_sub")]
    pub originator_field: String,
    /// Answer field naming the identity in logs; default: the originator field.
    #[serde(default)]
    pub name_field: Option<String>,
    /// Boolean answer field that makes the identity a system operator (role `sysop`).
    #[serde(default)]
    pub operator_field: Option<String>,
    /// Positive answers are kept this long (or until the answer's `exp`, if sooner).
    #[serde(default = "default_introspection_ttl", with = "duration")]
    pub cache_ttl: Duration,
    /// Negative answers (inactive tokens) are kept this long.
    #[serde(default = "default_introspection_negative_ttl", with = "duration")]
    pub negative_ttl: Duration,
    /// Connect + answer time limit; slower is a failure (503), never an admission.
    #[serde(default = "default_fetch_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_introspection_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_introspection_negative_ttl() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Failed attempts allowed per minute, per client address and per user name.
    #[serde(default = "default_failures_per_minute")]
    pub failures_per_minute: u32,
    /// Failures allowed in a burst before the rate applies.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            failures_per_minute: default_failures_per_minute(),
            burst: default_burst(),
        }
    }
}

fn default_failures_per_minute() -> u32 {
    10
}

fn default_burst() -> u32 {
    10
}

fn default_methods() -> Vec<Method> {
    vec![Method::Mtls]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// Certificate fields that may name the client; the first present wins.
    #[serde(default = "default_identity_fields")]
    pub identity: Vec<CertField>,
    /// Regex on that value; the named group `originator` (or the whole match) is the originator.
    #[serde(default = "default_originator_regex")]
    pub originator: String,
}

impl Default for MtlsConfig {
    fn default() -> Self {
        MtlsConfig {
            identity: default_identity_fields(),
            originator: default_originator_regex(),
        }
    }
}

fn default_identity_fields() -> Vec<CertField> {
    vec![
        CertField::Uri,
        CertField::Dns,
        CertField::Email,
        CertField::Cn,
    ]
}

fn default_originator_regex() -> String {
    "^(?P<originator>.+)$".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    #[default]
    Deny,
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginatorMode {
    #[default]
    Overwrite,
    Verify,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginatorConfig {
    #[serde(default)]
    pub mode: OriginatorMode,
    /// verify mode: an identity whose originator is a CSE-ID (`/id-mn`) may send originators
    /// inside its own namespace (`/id-mn/...`), as a CSE forwarding for its AEs does.
    #[serde(default)]
    pub cse_namespace: bool,
    /// verify mode: further originator patterns (`*` = any run of characters) an identity may
    /// use, keyed by its authenticated originator.
    #[serde(default)]
    pub allow: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight requests may run after SIGTERM before the process exits.
    #[serde(default = "default_grace", with = "duration")]
    pub grace_period: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period: default_grace(),
        }
    }
}

fn default_grace() -> Duration {
    Duration::from_secs(20)
}

fn default_admin() -> String {
    "127.0.0.1:9091".to_string()
}

mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "expected a duration like \"10s\" or \"500ms\", got {s:?} ({e})"
            ))
        })
    }
}

mod opt_duration {
    use serde::Deserializer;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// Validated, resolved values derived from the raw config.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: SocketAddr,
}

impl Config {
    pub fn load(path: &Path) -> Result<(Config, Resolved), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::from_text(path, &text)
    }

    /// Parse, resolve relative paths against `path`'s directory, and validate.
    pub fn from_text(path: &Path, text: &str) -> Result<(Config, Resolved), ConfigError> {
        let mut config = Config::parse(path, text)?;
        config.make_paths_relative_to(path);
        let resolved = config.validate(path)?;
        Ok((config, resolved))
    }

    /// Keys whose change is applied only by a restart, that differ between `self` and `new`.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let same =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
        let checks: [(&'static str, bool); 11] = [
            ("listen", same(&self.listen, &new.listen)),
            ("threads", same(&self.threads, &new.threads)),
            ("tls", same(&self.tls, &new.tls)),
            ("upstream", same(&self.upstream, &new.upstream)),
            ("admin", same(&self.admin, &new.admin)),
            ("auth (except basic.originators)", {
                let mut a = self.auth.clone();
                let mut b = new.auth.clone();
                for auth in [&mut a, &mut b] {
                    if let Some(basic) = auth.basic.as_mut() {
                        basic.originators.clear();
                    }
                }
                same(&a, &b)
            }),
            ("shutdown", same(&self.shutdown, &new.shutdown)),
            ("reload", same(&self.reload, &new.reload)),
            ("log", same(&self.log, &new.log)),
            ("limits", same(&self.limits, &new.limits)),
            ("websocket", same(&self.websocket, &new.websocket)),
        ];
        checks
            .into_iter()
            .filter(|(_, same)| !same)
            .map(|(k, _)| k)
            .collect()
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Relative file names in the config are relative to the config file's directory, so a
    /// config works whatever the working directory of the process.
    fn make_paths_relative_to(&mut self, config_path: &Path) {
        let base = config_path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = self.tls.as_mut() {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            if let Some(ca) = tls.client_ca.as_mut() {
                fix(ca);
            }
            if let Some(crl) = tls.crl.as_mut() {
                fix(crl);
            }
        }
        if let Some(basic) = self.auth.basic.as_mut() {
            fix(&mut basic.htpasswd);
        }
        if let Some(bearer) = self.auth.bearer.as_mut() {
            fix(&mut bearer.tokens);
        }
        if let Some(jwt) = self.auth.jwt.as_mut() {
            for issuer in &mut jwt.issuers {
                for p in [
                    &mut issuer.jwks_file,
                    &mut issuer.secret_file,
                    &mut issuer.jwks_ca,
                ]
                .into_iter()
                .flatten()
                {
                    fix(p);
                }
            }
        }
        if let Some(intro) = self.auth.introspection.as_mut() {
            fix(&mut intro.ca);
            for p in [
                &mut intro.client_cert,
                &mut intro.client_key,
                &mut intro.basic_password_file,
            ]
            .into_iter()
            .flatten()
            {
                fix(p);
            }
        }
    }

    pub fn validate(&self, file: &Path) -> Result<Resolved, ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            message,
        };
        let listen = parse_addr(&self.listen)
            .map_err(|m| invalid("listen", format!("expected host:port, {m}")))?;
        let admin = parse_addr(&self.admin)
            .map_err(|m| invalid("admin", format!("expected host:port, {m}")))?;
        if admin == listen {
            return Err(invalid(
                "admin",
                "must differ from `listen`: health endpoints never share the public listener"
                    .into(),
            ));
        }
        if self.threads == Some(0) {
            return Err(invalid("threads", "expected a number >= 1".into()));
        }
        let upstream =
            parse_upstream_url(&self.upstream.url).map_err(|m| invalid("upstream", m))?;
        if self.auth.methods.is_empty() && self.auth.anonymous == Anonymous::Deny {
            return Err(invalid(
                "auth.methods",
                "expected at least one of mtls, basic, bearer (or auth.anonymous: allow)".into(),
            ));
        }
        let mut seen = Vec::new();
        for m in &self.auth.methods {
            if seen.contains(m) {
                return Err(invalid(
                    "auth.methods",
                    format!("`{}` is listed twice", m.as_str()),
                ));
            }
            seen.push(*m);
        }
        if self.auth.methods.contains(&Method::Basic) && self.auth.basic.is_none() {
            return Err(invalid(
                "auth.basic",
                "auth method `basic` needs `auth.basic.htpasswd: PATH`".into(),
            ));
        }
        if self.auth.methods.contains(&Method::Bearer) && self.auth.bearer.is_none() {
            return Err(invalid(
                "auth.bearer",
                "auth method `bearer` needs `auth.bearer.tokens: PATH`".into(),
            ));
        }
        if self.auth.methods.contains(&Method::Jwt) && self.auth.jwt.is_none() {
            return Err(invalid(
                "auth.jwt",
                "auth method `jwt` needs `auth.jwt.issuers`".into(),
            ));
        }
        if let Some(jwt) = &self.auth.jwt {
            if jwt.issuers.is_empty() {
                return Err(invalid(
                    "auth.jwt.issuers",
                    "expected at least one issuer".into(),
                ));
            }
            let mut names = std::collections::HashSet::new();
            for issuer in &jwt.issuers {
                if !names.insert(issuer.issuer.as_str()) {
                    return Err(invalid(
                        "auth.jwt.issuers",
                        format!("issuer {:?} is listed twice", issuer.issuer),
                    ));
                }
                crate::auth::jwt::check_issuer_config(issuer).map_err(|m| {
                    invalid("auth.jwt.issuers", format!("{:?}: {m}", issuer.issuer))
                })?;
            }
        }
        if self.auth.methods.contains(&Method::Introspection) && self.auth.introspection.is_none() {
            return Err(invalid(
                "auth.introspection",
                "auth method `introspection` needs `auth.introspection.url` and `ca`".into(),
            ));
        }
        if let Some(intro) = &self.auth.introspection {
            if !intro.url.starts_with("https://") {
                return Err(invalid(
                    "auth.introspection.url",
                    format!("expected an https:// URL, got {:?}", intro.url),
                ));
            }
            if intro.client_cert.is_some() != intro.client_key.is_some() {
                return Err(invalid(
                    "auth.introspection.client_cert",
                    "expected client_cert and client_key together".into(),
                ));
            }
            if intro.basic_user.is_some() != intro.basic_password_file.is_some() {
                return Err(invalid(
                    "auth.introspection.basic_user",
                    "expected basic_user and basic_password_file together".into(),
                ));
            }
            if intro.timeout.is_zero() || intro.cache_ttl.is_zero() {
                return Err(invalid(
                    "auth.introspection",
                    "expected timeout and cache_ttl > 0".into(),
                ));
            }
        }
        for (role, names) in &self.auth.roles {
            if role.is_empty() || names.iter().any(String::is_empty) {
                return Err(invalid(
                    "auth.roles",
                    "expected `role: [identity names]` with non-empty names".into(),
                ));
            }
        }
        if let Some(basic) = &self.auth.basic {
            if basic.realm.is_empty()
                || basic.realm.contains(['"', '\\'])
                || basic.realm.chars().any(char::is_control)
            {
                return Err(invalid(
                    "auth.basic.realm",
                    "expected a non-empty realm without quotes, backslashes or control characters"
                        .into(),
                ));
            }
            for (user, originator) in &basic.originators {
                crate::originator::validate_originator(originator).map_err(|m| {
                    invalid(
                        "auth.basic.originators",
                        format!("originator of {user:?}: {m}"),
                    )
                })?;
            }
        }
        if self.reload.poll_interval < Duration::from_millis(100) {
            return Err(invalid(
                "reload.poll_interval",
                "expected at least 100ms (e.g. \"10s\")".into(),
            ));
        }
        let l = &self.limits;
        if l.max_header_bytes < 1024
            || l.max_connections == 0
            || l.header_timeout.is_zero()
            || l.idle_timeout.as_secs() == 0
        {
            return Err(invalid(
                "limits",
                "expected max_header_bytes >= 1024, max_connections >= 1, header_timeout > 0 and idle_timeout >= 1s".into(),
            ));
        }
        if let Some(groups) = self.tls.as_ref().and_then(|t| t.groups.as_deref()) {
            crate::tls::check_groups(groups).map_err(|m| invalid("tls.groups", m))?;
        }
        let ws = &self.websocket;
        if !(125..=64 * 1024 * 1024).contains(&ws.max_message) {
            return Err(invalid(
                "websocket.max_message",
                format!("expected 125 to 67108864 bytes, got {}", ws.max_message),
            ));
        }
        if ws.idle_timeout.as_secs() == 0 {
            return Err(invalid(
                "websocket.idle_timeout",
                "expected at least 1s".into(),
            ));
        }
        if let Some(cse_id) = &ws.cse_id {
            crate::originator::validate_originator(cse_id)
                .map_err(|m| invalid("websocket.cse_id", m))?;
        }
        if self.auth.rate_limit.failures_per_minute == 0 || self.auth.rate_limit.burst == 0 {
            return Err(invalid(
                "auth.rate_limit",
                "expected failures_per_minute and burst >= 1".into(),
            ));
        }
        let mtls_on = self.auth.methods.contains(&Method::Mtls);
        match &self.tls {
            None if mtls_on => {
                return Err(invalid(
                    "tls",
                    "auth method `mtls` needs a `tls` section with `client_ca`".into(),
                ))
            }
            Some(tls) => {
                let mode = tls.client_cert_mode();
                if mode != ClientCertMode::Off && tls.client_ca.is_none() {
                    return Err(invalid(
                        "tls.client_ca",
                        format!(
                            "expected a CA bundle file: tls.client_cert is {}, which verifies client certificates", mode.as_str()
                        ),
                    ));
                }
                if mtls_on && mode == ClientCertMode::Off {
                    return Err(invalid(
                        "tls.client_cert",
                        "auth method `mtls` needs client_cert `optional` or `required`".into(),
                    ));
                }
            }
            None => {}
        }
        if self.auth.mtls.identity.is_empty() {
            return Err(invalid(
                "auth.mtls.identity",
                "expected a list of certificate fields: uri, dns, email, cn".into(),
            ));
        }
        crate::auth::mtls::compile_originator_regex(&self.auth.mtls.originator)
            .map_err(|m| invalid("auth.mtls.originator", m))?;
        for (who, patterns) in &self.originator.allow {
            for p in patterns {
                crate::originator::validate_originator(p).map_err(|m| {
                    invalid(
                        "originator.allow",
                        format!("pattern {p:?} for {who:?}: {m}"),
                    )
                })?;
            }
        }
        Ok(Resolved {
            listen,
            admin,
            upstream,
        })
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("got {s:?} ({e})"))?
        .next()
        .ok_or_else(|| format!("got {s:?}, which resolves to no address"))
}

/// Accepts only `http://host:port[/]`: the upstream is a plain-HTTP CSE next to the proxy.
fn parse_upstream_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("expected a URL like \"http://127.0.0.1:8080\" (plain HTTP), got {url:?}")
    })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(format!(
            "expected http://host:port without a path or user info, got {url:?}"
        ));
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    parse_addr(&with_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.yaml"), text)
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let err = parse("listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\nauth:\n  mtls:\n    identiy: [uri]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("test.yaml"), "{err}");
        assert!(err.contains("identiy"), "{err}");
    }

    #[test]
    fn upstream_short_and_long_forms() {
        let c = parse("listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\n").unwrap();
        assert_eq!(c.upstream.timeout, DEFAULT_UPSTREAM_TIMEOUT);
        let c = parse(
            "listen: \"127.0.0.1:1\"\nupstream:\n  url: \"http://127.0.0.1:2\"\n  timeout: 2s\n",
        )
        .unwrap();
        assert_eq!(c.upstream.timeout, Duration::from_secs(2));
        assert!(parse("listen: \"127.0.0.1:1\"\nupstream:\n  url: x\n  timout: 2s\n").is_err());
    }

    #[test]
    fn upstream_url_must_be_plain_http() {
        assert!(parse_upstream_url("https://127.0.0.1:1").is_err());
        assert!(parse_upstream_url("http://127.0.0.1:1/path").is_err());
        assert_eq!(
            parse_upstream_url("http://127.0.0.1:8080/").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
    }

    #[test]
    fn client_cert_default_follows_client_ca() {
        let c = parse("listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\ntls:\n  cert: a\n  key: b\n  client_ca: c\n").unwrap();
        assert_eq!(c.tls.unwrap().client_cert_mode(), ClientCertMode::Required);
    }

    #[test]
    fn mtls_without_client_ca_is_refused() {
        let c = parse("listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\ntls:\n  cert: a\n  key: b\n  client_cert: optional\n").unwrap();
        let err = c.validate(Path::new("t.yaml")).unwrap_err().to_string();
        assert!(err.contains("tls.client_ca"), "{err}");
    }
}
