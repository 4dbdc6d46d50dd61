//! The timing budget of DESIGN.md: which configurations are refused because
//! the rungs of the ladder overlap, and the worst-case time from each fault
//! class to recovery or reset.
//!
//! The rules, checked in this order (the first broken one is reported):
//! 1. `beat_interval < hang_timeout`: a layer must beat at least once before
//!    init calls it hung.
//! 2. for each layer (init, restarter, and any named in
//!    `[timing.stale_timeout_by_layer]`):
//!    `stale_timeout(layer) > hang_timeout + restart_delay + startup_grace`:
//!    watchdogd must not give up before init's repair could land.
//! 3. `hang_timeout + restart_delay + startup_grace < hardware_timeout`: a
//!    hung watchdogd must be replaced before the hardware fires.
//!
//! `beat_interval < stale_timeout(layer)` follows from 1 and 2, so it is not
//! checked on its own.
//!
//! Bounds use saturating arithmetic: absurdly large values give
//! `Duration::MAX`, not a panic.

use crate::config::{Config, Timing};
use crate::duration::format;
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
    /// The values summed into `left` and `right`, in the rule's order (one
    /// each for a side that is a single key).
    pub left_terms: Box<[Duration]>,
    pub right_terms: Box<[Duration]>,
    /// Which of the rules, for callers that match on it.
    pub kind: Rule,
}

/// The rules of the budget, in the order they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `beat_interval < hang_timeout`
    BeatBeforeHang,
    /// `stale_timeout (layer) > hang_timeout + restart_delay + startup_grace`
    StaleAfterRepair,
    /// `hang_timeout + restart_delay + startup_grace < hardware_timeout`
    RepairBeforeHardware,
}

impl Rule {
    /// `<` or `>`: how the rule compares its left side to its right.
    fn op(self) -> &'static str {
        match self {
            Rule::StaleAfterRepair => ">",
            Rule::BeatBeforeHang | Rule::RepairBeforeHardware => "<",
        }
    }

    /// What would go wrong if the rule were broken.
    pub fn why(self) -> &'static str {
        match self {
            Rule::BeatBeforeHang => {
                "init would kill a healthy layer as hung between two of its beats"
            }
            Rule::StaleAfterRepair => "watchdogd would give up before init's repair could land",
            Rule::RepairBeforeHardware => {
                "a hung watchdogd could not be replaced before the hardware fires"
            }
        }
    }
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = self.kind.op();
        let (lhs, rhs) = self
            .rule
            .split_once(&format!(" {op} "))
            .unwrap_or((&self.rule, "?"));
        let side = |terms: &[Duration], sum: Duration| match terms {
            [_, _, ..] => {
                let terms: Vec<String> = terms.iter().map(|d| format(*d)).collect();
                format!("{} = {}", terms.join(" + "), format(sum))
            }
            _ => format(sum),
        };
        let (broken, gap, by) = if op == "<" {
            (">=", self.left.saturating_sub(self.right), "over by")
        } else {
            ("<=", self.right.saturating_sub(self.left), "short by")
        };
        let by = if gap.is_zero() {
            "equal, but the inequality is strict".to_string()
        } else {
            format!("{by} {}", format(gap))
        };
        write!(
            f,
            "timing budget: {lhs} must be {op} {rhs}, but {} {broken} {} ({by}): {}",
            side(&self.left_terms, self.left),
            side(&self.right_terms, self.right),
            self.kind.why()
        )
    }
}

impl std::error::Error for BudgetError {}

/// What a fault ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Restart,
    Reboot,
    HardwareReset,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Restart => "restart",
            Outcome::Reboot => "orderly reboot",
            Outcome::HardwareReset => "hardware reset",
        })
    }
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

/// The layers watchdogd watches: init, the restarter, and any other named in
/// `[timing.stale_timeout_by_layer]`.
fn watched_layers(t: &Timing) -> Vec<&str> {
    let mut layers = vec!["init", "restarter"];
    layers.extend(
        t.stale_timeout_by_layer
            .keys()
            .map(String::as_str)
            .filter(|l| !["init", "restarter"].contains(l)),
    );
    layers
}

fn sum(terms: &[Duration]) -> Duration {
    terms
        .iter()
        .fold(Duration::ZERO, |a, b| a.saturating_add(*b))
}

/// Checks every inequality; the first broken one is returned.
pub fn validate(config: &Config) -> Result<(), BudgetError> {
    let t = &config.timing;
    let repair = [t.hang_timeout, t.restart_delay, t.startup_grace];
    let repair_rule = "hang_timeout + restart_delay + startup_grace";
    let broken = |kind, rule: String, left: &[Duration], right: &[Duration]| BudgetError {
        rule,
        left: sum(left),
        right: sum(right),
        left_terms: left.into(),
        right_terms: right.into(),
        kind,
    };

    if t.beat_interval >= t.hang_timeout {
        let rule = "beat_interval < hang_timeout".to_string();
        return Err(broken(
            Rule::BeatBeforeHang,
            rule,
            &[t.beat_interval],
            &[t.hang_timeout],
        ));
    }
    for layer in watched_layers(t) {
        let stale = t.stale_timeout_for(layer);
        if stale <= sum(&repair) {
            let rule = format!("stale_timeout ({layer}) > {repair_rule}");
            return Err(broken(Rule::StaleAfterRepair, rule, &[stale], &repair));
        }
    }
    if sum(&repair) >= t.hardware_timeout {
        let rule = format!("{repair_rule} < hardware_timeout");
        return Err(broken(
            Rule::RepairBeforeHardware,
            rule,
            &repair,
            &[t.hardware_timeout],
        ));
    }
    Ok(())
}

/// Fault class → worst-case time to recovery or reset, for the chain's layers.
pub fn table(config: &Config) -> Vec<BudgetRow> {
    let t = &config.timing;
    let row = |fault: &str, outcome, terms: &[Duration], formula: &str| BudgetRow {
        fault: fault.into(),
        outcome,
        bound: sum(terms),
        formula: formula.into(),
    };
    let crash = [t.restart_delay, t.startup_grace];
    let hang = [t.hang_timeout, t.restart_delay, t.startup_grace];
    let stale_init = t.stale_timeout_for("init");
    let exhausted = [
        config.init.window,
        config.init.stop_timeout,
        config.init.kill_grace,
    ];
    use Outcome::*;
    vec![
        row(
            "restarter crash",
            Restart,
            &crash,
            "restart_delay + startup_grace",
        ),
        row(
            "restarter hang",
            Restart,
            &hang,
            "hang_timeout + restart_delay + startup_grace",
        ),
        row(
            "watchdogd crash",
            Restart,
            &crash,
            "restart_delay + startup_grace (hardware stays armed)",
        ),
        row(
            "watchdogd hang",
            Restart,
            &hang,
            "hang_timeout + restart_delay + startup_grace",
        ),
        row(
            "init hang",
            HardwareReset,
            &[stale_init, t.hardware_timeout],
            "stale_timeout (init) + hardware_timeout",
        ),
        row(
            "init crash",
            HardwareReset,
            &[t.hardware_timeout],
            "kernel panic reboots (panic=N); hardware_timeout as backstop",
        ),
        row(
            "kernel hang",
            HardwareReset,
            &[t.hardware_timeout],
            "hardware_timeout",
        ),
        row(
            "layer restart budget exhausted",
            Reboot,
            &exhausted,
            "[init] window + stop_timeout + kill_grace",
        ),
    ]
}

/// The table as aligned text: fault, outcome, bound, formula.
pub fn render_table(rows: &[BudgetRow]) -> String {
    let header = ["fault", "outcome", "bound", "formula"];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.fault.clone(),
                r.outcome.to_string(),
                format(r.bound),
                r.formula.clone(),
            ]
        })
        .collect();
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2)];
    let line = |c: [&str; 4]| {
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {}\n",
            c[0],
            c[1],
            c[2],
            c[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
    };
    let mut out = line(header);
    for c in &cells {
        out += &line([&c[0], &c[1], &c[2], &c[3]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn with(edit: impl FnOnce(&mut Timing)) -> Config {
        let mut c = Config::default();
        edit(&mut c.timing);
        c
    }

    #[test]
    fn defaults_fit_the_budget() {
        assert_eq!(validate(&Config::default()), Ok(()));
    }

    #[test]
    fn beat_not_below_hang_timeout_is_refused() {
        let err = validate(&with(|t| t.beat_interval = secs(10))).unwrap_err();
        assert_eq!(
            (err.kind, err.rule.as_str()),
            (Rule::BeatBeforeHang, "beat_interval < hang_timeout")
        );
        let msg = err.to_string();
        assert!(msg.contains("beat_interval must be < hang_timeout, but 10s >= 10s (equal, but the inequality is strict)"), "{msg}");
        let msg = validate(&with(|t| t.beat_interval = secs(12)))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("12s >= 10s (over by 2s)"), "{msg}");
    }

    #[test]
    fn stale_timeout_within_repair_time_is_refused_with_shortfall() {
        let err = validate(&with(|t| t.stale_timeout = secs(15))).unwrap_err();
        assert_eq!(
            (err.kind, err.left, err.right),
            (Rule::StaleAfterRepair, secs(15), secs(16))
        );
        assert_eq!(
            err.to_string(),
            "timing budget: stale_timeout (init) must be > hang_timeout + restart_delay + startup_grace, \
             but 15s <= 10s + 1s + 5s = 16s (short by 1s): watchdogd would give up before init's repair could land"
        );
    }

    #[test]
    fn per_layer_stale_override_is_checked_for_that_layer() {
        let err = validate(&with(|t| {
            t.stale_timeout_by_layer
                .insert("restarter".into(), secs(12));
        }))
        .unwrap_err();
        assert!(
            err.rule.starts_with("stale_timeout (restarter) >"),
            "{}",
            err.rule
        );
        assert!(
            err.to_string()
                .contains("12s <= 10s + 1s + 5s = 16s (short by 4s)"),
            "{err}"
        );

        let err = validate(&with(|t| {
            t.stale_timeout = secs(25);
            t.stale_timeout_by_layer
                .insert("sensor-bus".into(), secs(16));
        }))
        .unwrap_err();
        assert!(
            err.rule.starts_with("stale_timeout (sensor-bus) >"),
            "{}",
            err.rule
        );
        assert!(
            err.to_string()
                .contains("(equal, but the inequality is strict)"),
            "{err}"
        );
    }

    #[test]
    fn repair_not_before_hardware_timeout_is_refused() {
        let err = validate(&with(|t| {
            t.startup_grace = secs(20);
            t.stale_timeout = secs(40);
        }))
        .unwrap_err();
        assert_eq!(err.kind, Rule::RepairBeforeHardware);
        assert_eq!(
            err.rule,
            "hang_timeout + restart_delay + startup_grace < hardware_timeout"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("but 10s + 1s + 20s = 31s >= 30s (over by 1s)"),
            "{msg}"
        );
        assert!(
            msg.contains("hung watchdogd could not be replaced before the hardware fires"),
            "{msg}"
        );
    }

    #[test]
    fn rules_are_reported_in_order() {
        // Breaks both rule 1 and rule 3: rule 1 is reported.
        let err = validate(&with(|t| {
            t.beat_interval = secs(40);
            t.hardware_timeout = secs(2);
        }))
        .unwrap_err();
        assert_eq!(err.rule, "beat_interval < hang_timeout");
    }

    #[test]
    fn table_bounds_follow_the_config() {
        let c = with(|t| {
            t.stale_timeout_by_layer.insert("init".into(), secs(25));
            t.hardware_timeout = secs(40);
            t.startup_grace = secs(2);
        });
        let rows = table(&c);
        let bound = |fault: &str| {
            rows.iter()
                .find(|r| r.fault == fault)
                .map(|r| (r.outcome, r.bound))
                .unwrap()
        };
        assert_eq!(bound("init hang"), (Outcome::HardwareReset, secs(25 + 40)));
        assert_eq!(bound("restarter crash"), (Outcome::Restart, secs(1 + 2)));
        assert_eq!(
            bound("restarter hang"),
            (Outcome::Restart, secs(10 + 1 + 2))
        );
        assert_eq!(
            bound("watchdogd hang"),
            (Outcome::Restart, secs(10 + 1 + 2))
        );
        assert_eq!(bound("kernel hang"), (Outcome::HardwareReset, secs(40)));
        assert_eq!(bound("init crash"), (Outcome::HardwareReset, secs(40)));
        assert_eq!(
            bound("layer restart budget exhausted"),
            (Outcome::Reboot, secs(300 + 30 + 3))
        );
    }

    #[test]
    fn rendered_table_is_aligned() {
        let text = render_table(&table(&Config::default()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 9);
        assert!(lines[0].starts_with("fault "), "{text}");
        let formula_column = lines[0].find("formula").unwrap();
        assert!(lines.iter().all(|l| l.len() > formula_column), "{text}");
        let init_hang = lines.iter().find(|l| l.starts_with("init hang")).unwrap();
        assert!(
            init_hang.contains("hardware reset") && init_hang.contains("50s"),
            "{init_hang}"
        );
        assert_eq!(
            &init_hang[formula_column..],
            "stale_timeout (init) + hardware_timeout"
        );
    }
}
