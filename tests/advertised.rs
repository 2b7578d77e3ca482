//! CSEs that advertise their own address (issue 24): each `poa` they write is their bind
//! address (`http://127.0.0.1:<port>`), as tinyIoT's is. Two proxies, A in front of "the IN-CSE"
//! and B in front of "the MN-CSE", each with `cse.public_url` (its ingress) and the default
//! `cse.advertised` (its upstream URL), and a route to the other. After the MN registers, each
//! CSE stores the other's `poa` as its own sidecar's egress listener, so every later request
//! goes CSE -> egress -> the peer's ingress -> the peer's CSE, never around the sidecars. The
//! test CSEs (tests/common/cse.rs) read only `Content-Length` bodies and answer with
//! `Connection: close`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::creds::wait_metric;
use common::cse::{Enc, TestCse};
use common::scenario::bin;
use common::{free_port, run_cli, CertKey, ClientOpts, Conn, Pki, ProxyProcess, Request};

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One pod: its CSE, its sidecar's PKI and addresses.
struct Pod {
    pki: Pki,
    ca: CertKey,
    server: CertKey,
    cse: TestCse,
    addr: SocketAddr,
    admin: SocketAddr,
    egress: SocketAddr,
}

impl Pod {
    fn new(csi: &str, rn: &str, enc: Enc) -> Pod {
        let pki = Pki::new();
        let ca = pki.ca("ca");
        let server = pki.server(&ca, "localhost", &["127.0.0.1"]);
        Pod {
            cse: TestCse::start(csi, rn, enc),
            addr: loopback(free_port()),
            admin: loopback(free_port()),
            egress: loopback(free_port()),
            pki,
            ca,
            server,
        }
    }

    /// This sidecar's public ingress URL: its `cse.public_url`.
    fn public(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// The URL of this sidecar's egress listener.
    fn local(&self) -> String {
        format!("http://{}", self.egress)
    }

    /// The sidecar: mTLS ingress (verify, CSE namespaces), `cse` with `cse_extra`, one route
    /// `name` to `peer` presenting `client`.
    fn yaml(
        &self,
        csi: &str,
        rn: &str,
        cse_extra: &str,
        name: &str,
        peer: &Pod,
        client: &CertKey,
    ) -> String {
        let route = format!(
            "  - name: {name}\n    listen: \"{}\"\n    peer: \"{}\"\n    peer_roles: [cse]\n    tls:\n      ca: {}\n      cert: {}\n      key: {}\n",
            self.egress,
            peer.public(),
            peer.ca.cert.display(),
            client.chain.display(),
            client.key.display(),
        );
        self.yaml_with(csi, rn, cse_extra, &route)
    }

    /// The sidecar with `routes` as its `egress` list.
    fn yaml_with(&self, csi: &str, rn: &str, cse_extra: &str, routes: &str) -> String {
        format!(
            "listen: \"{addr}\"\nthreads: 2\nadmin: \"{admin}\"\nupstream: \"{up}\"\ntls:\n  cert: {cert}\n  key: {key}\n  client_ca: {ca}\n  client_cert: optional\nauth:\n  methods: [mtls]\n  mtls:\n    identity: [uri]\n  roles:\n    cse: {{methods: [mtls], names: [\"/id-in\", \"/id-mn\"]}}\noriginator:\n  mode: verify\n  cse_namespace: true\nshutdown:\n  grace_period: 1s\ncse:\n  id: \"{csi}\"\n  name: {rn}\n{cse_extra}egress:\n{routes}",
            addr = self.addr,
            admin = self.admin,
            up = self.cse.url(),
            cert = self.server.chain.display(),
            key = self.server.key.display(),
            ca = self.ca.cert.display(),
        )
    }
}

/// A (IN) and B (MN), each sidecar with `public_url` = its ingress.
struct Mcc {
    a: Pod,
    b: Pod,
    pa: ProxyProcess,
    pb: ProxyProcess,
}

fn mcc(enc: Enc) -> Mcc {
    let (a, b) = (
        Pod::new("/id-in", "cse-in", enc),
        Pod::new("/id-mn", "cse-mn", enc),
    );
    let mn_cert = a.pki.client(&a.ca, ClientOpts::uri("/id-mn"));
    let in_cert = b.pki.client(&b.ca, ClientOpts::uri("/id-in"));
    let public = |p: &Pod| format!("  public_url: \"{}\"\n", p.public());
    let pa = ProxyProcess::start(
        &bin(),
        &a.yaml("/id-in", "cse-in", &public(&a), "mn", &b, &in_cert),
    );
    let pb = ProxyProcess::start(
        &bin(),
        &b.yaml("/id-mn", "cse-mn", &public(&b), "registrar", &a, &mn_cert),
    );
    Mcc { a, b, pa, pb }
}

/// The access-log line of the request `ri` (JSON), waiting for it.
fn log_line(p: &ProxyProcess, ri: &str) -> serde_json::Value {
    let needle = format!("\"request_id\":\"{ri}\"");
    let text = p
        .wait_stdout(&needle, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no access-log line for {ri}:\n{}", p.stdout_text()));
    let line = text.lines().find(|l| l.contains(&needle)).unwrap();
    serde_json::from_str(line).unwrap()
}

/// Asks `cse` itself (no sidecar in between) for `path`, which it forwards if it is another
/// CSE's: the answer as it came back.
fn ask(cse: &TestCse, path: &str, ri: &str) -> common::Response {
    Conn::plain(cse.addr())
        .and_then(|mut c| {
            c.request(
                &Request::get(path)
                    .header("X-M2M-Origin", "CAdmin")
                    .header("X-M2M-RI", ri)
                    .header("Connection", "close"),
            )
        })
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The request went local CSE -> `from`'s egress route `route` -> `to`'s ingress (as
/// `identity`) -> `to`'s CSE, complete, no failure.
fn went_through(from: &ProxyProcess, route: &str, to: &ProxyProcess, identity: &str, ri: &str) {
    let out = log_line(from, ri);
    assert_eq!(out["direction"], "egress", "{out}");
    assert_eq!(out["route"], route, "{out}");
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["failure"], serde_json::Value::Null, "{out}");
    let into = log_line(to, ri);
    assert_eq!(into["direction"], "ingress", "{into}");
    assert_eq!(into["identity"], identity, "{into}");
    assert_eq!(into["status"], 200, "{into}");
}

fn poa_of(enc: Enc, body: &[u8], resource: &str) -> Vec<String> {
    let v = enc.decode(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    v[resource]["poa"]
        .as_array()
        .unwrap_or_else(|| panic!("no poa in {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn registration_and_mcc_never_bypass_the_sidecars(enc: Enc) {
    let m = mcc(enc);
    let (a, b) = (&m.a, &m.b);
    // the MN-CSE is configured with its sidecar's egress listener as registrar address
    m.b.cse
        .register(&b.local(), "/id-in", "cse-in")
        .unwrap_or_else(|e| panic!("registration: {e}"));

    // each CSE stored the other's poa as its own sidecar's egress listener
    assert_eq!(a.cse.remote_poa("/id-mn"), Some(vec![a.local()]));
    assert_eq!(b.cse.remote_poa("/id-in"), Some(vec![b.local()]));
    let create = a
        .cse
        .seen()
        .into_iter()
        .find(|s| s.method == "POST")
        .unwrap();
    assert_eq!(poa_of(enc, &create.body, "m2m:csr"), [a.local()]);
    assert_eq!(create.originator.as_deref(), Some("/id-mn"));

    // IN -> MN: a request for the MN's resources goes through A's egress and B's ingress; the
    // MN's CSEBase poa (its bind address) reaches the IN as A's egress listener
    let resp = ask(&a.cse, "/~/id-mn/cse-mn", "in-to-mn");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(poa_of(enc, &resp.body, "m2m:cb"), [a.local()]);
    let at_mn = b.cse.seen().pop().unwrap();
    assert_eq!(at_mn.path, "/~/id-mn/cse-mn");
    assert_eq!(at_mn.originator.as_deref(), Some("/id-in/CAdmin"));
    went_through(&m.pa, "mn", &m.pb, "/id-in", "in-to-mn");

    // MN -> IN: the same the other way; a body without a matching poa arrives byte-identical
    let resp = ask(&b.cse, "/~/id-in/cse-in/plain", "mn-to-in");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, a.cse.plain_body(), "passed byte-identical");
    assert_eq!(
        resp.header("Content-Length"),
        Some(a.cse.plain_body().len().to_string().as_str())
    );
    let at_in = a.cse.seen().pop().unwrap();
    assert_eq!(at_in.path, "/~/id-in/cse-in/plain");
    assert_eq!(at_in.originator.as_deref(), Some("/id-mn/CAdmin"));
    went_through(&m.pb, "registrar", &m.pa, "/id-mn", "mn-to-in");

    // the MN's <remoteCSE> at the IN, as the MN reads it back: its own address again
    let resp = ask(&b.cse, "/~/id-in/cse-in/id-mn", "mn-reads-csr");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(poa_of(enc, &resp.body, "m2m:csr"), [b.cse.url()]);
    went_through(&m.pb, "registrar", &m.pa, "/id-mn", "mn-reads-csr");

    // every egress exchange was complete: no failure logged, though each CSE closed its
    // connection after answering
    for p in [&m.pa, &m.pb] {
        for line in p.stdout_text().lines().filter(|l| l.contains("\"egress\"")) {
            assert!(line.contains("\"failure\":null"), "{line}");
        }
    }

    // counted by mapping: the CSE's own address leaving (kind public_url) and the peer's
    // public URL entering (kind route), and back
    let series = |direction: &str, kind: &str, route: &str| {
        format!("m2m_auth_proxy_egress_poa_rewrites_total{{direction=\"{direction}\",kind=\"{kind}\",route=\"{route}\"}}")
    };
    for (p, direction, kind, route) in [
        (&m.pa, "away_from_local", "public_url", ""),
        (&m.pa, "toward_local", "route", "mn"),
        (&m.pa, "away_from_local", "route", "mn"),
        (&m.pb, "away_from_local", "public_url", ""),
        (&m.pb, "toward_local", "route", "registrar"),
        (&m.pb, "toward_local", "public_url", ""),
    ] {
        let s = series(direction, kind, route);
        assert!(wait_metric(p, &s, 1.0) >= 1.0, "{s}");
    }
}

#[test]
fn json_registration_and_mcc_never_bypass_the_sidecars() {
    registration_and_mcc_never_bypass_the_sidecars(Enc::Json);
}

#[test]
fn cbor_registration_and_mcc_never_bypass_the_sidecars() {
    registration_and_mcc_never_bypass_the_sidecars(Enc::Cbor);
}

/// Without `public_url` the same CSEs register, but each stores the other's bind address:
/// the case the mapping exists for (and proof the test CSEs would bypass the sidecars).
#[test]
fn without_public_url_the_peer_stores_the_cses_own_address() {
    let (a, b) = (
        Pod::new("/id-in", "cse-in", Enc::Json),
        Pod::new("/id-mn", "cse-mn", Enc::Json),
    );
    let mn_cert = a.pki.client(&a.ca, ClientOpts::uri("/id-mn"));
    let in_cert = b.pki.client(&b.ca, ClientOpts::uri("/id-in"));
    let _pa = ProxyProcess::start(&bin(), &a.yaml("/id-in", "cse-in", "", "mn", &b, &in_cert));
    let _pb = ProxyProcess::start(
        &bin(),
        &b.yaml("/id-mn", "cse-mn", "", "registrar", &a, &mn_cert),
    );
    b.cse.register(&b.local(), "/id-in", "cse-in").unwrap();
    assert_eq!(a.cse.remote_poa("/id-mn"), Some(vec![b.cse.url()]));
    assert_eq!(b.cse.remote_poa("/id-in"), Some(vec![a.cse.url()]));
}

#[test]
fn check_validates_and_lists_the_active_rewrites() {
    let a = Pod::new("/id-in", "cse-in", Enc::Json);
    let b = Pod::new("/id-mn", "cse-mn", Enc::Json);
    let cert = a.pki.client(&a.ca, ClientOpts::uri("/id-mn"));
    let dir = tempfile::tempdir().unwrap();
    let check = |cse_extra: &str| {
        let path = dir.path().join("proxy.yaml");
        std::fs::write(
            &path,
            b.yaml("/id-mn", "cse-mn", cse_extra, "registrar", &a, &cert),
        )
        .unwrap();
        run_cli(&bin(), &["check", "--config", path.to_str().unwrap()])
    };
    let (code, out, err) = check(&format!(
        "  public_url: \"{}\"\n  advertised: [\"{}\", \"http://10.0.0.7:3000\"]\n",
        b.public(),
        b.cse.url()
    ));
    assert_eq!(code, 0, "{out}{err}");
    for want in [
        format!(
            "route registrar: {} -> {} entering the pod",
            a.public(),
            b.local()
        ),
        format!(
            "route registrar: {} -> {} leaving the pod",
            b.local(),
            a.public()
        ),
        format!(
            "cse.public_url: {}, http://10.0.0.7:3000 -> {} leaving the pod",
            b.cse.url(),
            b.public()
        ),
        format!(
            "cse.public_url: {} -> {} entering the pod",
            b.public(),
            b.cse.url()
        ),
    ] {
        assert!(out.contains(&want), "{want}\n{out}");
    }
    let (code, out, _) = check("");
    assert_eq!(code, 0);
    assert!(out.contains("cse.public_url: not set"), "{out}");
    for (extra, says) in [
        ("  public_url: \"http://mn.example\"\n", "cse.public_url"),
        (
            &format!("  public_url: \"{}\"\n", a.public()) as &str,
            "egress[0].peer",
        ),
        (
            "  advertised: [\"http://127.0.0.1:3000\"]\n",
            "cse.advertised",
        ),
        (
            &format!(
                "  public_url: \"https://mn.example\"\n  advertised: [\"{}\"]\n",
                b.local()
            ) as &str,
            "egress[0].listen",
        ),
    ] {
        let (code, out, err) = check(extra);
        assert_ne!(code, 0, "{extra}: {out}");
        assert!(err.contains(says), "{extra}: {err}");
    }
}

/// A TLS peer that answers each connection's request with the next of `answers` and closes
/// (`close_notify` first, or not), as a CSE answering `Connection: close` does.
struct ClosingPeer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl ClosingPeer {
    fn start(cert: &CertKey, answers: Vec<(Vec<u8>, bool)>) -> ClosingPeer {
        use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acceptor.set_certificate_chain_file(&cert.chain).unwrap();
        acceptor
            .set_private_key_file(&cert.key, SslFiletype::PEM)
            .unwrap();
        let acceptor = acceptor.build();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let next = AtomicUsize::new(0);
        let halt = stop.clone();
        let accept = std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = tcp.set_nonblocking(false);
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(mut tls) = acceptor.accept(tcp) else {
                    continue;
                };
                let Some((answer, notify)) = answers.get(next.fetch_add(1, Ordering::SeqCst))
                else {
                    continue;
                };
                // one request head (the test's have no body)
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && tls.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let _ = tls.write_all(answer);
                if *notify {
                    let _ = tls.shutdown();
                }
            }
        });
        ClosingPeer {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for ClosingPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

/// The egress access log's `failure` is about the exchange: a peer that closes after a
/// complete response (`Connection: close`, a close-delimited body, HTTP/1.0; with or without
/// TLS `close_notify`) leaves it null, also for a body read whole to rewrite its `poa`; a peer
/// that closes in the middle of a response is a failure.
#[test]
fn a_peer_closing_after_a_complete_response_is_no_failure_in_the_egress_log() {
    let pki = Pki::new();
    let ca = pki.ca("peer-ca");
    let cert = pki.server(&ca, "localhost", &["127.0.0.1"]);
    let csr = br#"{"m2m:csr":{"rn":"id-mn","poa":["http://127.0.0.1:9/x"]}}"#;
    let json_close = |status: &str, body: &[u8], declared: usize| {
        let mut a = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-M2M-RSC: 2000\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n").into_bytes();
        a.extend_from_slice(body);
        a
    };
    let complete: Vec<(&str, Vec<u8>)> = vec![
        ("cl-close", json_close("201 Created", csr, csr.len())),
        (
            "until-close",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nall of it"
                .to_vec(),
        ),
        (
            "http10",
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
    ];
    let broken: Vec<(&str, Vec<u8>)> = vec![
        ("cut-json", json_close("200 OK", &csr[..20], csr.len())),
        (
            "cut-plain",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\nConnection: close\r\n\r\nsome"
                .to_vec(),
        ),
    ];
    // each complete answer twice: with close_notify, then a bare TCP close
    let mut answers = Vec::new();
    for (_, a) in &complete {
        answers.push((a.clone(), true));
        answers.push((a.clone(), false));
    }
    for (_, a) in &broken {
        answers.push((a.clone(), false));
    }
    let peer = ClosingPeer::start(&cert, answers);
    let b = Pod::new("/id-mn", "cse-mn", Enc::Json);
    let route = format!(
        "  - name: closing\n    listen: \"{}\"\n    peer: \"https://127.0.0.1:{}\"\n    tls:\n      ca: {}\n",
        b.egress,
        peer.addr.port(),
        ca.cert.display()
    );
    let public = format!("  public_url: \"{}\"\n", b.public());
    let yaml = b.yaml_with("/id-mn", "cse-mn", &public, &route);
    let pb = ProxyProcess::start(&bin(), &yaml);
    // the local CSE keeps its connection to the egress listener across the peer's closes
    let mut conn = Conn::plain(b.egress).unwrap();
    for (name, _) in &complete {
        for n in 0..2 {
            let ri = format!("{name}-{n}");
            let resp = conn
                .request(&Request::get("/cse-in").header("X-M2M-RI", &ri))
                .unwrap_or_else(|e| panic!("{ri}: {e}"));
            assert!(resp.status < 300, "{ri}: {} {}", resp.status, resp.text());
            let line = log_line(&pb, &ri);
            assert_eq!(line["failure"], serde_json::Value::Null, "{line}");
            assert_eq!(line["status"], resp.status, "{line}");
        }
    }
    // the body read whole to rewrite its poa came complete (and matched no mapping)
    let line = log_line(&pb, "cl-close-1");
    assert_eq!(line["bytes_sent"], csr.len(), "{line}");
    for (name, _) in &broken {
        let _ = Conn::plain(b.egress)
            .and_then(|mut c| c.request(&Request::get("/cse-in").header("X-M2M-RI", name)));
        let line = log_line(&pb, name);
        assert_eq!(line["failure"], "peer closed the connection", "{line}");
    }
}

/// Red-team round 2: an AE (no CSE role) that registers with `poa` = the sidecar's
/// `public_url` keeps it. Rewritten to `cse.advertised`, it would make the CSE call itself on
/// its plain port, around the sidecar, as itself.
#[test]
fn an_ae_cannot_turn_the_public_url_into_the_cses_own_plain_address() {
    let m = mcc(Enc::Json);
    let a = &m.a;
    let ae = a.pki.client(&a.ca, ClientOpts::uri("Cae1"));
    let poa = format!("{}/notify", a.public());
    let body = serde_json::json!({"m2m:ae": {"rn": "ae1", "api": "Nae1", "rr": true, "srv": ["3"], "poa": [poa]}});
    let req = Request::post("/cse-in", serde_json::to_vec(&body).unwrap())
        .header("Content-Type", "application/json;ty=2")
        .header("X-M2M-Origin", "Cae1")
        .header("X-M2M-RI", "ae-self-loop")
        .header("X-M2M-RVI", "3");
    let resp = common::ClientTls::new(&a.ca.cert)
        .cert(&ae)
        .connect_and_request(a.addr, &req)
        .unwrap();
    // the test CSE answers only <remoteCSE> creates; what counts is what it received
    assert_ne!(resp.status, 403, "{}", resp.text());
    let at_in = a
        .cse
        .seen()
        .into_iter()
        .find(|s| s.request_id.as_deref() == Some("ae-self-loop"))
        .expect("the create reached the CSE");
    assert_eq!(poa_of(Enc::Json, &at_in.body, "m2m:ae"), [poa]);
}
