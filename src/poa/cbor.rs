//! The CBOR walker: where the `poa` text strings of a CBOR body are (byte ranges and text),
//! for `PoaMap` to rewrite. Walks the whole item, so trailing or missing bytes make it invalid.

use std::ops::Range;

use minicbor::data::Type;
use minicbor::Decoder;

use super::{Role, MAX_DEPTH};

/// Byte ranges (header included) and text of the definite-length text strings in poa
/// position; `None` for invalid CBOR or trailing bytes. Containers are walked here, with an
/// explicit stack; minicbor only skips scalars (its `skip` tolerates a stray break inside a
/// definite array).
pub(super) fn cbor_poa_strings(body: &[u8]) -> Option<Vec<(Range<usize>, &str)>> {
    enum Next {
        Element { poa: bool },
        Key,
        Value(Role),
    }
    struct Frame {
        /// Elements or entries left; `None` for indefinite length.
        left: Option<u64>,
        next: Next,
    }
    let mut d = Decoder::new(body);
    let mut stack: Vec<Frame> = Vec::new();
    let mut found = Vec::new();
    let mut role = Role::Other;
    loop {
        // one item; tags are transparent (a tagged poa string is still a poa string)
        let ty = cbor_untag(&mut d)?;
        match ty {
            Type::Array | Type::ArrayIndef | Type::Map | Type::MapIndef => {
                if stack.len() >= MAX_DEPTH {
                    return None;
                }
                stack.push(if matches!(ty, Type::Array | Type::ArrayIndef) {
                    Frame {
                        left: d.array().ok()?,
                        next: Next::Element {
                            poa: role == Role::PoaValue,
                        },
                    }
                } else {
                    Frame {
                        left: d.map().ok()?,
                        next: Next::Key,
                    }
                });
            }
            Type::String if role != Role::Other => {
                let start = d.position();
                let text = d.str().ok()?;
                found.push((start..d.position(), text));
            }
            Type::Break | Type::Unknown(_) => return None,
            // scalars, byte strings, indefinite-length text (left unchanged)
            _ => d.skip().ok()?,
        }
        role = loop {
            let Some(top) = stack.last_mut() else {
                return (d.position() == body.len()).then_some(found);
            };
            if let Next::Value(value) = top.next {
                top.next = Next::Key;
                break value;
            }
            let finished = match &mut top.left {
                Some(0) => true,
                Some(n) => {
                    *n -= 1;
                    false
                }
                None if d.datatype().ok()? == Type::Break => {
                    d.skip().ok()?;
                    true
                }
                None => false,
            };
            if finished {
                stack.pop();
                continue;
            }
            match top.next {
                Next::Element { poa } => break if poa { Role::PoaItem } else { Role::Other },
                _ => match cbor_text_key(&mut d)? {
                    Some(key) => {
                        top.next = Next::Value(if key == "poa" {
                            Role::PoaValue
                        } else {
                            Role::Other
                        });
                    }
                    // any other key is walked as an ordinary item, then its value
                    None => {
                        top.next = Next::Value(Role::Other);
                        break Role::Other;
                    }
                },
            }
        };
    }
}

/// The next item's type, after any tags.
fn cbor_untag(d: &mut Decoder) -> Option<Type> {
    loop {
        match d.datatype().ok()? {
            Type::Tag => {
                d.tag().ok()?;
            }
            ty => return Some(ty),
        }
    }
}

/// A text key, read (chunks joined, as a CSE would); `Some(None)` for a key of another type,
/// which is left unread.
fn cbor_text_key(d: &mut Decoder) -> Option<Option<String>> {
    match cbor_untag(d)? {
        Type::String => Some(Some(d.str().ok()?.to_owned())),
        Type::StringIndef => {
            let mut key = String::new();
            for chunk in d.str_iter().ok()? {
                key.push_str(chunk.ok()?);
            }
            Some(Some(key))
        }
        Type::Break | Type::Unknown(_) => None,
        _ => Some(None),
    }
}
