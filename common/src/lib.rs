//! Shared pieces of the tether chain. See `shared/DESIGN.md` (the contract
//! between the three binaries) and `docs/PROTOCOL.md` in this repository.
//!
//! `sys` is the one home of `unsafe` in the workspace.

pub mod budget;
pub mod clock;
pub mod config;
pub mod deadlines;
pub mod duration;
pub mod fdlist;
pub mod heartbeat;
pub mod logging;
pub mod record;
pub mod relay;
pub mod sys;
pub mod watchdog_dev;
