//! The world around the cores: processes, heartbeat pipes, the hardware,
//! faults; and the shell glue the cores do not hold.
//!
//! Environment (what the model assumes about Linux and the hardware):
//! - A layer child takes from 0 to `max(startup_grace, START_LATENCY_MIN)`
//!   from init's fork to its loop's first turn (its first beat), chosen
//!   freely at every tick; from death (crash or `SIGKILL`) to init's reap,
//!   0 to `KILL_REAP_MIN`. Latencies are rounded down to whole ticks.
//! - A process can crash (dies at once), hang (stopped: no beats, no
//!   turns; `SIGKILL` works), hang unkillably (D state: `SIGKILL` does
//!   nothing), or for watchdogd stall (its loop stops, bytes pile up in its
//!   pipes, and it resumes at any later moment unless killed first). A
//!   crash loop makes every later start of that layer crash before its
//!   first beat.
//! - Heartbeat pipes belong to init and survive every restart: unread bytes
//!   stay for the next reader. A pipe is "has unread bytes" or not.
//! - The hardware is armed at the first open, pinged by `open`,
//!   `WDIOC_SETTIMEOUT` and every pet, and pinged once more when the
//!   process holding it dies without magic close (`watchdog_release`); one
//!   process at a time can hold it (`EBUSY`). It fires when a whole
//!   `armed_secs` passes without a ping (checked before anything else runs
//!   at that instant).
//! - init hang: init stops (no beats, no reaping, no supervision). init
//!   crash: the kernel panics and `panic=N` reboots (counted as the
//!   hardware rung, as `budget::table` does). Kernel hang: nothing runs but
//!   the hardware. The restarter's reboot request is an `R` byte on its
//!   pipe to init.
//!
//! The loops' order and cadences are the shipped cores': watchdogd's
//! [`Watchdog`] (`watchdogd/src/turn.rs`: a new gate, device core and watch
//! at each start, the start-up backlog drained uncredited, drain then
//! evaluate then the device core under that decision, its beat to init) and
//! init's [`Beat`] (`init/src/beat.rs`). Shell glue still transcribed here
//! (not shipped code; see the README's "what is not proven"): the order of
//! init's turn (its beat, an `R` byte answered by the orderly reboot, beats
//! then `Tick` into `Layers`), a watchdogd turn at every tick (the shell
//! wakes at least every pet interval and at every byte; the model's tick is
//! never longer than a pet interval), and the restarter's beat every
//! `beat_interval` to both of its pipes (the restarter's own loop).

use std::time::Duration;

use stateright::{Model, Property};
use tether_common::budget::{self, Outcome as Rung};
use tether_common::clock::MonoTime;
use tether_common::config::Config;
use tether_init::beat::Beat;
use tether_init::layers::{Action as InitAction, Event, Exit, Layer, Layers, Params};
use tether_watchdogd::device::{DevErr, In, Out};
use tether_watchdogd::turn::Watchdog;

use crate::BASE;

/// Writers watchdogd watches, in its `TETHER_HEARTBEATS` order.
pub const WATCHED: [&str; 2] = ["init", "restarter"];
const INIT: usize = 0;
const RESTARTER: usize = 1;

fn li(l: Layer) -> usize {
    match l {
        Layer::Watchdogd => 0,
        Layer::Restarter => 1,
    }
}

/// One fault, injected at any moment after the device is first opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    Crash(LayerId),
    Hang(LayerId),
    Unkillable(LayerId),
    /// Every start crashes right after its first beat (its loop ran once).
    CrashLoop(LayerId),
    /// Every start crashes before its first beat.
    CrashLoopEarly(LayerId),
    /// watchdogd's loop stalls and may resume.
    Stall,
    InitHang,
    InitCrash,
    KernelHang,
    /// The restarter asks init for an orderly reboot (critical service).
    RebootRequest,
}

/// [`Layer`] with an order (for [`Fault`]'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerId {
    Watchdogd,
    Restarter,
}

impl LayerId {
    pub fn layer(self) -> Layer {
        match self {
            LayerId::Watchdogd => Layer::Watchdogd,
            LayerId::Restarter => Layer::Restarter,
        }
    }
}

impl Fault {
    pub fn all() -> Vec<Fault> {
        let mut v = Vec::new();
        for l in [LayerId::Watchdogd, LayerId::Restarter] {
            v.extend([
                Fault::Crash(l),
                Fault::Hang(l),
                Fault::Unkillable(l),
                Fault::CrashLoop(l),
                Fault::CrashLoopEarly(l),
            ]);
        }
        v.extend([
            Fault::Stall,
            Fault::InitHang,
            Fault::InitCrash,
            Fault::KernelHang,
            Fault::RebootRequest,
        ]);
        v
    }

    pub fn name(self) -> String {
        match self {
            Fault::Crash(l) => format!("{} crash", l.layer()),
            Fault::Hang(l) => format!("{} hang", l.layer()),
            Fault::Unkillable(l) => format!("{} unkillable hang (D state)", l.layer()),
            Fault::CrashLoop(l) => format!("{} crash loop", l.layer()),
            Fault::CrashLoopEarly(l) => format!("{} crash loop before its first beat", l.layer()),
            Fault::Stall => "watchdogd stall".into(),
            Fault::InitHang => "init hang".into(),
            Fault::InitCrash => "init crash".into(),
            Fault::KernelHang => "kernel hang".into(),
            Fault::RebootRequest => "restarter reboot request".into(),
        }
    }

    /// A crash or hang of a layer child (restarter, watchdogd): never a
    /// reset or a reboot.
    pub fn is_layer_crash_or_hang(self) -> bool {
        matches!(self, Fault::Crash(_) | Fault::Hang(_) | Fault::Stall)
    }

    fn target(self) -> Option<Layer> {
        match self {
            Fault::Crash(l)
            | Fault::Hang(l)
            | Fault::Unkillable(l)
            | Fault::CrashLoop(l)
            | Fault::CrashLoopEarly(l) => Some(l.layer()),
            Fault::Stall => Some(Layer::Watchdogd),
            _ => None,
        }
    }
}

/// The rung and bound a fault must end in, and where they come from.
#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    pub rung: Rung,
    pub bound: Duration,
    /// `budget::table` row, or why the model states its own.
    pub source: String,
    /// The rung is the worst case: an orderly reboot first is as good
    /// (a crash loop before the first beat whose row says hardware reset).
    pub or_reboot: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Forked; its loop starts within `left` more ticks.
    Starting {
        left: u32,
    },
    Running {
        next_beat: MonoTime,
    },
    Hung,
    Unkillable,
    /// Dead, to be reaped within `left` more ticks.
    Dead {
        left: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Proc {
    pub pid: i32,
    pub phase: Phase,
    /// Crash-looping binary: 1 crashes after its first beat, 2 before.
    pub broken: u8,
    /// watchdogd's loop is stalled.
    pub stalled: bool,
    pub wd: Option<Box<Watchdog>>,
}

impl Proc {
    pub fn live(&self) -> bool {
        !matches!(self.phase, Phase::Dead { .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InitProc {
    Up,
    Hung,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hw {
    pub armed: bool,
    /// Since the last ping, saturating just past `secs`.
    pub since_ping: Duration,
    pub secs: u32,
    /// The pid holding the device open.
    pub holder: Option<i32>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    /// Every faulty component running again, petting on (rung 1).
    Recovered,
    Reboot,
    Reset,
}

impl End {
    pub fn rung(self) -> Rung {
        match self {
            End::Recovered => Rung::Restart,
            End::Reboot => Rung::Reboot,
            End::Reset => Rung::HardwareReset,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultRec {
    pub fault: Fault,
    /// Since the fault, saturating just past its bound.
    pub elapsed: Duration,
    /// The faulty process, if a layer child.
    pub pid: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub layers: Layers,
    pub init: InitProc,
    pub init_beat: Beat,
    /// By layer: watchdogd, restarter.
    pub procs: [Vec<Proc>; 2],
    gens: [u8; 2],
    pub broken: [u8; 2],
    /// Unread bytes on init's supervision pipes, by layer.
    pub to_init: [bool; 2],
    /// Unread bytes on watchdogd's pipes, by [`WATCHED`] writer.
    pub to_wd: [bool; 2],
    /// An `R` byte on the restarter's pipe to init.
    pub reboot_asked: bool,
    /// Last write into watchdogd's pipes, by [`WATCHED`] writer.
    pub last_write: [MonoTime; 2],
    pub hw: Hw,
    pub kernel_hung: bool,
    pub faults: Vec<FaultRec>,
    /// How the run ended, with the time since the first fault.
    pub end: Option<(End, Duration)>,
    /// `Reboot` actions and reboot requests answered.
    pub reboots: u8,
    /// A pet happened while a writer had been silent its stale timeout.
    pub stale_pet: bool,
    /// Two live processes of one layer were seen.
    pub duplicate: bool,
    /// Starts of a crash-looping layer since the fault, saturating.
    pub loop_starts: u8,
}

/// One step of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Time advances one tick; everything due runs.
    Tick,
    /// A starting layer child's loop begins (first beat).
    Ready(Layer),
    /// init reaps a dead layer child.
    Reap(Layer),
    Fault(Fault),
    /// watchdogd's stalled loop resumes.
    Resume,
}

/// A configuration at a tick, with how many faults a run may hold.
#[derive(Clone, Debug)]
pub struct Chain {
    pub name: String,
    pub config: Config,
    pub tick: Duration,
    pub max_faults: usize,
    pub params: Params,
    pub stale: [Duration; 2],
    pub start_max: u32,
    pub reap_max: u32,
    pub first_beat: Duration,
    /// The oldest age anything compares beyond: the largest stale timeout.
    pub horizon: Duration,
    pub table: Vec<budget::BudgetRow>,
    pub faults: Vec<Fault>,
}

fn ticks_floor(d: Duration, tick: Duration) -> u32 {
    u32::try_from(d.as_nanos() / tick.as_nanos().max(1)).unwrap_or(u32::MAX)
}

impl Chain {
    pub fn new(name: &str, config: Config, tick: Duration, max_faults: usize) -> Chain {
        let t = &config.timing;
        let params = Params {
            restart_delay: t.restart_delay,
            hang_timeout: t.hang_timeout,
            startup_grace: t.startup_grace,
            max_restarts: config.init.max_restarts,
            window: config.init.window,
        }
        .clamped()
        .0;
        let stale = [
            t.stale_timeout_for("init"),
            t.stale_timeout_for("restarter"),
        ];
        Chain {
            name: name.into(),
            tick,
            max_faults,
            params,
            stale,
            start_max: ticks_floor(t.startup_grace.max(budget::START_LATENCY_MIN), tick),
            reap_max: ticks_floor(budget::KILL_REAP_MIN, tick),
            // watchdogd's `ChainTiming::first_beat` (chain.rs).
            first_beat: t.startup_grace.saturating_add(t.beat_interval),
            horizon: stale[0].max(stale[1]),
            table: budget::table(&config),
            faults: Fault::all(),
            config,
        }
    }

    pub fn beat(&self) -> Duration {
        self.config.timing.beat_interval
    }

    fn hardware_secs(&self) -> u32 {
        // watchdogd's `hardware_secs` (main.rs): whole seconds, at least 1.
        u32::try_from(self.config.timing.hardware_timeout.as_secs())
            .unwrap_or(u32::MAX)
            .max(1)
    }

    fn row(&self, fault: &str) -> Expect {
        match self.table.iter().find(|r| r.fault == fault) {
            Some(r) => Expect {
                rung: r.outcome,
                bound: r.bound,
                source: format!("budget::table \"{}\": {}", r.fault, r.formula),
                or_reboot: false,
            },
            None => Expect {
                rung: Rung::HardwareReset,
                bound: Duration::ZERO,
                source: format!("no budget::table row \"{fault}\""),
                or_reboot: false,
            },
        }
    }

    /// The rung and bound `budget::table` states for `fault` (the model's
    /// own for the two fault classes the table has no row for).
    pub fn expect(&self, fault: Fault) -> Expect {
        let hw = self.config.timing.hardware_timeout;
        match fault {
            Fault::Crash(l) => self.row(&format!("{} crash", l.layer())),
            Fault::Hang(l) => self.row(&format!("{} hang", l.layer())),
            Fault::Stall => self.row("watchdogd hang"),
            Fault::CrashLoop(_) => self.row("layer restart budget exhausted"),
            Fault::CrashLoopEarly(l) => {
                let mut e = self.row(&format!("{} crash loop before its first beat", l.layer()));
                e.or_reboot = e.rung == Rung::HardwareReset;
                e
            }
            Fault::InitHang => self.row("init hang"),
            Fault::InitCrash => self.row("init crash"),
            Fault::KernelHang => self.row("kernel hang"),
            Fault::Unkillable(LayerId::Restarter) => Expect {
                rung: Rung::HardwareReset,
                bound: self.stale[RESTARTER].saturating_add(hw),
                source: "model: init never starts a second restarter; watchdogd stops petting \
                         (stale_timeout (restarter) + hardware_timeout)"
                    .into(),
                or_reboot: false,
            },
            Fault::Unkillable(LayerId::Watchdogd) => Expect {
                rung: Rung::HardwareReset,
                bound: hw,
                source: "model: init never starts a second watchdogd; nobody pets \
                         (hardware_timeout)"
                    .into(),
                or_reboot: false,
            },
            Fault::RebootRequest => Expect {
                rung: Rung::Reboot,
                bound: self.tick,
                source: "model: init answers the R byte in its next turn".into(),
                or_reboot: false,
            },
        }
    }

    // ---- steps ------------------------------------------------------

    fn new_pid(&self, s: &mut State, layer: Layer) -> i32 {
        let i = li(layer);
        s.gens[i] = (s.gens[i] + 1) % 4;
        100 * (i as i32 + 1) + i32::from(s.gens[i])
    }

    fn ping(s: &mut State) {
        s.hw.since_ping = Duration::ZERO;
    }

    /// Feeds init's core and carries out its actions.
    fn feed(&self, s: &mut State, event: Event) {
        let actions = s.layers.handle(BASE, event);
        for a in actions.iter() {
            match a {
                InitAction::Spawn(layer) => {
                    let pid = self.new_pid(s, layer);
                    let i = li(layer);
                    s.procs[i].push(Proc {
                        pid,
                        phase: Phase::Starting {
                            left: self.start_max,
                        },
                        broken: s.broken[i],
                        stalled: false,
                        wd: None,
                    });
                    if s.procs[i].iter().filter(|p| p.live()).count() > 1 {
                        s.duplicate = true;
                    }
                    if s.broken[i] != 0 {
                        s.loop_starts = s.loop_starts.saturating_add(1).min(250);
                    }
                    self.feed(s, Event::Spawned { layer, pid });
                }
                InitAction::Kill { layer, pid } => {
                    let i = li(layer);
                    if let Some(k) = s.procs[i].iter().position(|p| p.pid == pid) {
                        match s.procs[i][k].phase {
                            Phase::Unkillable | Phase::Dead { .. } => {}
                            _ => self.die(s, layer, k),
                        }
                    }
                }
                InitAction::Reboot { .. } => {
                    s.reboots = s.reboots.saturating_add(1);
                    self.finish(s, End::Reboot);
                }
                InitAction::Log(_) => {}
            }
        }
    }

    fn finish(&self, s: &mut State, end: End) {
        if s.end.is_none() {
            let at = s.faults.first().map(|f| f.elapsed).unwrap_or_default();
            s.end = Some((end, at));
        }
    }

    /// The process dies (crash or kill): the kernel closes its descriptors.
    fn die(&self, s: &mut State, layer: Layer, k: usize) {
        let p = &mut s.procs[li(layer)][k];
        p.phase = Phase::Dead {
            left: self.reap_max,
        };
        p.wd = None;
        p.stalled = false;
        let pid = p.pid;
        if s.hw.holder == Some(pid) {
            // `watchdog_release` without magic close: one more ping.
            s.hw.holder = None;
            Self::ping(s);
        }
    }

    /// Everything due at `now`, in the order the loops do it.
    fn settle(&self, s: &mut State) {
        if s.kernel_hung || s.end.is_some() {
            return;
        }
        // The restarter's beats.
        for p in s.procs[1].iter_mut() {
            if let Phase::Running { next_beat } = &mut p.phase {
                if *next_beat <= BASE {
                    *next_beat = BASE + self.beat();
                    s.to_init[1] = true;
                    s.to_wd[RESTARTER] = true;
                    s.last_write[RESTARTER] = BASE;
                }
            }
        }
        if s.init == InitProc::Up {
            if s.init_beat.due(BASE, self.beat()) {
                s.to_wd[INIT] = true;
                s.last_write[INIT] = BASE;
            }
            if std::mem::take(&mut s.reboot_asked) {
                s.reboots = s.reboots.saturating_add(1);
                self.finish(s, End::Reboot);
                return;
            }
            for layer in Layer::ALL {
                if std::mem::take(&mut s.to_init[li(layer)]) {
                    self.feed(s, Event::Beat { layer, at: BASE });
                }
            }
            self.feed(s, Event::Tick);
            if s.end.is_some() {
                return;
            }
        }
        let turn = s.procs[0]
            .iter()
            .position(|p| matches!(p.phase, Phase::Running { .. }) && !p.stalled && p.wd.is_some());
        if let Some(k) = turn {
            self.wd_turn(s, k);
        }
    }

    /// One pass of watchdogd's loop (process `k`) after a wake-up at
    /// `now`: the bytes found, then the core's turn.
    fn wd_turn(&self, s: &mut State, k: usize) {
        let Some(mut wd) = s.procs[0][k].wd.take() else {
            return;
        };
        let pid = s.procs[0][k].pid;
        self.wd_drain(s, &mut wd);
        self.wd_run(s, &mut wd, pid);
        s.procs[0][k].wd = Some(wd);
    }

    /// Every watched pipe with bytes drained into the core.
    fn wd_drain(&self, s: &mut State, wd: &mut Watchdog) {
        let credit = wd.credit(BASE);
        for (i, name) in WATCHED.iter().enumerate() {
            if std::mem::take(&mut s.to_wd[i]) {
                wd.found(name, credit);
            }
        }
        wd.drained(BASE);
    }

    /// The core's turn with the modelled device as its executor, its beat
    /// to init, then the wait (the model wakes it every tick).
    fn wd_run(&self, s: &mut State, wd: &mut Watchdog, pid: i32) {
        let turned = wd.turn(BASE, Vec::new(), |out, _| self.execute(s, pid, out));
        if turned.beat {
            s.to_init[0] = true;
        }
        wd.waiting(BASE, self.tick);
    }

    /// The hardware's answer to one action of watchdogd's device core.
    fn execute(&self, s: &mut State, pid: i32, out: &Out) -> Option<In> {
        match out {
            Out::TryOpen => match s.hw.holder {
                Some(other) if other != pid => Some(In::OpenFailed(DevErr::Absent)),
                _ => {
                    s.hw.holder = Some(pid);
                    if !s.hw.armed {
                        s.hw.armed = true;
                        s.hw.secs = self.hardware_secs();
                    }
                    Self::ping(s);
                    Some(In::Opened { simulated: false })
                }
            },
            Out::Configure { secs } => {
                s.hw.secs = (*secs).max(1);
                Self::ping(s);
                Some(In::Configured {
                    armed_secs: Some((*secs).max(1)),
                })
            }
            Out::Pet => {
                for (i, stale) in self.stale.iter().enumerate() {
                    if BASE.saturating_since(s.last_write[i]) >= *stale {
                        s.stale_pet = true;
                    }
                }
                Self::ping(s);
                Some(In::PetDone)
            }
            Out::Close => {
                s.hw.holder = None;
                Self::ping(s);
                None
            }
            Out::MagicClose => {
                s.hw.holder = None;
                s.hw.armed = false;
                None
            }
            Out::WriteRecord(_) | Out::Log(_) => None,
        }
    }

    fn tick(&self, s: &mut State) {
        let by = self.tick;
        for f in s.faults.iter_mut() {
            let cap = self.expect(f.fault).bound.saturating_add(by);
            f.elapsed = f.elapsed.saturating_add(by).min(cap);
        }
        s.layers.rebase(by, BASE);
        s.init_beat.rebase(by, BASE);
        for (i, t) in s.last_write.iter_mut().enumerate() {
            *t = t.rebased(by, BASE, self.stale[i]);
        }
        for procs in s.procs.iter_mut() {
            for p in procs.iter_mut() {
                match &mut p.phase {
                    Phase::Starting { left } | Phase::Dead { left } => {
                        *left = left.saturating_sub(1)
                    }
                    Phase::Running { next_beat } => {
                        *next_beat = next_beat.rebased(by, BASE, Duration::ZERO)
                    }
                    Phase::Hung | Phase::Unkillable => {}
                }
                if let Some(wd) = &mut p.wd {
                    wd.rebase(by, BASE, self.horizon);
                }
            }
        }
        if s.hw.armed {
            let secs = Duration::from_secs(u64::from(s.hw.secs));
            s.hw.since_ping = s.hw.since_ping.saturating_add(by).min(secs + by);
            if s.hw.since_ping >= secs {
                self.finish(s, End::Reset);
                return;
            }
        }
        self.settle(s);
    }

    fn ready(&self, s: &mut State, layer: Layer) {
        let i = li(layer);
        let Some(k) = s.procs[i]
            .iter()
            .position(|p| matches!(p.phase, Phase::Starting { .. }))
        else {
            return;
        };
        if s.procs[i][k].broken == 2 {
            self.die(s, layer, k);
            return;
        }
        s.procs[i][k].phase = Phase::Running { next_beat: BASE };
        if layer == Layer::Watchdogd {
            self.wd_start(s, k);
        }
        if s.procs[i][k].broken == 1 {
            // One turn of its loop (first beat, watchdogd's open and pet),
            // then the crash.
            self.settle(s);
            if let Some(k) = s.procs[i].iter().position(|p| p.live()) {
                self.die(s, layer, k);
            }
        }
    }

    /// A new watchdogd (process `k`) as its shell starts it: a new core
    /// (`Watchdog::start`), the start-up backlog drained, the first turn.
    fn wd_start(&self, s: &mut State, k: usize) {
        let layers = WATCHED
            .iter()
            .zip(self.stale)
            .map(|(n, t)| (n.to_string(), t));
        let mut wd = Watchdog::start(
            layers,
            BASE,
            self.first_beat,
            self.hardware_secs(),
            self.beat(),
        );
        let pid = s.procs[0][k].pid;
        self.wd_drain(s, &mut wd);
        self.wd_run(s, &mut wd, pid);
        s.procs[0][k].wd = Some(Box::new(wd));
    }

    fn inject(&self, s: &mut State, fault: Fault) {
        let mut rec = FaultRec {
            fault,
            elapsed: Duration::ZERO,
            pid: None,
        };
        if let Some(layer) = fault.target() {
            let i = li(layer);
            if let Some(k) = s.procs[i].iter().position(|p| p.live()) {
                rec.pid = Some(s.procs[i][k].pid);
                match fault {
                    Fault::Crash(_) => self.die(s, layer, k),
                    Fault::CrashLoop(_) | Fault::CrashLoopEarly(_) => {
                        s.broken[i] = if matches!(fault, Fault::CrashLoop(_)) {
                            1
                        } else {
                            2
                        };
                        self.die(s, layer, k);
                    }
                    Fault::Hang(_) => s.procs[i][k].phase = Phase::Hung,
                    Fault::Unkillable(_) => s.procs[i][k].phase = Phase::Unkillable,
                    Fault::Stall => s.procs[i][k].stalled = true,
                    _ => {}
                }
            }
        }
        match fault {
            Fault::InitHang => s.init = InitProc::Hung,
            Fault::InitCrash => {
                s.faults.push(rec);
                self.finish(s, End::Reset);
                return;
            }
            Fault::KernelHang => s.kernel_hung = true,
            Fault::RebootRequest => s.reboot_asked = true,
            _ => {}
        }
        s.faults.push(rec);
    }

    fn applicable(&self, s: &State, fault: Fault) -> bool {
        if s.faults.iter().any(|f| f.fault == fault) {
            return false;
        }
        let live = |l: Layer| {
            s.procs[li(l)].iter().find(|p| p.live()).filter(|p| {
                !matches!(p.phase, Phase::Hung | Phase::Unkillable)
                    && !p.stalled
                    && !s.faults.iter().any(|f| f.pid == Some(p.pid))
            })
        };
        match fault {
            Fault::Crash(l)
            | Fault::Hang(l)
            | Fault::Unkillable(l)
            | Fault::CrashLoop(l)
            | Fault::CrashLoopEarly(l) => live(l.layer()).is_some(),
            Fault::Stall => live(Layer::Watchdogd)
                .is_some_and(|p| matches!(p.phase, Phase::Running { .. }) && p.wd.is_some()),
            Fault::RebootRequest => {
                live(Layer::Restarter).is_some_and(|p| matches!(p.phase, Phase::Running { .. }))
            }
            Fault::InitHang | Fault::InitCrash | Fault::KernelHang => true,
        }
    }

    /// Every faulty component replaced or resumed, the chain whole, petting
    /// on: rung 1 reached.
    fn healthy(&self, s: &State) -> bool {
        if s.faults.is_empty() || s.init != InitProc::Up || s.kernel_hung || s.reboot_asked {
            return false;
        }
        for (i, procs) in s.procs.iter().enumerate() {
            let mut live = procs.iter().filter(|p| p.live());
            let (Some(p), None) = (live.next(), live.next()) else {
                return false;
            };
            if !matches!(p.phase, Phase::Running { .. }) || p.stalled || p.broken != 0 {
                return false;
            }
            if s.faults
                .iter()
                .any(|f| f.pid == Some(p.pid) && f.fault != Fault::Stall)
            {
                return false;
            }
            if i == 0 {
                let Some(wd) = &p.wd else { return false };
                if !wd.gate.is_petting()
                    || !matches!(
                        wd.device.state(),
                        tether_watchdogd::device::State::Open { .. }
                    )
                {
                    return false;
                }
            }
        }
        true
    }

    pub fn initial(&self) -> State {
        let mut s = State {
            layers: Layers::new(self.params, BASE),
            init: InitProc::Up,
            init_beat: Beat::new(BASE),
            procs: [Vec::new(), Vec::new()],
            gens: [0; 2],
            broken: [0; 2],
            to_init: [false; 2],
            to_wd: [false; 2],
            reboot_asked: false,
            last_write: [BASE; 2],
            hw: Hw {
                armed: false,
                since_ping: Duration::ZERO,
                secs: 0,
                holder: None,
            },
            kernel_hung: false,
            faults: Vec::new(),
            end: None,
            reboots: 0,
            stale_pet: false,
            duplicate: false,
            loop_starts: 0,
        };
        self.settle(&mut s);
        s
    }

    /// Whether a step must happen before time may advance.
    fn forced(&self, s: &State) -> bool {
        if s.kernel_hung {
            return false;
        }
        s.procs.iter().flatten().any(|p| match p.phase {
            Phase::Starting { left } => left == 0,
            Phase::Dead { left } => left == 0 && s.init == InitProc::Up,
            _ => false,
        })
    }

    pub fn apply(&self, s: &mut State, step: Step) {
        match step {
            Step::Tick => self.tick(s),
            Step::Ready(layer) => {
                self.ready(s, layer);
                self.settle(s);
            }
            Step::Reap(layer) => {
                let i = li(layer);
                if let Some(k) = s.procs[i].iter().position(|p| !p.live()) {
                    let pid = s.procs[i].remove(k).pid;
                    let how = Exit::Signal {
                        signal: 9,
                        core: false,
                    };
                    self.feed(s, Event::Exited { layer, pid, how });
                    self.settle(s);
                }
            }
            Step::Fault(f) => {
                self.inject(s, f);
                self.settle(s);
            }
            Step::Resume => {
                for p in s.procs[0].iter_mut() {
                    p.stalled = false;
                }
                self.settle(s);
            }
        }
        if s.end.is_none() && self.healthy(s) {
            self.finish(s, End::Recovered);
        }
    }
}

impl Model for Chain {
    type State = State;
    type Action = Step;

    fn init_states(&self) -> Vec<State> {
        vec![self.initial()]
    }

    fn actions(&self, s: &State, out: &mut Vec<Step>) {
        if s.end.is_some() {
            return;
        }
        if !self.forced(s) {
            out.push(Step::Tick);
        }
        if s.kernel_hung {
            return;
        }
        for layer in Layer::ALL {
            let procs = &s.procs[li(layer)];
            // A crash-looping child crashes at once or at its latest start
            // (the extremes; in between would multiply the restart
            // window's contents without a new order of events).
            if procs.iter().any(|p| match p.phase {
                Phase::Starting { left } => p.broken == 0 || left == 0 || left == self.start_max,
                _ => false,
            }) {
                out.push(Step::Ready(layer));
            }
            if s.init == InitProc::Up && procs.iter().any(|p| !p.live()) {
                out.push(Step::Reap(layer));
            }
        }
        if s.procs[0].iter().any(|p| p.stalled) {
            out.push(Step::Resume);
        }
        if s.faults.len() < self.max_faults && s.hw.armed && s.init == InitProc::Up {
            for f in &self.faults {
                if self.applicable(s, *f) {
                    out.push(Step::Fault(*f));
                }
            }
        }
    }

    fn next_state(&self, last: &State, step: Step) -> Option<State> {
        let mut s = last.clone();
        self.apply(&mut s, step);
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        crate::props::all()
    }
}
