//! PROXY protocol headers (`ppp` behind the proxy's own bounds): never panics; an accepted
//! header is within the input and `MAX_HEADER`, reads the same on its own bytes, starts like a
//! header, and every cut of it waits for more rather than being refused or accepted early (the
//! read loop relies on that when a header arrives in pieces).
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::proxy_protocol::{parse, starts_header, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((len, source))) = parse(data) else {
        return;
    };
    assert!(len <= data.len() && len <= MAX_HEADER);
    assert_eq!(parse(&data[..len]), Ok(Some((len, source))));
    assert_eq!(starts_header(data), Some(true));
    for cut in 1..len {
        assert_eq!(parse(&data[..cut]), Ok(None), "cut at {cut} of {len}");
    }
});
