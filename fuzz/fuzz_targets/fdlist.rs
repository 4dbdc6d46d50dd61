//! Heartbeat descriptor lists (`TETHER_FDS`, `TETHER_HEARTBEATS`):
//! `FdList::parse`. An accepted list is bounded and round-trips through its
//! `Display` form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_common::fdlist::{FdList, MAX_ENTRIES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match FdList::parse(text) {
        Ok(list) => {
            assert!(list.len() <= MAX_ENTRIES);
            let again = FdList::parse(&list.to_string()).expect("rendered list parses");
            assert_eq!(again.len(), list.len());
            for (name, fd) in list.iter() {
                assert_eq!(again.get(name), Some(fd));
                assert!(fd >= 0);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
