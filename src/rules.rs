//! The authorization rule engine (issue 14): compiles the `authorization` section and decides,
//! for an authenticated request, `allow` or `deny`.
//!
//! # Contract
//!
//! * Rules are evaluated in order. The first rule whose every given condition matches decides
//!   with its `effect`; when no rule matches, `authorization.default` decides. A rule without
//!   conditions matches every request.
//! * Conditions (an absent one matches everything; a list matches when any entry does):
//!   - `identities`: the identity name equals an entry (exact, case-sensitive).
//!   - `patterns`: a regex matches the identity name. Regexes are used as written (unanchored
//!     search; `^…$` is the author's to write).
//!   - `roles`: the identity holds one of the roles.
//!   - `unless_roles`: the rule does *not* match when the identity holds one of the roles.
//!   - `methods`: the identity was proven by one of the methods.
//!   - `originators`: a regex matches the bound originator (what the CSE receives). A request
//!     without an originator (anonymous) never matches an `originators` condition.
//!   - `operations`: the request's operation is one of them. A request without an operation
//!     (an HTTP method outside the binding) never matches.
//!   - `resource_types`: the request's `ty` is one of them. Only creates carry `ty`; a request
//!     without one never matches.
//!   - `targets`: a target pattern matches the request target (below).
//! * HTTP operations ([`http_operation`]): POST with a `ty` parameter in Content-Type is a
//!   create, POST without one a notify; GET and HEAD retrieve; PUT update; DELETE delete; any
//!   other method (compared case-sensitively, as HTTP does) has no operation. The `ty` parameter
//!   name is case-insensitive, whitespace and quotes around the value are tolerated; a value that
//!   is not a number (`ty=abc`) or several different values leave the create without a type
//!   ([`content_type_ty`] says which, so the caller can refuse it).
//! * Targets ([`parse_target`]): the path is compared after percent-decoding, the raw path is
//!   what gets forwarded. So that the proxy and the CSE cannot read one path two ways, a path
//!   is refused when it holds (after cutting the query at the first `?`): a dot segment (`.`,
//!   `..`, raw or encoded), an encoded `/`, `\` or `%`, a raw `\`, a raw `;` (path parameters,
//!   which some servers strip: `..;/`), a raw `#`, an empty segment (`//`), a control character
//!   after decoding, an invalid percent-escape, non-UTF-8 after decoding, or a first segment
//!   that decodes to `~` or `_` without being written so. One trailing slash is dropped:
//!   `/cse-in/` is the target `/cse-in`.
//! * Forms (TS-0009): CSE-relative `/cse-in/…`, SP-relative `/~/id-in/cse-in/…`, absolute
//!   `/_/sp.example.com/id-in/cse-in/…`. `/~` and `/_` alone are refused (incomplete).
//!   WebSocket primitives ([`primitive_target`]) write them `cse-in/…`, `/id-in/cse-in/…` and
//!   `//sp.example.com/id-in/cse-in/…`; they map to the same targets, without percent-decoding
//!   but with the same refusals of dot and empty segments, backslashes and control characters,
//!   and a CSE-relative `to` may not start with a `~` or `_` segment.
//! * Target patterns are written in one of the three HTTP forms, decoded, and match targets of
//!   that form only (`/cse-in/**` never matches `/~/id-in/cse-in`). A literal segment matches
//!   exactly (case-sensitive), `*` exactly one segment, `**` (last segment only) any tail of zero
//!   or more segments: `/cse-in/*` matches `/cse-in/x` but not `/cse-in` nor `/cse-in/x/y`;
//!   `/cse-in/**` matches `/cse-in` and `/cse-in/x/y`, `/**` every CSE-relative target. `*`
//!   inside a segment (`Cae-*`), `%`, `?`, `#`, `;`, a trailing slash, empty or dot segments are
//!   configuration errors.
//!
//! `decide` does not allocate: the regexes of all rules are searched together, once per request
//! and only when a rule gets to them (per-thread result buffers); roles are bits when the rules
//! name at most 64; a target keeps its segments' positions.

use std::cell::RefCell;

use regex_automata::meta;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind, PatternID, PatternSet};

use crate::config::{AuthorizationConfig, Effect, KeyError, Operation, ResourceType, RuleConfig};
use crate::identity::{Identity, Method};

// ------------------------------------------------------------------ targets

/// Why a target was refused; short and safe to send back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError(pub &'static str);

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TargetError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/cse-in/…`
    CseRelative,
    /// `/~/id-in/cse-in/…`
    SpRelative,
    /// `/_/sp.example.com/id-in/cse-in/…`
    Absolute,
}

impl TargetForm {
    /// The HTTP path prefix before the first segment.
    fn prefix(self) -> &'static str {
        match self {
            TargetForm::CseRelative => "/",
            TargetForm::SpRelative => "/~/",
            TargetForm::Absolute => "/_/",
        }
    }
}

/// A request target: its form and its decoded segments (without the `~`/`_` marker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    form: TargetForm,
    /// The normalised HTTP form: prefix, then the decoded segments joined by `/`.
    text: String,
    /// Where each segment is in `text`, so that rules compare without splitting again.
    spans: Vec<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
    /// The first 8 bytes, zero-padded: most literals are decided by comparing this.
    head: u64,
}

fn head(bytes: &[u8]) -> u64 {
    let mut h = [0u8; 8];
    for (d, s) in h.iter_mut().zip(bytes) {
        *d = *s;
    }
    u64::from_le_bytes(h)
}

impl Target {
    pub fn form(&self) -> TargetForm {
        self.form
    }

    /// Normalised, in HTTP form, decoded (for logs and `explain`, not for forwarding).
    pub fn display(&self) -> String {
        self.text.clone()
    }

    /// [`Target::display`] without the copy.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The decoded segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.spans.iter().map(|s| {
            self.text
                .get(s.start as usize..s.end as usize)
                .unwrap_or("")
        })
    }
}

/// Record the segment from byte `start` to the end of `text`.
fn push_span(spans: &mut Vec<Span>, text: &[u8], start: usize) -> Result<(), TargetError> {
    let offset = |n: usize| u32::try_from(n).map_err(|_| TargetError("target too long"));
    spans.push(Span {
        start: offset(start)?,
        end: offset(text.len())?,
        head: head(text.get(start..).unwrap_or_default()),
    });
    Ok(())
}

const EMPTY: TargetError = TargetError("empty target");
const NOT_ABSOLUTE: TargetError = TargetError("target path must start with /");
const INCOMPLETE: TargetError = TargetError("incomplete target (/~ or /_ without an id)");
const EMPTY_SEGMENT: TargetError = TargetError("empty path segment");
const DOT_SEGMENT: TargetError = TargetError("dot segment in target");
const BACKSLASH: TargetError = TargetError("backslash in target");
const ENCODED_SLASH: TargetError = TargetError("encoded / in target");
const ENCODED_BACKSLASH: TargetError = TargetError("encoded \\ in target");
const ENCODED_PERCENT: TargetError = TargetError("encoded % in target");
const BAD_ESCAPE: TargetError = TargetError("invalid percent-escape in target");
const CONTROL: TargetError = TargetError("control character in target");
const NOT_UTF8: TargetError = TargetError("target is not UTF-8 after decoding");
const PATH_PARAMETER: TargetError = TargetError("path parameter (;) in target");
const FRAGMENT: TargetError = TargetError("fragment (#) in target");
const ENCODED_MARKER: TargetError = TargetError("encoded ~ or _ as first segment");
const MARKER: TargetError = TargetError("~ or _ as first segment of a primitive target");

/// Parse an HTTP request path (`uri.path()`, a query is ignored) into a [`Target`], refusing
/// what two parsers could read differently (see the module documentation).
pub fn parse_target(raw_path: &str) -> Result<Target, TargetError> {
    let path = raw_path.split_once('?').map_or(raw_path, |(p, _)| p);
    if path.is_empty() {
        return Err(EMPTY);
    }
    let body = path.strip_prefix('/').ok_or(NOT_ABSOLUTE)?;
    let mut raw = split_body(body);
    let (form, first) = match raw.next() {
        Some("~") => (TargetForm::SpRelative, None),
        Some("_") => (TargetForm::Absolute, None),
        other => (TargetForm::CseRelative, other),
    };
    let mut out = Vec::with_capacity(path.len() + 2);
    out.extend_from_slice(form.prefix().as_bytes());
    let mut spans = Vec::with_capacity(path.bytes().filter(|&b| b == b'/').count());
    if let Some(first) = first {
        push_decoded(&mut out, first)?;
        // `/%7e/…` would be SP-relative to a CSE that decodes before looking at the form.
        if matches!(out.get(1..), Some(b"~") | Some(b"_")) {
            return Err(ENCODED_MARKER);
        }
        push_span(&mut spans, &out, 1)?;
    }
    for seg in raw {
        if !spans.is_empty() {
            out.push(b'/');
        }
        let start = out.len();
        push_decoded(&mut out, seg)?;
        push_span(&mut spans, &out, start)?;
    }
    if spans.is_empty() && form != TargetForm::CseRelative {
        return Err(INCOMPLETE);
    }
    let text = String::from_utf8(out).map_err(|_| NOT_UTF8)?;
    // C1 controls are only visible after UTF-8 decoding (ASCII ones were refused already).
    if !text.is_ascii() && text.chars().any(char::is_control) {
        return Err(CONTROL);
    }
    Ok(Target { form, text, spans })
}

/// The segments of a path without its leading `/`; one trailing slash is dropped, `""` has none.
fn split_body(body: &str) -> std::iter::Take<std::str::Split<'_, char>> {
    let trimmed = if body.is_empty() {
        body
    } else {
        body.strip_suffix('/').unwrap_or(body)
    };
    // `body == ""` is the root `/`: no segment. `body == "/"` (path `//`) keeps one empty one.
    let count = if body.is_empty() { 0 } else { usize::MAX };
    trimmed.split('/').take(count)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Append one raw HTTP path segment, percent-decoded, after checking it.
fn push_decoded(out: &mut Vec<u8>, raw: &str) -> Result<(), TargetError> {
    if raw.is_empty() {
        return Err(EMPTY_SEGMENT);
    }
    let start = out.len();
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        let decoded = match b {
            b'%' => {
                let hi = bytes.next().and_then(hex).ok_or(BAD_ESCAPE)?;
                let lo = bytes.next().and_then(hex).ok_or(BAD_ESCAPE)?;
                match (hi << 4) | lo {
                    b'/' => return Err(ENCODED_SLASH),
                    b'\\' => return Err(ENCODED_BACKSLASH),
                    // a CSE that decodes twice would see `%2e` as `.`
                    b'%' => return Err(ENCODED_PERCENT),
                    d => d,
                }
            }
            b'\\' => return Err(BACKSLASH),
            b';' => return Err(PATH_PARAMETER),
            b'#' => return Err(FRAGMENT),
            _ => b,
        };
        if decoded < 0x20 || decoded == 0x7f {
            return Err(CONTROL);
        }
        out.push(decoded);
    }
    if matches!(out.get(start..), Some(b".") | Some(b"..")) {
        return Err(DOT_SEGMENT);
    }
    Ok(())
}

/// Check one segment taken as is (primitive `to`, target patterns).
fn check_plain(seg: &str) -> Result<(), TargetError> {
    if seg.is_empty() {
        return Err(EMPTY_SEGMENT);
    }
    if seg == "." || seg == ".." {
        return Err(DOT_SEGMENT);
    }
    if seg.contains('\\') {
        return Err(BACKSLASH);
    }
    if seg.chars().any(char::is_control) {
        return Err(CONTROL);
    }
    Ok(())
}

/// Map a WebSocket primitive's `to` (`cse-in/x`, `/id-in/cse-in/x`, `//sp/id-in/cse-in/x`) to
/// the [`Target`] of the equivalent HTTP path. No percent-decoding: `to` is not a URI path.
pub fn primitive_target(to: &str) -> Result<Target, TargetError> {
    if to.is_empty() {
        return Err(EMPTY);
    }
    let (form, body) = if let Some(rest) = to.strip_prefix("//") {
        (TargetForm::Absolute, rest)
    } else if let Some(rest) = to.strip_prefix('/') {
        (TargetForm::SpRelative, rest)
    } else {
        (TargetForm::CseRelative, to)
    };
    if body.is_empty() {
        return Err(INCOMPLETE);
    }
    let mut text = String::with_capacity(to.len() + 3);
    text.push_str(form.prefix());
    let mut spans = Vec::with_capacity(to.bytes().filter(|&b| b == b'/').count() + 1);
    for seg in split_body(body) {
        check_plain(seg)?;
        // `cse-in/…` has no form marker; `~/…` would read as one to an HTTP-minded CSE
        if spans.is_empty() && form == TargetForm::CseRelative && (seg == "~" || seg == "_") {
            return Err(MARKER);
        }
        if !spans.is_empty() {
            text.push('/');
        }
        let start = text.len();
        text.push_str(seg);
        push_span(&mut spans, text.as_bytes(), start)?;
    }
    Ok(Target { form, text, spans })
}

// ------------------------------------------------------------------ operations

/// The operation (and for creates the resource type) of an HTTP request (TS-0009 binding).
pub fn http_operation(
    method: &str,
    content_type: Option<&str>,
) -> (Option<Operation>, Option<ResourceType>) {
    match method {
        "POST" => match content_type.map(content_type_ty) {
            None | Some(Ok(None)) => (Some(Operation::Notify), None),
            Some(Ok(ty)) => (Some(Operation::Create), ty),
            // a `ty` was given: a create, of no type a rule could name
            Some(Err(_)) => (Some(Operation::Create), None),
        },
        "GET" | "HEAD" => (Some(Operation::Retrieve), None),
        "PUT" => (Some(Operation::Update), None),
        "DELETE" => (Some(Operation::Delete), None),
        _ => (None, None),
    }
}

/// The `ty` parameter of a Content-Type: `Ok(None)` without one, `Err` when it is not a number
/// or given twice with different values (a CSE could read either; the caller may refuse).
pub fn content_type_ty(content_type: &str) -> Result<Option<ResourceType>, TargetError> {
    let mut found: Option<u32> = None;
    for param in content_type.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("ty") {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        // digits only: `u32::from_str` would also take `+16`
        let ty = value
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| value.parse::<u32>().ok())
            .flatten()
            .ok_or(TargetError("invalid ty"))?;
        if found.is_some_and(|f| f != ty) {
            return Err(TargetError("ambiguous ty"));
        }
        found = Some(ty);
    }
    Ok(found.map(ResourceType))
}

// ------------------------------------------------------------------ compiled rules

/// One request as the rules see it.
pub struct Request<'a> {
    /// `None` for an anonymous request (`auth.anonymous: allow`): it has no name, method or
    /// roles, so `identities`, `patterns`, `roles` and `methods` conditions do not match it.
    pub identity: Option<&'a Identity>,
    /// The bound originator; `None` for an anonymous request.
    pub originator: Option<&'a str>,
    pub operation: Option<Operation>,
    pub resource_type: Option<ResourceType>,
    pub target: &'a Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    /// index of the deciding rule; None = default
    pub rule: Option<usize>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal { text: Box<str>, head: u64 },
    One,
}

impl Segment {
    #[inline]
    fn matches(&self, t: &Target, span: Span) -> bool {
        match self {
            Segment::One => true,
            Segment::Literal { text, head } => {
                let seg = t
                    .text
                    .as_bytes()
                    .get(span.start as usize..span.end as usize);
                let seg = seg.unwrap_or_default();
                // the 8-byte heads decide short literals without comparing bytes
                *head == span.head
                    && text.len() == seg.len()
                    && (seg.len() <= 8 || text.as_bytes().get(8..) == seg.get(8..))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct TargetPattern {
    form: TargetForm,
    segments: Box<[Segment]>,
    /// Ends in `**`.
    tail: bool,
}

impl TargetPattern {
    fn parse(text: &str) -> Result<TargetPattern, String> {
        let body = text
            .strip_prefix('/')
            .ok_or_else(|| format!("expected a path starting with /, got {text:?}"))?;
        // characters no accepted target holds once decoded
        if let Some(c) = text.chars().find(|c| matches!(c, '%' | '?' | '#' | ';')) {
            return Err(format!(
                "{text:?}: {c:?} is not allowed (patterns are written decoded, without query)"
            ));
        }
        if body.ends_with('/') {
            return Err(format!(
                "{text:?} ends in /: write it without (the same target) or with /** (a subtree)"
            ));
        }
        let mut raw = body
            .split('/')
            .take(if body.is_empty() { 0 } else { usize::MAX });
        let form = match body.split('/').next() {
            Some("~") => TargetForm::SpRelative,
            Some("_") => TargetForm::Absolute,
            _ => TargetForm::CseRelative,
        };
        if form != TargetForm::CseRelative {
            raw.next();
        }
        let raw: Vec<&str> = raw.collect();
        if raw.is_empty() && form != TargetForm::CseRelative {
            return Err(format!(
                "{text:?}: /~ and /_ need at least one more segment"
            ));
        }
        let mut segments = Vec::with_capacity(raw.len());
        let mut tail = false;
        for (k, seg) in raw.iter().enumerate() {
            check_plain(seg).map_err(|e| format!("{text:?}: {e}"))?;
            match *seg {
                "**" if k + 1 == raw.len() => tail = true,
                "**" => return Err(format!("{text:?}: ** is only allowed as the last segment")),
                "*" => segments.push(Segment::One),
                s if s.contains('*') => {
                    return Err(format!(
                        "{text:?}: * and ** stand for whole segments, not parts of one"
                    ))
                }
                s => segments.push(Segment::Literal {
                    text: s.into(),
                    head: head(s.as_bytes()),
                }),
            }
        }
        Ok(TargetPattern {
            form,
            segments: segments.into_boxed_slice(),
            tail,
        })
    }

    #[inline]
    fn matches(&self, t: &Target) -> bool {
        let (n, len) = (self.segments.len(), t.spans.len());
        if t.form != self.form || len < n || (!self.tail && len != n) {
            return false;
        }
        self.segments
            .iter()
            .zip(&t.spans)
            .all(|(p, &span)| p.matches(t, span))
    }
}

/// The condition keys of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Identities,
    Patterns,
    Roles,
    Methods,
    Originators,
    Operations,
    ResourceTypes,
    Targets,
    UnlessRoles,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Identities => "identities",
            Key::Patterns => "patterns",
            Key::Roles => "roles",
            Key::Methods => "methods",
            Key::Originators => "originators",
            Key::Operations => "operations",
            Key::ResourceTypes => "resource_types",
            Key::Targets => "targets",
            Key::UnlessRoles => "unless_roles",
        }
    }
}

/// A role list: one bit per role of the set when it names at most 64, else the names.
#[derive(Debug)]
enum Roles {
    Mask(u64),
    Names(Box<[String]>),
}

/// The mask of an absent `methods` or `operations` condition: every request passes.
const ANY: u8 = u8::MAX;
/// The operation bit of a request without operation: only [`ANY`] has it.
const NO_OPERATION: u8 = 0x80;
/// The method bit of an anonymous request: in [`ANY`], in no list.
const NO_METHOD: u8 = 0x80;

/// Bits, not a table: a new `Method` or `Operation` variant must be given one here.
fn method_bit(m: Method) -> u8 {
    match m {
        Method::Mtls => 1,
        Method::Basic => 2,
        Method::Bearer => 4,
        Method::Jwt => 8,
        Method::Introspection => 16,
    }
}

fn op_bit(op: Option<Operation>) -> u8 {
    match op {
        Some(Operation::Create) => 1,
        Some(Operation::Retrieve) => 2,
        Some(Operation::Update) => 4,
        Some(Operation::Delete) => 8,
        Some(Operation::Notify) => 16,
        None => NO_OPERATION,
    }
}

fn sorted_contains(sorted: &[String], s: &str) -> bool {
    // equality checks the length first: cheaper than ordering a few short strings
    if sorted.len() <= 8 {
        sorted.iter().any(|x| x == s)
    } else {
        sorted.binary_search_by(|x| x.as_str().cmp(s)).is_ok()
    }
}

fn sorted(list: &[String]) -> Box<[String]> {
    let mut v = list.to_vec();
    v.sort();
    v.dedup();
    v.into_boxed_slice()
}

/// The bits of `held` roles in `table` (sorted, at most 64 entries).
fn role_mask(table: &[String], held: &[String]) -> u64 {
    held.iter()
        .filter_map(|r| table.binary_search(r).ok())
        .fold(0, |m, i| m | 1u64.checked_shl(i as u32).unwrap_or(0))
}

/// A compiled rule: flat, so that the common conditions cost a mask test, not a lookup.
#[derive(Debug)]
struct Rule {
    name: String,
    effect: Effect,
    /// [`ANY`] when absent.
    methods: u8,
    /// [`ANY`] when absent.
    operations: u8,
    resource_types: Option<Box<[u32]>>,
    identities: Option<Box<[String]>>,
    roles: Option<Roles>,
    unless_roles: Option<Roles>,
    targets: Option<Box<[TargetPattern]>>,
    /// Ids in the set-wide regex groups.
    patterns: Option<Box<[PatternID]>>,
    originators: Option<Box<[PatternID]>>,
    /// The given conditions and their text, in display order (for `table` and `explain`):
    /// who, what, then the exception (`unless_roles`).
    described: Box<[(Key, String)]>,
}

impl Rule {
    /// Whether condition `key` matches; an absent condition does. The one place that says
    /// what a condition means (`decide` and `explain` both ask here).
    #[inline(always)]
    fn check(&self, key: Key, ev: &mut Eval<'_>) -> bool {
        let req = ev.req;
        match key {
            Key::Methods => self.methods & ev.method != 0,
            Key::Operations => self.operations & ev.operation != 0,
            Key::ResourceTypes => self.resource_types.as_ref().is_none_or(|tys| {
                req.resource_type
                    .is_some_and(|t| tys.binary_search(&t.0).is_ok())
            }),
            Key::Identities => self.identities.as_ref().is_none_or(|names| {
                req.identity
                    .is_some_and(|i| sorted_contains(names, &i.name))
            }),
            Key::Roles => self.roles.as_ref().is_none_or(|r| ev.holds_any(r)),
            Key::UnlessRoles => self.unless_roles.as_ref().is_none_or(|r| !ev.holds_any(r)),
            Key::Targets => self
                .targets
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| p.matches(req.target))),
            Key::Patterns => self
                .patterns
                .as_ref()
                .is_none_or(|ids| req.identity.is_some_and(|i| ev.names.any(&i.name, ids))),
            Key::Originators => self.originators.as_ref().is_none_or(|ids| {
                // anonymous: no originator for any regex to match
                req.originator.is_some_and(|o| ev.originators.any(o, ids))
            }),
        }
    }

    /// All conditions, cheapest first (the result does not depend on the order).
    fn matches(&self, ev: &mut Eval<'_>) -> bool {
        self.check(Key::Methods, ev)
            && self.check(Key::Operations, ev)
            && self.check(Key::ResourceTypes, ev)
            && self.check(Key::Roles, ev)
            && self.check(Key::UnlessRoles, ev)
            && self.check(Key::Identities, ev)
            && self.check(Key::Targets, ev)
            && self.check(Key::Patterns, ev)
            && self.check(Key::Originators, ev)
    }

    fn text(&self, key: &str) -> &str {
        self.described
            .iter()
            .find(|(k, _)| k.name() == key)
            .map_or("", |(_, t)| t.as_str())
    }

    fn line(&self, index: usize) -> String {
        let conds = if self.described.is_empty() {
            "(always)".to_string()
        } else {
            self.described
                .iter()
                .map(|(k, text)| format!("{} {text}", k.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{}. {}: {} -> {}",
            index + 1,
            self.name,
            conds,
            self.effect.label()
        )
    }
}

/// All the regexes of one kind (identity name, originator) in the set, distinct, searched
/// together once per request: one pass instead of one search per rule.
#[derive(Debug, Default)]
struct RegexGroup {
    sources: Vec<String>,
    regex: Option<meta::Regex>,
}

impl RegexGroup {
    /// Validate `pattern` (as the `regex` crate would) and return its id in the group.
    fn add(&mut self, pattern: &str) -> Result<PatternID, String> {
        if let Some(i) = self.sources.iter().position(|s| s == pattern) {
            return PatternID::new(i).map_err(|e| e.to_string());
        }
        regex::Regex::new(pattern)
            .map_err(|e| format!("expected regular expressions: {pattern:?}: {e}"))?;
        self.sources.push(pattern.to_string());
        PatternID::new(self.sources.len() - 1).map_err(|e| e.to_string())
    }

    fn build(&mut self, what: &str) -> Result<(), KeyError> {
        if self.sources.is_empty() {
            return Ok(());
        }
        // As `regex::RegexSet` configures it (its limits, every pattern reported).
        let config = meta::Config::new()
            .match_kind(MatchKind::All)
            .utf8_empty(true)
            .which_captures(regex_automata::nfa::thompson::WhichCaptures::None)
            .nfa_size_limit(Some(10 << 20))
            .hybrid_cache_capacity(2 << 20);
        let regex = meta::Builder::new()
            .configure(config)
            .syntax(syntax::Config::new().utf8(true))
            .build_many(&self.sources)
            .map_err(|e| {
                KeyError::new(
                    "authorization.rules",
                    format!(
                        "the {} {what} regexes of the rules are too large together: {e}",
                        self.sources.len()
                    ),
                )
            })?;
        self.regex = Some(regex);
        Ok(())
    }

    fn search(&self, haystack: &str, hits: &mut PatternSet) {
        if hits.capacity() < self.sources.len() {
            *hits = PatternSet::new(self.sources.len());
        }
        hits.clear();
        if let Some(re) = &self.regex {
            re.which_overlapping_matches(&Input::new(haystack), hits);
        }
    }
}

/// Per-thread result buffers, so that `decide` does not allocate.
struct Scratch {
    names: PatternSet,
    originators: PatternSet,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            names: PatternSet::new(0),
            originators: PatternSet::new(0),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// A regex group searched at most once per request, when a rule first needs it.
struct Lazy<'a> {
    group: &'a RegexGroup,
    hits: &'a mut PatternSet,
    done: bool,
}

impl Lazy<'_> {
    fn any(&mut self, haystack: &str, ids: &[PatternID]) -> bool {
        if !self.done {
            self.group.search(haystack, self.hits);
            self.done = true;
        }
        ids.iter().any(|id| self.hits.contains(*id))
    }
}

/// One request under evaluation, with what is worked out once for all rules.
struct Eval<'a> {
    req: &'a Request<'a>,
    method: u8,
    operation: u8,
    role_table: &'a [String],
    role_mask: Option<u64>,
    names: Lazy<'a>,
    originators: Lazy<'a>,
}

impl Eval<'_> {
    fn holds_any(&mut self, roles: &Roles) -> bool {
        let held: &[String] = self.req.identity.map_or(&[], |i| &i.roles);
        match roles {
            Roles::Mask(m) => {
                let table = self.role_table;
                m & *self.role_mask.get_or_insert_with(|| role_mask(table, held)) != 0
            }
            Roles::Names(names) => held.iter().any(|r| sorted_contains(names, r)),
        }
    }
}

/// The compiled `authorization` section.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    default: Effect,
    /// Every role the rules name, sorted, when they are at most 64 (then roles are masks).
    role_table: Vec<String>,
    names: RegexGroup,
    originators: RegexGroup,
}

/// What `explain` found: every rule's conditions, then the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub rules: Vec<RuleTrace>,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub name: String,
    /// Condition key and whether it matched (for `unless_roles`: the identity holds none).
    pub conditions: Vec<(&'static str, bool)>,
    /// All given conditions matched.
    pub matched: bool,
}

impl RuleSet {
    pub fn compile(c: &AuthorizationConfig) -> Result<RuleSet, KeyError> {
        c.validate()?;
        let mut role_table: Vec<String> = c
            .rules
            .iter()
            .flat_map(|r| r.roles.iter().chain(&r.unless_roles).flatten())
            .cloned()
            .collect();
        role_table.sort();
        role_table.dedup();
        if role_table.len() > 64 {
            role_table.clear();
        }
        let mut names = RegexGroup::default();
        let mut originators = RegexGroup::default();
        let mut rules = Vec::with_capacity(c.rules.len());
        for (i, rc) in c.rules.iter().enumerate() {
            rules.push(compile_rule(
                i,
                rc,
                &role_table,
                &mut names,
                &mut originators,
            )?);
        }
        names.build("patterns")?;
        originators.build("originators")?;
        Ok(RuleSet {
            rules,
            default: c.default,
            role_table,
            names,
            originators,
        })
    }

    /// No rules: every request gets the default (the proxy skips target parsing).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn default_effect(&self) -> Effect {
        self.default
    }

    pub fn decide(&self, req: &Request<'_>) -> Decision {
        if self.rules.is_empty() {
            return self.default_decision();
        }
        let run = |scratch: &mut Scratch| self.decide_with(req, scratch);
        SCRATCH
            .try_with(|cell| cell.try_borrow_mut().ok().map(|mut s| run(&mut s)))
            .ok()
            .flatten()
            // thread-local gone (thread exit) or in use: a buffer of our own
            .unwrap_or_else(|| run(&mut Scratch::new()))
    }

    fn decide_with(&self, req: &Request<'_>, scratch: &mut Scratch) -> Decision {
        let mut ev = self.eval(req, scratch);
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(&mut ev) {
                return Decision {
                    effect: rule.effect,
                    rule: Some(i),
                };
            }
        }
        self.default_decision()
    }

    fn eval<'a>(&'a self, req: &'a Request<'a>, scratch: &'a mut Scratch) -> Eval<'a> {
        Eval {
            req,
            method: req.identity.map_or(NO_METHOD, |i| method_bit(i.proven_by)),
            operation: op_bit(req.operation),
            role_table: &self.role_table,
            role_mask: None,
            names: Lazy {
                group: &self.names,
                hits: &mut scratch.names,
                done: false,
            },
            originators: Lazy {
                group: &self.originators,
                hits: &mut scratch.originators,
                done: false,
            },
        }
    }

    fn default_decision(&self) -> Decision {
        Decision {
            effect: self.default,
            rule: None,
        }
    }

    /// The name of rule `index`; `""` when there is no such rule.
    pub fn rule_name(&self, index: usize) -> &str {
        self.rules.get(index).map_or("", |r| r.name.as_str())
    }

    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// For `explain`: every rule in order with each given condition and whether it matched
    /// (all evaluated, also past the deciding rule), then the decision.
    pub fn explain(&self, req: &Request<'_>) -> Explanation {
        let mut scratch = Scratch::new();
        let mut ev = self.eval(req, &mut scratch);
        let mut decision = self.default_decision();
        let mut traces = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let conditions: Vec<(&'static str, bool)> = rule
                .described
                .iter()
                .map(|(key, _)| (key.name(), rule.check(*key, &mut ev)))
                .collect();
            let matched = conditions.iter().all(|(_, m)| *m);
            if matched && decision.rule.is_none() {
                decision = Decision {
                    effect: rule.effect,
                    rule: Some(i),
                };
            }
            traces.push(RuleTrace {
                name: rule.name.clone(),
                conditions,
                matched,
            });
        }
        Explanation {
            rules: traces,
            decision,
        }
    }

    /// For `check`: one line per rule, then the default.
    pub fn table(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| r.line(i))
            .collect();
        lines.push(format!("default: {}", self.default.label()));
        lines
    }
}

impl Explanation {
    /// Human-readable, one line per rule, then the decision.
    pub fn render(&self, set: &RuleSet) -> String {
        let mut out = String::new();
        for (i, trace) in self.rules.iter().enumerate() {
            let rule = set.rules.get(i);
            let conds = if trace.conditions.is_empty() {
                "(always)".to_string()
            } else {
                trace
                    .conditions
                    .iter()
                    .map(|(key, matched)| {
                        let text = rule.map_or("", |r| r.text(key));
                        let verdict = if *matched { "matched" } else { "failed" };
                        format!("{key} {text} ({verdict})")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let outcome = match (trace.matched, self.decision.rule) {
                (true, Some(d)) if d == i => {
                    format!(
                        "matches -> {} (decides)",
                        rule.map_or("?", |r| r.effect.label())
                    )
                }
                (true, _) => "matches (not reached)".to_string(),
                (false, _) => "no match".to_string(),
            };
            out.push_str(&format!(
                "{}. {}: {} -> {}\n",
                i + 1,
                trace.name,
                conds,
                outcome
            ));
        }
        match self.decision.rule {
            Some(i) => out.push_str(&format!(
                "decision: {} by rule {} ({})\n",
                self.decision.effect.label(),
                i + 1,
                set.rule_name(i)
            )),
            None => out.push_str(&format!(
                "decision: {} (default, no rule matched)\n",
                self.decision.effect.label()
            )),
        }
        out
    }
}

fn compile_rule(
    i: usize,
    rc: &RuleConfig,
    role_table: &[String],
    names: &mut RegexGroup,
    originators: &mut RegexGroup,
) -> Result<Rule, KeyError> {
    let key = |k: Key| format!("authorization.rules[{i}].{}", k.name());
    let or = |items: &[String]| items.join(" or ");
    let roles = |list: &[String]| {
        if role_table.is_empty() {
            Roles::Names(sorted(list))
        } else {
            Roles::Mask(role_mask(role_table, list))
        }
    };
    let regexes = |group: &mut RegexGroup, list: &[String], k: Key| {
        list.iter()
            .map(|p| group.add(p))
            .collect::<Result<Box<[_]>, _>>()
            .map_err(|m| KeyError::new(key(k), m))
    };
    let mut described: Vec<(Key, String)> = Vec::new();
    let mut describe = |k: Key, items: Vec<String>| described.push((k, or(&items)));

    if let Some(list) = &rc.identities {
        describe(Key::Identities, list.clone());
    }
    if let Some(list) = &rc.patterns {
        describe(Key::Patterns, list.clone());
    }
    if let Some(list) = &rc.roles {
        describe(Key::Roles, list.clone());
    }
    if let Some(list) = &rc.methods {
        describe(
            Key::Methods,
            list.iter().map(|m| m.as_str().to_string()).collect(),
        );
    }
    if let Some(list) = &rc.originators {
        describe(Key::Originators, list.clone());
    }
    if let Some(list) = &rc.operations {
        describe(
            Key::Operations,
            list.iter().map(|o| o.as_str().to_string()).collect(),
        );
    }
    if let Some(list) = &rc.resource_types {
        describe(
            Key::ResourceTypes,
            list.iter()
                .map(|t| t.name().map_or_else(|| t.0.to_string(), str::to_string))
                .collect(),
        );
    }
    if let Some(list) = &rc.targets {
        describe(Key::Targets, list.clone());
    }
    // the exception last: "originators ^CAdmin$, unless_roles sysop"
    if let Some(list) = &rc.unless_roles {
        describe(Key::UnlessRoles, list.clone());
    }

    let targets = rc
        .targets
        .as_ref()
        .map(|list| {
            list.iter()
                .map(|t| TargetPattern::parse(t))
                .collect::<Result<Box<[_]>, _>>()
                .map_err(|m| KeyError::new(key(Key::Targets), m))
        })
        .transpose()?;
    Ok(Rule {
        name: rc.name.clone(),
        effect: rc.effect,
        methods: rc
            .methods
            .as_ref()
            .map_or(ANY, |list| list.iter().fold(0, |b, m| b | method_bit(*m))),
        operations: rc
            .operations
            .as_ref()
            .map_or(ANY, |list| list.iter().fold(0, |b, o| b | op_bit(Some(*o)))),
        resource_types: rc.resource_types.as_ref().map(|list| {
            let mut v: Vec<u32> = list.iter().map(|t| t.0).collect();
            v.sort_unstable();
            v.dedup();
            v.into_boxed_slice()
        }),
        identities: rc.identities.as_deref().map(sorted),
        roles: rc.roles.as_deref().map(roles),
        unless_roles: rc.unless_roles.as_deref().map(roles),
        targets,
        patterns: rc
            .patterns
            .as_deref()
            .map(|list| regexes(names, list, Key::Patterns))
            .transpose()?,
        originators: rc
            .originators
            .as_deref()
            .map(|list| regexes(originators, list, Key::Originators))
            .transpose()?,
        described: described.into_boxed_slice(),
    })
}

/// The `rule` label of a decision no rule made.
pub const DEFAULT_RULE: &str = "default";

#[cfg(test)]
mod tests {
    use super::*;

    fn set(yaml: &str) -> RuleSet {
        let c: AuthorizationConfig = serde_yaml_ng::from_str(yaml).unwrap();
        RuleSet::compile(&c).unwrap()
    }

    fn compile_err(yaml: &str) -> KeyError {
        let c: AuthorizationConfig = serde_yaml_ng::from_str(yaml).unwrap();
        RuleSet::compile(&c).unwrap_err()
    }

    fn who(name: &str, method: Method, roles: &[&str]) -> Identity {
        Identity {
            name: name.into(),
            proven_by: method,
            originator: name.into(),
            also_allowed: Vec::new(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    /// A request described the way the proxy sees it.
    struct Req {
        identity: Identity,
        originator: Option<String>,
        method: &'static str,
        content_type: Option<&'static str>,
        path: &'static str,
    }

    fn req(name: &str) -> Req {
        Req {
            identity: who(name, Method::Mtls, &[]),
            originator: Some(name.into()),
            method: "GET",
            content_type: None,
            path: "/cse-in/x",
        }
    }

    impl Req {
        fn roles(mut self, roles: &[&str]) -> Req {
            self.identity.roles = roles.iter().map(|r| r.to_string()).collect();
            self
        }
        fn by(mut self, m: Method) -> Req {
            self.identity.proven_by = m;
            self
        }
        fn origin(mut self, o: Option<&str>) -> Req {
            self.originator = o.map(str::to_string);
            self
        }
        fn http(mut self, method: &'static str, ct: Option<&'static str>) -> Req {
            self.method = method;
            self.content_type = ct;
            self
        }
        fn at(mut self, path: &'static str) -> Req {
            self.path = path;
            self
        }
        fn with<T>(&self, f: impl FnOnce(&Request<'_>) -> T) -> T {
            let target = parse_target(self.path).unwrap();
            let (operation, resource_type) = http_operation(self.method, self.content_type);
            f(&Request {
                identity: Some(&self.identity),
                originator: self.originator.as_deref(),
                operation,
                resource_type,
                target: &target,
            })
        }
        fn on(&self, s: &RuleSet) -> Decision {
            self.with(|r| s.decide(r))
        }
    }

    const ALLOW: Effect = Effect::Allow;
    const DENY: Effect = Effect::Deny;

    fn by_rule(effect: Effect, i: usize) -> Decision {
        Decision {
            effect,
            rule: Some(i),
        }
    }

    fn by_default(effect: Effect) -> Decision {
        Decision { effect, rule: None }
    }

    /// One rule `r` (effect deny) with `cond`, default allow.
    fn one(cond: &str) -> RuleSet {
        set(&format!(
            "default: allow\nrules:\n  - name: r\n    {cond}\n    effect: deny\n"
        ))
    }

    // ---------------------------------------------------------- conditions alone

    #[test]
    fn identities_exact() {
        let s = one("identities: [Cae-a, Cae-b]");
        assert_eq!(req("Cae-b").on(&s), by_rule(DENY, 0));
        assert_eq!(req("Cae-bb").on(&s), by_default(ALLOW));
        assert_eq!(req("cae-a").on(&s), by_default(ALLOW));
    }

    #[test]
    fn patterns_are_unanchored_as_written() {
        let s = one("patterns: ['^Cgw-[0-9]+$']");
        assert_eq!(req("Cgw-12").on(&s), by_rule(DENY, 0));
        assert_eq!(req("Cgw-12x").on(&s), by_default(ALLOW));
        let s = one("patterns: ['gw']");
        assert_eq!(req("Cgw-12x").on(&s), by_rule(DENY, 0));
        assert_eq!(req("Cae").on(&s), by_default(ALLOW));
    }

    #[test]
    fn roles_any() {
        let s = one("roles: [sysop, operator]");
        assert_eq!(req("a").roles(&["x", "operator"]).on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").roles(&["x"]).on(&s), by_default(ALLOW));
        assert_eq!(req("a").on(&s), by_default(ALLOW));
    }

    #[test]
    fn many_roles() {
        // up to 64 distinct roles are bits of a mask, more are compared by name
        for n in [63, 64, 70] {
            let mut yaml = String::from("rules:\n");
            for i in 0..n {
                yaml += &format!("  - {{name: r{i}, roles: [role{i}], effect: deny}}\n");
            }
            yaml += "  - {name: last, unless_roles: [role3, exempt], effect: deny}\n";
            let s = set(&yaml);
            // n roles and `exempt`
            assert_eq!(s.role_table.is_empty(), n + 1 > 64, "{n}");
            for i in 0..n {
                let d = req("a").roles(&["x", &format!("role{i}")]).on(&s);
                assert_eq!(d, by_rule(DENY, i), "{n} {i}");
            }
            assert_eq!(req("a").roles(&["exempt"]).on(&s), by_default(ALLOW));
            assert_eq!(req("a").roles(&["x"]).on(&s), by_rule(DENY, n));
            assert_eq!(req("a").on(&s), by_rule(DENY, n));
        }
    }

    #[test]
    fn unless_roles_exempts() {
        let s = one("unless_roles: [sysop]");
        assert_eq!(req("a").on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").roles(&["viewer"]).on(&s), by_rule(DENY, 0));
        assert_eq!(
            req("a").roles(&["viewer", "sysop"]).on(&s),
            by_default(ALLOW)
        );
    }

    #[test]
    fn methods() {
        let s = one("methods: [basic, jwt]");
        assert_eq!(req("a").by(Method::Jwt).on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").by(Method::Basic).on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").by(Method::Mtls).on(&s), by_default(ALLOW));
        assert_eq!(req("a").by(Method::Bearer).on(&s), by_default(ALLOW));
    }

    #[test]
    fn originators_and_anonymous() {
        let s = one("originators: ['^CAdmin$']");
        assert_eq!(req("a").origin(Some("CAdmin")).on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").origin(Some("CAdmin2")).on(&s), by_default(ALLOW));
        // anonymous: no originator never matches, not even a match-all regex
        assert_eq!(req("a").origin(None).on(&s), by_default(ALLOW));
        let s = one("originators: ['']");
        assert_eq!(req("a").origin(None).on(&s), by_default(ALLOW));
        assert_eq!(req("a").origin(Some("x")).on(&s), by_rule(DENY, 0));
    }

    #[test]
    fn every_matching_regex_counts_not_only_the_first_match() {
        let s = set(concat!(
            "rules:\n",
            "  - {name: end, originators: ['x$'], effect: deny}\n",
            "  - {name: start, originators: ['^C'], effect: allow}\n",
            "  - {name: middle, originators: ['y'], effect: deny}\n",
        ));
        assert_eq!(req("a").origin(Some("Cx")).on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").origin(Some("Cy")).on(&s), by_rule(ALLOW, 1));
        assert_eq!(req("a").origin(Some("ayb")).on(&s), by_rule(DENY, 2));
        assert_eq!(req("a").origin(Some("ab")).on(&s), by_default(ALLOW));
    }

    #[test]
    fn originators_use_the_bound_originator_not_the_name() {
        let s = one("originators: ['^Cbound$']");
        assert_eq!(req("Cname").origin(Some("Cbound")).on(&s), by_rule(DENY, 0));
        assert_eq!(
            req("Cbound").origin(Some("Cname")).on(&s),
            by_default(ALLOW)
        );
    }

    #[test]
    fn operations() {
        let s = one("operations: [create, delete]");
        let ct = Some("application/json;ty=4");
        assert_eq!(req("a").http("POST", ct).on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").http("DELETE", None).on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").http("POST", None).on(&s), by_default(ALLOW)); // notify
        assert_eq!(req("a").http("GET", None).on(&s), by_default(ALLOW));
        assert_eq!(req("a").http("PUT", None).on(&s), by_default(ALLOW));
        // no operation: an operations condition does not match, even one listing them all
        assert_eq!(req("a").http("PATCH", None).on(&s), by_default(ALLOW));
        let s = one("operations: [create, retrieve, update, delete, notify]");
        for m in ["GET", "HEAD", "PUT", "DELETE", "POST"] {
            assert_eq!(req("a").http(m, None).on(&s), by_rule(DENY, 0), "{m}");
        }
        for m in ["PATCH", "OPTIONS", "get"] {
            assert_eq!(req("a").http(m, None).on(&s), by_default(ALLOW), "{m}");
        }
        // ...while a rule without operations matches them
        let s = one("methods: [mtls]");
        assert_eq!(req("a").http("PATCH", None).on(&s), by_rule(DENY, 0));
    }

    #[test]
    fn resource_types_only_for_creates_with_ty() {
        let s = one("resource_types: [remoteCSE, 2]");
        let post = |ct| req("a").http("POST", ct);
        assert_eq!(
            post(Some("application/json;ty=16")).on(&s),
            by_rule(DENY, 0)
        );
        assert_eq!(post(Some("application/json;ty=2")).on(&s), by_rule(DENY, 0));
        assert_eq!(
            post(Some("application/json;ty=3")).on(&s),
            by_default(ALLOW)
        );
        assert_eq!(post(Some("application/json")).on(&s), by_default(ALLOW));
        assert_eq!(
            post(Some("application/json;ty=abc")).on(&s),
            by_default(ALLOW)
        );
        assert_eq!(post(None).on(&s), by_default(ALLOW));
        assert_eq!(req("a").http("GET", None).on(&s), by_default(ALLOW));
    }

    #[test]
    fn targets_condition() {
        let s = one("targets: [/cse-in/admin/**, /~/id-in/cse-in/admin/**]");
        assert_eq!(req("a").at("/cse-in/admin/x").on(&s), by_rule(DENY, 0));
        assert_eq!(
            req("a").at("/~/id-in/cse-in/admin").on(&s),
            by_rule(DENY, 0)
        );
        assert_eq!(req("a").at("/cse-in/other").on(&s), by_default(ALLOW));
        assert_eq!(
            req("a").at("/_/sp.example.com/id-in/cse-in/admin").on(&s),
            by_default(ALLOW)
        );
    }

    #[test]
    fn rule_without_conditions_matches_everything() {
        let s = set("default: allow\nrules:\n  - {name: all, effect: deny}\n");
        assert_eq!(req("a").origin(None).on(&s), by_rule(DENY, 0));
    }

    // ---------------------------------------------------------- combinations and order

    #[test]
    fn every_condition_must_match() {
        let s = one(
            "roles: [writer]\n    operations: [update]\n    targets: [/cse-in/data/**]\n    methods: [basic]",
        );
        let ok = || {
            req("a")
                .roles(&["writer"])
                .by(Method::Basic)
                .http("PUT", None)
                .at("/cse-in/data/c1")
        };
        assert_eq!(ok().on(&s), by_rule(DENY, 0));
        assert_eq!(ok().roles(&[]).on(&s), by_default(ALLOW));
        assert_eq!(ok().by(Method::Mtls).on(&s), by_default(ALLOW));
        assert_eq!(ok().http("GET", None).on(&s), by_default(ALLOW));
        assert_eq!(ok().at("/cse-in/other").on(&s), by_default(ALLOW));
    }

    #[test]
    fn regexes_and_cheap_conditions_combined() {
        let s = one("patterns: ['^Cgw']\n    originators: ['^Cgw-1$']\n    unless_roles: [sysop]");
        assert_eq!(req("Cgw").origin(Some("Cgw-1")).on(&s), by_rule(DENY, 0));
        assert_eq!(req("Cgw").origin(Some("Cgw-2")).on(&s), by_default(ALLOW));
        assert_eq!(req("Cae").origin(Some("Cgw-1")).on(&s), by_default(ALLOW));
        assert_eq!(
            req("Cgw").origin(Some("Cgw-1")).roles(&["sysop"]).on(&s),
            by_default(ALLOW)
        );
    }

    #[test]
    fn first_matching_rule_decides() {
        let s = set(concat!(
            "default: deny\n",
            "rules:\n",
            "  - {name: admins, roles: [sysop], effect: allow}\n",
            "  - {name: no-delete, operations: [delete], effect: deny}\n",
            "  - {name: gateways, patterns: ['^Cgw'], effect: allow}\n",
        ));
        assert_eq!(
            req("Cgw1").roles(&["sysop"]).http("DELETE", None).on(&s),
            by_rule(ALLOW, 0)
        );
        assert_eq!(req("Cgw1").http("DELETE", None).on(&s), by_rule(DENY, 1));
        assert_eq!(req("Cgw1").on(&s), by_rule(ALLOW, 2));
        assert_eq!(req("Cae1").on(&s), by_default(DENY));
        // the same rules in another order decide otherwise
        let s = set(concat!(
            "default: deny\n",
            "rules:\n",
            "  - {name: gateways, patterns: ['^Cgw'], effect: allow}\n",
            "  - {name: no-delete, operations: [delete], effect: deny}\n",
        ));
        assert_eq!(req("Cgw1").http("DELETE", None).on(&s), by_rule(ALLOW, 0));
    }

    #[test]
    fn defaults() {
        let s = set("default: deny\n");
        assert!(s.is_empty());
        assert_eq!(s.default_effect(), DENY);
        assert_eq!(req("a").on(&s), by_default(DENY));
        let s = set("{}");
        assert_eq!(s.default_effect(), ALLOW);
        assert_eq!(req("a").on(&s), by_default(ALLOW));
        let s = set("default: deny\nrules:\n  - {name: r, identities: [x], effect: allow}\n");
        assert!(!s.is_empty());
        assert_eq!(req("x").on(&s), by_rule(ALLOW, 0));
        assert_eq!(req("y").on(&s), by_default(DENY));
    }

    #[test]
    fn shared_regex_in_several_rules() {
        let s = set(concat!(
            "rules:\n",
            "  - {name: a, originators: ['^Cx', '^Cy'], operations: [delete], effect: deny}\n",
            "  - {name: b, originators: ['^Cy'], effect: deny}\n",
            "  - {name: c, patterns: ['^Cy'], originators: ['^Cz'], effect: deny}\n",
        ));
        assert_eq!(req("a").origin(Some("Cx1")).on(&s), by_default(ALLOW));
        assert_eq!(req("a").origin(Some("Cy1")).on(&s), by_rule(DENY, 1));
        assert_eq!(req("Cy").origin(Some("Cz")).on(&s), by_rule(DENY, 2));
        assert_eq!(s.rule_names().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(s.rule_name(2), "c");
        assert_eq!(s.rule_name(3), "");
    }

    #[test]
    fn rule_sets_of_different_sizes_on_one_thread() {
        // the per-thread buffers must grow for the larger set and stay right for the smaller
        let small = one("originators: ['^C1$']");
        let big = set(&format!(
            "rules:\n{}",
            (0..40)
                .map(|i| format!("  - {{name: r{i}, originators: ['^C{i}$'], effect: deny}}\n"))
                .collect::<String>()
        ));
        for _ in 0..2 {
            assert_eq!(req("a").origin(Some("C1")).on(&small), by_rule(DENY, 0));
            assert_eq!(req("a").origin(Some("C39")).on(&big), by_rule(DENY, 39));
            assert_eq!(req("a").origin(Some("C39")).on(&small), by_default(ALLOW));
            assert_eq!(req("a").origin(Some("C40")).on(&big), by_default(ALLOW));
        }
    }

    // ---------------------------------------------------------- HTTP operations

    #[test]
    fn http_operation_mapping() {
        use Operation::*;
        let ty = |n| Some(ResourceType(n));
        assert_eq!(http_operation("GET", None), (Some(Retrieve), None));
        assert_eq!(http_operation("HEAD", None), (Some(Retrieve), None));
        assert_eq!(
            http_operation("PUT", Some("application/json")),
            (Some(Update), None)
        );
        assert_eq!(http_operation("DELETE", None), (Some(Delete), None));
        assert_eq!(http_operation("POST", None), (Some(Notify), None));
        assert_eq!(
            http_operation("POST", Some("application/json")),
            (Some(Notify), None)
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=16")),
            (Some(Create), ty(16))
        );
        assert_eq!(
            http_operation("POST", Some("application/vnd.onem2m-res+json; ty=16")),
            (Some(Create), ty(16))
        );
        assert_eq!(
            http_operation("POST", Some("application/json;TY=16")),
            (Some(Create), ty(16))
        );
        assert_eq!(
            http_operation("POST", Some("application/json ; charset=utf-8 ;  Ty = 4 ")),
            (Some(Create), ty(4))
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=\"3\"")),
            (Some(Create), ty(3))
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=abc")),
            (Some(Create), None)
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=")),
            (Some(Create), None)
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=+16")),
            (Some(Create), None)
        );
        assert_eq!(
            http_operation("POST", Some("application/json;ty=2;ty=16")),
            (Some(Create), None)
        );
        // `ty` only as a parameter, not inside another one's name
        assert_eq!(
            http_operation("POST", Some("application/json;xty=16")),
            (Some(Notify), None)
        );
        for m in ["PATCH", "OPTIONS", "TRACE", "CONNECT", "get", "post", ""] {
            assert_eq!(
                http_operation(m, Some("application/json;ty=2")),
                (None, None),
                "{m}"
            );
        }
    }

    #[test]
    fn content_type_ty_reports_why() {
        assert_eq!(content_type_ty("application/json"), Ok(None));
        assert_eq!(
            content_type_ty("application/json;ty=2;ty=02"),
            Ok(Some(ResourceType(2)))
        );
        assert_eq!(
            content_type_ty("application/json;ty=2;ty=3"),
            Err(TargetError("ambiguous ty"))
        );
        assert_eq!(
            content_type_ty("application/json;ty=x"),
            Err(TargetError("invalid ty"))
        );
        assert_eq!(
            content_type_ty("application/json;ty=99999999999"),
            Err(TargetError("invalid ty"))
        );
    }

    // ---------------------------------------------------------- targets

    fn segs(t: &Target) -> Vec<&str> {
        t.segments().collect()
    }

    #[test]
    fn three_forms() {
        let t = parse_target("/cse-in/Cae1/cnt?rcn=4").unwrap();
        assert_eq!(t.form(), TargetForm::CseRelative);
        assert_eq!(segs(&t), ["cse-in", "Cae1", "cnt"]);
        assert_eq!(t.display(), "/cse-in/Cae1/cnt");
        let t = parse_target("/~/id-in/cse-in/Cae1").unwrap();
        assert_eq!(t.form(), TargetForm::SpRelative);
        assert_eq!(segs(&t), ["id-in", "cse-in", "Cae1"]);
        assert_eq!(t.display(), "/~/id-in/cse-in/Cae1");
        let t = parse_target("/_/sp.example.com/id-in/cse-in").unwrap();
        assert_eq!(t.form(), TargetForm::Absolute);
        assert_eq!(segs(&t), ["sp.example.com", "id-in", "cse-in"]);
        assert_eq!(t.display(), "/_/sp.example.com/id-in/cse-in");
        let t = parse_target("/").unwrap();
        assert_eq!(t.form(), TargetForm::CseRelative);
        assert!(segs(&t).is_empty());
        assert_eq!(t.display(), "/");
    }

    #[test]
    fn trailing_slash_is_the_same_target() {
        assert_eq!(
            parse_target("/cse-in/").unwrap(),
            parse_target("/cse-in").unwrap()
        );
        assert_eq!(
            parse_target("/~/id-in/").unwrap(),
            parse_target("/~/id-in").unwrap()
        );
        assert_eq!(parse_target("/cse-in/?x=1").unwrap().display(), "/cse-in");
        // only one
        assert_eq!(parse_target("/cse-in//"), Err(EMPTY_SEGMENT));
        assert_eq!(parse_target("//"), Err(EMPTY_SEGMENT));
        let s = one("targets: [/cse-in]");
        assert_eq!(req("a").at("/cse-in/").on(&s), by_rule(DENY, 0));
    }

    #[test]
    fn percent_decoded_before_matching() {
        let t = parse_target("/cse-%69n/a%20b/%C3%A9").unwrap();
        assert_eq!(segs(&t), ["cse-in", "a b", "é"]);
        let s = one("targets: [/cse-in]");
        assert_eq!(req("a").at("/cse-%69n").on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").at("/cse-%69n/x").on(&s), by_default(ALLOW));
        let s = one("targets: ['/cse-in/a b']");
        assert_eq!(req("a").at("/cse-in/a%20b").on(&s), by_rule(DENY, 0));
    }

    #[test]
    fn evasions_refused() {
        let cases: &[(&str, TargetError)] = &[
            ("/cse-in/%2e%2e/x", DOT_SEGMENT),
            ("/cse-in/..", DOT_SEGMENT),
            ("/cse-in/./x", DOT_SEGMENT),
            ("/cse-in/%2E/x", DOT_SEGMENT),
            ("/cse-in/.%2e/x", DOT_SEGMENT),
            ("/cse-in/%2e./x", DOT_SEGMENT),
            ("/../cse-in", DOT_SEGMENT),
            ("/~/id-in/../x", DOT_SEGMENT),
            ("/cse-in//x", EMPTY_SEGMENT),
            ("//cse-in", EMPTY_SEGMENT),
            ("/cse-in/%2fx", ENCODED_SLASH),
            ("/cse-in/%2Fx", ENCODED_SLASH),
            ("/cse-in\\x", BACKSLASH),
            ("/cse-in/%5cx", ENCODED_BACKSLASH),
            ("/cse-in/%5Cx", ENCODED_BACKSLASH),
            ("/cse-in/%00", CONTROL),
            ("/cse-in/%0a", CONTROL),
            ("/cse-in/%7f", CONTROL),
            ("/cse-in/%C2%85", CONTROL),
            ("/cse-in/x\u{1}", CONTROL),
            ("/cse-in/%zz", BAD_ESCAPE),
            ("/cse-in/%2", BAD_ESCAPE),
            ("/cse-in/%", BAD_ESCAPE),
            ("/cse-in/%ff", NOT_UTF8),
            ("/cse-in/%252e%252e", ENCODED_PERCENT),
            ("/cse-in/..;/x", PATH_PARAMETER),
            ("/cse-in/x;a=b", PATH_PARAMETER),
            ("/cse-in/x#y", FRAGMENT),
            ("/~//cse-in", EMPTY_SEGMENT),
            ("/_//x", EMPTY_SEGMENT),
            ("/~", INCOMPLETE),
            ("/~/", INCOMPLETE),
            ("/_", INCOMPLETE),
            ("/%7e/id-in/cse-in", ENCODED_MARKER),
            ("/%5F/sp/id-in", ENCODED_MARKER),
            ("cse-in", NOT_ABSOLUTE),
            ("", EMPTY),
            ("?x", EMPTY),
        ];
        for (path, err) in cases {
            assert_eq!(parse_target(path).as_ref().err(), Some(err), "{path:?}");
        }
        // a query may hold anything
        assert!(parse_target("/cse-in/x?a=../%2f%zz").is_ok());
        // encodings of harmless characters, `~` and `_` further in, dots inside a name
        assert!(parse_target("/cse-in/%7e/_/a.b/..c/%41").is_ok());
    }

    #[test]
    fn pattern_form_isolation() {
        let s = one("targets: [/cse-in/**]");
        assert_eq!(req("a").at("/cse-in").on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").at("/~/id-in/cse-in").on(&s), by_default(ALLOW));
        assert_eq!(req("a").at("/_/sp/id-in/cse-in").on(&s), by_default(ALLOW));
        let s = one("targets: [/~/id-in/**]");
        assert_eq!(req("a").at("/~/id-in/cse-in").on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").at("/id-in/cse-in").on(&s), by_default(ALLOW));
        let s = one("targets: [/_/*/id-in/**]");
        assert_eq!(
            req("a").at("/_/sp.example.com/id-in/cse-in").on(&s),
            by_rule(DENY, 0)
        );
        assert_eq!(req("a").at("/~/id-in/cse-in").on(&s), by_default(ALLOW));
        let s = one("targets: ['/**']");
        assert_eq!(req("a").at("/").on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").at("/x/y").on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").at("/~/id-in").on(&s), by_default(ALLOW));
    }

    #[test]
    fn glob_semantics() {
        let m = |pattern: &str, path: &str| {
            TargetPattern::parse(pattern)
                .unwrap()
                .matches(&parse_target(path).unwrap())
        };
        assert!(m("/cse-in", "/cse-in"));
        assert!(m("/cse-in", "/cse-in/"));
        assert!(!m("/cse-in", "/cse-in/x"));
        assert!(!m("/cse-in", "/CSE-IN"));
        assert!(!m("/cse-in", "/cse-i"));
        assert!(m("/cse-in/*", "/cse-in/x"));
        assert!(!m("/cse-in/*", "/cse-in"));
        assert!(!m("/cse-in/*", "/cse-in/x/y"));
        assert!(m("/cse-in/**", "/cse-in"));
        assert!(m("/cse-in/**", "/cse-in/x"));
        assert!(m("/cse-in/**", "/cse-in/x/y"));
        assert!(!m("/cse-in/**", "/cse-inx"));
        assert!(!m("/cse-in/**", "/"));
        assert!(m("/cse-in/*/la", "/cse-in/cnt/la"));
        assert!(!m("/cse-in/*/la", "/cse-in/cnt/ol"));
        assert!(m("/cse-in/*/**", "/cse-in/a"));
        assert!(!m("/cse-in/*/**", "/cse-in"));
        assert!(m("/", "/"));
        assert!(!m("/", "/cse-in"));
        // literals longer than the 8-byte head, or sharing it
        assert!(m("/cse-in/temperature-a", "/cse-in/temperature-a"));
        assert!(!m("/cse-in/temperature-a", "/cse-in/temperature-b"));
        assert!(!m("/cse-in/abcdefgh", "/cse-in/abcdefghi"));
        assert!(!m("/cse-in/abcdefghi", "/cse-in/abcdefgh"));
        assert!(m("/cse-in/abcdefgh", "/cse-in/abcdefgh"));
        assert!(!m("/cse-in/abcdefgh", "/cse-in/abcdefgX"));
        assert!(!m("/cse-in/ab", "/cse-in/abc"));
        assert!(m("/cse-in/é-ü", "/cse-in/%C3%A9-%C3%BC"));
    }

    #[test]
    fn primitive_targets() {
        let same = |to: &str, path: &str| {
            assert_eq!(
                primitive_target(to).unwrap(),
                parse_target(path).unwrap(),
                "{to}"
            );
        };
        same("cse-in/x", "/cse-in/x");
        same("cse-in", "/cse-in");
        same("cse-in/x/", "/cse-in/x");
        same("/id-in/cse-in/x", "/~/id-in/cse-in/x");
        same("/id-in", "/~/id-in");
        same(
            "//sp.example.com/id-in/cse-in/x",
            "/_/sp.example.com/id-in/cse-in/x",
        );
        assert_eq!(
            primitive_target("/id-in/cse-in").unwrap().form(),
            TargetForm::SpRelative
        );
        assert_eq!(
            primitive_target("//sp/id-in").unwrap().form(),
            TargetForm::Absolute
        );
        // no decoding: `%` stays
        assert_eq!(
            segs(&primitive_target("cse-in/a%2fb").unwrap()),
            ["cse-in", "a%2fb"]
        );
        let cases: &[(&str, TargetError)] = &[
            ("", EMPTY),
            ("/", INCOMPLETE),
            ("//", INCOMPLETE),
            ("///x", EMPTY_SEGMENT),
            ("cse-in//x", EMPTY_SEGMENT),
            ("/id-in//x", EMPTY_SEGMENT),
            ("cse-in/../x", DOT_SEGMENT),
            ("./cse-in", DOT_SEGMENT),
            ("//sp/id-in/./x", DOT_SEGMENT),
            ("cse-in\\x", BACKSLASH),
            ("cse-in/x\u{0}", CONTROL),
            ("cse-in/x\u{85}", CONTROL),
            ("~/id-in/cse-in", MARKER),
            ("_/sp/id-in", MARKER),
        ];
        for (to, err) in cases {
            assert_eq!(primitive_target(to).as_ref().err(), Some(err), "{to:?}");
        }
    }

    // ---------------------------------------------------------- compile errors

    #[test]
    fn compile_errors_name_the_key() {
        let rules = "rules:\n  - {name: ok, identities: [x], effect: allow}\n  - name: bad\n    effect: deny\n    ";
        let e = compile_err(&format!("{rules}patterns: ['^ok$', '(unclosed']"));
        assert_eq!(e.key, "authorization.rules[1].patterns");
        assert!(e.message.contains("(unclosed"), "{}", e.message);
        let e = compile_err(&format!("{rules}originators: ['[z-a]']"));
        assert_eq!(e.key, "authorization.rules[1].originators");
        for bad in [
            "cse-in/x",
            "/cse-in/**/x",
            "/**/**",
            "/cse-in//x",
            "/cse-in/../x",
            "/cse-in/./x",
            "/cse-in/",
            "/cse-in/Cae-*",
            "/cse-in/%2e",
            "/cse-in?x",
            "/cse-in/x;y",
            "/cse-in/a%2fb",
            "/cse-in\\\\x",
            "/~",
            "/_/",
        ] {
            let e = compile_err(&format!("{rules}targets: [/cse-in/**, '{bad}']"));
            assert_eq!(e.key, "authorization.rules[1].targets", "{bad}");
        }
        let e = compile_err(&format!("{rules}targets: ['/cse-in/**/x']"));
        assert!(e.message.contains("last"), "{}", e.message);
        // the section's own checks run too
        let e = compile_err(&format!("{rules}roles: []"));
        assert_eq!(e.key, "authorization.rules[1].roles");
        let e = compile_err("rules:\n  - {name: a, effect: deny}\n  - {name: a, effect: deny}\n");
        assert_eq!(e.key, "authorization.rules[1].name");
    }

    // ---------------------------------------------------------- explain and table

    const EXPLAINED: &str = concat!(
        "default: allow\n",
        "rules:\n",
        "  - {name: operators-only-admin, originators: ['^CAdmin$'], unless_roles: [sysop], effect: deny}\n",
        "  - {name: no-remote-cse, operations: [create], resource_types: [remoteCSE, 2], effect: deny}\n",
        "  - {name: catch-all, effect: allow}\n",
    );

    #[test]
    fn explain_denied() {
        let s = set(EXPLAINED);
        let r = req("Cx").origin(Some("CAdmin"));
        let e = r.with(|q| s.explain(q));
        assert_eq!(e.decision, by_rule(DENY, 0));
        assert_eq!(e.decision, r.on(&s));
        assert_eq!(
            e.rules[0].conditions,
            [("originators", true), ("unless_roles", true)]
        );
        assert!(e.rules[0].matched);
        assert_eq!(
            e.rules[1].conditions,
            [("operations", false), ("resource_types", false)]
        );
        assert!(!e.rules[1].matched);
        assert!(e.rules[2].matched && e.rules[2].conditions.is_empty());
        let text = e.render(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "1. operators-only-admin: originators ^CAdmin$ (matched), unless_roles sysop (matched) -> matches -> deny (decides)"
        );
        assert!(
            lines[1].starts_with("2. no-remote-cse: operations create (failed)"),
            "{text}"
        );
        assert!(
            lines[1].contains("resource_types remoteCSE or AE (failed)"),
            "{text}"
        );
        assert!(lines[1].ends_with("-> no match"), "{text}");
        assert_eq!(lines[2], "3. catch-all: (always) -> matches (not reached)");
        assert_eq!(lines[3], "decision: deny by rule 1 (operators-only-admin)");
    }

    #[test]
    fn explain_allowed() {
        let s = set(EXPLAINED);
        let r = req("Cx").origin(Some("CAdmin")).roles(&["sysop"]);
        let e = r.with(|q| s.explain(q));
        assert_eq!(e.decision, by_rule(ALLOW, 2));
        assert_eq!(e.decision, r.on(&s));
        assert_eq!(
            e.rules[0].conditions,
            [("originators", true), ("unless_roles", false)]
        );
        let text = e.render(&s);
        assert!(
            text.contains("unless_roles sysop (failed) -> no match"),
            "{text}"
        );
        assert!(
            text.contains("3. catch-all: (always) -> matches -> allow (decides)"),
            "{text}"
        );
        assert!(
            text.ends_with("decision: allow by rule 3 (catch-all)\n"),
            "{text}"
        );
        // no rule matches: the default decides
        let s = one("identities: [nobody]");
        let e = req("a").with(|q| s.explain(q));
        assert_eq!(e.decision, by_default(ALLOW));
        assert!(e
            .render(&s)
            .contains("decision: allow (default, no rule matched)"));
    }

    #[test]
    fn explain_agrees_with_decide() {
        let s = set(EXPLAINED);
        for r in [
            req("a"),
            req("a").origin(None),
            req("a").origin(Some("CAdmin")),
            req("a").http("POST", Some("application/json;ty=16")),
            req("a").http("POST", Some("application/json;ty=3")),
        ] {
            assert_eq!(r.with(|q| s.explain(q)).decision, r.on(&s));
        }
    }

    #[test]
    fn table_lines() {
        let s = set(&EXPLAINED.replace("default: allow", "default: deny"));
        assert_eq!(
            s.table(),
            [
                "1. operators-only-admin: originators ^CAdmin$, unless_roles sysop -> deny",
                "2. no-remote-cse: operations create, resource_types remoteCSE or AE -> deny",
                "3. catch-all: (always) -> allow",
                "default: deny",
            ]
        );
        let s = set(concat!(
            "rules:\n",
            "  - name: all-keys\n",
            "    identities: [a, b]\n",
            "    patterns: ['^C']\n",
            "    roles: [r]\n",
            "    unless_roles: [u]\n",
            "    methods: [mtls, jwt]\n",
            "    originators: ['^O']\n",
            "    operations: [retrieve]\n",
            "    resource_types: [999]\n",
            "    targets: [/cse-in/**]\n",
            "    effect: deny\n",
        ));
        assert_eq!(
            s.table()[0],
            "1. all-keys: identities a or b, patterns ^C, roles r, methods mtls or jwt, originators ^O, operations retrieve, resource_types 999, targets /cse-in/**, unless_roles u -> deny"
        );
    }
}
