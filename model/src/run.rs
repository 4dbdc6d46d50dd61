//! Runs one model and gathers what the README table and the closing note
//! need: states, time, memory, and each property's result with its
//! counterexample (or example).

use std::time::{Duration, Instant};

use stateright::{Checker, Expectation, HasDiscoveries, Model};

use crate::env::{Chain, State, Step};

/// Exploration stops here (memory on a shared machine: about 0.4 KiB a
/// state); a report that hit it says so and counts as failed. Pairs of
/// faults are explored to a smaller cap: they look for counterexamples
/// (what is not promised), not for a proof.
pub const STATE_CAP: usize = 8_000_000;
pub const PAIRS_CAP: usize = 1_000_000;

/// One property's result.
#[derive(Debug)]
pub struct Outcome {
    pub name: &'static str,
    pub expectation: Expectation,
    /// For `always`: the counterexample; for `sometimes`: the example.
    pub path: Option<Vec<(State, Option<Step>)>>,
}

impl Outcome {
    /// Holds (`always`, no counterexample) or found (`sometimes`).
    pub fn ok(&self) -> bool {
        match self.expectation {
            Expectation::Always => self.path.is_none(),
            Expectation::Sometimes => self.path.is_some(),
            Expectation::Eventually => self.path.is_none(),
        }
    }

    pub fn word(&self) -> &'static str {
        match (&self.expectation, self.ok()) {
            (Expectation::Sometimes, true) => "found",
            (Expectation::Sometimes, false) => "NOT FOUND (vacuous?)",
            (_, true) => "holds",
            (_, false) => "VIOLATED",
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub chain: Chain,
    pub unique: usize,
    pub generated: usize,
    pub elapsed: Duration,
    /// Peak resident memory of this process so far, in KiB (`VmHWM`).
    pub peak_kib: Option<u64>,
    pub outcomes: Vec<Outcome>,
    pub cap: usize,
}

impl Report {
    pub fn all_ok(&self) -> bool {
        self.complete() && self.outcomes.iter().all(Outcome::ok)
    }

    /// Every reachable state explored (the cap not hit).
    pub fn complete(&self) -> bool {
        self.generated < self.cap
    }
}

/// Peak resident memory of this process so far, in KiB (`VmHWM`).
pub fn peak_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Explores `chain` exhaustively (breadth first, one thread), up to
/// [`STATE_CAP`] states ([`PAIRS_CAP`] with two faults).
pub fn check(chain: Chain) -> Report {
    check_until(chain, HasDiscoveries::All)
}

/// As [`check`], stopping at the first counterexample when `finish` says
/// so (the teeth test: a mutant only has to be caught once).
pub fn check_until(chain: Chain, finish: HasDiscoveries) -> Report {
    let cap = if chain.max_faults > 1 {
        PAIRS_CAP
    } else {
        STATE_CAP
    };
    let start = Instant::now();
    let props = chain.properties();
    let checker = chain
        .clone()
        .checker()
        .threads(1)
        .target_state_count(cap)
        .finish_when(finish)
        .spawn_bfs()
        .join();
    let elapsed = start.elapsed();
    let outcomes = props
        .iter()
        .map(|p| Outcome {
            name: p.name,
            expectation: p.expectation.clone(),
            path: checker.discovery(p.name).map(|path| path.into_vec()),
        })
        .collect();
    Report {
        unique: checker.unique_state_count(),
        generated: checker.state_count(),
        elapsed,
        peak_kib: peak_kib(),
        outcomes,
        chain,
        cap,
    }
}
