//! `poa` (point of access) URLs in oneM2M bodies, rewritten between a peer CSE's public URL and
//! the local egress listener that forwards to it, and between the addresses the local CSE
//! advertises itself and this sidecar's public URL, so that each CSE is told the address it can
//! reach and no peer is told one around the sidecars. A string is rewritten by one mapping at
//! most. Only the bytes of the changed strings are replaced; the rest of the body is forwarded
//! exactly as it came. `rewrite`: which bodies of a request and its response are rewritten,
//! on the ingress and the egress listeners alike. `map`: the URL mappings and the rewriting of
//! one body by them; `json` (a scanner) and `cbor` (a walker): where a body's poa strings are.

mod cbor;
mod json;
mod map;
pub mod rewrite;

pub use map::{check_base, same_origin, PoaMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Cbor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Toward the local CSE: peer URLs become local listener URLs.
    TowardLocal,
    /// Away from the local CSE: local listener URLs become peer URLs.
    AwayFromLocal,
}

/// Containers deeper than this make a body unparseable (real resources nest a few levels).
const MAX_DEPTH: usize = 128;

/// The oneM2M JSON/CBOR media types; anything else (XML, text, ...) is `None`.
pub fn encoding_of(content_type: &str) -> Option<Encoding> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    [
        ("application/json", Encoding::Json),
        ("application/vnd.onem2m-res+json", Encoding::Json),
        ("application/cbor", Encoding::Cbor),
        ("application/vnd.onem2m-res+cbor", Encoding::Cbor),
    ]
    .into_iter()
    .find(|(name, _)| essence.eq_ignore_ascii_case(name))
    .map(|(_, encoding)| encoding)
}

/// What the next value is to a poa search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Other,
    /// The value of a `poa` key.
    PoaValue,
    /// An element of an array that is the value of a `poa` key.
    PoaItem,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        for (ct, want) in [
            ("application/json", Some(Encoding::Json)),
            ("Application/JSON; charset=utf-8", Some(Encoding::Json)),
            (
                "application/vnd.onem2m-res+json;ty=16",
                Some(Encoding::Json),
            ),
            (
                " application/vnd.oneM2M-res+json ; ty=2",
                Some(Encoding::Json),
            ),
            ("application/cbor", Some(Encoding::Cbor)),
            (
                "application/vnd.onem2m-res+cbor;ty=16",
                Some(Encoding::Cbor),
            ),
            ("application/xml", None),
            ("application/vnd.onem2m-res+xml;ty=16", None),
            ("text/plain", None),
            ("application/jsonx", None),
            ("", None),
        ] {
            assert_eq!(encoding_of(ct), want, "{ct:?}");
        }
    }
}
