//! Basic and Bearer authentication from credential files written by the real tools, over TLS:
//! each identity bound to its originator, refusals in oneM2M form, brute force limited.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::creds::metric;
use common::scenario::{bin, Scenario, ScenarioFiles, ScenarioOpts};
use common::{run_cli, ClientOpts, Request, Response};

fn htpasswd(args: &[&str]) -> String {
    let out = Command::new("htpasswd")
        .args(args)
        .output()
        .expect("htpasswd (apache2-utils) is installed");
    assert!(
        out.status.success(),
        "htpasswd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn basic(user: &str, password: &str) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {enc}")
}

/// A token made by the proxy's own `token` command: (token, tokens-file entry).
fn make_token(name: &str, originator: &str, expires: Option<&str>) -> (String, String) {
    let mut args = vec!["token", name, "--originator", originator];
    if let Some(e) = expires {
        args.extend(["--expires", e]);
    }
    let (code, out, err) = run_cli(&bin(), &args);
    assert_eq!(code, 0, "{err}");
    let (token, entry) = out.split_once('\n').expect("token, then the YAML entry");
    (token.trim().to_string(), entry.to_string())
}

const USERS: &[(&str, &[&str])] = &[
    ("Cbcrypt", &["-nbB", "-C", "5"]),
    ("Capr1", &["-nbm"]),
    ("Csha1", &["-nbs"]),
    ("Csha256", &["-nb2"]),
    ("Csha512", &["-nb5"]),
];
const PASSWORD: &str = "correct horse:battery";

struct Creds {
    htpasswd: PathBuf,
    tokens: PathBuf,
    gateway_token: String,
    expired_token: String,
}

fn write_credentials(f: &ScenarioFiles) -> Creds {
    let mut lines = vec![
        "# written by htpasswd(1) and m2m-auth-proxy passwd".to_string(),
        String::new(),
    ];
    for (user, flags) in USERS {
        let mut args = flags.to_vec();
        args.extend([*user, PASSWORD]);
        lines.push(htpasswd(&args));
    }
    let (code, own, err) = run_cli_stdin(&["passwd", "Cown"], PASSWORD);
    assert_eq!(code, 0, "{err}");
    lines.push(own.trim().to_string());
    lines.push(htpasswd(&["-nbB", "-C", "5", "om2m-admin", PASSWORD]));
    let htpasswd = f
        .pki
        .write("htpasswd", (lines.join("\n") + "\n").as_bytes());

    let (gateway_token, gateway) = make_token("gateway-1", "CgatewayA", None);
    let (expired_token, expired) = make_token("old-gateway", "Cold", Some("2020-01-01T00:00:00Z"));
    let tokens = f.pki.write(
        "tokens.yaml",
        format!("tokens:\n{gateway}{expired}").as_bytes(),
    );
    Creds {
        htpasswd,
        tokens,
        gateway_token,
        expired_token,
    }
}

fn run_cli_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{stdin}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn auth_yaml(c: &Creds, extra: &str, allow_declared: bool) -> String {
    format!(
        "basic:\n  htpasswd: {}\n  originators:\n    om2m-admin: \"admin:admin\"\nbearer:\n  tokens: {}\n  allow_declared: {allow_declared}\n{extra}",
        c.htpasswd.display(),
        c.tokens.display()
    )
}

/// Proxy with methods `methods`, client certificates optional, credentials from the real tools.
fn start(methods: &str, extra_auth: &str) -> (Scenario, Creds) {
    start_declared(methods, extra_auth, false)
}

fn start_declared(methods: &str, extra_auth: &str, allow_declared: bool) -> (Scenario, Creds) {
    let mut creds = None;
    let opts = ScenarioOpts {
        client_cert: "optional".into(),
        methods: methods.into(),
        ..Default::default()
    };
    let s = Scenario::start_with_opts(opts, |f| {
        let c = write_credentials(f);
        let auth = auth_yaml(&c, extra_auth, allow_declared);
        creds = Some(c);
        ScenarioOpts {
            extra_auth: auth,
            ..f.opts.clone()
        }
    });
    (s, creds.unwrap())
}

fn get(s: &Scenario, headers: &[(&str, &str)]) -> Response {
    let mut req = Request::get("/cse-in").header("X-M2M-RI", "ri-9");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    s.tls(None)
        .connect_and_request(s.addr, &req)
        .expect("response")
}

fn assert_refused(s: &Scenario, resp: &Response, status: u16, before: usize) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(resp.header("X-M2M-RI"), Some("ri-9"));
    assert!(resp.json()["m2m:dbg"].is_string());
    assert_eq!(
        s.upstream.count(),
        before,
        "a refused request reached the upstream"
    );
}

#[test]
fn every_htpasswd_format_authenticates_and_binds_the_originator() {
    let (s, _) = start("[basic]", "");
    let mut users: Vec<&str> = USERS.iter().map(|(u, _)| *u).collect();
    users.push("Cown");
    for user in users {
        let resp = get(
            &s,
            &[
                ("Authorization", &basic(user, PASSWORD)),
                ("X-M2M-Origin", "CAdmin"),
            ],
        );
        assert_eq!(resp.status, 200, "{user}: {}", resp.text());
        let seen = s.upstream.last().unwrap();
        assert_eq!(
            seen.header_values("X-M2M-Origin"),
            vec![user.to_string()],
            "{user}"
        );
        assert!(
            seen.header_values("Authorization").is_empty(),
            "credentials forwarded"
        );

        let before = s.upstream.count();
        let resp = get(&s, &[("Authorization", &basic(user, "wrong password"))]);
        assert_refused(&s, &resp, 401, before);
        assert_eq!(resp.header("X-M2M-RSC"), Some("4107"));
        assert!(resp
            .header("WWW-Authenticate")
            .unwrap()
            .starts_with("Basic realm=\"oneM2M\""));
    }
    // a mapped originator (OM2M expects "admin:admin")
    let resp = get(&s, &[("Authorization", &basic("om2m-admin", PASSWORD))]);
    assert_eq!(resp.status, 200);
    assert_eq!(
        s.upstream.last().unwrap().header_values("X-M2M-Origin"),
        vec!["admin:admin"]
    );
}

#[test]
fn unknown_user_and_wrong_password_are_indistinguishable() {
    let (s, _) = start("[basic]", "");
    let wrong = get(&s, &[("Authorization", &basic("Cbcrypt", "nope"))]);
    let unknown = get(&s, &[("Authorization", &basic("Cnobody", "nope"))]);
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(unknown.body, wrong.body);
    assert_eq!(unknown.header("X-M2M-RSC"), wrong.header("X-M2M-RSC"));
}

#[test]
fn bearer_tokens_plain_arrowhead_expired_wrong_and_declared() {
    let (s, c) = start("[bearer]", "");
    let cases = [
        format!("Bearer {}", c.gateway_token),
        format!("Bearer IDENTITY-TOKEN//{}", c.gateway_token),
        format!("bearer {}", c.gateway_token),
    ];
    for auth in &cases {
        let resp = get(&s, &[("Authorization", auth), ("X-M2M-Origin", "CAdmin")]);
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(
            s.upstream.last().unwrap().header_values("X-M2M-Origin"),
            vec!["CgatewayA"]
        );
    }
    let before = s.upstream.count();
    let resp = get(
        &s,
        &[("Authorization", &format!("Bearer {}", c.expired_token))],
    );
    assert_refused(&s, &resp, 401, before);
    assert!(resp.json()["m2m:dbg"].as_str().unwrap().contains("expired"));
    let resp = get(
        &s,
        &[("Authorization", &format!("Bearer {}x", c.gateway_token))],
    );
    assert_refused(&s, &resp, 401, before);
    assert!(resp
        .header("WWW-Authenticate")
        .unwrap()
        .starts_with("Bearer"));
    // Arrowhead's declared identity carries no proof: refused unless explicitly allowed
    let resp = get(&s, &[("Authorization", "Bearer SYSTEM//CAdmin")]);
    assert_refused(&s, &resp, 401, before);
    // the token itself never shows up in the logs
    assert!(!s.proxy.stdout_text().contains(&c.gateway_token));
    assert!(!s.proxy.stderr_text().contains(&c.gateway_token));

    let (s, _) = start_declared("[bearer]", "", true);
    let resp = get(
        &s,
        &[("Authorization", "Bearer SYSTEM//TemperatureConsumer1")],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        s.upstream.last().unwrap().header_values("X-M2M-Origin"),
        vec!["TemperatureConsumer1"]
    );
    assert!(
        s.proxy.stderr_text().contains("allow_declared"),
        "loud warning at start"
    );
}

#[test]
fn malformed_authorization_headers_are_4xx_and_never_forwarded() {
    let (s, _) = start("[bearer, basic]", "");
    let enc = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let long = format!("Basic {}", "A".repeat(16 * 1024));
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![("Authorization", format!("Basic {}", enc(b"no-colon")))],
        vec![("Authorization", "Basic %%%not-base64%%%".to_string())],
        vec![("Authorization", format!("Basic {}", enc(b"\xff\xfe:\xfd")))],
        vec![("Authorization", format!("Basic {}", enc(b":password")))],
        vec![("Authorization", format!("Basic {}", enc(b"Cbcrypt:")))],
        vec![("Authorization", long)],
        vec![("Authorization", "Digest username=\"x\"".to_string())],
        vec![("Authorization", "Bearer".to_string())],
        vec![
            ("Authorization", basic("Cbcrypt", PASSWORD)),
            ("Authorization", basic("Capr1", PASSWORD)),
        ],
    ];
    for headers in &cases {
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = get(&s, &refs);
        assert!(
            (400..500).contains(&resp.status),
            "{:?}: {}",
            &headers[0].1[..20.min(headers[0].1.len())],
            resp.status
        );
        assert_eq!(s.upstream.count(), 0, "forwarded");
    }
    // raw bytes that are not UTF-8 in the header value itself
    let mut conn = s.tls(None).connect(s.addr).unwrap();
    conn.send_raw(
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic \xc3\x28\xa0\xa1\r\n\r\n",
    )
    .unwrap();
    let resp = conn.read_response().unwrap();
    assert!((400..500).contains(&resp.status), "{}", resp.status);
    assert_eq!(s.upstream.count(), 0);
}

#[test]
fn the_first_method_with_credentials_decides_without_falling_through() {
    let (s, _) = start("[basic, mtls]", "");
    let cert = s.client(ClientOpts::uri("Ccert"));
    let wrong = Request::get("/x").header("Authorization", &basic("Cbcrypt", "wrong"));
    let resp = s
        .tls(Some(&cert))
        .connect_and_request(s.addr, &wrong)
        .unwrap();
    assert_eq!(
        resp.status, 401,
        "wrong Basic must not fall through to the certificate"
    );
    assert_eq!(s.upstream.count(), 0);
    let right = Request::get("/x").header("Authorization", &basic("Cbcrypt", PASSWORD));
    assert_eq!(
        s.tls(Some(&cert))
            .connect_and_request(s.addr, &right)
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        s.upstream.last().unwrap().header_values("X-M2M-Origin"),
        vec!["Cbcrypt"]
    );

    let (s, _) = start("[mtls, basic]", "");
    let cert = s.client(ClientOpts::uri("Ccert"));
    let resp = s
        .tls(Some(&cert))
        .connect_and_request(s.addr, &wrong)
        .unwrap();
    assert_eq!(resp.status, 200, "the certificate comes first and decides");
    assert_eq!(
        s.upstream.last().unwrap().header_values("X-M2M-Origin"),
        vec!["Ccert"]
    );
}

#[test]
fn failed_attempts_are_rate_limited_and_good_clients_are_not() {
    let (s, _) = start(
        "[basic]",
        "rate_limit:\n  failures_per_minute: 1\n  burst: 3",
    );
    let mut conn = s.tls(None).connect(s.addr).unwrap();
    let good = Request::get("/x").header("Authorization", &basic("Capr1", PASSWORD));
    for _ in 0..30 {
        assert_eq!(conn.request(&good).unwrap().status, 200);
    }
    let bad = Request::get("/x")
        .header("Authorization", &basic("Capr1", "guess"))
        .header("X-M2M-RI", "bf");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let resp = s.tls(None).connect_and_request(s.addr, &bad).unwrap();
        if resp.status == 429 {
            assert!(resp.header("Retry-After").unwrap().parse::<u64>().unwrap() >= 1);
            assert_eq!(resp.header("X-M2M-RI"), Some("bf"));
            assert!(resp.json()["m2m:dbg"]
                .as_str()
                .unwrap()
                .contains("too many"));
        }
        statuses.push(resp.status);
    }
    assert_eq!(&statuses[..3], &[401, 401, 401], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // the blocked user is refused before any password check, even with the right password
    let resp = s.tls(None).connect_and_request(s.addr, &good).unwrap();
    assert_eq!(resp.status, 429);
    let (found, metrics) = s.proxy.wait_metrics(
        "m2m_auth_proxy_auth_failures_total{method=\"basic\",reason=\"rate_limited\"}",
        Duration::from_secs(5),
    );
    assert!(found, "{metrics}");
}

fn check(config: &Path) -> (i32, String, String) {
    run_cli(&bin(), &["check", "--config", config.to_str().unwrap()])
}

#[test]
fn check_validates_credential_files_and_refuses_insecure_hashes() {
    let f = Scenario::files_only(ScenarioOpts {
        methods: "[basic, bearer]".into(),
        client_cert: "optional".into(),
        ..Default::default()
    });
    let c = write_credentials(&f);
    let config = |extra: &str, htpasswd: &Path, opts: &ScenarioOpts| {
        let mut o = opts.clone();
        o.extra_auth = format!(
            "basic:\n  htpasswd: {}\n{extra}bearer:\n  tokens: {}",
            htpasswd.display(),
            c.tokens.display()
        );
        f.write_config(&f.config_yaml_with(&o))
    };
    let (code, out, err) = check(&config("", &c.htpasswd, &f.opts));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("7 users") && out.contains("2 tokens"), "{out}");

    let insecure = f.pki.write(
        "insecure.htpasswd",
        format!(
            "{}\n{}\n",
            htpasswd(&["-nbB", "-C", "4", "Cok", "pw"]),
            htpasswd(&["-nbp", "Cplain", "pw"])
        )
        .as_bytes(),
    );
    let (code, _, err) = check(&config("", &insecure, &f.opts));
    assert_eq!(code, 1);
    assert!(err.contains("insecure.htpasswd:2"), "{err}");
    let (code, out, err) = check(&config(
        "  allow_insecure_hashes: true\n",
        &insecure,
        &f.opts,
    ));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("INSECURE"), "{out}");
    // DES crypt (8-character passwords) is refused even then: re-hash those entries
    let des = f.pki.write(
        "des.htpasswd",
        format!("{}\n", htpasswd(&["-nbd", "Cdes", "pw"])).as_bytes(),
    );
    let (code, _, err) = check(&config("  allow_insecure_hashes: true\n", &des, &f.opts));
    assert_eq!(code, 1);
    assert!(
        err.contains("des.htpasswd:1") && err.contains("htpasswd -B"),
        "{err}"
    );

    let good = htpasswd(&["-nbm", "Cgood", "pw"]);
    let broken = f.pki.write(
        "broken.htpasswd",
        format!("# ok\n{good}\nno-colon-here\n").as_bytes(),
    );
    let (code, _, err) = check(&config("", &broken, &f.opts));
    assert_eq!(code, 1);
    assert!(err.contains("broken.htpasswd:3"), "{err}");
    let hash = good.split_once(':').unwrap().1;
    assert!(!err.contains(hash), "a hash leaked into the error: {err}");
}

#[test]
fn passwd_output_verifies_with_apache_htpasswd() {
    let (code, line, err) = run_cli_stdin(&["passwd", "Cdevice"], "s3cret pass");
    assert_eq!(code, 0, "{err}");
    assert!(line.starts_with("Cdevice:$2"), "{line}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h");
    std::fs::write(&file, &line).unwrap();
    let ok = Command::new("htpasswd")
        .args(["-vb", file.to_str().unwrap(), "Cdevice", "s3cret pass"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = Command::new("htpasswd")
        .args(["-vb", file.to_str().unwrap(), "Cdevice", "other"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// A Basic user whose bcrypt cost makes each check take a while, so that guesses sent together
/// are all in flight at once. `extra_auth` and `extra` go under `auth:` and the top level.
fn start_slow_user(cost: &str, extra_auth: &str, extra: &str) -> Scenario {
    Scenario::start_with_opts(
        ScenarioOpts {
            client_cert: "optional".into(),
            methods: "[mtls, basic]".into(),
            extra: extra.into(),
            ..Default::default()
        },
        |f| {
            let line = htpasswd(&["-nbB", "-C", cost, "Cslow", PASSWORD]);
            let file = f.pki.write("htpasswd", format!("{line}\n").as_bytes());
            ScenarioOpts {
                extra_auth: format!("basic:\n  htpasswd: {}\n{extra_auth}", file.display()),
                ..f.opts.clone()
            }
        },
    )
}

fn scrape(s: &Scenario) -> String {
    s.proxy.admin_get("/metrics").unwrap().1
}

/// Issue 28: guesses arriving together were all verified (the limiter counted failures after
/// the check). Each guess is now charged before its check: of many concurrent wrong guesses
/// from one address at most the allowance is verified, the rest get 429 at once, and the
/// right password after them is refused too.
#[test]
fn concurrent_guesses_are_charged_before_they_are_verified() {
    const GUESSES: usize = 120;
    const BURST: usize = 5;
    let s = start_slow_user("8", "rate_limit:\n  failures_per_minute: 1\n  burst: 5", "");
    let started = std::time::Instant::now();
    let wrong = Request::get("/x").header("Authorization", &basic("Cslow", "guess"));
    let go = std::sync::Barrier::new(GUESSES);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..GUESSES)
            .map(|_| {
                let (s, wrong, go) = (&s, &wrong, &go);
                scope.spawn(move || {
                    let mut conn = s.tls(None).connect(s.addr).unwrap();
                    go.wait();
                    conn.request(wrong).unwrap().status
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let right = Request::get("/x").header("Authorization", &basic("Cslow", PASSWORD));
    let resp = s.tls(None).connect_and_request(s.addr, &right).unwrap();
    assert_eq!(resp.status, 429, "the right password after the allowance");
    assert_eq!(s.upstream.count(), 0);

    // one token comes back per minute: what the test's duration allows on top of the burst
    let allowance = BURST + started.elapsed().as_secs() as usize / 60 + 1;
    let unauthorized = statuses.iter().filter(|c| **c == 401).count();
    let limited = statuses.iter().filter(|c| **c == 429).count();
    assert_eq!(unauthorized + limited, GUESSES, "{statuses:?}");
    assert!(
        unauthorized <= allowance,
        "{unauthorized} verified: {statuses:?}"
    );
    let metrics = scrape(&s);
    let verified = metric(
        &metrics,
        "m2m_auth_proxy_verifications_total{queue=\"password\"}",
    );
    assert!(
        verified as usize <= allowance && verified >= 1.0,
        "{verified} password checks for {GUESSES} concurrent guesses"
    );
    assert!(
        metric(
            &metrics,
            "m2m_auth_proxy_rate_limited_total{bucket=\"address\",method=\"basic\"}"
        ) >= (GUESSES - allowance) as f64,
        "{metrics}"
    );
}

/// Beyond the verification slots and the queue, a guess is refused 503 in oneM2M form without
/// being checked, and without counting against the client.
#[test]
fn password_checks_beyond_the_slots_and_queue_are_refused_without_work() {
    // one slow check at a time (cost 15: about two seconds), nobody waiting
    let s = start_slow_user(
        "15",
        "rate_limit:\n  failures_per_minute: 1000\n  burst: 1000",
        "limits:\n  verifications:\n    max_concurrent: 1\n    max_queued: 0",
    );
    // the second client's handshake is done before the slow check starts, so on a loaded
    // machine its request still arrives while the slot is held
    let mut other_conn = s.tls(None).connect(s.addr).unwrap();
    let first = std::thread::scope(|scope| {
        let slow = scope.spawn(|| {
            let wrong = Request::get("/x").header("Authorization", &basic("Cslow", "guess"));
            let mut conn = s.tls(None).connect(s.addr).unwrap();
            // a loaded machine stretches the two-second check well past the kit's timeout
            conn.set_timeout(std::time::Duration::from_secs(120));
            conn.request(&wrong).unwrap().status
        });
        // the first check holds the only slot
        let running = "m2m_auth_proxy_verifications_in_progress{queue=\"password\"}";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while metric(&scrape(&s), running) < 1.0 {
            assert!(std::time::Instant::now() < deadline, "no check started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let other = Request::get("/x")
            .header("Authorization", &basic("Cother", "guess"))
            .header("X-M2M-RI", "busy-1");
        let resp = other_conn.request(&other).unwrap();
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert_eq!(resp.header("X-M2M-RSC"), Some("5000"));
        assert_eq!(resp.header("X-M2M-RI"), Some("busy-1"));
        assert_eq!(resp.header("Retry-After"), Some("1"));
        slow.join().unwrap()
    });
    assert_eq!(first, 401);
    let metrics = scrape(&s);
    assert_eq!(
        metric(
            &metrics,
            "m2m_auth_proxy_verifications_total{queue=\"password\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "m2m_auth_proxy_verifications_refused_total{queue=\"password\"}"
        ),
        1.0
    );
    let busy = "m2m_auth_proxy_auth_failures_total{method=\"basic\",reason=\"busy\"}";
    assert_eq!(common::creds::wait_metric(&s.proxy, busy, 1.0), 1.0);
}

/// An `expires:` left empty (a template without a value) is an error, at start and on a reload,
/// never "this token does not expire".
#[test]
fn an_empty_expires_is_refused_at_start_and_on_reload() {
    let (s, c) = start("[bearer]", "");
    let (token, entry) = make_token("gateway-2", "CgatewayB", None);
    let good = std::fs::read_to_string(&c.tokens).unwrap();
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(get(&s, &[("Authorization", &bearer(&token))]).status, 401);

    common::proxy::write_atomic(&c.tokens, format!("{good}{entry}    expires:\n").as_bytes());
    assert!(
        s.proxy
            .wait_stderr("expires is empty", std::time::Duration::from_secs(10)),
        "{}",
        s.proxy.stderr_text()
    );
    assert!(s
        .proxy
        .stderr_text()
        .contains("tokens[2] (name \"gateway-2\")"));
    // the file in force stays: the new token is not admitted, the old ones are
    assert_eq!(get(&s, &[("Authorization", &bearer(&token))]).status, 401);
    let resp = get(&s, &[("Authorization", &bearer(&c.gateway_token))]);
    assert_eq!(resp.status, 200, "{}", resp.text());

    for empty in ["    expires:\n", "    expires: ~\n", "    expires: null\n"] {
        common::proxy::write_atomic(&c.tokens, format!("{good}{entry}{empty}").as_bytes());
        let config = s.pki.write("check.yaml", s.config_yaml().as_bytes());
        let (code, out, err) = check(&config);
        assert_eq!(code, 1, "{empty:?}: {out}");
        assert!(
            err.contains("tokens[2] (name \"gateway-2\"): expires is empty"),
            "{empty:?}: {err}"
        );
    }
}
