//! The service state machine, pure: events in (a process was spawned,
//! exited, sent a notify message; a deadline passed; an administrator asked
//! for something), actions out (spawn, kill, log, write the state file, ask
//! init for a reboot). No system calls: the shell in `event_loop` carries
//! the actions out and feeds their results back; the tests below drive it
//! with a fake clock and fake processes.
//!
//! One [`Supervisor`] holds every service, addressed by [`ServiceId`] (a
//! slot index, stable for the life of the service). Deadlines (restart
//! times, stop timeouts, watchdog deadlines) live in the services; the
//! shell sleeps until [`Supervisor::next_deadline`] and then calls
//! [`Supervisor::tick`]. Nothing wakes up for an idle service.
//!
//! Cost per event (issue #7: 1000 services started, or killed at once,
//! must not cost O(N²)): the work of an event is proportional to the
//! services it can affect, not to the number of services.
//! - Reconcile works on a *dirty set* (a list deduplicated by a `queued`
//!   flag per slot, so it never holds an id twice), processed in slot
//!   order: first the stop step of each dirty service, then the start step
//!   of each. Slot order among the dirty services gives the same actions in
//!   the same order as the full scan it replaces, because a service outside
//!   the set would produce nothing (the invariant below).
//! - Deadlines sit in two ordered sets of `(time, id)`, one entry at most
//!   per service and set (the slot remembers its entry, so a moved deadline
//!   is removed and reinserted): *start timers* (`start_at` of a service
//!   without a process) and *process timers* (the watchdog deadline, or
//!   the `SIGKILL` time of a stop). `next_deadline` reads the two first
//!   entries; `tick` pops only the due process timers; every reconcile
//!   pops the due start timers into the dirty set (as the full scan would
//!   have started a due service on any event, not only on a tick).
//! - Invariant: after every public call, each service is a fixed point of
//!   its own stop and start steps (running them again with the same `now`
//!   changes nothing and emits nothing), except for the time-driven parts,
//!   which are exactly the armed timers. Processing a service makes it a
//!   fixed point (a stop marks it stopping; a start marks it spawning; a
//!   wait records a future `start_at` or logs once). So the dirty set is
//!   complete when it holds every service an *input* of whose steps
//!   changed. Those inputs are: its own state; `desired` of itself (which
//!   reads `wanted`/`removing` of every service it `requires`,
//!   transitively); `ready` of each service it names in `requires` or
//!   `after`, and `desired` of each it names in `after` (the start step);
//!   and, for each service naming it in `requires` or `after`, whether
//!   that one has a process (or a spawn out) and is `desired` (the stop
//!   step: reverse dependency order). Hence the marking rules:
//!   - a change of service X's process, spawn or readiness (spawned,
//!     spawn failed, exited, `READY=1`, stop begun, watchdog missed) marks
//!     X, the services naming X (they may start, or must wait), and the
//!     services X names (their stop may have waited for X);
//!   - a change of `desired(X)` (X failed or was not restarted, `start`,
//!     `stop`, `restart`) does that for X and for every service that
//!     requires X, transitively (their `desired` follows X's);
//!   - what reconcile itself does marks nothing: a stop it begins is of a
//!     service that is not desired, whose readiness no start step reads
//!     (an `after` target that will not run is not waited for, and a
//!     service requiring it is not desired either), and a stop changes no
//!     input of another stop step; a start (spawn) is of a desired
//!     service, which holds no stop back and is not ready yet. So one pass
//!     of stop steps, then one of start steps, over the dirty set suffices.
//!   - whole-table changes (load, reload, removal of a service, a reloaded
//!     spec taking effect, shutdown) mark everything.
//! - A watchdog ping moves its timer (O(log N)), so `next_deadline` is
//!   exact. Still O(N), but not per event: `load`/`reload`/`shutdown`,
//!   `rows`, `summary`, `running` (the state file) and `is_idle`.
//! - (decision) When a reloaded spec takes effect (at the restart of a
//!   service that was running during the reload), the dependency index is
//!   rebuilt, so stops follow the new `requires`/`after` (it used to keep
//!   the old ones until the next reload).
//!
//! Rules (decisions where the design is silent are marked "decision"):
//! - A service *should run* ("desired") when it is wanted (enabled, not
//!   stopped by hand, not failed), the restarter is not shutting down, and
//!   every service it `requires` should run too.
//! - It is *started* when it should run, its restart time has come
//!   (`restart_delay` since its last start, or the policy's backoff), and
//!   each dependency is up and ready: every `requires` target, and every
//!   `after` target that should run (decision: an `after` target that will not run —
//!   stopped, failed, disabled, broken — is not waited for).
//! - Ready means: running, and for `notify = "ready" | "watchdog"` having
//!   sent `READY=1`; for `notify = "none"`, as soon as it runs.
//! - A service that should not run but has a process is stopped — only
//!   once no service depending on it (`after` or `requires`) that is also
//!   going down still has a process: stops happen in reverse dependency
//!   order (shutdown, `tetherctl stop`, a required service stopped).
//! - A crash of a required service does not stop its dependents
//!   (decision: only a stop does, as the issue says); they keep running while it
//!   restarts. Neither does `tetherctl restart` of a required service.
//! - Stopping: `stop_signal` (then `SIGCONT`) to the whole process group,
//!   `SIGKILL` to the group (and its cgroup) after `stop_timeout`.
//! - (decision) When a service's main process ends, whatever is left of its process
//!   group (and cgroup) is killed with `SIGKILL` at once, so a restart can
//!   never run next to a leftover of the previous run.
//! - A missed watchdog deadline: `SIGABRT` to the main process, `SIGKILL`
//!   to the group after `stop_timeout`, then the restart policy as for a
//!   crash. (decision) The watchdog is armed at spawn (a hang before `READY=1` is
//!   caught too): the first `WATCHDOG=1` is due within `watchdog_timeout`
//!   of the start. `WATCHDOG_USEC=` replaces the timeout for the current
//!   run; `WATCHDOG=trigger` counts as a miss.
//! - (decision) A service whose window is exhausted with `on_exhausted = "reboot"`
//!   asks for a reboot and is marked failed (it is not restarted meanwhile).
//! - (decision) `restart = "never"` (or `on-failure` after a clean exit): the service
//!   is stopped, not failed, and dependents that require it are stopped.
//! - (decision) Notify credentials (sender pid and uid from `SO_PASSCRED`)
//!   are logged with every message that changes something (`READY=1`,
//!   `RELOADING=1`, `STOPPING=1`, `WATCHDOG=trigger`, `WATCHDOG_USEC=`,
//!   `MAINPID=`); `WATCHDOG=1` pings are not logged (one per period per
//!   service would flood syslog), `STATUS=` only at debug level. A sender
//!   that still exists outside the service's process group is ignored,
//!   counted and logged. `MAINPID=` is recorded and logged; supervision
//!   stays on the process the restarter started (services run in the
//!   foreground).
//! - (decision) Stale notify messages: the shell discards what is queued on a
//!   service's socket before each spawn, so a `READY=1` of a previous run
//!   cannot make a new run ready.
//! - (decision) A start by hand (`start`, `restart`) and a changed service file on
//!   reload start at once (no `restart_delay` wait) and clear the restart
//!   history and a failed state.

use crate::notify::NotifyMsg;
use crate::policy::{Decision, History};
use crate::service::{signal_name, LoadedSet, NotifyMode, OnExhausted, ServiceSpec};
use log::Level;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tether_common::budget::{BudgetRow, Outcome};
use tether_common::clock::MonoTime;
use tether_common::deadlines::Deadlines;
use tether_common::duration;

/// Depth bound of dependency walks (cycles are refused at load; this only
/// guards against a bug turning into a stack overflow).
const MAX_DEPTH: usize = 64;

/// A service's slot; stable for as long as the service exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u32);

impl ServiceId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

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
    /// The main process was reaped (its output already drained).
    Exited { pid: i32, status: ExitStatus },
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

/// A service's configuration as the supervisor holds it: shared (a clone
/// of the [`Supervisor`] copies a pointer), compared by value, hashed by
/// name (equal specs have equal names, so `Hash` agrees with `Eq`; a model
/// checker's configuration is fixed, so the name suffices to tell states
/// apart). Changing one (`identity_resolved`) copies it on write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec(Arc<ServiceSpec>);

impl Spec {
    pub fn new(spec: ServiceSpec) -> Spec {
        Spec(Arc::new(spec))
    }

    fn make_mut(&mut self) -> &mut ServiceSpec {
        Arc::make_mut(&mut self.0)
    }
}

impl std::ops::Deref for Spec {
    type Target = ServiceSpec;
    fn deref(&self) -> &ServiceSpec {
        &self.0
    }
}

impl Hash for Spec {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.name.hash(h);
    }
}

/// A status-only value (texts, counters that only grow): shown by status
/// and the state file, read by no decision, and skipped by `Eq` and
/// `Hash`, so a model checker's state space stays finite.
#[derive(Clone, Debug, Default)]
pub struct Side<T>(pub T);

impl<T> PartialEq for Side<T> {
    fn eq(&self, _: &Side<T>) -> bool {
        true
    }
}

impl<T> Eq for Side<T> {}

impl<T> Hash for Side<T> {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

impl<T> std::ops::Deref for Side<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Side<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// A service's status-only fields.
#[derive(Clone, Debug, Default)]
struct Stats {
    restarts: u64,
    last_exit: Option<String>,
    last_error: Option<String>,
    status_text: Option<String>,
    notify_rejected: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Stopping {
    kill_at: MonoTime,
    killed: bool,
    reason: StopReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Proc {
    pid: i32,
    started: MonoTime,
    ready: bool,
    watchdog_timeout: Option<Duration>,
    watchdog_deadline: Option<MonoTime>,
    stopping: Option<Stopping>,
    main_pid: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Service {
    spec: Spec,
    /// A changed spec from a reload, applied when the process has stopped.
    next_spec: Option<Spec>,
    /// Removed by a reload; forgotten when its process has stopped.
    removing: bool,
    /// Enabled and not stopped by hand, not failed.
    wanted: bool,
    failed: bool,
    /// A [`Action::Spawn`] is out; its result has not come back.
    spawning: bool,
    proc_: Option<Proc>,
    /// Earliest next start (policy delay or throttle), always in the future
    /// after a reconcile.
    start_at: Option<MonoTime>,
    /// `start_at` comes from an exhausted window's backoff.
    backoff: bool,
    /// Start again as soon as the current process is gone.
    restart_after_stop: bool,
    history: History,
    /// "waits for" was logged for the current wait.
    waiting_logged: bool,
    /// Last start (spawn or attempt), for `restart_delay`; `None` lets the
    /// next start happen at once.
    last_start: Option<MonoTime>,
    stats: Side<Stats>,
}

impl Service {
    fn new(spec: ServiceSpec) -> Service {
        Service {
            wanted: !spec.disabled,
            spec: Spec::new(spec),
            next_spec: None,
            removing: false,
            failed: false,
            spawning: false,
            proc_: None,
            start_at: None,
            backoff: false,
            restart_after_stop: false,
            history: History::new(),
            waiting_logged: false,
            last_start: None,
            stats: Side::default(),
        }
    }

    fn stopping(&self) -> bool {
        self.proc_.as_ref().is_some_and(|p| p.stopping.is_some())
    }

    /// Up and ready, not on its way down.
    fn ready(&self) -> bool {
        self.proc_
            .as_ref()
            .is_some_and(|p| p.ready && p.stopping.is_none())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Entry {
    Valid(Box<Service>),
    /// A service whose file is invalid: shown in status, never started.
    Broken {
        name: String,
        error: String,
    },
}

impl Entry {
    fn name(&self) -> &str {
        match self {
            Entry::Valid(s) => &s.spec.name,
            Entry::Broken { name, .. } => name,
        }
    }
}

/// One line of status, before the shell adds output and socket counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRow {
    pub id: ServiceId,
    pub name: String,
    /// starting | running | ready | stopping | stopped | failed | backoff |
    /// waiting | disabled | config-error
    pub state: &'static str,
    pub pid: Option<i32>,
    pub uptime: Option<Duration>,
    pub restarts: u64,
    pub last_exit: Option<String>,
    pub ready: bool,
    pub watchdog_left: Option<Duration>,
    pub status_text: Option<String>,
    pub error: Option<String>,
    pub notify_rejected: u64,
}

/// Counts for the liveness line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Services that should run.
    pub expected: usize,
    /// Of those, up and ready.
    pub up: usize,
    pub failed: usize,
    pub broken: usize,
}

/// Per slot bookkeeping of the incremental reconcile (see the module
/// documentation); kept beside `slots`, same length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct SlotMeta {
    /// The slot is in `Supervisor::dirty`.
    queued: bool,
}

/// What a service's deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    /// A service without a process may start (`start_at`).
    Start,
    /// A service with a process: its watchdog deadline, or the `SIGKILL`
    /// of its stop.
    Proc,
}

/// Every service and its state. See the module documentation.
///
/// `Clone + Eq + Hash` for a model checker (issue 14): status-only fields
/// (texts, counters that only grow) sit in [`Side`] cells, which every
/// comparison and hash skips; specs are shared [`Spec`]s (a pointer to
/// clone, a name to hash); `out` is empty between calls (actions are
/// returned). [`Supervisor::rebase`] shifts every stored time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Supervisor {
    slots: Vec<Option<Entry>>,
    meta: Vec<SlotMeta>,
    free: Vec<u32>,
    by_name: BTreeMap<String, ServiceId>,
    by_pid: BTreeMap<i32, ServiceId>,
    /// Dependency name → the services that name it in `after`/`requires`.
    dependents: BTreeMap<String, Vec<ServiceId>>,
    shutting_down: bool,
    out: Vec<Action>,
    /// Services the next reconcile looks at (no duplicates: `queued`).
    dirty: Vec<ServiceId>,
    /// The next reconcile looks at every service.
    all_dirty: bool,
    /// Per service, at most one of: [`Timer::Start`], `start_at` of a
    /// service without a process; [`Timer::Proc`], the watchdog deadline,
    /// or `SIGKILL` time while stopping, of a service with a process.
    timers: Deadlines<(ServiceId, Timer)>,
    /// While starts fail for want of descriptors (`EMFILE`/`ENFILE`): how
    /// many such failures were not logged. The first of an episode is
    /// logged (with what to do), the rest at debug until a start succeeds.
    descriptors_out: Side<Option<u64>>,
}

/// Whether a start failure is the process or system running out of
/// descriptors.
fn out_of_descriptors(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::EMFILE) | Some(libc::ENFILE))
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    // ---- the set of services ------------------------------------------

    /// Installs the services of a first load: valid ones are started (as
    /// their dependencies allow), invalid ones are kept as `config-error`.
    pub fn load(&mut self, set: LoadedSet, now: MonoTime) -> Vec<Action> {
        for (name, error) in set.errors {
            let message = error.to_string();
            self.log(
                Level::Error,
                format!("service {name}: configuration error: {message}"),
            );
            match self.by_name.get(&name).copied() {
                Some(id) => {
                    self.slots[id.index()] = Some(Entry::Broken {
                        name,
                        error: message,
                    })
                }
                None => {
                    self.insert(Entry::Broken {
                        name,
                        error: message,
                    });
                }
            }
        }
        for spec in set.specs {
            match self.by_name.get(&spec.name).copied() {
                Some(id) => {
                    self.slots[id.index()] = Some(Entry::Valid(Box::new(Service::new(spec))));
                    self.out.push(Action::Provision { id });
                }
                None => {
                    self.insert(Entry::Valid(Box::new(Service::new(spec))));
                }
            }
        }
        self.rebuild_dependents();
        self.mark_all();
        self.reconcile(now);
        self.take()
    }

    /// [`Supervisor::load`], resuming what a previous restarter's state file
    /// says (issue 13): restart counts, sliding windows, operator-stopped,
    /// disabled and failed states; a service with a live process is
    /// adopted (same pid, uptime continuing, readiness as it was) instead of
    /// started, and watched ([`Action::Watch`]). Decision: an adopted
    /// watchdog-mode service gets a fresh `watchdog_timeout` from `now`
    /// (its pings had nowhere to go while no restarter ran; its own
    /// `WATCHDOG_USEC=` is kept). A resume naming no valid service is
    /// ignored (the shell stops such a process as a leftover).
    pub fn load_adopting(
        &mut self,
        set: LoadedSet,
        resumes: HashMap<String, Resume>,
        now: MonoTime,
    ) -> Vec<Action> {
        // Installed first, with nothing reconciled yet.
        let specs: Vec<String> = set.specs.iter().map(|s| s.name.clone()).collect();
        let mut start = set;
        let specs_set: HashSet<String> = specs.into_iter().collect();
        let errors = std::mem::take(&mut start.errors);
        for (name, error) in errors {
            let message = error.to_string();
            self.log(
                Level::Error,
                format!("service {name}: configuration error: {message}"),
            );
            if !self.by_name.contains_key(&name) {
                self.insert(Entry::Broken {
                    name,
                    error: message,
                });
            }
        }
        for spec in std::mem::take(&mut start.specs) {
            if !self.by_name.contains_key(&spec.name) {
                self.insert(Entry::Valid(Box::new(Service::new(spec))));
            }
        }
        for (name, r) in resumes {
            if !specs_set.contains(&name) {
                continue;
            }
            let Some(id) = self.by_name.get(&name).copied() else {
                continue;
            };
            let s = self.service_mut(id);
            s.stats.restarts = r.restarts;
            s.history = r.history;
            s.wanted = r.wanted;
            s.failed = r.failed;
            let Some(pid) = r.pid else {
                continue;
            };
            let started = r.started.unwrap_or(now).min(now);
            let watchdog_timeout = (s.spec.notify == NotifyMode::Watchdog)
                .then(|| r.watchdog_timeout.or(s.spec.watchdog_timeout))
                .flatten();
            s.last_start = Some(started);
            s.proc_ = Some(Proc {
                pid,
                started,
                ready: r.ready || s.spec.notify == NotifyMode::None,
                watchdog_timeout,
                watchdog_deadline: watchdog_timeout.map(|t| now + t),
                stopping: None,
                main_pid: None,
            });
            self.by_pid.insert(pid, id);
            if let Some(status) = r.exited {
                self.log(
                    Level::Warn,
                    format!("service {name}: pid {pid} ended while no restarter ran"),
                );
                self.on_exit(id, pid, status, now);
                // Its group is the sweep's (the shell's leftover stop):
                // the pid is long gone and may be reused.
                self.out
                    .retain(|a| !matches!(a, Action::Kill { pid: p, .. } if *p == pid));
                continue;
            }
            self.out.push(Action::Watch { id, pid });
            self.log(
                Level::Info,
                format!(
                    "service {name} adopted (pid {pid}, up {}, {} restart(s))",
                    fmt_dur(now.saturating_since(started)),
                    r.restarts
                ),
            );
        }
        self.rebuild_dependents();
        self.mark_all();
        self.reconcile(now);
        self.out.push(Action::WriteState);
        self.take()
    }

    /// What the state file needs of every service worth a line: each with
    /// a process, and each without one whose state is not a fresh
    /// service's (stopped by hand, failed, restarted before).
    pub fn resumes(&self) -> Vec<(ServiceId, &str, Duration, Resume)> {
        self.ids()
            .filter_map(|id| match self.slots[id.index()].as_ref() {
                Some(Entry::Valid(s)) => {
                    let r = Resume {
                        pid: s.proc_.as_ref().map(|p| p.pid),
                        started: s.proc_.as_ref().map(|p| p.started),
                        ready: s.proc_.as_ref().is_some_and(|p| p.ready),
                        watchdog_timeout: s.proc_.as_ref().and_then(|p| p.watchdog_timeout),
                        restarts: s.stats.restarts,
                        history: s.history.clone(),
                        wanted: s.wanted,
                        failed: s.failed,
                        exited: None,
                    };
                    let plain = r.pid.is_none()
                        && !r.failed
                        && r.wanted != s.spec.disabled
                        && r.restarts == 0
                        && r.history == History::new();
                    (!plain).then_some((id, s.spec.name.as_str(), s.spec.stop_timeout, r))
                }
                _ => None,
            })
            .collect()
    }

    /// Applies a reloaded set: new services start, removed ones stop and
    /// go, changed ones restart with their new spec, unchanged ones are
    /// left alone. A set with any error changes nothing: `Err` lists the
    /// errors (file:line:column).
    pub fn reload(&mut self, set: LoadedSet, now: MonoTime) -> Result<Vec<Action>, String> {
        crate::reload::validate(&set)?;
        if self.shutting_down {
            return Err("shutting down".into());
        }
        let new: BTreeMap<String, ServiceSpec> =
            set.specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        let existing: Vec<ServiceId> = self.ids().collect();
        for id in existing {
            let name = self.entry(id).name().to_string();
            if new.contains_key(&name) {
                continue;
            }
            removed += 1;
            match self.slots[id.index()].as_mut() {
                Some(Entry::Valid(s)) => {
                    s.removing = true;
                    s.wanted = false;
                    s.next_spec = None;
                    s.restart_after_stop = false;
                    if s.proc_.is_none() && !s.spawning {
                        self.log(Level::Info, format!("service {name} removed"));
                        self.forget(id);
                    } else {
                        self.log(Level::Info, format!("service {name} removed: stopping it"));
                    }
                }
                _ => self.forget(id),
            }
        }
        for (name, spec) in new {
            let Some(id) = self.by_name.get(&name).copied() else {
                added += 1;
                self.log(Level::Info, format!("service {name} added"));
                self.insert(Entry::Valid(Box::new(Service::new(spec))));
                continue;
            };
            let slot = self.slots[id.index()]
                .as_mut()
                .expect("indexed slot is occupied");
            let s = match slot {
                Entry::Broken { .. } => {
                    added += 1;
                    *slot = Entry::Valid(Box::new(Service::new(spec)));
                    self.out.push(Action::Log {
                        level: Level::Info,
                        message: format!("service {name}: configuration fixed"),
                    });
                    continue;
                }
                Entry::Valid(s) => s,
            };
            let was_removing = std::mem::replace(&mut s.removing, false);
            let pending = s.next_spec.as_ref().unwrap_or(&s.spec);
            if **pending == spec && !was_removing {
                continue;
            }
            changed += 1;
            if s.proc_.is_some() || s.spawning {
                s.next_spec = Some(Spec::new(spec));
                s.restart_after_stop = true;
                let running = s.proc_.is_some() && !s.stopping();
                self.log(
                    Level::Info,
                    format!("service {name} changed: restarting it"),
                );
                if running {
                    self.begin_stop(id, StopReason::Reload, now);
                }
            } else {
                apply_spec(s, Spec::new(spec));
                self.out.push(Action::Provision { id });
                self.log(Level::Info, format!("service {name} changed"));
            }
        }
        self.log(
            Level::Info,
            format!("reload: {added} added, {changed} changed, {removed} removed"),
        );
        self.rebuild_dependents();
        self.mark_all();
        self.reconcile(now);
        Ok(self.take())
    }

    fn insert(&mut self, entry: Entry) -> ServiceId {
        let name = entry.name().to_string();
        let id = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(entry);
                ServiceId(i)
            }
            None => {
                self.slots.push(Some(entry));
                self.meta.push(SlotMeta::default());
                ServiceId((self.slots.len() - 1) as u32)
            }
        };
        if matches!(self.slots[id.index()], Some(Entry::Valid(_))) {
            self.out.push(Action::Provision { id });
        }
        self.by_name.insert(name, id);
        self.mark_all();
        id
    }

    fn forget(&mut self, id: ServiceId) {
        if let Some(entry) = self.slots[id.index()].take() {
            self.by_name.remove(entry.name());
            self.free.push(id.0);
            self.out.push(Action::Release { id });
            // Disarms its timers: the slot may be reused.
            self.rearm(id);
            self.rebuild_dependents();
            self.mark_all();
        }
    }

    fn rebuild_dependents(&mut self) {
        self.dependents.clear();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(Entry::Valid(s)) = slot {
                for dep in s.spec.dependencies() {
                    self.dependents
                        .entry(dep.clone())
                        .or_default()
                        .push(ServiceId(i as u32));
                }
            }
        }
    }

    // ---- events ----------------------------------------------------------

    /// Feeds one event of service `id`.
    pub fn handle(&mut self, id: ServiceId, event: Event, now: MonoTime) -> Vec<Action> {
        if !matches!(self.slots.get(id.index()), Some(Some(Entry::Valid(_)))) {
            return Vec::new();
        }
        // Watchdog pings (the common case, one per service per period) only
        // move a deadline later: no reconcile, the timer is moved.
        // Whether it should run changes only with a spawn result or an exit
        // (the restart policy), never with a notify message.
        let desired_before = (!matches!(event, Event::Notify { .. })).then(|| self.desired(id, 0));
        let significant = match event {
            Event::Spawned { pid } => {
                self.on_spawned(id, pid, now);
                true
            }
            Event::SpawnFailed { errno, message } => {
                self.on_spawn_failed(id, errno, message, now);
                true
            }
            Event::Exited { pid, status } => {
                self.on_exit(id, pid, status, now);
                true
            }
            Event::Notify {
                sender_pid,
                sender_uid,
                in_group,
                messages,
            } => self.on_notify(id, sender_pid, sender_uid, in_group, messages, now),
        };
        if significant {
            if desired_before.is_some_and(|before| before != self.desired(id, 0)) {
                self.touch_desired(id);
            } else {
                self.touch(id);
            }
            self.reconcile(now);
        } else {
            self.rearm(id);
        }
        self.take()
    }

    /// The `user`/`group` pair was looked up (off the loop, see
    /// `resolver.rs`): every service naming it takes the answer (a failure
    /// never replaces a resolved identity). A running service whose
    /// resolved identity changed restarts with the new one, as for a
    /// changed file at a reload.
    pub fn identity_resolved(
        &mut self,
        user: Option<&str>,
        group: Option<&str>,
        answer: &crate::service::Resolution,
        now: MonoTime,
    ) -> Vec<Action> {
        use crate::resolver::merge;
        use crate::service::Resolution;
        let names =
            |spec: &ServiceSpec| spec.user.as_deref() == user && spec.group.as_deref() == group;
        let ids: Vec<ServiceId> = self.ids().collect();
        for id in ids {
            let Some(Some(Entry::Valid(s))) = self.slots.get_mut(id.index()) else {
                continue;
            };
            if let Some(next) = s.next_spec.as_mut().filter(|n| names(n)) {
                next.make_mut().identity = merge(Some(&next.identity), answer.clone());
            }
            if !names(&s.spec) {
                continue;
            }
            let new = merge(Some(&s.spec.identity), answer.clone());
            if new == s.spec.identity {
                continue;
            }
            let restart = matches!(s.spec.identity, Resolution::Resolved(_))
                && s.proc_.is_some()
                && !s.stopping()
                && s.next_spec.is_none();
            if !restart {
                s.spec.make_mut().identity = new;
                continue;
            }
            let mut spec = s.spec.clone();
            spec.make_mut().identity = new;
            s.next_spec = Some(spec);
            s.restart_after_stop = true;
            let line = format!(
                "service {}: its user or group changed: restarting it",
                s.spec.name
            );
            self.log(Level::Info, line);
            self.begin_stop(id, StopReason::Reload, now);
        }
        self.take()
    }

    /// The service's notify socket was bound again (the runtime directory
    /// had been removed under it): a running watchdog service gets one
    /// fresh `watchdog_timeout` from `now`, since its pings had nowhere to
    /// go meanwhile. Nothing else changes; no action results.
    pub fn notify_socket_restored(&mut self, id: ServiceId, now: MonoTime) {
        let Some(Some(Entry::Valid(s))) = self.slots.get_mut(id.index()) else {
            return;
        };
        if let Some(p) = s.proc_.as_mut() {
            if let (Some(t), None) = (p.watchdog_timeout, &p.stopping) {
                p.watchdog_deadline = Some(now + t);
            }
        }
        self.rearm(id);
    }

    fn on_spawned(&mut self, id: ServiceId, pid: i32, now: MonoTime) {
        let s = self.service_mut(id);
        s.spawning = false;
        s.last_start = Some(now);
        s.stats.last_error = None;
        s.stats.status_text = None;
        let watchdog_timeout = (s.spec.notify == NotifyMode::Watchdog)
            .then_some(s.spec.watchdog_timeout)
            .flatten();
        s.proc_ = Some(Proc {
            pid,
            started: now,
            ready: s.spec.notify == NotifyMode::None,
            watchdog_timeout,
            watchdog_deadline: watchdog_timeout.map(|t| now + t),
            stopping: None,
            main_pid: None,
        });
        let name = s.spec.name.clone();
        self.by_pid.insert(pid, id);
        if let Some(n) = self.descriptors_out.0.take() {
            self.log(
                Level::Warn,
                format!(
                    "descriptors available again ({n} more start(s) had failed with EMFILE/ENFILE)"
                ),
            );
        }
        self.log(Level::Info, format!("service {name} started (pid {pid})"));
        self.out.push(Action::WriteState);
    }

    fn on_spawn_failed(
        &mut self,
        id: ServiceId,
        errno: Option<i32>,
        message: String,
        now: MonoTime,
    ) {
        let s = self.service_mut(id);
        s.spawning = false;
        s.last_start = Some(now);
        let errno_text = errno
            .map(|e| format!(" [{:?}]", nix::errno::Errno::from_raw(e)))
            .unwrap_or_default();
        s.stats.last_error = Some(format!("cannot start: {message}{errno_text}"));
        let line = format!(
            "service {}: cannot start: {message}{errno_text}",
            s.spec.name
        );
        match (out_of_descriptors(errno), self.descriptors_out.0) {
            (true, Some(n)) => {
                self.descriptors_out.0 = Some(n + 1);
                self.log(Level::Debug, line);
            }
            (true, None) => {
                self.descriptors_out.0 = Some(0);
                self.log(
                    Level::Error,
                    format!(
                        "{line}; out of descriptors: further starts failing so are retried per policy but not logged until one succeeds (raise RLIMIT_NOFILE: [init] nofile)"
                    ),
                );
            }
            (false, _) => self.log(Level::Error, line),
        }
        self.after_end(id, true, now, now);
    }

    fn on_exit(&mut self, id: ServiceId, pid: i32, status: ExitStatus, now: MonoTime) {
        let Some(p) = self.service_mut(id).proc_.take_if(|p| p.pid == pid) else {
            return;
        };
        self.by_pid.remove(&pid);
        // Whatever is left of the group goes with it.
        self.out.push(Action::Kill {
            id,
            pid,
            group: true,
            signal: libc::SIGKILL,
        });
        self.out.push(Action::WriteState);
        let ran = fmt_dur(now.saturating_since(p.started));
        let reason = p.stopping.as_ref().map(|st| st.reason);
        let how = match reason {
            Some(StopReason::Watchdog) => format!("{status} (watchdog)"),
            _ => status.to_string(),
        };
        let s = self.service_mut(id);
        s.stats.last_exit = Some(how.clone());
        let name = s.spec.name.clone();
        if s.removing {
            self.log(
                Level::Info,
                format!("service {name} stopped: {how} after {ran}; removed"),
            );
            self.forget(id);
            return;
        }
        if s.restart_after_stop {
            s.restart_after_stop = false;
            if let Some(spec) = s.next_spec.take() {
                apply_spec(s, spec);
                self.out.push(Action::Provision { id });
                // Its dependencies may have changed.
                self.rebuild_dependents();
                self.mark_all();
            } else {
                s.wanted = true;
                s.failed = false;
                s.history.reset();
                s.last_start = None;
                s.start_at = None;
            }
            self.log(
                Level::Info,
                format!("service {name} stopped: {how} after {ran}; starting it again"),
            );
            return;
        }
        match reason {
            None => {
                let level = if status.success() {
                    Level::Info
                } else {
                    Level::Warn
                };
                self.log(level, format!("service {name} exited: {how} after {ran}"));
                self.after_end(id, !status.success(), p.started, now);
            }
            Some(StopReason::Watchdog) => {
                self.log(
                    Level::Error,
                    format!("service {name} exited: {how} after {ran}"),
                );
                self.after_end(id, true, p.started, now);
            }
            Some(_) => self.log(
                Level::Info,
                format!("service {name} stopped: {how} after {ran}"),
            ),
        }
    }

    /// The policy after a run that ended on its own (or a start that
    /// failed): restart, back off, fail, or ask for a reboot.
    fn after_end(&mut self, id: ServiceId, failed: bool, started: MonoTime, now: MonoTime) {
        if !self.desired(id, 0) {
            return;
        }
        let s = self.service_mut(id);
        let name = s.spec.name.clone();
        let decision = s.history.decide(&s.spec, failed, started, now);
        match decision {
            Decision::RestartAt(at) => {
                s.start_at = Some(at);
                s.backoff = false;
                s.stats.restarts += 1;
                let wait = at.saturating_since(now);
                if !wait.is_zero() {
                    self.log(
                        Level::Info,
                        format!("service {name}: restarting in {}", fmt_dur(wait)),
                    );
                }
            }
            Decision::Backoff { at, delay } => {
                s.start_at = Some(at);
                s.backoff = true;
                s.stats.restarts += 1;
                let limit = s.spec.limit.expect("backoff needs a window");
                self.log(
                    Level::Warn,
                    format!(
                        "service {name}: more than {} restarts within {}: backing off, restarting in {}",
                        limit.max_restarts,
                        duration::format(limit.window),
                        fmt_dur(delay)
                    ),
                );
            }
            Decision::Failed | Decision::Reboot => {
                s.failed = true;
                s.wanted = false;
                s.start_at = None;
                let limit = s.spec.limit.expect("exhaustion needs a window");
                let what = format!(
                    "service {name} exhausted its restart budget ({} restarts within {})",
                    limit.max_restarts,
                    duration::format(limit.window)
                );
                if decision == Decision::Reboot {
                    self.log(
                        Level::Error,
                        format!("{what}: requesting an orderly reboot"),
                    );
                    self.out.push(Action::RequestReboot { reason: what });
                } else {
                    self.log(Level::Error, format!("{what}: failed, not restarted"));
                }
            }
            Decision::NoRestart => {
                s.wanted = false;
                s.start_at = None;
                let why = format!("restart = \"{}\"", restart_mode_name(s.spec.restart));
                self.log(
                    Level::Info,
                    format!("service {name}: not restarted ({why})"),
                );
            }
        }
    }

    fn on_notify(
        &mut self,
        id: ServiceId,
        sender_pid: Option<i32>,
        sender_uid: Option<u32>,
        in_group: Option<bool>,
        messages: Vec<NotifyMsg>,
        now: MonoTime,
    ) -> bool {
        let significant = messages.iter().any(|m| {
            !matches!(
                m,
                NotifyMsg::Watchdog | NotifyMsg::Status(_) | NotifyMsg::Other(_)
            )
        });
        let s = self.service_mut(id);
        let name = s.spec.name.clone();
        let from = format!(
            "pid {} uid {}",
            sender_pid.map_or("?".to_string(), |p| p.to_string()),
            sender_uid.map_or("?".to_string(), |u| u.to_string())
        );
        if s.proc_.is_none() {
            self.log(
                Level::Debug,
                format!("service {name}: notify from {from} while not running: ignored"),
            );
            return false;
        }
        if in_group == Some(false) {
            s.stats.notify_rejected += 1;
            self.log(
                Level::Warn,
                format!("service {name}: notify from {from}, not in the service's process group: ignored"),
            );
            return false;
        }
        let mut miss = false;
        let mut persist = false;
        let mut lines = Vec::new();
        {
            let watchdog_mode = s.spec.notify == NotifyMode::Watchdog;
            let p = s.proc_.as_mut().expect("checked above");
            for m in messages {
                match m {
                    NotifyMsg::Ready => {
                        if !p.ready {
                            p.ready = true;
                            // Readiness is carried over a restarter crash.
                            persist = true;
                            lines.push((
                                Level::Info,
                                format!("service {name} ready (READY=1 from {from})"),
                            ));
                        }
                    }
                    NotifyMsg::Reloading => lines.push((
                        Level::Info,
                        format!("service {name} reloading (from {from})"),
                    )),
                    NotifyMsg::Stopping => lines.push((
                        Level::Info,
                        format!("service {name} stopping (from {from})"),
                    )),
                    NotifyMsg::Watchdog => {
                        if let (Some(t), None) = (p.watchdog_timeout, &p.stopping) {
                            p.watchdog_deadline = Some(now + t);
                        }
                    }
                    NotifyMsg::WatchdogTrigger => {
                        if watchdog_mode && p.stopping.is_none() {
                            lines.push((
                                Level::Warn,
                                format!("service {name}: WATCHDOG=trigger from {from}"),
                            ));
                            miss = true;
                        }
                    }
                    NotifyMsg::WatchdogUsec(us) => {
                        if watchdog_mode && us > 0 && p.stopping.is_none() {
                            let t = Duration::from_micros(us);
                            p.watchdog_timeout = Some(t);
                            p.watchdog_deadline = Some(now + t);
                            persist = true;
                            lines.push((
                                Level::Info,
                                format!(
                                    "service {name}: watchdog timeout set to {} (from {from})",
                                    fmt_dur(t)
                                ),
                            ));
                        }
                    }
                    NotifyMsg::Status(text) => {
                        lines.push((Level::Debug, format!("service {name} status: {text}")));
                        s.stats.status_text = Some(text);
                    }
                    NotifyMsg::MainPid(pid) => {
                        p.main_pid = Some(pid);
                        lines.push((
                            Level::Info,
                            format!("service {name}: MAINPID={pid} (from {from})"),
                        ));
                    }
                    NotifyMsg::Other(_) => {}
                }
            }
        }
        for (level, line) in lines {
            self.log(level, line);
        }
        if persist {
            self.out.push(Action::WriteState);
        }
        if miss {
            self.watchdog_miss(id, now);
        }
        significant
    }

    // ---- time ------------------------------------------------------------

    /// Acts on every deadline that has passed at `now`.
    pub fn tick(&mut self, now: MonoTime) -> Vec<Action> {
        let mut due: Vec<ServiceId> = self
            .timers
            .take_due_where(now, |&(_, t)| t == Timer::Proc)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        // Slot order, as the full scan this replaces.
        due.sort_unstable();
        for id in due {
            // Rearmed by the reconcile below.
            self.mark(id);
            let Some(Entry::Valid(s)) = self.slots[id.index()].as_mut() else {
                continue;
            };
            let Some(p) = s.proc_.as_mut() else { continue };
            if let Some(st) = p.stopping.as_mut() {
                if !st.killed && st.kill_at <= now {
                    st.killed = true;
                    let (pid, name, t) = (p.pid, s.spec.name.clone(), s.spec.stop_timeout);
                    self.out.push(Action::Kill {
                        id,
                        pid,
                        group: true,
                        signal: libc::SIGKILL,
                    });
                    self.log(
                        Level::Warn,
                        format!(
                            "service {name} did not stop within {}: SIGKILL to its process group",
                            fmt_dur(t)
                        ),
                    );
                }
            } else if p.watchdog_deadline.is_some_and(|d| d <= now) {
                self.watchdog_miss(id, now);
                // No longer ready.
                self.touch(id);
            }
        }
        self.reconcile(now);
        self.take()
    }

    /// The earliest time [`tick`](Self::tick) has something to do (a
    /// restart, a watchdog deadline, a stop timeout).
    pub fn next_deadline(&self) -> Option<MonoTime> {
        self.timers.first().map(|(t, _)| t)
    }

    /// Moves every stored time `by` earlier, clamping those more than
    /// `horizon` before `now` (as [`MonoTime::rebased`]): for a model
    /// checker that keeps one canonical clock (issue 14). With `horizon`
    /// at least the largest duration of any spec (restart delay and
    /// window, stop and watchdog timeouts), the core decides the same
    /// afterwards at `now` as it did before at `now + by`; only status
    /// figures (uptime) differ. Never used by the shell.
    pub fn rebase(&mut self, by: Duration, now: MonoTime, horizon: Duration) {
        let r = |t: MonoTime| t.rebased(by, now, horizon);
        for slot in self.slots.iter_mut() {
            let Some(Entry::Valid(s)) = slot else {
                continue;
            };
            s.start_at = s.start_at.map(r);
            s.last_start = s.last_start.map(r);
            s.history.rebase(by, now, horizon);
            if let Some(p) = s.proc_.as_mut() {
                p.started = r(p.started);
                p.watchdog_deadline = p.watchdog_deadline.map(r);
                if let Some(st) = p.stopping.as_mut() {
                    st.kill_at = r(st.kill_at);
                }
            }
        }
        self.timers.rebase(by, now, horizon);
    }

    /// Puts service `id`'s timers where its state says (or removes them:
    /// the slot may be empty).
    fn rearm(&mut self, id: ServiceId) {
        let (start, proc_) = match self.slots.get(id.index()) {
            Some(Some(Entry::Valid(s))) => match &s.proc_ {
                Some(p) => (
                    None,
                    match &p.stopping {
                        Some(st) if !st.killed => Some(st.kill_at),
                        Some(_) => None,
                        None => p.watchdog_deadline,
                    },
                ),
                None => (s.start_at, None),
            },
            _ => (None, None),
        };
        self.timers.set((id, Timer::Start), start);
        self.timers.set((id, Timer::Proc), proc_);
    }

    fn watchdog_miss(&mut self, id: ServiceId, now: MonoTime) {
        let s = self.service_mut(id);
        let name = s.spec.name.clone();
        let stop_timeout = s.spec.stop_timeout;
        let Some(p) = s.proc_.as_mut() else { return };
        let timeout = p.watchdog_timeout.unwrap_or_default();
        p.watchdog_deadline = None;
        p.stopping = Some(Stopping {
            kill_at: now + stop_timeout,
            killed: false,
            reason: StopReason::Watchdog,
        });
        let pid = p.pid;
        self.out.push(Action::Kill {
            id,
            pid,
            group: false,
            signal: libc::SIGABRT,
        });
        self.log(
            Level::Error,
            format!(
                "service {name} missed its watchdog (no WATCHDOG=1 within {}): SIGABRT, SIGKILL in {}",
                fmt_dur(timeout),
                fmt_dur(stop_timeout)
            ),
        );
    }

    fn begin_stop(&mut self, id: ServiceId, reason: StopReason, now: MonoTime) {
        let s = self.service_mut(id);
        let name = s.spec.name.clone();
        let (signal, timeout) = (s.spec.stop_signal, s.spec.stop_timeout);
        let Some(p) = s.proc_.as_mut() else { return };
        if p.stopping.is_some() {
            return;
        }
        p.watchdog_deadline = None;
        p.stopping = Some(Stopping {
            kill_at: now + timeout,
            killed: false,
            reason,
        });
        let pid = p.pid;
        self.out.push(Action::Kill {
            id,
            pid,
            group: true,
            signal,
        });
        if signal != libc::SIGKILL && signal != libc::SIGCONT {
            self.out.push(Action::Kill {
                id,
                pid,
                group: true,
                signal: libc::SIGCONT,
            });
        }
        let why = match reason {
            StopReason::Admin => "stopped by request",
            StopReason::Shutdown => "shutting down",
            StopReason::Dependency => "a required service is stopping",
            StopReason::Restart => "restart requested",
            StopReason::Reload => "its file changed",
            StopReason::Removed => "its file was removed",
            StopReason::Watchdog => "watchdog",
        };
        self.log(
            Level::Info,
            format!(
                "stopping service {name} (pid {pid}, {why}): SIG{} to its process group, SIGKILL in {}",
                signal_name(signal),
                fmt_dur(timeout)
            ),
        );
    }

    // ---- the dirty set -----------------------------------------------------

    /// The next reconcile looks at `id`.
    fn mark(&mut self, id: ServiceId) {
        mark_in(&mut self.meta, &mut self.dirty, self.all_dirty, id);
    }

    /// The next reconcile looks at every service.
    fn mark_all(&mut self) {
        self.all_dirty = true;
    }

    /// Marks the services that name `id` in `after` or `requires`.
    fn mark_dependents(&mut self, id: ServiceId) {
        let Supervisor {
            slots,
            meta,
            dependents,
            dirty,
            all_dirty,
            ..
        } = self;
        let Some(Some(entry)) = slots.get(id.index()) else {
            return;
        };
        for &d in dependents.get(entry.name()).into_iter().flatten() {
            mark_in(meta, dirty, *all_dirty, d);
        }
    }

    /// Service `id`'s process, spawn or readiness changed: marks it, the
    /// services naming it (their start step reads its readiness) and the
    /// services it names (their stop step may wait for it).
    fn touch(&mut self, id: ServiceId) {
        self.mark(id);
        self.mark_dependents(id);
        let Supervisor {
            slots,
            meta,
            by_name,
            dirty,
            all_dirty,
            ..
        } = self;
        if let Some(Some(Entry::Valid(s))) = slots.get(id.index()) {
            for dep in s.spec.dependencies() {
                if let Some(&r) = by_name.get(dep) {
                    mark_in(meta, dirty, *all_dirty, r);
                }
            }
        }
    }

    /// Whether service `id` should run may have changed: touches it and
    /// every service that requires it, transitively (their `desired`
    /// follows its own).
    fn touch_desired(&mut self, id: ServiceId) {
        if self.all_dirty {
            return;
        }
        let mut seen = HashSet::from([id]);
        let mut stack = vec![id];
        while let Some(x) = stack.pop() {
            self.touch(x);
            let Some(Some(entry)) = self.slots.get(x.index()) else {
                continue;
            };
            let name = entry.name();
            for &d in self.dependents.get(name).into_iter().flatten() {
                let requires = matches!(
                    self.slots.get(d.index()),
                    Some(Some(Entry::Valid(s))) if s.spec.requires.iter().any(|r| r == name)
                );
                if requires && seen.insert(d) {
                    stack.push(d);
                }
            }
        }
    }

    // ---- the core rule -----------------------------------------------------

    /// Whether service `id` should run (see the module documentation).
    fn desired(&self, id: ServiceId, depth: usize) -> bool {
        let Some(Some(Entry::Valid(s))) = self.slots.get(id.index()) else {
            return false;
        };
        if self.shutting_down || !s.wanted || s.removing || depth > MAX_DEPTH {
            return false;
        }
        s.spec.requires.iter().all(|r| {
            self.by_name
                .get(r)
                .is_some_and(|&rid| self.desired(rid, depth + 1))
        })
    }

    fn desired_name(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|&id| self.desired(id, 0))
    }

    fn ready_name(&self, name: &str) -> bool {
        matches!(self.by_name.get(name).and_then(|id| self.slots[id.index()].as_ref()), Some(Entry::Valid(s)) if s.ready())
    }

    /// The first dependency `id` still waits for.
    fn waiting_for(&self, id: ServiceId) -> Option<&str> {
        let Some(Some(Entry::Valid(s))) = self.slots.get(id.index()) else {
            return None;
        };
        if let Some(r) = s.spec.requires.iter().find(|r| !self.ready_name(r)) {
            return Some(r);
        }
        s.spec
            .after
            .iter()
            .find(|a| self.desired_name(a) && !self.ready_name(a))
            .map(String::as_str)
    }

    /// Whether a service depending on `id` is going down and still has a
    /// process (then `id` waits: reverse dependency order).
    fn dependents_still_up(&self, id: ServiceId) -> bool {
        let name = self.entry(id).name();
        self.dependents.get(name).is_some_and(|ds| {
            ds.iter().any(|&d| match self.slots.get(d.index()) {
                Some(Some(Entry::Valid(s))) => {
                    (s.proc_.is_some() || s.spawning) && !self.desired(d, 0)
                }
                _ => false,
            })
        })
    }

    /// Starts what should run and may start, stops what should not run.
    ///
    /// Looks only at the dirty set (and the services whose start time has
    /// come), in slot order; see the module documentation.
    fn reconcile(&mut self, now: MonoTime) {
        for (id, _) in self.timers.take_due_where(now, |&(_, t)| t == Timer::Start) {
            self.mark(id);
        }
        let all = self.all_dirty;
        let mut ids = std::mem::take(&mut self.dirty);
        if all {
            for id in &ids {
                self.meta[id.index()].queued = false;
            }
            ids.clear();
            ids.extend(self.ids());
        } else {
            ids.sort_unstable();
        }
        // Stops, in reverse dependency order.
        for &id in &ids {
            let Some(Entry::Valid(s)) = self.slots[id.index()].as_ref() else {
                continue;
            };
            if s.proc_.is_none()
                || s.stopping()
                || self.desired(id, 0)
                || self.dependents_still_up(id)
            {
                continue;
            }
            let reason = if self.shutting_down {
                StopReason::Shutdown
            } else if s.removing {
                StopReason::Removed
            } else if !s.wanted {
                StopReason::Admin
            } else {
                StopReason::Dependency
            };
            // Its readiness ends, but no start step below reads it: it is
            // not desired, so a service naming it in `after` does not wait
            // for it, and one requiring it is not desired either.
            self.begin_stop(id, reason, now);
        }
        // Starts.
        for &id in &ids {
            let desired = self.desired(id, 0);
            let blocked_on = if desired {
                self.waiting_for(id).map(str::to_string)
            } else {
                None
            };
            let Some(Entry::Valid(s)) = self.slots[id.index()].as_mut() else {
                continue;
            };
            if s.proc_.is_some() || s.spawning {
                continue;
            }
            if !desired {
                s.start_at = None;
                s.backoff = false;
                continue;
            }
            let throttle = s.last_start.map(|t| t + s.spec.restart_delay);
            let due = match (s.start_at, throttle) {
                (Some(a), Some(b)) => a.max(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => now,
            };
            if let Some(dep) = blocked_on {
                // Keep only a future time; the rest is recomputed when the
                // dependencies are ready.
                s.start_at = s.start_at.filter(|&t| t > now);
                if !s.waiting_logged {
                    s.waiting_logged = true;
                    let line = format!("service {} waits for {dep}", s.spec.name);
                    self.out.push(Action::Log {
                        level: Level::Info,
                        message: line,
                    });
                }
                continue;
            }
            s.waiting_logged = false;
            if due > now {
                s.start_at = Some(due);
                continue;
            }
            s.start_at = None;
            s.backoff = false;
            s.spawning = true;
            self.out.push(Action::Spawn { id });
        }
        for &id in &ids {
            self.rearm(id);
            self.meta[id.index()].queued = false;
        }
        self.all_dirty = false;
        ids.clear();
        self.dirty = ids;
    }

    // ---- requests ----------------------------------------------------------

    fn lookup(&self, name: &str) -> Result<ServiceId, String> {
        let id = *self
            .by_name
            .get(name)
            .ok_or_else(|| format!("no service named {name:?}"))?;
        if let Some(Entry::Broken { error, .. }) = self.slots[id.index()].as_ref() {
            return Err(format!("service {name} has a configuration error: {error}"));
        }
        if self.shutting_down {
            return Err("shutting down".into());
        }
        Ok(id)
    }

    /// `tetherctl start NAME`: wanted again, failed cleared, started at once
    /// (when its dependencies allow). `Ok` carries a note for the reply.
    pub fn start(&mut self, name: &str, now: MonoTime) -> Result<(String, Vec<Action>), String> {
        let id = self.lookup(name)?;
        let s = self.service_mut(id);
        let note;
        if s.proc_.is_some() && !s.stopping() {
            note = format!("{name} is already running");
            s.wanted = true;
        } else {
            if s.stopping() {
                s.restart_after_stop = true;
            }
            s.wanted = true;
            s.failed = false;
            s.history.reset();
            s.start_at = None;
            s.last_start = None;
            note = String::new();
            self.log(Level::Info, format!("service {name}: start requested"));
        }
        self.touch_desired(id);
        self.reconcile(now);
        let note = match (note.is_empty(), self.waiting_for(id)) {
            (true, Some(dep)) if self.desired(id, 0) => format!("{name} waits for {dep}"),
            (true, _) if !self.desired(id, 0) => format!("{name} waits for a required service"),
            _ => note,
        };
        Ok((note, self.take()))
    }

    /// `tetherctl stop NAME`: not wanted; stopped (after the services that
    /// require it).
    pub fn stop(&mut self, name: &str, now: MonoTime) -> Result<(String, Vec<Action>), String> {
        let id = self.lookup(name)?;
        let s = self.service_mut(id);
        let was_up = s.proc_.is_some();
        s.wanted = false;
        s.failed = false;
        s.restart_after_stop = false;
        s.start_at = None;
        self.log(Level::Info, format!("service {name}: stop requested"));
        self.touch_desired(id);
        self.reconcile(now);
        let note = if was_up {
            String::new()
        } else {
            format!("{name} was not running")
        };
        Ok((note, self.take()))
    }

    /// `tetherctl restart NAME`: stop (if running), then start at once.
    pub fn restart(&mut self, name: &str, now: MonoTime) -> Result<(String, Vec<Action>), String> {
        let id = self.lookup(name)?;
        let s = self.service_mut(id);
        s.wanted = true;
        s.failed = false;
        s.history.reset();
        s.start_at = None;
        s.last_start = None;
        let running = s.proc_.is_some();
        if running {
            s.restart_after_stop = true;
        }
        self.log(Level::Info, format!("service {name}: restart requested"));
        if running {
            self.begin_stop(id, StopReason::Restart, now);
        }
        self.touch_desired(id);
        self.reconcile(now);
        Ok((String::new(), self.take()))
    }

    /// `tetherctl signal NAME SIG`: the signal to the main process.
    pub fn signal(&mut self, name: &str, signal: i32) -> Result<Vec<Action>, String> {
        let id = self.lookup(name)?;
        let s = self.service_mut(id);
        let Some(p) = s.proc_.as_ref() else {
            return Err(format!("service {name} is not running"));
        };
        let pid = p.pid;
        self.out.push(Action::Kill {
            id,
            pid,
            group: false,
            signal,
        });
        self.log(
            Level::Info,
            format!(
                "service {name}: SIG{} sent by request (pid {pid})",
                signal_name(signal)
            ),
        );
        Ok(self.take())
    }

    /// Stops everything in reverse dependency order; nothing starts again.
    /// The shell exits once [`is_idle`](Self::is_idle).
    pub fn shutdown(&mut self, now: MonoTime) -> Vec<Action> {
        if !self.shutting_down {
            self.shutting_down = true;
            self.log(
                Level::Info,
                "shutting down: stopping every service".to_string(),
            );
        }
        self.mark_all();
        self.reconcile(now);
        self.take()
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// No process and no spawn outstanding.
    pub fn is_idle(&self) -> bool {
        self.valid().all(|s| s.proc_.is_none() && !s.spawning)
    }

    // ---- queries -----------------------------------------------------------

    pub fn id(&self, name: &str) -> Option<ServiceId> {
        self.by_name.get(name).copied()
    }

    pub fn id_by_pid(&self, pid: i32) -> Option<ServiceId> {
        self.by_pid.get(&pid).copied()
    }

    /// The spec of a valid service.
    pub fn spec(&self, id: ServiceId) -> Option<&ServiceSpec> {
        match self.slots.get(id.index()) {
            Some(Some(Entry::Valid(s))) => Some(&s.spec),
            _ => None,
        }
    }

    pub fn name(&self, id: ServiceId) -> Option<&str> {
        self.slots
            .get(id.index())
            .and_then(|e| e.as_ref())
            .map(Entry::name)
    }

    /// The process group (= pid) of a running service.
    pub fn pgid(&self, id: ServiceId) -> Option<i32> {
        match self.slots.get(id.index()) {
            Some(Some(Entry::Valid(s))) => s.proc_.as_ref().map(|p| p.pid),
            _ => None,
        }
    }

    /// Every running process: (id, name, pid, stop_timeout), for the state
    /// file.
    pub fn running(&self) -> Vec<(ServiceId, &str, i32, Duration)> {
        self.ids()
            .filter_map(|id| match self.slots[id.index()].as_ref() {
                Some(Entry::Valid(s)) => s
                    .proc_
                    .as_ref()
                    .map(|p| (id, s.spec.name.as_str(), p.pid, s.spec.stop_timeout)),
                _ => None,
            })
            .collect()
    }

    /// Every service, sorted by name.
    pub fn rows(&self, now: MonoTime) -> Vec<ServiceRow> {
        let mut ids: Vec<ServiceId> = self.ids().collect();
        ids.sort_by(|a, b| self.entry(*a).name().cmp(self.entry(*b).name()));
        ids.into_iter().map(|id| self.row_of(id, now)).collect()
    }

    pub fn row(&self, name: &str, now: MonoTime) -> Option<ServiceRow> {
        self.id(name).map(|id| self.row_of(id, now))
    }

    fn row_of(&self, id: ServiceId, now: MonoTime) -> ServiceRow {
        match self.entry(id) {
            Entry::Broken { name, error } => ServiceRow {
                id,
                name: name.clone(),
                state: "config-error",
                pid: None,
                uptime: None,
                restarts: 0,
                last_exit: None,
                ready: false,
                watchdog_left: None,
                status_text: None,
                error: Some(error.clone()),
                notify_rejected: 0,
            },
            Entry::Valid(s) => ServiceRow {
                id,
                name: s.spec.name.clone(),
                state: self.state_of(id, s),
                pid: s.proc_.as_ref().map(|p| p.pid),
                uptime: s.proc_.as_ref().map(|p| now.saturating_since(p.started)),
                restarts: s.stats.restarts,
                last_exit: s.stats.last_exit.clone(),
                ready: s.ready(),
                watchdog_left: s
                    .proc_
                    .as_ref()
                    .and_then(|p| p.watchdog_deadline)
                    .map(|d| d.saturating_since(now)),
                status_text: s.stats.status_text.clone(),
                error: s.stats.last_error.clone(),
                notify_rejected: s.stats.notify_rejected,
            },
        }
    }

    fn state_of(&self, id: ServiceId, s: &Service) -> &'static str {
        if let Some(p) = &s.proc_ {
            return if p.stopping.is_some() {
                "stopping"
            } else if s.spec.notify == NotifyMode::None {
                "running"
            } else if p.ready {
                "ready"
            } else {
                "starting"
            };
        }
        if s.spawning {
            return "starting";
        }
        if s.failed {
            return "failed";
        }
        if self.desired(id, 0) {
            if self.waiting_for(id).is_some() {
                return "waiting";
            }
            return if s.start_at.is_some() {
                "backoff"
            } else {
                "starting"
            };
        }
        if s.wanted && !s.removing && !self.shutting_down {
            return "waiting";
        }
        if s.spec.disabled && !s.wanted {
            return "disabled";
        }
        "stopped"
    }

    /// Counts for the liveness line.
    pub fn summary(&self) -> Summary {
        let mut sum = Summary::default();
        for id in self.ids() {
            match self.entry(id) {
                Entry::Broken { .. } => sum.broken += 1,
                Entry::Valid(s) => {
                    if s.failed {
                        sum.failed += 1;
                    }
                    if self.desired(id, 0) {
                        sum.expected += 1;
                        if s.ready() {
                            sum.up += 1;
                        }
                    }
                }
            }
        }
        sum
    }

    // ---- helpers -----------------------------------------------------------

    fn ids(&self) -> impl Iterator<Item = ServiceId> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_some())
            .map(|(i, _)| ServiceId(i as u32))
    }

    fn valid(&self) -> impl Iterator<Item = &Service> {
        self.slots.iter().filter_map(|e| match e {
            Some(Entry::Valid(s)) => Some(&**s),
            _ => None,
        })
    }

    fn entry(&self, id: ServiceId) -> &Entry {
        self.slots[id.index()].as_ref().expect("live service id")
    }

    fn service_mut(&mut self, id: ServiceId) -> &mut Service {
        match self.slots[id.index()].as_mut() {
            Some(Entry::Valid(s)) => s,
            _ => panic!("service id {id:?} is not a valid service"),
        }
    }

    fn log(&mut self, level: Level, message: String) {
        self.out.push(Action::Log { level, message });
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }
}

/// Adds `id` to the dirty set unless it is there already (or everything
/// is dirty).
fn mark_in(meta: &mut [SlotMeta], dirty: &mut Vec<ServiceId>, all: bool, id: ServiceId) {
    if all {
        return;
    }
    if let Some(m) = meta.get_mut(id.index()) {
        if !m.queued {
            m.queued = true;
            dirty.push(id);
        }
    }
}

/// Installs a changed spec on a service without a process.
fn apply_spec(s: &mut Service, spec: Spec) {
    s.wanted = !spec.disabled;
    s.spec = spec;
    s.failed = false;
    s.history.reset();
    s.start_at = None;
    s.backoff = false;
    s.last_start = None;
}

fn restart_mode_name(m: crate::service::RestartMode) -> &'static str {
    match m {
        crate::service::RestartMode::Always => "always",
        crate::service::RestartMode::OnFailure => "on-failure",
        crate::service::RestartMode::Never => "never",
    }
}

/// A duration for log lines, to the millisecond.
fn fmt_dur(d: Duration) -> String {
    duration::format(Duration::from_millis(d.as_millis() as u64))
}

/// Per service, the worst-case time from a fault to the service running
/// again (for `tetherctl check`): a crash costs at most `restart_delay`
/// (or `max_delay` once backing off); a hang, with `notify = "watchdog"`,
/// `watchdog_timeout + stop_timeout + restart_delay`. With
/// `on_exhausted = "reboot"` a crash loop ends in an orderly reboot.
pub fn service_budget_rows(specs: &[ServiceSpec]) -> Vec<BudgetRow> {
    let mut rows = Vec::new();
    for s in specs {
        let (crash_bound, crash_formula) = match (s.limit, s.on_exhausted) {
            (Some(_), OnExhausted::Backoff) => (
                s.restart_delay.max(s.max_delay),
                "max_delay (backing off)".to_string(),
            ),
            _ => (s.restart_delay, "restart_delay".to_string()),
        };
        rows.push(BudgetRow {
            fault: format!("service {} crash", s.name),
            outcome: Outcome::Restart,
            bound: crash_bound,
            formula: crash_formula,
        });
        if let (NotifyMode::Watchdog, Some(wd)) = (s.notify, s.watchdog_timeout) {
            let restart = if s.limit.is_some() && s.on_exhausted == OnExhausted::Backoff {
                s.restart_delay.max(s.max_delay)
            } else {
                s.restart_delay
            };
            rows.push(BudgetRow {
                fault: format!("service {} hang", s.name),
                outcome: Outcome::Restart,
                bound: wd.saturating_add(s.stop_timeout).saturating_add(restart),
                formula: "watchdog_timeout + stop_timeout + restart_delay".to_string(),
            });
        }
        if let (Some(limit), OnExhausted::Reboot) = (s.limit, s.on_exhausted) {
            rows.push(BudgetRow {
                fault: format!("service {} crash loop", s.name),
                outcome: Outcome::Reboot,
                bound: limit.window,
                formula: "window (then init's orderly reboot)".to_string(),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests;
