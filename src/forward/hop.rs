//! Connection-specific request header fields (RFC 9110 §7.6.1) stay on the client's hop (what
//! pingora-proxy's default upstream request policy removed). The response side is
//! `headers::strip_hop_by_hop_response`, called by each side's `upstream_response`.

use http::header::{self, HeaderName};
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, Result};

use crate::headers::expects_continue;

/// Fields that are always per connection.
const STANDARD: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "connection",
    "upgrade",
    "http2-settings",
];

/// As pingora-proxy: a `Connection` header naming this many options is refused.
const MAX_NOMINATIONS: usize = 10;

/// The request head for the CSE: the `Connection` options and the fields they nominate go,
/// as do the standard per-connection fields and `Expect: 100-continue` (the proxy answers it
/// itself); a WebSocket upgrade keeps its `Upgrade`/`Connection` pair. A malformed
/// `Connection` header is an error (400).
pub fn request(req: &mut RequestHeader) -> Result<()> {
    let nominated = nominations(&req.headers)?;
    let websocket = req.version == http::Version::HTTP_11
        && req
            .headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    for name in &nominated {
        req.remove_header(name);
    }
    // a removal parses its name and looks it up: only when one of them is there
    if req
        .headers
        .keys()
        .any(|name| STANDARD.contains(&name.as_str()))
    {
        for name in STANDARD {
            req.remove_header(*name);
        }
    }
    if expects_continue(req) {
        req.remove_header(&header::EXPECT);
    }
    if websocket {
        req.insert_header(header::CONNECTION, "Upgrade")?;
        req.insert_header(header::UPGRADE, "websocket")?;
    }
    req.set_version(http::Version::HTTP_11);
    Ok(())
}

/// After every other change to the head: a body without `Content-Length` goes chunked.
pub fn frame(req: &mut RequestHeader, has_body: bool) -> Result<()> {
    if has_body && !req.headers.contains_key(header::CONTENT_LENGTH) {
        req.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

/// The field names the `Connection` headers nominate; malformed or protected nominations are
/// errors.
fn nominations(headers: &http::HeaderMap) -> Result<Vec<HeaderName>> {
    let mut names = Vec::new();
    let mut count = 0;
    let tokens = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    for token in tokens {
        count += 1;
        if count >= MAX_NOMINATIONS {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "too many Connection header nominations",
            );
        }
        let valid = !token.starts_with(b":") && token.iter().all(|b| is_tchar(*b));
        let name = match (valid, HeaderName::from_bytes(token)) {
            (true, Ok(name)) => name,
            _ => {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    "invalid token nominated by the Connection header",
                )
            }
        };
        // a client must not be able to make the proxy drop what it says about the client
        let protected = matches!(
            name.as_str(),
            "host" | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto"
        );
        if protected {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "protected header cannot be nominated by the Connection header",
            );
        }
        names.push(name);
    }
    Ok(names)
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/cse", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn nominated_and_standard_fields_are_removed() {
        let mut r = req(&[
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Expect", "100-continue"),
            ("Content-Type", "application/json"),
        ]);
        request(&mut r).unwrap();
        frame(&mut r, true).unwrap();
        for gone in ["connection", "x-secret", "keep-alive", "te", "expect"] {
            assert!(r.headers.get(gone).is_none(), "{gone}");
        }
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["transfer-encoding"], "chunked");
    }

    #[test]
    fn websocket_upgrade_keeps_its_pair_and_protected_names_are_refused() {
        let mut r = req(&[("Connection", "Upgrade"), ("Upgrade", "WebSocket")]);
        request(&mut r).unwrap();
        assert_eq!(r.headers["upgrade"], "websocket");
        assert_eq!(r.headers["connection"], "Upgrade");
        let mut r = req(&[("Connection", "X-Forwarded-For")]);
        assert!(request(&mut r).is_err());
        let mut r = req(&[("Connection", "a,b,c,d,e,f,g,h,i,j")]);
        assert!(request(&mut r).is_err());
    }
}
