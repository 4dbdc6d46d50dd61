//! The pure core of tether-init, as a library: what the model checker
//! (`model/`) links. `layers` decides when init starts, restarts, kills or
//! gives up on its two layer children, `beat` when init beats to watchdogd;
//! neither makes a system call. The binary
//! (`main.rs`) compiles the same file as its own module.

#![forbid(unsafe_code)]

pub mod beat;
pub mod layers;
