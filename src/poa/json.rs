//! The JSON scanner: where the `poa` strings of a JSON body are (byte ranges of their tokens),
//! for `PoaMap` to rewrite. Validates the whole text on the way.

use std::ops::Range;

use super::{Role, MAX_DEPTH};

/// Byte ranges (quotes included) of the string tokens in poa position; `None` for invalid JSON.
/// Iterative, with an explicit stack, so hostile nesting cannot overflow the thread's stack.
pub(super) fn json_poa_strings(body: &[u8]) -> Option<Vec<Range<usize>>> {
    enum Frame {
        Object,
        Array { poa: bool },
    }
    // JSON text is UTF-8 (RFC 8259): checked once, so token slices need not be
    std::str::from_utf8(body).ok()?;
    let mut s = Scanner { b: body, i: 0 };
    let mut stack = Vec::new();
    let mut found = Vec::new();
    let mut role = Role::Other;
    s.ws();
    loop {
        match s.peek()? {
            open @ (b'{' | b'[') => {
                if stack.len() >= MAX_DEPTH {
                    return None;
                }
                s.i += 1;
                s.ws();
                if open == b'{' {
                    if s.peek()? == b'}' {
                        s.i += 1;
                    } else {
                        stack.push(Frame::Object);
                        role = s.key()?;
                        continue;
                    }
                } else if s.peek()? == b']' {
                    s.i += 1;
                } else {
                    let poa = role == Role::PoaValue;
                    stack.push(Frame::Array { poa });
                    role = if poa { Role::PoaItem } else { Role::Other };
                    continue;
                }
            }
            b'"' => {
                let span = s.string()?;
                if role != Role::Other {
                    found.push(span);
                }
            }
            b't' => s.literal(b"true")?,
            b'f' => s.literal(b"false")?,
            b'n' => s.literal(b"null")?,
            b'-' | b'0'..=b'9' => s.number()?,
            _ => return None,
        }
        // after a value: close containers until a comma leads to the next value
        role = loop {
            s.ws();
            let Some(top) = stack.last() else {
                return (s.i == body.len()).then_some(found);
            };
            match (top, s.bump()?) {
                (Frame::Object, b',') => {
                    s.ws();
                    break s.key()?;
                }
                (Frame::Array { poa }, b',') => {
                    s.ws();
                    break if *poa { Role::PoaItem } else { Role::Other };
                }
                (Frame::Object, b'}') | (Frame::Array { .. }, b']') => {
                    stack.pop();
                }
                _ => return None,
            }
        };
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string token's range, quotes included; its escapes checked, not decoded.
    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.i;
        if self.bump()? != b'"' {
            return None;
        }
        loop {
            match self.bump()? {
                b'"' => return Some(start..self.i),
                b'\\' => match self.bump()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        for _ in 0..4 {
                            if !self.bump()?.is_ascii_hexdigit() {
                                return None;
                            }
                        }
                    }
                    _ => return None,
                },
                c if c < 0x20 => return None,
                _ => {}
            }
        }
    }

    /// An object key and its colon; whether the key (escapes decoded) is `poa`.
    fn key(&mut self) -> Option<Role> {
        let span = self.string()?;
        self.ws();
        if self.bump()? != b':' {
            return None;
        }
        self.ws();
        let token = self.b.get(span)?;
        let poa = if token.contains(&b'\\') {
            serde_json::from_slice::<String>(token).is_ok_and(|k| k == "poa")
        } else {
            token == b"\"poa\""
        };
        Some(if poa { Role::PoaValue } else { Role::Other })
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        if self.b.get(self.i..end)? != word {
            return None;
        }
        self.i = end;
        Some(())
    }

    fn digits(&mut self) -> Option<()> {
        if !self.peek()?.is_ascii_digit() {
            return None;
        }
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        Some(())
    }

    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits()?;
        }
        Some(())
    }
}
