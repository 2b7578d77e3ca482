//! One JSON line per request on stdout. Never a credential: identity names are certificate
//! fields, user names or token names; the path is logged without its query string.

use std::io::Write;
use std::time::SystemTime;

use serde::Serialize;

#[derive(Serialize)]
pub struct AccessRecord<'a> {
    pub time: String,
    /// "ingress": a client's request to the CSE.
    pub direction: &'static str,
    pub client: Option<String>,
    pub tls: Option<&'a str>,
    pub auth_method: &'a str,
    pub identity: Option<&'a str>,
    /// Roles of the identity (e.g. `sysop`); empty when none.
    pub roles: &'a [String],
    pub originator: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub rsc: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub auth_failure: Option<&'a str>,
    /// The authorization rule that decided (`default` when none matched); absent without rules.
    pub rule: Option<&'a str>,
    /// The target in the canonical form the rules judged (`/cse-in/x` for `/~/id-in/cse-in/x`);
    /// absent without rules.
    pub target: Option<&'a str>,
    pub duration_ms: f64,
    pub bytes_sent: usize,
    /// The request's trace and span, when tracing is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<&'a str>,
}

/// One line per request of the local CSE on an egress route.
#[derive(Serialize)]
pub struct EgressRecord<'a> {
    pub time: String,
    /// Always "egress".
    pub direction: &'static str,
    pub route: &'a str,
    pub peer: &'a str,
    /// The local CSE's `X-M2M-Origin`, as sent on.
    pub originator: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub rsc: Option<&'a str>,
    pub upstream_status: Option<u16>,
    /// What went wrong with the peer, when something did.
    pub failure: Option<&'a str>,
    pub duration_ms: f64,
    pub bytes_sent: usize,
    /// The request's trace and span, when tracing is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<&'a str>,
}

/// One line per WebSocket request primitive the proxy answered itself.
#[derive(Serialize)]
pub struct WebSocketRefusal<'a> {
    pub time: String,
    /// Always "websocket_refused", to tell these lines from request lines.
    pub event: &'static str,
    pub client: Option<String>,
    pub auth_method: &'a str,
    pub identity: &'a str,
    /// The proven originator; the refused `fr` is not logged (client-chosen text).
    pub originator: &'a str,
    pub request_id: Option<&'a str>,
    pub to: Option<&'a str>,
    pub rsc: u16,
    pub reason: &'a str,
    /// The authorization rule that refused the primitive, if a rule did.
    pub rule: Option<&'a str>,
    /// `to` in the canonical form the rules judged, when they did.
    pub target: Option<&'a str>,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub fn write(record: &impl Serialize) {
    let Ok(mut line) = serde_json::to_vec(record) else {
        return;
    };
    line.push(b'\n');
    // One write per line keeps lines whole when several threads log at once.
    let _ = std::io::stdout().lock().write_all(&line);
}
