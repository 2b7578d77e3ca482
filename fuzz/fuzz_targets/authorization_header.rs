//! The `Authorization` header parser: never panics; accepted Basic credentials always have a
//! non-empty user without control characters and a non-empty password.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::auth::authorization::{parse, Credentials};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    if let Ok(Some(Credentials::Basic { user, password })) = parse(&[&value]) {
        assert!(!user.is_empty() && !user.chars().any(char::is_control));
        assert!(!password.is_empty());
    }
    let _ = parse(&[&value, &value]);
});
