//! Authorization rules over real TLS: who may do what where, after authentication, the same
//! over HTTP and over the WebSocket binding; roles from names, patterns, a JWT claim and the
//! introspection operator flag; targets in the three forms and the ways to write one target
//! twice; reload; `explain` and `check`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde_json::{json, Value};

use common::creds::{self, metric};
use common::https::HttpsEndpoint;
use common::scenario::{bin, Scenario, ScenarioOpts};
use common::{run_cli, ClientOpts, Conn, Request, Response, WS_BINARY, WS_TEXT};

/// The rules of issue 14's example, written as an operator would.
const RULES: &str = "authorization:
  default: allow
  rules:
    - name: operators-only-admin
      originators: [\"^CAdmin$\"]
      unless_roles: [sysop]
      effect: deny
    - name: only-cses-register-cses
      operations: [create]
      resource_types: [remoteCSE]
      unless_roles: [cse]
      effect: deny
    - name: no-cse-base-delete
      operations: [delete]
      targets: [\"/cse-in\", \"/~/id-in/cse-in\"]
      effect: deny
";

/// The local CSE, which rules with targets need.
const CSE: &str = "cse:\n  id: /id-in\n  name: cse-in\n  sp_id: sp.example.com\n";

const ROLES: &str = "roles:
  sysop: {methods: [mtls], names: [Cadmin-tool]}
  cse:
    methods: [mtls]
    patterns: [\"^/id-[a-z0-9-]+$\"]";

fn scenario(extra_auth: &str, rules: &str) -> Scenario {
    Scenario::start(ScenarioOpts {
        client_cert: "optional".into(),
        originator: "mode: verify\ncse_namespace: true\nallow:\n  Cadmin-tool: [\"CAdmin\"]".into(),
        extra_auth: format!("{ROLES}\n{extra_auth}"),
        extra: format!("{CSE}{rules}"),
        ..Default::default()
    })
}

/// One request as the certificate `uri`, on a new connection.
fn as_cert(s: &Scenario, uri: &str, req: &Request) -> Response {
    let client = s.client(ClientOpts::uri(uri));
    s.tls(Some(&client))
        .connect_and_request(s.addr, req)
        .unwrap_or_else(|e| panic!("{uri}: {e}"))
}

fn dbg(resp: &Response) -> String {
    resp.json()["m2m:dbg"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn create(ty: u32) -> Request {
    Request::post("/cse-in", br#"{"m2m:csr":{"rn":"x"}}"#.to_vec())
        .header("Content-Type", &format!("application/json;ty={ty}"))
}

#[test]
fn operators_only_admin_only_cses_register_cses_and_the_cse_base_is_not_deleted() {
    let s = scenario("", RULES);
    // CAdmin is for the system operator only
    let resp = as_cert(
        &s,
        "CAdmin",
        &Request::get("/cse-in").header("X-M2M-RI", "r1"),
    );
    assert_eq!(resp.status, 403);
    assert_eq!(resp.header("X-M2M-RSC"), Some("4103"));
    assert_eq!(resp.header("X-M2M-RI"), Some("r1"));
    assert_eq!(dbg(&resp), "denied by rule operators-only-admin");
    let before = s.upstream.count();
    let resp = as_cert(
        &s,
        "Cadmin-tool",
        &Request::get("/cse-in").header("X-M2M-Origin", "CAdmin"),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(s.upstream.count(), before + 1);
    assert_eq!(
        s.upstream.last().unwrap().header_values("X-M2M-Origin"),
        ["CAdmin"]
    );
    // a <remoteCSE> is created by CSEs only (role `cse` from a pattern on the certificate)
    assert_eq!(as_cert(&s, "Cae-1", &create(16)).status, 403);
    assert_eq!(
        as_cert(&s, "Cae-1", &create(2)).status,
        200,
        "an AE may register"
    );
    assert_eq!(as_cert(&s, "/id-mn", &create(16)).status, 200);
    // the CSEBase is not deleted, in either form the rule names; other resources are
    for (path, status) in [
        ("/cse-in", 403),
        ("/~/id-in/cse-in", 403),
        ("/cse-in/", 403),
        ("/cse-%69n", 403),
        ("/cse-in/x", 200),
        ("/~/id-in/cse-in/x", 200),
        // every form of the CSEBase meets the rule (issue 19), the absolute one too
        ("/_/sp.example.com/id-in/cse-in", 403),
    ] {
        let resp = as_cert(&s, "Cae-1", &Request::new("DELETE", path));
        assert_eq!(resp.status, status, "{path}: {}", resp.text());
    }
    // a target that could be read two ways is refused whenever rules are configured
    let count = s.upstream.count();
    for path in [
        "/cse-in/%2e%2e/cse-in",
        "/cse-in/x/..",
        "/cse-in//x",
        "/cse-in/%2Fx",
        "/cse-in/./x",
    ] {
        let resp = as_cert(
            &s,
            "Cae-1",
            &Request::new("DELETE", path).header("X-M2M-RI", "ev"),
        );
        assert_eq!(resp.status, 400, "{path}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4000"), "{path}");
        assert_eq!(resp.header("X-M2M-RI"), Some("ev"));
    }
    for ct in ["application/json;ty=2;ty=16", "application/json;ty=abc"] {
        let resp = as_cert(
            &s,
            "Cae-1",
            &Request::post("/cse-in", b"{}".to_vec()).header("Content-Type", ct),
        );
        assert_eq!(resp.status, 400, "{ct}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4000"));
    }
    assert_eq!(s.upstream.count(), count, "nothing forwarded");
    // counted by rule, and the rule is in the access log
    let (_, scrape) = s.proxy.admin_get("/metrics").unwrap();
    let series = |rule: &str, effect: &str| {
        metric(
            &scrape,
            &format!("m2m_auth_proxy_authorization_decisions_total{{effect=\"{effect}\",rule=\"{rule}\"}}"),
        )
    };
    assert_eq!(series("no-cse-base-delete", "deny"), 5.0, "{scrape}");
    assert_eq!(series("operators-only-admin", "deny"), 1.0);
    assert!(series("default", "allow") >= 5.0);
    let line = s
        .proxy
        .wait_stdout(
            "\"rule\":\"only-cses-register-cses\"",
            Duration::from_secs(5),
        )
        .expect("the deciding rule in the access log");
    assert!(line.contains("\"status\":403"), "{line}");
    // an originator refused by the policy is logged with who tried it
    let resp = as_cert(
        &s,
        "Cae-poser",
        &Request::get("/cse-in").header("X-M2M-Origin", "/id-mn"),
    );
    assert_eq!(resp.status, 403);
    let line = s
        .proxy
        .wait_stdout("\"identity\":\"Cae-poser\"", Duration::from_secs(5))
        .expect("the refused identity in the access log");
    assert!(line.contains("originator_not_allowed"), "{line}");
}

#[test]
fn first_match_decides_conditions_combine_and_the_default_can_deny() {
    let rules = "authorization:
  default: deny
  rules:
    - name: sensor1-reads
      identities: [Cae-sensor1]
      methods: [mtls]
      operations: [retrieve]
      effect: allow
    - name: other-sensors
      patterns: [\"^Cae-\"]
      effect: deny
    - name: anyone-creates-aes
      operations: [create]
      resource_types: [AE]
      effect: allow
    - name: gateways-in-their-tree
      originators: [\"^Cgw\"]
      targets: [\"/cse-in/gw/**\"]
      effect: allow
";
    let s = scenario("", rules);
    let get = |path: &str| Request::get(path);
    for (who, req, status, rule) in [
        ("Cae-sensor1", get("/cse-in/x"), 200, None),
        (
            "Cae-sensor1",
            Request::new("DELETE", "/cse-in/x"),
            403,
            Some("other-sensors"),
        ),
        ("Cae-other", get("/cse-in/x"), 403, Some("other-sensors")),
        ("Cae-other", create(2), 403, Some("other-sensors")),
        ("Cx", create(2), 200, None),
        ("Cx", get("/cse-in"), 403, Some("default")),
        ("Cgw1", get("/cse-in/gw/a/b"), 200, None),
        ("Cgw1", get("/cse-in/gw"), 200, None),
        ("Cgw1", get("/cse-in/other"), 403, Some("default")),
        ("Cx", get("/cse-in/gw/a"), 403, Some("default")),
    ] {
        let resp = as_cert(&s, who, &req);
        assert_eq!(resp.status, status, "{who} {}: {}", req.path, resp.text());
        if let Some(rule) = rule {
            assert_eq!(
                dbg(&resp),
                format!("denied by rule {rule}"),
                "{who} {}",
                req.path
            );
        }
    }
}

const ISS: &str = "https://idp.test";
const AUD: &str = "m2m-proxy";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs256";

fn hs256(claims: &Value) -> String {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = PKey::hmac(SECRET).unwrap();
    let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
    let sig = signer.sign_oneshot_to_vec(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&sig))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn roles_from_a_jwt_claim_and_the_introspection_operator_flag_count_for_unless_roles() {
    let pki = common::Pki::new();
    let ca = pki.ca("idp-ca");
    let server = pki.server(&ca, "localhost", &["127.0.0.1"]);
    let endpoint = HttpsEndpoint::start(&server, None, |call| {
        let token = call.body.strip_prefix("token=").unwrap_or("");
        let operator = token == "operator";
        (
            200,
            json!({"active": true, "sub": "CAdmin", "sysop": operator, "exp": now() + 600})
                .to_string(),
        )
    });
    let secret = pki.write("jwt.secret", SECRET);
    let auth = format!(
        "jwt:\n  issuers:\n    - issuer: {ISS}\n      audiences: [{AUD}]\n      algorithms: [HS256]\n      secret_file: {}\n      roles_claim: roles\nintrospection:\n  url: {}\n  ca: {}\n  operator_field: sysop\n  timeout: 2s",
        secret.display(),
        endpoint.url("/introspect"),
        ca.cert.display()
    );
    let s = Scenario::start(ScenarioOpts {
        client_cert: "optional".into(),
        methods: "[mtls, jwt, introspection]".into(),
        extra_auth: format!("{ROLES}\n{auth}"),
        extra: format!("{CSE}{RULES}"),
        ..Default::default()
    });
    let bearer = |token: &str| {
        s.tls(None)
            .connect_and_request(
                s.addr,
                &Request::get("/cse-in").header("Authorization", &format!("Bearer {token}")),
            )
            .unwrap()
    };
    let jwt = |roles: Value| {
        hs256(&json!({"iss": ISS, "aud": AUD, "sub": "CAdmin", "exp": now() + 300, "roles": roles}))
    };
    assert_eq!(
        bearer(&jwt(json!(["sysop"]))).status,
        200,
        "the claim gives sysop"
    );
    let resp = bearer(&jwt(json!(["reader"])));
    assert_eq!(resp.status, 403);
    assert_eq!(dbg(&resp), "denied by rule operators-only-admin");
    assert_eq!(
        bearer("IDENTITY-TOKEN//operator").status,
        200,
        "the flag gives sysop"
    );
    assert_eq!(bearer("IDENTITY-TOKEN//someone").status, 403);
}

/// A JSON or CBOR request primitive.
fn primitive(cbor: bool, fields: Value) -> (u8, Vec<u8>) {
    if cbor {
        let mut out = Vec::new();
        let v: ciborium::value::Value = ciborium::value::Value::serialized(&fields).unwrap();
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
fn websocket_primitives_meet_the_same_rules_on_one_connection() {
    let s = scenario("", RULES);
    for cbor in [false, true] {
        let protocol = if cbor { "oneM2M.cbor" } else { "oneM2M.json" };
        let client = s.client(ClientOpts::uri("Cae-1"));
        let mut conn: Conn = s.tls(Some(&client)).connect(s.addr).unwrap();
        conn.set_timeout(Duration::from_secs(5));
        let resp = conn
            .request(&Request::websocket("/ws", &[protocol]))
            .unwrap();
        assert_eq!(resp.status, 101, "{}", resp.text());
        let mut exchange = |fields: Value| {
            let (opcode, payload) = primitive(cbor, fields);
            conn.ws_send(opcode, &payload, true).unwrap();
            let (_, answer, _) = conn.ws_recv().unwrap();
            decode(cbor, &answer)
        };
        // the CSEBase is not deleted, in the SP-relative and the CSE-relative form
        for (i, to) in ["/id-in/cse-in", "cse-in"].iter().enumerate() {
            let v = exchange(
                json!({"op": 4, "to": to, "fr": "Cae-1", "rqi": format!("d{i}"), "rvi": "3"}),
            );
            assert_eq!(v["rsc"], 4103, "{protocol} {to}: {v}");
            assert_eq!(v["rqi"], format!("d{i}"));
            assert!(v["pc"].to_string().contains("no-cse-base-delete"), "{v}");
        }
        // an AE does not create a <remoteCSE>
        let v = exchange(
            json!({"op": 1, "to": "cse-in", "fr": "Cae-1", "rqi": "c1", "ty": 16, "rvi": "3", "pc": {"m2m:csr": {}}}),
        );
        assert_eq!(v["rsc"], 4103, "{v}");
        // a target written to be read two ways is refused as a bad request
        let v = exchange(
            json!({"op": 2, "to": "cse-in/../cse-in", "fr": "Cae-1", "rqi": "e1", "rvi": "3"}),
        );
        assert_eq!(v["rsc"], 4000, "{v}");
        // the same connection goes on: an allowed primitive reaches the CSE (echoed back)
        let v =
            exchange(json!({"op": 4, "to": "cse-in/cnt1", "fr": "Cae-1", "rqi": "ok", "rvi": "3"}));
        assert_eq!(v["rqi"], "ok", "{v}");
        assert_eq!(v["op"], 4, "the echo of the request itself: {v}");
    }
}

#[test]
fn a_broken_rule_set_on_reload_keeps_the_one_in_force_and_a_good_one_applies() {
    let s = scenario("", RULES);
    let delete = || as_cert(&s, "Cae-1", &Request::new("DELETE", "/cse-in")).status;
    assert_eq!(delete(), 403);
    let good = s.config_yaml();
    let scrape = || s.proxy.admin_get("/metrics").unwrap().1;
    let reloads = |result: &str| {
        metric(
            &scrape(),
            &format!("m2m_auth_proxy_reloads_total{{file=\"config\",result=\"{result}\"}}"),
        )
    };
    let wait = |result: &str, before: f64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while reloads(result) <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "no {result} reload\n{}",
                s.proxy.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for broken in [
        good.replace("\"^CAdmin$\"", "\"(\""),
        good.replace("\"/cse-in\", ", "\"/cse-in/**/x\", "),
        good.replace("name: no-cse-base-delete", "name: operators-only-admin"),
    ] {
        let before = reloads("failure");
        s.proxy.rewrite_config(&broken);
        wait("failure", before);
        assert_eq!(delete(), 403, "the rules in force stay");
    }
    let before = reloads("success");
    s.proxy
        .rewrite_config(&good.replace("operations: [delete]", "operations: [update]"));
    wait("success", before);
    assert_eq!(delete(), 200, "the new rules apply");
}

#[test]
fn explain_walks_the_rules_for_one_request_and_check_prints_them() {
    let s = scenario("", RULES);
    let config = s.proxy.config_path().to_str().unwrap().to_string();
    let explain = |args: &[&str]| {
        let mut all = vec!["explain", "--config", config.as_str()];
        all.extend_from_slice(args);
        run_cli(&bin(), &all)
    };
    // exit status: 0 allowed, 1 refused, 2 an error in the question
    let (code, out, err) = explain(&["--as", "Cae-1", "delete", "/cse-in"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("Cae-1"), "{out}");
    assert!(
        out.contains("operators-only-admin") && out.contains("no-cse-base-delete"),
        "{out}"
    );
    assert!(out.to_lowercase().contains("deny"), "{out}");
    let (code, out, err) = explain(&["--as", "/id-mn", "create", "/cse-in", "--ty", "remoteCSE"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("cse"),
        "the role from the pattern is shown: {out}"
    );
    assert!(out.to_lowercase().contains("allow"), "{out}");
    let (code, _, err) = explain(&["--as", "x", "destroy", "/cse-in"]);
    assert_eq!(code, 2);
    assert!(err.contains("OPERATION"), "{err}");
    let (code, out, err) = run_cli(&bin(), &["check", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("only-cses-register-cses"), "{out}");
}

/// Issue 25.2: `auth.roles` names identities per method. A Basic user or a token named like a
/// certificate identity does not get the certificate's role; a bare entry with several methods
/// enabled is refused with the rewrite to make.
#[test]
fn a_role_is_given_only_to_names_proven_by_its_methods() {
    let rules = "authorization:\n  default: allow\n  rules:\n    - name: sysop-only-deletes\n      operations: [delete]\n      unless_roles: [sysop]\n      effect: deny\n";
    let (s, _) = creds::start_with_credentials(
        ("Cadmin-tool", "pw-1"),
        ("Cadmin-tool", "token-of-a-namesake", "Cadmin-tool"),
        "roles:\n  sysop: {methods: [mtls], names: [Cadmin-tool]}",
        rules,
    );
    let delete = Request::new("DELETE", "/cse-in/x");
    assert_eq!(
        as_cert(
            &s,
            "Cadmin-tool",
            &delete.clone().header("X-M2M-RI", "cert")
        )
        .status,
        200
    );
    let with = |auth: &str, ri: &str| {
        s.tls(None)
            .connect_and_request(
                s.addr,
                &delete
                    .clone()
                    .header("Authorization", auth)
                    .header("X-M2M-RI", ri),
            )
            .unwrap()
    };
    for (auth, ri) in [
        (creds::basic("Cadmin-tool", "pw-1"), "basic"),
        ("Bearer token-of-a-namesake".to_string(), "bearer"),
    ] {
        let resp = with(&auth, ri);
        assert_eq!(resp.status, 403, "{ri}: {}", resp.text());
        assert_eq!(dbg(&resp), "denied by rule sysop-only-deletes");
    }
    let needle = "\"request_id\":\"bearer\"";
    let log = s
        .proxy
        .wait_stdout(needle, Duration::from_secs(5))
        .expect("access log");
    let line = |ri: &str| {
        log.lines()
            .find(|l| l.contains(&format!("\"request_id\":\"{ri}\"")))
            .unwrap_or_else(|| panic!("no line for {ri}: {log}"))
            .to_string()
    };
    assert!(
        line("cert").contains("\"roles\":[\"sysop\"]"),
        "{}",
        line("cert")
    );
    assert!(line("basic").contains("\"roles\":[]"), "{}", line("basic"));
    assert!(
        line("bearer").contains("\"roles\":[]"),
        "{}",
        line("bearer")
    );

    // an old config (a bare name, several methods) is refused, by check and by a reload, with
    // the rewrite to make
    let old = s.config_yaml().replace(
        "sysop: {methods: [mtls], names: [Cadmin-tool]}",
        "sysop: [Cadmin-tool]",
    );
    let path = s.proxy.dir().join("old.yaml");
    std::fs::write(&path, &old).unwrap();
    let (code, _, err) = run_cli(&bin(), &["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("auth.roles.sysop"), "{err}");
    assert!(
        err.contains("sysop: {methods: [mtls], names: [\"Cadmin-tool\"]}"),
        "{err}"
    );
    let scrape = || s.proxy.admin_get("/metrics").unwrap().1;
    let failures = || {
        metric(
            &scrape(),
            "m2m_auth_proxy_reloads_total{file=\"config\",result=\"failure\"}",
        )
    };
    s.proxy.rewrite_config(&old);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while failures() < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            s.proxy.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        with(&creds::basic("Cadmin-tool", "pw-1"), "after").status,
        403
    );
    // with one method enabled a bare entry means that method, and check says to write it
    let one = s
        .config_yaml()
        .replace("methods: [mtls, bearer, basic]", "methods: [mtls]")
        .replace(
            "sysop: {methods: [mtls], names: [Cadmin-tool]}",
            "sysop: [Cadmin-tool]",
        );
    assert!(one.contains("methods: [mtls]\n"), "{one}");
    std::fs::write(&path, &one).unwrap();
    let (code, out, err) = run_cli(&bin(), &["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("auth.roles: sysop: {names: [\"Cadmin-tool\"]}"),
        "{out}"
    );
    assert!(
        out.contains("WARNING: auth.roles.sysop has no `methods`")
            && out.contains("`methods: [mtls]`"),
        "{out}"
    );
}

/// What `explain` printed, read back: originator (`None`: refused), roles, deciding rule.
struct Explained {
    code: i32,
    originator: Option<String>,
    roles: Vec<String>,
    rule: Option<String>,
}

fn read_explain((code, out, err): (i32, String, String)) -> Explained {
    assert!(code == 0 || code == 1, "exit {code}: {err}\n{out}");
    let line = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line: {out}"))
            .to_string()
    };
    let identity = line("identity: ");
    let roles = identity
        .split_once("roles [")
        .and_then(|(_, r)| r.split_once(']'))
        .map(|(r, _)| {
            r.split(", ")
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_else(|| panic!("no roles: {identity}"));
    let originator = line("originator: ");
    let originator = (!originator.contains(" refused ("))
        .then(|| originator.split(' ').next().unwrap_or_default().to_string());
    let decision = line("decision: ");
    let rule = if decision.contains("(default, no rule matched)") {
        Some("default".to_string())
    } else {
        decision
            .split_once(" (")
            .filter(|_| decision.contains(" by rule "))
            .map(|(_, name)| name.trim_end_matches(')').to_string())
    };
    Explained {
        code,
        originator,
        roles,
        rule,
    }
}

/// Issue 25.3: `explain` is enforcement. For every method, a real request through the proxy and
/// `explain` with the same inputs (a certificate, a user name, a tokens-file entry, a JWT's
/// claims, an introspection answer; the client's X-M2M-Origin; the operation and target) agree
/// on the originator bound, the roles, the deciding rule and the decision; `explain` exits 0
/// when the proxy forwards and 1 when it refuses.
#[test]
fn explain_and_the_proxy_agree_for_every_method() {
    let idp = common::Pki::new();
    let idp_ca = idp.ca("idp-ca");
    let idp_server = idp.server(&idp_ca, "localhost", &["127.0.0.1"]);
    let answer_mn = json!({"active": true, "sub": "/id-mn", "exp": now() + 600}).to_string();
    let answer = answer_mn.clone();
    let endpoint = HttpsEndpoint::start(&idp_server, None, move |call| {
        match call.body.strip_prefix("token=") {
            Some("tok-mn") => (200, answer.clone()),
            _ => (200, json!({"active": false}).to_string()),
        }
    });
    let jwt_claims =
        json!({"iss": ISS, "aud": AUD, "sub": "CAdmin", "exp": now() + 300, "roles": ["sysop"]});
    let mut cert_files = Vec::new();
    let s = Scenario::start_with_opts(
        ScenarioOpts {
            client_cert: "optional".into(),
            methods: "[mtls, basic, bearer, jwt, introspection]".into(),
            originator: "mode: overwrite\nby_role:\n  - {role: sysop, mode: verify}\n  - {role: cse, mode: verify, cse_namespace: true}\nallow:\n  Cadmin-tool: [CAdmin]".into(),
            extra: format!("{CSE}{RULES}"),
            ..Default::default()
        },
        |f| {
            let htpasswd = f.pki.write(
                "htpasswd",
                format!("{}\n", creds::htpasswd_line("ops-admin", "pw-ops")).as_bytes(),
            );
            let tokens = f.pki.write(
                "tokens.yaml",
                creds::tokens_yaml(&[("gateway-1", "tok-gw", "Cgw")]).as_bytes(),
            );
            let secret = f.pki.write("jwt.secret", SECRET);
            for who in ["Cadmin-tool", "/id-mn"] {
                let c = f.pki.client(&f.ca, ClientOpts::uri(who));
                cert_files.push((who, c));
            }
            ScenarioOpts {
                extra_auth: format!(
                    "{ROLES}\n  auditor: {{methods: [basic], names: [ops-admin]}}\nbasic:\n  htpasswd: {}\n  originators:\n    ops-admin: CAdmin\nbearer:\n  tokens: {}\njwt:\n  issuers:\n    - issuer: {ISS}\n      audiences: [{AUD}]\n      algorithms: [HS256]\n      secret_file: {}\n      roles_claim: roles\nintrospection:\n  url: {}\n  ca: {}\n  timeout: 2s",
                    htpasswd.display(),
                    tokens.display(),
                    secret.display(),
                    endpoint.url("/introspect"),
                    idp_ca.cert.display()
                ),
                ..f.opts.clone()
            }
        },
    );
    let cert = |who: &str| &cert_files.iter().find(|(w, _)| *w == who).unwrap().1;
    let config = s.proxy.config_path().to_str().unwrap().to_string();
    let jwt = hs256(&jwt_claims);
    let cadmin_pem = cert("Cadmin-tool").cert.display().to_string();
    struct Case<'a> {
        ri: &'a str,
        cert: Option<&'a str>,
        authorization: Option<String>,
        request: Request,
        explain: Vec<String>,
        status: u16,
    }
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let create_csr = || create(16);
    let cases = [
        Case {
            ri: "mtls-admin",
            cert: Some("Cadmin-tool"),
            authorization: None,
            request: Request::get("/cse-in").header("X-M2M-Origin", "/id-in/CAdmin"),
            explain: args(&[
                "--cert",
                &cadmin_pem,
                "--originator",
                "/id-in/CAdmin",
                "retrieve",
                "/cse-in",
            ]),
            status: 200,
        },
        Case {
            ri: "mtls-mn-registers",
            cert: Some("/id-mn"),
            authorization: None,
            request: create_csr(),
            explain: args(&["--as", "/id-mn", "create", "/cse-in", "--ty", "16"]),
            status: 200,
        },
        Case {
            ri: "mtls-mn-claims-admin",
            cert: Some("/id-mn"),
            authorization: None,
            request: Request::get("/cse-in").header("X-M2M-Origin", "CAdmin"),
            explain: args(&[
                "--as",
                "/id-mn",
                "--originator",
                "CAdmin",
                "retrieve",
                "/cse-in",
            ]),
            status: 403,
        },
        Case {
            ri: "basic-ops",
            cert: None,
            authorization: Some(creds::basic("ops-admin", "pw-ops")),
            request: Request::get("/cse-in"),
            explain: args(&[
                "--method",
                "basic",
                "--as",
                "ops-admin",
                "retrieve",
                "/cse-in",
            ]),
            status: 403,
        },
        Case {
            ri: "bearer-gw",
            cert: None,
            authorization: Some("Bearer tok-gw".into()),
            request: Request::new("DELETE", "/~/id-in/cse-in"),
            explain: args(&[
                "--method",
                "bearer",
                "--as",
                "gateway-1",
                "delete",
                "/~/id-in/cse-in",
            ]),
            status: 403,
        },
        Case {
            ri: "jwt-admin",
            cert: None,
            authorization: Some(format!("Bearer {jwt}")),
            request: Request::get("/cse-in/x").header("X-M2M-Origin", "CAdmin"),
            explain: args(&[
                "--method",
                "jwt",
                "--claims",
                &jwt_claims.to_string(),
                "--originator",
                "CAdmin",
                "retrieve",
                "/cse-in/x",
            ]),
            status: 200,
        },
        Case {
            ri: "introspection-mn",
            cert: None,
            authorization: Some("Bearer IDENTITY-TOKEN//tok-mn".into()),
            request: create_csr(),
            explain: args(&[
                "--method",
                "introspection",
                "--claims",
                &answer_mn,
                "create",
                "/cse-in",
                "--ty",
                "remoteCSE",
            ]),
            status: 403,
        },
    ];
    for case in &cases {
        let mut req = case.request.clone().header("X-M2M-RI", case.ri);
        if let Some(a) = &case.authorization {
            req = req.header("Authorization", a);
        }
        let client = case.cert.map(cert);
        let resp = s.tls(client).connect_and_request(s.addr, &req).unwrap();
        assert_eq!(resp.status, case.status, "{}: {}", case.ri, resp.text());
        let needle = format!("\"request_id\":\"{}\"", case.ri);
        let log = s
            .proxy
            .wait_stdout(&needle, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{}: no access-log line", case.ri));
        let line: Value =
            serde_json::from_str(log.lines().find(|l| l.contains(&needle)).unwrap()).unwrap();
        let mut all = vec!["explain", "--config", config.as_str()];
        all.extend(case.explain.iter().map(String::as_str));
        let explained = read_explain(run_cli(&bin(), &all));
        let ri = case.ri;
        assert_eq!(
            explained.code,
            if case.status == 200 { 0 } else { 1 },
            "{ri}"
        );
        assert_eq!(
            line["originator"].as_str(),
            explained.originator.as_deref(),
            "{ri}: originator"
        );
        if explained.originator.is_some() {
            let roles: Vec<String> =
                serde_json::from_value(line["roles"].clone()).unwrap_or_default();
            assert_eq!(roles, explained.roles, "{ri}: roles");
        }
        assert_eq!(
            line["rule"].as_str(),
            explained.rule.as_deref(),
            "{ri}: rule"
        );
    }
    // the issue's case: a Basic user mapped to CAdmin is explained with the originator the
    // proxy binds, and no role of the certificate named like it
    let (code, out, _) = run_cli(
        &bin(),
        &[
            "explain",
            "--config",
            &config,
            "--method",
            "basic",
            "--as",
            "ops-admin",
            "retrieve",
            "/cse-in",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("identity: ops-admin (method basic, roles [auditor])"),
        "{out}"
    );
    assert!(out.contains("originator: CAdmin (mode overwrite"), "{out}");
    let (code, out, _) = run_cli(
        &bin(),
        &[
            "explain",
            "--config",
            &config,
            "--method",
            "basic",
            "--as",
            "Cadmin-tool",
            "retrieve",
            "/cse-in",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("roles [])"),
        "no certificate role for a Basic user: {out}"
    );
    // an error in the question is exit 2
    let (code, _, err) = run_cli(
        &bin(),
        &[
            "explain", "--config", &config, "--method", "jwt", "--as", "x", "retrieve", "/cse-in",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--claims"), "{err}");
}

/// The rule set of the README's "Rules and Mcc" example: deletes are for sysops, except that a
/// registered CSE may delete its own `<remoteCSE>` (ACME deletes it before it registers again,
/// and when it stops).
const MCC_RULES: &str = "authorization:
  default: allow
  rules:
    - name: mn-manages-its-registration
      identities: [\"/id-mn\"]
      methods: [mtls]
      originators: [\"^/id-mn$\"]
      operations: [delete]
      targets: [\"/cse-in/id-mn\"]
      effect: allow
    - name: sysop-only-deletes
      operations: [delete]
      unless_roles: [sysop]
      effect: deny
    - name: only-cses-register-cses
      operations: [create]
      resource_types: [remoteCSE]
      unless_roles: [cse]
      effect: deny
";

/// Issue 25.5: the MN's registration sequence at its registrar (as ACME sends it through its
/// egress route: tests/e2e/acme-mcc.sh, ../shared/notes/onem2m-mcc.md) passes the rules above,
/// de-registration included; the same delete from anyone else is refused.
#[test]
fn a_registered_cse_may_delete_and_recreate_its_remote_cse_and_nobody_else_may() {
    // the IN's sidecar of deploy/README.md: devices overwritten, CSEs verified in their namespace
    let s = Scenario::start_with_opts(
        ScenarioOpts {
            client_cert: "optional".into(),
            methods: "[mtls, basic]".into(),
            originator:
                "mode: overwrite\nby_role:\n  - {role: cse, mode: verify, cse_namespace: true}"
                    .into(),
            extra: format!("{CSE}{MCC_RULES}"),
            ..Default::default()
        },
        |f| {
            let htpasswd = f.pki.write(
                "htpasswd",
                format!("{}\n", creds::htpasswd_line("/id-mn", "pw-namesake")).as_bytes(),
            );
            ScenarioOpts {
                extra_auth: format!("{ROLES}\nbasic:\n  htpasswd: {}", htpasswd.display()),
                ..f.opts.clone()
            }
        },
    );
    let csr = || {
        Request::post(
            "/~/id-in/cse-in",
            br#"{"m2m:csr":{"rn":"id-mn","csi":"/id-mn","cb":"/id-mn/cse-mn","rr":true,"poa":["https://mn.example:8443"]}}"#.to_vec(),
        )
        .header("Content-Type", "application/json;ty=16")
    };
    let own = "/~/id-in/cse-in/id-mn";
    // what the MN sends at (re-)registration, at its periodic check and when it stops
    let sequence = [
        ("delete the stale registration", Request::new("DELETE", own)),
        ("register", csr()),
        (
            "retrieve the registrar's CSEBase",
            Request::get("/~/id-in/cse-in"),
        ),
        ("check the registration", Request::get(own)),
        ("deregister", Request::new("DELETE", own)),
    ];
    for (what, req) in sequence {
        let before = s.upstream.count();
        let resp = as_cert(&s, "/id-mn", &req.header("X-M2M-Origin", "/id-mn"));
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        assert_eq!(s.upstream.count(), before + 1, "{what}: forwarded");
    }
    // the same delete from anyone else: another CSE, an AE of the MN forwarded by it, a Basic
    // user named like the MN, a device; and the MN deleting anything else
    let delete_own = || Request::new("DELETE", own);
    let before = s.upstream.count();
    for (who, resp) in [
        ("another CSE", as_cert(&s, "/id-mn2", &delete_own())),
        (
            "an AE of the MN",
            as_cert(
                &s,
                "/id-mn",
                &delete_own().header("X-M2M-Origin", "/id-mn/Cae1"),
            ),
        ),
        (
            "a Basic user named /id-mn",
            s.tls(None)
                .connect_and_request(
                    s.addr,
                    &delete_own().header("Authorization", &creds::basic("/id-mn", "pw-namesake")),
                )
                .unwrap(),
        ),
        ("a device", as_cert(&s, "Cae-1", &delete_own())),
        (
            "the MN deleting something else",
            as_cert(
                &s,
                "/id-mn",
                &Request::new("DELETE", "/~/id-in/cse-in/id-mn2"),
            ),
        ),
        (
            "a device registering a CSE",
            as_cert(&s, "Cae-1", &csr().header("X-M2M-Origin", "Cae-1")),
        ),
    ] {
        assert_eq!(resp.status, 403, "{who}: {}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("4103"), "{who}");
    }
    assert_eq!(s.upstream.count(), before, "nothing refused was forwarded");
    // a sysop still deletes
    assert_eq!(as_cert(&s, "Cadmin-tool", &delete_own()).status, 200);
}
