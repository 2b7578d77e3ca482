//! Bearer tokens: a YAML file of token SHA-256 hashes, each bound to its originator(s).
//!
//! ```yaml
//! tokens:
//!   - name: gateway-1                 # shown in logs, never the token
//!     sha256: "<hex sha256 of the token>"
//!     originator: CgatewayA
//!     originators: ["CgatewayA-*"]   # optional: further originator patterns
//!     expires: 2027-06-30T00:00:00Z   # optional, RFC 3339
//! ```

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::tokens_yaml::{self, RawToken};
use super::CredentialError;
use crate::originator_syntax::{validate_originator, OriginatorPattern};

/// One token of the file, as [`TokenFile::lookup`] finds it (borrowed from the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEntry<'a> {
    pub name: &'a str,
    pub originator: &'a str,
    /// Further originator patterns (`*` matches any run of characters), as written.
    pub extra_originators: &'a [String],
    pub expires: Option<SystemTime>,
    also_allowed: &'a [OriginatorPattern],
}

impl<'a> TokenEntry<'a> {
    /// `extra_originators`, parsed.
    pub fn also_allowed(&self) -> &'a [OriginatorPattern] {
        self.also_allowed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLookup<'a> {
    Valid(TokenEntry<'a>),
    Expired(TokenEntry<'a>),
    Unknown,
}

/// The tokens, compactly: a large file is held by the proxy for as long as it is in force, and
/// twice during a reload. Per token: its digest and index in the map, one [`Stored`], and its
/// name and originator in the shared `text`; only tokens with `originators` have more.
#[derive(Default)]
pub struct TokenFile {
    /// Token digest -> index in `tokens` (file order).
    by_digest: HashMap<[u8; 32], usize>,
    tokens: Vec<Stored>,
    /// Name then originator of every token, back to back in file order.
    text: String,
    extras: Vec<Extra>,
}

struct Stored {
    /// Ends of the name and of the originator in `text`; the name starts where the previous
    /// token's originator ends.
    name_end: usize,
    end: usize,
    expires: Option<SystemTime>,
    /// 1 + index in `extras`, or 0.
    extra: usize,
}

struct Extra {
    text: Vec<String>,
    patterns: Vec<OriginatorPattern>,
}

impl TokenFile {
    /// Parse and validate the file's content; `source` only names the file in errors.
    pub fn parse(source: &Path, content: &str) -> Result<Self, CredentialError> {
        let syntax = |message: String| CredentialError::TokensSyntax {
            path: source.to_owned(),
            message,
        };
        if content.trim().is_empty() {
            return Err(syntax(
                "expected a mapping with a `tokens` list, found an empty file".into(),
            ));
        }
        let raw = tokens_yaml::tokens(content)
            .map_err(|e| syntax(without_quoted_values(&e.to_string())))?;
        Self::build(source, &raw)
    }

    /// Check the entries in order (the first problem is the error) and keep them.
    fn build(source: &Path, raw: &[RawToken<'_>]) -> Result<Self, CredentialError> {
        let text_len = raw.iter().map(|t| t.name.len() + t.originator.len()).sum();
        let mut file = TokenFile {
            by_digest: HashMap::with_capacity(raw.len()),
            tokens: Vec::with_capacity(raw.len()),
            text: String::with_capacity(text_len),
            extras: Vec::new(),
        };
        let mut names: HashMap<&str, usize> = HashMap::with_capacity(raw.len());
        for (index, token) in raw.iter().enumerate() {
            let error = |message: String| CredentialError::TokenEntry {
                path: source.to_owned(),
                index,
                name: token.name.to_string(),
                message,
            };
            let name: &str = &token.name;
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(error(
                    "expected a non-empty name without control characters".into(),
                ));
            }
            if let Some(other) = names.insert(name, index) {
                return Err(error(format!(
                    "expected a unique name, tokens[{other}] has the same"
                )));
            }
            let digest = parse_digest(&token.sha256).ok_or_else(|| {
                error("expected sha256 as 64 hexadecimal characters (the token's SHA-256)".into())
            })?;
            match file.by_digest.entry(digest) {
                Entry::Occupied(other) => {
                    return Err(error(format!(
                        "expected a unique sha256, tokens[{}] has the same",
                        other.get()
                    )))
                }
                Entry::Vacant(slot) => {
                    slot.insert(index);
                }
            }
            validate_originator(&token.originator)
                .map_err(|m| error(format!("originator: {m}")))?;
            let patterns = token
                .originators
                .iter()
                .enumerate()
                .map(|(n, pattern)| {
                    OriginatorPattern::parse(pattern)
                        .map_err(|m| error(format!("originators[{n}]: {m}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let expires = match &token.expires {
                None => None,
                // an empty value is a mistake, never "does not expire"
                Some(None) => {
                    return Err(error(
                        "expires is empty: expected an RFC 3339 time like 2027-06-30T00:00:00Z, or no expires key for a token that does not expire".into(),
                    ))
                }
                Some(Some(text)) => Some(parse_expires(text).ok_or_else(|| {
                    error("expected expires as an RFC 3339 time like 2027-06-30T00:00:00Z".into())
                })?),
            };
            let extra = if patterns.is_empty() {
                0
            } else {
                file.extras.push(Extra {
                    text: token.originators.iter().map(|p| p.to_string()).collect(),
                    patterns,
                });
                file.extras.len()
            };
            file.text.push_str(name);
            let name_end = file.text.len();
            file.text.push_str(&token.originator);
            file.tokens.push(Stored {
                name_end,
                end: file.text.len(),
                expires,
                extra,
            });
        }
        file.extras.shrink_to_fit();
        Ok(file)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> impl Iterator<Item = TokenEntry<'_>> {
        (0..self.tokens.len()).map(|index| self.entry(index))
    }

    fn entry(&self, index: usize) -> TokenEntry<'_> {
        let stored = &self.tokens[index];
        let start = match index.checked_sub(1) {
            Some(previous) => self.tokens[previous].end,
            None => 0,
        };
        let (extra_originators, also_allowed) = match stored.extra.checked_sub(1) {
            Some(i) => (&self.extras[i].text[..], &self.extras[i].patterns[..]),
            None => (&[][..], &[][..]),
        };
        TokenEntry {
            name: &self.text[start..stored.name_end],
            originator: &self.text[stored.name_end..stored.end],
            extra_originators,
            expires: stored.expires,
            also_allowed,
        }
    }

    /// Find the entry of a presented token; expired at `now` when `expires <= now`.
    pub fn lookup(&self, token: &[u8], now: SystemTime) -> TokenLookup<'_> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        match self.by_digest.get_key_value(&digest) {
            // The map finds the candidate; the constant-time compare is what confirms it.
            Some((stored, &index)) if bool::from(stored.ct_eq(&digest)) => {
                let entry = self.entry(index);
                if entry.expires.is_some_and(|expires| expires <= now) {
                    TokenLookup::Expired(entry)
                } else {
                    TokenLookup::Valid(entry)
                }
            }
            _ => TokenLookup::Unknown,
        }
    }
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

fn parse_digest(hex_text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut digest).ok()?;
    Some(digest)
}

/// An RFC 3339 time: `2027-06-30T00:00:00Z`, with optional fractional seconds, a numeric
/// offset such as `+02:00`, or no zone at all (taken as UTC).
pub fn parse_expires(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    // humantime reads UTC only; a numeric offset is applied here.
    match split_offset(text) {
        Some((local, east, offset)) => {
            let local = humantime::parse_rfc3339_weak(local).ok()?;
            if east {
                local.checked_sub(offset)
            } else {
                local.checked_add(offset)
            }
        }
        None => humantime::parse_rfc3339_weak(text).ok(),
    }
}

/// Split `…T12:00:00+02:00` into the local time, whether the offset is east of UTC, and its size.
fn split_offset(text: &str) -> Option<(&str, bool, Duration)> {
    let (local, zone) = text.split_at_checked(text.len().checked_sub(6)?)?;
    let z = zone.as_bytes();
    let east = match z[0] {
        b'+' => true,
        b'-' => false,
        _ => return None,
    };
    let digits = [z[1], z[2], z[4], z[5]];
    if z[3] != b':' || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let [h1, h2, m1, m2] = digits.map(|d| u64::from(d - b'0'));
    let (hours, minutes) = (h1 * 10 + h2, m1 * 10 + m2);
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((
        local,
        east,
        Duration::from_secs(hours * 3600 + minutes * 60),
    ))
}

/// serde's messages quote the offending value ("invalid type: string \"...\""), which could be
/// a token pasted in the wrong place: keep the message, drop what is between quotes.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match (c, quoted) {
            ('"', false) => {
                quoted = true;
                out.push_str("\"…");
            }
            ('"', true) => {
                quoted = false;
                out.push('"');
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

/// A new random token (256 bits, URL-safe base64 without padding) and its SHA-256 in hex,
/// which is all the tokens file keeps. Fails only if the OS random number generator does.
pub fn generate_token() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    Ok((token, digest))
}

/// One entry of the `tokens:` list, indented to be pasted under it.
pub fn yaml_entry(name: &str, sha_hex: &str, originator: &str, expires: Option<&str>) -> String {
    let mut entry = format!(
        "  - name: {}\n    sha256: {}\n    originator: {}\n",
        yaml_quote(name),
        yaml_quote(sha_hex),
        yaml_quote(originator)
    );
    if let Some(expires) = expires {
        entry.push_str(&format!("    expires: {}\n", yaml_quote(expires)));
    }
    entry
}

/// A YAML double-quoted scalar: safe whatever the text looks like.
fn yaml_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// sha256("other"): a well-formed digest no fixture token has.
    const ONE: &str = "d9298a10d1b0735837dc4bd85dac641b0f3cef27a47e5d53a54f2f3f5b2fcffa";

    fn path() -> PathBuf {
        PathBuf::from("/etc/proxy/tokens.yaml")
    }

    fn sha(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn parse(content: &str) -> Result<TokenFile, CredentialError> {
        TokenFile::parse(&path(), content)
    }

    fn at(text: &str) -> SystemTime {
        parse_expires(text).expect("valid time")
    }

    fn sample() -> String {
        format!(
            "tokens:\n\
             \x20 - name: gateway-1   # a comment\n\
             \x20   sha256: \"{}\"\n\
             \x20   originator: CgatewayA\n\
             \x20   originators: [\"CgatewayA-*\", \"/id-mn/*\"]\n\
             \x20   expires: 2027-06-30T00:00:00Z\n\
             \x20 - name: forever\n\
             \x20   sha256: {}\n\
             \x20   originator: Cforever\n",
            sha("token-one"),
            sha("token-two").to_uppercase()
        )
    }

    #[test]
    fn lookup_valid_expired_unknown() {
        let file = parse(&sample()).expect("valid");
        assert_eq!(file.len(), 2);
        let before = at("2027-06-29T23:59:59Z");
        let TokenLookup::Valid(entry) = file.lookup(b"token-one", before) else {
            panic!("expected valid");
        };
        assert_eq!(entry.name, "gateway-1");
        assert_eq!(entry.originator, "CgatewayA");
        assert_eq!(entry.extra_originators, ["CgatewayA-*", "/id-mn/*"]);
        assert_eq!(entry.expires, Some(at("2027-06-30T00:00:00Z")));

        let expiry = at("2027-06-30T00:00:00Z");
        assert!(
            matches!(file.lookup(b"token-one", expiry), TokenLookup::Expired(e) if e.name == "gateway-1")
        );
        // upper-case hex in the file; no expiry
        assert!(
            matches!(file.lookup(b"token-two", at("2999-01-01T00:00:00Z")), TokenLookup::Valid(e) if e.expires.is_none())
        );
        for wrong in [&b"token-on"[..], b"token-one ", b"", b"TOKEN-ONE"] {
            assert_eq!(file.lookup(wrong, before), TokenLookup::Unknown);
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let entry = sample().replace(
            "originator: Cforever",
            "originator: Cforever\n    scope: all",
        );
        let err = parse(&entry).expect_err("unknown key").to_string();
        assert!(err.contains("unknown field `scope`"), "{err}");
        assert!(err.starts_with("/etc/proxy/tokens.yaml: "), "{err}");
        let top = format!("{}version: 2\n", sample());
        assert!(parse(&top)
            .expect_err("unknown key")
            .to_string()
            .contains("`version`"));
    }

    #[test]
    fn invalid_entries_name_index_and_expectation_never_the_hash() {
        let good = sha("a");
        let cases: &[(String, &str)] = &[
            (
                format!("- {{name: '', sha256: {good}, originator: C}}"),
                "non-empty name",
            ),
            (
                format!("- {{name: \"a\\tb\", sha256: {good}, originator: C}}"),
                "control",
            ),
            (
                format!("- {{name: x, sha256: {}, originator: C}}", sha("b")),
                "unique name, tokens[0]",
            ),
            (
                format!("- {{name: y, sha256: {good}, originator: C}}"),
                "unique sha256, tokens[0]",
            ),
            (
                format!("- {{name: y, sha256: {}, originator: C}}", &ONE[..63]),
                "64 hexadecimal",
            ),
            (
                format!("- {{name: y, sha256: {}g, originator: C}}", &ONE[..63]),
                "64 hexadecimal",
            ),
            (
                format!("- {{name: y, sha256: {ONE}, originator: ''}}"),
                "non-empty originator",
            ),
            (
                format!("- {{name: y, sha256: {ONE}, originator: 'C x'}}"),
                "visible ASCII",
            ),
            // the one originator rule: a CSE could split "Cae-1,CAdmin" into two originators
            (
                format!("- {{name: y, sha256: {ONE}, originator: 'Cae-1,CAdmin'}}"),
                "list or quoting",
            ),
            (
                format!(
                    "- {{name: y, sha256: {ONE}, originator: C, originators: [ok, \"b\\u0000\"]}}"
                ),
                "originators[1]",
            ),
            (
                format!("- {{name: y, sha256: {ONE}, originator: C, expires: 'next year'}}"),
                "RFC 3339",
            ),
        ];
        for (bad, expected) in cases {
            let content = format!("tokens:\n- {{name: x, sha256: {good}, originator: C}}\n{bad}\n");
            let err = parse(&content).expect_err(bad);
            let shown = err.to_string();
            assert!(
                matches!(err, CredentialError::TokenEntry { index: 1, .. }),
                "{shown}"
            );
            assert!(
                shown.contains("tokens[1]") && shown.contains(expected),
                "{bad}: {shown}"
            );
            assert!(
                !shown.contains(&good[..16]) && !shown.contains(&ONE[..16]),
                "{shown}"
            );
        }
    }

    #[test]
    fn malformed_documents_are_syntax_errors() {
        for content in ["", "  \n", "tokens: 3\n", "- a\n", "tokens:\n  - name: [\n"] {
            let err = parse(content).expect_err(content);
            assert!(matches!(err, CredentialError::TokensSyntax { .. }), "{err}");
        }
        let missing = format!("tokens:\n  - name: x\n    sha256: {ONE}\n");
        let err = parse(&missing).expect_err("no originator").to_string();
        assert!(err.contains("missing field `originator`"), "{err}");
        assert!(parse("tokens: []\n").expect("empty list").is_empty());
    }

    #[test]
    fn scalars_that_look_like_numbers_are_names() {
        let file = parse(&format!(
            "tokens:\n  - {{name: 123, sha256: {ONE}, originator: C1}}\n"
        ))
        .expect("valid");
        let TokenLookup::Valid(entry) = file.lookup(b"other", SystemTime::now()) else {
            panic!("expected valid");
        };
        assert_eq!(entry.name, "123");
    }

    #[test]
    fn expires_accepts_rfc3339_variants() {
        let utc = at("2027-06-30T00:00:00Z");
        assert_eq!(at("2027-06-30T02:00:00+02:00"), utc);
        assert_eq!(at("2027-06-29T19:30:00-04:30"), utc);
        assert_eq!(at("2027-06-30T00:00:00"), utc);
        assert_eq!(at("2027-06-30T00:00:00.000Z"), utc);
        for bad in [
            "2027-06-30",
            "tomorrow",
            "2027-06-30T00:00:00+24:00",
            "2027-13-01T00:00:00Z",
            "",
        ] {
            assert_eq!(parse_expires(bad), None, "{bad}");
        }
    }

    #[test]
    fn generated_token_round_trips_through_yaml_and_lookup() {
        let (token, digest) = generate_token().unwrap();
        assert_eq!(token.len(), 43);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(digest, sha(&token));
        assert_ne!(generate_token().unwrap().0, token);

        let entry = yaml_entry(
            "gw \"one\"\\",
            &digest,
            "CgatewayA",
            Some("2999-01-01T00:00:00Z"),
        );
        assert!(!entry.contains(&token));
        let file = parse(&format!("tokens:\n{entry}")).expect("valid");
        let TokenLookup::Valid(found) = file.lookup(token.as_bytes(), SystemTime::now()) else {
            panic!("expected valid");
        };
        assert_eq!(found.name, "gw \"one\"\\");
        assert_eq!(found.originator, "CgatewayA");
        assert_eq!(
            file.lookup(token.as_bytes(), at("2999-01-01T00:00:00Z")),
            TokenLookup::Expired(found)
        );

        let plain = yaml_entry("n", &digest, "C", None);
        assert!(!plain.contains("expires"));
        assert!(parse(&format!("tokens:\n{plain}")).is_ok());
    }

    #[test]
    fn yaml_quote_escapes_controls() {
        assert_eq!(yaml_quote("a\nb\u{1b}"), "\"a\\u000Ab\\u001B\"");
        let entry = yaml_entry("line\nbreak", ONE, "C", None);
        let err = parse(&format!("tokens:\n{entry}")).expect_err("control in name");
        assert!(err.to_string().contains("control"), "{err}");
    }

    #[test]
    fn debug_shows_no_digest() {
        let file = parse(&sample()).expect("valid");
        assert_eq!(format!("{file:?}"), "TokenFile { tokens: 2, .. }");
    }
}
