//! The timing budget of DESIGN.md: which configurations are refused because
//! the rungs of the ladder overlap, and the worst-case time from each fault
//! class to recovery or reset.

use crate::config::Config;
use std::fmt;
use std::time::Duration;

/// A broken inequality: which one, the two sides, and by how much.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetError {
    /// The inequality that must hold, in words with the key names, e.g.
    /// `stale_timeout (init) > hang_timeout + restart_delay + startup_grace`.
    pub rule: String,
    pub left: Duration,
    pub right: Duration,
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!("common-config helper: say which inequality fails and by how much")
    }
}

/// What a fault ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Restart,
    Reboot,
    HardwareReset,
}

/// One row of the budget table.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetRow {
    /// e.g. `restarter hang`.
    pub fault: String,
    pub outcome: Outcome,
    /// Worst-case time from the fault to the outcome.
    pub bound: Duration,
    /// How the bound is computed, e.g. `hang_timeout + restart_delay`.
    pub formula: String,
}

/// Checks every inequality; the first broken one is returned.
pub fn validate(config: &Config) -> Result<(), BudgetError> {
    let _ = config;
    todo!("common-config helper")
}

/// Fault class → worst-case time to recovery or reset, for the chain's layers.
pub fn table(config: &Config) -> Vec<BudgetRow> {
    let _ = config;
    todo!("common-config helper")
}
