//! Assembles the Pingora server from a validated config: public proxy service (TLS or plain),
//! admin service, background tasks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use anyhow::{Context, Result};
use pingora::prelude::HttpPeer;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::{AdminApp, Readiness, ReadinessProbe};
use crate::auth::basic::{BasicAuth, HtpasswdReload};
use crate::auth::bearer::{BearerAuth, TokensReload};
use crate::auth::introspection::Introspection;
use crate::auth::jwks::{JwksFile, JwksReload};
use crate::auth::jwt::JwtAuth;
use crate::auth::mtls::MtlsAuthenticator;
use crate::auth::Authenticator;
use crate::auth::Verifiers;
use crate::config::{Config, Method, Resolved};
use crate::limits::{ConnectionLimits, LimitsHook};
use crate::originator::OriginatorPolicy;
use crate::proxy::{AuthProxy, RequestLimits};
use crate::reload::{ReloadService, Reloadable, Reloader};
use crate::tls::{self, ClientCaReload, CrlReload, ServerCertReload, TlsState};

/// Realm of the `WWW-Authenticate` challenges.
const REALM: &str = "oneM2M";

/// Everything loaded from the config and the files it names, ready to serve.
pub struct Prepared {
    pub config: Config,
    pub resolved: Resolved,
    pub tls: Option<Arc<TlsState>>,
    pub mtls: Option<Arc<MtlsAuthenticator>>,
    pub basic: Option<Arc<BasicAuth>>,
    pub bearer: Option<Arc<BearerAuth>>,
    pub jwt: Option<Arc<JwtAuth>>,
    pub jwks_files: Vec<Arc<JwksFile>>,
    pub introspection: Option<Arc<Introspection>>,
    pub policy: Arc<ArcSwap<OriginatorPolicy>>,
    pub config_path: PathBuf,
}

/// Load and check every file the config names; nothing is started.
pub fn prepare(config_path: &Path, config: Config, resolved: Resolved) -> Result<Prepared> {
    let tls = match &config.tls {
        Some(tls) => Some(Arc::new(TlsState::load(tls)?)),
        None => None,
    };
    let mtls = if config.auth.methods.contains(&Method::Mtls) {
        let auth = MtlsAuthenticator::from_config(&config.auth.mtls)
            .map_err(anyhow::Error::msg)
            .context("auth.mtls")?;
        Some(Arc::new(auth))
    } else {
        None
    };
    // Credential files are loaded when configured, even for a method not (yet) enabled, so that
    // `check` validates every file the config names.
    let basic = match &config.auth.basic {
        Some(b) => Some(Arc::new(BasicAuth::load(b)?)),
        None => None,
    };
    let bearer = match &config.auth.bearer {
        Some(b) => Some(Arc::new(BearerAuth::load(b)?)),
        None => None,
    };
    let (jwt, jwks_files) = match &config.auth.jwt {
        Some(j) => {
            let (auth, files) = JwtAuth::load(j)
                .map_err(anyhow::Error::msg)
                .context("auth.jwt")?;
            if !files.is_empty() {
                crate::metrics::loaded("jwks");
            }
            (Some(Arc::new(auth)), files)
        }
        None => (None, Vec::new()),
    };
    let introspection = match &config.auth.introspection {
        Some(i) => Some(Arc::new(
            Introspection::load(i)
                .map_err(anyhow::Error::msg)
                .context("auth.introspection")?,
        )),
        None => None,
    };
    crate::metrics::loaded("config");
    let policy = OriginatorPolicy::from_config(&config.originator)
        .map_err(anyhow::Error::msg)
        .context("originator")?;
    Ok(Prepared {
        config,
        resolved,
        tls,
        mtls,
        basic,
        bearer,
        jwt,
        jwks_files,
        introspection,
        policy: Arc::new(ArcSwap::from_pointee(policy)),
        config_path: config_path.to_path_buf(),
    })
}

fn upstream_peer(p: &Prepared) -> HttpPeer {
    let mut peer = HttpPeer::new(p.resolved.upstream, false, String::new());
    peer.options.connection_timeout = Some(p.config.upstream.connect_timeout);
    peer.options.total_connection_timeout = Some(p.config.upstream.connect_timeout);
    peer.options.read_timeout = Some(p.config.upstream.timeout);
    peer.options.write_timeout = Some(p.config.upstream.timeout);
    peer
}

/// Every file that can be reloaded at run time, each on its own.
fn reloadables(p: &Prepared) -> Vec<Box<dyn Reloadable>> {
    let mut items: Vec<Box<dyn Reloadable>> = Vec::new();
    if let (Some(config), Some(state)) = (&p.config.tls, &p.tls) {
        items.push(Box::new(ServerCertReload {
            state: state.clone(),
            cert: config.cert.clone(),
            key: config.key.clone(),
        }));
        if state.trust.is_some() {
            if let Some(ca) = &config.client_ca {
                items.push(Box::new(ClientCaReload {
                    state: state.clone(),
                    path: ca.clone(),
                }));
            }
            if let Some(crl) = &config.crl {
                items.push(Box::new(CrlReload {
                    state: state.clone(),
                    path: crl.clone(),
                }));
            }
        }
    }
    items.push(Box::new(ConfigReload {
        path: p.config_path.clone(),
        running: p.config.clone(),
        policy: p.policy.clone(),
        basic: p.basic.clone(),
    }));
    if let Some(basic) = &p.basic {
        items.push(Box::new(HtpasswdReload(basic.clone())));
    }
    for file in &p.jwks_files {
        items.push(Box::new(JwksReload(file.clone())));
    }
    if let Some(bearer) = &p.bearer {
        items.push(Box::new(TokensReload(bearer.clone())));
    }
    items
}

/// Reload of the config file itself: the originator mappings (`originator.*`,
/// `auth.basic.originators`) are applied; other changes are reported as needing a restart.
struct ConfigReload {
    path: PathBuf,
    running: Config,
    policy: Arc<ArcSwap<OriginatorPolicy>>,
    basic: Option<Arc<BasicAuth>>,
}

impl Reloadable for ConfigReload {
    fn kind(&self) -> &'static str {
        "config"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let text = crate::reload::utf8(&self.path, &contents[0])?;
        let (new, _) = Config::from_text(&self.path, text).map_err(|e| e.to_string())?;
        let policy = OriginatorPolicy::from_config(&new.originator)
            .map_err(|e| format!("{}: originator: {e}", self.path.display()))?;
        let restart = self.running.restart_only_changes(&new);
        if !restart.is_empty() {
            log::warn!(
                "{}: changes to {} need a restart and are NOT applied; the originator mappings are",
                self.path.display(),
                restart.join(", ")
            );
        }
        self.policy.store(Arc::new(policy));
        let mapped = match (&self.basic, &new.auth.basic) {
            (Some(basic), Some(cfg)) => {
                basic.set_originators(cfg.originators.clone().into_iter().collect());
                cfg.originators.len()
            }
            _ => 0,
        };
        Ok(format!(
            "originator mode {:?}, {} identities with extra patterns, {mapped} Basic user originators",
            new.originator.mode,
            new.originator.allow.len()
        ))
    }
}

/// Run until a shutdown signal; returns when the server has stopped.
pub fn run(p: Prepared) -> Result<()> {
    let threads = p.config.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(p.config.shutdown.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let reloader = Arc::new(Reloader::new(reloadables(&p)));
    let connections = Arc::new(ConnectionLimits::new(
        p.config.limits.max_connections,
        p.config.limits.header_timeout,
    ));
    let proxy = AuthProxy {
        auth: Authenticator::new(
            &p.config.auth,
            p.tls.clone(),
            Verifiers {
                basic: p.basic.clone(),
                bearer: p.bearer.clone(),
                jwt: p.jwt.clone(),
                introspection: p.introspection.clone(),
            },
        ),
        challenges: AuthProxy::challenges_for(
            &p.config.auth.methods,
            REALM,
            p.config
                .auth
                .basic
                .as_ref()
                .map_or(REALM, |b| b.realm.as_str()),
        ),
        access_log: p.config.log.access,
        limits: RequestLimits {
            max_header_bytes: p.config.limits.max_header_bytes,
            max_body: p.config.limits.max_body,
            idle_timeout_secs: p.config.limits.idle_timeout.as_secs().max(1),
        },
        connections: connections.clone(),
        websocket: p.config.websocket.clone(),
        anonymous: p.config.auth.anonymous,
        forward_authorization: p.config.auth.forward_authorization,
        upstream: upstream_peer(&p),
        tls: p.config.tls.is_some(),
        policy: p.policy.clone(),
    };
    let mut proxy_service = pingora::proxy::http_proxy_service(&server.configuration, proxy);
    let listen = p.resolved.listen.to_string();
    match (&p.config.tls, &p.tls) {
        (Some(tls_config), Some(state)) => {
            let settings = tls::listener_settings(tls_config, state.clone(), p.mtls.clone())?;
            proxy_service
                .endpoints()
                .set_pre_tls_callback(Arc::new(LimitsHook(connections)));
            // No per-connection L4 read buffer (Pingora's default keeps 64 KiB per idle
            // connection); OpenSSL's read-ahead does the batching instead. Measured 117 -> 54 KiB
            // per idle keep-alive connection at the same CPU per request (BENCHMARKS.md).
            proxy_service.add_listener(
                pingora::listeners::ListenerConfig::tcp(listen.clone())
                    .tls(settings)
                    .l4_buffer(pingora::listeners::L4BufferSettings::new(0, 1460)),
            );
        }
        _ => proxy_service.add_tcp(&listen),
    }

    let readiness = Readiness::default();
    let mut admin = Service::new(
        "admin".to_string(),
        AdminApp {
            readiness: readiness.clone(),
        },
    );
    admin.add_tcp(&p.resolved.admin.to_string());
    let probe = background_service(
        "readiness",
        ReadinessProbe {
            readiness,
            listen: p.resolved.listen,
        },
    );

    let reload = background_service(
        "reload",
        ReloadService {
            reloader,
            poll_interval: p.config.reload.poll_interval,
            watch: p.config.reload.watch,
        },
    );

    server.add_service(proxy_service);
    server.add_service(reload);
    server.add_service(admin);
    server.add_service(probe);
    log::info!(
        "m2m-auth-proxy listening on {} ({}), upstream {}, admin {}",
        p.resolved.listen,
        if p.config.tls.is_some() {
            "TLS"
        } else {
            "plain HTTP"
        },
        p.config.upstream.url,
        p.resolved.admin
    );
    server.run(RunArgs::default());
    Ok(())
}
