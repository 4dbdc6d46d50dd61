//! `tether-init`: PID 1 that holds the chain together.
//!
//! One thread, one loop: `poll` over a signalfd (SIGCHLD, SIGTERM, SIGINT,
//! SIGUSR1, SIGUSR2, SIGHUP, all blocked) and the two supervision pipes
//! (watchdogd→init, restarter→init), with a timeout from the next deadline
//! (beat to watchdogd, liveness line, restart and hang timers, shutdown
//! phases). No sleep in the loop. Every zombie is reaped with
//! `waitpid(-1, WNOHANG)`, orphans included.
//!
//! The decisions live in pure modules: `layers` (supervision of watchdogd and
//! the restarter), `shutdown` (the orderly sequence), `upgrade` (the resume
//! state and the steps of an upgrade), `exit_relay` (relay losses). This file turns
//! descriptors, signals and time into their events and carries out their
//! actions. `mounts` and `console` prepare the machine, `record` writes the
//! reset reason, `effective` the configuration handed to the children.
//!
//! For the restarter init also keeps, for its whole life, the fd store (a
//! SOCK_SEQPACKET pair it never reads, restarter fds 5 and 6) and the exit
//! relay (a pipe, restarter fd 7, into which it writes `(pid, wait status)`
//! of every non-layer child it reaps, never blocking; `exit_relay` counts
//! the losses). On heartbeat code `U` it re-executes itself in place,
//! keeping layers, pipes, store, relay and budget (`upgrade`); on `W` it
//! SIGKILLs watchdogd, which is then restarted as after any exit
//! (docs/ADOPTION.md). Beats are credited through `heartbeat::Watch`, so a
//! stall of this loop never makes a silent layer look fresh.
//!
//! Signals: SIGTERM and SIGINT (ctrl-alt-del, routed there by
//! `reboot(RB_DISABLE_CAD)` on the machine) reboot, SIGUSR1 powers off,
//! SIGUSR2 halts, SIGHUP is forwarded to the restarter (reload).
//!
//! As PID 1 it never exits and never panics: clippy denies unwrap, expect,
//! panic and indexing here; every failed system call is logged and retried
//! later; a panic that unwinds anyway (the release profile unwinds too, for
//! this) is caught and the loop entered again, with its beats to watchdogd
//! withheld until a pass completes and stopped for good after repeated
//! panics (`recovery.rs`). No sleep after a panic either: the loop is
//! re-entered on its next event or after `recovery::PANIC_BACKOFF`. No
//! memory growth after start-up: fixed-capacity tables, bounded reads.
#![forbid(unsafe_code)] // `unsafe` lives only in tether_common::sys
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod args;
mod beat;
mod console;
mod effective;
mod exit_relay;
mod layers;
mod limits;
mod mounts;
mod recovery;
mod shutdown;
mod upgrade;

#[cfg(feature = "fault-inject")]
mod fault;
/// Without the test-only `fault-inject` feature, injection points are no-ops.
#[cfg(not(feature = "fault-inject"))]
mod fault {
    #[inline(always)]
    pub fn at(_point: &str) {}
}

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use log::{debug, error, info, warn};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use tether_common::clock::MonoTime;
use tether_common::config::Config;
use tether_common::fdlist::{FdList, ENV_FDS, ENV_HEARTBEATS};
use tether_common::heartbeat::{self, Code, Reader, Watch, Writer};

use crate::beat::Beat;
use crate::exit_relay::Losses;
use crate::layers::{Action, Actions, Event, Exit, Human, Layer, Layers};
use crate::mounts::Role;
use crate::recovery::{Recovery, Verdict};
use crate::shutdown::Cause;
use crate::shutdown::{Sequence, Step, Steps};
use crate::upgrade::{Fds, Refusal, Resume, Upgrade};
use tether_common::record;
use tether_common::relay;

/// The restarter's reason for an `R`/`P`/`H` request, in the run directory.
const SHUTDOWN_REQUEST: &str = "shutdown-request";
/// Longest reason read from it.
const MAX_REQUEST_REASON: u64 = 4096;
/// Signals init takes through its signalfd.
const SIGNALS: [Signal; 6] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGHUP,
];
/// watchdogd's environment: the timings init runs on, so that a reload of
/// watchdogd's own file can be checked against the running chain (issue 11
/// item 7): `hang_timeout_ms=N,restart_delay_ms=N,startup_grace_ms=N,beat_interval_ms=N`.
pub const ENV_CHAIN_TIMING: &str = "TETHER_CHAIN_TIMING";
/// `PATH` given to the children when init has none (the kernel gives none).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Set-up retry backoff cap.
const SETUP_BACKOFF_CAP: Duration = Duration::from_secs(10);
/// The exit relay's capacity: `F_SETPIPE_SZ` to this, or to
/// `fs.pipe-max-size` if that is lower (131072 records at 1 MiB).
const RELAY_PIPE_SIZE: usize = 1 << 20;
/// Longest poll timeout (a periodic wake-up costs nothing and bounds the
/// effect of any bookkeeping mistake).
const MAX_POLL: Duration = Duration::from_secs(60);

/// Everything the loop owns.
struct Init {
    role: Role,
    config: Config,
    /// What the children get as `--config`.
    child_config: PathBuf,
    bin_dir: PathBuf,
    signals: SignalFd,
    /// init → watchdogd: init's beats (write end) and the end watchdogd
    /// reads (fd 3 in watchdogd).
    beat_out: Writer,
    init_wd_read: OwnedFd,
    /// restarter → watchdogd: fd 4 in both.
    rst_wd_read: OwnedFd,
    rst_wd_write: OwnedFd,
    /// restarter → init: fd 3 in the restarter.
    rst_in: Reader,
    rst_init_write: OwnedFd,
    /// watchdogd → init: fd 5 in watchdogd.
    wd_in: Reader,
    wd_init_write: OwnedFd,
    /// The fd store (docs/ADOPTION.md): one SOCK_SEQPACKET socket pair,
    /// fds 5 (`store_send`) and 6 (`store_recv`) in the restarter. init
    /// keeps both ends for life and never reads or writes either: what the
    /// restarter sends stays queued in the kernel, referenced by these.
    store_send: OwnedFd,
    store_recv: OwnedFd,
    /// The exit relay: init writes one record per non-layer child it
    /// reaps into `relay_write`; `relay_read` is fd 7 in the restarter.
    relay_read: OwnedFd,
    relay_write: OwnedFd,
    relay_losses: Losses,
    /// `tetherctl upgrade init` (`upgrade.rs`).
    upgrade: Upgrade,
    /// Upgrades done since boot.
    upgrades: u32,
    /// The binary an upgrade execs: `[paths] bin`'s `tether-init`, or
    /// `/proc/self/exe` as resolved at start.
    self_exe: PathBuf,
    layers: Layers,
    /// When bytes found in the layers' pipes were written at the latest
    /// (`heartbeat::Watch`): a stalled loop never makes a silent layer look
    /// fresh.
    watch: Watch,
    shutdown: Option<Sequence>,
    shutdown_params: shutdown::Params,
    /// When the next beat to watchdogd is due (`beat.rs`).
    beats: Beat,
    next_liveness: MonoTime,
    /// Panics caught, and whether beats may go out (`recovery.rs`).
    recovery: Recovery,
    /// Logged once each: a beat write error, a pipe EOF, a reap error.
    said_beat_error: bool,
    said_eof: [bool; 2],
}

/// The signals init takes, as a set.
fn signal_mask() -> SigSet {
    let mut mask = SigSet::empty();
    for s in SIGNALS {
        mask.add(s);
    }
    mask
}

fn main() {
    // The check an upgrading init runs on its successor; never as PID 1
    // (which must not exit, whatever the kernel passes it).
    if std::process::id() != 1
        && std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(upgrade::CHECK_FLAG))
    {
        std::process::exit(upgrade_check());
    }
    // First of all: from here on a SIGTERM waits in the queue for the
    // signalfd instead of killing init (from outside a namespace, or before
    // the kernel's PID-1 protection applies).
    let blocked = signal_mask().thread_block();
    let args = args::parse(std::env::args_os().skip(1));
    let pid = std::process::id() as i32;
    if pid != 1 {
        if args.help {
            println!("{}", args::USAGE);
            std::process::exit(0);
        }
        if !args.rejected.is_empty() {
            for r in &args.rejected {
                eprintln!("tether-init: {}", r);
            }
            eprintln!("{}", args::USAGE);
            std::process::exit(2);
        }
    }
    let (role, mount_lines) = mounts::prepare(args.mount);
    let console_lines = console::ensure_std_fds(role == Role::Machine);
    let cloexec = tether_common::sys::cloexec_from(3);

    let (mut config, config_error) = Config::load_or_default(&args.config);
    args.overrides.apply(&mut config);
    tether_common::logging::init("tether-init", &config.log);
    info!(
        target: "start",
        layer = "init",
        version = env!("CARGO_PKG_VERSION");
        "tether-init {} starting as {}",
        env!("CARGO_PKG_VERSION"),
        role.describe()
    );
    match &config_error {
        Some(tether_common::config::ConfigError::Io { source, .. })
            if source.kind() == io::ErrorKind::NotFound =>
        {
            warn!("no {}: running on built-in defaults", args.config.display())
        }
        Some(e) => error!(
            "BAD CONFIGURATION, running on built-in defaults: {} (fix {} and restart the chain)",
            e,
            args.config.display()
        ),
        None => info!("configuration {}", args.config.display()),
    }
    if let Err(e) = blocked {
        error!(
            "could not block signals at start: {} (retried at set-up)",
            e
        );
    }
    if args.overrides.any() {
        info!("command-line overrides in force: {:?}", args.overrides);
    }
    for r in &args.rejected {
        warn!("ignoring argument {}", r);
    }
    for l in mount_lines.iter().chain(console_lines.iter()) {
        info!("{}", l);
    }
    if let Err(e) = cloexec {
        error!("could not mark inherited descriptors close-on-exec: {}", e);
    }
    match role {
        Role::Machine => {
            if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
                error!(
                    "reboot(RB_DISABLE_CAD) failed, ctrl-alt-del will reboot at once: {}",
                    e
                );
            }
        }
        Role::NotPid1 => {
            if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                error!(
                    "could not become a child subreaper, orphans will not be reaped here: {}",
                    e
                );
            }
        }
        Role::Namespace => {}
    }

    let child_config = if config_error.is_some() || args.overrides.any() {
        match effective::write(&config) {
            Ok(p) => {
                info!("children get {} (the settings init runs on)", p.display());
                p
            }
            Err(e) => {
                error!(
                    "could not write the effective configuration ({}): children get {} and may see other settings",
                    e,
                    args.config.display()
                );
                args.config.clone()
            }
        }
    } else {
        args.config.clone()
    };

    raise_nofile(&config);
    // A panic's message goes through the panic hook `logging::init`
    // installed (CRIT, `PANIC: ...`, never blocking on a console or on the
    // logger's own lock), not the default hook's blocking write to stderr.
    // After `tetherctl upgrade init`: the previous image's descriptors and
    // layers (`upgrade.rs`).
    let resume = take_resume();
    let mut init = setup(role, config, child_config, resume);
    loop {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init.run()));
        // `run` only comes back through a panic (every profile unwinds: no `panic = "abort"`).
        let _ = r;
        // Caught too: PID 1 must not die of a panic in its own recovery.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            init.after_panic(MonoTime::now())
        }));
    }
}

/// Raises `RLIMIT_NOFILE` for init and, by inheritance, its layers
/// (`limits.rs`), before anything is spawned.
fn raise_nofile(config: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let current = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(c) => c,
        Err(e) => {
            error!(
                "getrlimit(RLIMIT_NOFILE) failed, limit left as it is: {}",
                e
            );
            return;
        }
    };
    let nr_open_path = Path::new("/proc/sys/fs/nr_open");
    let nr_open = match record::read_text_bounded(nr_open_path, 64) {
        Ok(t) => limits::parse_nr_open(&t),
        Err(e) => {
            warn!("reading {}: {}", nr_open_path.display(), e);
            None
        }
    };
    if let (Some(c), Some(n)) = (config.init.nofile, nr_open) {
        if c > n {
            warn!("[init] nofile {} is above fs.nr_open {}: using {}", c, n, n);
        }
    }
    let source = match config.init.nofile {
        Some(_) => "[init] nofile",
        None => "fs.nr_open",
    };
    let root = nix::unistd::geteuid().is_root();
    let mut want = limits::target(config.init.nofile, nr_open, current, root);
    for attempt in 0..2 {
        let Some((soft, hard)) = want else {
            info!(
                "RLIMIT_NOFILE {}:{} kept (it meets {})",
                current.0, current.1, source
            );
            return;
        };
        match setrlimit(Resource::RLIMIT_NOFILE, soft, hard) {
            Ok(()) => {
                info!(
                    "RLIMIT_NOFILE raised from {}:{} to {}:{} ({}) for init and its layers",
                    current.0, current.1, soft, hard, source
                );
                return;
            }
            Err(e) if attempt == 0 && hard > current.1 => {
                warn!(
                    "setrlimit(RLIMIT_NOFILE, {}:{}) failed: {}; raising the soft limit only",
                    soft, hard, e
                );
                want = limits::target(config.init.nofile, nr_open, current, false);
            }
            Err(e) => {
                error!(
                    "setrlimit(RLIMIT_NOFILE, {}:{}) failed, limit left at {}:{}: {}",
                    soft, hard, current.0, current.1, e
                );
                return;
            }
        }
    }
}

/// Builds the loop's state, retrying with a backoff until it works: without
/// pipes and a signalfd there is nothing to supervise with.
fn setup(
    role: Role,
    config: Config,
    child_config: PathBuf,
    mut resume: Option<(Channels, Resume)>,
) -> Init {
    let mut backoff = Duration::from_millis(100);
    let mut resume_was_there = resume.is_some();
    loop {
        match Init::new(role, config.clone(), child_config.clone(), &mut resume) {
            Ok(i) => return i,
            Err(e) => {
                error!("set-up failed, retrying in {}: {}", Human(backoff), e);
                if resume_was_there && resume.is_none() {
                    // The previous image's descriptors are gone with the
                    // failed attempt: its layers must not run beside the
                    // ones the next attempt starts.
                    error!("UPGRADE FAILED: set-up lost the previous image's descriptors; killing its layers");
                    kill_previous_layers();
                    resume_was_there = false;
                }
                reap_all_blocking_free();
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(SETUP_BACKOFF_CAP);
            }
        }
    }
}

/// Reaps whatever is there, without blocking (used while set-up retries).
fn reap_all_blocking_free() {
    while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

fn bin_dir(config: &Config) -> PathBuf {
    if let Some(b) = &config.paths.bin {
        return b.clone();
    }
    match std::env::current_exe() {
        Ok(exe) => exe
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/sbin")),
        Err(e) => {
            let argv0 = std::env::args_os().next().map(PathBuf::from);
            let dir = argv0
                .as_deref()
                .and_then(Path::parent)
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/sbin"));
            error!(
                "cannot find my own executable ({}): looking for the layers in {}",
                e,
                dir.display()
            );
            dir
        }
    }
}

/// The descriptors init keeps for life: the four heartbeat pipes, the fd
/// store and the exit relay. Created at boot, or taken back from the
/// previous image after `tetherctl upgrade init`.
struct Channels {
    init_wd: (OwnedFd, OwnedFd),
    rst_wd: (OwnedFd, OwnedFd),
    rst_init: (OwnedFd, OwnedFd),
    wd_init: (OwnedFd, OwnedFd),
    store: (OwnedFd, OwnedFd),
    relay: (OwnedFd, OwnedFd),
}

impl Channels {
    fn create() -> io::Result<Channels> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let store = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let relay = heartbeat::pipe()?;
        size_relay(&relay.1);
        Ok(Channels {
            init_wd: heartbeat::pipe()?,
            rst_wd: heartbeat::pipe()?,
            rst_init: heartbeat::pipe()?,
            wd_init: heartbeat::pipe()?,
            store,
            relay,
        })
    }

    /// Takes back the descriptors a previous image named (each becomes
    /// close-on-exec again).
    fn inherit(fds: &Fds) -> io::Result<Channels> {
        let [a, b, c, d, e, f, g, h, i, j, k, l] = fds.0;
        let t = tether_common::sys::take_inherited_fd;
        Ok(Channels {
            init_wd: (t(a)?, t(b)?),
            rst_wd: (t(c)?, t(d)?),
            rst_init: (t(e)?, t(f)?),
            wd_init: (t(g)?, t(h)?),
            store: (t(i)?, t(j)?),
            relay: (t(k)?, t(l)?),
        })
    }
}

/// Raises the relay pipe's capacity to min(1 MiB, `fs.pipe-max-size`) and
/// logs what it got.
fn size_relay(write_end: &OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg};
    let path = Path::new("/proc/sys/fs/pipe-max-size");
    let max = match record::read_text_bounded(path, 64) {
        Ok(t) => t.trim().parse::<usize>().ok(),
        Err(e) => {
            warn!("reading {}: {}", path.display(), e);
            None
        }
    };
    let want = max.map_or(RELAY_PIPE_SIZE, |m| m.min(RELAY_PIPE_SIZE));
    let want = i32::try_from(want).unwrap_or(i32::MAX);
    if let Err(e) = fcntl(write_end, FcntlArg::F_SETPIPE_SZ(want)) {
        warn!(
            "exit relay: F_SETPIPE_SZ({}) failed, keeping the default size: {}",
            want, e
        );
    }
    match fcntl(write_end, FcntlArg::F_GETPIPE_SZ) {
        Ok(n) => info!(
            "exit relay: {} bytes ({} exit records) of pipe",
            n,
            usize::try_from(n).unwrap_or(0) / relay::RECORD_LEN
        ),
        Err(e) => warn!("exit relay: F_GETPIPE_SZ failed: {}", e),
    }
}

/// The previous image's resume state, taken from the environment: `None`
/// at a normal boot. A state that cannot be used is logged, and its layers
/// (init's children named like them) are killed so that the fresh set-up
/// never runs two of a layer.
fn take_resume() -> Option<(Channels, Resume)> {
    let raw = std::env::var_os(upgrade::ENV_RESUME)?;
    let resumed = raw
        .to_str()
        .ok_or_else(|| "not UTF-8".to_string())
        .and_then(|t| Resume::decode(t).map_err(|e| e.to_string()))
        .and_then(|r| {
            Channels::inherit(&r.fds)
                .map(|c| (c, r))
                .map_err(|e| format!("taking the inherited descriptors back: {}", e))
        });
    match resumed {
        Ok(r) => Some(r),
        Err(e) => {
            error!(
                "UPGRADE FAILED to resume the previous image's state ({}): starting afresh, killing its layers",
                e
            );
            kill_previous_layers();
            None
        }
    }
}

/// SIGKILLs this process's children whose name is a layer's (the previous
/// image's layers, when their state was lost). Start-up only: reads /proc.
fn kill_previous_layers() {
    let me = std::process::id();
    let path = format!("/proc/{}/task/{}/children", me, me);
    let list = record::read_text_bounded(Path::new(&path), 1 << 16).unwrap_or_default();
    for pid in list
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let comm = record::read_text_bounded(Path::new(&format!("/proc/{}/comm", pid)), 64)
            .unwrap_or_default();
        let comm = comm.trim();
        // comm is the name's first 15 bytes.
        let layer = Layer::ALL
            .into_iter()
            .any(|l| !comm.is_empty() && l.binary().starts_with(comm));
        if layer {
            warn!(
                "killing pid {} ({}), a layer of the previous image",
                pid, comm
            );
            if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGKILL) {
                error!("SIGKILL to pid {}: {}", pid, e);
            }
        }
    }
}

/// `tether-init --upgrade-check`: run by the init about to exec this
/// binary; decodes the resume state it would hand over. 0: it can.
fn upgrade_check() -> i32 {
    use std::io::Write;
    let raw = std::env::var_os(upgrade::ENV_RESUME).unwrap_or_default();
    let verdict = match raw.to_str() {
        None => Err(format!("{} is not UTF-8", upgrade::ENV_RESUME)),
        Some(text) => Resume::decode(text).map(|_| ()).map_err(|e| e.to_string()),
    };
    match verdict {
        Ok(()) => 0,
        Err(e) => {
            // To init's stderr (the console); a failed write changes nothing.
            let _ = writeln!(
                std::io::stderr(),
                "tether-init {} {}: {}",
                env!("CARGO_PKG_VERSION"),
                upgrade::CHECK_FLAG,
                e
            );
            3
        }
    }
}

/// The binary `tetherctl upgrade init` execs.
fn self_exe(config: &Config) -> PathBuf {
    if let Some(b) = &config.paths.bin {
        return b.join("tether-init");
    }
    match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            let argv0 = std::env::args_os()
                .next()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/sbin/tether-init"));
            warn!(
                "cannot resolve /proc/self/exe ({}): an upgrade will exec {}",
                e,
                argv0.display()
            );
            argv0
        }
    }
}

impl Init {
    fn new(
        role: Role,
        config: Config,
        child_config: PathBuf,
        resume: &mut Option<(Channels, Resume)>,
    ) -> io::Result<Init> {
        let mask = signal_mask();
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        let now = MonoTime::now();
        let (channels, resume) = match resume.take() {
            Some((c, r)) => (c, Some(r)),
            None => (Channels::create()?, None),
        };
        let Channels {
            init_wd: (init_wd_read, init_wd_write),
            rst_wd: (rst_wd_read, rst_wd_write),
            rst_init: (rst_init_read, rst_init_write),
            wd_init: (wd_init_read, wd_init_write),
            store: (store_send, store_recv),
            relay: (relay_read, relay_write),
        } = channels;
        let t = &config.timing;
        let (params, lowered) = layers::Params {
            restart_delay: t.restart_delay,
            hang_timeout: t.hang_timeout,
            startup_grace: t.startup_grace,
            max_restarts: config.init.max_restarts,
            window: config.init.window,
        }
        .clamped();
        if lowered {
            warn!(
                "[init] max_restarts {} is more than init's table holds: using {}",
                config.init.max_restarts, params.max_restarts
            );
        }
        let shutdown_params = shutdown::Params {
            stop_timeout: config.init.stop_timeout,
            kill_grace: config.init.kill_grace,
        };
        let bin_dir = bin_dir(&config);
        let self_exe = self_exe(&config);
        let (layers, watch, relay_losses, upgrades) = match &resume {
            None => (Layers::new(params, now), Watch::new(now), Losses::new(0), 0),
            Some(r) => {
                let layers = Layers::resume(params, &r.watchdogd, &r.restarter, now);
                info!(
                    "resumed after upgrade {} of init: {}, {}; {} exit record(s) lost since boot",
                    r.upgrades,
                    layers.describe(Layer::Watchdogd, now),
                    layers.describe(Layer::Restarter, now),
                    r.relay_lost
                );
                (
                    layers,
                    // Bytes found in the pipes are credited no later than
                    // the old image last saw them empty.
                    Watch::new(r.seen.min(now)),
                    Losses::new(r.relay_lost),
                    r.upgrades,
                )
            }
        };
        info!(
            "layers from {}; beat {}, hang_timeout {}, restart_delay {}, startup_grace {}, budget {} restarts within {}",
            bin_dir.display(),
            Human(t.beat_interval),
            Human(t.hang_timeout),
            Human(t.restart_delay),
            Human(t.startup_grace),
            params.max_restarts,
            Human(params.window)
        );
        Ok(Init {
            role,
            child_config,
            bin_dir,
            signals,
            beat_out: Writer::new("init", init_wd_write)?,
            init_wd_read,
            rst_wd_read,
            rst_wd_write,
            rst_in: Reader::new(Layer::Restarter.name(), rst_init_read, now)?,
            rst_init_write,
            wd_in: Reader::new(Layer::Watchdogd.name(), wd_init_read, now)?,
            wd_init_write,
            store_send,
            store_recv,
            relay_read,
            relay_write,
            relay_losses,
            upgrade: Upgrade::new(),
            upgrades,
            self_exe,
            layers,
            watch,
            shutdown: None,
            shutdown_params,
            beats: Beat::new(now),
            next_liveness: now + config.timing.liveness_interval,
            recovery: Recovery::new(),
            said_beat_error: false,
            said_eof: [false; 2],
            config,
        })
    }

    /// The loop. Never returns.
    fn run(&mut self) {
        self.reconcile(MonoTime::now());
        loop {
            let now = MonoTime::now();
            self.on_time(now);
            let mut deadline = self.next_deadline();
            // Our own lines syslog refused while busy, in order.
            if let Some(t) = tether_common::logging::flush_pending(now) {
                deadline = deadline.min(t);
            }
            let timeout = deadline.saturating_since(MonoTime::now()).min(MAX_POLL);
            // Round up: waking a little late is harmless, early means a spin.
            let ms = timeout.as_micros().div_ceil(1000);
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            self.watch
                .waiting(MonoTime::now(), Duration::from_millis(ms as u64));
            let (sig_ready, wd_ready, rst_ready) = {
                let mut fds = [
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wd_in.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.rst_in.as_fd(), PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(_) => {
                        let ready = |f: &PollFd| f.any().unwrap_or(false);
                        let [s, w, r] = &fds;
                        (ready(s), ready(w), ready(r))
                    }
                    Err(Errno::EINTR) => (false, false, false),
                    Err(e) => {
                        error!("poll failed: {}", e);
                        // Do everything once rather than nothing.
                        (true, true, true)
                    }
                }
            };
            let woke = MonoTime::now();
            let credit = self.watch.credit(woke);
            if wd_ready {
                self.drain(woke, credit, Layer::Watchdogd);
            }
            if rst_ready {
                self.drain(woke, credit, Layer::Restarter);
            }
            self.watch.drained(woke);
            let now = woke;
            if sig_ready {
                self.read_signals(now);
            }
            fault::at("pass");
            self.recovery.pass_completed();
        }
    }

    /// On (re-)entering the loop: what a panic may have left half done. A
    /// SIGCHLD or pipe readiness already consumed, an exit not yet reaped, a
    /// start whose result was lost, an exhausted budget whose reboot was not
    /// asked for. At the first start there is nothing to find.
    fn reconcile(&mut self, now: MonoTime) {
        self.reap(now);
        // Whatever the loop was doing when it panicked, the pipes were
        // last seen empty at the watch's mark: credit no later than that
        // unless this turn was on time.
        let credit = self.watch.credit(now);
        self.drain(now, credit, Layer::Watchdogd);
        self.drain(now, credit, Layer::Restarter);
        self.watch.drained(now);
        for layer in self.layers.after_panic(now).into_iter().flatten() {
            warn!(
                "{}: its start was under way when the loop panicked; starting it again",
                layer
            );
        }
        if self.shutdown.is_none() {
            if let Some(reboot) = self.layers.unanswered_reboot() {
                warn!(
                    "the orderly reboot for an exhausted budget was lost in a panic: asking again"
                );
                self.apply(now, Actions::one(reboot), 0);
            }
        }
    }

    /// After a caught panic: the verdict on the beats, and the wait (no
    /// sleep) before re-entering the loop, which reconciles first.
    fn after_panic(&mut self, now: MonoTime) {
        let verdict = self.recovery.on_panic(now);
        let at = match verdict {
            Verdict::Resume { at, panics } => {
                error!(
                    "main loop panicked ({} within {}): beats to watchdogd withheld until a pass of the loop completes; resuming",
                    panics,
                    Human(recovery::PANIC_WINDOW)
                );
                at
            }
            Verdict::GiveUp { at, panics } => {
                error!(
                    "main loop panicked {} times within {}: init stops beating to watchdogd for good, so that the watchdog resets the machine (init-hang rung); the loop keeps running meanwhile",
                    panics,
                    Human(recovery::PANIC_WINDOW)
                );
                at
            }
            Verdict::Down { at } => {
                debug!(
                    "main loop panicked again ({} since start; beats stopped)",
                    self.recovery.total()
                );
                at
            }
        };
        self.wait_for_event(at);
    }

    /// Waits until one of the loop's descriptors is ready or `until`: the
    /// loop's own `poll`, so a signal or a beat ends the wait at once.
    fn wait_for_event(&self, until: MonoTime) {
        let timeout = until.saturating_since(MonoTime::now());
        let ms = timeout.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.wd_in.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.rst_in.as_fd(), PollFlags::POLLIN),
        ];
        if let Err(e) = nix::poll::poll(&mut fds, timeout) {
            if e != Errno::EINTR {
                error!("poll after a panic failed: {}", e);
            }
        }
    }

    fn next_deadline(&self) -> MonoTime {
        let mut d = self.beats.next().min(self.next_liveness);
        if let Some(l) = self.layers.next_deadline() {
            d = d.min(l);
        }
        if let Some(s) = &self.shutdown {
            d = d.min(s.next_deadline());
        }
        if let Some(u) = self.upgrade.next_deadline() {
            d = d.min(u);
        }
        d
    }

    /// Timers: beat, liveness, layer deadlines, shutdown phases.
    fn on_time(&mut self, now: MonoTime) {
        if self.beats.due(now, self.config.timing.beat_interval) {
            self.beat();
        }
        if now >= self.next_liveness {
            self.liveness(now);
            self.next_liveness = now + self.config.timing.liveness_interval;
        }
        let actions = self.layers.handle(now, Event::Tick);
        self.apply(now, actions, 0);
        if let Some(seq) = self.shutdown.as_mut() {
            let steps = seq.tick(now);
            self.steps(now, steps);
        }
        if let Some(steps) = self.upgrade.tick(now) {
            for s in steps {
                self.upgrade_step(now, s);
            }
        }
    }

    fn beat(&mut self) {
        if !self.recovery.may_beat() {
            debug!("beat withheld: the loop has not completed a pass since it panicked");
            return;
        }
        match self.beat_out.send(Code::Alive) {
            Ok(_) => self.said_beat_error = false,
            Err(e) => {
                if !self.said_beat_error {
                    error!("beat to watchdogd failed: {}", e);
                    self.said_beat_error = true;
                }
            }
        }
    }

    fn liveness(&self, now: MonoTime) {
        let (state, init) = match &self.shutdown {
            None if self.recovery.given_up() => (
                "not-beating",
                format!(
                    "init NOT beating ({} panics of its loop)",
                    self.recovery.total()
                ),
            ),
            None => ("ok", "init ok".to_string()),
            Some(s) => (
                "shutting-down",
                format!("init shutting down ({})", s.request.cause.as_str()),
            ),
        };
        info!(
            target: "liveness",
            layer = "init",
            state = state;
            "liveness: {}, {}, {}",
            init,
            self.layers.describe(Layer::Watchdogd, now),
            self.layers.describe(Layer::Restarter, now)
        );
    }

    fn reader(&mut self, layer: Layer) -> &mut Reader {
        match layer {
            Layer::Watchdogd => &mut self.wd_in,
            Layer::Restarter => &mut self.rst_in,
        }
    }

    /// Reads a layer's supervision pipe: beats (credited to `credit`,
    /// see [`Watch::credit`]) and requests.
    fn drain(&mut self, now: MonoTime, credit: MonoTime, layer: Layer) {
        let d = match self.reader(layer).drain(credit) {
            Ok(d) => d,
            Err(e) => {
                error!("reading {}'s heartbeat pipe: {}", layer, e);
                return;
            }
        };
        if d.bytes > 0 {
            let actions = self.layers.handle(now, Event::Beat { layer, at: credit });
            self.apply(now, actions, 0);
        }
        for b in d.new_unknown {
            warn!(
                "{} sent unknown heartbeat byte {:#04x} (ignored; logged once)",
                layer, b
            );
        }
        let eof_slot = match layer {
            Layer::Watchdogd => 0,
            Layer::Restarter => 1,
        };
        if d.eof {
            if let Some(said) = self.said_eof.get_mut(eof_slot) {
                if !*said {
                    error!(
                        "{}'s heartbeat pipe reports end of file although init holds its write end",
                        layer
                    );
                    *said = true;
                }
            }
        }
        for code in d.requests {
            let cause = match code {
                Code::Reboot => Cause::Reboot,
                Code::Poweroff => Cause::Poweroff,
                Code::Halt => Cause::Halt,
                Code::Upgrade => {
                    info!("upgrade of init requested by {}", layer);
                    let step = self.upgrade.request(self.shutdown.is_some());
                    self.upgrade_step(now, step);
                    continue;
                }
                Code::RestartWatchdogd => {
                    self.restart_watchdogd(layer);
                    continue;
                }
                Code::Alive | Code::Unknown(_) => continue,
            };
            let detail = self.take_request_reason();
            self.begin_shutdown(
                now,
                shutdown::Request {
                    cause,
                    by: layer.name().to_string(),
                    layer: None,
                    detail,
                },
            );
        }
    }

    /// Reads and removes `RUN/shutdown-request`.
    fn take_request_reason(&self) -> String {
        let file = self.config.paths.run.join(SHUTDOWN_REQUEST);
        match record::read_text_bounded(&file, MAX_REQUEST_REASON) {
            Ok(text) => {
                if let Err(e) = std::fs::remove_file(&file) {
                    warn!("could not remove {}: {}", file.display(), e);
                }
                let line = text.lines().next().unwrap_or("").trim().to_string();
                if line.is_empty() {
                    format!("no reason given ({} empty)", file.display())
                } else {
                    line
                }
            }
            Err(e) => format!("no reason given ({}: {})", file.display(), e),
        }
    }

    fn read_signals(&mut self, now: MonoTime) {
        let mut child = false;
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    match sig {
                        Signal::SIGCHLD => child = true,
                        Signal::SIGHUP => self.forward_hup(),
                        _ => self.on_shutdown_signal(now, sig, info.ssi_pid as i32),
                    }
                }
                Ok(None) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    error!("reading the signalfd: {}", e);
                    child = true;
                    break;
                }
            }
        }
        if child {
            self.reap(now);
        }
    }

    fn forward_hup(&self) {
        match self.layers.pid(Layer::Restarter) {
            Some(pid) => {
                info!("SIGHUP: forwarding to the restarter (reload)");
                if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGHUP) {
                    error!("forwarding SIGHUP to the restarter (pid {}): {}", pid, e);
                }
            }
            None => info!("SIGHUP: no restarter running to reload"),
        }
    }

    fn on_shutdown_signal(&mut self, now: MonoTime, sig: Signal, from: i32) {
        let cause = match sig {
            Signal::SIGUSR1 => Cause::Poweroff,
            Signal::SIGUSR2 => Cause::Halt,
            _ => Cause::Reboot,
        };
        let sender = if from == 0 {
            match self.role {
                Role::Machine => "the kernel".to_string(),
                _ => "outside this PID namespace (or the kernel)".to_string(),
            }
        } else {
            let comm = record::read_text_bounded(Path::new(&format!("/proc/{}/comm", from)), 64)
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            if comm.is_empty() {
                format!("pid {}", from)
            } else {
                format!("pid {} ({})", from, comm)
            }
        };
        let detail = format!("{} from {}", sig.as_str(), sender);
        self.begin_shutdown(
            now,
            shutdown::Request {
                cause,
                by: "signal".to_string(),
                layer: None,
                detail,
            },
        );
    }

    /// Reaps every zombie; feeds the layers' exits to the core.
    fn reap(&mut self, now: MonoTime) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(s) => s,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => {
                    self.no_children(now);
                    break;
                }
                Err(e) => {
                    error!("waitpid failed: {}", e);
                    break;
                }
            };
            let (pid, how) = match status {
                WaitStatus::Exited(pid, code) => (pid.as_raw(), Exit::Code(code)),
                WaitStatus::Signaled(pid, sig, core) => (
                    pid.as_raw(),
                    Exit::Signal {
                        signal: sig as i32,
                        core,
                    },
                ),
                // Stopped/continued/ptrace: not an exit.
                _ => continue,
            };
            // The exit goes to the core before anything else is done with
            // it: a panic after this point cannot leave the layer owning a
            // pid that is gone (to be SIGKILLed again when it is reused).
            let layer = self.layers.layer_of(pid);
            let actions =
                layer.map(|layer| self.layers.handle(now, Event::Exited { layer, pid, how }));
            if layer.is_some() {
                fault::at("reaped");
            }
            match (layer, actions) {
                (Some(layer), Some(actions)) => {
                    // Bytes it wrote before dying: a request among them is
                    // still honoured (beats are no longer credited).
                    self.drain(now, now, layer);
                    // Log (and restart) first: the shutdown steps below may
                    // end in reboot(2).
                    self.apply(now, actions, 0);
                    if layer == Layer::Restarter {
                        if let Some(seq) = self.shutdown.as_mut() {
                            let steps = seq.restarter_exited(now);
                            self.steps(now, steps);
                        }
                    }
                }
                _ => self.reaped_other(now, pid, raw_status(&status), how),
            }
        }
    }

    /// A child that is not a layer was reaped: an upgrade's check, or
    /// anything else (orphans, services whose restarter died), whose status
    /// goes to the exit relay.
    fn reaped_other(&mut self, now: MonoTime, pid: i32, raw: i32, how: Exit) {
        if let Some(step) = self.upgrade.reaped(pid, how, self.shutdown.is_some()) {
            debug!("reaped the upgrade check, pid {} ({})", pid, how);
            if let Some(step) = step {
                self.upgrade_step(now, step);
            }
            return;
        }
        debug!("reaped pid {} ({})", pid, how);
        let record = relay::encode(pid, raw);
        let outcome = loop {
            match nix::unistd::write(&self.relay_write, &record) {
                Ok(n) if n == record.len() => break exit_relay::Outcome::Written,
                // A pipe write below PIPE_BUF is all or nothing.
                Ok(_) => break exit_relay::Outcome::Failed(Errno::EIO as i32),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break exit_relay::Outcome::Full,
                Err(e) => break exit_relay::Outcome::Failed(e as i32),
            }
        };
        if let Some(note) = self.relay_losses.record(pid, outcome) {
            log::log!(note.level(), "{}", note);
        }
    }

    /// `tetherctl upgrade watchdogd` (code `W`): SIGKILL, so no magic close
    /// and the hardware stays armed; the exit is then answered like any
    /// other (restarted at once if it ran `restart_delay`, counted in the
    /// budget).
    fn restart_watchdogd(&mut self, by: Layer) {
        if let Some(seq) = &self.shutdown {
            warn!(
                "restart of watchdogd requested by {} refused: {} under way",
                by,
                seq.request.cause.as_str()
            );
            return;
        }
        match self.layers.pid(Layer::Watchdogd) {
            Some(pid) => {
                warn!(
                    "upgrade of watchdogd requested by {}: SIGKILL to watchdogd (pid {}), no magic close, the hardware stays armed; it is started again from {}",
                    by,
                    pid,
                    self.bin_dir.join(Layer::Watchdogd.binary()).display()
                );
                if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGKILL) {
                    error!("SIGKILL to watchdogd (pid {}) failed: {}", pid, e);
                }
            }
            None => info!(
                "upgrade of watchdogd requested by {}: none running, the next start uses the new binary",
                by
            ),
        }
    }

    /// Carries out one step of an upgrade of init.
    fn upgrade_step(&mut self, now: MonoTime, step: upgrade::Step) {
        match step {
            upgrade::Step::Refuse(why) => error!(
                "upgrade of init refused: {}; init {} keeps running",
                why,
                env!("CARGO_PKG_VERSION")
            ),
            upgrade::Step::KillCheck { pid } => {
                if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGKILL) {
                    error!("SIGKILL to the upgrade check (pid {}): {}", pid, e);
                }
            }
            upgrade::Step::StartCheck => {
                let state = match self.resume_state(now) {
                    Ok(s) => s,
                    Err(why) => {
                        // Not a check failure: the request is over.
                        let _ = self.upgrade.check_not_started();
                        self.upgrade_step(now, upgrade::Step::Refuse(why));
                        return;
                    }
                };
                let mut cmd = Command::new(&self.self_exe);
                cmd.arg(upgrade::CHECK_FLAG)
                    .env(upgrade::ENV_RESUME, state.encode())
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null());
                match cmd.spawn() {
                    Ok(child) => {
                        info!(
                            "upgrade of init: checking {} (pid {})",
                            self.self_exe.display(),
                            child.id()
                        );
                        self.upgrade.check_started(now, child.id() as i32);
                    }
                    Err(e) => {
                        error!(
                            "upgrade of init: cannot run {} {}: {}",
                            self.self_exe.display(),
                            upgrade::CHECK_FLAG,
                            e
                        );
                        let step = self.upgrade.check_not_started();
                        self.upgrade_step(now, step);
                    }
                }
            }
            upgrade::Step::Exec => self.exec_self(now),
        }
    }

    /// The descriptors init keeps for life, in [`Fds::NAMES`] order.
    fn kept(&self) -> [std::os::fd::BorrowedFd<'_>; Fds::COUNT] {
        [
            self.init_wd_read.as_fd(),
            self.beat_out.as_fd(),
            self.rst_wd_read.as_fd(),
            self.rst_wd_write.as_fd(),
            self.rst_in.as_fd(),
            self.rst_init_write.as_fd(),
            self.wd_in.as_fd(),
            self.wd_init_write.as_fd(),
            self.store_send.as_fd(),
            self.store_recv.as_fd(),
            self.relay_read.as_fd(),
            self.relay_write.as_fd(),
        ]
    }

    /// The state to hand to the new image; `seen`: when every supervision
    /// pipe was last seen empty.
    fn resume_state(&self, seen: MonoTime) -> Result<Resume, Refusal> {
        use std::os::fd::AsRawFd;
        let (Some(watchdogd), Some(restarter)) = (
            self.layers.image(Layer::Watchdogd),
            self.layers.image(Layer::Restarter),
        ) else {
            return Err(Refusal::SpawnOut);
        };
        Ok(Resume {
            fds: Fds(self.kept().map(|fd| fd.as_raw_fd())),
            watchdogd,
            restarter,
            seen,
            relay_lost: self.relay_losses.total(),
            upgrades: self.upgrades.saturating_add(1),
        })
    }

    /// Re-executes init's binary in place with the resume state. Returns
    /// only if `execve` failed: every descriptor is close-on-exec again
    /// and init runs on.
    fn exec_self(&mut self, now: MonoTime) {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        // Beats and requests up to this moment are this image's to answer;
        // the new one credits nothing it finds to a later moment.
        let seen = MonoTime::now();
        let credit = self.watch.credit(seen);
        self.drain(seen, credit, Layer::Watchdogd);
        self.drain(seen, credit, Layer::Restarter);
        self.watch.drained(seen);
        if self.shutdown.is_some() {
            self.upgrade_step(now, upgrade::Step::Refuse(Refusal::ShuttingDown));
            return;
        }
        let state = match self.resume_state(seen) {
            Ok(s) => s,
            Err(why) => {
                self.upgrade_step(now, upgrade::Step::Refuse(why));
                return;
            }
        };
        let cstr = |b: &[u8]| CString::new(b.to_vec()).ok();
        let Some(path) = cstr(self.self_exe.as_os_str().as_bytes()) else {
            error!("upgrade of init refused: the binary's path holds a NUL byte");
            return;
        };
        let argv: Vec<CString> = std::env::args_os()
            .filter_map(|a| cstr(a.as_bytes()))
            .collect();
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != upgrade::ENV_RESUME)
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstr(&kv)
            })
            .collect();
        if let Some(v) = cstr(format!("{}={}", upgrade::ENV_RESUME, state.encode()).as_bytes()) {
            env.push(v);
        }
        let kept = self.kept();
        let mut failed = None;
        for (fd, name) in kept.iter().zip(Fds::NAMES) {
            if let Err(e) = tether_common::sys::set_cloexec(*fd, false) {
                failed = Some(format!("clearing close-on-exec on the {}: {}", name, e));
                break;
            }
        }
        let err = match failed {
            Some(e) => e,
            None => {
                warn!(
                    "upgrade of init: exec {} (upgrade {} since boot; layers, heartbeat pipes, fd store, exit relay and restart budget kept)",
                    self.self_exe.display(),
                    state.upgrades
                );
                let _ = tether_common::logging::flush_pending(MonoTime::now());
                let Err(e) = nix::unistd::execve(&path, &argv, &env);
                format!("execve {}: {}", self.self_exe.display(), e)
            }
        };
        for (fd, name) in kept.iter().zip(Fds::NAMES) {
            if let Err(e) = tether_common::sys::set_cloexec(*fd, true) {
                error!("restoring close-on-exec on the {}: {}", name, e);
            }
        }
        error!(
            "upgrade of init failed: {}; init {} keeps running",
            err,
            env!("CARGO_PKG_VERSION")
        );
    }

    fn no_children(&mut self, now: MonoTime) {
        if let Some(seq) = self.shutdown.as_mut() {
            let steps = seq.nothing_left(now);
            self.steps(now, steps);
        }
    }

    /// Carries out the core's actions. `depth` bounds the feedback of spawn
    /// results (a spawn yields at most one more round).
    fn apply(&mut self, now: MonoTime, actions: Actions, depth: u8) {
        for a in actions.iter() {
            match a {
                Action::Log(note) => log_note(&note),
                Action::Spawn(layer) => {
                    let event = match self.spawn(now, layer) {
                        Ok(pid) => Event::Spawned { layer, pid },
                        Err(e) => {
                            error!(
                                "starting {} ({}) failed: {}",
                                layer,
                                self.bin_dir.join(layer.binary()).display(),
                                e
                            );
                            Event::SpawnFailed { layer }
                        }
                    };
                    let more = self.layers.handle(now, event);
                    if depth < 4 {
                        self.apply(now, more, depth + 1);
                    } else {
                        error!(
                            "internal: spawn feedback too deep, {} actions dropped",
                            more.len()
                        );
                    }
                }
                Action::Kill { layer, pid } => {
                    if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGKILL) {
                        error!("SIGKILL to {} (pid {}) failed: {}", layer, pid, e);
                    }
                }
                Action::Reboot {
                    layer,
                    restarts,
                    window,
                } => {
                    let detail = format!(
                        "{} exhausted its restart budget ({} restarts within {})",
                        layer,
                        restarts,
                        Human(window)
                    );
                    let req = shutdown::Request {
                        cause: Cause::Reboot,
                        by: "init".to_string(),
                        layer: Some(layer.name().to_string()),
                        detail,
                    };
                    self.begin_shutdown(now, req);
                }
            }
        }
    }

    /// Starts one layer child with exactly its descriptors.
    fn spawn(&mut self, now: MonoTime, layer: Layer) -> io::Result<i32> {
        // Leftover bytes belong to the previous child: a request among them
        // is still honoured, beats are discarded.
        self.drain(now, now, layer);
        if layer == Layer::Watchdogd {
            // Beats queued while no watchdogd ran are old news: the new one
            // must judge init and the restarter on fresh beats only.
            discard(&self.init_wd_read);
            discard(&self.rst_wd_read);
        }
        let mut cmd = Command::new(self.bin_dir.join(layer.binary()));
        cmd.arg("--config").arg(&self.child_config);
        for var in [
            ENV_HEARTBEATS,
            ENV_FDS,
            ENV_CHAIN_TIMING,
            upgrade::ENV_RESUME,
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
        ] {
            cmd.env_remove(var);
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", DEFAULT_PATH);
        }
        let child = match layer {
            Layer::Watchdogd => {
                let mut hb = FdList::new();
                hb.push("init", 3);
                hb.push("restarter", 4);
                let mut fds = FdList::new();
                fds.push("init", 5);
                cmd.env(ENV_HEARTBEATS, hb.to_string())
                    .env(ENV_FDS, fds.to_string())
                    .env(ENV_CHAIN_TIMING, chain_timing(&self.config.timing));
                tether_common::sys::spawn_with_fds(
                    &mut cmd,
                    &[
                        (self.init_wd_read.as_fd(), 3),
                        (self.rst_wd_read.as_fd(), 4),
                        (self.wd_init_write.as_fd(), 5),
                    ],
                )?
            }
            Layer::Restarter => {
                let mut fds = FdList::new();
                fds.push("init", 3);
                fds.push("watchdog", 4);
                fds.push(relay::FD_STORE_SEND, 5);
                fds.push(relay::FD_STORE_RECV, 6);
                fds.push(relay::FD_RELAY, 7);
                cmd.env(ENV_FDS, fds.to_string());
                tether_common::sys::spawn_with_fds(
                    &mut cmd,
                    &[
                        (self.rst_init_write.as_fd(), 3),
                        (self.rst_wd_write.as_fd(), 4),
                        (self.store_send.as_fd(), 5),
                        (self.store_recv.as_fd(), 6),
                        (self.relay_read.as_fd(), 7),
                    ],
                )?
            }
        };
        // Dropping `Child` neither waits nor kills: init reaps with waitpid(-1).
        Ok(child.id() as i32)
    }

    fn begin_shutdown(&mut self, now: MonoTime, req: shutdown::Request) {
        if let Some(seq) = &self.shutdown {
            warn!(
                "{} {} request by {} ({}) ignored: {} already under way",
                "orderly",
                req.cause.as_str(),
                req.by,
                req.detail,
                seq.request.cause.as_str()
            );
            return;
        }
        warn!(
            target: "reset",
            cause = req.cause.as_str(),
            by = req.by.as_str(),
            layer = req.layer.as_deref().unwrap_or(""),
            detail = req.detail.as_str();
            "orderly {} requested by {}: {}",
            req.cause.as_str(),
            req.by,
            req.detail
        );
        self.write_record(&req);
        self.layers.stop(Layer::Restarter);
        let running = self.layers.pid(Layer::Restarter).is_some();
        let (seq, steps) = Sequence::start(now, req, self.shutdown_params, running);
        self.shutdown = Some(seq);
        self.steps(now, steps);
    }

    fn write_record(&self, req: &shutdown::Request) {
        let state = &self.config.paths.state;
        let rec = record::ResetRecord {
            boot: record::read_boot_count(state).ok().flatten(),
            cause: req.cause.as_record(),
            layer: req.layer.clone(),
            silent_ms: None,
            by: Some(req.by.clone()),
            detail: Some(req.detail.clone()),
        };
        match record::write_reset_reason(state, &rec) {
            Ok(()) => debug!(
                "recorded {} in {}",
                req.cause.as_str(),
                state.join(record::RESET_REASON).display()
            ),
            Err(e) => error!(
                "could not write the reset reason in {}: {}",
                state.display(),
                e
            ),
        }
    }

    fn steps(&mut self, now: MonoTime, steps: Steps) {
        for s in steps.iter() {
            match s {
                Step::Log(say) => info!("shutdown: {}", say),
                Step::TermRestarter | Step::KillRestarter => {
                    let sig = if s == Step::TermRestarter {
                        Signal::SIGTERM
                    } else {
                        Signal::SIGKILL
                    };
                    if let Some(pid) = self.layers.pid(Layer::Restarter) {
                        if let Err(e) = kill(Pid::from_raw(pid), sig) {
                            error!(
                                "{} to the restarter (pid {}) failed: {}",
                                sig.as_str(),
                                pid,
                                e
                            );
                        }
                    }
                }
                Step::TermAll => {
                    for l in Layer::ALL {
                        self.layers.stop(l);
                    }
                    self.kill_all(Signal::SIGTERM);
                    // Nothing may be left to send SIGCHLD: look now.
                    self.reap(now);
                }
                Step::KillAll => {
                    self.kill_all(Signal::SIGKILL);
                    // The loop reaps on SIGCHLD; ECHILD ends the wait.
                    self.reap(now);
                }
                Step::Finish => self.finish(),
            }
        }
    }

    /// `kill(-1, sig)` as PID 1; run by hand, only the layers.
    fn kill_all(&self, sig: Signal) {
        if self.role.is_pid1() {
            match kill(Pid::from_raw(-1), sig) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => error!("kill(-1, {}) failed: {}", sig.as_str(), e),
            }
        } else {
            for l in Layer::ALL {
                if let Some(pid) = self.layers.pid(l) {
                    let _ = kill(Pid::from_raw(pid), sig);
                }
            }
        }
    }

    /// The last steps (every process is gone, or `REAP_WAIT` is over):
    /// record, sync, read-only, reboot(2).
    fn finish(&mut self) {
        reap_all_blocking_free();
        let Some(req) = self.shutdown.as_ref().map(|s| s.request.clone()) else {
            return;
        };
        self.write_record(&req);
        nix::unistd::sync();
        match self.role {
            Role::Machine => remount_all_read_only(),
            _ => info!(
                "shutdown: read-only remount skipped ({})",
                self.role.describe()
            ),
        }
        let mode = shutdown::reboot_mode(req.cause);
        if !self.role.is_pid1() {
            warn!(
                "shutdown: {} done; not PID 1, so exiting instead of reboot(2)",
                req.cause.as_str()
            );
            std::process::exit(0);
        }
        info!("shutdown: reboot(2) {:?} ({})", mode, req.cause.as_str());
        let Err(e) = nix::sys::reboot::reboot(mode);
        error!(
            "reboot(2) {:?} failed: {} (retrying in {})",
            mode,
            e,
            Human(shutdown::REBOOT_RETRY)
        );
    }
}

/// Remounts every filesystem read-only, in reverse mount order
/// (`shutdown::remount_plan`); logs each result.
fn remount_all_read_only() {
    use std::io::Read;
    let mut text = Vec::new();
    let read = std::fs::File::open("/proc/self/mountinfo")
        .and_then(|f| f.take(1 << 20).read_to_end(&mut text));
    let plan = match read {
        Ok(_) => shutdown::remount_plan(&shutdown::parse_mountinfo(&text)),
        Err(e) => {
            error!(
                "shutdown: reading /proc/self/mountinfo failed ({}): remounting / only",
                e
            );
            vec![shutdown::Mount {
                point: "/".into(),
                fstype: String::new(),
                read_only: false,
            }]
        }
    };
    let (mut done, mut refused) = (0usize, 0usize);
    for m in &plan {
        match shutdown::remount_read_only(&m.point) {
            Ok(()) => {
                done += 1;
                info!(
                    "shutdown: {} ({}) remounted read-only",
                    m.point.to_string_lossy(),
                    m.fstype
                );
            }
            Err(e) => {
                refused += 1;
                error!(
                    "shutdown: remounting {} ({}) read-only failed: {}",
                    m.point.to_string_lossy(),
                    m.fstype,
                    e
                );
            }
        }
    }
    info!(
        "shutdown: {} filesystem(s) remounted read-only, {} refused",
        done, refused
    );
}

/// The value of [`ENV_CHAIN_TIMING`]: init's running timings in whole
/// milliseconds, rounded up (a sub-millisecond remainder must never make
/// the running chain look faster than it is to the check it feeds).
fn chain_timing(t: &tether_common::config::Timing) -> String {
    let ms = |d: Duration| d.as_nanos().div_ceil(1_000_000);
    format!(
        "hang_timeout_ms={},restart_delay_ms={},startup_grace_ms={},beat_interval_ms={}",
        ms(t.hang_timeout),
        ms(t.restart_delay),
        ms(t.startup_grace),
        ms(t.beat_interval)
    )
}

/// The raw `waitpid` status word of an exit, as the kernel encodes it
/// (`W_EXITCODE`, the signal number with bit 7 for a core dump): nix hands
/// it decoded, the exit relay carries it raw.
fn raw_status(s: &WaitStatus) -> i32 {
    match *s {
        WaitStatus::Exited(_, code) => (code & 0xff) << 8,
        WaitStatus::Signaled(_, sig, core) => (sig as i32 & 0x7f) | if core { 0x80 } else { 0 },
        // Not exits: never relayed (the caller only sees exits).
        _ => 0,
    }
}

/// Reads and drops everything queued on a pipe read end.
fn discard(fd: &OwnedFd) {
    let mut buf = [0u8; 256];
    let mut total = 0usize;
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => break,
            Ok(n) => {
                total += n;
                // Bounded: a pipe holds at most 1 MiB by default.
                if total > (1 << 20) {
                    break;
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
}

/// A layer note with its MSGID (the `log` target: `START`, `EXIT`, `STOP`,
/// `STATE`) and, for starts and exits, structured data (`layer`, `pid`,
/// `code` or `signal`), for `[log] format = "rfc5424"`.
fn log_note(note: &crate::layers::Note) {
    use crate::layers::Note;
    let level = note.level();
    match *note {
        Note::Started { layer, pid, .. } => log::log!(
            target: "start", level, layer = layer.name(), pid = pid; "{}", note
        ),
        Note::Exited {
            layer,
            pid,
            how: Exit::Code(code),
            ..
        } => log::log!(
            target: "exit", level, layer = layer.name(), pid = pid, code = code; "{}", note
        ),
        Note::Exited {
            layer,
            pid,
            how: Exit::Signal { signal, .. },
            ..
        } => log::log!(
            target: "exit", level, layer = layer.name(), pid = pid, signal = signal; "{}", note
        ),
        Note::Stopped {
            layer,
            pid,
            how: Exit::Code(code),
        } => log::log!(
            target: "stop", level, layer = layer.name(), pid = pid, code = code; "{}", note
        ),
        Note::Stopped {
            layer,
            pid,
            how: Exit::Signal { signal, .. },
        } => log::log!(
            target: "stop", level, layer = layer.name(), pid = pid, signal = signal; "{}", note
        ),
        Note::RestartIn { layer, .. }
        | Note::Hung { layer, .. }
        | Note::StillDying { layer, .. }
        | Note::SpawnRetryIn { layer, .. }
        | Note::BudgetExhausted { layer, .. } => {
            log::log!(target: "state", level, layer = layer.name(); "{}", note)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_status_is_what_the_wait_macros_decode() {
        let p = Pid::from_raw(5);
        for code in [0, 1, 42, 255] {
            let raw = raw_status(&WaitStatus::Exited(p, code));
            assert!(libc::WIFEXITED(raw));
            assert_eq!(libc::WEXITSTATUS(raw), code);
        }
        for (sig, core) in [(Signal::SIGKILL, false), (Signal::SIGSEGV, true)] {
            let raw = raw_status(&WaitStatus::Signaled(p, sig, core));
            assert!(libc::WIFSIGNALED(raw));
            assert_eq!(libc::WTERMSIG(raw), sig as i32);
            assert_eq!(libc::WCOREDUMP(raw), core);
        }
    }

    #[test]
    fn chain_timing_is_whole_milliseconds_rounded_up() {
        let mut t = tether_common::config::Timing::default();
        assert_eq!(
            chain_timing(&t),
            "hang_timeout_ms=10000,restart_delay_ms=1000,startup_grace_ms=5000,beat_interval_ms=1000"
        );
        t.hang_timeout = Duration::from_micros(300_001);
        t.restart_delay = Duration::ZERO;
        assert!(
            chain_timing(&t).starts_with("hang_timeout_ms=301,restart_delay_ms=0,"),
            "{}",
            chain_timing(&t)
        );
    }
}
