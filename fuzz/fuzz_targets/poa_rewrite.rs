//! `poa` rewriting (src/poa/) of JSON and CBOR bodies, toward the local CSE and away from it,
//! through the request path's `PoaRewriter` (egress: every mapping; ingress: the sending peer's
//! routes only) and the `PoaMap` under it. First input byte: 0 the rest is a JSON body, 1 a
//! CBOR body, 2 a recipe for a generated document (both encodings). Properties:
//! - an empty map changes nothing; `PoaRewriter` gives what `PoaMap` gives for the same mappings;
//! - a rewrite's output is rewritten by nothing a second time the same way (one pass), and the
//!   inverse direction finds at least the strings it changed (the output parses, poa positions
//!   kept);
//! - when the body parses (serde_json, ciborium), the output does too and equals it everywhere
//!   but at poa strings; each changed string starts with a base the direction maps to; in CBOR
//!   the changed strings are exactly the count;
//! - generated documents whose poa URLs are all written under a configured base: the count is
//!   the number of them, and the inverse rewrite restores the input byte for byte.
#![no_main]

use ciborium::Value as Cbor;
use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::poa::rewrite::{PoaRewriter, Routes};
use m2m_auth_proxy::poa::{Direction, Encoding, PoaMap};
use serde_json::Value as Json;

/// Distinct origins, so that no base is under another (a rewritten string is under a base
/// of the other side only).
const ROUTES: [(&str, &str, &str); 2] = [
    ("in", "https://in-cse.example:8443", "http://127.0.0.1:8081"),
    (
        "mn",
        "https://mn.example/~/mn-cse",
        "http://127.0.0.1:8082/mn",
    ),
];
const ADVERTISED: [&str; 2] = ["http://127.0.0.1:3000", "http://10.0.0.5:3000/cse"];
const PUBLIC: &str = "https://self.example:8443";
/// The label `PoaMap` gives the public mapping: after the routes'.
const PUBLIC_LABEL: usize = ROUTES.len();

const DIRECTIONS: [Direction; 2] = [Direction::TowardLocal, Direction::AwayFromLocal];

fn inverse(d: Direction) -> Direction {
    match d {
        Direction::TowardLocal => Direction::AwayFromLocal,
        Direction::AwayFromLocal => Direction::TowardLocal,
    }
}

fn map() -> PoaMap {
    let mut map = PoaMap::default();
    for (label, (_, peer, local)) in ROUTES.iter().enumerate() {
        map.add_pair(peer, local, label).expect("valid route");
    }
    map.add_public(&ADVERTISED, PUBLIC, PUBLIC_LABEL)
        .expect("valid public URL");
    map
}

fn rewriter() -> PoaRewriter {
    PoaRewriter::new(&ROUTES, usize::MAX)
        .and_then(|r| r.with_public_url(&ADVERTISED, PUBLIC))
        .expect("valid mappings")
}

/// The bases strings become when travelling `d`.
fn targets(d: Direction) -> Vec<&'static str> {
    match d {
        Direction::TowardLocal => vec![ROUTES[0].2, ROUTES[1].2, ADVERTISED[0]],
        Direction::AwayFromLocal => vec![ROUTES[0].1, ROUTES[1].1, PUBLIC],
    }
}

/// Bases written as configured whose strings `d` rewrites and its inverse restores (of the
/// advertised addresses only the first comes back).
fn sources(d: Direction) -> Vec<&'static str> {
    targets(inverse(d))
}

fn check_body(body: &[u8], encoding: Encoding) {
    let (map, rewriter) = (map(), rewriter());
    for d in DIRECTIONS {
        assert_eq!(PoaMap::default().rewrite(body, encoding, d), None);
        let got = map.rewrite(body, encoding, d);
        assert_eq!(
            rewriter.rewrite(body, encoding, d).map(|b| b.to_vec()),
            got.as_ref().map(|(out, _)| out.clone())
        );
        // ingress: a body from peer `in` gets its route's mapping and the public URL's only
        let only_in = map.rewrite_where(body, encoding, d, |l| l == 0 || l == PUBLIC_LABEL, |_| {});
        let names = ["in".to_string()];
        assert_eq!(
            rewriter
                .rewrite_for(body, encoding, d, Routes::Only(&names))
                .map(|b| b.to_vec()),
            only_in
        );
        assert_eq!(
            rewriter.rewrite_for(body, encoding, d, Routes::Only(&[])),
            None
        );
        let Some((out, n)) = got else {
            continue;
        };
        assert!(n > 0 && out != body);
        assert_eq!(
            map.rewrite(&out, encoding, d),
            None,
            "a string is rewritten once"
        );
        let (_, back) = map
            .rewrite(&out, encoding, inverse(d))
            .expect("the output parses and its new strings are found again");
        assert!(back >= n, "{back} < {n}");
        same_but_poa(body, &out, encoding, n, d);
    }
}

/// Where an independent parser reads the body: the output reads the same but at poa strings.
fn same_but_poa(body: &[u8], out: &[u8], encoding: Encoding, n: usize, d: Direction) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let (a, b) = match encoding {
        Encoding::Json => {
            let Ok(v) = serde_json::from_slice::<Json>(body) else {
                return;
            };
            let w: Json = serde_json::from_slice(out).expect("rewritten JSON parses");
            (
                format!("{:?}", strip_json(v, Role::Other, &mut before)),
                format!("{:?}", strip_json(w, Role::Other, &mut after)),
            )
        }
        Encoding::Cbor => {
            let Ok(v) = ciborium::from_reader::<Cbor, _>(body) else {
                return;
            };
            let w: Cbor = ciborium::from_reader(out).expect("rewritten CBOR parses");
            (
                format!("{:?}", strip_cbor(v, Role::Other, &mut before)),
                format!("{:?}", strip_cbor(w, Role::Other, &mut after)),
            )
        }
    };
    assert_eq!(a, b, "only poa strings change");
    assert_eq!(before.len(), after.len());
    let changed: Vec<&String> = before
        .iter()
        .zip(&after)
        .filter(|(x, y)| x != y)
        .map(|(_, y)| y)
        .collect();
    for s in &changed {
        assert!(targets(d).iter().any(|t| s.starts_with(t)), "{s:?}");
    }
    match encoding {
        // a duplicate key's earlier value is not in the parsed document
        Encoding::Json => assert!(changed.len() <= n, "{} > {n}", changed.len()),
        Encoding::Cbor => assert_eq!(changed.len(), n),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Other,
    PoaValue,
    PoaItem,
}

/// The document with its poa strings (the value of a `poa` key, the strings of an array that is
/// one) taken out into `found`, in document order.
fn strip_json(v: Json, role: Role, found: &mut Vec<String>) -> Json {
    match v {
        Json::String(s) if role != Role::Other => {
            found.push(s);
            Json::Null
        }
        Json::Array(items) => {
            let inner = if role == Role::PoaValue {
                Role::PoaItem
            } else {
                Role::Other
            };
            Json::Array(
                items
                    .into_iter()
                    .map(|i| strip_json(i, inner, found))
                    .collect(),
            )
        }
        Json::Object(m) => Json::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let r = if k == "poa" {
                        Role::PoaValue
                    } else {
                        Role::Other
                    };
                    let v = strip_json(v, r, found);
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

/// The same for CBOR, where tags are transparent and a key need not be text.
fn strip_cbor(v: Cbor, role: Role, found: &mut Vec<String>) -> Cbor {
    match v {
        Cbor::Text(s) if role != Role::Other => {
            found.push(s);
            Cbor::Null
        }
        Cbor::Tag(t, inner) => Cbor::Tag(t, Box::new(strip_cbor(*inner, role, found))),
        Cbor::Array(items) => {
            let inner = if role == Role::PoaValue {
                Role::PoaItem
            } else {
                Role::Other
            };
            Cbor::Array(
                items
                    .into_iter()
                    .map(|i| strip_cbor(i, inner, found))
                    .collect(),
            )
        }
        Cbor::Map(entries) => Cbor::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let r = if untagged_text(&k) == Some("poa") {
                        Role::PoaValue
                    } else {
                        Role::Other
                    };
                    let k = strip_cbor(k, Role::Other, found);
                    let v = strip_cbor(v, r, found);
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

fn untagged_text(v: &Cbor) -> Option<&str> {
    match v {
        Cbor::Text(s) => Some(s),
        Cbor::Tag(_, inner) => untagged_text(inner),
        _ => None,
    }
}

// --- generated documents --------------------------------------------------------------------

/// A document both encodings can carry; `Tagged` is a CBOR tag (JSON: the value alone).
enum Node {
    Null,
    Int(u64),
    Str(String),
    Arr(Vec<Node>),
    Obj(Vec<(String, Node)>),
    Tagged(u64, Box<Node>),
}

struct Recipe<'a> {
    data: &'a [u8],
    at: usize,
}

impl Recipe<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }

    /// A string for position `poa` of a document travelling `d`: under a configured base (the
    /// count goes up when in poa position) or one no mapping touches.
    fn string(&mut self, d: Direction, poa: bool, count: &mut usize) -> String {
        const UNMAPPED: [&str; 8] = [
            "",
            "cse-in/x",
            "http://other.example:1/x",
            "https://in-cse.example:9443/x",
            "ftp://in-cse.example:8443/x",
            "https://user@in-cse.example:8443/x",
            "https://mn.example/~/mn-csex",
            "http://127.0.0.1:8083",
        ];
        if self.byte() % 2 == 0 {
            return UNMAPPED[self.below(UNMAPPED.len())].to_string();
        }
        let bases = sources(d);
        let base = bases[self.below(bases.len())];
        let len = self.below(12);
        let tail_bytes: Vec<u8> = (0..len).map(|_| self.byte()).collect();
        let tail = String::from_utf8_lossy(&tail_bytes);
        let tail = match self.below(4) {
            0 => String::new(),
            1 => format!("/{tail}"),
            2 => format!("?{tail}"),
            _ => format!("#{tail}"),
        };
        if poa {
            *count += 1;
        }
        format!("{base}{tail}")
    }

    fn node(&mut self, d: Direction, depth: u32, role: Role, count: &mut usize) -> Node {
        let kind = if depth == 0 {
            self.below(3)
        } else {
            self.below(6)
        };
        let node = match kind {
            0 => Node::Null,
            1 => Node::Int(self.byte() as u64),
            2 => Node::Str(self.string(d, role != Role::Other, count)),
            3 => {
                let inner = if role == Role::PoaValue {
                    Role::PoaItem
                } else {
                    Role::Other
                };
                let len = self.below(5);
                Node::Arr(
                    (0..len)
                        .map(|_| self.node(d, depth - 1, inner, count))
                        .collect(),
                )
            }
            4 | 5 => {
                const KEYS: [&str; 5] = ["poa", "m2m:cb", "rn", "lbl", "poa "];
                let len = self.below(5);
                let mut entries: Vec<(String, Node)> = Vec::new();
                for _ in 0..len {
                    let key = KEYS[self.below(KEYS.len())];
                    // one entry per key: a JSON parser keeps only the last of duplicates
                    if entries.iter().any(|(k, _)| k == key) {
                        continue;
                    }
                    let r = if key == "poa" {
                        Role::PoaValue
                    } else {
                        Role::Other
                    };
                    let value = self.node(d, depth - 1, r, count);
                    entries.push((key.to_string(), value));
                }
                Node::Obj(entries)
            }
            _ => unreachable!(),
        };
        // a tag here and there (transparent to the poa search); not bignums (2, 3)
        if self.below(8) == 0 {
            Node::Tagged(32, Box::new(node))
        } else {
            node
        }
    }
}

fn to_json(n: &Node) -> Json {
    match n {
        Node::Null => Json::Null,
        Node::Int(i) => Json::from(*i),
        Node::Str(s) => Json::String(s.clone()),
        Node::Arr(items) => Json::Array(items.iter().map(to_json).collect()),
        Node::Obj(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Node::Tagged(_, inner) => to_json(inner),
    }
}

fn to_cbor(n: &Node) -> Cbor {
    match n {
        Node::Null => Cbor::Null,
        Node::Int(i) => Cbor::Integer((*i).into()),
        Node::Str(s) => Cbor::Text(s.clone()),
        Node::Arr(items) => Cbor::Array(items.iter().map(to_cbor).collect()),
        Node::Obj(entries) => Cbor::Map(
            entries
                .iter()
                .map(|(k, v)| (Cbor::Text(k.clone()), to_cbor(v)))
                .collect(),
        ),
        Node::Tagged(t, inner) => Cbor::Tag(*t, Box::new(to_cbor(inner))),
    }
}

fn check_generated(recipe: &[u8]) {
    let mut r = Recipe {
        data: recipe,
        at: 0,
    };
    let d = DIRECTIONS[r.below(2)];
    let mut count = 0;
    let doc = r.node(d, 6, Role::Other, &mut count);
    let json = if r.byte() % 2 == 0 {
        serde_json::to_vec(&to_json(&doc))
    } else {
        serde_json::to_vec_pretty(&to_json(&doc))
    }
    .expect("JSON from a value");
    let mut cbor = Vec::new();
    ciborium::into_writer(&to_cbor(&doc), &mut cbor).expect("CBOR from a value");
    let map = map();
    for (body, encoding) in [(json, Encoding::Json), (cbor, Encoding::Cbor)] {
        check_body(&body, encoding);
        match map.rewrite(&body, encoding, d) {
            None => assert_eq!(count, 0),
            Some((out, n)) => {
                assert_eq!(n, count);
                let back = map.rewrite(&out, encoding, inverse(d));
                assert_eq!(
                    back,
                    Some((body, n)),
                    "the inverse rewrite restores the body"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => check_body(rest, Encoding::Json),
        1 => check_body(rest, Encoding::Cbor),
        _ => check_generated(rest),
    }
});
