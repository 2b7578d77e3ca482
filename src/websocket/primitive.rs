//! oneM2M primitives in a WebSocket message, JSON (`oneM2M.json`) or CBOR (`oneM2M.cbor`):
//! read the few fields the proxy needs, and change `fr` by splicing its bytes so that the rest
//! of the message reaches the CSE exactly as the client wrote it.

use std::collections::HashSet;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use minicbor::data::Type;
use minicbor::Decoder;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Cbor,
}

/// The fields the proxy needs from a primitive, and where `fr` sits in its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primitive {
    /// Operation (1 create … 6 discovery): present in requests.
    pub op: Option<u64>,
    /// Response status code: present in responses.
    pub rsc: Option<u64>,
    pub fr: Option<String>,
    pub to: Option<String>,
    /// Resource type of a create (`ty`).
    pub ty: Option<u64>,
    /// Result content (`rcn`).
    pub rcn: Option<u64>,
    /// Filter usage inside the filter criteria (`fc.fu`): 1 is discovery.
    pub fu: Option<u64>,
    pub rqi: Option<String>,
    pub rvi: Option<String>,
    encoding: Encoding,
    /// Bytes of `fr`'s value, when present.
    fr_span: Option<Range<usize>>,
    /// JSON: just after the opening brace. CBOR: the map header, or the break byte of an
    /// indefinite-length map.
    insert: Insert,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Insert {
    JsonAfterBrace(usize),
    CborDefinite { header: Range<usize>, entries: u64 },
    CborBeforeBreak(usize),
}

/// The reason a message is not a usable primitive; safe to send back to the client.
pub type Invalid = &'static str;

pub fn parse(encoding: Encoding, payload: &[u8]) -> Result<Primitive, Invalid> {
    let fields = match encoding {
        Encoding::Json => json_fields(payload)?,
        Encoding::Cbor => cbor_fields(payload)?,
    };
    let op = fields.op;
    if let Some(op) = op {
        if !(1..=6).contains(&op) {
            return Err("op must be 1 to 6");
        }
    }
    if op.is_none() && fields.rsc.is_none() {
        return Err("not a oneM2M primitive: neither op nor rsc");
    }
    Ok(Primitive {
        op,
        rsc: fields.rsc,
        fr: fields.fr,
        to: fields.to,
        ty: fields.ty,
        rcn: fields.rcn,
        fu: fields.fu,
        rqi: fields.rqi,
        rvi: fields.rvi,
        encoding,
        fr_span: fields.fr_span,
        insert: fields.insert,
    })
}

impl Primitive {
    /// `payload` (the bytes this was parsed from) with `fr` set to `originator`.
    pub fn with_originator(&self, payload: &[u8], originator: &str) -> Bytes {
        let value = match self.encoding {
            Encoding::Json => json_string(originator),
            Encoding::Cbor => cbor_text(originator),
        };
        let mut out = BytesMut::with_capacity(payload.len() + value.len() + 8);
        if let Some(span) = &self.fr_span {
            out.extend_from_slice(&payload[..span.start]);
            out.extend_from_slice(&value);
            out.extend_from_slice(&payload[span.end..]);
            return out.freeze();
        }
        let key = match self.encoding {
            Encoding::Json => b"\"fr\":".to_vec(),
            Encoding::Cbor => cbor_text("fr"),
        };
        match &self.insert {
            Insert::JsonAfterBrace(at) => {
                // op or rsc is there, so a comma always follows the new entry
                out.extend_from_slice(&payload[..*at]);
                out.extend_from_slice(&key);
                out.extend_from_slice(&value);
                out.extend_from_slice(b",");
                out.extend_from_slice(&payload[*at..]);
            }
            Insert::CborDefinite { header, entries } => {
                out.extend_from_slice(&payload[..header.start]);
                cbor_head(&mut out, 5, entries + 1);
                out.extend_from_slice(&payload[header.end..]);
                out.extend_from_slice(&key);
                out.extend_from_slice(&value);
            }
            Insert::CborBeforeBreak(at) => {
                out.extend_from_slice(&payload[..*at]);
                out.extend_from_slice(&key);
                out.extend_from_slice(&value);
                out.extend_from_slice(&payload[*at..]);
            }
        }
        out.freeze()
    }
}

/// A response primitive refusing `request` as a CSE would: `rqi` and `rvi` echoed, `to` the
/// request's originator, `fr` the CSE, `pc` a `m2m:dbg` reason.
pub fn refusal(
    encoding: Encoding,
    request: &Primitive,
    rsc: u16,
    cse_id: Option<&str>,
    reason: &str,
) -> Bytes {
    let texts = [
        ("rqi", request.rqi.as_deref()),
        ("rvi", request.rvi.as_deref()),
        ("to", request.fr.as_deref()),
        ("fr", cse_id),
    ];
    match encoding {
        Encoding::Json => {
            let mut map = serde_json::Map::new();
            map.insert("rsc".into(), rsc.into());
            for (k, v) in texts {
                if let Some(v) = v {
                    map.insert(k.into(), v.into());
                }
            }
            map.insert("pc".into(), serde_json::json!({ "m2m:dbg": reason }));
            Bytes::from(serde_json::Value::Object(map).to_string())
        }
        Encoding::Cbor => {
            let present = texts.iter().filter(|(_, v)| v.is_some()).count() as u64;
            let mut out = BytesMut::new();
            cbor_head(&mut out, 5, present + 2);
            out.extend_from_slice(&cbor_text("rsc"));
            cbor_head(&mut out, 0, u64::from(rsc));
            for (k, v) in texts {
                if let Some(v) = v {
                    out.extend_from_slice(&cbor_text(k));
                    out.extend_from_slice(&cbor_text(v));
                }
            }
            out.extend_from_slice(&cbor_text("pc"));
            cbor_head(&mut out, 5, 1);
            out.extend_from_slice(&cbor_text("m2m:dbg"));
            out.extend_from_slice(&cbor_text(reason));
            out.freeze()
        }
    }
}

/// What both parsers collect.
struct Fields {
    op: Option<u64>,
    rsc: Option<u64>,
    fr: Option<String>,
    fr_span: Option<Range<usize>>,
    to: Option<String>,
    ty: Option<u64>,
    rcn: Option<u64>,
    fu: Option<u64>,
    rqi: Option<String>,
    rvi: Option<String>,
    insert: Insert,
}

impl Fields {
    fn new(insert: Insert) -> Self {
        Fields {
            op: None,
            rsc: None,
            fr: None,
            fr_span: None,
            to: None,
            ty: None,
            rcn: None,
            fu: None,
            rqi: None,
            rvi: None,
            insert,
        }
    }
}

// --- JSON -----------------------------------------------------------------------------------

/// Top-level entries in order, values left raw (borrowed from the payload).
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                // String keys: escapes decoded, so "f\u0072" is seen as "fr"
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    entries.push((k, v));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}

fn json_fields(payload: &[u8]) -> Result<Fields, Invalid> {
    let entries: Entries =
        serde_json::from_slice(payload).map_err(|_| "not a JSON object primitive")?;
    let brace = payload
        .iter()
        .position(|b| *b == b'{')
        .ok_or("not a JSON object primitive")?;
    let mut fields = Fields::new(Insert::JsonAfterBrace(brace + 1));
    let mut seen = HashSet::new();
    for (key, raw) in entries.0 {
        if !seen.insert(key.clone()) {
            return Err("duplicate key in the primitive");
        }
        let text = raw.get();
        match key.as_str() {
            "op" => {
                fields.op = Some(serde_json::from_str(text).map_err(|_| "op must be an integer")?)
            }
            "rsc" => {
                fields.rsc = Some(serde_json::from_str(text).map_err(|_| "rsc must be an integer")?)
            }
            "fr" => {
                let v: String = serde_json::from_str(text).map_err(|_| "fr must be a string")?;
                // the raw value is a slice of the payload: its offset is the span
                let start = text.as_ptr() as usize - payload.as_ptr() as usize;
                fields.fr_span = Some(start..start + text.len());
                fields.fr = Some(v);
            }
            "to" => fields.to = Some(json_str(text, "to must be a string")?),
            "ty" => {
                fields.ty = Some(serde_json::from_str(text).map_err(|_| "ty must be an integer")?)
            }
            "rqi" => fields.rqi = Some(json_str(text, "rqi must be a string")?),
            "rvi" => fields.rvi = Some(json_str(text, "rvi must be a string")?),
            "rcn" => fields.rcn = Some(json_uint(text, "rcn must be an integer")?),
            "fc" => fields.fu = json_fu(text)?,
            _ => {}
        }
    }
    Ok(fields)
}

fn json_uint(raw: &str, err: Invalid) -> Result<u64, Invalid> {
    serde_json::from_str(raw).map_err(|_| err)
}

/// `fu` of a filter criteria object (the rules read it: 1 is discovery).
fn json_fu(raw: &str) -> Result<Option<u64>, Invalid> {
    const FC: Invalid = "fc must be an object";
    let entries: Entries = serde_json::from_str(raw).map_err(|_| FC)?;
    let mut fu = None;
    for (key, value) in entries.0 {
        if key == "fu" {
            if fu.is_some() {
                return Err("duplicate key in the primitive");
            }
            fu = Some(json_uint(value.get(), "fu must be an integer")?);
        }
    }
    Ok(fu)
}

fn json_str(raw: &str, err: Invalid) -> Result<String, Invalid> {
    serde_json::from_str(raw).map_err(|_| err)
}

fn json_string(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec())
}

// --- CBOR -----------------------------------------------------------------------------------

fn cbor_fields(payload: &[u8]) -> Result<Fields, Invalid> {
    const NOT_A_MAP: Invalid = "not a CBOR map primitive";
    let mut d = Decoder::new(payload);
    if d.datatype().map_err(|_| NOT_A_MAP)? != Type::Map
        && d.datatype().map_err(|_| NOT_A_MAP)? != Type::MapIndef
    {
        return Err(NOT_A_MAP);
    }
    let entries = d.map().map_err(|_| NOT_A_MAP)?;
    let header = 0..d.position();
    let mut fields = Fields::new(match entries {
        Some(n) => Insert::CborDefinite { header, entries: n },
        None => Insert::CborBeforeBreak(0),
    });
    let mut seen = HashSet::new();
    let mut read = 0u64;
    loop {
        match entries {
            Some(n) if read == n => break,
            None if d.datatype().map_err(|_| NOT_A_MAP)? == Type::Break => {
                fields.insert = Insert::CborBeforeBreak(d.position());
                d.skip().map_err(|_| NOT_A_MAP)?;
                break;
            }
            _ => {}
        }
        read += 1;
        let key = match d.datatype().map_err(|_| NOT_A_MAP)? {
            Type::String => d.str().map_err(|_| NOT_A_MAP)?.to_owned(),
            // a CSE would join the chunks: "f" "r" would be `fr` unseen by a simple check
            Type::StringIndef => return Err("indefinite-length text keys are not supported"),
            _ => {
                // keys that are not text cannot be a field the proxy reads
                d.skip().map_err(|_| NOT_A_MAP)?;
                d.skip().map_err(|_| NOT_A_MAP)?;
                continue;
            }
        };
        if !seen.insert(key.clone()) {
            return Err("duplicate key in the primitive");
        }
        let start = d.position();
        match key.as_str() {
            "op" => fields.op = Some(cbor_uint(&mut d, "op must be an integer")?),
            "rsc" => fields.rsc = Some(cbor_uint(&mut d, "rsc must be an integer")?),
            "fr" => {
                let v = cbor_str(&mut d, "fr must be a string")?;
                fields.fr_span = Some(start..d.position());
                fields.fr = Some(v);
            }
            "to" => fields.to = Some(cbor_str(&mut d, "to must be a string")?),
            "ty" => fields.ty = Some(cbor_uint(&mut d, "ty must be an integer")?),
            "rqi" => fields.rqi = Some(cbor_str(&mut d, "rqi must be a string")?),
            "rvi" => fields.rvi = Some(cbor_str(&mut d, "rvi must be a string")?),
            "rcn" => fields.rcn = Some(cbor_uint(&mut d, "rcn must be an integer")?),
            "fc" => fields.fu = cbor_fu(&mut d)?,
            _ => d.skip().map_err(|_| NOT_A_MAP)?,
        }
    }
    if d.position() != payload.len() {
        return Err("trailing bytes after the primitive");
    }
    Ok(fields)
}

/// `fu` of a filter criteria map (the rules read it: 1 is discovery).
fn cbor_fu(d: &mut Decoder) -> Result<Option<u64>, Invalid> {
    const FC: Invalid = "fc must be a map";
    let entries = d.map().map_err(|_| FC)?;
    let mut fu = None;
    let mut read = 0u64;
    loop {
        match entries {
            Some(n) if read == n => break,
            None if d.datatype().map_err(|_| FC)? == Type::Break => {
                d.skip().map_err(|_| FC)?;
                break;
            }
            _ => {}
        }
        read += 1;
        let is_fu = match d.datatype().map_err(|_| FC)? {
            Type::String => d.str().map_err(|_| FC)? == "fu",
            _ => {
                d.skip().map_err(|_| FC)?;
                false
            }
        };
        if !is_fu {
            d.skip().map_err(|_| FC)?;
        } else if fu.is_some() {
            return Err("duplicate key in the primitive");
        } else {
            fu = Some(cbor_uint(d, "fu must be an integer")?);
        }
    }
    Ok(fu)
}

fn cbor_uint(d: &mut Decoder, err: Invalid) -> Result<u64, Invalid> {
    match d.datatype().map_err(|_| err)? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => d.u64().map_err(|_| err),
        _ => Err(err),
    }
}

fn cbor_str(d: &mut Decoder, err: Invalid) -> Result<String, Invalid> {
    match d.datatype().map_err(|_| err)? {
        Type::String => d.str().map(str::to_owned).map_err(|_| err),
        _ => Err(err),
    }
}

/// A CBOR head: major type and argument, shortest form.
fn cbor_head(out: &mut BytesMut, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.extend_from_slice(&[m | n as u8]),
        24..=0xFF => out.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xFFFF => {
            out.extend_from_slice(&[m | 25]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xFFFF_FFFF => {
            out.extend_from_slice(&[m | 26]);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.extend_from_slice(&[m | 27]);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn cbor_text(s: &str) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(s.len() + 9);
    cbor_head(&mut out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
    out.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = br#"{ "op":4, "to":"/id-in/cse-in/x" ,"fr": "CAdmin" , "rqi":"r1","rvi":"3","pc":{"fr":"inner"}}"#;

    #[test]
    fn json_fields_and_a_byte_exact_replacement() {
        let p = parse(Encoding::Json, REQ).unwrap();
        assert_eq!(p.op, Some(4));
        assert_eq!(p.fr.as_deref(), Some("CAdmin"));
        assert_eq!(p.to.as_deref(), Some("/id-in/cse-in/x"));
        assert_eq!(p.rqi.as_deref(), Some("r1"));
        let out = p.with_originator(REQ, "Cae-1");
        let expected =
            String::from_utf8(REQ.to_vec())
                .unwrap()
                .replacen("\"CAdmin\"", "\"Cae-1\"", 1);
        assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
    }

    #[test]
    fn json_fr_is_added_when_absent_and_escaped_keys_count() {
        let msg = br#"{"op":2,"to":"/id-in"}"#;
        let out = parse(Encoding::Json, msg)
            .unwrap()
            .with_originator(msg, "C\"x");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["fr"], "C\"x");
        assert_eq!(v["op"], 2);

        let escaped = br#"{"op":2,"f\u0072":"CAdmin"}"#;
        let p = parse(Encoding::Json, escaped).unwrap();
        assert_eq!(p.fr.as_deref(), Some("CAdmin"));
        let out = p.with_originator(escaped, "Cae-1");
        assert_eq!(&out[..], br#"{"op":2,"f\u0072":"Cae-1"}"#);
    }

    #[test]
    fn ambiguous_or_malformed_json_is_refused() {
        for bad in [
            &br#"{"op":2,"fr":"Cae-1","fr":"CAdmin"}"#[..],
            br#"{"op":2,"fr":"Cae-1","f\u0072":"CAdmin"}"#,
            br#"{"op":2,"fr":7}"#,
            br#"{"op":"2"}"#,
            br#"{"op":9}"#,
            br#"{"fr":"CAdmin"}"#,
            br#"[{"op":2}]"#,
            br#"{"op":2"#,
            br#"{"op":2} {"op":3}"#,
            b"garbage",
            b"",
        ] {
            assert!(
                parse(Encoding::Json, bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // deep nesting is judged without deep recursion (this must return at all)
        let deep = format!(
            "{{\"op\":2,\"pc\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let _ = parse(Encoding::Json, deep.as_bytes());
    }

    #[test]
    fn a_response_primitive_parses() {
        let p = parse(Encoding::Json, br#"{"rsc":2000,"rqi":"n1","to":"/id-in"}"#).unwrap();
        assert_eq!((p.op, p.rsc), (None, Some(2000)));
    }

    fn cbor(entries: &[(&str, Result<u64, &str>)], indefinite: bool) -> Vec<u8> {
        let mut out = BytesMut::new();
        if indefinite {
            out.extend_from_slice(&[0xbf]);
        } else {
            cbor_head(&mut out, 5, entries.len() as u64);
        }
        for (k, v) in entries {
            out.extend_from_slice(&cbor_text(k));
            match v {
                Ok(n) => cbor_head(&mut out, 0, *n),
                Err(s) => out.extend_from_slice(&cbor_text(s)),
            }
        }
        if indefinite {
            out.extend_from_slice(&[0xff]);
        }
        out.to_vec()
    }

    #[test]
    fn cbor_replacement_and_insertion_in_both_map_forms() {
        for indefinite in [false, true] {
            let msg = cbor(
                &[("op", Ok(2)), ("fr", Err("CAdmin")), ("rqi", Err("c1"))],
                indefinite,
            );
            let p = parse(Encoding::Cbor, &msg).unwrap();
            assert_eq!(p.fr.as_deref(), Some("CAdmin"));
            let out = p.with_originator(&msg, "Cae-1");
            let again = parse(Encoding::Cbor, &out).unwrap();
            assert_eq!(again.fr.as_deref(), Some("Cae-1"));
            assert_eq!(again.rqi.as_deref(), Some("c1"));

            let msg = cbor(&[("op", Ok(2)), ("rqi", Err("c2"))], indefinite);
            let out = parse(Encoding::Cbor, &msg)
                .unwrap()
                .with_originator(&msg, "Cae-1");
            let again = parse(Encoding::Cbor, &out).unwrap();
            assert_eq!(again.fr.as_deref(), Some("Cae-1"), "{indefinite}");
            assert_eq!(again.op, Some(2));
            assert_eq!(out.len(), msg.len() + 3 + 6);
        }
    }

    #[test]
    fn cbor_tricks_are_refused() {
        // duplicate fr
        let dup = cbor(&[("op", Ok(2)), ("fr", Err("a")), ("fr", Err("b"))], false);
        assert!(parse(Encoding::Cbor, &dup).is_err());
        // "fr" as an indefinite-length text key: 0x7f "f" "r" 0xff
        let mut chunked = vec![0xa2];
        chunked.extend(cbor_text("op"));
        chunked.push(0x02);
        chunked.extend([0x7f, 0x61, b'f', 0x61, b'r', 0xff]);
        chunked.extend(cbor_text("CAdmin"));
        assert!(parse(Encoding::Cbor, &chunked).is_err());
        // a byte-string key "fr" is not the field fr
        let mut bytes_key = vec![0xa2];
        bytes_key.extend(cbor_text("op"));
        bytes_key.push(0x02);
        bytes_key.extend([0x42, b'f', b'r']);
        bytes_key.extend(cbor_text("CAdmin"));
        assert_eq!(parse(Encoding::Cbor, &bytes_key).unwrap().fr, None);
        // trailing bytes, truncation, not a map, deep nesting
        let mut trailing = cbor(&[("op", Ok(2))], false);
        trailing.push(0x00);
        assert!(parse(Encoding::Cbor, &trailing).is_err());
        let whole = cbor(&[("op", Ok(2)), ("fr", Err("CAdmin"))], false);
        assert!(parse(Encoding::Cbor, &whole[..whole.len() - 1]).is_err());
        assert!(parse(Encoding::Cbor, &[0x82, 0x01, 0x02]).is_err());
        let mut deep = cbor(&[("op", Ok(2))], false);
        deep[0] = 0xa2;
        deep.extend(cbor_text("pc"));
        deep.extend(std::iter::repeat_n(0x81, 100_000));
        deep.push(0x00);
        assert!(parse(Encoding::Cbor, &deep).is_ok(), "deep but well-formed");
        deep.pop();
        assert!(parse(Encoding::Cbor, &deep).is_err());
    }

    #[test]
    fn refusals_read_back_in_both_encodings() {
        for encoding in [Encoding::Json, Encoding::Cbor] {
            let req = match encoding {
                Encoding::Json => REQ.to_vec(),
                Encoding::Cbor => cbor(
                    &[
                        ("op", Ok(4)),
                        ("fr", Err("CAdmin")),
                        ("rqi", Err("r1")),
                        ("rvi", Err("3")),
                    ],
                    false,
                ),
            };
            let p = parse(encoding, &req).unwrap();
            let answer = refusal(encoding, &p, 4103, Some("/id-in"), "not allowed");
            let back = parse(encoding, &answer).unwrap();
            assert_eq!(back.rsc, Some(4103));
            assert_eq!(back.rqi.as_deref(), Some("r1"));
            assert_eq!(back.rvi.as_deref(), Some("3"));
            assert_eq!(back.to.as_deref(), Some("CAdmin"));
            assert_eq!(back.fr.as_deref(), Some("/id-in"));
        }
        let json = refusal(
            Encoding::Json,
            &parse(Encoding::Json, REQ).unwrap(),
            4103,
            None,
            "why",
        );
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["pc"]["m2m:dbg"], "why");
        assert!(v.get("fr").is_none());
    }
}
