//! Durations (`"500ms"`, `"1.5s"`): `duration::parse`. An accepted duration
//! formats to text that parses back to exactly the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_common::duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = duration::parse(text) {
        let shown = duration::format(d);
        assert_eq!(duration::parse(&shown), Ok(d), "{text:?} -> {shown:?}");
    }
});
