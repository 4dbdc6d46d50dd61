//! The record writer: a thread that owns the state directory and does every
//! durable write (`write`, `fsync`, `rename`, `fsync` of the directory) so
//! that no write can delay a pet (issue 11, item 4).
//!
//! Why a thread: ordering alone cannot keep a blocking `fsync` from holding
//! up the next pet when the disk takes tens of seconds (a dying eMMC). The
//! loop only queues a job on a channel (never blocks) and goes on petting;
//! this thread only writes records: it never pets and never beats, so a
//! wedged loop still stops petting and beating as DESIGN.md requires, and a
//! wedged writer can only leave records late, never pets. (A child process
//! would do the same at the cost of a fork and a pipe protocol.)
//!
//! The one write the loop waits for is the Stop record (`cause=watchdog`):
//! it must be durable before the ALERT and before watchdogd goes on without
//! petting. The wait is bounded ([`Writer::write_durable`]); no pet is due
//! while stopped.
//!
//! Jobs are coalesced: only the newest `reset-reason` matters, so a backlog
//! behind a slow disk is one write, not many. A failing directory is logged
//! once at ERROR and retried every [`RETRY`]; its recovery is logged.
//!
//! Reset history (issue 16): at start, this thread reads the previous
//! boot's `reset-reason` (the one that logs "previous boot ended: ..."),
//! and appends it, with the device's boot status, the record's write time
//! and this boot's number, to `STATE/history` (bounded to `[state]
//! history` entries, written like every record) before the `unknown`
//! pre-write replaces it. A failed append is retried with the other
//! records; a malformed history file is moved aside to `history.bad`
//! (logged at ERROR, naming file and line) and a new one started.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;
use tether_common::record::{self, HistoryEntry, ResetRecord};
use tether_common::watchdog_dev::{self, WDIOF_CARDRESET};

/// How often a failing state directory is tried again.
pub const RETRY: Duration = Duration::from_secs(2);

/// What a record job is.
#[derive(Clone, Debug)]
pub enum Job {
    /// Log how the previous boot ended (with the device's boot status, if
    /// known), bump the boot counter, pre-write `cause=unknown`.
    Start { boot_status: Option<u32> },
    /// A new `reset-reason` (its `boot` is filled in here).
    Reason(ResetRecord),
}

enum Msg {
    Job(Job),
    /// Write everything pending, then answer.
    Flush(mpsc::SyncSender<bool>),
}

/// The loop's handle on the writer thread.
pub struct Writer {
    tx: Sender<Msg>,
}

impl Writer {
    /// Starts the thread for `dir`, keeping `history` boots in its reset
    /// history.
    #[cfg(test)]
    pub fn start(dir: PathBuf, history: usize) -> std::io::Result<Writer> {
        Writer::start_with(dir, history, None)
    }

    /// Like [`start`](Writer::start); the boot number and the previous
    /// boot's end go to `publisher` once known.
    pub fn start_with(
        dir: PathBuf,
        history: usize,
        publisher: Option<Publisher>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("records".into())
            .spawn(move || run(dir, history, publisher, rx))?;
        Ok(Writer { tx })
    }

    /// Queues a job; never blocks.
    pub fn queue(&self, job: Job) {
        if self.tx.send(Msg::Job(job)).is_err() {
            log::error!("the record writer thread is gone: record not written");
        }
    }

    /// Queues a job and waits, at most `wait`, until it (and everything
    /// before it) is durable. `false`: not confirmed in time (or failed).
    pub fn write_durable(&self, job: Job, wait: Duration) -> bool {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Job(job)).is_err() || self.tx.send(Msg::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(wait).unwrap_or(false)
    }
}

struct State {
    dir: PathBuf,
    boot: Option<u64>,
    bump_pending: bool,
    reason: Option<ResetRecord>,
    /// The previous boot, to append to the history (before `reason`).
    history: Option<HistoryEntry>,
    keep: usize,
    failing: bool,
    publisher: Option<Publisher>,
    /// The previous boot's (cause, layer), for the publisher.
    prev: Option<(String, Option<String>)>,
}

fn run(dir: PathBuf, keep: usize, publisher: Option<Publisher>, rx: Receiver<Msg>) {
    let mut st = State {
        dir,
        boot: None,
        bump_pending: false,
        reason: None,
        history: None,
        keep,
        failing: false,
        publisher,
        prev: None,
    };
    let mut acks: Vec<(std::time::Instant, mpsc::SyncSender<bool>)> = Vec::new();
    loop {
        let first = if st.failing {
            match rx.recv_timeout(RETRY) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            }
        };
        // Everything queued meanwhile: only the newest reason is written.
        let mut msgs: Vec<Msg> = first.into_iter().collect();
        msgs.extend(rx.try_iter());
        for m in msgs {
            match m {
                Msg::Job(Job::Start { boot_status }) => {
                    st.history = log_previous_boot(&st.dir, boot_status);
                    st.prev = st
                        .history
                        .as_ref()
                        .map(|h| (h.record.cause.as_str().to_string(), h.record.layer.clone()));
                    st.bump_pending = true;
                    st.reason = Some(ResetRecord::unknown(None));
                }
                Msg::Job(Job::Reason(r)) => st.reason = Some(r),
                Msg::Flush(a) => acks.push((std::time::Instant::now(), a)),
            }
        }
        let ok = st.flush();
        for (asked, a) in acks.drain(..) {
            if a.try_send(ok).is_err() && ok {
                // The loop stopped waiting (a slow disk): say when it landed.
                log::info!(
                    "state directory: the stop record is durable, {} after it was asked for",
                    tether_watchdogd::gate::secs(asked.elapsed())
                );
            }
        }
    }
}

impl State {
    /// Writes whatever is pending; `true` when nothing is left.
    fn flush(&mut self) -> bool {
        let mut err = None;
        if self.bump_pending {
            match record::bump_boot_count(&self.dir) {
                Ok(n) => {
                    self.boot = Some(n);
                    self.bump_pending = false;
                    if let Some(p) = &self.publisher {
                        let (cause, layer) = self.prev.clone().unzip();
                        p.boot(n, cause, layer.flatten());
                    }
                }
                Err(e) => err = Some(e),
            }
        }
        if err.is_none() {
            if let Some(mut h) = self.history.take() {
                h.next_boot = self.boot;
                match record::append_history(&self.dir, h.clone(), self.keep) {
                    Ok(record::Appended::Kept) => {}
                    Ok(record::Appended::MovedAside(why)) => log::error!(
                        "reset history unreadable ({}): moved to {}.bad, a new one starts",
                        why,
                        record::HISTORY
                    ),
                    Err(e) => {
                        self.history = Some(h);
                        err = Some(e);
                    }
                }
            }
        }
        if err.is_none() {
            if let Some(r) = &mut self.reason {
                r.boot = self.boot;
                match record::write_reset_reason(&self.dir, r) {
                    Ok(()) => self.reason = None,
                    Err(e) => err = Some(e),
                }
            }
        }
        match err {
            Some(e) => {
                if !self.failing {
                    log::error!(
                        "cannot write records in the state directory: {}; petting continues, retrying every {}",
                        e,
                        tether_common::duration::format(RETRY)
                    );
                    self.failing = true;
                }
                false
            }
            None => {
                if self.failing {
                    log::info!(
                        "state directory {} writable again: records written",
                        self.dir.display()
                    );
                    self.failing = false;
                }
                true
            }
        }
    }
}

/// Logs how the previous boot ended; returns its history entry (`None`
/// when there was no record: nothing ended that tether saw).
fn log_previous_boot(dir: &std::path::Path, boot_status: Option<u32>) -> Option<HistoryEntry> {
    let (prev, rec) = match record::read_reset_reason(dir) {
        Ok(r) => (record::describe_previous(r.as_ref()), r),
        Err(e) => {
            let mut r = ResetRecord::unknown(None);
            r.detail = Some(format!("record unreadable: {e}"));
            (
                format!("previous boot ended: unknown (record unreadable: {})", e),
                Some(r),
            )
        }
    };
    let entry = rec.map(|record| HistoryEntry {
        record,
        recorded: record::reset_reason_written_at(dir),
        boot_status,
        seen: Some(record::wall_now()),
        next_boot: None,
    });
    // RFC 5424: MSGID RESET, the record as structured data.
    let r = entry.as_ref().map(|e| &e.record);
    let cause = r.map_or("none", |r| r.cause.as_str());
    let layer = r.and_then(|r| r.layer.as_deref()).unwrap_or("");
    let by = r.and_then(|r| r.by.as_deref()).unwrap_or("");
    let silent_ms = r.and_then(|r| r.silent_ms);
    let boot = r.and_then(|r| r.boot);
    let status = boot_status.map(|b| format!("0x{b:x}"));
    let status = status.as_deref().unwrap_or("");
    match boot_status {
        Some(bits) if bits & WDIOF_CARDRESET != 0 => log::warn!(
            target: "reset", cause = cause, layer = layer, silent_ms = silent_ms.map_or(String::new(), |t| t.to_string()).as_str(),
            by = by, boot = boot.map_or(String::new(), |t| t.to_string()).as_str(), boot_status = status;
            "{}; the device reports the last reset was the watchdog (CARDRESET)",
            prev
        ),
        Some(bits) => log::info!(
            target: "reset", cause = cause, layer = layer, silent_ms = silent_ms.map_or(String::new(), |t| t.to_string()).as_str(),
            by = by, boot = boot.map_or(String::new(), |t| t.to_string()).as_str(), boot_status = status;
            "{}; device boot status {}",
            prev,
            watchdog_dev::describe_flags(bits)
        ),
        None => log::info!(
            target: "reset", cause = cause, layer = layer, silent_ms = silent_ms.map_or(String::new(), |t| t.to_string()).as_str(),
            by = by, boot = boot.map_or(String::new(), |t| t.to_string()).as_str();
            "{}", prev
        ),
    }
    entry
}

/// Publishes watchdogd's status to `RUN/watchdog.status` for the
/// restarter's metrics (issue 16; see `record::WatchdogStatus`).
///
/// Decision: the restarter renders every metric, so it learns the pet
/// state from this file, read from the runtime directory (tmpfs) when it
/// renders. The loop sends a snapshot once per beat interval (a channel
/// send: never blocks); this thread, not the loop, writes the file (tmp +
/// rename, no fsync), so neither the petting path nor a slow state disk
/// can delay it: it is apart from the record writer, which may sit in an
/// fsync for tens of seconds. A failing directory is logged once, and its
/// recovery.
#[derive(Clone)]
pub struct Publisher {
    tx: Sender<Pub>,
}

enum Pub {
    Snapshot(record::WatchdogStatus),
    Boot {
        boot: u64,
        cause: Option<String>,
        layer: Option<String>,
    },
}

impl Publisher {
    pub fn start(run: PathBuf) -> std::io::Result<Publisher> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("status".into())
            .spawn(move || publish(run, rx))?;
        Ok(Publisher { tx })
    }

    /// The loop's part: device, pets, beats (boot fields are filled in here).
    pub fn snapshot(&self, s: record::WatchdogStatus) {
        let _ = self.tx.send(Pub::Snapshot(s));
    }

    fn boot(&self, boot: u64, cause: Option<String>, layer: Option<String>) {
        let _ = self.tx.send(Pub::Boot { boot, cause, layer });
    }
}

fn publish(run: PathBuf, rx: Receiver<Pub>) {
    let mut boot: (Option<u64>, Option<String>, Option<String>) = (None, None, None);
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut last = None;
        for m in std::iter::once(first).chain(rx.try_iter()) {
            match m {
                Pub::Snapshot(s) => last = Some(s),
                Pub::Boot {
                    boot: b,
                    cause,
                    layer,
                } => boot = (Some(b), cause, layer),
            }
        }
        let Some(mut s) = last else { continue };
        s.boot = boot.0;
        s.prev_cause = boot.1.clone();
        s.prev_layer = boot.2.clone();
        let r = std::fs::create_dir_all(&run).and_then(|()| {
            record::write_volatile(&run, record::WATCHDOG_STATUS, s.to_text().as_bytes())
        });
        match r {
            Err(e) if !failing => {
                log::warn!(
                    "cannot write {}: {} (metrics lack the watchdog's state)",
                    run.join(record::WATCHDOG_STATUS).display(),
                    e
                );
                failing = true;
            }
            Ok(()) if failing => {
                log::info!(
                    "{} written again",
                    run.join(record::WATCHDOG_STATUS).display()
                );
                failing = false;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("tether-records-{}-{}", name, std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_stop_record_is_durable_when_write_durable_returns() {
        let dir = scratch("durable");
        let w = Writer::start(dir.clone(), 32).unwrap();
        w.queue(Job::Start { boot_status: None });
        let stop = ResetRecord::watchdog(None, "init", Duration::from_millis(1500));
        assert!(w.write_durable(Job::Reason(stop), Duration::from_secs(10)));
        let rec = record::read_reset_reason(&dir).unwrap().unwrap();
        assert_eq!(rec.layer.as_deref(), Some("init"));
        assert_eq!((rec.boot, rec.silent_ms), (Some(1), Some(1500)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_directory_is_reported_to_the_waiter() {
        let parent = scratch("failing");
        std::fs::create_dir_all(&parent).unwrap();
        let blocker = parent.join("file");
        std::fs::write(&blocker, "not a directory").unwrap();
        let w = Writer::start(blocker.join("state"), 32).unwrap();
        let r = ResetRecord::unknown(None);
        assert!(!w.write_durable(Job::Reason(r), Duration::from_secs(10)));
        let _ = std::fs::remove_dir_all(&parent);
    }

    #[test]
    fn the_previous_boot_joins_the_history_before_the_unknown_prewrite() {
        let dir = scratch("history");
        std::fs::create_dir_all(&dir).unwrap();
        record::write_boot_count(&dir, 4).unwrap();
        let prev = ResetRecord::watchdog(Some(4), "restarter", Duration::from_millis(20_400));
        record::write_reset_reason(&dir, &prev).unwrap();
        let w = Writer::start(dir.clone(), 32).unwrap();
        w.queue(Job::Start {
            boot_status: Some(WDIOF_CARDRESET),
        });
        let r = ResetRecord::unknown(None);
        assert!(w.write_durable(Job::Reason(r), Duration::from_secs(10)));
        let h = record::read_history(&dir).unwrap();
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].record, prev);
        assert_eq!(h[0].boot_status, Some(WDIOF_CARDRESET));
        assert_eq!(h[0].next_boot, Some(5));
        assert!(h[0].recorded.is_some() && h[0].seen.is_some());
        let now = record::read_reset_reason(&dir).unwrap().unwrap();
        assert_eq!((now.cause, now.boot), (record::Cause::Unknown, Some(5)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
