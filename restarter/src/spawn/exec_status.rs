//! How a start that fails in the exec helper still counts as a start
//! failure (issue 12 item 5).
//!
//! Every service starts as the restarter's own binary, `tether-restarter
//! --exec-in ...` ([`super::exec_in_main`]), which enters the
//! `working_directory` and execs the program: the spawner's child, which
//! shares the restarter's memory until its `execve`, then only ever execs a
//! binary the restarter already runs, so a program (or a directory, or a
//! `PATH` entry) on a hung mount hangs that service's process, never the
//! event loop. The price is that the helper's `chdir` and `execve` fail
//! after the spawn has returned, so their errno comes back another way:
//!
//! - one pipe for all helpers ([`ExecStatus`]), both ends close-on-exec and
//!   non-blocking, made once at start; the spawner hands the write end to
//!   the helper only (`ChildSetup::pass_fd`, at the number
//!   `Spawner::pass_fd_number`, named in the helper's arguments);
//! - the helper marks it close-on-exec at once, so a program that runs
//!   never sees it; when `chdir` or every `execve` failed it writes one
//!   [`RECORD_LEN`]-byte record (pid, step, errno; smaller than `PIPE_BUF`,
//!   so records never interleave) and exits with `EXIT_CHDIR` or
//!   `EXIT_EXEC`;
//! - the loop reads the pipe when it reaps a pid (after `waitpid`, so the
//!   record, written before the exit, is there) and turns "exit of a pid
//!   with a record" into [`Event::ExecFailed`]; the supervisor handles that
//!   as a failed start (`cannot start: PROGRAM: No such file or directory
//!   [ENOENT]` in status and log, retried per policy) unless the service
//!   was being stopped, when it is the end of the stop.
//!
//! Limits, documented where the design is silent:
//! - The pipe is sized up to [`PIPE_SIZE`] (bounded by `fs.pipe-max-size`)
//!   so 65,536 failures can wait for their reap (one loop turn). A helper
//!   whose record does not fit (`EAGAIN`), or whose restarter is gone
//!   (`EPIPE`: killed, or exec'd anew by `upgrade restarter`), writes the
//!   reason to its stderr (the service's output) instead, and the restarter
//!   sees a plain exit 127 or 200, restarted per policy like any exit.
//! - Between the spawn and the helper's failure the service is `running`
//!   for a moment (a `notify = "none"` one also ready), so a service
//!   `after` it may be started meanwhile; the log says `started` before
//!   `cannot start`.
//! - The helper is the restarter's binary run with the service's
//!   environment: on a dynamically linked build, `LD_PRELOAD` or
//!   `LD_LIBRARY_PATH` of the service apply to it too (a static build, as
//!   in the VM image, has no loader).

use crate::service::ServiceSpec;
use crate::supervisor::{Event, ExitStatus};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Bytes of one record: magic, pid, step, errno (each 4 bytes, native
/// order: writer and reader are the same binary on the same machine).
pub const RECORD_LEN: usize = 16;
// One write(2) of a record is atomic.
const _: () = assert!(RECORD_LEN < libc::PIPE_BUF);
/// The first four bytes of every record.
const MAGIC: u32 = 0x7e74_6578; // "~tex"
/// The capacity asked for with `F_SETPIPE_SZ` (4096 records fit the
/// default 64 KiB).
pub const PIPE_SIZE: usize = 1 << 20;

/// Which step of the helper failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `chdir(working_directory)`.
    Chdir,
    /// `execve` of every candidate path of `exec[0]`.
    Exec,
}

impl Step {
    fn code(self) -> u32 {
        match self {
            Step::Chdir => 1,
            Step::Exec => 2,
        }
    }

    fn from_code(code: u32) -> Option<Step> {
        match code {
            1 => Some(Step::Chdir),
            2 => Some(Step::Exec),
            _ => None,
        }
    }
}

/// A failure a helper reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub step: Step,
    pub errno: i32,
}

/// The record of `pid`'s `failure`.
pub fn encode(pid: i32, failure: Failure) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
    r[4..8].copy_from_slice(&pid.to_ne_bytes());
    r[8..12].copy_from_slice(&failure.step.code().to_ne_bytes());
    r[12..16].copy_from_slice(&failure.errno.to_ne_bytes());
    r
}

/// A record's pid and failure; `None` for bytes that are not a record.
pub fn decode(r: &[u8; RECORD_LEN]) -> Option<(i32, Failure)> {
    let word = |i: usize| [r[i], r[i + 1], r[i + 2], r[i + 3]];
    if u32::from_ne_bytes(word(0)) != MAGIC {
        return None;
    }
    let pid = i32::from_ne_bytes(word(4));
    let step = Step::from_code(u32::from_ne_bytes(word(8)))?;
    let errno = i32::from_ne_bytes(word(12));
    (pid > 0 && errno > 0).then_some((pid, Failure { step, errno }))
}

/// The helper's side: writes `pid`'s record to `fd` in one `write(2)`.
/// `SIGPIPE` is blocked first (the helper put it back to default for the
/// program), so a restarter that is gone is an `EPIPE` error, not a death.
pub fn report(fd: BorrowedFd<'_>, pid: i32, failure: Failure) -> io::Result<()> {
    let mut pipe = nix::sys::signal::SigSet::empty();
    pipe.add(nix::sys::signal::Signal::SIGPIPE);
    pipe.thread_block()?;
    let record = encode(pid, failure);
    match nix::unistd::write(fd, &record)? {
        RECORD_LEN => Ok(()),
        n => Err(io::Error::other(format!("short write ({n} bytes)"))),
    }
}

/// The restarter's side: the pipe, and the records read from it whose pid
/// has not been reaped yet.
#[derive(Debug)]
pub struct ExecStatus {
    read: OwnedFd,
    write: OwnedFd,
    pending: HashMap<i32, Failure>,
    /// The start of a record cut by a read (never, given whole writes
    /// smaller than `PIPE_BUF`; kept anyway).
    partial: Vec<u8>,
    /// Bytes read that were not a record (logged by the caller).
    garbage: u64,
}

impl ExecStatus {
    /// The pipe: close-on-exec and non-blocking at both ends (a full pipe
    /// makes a helper fall back to its stderr rather than wait), sized to
    /// [`PIPE_SIZE`] or `fs.pipe-max-size` when that is smaller (a refused
    /// size keeps the default).
    pub fn new() -> io::Result<ExecStatus> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(PIPE_SIZE);
        let _ = fcntl(
            &write,
            FcntlArg::F_SETPIPE_SZ(PIPE_SIZE.min(max) as libc::c_int),
        );
        Ok(ExecStatus {
            read,
            write,
            pending: HashMap::new(),
            partial: Vec::new(),
            garbage: 0,
        })
    }

    /// The end the helpers write to (`ChildSetup::pass_fd`).
    pub fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// Bytes that were not a record, since start.
    pub fn garbage(&self) -> u64 {
        self.garbage
    }

    /// Reads every record waiting in the pipe (never blocks).
    fn drain(&mut self) {
        let mut buf = [0u8; RECORD_LEN * 256];
        loop {
            let n = match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("exec status pipe: {e}");
                    return;
                }
                Ok(n) => n,
            };
            self.partial.extend_from_slice(&buf[..n]);
            let whole = self.partial.len() / RECORD_LEN * RECORD_LEN;
            for chunk in self.partial[..whole].chunks_exact(RECORD_LEN) {
                let mut r = [0u8; RECORD_LEN];
                r.copy_from_slice(chunk);
                match decode(&r) {
                    Some((pid, f)) => {
                        self.pending.insert(pid, f);
                    }
                    None => self.garbage += RECORD_LEN as u64,
                }
            }
            self.partial.drain(..whole);
            if n < buf.len() {
                return;
            }
        }
    }

    /// `pid` was reaped: the failure its helper reported, if it did. Call
    /// for every reaped pid (so no record outlives its process).
    pub fn take(&mut self, pid: i32) -> Option<Failure> {
        if let Some(f) = self.pending.remove(&pid) {
            return Some(f);
        }
        self.drain();
        self.pending.remove(&pid)
    }

    /// Records waiting for their pid's reap.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// `No such file or directory` for `ENOENT`: the text `strerror` gives
/// (as `std::io::Error` does, without its ` (os error N)`).
pub fn errno_text(errno: i32) -> String {
    super::strip_os_error(&io::Error::from_raw_os_error(errno))
}

/// The event for the reaped `pid` of the service `spec` that exited with
/// `status`: [`Event::ExecFailed`] when its helper reported `failure` and
/// exited as a helper does after one, [`Event::Exited`] otherwise. The
/// message is the one a synchronous failure of the same step gave
/// (`PROGRAM: No such file or directory`, `working_directory DIR: ...`).
pub fn exit_event(
    pid: i32,
    status: ExitStatus,
    failure: Option<Failure>,
    spec: Option<&ServiceSpec>,
) -> Event {
    let helper_exit = match failure.map(|f| f.step) {
        Some(Step::Exec) => status == ExitStatus::Code(super::EXIT_EXEC),
        Some(Step::Chdir) => status == ExitStatus::Code(super::EXIT_CHDIR),
        None => false,
    };
    let (Some(f), true, Some(spec)) = (failure, helper_exit, spec) else {
        return Event::Exited { pid, status };
    };
    let what = match f.step {
        Step::Exec => spec.exec.first().cloned().unwrap_or_default(),
        Step::Chdir => format!(
            "working_directory {}",
            spec.working_directory
                .as_deref()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        ),
    };
    Event::ExecFailed {
        pid,
        status,
        errno: Some(f.errno),
        message: format!("{what}: {}", errno_text(f.errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::LoadedSet;
    use crate::supervisor::{Action, Supervisor};
    use std::time::Duration;
    use tether_common::clock::MonoTime;

    const ENOENT: Failure = Failure {
        step: Step::Exec,
        errno: libc::ENOENT,
    };

    #[test]
    fn records_round_trip_and_foreign_bytes_are_refused() {
        let f = Failure {
            step: Step::Chdir,
            errno: libc::EACCES,
        };
        assert_eq!(decode(&encode(4242, f)), Some((4242, f)));
        assert_eq!(decode(&[0u8; RECORD_LEN]), None);
        let mut bad_step = encode(1, f);
        bad_step[8..12].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(decode(&bad_step), None);
    }

    #[test]
    fn a_record_is_taken_once_at_its_pids_reap_whatever_the_order() {
        let mut st = ExecStatus::new().unwrap();
        report(st.write_end(), 100, ENOENT).unwrap();
        report(
            st.write_end(),
            101,
            Failure {
                step: Step::Chdir,
                errno: libc::ENOTDIR,
            },
        )
        .unwrap();
        // A pid without a record (its program runs, or ran and exited).
        assert_eq!(st.take(7), None);
        assert_eq!(st.pending(), 2);
        assert_eq!(st.take(101).map(|f| f.errno), Some(libc::ENOTDIR));
        assert_eq!(st.take(100), Some(ENOENT));
        assert_eq!(st.take(100), None);
        assert_eq!(st.pending(), 0);
        // Garbage is counted, and the records after it still read.
        nix::unistd::write(st.write_end(), &[0xffu8; RECORD_LEN]).unwrap();
        report(st.write_end(), 102, ENOENT).unwrap();
        assert_eq!(st.take(102), Some(ENOENT));
        assert_eq!(st.garbage(), RECORD_LEN as u64);
    }

    #[test]
    fn many_records_in_one_drain() {
        let mut st = ExecStatus::new().unwrap();
        for pid in 1..=3000 {
            report(st.write_end(), pid, ENOENT).unwrap();
        }
        assert_eq!(st.take(3000), Some(ENOENT));
        assert_eq!(st.pending(), 2999);
    }

    #[test]
    fn a_full_pipe_is_an_error_for_the_helper_never_a_wait() {
        let st = ExecStatus::new().unwrap();
        let mut n = 0u64;
        let e = loop {
            match report(st.write_end(), 1, ENOENT) {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        assert!(n >= 4096, "{n} records fit");
    }

    #[test]
    fn only_a_helper_exit_with_a_record_is_a_failed_start() {
        let mut spec = ServiceSpec::new("x", &["/nope/prog", "-f"]);
        spec.working_directory = Some("/srv/x".into());
        let exec = |status, failure| exit_event(9, status, failure, Some(&spec));
        assert_eq!(
            exec(ExitStatus::Code(super::super::EXIT_EXEC), Some(ENOENT)),
            Event::ExecFailed {
                pid: 9,
                status: ExitStatus::Code(127),
                errno: Some(libc::ENOENT),
                message: "/nope/prog: No such file or directory".into(),
            }
        );
        let chdir = Failure {
            step: Step::Chdir,
            errno: libc::ENOENT,
        };
        match exec(ExitStatus::Code(super::super::EXIT_CHDIR), Some(chdir)) {
            Event::ExecFailed { message, .. } => assert_eq!(
                message,
                "working_directory /srv/x: No such file or directory"
            ),
            other => panic!("{other:?}"),
        }
        // A program that exits 127 itself, or a helper killed by a signal
        // after writing its record: an exit like any other.
        let plain = |status, failure| matches!(exec(status, failure), Event::Exited { pid: 9, status: s } if s == status);
        assert!(plain(ExitStatus::Code(127), None));
        assert!(plain(
            ExitStatus::Signal {
                signal: libc::SIGKILL,
                core: false
            },
            Some(ENOENT)
        ));
        assert!(plain(ExitStatus::Code(200), Some(ENOENT)));
    }

    /// A supervisor running one service `a` (spawned as pid 10) and the
    /// time.
    fn running_a() -> (Supervisor, MonoTime) {
        let mut sup = Supervisor::new();
        let now = MonoTime::from_duration(Duration::from_secs(100));
        let mut spec = ServiceSpec::new("a", &["/nope/prog"]);
        spec.restart_delay = Duration::from_millis(500);
        let set = LoadedSet {
            specs: vec![spec],
            errors: Vec::new(),
            dir_error: None,
        };
        let actions = sup.load(set, now);
        let id = sup.id("a").unwrap();
        assert!(actions.contains(&Action::Spawn { id }), "{actions:?}");
        sup.handle(id, Event::Spawned { pid: 10 }, now);
        (sup, now)
    }

    fn enoent(pid: i32) -> Event {
        Event::ExecFailed {
            pid,
            status: ExitStatus::Code(super::super::EXIT_EXEC),
            errno: Some(libc::ENOENT),
            message: "/nope/prog: No such file or directory".into(),
        }
    }

    #[test]
    fn a_reported_exec_failure_is_a_failed_start_as_a_synchronous_one_was() {
        // Today's exec failure, and the spawner's synchronous one before:
        // the same row afterwards, the same retry.
        let (mut late, now) = running_a();
        let id = late.id("a").unwrap();
        let t = now + Duration::from_millis(3);
        let actions = late.handle(id, enoent(10), t);
        assert!(actions.contains(&Action::WriteState), "{actions:?}");
        let mut sync = Supervisor::new();
        let mut spec = ServiceSpec::new("a", &["/nope/prog"]);
        spec.restart_delay = Duration::from_millis(500);
        sync.load(
            LoadedSet {
                specs: vec![spec],
                errors: Vec::new(),
                dir_error: None,
            },
            now,
        );
        sync.handle(
            id,
            Event::SpawnFailed {
                errno: Some(libc::ENOENT),
                message: "/nope/prog: No such file or directory".into(),
            },
            t,
        );
        let (a, b) = (late.row("a", t).unwrap(), sync.row("a", t).unwrap());
        assert_eq!(
            a.error.as_deref(),
            Some("cannot start: /nope/prog: No such file or directory [ENOENT]")
        );
        assert_eq!(
            (a.state, a.pid, a.restarts, &a.error, &a.last_exit),
            (b.state, b.pid, b.restarts, &b.error, &b.last_exit)
        );
        assert_eq!(a.restarts, 1);
        assert_eq!(late.next_deadline(), sync.next_deadline());
        assert_eq!(late.id_by_pid(10), None);
        // The retry comes at the same time, as a new spawn.
        let at = late.next_deadline().unwrap();
        assert!(late.tick(at).contains(&Action::Spawn { id }));
    }

    #[test]
    fn an_exec_failure_of_a_service_being_stopped_ends_the_stop() {
        let (mut sup, now) = running_a();
        let id = sup.id("a").unwrap();
        let (_, actions) = sup.stop("a", now).unwrap();
        assert!(actions.iter().any(|a| matches!(a, Action::Kill { .. })));
        sup.handle(id, enoent(10), now + Duration::from_millis(1));
        let row = sup.row("a", now).unwrap();
        assert_eq!((row.state, row.pid, row.restarts), ("stopped", None, 0));
        assert_eq!(row.error, None);
        // A stale report (another pid) changes nothing.
        let (mut sup, now) = running_a();
        sup.handle(id, enoent(11), now);
        assert_eq!(sup.row("a", now).unwrap().pid, Some(10));
    }
}
