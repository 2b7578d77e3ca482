//! WebSocket primitives, JSON and CBOR, generated with the material of parser differentials
//! (strings ending in `\`, comment markers, tagged and duplicate keys, indefinite lengths, odd
//! escapes) or taken as raw bytes: whatever the proxy accepts, it forwards in a form that the
//! lenient reader of the test kit (ACME's comment stripper with its bug, last key wins, tags
//! unwrapped) reads exactly as the proxy decided: same `op`, `to`, `fr`, `ty`.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::websocket::primitive::{parse, Encoding};

#[path = "../../tests/common/lenient.rs"]
#[allow(dead_code)]
mod lenient;

const ORIGINATOR: &str = "Cae-fuzz";

/// Pieces strings are made of: what confuses strippers and decoders.
const PIECES: &[&str] = &[
    "\\",
    "\"",
    "/",
    "*",
    "/*",
    "*/",
    "//",
    "#",
    ";;",
    "\n",
    "\r",
    "\t",
    "\u{0}",
    "é",
    "😀",
    "op",
    "fr",
    "to",
    "ty",
    "cse-in/mgmt",
    "CAdmin",
    "x",
    " ",
    "'",
    "\u{2028}",
];
const KEYS: &[&str] = &[
    "op", "to", "fr", "ty", "rqi", "rvi", "pc", "a", "n", "m2m:cin", "con",
];

fn text(u: &mut Unstructured) -> Result<String> {
    let mut s = String::new();
    for _ in 0..u.int_in_range(0..=6)? {
        s.push_str(u.choose(PIECES)?);
    }
    Ok(s)
}

fn json_value(u: &mut Unstructured, depth: u8) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    let kind = if depth > 3 {
        u.int_in_range(0..=3)?
    } else {
        u.int_in_range(0..=5)?
    };
    Ok(match kind {
        0 => J::from(u.int_in_range(0..=7u64)?),
        1 => J::from(text(u)?),
        2 => J::Bool(u.arbitrary()?),
        3 => J::Null,
        4 => J::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| json_value(u, depth + 1))
                .collect::<Result<_>>()?,
        ),
        _ => J::Object(json_map(u, depth + 1)?),
    })
}

fn json_map(u: &mut Unstructured, depth: u8) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut m = serde_json::Map::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let key = if u.arbitrary()? {
            u.choose(KEYS)?.to_string()
        } else {
            text(u)?
        };
        m.insert(key, json_value(u, depth)?);
    }
    Ok(m)
}

/// A JSON text: an object with op (and maybe the other fields), written compactly, with a
/// duplicate key or a comment spliced in now and then (the proxy must refuse those).
fn json_message(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut m = json_map(u, 0)?;
    m.insert("op".into(), u.int_in_range(1..=6u64)?.into());
    let mut text = serde_json::to_string(&serde_json::Value::Object(m)).unwrap_or_default();
    match u.int_in_range(0..=5)? {
        0 => text.insert_str(1, "\"fr\":\"CAdmin\","),
        1 => text.insert_str(1, "/*c*/"),
        _ => {}
    }
    Ok(text.into_bytes())
}

fn cbor_value(u: &mut Unstructured, depth: u8) -> Result<ciborium::Value> {
    use ciborium::Value as C;
    let kind = if depth > 3 {
        u.int_in_range(0..=3)?
    } else {
        u.int_in_range(0..=6)?
    };
    Ok(match kind {
        0 => C::Integer(u.int_in_range(0..=7u64)?.into()),
        1 => C::Text(text(u)?),
        2 => C::Bool(u.arbitrary()?),
        3 => C::Null,
        4 => C::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| cbor_value(u, depth + 1))
                .collect::<Result<_>>()?,
        ),
        5 => C::Tag(
            u.choose(&[1, 256, 55799])?.to_owned(),
            Box::new(cbor_value(u, depth + 1)?),
        ),
        _ => C::Map(cbor_map(u, depth + 1)?),
    })
}

fn cbor_map(u: &mut Unstructured, depth: u8) -> Result<Vec<(ciborium::Value, ciborium::Value)>> {
    use ciborium::Value as C;
    let mut m = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let name = if u.arbitrary()? {
            u.choose(KEYS)?.to_string()
        } else {
            text(u)?
        };
        let key = match u.int_in_range(0..=7)? {
            0 => C::Tag(55799, Box::new(C::Text(name))),
            1 => C::Bytes(name.into_bytes()),
            _ => C::Text(name),
        };
        m.push((key, cbor_value(u, depth)?));
    }
    Ok(m)
}

fn cbor_message(u: &mut Unstructured) -> Result<Vec<u8>> {
    use ciborium::Value as C;
    let mut m = cbor_map(u, 0)?;
    m.insert(
        0,
        (
            C::Text("op".into()),
            C::Integer(u.int_in_range(1..=6u64)?.into()),
        ),
    );
    let mut out = Vec::new();
    let _ = ciborium::into_writer(&C::Map(m), &mut out);
    Ok(out)
}

/// The proxy accepted `input`: what it forwards reads, strictly and leniently, as it decided.
fn check(encoding: Encoding, input: &[u8]) {
    let Ok(p) = parse(encoding, input) else {
        return;
    };
    let forwarded = p.encode(Some(ORIGINATOR));
    let decided = lenient::Reading {
        op: p.op,
        to: p.to.clone(),
        fr: Some(ORIGINATOR.into()),
        ty: p.ty,
        method: None,
    };
    let strict = parse(encoding, &forwarded).expect("the proxy reads its own output");
    assert_eq!(
        (strict.op, &strict.to, strict.fr.as_deref(), strict.ty),
        (p.op, &p.to, Some(ORIGINATOR), p.ty)
    );
    let lenient = match encoding {
        Encoding::Json => lenient::read_json(&forwarded),
        Encoding::Cbor => lenient::read_cbor(&forwarded),
    };
    assert_eq!(
        lenient.as_ref(),
        Some(&decided),
        "forwarded {:?}",
        String::from_utf8_lossy(&forwarded)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(Encoding::Json, rest);
        check(Encoding::Cbor, rest);
        return;
    }
    let mut u = Unstructured::new(rest);
    if let Ok(msg) = json_message(&mut u) {
        check(Encoding::Json, &msg);
    }
    if let Ok(msg) = cbor_message(&mut u) {
        check(Encoding::Cbor, &msg);
    }
});
