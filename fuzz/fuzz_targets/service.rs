//! Service files: `service::parse(text, file)` — the name is the file's
//! stem, so the first line of the input (bounded) picks the stem and the
//! rest is the TOML text; both are attacker-shaped.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use tether_restarter::service;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (stem, body) = match text.split_once('\n') {
        Some((stem, body)) if stem.len() <= 80 && !stem.contains('/') && !stem.is_empty() => {
            (stem, body)
        }
        _ => ("svc", text),
    };
    let file = PathBuf::from(format!("/fuzz/services/{stem}.toml"));
    match service::parse(body, &file) {
        Ok(spec) => {
            assert!(
                service::valid_name(&spec.name),
                "accepted name {:?}",
                spec.name
            );
            assert!(!spec.exec.is_empty(), "accepted an empty exec");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
