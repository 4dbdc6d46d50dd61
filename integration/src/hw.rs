//! The simulated watchdog hardware and the helpers to run watchdogd against
//! it: heartbeat pipes with a beater that can pause a layer, a capture of the
//! daemon's log lines (its own syslog socket and its stderr), and
//! [`WatchdogdRig`], which puts them together.
//!
//! [`SimWatchdog`] plays the device: it creates a FIFO and a thread reads it.
//! Every byte other than `V` is a pet. After the first byte the device is
//! armed; when no byte arrives for longer than its timeout it declares a
//! RESET (recorded, sent as an event, and passed to an optional callback —
//! the chain tests kill the PID namespace there), then waits disarmed for the
//! next byte (a new opener). `V` followed by the writer closing disarms it,
//! like the kernel's magic close; a close without `V` leaves it armed.
//!
//! FIFO details: the reader opens `O_RDONLY | O_NONBLOCK` (which succeeds
//! with no writer, so watchdogd's `O_WRONLY | O_NONBLOCK` open works while
//! the simulator runs and fails with `ENXIO` before). When the last writer
//! closes, `poll` reports `POLLHUP` for good; the simulator then opens a new
//! read end (which sees no hang-up until a new writer comes and goes) and
//! closes the old one, so it never spins.

use crate::bins::TempDir;
use crossbeam_channel::{Receiver, Sender};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tether_common::duration;

/// A RESET declared by the simulated hardware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetEvent {
    /// When the simulator declared it.
    pub at: Instant,
    /// The last byte before it.
    pub last_byte: Instant,
    /// `at - last_byte` (just over the timeout).
    pub silence: Duration,
}

/// Everything the simulator observes, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HwEvent {
    Pet(Instant),
    MagicV(Instant),
    /// The last writer closed; `disarmed` when the last byte was `V`.
    WriterClosed {
        at: Instant,
        disarmed: bool,
    },
    Reset(ResetEvent),
}

/// Called on each reset, from the simulator's thread.
pub type ResetCallback = Box<dyn FnMut(&ResetEvent) + Send>;

#[derive(Debug, Default)]
struct HwState {
    pets: Vec<Instant>,
    v_count: usize,
    armed: bool,
    disarmed: bool,
    expect_close: bool,
    last_byte: Option<Instant>,
    resets: Vec<ResetEvent>,
    writer_closes: usize,
}

type Shared<T> = Arc<(Mutex<T>, Condvar)>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A FIFO whose reader plays the watchdog hardware.
pub struct SimWatchdog {
    path: PathBuf,
    timeout: Duration,
    shared: Shared<HwState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    events: Receiver<HwEvent>,
}

fn open_reader(path: &Path) -> std::io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    Ok(nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?)
}

impl SimWatchdog {
    /// Creates the FIFO at `path` (if missing) and starts reading it; the
    /// device resets when no byte comes for longer than `timeout`.
    pub fn new(path: &Path, timeout: Duration) -> SimWatchdog {
        SimWatchdog::with_callback(path, timeout, None)
    }

    /// As [`new`](SimWatchdog::new), calling `on_reset` at each reset.
    pub fn with_callback(
        path: &Path,
        timeout: Duration,
        on_reset: Option<ResetCallback>,
    ) -> SimWatchdog {
        if !path.exists() {
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .unwrap_or_else(|e| panic!("mkfifo {}: {}", path.display(), e));
        }
        let fd = open_reader(path).unwrap_or_else(|e| panic!("open {}: {}", path.display(), e));
        let shared: Shared<HwState> = Arc::new((Mutex::new(HwState::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = {
            let (shared, stop, path) = (shared.clone(), stop.clone(), path.to_path_buf());
            std::thread::Builder::new()
                .name("sim-watchdog".into())
                .spawn(move || hw_thread(path, fd, timeout, shared, stop, tx, on_reset))
                .expect("spawn the simulator thread")
        };
        SimWatchdog {
            path: path.to_path_buf(),
            timeout,
            shared,
            stop,
            thread: Some(thread),
            events: rx,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A receiver of every event from now on (shared: each event goes to one
    /// receiver).
    pub fn events(&self) -> Receiver<HwEvent> {
        self.events.clone()
    }

    fn state(&self) -> MutexGuard<'_, HwState> {
        lock(&self.shared.0)
    }

    /// When each pet arrived.
    pub fn pets(&self) -> Vec<Instant> {
        self.state().pets.clone()
    }

    pub fn pet_count(&self) -> usize {
        self.state().pets.len()
    }

    pub fn last_pet(&self) -> Option<Instant> {
        self.state().pets.last().copied()
    }

    pub fn last_pet_age(&self) -> Option<Duration> {
        self.last_pet().map(|t| t.elapsed())
    }

    /// The longest gap between two consecutive pets.
    pub fn max_gap(&self) -> Option<Duration> {
        let s = self.state();
        s.pets.windows(2).map(|w| w[1] - w[0]).max()
    }

    /// The longest gap between consecutive pets that both arrived in `from..=to`.
    pub fn max_gap_between(&self, from: Instant, to: Instant) -> Option<Duration> {
        let s = self.state();
        let v: Vec<Instant> = s
            .pets
            .iter()
            .copied()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        v.windows(2).map(|w| w[1] - w[0]).max()
    }

    pub fn resets(&self) -> Vec<ResetEvent> {
        self.state().resets.clone()
    }

    /// Whether a `V` ever arrived.
    pub fn saw_magic_close(&self) -> bool {
        self.state().v_count > 0
    }

    /// Whether the device is disarmed by a `V` and a close (and no byte since).
    pub fn disarmed(&self) -> bool {
        self.state().disarmed
    }

    /// Whether the device is counting down (a byte arrived and no reset or
    /// disarm since).
    pub fn armed(&self) -> bool {
        self.state().armed
    }

    /// How many times the last writer closed.
    pub fn writer_closes(&self) -> usize {
        self.state().writer_closes
    }

    fn wait_until<F: Fn(&HwState) -> bool>(&self, timeout: Duration, f: F) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.shared;
        let mut g = lock(m);
        loop {
            if f(&g) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Waits until at least one reset has happened; returns the latest.
    pub fn wait_for_reset(&self, timeout: Duration) -> Option<ResetEvent> {
        if self.wait_until(timeout, |s| !s.resets.is_empty()) {
            self.state().resets.last().cloned()
        } else {
            None
        }
    }

    /// Waits until at least `n` resets have happened.
    pub fn wait_for_resets(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.resets.len() >= n)
    }

    /// Waits until at least `n` pets in total have arrived.
    pub fn wait_for_pets(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.pets.len() >= n)
    }

    /// Waits for a pet that arrives after `t`.
    pub fn wait_for_pet_after(&self, t: Instant, timeout: Duration) -> Option<Instant> {
        if self.wait_until(timeout, |s| s.pets.last().is_some_and(|p| *p > t)) {
            self.last_pet()
        } else {
            None
        }
    }

    /// Waits until the device is disarmed (V, then close).
    pub fn wait_for_disarm(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.disarmed)
    }
}

impl Drop for SimWatchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn hw_thread(
    path: PathBuf,
    mut fd: OwnedFd,
    timeout: Duration,
    shared: Shared<HwState>,
    stop: Arc<AtomicBool>,
    tx: Sender<HwEvent>,
    mut on_reset: Option<ResetCallback>,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    const TICK: Duration = Duration::from_millis(20);
    let (m, cv) = &*shared;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        // Sleep in poll until a byte, a hang-up, the reset deadline or a tick
        // (to notice `stop`).
        let wait = {
            let s = lock(m);
            match (s.armed, s.last_byte) {
                (true, Some(t)) => (t + timeout)
                    .saturating_duration_since(Instant::now())
                    .min(TICK),
                _ => TICK,
            }
        };
        let ms = (wait.as_micros().div_ceil(1000) as u16).max(1);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let revents = match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) => fds[0].revents().unwrap_or(PollFlags::empty()),
            Err(_) => PollFlags::empty(),
        };
        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
            let mut closed = false;
            loop {
                match nix::unistd::read(&fd, &mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        let now = Instant::now();
                        let mut s = lock(m);
                        for &b in &buf[..n] {
                            s.armed = true;
                            s.disarmed = false;
                            s.last_byte = Some(now);
                            if b == b'V' {
                                s.v_count += 1;
                                s.expect_close = true;
                                let _ = tx.send(HwEvent::MagicV(now));
                            } else {
                                s.expect_close = false;
                                s.pets.push(now);
                                let _ = tx.send(HwEvent::Pet(now));
                            }
                        }
                        cv.notify_all();
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
            if closed && revents.contains(PollFlags::POLLHUP) {
                let now = Instant::now();
                {
                    let mut s = lock(m);
                    s.writer_closes += 1;
                    let disarmed = s.expect_close;
                    if disarmed {
                        s.armed = false;
                        s.disarmed = true;
                    }
                    s.expect_close = false;
                    let _ = tx.send(HwEvent::WriterClosed { at: now, disarmed });
                    cv.notify_all();
                }
                // A fresh read end sees no hang-up until the next writer
                // comes and goes; open it before closing the old one so a
                // writer never finds the FIFO without a reader.
                if let Ok(new) = open_reader(&path) {
                    fd = new;
                }
            }
        }
        let now = Instant::now();
        let reset = {
            let mut s = lock(m);
            match (s.armed, s.last_byte) {
                (true, Some(t)) if now.duration_since(t) > timeout => {
                    let ev = ResetEvent {
                        at: now,
                        last_byte: t,
                        silence: now.duration_since(t),
                    };
                    s.armed = false;
                    s.resets.push(ev.clone());
                    cv.notify_all();
                    Some(ev)
                }
                _ => None,
            }
        };
        if let Some(ev) = reset {
            if let Some(cb) = on_reset.as_mut() {
                cb(&ev);
            }
            let _ = tx.send(HwEvent::Reset(ev));
        }
    }
}

/// One heartbeat pipe, both ends kept by the test (as init keeps them).
pub struct HeartbeatPipe {
    pub name: String,
    pub read: OwnedFd,
    pub write: OwnedFd,
}

impl HeartbeatPipe {
    /// `O_CLOEXEC | O_NONBLOCK` on both ends, like init's.
    pub fn new(name: &str) -> HeartbeatPipe {
        let (read, write) = tether_common::heartbeat::pipe().expect("pipe2");
        HeartbeatPipe {
            name: name.to_string(),
            read,
            write,
        }
    }

    /// Bytes waiting in the pipe (drained).
    pub fn drain(&self) -> usize {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return total,
            }
        }
    }
}

#[derive(Debug, Default)]
struct BeaterState {
    paused: Vec<String>,
    last: Vec<(String, Instant)>,
    counts: Vec<(String, usize)>,
}

/// A thread writing `.` to each layer's pipe every interval; each layer can
/// be paused and resumed.
pub struct Beater {
    state: Arc<Mutex<BeaterState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Beater {
    /// Beats at once, then every `interval`, into each `(layer, write end)`.
    pub fn start(writers: Vec<(String, OwnedFd)>, interval: Duration) -> Beater {
        let state = Arc::new(Mutex::new(BeaterState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("beater".into())
                .spawn(move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::SeqCst) {
                        let now = Instant::now();
                        if now >= next {
                            let mut s = lock(&state);
                            for (name, fd) in &writers {
                                if s.paused.contains(name) {
                                    continue;
                                }
                                if nix::unistd::write(fd, b".").is_ok() {
                                    let now = Instant::now();
                                    match s.last.iter_mut().find(|(n, _)| n == name) {
                                        Some(e) => e.1 = now,
                                        None => s.last.push((name.clone(), now)),
                                    }
                                    match s.counts.iter_mut().find(|(n, _)| n == name) {
                                        Some(e) => e.1 += 1,
                                        None => s.counts.push((name.clone(), 1)),
                                    }
                                }
                            }
                            next += interval;
                            if next <= now {
                                next = now + interval;
                            }
                        }
                        std::thread::sleep(
                            next.saturating_duration_since(Instant::now())
                                .min(Duration::from_millis(20)),
                        );
                    }
                })
                .expect("spawn the beater thread")
        };
        Beater {
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops beating `layer`; returns the time of its last beat.
    pub fn pause(&self, layer: &str) -> Option<Instant> {
        let mut s = lock(&self.state);
        if !s.paused.iter().any(|p| p == layer) {
            s.paused.push(layer.to_string());
        }
        s.last.iter().find(|(n, _)| n == layer).map(|(_, t)| *t)
    }

    pub fn resume(&self, layer: &str) {
        lock(&self.state).paused.retain(|p| p != layer);
    }

    pub fn last_beat(&self, layer: &str) -> Option<Instant> {
        lock(&self.state)
            .last
            .iter()
            .find(|(n, _)| n == layer)
            .map(|(_, t)| *t)
    }

    pub fn beats(&self, layer: &str) -> usize {
        lock(&self.state)
            .counts
            .iter()
            .find(|(n, _)| n == layer)
            .map_or(0, |(_, c)| *c)
    }
}

impl Drop for Beater {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where a captured line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogSource {
    Syslog,
    Stderr,
}

/// One captured log line.
#[derive(Clone, Debug)]
pub struct LogLine {
    pub at: Instant,
    pub source: LogSource,
    /// Syslog lines keep their `<PRI>tag[pid]: ` header.
    pub text: String,
}

/// Collects a daemon's log lines: a syslog datagram socket of its own
/// (point `[log] syslog_socket` or `TETHER_SYSLOG_SOCKET` at
/// [`socket_path`](LogCapture::socket_path)) and, once attached, its stderr.
pub struct LogCapture {
    socket: PathBuf,
    lines: Shared<Vec<LogLine>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl LogCapture {
    /// Binds `dir/log.sock`.
    pub fn new(dir: &Path) -> LogCapture {
        let socket = dir.join("log.sock");
        let _ = std::fs::remove_file(&socket);
        let sock = UnixDatagram::bind(&socket)
            .unwrap_or_else(|e| panic!("bind {}: {}", socket.display(), e));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let lines: Shared<Vec<LogLine>> = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let t = {
            let (lines, stop) = (lines.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        push_line(&lines, LogSource::Syslog, text);
                    }
                }
            })
        };
        LogCapture {
            socket,
            lines,
            stop,
            threads: vec![t],
        }
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Reads `stream` (a child's stderr) line by line until it closes.
    pub fn attach<R: Read + Send + 'static>(&mut self, stream: R) {
        let lines = self.lines.clone();
        self.threads.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                match line {
                    Ok(l) => push_line(&lines, LogSource::Stderr, l),
                    Err(_) => break,
                }
            }
        }));
    }

    pub fn lines(&self) -> Vec<LogLine> {
        lock(&self.lines.0).clone()
    }

    /// Every line's text from `source`.
    pub fn texts(&self, source: LogSource) -> Vec<String> {
        lock(&self.lines.0)
            .iter()
            .filter(|l| l.source == source)
            .map(|l| l.text.clone())
            .collect()
    }

    /// Lines from `source` containing every one of `needles`.
    pub fn matching(&self, source: LogSource, needles: &[&str]) -> Vec<LogLine> {
        lock(&self.lines.0)
            .iter()
            .filter(|l| l.source == source && needles.iter().all(|n| l.text.contains(n)))
            .cloned()
            .collect()
    }

    /// Waits for a line from `source` containing every one of `needles`.
    pub fn wait_for(
        &self,
        source: LogSource,
        needles: &[&str],
        timeout: Duration,
    ) -> Option<LogLine> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut g = lock(m);
        loop {
            if let Some(l) = g
                .iter()
                .find(|l| l.source == source && needles.iter().all(|n| l.text.contains(n)))
            {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Everything captured, for assertion messages.
    pub fn dump(&self) -> String {
        lock(&self.lines.0)
            .iter()
            .map(|l| format!("{:?}: {}", l.source, l.text))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn push_line(lines: &Shared<Vec<LogLine>>, source: LogSource, text: String) {
    let (m, cv) = &**lines;
    lock(m).push(LogLine {
        at: Instant::now(),
        source,
        text,
    });
    cv.notify_all();
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The stderr readers end when the child's stderr closes; only the
        // socket thread is joined.
        if !self.threads.is_empty() {
            let t = self.threads.remove(0);
            let _ = t.join();
        }
    }
}

/// The chain's timings, written into `[timing]`.
#[derive(Clone, Debug)]
pub struct Timings {
    pub beat_interval: Duration,
    pub hang_timeout: Duration,
    pub restart_delay: Duration,
    pub startup_grace: Duration,
    pub stale_timeout: Duration,
    /// Whole seconds.
    pub hardware_timeout: Duration,
    pub liveness_interval: Duration,
}

impl Timings {
    /// Short timings for tests, within the budget rules: beat 100 ms, hang
    /// 300 ms, restart delay 100 ms, grace 100 ms, stale 1 s, hardware 2 s.
    pub fn fast() -> Timings {
        let ms = Duration::from_millis;
        Timings {
            beat_interval: ms(100),
            hang_timeout: ms(300),
            restart_delay: ms(100),
            startup_grace: ms(100),
            stale_timeout: ms(1000),
            hardware_timeout: ms(2000),
            liveness_interval: ms(1000),
        }
    }

    /// The timings of the init and whole-chain tests: a hang is seen after
    /// 1 s, the hardware fires 3 s after the last pet.
    pub fn chain() -> Timings {
        let ms = Duration::from_millis;
        Timings {
            beat_interval: ms(100),
            hang_timeout: ms(1000),
            restart_delay: ms(200),
            startup_grace: ms(500),
            stale_timeout: ms(2000),
            hardware_timeout: ms(3000),
            liveness_interval: ms(1000),
        }
    }

    /// The built-in defaults of DESIGN.md (beat 1 s, stale 20 s, hardware 30 s).
    pub fn defaults() -> Timings {
        let s = Duration::from_secs;
        Timings {
            beat_interval: s(1),
            hang_timeout: s(10),
            restart_delay: s(1),
            startup_grace: s(5),
            stale_timeout: s(20),
            hardware_timeout: s(30),
            liveness_interval: s(60),
        }
    }

    /// The `[timing]` section.
    pub fn toml(&self) -> String {
        format!(
            "[timing]\nbeat_interval = \"{}\"\nhang_timeout = \"{}\"\nrestart_delay = \"{}\"\nstartup_grace = \"{}\"\nstale_timeout = \"{}\"\nhardware_timeout = \"{}\"\nliveness_interval = \"{}\"\n",
            duration::format(self.beat_interval),
            duration::format(self.hang_timeout),
            duration::format(self.restart_delay),
            duration::format(self.startup_grace),
            duration::format(self.stale_timeout),
            duration::format(self.hardware_timeout),
            duration::format(self.liveness_interval),
        )
    }
}

/// How to set up a [`WatchdogdRig`].
#[derive(Clone, Debug)]
pub struct RigOptions {
    pub timings: Timings,
    pub allow_disarm: bool,
    /// Start the simulated device before watchdogd (else create it later
    /// with [`WatchdogdRig::create_device`]).
    pub device_present: bool,
    /// Layers watchdogd watches (read ends at fds 3, 4, ...).
    pub layers: Vec<String>,
    /// Replaces the generated `tether.toml` entirely (e.g. garbage).
    pub config_text: Option<String>,
    /// Pass `--device` and `--state-dir` on the command line instead of
    /// writing them into the file.
    pub paths_as_flags: bool,
    /// Where the state directory is (default `DIR/state`).
    pub state_dir: Option<PathBuf>,
    /// `TETHER_HEARTBEATS`: `None` for the list of `layers` (the default),
    /// `Some(None)` to leave it unset, `Some(Some(v))` to pass `v` instead
    /// (the pipes are still inherited at fds 3, 4, ...).
    pub heartbeats_env: Option<Option<std::ffi::OsString>>,
    /// More environment (e.g. `TETHER_CHAIN_TIMING`).
    pub env: Vec<(String, std::ffi::OsString)>,
    /// More arguments after `--config FILE` (e.g. `--no-layers`).
    pub args: Vec<String>,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            timings: Timings::fast(),
            allow_disarm: false,
            device_present: true,
            layers: vec!["init".into(), "restarter".into()],
            config_text: None,
            paths_as_flags: false,
            state_dir: None,
            heartbeats_env: None,
            env: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// watchdogd with a simulated device, heartbeat pipes, a beater and a log
/// capture, in a scratch directory. The child is killed on drop.
pub struct WatchdogdRig {
    pub dir: TempDir,
    pub opts: RigOptions,
    pub device_path: PathBuf,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    pub sim: Option<SimWatchdog>,
    pub pipes: Vec<HeartbeatPipe>,
    /// watchdogd's supervision pipe to init (the test plays init).
    pub to_init: HeartbeatPipe,
    pub beater: Beater,
    pub log: LogCapture,
    pub child: Option<Child>,
    bin: PathBuf,
}

impl WatchdogdRig {
    /// Sets everything up and starts `bin` (usually
    /// `bins::bin("tether-watchdogd")`).
    pub fn start(bin: &Path, label: &str, opts: RigOptions) -> WatchdogdRig {
        let dir = TempDir::new(label);
        let device_path = dir.join("watchdog");
        let state_dir = opts.state_dir.clone().unwrap_or_else(|| dir.join("state"));
        let config_path = dir.join("tether.toml");
        let log = LogCapture::new(dir.path());
        let text = match &opts.config_text {
            Some(t) => t.clone(),
            None => {
                let mut t = opts.timings.toml();
                t.push_str(&format!(
                    "\n[watchdog]\nallow_disarm = {}\n",
                    opts.allow_disarm
                ));
                if !opts.paths_as_flags {
                    t.push_str(&format!(
                        "device = {:?}\n",
                        device_path.display().to_string()
                    ));
                }
                t.push_str(&format!(
                    "\n[log]\nsyslog_socket = {:?}\nkmsg = false\nstderr = true\n",
                    log.socket_path().display().to_string()
                ));
                // The runtime directory (watchdogd's status file) is the
                // test's own, never the host's /run/tether.
                let run_dir = dir.path().join("run");
                if !opts.paths_as_flags {
                    t.push_str(&format!(
                        "\n[paths]\nstate = {:?}\nrun = {:?}\n",
                        state_dir.display().to_string(),
                        run_dir.display().to_string()
                    ));
                } else {
                    t.push_str(&format!(
                        "\n[paths]\nrun = {:?}\n",
                        run_dir.display().to_string()
                    ));
                }
                t
            }
        };
        std::fs::write(&config_path, text).expect("write tether.toml");
        let sim = opts
            .device_present
            .then(|| SimWatchdog::new(&device_path, opts.timings.hardware_timeout));
        let pipes: Vec<HeartbeatPipe> = opts.layers.iter().map(|n| HeartbeatPipe::new(n)).collect();
        let writers = pipes
            .iter()
            .map(|p| (p.name.clone(), p.write.try_clone().expect("dup write end")))
            .collect();
        let beater = Beater::start(writers, opts.timings.beat_interval);
        let mut rig = WatchdogdRig {
            dir,
            opts,
            device_path,
            state_dir,
            config_path,
            sim,
            pipes,
            to_init: HeartbeatPipe::new("init"),
            beater,
            log,
            child: None,
            bin: bin.to_path_buf(),
        };
        rig.spawn();
        rig
    }

    /// Starts (or starts again, after a kill) watchdogd on the same pipes,
    /// device and state directory.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config").arg(&self.config_path);
        if self.opts.paths_as_flags {
            cmd.arg("--device")
                .arg(&self.device_path)
                .arg("--state-dir")
                .arg(&self.state_dir);
        }
        let mut fds: Vec<(BorrowedFd<'_>, i32)> = Vec::new();
        let mut list = Vec::new();
        for (i, p) in self.pipes.iter().enumerate() {
            let fd = 3 + i as i32;
            fds.push((p.read.as_fd(), fd));
            list.push(format!("{}={}", p.name, fd));
        }
        let init_fd = 3 + self.pipes.len() as i32;
        fds.push((self.to_init.write.as_fd(), init_fd));
        match &self.opts.heartbeats_env {
            None => cmd.env("TETHER_HEARTBEATS", list.join(",")),
            Some(None) => cmd.env_remove("TETHER_HEARTBEATS"),
            Some(Some(v)) => cmd.env("TETHER_HEARTBEATS", v),
        };
        cmd.args(&self.opts.args);
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        cmd.env("TETHER_FDS", format!("init={}", init_fd))
            // Belt and braces: never the host's /dev/log or /dev/kmsg, even
            // when the daemon falls back to built-in defaults.
            .env("TETHER_SYSLOG_SOCKET", self.log.socket_path())
            .env("TETHER_KMSG", "0")
            .env_remove("TETHER_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child =
            tether_common::sys::spawn_with_fds(&mut cmd, &fds).expect("spawn tether-watchdogd");
        if let Some(e) = child.stderr.take() {
            self.log.attach(e);
        }
        self.child = Some(child);
    }

    /// Creates the simulated device now (for a start without it).
    pub fn create_device(&mut self) {
        self.sim = Some(SimWatchdog::new(
            &self.device_path,
            self.opts.timings.hardware_timeout,
        ));
    }

    pub fn sim(&self) -> &SimWatchdog {
        self.sim.as_ref().expect("the simulated device exists")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("watchdogd was started").id() as i32
    }

    /// Sends `sig` to watchdogd.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill");
    }

    /// Waits for watchdogd to exit; `None` if still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether watchdogd is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The pipe of `layer`.
    pub fn pipe(&self, layer: &str) -> &HeartbeatPipe {
        self.pipes
            .iter()
            .find(|p| p.name == layer)
            .expect("no such layer")
    }

    /// The state directory's `reset-reason`, if any.
    pub fn reset_reason(&self) -> Option<String> {
        std::fs::read_to_string(self.state_dir.join("reset-reason")).ok()
    }
}

impl Drop for WatchdogdRig {
    fn drop(&mut self) {
        self.kill9();
    }
}
