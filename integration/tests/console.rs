//! A stalled console (issue #11, item 1): stderr a pipe that is full and
//! that nobody reads, as a serial console on XOFF or with RTS/CTS pulled.
//! As PID 1, fd 2 is the console and both layers inherit it; a blocking
//! write of the stderr copy would stop the loop that logged it, so its
//! beats and pets.
//!
//! Three tests: watchdogd alone (simulated device, the test beats for the
//! layers and records watchdogd's beats to init), the restarter alone (a
//! crash-looping service for log traffic, its beats to init recorded), and
//! the whole chain under `unshare` (init as PID 1 of a namespace, both
//! layers inheriting its stderr, the crash loop again). Each gives the real
//! binaries a pipe as stderr, lets them start (the pipe takes the start-up
//! lines), then stalls it (fills it up; nobody reads) and checks that every
//! loop keeps beating and petting through three liveness intervals, that
//! the lines the console did not take are counted and the count shows on
//! the next line once it takes output again, and that nobody's stderr was
//! made non-blocking (the pipe's open file description, shared with the
//! test and every child, stays blocking; services inherit no descriptor of
//! the logger's own; a service's stderr is its own output pipe, blocking).
//!
//! The longest pet and beat gaps with the stalled console are printed as
//! figures (`FIGURE console ...`, shown with `--nocapture`):
//!
//! ```text
//! cargo build --workspace --bins
//! cargo test -p tether-integration --test console -- --nocapture
//! ```
//!
//! `TETHER_CONSOLE_STALL_LINES=N` makes the stall last N liveness intervals
//! (1 s each) instead of 3, for a figure over a longer stall.
//!
//! The tests of this file run one at a time (a lock): the chain test runs
//! the three binaries and a service crash loop, and the figures should
//! measure the loops, not the tests competing for two cores.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tether_integration::bins::{bin, bin_dir, TempDir};
use tether_integration::chain::{children_of, cmdline, signal, wait_until, write_executable};
use tether_integration::hw::{
    Beater, HeartbeatPipe, LogCapture, LogSource, ResetEvent, SimWatchdog, Timings,
};

const LONG: Duration = Duration::from_secs(30);

/// Liveness lines (one a second) each layer logs into the stalled console.
fn stall_lines() -> usize {
    std::env::var("TETHER_CONSOLE_STALL_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(3)
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- the stalled console ---------------------------------------------------

/// A pipe standing in for the console. It starts empty, unread (a pipe
/// holds 64 KiB: the start-up lines fit); [`stall`](StalledConsole::stall)
/// fills it to the last byte through a non-blocking open of the test's
/// own, so the write end the child inherited (its stderr) keeps a blocking
/// open file description, as an inherited console's is.
struct StalledConsole {
    read: Option<OwnedFd>,
    write: OwnedFd,
}

fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
    let flags = fcntl(fd, FcntlArg::F_GETFL).expect("F_GETFL");
    OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK)
}

impl StalledConsole {
    fn new() -> StalledConsole {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe2");
        StalledConsole {
            read: Some(read),
            write,
        }
    }

    /// The console stops taking output (XOFF): the pipe is filled up.
    fn stall(&self) -> Instant {
        let filler = nix::fcntl::open(
            format!("/proc/self/fd/{}", self.write.as_raw_fd()).as_str(),
            OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open the console pipe again");
        let chunk = [b'#'; 4096];
        while nix::unistd::write(&filler, &chunk).is_ok() {}
        while nix::unistd::write(&filler, b"#").is_ok() {}
        self.assert_still_blocking();
        Instant::now()
    }

    /// The write end, for a child's stderr.
    fn stdio(&self) -> Stdio {
        Stdio::from(self.write.try_clone().expect("dup the console"))
    }

    /// `pipe:[INODE]`, as `/proc/PID/fd/N` links name it.
    fn link_name(&self) -> String {
        let st = nix::sys::stat::fstat(&self.write).expect("fstat");
        format!("pipe:[{}]", st.st_ino)
    }

    /// Reads everything waiting (the test's own read end, made
    /// non-blocking for this).
    fn drain(&self) -> Vec<u8> {
        let r = self.read.as_ref().expect("not handed to a reader yet");
        tether_common::sys::set_nonblocking(r.as_fd(), true).expect("O_NONBLOCK");
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = nix::unistd::read(r, &mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// The console takes output again: whatever waits is drained (the
    /// lines from before the stall, or written while the test filled the
    /// pipe, must be whole lines of tether's), then `log` reads the rest
    /// line by line.
    fn resume_into(&mut self, log: &mut LogCapture) {
        let waiting = self.drain();
        assert!(waiting.contains(&b'#'), "the filler is still there");
        let ours: Vec<u8> = waiting.into_iter().filter(|&b| b != b'#').collect();
        let ours = String::from_utf8_lossy(&ours);
        assert!(
            ours.is_empty() || ours.ends_with('\n'),
            "a half line in the console: {:?}",
            ours.lines().last()
        );
        for l in ours.lines() {
            assert!(
                l.starts_with("tether-"),
                "not a whole line of tether's: {l:?}"
            );
        }
        let r = self.read.take().expect("read end");
        tether_common::sys::set_nonblocking(r.as_fd(), false).expect("blocking again");
        log.attach(std::fs::File::from(r));
    }

    /// The open file description every holder of the console shares was
    /// never made non-blocking.
    fn assert_still_blocking(&self) {
        assert!(
            !is_nonblocking(self.write.as_fd()),
            "the console's shared open file description was made O_NONBLOCK"
        );
    }
}

/// The first line from stderr with `tag` carrying a drop count; the count.
fn wait_for_drop_count(log: &LogCapture, tag: &str) -> (String, u64) {
    let line = log
        .wait_for(LogSource::Stderr, &[tag, "console line"], LONG)
        .unwrap_or_else(|| {
            panic!(
                "no {tag} line with a drop count once the console took output again:\n{}",
                log.dump()
            )
        });
    let text = line.text;
    let count = text
        .rsplit_once(" (")
        .and_then(|(_, c)| c.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no count in {text:?}"));
    assert!(
        text.ends_with(" console lines dropped)") || text.ends_with(" console line dropped)"),
        "{text:?}"
    );
    (text, count)
}

/// `flags:` of `/proc/PID/fdinfo/FD`, octal.
fn fdinfo_flags(pid: i32, fd: i32) -> Option<i32> {
    parse_fdinfo_flags(&std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?)
}

fn parse_fdinfo_flags(text: &str) -> Option<i32> {
    let v = text.lines().find_map(|l| l.strip_prefix("flags:"))?;
    i32::from_str_radix(v.trim(), 8).ok()
}

/// Descriptors of `pid` whose link is `target`.
fn fds_linking(pid: i32, target: &str) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in d.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == target) {
                if let Some(n) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
                    out.push(n);
                }
            }
        }
    }
    out.sort();
    out
}

// ---- heartbeats watchdogd writes to "init" --------------------------------

/// Records when bytes arrive on a heartbeat pipe's read end.
struct BeatRecorder {
    beats: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BeatRecorder {
    fn start(read: OwnedFd) -> BeatRecorder {
        let beats = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (beats, stop) = (beats.clone(), stop.clone());
            std::thread::spawn(move || {
                use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::SeqCst) {
                    let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(20u16));
                    while let Ok(n) = nix::unistd::read(&read, &mut buf) {
                        if n == 0 {
                            break;
                        }
                        let now = Instant::now();
                        beats
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(std::iter::repeat_n(now, n));
                    }
                }
            })
        };
        BeatRecorder {
            beats,
            stop,
            thread: Some(thread),
        }
    }

    fn beats(&self) -> Vec<Instant> {
        self.beats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn wait_for_beat_after(&self, t: Instant, timeout: Duration) -> Option<Instant> {
        wait_until(timeout, || self.beats().last().copied().filter(|b| *b > t))
    }

    fn max_gap_between(&self, from: Instant, to: Instant) -> Duration {
        let v: Vec<Instant> = self
            .beats()
            .into_iter()
            .filter(|b| *b >= from && *b <= to)
            .collect();
        v.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }
}

impl Drop for BeatRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Kills and reaps a child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `n` syslog lines that arrived after `t` hold every needle;
/// when the `n`th arrived.
fn wait_for_nth_after(
    log: &LogCapture,
    hw: Option<&SimWatchdog>,
    needles: &[&str],
    t: Instant,
    n: usize,
) -> Instant {
    wait_until(LONG + Duration::from_secs(n as u64), || {
        log.matching(LogSource::Syslog, needles)
            .into_iter()
            .filter(|l| l.at > t)
            .nth(n - 1)
            .map(|l| l.at)
    })
    .unwrap_or_else(|| {
        let device = hw.map(|hw| {
            format!(
                "last pet {:?} ago, resets {:?}",
                hw.last_pet_age(),
                hw.resets()
            )
        });
        panic!(
            "fewer than {n} syslog lines holding {needles:?} (a loop blocked on the console?); \
             {}:\n{}",
            device.unwrap_or_else(|| "no device".into()),
            log.dump()
        )
    })
}

// ---- watchdogd ---------------------------------------------------------------

#[test]
fn watchdogd_keeps_petting_and_beating_with_stderr_a_full_pipe() {
    let _one = one_at_a_time();
    let timings = Timings::fast();
    let dir = TempDir::new("console-wd");
    let mut log = LogCapture::new(dir.path());
    let device = dir.join("watchdog");
    let config = dir.join("tether.toml");
    let mut text = timings.toml();
    text.push_str(&format!(
        "\n[watchdog]\ndevice = {:?}\n\n[log]\nsyslog_socket = {:?}\nkmsg = false\nstderr = true\n\n[paths]\nstate = {:?}\nrun = {:?}\n",
        device.display().to_string(),
        log.socket_path().display().to_string(),
        dir.join("state").display().to_string(),
        dir.join("run").display().to_string()
    ));
    std::fs::write(&config, text).expect("write tether.toml");
    let sim = SimWatchdog::new(&device, timings.hardware_timeout);
    let layers = [HeartbeatPipe::new("init"), HeartbeatPipe::new("restarter")];
    let writers = layers
        .iter()
        .map(|p| (p.name.clone(), p.write.try_clone().expect("dup")))
        .collect();
    let _beater = Beater::start(writers, timings.beat_interval);
    let to_init = HeartbeatPipe::new("to-init");

    let mut console = StalledConsole::new();
    let mut cmd = Command::new(bin("tether-watchdogd"));
    cmd.arg("--config")
        .arg(&config)
        .env("TETHER_HEARTBEATS", "init=3,restarter=4")
        .env("TETHER_FDS", "init=5")
        .env("TETHER_SYSLOG_SOCKET", log.socket_path())
        .env("TETHER_KMSG", "0")
        .env_remove("TETHER_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(console.stdio());
    let fds = [
        (layers[0].read.as_fd(), 3),
        (layers[1].read.as_fd(), 4),
        (to_init.write.as_fd(), 5),
    ];
    let child = tether_common::sys::spawn_with_fds(&mut cmd, &fds).expect("spawn watchdogd");
    let pid = child.id() as i32;
    let _child = Reaped(child);
    let recorder = BeatRecorder::start(to_init.read.try_clone().expect("dup"));

    // Running, the console taking output; then it stalls.
    let start = Instant::now();
    wait_for_nth_after(&log, Some(&sim), &["liveness"], start, 1);
    assert!(sim.pet_count() > 0, "petting before the stall");
    let stalled = console.stall();
    // stall_lines() liveness lines (3 s by default) of a loop that logs
    // into the stalled console, and still beats and pets after the last.
    let last_line = wait_for_nth_after(&log, Some(&sim), &["liveness"], stalled, stall_lines());
    let last_pet = sim
        .wait_for_pet_after(last_line, LONG)
        .unwrap_or_else(|| panic!("no pet after the last liveness line:\n{}", log.dump()));
    let last_beat = recorder
        .wait_for_beat_after(last_line, LONG)
        .unwrap_or_else(|| panic!("no beat to init after the last liveness line"));
    assert_eq!(sim.resets(), Vec::<ResetEvent>::new(), "{}", log.dump());
    let pet_gap = sim
        .max_gap_between(stalled, last_pet)
        .expect("at least two pets");
    let beat_gap = recorder.max_gap_between(stalled, last_beat);
    eprintln!(
        "FIGURE console watchdogd: stderr a full pipe for {} ms: longest pet gap {} ms (pet interval {} ms, hardware {} ms), longest beat gap to init {} ms (beat {} ms)",
        (last_pet - stalled).as_millis(),
        pet_gap.as_millis(),
        timings.beat_interval.as_millis(),
        timings.hardware_timeout.as_millis(),
        beat_gap.as_millis(),
        timings.beat_interval.as_millis(),
    );
    console.assert_still_blocking();
    assert_eq!(
        fdinfo_flags(pid, 2).map(|f| f & libc::O_NONBLOCK),
        Some(0),
        "watchdogd's fd 2 stays blocking"
    );
    let own = fds_linking(pid, &console.link_name());
    assert_eq!(own.len(), 2, "fd 2 and the logger's own open: {own:?}");

    console.resume_into(&mut log);
    let (line, n) = wait_for_drop_count(&log, "tether-watchdogd[");
    assert!(
        n >= stall_lines() as u64,
        "at least the liveness lines of the stall were dropped: {line:?}"
    );
}

// ---- the restarter -------------------------------------------------------------

/// Kills the restarter, then every process carrying the test's tag (its
/// services, in sessions of their own), on drop.
struct RestarterGuard {
    child: Child,
    tag_dir: PathBuf,
}

impl Drop for RestarterGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in tether_integration::svc::tagged_processes(&self.tag_dir) {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn the_restarter_keeps_beating_with_stderr_a_full_pipe() {
    let _one = one_at_a_time();
    let timings = Timings::fast();
    let dir = TempDir::new("console-rst");
    let mut log = LogCapture::new(dir.path());
    let (services, run, state) = (dir.join("services"), dir.join("run"), dir.join("state"));
    for d in [&services, &run, &state] {
        std::fs::create_dir_all(d).expect("scratch directories");
    }
    // A crash loop: the restarter logs each exit and start.
    let flapper = script(dir.path(), "flapper", "#!/bin/sh\nexit 3\n");
    std::fs::write(
        services.join("flapper.toml"),
        format!(
            "exec = [{:?}]\nrestart_delay = \"100ms\"\n",
            flapper.display().to_string()
        ),
    )
    .expect("service file");
    let p = |p: &Path| format!("{:?}", p.display().to_string());
    let mut text = timings.toml();
    text.push_str(&format!(
        "\n[log]\nsyslog_socket = {}\nkmsg = false\nstderr = true\n\n[paths]\nservices = {}\nrun = {}\nstate = {}\n",
        p(log.socket_path()),
        p(&services),
        p(&run),
        p(&state)
    ));
    let config = dir.join("tether.toml");
    std::fs::write(&config, text).expect("write tether.toml");
    let to_init = HeartbeatPipe::new("init");
    let to_watchdog = HeartbeatPipe::new("watchdog");

    let mut console = StalledConsole::new();
    let mut cmd = Command::new(bin("tether-restarter"));
    cmd.arg("--config")
        .arg(&config)
        .env("TETHER_FDS", "init=3,watchdog=4")
        .env(tether_integration::svc::TAG_VAR, dir.path())
        .env("TETHER_SYSLOG_SOCKET", log.socket_path())
        .env("TETHER_KMSG", "0")
        .env_remove("TETHER_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(console.stdio());
    let fds = [(to_init.write.as_fd(), 3), (to_watchdog.write.as_fd(), 4)];
    let child = tether_common::sys::spawn_with_fds(&mut cmd, &fds).expect("spawn restarter");
    let pid = child.id() as i32;
    let _guard = RestarterGuard {
        child,
        tag_dir: dir.path().to_path_buf(),
    };
    let recorder = BeatRecorder::start(to_init.read.try_clone().expect("dup"));

    let start = Instant::now();
    wait_for_nth_after(&log, None, &["tether-restarter[", "liveness"], start, 1);
    let stalled = console.stall();
    let last_line = wait_for_nth_after(
        &log,
        None,
        &["tether-restarter[", "liveness"],
        stalled,
        stall_lines(),
    );
    let last_beat = recorder
        .wait_for_beat_after(last_line, LONG)
        .unwrap_or_else(|| panic!("no beat to init after the last liveness line"));
    let beat_gap = recorder.max_gap_between(stalled, last_beat);
    let flaps = log
        .matching(LogSource::Syslog, &["flapper"])
        .into_iter()
        .filter(|l| l.at > stalled)
        .count();
    eprintln!(
        "FIGURE console restarter: stderr a full pipe for {} ms ({} lines about the crash loop): longest beat gap to init {} ms (beat {} ms)",
        (last_beat - stalled).as_millis(),
        flaps,
        beat_gap.as_millis(),
        timings.beat_interval.as_millis(),
    );
    assert!(flaps >= 5, "the crash loop was logged:\n{}", log.dump());
    console.assert_still_blocking();
    assert_eq!(
        fdinfo_flags(pid, 2).map(|f| f & libc::O_NONBLOCK),
        Some(0),
        "the restarter's fd 2 stays blocking"
    );
    let own = fds_linking(pid, &console.link_name());
    assert_eq!(own.len(), 2, "fd 2 and the logger's own open: {own:?}");

    console.resume_into(&mut log);
    let (line, n) = wait_for_drop_count(&log, "tether-restarter[");
    assert!(
        n >= stall_lines() as u64,
        "at least the liveness lines of the stall were dropped: {line:?}"
    );
}

// ---- the whole chain ----------------------------------------------------------

/// init as PID 1 of a fresh PID + mount namespace (as `chain::Chain`
/// starts it, but with stderr the stalled console), killed on drop.
struct StalledChain {
    dir: TempDir,
    log: LogCapture,
    hw: SimWatchdog,
    unshare: Child,
    init_pid: i32,
}

impl StalledChain {
    fn start(
        timings: &Timings,
        console: &StalledConsole,
        services: &[(&str, &str)],
    ) -> StalledChain {
        let dir = TempDir::new("console-chain");
        let (etc, services_dir, run, state) = (
            dir.join("etc"),
            dir.join("etc/services"),
            dir.join("run"),
            dir.join("state"),
        );
        for d in [&etc, &services_dir, &run, &state] {
            std::fs::create_dir_all(d).expect("chain directories");
        }
        for (name, text) in services {
            let text = text.replace("{DIR}", &dir.path().display().to_string());
            std::fs::write(services_dir.join(format!("{name}.toml")), text).expect("service");
        }
        let log = LogCapture::new(dir.path());
        let device = dir.join("watchdog");
        let p = |p: &Path| format!("{:?}", p.display().to_string());
        let mut text = timings.toml();
        text.push_str(&format!(
            "\n[init]\nmax_restarts = 5\nwindow = \"30s\"\nstop_timeout = \"3s\"\nkill_grace = \"500ms\"\n\
             \n[watchdog]\ndevice = {}\n\
             \n[log]\nsyslog_socket = {}\nkmsg = false\nstderr = true\n\
             \n[paths]\nservices = {}\nrun = {}\nstate = {}\nbin = {}\n",
            p(&device),
            p(log.socket_path()),
            p(&services_dir),
            p(&run),
            p(&state),
            p(&bin_dir()),
        ));
        let config = etc.join("tether.toml");
        std::fs::write(&config, text).expect("write tether.toml");
        let init_pid = Arc::new(AtomicI32::new(0));
        let hw = {
            let pid = init_pid.clone();
            SimWatchdog::with_callback(
                &device,
                timings.hardware_timeout,
                Some(Box::new(move |_e: &ResetEvent| {
                    let p = pid.load(Ordering::SeqCst);
                    if p > 0 {
                        signal(p, nix::sys::signal::Signal::SIGKILL);
                    }
                })),
            )
        };
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--mount", "--kill-child"])
            .arg(bin("tether-init"))
            .arg("--config")
            .arg(&config)
            .env("TETHER_SYSLOG_SOCKET", log.socket_path())
            .env("TETHER_KMSG", "0")
            .env_remove("TETHER_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(console.stdio())
            .spawn()
            .expect("spawn unshare (util-linux)");
        let upid = unshare.id() as i32;
        let pid = wait_until(Duration::from_secs(10), || {
            children_of(upid).first().copied()
        })
        .unwrap_or_else(|| panic!("unshare (pid {upid}) started no child"));
        init_pid.store(pid, Ordering::SeqCst);
        StalledChain {
            dir,
            log,
            hw,
            unshare,
            init_pid: pid,
        }
    }

    /// init's live child running `name`.
    fn layer(&self, name: &str) -> Option<i32> {
        children_of(self.init_pid).into_iter().find(|&p| {
            cmdline(p)
                .first()
                .is_some_and(|a| Path::new(a).file_name().is_some_and(|f| f == name))
        })
    }

    /// Every descendant of init whose command line mentions `needle`.
    fn processes(&self, needle: &str) -> Vec<i32> {
        let mut out = Vec::new();
        let mut todo = vec![self.init_pid];
        while let Some(p) = todo.pop() {
            if cmdline(p).iter().any(|a| a.contains(needle)) {
                out.push(p);
            }
            todo.extend(children_of(p));
        }
        out
    }
}

impl Drop for StalledChain {
    fn drop(&mut self) {
        signal(self.init_pid, nix::sys::signal::Signal::SIGKILL);
        if wait_until(Duration::from_secs(5), || {
            self.unshare.try_wait().ok().flatten()
        })
        .is_none()
        {
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    write_executable(&p, body);
    p
}

#[test]
fn init_and_both_layers_keep_beating_and_petting_with_stderr_a_full_pipe() {
    let _one = one_at_a_time();
    let timings = Timings::chain();
    let scripts = TempDir::new("console-scripts");
    // A service writing its own stderr (the restarter's output pipe, never
    // the console), recording what its fd 2 is.
    let talker = script(
        scripts.path(),
        "talker",
        &format!(
            "#!/bin/sh\n\
             cat /proc/self/fdinfo/2 > {d}/talker.fdinfo.tmp\n\
             mv {d}/talker.fdinfo.tmp {d}/talker.fdinfo\n\
             while :; do echo 'talker says hi' >&2; sleep 0.1; done\n",
            d = scripts.path().display()
        ),
    );
    // A crash loop: the restarter logs each exit and restart, into the
    // stalled console too.
    let flapper = script(scripts.path(), "flapper", "#!/bin/sh\nexit 3\n");
    let talker_toml = format!("exec = [{:?}]\n", talker.display().to_string());
    let flapper_toml = format!(
        "exec = [{:?}]\nrestart_delay = \"100ms\"\n",
        flapper.display().to_string()
    );
    let mut console = StalledConsole::new();
    let mut chain = StalledChain::start(
        &timings,
        &console,
        &[("talker", &talker_toml), ("flapper", &flapper_toml)],
    );
    let log = &chain.log;

    // Running, the console taking output: one liveness line of each layer.
    let start = Instant::now();
    for tag in ["tether-init[", "tether-watchdogd[", "tether-restarter["] {
        wait_for_nth_after(log, Some(&chain.hw), &[tag, "liveness"], start, 1);
    }
    assert!(chain.hw.pet_count() > 0, "petting before the stall");
    let restarter = chain
        .layer("tether-restarter")
        .unwrap_or_else(|| panic!("no restarter:\n{}", log.dump()));
    let watchdogd = chain
        .layer("tether-watchdogd")
        .unwrap_or_else(|| panic!("no watchdogd:\n{}", log.dump()));
    let stalled = console.stall();
    // stall_lines() liveness lines of each layer, logged into the stalled console.
    let mut last = stalled;
    for tag in ["tether-init[", "tether-watchdogd[", "tether-restarter["] {
        last = last.max(wait_for_nth_after(
            log,
            Some(&chain.hw),
            &[tag, "liveness"],
            stalled,
            stall_lines(),
        ));
    }
    let last_pet = chain
        .hw
        .wait_for_pet_after(last, LONG)
        .unwrap_or_else(|| panic!("no pet after the liveness lines:\n{}", log.dump()));
    assert_eq!(
        chain.hw.resets(),
        Vec::<ResetEvent>::new(),
        "{}",
        log.dump()
    );
    let pet_gap = chain
        .hw
        .max_gap_between(stalled, last_pet)
        .expect("at least two pets");
    let restarts = log
        .matching(LogSource::Syslog, &["flapper"])
        .into_iter()
        .filter(|l| l.at > stalled)
        .count();
    eprintln!(
        "FIGURE console chain: stderr a full pipe for {} ms ({} restarter lines about the crash loop): longest pet gap {} ms (pet interval {} ms, hardware {} ms)",
        (last_pet - stalled).as_millis(),
        restarts,
        pet_gap.as_millis(),
        timings.beat_interval.as_millis(),
        timings.hardware_timeout.as_millis(),
    );
    // How fresh watchdogd found each layer at each of its liveness lines
    // during the stall (`ok`: silent less than three beats; `late`, `STALE`).
    for l in log
        .matching(LogSource::Syslog, &["tether-watchdogd[", "liveness"])
        .into_iter()
        .filter(|l| l.at > stalled)
    {
        eprintln!("FIGURE console chain: during the stall: {}", l.text);
        assert!(!l.text.contains("STALE"), "{}", l.text);
    }
    // Every layer kept beating: none was found silent, killed or replaced.
    for needle in ["<25>", "(hang_timeout)", "silent for"] {
        let bad = log.matching(LogSource::Syslog, &[needle]);
        assert!(bad.is_empty(), "{needle:?}: {bad:?}");
    }
    assert_eq!(chain.layer("tether-restarter"), Some(restarter));
    assert_eq!(chain.layer("tether-watchdogd"), Some(watchdogd));
    assert!(restarts >= 5, "the crash loop was logged:\n{}", log.dump());

    // Nobody's stderr was made non-blocking, and the logger's own opens
    // stay in the layers.
    console.assert_still_blocking();
    let link = console.link_name();
    for (who, pid) in [
        ("init", chain.init_pid),
        ("watchdogd", watchdogd),
        ("restarter", restarter),
    ] {
        assert_eq!(
            fdinfo_flags(pid, 2).map(|f| f & libc::O_NONBLOCK),
            Some(0),
            "{who}'s fd 2"
        );
        let fds = fds_linking(pid, &link);
        assert_eq!(
            fds.len(),
            2,
            "{who}: fd 2 and the logger's own open: {fds:?}"
        );
    }
    log.wait_for(LogSource::Syslog, &["talker says hi"], LONG)
        .unwrap_or_else(|| panic!("the service's stderr reaches syslog:\n{}", log.dump()));
    let fdinfo_path = scripts.join("talker.fdinfo");
    let talker_fdinfo = wait_until(LONG, || std::fs::read_to_string(&fdinfo_path).ok())
        .expect("the talker wrote its fdinfo");
    let flags = parse_fdinfo_flags(&talker_fdinfo).expect("flags in fdinfo");
    assert_eq!(
        flags & libc::O_NONBLOCK,
        0,
        "the service's own stderr is as it was"
    );
    for pid in chain.processes("talker") {
        assert_eq!(
            fds_linking(pid, &link),
            Vec::<i32>::new(),
            "a service holds no descriptor of the console"
        );
    }

    // The console takes output again: each binary's next line carries the
    // count of what it dropped.
    console.resume_into(&mut chain.log);
    for tag in ["tether-init[", "tether-watchdogd[", "tether-restarter["] {
        let (line, n) = wait_for_drop_count(&chain.log, tag);
        assert!(
            n >= stall_lines() as u64,
            "{tag}: at least its liveness lines of the stall: {line:?}"
        );
    }
    let _ = &chain.dir;
}
