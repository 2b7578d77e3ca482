//! At the edge (issue 21): the PROXY protocol from trusted balancers, through a real HAProxy
//! and with hand-made headers, and running out of file descriptors.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::tcp_connect_from;
use common::creds::metric;
use common::scenario::{Scenario, ScenarioOpts};
use common::{free_port, ClientOpts, Request};

/// The balancer's address; the test client connects from 127.0.0.1.
const BALANCER: [u8; 4] = [127, 0, 0, 3];

fn balancer() -> IpAddr {
    IpAddr::from(BALANCER)
}

struct HaProxy(Child);

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// HAProxy in TCP mode on two fresh ports, relaying to `backend` from the balancer address
/// with `send-proxy` (v1) and `send-proxy-v2`. Fails, never skips, without haproxy: CI
/// installs it (.ci/run).
fn haproxy(dir: &std::path::Path, backend: SocketAddr) -> (HaProxy, SocketAddr, SocketAddr) {
    let (v1, v2) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let b = balancer();
    let cfg = format!(
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend v1\n  bind {v1}\n  default_backend v1\n\
         backend v1\n  server proxy {backend} send-proxy source {b}\n\
         frontend v2\n  bind {v2}\n  default_backend v2\n\
         backend v2\n  server proxy {backend} send-proxy-v2 source {b}\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("haproxy: {e} (install the Debian package haproxy; .ci/run does)")
        });
    let mut h = HaProxy(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    // listening, seen in /proc rather than by connecting (a connection would reach the proxy)
    while ![v1, v2].iter().all(|a| listening(a.port())) {
        assert!(h.0.try_wait().unwrap().is_none(), "haproxy exited");
        assert!(Instant::now() < deadline, "haproxy not listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    (h, v1, v2)
}

/// Whether a socket listens on 127.0.0.1:`port` (`/proc/net/tcp`, state 0A).
fn listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
    })
}

fn start() -> Scenario {
    Scenario::start(ScenarioOpts {
        extra: "proxy_protocol:\n  trusted: [\"127.0.0.3/32\", \"10.0.0.0/8\"]\nlimits:\n  header_timeout: 2s\n".into(),
        ..Default::default()
    })
}

fn pp_metric(s: &Scenario, outcome: &str) -> f64 {
    let (_, text) = s.proxy.admin_get("/metrics").unwrap();
    metric(
        &text,
        &format!("m2m_auth_proxy_proxy_protocol_headers_total{{outcome=\"{outcome}\"}}"),
    )
}

/// A v2 PROXY header for TCP over IPv4.
fn v2_header(version_command: u8, src: [u8; 4], port: u16, extra: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(version_command);
    h.push(0x11);
    h.extend_from_slice(&((12 + extra.len()) as u16).to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h.extend_from_slice(extra);
    h
}

/// Whether the proxy closed `tcp` (EOF or reset) rather than leaving it open.
fn closed_by_proxy(mut tcp: TcpStream) -> bool {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    match tcp.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn through_haproxy_the_devices_address_is_the_client_address_and_others_cannot_choose_theirs() {
    let s = start();
    let client = s.client(ClientOpts::uri("Cae-edge"));
    let (_h, v1, v2) = haproxy(s.pki.dir(), s.addr);
    let req = Request::get("/cse/edge").header("X-M2M-Origin", "Cae-edge");

    // through HAProxy (from 127.0.0.3): the proxy sees the device's 127.0.0.1 and its port
    for (case, front) in [("send-proxy", v1), ("send-proxy-v2", v2)] {
        let mut conn = s.tls(Some(&client)).connect(front).unwrap();
        let resp = conn.request(&req).unwrap();
        assert_eq!(resp.status, 200, "{case}: {}", resp.text());
        let seen = s.upstream.requests();
        let last = seen.last().unwrap();
        assert_eq!(last.header("X-Forwarded-For"), Some("127.0.0.1"), "{case}");
    }
    // the access log names the device, never the balancer
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let out = s.proxy.stdout_text();
        let lines: Vec<String> = out
            .lines()
            .filter(|l| l.contains("/cse/edge"))
            .map(str::to_owned)
            .collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        assert!(l.contains("\"client\":\"127.0.0.1"), "{l}");
        assert!(!l.contains("127.0.0.3"), "{l}");
    }
    assert_eq!(pp_metric(&s, "accepted"), 2.0);

    // the same header straight from an untrusted peer: closed before TLS, counted
    let mut tcp = common::client::tcp_connect(s.addr).unwrap();
    tcp.write_all(b"PROXY TCP4 198.51.100.1 127.0.0.1 5555 443\r\n")
        .unwrap();
    assert!(
        closed_by_proxy(tcp),
        "an untrusted PROXY header was not refused"
    );
    let mut tcp = common::client::tcp_connect(s.addr).unwrap();
    tcp.write_all(&v2_header(0x21, [198, 51, 100, 1], 5555, &[]))
        .unwrap();
    assert!(
        closed_by_proxy(tcp),
        "an untrusted v2 header was not refused"
    );
    assert_eq!(pp_metric(&s, "untrusted"), 2.0);

    // an untrusted client without a header is served as before, with its own address
    let resp = s
        .tls(Some(&client))
        .connect_and_request(s.addr, &req)
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        s.upstream
            .requests()
            .last()
            .unwrap()
            .header("X-Forwarded-For"),
        Some("127.0.0.1")
    );
}

#[test]
fn a_trusted_balancer_must_send_a_well_formed_header_in_time() {
    let s = start();
    let client = s.client(ClientOpts::uri("Cae-edge"));
    let req = Request::get("/cse/hand").header("X-M2M-Origin", "Cae-edge");

    // a hand-made v2 header, then TLS: the header's address is the client's
    let mut tcp = tcp_connect_from(balancer(), s.addr).unwrap();
    tcp.write_all(&v2_header(0x21, [198, 51, 100, 7], 4711, &[0x04, 0, 1, 0]))
        .unwrap();
    let mut conn = s
        .tls(Some(&client))
        .connect_over(s.addr, Some(tcp))
        .unwrap();
    let resp = conn.request(&req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        s.upstream
            .requests()
            .last()
            .unwrap()
            .header("X-Forwarded-For"),
        Some("198.51.100.7")
    );
    // v2 LOCAL (a balancer's health check): served with the balancer's own address
    let mut tcp = tcp_connect_from(balancer(), s.addr).unwrap();
    tcp.write_all(&v2_header(0x20, [198, 51, 100, 8], 1, &[]))
        .unwrap();
    let mut conn = s
        .tls(Some(&client))
        .connect_over(s.addr, Some(tcp))
        .unwrap();
    let resp = conn.request(&req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        s.upstream
            .requests()
            .last()
            .unwrap()
            .header("X-Forwarded-For"),
        Some("127.0.0.3")
    );
    assert_eq!(pp_metric(&s, "accepted"), 1.0);
    assert_eq!(pp_metric(&s, "local"), 1.0);

    let oversized = v2_header(0x21, [198, 51, 100, 9], 1, &vec![0u8; 2000]);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        // (case, bytes, then close the writing side)
        (
            "no header: TLS straight away",
            b"\x16\x03\x01\x00\x05hello".to_vec(),
            false,
        ),
        (
            "truncated v1",
            b"PROXY TCP4 198.51.100.1 127.0".to_vec(),
            true,
        ),
        (
            "v1 with a bare LF",
            b"PROXY TCP4 198.51.100.1 127.0.0.1 1 443\n".to_vec(),
            false,
        ),
        (
            "v1 with a bad address",
            b"PROXY TCP4 198.51.100.300 127.0.0.1 1 443\r\n".to_vec(),
            false,
        ),
        (
            "v2 of another version",
            v2_header(0x11, [198, 51, 100, 9], 1, &[]),
            false,
        ),
        (
            "v2 truncated",
            v2_header(0x21, [198, 51, 100, 9], 1, &[])[..20].to_vec(),
            true,
        ),
        ("v2 oversized", oversized, false),
    ];
    for (case, bytes, shut) in &cases {
        let mut tcp = tcp_connect_from(balancer(), s.addr).unwrap();
        tcp.write_all(bytes).unwrap();
        if *shut {
            tcp.shutdown(std::net::Shutdown::Write).unwrap();
        }
        assert!(closed_by_proxy(tcp), "{case}: left open");
    }
    let (found, _) = s.proxy.wait_metrics(
        &format!(
            "m2m_auth_proxy_proxy_protocol_headers_total{{outcome=\"malformed\"}} {}",
            cases.len()
        ),
        Duration::from_secs(5),
    );
    assert!(found, "malformed: {}", pp_metric(&s, "malformed"));

    // nothing at all within limits.header_timeout (2 s): closed
    let tcp = tcp_connect_from(balancer(), s.addr).unwrap();
    assert!(
        closed_by_proxy(tcp),
        "a silent balancer connection was left open"
    );
    assert_eq!(pp_metric(&s, "timeout"), 1.0);

    // and the listener still serves
    let resp = s
        .tls(Some(&client))
        .connect_and_request(s.addr, &req)
        .unwrap();
    assert_eq!(resp.status, 200);
}

#[test]
fn check_validates_and_summarises_the_proxy_protocol_section() {
    let files = Scenario::files_only(ScenarioOpts {
        extra: "proxy_protocol:\n  trusted: [\"10.0.0.0/8\", \"fd00::/8\"]\n".into(),
        ..Default::default()
    });
    let path = files.write_config(&files.config_yaml());
    let bin = common::scenario::bin();
    let (code, out, err) = common::run_cli(&bin, &["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("proxy_protocol: v1/v2 header required from 10.0.0.0/8, fd00::/8"),
        "{out}"
    );
    for (trusted, want) in [
        ("[\"10.0.0.1/8\"]", "proxy_protocol.trusted[0]"),
        ("[]", "proxy_protocol.trusted"),
        ("[\"10.0.0.0/8\", \"nowhere\"]", "proxy_protocol.trusted[1]"),
    ] {
        let files = Scenario::files_only(ScenarioOpts {
            extra: format!("proxy_protocol:\n  trusted: {trusted}\n"),
            ..Default::default()
        });
        let path = files.write_config(&files.config_yaml());
        let (code, out, err) =
            common::run_cli(&bin, &["check", "--config", path.to_str().unwrap()]);
        assert_ne!(code, 0, "{trusted}: {out}");
        assert!(err.contains(want), "{trusted}: {err}");
    }
    let files = Scenario::files_only(ScenarioOpts {
        extra: "proxy_protocol:\n  trusted: [\"10.0.0.0/8\"]\n  v1: true\n".into(),
        ..Default::default()
    });
    let path = files.write_config(&files.config_yaml());
    let (code, _, err) = common::run_cli(&bin, &["check", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("v1"), "unknown key: {err}");
}
