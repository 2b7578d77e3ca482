//! Request heads the HTTP parser refused, or accepted only by being lenient, answered in
//! oneM2M form like every other refusal: status, `X-M2M-RSC` 4000, an `m2m:dbg` reason, and
//! `X-M2M-RI` when it can be read. The connection closes after the answer: once a head is not
//! what it should be, where the next request starts is no longer certain.
//!
//! Pingora keeps no parsed head when its parser fails, only the first 2 KiB of the raw bytes,
//! escaped, in the error's context. `X-M2M-RI` is read back from there, for echoing only: one
//! complete line with one clean value, or nothing.

use pingora::protocols::http::v1::server::HttpSession as ServerSession;
use pingora::{Error, ErrorType};

use crate::onem2m::{self, M2mError};

/// The proxy's answer to a head it will not serve.
pub struct Malformed {
    pub err: M2mError,
    /// The head's `X-M2M-RI`, when it got far enough to read it.
    pub request_id: Option<String>,
}

/// The answer to a head `read_request` refused, `None` for failures that are no refusal (the
/// client went away or timed out).
pub fn refused(e: &Error, down: &ServerSession) -> Option<Malformed> {
    if e.etype() != &ErrorType::InvalidHTTPHeader {
        return None;
    }
    let context = e.context.as_ref().map(|c| c.as_str()).unwrap_or("");
    let parse_error = e.root_cause().downcast_ref::<httparse::Error>().copied();
    let (status, reason) = match parse_error {
        Some(httparse::Error::TooManyHeaders) => (431, "too many header fields"),
        Some(httparse::Error::HeaderName) => (400, "invalid header field (name, or no colon)"),
        Some(httparse::Error::HeaderValue) => (400, "invalid header field value"),
        Some(httparse::Error::NewLine) => (400, "invalid line ending"),
        Some(httparse::Error::Version) => (400, "invalid HTTP version"),
        Some(httparse::Error::Token | httparse::Error::Status) => (400, "invalid request line"),
        // no parse error: the head was parsed, then refused by Pingora's own checks
        None if context.starts_with("Request header larger than") => {
            (431, "request header too large")
        }
        None if context.contains("Content-Length") || context.contains("Transfer-Encoding") => (
            400,
            "invalid message framing (Content-Length, Transfer-Encoding)",
        ),
        None if context.contains("Host") || context.contains("target") => {
            (400, "invalid Host or request target")
        }
        None => (400, "malformed request head"),
    };
    // a head refused after parsing is still there to read; a parse failure leaves raw bytes
    let request_id = match down.get_header("x-m2m-ri") {
        Some(_) => request_id_parsed(down),
        None if parse_error.is_some() => request_id_in_context(context),
        None => None,
    };
    Some(Malformed {
        err: M2mError::other(status, format!("malformed request: {reason}")),
        request_id,
    })
}

/// A head that parsed only because the parser accepts a bare LF as a line end (RFC 9112 §2.2
/// allows it): refused, since another parser on the way may not end the line there.
pub fn lenient(down: &ServerSession) -> Option<Malformed> {
    let raw = down.get_headers_raw_bytes();
    let bare_lf = memchr::memchr_iter(b'\n', &raw).any(|i| i == 0 || raw[i - 1] != b'\r');
    bare_lf.then(|| Malformed {
        err: M2mError::other(400, "malformed request: bare LF line ending"),
        request_id: request_id_parsed(down),
    })
}

fn request_id_parsed(down: &ServerSession) -> Option<String> {
    // the request header is set whenever a field of it is
    down.get_header("x-m2m-ri")
        .is_some()
        .then(|| onem2m::request_id(down.req_header()))
        .flatten()
}

/// `X-M2M-RI` from the raw head in a parse error's context (`buf: <escaped bytes>`).
fn request_id_in_context(context: &str) -> Option<String> {
    let escaped = context.strip_prefix("buf: ")?;
    // `{:?}` of the bytes quotes them; `escape_ascii` does not
    let escaped = escaped
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .unwrap_or(escaped);
    request_id_in_head(&unescape(escaped))
}

/// Undoes Rust's byte escapes (`\\`, `\"`, `\'`, `\n`, `\r`, `\t`, `\0`, `\xNN`, `\u{N}`);
/// stops at anything else, keeping what came before.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut utf8 = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            continue;
        }
        let byte = match chars.next() {
            Some('\\') => b'\\',
            Some('"') => b'"',
            Some('\'') => b'\'',
            Some('n') => b'\n',
            Some('r') => b'\r',
            Some('t') => b'\t',
            Some('0') => 0,
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) if hex.len() == 2 => b,
                    _ => break,
                }
            }
            Some('u') => {
                let rest = chars.as_str();
                let Some(end) = rest.find('}') else { break };
                let code = rest
                    .strip_prefix('{')
                    .and_then(|r| u32::from_str_radix(&r[..end - 1], 16).ok())
                    .and_then(char::from_u32);
                let Some(code) = code else { break };
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(code.encode_utf8(&mut utf8).as_bytes());
                chars = rest[end + 1..].chars();
                continue;
            }
            _ => break,
        };
        out.push(byte);
    }
    out
}

/// The value of the one `X-M2M-RI` line among the complete (CRLF-ended) field lines of a raw
/// head, if it is a clean value worth echoing: none when absent, repeated or unclean.
fn request_id_in_head(head: &[u8]) -> Option<String> {
    let mut lines = head.split(|b| *b == b'\n');
    lines.next()?; // the request line
    let mut found = None;
    // the last piece has no LF after it: cut short, or the blank line's remainder
    let mut lines = lines.peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            break;
        }
        // past a bare LF, where lines end is a guess
        let Some(line) = line.strip_suffix(b"\r") else {
            break;
        };
        if line.is_empty() {
            break; // end of the head
        }
        let Some(value) = strip_name(line, b"x-m2m-ri:") else {
            continue;
        };
        if found.is_some() {
            return None;
        }
        found = Some(value.trim_ascii());
    }
    let value = found?;
    let clean = value.iter().all(|b| matches!(b, b' ' | 0x21..=0x7e));
    let value = std::str::from_utf8(value).ok()?;
    (clean && !value.is_empty() && value.len() <= onem2m::MAX_RI_LEN).then(|| value.to_owned())
}

fn strip_name<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..name.len())?;
    head.eq_ignore_ascii_case(name).then(|| &line[name.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both_escapes(raw: &[u8]) -> [String; 2] {
        [
            format!("buf: {}", raw.escape_ascii()),
            // what `{:?}` of the bytes as a string looks like
            format!("buf: {:?}", String::from_utf8_lossy(raw)),
        ]
    }

    #[test]
    fn the_request_id_is_read_back_from_either_escaped_form() {
        let raw = b"GET /a HTTP/1.1\r\nHost: x\r\nx-m2m-RI:  ri-7 \r\nNoColon\r\n\r\n";
        for context in both_escapes(raw) {
            assert_eq!(
                request_id_in_context(&context).as_deref(),
                Some("ri-7"),
                "{context}"
            );
        }
    }

    #[test]
    fn only_one_clean_complete_value_is_echoed() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"GET / HTTP/1.1\r\nX-M2M-RI: a\"b\r\n\r\n", Some("a\"b")),
            // repeated
            (
                b"GET / HTTP/1.1\r\nX-M2M-RI: a\r\nX-M2M-RI: b\r\n\r\n",
                None,
            ),
            // a line cut short by the 2 KiB cap
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-M2M-RI: abc", None),
            // a bare LF ends no line here
            (b"GET / HTTP/1.1\r\nX-A: 1\nX-M2M-RI: b\r\n\r\n", None),
            // control characters or non-ASCII
            (b"GET / HTTP/1.1\r\nX-M2M-RI: a\x01b\r\n\r\n", None),
            ("GET / HTTP/1.1\r\nX-M2M-RI: é\r\n\r\n".as_bytes(), None),
            (b"GET / HTTP/1.1\r\nX-M2M-RI:\r\n\r\n", None),
            // a space before the colon is not the field
            (b"GET / HTTP/1.1\r\nX-M2M-RI : a\r\n\r\n", None),
            // after the blank line: a body, not a field
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\nX-M2M-RI: a\r\n\r\n",
                None,
            ),
            // the request line is no field
            (b"X-M2M-RI: a\r\n\r\n", None),
        ];
        for (raw, want) in cases {
            for context in both_escapes(raw) {
                assert_eq!(
                    request_id_in_context(&context).as_deref(),
                    *want,
                    "{context}"
                );
            }
        }
        let long = format!("GET / HTTP/1.1\r\nX-M2M-RI: {}\r\n\r\n", "r".repeat(257));
        assert_eq!(request_id_in_head(long.as_bytes()), None);
    }

    #[test]
    fn unescaping_stops_at_what_it_does_not_know() {
        assert_eq!(unescape(r"a\r\n\x41\\\u{e9}z"), "a\r\nA\\éz".as_bytes());
        assert_eq!(unescape(r"ab\qcd"), b"ab");
        assert_eq!(unescape(r"ab\x4"), b"ab");
        assert_eq!(unescape(r"ab\u{zz}cd"), b"ab");
        assert_eq!(unescape("not a context"), b"not a context");
        assert_eq!(request_id_in_context("Request header larger than 1"), None);
    }
}
