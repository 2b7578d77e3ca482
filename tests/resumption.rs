//! TLS session resumption with client certificates: off by default; when enabled, a resumed
//! connection keeps its identity and is re-verified against the current trust on first use.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::proxy::write_atomic;
use common::scenario::{Scenario, ScenarioOpts};
use common::{CertKey, ClientOpts, Request};

/// One GET on a new connection with the `openssl s_client` CLI, resuming the session stored
/// in `session_file` when it exists; returns (HTTP status, resumed?). The session to resume
/// next time is written back to `session_file`.
fn get(
    s: &Scenario,
    client: &CertKey,
    version: &str,
    session_file: &std::path::Path,
) -> Result<(u16, bool), String> {
    let stdout = s_client(s, client, version, session_file)?;
    let resumed = stdout.contains("Reused, TLS");
    let status = stdout
        .lines()
        // the response may follow a hex dump of the session ticket on the same line
        .find_map(|l| l.split_once("HTTP/1.1 ").map(|(_, rest)| rest))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "no HTTP response".to_string())?;
    Ok((status, resumed))
}

/// What `openssl s_client` printed for one GET (see [`get`]).
fn s_client(
    s: &Scenario,
    client: &CertKey,
    version: &str,
    session_file: &std::path::Path,
) -> Result<String, String> {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        version,
        "-connect",
        &s.addr.to_string(),
        "-servername",
        "localhost",
    ])
    .arg("-CAfile")
    .arg(&s.ca.cert)
    .arg("-cert")
    .arg(&client.chain)
    .arg("-key")
    .arg(&client.key)
    .arg("-ign_eof");
    if session_file.exists() {
        cmd.arg("-sess_in").arg(session_file);
    }
    let out_file = session_file.with_extension("new");
    cmd.arg("-sess_out").arg(&out_file);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let (code, stdout, _) = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                let mut out = String::new();
                child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                break (status.code(), out, ());
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return Err("s_client timed out".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let _ = code;
    if out_file.exists() {
        std::fs::rename(&out_file, session_file).unwrap();
    }
    Ok(stdout)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A client certificate that expires while the test runs: on its keep-alive connection the
/// next request is 401/4107 "client certificate expired" and the connection ends; its TLS 1.2
/// and 1.3 sessions are not resumed (the full handshake then refuses it). Nothing is timed
/// but the certificate's own notAfter, which the test waits past.
#[test]
fn an_expired_certificate_is_refused_on_its_connection_and_its_sessions_never_resume() {
    const LIFETIME: i64 = 12;
    let s = Scenario::start(ScenarioOpts {
        extra_tls: "session_tickets: true".into(),
        ..Default::default()
    });
    let client = s.client(ClientOpts::uri("Cshort-lived").expires_in_secs(LIFETIME));
    let not_after = unix_now() + LIFETIME;

    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    assert_eq!(conn.request(&Request::get("/x")).unwrap().status, 200);
    let mut sessions = Vec::new();
    for version in ["-tls1_3", "-tls1_2"] {
        let session = s.pki.path(&format!("short{version}.sess"));
        assert_eq!(get(&s, &client, version, &session).unwrap(), (200, false));
        assert_eq!(
            get(&s, &client, version, &session).unwrap(),
            (200, true),
            "{version}: resumes while the certificate is valid"
        );
        sessions.push((version, session));
    }
    assert!(
        unix_now() < not_after,
        "this machine took over {LIFETIME} s for five handshakes: nothing left to test"
    );

    // past notAfter (second resolution: one more second), bounded by the certificate itself
    while unix_now() <= not_after + 1 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let resp = conn
        .request(&Request::get("/x").header("X-M2M-RI", "late"))
        .unwrap();
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(resp.header("X-M2M-RSC"), Some("4107"));
    assert!(
        resp.text().contains("client certificate expired"),
        "{}",
        resp.text()
    );
    assert_eq!(resp.header("Connection"), Some("close"));
    conn.expect_closed().unwrap();

    let forwarded = s.upstream.count();
    for (version, session) in &sessions {
        let out = s_client(&s, &client, version, session).unwrap_or_default();
        assert!(
            !out.contains("Reused, TLS"),
            "{version}: an expired certificate's session resumed:\n{out}"
        );
        assert!(!out.contains("HTTP/1.1 200"), "{version}: admitted:\n{out}");
    }
    assert_eq!(
        s.upstream.count(),
        forwarded,
        "nothing forwarded after notAfter"
    );
}

#[test]
fn resumption_is_off_by_default() {
    let s = Scenario::start(ScenarioOpts::default());
    let client = s.client(ClientOpts::uri("Cae1"));
    for version in ["-tls1_3", "-tls1_2"] {
        let session = s.pki.path(&format!("off{version}.sess"));
        assert_eq!(get(&s, &client, version, &session).unwrap(), (200, false));
        let (status, resumed) = get(&s, &client, version, &session).unwrap();
        assert_eq!(status, 200);
        assert!(
            !resumed,
            "{version}: resumed although session_tickets is off"
        );
    }
}

#[test]
fn resumed_sessions_keep_their_identity_and_a_trust_change_forces_a_full_handshake() {
    let s = Scenario::start(ScenarioOpts {
        extra_tls: "session_tickets: true".into(),
        ..Default::default()
    });
    let client = s.client(ClientOpts::uri("Cresume"));
    for version in ["-tls1_3", "-tls1_2"] {
        let session = s.pki.path(&format!("on{version}.sess"));
        assert_eq!(get(&s, &client, version, &session).unwrap(), (200, false));
        assert_eq!(
            get(&s, &client, version, &session).unwrap(),
            (200, true),
            "{version}"
        );
        // the ticket issued on a resumed connection carries the generation on
        assert_eq!(
            get(&s, &client, version, &session).unwrap(),
            (200, true),
            "{version}: second resumption"
        );
        assert_eq!(
            s.upstream.last().unwrap().header_values("X-M2M-Origin"),
            vec!["Cresume"]
        );
    }

    // a trust change that still trusts the client (a second CA added): sessions from before
    // are not resumed but verified again in a full handshake; the new ones resume
    let session = s.pki.path("on-tls1_3.sess");
    let other = s.pki.ca("other");
    let both = [s.ca.pem(), other.pem()].concat();
    write_atomic(&s.ca.cert, &both);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match get(&s, &client, "-tls1_3", &session) {
            Ok((200, false)) => break,
            Ok((200, true)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!("expected a full handshake after the trust change, got {other:?}"),
        }
    }
    assert_eq!(
        get(&s, &client, "-tls1_3", &session).unwrap(),
        (200, true),
        "a ticket issued after the change resumes"
    );

    // the client's CA is removed: a session from before must not let the client in any more
    write_atomic(&s.ca.cert, &std::fs::read(&other.cert).unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match get(&s, &client, "-tls1_3", &session) {
            Ok((200, true)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok((200, resumed)) => panic!("admitted after its CA was removed (resumed: {resumed})"),
            // refused in the full handshake (no HTTP answer) or, had the ticket been
            // resumed just before the reload, by the re-verification on the first request
            Err(_) | Ok((401, _)) => break,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}

/// Ticket keys rotate on `tls.session_ticket_rotation`: a ticket resumes while its key or the
/// one after it is in force, and not once its key is two periods old.
#[test]
fn ticket_keys_rotate_on_their_schedule() {
    const PERIOD: u64 = 3;
    let s = Scenario::start(ScenarioOpts {
        extra_tls: format!("session_tickets: true\nsession_ticket_rotation: {PERIOD}s"),
        ..Default::default()
    });
    let client = s.client(ClientOpts::uri("Crotate"));
    for version in ["-tls1_3", "-tls1_2"] {
        let session = s.pki.path(&format!("rotate{version}.sess"));
        assert_eq!(get(&s, &client, version, &session).unwrap(), (200, false));
        assert_eq!(
            get(&s, &client, version, &session).unwrap(),
            (200, true),
            "{version}: a fresh ticket resumes"
        );
        // whatever ticket the client holds now, its key was made no later than this: wait
        // until that key is two periods old
        let renewed = std::time::Instant::now();
        std::thread::sleep(Duration::from_secs(2 * PERIOD) + Duration::from_millis(300));
        assert!(renewed.elapsed() >= Duration::from_secs(2 * PERIOD));
        assert_eq!(
            get(&s, &client, version, &session).unwrap(),
            (200, false),
            "{version}: a ticket whose key is two periods old does not resume"
        );
    }
}
