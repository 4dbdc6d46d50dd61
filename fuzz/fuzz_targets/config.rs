//! `tether.toml`: `Config::parse` (TOML, per-value checks, timing budget).
//! Any text: an `Ok` or a `ConfigError`, never a panic; an accepted config
//! must pass the budget again (parse is deterministic) and its error
//! messages must render.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tether_common::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/fuzz/tether.toml");
    match Config::parse(text, file) {
        Ok(config) => {
            tether_common::budget::validate(&config).expect("accepted config passes its budget");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
