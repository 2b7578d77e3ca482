//! Tokens file parsing and lookup: never panics.
#![no_main]

use std::path::Path;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::credentials::tokens::TokenFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = TokenFile::parse(Path::new("fuzz"), text) {
        let _ = file.lookup(data, SystemTime::now());
    }
});
