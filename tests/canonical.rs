//! One canonical target and one canonical originator, over real TLS (issues 19, 26 items 3–4,
//! 29 items 1–3): a rule written in one form meets the request in every form the CSE accepts,
//! over HTTP and over a oneM2M WebSocket; what the proxy cannot place in the tree (unstructured
//! resource IDs, fan-out points, retrieves with descendants) meets deny rules fail-closed; the
//! originator the rules judge and the CSE receives is the canonical one; CSE namespaces reach
//! one AE-ID segment; `check` and `explain` show it.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::scenario::{bin, Scenario, ScenarioOpts};
use common::{run_cli, ClientOpts, Conn, Request, Response, WS_BINARY, WS_TEXT};

const CSE: &str = "cse:\n  id: /id-in\n  name: cse-in\n  sp_id: \"//acme.example.com\"\n";

/// Issue 19's rule, a read rule on a subtree, and issue 29's admin rule.
const RULES: &str = "authorization:
  default: allow
  rules:
    - {name: no-deletes-under-cse-in, operations: [delete], targets: [\"/cse-in/**\"], effect: deny}
    - {name: no-secret-reads, operations: [retrieve], targets: [\"/~/id-in/cse-in/app/secret/**\"], effect: deny}
    - {name: admin-for-sysop, originators: [\"^CAdmin$\"], unless_roles: [sysop], effect: deny}
";

fn scenario(originator: &str) -> Scenario {
    Scenario::start(ScenarioOpts {
        client_cert: "optional".into(),
        originator: originator.into(),
        extra: format!("{CSE}{RULES}"),
        ..Default::default()
    })
}

fn verify() -> Scenario {
    scenario(
        "mode: verify\ncse_namespace: true\ncse_ae_ids:\n  /id-mn: \"^Cmn-\"\nallow:\n  Ctool: [\"C*\", \"/id-in/S*\"]",
    )
}

fn as_cert(s: &Scenario, uri: &str, req: &Request) -> Response {
    let client = s.client(ClientOpts::uri(uri));
    s.tls(Some(&client))
        .connect_and_request(s.addr, req)
        .unwrap_or_else(|e| panic!("{uri} {}: {e}", req.path))
}

fn dbg(resp: &Response) -> String {
    resp.json()["m2m:dbg"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The three TS-0009 forms of one resource of the local CSE, and the `-` shorthand.
const DELETE_FORMS: &[&str] = &[
    "/cse-in/AE1",
    "/~/id-in/cse-in/AE1",
    "/_/acme.example.com/id-in/cse-in/AE1",
    "/-/AE1",
    "/~/id-in/-/AE1",
    "/cse-%69n/AE1",
    "/%7E/id-in/cse-in/AE1",
];

#[test]
fn the_subtree_rule_refuses_delete_in_every_form_and_nothing_is_forwarded() {
    let s = scenario("mode: overwrite");
    let before = s.upstream.count();
    for (i, path) in DELETE_FORMS
        .iter()
        .chain(&[
            "/cae-unstructured",
            "/~/id-in/cae-unstructured",
            "/cse-in/grp/fopt",
        ])
        .enumerate()
    {
        let rid = format!("del-{i}");
        let resp = as_cert(
            &s,
            "Cae-1",
            &Request::new("DELETE", path).header("X-M2M-RI", &rid),
        );
        if path.starts_with("/%7E") {
            // an encoded form marker is refused outright
            assert_eq!(resp.status, 400, "{path}: {}", resp.text());
            continue;
        }
        assert_eq!(resp.status, 403, "{path}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4103"), "{path}");
        assert_eq!(
            dbg(&resp),
            "denied by rule no-deletes-under-cse-in",
            "{path}"
        );
    }
    // a form marker glued to the first segment is refused as a bad request
    for path in [
        "/~cse-in/AE1",
        "/_id-in/cse-in/AE1",
        "/%7ecse-in/AE1",
        "/%5Fid-in/cse-in",
    ] {
        let resp = as_cert(&s, "Cae-1", &Request::new("DELETE", path));
        assert_eq!(resp.status, 400, "{path}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4000"), "{path}");
    }
    assert_eq!(s.upstream.count(), before, "nothing forwarded");
    // the access log shows the target as the rules judged it
    let line = s
        .proxy
        .wait_stdout("\"request_id\":\"del-2\"", Duration::from_secs(5))
        .expect("access-log line of the absolute form");
    assert!(line.contains("\"target\":\"/cse-in/AE1\""), "{line}");
    assert!(
        line.contains("\"rule\":\"no-deletes-under-cse-in\""),
        "{line}"
    );
    assert!(
        line.contains("\"path\":\"/_/acme.example.com/id-in/cse-in/AE1\""),
        "{line}"
    );
    // what the rule does not cover is forwarded: other operations, another CSE's resources
    for req in [
        Request::get("/~/id-in/cse-in/AE1"),
        Request::post("/cae-unstructured", b"{}".to_vec()),
        Request::new("DELETE", "/~/id-mn/cse-mn/x"),
        Request::new("DELETE", "/_/acme.example.com/id-mn/cse-mn/x"),
    ] {
        let resp = as_cert(&s, "Cae-1", &req);
        assert_eq!(
            resp.status,
            200,
            "{} {}: {}",
            req.method,
            req.path,
            resp.text()
        );
    }
    assert_eq!(s.upstream.count(), before + 4);
    assert_eq!(
        s.upstream.last().unwrap().path,
        "/_/acme.example.com/id-mn/cse-mn/x",
        "the client's path is forwarded as written"
    );
}

#[test]
fn retrieves_that_return_a_denied_subtree_or_go_through_a_fan_out_point_are_refused() {
    let s = scenario("mode: overwrite");
    let before = s.upstream.count();
    for path in [
        "/cse-in/app?rcn=4",
        "/cse-in?rcn=8",
        "/~/id-in/cse-in/app?rcn=5",
        "/cse-in/app?fu=1&ty=3",
        "/cse-in/app?rcn=1&rcn=4",
        "/cse-in/app?RCN=6",
        "/cse-in/app/secret/x",
        "/cse-in/grp/fopt",
        "/cse-in/grp/fopt/la",
        "/ri-of-secret",
    ] {
        let resp = as_cert(&s, "Cae-1", &Request::get(path));
        assert_eq!(resp.status, 403, "{path}: {}", resp.text());
        assert_eq!(dbg(&resp), "denied by rule no-secret-reads", "{path}");
    }
    assert_eq!(s.upstream.count(), before, "nothing forwarded");
    for path in [
        "/cse-in/app",
        "/cse-in/app?rcn=1",
        "/cse-in/other?rcn=4",
        "/cse-in/app/public?fu=1",
        "/cse-in/grp",
    ] {
        let resp = as_cert(&s, "Cae-1", &Request::get(path));
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    }
}

/// The upgrade is an HTTP GET that the rules judge like any retrieve: `/ws` would be an
/// unstructured resource ID, which the deny rule on reads meets. `/` is no resource.
const WS_PATH: &str = "/";

/// A JSON or CBOR request primitive.
fn primitive(cbor: bool, fields: &Value) -> (u8, Vec<u8>) {
    if cbor {
        let mut out = Vec::new();
        let v: ciborium::value::Value = ciborium::value::Value::serialized(fields).unwrap();
        ciborium::into_writer(&v, &mut out).unwrap();
        (WS_BINARY, out)
    } else {
        (WS_TEXT, fields.to_string().into_bytes())
    }
}

fn decode(cbor: bool, payload: &[u8]) -> Value {
    if cbor {
        let v: ciborium::value::Value = ciborium::from_reader(payload).unwrap();
        v.deserialized().unwrap()
    } else {
        serde_json::from_slice(payload).unwrap()
    }
}

#[test]
fn websocket_primitives_meet_the_same_rules_in_every_form_of_to() {
    let s = scenario("mode: overwrite");
    for cbor in [false, true] {
        let protocol = if cbor { "oneM2M.cbor" } else { "oneM2M.json" };
        let client = s.client(ClientOpts::uri("Cae-1"));
        let mut conn: Conn = s.tls(Some(&client)).connect(s.addr).unwrap();
        conn.set_timeout(Duration::from_secs(5));
        let resp = conn
            .request(&Request::websocket(WS_PATH, &[protocol]))
            .unwrap();
        assert_eq!(resp.status, 101, "{}", resp.text());
        let mut exchange = |fields: Value| {
            let (opcode, payload) = primitive(cbor, &fields);
            conn.ws_send(opcode, &payload, true).unwrap();
            let (_, answer, _) = conn.ws_recv().unwrap();
            decode(cbor, &answer)
        };
        let forwarded = s.upstream.ws_messages().len();
        for (i, to) in [
            "cse-in/AE1",
            "/id-in/cse-in/AE1",
            "//acme.example.com/id-in/cse-in/AE1",
            "-/AE1",
            "/id-in/-/AE1",
            "cae-unstructured",
        ]
        .iter()
        .enumerate()
        {
            let v = exchange(json!({"op": 4, "to": to, "rqi": format!("d{i}"), "rvi": "3"}));
            assert_eq!(v["rsc"], 4103, "{protocol} {to}: {v}");
            assert!(
                v["pc"].to_string().contains("no-deletes-under-cse-in"),
                "{v}"
            );
        }
        for (fields, rule) in [
            (
                json!({"op": 2, "to": "cse-in/app", "rcn": 4}),
                "no-secret-reads",
            ),
            (
                json!({"op": 2, "to": "/id-in/cse-in", "fc": {"fu": 1, "ty": 3}}),
                "no-secret-reads",
            ),
            (json!({"op": 6, "to": "cse-in/app"}), "no-secret-reads"),
            (json!({"op": 2, "to": "cse-in/grp/fopt"}), "no-secret-reads"),
        ] {
            let mut fields = fields;
            fields["rqi"] = json!("r");
            fields["rvi"] = json!("3");
            let v = exchange(fields.clone());
            assert_eq!(v["rsc"], 4103, "{protocol} {fields}: {v}");
            assert!(v["pc"].to_string().contains(rule), "{v}");
        }
        for to in ["~cse-in/AE1", "_id-in/cse-in"] {
            let v = exchange(json!({"op": 2, "to": to, "rqi": "g", "rvi": "3"}));
            assert_eq!(v["rsc"], 4000, "{protocol} {to}: {v}");
        }
        assert_eq!(
            s.upstream.ws_messages().len(),
            forwarded,
            "{protocol}: nothing forwarded"
        );
        // what the rules allow goes on, on the same connection
        let v = exchange(json!({"op": 2, "to": "cse-in/app", "rcn": 1, "rqi": "ok", "rvi": "3"}));
        assert_eq!(v["rqi"], "ok", "{v}");
        assert_eq!(v["op"], 2, "the echo of the request itself: {v}");
    }
    let line = s
        .proxy
        .wait_stdout("\"event\":\"websocket_refused\"", Duration::from_secs(5))
        .expect("a refusal line");
    assert!(line.contains("\"target\":\"/cse-in/AE1\""), "{line}");
}

#[test]
fn the_originator_the_rules_judge_and_the_cse_receives_is_canonical() {
    let s = verify();
    // an identity allowed `C*` is CAdmin in every form: the admin rule meets all three
    for claim in [
        "CAdmin",
        "/id-in/CAdmin",
        "//acme.example.com/id-in/CAdmin",
        "//ACME.example.com/id-in/CAdmin",
    ] {
        let resp = as_cert(
            &s,
            "Ctool",
            &Request::get("/cse-in").header("X-M2M-Origin", claim),
        );
        assert_eq!(resp.status, 403, "{claim}: {}", resp.text());
        assert_eq!(dbg(&resp), "denied by rule admin-for-sysop", "{claim}");
    }
    // a victim in any form reaches the CSE as the one canonical originator
    for claim in [
        "Cvictim",
        "/id-in/Cvictim",
        "//acme.example.com/id-in/Cvictim",
    ] {
        let resp = as_cert(
            &s,
            "Ctool",
            &Request::get("/cse-in").header("X-M2M-Origin", claim),
        );
        assert_eq!(resp.status, 200, "{claim}: {}", resp.text());
        assert_eq!(
            s.upstream.last().unwrap().header_values("X-M2M-Origin"),
            ["Cvictim"],
            "{claim}"
        );
    }
    // a pattern written SP-relative allows the canonical AE-ID
    let resp = as_cert(
        &s,
        "Ctool",
        &Request::get("/cse-in").header("X-M2M-Origin", "Sx"),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    // an identity without patterns may use its own originator in any form, no other
    for (claim, status) in [
        ("/id-in/Cae-1", 200),
        ("//acme.example.com/id-in/Cae-1", 200),
        ("/id-in/Cvictim", 403),
        ("//other.sp/id-in/Cae-1", 403),
    ] {
        let resp = as_cert(
            &s,
            "Cae-1",
            &Request::get("/cse-in").header("X-M2M-Origin", claim),
        );
        assert_eq!(resp.status, status, "{claim}: {}", resp.text());
        if status == 200 {
            assert_eq!(
                s.upstream.last().unwrap().header_values("X-M2M-Origin"),
                ["Cae-1"]
            );
        }
    }
    // the certificate of the admin itself, written SP-relative, is CAdmin too
    let resp = as_cert(&s, "/id-in/CAdmin", &Request::get("/cse-in"));
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(dbg(&resp), "denied by rule admin-for-sysop");
    let line = s
        .proxy
        .wait_stdout("\"identity\":\"Ctool\"", Duration::from_secs(5))
        .expect("a Ctool line");
    assert!(!line.contains("\"originator\":\"/id-in/"), "{line}");
}

#[test]
fn the_websocket_fr_is_forwarded_canonical() {
    let s = verify();
    let client = s.client(ClientOpts::uri("Ctool"));
    let mut conn: Conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let resp = conn
        .request(&Request::websocket(WS_PATH, &["oneM2M.json"]))
        .unwrap();
    assert_eq!(resp.status, 101);
    for (fr, rsc) in [("/id-in/CAdmin", Some(4103)), ("/id-in/Cvictim", None)] {
        let msg = json!({"op": 2, "to": "cse-in", "fr": fr, "rqi": "w", "rvi": "3"});
        conn.ws_send(WS_TEXT, msg.to_string().as_bytes(), true)
            .unwrap();
        let (_, answer, _) = conn.ws_recv().unwrap();
        let v: Value = serde_json::from_slice(&answer).unwrap();
        match rsc {
            Some(rsc) => assert_eq!(v["rsc"], rsc, "{fr}: {v}"),
            // the echo upstream returns what the CSE received
            None => assert_eq!(v["fr"], "Cvictim", "{fr}: {v}"),
        }
    }
}

#[test]
fn cse_namespaces_reach_one_ae_id_segment_of_csee_ids_only() {
    let s = verify();
    for (cert, claim, status) in [
        ("/id-mn", "/id-mn/Cmn-ae1", 200),
        // not `^Cmn-`: may act (the MN's admin across Mcc), see below for registrations
        ("/id-mn", "/id-mn/CAdmin", 200),
        ("/id-mn", "/id-mn/Cmn-x/id-mn2", 403),
        ("/id-mn", "/id-mn/id-mn2", 403),
        ("/id-mn", "/id-mn/", 403),
        ("/id-mn", "/id-mnx/Cmn-1", 403),
        ("/id-mn2", "/id-mn2/Cae1", 200), // no AE-ID pattern for this CSE
        ("/id-mn2", "/id-mn2/ae1", 403),  // not an AE-ID
        // an SP-ID or an SP-relative AE-ID is no CSE namespace
        ("//acme.example.com", "//acme.example.com/id-in/CAdmin", 403),
        ("//acme.example.com", "//acme.example.com/id-mn/Cae1", 403),
        ("/id-mn/Cmn-ae1", "/id-mn/Cmn-ae1/Cx", 403),
    ] {
        let resp = as_cert(
            &s,
            cert,
            &Request::get("/cse-in").header("X-M2M-Origin", claim),
        );
        assert_eq!(resp.status, status, "{cert} as {claim}: {}", resp.text());
        if status == 200 {
            assert_eq!(
                s.upstream.last().unwrap().header_values("X-M2M-Origin"),
                [claim]
            );
        } else {
            assert_eq!(resp.header("X-M2M-RSC"), Some("4103"));
        }
    }
    // an AE registered through /id-mn must have the MN's prefix: it cannot take the AE-ID of
    // one of this CSE's AEs (one flat resource-ID space); a type that cannot be read counts
    let register = |claim: &str, content_type: &str| {
        as_cert(
            &s,
            "/id-mn",
            &Request::post("/cse-in", br#"{"m2m:ae":{"rn":"x"}}"#.to_vec())
                .header("Content-Type", content_type)
                .header("X-M2M-Origin", claim),
        )
    };
    let before = s.upstream.count();
    for (claim, ct) in [
        ("/id-mn/Cinae", "application/json;ty=2"),
        ("/id-mn/CAdmin", "application/json;ty=2"),
        ("/id-mn/Smn-1", "application/json; ty=2"),
        ("/id-mn/Cinae", "application/json;ty=two"),
    ] {
        let resp = register(claim, ct);
        assert_eq!(resp.status, 403, "{claim} {ct}: {}", resp.text());
        assert!(dbg(&resp).contains("cse_ae_ids"), "{}", dbg(&resp));
    }
    assert_eq!(s.upstream.count(), before, "no registration forwarded");
    assert_eq!(
        register("/id-mn/Cmn-ae2", "application/json;ty=2").status,
        200
    );
    // other creates of the namespace are not registrations
    assert_eq!(
        register("/id-mn/CAdmin", "application/json;ty=3").status,
        200
    );
    // the same over the WebSocket binding
    let client = s.client(ClientOpts::uri("/id-mn"));
    let mut conn: Conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let resp = conn
        .request(&Request::websocket(WS_PATH, &["oneM2M.json"]))
        .unwrap();
    assert_eq!(resp.status, 101);
    for (fr, rsc) in [("/id-mn/Cinae", Some(4103)), ("/id-mn/Cmn-ws", None)] {
        let msg = json!({"op": 1, "ty": 2, "to": "cse-in", "fr": fr, "rqi": "reg", "rvi": "3", "pc": {"m2m:ae": {}}});
        conn.ws_send(WS_TEXT, msg.to_string().as_bytes(), true)
            .unwrap();
        let (_, answer, _) = conn.ws_recv().unwrap();
        let v: Value = serde_json::from_slice(&answer).unwrap();
        match rsc {
            Some(rsc) => assert_eq!(v["rsc"], rsc, "{fr}: {v}"),
            None => assert_eq!(v["fr"], fr, "{fr}: {v}"),
        }
    }
}

#[test]
fn check_needs_cse_for_targets_and_explain_shows_the_canonical_target() {
    let files = Scenario::files_only(ScenarioOpts {
        extra: RULES.into(),
        ..Default::default()
    });
    let config = files.write_config(&files.config_yaml());
    let (code, out, err) = run_cli(&bin(), &["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("key `cse`"), "{err}");
    assert!(err.contains("no-deletes-under-cse-in"), "{err}");
    // the deprecated key still works, with a warning; against cse.id it must agree
    let with = |extra: &str| {
        files.write_config(&files.config_yaml_with(&ScenarioOpts {
            extra: extra.into(),
            ..files.opts.clone()
        }))
    };
    let old = with("websocket:\n  cse_id: /id-in\n");
    let (code, out, err) = run_cli(&bin(), &["check", "--config", old.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("websocket.cse_id (/id-in) is deprecated"),
        "{out}"
    );
    let both = with(&format!("{CSE}websocket:\n  cse_id: /id-other\n"));
    let (code, _, err) = run_cli(&bin(), &["check", "--config", both.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("key `websocket.cse_id`"), "{err}");
    let good = with(&format!("{CSE}{RULES}"));
    let good = good.to_str().unwrap();
    let (code, out, err) = run_cli(&bin(), &["check", "--config", good]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("cse: /id-in (CSEBase cse-in, SP-ID acme.example.com)"),
        "{out}"
    );

    let explain = |args: &[&str]| {
        let mut all = vec!["explain", "--config", good];
        all.extend_from_slice(args);
        run_cli(&bin(), &all)
    };
    let (code, out, err) = explain(&["--as", "Cae-1", "delete", "/_/acme.example.com/id-in/-/AE1"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains(
            "request: delete /cse-in/AE1 (canonical form of /_/acme.example.com/id-in/-/AE1)"
        ),
        "{out}"
    );
    assert!(
        out.contains("decision: deny by rule 1 (no-deletes-under-cse-in)"),
        "{out}"
    );
    let (code, out, err) = explain(&["--as", "Cae-1", "delete", "/cae123"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("unstructured resource ID"), "{out}");
    assert!(out.contains("decision: deny by rule 1"), "{out}");
    let (code, out, err) = explain(&["--as", "Cae-1", "retrieve", "/cse-in/app?rcn=4"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("request: retrieve /cse-in/app\n"), "{out}");
    assert!(out.contains("descendants"), "{out}");
    assert!(
        out.contains("decision: deny by rule 2 (no-secret-reads)"),
        "{out}"
    );
    // overwrite mode: what the client sends is replaced by the bound originator, in
    // canonical form (`--originator` is the client's X-M2M-Origin, issue 25.3)
    let (code, out, err) = explain(&[
        "--as",
        "Ctool",
        "--originator",
        "//acme.example.com/id-in/CAdmin",
        "retrieve",
        "cse-in",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("originator: Ctool (mode overwrite;"), "{out}");
    let (code, out, err) = explain(&[
        "--as",
        "//acme.example.com/id-in/CAdmin",
        "retrieve",
        "cse-in",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains("originator: CAdmin (canonical form of //acme.example.com/id-in/CAdmin)"),
        "{out}"
    );
    assert!(
        out.contains("decision: deny by rule 3 (admin-for-sysop)"),
        "{out}"
    );
}

/// Issue 25.4: one listener for devices and CSEs. Devices (no role) are overwritten whatever
/// they send (the usual initial `C`, a fixed originator from firmware); the MN (role `cse`,
/// by certificate only) keeps the originators of its namespace, bounded by `cse_ae_ids`; the
/// same per-role mode holds for the `fr` of a oneM2M WebSocket; `check` summarises it.
#[test]
fn devices_and_cses_get_their_own_originator_mode_on_one_listener() {
    let s = Scenario::start(ScenarioOpts {
        client_cert: "optional".into(),
        originator: "mode: overwrite\nby_role:\n  - {role: cse, mode: verify, cse_namespace: true}\ncse_ae_ids:\n  /id-mn: \"^Cmn-\"".into(),
        extra_auth: "roles:\n  cse: {methods: [mtls], names: [/id-mn]}".into(),
        extra: format!("{CSE}{RULES}"),
        ..Default::default()
    });
    // over a oneM2M WebSocket: the same modes for `fr` (first: on the pipeline an upgrade sent
    // on a pooled upstream connection is sometimes closed right after its 101)
    for (cert, fr, expect) in [
        ("Cae-meter7", "C", Ok("Cae-meter7")),
        ("/id-mn", "/id-mn/Cmn-ae1", Ok("/id-mn/Cmn-ae1")),
        ("/id-mn", "CAdmin", Err(4103)),
    ] {
        let client = s.client(ClientOpts::uri(cert));
        let mut conn: Conn = s.tls(Some(&client)).connect(s.addr).unwrap();
        conn.set_timeout(Duration::from_secs(5));
        let resp = conn
            .request(&Request::websocket(WS_PATH, &["oneM2M.json"]))
            .unwrap();
        assert_eq!(resp.status, 101);
        let msg = json!({"op": 2, "to": "cse-in", "fr": fr, "rqi": "w", "rvi": "3"});
        conn.ws_send(WS_TEXT, msg.to_string().as_bytes(), true)
            .unwrap();
        let (_, answer, _) = conn.ws_recv().unwrap();
        let v: Value = serde_json::from_slice(&answer).unwrap();
        match expect {
            Ok(forwarded) => assert_eq!(v["fr"], forwarded, "{cert} {fr}: {v}"),
            Err(rsc) => assert_eq!(v["rsc"], rsc, "{cert} {fr}: {v}"),
        }
    }
    for (cert, claim, status, forwarded) in [
        ("Cae-meter7", "C", 200, "Cae-meter7"),
        ("Cae-meter7", "Cfirmware-fixed", 200, "Cae-meter7"),
        ("Cae-meter7", "/id-mn/Cmn-1", 200, "Cae-meter7"),
        ("/id-mn", "/id-mn/Cmn-ae1", 200, "/id-mn/Cmn-ae1"),
        ("/id-mn", "/id-mn", 200, "/id-mn"),
        ("/id-mn", "/id-in/CAdmin", 403, ""),
        ("/id-mn", "C", 403, ""),
        // a certificate named like a CSE but without the role is a device
        ("/id-mn2", "/id-mn2/Cx", 200, "/id-mn2"),
    ] {
        let resp = as_cert(
            &s,
            cert,
            &Request::get("/cse-in").header("X-M2M-Origin", claim),
        );
        assert_eq!(resp.status, status, "{cert} as {claim}: {}", resp.text());
        if status == 200 {
            assert_eq!(
                s.upstream.last().unwrap().header_values("X-M2M-Origin"),
                [forwarded],
                "{cert} as {claim}"
            );
        } else {
            assert_eq!(resp.header("X-M2M-RSC"), Some("4103"));
        }
    }
    // the registration bound holds for the role's namespace
    let resp = as_cert(
        &s,
        "/id-mn",
        &Request::post("/cse-in", b"{\"m2m:ae\":{}}".to_vec())
            .header("Content-Type", "application/json;ty=2")
            .header("X-M2M-Origin", "/id-mn/Cin-ae"),
    );
    assert_eq!(resp.status, 403, "{}", resp.text());
    let (code, out, err) = run_cli(
        &bin(),
        &["check", "--config", s.proxy.config_path().to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("originator: mode overwrite (for identities without a role below)"),
        "{out}"
    );
    assert!(
        out.contains("originator.by_role[0]: role cse: mode verify, cse_namespace (one C/S AE-ID segment; AE-ID patterns for /id-mn)"),
        "{out}"
    );
}
