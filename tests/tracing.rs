//! OpenTelemetry tracing (issue 23), against the real proxy and an OTLP/HTTP receiver in the
//! test that decodes what it gets with the OpenTelemetry project's protobuf definitions
//! (`opentelemetry-proto`): trace context in and out, the spans' attributes and status, both
//! sidecars of an Mcc request in one trace, no secret in any exported byte, and a collector
//! that is down or slow changing no answer.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde_json::json;

use common::creds::{basic, htpasswd_line, tokens_yaml};
use common::https::HttpsEndpoint;
use common::scenario::{bin, Scenario, ScenarioFiles, ScenarioOpts};
use common::{
    free_port, run_cli, CertKey, ClientOpts, Conn, EchoUpstream, Pki, ProxyProcess, Request,
};

const WAIT: Duration = Duration::from_secs(20);
/// Short batches, so that spans arrive within the test's bounded waits.
const FAST_BATCHES: &[(&str, &str)] = &[("OTEL_BSP_SCHEDULE_DELAY", "50")];

/// One exported span, flattened for assertions.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i32,
    attributes: HashMap<String, String>,
    /// (code, message): 0 unset, 1 ok, 2 error.
    status: (i32, String),
    events: Vec<(String, HashMap<String, String>)>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn text_of(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text_of(&kv.value)))
        .collect()
}

#[derive(Default)]
struct Received {
    /// The raw bodies, for the no-secret check.
    bodies: Vec<Vec<u8>>,
    spans: Vec<Span>,
    posts: usize,
}

/// An OTLP/HTTP receiver on 127.0.0.1: `POST /v1/traces`, protobuf, answered 200 (after
/// `delay`, to play a slow collector).
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Received>>,
    delay: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Received::default()));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, d, s) = (got.clone(), delay.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            let mut handlers = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (g, d, s) = (g.clone(), d.clone(), s.clone());
                        handlers.push(std::thread::spawn(move || serve(stream, &g, &d, &s)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for h in handlers {
                let _ = h.join();
            }
        });
        Receiver {
            addr,
            got,
            delay,
            stop,
            accept: Some(accept),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.got.lock().unwrap().spans.clone()
    }

    fn bytes(&self) -> Vec<u8> {
        self.got.lock().unwrap().bodies.concat()
    }

    /// Waits until a span matches `pred` (bounded).
    fn wait_span(&self, what: &str, pred: impl Fn(&Span) -> bool) -> Span {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| pred(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no span {what} within {WAIT:?}; got {:#?}",
                self.spans()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, got: &Mutex<Received>, delay: &Mutex<Duration>, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_len, body_len) = loop {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(head.starts_with("post /v1/traces "), "{head}");
            assert!(
                head.contains("content-type: application/x-protobuf"),
                "{head}"
            );
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, len);
        }
    };
    while buf.len() < head_len + body_len {
        let Ok(n) = stream.read(&mut chunk) else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_len..head_len + body_len].to_vec();
    // a slow collector: the answer waits (the test's end cuts it short)
    let wait = *delay.lock().unwrap();
    let until = Instant::now() + wait;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP trace export");
    {
        let mut got = got.lock().unwrap();
        got.posts += 1;
        for rs in &request.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    got.spans.push(Span {
                        service: service.clone(),
                        name: s.name.clone(),
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent: hex::encode(&s.parent_span_id),
                        kind: s.kind,
                        attributes: attrs(&s.attributes),
                        status: s
                            .status
                            .as_ref()
                            .map(|st| (st.code, st.message.clone()))
                            .unwrap_or_default(),
                        events: s
                            .events
                            .iter()
                            .map(|e| (e.name.clone(), attrs(&e.attributes)))
                            .collect(),
                    });
                }
            }
        }
        got.bodies.push(body);
    }
    let _ = stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
}

// OTLP span kinds
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn tracing_section(endpoint: &str, extra: &str) -> String {
    format!("tracing:\n  endpoint: \"{endpoint}\"\n  service_name: sidecar-test\n{extra}")
}

/// A scenario (TLS listener, the kit's echo CSE) with `opts`, started with fast batches.
fn start(
    opts: ScenarioOpts,
    prepare: impl FnOnce(&ScenarioFiles) -> ScenarioOpts,
) -> (ScenarioFiles, ProxyProcess) {
    let mut files = Scenario::files_only(opts);
    files.opts = prepare(&files);
    let proxy = ProxyProcess::start_with_env(&bin(), &files.config_yaml(), FAST_BATCHES);
    (files, proxy)
}

/// A scenario whose client authenticates with Basic (`CAdmin` / `password`), with `extra`
/// config lines; the caller starts the proxy with the environment it needs.
fn basic_files(password: &str, extra: String) -> ScenarioFiles {
    let mut files = Scenario::files_only(ScenarioOpts {
        client_cert: "optional".into(),
        methods: "[basic]".into(),
        ..Default::default()
    });
    let htpasswd = files.pki.write(
        "htpasswd",
        format!("{}\n", htpasswd_line("CAdmin", password)).as_bytes(),
    );
    files.opts.extra_auth = format!("basic:\n  htpasswd: {}", htpasswd.display());
    files.opts.extra = extra;
    files
}

const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn a_request_span_continues_the_callers_trace_and_the_cse_gets_our_span() {
    let rx = Receiver::start();
    let f = basic_files("pw-Secret-1", tracing_section(&rx.endpoint(), ""));
    let proxy = ProxyProcess::start_with_env(&bin(), &f.config_yaml(), FAST_BATCHES);
    let tls = common::ClientTls::new(&f.ca.cert);
    let req = Request::post("/cse-in", br#"{"m2m:ae":{"rn":"app"}}"#.to_vec())
        .header("Content-Type", "application/json;ty=2")
        .header("X-M2M-Origin", "CAdmin")
        .header("X-M2M-RI", "rqi-42")
        .header("Authorization", &basic("CAdmin", "pw-Secret-1"))
        .header(
            "traceparent",
            &format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"),
        )
        .header("tracestate", "vendor=abc");
    let resp = tls.connect_and_request(f.addr, &req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());

    // the server span: a child of the caller's span, in its trace
    let server = rx.wait_span("ingress POST", |s| {
        s.kind == SERVER && s.trace_id == INCOMING_TRACE
    });
    assert_eq!(server.parent, INCOMING_SPAN);
    assert_eq!(server.name, "ingress POST");
    assert_eq!(server.service, "sidecar-test");
    for (key, want) in [
        ("http.request.method", "POST"),
        ("url.path", "/cse-in"),
        ("http.response.status_code", "200"),
        ("onem2m.originator", "CAdmin"),
        ("onem2m.request_identifier", "rqi-42"),
        ("onem2m.operation", "create"),
        ("onem2m.resource_type", "2"),
        ("onem2m.rsc", "2000"),
        ("m2m_auth_proxy.auth.method", "basic"),
        ("m2m_auth_proxy.identity", "CAdmin"),
        ("client.address", "127.0.0.1"),
    ] {
        assert_eq!(server.attr(key), Some(want), "{key} in {server:#?}");
    }
    assert_eq!(server.status.0, 0, "a forwarded request is no error");
    // the upstream exchange: a client span under it, and what the CSE received names it
    let up = rx.wait_span("cse POST", |s| {
        s.kind == CLIENT && s.parent == server.span_id
    });
    assert_eq!(up.trace_id, INCOMING_TRACE);
    assert_eq!(up.attr("http.response.status_code"), Some("200"));
    let seen = f.upstream.last().expect("the CSE got the request");
    assert_eq!(
        seen.header_values("traceparent"),
        [format!("00-{INCOMING_TRACE}-{}-01", up.span_id)],
        "the CSE's parent is the proxy's span, not the client's"
    );
    assert_eq!(
        seen.header("tracestate"),
        Some("vendor=abc"),
        "tracestate goes on"
    );
    // the password check (no cache hit the first time) is a child of the server span
    let check = rx.wait_span("password verification", |s| {
        s.name == "password verification"
    });
    assert_eq!(
        (check.trace_id.as_str(), check.parent.as_str()),
        (INCOMING_TRACE, server.span_id.as_str())
    );
    // the access log line names the same trace and span
    let line = proxy
        .wait_stdout("\"request_id\":\"rqi-42\"", WAIT)
        .expect("an access-log line");
    assert!(
        line.contains(&format!("\"trace_id\":\"{INCOMING_TRACE}\"")),
        "{line}"
    );
    assert!(
        line.contains(&format!("\"span_id\":\"{}\"", server.span_id)),
        "{line}"
    );

    // a malformed traceparent is ignored: a new trace, the request unchanged
    let resp = tls
        .connect_and_request(
            f.addr,
            &Request::get("/cse-in")
                .header("X-M2M-RI", "rqi-bad-parent")
                .header("Authorization", &basic("CAdmin", "pw-Secret-1"))
                .header("traceparent", "00-XYZ-00f067aa0ba902b7-01"),
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let fresh = rx.wait_span("a new trace", |s| {
        s.kind == SERVER && s.attr("onem2m.request_identifier") == Some("rqi-bad-parent")
    });
    assert!(
        fresh.parent.is_empty() && fresh.trace_id != INCOMING_TRACE,
        "{fresh:#?}"
    );
    let seen = f.upstream.last().unwrap();
    assert!(
        seen.header_values("traceparent")[0].contains(&fresh.trace_id),
        "the CSE gets the new trace: {:?}",
        seen.header_values("traceparent")
    );
}

#[test]
fn refusals_set_the_span_status_and_no_secret_is_ever_exported() {
    const PASSWORD: &str = "pw-Secret-7f3a";
    const TOKEN: &str = "tok-Secret-91c2d8";
    const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs256";
    const CLIENT_SECRET: &str = "introspection-Secret-5e1b";
    let rx = Receiver::start();
    let idp_pki = Pki::new();
    let idp_ca = idp_pki.ca("idp-ca");
    let idp_server = idp_pki.server(&idp_ca, "localhost", &["127.0.0.1"]);
    let idp = HttpsEndpoint::start(&idp_server, None, |_call| {
        (
            200,
            json!({"active": true, "sub": "Cintro", "exp": 4102444800u64}).to_string(),
        )
    });
    let jwt = {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let input = format!(
            "{}.{}",
            b64(json!({"alg": "HS256", "typ": "JWT"}).to_string().as_bytes()),
            b64(json!({"iss": "https://idp.test", "aud": "m2m-proxy", "sub": "Cjwt", "exp": 4102444800u64})
                .to_string()
                .as_bytes())
        );
        let key = PKey::hmac(HS_SECRET).unwrap();
        let sig = Signer::new(MessageDigest::sha256(), &key)
            .unwrap()
            .sign_oneshot_to_vec(input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64(&sig))
    };
    let (f, proxy) = start(
        ScenarioOpts {
            client_cert: "optional".into(),
            methods: "[basic, bearer, jwt, introspection]".into(),
            ..Default::default()
        },
        |f| {
            let htpasswd = f.pki.write(
                "htpasswd",
                format!("{}\n", htpasswd_line("CAdmin", PASSWORD)).as_bytes(),
            );
            let tokens = f.pki.write(
                "tokens.yaml",
                tokens_yaml(&[("tok", TOKEN, "Ctok")]).as_bytes(),
            );
            let secret = f.pki.write("jwt.secret", HS_SECRET);
            let client_secret = f.pki.write("idp.password", CLIENT_SECRET.as_bytes());
            ScenarioOpts {
                extra_auth: format!(
                    "basic:\n  htpasswd: {}\nbearer:\n  tokens: {}\njwt:\n  issuers:\n    - issuer: https://idp.test\n      audiences: [m2m-proxy]\n      algorithms: [HS256]\n      secret_file: {}\nintrospection:\n  url: {}\n  ca: {}\n  basic_user: proxy\n  basic_password_file: {}\n  timeout: 2s",
                    htpasswd.display(),
                    tokens.display(),
                    secret.display(),
                    idp.url("/introspect"),
                    idp_ca.cert.display(),
                    client_secret.display()
                ),
                extra: format!(
                    "cse: {{id: /id-in, name: cse-in}}\nauthorization:\n  default: allow\n  rules:\n    - {{name: no-deletes, operations: [delete], targets: [\"/cse-in/**\"], effect: deny}}\n{}",
                    tracing_section(&rx.endpoint(), "  sampler_ratio: 1.0\n")
                ),
                ..f.opts.clone()
            }
        },
    );
    let tls = common::ClientTls::new(&f.ca.cert);
    let send = |ri: &str, auth: String| {
        tls.connect_and_request(
            f.addr,
            &Request::get("/cse-in")
                .header("X-M2M-RI", ri)
                .header("Authorization", &auth),
        )
        .unwrap()
    };
    assert_eq!(send("ok-basic", basic("CAdmin", PASSWORD)).status, 200);
    assert_eq!(send("ok-bearer", format!("Bearer {TOKEN}")).status, 200);
    assert_eq!(send("ok-jwt", format!("Bearer {jwt}")).status, 200);
    let resp = send(
        "ok-intro",
        "Bearer IDENTITY-TOKEN//intro-Secret-Token".into(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        !idp.calls().is_empty(),
        "the introspection endpoint was called"
    );
    let refused = send("bad-basic", basic("CAdmin", "wrong-Secret-pw"));
    assert_eq!(refused.status, 401);

    let span = rx.wait_span("the refusal", |s| {
        s.attr("onem2m.request_identifier") == Some("bad-basic")
    });
    assert_eq!(span.status.0, 2, "error status: {span:#?}");
    assert!(!span.status.1.is_empty(), "with the reason: {span:#?}");
    assert_eq!(span.attr("http.response.status_code"), Some("401"));
    assert_eq!(
        span.attr("m2m_auth_proxy.auth.failure"),
        Some("bad_credentials")
    );
    assert!(span.attr("onem2m.rsc").is_some());
    // a rule's refusal: the rule and its reason
    let denied = tls
        .connect_and_request(
            f.addr,
            &Request::new("DELETE", "/cse-in/cnt1")
                .header("X-M2M-RI", "denied-1")
                .header("Authorization", &basic("CAdmin", PASSWORD)),
        )
        .unwrap();
    assert_eq!(denied.status, 403, "{}", denied.text());
    let span = rx.wait_span("the rule's refusal", |s| {
        s.attr("onem2m.request_identifier") == Some("denied-1")
    });
    assert_eq!(
        span.status,
        (2, "denied by rule no-deletes".to_string()),
        "{span:#?}"
    );
    assert_eq!(span.attr("m2m_auth_proxy.rule"), Some("no-deletes"));
    assert_eq!(span.attr("onem2m.rsc"), Some("4103"));
    assert_eq!(span.attr("onem2m.operation"), Some("delete"));
    assert_eq!(span.attr("onem2m.originator"), Some("CAdmin"));
    for ri in ["ok-basic", "ok-bearer", "ok-jwt", "ok-intro"] {
        rx.wait_span(ri, |s| s.attr("onem2m.request_identifier") == Some(ri));
    }
    rx.wait_span("introspection call", |s| s.name == "introspection call");
    rx.wait_span("JWT verification", |s| s.name == "JWT verification");
    // not one exported byte holds a credential
    let bytes = rx.bytes();
    let b64_basic = basic("CAdmin", PASSWORD);
    for secret in [
        PASSWORD.as_bytes(),
        b"wrong-Secret-pw",
        b64_basic.trim_start_matches("Basic ").as_bytes(),
        TOKEN.as_bytes(),
        jwt.as_bytes(),
        jwt.split('.').nth(2).unwrap().as_bytes(),
        b"intro-Secret-Token",
        CLIENT_SECRET.as_bytes(),
        HS_SECRET,
    ] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "{:?} in the exported spans",
            String::from_utf8_lossy(secret)
        );
    }
    drop(proxy);
}

#[test]
fn a_collector_that_is_down_or_slow_changes_no_answer_and_drops_are_counted() {
    // down: nothing listens there
    let down = format!("http://127.0.0.1:{}", free_port());
    // slow: takes the exports but answers only after the test
    let slow = Receiver::start();
    *slow.delay.lock().unwrap() = Duration::from_secs(60);
    for (endpoint, reason, env) in [
        (down.as_str(), "export_failed", FAST_BATCHES.to_vec()),
        (
            slow.endpoint().as_str(),
            "queue_full",
            vec![
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
            ],
        ),
    ] {
        let files = basic_files("pw", tracing_section(endpoint, ""));
        let proxy = ProxyProcess::start_with_env(&bin(), &files.config_yaml(), &env);
        let tls = common::ClientTls::new(&files.ca.cert);
        let started = Instant::now();
        for i in 0..30 {
            let resp = tls
                .connect_and_request(
                    files.addr,
                    &Request::get("/cse-in")
                        .header("X-M2M-RI", &format!("r{i}"))
                        .header("Authorization", &basic("CAdmin", "pw")),
                )
                .unwrap();
            assert_eq!(resp.status, 200, "{endpoint}: {}", resp.text());
            assert_eq!(resp.header("X-M2M-RI"), Some(format!("r{i}").as_str()));
        }
        // generous: the collector's 60 s answer (or a refused connect) is not waited for
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "{endpoint}: {:?}",
            started.elapsed()
        );
        let series = format!("m2m_auth_proxy_tracing_spans_dropped_total{{reason=\"{reason}\"}}");
        let dropped = common::creds::wait_metric(&proxy, &series, 1.0);
        assert!(dropped >= 1.0, "{series} = {dropped}");
        drop(proxy);
    }
}

#[test]
fn tracing_off_adds_nothing_and_enabled_false_wins_over_the_environment() {
    let rx = Receiver::start();
    let files = basic_files("pw", "tracing:\n  enabled: false\n".into());
    let endpoint = rx.endpoint();
    let mut env = FAST_BATCHES.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()));
    let proxy = ProxyProcess::start_with_env(&bin(), &files.config_yaml(), &env);
    let tls = common::ClientTls::new(&files.ca.cert);
    let traceparent = format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-01");
    let resp = tls
        .connect_and_request(
            files.addr,
            &Request::get("/cse-in")
                .header("X-M2M-RI", "off-1")
                .header("Authorization", &basic("CAdmin", "pw"))
                .header("traceparent", &traceparent),
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let line = proxy
        .wait_stdout("\"request_id\":\"off-1\"", WAIT)
        .expect("access log");
    assert!(!line.contains("trace_id"), "{line}");
    // the client's trace context passes unchanged, like any other header
    assert_eq!(
        files.upstream.last().unwrap().header_values("traceparent"),
        [traceparent]
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.spans().is_empty(), "nothing exported");
    let (_, scrape) = proxy.admin_get("/metrics").unwrap();
    assert!(!scrape.contains("tracing_spans_dropped"), "{scrape}");
}

#[test]
fn check_names_a_bad_tracing_key_and_summarises_the_section() {
    let files = Scenario::files_only(ScenarioOpts::default());
    let mut opts = files.opts.clone();
    opts.extra = "tracing:\n  endpoint: \"http://127.0.0.1:4318\"\n  sampler_ration: 0.5\n".into();
    let path = files.write_config(&files.config_yaml_with(&opts));
    let (code, out, err) = run_cli(&bin(), &["check", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("sampler_ration") && err.contains(path.to_str().unwrap()),
        "{err}"
    );
    opts.extra = "tracing:\n  endpoint: \"https://collector:4318\"\n".into();
    let path = files.write_config(&files.config_yaml_with(&opts));
    let (code, _, err) = run_cli(&bin(), &["check", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("tracing.endpoint"), "{err}");
    opts.extra = "tracing:\n  endpoint: \"http://collector:4318\"\n  sampler_ratio: 0.25\n".into();
    let path = files.write_config(&files.config_yaml_with(&opts));
    let (code, out, err) = run_cli(&bin(), &["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("tracing: OTLP/HTTP to http://collector:4318/v1/traces (from tracing.endpoint), sampler parent-based ratio 0.25"),
        "{out}"
    );
    opts.extra = String::new();
    let path = files.write_config(&files.config_yaml_with(&opts));
    let (_, out, _) = run_cli(&bin(), &["check", "--config", path.to_str().unwrap()]);
    assert!(out.contains("tracing: off"), "{out}");
}

/// One CSE's sidecar for the Mcc test: its own CA, upstream, addresses.
struct Sidecar {
    pki: Pki,
    ca: CertKey,
    server: CertKey,
    upstream: EchoUpstream,
    addr: SocketAddr,
    admin: SocketAddr,
    egress: SocketAddr,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

impl Sidecar {
    fn new() -> Sidecar {
        let pki = Pki::new();
        let ca = pki.ca("ca");
        let server = pki.server(&ca, "localhost", &["127.0.0.1"]);
        Sidecar {
            upstream: EchoUpstream::start(),
            addr: loopback(),
            admin: loopback(),
            egress: loopback(),
            pki,
            ca,
            server,
        }
    }

    /// mTLS ingress (CSE namespaces) and `egress` routes, tracing to `endpoint` as `service`.
    fn yaml(&self, egress: &str, endpoint: &str, service: &str) -> String {
        format!(
            "listen: \"{}\"\nthreads: 2\nadmin: \"{}\"\nupstream: \"{}\"\ntls:\n  cert: {}\n  key: {}\n  client_ca: {}\n  client_cert: optional\nauth:\n  methods: [mtls]\n  mtls:\n    identity: [uri]\noriginator:\n  mode: verify\n  cse_namespace: true\nshutdown:\n  grace_period: 1s\ntracing:\n  endpoint: \"{endpoint}\"\n  service_name: {service}\negress:{egress}",
            self.addr,
            self.admin,
            self.upstream.url(),
            self.server.chain.display(),
            self.server.key.display(),
            self.ca.cert.display(),
        )
    }
}

#[test]
fn an_mcc_request_is_one_trace_across_both_sidecars() {
    let rx = Receiver::start();
    let (in_side, mn_side) = (Sidecar::new(), Sidecar::new());
    // the MN's sidecar proves /id-mn to the IN's with a certificate the IN's CA issued
    let mn_cert = in_side.pki.client(&in_side.ca, ClientOpts::uri("/id-mn"));
    let route = format!(
        "\n  - name: registrar\n    listen: \"{}\"\n    peer: \"https://127.0.0.1:{}\"\n    tls:\n      ca: {}\n      cert: {}\n      key: {}\n",
        mn_side.egress,
        in_side.addr.port(),
        in_side.ca.cert.display(),
        mn_cert.chain.display(),
        mn_cert.key.display()
    );
    let _in_proxy = ProxyProcess::start_with_env(
        &bin(),
        &in_side.yaml(" []\n", &rx.endpoint(), "in-sidecar"),
        FAST_BATCHES,
    );
    let _mn_proxy = ProxyProcess::start_with_env(
        &bin(),
        &mn_side.yaml(&route, &rx.endpoint(), "mn-sidecar"),
        FAST_BATCHES,
    );
    // the MN-CSE registers at the IN-CSE through its sidecar's egress route
    let resp = Conn::plain(mn_side.egress)
        .and_then(|mut c| {
            c.request(
                &Request::post("/cse-in", br#"{"m2m:csr":{"rn":"id-mn"}}"#.to_vec())
                    .header("Content-Type", "application/json;ty=16")
                    .header("X-M2M-Origin", "/id-mn")
                    .header("X-M2M-RI", "mcc-reg-1"),
            )
        })
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());

    let egress = rx.wait_span("the MN sidecar's egress span", |s| {
        s.service == "mn-sidecar" && s.kind == SERVER
    });
    assert_eq!(egress.name, "egress POST");
    assert!(
        egress.parent.is_empty(),
        "the MN-CSE sent no trace context: a new trace"
    );
    assert_eq!(
        egress.attr("m2m_auth_proxy.egress.route"),
        Some("registrar")
    );
    assert_eq!(egress.attr("onem2m.request_identifier"), Some("mcc-reg-1"));
    let to_peer = rx.wait_span("the route's exchange with the peer", |s| {
        s.service == "mn-sidecar" && s.kind == CLIENT
    });
    assert_eq!(
        (to_peer.trace_id.as_str(), to_peer.parent.as_str()),
        (egress.trace_id.as_str(), egress.span_id.as_str())
    );
    assert_eq!(to_peer.name, "peer POST");
    let ingress = rx.wait_span("the IN sidecar's ingress span", |s| {
        s.service == "in-sidecar" && s.kind == SERVER
    });
    assert_eq!(
        ingress.trace_id, egress.trace_id,
        "one trace across both sidecars"
    );
    assert_eq!(
        ingress.parent, to_peer.span_id,
        "the peer's ingress is a child of the route's exchange"
    );
    assert_eq!(ingress.attr("onem2m.originator"), Some("/id-mn"));
    assert_eq!(ingress.attr("onem2m.operation"), Some("create"));
    assert_eq!(ingress.attr("onem2m.resource_type"), Some("16"));
    assert_eq!(ingress.attr("m2m_auth_proxy.auth.method"), Some("mtls"));
    assert_eq!(ingress.attr("tls.client.subject"), Some("/id-mn"));
    let to_cse = rx.wait_span("the IN sidecar's exchange with its CSE", |s| {
        s.service == "in-sidecar" && s.kind == CLIENT
    });
    assert_eq!(to_cse.parent, ingress.span_id);
    let seen = in_side
        .upstream
        .last()
        .expect("the IN-CSE got the registration");
    assert_eq!(
        seen.header_values("traceparent"),
        [format!("00-{}-{}-01", egress.trace_id, to_cse.span_id)]
    );
    // TRACE_DUMP=1: the spans as docs/operations.md shows them
    if std::env::var_os("TRACE_DUMP").is_some() {
        std::thread::sleep(Duration::from_millis(300));
        eprintln!("{:#?}", rx.spans());
    }
}

#[test]
fn a_websocket_is_one_span_with_an_event_per_request_primitive() {
    const WS_READ_ONLY: &str = "authorization:\n  default: deny\n  rules:\n    - name: ws-read\n      effect: allow\n      operations: [retrieve]\n";
    let rx = Receiver::start();
    let (f, _proxy) = start(
        ScenarioOpts {
            originator: "mode: verify".into(),
            ..Default::default()
        },
        |f| ScenarioOpts {
            extra: format!(
                "websocket:\n  cse_id: /id-in\n{WS_READ_ONLY}{}",
                tracing_section(&rx.endpoint(), "")
            ),
            ..f.opts.clone()
        },
    );
    let client = f.pki.client(&f.ca, ClientOpts::uri("Cae-ws"));
    let mut conn = common::ClientTls::new(&f.ca.cert)
        .cert(&client)
        .connect(f.addr)
        .unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let resp = conn
        .request(&Request::websocket("/ws", &["oneM2M.json"]))
        .unwrap();
    assert_eq!(resp.status, 101, "{}", resp.text());
    let primitives: [&[u8]; 3] = [
        br#"{"op":4,"to":"/id-in/cse-in/Cother","fr":"Cother","rqi":"steal-1","rvi":"3"}"#,
        br#"{"op":2,"to":"/id-in/cse-in","fr":"Cae-ws","rqi":"ok-1","rvi":"3"}"#,
        br#"{"op":2,"to":"/id-in/cse-in","fr":"Cae-ws","rqi":"ok-2","rvi":"3"}"#,
    ];
    for p in primitives {
        conn.ws_send(common::WS_TEXT, p, true).unwrap();
        let (opcode, _, _) = conn.ws_recv().unwrap();
        assert_eq!(opcode, common::WS_TEXT);
    }
    drop(conn);
    let span = rx.wait_span("the WebSocket's span", |s| s.kind == SERVER);
    assert_eq!(span.attr("http.response.status_code"), Some("101"));
    assert_eq!(span.attr("onem2m.originator"), Some("Cae-ws"));
    let events: Vec<_> = span
        .events
        .iter()
        .filter(|(name, _)| name == "onem2m.primitive")
        .map(|(_, a)| a.clone())
        .collect();
    assert_eq!(events.len(), 3, "{span:#?}");
    assert_eq!(
        events[0]
            .get("onem2m.request_identifier")
            .map(String::as_str),
        Some("steal-1")
    );
    assert_eq!(
        events[0].get("onem2m.rsc").map(String::as_str),
        Some("4103")
    );
    assert!(events[0].contains_key("m2m_auth_proxy.reason"));
    let forwarded: Vec<_> = events[1..]
        .iter()
        .map(|e| {
            (
                e["onem2m.operation"].as_str(),
                e["onem2m.request_identifier"].as_str(),
                e.get("m2m_auth_proxy.rule").map(String::as_str),
            )
        })
        .collect();
    assert_eq!(
        forwarded,
        [
            ("retrieve", "ok-1", Some("ws-read")),
            ("retrieve", "ok-2", Some("ws-read"))
        ]
    );
    // no span per frame or message: the connection's span and its exchange with the CSE
    std::thread::sleep(Duration::from_millis(300));
    let spans = rx.spans();
    assert_eq!(
        spans.iter().filter(|s| s.kind == SERVER).count(),
        1,
        "{spans:#?}"
    );
    assert!(spans.len() <= 2, "{spans:#?}");
}

#[test]
fn sampling_is_parent_based_and_an_unsampled_request_still_passes_its_context_on() {
    let rx = Receiver::start();
    let f = basic_files(
        "pw",
        tracing_section(&rx.endpoint(), "  sampler_ratio: 0.0\n"),
    );
    let _proxy = ProxyProcess::start_with_env(&bin(), &f.config_yaml(), FAST_BATCHES);
    let tls = common::ClientTls::new(&f.ca.cert);
    let send = |ri: &str, traceparent: Option<String>| {
        let mut req = Request::get("/cse-in")
            .header("X-M2M-RI", ri)
            .header("Authorization", &basic("CAdmin", "pw"));
        if let Some(tp) = traceparent {
            req = req.header("traceparent", &tp);
        }
        let resp = tls.connect_and_request(f.addr, &req).unwrap();
        assert_eq!(resp.status, 200);
        f.upstream.last().unwrap().header_values("traceparent")
    };
    // no parent, ratio 0: not sampled, but the CSE still gets a (not sampled) context
    let sent = send("unsampled", None);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].starts_with("00-") && sent[0].ends_with("-00"),
        "{sent:?}"
    );
    // a sampled parent is followed whatever the ratio
    let sent = send(
        "sampled-parent",
        Some(format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-01")),
    );
    assert!(sent[0].starts_with(&format!("00-{INCOMING_TRACE}-")) && sent[0].ends_with("-01"));
    rx.wait_span("the sampled parent's child", |s| s.parent == INCOMING_SPAN);
    // an unsampled parent is followed too: nothing recorded, its trace goes on unsampled
    let sent = send(
        "unsampled-parent",
        Some(format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-00")),
    );
    assert!(sent[0].starts_with(&format!("00-{INCOMING_TRACE}-")) && sent[0].ends_with("-00"));
    std::thread::sleep(Duration::from_millis(300));
    let ris: Vec<_> = rx
        .spans()
        .iter()
        .filter_map(|s| s.attr("onem2m.request_identifier").map(str::to_string))
        .collect();
    assert_eq!(
        ris,
        ["sampled-parent"],
        "only the sampled request was exported"
    );
}

#[test]
fn spans_still_queued_at_shutdown_are_exported_before_the_process_exits() {
    let rx = Receiver::start();
    let files = basic_files("pw", tracing_section(&rx.endpoint(), ""));
    // no scheduled export within the test: only the flush at shutdown can send the span
    let mut proxy = ProxyProcess::start_with_env(
        &bin(),
        &files.config_yaml(),
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let resp = common::ClientTls::new(&files.ca.cert)
        .connect_and_request(
            files.addr,
            &Request::get("/cse-in")
                .header("X-M2M-RI", "last-one")
                .header("Authorization", &basic("CAdmin", "pw")),
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        rx.spans().is_empty(),
        "nothing exported before the shutdown"
    );
    assert!(proxy.signal("TERM"));
    assert!(proxy.wait_exit(WAIT).is_some(), "the proxy exits");
    rx.wait_span("the last request's span", |s| {
        s.attr("onem2m.request_identifier") == Some("last-one")
    });
}
