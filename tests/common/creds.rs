//! Credential files and headers for tests: fast-to-verify htpasswd lines, tokens files.

use base64::Engine;

/// `Authorization: Basic ...` value.
pub fn basic(user: &str, password: &str) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {enc}")
}

pub fn sha256_hex(token: &str) -> String {
    openssl::sha::sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `{SHA}` htpasswd line: instant to verify, for tests about everything but hashing.
pub fn htpasswd_line(user: &str, password: &str) -> String {
    let digest = openssl::sha::sha1(password.as_bytes());
    format!(
        "{user}:{{SHA}}{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// A tokens file with (name, token, originator) entries.
pub fn tokens_yaml(tokens: &[(&str, &str, &str)]) -> String {
    let mut y = String::from("tokens:\n");
    for (name, token, originator) in tokens {
        y.push_str(&format!(
            "  - name: {name}\n    sha256: \"{}\"\n    originator: {originator}\n",
            sha256_hex(token)
        ));
    }
    y
}

/// Counter value of one exact series (`name{labels}`) in a Prometheus text scrape.
pub fn metric(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The value of `series` once it reaches `at_least` (metrics are recorded just after the
/// response is sent, so a scrape right after it may be early), or its value after 10 s.
pub fn wait_metric(proxy: &super::ProxyProcess, series: &str, at_least: f64) -> f64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let value = metric(&proxy.admin_get("/metrics").unwrap_or_default().1, series);
        if value >= at_least || std::time::Instant::now() >= deadline {
            return value;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The credential files of [`start_with_credentials`].
pub struct CredFiles {
    pub htpasswd: std::path::PathBuf,
    pub tokens: std::path::PathBuf,
}

/// A proxy with methods `[mtls, bearer, basic]` (client certificates optional), one htpasswd
/// user (`user`, `password`) and one token (`name`, `token`, `originator`); `extra_auth` lines go
/// under `auth:`, `extra` at the top level.
pub fn start_with_credentials(
    user: (&str, &str),
    token: (&str, &str, &str),
    extra_auth: &str,
    extra: &str,
) -> (super::scenario::Scenario, CredFiles) {
    use super::scenario::{Scenario, ScenarioOpts};
    let mut files = None;
    let s = Scenario::start_with_opts(
        ScenarioOpts {
            client_cert: "optional".into(),
            methods: "[mtls, bearer, basic]".into(),
            extra: extra.into(),
            ..Default::default()
        },
        |f| {
            let htpasswd = f.pki.write(
                "htpasswd",
                format!("{}\n", htpasswd_line(user.0, user.1)).as_bytes(),
            );
            let tokens = f.pki.write("tokens.yaml", tokens_yaml(&[token]).as_bytes());
            let opts = ScenarioOpts {
                extra_auth: format!(
                    "basic:\n  htpasswd: {}\nbearer:\n  tokens: {}\n{extra_auth}",
                    htpasswd.display(),
                    tokens.display()
                ),
                ..f.opts.clone()
            };
            files = Some(CredFiles { htpasswd, tokens });
            opts
        },
    );
    (s, files.expect("prepare ran"))
}
