//! tether-watchdogd: pets the hardware watchdog only while every layer of the
//! chain beats (DESIGN.md "watchdogd", docs/PROTOCOL.md).
//!
//! `tether-watchdogd [--config FILE] [--device PATH] [--state-dir DIR] [--no-layers]`
//! (flags override the file; the config defaults to
//! `/etc/tether/tether.toml`). Read ends to watch come in
//! `TETHER_HEARTBEATS=init=3,restarter=4`; its own supervision pipe to init
//! in `TETHER_FDS=init=5` (absent when run by hand); init's running timings
//! in `TETHER_CHAIN_TIMING` (see `chain.rs`).
//!
//! The shell here is one thread and one `poll(2)` loop over the heartbeat
//! read ends and a signalfd. Each turn it asks the gate (`gate.rs`, pure)
//! for the decision, feeds the device core (`device.rs`, pure) with it, and
//! carries out the core's actions on the `WatchdogDev` and the record writer
//! (`records.rs`, a thread that only writes records). It decides nothing
//! about when to pet, retry or record.
//!
//! Decisions where DESIGN.md is silent:
//! - Pets go once per `min(beat_interval, hardware_timeout / 4)` (the
//!   hardware value as applied by the driver), by `WDIOC_KEEPALIVE` or, on a
//!   simulated device, a one-byte write. A loop turn lasts at most that long.
//! - Bytes found in a heartbeat pipe are credited by `heartbeat::Watch`: at
//!   the wake-up when the turn was on time, else (watchdogd stalled: stopped,
//!   paged out) to the moment the pipes were last seen empty, so a stall never
//!   makes a silent layer look fresh. After a stall longer than a stale
//!   timeout every layer looks stale for one turn; petting stops (ALERT) and
//!   resumes with the next beats, which is the price of never petting on old
//!   news.
//! - The device is retried every 250 ms while absent (`ENOENT`, `ENXIO`,
//!   `ENODEV`, `EBUSY`), logged once; heartbeats are drained and init gets
//!   its beats meanwhile. A failed pet of a vanished device (`EPIPE`,
//!   `ENODEV`, `EBADF`, `ENXIO`) closes it (without `V`); it is reopened
//!   only while the gate allows petting (an open pings).
//! - A bad `tether.toml` means running on `Config::default()` (then the
//!   `--device`/`--state-dir` flags), logged at ERROR; never unprotected.
//! - `TETHER_HEARTBEATS` set but unusable (empty, not UTF-8, malformed)
//!   means NO petting from the first turn, with an ERROR and the ALERT: the
//!   device is still opened once (armed) so the hardware resets. Unset, it
//!   means "run by hand": watchdogd refuses to start (exit 2) unless
//!   `--no-layers` says to pet unconditionally (testing a device by hand).
//!   A listed descriptor that cannot be taken registers its layer without a
//!   pipe: it goes stale after its first-beat grace.
//! - A layer that has not beaten since this watchdogd started is stale
//!   after the first-beat grace `startup_grace + beat_interval` of the
//!   running chain (at most its stale timeout), not after a full stale
//!   timeout: an init that hung just before watchdogd started does not get
//!   its silence restarted.
//! - Records never delay a pet: the start-up record (boot counter,
//!   `cause=unknown`) and the `unknown` after a recovery are queued to the
//!   record thread after the turn's pet. The Stop record (`cause=watchdog`)
//!   is waited for, at most `min(5 s, hang_timeout / 2)`, before the ALERT;
//!   no pet is due then.
//! - State directory failures never stop petting: logged at ERROR once by
//!   the record thread, retried every 2 s, and the recovery is logged.
//! - SIGHUP re-reads the config and checks it against the running chain
//!   (init's `TETHER_CHAIN_TIMING`, else watchdogd's own start-up values):
//!   a file whose rungs would overlap init's is refused with the inequality
//!   and the running settings stay. Accepted: stale timeouts, beat cadence,
//!   `allow_disarm` and log targets apply at once; a new hardware timeout is
//!   programmed at once while petting, or held back until petting resumes
//!   (`WDIOC_SETTIMEOUT` pings); a device or state directory change needs a
//!   restart (logged). A bad file keeps the running settings.

#![forbid(unsafe_code)] // `unsafe` lives only in tether_common::sys
mod chain;
mod records;

use chain::ChainTiming;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use records::Job;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;
use tether_common::clock::MonoTime;
use tether_common::config::{Config, DEFAULT_CONFIG};
use tether_common::fdlist::{FdList, ENV_FDS, ENV_HEARTBEATS};
use tether_common::heartbeat::{Code, Reader, Writer};
use tether_common::record::ResetRecord;
use tether_common::watchdog_dev::{self, WatchdogDev, WDIOF_CARDRESET};
use tether_common::{alert, logging, sys};
use tether_watchdogd::device::{self, DevErr, In, Note, Out, Record};
use tether_watchdogd::gate::{secs, Gate};
use tether_watchdogd::turn::{advance, Watchdog};

const TAG: &str = "tether-watchdogd";
const DEFAULT_DEVICES: [&str; 2] = ["/dev/watchdog0", "/dev/watchdog"];
const USAGE: &str =
    "usage: tether-watchdogd [--config FILE] [--device PATH] [--state-dir DIR] [--no-layers]";
/// The pseudo-layer standing for an unusable `TETHER_HEARTBEATS`.
const UNUSABLE: &str = "heartbeats";
/// The longest the loop waits for the Stop record to be durable.
const STOP_RECORD_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default, PartialEq)]
struct Args {
    config: Option<PathBuf>,
    device: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    /// `--no-layers`: with no `TETHER_HEARTBEATS`, pet unconditionally.
    no_layers: bool,
}

fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        if s == "--no-layers" {
            out.no_layers = true;
            continue;
        }
        let (flag, inline) = match s.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(PathBuf::from(v))),
            _ => (s.clone(), None),
        };
        let slot = match flag.as_str() {
            "--config" => &mut out.config,
            "--device" => &mut out.device,
            "--state-dir" => &mut out.state_dir,
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument `{}`", s)),
        };
        let v = match inline {
            Some(v) => v,
            None => it
                .next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{} needs a value", flag))?,
        };
        if v.as_os_str().is_empty() {
            return Err(format!("{} needs a non-empty value", flag));
        }
        *slot = Some(v);
    }
    Ok(out)
}

fn main() {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{}", USAGE);
            return;
        }
        Err(e) => {
            eprintln!("{}: {}\n{}", TAG, e, USAGE);
            std::process::exit(2);
        }
    };
    if std::env::var_os(ENV_HEARTBEATS).is_none() && !args.no_layers {
        eprintln!(
            "{}: {} is not set, so there is no layer to watch: refusing to pet unconditionally without --no-layers (to test a device by hand)\n{}",
            TAG, ENV_HEARTBEATS, USAGE
        );
        std::process::exit(2);
    }
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let (config, config_error) = Config::load_or_default(&config_path);
    // Opens nothing until the first record: the inherited descriptors are
    // taken below before anything is logged.
    logging::init(TAG, &config.log);
    let now = MonoTime::now();
    let inputs = take_inherited(now);
    if let Some(e) = &config_error {
        log::error!(
            "CONFIGURATION ERROR: {}; running on built-in defaults (the device stays protected)",
            e
        );
    }
    for m in &inputs.messages {
        log::error!("{}", m);
    }
    let mut d = match Daemon::new(args, config_path, config, inputs, now) {
        Ok(d) => d,
        Err(e) => {
            log::error!("cannot start: {}", e);
            std::process::exit(1);
        }
    };
    let code = d.run();
    std::process::exit(code);
}

/// What came in through the environment.
struct Inputs {
    /// (layer, read end or why not)
    layers: Vec<(String, Option<Reader>)>,
    to_init: Option<Writer>,
    /// TETHER_HEARTBEATS was absent: run by hand (with `--no-layers`).
    by_hand: bool,
    /// TETHER_HEARTBEATS is set but unusable: never pet.
    unusable: Option<String>,
    /// init's running timings, if passed and well-formed.
    chain: Option<ChainTiming>,
    messages: Vec<String>,
}

/// Reads `TETHER_HEARTBEATS` (`raw`, as the environment has it): `Ok(None)`
/// when absent; an error for anything set that does not name at least one
/// layer (issue 11, item 6: never "no layer, pet unconditionally").
fn heartbeat_list(raw: Option<&std::ffi::OsStr>) -> Result<Option<FdList>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let Some(text) = raw.to_str() else {
        return Err(format!("{} is not UTF-8", ENV_HEARTBEATS));
    };
    match FdList::parse(text) {
        Err(e) => Err(format!("{} is malformed ({})", ENV_HEARTBEATS, e)),
        Ok(l) if l.is_empty() => Err(format!("{} is set but names no layer", ENV_HEARTBEATS)),
        Ok(l) => Ok(Some(l)),
    }
}

fn take_inherited(now: MonoTime) -> Inputs {
    let mut inputs = Inputs {
        layers: Vec::new(),
        to_init: None,
        by_hand: false,
        unusable: None,
        chain: None,
        messages: Vec::new(),
    };
    match heartbeat_list(std::env::var_os(ENV_HEARTBEATS).as_deref()) {
        Ok(None) => inputs.by_hand = true,
        Err(e) => {
            inputs.messages.push(format!(
                "{}: NOT PETTING: the device is armed and will reset the machine (a list watchdogd cannot read never means \"pet unconditionally\")",
                e
            ));
            inputs.unusable = Some(e);
        }
        Ok(Some(list)) => {
            for (name, fd) in list.iter() {
                let reader = sys::take_inherited_fd(fd).and_then(|o| Reader::new(name, o, now));
                match reader {
                    Ok(r) => inputs.layers.push((name.to_string(), Some(r))),
                    Err(e) => {
                        inputs.messages.push(format!(
                            "heartbeat pipe of layer {} (fd {}) unusable: {}; it will go stale",
                            name, fd, e
                        ));
                        inputs.layers.push((name.to_string(), None));
                    }
                }
            }
        }
    }
    match ChainTiming::from_env() {
        Ok(c) => inputs.chain = c,
        Err(e) => inputs.messages.push(format!(
            "{}; checking the timing budget against watchdogd's own start-up values instead",
            e
        )),
    }
    if let Ok(v) = std::env::var(ENV_FDS) {
        match FdList::parse(&v) {
            Err(e) => inputs.messages.push(format!(
                "{} is malformed ({}): not beating to init",
                ENV_FDS, e
            )),
            Ok(list) => {
                if let Some(fd) = list.get("init") {
                    match sys::take_inherited_fd(fd).and_then(|o| Writer::new("init", o)) {
                        Ok(w) => inputs.to_init = Some(w),
                        Err(e) => inputs.messages.push(format!(
                            "supervision pipe to init (fd {}) unusable: {}",
                            fd, e
                        )),
                    }
                }
            }
        }
    }
    inputs
}

/// A heartbeat read end.
struct Slot {
    name: String,
    reader: Option<Reader>,
}

struct Daemon {
    config_path: PathBuf,
    args: Args,
    config: Config,
    /// The running chain's repair timings (init's, or our own start-up
    /// values when init did not pass them).
    chain: ChainTiming,
    /// Gate, device core, watch and the beat to init (`turn.rs`).
    core: Watchdog,
    dev: Option<WatchdogDev>,
    slots: Vec<Slot>,
    to_init: Option<Writer>,
    to_init_failed: bool,
    signals: SignalFd,
    candidates: Vec<PathBuf>,
    open_error: Option<String>,
    pet_error: Option<String>,
    last_pet: Option<MonoTime>,
    next_liveness: MonoTime,
    records: records::Writer,
    /// `RUN/watchdog.status` for the restarter's metrics (`None`: its
    /// thread could not start; logged).
    publisher: Option<records::Publisher>,
    state_dir: PathBuf,
    boot_status: Option<u32>,
    unusable: Option<String>,
    /// Requests from signals, for the next turn.
    pending: Vec<In>,
    /// When the current loop turn began (the previous wake-up).
    turn_start: MonoTime,
    /// Exit with this code (after a disarm).
    exit: Option<i32>,
}

#[derive(Debug)]
enum StartError {
    Signals(nix::Error),
    Records(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Signals(e) => write!(f, "cannot set up the signalfd: {}", e),
            StartError::Records(e) => write!(f, "cannot start the record writer: {}", e),
        }
    }
}

fn handled_signals() -> SigSet {
    let mut s = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGHUP,
    ] {
        s.add(sig);
    }
    s
}

fn hardware_secs(c: &Config) -> u32 {
    u32::try_from(c.timing.hardware_timeout.as_secs())
        .unwrap_or(u32::MAX)
        .max(1)
}

impl Daemon {
    fn new(
        args: Args,
        config_path: PathBuf,
        config: Config,
        inputs: Inputs,
        now: MonoTime,
    ) -> Result<Daemon, StartError> {
        let mask = handled_signals();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(StartError::Signals)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(StartError::Signals)?;

        if inputs.by_hand {
            log::warn!(
                "{} not set and --no-layers given: no layer is watched, petting is unconditional",
                ENV_HEARTBEATS
            );
        } else if args.no_layers {
            log::warn!("--no-layers ignored: {} is set", ENV_HEARTBEATS);
        }
        if inputs.to_init.is_none() && !inputs.by_hand {
            log::info!("no supervision pipe to init ({} has no init=N)", ENV_FDS);
        }
        let chain = inputs
            .chain
            .unwrap_or_else(|| ChainTiming::of(&config.timing));
        if inputs.chain.is_some() {
            log::info!("running chain timings from init: {}", chain.describe());
        }
        if let Err(e) = chain.check(&config) {
            log::error!(
                "TIMING BUDGET against the running chain ({}): {}; running anyway, the rungs may overlap",
                chain.describe(),
                e
            );
        }
        let timing = &config.timing;
        let layers: Vec<(String, Duration)> = match &inputs.unusable {
            // Stale from the first turn: armed, never petted.
            Some(_) => vec![(UNUSABLE.to_string(), Duration::ZERO)],
            None => inputs
                .layers
                .iter()
                .map(|(n, _)| (n.clone(), timing.stale_timeout_for(n)))
                .collect(),
        };
        let core = Watchdog::start(
            layers,
            now,
            chain.first_beat(),
            hardware_secs(&config),
            config.timing.beat_interval,
        );
        let slots = inputs
            .layers
            .into_iter()
            .map(|(name, reader)| Slot { name, reader })
            .collect();
        let candidates = match args
            .device
            .clone()
            .or_else(|| config.watchdog.device.clone())
        {
            Some(p) => vec![p],
            None => DEFAULT_DEVICES.iter().map(PathBuf::from).collect(),
        };
        let state_dir = args
            .state_dir
            .clone()
            .unwrap_or_else(|| config.paths.state.clone());
        let publisher = records::Publisher::start(config.paths.run.clone()).ok();
        let records =
            records::Writer::start_with(state_dir.clone(), config.state.history, publisher.clone())
                .map_err(StartError::Records)?;
        let d = Daemon {
            config_path,
            args,
            chain,
            core,
            dev: None,
            slots,
            to_init: inputs.to_init,
            to_init_failed: false,
            signals,
            candidates,
            open_error: None,
            pet_error: None,
            last_pet: None,
            next_liveness: now + config.timing.liveness_interval,
            records,
            state_dir,
            boot_status: None,
            publisher,
            unusable: inputs.unusable,
            pending: Vec::new(),
            turn_start: now,
            exit: None,
            config,
        };
        log::info!(
            "starting: watching {}; beat {}, hardware timeout {}, first-beat grace {}, state in {}",
            if d.unusable.is_some() {
                "nothing (TETHER_HEARTBEATS unusable)".to_string()
            } else if d.core.gate.is_empty() {
                "no layer".to_string()
            } else {
                d.core.gate.names().collect::<Vec<_>>().join(", ")
            },
            tether_common::duration::format(d.config.timing.beat_interval),
            tether_common::duration::format(d.config.timing.hardware_timeout),
            tether_common::duration::format(d.chain.first_beat()),
            d.state_dir.display()
        );
        Ok(d)
    }

    fn run(&mut self) -> i32 {
        // The start-up backlog: bytes written before this watchdogd
        // started, drained once before the first wait and not credited
        // (`turn.rs`, step 2).
        let start = MonoTime::now();
        let credit = self.core.credit(start);
        for slot in 0..self.slots.len() {
            self.drain(slot, credit);
        }
        self.core.drained(start);
        loop {
            let now = MonoTime::now();
            self.turn(now);
            if let Some(code) = self.exit {
                return code;
            }
            let now = MonoTime::now();
            let mut deadline = self.next_deadline(now);
            // Our own lines syslog refused while busy, in order.
            if let Some(t) = tether_common::logging::flush_pending(now) {
                deadline = deadline.min(t);
            }
            // A turn lasts at most one pet interval, so bytes are credited
            // within one (short) turn of their write (heartbeat::Watch).
            let wait = self.core.wait(now, deadline);
            // Round up to whole milliseconds: never wake before the deadline.
            let ms = wait.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            let mut ready = [false; 1 + tether_common::fdlist::MAX_ENTRIES];
            let mut index = [usize::MAX; 1 + tether_common::fdlist::MAX_ENTRIES];
            {
                let mut fds = Vec::with_capacity(1 + self.slots.len());
                fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
                for (i, s) in self.slots.iter().enumerate() {
                    if let Some(r) = &s.reader {
                        if fds.len() < index.len() {
                            index[fds.len()] = i;
                            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
                        }
                    }
                }
                self.core.waiting(MonoTime::now(), wait);
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        log::error!("poll failed: {}", e);
                        continue;
                    }
                }
                for (k, f) in fds.iter().enumerate() {
                    ready[k] = f.revents().is_some_and(|r| !r.is_empty());
                }
            }
            let woke = MonoTime::now();
            let credit = self.core.credit(woke);
            // A turn longer than planned by more than a pet interval: say
            // so once per stall (the silences it reports are upper bounds).
            let turn = woke.saturating_since(self.turn_start);
            let planned =
                wait + self.core.device.pet_interval() + tether_common::heartbeat::TURN_SLACK;
            if turn > planned {
                log::warn!(
                    "watchdogd's own loop stalled for about {} (stopped, paged out or blocked): beats found now are credited to before the stall",
                    secs(turn.saturating_sub(wait))
                );
            }
            self.turn_start = woke;
            for (k, &slot) in index.iter().enumerate().skip(1) {
                if slot != usize::MAX && ready[k] {
                    self.drain(slot, credit);
                }
            }
            self.core.drained(woke);
            if ready[0] {
                if let Some(code) = self.on_signals(woke) {
                    return code;
                }
            }
        }
    }

    /// One turn of timers: the core's turn (the gate's decision, the device
    /// core's actions under it, signals' requests under the same decision,
    /// whether to beat to init), then the liveness line.
    fn turn(&mut self, now: MonoTime) {
        let pending = std::mem::take(&mut self.pending);
        // The core is moved out while its executor borrows the shell.
        let mut core = std::mem::replace(&mut self.core, Watchdog::placeholder(now));
        let turned = core.turn(now, pending, |out, gate| {
            self.execute(now, out.clone(), gate)
        });
        self.core = core;
        if turned.beat {
            if let Some(w) = &self.to_init {
                match w.send(Code::Alive) {
                    Ok(_) => self.to_init_failed = false,
                    Err(e) => {
                        if !self.to_init_failed {
                            log::error!("beat to init failed: {}", e);
                            self.to_init_failed = true;
                        }
                    }
                }
            }
            self.publish_status(now);
        }
        if self.next_liveness <= now {
            self.log_liveness(now);
            self.next_liveness = advance(
                self.next_liveness,
                self.config.timing.liveness_interval,
                now,
            );
        }
    }

    /// Carries out one action on the device or the records (the core's
    /// executor: the result goes back into the core before its next
    /// action, so the order it chose, pet then record, is the order done).
    fn execute(&mut self, now: MonoTime, out: Out, gate: &Gate) -> Option<In> {
        match out {
            Out::TryOpen => Some(self.try_open()),
            Out::Configure { secs } => Some(self.configure(secs)),
            Out::Pet => {
                let dev = self.dev.as_ref()?;
                match dev.keepalive() {
                    Ok(()) => {
                        self.last_pet = Some(now);
                        self.pet_error = None;
                        Some(In::PetDone)
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if self.pet_error.as_deref() != Some(msg.as_str()) {
                            log::error!("pet of {} failed: {}", dev.path().display(), msg);
                            self.pet_error = Some(msg);
                        }
                        let gone = matches!(
                            e.raw_os_error(),
                            Some(libc::EPIPE)
                                | Some(libc::ENODEV)
                                | Some(libc::EBADF)
                                | Some(libc::ENXIO)
                        );
                        Some(In::PetFailed(if gone {
                            DevErr::Gone
                        } else {
                            DevErr::Other
                        }))
                    }
                }
            }
            Out::Close => {
                // Dropping closes without V: a real device stays armed.
                self.dev = None;
                None
            }
            Out::MagicClose => {
                self.exit = Some(0);
                if let Some(dev) = self.dev.take() {
                    let path = dev.path().display().to_string();
                    match dev.magic_close() {
                        Ok(()) => log::warn!("SIGUSR1: {} disarmed (magic close); exiting", path),
                        Err(e) => {
                            log::error!(
                                "SIGUSR1: magic close of {} failed: {}; exiting, the device may stay armed",
                                path,
                                e
                            );
                            self.exit = Some(1);
                        }
                    }
                }
                None
            }
            Out::WriteRecord(r) => {
                self.write_record(r);
                None
            }
            Out::Log(n) => {
                self.log_note(n, gate);
                None
            }
        }
    }

    fn write_record(&mut self, r: Record) {
        match r {
            Record::Start => self.records.queue(Job::Start {
                boot_status: self.boot_status,
            }),
            Record::Unknown => self.records.queue(Job::Reason(ResetRecord::unknown(None))),
            Record::Stopped { layer, silent_for } => {
                // Durable before the ALERT. Bounded: the loop still beats
                // to init, and no pet is due while stopped.
                let wait = STOP_RECORD_WAIT.min(self.chain.hang_timeout / 2);
                let job = Job::Reason(ResetRecord::watchdog(None, &layer, silent_for));
                if !self.records.write_durable(job, wait) {
                    log::error!(
                        "the stop record is not durable after {} (state directory slow or failing); it is still queued",
                        secs(wait)
                    );
                }
            }
        }
    }

    fn log_note(&mut self, n: Note, gate: &Gate) {
        if n == Note::NothingToDisarm {
            self.exit = Some(0);
        }
        match n {
            Note::Stopped {
                layer,
                silent_for,
                armed_secs,
            } => {
                let reset_in = match armed_secs {
                    Some(s) => format!("{}s", s),
                    None => "its timeout".into(),
                };
                if let Some(why) = &self.unusable {
                    alert!(
                        "{}: NOT PETTING the watchdog; hardware reset in {}",
                        why,
                        reset_in
                    );
                    return;
                }
                let timeout = gate.limit(&layer).unwrap_or_default();
                let what = if gate.has_beaten(&layer) {
                    format!("stale_timeout {}", tether_common::duration::format(timeout))
                } else {
                    format!(
                        "no beat since watchdogd started; first-beat grace {}",
                        tether_common::duration::format(timeout)
                    )
                };
                alert!(
                    layer = layer.as_str(),
                    state = "stopped",
                    silent_ms = u64::try_from(silent_for.as_millis()).unwrap_or(u64::MAX);
                    "layer {} silent for {} ({}): STOPPING petting the watchdog; hardware reset in {} unless it recovers",
                    layer,
                    secs(silent_for),
                    what,
                    reset_in
                );
            }
            Note::Resumed { layer, stopped_for } => log::warn!(
                target: "state",
                layer = layer.as_str(),
                state = "resumed";
                "layer {} is beating again: resuming petting after {} without",
                layer,
                secs(stopped_for)
            ),
            Note::Appeared { after } => log::info!(
                "{} appeared after {}",
                self.dev
                    .as_ref()
                    .map(|d| d.path().display().to_string())
                    .unwrap_or_else(|| "the watchdog device".into()),
                secs(after)
            ),
            Note::Gone => log::warn!("device gone: closed without V, reopening"),
            Note::PetFailing => {} // logged with the error by the shell
            Note::PetRecovered => log::info!("petting works again"),
            Note::ConfigureHeld { secs } => log::warn!(
                "SIGHUP: new hardware timeout {}s held back while petting is stopped (setting it would ping the device); applied when petting resumes",
                secs
            ),
            Note::DisarmRefused => log::warn!(
                "SIGUSR1: disarming refused ([watchdog] allow_disarm is false); still petting"
            ),
            Note::NothingToDisarm => {
                log::warn!("SIGUSR1: no device open, nothing to disarm; exiting")
            }
        }
    }

    fn try_open(&mut self) -> In {
        let mut last_err = None;
        let mut kind = DevErr::Absent;
        for path in &self.candidates {
            match WatchdogDev::open(path) {
                Ok(dev) => {
                    let simulated = dev.is_simulated();
                    let p = dev.path().display().to_string();
                    if simulated {
                        log::info!(
                            "{}: simulated watchdog (no ioctls): a write is a pet, nominal timeout {}s",
                            p,
                            hardware_secs(&self.config)
                        );
                    } else {
                        match dev.get_support() {
                            Ok(i) => log::info!(
                                "{}: {} (firmware {}), options {}",
                                p,
                                i.identity,
                                i.firmware_version,
                                watchdog_dev::describe_flags(i.options)
                            ),
                            Err(e) => log::warn!("{}: WDIOC_GETSUPPORT failed: {}", p, e),
                        }
                        self.read_boot_status(&dev);
                    }
                    self.dev = Some(dev);
                    self.open_error = None;
                    return In::Opened { simulated };
                }
                Err(e) => {
                    if !watchdog_dev::is_absent(&e) {
                        kind = DevErr::Other;
                    }
                    last_err = Some(format!(
                        "{}: {}{}",
                        path.display(),
                        e,
                        if watchdog_dev::is_absent(&e) {
                            ""
                        } else {
                            " (unexpected)"
                        }
                    ))
                }
            }
        }
        let msg = last_err.unwrap_or_else(|| "no device configured".into());
        if self.open_error.as_deref() != Some(msg.as_str()) {
            log::warn!(
                "watchdog device not available yet ({}); retrying every {}",
                msg,
                secs(device::OPEN_RETRY)
            );
            self.open_error = Some(msg);
        }
        In::OpenFailed(kind)
    }

    fn read_boot_status(&mut self, dev: &WatchdogDev) {
        let p = dev.path().display();
        match dev.get_bootstatus() {
            Ok(bits) => {
                self.boot_status = Some(bits);
                if bits & WDIOF_CARDRESET != 0 {
                    log::warn!(
                        "{}: boot status {}: the last reset was the watchdog",
                        p,
                        watchdog_dev::describe_flags(bits)
                    );
                } else {
                    log::info!("{}: boot status {}", p, watchdog_dev::describe_flags(bits));
                }
            }
            Err(e) => log::info!("{}: WDIOC_GETBOOTSTATUS failed: {}", p, e),
        }
    }

    /// `WDIOC_SETTIMEOUT` and read back.
    fn configure(&mut self, want: u32) -> In {
        let Some(dev) = &self.dev else {
            return In::Configured { armed_secs: None };
        };
        let p = dev.path().display();
        let mut armed = None;
        match dev.set_timeout(want) {
            Ok(applied) => armed = Some(applied),
            Err(e) => log::warn!("{}: WDIOC_SETTIMEOUT {}s failed: {}", p, want, e),
        }
        match dev.get_timeout() {
            Ok(t) => armed = Some(t),
            Err(e) => log::warn!("{}: WDIOC_GETTIMEOUT failed: {}", p, e),
        }
        match armed {
            Some(a) if a != want => {
                log::warn!("{}: hardware timeout is {}s (asked {}s)", p, a, want)
            }
            Some(a) => log::info!("{}: hardware timeout {}s", p, a),
            None => {}
        }
        In::Configured { armed_secs: armed }
    }

    fn drain(&mut self, i: usize, credit: MonoTime) {
        let slot = &mut self.slots[i];
        let Some(r) = &mut slot.reader else { return };
        match r.drain(credit) {
            Ok(d) => {
                if d.bytes > 0 && self.unusable.is_none() {
                    self.core.found(&slot.name, credit);
                }
                for b in d.new_unknown {
                    log::warn!(
                        "unknown heartbeat byte {:#04x} from {} (ignored, counted as a beat)",
                        b,
                        slot.name
                    );
                }
                for req in d.requests {
                    log::warn!(
                        "request {:?} from {} ignored: watchdogd takes no requests",
                        req,
                        slot.name
                    );
                }
                if d.eof {
                    log::error!(
                        "heartbeat pipe of {} closed (no writer left): it will go stale",
                        slot.name
                    );
                    slot.reader = None;
                }
            }
            Err(e) => {
                log::error!(
                    "reading the heartbeat pipe of {} failed: {}; it will go stale",
                    slot.name,
                    e
                );
                slot.reader = None;
            }
        }
    }

    fn next_deadline(&self, now: MonoTime) -> MonoTime {
        let core = self.core.next_deadline(now, self.to_init.is_some());
        core.map_or(self.next_liveness, |d| d.min(self.next_liveness))
    }

    /// Once per beat interval: the status the restarter's metrics read.
    fn publish_status(&self, _now: MonoTime) {
        let Some(p) = &self.publisher else { return };
        let ms = |t: MonoTime| u64::try_from(t.as_duration().as_millis()).unwrap_or(u64::MAX);
        let now = MonoTime::now();
        let (device, timeout_s) = self.core.device.state().word();
        let layers = self
            .core
            .gate
            .names()
            .map(|n| {
                let beat = if self.core.gate.has_beaten(n) {
                    self.core.gate.silence(n, now).map(|s| {
                        ms(now).saturating_sub(u64::try_from(s.as_millis()).unwrap_or(u64::MAX))
                    })
                } else {
                    None
                };
                (n.to_string(), beat)
            })
            .collect();
        p.snapshot(tether_common::record::WatchdogStatus {
            written_ms: ms(now),
            petting: self.core.gate.is_petting(),
            device: device.into(),
            timeout_s,
            last_pet_ms: self.last_pet.map(ms),
            boot_status: self.boot_status,
            boot: None,
            prev_cause: None,
            prev_layer: None,
            layers,
        });
    }

    fn log_liveness(&self, now: MonoTime) {
        let layers = self
            .core
            .gate
            .summary(now, self.config.timing.beat_interval);
        let dev = match self.core.device.state() {
            device::State::Open {
                armed_secs,
                simulated: true,
                ..
            } => format!("watchdog simulated {}s", armed_secs),
            device::State::Open { armed_secs, .. } => format!("watchdog armed {}s", armed_secs),
            device::State::Absent { since, .. } => format!(
                "watchdog device absent for {}",
                secs(now.saturating_since(*since))
            ),
            device::State::Disarmed => "watchdog disarmed".into(),
        };
        let pet = match self.last_pet {
            Some(t) => format!("last pet {} ago", secs(now.saturating_since(t))),
            None => "no pet yet".into(),
        };
        let stopped = if self.core.gate.is_petting() {
            ""
        } else {
            ", NOT PETTING"
        };
        let (device, timeout) = self.core.device.state().word();
        let last_pet_ms = self
            .last_pet
            .map(|t| u64::try_from(now.saturating_since(t).as_millis()).unwrap_or(u64::MAX));
        log::info!(
            target: "liveness",
            layer = "watchdog",
            state = if self.core.gate.is_petting() { "ok" } else { "stopped" },
            layers = layers.as_str(),
            device = device,
            timeout_s = timeout.map_or(String::new(), |t| t.to_string()).as_str(),
            last_pet_ms = last_pet_ms.map_or(String::new(), |t| t.to_string()).as_str();
            "liveness: {}, {}, {}{}", layers, dev, pet, stopped
        );
    }

    /// Handles pending signals; `Some(code)` to exit.
    fn on_signals(&mut self, now: MonoTime) -> Option<i32> {
        loop {
            let info = match self.signals.read_signal() {
                Ok(Some(i)) => i,
                Ok(None) => return None,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("reading the signalfd failed: {}", e);
                    return None;
                }
            };
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGTERM | Signal::SIGINT => {
                    log::info!(
                        "{}: exiting without disarming; the device stays armed",
                        sig.as_str()
                    );
                    return Some(0);
                }
                Signal::SIGUSR1 => self.pending.push(In::Disarm {
                    allowed: self.config.watchdog.allow_disarm,
                }),
                Signal::SIGHUP => self.reload(now),
                _ => {}
            }
        }
    }

    fn reload(&mut self, now: MonoTime) {
        let new = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                log::error!("SIGHUP: reload failed, keeping the running settings: {}", e);
                return;
            }
        };
        // Checked against the running chain: init never reloads its
        // timings, so the file's own hang_timeout etc. are not what runs.
        if let Err(e) = self.chain.check(&new) {
            log::error!(
                "SIGHUP: reload refused against the running chain ({}), keeping the running settings: {}",
                self.chain.describe(),
                e
            );
            return;
        }
        logging::set_settings(&new.log);
        if self.unusable.is_none() {
            let names: Vec<String> = self.core.gate.names().map(String::from).collect();
            for n in &names {
                self.core
                    .gate
                    .set_stale_timeout(n, new.timing.stale_timeout_for(n));
            }
        }
        if self.args.device.is_none() && new.watchdog.device != self.config.watchdog.device {
            log::warn!("SIGHUP: [watchdog] device changed: takes effect at the next start");
        }
        if self.args.state_dir.is_none() && new.paths.state != self.config.paths.state {
            log::warn!("SIGHUP: [paths] state changed: takes effect at the next start");
        }
        let keep_device = self.config.watchdog.device.clone();
        let keep_state = self.config.paths.state.clone();
        self.config = new;
        self.config.watchdog.device = keep_device;
        self.config.paths.state = keep_state;
        self.next_liveness = now + self.config.timing.liveness_interval;
        log::info!(
            "SIGHUP: configuration reloaded from {}",
            self.config_path.display()
        );
        // The device core decides, in the next turn under its decision,
        // whether the new hardware timeout may be programmed now (it pings)
        // or waits for petting to resume.
        self.pending.push(In::Reload {
            hardware_secs: hardware_secs(&self.config),
            beat_interval: self.config.timing.beat_interval,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(OsString::from))
    }

    #[test]
    fn flags_parse_in_both_forms() {
        let a = args(&[
            "--config",
            "/x.toml",
            "--device=/dev/w",
            "--state-dir",
            "/s",
        ])
        .unwrap();
        assert_eq!(a.config, Some(PathBuf::from("/x.toml")));
        assert_eq!(a.device, Some(PathBuf::from("/dev/w")));
        assert_eq!(a.state_dir, Some(PathBuf::from("/s")));
        assert_eq!(args(&[]).unwrap(), Args::default());
    }

    #[test]
    fn no_layers_is_a_flag_without_a_value() {
        let a = args(&["--no-layers", "--config", "/x.toml"]).unwrap();
        assert!(a.no_layers);
        assert_eq!(a.config, Some(PathBuf::from("/x.toml")));
        assert!(!args(&[]).unwrap().no_layers);
    }

    /// Issue 11, item 6: set but unusable is an error (no petting), never
    /// an empty list; only an unset variable means "run by hand".
    #[test]
    fn an_unusable_heartbeat_list_is_an_error_never_an_empty_list() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(heartbeat_list(None), Ok(None));
        let l = heartbeat_list(Some(OsStr::new("init=3,restarter=4")))
            .unwrap()
            .unwrap();
        assert_eq!(l.get("restarter"), Some(4));
        for (raw, why) in [
            (&b""[..], "names no layer"),
            (&b"init=3,\xff=4"[..], "not UTF-8"),
            (&b"init"[..], "malformed"),
            (&b"init=3,init=4"[..], "malformed"),
        ] {
            let e = heartbeat_list(Some(OsStr::from_bytes(raw))).unwrap_err();
            assert!(e.contains(why) && e.contains("TETHER_HEARTBEATS"), "{e}");
        }
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(args(&["--config"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--bogus"]).unwrap_err().contains("unknown argument"));
        assert!(args(&["--device="]).unwrap_err().contains("non-empty"));
        assert_eq!(args(&["--help"]).unwrap_err(), "");
    }

    #[test]
    fn periodic_tasks_keep_their_phase_but_never_burst() {
        let t = |ms| MonoTime::from_duration(Duration::from_millis(ms));
        let p = Duration::from_millis(100);
        assert_eq!(advance(t(1000), p, t(1003)), t(1100));
        assert_eq!(advance(t(1000), p, t(1250)), t(1350));
    }
}
