//! Helpers for restarter tests: a real `tether-restarter` in a scratch
//! directory with its own syslog socket, service files and scripts,
//! `tetherctl` against it, and waiting for states, pids and log lines.
//!
//! ```no_run
//! use std::time::Duration;
//! use tether_integration::svc::Restarter;
//! let r = Restarter::builder("demo")
//!     .service("a", r#"exec = ["/bin/sleep", "1000"]"#)
//!     .start();
//! let pid = r.wait_pid("a", Duration::from_secs(5));
//! r.wait_state("a", "running", Duration::from_secs(5));
//! let line = r.log.wait_for("service a started", Duration::from_secs(5));
//! ```
//!
//! Layout of the scratch directory: `tether.toml`, `services/`, `run/`
//! (runtime directory: `control.sock`, `notify/`, `restarter.state`),
//! `state/`, `log.sock` (the syslog socket the test reads), `stderr.log`
//! (the restarter's stderr), and whatever scripts a test writes.
//!
//! Every process the restarter starts inherits `SVC_TEST_TAG=<scratch dir>`
//! (the restarter passes its environment on); on drop, the restarter is
//! killed and then every process carrying the tag, so no test leaks
//! services, whatever happened.

use crate::bins::{bin, TempDir};
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The variable every service of a test restarter inherits.
pub const TAG_VAR: &str = "SVC_TEST_TAG";

/// One datagram received on the test's syslog socket.
#[derive(Clone, Debug)]
pub struct LogLine {
    pub at: Instant,
    pub text: String,
}

#[derive(Default)]
struct LogState {
    lines: Vec<LogLine>,
}

/// A syslog socket: a thread records every datagram with its arrival time.
pub struct LogSink {
    path: PathBuf,
    state: Arc<(Mutex<LogState>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LogSink {
    pub fn bind(path: &Path) -> LogSink {
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path).expect("bind the test syslog socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let state: Arc<(Mutex<LogState>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("svc-syslog".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::SeqCst) {
                        if let Ok(n) = sock.recv(&mut buf) {
                            let line = LogLine {
                                at: Instant::now(),
                                text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                            };
                            let (m, cv) = &*state;
                            m.lock().unwrap_or_else(|e| e.into_inner()).lines.push(line);
                            cv.notify_all();
                        }
                    }
                })
                .expect("spawn the syslog thread")
        };
        LogSink {
            path: path.to_path_buf(),
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.state
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .clone()
    }

    /// Every line so far, as text.
    pub fn texts(&self) -> Vec<String> {
        self.lines().into_iter().map(|l| l.text).collect()
    }

    /// Lines containing `needle`.
    pub fn matching(&self, needle: &str) -> Vec<LogLine> {
        self.lines()
            .into_iter()
            .filter(|l| l.text.contains(needle))
            .collect()
    }

    /// Waits for the first line (from the start) matching `pred`.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<LogLine> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.state;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(l) = g.lines.iter().find(|l| pred(&l.text)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for a line containing `needle`; panics with every line seen
    /// when none comes within `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> LogLine {
        match self.wait_until(timeout, |t| t.contains(needle)) {
            Some(l) => l,
            None => panic!(
                "no log line containing {needle:?} within {timeout:?}; lines:\n{}",
                self.texts().join("\n")
            ),
        }
    }

    /// Waits until `n` lines contain `needle`; returns them.
    pub fn wait_for_count(&self, needle: &str, n: usize, timeout: Duration) -> Vec<LogLine> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.matching(needle);
            if found.len() >= n {
                return found;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} of {n} log lines containing {needle:?} within {timeout:?}; lines:\n{}",
                    found.len(),
                    self.texts().join("\n")
                );
            }
            let (m, cv) = &*self.state;
            let g = m.lock().unwrap_or_else(|e| e.into_inner());
            let _ = cv.wait_timeout(g, Duration::from_millis(50));
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How to start a test restarter.
pub struct Builder {
    dir: TempDir,
    timing: String,
    toml_extra: String,
    raw_config: Option<String>,
    services: Vec<(String, String)>,
    args: Vec<String>,
    env: Vec<(OsString, OsString)>,
    fds: Vec<(OwnedFd, RawFd)>,
    nofile: Option<(u64, u64)>,
    binary: Option<PathBuf>,
}

impl Builder {
    /// Runs this `tether-restarter` executable instead of the workspace's
    /// (e.g. a copy a test replaces, as a package upgrade would).
    pub fn binary(mut self, path: &Path) -> Builder {
        self.binary = Some(path.to_path_buf());
        self
    }

    /// The same as [`Builder::binary`] (e.g. [`fault_inject_restarter`]).
    pub fn bin(self, path: PathBuf) -> Builder {
        self.binary(&path)
    }

    /// Adds `services/NAME.toml` with `text`.
    pub fn service(mut self, name: &str, text: &str) -> Builder {
        self.services.push((name.to_string(), text.to_string()));
        self
    }

    /// Appends to `tether.toml` (after the test defaults: `[timing]`,
    /// `[log]`, `[paths]` are already there; add other sections, or use
    /// [`Builder::toml_replace`]).
    pub fn toml(mut self, text: &str) -> Builder {
        self.toml_extra.push_str(text);
        self.toml_extra.push('\n');
        self
    }

    /// Replaces the whole of `tether.toml` (the runtime and services
    /// directories are then passed with `--run-dir` and `--services`).
    pub fn raw_config(mut self, text: &str) -> Builder {
        self.raw_config = Some(text.to_string());
        self
    }

    /// Replaces the body of `[timing]` (default `beat_interval = "100ms"`).
    pub fn timing(mut self, body: &str) -> Builder {
        self.timing = body.to_string();
        self
    }

    /// Extra command-line arguments.
    pub fn arg(mut self, a: &str) -> Builder {
        self.args.push(a.to_string());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Builder {
        self.env.push((k.into(), v.into()));
        self
    }

    /// A variable whose value is any bytes (not necessarily UTF-8).
    pub fn env_os(self, k: &str, v: &std::ffi::OsStr) -> Builder {
        self.env_os_pair(std::ffi::OsStr::new(k), v)
    }

    /// A variable whose name and value are any bytes.
    pub fn env_os_pair(mut self, k: &std::ffi::OsStr, v: &std::ffi::OsStr) -> Builder {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Starts the restarter with this `RLIMIT_NOFILE` (soft, hard), through
    /// `prlimit(1)` (which execs it: the pid is the restarter's).
    pub fn nofile(mut self, soft: u64, hard: u64) -> Builder {
        self.nofile = Some((soft, hard));
        self
    }

    /// Hands `fd` to the restarter at descriptor `target` (e.g. heartbeat
    /// pipes with `TETHER_FDS=init=3,watchdog=4`).
    pub fn fd(mut self, fd: OwnedFd, target: RawFd) -> Builder {
        self.fds.push((fd, target));
        self
    }

    /// The scratch directory (to write scripts before starting).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes an executable script `DIR/NAME` and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        write_script(self.dir.path(), name, body)
    }

    pub fn start(self) -> Restarter {
        let Builder {
            dir,
            timing,
            toml_extra,
            raw_config,
            services,
            mut args,
            env,
            fds,
            nofile,
            binary,
        } = self;
        let services_dir = dir.join("services");
        let run = dir.join("run");
        for d in [&services_dir, &run, &dir.join("state")] {
            std::fs::create_dir_all(d).expect("scratch directories");
        }
        let log_path = dir.join("log.sock");
        let log = LogSink::bind(&log_path);
        let config = dir.join("tether.toml");
        let toml = format!(
            "[timing]\n{}\n\n[log]\nsyslog_socket = \"{}\"\nkmsg = false\nstderr = true\n\n\
             [paths]\nservices = \"{}\"\nrun = \"{}\"\nstate = \"{}\"\n\n{}",
            timing,
            log_path.display(),
            services_dir.display(),
            run.display(),
            dir.join("state").display(),
            toml_extra
        );
        let toml = match raw_config {
            None => toml,
            Some(text) => {
                args.extend(["--run-dir".to_string(), run.display().to_string()]);
                args.extend(["--services".to_string(), services_dir.display().to_string()]);
                text
            }
        };
        std::fs::write(&config, toml).expect("write tether.toml");
        for (name, text) in &services {
            std::fs::write(services_dir.join(format!("{name}.toml")), text)
                .expect("write a service file");
        }
        let mut r = Restarter {
            config,
            run,
            services: services_dir,
            log,
            child: None,
            args,
            env,
            nofile,
            binary,
            dir,
        };
        r.spawn(fds);
        r
    }
}

/// Writes an executable script `dir/name`.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
    path
}

/// A running `tether-restarter` in its scratch directory.
pub struct Restarter {
    pub config: PathBuf,
    pub run: PathBuf,
    pub services: PathBuf,
    pub log: LogSink,
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(OsString, OsString)>,
    nofile: Option<(u64, u64)>,
    binary: Option<PathBuf>,
    // Last: removed after everything else is dropped.
    dir: TempDir,
}

impl Restarter {
    pub fn builder(label: &str) -> Builder {
        Builder {
            dir: TempDir::new(label),
            timing: "beat_interval = \"100ms\"".to_string(),
            toml_extra: String::new(),
            raw_config: None,
            services: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            fds: Vec::new(),
            nofile: None,
            binary: None,
        }
    }

    /// A restarter with these services (`name`, file text) and defaults.
    pub fn start(label: &str, services: &[(&str, &str)]) -> Restarter {
        let mut b = Restarter::builder(label);
        for (n, t) in services {
            b = b.service(n, t);
        }
        b.start()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes an executable script in the scratch directory.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        write_script(self.dir.path(), name, body)
    }

    fn spawn(&mut self, fds: Vec<(OwnedFd, RawFd)>) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .expect("stderr.log");
        let exe = self
            .binary
            .clone()
            .unwrap_or_else(|| bin("tether-restarter"));
        let mut cmd = match self.nofile {
            None => Command::new(&exe),
            Some((soft, hard)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}")).arg("--").arg(&exe);
                c
            }
        };
        cmd.arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .env(TAG_VAR, self.dir.path())
            .env("TETHER_SYSLOG_SOCKET", self.log.path())
            .env("TETHER_KMSG", "0")
            .env_remove("TETHER_FDS")
            .envs(self.env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stderr.try_clone().expect("dup")))
            .stderr(Stdio::from(stderr));
        let child = if fds.is_empty() {
            cmd.spawn()
        } else {
            let pairs: Vec<(std::os::fd::BorrowedFd<'_>, RawFd)> =
                fds.iter().map(|(f, t)| (f.as_fd(), *t)).collect();
            tether_common::sys::spawn_with_fds(&mut cmd, &pairs)
        }
        .expect("spawn tether-restarter");
        drop(fds);
        self.child = Some(child);
    }

    /// The restarter's pid.
    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("restarter running")
    }

    /// Starts the restarter again on the same directory (after
    /// [`kill9`](Self::kill9) or [`stop`](Self::stop)).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the restarter still runs");
        self.spawn(Vec::new());
    }

    /// [`start_again`](Self::start_again) with descriptors handed at fixed
    /// numbers (a fake init's fd store and relay).
    pub fn start_again_with_fds(&mut self, fds: Vec<(OwnedFd, RawFd)>) {
        assert!(self.child.is_none(), "the restarter still runs");
        self.spawn(fds);
    }

    /// `SIGKILL`, then reaped. Its services keep running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal to the restarter.
    pub fn signal(&self, sig: i32) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        nix::sys::signal::kill(
            pid,
            nix::sys::signal::Signal::try_from(sig).expect("signal"),
        )
        .expect("kill");
    }

    /// Waits for the restarter to exit (panics after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("restarter running");
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return st;
            }
            if Instant::now() >= deadline {
                panic!(
                    "tether-restarter did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `SIGTERM`, then waits for the exit.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    /// Whether the restarter still runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// The restarter's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Writes (or replaces) `services/NAME.toml`.
    pub fn write_service(&self, name: &str, text: &str) {
        let path = self.services.join(format!("{name}.toml"));
        let tmp = self.services.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write a service file");
        std::fs::rename(&tmp, path).expect("rename a service file");
    }

    pub fn remove_service(&self, name: &str) {
        std::fs::remove_file(self.services.join(format!("{name}.toml")))
            .expect("remove a service file");
    }

    /// Runs `tetherctl --run-dir RUN ARGS...`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("tetherctl"))
            .arg("--run-dir")
            .arg(&self.run)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tetherctl")
    }

    /// `tetherctl status --json`, parsed; `None` when it fails (not up yet).
    pub fn try_status(&self) -> Option<serde_json::Value> {
        let out = self.ctl(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn status(&self) -> serde_json::Value {
        match self.try_status() {
            Some(v) => v,
            None => panic!(
                "tetherctl status failed: {:?}\nstderr:\n{}",
                self.ctl(&["status", "--json"]),
                self.stderr()
            ),
        }
    }

    /// The status object of service `name`.
    pub fn service_status(&self, name: &str) -> Option<serde_json::Value> {
        let st = self.try_status()?;
        st["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    }

    /// Waits until service `name` is in `state` (as `tetherctl status`
    /// says); returns its status object.
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(s) = self.service_status(name) {
                if s["state"] == state {
                    return s;
                }
                last = Some(s);
            }
            if Instant::now() >= deadline {
                panic!(
                    "service {name} not {state} within {timeout:?}; last status {last:?}\nlog:\n{}\nstderr:\n{}",
                    self.log.texts().join("\n"),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The state file's entries: (name, pid, start time).
    pub fn state_entries(&self) -> Vec<(String, i32, u64)> {
        let text = std::fs::read_to_string(self.run.join("restarter.state")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(3)?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// The pid of service `name` from the state file.
    pub fn state_pid(&self, name: &str) -> Option<i32> {
        self.state_entries()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, p, _)| p)
    }

    /// Waits until the state file names a live process for `name`.
    pub fn wait_pid(&self, name: &str, timeout: Duration) -> i32 {
        self.wait_pid_other_than(name, 0, timeout)
    }

    /// Waits until the state file names a live process for `name` other
    /// than `old`.
    pub fn wait_pid_other_than(&self, name: &str, old: i32, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.state_pid(name) {
                if p != old && alive(p) {
                    return p;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "no new pid for {name} (old {old}) within {timeout:?}; state {:?}\nlog:\n{}\nstderr:\n{}",
                    self.state_entries(),
                    self.log.texts().join("\n"),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Live processes started by this restarter (they carry the tag) whose
    /// command line contains `needle`.
    pub fn processes(&self, needle: &str) -> Vec<i32> {
        tagged_processes(self.dir.path())
            .into_iter()
            .filter(|&pid| cmdline(pid).contains(needle))
            .collect()
    }
}

impl Drop for Restarter {
    fn drop(&mut self) {
        self.kill9();
        // Whatever the restarter started, including leftovers.
        for _ in 0..50 {
            let pids = tagged_processes(self.dir.path());
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim_end()
                .to_string()
        })
        .unwrap_or_default()
}

/// Live processes whose environment holds `SVC_TEST_TAG=<dir>`.
pub fn tagged_processes(dir: &Path) -> Vec<i32> {
    let needle = format!("{TAG_VAR}={}", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|&pid| pid != std::process::id() as i32 && alive(pid))
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// The process group of `pid` (field 5 of `/proc/PID/stat`).
pub fn pgid_of(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// A pipe whose read end the test keeps and whose write end goes to a
/// child at a fixed descriptor (fake init: `TETHER_FDS=init=3,watchdog=4`).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    tether_common::heartbeat::pipe().expect("pipe2")
}

/// Everything waiting in a non-blocking read end.
pub fn read_available(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return out,
        }
    }
}

/// `tether-restarter` built with the test-only `fault-inject` feature
/// (`TETHER_FAULT_NSS_STALL=NAME:SECS`, see `restarter/src/spawn.rs`), into
/// `target/fault-inject` like init's (`chain::fault_inject_init`), so the
/// workspace's binary stays free of it. Built once per test binary.
pub fn fault_inject_restarter() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let debug = crate::bins::bin_dir();
        let target = debug
            .parent()
            .expect("target/<profile> has a parent")
            .join("fault-inject");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "tether-restarter",
                "--bin",
                "tether-restarter",
                "--features",
                "fault-inject",
            ])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the fault-inject tether-restarter");
        assert!(
            status.success(),
            "building tether-restarter --features fault-inject failed"
        );
        target.join("debug").join("tether-restarter")
    })
    .clone()
}
