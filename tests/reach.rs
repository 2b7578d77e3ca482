//! What a request reaches beyond the target the rules judged, found tried from outside against
//! a real ACME CSE 2026.05 behind the proxy (red-team helper `attack1`; reproductions and
//! evidence in `tests/e2e/acme-reach.sh`). Each test states the refusal the proxy owes and is
//! `#[ignore]`d while the finding is open, so that `cargo test -- --ignored` shows them failing.
//! Findings 2 and 3 are fixed (a decoded `#`, `?` or `;` in a target is refused, 400 / 4000);
//! 1, 4 and 6 too (`crate::parts`: every part of a request is judged; a `*` in an originator
//! pattern stays within one segment). Finding 5 is open.
//!
//! - Finding 1: `rcn` values other than 4, 5, 6 and 8 that put other resources in the result:
//!   ACME answers `rcn=12` (permissions) with the whole child tree, `rcn=10` (semantic content,
//!   with `smf`) with a SPARQL query over every semantic descriptor below the target, and
//!   `rcn=7` (original resource) with the resource the announced target's `lnk` names, anywhere.
//! - Finding 2: a `#` in the target (`%23` in an HTTP path, `#` in a primitive's `to`): ACME
//!   cuts the target at the first `#` and answers a partial retrieve of what precedes it, while
//!   the rules match a sibling segment (`/cse-in/app/secret#lbl` is not under `secret/**`).
//! - Finding 3: a `?` in a target of another CSE (`%3F`): the registrar forwards the decoded
//!   path, so the peer reads a query where the rules matched a segment.
//! - Finding 4: an `<action>` (ty 65): the CSE later executes the request primitive in its
//!   `apv` on the resource `orc` names (any operation, stored result readable in `air`); the
//!   rules judged only the create of the `<action>`.
//! - Finding 5 (for issue 27.1, not merged): `X-M2M-RTU` with `rt=2` makes the CSE send the
//!   result at once, as its own CSE-ID, to any URL: an egress listener included.
//! - Finding 6: `originator.allow` patterns (`Cgw-*`) admit originators of several segments;
//!   ACME gives a new AE the last one as its resource ID, in one flat space with the
//!   `<remoteCSE>`s (issue 29.2 bounded `cse_namespace` to one segment, not `allow`).

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::scenario::{Scenario, ScenarioOpts};
use common::{free_port, ClientOpts, Conn, Request, Response, WS_TEXT};

const CSE: &str = "cse:\n  id: /id-in\n  name: cse-in\n  sp_id: \"//acme.example.com\"\n";

const RULES: &str = "authorization:
  default: allow
  rules:
    - {name: no-deletes-under-cse-in, operations: [delete], targets: [\"/cse-in/**\"], effect: deny}
    - {name: no-secret-reads, operations: [retrieve], targets: [\"/cse-in/app/secret/**\"], effect: deny}
    - {name: no-mn-private, operations: [retrieve], targets: [\"/~/id-mn/cse-mn/private/**\"], effect: deny}
";

fn scenario(extra: &str) -> Scenario {
    Scenario::start(ScenarioOpts {
        extra: format!("{CSE}{RULES}{extra}"),
        ..Default::default()
    })
}

fn as_ae(s: &Scenario, req: &Request) -> Response {
    let client = s.client(ClientOpts::uri("Cae-1"));
    s.tls(Some(&client))
        .connect_and_request(s.addr, req)
        .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.path))
}

/// Refused by the proxy: a rule (403 / 4103) or an unreadable request (400 / 4000).
fn refused(resp: &Response) -> bool {
    matches!(
        (resp.status, resp.header("X-M2M-RSC")),
        (403, Some("4103")) | (400, Some("4000"))
    )
}

/// Each request is refused and none reaches the upstream.
fn all_refused(s: &Scenario, requests: &[Request]) {
    let before = s.upstream.count();
    let mut forwarded = Vec::new();
    for req in requests {
        let resp = as_ae(s, req);
        if !refused(&resp) {
            forwarded.push(format!(
                "{} {} -> {} {}",
                req.method,
                req.path,
                resp.status,
                resp.text()
            ));
        }
    }
    assert!(
        forwarded.is_empty(),
        "not refused:\n{}",
        forwarded.join("\n")
    );
    assert_eq!(s.upstream.count(), before, "nothing forwarded");
}

/// A oneM2M JSON WebSocket as `Cae-1`; `exchange` sends one primitive, returns the answer.
fn websocket(s: &Scenario) -> Conn {
    let client = s.client(ClientOpts::uri("Cae-1"));
    let mut conn: Conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let resp = conn
        .request(&Request::websocket("/", &["oneM2M.json"]))
        .unwrap();
    assert_eq!(resp.status, 101, "{}", resp.text());
    conn
}

fn exchange(conn: &mut Conn, fields: &Value) -> Value {
    conn.ws_send(WS_TEXT, fields.to_string().as_bytes(), true)
        .unwrap();
    let (_, answer, _) = conn.ws_recv().unwrap();
    serde_json::from_slice(&answer).unwrap()
}

/// Every primitive is answered by the proxy with 4103 or 4000; none reaches the upstream.
fn all_refused_ws(s: &Scenario, primitives: &[Value]) {
    let mut conn = websocket(s);
    let before = s.upstream.ws_messages().len();
    let mut forwarded = Vec::new();
    for (i, p) in primitives.iter().enumerate() {
        let mut p = p.clone();
        p["rqi"] = json!(format!("r{i}"));
        p["rvi"] = json!("3");
        let v = exchange(&mut conn, &p);
        if v["rsc"] != 4103 && v["rsc"] != 4000 {
            forwarded.push(format!("{p} -> {v}"));
        }
    }
    assert!(
        forwarded.is_empty(),
        "not refused:\n{}",
        forwarded.join("\n")
    );
    assert_eq!(s.upstream.ws_messages().len(), before, "nothing forwarded");
}

#[test]
fn finding_1_every_rcn_that_returns_other_resources_meets_the_subtree_rule() {
    let s = scenario("");
    all_refused(
        &s,
        &[
            // permissions: ACME returns the attributes and every child resource, like rcn=4
            Request::get("/cse-in/app?rcn=12"),
            Request::get("/cse-in?rcn=12"),
            // semantic content: a SPARQL query over the semantic descriptors below the target
            Request::get(
                "/cse-in/app?rcn=10&smf=SELECT%20%3Fo%20WHERE%20%7B%20%3Fs%20%3Fp%20%3Fo%20%7D",
            ),
            // original resource: what the announced resource's `lnk` names, wherever it is
            Request::get("/cse-in/app/annc?rcn=7"),
        ],
    );
}

#[test]
fn finding_1_websocket_every_rcn_that_returns_other_resources_meets_the_subtree_rule() {
    let s = scenario("");
    all_refused_ws(
        &s,
        &[
            json!({"op": 2, "to": "cse-in/app", "rcn": 12}),
            json!({"op": 2, "to": "cse-in", "rcn": 10, "fc": {"smf": "SELECT ?o WHERE { ?s ?p ?o }"}}),
            json!({"op": 2, "to": "cse-in/app/annc", "rcn": 7}),
        ],
    );
}

#[test]
fn finding_2_a_fragment_in_the_target_is_not_a_way_around_the_rules() {
    let s = scenario("");
    all_refused(
        &s,
        &[
            Request::get("/cse-in/app/secret%23lbl"),
            Request::get("/cse-in/app/secret%23cni"),
            Request::get("/~/id-in/cse-in/app/secret%23lbl"),
            Request::new("DELETE", "/cse-in/app%23lbl"),
        ],
    );
    all_refused_ws(
        &s,
        &[
            json!({"op": 2, "to": "cse-in/app/secret#lbl"}),
            json!({"op": 2, "to": "/id-in/cse-in/app/secret#cni"}),
        ],
    );
}

#[test]
fn finding_3_a_query_marker_in_a_remote_target_is_not_a_way_around_the_rules() {
    let s = scenario("");
    all_refused(
        &s,
        &[
            // the IN forwards `GET /~/id-mn/cse-mn/private?` and `…/private?rcn=4` to the MN
            Request::get("/~/id-mn/cse-mn/private%3F"),
            Request::get("/~/id-mn/cse-mn/private%3Frcn=4"),
            Request::get("/~/id-mn/cse-mn/private%3F/x"),
            // path parameters, which servers like Tomcat strip
            Request::get("/~/id-mn/cse-mn/private%3Bx"),
        ],
    );
    all_refused_ws(&s, &[json!({"op": 2, "to": "/id-mn/cse-mn/private?rcn=4"})]);
}

/// An `<action>` whose primitive deletes a resource the rules keep: `orc` is a resource ID the
/// proxy cannot place, so the operation in `apv` could be anywhere.
fn action(op: u64) -> Vec<u8> {
    json!({"m2m:actr": {
        "rn": "act1", "sri": "cnt-subject", "evm": 1,
        "evc": {"optr": 1, "sbjt": "cni", "thld": 1},
        "orc": "cnt-keep",
        "apv": {"op": op, "fr": "Cae-1", "to": "cse-in/app", "rqi": "a", "rvi": "3"}
    }})
    .to_string()
    .into_bytes()
}

#[test]
fn finding_4_an_action_cannot_carry_an_operation_past_the_rules() {
    let s = scenario("");
    all_refused(
        &s,
        &[
            Request::post("/cse-in/app", action(4))
                .header("Content-Type", "application/json;ty=65"),
            Request::post("/cse-in/app", action(2))
                .header("Content-Type", "application/json;ty=65"),
        ],
    );
    let body: Value = serde_json::from_slice(&action(4)).unwrap();
    all_refused_ws(
        &s,
        &[json!({"op": 1, "to": "cse-in/app", "ty": 65, "pc": body})],
    );
}

#[test]
fn finding_5_a_response_target_cannot_point_at_an_egress_listener() {
    let egress = free_port();
    let peer = free_port();
    let s = Scenario::start_with_opts(ScenarioOpts::default(), |f| {
        let ca = f.ca.cert.display();
        ScenarioOpts {
            extra: format!(
                "{CSE}egress:\n  - name: peer\n    listen: \"127.0.0.1:{egress}\"\n    peer: \"https://127.0.0.1:{peer}\"\n    tls:\n      ca: {ca}\n"
            ),
            ..f.opts.clone()
        }
    });
    let target = format!("http://127.0.0.1:{egress}/cse-in/x?y=1");
    all_refused(
        &s,
        &[
            Request::get("/cse-in/app?rt=2").header("X-M2M-RTU", &target),
            Request::get("/cse-in/app?rt=2")
                .header("X-M2M-RTU", &format!("http://localhost:{egress}/x")),
        ],
    );
    all_refused_ws(
        &s,
        &[json!({"op": 2, "to": "cse-in/app", "rt": {"rtv": 2, "nu": [target]}})],
    );
}

#[test]
fn finding_6_an_allow_pattern_reaches_one_ae_id_segment() {
    // `Cgw` may act for its sub-AEs `Cgw-…` (the docs' example); ACME takes a new AE's
    // resource ID from the last segment of its originator, in one flat space with the
    // <remoteCSE>s: `Cgw-x/id-mn2` registers an AE `id-mn2`, to whose poa ACME then routes
    // `/~/id-mn2/…` (with the requester's originator); `Cgw-x/Cvictim` takes `Cvictim`.
    let s = Scenario::start(ScenarioOpts {
        originator: "mode: verify\nallow:\n  Cgw: [\"Cgw-*\"]".into(),
        extra: CSE.into(),
        ..Default::default()
    });
    let before = s.upstream.count();
    let client = s.client(ClientOpts::uri("Cgw"));
    let ae = br#"{"m2m:ae":{"rn":"gw","api":"Ngw","rr":true,"srv":["3"],"poa":["http://127.0.0.1:9/"]}}"#;
    let mut forwarded = Vec::new();
    for claim in ["Cgw-x/id-mn2", "Cgw-x/Cvictim", "/id-in/Cgw-x/Cvictim"] {
        let req = Request::post("/cse-in", ae.to_vec())
            .header("Content-Type", "application/json;ty=2")
            .header("X-M2M-Origin", claim);
        let resp = s
            .tls(Some(&client))
            .connect_and_request(s.addr, &req)
            .unwrap();
        if !(resp.status == 403 && resp.header("X-M2M-RSC") == Some("4103")) {
            forwarded.push(format!("{claim} -> {} {}", resp.status, resp.text()));
        }
    }
    assert!(
        forwarded.is_empty(),
        "not refused:\n{}",
        forwarded.join("\n")
    );
    assert_eq!(s.upstream.count(), before, "nothing forwarded");
    // one segment is what the pattern is for
    let req = Request::post("/cse-in", ae.to_vec())
        .header("Content-Type", "application/json;ty=2")
        .header("X-M2M-Origin", "Cgw-sensor1");
    let resp = s
        .tls(Some(&client))
        .connect_and_request(s.addr, &req)
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
}

// ------------------------------------------------------------------ around the findings

/// Each request is forwarded (the echo upstream answers 200).
fn all_forwarded(s: &Scenario, client: &str, requests: &[Request]) {
    let client = s.client(ClientOpts::uri(client));
    let mut refused = Vec::new();
    for req in requests {
        let before = s.upstream.count();
        let resp = s
            .tls(Some(&client))
            .connect_and_request(s.addr, req)
            .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.path));
        if resp.status != 200 || s.upstream.count() != before + 1 {
            refused.push(format!(
                "{} {} -> {} {}",
                req.method,
                req.path,
                resp.status,
                resp.text()
            ));
        }
    }
    assert!(refused.is_empty(), "not forwarded:\n{}", refused.join("\n"));
}

fn create(path: &str, ty: u32, body: &str) -> Request {
    Request::post(path, body.as_bytes().to_vec())
        .header("Content-Type", &format!("application/json;ty={ty}"))
}

#[test]
fn what_stays_the_target_is_forwarded() {
    let s = scenario("");
    all_forwarded(
        &s,
        "Cae-1",
        &[
            // result contents that are the target or less, filters that only narrow
            Request::get("/cse-in/app?rcn=1"),
            Request::get("/cse-in/app?rcn=0"),
            Request::get("/cse-in/app?rcn=9"),
            Request::get("/cse-in?fu=2&lbl=x&ty=3&lim=2&drt=2"),
            Request::get("/cse-in/app?atrl=lbl"),
            create("/cse-in/app", 4, r#"{"m2m:cin":{"con":"x"}}"#),
            create("/cse-in/app", 3, r#"{"m2m:cnt":{"rn":"c"}}"#),
            // a subscription beside the denied subtree
            create("/cse-in/pub", 23, r#"{"m2m:sub":{"nu":["Cae-1"]}}"#),
            Request::new("PUT", "/cse-in/app")
                .header("Content-Type", "application/json")
                .body(br#"{"m2m:cnt":{"lbl":["x"]}}"#.to_vec()),
        ],
    );
    let mut conn = websocket(&s);
    for (i, p) in [
        json!({"op": 2, "to": "cse-in/app", "rcn": 1}),
        json!({"op": 2, "to": "cse-in", "fc": {"fu": 2, "lbl": ["x"]}}),
        json!({"op": 1, "to": "cse-in/app", "ty": 4, "pc": {"m2m:cin": {"con": "x"}}}),
    ]
    .iter()
    .enumerate()
    {
        let mut p = p.clone();
        p["rqi"] = json!(format!("f{i}"));
        p["rvi"] = json!("3");
        let v = exchange(&mut conn, &p);
        assert!(v.get("rsc").is_none(), "{p} -> {v}");
    }
}

/// Finding 1, also for other operations: `DELETE …?rcn=4` answers with the deleted subtree, so
/// it is a retrieve of it too; `fu=4` (discovery-based operation) applies the operation to what
/// it finds.
#[test]
fn finding_1_a_delete_that_returns_the_subtree_meets_the_retrieve_rule() {
    let s = Scenario::start(ScenarioOpts {
        extra: format!(
            "{CSE}authorization:
  default: allow
  rules:
    - {{name: no-secret-reads, operations: [retrieve], targets: [\"/cse-in/app/secret/**\"], effect: deny}}
    - {{name: keep, operations: [delete], targets: [\"/cse-in/app/keep\"], effect: deny}}
"
        ),
        ..Default::default()
    });
    all_refused(
        &s,
        &[
            Request::new("DELETE", "/cse-in/app?rcn=4"),
            Request::new("DELETE", "/cse-in?rcn=8"),
            Request::new("DELETE", "/cse-in/app?rcn=12"),
            Request::new("DELETE", "/cse-in/app?fu=4&ty=3"),
            Request::new("DELETE", "/cse-in/other/x?rcn=7"),
            Request::new("PUT", "/cse-in/app?rcn=4").header("Content-Type", "application/json"),
            Request::get("/cse-in/other?arp=secret"),
            Request::get("/cse-in/app?sqi=false&rcn=11"),
        ],
    );
    all_refused_ws(
        &s,
        &[
            json!({"op": 4, "to": "cse-in/app", "rcn": 4}),
            json!({"op": 4, "to": "cse-in/app", "fc": {"fu": 4}}),
            json!({"op": 2, "to": "cse-in/app", "sqi": false, "rcn": 11}),
            json!({"op": 2, "to": "cse-in/other", "fc": {"fu": 1, "arp": "../app/secret"}}),
        ],
    );
    all_forwarded(
        &s,
        "Cae-1",
        &[
            Request::new("DELETE", "/cse-in/app?rcn=0"),
            Request::new("DELETE", "/cse-in/app/x?rcn=4"),
        ],
    );
}

/// Finding 4, the other resources that make the CSE act later: what they do is judged.
#[test]
fn finding_4_resources_that_act_later_meet_the_rules_for_what_they_do() {
    let s = scenario("");
    all_refused(
        &s,
        &[
            // subscriptions send the parent and its new children to the subscriber
            create("/cse-in/app/secret", 23, r#"{"m2m:sub":{"nu":["Cae-1"]}}"#),
            create("/cse-in/app", 23, r#"{"m2m:sub":{"nu":["Cae-1"]}}"#),
            // a <crossResourceSubscription> subscribes to the resources it names
            create("/cse-in/pub", 48, r#"{"m2m:crs":{"rrat":["cnt-keep"]}}"#),
            // a <dependency> reads the resource it names
            create("/cse-in/pub/act", 66, r#"{"m2m:depr":{"rri":"cnt-keep"}}"#),
        ],
    );
    all_refused_ws(
        &s,
        &[
            json!({"op": 1, "to": "cse-in/app/secret", "ty": 23, "pc": {"m2m:sub": {"nu": ["Cae-1"]}}}),
            json!({"op": 1, "to": "cse-in/pub", "ty": 48, "pc": {"m2m:crs": {"rrat": ["x"]}}}),
        ],
    );
}

/// Finding 4: creating an `<action>` is for clients no deny rule restricts.
#[test]
fn finding_4_an_action_is_created_by_whom_no_deny_rule_restricts() {
    let s = Scenario::start(ScenarioOpts {
        extra_auth: "roles:\n  sysop: {methods: [mtls], names: [CAdmin]}".into(),
        extra: format!(
            "{CSE}authorization:
  default: allow
  rules:
    - {{name: no-deletes-under-cse-in, operations: [delete], targets: [\"/cse-in/**\"], unless_roles: [sysop], effect: deny}}
"
        ),
        ..Default::default()
    });
    let act =
        Request::post("/cse-in/app", action(4)).header("Content-Type", "application/json;ty=65");
    all_refused(&s, std::slice::from_ref(&act));
    all_forwarded(&s, "CAdmin", &[act]);
}

/// Finding 6 for the other places patterns allow originators: a bearer token's `originators`.
#[test]
fn finding_6_a_token_pattern_reaches_one_ae_id_segment() {
    use common::creds::sha256_hex;
    let opts = ScenarioOpts {
        client_cert: "optional".into(),
        methods: "[bearer]".into(),
        originator: "mode: verify".into(),
        extra: CSE.into(),
        ..Default::default()
    };
    let s = Scenario::start_with_opts(opts, |f| {
        let tokens = f.pki.write(
            "tokens.yaml",
            format!(
                "tokens:\n  - name: gw\n    sha256: \"{}\"\n    originator: Cgw\n    originators: [\"Cgw-*\"]\n",
                sha256_hex("gw-token-0123456789")
            )
            .as_bytes(),
        );
        ScenarioOpts {
            extra_auth: format!("bearer:\n  tokens: {}", tokens.display()),
            ..f.opts.clone()
        }
    });
    let send = |claim: &str| {
        let req = Request::get("/cse-in")
            .header("Authorization", "Bearer gw-token-0123456789")
            .header("X-M2M-Origin", claim);
        s.tls(None).connect_and_request(s.addr, &req).unwrap()
    };
    for claim in ["Cgw-x/id-mn2", "Cgw-x/Cvictim", "/id-in/Cgw-x/Cvictim"] {
        let resp = send(claim);
        assert_eq!(
            (resp.status, resp.header("X-M2M-RSC")),
            (403, Some("4103")),
            "{claim}: {}",
            resp.text()
        );
    }
    assert_eq!(send("Cgw-sensor1").status, 200);
}

// ------------------------------------------------------------------ attack2 finding A

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

fn update(path: &str, content_type: &str, body: Vec<u8>) -> Request {
    Request::new("PUT", path)
        .header("Content-Type", content_type)
        .body(body)
}

/// The update attack2 found: an existing `<action>` re-targeted (`orc`) to a delete (`apv`).
fn retargeted_action() -> Value {
    json!({"m2m:actr": {
        "evm": 1, "evc": {"optr": 1, "sbjt": "cni", "thld": 1},
        "orc": "cnt-keep",
        "apv": {"op": 4, "fr": "Cae-1", "to": "cse-in/app", "rqi": "a", "rvi": "3"}
    }})
}

/// attack2 finding A: an UPDATE of an existing `<action>` makes the CSE execute its new `apv`
/// as a create would: judged the same way (any operation, unplaced), over HTTP and WebSocket,
/// in JSON and CBOR; content the proxy cannot read fails closed.
#[test]
fn finding_a_an_update_of_an_action_meets_the_rules_for_what_it_does() {
    let s = scenario("");
    let actr = retargeted_action();
    // the operation directly meets no-deletes-under-cse-in
    all_refused(&s, &[Request::new("DELETE", "/cse-in/app/keep")]);
    let sub = json!({"m2m:sub": {"nu": ["Cae-1"]}});
    all_refused(
        &s,
        &[
            update(
                "/cse-in/app/act",
                "application/json",
                actr.to_string().into(),
            ),
            update(
                "/cse-in/app/act",
                "application/vnd.onem2m-res+json",
                actr.to_string().into(),
            ),
            update("/cse-in/app/act", "application/cbor", cbor(&actr)),
            update(
                "/cse-in/app/act",
                "application/vnd.onem2m-res+cbor",
                cbor(&actr),
            ),
            // chunked: read whole before it is judged
            Request::new("PUT", "/cse-in/app/act")
                .header("Content-Type", "application/json")
                .chunked(&[
                    &actr.to_string().as_bytes()[..10],
                    &actr.to_string().as_bytes()[10..],
                ]),
            // what the proxy cannot read: several root keys, duplicate keys, an unknown m2m:
            // type, XML, no Content-Type
            update(
                "/cse-in/app/act",
                "application/json",
                br#"{"m2m:cnt":{},"m2m:actr":{"orc":"x"}}"#.to_vec(),
            ),
            update(
                "/cse-in/app/act",
                "application/json",
                br#"{"m2m:actr":{"orc":"x"},"m2m:actr":{"orc":"y"}}"#.to_vec(),
            ),
            update(
                "/cse-in/app/act",
                "application/json",
                br#"{"m2m:exin":{}}"#.to_vec(),
            ),
            update(
                "/cse-in/app/act",
                "application/xml",
                b"<m2m:actr/>".to_vec(),
            ),
            Request::new("PUT", "/cse-in/app/act").body(actr.to_string().into_bytes()),
            // an updated subscription notifies about its parent: the secret subtree
            update(
                "/cse-in/app/secret/sub",
                "application/json",
                sub.to_string().into(),
            ),
        ],
    );
    all_refused_ws(
        &s,
        &[
            json!({"op": 3, "to": "cse-in/app/act", "pc": actr}),
            json!({"op": 3, "to": "cse-in/app/act", "pc": {"m2m:cnt": {}, "m2m:actr": {}}}),
            json!({"op": 3, "to": "cse-in/app/act", "pc": {"m2m:exin": {}}}),
            json!({"op": 3, "to": "cse-in/app/secret/sub", "pc": sub}),
        ],
    );
    // CBOR WebSocket
    let client = s.client(ClientOpts::uri("Cae-1"));
    let mut conn: Conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let resp = conn
        .request(&Request::websocket("/", &["oneM2M.cbor"]))
        .unwrap();
    assert_eq!(resp.status, 101, "{}", resp.text());
    let before = s.upstream.ws_messages().len();
    let p = json!({"op": 3, "to": "cse-in/app/act", "rqi": "c", "rvi": "3", "pc": actr});
    conn.ws_send(common::WS_BINARY, &cbor(&p), true).unwrap();
    let (_, answer, _) = conn.ws_recv().unwrap();
    let v: Value = ciborium::from_reader(&answer[..]).unwrap();
    assert_eq!(v["rsc"], 4103, "{v}");
    assert_eq!(s.upstream.ws_messages().len(), before, "nothing forwarded");
}

/// Ordinary updates still pass where a deny rule would meet unread content: their content is
/// read and names a type that does not act later (also a subscription beside the secrets).
#[test]
fn finding_a_ordinary_updates_are_forwarded() {
    let s = scenario("");
    let cnt = json!({"m2m:cnt": {"lbl": ["x"], "mni": 3}});
    let ae = json!({"m2m:ae": {"lbl": ["y"]}});
    let fcnt = json!({"cod:tempe": {"curT0": 21.5}});
    all_forwarded(
        &s,
        "Cae-1",
        &[
            update("/cse-in/app", "application/json", cnt.to_string().into()),
            update("/cse-in/app", "application/cbor", cbor(&cnt)),
            update("/cse-in/Cae-1", "application/json", ae.to_string().into()),
            update(
                "/cse-in/app/temp",
                "application/json",
                fcnt.to_string().into(),
            ),
            update(
                "/cse-in/app/fc",
                "application/json",
                br#"{"m2m:fcnt":{"lbl":["z"]}}"#.to_vec(),
            ),
            update(
                "/cse-in/pub/sub",
                "application/json",
                br#"{"m2m:sub":{"nu":["Cae-1"]}}"#.to_vec(),
            ),
            Request::new("PUT", "/cse-in/app")
                .header("Content-Type", "application/json")
                .chunked(&[br#"{"m2m:cnt":"#, br#"{"lbl":["c"]}}"#]),
            Request::new("PUT", "/cse-in/app"),
        ],
    );
    // the forwarded body is the client's
    let last = s.upstream.requests();
    assert!(
        last.iter().any(|r| r.body == cnt.to_string().as_bytes()),
        "the update's body reached the CSE unchanged"
    );
    let mut conn = websocket(&s);
    for (i, p) in [
        json!({"op": 3, "to": "cse-in/app", "pc": cnt}),
        json!({"op": 3, "to": "cse-in/app/temp", "pc": fcnt}),
        json!({"op": 3, "to": "cse-in/pub/sub", "pc": {"m2m:sub": {"nu": ["Cae-1"]}}}),
    ]
    .iter()
    .enumerate()
    {
        let mut p = p.clone();
        p["rqi"] = json!(format!("u{i}"));
        p["rvi"] = json!("3");
        let v = exchange(&mut conn, &p);
        assert!(v.get("rsc").is_none(), "{p} -> {v}");
    }
}

/// The update of an `<action>` is for clients no deny rule restricts, as its create is.
#[test]
fn finding_a_an_action_is_updated_by_whom_no_deny_rule_restricts() {
    let s = Scenario::start(ScenarioOpts {
        extra_auth: "roles:\n  sysop: {methods: [mtls], names: [CAdmin]}".into(),
        extra: format!(
            "{CSE}authorization:
  default: allow
  rules:
    - {{name: no-deletes-under-cse-in, operations: [delete], targets: [\"/cse-in/**\"], unless_roles: [sysop], effect: deny}}
"
        ),
        ..Default::default()
    });
    let put = update(
        "/cse-in/app/act",
        "application/json",
        retargeted_action().to_string().into(),
    );
    all_refused(&s, std::slice::from_ref(&put));
    all_forwarded(&s, "CAdmin", &[put]);
}
