//! Heads and bodies the HTTP parser refuses, on the public listener and on an egress route's
//! listener: every answer is the proxy's own in oneM2M form (status, `X-M2M-RSC`, `X-M2M-RI`
//! when the head got far enough to read it, an `m2m:dbg` body), the connection closes after
//! it, a refused head forwards nothing, and an upstream connection that carried part of a body
//! that then turned bad is closed, never reused.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::scenario::{Scenario, ScenarioOpts};
use common::wiretap::Tap;
use common::{free_port, CertKey, ClientOpts, Conn, EchoUpstream, Request, Response};

/// The public listener with a tap in front of its upstream, and an egress route whose (plain
/// HTTP) peer is an echo upstream behind another tap.
struct Setup {
    s: Scenario,
    /// What the proxy sent to the CSE.
    cse_tap: Tap,
    client: CertKey,
    egress: SocketAddr,
    peer: EchoUpstream,
    /// What the egress route sent to its peer.
    peer_tap: Tap,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Listener {
    Public,
    Egress,
}

fn setup() -> Setup {
    let peer = EchoUpstream::start();
    let peer_port = free_port();
    let egress = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut s = Scenario::start(ScenarioOpts {
        extra: format!(
            "egress:\n  - name: peer\n    listen: \"{egress}\"\n    peer: \"http://127.0.0.1:{peer_port}\"\n    allow_plain_peer: true\n"
        ),
        ..Default::default()
    });
    let port = s.upstream.port();
    s.stop_upstream();
    let cse_tap = Tap::start_on(port, s.upstream.addr());
    let peer_tap = Tap::start_on(peer_port, peer.addr());
    let client = s.client(ClientOpts::uri("Cae-malformed"));
    Setup {
        s,
        cse_tap,
        client,
        egress,
        peer,
        peer_tap,
    }
}

impl Setup {
    fn connect(&self, l: Listener) -> Conn {
        let conn = match l {
            Listener::Public => self.s.tls(Some(&self.client)).connect(self.s.addr),
            Listener::Egress => Conn::plain(self.egress),
        }
        .unwrap_or_else(|e| panic!("{l:?}: connect: {e}"));
        conn.set_timeout(Duration::from_secs(5));
        conn
    }

    fn upstream(&self, l: Listener) -> &EchoUpstream {
        match l {
            Listener::Public => &self.s.upstream,
            Listener::Egress => &self.peer,
        }
    }

    fn tap(&self, l: Listener) -> &Tap {
        match l {
            Listener::Public => &self.cse_tap,
            Listener::Egress => &self.peer_tap,
        }
    }

    /// Bytes the proxy sent toward `l`'s upstream, all connections together.
    fn forwarded(&self, l: Listener) -> Vec<u8> {
        self.tap(l)
            .sent()
            .into_iter()
            .flat_map(|s| s.bytes)
            .collect()
    }
}

/// The proxy's own answer in oneM2M form, with `ri` echoed (or none).
fn assert_onem2m(case: &str, resp: &Response, status: u16, ri: Option<&str>) {
    assert_eq!(
        resp.status,
        status,
        "{case}: {:?} {}",
        resp.headers,
        resp.text()
    );
    assert_eq!(
        resp.header("X-M2M-RSC"),
        Some("4000"),
        "{case}: {:?}",
        resp.headers
    );
    assert_eq!(resp.header("X-M2M-RI"), ri, "{case}: {:?}", resp.headers);
    assert_eq!(resp.header("Server"), None, "{case}: not Pingora's own");
    assert_eq!(
        resp.header("Content-Type"),
        Some("application/json"),
        "{case}"
    );
    let dbg = resp.json()["m2m:dbg"].as_str().map(str::to_owned);
    assert!(
        dbg.as_deref()
            .is_some_and(|d| d.starts_with("malformed request")),
        "{case}: {}",
        resp.text()
    );
    assert_eq!(resp.header("Connection"), Some("close"), "{case}");
}

fn post(extra: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /cse/m HTTP/1.1\r\nHost: localhost\r\nX-M2M-Origin: Cae-malformed\r\nX-M2M-RI: ri-m\r\n{extra}\r\n{body}"
    )
    .into_bytes()
}

#[test]
fn heads_the_parser_refuses_are_answered_in_onem2m_form_and_nothing_is_forwarded() {
    let t = setup();
    let many: String = (0..2000).map(|i| format!("X-F{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        (
            "2 000 header fields",
            format!("GET /cse/many HTTP/1.1\r\nHost: localhost\r\nX-M2M-RI: ri-many\r\n{many}\r\n")
                .into_bytes(),
            431,
            Some("ri-many"),
        ),
        (
            // the head did not get far enough: the ID is beyond what the parser kept
            "2 000 header fields, X-M2M-RI last",
            format!("GET /cse/many HTTP/1.1\r\nHost: localhost\r\n{many}X-M2M-RI: ri-late\r\n\r\n")
                .into_bytes(),
            431,
            None,
        ),
        (
            "a field without a colon",
            b"GET /cse/colon HTTP/1.1\r\nHost: localhost\r\nX-M2M-RI: ri-colon\r\nNoColonHere\r\n\r\n"
                .to_vec(),
            400,
            Some("ri-colon"),
        ),
        (
            "bare LF line endings",
            b"GET /cse/lf HTTP/1.1\nHost: localhost\nX-M2M-RI: ri-lf\n\n".to_vec(),
            400,
            Some("ri-lf"),
        ),
        (
            "one bare LF inside a CRLF head",
            b"GET /cse/lf HTTP/1.1\r\nHost: localhost\r\nX-M2M-RI: ri-lf1\r\nX-A: 1\nX-B: 2\r\n\r\n"
                .to_vec(),
            400,
            Some("ri-lf1"),
        ),
        (
            "a Content-Length with a sign",
            post("Content-Length: +5\r\n", "hello"),
            400,
            Some("ri-m"),
        ),
        (
            "two X-M2M-RI in a head the parser refused: none echoed",
            b"GET /cse/two HTTP/1.1\r\nX-M2M-RI: a\r\nX-M2M-RI: b\r\nNoColon\r\n\r\n".to_vec(),
            400,
            None,
        ),
    ];
    for l in [Listener::Public, Listener::Egress] {
        for (case, bytes, status, ri) in &cases {
            let case = format!("{l:?}: {case}");
            let mut conn = t.connect(l);
            conn.send_raw(bytes).unwrap();
            let resp = conn
                .read_response()
                .unwrap_or_else(|e| panic!("{case}: no answer: {e}"));
            assert_onem2m(&case, &resp, *status, *ri);
            conn.expect_closed()
                .unwrap_or_else(|e| panic!("{case}: connection left open: {e}"));
        }
        assert_eq!(t.upstream(l).count(), 0, "{l:?}: something was forwarded");
        assert!(
            t.forwarded(l).is_empty(),
            "{l:?}: bytes reached the upstream"
        );
        // the listener still serves
        let mut conn = t.connect(l);
        let ok = conn
            .request(&Request::get("/cse/ok").header("X-M2M-Origin", "Cae-malformed"))
            .unwrap();
        assert_eq!(ok.status, 200, "{l:?}: {}", ok.text());
    }
}

/// Waits until `tap` holds a connection whose bytes contain `needle`; its index.
fn wait_carried(tap: &Tap, needle: &[u8]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = tap.sent();
        if let Some(i) = sent
            .iter()
            .position(|s| s.bytes.windows(needle.len()).any(|w| w == needle))
        {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_body_that_turns_bad_mid_stream_is_answered_and_its_upstream_connection_closed() {
    let t = setup();
    for l in [Listener::Public, Listener::Egress] {
        // a warm pooled connection first: the upload must not leave one half-written either
        let mut warm = t.connect(l);
        let resp = warm
            .request(&Request::get("/cse/warm").header("X-M2M-Origin", "Cae-malformed"))
            .unwrap();
        assert_eq!(resp.status, 200, "{l:?}");
        drop(warm);

        let mut conn = t.connect(l);
        let mark = format!("first-chunk-{l:?}");
        // JSON on the public listener, so that the body is read (and not refused with 415);
        // none on the egress route, so that it streams (a JSON one is read whole for `poa`)
        let content_type = match l {
            Listener::Public => "Content-Type: application/json\r\n",
            Listener::Egress => "",
        };
        let head = post(
            &format!("{content_type}Transfer-Encoding: chunked\r\n"),
            &format!("{:x}\r\n{mark}\r\n", mark.len()),
        );
        conn.send_raw(&head).unwrap();
        if l == Listener::Public {
            // with an egress route, a client's body is read whole (and checked for the
            // route's listener) before anything goes upstream: the cut body never leaves
            conn.send_raw(b"zz\r\nmore\r\n0\r\n\r\n").unwrap();
            let resp = conn.read_response().expect("an answer");
            assert_onem2m(&format!("{l:?}: invalid chunk"), &resp, 400, Some("ri-m"));
            conn.expect_closed().expect("client connection closed");
            assert!(
                t.tap(l)
                    .sent()
                    .iter()
                    .all(|s| !s.bytes.windows(mark.len()).any(|w| w == mark.as_bytes())),
                "{l:?}: part of the cut body went upstream"
            );
            continue;
        }
        let carrier = wait_carried(t.tap(l), mark.as_bytes());
        // then a chunk size that is no number
        conn.send_raw(b"zz\r\nmore\r\n0\r\n\r\n").unwrap();
        let resp = conn.read_response().expect("an answer");
        assert_onem2m(&format!("{l:?}: invalid chunk"), &resp, 400, Some("ri-m"));
        conn.expect_closed().expect("client connection closed");

        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.tap(l).sent()[carrier].closed {
            assert!(
                Instant::now() < deadline,
                "{l:?}: the upstream connection that carried the cut body is still open"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // the next request goes on another connection, and the cut one never carried more
        let cut = t.tap(l).sent()[carrier].bytes.clone();
        let mut next = t.connect(l);
        let resp = next
            .request(&Request::get("/cse/after").header("X-M2M-Origin", "Cae-malformed"))
            .unwrap();
        assert_eq!(resp.status, 200, "{l:?}: {}", resp.text());
        assert_eq!(t.tap(l).sent()[carrier].bytes, cut, "{l:?}");
        assert!(
            t.upstream(l).requests().iter().all(|r| r.path != "/cse/m"),
            "{l:?}: the cut body reached the upstream as a whole request"
        );
    }
}
