//! The supervisor's vocabulary: what happens to a service ([`Event`], with
//! how a process ended, [`ExitStatus`]), what the shell must do
//! ([`Action`]), what a state file resumes ([`Resume`]) and why a stop
//! began ([`StopReason`]).

use super::ServiceId;
use crate::notify::NotifyMsg;
use crate::policy::History;
use crate::service::signal_name;
use log::Level;
use std::fmt;
use std::time::Duration;
use tether_common::clock::MonoTime;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal {
        signal: i32,
        core: bool,
    },
    /// An adopted process ended while its status was not learnt (init's
    /// relay pipe was full, or no record came within the grace): counted
    /// as a failure.
    Unknown,
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// A raw `waitpid` status word (init's relay records), `None` when it
    /// says stopped/continued rather than ended.
    pub fn from_raw(status: i32) -> Option<ExitStatus> {
        let sig = status & 0x7f;
        if sig == 0 {
            Some(ExitStatus::Code((status >> 8) & 0xff))
        } else if sig != 0x7f && status & 0xff != 0x7f && status != 0xffff {
            Some(ExitStatus::Signal {
                signal: sig,
                core: status & 0x80 != 0,
            })
        } else {
            None
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Code(c) => write!(f, "exit {c}"),
            ExitStatus::Unknown => write!(f, "exit status unknown"),
            ExitStatus::Signal { signal, core } => {
                write!(f, "signal {}", signal_name(signal))?;
                if core {
                    write!(f, " (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// Something that happened to one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The process of an [`Action::Spawn`] runs; it leads its own session
    /// and process group (`pgid == pid`).
    Spawned { pid: i32 },
    /// An [`Action::Spawn`] failed: `errno` when the system said so, and a
    /// message (e.g. `/bin/nope: No such file or directory (os error 2)`).
    SpawnFailed { errno: Option<i32>, message: String },
    /// An [`Action::Provision`] failed (the shell keeps the error): the
    /// next start provisions again first, and the start fails with the
    /// error if that fails too.
    ProvisionFailed,
    /// The main process was reaped (its output already drained).
    Exited { pid: i32, status: ExitStatus },
    /// As `Exited`, for a process whose exec helper reported that the
    /// program could not be started (`spawn::exec_status`): a failed start,
    /// unless the service was being stopped.
    ExecFailed {
        pid: i32,
        status: ExitStatus,
        errno: Option<i32>,
        message: String,
    },
    /// A datagram arrived on the service's notify socket. `in_group`: the
    /// sender still exists and is (not) in the service's process group;
    /// `None` when it is gone or unknown.
    Notify {
        sender_pid: Option<i32>,
        sender_uid: Option<u32>,
        in_group: Option<bool>,
        messages: Vec<NotifyMsg>,
    },
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Start the service's process, then report [`Event::Spawned`] or
    /// [`Event::SpawnFailed`].
    Spawn {
        id: ServiceId,
    },
    /// Send `signal` to `pid`, or with `group` to the process group `pid`
    /// (and for `SIGKILL`, to the service's cgroup when it has one; for
    /// another signal, to each process of that cgroup).
    Kill {
        id: ServiceId,
        pid: i32,
        group: bool,
        signal: i32,
    },
    Log {
        level: Level,
        message: String,
    },
    /// Ask init for an orderly reboot (write `RUN/shutdown-request`, send
    /// `R`), or log that it is impossible.
    RequestReboot {
        reason: String,
    },
    /// The set of running processes changed: rewrite `RUN/restarter.state`.
    WriteState,
    /// The process `pid` of an adopted service is not the restarter's
    /// child: watch it (a pidfd, init's relay) and report its end as
    /// [`Event::Exited`].
    Watch {
        id: ServiceId,
        pid: i32,
    },
    /// The service's spec entered the set or changed: make what it needs
    /// (output pipes if it has none; a notify socket for a notify service,
    /// none otherwise; its cgroup) in the shell's resource table
    /// (`resources`). Always before the [`Action::Spawn`] that uses them.
    Provision {
        id: ServiceId,
    },
    /// The service is gone (removed by a reload): release its resources
    /// (notify socket, output pipes, cgroup). The id may be reused.
    Release {
        id: ServiceId,
    },
}

/// What a previous restarter's state file says of one service, to resume
/// its supervision (issue 13). `pid`: its process, checked by the shell to
/// be the same process (start time) and still running; `None` for a
/// service without a process, or whose process is gone (then `exited`
/// says how it ended, when known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub pid: Option<i32>,
    /// When the run began (`CLOCK_MONOTONIC`, the machine's).
    pub started: Option<MonoTime>,
    pub ready: bool,
    pub watchdog_timeout: Option<Duration>,
    pub restarts: u64,
    pub history: History,
    pub wanted: bool,
    pub failed: bool,
    /// The process named by `pid` ended while no restarter ran (init's
    /// relay said how, or [`ExitStatus::Unknown`]): it is taken back as it
    /// was, then its exit handled as any other (restart per policy).
    pub exited: Option<ExitStatus>,
}

/// Why a service is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopReason {
    Admin,
    Shutdown,
    Dependency,
    Restart,
    Reload,
    Removed,
    Watchdog,
}
