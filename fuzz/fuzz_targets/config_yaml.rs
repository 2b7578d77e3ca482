//! The YAML config: parsing and validation never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(Path::new("fuzz.yaml"), text) {
        let _ = config.validate();
    }
});
