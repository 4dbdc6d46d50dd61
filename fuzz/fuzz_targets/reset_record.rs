//! watchdogd's reset record (`STATE/reset-reason`): `ResetRecord::parse` on
//! any text up to the reader's bound (`MAX_RECORD_BYTES`; the reader refuses
//! longer files before parsing). An accepted record re-renders to text that
//! parses to the same cause and boot, and `describe_previous` renders it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_common::record::{describe_previous, ResetRecord, MAX_RECORD_BYTES};

fuzz_target!(|data: &[u8]| {
    if data.len() as u64 > MAX_RECORD_BYTES {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rec) = ResetRecord::parse(text) {
        let again = ResetRecord::parse(&rec.to_text()).expect("rendered record parses");
        assert_eq!(again.cause, rec.cause);
        assert_eq!(again.boot, rec.boot);
        assert_eq!(again.silent_ms, rec.silent_ms);
        assert_eq!(again, ResetRecord::parse(&again.to_text()).expect("stable"));
        let _ = describe_previous(Some(&rec));
    }
});
