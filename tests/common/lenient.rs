//! A differential reading of what the echo upstream received: the way lenient CSEs read it,
//! modelled on ACME 2026.05 (read in its sources: `helpers/TextTools.py`,
//! `etc/RequestUtils.py`, `protocols/HttpServer.py`), the CSE the proxy was attacked through
//! (issue 26). Tests compare this reading with the proxy's decision for every message the
//! proxy let through: where they differ, a CSE would act on something the proxy never judged.
//!
//! - JSON: comments stripped first, with ACME's regex and its bug (a string is taken to end at
//!   the first `"` not preceded by `\`, so it loses track after a string ending in `\\`); then
//!   parsed with the last duplicate key winning.
//! - CBOR: tags unwrapped wherever they are (map keys included), last duplicate key winning,
//!   any key type.
//! - HTTP: the method upper-cased, the last `Content-Type` winning, POST a create when any
//!   `;`-parameter is `ty=…` and a notify otherwise, `ty` the value after the first `=` of the
//!   parameters (ACME's `partition`), read only after a media type it supports (a case-sensitive
//!   prefix), as Python's `int()` reads it.
//!
//! Target shorthands (`~`, `_`, `-`) are not modelled: `to` is compared as written.
//!
//! The file has no dependency on the rest of the kit, so the fuzz targets include it too.

use std::collections::BTreeMap;

/// What a CSE would act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    pub op: Option<u64>,
    pub to: Option<String>,
    pub fr: Option<String>,
    pub ty: Option<u64>,
    /// HTTP only: the method as the CSE dispatches it.
    pub method: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// JSON

/// ACME's `removeCommentsFromJSON`: `re.sub` with
/// `(\".*?(?<!\\)\".*?(?<!\\))|(/\*.*?\*/|//[^\r\n]*$|#[^\r\n]*$|;;[^\r\n]*$)` (MULTILINE,
/// DOTALL), comments replaced by nothing, strings kept.
pub fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(end) = acme_string(b, i) {
            out.extend_from_slice(&b[i..end]);
            i = end;
        } else if let Some(end) = acme_comment(b, i) {
            i = end;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // the regex works on characters: cutting only at ASCII markers keeps UTF-8 whole
    String::from_utf8(out).unwrap_or_default()
}

/// `\".*?(?<!\\)\"`: from a quote to the first later quote whose previous byte is not `\`.
fn acme_string(b: &[u8], i: usize) -> Option<usize> {
    if b[i] != b'"' {
        return None;
    }
    (i + 1..b.len())
        .find(|&j| b[j] == b'"' && b[j - 1] != b'\\')
        .map(|j| j + 1)
}

/// The comment alternatives at `i`; the end of what is removed.
fn acme_comment(b: &[u8], i: usize) -> Option<usize> {
    let rest = &b[i..];
    if rest.starts_with(b"/*") {
        return (i + 2..b.len().saturating_sub(1))
            .find(|&j| &b[j..j + 2] == b"*/")
            .map(|j| j + 2);
    }
    let marker = [&b"//"[..], b"#", b";;"]
        .into_iter()
        .find(|m| rest.starts_with(m))?;
    // `[^\r\n]*$`: up to a line end; `$` (MULTILINE) holds only before `\n` or at the end
    let stop = (i + marker.len()..b.len())
        .find(|&j| b[j] == b'\r' || b[j] == b'\n')
        .unwrap_or(b.len());
    (stop == b.len() || b[stop] == b'\n').then_some(stop)
}

/// A JSON primitive as ACME reads it; `None` when it would not parse it at all.
pub fn read_json(payload: &[u8]) -> Option<Reading> {
    let text = std::str::from_utf8(payload).ok()?;
    // serde_json's maps keep the last of duplicate keys, as Python's `json` does
    let v: serde_json::Value = serde_json::from_str(&strip_comments(text)).ok()?;
    let obj = v.as_object()?;
    Some(Reading {
        op: obj.get("op").and_then(serde_json::Value::as_u64),
        to: obj.get("to").and_then(|v| v.as_str()).map(str::to_owned),
        fr: obj.get("fr").and_then(|v| v.as_str()).map(str::to_owned),
        ty: obj.get("ty").and_then(serde_json::Value::as_u64),
        method: None,
    })
}

// ---------------------------------------------------------------------------------------------
// CBOR

fn untag(v: &ciborium::Value) -> &ciborium::Value {
    match v {
        ciborium::Value::Tag(_, inner) => untag(inner),
        other => other,
    }
}

/// A CBOR primitive as a tag-unwrapping decoder reads it (cbor2, as ACME uses it).
pub fn read_cbor(payload: &[u8]) -> Option<Reading> {
    let v: ciborium::Value = ciborium::from_reader(payload).ok()?;
    let ciborium::Value::Map(entries) = untag(&v) else {
        return None;
    };
    let mut map: BTreeMap<String, &ciborium::Value> = BTreeMap::new();
    for (k, v) in entries {
        if let ciborium::Value::Text(k) = untag(k) {
            map.insert(k.clone(), untag(v));
        }
    }
    let int = |k: &str| match map.get(k) {
        Some(ciborium::Value::Integer(n)) => u64::try_from(i128::from(*n)).ok(),
        _ => None,
    };
    let text = |k: &str| match map.get(k) {
        Some(ciborium::Value::Text(s)) => Some(s.clone()),
        _ => None,
    };
    Some(Reading {
        op: int("op"),
        to: text("to"),
        fr: text("fr"),
        ty: int("ty"),
        method: None,
    })
}

// ---------------------------------------------------------------------------------------------
// HTTP

const SUPPORTED: [&str; 4] = [
    "application/json",
    "application/vnd.onem2m-res+json",
    "application/cbor",
    "application/vnd.onem2m-res+cbor",
];

/// Python's `int()` on a string: surrounding whitespace, a sign, digits with single `_`
/// between them.
fn python_int(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    let groups: Vec<&str> = s.split('_').collect();
    if groups
        .iter()
        .any(|g| g.is_empty() || !g.bytes().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    groups.concat().parse().ok()
}

/// A request head as ACME reads it: method, path, header fields in wire order. `None` when it
/// would refuse the request before acting (an unreadable `ty`).
pub fn read_http(method: &str, path: &str, headers: &[(String, String)]) -> Option<Reading> {
    let method = method.to_ascii_uppercase();
    let last = |name: &str| {
        headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let content_type = last("content-type");
    let has_ty_param = content_type.as_deref().is_some_and(|ct| {
        ct.split(';').any(|p| {
            let p = p.trim_start();
            p.len() >= 2
                && p[..2].eq_ignore_ascii_case("ty")
                && p[2..].trim_start().starts_with('=')
        })
    });
    let mut ty = None;
    if let Some(ct) = content_type
        .as_deref()
        .filter(|ct| SUPPORTED.iter().any(|s| ct.starts_with(s)))
    {
        let params = ct.split_once(';').map_or("", |(_, p)| p);
        let value = params.split_once('=').map_or("", |(_, v)| v);
        if !value.is_empty() {
            ty = Some(python_int(value)?);
        }
    }
    let op = match method.as_str() {
        "GET" | "HEAD" => Some(2),
        "POST" if has_ty_param => Some(1),
        "POST" => Some(5),
        "PUT" => Some(3),
        "DELETE" => Some(4),
        _ => None,
    };
    Some(Reading {
        op,
        to: Some(path.split('?').next().unwrap_or("").to_string()),
        fr: last("x-m2m-origin"),
        ty: if op == Some(1) { ty } else { None },
        method: Some(method),
    })
}
