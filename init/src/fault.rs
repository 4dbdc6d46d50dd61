//! Test-only panic injection (cargo feature `fault-inject`, which only the
//! integration tests enable; release and ordinary builds have none of it).
//!
//! `TETHER_INIT_PANIC=POINT` makes init panic every time it passes
//! `POINT`; `POINT:N` only the first N times. Points:
//! - `reaped`: a layer child was just reaped (`waitpid` returned its exit);
//! - `pass`: the end of a loop pass, after its events were handled.
#![allow(clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The variable read (once) at the first point passed.
pub const ENV: &str = "TETHER_INIT_PANIC";

fn armed() -> &'static Option<(String, Option<u32>)> {
    static ARMED: OnceLock<Option<(String, Option<u32>)>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let v = std::env::var(ENV).ok()?;
        Some(match v.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().ok()),
            None => (v, None),
        })
    })
}

/// Panics here if `TETHER_INIT_PANIC` names `point` (and its count is not
/// used up).
pub fn at(point: &str) {
    static FIRED: AtomicU32 = AtomicU32::new(0);
    if let Some((p, limit)) = armed() {
        if p == point {
            let n = FIRED.fetch_add(1, Ordering::SeqCst);
            if limit.is_none_or(|l| n < l) {
                panic!("injected panic at {point} ({ENV}, number {})", n + 1);
            }
        }
    }
}
