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
//! - Deadlines sit in one ordered table of `(time, (id, timer))`
//!   (`tether_common::deadlines::Deadlines`), one entry at most per
//!   service, which remembers its entry, so a moved deadline is removed and
//!   reinserted: a *start timer* (`start_at` of a service without a
//!   process) or a *process timer* (the watchdog deadline, or the `SIGKILL`
//!   time of a stop). `next_deadline` reads the first entry; `tick` takes
//!   only the due process timers; every reconcile takes the due start
//!   timers into the dirty set (as the full scan would have started a due
//!   service on any event, not only on a tick).
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
use crate::service::{signal_name, LoadedSet, NotifyMode, ServiceSpec};
use log::Level;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tether_common::clock::MonoTime;
use tether_common::deadlines::Deadlines;
use tether_common::duration;

mod events;
mod lifecycle;
mod notify;
mod phase;
mod requests;
mod sched;
mod set;
mod status;

pub use crate::policy::service_budget_rows;
pub use events::{Action, Event, ExitStatus, Resume, StopReason};
use phase::{step, Input, Phase, Proc, Step, Stopping};
use sched::{SlotMeta, Timer};
pub use status::{ServiceRow, Summary};

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
struct Service {
    spec: Spec,
    /// A changed spec from a reload, applied when the process has stopped.
    next_spec: Option<Spec>,
    /// Removed by a reload; forgotten when its process has stopped.
    removing: bool,
    /// Enabled and not stopped by hand, not failed.
    wanted: bool,
    failed: bool,
    /// A spawn out, a process running or stopping (`phase::step`).
    phase: Phase,
    /// Earliest next start (policy delay or throttle), always in the future
    /// after a reconcile.
    start_at: Option<MonoTime>,
    /// `start_at` comes from an exhausted window's backoff.
    backoff: bool,
    /// Start again as soon as the current process is gone.
    restart_after_stop: bool,
    /// The last [`Action::Provision`] failed: the next start provisions
    /// first.
    provision_due: bool,
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
            phase: Phase::Down,
            start_at: None,
            backoff: false,
            restart_after_stop: false,
            provision_due: false,
            history: History::new(),
            waiting_logged: false,
            last_start: None,
            stats: Side::default(),
        }
    }

    fn stopping(&self) -> bool {
        self.phase.stopping()
    }

    /// Up and ready, not on its way down.
    fn ready(&self) -> bool {
        matches!(&self.phase, Phase::Up(p) if p.ready)
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

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// Feeds one event of service `id`.
    pub fn handle(&mut self, id: ServiceId, event: Event, now: MonoTime) -> Vec<Action> {
        if !matches!(self.slots.get(id.index()), Some(Some(Entry::Valid(_)))) {
            return Vec::new();
        }
        // Watchdog pings (the common case, one per service per period) only
        // move a deadline later: no reconcile, the timer is moved.
        // Whether it should run changes only with a spawn result or an exit
        // (the restart policy), never with a notify message.
        let desired_before = (!matches!(event, Event::Notify { .. } | Event::ProvisionFailed))
            .then(|| self.desired(id, 0));
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
            Event::ExecFailed {
                pid,
                status,
                errno,
                message,
            } => {
                let s = self.service_mut(id);
                if step(&mut s.phase, Input::ExecFailed { pid }) == Step::Changed {
                    self.by_pid.remove(&pid);
                    self.out.push(Action::WriteState);
                    self.on_spawn_failed(id, errno, message, now);
                } else {
                    self.on_exit(id, pid, status, now);
                }
                true
            }
            Event::ProvisionFailed => {
                self.service_mut(id).provision_due = true;
                false
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
                Some(Some(Entry::Valid(s))) => s.phase.active() && !self.desired(d, 0),
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
            if s.phase.proc_().is_none()
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
            if s.phase.active() {
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
            step(&mut s.phase, Input::Spawn);
            if std::mem::take(&mut s.provision_due) {
                self.out.push(Action::Provision { id });
            }
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

    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// No process and no spawn outstanding.
    pub fn is_idle(&self) -> bool {
        self.valid().all(|s| !s.phase.active())
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
    /// Whether an `Action::Spawn` of `id` is out without its result.
    pub fn is_spawning(&self, id: ServiceId) -> bool {
        matches!(
            self.slots.get(id.index()),
            Some(Some(Entry::Valid(s))) if s.phase == phase::Phase::Spawning
        )
    }

    pub fn pgid(&self, id: ServiceId) -> Option<i32> {
        match self.slots.get(id.index()) {
            Some(Some(Entry::Valid(s))) => s.phase.proc_().map(|p| p.pid),
            _ => None,
        }
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

    /// [`Action::Provision`] of a valid service (its spec entered or
    /// changed, or the last provision failed).
    fn provision(&mut self, id: ServiceId) {
        if let Some(Some(Entry::Valid(s))) = self.slots.get_mut(id.index()) {
            s.provision_due = false;
            self.out.push(Action::Provision { id });
        }
    }

    fn log(&mut self, level: Level, message: String) {
        self.out.push(Action::Log { level, message });
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }
}

/// A duration for log lines, to the millisecond.
fn fmt_dur(d: Duration) -> String {
    duration::format(Duration::from_millis(d.as_millis() as u64))
}

#[cfg(test)]
mod tests;
