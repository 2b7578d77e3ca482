//! htpasswd parsing and verification: never panics, errors never echo the input.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::credentials::htpasswd::HtpasswdFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for insecure in [false, true] {
        if let Ok(file) = HtpasswdFile::parse(Path::new("fuzz"), text, insecure) {
            // cheap formats only: bcrypt (also the dummy hash of an empty file) and huge
            // rounds= values would make the target crawl
            if !file.is_empty() && !text.contains("$2") && !text.contains("rounds=") {
                let _ = file.verify("user", b"password");
            }
        }
    }
});
