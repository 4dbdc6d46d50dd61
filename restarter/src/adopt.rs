//! Taking services back after a restarter died (issue 13; DESIGN.md,
//! "Descriptors that outlive the restarter"), pure: what the state file,
//! `/proc` and init's relay say becomes one [`Resume`] per service, and the
//! fd store's messages are named and parsed here. The shell
//! (`event_loop`) does the system calls.
//!
//! The fd store (init's `SOCK_SEQPACKET` pair, both ends kept by init for
//! life, never read by it) holds one message per service:
//! `tether-store 1 NAME PID START_TIME KINDS`, where `KINDS` is a comma
//! list naming the attached descriptors (`SCM_RIGHTS`) in order: `out`
//! (four: stdout read, stdout write, stderr read, stderr write — the write
//! ends are the ones the restarter keeps so a pipe never sees EOF between
//! runs) and `notify` (one: the bound notify socket). `PID START_TIME` are
//! the service's process when the message was sent (`0 0` without one):
//! the service name is the key, since the pipes and socket belong to the
//! service, not to one run. A later message of the same service replaces
//! an earlier one (the queue keeps order). Messages that are not this
//! format are dropped with their descriptors (logged).
//!
//! Which entry is adopted ([`resume_of`]): a state-file entry whose pid
//! still runs *with the same start time* (field 22 of `/proc/PID/stat`) and
//! the same process group; a zombie counts as running (init has not reaped
//! it yet: its pidfd reports the exit at once). Otherwise the process is
//! gone — perhaps its pid reused, which is never adopted — and it ended
//! while no restarter ran: init's relay record for the pid gives how
//! (`exit N`, `signal KILL`), else [`ExitStatus::Unknown`].

use crate::policy::History;
use crate::state_file::{Entry, Saved};
use crate::supervisor::{ExitStatus, Resume};
use std::collections::HashMap;

/// First word of a store message.
pub const STORE_MAGIC: &str = "tether-store";
/// Format version of a store message.
pub const STORE_VERSION: &str = "1";
/// Descriptors of each kind.
pub const OUT_FDS: usize = 4;

/// A parsed store message: which descriptors of which service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreHeader {
    pub name: String,
    pub pid: i32,
    pub start_time: u64,
    pub output: bool,
    pub notify: bool,
}

impl StoreHeader {
    /// How many descriptors the message carries.
    pub fn fd_count(&self) -> usize {
        usize::from(self.output) * OUT_FDS + usize::from(self.notify)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut kinds = Vec::new();
        if self.output {
            kinds.push("out");
        }
        if self.notify {
            kinds.push("notify");
        }
        let kinds = if kinds.is_empty() {
            "-".to_string()
        } else {
            kinds.join(",")
        };
        format!(
            "{STORE_MAGIC} {STORE_VERSION} {} {} {} {kinds}",
            self.name, self.pid, self.start_time
        )
        .into_bytes()
    }

    /// `None` for bytes that are not a message of this version.
    pub fn decode(bytes: &[u8]) -> Option<StoreHeader> {
        let text = std::str::from_utf8(bytes).ok()?;
        let f: Vec<&str> = text.split_ascii_whitespace().collect();
        let [magic, version, name, pid, start, kinds] = f.as_slice() else {
            return None;
        };
        if *magic != STORE_MAGIC || *version != STORE_VERSION {
            return None;
        }
        let mut h = StoreHeader {
            name: name.to_string(),
            pid: pid.parse().ok()?,
            start_time: start.parse().ok()?,
            output: false,
            notify: false,
        };
        if *kinds != "-" {
            for k in kinds.split(',') {
                match k {
                    "out" if !h.output => h.output = true,
                    "notify" if !h.notify => h.notify = true,
                    _ => return None,
                }
            }
        }
        Some(h)
    }
}

/// What `/proc` says of an entry's pid now: its start time and process
/// group, `None` when no such process exists.
pub type Observed = Option<(u64, i32)>;

/// Whether `entry` names the process `observed` describes (same start
/// time, same group): the only case a pid is adopted.
pub fn is_same(entry: &Entry, observed: Observed) -> bool {
    entry.pid > 1 && observed == Some((entry.start_time, entry.pgid))
}

/// The [`Resume`] of one service, from its state-file entry (`saved`
/// taken from the state file's line when the newest entry is a journal
/// line), what `/proc` shows of its pid, and init's relay record for that
/// pid (a raw wait status), if any.
pub fn resume_of(
    entry: &Entry,
    saved: Option<&Saved>,
    observed: Observed,
    relayed: Option<i32>,
) -> Resume {
    let fresh = Saved {
        wanted: true,
        ..Saved::default()
    };
    // A journal line is a run the state file has not seen: its start,
    // readiness and watchdog timeout are unknown (now, not ready, the
    // spec's), the service's counters are the state file's.
    let (s, this_run) = match (&entry.saved, saved) {
        (Some(s), _) => (s.clone(), true),
        (None, Some(s)) => (s.clone(), false),
        (None, None) => (fresh, false),
    };
    let pid = (entry.pid > 1).then_some(entry.pid);
    let exited = match pid {
        Some(_) if is_same(entry, observed) => None,
        Some(_) => Some(
            relayed
                .and_then(ExitStatus::from_raw)
                .unwrap_or(ExitStatus::Unknown),
        ),
        None => None,
    };
    Resume {
        pid,
        started: if this_run { s.started } else { None },
        ready: this_run && s.ready,
        watchdog_timeout: if this_run { s.watchdog_timeout } else { None },
        restarts: s.restarts,
        history: History::from_parts(s.history, s.level),
        wanted: s.wanted,
        failed: s.failed,
        exited,
    }
}

/// Each service's newest entry and the newest saved state of its lines.
pub type ByName = HashMap<String, (Entry, Option<Saved>)>;

/// The state file's and journal's entries ([`crate::state_file::read`]
/// order: the state file's lines, then the journal's) grouped by service:
/// the newest entry of each name (the last), the saved state of the
/// newest line that has one, and the other entries (older processes of
/// the same name — never adopted; stopped by the leftover sweep if they
/// still run).
pub fn newest_by_name(entries: Vec<Entry>) -> (ByName, Vec<Entry>) {
    let mut by_name: HashMap<String, (Entry, Option<Saved>)> = HashMap::new();
    let mut older = Vec::new();
    for e in entries {
        match by_name.get_mut(&e.name) {
            Some((cur, saved)) => {
                if e.saved.is_some() {
                    *saved = e.saved.clone();
                }
                let same = cur.pid == e.pid && cur.start_time == e.start_time;
                let prev = std::mem::replace(cur, e);
                if same {
                    // The same process named twice (file and journal):
                    // keep the line with saved state.
                    if cur.saved.is_none() {
                        cur.saved = prev.saved;
                    }
                } else if prev.pid > 1 {
                    older.push(prev);
                }
            }
            None => {
                let saved = e.saved.clone();
                by_name.insert(e.name.clone(), (e, saved));
            }
        }
    }
    (by_name, older)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tether_common::clock::MonoTime;

    fn entry(pid: i32, start: u64, saved: Option<Saved>) -> Entry {
        Entry {
            name: "a".into(),
            pid,
            pgid: pid,
            start_time: start,
            stop_timeout: Duration::from_secs(1),
            saved,
        }
    }

    fn saved() -> Saved {
        Saved {
            restarts: 4,
            started: Some(MonoTime::from_duration(Duration::from_secs(7))),
            ready: true,
            wanted: true,
            ..Saved::default()
        }
    }

    #[test]
    fn the_same_process_is_adopted_with_its_state() {
        let e = entry(500, 42, Some(saved()));
        let r = resume_of(&e, e.saved.as_ref(), Some((42, 500)), None);
        assert_eq!(r.pid, Some(500));
        assert_eq!(r.exited, None);
        assert_eq!(r.restarts, 4);
        assert!(r.ready);
        assert_eq!(r.started, saved().started);
    }

    #[test]
    fn a_reused_pid_is_not_adopted() {
        // Same pid, another start time (a reused pid), or another group.
        let e = entry(500, 42, Some(saved()));
        for observed in [Some((43, 500)), Some((42, 501))] {
            let r = resume_of(&e, e.saved.as_ref(), observed, None);
            assert_eq!(r.exited, Some(ExitStatus::Unknown), "{observed:?}");
            assert_eq!(r.restarts, 4);
        }
    }

    #[test]
    fn a_process_gone_meanwhile_ends_with_the_relayed_status() {
        let e = entry(500, 42, Some(saved()));
        let r = resume_of(&e, e.saved.as_ref(), None, Some(libc::SIGKILL));
        assert_eq!(
            r.exited,
            Some(ExitStatus::Signal {
                signal: libc::SIGKILL,
                core: false
            })
        );
        let r = resume_of(&e, e.saved.as_ref(), None, Some(3 << 8));
        assert_eq!(r.exited, Some(ExitStatus::Code(3)));
        let r = resume_of(&e, e.saved.as_ref(), None, None);
        assert_eq!(r.exited, Some(ExitStatus::Unknown));
    }

    #[test]
    fn a_journal_line_is_a_new_run_with_the_file_s_counters() {
        let file = entry(500, 42, Some(saved()));
        let journal = entry(600, 99, None);
        let (by, older) = newest_by_name(vec![file, journal]);
        let (newest, s) = &by["a"];
        assert_eq!(newest.pid, 600);
        assert_eq!(older.len(), 1);
        let r = resume_of(newest, s.as_ref(), Some((99, 600)), None);
        assert_eq!(
            (r.pid, r.restarts, r.ready, r.started),
            (Some(600), 4, false, None)
        );
    }

    #[test]
    fn store_headers_round_trip_and_garbage_is_refused() {
        let h = StoreHeader {
            name: "web".into(),
            pid: 12,
            start_time: 34,
            output: true,
            notify: true,
        };
        assert_eq!(StoreHeader::decode(&h.encode()), Some(h.clone()));
        assert_eq!(h.fd_count(), 5);
        for bad in [
            &b"tether-store 2 web 1 2 out"[..],
            b"tether-store 1 web x 2 out",
            b"tether-store 1 web 1 2 out,out",
            b"tether-store 1 web 1 2 sock",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(StoreHeader::decode(bad), None);
        }
    }
}
