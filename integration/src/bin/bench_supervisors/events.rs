//! What the benchmark observes, each on a thread of its own that records
//! timestamps on `CLOCK_MONOTONIC`:
//!
//! - [`BenchSocket`]: the unix datagram socket every blocker reports to
//!   (`BENCH_SOCK`). A datagram is `INDEX MONO_NS`, the blocker's own clock
//!   reading at the start of `main`; the sender's pid comes from the
//!   kernel (`SO_PASSCRED`), already translated into our PID namespace. The
//!   blocker's timestamp, not the arrival time, is the moment the service
//!   ran: a busy machine delaying this thread changes no figure.
//! - [`SyslogSink`]: the syslog socket of tether-restarter. Each line is
//!   stamped by the kernel when it was queued (`SO_TIMESTAMPNS`, realtime,
//!   converted to monotonic with the offset read at receipt), an upper
//!   bound on when the restarter acted.
//! - [`Beats`]: one heartbeat pipe of the restarter; the arrival time of
//!   each byte.

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials,
};
use std::collections::HashMap;
use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tether_common::clock::MonoTime;

/// Receive buffer asked for (root may exceed `rmem_max` with `SO_RCVBUFFORCE`).
const RCVBUF: usize = 8 << 20;
/// How often receiving threads look at their stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A blocker's start report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// The blocker's pid in our PID namespace.
    pub pid: i32,
    /// The blocker's `CLOCK_MONOTONIC` at the start of its `main`.
    pub at: MonoTime,
}

/// Shared state with a condition variable.
struct Shared<T> {
    state: Mutex<T>,
    cv: Condvar,
}

impl<T> Shared<T> {
    fn new(v: T) -> Arc<Shared<T>> {
        Arc::new(Shared {
            state: Mutex::new(v),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `f` returns `Some`, or `timeout` passes.
    fn wait_for<R>(&self, timeout: Duration, mut f: impl FnMut(&T) -> Option<R>) -> Option<R> {
        let deadline = MonoTime::now() + timeout;
        let mut g = self.lock();
        loop {
            if let Some(r) = f(&g) {
                return Some(r);
            }
            let now = MonoTime::now();
            if now >= deadline {
                return None;
            }
            let wait = (deadline - now).min(POLL);
            g = self
                .cv
                .wait_timeout(g, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn update(&self, f: impl FnOnce(&mut T)) {
        f(&mut self.lock());
        self.cv.notify_all();
    }
}

/// A receiving thread and its stop flag; stopped and joined on drop.
struct Receiver {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn spawn(name: &str, body: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Receiver {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(s))
            .expect("spawn a receiving thread");
        Receiver {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind_datagram(path: &Path) -> std::io::Result<UnixDatagram> {
    let _ = std::fs::remove_file(path);
    let sock = UnixDatagram::bind(path)?;
    sock.set_read_timeout(Some(POLL))?;
    if setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &RCVBUF);
    }
    Ok(sock)
}

fn timed_out(e: nix::errno::Errno) -> bool {
    matches!(e, nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR)
}

/// Every start report, by service index.
#[derive(Default)]
struct Starts {
    by_index: HashMap<usize, Vec<Start>>,
    malformed: usize,
}

/// The socket blockers report their start to.
pub struct BenchSocket {
    path: PathBuf,
    shared: Arc<Shared<Starts>>,
    _rx: Receiver,
}

impl BenchSocket {
    pub fn bind(path: &Path) -> std::io::Result<BenchSocket> {
        let sock = bind_datagram(path)?;
        setsockopt(&sock, sockopt::PassCred, &true)?;
        let shared = Shared::new(Starts::default());
        let sh = shared.clone();
        let rx = Receiver::spawn("bench-sock", move |stop| {
            let mut buf = [0u8; 128];
            while !stop.load(Ordering::SeqCst) {
                let got = {
                    let mut iov = [IoSliceMut::new(&mut buf)];
                    let mut cmsg = nix::cmsg_space!(UnixCredentials);
                    match recvmsg::<()>(
                        sock.as_raw_fd(),
                        &mut iov,
                        Some(&mut cmsg),
                        MsgFlags::empty(),
                    ) {
                        Ok(msg) => {
                            let pid = msg.cmsgs().ok().and_then(|mut it| {
                                it.find_map(|c| match c {
                                    ControlMessageOwned::ScmCredentials(cr) => Some(cr.pid()),
                                    _ => None,
                                })
                            });
                            Some((msg.bytes, pid))
                        }
                        Err(e) if timed_out(e) => None,
                        Err(_) => None,
                    }
                };
                let Some((n, pid)) = got else { continue };
                let parsed = parse_start(&buf[..n]);
                sh.update(|s| match (parsed, pid) {
                    (Some((index, at)), Some(pid)) if pid > 0 => {
                        s.by_index.entry(index).or_default().push(Start { pid, at });
                    }
                    _ => s.malformed += 1,
                });
            }
        });
        Ok(BenchSocket {
            path: path.to_path_buf(),
            shared,
            _rx: rx,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The latest start of service `index`.
    pub fn current(&self, index: usize) -> Option<Start> {
        self.shared
            .lock()
            .by_index
            .get(&index)
            .and_then(|v| v.last().copied())
    }

    /// Datagrams that could not be read (a bug in the set-up if not zero).
    pub fn malformed(&self) -> usize {
        self.shared.lock().malformed
    }

    /// Every start so far, summed over services.
    pub fn total_starts(&self) -> usize {
        self.shared.lock().by_index.values().map(Vec::len).sum()
    }

    /// Waits until each of services `0..n` has started once after `after`;
    /// returns the latest of those first starts. `None` on timeout.
    pub fn wait_all_after(&self, n: usize, after: MonoTime, timeout: Duration) -> Option<MonoTime> {
        // Incremental: each wake looks only at services still missing.
        let mut pending: Vec<usize> = (0..n).collect();
        let mut latest = MonoTime::ZERO;
        self.shared.wait_for(timeout, |s| {
            pending.retain(|i| {
                match s
                    .by_index
                    .get(i)
                    .and_then(|v| v.iter().find(|st| st.at >= after))
                {
                    Some(first) => {
                        latest = latest.max(first.at);
                        false
                    }
                    None => true,
                }
            });
            pending.is_empty().then_some(latest)
        })
    }

    /// How many of services `0..n` have started since `after`.
    pub fn count_after(&self, n: usize, after: MonoTime) -> usize {
        let s = self.shared.lock();
        (0..n)
            .filter(|i| {
                s.by_index
                    .get(i)
                    .is_some_and(|v| v.iter().any(|st| st.at >= after))
            })
            .count()
    }

    /// Waits for the first start of `index` after `after` by a process
    /// other than `old_pid`.
    pub fn wait_replacement(
        &self,
        index: usize,
        old_pid: i32,
        after: MonoTime,
        timeout: Duration,
    ) -> Option<Start> {
        self.shared.wait_for(timeout, |s| {
            s.by_index
                .get(&index)?
                .iter()
                .find(|st| st.at >= after && st.pid != old_pid)
                .copied()
        })
    }
}

fn parse_start(b: &[u8]) -> Option<(usize, MonoTime)> {
    let text = std::str::from_utf8(b).ok()?;
    let (i, t) = text.trim().split_once(' ')?;
    let ns: u64 = t.parse().ok()?;
    Some((
        i.parse().ok()?,
        MonoTime::from_duration(Duration::from_nanos(ns)),
    ))
}

/// One syslog datagram.
#[derive(Clone, Debug)]
pub struct LogLine {
    /// When the kernel queued it (monotonic).
    pub at: MonoTime,
    pub text: String,
}

/// The restarter's syslog socket.
pub struct SyslogSink {
    shared: Arc<Shared<Vec<LogLine>>>,
    _rx: Receiver,
}

/// `CLOCK_REALTIME - CLOCK_MONOTONIC` now, in nanoseconds.
fn realtime_offset_ns() -> i128 {
    use nix::time::{clock_gettime, ClockId};
    let ns = |t: nix::sys::time::TimeSpec| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128;
    let m = clock_gettime(ClockId::CLOCK_MONOTONIC).map(ns).unwrap_or(0);
    let r = clock_gettime(ClockId::CLOCK_REALTIME).map(ns).unwrap_or(0);
    r - m
}

impl SyslogSink {
    pub fn bind(path: &Path) -> std::io::Result<SyslogSink> {
        let sock = bind_datagram(path)?;
        setsockopt(&sock, sockopt::ReceiveTimestampns, &true)?;
        let shared: Arc<Shared<Vec<LogLine>>> = Shared::new(Vec::new());
        let sh = shared.clone();
        let rx = Receiver::spawn("bench-syslog", move |stop| {
            let mut buf = vec![0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                let got = {
                    let mut iov = [IoSliceMut::new(&mut buf)];
                    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
                    match recvmsg::<()>(
                        sock.as_raw_fd(),
                        &mut iov,
                        Some(&mut cmsg),
                        MsgFlags::empty(),
                    ) {
                        Ok(msg) => {
                            let ts = msg.cmsgs().ok().and_then(|mut it| {
                                it.find_map(|c| match c {
                                    ControlMessageOwned::ScmTimestampns(t) => Some(
                                        t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128,
                                    ),
                                    _ => None,
                                })
                            });
                            Some((msg.bytes, ts))
                        }
                        Err(e) if timed_out(e) => None,
                        Err(_) => None,
                    }
                };
                let Some((n, ts)) = got else { continue };
                let at = match ts {
                    Some(rt) => {
                        let mono = rt - realtime_offset_ns();
                        MonoTime::from_duration(Duration::from_nanos(mono.max(0) as u64))
                    }
                    None => MonoTime::now(),
                };
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sh.update(|v| v.push(LogLine { at, text }));
            }
        });
        Ok(SyslogSink { shared, _rx: rx })
    }

    /// Waits until `n` lines match `pred`; returns the time of the `n`th.
    pub fn wait_count(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<MonoTime> {
        // Incremental: each wake looks only at lines not seen yet, so the
        // receiving thread never waits long for the lock.
        let mut scanned = 0;
        let mut times: Vec<MonoTime> = Vec::new();
        self.shared.wait_for(timeout, |v| {
            if scanned > v.len() {
                scanned = 0;
                times.clear();
            }
            times.extend(v[scanned..].iter().filter(|l| pred(&l.text)).map(|l| l.at));
            scanned = v.len();
            if times.len() < n {
                return None;
            }
            times.sort();
            Some(times[n - 1])
        })
    }

    /// How many lines so far match `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.shared.lock().iter().filter(|l| pred(&l.text)).count()
    }

    /// Waits for the first line at or after `after` containing `needle`.
    pub fn wait_line_after(
        &self,
        needle: &str,
        after: MonoTime,
        timeout: Duration,
    ) -> Option<LogLine> {
        self.shared.wait_for(timeout, |v| {
            v.iter()
                .find(|l| l.at >= after && l.text.contains(needle))
                .cloned()
        })
    }

    /// The last `k` lines (for error reports).
    pub fn tail(&self, k: usize) -> Vec<String> {
        let v = self.shared.lock();
        v.iter()
            .skip(v.len().saturating_sub(k))
            .map(|l| l.text.clone())
            .collect()
    }

    /// Forgets every line so far (keeps memory flat over thousands of kills).
    pub fn clear(&self) {
        self.shared.update(|v| v.clear());
    }
}

/// The read end of one heartbeat pipe, its beats timed on arrival.
pub struct Beats {
    shared: Arc<Shared<Vec<MonoTime>>>,
    thread: Option<JoinHandle<()>>,
}

impl Beats {
    /// Reads `read_end` (blocking) until EOF, i.e. until every write end
    /// is closed: keep none open here once the writer has its copy.
    pub fn spawn(name: &str, read_end: OwnedFd) -> Beats {
        let shared: Arc<Shared<Vec<MonoTime>>> = Shared::new(Vec::new());
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("beats-{name}"))
            .spawn(move || {
                let mut f = std::fs::File::from(read_end);
                let mut buf = [0u8; 64];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let now = MonoTime::now();
                            sh.update(|v| v.extend((0..n).map(|_| now)));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
            })
            .expect("spawn a heartbeat thread");
        Beats {
            shared,
            thread: Some(thread),
        }
    }

    /// Waits (up to `timeout`) for a beat after `t`, then returns the longest
    /// silence overlapping `[from, t]`: the gaps between the last beat
    /// before `from`, every beat in between, and the first beat after `t`
    /// (or now, if none came).
    pub fn longest_gap(&self, from: MonoTime, t: MonoTime, timeout: Duration) -> Duration {
        let _ = self
            .shared
            .wait_for(timeout, |v| v.iter().any(|&b| b > t).then_some(()));
        let v = self.shared.lock();
        longest_gap(&v, from, t, MonoTime::now())
    }
}

impl Drop for Beats {
    fn drop(&mut self) {
        // The thread ends at EOF, once the namespace holding the write ends
        // is gone; do not wait for it if something still holds one.
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// The longest silence overlapping `[from, to]` in the sorted beat times
/// `beats`: between the last beat at or before `from` (or `from` itself),
/// every beat in between, and the first beat after `to` (or `now`).
fn longest_gap(beats: &[MonoTime], from: MonoTime, to: MonoTime, now: MonoTime) -> Duration {
    let before = beats
        .iter()
        .rev()
        .find(|&&b| b <= from)
        .copied()
        .unwrap_or(from);
    let mut points: Vec<MonoTime> = vec![before];
    points.extend(beats.iter().copied().filter(|&b| b > from && b <= to));
    points.push(beats.iter().copied().find(|&b| b > to).unwrap_or(now));
    points
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    #[test]
    fn a_stall_during_the_window_is_the_longest_gap() {
        // Beats every second, except a 2.5 s hole from 3 s to 5.5 s.
        let beats: Vec<MonoTime> = [1000, 2000, 3000, 5500, 6500].map(at).to_vec();
        assert_eq!(
            longest_gap(&beats, at(3200), at(4000), at(9000)),
            Duration::from_millis(2500)
        );
        // A window inside regular beats sees the interval.
        assert_eq!(
            longest_gap(&beats, at(1200), at(1800), at(9000)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn no_beat_after_the_window_counts_until_now() {
        let beats: Vec<MonoTime> = [1000, 2000].map(at).to_vec();
        assert_eq!(
            longest_gap(&beats, at(2100), at(2500), at(4000)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn start_reports_parse() {
        assert_eq!(
            parse_start(b"17 1500000000"),
            Some((17, MonoTime::from_duration(Duration::from_millis(1500))))
        );
        assert_eq!(parse_start(b"x 1"), None);
        assert_eq!(parse_start(b"17"), None);
    }
}
