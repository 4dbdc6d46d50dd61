//! The orderly shutdown sequence (reboot, poweroff, halt) as a pure state
//! machine, plus the final system calls.
//!
//! The sequence (DESIGN.md "init", docs/PROTOCOL.md "Stopping the chain"):
//! 1. `SIGTERM` to the restarter, which stops every service in reverse
//!    dependency order; wait for it at most `[init] stop_timeout` (then
//!    `SIGKILL` it). The loop keeps running meanwhile: it reaps, beats to
//!    watchdogd, and still restarts watchdogd should it die, so the hardware
//!    is petted for as long as init is healthy.
//! 2. `kill(-1, SIGTERM)`: everything else, watchdogd included. watchdogd
//!    exits without the magic close, so the armed hardware bounds a hung
//!    shutdown from here on.
//! 3. Wait `[init] kill_grace`, or less when no process is left.
//! 4. `kill(-1, SIGKILL)`, write the record, `sync`, remount `/` read-only,
//!    `reboot(2)`.
//!
//! Decisions where the design is silent:
//! - The record is written twice: when the sequence starts (so a shutdown
//!   that hangs and ends in a hardware reset still says who asked), and again
//!   after `kill(-1, SIGKILL)`, when watchdogd can no longer overwrite it
//!   (it may have recorded a stale layer meanwhile). It is written before the
//!   read-only remount, since the state directory is usually on `/`.
//! - The first request wins; later ones (another signal, another `R`) are
//!   logged and ignored.
//! - If `reboot(2)` returns (it should not), the failure is logged and the
//!   call retried every [`REBOOT_RETRY`]; the loop keeps reaping.
//! - The read-only remount is done only as PID 1 of the machine: in a mount
//!   namespace, `MS_REMOUNT` of `/` would change the host's superblock.

use std::fmt;
use std::time::Duration;

use tether_common::clock::MonoTime;

use crate::layers::Human;
use tether_common::record;

/// What a shutdown ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Reboot,
    Poweroff,
    Halt,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        self.as_record().as_str()
    }

    /// The `cause=` of the reset-reason record.
    pub fn as_record(self) -> record::Cause {
        match self {
            Cause::Reboot => record::Cause::Reboot,
            Cause::Poweroff => record::Cause::Poweroff,
            Cause::Halt => record::Cause::Halt,
        }
    }
}

/// Interval between two `reboot(2)` attempts should one fail.
pub const REBOOT_RETRY: Duration = Duration::from_secs(5);
/// Most steps one call returns.
pub const STEPS_CAP: usize = 6;

/// Who asked for the shutdown and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub cause: Cause,
    /// `restarter`, `signal`, `init`, `watchdogd`.
    pub by: String,
    /// The layer whose budget ran out, if that is why.
    pub layer: Option<String>,
    /// One line: the restarter's reason, the signal and its sender, ...
    pub detail: String,
}

/// `[init] stop_timeout` and `kill_grace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub stop_timeout: Duration,
    pub kill_grace: Duration,
}

/// Where the sequence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `SIGTERM` sent to the restarter; waiting for it until `until`.
    StoppingRestarter { until: MonoTime },
    /// `kill(-1, SIGTERM)` sent; waiting until `until` or until nothing is left.
    Terminating { until: MonoTime },
    /// The final steps are out; `reboot(2)` is retried at `next_try` should
    /// it fail.
    Finishing { next_try: MonoTime },
}

/// What the loop must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `SIGTERM` to the restarter.
    TermRestarter,
    /// `SIGKILL` to the restarter (it overran `stop_timeout`).
    KillRestarter,
    /// Stop supervising every layer, then `kill(-1, SIGTERM)`.
    TermAll,
    /// `kill(-1, SIGKILL)`, record, sync, remount read-only, `reboot(2)`.
    Finish,
    Log(Say),
}

/// Log lines of the sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Say {
    AskingRestarter { stop_timeout: Duration },
    NoRestarter,
    RestarterStopped { took: Duration },
    RestarterOverran { stop_timeout: Duration },
    Terminating { kill_grace: Duration },
    NothingLeft { took: Duration },
    GraceOver { kill_grace: Duration },
    RetryingReboot,
}

impl fmt::Display for Say {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Say::AskingRestarter { stop_timeout } => write!(
                f,
                "asking the restarter to stop the services (SIGTERM), waiting up to {}",
                Human(stop_timeout)
            ),
            Say::NoRestarter => f.write_str("no restarter running: skipping the service stop"),
            Say::RestarterStopped { took } => write!(f, "restarter stopped after {}", Human(took)),
            Say::RestarterOverran { stop_timeout } => {
                write!(
                    f,
                    "restarter still running after stop_timeout {}: SIGKILL",
                    Human(stop_timeout)
                )
            }
            Say::Terminating { kill_grace } => write!(
                f,
                "sending SIGTERM to all processes (watchdogd included, no magic close), grace {}",
                Human(kill_grace)
            ),
            Say::NothingLeft { took } => write!(f, "all processes gone after {}", Human(took)),
            Say::GraceOver { kill_grace } => write!(
                f,
                "kill_grace {} over: SIGKILL to all processes",
                Human(kill_grace)
            ),
            Say::RetryingReboot => f.write_str("retrying reboot(2)"),
        }
    }
}

/// A fixed-capacity list of steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Steps {
    items: [Option<Step>; STEPS_CAP],
    len: usize,
}

impl Steps {
    fn push(&mut self, s: Step) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(s);
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Step> + '_ {
        self.items.iter().take(self.len).filter_map(|s| *s)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A running shutdown.
#[derive(Clone, Debug)]
pub struct Sequence {
    pub request: Request,
    params: Params,
    phase: Phase,
    phase_started: MonoTime,
}

impl Sequence {
    /// Starts the sequence. `restarter_running`: whether there is a
    /// restarter to ask.
    pub fn start(
        now: MonoTime,
        request: Request,
        params: Params,
        restarter_running: bool,
    ) -> (Sequence, Steps) {
        let mut steps = Steps::default();
        let mut seq = Sequence {
            request,
            params,
            phase: Phase::StoppingRestarter {
                until: now + params.stop_timeout,
            },
            phase_started: now,
        };
        if restarter_running {
            steps.push(Step::Log(Say::AskingRestarter {
                stop_timeout: params.stop_timeout,
            }));
            steps.push(Step::TermRestarter);
        } else {
            steps.push(Step::Log(Say::NoRestarter));
            seq.terminate(now, &mut steps);
        }
        (seq, steps)
    }

    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    fn terminate(&mut self, now: MonoTime, steps: &mut Steps) {
        self.phase = Phase::Terminating {
            until: now + self.params.kill_grace,
        };
        self.phase_started = now;
        steps.push(Step::Log(Say::Terminating {
            kill_grace: self.params.kill_grace,
        }));
        steps.push(Step::TermAll);
    }

    fn finish(&mut self, now: MonoTime, steps: &mut Steps) {
        self.phase = Phase::Finishing {
            next_try: now + REBOOT_RETRY,
        };
        self.phase_started = now;
        steps.push(Step::Finish);
    }

    /// The restarter was reaped.
    pub fn restarter_exited(&mut self, now: MonoTime) -> Steps {
        let mut steps = Steps::default();
        if let Phase::StoppingRestarter { .. } = self.phase {
            steps.push(Step::Log(Say::RestarterStopped {
                took: now.saturating_since(self.phase_started),
            }));
            self.terminate(now, &mut steps);
        }
        steps
    }

    /// `waitpid` says init has no child left.
    pub fn nothing_left(&mut self, now: MonoTime) -> Steps {
        let mut steps = Steps::default();
        if let Phase::Terminating { .. } = self.phase {
            steps.push(Step::Log(Say::NothingLeft {
                took: now.saturating_since(self.phase_started),
            }));
            self.finish(now, &mut steps);
        }
        steps
    }

    /// Time passed.
    pub fn tick(&mut self, now: MonoTime) -> Steps {
        let mut steps = Steps::default();
        match self.phase {
            Phase::StoppingRestarter { until } if now >= until => {
                steps.push(Step::Log(Say::RestarterOverran {
                    stop_timeout: self.params.stop_timeout,
                }));
                steps.push(Step::KillRestarter);
                self.terminate(now, &mut steps);
            }
            Phase::Terminating { until } if now >= until => {
                steps.push(Step::Log(Say::GraceOver {
                    kill_grace: self.params.kill_grace,
                }));
                self.finish(now, &mut steps);
            }
            Phase::Finishing { next_try } if now >= next_try => {
                steps.push(Step::Log(Say::RetryingReboot));
                self.finish(now, &mut steps);
            }
            _ => {}
        }
        steps
    }

    pub fn next_deadline(&self) -> MonoTime {
        match self.phase {
            Phase::StoppingRestarter { until } | Phase::Terminating { until } => until,
            Phase::Finishing { next_try } => next_try,
        }
    }
}

/// The `reboot(2)` mode for a cause.
pub fn reboot_mode(cause: Cause) -> nix::sys::reboot::RebootMode {
    use nix::sys::reboot::RebootMode;
    match cause {
        Cause::Reboot => RebootMode::RB_AUTOBOOT,
        Cause::Poweroff => RebootMode::RB_POWER_OFF,
        Cause::Halt => RebootMode::RB_HALT_SYSTEM,
    }
}

/// `mount -o remount,ro /`.
pub fn remount_root_read_only() -> nix::Result<()> {
    use nix::mount::{mount, MsFlags};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    fn req() -> Request {
        Request {
            cause: Cause::Reboot,
            by: "restarter".into(),
            layer: None,
            detail: "tetherctl reboot by uid 0".into(),
        }
    }

    fn params() -> Params {
        Params {
            stop_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(3),
        }
    }

    fn actions(s: &Steps) -> Vec<Step> {
        s.iter().filter(|s| !matches!(s, Step::Log(_))).collect()
    }

    #[test]
    fn restarter_is_asked_first_then_everything_else() {
        let (mut seq, s) = Sequence::start(at(0), req(), params(), true);
        assert_eq!(actions(&s), vec![Step::TermRestarter]);
        assert_eq!(seq.next_deadline(), at(30_000));
        assert!(seq.tick(at(29_999)).is_empty());
        let s = seq.restarter_exited(at(1200));
        assert_eq!(actions(&s), vec![Step::TermAll]);
        assert_eq!(seq.phase(), Phase::Terminating { until: at(4200) });
        // A second exit report changes nothing.
        assert!(seq.restarter_exited(at(1300)).is_empty());
    }

    #[test]
    fn restarter_that_overruns_stop_timeout_is_killed() {
        let (mut seq, _) = Sequence::start(at(0), req(), params(), true);
        let s = seq.tick(at(30_000));
        assert_eq!(actions(&s), vec![Step::KillRestarter, Step::TermAll]);
        assert!(s
            .iter()
            .any(|x| matches!(x, Step::Log(Say::RestarterOverran { .. }))));
    }

    #[test]
    fn grace_ends_early_when_nothing_is_left() {
        let (mut seq, s) = Sequence::start(at(0), req(), params(), false);
        assert_eq!(actions(&s), vec![Step::TermAll]);
        assert!(seq.tick(at(2000)).is_empty());
        let s = seq.nothing_left(at(2100));
        assert_eq!(actions(&s), vec![Step::Finish]);
    }

    #[test]
    fn grace_over_means_sigkill_and_finish() {
        let (mut seq, _) = Sequence::start(at(0), req(), params(), false);
        assert_eq!(actions(&seq.tick(at(3000))), vec![Step::Finish]);
        // Finish is repeated only if reboot(2) came back.
        assert!(seq.tick(at(4000)).is_empty());
        assert_eq!(seq.next_deadline(), at(8000));
        let s = seq.tick(at(8000));
        assert_eq!(actions(&s), vec![Step::Finish]);
        assert!(s.iter().any(|x| x == Step::Log(Say::RetryingReboot)));
    }

    #[test]
    fn nothing_left_while_waiting_for_the_restarter_does_not_skip_it() {
        let (mut seq, _) = Sequence::start(at(0), req(), params(), true);
        assert!(seq.nothing_left(at(100)).is_empty());
        assert!(matches!(seq.phase(), Phase::StoppingRestarter { .. }));
    }

    #[test]
    fn reboot_modes_match_causes() {
        use nix::sys::reboot::RebootMode;
        assert_eq!(reboot_mode(Cause::Reboot), RebootMode::RB_AUTOBOOT);
        assert_eq!(reboot_mode(Cause::Poweroff), RebootMode::RB_POWER_OFF);
        assert_eq!(reboot_mode(Cause::Halt), RebootMode::RB_HALT_SYSTEM);
    }
}
