//! watchdogd's loop as a pure core: the order of one turn and the cadence
//! of its beat to init, around the [`Gate`], [`Device`] and heartbeat
//! [`Watch`] cores. The shell (`main.rs`) only reads pipes, polls and
//! carries out the device core's actions; the model checker (`model/`)
//! drives this same type, so what it checks is what runs.
//!
//! One pass of the loop, as the shell calls it:
//! 1. [`Watchdog::start`] at start: a new gate (the start credited to every
//!    layer for the first-beat grace only), a device core (absent, to be
//!    tried at once) and a watch (every pipe empty from now on).
//! 2. The start-up backlog: every pipe is drained once before the first
//!    wait and its bytes passed to [`Watchdog::found`]: **not credited**.
//!    They were written before this watchdogd started, at a moment nobody
//!    knows; crediting them at the first wake-up (what a watch that calls
//!    the start "seen empty" would do) made a layer silent since before the
//!    start look fresh for a whole stale timeout from the start (found by
//!    `model/`, issue 14, finding 2). The start's first-beat grace stands
//!    for them instead.
//! 3. [`Watchdog::turn`]: the gate evaluates (beats drained so far are in),
//!    then the device core's `Tick` and any pending inputs run under that
//!    one decision, each action's result fed back before the next action
//!    (depth first, through the shell's executor); then the beat to init if
//!    due (`beat_interval` apart, keeping phase, never bursting).
//! 4. [`Watchdog::wait`] and [`Watchdog::waiting`] before `poll`: at most
//!    one pet interval, so bytes are credited within one short turn.
//! 5. After `poll`: [`Watchdog::credit`] for the wake-up, [`Watchdog::found`]
//!    for every pipe that had bytes, [`Watchdog::drained`]; back to 3.

use std::time::Duration;

use tether_common::clock::MonoTime;
use tether_common::heartbeat::Watch;

use crate::device::{Device, In, Out};
use crate::gate::{Decision, Gate};

/// watchdogd's decision state: the gate, the device core, the watch and
/// the beat to init.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Watchdog {
    pub gate: Gate,
    pub device: Device,
    pub watch: Watch,
    next_beat: MonoTime,
    beat_interval: Duration,
    /// The loop has waited once: bytes found from now on were written
    /// after the start.
    waited: bool,
}

/// What a turn asks of the shell besides the device actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Turned {
    /// Write the `Alive` beat to init now.
    pub beat: bool,
}

/// The next time a periodic task is due: one period after the last due
/// time, or one period from now when behind (no bursts to catch up).
pub fn advance(due: MonoTime, period: Duration, now: MonoTime) -> MonoTime {
    let next = due + period;
    if next <= now {
        now + period
    } else {
        next
    }
}

impl Watchdog {
    /// A watchdogd starting at `now`: `layers` with their stale timeouts,
    /// each credited with the start for at most `first_beat`; the device
    /// to be opened with `hardware_secs`; the first beat to init at once.
    pub fn start<I, S>(
        layers: I,
        now: MonoTime,
        first_beat: Duration,
        hardware_secs: u32,
        beat_interval: Duration,
    ) -> Watchdog
    where
        I: IntoIterator<Item = (S, Duration)>,
        S: Into<String>,
    {
        Watchdog {
            gate: Gate::new(layers, now, first_beat),
            device: Device::new(now, hardware_secs, beat_interval),
            watch: Watch::new(now),
            next_beat: now,
            beat_interval,
            waited: false,
        }
    }

    /// The moment bytes found after the wake-up at `woke` are credited
    /// ([`Watch::credit`]); the shell passes it to `Reader::drain`.
    pub fn credit(&self, woke: MonoTime) -> MonoTime {
        self.watch.credit(woke)
    }

    /// `layer`'s pipe had bytes, credited at `credit` (from
    /// [`credit`](Watchdog::credit)). Before the loop's first wait they are
    /// the start-up backlog and not credited (module doc, step 2).
    pub fn found(&mut self, layer: &str, credit: MonoTime) {
        if self.waited {
            self.gate.beat(layer, credit);
        }
    }

    /// Every readable pipe was drained after the wake-up at `woke`.
    pub fn drained(&mut self, woke: MonoTime) {
        self.watch.drained(woke);
    }

    /// One turn at `now`: the decision, the device core's `Tick` and the
    /// `pending` inputs under it (an action's result handed back through
    /// `exec`, which also sees the gate, before the next action), then the
    /// beat to init if due.
    pub fn turn<E>(&mut self, now: MonoTime, pending: Vec<In>, mut exec: E) -> Turned
    where
        E: FnMut(&Out, &Gate) -> Option<In>,
    {
        let decision = self.gate.evaluate(now);
        self.step(now, &decision, In::Tick, &mut exec);
        for input in pending {
            if let In::Reload { beat_interval, .. } = input {
                self.beat_interval = beat_interval;
            }
            self.step(now, &decision, input, &mut exec);
        }
        let mut turned = Turned::default();
        if self.next_beat <= now {
            turned.beat = true;
            self.next_beat = advance(self.next_beat, self.beat_interval, now);
        }
        turned
    }

    fn step<E>(&mut self, now: MonoTime, decision: &Decision, input: In, exec: &mut E)
    where
        E: FnMut(&Out, &Gate) -> Option<In>,
    {
        for out in self.device.handle(now, decision, input) {
            if let Some(back) = exec(&out, &self.gate) {
                self.step(now, decision, back, exec);
            }
        }
    }

    /// The next moment a turn has work at `now` (`beat`: whether there is
    /// an init to beat to), not counting the shell's own timers.
    pub fn next_deadline(&self, now: MonoTime, beat: bool) -> Option<MonoTime> {
        let petting = self.gate.is_petting();
        let mut t = beat.then_some(self.next_beat);
        let mut consider = |d: Option<MonoTime>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        consider(self.device.next_deadline(petting, now));
        if petting {
            consider(self.gate.next_deadline(now));
        }
        t
    }

    /// How long the loop may wait from `now` for a deadline at `until`: at
    /// most one pet interval.
    pub fn wait(&self, now: MonoTime, until: MonoTime) -> Duration {
        until.saturating_since(now).min(self.device.pet_interval())
    }

    /// A watchdog that watches nothing, for a shell that must move its
    /// core out while a turn borrows the shell.
    pub fn placeholder(now: MonoTime) -> Watchdog {
        Watchdog::start(
            Vec::<(String, Duration)>::new(),
            now,
            Duration::ZERO,
            1,
            Duration::ZERO,
        )
    }

    /// The loop is about to wait at most `timeout` from `now`.
    pub fn waiting(&mut self, now: MonoTime, timeout: Duration) {
        self.waited = true;
        self.watch.waiting(now, timeout);
    }

    /// Every stored time moved `by` earlier, ages clamped beyond `horizon`
    /// (the largest stale timeout) or the thresholds each core compares
    /// with; for the model checker only.
    pub fn rebase(&mut self, by: Duration, now: MonoTime, horizon: Duration) {
        self.gate.rebase(by, now);
        self.device.rebase(by, now);
        self.watch.rebase(by, now, horizon);
        self.next_beat = self.next_beat.rebased(by, now, self.beat_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::State;

    fn t(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    fn wd(at: MonoTime) -> Watchdog {
        Watchdog::start(
            [("init", Duration::from_secs(20))],
            at,
            Duration::from_secs(6),
            30,
            Duration::from_secs(1),
        )
    }

    /// A fake device that opens and pets; records what was done.
    fn exec(done: &mut Vec<Out>) -> impl FnMut(&Out, &Gate) -> Option<In> + '_ {
        move |o, _| {
            done.push(o.clone());
            match o {
                Out::TryOpen => Some(In::Opened { simulated: false }),
                Out::Configure { secs } => Some(In::Configured {
                    armed_secs: Some(*secs),
                }),
                Out::Pet => Some(In::PetDone),
                _ => None,
            }
        }
    }

    #[test]
    fn the_start_up_backlog_is_not_credited_but_bytes_after_the_first_wait_are() {
        let mut w = wd(t(1000));
        // Old bytes in the pipe at start: drained, not credited.
        let c = w.credit(t(1000));
        w.found("init", c);
        w.drained(t(1000));
        assert!(!w.gate.has_beaten("init"));
        let mut done = Vec::new();
        w.turn(t(1000), Vec::new(), exec(&mut done));
        w.waiting(t(1000), Duration::from_secs(1));
        // The first-beat grace (6 s) runs from the start.
        assert_eq!(w.gate.limit("init"), Some(Duration::from_secs(6)));
        let c = w.credit(t(1500));
        assert_eq!(c, t(1500));
        w.found("init", c);
        w.drained(t(1500));
        assert!(w.gate.has_beaten("init"));
        assert_eq!(w.gate.limit("init"), Some(Duration::from_secs(20)));
    }

    #[test]
    fn a_turn_evaluates_then_opens_and_pets_under_that_decision_then_beats() {
        let mut w = wd(t(0));
        let mut done = Vec::new();
        let turned = w.turn(t(0), Vec::new(), exec(&mut done));
        assert!(turned.beat);
        assert!(matches!(done[0], Out::TryOpen));
        assert!(done.contains(&Out::Pet));
        assert!(matches!(w.device.state(), State::Open { .. }));
        // Stale from the start (no beat within the grace): no pet, no open.
        let mut done = Vec::new();
        w.turn(t(6000), Vec::new(), exec(&mut done));
        assert!(!w.gate.is_petting());
        assert!(!done.contains(&Out::Pet));
    }

    #[test]
    fn the_beat_to_init_keeps_its_phase_and_never_bursts() {
        let mut w = wd(t(0));
        let mut done = Vec::new();
        assert!(w.turn(t(0), Vec::new(), exec(&mut done)).beat);
        assert!(!w.turn(t(999), Vec::new(), exec(&mut done)).beat);
        assert!(w.turn(t(1003), Vec::new(), exec(&mut done)).beat);
        // Due at 2000: on time keeps the phase.
        assert!(w.turn(t(2000), Vec::new(), exec(&mut done)).beat);
        // Far behind: one beat, then one interval from now.
        assert!(w.turn(t(5500), Vec::new(), exec(&mut done)).beat);
        assert!(!w.turn(t(6000), Vec::new(), exec(&mut done)).beat);
        assert!(w.turn(t(6500), Vec::new(), exec(&mut done)).beat);
    }

    #[test]
    fn a_reload_changes_the_beat_cadence() {
        let mut w = wd(t(0));
        let mut done = Vec::new();
        w.turn(t(0), Vec::new(), exec(&mut done));
        let reload = In::Reload {
            hardware_secs: 30,
            beat_interval: Duration::from_millis(300),
        };
        // Already scheduled for 1000; the next after it is 300 ms later.
        w.turn(t(500), vec![reload], exec(&mut done));
        assert!(w.turn(t(1000), Vec::new(), exec(&mut done)).beat);
        assert!(w.turn(t(1300), Vec::new(), exec(&mut done)).beat);
    }

    #[test]
    fn waits_at_most_one_pet_interval() {
        let w = wd(t(0));
        assert_eq!(w.wait(t(0), t(60_000)), Duration::from_secs(1));
        assert_eq!(w.wait(t(0), t(300)), Duration::from_millis(300));
        assert_eq!(w.next_deadline(t(0), true), Some(t(0)));
    }
}
