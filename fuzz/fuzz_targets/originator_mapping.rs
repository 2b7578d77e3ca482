//! Certificate field -> originator: whatever the certificate holds, an accepted originator is
//! one clean header value. Input: first line = regex, rest = certificate field value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::auth::mtls::MtlsAuthenticator;
use m2m_auth_proxy::config::{CertField, MtlsConfig};
use m2m_auth_proxy::originator_syntax::validate_originator;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, value) = text
        .split_once('\n')
        .unwrap_or(("^(?P<originator>.+)$", text));
    if pattern.len() > 200 {
        return;
    }
    let Ok(auth) = MtlsAuthenticator::from_config(&MtlsConfig {
        identity: vec![CertField::Uri],
        originator: pattern.to_string(),
    }) else {
        return;
    };
    if let Some(originator) = auth.derive_originator(value) {
        if validate_originator(&originator).is_ok() {
            assert!(http::HeaderValue::from_str(&originator).is_ok());
            assert!(!originator.contains(['\r', '\n', '\0', ' ']));
        }
    }
});
