//! Limits over real TLS: oversized heads and bodies, too many connections, slow and idle clients.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::scenario::{Scenario, ScenarioOpts};
use common::{ClientOpts, Request};

fn start(limits: &str) -> Scenario {
    Scenario::start(ScenarioOpts {
        extra: format!("limits:\n{limits}"),
        ..Default::default()
    })
}

#[test]
fn oversized_header_is_431_and_oversized_body_is_413() {
    let s = start("  max_header_bytes: 2048\n  max_body: 1000");
    let client = s.client(ClientOpts::uri("Cae1"));
    let big = "x".repeat(4096);
    let resp = s
        .tls(Some(&client))
        .connect_and_request(
            s.addr,
            &Request::get("/x")
                .header("X-Big", &big)
                .header("X-M2M-RI", "h"),
        )
        .unwrap();
    assert_eq!(resp.status, 431);
    assert_eq!(resp.header("X-M2M-RI"), Some("h"));
    assert!(resp.json()["m2m:dbg"].as_str().unwrap().contains("header"));

    let resp = s
        .tls(Some(&client))
        .connect_and_request(
            s.addr,
            &Request::post("/x", vec![b'a'; 1001]).header("X-M2M-RI", "b"),
        )
        .unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(resp.header("X-M2M-RI"), Some("b"));
    assert_eq!(s.upstream.count(), 0, "nothing forwarded");

    // a chunked body has no length up front: refused once it passes the limit
    let chunk = vec![b'c'; 600];
    let resp = s
        .tls(Some(&client))
        .connect_and_request(
            s.addr,
            &Request::new("POST", "/x").chunked(&[&chunk, &chunk]),
        )
        .unwrap();
    assert_eq!(resp.status, 413);
    assert!(s.upstream.requests().iter().all(|r| r.body.len() <= 1000));

    // at the limit it passes
    let resp = s
        .tls(Some(&client))
        .connect_and_request(s.addr, &Request::post("/x", vec![b'a'; 1000]))
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(s.upstream.last().unwrap().body.len(), 1000);
}

#[test]
fn connections_over_the_limit_are_closed_before_the_handshake() {
    let s = start("  max_connections: 3");
    let client = s.client(ClientOpts::uri("Cae1"));
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = s.tls(Some(&client)).connect(s.addr).unwrap();
        assert_eq!(c.request(&Request::get("/x")).unwrap().status, 200);
        open.push(c);
    }
    assert!(s
        .tls(Some(&client))
        .connect_and_request(s.addr, &Request::get("/x"))
        .is_err());
    // the proxy stays up and the open connections keep working
    for c in open.iter_mut() {
        assert_eq!(c.request(&Request::get("/x")).unwrap().status, 200);
    }
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ok = false;
    while Instant::now() < deadline && !ok {
        ok = s
            .tls(Some(&client))
            .connect_and_request(s.addr, &Request::get("/x"))
            .is_ok();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "a slot freed by a closed connection is usable again");
    let metrics = s.proxy.admin_get("/metrics").unwrap().1;
    assert!(metrics
        .contains("m2m_auth_proxy_connections_closed_by_limit_total{limit=\"max_connections\"}"));
}

#[test]
fn slow_clients_are_cut_by_the_header_timeout() {
    let s = start("  header_timeout: 1s");
    let client = s.client(ClientOpts::uri("Cae1"));
    // TLS done, request head trickling in
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    let started = Instant::now();
    conn.send_raw(b"GET /x HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(5) {
        if conn.send_raw(b"X-Slow: 1\r\n").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let waited = started.elapsed();
    assert!(
        closed || conn.expect_closed().is_ok(),
        "slowloris connection still open after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "{waited:?}");

    // no TLS handshake at all
    let mut raw = std::net::TcpStream::connect(s.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = raw.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without data");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.upstream.count(), 0);
    // a normal client is unaffected, also after the timeout has passed on its connection
    let mut good = s.tls(Some(&client)).connect(s.addr).unwrap();
    assert_eq!(good.request(&Request::get("/x")).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(good.request(&Request::get("/x")).unwrap().status, 200);
}

#[test]
fn idle_keep_alive_connections_are_closed_by_the_idle_timeout() {
    let s = start("  idle_timeout: 1s");
    let client = s.client(ClientOpts::uri("Cae1"));
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    assert_eq!(conn.request(&Request::get("/x")).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        conn.request(&Request::get("/x")).unwrap().status,
        200,
        "short pauses are fine"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        conn.request(&Request::get("/x")).is_err(),
        "idle connection should be closed"
    );
}
