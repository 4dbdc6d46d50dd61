//! The SERVICES model: the restarter's shipped [`Supervisor`] core explored
//! exhaustively (issue 14, "a second model for services").
//!
//! The transition function is `Supervisor::{load, load_adopting, handle,
//! tick, start, stop}`; what is written here is the world around it: the
//! shell carrying out its actions (a spawn answers `Spawned` at once, a
//! signal marks the process, a `SIGKILL` makes it exit before time moves
//! on), processes that crash at any moment or exit on their stop signal,
//! an operator who stops the required service once and may start it again,
//! and time in ticks, canonical as in the chain model (`Supervisor::rebase`,
//! clock kept at [`BASE`]).
//!
//! Two services: `db`, critical (`restart = "always"`, a restart budget of
//! `max_restarts` within `window`, `on_exhausted = "reboot"`), and `app`,
//! which `requires` it. Two starts: both loaded fresh, or both adopted
//! from a previous restarter's state file (`load_adopting`, their
//! processes alive).
//!
//! Properties (each `always` with a `sometimes`):
//! - never two live processes of one service;
//! - a service is started again no sooner than `restart_delay` after its
//!   previous start, unless an operator started it (a start by hand is at
//!   once: `supervisor.rs`, decision);
//! - while `db` is stopped by the operator, its process gets no signal
//!   while `app` (which requires it) still has one: dependents first;
//! - the reboot is asked at most once (and a crash loop of `db` asks it);
//! - adopted services are watched, and neither started nor signalled
//!   while nothing happens but time (adoption alone restarts nothing).

use std::time::{Duration, Instant};

use stateright::{Checker, Expectation, HasDiscoveries, Model, Property};
use tether_restarter::service::{LoadedSet, OnExhausted, RestartLimit, ServiceSpec};
use tether_restarter::supervisor::{Action, Event, ExitStatus, Resume, ServiceId, Supervisor};

use crate::BASE;

/// The services, by index: `db` (required, critical), `app` (requires it).
pub const NAMES: [&str; 2] = ["db", "app"];
const DB: usize = 0;
const APP: usize = 1;
const SIGKILL: i32 = 9;
const SIGCONT: i32 = 18;

/// Which start the model explores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Start {
    /// `load`: both services started fresh.
    Fresh,
    /// `load_adopting`: both processes alive from a previous restarter.
    Adopted,
}

/// A services configuration at a tick.
#[derive(Clone, Debug)]
pub struct Services {
    pub name: String,
    pub tick: Duration,
    pub start: Start,
    /// The specs as configured (what the properties judge by).
    pub specs: Vec<ServiceSpec>,
    /// The specs the core is given: the same, unless a mutant changed them.
    pub core_specs: Vec<ServiceSpec>,
    /// The oldest age the core compares a past time with (its
    /// `Supervisor::rebase` horizon).
    pub horizon: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Proc {
    pub svc: usize,
    pub pid: i32,
    /// The signal last sent to it (its stop signal, or `SIGKILL`).
    pub signal: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SvcState {
    pub sup: Supervisor,
    pub procs: Vec<Proc>,
    gens: [u8; 2],
    /// Since each service's last spawn, saturating at its restart delay.
    pub since_spawn: [Option<Duration>; 2],
    /// Started by the operator since its last spawn.
    pub manual: [bool; 2],
    /// The operator's stop of `db` holds (no start since).
    pub db_stopped: bool,
    /// Operator steps done: bit 0 stop db, bit 1 start db.
    pub ops: u8,
    /// Something but time happened (an exit, an operator step).
    pub disturbed: bool,
    /// Ticks passed undisturbed, saturating (adopted start only).
    pub quiet: u8,
    /// `app` crashed once (it may crash once per run: its own crash loop
    /// adds no order of events that `db`'s does not).
    pub app_crashed: bool,
    /// Reboot requests, saturating.
    pub reboots: u8,
    // Violations seen (properties read them).
    pub two_live: bool,
    pub early_start: bool,
    pub stop_order: bool,
    pub adoption_touched: bool,
    pub unwatched: bool,
    /// Starts after a crash (for the `sometimes`), saturating.
    pub restarts: u8,
    /// The dependent was stopped before `db` (for the `sometimes`).
    pub ordered_stop: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SvcStep {
    Tick,
    /// The service's process exits (crash, or on its stop signal).
    Exit(usize),
    StopDb,
    StartDb,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn spec(name: &str) -> ServiceSpec {
    let mut s = ServiceSpec::new(name, &["/bin/true"]);
    s.restart_delay = ms(1000);
    s.stop_timeout = ms(1000);
    s
}

/// `db` and `app` as the model checks them (before any mutant).
pub fn pair() -> Vec<ServiceSpec> {
    let mut db = spec("db");
    db.limit = Some(RestartLimit {
        max_restarts: 2,
        window: ms(4000),
    });
    db.on_exhausted = OnExhausted::Reboot;
    let mut app = spec("app");
    app.requires = vec!["db".into()];
    vec![db, app]
}

/// Every services configuration at its coarse tick (500 ms) divided by
/// `div`.
pub fn all(div: u32) -> Vec<Services> {
    let tick = ms(500) / div.max(1);
    [
        ("services: db and app (requires db), fresh", Start::Fresh),
        (
            "services: db and app (requires db), adopted",
            Start::Adopted,
        ),
    ]
    .into_iter()
    .map(|(name, start)| Services::new(name, pair(), tick, start))
    .collect()
}

#[cfg(feature = "mutants")]
pub mod mutants {
    use std::sync::atomic::AtomicBool;
    /// The core is given `db` with no restart delay.
    pub static NO_DELAY: AtomicBool = AtomicBool::new(false);
    /// The core is given `app` without its `requires`.
    pub static NO_REQUIRES: AtomicBool = AtomicBool::new(false);
}

fn mutated(mut specs: Vec<ServiceSpec>) -> Vec<ServiceSpec> {
    #[cfg(feature = "mutants")]
    {
        use std::sync::atomic::Ordering;
        if mutants::NO_DELAY.load(Ordering::Relaxed) {
            specs[DB].restart_delay = Duration::ZERO;
        }
        if mutants::NO_REQUIRES.load(Ordering::Relaxed) {
            specs[APP].requires.clear();
        }
    }
    #[cfg(not(feature = "mutants"))]
    let _ = &mut specs;
    specs
}

impl Services {
    pub fn new(name: &str, specs: Vec<ServiceSpec>, tick: Duration, start: Start) -> Services {
        let horizon = specs
            .iter()
            .flat_map(|s| {
                // What past times are compared with (a backoff's
                // `max_delay` only sets future times).
                [
                    s.restart_delay,
                    s.stop_timeout,
                    s.watchdog_timeout.unwrap_or_default(),
                    s.limit.map(|l| l.window).unwrap_or_default(),
                ]
            })
            .max()
            .unwrap_or_default();
        Services {
            name: name.into(),
            tick,
            start,
            core_specs: mutated(specs.clone()),
            specs,
            horizon,
        }
    }

    fn set(&self) -> LoadedSet {
        LoadedSet {
            specs: self.core_specs.clone(),
            errors: Vec::new(),
            dir_error: None,
        }
    }

    fn idx(&self, s: &SvcState, id: ServiceId) -> Option<usize> {
        let name = s.sup.name(id)?;
        NAMES.iter().position(|n| *n == name)
    }

    fn new_pid(s: &mut SvcState, svc: usize) -> i32 {
        // Two generations tell an old process from its successor.
        s.gens[svc] = (s.gens[svc] + 1) % 2;
        100 * (svc as i32 + 1) + i32::from(s.gens[svc])
    }

    /// Carries out the core's actions like the shell, results fed back in
    /// order.
    fn run(&self, s: &mut SvcState, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Spawn { id } => {
                    let Some(i) = self.idx(s, id) else { continue };
                    if let Some(age) = s.since_spawn[i] {
                        if age < self.specs[i].restart_delay && !s.manual[i] {
                            s.early_start = true;
                        }
                    }
                    if s.disturbed && s.procs.iter().all(|p| p.svc != i) {
                        s.restarts = s.restarts.saturating_add(1).min(3);
                    }
                    if self.start == Start::Adopted && !s.disturbed {
                        s.adoption_touched = true;
                    }
                    s.since_spawn[i] = Some(Duration::ZERO);
                    s.manual[i] = false;
                    let pid = Self::new_pid(s, i);
                    if s.procs.iter().any(|p| p.svc == i) {
                        s.two_live = true;
                    }
                    s.procs.push(Proc {
                        svc: i,
                        pid,
                        signal: None,
                    });
                    queue.extend(s.sup.handle(id, Event::Spawned { pid }, BASE));
                }
                Action::Kill {
                    id, pid, signal, ..
                } => {
                    let Some(i) = self.idx(s, id) else { continue };
                    let Some(k) = s.procs.iter().position(|p| p.pid == pid && p.svc == i) else {
                        // The group of a process already gone (leftovers).
                        continue;
                    };
                    if self.start == Start::Adopted && !s.disturbed {
                        s.adoption_touched = true;
                    }
                    if i == DB && s.db_stopped {
                        if s.procs.iter().any(|p| p.svc == APP) {
                            s.stop_order = true;
                        } else if s.procs[k].signal.is_none() {
                            s.ordered_stop = true;
                        }
                    }
                    // `SIGCONT` (sent after the stop signal) ends nothing.
                    if signal != SIGCONT {
                        s.procs[k].signal = Some(signal);
                    }
                }
                Action::RequestReboot { .. } => s.reboots = s.reboots.saturating_add(1).min(3),
                Action::Watch { .. }
                | Action::Log { .. }
                | Action::WriteState
                | Action::Provision { .. }
                | Action::Release { .. } => {}
            }
        }
    }

    pub fn initial(&self) -> SvcState {
        let mut s = SvcState {
            sup: Supervisor::new(),
            procs: Vec::new(),
            gens: [0; 2],
            since_spawn: [None; 2],
            manual: [false; 2],
            db_stopped: false,
            ops: 0,
            disturbed: false,
            quiet: 0,
            app_crashed: false,
            reboots: 0,
            two_live: false,
            early_start: false,
            stop_order: false,
            adoption_touched: false,
            unwatched: false,
            restarts: 0,
            ordered_stop: false,
        };
        let actions = match self.start {
            Start::Fresh => s.sup.load(self.set(), BASE),
            Start::Adopted => {
                let mut resumes = std::collections::HashMap::new();
                for (i, name) in NAMES.iter().enumerate() {
                    let pid = Self::new_pid(&mut s, i);
                    s.procs.push(Proc {
                        svc: i,
                        pid,
                        signal: None,
                    });
                    resumes.insert(
                        name.to_string(),
                        Resume {
                            pid: Some(pid),
                            // Up for a while: no restart delay pending.
                            started: Some(BASE),
                            ready: true,
                            watchdog_timeout: None,
                            restarts: 0,
                            history: Default::default(),
                            wanted: true,
                            failed: false,
                            exited: None,
                        },
                    );
                }
                let actions = s.sup.load_adopting(self.set(), resumes, BASE);
                let watched = |pid: i32| {
                    actions
                        .iter()
                        .any(|a| matches!(a, Action::Watch { pid: p, .. } if *p == pid))
                };
                s.unwatched = !s.procs.iter().all(|p| watched(p.pid));
                actions
            }
        };
        self.run(&mut s, actions);
        s
    }

    fn tick(&self, s: &mut SvcState) {
        let by = self.tick;
        s.sup.rebase(by, BASE, self.horizon);
        for (i, t) in s.since_spawn.iter_mut().enumerate() {
            if let Some(t) = t {
                *t = t.saturating_add(by).min(self.specs[i].restart_delay);
            }
        }
        if self.start == Start::Adopted && !s.disturbed {
            s.quiet = s.quiet.saturating_add(1).min(12);
        }
        if s.sup.next_deadline().is_some_and(|d| d <= BASE) {
            let actions = s.sup.tick(BASE);
            self.run(s, actions);
        }
    }

    fn exit(&self, s: &mut SvcState, i: usize) {
        let Some(k) = s.procs.iter().position(|p| p.svc == i) else {
            return;
        };
        let p = s.procs.remove(k);
        s.disturbed = true;
        if i == APP && p.signal.is_none() {
            s.app_crashed = true;
        }
        let status = match p.signal {
            Some(signal) => ExitStatus::Signal {
                signal,
                core: false,
            },
            None => ExitStatus::Code(1),
        };
        let Some(id) = s.sup.id(NAMES[i]) else { return };
        let actions = s.sup.handle(id, Event::Exited { pid: p.pid, status }, BASE);
        self.run(s, actions);
    }

    fn operator(&self, s: &mut SvcState, step: SvcStep) {
        s.disturbed = true;
        let result = match step {
            SvcStep::StopDb => {
                s.ops |= 1;
                s.db_stopped = true;
                s.sup.stop(NAMES[DB], BASE)
            }
            _ => {
                s.ops |= 2;
                s.db_stopped = false;
                s.manual[DB] = true;
                s.sup.start(NAMES[DB], BASE)
            }
        };
        if let Ok((_, actions)) = result {
            self.run(s, actions);
        }
    }

    /// A process told `SIGKILL` exits before time moves on.
    fn forced(&self, s: &SvcState) -> bool {
        s.procs.iter().any(|p| p.signal == Some(SIGKILL))
    }
}

impl Model for Services {
    type State = SvcState;
    type Action = SvcStep;

    fn init_states(&self) -> Vec<SvcState> {
        vec![self.initial()]
    }

    fn actions(&self, s: &SvcState, out: &mut Vec<SvcStep>) {
        if self.start == Start::Adopted && s.disturbed {
            // The adopted start checks adoption: the run ends once
            // something but time happened and the core answered it (what
            // follows is the fresh start's ground).
            return;
        }
        if !self.forced(s) {
            out.push(SvcStep::Tick);
        }
        for i in 0..NAMES.len() {
            let exits = s
                .procs
                .iter()
                .any(|p| p.svc == i && (i == DB || !s.app_crashed || p.signal.is_some()));
            if exits {
                out.push(SvcStep::Exit(i));
            }
        }
        // After the reboot request the run goes on (time, exits: nothing
        // may ask again), without an operator, as init is shutting down.
        if s.reboots == 0 {
            if s.ops & 1 == 0 {
                out.push(SvcStep::StopDb);
            } else if s.ops & 2 == 0 {
                out.push(SvcStep::StartDb);
            }
        }
    }

    fn next_state(&self, last: &SvcState, step: SvcStep) -> Option<SvcState> {
        let mut s = last.clone();
        match step {
            SvcStep::Tick => self.tick(&mut s),
            SvcStep::Exit(i) => self.exit(&mut s, i),
            SvcStep::StopDb | SvcStep::StartDb => self.operator(&mut s, step),
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        if self.start == Start::Adopted {
            return vec![
                Property::always(PROPS[0].0, |_, s: &SvcState| !s.two_live),
                Property::always(PROPS[4].0, |_, s: &SvcState| {
                    !s.adoption_touched && !s.unwatched
                }),
                Property::sometimes(PROPS[4].1, |_, s: &SvcState| !s.disturbed && s.quiet >= 12),
            ];
        }
        vec![
            Property::always(PROPS[0].0, |_, s: &SvcState| !s.two_live),
            Property::sometimes(PROPS[0].1, |_, s: &SvcState| s.restarts >= 2),
            Property::always(PROPS[1].0, |_, s: &SvcState| !s.early_start),
            Property::sometimes(PROPS[1].1, |m: &Services, s: &SvcState| {
                s.restarts >= 1 && s.since_spawn[DB] == Some(m.specs[DB].restart_delay)
            }),
            Property::always(PROPS[2].0, |_, s: &SvcState| !s.stop_order),
            Property::sometimes(PROPS[2].1, |_, s: &SvcState| s.ordered_stop),
            Property::always(PROPS[3].0, |_, s: &SvcState| s.reboots <= 1),
            Property::sometimes(PROPS[3].1, |_, s: &SvcState| s.reboots == 1),
        ]
    }
}

/// `(always, sometimes)` names, in the README's order.
pub const PROPS: [(&str, &str); 5] = [
    (
        "services: never two live processes of one service",
        "sometimes: a service restarted twice",
    ),
    (
        "services: no start sooner than restart_delay after the last (but by hand)",
        "sometimes: a crash restart after a full restart_delay",
    ),
    (
        "services: a stop of db signals app (requires db) first",
        "sometimes: app gone before db is signalled",
    ),
    (
        "services: the reboot is asked at most once",
        "sometimes: a crash loop of db asks for the reboot",
    ),
    (
        "services: adopted services are watched, never started or signalled by adoption alone",
        "sometimes: adopted services run on, 12 ticks undisturbed",
    ),
];

/// One property's result.
#[derive(Debug)]
pub struct SvcOutcome {
    pub name: &'static str,
    pub expectation: Expectation,
    pub path: Option<Vec<(SvcState, Option<SvcStep>)>>,
}

impl SvcOutcome {
    pub fn ok(&self) -> bool {
        match self.expectation {
            Expectation::Sometimes => self.path.is_some(),
            _ => self.path.is_none(),
        }
    }

    pub fn word(&self) -> &'static str {
        match (&self.expectation, self.ok()) {
            (Expectation::Sometimes, true) => "found",
            (Expectation::Sometimes, false) => "NOT FOUND (vacuous?)",
            (_, true) => "holds",
            (_, false) => "VIOLATED",
        }
    }
}

#[derive(Debug)]
pub struct SvcReport {
    pub model: Services,
    pub unique: usize,
    pub generated: usize,
    pub elapsed: Duration,
    pub peak_kib: Option<u64>,
    pub outcomes: Vec<SvcOutcome>,
}

impl SvcReport {
    pub fn complete(&self) -> bool {
        self.generated < crate::run::STATE_CAP
    }

    pub fn all_ok(&self) -> bool {
        self.complete() && self.outcomes.iter().all(SvcOutcome::ok)
    }
}

/// Explores `model` exhaustively (breadth first, one thread).
pub fn check(model: Services, finish: HasDiscoveries) -> SvcReport {
    let start = Instant::now();
    let props = model.properties();
    let checker = model
        .clone()
        .checker()
        .threads(1)
        .target_state_count(crate::run::STATE_CAP)
        .finish_when(finish)
        .spawn_bfs()
        .join();
    let outcomes = props
        .iter()
        .map(|p| SvcOutcome {
            name: p.name,
            expectation: p.expectation.clone(),
            path: checker.discovery(p.name).map(|path| path.into_vec()),
        })
        .collect();
    SvcReport {
        unique: checker.unique_state_count(),
        generated: checker.state_count(),
        elapsed: start.elapsed(),
        peak_kib: crate::run::peak_kib(),
        outcomes,
        model,
    }
}

/// A counterexample as a timeline: time, step, each service's state as the
/// core reports it and its process.
pub fn render(m: &Services, path: &[(SvcState, Option<SvcStep>)]) -> String {
    let mut out = String::new();
    let mut t = Duration::ZERO;
    let mut step: Option<SvcStep> = None;
    for (s, next) in path {
        let what = match step {
            None => match m.start {
                Start::Fresh => "load".to_string(),
                Start::Adopted => "load, adopting".to_string(),
            },
            Some(SvcStep::Tick) => {
                t += m.tick;
                "time passes".to_string()
            }
            Some(SvcStep::Exit(i)) => format!("{} exits", NAMES[i]),
            Some(SvcStep::StopDb) => "operator: stop db".to_string(),
            Some(SvcStep::StartDb) => "operator: start db".to_string(),
        };
        let rows: Vec<String> = NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let state = s.sup.row(n, BASE).map(|r| r.state).unwrap_or("?");
                let procs: Vec<String> = s
                    .procs
                    .iter()
                    .filter(|p| p.svc == i)
                    .map(|p| match p.signal {
                        Some(sig) => format!("pid {} (signal {sig})", p.pid),
                        None => format!("pid {}", p.pid),
                    })
                    .collect();
                let procs = if procs.is_empty() {
                    "no process".to_string()
                } else {
                    procs.join(", ")
                };
                format!("{n}: {state}, {procs}")
            })
            .collect();
        out += &format!(
            "  t={:.2}s  {what}  | {}{}\n",
            t.as_secs_f64(),
            rows.join(" | "),
            if s.reboots > 0 { " | REBOOT asked" } else { "" }
        );
        step = *next;
    }
    out
}
