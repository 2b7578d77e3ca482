//! Parser differentials (issue 26, classes 1-3) over real TLS: what the proxy decided on must
//! be what a CSE acts on. Every message the proxy lets through is read again the way a lenient
//! CSE reads it (`common::lenient`, ACME's parsers) and that reading must equal the proxy's
//! decision; the reproductions of the issue are refused or neutralised. The WebSocket ones go
//! over a real WebSocket (tungstenite, TLS, through the proxy to the echo upstream).

mod common;

use std::net::TcpStream;
use std::time::Duration;

use ciborium::Value as Cbor;
use openssl::ssl::SslStream;
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use common::lenient::{self, Reading};
use common::scenario::{Scenario, ScenarioOpts};
use common::{ClientOpts, Conn, Request, Response};

const PROVEN: &str = "Csensor1";

/// The setting of the issue's reproductions: rules that keep the sensor away from `mgmt`, from
/// deletes and from creating containers.
const RULES: &str = "cse: {id: \"/id-in\", name: \"cse-in\"}
authorization:
  default: allow
  rules:
    - name: mgmt-off-limits
      targets: [\"/cse-in/mgmt\", \"/cse-in/mgmt/**\"]
      effect: deny
    - name: no-deletes
      operations: [delete]
      effect: deny
    - name: no-containers
      operations: [create]
      resource_types: [container]
      effect: deny
";

fn start() -> Scenario {
    Scenario::start(ScenarioOpts {
        originator: "mode: overwrite".into(),
        extra: RULES.into(),
        ..Default::default()
    })
}

fn conn(s: &Scenario) -> Conn {
    let client = s.client(ClientOpts::uri(PROVEN));
    let conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    conn
}

fn reading(op: u64, to: &str, ty: Option<u64>, method: Option<&str>) -> Reading {
    Reading {
        op: Some(op),
        to: Some(to.into()),
        fr: Some(PROVEN.into()),
        ty,
        method: method.map(str::to_owned),
    }
}

// ---------------------------------------------------------------------------------------------
// the lenient reader itself: it must reproduce the attacks, or agreeing with it proves nothing

#[test]
fn the_lenient_reader_reproduces_the_issues_forgeries() {
    let forged = r#"{"op":2,"to":"cse-in/sensorApp","rqi":"x","rvi":"3","a":"\\","b":"/*","n":{"c":"*/","op":4,"to":"cse-in/mgmt","fr":"CAdmin","d":"/*"},"e":"*/"}"#;
    let r = lenient::read_json(forged.as_bytes()).unwrap();
    assert_eq!(
        (r.op, r.to.as_deref(), r.fr.as_deref()),
        (Some(4), Some("cse-in/mgmt"), Some("CAdmin"))
    );
    assert_eq!(
        lenient::strip_comments(r#"{"a":"//x"} // c"#),
        r#"{"a":"//x"} "#
    );

    let r = lenient::read_cbor(&cbor_tagged_keys(55799)).unwrap();
    assert_eq!((r.op, r.fr.as_deref()), (Some(4), Some("CAdmin")));

    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let two = h(&[
        ("Content-Type", "application/json"),
        ("Content-Type", "application/json;ty=3"),
    ]);
    let r = lenient::read_http("post", "/cse-in/x", &two).unwrap();
    assert_eq!(
        (r.op, r.ty, r.method.as_deref()),
        (Some(1), Some(3), Some("POST"))
    );
    let odd = h(&[("Content-Type", "application/json;charset=x;ty=3")]);
    assert!(
        lenient::read_http("POST", "/x", &odd).is_none(),
        "ACME refuses it"
    );
    let upper = h(&[("Content-Type", "Application/JSON;ty=3")]);
    let r = lenient::read_http("POST", "/x", &upper).unwrap();
    assert_eq!(
        (r.op, r.ty),
        (Some(1), None),
        "a create without a type it can read"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP (class 3)

/// Sends raw request bytes on a new connection; the proxy's answer.
fn raw(s: &Scenario, bytes: &[u8]) -> Response {
    let mut c = conn(s);
    c.send_raw(bytes).unwrap();
    c.read_response().unwrap()
}

#[test]
fn http_operation_confusion_is_refused_before_forwarding() {
    let s = start();
    let host = s.addr.to_string();
    let body = br#"{"m2m:cnt":{"rn":"stolen"}}"#;
    // two Content-Type fields: the proxy read the first (a notify), ACME the last (a create)
    let two = Request::post("/cse-in/sensorApp", body.to_vec())
        .header("Content-Type", "application/json")
        .header("Content-Type", "application/json;ty=3");
    // a non-ASCII byte: `ty` unreadable for the proxy, read by the CSE
    let mut high = Request::post("/cse-in/sensorApp", body.to_vec())
        .header("Content-Type", "application/json;@;ty=3")
        .to_bytes(&host);
    let at = high.iter().position(|b| *b == b'@').unwrap();
    high[at] = 0x80;
    for (case, resp) in [
        ("two Content-Types", raw(&s, &two.to_bytes(&host))),
        ("a 0x80 in Content-Type", raw(&s, &high)),
    ] {
        assert_eq!(resp.status, 400, "{case}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4000"), "{case}");
    }
    // lowercase methods match no rule; ACME upper-cases them. PATCH is ACME's DELETE on 1.0
    for (method, version) in [
        ("delete", "1.1"),
        ("post", "1.1"),
        ("Delete", "1.1"),
        ("PATCH", "1.0"),
        ("PATCH", "1.1"),
    ] {
        let bytes = format!(
            "{method} /cse-in/mgmt HTTP/{version}\r\nHost: {host}\r\nX-M2M-RI: m-{method}\r\nContent-Type: application/json;ty=3\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let resp = raw(&s, bytes.as_bytes());
        assert_eq!(resp.status, 405, "{method}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4005"), "{method}");
        assert_eq!(
            resp.header("Allow"),
            Some("GET, HEAD, POST, PUT, DELETE, OPTIONS")
        );
        assert_eq!(
            resp.header("X-M2M-RI"),
            Some(format!("m-{method}").as_str())
        );
    }
    assert_eq!(s.upstream.count(), 0, "nothing reached the CSE");
}

#[test]
fn what_http_forwards_a_lenient_cse_reads_as_the_proxy_decided() {
    let s = start();
    let body = br#"{"m2m:cin":{"con":"21"}}"#.to_vec();
    // (request id, request, the proxy's decision as the rules saw it)
    let post = |ri: &str, ct: &str| {
        Request::post("/cse-in/sensorApp", body.clone())
            .header("X-M2M-RI", ri)
            .header("Content-Type", ct)
    };
    let cases = [
        (
            "get",
            Request::get("/cse-in/sensorApp").header("X-M2M-RI", "get"),
            reading(2, "/cse-in/sensorApp", None, Some("GET")),
        ),
        (
            "mixed-case",
            post("mixed-case", "Application/JSON ; charset=utf-8 ; ty=4"),
            reading(1, "/cse-in/sensorApp", Some(4), Some("POST")),
        ),
        (
            "charset-first",
            post("charset-first", "application/json;charset=utf-8;ty=4"),
            reading(1, "/cse-in/sensorApp", Some(4), Some("POST")),
        ),
        (
            "other-param",
            post("other-param", "application/json;x=3"),
            reading(5, "/cse-in/sensorApp", None, Some("POST")),
        ),
        (
            "quoted",
            post("quoted", "application/vnd.onem2m-res+json; ty=\"4\""),
            reading(1, "/cse-in/sensorApp", Some(4), Some("POST")),
        ),
        (
            "put",
            Request::new("PUT", "/cse-in/sensorApp")
                .header("X-M2M-RI", "put")
                .header("Content-Type", "application/json")
                .body(body.clone()),
            reading(3, "/cse-in/sensorApp", None, Some("PUT")),
        ),
    ];
    let mut c = conn(&s);
    for (ri, req, _) in &cases {
        let resp = c.request(req).unwrap();
        assert_eq!(resp.status, 200, "{ri}: {}", resp.text());
    }
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), cases.len());
    let log = s
        .proxy
        .wait_stdout("\"request_id\":\"put\"", Duration::from_secs(5))
        .unwrap_or_default();
    for (ri, _, decided) in &cases {
        let rec = seen
            .iter()
            .find(|r| r.header("X-M2M-RI") == Some(ri))
            .unwrap();
        let read = lenient::read_http(&rec.method, &rec.path, &rec.headers);
        assert_eq!(read.as_ref(), Some(decided), "{ri}: the CSE got {rec:?}");
        // the access log says what the proxy decided on
        let line: Value = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["request_id"] == *ri)
            .unwrap_or_else(|| panic!("{ri}: no access-log line in\n{log}"));
        assert_eq!(line["method"], decided.method.as_deref().unwrap(), "{ri}");
        assert_eq!(line["path"], decided.to.as_deref().unwrap(), "{ri}");
        assert_eq!(line["originator"], PROVEN, "{ri}");
    }
    // a ty with a media type no CSE reads it from: refused, not judged as a create
    // (new connections: a refused request's body is not read, so its connection may close)
    let resp = conn(&s).request(&post("text", "text/plain;ty=4")).unwrap();
    assert_eq!(resp.status, 400, "{}", resp.text());
    // and the container the rules forbid stays forbidden in every spelling
    for ct in [
        "application/json;ty=3",
        "APPLICATION/JSON; TY = 3",
        "application/cbor;ty=\"3\"",
    ] {
        let resp = conn(&s).request(&post("cnt", ct)).unwrap();
        assert_eq!(resp.status, 403, "{ct}: {}", resp.text());
    }
    assert_eq!(s.upstream.count(), cases.len());
}

// ---------------------------------------------------------------------------------------------
// WebSocket (classes 1 and 2)

type Ws = WebSocket<SslStream<TcpStream>>;

/// A real WebSocket client over TLS through the proxy, `protocol` negotiated.
fn websocket(s: &Scenario, protocol: &str) -> Ws {
    let stream = conn(s).into_tls_stream();
    let mut request = format!("wss://localhost:{}/", s.addr.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (ws, resp) = tungstenite::client(request, stream).expect("WebSocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next data message (pings and pongs skipped).
fn next(ws: &mut Ws) -> Message {
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

/// What the CSE received on WebSockets, each message read the lenient way and the strict way
/// (serde_json / ciborium without tag unwrapping: the form the proxy promised).
fn cse_readings(s: &Scenario, cbor: bool) -> Vec<(Reading, Reading)> {
    s.upstream
        .ws_messages()
        .iter()
        .map(|(_, payload)| {
            if cbor {
                let lenient = lenient::read_cbor(payload).expect("lenient CBOR");
                (lenient, strict_cbor(payload))
            } else {
                let text = std::str::from_utf8(payload).unwrap();
                for marker in ["//", "/*", "*/", "#", ";;"] {
                    assert!(!text.contains(marker), "{marker} in {text}");
                }
                let lenient = lenient::read_json(payload).expect("lenient JSON");
                (lenient, strict_json(payload))
            }
        })
        .collect()
}

fn strict_json(payload: &[u8]) -> Reading {
    let v: Value = serde_json::from_slice(payload).expect("strict JSON");
    Reading {
        op: v["op"].as_u64(),
        to: v["to"].as_str().map(str::to_owned),
        fr: v["fr"].as_str().map(str::to_owned),
        ty: v["ty"].as_u64(),
        method: None,
    }
}

fn strict_cbor(payload: &[u8]) -> Reading {
    let v: Cbor = ciborium::from_reader(payload).expect("strict CBOR");
    let Cbor::Map(entries) = v else {
        panic!("not a map")
    };
    let get = |k: &str| {
        entries
            .iter()
            .find(|(key, _)| matches!(key, Cbor::Text(t) if t == k))
            .map(|(_, v)| v)
    };
    let int = |k| match get(k) {
        Some(Cbor::Integer(n)) => u64::try_from(i128::from(*n)).ok(),
        _ => None,
    };
    let text = |k| match get(k) {
        Some(Cbor::Text(t)) => Some(t.clone()),
        _ => None,
    };
    Reading {
        op: int("op"),
        to: text("to"),
        fr: text("fr"),
        ty: int("ty"),
        method: None,
    }
}

#[test]
fn the_json_comment_forgery_reaches_the_cse_as_the_retrieve_the_proxy_judged() {
    let s = start();
    let mut ws = websocket(&s, "oneM2M.json");
    let forged = r#"{"op":2,"to":"cse-in/sensorApp","rqi":"x","rvi":"3","a":"\\","b":"/*","n":{"c":"*/","op":4,"to":"cse-in/mgmt","fr":"CAdmin","d":"/*"},"e":"*/"}"#;
    // more strings that lose a stripper, and every other marker it knows
    let tricky = r##"{"op":2,"to":"cse-in/sensorApp/la","rqi":"y","fr":"CAdmin","s":["\\","#x",";;y","//z","\\\"","é😀\n"],"pc":{"m2m:cin":{"con":"a\\"}},"z":"*/ /*"}"##;
    for (msg, rqi) in [(forged, "x"), (tricky, "y")] {
        ws.send(Message::text(msg)).unwrap();
        match next(&mut ws) {
            Message::Text(t) => {
                let echoed: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(echoed["rqi"], rqi);
            }
            other => panic!("{other:?}"),
        }
    }
    let expected = [
        reading(2, "cse-in/sensorApp", None, None),
        reading(2, "cse-in/sensorApp/la", None, None),
    ];
    let readings = cse_readings(&s, false);
    assert_eq!(readings.len(), 2);
    for ((lenient, strict), decided) in readings.iter().zip(&expected) {
        assert_eq!(
            strict, decided,
            "the proxy's re-encoding says what it decided"
        );
        assert_eq!(
            lenient, decided,
            "and a comment-stripping CSE reads the same"
        );
    }
    // the forgery's nested delete never became a request: nothing was refused either
    assert!(!s.proxy.stdout_text().contains("websocket_refused"));
}

/// `{"op":2,"to":"cse-in/sensorApp","fr":"Csensor1","rqi":"c1", tag("op"):4,
/// tag("to"):"cse-in/mgmt", tag("fr"):"CAdmin"}` (issue 26, class 2).
fn cbor_tagged_keys(tag: u64) -> Vec<u8> {
    let t = |s: &str| Cbor::Text(s.into());
    let tagged = |s: &str| Cbor::Tag(tag, Box::new(t(s)));
    let msg = Cbor::Map(vec![
        (t("op"), Cbor::Integer(2.into())),
        (t("to"), t("cse-in/sensorApp")),
        (t("fr"), t(PROVEN)),
        (t("rqi"), t("c1")),
        (tagged("op"), Cbor::Integer(4.into())),
        (tagged("to"), t("cse-in/mgmt")),
        (tagged("fr"), t("CAdmin")),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&msg, &mut out).unwrap();
    out
}

#[test]
fn the_cbor_tagged_key_forgery_is_refused_and_what_passes_reads_the_same() {
    let s = start();
    let mut ws = websocket(&s, "oneM2M.cbor");
    let answer = |ws: &mut Ws, msg: Vec<u8>| -> Cbor {
        ws.send(Message::binary(msg)).unwrap();
        match next(ws) {
            Message::Binary(b) => ciborium::from_reader(&b[..]).unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let field = |v: &Cbor, k: &str| -> Option<Cbor> {
        v.as_map()?
            .iter()
            .find(|(key, _)| key.as_text() == Some(k))
            .map(|(_, v)| v.clone())
    };
    for tag in [55799, 256] {
        let v = answer(&mut ws, cbor_tagged_keys(tag));
        assert_eq!(field(&v, "rsc"), Some(Cbor::Integer(4000.into())), "{v:?}");
        assert_eq!(field(&v, "rqi"), Some(Cbor::Text("c1".into())), "{v:?}");
    }
    // a tag on a value, and a byte-string key: refused the same way
    let t = |s: &str| Cbor::Text(s.into());
    for msg in [
        Cbor::Map(vec![
            (t("op"), Cbor::Integer(2.into())),
            (t("to"), Cbor::Tag(1, Box::new(t("cse-in/mgmt")))),
        ]),
        Cbor::Map(vec![
            (t("op"), Cbor::Integer(2.into())),
            (Cbor::Bytes(b"fr".to_vec()), t("CAdmin")),
        ]),
    ] {
        let mut bytes = Vec::new();
        ciborium::into_writer(&msg, &mut bytes).unwrap();
        let v = answer(&mut ws, bytes);
        assert_eq!(field(&v, "rsc"), Some(Cbor::Integer(4000.into())), "{v:?}");
    }
    assert!(s.upstream.ws_messages().is_empty(), "nothing was forwarded");

    // what passes: chunked keys and an indefinite map, re-encoded definite, read the same
    let mut chunked = vec![
        0xbf, 0x62, b'o', b'p', 0x02, 0x7f, 0x61, b't', 0x61, b'o', 0xff,
    ];
    chunked.push(0x70);
    chunked.extend(b"cse-in/sensorApp");
    chunked.extend([0x62, b'f', b'r', 0x66]);
    chunked.extend(b"CAdmin");
    chunked.extend([0x62, b't', b'y', 0x04, 0xff]);
    let v = answer(&mut ws, chunked);
    assert_eq!(field(&v, "fr"), Some(t(PROVEN)), "{v:?}");
    let readings = cse_readings(&s, true);
    assert_eq!(readings.len(), 1);
    let decided = reading(2, "cse-in/sensorApp", Some(4), None);
    assert_eq!(readings[0].1, decided);
    assert_eq!(readings[0].0, decided);
    let sent = &s.upstream.ws_messages()[0].1;
    assert_eq!(sent[0], 0xa4, "a definite map");
}
