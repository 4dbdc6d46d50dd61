//! The restarter's shell: one thread, one epoll loop. It turns descriptors
//! and signals into supervisor events and carries out the supervisor's
//! actions. No sleep and no blocking call: every wait is the `epoll_wait`
//! timeout, computed from the earliest deadline.
//!
//! Registered in epoll: a signalfd (`SIGCHLD`, `SIGTERM`, `SIGINT`,
//! `SIGHUP`, blocked first), the control server's fd, each notify socket,
//! each service's two output pipes. Deadlines: heartbeats, the liveness
//! line, the supervisor's next deadline, the leftover sweep, control client
//! timeouts, output buffer flushes and drop reports.
//!
//! Order at start: heartbeat descriptors are taken first (before anything
//! else is opened), then configuration and logging, signals, the runtime
//! directory, re-adoption when init handed an fd store (`adoption`: what
//! can be adopted is, the rest goes to the sweep), the leftover sweep of
//! `RUN/restarter.state` (no service starts before it is over), the control
//! socket; services are loaded when the sweep is done.
//!
//! Decisions where the design is silent:
//! - A heartbeat (`.`) goes to each pipe of `TETHER_FDS` every
//!   `beat_interval`, also between spawns when a loop turn starts many
//!   services. A reboot/poweroff/halt code that finds the pipe full is
//!   retried at each beat until written.
//! - Service output buffered while syslog is down is retried once a second;
//!   drop counts are logged at most once per 10 s per service (io's rule).
//! - The liveness line: `liveness: restarter ok U/E up, F failed, C config
//!   errors, syslog up|down, D lines dropped` where E counts the services
//!   that should run and U those of them up and ready; `ok` becomes
//!   `degraded` when U < E or F > 0.
//! - Reload (`SIGHUP`, `tetherctl reload`) re-reads the service files only;
//!   a changed `tether.toml` takes effect when the restarter is restarted.
//!   A reload before the leftover sweep is over is ignored (the files are
//!   read when it ends).
//! - On `SIGTERM`/`SIGINT`: every service is stopped in reverse dependency
//!   order (each within its `stop_timeout`), then the state file is
//!   emptied, service cgroups removed, and the process exits 0.

mod adoption;
mod upgrade;

use crate::cgroup::Cgroups;
use crate::control::{self, Incoming, Request, Response, Server, ServiceStatus, StatusReport};
use crate::notify::{self, NotifySocket};
use crate::output::ServiceOutput;
use crate::resolver::{self, Resolver};
use crate::resources::Table;
use crate::run_dir::{self, Damage, RunDir};
use crate::service::{self, LoadedSet, NotifyMode, Resolution};
use crate::spawn::{self, SpawnContext};
use crate::state_file::{self, Sweep};
use crate::supervisor::{Action, Event, ExitStatus, ServiceId, Supervisor};
use log::{debug, error, info, warn, Level};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;
use tether_common::clock::MonoTime;
use tether_common::config::Config;
use tether_common::fdlist::{FdList, ENV_FDS};
use tether_common::heartbeat::{Code, Sent, Writer};
use tether_common::logging::{self, Syslog};
use tether_common::sys::child::Spawner;

/// How often a failed write of `restarter.state` is retried.
const STATE_RETRY: Duration = Duration::from_secs(1);

/// The name syslog lines of the restarter itself carry.
pub const TAG: &str = "tether-restarter";
/// `RUN/shutdown-request`.
pub const SHUTDOWN_REQUEST: &str = "shutdown-request";
/// `RUN/control.sock`.
pub const CONTROL_SOCKET: &str = "control.sock";
/// How often output buffered while syslog is down is retried.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

const TOKEN_KIND_SHIFT: u32 = 56;
const TOKEN_SIGNAL: u64 = 1 << TOKEN_KIND_SHIFT;
const TOKEN_CONTROL: u64 = 2 << TOKEN_KIND_SHIFT;
const TOKEN_NOTIFY: u64 = 3 << TOKEN_KIND_SHIFT;
const TOKEN_OUTPUT: u64 = 4 << TOKEN_KIND_SHIFT;
// 5 and 6: adoption::TOKEN_PIDFD, adoption::TOKEN_RELAY.
const TOKEN_RESOLVER: u64 = 7 << TOKEN_KIND_SHIFT;

/// Command-line settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub config: PathBuf,
    /// `--run-dir`: overrides `[paths] run`.
    pub run_dir: Option<PathBuf>,
    /// `--services`: overrides `[paths] services`.
    pub services: Option<PathBuf>,
    /// `--cgroup-root`: where service cgroups go (must be cgroup2).
    pub cgroup_root: Option<PathBuf>,
    /// `--no-cgroup`: process groups only.
    pub no_cgroup: bool,
}

pub const USAGE: &str = "usage: tether-restarter [--config FILE] [--run-dir DIR] [--services DIR] [--cgroup-root DIR | --no-cgroup]";

impl Options {
    /// Parses the arguments after the program name: bytes, as the kernel
    /// gave them (a path need not be UTF-8).
    pub fn parse<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<Options, String> {
        let mut o = Options {
            config: PathBuf::from(tether_common::config::DEFAULT_CONFIG),
            ..Options::default()
        };
        let mut it = args.iter().map(|a| a.as_ref());
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match a.to_str().unwrap_or("") {
                "--config" => o.config = value("--config")?,
                "--run-dir" => o.run_dir = Some(value("--run-dir")?),
                "--services" => o.services = Some(value("--services")?),
                "--cgroup-root" => o.cgroup_root = Some(value("--cgroup-root")?),
                "--no-cgroup" => o.no_cgroup = true,
                _ => return Err(format!("unknown argument {a:?}")),
            }
        }
        if o.no_cgroup && o.cgroup_root.is_some() {
            return Err("--cgroup-root and --no-cgroup exclude each other".into());
        }
        Ok(o)
    }
}

/// A repair of the runtime directory (see `run_dir`), spread over loop
/// turns when many notify sockets are to be bound again.
struct RunRepair {
    damage: Damage,
    /// Notify sockets to bind again, in all.
    sockets: usize,
    /// Those not done yet.
    queue: Vec<ServiceId>,
    started: MonoTime,
    /// Time spent repairing, and in how many loop turns.
    work: Duration,
    turns: u32,
}

struct Shell {
    config: Config,
    /// Starts services' processes (made before any service descriptor).
    spawner: Spawner,
    /// Failures of the exec helpers (spawn::exec_status).
    exec_status: spawn::exec_status::ExecStatus,
    run_dir: PathBuf,
    services_dir: PathBuf,
    epoll: Epoll,
    sigfd: SignalFd,
    sup: Supervisor,
    /// Each service's resources (`resources`).
    rt: Table,
    control: Option<Server>,
    syslog: Syslog,
    beats: Vec<Writer>,
    init_pipe: Option<usize>,
    pending_code: Option<Code>,
    cgroups: Option<Cgroups>,
    cgroup_warned: bool,
    base_nofile: (u64, u64),
    started: MonoTime,
    next_beat: MonoTime,
    next_liveness: MonoTime,
    flush_at: Option<MonoTime>,
    drop_check_at: Option<MonoTime>,
    sweep: Option<Sweep>,
    /// `RUN/restarter.journal`: each started process records itself.
    journal: state_file::Journal,
    loaded: bool,
    state_dirty: bool,
    /// Set while `restarter.state` cannot be written (e.g. `ENOSPC`): when
    /// to try again. The failure is logged once, the recovery too.
    state_retry_at: Option<MonoTime>,
    /// When to retry sending log lines syslog refused (busy).
    log_retry_at: Option<MonoTime>,
    /// The runtime directory, checked every `run_dir::CHECK_INTERVAL`
    /// for being removed (issue 12); `None` if it could not be opened.
    run_watch: Option<RunDir>,
    next_run_check: MonoTime,
    /// A repair of the runtime directory under way.
    run_repair: Option<RunRepair>,
    /// Set while a repair of the runtime directory fails (logged once).
    run_repair_failing: bool,
    /// tether.toml error (running on defaults), services dir error, last
    /// refused reload.
    config_errors: Vec<String>,
    reload_errors: Vec<String>,
    /// init's fd store and exit relay (issue 13); `None` run alone.
    store: Option<adoption::Store>,
    /// What start-up found to adopt, until the services are loaded.
    pending: Option<adoption::Pending>,
    /// Adopted processes (init's children) being watched.
    watches: std::collections::HashMap<ServiceId, adoption::Watch>,
    /// This binary, as resolved at start (`upgrade restarter`).
    own_binary: Option<PathBuf>,
    /// `upgrade restarter` was answered: exec at the end of this turn.
    upgrade_pending: bool,
    /// `user`/`group` lookups, off the loop (resolver.rs).
    resolver: Resolver,
    /// Starts held until their identity is looked up.
    awaiting: BTreeMap<ServiceId, resolver::Key>,
}

/// Runs the restarter; returns the exit code.
pub fn run(opts: Options) -> i32 {
    // Heartbeat descriptors first, before anything else gets a number.
    let (beats, init_pipe, store, fd_error) = take_heartbeats();
    let (mut config, config_error) = Config::load_or_default(&opts.config);
    if let Some(dir) = &opts.run_dir {
        config.paths.run = dir.clone();
    }
    if let Some(dir) = &opts.services {
        config.paths.services = dir.clone();
    }
    logging::init(TAG, &config.log);
    let mut config_errors = Vec::new();
    if let Some(e) = &config_error {
        error!(
            "{}: {e}; running on built-in defaults",
            opts.config.display()
        );
        config_errors.push(e.to_string());
        if let Some(dir) = &opts.run_dir {
            config.paths.run = dir.clone();
        }
        if let Some(dir) = &opts.services {
            config.paths.services = dir.clone();
        }
    }
    if let Some(e) = fd_error {
        error!("{ENV_FDS}: {e}; running without heartbeats");
    }
    if beats.is_empty() {
        info!("no heartbeat pipes ({ENV_FDS} unset): running without init");
    }
    if store.is_none() {
        info!("no fd store (store_send/store_recv/relay not in {ENV_FDS}): a previous restarter's services are stopped and started afresh");
    }
    match Shell::new(config, opts, beats, init_pipe, store, config_errors) {
        Ok(mut shell) => shell.run(),
        Err(e) => {
            error!("cannot start: {e}");
            1
        }
    }
}

/// The write ends named in `TETHER_FDS`, taken over (close-on-exec again),
/// and init's fd store and relay when all three are there.
fn take_heartbeats() -> (
    Vec<Writer>,
    Option<usize>,
    Option<adoption::Store>,
    Option<String>,
) {
    let list = match FdList::from_env(ENV_FDS) {
        Ok(l) => l,
        Err(e) => return (Vec::new(), None, None, Some(e.to_string())),
    };
    let mut beats = Vec::new();
    let mut init = None;
    let mut errors = Vec::new();
    let mut store_fds: std::collections::HashMap<String, std::os::fd::OwnedFd> =
        std::collections::HashMap::new();
    for (name, fd) in list.iter() {
        if adoption::is_store_name(name) {
            match tether_common::sys::take_inherited_fd(fd) {
                Ok(owned) => {
                    store_fds.insert(name.to_string(), owned);
                }
                Err(e) => errors.push(format!("{name}={fd}: {e}")),
            }
            continue;
        }
        match tether_common::sys::take_inherited_fd(fd).and_then(|owned| Writer::new(name, owned)) {
            Ok(w) => {
                if name == "init" {
                    init = Some(beats.len());
                }
                beats.push(w);
            }
            Err(e) => errors.push(format!("{name}={fd}: {e}")),
        }
    }
    // Single-threaded at this point. The variable must not reach services
    // (spawn filters it too).
    std::env::remove_var(ENV_FDS);
    use tether_common::relay::{FD_RELAY, FD_STORE_RECV, FD_STORE_SEND};
    let store = match (
        store_fds.remove(FD_STORE_SEND),
        store_fds.remove(FD_STORE_RECV),
        store_fds.remove(FD_RELAY),
    ) {
        (Some(send), Some(recv), Some(relay)) => Some(adoption::Store::new(send, recv, relay)),
        (None, None, None) => None,
        _ => {
            errors.push(
                "the fd store needs store_send, store_recv and relay: running without".into(),
            );
            None
        }
    };
    (
        beats,
        init,
        store,
        (!errors.is_empty()).then(|| errors.join(", ")),
    )
}

/// A start that failed on a system call before the spawn: with its errno
/// (the supervisor tells running out of descriptors apart).
fn spawn_failed_io(what: &str, e: &std::io::Error) -> Event {
    Event::SpawnFailed {
        errno: e.raw_os_error(),
        message: format!("{what}: {e}"),
    }
}

fn io_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Shell {
    fn new(
        config: Config,
        opts: Options,
        beats: Vec<Writer>,
        init_pipe: Option<usize>,
        store: Option<adoption::Store>,
        config_errors: Vec<String>,
    ) -> Result<Shell, String> {
        let base_nofile = spawn::current_nofile();
        if let Err(e) = spawn::raise_nofile() {
            warn!("cannot raise the descriptor limit: {e}");
        }
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| io_err("blocking signals", e))?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| io_err("signalfd", e))?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| io_err("epoll", e))?;
        epoll
            .add(
                sigfd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
            )
            .map_err(|e| io_err("epoll", e))?;
        // After the signals are blocked: the thread inherits the mask.
        let resolver = Resolver::new(resolver::default_lookup())
            .map_err(|e| io_err("user lookup thread", e))?;
        epoll
            .add(
                resolver.fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_RESOLVER),
            )
            .map_err(|e| io_err("epoll", e))?;
        let run_dir = config.paths.run.clone();
        notify::prepare_dir(&run_dir.join("notify"))
            .map_err(|e| io_err(&format!("preparing {}/notify", run_dir.display()), e))?;
        let cgroups = if opts.no_cgroup {
            info!("cgroups disabled (--no-cgroup): services are bounded by their process group");
            None
        } else {
            match Cgroups::detect(opts.cgroup_root.as_deref()) {
                Ok(c) => {
                    info!("service cgroups under {}", c.root().display());
                    Some(c)
                }
                Err(e) if opts.cgroup_root.is_some() => return Err(format!("--cgroup-root: {e}")),
                Err(e) => {
                    info!("no cgroup v2 ({e}): services are bounded by their process group");
                    None
                }
            }
        };
        // Before any per-service descriptor: its slots get low numbers.
        let spawner = Spawner::new().map_err(|e| io_err("spawner descriptors", e))?;
        let now = MonoTime::now();
        // The journal's lock first: it is free only once the previous
        // restarter and every child of it between `clone` and `exec` are
        // gone, so what it and the state file say is complete.
        let journal =
            match state_file::Journal::open_locked(&run_dir, state_file::JOURNAL_LOCK_WAIT) {
                Ok((j, true)) => j,
                Ok((j, false)) => {
                    warn!(
                    "{}: still locked after {:?} (another restarter on {}?); reading it as it is",
                    state_file::JOURNAL_NAME,
                    state_file::JOURNAL_LOCK_WAIT,
                    run_dir.display()
                );
                    j
                }
                Err(e) => {
                    error!(
                        "opening {}: {e}; starts are recorded once per loop turn only",
                        state_file::JOURNAL_NAME
                    );
                    state_file::Journal::default()
                }
            };
        // The leftovers of a previous restarter, before anything starts.
        let state_path = run_dir.join(state_file::FILE_NAME);
        let entries = state_file::read(&state_path).unwrap_or_else(|e| {
            error!("reading {}: {e}", state_path.display());
            Vec::new()
        });
        let syslog_path = logging::effective_settings(&config.log).syslog_socket;
        let services_dir = config.paths.services.clone();
        let mut shell = Shell {
            syslog: Syslog::new(&syslog_path),
            spawner,
            exec_status: spawn::exec_status::ExecStatus::new()
                .map_err(|e| io_err("exec status pipe", e))?,
            run_dir,
            services_dir,
            epoll,
            sigfd,
            sup: Supervisor::new(),
            rt: Table::default(),
            control: None,
            beats,
            init_pipe,
            pending_code: None,
            cgroups,
            cgroup_warned: false,
            base_nofile,
            started: now,
            next_beat: now,
            next_liveness: now + config.timing.liveness_interval,
            flush_at: None,
            drop_check_at: None,
            sweep: None,
            journal,
            loaded: false,
            state_dirty: false,
            state_retry_at: None,
            log_retry_at: None,
            run_watch: None,
            next_run_check: now + run_dir::CHECK_INTERVAL,
            run_repair: None,
            run_repair_failing: false,
            config_errors,
            reload_errors: Vec::new(),
            resolver,
            awaiting: BTreeMap::new(),
            config,
            store,
            pending: None,
            watches: std::collections::HashMap::new(),
            own_binary: upgrade::own_binary(),
            upgrade_pending: false,
        };
        if let Some(store) = shell.store.as_ref() {
            if let Err(e) = shell.epoll.add(
                store.relay_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, adoption::TOKEN_RELAY),
            ) {
                error!("relay: epoll: {e}");
            }
        }
        // With a store: what can be adopted is, the rest is swept.
        let entries = shell.prepare_adoption(entries);
        shell.sweep = Some(Sweep::start(entries, now));
        shell.log_sweep_messages();
        shell.bind_control();
        match RunDir::open(&shell.run_dir, shell.control.is_some()) {
            Ok(rd) => shell.run_watch = Some(rd),
            Err(e) => warn!(
                "{}: {e}; a removed runtime directory will not be noticed",
                shell.run_dir.display()
            ),
        }
        Ok(shell)
    }

    fn bind_control(&mut self) {
        let admin_gid = match &self.config.control.group {
            None => None,
            Some(g) => match control::resolve_group(g) {
                Ok(gid) => Some(gid),
                Err(e) => {
                    error!("[control] group: {e}; only root may change state");
                    None
                }
            },
        };
        let path = self.run_dir.join(CONTROL_SOCKET);
        match Server::bind(&path, admin_gid) {
            Ok(server) => {
                if let Err(e) = self.epoll.add(
                    server.fd(),
                    EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_CONTROL),
                ) {
                    error!("control socket: epoll: {e}");
                }
                self.control = Some(server);
            }
            Err(e) => error!(
                "control socket {}: {e}; running without control",
                path.display()
            ),
        }
    }

    fn log_sweep_messages(&mut self) {
        if let Some(s) = self.sweep.as_mut() {
            for m in s.messages.drain(..) {
                warn!("{m}");
            }
        }
    }

    // ---- the loop ---------------------------------------------------------

    fn run(&mut self) -> i32 {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let now = MonoTime::now();
            self.on_time(now);
            if self.sup.shutting_down() && self.sup.is_idle() {
                self.finish();
                return 0;
            }
            if self.state_dirty {
                self.write_state();
            }
            // Our own lines syslog refused while busy, in order.
            self.log_retry_at = logging::flush_pending(MonoTime::now());
            let timeout = self.timeout(MonoTime::now());
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    error!("epoll_wait: {e}");
                    continue;
                }
            };
            for ev in &events[..n] {
                self.dispatch(ev.data(), MonoTime::now());
            }
            if self.upgrade_pending {
                self.exec_in_place();
            }
        }
    }

    fn timeout(&self, now: MonoTime) -> EpollTimeout {
        let mut next = self.next_beat.min(self.next_liveness);
        let mut consider = |t: Option<MonoTime>| {
            if let Some(t) = t {
                next = next.min(t);
            }
        };
        consider(self.sup.next_deadline());
        consider(self.watch_deadline());
        consider(self.sweep.as_ref().and_then(|s| s.next_deadline(now)));
        consider(self.control.as_ref().and_then(|c| c.next_deadline()));
        consider(self.flush_at);
        consider(self.drop_check_at);
        consider(self.state_retry_at);
        consider(self.log_retry_at);
        consider(self.run_watch.as_ref().map(|_| self.next_run_check));
        consider(self.resolver.next_deadline());
        let wait = next.saturating_since(now);
        // Round up: waking a little late beats spinning until the deadline.
        let ms = wait.as_nanos().div_ceil(1_000_000);
        EpollTimeout::try_from(ms as u64).unwrap_or(EpollTimeout::MAX)
    }

    /// Everything whose time has come.
    fn on_time(&mut self, now: MonoTime) {
        if now >= self.next_beat {
            self.beat(now);
        }
        if let Some(sweep) = self.sweep.as_mut() {
            let done = sweep.poll(now);
            self.log_sweep_messages();
            if done {
                self.sweep = None;
                self.sweep_cgroups();
                self.load_services(now);
            }
        }
        if self.watch_deadline().is_some_and(|d| d <= now) {
            self.expire_watches(now);
        }
        if self.sup.next_deadline().is_some_and(|d| d <= now) {
            let actions = self.sup.tick(now);
            self.execute(actions, now);
        }
        if let Some(c) = self.control.as_mut() {
            if c.next_deadline().is_some_and(|d| d <= now) {
                c.expire(now);
            }
        }
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush_outputs(now);
        }
        if self.drop_check_at.is_some_and(|t| t <= now) {
            self.report_drops(now);
        }
        if self.state_retry_at.is_some_and(|t| t <= now) {
            self.state_dirty = true;
        }
        if self.run_watch.is_some() && now >= self.next_run_check {
            self.next_run_check = now + run_dir::CHECK_INTERVAL;
            self.check_run_dir(now);
        }
        self.identity_timers(now);
        if now >= self.next_liveness {
            self.liveness(now);
            self.next_liveness = now + self.config.timing.liveness_interval;
        }
    }

    fn beat(&mut self, now: MonoTime) {
        if let (Some(code), Some(i)) = (self.pending_code, self.init_pipe) {
            match self.beats[i].send(code) {
                Ok(Sent::Written) => {
                    info!("sent {:?} to init", code);
                    self.pending_code = None;
                }
                Ok(Sent::PipeFull) => warn!(
                    "init pipe full: {:?} request retried at the next beat",
                    code
                ),
                Err(e) => error!("init pipe: {e}"),
            }
        }
        for w in &self.beats {
            if let Err(e) = w.send(Code::Alive) {
                debug!("heartbeat {}: {e}", w.name());
            }
        }
        self.next_beat = now + self.config.timing.beat_interval;
    }

    /// Beats if one is due (between spawns of a long loop turn).
    fn maybe_beat(&mut self) {
        let now = MonoTime::now();
        if now >= self.next_beat {
            self.beat(now);
        }
    }

    fn dispatch(&mut self, token: u64, now: MonoTime) {
        let kind = token & (0xff << TOKEN_KIND_SHIFT);
        let id = ServiceId((token & 0xffff_ffff) as u32);
        match kind {
            TOKEN_SIGNAL => self.on_signals(now),
            TOKEN_CONTROL => self.on_control(now),
            TOKEN_NOTIFY => self.on_notify(id, now),
            TOKEN_OUTPUT => self.on_output(id, now),
            adoption::TOKEN_PIDFD => self.on_pidfd(id, now),
            adoption::TOKEN_RELAY => self.on_relay(now),
            TOKEN_RESOLVER => self.on_identities(now),
            _ => {}
        }
    }

    // ---- signals and children ----------------------------------------------

    fn on_signals(&mut self, now: MonoTime) {
        let mut chld = false;
        let mut term = None;
        let mut hup = false;
        loop {
            match self.sigfd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => chld = true,
                    Ok(s @ (Signal::SIGTERM | Signal::SIGINT)) => term = Some(s),
                    Ok(Signal::SIGHUP) => hup = true,
                    _ => {}
                },
                Ok(None) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    error!("signalfd: {e}");
                    break;
                }
            }
        }
        if chld {
            self.reap(now);
        }
        if hup && !self.loaded {
            info!("SIGHUP before the services were loaded: ignored (they are read when the leftover sweep ends)");
        } else if hup {
            info!("SIGHUP: reloading service files");
            if let Err(e) = self.reload(now) {
                error!("reload refused, nothing changed: {e}");
            }
        }
        if let Some(s) = term {
            if !self.sup.shutting_down() {
                info!("{}: stopping every service, then exiting", s.as_str());
                if self.sweep.take().is_some() {
                    info!("leftover sweep abandoned: shutting down");
                }
                self.loaded = true;
                let actions = self.sup.shutdown(now);
                self.execute(actions, now);
            } else {
                info!("{}: already shutting down", s.as_str());
            }
        }
    }

    /// Reaps every exited child; a service's output is drained before its
    /// exit is handled (and logged).
    fn reap(&mut self, now: MonoTime) {
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, core)) => (
                    pid.as_raw(),
                    ExitStatus::Signal {
                        signal: sig as i32,
                        core,
                    },
                ),
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::ECHILD) => break,
                Err(e) => {
                    error!("waitpid: {e}");
                    break;
                }
            };
            let failure = self.exec_status.take(pid);
            let Some(id) = self.sup.id_by_pid(pid) else {
                debug!("reaped pid {pid} ({status})");
                continue;
            };
            // Adopted over an upgrade in place: still our child.
            self.unwatch(id);
            if let Some(out) = self.rt.get_mut(id).and_then(|r| r.output.as_mut()) {
                out.finish_process(&mut self.syslog, now);
                out.set_pid(0);
            }
            self.note_buffered(id, now);
            let event = spawn::exec_status::exit_event(pid, status, failure, self.sup.spec(id));
            let actions = self.sup.handle(id, event, now);
            self.execute(actions, now);
        }
    }

    // ---- notify and output --------------------------------------------------

    fn on_notify(&mut self, id: ServiceId, now: MonoTime) {
        let pgid = self.sup.pgid(id);
        let Some(sock) = self.rt.get_mut(id).and_then(|r| r.notify.as_mut()) else {
            return;
        };
        let malformed_before = sock.rejected() - sock.refused();
        let received = sock.receive(pgid);
        let malformed = sock.rejected() - sock.refused() - malformed_before;
        let refusals = sock.refusal_report(now);
        let name = self.sup.name(id).unwrap_or("?");
        if malformed > 0 {
            let why = sock
                .last_rejection()
                .map(|e| e.to_string())
                .unwrap_or_default();
            warn!("service {name}: {malformed} malformed notify datagram(s) ignored: {why}");
        }
        if let Some((n, why)) = refusals {
            warn!("service {name}: {n} notify datagram(s) refused: {why}");
        }
        for r in received {
            let in_group = match r.origin {
                notify::Origin::InGroup => Some(true),
                notify::Origin::OutsideGroup { .. } => Some(false),
                notify::Origin::Gone | notify::Origin::Unknown => None,
            };
            let event = Event::Notify {
                sender_pid: r.sender_pid,
                sender_uid: r.sender_uid,
                in_group,
                messages: r.messages,
            };
            let actions = self.sup.handle(id, event, now);
            self.execute(actions, now);
        }
    }

    // ---- the runtime directory ---------------------------------------------

    /// Looks for a removed runtime directory, control socket or notify
    /// socket (see `run_dir`), and puts back whatever is missing: the
    /// directory and the control socket at once, notify sockets at most
    /// [`run_dir::REPAIR_BATCH`] per loop turn (the next turn goes on at
    /// once, after the beat), so 10,000 services never stall the loop.
    fn check_run_dir(&mut self, now: MonoTime) {
        if self.run_repair.is_none() {
            let Some(rd) = self.run_watch.as_mut() else {
                return;
            };
            let damage = rd.check();
            let look = damage.notify_dir || rd.notify_dir_changed();
            let missing: Vec<ServiceId> = if look {
                self.rt
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.notify.as_ref().is_some_and(|s| !s.in_place()))
                    .map(|(i, _)| ServiceId(i as u32))
                    .collect()
            } else {
                Vec::new()
            };
            if !damage.any() && missing.is_empty() {
                return;
            }
            self.run_repair = Some(RunRepair {
                damage,
                sockets: missing.len(),
                queue: missing,
                started: MonoTime::now(),
                work: Duration::ZERO,
                turns: 0,
            });
        }
        let t0 = MonoTime::now();
        let step = self.repair_run_dir(now);
        if let Some(r) = self.run_repair.as_mut() {
            r.work += MonoTime::now().saturating_since(t0);
            r.turns += 1;
        }
        match step {
            Ok(false) => self.next_run_check = now,
            Ok(true) => {
                let Some(done) = self.run_repair.take() else {
                    return;
                };
                let took = MonoTime::now().saturating_since(done.started);
                warn!(
                    "runtime directory {}: {}; recreated{}{} {} notify socket(s) at the same paths in {:.1} ms ({:.1} ms of work in {} loop turn(s)); no service restarted",
                    self.run_dir.display(),
                    done.damage,
                    if done.damage.run { " the directory," } else { "" },
                    if done.damage.control { " the control socket," } else { "" },
                    done.sockets,
                    took.as_secs_f64() * 1000.0,
                    done.work.as_secs_f64() * 1000.0,
                    done.turns
                );
                if self.run_repair_failing {
                    info!("runtime directory {}: repaired", self.run_dir.display());
                }
                self.run_repair_failing = false;
            }
            Err(e) => {
                if !self.run_repair_failing {
                    let damage = self
                        .run_repair
                        .as_ref()
                        .map(|r| r.damage)
                        .unwrap_or_default();
                    error!(
                        "runtime directory {}: {damage}; recreating it failed: {e}; retrying every {:?}",
                        self.run_dir.display(),
                        run_dir::CHECK_INTERVAL
                    );
                }
                self.run_repair_failing = true;
            }
        }
    }

    /// One step of the repair in `run_repair`: `Ok(true)` when it is
    /// complete, `Ok(false)` when notify sockets remain for the next turn.
    fn repair_run_dir(&mut self, now: MonoTime) -> Result<bool, String> {
        let run = self.run_dir.display().to_string();
        if let Some(rd) = &self.run_watch {
            rd.recreate().map_err(|e| format!("creating {run}: {e}"))?;
        }
        if let Some(server) = self.control.as_mut() {
            if !server.in_place() {
                server
                    .rebind(now)
                    .map_err(|e| format!("control socket: {e}"))?;
            }
        }
        for _ in 0..run_dir::REPAIR_BATCH {
            let Some(&id) = self.run_repair.as_ref().and_then(|r| r.queue.last()) else {
                break;
            };
            let still_missing = self
                .rt
                .get(id)
                .and_then(|r| r.notify.as_ref())
                .is_some_and(|s| !s.in_place());
            if still_missing {
                // Whatever is still queued on the old socket first.
                self.on_notify(id, now);
            }
            if let Some(sock) = self.rt.get_mut(id).and_then(|r| r.notify.as_mut()) {
                if !sock.in_place() {
                    let old = sock
                        .rebind()
                        .map_err(|e| format!("notify socket {}: {e}", sock.path().display()))?;
                    let _ = self.epoll.delete(&old);
                    drop(old);
                    let token = TOKEN_NOTIFY | u64::from(id.0);
                    self.epoll
                        .add(sock.fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
                        .map_err(|e| format!("notify socket: epoll: {e}"))?;
                    self.sup.notify_socket_restored(id, MonoTime::now());
                    self.store_service(id);
                }
            }
            if let Some(r) = self.run_repair.as_mut() {
                r.queue.pop();
            }
        }
        if self
            .run_repair
            .as_ref()
            .is_some_and(|r| !r.queue.is_empty())
        {
            return Ok(false);
        }
        // restarter.state may have gone with the directory, and the journal
        // with it: children would append to a deleted file no new restarter
        // reads. Reopened at its path before any further start.
        if !self.journal.in_place(&self.run_dir) {
            self.journal = state_file::Journal::open(&self.run_dir)
                .map_err(|e| format!("{}: {e}", state_file::JOURNAL_NAME))?;
        }
        self.state_dirty = true;
        let has_control = self.control.is_some();
        if let Some(rd) = self.run_watch.as_mut() {
            rd.remember(has_control)
                .map_err(|e| format!("opening {run}: {e}"))?;
            // The binds above moved notify/'s mtime: take it as seen.
            rd.notify_dir_changed();
        }
        Ok(true)
    }

    fn on_output(&mut self, id: ServiceId, now: MonoTime) {
        let Some(out) = self.rt.get_mut(id).and_then(|r| r.output.as_mut()) else {
            return;
        };
        out.drain(&mut self.syslog, now);
        self.note_buffered(id, now);
    }

    /// Schedules a flush and a drop report when service `id` has output
    /// waiting or dropped.
    fn note_buffered(&mut self, id: ServiceId, now: MonoTime) {
        let Some(out) = self.rt.get(id).and_then(|r| r.output.as_ref()) else {
            return;
        };
        if out.buffered() > 0 && self.flush_at.is_none() {
            self.flush_at = Some(now + FLUSH_INTERVAL);
        }
        if let Some(t) = out.next_drop_report() {
            self.drop_check_at = Some(self.drop_check_at.map_or(t, |d| d.min(t)));
        }
    }

    fn flush_outputs(&mut self, now: MonoTime) {
        self.flush_at = None;
        let mut left = false;
        for r in self.rt.iter_mut() {
            if let Some(out) = r.output.as_mut() {
                if out.buffered() > 0 && !out.flush(&mut self.syslog, now) {
                    left = true;
                }
            }
        }
        if left {
            self.flush_at = Some(now + FLUSH_INTERVAL);
        }
    }

    fn report_drops(&mut self, now: MonoTime) {
        self.drop_check_at = None;
        let mut next: Option<MonoTime> = None;
        for (i, r) in self.rt.iter_mut().enumerate() {
            let Some(out) = r.output.as_mut() else {
                continue;
            };
            if let Some(n) = out.take_drop_report(now) {
                let name = self.sup.name(ServiceId(i as u32)).unwrap_or(out.tag());
                warn!(
                    "service {name}: {n} output line(s) dropped (syslog {}), {} in all",
                    if self.syslog.is_up() { "busy" } else { "down" },
                    out.dropped()
                );
            }
            if let Some(t) = out.next_drop_report() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        self.drop_check_at = next;
    }

    // ---- actions ------------------------------------------------------------

    fn execute(&mut self, actions: Vec<Action>, now: MonoTime) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Spawn { id } => {
                    if self.hold_for_identity(id, now) {
                        continue;
                    }
                    let event = self.spawn(id);
                    queue.extend(self.sup.handle(id, event, now));
                    self.maybe_beat();
                }
                Action::Kill {
                    id,
                    pid,
                    group,
                    signal,
                } => self.kill(id, pid, group, signal),
                Action::Log { level, message } => log::log!(level, "{message}"),
                Action::RequestReboot { reason } => {
                    if let Err(e) = self.request_shutdown(Code::Reboot, &reason) {
                        error!("{e}");
                    }
                }
                Action::WriteState => self.state_dirty = true,
                Action::Watch { id, pid } => self.watch(id, pid, now),
                Action::Provision { id } => {
                    if let Err(Event::SpawnFailed { message, .. }) = self.provision(id) {
                        let name = self.sup.name(id).unwrap_or("?");
                        warn!("service {name}: resources: {message} (tried again at its start)");
                    }
                }
                Action::Release { id } => {
                    self.awaiting.remove(&id);
                    self.forget(id)
                }
            }
        }
    }

    /// `Action::Provision`: makes what service `id`'s spec needs in its
    /// row of the resource table (`resources`): output pipes once per
    /// service (the same for every run), a notify socket owned by the
    /// service's user for a notify service (none otherwise), its cgroup.
    /// A failure is logged and kept in the row; the next start provisions
    /// again and fails with it (retried per policy).
    fn provision(&mut self, id: ServiceId) -> Result<(), Event> {
        let Some(spec) = self.sup.spec(id).cloned() else {
            return Ok(());
        };
        let fail = |message: String| Event::SpawnFailed {
            errno: None,
            message,
        };
        // Descriptors new or gone since the store last heard of them.
        let mut stored = false;
        let r = self.provision_rows(id, &spec, &mut stored, fail);
        if stored {
            self.store_service(id);
        }
        let row = self.rt.row(id);
        row.provision_error = match &r {
            Err(Event::SpawnFailed { message, .. }) => Some(message.clone()),
            _ => None,
        };
        r
    }

    fn provision_rows(
        &mut self,
        id: ServiceId,
        spec: &service::ServiceSpec,
        stored: &mut bool,
        fail: impl Fn(String) -> Event,
    ) -> Result<(), Event> {
        if self.rt.row(id).output.is_none() {
            // Never into the descriptors kept for the restarter itself.
            if let Err(e) = spawn::fds_left_for_a_service(self.epoll.0.as_fd(), self.nofile_limit())
            {
                return Err(spawn_failed_io("descriptor reserve of the restarter", &e));
            }
            let out = ServiceOutput::new(&spec.name)
                .map(|(out, _first)| out)
                .map_err(|e| spawn_failed_io("output pipes", &e))?;
            for fd in out.fds() {
                let token = TOKEN_OUTPUT | u64::from(id.0);
                if let Err(e) = self
                    .epoll
                    .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
                {
                    return Err(fail(format!("output pipe: epoll: {e}")));
                }
            }
            self.rt.row(id).output = Some(out);
            *stored = true;
        }
        // The notify socket, for notify services, owned by the service's
        // user.
        if spec.notify != NotifyMode::None {
            let resolved_for = Some(spec.user.clone());
            if self.rt.row(id).notify_user != resolved_for {
                // The uid resolved off the loop (resolver.rs): a start is
                // held until it is known.
                let uid = match notify::service_uid(spec) {
                    Ok(uid) => uid,
                    Err(e) => return Err(fail(format!("notify socket: {e}"))),
                };
                if let Some(sock) = self.rt.row(id).notify.as_mut() {
                    if let Err(e) = sock.set_owner(uid) {
                        return Err(fail(format!(
                            "notify socket {}: {e}",
                            sock.path().display()
                        )));
                    }
                } else {
                    let path = self
                        .run_dir
                        .join("notify")
                        .join(format!("{}.sock", spec.name));
                    match NotifySocket::bind(&path, uid) {
                        Ok(sock) => {
                            let token = TOKEN_NOTIFY | u64::from(id.0);
                            if let Err(e) = self
                                .epoll
                                .add(sock.fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
                            {
                                return Err(fail(format!("notify socket: epoll: {e}")));
                            }
                            self.rt.row(id).notify = Some(sock);
                            *stored = true;
                        }
                        Err(e) => {
                            return Err(spawn_failed_io(
                                &format!("notify socket {}", path.display()),
                                &e,
                            ))
                        }
                    }
                }
                self.rt.row(id).notify_user = resolved_for;
            }
        } else if let Some(sock) = self.rt.row(id).notify.take() {
            self.rt.row(id).notify_user = None;
            let _ = self.epoll.delete(sock.fd());
            *stored = true;
        }
        // The cgroup, when cgroups are in use.
        if self.rt.row(id).cgroup.is_none() {
            if let Some(cg) = &self.cgroups {
                match cg.prepare(&spec.name) {
                    Ok(c) => self.rt.row(id).cgroup = Some(c),
                    Err(e) => {
                        if !self.cgroup_warned {
                            warn!(
                                "cgroup for {}: {e}; services are bounded by their process group",
                                spec.name
                            );
                            self.cgroup_warned = true;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// `Action::Spawn`: starts the process with what the service's row
    /// holds (a provision that had failed is tried again first).
    fn spawn(&mut self, id: ServiceId) -> Event {
        let Some(spec) = self.sup.spec(id).cloned() else {
            return Event::SpawnFailed {
                errno: None,
                message: "unknown service".into(),
            };
        };
        let incomplete = self.rt.get(id).is_none_or(|r| {
            r.provision_error.is_some()
                || r.output.is_none()
                || (spec.notify != NotifyMode::None) != r.notify.is_some()
        });
        if incomplete {
            if let Err(e) = self.provision(id) {
                return e;
            }
        }
        let Some(r) = self.rt.get_mut(id) else {
            return Event::SpawnFailed {
                errno: None,
                message: "no resources".into(),
            };
        };
        let pipes = match r.output.as_mut().map(|o| o.reopen()) {
            Some(Ok(p)) => p,
            Some(Err(e)) => return spawn_failed_io("output pipes", &e),
            None => {
                return Event::SpawnFailed {
                    errno: None,
                    message: "no output pipes".into(),
                }
            }
        };
        // Stale datagrams dropped: a READY=1 of a previous run must not
        // make this one ready.
        if let Some(sock) = r.notify.as_mut() {
            let stale = sock.receive(None);
            if !stale.is_empty() {
                debug!(
                    "service {}: {} stale notify datagram(s) dropped",
                    spec.name,
                    stale.len()
                );
            }
        }
        let notify_path = r.notify.as_ref().map(|s| s.path().to_path_buf());
        let r = &self.rt.get(id).expect("checked above");
        let ctx = SpawnContext {
            pipes,
            notify_socket: notify_path.as_deref(),
            cgroup_procs: r.cgroup.as_ref().map(|c| c.procs_fd()),
            base_nofile: self.base_nofile,
            journal: self.journal.fd(),
            helper: spawn::HELPER.as_ref(),
            exec_status: Some(self.exec_status.write_end()),
        };
        match spawn::spawn(&mut self.spawner, &spec, ctx) {
            Ok(pid) => {
                let r = self.rt.row(id);
                r.start_time = spawn::proc_start_time(pid).unwrap_or(0);
                if let Some(out) = r.output.as_mut() {
                    out.set_pid(pid);
                }
                Event::Spawned { pid }
            }
            Err(e) => Event::SpawnFailed {
                errno: e.errno,
                message: e.message,
            },
        }
    }

    fn kill(&mut self, id: ServiceId, pid: i32, group: bool, signal: i32) {
        let Ok(sig) = Signal::try_from(signal) else {
            return;
        };
        let target = nix::unistd::Pid::from_raw(if group { -pid } else { pid });
        match nix::sys::signal::kill(target, sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => warn!("kill({}, {}): {e}", target, sig.as_str()),
        }
        if !group {
            return;
        }
        if let Some(cg) = self.rt.get(id).and_then(|r| r.cgroup.as_ref()) {
            if signal == libc::SIGKILL {
                if let Err(e) = cg.kill() {
                    warn!("{}/cgroup.kill: {e}", cg.dir().display());
                }
            } else {
                cg.signal(signal);
            }
        }
    }

    fn forget(&mut self, id: ServiceId) {
        self.unwatch(id);
        let Some(r) = self.rt.get_mut(id) else {
            return;
        };
        let r = std::mem::take(r);
        if let Some(mut out) = r.output {
            for fd in out.fds() {
                let _ = self.epoll.delete(fd);
            }
            out.close_write_ends();
            out.finish_process(&mut self.syslog, MonoTime::now());
        }
        if let Some(sock) = r.notify {
            let _ = self.epoll.delete(sock.fd());
        }
        if let Some(cg) = r.cgroup {
            let dir = cg.dir().to_path_buf();
            if let Err(e) = cg.remove() {
                debug!("removing {}: {e}", dir.display());
            }
        }
    }

    fn write_state(&mut self) {
        self.state_dirty = false;
        let entries: Vec<state_file::Entry> = self
            .sup
            .resumes()
            .into_iter()
            .map(|(id, name, stop_timeout, r)| {
                let pid = r.pid.unwrap_or(0);
                let (history, level) = r.history.parts();
                state_file::Entry {
                    name: name.to_string(),
                    pid,
                    pgid: pid,
                    start_time: if pid > 0 {
                        self.rt.get(id).map_or(0, |r| r.start_time)
                    } else {
                        0
                    },
                    stop_timeout,
                    saved: Some(state_file::Saved {
                        restarts: r.restarts,
                        started: r.started,
                        ready: r.ready,
                        watchdog_timeout: r.watchdog_timeout,
                        history,
                        level,
                        wanted: r.wanted,
                        failed: r.failed,
                    }),
                }
            })
            .collect();
        let path = self.run_dir.join(state_file::FILE_NAME);
        match state_file::write(&path, &entries) {
            Ok(()) => {
                if let Err(e) = self.journal.clear() {
                    debug!("emptying {}: {e}", state_file::JOURNAL_NAME);
                }
                if self.state_retry_at.take().is_some() {
                    info!("writing {} works again", path.display());
                }
            }
            Err(e) => {
                if self.state_retry_at.is_none() {
                    error!(
                        "writing {}: {e} (supervision goes on; retrying every {}s)",
                        path.display(),
                        STATE_RETRY.as_secs()
                    );
                }
                self.state_retry_at = Some(MonoTime::now() + STATE_RETRY);
            }
        }
    }

    /// Writes `RUN/shutdown-request` and sends `code` to init.
    fn request_shutdown(&mut self, code: Code, reason: &str) -> Result<(), String> {
        let what = match code {
            Code::Reboot => "reboot",
            Code::Poweroff => "poweroff",
            Code::Halt => "halt",
            _ => "shutdown",
        };
        let Some(i) = self.init_pipe else {
            let msg = format!(
                "{what} requested ({reason}) but not possible: not started by tether-init (no init pipe in {ENV_FDS})"
            );
            return Err(msg);
        };
        let line = format!("{reason}\n");
        if let Err(e) =
            tether_common::record::write_atomic(&self.run_dir, SHUTDOWN_REQUEST, line.as_bytes())
        {
            error!("{e}");
        }
        logging::alert(format_args!(
            "requesting an orderly {what} from init: {reason}"
        ));
        match self.beats[i].send(code) {
            Ok(Sent::Written) => {}
            Ok(Sent::PipeFull) => {
                warn!("init pipe full: the {what} request is retried at the next beat");
                self.pending_code = Some(code);
            }
            Err(e) => {
                self.pending_code = Some(code);
                return Err(format!("{what} request: init pipe: {e}"));
            }
        }
        Ok(())
    }

    // ---- services -------------------------------------------------------------

    fn load_services(&mut self, now: MonoTime) {
        if self.loaded {
            return;
        }
        self.loaded = true;
        if self.load_adopting(now) {
            self.state_dirty = true;
            return;
        }
        let mut set = service::load_dir(&self.services_dir);
        self.ask_identities(&mut set.specs, now);
        if let Some(e) = &set.dir_error {
            error!("services directory: {e}; no services (fix it, then reload)");
            self.config_errors.push(e.to_string());
        }
        let n = set.specs.len();
        let bad = set.errors.len();
        info!(
            "{n} service(s) from {}{}",
            self.services_dir.display(),
            if bad > 0 {
                format!(", {bad} with errors")
            } else {
                String::new()
            }
        );
        self.log_fd_budget(&set.specs);
        let actions = self.sup.load(set, now);
        self.execute(actions, now);
        self.state_dirty = true;
    }

    /// The restarter's soft `RLIMIT_NOFILE` (after its own raise).
    fn nofile_limit(&self) -> u64 {
        spawn::current_nofile().0
    }

    /// Says how many services fit under the descriptor limit (a warning
    /// when some do not).
    fn log_fd_budget(&self, specs: &[service::ServiceSpec]) {
        let b = spawn::fd_budget(specs, self.cgroups.is_some(), spawn::current_nofile().0);
        if b.fits() {
            info!("{b}");
        } else {
            warn!("{b}");
        }
    }

    /// Reloads the services directory; `Err` (nothing changed) lists the
    /// errors.
    fn reload(&mut self, now: MonoTime) -> Result<String, String> {
        let mut set: LoadedSet = service::load_dir(&self.services_dir);
        if !set.has_errors() {
            self.ask_identities(&mut set.specs, now);
        }
        if !set.has_errors() {
            self.log_fd_budget(&set.specs);
        }
        match self.sup.reload(set, now) {
            Ok(actions) => {
                self.reload_errors.clear();
                self.config_errors
                    .retain(|e| !e.starts_with(&self.services_dir.display().to_string()));
                self.execute(actions, now);
                Ok(String::from("reloaded"))
            }
            Err(e) => {
                self.reload_errors = e.lines().map(str::to_string).collect();
                Err(e)
            }
        }
    }

    /// Kills what is left in service cgroups after the state-file sweep
    /// (processes that had left their process group).
    fn sweep_cgroups(&mut self) {
        let Some(cg) = &self.cgroups else { return };
        for name in cg.children() {
            if let Some(c) = cg.existing(&name) {
                if !c.is_empty() {
                    warn!("cgroup of service {name} still has processes of a previous restarter: SIGKILL");
                    if let Err(e) = c.kill() {
                        warn!("{}: {e}", c.dir().display());
                    }
                }
            }
        }
    }

    // ---- identities (resolver.rs) --------------------------------------------

    /// Gives each spec of a freshly read set the identity known so far for
    /// its `user`/`group` (a reload keeps the previous one meanwhile) and
    /// asks for a lookup of every pair, off the loop.
    fn ask_identities(&mut self, specs: &mut [service::ServiceSpec], now: MonoTime) {
        for spec in specs {
            let Some(key) = Resolver::key(spec.user.as_deref(), spec.group.as_deref()) else {
                continue;
            };
            if let Some(r @ Resolution::Resolved(_)) = self.resolver.known(&key) {
                spec.identity = r.clone();
            }
            self.resolver.ask(&key, now);
        }
    }

    /// Holds a start whose identity is not resolved yet (asking for it
    /// again if the last lookup failed); `true` when held.
    fn hold_for_identity(&mut self, id: ServiceId, now: MonoTime) -> bool {
        let Some(spec) = self.sup.spec(id) else {
            return false;
        };
        if matches!(spec.identity, Resolution::Resolved(_)) {
            return false;
        }
        let Some(key) = Resolver::key(spec.user.as_deref(), spec.group.as_deref()) else {
            return false;
        };
        if !self.resolver.asking(&key) {
            self.resolver.ask(&key, now);
        }
        debug!(
            "service {}: start held: resolving {}",
            spec.name,
            resolver::describe(&key)
        );
        self.awaiting.insert(id, key);
        true
    }

    /// Answers of the lookup thread: every service naming the pair takes
    /// the identity, held starts go on (or fail, per policy).
    fn on_identities(&mut self, now: MonoTime) {
        for (key, r) in self.resolver.take() {
            if let Resolution::Failed { message, .. } = &r {
                warn!("{}: {message}", resolver::describe(&key));
            }
            let actions = self
                .sup
                .identity_resolved(key.0.as_deref(), key.1.as_deref(), &r, now);
            self.execute(actions, now);
            let held: Vec<ServiceId> = self
                .awaiting
                .iter()
                .filter(|(_, k)| **k == key)
                .map(|(id, _)| *id)
                .collect();
            for id in held {
                self.awaiting.remove(&id);
                let event = match &r {
                    Resolution::Failed { errno, message } => Event::SpawnFailed {
                        errno: *errno,
                        message: message.clone(),
                    },
                    _ => self.spawn(id),
                };
                let actions = self.sup.handle(id, event, now);
                self.execute(actions, now);
                self.maybe_beat();
            }
            self.state_dirty = true;
        }
    }

    /// Logs a lookup that takes long (once); at shutdown, held starts end
    /// as failed (a lookup that never returns must not hold it up).
    fn identity_timers(&mut self, now: MonoTime) {
        for (key, waited) in self.resolver.newly_slow(now) {
            let held = self.awaiting.values().filter(|k| **k == key).count();
            warn!(
                "looking up {} takes long ({} so far): {held} service(s) wait for it",
                resolver::describe(&key),
                tether_common::duration::format(waited)
            );
        }
        if self.sup.shutting_down() && !self.awaiting.is_empty() {
            for (id, key) in std::mem::take(&mut self.awaiting) {
                let event = Event::SpawnFailed {
                    errno: None,
                    message: format!("shutting down while resolving {}", resolver::describe(&key)),
                };
                let actions = self.sup.handle(id, event, now);
                self.execute(actions, now);
            }
        }
    }

    // ---- control -------------------------------------------------------------

    fn on_control(&mut self, now: MonoTime) {
        let Some(server) = self.control.as_mut() else {
            return;
        };
        let incoming = server.poll(now);
        for req in incoming {
            let response = self.answer(&req, now);
            if let Some(server) = self.control.as_mut() {
                server.reply(req.client, response);
            }
        }
    }

    fn answer(&mut self, req: &Incoming, now: MonoTime) -> Response {
        let by = format!("by uid {} (pid {})", req.peer.uid, req.peer.pid);
        if req.request.changes_state() {
            info!("control: {} {by}", req.request);
        }
        if !self.loaded && !matches!(req.request, Request::Status { .. }) {
            return Response::Error("starting: stopping leftovers of a previous restarter".into());
        }
        let done = |r: Result<(String, Vec<Action>), String>, shell: &mut Shell| match r {
            Ok((note, actions)) => {
                shell.execute(actions, now);
                Response::Ok(note)
            }
            Err(e) => Response::Error(e),
        };
        match &req.request {
            Request::Status { name, json } => {
                let mut report = self.status(now);
                if let Some(n) = name {
                    if !report.retain_service(n) {
                        return Response::Error(format!("no service named {n:?}"));
                    }
                }
                Response::Status(report, *json)
            }
            Request::Start(n) => {
                let r = self.sup.start(n, now);
                done(r, self)
            }
            Request::Stop(n) => {
                let r = self.sup.stop(n, now);
                done(r, self)
            }
            Request::Restart(n) => {
                let r = self.sup.restart(n, now);
                done(r, self)
            }
            Request::Signal(n, sig) => match self.sup.signal(n, *sig) {
                Ok(actions) => {
                    self.execute(actions, now);
                    Response::Ok(String::new())
                }
                Err(e) => Response::Error(e),
            },
            Request::Reload => match self.reload(now) {
                Ok(body) => Response::Ok(body),
                Err(e) => {
                    error!("reload refused, nothing changed: {e}");
                    Response::Error(format!(
                        "reload refused, nothing changed: {}",
                        e.replace('\n', "; ")
                    ))
                }
            },
            Request::Upgrade(layer) => self.upgrade(*layer, now),
            Request::Reboot | Request::Poweroff | Request::Halt => {
                let (code, what) = match req.request {
                    Request::Reboot => (Code::Reboot, "reboot"),
                    Request::Poweroff => (Code::Poweroff, "poweroff"),
                    _ => (Code::Halt, "halt"),
                };
                match self.request_shutdown(code, &format!("tetherctl {what} {by}")) {
                    Ok(()) => Response::Ok(String::new()),
                    Err(e) => {
                        error!("{e}");
                        Response::Error(e)
                    }
                }
            }
        }
    }

    fn status(&self, now: MonoTime) -> StatusReport {
        let services = self
            .sup
            .rows(now)
            .into_iter()
            .map(|r| {
                let rt = self.rt.get(r.id);
                let dropped = rt
                    .and_then(|x| x.output.as_ref())
                    .map_or(0, |o| o.dropped());
                let sock = rt.and_then(|x| x.notify.as_ref());
                let sock_rejected = sock.map_or(0, |s| s.rejected());
                ServiceStatus {
                    name: r.name,
                    state: r.state.to_string(),
                    pid: r.pid,
                    uptime_ms: r.uptime.map(|d| d.as_millis() as u64),
                    restarts: r.restarts,
                    last_exit: r.last_exit,
                    ready: r.ready,
                    watchdog_deadline_ms: r.watchdog_left.map(|d| d.as_millis() as u64),
                    dropped_lines: dropped,
                    notify_rejected: r.notify_rejected + sock_rejected,
                    notify_refused: r.notify_rejected + sock.map_or(0, |s| s.refused()),
                    notify_last_refusal: sock.and_then(|s| s.last_refusal()).map(|r| r.to_string()),
                    status_text: match self.awaiting.get(&r.id) {
                        Some(key) => Some(format!("resolving {}", resolver::describe(key))),
                        None => r.status_text,
                    },
                    error: r.error,
                }
            })
            .collect::<Vec<_>>();
        let mut config_errors = self.config_errors.clone();
        config_errors.extend(
            services
                .iter()
                .filter(|s| s.state == "config-error")
                .filter_map(|s| s.error.clone()),
        );
        config_errors.extend(
            self.reload_errors
                .iter()
                .map(|e| format!("reload refused: {e}")),
        );
        StatusReport {
            restarter_pid: std::process::id() as i32,
            uptime_ms: now.saturating_since(self.started).as_millis() as u64,
            services,
            config_errors,
            syslog_up: self.syslog.is_up(),
            control_rejected: self.control.as_ref().map_or(0, |c| c.rejected()),
        }
    }

    fn liveness(&mut self, _now: MonoTime) {
        let s = self.sup.summary();
        let dropped: u64 = self
            .rt
            .iter()
            .filter_map(|r| r.output.as_ref())
            .map(|o| o.dropped())
            .sum();
        let word = if s.up < s.expected || s.failed > 0 {
            "degraded"
        } else {
            "ok"
        };
        log::log!(
            Level::Info,
            "liveness: restarter {word} {}/{} up, {} failed, {} config errors, syslog {}, {dropped} lines dropped",
            s.up,
            s.expected,
            s.failed,
            s.broken,
            if self.syslog.is_up() { "up" } else { "down" }
        );
    }

    /// After the last service stopped at shutdown.
    fn finish(&mut self) {
        let now = MonoTime::now();
        for r in self.rt.iter_mut() {
            if let Some(out) = r.output.as_mut() {
                out.finish_process(&mut self.syslog, now);
                out.flush(&mut self.syslog, now);
            }
        }
        // Every service stopped: the file names nothing (a counter of a
        // service is not carried over a clean stop), and nothing of ours is
        // left in the store.
        let path = self.run_dir.join(state_file::FILE_NAME);
        if let Err(e) = state_file::write(&path, &[]) {
            error!("writing {}: {e}", path.display());
        }
        let _ = self.journal.clear();
        if let Some(store) = self.store.as_mut() {
            store.drain_all();
        }
        for r in self.rt.take_all() {
            if let Some(cg) = r.cgroup {
                let _ = cg.remove();
            }
        }
        info!("every service stopped: exiting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_override_the_file() {
        let o = Options::parse(&args(&[
            "--config",
            "/x.toml",
            "--run-dir",
            "/r",
            "--services",
            "/s",
            "--no-cgroup",
        ]))
        .unwrap();
        assert_eq!(o.config, PathBuf::from("/x.toml"));
        assert_eq!(o.run_dir, Some(PathBuf::from("/r")));
        assert_eq!(o.services, Some(PathBuf::from("/s")));
        assert!(o.no_cgroup);
        assert_eq!(
            Options::parse::<String>(&[]).unwrap().config,
            PathBuf::from("/etc/tether/tether.toml")
        );
        assert!(Options::parse(&args(&["--bogus"])).is_err());
        assert!(Options::parse(&args(&["--config"])).is_err());
        assert!(Options::parse(&args(&["--no-cgroup", "--cgroup-root", "/x"])).is_err());
    }
}
