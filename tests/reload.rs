//! Hot reload over real TLS: new credentials and certificates take effect without a restart,
//! revoked ones are refused on connections opened before, broken files never replace good ones.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::creds::{basic, htpasswd_line, start_with_credentials, tokens_yaml, CredFiles};
use common::proxy::write_atomic;
use common::scenario::{Scenario, ScenarioOpts};
use common::{ClientOpts, Request, Response};

/// Successful reloads of `file` so far, from /metrics.
fn reloads(s: &Scenario, file: &str, result: &str) -> u64 {
    let (_, text) = s.proxy.admin_get("/metrics").expect("metrics");
    let needle = format!("m2m_auth_proxy_reloads_total{{file=\"{file}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Wait (bounded) until the proxy has counted more than `before` reloads of `file`.
fn wait_reload(s: &Scenario, file: &str, result: &str, before: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if reloads(s, file, result) > before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// mTLS, Basic and Bearer; client certificates optional. Reload tests probe revoked
/// credentials on purpose: no brute-force limit here.
fn start(extra: &str) -> (Scenario, CredFiles) {
    start_with_credentials(
        ("Cuser1", "pw1"),
        ("t1", "token-one", "Ctok1"),
        "rate_limit:\n  failures_per_minute: 100000\n  burst: 100000",
        extra,
    )
}

fn get(conn: &mut common::Conn, auth: &str) -> Response {
    conn.request(&Request::get("/x").header("Authorization", auth))
        .expect("response")
}

#[test]
fn htpasswd_and_tokens_changes_apply_to_open_connections() {
    let (s, f) = start("");
    let mut conn = s.tls(None).connect(s.addr).unwrap();
    assert_eq!(get(&mut conn, &basic("Cuser1", "pw1")).status, 200);
    assert_eq!(get(&mut conn, &basic("Cuser2", "pw2")).status, 401);
    assert_eq!(get(&mut conn, "Bearer token-one").status, 200);

    // user 1's password changes, user 2 appears, token one is replaced by token two
    let before = reloads(&s, "htpasswd", "success");
    write_atomic(
        &f.htpasswd,
        format!(
            "{}\n{}\n",
            htpasswd_line("Cuser1", "new"),
            htpasswd_line("Cuser2", "pw2")
        )
        .as_bytes(),
    );
    assert!(wait_reload(
        &s,
        "htpasswd",
        "success",
        before,
        Duration::from_secs(5)
    ));
    let before = reloads(&s, "tokens", "success");
    write_atomic(
        &f.tokens,
        tokens_yaml(&[("t2", "token-two", "Ctok2")]).as_bytes(),
    );
    assert!(wait_reload(
        &s,
        "tokens",
        "success",
        before,
        Duration::from_secs(5)
    ));

    // same keep-alive connection: the old password and the removed token are refused at once
    assert_eq!(get(&mut conn, &basic("Cuser1", "pw1")).status, 401);
    assert_eq!(get(&mut conn, &basic("Cuser1", "new")).status, 200);
    assert_eq!(get(&mut conn, &basic("Cuser2", "pw2")).status, 200);
    assert_eq!(get(&mut conn, "Bearer token-one").status, 401);
    assert_eq!(get(&mut conn, "Bearer token-two").status, 200);
    assert_eq!(
        s.upstream.last().unwrap().header_values("X-M2M-Origin"),
        vec!["Ctok2"]
    );
    // the log line names the file and the counts, never a secret
    let log = s.proxy.stderr_text();
    assert!(
        log.contains("reloaded htpasswd") && log.contains("2 users"),
        "{log}"
    );
    assert!(!log.contains("token-two"));
}

#[test]
fn broken_files_never_replace_good_ones_and_fixes_are_picked_up() {
    let (s, f) = start("");
    let mut conn = s.tls(None).connect(s.addr).unwrap();
    let broken: &[&[u8]] = &[
        b"no colon on this line\n",
        b"",
        b"Cuser1:$9$unknown-scheme\n",
    ];
    for content in broken {
        let failures = reloads(&s, "htpasswd", "failure");
        write_atomic(&f.htpasswd, content);
        assert!(
            wait_reload(&s, "htpasswd", "failure", failures, Duration::from_secs(5)),
            "{content:?}"
        );
        assert_eq!(
            get(&mut conn, &basic("Cuser1", "pw1")).status,
            200,
            "old set still in force"
        );
    }
    // deleted, then recreated with a new user
    let failures = reloads(&s, "htpasswd", "failure");
    std::fs::remove_file(&f.htpasswd).unwrap();
    assert!(wait_reload(
        &s,
        "htpasswd",
        "failure",
        failures,
        Duration::from_secs(5)
    ));
    assert_eq!(get(&mut conn, &basic("Cuser1", "pw1")).status, 200);
    let ok = reloads(&s, "htpasswd", "success");
    write_atomic(
        &f.htpasswd,
        format!("{}\n", htpasswd_line("Cfixed", "pw")).as_bytes(),
    );
    assert!(wait_reload(
        &s,
        "htpasswd",
        "success",
        ok,
        Duration::from_secs(5)
    ));
    assert_eq!(get(&mut conn, &basic("Cfixed", "pw")).status, 200);
    assert_eq!(get(&mut conn, &basic("Cuser1", "pw1")).status, 401);

    // tokens: invalid YAML keeps the old set
    let failures = reloads(&s, "tokens", "failure");
    write_atomic(
        &f.tokens,
        b"tokens:\n  - name: x\n    sha256: nothex\n    originator: C\n",
    );
    assert!(wait_reload(
        &s,
        "tokens",
        "failure",
        failures,
        Duration::from_secs(5)
    ));
    assert_eq!(get(&mut conn, "Bearer token-one").status, 200);
    let log = s.proxy.stderr_text();
    assert!(log.contains("keeping the loaded version"), "{log}");
}

#[test]
fn server_certificate_rotation_serves_new_handshakes_and_keeps_old_connections() {
    let (s, _) = start("");
    let client = s.client(ClientOpts::uri("Cae1"));
    let mut old = s.tls(Some(&client)).connect(s.addr).unwrap();
    let first_serial = old.peer_cert().unwrap().serial_number().to_bn().unwrap();
    assert_eq!(old.request(&Request::get("/x")).unwrap().status, 200);

    // a key that does not match the certificate is refused; the old pair stays
    let failures = reloads(&s, "server_cert", "failure");
    let other = s.pki.server(&s.ca, "localhost", &["127.0.0.1"]);
    write_atomic(&s.server.key, &other.key_pem());
    assert!(wait_reload(
        &s,
        "server_cert",
        "failure",
        failures,
        Duration::from_secs(5)
    ));
    let conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    assert_eq!(
        conn.peer_cert().unwrap().serial_number().to_bn().unwrap(),
        first_serial
    );

    // the matching certificate arrives: new handshakes get it, the old connection lives on
    let ok = reloads(&s, "server_cert", "success");
    write_atomic(&s.server.chain, &std::fs::read(&other.chain).unwrap());
    assert!(wait_reload(
        &s,
        "server_cert",
        "success",
        ok,
        Duration::from_secs(5)
    ));
    let new = s.tls(Some(&client)).connect(s.addr).unwrap();
    assert_ne!(
        new.peer_cert().unwrap().serial_number().to_bn().unwrap(),
        first_serial
    );
    assert_eq!(old.request(&Request::get("/x")).unwrap().status, 200);
}

#[test]
fn ca_removal_and_crl_revocation_refuse_existing_connections() {
    let mut crl_path = None;
    let s = Scenario::start_with_opts(ScenarioOpts::default(), |f| {
        let crl = f.pki.crl(&f.ca, &[]);
        crl_path = Some(crl.clone());
        ScenarioOpts {
            extra_tls: format!("crl: {}", crl.display()),
            ..f.opts.clone()
        }
    });
    let crl = crl_path.unwrap();
    let revoked = s.client(ClientOpts::uri("Crevoked").file("revoked"));
    let kept = s.client(ClientOpts::uri("Ckept").file("kept"));
    let mut conn_revoked = s.tls(Some(&revoked)).connect(s.addr).unwrap();
    let mut conn_kept = s.tls(Some(&kept)).connect(s.addr).unwrap();
    assert_eq!(
        conn_revoked.request(&Request::get("/x")).unwrap().status,
        200
    );
    assert_eq!(conn_kept.request(&Request::get("/x")).unwrap().status, 200);

    let before = reloads(&s, "crl", "success");
    let new_crl = s.pki.crl(&s.ca, &[&revoked]);
    write_atomic(&crl, &std::fs::read(&new_crl).unwrap());
    assert!(wait_reload(
        &s,
        "crl",
        "success",
        before,
        Duration::from_secs(5)
    ));
    let resp = conn_revoked
        .request(&Request::get("/x").header("X-M2M-RI", "rv"))
        .unwrap();
    assert_eq!(
        resp.status, 401,
        "revoked certificate on an open connection"
    );
    assert_eq!(resp.header("X-M2M-RSC"), Some("4107"));
    assert_eq!(conn_kept.request(&Request::get("/x")).unwrap().status, 200);
    assert!(s
        .tls(Some(&revoked))
        .connect_and_request(s.addr, &Request::get("/x"))
        .is_err());

    // the CA itself is replaced: every connection it admitted is refused on its next request
    let before = reloads(&s, "client_ca", "success");
    let other_ca = s.pki.ca("other-ca");
    write_atomic(&s.ca.cert, &std::fs::read(&other_ca.cert).unwrap());
    // (the CRL must cover the new CA too, or OpenSSL refuses its certificates)
    let other_crl = s.pki.crl(&other_ca, &[]);
    write_atomic(&crl, &std::fs::read(&other_crl).unwrap());
    assert!(wait_reload(
        &s,
        "client_ca",
        "success",
        before,
        Duration::from_secs(5)
    ));
    assert_eq!(conn_kept.request(&Request::get("/x")).unwrap().status, 401);
    let (found, metrics) = s
        .proxy
        .wait_metrics("reason=\"revoked\"", Duration::from_secs(5));
    assert!(found, "{metrics}");
}

#[test]
fn kubernetes_symlink_swap_is_picked_up_within_two_seconds() {
    // Secret volume layout: <dir>/..2026_01_01/htpasswd, <dir>/..data -> ..2026_01_01,
    // <dir>/htpasswd -> ..data/htpasswd; an update writes a new timestamped directory and
    // renames a new ..data link over the old one.
    let mut mount = None;
    let s = Scenario::start_with_opts(
        ScenarioOpts {
            client_cert: "optional".into(),
            methods: "[basic]".into(),
            extra: "reload:\n  poll_interval: 1h".into(),
            ..Default::default()
        },
        |f| {
            let dir = f.pki.dir().join("secret");
            std::fs::create_dir_all(dir.join("..v1")).unwrap();
            std::fs::write(
                dir.join("..v1/htpasswd"),
                format!("{}\n", htpasswd_line("Cold", "pw")),
            )
            .unwrap();
            symlink("..v1", dir.join("..data")).unwrap();
            symlink("..data/htpasswd", dir.join("htpasswd")).unwrap();
            let opts = ScenarioOpts {
                extra_auth: format!("basic:\n  htpasswd: {}", dir.join("htpasswd").display()),
                ..f.opts.clone()
            };
            mount = Some(dir);
            opts
        },
    );
    let dir: PathBuf = mount.unwrap();
    let mut conn = s.tls(None).connect(s.addr).unwrap();
    assert_eq!(get(&mut conn, &basic("Cold", "pw")).status, 200);

    std::fs::create_dir_all(dir.join("..v2")).unwrap();
    std::fs::write(
        dir.join("..v2/htpasswd"),
        format!("{}\n", htpasswd_line("Cnew", "pw")),
    )
    .unwrap();
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    let swapped = Instant::now();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    let deadline = swapped + Duration::from_secs(2);
    let mut status = 0;
    while Instant::now() < deadline {
        status = get(&mut conn, &basic("Cnew", "pw")).status;
        if status == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        status, 200,
        "new file not picked up within 2 s (poll is 1 h: only the event can do it)"
    );
    assert_eq!(get(&mut conn, &basic("Cold", "pw")).status, 401);
}

#[test]
fn sighup_reloads_immediately() {
    let (mut s, f) = start("reload:\n  poll_interval: 1h\n  watch: false");
    let mut conn = s.tls(None).connect(s.addr).unwrap();
    write_atomic(
        &f.htpasswd,
        format!("{}\n", htpasswd_line("Chup", "pw")).as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        get(&mut conn, &basic("Chup", "pw")).status,
        401,
        "no watch, no poll: not yet"
    );
    let before = reloads(&s, "htpasswd", "success");
    assert!(s.proxy.signal("HUP"));
    assert!(wait_reload(
        &s,
        "htpasswd",
        "success",
        before,
        Duration::from_secs(2)
    ));
    assert_eq!(get(&mut conn, &basic("Chup", "pw")).status, 200);
    assert!(s.proxy.is_running(), "SIGHUP must not stop the proxy");
}

/// Several clients on keep-alive connections (each method) while every file is reloaded 50
/// times: valid credentials never fail, revoked ones are never accepted once the reload is
/// observed.
#[test]
fn reloads_under_load_lose_nothing_and_admit_nothing_revoked() {
    let (s, f) = start("reload:\n  poll_interval: 1h\n  watch: false");
    let s = Arc::new(s);
    let cert = s.client(ClientOpts::uri("Cload"));
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (auth, with_cert) in [
        (None, true),
        (Some(basic("Cuser1", "pw1")), false),
        (Some("Bearer token-one".to_string()), false),
    ] {
        let (s, stop, served, cert) = (
            s.clone(),
            stop.clone(),
            served.clone(),
            (cert.chain.clone(), cert.key.clone()),
        );
        workers.push(std::thread::spawn(move || -> Result<(), String> {
            let tls = if with_cert {
                s.tls(None).cert_files(&cert.0, &cert.1)
            } else {
                s.tls(None)
            };
            let mut conn = tls.connect(s.addr)?;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mut req = Request::get("/x");
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                let resp = conn.request(&req)?;
                if resp.status != 200 {
                    return Err(format!(
                        "valid credentials refused: {} {}",
                        resp.status,
                        resp.text()
                    ));
                }
                served.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let mut probe = s.tls(None).connect(s.addr).unwrap();
    let htpasswd_base = htpasswd_line("Cuser1", "pw1");
    for round in 0..50 {
        // each round: a temporary user and token appear, then are revoked
        let extra_user = format!("Ctmp{round}");
        let extra_token = format!("tmp-token-{round}");
        for (with_extra, status) in [(true, 200), (false, 401)] {
            let mut users = vec![htpasswd_base.clone()];
            let mut tokens = vec![("t1", "token-one", "Ctok1")];
            if with_extra {
                users.push(htpasswd_line(&extra_user, "pw"));
                tokens.push(("tmp", extra_token.as_str(), "Ctmp"));
            }
            let (h, t) = (
                reloads(&s, "htpasswd", "success"),
                reloads(&s, "tokens", "success"),
            );
            write_atomic(&f.htpasswd, (users.join("\n") + "\n").as_bytes());
            write_atomic(&f.tokens, tokens_yaml(&tokens).as_bytes());
            // server certificate and CA rewritten with new bytes each time (same keys)
            touch_pem(&s.server.chain);
            touch_pem(&s.ca.cert);
            let (sc, ca) = (
                reloads(&s, "server_cert", "success"),
                reloads(&s, "client_ca", "success"),
            );
            signal_hup(&s);
            assert!(wait_reload(
                &s,
                "htpasswd",
                "success",
                h,
                Duration::from_secs(5)
            ));
            assert!(wait_reload(
                &s,
                "tokens",
                "success",
                t,
                Duration::from_secs(5)
            ));
            assert!(wait_reload(
                &s,
                "server_cert",
                "success",
                sc,
                Duration::from_secs(5)
            ));
            assert!(wait_reload(
                &s,
                "client_ca",
                "success",
                ca,
                Duration::from_secs(5)
            ));
            assert_eq!(
                get(&mut probe, &basic(&extra_user, "pw")).status,
                status,
                "round {round}"
            );
            assert_eq!(
                get(&mut probe, &format!("Bearer {extra_token}")).status,
                status,
                "round {round}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap().unwrap();
    }
    assert!(
        served.load(Ordering::Relaxed) > 100,
        "load too small: {}",
        served.load(Ordering::Relaxed)
    );
}

/// Rewrite a PEM file with different bytes but the same certificates (a trailing comment line
/// changes the content hash, so the reload really happens).
fn touch_pem(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let base = text
        .split("# touched")
        .next()
        .unwrap()
        .trim_end()
        .to_string();
    let stamp = Instant::now().elapsed().as_nanos() + rand_suffix();
    write_atomic(path, format!("{base}\n# touched {stamp}\n").as_bytes());
}

fn rand_suffix() -> u128 {
    let mut b = [0u8; 8];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u64::from_le_bytes(b) as u128
}

fn signal_hup(s: &Scenario) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &s.proxy.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn originator_mappings_in_the_config_are_reloaded_and_restart_only_keys_are_reported() {
    let s = Scenario::start(ScenarioOpts {
        originator: "mode: verify\nallow:\n  Cgw: [\"Cgw-a*\"]".into(),
        ..Default::default()
    });
    let gw = s.client(ClientOpts::uri("Cgw"));
    let mut conn = s.tls(Some(&gw)).connect(s.addr).unwrap();
    let claim = |conn: &mut common::Conn, o: &str| {
        conn.request(&Request::get("/x").header("X-M2M-Origin", o))
            .unwrap()
            .status
    };
    assert_eq!(claim(&mut conn, "Cgw-a1"), 200);
    assert_eq!(claim(&mut conn, "Cgw-b1"), 403);

    let before = reloads(&s, "config", "success");
    let mut opts = s.opts.clone();
    opts.originator = "mode: verify\nallow:\n  Cgw: [\"Cgw-b*\"]".into();
    // a restart-only key changes too: reported, not applied
    let yaml = Scenario::config_with(&s, &opts).replace("threads: 2", "threads: 1");
    s.proxy.rewrite_config(&yaml);
    assert!(wait_reload(
        &s,
        "config",
        "success",
        before,
        Duration::from_secs(5)
    ));
    assert_eq!(
        claim(&mut conn, "Cgw-b1"),
        200,
        "new mapping on the open connection"
    );
    assert_eq!(claim(&mut conn, "Cgw-a1"), 403, "old mapping gone");
    assert!(
        s.proxy
            .wait_stderr("threads need a restart", Duration::from_secs(2)),
        "{}",
        s.proxy.stderr_text()
    );

    // a broken config keeps the mappings in force
    let failures = reloads(&s, "config", "failure");
    s.proxy
        .rewrite_config(&yaml.replace("mode: verify", "mode: sometimes"));
    assert!(wait_reload(
        &s,
        "config",
        "failure",
        failures,
        Duration::from_secs(5)
    ));
    assert_eq!(claim(&mut conn, "Cgw-b1"), 200);
}

/// `check`, start-up and a config reload run the same builders: a file that parses but that a
/// builder refuses (here an originator pattern with a space, and an mTLS regex that does not
/// compile) is refused by the running proxy's reload with the same message `check` prints, and
/// the policy in force stays.
#[test]
fn a_config_reload_refuses_what_check_refuses_with_the_same_error() {
    let s = Scenario::start(ScenarioOpts {
        originator: "mode: verify\nallow:\n  Cgw: [\"Cgw-a*\"]".into(),
        ..Default::default()
    });
    let gw = s.client(ClientOpts::uri("Cgw"));
    let mut conn = s.tls(Some(&gw)).connect(s.addr).unwrap();
    let claim = |conn: &mut common::Conn, o: &str| {
        conn.request(&Request::get("/x").header("X-M2M-Origin", o))
            .unwrap()
            .status
    };
    assert_eq!(claim(&mut conn, "Cgw-a1"), 200);
    let good = Scenario::config_with(&s, &s.opts);
    let broken_variants = [
        (
            good.replace("[\"Cgw-a*\"]", "[\"Cgw b*\"]"),
            "key `originator.allow`",
        ),
        (
            good.replacen("  mtls:\n", "  mtls:\n    originator: \"(\"\n", 1),
            "key `auth.mtls.originator`",
        ),
    ];
    for (broken, key) in broken_variants {
        let failures = reloads(&s, "config", "failure");
        s.proxy.rewrite_config(&broken);
        assert!(
            wait_reload(&s, "config", "failure", failures, Duration::from_secs(5)),
            "{key}: reload not refused; {}",
            s.proxy.stderr_text()
        );
        let (code, _, check_err) = common::proxy::run_cli(
            &common::scenario::bin(),
            &["check", "--config", s.proxy.config_path().to_str().unwrap()],
        );
        assert_eq!(code, 1, "{key}: check accepted it");
        assert!(check_err.contains(key), "{key}: {check_err}");
        // its first line: env_logger indents the continuation lines of a log message
        let message = check_err.trim().trim_start_matches("error: ");
        let message = message.lines().next().unwrap_or(message);
        assert!(
            s.proxy.wait_stderr(message, Duration::from_secs(2)),
            "{key}: the reload's error differs from check's {message:?}:\n{}",
            s.proxy.stderr_text()
        );
        assert_eq!(
            claim(&mut conn, "Cgw-a1"),
            200,
            "{key}: policy in force kept"
        );
        assert_eq!(claim(&mut conn, "Cgw-b1"), 403, "{key}: nothing applied");
        s.proxy.rewrite_config(&good);
    }
}

/// Replaces `path` by a FIFO (as `rm f; mkfifo f` would).
fn make_fifo(path: &Path) {
    std::fs::remove_file(path).unwrap();
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");
}

fn refused_files(s: &Scenario, file: &str, reason: &str) -> f64 {
    common::creds::metric(
        &s.proxy.admin_get("/metrics").unwrap().1,
        &format!(
            "m2m_auth_proxy_reload_files_refused_total{{file=\"{file}\",reason=\"{reason}\"}}"
        ),
    )
}

/// Issue 28: a FIFO at a credential path blocked the reload thread in open() for good (no file
/// of any kind reloaded afterwards, nothing logged, SIGTERM waited). FIFOs, devices and files
/// over the size cap are now refused (logged, counted, the last good version kept) and every
/// other file still reloads.
#[test]
fn a_fifo_device_or_huge_file_at_a_credential_path_is_refused_and_the_others_still_reload() {
    let (mut s, f) = start("reload:\n  max_file_size:\n    htpasswd: 4096");
    let mut conn = s.tls(None).connect(s.addr).unwrap();
    let user = basic("Cuser1", "pw1");
    assert_eq!(get(&mut conn, &user).status, 200);

    let mut token = 2;
    let mut tokens_change_reloads = |s: &Scenario| {
        let before = reloads(s, "tokens", "success");
        let name = format!("token-{token}");
        write_atomic(&f.tokens, tokens_yaml(&[("t", &name, "Ctok")]).as_bytes());
        signal_hup(s);
        assert!(
            wait_reload(s, "tokens", "success", before, Duration::from_secs(10)),
            "the tokens file did not reload next to a refused htpasswd"
        );
        token += 1;
        format!("Bearer {name}")
    };

    make_fifo(&f.htpasswd);
    let bearer = tokens_change_reloads(&s);
    assert_eq!(get(&mut conn, &bearer).status, 200);
    assert_eq!(refused_files(&s, "htpasswd", "not_regular"), 1.0);
    assert_eq!(get(&mut conn, &user).status, 200, "last good htpasswd kept");

    std::fs::remove_file(&f.htpasswd).unwrap();
    symlink("/dev/zero", &f.htpasswd).unwrap();
    let bearer = tokens_change_reloads(&s);
    assert_eq!(get(&mut conn, &bearer).status, 200);
    assert_eq!(refused_files(&s, "htpasswd", "not_regular"), 2.0);

    std::fs::remove_file(&f.htpasswd).unwrap();
    let huge: String = (0..200)
        .map(|i| format!("{}\n", htpasswd_line(&format!("Cbulk{i}"), "pw")))
        .collect();
    write_atomic(&f.htpasswd, huge.as_bytes());
    let bearer = tokens_change_reloads(&s);
    assert_eq!(get(&mut conn, &bearer).status, 200);
    assert_eq!(refused_files(&s, "htpasswd", "too_large"), 1.0);
    assert_eq!(get(&mut conn, &basic("Cbulk1", "pw")).status, 401);
    assert_eq!(get(&mut conn, &user).status, 200);
    let log = s.proxy.stderr_text();
    assert!(log.contains("found a FIFO"), "{log}");
    assert!(log.contains("over the limit of 4096"), "{log}");

    // a regular file again: loaded
    let before = reloads(&s, "htpasswd", "success");
    write_atomic(
        &f.htpasswd,
        format!("{}\n", htpasswd_line("Cback", "pw")).as_bytes(),
    );
    signal_hup(&s);
    assert!(wait_reload(
        &s,
        "htpasswd",
        "success",
        before,
        Duration::from_secs(10)
    ));
    assert_eq!(get(&mut conn, &basic("Cback", "pw")).status, 200);
    drop(conn);

    // and nothing is stuck at shutdown (grace period 1 s)
    let stopping = Instant::now();
    assert!(s.proxy.signal("TERM"));
    let status = s.proxy.wait_exit(Duration::from_secs(8)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(stopping.elapsed() < Duration::from_secs(8));
}

/// Issue 28: a file rewritten in place in two steps (first line, a pause, the rest) was loaded
/// as soon as the first part parsed, and valid users got 401 meanwhile. An in-place change is
/// now applied only once it has been unchanged for `reload.settle`.
#[test]
fn a_slow_two_step_rewrite_never_yields_a_401_for_a_valid_user() {
    let (s, f) = start("reload:\n  settle: 5s");
    let lines = |users: &[&str]| -> String {
        users
            .iter()
            .map(|u| format!("{}\n", htpasswd_line(u, "pw")))
            .collect()
    };
    std::fs::write(&f.htpasswd, lines(&["Cuser1", "Cuser2"])).unwrap();
    let before = reloads(&s, "htpasswd", "success");
    signal_hup(&s);
    // (loaded after the settle time: it was written in place too)
    assert!(wait_reload(
        &s,
        "htpasswd",
        "success",
        before,
        Duration::from_secs(15)
    ));

    let done = Arc::new(AtomicBool::new(false));
    let statuses = std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let mut conn = s.tls(None).connect(s.addr).unwrap();
            let mut seen = Vec::new();
            while !done.load(Ordering::SeqCst) {
                seen.push(get(&mut conn, &basic("Cuser2", "pw")).status);
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        // in place: first line, a pause, the rest (and a new user)
        {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&f.htpasswd)
                .unwrap();
            file.write_all(lines(&["Cuser1"]).as_bytes()).unwrap();
            file.flush().unwrap();
            signal_hup(&s);
            std::thread::sleep(Duration::from_secs(1));
            file.write_all(lines(&["Cuser2", "Cuser3"]).as_bytes())
                .unwrap();
        }
        signal_hup(&s);
        let mut conn = s.tls(None).connect(s.addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(&mut conn, &basic("Cuser3", "pw")).status != 200 {
            assert!(
                Instant::now() < deadline,
                "the complete file was never loaded"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        done.store(true, Ordering::SeqCst);
        prober.join().unwrap()
    });
    assert!(statuses.len() > 10, "{statuses:?}");
    assert!(statuses.iter().all(|c| *c == 200), "{statuses:?}");
}

/// Issue 22: a config reload builds only what it applies. The JWKS URL's host does not resolve
/// (`.invalid`): the proxy starts all the same (the name is resolved at first use), a change
/// of `authorization` alone is applied, and a JWT fails closed while the name does not resolve.
#[test]
fn an_authorization_change_applies_while_the_jwks_host_does_not_resolve() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    let allow_all = "authorization:\n  default: allow\n";
    let deny_gw = "authorization:\n  default: allow\n  rules:\n    - name: no-gw\n      originators: [\"^Cgw$\"]\n      effect: deny\n";
    let s = Scenario::start_with_opts(ScenarioOpts::default(), |f| {
        ScenarioOpts {
        client_cert: "optional".into(),
        methods: "[mtls, jwt]".into(),
        extra_auth: format!(
            "jwt:\n  issuers:\n    - issuer: https://idp.test\n      audiences: [m2m-proxy]\n      jwks_url: https://jwks.invalid/jwks\n      jwks_ca: {}\n      jwks_timeout: 1s",
            f.ca.cert.display()
        ),
        extra: allow_all.into(),
        ..f.opts.clone()
    }
    });
    let gw = s.client(ClientOpts::uri("Cgw"));
    let mut conn = s.tls(Some(&gw)).connect(s.addr).unwrap();
    let status = |conn: &mut common::Conn| conn.request(&Request::get("/x")).unwrap().status;
    assert_eq!(status(&mut conn), 200);

    let before = reloads(&s, "config", "success");
    let mut opts = s.opts.clone();
    opts.extra = deny_gw.into();
    s.proxy.rewrite_config(&Scenario::config_with(&s, &opts));
    assert!(
        wait_reload(&s, "config", "success", before, Duration::from_secs(5)),
        "the reload was refused: {}",
        s.proxy.stderr_text()
    );
    assert_eq!(status(&mut conn), 403, "new rules on the open connection");
    let mut fresh = s.tls(Some(&gw)).connect(s.addr).unwrap();
    assert_eq!(status(&mut fresh), 403, "new rules on a new connection");
    assert!(
        !s.proxy.stderr_text().contains("need a restart"),
        "only authorization changed: {}",
        s.proxy.stderr_text()
    );

    // a JWT of that issuer: its keys cannot be fetched, so it is refused, never forwarded
    let part = |v: &str| URL_SAFE_NO_PAD.encode(v);
    let jwt = format!(
        "{}.{}.{}",
        part(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#),
        part(r#"{"iss":"https://idp.test","aud":"m2m-proxy","sub":"Cjwt","exp":4102444800}"#),
        part("signature")
    );
    let forwarded = s.upstream.count();
    let resp = s
        .tls(None)
        .connect_and_request(
            s.addr,
            &Request::get("/x").header("Authorization", &format!("Bearer {jwt}")),
        )
        .unwrap();
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(s.upstream.count(), forwarded, "nothing forwarded");
    assert!(
        s.proxy
            .wait_stderr("JWKS https://jwks.invalid/jwks: ", Duration::from_secs(5)),
        "{}",
        s.proxy.stderr_text()
    );
}

/// Issue 22: the config file is read once at start, by its first load through the reloader:
/// the same read as a reload's, so a FIFO at the config path is refused (not read, which would
/// block), with the reload's message.
#[test]
fn the_config_file_is_read_at_start_as_a_reload_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, "").unwrap();
    make_fifo(&config);
    let (code, _, err) = common::proxy::run_cli(
        &common::scenario::bin(),
        &["check", "--config", config.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("proxy.yaml: expected a regular file, found a FIFO"),
        "{err}"
    );
}
