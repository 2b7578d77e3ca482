//! oneM2M primitives in a WebSocket message, JSON (`oneM2M.json`) or CBOR (`oneM2M.cbor`):
//! decoded strictly and whole (`value`), the few fields the proxy decides on read from that
//! decoding, and the primitive re-encoded by the proxy, `fr` set, for the CSE. The client's
//! bytes never reach the CSE: what it receives is what the proxy read.

use bytes::Bytes;
use minicbor::data::Type;
use minicbor::Decoder;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use super::value::{self, Map, Value};

pub use super::value::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Cbor,
}

/// The fields the proxy needs from a primitive, and the whole primitive as decoded (borrowing
/// from the message).
#[derive(Debug, Clone, PartialEq)]
pub struct Primitive<'a> {
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
    /// A semantic query: `sqi`, or `smf` in the filter criteria.
    pub semantic: bool,
    /// An apply-relative-path (`fc.arp`): a path from each resource found.
    pub relative_path: bool,
    pub rqi: Option<String>,
    pub rvi: Option<String>,
    encoding: Encoding,
    /// Every top-level entry, in order: what the CSE receives, re-encoded.
    entries: Map<'a>,
    /// Bytes of the message it was decoded from: the re-encoding is about as long.
    size_hint: usize,
}

pub fn parse(encoding: Encoding, payload: &[u8]) -> Result<Primitive<'_>, Invalid> {
    let entries = match encoding {
        Encoding::Json => value::decode_json(payload)?,
        Encoding::Cbor => value::decode_cbor(payload)?,
    };
    let mut p = Primitive {
        op: None,
        rsc: None,
        fr: None,
        to: None,
        ty: None,
        rcn: None,
        fu: None,
        semantic: false,
        relative_path: false,
        rqi: None,
        rvi: None,
        encoding,
        entries: Map::new(),
        size_hint: payload.len(),
    };
    for (key, v) in &entries {
        let text = |err| v.as_str().map(str::to_owned).ok_or(err);
        match key.as_ref() {
            "op" => p.op = Some(v.as_u64().ok_or("op must be an integer")?),
            "rsc" => p.rsc = Some(v.as_u64().ok_or("rsc must be an integer")?),
            "fr" => p.fr = Some(text("fr must be a string")?),
            "to" => p.to = Some(text("to must be a string")?),
            "ty" => p.ty = Some(v.as_u64().ok_or("ty must be an integer")?),
            "rqi" => p.rqi = Some(text("rqi must be a string")?),
            "rvi" => p.rvi = Some(text("rvi must be a string")?),
            "rcn" => p.rcn = Some(v.as_u64().ok_or("rcn must be an integer")?),
            "sqi" => p.semantic = true,
            "fc" => {
                p.fu = filter_usage(v)?;
                p.semantic |= has_key(v, "smf");
                p.relative_path = has_key(v, "arp");
            }
            _ => {}
        }
    }
    if let Some(op) = p.op {
        if !(1..=6).contains(&op) {
            return Err("op must be 1 to 6");
        }
    }
    if p.op.is_none() && p.rsc.is_none() {
        return Err("not a oneM2M primitive: neither op nor rsc");
    }
    p.entries = entries;
    Ok(p)
}

/// `fu` of a filter criteria (the rules read it: 1 is discovery). The strict decoder has
/// already refused duplicate keys.
fn filter_usage(fc: &Value<'_>) -> Result<Option<u64>, Invalid> {
    let Value::Map(entries) = fc else {
        return Err("fc must be a map");
    };
    entries
        .iter()
        .find(|(k, _)| k == "fu")
        .map(|(_, v)| v.as_u64().ok_or("fu must be an integer"))
        .transpose()
}

/// Whether the map `v` has the key `key`.
fn has_key(v: &Value<'_>, key: &str) -> bool {
    matches!(v, Value::Map(entries) if entries.iter().any(|(k, _)| k == key))
}

impl Primitive<'_> {
    /// The content (`pc`), as decoded.
    pub fn content(&self) -> Option<&Value<'_>> {
        self.entries.iter().find(|(k, _)| k == "pc").map(|(_, v)| v)
    }

    /// Whether `found` holds for any text under one of `keys`, at any depth.
    pub fn any_keyed_text(&self, keys: &[&str], found: &mut impl FnMut(&[u8]) -> bool) -> bool {
        value::any_keyed_text(&self.entries, keys, found)
    }

    /// Whether `found` holds for any text of the primitive, at any depth (`value::any_text`).
    pub fn any_text(&self, found: &mut impl FnMut(&[u8]) -> bool) -> bool {
        value::any_text(&self.entries, found)
    }

    /// The primitive as the CSE receives it: the proxy's canonical encoding of what it decoded
    /// (`value`), with `fr` set to `originator` (in its place, or first when there was none).
    pub fn encode(&self, originator: Option<&str>) -> Bytes {
        let fr = originator.map(|o| Value::Text(o.into()));
        let added = fr.as_ref().filter(|_| self.fr.is_none());
        let entries = added
            .map(|v| ("fr", v))
            .into_iter()
            .chain(self.entries.iter().map(|(k, v)| {
                let v = match (&fr, k.as_ref()) {
                    (Some(fr), "fr") => fr,
                    _ => v,
                };
                (k.as_ref(), v)
            }));
        let len = self.entries.len() + usize::from(added.is_some());
        let mut out = Vec::with_capacity(self.size_hint + 64);
        match self.encoding {
            Encoding::Json => {
                out.push(b'{');
                for (i, (k, v)) in entries.enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    value::json_string(k, &mut out);
                    out.push(b':');
                    value::json_value(v, &mut out);
                }
                out.push(b'}');
            }
            Encoding::Cbor => {
                value::cbor_head(&mut out, 5, len as u64);
                for (k, v) in entries {
                    value::cbor_string(k, &mut out);
                    value::cbor_value(v, &mut out);
                }
            }
        }
        Bytes::from(out)
    }
}

/// A response primitive refusing `request` as a CSE would: `rqi` and `rvi` echoed, `to` the
/// request's originator, `fr` the CSE, `pc` a `m2m:dbg` reason.
pub fn refusal(
    encoding: Encoding,
    request: &Primitive<'_>,
    rsc: u16,
    cse_id: Option<&str>,
    reason: &str,
) -> Bytes {
    answer(
        encoding,
        rsc,
        [
            ("rqi", request.rqi.as_deref()),
            ("rvi", request.rvi.as_deref()),
            ("to", request.fr.as_deref()),
            ("fr", cse_id),
        ],
        reason,
    )
}

/// The 4000 response primitive to a message that cannot be decoded strictly: its `rqi` and
/// `rvi` echoed when they can be read unambiguously, no `to` (its `fr` is not trusted).
pub fn undecodable(
    encoding: Encoding,
    payload: &[u8],
    cse_id: Option<&str>,
    reason: &str,
) -> Bytes {
    let (rqi, rvi) = readable_ids(encoding, payload);
    answer(
        encoding,
        4000,
        [
            ("rqi", rqi.as_deref()),
            ("rvi", rvi.as_deref()),
            ("to", None),
            ("fr", cse_id),
        ],
        reason,
    )
}

fn answer(encoding: Encoding, rsc: u16, texts: [(&str, Option<&str>); 4], reason: &str) -> Bytes {
    let present = texts.iter().filter(|(_, v)| v.is_some()).count();
    let mut out = Vec::with_capacity(96 + reason.len());
    let dbg = Value::Map(vec![("m2m:dbg".into(), Value::Text(reason.into()))]);
    match encoding {
        Encoding::Json => {
            out.extend_from_slice(format!("{{\"rsc\":{rsc}").as_bytes());
            for (k, v) in texts {
                if let Some(v) = v {
                    out.push(b',');
                    value::json_string(k, &mut out);
                    out.push(b':');
                    value::json_string(v, &mut out);
                }
            }
            out.extend_from_slice(b",\"pc\":");
            value::json_value(&dbg, &mut out);
            out.push(b'}');
        }
        Encoding::Cbor => {
            value::cbor_head(&mut out, 5, present as u64 + 2);
            value::cbor_string("rsc", &mut out);
            value::cbor_head(&mut out, 0, u64::from(rsc));
            for (k, v) in texts {
                if let Some(v) = v {
                    value::cbor_string(k, &mut out);
                    value::cbor_string(v, &mut out);
                }
            }
            value::cbor_string("pc", &mut out);
            value::cbor_value(&dbg, &mut out);
        }
    }
    Bytes::from(out)
}

/// Longest `rqi`/`rvi` echoed back.
const MAX_ECHO: usize = 256;

/// `rqi` and `rvi` of a message the strict decoder refused, read the lenient way (top-level
/// entries only, nothing else looked at); each only when it is there exactly once, as text.
fn readable_ids(encoding: Encoding, payload: &[u8]) -> (Option<String>, Option<String>) {
    let mut found: [(&str, Option<String>, u8); 2] = [("rqi", None, 0), ("rvi", None, 0)];
    let mut note = |key: &str, v: Option<String>| {
        for (name, value, seen) in found.iter_mut() {
            if *name == key {
                *seen = seen.saturating_add(1);
                *value = v.clone().filter(|v| v.len() <= MAX_ECHO);
            }
        }
    };
    match encoding {
        Encoding::Json => {
            if let Ok(entries) = serde_json::from_slice::<Entries>(payload) {
                for (k, raw) in entries.0 {
                    note(&k, serde_json::from_str::<String>(raw.get()).ok());
                }
            }
        }
        Encoding::Cbor => cbor_top_level_texts(payload, &mut note),
    }
    let [(_, rqi, n), (_, rvi, m)] = found;
    (rqi.filter(|_| n == 1), rvi.filter(|_| m == 1))
}

/// Calls `note` for each plain text key of a top-level CBOR map, with its value if that is
/// plain text; stops at the first thing it cannot skip.
fn cbor_top_level_texts(payload: &[u8], note: &mut impl FnMut(&str, Option<String>)) {
    let mut d = Decoder::new(payload);
    let Ok(len) = d.map() else { return };
    for _ in 0..len.unwrap_or(u64::MAX) {
        match d.datatype() {
            Ok(Type::Break) | Err(_) => return,
            Ok(Type::String) => {
                let Ok(key) = d.str() else { return };
                let value = match d.datatype() {
                    Ok(Type::String) => d.str().ok().map(str::to_owned),
                    _ => {
                        // a value that cannot be skipped ends the walk at the next item
                        let _ = d.skip();
                        None
                    }
                };
                note(key, value);
            }
            Ok(_) => {
                if d.skip().and_then(|_| d.skip()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Top-level entries of a JSON object, values left raw.
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
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    entries.push((k, v));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = br#"{ "op":4, "to":"/id-in/cse-in/x" ,"fr": "CAdmin" , "rqi":"r1","rvi":"3","pc":{"fr":"inner"}}"#;

    fn json(p: &Primitive, originator: Option<&str>) -> String {
        String::from_utf8(p.encode(originator).to_vec()).unwrap()
    }

    #[test]
    fn json_fields_and_the_canonical_form_with_fr_in_its_place() {
        let p = parse(Encoding::Json, REQ).unwrap();
        assert_eq!(p.op, Some(4));
        assert_eq!(p.fr.as_deref(), Some("CAdmin"));
        assert_eq!(p.to.as_deref(), Some("/id-in/cse-in/x"));
        assert_eq!(p.rqi.as_deref(), Some("r1"));
        assert_eq!(
            json(&p, Some("Cae-1")),
            r#"{"op":4,"to":"\/id-in\/cse-in\/x","fr":"Cae-1","rqi":"r1","rvi":"3","pc":{"fr":"inner"}}"#
        );
        // as decoded, when the originator stays
        assert_eq!(
            json(&p, None),
            r#"{"op":4,"to":"\/id-in\/cse-in\/x","fr":"CAdmin","rqi":"r1","rvi":"3","pc":{"fr":"inner"}}"#
        );
    }

    #[test]
    fn json_fr_is_added_first_when_absent_and_escaped_keys_count() {
        let p = parse(Encoding::Json, br#"{"op":2,"to":"/id-in"}"#).unwrap();
        assert_eq!(
            json(&p, Some("C\"x")),
            r#"{"fr":"C\"x","op":2,"to":"\/id-in"}"#
        );
        let p = parse(Encoding::Json, br#"{"op":2,"f\u0072":"CAdmin"}"#).unwrap();
        assert_eq!(p.fr.as_deref(), Some("CAdmin"));
        assert_eq!(json(&p, Some("Cae-1")), r#"{"op":2,"fr":"Cae-1"}"#);
    }

    #[test]
    fn the_comment_forgery_is_read_once_and_forwarded_without_markers() {
        // issue 26, class 1: a stripper that loses track after "\\" reads a delete by CAdmin
        let forged = br#"{"op":2,"to":"cse-in/sensorApp","rqi":"x","rvi":"3","a":"\\","b":"/*","n":{"c":"*/","op":4,"to":"cse-in/mgmt","fr":"CAdmin","d":"/*"},"e":"*/"}"#;
        let p = parse(Encoding::Json, forged).unwrap();
        assert_eq!(
            (p.op, p.to.as_deref(), p.fr.as_deref()),
            (Some(2), Some("cse-in/sensorApp"), None)
        );
        let out = json(&p, Some("Csensor1"));
        assert!(!out.contains("//") && !out.contains('*'), "{out}");
        let back = parse(Encoding::Json, out.as_bytes()).unwrap();
        assert_eq!((back.op, back.fr.as_deref()), (Some(2), Some("Csensor1")));
    }

    #[test]
    fn ambiguous_or_malformed_json_is_refused() {
        for bad in [
            &br#"{"op":2,"fr":"Cae-1","fr":"CAdmin"}"#[..],
            br#"{"op":2,"fr":"Cae-1","f\u0072":"CAdmin"}"#,
            br#"{"op":2,"pc":{"a":1,"a":2}}"#,
            br#"{"op":2 /* comment */}"#,
            br#"{"op":2,"fr":7}"#,
            br#"{"op":"2"}"#,
            br#"{"op":2.0}"#,
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
    }

    #[test]
    fn a_response_primitive_parses() {
        let p = parse(Encoding::Json, br#"{"rsc":2000,"rqi":"n1","to":"/id-in"}"#).unwrap();
        assert_eq!((p.op, p.rsc), (None, Some(2000)));
    }

    fn cbor(entries: &[(&str, Result<u64, &str>)], indefinite: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if indefinite {
            out.push(0xbf);
        } else {
            value::cbor_head(&mut out, 5, entries.len() as u64);
        }
        for (k, v) in entries {
            value::cbor_string(k, &mut out);
            match v {
                Ok(n) => value::cbor_head(&mut out, 0, *n),
                Err(s) => value::cbor_string(s, &mut out),
            }
        }
        if indefinite {
            out.push(0xff);
        }
        out
    }

    #[test]
    fn cbor_fr_is_replaced_or_added_and_the_map_is_definite() {
        for indefinite in [false, true] {
            let msg = cbor(
                &[("op", Ok(2)), ("fr", Err("CAdmin")), ("rqi", Err("c1"))],
                indefinite,
            );
            let out = parse(Encoding::Cbor, &msg).unwrap().encode(Some("Cae-1"));
            assert_eq!(
                out,
                cbor(
                    &[("op", Ok(2)), ("fr", Err("Cae-1")), ("rqi", Err("c1"))],
                    false
                )
            );

            let msg = cbor(&[("op", Ok(2)), ("rqi", Err("c2"))], indefinite);
            let out = parse(Encoding::Cbor, &msg).unwrap().encode(Some("Cae-1"));
            assert_eq!(
                out,
                cbor(
                    &[("fr", Err("Cae-1")), ("op", Ok(2)), ("rqi", Err("c2"))],
                    false
                )
            );
        }
    }

    #[test]
    fn cbor_tricks_are_refused() {
        let dup = cbor(&[("op", Ok(2)), ("fr", Err("a")), ("fr", Err("b"))], false);
        assert!(parse(Encoding::Cbor, &dup).is_err());
        // issue 26, class 2: tag 55799 around keys after the plain ones
        let mut tagged = vec![0xa4];
        tagged.extend(&cbor(&[("op", Ok(2)), ("to", Err("cse-in/x"))], false)[1..]);
        tagged.extend([0xd9, 0xd9, 0xf7]);
        value::cbor_string("op", &mut tagged);
        tagged.push(0x04);
        tagged.extend([0xd9, 0xd9, 0xf7]);
        value::cbor_string("fr", &mut tagged);
        value::cbor_string("CAdmin", &mut tagged);
        assert!(parse(Encoding::Cbor, &tagged).is_err());
        // a byte-string key
        let mut bytes_key = vec![0xa2];
        value::cbor_string("op", &mut bytes_key);
        bytes_key.push(0x02);
        bytes_key.extend([0x42, b'f', b'r']);
        value::cbor_string("CAdmin", &mut bytes_key);
        assert!(parse(Encoding::Cbor, &bytes_key).is_err());
        // "fr" in chunks is `fr`, and re-encoded as one string
        let mut chunked = vec![0xa2];
        value::cbor_string("op", &mut chunked);
        chunked.push(0x02);
        chunked.extend([0x7f, 0x61, b'f', 0x61, b'r', 0xff]);
        value::cbor_string("CAdmin", &mut chunked);
        let p = parse(Encoding::Cbor, &chunked).unwrap();
        assert_eq!(p.fr.as_deref(), Some("CAdmin"));
        assert_eq!(
            p.encode(Some("Cae-1")),
            cbor(&[("op", Ok(2)), ("fr", Err("Cae-1"))], false)
        );
        // trailing bytes, truncation, not a map
        let mut trailing = cbor(&[("op", Ok(2))], false);
        trailing.push(0x00);
        assert!(parse(Encoding::Cbor, &trailing).is_err());
        let whole = cbor(&[("op", Ok(2)), ("fr", Err("CAdmin"))], false);
        assert!(parse(Encoding::Cbor, &whole[..whole.len() - 1]).is_err());
        assert!(parse(Encoding::Cbor, &[0x82, 0x01, 0x02]).is_err());
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

    #[test]
    fn an_undecodable_message_gets_4000_with_its_rqi_when_readable() {
        let answer = |enc, msg: &[u8]| {
            let bytes = undecodable(enc, msg, Some("/id-in"), "bad");
            let p = parse(enc, &bytes).unwrap();
            assert_eq!(
                (p.rsc, p.fr.as_deref(), p.to.as_deref()),
                (Some(4000), Some("/id-in"), None)
            );
            (p.rqi, p.rvi)
        };
        let r = |s: &str| Some(s.to_string());
        assert_eq!(
            answer(
                Encoding::Json,
                br#"{"op":2,"rqi":"q","rvi":"4","a":1,"a":2}"#
            ),
            (r("q"), r("4"))
        );
        assert_eq!(
            answer(Encoding::Json, br#"{"op":2,"rqi":"q","rqi":"w"}"#),
            (None, None)
        );
        assert_eq!(
            answer(Encoding::Json, br#"{"op":2,"rqi":"q" /* c */}"#),
            (None, None)
        );
        let mut tagged = vec![0xa3];
        value::cbor_string("rqi", &mut tagged);
        value::cbor_string("c-1", &mut tagged);
        tagged.extend([0xd9, 0xd9, 0xf7]);
        value::cbor_string("op", &mut tagged);
        tagged.push(0x04);
        value::cbor_string("rvi", &mut tagged);
        value::cbor_string("3", &mut tagged);
        assert_eq!(answer(Encoding::Cbor, &tagged), (r("c-1"), r("3")));
        assert_eq!(answer(Encoding::Cbor, b"\xff"), (None, None));
        let long = format!(r#"{{"op":2,"rqi":"{}","a":1,"a":1}}"#, "x".repeat(300));
        assert_eq!(answer(Encoding::Json, long.as_bytes()), (None, None));
    }
}
