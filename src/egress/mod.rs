//! Egress: the local CSE's outbound (Mcc) traffic. Each route is a plain-HTTP listener on
//! loopback whose requests go to one peer over TLS, with the pod's identity (client
//! certificate, or Basic/Bearer credentials from files) and the peer's server certificate
//! checked against the route's CA. The route's files are reloadables like the ingress files.

pub mod listener;
pub mod peer;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use http::HeaderValue;
use openssl::x509::X509;
use pingora::utils::tls::CertKey;
use regex::Regex;

use crate::config::egress::allow_key_error;
use crate::config::{EgressRoute, KeyError, PeerUrl};
use crate::cse::LocalCse;
use crate::example_credentials;
use crate::forward::IdlePool;
use crate::metrics;
use crate::originator_syntax::validate_originator;
use crate::reload::{self, FileKind, Reloadable};
use crate::rules::RuleSet;
use crate::tls::material::{not_after_unix, parse_ca_bundle, subject_label, ServerCert};

/// One route, built from its config section; its files come with the reloader's first load.
pub struct Route {
    pub name: String,
    pub listen: SocketAddr,
    pub peer: PeerUrl,
    /// The peer's address: resolved at start ([`Route::resolve_at_start`]), or on first use
    /// when the name did not resolve then (a peer pod that starts later), and kept.
    pub peer_addr: ArcSwapOption<SocketAddr>,
    /// SNI and the name the peer's certificate must carry.
    pub server_name: String,
    /// `Some` when `server_name` is an IP address: checked against the certificate's IP SANs.
    pub server_ip: Option<IpAddr>,
    /// `http://<listen>`: what the local CSE knows the peer as.
    pub local_url: String,
    pub originators: Option<Vec<Regex>>,
    pub rewrite_poa: bool,
    /// Identities holding one of these roles are this route's peer on the ingress.
    pub peer_roles: Vec<String>,
    /// `allow`: what may leave on this route (allow rules, default deny); `None`: everything.
    pub allow: Option<RuleSet>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// CA bundle the peer's certificate must chain to.
    pub ca: ArcSwapOption<Box<[X509]>>,
    /// The client certificate and key presented to the peer.
    pub client: ArcSwapOption<CertKey>,
    /// `Authorization` sent to the peer (Basic or Bearer from the route's secret file).
    pub authorization: ArcSwapOption<HeaderValue>,
    /// Counts the reloads of `ca` and `client`: connections made before one carry no further
    /// request.
    generation: AtomicU64,
    /// The idle connections to the peer, closed when `generation` moves on.
    pools: Mutex<Vec<IdlePool>>,
    files: RouteFiles,
}

#[derive(Clone)]
struct RouteFiles {
    ca: Option<PathBuf>,
    cert_key: Option<(PathBuf, PathBuf)>,
    secret: Option<Secret>,
}

#[derive(Clone)]
enum Secret {
    Basic {
        user: String,
        password_file: PathBuf,
    },
    Bearer {
        token_file: PathBuf,
    },
}

impl Route {
    /// Build a route from its section (`index` names it in errors).
    pub fn build(index: usize, c: &EgressRoute) -> Result<Route, KeyError> {
        let key = |k: &str| format!("egress[{index}].{k}");
        let listen = c
            .listen_addr()
            .map_err(|m| KeyError::new(key("listen"), m))?;
        let peer = PeerUrl::parse(&c.peer).map_err(|m| KeyError::new(key("peer"), m))?;
        let server_name = c
            .tls
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .unwrap_or_else(|| peer.host.clone());
        let originators = c
            .originators
            .as_ref()
            .map(|patterns| {
                patterns
                    .iter()
                    .map(|p| {
                        Regex::new(p).map_err(|e| {
                            KeyError::new(
                                key("originators"),
                                format!("expected regular expressions: {p:?}: {e}"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let peer_cse = c
            .peer_cse
            .as_ref()
            .map(LocalCse::from_config)
            .transpose()
            .map_err(|e| allow_key_error(index, e))?;
        let allow = c
            .allow_rules()
            .map(|rules| RuleSet::compile_for(&rules, peer_cse.as_ref()))
            .transpose()
            .map_err(|e| allow_key_error(index, e))?;
        let secret = match (&c.basic, &c.bearer) {
            (Some(b), _) => Some(Secret::Basic {
                user: b.user.clone(),
                password_file: b.password_file.to_path_buf(),
            }),
            (None, Some(b)) => Some(Secret::Bearer {
                token_file: b.token_file.to_path_buf(),
            }),
            (None, None) => None,
        };
        Ok(Route {
            name: c.name.clone(),
            listen,
            local_url: format!("http://{listen}"),
            server_ip: server_name.parse().ok(),
            server_name,
            peer,
            peer_addr: ArcSwapOption::empty(),
            originators,
            rewrite_poa: c.rewrite_poa,
            peer_roles: c.peer_roles.clone(),
            allow,
            timeout: c.timeout,
            connect_timeout: c.connect_timeout,
            ca: ArcSwapOption::empty(),
            client: ArcSwapOption::empty(),
            authorization: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            pools: Mutex::new(Vec::new()),
            files: RouteFiles {
                ca: c.tls.as_ref().map(|t| t.ca.to_path_buf()),
                cert_key: c.tls.as_ref().and_then(|t| match (&t.cert, &t.key) {
                    (Some(cert), Some(key)) => Some((cert.to_path_buf(), key.to_path_buf())),
                    _ => None,
                }),
                secret,
            },
        })
    }

    /// Resolve the peer's name now (at start, not in [`Route::build`], which a config reload
    /// also runs): a name that does not resolve yet is tried again on first use.
    pub fn resolve_at_start(&self) {
        match (self.peer.host.as_str(), self.peer.port).to_socket_addrs() {
            Ok(mut addrs) => self.peer_addr.store(addrs.next().map(Arc::new)),
            Err(e) => log::warn!(
                "egress {}: {} does not resolve now ({e}); trying again on first use",
                self.name,
                self.peer.host
            ),
        }
    }

    /// The peer's address, resolving its name if that did not work before.
    pub async fn peer_addr(&self) -> Option<SocketAddr> {
        if let Some(addr) = self.peer_addr.load_full() {
            return Some(*addr);
        }
        let addr = tokio::net::lookup_host((self.peer.host.as_str(), self.peer.port))
            .await
            .ok()?
            .next()?;
        self.peer_addr.store(Some(Arc::new(addr)));
        Some(addr)
    }

    /// The generation of the route's TLS files: it changes with each reload of them.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// After the TLS files were replaced (not before: a connection pooled under the new
    /// generation must have been made with the new files). The idle connections verified under
    /// the old files are closed now; those carrying a request finish it and are closed then.
    fn next_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for pool in self.pools().iter() {
            pool.close_all();
        }
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, Vec<IdlePool>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The idle connections of a listener sending to this route's peer.
    pub fn watch(&self, pool: IdlePool) {
        self.pools().push(pool);
    }

    /// Whether the local CSE may send this originator on this route.
    pub fn originator_allowed(&self, originator: Option<&str>) -> bool {
        match (&self.originators, originator) {
            (None, _) => true,
            (Some(patterns), Some(o)) => patterns.iter().any(|p| p.is_match(o)),
            (Some(_), None) => false,
        }
    }

    /// Whether a request with these `X-M2M-Origin` values may leave on this route. With
    /// `originators`, there must be exactly one, readable as an originator, and allowed: a
    /// peer could read any of several, or one the route could not read.
    pub fn originators_allowed(&self, values: &[&HeaderValue]) -> bool {
        if self.originators.is_none() {
            return true;
        }
        match values {
            [one] => one
                .to_str()
                .ok()
                .filter(|o| validate_originator(o).is_ok())
                .is_some_and(|o| self.originator_allowed(Some(o))),
            _ => false,
        }
    }

    /// The route's files, each reloaded on its own.
    pub fn reloadables(self: &Arc<Self>) -> Vec<Box<dyn Reloadable>> {
        let mut items: Vec<Box<dyn Reloadable>> = Vec::new();
        if let Some(path) = &self.files.ca {
            items.push(Box::new(CaReload {
                route: self.clone(),
                path: path.clone(),
            }));
        }
        if let Some((cert, key)) = &self.files.cert_key {
            items.push(Box::new(ClientCertReload {
                route: self.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }));
        }
        if let Some(secret) = &self.files.secret {
            items.push(Box::new(SecretReload {
                route: self.clone(),
                secret: secret.clone(),
            }));
        }
        items
    }

    /// `egress[].name` of this route, for the expiry metric's `kind`.
    fn metric_kind(&self, what: &str) -> String {
        format!("egress_{what}:{}", self.name)
    }
}

struct CaReload {
    route: Arc<Route>,
    path: PathBuf,
}

impl Reloadable for CaReload {
    fn kind(&self) -> FileKind {
        FileKind::EgressCa
    }
    fn key(&self) -> &'static str {
        "egress[].tls.ca"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let ca = parse_ca_bundle(&self.path, &contents[0]).map_err(|e| e.to_string())?;
        example_credentials::check_certs(
            &self.path,
            ca.iter().map(|c| &**c),
            "the CA that issues the peer's server certificate",
        )?;
        let series: Vec<_> = ca
            .iter()
            .map(|c| (subject_label(c), not_after_unix(c)))
            .collect();
        metrics::certificates(&self.route.metric_kind("ca"), &series);
        let count = ca.len();
        self.route.ca.store(Some(Arc::new(ca.into_boxed_slice())));
        self.route.next_generation();
        Ok(format!(
            "route {}: {count} CA certificate(s)",
            self.route.name
        ))
    }
}

struct ClientCertReload {
    route: Arc<Route>,
    cert: PathBuf,
    key: PathBuf,
}

impl Reloadable for ClientCertReload {
    fn kind(&self) -> FileKind {
        FileKind::EgressClientCert
    }
    fn key(&self) -> &'static str {
        "egress[].tls.cert"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let parsed = ServerCert::parse(&self.cert, &contents[0], &self.key, &contents[1])
            .map_err(|e| e.to_string())?;
        example_credentials::check_certs(
            &self.cert,
            [&*parsed.leaf],
            "this pod's own client certificate, issued by a CA the peer trusts",
        )?;
        let subject = subject_label(&parsed.leaf);
        metrics::certificates(
            &self.route.metric_kind("client"),
            &[(subject.clone(), not_after_unix(&parsed.leaf))],
        );
        let mut chain = vec![parsed.leaf];
        chain.extend(parsed.chain);
        self.route
            .client
            .store(Some(Arc::new(CertKey::new(chain, parsed.key))));
        self.route.next_generation();
        Ok(format!(
            "route {}: client certificate {subject}",
            self.route.name
        ))
    }
}

struct SecretReload {
    route: Arc<Route>,
    secret: Secret,
}

impl Reloadable for SecretReload {
    fn kind(&self) -> FileKind {
        FileKind::EgressCredentials
    }
    fn key(&self) -> &'static str {
        match self.secret {
            Secret::Basic { .. } => "egress[].basic.password_file",
            Secret::Bearer { .. } => "egress[].bearer.token_file",
        }
    }
    fn files(&self) -> Vec<PathBuf> {
        match &self.secret {
            Secret::Basic { password_file, .. } => vec![password_file.clone()],
            Secret::Bearer { token_file } => vec![token_file.clone()],
        }
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let path = &self.files()[0];
        let text = reload::utf8(path, &contents[0])?;
        // a trailing newline is how editors and `kubectl create secret --from-file` leave it
        let value = text.strip_suffix('\n').unwrap_or(text);
        let value = value.strip_suffix('\r').unwrap_or(value);
        if value.is_empty() {
            return Err(format!("{}: expected a non-empty secret", path.display()));
        }
        let header = match &self.secret {
            Secret::Basic { user, .. } => {
                let pair = format!("{user}:{value}");
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            Secret::Bearer { .. } => {
                if !value.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!(
                        "{}: expected a token of visible ASCII characters, without spaces",
                        path.display()
                    ));
                }
                format!("Bearer {value}")
            }
        };
        // never the content in an error: it is a secret
        let mut header = HeaderValue::from_str(&header).map_err(|_| {
            format!(
                "{}: expected characters usable in an HTTP header",
                path.display()
            )
        })?;
        header.set_sensitive(true);
        self.route.authorization.store(Some(Arc::new(header)));
        Ok(format!("route {}: credentials loaded", self.route.name))
    }
}
