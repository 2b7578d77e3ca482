//! What a request reaches beyond the target the rules judged, found tried from outside against
//! a real ACME CSE 2026.05 behind the proxy (red-team helper `attack1`; reproductions and
//! evidence in `tests/e2e/acme-reach.sh`). Each test states the refusal the proxy owes and is
//! `#[ignore]`d while the finding is open, so that `cargo test -- --ignored` shows them failing.
//! Findings 2 and 3 are fixed (a decoded `#`, `?` or `;` in a target is refused, 400 / 4000).
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
#[ignore = "finding 1: rcn 7, 10 and 12 reach resources the subtree rule denies (ACME answers rcn=12 with the child tree)"]
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
#[ignore = "finding 1: rcn 7, 10 and 12 in a WebSocket primitive reach resources the subtree rule denies"]
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
#[ignore = "finding 4: an <action> (ty 65) makes the CSE execute a request primitive the rules never judged"]
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
#[ignore = "finding 5 (issue 27.1, not merged): X-M2M-RTU with rt=2 sends the CSE's answer to an egress listener"]
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
#[ignore = "finding 6: an originator.allow pattern (Cgw-*) admits several segments; ACME gives the AE the last one as its resource ID"]
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
