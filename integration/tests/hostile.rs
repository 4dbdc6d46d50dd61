//! Resource exhaustion and hostile conditions against the real
//! `tether-restarter` (issue #5). Every test asserts the same three things
//! besides its own: the restarter's heartbeat (its `init` pipe, recorded by
//! a thread with arrival times) is never late by more than one beat (max
//! gap < 2 × `beat_interval`, 100 ms here) over the hostile period,
//! `tetherctl status` still answers, and what was already running keeps
//! running with the same pid.
//!
//! The restarter runs from a [`Rig`] of this file rather than
//! `svc::Restarter`, because some tests need it started through a wrapper
//! that execs it (same pid): `prlimit --nofile=N:N --` for a descriptor
//! limit, or `unshare --mount` + a shell that mounts a small tmpfs on the
//! runtime directory in that private mount namespace (never on the host's
//! visible tree). The test then reaches that directory through
//! `/proc/PID/root/RUN`, which resolves in the restarter's namespace.
//!
//! Timing: beat 100 ms; the hostile period of each test is 1.5–4 s. The
//! tests of this file run one at a time (a lock), since each loads the
//! machine on purpose.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tether_integration::bins::{bin, TempDir};
use tether_integration::svc::{self, alive, pgid_of, tagged_processes, LogSink, TAG_VAR};

const BEAT: Duration = Duration::from_millis(100);

/// Held by every test of this file for its whole run: they load the machine
/// on purpose (floods, storms, 1000 clients), and two of them at once on a
/// 2-core machine would measure the scheduler rather than the restarter's
/// loop.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}
const LONG: Duration = Duration::from_secs(15);

// ---- the rig ---------------------------------------------------------------

/// Something done to the services directory before the restarter starts.
type Prepare = Box<dyn FnOnce(&Path)>;

/// How to start a [`Rig`].
#[derive(Default)]
struct RigOptions {
    /// `(name, text)` of `services/NAME.toml`; `{DIR}` is the scratch dir.
    services: Vec<(String, String)>,
    /// A command that ends by exec'ing its arguments (the restarter and
    /// its own arguments are appended).
    wrapper: Vec<String>,
    /// More restarter arguments (`--cgroup-root DIR`).
    args: Vec<String>,
    /// Environment for the wrapper.
    env: Vec<(String, String)>,
    /// Run on the services directory before the restarter starts.
    prepare: Option<Prepare>,
}

/// A `tether-restarter` with heartbeat pipes (`TETHER_FDS=init=3,watchdog=4`)
/// whose `init` end a thread records.
struct Rig {
    child: Option<Child>,
    /// The runtime directory as this process reaches it (through
    /// `/proc/PID/root` when the restarter has a mount namespace of its own).
    run: PathBuf,
    services: PathBuf,
    log: LogSink,
    beats: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    recorder: Option<JoinHandle<()>>,
    _watchdog_read: OwnedFd,
    // Last: removed after everything else.
    dir: TempDir,
}

impl Rig {
    fn start(label: &str, opts: RigOptions) -> Rig {
        let dir = TempDir::new(label);
        let services = dir.join("services");
        let run = dir.join("run");
        for d in [&services, &run, &dir.join("state")] {
            std::fs::create_dir_all(d).expect("scratch directories");
        }
        let subst = |t: &str| t.replace("{DIR}", &dir.path().display().to_string());
        for (name, text) in &opts.services {
            std::fs::write(services.join(format!("{name}.toml")), subst(text))
                .expect("write a service file");
        }
        if let Some(prepare) = opts.prepare {
            prepare(&services);
        }
        let log = LogSink::bind(&dir.join("log.sock"));
        let config = dir.join("tether.toml");
        std::fs::write(
            &config,
            format!(
                "[timing]\nbeat_interval = \"100ms\"\n\n[log]\nsyslog_socket = \"{}\"\nkmsg = false\nstderr = true\n\n\
                 [paths]\nservices = \"{}\"\nrun = \"{}\"\nstate = \"{}\"\n",
                log.path().display(),
                services.display(),
                run.display(),
                dir.join("state").display()
            ),
        )
        .expect("write tether.toml");
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("stderr.log");
        let (init_read, init_write) = svc::pipe();
        let (watchdog_read, watchdog_write) = svc::pipe();
        let restarter = bin("tether-restarter");
        let mut cmd = match opts.wrapper.split_first() {
            None => Command::new(&restarter),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&restarter);
                c
            }
        };
        cmd.arg("--config")
            .arg(&config)
            .args(&opts.args)
            .env(TAG_VAR, dir.path())
            .env("TETHER_SYSLOG_SOCKET", log.path())
            .env("TETHER_KMSG", "0")
            .env("TETHER_FDS", "init=3,watchdog=4")
            .env("RIG_RUN", &run)
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stderr.try_clone().expect("dup")))
            .stderr(Stdio::from(stderr));
        let child = tether_common::sys::spawn_with_fds(
            &mut cmd,
            &[(init_write.as_fd(), 3), (watchdog_write.as_fd(), 4)],
        )
        .expect("spawn tether-restarter");
        drop((init_write, watchdog_write));
        let run_view = if opts.wrapper.iter().any(|w| w == "unshare") {
            PathBuf::from(format!("/proc/{}/root", child.id())).join(run.strip_prefix("/").unwrap())
        } else {
            run
        };
        let beats = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = {
            let (beats, stop) = (beats.clone(), stop.clone());
            std::thread::spawn(move || record_beats(init_read, &beats, &stop))
        };
        Rig {
            child: Some(child),
            run: run_view,
            services,
            log,
            beats,
            stop,
            recorder: Some(recorder),
            _watchdog_read: watchdog_read,
            dir,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// The last 40 lines of the restarter's stderr (for failure messages).
    fn stderr_tail(&self) -> String {
        tail(
            &self
                .stderr()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        )
    }

    /// The last 40 syslog lines (for failure messages).
    fn log_tail(&self) -> String {
        tail(&self.log.texts())
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("tetherctl"))
            .arg("--run-dir")
            .arg(&self.run)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tetherctl")
    }

    fn try_status(&self) -> Option<serde_json::Value> {
        let out = self.ctl(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `tetherctl status --json`; panics when it does not answer.
    fn status(&self) -> serde_json::Value {
        self.try_status().unwrap_or_else(|| {
            panic!(
                "tetherctl status failed: {:?}\nstderr:\n{}",
                self.ctl(&["status", "--json"]),
                self.stderr_tail()
            )
        })
    }

    fn service(&self, name: &str) -> serde_json::Value {
        self.status()["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no service {name} in status"))
    }

    /// Waits for `pred` on service `name`'s status object.
    fn wait_service(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(st) = self.try_status() {
                let s = st["services"]
                    .as_array()
                    .and_then(|a| a.iter().find(|s| s["name"] == name).cloned());
                if let Some(s) = s {
                    if pred(&s) {
                        return s;
                    }
                    last = Some(s);
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "service {name}: not {what} within {timeout:?}; last {last:?}\nlog:\n{}\nstderr:\n{}",
                    self.log_tail(),
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `name` runs (`running`, or `ready` for a notify
    /// service) with a live pid other than `old`; its pid.
    fn wait_running(&self, name: &str, old: i64) -> i32 {
        let s = self.wait_service(name, "running with a new pid", LONG, |s| {
            (s["state"] == "running" || s["state"] == "ready")
                && s["pid"]
                    .as_i64()
                    .is_some_and(|p| p != old && alive(p as i32))
        });
        s["pid"].as_i64().unwrap() as i32
    }

    /// Waits until the restarter has beaten `n` times.
    fn wait_beats(&self, n: usize) {
        let t0 = Instant::now();
        while self.beats.lock().unwrap().len() < n {
            assert!(
                t0.elapsed() < LONG,
                "no heartbeats from the restarter\n{}",
                self.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The largest gap between two beats (the last beat before `from`
    /// included) up to `to`, and how many beats that window holds.
    fn max_gap(&self, from: Instant, to: Instant) -> (Duration, usize) {
        let beats = self.beats.lock().unwrap();
        let before = beats.iter().rev().find(|&&t| t < from).copied();
        let window: Vec<Instant> = before
            .into_iter()
            .chain(beats.iter().copied().filter(|&t| t >= from && t <= to))
            .chain(beats.iter().copied().find(|&t| t > to))
            .collect();
        let gap = window
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        (gap, window.len())
    }

    /// Asserts the heartbeat was never late by more than one beat over
    /// `[from, to]` (waits for the first beat after `to`).
    fn assert_beats_on_time(&self, from: Instant, to: Instant, what: &str) {
        let deadline = Instant::now() + LONG;
        while !self.beats.lock().unwrap().iter().any(|&t| t > to) {
            assert!(Instant::now() < deadline, "{what}: the heartbeat stopped");
            std::thread::sleep(Duration::from_millis(10));
        }
        let (gap, n) = self.max_gap(from, to);
        println!(
            "{what}: {n} beats over {:?}, max gap {gap:?}",
            to.duration_since(from)
        );
        assert!(
            gap < 2 * BEAT,
            "{what}: heartbeat late: max gap {gap:?} (beat {BEAT:?}) over {:?}",
            to.duration_since(from)
        );
        assert!(
            n as u128 >= to.duration_since(from).as_millis() / BEAT.as_millis() / 2,
            "{what}: too few beats: {n}"
        );
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for _ in 0..100 {
            let pids = tagged_processes(self.dir.path());
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                kill(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.recorder.take() {
            let _ = t.join();
        }
    }
}

/// Records the arrival time of every byte on the (non-blocking) pipe.
fn record_beats(read: OwnedFd, beats: &Mutex<Vec<Instant>>, stop: &AtomicBool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(50u16)).unwrap_or(0) == 0 {
            continue;
        }
        let now = Instant::now();
        if let Ok(n) = nix::unistd::read(&read, &mut buf) {
            if n == 0 {
                // Every writer closed: the restarter is gone.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let mut beats = beats.lock().unwrap();
            let len = beats.len();
            beats.resize(len + n, now);
        }
    }
}

fn tail(lines: &[String]) -> String {
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn kill(pid: i32, sig: i32) -> bool {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::try_from(sig).unwrap(),
    )
    .is_ok()
}

fn sleeper(tag: u32) -> String {
    format!("exec = [\"/bin/sleep\", \"{tag}\"]\nrestart_delay = \"100ms\"\n")
}

fn svcs(list: &[(&str, String)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

/// `(name, pid)` of every service in a status, sorted.
fn pids(status: &serde_json::Value) -> Vec<(String, i64)> {
    status["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or("").to_string(),
                        s["pid"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The pid the state file names for `name`.
fn state_pid(run: &Path, name: &str) -> Option<i32> {
    let text = std::fs::read_to_string(run.join("restarter.state")).ok()?;
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == name).then(|| f.next()?.parse().ok())?
    })
}

// ---- a full runtime directory ----------------------------------------------

/// Mounts a 1 MiB tmpfs on `$RIG_RUN` in a private mount namespace, then
/// execs the restarter (same pid).
fn tmpfs_wrapper() -> Vec<String> {
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        "mount -t tmpfs -o size=1m,mode=0755 tether-hostile \"$RIG_RUN\" && exec \"$@\"",
        "tmpfs-wrapper",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Writes `path` until the filesystem is full; the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // The last partial page: one byte at a time until ENOSPC.
    while f.write(&[0]).is_ok_and(|n| n == 1) {
        written += 1;
    }
    written
}

#[test]
fn full_runtime_directory_fails_state_writes_loudly_and_supervision_goes_on() {
    let _serial = one_at_a_time();
    let mut r = Rig::start(
        "enospc",
        RigOptions {
            services: svcs(&[("a", sleeper(7201)), ("b", sleeper(7202))]),
            wrapper: tmpfs_wrapper(),
            ..RigOptions::default()
        },
    );
    let a0 = r.wait_running("a", 0);
    let b0 = r.wait_running("b", 0);
    r.wait_beats(3);
    // The runtime directory is the private tmpfs, not the host's directory.
    let fs = nix::sys::statfs::statfs(&r.run).expect("statfs of the runtime directory");
    assert_eq!(fs.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
    assert!(
        !r.dir.join("run/control.sock").exists(),
        "the tmpfs is visible on the host's tree"
    );
    assert_eq!(state_pid(&r.run, "a"), Some(a0));

    let t0 = Instant::now();
    let filler = r.run.join("filler");
    let filled = fill(&filler);
    assert!(filled > 512 << 10, "only {filled} bytes filled the tmpfs");
    // A crash while full: restarted; the state write fails, loudly.
    kill(a0, libc::SIGKILL);
    let a1 = r.wait_running("a", a0 as i64);
    let line = r.log.wait_for("restarter.state", LONG);
    assert!(
        line.text.contains("No space left on device"),
        "{}",
        line.text
    );
    // The old state file is intact (the write goes to a temporary first).
    assert_eq!(state_pid(&r.run, "a"), Some(a0));
    assert_eq!(state_pid(&r.run, "b"), Some(b0));
    // Status answers, the other service is untouched.
    assert_eq!(r.service("b")["pid"], b0);
    std::thread::sleep(Duration::from_millis(500));
    let t1 = Instant::now();

    // Space returns: the state file catches up without any further event.
    std::fs::remove_file(&filler).expect("remove the filler");
    let deadline = Instant::now() + Duration::from_secs(3);
    while state_pid(&r.run, "a") != Some(a1) {
        assert!(
            Instant::now() < deadline,
            "the state file still names a's old pid {a0} (not {a1}) 3 s after space returned: \
             the failed write is not retried\nlog:\n{}",
            r.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // And with the next change too.
    kill(a1, libc::SIGKILL);
    let a2 = r.wait_running("a", a1 as i64);
    let deadline = Instant::now() + LONG;
    while state_pid(&r.run, "a") != Some(a2) {
        assert!(Instant::now() < deadline, "state file not updated");
        std::thread::sleep(Duration::from_millis(20));
    }
    r.assert_beats_on_time(t0, t1, "runtime directory full");
    assert!(r.running());
    assert_eq!(r.service("b")["pid"], b0);
}

// ---- a low descriptor limit ------------------------------------------------

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn low_descriptor_limit_starts_what_fits_reports_the_rest_and_control_answers() {
    let _serial = one_at_a_time();
    const N: usize = 40;
    let services: Vec<(String, String)> = (0..N)
        .map(|i| {
            (
                format!("s{i:02}"),
                format!(
                    "exec = [\"/bin/sleep\", \"73{i:02}\"]\nrestart_delay = \"300ms\"\nnotify = \"none\"\n"
                ),
            )
        })
        .collect();
    let mut r = Rig::start(
        "nofile",
        RigOptions {
            services,
            wrapper: ["prlimit", "--nofile=48:48", "--"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..RigOptions::default()
        },
    );
    r.wait_beats(3);
    // Wait until every service has been tried at least once: running, or
    // with a start error.
    let deadline = Instant::now() + LONG;
    let st = loop {
        if let Some(st) = r.try_status() {
            let all_tried = st["services"].as_array().is_some_and(|a| {
                a.len() == N
                    && a.iter()
                        .all(|s| s["state"] == "running" || !s["error"].is_null())
            });
            if all_tried {
                break st;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every service tried: {:?}\n{}",
            r.try_status(),
            r.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let list = st["services"].as_array().unwrap().clone();
    let running: Vec<(String, i64)> = list
        .iter()
        .filter(|s| s["state"] == "running")
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["pid"].as_i64().unwrap(),
            )
        })
        .collect();
    let failed: Vec<String> = list
        .iter()
        .filter(|s| s["state"] != "running")
        .map(|s| format!("{}: {}", s["name"], s["error"]))
        .collect();
    println!(
        "nofile 48: {} running, {} not started, restarter holds {} descriptors",
        running.len(),
        failed.len(),
        open_fds(r.pid())
    );
    assert!(!running.is_empty(), "nothing runs: {failed:?}");
    assert!(!failed.is_empty(), "every service fits in 48 descriptors");
    for f in &failed {
        assert!(
            f.contains("EMFILE") || f.contains("Too many open files"),
            "not reported as a descriptor shortage: {f}"
        );
    }
    r.log.wait_for("Too many open files", LONG);

    // Over 2 s of retries: control answers every time, nothing running is
    // lost, the heartbeat stays on time.
    let t0 = Instant::now();
    let mut answers = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        let st = r.status();
        let now: Vec<(String, i64)> = pids(&st);
        for (name, pid) in &running {
            assert!(
                now.contains(&(name.clone(), *pid)),
                "running service {name} (pid {pid}) lost: {now:?}"
            );
            assert!(alive(*pid as i32));
        }
        answers += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let t1 = Instant::now();
    assert!(answers >= 5);
    r.assert_beats_on_time(t0, t1, "descriptor limit");
    assert!(r.running());
}

// ---- a fork storm at the nproc limit ---------------------------------------

/// A writable cgroup2 directory for this test (the restarter's
/// `--cgroup-root`), or a panic saying why none.
fn cgroup_root(label: &str) -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let mount = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_string())
        })
        .next()
        .expect("this test needs a cgroup2 mount (none in /proc/self/mounts)");
    let dir = Path::new(&mount).join(format!("tether-hostile-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
        panic!(
            "this test needs a writable cgroup2 mount: {}: {e}",
            dir.display()
        )
    });
    dir
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Live processes of process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|&p| alive(p) && pgid_of(p) == Some(pgid))
        .collect()
}

fn cgroup_procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| alive(p))
        .collect()
}

#[test]
fn fork_storm_at_the_nproc_limit_is_stopped_as_a_group() {
    let _serial = one_at_a_time();
    const NPROC: usize = 24;
    let root = cgroup_root("storm");
    // Forks sleepers as fast as it can, ignoring SIGTERM and fork failures
    // (perl: a shell exits when a fork fails).
    let storm = format!(
        "exec = [\"/usr/bin/perl\", \"-e\", \"$SIG{{TERM}} = 'IGNORE'; $0 = 'storm 7401'; while (1) {{ my $p = fork; if (defined $p && $p == 0) {{ sleep 7401; exit 0 }} }}\"]\n\
         user = \"nobody\"\nnproc = {NPROC}\nstop_timeout = \"500ms\"\nrestart_delay = \"100ms\"\n"
    );
    let mut r = Rig::start(
        "storm",
        RigOptions {
            services: svcs(&[("calm", sleeper(7402)), ("storm", storm)]),
            args: vec!["--cgroup-root".into(), root.display().to_string()],
            ..RigOptions::default()
        },
    );
    let calm = r.wait_running("calm", 0);
    let leader = r.wait_running("storm", 0);
    r.wait_beats(3);
    let cg = root.join("storm");
    // The storm reaches its limit: about NPROC processes of user nobody.
    let t0 = Instant::now();
    let deadline = t0 + LONG;
    let at_limit = loop {
        let members = group_members(leader);
        if members.len() >= NPROC - 4 {
            break members.len();
        }
        assert!(
            Instant::now() < deadline,
            "the storm did not reach its limit: {} processes; status {}\nlog:\n{}\nstderr:\n{}",
            members.len(),
            r.service("storm"),
            r.log_tail(),
            r.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // It stays there (the limit holds) for a while, under load.
    std::thread::sleep(Duration::from_millis(1000));
    let members = group_members(leader);
    let uid_nobody = members.iter().all(|p| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.contains("65534"))
            })
            .unwrap_or(true)
    });
    assert!(uid_nobody, "storm processes not all run as nobody");
    assert!(
        members.len() <= NPROC + 1,
        "nproc {NPROC} exceeded: {} processes",
        members.len()
    );
    let in_cgroup = cgroup_procs(&cg).len();
    println!(
        "storm: {at_limit} processes at the limit; {} later, {in_cgroup} in its cgroup",
        members.len()
    );
    assert!(
        in_cgroup >= NPROC - 4,
        "storm processes not in its cgroup: {in_cgroup}"
    );
    // Status answers and the calm service is untouched during the storm.
    assert_eq!(r.service("calm")["pid"], calm);

    let out = r.ctl(&["stop", "storm"]);
    assert!(out.status.success(), "{out:?}");
    let stopped = Instant::now();
    loop {
        let left = group_members(leader);
        let left_cg = cgroup_procs(&cg);
        if left.is_empty() && left_cg.is_empty() {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "left after stop: group {left:?}, cgroup {left_cg:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t1 = Instant::now();
    r.wait_service("storm", "stopped", LONG, |s| s["state"] == "stopped");
    assert_eq!(r.service("calm")["pid"], calm);
    assert!(alive(calm));
    r.assert_beats_on_time(t0, t1, "fork storm");
    assert!(r.running());
    drop(r);
    remove_cgroup_tree(&root);
}

// ---- notify and stdout floods ----------------------------------------------

#[test]
fn notify_flood_and_stdout_flood_together_do_not_delay_the_heartbeat() {
    let _serial = one_at_a_time();
    let helper = bin("notify-helper");
    let notifier = format!(
        "exec = [\"{}\", \"--repeat\", \"4000000000\", \"--interval-ms\", \"0\", \"READY=1\", \"STATUS=flooding\"]\nnotify = \"ready\"\nrestart_delay = \"100ms\"\n",
        helper.display()
    );
    let chatty =
        "exec = [\"/usr/bin/yes\", \"flooding stdout at full speed\"]\nrestart_delay = \"100ms\"\n"
            .to_string();
    let mut r = Rig::start(
        "flood",
        RigOptions {
            services: svcs(&[
                ("calm", sleeper(7501)),
                ("notifier", notifier),
                ("chatty", chatty),
            ]),
            ..RigOptions::default()
        },
    );
    let calm = r.wait_running("calm", 0);
    let notifier = r.wait_running("notifier", 0);
    let chatty = r.wait_running("chatty", 0);
    r.wait_beats(3);
    // Both floods are on: output lines reach syslog, the status text came.
    r.log.wait_for("flooding stdout at full speed", LONG);
    r.wait_service("notifier", "showing its STATUS", LONG, |s| {
        s.to_string().contains("flooding")
    });
    let t0 = Instant::now();
    let mut answers = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        let st = r.status();
        assert_eq!(
            pids(&st),
            vec![
                ("calm".to_string(), calm as i64),
                ("chatty".to_string(), chatty as i64),
                ("notifier".to_string(), notifier as i64)
            ]
        );
        answers += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let t1 = Instant::now();
    assert!(answers >= 5);
    assert!(alive(notifier) && alive(chatty), "a flooder died");
    let logged = r.log.matching("flooding stdout").len();
    println!("flood: {logged} output lines reached syslog; status answered {answers} times");
    r.assert_beats_on_time(t0, t1, "notify + stdout flood");
    assert!(r.running());
}

// ---- 1000 control clients --------------------------------------------------

/// Sends `status\n` on a connected socket and reads the whole answer.
fn exchange(mut s: UnixStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    if let Err(e) = s.write_all(b"status\n") {
        return format!("write: {e}");
    }
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !answer.is_empty() => {}
        Err(e) => return format!("read: {e}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn thousand_control_clients_and_silent_ones_are_served_or_refused_without_stalling() {
    let _serial = one_at_a_time();
    const CLIENTS: usize = 1000;
    const THREADS: usize = 50;
    const SILENT: usize = 50;
    // Descriptors for this process's own client sockets.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    assert!(
        hard >= 4096,
        "hard RLIMIT_NOFILE {hard} too low for 1000 clients"
    );
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise RLIMIT_NOFILE");
    let mut r = Rig::start(
        "thousand",
        RigOptions {
            services: svcs(&[("a", sleeper(7601)), ("b", sleeper(7602))]),
            ..RigOptions::default()
        },
    );
    let a = r.wait_running("a", 0);
    let b = r.wait_running("b", 0);
    r.wait_beats(3);
    let sock = r.run.join("control.sock");

    let t0 = Instant::now();
    // Silent clients: connected (and accepted) before the storm, they send
    // nothing and wait for the server to drop them.
    let silent: Vec<JoinHandle<Duration>> = (0..SILENT)
        .map(|_| {
            let connected = Instant::now();
            let mut s = UnixStream::connect(&sock).expect("connect (silent)");
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
                connected.elapsed()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // 1000 clients: every socket connected first, then all requests at once.
    let barrier = Arc::new(Barrier::new(THREADS));
    let workers: Vec<JoinHandle<Vec<String>>> = (0..THREADS)
        .map(|_| {
            let (sock, barrier) = (sock.clone(), barrier.clone());
            std::thread::spawn(move || {
                let conns: Vec<UnixStream> = (0..CLIENTS / THREADS)
                    .map(|_| UnixStream::connect(&sock).expect("connect"))
                    .collect();
                barrier.wait();
                for mut c in conns.iter() {
                    let _ = c.write_all(b"status\n");
                }
                conns
                    .into_iter()
                    .map(|c| {
                        // Already written: read the answer only.
                        let mut c = c;
                        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                        let mut answer = Vec::new();
                        match c.read_to_end(&mut answer) {
                            Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
                            Err(e)
                                if e.kind() == std::io::ErrorKind::ConnectionReset
                                    && !answer.is_empty() =>
                            {
                                String::from_utf8_lossy(&answer).into_owned()
                            }
                            Err(e) => format!("read: {e}"),
                        }
                    })
                    .collect()
            })
        })
        .collect();
    let answers: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("client thread"))
        .collect();
    let served_by = t0.elapsed();
    let dropped: Vec<Duration> = silent.into_iter().map(|s| s.join().unwrap()).collect();
    let t1 = Instant::now();

    let ok = answers.iter().filter(|a| a.starts_with("ok\n")).count();
    let busy = answers
        .iter()
        .filter(|a| a.starts_with("error: busy"))
        .count();
    println!(
        "1000 clients: {ok} served, {busy} refused busy in {served_by:?}; {SILENT} silent dropped after {:?}..{:?}",
        dropped.iter().min().unwrap(),
        dropped.iter().max().unwrap()
    );
    assert_eq!(answers.len(), CLIENTS);
    for a in &answers {
        assert!(
            (a.starts_with("ok\n") && a.contains("restarter: pid")) || a.starts_with("error: busy"),
            "neither served nor refused: {a:?}"
        );
    }
    assert!(ok > 0, "nobody served");
    for d in &dropped {
        assert!(
            *d >= Duration::from_millis(1900) && *d < Duration::from_secs(10),
            "silent client dropped after {d:?}"
        );
    }
    r.assert_beats_on_time(t0, t1, "1000 control clients");
    // Afterwards: one more client is served; nothing was lost.
    let after = exchange(UnixStream::connect(&sock).expect("connect after"));
    assert!(after.starts_with("ok\n"), "{after:?}");
    assert_eq!(
        pids(&r.status()),
        vec![("a".to_string(), a as i64), ("b".to_string(), b as i64)]
    );
    assert!(r.running());
}

// ---- binaries and directories that change under a running service ---------

fn write_exe(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    svc::write_script(
        tmp.parent().unwrap(),
        tmp.file_name().unwrap().to_str().unwrap(),
        text,
    );
    std::fs::rename(&tmp, path).expect("rename over the binary");
}

#[test]
fn binary_replaced_while_running_keeps_running_and_the_next_start_uses_the_new_one() {
    let _serial = one_at_a_time();
    let dir = TempDir::new("replaced-bin");
    let exe = dir.join("svc-bin");
    write_exe(&exe, "#!/bin/sh\necho 'svc version 1'\nexec sleep 7701\n");
    let mut r = Rig::start(
        "replaced",
        RigOptions {
            services: svcs(&[
                ("calm", sleeper(7702)),
                (
                    "a",
                    format!(
                        "exec = [\"{}\"]\nrestart_delay = \"100ms\"\n",
                        exe.display()
                    ),
                ),
            ]),
            ..RigOptions::default()
        },
    );
    let calm = r.wait_running("calm", 0);
    let a0 = r.wait_running("a", 0);
    r.log.wait_for("svc version 1", LONG);
    r.wait_beats(3);
    let t0 = Instant::now();
    // A new version renamed over the old one (how package managers do it).
    write_exe(&exe, "#!/bin/sh\necho 'svc version 2'\nexec sleep 7703\n");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        alive(a0),
        "the running process did not survive the replacement"
    );
    assert_eq!(r.service("a")["pid"], a0);
    assert!(r.log.matching("svc version 2").is_empty());
    // The next start runs the new binary.
    kill(a0, libc::SIGKILL);
    let a1 = r.wait_running("a", a0 as i64);
    r.log.wait_for("svc version 2", LONG);
    assert!(svc::cmdline(a1).contains("7703") || r.log.matching("svc version 2").len() == 1);
    let t1 = Instant::now();
    assert_eq!(r.service("calm")["pid"], calm);
    r.assert_beats_on_time(t0, t1, "binary replaced");
    assert!(r.running());
}

#[test]
fn binary_deleted_while_running_keeps_running_then_is_reported_with_errno_and_retried() {
    let _serial = one_at_a_time();
    let dir = TempDir::new("deleted-bin");
    let exe = dir.join("svc-bin");
    write_exe(&exe, "#!/bin/sh\nexec sleep 7711\n");
    let mut r = Rig::start(
        "deleted",
        RigOptions {
            services: svcs(&[
                ("calm", sleeper(7712)),
                (
                    "a",
                    format!(
                        "exec = [\"{}\"]\nrestart_delay = \"200ms\"\n",
                        exe.display()
                    ),
                ),
            ]),
            ..RigOptions::default()
        },
    );
    let calm = r.wait_running("calm", 0);
    let a0 = r.wait_running("a", 0);
    r.wait_beats(3);
    let t0 = Instant::now();
    std::fs::remove_file(&exe).expect("delete the binary");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        alive(a0),
        "the running process did not survive the deletion"
    );
    assert_eq!(r.service("a")["pid"], a0);
    // Its next start fails with the errno, and is retried per restart_delay.
    kill(a0, libc::SIGKILL);
    let lines = r.log.wait_for_count("service a: cannot start", 3, LONG);
    assert!(
        lines[0].text.contains("No such file or directory [ENOENT]"),
        "{}",
        lines[0].text
    );
    let gaps: Vec<u128> = lines
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_millis())
        .collect();
    assert!(
        gaps.iter().all(|&g| g >= 150),
        "retried faster than restart_delay: {gaps:?}"
    );
    let st = r.service("a");
    assert!(
        st["error"].as_str().unwrap_or("").contains("ENOENT"),
        "{st}"
    );
    assert_eq!(r.service("calm")["pid"], calm);
    let t1 = Instant::now();
    // It comes back: the next retry starts it.
    write_exe(&exe, "#!/bin/sh\nexec sleep 7713\n");
    r.wait_running("a", a0 as i64);
    r.assert_beats_on_time(t0, t1, "binary deleted");
    assert!(r.running());
}

#[test]
fn working_directory_that_disappears_is_a_reported_start_failure_and_others_run_on() {
    let _serial = one_at_a_time();
    let dir = TempDir::new("vanished-wd");
    let wd = dir.join("wd");
    std::fs::create_dir(&wd).unwrap();
    let mut r = Rig::start(
        "vanished-wd",
        RigOptions {
            services: svcs(&[
                ("calm", sleeper(7721)),
                (
                    "a",
                    format!(
                        "exec = [\"/bin/sleep\", \"7722\"]\nworking_directory = \"{}\"\nrestart_delay = \"200ms\"\n",
                        wd.display()
                    ),
                ),
            ]),
            ..RigOptions::default()
        },
    );
    let calm = r.wait_running("calm", 0);
    let a0 = r.wait_running("a", 0);
    r.wait_beats(3);
    let t0 = Instant::now();
    std::fs::remove_dir(&wd).expect("remove the working directory");
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(a0), "the running process did not survive");
    kill(a0, libc::SIGKILL);
    // The directory is entered by the service's own process (never by the
    // restarter, where a dead mount would hang the loop): it reports the
    // failure through the exec status pipe, a failed start retried per
    // restart_delay.
    let needle = format!(
        "service a: cannot start: working_directory {}: No such file or directory [ENOENT]",
        wd.display()
    );
    r.log.wait_for_count(&needle, 2, LONG);
    let st = r.service("a");
    assert!(
        st["error"].as_str().unwrap_or("").ends_with("[ENOENT]"),
        "{st}"
    );
    assert_eq!(r.service("calm")["pid"], calm);
    let t1 = Instant::now();
    std::fs::create_dir(&wd).unwrap();
    r.wait_running("a", a0 as i64);
    assert_eq!(r.service("calm")["pid"], calm);
    r.assert_beats_on_time(t0, t1, "working directory removed");
    assert!(r.running());
}

#[test]
fn services_directory_unreadable_at_reload_is_refused_and_the_running_set_stays() {
    let _serial = one_at_a_time();
    let mut r = Rig::start(
        "unreadable-services",
        RigOptions {
            services: svcs(&[("a", sleeper(7731)), ("b", sleeper(7732))]),
            ..RigOptions::default()
        },
    );
    let a = r.wait_running("a", 0);
    let b = r.wait_running("b", 0);
    r.wait_beats(3);
    let before = pids(&r.status());
    let t0 = Instant::now();
    let away = r.services.with_extension("away");
    // (chmod 000 does not stop root: the directory is moved away.)
    // 1. Gone entirely.
    std::fs::rename(&r.services, &away).unwrap();
    let out = r.ctl(&["reload"]);
    assert!(
        !out.status.success(),
        "reload of a missing directory accepted: {out:?}"
    );
    let msg =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(msg.contains(&r.services.display().to_string()), "{msg}");
    assert_eq!(pids(&r.status()), before);
    // 2. A file where the directory was.
    std::fs::write(&r.services, "not a directory\n").unwrap();
    let out = r.ctl(&["reload"]);
    assert!(!out.status.success(), "reload of a file accepted: {out:?}");
    // 3. SIGHUP the same way: refused, logged.
    kill(r.pid(), libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pids(&r.status()), before);
    assert!(alive(a) && alive(b));
    let t1 = Instant::now();
    // Back in place: reload works again and changes nothing.
    std::fs::remove_file(&r.services).unwrap();
    std::fs::rename(&away, &r.services).unwrap();
    let out = r.ctl(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(pids(&r.status()), before);
    r.assert_beats_on_time(t0, t1, "services directory unreadable");
    assert!(r.running());
}

// ---- service files that are not files ---------------------------------------

#[test]
fn service_files_that_are_a_fifo_or_endless_are_refused_without_blocking() {
    let _serial = one_at_a_time();
    let mut r = Rig::start(
        "fifo-service",
        RigOptions {
            services: svcs(&[("a", sleeper(7741)), ("d", sleeper(7742))]),
            // Should /dev/zero be read after all, the restarter's allocation
            // fails at 1 GiB instead of taking the machine's memory.
            wrapper: ["prlimit", "--as=1073741824", "--"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            prepare: Some(Box::new(|services: &Path| {
                // A FIFO nobody writes: reading it blocks forever.
                nix::unistd::mkfifo(
                    &services.join("b.toml"),
                    nix::sys::stat::Mode::from_bits_truncate(0o644),
                )
                .expect("mkfifo");
                // An endless file: reading it allocates without bound.
                std::os::unix::fs::symlink("/dev/zero", services.join("c.toml")).expect("symlink");
            })),
            ..RigOptions::default()
        },
    );
    r.wait_beats(1);
    let t0 = Instant::now();
    // The other services start; the two files are reported, not read.
    let a = r.wait_running("a", 0);
    let d = r.wait_running("d", 0);
    let errors = r.status()["config_errors"].to_string();
    assert!(
        errors.contains("b.toml") && errors.contains("c.toml"),
        "{errors}"
    );
    assert!(errors.contains("not a regular file"), "{errors}");
    // And at reload, the same.
    let out = r.ctl(&["reload"]);
    assert!(!out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(1000));
    let t1 = Instant::now();
    let running: Vec<(String, i64)> = pids(&r.status())
        .into_iter()
        .filter(|(n, _)| n == "a" || n == "d")
        .collect();
    assert_eq!(
        running,
        vec![("a".to_string(), a as i64), ("d".to_string(), d as i64)]
    );
    r.assert_beats_on_time(t0, t1, "FIFO and /dev/zero service files");
    assert!(r.running());
}

// ---- the runtime directory emptied under the restarter ---------------------

/// Issue 12, item 3: `rm -rf RUN` with 300 notify services, `RUN` a tmpfs
/// (as `/run` is): the mount point itself cannot go (`EBUSY`), everything
/// in it does. The restarter puts the control socket, the 300 notify
/// sockets and `restarter.state` back (at most 256 sockets per loop turn)
/// without a late beat, and nothing is restarted.
#[test]
fn runtime_directory_emptied_with_300_notify_services_is_repaired_without_a_late_beat() {
    let _serial = one_at_a_time();
    let n = 300;
    let mut services = vec![("calm".to_string(), sleeper(7601))];
    for i in 0..n {
        services.push((
            format!("n{i}"),
            "exec = [\"/bin/sleep\", \"1000\"]\nnotify = \"ready\"\n".to_string(),
        ));
    }
    let mut r = Rig::start(
        "rundir",
        RigOptions {
            services,
            wrapper: tmpfs_wrapper(),
            ..RigOptions::default()
        },
    );
    let entries = |run: &Path| {
        std::fs::read_to_string(run.join("restarter.state"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count()
    };
    let t = Instant::now();
    while entries(&r.run) < n + 1 {
        assert!(
            t.elapsed() < LONG,
            "not all services started\n{}",
            r.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let calm = r.wait_running("calm", 0);
    let before = pids(&r.status());
    r.wait_beats(3);
    let mut paths = vec![r.run.join("control.sock"), r.run.join("restarter.state")];
    paths.extend((0..n).map(|i| r.run.join("notify").join(format!("n{i}.sock"))));

    let t0 = Instant::now();
    // `rm -rf RUN` in the restarter's mount namespace: the contents go, the
    // mount point stays (EBUSY). (From this namespace, through
    // /proc/PID/root, the kernel would let the directory go and detach the
    // tmpfs.)
    let rig_run = r.dir.join("run");
    let _ = Command::new("nsenter")
        .arg(format!("--target={}", r.pid()))
        .args(["--mount", "rm", "-rf"])
        .arg(&rig_run)
        .stderr(Stdio::null())
        .status()
        .expect("nsenter (util-linux) is needed by this test");
    assert!(!r.run.join("control.sock").exists());
    let t = Instant::now();
    while !paths.iter().all(|p| p.exists()) {
        assert!(t.elapsed() < LONG, "not repaired\n{}", r.log_tail());
        std::thread::sleep(Duration::from_millis(5));
    }
    let back = Instant::now();
    let line = r.log.wait_for("runtime directory", LONG);
    println!(
        "{n} notify sockets back {:?} after rm -rf; {}",
        back - t0,
        line.text
    );
    assert!(
        line.text
            .contains("notify/ was removed, control.sock was removed"),
        "{}",
        line.text
    );
    assert!(
        line.text.contains(&format!("{n} notify socket(s)")),
        "{}",
        line.text
    );
    r.assert_beats_on_time(t0, back, "runtime directory repair");
    assert_eq!(pids(&r.status()), before, "a service was restarted");
    assert!(alive(calm));
    assert_eq!(r.log.matching("runtime directory").len(), 1);
    assert!(r.running());
}
