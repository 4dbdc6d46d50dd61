//! `[metrics] textfile_dir`: the restarter keeps `DIR/tether.prom` up to
//! date for node_exporter's textfile collector (issue 16).
//!
//! Decisions where the issue is silent:
//! - **When.** Every `liveness_interval` (default 60 s), and after every
//!   state change worth alerting on: a service started, exited, became
//!   ready or not, was adopted (each is an `Action::WriteState` of the
//!   supervisor, the event loop passes its `state_dirty`); and, noticed by
//!   the writer thread within [`WATCH_INTERVAL`], a change in what
//!   watchdogd publishes (petting stopped or resumed, device state, a
//!   layer going stale or fresh). Changes are coalesced: at most one write
//!   per [`MIN_GAP`] (1 s), so a crash loop or 10,000 services starting
//!   cost one file per second, not one per event. A first file is written
//!   at start.
//! - **Off the loop.** The file lives on a real disk
//!   (`/var/lib/prometheus/node-exporter` in Debian): `write(2)` into the
//!   page cache can still block (dirty-page throttling, a journal commit
//!   behind `rename(2)`, a failing disk, NFS). So the event loop only takes
//!   a snapshot of the status report (the same one `tetherctl status`
//!   gets) and leaves it in a one-place mailbox; a thread of its own
//!   (`metrics-file`) reads `RUN/watchdog.status`, renders with
//!   [`crate::metrics::render`] and writes `tether.prom.tmp`, then renames
//!   it over `tether.prom` (the collector only reads `*.prom`, so it never
//!   sees a half-written file). A newer snapshot replaces one the thread has
//!   not taken yet: a wedged disk costs stale metrics (node_exporter's
//!   `node_textfile_mtime_seconds` shows it), never a late heartbeat. No
//!   fsync: the file is rewritten within a minute, and one lost in a power
//!   cut is not worth a disk flush.
//! - Ages (`..._age_seconds`) are computed by the thread when it renders,
//!   on the monotonic clock, so they are as fresh as the file.
//! - The directory is not created (node_exporter's package owns it); a
//!   failing write is logged once (ERROR naming the file), its recovery
//!   too. The file is left in place when the restarter exits: its mtime
//!   then ages, which is what the shipped alert rules watch.

use crate::control::StatusReport;
use crate::metrics;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tether_common::clock::MonoTime;
use tether_common::config::{Config, Timing};
use tether_common::record;

/// The file name in `textfile_dir`.
pub const FILE_NAME: &str = "tether.prom";
/// Least time between two writes caused by state changes.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// How often the writer thread looks at `RUN/watchdog.status` for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// When the loop hands the thread a snapshot: the pure part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    period: Duration,
    min_gap: Duration,
    next: MonoTime,
    last: Option<MonoTime>,
    changed: bool,
}

impl Schedule {
    /// The first snapshot is due at `now`.
    pub fn new(now: MonoTime, period: Duration, min_gap: Duration) -> Schedule {
        Schedule {
            period,
            min_gap,
            next: now,
            last: None,
            changed: false,
        }
    }

    /// A state change worth a file of its own happened.
    pub fn changed(&mut self) {
        self.changed = true;
    }

    /// When the next snapshot is due.
    pub fn deadline(&self) -> MonoTime {
        match (self.changed, self.last) {
            (true, Some(last)) => self.next.min(last + self.min_gap),
            // Nothing written yet: the first file is due at start anyway.
            (true, None) | (false, _) => self.next,
        }
    }

    /// True (and the schedule moved on) when a snapshot is due at `now`.
    pub fn take(&mut self, now: MonoTime) -> bool {
        if now < self.deadline() {
            return false;
        }
        self.last = Some(now);
        self.next = now + self.period;
        self.changed = false;
        true
    }
}

/// What the loop and the thread share: the latest snapshot not taken yet.
#[derive(Default)]
struct Mailbox {
    report: Option<StatusReport>,
}

/// The loop's side: the schedule and the mailbox.
pub struct MetricsFile {
    schedule: Schedule,
    shared: Arc<(Mutex<Mailbox>, Condvar)>,
}

impl MetricsFile {
    /// `None` when `[metrics] textfile_dir` is unset. Starts the writer
    /// thread: call it with the loop's signals blocked (the thread inherits
    /// the mask). A thread that cannot be started is logged, and metrics
    /// are off.
    pub fn start(config: &Config, now: MonoTime) -> Option<MetricsFile> {
        let dir = config.metrics.textfile_dir.clone()?;
        let shared = Arc::new((Mutex::new(Mailbox::default()), Condvar::new()));
        let writer = Writer {
            file: dir.join(FILE_NAME),
            dir,
            run: config.paths.run.clone(),
            timing: config.timing.clone(),
            version: env!("CARGO_PKG_VERSION"),
            shared: Arc::clone(&shared),
        };
        let file = writer.file.clone();
        match std::thread::Builder::new()
            .name("metrics-file".into())
            .spawn(move || writer.run())
        {
            Ok(_) => {
                log::info!("metrics: writing {}", file.display());
                Some(MetricsFile {
                    schedule: Schedule::new(now, config.timing.liveness_interval, MIN_GAP),
                    shared,
                })
            }
            Err(e) => {
                log::error!("metrics: cannot start the writer thread: {e}; no metrics file");
                None
            }
        }
    }

    /// When the loop must wake for the next snapshot.
    pub fn deadline(&self) -> MonoTime {
        self.schedule.deadline()
    }

    /// The loop's hook: `changed` says a state change happened this turn;
    /// `report` is called only when a snapshot is due.
    pub fn tick(&mut self, now: MonoTime, changed: bool, report: impl FnOnce() -> StatusReport) {
        if changed {
            self.schedule.changed();
        }
        if !self.schedule.take(now) {
            return;
        }
        let report = report();
        let (lock, cv) = &*self.shared;
        // Held only to swap one value in or out: never across I/O.
        let mut mb = lock.lock().unwrap_or_else(|p| p.into_inner());
        mb.report = Some(report);
        cv.notify_one();
    }
}

/// The thread's side.
struct Writer {
    dir: PathBuf,
    file: PathBuf,
    run: PathBuf,
    timing: Timing,
    version: &'static str,
    shared: Arc<(Mutex<Mailbox>, Condvar)>,
}

/// What of watchdogd's status makes a new file worth writing at once.
fn watch_key(w: Option<&record::WatchdogStatus>, now_ms: u64, timing: &Timing) -> Vec<u8> {
    let Some(w) = w else {
        return Vec::new();
    };
    let mut k = vec![1, u8::from(w.petting)];
    k.extend_from_slice(w.device.as_bytes());
    for (name, beat) in &w.layers {
        let up = beat.is_some_and(|b| {
            Duration::from_millis(now_ms.saturating_sub(b)) < timing.stale_timeout_for(name)
        });
        k.push(u8::from(up));
    }
    k
}

impl Writer {
    fn run(self) {
        let mut report: Option<StatusReport> = None;
        let mut last_key: Option<Vec<u8>> = None;
        let mut failing = false;
        loop {
            let fresh = {
                let (lock, cv) = &*self.shared;
                let mut mb = lock.lock().unwrap_or_else(|p| p.into_inner());
                if mb.report.is_none() {
                    mb = match cv.wait_timeout(mb, WATCH_INTERVAL) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
                mb.report.take()
            };
            let new_report = fresh.is_some();
            if let Some(r) = fresh {
                report = Some(r);
            }
            let Some(r) = report.as_ref() else {
                continue;
            };
            let now_ms = MonoTime::now().as_duration().as_millis() as u64;
            let watchdog = match record::read_watchdog_status(&self.run) {
                Ok(w) => w,
                Err(e) => {
                    log::debug!("metrics: {e}");
                    None
                }
            };
            let key = watch_key(watchdog.as_ref(), now_ms, &self.timing);
            if !new_report && last_key.as_ref() == Some(&key) {
                continue;
            }
            last_key = Some(key);
            let stale = |l: &str| self.timing.stale_timeout_for(l);
            let text = metrics::render(&metrics::Input {
                version: self.version,
                now_ms,
                status: r,
                watchdog: watchdog.as_ref(),
                stale_timeout: &stale,
            });
            match write(&self.dir, text.as_bytes()) {
                Ok(()) if failing => {
                    failing = false;
                    log::info!("metrics: {} written again", self.file.display());
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    log::error!(
                        "metrics: writing {}: {e} (retried at each update)",
                        self.file.display()
                    );
                }
                Err(_) => {}
            }
        }
    }
}

/// `DIR/tether.prom.tmp`, then renamed over `DIR/tether.prom`.
pub fn write(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    record::write_volatile(dir, FILE_NAME, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    #[test]
    fn periodic_writes_follow_the_liveness_interval() {
        let mut s = Schedule::new(at(0), Duration::from_secs(60), MIN_GAP);
        assert!(s.take(at(0)), "a first file at start");
        assert_eq!(s.deadline(), at(60_000));
        assert!(!s.take(at(59_999)));
        assert!(s.take(at(60_000)));
        assert_eq!(s.deadline(), at(120_000));
    }

    #[test]
    fn changes_are_written_soon_but_at_most_once_per_gap() {
        let mut s = Schedule::new(at(0), Duration::from_secs(60), MIN_GAP);
        assert!(s.take(at(0)));
        s.changed();
        assert_eq!(s.deadline(), at(1_000), "no sooner than MIN_GAP");
        assert!(!s.take(at(500)));
        s.changed();
        assert!(s.take(at(1_000)), "one write for both changes");
        assert!(!s.take(at(1_001)), "nothing changed since");
        assert_eq!(s.deadline(), at(61_000), "the period restarts");
        s.changed();
        assert!(s.take(at(5_000)), "long after the last write: at once");
    }

    #[test]
    fn the_watch_key_changes_with_petting_device_and_stale_layers() {
        let timing = Timing::default();
        let w = record::WatchdogStatus {
            written_ms: 1_000,
            petting: true,
            device: "armed".into(),
            layers: vec![("init".into(), Some(1_000))],
            ..Default::default()
        };
        let k = watch_key(Some(&w), 2_000, &timing);
        assert_eq!(k, watch_key(Some(&w), 3_000, &timing), "ages alone: same");
        let stale = watch_key(Some(&w), 1_000 + 20_000, &timing);
        assert_ne!(k, stale, "init past its 20 s stale timeout");
        let stopped = record::WatchdogStatus {
            petting: false,
            ..w.clone()
        };
        assert_ne!(k, watch_key(Some(&stopped), 2_000, &timing));
        assert_ne!(k, watch_key(None, 2_000, &timing));
    }

    #[test]
    fn the_thread_writes_the_file_atomically_and_keeps_it_fresh() {
        let dir = std::env::temp_dir().join(format!("tether-metrics-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = Config::default();
        config.metrics.textfile_dir = Some(dir.join("textfile"));
        config.paths.run = dir.join("run");
        std::fs::create_dir_all(dir.join("textfile")).unwrap();
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let now = MonoTime::now();
        let mut m = MetricsFile::start(&config, now).unwrap();
        let report = |restarts| StatusReport {
            services: vec![crate::control::ServiceStatus {
                name: "web".into(),
                state: "running".into(),
                restarts,
                ..Default::default()
            }],
            ..Default::default()
        };
        let file = dir.join("textfile").join(FILE_NAME);
        let wait_for = |want: &str| {
            let until = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                if text.lines().any(|l| l == want) {
                    return;
                }
                assert!(std::time::Instant::now() < until, "no {want:?} in:\n{text}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        m.tick(now, false, || report(1));
        wait_for("tether_service_restarts_total{service=\"web\"} 1");
        m.tick(now + MIN_GAP, true, || report(2));
        wait_for("tether_service_restarts_total{service=\"web\"} 2");
        assert!(!dir.join("textfile").join("tether.prom.tmp").exists());
        // watchdogd stops petting: the thread notices without the loop.
        let w = record::WatchdogStatus {
            written_ms: MonoTime::now().as_duration().as_millis() as u64,
            petting: false,
            device: "armed".into(),
            ..Default::default()
        };
        record::write_volatile(
            &dir.join("run"),
            record::WATCHDOG_STATUS,
            w.to_text().as_bytes(),
        )
        .unwrap();
        wait_for("tether_watchdog_petting 0");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
