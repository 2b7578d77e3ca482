//! The YAML configuration: plain data, parsing and checks that need nothing but the config
//! itself. Each section lives in its own file with its own `validate()`; the modules that build
//! runtime objects from a section (TLS, the auth methods, the originator policy) check the rest
//! and report it with the key path ([`KeyError`]).
//!
//! Key names are a contract with users' files, tests and deploy manifests. Unknown keys are
//! errors so that a typo never silently disables a security setting.

pub mod auth;
pub mod authorization;
pub mod claim_path;
pub mod cse;
pub mod egress;
pub mod originator;
pub mod proxy_protocol;
pub mod service;
pub mod tls;
pub mod tracing;
pub mod value;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::identity::Method;
pub use auth::{
    default_realm, Anonymous, AuthConfig, BasicConfig, BearerConfig, CacheConfig, CertField,
    IntrospectionConfig, JwtConfig, JwtIssuerConfig, MtlsConfig, RateLimitConfig,
};
pub use authorization::{AuthorizationConfig, Effect, Operation, ResourceType, RuleConfig};
pub use claim_path::ClaimPath;
pub use cse::CseConfig;
pub use egress::{EgressAllow, EgressRoute, PeerUrl};
pub use originator::{OriginatorConfig, OriginatorMode};
pub use proxy_protocol::{Cidr, ProxyProtocolConfig};
pub use service::{
    LimitsConfig, LogConfig, ReloadConfig, ShutdownConfig, UpstreamConfig, VerificationLimits,
    WebSocketConfig,
};
pub use tls::{ClientCertMode, CrlScope, TlsConfig, TlsVersion};
pub use tracing::TracingConfig;
pub use value::{FilePath, KeyError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{}: {error}", file.display())]
    Invalid { file: PathBuf, error: KeyError },
}

impl ConfigError {
    pub fn invalid(file: &Path, error: KeyError) -> Self {
        ConfigError::Invalid {
            file: file.to_path_buf(),
            error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// Routes for the local CSE's outbound traffic, one per peer.
    #[serde(default)]
    pub egress: Vec<EgressRoute>,
    /// Rules on who may do what where, after authentication.
    #[serde(default)]
    pub authorization: AuthorizationConfig,
    /// The local CSE's identity: targets and originators in every form are read as one.
    #[serde(default)]
    pub cse: Option<CseConfig>,
    /// PROXY protocol on the public listener, from these balancers only; off when absent.
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocolConfig>,
    /// OpenTelemetry trace export (with the `OTEL_*` environment variables); off when neither
    /// gives an endpoint.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
    /// Removed (there is one request path): read only to refuse it with a clear error, rather
    /// than as an unknown key.
    #[serde(default)]
    pub request_path: Option<serde_yaml_ng::Value>,
    /// Accept the credentials this project publishes as examples (certs/dev, the deploy
    /// example Secret), which are otherwise refused. For a throwaway trial only.
    #[serde(default)]
    pub allow_example_credentials: bool,
}

/// The error for a config that still sets `request_path`.
pub const REQUEST_PATH_REMOVED: &str =
    "removed: there is one request path now (what `lean` was, for ingress and egress alike); delete this key";

/// The keys of the config file a reload applies (every other change needs a restart), in the
/// words of the reload log line and the docs.
pub const LIVE_KEYS: [&str; 5] = [
    "cse",
    "originator",
    "auth.roles",
    "auth.basic.originators",
    "authorization",
];

fn default_admin() -> String {
    "127.0.0.1:9091".to_string()
}

/// Validated, resolved values derived from the raw config.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub upstream: SocketAddr,
    /// `proxy_protocol.trusted`, parsed; empty when the PROXY protocol is off.
    pub proxy_trusted: Vec<Cidr>,
}

impl Config {
    pub fn load(path: &Path) -> Result<(Config, Resolved), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::from_text(path, &text)
    }

    /// Parse (relative file names resolved against `path`'s directory) and validate.
    pub fn from_text(path: &Path, text: &str) -> Result<(Config, Resolved), ConfigError> {
        let config = Config::parse(path, text)?;
        let resolved = config
            .validate()
            .map_err(|e| ConfigError::invalid(path, e))?;
        Ok((config, resolved))
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        value::with_base_dir(base, || serde_yaml_ng::from_str(text)).map_err(|e| {
            ConfigError::Parse {
                file: path.to_path_buf(),
                message: e.to_string(),
            }
        })
    }

    /// Keys whose change is applied only by a restart, that differ between `self` and `new`.
    /// The destructuring is exhaustive: a new top-level key does not compile until it is
    /// classified here.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let Config {
            listen,
            threads,
            tls,
            upstream,
            admin,
            auth,
            // reloaded: the originator policy and the rules
            originator: _,
            authorization: _,
            // reloaded, except the `poa` mappings of its own addresses
            cse,
            shutdown,
            reload,
            log,
            limits,
            websocket,
            egress,
            proxy_protocol,
            tracing,
            // refused by `validate`
            request_path: _,
            allow_example_credentials,
        } = self;
        let auth_except_reloaded = |a: &AuthConfig| {
            let mut a = a.clone();
            if let Some(basic) = a.basic.as_mut() {
                basic.originators.clear();
            }
            a.roles.clear();
            a
        };
        let addresses = |c: &Option<CseConfig>| {
            c.as_ref()
                .map(|c| (c.advertised.clone(), c.public_url.clone()))
        };
        let checks: [(&'static str, bool); 16] = [
            ("listen", *listen == new.listen),
            ("threads", *threads == new.threads),
            ("tls", *tls == new.tls),
            ("upstream", *upstream == new.upstream),
            ("admin", *admin == new.admin),
            (
                "auth (except basic.originators and roles)",
                auth_except_reloaded(auth) == auth_except_reloaded(&new.auth),
            ),
            ("shutdown", *shutdown == new.shutdown),
            ("reload", *reload == new.reload),
            ("log", *log == new.log),
            ("limits", *limits == new.limits),
            ("websocket", *websocket == new.websocket),
            ("egress", *egress == new.egress),
            ("proxy_protocol", *proxy_protocol == new.proxy_protocol),
            ("tracing", *tracing == new.tracing),
            (
                "cse.advertised, cse.public_url",
                addresses(cse) == addresses(&new.cse),
            ),
            (
                "allow_example_credentials",
                *allow_example_credentials == new.allow_example_credentials,
            ),
        ];
        checks
            .into_iter()
            .filter(|(_, same)| !same)
            .map(|(k, _)| k)
            .collect()
    }

    /// The checks that need nothing but the config: addresses, then each section's own.
    pub fn validate(&self) -> Result<Resolved, KeyError> {
        if self.request_path.is_some() {
            return Err(KeyError::new("request_path", REQUEST_PATH_REMOVED));
        }
        let listen = parse_addr(&self.listen)
            .map_err(|m| KeyError::new("listen", format!("expected host:port, {m}")))?;
        let admin = parse_addr(&self.admin)
            .map_err(|m| KeyError::new("admin", format!("expected host:port, {m}")))?;
        if admin == listen {
            return Err(KeyError::new(
                "admin",
                "must differ from `listen`: health endpoints never share the public listener",
            ));
        }
        if self.threads == Some(0) {
            return Err(KeyError::new("threads", "expected a number >= 1"));
        }
        let upstream =
            parse_upstream_url(&self.upstream.url).map_err(|m| KeyError::new("upstream", m))?;
        self.auth.validate()?;
        self.reload.validate()?;
        self.limits.validate()?;
        self.websocket.validate()?;
        if let Some(cse) = &self.cse {
            cse.validate()?;
            if let Some(old) = self.websocket.cse_id.as_ref().filter(|o| **o != cse.id) {
                return Err(KeyError::new(
                    "websocket.cse_id",
                    format!(
                        "deprecated, and {old:?} differs from cse.id {:?}: remove websocket.cse_id",
                        cse.id
                    ),
                ));
            }
        }
        egress::validate(&self.egress)?;
        self.validate_public_url()?;
        self.authorization.validate()?;
        if let Some(tracing) = &self.tracing {
            tracing.validate()?;
        }
        for (i, route) in self.egress.iter().enumerate() {
            if let Ok(addr) = route.listen_addr() {
                if addr == listen || addr == admin {
                    return Err(KeyError::new(
                        format!("egress[{i}].listen"),
                        format!("{addr} is already `listen` or `admin`"),
                    ));
                }
            }
        }
        let mtls_on = self.auth.methods.contains(&Method::Mtls);
        match &self.tls {
            None if mtls_on => {
                return Err(KeyError::new(
                    "tls",
                    "auth method `mtls` needs a `tls` section with `client_ca`",
                ))
            }
            Some(tls) => {
                tls.validate()?;
                if mtls_on && tls.client_cert_mode() == ClientCertMode::Off {
                    return Err(KeyError::new(
                        "tls.client_cert",
                        "auth method `mtls` needs client_cert `optional` or `required`",
                    ));
                }
            }
            None => {}
        }
        let proxy_trusted = match &self.proxy_protocol {
            Some(_) if self.tls.is_none() => {
                return Err(KeyError::new(
                    "proxy_protocol",
                    "needs a `tls` section: the PROXY header is read before the TLS handshake, on the TLS listener only",
                ))
            }
            Some(pp) => pp.validate()?,
            None => Vec::new(),
        };
        Ok(Resolved {
            listen,
            admin,
            upstream,
            proxy_trusted,
        })
    }
}

impl Config {
    /// `cse.public_url` and the advertised addresses against the routes: a `poa` string must
    /// match at most one mapping, so neither may share an origin with a route's URL.
    fn validate_public_url(&self) -> Result<(), KeyError> {
        let Some(cse) = &self.cse else {
            return Ok(());
        };
        let Some(public) = &cse.public_url else {
            return Ok(());
        };
        let same = |a: &str, b: &str| crate::poa::same_origin(a, b).unwrap_or(false);
        for (i, route) in self.egress.iter().enumerate() {
            if same(public, &route.peer) {
                return Err(KeyError::new(
                    "cse.public_url",
                    format!(
                        "{public:?} has the origin of egress[{i}].peer {:?}: this sidecar's own URL cannot be a peer's",
                        route.peer
                    ),
                ));
            }
            let local = format!("http://{}", route.listen);
            for (j, advertised) in cse.advertised_or(&self.upstream.url).iter().enumerate() {
                if same(advertised, &local) {
                    let key = match cse.advertised {
                        Some(_) => format!("cse.advertised[{j}]"),
                        None => "cse.advertised".to_string(),
                    };
                    return Err(KeyError::new(
                        key,
                        format!(
                            "{advertised:?} is egress[{i}].listen ({local}): the CSE's own address cannot be a route's"
                        ),
                    ));
                }
            }
        }
        Ok(())
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
    use std::time::Duration;

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
        assert_eq!(c.upstream.timeout, service::DEFAULT_UPSTREAM_TIMEOUT);
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
    fn request_path_is_refused_naming_the_key_whatever_its_value() {
        let base = "listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\n";
        assert!(parse(base).unwrap().request_path.is_none());
        for value in ["lean", "pipeline", "fast", "{}"] {
            let c = parse(&format!("{base}request_path: {value}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(
                err.contains("request_path") && err.contains("one request path"),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn mtls_without_client_ca_is_refused() {
        let c = parse("listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\ntls:\n  cert: a\n  key: b\n  client_cert: optional\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("tls.client_ca"), "{err}");
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn file_keys_are_relative_to_the_config_file() {
        let c = Config::parse(
            Path::new("/etc/m2m/proxy.yaml"),
            "listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\ntls:\n  cert: certs/a.pem\n  key: /abs/b.key\n",
        )
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(&*tls.cert, Path::new("/etc/m2m/certs/a.pem"));
        assert_eq!(&*tls.key, Path::new("/abs/b.key"));
    }

    #[test]
    fn restart_only_changes_compare_sections() {
        let text = "listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\n";
        let a = Config::parse(Path::new("t.yaml"), text).unwrap();
        let mut b = a.clone();
        b.originator.cse_namespace = true;
        assert!(
            a.restart_only_changes(&b).is_empty(),
            "originator is reloaded"
        );
        b.limits.max_body += 1;
        assert_eq!(a.restart_only_changes(&b), vec!["limits"]);
    }

    #[test]
    fn the_cses_own_addresses_need_a_restart_and_differ_from_the_routes() {
        let base = "listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\ntls: {cert: a, key: b, client_ca: c}\negress:\n  - name: in\n    listen: \"127.0.0.1:3\"\n    peer: \"https://in.example:8443\"\n    tls: {ca: ca.pem}\ncse:\n  id: /id-mn\n  name: cse-mn\n";
        let parse = |extra: &str| Config::parse(Path::new("t.yaml"), &format!("{base}{extra}"));
        let a = parse("  public_url: \"https://mn.example:8443\"\n").unwrap();
        if let Err(e) = a.validate() {
            panic!("{}: {}", e.key, e.message);
        }
        let mut b = a.clone();
        b.cse.as_mut().unwrap().name = "cse-mn2".into();
        assert!(a.restart_only_changes(&b).is_empty(), "cse is reloaded");
        b.cse.as_mut().unwrap().public_url = Some("https://mn.example:9443".into());
        assert_eq!(
            a.restart_only_changes(&b),
            vec!["cse.advertised, cse.public_url"]
        );
        for (extra, key) in [
            ("  public_url: \"https://IN.example:8443/x\"\n", "cse.public_url"),
            (
                "  public_url: \"https://mn.example\"\n  advertised: [\"http://10.0.0.1:80\", \"http://127.0.0.1:3\"]\n",
                "cse.advertised[1]",
            ),
        ] {
            let err = parse(extra).unwrap().validate().unwrap_err();
            assert_eq!(err.key, key, "{extra}: {}", err.message);
        }
        // the default advertised address is the upstream URL, checked the same way
        let clash = format!("{base}  public_url: \"https://mn.example\"\n")
            .replace("http://127.0.0.1:2", "http://127.0.0.1:3");
        let err = Config::parse(Path::new("t.yaml"), &clash)
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(err.key, "cse.advertised", "{}", err.message);
    }
}
