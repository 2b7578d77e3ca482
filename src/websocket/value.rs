//! A WebSocket message as the proxy decoded it, and the only form in which the proxy sends one
//! on: strict decoders (JSON per RFC 8259, well-formed CBOR with text keys) into one tree, and
//! canonical encoders out of it. What the CSE receives is this tree re-encoded, never the
//! client's bytes, so a CSE parser more lenient than the proxy's has nothing left to read
//! another way (comments, duplicate keys, tagged keys, odd escapes).
//!
//! JSON out: no whitespace; every string escaped so that `/`, `*`, `#` and `;` never appear as
//! such (`\/`, `\u002a`, `\u0023`, `\u003b`), nor anything outside printable ASCII (`\uXXXX`,
//! surrogate pairs above U+FFFF): no comment marker of any stripper (`/* */`, `//`, `#`, `;;`)
//! can be found in the text, even by one that has lost track of where strings end.
//! CBOR out: definite lengths, shortest heads, no tags.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use minicbor::data::Type;
use minicbor::Decoder;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The reason a message cannot be decoded; safe to send back to the client.
pub type Invalid = &'static str;

/// Deepest nesting accepted (serde_json's own recursion limit, used for CBOR too).
pub const MAX_DEPTH: usize = 128;

/// Most items (values, keys included) in one message. A decoded item takes ~32 bytes whatever
/// its encoded size (one byte in CBOR): this bounds what a message costs in memory beyond
/// `websocket.max_message`, far above what a request primitive holds.
pub const MAX_ITEMS: usize = 65_536;

const DUPLICATE: Invalid = "duplicate key in the primitive";
const TOO_DEEP: Invalid = "primitive nested too deeply";
const NOT_JSON: Invalid = "not a JSON object primitive (RFC 8259)";
const NOT_CBOR: Invalid = "not a well-formed CBOR map primitive";
const TAG: Invalid = "CBOR tags are not accepted in a primitive";
const TAGGED_KEY: Invalid = "a CBOR map key is tagged";
const NON_TEXT_KEY: Invalid = "a CBOR map key is not a text string";
const SIMPLE: Invalid = "CBOR simple values other than false, true and null are not accepted";
const TRAILING: Invalid = "trailing bytes after the primitive";
const TOO_MANY: Invalid = "more than 65536 items in the primitive";

/// CBOR's self-describe tag (RFC 8949 §3.4.6): no meaning beyond "this is CBOR"; accepted on
/// the whole message only, and dropped.
const SELF_DESCRIBE: u64 = 55799;

/// A decoded item. JSON gives all but `Bytes`; integers are exact (JSON: within 64 bits, a
/// larger one is read as a float, as serde_json does), floats are IEEE doubles. Strings and
/// byte strings borrow from the message where they can (no escapes, no chunks).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// CBOR's whole range, -2^64 … 2^64-1.
    Int(i128),
    Float(f64),
    Text(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    Array(Vec<Value<'a>>),
    Map(Map<'a>),
}

/// Map entries in the sender's order; keys are unique.
pub type Map<'a> = Vec<(Cow<'a, str>, Value<'a>)>;

impl Value<'_> {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// Whether `found` holds for any text in `entries` at any depth: keys, strings, and byte
/// strings (a CSE might read those as text too).
pub fn any_text(entries: &Map<'_>, found: &mut impl FnMut(&[u8]) -> bool) -> bool {
    entries
        .iter()
        .any(|(k, v)| found(k.as_bytes()) || any_text_in(v, found))
}

/// Whether `found` holds for any text (or text in an array) under a key in `keys`, at any
/// depth.
pub fn any_keyed_text(
    entries: &Map<'_>,
    keys: &[&str],
    found: &mut impl FnMut(&[u8]) -> bool,
) -> bool {
    entries.iter().any(|(k, v)| {
        (keys.contains(&k.as_ref()) && any_text_in(v, found)) || keyed_in(v, keys, found)
    })
}

fn keyed_in(v: &Value<'_>, keys: &[&str], found: &mut impl FnMut(&[u8]) -> bool) -> bool {
    match v {
        Value::Array(items) => items.iter().any(|i| keyed_in(i, keys, found)),
        Value::Map(entries) => any_keyed_text(entries, keys, found),
        _ => false,
    }
}

fn any_text_in(v: &Value<'_>, found: &mut impl FnMut(&[u8]) -> bool) -> bool {
    match v {
        Value::Text(s) => found(s.as_bytes()),
        Value::Bytes(b) => found(b),
        Value::Array(items) => items.iter().any(|i| any_text_in(i, found)),
        Value::Map(entries) => any_text(entries, found),
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => false,
    }
}

fn has_duplicate(entries: &Map<'_>) -> bool {
    if entries.len() <= 8 {
        return entries
            .iter()
            .enumerate()
            .any(|(i, (k, _))| entries[..i].iter().any(|(other, _)| other == k));
    }
    let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_ref()).collect();
    keys.sort_unstable();
    keys.windows(2).any(|w| w[0] == w[1])
}

// --- JSON in ----------------------------------------------------------------------------------

/// The top-level object of a JSON text. serde_json refuses what RFC 8259 does not allow
/// (comments, trailing commas, control characters in strings, invalid UTF-8, lone surrogates,
/// leading zeros, NaN) and nesting beyond `MAX_DEPTH`; duplicate keys are refused at every level.
pub fn decode_json(payload: &[u8]) -> Result<Map<'_>, Invalid> {
    let items = Cell::new(0);
    let mut d = serde_json::Deserializer::from_slice(payload);
    let decoded = Json(&items)
        .deserialize(&mut d)
        .and_then(|v| d.end().map(|()| v));
    match decoded {
        Ok(Value::Map(map)) => Ok(map),
        Ok(_) => Err(NOT_JSON),
        Err(e) => {
            let text = e.to_string();
            Err(if text.starts_with(DUPLICATE) {
                DUPLICATE
            } else if text.starts_with(TOO_MANY) {
                TOO_MANY
            } else if text.starts_with("recursion limit") {
                TOO_DEEP
            } else {
                NOT_JSON
            })
        }
    }
}

/// One JSON value; counts the items of the whole message in `.0`.
#[derive(Clone, Copy)]
struct Json<'a>(&'a Cell<usize>);

impl Json<'_> {
    fn count<E: de::Error>(self) -> Result<(), E> {
        let n = self.0.get() + 1;
        self.0.set(n);
        if n > MAX_ITEMS {
            return Err(E::custom(TOO_MANY));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Json<'_> {
    type Value = Value<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        self.count()?;
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Json<'_> {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value<'de>, E> {
        Ok(Value::Int(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value<'de>, E> {
        Ok(Value::Int(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value<'de>, E> {
        Ok(Value::Float(n))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value<'de>, E> {
        Ok(Value::Text(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Value<'de>, E> {
        Ok(Value::Text(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        let mut entries = Map::new();
        // keys unescaped: "f\u0072" is `fr`
        while let Some(key) = map.next_key_seed(Key)? {
            self.count()?;
            entries.push((key, map.next_value_seed(self)?));
        }
        if has_duplicate(&entries) {
            return Err(de::Error::custom(DUPLICATE));
        }
        Ok(Value::Map(entries))
    }
}

/// A map key, borrowed from the message unless it has escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

// --- JSON out ---------------------------------------------------------------------------------

/// Bytes written as they are: printable ASCII but `"` `\\` `/` `*` `#` `;`.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        t[b as usize] = !matches!(b, b'"' | b'\\' | b'/' | b'*' | b'#' | b';');
        b += 1;
    }
    t
};

/// The JSON text of a string, escaped as the module doc says.
pub fn json_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let unit = |out: &mut Vec<u8>, u: u16| {
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(HEX[usize::from((u >> shift) & 0xf)]);
        }
    };
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // the run of plain bytes, copied at once
        let run = bytes[i..]
            .iter()
            .position(|b| !PLAIN[usize::from(*b)])
            .unwrap_or(bytes.len() - i);
        out.extend_from_slice(&bytes[i..i + run]);
        i += run;
        let Some(c) = s.get(i..).and_then(|rest| rest.chars().next()) else {
            break;
        };
        i += c.len_utf8();
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '/' => out.extend_from_slice(b"\\/"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    unit(out, *u);
                }
            }
        }
    }
    out.push(b'"');
}

/// The canonical JSON text of a value.
pub fn json_value(v: &Value<'_>, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's own number formatting (itoa, shortest round-trip floats); cannot fail
        // on a Vec, and a float from a JSON text is finite
        Value::Int(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::Float(f) => {
            let _ = serde_json::to_writer(&mut *out, f);
        }
        Value::Text(s) => json_string(s, out),
        // never decoded from JSON; written as numbers so that the encoder is total
        Value::Bytes(b) => {
            let items: Vec<Value<'_>> = b.iter().map(|x| Value::Int((*x).into())).collect();
            json_value(&Value::Array(items), out);
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_value(item, out);
            }
            out.push(b']');
        }
        Value::Map(entries) => {
            out.push(b'{');
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(k, out);
                out.push(b':');
                json_value(item, out);
            }
            out.push(b'}');
        }
    }
}

// --- CBOR in ----------------------------------------------------------------------------------

/// The top-level map of a CBOR item: well-formed (RFC 8949), text strings valid UTF-8, every
/// map key at every level an untagged text string, no duplicate keys, no tag anywhere (but a
/// self-describe tag on the whole message), no simple values but false, true and null, nesting
/// at most `MAX_DEPTH`, nothing after the item.
pub fn decode_cbor(payload: &[u8]) -> Result<Map<'_>, Invalid> {
    let mut d = Decoder::new(payload);
    if d.datatype().map_err(|_| NOT_CBOR)? == Type::Tag {
        let tag = d.tag().map_err(|_| NOT_CBOR)?;
        if tag.as_u64() != SELF_DESCRIBE {
            return Err(TAG);
        }
    }
    let mut items = 0;
    let map = match d.datatype().map_err(|_| NOT_CBOR)? {
        Type::Map | Type::MapIndef => cbor_map(&mut d, 1, &mut items)?,
        _ => return Err(NOT_CBOR),
    };
    if d.position() != payload.len() {
        return Err(TRAILING);
    }
    Ok(map)
}

/// Counts one more item of the message.
fn count(items: &mut usize) -> Result<(), Invalid> {
    *items += 1;
    if *items > MAX_ITEMS {
        return Err(TOO_MANY);
    }
    Ok(())
}

fn cbor_item<'a>(
    d: &mut Decoder<'a>,
    depth: usize,
    items: &mut usize,
) -> Result<Value<'a>, Invalid> {
    if depth > MAX_DEPTH {
        return Err(TOO_DEEP);
    }
    count(items)?;
    let m = |_| NOT_CBOR;
    Ok(match d.datatype().map_err(m)? {
        Type::Bool => Value::Bool(d.bool().map_err(m)?),
        Type::Null => {
            d.null().map_err(m)?;
            Value::Null
        }
        Type::Undefined | Type::Simple => return Err(SIMPLE),
        Type::U8
        | Type::U16
        | Type::U32
        | Type::U64
        | Type::I8
        | Type::I16
        | Type::I32
        | Type::I64
        | Type::Int => Value::Int(i128::from(d.int().map_err(m)?)),
        Type::F16 | Type::F32 | Type::F64 => Value::Float(d.f64().map_err(m)?),
        Type::Bytes => Value::Bytes(Cow::Borrowed(d.bytes().map_err(m)?)),
        Type::BytesIndef => {
            let mut bytes = Vec::new();
            for chunk in d.bytes_iter().map_err(m)? {
                bytes.extend_from_slice(chunk.map_err(m)?);
            }
            Value::Bytes(Cow::Owned(bytes))
        }
        Type::String | Type::StringIndef => Value::Text(cbor_text(d)?),
        Type::Array | Type::ArrayIndef => {
            let len = d.array().map_err(m)?;
            let mut array = Vec::with_capacity(capacity(d, len));
            for _ in 0..len.unwrap_or(u64::MAX) {
                if len.is_none() && at_break(d)? {
                    break;
                }
                array.push(cbor_item(d, depth + 1, items)?);
            }
            Value::Array(array)
        }
        Type::Map | Type::MapIndef => Value::Map(cbor_map(d, depth + 1, items)?),
        Type::Tag => return Err(TAG),
        Type::Break | Type::Unknown(_) => return Err(NOT_CBOR),
    })
}

fn cbor_map<'a>(d: &mut Decoder<'a>, depth: usize, items: &mut usize) -> Result<Map<'a>, Invalid> {
    if depth > MAX_DEPTH {
        return Err(TOO_DEEP);
    }
    let len = d.map().map_err(|_| NOT_CBOR)?;
    let mut entries = Map::with_capacity(capacity(d, len));
    for _ in 0..len.unwrap_or(u64::MAX) {
        if len.is_none() && at_break(d)? {
            break;
        }
        let key = match d.datatype().map_err(|_| NOT_CBOR)? {
            Type::String | Type::StringIndef => {
                count(items)?;
                cbor_text(d)?
            }
            // a lenient decoder would unwrap the tag and see a plain key
            Type::Tag => return Err(TAGGED_KEY),
            _ => return Err(NON_TEXT_KEY),
        };
        let value = cbor_item(d, depth, items)?;
        entries.push((key, value));
    }
    if has_duplicate(&entries) {
        return Err(DUPLICATE);
    }
    Ok(entries)
}

/// A text string, definite (borrowed) or in chunks (joined).
fn cbor_text<'a>(d: &mut Decoder<'a>) -> Result<Cow<'a, str>, Invalid> {
    if d.datatype().map_err(|_| NOT_CBOR)? == Type::String {
        return d.str().map(Cow::Borrowed).map_err(|_| NOT_CBOR);
    }
    let mut text = String::new();
    for chunk in d.str_iter().map_err(|_| NOT_CBOR)? {
        text.push_str(chunk.map_err(|_| NOT_CBOR)?);
    }
    Ok(Cow::Owned(text))
}

/// At the break of an indefinite-length item: consumes it.
fn at_break(d: &mut Decoder) -> Result<bool, Invalid> {
    if d.datatype().map_err(|_| NOT_CBOR)? == Type::Break {
        d.set_position(d.position() + 1);
        return Ok(true);
    }
    Ok(false)
}

/// What to reserve for `len` items: never more than the bytes left could hold.
fn capacity(d: &Decoder, len: Option<u64>) -> usize {
    let left = d.input().len().saturating_sub(d.position());
    len.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX).min(left))
}

// --- CBOR out ---------------------------------------------------------------------------------

/// A CBOR head: major type and argument, shortest form.
pub fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xFF => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xFFFF => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xFFFF_FFFF => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

pub fn cbor_string(s: &str, out: &mut Vec<u8>) {
    cbor_head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The canonical CBOR encoding of a value: definite lengths, shortest heads, floats in single
/// precision when that keeps the value exactly, else double.
pub fn cbor_value(v: &Value<'_>, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0xf6),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        // decoded from CBOR, so within -2^64 … 2^64-1
        Value::Int(n) if *n >= 0 => cbor_head(out, 0, u64::try_from(*n).unwrap_or(u64::MAX)),
        Value::Int(n) => cbor_head(out, 1, u64::try_from(-1 - *n).unwrap_or(u64::MAX)),
        Value::Float(f) if f.is_nan() => out.extend_from_slice(&[0xf9, 0x7e, 0x00]),
        Value::Float(f) if f64::from(*f as f32) == *f => {
            out.push(0xfa);
            out.extend_from_slice(&(*f as f32).to_be_bytes());
        }
        Value::Float(f) => {
            out.push(0xfb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Text(s) => cbor_string(s, out),
        Value::Bytes(b) => {
            cbor_head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            cbor_head(out, 4, items.len() as u64);
            for item in items {
                cbor_value(item, out);
            }
        }
        Value::Map(entries) => {
            cbor_head(out, 5, entries.len() as u64);
            for (k, item) in entries {
                cbor_string(k, out);
                cbor_value(item, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_out(map: &Map<'_>) -> String {
        let mut out = Vec::new();
        json_value(&Value::Map(map.clone()), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_outside_rfc_8259_is_refused() {
        for bad in [
            &br#"{"op":2 /* c */}"#[..],
            br#"{"op":2} // c"#,
            br#"{"op":2,}"#,
            br#"{"op":[1,2,]}"#,
            br#"{"op":02}"#,
            br#"{"op":NaN}"#,
            br#"{'op':2}"#,
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\xff\"}",
            br#"{"a":"\ud800"}"#,
            br#"{"a":"\udc00x"}"#,
            br#"{"a":"\x"}"#,
            b"\xef\xbb\xbf{}",
            br#"[{"op":2}]"#,
            br#""op""#,
            br#"{"op":2} {}"#,
            b"",
        ] {
            assert!(
                decode_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            decode_json(br#"{"a":"\ud83d\ude00"}"#).unwrap()[0].1,
            Value::Text("😀".into())
        );
    }

    #[test]
    fn duplicate_keys_are_refused_at_every_level() {
        for bad in [
            &br#"{"fr":"a","fr":"b"}"#[..],
            br#"{"fr":"a","f\u0072":"b"}"#,
            br#"{"pc":{"m2m:ae":{"rn":"a","rn":"b"}}}"#,
            br#"{"pc":[{"x":1},{"y":1,"y":2}]}"#,
            br#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"a":0}"#,
        ] {
            assert_eq!(
                decode_json(bad),
                Err(DUPLICATE),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(decode_json(deep.as_bytes()), Err(TOO_DEEP));
        let fine = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(decode_json(fine.as_bytes()).is_ok());
    }

    #[test]
    fn json_out_has_no_comment_marker_and_reads_back_the_same() {
        let text = r#"{"a":"\\","b":"/*","n":{"c":"*/ // # ;; é 😀 \u0000 \n","op":4},"e":-1.5e300,"f":[true,null,18446744073709551615,-9223372036854775808]}"#;
        let map = decode_json(text.as_bytes()).unwrap();
        let out = json_out(&map);
        // `/` only as `\/`: never `//` or `/*`; `*` never
        for marker in ["//", "*", "#", ";"] {
            assert!(!out.contains(marker), "{marker} in {out}");
        }
        assert!(out.bytes().all(|b| (0x20..0x7f).contains(&b)), "{out}");
        assert_eq!(decode_json(out.as_bytes()).unwrap(), map);
        let theirs: serde_json::Value = serde_json::from_str(&out).unwrap();
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(theirs, original);
        assert!(out.starts_with(r#"{"a":"\\","b":"\/\u002a","n":{"c":"\u002a\/ \/\/ \u0023 \u003b\u003b \u00e9 \ud83d\ude00 \u0000 \n""#), "{out}");
    }

    fn cbor(v: &ciborium::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    #[test]
    fn cbor_keys_are_untagged_unique_text_at_every_level() {
        use ciborium::Value as C;
        let text = |s: &str| C::Text(s.into());
        let map = |entries: Vec<(C, C)>| C::Map(entries);
        let ok = map(vec![
            (text("op"), C::Integer(2.into())),
            (
                text("pc"),
                map(vec![(
                    text("m2m:cin"),
                    map(vec![(text("con"), C::Bytes(vec![1, 2]))]),
                )]),
            ),
        ]);
        assert!(decode_cbor(&cbor(&ok)).is_ok());
        let cases = [
            (
                map(vec![(
                    C::Tag(55799, Box::new(text("op"))),
                    C::Integer(4.into()),
                )]),
                TAGGED_KEY,
            ),
            (
                map(vec![(
                    C::Tag(256, Box::new(text("op"))),
                    C::Integer(4.into()),
                )]),
                TAGGED_KEY,
            ),
            (
                map(vec![(
                    text("pc"),
                    map(vec![(C::Tag(55799, Box::new(text("x"))), C::Null)]),
                )]),
                TAGGED_KEY,
            ),
            (
                map(vec![(C::Bytes(b"fr".to_vec()), text("CAdmin"))]),
                NON_TEXT_KEY,
            ),
            (map(vec![(C::Integer(1.into()), text("x"))]), NON_TEXT_KEY),
            (
                map(vec![(
                    text("pc"),
                    map(vec![(text("a"), C::Null), (text("a"), C::Null)]),
                )]),
                DUPLICATE,
            ),
            (
                map(vec![(
                    text("pc"),
                    C::Tag(1, Box::new(C::Integer(0.into()))),
                )]),
                TAG,
            ),
            (C::Tag(256, Box::new(map(vec![]))), TAG),
            (C::Array(vec![]), NOT_CBOR),
        ];
        for (v, why) in cases {
            assert_eq!(decode_cbor(&cbor(&v)), Err(why), "{v:?}");
        }
        // the self-describe tag on the whole message is dropped
        let described = C::Tag(55799, Box::new(ok.clone()));
        assert_eq!(decode_cbor(&cbor(&described)), decode_cbor(&cbor(&ok)));
        // undefined and other simple values, trailing bytes, truncation
        assert_eq!(decode_cbor(&[0xa1, 0x61, b'a', 0xf7]), Err(SIMPLE));
        assert_eq!(decode_cbor(&[0xa1, 0x61, b'a', 0xe0]), Err(SIMPLE));
        assert_eq!(decode_cbor(&[0xa0, 0x00]), Err(TRAILING));
        assert_eq!(decode_cbor(&[0xa1, 0x61, b'a']), Err(NOT_CBOR));
        // invalid UTF-8 in a text string
        assert_eq!(decode_cbor(&[0xa1, 0x61, b'a', 0x61, 0xff]), Err(NOT_CBOR));
        // a header claiming 2^63 entries with nothing behind it
        let mut huge = vec![0xbb];
        huge.extend((1u64 << 63).to_be_bytes());
        assert_eq!(decode_cbor(&huge), Err(NOT_CBOR));
    }

    #[test]
    fn cbor_out_is_definite_shortest_and_reads_back_the_same() {
        // {_ "f"+"r" (chunked): "CAdmin", "n": [_ 1, -2^64, 1.5, 0.1, h'00'], "op": 24 in a
        // two-byte head}
        let mut msg = vec![0xbf, 0x7f, 0x61, b'f', 0x61, b'r', 0xff];
        msg.extend([0x66]);
        msg.extend(b"CAdmin");
        msg.extend([0x61, b'n', 0x9f, 0x01, 0x3b]);
        msg.extend([0xff; 8]);
        msg.extend([0xf9, 0x3e, 0x00]); // 1.5 as f16
        msg.push(0xfb);
        msg.extend(0.1f64.to_be_bytes());
        msg.extend([0x41, 0x00, 0xff]);
        msg.extend([0x62, b'o', b'p', 0x19, 0x00, 0x18, 0xff]);
        let map = decode_cbor(&msg).unwrap();
        assert_eq!(map[0], ("fr".into(), Value::Text("CAdmin".into())));
        let mut out = Vec::new();
        cbor_value(&Value::Map(map.clone()), &mut out);
        let mut expected = vec![0xa3, 0x62, b'f', b'r', 0x66];
        expected.extend(b"CAdmin");
        expected.extend([0x61, b'n', 0x85, 0x01, 0x3b]);
        expected.extend([0xff; 8]);
        expected.extend([0xfa, 0x3f, 0xc0, 0x00, 0x00]);
        expected.push(0xfb);
        expected.extend(0.1f64.to_be_bytes());
        expected.extend([0x41, 0x00]);
        expected.extend([0x62, b'o', b'p', 0x18, 0x18]);
        assert_eq!(out, expected);
        assert_eq!(decode_cbor(&out).unwrap(), map);
    }

    #[test]
    fn a_message_of_more_than_max_items_is_refused_in_both_encodings() {
        let json = |n: usize| format!("{{\"a\":[{}0]}}", "0,".repeat(n - 1));
        // the map, its key, the array: 3 items besides the elements
        assert!(decode_json(json(MAX_ITEMS - 3).as_bytes()).is_ok());
        assert_eq!(decode_json(json(MAX_ITEMS - 2).as_bytes()), Err(TOO_MANY));
        let cbor = |n: usize| {
            let mut out = vec![0xa1, 0x61, b'a'];
            cbor_head(&mut out, 4, n as u64);
            out.extend(std::iter::repeat_n(0xf6, n));
            out
        };
        // the key and the array (the top-level map is not an item here)
        assert!(decode_cbor(&cbor(MAX_ITEMS - 2)).is_ok());
        assert_eq!(decode_cbor(&cbor(MAX_ITEMS - 1)), Err(TOO_MANY));
    }

    #[test]
    fn deep_cbor_is_refused_without_deep_recursion() {
        let mut deep = vec![0xa1, 0x61, b'a'];
        deep.extend(std::iter::repeat_n(0x81, 100_000));
        deep.push(0x00);
        assert_eq!(decode_cbor(&deep), Err(TOO_DEEP));
        let mut fine = vec![0xa1, 0x61, b'a'];
        fine.extend(std::iter::repeat_n(0x81, 100));
        fine.push(0x00);
        assert!(decode_cbor(&fine).is_ok());
    }
}
