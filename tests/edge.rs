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

/// The soft and hard `RLIMIT_NOFILE` of process `pid`; sets the soft one when `soft` is given.
fn nofile(pid: u32, soft: Option<u64>) -> (u64, u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both pointers are to live rlimit values for the duration of the call.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    if let Some(soft) = soft {
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        // SAFETY: as above.
        let rc = unsafe {
            libc::prlimit(
                pid as libc::pid_t,
                libc::RLIMIT_NOFILE,
                &new,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }
    (old.rlim_cur, old.rlim_max)
}

/// The lowest descriptor number process `pid` does not use: the next one it would get.
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

/// User + system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // the fields after the command name (which may hold spaces) in parentheses
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_file_descriptors_is_survived_counted_and_logged_once_per_interval() {
    let s = Scenario::start(ScenarioOpts::default());
    let client = s.client(ClientOpts::uri("Cae-fd"));
    let req = |path: &str| Request::get(path).header("X-M2M-Origin", "Cae-fd");
    let pid = s.proxy.pid();

    // connections held open, each with its upstream connection
    let held: Vec<_> = (0..4)
        .map(|i| {
            let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
            let resp = conn.request(&req(&format!("/cse/held-{i}"))).unwrap();
            assert_eq!(resp.status, 200);
            conn
        })
        .collect();

    // the limit at the next free descriptor number: every new descriptor is refused (those
    // open above it stay usable)
    let (soft, _) = nofile(pid, None);
    nofile(pid, Some(lowest_free_fd(pid)));
    // more connections than it may accept: they wait in the kernel's backlog
    let flood: Vec<TcpStream> = (0..40)
        .map(|_| common::client::tcp_connect(s.addr).unwrap())
        .collect();
    assert!(
        s.proxy
            .wait_stderr("accept() failing (emfile)", Duration::from_secs(10)),
        "no EMFILE line: {}",
        s.proxy.stderr_text()
    );

    // no busy loop while accept fails: well under a second of CPU in two (a spinning accept
    // loop takes all of one core)
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let used = cpu_ticks(pid) - before;
    assert!(used < hz / 2, "{used} ticks of CPU in 2 s (at {hz}/s)");

    // held connections are still answered: forwarded where an idle upstream connection is
    // left, else the proxy's own 502 in oneM2M form (a new upstream connection needs a
    // descriptor too), never dropped or left hanging
    for (i, mut conn) in held.into_iter().enumerate() {
        let resp = conn.request(&req(&format!("/cse/again-{i}"))).unwrap();
        match resp.status {
            200 => {}
            502 => assert_eq!(resp.header("X-M2M-RSC"), Some("5103"), "held {i}"),
            other => panic!("held connection {i}: {other} {}", resp.text()),
        }
    }

    // descriptors free again: new connections, the admin listener, the reloader
    nofile(pid, Some(soft));
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match s
            .tls(Some(&client))
            .connect_and_request(s.addr, &req("/cse/after"))
        {
            Ok(resp) if resp.status == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "no new connection served: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (found, scrape) = s.proxy.wait_metrics(
        "m2m_auth_proxy_accept_errors_total{reason=\"emfile\"}",
        Duration::from_secs(10),
    );
    assert!(found, "{scrape}");
    let errors = metric(
        &scrape,
        "m2m_auth_proxy_accept_errors_total{reason=\"emfile\"}",
    );
    assert!(errors >= 1.0, "{scrape}");
    assert_eq!(s.proxy.admin_get("/readyz").unwrap().0, 200);
    // the reloader reads files again (it could not while descriptors were out)
    let reloads = "m2m_auth_proxy_reloads_total{file=\"config\",result=\"success\"}";
    let before = metric(&scrape, reloads);
    s.proxy
        .rewrite_config(&format!("{}\n# touched\n", s.config_yaml()));
    let (found, scrape) = s.proxy.wait_metrics(
        &format!("{reloads} {}", before + 1.0),
        Duration::from_secs(10),
    );
    assert!(found, "no reload after descriptors came back: {scrape}");

    // one line per interval, Pingora's own per-failure lines not written
    let stderr = s.proxy.stderr_text();
    let lines = stderr.matches("accept() failing").count();
    assert!(
        lines >= 1 && lines as f64 <= errors,
        "{lines} lines for {errors} errors"
    );
    assert!(
        !stderr.contains("pingora_core::services::listening] Accept() failed"),
        "{stderr}"
    );
}

#[test]
fn connections_waiting_for_their_proxy_header_count_toward_max_connections() {
    let s = Scenario::start(ScenarioOpts {
        extra: "proxy_protocol:\n  trusted: [\"127.0.0.3/32\"]\nlimits:\n  max_connections: 2\n  header_timeout: 3s\n".into(),
        ..Default::default()
    });
    let client = s.client(ClientOpts::uri("Cae-edge"));
    let req = Request::get("/cse/cap").header("X-M2M-Origin", "Cae-edge");
    // two balancer connections that send nothing yet: the cap is reached
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| tcp_connect_from(balancer(), s.addr).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    // refused until the cap counts both (their hooks may not have run yet)
    loop {
        let refused = s
            .tls(Some(&client))
            .connect_and_request(s.addr, &req)
            .is_err();
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "served over the cap");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (found, scrape) = s.proxy.wait_metrics(
        "m2m_auth_proxy_connections_closed_by_limit_total{limit=\"max_connections\"} 1",
        Duration::from_secs(5),
    );
    assert!(found, "{scrape}");
    // once they are closed for sending no header in time, clients are served again
    for tcp in silent {
        assert!(closed_by_proxy(tcp));
    }
    let resp = s
        .tls(Some(&client))
        .connect_and_request(s.addr, &req)
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(pp_metric(&s, "timeout"), 2.0);
}
