//! Request targets as the rules read them: an HTTP path or a WebSocket primitive's `to`,
//! parsed with every refusal that keeps the proxy and the CSE from reading one target two ways,
//! then made canonical with the local CSE's identity ([`canonical`]): every form of a target of
//! the local CSE (CSE-relative `/cse-in/x`, SP-relative `/~/id-in/cse-in/x`, absolute
//! `/_/sp/id-in/cse-in/x`, `-` for the CSEBase name) is the one CSE-relative structured path
//! `/cse-in/x`. What the proxy cannot place in the CSE's tree gets a [`Scope`] that the rules
//! read fail-closed: unstructured resource IDs and fan-out points (`Unplaced`); and what a
//! request's parameters make it reach beyond its target is its [`Reach`] (`rcn`, `fu`, a
//! semantic query, `arp`).
//!
//! The rules' module documentation (`crate::rules`) states the refusals and the forms.

use crate::cse::LocalCse;

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
    pub(crate) fn prefix(self) -> &'static str {
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
    pub(crate) form: TargetForm,
    /// The normalised HTTP form: prefix, then the decoded segments joined by `/`.
    pub(crate) text: String,
    /// Where each segment is in `text`, so that rules compare without splitting again.
    pub(crate) spans: Vec<Span>,
    /// Where the target lies in the CSE's tree, as far as the proxy can tell (`Exact` or
    /// `Unplaced`).
    pub(crate) scope: Scope,
    /// What the request's parameters make it reach beyond the target.
    pub(crate) reach: Reach,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
    /// The first 8 bytes, zero-padded: most literals are decided by comparing this.
    pub(crate) head: u64,
}

pub(crate) fn head(bytes: &[u8]) -> u64 {
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

pub(crate) const EMPTY: TargetError = TargetError("empty target");
pub(crate) const NOT_ABSOLUTE: TargetError = TargetError("target path must start with /");
pub(crate) const INCOMPLETE: TargetError =
    TargetError("incomplete target (/~ or /_ without an id)");
pub(crate) const EMPTY_SEGMENT: TargetError = TargetError("empty path segment");
pub(crate) const DOT_SEGMENT: TargetError = TargetError("dot segment in target");
pub(crate) const BACKSLASH: TargetError = TargetError("backslash in target");
pub(crate) const ENCODED_SLASH: TargetError = TargetError("encoded / in target");
pub(crate) const ENCODED_BACKSLASH: TargetError = TargetError("encoded \\ in target");
pub(crate) const ENCODED_PERCENT: TargetError = TargetError("encoded % in target");
pub(crate) const BAD_ESCAPE: TargetError = TargetError("invalid percent-escape in target");
pub(crate) const CONTROL: TargetError = TargetError("control character in target");
pub(crate) const NOT_UTF8: TargetError = TargetError("target is not UTF-8 after decoding");
pub(crate) const PATH_PARAMETER: TargetError = TargetError("path parameter (;) in target");
pub(crate) const FRAGMENT: TargetError = TargetError("fragment (#) in target");
pub(crate) const QUERY: TargetError = TargetError("query (?) in target");
pub(crate) const ENCODED_MARKER: TargetError = TargetError("encoded ~ or _ as first segment");
pub(crate) const MARKER: TargetError = TargetError("~ or _ as first segment of a primitive target");
pub(crate) const GLUED_MARKER: TargetError =
    TargetError("~ or _ at the start of a CSE, SP or resource ID in target");

/// How many leading segments of a target of `form` are IDs (resource ID or CSEBase name;
/// CSE-ID; SP-ID and CSE-ID): none of them may start with `~` or `_`, which some CSEs read as
/// form markers glued to the ID (`/~cse-in/…`, `/_id-in/…`).
fn id_positions(form: TargetForm) -> usize {
    match form {
        TargetForm::CseRelative | TargetForm::SpRelative => 1,
        TargetForm::Absolute => 2,
    }
}

fn marker_glued(segment: &[u8]) -> bool {
    matches!(segment.first(), Some(b'~') | Some(b'_'))
}

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
    let ids = spans.iter().take(id_positions(form));
    if ids
        .into_iter()
        .any(|s| marker_glued(out.get(s.start as usize..).unwrap_or_default()))
    {
        return Err(GLUED_MARKER);
    }
    if spans.is_empty() && form != TargetForm::CseRelative {
        return Err(INCOMPLETE);
    }
    let text = String::from_utf8(out).map_err(|_| NOT_UTF8)?;
    // C1 controls are only visible after UTF-8 decoding (ASCII ones were refused already).
    if !text.is_ascii() && text.chars().any(char::is_control) {
        return Err(CONTROL);
    }
    Ok(Target {
        form,
        text,
        spans,
        scope: Scope::Exact,
        reach: Reach::default(),
    })
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

/// The value of one hexadecimal digit (a percent-escape's).
pub(crate) fn hex(b: u8) -> Option<u8> {
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
                    // decoded, these end the target for a CSE: ACME cuts `to` at `#` (a partial
                    // retrieve of what precedes it) and, forwarding to another CSE, sends `?`
                    // and `;` as a query and path parameters the rules never saw
                    b'#' => return Err(FRAGMENT),
                    b'?' => return Err(QUERY),
                    b';' => return Err(PATH_PARAMETER),
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
pub(crate) fn check_plain(seg: &str) -> Result<(), TargetError> {
    if seg.is_empty() {
        return Err(EMPTY_SEGMENT);
    }
    if seg == "." || seg == ".." {
        return Err(DOT_SEGMENT);
    }
    if seg.contains('\\') {
        return Err(BACKSLASH);
    }
    // as for a decoded HTTP path: a CSE reads these as the end of the target
    for (c, err) in [('#', FRAGMENT), ('?', QUERY), (';', PATH_PARAMETER)] {
        if seg.contains(c) {
            return Err(err);
        }
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
        // `cse-in/…` has no form marker; `~/…` would read as one to an HTTP-minded CSE, and
        // `~cse-in/…` as a marker glued to the ID
        if spans.len() < id_positions(form) && marker_glued(seg.as_bytes()) {
            return Err(if seg.len() == 1 { MARKER } else { GLUED_MARKER });
        }
        if !spans.is_empty() {
            text.push('/');
        }
        let start = text.len();
        text.push_str(seg);
        push_span(&mut spans, text.as_bytes(), start)?;
    }
    Ok(Target {
        form,
        text,
        spans,
        scope: Scope::Exact,
        reach: Reach::default(),
    })
}

// ------------------------------------------------------------------ scope and canonical form

/// Where a target, or what a request reaches through it, lies in the CSE's resource tree, as
/// far as the proxy can tell from the request alone. The rules read anything but `Exact`
/// fail-closed (`crate::rules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The target is the resource at its path, and so is the result.
    #[default]
    Exact,
    /// The target and its direct children (why: a `<subscription>` notifies about both).
    Children(&'static str),
    /// The target's parent and the parent's direct children (why: an updated `<subscription>`
    /// notifies about its parent).
    Siblings(&'static str),
    /// The target and its descendants (why: `rcn=4`, discovery…).
    Subtree(&'static str),
    /// The proxy cannot place it in the tree (why: an unstructured resource ID, a group's
    /// fan-out point, the resource an announced one links to).
    Unplaced(&'static str),
}

impl Scope {
    /// For `explain` and logs: what the scope means for the rules.
    pub fn describe(self) -> Option<String> {
        match self {
            Scope::Exact => None,
            Scope::Children(why) => Some(format!(
                "{why}: the target and its children, so deny rules whose targets match it or a child match, allow rules with targets only when they cover its whole subtree"
            )),
            Scope::Siblings(why) => Some(format!(
                "{why}: the target's parent and the parent's children, so deny rules whose targets match the parent or one of its children match, allow rules with targets only when they cover the parent's whole subtree"
            )),
            Scope::Subtree(why) => Some(format!(
                "{why}: the result includes descendants, so deny rules whose targets lie at or below it match, allow rules with targets only when they cover the whole subtree"
            )),
            Scope::Unplaced(why) => Some(format!(
                "{why}: not placed in the resource tree, so deny rules with targets match and allow rules with targets do not"
            )),
        }
    }

    /// How much of the tree the scope may include: the wider of two scopes wins.
    fn width(self) -> u8 {
        match self {
            Scope::Exact => 0,
            Scope::Children(_) => 1,
            Scope::Siblings(_) => 2,
            Scope::Subtree(_) => 3,
            Scope::Unplaced(_) => 4,
        }
    }

    /// The wider of `self` and `other` (the first of two equally wide).
    pub fn widest(self, other: Scope) -> Scope {
        if other.width() > self.width() {
            other
        } else {
            self
        }
    }
}

/// What a request reaches beyond its target through its parameters (TS-0004 result content,
/// filter usage, semantic query, apply-relative-path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reach {
    /// What the result includes besides the target: `Exact` for nothing more.
    pub result: Scope,
    /// The operation itself applies to what the result includes (a filter usage other than
    /// conditional retrieval: discovery-based operations act on every resource found).
    pub operation: bool,
}

impl Reach {
    fn with(self, other: Reach) -> Reach {
        Reach {
            result: self.result.widest(other.result),
            operation: self.operation || other.operation,
        }
    }
}

pub(crate) const UNSTRUCTURED: &str = "unstructured resource ID";
pub(crate) const FAN_OUT: &str = "through a group's fan-out point (fopt)";

impl Target {
    /// Where the target and what a retrieve of it returns lie: the wider of its placement and
    /// its result's reach.
    pub fn scope(&self) -> Scope {
        self.scope.widest(self.reach.result)
    }

    /// Where the target itself lies: `Exact`, or `Unplaced` when the proxy cannot place it.
    pub fn placement(&self) -> Scope {
        self.scope
    }

    /// What the request's parameters make it reach beyond the target.
    pub fn reach(&self) -> Reach {
        self.reach
    }

    /// A target of `form` made of `segments` (already checked).
    fn build(form: TargetForm, segments: &[&str], scope: Scope) -> Result<Target, TargetError> {
        let mut text =
            String::with_capacity(segments.iter().map(|s| s.len() + 1).sum::<usize>() + 3);
        text.push_str(form.prefix());
        let mut spans = Vec::with_capacity(segments.len());
        for seg in segments {
            if !spans.is_empty() {
                text.push('/');
            }
            let start = text.len();
            text.push_str(seg);
            push_span(&mut spans, text.as_bytes(), start)?;
        }
        Ok(Target {
            form,
            text,
            spans,
            scope,
            reach: Reach::default(),
        })
    }

    /// The same target, with what its request's parameters reach beyond it.
    pub fn with_reach(mut self, reach: Reach) -> Target {
        self.reach = self.reach.with(reach);
        self
    }
}

/// The canonical form of `t` for the local CSE `cse`:
/// - addressed to the local CSE (CSE-relative; SP-relative with the local CSE-ID; absolute with
///   the local SP-ID, or any SP-ID when none is configured, and the local CSE-ID): the
///   CSE-relative structured path `/cse-in/…`; the CSE-ID alone is the CSEBase `/cse-in`; `-`
///   in the CSEBase-name position is the CSEBase name. A first segment that is not the CSEBase
///   name is an unstructured resource ID: the target stays CSE-relative, [`Scope::Unplaced`].
/// - addressed to another CSE of the local SP (absolute with the configured SP-ID): its
///   SP-relative form `/~/id-mn/…`; of another SP: as written.
/// - a `fopt` segment past the IDs (a group's fan-out point): [`Scope::Unplaced`].
pub fn canonical(t: &Target, cse: &LocalCse) -> Result<Target, TargetError> {
    let segs: Vec<&str> = t.segments().collect();
    let id = cse.id_segment();
    let (form, out): (TargetForm, Vec<&str>) = match (t.form, segs.as_slice()) {
        (TargetForm::CseRelative, rest) => (TargetForm::CseRelative, local(rest, false, cse)),
        (TargetForm::SpRelative, [c, rest @ ..]) if *c == id => {
            (TargetForm::CseRelative, local(rest, true, cse))
        }
        (TargetForm::Absolute, [sp, c, rest @ ..]) if *c == id && cse.is_local_sp(sp) => {
            (TargetForm::CseRelative, local(rest, true, cse))
        }
        (TargetForm::Absolute, [sp, rest @ ..]) if !rest.is_empty() && cse.is_known_sp(sp) => {
            (TargetForm::SpRelative, rest.to_vec())
        }
        (form, all) => (form, all.to_vec()),
    };
    let unstructured =
        form == TargetForm::CseRelative && out.first().is_some_and(|first| *first != cse.name());
    let fan_out = out.iter().skip(id_positions(form)).any(|s| *s == "fopt");
    let scope = match t.scope {
        _ if unstructured => Scope::Unplaced(UNSTRUCTURED),
        _ if fan_out => Scope::Unplaced(FAN_OUT),
        other => other,
    };
    Ok(Target::build(form, &out, scope)?.with_reach(t.reach))
}

/// The segments of a CSE-relative target of the local CSE from `rest` (what follows the
/// CSE-ID, or the whole CSE-relative path): the CSEBase for the CSE-ID alone, `-` as the name.
fn local<'a>(rest: &[&'a str], by_id: bool, cse: &'a LocalCse) -> Vec<&'a str> {
    match rest {
        [] if by_id => vec![cse.name()],
        ["-", tail @ ..] => std::iter::once(cse.name())
            .chain(tail.iter().copied())
            .collect(),
        all => all.to_vec(),
    }
}

const BY_RCN: &str = "result content (rcn) with other resources than the target";
const BY_ORIGINAL: &str = "original resource (rcn=7): what an announced resource links to";
const BY_DISCOVERY: &str = "discovery (fu=1)";
const BY_FILTER_USAGE: &str = "filter usage (fu) other than conditional retrieval";
const BY_SEMANTICS: &str = "semantic query (smf, sqi) over the descriptors below the target";
const BY_RELATIVE_PATH: &str = "apply relative path (arp) from each resource found";
const UNREADABLE: &str = "unreadable rcn or fu";

/// TS-0004 result content values whose result is exactly the target (or less): nothing (0),
/// attributes (1), hierarchical address (2), both (3), modified attributes (9). Every other
/// value includes other resources: descendants (4, 5, 6, 8; semantic content 10, discovery
/// result references 11, permissions 12, which ACME answers with the child tree) or, for the
/// original resource (7), the resource an announced one links to, wherever it is; values
/// unknown today are read as descendants.
pub fn rcn_reach(rcn: u64) -> Scope {
    match rcn {
        0 | 1 | 2 | 3 | 9 => Scope::Exact,
        7 => Scope::Unplaced(BY_ORIGINAL),
        _ => Scope::Subtree(BY_RCN),
    }
}

/// Filter usage (`fu`): conditional retrieval (2, the default) judges the target alone; any
/// other value finds resources below it and returns them (discovery 1, IPE on-demand discovery
/// 3) or applies the operation to them (discovery-based operation 4).
fn fu_reach(fu: u64) -> Reach {
    match fu {
        2 => Reach::default(),
        1 => Reach {
            result: Scope::Subtree(BY_DISCOVERY),
            operation: true,
        },
        _ => Reach {
            result: Scope::Subtree(BY_FILTER_USAGE),
            operation: true,
        },
    }
}

/// The parameters of a request primitive that decide its [`Reach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params {
    /// Result content.
    pub rcn: Option<u64>,
    /// Filter usage (`fc.fu`); pass `Some(1)` for `op` 6, discovery.
    pub fu: Option<u64>,
    /// A semantic query: `sqi` or `fc.smf` present.
    pub semantic: bool,
    /// Apply relative path: `fc.arp` present.
    pub relative_path: bool,
}

/// What a request with these parameters reaches beyond its target.
pub fn primitive_reach(p: &Params) -> Reach {
    let mut reach = Reach::default();
    if let Some(rcn) = p.rcn {
        reach.result = rcn_reach(rcn);
    }
    if let Some(fu) = p.fu {
        reach = reach.with(fu_reach(fu));
    }
    if p.semantic {
        reach.result = reach.result.widest(Scope::Subtree(BY_SEMANTICS));
    }
    if p.relative_path {
        reach.result = reach.result.widest(Scope::Unplaced(BY_RELATIVE_PATH));
    }
    reach
}

/// The same from an HTTP query: every `rcn`, `fu`, `smf`, `sqi` and `arp` parameter counts
/// (names compared percent-decoded and in any letter case); an `rcn` or `fu` that is not a
/// plain number is read as the widest reach (a CSE could read it as `rcn=7`), `smf`, `sqi`
/// and `arp` count whatever their value.
pub fn query_reach(query: &str) -> Reach {
    let mut reach = Reach::default();
    for param in query.split(['&', ';']) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let name = decode_lossy(name);
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        let this = if is("rcn") || is("fu") {
            let value = decode_lossy(value);
            let number = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten();
            match number {
                None => Reach {
                    result: Scope::Unplaced(UNREADABLE),
                    operation: is("fu"),
                },
                Some(n) if is("rcn") => Reach {
                    result: rcn_reach(n),
                    operation: false,
                },
                Some(n) => fu_reach(n),
            }
        } else if is("smf") || is("sqi") {
            Reach {
                result: Scope::Subtree(BY_SEMANTICS),
                operation: false,
            }
        } else if is("arp") {
            Reach {
                result: Scope::Unplaced(BY_RELATIVE_PATH),
                operation: false,
            }
        } else {
            continue;
        };
        reach = reach.with(this);
    }
    reach
}

/// Percent-decoding as a lenient query parser does it (`+` is a space, bad escapes kept).
fn decode_lossy(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?))
            .flatten();
        match (b, escaped) {
            (_, Some(d)) => {
                out.push(d);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The target the rules judge for an HTTP request target (path and query): parsed with every
/// refusal, made canonical for `cse`, with what the query reaches beyond it.
pub fn http_request_target(
    path_and_query: &str,
    cse: Option<&LocalCse>,
) -> Result<Target, TargetError> {
    let raw = parse_target(path_and_query)?;
    let reach = path_and_query
        .split_once('?')
        .map_or_else(Reach::default, |(_, query)| query_reach(query));
    canonical_with(raw, cse, reach)
}

/// The same for a WebSocket request primitive's `to`, with its parameters.
pub fn primitive_request_target(
    to: &str,
    params: &Params,
    cse: Option<&LocalCse>,
) -> Result<Target, TargetError> {
    canonical_with(primitive_target(to)?, cse, primitive_reach(params))
}

fn canonical_with(
    raw: Target,
    cse: Option<&LocalCse>,
    reach: Reach,
) -> Result<Target, TargetError> {
    let t = match cse {
        Some(cse) => canonical(&raw, cse)?,
        None => raw,
    };
    Ok(t.with_reach(reach))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CseConfig;

    fn cse() -> LocalCse {
        LocalCse::from_config(&CseConfig {
            id: "/id-in".into(),
            name: "cse-in".into(),
            sp_id: Some("//sp.example.com".into()),
            ..Default::default()
        })
        .unwrap()
    }

    fn canon(path: &str) -> (String, Scope) {
        let t = http_request_target(path, Some(&cse())).unwrap();
        (t.as_str().to_string(), t.scope())
    }

    #[test]
    fn local_targets_become_cse_relative_and_structured() {
        let exact = |s: &str| (s.to_string(), Scope::Exact);
        assert_eq!(canon("/cse-in/a/b"), exact("/cse-in/a/b"));
        assert_eq!(canon("/~/id-in/cse-in/a"), exact("/cse-in/a"));
        assert_eq!(
            canon("/_/sp.example.com/id-in/cse-in/a"),
            exact("/cse-in/a")
        );
        assert_eq!(canon("/-/a"), exact("/cse-in/a"));
        assert_eq!(canon("/~/id-in"), exact("/cse-in"));
        assert_eq!(canon("/_/sp.example.com/id-in"), exact("/cse-in"));
        assert_eq!(canon("/"), exact("/"));
        // `-` only in the CSEBase-name position
        assert_eq!(canon("/cse-in/-/a"), exact("/cse-in/-/a"));
        // another CSE, another SP
        assert_eq!(canon("/~/id-mn/-/a"), exact("/~/id-mn/-/a"));
        assert_eq!(canon("/_/sp.example.com/id-mn/x"), exact("/~/id-mn/x"));
        assert_eq!(
            canon("/_/other/id-in/cse-in"),
            exact("/_/other/id-in/cse-in")
        );
        assert_eq!(canon("/_/sp.example.com"), exact("/_/sp.example.com"));
    }

    #[test]
    fn what_cannot_be_placed_is_marked() {
        assert_eq!(
            canon("/cae1"),
            ("/cae1".into(), Scope::Unplaced(UNSTRUCTURED))
        );
        assert_eq!(
            canon("/~/id-in/cae1/x?rcn=4"),
            ("/cae1/x".into(), Scope::Unplaced(UNSTRUCTURED))
        );
        assert_eq!(canon("/cse-in/g/fopt").1, Scope::Unplaced(FAN_OUT));
        assert_eq!(
            canon("/~/id-mn/cse-mn/g/fopt/x").1,
            Scope::Unplaced(FAN_OUT)
        );
        assert_eq!(canon("/cse-in/a?rcn=4").1, Scope::Subtree(BY_RCN));
        assert_eq!(canon("/cse-in/a?fu=1").1, Scope::Subtree(BY_DISCOVERY));
        // an rcn a CSE could read as 7 reaches anywhere
        assert_eq!(canon("/cse-in/a?rcn=%2B4").1, Scope::Unplaced(UNREADABLE));
        assert_eq!(canon("/cse-in/a?rcn=1&fu=2").1, Scope::Exact);
        let params = Params {
            rcn: Some(5),
            ..Params::default()
        };
        let t = primitive_request_target("/id-in/-/a", &params, Some(&cse())).unwrap();
        assert_eq!(
            (t.as_str(), t.scope()),
            ("/cse-in/a", Scope::Subtree(BY_RCN))
        );
        let reach = |rcn, fu| {
            primitive_reach(&Params {
                rcn,
                fu,
                ..Params::default()
            })
        };
        assert_eq!(
            reach(None, Some(1)),
            Reach {
                result: Scope::Subtree(BY_DISCOVERY),
                operation: true
            }
        );
        assert_eq!(reach(Some(1), Some(2)), Reach::default());
        assert_eq!(reach(Some(7), Some(2)).result, Scope::Unplaced(BY_ORIGINAL));
        // an unstructured target stays unplaced whatever the result
        let t = http_request_target("/cae1?rcn=4", Some(&cse())).unwrap();
        assert_eq!(
            (t.placement(), t.scope()),
            (Scope::Unplaced(UNSTRUCTURED), Scope::Unplaced(UNSTRUCTURED))
        );
        // without a local CSE: as parsed, with the reach
        let t = http_request_target("/~/id-in/cse-in?rcn=8", None).unwrap();
        assert_eq!(
            (t.as_str(), t.scope()),
            ("/~/id-in/cse-in", Scope::Subtree(BY_RCN))
        );
    }
}
