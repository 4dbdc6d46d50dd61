//! The properties (issue 14): each `always` paired with a `sometimes` that
//! shows it is not vacuous. Bounded response is a safety property: a state
//! in which a fault is older than its bound without having ended in its
//! rung is a violation (no `eventually`, which stateright may miss on
//! cycles).

use stateright::Property;

use crate::env::{Chain, End, Fault, Phase, State};
use tether_common::budget::Outcome as Rung;
use tether_init::layers::{Layer, State as LayerState};

/// `(always, sometimes)` names, in the README's order.
pub const PAIRS: [(&str, &str); 6] = [
    (
        "never pets while a layer is stale (from its last write)",
        "sometimes: petting withheld for a stale layer",
    ),
    (
        "at most one live process per layer",
        "sometimes: a layer killed and restarted",
    ),
    (
        "every single fault ends in its rung within its bound",
        "sometimes: a single fault ends in a restart",
    ),
    (
        "a layer crash or hang never ends in a reset or reboot",
        "sometimes: a layer crash or hang recovered",
    ),
    (
        "no reset or reboot without a fault",
        "sometimes: steady state petting, no fault",
    ),
    (
        "an exhausted restart budget ends in one orderly reboot",
        "sometimes: a crash loop ends in the reboot",
    ),
];

fn petting_withheld(_: &Chain, s: &State) -> bool {
    s.procs[0]
        .iter()
        .filter_map(|p| p.wd.as_ref())
        .any(|wd| !wd.gate.is_petting())
}

fn no_stale_pet(_: &Chain, s: &State) -> bool {
    !s.stale_pet
}

fn one_live(_: &Chain, s: &State) -> bool {
    !s.duplicate
        && s.procs
            .iter()
            .all(|ps| ps.iter().filter(|p| p.live()).count() <= 1)
}

fn killed_and_restarted(_: &Chain, s: &State) -> bool {
    Layer::ALL
        .iter()
        .any(|l| matches!(s.layers.state(*l), LayerState::Killing { .. }))
        && s.procs.iter().flatten().any(|p| !p.live())
}

/// The first fault's rung and bound, when it is the only one.
fn in_rung_and_bound(m: &Chain, s: &State) -> bool {
    let [f] = s.faults.as_slice() else {
        return true;
    };
    let e = m.expect(f.fault);
    match s.end {
        Some((end, at)) => {
            (end.rung() == e.rung || (e.or_reboot && end == End::Reboot)) && at <= e.bound
        }
        None => f.elapsed <= e.bound,
    }
}

fn rung_restart(_: &Chain, s: &State) -> bool {
    s.faults.len() == 1 && matches!(s.end, Some((End::Recovered, _)))
}

fn rung_reboot(_: &Chain, s: &State) -> bool {
    s.faults.len() == 1 && matches!(s.end, Some((End::Reboot, _)))
}

fn rung_reset(_: &Chain, s: &State) -> bool {
    s.faults.len() == 1 && matches!(s.end, Some((End::Reset, _)))
}

fn layer_fault_no_reset(_: &Chain, s: &State) -> bool {
    let layer_only =
        !s.faults.is_empty() && s.faults.iter().all(|f| f.fault.is_layer_crash_or_hang());
    !(layer_only && matches!(s.end, Some((End::Reset | End::Reboot, _))))
}

fn layer_fault_recovered(_: &Chain, s: &State) -> bool {
    matches!(s.end, Some((End::Recovered, _)))
        && s.faults.iter().all(|f| f.fault.is_layer_crash_or_hang())
}

fn no_end_without_fault(_: &Chain, s: &State) -> bool {
    !(s.faults.is_empty() && s.end.is_some())
}

fn steady(_: &Chain, s: &State) -> bool {
    s.faults.is_empty()
        && s.procs[1]
            .iter()
            .any(|p| matches!(p.phase, Phase::Running { .. }))
        && s.procs[0]
            .iter()
            .filter_map(|p| p.wd.as_ref())
            .any(|wd| wd.gate.is_petting())
}

/// At most one reboot; a crash loop never ends in a reset unless its
/// table row says a reset comes first (a crash loop before the first beat,
/// `budget::early_loop`); and, within the window, a crash-looping layer is
/// started at most `max_restarts` times after the crash that began the
/// loop (the next exit exhausts the budget, and an exhausted layer is
/// never started again).
fn one_reboot(m: &Chain, s: &State) -> bool {
    let looped = s
        .faults
        .iter()
        .find(|f| matches!(f.fault, Fault::CrashLoop(_) | Fault::CrashLoopEarly(_)));
    let over_budget = looped.is_some_and(|f| {
        f.elapsed < m.params.window && u32::from(s.loop_starts) > m.params.max_restarts
    });
    s.reboots <= 1
        && !over_budget
        && !(looped.is_some_and(|f| m.expect(f.fault).rung == Rung::Reboot)
            && s.faults.len() == 1
            && matches!(s.end, Some((End::Reset, _))))
}

fn loop_rebooted(_: &Chain, s: &State) -> bool {
    s.reboots == 1
        && s.faults
            .iter()
            .any(|f| matches!(f.fault, Fault::CrashLoop(_) | Fault::CrashLoopEarly(_)))
}

pub fn all() -> Vec<Property<Chain>> {
    let [p0, p1, p2, p3, p4, p5] = PAIRS;
    vec![
        Property::always(p0.0, no_stale_pet),
        Property::sometimes(p0.1, petting_withheld),
        Property::always(p1.0, one_live),
        Property::sometimes(p1.1, killed_and_restarted),
        Property::always(p2.0, in_rung_and_bound),
        Property::sometimes(p2.1, rung_restart),
        Property::sometimes(
            "sometimes: a single fault ends in an orderly reboot",
            rung_reboot,
        ),
        Property::sometimes(
            "sometimes: a single fault ends in a hardware reset",
            rung_reset,
        ),
        Property::always(p3.0, layer_fault_no_reset),
        Property::sometimes(p3.1, layer_fault_recovered),
        Property::always(p4.0, no_end_without_fault),
        Property::sometimes(p4.1, steady),
        Property::always(p5.0, one_reboot),
        Property::sometimes(p5.1, loop_rebooted),
    ]
}
