//! tether-watchdogd: pets the hardware watchdog only while every layer of the
//! chain beats (DESIGN.md "watchdogd", docs/PROTOCOL.md).
//!
//! `tether-watchdogd [--config FILE] [--device PATH] [--state-dir DIR]`
//! (flags override the file; the config defaults to
//! `/etc/tether/tether.toml`). Read ends to watch come in
//! `TETHER_HEARTBEATS=init=3,restarter=4`; its own supervision pipe to init
//! in `TETHER_FDS=init=5` (absent when run by hand).
//!
//! The shell here is one thread and one `poll(2)` loop over the heartbeat
//! read ends and a signalfd, with the timeout computed from the next
//! deadline; the decisions are in `gate` (pure) and the records in `record`.
//!
//! Decisions where DESIGN.md is silent:
//! - Pets go once per `min(beat_interval, hardware_timeout / 4)` (the
//!   hardware value as applied by the driver), by `WDIOC_KEEPALIVE` or, on a
//!   simulated device, a one-byte write. The beat to init uses the same
//!   cadence when the two are equal, so they share a wake-up.
//! - The device is retried every 250 ms while absent (`ENOENT`, `ENXIO`,
//!   `ENODEV`, `EBUSY`), logged once; heartbeats are drained and init gets
//!   its beats meanwhile. A failed pet of a vanished device (`EPIPE`,
//!   `ENODEV`, `EBADF`, `ENXIO`) closes it (without `V`) and retries the open.
//! - A bad `tether.toml` means running on `Config::default()` (then the
//!   `--device`/`--state-dir` flags), logged at ERROR; never unprotected.
//! - A malformed `TETHER_HEARTBEATS`, or a listed descriptor that cannot be
//!   taken, registers the layer without a pipe: it goes stale after its
//!   timeout and petting stops (with the ALERT), rather than petting without
//!   knowing who is alive. With no `TETHER_HEARTBEATS` at all (run by hand)
//!   no layer is watched and petting is unconditional, logged as a warning.
//! - When a layer recovers after petting stopped, the record goes back to
//!   `cause=unknown`, so a later unrelated reset is not blamed on it.
//! - State directory failures never stop petting: logged at ERROR once,
//!   retried every 2 s, and the recovery is logged.
//! - SIGHUP re-reads the config: timings, stale timeouts, hardware timeout,
//!   `allow_disarm` and log targets apply at once; a device or state
//!   directory change needs a restart (logged). A bad file keeps the running
//!   settings.

#![forbid(unsafe_code)] // `unsafe` lives only in tether_common::sys
mod gate;

use gate::{secs, Decision, Gate};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;
use tether_common::clock::MonoTime;
use tether_common::config::{Config, DEFAULT_CONFIG};
use tether_common::fdlist::{FdList, ENV_FDS, ENV_HEARTBEATS};
use tether_common::heartbeat::{Code, Reader, Writer};
use tether_common::record::{self, ResetRecord};
use tether_common::watchdog_dev::{self, WatchdogDev, WDIOF_CARDRESET};
use tether_common::{alert, logging, sys};

const TAG: &str = "tether-watchdogd";
const DEVICE_RETRY: Duration = Duration::from_millis(250);
const RECORD_RETRY: Duration = Duration::from_secs(2);
const DEFAULT_DEVICES: [&str; 2] = ["/dev/watchdog0", "/dev/watchdog"];
const USAGE: &str = "usage: tether-watchdogd [--config FILE] [--device PATH] [--state-dir DIR]";

#[derive(Debug, Default, PartialEq)]
struct Args {
    config: Option<PathBuf>,
    device: Option<PathBuf>,
    state_dir: Option<PathBuf>,
}

fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
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
    /// TETHER_HEARTBEATS was absent: run by hand.
    by_hand: bool,
    messages: Vec<String>,
}

fn take_inherited(now: MonoTime) -> Inputs {
    let mut inputs = Inputs {
        layers: Vec::new(),
        to_init: None,
        by_hand: false,
        messages: Vec::new(),
    };
    match std::env::var(ENV_HEARTBEATS) {
        Err(_) => inputs.by_hand = true,
        Ok(v) => match FdList::parse(&v) {
            Err(e) => {
                inputs.messages.push(format!(
                    "{} is malformed ({}): watching a layer `heartbeats` that never beats, so petting will stop",
                    ENV_HEARTBEATS, e
                ));
                inputs.layers.push(("heartbeats".to_string(), None));
            }
            Ok(list) => {
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
        },
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

/// The device: being waited for, or open.
enum Device {
    Absent {
        next_try: MonoTime,
        since: MonoTime,
        logged: Option<String>,
    },
    Open {
        dev: WatchdogDev,
        armed_secs: u32,
    },
}

/// A heartbeat read end and its state.
struct Slot {
    name: String,
    reader: Option<Reader>,
}

/// Records waiting to be written, and the retry state.
struct Records {
    dir: PathBuf,
    boot: Option<u64>,
    bump_pending: bool,
    reason_pending: Option<ResetRecord>,
    next_retry: Option<MonoTime>,
    failing: bool,
}

impl Records {
    /// Writes whatever is pending; on failure logs once and schedules a retry.
    fn flush(&mut self, now: MonoTime) {
        let mut err = None;
        if self.bump_pending {
            match record::bump_boot_count(&self.dir) {
                Ok(n) => {
                    self.boot = Some(n);
                    self.bump_pending = false;
                    if let Some(r) = &mut self.reason_pending {
                        r.boot = Some(n);
                    }
                }
                Err(e) => err = Some(e),
            }
        }
        if err.is_none() {
            if let Some(r) = &self.reason_pending {
                match record::write_reset_reason(&self.dir, r) {
                    Ok(()) => self.reason_pending = None,
                    Err(e) => err = Some(e),
                }
            }
        }
        match err {
            Some(e) => {
                if !self.failing {
                    log::error!(
                        "cannot write records in the state directory: {}; petting continues, retrying every {}",
                        e,
                        secs(RECORD_RETRY)
                    );
                    self.failing = true;
                }
                self.next_retry = Some(now + RECORD_RETRY);
            }
            None => {
                if self.failing {
                    log::info!(
                        "state directory {} writable again: records written",
                        self.dir.display()
                    );
                    self.failing = false;
                }
                self.next_retry = None;
            }
        }
    }

    fn set_reason(&mut self, mut r: ResetRecord, now: MonoTime) {
        r.boot = self.boot;
        self.reason_pending = Some(r);
        self.flush(now);
    }
}

struct Daemon {
    config_path: PathBuf,
    args: Args,
    config: Config,
    gate: Gate,
    slots: Vec<Slot>,
    to_init: Option<Writer>,
    to_init_failed: bool,
    signals: SignalFd,
    device: Device,
    candidates: Vec<PathBuf>,
    pet_error: Option<String>,
    last_pet: Option<MonoTime>,
    next_pet: MonoTime,
    next_beat: MonoTime,
    next_liveness: MonoTime,
    records: Records,
    boot_status: Option<u32>,
}

#[derive(Debug)]
enum StartError {
    Signals(nix::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Signals(e) => write!(f, "cannot set up the signalfd: {}", e),
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
                "{} not set (run by hand?): no layer is watched, petting is unconditional",
                ENV_HEARTBEATS
            );
        }
        if inputs.to_init.is_none() && !inputs.by_hand {
            log::info!("no supervision pipe to init ({} has no init=N)", ENV_FDS);
        }
        let timing = &config.timing;
        let gate = Gate::new(
            inputs
                .layers
                .iter()
                .map(|(n, _)| (n.clone(), timing.stale_timeout_for(n))),
            now,
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
        let mut d = Daemon {
            config_path,
            records: Records {
                dir: state_dir,
                boot: None,
                bump_pending: true,
                reason_pending: None,
                next_retry: None,
                failing: false,
            },
            args,
            gate,
            slots,
            to_init: inputs.to_init,
            to_init_failed: false,
            signals,
            device: Device::Absent {
                next_try: now,
                since: now,
                logged: None,
            },
            candidates,
            pet_error: None,
            last_pet: None,
            next_pet: now,
            next_beat: now,
            next_liveness: now + config.timing.liveness_interval,
            boot_status: None,
            config,
        };
        log::info!(
            "starting: watching {}; beat {}, hardware timeout {}, state in {}",
            if d.gate.is_empty() {
                "no layer".to_string()
            } else {
                d.gate.names().collect::<Vec<_>>().join(", ")
            },
            tether_common::duration::format(d.config.timing.beat_interval),
            tether_common::duration::format(d.config.timing.hardware_timeout),
            d.records.dir.display()
        );
        // Try the device once now so the previous boot's line can carry its
        // boot status.
        d.try_open(now);
        d.log_previous_boot();
        d.records.set_reason(ResetRecord::unknown(None), now);
        Ok(d)
    }

    fn log_previous_boot(&self) {
        let prev = match record::read_reset_reason(&self.records.dir) {
            Ok(r) => record::describe_previous(r.as_ref()),
            Err(e) => format!("previous boot ended: unknown (record unreadable: {})", e),
        };
        match self.boot_status {
            Some(bits) if bits & WDIOF_CARDRESET != 0 => {
                log::warn!(
                    "{}; the device reports the last reset was the watchdog (CARDRESET)",
                    prev
                )
            }
            Some(bits) => log::info!(
                "{}; device boot status {}",
                prev,
                watchdog_dev::describe_flags(bits)
            ),
            None => log::info!("{}", prev),
        }
    }

    fn hardware_secs(&self) -> u32 {
        let t = self.config.timing.hardware_timeout;
        u32::try_from(t.as_secs()).unwrap_or(u32::MAX).max(1)
    }

    /// `min(beat_interval, armed timeout / 4)`, at least 10 ms.
    fn pet_interval(&self) -> Duration {
        let armed = match &self.device {
            Device::Open { armed_secs, .. } => *armed_secs,
            Device::Absent { .. } => self.hardware_secs(),
        };
        let quarter = Duration::from_secs(u64::from(armed.max(1))) / 4;
        self.config
            .timing
            .beat_interval
            .min(quarter)
            .max(Duration::from_millis(10))
    }

    fn try_open(&mut self, now: MonoTime) {
        let Device::Absent { since, logged, .. } = &self.device else {
            return;
        };
        let (since, logged) = (*since, logged.clone());
        let mut last_err = None;
        for path in &self.candidates {
            match WatchdogDev::open(path) {
                Ok(dev) => {
                    if logged.is_some() {
                        log::info!(
                            "{} appeared after {}",
                            path.display(),
                            secs(now.saturating_since(since))
                        );
                    }
                    self.configure(dev, now);
                    return;
                }
                Err(e) => {
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
        if logged.as_deref() != Some(msg.as_str()) {
            log::warn!(
                "watchdog device not available yet ({}); retrying every {}",
                msg,
                secs(DEVICE_RETRY)
            );
        }
        self.device = Device::Absent {
            next_try: now + DEVICE_RETRY,
            since,
            logged: Some(msg),
        };
    }

    fn configure(&mut self, dev: WatchdogDev, now: MonoTime) {
        let want = self.hardware_secs();
        let path = dev.path().display().to_string();
        let mut armed = want;
        if !dev.is_simulated() {
            match dev.get_support() {
                Ok(i) => log::info!(
                    "{}: {} (firmware {}), options {}",
                    path,
                    i.identity,
                    i.firmware_version,
                    watchdog_dev::describe_flags(i.options)
                ),
                Err(e) => log::warn!("{}: WDIOC_GETSUPPORT failed: {}", path, e),
            }
        }
        if dev.is_simulated() {
            log::info!(
                "{}: simulated watchdog (no ioctls): a write is a pet, nominal timeout {}s",
                path,
                want
            );
        } else {
            match dev.set_timeout(want) {
                Ok(applied) => armed = applied,
                Err(e) => log::warn!("{}: WDIOC_SETTIMEOUT {}s failed: {}", path, want, e),
            }
            match dev.get_timeout() {
                Ok(t) => armed = t,
                Err(e) => log::warn!("{}: WDIOC_GETTIMEOUT failed: {}", path, e),
            }
            if armed != want {
                log::warn!("{}: hardware timeout is {}s (asked {}s)", path, armed, want);
            } else {
                log::info!("{}: hardware timeout {}s", path, armed);
            }
            armed = armed.max(1);
            match dev.get_bootstatus() {
                Ok(bits) => {
                    self.boot_status = Some(bits);
                    if bits & WDIOF_CARDRESET != 0 {
                        log::warn!(
                            "{}: boot status {}: the last reset was the watchdog",
                            path,
                            watchdog_dev::describe_flags(bits)
                        );
                    } else {
                        log::info!(
                            "{}: boot status {}",
                            path,
                            watchdog_dev::describe_flags(bits)
                        );
                    }
                }
                Err(e) => log::info!("{}: WDIOC_GETBOOTSTATUS failed: {}", path, e),
            }
        }
        self.device = Device::Open {
            dev,
            armed_secs: armed,
        };
        self.pet_error = None;
        self.next_pet = now;
    }

    /// Pets if the device is open; handles a vanished device.
    fn pet(&mut self, now: MonoTime) {
        let Device::Open { dev, .. } = &self.device else {
            return;
        };
        match dev.keepalive() {
            Ok(()) => {
                self.last_pet = Some(now);
                if self.pet_error.take().is_some() {
                    log::info!("petting works again");
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if self.pet_error.as_deref() != Some(msg.as_str()) {
                    log::error!("pet of {} failed: {}", dev.path().display(), msg);
                    self.pet_error = Some(msg);
                }
                let gone = matches!(
                    e.raw_os_error(),
                    Some(libc::EPIPE) | Some(libc::ENODEV) | Some(libc::EBADF) | Some(libc::ENXIO)
                );
                if gone {
                    // Closing without V: a real device stays armed.
                    log::warn!("device gone: reopening");
                    self.device = Device::Absent {
                        next_try: now,
                        since: now,
                        logged: None,
                    };
                }
            }
        }
    }

    fn run(&mut self) -> i32 {
        loop {
            let now = MonoTime::now();
            self.on_timers(now);
            let mut deadline = self.next_deadline(now);
            // Our own lines syslog refused while busy, in order.
            if let Some(t) = tether_common::logging::flush_pending(now) {
                deadline = deadline.min(t);
            }
            let wait = deadline.saturating_since(now);
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
            let now = MonoTime::now();
            for (k, &slot) in index.iter().enumerate().skip(1) {
                if slot != usize::MAX && ready[k] {
                    self.drain(slot, now);
                }
            }
            if ready[0] {
                if let Some(code) = self.on_signals(now) {
                    return code;
                }
            }
        }
    }

    fn drain(&mut self, i: usize, now: MonoTime) {
        let slot = &mut self.slots[i];
        let Some(r) = &mut slot.reader else { return };
        match r.drain(now) {
            Ok(d) => {
                if d.bytes > 0 {
                    self.gate.beat(&slot.name, now);
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
        let mut t = self.next_liveness;
        let mut consider = |d: MonoTime| t = t.min(d);
        if self.to_init.is_some() {
            consider(self.next_beat);
        }
        match &self.device {
            Device::Absent { next_try, .. } => consider(*next_try),
            Device::Open { .. } if self.gate.is_petting() => consider(self.next_pet),
            Device::Open { .. } => {}
        }
        if self.gate.is_petting() {
            if let Some(d) = self.gate.next_deadline(now) {
                consider(d);
            }
        }
        if let Some(r) = self.records.next_retry {
            consider(r);
        }
        t
    }

    fn on_timers(&mut self, now: MonoTime) {
        if let Device::Absent { next_try, .. } = &self.device {
            if *next_try <= now {
                self.try_open(now);
            }
        }
        match self.gate.evaluate(now) {
            Decision::Pet | Decision::Withhold { .. } => {}
            Decision::Stop { layer, silent_for } => {
                // The record first: when the ALERT is seen, the reason is
                // already on disk.
                self.records
                    .set_reason(ResetRecord::watchdog(None, &layer, silent_for), now);
                let timeout = self.config.timing.stale_timeout_for(&layer);
                alert!(
                    "layer {} silent for {} (stale_timeout {}): STOPPING petting the watchdog; hardware reset in {} unless it recovers",
                    layer,
                    secs(silent_for),
                    tether_common::duration::format(timeout),
                    match &self.device {
                        Device::Open { armed_secs, .. } => format!("{}s", armed_secs),
                        Device::Absent { .. } => "its timeout".into(),
                    }
                );
            }
            Decision::Resume { layer, stopped_for } => {
                log::warn!(
                    "layer {} is beating again: resuming petting after {} without",
                    layer,
                    secs(stopped_for)
                );
                self.records.set_reason(ResetRecord::unknown(None), now);
                self.next_pet = now;
            }
        }
        if self.gate.is_petting() && self.next_pet <= now {
            if let Device::Open { .. } = self.device {
                self.pet(now);
            }
            self.next_pet = advance(self.next_pet, self.pet_interval(), now);
        }
        if self.next_beat <= now {
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
            self.next_beat = advance(self.next_beat, self.config.timing.beat_interval, now);
        }
        if self.next_liveness <= now {
            self.log_liveness(now);
            self.next_liveness = advance(
                self.next_liveness,
                self.config.timing.liveness_interval,
                now,
            );
        }
        if self.records.next_retry.is_some_and(|t| t <= now) {
            self.records.flush(now);
        }
    }

    fn log_liveness(&self, now: MonoTime) {
        let layers = self.gate.summary(now, self.config.timing.beat_interval);
        let device = match &self.device {
            Device::Open { dev, armed_secs } if dev.is_simulated() => {
                format!("watchdog simulated {}s", armed_secs)
            }
            Device::Open { armed_secs, .. } => format!("watchdog armed {}s", armed_secs),
            Device::Absent { since, .. } => format!(
                "watchdog device absent for {}",
                secs(now.saturating_since(*since))
            ),
        };
        let pet = match self.last_pet {
            Some(t) => format!("last pet {} ago", secs(now.saturating_since(t))),
            None => "no pet yet".into(),
        };
        let stopped = if self.gate.is_petting() {
            ""
        } else {
            ", NOT PETTING"
        };
        log::info!("liveness: {}, {}, {}{}", layers, device, pet, stopped);
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
                Signal::SIGUSR1 => {
                    if let Some(code) = self.disarm() {
                        return Some(code);
                    }
                }
                Signal::SIGHUP => self.reload(now),
                _ => {}
            }
        }
    }

    fn disarm(&mut self) -> Option<i32> {
        if !self.config.watchdog.allow_disarm {
            log::warn!(
                "SIGUSR1: disarming refused ([watchdog] allow_disarm is false); still petting"
            );
            return None;
        }
        let device = std::mem::replace(
            &mut self.device,
            Device::Absent {
                next_try: MonoTime::now(),
                since: MonoTime::now(),
                logged: None,
            },
        );
        match device {
            Device::Open { dev, .. } => {
                let path = dev.path().display().to_string();
                match dev.magic_close() {
                    Ok(()) => {
                        log::warn!("SIGUSR1: {} disarmed (magic close); exiting", path);
                        Some(0)
                    }
                    Err(e) => {
                        log::error!("SIGUSR1: magic close of {} failed: {}; exiting, the device may stay armed", path, e);
                        Some(1)
                    }
                }
            }
            Device::Absent { .. } => {
                log::warn!("SIGUSR1: no device open, nothing to disarm; exiting");
                Some(0)
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
        logging::set_settings(&new.log);
        let names: Vec<String> = self.gate.names().map(String::from).collect();
        for n in &names {
            self.gate
                .set_stale_timeout(n, new.timing.stale_timeout_for(n));
        }
        if self.args.device.is_none() && new.watchdog.device != self.config.watchdog.device {
            log::warn!("SIGHUP: [watchdog] device changed: takes effect at the next start");
        }
        if self.args.state_dir.is_none() && new.paths.state != self.config.paths.state {
            log::warn!("SIGHUP: [paths] state changed: takes effect at the next start");
        }
        let hw_changed = new.timing.hardware_timeout != self.config.timing.hardware_timeout;
        let keep_device = self.config.watchdog.device.clone();
        let keep_state = self.config.paths.state.clone();
        self.config = new;
        self.config.watchdog.device = keep_device;
        self.config.paths.state = keep_state;
        if hw_changed {
            if let Device::Open { dev, armed_secs } = &mut self.device {
                if !dev.is_simulated() {
                    let want = u32::try_from(self.config.timing.hardware_timeout.as_secs())
                        .unwrap_or(u32::MAX)
                        .max(1);
                    match dev.set_timeout(want).and_then(|_| dev.get_timeout()) {
                        Ok(t) => {
                            *armed_secs = t.max(1);
                            log::info!("hardware timeout now {}s (asked {}s)", t, want);
                        }
                        Err(e) => log::error!("SIGHUP: setting the hardware timeout failed: {}", e),
                    }
                }
            }
        }
        self.next_pet = now;
        self.next_liveness = now + self.config.timing.liveness_interval;
        log::info!(
            "SIGHUP: configuration reloaded from {}",
            self.config_path.display()
        );
    }
}

/// The next time a periodic task is due: one period after the last due time,
/// or one period from now when behind (no bursts to catch up).
fn advance(due: MonoTime, period: Duration, now: MonoTime) -> MonoTime {
    let next = due + period;
    if next <= now {
        now + period
    } else {
        next
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
