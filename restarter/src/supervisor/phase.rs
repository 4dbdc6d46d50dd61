//! One service's process phase and its transitions (STYLE.md 1): whether
//! a spawn is out, a process runs, or is being stopped is one [`Phase`],
//! and [`step`] is the only place it changes, one `match` on phase ×
//! input with no catch-all arm. What follows a transition (logs, kills,
//! the restart policy) is the caller's: `step` says what happened.
//!
//! The rest of a service's state (wanted, failed, removed, a pending spec,
//! its restart time) is the *should it run* side, read by the reconcile;
//! the phase is the *what runs* side.

use super::StopReason;
use std::time::Duration;
use tether_common::clock::MonoTime;

/// A running process of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Proc {
    pub(super) pid: i32,
    pub(super) started: MonoTime,
    pub(super) ready: bool,
    pub(super) watchdog_timeout: Option<Duration>,
    pub(super) watchdog_deadline: Option<MonoTime>,
    pub(super) main_pid: Option<i32>,
}

/// A stop under way.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Stopping {
    pub(super) kill_at: MonoTime,
    pub(super) killed: bool,
    pub(super) reason: StopReason,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) enum Phase {
    /// No process, no spawn out.
    #[default]
    Down,
    /// An `Action::Spawn` is out; its result has not come back.
    Spawning,
    /// Its process runs.
    Up(Proc),
    /// Its process is being stopped.
    Stopping(Proc, Stopping),
}

/// What happens to a phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Input {
    /// The reconcile starts the service.
    Spawn,
    /// A process runs: spawned, or adopted from a previous restarter.
    Started(Proc),
    /// The spawn did not happen.
    SpawnFailed,
    /// A process ended.
    Exited { pid: i32 },
    /// The exec helper of the running process `pid` reported that the
    /// program could not be started: the start is taken back (the spawn
    /// failure that follows ends it).
    ExecFailed { pid: i32 },
    /// Stop the process (signals sent by the caller); the watchdog is off
    /// while stopping.
    Stop(Stopping),
    /// The stop timeout passed: `SIGKILL` is due (once).
    KillDue,
}

/// What [`step`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// The phase changed as the input asks.
    Changed,
    /// The input means nothing in this phase (a stale exit, a stop of a
    /// service without a process, a second `SIGKILL`).
    Ignored,
    /// The process ended: how it ran, and why it was being stopped.
    Ended {
        proc_: Proc,
        reason: Option<StopReason>,
    },
}

/// One service's phase × input.
pub(super) fn step(phase: &mut Phase, input: Input) -> Step {
    use Input as I;
    use Phase as P;
    let (next, step) = match (std::mem::take(phase), input) {
        (P::Down, I::Spawn) => (P::Spawning, Step::Changed),
        (p @ (P::Spawning | P::Up(_) | P::Stopping(..)), I::Spawn) => (p, Step::Ignored),
        // Whatever was there: the process the system says runs is the one
        // supervised.
        (P::Down | P::Spawning | P::Up(_) | P::Stopping(..), I::Started(p)) => {
            (P::Up(p), Step::Changed)
        }
        (P::Spawning, I::SpawnFailed) => (P::Down, Step::Changed),
        (p @ (P::Down | P::Up(_) | P::Stopping(..)), I::SpawnFailed) => (p, Step::Ignored),
        (P::Up(p), I::Exited { pid }) if p.pid == pid => (
            P::Down,
            Step::Ended {
                proc_: p,
                reason: None,
            },
        ),
        (P::Stopping(p, st), I::Exited { pid }) if p.pid == pid => (
            P::Down,
            Step::Ended {
                proc_: p,
                reason: Some(st.reason),
            },
        ),
        (p @ (P::Down | P::Spawning | P::Up(_) | P::Stopping(..)), I::Exited { .. }) => {
            (p, Step::Ignored)
        }
        (P::Up(p), I::ExecFailed { pid }) if p.pid == pid => (P::Spawning, Step::Changed),
        (p @ (P::Down | P::Spawning | P::Up(_) | P::Stopping(..)), I::ExecFailed { .. }) => {
            (p, Step::Ignored)
        }
        (P::Up(mut p), I::Stop(st)) => {
            p.watchdog_deadline = None;
            (P::Stopping(p, st), Step::Changed)
        }
        (p @ (P::Down | P::Spawning | P::Stopping(..)), I::Stop(_)) => (p, Step::Ignored),
        (P::Stopping(p, mut st), I::KillDue) if !st.killed => {
            st.killed = true;
            (P::Stopping(p, st), Step::Changed)
        }
        (p @ (P::Down | P::Spawning | P::Up(_) | P::Stopping(..)), I::KillDue) => {
            (p, Step::Ignored)
        }
    };
    *phase = next;
    step
}

impl Phase {
    /// The process, running or stopping.
    pub(super) fn proc_(&self) -> Option<&Proc> {
        match self {
            Phase::Up(p) | Phase::Stopping(p, _) => Some(p),
            Phase::Down | Phase::Spawning => None,
        }
    }

    pub(super) fn proc_mut(&mut self) -> Option<&mut Proc> {
        match self {
            Phase::Up(p) | Phase::Stopping(p, _) => Some(p),
            Phase::Down | Phase::Spawning => None,
        }
    }

    pub(super) fn stopping(&self) -> bool {
        matches!(self, Phase::Stopping(..))
    }

    /// A process, or a spawn out.
    pub(super) fn active(&self) -> bool {
        !matches!(self, Phase::Down)
    }

    /// Moves every stored time as `r` says (`Supervisor::rebase`).
    pub(super) fn rebase(&mut self, r: impl Fn(MonoTime) -> MonoTime) {
        if let Some(p) = self.proc_mut() {
            p.started = r(p.started);
            p.watchdog_deadline = p.watchdog_deadline.map(&r);
        }
        if let Phase::Stopping(_, st) = self {
            st.kill_at = r(st.kill_at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    fn proc_(pid: i32) -> Proc {
        Proc {
            pid,
            started: at(0),
            ready: false,
            watchdog_timeout: Some(Duration::from_secs(1)),
            watchdog_deadline: Some(at(1000)),
            main_pid: None,
        }
    }

    fn stop() -> Stopping {
        Stopping {
            kill_at: at(5000),
            killed: false,
            reason: StopReason::Admin,
        }
    }

    #[test]
    fn a_run_from_spawn_to_kill_to_exit() {
        let mut ph = Phase::Down;
        assert_eq!(step(&mut ph, Input::Spawn), Step::Changed);
        assert_eq!(ph, Phase::Spawning);
        assert_eq!(step(&mut ph, Input::Spawn), Step::Ignored);
        assert_eq!(step(&mut ph, Input::Started(proc_(7))), Step::Changed);
        assert_eq!(ph.proc_().map(|p| p.pid), Some(7));
        assert_eq!(step(&mut ph, Input::Exited { pid: 8 }), Step::Ignored);
        assert_eq!(step(&mut ph, Input::Stop(stop())), Step::Changed);
        assert!(ph.stopping());
        assert_eq!(ph.proc_().unwrap().watchdog_deadline, None, "watchdog off");
        assert_eq!(step(&mut ph, Input::Stop(stop())), Step::Ignored);
        assert_eq!(step(&mut ph, Input::KillDue), Step::Changed);
        assert!(matches!(&ph, Phase::Stopping(_, st) if st.killed));
        assert_eq!(step(&mut ph, Input::KillDue), Step::Ignored);
        let mut ended = proc_(7);
        ended.watchdog_deadline = None;
        assert_eq!(
            step(&mut ph, Input::Exited { pid: 7 }),
            Step::Ended {
                proc_: ended,
                reason: Some(StopReason::Admin)
            }
        );
        assert_eq!(ph, Phase::Down);
    }

    #[test]
    fn inputs_that_mean_nothing_leave_the_phase() {
        let cases = [
            (Phase::Down, Input::SpawnFailed),
            (Phase::Down, Input::Stop(stop())),
            (Phase::Down, Input::KillDue),
            (Phase::Down, Input::Exited { pid: 7 }),
            (Phase::Spawning, Input::Stop(stop())),
            (Phase::Up(proc_(7)), Input::SpawnFailed),
            (Phase::Up(proc_(7)), Input::KillDue),
        ];
        for (ph, input) in cases {
            let mut after = ph.clone();
            assert_eq!(
                step(&mut after, input.clone()),
                Step::Ignored,
                "{ph:?} {input:?}"
            );
            assert_eq!(after, ph);
        }
        let mut ph = Phase::Spawning;
        assert_eq!(step(&mut ph, Input::SpawnFailed), Step::Changed);
        assert_eq!(ph, Phase::Down);
        let mut ph = Phase::Up(proc_(7));
        assert_eq!(
            step(&mut ph, Input::Exited { pid: 7 }),
            Step::Ended {
                proc_: proc_(7),
                reason: None
            }
        );
    }
}
