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
mod execute;
mod identity;
mod options;
mod repair;
mod requests;
mod services;
mod setup;
mod starts;
mod upgrade;

pub use options::{Options, USAGE};
use repair::RunRepair;
use setup::take_heartbeats;

use crate::cgroup::Cgroups;
use crate::control::map::{self, Mapped, Sig};
use crate::control::{self, Incoming, Response, Server, StatusReport};
use crate::metrics_file::MetricsFile;
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
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;
use tether_common::clock::MonoTime;
use tether_common::config::Config;
use tether_common::deadlines::Deadlines;
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

/// What the shell wakes for on its own (STYLE.md 4), handled by `on_time`
/// in this order. The supervisor, the leftover sweep, the control server,
/// adoption watches and the resolver keep their own deadlines, folded in by
/// `timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Wake {
    /// Heartbeats (always armed).
    Beat,
    /// Service output buffered while syslog is down, retried.
    Flush,
    /// Drop counts of service output, logged.
    DropReport,
    /// `restarter.state` written again after a failure.
    StateRetry,
    /// The restarter's own lines syslog refused, sent again.
    LogBacklog,
    /// The runtime directory checked for removal (when watched).
    RunCheck,
    /// The liveness line (always armed).
    Liveness,
    /// Starts left for the next loop turn (`starts.rs`).
    StartQueue,
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
    /// The shell's own deadlines (`Wake`).
    wakes: Deadlines<Wake>,
    sweep: Option<Sweep>,
    /// `RUN/restarter.journal`: each started process records itself.
    journal: state_file::Journal,
    loaded: bool,
    state_dirty: bool,
    /// Set while `restarter.state` cannot be written (e.g. `ENOSPC`;
    /// retried at `Wake::StateRetry`). The failure is logged once, the
    /// recovery too.
    state_failing: bool,
    /// The runtime directory, checked every `run_dir::CHECK_INTERVAL`
    /// for being removed (issue 12); `None` if it could not be opened.
    run_watch: Option<RunDir>,
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
    /// Starts left for later loop turns, and what this turn may still
    /// start (`starts.rs`).
    starts: starts::StartQueue,
    /// `[metrics] textfile_dir`: `tether.prom` (metrics_file.rs).
    metrics: Option<MetricsFile>,
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
    // ---- the loop ---------------------------------------------------------

    fn run(&mut self) -> i32 {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let now = MonoTime::now();
            self.starts.new_turn();
            self.on_time(now);
            if self.sup.shutting_down() && self.sup.is_idle() {
                self.finish();
                return 0;
            }
            self.metrics_tick(now);
            if self.state_dirty {
                self.write_state();
            }
            // Our own lines syslog refused while busy, in order.
            self.wakes
                .set(Wake::LogBacklog, logging::flush_pending(MonoTime::now()));
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
        let mut next = self.wakes.first().map_or(now, |(t, _)| t);
        let mut consider = |t: Option<MonoTime>| {
            if let Some(t) = t {
                next = next.min(t);
            }
        };
        consider(self.sup.next_deadline());
        consider(self.watch_deadline());
        consider(self.sweep.as_ref().and_then(|s| s.next_deadline(now)));
        consider(self.control.as_ref().and_then(|c| c.next_deadline()));
        consider(self.resolver.next_deadline());
        consider(self.metrics.as_ref().map(|m| m.deadline()));
        let wait = next.saturating_since(now);
        // Round up: waking a little late beats spinning until the deadline.
        let ms = wait.as_nanos().div_ceil(1_000_000);
        EpollTimeout::try_from(ms as u64).unwrap_or(EpollTimeout::MAX)
    }

    /// Everything whose time has come.
    fn on_time(&mut self, now: MonoTime) {
        let mut due = BTreeSet::new();
        while let Some((_, wake)) = self.wakes.pop_due(now) {
            due.insert(wake);
        }
        if due.remove(&Wake::Beat) {
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
        self.identity_timers(now);
        // In `Wake` order.
        for wake in due {
            match wake {
                Wake::Beat => {}
                Wake::Flush => self.flush_outputs(now),
                Wake::DropReport => self.report_drops(now),
                Wake::StateRetry => self.state_dirty = true,
                // Only wakes the loop: `flush_pending` runs every turn.
                Wake::LogBacklog => {}
                Wake::RunCheck => {
                    self.wakes
                        .set(Wake::RunCheck, Some(now + run_dir::CHECK_INTERVAL));
                    self.check_run_dir(now);
                }
                Wake::StartQueue => self.run_start_queue(now),
                Wake::Liveness => {
                    self.liveness(now);
                    self.wakes.set(
                        Wake::Liveness,
                        Some(now + self.config.timing.liveness_interval),
                    );
                }
            }
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
        self.wakes
            .set(Wake::Beat, Some(now + self.config.timing.beat_interval));
    }

    /// Beats if one is due (between spawns of a long loop turn).
    fn maybe_beat(&mut self) {
        let now = MonoTime::now();
        if self.wakes.get(Wake::Beat).is_none_or(|t| now >= t) {
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
        if hup {
            match map::signal(Sig::Hup, self.context()) {
                Mapped::Run(command) => {
                    info!("SIGHUP: reloading service files");
                    self.run_command(command, "SIGHUP", now);
                }
                Mapped::Refuse(note) => info!("{note}"),
                Mapped::Ignore(note) => info!("{note}"),
            }
        }
        if let Some(s) = term {
            match map::signal(Sig::Term(s.as_str()), self.context()) {
                Mapped::Run(command) => {
                    info!("{}: stopping every service, then exiting", s.as_str());
                    self.run_command(command, s.as_str(), now);
                }
                Mapped::Refuse(note) => info!("{note}"),
                Mapped::Ignore(note) => info!("{note}"),
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
        if out.buffered() > 0 && self.wakes.get(Wake::Flush).is_none() {
            self.wakes.set(Wake::Flush, Some(now + FLUSH_INTERVAL));
        }
        if let Some(t) = out.next_drop_report() {
            let at = self.wakes.get(Wake::DropReport).map_or(t, |d| d.min(t));
            self.wakes.set(Wake::DropReport, Some(at));
        }
    }

    fn flush_outputs(&mut self, now: MonoTime) {
        self.wakes.set(Wake::Flush, None);
        let mut left = false;
        for r in self.rt.iter_mut() {
            if let Some(out) = r.output.as_mut() {
                if out.buffered() > 0 && !out.flush(&mut self.syslog, now) {
                    left = true;
                }
            }
        }
        if left {
            self.wakes.set(Wake::Flush, Some(now + FLUSH_INTERVAL));
        }
    }

    fn report_drops(&mut self, now: MonoTime) {
        self.wakes.set(Wake::DropReport, None);
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
        self.wakes.set(Wake::DropReport, next);
    }

    // ---- actions ------------------------------------------------------------

    // ---- services -------------------------------------------------------------

    // ---- identities (resolver.rs) --------------------------------------------

    // ---- control -------------------------------------------------------------

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
