//! Whole-chain test helpers: `tether-init` as PID 1 of a fresh PID and mount
//! namespace, in a scratch root of its own.
//!
//! [`Chain::start`] lays out a temporary tree
//!
//! ```text
//! DIR/etc/tether/tether.toml      timings, paths into DIR, log socket
//! DIR/etc/tether/services/*.toml  the services
//! DIR/run/  DIR/state/            runtime and state directories
//! DIR/watchdog                    FIFO read by the simulated hardware
//! DIR/log.sock                    the syslog socket every layer logs to
//! ```
//!
//! and runs `unshare --pid --fork --mount-proc --mount --kill-child
//! tether-init --config DIR/etc/tether/tether.toml`. The `unshare` child is
//! init (PID 1 inside); the test finds every process of the namespace from
//! outside through `/proc` (children of init and their descendants, host
//! pids), reads logs from the syslog socket and from init's stderr (which
//! the layers inherit), and sees how the namespace ended from `unshare`'s
//! exit status: `reboot(2)` in a PID namespace kills it, and `unshare`
//! re-raises what its child died of — SIGHUP for a restart, SIGINT for
//! poweroff and halt, SIGKILL when the simulated hardware fired (its reset
//! callback kills init).
//!
//! Layers can be the real binaries (the default: `[paths] bin` is the
//! directory holding the workspace's binaries) or fake shell scripts
//! ([`FakeLayer`]) written into `DIR/fake-bin`, for testing init alone.

use crate::bins::TempDir;
use crate::hw::{LogCapture, LogLine, LogSource, ResetEvent, SimWatchdog, Timings};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_common::config::Config;
use tether_common::duration;

/// Writes a file with mode 0755.
pub fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {}", path.display(), e));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// `[init]` settings.
#[derive(Clone, Debug)]
pub struct InitSettings {
    pub max_restarts: u32,
    pub window: Duration,
    pub stop_timeout: Duration,
    pub kill_grace: Duration,
}

impl Default for InitSettings {
    fn default() -> Self {
        InitSettings {
            max_restarts: 5,
            window: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(3),
            kill_grace: Duration::from_millis(500),
        }
    }
}

/// How to lay out and start a chain.
#[derive(Clone, Debug)]
pub struct ChainOptions {
    pub timings: Timings,
    pub init: InitSettings,
    /// `(name, contents)` of `services/NAME.toml`; `{DIR}` stands for the
    /// chain's scratch directory.
    pub services: Vec<(String, String)>,
    /// `(name, contents)` of executable scripts written to
    /// `DIR/scripts/NAME` before start (`{DIR}` substituted), for services.
    pub scripts: Vec<(String, String)>,
    /// Fake layer scripts instead of the real binaries.
    pub fake: Option<(FakeLayer, FakeLayer)>,
    /// Replaces the generated `tether.toml` entirely (a bad file). Paths
    /// then reach init through flags ([`ChainOptions::paths_as_flags`]).
    pub config_text: Option<String>,
    /// Pass every path to init as a flag (`--bin-dir`, `--run-dir`, ...)
    /// rather than in the file.
    pub paths_as_flags: bool,
    /// Start the simulated hardware (its FIFO at `DIR/watchdog`).
    pub hardware: bool,
    /// More arguments for init.
    pub init_args: Vec<String>,
    /// More environment for init (and so the layers).
    pub env: Vec<(String, String)>,
    /// Start init with standard input closed (through `sh -c 'exec ...
    /// 0<&-'`), as a kernel without `/dev/console` in the initramfs does.
    pub close_stdin: bool,
    /// Another `tether-init` executable (e.g. one built with the test-only
    /// `fault-inject` feature); `None`: the workspace's.
    pub init_bin: Option<PathBuf>,
}

impl Default for ChainOptions {
    fn default() -> Self {
        ChainOptions {
            timings: Timings::fast(),
            init: InitSettings::default(),
            services: Vec::new(),
            scripts: Vec::new(),
            fake: None,
            config_text: None,
            paths_as_flags: false,
            hardware: true,
            init_args: Vec::new(),
            env: Vec::new(),
            close_stdin: false,
            init_bin: None,
        }
    }
}

/// A fake layer: a shell script standing in for `tether-watchdogd` or
/// `tether-restarter`. Each one, at start, appends its namespace pid and the
/// wall-clock time in ns to `DIR/fake/NAME.starts` and its descriptor
/// listing to `DIR/fake/NAME.fds.PID`; then, per kind:
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeLayer {
    /// Beats on its `init` descriptor every `interval`. Between beats it
    /// obeys `DIR/fake/NAME.cmd` (one command, removed when read):
    /// `send X` writes the bytes X to init, `orphan` leaves an orphan
    /// (`( sleep 1 & )`: its parent subshell exits at once), `kill1 SIG`
    /// sends SIG to PID 1. On SIGTERM it logs `NAME: got SIGTERM`, then
    /// either keeps running (`ignore_term`) or waits `term_delay` and
    /// exits 0.
    Beater {
        interval: Duration,
        term_delay: Option<Duration>,
        ignore_term: bool,
    },
    /// Exits with status 1 at once (a crash loop).
    Crasher,
}

impl FakeLayer {
    /// A beater at `interval` that exits at once on SIGTERM.
    pub fn beater(interval: Duration) -> FakeLayer {
        FakeLayer::Beater {
            interval,
            term_delay: None,
            ignore_term: false,
        }
    }

    fn script(&self, name: &str, fake_dir: &Path) -> String {
        let d = fake_dir.display();
        let trap = match self {
            FakeLayer::Crasher => String::new(),
            FakeLayer::Beater {
                ignore_term: true, ..
            } => {
                format!("trap 'echo \"{name}: got SIGTERM, ignoring it\" >&2' TERM\n")
            }
            FakeLayer::Beater { term_delay, .. } => {
                let delay = term_delay
                    .map(|t| format!("sleep {:.3}; ", t.as_secs_f64()))
                    .unwrap_or_default();
                format!("trap 'echo \"{name}: got SIGTERM\" >&2; {delay}exit 0' TERM\n")
            }
        };
        // The trap comes first and `fake started` last, so a test that saw
        // `fake started` knows the trap is in place.
        let head = format!(
            "#!/bin/sh\n\
             {trap}\
             fd=${{TETHER_FDS#init=}}; fd=${{fd%%,*}}\n\
             echo \"$$ $(date +%s%N)\" >> {d}/{name}.starts\n\
             ls -l /proc/self/fd > {d}/{name}.fds.$$ 2>&1\n\
             echo \"{name}: fake started, pid $$\" >&2\n"
        );
        match self {
            FakeLayer::Crasher => format!("{head}exit 1\n"),
            FakeLayer::Beater { interval, .. } => {
                let secs = format!("{:.3}", interval.as_secs_f64());
                format!(
                    "{head}\
                     cmd={d}/{name}.cmd\n\
                     while :; do\n\
                     \x20 printf . >&$fd\n\
                     \x20 if [ -f $cmd ]; then\n\
                     \x20   c=$(cat $cmd); rm -f $cmd\n\
                     \x20   case \"$c\" in\n\
                     \x20     send\\ *) printf '%s' \"${{c#send }}\" >&$fd ;;\n\
                     \x20     orphan) ( sleep 1 & ) ;;\n\
                     \x20     kill1\\ *) kill -s ${{c#kill1 }} 1 ;;\n\
                     \x20   esac\n\
                     \x20 fi\n\
                     \x20 sleep {secs}\n\
                     done\n"
                )
            }
        }
    }
}

/// One open descriptor of a fake layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdEntry {
    pub fd: i32,
    pub readable: bool,
    pub writable: bool,
    /// The link target, e.g. `pipe:[1234]`.
    pub target: String,
}

/// One process of the namespace, seen from outside.
#[derive(Clone, Debug)]
pub struct Proc {
    /// Host pid.
    pub pid: i32,
    pub ppid: i32,
    /// `R`, `S`, `T` (stopped), `Z` (zombie), ...
    pub state: char,
    pub cmdline: Vec<String>,
}

impl Proc {
    /// Whether argv[0] or argv[1] (a script run by `/bin/sh`) is `name`.
    pub fn is(&self, name: &str) -> bool {
        self.cmdline
            .iter()
            .take(2)
            .any(|a| Path::new(a).file_name().is_some_and(|f| f == name))
    }
}

/// Reads `/proc/PID/stat`: state and ppid.
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{}/stat", pid)).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// `/proc/PID/cmdline` split at NULs.
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{}/cmdline", pid))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Direct children of `pid` (every thread's `children` list).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", pid)) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// `pid` and all its descendants.
pub fn tree(pid: i32) -> Vec<Proc> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if let Some((state, ppid)) = proc_stat(p) {
            out.push(Proc {
                pid: p,
                ppid,
                state,
                cmdline: cmdline(p),
            });
            todo.extend(children_of(p));
        }
    }
    out
}

/// `KEY=value` pairs of `/proc/PID/environ`.
pub fn environ(pid: i32) -> Vec<(String, String)> {
    std::fs::read(format!("/proc/{}/environ", pid))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter_map(|kv| {
                    let kv = String::from_utf8_lossy(kv);
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `VmRSS` of a process, in KiB.
pub fn vm_rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{}/status", pid)).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `sig` to a host pid; false if it is gone.
pub fn signal(pid: i32, sig: nix::sys::signal::Signal) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).is_ok()
}

/// Polls `f` every 10 ms until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How a namespace ended, from `unshare`'s status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// `reboot(2)` with `RB_AUTOBOOT` (SIGHUP).
    Reboot,
    /// `RB_POWER_OFF` or `RB_HALT_SYSTEM` (SIGINT).
    PoweroffOrHalt,
    /// init was SIGKILLed (the simulated hardware's reset, or the test);
    /// `unshare` exits 1 then (see [`End::of`]).
    Killed,
    Other(ExitStatus),
}

impl End {
    pub fn of(status: ExitStatus) -> End {
        match status.signal() {
            Some(libc::SIGHUP) => End::Reboot,
            Some(libc::SIGINT) => End::PoweroffOrHalt,
            Some(libc::SIGKILL) => End::Killed,
            // unshare (util-linux 2.38) cannot re-raise SIGKILL on itself:
            // it prints "sigprocmask unblock failed" and exits 1. init
            // itself never exits, so 1 means init was killed.
            None if status.code() == Some(1) => End::Killed,
            _ => End::Other(status),
        }
    }
}

/// A running chain in its own namespaces. Killed on drop.
pub struct Chain {
    pub dir: TempDir,
    pub opts: ChainOptions,
    pub config_path: PathBuf,
    /// The configuration as init should see it (`None` for a bad file).
    pub config: Option<Config>,
    pub services_dir: PathBuf,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub fake_dir: PathBuf,
    pub device_path: PathBuf,
    pub log: LogCapture,
    pub hw: Option<SimWatchdog>,
    /// When `unshare` was started.
    pub started: Instant,
    unshare: Child,
    init_pid: i32,
    status: Option<ExitStatus>,
}

/// The `[timing]`, `[init]`, `[watchdog]`, `[log]` and `[paths]` text.
fn config_text(
    opts: &ChainOptions,
    paths: &[(&str, &Path)],
    device: &Path,
    log_socket: &Path,
) -> String {
    let mut t = opts.timings.toml();
    let i = &opts.init;
    t.push_str(&format!(
        "\n[init]\nmax_restarts = {}\nwindow = \"{}\"\nstop_timeout = \"{}\"\nkill_grace = \"{}\"\n",
        i.max_restarts,
        duration::format(i.window),
        duration::format(i.stop_timeout),
        duration::format(i.kill_grace)
    ));
    t.push_str(&format!(
        "\n[watchdog]\ndevice = {:?}\n",
        device.display().to_string()
    ));
    t.push_str(&format!(
        "\n[log]\nsyslog_socket = {:?}\nkmsg = false\nstderr = true\n",
        log_socket.display().to_string()
    ));
    t.push_str("\n[paths]\n");
    for (k, p) in paths {
        t.push_str(&format!("{} = {:?}\n", k, p.display().to_string()));
    }
    t
}

impl Chain {
    /// Lays out the tree and starts init; returns once init's host pid is
    /// known (not waiting for anything inside).
    pub fn start(label: &str, opts: ChainOptions) -> Chain {
        let dir = TempDir::new(label);
        let etc = dir.join("etc/tether");
        let services_dir = etc.join("services");
        let run_dir = dir.join("run");
        let state_dir = dir.join("state");
        let fake_dir = dir.join("fake");
        let device_path = dir.join("watchdog");
        for d in [&services_dir, &run_dir, &state_dir, &fake_dir] {
            std::fs::create_dir_all(d).expect("create chain directories");
        }
        let scripts_dir = dir.join("scripts");
        std::fs::create_dir_all(&scripts_dir).expect("create scripts dir");
        let subst = |t: &str| t.replace("{DIR}", &dir.path().display().to_string());
        for (name, text) in &opts.scripts {
            write_executable(&scripts_dir.join(name), &subst(text));
        }
        let bin_dir = match &opts.fake {
            None => crate::bins::bin_dir(),
            Some((wd, rst)) => {
                let b = dir.join("fake-bin");
                std::fs::create_dir_all(&b).expect("create fake-bin");
                for (name, layer) in [("tether-watchdogd", wd), ("tether-restarter", rst)] {
                    let short = name.trim_start_matches("tether-");
                    write_executable(&b.join(name), &layer.script(short, &fake_dir));
                }
                b
            }
        };
        for (name, text) in &opts.services {
            std::fs::write(services_dir.join(format!("{}.toml", name)), subst(text))
                .expect("write service");
        }
        let log = LogCapture::new(dir.path());
        let config_path = etc.join("tether.toml");
        let paths: Vec<(&str, &Path)> = vec![
            ("services", &services_dir),
            ("run", &run_dir),
            ("state", &state_dir),
            ("bin", &bin_dir),
        ];
        let generated = config_text(&opts, &paths, &device_path, log.socket_path());
        let text = opts
            .config_text
            .clone()
            .unwrap_or_else(|| generated.clone());
        std::fs::write(&config_path, &text).expect("write tether.toml");
        let config = Config::parse(&text, &config_path).ok();

        let init_pid = Arc::new(AtomicI32::new(0));
        let hw = opts.hardware.then(|| {
            let pid = init_pid.clone();
            let cb: crate::hw::ResetCallback = Box::new(move |_e: &ResetEvent| {
                let p = pid.load(Ordering::SeqCst);
                if p > 0 {
                    signal(p, nix::sys::signal::Signal::SIGKILL);
                }
            });
            SimWatchdog::with_callback(&device_path, opts.timings.hardware_timeout, Some(cb))
        });

        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", "--mount", "--kill-child"]);
        if opts.close_stdin {
            // `exec` keeps PID 1: init replaces the shell.
            cmd.args(["/bin/sh", "-c", "exec \"$0\" \"$@\" 0<&-"]);
        }
        cmd.arg(
            opts.init_bin
                .clone()
                .unwrap_or_else(|| crate::bins::bin("tether-init")),
        )
        .arg("--config")
        .arg(&config_path);
        if opts.paths_as_flags {
            cmd.arg("--bin-dir").arg(&bin_dir);
            cmd.arg("--run-dir").arg(&run_dir);
            cmd.arg("--state-dir").arg(&state_dir);
            cmd.arg("--services").arg(&services_dir);
            cmd.arg("--device").arg(&device_path);
            cmd.arg("--syslog-socket").arg(log.socket_path());
            cmd.arg("--no-kmsg");
        }
        cmd.args(&opts.init_args);
        // Belt and braces: never the host's /dev/log or /dev/kmsg, even on
        // built-in defaults.
        cmd.env("TETHER_SYSLOG_SOCKET", log.socket_path())
            .env("TETHER_KMSG", "0")
            .env_remove("TETHER_LOG");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut unshare = cmd.spawn().expect("spawn unshare (util-linux)");
        let mut log = log;
        if let Some(e) = unshare.stderr.take() {
            log.attach(e);
        }
        if let Some(o) = unshare.stdout.take() {
            log.attach(o);
        }
        let upid = unshare.id() as i32;
        let pid = wait_until(Duration::from_secs(10), || {
            children_of(upid).first().copied()
        })
        .unwrap_or_else(|| panic!("unshare (pid {}) started no child", upid));
        init_pid.store(pid, Ordering::SeqCst);
        Chain {
            dir,
            opts,
            config_path,
            config,
            services_dir,
            run_dir,
            state_dir,
            bin_dir,
            fake_dir,
            device_path,
            log,
            hw,
            started,
            unshare,
            init_pid: pid,
            status: None,
        }
    }

    /// init's host pid.
    pub fn init_pid(&self) -> i32 {
        self.init_pid
    }

    /// Every process of the namespace (init first).
    pub fn processes(&self) -> Vec<Proc> {
        tree(self.init_pid)
    }

    /// Processes named `name` (see [`Proc::is`]), zombies excluded, and
    /// without the shell's own forks (a child of a `name` process carries
    /// the same command line until it execs).
    pub fn find(&self, name: &str) -> Vec<Proc> {
        let all = self.processes();
        let named: Vec<i32> = all.iter().filter(|p| p.is(name)).map(|p| p.pid).collect();
        all.into_iter()
            .filter(|p| p.is(name) && p.state != 'Z' && !named.contains(&p.ppid))
            .collect()
    }

    /// init's live child named `name` (a layer), if exactly one.
    pub fn layer(&self, name: &str) -> Option<i32> {
        let v: Vec<i32> = children_of(self.init_pid)
            .into_iter()
            .filter(|&p| proc_stat(p).is_some_and(|(s, _)| s != 'Z'))
            .filter(|&p| {
                Proc {
                    pid: p,
                    ppid: 0,
                    state: 'S',
                    cmdline: cmdline(p),
                }
                .is(name)
            })
            .collect();
        match v.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// Waits for init's child `name` other than `not`.
    pub fn wait_layer(&self, name: &str, not: Option<i32>, timeout: Duration) -> Option<i32> {
        wait_until(timeout, || self.layer(name).filter(|&p| Some(p) != not))
    }

    /// Zombies in the namespace.
    pub fn zombies(&self) -> Vec<Proc> {
        self.processes()
            .into_iter()
            .filter(|p| p.state == 'Z')
            .collect()
    }

    /// Waits for the namespace to end.
    pub fn wait_end(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let unshare = &mut self.unshare;
        let st = wait_until(timeout, || unshare.try_wait().ok().flatten());
        self.status = st;
        st
    }

    /// Whether the namespace is still there.
    pub fn running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.unshare.try_wait() {
            Ok(Some(s)) => {
                self.status = Some(s);
                false
            }
            _ => true,
        }
    }

    /// `STATE/reset-reason` as `key=value` pairs.
    pub fn reset_reason(&self) -> Option<Vec<(String, String)>> {
        let text = std::fs::read_to_string(self.state_dir.join("reset-reason")).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// One field of the reset reason.
    pub fn reset_field(&self, key: &str) -> Option<String> {
        self.reset_reason()?
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Waits for a log line (syslog or stderr) holding every needle.
    pub fn wait_log(&self, needles: &[&str], timeout: Duration) -> Option<LogLine> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .log
                .lines()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.text.contains(n)));
            if found.is_some() {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // Wake on either source.
            let step = left.min(Duration::from_millis(50));
            let _ = self.log.wait_for(LogSource::Syslog, needles, step);
        }
    }

    /// Log lines (either source) holding every needle.
    pub fn logs(&self, needles: &[&str]) -> Vec<LogLine> {
        self.log
            .lines()
            .into_iter()
            .filter(|l| needles.iter().all(|n| l.text.contains(n)))
            .collect()
    }

    /// Lines of the syslog socket only (each of tether's own lines also
    /// has a stderr copy; count these).
    pub fn syslog(&self, needles: &[&str]) -> Vec<LogLine> {
        self.log.matching(LogSource::Syslog, needles)
    }

    /// Everything logged, for assertion messages.
    pub fn dump(&self) -> String {
        self.log.dump()
    }

    /// Runs `tetherctl --run-dir RUN ARGS` from outside the namespace.
    pub fn tetherctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(crate::bins::bin("tetherctl"))
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tetherctl")
    }

    /// Gives a fake layer a command (see [`FakeLayer::Beater`]).
    pub fn fake_cmd(&self, layer: &str, cmd: &str) {
        let tmp = self.fake_dir.join(format!("{}.cmd.tmp", layer));
        std::fs::write(&tmp, cmd).expect("write fake command");
        std::fs::rename(&tmp, self.fake_dir.join(format!("{}.cmd", layer)))
            .expect("rename fake command");
    }

    /// Namespace pid and wall-clock start time of each start of a fake
    /// layer.
    pub fn fake_starts(&self, layer: &str) -> Vec<(i32, Duration)> {
        std::fs::read_to_string(self.fake_dir.join(format!("{}.starts", layer)))
            .map(|s| {
                s.lines()
                    .filter_map(|l| {
                        let (pid, ns) = l.trim().split_once(' ')?;
                        Some((pid.parse().ok()?, Duration::from_nanos(ns.parse().ok()?)))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The descriptor listing a fake layer wrote at start (`ls -l
    /// /proc/self/fd` of its `ls`), `ls`'s own directory descriptor left
    /// out. Empty while not written yet.
    pub fn fake_fds(&self, layer: &str, ns_pid: i32) -> Vec<FdEntry> {
        let text = std::fs::read_to_string(self.fake_dir.join(format!("{}.fds.{}", layer, ns_pid)))
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (left, target) = l.split_once(" -> ")?;
                let fd = left.split_whitespace().last()?.parse().ok()?;
                let mode = left.split_whitespace().next()?;
                Some(FdEntry {
                    fd,
                    readable: mode.get(1..2) == Some("r"),
                    writable: mode.get(2..3) == Some("w"),
                    target: target.to_string(),
                })
            })
            .filter(|e| !(e.target.starts_with("/proc/") && e.target.ends_with("/fd")))
            .collect()
    }

    /// The budget row for `fault` under this chain's configuration.
    pub fn bound(&self, fault: &str) -> Option<tether_common::budget::BudgetRow> {
        let c = self.config.as_ref()?;
        tether_common::budget::table(c)
            .into_iter()
            .find(|r| r.fault == fault)
    }

    /// Prints a figure for the lead: the measured time next to the budget
    /// bound of the same fault class.
    pub fn figure(&self, scenario: &str, measured: Duration, fault: &str) {
        match self.bound(fault) {
            Some(r) => eprintln!(
                "FIGURE {}: measured {} ms; bound for '{}' {} ms ({}) -> {:?}",
                scenario,
                measured.as_millis(),
                fault,
                r.bound.as_millis(),
                r.formula,
                r.outcome
            ),
            None => eprintln!(
                "FIGURE {}: measured {} ms (no bound for '{}')",
                scenario,
                measured.as_millis(),
                fault
            ),
        }
    }

    /// Kills the namespace (init first) and waits for `unshare`.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            signal(self.init_pid, nix::sys::signal::Signal::SIGKILL);
            if self.wait_end(Duration::from_secs(5)).is_none() {
                let _ = self.unshare.kill();
                let _ = self.unshare.wait();
            }
        }
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `tether-init` built with the test-only `fault-inject` feature
/// (`TETHER_INIT_PANIC=POINT[:N]`, see `init/src/fault.rs`), into its own
/// target directory `target/fault-inject` so that the workspace's
/// `tether-init` stays free of it. Built once per test binary; cargo's lock
/// serialises concurrent builds.
pub fn fault_inject_init() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let debug = crate::bins::bin_dir();
        let target = debug
            .parent()
            .expect("target/<profile> has a parent")
            .join("fault-inject");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "tether-init", "--features", "fault-inject"])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the fault-inject tether-init");
        assert!(
            status.success(),
            "building tether-init --features fault-inject failed"
        );
        target.join("debug").join("tether-init")
    })
    .clone()
}
