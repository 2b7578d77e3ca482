//! HTTP/1.1 forwarding behaviour of the request path, black box over real TLS to the real
//! proxy: `Expect: 100-continue` before and after authentication, an upstream answering
//! before it has read the body, pooled upstream connections the CSE closed, close-delimited
//! upstream responses, bodiless answers (HEAD, 204, 304), pipelining, hop-by-hop headers both
//! ways, and idle versus busy keep-alive connections on SIGTERM.
//!
//! Each test pins one behaviour of the request path (docs/configuration.md, "Request path").
//! Framing attacks and upstream faults are in `tests/adversarial.rs`, limits in
//! `tests/limits.rs`.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::creds::{basic, start_with_credentials};
use common::scenario::{Scenario, ScenarioOpts};
use common::wiretap::{Reply, ScriptedUpstream, Seen, Then};
use common::{CertKey, ClientOpts, Conn, Request, Response};

/// The identity of the client certificate in these tests.
const PROVEN: &str = "Cae-fwd";

/// A request the client hides in a body: if it ever reaches the upstream, the upstream sees
/// `/smuggled`.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: localhost\r\nX-M2M-Origin: CAdmin\r\n\r\n";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `n` bytes that are not all alike, so a lost or reordered piece shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 23) as u8).collect()
}

/// A response with a Content-Length: `HTTP/1.1 <status>`, the headers, the body.
fn answer(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// 200 saying which request it answers on which upstream connection: `<path> on <conn>`.
fn ok_from(r: &Seen) -> Vec<u8> {
    answer(
        "200 OK",
        &[("Content-Type", "text/plain")],
        format!("{} on {}", r.path, r.conn).as_bytes(),
    )
}

/// The default mTLS scenario with its echo upstream replaced by a scripted one on the same
/// port, and a client certificate for `PROVEN`.
fn scripted(
    script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> (Scenario, CertKey, ScriptedUpstream) {
    let mut s = Scenario::start(ScenarioOpts::default());
    let client = s.client(ClientOpts::uri(PROVEN));
    let port = s.upstream.port();
    s.stop_upstream();
    let up = ScriptedUpstream::start_on(port, script);
    (s, client, up)
}

/// Every request the scripted upstream read carries the proven originator and nothing else.
fn assert_proven_only(up: &ScriptedUpstream, case: &str) {
    for r in up.seen() {
        assert_eq!(
            r.values("X-M2M-Origin"),
            vec![PROVEN],
            "{case}: {} {} on connection {}",
            r.method,
            r.path,
            r.conn
        );
    }
}

/// The proxy's own 502 in oneM2M form.
fn assert_onem2m_502(resp: &Response, case: &str) {
    assert_eq!(resp.status, 502, "{case}: {}", resp.text());
    assert_eq!(resp.header("X-M2M-RSC"), Some("5103"), "{case}");
    assert!(resp.json()["m2m:dbg"].is_string(), "{case}");
}

fn says_close(resp: &Response) -> bool {
    resp.header("Connection")
        .is_some_and(|c| c.eq_ignore_ascii_case("close"))
}

/// A read that ran into its timeout (nothing more had arrived yet).
fn timed_out(err: &str) -> bool {
    err.contains("temporarily unavailable") || err.contains("timed out")
}

// ---------------------------------------------------------------------------------------
// Expect: 100-continue
// ---------------------------------------------------------------------------------------

/// A client that asks `Expect: 100-continue` waits for the interim answer before it sends
/// the body: once it is authenticated, the `100 Continue` must come (from the CSE, relayed,
/// or from the proxy itself), or the client stalls for its own timeout on every upload.
#[test]
fn expect_100_continue_after_authentication_gets_100_then_the_answer() {
    let s = Scenario::start(ScenarioOpts::default());
    let client = s.client(ClientOpts::uri(PROVEN));
    let body = pattern(64 * 1024);
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.set_timeout(secs(5));
    // the head only: Content-Length given, body held back
    conn.send(
        &Request::new("POST", "/cse-in/upload")
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", &body.len().to_string())
            .header("Expect", "100-continue")
            .header("X-M2M-Origin", "CAdmin")
            .header("X-M2M-RI", "ri-expect"),
    )
    .unwrap();
    let interim = conn
        .read_response_or_interim()
        .expect("an interim answer within 5 s, before the body is sent");
    assert_eq!(interim.status, 100, "{:?}", interim.headers);
    conn.send_raw(&body).unwrap();
    let resp = conn.read_response().expect("the final answer");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("X-M2M-RI"), Some("ri-expect"));
    assert_eq!(resp.json()["body_len"], body.len());
    let seen = s.upstream.last().expect("forwarded");
    assert_eq!(seen.body, body, "the upstream got the whole body");
    assert_eq!(seen.header_values("X-M2M-Origin"), vec![PROVEN]);
    // the whole body was read: the connection stays usable
    assert!(!says_close(&resp), "{:?}", resp.headers);
    let next = conn
        .request(&Request::get("/next"))
        .expect("the next request on the connection");
    assert_eq!(next.status, 200, "{}", next.text());
}

/// Before authentication nothing may invite the body: a client that fails to authenticate
/// gets the final 401 straight away (no `100 Continue` before it) and the CSE sees nothing,
/// also when the client sends the body anyway (here a request in disguise).
#[test]
fn expect_100_continue_without_valid_credentials_gets_401_and_no_100() {
    let (s, _) = start_with_credentials(("Cuser", "pw-Zq9"), ("gw", "tok-8f2e", "Cgw"), "", "");
    for (ri, auth) in [
        ("ri-wrong", Some(basic("Cuser", "wrong"))),
        ("ri-none", None),
    ] {
        let mut conn = s.tls(None).connect(s.addr).unwrap();
        conn.set_timeout(secs(5));
        let mut head = Request::new("POST", "/cse-in/upload")
            .header("Content-Length", &SMUGGLED.len().to_string())
            .header("Expect", "100-continue")
            .header("X-M2M-RI", ri);
        if let Some(auth) = &auth {
            head = head.header("Authorization", auth);
        }
        conn.send(&head).unwrap();
        let first = conn
            .read_response_or_interim()
            .unwrap_or_else(|e| panic!("{ri}: no answer: {e}"));
        assert_eq!(
            first.status, 401,
            "{ri}: the first answer, no 100 before it"
        );
        assert_eq!(first.header("X-M2M-RSC"), Some("4107"), "{ri}");
        assert_eq!(first.header("X-M2M-RI"), Some(ri), "{ri}");
        assert!(
            first
                .header("Content-Type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{ri}: {:?}",
            first.headers
        );
        assert!(
            !first.header_all("WWW-Authenticate").is_empty(),
            "{ri}: {:?}",
            first.headers
        );
        assert!(first.json()["m2m:dbg"].is_string(), "{ri}");
        // the body it announced was never read: the connection ends with the answer
        assert!(says_close(&first), "{ri}: {:?}", first.headers);
        // a client may still send the body after a final answer (RFC 9110 §10.1.1)
        let _ = conn.send_raw(SMUGGLED.as_bytes());
        conn.expect_closed()
            .unwrap_or_else(|e| panic!("{ri}: said close: {e}"));
    }
    assert_eq!(s.upstream.count(), 0, "{:?}", s.upstream.requests());
}

// ---------------------------------------------------------------------------------------
// An upstream that answers before reading the body
// ---------------------------------------------------------------------------------------

/// Sends `total` body bytes in 64 KiB pieces and, between pieces, looks for an answer; stops
/// writing when a write fails or stalls (the proxy may stop reading once answered). Returns
/// the answer (or the error once `deadline` passed) and the body bytes sent.
fn send_body_watching_for_answer(
    conn: &mut Conn,
    total: usize,
    deadline: Instant,
) -> (Result<Response, String>, usize) {
    let piece = pattern(64 * 1024);
    let (mut sent, mut writing) = (0, true);
    loop {
        if writing && sent < total {
            conn.set_timeout(ms(500));
            let n = piece.len().min(total - sent);
            match conn.send_raw(&piece[..n]) {
                Ok(()) => sent += n,
                Err(_) => writing = false,
            }
        }
        let wait = if writing && sent < total {
            ms(20)
        } else {
            deadline
                .saturating_duration_since(Instant::now())
                .max(ms(1))
        };
        conn.set_timeout(wait);
        match conn.read_response() {
            Ok(resp) => return (Ok(resp), sent),
            Err(e) if timed_out(&e) && Instant::now() < deadline => continue,
            Err(e) => return (Err(e), sent),
        }
    }
}

/// The refusal a CSE sends right after the head of an upload it does not read.
fn early_refusal() -> Vec<u8> {
    answer(
        "413 Payload Too Large",
        &[
            ("Content-Type", "application/json"),
            ("X-M2M-RSC", "5207"),
            ("Connection", "close"),
        ],
        EARLY_BODY,
    )
}

const EARLY_BODY: &[u8] = br#"{"m2m:dbg":"too large for this CSE"}"#;

/// How long the scripted CSE holds the connection after its early answer, not reading.
const HOLD: Duration = Duration::from_secs(5);

/// A 2 MiB upload to a CSE that answers 413 after the head and then holds the connection
/// without reading for `HOLD`. Returns the scenario, the upstream, the client connection, the
/// answer, how long after the head it came and how much of the body had been sent.
fn early_answer() -> (
    Scenario,
    CertKey,
    ScriptedUpstream,
    Conn,
    Response,
    Duration,
    usize,
) {
    const TOTAL: usize = 2 << 20;
    let (s, client, up) = scripted(|r| {
        if r.path == "/early" {
            Reply::new(early_refusal())
                .before_body()
                .then(Then::Close(HOLD))
        } else {
            Reply::new(ok_from(r))
        }
    });
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.send(
        &Request::new("POST", "/early")
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", &TOTAL.to_string())
            .header("X-M2M-Origin", "CAdmin"),
    )
    .unwrap();
    let started = Instant::now();
    let (resp, sent) = send_body_watching_for_answer(&mut conn, TOTAL, started + secs(4));
    let took = started.elapsed();
    let ended_by_then = up.ended();
    let resp = resp.unwrap_or_else(|e| {
        panic!("no answer after {took:?} ({sent} of {TOTAL} body bytes sent): {e}")
    });
    assert!(
        ended_by_then.is_empty(),
        "the answer arrived only after the upstream gave up the connection ({took:?})"
    );
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_eq!(resp.body, EARLY_BODY);
    assert_eq!(resp.header("X-M2M-RSC"), Some("5207"));
    // the rest of the body is still owed: the connection ends with the answer
    assert!(
        says_close(&resp),
        "kept alive with {sent} of {TOTAL} body bytes sent: {:?}",
        resp.headers
    );
    (s, client, up, conn, resp, took, sent)
}

/// A CSE may refuse an upload from its head alone (413) without reading the body, and then
/// stop reading. The answer must reach the client while the CSE still holds the connection:
/// a proxy that only reads the answer after it has written the whole body deadlocks here.
#[test]
fn an_answer_the_upstream_sends_before_reading_the_body_reaches_the_client() {
    let (s, client, up, _conn, resp, took, sent) = early_answer();
    eprintln!(
        "early answer after {took:?} with {sent} body bytes sent, Connection: {:?}",
        resp.header("Connection")
    );
    assert!(up.wait_seen(1, secs(1)));
    assert_eq!(up.seen()[0].path, "/early");
    // still serving, while that upload is still open
    let after = s
        .tls(Some(&client))
        .connect_and_request(s.addr, &Request::get("/after"))
        .expect("the proxy still serves");
    assert_eq!(after.status, 200, "{}", after.text());
    assert!(after.text().starts_with("/after on "), "{}", after.text());
    assert_proven_only(&up, "early answer");
}

/// A server that sends `Connection: close` must initiate the closure after that response
/// (RFC 9112 §9.6), at the latest once the client stops sending: a client told "close" that
/// does not close itself must not hold a connection (and an upstream one) for long.
#[test]
fn after_an_early_answer_saying_close_the_client_connection_is_closed() {
    let (_s, _client, up, mut conn, _resp, _, sent) = early_answer();
    // well before the upstream gives up its connection (HOLD)
    let answered = Instant::now();
    conn.set_timeout(secs(3));
    let closed = conn.expect_closed();
    assert!(
        closed.is_ok(),
        "{:?} after the answer ({sent} body bytes sent, upstream ended {:?}): {closed:?}",
        answered.elapsed(),
        up.ended()
    );
}

// ---------------------------------------------------------------------------------------
// Pooled upstream connections the CSE closed
// ---------------------------------------------------------------------------------------

/// A CSE closes keep-alive connections it finds idle (its own idle timeout, a restart). The
/// proxy must not send the next request into such a connection and fail it: it opens a new
/// one. Both with a FIN and with an RST.
#[test]
fn a_pooled_upstream_connection_the_cse_closed_while_idle_is_not_reused() {
    for (case, end) in [("FIN", Then::Close(ms(100))), ("RST", Then::Reset(ms(100)))] {
        // a request to /end-* leaves its connection to be ended 100 ms after the answer
        let (s, client, up) = scripted(move |r| {
            let reply = Reply::new(ok_from(r));
            if r.path.starts_with("/end") {
                reply.then(end)
            } else {
                reply
            }
        });
        let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
        let first = conn.request(&Request::get("/end-1")).unwrap();
        assert_eq!(
            (first.status, first.text()),
            (200, "/end-1 on 1".into()),
            "{case}"
        );
        assert!(
            up.wait_ended(1, secs(5)),
            "{case}: upstream ended connection 1"
        );

        let get = conn
            .request(&Request::get("/get"))
            .unwrap_or_else(|e| panic!("{case}: GET after the close: {e}"));
        assert_eq!(get.status, 200, "{case}: {}", get.text());
        assert_eq!(get.text(), "/get on 2", "{case}");
        assert_eq!(up.connections(), 2, "{case}");

        // The same for a POST with a body: the close is noticed when the pooled connection is
        // taken, so nothing is sent into it, and the POST goes once on a new connection.
        let end2 = conn.request(&Request::get("/end-2")).unwrap();
        assert_eq!(end2.status, 200, "{case}");
        assert!(
            up.wait_ended(2, secs(5)),
            "{case}: upstream ended connection 2"
        );
        let body = pattern(10_000);
        let post = conn
            .request(&Request::post("/post", body.clone()))
            .unwrap_or_else(|e| panic!("{case}: POST after the close: {e}"));
        assert_eq!(post.status, 200, "{case}: {}", post.text());
        assert_eq!(post.text(), "/post on 3", "{case}");
        let seen = up.seen();
        let posts: Vec<&Seen> = seen.iter().filter(|r| r.path == "/post").collect();
        assert_eq!(posts.len(), 1, "{case}: POST forwarded once");
        assert_eq!(posts[0].body.as_deref(), Some(&body[..]), "{case}");
        assert_proven_only(&up, case);
    }
}

/// The CSE's idle close can cross the next request on the wire: the CSE reads it and closes
/// without an answer. An idempotent request (GET, HEAD, PUT, DELETE, OPTIONS) without a body
/// streamed from the client is sent again on a new connection (RFC 9110 §9.2.2); a POST that
/// reached the socket never is (the CSE may have acted on it: a oneM2M CREATE must not happen
/// twice): the client gets a 502 in oneM2M form, and the CSE saw the POST once.
#[test]
fn a_get_crossing_the_upstream_idle_close_is_retried_on_a_new_connection() {
    // every request after the first on a connection: read its head, close without a word
    let (s, client, up) = scripted(|r| {
        if r.nth > 1 {
            Reply::new(Vec::new())
                .before_body()
                .then(Then::Close(Duration::ZERO))
        } else {
            Reply::new(ok_from(r))
        }
    });
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    let first = conn.request(&Request::get("/a")).unwrap();
    assert_eq!((first.status, first.text()), (200, "/a on 1".into()));
    let get = conn
        .request(&Request::get("/b"))
        .expect("an answer to the GET");
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.text(), "/b on 2");
    assert!(!says_close(&get), "{:?}", get.headers);

    // the same client connection, the same pooled upstream connection (2): a POST crosses
    let body = pattern(10_000);
    let post = conn
        .request(&Request::post("/p", body.clone()))
        .expect("an answer to the POST");
    assert_onem2m_502(&post, "POST crossing an idle close");
    let seen = up.seen();
    let posts: Vec<&Seen> = seen.iter().filter(|r| r.path == "/p").collect();
    assert_eq!(posts.len(), 1, "the POST reached the CSE once: {posts:?}");

    // a DELETE (idempotent, no body) crossing the close of pooled connection 3
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    let warm = conn.request(&Request::get("/c")).unwrap();
    assert_eq!((warm.status, warm.text()), (200, "/c on 3".into()));
    let delete = conn
        .request(&Request::new("DELETE", "/d"))
        .expect("an answer to the DELETE");
    assert_eq!(delete.status, 200, "{}", delete.text());
    assert_eq!(delete.text(), "/d on 4");
    assert_proven_only(&up, "crossing close");
}

// ---------------------------------------------------------------------------------------
// Response framing
// ---------------------------------------------------------------------------------------

/// A CSE may end a response by closing the connection (no Content-Length, not chunked; HTTP/1.0
/// style). The client (HTTP/1.1) gets the whole body chunked, and its connection stays usable.
#[test]
fn a_close_delimited_upstream_response_reaches_the_client_intact() {
    let body = pattern(200 * 1024);
    let b = body.clone();
    let (s, client, up) = scripted(move |r| {
        let version = match r.path.as_str() {
            "/http11" => "HTTP/1.1",
            "/http10" => "HTTP/1.0",
            _ => return Reply::new(ok_from(r)),
        };
        let mut bytes = format!(
            "{version} 200 OK\r\nContent-Type: application/octet-stream\r\nX-M2M-RSC: 2000\r\n\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(&b);
        Reply::new(bytes).then(Then::Close(Duration::ZERO))
    });
    for path in ["/http11", "/http10"] {
        let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
        let resp = conn
            .request(&Request::get(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(resp.body.len(), body.len(), "{path}");
        assert!(resp.body == body, "{path}: body altered");
        assert_eq!(resp.header("X-M2M-RSC"), Some("2000"), "{path}");
        assert_eq!(
            (
                resp.header("Transfer-Encoding"),
                resp.header("Content-Length")
            ),
            (Some("chunked"), None),
            "{path}: {:?}",
            resp.headers
        );
        assert!(!says_close(&resp), "{path}: {:?}", resp.headers);
        let next = conn
            .request(&Request::get("/next"))
            .unwrap_or_else(|e| panic!("{path}: next request on the connection: {e}"));
        assert_eq!(next.status, 200, "{path}");
        assert!(next.text().starts_with("/next on "), "{path}");
    }
    assert_proven_only(&up, "close-delimited");
}

/// Answers without a body: HEAD (with the Content-Length a GET would have), 204, and a 304
/// with a Content-Length. No body bytes may be relayed or waited for, or the client (and the
/// proxy's upstream connection) fall out of step with the next message.
#[test]
fn head_204_and_304_answers_carry_no_body_and_keep_the_connection_in_step() {
    let (s, client, up) = scripted(|r| {
        let ri = r
            .values("X-M2M-RI")
            .first()
            .copied()
            .unwrap_or("")
            .to_owned();
        let head = |status: &str, extra: &str| {
            format!("HTTP/1.1 {status}\r\nX-M2M-RI: {ri}\r\n{extra}\r\n").into_bytes()
        };
        Reply::new(match r.path.as_str() {
            "/head" => head(
                "200 OK",
                "Content-Type: application/json\r\nContent-Length: 1234\r\n",
            ),
            "/204" => head("204 No Content", "X-M2M-RSC: 2002\r\n"),
            "/304" => head(
                "304 Not Modified",
                "ETag: \"v1\"\r\nContent-Length: 1234\r\n",
            ),
            _ => answer(
                "200 OK",
                &[("X-M2M-RI", &ri)],
                format!("plain {ri}").as_bytes(),
            ),
        })
    });
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.set_timeout(secs(5));
    let mut n = 0;
    let mut plain = |conn: &mut Conn, after: &str| {
        n += 1;
        let ri = format!("ri-plain-{n}");
        let resp = conn
            .request(&Request::get("/plain").header("X-M2M-RI", &ri))
            .unwrap_or_else(|e| panic!("the request after {after}: {e}"));
        assert_eq!(resp.status, 200, "after {after}");
        assert_eq!(resp.text(), format!("plain {ri}"), "after {after}");
        assert_eq!(resp.header("X-M2M-RI"), Some(ri.as_str()), "after {after}");
    };

    let head = conn
        .request(&Request::new("HEAD", "/head").header("X-M2M-RI", "ri-head"))
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some("1234"),
        "{:?}",
        head.headers
    );
    assert_eq!(head.header("X-M2M-RI"), Some("ri-head"));
    plain(&mut conn, "HEAD");

    let no_content = conn
        .request(&Request::get("/204").header("X-M2M-RI", "ri-204"))
        .unwrap();
    assert_eq!(no_content.status, 204);
    assert_eq!(no_content.header("X-M2M-RSC"), Some("2002"));
    assert_eq!(
        no_content.header("Transfer-Encoding"),
        None,
        "{:?}",
        no_content.headers
    );
    plain(&mut conn, "204");

    let not_modified = conn
        .request(
            &Request::get("/304")
                .header("If-None-Match", "\"v1\"")
                .header("X-M2M-RI", "ri-304"),
        )
        .unwrap();
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("ETag"), Some("\"v1\""));
    assert_eq!(
        not_modified.header("Transfer-Encoding"),
        None,
        "{:?}",
        not_modified.headers
    );
    plain(&mut conn, "304");
    assert_eq!(up.seen().len(), 6);
    assert_proven_only(&up, "bodiless answers");
}

// ---------------------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------------------

/// Three complete requests in one write: three answers, in order, each to its own request,
/// each forwarded with the proven originator only (RFC 9112 §9.3.2: a server must answer
/// pipelined requests in order; dropping them makes the client retry on a new connection).
#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Scenario::start(ScenarioOpts::default());
    let client = s.client(ClientOpts::uri(PROVEN));
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.set_timeout(secs(5));
    let mut bytes = Vec::new();
    for i in 1..=3 {
        let req = Request::get(&format!("/pipe/{i}"))
            .header("X-M2M-RI", &format!("ri-pipe-{i}"))
            .header("X-M2M-Origin", "CAdmin");
        bytes.extend(req.to_bytes(&conn.host));
    }
    conn.send_raw(&bytes).unwrap();
    for i in 1..=3 {
        let resp = conn
            .read_response()
            .unwrap_or_else(|e| panic!("answer {i}: {e}"));
        assert_eq!(resp.status, 200, "answer {i}");
        assert_eq!(
            resp.header("X-M2M-RI"),
            Some(format!("ri-pipe-{i}").as_str())
        );
        assert_eq!(resp.json()["path"], format!("/pipe/{i}"));
        assert_eq!(resp.json()["origin"], PROVEN);
    }
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 3);
    for (i, r) in seen.iter().enumerate() {
        assert_eq!(r.path, format!("/pipe/{}", i + 1));
        assert_eq!(r.header_values("X-M2M-Origin"), vec![PROVEN]);
    }
}

// ---------------------------------------------------------------------------------------
// Hop-by-hop headers
// ---------------------------------------------------------------------------------------

/// Connection-specific request headers belong to the client's connection (RFC 9110 §7.6.1):
/// the `Connection` options, the fields it nominates, `Keep-Alive`, `Proxy-Connection` and
/// `TE` never reach the CSE; end-to-end fields do. `Connection: close` ends the client's
/// connection after its answer.
#[test]
fn hop_by_hop_request_headers_are_not_forwarded() {
    let s = Scenario::start(ScenarioOpts::default());
    let client = s.client(ClientOpts::uri(PROVEN));
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    let resp = conn
        .request(
            &Request::get("/hop")
                .header("Connection", "keep-alive, X-Hop-Secret")
                .header("X-Hop-Secret", "must-not-pass")
                .header("Keep-Alive", "timeout=30, max=5")
                .header("Proxy-Connection", "keep-alive")
                .header("TE", "trailers")
                .header("X-End-To-End", "kept"),
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let seen = s.upstream.last().unwrap();
    for name in ["X-Hop-Secret", "Keep-Alive", "Proxy-Connection", "TE"] {
        assert!(
            seen.header_values(name).is_empty(),
            "{name} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert!(
        !seen
            .header_values("Connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("x-hop-secret")),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header_values("X-End-To-End"), vec!["kept"]);
    assert_eq!(seen.header_values("X-M2M-Origin"), vec![PROVEN]);

    // still open (keep-alive), then closed after the answer to `Connection: close`
    let last = conn
        .request(&Request::get("/last").header("Connection", "close"))
        .unwrap();
    assert_eq!(last.status, 200);
    assert!(says_close(&last), "{:?}", last.headers);
    conn.set_timeout(secs(5));
    conn.expect_closed().unwrap();
}

/// The same in the other direction (RFC 9110 §7.6.1): the CSE's `Connection` options, the
/// fields they nominate, `Keep-Alive` (the CSE's idle timeout is not the proxy's) and
/// `Proxy-Connection` stay between CSE and proxy; end-to-end fields pass.
#[test]
fn hop_by_hop_response_headers_are_not_relayed() {
    let (s, client, up) = scripted(|r| {
        Reply::new(answer(
            "200 OK",
            &[
                ("Connection", "keep-alive, X-Hop-Resp"),
                ("X-Hop-Resp", "must-not-pass"),
                ("Keep-Alive", "timeout=5, max=100"),
                ("Proxy-Connection", "keep-alive"),
                ("X-End-To-End", "kept"),
                (
                    "X-M2M-RI",
                    r.values("X-M2M-RI").first().copied().unwrap_or(""),
                ),
            ],
            b"ok",
        ))
    });
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    let hop = conn
        .request(&Request::get("/hop").header("X-M2M-RI", "ri-hop"))
        .unwrap();
    assert_eq!((hop.status, hop.text()), (200, "ok".into()));
    for name in ["X-Hop-Resp", "Keep-Alive", "Proxy-Connection"] {
        assert_eq!(
            hop.header(name),
            None,
            "{name} reached the client: {:?}",
            hop.headers
        );
    }
    assert!(
        !hop.header_all("Connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("x-hop-resp")),
        "{:?}",
        hop.headers
    );
    assert_eq!(hop.header("X-End-To-End"), Some("kept"));
    assert_eq!(hop.header("X-M2M-RI"), Some("ri-hop"));
    assert_proven_only(&up, "hop-by-hop response");
}

/// A response with both `Transfer-Encoding: chunked` and `Content-Length` (a response-splitting
/// shape) is relayed with one framing, the chunked one, Content-Length dropped (RFC 9112
/// §6.3), and the client connection stays in step.
#[test]
fn a_response_with_transfer_encoding_and_content_length_keeps_one_framing() {
    let (s, client, up) = scripted(|r| {
        Reply::new(match r.path.as_str() {
            "/te-cl" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
            _ => ok_from(r),
        })
    });
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.set_timeout(secs(5));
    let both = conn.request(&Request::get("/te-cl")).unwrap();
    assert_eq!(both.status, 200);
    assert_eq!(both.header("Content-Length"), None, "{:?}", both.headers);
    assert_eq!(
        both.header("Transfer-Encoding"),
        Some("chunked"),
        "{:?}",
        both.headers
    );
    assert_eq!(both.text(), "hello world");
    assert!(!says_close(&both), "{:?}", both.headers);
    let next = conn.request(&Request::get("/next")).unwrap();
    assert_eq!(next.status, 200);
    assert!(next.text().starts_with("/next on "), "{}", next.text());
    assert_proven_only(&up, "TE + CL response");
}

// ---------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------

/// On SIGTERM a keep-alive connection waiting for its next request is closed at once (its
/// client reconnects elsewhere instead of sending into a dying process), a request in flight
/// is answered, its connection closed after the answer, and the process exits 0.
#[test]
fn sigterm_closes_idle_keep_alive_connections_at_once_and_lets_busy_ones_finish() {
    let mut s = Scenario::start(ScenarioOpts {
        grace_period: "5s".into(),
        ..Default::default()
    });
    let client = s.client(ClientOpts::uri(PROVEN));
    let mut idle = s.tls(Some(&client)).connect(s.addr).unwrap();
    assert_eq!(idle.request(&Request::get("/idle")).unwrap().status, 200);

    s.upstream.set_delay(ms(1500));
    let (tls, addr) = (s.tls(Some(&client)), s.addr);
    let busy = thread::spawn(move || -> Result<(Response, Conn), String> {
        let mut conn = tls.connect(addr)?;
        let resp = conn.request(&Request::get("/busy"))?;
        Ok((resp, conn))
    });
    assert!(
        s.upstream.wait_count(2, secs(5)),
        "the busy request reached the upstream"
    );
    let signalled = Instant::now();
    assert!(s.proxy.signal("TERM"));

    idle.set_timeout(secs(4));
    let closed = idle.expect_closed();
    let idle_closed_after = signalled.elapsed();
    assert!(
        closed.is_ok(),
        "idle connection after SIGTERM ({idle_closed_after:?}): {closed:?}"
    );
    assert!(
        idle_closed_after < secs(3),
        "idle connection closed only after {idle_closed_after:?} (grace period 5 s)"
    );

    let (resp, mut conn) = busy
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["origin"], PROVEN);
    // answered during the grace period: the answer says so (issue 28)
    assert_eq!(resp.header("Connection"), Some("close"));
    // once answered it is idle too
    conn.set_timeout(secs(3));
    conn.expect_closed()
        .expect("the busy connection is closed after its answer");

    let status = s.proxy.wait_exit(secs(15)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", s.proxy.stderr_text());
    eprintln!(
        "idle connection closed {idle_closed_after:?} after SIGTERM, exit after {:?}",
        signalled.elapsed()
    );
}
