//! The CHAIN model at the coarse tick, every configuration, single faults
//! (CI). Every `always` must hold and every `sometimes` be found.

use std::time::Duration;

use stateright::Expectation;

use tether_common::budget::{self, Rule};
use tether_model::configs;
use tether_model::env::{Chain, Fault, LayerId};
use tether_model::run::check;

fn failures(chain: Chain) -> Vec<String> {
    let report = check(chain);
    let mut bad: Vec<String> = report
        .outcomes
        .iter()
        .filter(|o| !o.ok())
        .map(|o| format!("{}: {} {}", report.chain.name, o.word(), o.name))
        .collect();
    if !report.complete() {
        bad.push(format!("{}: state cap hit", report.chain.name));
    }
    eprintln!(
        "{}: {} states, {:.1}s",
        report.chain.name,
        report.unique,
        report.elapsed.as_secs_f64()
    );
    bad
}

#[test]
fn every_single_fault_in_every_configuration_ends_as_promised() {
    let mut bad = Vec::new();
    for n in configs::all(1) {
        // The model turns watchdogd's loop every tick: never less often
        // than the shell, which waits at most one pet interval.
        let t = &n.config.timing;
        let pet = t
            .beat_interval
            .min(budget::programmed(t.hardware_timeout) / 4);
        assert!(
            n.tick <= pet,
            "{}: tick {:?} > pet interval {pet:?}",
            n.name,
            n.tick
        );
        let chain = Chain::new(&n.name, n.config, n.tick, 1);
        bad.extend(failures(chain));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Why `budget` rule 4 exists (found by this model): with a window no
/// longer than a crash loop's run, which the validator accepted before the
/// rule, a restarter crash loop (each start beating once, then crashing
/// late) never exhausts init's budget, as the first starts leave the
/// window before the last: no orderly reboot within the table's bound.
/// The defaults' loop: 10 starts 5 s apart (the start latency; the reap
/// rounds to no tick), the first out of a 50 s window when the tenth
/// child dies. (Rule 4 counts a cycle as `max(restart_delay,
/// KILL_REAP_MIN) + max(startup_grace, START_LATENCY_MIN)`, 6 s: a
/// sufficient margin, not the least one.)
#[test]
fn a_window_rule_4_refuses_lets_a_crash_loop_outlast_the_budget() {
    let mut config = configs::defaults();
    config.init.window = Duration::from_secs(50);
    let err = budget::validate(&config).unwrap_err();
    assert_eq!(err.kind, Rule::LoopWithinWindow, "{err}");
    let mut chain = Chain::new("defaults, window 50s", config, Duration::from_secs(1), 1);
    chain.faults = vec![Fault::CrashLoop(LayerId::Restarter)];
    let report = check(chain);
    assert!(report.complete());
    let violated: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|o| o.expectation == Expectation::Always && !o.ok())
        .map(|o| o.name)
        .collect();
    assert!(
        violated.contains(&"every single fault ends in its rung within its bound"),
        "{violated:?}"
    );
}
