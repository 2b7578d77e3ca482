//! Assembles the Pingora server from a validated config: public proxy service (TLS or plain),
//! admin service, background tasks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

use anyhow::Result;
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::prelude::HttpPeer;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::{AdminApp, Readiness, ReadinessProbe};
use crate::auth::basic::BasicAuth;
use crate::auth::method::{file_kinds, Assembly, Built};
use crate::auth::mtls::MtlsAuthenticator;
use crate::auth::ratelimit::Bucket;
use crate::auth::roles::Roles;
use crate::auth::{Authenticator, Failure, Verifier, NO_METHOD};
use crate::config::{Config, ConfigError, Effect, KeyError, Method, Resolved};
use crate::cse::LocalCse;
use crate::egress::listener::Egress;
use crate::egress::peer::PeerTarget;
use crate::egress::Route;
use crate::forward::{Fixed, Forward, Upstreams};
use crate::ingress::{Ingress, RequestLimits, ANONYMOUS};
use crate::limits::{ConnectionLimits, LimitsHook};
use crate::metrics::Outcome;
use crate::onem2m::mapping::UpstreamError;
use crate::originator::OriginatorPolicy;
use crate::poa::rewrite::PoaRewriter;
use crate::reload::{FileKind, ReadSettings, ReloadService, Reloadable, Reloader};
use crate::rules::RuleSet;
use crate::steering::Listeners;
use crate::telemetry::{self, Listener, ListenerTracing};
use crate::tls::handshake::HandshakeFailure;
use crate::tls::{self, TlsState};

/// Realm of the `WWW-Authenticate` challenges.
const REALM: &str = "oneM2M";

/// Everything loaded from the config and the files it names, ready to serve.
pub struct Prepared {
    pub config: Config,
    pub resolved: Resolved,
    pub config_path: PathBuf,
    pub tls: Option<Arc<TlsState>>,
    /// What each method in use built, in `Method::ALL` order.
    pub methods: Built,
    pub policy: Arc<ArcSwap<OriginatorPolicy>>,
    /// `auth.roles`, replaced whole by a config reload.
    pub roles: Arc<ArcSwap<Roles>>,
    /// `authorization`, replaced whole by a config reload.
    pub rules: Arc<ArcSwap<RuleSet>>,
    /// The enabled methods, in `auth.methods` order.
    pub verifiers: Vec<Arc<dyn Verifier>>,
    pub reloader: Arc<Reloader>,
    /// One line per file of the first load.
    pub loaded: Vec<String>,
    /// Egress routes, in config order.
    pub routes: Vec<Arc<Route>>,
    /// `poa` rewriting between the routes' peer and local URLs and of the CSE's own addresses
    /// (`cse.public_url`): the ingress and the routes with `rewrite_poa`.
    pub poa: Arc<PoaRewriter>,
    /// Only the CSE's own addresses: the routes without `rewrite_poa`.
    pub own_poa: Arc<PoaRewriter>,
    /// Trace export, from `tracing` and the `OTEL_*` environment.
    pub tracing: telemetry::settings::Tracing,
}

/// What a config reload applies ([`crate::config::LIVE_KEYS`]): built by every load of the
/// config file, the first one (at start, and in `check`) included, so all give the same error
/// for the same file.
struct Live {
    policy: OriginatorPolicy,
    roles: Roles,
    rules: RuleSet,
}

fn build_live(config: &Config) -> Result<Live, KeyError> {
    let cse = config.cse.as_ref().map(LocalCse::from_config).transpose()?;
    Ok(Live {
        policy: OriginatorPolicy::build(&config.originator, cse.as_ref())?,
        roles: Roles::from_config(&config.auth.roles, &config.auth.methods)?,
        rules: RuleSet::compile_for(&config.authorization, cse.as_ref())?,
    })
}

/// What only a start builds from the config file: a reload reports a change to these sections
/// as needing a restart. Resolves no name and reads no file but an HS* issuer's `secret_file`
/// (the other files come with the reloader's first load, host names are resolved at first
/// use), so that a reload can check a changed section with the same code.
struct StartOnly {
    routes: Vec<Route>,
    methods: Built,
}

fn build_start_only(config: &Config) -> Result<StartOnly, KeyError> {
    if let Some(groups) = config.tls.as_ref().and_then(|t| t.groups.as_deref()) {
        tls::handshake::check_groups(groups).map_err(|m| KeyError::new("tls.groups", m))?;
    }
    let methods = Built::from_config(config)?;
    let routes = config
        .egress
        .iter()
        .enumerate()
        .map(|(i, r)| Route::build(i, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StartOnly { routes, methods })
}

/// Register the metrics with every label value known in advance, taken from the enums that own
/// them.
pub fn init_metrics(egress_routes: &[String], rules: &[String]) {
    let methods = Method::ALL.map(Method::as_str);
    let with = |extra: &[&'static str]| methods.iter().chain(extra).copied().collect();
    crate::metrics::init(&crate::metrics::KnownLabels {
        request_methods: with(&[NO_METHOD, ANONYMOUS]),
        outcomes: Outcome::ALL.map(Outcome::label).to_vec(),
        failure_methods: with(&[NO_METHOD]),
        failures: Failure::ALL.map(Failure::label).to_vec(),
        upstream_errors: UpstreamError::ALL.map(UpstreamError::label).to_vec(),
        handshake_failures: HandshakeFailure::ALL.map(HandshakeFailure::label).to_vec(),
        files: file_kinds().into_iter().map(FileKind::label).collect(),
        file_refusals: crate::reload::REFUSAL_REASONS.to_vec(),
        egress_routes: egress_routes.to_vec(),
        rules: rules
            .iter()
            .cloned()
            .chain([crate::rules::DEFAULT_RULE.to_string()])
            .collect(),
        effects: Effect::ALL.map(Effect::label).to_vec(),
        limited_methods: Method::ALL
            .into_iter()
            .filter(|m| m.descriptor().rate_limited)
            .map(Method::as_str)
            .collect(),
        buckets: Bucket::ALL.map(Bucket::label).to_vec(),
    });
}

/// Load the config and every file it names, and check them all; nothing is started. The
/// config file is read and parsed once, by its first load through the reloader (the same code
/// that reloads it); the other reloadable files are loaded by the reloader's first load too.
pub fn prepare(config_path: &Path) -> Result<Prepared> {
    crate::random::init()?;
    let state = Arc::new(ConfigState::default());
    // default read settings for this first read: the file's own come with it
    let mut reloader = Reloader::new(vec![Box::new(ConfigReload {
        path: config_path.to_path_buf(),
        state: state.clone(),
    })]);
    // the config file's errors, as they are (not under a key: they name theirs)
    let mut loaded = reloader
        .load_all()
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let running = state
        .running
        .get()
        .ok_or_else(|| anyhow::anyhow!("{}: not loaded", config_path.display()))?;
    let (config, resolved) = (running.config.clone(), running.resolved.clone());
    if config.allow_example_credentials {
        log::warn!(
            "allow_example_credentials is ON: the published example keys, passwords and tokens (certs/dev, deploy's example Secret) are accepted. Never outside a trial."
        );
        crate::example_credentials::allow();
    }
    let names = |n: &mut dyn Iterator<Item = &String>| n.cloned().collect::<Vec<_>>();
    init_metrics(
        &names(&mut config.egress.iter().map(|r| &r.name)),
        &names(&mut config.authorization.rules.iter().map(|r| &r.name)),
    );
    let invalid = |e: KeyError| ConfigError::invalid(config_path, e);
    let sections = build_start_only(&config).map_err(invalid)?;
    if config.websocket.cse_id.is_some() {
        log::warn!("websocket.cse_id is deprecated: set cse.id (and cse.name) instead");
    }
    for (role, members) in &config.auth.roles {
        if let (None, [only]) = (&members.methods, config.auth.methods.as_slice()) {
            log::warn!(
                "auth.roles.{role} has no `methods`: given to identities proven by {0} only; write `methods: [{0}]` in it (enabling another method would make it an error)",
                only.as_str()
            );
        }
    }
    let tls = match &config.tls {
        Some(tls) => Some(Arc::new(TlsState::new(tls)?)),
        None => None,
    };
    let methods = sections.methods;
    if let Some(basic) = methods.own::<BasicAuth>(Method::Basic) {
        let _ = state.basic.set(basic);
    }
    let (policy, roles, rules) = (
        running.policy.clone(),
        running.roles.clone(),
        running.rules.clone(),
    );
    let routes: Vec<Arc<Route>> = sections.routes.into_iter().map(Arc::new).collect();
    for route in &routes {
        route.resolve_at_start();
    }
    let pairs: Vec<(String, String)> = routes
        .iter()
        .map(|r| (r.peer.base(), r.local_url.clone()))
        .collect();
    let rewriting: Vec<(&str, &str, &str)> = routes
        .iter()
        .zip(&pairs)
        .filter(|(r, _)| r.rewrite_poa)
        .map(|(r, (peer, local))| (r.name.as_str(), peer.as_str(), local.as_str()))
        .collect();
    let egress_err = |m| invalid(KeyError::new("egress", m));
    let max_body = config.limits.egress_rewrite_max_body;
    let mut poa = PoaRewriter::new(&rewriting, max_body).map_err(egress_err)?;
    let mut own_poa = PoaRewriter::new(&[], max_body).map_err(egress_err)?;
    // the CSE's own addresses: on the ingress and on every route, `rewrite_poa` or not
    if let Some(cse) = &config.cse {
        if let Some(public) = &cse.public_url {
            let advertised = cse.advertised_or(&config.upstream.url);
            let add = |r: PoaRewriter| {
                r.with_public_url(&advertised, public)
                    .map_err(|m| invalid(KeyError::new("cse.public_url", m)))
            };
            poa = add(poa)?;
            own_poa = add(own_poa)?;
        }
    }
    for (route, c) in routes.iter().zip(&config.egress) {
        if c.allow_plain_peer && !route.peer.tls {
            log::warn!(
                "egress {}: peer {} is plain http (allow_plain_peer): requests and the pod's credentials travel unencrypted",
                route.name,
                c.peer
            );
        }
    }

    let mut items: Vec<Box<dyn Reloadable>> = Vec::new();
    if let (Some(tls_config), Some(state)) = (&config.tls, &tls) {
        items.extend(tls::reload::reloadables(tls_config, state));
    }
    items.extend(methods.reloadables());
    for route in &routes {
        items.extend(route.reloadables());
    }
    reloader.set_settings(
        ReadSettings::from_config_with(&config.reload, &file_kinds()).map_err(invalid)?,
    );
    reloader.add(items);
    loaded.extend(
        reloader
            .load_all()
            .map_err(|e| invalid(KeyError::new(e.key, e.message)))?,
    );
    let reloader = Arc::new(reloader);

    let assembly = Assembly {
        config: &config,
        tls: tls.as_deref(),
    };
    let verifiers = methods
        .verifiers(&config.auth.methods, &assembly)
        .map_err(invalid)?;
    let tracing = telemetry::settings::from_env(config.tracing.as_ref()).map_err(invalid)?;
    Ok(Prepared {
        tracing,
        config,
        resolved,
        config_path: config_path.to_path_buf(),
        tls,
        methods,
        policy,
        roles,
        rules,
        verifiers,
        reloader,
        loaded,
        routes,
        poa: Arc::new(poa),
        own_poa: Arc::new(own_poa),
    })
}

/// The connections to the CSE.
fn cse_upstreams(p: &Prepared, connector: Arc<TransportConnector>) -> Upstreams {
    let mut peer = HttpPeer::new(p.resolved.upstream, false, String::new());
    peer.options.connection_timeout = Some(p.config.upstream.connect_timeout);
    peer.options.total_connection_timeout = Some(p.config.upstream.connect_timeout);
    let timeout = Some(p.config.upstream.timeout);
    Upstreams::new(Box::new(Fixed(peer)), connector, timeout, timeout)
}

/// The config file as a reloadable. Its first load (at start) parses the file the proxy runs
/// with and builds what a reload may change; each later load applies the keys of
/// [`crate::config::LIVE_KEYS`] and reports other changes as needing a restart.
struct ConfigReload {
    path: PathBuf,
    state: Arc<ConfigState>,
}

#[derive(Default)]
struct ConfigState {
    /// Set by the first load.
    running: OnceLock<Running>,
    /// `auth.basic`, once built: a reload gives it `auth.basic.originators`.
    basic: OnceLock<Arc<BasicAuth>>,
}

/// The config the proxy started with, and what a reload replaces.
struct Running {
    config: Config,
    resolved: Resolved,
    policy: Arc<ArcSwap<OriginatorPolicy>>,
    roles: Arc<ArcSwap<Roles>>,
    rules: Arc<ArcSwap<RuleSet>>,
}

impl Reloadable for ConfigReload {
    fn kind(&self) -> FileKind {
        FileKind::Config
    }
    fn key(&self) -> &'static str {
        "(config file)"
    }
    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
    fn apply(&self, contents: &[Vec<u8>]) -> Result<String, String> {
        let text = crate::reload::utf8(&self.path, &contents[0])?;
        let (new, resolved) = Config::from_text(&self.path, text).map_err(|e| e.to_string())?;
        let invalid = |e: KeyError| ConfigError::invalid(&self.path, e).to_string();
        let live = build_live(&new).map_err(invalid)?;
        let Some(running) = self.state.running.get() else {
            // the first load: what the proxy starts with
            let originators = new.auth.basic.as_ref().map_or(0, |b| b.originators.len());
            let summary = live_summary(&new, originators);
            let _ = self.state.running.set(Running {
                config: new,
                resolved,
                policy: Arc::new(ArcSwap::from_pointee(live.policy)),
                roles: Arc::new(ArcSwap::from_pointee(live.roles)),
                rules: Arc::new(ArcSwap::from_pointee(live.rules)),
            });
            return Ok(summary);
        };
        let restart = running.config.restart_only_changes(&new);
        if !restart.is_empty() {
            // not applied, but checked by the start's own builders (which resolve no name):
            // what a restart would refuse is refused now, with the same error
            build_start_only(&new).map_err(invalid)?;
            log::warn!(
                "{}: changes to {} need a restart and are NOT applied; {} are",
                self.path.display(),
                restart.join(", "),
                crate::config::LIVE_KEYS.join(", ")
            );
        }
        running.policy.store(Arc::new(live.policy));
        running.roles.store(Arc::new(live.roles));
        running.rules.store(Arc::new(live.rules));
        let mapped = match (self.state.basic.get(), &new.auth.basic) {
            (Some(basic), Some(cfg)) => {
                basic.set_originators(cfg.originators.clone().into_iter().collect());
                cfg.originators.len()
            }
            _ => 0,
        };
        Ok(live_summary(&new, mapped))
    }
}

/// What a load of the config file put in force, in the order of `LIVE_KEYS`.
fn live_summary(c: &Config, basic_originators: usize) -> String {
    let o = &c.originator;
    format!(
        "applied: cse {}, originator mode {}{}, auth.roles {} role(s), auth.basic.originators {basic_originators} user(s), authorization {} rule(s) (default {})",
        c.cse.as_ref().map_or("(none)", |c| c.id.as_str()),
        o.mode.as_str(),
        if o.by_role.is_empty() {
            String::new()
        } else {
            let roles: Vec<_> = o
                .by_role
                .iter()
                .map(|r| format!("{} {}", r.role, r.mode.as_str()))
                .collect();
            format!(" (by_role: {})", roles.join(", "))
        },
        c.auth.roles.len(),
        c.authorization.rules.len(),
        c.authorization.default.label(),
    )
}

/// Run until a shutdown signal; returns when the server has stopped.
/// The public listener: TLS behind the connection limits' pre-TLS hook, or plain TCP.
fn public_listener<A>(
    service: &mut Service<A>,
    tls_listener: Option<pingora::listeners::ListenerConfig>,
    connections: Arc<ConnectionLimits>,
    listen: &str,
    proxy_trusted: &[crate::config::Cidr],
) {
    match tls_listener {
        Some(listener) => {
            // validation: `proxy_protocol` needs `tls`
            let proxy_protocol = (!proxy_trusted.is_empty())
                .then(|| crate::proxy_protocol::ProxyProtocol::new(proxy_trusted.to_vec()));
            service
                .endpoints()
                .set_pre_tls_callback(Arc::new(LimitsHook {
                    limits: connections,
                    proxy_protocol,
                }));
            service.add_listener(listener);
        }
        None => service.add_tcp(listen),
    }
}

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
        // One single-threaded runtime per thread instead of tokio's work-stealing pool: a
        // connection stays on the thread that accepted it. Measured with `threads: 2` at 32
        // keep-alive mTLS connections: -41 % CPU per request on this request path (-27 % on the
        // former pipeline; BENCHMARKS.md, 2026-12-01). Blocking work goes to spawn_blocking.
        work_stealing: false,
        // Every TLS connection the proxy makes (egress peers, JWKS, introspection) brings its
        // own CA; without a file here Pingora's connectors would load the system CA bundle
        // (~0.7 MiB and ~70 ms of start-up, BENCHMARKS.md). Any valid PEM will do: the server
        // certificate was just loaded from this file.
        ca_file: p
            .config
            .tls
            .as_ref()
            .map(|t| t.cert.to_string_lossy().into_owned()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    crate::memory::tune_allocator();
    let (budget, source) = p.config.limits.buffer_budget();
    crate::buffers::BUDGET.set_limit(budget);
    crate::metrics::buffer_budget(budget);
    log::info!("buffer budget {budget} bytes ({source})");

    let connections = Arc::new(ConnectionLimits::new(
        p.config.limits.max_connections,
        p.config.limits.header_timeout,
    ));
    let ingress = Arc::new(Ingress {
        auth: Authenticator::new(&p.config.auth, p.verifiers.clone(), p.roles.clone()),
        challenges: crate::onem2m::mapping::challenges_for(
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
        websocket: crate::config::WebSocketConfig {
            // `cse.id` replaces the deprecated `websocket.cse_id` (validation: they agree)
            cse_id: p
                .config
                .cse
                .as_ref()
                .map(|c| c.id.clone())
                .or_else(|| p.config.websocket.cse_id.clone()),
            ..p.config.websocket.clone()
        },
        anonymous: p.config.auth.anonymous,
        forward_authorization: p.config.auth.forward_authorization,
        tls: p.config.tls.is_some(),
        policy: p.policy.clone(),
        poa: p.poa.clone(),
        peers: p
            .routes
            .iter()
            .map(|r| (r.name.clone(), r.peer_roles.clone()))
            .collect(),
        listeners: Arc::new(Listeners::new(p.routes.iter().map(|r| r.listen))),
        rules: p.rules.clone(),
    });
    let listen = p.resolved.listen.to_string();
    let tls_listener = match (&p.config.tls, &p.tls) {
        (Some(tls_config), Some(state)) => {
            let settings = tls::handshake::listener_settings(
                tls_config,
                state.clone(),
                p.methods.own::<MtlsAuthenticator>(Method::Mtls),
            )?;
            // No per-connection L4 read buffer (Pingora's default keeps 64 KiB per idle
            // connection); OpenSSL's read-ahead does the batching instead. Measured 117 -> 54 KiB
            // per idle keep-alive connection at the same CPU per request (BENCHMARKS.md).
            Some(
                pingora::listeners::ListenerConfig::tcp(listen.clone())
                    .tls(settings)
                    .l4_buffer(pingora::listeners::L4BufferSettings::new(0, 1460)),
            )
        }
        _ => None,
    };
    // one connector (its TLS context) for the CSE and every egress peer; each connection brings
    // its own CA and client certificate
    let connector = Arc::new(TransportConnector::new(Some(
        ConnectorOptions::from_server_conf(&server.configuration),
    )));
    let tracer = match &p.tracing {
        telemetry::settings::Tracing::On(settings) => {
            crate::metrics::tracing_init();
            let tracer = telemetry::start(settings)?;
            server.add_service(background_service(
                "trace export flush",
                telemetry::FlushAtShutdown {
                    grace_period: p.config.shutdown.grace_period,
                },
            ));
            log::info!(
                "tracing: exporting spans to {} ({})",
                settings.endpoint,
                settings.endpoint_from
            );
            Some(tracer)
        }
        telemetry::settings::Tracing::Off(_) => None,
    };
    let listener_tracing = |listener: Listener, upstream: String| {
        tracer.as_ref().map(|tracer| ListenerTracing {
            tracer: tracer.clone(),
            listener,
            upstream: upstream.into(),
        })
    };
    let app = Forward::new(
        ingress,
        cse_upstreams(&p, connector.clone()),
        listener_tracing(Listener::Ingress, p.resolved.upstream.to_string()),
    );
    let mut service = Service::new("proxy".to_string(), app);
    public_listener(
        &mut service,
        tls_listener,
        connections,
        &listen,
        &p.resolved.proxy_trusted,
    );
    server.add_service(service);

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
            listeners: std::iter::once(p.resolved.listen)
                .chain(p.routes.iter().map(|r| r.listen))
                .collect(),
        },
    );

    let reload = background_service(
        "reload",
        ReloadService {
            reloader: p.reloader.clone(),
            poll_interval: p.config.reload.poll_interval,
            watch: p.config.reload.watch,
        },
    );

    for route in &p.routes {
        let side = Egress {
            route: route.clone(),
            poa: match route.rewrite_poa {
                true => p.poa.clone(),
                false => p.own_poa.clone(),
            },
            access_log: p.config.log.access,
            max_body: p.config.limits.max_body,
            idle_timeout_secs: p.config.limits.idle_timeout.as_secs().max(1),
            websocket_idle_timeout: p.config.websocket.idle_timeout,
            websocket_write_timeout: p.config.websocket.write_timeout,
        };
        let timeout = Some(route.timeout);
        let upstreams = Upstreams::new(
            Box::new(PeerTarget(route.clone())),
            connector.clone(),
            timeout,
            timeout,
        );
        let mut egress = Service::new(
            format!("egress {}", route.name),
            Forward::new(
                Arc::new(side),
                upstreams,
                listener_tracing(
                    Listener::Egress(route.name.as_str().into()),
                    route.peer.authority(),
                ),
            ),
        );
        egress.add_tcp(&route.listen.to_string());
        log::info!(
            "egress {}: listening on {} (plain HTTP, loopback) -> {}",
            route.name,
            route.listen,
            route.peer.base()
        );
        server.add_service(egress);
    }
    server.add_service(reload);
    server.add_service(background_service(
        "memory trim",
        crate::memory::TrimService,
    ));
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
