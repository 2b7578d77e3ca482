//! Prometheus metrics, names prefixed `m2m_auth_proxy_`. Every label value comes from a small
//! fixed set (or the operator's own config): never a user name, originator, path or token.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{
    register_gauge_vec, register_histogram, register_histogram_vec, register_int_counter_vec,
    register_int_gauge, register_int_gauge_vec, Encoder, GaugeVec, Histogram, HistogramVec,
    IntCounterVec, IntGauge, IntGaugeVec, TextEncoder,
};

macro_rules! metric {
    ($name:ident: $ty:ty = $init:expr) => {
        static $name: LazyLock<$ty> = LazyLock::new(|| {
            $init.expect(concat!("metric ", stringify!($name), " registers once"))
        });
    };
}

metric!(REQUESTS: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_requests_total",
    "Requests by authentication method and outcome (forwarded, refused, error).",
    &["method", "outcome"]
));
metric!(AUTH_FAILURES: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_auth_failures_total",
    "Refused authentications by method and reason.",
    &["method", "reason"]
));
metric!(REQUEST_DURATION: Histogram = register_histogram!(
    "m2m_auth_proxy_request_duration_seconds",
    "Whole request duration as seen by the proxy.",
    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
));
metric!(UPSTREAM_DURATION: Histogram = register_histogram!(
    "m2m_auth_proxy_upstream_duration_seconds",
    "Time from sending the request upstream to the arrival of the upstream response head.",
    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
));
metric!(UPSTREAM_ERRORS: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_upstream_errors_total",
    "Upstream failures by kind (refused, timeout, invalid_response, closed, other).",
    &["kind"]
));
metric!(OPEN_CONNECTIONS: IntGauge = register_int_gauge!(
    "m2m_auth_proxy_open_connections",
    "Client TLS connections currently open (after a completed handshake)."
));
metric!(CONNECTIONS_REFUSED: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_connections_closed_by_limit_total",
    "Connections refused or closed by a limit (max_connections, header_timeout).",
    &["limit"]
));
metric!(ACCEPT_ERRORS: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_accept_errors_total",
    "accept() failures on a listener, by reason (emfile: the process's descriptor limit; enfile: the system's).",
    &["reason"]
));
metric!(PROXY_PROTOCOL: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_proxy_protocol_headers_total",
    "PROXY protocol headers on the public listener, by outcome (accepted, local: the balancer's own address kept; refused: untrusted, malformed, timeout).",
    &["outcome"]
));
metric!(HANDSHAKES: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_tls_handshakes_total",
    "Completed TLS handshakes by whether a client certificate was presented.",
    &["client_cert"]
));
metric!(HANDSHAKE_FAILURES: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_tls_handshake_failures_total",
    "Client certificates refused during the TLS handshake, by reason.",
    &["reason"]
));
metric!(RELOADS: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_reloads_total",
    "Reload attempts by file kind and result (success, failure).",
    &["file", "result"]
));
metric!(RELOAD_REFUSED_FILES: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_reload_files_refused_total",
    "Reloads that kept the loaded version because a file could not be read, by file kind and reason (not_regular, too_large, timeout, unreadable); counted once while the same failure lasts.",
    &["file", "reason"]
));
metric!(LAST_RELOAD: IntGaugeVec = register_int_gauge_vec!(
    "m2m_auth_proxy_last_reload_success_timestamp_seconds",
    "Unix time of the last successful load per file kind.",
    &["file"]
));
metric!(CERT_NOT_AFTER: GaugeVec = register_gauge_vec!(
    "m2m_auth_proxy_certificate_not_after_timestamp_seconds",
    "notAfter of each loaded certificate as a Unix timestamp (server, client CAs).",
    &["kind", "subject"]
));
metric!(WS_MESSAGES: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_websocket_messages_total",
    "oneM2M WebSocket messages by direction (to_cse, to_client) and outcome (forwarded, rewritten, refused, invalid).",
    &["direction", "outcome"]
));
metric!(WS_REFUSALS: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_websocket_originator_refusals_total",
    "WebSocket primitives whose `fr` the originator policy refused, by reason (not_allowed, response_originator).",
    &["reason"]
));
metric!(WS_CLOSES: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_websocket_closed_by_proxy_total",
    "WebSocket connections the proxy closed, by close code (1001 shutting down, 1002 protocol, 1003 wrong type, 1007 text not UTF-8, 1008 policy, 1009 too big, 1013 buffer budget exhausted).",
    &["code"]
));
metric!(INTROSPECTIONS: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_introspection_calls_total",
    "Calls to the token introspection endpoint by result (active, inactive, timeout, error); cached answers make no call.",
    &["result"]
));
metric!(RATE_LIMITED: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_rate_limited_total",
    "Guesses refused (429) before verification, by method and the bucket that was empty (address, user, global).",
    &["method", "bucket"]
));
metric!(VERIFICATIONS: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_verifications_total",
    "Expensive verifications started, by queue (password: hash checks on a cache miss; introspection: endpoint calls).",
    &["queue"]
));
metric!(VERIFICATIONS_RUNNING: IntGaugeVec = register_int_gauge_vec!(
    "m2m_auth_proxy_verifications_in_progress",
    "Expensive verifications running now, by queue.",
    &["queue"]
));
metric!(VERIFICATIONS_REFUSED: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_verifications_refused_total",
    "Requests refused (503) without verifying because every slot and the queue were taken, by queue.",
    &["queue"]
));
metric!(BUFFERED: IntGauge = register_int_gauge!(
    "m2m_auth_proxy_buffered_bytes",
    "Bytes held in the proxy's buffers counted against limits.buffer_budget (WebSocket messages, bodies read whole for poa rewriting)."
));
metric!(BUFFER_BUDGET: IntGauge = register_int_gauge!(
    "m2m_auth_proxy_buffer_budget_bytes",
    "limits.buffer_budget in force."
));
metric!(BUFFER_REFUSALS: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_buffer_budget_refusals_total",
    "Messages and bodies refused because limits.buffer_budget was exhausted, by what (websocket: close 1013; request_body: 503; response_body: response cut).",
    &["what"]
));
metric!(JWKS_SKIPPED: IntGaugeVec = register_int_gauge_vec!(
    "m2m_auth_proxy_jwks_keys_skipped",
    "Keys of the JWKS in force that are unusable and left out (unknown kty/crv, use/key_ops/alg not for signatures, RSA under 2048 bits, ...), by issuer.",
    &["issuer"]
));
metric!(EGRESS_REQUESTS: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_egress_requests_total",
    "Requests of the local CSE on an egress route, by route and outcome (forwarded, refused, error).",
    &["route", "outcome"]
));
metric!(EGRESS_DURATION: HistogramVec = register_histogram_vec!(
    "m2m_auth_proxy_egress_upstream_duration_seconds",
    "Egress: time from sending the request to the peer to the arrival of its response head, by route.",
    &["route"],
    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
));
metric!(POA_REWRITES: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_egress_poa_rewrites_total",
    "poa URLs rewritten in oneM2M bodies, by mapping (kind: route, with the route whose URL matched; public_url: the local CSE's advertised addresses and cse.public_url, route empty) and direction (toward_local, away_from_local).",
    &["route", "kind", "direction"]
));
metric!(POA_TOO_LARGE: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_poa_bodies_not_inspected_total",
    "oneM2M bodies larger than limits.egress_rewrite_max_body, passed on without poa rewriting, by direction.",
    &["direction"]
));
metric!(STEERING: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_egress_steering_refusals_total",
    "Requests refused because they name a URL of an egress listener, by where (header, query, body, websocket).",
    &["place"]
));
metric!(DECISIONS: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_authorization_decisions_total",
    "Decisions of the authorization rules, by the deciding rule (`default` when none matched) and effect (allow, deny).",
    &["rule", "effect"]
));
metric!(TRACING_DROPPED: IntCounterVec = register_int_counter_vec!(
    "m2m_auth_proxy_tracing_spans_dropped_total",
    "Finished spans not exported, by reason (queue_full: the export queue was full; export_failed: the collector did not take the batch; shutdown).",
    &["reason"]
));
metric!(BUILD_INFO: IntGaugeVec = register_int_gauge_vec!(
    "m2m_auth_proxy_build_info",
    "Build information; always 1.",
    &["version"]
));

/// The `outcome` label of the request metrics (ingress and egress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    Refused,
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Forwarded, Outcome::Refused, Outcome::Error];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

/// The label values known in advance, each set taken from the enum that owns it (the caller,
/// `server::init_metrics`, knows the enums; this module stays a leaf).
pub struct KnownLabels {
    /// `method` of the request metric: the methods, "none" and "anonymous".
    pub request_methods: Vec<&'static str>,
    pub outcomes: Vec<&'static str>,
    /// `method` of the failure metric: the methods and "none".
    pub failure_methods: Vec<&'static str>,
    pub failures: Vec<&'static str>,
    pub upstream_errors: Vec<&'static str>,
    pub handshake_failures: Vec<&'static str>,
    pub files: Vec<&'static str>,
    /// `reason` of the refused-files metric.
    pub file_refusals: Vec<&'static str>,
    /// Names of the egress routes (bounded by the config).
    pub egress_routes: Vec<String>,
    /// Names of the authorization rules (bounded by the config), with `default`.
    pub rules: Vec<String>,
    pub effects: Vec<&'static str>,
    /// `method` of the rate-limit metric: the methods whose guesses are limited.
    pub limited_methods: Vec<&'static str>,
    /// `bucket` of the rate-limit metric.
    pub buckets: Vec<&'static str>,
}

/// The `what` label of the buffer-budget refusals.
pub const BUFFER_HOLDERS: [&str; 3] = ["websocket", "request_body", "response_body"];

/// The `queue` label of the verification metrics.
pub const VERIFY_QUEUES: [&str; 2] = ["password", "introspection"];

/// Register everything at start so that every metric is exported before its first event;
/// known label values start at 0, so that a first event is visible to increase()/rate().
pub fn init(known: &KnownLabels) {
    BUILD_INFO
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    LazyLock::force(&REQUESTS);
    LazyLock::force(&AUTH_FAILURES);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&UPSTREAM_DURATION);
    LazyLock::force(&UPSTREAM_ERRORS);
    LazyLock::force(&OPEN_CONNECTIONS);
    LazyLock::force(&HANDSHAKES);
    LazyLock::force(&CONNECTIONS_REFUSED);
    LazyLock::force(&HANDSHAKE_FAILURES);
    LazyLock::force(&RELOADS);
    LazyLock::force(&LAST_RELOAD);
    LazyLock::force(&CERT_NOT_AFTER);
    for method in &known.request_methods {
        for outcome in &known.outcomes {
            REQUESTS.with_label_values(&[method, outcome]);
        }
    }
    for method in &known.failure_methods {
        for reason in &known.failures {
            AUTH_FAILURES.with_label_values(&[method, reason]);
        }
    }
    for kind in &known.upstream_errors {
        UPSTREAM_ERRORS.with_label_values(&[kind]);
    }
    for reason in &known.handshake_failures {
        HANDSHAKE_FAILURES.with_label_values(&[reason]);
    }
    for file in &known.files {
        for result in ["success", "failure"] {
            RELOADS.with_label_values(&[file, result]);
        }
        for reason in &known.file_refusals {
            RELOAD_REFUSED_FILES.with_label_values(&[file, reason]);
        }
    }
    for route in &known.egress_routes {
        for outcome in &known.outcomes {
            EGRESS_REQUESTS.with_label_values(&[route.as_str(), outcome]);
        }
        EGRESS_DURATION.with_label_values(&[route.as_str()]);
        for direction in ["toward_local", "away_from_local"] {
            POA_REWRITES.with_label_values(&[route.as_str(), "route", direction]);
        }
    }
    for direction in ["toward_local", "away_from_local"] {
        // the CSE's own addresses (cse.public_url), no route
        POA_REWRITES.with_label_values(&["", "public_url", direction]);
        POA_TOO_LARGE.with_label_values(&[direction]);
    }
    if !known.egress_routes.is_empty() {
        for place in STEERING_PLACES {
            STEERING.with_label_values(&[place]);
        }
    }
    for rule in &known.rules {
        for effect in &known.effects {
            DECISIONS.with_label_values(&[rule.as_str(), effect]);
        }
    }
    for outcome in ["forwarded", "rewritten", "refused", "invalid"] {
        WS_MESSAGES.with_label_values(&["to_cse", outcome]);
    }
    WS_MESSAGES.with_label_values(&["to_client", "forwarded"]);
    for reason in ["not_allowed", "response_originator"] {
        WS_REFUSALS.with_label_values(&[reason]);
    }
    for code in WS_CLOSE_CODES {
        WS_CLOSES.with_label_values(&[code]);
    }
    for result in ["active", "inactive", "timeout", "error"] {
        INTROSPECTIONS.with_label_values(&[result]);
    }
    for method in &known.limited_methods {
        for bucket in &known.buckets {
            RATE_LIMITED.with_label_values(&[method, bucket]);
        }
    }
    LazyLock::force(&BUFFERED);
    for what in BUFFER_HOLDERS {
        BUFFER_REFUSALS.with_label_values(&[what]);
    }
    for queue in VERIFY_QUEUES {
        VERIFICATIONS.with_label_values(&[queue]);
        VERIFICATIONS_RUNNING.with_label_values(&[queue]);
        VERIFICATIONS_REFUSED.with_label_values(&[queue]);
    }
    for limit in ["max_connections", "header_timeout"] {
        CONNECTIONS_REFUSED.with_label_values(&[limit]);
    }
    for client_cert in ["yes", "no"] {
        HANDSHAKES.with_label_values(&[client_cert]);
    }
    for reason in ACCEPT_ERROR_REASONS {
        ACCEPT_ERRORS.with_label_values(&[reason]);
    }
    for outcome in PROXY_PROTOCOL_OUTCOMES {
        PROXY_PROTOCOL.with_label_values(&[outcome]);
    }
}

pub const ACCEPT_ERROR_REASONS: [&str; 5] = ["emfile", "enfile", "enobufs", "enomem", "other"];
pub const PROXY_PROTOCOL_OUTCOMES: [&str; 5] =
    ["accepted", "local", "untrusted", "malformed", "timeout"];

pub fn accept_error(reason: &str) {
    ACCEPT_ERRORS.with_label_values(&[reason]).inc();
}

pub fn proxy_protocol(outcome: &str) {
    PROXY_PROTOCOL.with_label_values(&[outcome]).inc();
}

const WS_CLOSE_CODES: [&str; 7] = ["1001", "1002", "1003", "1007", "1008", "1009", "1013"];

pub fn authorization_decision(rule: &str, effect: &str) {
    DECISIONS.with_label_values(&[rule, effect]).inc();
}

/// Spans that will not reach the collector.
pub fn tracing_spans_dropped(reason: &str, n: u64) {
    TRACING_DROPPED.with_label_values(&[reason]).inc_by(n);
}

/// With tracing on: its drop counter, at 0 from the start.
pub fn tracing_init() {
    for reason in ["queue_full", "export_failed", "shutdown"] {
        TRACING_DROPPED.with_label_values(&[reason]);
    }
}

pub fn egress_request(route: &str, outcome: &str) {
    EGRESS_REQUESTS.with_label_values(&[route, outcome]).inc();
}

pub fn egress_upstream_duration(route: &str, seconds: f64) {
    EGRESS_DURATION.with_label_values(&[route]).observe(seconds);
}

pub fn egress_poa_rewrites(route: &str, kind: &str, direction: &str, count: u64) {
    POA_REWRITES
        .with_label_values(&[route, kind, direction])
        .inc_by(count);
}

/// Where a request named a URL of an egress listener.
pub const STEERING_PLACES: [&str; 4] = ["header", "query", "body", "websocket"];

pub fn steering_refused(place: &'static str) {
    STEERING.with_label_values(&[place]).inc();
}

pub fn poa_body_too_large(direction: &str) {
    POA_TOO_LARGE.with_label_values(&[direction]).inc();
}

pub fn buffered_bytes(delta: i64) {
    BUFFERED.add(delta);
}

pub fn buffer_budget(bytes: usize) {
    BUFFER_BUDGET.set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

pub fn buffer_budget_refused(what: &str) {
    BUFFER_REFUSALS.with_label_values(&[what]).inc();
}

pub fn rate_limited(method: &str, bucket: &str) {
    RATE_LIMITED.with_label_values(&[method, bucket]).inc();
}

pub fn verification_started(queue: &str) {
    VERIFICATIONS.with_label_values(&[queue]).inc();
    VERIFICATIONS_RUNNING.with_label_values(&[queue]).inc();
}

pub fn verification_finished(queue: &str) {
    VERIFICATIONS_RUNNING.with_label_values(&[queue]).dec();
}

pub fn verification_refused(queue: &str) {
    VERIFICATIONS_REFUSED.with_label_values(&[queue]).inc();
}

pub fn introspection(result: &str) {
    INTROSPECTIONS.with_label_values(&[result]).inc();
}

pub fn websocket_message(direction: &str, outcome: &str) {
    WS_MESSAGES.with_label_values(&[direction, outcome]).inc();
}

pub fn websocket_originator_refusal(reason: &str) {
    WS_REFUSALS.with_label_values(&[reason]).inc();
}

pub fn websocket_close(code: u16) {
    let code = code.to_string();
    // only the codes the gate sends; anything else would be a bug, counted as "other"
    let label = WS_CLOSE_CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("other");
    WS_CLOSES.with_label_values(&[label]).inc();
}

pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        log::error!("cannot encode metrics: {e}");
    }
    out
}

pub fn request(method: &str, outcome: &str, seconds: f64) {
    REQUESTS.with_label_values(&[method, outcome]).inc();
    REQUEST_DURATION.observe(seconds);
}

pub fn auth_failure(method: &str, reason: &str) {
    AUTH_FAILURES.with_label_values(&[method, reason]).inc();
}

pub fn upstream_duration(seconds: f64) {
    UPSTREAM_DURATION.observe(seconds);
}

pub fn upstream_error(kind: &str) {
    UPSTREAM_ERRORS.with_label_values(&[kind]).inc();
}

pub fn handshake(with_client_cert: bool) {
    HANDSHAKES
        .with_label_values(&[if with_client_cert { "yes" } else { "no" }])
        .inc();
}

pub fn handshake_failure(reason: &str) {
    HANDSHAKE_FAILURES.with_label_values(&[reason]).inc();
}

pub fn reload(file: &str, success: bool) {
    RELOADS
        .with_label_values(&[file, if success { "success" } else { "failure" }])
        .inc();
    if success {
        loaded(file);
    }
}

pub fn reload_file_refused(file: &str, reason: &str) {
    RELOAD_REFUSED_FILES
        .with_label_values(&[file, reason])
        .inc();
}

/// How many keys of `issuer`'s JWKS in force were left out as unusable.
pub fn jwks_keys_skipped(issuer: &str, count: usize) {
    JWKS_SKIPPED
        .with_label_values(&[issuer])
        .set(i64::try_from(count).unwrap_or(i64::MAX));
}

/// A file kind was loaded successfully (at start or by a reload).
pub fn loaded(file: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    LAST_RELOAD.with_label_values(&[file]).set(now);
}

/// Replace the certificate expiry series of one kind.
pub fn certificates(kind: &str, certs: &[(String, f64)]) {
    // Drop series of certificates no longer loaded (e.g. a CA removed by a reload).
    for family in prometheus::gather() {
        if family.name() != "m2m_auth_proxy_certificate_not_after_timestamp_seconds" {
            continue;
        }
        for m in family.get_metric() {
            let labels = m.get_label();
            let is_kind = labels
                .iter()
                .any(|l| l.name() == "kind" && l.value() == kind);
            if let (true, Some(subject)) = (is_kind, labels.iter().find(|l| l.name() == "subject"))
            {
                let _ = CERT_NOT_AFTER.remove_label_values(&[kind, subject.value()]);
            }
        }
    }
    for (subject, not_after) in certs {
        CERT_NOT_AFTER
            .with_label_values(&[kind, subject.as_str()])
            .set(*not_after);
    }
}

pub fn connection_refused(limit: &str) {
    CONNECTIONS_REFUSED.with_label_values(&[limit]).inc();
}

pub fn open_connections() -> usize {
    usize::try_from(OPEN_CONNECTIONS.get()).unwrap_or(0)
}

/// Counts an open client connection for as long as it lives.
pub struct ConnectionGuard(());

impl ConnectionGuard {
    pub fn open() -> Self {
        OPEN_CONNECTIONS.inc();
        ConnectionGuard(())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.dec();
    }
}
