//! The control protocol: `parse_request(bytes)` on anything a client may
//! send. An accepted request is within the size bound and survives its own
//! rendering: the `Display` form (what `tetherctl` sends and the server
//! logs) parses back to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_restarter::control::{parse_request, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(req) => {
            assert!(data.len() <= MAX_REQUEST, "accepted {} bytes", data.len());
            let _ = req.changes_state();
            let line = format!("{req}\n");
            assert_eq!(parse_request(line.as_bytes()), Ok(req.clone()), "{line:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
