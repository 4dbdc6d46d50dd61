//! `RUN/restarter.state`: which process runs each service, so that a new
//! restarter (after a crash or `SIGKILL`) leaves nothing running
//! unsupervised and never starts a duplicate.
//!
//! Format (text, one service per line, `#` comments):
//! `NAME PID PGID START_TIME STOP_TIMEOUT_MS [KEY=VALUE ...]`, where
//! `START_TIME` is field 22 of `/proc/PID/stat` (clock ticks after boot).
//! The `KEY=VALUE` fields ([`Saved`], issue 13) carry what a re-adopting
//! restarter needs to resume supervision as it was: `restarts=` (count),
//! `started=` (`CLOCK_MONOTONIC` ns of the run's start: the clock is the
//! machine's, so uptime continues), `ready=0|1`, `wd=` (the run's
//! watchdog timeout in ms, `WATCHDOG_USEC=` included), `hist=` (the sliding
//! window's restart times, ns, comma separated), `level=` (backoff level),
//! `wanted=0|1`, `failed=0|1`. A service without a process (stopped by
//! hand, failed, disabled by `stop`) has a line with `PID PGID START_TIME`
//! all `0`, so its operator state survives too. Lines of the journal and of
//! older restarters have no such fields (`saved` is `None`). Written atomically:
//! `restarter.state.tmp`, then `rename` — readers see the old or the new
//! file, never a mix.
//!
//! Between two writes of the file (one per loop turn, after a whole batch
//! of starts) each started process records itself in
//! `RUN/restarter.journal` ([`Journal`]); [`read`] returns the entries of
//! both.
//!
//! Decision: no `fsync`. The file only has to outlive a crash of the
//! restarter, not of the machine (after a reboot no process of the previous
//! boot exists; and `/run` is a tmpfs), and the page cache serves the next
//! restarter either way. An `fsync` would be a blocking call in the event
//! loop on every start and exit when the runtime directory is on a disk.
//!
//! At start, before any service is started, [`Sweep`] stops what the file
//! names: for each entry whose pid still exists *with the same start time*
//! (so never a reused pid), `SIGTERM` + `SIGCONT` to its process group,
//! then `SIGKILL` to the group after the entry's stop timeout. When the
//! leader is gone but members of its session remain (found by scanning
//! `/proc` for that session id — one pass per sweep step for every such
//! entry together), those are signalled one by one. The sweep
//! is polled from the event loop (every [`SWEEP_POLL`]) — the loop keeps
//! beating meanwhile — and services start when every leftover is gone, or
//! at the latest [`SWEEP_KILL_GRACE`] after the `SIGKILL`s.
//!
//! Re-adoption (issue 13): with init's fd store in `TETHER_FDS`, entries
//! whose process still runs are adopted instead (`crate::adopt`,
//! docs/ADOPTION.md); the sweep gets only what cannot be. Run alone, the
//! sweep stops everything the file names, as before.

use crate::spawn::{proc_start_time, proc_stat_field};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_common::clock::MonoTime;

/// File name in the runtime directory.
pub const FILE_NAME: &str = "restarter.state";
/// The spawn journal beside it (see [`Journal`]).
pub const JOURNAL_NAME: &str = "restarter.journal";
/// How often the sweep looks whether leftovers are gone.
pub const SWEEP_POLL: Duration = Duration::from_millis(20);
/// After the `SIGKILL`s, how long the sweep waits at most before services
/// start anyway (a process stuck in uninterruptible sleep).
pub const SWEEP_KILL_GRACE: Duration = Duration::from_secs(1);

/// One running service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub pid: i32,
    pub pgid: i32,
    pub start_time: u64,
    pub stop_timeout: Duration,
    /// Supervision state (`None`: a journal line or an older file).
    pub saved: Option<Saved>,
}

/// What a re-adopting restarter resumes (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub restarts: u64,
    /// `CLOCK_MONOTONIC` of the run's start.
    pub started: Option<MonoTime>,
    pub ready: bool,
    pub watchdog_timeout: Option<Duration>,
    /// The sliding window's restart times and backoff level.
    pub history: Vec<MonoTime>,
    pub level: u32,
    pub wanted: bool,
    pub failed: bool,
}

impl Saved {
    fn render(&self, out: &mut String) {
        out.push_str(&format!(" restarts={}", self.restarts));
        if let Some(t) = self.started {
            out.push_str(&format!(" started={}", t.as_duration().as_nanos()));
        }
        out.push_str(&format!(" ready={}", u8::from(self.ready)));
        if let Some(t) = self.watchdog_timeout {
            out.push_str(&format!(" wd={}", t.as_millis()));
        }
        if !self.history.is_empty() {
            let h: Vec<String> = self
                .history
                .iter()
                .map(|t| t.as_duration().as_nanos().to_string())
                .collect();
            out.push_str(&format!(" hist={}", h.join(",")));
        }
        out.push_str(&format!(
            " level={} wanted={} failed={}",
            self.level,
            u8::from(self.wanted),
            u8::from(self.failed)
        ));
    }

    /// The `KEY=VALUE` fields; `None` when one is malformed (the line is
    /// then read as an old one: pid and start time only).
    fn parse(fields: &[&str]) -> Option<Saved> {
        let ns = |v: &str| {
            v.parse::<u64>()
                .ok()
                .map(|n| MonoTime::from_duration(Duration::from_nanos(n)))
        };
        let flag = |v: &str| match v {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        let mut s = Saved {
            wanted: true,
            ..Saved::default()
        };
        for f in fields {
            let (k, v) = f.split_once('=')?;
            match k {
                "restarts" => s.restarts = v.parse().ok()?,
                "started" => s.started = Some(ns(v)?),
                "ready" => s.ready = flag(v)?,
                "wd" => s.watchdog_timeout = Some(Duration::from_millis(v.parse().ok()?)),
                "hist" => {
                    s.history = v.split(',').map(ns).collect::<Option<Vec<_>>>()?;
                }
                "level" => s.level = v.parse().ok()?,
                "wanted" => s.wanted = flag(v)?,
                "failed" => s.failed = flag(v)?,
                _ => {} // a later version's field
            }
        }
        Some(s)
    }
}

/// Renders the file.
pub fn render(entries: &[Entry]) -> String {
    let mut out =
        String::from("# tether-restarter state: NAME PID PGID START_TIME STOP_TIMEOUT_MS\n");
    for e in entries {
        out.push_str(&format!(
            "{} {} {} {} {}",
            e.name,
            e.pid,
            e.pgid,
            e.start_time,
            e.stop_timeout.as_millis()
        ));
        if let Some(s) = &e.saved {
            s.render(&mut out);
        }
        out.push('\n');
    }
    out
}

/// Parses the file; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            if f.len() < 5 {
                return None;
            }
            let e = Entry {
                name: f[0].to_string(),
                pid: f[1].parse().ok()?,
                pgid: f[2].parse().ok()?,
                start_time: f[3].parse().ok()?,
                stop_timeout: Duration::from_millis(f[4].parse().ok()?),
                saved: (f.len() > 5).then(|| Saved::parse(&f[5..])).flatten(),
            };
            // A line without a process only matters for its saved state.
            let runs = e.pid > 1 && e.pgid > 1;
            let idle = e.pid == 0 && e.pgid == 0 && e.saved.is_some();
            (runs || idle).then_some(e)
        })
        .collect()
}

/// Reads the state file `path` and the spawn journal beside it (entries of
/// both; the same process may be named twice); a missing file is empty.
/// Bytes that are not UTF-8 (a damaged file) only cost their lines.
pub fn read(path: &Path) -> io::Result<Vec<Entry>> {
    let text = |p: &Path| match fs::read(p) {
        Ok(t) => Ok(String::from_utf8_lossy(&t).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    };
    let mut entries = parse(&text(path)?);
    entries.extend(parse(&text(&path.with_file_name(JOURNAL_NAME))?));
    Ok(entries)
}

/// `RUN/restarter.journal`: one line per process started since the state
/// file was last written, in the state file's format, appended by the
/// started process itself (the spawner's child, as soon as it leads its
/// session and before `exec`; `tether_common::sys::child::Record`). The
/// state file is written once per loop turn, after a whole batch of
/// starts: a restarter killed in the middle of a batch (OOM) would leave
/// processes no file names, and the next restarter would start them a
/// second time. With the journal every process is on record before its
/// parent can lose it — even when the parent dies while the child is
/// between `clone` and `exec`, since the child writes the line itself.
/// The journal is emptied each time the state file has been written (which
/// then names every process it held). The next restarter reads both
/// ([`read`]) and treats an entry of either alike (today: stops it; a
/// re-adopting restarter adopts it the same way).
///
/// A child still between `clone` and its record line when the old
/// restarter dies: the restarter holds an exclusive `flock` on the
/// journal's open file description, and every child holds a reference to
/// that same description (its record slot) until its `exec` closes it. A
/// new restarter takes the lock on its own open of the file before it reads
/// anything ([`Journal::open_locked`]), so it reads only once every child of
/// the previous one has written its line (or exited). The same lock keeps a
/// second restarter off a runtime directory that one already uses.
#[derive(Debug, Default)]
pub struct Journal {
    /// Holds the lock: a `flock` belongs to the open file description and
    /// lasts until its last descriptor closes (ours at exit or `exec`, a
    /// child's at its `exec`); it is never unlocked explicitly.
    file: Option<fs::File>,
}

/// How long [`Journal::open_locked`] waits for the previous restarter's
/// children to reach `exec` (they take microseconds; the bound is for a
/// restarter that still runs).
pub const JOURNAL_LOCK_WAIT: Duration = Duration::from_millis(500);

impl Journal {
    /// Opens (creating) `RUN/restarter.journal` for appending; without it
    /// starts are recorded by the state file alone, as before. The lock is
    /// taken as in [`Journal::open_locked`], without waiting: a fresh file
    /// (after the runtime directory was removed) has no other holder.
    pub fn open(run_dir: &Path) -> io::Result<Journal> {
        Journal::open_locked(run_dir, Duration::ZERO).map(|(j, _)| j)
    }

    /// Opens the journal and takes the exclusive lock on it, trying again
    /// every millisecond for at most `wait` while a previous restarter or
    /// one of its children between `clone` and `exec` holds it. Returns
    /// whether the lock was had; without it the journal is still used (the
    /// caller warns), as before the lock existed. Called before the event
    /// loop runs, so the short wait delays no beat.
    pub fn open_locked(run_dir: &Path, wait: Duration) -> io::Result<(Journal, bool)> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(run_dir.join(JOURNAL_NAME))?;
        use std::os::fd::AsFd;
        let until = std::time::Instant::now() + wait;
        let locked = loop {
            match tether_common::sys::flock_exclusive_nonblock(file.as_fd()) {
                Ok(true) => break true,
                Ok(false) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(false) | Err(_) => break false,
            }
        };
        Ok((Journal { file: Some(file) }, locked))
    }

    /// Whether the open journal is still the file at `RUN/restarter.journal`
    /// (same device and inode); `true` when there is none to compare.
    pub fn in_place(&self, run_dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(f) = &self.file else { return true };
        match (
            f.metadata(),
            fs::symlink_metadata(run_dir.join(JOURNAL_NAME)),
        ) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    }

    /// The descriptor children append to.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.file.as_ref().map(|f| f.as_fd())
    }

    /// The record line of a start of `name`, around `PID PGID START_TIME`.
    pub fn line_parts(name: &str, stop_timeout: Duration) -> (Vec<u8>, Vec<u8>) {
        (
            format!("{name} ").into_bytes(),
            format!(" {}\n", stop_timeout.as_millis()).into_bytes(),
        )
    }

    /// The state file was written: what the journal held is in it.
    pub fn clear(&mut self) -> io::Result<()> {
        match &self.file {
            Some(f) => f.set_len(0),
            None => Ok(()),
        }
    }
}

/// Writes the state file: `PATH.tmp`, then `rename` (no `fsync`, see the
/// module documentation).
pub fn write(path: &Path, entries: &[Entry]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, render(entries))?;
    fs::rename(&tmp, path)
}

/// Whether the process `pid` is the one that started at `start_time` and
/// has not exited (a zombie counts as gone).
pub fn same_process(pid: i32, start_time: u64) -> bool {
    proc_start_time(pid) == Some(start_time)
        && proc_stat_field(pid, 3).is_some_and(|s| s != "Z" && s != "X")
}

/// Live processes (not zombies) whose session id is `sid`.
pub fn session_members(sid: i32) -> Vec<i32> {
    sessions_members(&BTreeSet::from([sid]))
        .remove(&sid)
        .unwrap_or_default()
}

/// Live processes (not zombies) of each session of `sids`, by session id:
/// one pass over `/proc` whatever the number of sessions (none when `sids`
/// is empty). A session with no live member is absent from the map.
pub fn sessions_members(sids: &BTreeSet<i32>) -> BTreeMap<i32, Vec<i32>> {
    let mut found: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    if sids.is_empty() {
        return found;
    }
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let field = |n| crate::spawn::stat_field_bytes(&stat, n);
        let Some(sid) = field(6).and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if sids.contains(&sid) && field(3).is_some_and(|s| s != "Z" && s != "X") {
            found.entry(sid).or_default().push(pid);
        }
    }
    found
}

fn signal(pid: i32, sig: i32) {
    if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), s);
    }
}

#[derive(Debug)]
struct Leftover {
    entry: Entry,
    /// The leader was alive when the sweep began (else: session members).
    leader: bool,
    kill_at: MonoTime,
    killed_at: Option<MonoTime>,
}

/// The stopping of what a previous restarter left running.
#[derive(Debug, Default)]
pub struct Sweep {
    items: Vec<Leftover>,
    /// Log lines for the shell.
    pub messages: Vec<String>,
    /// How long the last pass over `/proc` took: the next poll waits at
    /// least twice that, so a sweep of many sessions on a busy machine
    /// never keeps the loop scanning back to back.
    last_scan: Duration,
    /// Passes over `/proc` so far (for tests and the report).
    scans: u64,
    /// When the sweep began and how many leftovers it found.
    began: Option<MonoTime>,
    found: usize,
}

impl Sweep {
    /// Signals every leftover of `entries` (`SIGTERM`, `SIGCONT`). Entries
    /// naming the same process (the state file and the spawn journal) are
    /// one leftover. One pass over `/proc` serves every entry whose leader
    /// is gone.
    pub fn start(entries: Vec<Entry>, now: MonoTime) -> Sweep {
        let mut sweep = Sweep {
            began: Some(now),
            ..Sweep::default()
        };
        let mut seen = BTreeSet::new();
        let mut classified = Vec::new();
        for entry in entries {
            if entry.pid <= 1 || !seen.insert((entry.pid, entry.start_time)) {
                continue;
            }
            let leader = same_process(entry.pid, entry.start_time)
                && proc_stat_field(entry.pid, 5).and_then(|s| s.parse::<i32>().ok())
                    == Some(entry.pgid);
            classified.push((entry, leader));
        }
        let orphaned: BTreeSet<i32> = classified
            .iter()
            .filter(|(_, leader)| !*leader)
            .map(|(e, _)| e.pgid)
            .collect();
        let mut members = sweep.scan(&orphaned);
        for (entry, leader) in classified {
            let members = if leader {
                Vec::new()
            } else {
                members.remove(&entry.pgid).unwrap_or_default()
            };
            if !leader && members.is_empty() {
                continue;
            }
            sweep.messages.push(format!(
                "service {}: pid {} of a previous restarter still runs: stopping its process group (SIGKILL in {} ms)",
                entry.name,
                entry.pid,
                entry.stop_timeout.as_millis()
            ));
            if leader {
                signal(-entry.pgid, libc::SIGTERM);
                signal(-entry.pgid, libc::SIGCONT);
            } else {
                for pid in members {
                    signal(pid, libc::SIGTERM);
                    signal(pid, libc::SIGCONT);
                }
            }
            sweep.items.push(Leftover {
                kill_at: now + entry.stop_timeout,
                entry,
                leader,
                killed_at: None,
            });
        }
        sweep.found = sweep.items.len();
        sweep
    }

    /// One pass over `/proc` for the sessions `sids` (none when empty).
    fn scan(&mut self, sids: &BTreeSet<i32>) -> BTreeMap<i32, Vec<i32>> {
        if sids.is_empty() {
            return BTreeMap::new();
        }
        let t0 = std::time::Instant::now();
        let found = sessions_members(sids);
        self.last_scan = t0.elapsed();
        self.scans += 1;
        found
    }

    /// Passes over `/proc` so far.
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Looks again; `SIGKILL`s what outlived its stop timeout. True when
    /// the sweep is over (services may start).
    pub fn poll(&mut self, now: MonoTime) -> bool {
        // Leaders first (one stat each); one scan for every session whose
        // leader is gone.
        let leader_alive: Vec<bool> = self
            .items
            .iter()
            .map(|it| it.leader && same_process(it.entry.pid, it.entry.start_time))
            .collect();
        let sids: BTreeSet<i32> = self
            .items
            .iter()
            .zip(&leader_alive)
            .filter(|(_, alive)| !**alive)
            .map(|(it, _)| it.entry.pgid)
            .collect();
        let members = self.scan(&sids);
        let mut messages = Vec::new();
        let mut i = 0;
        self.items.retain_mut(|it| {
            let alive: Vec<i32> = if leader_alive[i] {
                vec![it.entry.pid]
            } else {
                // The leader is gone; its session may not be.
                members.get(&it.entry.pgid).cloned().unwrap_or_default()
            };
            i += 1;
            if alive.is_empty() {
                messages.push(format!(
                    "service {}: leftover of a previous restarter is gone",
                    it.entry.name
                ));
                return false;
            }
            match it.killed_at {
                None if now >= it.kill_at => {
                    messages.push(format!(
                        "service {}: leftover pid {} did not stop in time: SIGKILL",
                        it.entry.name, it.entry.pid
                    ));
                    if it.leader && alive == [it.entry.pid] {
                        signal(-it.entry.pgid, libc::SIGKILL);
                    } else {
                        for pid in alive {
                            signal(pid, libc::SIGKILL);
                        }
                    }
                    it.killed_at = Some(now);
                    true
                }
                Some(t) if now.saturating_since(t) >= SWEEP_KILL_GRACE => {
                    messages.push(format!(
                        "service {}: leftover pid {} still there after SIGKILL: starting anyway",
                        it.entry.name, it.entry.pid
                    ));
                    false
                }
                _ => true,
            }
        });
        self.messages.extend(messages);
        if self.items.is_empty() && self.found > 0 {
            let took = self
                .began
                .map_or(Duration::ZERO, |t| now.saturating_since(t));
            self.messages.push(format!(
                "leftover sweep done in {} ms: {} leftover(s), {} pass(es) over /proc",
                took.as_millis(),
                self.found,
                self.scans
            ));
            self.found = 0;
        }
        self.items.is_empty()
    }

    pub fn is_done(&self) -> bool {
        self.items.is_empty()
    }

    /// When to poll next (`None` when done): every [`SWEEP_POLL`], or twice
    /// the last scan's duration when that is longer.
    pub fn next_deadline(&self, now: MonoTime) -> Option<MonoTime> {
        (!self.items.is_empty()).then(|| now + SWEEP_POLL.max(self.last_scan * 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The journal's lock is held as long as any descriptor of the old
    /// restarter's open file description lives (a child between `clone` and
    /// `exec` holds one in its record slot), and is had once none does.
    #[test]
    fn the_journal_lock_waits_for_every_holder_of_the_old_description() {
        let dir = std::env::temp_dir().join(format!("tether-journal-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let old = Journal::open(&dir).unwrap();
        // A child's record slot: another descriptor of the same description.
        let child_slot = old.file.as_ref().unwrap().try_clone().unwrap();
        let (_, locked) = Journal::open_locked(&dir, Duration::from_millis(5)).unwrap();
        assert!(!locked, "taken while the old restarter holds it");
        drop(old);
        let (_, locked) = Journal::open_locked(&dir, Duration::from_millis(5)).unwrap();
        assert!(
            !locked,
            "taken while a child of the dead restarter holds it"
        );
        drop(child_slot);
        let (new, locked) = Journal::open_locked(&dir, Duration::from_millis(5)).unwrap();
        assert!(locked, "not taken once every holder is gone");
        assert!(new.in_place(&dir));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn render_then_parse_round_trips_and_skips_garbage() {
        let e = vec![
            Entry {
                name: "a".into(),
                pid: 10,
                pgid: 10,
                start_time: 123,
                stop_timeout: Duration::from_millis(5000),
                saved: None,
            },
            Entry {
                name: "b@1".into(),
                pid: 20,
                pgid: 20,
                start_time: 456,
                stop_timeout: Duration::from_millis(200),
                saved: None,
            },
        ];
        let text = render(&e) + "garbage line\n1 2 3\nc 1 1 5 5\n";
        assert_eq!(parse(&text), e);
    }

    #[test]
    fn saved_state_round_trips_and_an_idle_service_has_a_line() {
        let t = |s| MonoTime::from_duration(Duration::from_secs(s));
        let e = vec![
            Entry {
                name: "a".into(),
                pid: 10,
                pgid: 10,
                start_time: 123,
                stop_timeout: Duration::from_millis(5000),
                saved: Some(Saved {
                    restarts: 3,
                    started: Some(t(100)),
                    ready: true,
                    watchdog_timeout: Some(Duration::from_millis(1500)),
                    history: vec![t(90), t(95)],
                    level: 1,
                    wanted: true,
                    failed: false,
                }),
            },
            Entry {
                name: "off".into(),
                pid: 0,
                pgid: 0,
                start_time: 0,
                stop_timeout: Duration::from_millis(200),
                saved: Some(Saved {
                    wanted: false,
                    ..Saved::default()
                }),
            },
        ];
        assert_eq!(parse(&render(&e)), e);
        // A line without a process and without saved state means nothing;
        // a malformed field makes an old line (pid and start time only).
        let old = parse("x 0 0 0 5\ny 10 10 7 5 restarts=zz\n");
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].saved, None);
        assert_eq!(old[0].pid, 10);
    }

    #[test]
    fn write_is_atomic_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("tether-state-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        let e = vec![Entry {
            name: "a".into(),
            pid: 10,
            pgid: 10,
            start_time: 1,
            stop_timeout: Duration::ZERO,
            saved: None,
        }];
        write(&path, &e).unwrap();
        assert_eq!(read(&path).unwrap(), e);
        assert!(!dir.join("restarter.state.tmp").exists());
        assert_eq!(read(&dir.join("missing")).unwrap(), vec![]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reused_pid_is_never_killed() {
        // Our own pid with a wrong start time: must be left alone.
        let me = std::process::id() as i32;
        let st = proc_start_time(me).unwrap();
        assert!(same_process(me, st));
        let entries = vec![Entry {
            name: "x".into(),
            pid: me,
            pgid: me,
            start_time: st + 1,
            stop_timeout: Duration::ZERO,
            saved: None,
        }];
        let mut sweep = Sweep::start(entries, MonoTime::ZERO);
        assert!(sweep.is_done());
        assert!(sweep.poll(MonoTime::ZERO));
    }

    #[test]
    fn leftover_is_stopped_then_the_sweep_ends() {
        // A shell that ignores SIGTERM, in its own session.
        let mut child = Command::new("sh")
            .args([
                "-c",
                "exec setsid sh -c 'trap \"\" TERM; while :; do sleep 0.05; done'",
            ])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Wait until setsid has happened (exec replaces sh, pid stays) and
        // the trap is in place (SIGTERM, bit 15, in SigIgn).
        let ignores_term = || {
            fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    let line = s.lines().find(|l| l.starts_with("SigIgn:"))?.to_string();
                    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
                })
                .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
        };
        let t0 = std::time::Instant::now();
        while proc_stat_field(pid, 6).and_then(|s| s.parse::<i32>().ok()) != Some(pid)
            || !ignores_term()
        {
            assert!(t0.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = proc_start_time(pid).unwrap();
        let entries = vec![Entry {
            name: "x".into(),
            pid,
            pgid: pid,
            start_time: st,
            stop_timeout: Duration::from_millis(100),
            saved: None,
        }];
        let now = MonoTime::now();
        let mut sweep = Sweep::start(entries, now);
        assert!(!sweep.is_done());
        assert!(!sweep.poll(now), "TERM is ignored: still there");
        assert!(
            !sweep.poll(now + Duration::from_millis(150)),
            "SIGKILL sent"
        );
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Members of the group die asynchronously: the sweep ends within a
        // few polls.
        let t1 = std::time::Instant::now();
        while !sweep.poll(now + Duration::from_millis(160)) {
            assert!(t1.elapsed() < Duration::from_secs(2), "sweep never ended");
            std::thread::sleep(SWEEP_POLL);
        }
    }
}
