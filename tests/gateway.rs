//! The core gateway over real TLS: the proven identity becomes `X-M2M-Origin`, spoofing is
//! impossible, failures answer in oneM2M form.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::scenario::{Scenario, ScenarioOpts};
use common::{free_port, run_cli, ClientOpts, EchoUpstream, Request};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_m2m-auth-proxy"))
}

fn origins_seen(s: &Scenario) -> Vec<String> {
    s.upstream
        .last()
        .expect("the upstream received the request")
        .header_values("X-M2M-Origin")
}

#[test]
fn uri_san_becomes_the_only_originator_whatever_the_client_sends() {
    let s = Scenario::start(ScenarioOpts::default());
    let client = s.client(ClientOpts::uri("Cae-sensor1"));
    let mut conn = s.tls(Some(&client)).connect(s.addr).expect("handshake");
    let spoofs: &[&[(&str, &str)]] = &[
        &[],
        &[("X-M2M-Origin", "CAdmin")],
        &[("x-m2m-origin", "CAdmin")],
        &[("X-M2M-ORIGIN", "CAdmin"), ("X-M2M-Origin", "Cother")],
        &[("X-M2M-Origin", "")],
    ];
    for spoof in spoofs {
        let mut req = Request::get("/cse-in").header("X-M2M-RI", "ri-1");
        for (k, v) in *spoof {
            req = req.header(k, v);
        }
        // several requests on one keep-alive connection: the identity stays the connection's
        let resp = conn.request(&req).expect("response");
        assert_eq!(resp.status, 200, "{spoof:?}: {}", resp.text());
        assert_eq!(origins_seen(&s), vec!["Cae-sensor1"], "spoof {spoof:?}");
    }
    assert_eq!(s.upstream.count(), spoofs.len());
}

#[test]
fn onem2m_identity_forms_are_kept_raw() {
    let s = Scenario::start(ScenarioOpts::default());
    for uri in ["//openmtc.org/mn-cse-1/CTestIPE", "/id-mn", "Cae-x_1"] {
        let client = s.client(ClientOpts::uri(uri).file(&format!("c{}", uri.len())));
        let resp = s
            .tls(Some(&client))
            .connect_and_request(
                s.addr,
                &Request::get("/cse-in").header("X-M2M-Origin", "CAdmin"),
            )
            .expect("response");
        assert_eq!(resp.status, 200);
        assert_eq!(origins_seen(&s), vec![uri.to_string()]);
        assert_eq!(resp.json()["origin"], uri);
    }
}

#[test]
fn identity_fields_are_tried_in_the_configured_order() {
    let s = Scenario::start(ScenarioOpts {
        mtls: "identity: [email, dns, cn]\noriginator: \"^(?:mailto:)?(?P<originator>[^@]+)\""
            .into(),
        ..Default::default()
    });
    let cases = [
        (
            ClientOpts::cn("Ccn-only").with_uri("Curi-ignored"),
            "Ccn-only",
        ),
        (
            ClientOpts::dns("Cdns.example").with_cn("Ccn"),
            "Cdns.example",
        ),
        (
            ClientOpts::email("Cmail@example.org").with_dns("d.example"),
            "Cmail",
        ),
    ];
    for (i, (opts, expected)) in cases.into_iter().enumerate() {
        let client = s.client(opts.file(&format!("c{i}")));
        let resp = s
            .tls(Some(&client))
            .connect_and_request(s.addr, &Request::get("/x"))
            .expect("response");
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(origins_seen(&s), vec![expected.to_string()]);
    }
}

#[test]
fn identity_not_matching_the_originator_pattern_is_forbidden_in_onem2m_form() {
    let s = Scenario::start(ScenarioOpts {
        mtls: "identity: [uri]\noriginator: \"^urn:m2m:(?P<originator>C[A-Za-z0-9-]+)$\"".into(),
        ..Default::default()
    });
    let good = s.client(ClientOpts::uri("urn:m2m:Cae-1").file("good"));
    let resp = s
        .tls(Some(&good))
        .connect_and_request(s.addr, &Request::get("/x"))
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(origins_seen(&s), vec!["Cae-1"]);

    let before = s.upstream.count();
    let bad = s.client(ClientOpts::uri("urn:other:Cae-1").file("bad"));
    let resp = s
        .tls(Some(&bad))
        .connect_and_request(s.addr, &Request::get("/x").header("X-M2M-RI", "req-77"))
        .unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(resp.header("X-M2M-RSC"), Some("4103"));
    assert_eq!(resp.header("X-M2M-RI"), Some("req-77"));
    assert!(resp.json()["m2m:dbg"]
        .as_str()
        .unwrap()
        .contains("originator pattern"));
    assert_eq!(s.upstream.count(), before, "nothing forwarded");
}

#[test]
fn foreign_ca_expired_and_not_yet_valid_certificates_never_reach_the_upstream() {
    for mode in ["required", "optional"] {
        let s = Scenario::start(ScenarioOpts {
            client_cert: mode.into(),
            ..Default::default()
        });
        let rogue_ca = s.pki.ca("rogue");
        let rogue = s
            .pki
            .client(&rogue_ca, ClientOpts::uri("Cae-sensor1").file("rogue"));
        let expired = s.client(ClientOpts::uri("Cae-sensor1").expired().file("expired"));
        let future = s.client(
            ClientOpts::uri("Cae-sensor1")
                .not_yet_valid()
                .file("future"),
        );
        for (name, cert) in [
            ("foreign CA", &rogue),
            ("expired", &expired),
            ("not yet valid", &future),
        ] {
            let result = s
                .tls(Some(cert))
                .connect_and_request(s.addr, &Request::get("/x"));
            assert!(
                result.is_err(),
                "{mode}/{name}: accepted: {:?}",
                result.map(|r| r.status)
            );
        }
        assert_eq!(s.upstream.count(), 0, "{mode}");
        // the proxy keeps serving
        let good = s.client(ClientOpts::uri("Cae-ok").file("ok"));
        assert_eq!(
            s.tls(Some(&good))
                .connect_and_request(s.addr, &Request::get("/x"))
                .unwrap()
                .status,
            200
        );
    }
}

#[test]
fn no_certificate_required_fails_the_handshake_optional_gets_401_challenge() {
    let s = Scenario::start(ScenarioOpts {
        client_cert: "required".into(),
        ..Default::default()
    });
    assert!(s
        .tls(None)
        .connect_and_request(s.addr, &Request::get("/x"))
        .is_err());
    assert_eq!(s.upstream.count(), 0);

    let s = Scenario::start(ScenarioOpts {
        client_cert: "optional".into(),
        ..Default::default()
    });
    let resp = s
        .tls(None)
        .connect_and_request(
            s.addr,
            &Request::get("/x")
                .header("X-M2M-RI", "abc")
                .header("X-M2M-Origin", "CAdmin"),
        )
        .unwrap();
    assert_eq!(resp.status, 401);
    assert_eq!(resp.header("X-M2M-RSC"), Some("4107"));
    assert_eq!(resp.header("X-M2M-RI"), Some("abc"));
    assert!(resp.header("WWW-Authenticate").is_some());
    assert_eq!(resp.json()["m2m:dbg"], "authentication required");
    assert_eq!(s.upstream.count(), 0);
}

#[test]
fn anonymous_allow_forwards_without_any_originator() {
    let s = Scenario::start(ScenarioOpts {
        client_cert: "optional".into(),
        extra_auth: "anonymous: allow".into(),
        ..Default::default()
    });
    let resp = s
        .tls(None)
        .connect_and_request(s.addr, &Request::get("/x").header("X-M2M-Origin", "CAdmin"))
        .unwrap();
    assert_eq!(resp.status, 200);
    assert!(origins_seen(&s).is_empty());
}

#[test]
fn verify_mode_refuses_other_originators_and_allows_cse_namespaces() {
    let s = Scenario::start(ScenarioOpts {
        originator: "mode: verify\ncse_namespace: true\nallow:\n  Cgw: [\"Cgw-*\"]".into(),
        ..Default::default()
    });
    let ae = s.client(ClientOpts::uri("Cae1").file("ae"));
    let mn = s.client(ClientOpts::uri("/id-mn").file("mn"));
    let gw = s.client(ClientOpts::uri("Cgw").file("gw"));
    let cases: &[(&_, &[&str], u16, Option<&str>)] = &[
        (&ae, &[], 200, Some("Cae1")),
        (&ae, &["Cae1"], 200, Some("Cae1")),
        (&ae, &["cAE1"], 403, None),
        (&ae, &["CAdmin"], 403, None),
        (&ae, &["Cae1", "CAdmin"], 403, None),
        (&mn, &["/id-mn/Cae7"], 200, Some("/id-mn/Cae7")),
        (&mn, &["/id-in/Cae7"], 403, None),
        (&gw, &["Cgw-17"], 200, Some("Cgw-17")),
        (&gw, &["Cgx-17"], 403, None),
    ];
    for (client, claims, status, forwarded) in cases {
        let before = s.upstream.count();
        let mut req = Request::get("/x").header("X-M2M-RI", "ri");
        for c in *claims {
            req = req.header("X-M2M-Origin", c);
        }
        let resp = s
            .tls(Some(client))
            .connect_and_request(s.addr, &req)
            .unwrap();
        assert_eq!(resp.status, *status, "{claims:?}: {}", resp.text());
        match forwarded {
            Some(o) => assert_eq!(origins_seen(&s), vec![o.to_string()]),
            None => {
                assert_eq!(resp.header("X-M2M-RSC"), Some("4103"));
                assert_eq!(
                    s.upstream.count(),
                    before,
                    "{claims:?} must not be forwarded"
                );
            }
        }
    }
}

#[test]
fn spoofable_headers_are_replaced_and_authorization_is_not_forwarded() {
    let s = Scenario::start(ScenarioOpts::default());
    let client = s.client(ClientOpts::uri("Cae1"));
    let req = Request::get("/x")
        .header("X-Forwarded-For", "10.1.2.3")
        .header("X-Forwarded-Proto", "http")
        .header("Forwarded", "for=10.1.2.3")
        .header("X-SSL-Client-DN", "CN=CAdmin")
        .header("Authorization", "Bearer secret-token-value");
    let resp = s
        .tls(Some(&client))
        .connect_and_request(s.addr, &req)
        .unwrap();
    assert_eq!(resp.status, 200);
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.header_values("X-Forwarded-For"), vec!["127.0.0.1"]);
    assert_eq!(seen.header_values("X-Forwarded-Proto"), vec!["https"]);
    assert!(seen.header_values("Forwarded").is_empty());
    assert!(seen.header_values("X-SSL-Client-DN").is_empty());
    assert!(seen.header_values("Authorization").is_empty());

    let s = Scenario::start(ScenarioOpts {
        extra_auth: "forward_authorization: true".into(),
        ..Default::default()
    });
    let client = s.client(ClientOpts::uri("Cae1"));
    s.tls(Some(&client))
        .connect_and_request(
            s.addr,
            &Request::get("/x").header("Authorization", "Bearer abc"),
        )
        .unwrap();
    assert_eq!(
        s.upstream.last().unwrap().header_values("Authorization"),
        vec!["Bearer abc"]
    );
}

#[test]
fn request_bodies_are_streamed_to_the_upstream() {
    let s = Scenario::start(ScenarioOpts::default());
    let client = s.client(ClientOpts::uri("Cae1"));
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    let body = br#"{"m2m:cin":{"con":"21.5"}}"#.to_vec();
    let resp = conn
        .request(
            &Request::post("/cse-in/cnt", body.clone())
                .header("Content-Type", "application/json;ty=4"),
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(s.upstream.last().unwrap().body, body);
    let resp = conn
        .request(&Request::new("POST", "/cse-in/cnt").chunked(&[b"part-one,", b"part-two"]))
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        s.upstream.last().unwrap().body,
        b"part-one,part-two".to_vec()
    );
}

#[test]
fn tls_1_2_works_and_the_response_comes_back_unchanged() {
    let s = Scenario::start(ScenarioOpts::default());
    let client = s.client(ClientOpts::uri("Cae1"));
    let mut conn = s.tls(Some(&client)).max_tls12().connect(s.addr).unwrap();
    assert_eq!(conn.tls_version().as_deref(), Some("TLSv1.2"));
    let resp = conn
        .request(&Request::get("/x").header("X-M2M-RI", "r-12"))
        .unwrap();
    assert_eq!(resp.status, 200);
    // the upstream's own oneM2M headers pass through
    assert_eq!(resp.header("X-M2M-RSC"), Some("2000"));
    assert_eq!(resp.header("X-M2M-RI"), Some("r-12"));
}

#[test]
fn tls_groups_limit_the_key_exchange_and_unknown_groups_are_config_errors() {
    let s = Scenario::start(ScenarioOpts {
        extra_tls: "groups: \"P-256:P-384\"".into(),
        ..Default::default()
    });
    let client = s.client(ClientOpts::uri("Cae1"));
    // a client offering only X25519 finds no common group
    let refused = s.tls(Some(&client)).groups("X25519").connect(s.addr);
    assert!(refused.is_err(), "X25519 must not be negotiated");
    for tls12 in [false, true] {
        let tls = s.tls(Some(&client)).groups("X25519:P-256");
        let tls = if tls12 { tls.max_tls12() } else { tls };
        let resp = tls
            .connect_and_request(s.addr, &Request::get("/x"))
            .unwrap();
        assert_eq!(resp.status, 200, "tls 1.2 only: {tls12}");
    }

    let files = Scenario::files_only(ScenarioOpts {
        extra_tls: "groups: \"X25519:NoSuchCurve\"".into(),
        ..Default::default()
    });
    let config = files.write_config(&files.config_yaml());
    let (code, _, err) = run_cli(&bin(), &["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("tls.groups") && err.contains("NoSuchCurve"),
        "{err}"
    );
}

#[test]
fn upstream_down_gives_502_5103_and_recovery_is_seen() {
    let mut s = Scenario::start(ScenarioOpts::default());
    let client = s.client(ClientOpts::uri("Cae1"));
    let port = s.upstream.port();
    s.stop_upstream();
    let resp = s
        .tls(Some(&client))
        .connect_and_request(s.addr, &Request::get("/x").header("X-M2M-RI", "down-1"))
        .unwrap();
    assert_eq!(resp.status, 502);
    assert_eq!(resp.header("X-M2M-RSC"), Some("5103"));
    assert_eq!(resp.header("X-M2M-RI"), Some("down-1"));
    assert!(resp.json()["m2m:dbg"].is_string());

    s.upstream = EchoUpstream::start_on(port);
    let resp = s
        .tls(Some(&client))
        .connect_and_request(s.addr, &Request::get("/x"))
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(origins_seen(&s), vec!["Cae1"]);
}

#[test]
fn upstream_slower_than_the_timeout_gives_504() {
    let s = Scenario::start(ScenarioOpts {
        upstream_timeout: Some("1s".into()),
        ..Default::default()
    });
    s.upstream.set_delay(Duration::from_secs(3));
    let client = s.client(ClientOpts::uri("Cae1"));
    let resp = s
        .tls(Some(&client))
        .connect_and_request(s.addr, &Request::get("/x").header("X-M2M-RI", "slow"))
        .unwrap();
    assert_eq!(resp.status, 504);
    assert_eq!(resp.header("X-M2M-RSC"), Some("5103"));
    assert_eq!(resp.header("X-M2M-RI"), Some("slow"));
}

#[test]
fn websocket_upgrade_passes_after_the_same_authentication() {
    let s = Scenario::start(ScenarioOpts {
        client_cert: "optional".into(),
        ..Default::default()
    });
    // without credentials: refused before anything reaches the CSE
    let resp = s
        .tls(None)
        .connect_and_request(s.addr, &Request::websocket("/ws", &["oneM2M.json"]))
        .unwrap();
    assert_eq!(resp.status, 401);
    assert_eq!(s.upstream.count(), 0);

    let client = s.client(ClientOpts::uri("Cae-ws"));
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    let resp = conn
        .request(&Request::websocket("/ws", &["oneM2M.json"]).header("X-M2M-Origin", "CAdmin"))
        .unwrap();
    assert_eq!(resp.status, 101, "{}", resp.text());
    assert_eq!(resp.header("Sec-WebSocket-Protocol"), Some("oneM2M.json"));
    assert_eq!(origins_seen(&s), vec!["Cae-ws"]);
    let msg = br#"{"op":2,"to":"/cse-in","fr":"Cae-ws","rqi":"1","rvi":"3"}"#;
    conn.ws_send(1, msg, true).unwrap();
    let (opcode, payload, fin) = conn.ws_recv().unwrap();
    assert_eq!((opcode, fin), (1, true));
    assert_eq!(
        payload,
        br#"{"op":2,"to":"\/cse-in","fr":"Cae-ws","rqi":"1","rvi":"3"}"#.to_vec(),
        "the primitive as the proxy re-encoded it"
    );
}

#[test]
fn admin_endpoints_are_not_on_the_public_listener() {
    let s = Scenario::start(ScenarioOpts::default());
    assert_eq!(s.proxy.admin_get("/healthz").unwrap().0, 200);
    assert_eq!(s.proxy.admin_get("/readyz").unwrap().0, 200);
    let client = s.client(ClientOpts::uri("Cae1"));
    s.tls(Some(&client))
        .connect_and_request(s.addr, &Request::get("/healthz"))
        .unwrap();
    // the public listener forwards /healthz to the CSE like any other path
    assert_eq!(s.upstream.last().unwrap().path, "/healthz");
}

#[test]
fn check_reports_what_would_run_and_names_file_and_key_on_errors() {
    let s = Scenario::files_only(ScenarioOpts::default());
    let good = s.write_config(&s.config_yaml());
    let (code, out, err) = run_cli(&bin(), &["check", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("OK") && out.contains("client certificates: required"),
        "{out}"
    );

    let typo = s.write_config(&s.config_yaml().replace("identity:", "identiy:"));
    let (code, _, err) = run_cli(&bin(), &["check", "--config", typo.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(typo.to_str().unwrap()) && err.contains("identiy"),
        "{err}"
    );

    let bad_mode = s.write_config(
        &s.config_yaml()
            .replace("client_cert: required", "client_cert: sometimes"),
    );
    let (code, _, err) = run_cli(&bin(), &["check", "--config", bad_mode.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("client_cert") && err.contains("sometimes"),
        "{err}"
    );

    let missing = s.write_config(
        &s.config_yaml()
            .replace(s.server.key.to_str().unwrap(), "/nonexistent/missing.key"),
    );
    let (code, _, err) = run_cli(&bin(), &["check", "--config", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("missing.key"), "{err}");

    let other = s.pki.server(&s.ca, "localhost", &["127.0.0.1"]);
    let mismatch = s.write_config(
        &s.config_yaml()
            .replace(s.server.key.to_str().unwrap(), other.key.to_str().unwrap()),
    );
    let (code, _, err) = run_cli(&bin(), &["check", "--config", mismatch.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("does not match"), "{err}");

    let bad_upstream = s.write_config(
        &s.config_yaml()
            .replace("http://127.0.0.1", "https://127.0.0.1"),
    );
    let (code, _, err) = run_cli(
        &bin(),
        &["check", "--config", bad_upstream.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("upstream") && err.contains("expected"),
        "{err}"
    );
}

#[test]
fn a_broken_config_stops_the_proxy_with_exit_code_1() {
    let port = free_port();
    let yaml =
        format!("listen: \"127.0.0.1:{port}\"\nupstream: \"http://127.0.0.1:1\"\nbogus: 1\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (code, _, err) = run_cli(&bin(), &["--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("bogus"), "{err}");
}

/// `request_path` chose between two request paths; there is one now. A config that still sets
/// it (whatever the value) is refused by `check` and at start, naming the key and why.
#[test]
fn a_config_that_still_sets_request_path_is_refused_by_check_and_at_start() {
    let s = Scenario::files_only(ScenarioOpts::default());
    for value in ["lean", "pipeline"] {
        let path = s.write_config(&format!("{}request_path: {value}\n", s.config_yaml()));
        for args in [
            vec!["check", "--config", path.to_str().unwrap()],
            vec!["--config", path.to_str().unwrap()],
        ] {
            let (code, out, err) = run_cli(&bin(), &args);
            assert_eq!(code, 1, "{args:?} {value}: {out}{err}");
            assert!(
                err.contains(path.to_str().unwrap())
                    && err.contains("request_path")
                    && err.contains("one request path"),
                "{args:?} {value}: {err}"
            );
        }
    }
}

#[test]
fn demo_runs_the_example_config_with_its_echo_upstream() {
    // the quick start: the example config and dev certificates, on free ports
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.path().join("certs/dev")).unwrap();
    for entry in std::fs::read_dir(root.join("certs/dev")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            dir.path().join("certs/dev").join(entry.file_name()),
        )
        .unwrap();
    }
    let (port, admin, upstream) = (free_port(), free_port(), free_port());
    let example = std::fs::read_to_string(root.join("proxy.yaml.example")).unwrap();
    let config = example
        .replace("127.0.0.1:8443", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9091", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{upstream}"));
    assert_ne!(
        config, example,
        "the example's addresses changed: update this test"
    );
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["demo", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let certs = dir.path().join("certs/dev");
    let tls = common::ClientTls::new(certs.join("ca.pem")).cert_files(
        certs.join("client-Cae-sensor1.pem"),
        certs.join("client-Cae-sensor1.key"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let resp = loop {
        match tls.connect_and_request(
            addr,
            &Request::get("/cse-in").header("X-M2M-Origin", "CAdmin"),
        ) {
            Ok(r) => break r,
            Err(e) if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                panic!("demo not serving: {e}");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["origin"], "Cae-sensor1", "{}", resp.text());
    assert_eq!(resp.json()["echo"], "m2m-auth-proxy demo upstream");
}

/// The credentials this project publishes (certs/dev, the deploy example Secret) are refused
/// at start and on reload, with an error that says what to replace, unless the config allows
/// them (or the process is `demo`, tested above).
#[test]
fn published_example_credentials_are_refused_unless_allowed() {
    use common::creds::{htpasswd_line, tokens_yaml};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dev = |f: &str| root.join("certs/dev").join(f).display().to_string();
    let deploy = |f: &str| {
        root.join("deploy/kubernetes/base/example-credentials")
            .join(f)
            .display()
            .to_string()
    };
    let opts = ScenarioOpts {
        client_cert: "optional".into(),
        methods: "[mtls, bearer, basic]".into(),
        ..Default::default()
    };
    let files = Scenario::files_only(opts.clone());
    let htpasswd = files.pki.write(
        "htpasswd",
        format!("{}\n", htpasswd_line("Cown", "own password")).as_bytes(),
    );
    let tokens = files.pki.write(
        "tokens.yaml",
        tokens_yaml(&[("own", "own-token-0123456789", "Cown-gw")]).as_bytes(),
    );
    let with = |htpasswd: &str, tokens: &str, extra: &str| ScenarioOpts {
        extra_auth: format!("basic:\n  htpasswd: {htpasswd}\nbearer:\n  tokens: {tokens}"),
        extra: extra.into(),
        ..opts.clone()
    };
    let (own_h, own_t) = (htpasswd.display().to_string(), tokens.display().to_string());
    let own = files.config_yaml_with(&with(&own_h, &own_t, ""));
    let check = |yaml: &str| {
        let path = files.write_config(yaml);
        run_cli(&bin(), &["check", "--config", path.to_str().unwrap()])
    };
    let (code, _, err) = check(&own);
    assert_eq!(code, 0, "{err}");

    let server = (
        files.server.chain.display().to_string(),
        files.server.key.display().to_string(),
    );
    let egress = format!(
        "egress:\n  - name: r\n    listen: \"127.0.0.1:{}\"\n    peer: \"https://127.0.0.1:1\"\n    tls:\n      ca: {}\n      cert: {}\n      key: {}\n",
        free_port(),
        files.ca.cert.display(),
        dev("client-id-mn.pem"),
        dev("client-id-mn.key")
    );
    let cases = [
        (
            own.replace(&server.0, &dev("server.pem"))
                .replace(&server.1, &dev("server.key")),
            &["key `tls.cert`", "certs/dev/server.pem", "Replace it with"][..],
        ),
        (
            own.replace(&files.ca.cert.display().to_string(), &dev("ca.pem")),
            &["key `tls.client_ca`", "certs/dev/ca.pem"][..],
        ),
        (
            files.config_yaml_with(&with(&deploy("htpasswd"), &own_t, "")),
            &[
                "auth.basic.htpasswd",
                "\"example\"",
                "m2m-auth-proxy passwd example",
            ][..],
        ),
        (
            files.config_yaml_with(&with(&dev("htpasswd"), &own_t, "")),
            &["\"Cae-basic1\"", "certs/dev/htpasswd"][..],
        ),
        (
            files.config_yaml_with(&with(&own_h, &dev("tokens.yaml"), "")),
            &[
                "auth.bearer.tokens",
                "certs/dev/tokens.yaml",
                "m2m-auth-proxy token",
            ][..],
        ),
        (
            files.config_yaml_with(&with(&own_h, &deploy("tokens.yaml"), "")),
            &["deploy/kubernetes/base/example-credentials/tokens.yaml"][..],
        ),
        (
            files.config_yaml_with(&with(&own_h, &own_t, &egress)),
            &["egress[].tls.cert", "certs/dev/client-id-mn.pem"][..],
        ),
    ];
    for (yaml, expected) in &cases {
        let (code, out, err) = check(yaml);
        assert_eq!(code, 1, "accepted: {out}");
        for e in *expected {
            assert!(err.contains(e), "{e:?} missing in: {err}");
        }
        assert!(err.contains("allow_example_credentials: true"), "{err}");
    }
    // allowed explicitly: every one of them loads, with a warning
    for (yaml, _) in &cases {
        let (code, out, err) = check(&format!("{yaml}\nallow_example_credentials: true\n"));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("WARNING: allow_example_credentials"), "{out}");
    }

    // on reload: the published tokens file is refused, the one in force stays
    let s = Scenario::start_with_opts(opts.clone(), |f| {
        let h = f
            .pki
            .write("htpasswd", std::fs::read(&htpasswd).unwrap().as_slice());
        let t = f
            .pki
            .write("tokens.yaml", std::fs::read(&tokens).unwrap().as_slice());
        with(&h.display().to_string(), &t.display().to_string(), "")
    });
    let bearer = |token: &str| {
        s.tls(None)
            .connect_and_request(
                s.addr,
                &Request::get("/x").header("Authorization", &format!("Bearer {token}")),
            )
            .unwrap()
            .status
    };
    assert_eq!(bearer("own-token-0123456789"), 200);
    common::proxy::write_atomic(
        &s.pki.path("tokens.yaml"),
        &std::fs::read(root.join("certs/dev/tokens.yaml")).unwrap(),
    );
    assert!(
        s.proxy
            .wait_stderr("certs/dev/tokens.yaml", Duration::from_secs(10)),
        "{}",
        s.proxy.stderr_text()
    );
    assert_eq!(bearer("demo-token-INSECURE"), 401);
    assert_eq!(bearer("own-token-0123456789"), 200);
}
