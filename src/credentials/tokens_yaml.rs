//! The YAML of the tokens file: the `tokens:` list as raw entries, before any check.
//!
//! serde_yaml_ng reads every file, except that files in the plain block form written by
//! `m2m-auth-proxy token` and shown in the documentation are first tried by [`plain`], a reader
//! of that form only: serde_yaml_ng takes ~0.2 s and ~130 MiB of events for 100 000 tokens,
//! [`plain`] a few tens of ms and no copy of the text. It gives up (`None`) on anything outside
//! the form, and serde_yaml_ng then reads the file from the start, so every error message is
//! serde_yaml_ng's. Where it does not give up, it returns exactly what serde_yaml_ng returns;
//! the rules below follow libyaml's scanner (unsafe-libyaml 0.2) and serde_yaml_ng 0.10, and the
//! tests compare both readers on generated and mutated files.
//!
//! The form (`␣` is one space; lines end with `\n` or `\r\n`):
//!
//! ```text
//! [blank and comment lines]
//! tokens:[␣…][␣#comment]
//! {I spaces}-{1+ spaces}key:␣value        one entry starts; its keys sit at column K
//! {K spaces}key:␣value                    more keys of the same entry
//! [blank and comment lines anywhere]
//! ```
//!
//! * keys: `name`, `sha256`, `originator`, `expires` (a scalar each) and `originators` (a
//!   one-line flow sequence `[a, "b", 'c']`), each at most once, `name`, `sha256` and
//!   `originator` present; at least one entry; every entry at the same column I.
//! * scalars end on their line: plain (not starting with an indicator, no `: ` or final `:`,
//!   ended by `␣#` or the end of the line, trailing spaces dropped), double-quoted (libyaml's
//!   escapes) or single-quoted (`''`), followed only by spaces and a `␣#` comment.
//! * nowhere: tabs, control characters, a `\r` not followed by `\n`, C1 controls (U+0080 to
//!   U+009F, NEL among them), U+2028, U+2029, U+FEFF, U+FFFE, U+FFFF: they are line breaks,
//!   indentation or byte-order marks to libyaml, or refused by it.

use std::borrow::Cow;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile<'a> {
    tokens: Vec<RawToken<'a>>,
}

/// One entry of the `tokens:` list as written. The serde path fills it with owned strings
/// (`Cow<str>` deserialises exactly like `String`); [`plain`] borrows from the file's text
/// where no escape was decoded.
#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken<'a> {
    pub name: Cow<'a, str>,
    pub sha256: Cow<'a, str>,
    pub originator: Cow<'a, str>,
    #[serde(default)]
    pub originators: Vec<Cow<'a, str>>,
    /// `None`: no `expires` key; `Some(None)`: the key with an empty or null value.
    #[serde(default, deserialize_with = "present")]
    pub expires: Option<Option<Cow<'a, str>>>,
}

/// A key that is there, whatever its value (null included): serde's `Option` alone reads an
/// empty `expires:` as no key at all, which would make a templating slip mean "never expires".
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The entries of the tokens file's `tokens:` list; errors are serde_yaml_ng's.
pub(super) fn tokens(content: &str) -> Result<Vec<RawToken<'_>>, serde_yaml_ng::Error> {
    match plain(content) {
        Some(tokens) => Ok(tokens),
        None => by_serde(content),
    }
}

fn by_serde(content: &str) -> Result<Vec<RawToken<'_>>, serde_yaml_ng::Error> {
    serde_yaml_ng::from_str::<RawFile>(content).map(|file| file.tokens)
}

/// The entries, if `content` is in the plain form (see the module documentation).
fn plain(content: &str) -> Option<Vec<RawToken<'_>>> {
    if !plain_characters(content) {
        return None;
    }
    let mut lines = content
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    loop {
        let line = lines.next()?;
        if is_blank_or_comment(line) {
            continue;
        }
        if !ends_value(line.strip_prefix("tokens:")?) {
            return None;
        }
        break;
    }
    let mut tokens = Vec::new();
    let mut entry_column = None;
    // the entry being read and the column of its keys
    let mut open: Option<(Entry, usize)> = None;
    for line in lines {
        if is_blank_or_comment(line) {
            continue;
        }
        let body = line.trim_start_matches(' ');
        let column = line.len() - body.len();
        if let Some(after_dash) = body.strip_prefix('-') {
            if column != *entry_column.get_or_insert(column) {
                return None;
            }
            let key_line = after_dash.trim_start_matches(' ');
            if key_line.len() == after_dash.len() {
                return None; // `-x` is a scalar, `-` alone an empty entry
            }
            if let Some((entry, _)) = open.take() {
                tokens.push(entry.finish()?);
            }
            let mut entry = Entry::default();
            entry.key_line(key_line)?;
            open = Some((entry, line.len() - key_line.len()));
        } else {
            match &mut open {
                Some((entry, key_column)) if column == *key_column => entry.key_line(body)?,
                _ => return None,
            }
        }
    }
    tokens.push(open?.0.finish()?);
    Some(tokens)
}

/// No character that libyaml reads as a line break, an indentation or byte-order mark, or
/// refuses; every `\r` is part of a `\r\n`.
fn plain_characters(content: &str) -> bool {
    let bytes = content.as_bytes();
    let ascii_ok = |b: u8| (b' '..=b'~').contains(&b) || b == b'\n';
    if bytes.iter().all(|&b| ascii_ok(b)) {
        return true;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let ok = match b {
            b'\r' => bytes.get(i + 1) == Some(&b'\n'),
            _ if b < 0x80 => ascii_ok(b),
            // U+0080..U+009F: C2 80..C2 9F
            0xC2 => !(0x80..=0x9F).contains(&bytes[i + 1]),
            // U+2028, U+2029: E2 80 A8, E2 80 A9
            0xE2 => !(bytes[i + 1] == 0x80 && matches!(bytes[i + 2], 0xA8 | 0xA9)),
            // U+FEFF: EF BB BF; U+FFFE, U+FFFF: EF BF BE, EF BF BF
            0xEF => !matches!(
                (bytes[i + 1], bytes[i + 2]),
                (0xBB, 0xBF) | (0xBF, 0xBE) | (0xBF, 0xBF)
            ),
            _ => true,
        };
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

fn is_blank_or_comment(line: &str) -> bool {
    let body = line.trim_start_matches(' ');
    body.is_empty() || body.starts_with('#')
}

/// What follows a value on its line: nothing, spaces, or spaces and a comment.
fn ends_value(rest: &str) -> bool {
    let after = rest.trim_start_matches(' ');
    after.is_empty() || (after.starts_with('#') && after.len() < rest.len())
}

/// Characters that cannot start a plain scalar, or start one only in some positions
/// (`-`, `?`, `:`): the fast reader leaves all of them to serde_yaml_ng.
fn is_indicator(c: u8) -> bool {
    matches!(
        c,
        b'-' | b'?'
            | b':'
            | b','
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'#'
            | b'&'
            | b'*'
            | b'!'
            | b'|'
            | b'>'
            | b'\''
            | b'"'
            | b'%'
            | b'@'
            | b'`'
            | b' '
    )
}

#[derive(Default)]
struct Entry<'a> {
    name: Option<Cow<'a, str>>,
    sha256: Option<Cow<'a, str>>,
    originator: Option<Cow<'a, str>>,
    originators: Option<Vec<Cow<'a, str>>>,
    expires: Option<Option<Cow<'a, str>>>,
}

impl<'a> Entry<'a> {
    /// `key: value[ # comment]`, a key this entry has not had yet.
    fn key_line(&mut self, line: &'a str) -> Option<()> {
        let (key, rest) = line.split_once(':')?;
        let value = rest.strip_prefix(' ')?.trim_start_matches(' ');
        fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
            match slot {
                Some(_) => None,
                None => {
                    *slot = Some(value);
                    Some(())
                }
            }
        }
        match key {
            "name" => set(&mut self.name, block_scalar(value)?.0),
            "sha256" => set(&mut self.sha256, block_scalar(value)?.0),
            "originator" => set(&mut self.originator, block_scalar(value)?.0),
            "expires" => {
                // serde_yaml_ng's Option: a plain null is None, a quoted one a string
                let (text, plain) = block_scalar(value)?;
                let is_null = plain && matches!(&*text, "~" | "null" | "Null" | "NULL");
                set(&mut self.expires, (!is_null).then_some(text))
            }
            "originators" => set(&mut self.originators, flow_sequence(value)?),
            _ => None,
        }
    }

    fn finish(self) -> Option<RawToken<'a>> {
        Some(RawToken {
            name: self.name?,
            sha256: self.sha256?,
            originator: self.originator?,
            originators: self.originators.unwrap_or_default(),
            expires: self.expires,
        })
    }
}

/// A scalar that is the whole rest of a `key: ` line; whether it is plain.
fn block_scalar(value: &str) -> Option<(Cow<'_, str>, bool)> {
    match value.as_bytes().first()? {
        b'"' | b'\'' => {
            let (text, rest) = quoted(value)?;
            ends_value(rest).then_some((text, false))
        }
        &c if is_indicator(c) => None,
        _ => {
            // a comment starts at a `#` after a space; trailing spaces are not part of it
            let text = match value.find(" #") {
                Some(i) => &value[..i],
                None => value,
            }
            .trim_end_matches(' ');
            // `: ` or a final `:` would make it a key
            let bytes = text.as_bytes();
            let key_like = bytes
                .iter()
                .enumerate()
                .any(|(i, &b)| b == b':' && matches!(bytes.get(i + 1), None | Some(b' ')));
            (!key_like).then_some((Cow::Borrowed(text), true))
        }
    }
}

/// `[item, item, …]` on one line, then spaces and an optional comment.
fn flow_sequence(value: &str) -> Option<Vec<Cow<'_, str>>> {
    let mut rest = value.strip_prefix('[')?.trim_start_matches(' ');
    let mut items = Vec::new();
    if let Some(after) = rest.strip_prefix(']') {
        return ends_value(after).then_some(items);
    }
    loop {
        let (item, after) = match rest.as_bytes().first()? {
            b'"' | b'\'' => quoted(rest)?,
            &c if is_indicator(c) => return None,
            _ => {
                // plain in a flow: stop at anything that could end or split it
                let end = rest
                    .find([' ', ',', '[', ']', '{', '}', '#', ':'])
                    .unwrap_or(rest.len());
                (Cow::Borrowed(&rest[..end]), &rest[end..])
            }
        };
        items.push(item);
        let after = after.trim_start_matches(' ');
        if let Some(after) = after.strip_prefix(']') {
            return ends_value(after).then_some(items);
        }
        rest = after.strip_prefix(',')?.trim_start_matches(' ');
    }
}

/// A double- or single-quoted scalar closed on this line, and what follows it.
fn quoted(text: &str) -> Option<(Cow<'_, str>, &str)> {
    let quote = text.as_bytes()[0];
    let body = &text[1..];
    let bytes = body.as_bytes();
    // borrowed up to the first escape; decoded into `owned` from there
    let mut owned: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' if quote == b'\'' => {
                if bytes.get(i + 1) == Some(&b'\'') {
                    let out = owned.get_or_insert_with(String::new);
                    out.push_str(&body[copied..=i]);
                    i += 2;
                    copied = i;
                    continue;
                }
                return Some((finish(body, owned, copied, i), &body[i + 1..]));
            }
            b'"' if quote == b'"' => {
                return Some((finish(body, owned, copied, i), &body[i + 1..]));
            }
            b'\\' if quote == b'"' => {
                let out = owned.get_or_insert_with(String::new);
                out.push_str(&body[copied..i]);
                let (decoded, length) = escape(&bytes[i + 1..])?;
                out.push(decoded);
                i += 1 + length;
                copied = i;
            }
            _ => i += 1,
        }
    }
    None // not closed on this line
}

fn finish<'a>(body: &'a str, owned: Option<String>, copied: usize, end: usize) -> Cow<'a, str> {
    match owned {
        None => Cow::Borrowed(&body[..end]),
        Some(mut out) => {
            out.push_str(&body[copied..end]);
            Cow::Owned(out)
        }
    }
}

/// The character of a double-quoted escape (the bytes after `\`), and how many bytes it takes.
fn escape(after: &[u8]) -> Option<(char, usize)> {
    let simple = match *after.first()? {
        b'0' => '\0',
        b'a' => '\x07',
        b'b' => '\x08',
        b't' => '\t',
        b'n' => '\n',
        b'v' => '\x0B',
        b'f' => '\x0C',
        b'r' => '\r',
        b'e' => '\x1B',
        b' ' => ' ',
        b'"' => '"',
        b'/' => '/',
        b'\\' => '\\',
        b'N' => '\u{85}',
        b'_' => '\u{A0}',
        b'L' => '\u{2028}',
        b'P' => '\u{2029}',
        b'x' => return hex_escape(&after[1..], 2),
        b'u' => return hex_escape(&after[1..], 4),
        b'U' => return hex_escape(&after[1..], 8),
        _ => return None,
    };
    Some((simple, 1))
}

fn hex_escape(digits: &[u8], count: usize) -> Option<(char, usize)> {
    let digits = digits.get(..count)?;
    let mut value = 0u32;
    for &d in digits {
        value = value * 16 + char::from(d).to_digit(16)?;
    }
    // surrogates and values above U+10FFFF are errors to libyaml
    Some((char::from_u32(value)?, 1 + count))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both readers on `content`: where the fast one reads the file, serde_yaml_ng must read
    /// exactly the same entries. Returns whether the fast reader took the file.
    fn same(content: &str) -> bool {
        let fast = plain(content);
        let serde = by_serde(content);
        match (&fast, &serde) {
            (None, _) => false,
            (Some(f), Ok(s)) if f == s => true,
            _ => panic!("readers differ on {content:?}:\nfast:  {fast:?}\nserde: {serde:?}"),
        }
    }

    const SHA: &str = "d9298a10d1b0735837dc4bd85dac641b0f3cef27a47e5d53a54f2f3f5b2fcffa";

    #[test]
    fn canonical_forms_are_read_fast_and_alike() {
        let forms = [
            // as `m2m-auth-proxy token` writes it
            format!(
                "tokens:\n  - name: \"gw \\\"one\\\"\\\\\"\n    sha256: \"{SHA}\"\n    \
                 originator: \"CgatewayA\"\n    expires: \"2027-06-30T00:00:00Z\"\n"
            ),
            // as the documentation shows it
            format!(
                "tokens:\n  - name: gateway-1                  # shown in logs\n    \
                 sha256: \"{SHA}\"  # SHA-256\n    originator: CgatewayA            # the X-M2M-Origin\n    \
                 originators: [\"CgatewayA-*\"]     # optional\n    expires: 2027-06-30T00:00:00Z    # optional\n"
            ),
            format!("# head\n\ntokens: # list\n- name: a\n  sha256: {SHA}\n  originator: C\n\n# tail"),
            format!("tokens:\r\n  - name: a b  c\r\n    sha256: '{SHA}'\r\n    originator: C\r\n"),
            format!("tokens:\n  -   originator: C\n      name: 'it''s'\n      sha256: {SHA}\n      originators: []\n"),
            format!("tokens:\n  - name: \"\\u00e9\\x41\\U0001F600\\t\\N\\_\\L\\P\\0\\a\\b\\n\\v\\f\\r\\e\\ \\/\"\n    sha256: {SHA}\n    originator: C\n"),
            format!("tokens:\n  - name: Grüße 中文 😀 a\u{a0}b\n    sha256: {SHA}\n    originator: C:1\n    originators: [ a*, \"b\" , 'c''d',e-f ]\n"),
            format!("tokens:\n  - name: a#b\n    sha256: {SHA}\n    originator: C\n    expires: ~\n  - name: 123\n    sha256: {SHA}\n    originator: C\n    expires: 'null'\n  - name: null\n    sha256: {SHA}\n    originator: true\n    expires: NULL\n"),
        ];
        for content in &forms {
            assert!(same(content), "not read fast: {content:?}");
        }
        // escapes decode like libyaml's
        let tokens = plain(&forms[5]).unwrap();
        assert_eq!(
            tokens[0].name,
            "\u{e9}A\u{1F600}\t\u{85}\u{a0}\u{2028}\u{2029}\0\x07\x08\n\x0B\x0C\r\x1B /"
        );
        assert!(matches!(tokens[0].sha256, Cow::Borrowed(_)));
    }

    #[test]
    fn other_forms_are_left_to_serde() {
        let entry = format!("  - name: a\n    sha256: {SHA}\n    originator: C\n");
        let cases = [
            String::new(),
            "tokens: []\n".into(),
            "tokens:\n".into(),
            format!("tokens:\n- {{name: a, sha256: {SHA}, originator: C}}\n"),
            format!("---\ntokens:\n{entry}"),
            format!("\u{feff}tokens:\n{entry}"),
            format!("tokens:\n{entry}version: 2\n"),
            format!("tokens:\n{entry}tokens:\n{entry}"),
            format!(
                "tokens:\n{}",
                entry.replace("originator: C", "originator: C\n    scope: x")
            ),
            format!(
                "tokens:\n{}",
                entry.replace("name: a", "name: a\n    name: b")
            ),
            format!("tokens:\n{}", entry.replace("    originator: C\n", "")),
            format!("tokens:\n{}", entry.replace("name: a", "name: a\tb")),
            format!("tokens:\n{}", entry.replace("name: a", "name: a\rb")),
            format!("tokens:\n{}", entry.replace("name: a", "name: a\u{85}b")),
            format!("tokens:\n{}", entry.replace("name: a", "name: a\u{2028}b")),
            format!("tokens:\n{}", entry.replace("name: a", "name: a: b")),
            format!("tokens:\n{}", entry.replace("name: a", "name: a:")),
            format!("tokens:\n{}", entry.replace("name: a", "name: &x a")),
            format!("tokens:\n{}", entry.replace("name: a", "name: !!str a")),
            format!("tokens:\n{}", entry.replace("name: a", "name: |\n      a")),
            format!("tokens:\n{}", entry.replace("name: a", "name: a\n      b")),
            format!(
                "tokens:\n{}",
                entry.replace("name: a", "name: \"a\n      b\"")
            ),
            format!(
                "tokens:\n{}",
                entry.replace("name: a", "name: \"a\\\n      b\"")
            ),
            format!("tokens:\n{}", entry.replace("name: a", "name: \"a\\q\"")),
            format!("tokens:\n{}", entry.replace("name: a", "name: \"\\ud800\"")),
            format!("tokens:\n{}", entry.replace("name: a", "name: \"a\"b")),
            format!("tokens:\n{}", entry.replace("name: a", "name: \"a\"#b")),
            format!("tokens:\n{}", entry.replace("name: a", "name:a")),
            format!("tokens:\n{}", entry.replace("name: a", "name:")),
            format!("tokens:\n{}", entry.replace("name: a", "\"name\": a")),
            format!(
                "tokens:\n{}",
                entry.replace("originator: C", "originators:\n      - C")
            ),
            format!(
                "tokens:\n{}",
                entry.replace("originator: C", "originator: C\n    originators: [a,]")
            ),
            format!(
                "tokens:\n{}",
                entry.replace("originator: C", "originator: C\n    originators: [*a]")
            ),
            format!(
                "tokens:\n{}",
                entry.replace("originator: C", "originator: C\n    expires:")
            ),
            format!("tokens:\n{entry}    - name: b\n"),
            format!("tokens:\n{}", entry.replace("  - name", "  -name")),
        ];
        for content in &cases {
            assert!(!same(content), "read fast: {content:?}");
        }
    }

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'s, T: ?Sized>(&mut self, items: &[&'s T]) -> &'s T {
            items[self.below(items.len())]
        }
    }

    /// Scalars the plain form takes in every style.
    const WORDS: &[&str] = &[
        "a",
        "gw-1",
        "Cgw",
        "x y",
        "2027-06-30T00:00:00Z",
        "123",
        "0x1F",
        "true",
        "a#b",
        "a:b",
        "Grüße",
        "中文",
        "😀",
        "a\u{a0}b",
        "it's",
        "q\"q",
        "b\\s",
        "é",
        "C*",
        "/id-mn/*",
    ];
    /// Scalars that libyaml reads otherwise or refuses in some styles.
    const TRICKY: &[&str] = &[
        "null", "~", "NULL", "", " ", "-", "-x", "*", "a,b", "[x]", "{y}", "#", ":", "a: b", "a:",
        "%", "@", "!", "&", "|", ">", "?", "`", "'", "\"", "a #b",
    ];

    /// One scalar in a random style; sometimes one that libyaml reads differently or refuses.
    fn scalar(rng: &mut Rng) -> String {
        let word = if rng.below(25) == 0 {
            rng.pick(TRICKY)
        } else {
            rng.pick(WORDS)
        };
        match rng.below(7) {
            0..=2 => word.to_string(),
            3 => format!("'{}'", word.replace('\'', "''")),
            4 => format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\"")),
            5 => {
                let escape = if rng.below(5) == 0 {
                    rng.pick(&["\\q", "\\x4", "\\uD800", "\\U00110000", "\\u+041", "\\"])
                } else {
                    rng.pick(&[
                        "\\u00e9",
                        "\\x41",
                        "\\U0001F600",
                        "\\t",
                        "\\N",
                        "\\_",
                        "\\L",
                        "\\P",
                        "\\0",
                        "\\e",
                        "\\ ",
                        "\\/",
                        "\\\"",
                        "\\\\",
                        "\\a",
                        "\\b",
                        "\\n",
                        "\\v",
                        "\\f",
                        "\\r",
                        "\\x7f",
                        "\\xE9",
                        "\\u2028",
                    ])
                };
                let word = word.replace('\\', "\\\\").replace('"', "\\\"");
                format!("\"{word}{escape}{word}\"")
            }
            _ => format!(
                "{word}{}",
                rng.pick(&["", " ", "  # c", " #", "#c", " # a: b"])
            ),
        }
    }

    fn flow(rng: &mut Rng) -> String {
        let items: Vec<String> = (0..rng.below(4))
            .map(|_| match rng.below(3) {
                0 => scalar(rng),
                _ => rng
                    .pick(&[
                        "C*", "a", "/id-mn/*", "it's", "Cgw-*-x", "é", "'a b'", "\"x, y\"",
                    ])
                    .to_string(),
            })
            .collect();
        let sep = rng.pick(&[", ", ",", " , "]);
        format!("[{}]{}", items.join(sep), rng.pick(&["", " ", " # c"]))
    }

    /// A file of 1-4 entries in random but mostly plain-form layouts.
    fn generated(rng: &mut Rng) -> String {
        let eol = rng.pick(&["\n", "\n", "\r\n"]);
        let item = " ".repeat(rng.below(3));
        let mut out = String::new();
        if rng.below(4) == 0 {
            out.push_str(&format!("# tokens{eol}{eol}"));
        }
        out.push_str(&format!("tokens:{}{eol}", rng.pick(&["", " ", " # c"])));
        for _ in 0..1 + rng.below(4) {
            let dash = format!("-{}", " ".repeat(1 + rng.below(3)));
            let keys = item.len() + dash.len();
            let mut lines = vec![
                format!("name: {}", scalar(rng)),
                format!("sha256: {}", rng.pick(&[SHA, "\"x\"", "'0'"])),
                format!("originator: {}", scalar(rng)),
            ];
            if rng.below(2) == 0 {
                lines.push(format!("originators: {}", flow(rng)));
            }
            if rng.below(2) == 0 {
                lines.push(format!("expires: {}", scalar(rng)));
            }
            if rng.below(20) == 0 {
                let key = rng.pick(&["name", "scope", "originators", "sha256"]);
                lines.push(format!("{key}: {}", scalar(rng)));
            }
            for n in (1..lines.len()).rev() {
                lines.swap(n, rng.below(n + 1));
            }
            for (n, line) in lines.iter().enumerate() {
                let indent = if n == 0 {
                    format!("{item}{dash}")
                } else {
                    " ".repeat(keys)
                };
                out.push_str(&format!("{indent}{line}{eol}"));
                if rng.below(6) == 0 {
                    out.push_str(&format!("{}# note{eol}", " ".repeat(rng.below(6))));
                }
            }
        }
        out
    }

    const NOISE: &[&str] = &[
        " ", "  ", "#", ":", "-", "'", "\"", "\\", "[", "]", "{", "}", ",", "\n", "\r", "\r\n",
        "\t", "!", "&", "*", "?", "|", ">", "%", "@", "`", "~", "\u{85}", "\u{a0}", "\u{2028}",
        "\u{feff}", "é", "x", "0", "---", "...", "- ", ": ", " #", "\0", "\u{7f}",
    ];

    /// One random edit: insert noise, delete a character, or duplicate / drop a line.
    fn mutated(rng: &mut Rng, content: &str) -> String {
        let boundaries: Vec<usize> = content
            .char_indices()
            .map(|(i, _)| i)
            .chain([content.len()])
            .collect();
        let at = boundaries[rng.below(boundaries.len())];
        match rng.below(4) {
            0 | 1 => format!("{}{}{}", &content[..at], rng.pick(NOISE), &content[at..]),
            2 => {
                let next = content[at..].chars().next().map_or(0, char::len_utf8);
                format!("{}{}", &content[..at], &content[at + next..])
            }
            _ => {
                let lines: Vec<&str> = content.split_inclusive('\n').collect();
                let n = rng.below(lines.len());
                let mut out: Vec<&str> = lines.clone();
                if rng.below(2) == 0 {
                    out.insert(n, lines[n]);
                } else {
                    out.remove(n);
                }
                out.concat()
            }
        }
    }

    /// `TOKENS_YAML_ROUNDS` and `TOKENS_YAML_SEED` run more or other cases than the default.
    fn rounds_and_seed(rounds: usize, seed: u64) -> (usize, Rng) {
        let env = |key: &str| std::env::var(key).ok();
        let rounds = env("TOKENS_YAML_ROUNDS").map_or(rounds, |r| r.parse().expect("a count"));
        let seed = env("TOKENS_YAML_SEED").map_or(seed, |s| s.parse().expect("a u64"));
        (rounds, Rng(seed | 1))
    }

    #[test]
    fn generated_files_read_alike() {
        let (rounds, mut rng) = rounds_and_seed(3_000, 0x9E37_79B9_7F4A_7C15);
        let (mut fast, mut total) = (0, 0);
        for _ in 0..rounds {
            let content = generated(&mut rng);
            total += 1;
            fast += usize::from(same(&content));
        }
        // the generator reaches both readers
        assert!(
            fast > total / 3 && fast < total,
            "{fast} of {total} read fast"
        );
    }

    #[test]
    fn mutated_files_read_alike() {
        let (rounds, mut rng) = rounds_and_seed(1_500, 0x2545_F491_4F6C_DD1D);
        let (mut fast, mut total) = (0, 0);
        for _ in 0..rounds {
            let mut content = generated(&mut rng);
            for _ in 0..1 + rng.below(3) {
                content = mutated(&mut rng, &content);
                total += 1;
                fast += usize::from(same(&content));
            }
        }
        assert!(
            fast > total / 10 && fast < total,
            "{fast} of {total} read fast"
        );
    }
}
