//! sd_notify datagrams: `parse_datagram(bytes)`. Accepted messages are
//! bounded: STATUS text at most `STATUS_MAX_CHARS` characters with no ASCII
//! control character in it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_restarter::notify::{parse_datagram, NotifyMsg, MAX_DATAGRAM, STATUS_MAX_CHARS};

fuzz_target!(|data: &[u8]| {
    match parse_datagram(data) {
        Ok(msgs) => {
            assert!(data.len() <= MAX_DATAGRAM);
            assert!(!msgs.is_empty());
            for m in msgs {
                if let NotifyMsg::Status(s) = m {
                    assert!(s.chars().count() <= STATUS_MAX_CHARS);
                    assert!(!s.chars().any(|c| c.is_ascii_control()));
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
