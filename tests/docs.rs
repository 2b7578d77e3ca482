//! The docs against the code (issue 25.6), so that they cannot drift apart again: the reload
//! kinds and the metric `file` labels listed in docs/operations.md and docs/configuration.md
//! against `file_kinds()` (`FileKind::ALL` and the methods' own) and the series a running proxy
//! exports; the access-log fields of each kind of line against lines a running proxy writes;
//! what a config edit applies live in the README, docs/configuration.md and the reload log line
//! against `config::LIVE_KEYS`; the methods' `method` labels against `Method::ALL`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use common::scenario::{Scenario, ScenarioOpts};
use common::{free_port, ClientOpts, Conn, Request, WS_TEXT};
use m2m_auth_proxy::auth::method::file_kinds;
use m2m_auth_proxy::auth::NO_METHOD;
use m2m_auth_proxy::config::LIVE_KEYS;
use m2m_auth_proxy::identity::Method;
use m2m_auth_proxy::ingress::ANONYMOUS;

fn doc(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// From the heading line `heading` to the next heading of the same or a higher level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?}"))
        + 1;
    let body = &text[start + heading.len()..];
    let end = body
        .match_indices("\n#")
        .find(|(i, _)| {
            let hashes = body[i + 1..].chars().take_while(|c| *c == '#').count();
            hashes <= level && body[i + 1 + hashes..].starts_with(' ')
        })
        .map_or(body.len(), |(i, _)| i);
    &text[start..start + heading.len() + end]
}

/// Every `code` span of `text`, in order.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// The first column of the first table of `text`: one `name` per row.
fn first_column(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            let cell = row.split('|').nth(1).unwrap_or_default();
            backticked(cell).into_iter().next().unwrap_or_default()
        })
        .collect()
}

fn code_kinds() -> Vec<String> {
    // `FileKind::ALL` and the kinds authentication methods declare for their own files
    file_kinds().iter().map(|k| k.label().to_string()).collect()
}

fn set(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

/// The `method` label values docs/operations.md lists for metric `name`.
fn method_labels(ops: &str, name: &str) -> BTreeSet<String> {
    let row = section(ops, "## Metrics")
        .lines()
        .find(|l| l.starts_with(&format!("| `{name}`")))
        .unwrap_or_else(|| panic!("no row for {name}"));
    let labels = row
        .split("`method` (")
        .nth(1)
        .unwrap_or_else(|| panic!("{name}: no `method` label list"));
    set(backticked(labels.split(')').next().unwrap_or_default()))
}

/// Every authentication method is in the docs' label lists, and nothing else is (issue 22.1).
#[test]
fn method_labels_in_the_docs_match_method_all() {
    let ops = doc("docs/operations.md");
    let methods = || Method::ALL.into_iter().map(|m| m.as_str().to_string());
    let with = |extra: &[&str]| set(methods().chain(extra.iter().map(|e| e.to_string())));
    assert_eq!(
        method_labels(&ops, "m2m_auth_proxy_requests_total"),
        with(&[NO_METHOD, ANONYMOUS]),
        "requests_total method labels"
    );
    assert_eq!(
        method_labels(&ops, "m2m_auth_proxy_auth_failures_total"),
        with(&[NO_METHOD]),
        "auth_failures_total method labels"
    );
    let limited = Method::ALL
        .into_iter()
        .filter(|m| m.descriptor().rate_limited)
        .map(|m| m.as_str().to_string());
    assert_eq!(
        method_labels(&ops, "m2m_auth_proxy_rate_limited_total"),
        set(limited),
        "rate_limited_total method labels"
    );
}

#[test]
fn reload_kinds_metric_labels_and_live_keys_match_the_code() {
    let ops = doc("docs/operations.md");
    // the `<kind>` list of the reload log lines
    let kinds_line = section(&ops, "### Log lines")
        .lines()
        .find(|l| l.starts_with("- `<kind>`:"))
        .expect("the <kind> list");
    let listed: Vec<String> = backticked(kinds_line).into_iter().skip(1).collect();
    assert_eq!(listed, code_kinds(), "docs/operations.md <kind> list");
    // the `file` label values of the reload metrics
    let metrics = section(&ops, "## Metrics");
    let row = metrics
        .lines()
        .find(|l| l.starts_with("| `m2m_auth_proxy_reloads_total`"))
        .expect("reloads_total row");
    let labels = row.split("`file` (").nth(1).expect("file labels");
    let labels = labels.split(')').next().unwrap_or_default();
    assert_eq!(
        backticked(labels),
        code_kinds(),
        "reloads_total file labels"
    );
    // the reload kinds of docs/configuration.md's table
    let config_doc = doc("docs/configuration.md");
    let runtime = section(&config_doc, "## What changes at run time");
    let table_kinds = set(runtime
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .filter_map(|row| row.split('|').nth(3).map(backticked))
        .flat_map(|v| v.into_iter().take(1)));
    assert_eq!(
        table_kinds,
        set(code_kinds()),
        "docs/configuration.md kinds"
    );

    // what a running proxy exports: both series of every kind at 0 from the start, and the
    // last-load time of the kinds in use
    let s = Scenario::start(ScenarioOpts::default());
    let scrape = s.proxy.admin_get("/metrics").unwrap().1;
    let exported: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("m2m_auth_proxy_reloads_total{file=\""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect();
    assert_eq!(exported, set(code_kinds()), "{scrape}");
    for kind in code_kinds() {
        for result in ["success", "failure"] {
            let series =
                format!("m2m_auth_proxy_reloads_total{{file=\"{kind}\",result=\"{result}\"}} 0");
            assert!(scrape.lines().any(|l| l == series), "{series} missing");
        }
    }
    for kind in ["server_cert", "client_ca", "config"] {
        let series =
            format!("m2m_auth_proxy_last_reload_success_timestamp_seconds{{file=\"{kind}\"}} ");
        assert!(scrape.contains(&series), "{series} set at start: {scrape}");
    }
    assert!(
        !scrape.contains("m2m_auth_proxy_last_reload_success_timestamp_seconds{file=\"htpasswd\"}"),
        "a kind not in use has no last-load time"
    );

    // what a config edit applies live: README, configuration.md and the log line say the same
    let readme = doc("README.md");
    let hot = section(&readme, "### Hot reload");
    let config_section = section(&config_doc, "## What changes at run time");
    for key in LIVE_KEYS {
        let quoted = format!("`{key}`");
        assert!(
            hot.contains(&quoted),
            "README Hot reload does not name {quoted}"
        );
        assert!(
            config_section.contains(&quoted),
            "configuration.md does not name {quoted}"
        );
    }
    let edited = s.config_yaml().replace("mode: overwrite", "mode: verify");
    assert_ne!(edited, s.config_yaml());
    s.proxy.rewrite_config(&edited);
    assert!(
        s.proxy
            .wait_stderr("reloaded config", Duration::from_secs(10)),
        "{}",
        s.proxy.stderr_text()
    );
    let stderr = s.proxy.stderr_text();
    let line = stderr
        .lines()
        .find(|l| l.contains("reloaded config"))
        .unwrap();
    let applied = line
        .split("applied: ")
        .nth(1)
        .expect("applied: in the line");
    for key in LIVE_KEYS {
        assert!(applied.contains(&format!("{key} ")), "{key} not in {line}");
    }
    assert!(applied.contains("originator mode verify"), "{line}");
    // a restart-only change: the warning names it and what was applied
    let restart = edited.replace("grace_period: 1s", "grace_period: 2s");
    s.proxy.rewrite_config(&restart);
    assert!(
        s.proxy
            .wait_stderr("need a restart", Duration::from_secs(10)),
        "{}",
        s.proxy.stderr_text()
    );
    let stderr = s.proxy.stderr_text();
    let warn = stderr
        .lines()
        .find(|l| l.contains("need a restart"))
        .unwrap();
    assert!(
        warn.contains(&format!(
            "shutdown need a restart and are NOT applied; {} are",
            LIVE_KEYS.join(", ")
        )),
        "{warn}"
    );
}

#[test]
fn access_log_fields_match_the_lines_the_proxy_writes() {
    let egress_port = free_port();
    let s = Scenario::start_with_opts(
        ScenarioOpts {
            client_cert: "optional".into(),
            originator: "mode: verify".into(),
            ..Default::default()
        },
        |f| {
            // an egress route to the proxy's own listener: one request makes both lines
            let pod = f.pki.client(&f.ca, ClientOpts::uri("Cpod"));
            ScenarioOpts {
                extra: format!(
                    "cse: {{id: /id-in, name: cse-in}}\nauthorization:\n  default: allow\n  rules:\n    - {{name: no-deletes, operations: [delete], targets: [\"/cse-in/**\"], effect: deny}}\negress:\n  - name: self\n    listen: \"127.0.0.1:{egress_port}\"\n    peer: \"https://localhost:{}\"\n    tls:\n      ca: {}\n      cert: {}\n      key: {}\n",
                    f.addr.port(),
                    f.ca.cert.display(),
                    pod.chain.display(),
                    pod.key.display()
                ),
                ..f.opts.clone()
            }
        },
    );
    let client = s.client(ClientOpts::uri("Cae-1"));
    // a refused WebSocket primitive, first: on the pipeline an upgrade sent on a pooled
    // upstream connection is sometimes closed right after its 101 (pingora's body pipe)
    let mut conn = s.tls(Some(&client)).connect(s.addr).unwrap();
    conn.set_timeout(Duration::from_secs(5));
    let resp = conn
        .request(&Request::websocket("/", &["oneM2M.json"]))
        .unwrap();
    assert_eq!(resp.status, 101);
    let msg = json!({"op": 2, "to": "cse-in", "fr": "CAdmin", "rqi": "ws-1", "rvi": "3"});
    conn.ws_send(WS_TEXT, msg.to_string().as_bytes(), true)
        .unwrap();
    let (_, answer, _) = conn.ws_recv().unwrap();
    assert!(String::from_utf8_lossy(&answer).contains("4103"));

    let resp = s
        .tls(Some(&client))
        .connect_and_request(s.addr, &Request::get("/cse-in").header("X-M2M-RI", "in-1"))
        .unwrap();
    assert_eq!(resp.status, 200);
    let egress: std::net::SocketAddr = format!("127.0.0.1:{egress_port}").parse().unwrap();
    let resp = Conn::plain(egress)
        .unwrap()
        .request(
            &Request::get("/cse-in")
                .header("X-M2M-RI", "eg-1")
                .header("X-M2M-Origin", "Cpod"),
        )
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let find = |needle: &str| -> String {
        let out = s
            .proxy
            .wait_stdout(needle, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no line with {needle}: {}", s.proxy.stdout_text()));
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap()
            .to_string()
    };
    let ops = doc("docs/operations.md");
    let access = section(&ops, "## Access log");
    for (heading, line) in [
        ("### Ingress lines", find("\"request_id\":\"in-1\"")),
        ("### Egress lines", find("\"direction\":\"egress\"")),
        (
            "### WebSocket refusal lines",
            find("\"event\":\"websocket_refused\""),
        ),
    ] {
        let documented = first_column(section(access, heading));
        let written: Keys = serde_json::from_str(&line).unwrap();
        assert_eq!(written.0, documented, "{heading}: {line}");
    }
}

/// The keys of a JSON object in the order they are written.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}
