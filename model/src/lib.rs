//! The CHAIN model: tether's shipped decision cores explored exhaustively
//! by [stateright](https://crates.io/crates/stateright) against every single
//! fault at every moment (issue 14; DESIGN.md "The guarantee", "Who watches
//! whom", "Timing budget").
//!
//! The transition function *is* the shipped code: init's
//! [`Layers::handle`](tether_init::layers::Layers::handle), watchdogd's
//! [`Gate`](tether_watchdogd::gate::Gate) and [`Device`](tether_watchdogd::device::Device) cores, the heartbeat [`Watch`](tether_common::heartbeat::Watch) credit rule, and
//! `budget::{validate, table}` for the configurations and the bounds. What
//! is written here is the world around them ([`env`]): processes with start
//! and kill→reap latencies, heartbeat pipes, the hardware, faults; and the
//! few lines of shell glue the cores do not hold (listed in [`env`]).
//!
//! Time is discrete (one `tick` per step) and canonical: the model's clock
//! stays at [`BASE`] and every stored time is shifted back by a tick
//! (`rebase` on each core), so a steady state repeats exactly and the state
//! space is finite.

pub mod configs;
pub mod env;
pub mod props;
pub mod run;
pub mod services;
pub mod timeline;

pub use env::{Chain, Fault, State, Step};

use tether_common::clock::MonoTime;

/// The model's canonical `now`: far enough from zero that every clamped
/// age fits.
pub const BASE: MonoTime = MonoTime::from_duration(std::time::Duration::from_secs(1_000_000));

/// Switches on one deliberately broken guard of the cores (teeth test):
/// `gate` (staleness off by one tick) or `budget` (the layer restart budget
/// ignored), in the shipped code; for the services model, whose core
/// (`restarter/src/supervisor.rs`) had another owner this session, its
/// guards fed a wrong parameter: `svc-delay` (the core gets `db` without
/// its restart delay) or `svc-requires` (the core gets `app` without its
/// `requires`), while the properties judge by the configured specs. Only
/// in a build with the `mutants` feature.
pub fn mutant(name: &str) -> Result<(), String> {
    #[cfg(feature = "mutants")]
    {
        use std::sync::atomic::Ordering;
        match name {
            "gate" => {
                tether_watchdogd::gate::mutants::STALE_OFF_BY_ONE.store(true, Ordering::Relaxed)
            }
            "budget" => tether_init::layers::mutants::IGNORE_BUDGET.store(true, Ordering::Relaxed),
            "svc-delay" => crate::services::mutants::NO_DELAY.store(true, Ordering::Relaxed),
            "svc-requires" => crate::services::mutants::NO_REQUIRES.store(true, Ordering::Relaxed),
            other => {
                return Err(format!(
                    "unknown mutant {other:?} (gate, budget, svc-delay, svc-requires)"
                ))
            }
        }
        Ok(())
    }
    #[cfg(not(feature = "mutants"))]
    {
        Err(format!(
            "mutant {name:?}: this build has no mutants (build with --features mutants)"
        ))
    }
}
