//! The configuration loader answers any text with a configuration or an
//! error, never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        // In a directory that does not exist, so relative password files
        // resolve to nothing.
        let _ =
            carpd::config::Config::from_toml(src, Path::new("/nonexistent/carpd-fuzz/carpd.toml"));
    }
});
