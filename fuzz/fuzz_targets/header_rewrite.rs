//! Header rewrite: whatever headers the client sends, the upstream gets exactly one
//! X-M2M-Origin (the proven one) and none of the spoofable headers the client sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::headers::{client_originators, rewrite_upstream, Forwarding, ORIGIN};
use pingora::http::RequestHeader;

fuzz_target!(|data: &[u8]| {
    let Ok(mut req) = RequestHeader::build("GET", b"/", None) else {
        return;
    };
    // input: lines of "name:value"
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        let _ = req.append_header(name, value);
    }
    let _ = client_originators(&req);
    rewrite_upstream(
        &mut req,
        &Forwarding {
            originator: Some("Cproven"),
            client_ip: Some([127, 0, 0, 1].into()),
            proto: "https",
            forward_authorization: false,
        },
    )
    .expect("rewrite never fails on valid headers");
    let origins: Vec<_> = req.headers.get_all(ORIGIN).iter().collect();
    assert_eq!(origins, vec!["Cproven"]);
    assert!(req.headers.get("authorization").is_none());
    assert!(req.headers.get("forwarded").is_none());
    assert_eq!(req.headers.get_all("x-forwarded-for").iter().count(), 1);
});
