//! Pure supervision of init's two layer children, watchdogd and the
//! restarter: when to start, restart, kill, or give up and reboot. No system
//! call here; the loop in `main` turns processes, pipes and time into
//! [`Event`]s and carries out the returned [`Action`]s.
//!
//! Rules (DESIGN.md "init"):
//! - A child that exits is started again, forever, but at most one start per
//!   `restart_delay`: one that ran longer than that restarts at once, a crash
//!   loop is throttled.
//! - Sliding-window budget: at most `max_restarts` restarts (the first start
//!   does not count) within `window`, per layer. A child that exits when its
//!   window is already full is not restarted: init asks for an orderly reboot.
//! - Hang: a running child whose supervision heartbeat has been silent for
//!   `hang_timeout` is killed with `SIGKILL` and, once reaped, restarted like
//!   any exit. A fresh child's silence starts to count only after
//!   `startup_grace`: until its first beat its deadline is
//!   `started + startup_grace + hang_timeout`; after it, `last beat +
//!   hang_timeout`.
//!
//! Decisions where the design is silent:
//! - Every restart counts towards the budget, whatever caused it (exit,
//!   signal, hang kill). The check is made when the child exits, so a child
//!   that exhausts its budget is never started again.
//! - A failed spawn (`fork` or `exec` error) is not a start and does not
//!   count: init retries after a backoff that starts at `restart_delay`
//!   (at least 100 ms) and doubles up to 10 s (or `restart_delay` if larger).
//!   If the binary can never start, the chain's other rungs (watchdogd's stale
//!   timeout, the hardware) bound the outcome.
//! - A killed child that does not die (uninterruptible sleep) is never
//!   started twice: init waits for its exit and repeats `SIGKILL` every
//!   `hang_timeout`, logging each time.
//! - The window table has [`WINDOW_CAP`] entries: `max_restarts` above that is
//!   clamped (the shell logs it). No allocation after construction.
//! - Once a layer is stopped (shutdown) it is never started again; beats and
//!   exits are still accounted.
//! - After a panic in the shell (caught in `main`, see `recovery.rs`), the
//!   shell calls [`Layers::after_panic`]: a slot left `Spawning` (the panic
//!   struck between the `Spawn` action and its result) goes back to
//!   waiting. The shell reports a fork's result in the statement after the
//!   fork returns, so such a slot has no child and no duplicate is started.
//!   An exhausted budget whose `Reboot` action was lost is found by
//!   [`Layers::unanswered_reboot`]. A reaped exit is fed to the core before
//!   anything else happens with it (`main.rs`, `reap`), so a layer cannot be
//!   left `Killing` a pid that is gone.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use tether_common::clock::MonoTime;

/// Deliberately broken guards for the model checker's teeth test
/// (`model/tests/teeth.rs`): compiled only with the `mutants` feature,
/// which only that test enables (in its own target directory), and even
/// then off until it is switched on.
#[cfg(feature = "mutants")]
pub mod mutants {
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The layer restart budget is ignored: an exhausted layer restarts.
    pub static IGNORE_BUDGET: AtomicBool = AtomicBool::new(false);

    pub fn ignore_budget() -> bool {
        IGNORE_BUDGET.load(Ordering::Relaxed)
    }
}

#[cfg(not(feature = "mutants"))]
mod mutants {
    pub fn ignore_budget() -> bool {
        false
    }
}

/// Largest `max_restarts` the fixed window table holds.
pub const WINDOW_CAP: usize = 64;
/// Cap of the spawn-failure backoff (unless `restart_delay` is larger).
pub const MAX_SPAWN_BACKOFF: Duration = Duration::from_secs(10);
/// Floor of the spawn-failure backoff.
pub const MIN_SPAWN_BACKOFF: Duration = Duration::from_millis(100);
/// Most actions one event can produce.
pub const ACTIONS_CAP: usize = 8;

/// One of init's two children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Watchdogd,
    Restarter,
}

impl Layer {
    /// In start order: watchdogd first, so the hardware is tended before
    /// anything else runs.
    pub const ALL: [Layer; 2] = [Layer::Watchdogd, Layer::Restarter];

    /// The layer's name in logs and in `name=fd` lists.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Watchdogd => "watchdogd",
            Layer::Restarter => "restarter",
        }
    }

    /// The executable's file name in the bin directory.
    pub fn binary(self) -> &'static str {
        match self {
            Layer::Watchdogd => "tether-watchdogd",
            Layer::Restarter => "tether-restarter",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a child ended, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal { signal: i32, core: bool },
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(c) => write!(f, "exited with status {}", c),
            Exit::Signal { signal, core } => {
                let name = nix::sys::signal::Signal::try_from(signal)
                    .map(|s| s.as_str())
                    .unwrap_or("an unknown signal");
                write!(f, "killed by {} ({})", name, signal)?;
                if core {
                    f.write_str(", core dumped")?;
                }
                Ok(())
            }
        }
    }
}

/// Supervision settings, from `[timing]` and `[init]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Params {
    pub restart_delay: Duration,
    pub hang_timeout: Duration,
    pub startup_grace: Duration,
    /// Clamped to [`WINDOW_CAP`] by [`Params::clamped`].
    pub max_restarts: u32,
    pub window: Duration,
}

impl Params {
    /// `self` with `max_restarts` fitted into the fixed table; the second
    /// value says whether it had to be lowered.
    pub fn clamped(mut self) -> (Params, bool) {
        let cap = WINDOW_CAP as u32;
        if self.max_restarts > cap {
            self.max_restarts = cap;
            (self, true)
        } else {
            (self, false)
        }
    }
}

/// What happened, as the loop saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Time passed; deadlines are checked on every event anyway.
    Tick,
    /// A `Spawn` action succeeded.
    Spawned { layer: Layer, pid: i32 },
    /// A `Spawn` action failed (fork or exec).
    SpawnFailed { layer: Layer },
    /// A child of this layer was reaped.
    Exited { layer: Layer, pid: i32, how: Exit },
    /// Bytes arrived on the layer's supervision pipe, credited to `at`
    /// (`heartbeat::Watch::credit`: the wake-up, or the moment the pipe
    /// was last seen empty when the loop stalled). A credit before the
    /// child's start or its last credited beat changes nothing.
    Beat { layer: Layer, at: MonoTime },
}

/// Something for the loop to do or say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start the layer's binary (then report `Spawned` or `SpawnFailed`).
    Spawn(Layer),
    /// `SIGKILL` this pid.
    Kill {
        layer: Layer,
        pid: i32,
    },
    /// The layer exhausted its restart budget: orderly reboot.
    Reboot {
        layer: Layer,
        restarts: u32,
        window: Duration,
    },
    Log(Note),
}

/// A state change worth a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    Started {
        layer: Layer,
        pid: i32,
        restart: bool,
    },
    Exited {
        layer: Layer,
        pid: i32,
        how: Exit,
        ran: Duration,
    },
    RestartIn {
        layer: Layer,
        delay: Duration,
    },
    Hung {
        layer: Layer,
        pid: i32,
        silent: Duration,
    },
    StillDying {
        layer: Layer,
        pid: i32,
        since: Duration,
    },
    SpawnRetryIn {
        layer: Layer,
        delay: Duration,
        failures: u32,
    },
    BudgetExhausted {
        layer: Layer,
        restarts: u32,
        window: Duration,
    },
    /// Exited while stopping (shutdown): not restarted.
    Stopped {
        layer: Layer,
        pid: i32,
        how: Exit,
    },
}

impl Note {
    pub fn level(&self) -> log::Level {
        match self {
            Note::Started { .. } | Note::RestartIn { .. } | Note::Stopped { .. } => {
                log::Level::Info
            }
            Note::Exited { .. } => log::Level::Warn,
            Note::Hung { .. } | Note::StillDying { .. } | Note::SpawnRetryIn { .. } => {
                log::Level::Error
            }
            Note::BudgetExhausted { .. } => log::Level::Error,
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Note::Started { layer, pid, restart } => {
                write!(f, "{} {} (pid {})", if restart { "restarted" } else { "started" }, layer, pid)
            }
            Note::Exited { layer, pid, how, ran } => {
                write!(f, "{} (pid {}) {} after {}", layer, pid, how, Human(ran))
            }
            Note::RestartIn { layer, delay } => {
                if delay.is_zero() {
                    write!(f, "restarting {} now", layer)
                } else {
                    write!(f, "restarting {} in {} (restart_delay)", layer, Human(delay))
                }
            }
            Note::Hung { layer, pid, silent } => write!(
                f,
                "{} (pid {}) silent for {} (hang_timeout): killing it with SIGKILL",
                layer,
                pid,
                Human(silent)
            ),
            Note::StillDying { layer, pid, since } => write!(
                f,
                "{} (pid {}) still not dead {} after SIGKILL: sending it again, not starting a second one",
                layer,
                pid,
                Human(since)
            ),
            Note::SpawnRetryIn { layer, delay, failures } => write!(
                f,
                "could not start {} ({} failure{} in a row): retrying in {}",
                layer,
                failures,
                if failures == 1 { "" } else { "s" },
                Human(delay)
            ),
            Note::BudgetExhausted { layer, restarts, window } => write!(
                f,
                "{} exhausted its restart budget ({} restarts within {}): orderly reboot",
                layer,
                restarts,
                Human(window)
            ),
            Note::Stopped { layer, pid, how } => write!(f, "{} (pid {}) {} while stopping", layer, pid, how),
        }
    }
}

/// A fixed-capacity list of actions (no allocation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Actions {
    items: [Option<Action>; ACTIONS_CAP],
    len: usize,
}

impl Actions {
    pub fn new() -> Actions {
        Actions::default()
    }

    /// Appends; beyond [`ACTIONS_CAP`] the action is dropped (no event
    /// produces that many).
    pub fn push(&mut self, a: Action) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(a);
            self.len += 1;
        }
    }

    /// A list of one action.
    pub fn one(a: Action) -> Actions {
        let mut out = Actions::new();
        out.push(a);
        out
    }

    #[allow(clippy::len_without_is_empty)] // never empty where it is asked
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = Action> + '_ {
        self.items.iter().take(self.len).filter_map(|a| *a)
    }
}

/// Where a layer child is. `Hash` leaves out `killed_at`, which only
/// words a log line (STYLE.md 8: what a model checker hashes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not running; to be started at `at`.
    Waiting { at: MonoTime },
    /// A `Spawn` action is out; `Spawned` or `SpawnFailed` comes next.
    Spawning,
    Running {
        pid: i32,
        started: MonoTime,
        last_beat: Option<MonoTime>,
    },
    /// `SIGKILL` sent (at `killed_at`, last repeated at `last_kill`).
    Killing {
        pid: i32,
        started: MonoTime,
        killed_at: MonoTime,
        last_kill: MonoTime,
    },
    /// Stopped for good (shutdown or exhausted budget).
    Stopped,
}

impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        match *self {
            State::Waiting { at } => at.hash(h),
            State::Running {
                pid,
                started,
                last_beat,
            } => (pid, started, last_beat).hash(h),
            State::Killing {
                pid,
                started,
                last_kill,
                ..
            } => (pid, started, last_kill).hash(h),
            State::Spawning | State::Stopped => {}
        }
    }
}

/// Restart times within the sliding window: a ring of the last
/// [`WINDOW_CAP`] restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Window {
    times: [MonoTime; WINDOW_CAP],
    next: usize,
    len: usize,
}

impl Window {
    fn new() -> Window {
        Window {
            times: [MonoTime::ZERO; WINDOW_CAP],
            next: 0,
            len: 0,
        }
    }

    fn record(&mut self, t: MonoTime) {
        if let Some(slot) = self.times.get_mut(self.next) {
            *slot = t;
        }
        self.next = (self.next + 1) % WINDOW_CAP;
        self.len = (self.len + 1).min(WINDOW_CAP);
    }

    /// The recorded restart times, oldest first (for [`SlotImage`]).
    fn oldest_first(&self) -> impl Iterator<Item = MonoTime> + '_ {
        let start = (self.next + WINDOW_CAP - self.len) % WINDOW_CAP;
        (0..self.len).filter_map(move |i| self.times.get((start + i) % WINDOW_CAP).copied())
    }

    /// Restarts `t` with `now - window < t <= now`.
    fn count(&self, now: MonoTime, window: Duration) -> u32 {
        let n = self
            .times
            .iter()
            .take(self.len)
            .filter(|&&t| t <= now && now.saturating_since(t) < window)
            .count();
        n as u32
    }
}

/// `Hash` leaves out `total_restarts` (it only grows, and only words the
/// liveness line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    state: State,
    /// Set at shutdown: never start again.
    stopping: bool,
    last_start: Option<MonoTime>,
    window: Window,
    total_restarts: u64,
    spawn_failures: u32,
    /// Budget exhausted with this many restarts: the `Reboot` was asked for.
    exhausted: Option<u32>,
}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self.state, self.stopping, self.last_start, self.window).hash(h);
        (self.spawn_failures, self.exhausted).hash(h);
    }
}

impl Slot {
    /// See [`Layers::rebase`].
    fn rebase(&mut self, by: Duration, now: MonoTime, p: &Params) {
        let start_horizon = p
            .startup_grace
            .saturating_add(p.hang_timeout)
            .max(p.restart_delay);
        let kill_horizon = p.hang_timeout.max(MIN_SPAWN_BACKOFF);
        let r = |t: MonoTime, horizon: Duration| t.rebased(by, now, horizon);
        self.state = match self.state {
            State::Waiting { at } => State::Waiting {
                at: r(at, Duration::ZERO),
            },
            State::Running {
                pid,
                started,
                last_beat,
            } => State::Running {
                pid,
                // Once beaten, `started` only matters for `restart_delay`.
                started: r(
                    started,
                    if last_beat.is_some() {
                        p.restart_delay
                    } else {
                        start_horizon
                    },
                ),
                last_beat: last_beat.map(|t| r(t, p.hang_timeout)),
            },
            State::Killing {
                pid,
                started,
                killed_at,
                last_kill,
            } => State::Killing {
                pid,
                started: r(started, p.restart_delay),
                killed_at: r(killed_at, Duration::ZERO),
                last_kill: r(last_kill, kill_horizon),
            },
            s @ (State::Spawning | State::Stopped) => s,
        };
        // Only whether there was a start matters.
        self.last_start = self.last_start.map(|t| r(t, Duration::ZERO));
        for t in self.window.times.iter_mut() {
            *t = r(*t, p.window);
        }
    }

    fn new(now: MonoTime) -> Slot {
        Slot {
            state: State::Waiting { at: now },
            stopping: false,
            last_start: None,
            window: Window::new(),
            total_restarts: 0,
            spawn_failures: 0,
            exhausted: None,
        }
    }
}

/// One layer's supervision state as carried across init's re-exec in
/// place (`tetherctl upgrade init`, `upgrade.rs`): everything a [`Slot`]
/// holds, the restart budget included. Times are `CLOCK_MONOTONIC`, which
/// an `execve` does not reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotImage {
    pub state: State,
    pub stopping: bool,
    pub last_start: Option<MonoTime>,
    /// Restart times within the budget's window table, oldest first (at
    /// most [`WINDOW_CAP`]; more are dropped, oldest first).
    pub restarts: Vec<MonoTime>,
    pub total_restarts: u64,
    pub spawn_failures: u32,
    pub exhausted: Option<u32>,
}

/// Supervision state of both layers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layers {
    params: Params,
    watchdogd: Slot,
    restarter: Slot,
}

impl Layers {
    /// Both layers due to start at `now` (watchdogd first). `params` should
    /// be [`Params::clamped`]; it is clamped again here.
    pub fn new(params: Params, now: MonoTime) -> Layers {
        Layers {
            params: params.clamped().0,
            watchdogd: Slot::new(now),
            restarter: Slot::new(now),
        }
    }

    fn slot(&self, layer: Layer) -> &Slot {
        match layer {
            Layer::Watchdogd => &self.watchdogd,
            Layer::Restarter => &self.restarter,
        }
    }

    fn slot_mut(&mut self, layer: Layer) -> &mut Slot {
        match layer {
            Layer::Watchdogd => &mut self.watchdogd,
            Layer::Restarter => &mut self.restarter,
        }
    }

    /// Where `layer` is (tests, the model checker).
    #[allow(dead_code)] // the binary does not ask; the library target exports it
    pub fn state(&self, layer: Layer) -> State {
        self.slot(layer).state
    }

    /// Every stored time moved `by` earlier, and each age clamped just
    /// beyond the largest threshold it is compared with
    /// ([`MonoTime::rebased`]): the model checker keeps its clock at one
    /// `now` this way, so the steady state repeats. Behaviour at `now` is
    /// unchanged; log values (`Note` durations) may be. Never called by the
    /// shell.
    #[allow(dead_code)] // the model's, through the library target
    pub fn rebase(&mut self, by: Duration, now: MonoTime) {
        let p = self.params;
        self.watchdogd.rebase(by, now, &p);
        self.restarter.rebase(by, now, &p);
    }

    /// The layer's live process (running or being killed), if any.
    pub fn pid(&self, layer: Layer) -> Option<i32> {
        match self.slot(layer).state {
            State::Running { pid, .. } | State::Killing { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Which layer a reaped pid belonged to.
    pub fn layer_of(&self, pid: i32) -> Option<Layer> {
        Layer::ALL.into_iter().find(|&l| self.pid(l) == Some(pid))
    }

    /// Restarts since boot.
    #[cfg(test)]
    pub fn total_restarts(&self, layer: Layer) -> u64 {
        self.slot(layer).total_restarts
    }

    /// Restarts within the window ending at `now`.
    #[cfg(test)]
    pub fn restarts_in_window(&self, layer: Layer, now: MonoTime) -> u32 {
        self.slot(layer).window.count(now, self.params.window)
    }

    /// Never start `layer` again (shutdown). A running child keeps running
    /// (and is no longer hang-checked: the shutdown sequence has its own
    /// deadline); its exit is logged, not answered.
    pub fn stop(&mut self, layer: Layer) {
        let slot = self.slot_mut(layer);
        slot.stopping = true;
        if matches!(slot.state, State::Waiting { .. }) {
            slot.state = State::Stopped;
        }
    }

    /// The shell's loop panicked: whatever action was out may be lost. A
    /// slot still `Spawning` never got its result, and had no child (see
    /// the module doc): it waits to be started at `now`. Returns the
    /// layers put back, for the log.
    pub fn after_panic(&mut self, now: MonoTime) -> [Option<Layer>; 2] {
        let mut back = [None; 2];
        for (layer, out) in Layer::ALL.into_iter().zip(back.iter_mut()) {
            let slot = self.slot_mut(layer);
            if slot.state == State::Spawning {
                slot.state = if slot.stopping {
                    State::Stopped
                } else {
                    State::Waiting { at: now }
                };
                *out = Some(layer);
            }
        }
        back
    }

    /// A layer whose budget ran out, with the `Reboot` action that asked for
    /// the orderly reboot: the shell, finding no shutdown under way after a
    /// panic, asks again.
    pub fn unanswered_reboot(&self) -> Option<Action> {
        Layer::ALL.into_iter().find_map(|layer| {
            self.slot(layer).exhausted.map(|restarts| Action::Reboot {
                layer,
                restarts,
                window: self.params.window,
            })
        })
    }

    /// The earliest time at which a `Tick` would do something.
    pub fn next_deadline(&self) -> Option<MonoTime> {
        Layer::ALL
            .into_iter()
            .filter_map(|l| self.deadline(l))
            .min()
    }

    fn deadline(&self, layer: Layer) -> Option<MonoTime> {
        let slot = self.slot(layer);
        match slot.state {
            State::Waiting { at } => Some(at),
            State::Running { .. } if slot.stopping => None,
            State::Running {
                started, last_beat, ..
            } => Some(self.hang_deadline(started, last_beat)),
            State::Killing { last_kill, .. } => {
                Some(last_kill + self.params.hang_timeout.max(MIN_SPAWN_BACKOFF))
            }
            State::Spawning | State::Stopped => None,
        }
    }

    fn hang_deadline(&self, started: MonoTime, last_beat: Option<MonoTime>) -> MonoTime {
        let from = last_beat.unwrap_or(started + self.params.startup_grace);
        from + self.params.hang_timeout
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, now: MonoTime, event: Event) -> Actions {
        let mut out = Actions::new();
        match event {
            Event::Tick => {}
            Event::Spawned { layer, pid } => self.on_spawned(now, layer, pid, &mut out),
            Event::SpawnFailed { layer } => self.on_spawn_failed(now, layer, &mut out),
            Event::Exited { layer, pid, how } => self.on_exited(now, layer, pid, how, &mut out),
            Event::Beat { layer, at } => {
                if let State::Running {
                    started, last_beat, ..
                } = &mut self.slot_mut(layer).state
                {
                    let at = at.min(now).max(*started);
                    *last_beat = Some(last_beat.map_or(at, |b| b.max(at)));
                }
            }
        }
        for layer in Layer::ALL {
            self.check_deadlines(now, layer, &mut out);
        }
        out
    }

    fn on_spawned(&mut self, now: MonoTime, layer: Layer, pid: i32, out: &mut Actions) {
        let slot = self.slot_mut(layer);
        let restart = slot.last_start.is_some();
        if restart {
            slot.window.record(now);
            slot.total_restarts = slot.total_restarts.saturating_add(1);
        }
        slot.last_start = Some(now);
        slot.spawn_failures = 0;
        slot.state = State::Running {
            pid,
            started: now,
            last_beat: None,
        };
        out.push(Action::Log(Note::Started {
            layer,
            pid,
            restart,
        }));
    }

    fn on_spawn_failed(&mut self, now: MonoTime, layer: Layer, out: &mut Actions) {
        let base = self.params.restart_delay.max(MIN_SPAWN_BACKOFF);
        let cap = MAX_SPAWN_BACKOFF.max(base);
        let slot = self.slot_mut(layer);
        slot.spawn_failures = slot.spawn_failures.saturating_add(1);
        let doublings = slot.spawn_failures.saturating_sub(1).min(16);
        let delay = base.saturating_mul(1u32 << doublings).min(cap);
        if slot.stopping {
            slot.state = State::Stopped;
            return;
        }
        slot.state = State::Waiting { at: now + delay };
        out.push(Action::Log(Note::SpawnRetryIn {
            layer,
            delay,
            failures: slot.spawn_failures,
        }));
    }

    fn on_exited(&mut self, now: MonoTime, layer: Layer, pid: i32, how: Exit, out: &mut Actions) {
        let params = self.params;
        let slot = self.slot_mut(layer);
        let started = match slot.state {
            State::Running {
                pid: p, started, ..
            }
            | State::Killing {
                pid: p, started, ..
            } if p == pid => started,
            // Not this layer's current child: nothing to do.
            _ => return,
        };
        if slot.stopping {
            slot.state = State::Stopped;
            out.push(Action::Log(Note::Stopped { layer, pid, how }));
            return;
        }
        out.push(Action::Log(Note::Exited {
            layer,
            pid,
            how,
            ran: now.saturating_since(started),
        }));
        let restarts = slot.window.count(now, params.window);
        if restarts >= params.max_restarts && !mutants::ignore_budget() {
            slot.state = State::Stopped;
            slot.stopping = true;
            slot.exhausted = Some(restarts);
            out.push(Action::Log(Note::BudgetExhausted {
                layer,
                restarts,
                window: params.window,
            }));
            out.push(Action::Reboot {
                layer,
                restarts,
                window: params.window,
            });
            return;
        }
        let at = (started + params.restart_delay).max(now);
        slot.state = State::Waiting { at };
        out.push(Action::Log(Note::RestartIn {
            layer,
            delay: at.saturating_since(now),
        }));
    }

    fn check_deadlines(&mut self, now: MonoTime, layer: Layer, out: &mut Actions) {
        let deadline = self.deadline(layer);
        let slot = self.slot_mut(layer);
        let due = deadline.is_some_and(|d| now >= d);
        if !due {
            return;
        }
        match slot.state {
            State::Waiting { .. } => {
                if slot.stopping {
                    slot.state = State::Stopped;
                } else {
                    slot.state = State::Spawning;
                    out.push(Action::Spawn(layer));
                }
            }
            State::Running {
                pid,
                started,
                last_beat,
            } => {
                let silent_from = last_beat.unwrap_or(started);
                slot.state = State::Killing {
                    pid,
                    started,
                    killed_at: now,
                    last_kill: now,
                };
                out.push(Action::Log(Note::Hung {
                    layer,
                    pid,
                    silent: now.saturating_since(silent_from),
                }));
                out.push(Action::Kill { layer, pid });
            }
            State::Killing {
                pid,
                started,
                killed_at,
                ..
            } => {
                slot.state = State::Killing {
                    pid,
                    started,
                    killed_at,
                    last_kill: now,
                };
                out.push(Action::Log(Note::StillDying {
                    layer,
                    pid,
                    since: now.saturating_since(killed_at),
                }));
                out.push(Action::Kill { layer, pid });
            }
            State::Spawning | State::Stopped => {}
        }
    }

    /// `layer`'s state for a re-exec in place; `None` while a `Spawn` is
    /// out (its result would be lost: the shell never re-execs then).
    pub fn image(&self, layer: Layer) -> Option<SlotImage> {
        let slot = self.slot(layer);
        if slot.state == State::Spawning {
            return None;
        }
        Some(SlotImage {
            state: slot.state,
            stopping: slot.stopping,
            last_start: slot.last_start,
            restarts: slot.window.oldest_first().collect(),
            total_restarts: slot.total_restarts,
            spawn_failures: slot.spawn_failures,
            exhausted: slot.exhausted,
        })
    }

    /// The layers as a previous image of init left them ([`Layers::image`]),
    /// under `params` (the new image's configuration). A `Spawning` image
    /// (never written by [`Layers::image`]) waits to start at `now`.
    pub fn resume(
        params: Params,
        watchdogd: &SlotImage,
        restarter: &SlotImage,
        now: MonoTime,
    ) -> Layers {
        let slot = |img: &SlotImage| {
            let mut window = Window::new();
            let skip = img.restarts.len().saturating_sub(WINDOW_CAP);
            for &t in img.restarts.iter().skip(skip) {
                window.record(t);
            }
            let state = match img.state {
                State::Spawning => State::Waiting { at: now },
                other => other,
            };
            Slot {
                state,
                stopping: img.stopping,
                last_start: img.last_start,
                window,
                total_restarts: img.total_restarts,
                spawn_failures: img.spawn_failures,
                exhausted: img.exhausted,
            }
        };
        Layers {
            params: params.clamped().0,
            watchdogd: slot(watchdogd),
            restarter: slot(restarter),
        }
    }

    /// One layer's part of the liveness line, e.g.
    /// `restarter up 3m (restarts 1)`.
    pub fn describe(&self, layer: Layer, now: MonoTime) -> Describe {
        let slot = self.slot(layer);
        Describe {
            layer,
            state: slot.state,
            stopping: slot.stopping,
            restarts: slot.total_restarts,
            now,
        }
    }
}

/// Display of one layer's status (see [`Layers::describe`]).
#[derive(Clone, Copy, Debug)]
pub struct Describe {
    layer: Layer,
    state: State,
    stopping: bool,
    restarts: u64,
    now: MonoTime,
}

impl fmt::Display for Describe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.layer)?;
        match self.state {
            State::Running { started, .. } => {
                write!(f, "up {}", Human(self.now.saturating_since(started)))?;
                if self.stopping {
                    f.write_str(", stopping")?;
                }
            }
            State::Waiting { at } => write!(
                f,
                "down, starting in {}",
                Human(at.saturating_since(self.now))
            )?,
            State::Spawning => f.write_str("starting")?,
            State::Killing { killed_at, .. } => write!(
                f,
                "hung, killed {} ago",
                Human(self.now.saturating_since(killed_at))
            )?,
            State::Stopped => f.write_str("stopped")?,
        }
        write!(f, " (restarts {})", self.restarts)
    }
}

/// A duration for people: `350ms`, `12s`, `3m`, `2h5m`, `3d4h`.
#[derive(Clone, Copy, Debug)]
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let s = d.as_secs();
        if s == 0 {
            return write!(f, "{}ms", d.subsec_millis());
        }
        if s < 10 && d.subsec_millis() != 0 {
            return write!(f, "{}.{}s", s, d.subsec_millis() / 100);
        }
        match s {
            0..=59 => write!(f, "{}s", s),
            60..=3599 => write!(f, "{}m", s / 60),
            3600..=86_399 => write!(f, "{}h{}m", s / 3600, (s % 3600) / 60),
            _ => write!(f, "{}d{}h", s / 86_400, (s % 86_400) / 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn params() -> Params {
        Params {
            restart_delay: Duration::from_secs(1),
            hang_timeout: Duration::from_secs(10),
            startup_grace: Duration::from_secs(5),
            max_restarts: 3,
            window: Duration::from_secs(60),
        }
    }

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    /// A tiny harness: the fake shell carries out spawns with made-up pids.
    struct Sim {
        core: Layers,
        next_pid: i32,
        spawns: Vec<(u64, Layer)>,
        kills: Vec<(u64, Layer, i32)>,
        reboots: Vec<(u64, Layer)>,
        notes: Vec<Note>,
        fail_spawns: bool,
    }

    impl Sim {
        fn new(p: Params) -> Sim {
            let mut s = Sim {
                core: Layers::new(p, at(0)),
                next_pid: 100,
                spawns: vec![],
                kills: vec![],
                reboots: vec![],
                notes: vec![],
                fail_spawns: false,
            };
            s.feed(0, Event::Tick);
            s
        }

        fn feed(&mut self, ms: u64, ev: Event) {
            let mut queue = vec![ev];
            while let Some(ev) = queue.pop() {
                let actions = self.core.handle(at(ms), ev);
                for a in actions.iter() {
                    match a {
                        Action::Spawn(l) => {
                            self.spawns.push((ms, l));
                            if self.fail_spawns {
                                queue.insert(0, Event::SpawnFailed { layer: l });
                            } else {
                                self.next_pid += 1;
                                queue.insert(
                                    0,
                                    Event::Spawned {
                                        layer: l,
                                        pid: self.next_pid,
                                    },
                                );
                            }
                        }
                        Action::Kill { layer, pid } => self.kills.push((ms, layer, pid)),
                        Action::Reboot { layer, .. } => self.reboots.push((ms, layer)),
                        Action::Log(n) => self.notes.push(n),
                    }
                }
            }
        }

        fn pid(&self, l: Layer) -> i32 {
            self.core.pid(l).expect("layer running")
        }

        fn exit(&mut self, ms: u64, l: Layer) {
            let pid = self.pid(l);
            self.feed(
                ms,
                Event::Exited {
                    layer: l,
                    pid,
                    how: Exit::Code(1),
                },
            );
        }

        /// Ticks every `step` ms through `[from, to]`, beating both layers
        /// unless told not to.
        fn run(&mut self, from: u64, to: u64, step: u64, beat: &[Layer]) {
            let mut t = from;
            while t <= to {
                for &l in beat {
                    self.feed(
                        t,
                        Event::Beat {
                            layer: l,
                            at: at(t),
                        },
                    );
                }
                self.feed(t, Event::Tick);
                t += step;
            }
        }

        fn spawns_of(&self, l: Layer) -> Vec<u64> {
            self.spawns
                .iter()
                .filter(|(_, x)| *x == l)
                .map(|(t, _)| *t)
                .collect()
        }
    }

    /// A panic in the shell: the actions of one event are lost (never
    /// carried out, their results never reported).
    fn lost(s: &mut Sim, ms: u64, ev: Event) -> Actions {
        s.core.handle(at(ms), ev)
    }

    #[test]
    fn panic_between_spawn_and_its_result_puts_the_slot_back_to_waiting() {
        let mut core = Layers::new(params(), at(0));
        let a = core.handle(at(0), Event::Tick);
        assert_eq!(
            a.iter().filter(|x| matches!(x, Action::Spawn(_))).count(),
            2
        );
        // Both spawns lost: without after_panic nothing would ever start.
        assert_eq!(core.state(Layer::Restarter), State::Spawning);
        assert_eq!(core.next_deadline(), None);
        let back = core.after_panic(at(40));
        assert_eq!(back, [Some(Layer::Watchdogd), Some(Layer::Restarter)]);
        let a = core.handle(at(40), Event::Tick);
        let spawns: Vec<Action> = a.iter().filter(|x| matches!(x, Action::Spawn(_))).collect();
        assert_eq!(
            spawns,
            vec![
                Action::Spawn(Layer::Watchdogd),
                Action::Spawn(Layer::Restarter)
            ]
        );
        // Running slots are left alone.
        core.handle(
            at(41),
            Event::Spawned {
                layer: Layer::Watchdogd,
                pid: 7,
            },
        );
        assert_eq!(core.after_panic(at(42))[0], None);
        assert_eq!(core.pid(Layer::Watchdogd), Some(7));
    }

    #[test]
    fn reaped_exit_fed_first_survives_a_panic_that_loses_its_actions() {
        let mut s = Sim::new(params());
        s.run(0, 5000, 500, &Layer::ALL);
        let old = s.pid(Layer::Restarter);
        // The shell feeds the reaped exit to the core at once; then it
        // panics, and the restart actions are lost.
        let a = lost(
            &mut s,
            5100,
            Event::Exited {
                layer: Layer::Restarter,
                pid: old,
                how: Exit::Signal {
                    signal: 9,
                    core: false,
                },
            },
        );
        assert!(a.iter().any(|x| x == Action::Spawn(Layer::Restarter)));
        // The core no longer owns the dead pid: nothing will SIGKILL it (a
        // reused pid would be someone else).
        assert_eq!(s.core.layer_of(old), None);
        s.core.after_panic(at(5200));
        s.run(5200, 30_000, 100, &[Layer::Watchdogd]);
        assert!(s.kills.iter().all(|&(_, _, p)| p != old), "{:?}", s.kills);
        assert_eq!(s.spawns_of(Layer::Restarter), vec![0, 5200]);
        assert_ne!(s.core.pid(Layer::Restarter), Some(old));
    }

    #[test]
    fn a_lost_reboot_action_is_found_again() {
        let mut p = params();
        p.max_restarts = 1;
        let mut s = Sim::new(p);
        assert_eq!(s.core.unanswered_reboot(), None);
        s.exit(100, Layer::Restarter);
        s.feed(1000, Event::Tick);
        let pid = s.pid(Layer::Restarter);
        let a = lost(
            &mut s,
            1100,
            Event::Exited {
                layer: Layer::Restarter,
                pid,
                how: Exit::Code(1),
            },
        );
        let reboot = a.iter().find(|x| matches!(x, Action::Reboot { .. }));
        assert!(reboot.is_some());
        assert_eq!(s.core.unanswered_reboot(), reboot);
    }

    #[test]
    fn boot_starts_watchdogd_then_restarter() {
        let s = Sim::new(params());
        assert_eq!(s.spawns, vec![(0, Layer::Watchdogd), (0, Layer::Restarter)]);
        assert!(matches!(
            s.core.state(Layer::Watchdogd),
            State::Running { .. }
        ));
        assert!(matches!(
            s.core.state(Layer::Restarter),
            State::Running { .. }
        ));
        assert_eq!(s.core.total_restarts(Layer::Restarter), 0);
    }

    #[test]
    fn restart_waits_restart_delay_after_quick_exit() {
        let mut s = Sim::new(params());
        s.exit(200, Layer::Restarter);
        // Not before started + restart_delay.
        assert!(
            matches!(s.core.state(Layer::Restarter), State::Waiting { at: t } if t == at(1000))
        );
        assert_eq!(s.core.next_deadline(), Some(at(1000)));
        s.feed(999, Event::Tick);
        assert_eq!(s.spawns_of(Layer::Restarter), vec![0]);
        s.feed(1000, Event::Tick);
        assert_eq!(s.spawns_of(Layer::Restarter), vec![0, 1000]);
        assert_eq!(s.core.total_restarts(Layer::Restarter), 1);
    }

    #[test]
    fn child_that_ran_longer_than_restart_delay_restarts_at_once() {
        let mut s = Sim::new(params());
        s.run(0, 5000, 500, &Layer::ALL);
        s.exit(5200, Layer::Watchdogd);
        assert_eq!(s.spawns_of(Layer::Watchdogd), vec![0, 5200]);
        assert!(s
            .notes
            .iter()
            .any(|n| matches!(n, Note::RestartIn { delay, .. } if delay.is_zero())));
    }

    #[test]
    fn hung_restarter_is_killed_after_hang_timeout() {
        let mut s = Sim::new(params());
        // Beats until 3 s, then silence.
        s.run(0, 3000, 100, &Layer::ALL);
        let pid = s.pid(Layer::Restarter);
        s.run(3100, 12_900, 100, &[Layer::Watchdogd]);
        assert!(
            s.kills.is_empty(),
            "killed before hang_timeout: {:?}",
            s.kills
        );
        assert_eq!(s.core.next_deadline(), Some(at(13_000)));
        s.run(13_000, 13_000, 100, &[Layer::Watchdogd]);
        assert_eq!(s.kills, vec![(13_000, Layer::Restarter, pid)]);
        assert!(matches!(
            s.core.state(Layer::Restarter),
            State::Killing { .. }
        ));
        // No second process while the first is not reaped.
        s.run(13_100, 13_500, 100, &[Layer::Watchdogd]);
        assert_eq!(s.spawns_of(Layer::Restarter), vec![0]);
        s.feed(
            13_600,
            Event::Exited {
                layer: Layer::Restarter,
                pid,
                how: Exit::Signal {
                    signal: 9,
                    core: false,
                },
            },
        );
        assert_eq!(s.spawns_of(Layer::Restarter), vec![0, 13_600]);
        assert!(s
            .notes
            .iter()
            .any(|n| matches!(n, Note::Hung { silent, .. } if *silent == Duration::from_secs(10))));
        // The watchdogd child was never touched.
        assert_eq!(s.spawns_of(Layer::Watchdogd), vec![0]);
    }

    #[test]
    fn fresh_child_gets_startup_grace_before_its_silence_counts() {
        let mut s = Sim::new(params());
        let pid = s.pid(Layer::Restarter);
        // Never beats: grace 5 s + hang 10 s.
        s.run(0, 14_900, 100, &[Layer::Watchdogd]);
        assert!(s.kills.is_empty());
        s.feed(15_000, Event::Tick);
        assert_eq!(s.kills, vec![(15_000, Layer::Restarter, pid)]);
    }

    #[test]
    fn first_beat_ends_the_grace() {
        let mut s = Sim::new(params());
        s.feed(
            100,
            Event::Beat {
                layer: Layer::Restarter,
                at: at(100),
            },
        );
        s.run(200, 10_000, 100, &[Layer::Watchdogd]);
        assert_eq!(s.kills.len(), 0);
        s.feed(10_100, Event::Tick);
        assert_eq!(
            s.kills.len(),
            1,
            "hang counted from the first beat, not from the end of the grace"
        );
    }

    #[test]
    fn killed_child_that_does_not_die_is_killed_again_never_duplicated() {
        let mut s = Sim::new(params());
        s.run(0, 20_000, 100, &[Layer::Watchdogd]);
        // Killed at 15 s, again at 25 s.
        s.run(20_100, 25_000, 100, &[Layer::Watchdogd]);
        let kills: Vec<u64> = s.kills.iter().map(|k| k.0).collect();
        assert_eq!(kills, vec![15_000, 25_000]);
        assert_eq!(s.spawns_of(Layer::Restarter), vec![0]);
        assert!(s.notes.iter().any(|n| matches!(n, Note::StillDying { .. })));
    }

    #[test]
    fn crash_loop_exhausts_budget_and_reboots() {
        let mut s = Sim::new(params());
        // Crashes right away each time: restarts at 1, 2, 3 s (max_restarts 3).
        let mut t = 10;
        for _ in 0..3 {
            s.exit(t, Layer::Restarter);
            let next = s.core.next_deadline().unwrap().as_duration().as_millis() as u64;
            s.feed(next, Event::Tick);
            t = next + 10;
        }
        assert_eq!(s.spawns_of(Layer::Restarter), vec![0, 1000, 2000, 3000]);
        assert!(s.reboots.is_empty());
        s.exit(t, Layer::Restarter);
        assert_eq!(s.reboots, vec![(t, Layer::Restarter)]);
        assert_eq!(s.core.state(Layer::Restarter), State::Stopped);
        assert!(s
            .notes
            .iter()
            .any(|n| matches!(n, Note::BudgetExhausted { restarts: 3, .. })));
        // Never started again.
        s.run(t, t + 10_000, 500, &[Layer::Watchdogd]);
        assert_eq!(s.spawns_of(Layer::Restarter).len(), 4);
    }

    #[test]
    fn restarts_spread_beyond_the_window_never_exhaust_the_budget() {
        let mut s = Sim::new(params());
        // One crash every 30 s for ten minutes: at most 2 in any 60 s window.
        for i in 1..=20u64 {
            let t = i * 30_000;
            s.run(t - 29_000, t - 1000, 1000, &Layer::ALL);
            s.exit(t, Layer::Watchdogd);
        }
        assert!(s.reboots.is_empty());
        assert_eq!(s.core.total_restarts(Layer::Watchdogd), 20);
        assert!(s.core.restarts_in_window(Layer::Watchdogd, at(600_000)) <= 2);
    }

    #[test]
    fn hang_kills_count_towards_the_budget() {
        let mut p = params();
        p.max_restarts = 1;
        p.startup_grace = Duration::ZERO;
        let mut s = Sim::new(p);
        s.run(0, 10_000, 100, &[Layer::Watchdogd]);
        let k = s.kills.clone();
        assert_eq!(k.len(), 1);
        s.feed(
            10_050,
            Event::Exited {
                layer: Layer::Restarter,
                pid: k[0].2,
                how: Exit::Signal {
                    signal: 9,
                    core: false,
                },
            },
        );
        s.run(10_100, 20_100, 100, &[Layer::Watchdogd]);
        let k2 = *s.kills.last().unwrap();
        assert_eq!(s.kills.len(), 2);
        s.feed(
            20_200,
            Event::Exited {
                layer: Layer::Restarter,
                pid: k2.2,
                how: Exit::Signal {
                    signal: 9,
                    core: false,
                },
            },
        );
        assert_eq!(s.reboots, vec![(20_200, Layer::Restarter)]);
    }

    #[test]
    fn spawn_failures_back_off_doubling_up_to_ten_seconds() {
        let mut s = Sim::new(params());
        let wd_at = |s: &Sim| match s.core.state(Layer::Watchdogd) {
            State::Waiting { at } => at.as_duration().as_millis() as u64,
            other => panic!("watchdogd not waiting: {:?}", other),
        };
        s.fail_spawns = true;
        s.exit(100, Layer::Watchdogd);
        s.feed(1000, Event::Tick);
        let mut delays = vec![];
        let mut now = 1000;
        for _ in 0..8 {
            let next = wd_at(&s);
            delays.push(next - now);
            // The restarter keeps beating so that only watchdogd's timer runs.
            s.feed(
                next,
                Event::Beat {
                    layer: Layer::Restarter,
                    at: at(next),
                },
            );
            now = next;
        }
        assert_eq!(
            delays,
            vec![1000, 2000, 4000, 8000, 10_000, 10_000, 10_000, 10_000]
        );
        assert!(s.reboots.is_empty(), "spawn failures are not restarts");
        assert_eq!(s.spawns_of(Layer::Watchdogd).len(), 10);
        // Success resets the backoff.
        s.fail_spawns = false;
        let next = wd_at(&s);
        s.feed(next, Event::Tick);
        assert!(matches!(
            s.core.state(Layer::Watchdogd),
            State::Running { .. }
        ));
        s.exit(next + 1, Layer::Watchdogd);
        s.fail_spawns = true;
        s.feed(next + 1000, Event::Tick);
        assert_eq!(wd_at(&s) - (next + 1000), 1000);
    }

    #[test]
    fn a_stopped_layer_is_not_restarted_nor_hang_killed() {
        let mut s = Sim::new(params());
        s.core.stop(Layer::Restarter);
        s.run(0, 30_000, 500, &[Layer::Watchdogd]);
        assert!(s.kills.is_empty());
        s.exit(30_100, Layer::Restarter);
        s.run(30_200, 40_000, 500, &[Layer::Watchdogd]);
        assert_eq!(s.spawns_of(Layer::Restarter), vec![0]);
        assert_eq!(s.core.state(Layer::Restarter), State::Stopped);
        assert!(s.reboots.is_empty());
        // The other layer is still supervised.
        s.exit(40_100, Layer::Watchdogd);
        assert_eq!(s.spawns_of(Layer::Watchdogd), vec![0, 40_100]);
    }

    #[test]
    fn exits_of_unknown_pids_are_ignored() {
        let mut s = Sim::new(params());
        s.feed(
            50,
            Event::Exited {
                layer: Layer::Restarter,
                pid: 4242,
                how: Exit::Code(0),
            },
        );
        assert!(matches!(
            s.core.state(Layer::Restarter),
            State::Running { .. }
        ));
        assert_eq!(s.core.layer_of(4242), None);
        let pid = s.pid(Layer::Restarter);
        assert_eq!(s.core.layer_of(pid), Some(Layer::Restarter));
    }

    #[test]
    fn window_table_is_clamped_to_its_capacity() {
        let mut p = params();
        p.max_restarts = 10_000;
        let (c, lowered) = p.clamped();
        assert!(lowered);
        assert_eq!(c.max_restarts, WINDOW_CAP as u32);
        let mut p = params();
        p.max_restarts = 5000;
        p.restart_delay = Duration::ZERO;
        let mut s = Sim::new(p);
        for i in 0..WINDOW_CAP as u64 {
            s.exit(10 + i, Layer::Watchdogd);
        }
        assert!(s.reboots.is_empty());
        s.exit(10 + WINDOW_CAP as u64, Layer::Watchdogd);
        assert_eq!(s.reboots.len(), 1);
    }

    #[test]
    fn liveness_describes_each_layer() {
        let mut s = Sim::new(params());
        s.exit(10, Layer::Restarter);
        s.feed(1000, Event::Tick);
        let now = at(181_000);
        assert_eq!(
            s.core.describe(Layer::Watchdogd, now).to_string(),
            "watchdogd up 3m (restarts 0)"
        );
        assert_eq!(
            s.core.describe(Layer::Restarter, now).to_string(),
            "restarter up 3m (restarts 1)"
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(Human(350 * MS).to_string(), "350ms");
        assert_eq!(Human(1500 * MS).to_string(), "1.5s");
        assert_eq!(Human(Duration::from_secs(12)).to_string(), "12s");
        assert_eq!(Human(Duration::from_secs(3725)).to_string(), "1h2m");
        assert_eq!(Human(Duration::from_secs(90_000)).to_string(), "1d1h");
    }

    #[test]
    fn exit_descriptions() {
        assert_eq!(Exit::Code(3).to_string(), "exited with status 3");
        assert_eq!(
            Exit::Signal {
                signal: 9,
                core: false
            }
            .to_string(),
            "killed by SIGKILL (9)"
        );
        assert_eq!(
            Exit::Signal {
                signal: 11,
                core: true
            }
            .to_string(),
            "killed by SIGSEGV (11), core dumped"
        );
    }

    /// A beat found after init's loop stalled is credited to when the pipe
    /// was last seen empty: a layer silent since then is killed at once
    /// (DESIGN.md "Heartbeats", init's own reader).
    #[test]
    fn a_beat_credited_before_a_stall_does_not_make_a_silent_layer_fresh() {
        let mut s = Sim::new(params());
        s.run(0, 6_000, 100, &[Layer::Watchdogd, Layer::Restarter]);
        // init stalls from 6.0 s to 20 s; the restarter's last byte came
        // during the stall, found at 20 s, credited to 6.0 s.
        s.feed(
            20_000,
            Event::Beat {
                layer: Layer::Restarter,
                at: at(6_000),
            },
        );
        // (watchdogd too is silent since 6.0 s, and killed with it.)
        assert!(
            s.kills
                .contains(&(20_000, Layer::Restarter, s.pid(Layer::Restarter))),
            "{:?}",
            s.kills
        );
        assert!(s.notes.iter().any(|n| matches!(
            n,
            Note::Hung { layer: Layer::Restarter, silent, .. } if *silent == Duration::from_secs(14)
        )));
    }

    #[test]
    fn a_credit_never_moves_the_last_beat_back_nor_before_the_start() {
        let mut l = Layers::new(params(), at(0));
        l.handle(at(0), Event::Tick);
        l.handle(
            at(1),
            Event::Spawned {
                layer: Layer::Restarter,
                pid: 7,
            },
        );
        let beat = |l: &Layers| match l.state(Layer::Restarter) {
            State::Running { last_beat, .. } => last_beat,
            other => panic!("{:?}", other),
        };
        l.handle(
            at(2),
            Event::Beat {
                layer: Layer::Restarter,
                at: at(0),
            },
        );
        assert_eq!(beat(&l), Some(at(1)), "not before the start");
        l.handle(
            at(500),
            Event::Beat {
                layer: Layer::Restarter,
                at: at(500),
            },
        );
        l.handle(
            at(600),
            Event::Beat {
                layer: Layer::Restarter,
                at: at(300),
            },
        );
        assert_eq!(beat(&l), Some(at(500)), "never back");
        l.handle(
            at(700),
            Event::Beat {
                layer: Layer::Restarter,
                at: at(900),
            },
        );
        assert_eq!(beat(&l), Some(at(700)), "never in the future");
    }

    /// The image carried across a re-exec restores the same behaviour:
    /// the same pids, the same budget (the next exit after a full window
    /// reboots), the same hang deadline.
    #[test]
    fn an_image_resumes_the_same_supervision() {
        let mut s = Sim::new(params());
        for k in 0..3u64 {
            let t = 2_000 * (k + 1);
            s.run(
                t - 1_500,
                t - 100,
                100,
                &[Layer::Watchdogd, Layer::Restarter],
            );
            s.exit(t, Layer::Restarter);
        }
        s.run(6_100, 8_000, 100, &[Layer::Watchdogd, Layer::Restarter]);
        assert_eq!(s.core.total_restarts(Layer::Restarter), 3);
        let wd = s.core.image(Layer::Watchdogd).unwrap();
        let rst = s.core.image(Layer::Restarter).unwrap();
        assert_eq!(rst.restarts.len(), 3);
        assert!(
            rst.restarts.windows(2).all(|w| w[0] <= w[1]),
            "oldest first"
        );
        let resumed = Layers::resume(params(), &wd, &rst, at(8_000));
        assert_eq!(resumed.image(Layer::Watchdogd).unwrap(), wd);
        assert_eq!(resumed.image(Layer::Restarter).unwrap(), rst);
        assert_eq!(resumed.pid(Layer::Restarter), s.core.pid(Layer::Restarter));
        assert_eq!(resumed.next_deadline(), s.core.next_deadline());
        s.core = resumed;
        s.exit(8_100, Layer::Restarter);
        assert_eq!(s.reboots, vec![(8_100, Layer::Restarter)], "budget carried");
    }

    #[test]
    fn an_image_holds_at_most_the_window_table() {
        let s = Sim::new(params());
        assert_eq!(
            Layers::new(params(), at(0))
                .image(Layer::Restarter)
                .map(|_| ()),
            Some(())
        );
        let mut l = Layers::new(params(), at(0));
        l.handle(at(0), Event::Tick);
        assert_eq!(l.image(Layer::Restarter), None, "a Spawn is out");
        let mut img = s.core.image(Layer::Restarter).unwrap();
        img.restarts = (0..(WINDOW_CAP as u64 + 10)).map(at).collect();
        let r = Layers::resume(params(), &img, &img, at(0));
        let back = r.image(Layer::Restarter).unwrap();
        assert_eq!(back.restarts.len(), WINDOW_CAP);
        assert_eq!(back.restarts.first(), Some(&at(10)), "oldest dropped");
        img.state = State::Spawning;
        let r = Layers::resume(params(), &img, &img, at(42));
        assert_eq!(r.state(Layer::Watchdogd), State::Waiting { at: at(42) });
    }
}
