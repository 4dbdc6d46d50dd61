//! Test helpers: the real binaries with a simulated watchdog.
//!
//! Each module is owned by the tests that need it:
//! - `bins`: where the built binaries are, scratch directories.
//! - `hw`: the simulated watchdog hardware (a FIFO reader) and heartbeat
//!   helpers (watchdogd tests, chain tests).
//! - `svc`: helpers for restarter tests.
//! - `chain`: helpers for whole-chain tests (init as PID 1 of a namespace).

pub mod bins;
pub mod chain;
pub mod hw;
pub mod svc;
