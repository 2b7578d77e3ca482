//! What the upstream is allowed to see: client-supplied identity headers are removed and
//! replaced by the proxy's own.

use std::net::IpAddr;

use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

pub const ORIGIN: &str = "X-M2M-Origin";

/// Headers a client could use to claim an identity or a network origin the upstream might trust:
/// always removed before forwarding. `name` is a `HeaderName`'s, i.e. lowercase, so the names
/// are matched case-insensitively.
fn spoofable(name: &str) -> bool {
    matches!(
        name,
        "x-m2m-origin"
            | "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "x-real-ip"
            | "x-client-cert"
            | "x-client-verify"
            | "x-client-dn"
            | "x-ssl-client-cert"
            | "x-ssl-client-dn"
            | "x-ssl-client-verify"
            | "x-forwarded-client-cert"
            | "ssl-client-cert"
            | "proxy-authorization"
    )
}

/// Stand-in for a header value that is not valid text: never equal to a real originator.
const UNREADABLE: &str = "\u{fffd}";

/// The client's `X-M2M-Origin` values, all of them, whatever the letter case of the name.
pub fn client_originators(req: &RequestHeader) -> Vec<&str> {
    // a constant name: no parsing of `ORIGIN` for each request
    const ORIGIN_NAME: http::HeaderName = http::HeaderName::from_static("x-m2m-origin");
    req.headers
        .get_all(&ORIGIN_NAME)
        .iter()
        .map(|v| v.to_str().unwrap_or(UNREADABLE))
        .collect()
}

/// `Expect: 100-continue` on an HTTP/1.1 request (an HTTP/1.0 client's expectation is ignored,
/// RFC 9110 §10.1.1): the client waits for a `100 Continue` before it sends the body.
pub fn expects_continue(req: &RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

pub struct Forwarding<'a> {
    /// `None`: forward no originator at all (anonymous access).
    pub originator: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub proto: &'static str,
    pub forward_authorization: bool,
}

/// The `X-Forwarded-For` value for a client address. The same for every request of a
/// connection: the request path makes it once per connection (its clones share the bytes).
pub fn forwarded_for(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).expect("an IP address is a header value")
}

/// Rewrite the request the upstream will receive.
pub fn rewrite_upstream(req: &mut RequestHeader, fwd: &Forwarding<'_>) -> Result<()> {
    rewrite_upstream_for(req, fwd, fwd.client_ip.map(forwarded_for))
}

/// `rewrite_upstream` with the `X-Forwarded-For` value already made (`forwarded_for` of
/// `fwd.client_ip`).
pub fn rewrite_upstream_for(
    req: &mut RequestHeader,
    fwd: &Forwarding<'_>,
    forwarded_for: Option<HeaderValue>,
) -> Result<()> {
    // One pass over the headers the request has (usually a handful) instead of a removal per
    // spoofable name: the list is long and the names are rarely present.
    let unwanted = |name: &http::HeaderName| {
        let name = name.as_str();
        spoofable(name) || (!fwd.forward_authorization && name == "authorization")
    };
    if req.headers.keys().any(unwanted) {
        let unwanted: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|name| unwanted(name))
            .cloned()
            .collect();
        for name in &unwanted {
            req.remove_header(name);
        }
    }
    // Pingora has already refused differing Content-Length values; identical repeats (two
    // headers, or "5, 5") go upstream as one value.
    let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let repeated = lengths.next().is_some();
        let listed = first.as_bytes().contains(&b',');
        if repeated || listed {
            let single = first
                .to_str()
                .ok()
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_owned())
                .unwrap_or_default();
            req.insert_header(http::header::CONTENT_LENGTH, single)?;
        }
    }
    if let Some(originator) = fwd.originator {
        req.insert_header(ORIGIN, originator)?;
    }
    if let Some(value) = forwarded_for {
        req.insert_header("X-Forwarded-For", value)?;
    }
    req.insert_header("X-Forwarded-Proto", HeaderValue::from_static(fwd.proto))?;
    Ok(())
}

/// Hop-by-hop headers of an upstream response that are not framing (RFC 9110 §7.6.1): meant
/// for the link between the CSE and the proxy, never for the client. `Connection` itself and
/// `Transfer-Encoding` are left to the HTTP/1.1 writer, which sets its own.
const HOP_BY_HOP_RESPONSE: &[&str] = &["keep-alive", "proxy-connection", "te", "trailer"];

/// Remove the response's hop-by-hop headers: the fixed ones and those its `Connection` header
/// names. On a `101` the `Upgrade` header is the answer to the client's upgrade and stays.
pub fn strip_hop_by_hop_response(resp: &mut ResponseHeader) {
    let switching = resp.status.as_u16() == 101;
    let nominated: Vec<String> = resp
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        // framing and the connection's own tokens are the writer's business, not removals
        .filter(|token| {
            let kept = matches!(
                token.as_str(),
                "" | "close" | "keep-alive" | "connection" | "transfer-encoding" | "content-length"
            ) || (switching && token == "upgrade");
            !kept
        })
        .collect();
    let unwanted: Vec<http::HeaderName> = resp
        .headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            HOP_BY_HOP_RESPONSE.contains(&name) || nominated.iter().any(|n| n == name)
        })
        .cloned()
        .collect();
    for name in &unwanted {
        resp.remove_header(name);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn hop_by_hop_response_headers_and_the_ones_connection_names_are_removed() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("Connection", "keep-alive, X-Hop, content-length"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Content-Length", "2"),
            ("X-M2M-RSC", "2000"),
        ] {
            resp.append_header(k.to_string(), v).unwrap();
        }
        strip_hop_by_hop_response(&mut resp);
        let mut names: Vec<&str> = resp.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["connection", "content-length", "x-m2m-rsc"]);
    }

    #[test]
    fn a_switching_protocols_answer_keeps_its_upgrade_header() {
        let mut resp = ResponseHeader::build(101, None).unwrap();
        resp.append_header("Connection", "Upgrade").unwrap();
        resp.append_header("Upgrade", "websocket").unwrap();
        strip_hop_by_hop_response(&mut resp);
        assert_eq!(resp.headers.get("upgrade").unwrap(), "websocket");
    }
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/cse", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn spoofed_origins_in_any_case_are_replaced_by_one() {
        let mut req = request(&[
            ("x-m2m-origin", "CAdmin"),
            ("X-M2M-ORIGIN", "Cother"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("Authorization", "Basic eDp5"),
        ]);
        assert_eq!(client_originators(&req), vec!["CAdmin", "Cother"]);
        rewrite_upstream(
            &mut req,
            &Forwarding {
                originator: Some("Cae1"),
                client_ip: Some("127.0.0.1".parse().unwrap()),
                proto: "https",
                forward_authorization: false,
            },
        )
        .unwrap();
        let origins: Vec<_> = req.headers.get_all(ORIGIN).iter().collect();
        assert_eq!(origins, vec!["Cae1"]);
        assert_eq!(req.headers["X-Forwarded-For"], "127.0.0.1");
        assert_eq!(req.headers["X-Forwarded-Proto"], "https");
        assert!(req.headers.get("Authorization").is_none());
    }

    #[test]
    fn every_spoofable_name_in_any_case_is_removed() {
        let names = [
            "X-M2M-Origin",
            "Forwarded",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Forwarded-Host",
            "X-Forwarded-Port",
            "X-Real-IP",
            "X-Client-Cert",
            "X-Client-Verify",
            "X-Client-DN",
            "X-SSL-Client-Cert",
            "X-SSL-Client-DN",
            "X-SSL-Client-Verify",
            "X-Forwarded-Client-Cert",
            "SSL-Client-Cert",
            "Proxy-Authorization",
        ];
        let mut headers: Vec<(String, &str)> = vec![("X-Kept".to_string(), "1")];
        for name in names {
            headers.push((name.to_string(), "a"));
            headers.push((name.to_ascii_uppercase(), "b"));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let mut req = request(&headers);
        rewrite_upstream(
            &mut req,
            &Forwarding {
                originator: None,
                client_ip: None,
                proto: "https",
                forward_authorization: true,
            },
        )
        .unwrap();
        let mut left: Vec<&str> = req.headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-forwarded-proto", "x-kept"]);
    }

    #[test]
    fn anonymous_forwards_no_origin() {
        let mut req = request(&[("X-M2M-Origin", "CAdmin")]);
        rewrite_upstream(
            &mut req,
            &Forwarding {
                originator: None,
                client_ip: None,
                proto: "http",
                forward_authorization: true,
            },
        )
        .unwrap();
        assert!(req.headers.get(ORIGIN).is_none());
    }
}
