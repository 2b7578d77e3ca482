//! What the content of an UPDATE makes of the resource it updates, for the rules
//! (`crate::parts`): the CSE acts later on the new attributes of an `<action>`, a
//! `<subscription>`… exactly as on those of a new one. The CSE applies an update to the resource
//! type its content's one root key names (ACME refuses one whose root key is not the target's
//! type), so the proxy reads that key, with the strict decoders it uses for WebSocket primitives
//! (`crate::websocket::value`).

use super::value::{self, Value};
use crate::config::ResourceType;
use crate::parts::Known;
use crate::poa::Encoding;

/// The root keys of the types whose resources make the CSE act later (`crate::parts`), sorted.
const ACTS_LATER: [(&str, u32); 10] = [
    ("m2m:actr", 65),
    ("m2m:crs", 48),
    ("m2m:depr", 66),
    ("m2m:dlv", 6),
    ("m2m:mgc", 12),
    ("m2m:prmr", 63),
    ("m2m:stte", 64),
    ("m2m:sub", 23),
    ("m2m:tgr", 47),
    ("m2m:tsb", 60),
];

/// The root keys of the other oneM2M resource types (TS-0004, as ACME spells them; announced
/// ones end in `A`), sorted. An `m2m:` key in neither list may be a type the proxy does not know.
const ORDINARY: [&str; 67] = [
    "m2m:acp",
    "m2m:acpA",
    "m2m:actrA",
    "m2m:ae",
    "m2m:aeA",
    "m2m:alpc",
    "m2m:alst",
    "m2m:andi",
    "m2m:andiA",
    "m2m:ani",
    "m2m:aniA",
    "m2m:bat",
    "m2m:batA",
    "m2m:cb",
    "m2m:cbA",
    "m2m:cin",
    "m2m:cinA",
    "m2m:cnt",
    "m2m:cntA",
    "m2m:csr",
    "m2m:csrA",
    "m2m:dac",
    "m2m:deprA",
    "m2m:dvc",
    "m2m:dvcA",
    "m2m:dvi",
    "m2m:dviA",
    "m2m:evl",
    "m2m:evlA",
    "m2m:fci",
    "m2m:fciA",
    "m2m:fcnt",
    "m2m:fcntA",
    "m2m:fwr",
    "m2m:fwrA",
    "m2m:grp",
    "m2m:grpA",
    "m2m:lcp",
    "m2m:lcpA",
    "m2m:mem",
    "m2m:memA",
    "m2m:mgo",
    "m2m:mgoA",
    "m2m:nod",
    "m2m:nodA",
    "m2m:ntp",
    "m2m:ntpr",
    "m2m:pch",
    "m2m:pcu",
    "m2m:pdr",
    "m2m:prmrA",
    "m2m:prp",
    "m2m:prpA",
    "m2m:rbo",
    "m2m:rboA",
    "m2m:req",
    "m2m:sch",
    "m2m:schA",
    "m2m:smd",
    "m2m:smdA",
    "m2m:stteA",
    "m2m:swr",
    "m2m:swrA",
    "m2m:ts",
    "m2m:tsA",
    "m2m:tsi",
    "m2m:tsiA",
];

/// What an update whose content has the root key `key` updates: `Is(Some(ty))` a resource of
/// a type that acts later, `Is(None)` one that does not (a oneM2M type of the other kind, or a
/// `<flexContainer>` specialisation `prefix:name` of another namespace than `m2m`), `Unknown`
/// any other key (an `m2m:` type the proxy does not know could be one that acts later).
pub fn root_key(key: &str) -> Known<Option<ResourceType>> {
    if let Ok(i) = ACTS_LATER.binary_search_by(|(k, _)| (*k).cmp(key)) {
        return Known::Is(Some(ResourceType(ACTS_LATER[i].1)));
    }
    if ORDINARY.binary_search(&key).is_ok() {
        return Known::Is(None);
    }
    match key.split_once(':') {
        Some((ns, name)) if !ns.eq_ignore_ascii_case("m2m") && is_name(ns) && is_name(name) => {
            Known::Is(None)
        }
        _ => Known::Unknown,
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The same for a decoded content: no content changes nothing; one that is not a map with
/// exactly one entry is read fail-closed (a CSE takes the entry of its own type from several).
pub fn of_value(content: Option<&Value<'_>>) -> Known<Option<ResourceType>> {
    match content {
        None => Known::Is(None),
        Some(Value::Map(entries)) => match entries.as_slice() {
            [(key, _)] => root_key(key),
            _ => Known::Unknown,
        },
        Some(_) => Known::Unknown,
    }
}

/// The same for an HTTP body in `encoding` (`None`: a media type the proxy cannot read): an
/// empty body changes nothing; one that does not decode strictly is read fail-closed.
pub fn of_body(encoding: Option<Encoding>, body: &[u8]) -> Known<Option<ResourceType>> {
    if body.is_empty() {
        return Known::Is(None);
    }
    let decoded = match encoding {
        Some(Encoding::Json) => value::decode_json(body),
        Some(Encoding::Cbor) => value::decode_cbor(body),
        None => return Known::Unknown,
    };
    match decoded {
        Ok(map) => of_value(Some(&Value::Map(map))),
        Err(_) => Known::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_are_sorted_and_disjoint() {
        assert!(ACTS_LATER.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ORDINARY.windows(2).all(|w| w[0] < w[1]));
        for (k, _) in ACTS_LATER {
            assert!(ORDINARY.binary_search(&k).is_err(), "{k}");
        }
    }

    #[test]
    fn root_keys_name_what_acts_later() {
        assert_eq!(root_key("m2m:actr"), Known::Is(Some(ResourceType(65))));
        assert_eq!(root_key("m2m:sub"), Known::Is(Some(ResourceType(23))));
        assert_eq!(root_key("m2m:tsb"), Known::Is(Some(ResourceType(60))));
        for plain in [
            "m2m:cnt",
            "m2m:ae",
            "m2m:fcnt",
            "m2m:actrA",
            "m2m:tsiA",
            "cod:tempe",
        ] {
            assert_eq!(root_key(plain), Known::Is(None), "{plain}");
        }
        for unknown in [
            "m2m:exin", "m2m:xyz", "actr", "", ":x", "cod:", "a:b:c", "M2M:actr",
        ] {
            assert_eq!(root_key(unknown), Known::Unknown, "{unknown}");
        }
    }

    #[test]
    fn bodies_are_read_strictly() {
        let json = Some(Encoding::Json);
        assert_eq!(of_body(json, b""), Known::Is(None));
        assert_eq!(of_body(json, br#"{"m2m:cnt":{"mni":3}}"#), Known::Is(None));
        assert_eq!(
            of_body(json, br#"{"m2m:actr":{"orc":"x"}}"#),
            Known::Is(Some(ResourceType(65)))
        );
        for unreadable in [
            &br#"{"m2m:cnt":{},"m2m:actr":{}}"#[..],
            br#"{"m2m:cnt":{"a":1,"a":2}}"#,
            br#"{}"#,
            br#"[1]"#,
            b"not json",
        ] {
            assert_eq!(of_body(json, unreadable), Known::Unknown);
        }
        assert_eq!(of_body(None, b"<m2m:actr/>"), Known::Unknown);
        // CBOR {"m2m:actr": {}} and {"m2m:cnt": {}}
        let cbor = Some(Encoding::Cbor);
        let mut actr = vec![0xa1, 0x68];
        actr.extend_from_slice(b"m2m:actr");
        actr.push(0xa0);
        assert_eq!(of_body(cbor, &actr), Known::Is(Some(ResourceType(65))));
        let mut cnt = vec![0xa1, 0x67];
        cnt.extend_from_slice(b"m2m:cnt");
        cnt.push(0xa0);
        assert_eq!(of_body(cbor, &cnt), Known::Is(None));
    }
}
