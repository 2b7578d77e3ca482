//! The compiled rules and `decide` (the contract is the module doc of `crate::rules`).

use std::cell::RefCell;

use regex_automata::meta;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind, PatternID, PatternSet};

use crate::config::{AuthorizationConfig, Effect, KeyError, Operation, ResourceType, RuleConfig};
use crate::cse::LocalCse;
use crate::identity::{Identity, Method};
use crate::parts::{self, Known, Part};
use crate::target::{check_plain, head, Params, Scope, Span, Target, TargetError, TargetForm};

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
    /// For an update: the type its content names, when that type makes the CSE act later
    /// (`crate::websocket::content`); `Is(None)` for content that does not (and for other operations),
    /// `Unknown` for content the proxy has not or could not read.
    pub content: Known<Option<ResourceType>>,
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

    /// Matches `t` or one of its descendants.
    fn overlaps(&self, t: &Target) -> bool {
        let (n, len) = (self.segments.len(), t.spans.len());
        if t.form != self.form || (len > n && !self.tail) {
            return false;
        }
        self.segments
            .iter()
            .zip(&t.spans)
            .all(|(p, &span)| p.matches(t, span))
    }

    /// Matches `t` or one of its direct children.
    fn overlaps_children(&self, t: &Target) -> bool {
        self.matches(t)
            || (t.form == self.form
                && self.segments.len() == t.spans.len() + 1
                && self
                    .segments
                    .iter()
                    .zip(&t.spans)
                    .all(|(p, &span)| p.matches(t, span)))
    }

    /// Matches the parent of `t` or one of the parent's direct children (`t` and its
    /// siblings). A target without a parent (the CSEBase) has only itself.
    fn overlaps_siblings(&self, t: &Target) -> bool {
        let (n, len) = (self.segments.len(), t.spans.len());
        let parent = len.saturating_sub(1);
        t.form == self.form
            && (n <= parent && (self.tail || n == parent) || n == len)
            && self
                .segments
                .iter()
                .zip(t.spans.iter().take(parent))
                .all(|(p, &span)| p.matches(t, span))
    }

    /// Matches the parent of `t` and every descendant of it.
    fn covers_parent(&self, t: &Target) -> bool {
        let (n, len) = (self.segments.len(), t.spans.len());
        self.tail
            && t.form == self.form
            && n < len
            && self
                .segments
                .iter()
                .zip(&t.spans)
                .all(|(p, &span)| p.matches(t, span))
    }

    /// Matches `t` and every descendant of it.
    fn covers(&self, t: &Target) -> bool {
        self.tail && self.matches(t)
    }

    /// The patterns in canonical form (`crate::target::canonical`) that together match what
    /// this one matches in any form: `/~/id-in/cse-in/**` is `/cse-in/**`, `/~/*/**` is
    /// `/**` and `/~/*/**`. A pattern of the local CSE must name the CSEBase (by its name, `-`
    /// or `*`) first: the proxy cannot place unstructured resource IDs.
    fn canonical(self, cse: &LocalCse) -> Result<Vec<TargetPattern>, String> {
        let mut segs: Vec<PSeg> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal { text, .. } => PSeg::Lit(text.clone()),
                Segment::One => PSeg::One,
            })
            .collect();
        if self.tail {
            segs.push(PSeg::Tail);
        }
        let mut out = Vec::new();
        let id = cse.id_segment();
        let is_id = |s: &PSeg| matches!(s, PSeg::Lit(c) if &**c == id);
        match self.form {
            TargetForm::CseRelative => local_pattern(&segs, false, true, cse, &mut out)?,
            TargetForm::SpRelative => match segs.first() {
                Some(PSeg::Tail) => {
                    local_pattern(&segs, false, false, cse, &mut out)?;
                    out.push((TargetForm::SpRelative, segs.clone()));
                }
                Some(c) if is_id(c) => local_pattern(&segs[1..], true, true, cse, &mut out)?,
                Some(PSeg::One) => {
                    local_pattern(&segs[1..], true, false, cse, &mut out)?;
                    out.push((TargetForm::SpRelative, segs.clone()));
                }
                _ => out.push((TargetForm::SpRelative, segs.clone())),
            },
            TargetForm::Absolute => {
                let sp = segs.first();
                let (local_sp, known_sp) = match sp {
                    Some(PSeg::Lit(x)) => (cse.is_local_sp(x), cse.is_known_sp(x)),
                    _ => (true, cse.sp_id().is_some()),
                };
                match (sp, segs.get(1)) {
                    (Some(PSeg::Tail), _) => {
                        local_pattern(&segs, false, false, cse, &mut out)?;
                        out.push((TargetForm::SpRelative, segs.clone()));
                    }
                    (_, None) => {}
                    (_, Some(c)) => {
                        let any = matches!(c, PSeg::One | PSeg::Tail);
                        if local_sp && (any || is_id(c)) {
                            let rest = if matches!(c, PSeg::Tail) {
                                &segs[1..]
                            } else {
                                &segs[2..]
                            };
                            let strict = !any && matches!(sp, Some(PSeg::Lit(_)));
                            local_pattern(rest, !matches!(c, PSeg::Tail), strict, cse, &mut out)?;
                        }
                        if known_sp && (any || !is_id(c)) {
                            out.push((TargetForm::SpRelative, segs[1..].to_vec()));
                        }
                    }
                }
                // other SPs, or an SP that is not known to be the local one
                if !(matches!(sp, Some(PSeg::Lit(_))) && known_sp) {
                    out.push((TargetForm::Absolute, segs.clone()));
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|(form, segs)| TargetPattern::of(form, &segs))
            .collect())
    }

    fn of(form: TargetForm, segs: &[PSeg]) -> TargetPattern {
        let tail = matches!(segs.last(), Some(PSeg::Tail));
        let segments = segs
            .iter()
            .filter_map(|s| match s {
                PSeg::Lit(text) => Some(Segment::Literal {
                    head: head(text.as_bytes()),
                    text: text.clone(),
                }),
                PSeg::One => Some(Segment::One),
                PSeg::Tail => None,
            })
            .collect();
        TargetPattern {
            form,
            segments,
            tail,
        }
    }
}

/// A pattern segment while it is made canonical.
#[derive(Debug, Clone)]
enum PSeg {
    Lit(Box<str>),
    One,
    Tail,
}

/// The CSE-relative pattern of the local CSE from `rest` (what follows the CSE-ID, or a whole
/// CSE-relative pattern), into `out`.
/// `strict`: the pattern names the local CSE itself (not through a wildcard CSE-ID), so a first
/// segment other than the CSEBase is an error rather than a pattern for other CSEs only.
fn local_pattern(
    rest: &[PSeg],
    by_id: bool,
    strict: bool,
    cse: &LocalCse,
    out: &mut Vec<(TargetForm, Vec<PSeg>)>,
) -> Result<(), String> {
    let name = || PSeg::Lit(cse.name().into());
    let segs = match rest.split_first() {
        None if by_id => vec![name()],
        None => Vec::new(),
        Some((PSeg::Tail, _)) => vec![PSeg::Tail],
        Some((PSeg::One, tail)) => std::iter::once(name()).chain(tail.iter().cloned()).collect(),
        Some((PSeg::Lit(first), tail)) if &**first == cse.name() || &**first == "-" => {
            std::iter::once(name()).chain(tail.iter().cloned()).collect()
        }
        Some((PSeg::Lit(_), _)) if !strict => return Ok(()),
        Some((PSeg::Lit(first), _)) => {
            return Err(format!(
                "{first:?} is not the CSEBase name {:?} (cse.name): a pattern of the local CSE starts with the CSEBase (its name, - or *); unstructured resource IDs cannot be placed by the proxy (deny rules with targets meet every request by one anyway)",
                cse.name()
            ))
        }
    };
    out.push((TargetForm::CseRelative, segs));
    Ok(())
}

/// The condition keys of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
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
    pub(super) fn name(self) -> &'static str {
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
/// The mask of an absent `methods` condition; one bit per method ([`Method::bit`]).
const ANY_METHOD: u64 = u64::MAX;
/// The method bit of an anonymous request: in [`ANY_METHOD`], in no list (no method has it).
const NO_METHOD: u64 = 1 << 63;

/// Bits, not a table: a new `Operation` variant must be given one here.
fn method_bit(m: Method) -> u64 {
    m.bit()
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
pub(super) struct Rule {
    pub(super) name: String,
    pub(super) effect: Effect,
    /// [`ANY_METHOD`] when absent.
    methods: u64,
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
    pub(super) described: Box<[(Key, String)]>,
}

impl Rule {
    /// Whether condition `key` matches; an absent condition does. The one place that says
    /// what a condition means (`decide` and `explain` both ask here).
    #[inline(always)]
    pub(super) fn check(&self, key: Key, ev: &mut Eval<'_>) -> bool {
        let req = ev.req;
        match key {
            Key::Methods => self.methods & ev.method != 0,
            // fail closed: an operation or type the proxy cannot read (what an <action> will
            // do) meets every deny rule that names some, and no allow rule that does
            Key::Operations => match ev.part.operation {
                Known::Is(_) => self.operations & ev.operation != 0,
                Known::Unknown => self.operations == ANY || self.effect == Effect::Deny,
            },
            Key::ResourceTypes => {
                self.resource_types
                    .as_ref()
                    .is_none_or(|tys| match ev.part.resource_type {
                        Known::Is(ty) => ty.is_some_and(|t| tys.binary_search(&t.0).is_ok()),
                        Known::Unknown => self.effect == Effect::Deny,
                    })
            }
            Key::Identities => self.identities.as_ref().is_none_or(|names| {
                req.identity
                    .is_some_and(|i| sorted_contains(names, &i.name))
            }),
            Key::Roles => self.roles.as_ref().is_none_or(|r| ev.holds_any(r)),
            Key::UnlessRoles => self.unless_roles.as_ref().is_none_or(|r| !ev.holds_any(r)),
            Key::Targets => self.targets.as_ref().is_none_or(|ps| match ev.part.scope {
                Scope::Exact => ps.iter().any(|p| p.matches(req.target)),
                // fail closed: what the result may include is denied by any deny rule on it,
                // and allowed only by an allow rule on all of it
                Scope::Children(_) => match self.effect {
                    Effect::Deny => ps.iter().any(|p| p.overlaps_children(req.target)),
                    Effect::Allow => ps.iter().any(|p| p.covers(req.target)),
                },
                Scope::Siblings(_) => match self.effect {
                    Effect::Deny => ps.iter().any(|p| p.overlaps_siblings(req.target)),
                    Effect::Allow => ps.iter().any(|p| p.covers_parent(req.target)),
                },
                Scope::Subtree(_) => match self.effect {
                    Effect::Deny => ps.iter().any(|p| p.overlaps(req.target)),
                    Effect::Allow => ps.iter().any(|p| p.covers(req.target)),
                },
                Scope::Unplaced(_) => self.effect == Effect::Deny,
            }),
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

    pub(super) fn text(&self, key: &str) -> &str {
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
pub(super) struct Scratch {
    names: PatternSet,
    originators: PatternSet,
}

impl Scratch {
    pub(super) fn new() -> Scratch {
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
pub(super) struct Eval<'a> {
    req: &'a Request<'a>,
    /// The part of the request being judged (`crate::parts`).
    part: Part,
    method: u64,
    /// The bit of the part's operation.
    operation: u8,
    role_table: &'a [String],
    role_mask: Option<u64>,
    names: Lazy<'a>,
    originators: Lazy<'a>,
}

impl Eval<'_> {
    /// Judge `part` next (the regex results stay: same identity, same originator).
    fn judge(&mut self, part: Part) {
        self.part = part;
        self.operation = match part.operation {
            Known::Is(op) => op_bit(op),
            Known::Unknown => NO_OPERATION,
        };
    }

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
    pub(super) rules: Vec<Rule>,
    default: Effect,
    /// Every role the rules name, sorted, when they are at most 64 (then roles are masks).
    role_table: Vec<String>,
    names: RegexGroup,
    originators: RegexGroup,
    /// The local CSE (config `cse`): targets and patterns are read in its canonical form.
    cse: Option<LocalCse>,
}

impl RuleSet {
    /// Without the local CSE: a rule set with `targets` is refused (see [`RuleSet::compile_for`]).
    pub fn compile(c: &AuthorizationConfig) -> Result<RuleSet, KeyError> {
        RuleSet::compile_for(c, None)
    }

    /// The rules for the local CSE `cse`, which `targets` need: without it a target could not
    /// be read in one canonical form.
    pub fn compile_for(
        c: &AuthorizationConfig,
        cse: Option<&LocalCse>,
    ) -> Result<RuleSet, KeyError> {
        c.validate()?;
        if let (None, Some((i, rule))) = (
            cse,
            c.rules
                .iter()
                .enumerate()
                .find(|(_, r)| r.targets.is_some()),
        ) {
            return Err(KeyError::new(
                "cse",
                format!(
                    "authorization.rules[{i}] ({}) has targets, which need the local CSE's identity to be read in every form: add `cse: {{id: \"/id-in\", name: \"cse-in\"}}` with your CSE's values",
                    rule.name
                ),
            ));
        }
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
                cse,
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
            cse: cse.cloned(),
        })
    }

    /// The local CSE the rules were compiled for.
    pub fn cse(&self) -> Option<&LocalCse> {
        self.cse.as_ref()
    }

    /// The target the rules judge for an HTTP request target (path and query): refusals,
    /// canonical form, and `rcn`/`fu` (`crate::target::http_request_target`). The one function
    /// for HTTP requests on every listener.
    pub fn http_target(&self, path_and_query: &str) -> Result<Target, TargetError> {
        crate::target::http_request_target(path_and_query, self.cse.as_ref())
    }

    /// The same for a WebSocket request primitive: its `to` and the parameters that decide
    /// its reach (`rcn`, `fc.fu`, … : [`Params`]).
    pub fn primitive_target(&self, to: &str, params: &Params) -> Result<Target, TargetError> {
        crate::target::primitive_request_target(to, params, self.cse.as_ref())
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

    /// Every part of the request (`crate::parts`) must be allowed: the first part a rule (or
    /// the default) denies decides, else the request itself.
    fn decide_with(&self, req: &Request<'_>, scratch: &mut Scratch) -> Decision {
        let [request, more @ ..] =
            parts::of(req.operation, req.resource_type, req.content, req.target);
        let Some(request) = request else {
            return self.default_decision();
        };
        let mut ev = self.eval(req, request, scratch);
        let decision = self.first_match(&mut ev);
        if decision.effect == Effect::Deny {
            return decision;
        }
        for part in more.into_iter().flatten() {
            ev.judge(part);
            let d = self.first_match(&mut ev);
            if d.effect == Effect::Deny {
                return d;
            }
        }
        decision
    }

    fn first_match(&self, ev: &mut Eval<'_>) -> Decision {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(ev) {
                return Decision {
                    effect: rule.effect,
                    rule: Some(i),
                };
            }
        }
        self.default_decision()
    }

    pub(super) fn eval<'a>(
        &'a self,
        req: &'a Request<'a>,
        part: Part,
        scratch: &'a mut Scratch,
    ) -> Eval<'a> {
        let mut ev = Eval {
            req,
            part,
            method: req.identity.map_or(NO_METHOD, |i| method_bit(i.proven_by)),
            operation: NO_OPERATION,
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
        };
        ev.judge(part);
        ev
    }

    pub(super) fn default_decision(&self) -> Decision {
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

fn compile_rule(
    i: usize,
    rc: &RuleConfig,
    role_table: &[String],
    names: &mut RegexGroup,
    originators: &mut RegexGroup,
    cse: Option<&LocalCse>,
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

    // originators are matched in canonical form: `/id-in/CAdmin` arrives as `CAdmin`, so a
    // regex written for the SP-relative form of a local originator would never match
    if let (Some(cse), Some(list)) = (cse, &rc.originators) {
        let local = format!("{}/", cse.id());
        if let Some(p) = list.iter().find(|p| p.contains(&local)) {
            return Err(KeyError::new(
                key(Key::Originators),
                format!(
                    "{p:?} names an originator of the local CSE in SP-relative or absolute form; rules see it in canonical form ({local}CAdmin is CAdmin): write it without {local:?}"
                ),
            ));
        }
    }
    let targets = rc
        .targets
        .as_ref()
        .map(|list| {
            let mut all = Vec::with_capacity(list.len());
            for t in list {
                let pattern = TargetPattern::parse(t);
                let canonical = match cse {
                    Some(cse) => pattern.and_then(|p| p.canonical(cse)),
                    None => pattern.map(|p| vec![p]),
                };
                all.extend(
                    canonical
                        .map_err(|m| KeyError::new(key(Key::Targets), format!("{t:?}: {m}")))?,
                );
            }
            Ok(all.into_boxed_slice())
        })
        .transpose()?;
    Ok(Rule {
        name: rc.name.clone(),
        effect: rc.effect,
        methods: rc.methods.as_ref().map_or(ANY_METHOD, |list| {
            list.iter().fold(0, |b, m| b | method_bit(*m))
        }),
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
    use crate::onem2m::operation::http_operation;
    use crate::target::*;

    /// The local CSE of the tests: `/id-in`, `cse-in`, SP-ID `sp.example.com`.
    fn test_cse() -> LocalCse {
        cse_with(Some("sp.example.com"))
    }

    fn cse_with(sp: Option<&str>) -> LocalCse {
        LocalCse::from_config(&crate::config::CseConfig {
            id: "/id-in".into(),
            name: "cse-in".into(),
            sp_id: sp.map(str::to_string),
            ..Default::default()
        })
        .unwrap()
    }

    fn set(yaml: &str) -> RuleSet {
        let c: AuthorizationConfig = serde_yaml_ng::from_str(yaml).unwrap();
        RuleSet::compile_for(&c, Some(&test_cse())).unwrap()
    }

    fn compile_err(yaml: &str) -> KeyError {
        let c: AuthorizationConfig = serde_yaml_ng::from_str(yaml).unwrap();
        RuleSet::compile_for(&c, Some(&test_cse())).unwrap_err()
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
            let target = http_request_target(self.path, Some(&test_cse())).unwrap();
            let (operation, resource_type) = http_operation(self.method, self.content_type);
            f(&Request {
                identity: Some(&self.identity),
                originator: self.originator.as_deref(),
                operation,
                resource_type,
                content: Known::Is(None),
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
        // a create of a type the proxy cannot read could be of any type: it meets rules on
        // resource types (the proxy refuses it before the rules anyway, 400)
        assert_eq!(
            post(Some("application/json;ty=abc")).on(&s),
            by_rule(DENY, 0)
        );
        assert_eq!(post(None).on(&s), by_default(ALLOW));
        assert_eq!(req("a").http("GET", None).on(&s), by_default(ALLOW));
    }

    #[test]
    fn targets_condition() {
        let s = one("targets: [/cse-in/admin/**]");
        assert_eq!(req("a").at("/cse-in/admin/x").on(&s), by_rule(DENY, 0));
        assert_eq!(
            req("a").at("/~/id-in/cse-in/admin").on(&s),
            by_rule(DENY, 0)
        );
        assert_eq!(req("a").at("/cse-in/other").on(&s), by_default(ALLOW));
        assert_eq!(
            req("a").at("/_/sp.example.com/id-in/cse-in/admin").on(&s),
            by_rule(DENY, 0)
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
            // decoded, a CSE reads them as the end of the target (ACME: `#` a partial
            // retrieve of what precedes it; `?`, `;` a query and path parameters when it
            // forwards to another CSE)
            ("/cse-in/secret%23lbl", FRAGMENT),
            ("/~/id-mn/cse-mn/private%3F", QUERY),
            ("/~/id-mn/cse-mn/private%3frcn=4", QUERY),
            ("/cse-in/x%3By", PATH_PARAMETER),
            ("/~//cse-in", EMPTY_SEGMENT),
            ("/_//x", EMPTY_SEGMENT),
            ("/~", INCOMPLETE),
            ("/~/", INCOMPLETE),
            ("/_", INCOMPLETE),
            ("/%7e/id-in/cse-in", ENCODED_MARKER),
            ("/~cse-in/x", GLUED_MARKER),
            ("/_id-in/cse-in/x", GLUED_MARKER),
            ("/%7Ecse-in/x", GLUED_MARKER),
            ("/%5fid-in/cse-in", GLUED_MARKER),
            ("/~/~id-in/cse-in", GLUED_MARKER),
            ("/~/_/cse-in", GLUED_MARKER),
            ("/_/~sp/id-in/cse-in", GLUED_MARKER),
            ("/_/sp/_id-in/cse-in", GLUED_MARKER),
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
        assert!(parse_target("/cse-in/~x/_y").is_ok());
        assert!(parse_target("/~/id-in/_cse").is_ok());
    }

    #[test]
    fn every_form_of_a_target_meets_the_same_rule_both_ways() {
        // the HTTP forms (raw and percent-encoded) and the WebSocket `to` forms
        let http = [
            "/cse-in/AE1",
            "/~/id-in/cse-in/AE1",
            "/_/sp.example.com/id-in/cse-in/AE1",
            "/_/SP.Example.COM/id-in/cse-in/AE1",
            "/-/AE1",
            "/~/id-in/-/AE1",
            "/_/sp.example.com/id-in/-/AE1",
            "/cse-%69n/AE1",
            "/~/id-%69n/cse-in/%41E1",
            "/%2D/AE1",
            "/cse-in/AE1/",
        ];
        let to = [
            "cse-in/AE1",
            "/id-in/cse-in/AE1",
            "//sp.example.com/id-in/cse-in/AE1",
            "-/AE1",
            "/id-in/-/AE1",
        ];
        let patterns = [
            "/cse-in/AE1",
            "/~/id-in/cse-in/AE1",
            "/_/sp.example.com/id-in/cse-in/AE1",
            "/-/AE1",
            "/cse-in/*",
            "/cse-in/**",
            "/~/id-in/**",
            "/~/*/cse-in/AE1",
            "/_/*/id-in/cse-in/**",
            "/_/*/*/-/AE1",
            "/*/AE1",
            "/**",
        ];
        let cse = test_cse();
        for pattern in patterns {
            let s = one(&format!("targets: ['{pattern}']"));
            for path in http {
                assert_eq!(
                    req("a").at(path).on(&s),
                    by_rule(DENY, 0),
                    "{pattern} {path}"
                );
                let t = http_request_target(path, Some(&cse)).unwrap();
                assert_eq!(t.as_str(), "/cse-in/AE1", "{path}");
                assert_eq!(t.scope(), Scope::Exact);
            }
            for to in to {
                let t = crate::target::primitive_request_target(to, &Params::default(), Some(&cse))
                    .unwrap();
                assert_eq!(t.as_str(), "/cse-in/AE1", "{to}");
                let (op, _) = http_operation("GET", None);
                let who = who("a", Method::Mtls, &[]);
                let d = s.decide(&Request {
                    identity: Some(&who),
                    originator: Some("a"),
                    operation: op,
                    resource_type: None,
                    content: Known::Is(None),
                    target: &t,
                });
                assert_eq!(d, by_rule(DENY, 0), "{pattern} {to}");
            }
            // another resource, and another CSE's resource of the same name, do not
            for other in [
                "/cse-in/AE2",
                "/~/id-mn/cse-in/AE1",
                "/_/other.sp/id-in/cse-in/AE1",
            ] {
                if pattern.contains('*') {
                    continue; // wildcards cover more, by design
                }
                assert_eq!(
                    req("a").at(other).on(&s),
                    by_default(ALLOW),
                    "{pattern} {other}"
                );
            }
        }
        // the CSE-ID alone is the CSEBase
        let s = one("targets: [/cse-in]");
        for path in [
            "/cse-in",
            "/~/id-in",
            "/_/sp.example.com/id-in",
            "/-",
            "/~/id-in/-",
        ] {
            assert_eq!(req("a").at(path).on(&s), by_rule(DENY, 0), "{path}");
        }
        assert_eq!(req("a").at("/cse-in/x").on(&s), by_default(ALLOW));
    }

    #[test]
    fn other_cses_and_sps_keep_their_form() {
        let cse = test_cse();
        let canon = |path: &str| {
            http_request_target(path, Some(&cse))
                .unwrap()
                .as_str()
                .to_string()
        };
        assert_eq!(canon("/~/id-mn/cse-mn/x"), "/~/id-mn/cse-mn/x");
        // the local SP's other CSEs are SP-relative
        assert_eq!(
            canon("/_/sp.example.com/id-mn/cse-mn/x"),
            "/~/id-mn/cse-mn/x"
        );
        assert_eq!(
            canon("/_/other.sp/id-in/cse-in/x"),
            "/_/other.sp/id-in/cse-in/x"
        );
        // CSE-IDs and names are compared exactly
        assert_eq!(canon("/~/ID-IN/cse-in/x"), "/~/ID-IN/cse-in/x");
        let s = one("targets: [/cse-in/**]");
        assert_eq!(req("a").at("/~/id-mn/cse-mn/x").on(&s), by_default(ALLOW));
        let s = one("targets: ['/~/id-mn/**']");
        assert_eq!(req("a").at("/~/id-mn/cse-mn/x").on(&s), by_rule(DENY, 0));
        assert_eq!(
            req("a").at("/_/sp.example.com/id-mn").on(&s),
            by_rule(DENY, 0)
        );
        assert_eq!(req("a").at("/cse-in/x").on(&s), by_default(ALLOW));
        let s = one("targets: ['/_/sp.example.com/id-mn/**']");
        assert_eq!(req("a").at("/~/id-mn/x").on(&s), by_rule(DENY, 0));
        // `*` as CSE-ID: the local CSE and every other
        let s = one("targets: ['/~/*/**']");
        for path in ["/cse-in/x", "/~/id-mn/x", "/_/sp.example.com/id-mn/x"] {
            assert_eq!(req("a").at(path).on(&s), by_rule(DENY, 0), "{path}");
        }
        assert_eq!(req("a").at("/_/other.sp/id-mn/x").on(&s), by_default(ALLOW));
        let s = one("targets: ['/_/**']");
        for path in ["/cse-in/x", "/~/id-mn/x", "/_/other.sp/id-mn/x", "/"] {
            assert_eq!(req("a").at(path).on(&s), by_rule(DENY, 0), "{path}");
        }
        let s = one("targets: ['/~/*/cse-mn/**']");
        assert_eq!(req("a").at("/~/id-mn/cse-mn/x").on(&s), by_rule(DENY, 0));
        assert_eq!(req("a").at("/cse-in/cse-mn/x").on(&s), by_default(ALLOW));
        // without an SP-ID configured, any SP-ID names the local SP for the local CSE-ID
        let open = cse_with(None);
        let t = http_request_target("/_/any.sp/id-in/cse-in/x", Some(&open)).unwrap();
        assert_eq!(t.as_str(), "/cse-in/x");
        let t = http_request_target("/_/any.sp/id-mn/cse-mn/x", Some(&open)).unwrap();
        assert_eq!(t.as_str(), "/_/any.sp/id-mn/cse-mn/x");
    }

    #[test]
    fn unstructured_ids_meet_deny_rules_with_targets_and_no_allow_rule_with_targets() {
        let s = set(concat!(
            "default: deny\n",
            "rules:\n",
            "  - {name: allow-all-under-base, targets: ['/cse-in/**'], effect: allow}\n",
        ));
        assert_eq!(req("a").at("/cse-in/x").on(&s), by_rule(ALLOW, 0));
        for path in [
            "/cae123",
            "/~/id-in/cae123",
            "/_/sp.example.com/id-in/cae123/x",
            "/CSE-IN/x",
        ] {
            assert_eq!(req("a").at(path).on(&s), by_default(DENY), "{path}");
            let t = http_request_target(path, Some(&test_cse())).unwrap();
            assert_eq!(
                t.scope(),
                Scope::Unplaced(crate::target::UNSTRUCTURED),
                "{path}"
            );
        }
        let s = set(concat!(
            "default: allow\n",
            "rules:\n",
            "  - {name: no-delete-secret, operations: [delete], targets: ['/cse-in/secret/**'], effect: deny}\n",
            "  - {name: other, identities: [nobody], effect: deny}\n",
        ));
        let del = |p: &'static str| req("a").http("DELETE", None).at(p);
        assert_eq!(del("/cae123").on(&s), by_rule(DENY, 0));
        assert_eq!(del("/~/id-in/cae123").on(&s), by_rule(DENY, 0));
        // the other conditions still count; rules without targets as before
        assert_eq!(req("a").at("/cae123").on(&s), by_default(ALLOW));
        assert_eq!(del("/cse-in/other").on(&s), by_default(ALLOW));
        // another CSE's unstructured ID is not placed (its CSE-ID is the scope)
        assert_eq!(del("/~/id-mn/cae1").on(&s), by_default(ALLOW));
        // a pattern of the local CSE must start with the CSEBase
        let e = compile_err("rules:\n  - {name: r, targets: ['/cae123/**'], effect: deny}\n");
        assert_eq!(e.key, "authorization.rules[0].targets");
        assert!(e.message.contains("unstructured"), "{}", e.message);
        let e = compile_err("rules:\n  - {name: r, targets: ['/~/id-in/x'], effect: deny}\n");
        assert_eq!(e.key, "authorization.rules[0].targets");
    }

    #[test]
    fn fan_out_points_are_not_placed() {
        let s = set(concat!(
            "default: allow\n",
            "rules:\n",
            "  - {name: no-secret, targets: ['/cse-in/secret/**'], effect: deny}\n",
        ));
        for path in [
            "/cse-in/grp/fopt",
            "/cse-in/grp/fopt/x",
            "/~/id-in/cse-in/a/grp/fopt",
        ] {
            assert_eq!(req("a").at(path).on(&s), by_rule(DENY, 0), "{path}");
        }
        assert_eq!(req("a").at("/cse-in/grp").on(&s), by_default(ALLOW));
        let s =
            set("default: deny\nrules:\n  - {name: all, targets: ['/cse-in/**'], effect: allow}\n");
        assert_eq!(req("a").at("/cse-in/grp/fopt").on(&s), by_default(DENY));
        let t = crate::target::primitive_request_target(
            "cse-in/grp/fopt",
            &Params::default(),
            Some(&test_cse()),
        )
        .unwrap();
        assert_eq!(t.scope(), Scope::Unplaced(crate::target::FAN_OUT));
    }

    #[test]
    fn retrieves_with_descendants_meet_deny_rules_below_them() {
        let s = set(concat!(
            "default: allow\n",
            "rules:\n",
            "  - {name: no-secret, operations: [retrieve], targets: ['/cse-in/app/secret/**'], effect: deny}\n",
        ));
        for (path, decision) in [
            ("/cse-in/app", by_default(ALLOW)),
            ("/cse-in/app?rcn=1", by_default(ALLOW)),
            ("/cse-in/app?rcn=4", by_rule(DENY, 0)),
            ("/cse-in?rcn=5", by_rule(DENY, 0)),
            ("/~/id-in/cse-in?rcn=6", by_rule(DENY, 0)),
            ("/cse-in/app?rcn=8&x=1", by_rule(DENY, 0)),
            ("/cse-in/app?fu=1&ty=3", by_rule(DENY, 0)),
            ("/cse-in/app?fu=2", by_default(ALLOW)),
            ("/cse-in/app?%72cn=4", by_rule(DENY, 0)),
            ("/cse-in/app?RCN=4", by_rule(DENY, 0)),
            ("/cse-in/app?rcn=04", by_rule(DENY, 0)),
            ("/cse-in/app?rcn=1&rcn=4", by_rule(DENY, 0)),
            ("/cse-in/app?rcn=+4", by_rule(DENY, 0)),
            ("/cse-in/app?rcn=x", by_rule(DENY, 0)),
            ("/cse-in/app/secret/x?rcn=1", by_rule(DENY, 0)),
            // finding 1 of the red-team run: every rcn but 0, 1, 2, 3, 9 reaches further
            ("/cse-in/app?rcn=0", by_default(ALLOW)),
            ("/cse-in/app?rcn=2", by_default(ALLOW)),
            ("/cse-in/app?rcn=3", by_default(ALLOW)),
            ("/cse-in/app?rcn=9", by_default(ALLOW)),
            ("/cse-in/app?rcn=7", by_rule(DENY, 0)),
            ("/cse-in/other?rcn=7", by_rule(DENY, 0)),
            ("/cse-in/app?rcn=10&smf=x", by_rule(DENY, 0)),
            ("/cse-in/app?rcn=11", by_rule(DENY, 0)),
            ("/cse-in/app?rcn=12", by_rule(DENY, 0)),
            ("/cse-in?rcn=12", by_rule(DENY, 0)),
            ("/cse-in/app?rcn=13", by_rule(DENY, 0)),
            ("/cse-in/app?rcn=99999999999999999999", by_rule(DENY, 0)),
            ("/cse-in/app?fu=3", by_rule(DENY, 0)),
            ("/cse-in/app?fu=4", by_rule(DENY, 0)),
            ("/cse-in/app?smf=x", by_rule(DENY, 0)),
            ("/cse-in/app?sqi=false&rcn=11", by_rule(DENY, 0)),
            ("/cse-in/app?S%51I=true", by_rule(DENY, 0)),
            ("/cse-in/other?arp=..%2Fapp%2Fsecret", by_rule(DENY, 0)),
            (
                "/cse-in/app?lbl=a&lim=3&drt=2&rp=PT1S&atrl=lbl",
                by_default(ALLOW),
            ),
            // beside the denied subtree, not above it
            ("/cse-in/other?rcn=4", by_default(ALLOW)),
            ("/cse-in/app/public?rcn=4", by_default(ALLOW)),
        ] {
            assert_eq!(req("a").at(path).on(&s), decision, "{path}");
        }
        // a delete that returns the deleted subtree (rcn=4) is a retrieve of it too; its
        // own target stays exact (a deny of deletes below it is not met by the delete)
        assert_eq!(
            req("a").http("DELETE", None).at("/cse-in/app?rcn=4").on(&s),
            by_rule(DENY, 0)
        );
        assert_eq!(
            req("a").http("DELETE", None).at("/cse-in/app?rcn=0").on(&s),
            by_default(ALLOW)
        );
        assert_eq!(
            req("a")
                .http("PUT", Some("application/json"))
                .at("/cse-in/app?rcn=7")
                .on(&s),
            by_rule(DENY, 0)
        );
        let deletes = set(concat!(
            "default: allow\n",
            "rules:\n",
            "  - {name: keep, operations: [delete], targets: ['/cse-in/app/keep'], effect: deny}\n",
        ));
        let delete = |path| req("a").http("DELETE", None).at(path).on(&deletes);
        assert_eq!(delete("/cse-in/app?rcn=4"), by_default(ALLOW));
        // a discovery-based delete acts on what it finds
        assert_eq!(delete("/cse-in/app?fu=4"), by_rule(DENY, 0));
        assert_eq!(delete("/cse-in/app?fu=1"), by_rule(DENY, 0));
        assert_eq!(delete("/cse-in/app?fu=2"), by_default(ALLOW));
        // allow rules with targets allow a subtree retrieve only when they cover all of it
        let s = set(concat!(
            "default: deny\n",
            "rules:\n",
            "  - {name: base-only, targets: ['/cse-in'], effect: allow}\n",
            "  - {name: app-tree, targets: ['/cse-in/app/**'], effect: allow}\n",
        ));
        assert_eq!(req("a").at("/cse-in").on(&s), by_rule(ALLOW, 0));
        assert_eq!(req("a").at("/cse-in?rcn=4").on(&s), by_default(DENY));
        assert_eq!(req("a").at("/cse-in/app?rcn=4").on(&s), by_rule(ALLOW, 1));
        assert_eq!(req("a").at("/cse-in/app/x?fu=1").on(&s), by_rule(ALLOW, 1));
    }

    #[test]
    fn what_a_created_resource_does_later_is_judged_fail_closed() {
        // finding 4 of the red-team run: an <action> runs a request primitive the rules never
        // saw, so its create meets every deny rule that could apply to some request
        let s = set(concat!(
            "default: allow\n",
            "rules:\n",
            "  - {name: no-deletes, operations: [delete], targets: ['/cse-in/keep/**'], effect: deny}\n",
        ));
        let create = |ty: &'static str, path| req("a").http("POST", Some(ty)).at(path).on(&s);
        assert_eq!(
            create("application/json;ty=4", "/cse-in/pub"),
            by_default(ALLOW)
        );
        for ty in [6, 12, 48, 65] {
            let ct: &'static str = Box::leak(format!("application/json;ty={ty}").into_boxed_str());
            assert_eq!(create(ct, "/cse-in/pub"), by_rule(DENY, 0), "ty {ty}");
        }
        // rules without targets, with operations or resource types, are met too
        for rule in [
            "operations: [update]",
            "resource_types: [remoteCSE]",
            "operations: [create]\n    resource_types: [16]",
            "targets: ['/~/id-mn/**']",
        ] {
            let s = one(rule);
            let d = req("a").http("POST", Some("application/json;ty=65")).on(&s);
            assert_eq!(d, by_rule(DENY, 0), "{rule}");
        }
        // ... but no rule the request itself escapes only by its identity
        let s = one("identities: [b]\n    operations: [delete]");
        let d = req("a").http("POST", Some("application/json;ty=65")).on(&s);
        assert_eq!(d, by_default(ALLOW));
        // allow rules that name operations, types or targets do not allow the unknown request
        let s = set(concat!(
            "default: deny\n",
            "rules:\n",
            "  - {name: creates, operations: [create], targets: ['/cse-in/**'], effect: allow}\n",
            "  - {name: sysop, roles: [sysop], effect: allow}\n",
        ));
        let action = req("a").http("POST", Some("application/json;ty=65"));
        assert_eq!(action.on(&s), by_default(DENY));
        // every part allowed: the request's own decision is the one logged
        assert_eq!(action.roles(&["sysop"]).on(&s), by_rule(ALLOW, 0));
        let cin = req("a").http("POST", Some("application/json;ty=4"));
        assert_eq!(cin.on(&s), by_rule(ALLOW, 0));
        // <dependency>, <state>, <processManagement> read resources anywhere
        let s = one("operations: [retrieve]\n    targets: ['/cse-in/secret/**']");
        for ty in [63, 64, 66] {
            let ct: &'static str = Box::leak(format!("application/json;ty={ty}").into_boxed_str());
            let d = req("a").http("POST", Some(ct)).at("/cse-in/pub").on(&s);
            assert_eq!(d, by_rule(DENY, 0), "ty {ty}");
        }
        // a <subscription> sends its parent and the parent's new children to the subscriber
        let sub = |path| {
            req("a")
                .http("POST", Some("application/json;ty=23"))
                .at(path)
                .on(&s)
        };
        assert_eq!(sub("/cse-in/secret"), by_rule(DENY, 0));
        assert_eq!(sub("/cse-in/secret/x"), by_rule(DENY, 0));
        assert_eq!(sub("/cse-in"), by_rule(DENY, 0));
        assert_eq!(sub("/cse-in/pub"), by_default(ALLOW));
        let deep = one("operations: [retrieve]\n    targets: ['/cse-in/app/secret/**']");
        let d = req("a")
            .http("POST", Some("application/json;ty=23"))
            .at("/cse-in")
            .on(&deep);
        assert_eq!(
            d,
            by_default(ALLOW),
            "a grandchild is not in a notification"
        );
        // <triggerRequest>, <timeSyncBeacon>: a notify of a target they name
        let s = one("operations: [notify]\n    targets: ['/cse-in/**', '/cse-in']");
        let d = req("a")
            .http("POST", Some("application/json;ty=47"))
            .at("/~/id-mn/cse-mn")
            .on(&s);
        assert_eq!(d, by_rule(DENY, 0));
    }

    #[test]
    fn explain_shows_the_part_that_decides() {
        let s = set(concat!(
            "default: allow\n",
            "rules:\n",
            "  - {name: no-deletes, operations: [delete], targets: ['/cse-in/**'], effect: deny}\n",
        ));
        let r = req("a")
            .http("POST", Some("application/json;ty=65"))
            .at("/cse-in/pub");
        let e = r.with(|q| s.explain(q));
        assert_eq!(e.decision, r.on(&s));
        assert_eq!((e.parts.len(), e.judged), (2, 1));
        let text = e.render(&s);
        assert!(
            text.contains("part 2: what the created <action> makes the CSE do: any operation"),
            "{text}"
        );
        assert!(text.contains("rules for part 2:\n1. no-deletes: operations delete (matched), targets /cse-in/** (matched)"), "{text}");
        // one part: as before
        let e = req("a").with(|q| s.explain(q));
        assert_eq!((e.parts.len(), e.judged), (1, 0));
        assert!(!e.render(&s).contains("part"));
    }

    #[test]
    fn query_reach_reads_rcn_and_fu_fail_closed() {
        use crate::target::{query_reach, Reach};
        let exact = Reach::default();
        assert_eq!(query_reach(""), exact);
        assert_eq!(query_reach("rcn=1&fu=2&ty=4"), exact);
        assert_eq!(query_reach("rcnx=4&xfu=1&smfx=1&xarp=a"), exact);
        for rcn in [0, 1, 2, 3, 9] {
            assert_eq!(query_reach(&format!("rcn={rcn}")), exact, "{rcn}");
        }
        for q in ["rcn=7", "rcn=", "rcn", "rcn=+7", "rcn=7.0", "fu=x", "arp=a"] {
            assert!(matches!(query_reach(q).result, Scope::Unplaced(_)), "{q}");
        }
        for q in [
            "rcn=4",
            "rcn=5",
            "rcn=6",
            "rcn=8",
            "fu=1",
            "rcn=",
            "rcn",
            "fu=%31",
            "a=1;rcn=4",
            "rcn=4%00",
            "rcn=10",
            "rcn=11",
            "rcn=12",
            "rcn=13",
            "fu=3",
            "fu=4",
            "smf=x",
            "sqi=true",
            "%53mf",
        ] {
            assert_ne!(query_reach(q).result, Scope::Exact, "{q}");
        }
        assert!(query_reach("fu=4").operation && !query_reach("rcn=4").operation);
    }

    #[test]
    fn originator_regexes_in_a_local_sp_relative_form_are_refused() {
        let e =
            compile_err("rules:\n  - {name: r, originators: ['^/id-in/CAdmin$'], effect: deny}\n");
        assert_eq!(e.key, "authorization.rules[0].originators");
        assert!(e.message.contains("canonical"), "{}", e.message);
        // another CSE's originators keep their form
        let s = one("originators: ['^/id-mn/']");
        assert_eq!(req("a").origin(Some("/id-mn/C1")).on(&s), by_rule(DENY, 0));
    }

    #[test]
    fn targets_need_the_local_cse() {
        let c: AuthorizationConfig = serde_yaml_ng::from_str(
            "rules:\n  - {name: ok, identities: [a], effect: deny}\n  - {name: t, targets: [/cse-in], effect: deny}\n",
        )
        .unwrap();
        let e = RuleSet::compile(&c).unwrap_err();
        assert_eq!(e.key, "cse");
        assert!(
            e.message.contains("authorization.rules[1] (t)"),
            "{}",
            e.message
        );
        let c: AuthorizationConfig =
            serde_yaml_ng::from_str("rules:\n  - {name: ok, identities: [a], effect: deny}\n")
                .unwrap();
        assert!(RuleSet::compile(&c).is_ok());
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
            ("~cse-in/x", GLUED_MARKER),
            ("_id-in/cse-in", GLUED_MARKER),
            ("/~id-in/cse-in", GLUED_MARKER),
            ("/~/id-in/cse-in", MARKER),
            ("//_sp/id-in", GLUED_MARKER),
            ("//sp/~/x", MARKER),
            ("cse-in/secret#lbl", FRAGMENT),
            ("/id-mn/cse-mn/private?rcn=4", QUERY),
            ("cse-in/x;y", PATH_PARAMETER),
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
