//! The device core of watchdogd: when to open, configure, pet, close or
//! disarm the watchdog device, and when to write a record. Pure: it never
//! touches a descriptor; the shell (`main.rs`) carries out the [`Out`]
//! actions on a `WatchdogDev` and reports the results back as [`In`].
//!
//! Every input comes with the gate's [`Decision`] of the same turn, and
//! every action that pings the hardware obeys it (DESIGN.md "watchdogd";
//! issue 11, item 3). The kernel pings on more than a pet: `open(2)`
//! starts the device, `WDIOC_SETTIMEOUT` pings in `watchdog_set_timeout`,
//! and every `write(2)` pings. So [`Out::TryOpen`], [`Out::Configure`] and
//! [`Out::Pet`] are only ever emitted in a turn whose decision is
//! [`Decision::Pet`] or [`Decision::Resume`]. While petting is stopped:
//! - a reload's new hardware timeout is held back and applied (by a
//!   `Configure`) at the first pet after the resume;
//! - a device that vanished is not reopened until the resume;
//! - a device still absent is not opened until the resume.
//!
//! The first open of the device by this process (with its `Configure`) is
//! not held back by a stop: it arms a device nobody holds, so it starts the
//! countdown rather than extending one (a device left armed by a previous
//! watchdogd gets one ping from it, at most one `hardware_timeout`). That is
//! what makes a watchdogd that is stopped from its very first turn (an
//! unusable `TETHER_HEARTBEATS`) end in a reset instead of an unarmed
//! device: armed, never petted.
//!
//! The other exception is [`Out::MagicClose`] on an explicit disarm (allowed
//! by `[watchdog] allow_disarm`): its `V` is a write, so the kernel pings
//! once before it stops the device; that disarms, so the ping holds nothing
//! off.
//!
//! Records: on [`Decision::Stop`] the record comes first, then the ALERT
//! note (the shell makes that write durable before it goes on). Every other
//! record (the start-up `unknown` and boot counter, `unknown` again on a
//! resume) is emitted after the turn's pet, and the shell hands it to a
//! writer that can never delay a pet.

use crate::gate::Decision;
use std::time::Duration;
use tether_common::clock::MonoTime;

/// How often an absent device is tried again.
pub const OPEN_RETRY: Duration = Duration::from_millis(250);
/// The shortest pet period, whatever the configuration says.
pub const MIN_PET_INTERVAL: Duration = Duration::from_millis(10);

/// Why a device operation failed, as the shell classifies the errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DevErr {
    /// Not there (yet): `ENOENT`, `ENXIO`, `ENODEV`, `EBUSY` on open.
    Absent,
    /// It vanished under an open descriptor: `EPIPE`, `ENODEV`, `EBADF`,
    /// `ENXIO` on a pet.
    Gone,
    /// Anything else.
    Other,
}

/// Where the device is. `Hash` leaves out what only words a log line
/// (`since`, `failed`, `pet_failing`; STYLE.md 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not open: being waited for (tried at `next_try`, if the gate allows).
    Absent {
        next_try: MonoTime,
        /// Since when it is missing.
        since: MonoTime,
        /// An open has failed since (so its appearance is worth a line).
        failed: bool,
    },
    /// Open, hence armed.
    Open {
        /// The timeout the driver applied (read back), in seconds.
        armed_secs: u32,
        /// A FIFO or file standing in for the hardware: no ioctls.
        simulated: bool,
        next_pet: MonoTime,
        /// A hardware timeout to apply at the next allowed pet.
        configure: Option<u32>,
        /// The last pet failed (for the recovery note).
        pet_failing: bool,
    },
    /// Disarmed by magic close; nothing more happens.
    Disarmed,
}

impl State {
    /// The device's state in one word (`simulated`, `armed`, `absent`,
    /// `disarmed`) and, when open, the timeout the driver applied (seconds):
    /// what the liveness line and the status file report.
    pub fn word(&self) -> (&'static str, Option<u32>) {
        match self {
            State::Open {
                armed_secs,
                simulated: true,
                ..
            } => ("simulated", Some(*armed_secs)),
            State::Open { armed_secs, .. } => ("armed", Some(*armed_secs)),
            State::Absent { .. } => ("absent", None),
            State::Disarmed => ("disarmed", None),
        }
    }
}

impl std::hash::Hash for State {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        match *self {
            State::Absent { next_try, .. } => next_try.hash(h),
            State::Open {
                armed_secs,
                simulated,
                next_pet,
                configure,
                ..
            } => (armed_secs, simulated, next_pet, configure).hash(h),
            State::Disarmed => {}
        }
    }
}

/// What the shell reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum In {
    /// Timers: called every turn.
    Tick,
    /// The open asked by [`Out::TryOpen`] succeeded.
    Opened {
        simulated: bool,
    },
    OpenFailed(DevErr),
    /// [`Out::Configure`] done: the timeout read back, `None` if the
    /// ioctls failed.
    Configured {
        armed_secs: Option<u32>,
    },
    PetDone,
    PetFailed(DevErr),
    /// New settings (SIGHUP).
    Reload {
        hardware_secs: u32,
        beat_interval: Duration,
    },
    /// SIGUSR1; `allowed` is `[watchdog] allow_disarm`.
    Disarm {
        allowed: bool,
    },
}

/// A record the shell writes into the state directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Record {
    /// Start-up: read the previous boot's record, bump the boot counter,
    /// pre-write `cause=unknown`.
    Start,
    /// `cause=unknown` again (a stale layer recovered).
    Unknown,
    /// `cause=watchdog`: petting stopped. Durable before the ALERT.
    Stopped { layer: String, silent_for: Duration },
}

/// Something worth a log line; the shell words it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Note {
    /// ALERT: petting stopped.
    Stopped {
        layer: String,
        silent_for: Duration,
        /// The armed hardware timeout (the time left at most), if open.
        armed_secs: Option<u32>,
    },
    Resumed {
        layer: String,
        stopped_for: Duration,
    },
    /// The device opened after failed tries.
    Appeared {
        after: Duration,
    },
    /// A pet said the device is gone: closed (without `V`), to be reopened.
    Gone,
    /// The first failure of a series of pets (the shell logs the error).
    PetFailing,
    PetRecovered,
    /// A new hardware timeout waits for petting to resume.
    ConfigureHeld {
        secs: u32,
    },
    DisarmRefused,
    /// Disarm asked with no device open.
    NothingToDisarm,
}

/// What the shell does, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Out {
    /// Open the device (the candidates in order); report `Opened` or
    /// `OpenFailed`.
    TryOpen,
    /// `WDIOC_SETTIMEOUT secs`, read back, report `Configured`.
    Configure {
        secs: u32,
    },
    /// Pet; report `PetDone` or `PetFailed`.
    Pet,
    /// Close without `V` (the device stays armed).
    Close,
    /// Write `V` and close: disarm.
    MagicClose,
    WriteRecord(Record),
    Log(Note),
}

/// The device core.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Device {
    state: State,
    /// The hardware timeout asked for, in whole seconds (at least 1).
    hardware_secs: u32,
    beat_interval: Duration,
    /// The start-up record is still to be emitted.
    start_record: bool,
    /// The device has been opened once by this process (see the module
    /// doc: the first open arms, whatever the gate says).
    opened_once: bool,
}

fn allows(d: &Decision) -> bool {
    matches!(d, Decision::Pet | Decision::Resume { .. })
}

/// One period after the due time, or one period from now when behind (no
/// bursts to catch up).
fn advance(due: MonoTime, period: Duration, now: MonoTime) -> MonoTime {
    let next = due + period;
    if next <= now {
        now + period
    } else {
        next
    }
}

impl Device {
    /// Absent, to be tried at once; the start record pending.
    pub fn new(now: MonoTime, hardware_secs: u32, beat_interval: Duration) -> Device {
        Device {
            state: State::Absent {
                next_try: now,
                since: now,
                failed: false,
            },
            hardware_secs: hardware_secs.max(1),
            beat_interval,
            start_record: true,
            opened_once: false,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Every stored time moved `by` earlier, ages clamped just beyond the
    /// thresholds they are compared with ([`MonoTime::rebased`]); for the
    /// model checker, which keeps its clock at one `now`. What happens at
    /// `now` is unchanged; the durations in notes may be. Never called by
    /// the shell.
    pub fn rebase(&mut self, by: Duration, now: MonoTime) {
        let period = self.pet_interval();
        match &mut self.state {
            State::Absent {
                next_try, since, ..
            } => {
                *next_try = next_try.rebased(by, now, Duration::ZERO);
                *since = since.rebased(by, now, Duration::ZERO);
            }
            State::Open { next_pet, .. } => *next_pet = next_pet.rebased(by, now, period),
            State::Disarmed => {}
        }
    }

    /// `min(beat_interval, armed timeout / 4)`, at least 10 ms.
    pub fn pet_interval(&self) -> Duration {
        let armed = match self.state {
            State::Open { armed_secs, .. } => armed_secs,
            State::Absent { .. } | State::Disarmed => self.hardware_secs,
        };
        let quarter = Duration::from_secs(u64::from(armed.max(1))) / 4;
        self.beat_interval.min(quarter).max(MIN_PET_INTERVAL)
    }

    /// When the next [`In::Tick`] has work, given whether the gate allows
    /// petting. `None`: only an input can change anything.
    pub fn next_deadline(&self, petting: bool, now: MonoTime) -> Option<MonoTime> {
        if self.start_record {
            return Some(now);
        }
        match self.state {
            State::Absent { next_try, .. } if petting || !self.opened_once => Some(next_try),
            State::Open { next_pet, .. } if petting => Some(next_pet),
            State::Absent { .. } | State::Open { .. } | State::Disarmed => None,
        }
    }

    /// One input with the gate's decision of this turn.
    pub fn handle(&mut self, now: MonoTime, decision: &Decision, input: In) -> Vec<Out> {
        let mut out = Vec::new();
        let go = allows(decision);
        match input {
            In::Tick => self.tick(now, decision, &mut out),
            In::Opened { simulated } => {
                let (after, failed) = match self.state {
                    State::Absent { since, failed, .. } => (now.saturating_since(since), failed),
                    // Not asked for: close what the shell opened.
                    State::Open { .. } | State::Disarmed => {
                        out.push(Out::Close);
                        return out;
                    }
                };
                if failed {
                    out.push(Out::Log(Note::Appeared { after }));
                }
                let first = !std::mem::replace(&mut self.opened_once, true);
                let mut configure = (!simulated).then_some(self.hardware_secs);
                if first && !go {
                    // Armed by the first open: program its timeout now, but
                    // never pet while the gate says stop.
                    if let Some(secs) = configure.take() {
                        out.push(Out::Configure { secs });
                    }
                }
                self.state = State::Open {
                    armed_secs: self.hardware_secs,
                    simulated,
                    next_pet: now,
                    configure,
                    pet_failing: false,
                };
                if go {
                    self.pet_now(now, &mut out);
                }
            }
            In::OpenFailed(_) => {
                if let State::Absent { since, .. } = self.state {
                    self.state = State::Absent {
                        next_try: now + OPEN_RETRY,
                        since,
                        failed: true,
                    };
                }
            }
            In::Configured { armed_secs } => {
                if let State::Open { armed_secs: a, .. } = &mut self.state {
                    *a = armed_secs.unwrap_or(*a).max(1);
                }
            }
            In::PetDone => {
                if let State::Open { pet_failing, .. } = &mut self.state {
                    if *pet_failing {
                        *pet_failing = false;
                        out.push(Out::Log(Note::PetRecovered));
                    }
                }
            }
            In::PetFailed(e) => {
                if let State::Open { pet_failing, .. } = &mut self.state {
                    if e == DevErr::Gone {
                        out.push(Out::Close);
                        out.push(Out::Log(Note::Gone));
                        self.state = State::Absent {
                            next_try: now,
                            since: now,
                            failed: true,
                        };
                    } else if !*pet_failing {
                        *pet_failing = true;
                        out.push(Out::Log(Note::PetFailing));
                    }
                }
            }
            In::Reload {
                hardware_secs,
                beat_interval,
            } => {
                self.beat_interval = beat_interval;
                let secs = hardware_secs.max(1);
                let changed = secs != self.hardware_secs;
                self.hardware_secs = secs;
                if let State::Open {
                    simulated,
                    next_pet,
                    configure,
                    ..
                } = &mut self.state
                {
                    if changed && !*simulated {
                        *configure = Some(secs);
                        if !go {
                            out.push(Out::Log(Note::ConfigureHeld { secs }));
                        }
                    }
                    *next_pet = now;
                }
                if go {
                    self.tick_device(now, &mut out);
                }
            }
            In::Disarm { allowed } => {
                if !allowed {
                    out.push(Out::Log(Note::DisarmRefused));
                } else {
                    match self.state {
                        State::Open { .. } => out.push(Out::MagicClose),
                        State::Absent { .. } | State::Disarmed => {
                            out.push(Out::Log(Note::NothingToDisarm))
                        }
                    }
                    self.state = State::Disarmed;
                }
            }
        }
        out
    }

    fn tick(&mut self, now: MonoTime, decision: &Decision, out: &mut Vec<Out>) {
        let armed_secs = match self.state {
            State::Open { armed_secs, .. } => Some(armed_secs),
            State::Absent { .. } | State::Disarmed => None,
        };
        let mut after_pet = None;
        match decision {
            Decision::Pet | Decision::Withhold { .. } => {}
            Decision::Stop { layer, silent_for } => {
                // Stopped from the very first turn: the start-up record
                // (it pre-writes unknown) must not come after the reason.
                if std::mem::take(&mut self.start_record) {
                    out.push(Out::WriteRecord(Record::Start));
                }
                // The record first: when the ALERT is seen, the reason is
                // already on disk.
                out.push(Out::WriteRecord(Record::Stopped {
                    layer: layer.clone(),
                    silent_for: *silent_for,
                }));
                out.push(Out::Log(Note::Stopped {
                    layer: layer.clone(),
                    silent_for: *silent_for,
                    armed_secs,
                }));
            }
            Decision::Resume { layer, stopped_for } => {
                out.push(Out::Log(Note::Resumed {
                    layer: layer.clone(),
                    stopped_for: *stopped_for,
                }));
                if let State::Open { next_pet, .. } = &mut self.state {
                    *next_pet = now;
                }
                after_pet = Some(Record::Unknown);
            }
        }
        if allows(decision) {
            self.tick_device(now, out);
        } else if !self.opened_once {
            if let State::Absent { next_try, .. } = self.state {
                if next_try <= now {
                    out.push(Out::TryOpen);
                }
            }
        }
        if std::mem::take(&mut self.start_record) {
            out.push(Out::WriteRecord(Record::Start));
        }
        if let Some(r) = after_pet {
            out.push(Out::WriteRecord(r));
        }
    }

    /// Due device work in a turn the gate allows.
    fn tick_device(&mut self, now: MonoTime, out: &mut Vec<Out>) {
        match self.state {
            State::Absent { next_try, .. } if next_try <= now => out.push(Out::TryOpen),
            State::Open { next_pet, .. } if next_pet <= now => self.pet_now(now, out),
            State::Absent { .. } | State::Open { .. } | State::Disarmed => {}
        }
    }

    /// Configure (if pending) and pet, now; the caller checked the gate.
    fn pet_now(&mut self, now: MonoTime, out: &mut Vec<Out>) {
        let period = self.pet_interval();
        if let State::Open {
            next_pet,
            configure,
            ..
        } = &mut self.state
        {
            if let Some(secs) = configure.take() {
                out.push(Out::Configure { secs });
            }
            out.push(Out::Pet);
            *next_pet = advance(*next_pet, period, now);
        }
    }
}

#[cfg(test)]
mod tests;
