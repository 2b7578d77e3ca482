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
//!   - `originators`: a regex matches the bound originator (what the CSE receives; canonical
//!     with a local CSE, `crate::cse::LocalCse::originator`). A request without an originator
//!     (anonymous) never matches an `originators` condition.
//!   - `operations`: the request's operation is one of them. A request without an operation
//!     (an HTTP method outside the binding) never matches.
//!   - `resource_types`: the request's `ty` is one of them. Only creates carry `ty`; a request
//!     without one never matches.
//!   - `targets`: a target pattern matches the request target, read in canonical form; what
//!     the proxy cannot place is read fail-closed by the rule's effect (below).
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
//!   which some servers strip: `..;/`), a raw `#`, an encoded `#`, `?` or `;` (a CSE reads them
//!   as the end of the target: ACME answers `/x%23lbl` as a partial retrieve of `/x`, and sends
//!   `%3F`/`%3B` on as a query or path parameters when it forwards to another CSE), an empty
//!   segment (`//`), a control character
//!   after decoding, an invalid percent-escape, non-UTF-8 after decoding, a first segment
//!   that decodes to `~` or `_` without being written so, or an ID segment (the first; the
//!   CSE-ID; the SP-ID) that starts with `~` or `_` (`/~cse-in`, `/_id-in/…`: a marker glued to
//!   the ID for some CSEs). One trailing slash is dropped: `/cse-in/` is the target `/cse-in`.
//! * Forms (TS-0009): CSE-relative `/cse-in/…`, SP-relative `/~/id-in/cse-in/…`, absolute
//!   `/_/sp.example.com/id-in/cse-in/…`. `/~` and `/_` alone are refused (incomplete).
//!   WebSocket primitives ([`primitive_target`]) write them `cse-in/…`, `/id-in/cse-in/…` and
//!   `//sp.example.com/id-in/cse-in/…`; they map to the same targets, without percent-decoding
//!   but with the same refusals of dot and empty segments, backslashes, control characters and
//!   `#`, `?`, `;`, and no ID segment of a `to` may start with `~` or `_`.
//! * Canonical form (`crate::target::canonical`, with the local CSE of the `cse` section, which
//!   `targets` need): every form of a target of the local CSE, `-` for its CSEBase name, is the
//!   CSE-relative `/cse-in/…` ([`RuleSet::http_target`], [`RuleSet::primitive_target`] are the
//!   one way requests get there); another CSE of the local SP is SP-relative. Patterns are
//!   written in any form and made canonical the same way (`*` as CSE-ID or SP-ID expands to the
//!   local CSE and the others); a pattern of the local CSE must start with the CSEBase.
//! * Scopes ([`Scope`]): a target the proxy cannot place (unstructured resource ID, fan-out
//!   point) matches every `deny` rule with `targets` and no `allow` rule with `targets`; a
//!   retrieve whose result includes descendants (`rcn` 4, 5, 6, 8, `fu=1`) matches a `deny`
//!   rule whose pattern matches the target or a descendant, an `allow` rule whose pattern ends
//!   in `**` and matches the target (covers the subtree).
//! * Target patterns are decoded; a literal segment matches
//!   exactly (case-sensitive), `*` exactly one segment, `**` (last segment only) any tail of zero
//!   or more segments: `/cse-in/*` matches `/cse-in/x` but not `/cse-in` nor `/cse-in/x/y`;
//!   `/cse-in/**` matches `/cse-in` and `/cse-in/x/y`, `/**` every CSE-relative target. `*`
//!   inside a segment (`Cae-*`), `%`, `?`, `#`, `;`, a trailing slash, empty or dot segments are
//!   configuration errors.
//!
//! `decide` does not allocate: the regexes of all rules are searched together, once per request
//! and only when a rule gets to them (per-thread result buffers); roles are bits when the rules
//! name at most 64; a target keeps its segments' positions.

mod engine;
mod explain;

// moved to `crate::onem2m::operation`; kept here for the benches and older callers
pub use crate::onem2m::operation::{content_type_ty, http_operation};
pub use crate::target::{
    parse_target, primitive_target, Params, Scope, Target, TargetError, TargetForm,
};
pub use engine::{Decision, Request, RuleSet, DEFAULT_RULE};
pub use explain::{Explanation, RuleTrace};
