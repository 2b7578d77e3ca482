//! The oneM2M WebSocket binding through the real proxy over TLS: the `fr` of every request
//! primitive is held to the proven originator, in JSON and CBOR, whatever the framing.

mod common;

use std::time::Duration;

use common::scenario::{Scenario, ScenarioOpts};
use common::{ClientOpts, Conn, Request, WS_BINARY, WS_CLOSE, WS_CONT, WS_PING, WS_PONG, WS_TEXT};
use serde_json::{json, Value};

const PROVEN: &str = "Cae-ws";

fn start(mode: &str, extra: &str) -> Scenario {
    Scenario::start(ScenarioOpts {
        originator: format!("mode: {mode}"),
        extra: extra.into(),
        ..Default::default()
    })
}

/// A TLS connection upgraded to a oneM2M WebSocket with `protocol`, as the proven AE.
fn open(s: &Scenario, protocol: &str) -> Conn {
    let client = s.client(ClientOpts::uri(PROVEN));
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let resp = conn
        .request(&Request::websocket("/ws", &[protocol]))
        .unwrap();
    assert_eq!(resp.status, 101, "{}", resp.text());
    assert_eq!(resp.header("Sec-WebSocket-Protocol"), Some(protocol));
    conn
}

/// The next data message, answering nothing; panics on anything else.
fn recv_message(conn: &mut Conn) -> (u8, Vec<u8>) {
    let (opcode, payload, fin) = conn.ws_recv().unwrap();
    assert!(
        fin,
        "the proxy and the echo upstream send unfragmented messages"
    );
    assert!(
        opcode == WS_TEXT || opcode == WS_BINARY,
        "expected a data message, got opcode {opcode}: {:?}",
        String::from_utf8_lossy(&payload)
    );
    (opcode, payload)
}

fn recv_json(conn: &mut Conn) -> Value {
    let (opcode, payload) = recv_message(conn);
    assert_eq!(opcode, WS_TEXT);
    serde_json::from_slice(&payload).unwrap()
}

/// The close frame the proxy sends: (code, reason).
fn recv_close(conn: &mut Conn) -> (u16, String) {
    let (opcode, payload, _) = conn.ws_recv().unwrap();
    assert_eq!(opcode, WS_CLOSE, "{:?}", String::from_utf8_lossy(&payload));
    assert!(payload.len() >= 2);
    (
        u16::from_be_bytes([payload[0], payload[1]]),
        String::from_utf8_lossy(&payload[2..]).into_owned(),
    )
}

/// What the CSE received, as JSON values.
fn cse_received_json(s: &Scenario) -> Vec<Value> {
    s.upstream
        .ws_messages()
        .iter()
        .map(|(_, p)| serde_json::from_slice(p).unwrap())
        .collect()
}

fn metric(s: &Scenario, line_start: &str) -> f64 {
    let (_, text) = s.proxy.admin_get("/metrics").unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
}

#[test]
fn overwrite_sets_fr_to_the_proven_originator_in_the_proxys_own_encoding() {
    let s = start("overwrite", "");
    let mut conn = open(&s, "oneM2M.json");
    let spoofed =
        br#"{"op":4, "to":"/id-in/cse-in/CAdmin/cnt", "fr":"CAdmin","rqi":"del-1","rvi":"3"}"#;
    conn.ws_send(WS_TEXT, spoofed, true).unwrap();
    let echoed = recv_message(&mut conn).1;
    assert_eq!(
        String::from_utf8(echoed).unwrap(),
        r#"{"op":4,"to":"\/id-in\/cse-in\/CAdmin\/cnt","fr":"Cae-ws","rqi":"del-1","rvi":"3"}"#,
        "fr in its place; the rest as the proxy decoded it, canonically re-encoded"
    );

    // no fr at all: the proven one is added
    conn.ws_send(
        WS_TEXT,
        br#"{"op":2,"to":"/id-in/cse-in","rqi":"r2","rvi":"3"}"#,
        true,
    )
    .unwrap();
    assert_eq!(recv_json(&mut conn)["fr"], PROVEN);

    // the proven originator itself: the same primitive, never the client's bytes
    let own = br#"{"op":2, "to":"/id-in/cse-in","fr":"Cae-ws","rqi":"r3","rvi":"3"}"#;
    conn.ws_send(WS_TEXT, own, true).unwrap();
    assert_eq!(
        recv_message(&mut conn).1,
        br#"{"op":2,"to":"\/id-in\/cse-in","fr":"Cae-ws","rqi":"r3","rvi":"3"}"#.to_vec()
    );

    let seen = cse_received_json(&s);
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|m| m["fr"] == PROVEN), "{seen:?}");
    assert_eq!(
        metric(
            &s,
            r#"m2m_auth_proxy_websocket_messages_total{direction="to_cse",outcome="rewritten"}"#
        ),
        2.0
    );
}

#[test]
fn verify_answers_a_foreign_fr_with_4103_on_the_same_connection_and_forwards_nothing() {
    let s = start("verify", "websocket:\n  cse_id: /id-in\n");
    let mut conn = open(&s, "oneM2M.json");
    conn.ws_send(
        WS_TEXT,
        br#"{"op":4,"to":"/id-in/cse-in/Cother","fr":"Cother","rqi":"steal-1","rvi":"3"}"#,
        true,
    )
    .unwrap();
    let answer = recv_json(&mut conn);
    assert_eq!(answer["rsc"], 4103, "{answer}");
    assert_eq!(answer["rqi"], "steal-1");
    assert_eq!(answer["rvi"], "3");
    assert_eq!(answer["to"], "Cother");
    assert_eq!(answer["fr"], "/id-in");
    assert!(answer["pc"]["m2m:dbg"]
        .as_str()
        .unwrap()
        .contains("not allowed"));

    // the connection stays usable: the AE's own fr goes through
    let own = br#"{"op":2,"to":"/id-in/cse-in","fr":"Cae-ws","rqi":"ok-1","rvi":"3"}"#;
    conn.ws_send(WS_TEXT, own, true).unwrap();
    assert_eq!(
        recv_json(&mut conn),
        serde_json::from_slice::<Value>(own).unwrap()
    );
    let seen = cse_received_json(&s);
    assert_eq!(
        seen.len(),
        1,
        "the refused primitive never reached the CSE: {seen:?}"
    );
    assert_eq!(seen[0]["rqi"], "ok-1");

    assert_eq!(
        metric(
            &s,
            r#"m2m_auth_proxy_websocket_originator_refusals_total{reason="not_allowed"}"#
        ),
        1.0
    );
    let log = s
        .proxy
        .wait_stdout("websocket_refused", Duration::from_secs(5))
        .unwrap_or_default();
    let refusal: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "websocket_refused")
        .unwrap_or_else(|| panic!("no refusal line in the access log:\n{log}"));
    assert_eq!(refusal["request_id"], "steal-1");
    assert_eq!(refusal["originator"], PROVEN);
    let fields = refusal.as_object().unwrap();
    assert!(
        fields.values().all(|v| v != "Cother"),
        "the refused fr itself is not logged: {refusal}"
    );
}

#[test]
fn fragments_with_a_ping_between_them_are_judged_as_one_message() {
    let s = start("overwrite", "");
    let mut conn = open(&s, "oneM2M.json");
    let msg = br#"{"op":1,"to":"/id-in/cse-in","fr":"CAdmin","rqi":"frag","rvi":"3","ty":2,"pc":{"m2m:ae":{"rn":"x"}}}"#;
    let (a, rest) = msg.split_at(10);
    let (b, c) = rest.split_at(30);
    conn.ws_send(WS_TEXT, a, false).unwrap();
    conn.ws_send(WS_PING, b"between", true).unwrap();
    conn.ws_send(WS_CONT, b, false).unwrap();
    conn.ws_send(WS_CONT, c, true).unwrap();
    // the ping went on to the CSE at once; its pong comes back through the proxy
    let (opcode, payload, _) = conn.ws_recv().unwrap();
    assert_eq!((opcode, payload.as_slice()), (WS_PONG, &b"between"[..]));
    let echoed = recv_json(&mut conn);
    assert_eq!(echoed["fr"], PROVEN);
    assert_eq!(echoed["pc"]["m2m:ae"]["rn"], "x");
    assert_eq!(cse_received_json(&s).len(), 1);
}

#[test]
fn cbor_primitives_are_rewritten_and_refused_in_cbor() {
    let cbor = |v: &Value| {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    };
    let decode = |b: &[u8]| -> Value { ciborium::from_reader(b).unwrap() };

    let s = start("overwrite", "");
    let mut conn = open(&s, "oneM2M.cbor");
    let spoofed = json!({"op": 2, "to": "/id-in/cse-in", "fr": "CAdmin", "rqi": "c1", "rvi": "3"});
    conn.ws_send(WS_BINARY, &cbor(&spoofed), true).unwrap();
    let (opcode, echoed) = recv_message(&mut conn);
    assert_eq!(opcode, WS_BINARY);
    let mut expected = spoofed.clone();
    expected["fr"] = json!(PROVEN);
    assert_eq!(decode(&echoed), expected);
    drop(conn);

    let s = start("verify", "");
    let mut conn = open(&s, "oneM2M.cbor");
    let spoofed = json!({"op": 2, "to": "/id-in/cse-in", "fr": "CAdmin", "rqi": "c2"});
    conn.ws_send(WS_BINARY, &cbor(&spoofed), true).unwrap();
    let (opcode, answer) = recv_message(&mut conn);
    assert_eq!(opcode, WS_BINARY);
    let answer = decode(&answer);
    assert_eq!(answer["rsc"], 4103, "{answer}");
    assert_eq!(answer["rqi"], "c2");
    assert_eq!(answer["fr"], "/id-in", "CSE-ID taken from the request's to");
    assert!(s.upstream.ws_messages().is_empty());
}

#[test]
fn malformed_traffic_closes_the_connection_with_the_right_code() {
    let s = start("overwrite", "websocket:\n  max_message: 1024\n");
    let cases = [
        (
            "binary frame on oneM2M.json",
            "oneM2M.json",
            (WS_BINARY, br#"{"op":2,"to":"/id-in","rqi":"1"}"#.to_vec()),
            1003,
        ),
        (
            "text frame on oneM2M.cbor",
            "oneM2M.cbor",
            (WS_TEXT, br#"{"op":2,"to":"/id-in","rqi":"1"}"#.to_vec()),
            1003,
        ),
        (
            "message over websocket.max_message",
            "oneM2M.json",
            (WS_TEXT, vec![b' '; 2000]),
            1009,
        ),
        (
            "text that is not UTF-8",
            "oneM2M.json",
            (WS_TEXT, b"{\"op\":2,\"to\":\"\xff\"}".to_vec()),
            1007,
        ),
    ];
    for (case, protocol, (opcode, payload), code) in cases {
        let mut conn = open(&s, protocol);
        conn.ws_send(opcode, &payload, true).unwrap();
        let (got, reason) = recv_close(&mut conn);
        assert_eq!(got, code, "{case}: {reason}");
    }
    // an unmasked client frame is a protocol error
    let mut conn = open(&s, "oneM2M.json");
    conn.send_raw(&common::client::ws_frame(WS_TEXT, b"{}", true, None))
        .unwrap();
    assert_eq!(recv_close(&mut conn).0, 1002);

    assert!(
        s.upstream.ws_messages().is_empty(),
        "nothing reached the CSE"
    );
    assert_eq!(
        metric(
            &s,
            r#"m2m_auth_proxy_websocket_closed_by_proxy_total{code="1003"}"#
        ),
        2.0
    );
}

/// A message the proxy cannot decode strictly is a bad request, answered as a CSE answers one
/// (4000, its `rqi` when that can be read), and the connection goes on.
#[test]
fn an_undecodable_primitive_is_answered_4000_on_the_same_connection() {
    let s = start("overwrite", "websocket:\n  cse_id: /id-in\n");
    let mut conn = open(&s, "oneM2M.json");
    let cases: [(&str, &[u8], Option<&str>); 5] = [
        ("not JSON", b"hello there", None),
        (
            "neither op nor rsc",
            br#"{"fr":"CAdmin","to":"/id-in","rqi":"n1"}"#,
            Some("n1"),
        ),
        (
            "a comment",
            br#"{"op":2,"to":"/id-in","rqi":"n2"/* x */}"#,
            None,
        ),
        (
            "a nested duplicate",
            br#"{"op":2,"rqi":"n3","pc":{"m2m:ae":{"rn":"a","rn":"b"}}}"#,
            Some("n3"),
        ),
        (
            "a lone surrogate",
            br#"{"op":2,"rqi":"n4","to":"\ud800"}"#,
            Some("n4"),
        ),
    ];
    for (case, msg, rqi) in cases {
        conn.ws_send(WS_TEXT, msg, true).unwrap();
        let answer = recv_json(&mut conn);
        assert_eq!(answer["rsc"], 4000, "{case}: {answer}");
        assert_eq!(answer["fr"], "/id-in", "{case}");
        assert!(
            answer.get("to").is_none(),
            "{case}: the fr of what could not be read is not echoed"
        );
        assert_eq!(answer["rqi"].as_str(), rqi, "{case}: {answer}");
    }
    let own = br#"{"op":2,"to":"/id-in/cse-in","fr":"Cae-ws","rqi":"ok","rvi":"3"}"#;
    conn.ws_send(WS_TEXT, own, true).unwrap();
    assert_eq!(recv_json(&mut conn)["rqi"], "ok", "the connection goes on");
    assert_eq!(s.upstream.ws_messages().len(), 1, "only the decodable one");
    assert_eq!(
        metric(
            &s,
            r#"m2m_auth_proxy_websocket_messages_total{direction="to_cse",outcome="invalid"}"#
        ),
        5.0
    );
}

#[test]
fn an_upgrade_without_a_onem2m_subprotocol_is_refused_unless_opaque_is_allowed() {
    let s = start("overwrite", "");
    let client = s.client(ClientOpts::uri(PROVEN));
    for protocols in [&[][..], &["chat"][..], &["onem2m.json"][..]] {
        let resp = s
            .tls(Some(&client))
            .connect_and_request(s.addr, &Request::websocket("/ws", protocols))
            .unwrap();
        assert_eq!(resp.status, 400, "{protocols:?}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4000"));
    }
    assert_eq!(s.upstream.count(), 0);

    let s = start("overwrite", "websocket:\n  allow_opaque: true\n");
    let mut conn = s.tls(Some(&client_of(&s))).connect(s.addr).unwrap();
    let resp = conn.request(&Request::websocket("/ws", &["chat"])).unwrap();
    assert_eq!(resp.status, 101);
    let msg = br#"{"op":2,"fr":"CAdmin","rqi":"opaque"}"#;
    conn.ws_send(WS_TEXT, msg, true).unwrap();
    assert_eq!(
        recv_message(&mut conn).1,
        msg.to_vec(),
        "opaque: not inspected"
    );
}

fn client_of(s: &Scenario) -> common::CertKey {
    s.client(ClientOpts::uri(PROVEN))
}

#[test]
fn offered_extensions_and_other_subprotocols_never_reach_the_cse() {
    let s = start("overwrite", "");
    let client = client_of(&s);
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    let resp = conn
        .request(
            &Request::websocket("/ws", &["chat", "oneM2M.json"])
                .header("Sec-WebSocket-Extensions", "permessage-deflate"),
        )
        .unwrap();
    assert_eq!(resp.status, 101);
    let upgrade = s.upstream.last().unwrap();
    assert_eq!(
        upgrade.header_values("Sec-WebSocket-Protocol"),
        vec!["oneM2M.json"]
    );
    assert!(upgrade.header_values("Sec-WebSocket-Extensions").is_empty());
}

#[test]
fn a_real_websocket_client_talks_to_the_cse_through_the_proxy() {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;

    let s = start("overwrite", "");
    let client = client_of(&s);
    let conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    let stream = conn.into_tls_stream();
    let mut request = format!("wss://localhost:{}/ws", s.addr.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "oneM2M.json".parse().unwrap());
    let (mut ws, resp) = tungstenite::client(request, stream).expect("WebSocket handshake");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        let msg = json!({"op": 2, "to": "/id-in/cse-in", "fr": "CAdmin", "rqi": format!("t{i}"), "rvi": "3"});
        ws.send(Message::text(msg.to_string())).unwrap();
        let echoed = loop {
            match ws.read().unwrap() {
                Message::Text(t) => break serde_json::from_str::<Value>(t.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(echoed["fr"], PROVEN);
        assert_eq!(echoed["rqi"], format!("t{i}"));
    }
    ws.close(None).unwrap();
    // the close handshake completes through the proxy
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => break,
            Ok(_) => continue,
            Err(e) => panic!("close: {e}"),
        }
    }
    assert_eq!(s.upstream.ws_messages().len(), 20);
}

#[test]
fn a_cse_that_picks_no_onem2m_subprotocol_gets_no_tunnel_and_anonymous_clients_get_none() {
    use common::wiretap::{Fault, FaultyUpstream};

    let mut s = Scenario::start(ScenarioOpts {
        client_cert: "optional".into(),
        extra_auth: "anonymous: allow".into(),
        ..Default::default()
    });
    // anonymous access is allowed for HTTP, but a oneM2M WebSocket needs an originator
    let resp = s
        .tls(None)
        .connect_and_request(s.addr, &Request::websocket("/ws", &["oneM2M.json"]))
        .unwrap();
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(s.upstream.count(), 0);

    // an upstream answering 101 without choosing oneM2M.json: 502, nothing tunneled
    let port = s.upstream.port();
    s.stop_upstream();
    let upstream = FaultyUpstream::start_on(port, Fault::SwitchProtocols);
    let client = client_of(&s);
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    let resp = conn
        .request(&Request::websocket("/ws", &["oneM2M.json"]).header("X-M2M-RI", "ws-1"))
        .unwrap();
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.header("X-M2M-RSC"), Some("5103"));
    assert_eq!(resp.header("X-M2M-RI"), Some("ws-1"));
    assert!(
        resp.text().contains("WebSocket subprotocol"),
        "{}",
        resp.text()
    );
    let _ = conn.ws_send(WS_TEXT, br#"{"op":2,"fr":"CAdmin","rqi":"x"}"#, true);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        upstream.tunneled().is_empty(),
        "nothing passed after the refused 101"
    );
}

/// Issue 28: at SIGTERM a proxied WebSocket was cut at the end of the grace period with a plain
/// TCP close. Now the client and the CSE each get a close frame 1001 (going away) at once.
#[test]
fn sigterm_sends_close_1001_to_the_client_and_to_the_cse() {
    let mut s = Scenario::start(ScenarioOpts {
        originator: "mode: overwrite".into(),
        grace_period: "5s".into(),
        ..Default::default()
    });
    let mut conn = open(&s, "oneM2M.json");
    let msg = br#"{"op":2,"to":"/id-in/cse-in","fr":"Cae-ws","rqi":"r1","rvi":"3"}"#;
    conn.ws_send(WS_TEXT, msg, true).unwrap();
    // the proxy forwards its own encoding of what it decoded: compared as JSON
    let sent: Value = serde_json::from_slice(msg).unwrap();
    assert_eq!(recv_json(&mut conn), sent);

    let signalled = std::time::Instant::now();
    assert!(s.proxy.signal("TERM"));
    let (code, reason) = recv_close(&mut conn);
    assert_eq!(code, 1001, "{reason}");
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "the close came at once, not at the end of the grace period ({:?})",
        signalled.elapsed()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let cse_codes = loop {
        let codes: Vec<u16> = s
            .upstream
            .ws_closes()
            .iter()
            .filter(|p| p.len() >= 2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect();
        if !codes.is_empty() || std::time::Instant::now() > deadline {
            break codes;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(cse_codes, vec![1001], "the CSE got a close frame 1001");
    // the client answers the close; the proxy exits cleanly
    let _ = conn.ws_send(WS_CLOSE, &1001u16.to_be_bytes(), true);
    let status = s.proxy.wait_exit(Duration::from_secs(15)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", s.proxy.stderr_text());
}

/// Issue 28: 1 000 connections each sending 1 MiB minus one byte of a frame took 1.1 GiB. What
/// the proxy buffers counts against `limits.buffer_budget`: a partial frame beyond it closes
/// its connection with 1013 (try again later), and a finished message gives its bytes back.
#[test]
fn partial_frames_beyond_the_buffer_budget_are_refused_with_1013() {
    const FRAME: usize = 400 * 1024;
    let s = start(
        "overwrite",
        "limits:\n  buffer_budget: 1048576\nwebsocket:\n  max_message: 524288\n",
    );
    let buffered = "m2m_auth_proxy_buffered_bytes";
    let mut msg =
        br#"{"op":2,"to":"/id-in/cse-in","fr":"Cae-ws","rqi":"big","rvi":"3","pc":""#.to_vec();
    msg.resize(FRAME - 3, b'x');
    msg.extend_from_slice(b"\"}");
    msg.push(b' ');
    assert_eq!(msg.len(), FRAME);
    let frame = common::client::ws_frame(WS_TEXT, &msg, true, Some([1, 2, 3, 4]));
    let (almost, last) = frame.split_at(frame.len() - 1);

    // two partial frames fit in 1 MiB (each waits for its last byte) ...
    let mut held = Vec::new();
    for n in 1..=2 {
        let mut conn = open(&s, "oneM2M.json");
        conn.send_raw(almost).unwrap();
        let want = (n * FRAME) as f64;
        assert!(
            common::creds::wait_metric(&s.proxy, buffered, want) >= want,
            "partial frame {n} not buffered"
        );
        held.push(conn);
    }
    // ... a third does not: closed with 1013, nothing forwarded
    let mut third = open(&s, "oneM2M.json");
    let _ = third.send_raw(almost);
    let (code, reason) = recv_close(&mut third);
    assert_eq!(code, 1013, "{reason}");
    assert_eq!(
        metric(
            &s,
            r#"m2m_auth_proxy_buffer_budget_refusals_total{what="websocket"}"#
        ),
        1.0
    );
    assert!(metric(&s, buffered) <= 1048576.0);

    // the first one completes: forwarded, echoed, and its bytes given back
    // (the proxy's re-encoding, compared as JSON: `/` escaped, the trailing space gone)
    let sent: Value = serde_json::from_slice(&msg).unwrap();
    held[0].send_raw(last).unwrap();
    assert_eq!(recv_json(&mut held[0]), sent);
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&s, buffered) > 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "buffers not given back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut again = open(&s, "oneM2M.json");
    again.send_raw(&frame).unwrap();
    assert_eq!(recv_json(&mut again), sent);
}

/// Issue 28: a peer that stops reading must not hold its connection (and the bytes buffered
/// for it). The client here never reads while the CSE echoes what it sends: once the buffers
/// between them are full, the proxy's write to the client times out after
/// `websocket.write_timeout` and the connection ends (its upstream side too).
#[test]
fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let s = start("overwrite", "websocket:\n  write_timeout: 1s\n");
    let conn = open(&s, "oneM2M.json");
    let mut tls = conn.into_tls_stream();
    // small receive buffer: the echoes fill it soon
    {
        use std::os::fd::AsRawFd;
        let small: libc::c_int = 16 * 1024;
        // SAFETY: a valid socket and option value
        unsafe {
            libc::setsockopt(
                tls.get_ref().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let mut msg = br#"{"op":2,"to":"/id-in/cse-in","rqi":"w","rvi":"3","pc":""#.to_vec();
    msg.resize(256 * 1024 - 2, b'w');
    msg.extend_from_slice(b"\"}");
    let frame = common::client::ws_frame(WS_TEXT, &msg, true, Some([9, 8, 7, 6]));
    let upstream_before = s.upstream.live_connections();
    assert!(upstream_before >= 1);
    // sends until the proxy stops reading, then fails once it has closed the connection
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(60) {
        use std::io::Write;
        if tls.write_all(&frame).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent >= 4, "only {sent} messages went out before the end");
    // the client may see its write fail before the proxy's line is written (a loaded machine)
    let ended_by_timeout = || {
        let log = s.proxy.stderr_text();
        log.to_lowercase().contains("timed out") || log.contains("WriteTimedout")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ended_by_timeout() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ended_by_timeout(),
        "the connection did not end by the write timeout:\n{}",
        s.proxy.stderr_text()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.upstream.live_connections() >= upstream_before {
        assert!(
            std::time::Instant::now() < deadline,
            "the CSE side stayed open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 27, item 2: the gate starts at the 101, so an upgrade request may carry no body (it
/// would reach the CSE unchecked); bytes the client sends after the head, before the 101, wait
/// for the gate.
#[test]
fn an_upgrade_request_with_a_body_is_refused_and_early_frames_wait_for_the_gate() {
    let s = start("overwrite", "");
    let spoofed = common::client::ws_frame(
        WS_TEXT,
        br#"{"op":4,"to":"/id-in/cse-in/x","fr":"CAdmin","rqi":"early"}"#,
        true,
        Some([1, 2, 3, 4]),
    );
    let host = s.addr.to_string();
    let with_length = Request::websocket("/ws", &["oneM2M.json"])
        .header("Content-Length", &spoofed.len().to_string())
        .body(spoofed.clone());
    let chunked = Request::websocket("/ws", &["oneM2M.json"]).chunked(&[&spoofed]);
    let identity = Request::websocket("/ws", &["oneM2M.json"])
        .header("Transfer-Encoding", "identity")
        .header("Content-Length", "0");
    // (a Transfer-Encoding other than chunked is refused by the parser: oneM2M form too)
    for (case, req, rsc) in [
        ("Content-Length", with_length, Some("4000")),
        ("chunked", chunked, Some("4000")),
        ("Transfer-Encoding: identity", identity, Some("4000")),
    ] {
        let mut conn = s.tls(Some(&client_of(&s))).connect(s.addr).unwrap();
        conn.send_raw(&req.to_bytes(&host)).unwrap();
        let resp = conn.read_response().unwrap();
        assert_eq!(resp.status, 400, "{case}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), rsc, "{case}");
    }
    assert_eq!(s.upstream.count(), 0, "nothing was forwarded");

    // a frame right behind the head, while the CSE takes its time to answer: judged by the
    // gate once the upgrade is done, never passed on raw
    s.upstream.set_delay(Duration::from_millis(300));
    let mut conn = s.tls(Some(&client_of(&s))).connect(s.addr).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let mut bytes = Request::websocket("/ws", &["oneM2M.json"]).to_bytes(&host);
    bytes.extend_from_slice(&spoofed);
    conn.send_raw(&bytes).unwrap();
    let resp = conn.read_response().unwrap();
    assert_eq!(resp.status, 101, "{}", resp.text());
    let echoed = recv_json(&mut conn);
    assert_eq!(echoed["fr"], PROVEN, "{echoed}");
    assert_eq!(echoed["rqi"], "early");
    let seen = cse_received_json(&s);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["fr"], PROVEN);
}
