//! The config loader on arbitrary text: no panic; every error names a place in the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use zerocopy_server::config::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = parse(text, Path::new("fuzz.toml")) {
        let shown = errors.to_string();
        assert!(shown.contains("fuzz.toml"), "{shown}");
    }
});
