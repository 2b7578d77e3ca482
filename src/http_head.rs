//! A request head the proxy forwards must have one reading only, the proxy's: a CSE's HTTP
//! server that upper-cases methods, keeps the last of repeated fields or decodes bytes the
//! proxy ignored would act on another operation than the one the rules judged (issue 26,
//! class 3). Shared by the public listener and the egress listeners.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::HeaderValue;
use pingora::http::RequestHeader;

use crate::onem2m::M2mError;

/// The methods of the oneM2M HTTP binding (TS-0009) the proxy forwards, as `Allow` says them.
/// PATCH is not one of them: no rule can see it (it maps to no operation), and ACME serves
/// PATCH on HTTP/1.0 as a DELETE.
pub const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";

/// `Ok` when the head may be forwarded: a method of [`ALLOW`] exactly as written there (method
/// names are case-sensitive; a CSE that upper-cases `delete` must never see one), at most one
/// `Content-Type`, and its value visible ASCII, SP and HTAB only.
pub fn check(req: &RequestHeader) -> Result<(), M2mError> {
    if !matches!(
        req.method.as_str(),
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "OPTIONS"
    ) {
        return Err(M2mError::method_not_allowed(
            format!("method must be one of {ALLOW}"),
            ALLOW,
        ));
    }
    let mut types = req.headers.get_all(CONTENT_TYPE).iter();
    if let Some(value) = types.next() {
        if types.next().is_some() {
            return Err(M2mError::other(400, "more than one Content-Type"));
        }
        if !plain_text(value) {
            return Err(M2mError::other(
                400,
                "Content-Type must be visible ASCII, space and tab only",
            ));
        }
    }
    Ok(())
}

fn plain_text(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .iter()
        .all(|b| matches!(b, b'\t' | b' '..=b'~'))
}

/// `Err` for an upgrade request with a body (a non-zero `Content-Length`, or any
/// `Transfer-Encoding`): those bytes would reach the CSE before the WebSocket gate exists.
pub fn check_upgrade(req: &RequestHeader) -> Result<(), M2mError> {
    let with_length = req
        .headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .any(|v| v.as_bytes().trim_ascii() != b"0");
    if with_length || req.headers.contains_key(TRANSFER_ENCODING) {
        return Err(M2mError::other(400, "an upgrade request carries no body"));
    }
    Ok(())
}

/// The media types whose `ty` parameter the proxy reads as a create's resource type: a CSE
/// reads `ty` only with the serialisations it supports.
const ONEM2M_TYPES: [&str; 4] = [
    "application/json",
    "application/vnd.onem2m-res+json",
    "application/cbor",
    "application/vnd.onem2m-res+cbor",
];

/// The `Content-Type` the CSE receives for a request the rules decided on, given the value the
/// client sent and the `ty` the proxy read from it: the media type in lower case, then `;ty=N`
/// when there is a `ty`, nothing else, so no CSE can find another `ty` in it (ACME reads the
/// value after the first `=` of the parameters, whatever their name). `Err`: a `ty` with a media
/// type that is not a oneM2M serialisation, which a CSE would not read as a create.
pub fn canonical_content_type(
    content_type: &str,
    ty: Option<u32>,
) -> Result<HeaderValue, &'static str> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = match ty {
        Some(ty) if ONEM2M_TYPES.contains(&media.as_str()) => format!("{media};ty={ty}"),
        Some(_) => return Err("ty needs a oneM2M media type (application/json, application/cbor, or their vnd.onem2m-res forms)"),
        None => media,
    };
    HeaderValue::try_from(text).map_err(|_| "invalid Content-Type")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &[u8])]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/cse-in", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), HeaderValue::from_bytes(v).unwrap())
                .unwrap();
        }
        r
    }

    #[test]
    fn only_the_binding_methods_in_capitals() {
        for m in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"] {
            assert!(check(&req(m, &[])).is_ok(), "{m}");
        }
        for m in [
            "delete", "post", "Get", "PATCH", "patch", "TRACE", "CONNECT", "PROPFIND",
        ] {
            let e = check(&req(m, &[])).unwrap_err();
            assert_eq!(
                (e.status, e.rsc.code(), e.allow),
                (405, 4005, Some(ALLOW)),
                "{m}"
            );
        }
    }

    #[test]
    fn one_content_type_in_plain_ascii() {
        let ok = req("POST", &[("Content-Type", b"application/json;\tty=3")]);
        assert!(check(&ok).is_ok());
        let two = req(
            "POST",
            &[
                ("Content-Type", b"application/json"),
                ("content-type", b"application/json;ty=3"),
            ],
        );
        assert_eq!(check(&two).unwrap_err().status, 400);
        for bad in [
            &b"application/json;\x80;ty=3"[..],
            b"application/json;ty=\xff3",
        ] {
            let e = check(&req("POST", &[("Content-Type", bad)])).unwrap_err();
            assert_eq!((e.status, e.rsc.code()), (400, 4000));
        }
    }

    #[test]
    fn an_upgrade_has_no_body() {
        let up = |h: &[(&str, &[u8])]| check_upgrade(&req("GET", h));
        assert!(up(&[]).is_ok());
        assert!(up(&[("Content-Length", b"0")]).is_ok());
        assert!(up(&[("Content-Length", b"5")]).is_err());
        assert!(up(&[("Transfer-Encoding", b"chunked")]).is_err());
        assert!(up(&[("Transfer-Encoding", b"identity")]).is_err());
    }

    #[test]
    fn the_canonical_content_type_carries_the_ty_the_proxy_read_and_nothing_else() {
        let c = |ct, ty| canonical_content_type(ct, ty).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(c("application/json", None).unwrap(), "application/json");
        assert_eq!(
            c("Application/JSON ; charset=utf-8 ; ty=3", Some(3)).unwrap(),
            "application/json;ty=3"
        );
        // ACME would read 3 as ty here; the proxy read none, and the CSE gets none
        assert_eq!(
            c("application/json;foo=3", None).unwrap(),
            "application/json"
        );
        assert_eq!(
            c("application/vnd.onem2m-res+cbor;ty=\"16\"", Some(16)).unwrap(),
            "application/vnd.onem2m-res+cbor;ty=16"
        );
        assert!(c("text/plain;ty=3", Some(3)).is_err());
        assert!(c(";ty=3", Some(3)).is_err());
    }
}
