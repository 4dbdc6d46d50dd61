//! Service output: each service's stdout and stderr go through pipes that
//! the restarter drains continuously and forwards, line by line, to syslog,
//! tagged with the service name (stdout at `info`, stderr at `err`).
//!
//! This module holds [`ServiceOutput`] (one per service: the pipes, the
//! line splitter, the bounded buffer used while syslog is down, the dropped
//! counter) and the [`LineSink`] seam it delivers through (implemented by
//! [`Syslog`]; tests use fakes as well as a real `Syslog`).
//!
//! Decisions taken where the design is silent:
//! - **The same pipes for the service's whole life.** [`ServiceOutput::new`]
//!   creates the two pipes and keeps the read ends *and* a copy of the write
//!   ends; every process of the service (first start and each restart) gets
//!   duplicates of the same write ends ([`ServiceOutput::reopen`]). So output
//!   written by a process just before it dies is still in the pipe and is
//!   read like any other (never lost with a closed pipe), descriptors do not
//!   churn, and the read descriptors the event loop registers never change.
//!   Because the restarter holds a write end, the read ends never see EOF
//!   (nor `EPOLLHUP`) while the service exists, even when a process closes
//!   its stdout; the supervisor marks the end of a process by calling
//!   [`ServiceOutput::finish_process`] after reaping it (reads what is left,
//!   ends a pending partial line). When a service is removed,
//!   [`ServiceOutput::close_write_ends`] drops the kept write ends; the read
//!   ends then reach EOF once no process holds a write end, and
//!   [`ServiceOutput::is_closed`] turns true.
//! - **The child's write ends are blocking** (most programs expect a blocking
//!   stdout) and close-on-exec in the restarter (spawn `dup2`s them onto 1
//!   and 2, which clears the flag on the copies only). The read ends are
//!   `O_CLOEXEC | O_NONBLOCK`. A service never blocks on output because the
//!   restarter always drains, dropping lines when it cannot deliver them.
//!   The one exception is accepted: while the restarter itself is stopped
//!   (`SIGSTOP`, or hung until init kills it) nobody drains, a pipe fills
//!   (64 KiB) and a service writing more blocks until the restarter runs
//!   again.
//! - **Lines.** Split at `\n`; a trailing `\r` is removed; empty lines are
//!   not forwarded (not counted as dropped). A line longer than
//!   [`MAX_LINE`] bytes is forwarded in pieces of at most that size, cut
//!   before an incomplete UTF-8 character when there is one. A partial last
//!   line waits (at most [`MAX_LINE`] bytes) for its end, the end of the
//!   process, or EOF. Bytes are forwarded as they are (not required to be
//!   UTF-8).
//! - **Fairness.** [`ServiceOutput::drain`] reads at most [`READ_BUDGET`]
//!   bytes per pipe per call and returns whether more may be waiting, so one
//!   noisy service cannot starve the event loop; the pipe stays readable and
//!   the loop comes back next turn.
//! - **While syslog is down** (or busy), lines wait in a per-service buffer
//!   of at most [`BUFFER_MAX_LINES`] lines and [`BUFFER_MAX_BYTES`] bytes,
//!   allocated only while in use. New lines never overtake buffered ones.
//!   Beyond the bound the *newest* lines are dropped and counted (the buffer
//!   keeps what was said when trouble began). [`ServiceOutput::flush`]
//!   resends in order and stops at the first failure; `drain` tries a flush
//!   first. The supervisor calls `flush` for services with `buffered() > 0`
//!   about once a second (the `Syslog` reconnects at most once per second).
//! - **Drop reports.** [`ServiceOutput::take_drop_report`] returns the lines
//!   dropped since the last report at most once per [`DROP_REPORT_INTERVAL`];
//!   [`ServiceOutput::next_drop_report`] says when a pending one becomes due.
//! - Each line is sent with the pid of the process known when the line was
//!   read ([`ServiceOutput::set_pid`]), kept with buffered lines.
//! - **At-least-once across a restarter's death.** Bytes are copied out of
//!   a pipe with `tee(2)` and read out of it only after their lines were
//!   sent or kept ([`take`], [`consume`]), so lines in hand when the
//!   restarter is killed stay in the pipe for the next one (which adopts
//!   the pipe) and may arrive twice; see docs/ADOPTION.md.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use tether_common::clock::MonoTime;
use tether_common::logging::{SendError, Severity, Syslog};

/// Longest line forwarded in one piece, in bytes.
pub const MAX_LINE: usize = 1024;
/// Bytes read per pipe per [`ServiceOutput::drain`] call.
pub const READ_BUDGET: usize = 64 * 1024;
/// Bytes read per pipe by [`ServiceOutput::finish_process`]: the largest
/// pipe an unprivileged process can ask for (`/proc/sys/fs/pipe-max-size`
/// default), so a dead process's output is read completely.
pub const FINISH_BUDGET: usize = 1024 * 1024;
/// At most this many lines wait while syslog is down...
pub const BUFFER_MAX_LINES: usize = 256;
/// ...and at most this many bytes of them.
pub const BUFFER_MAX_BYTES: usize = 64 * 1024;
/// Drops are reported at most this often.
pub const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Which pipe a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// stdout at `info`, stderr at `err`.
    pub fn severity(self) -> Severity {
        match self {
            Stream::Stdout => Severity::Info,
            Stream::Stderr => Severity::Err,
        }
    }
}

/// Where lines go. `Ok(())` means delivered; an error means not now (the
/// line is kept and tried again later).
pub trait LineSink {
    fn send_line(
        &mut self,
        stream: Stream,
        tag: &str,
        pid: u32,
        line: &[u8],
        now: MonoTime,
    ) -> Result<(), SendError>;
}

impl LineSink for Syslog {
    fn send_line(
        &mut self,
        stream: Stream,
        tag: &str,
        pid: u32,
        line: &[u8],
        now: MonoTime,
    ) -> Result<(), SendError> {
        self.send(stream.severity(), tag, pid, line, now)
    }
}

/// The write ends for one process of the service: spawn `dup2`s them onto
/// descriptors 1 and 2. They are close-on-exec here (the `dup2` copies are
/// not) and blocking.
#[derive(Debug)]
pub struct OutputPipes {
    pub child_stdout: OwnedFd,
    pub child_stderr: OwnedFd,
}

#[derive(Debug)]
struct Pipe {
    stream: Stream,
    read: OwnedFd,
    /// The kept write end (see the module docs); `None` after
    /// [`ServiceOutput::close_write_ends`].
    write: Option<OwnedFd>,
    /// The unfinished last line, always shorter than [`MAX_LINE`] between
    /// calls.
    partial: Vec<u8>,
    eof: bool,
}

#[derive(Debug)]
struct Pending {
    stream: Stream,
    pid: u32,
    line: Box<[u8]>,
}

/// Lines that could not be delivered yet, and what was dropped.
#[derive(Debug, Default)]
struct Backlog {
    lines: VecDeque<Pending>,
    bytes: usize,
    dropped: u64,
    unreported: u64,
    last_report: Option<MonoTime>,
}

impl Backlog {
    /// Sends `line` now if nothing is waiting and the sink takes it;
    /// otherwise queues it, or drops it when the buffer is full.
    fn emit<S: LineSink>(
        &mut self,
        sink: &mut S,
        tag: &str,
        stream: Stream,
        pid: u32,
        line: &[u8],
        now: MonoTime,
    ) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return;
        }
        if self.lines.is_empty() && sink.send_line(stream, tag, pid, line, now).is_ok() {
            return;
        }
        if self.lines.len() >= BUFFER_MAX_LINES || self.bytes + line.len() > BUFFER_MAX_BYTES {
            self.dropped += 1;
            self.unreported += 1;
            return;
        }
        self.bytes += line.len();
        self.lines.push_back(Pending {
            stream,
            pid,
            line: line.into(),
        });
    }

    fn flush<S: LineSink>(&mut self, sink: &mut S, tag: &str, now: MonoTime) -> bool {
        while let Some(p) = self.lines.front() {
            if sink.send_line(p.stream, tag, p.pid, &p.line, now).is_err() {
                return false;
            }
            self.bytes -= p.line.len();
            self.lines.pop_front();
        }
        if self.lines.capacity() > 0 {
            // Give the memory back: no cost per service while syslog is up.
            self.lines = VecDeque::new();
        }
        true
    }
}

/// The output of one service: two pipes, their line splitters, the backlog.
#[derive(Debug)]
pub struct ServiceOutput {
    tag: String,
    pid: u32,
    pipes: [Pipe; 2],
    backlog: Backlog,
}

fn new_pipe(stream: Stream) -> std::io::Result<(Pipe, OwnedFd)> {
    // Both ends close-on-exec; only the read end non-blocking (O_NONBLOCK is
    // per open file description, and the two ends are separate ones).
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    tether_common::sys::set_nonblocking(read.as_fd(), true)?;
    raise_capacity(read.as_fd());
    let child = write.try_clone()?;
    Ok((
        Pipe {
            stream,
            read,
            write: Some(write),
            partial: Vec::new(),
            eof: false,
        },
        child,
    ))
}

/// The capacity each output pipe is raised to at creation (issue 13): a
/// service keeps writing while no restarter runs (between a crash and the
/// next restarter's adoption) without blocking and without a line lost, as
/// long as what it writes meanwhile fits. `min(PIPE_CAPACITY,
/// fs.pipe-max-size)`; with Linux's default `pipe-max-size` (1 MiB) that is
/// 1 MiB per stream, about 10,000 lines of 100 bytes. Pages are only
/// allocated as the pipe fills, so an idle service costs nothing more. A
/// failed raise (an unprivileged restarter over `pipe-user-pages-soft`)
/// keeps the kernel's 64 KiB.
pub const PIPE_CAPACITY: usize = 1 << 20;

/// The capacity [`raise_capacity`] asks for: [`PIPE_CAPACITY`] bounded by
/// `/proc/sys/fs/pipe-max-size` (read once).
pub fn pipe_capacity() -> usize {
    static CAP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map_or(PIPE_CAPACITY, |max| PIPE_CAPACITY.min(max))
    })
}

fn raise_capacity(fd: BorrowedFd<'_>) {
    let want = pipe_capacity().min(i32::MAX as usize) as i32;
    if let Err(e) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(want)) {
        log::debug!("F_SETPIPE_SZ {want}: {e}");
    }
}

impl ServiceOutput {
    /// The pipes of service `service` taken back from the fd store (issue
    /// 13): `[stdout read, stdout write, stderr read, stderr write]`, as
    /// [`ServiceOutput::store_fds`] gave them. The read ends are made
    /// non-blocking again (it is their own open file description).
    pub fn from_fds(service: &str, fds: [OwnedFd; 4]) -> std::io::Result<ServiceOutput> {
        let [or, ow, er, ew] = fds;
        for r in [&or, &er] {
            tether_common::sys::set_nonblocking(r.as_fd(), true)?;
        }
        let pipe = |stream, read, write| Pipe {
            stream,
            read,
            write: Some(write),
            partial: Vec::new(),
            eof: false,
        };
        Ok(ServiceOutput {
            tag: service.to_string(),
            pid: 0,
            pipes: [pipe(Stream::Stdout, or, ow), pipe(Stream::Stderr, er, ew)],
            backlog: Backlog::default(),
        })
    }

    /// The descriptors that go to the fd store: each read end and the kept
    /// write end (`None` once the write ends are closed).
    pub fn store_fds(&self) -> Option<[BorrowedFd<'_>; 4]> {
        let [o, e] = &self.pipes;
        Some([
            o.read.as_fd(),
            o.write.as_ref()?.as_fd(),
            e.read.as_fd(),
            e.write.as_ref()?.as_fd(),
        ])
    }

    /// Creates the pipes of service `service` (the syslog tag) and returns
    /// the write ends for its first process.
    pub fn new(service: &str) -> std::io::Result<(ServiceOutput, OutputPipes)> {
        let (out, child_stdout) = new_pipe(Stream::Stdout)?;
        let (err, child_stderr) = new_pipe(Stream::Stderr)?;
        let so = ServiceOutput {
            tag: service.to_string(),
            pid: 0,
            pipes: [out, err],
            backlog: Backlog::default(),
        };
        Ok((
            so,
            OutputPipes {
                child_stdout,
                child_stderr,
            },
        ))
    }

    /// The service name lines are tagged with.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The read ends (stdout, stderr): register `EPOLLIN` on both. They stay
    /// the same for the service's whole life.
    pub fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.pipes[0].read.as_fd(), self.pipes[1].read.as_fd()]
    }

    /// The pid lines read from now on are sent with (`<= 0`: unknown, sent
    /// as 0). Call after [`ServiceOutput::finish_process`] of the previous
    /// process and after spawning the next.
    pub fn set_pid(&mut self, pid: i32) {
        self.pid = u32::try_from(pid).unwrap_or(0);
    }

    /// Write ends for the next process of the service: duplicates of the
    /// same pipes (see the module docs). Fails after
    /// [`ServiceOutput::close_write_ends`].
    pub fn reopen(&mut self) -> std::io::Result<OutputPipes> {
        let dup = |p: &Pipe| match &p.write {
            Some(w) => w.try_clone(),
            None => Err(std::io::Error::other("service output is closed")),
        };
        Ok(OutputPipes {
            child_stdout: dup(&self.pipes[0])?,
            child_stderr: dup(&self.pipes[1])?,
        })
    }

    /// Reads what is available (at most [`READ_BUDGET`] bytes per pipe),
    /// forwards complete lines (first retrying buffered ones), never blocks.
    /// Returns true when a pipe may hold more: call again next loop turn.
    pub fn drain<S: LineSink>(&mut self, sink: &mut S, now: MonoTime) -> bool {
        self.read_all(sink, now, READ_BUDGET)
    }

    /// The current process was reaped: reads everything it left in the pipes
    /// (at most [`FINISH_BUDGET`] bytes per pipe) and forwards any
    /// unfinished last line as a line, so the next process starts on a fresh
    /// line. Returns true when a pipe may still hold more (something else
    /// still writes).
    pub fn finish_process<S: LineSink>(&mut self, sink: &mut S, now: MonoTime) -> bool {
        let more = self.read_all(sink, now, FINISH_BUDGET);
        self.end_partial_lines(sink, now);
        more
    }

    /// The service is being removed: drops the kept write ends, so the read
    /// ends reach EOF once no process holds a write end any more. Keep
    /// draining until [`ServiceOutput::is_closed`].
    pub fn close_write_ends(&mut self) {
        for p in &mut self.pipes {
            p.write = None;
        }
    }

    /// Both pipes reached EOF (only possible after
    /// [`ServiceOutput::close_write_ends`]).
    pub fn is_closed(&self) -> bool {
        self.pipes.iter().all(|p| p.eof)
    }

    /// Resends buffered lines in order, stopping at the first failure.
    /// Returns true when nothing is buffered any more.
    pub fn flush<S: LineSink>(&mut self, sink: &mut S, now: MonoTime) -> bool {
        self.backlog.flush(sink, &self.tag, now)
    }

    /// Lines dropped since the service output was created.
    pub fn dropped(&self) -> u64 {
        self.backlog.dropped
    }

    /// Lines waiting for syslog.
    pub fn buffered(&self) -> usize {
        self.backlog.lines.len()
    }

    /// Bytes waiting for syslog.
    pub fn buffered_bytes(&self) -> usize {
        self.backlog.bytes
    }

    /// Lines dropped since the last report, at most once per
    /// [`DROP_REPORT_INTERVAL`] (the first drop is reported at once). The
    /// supervisor logs it.
    pub fn take_drop_report(&mut self, now: MonoTime) -> Option<u64> {
        let b = &mut self.backlog;
        if b.unreported == 0 {
            return None;
        }
        if let Some(last) = b.last_report {
            if now.saturating_since(last) < DROP_REPORT_INTERVAL {
                return None;
            }
        }
        b.last_report = Some(now);
        Some(std::mem::take(&mut b.unreported))
    }

    /// When a pending drop report becomes due (`None`: nothing pending).
    pub fn next_drop_report(&self) -> Option<MonoTime> {
        let b = &self.backlog;
        if b.unreported == 0 {
            return None;
        }
        Some(
            b.last_report
                .map_or(MonoTime::ZERO, |t| t + DROP_REPORT_INTERVAL),
        )
    }

    fn read_all<S: LineSink>(&mut self, sink: &mut S, now: MonoTime, budget: usize) -> bool {
        let ServiceOutput {
            tag,
            pid,
            pipes,
            backlog,
        } = self;
        if !backlog.lines.is_empty() {
            backlog.flush(sink, tag, now);
        }
        let mut more = false;
        let mut buf = [0u8; 16 * 1024];
        let scratch = scratch_pipe();
        for p in pipes.iter_mut() {
            let mut left = budget;
            while !p.eof && left > 0 {
                let want = left.min(buf.len());
                match take(p.read.as_fd(), scratch, &mut buf[..want]) {
                    Ok(Taken { n: 0, .. }) => {
                        p.eof = true;
                        if !p.partial.is_empty() {
                            backlog.emit(sink, tag, p.stream, *pid, &p.partial, now);
                            p.partial = Vec::new();
                        }
                    }
                    Ok(Taken { n, peeked }) => {
                        left -= n;
                        split_lines(&mut p.partial, &buf[..n], |line| {
                            backlog.emit(sink, tag, p.stream, *pid, line, now)
                        });
                        if peeked {
                            // Handed on (sent, or kept in the backlog):
                            // now it may leave the pipe.
                            consume(p.read.as_fd(), &mut buf[..n]);
                        }
                    }
                    Err(Errno::EINTR) => {}
                    // EAGAIN: empty for now. Anything else on a pipe we
                    // created is unexpected; try again next turn.
                    Err(_) => break,
                }
            }
            if left == 0 && !p.eof {
                more = true;
            }
        }
        more
    }

    fn end_partial_lines<S: LineSink>(&mut self, sink: &mut S, now: MonoTime) {
        for p in &mut self.pipes {
            if !p.partial.is_empty() {
                self.backlog
                    .emit(sink, &self.tag, p.stream, self.pid, &p.partial, now);
                p.partial = Vec::new();
            }
        }
    }
}

/// What [`take`] got: `n` bytes in the buffer; `peeked`: they are still
/// in the pipe (copied with `tee`) and [`consume`] must remove them once
/// handed on.
struct Taken {
    n: usize,
    peeked: bool,
}

/// The restarter's one scratch pipe for [`take`] (both ends non-blocking
/// and close-on-exec), made on first use; `None` when it cannot be made
/// (then bytes are read straight from the service's pipe).
fn scratch_pipe() -> Option<&'static (OwnedFd, OwnedFd)> {
    static SCRATCH: std::sync::OnceLock<Option<(OwnedFd, OwnedFd)>> = std::sync::OnceLock::new();
    SCRATCH
        .get_or_init(|| nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).ok())
        .as_ref()
}

/// Reads up to `buf.len()` bytes of `pipe` *without taking them out*: a
/// `tee(2)` into the scratch pipe, then a read of the copy. The bytes leave
/// the service's pipe only in [`consume`], after the lines in them were
/// sent or kept, so a restarter killed in between (SIGKILL, the OOM
/// killer, which tends to strike while it allocates for a send) leaves
/// them in the pipe for the next restarter, which adopts the pipe from the
/// fd store: a line is then delivered twice rather than lost. Falls back
/// to a plain read without the scratch pipe or where `tee` is refused.
fn take(
    pipe: BorrowedFd<'_>,
    scratch: Option<&(OwnedFd, OwnedFd)>,
    buf: &mut [u8],
) -> nix::Result<Taken> {
    use nix::fcntl::{tee, SpliceFFlags};
    if let Some((r, w)) = scratch {
        match tee(pipe, w.as_fd(), buf.len(), SpliceFFlags::SPLICE_F_NONBLOCK) {
            Ok(0) => {
                return Ok(Taken {
                    n: 0,
                    peeked: false,
                })
            }
            Ok(n) => {
                let mut got = 0;
                while got < n {
                    match nix::unistd::read(r.as_fd(), &mut buf[got..n]) {
                        Ok(0) => break,
                        Ok(k) => got += k,
                        Err(Errno::EINTR) => {}
                        Err(_) => break,
                    }
                }
                if got < n {
                    // Cannot happen with an empty scratch pipe; keep it
                    // empty for the next call and take nothing.
                    let mut sink = [0u8; 4096];
                    while matches!(nix::unistd::read(r.as_fd(), &mut sink), Ok(k) if k > 0) {}
                    return Err(Errno::EIO);
                }
                return Ok(Taken { n, peeked: true });
            }
            Err(Errno::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    nix::unistd::read(pipe, buf).map(|n| Taken { n, peeked: false })
}

/// Takes the `buf.len()` bytes [`take`] copied out of `pipe` (nobody else
/// reads it, so they are the first ones).
fn consume(pipe: BorrowedFd<'_>, buf: &mut [u8]) {
    let mut left = buf.len();
    while left > 0 {
        match nix::unistd::read(pipe, &mut buf[..left]) {
            Ok(0) => break,
            Ok(k) => left -= k,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
}

/// Appends `data` to the unfinished line `partial`, calling `out` for each
/// complete line (without its `\n`) and for each [`MAX_LINE`]-byte piece of
/// an overlong one. On return `partial` holds less than [`MAX_LINE`] bytes.
fn split_lines(partial: &mut Vec<u8>, data: &[u8], mut out: impl FnMut(&[u8])) {
    let mut rest = data;
    while !rest.is_empty() {
        let room = MAX_LINE - partial.len();
        let take = rest.len().min(room);
        if let Some(i) = rest[..take].iter().position(|&b| b == b'\n') {
            if partial.is_empty() {
                out(&rest[..i]);
            } else {
                partial.extend_from_slice(&rest[..i]);
                out(partial);
                partial.clear();
            }
            rest = &rest[i + 1..];
            continue;
        }
        partial.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        if partial.len() == MAX_LINE {
            let cut = utf8_cut(partial);
            out(&partial[..cut]);
            partial.drain(..cut);
        }
    }
    if partial.capacity() > MAX_LINE && partial.is_empty() {
        *partial = Vec::new();
    }
}

/// Where to cut `piece` so that an incomplete UTF-8 character at its end
/// moves to the next piece: the start of that character, or the full length.
fn utf8_cut(piece: &[u8]) -> usize {
    let len = piece.len();
    for back in 1..=3.min(len) {
        let i = len - back;
        let b = piece[i];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        // Cut before the lead byte when its character does not fit (and
        // something remains before it).
        return if need > back && i > 0 { i } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::path::PathBuf;

    /// A sink that records lines and can be switched down.
    #[derive(Default)]
    struct FakeSink {
        up: bool,
        lines: Vec<(Stream, String, u32, Vec<u8>)>,
        /// Accept this many more lines, then go down (None: no limit).
        accept_then_down: Option<usize>,
    }

    impl FakeSink {
        fn up() -> Self {
            FakeSink {
                up: true,
                ..Default::default()
            }
        }
        fn down() -> Self {
            FakeSink::default()
        }
        fn texts(&self) -> Vec<String> {
            self.lines
                .iter()
                .map(|l| String::from_utf8_lossy(&l.3).into_owned())
                .collect()
        }
    }

    impl LineSink for FakeSink {
        fn send_line(
            &mut self,
            stream: Stream,
            tag: &str,
            pid: u32,
            line: &[u8],
            _now: MonoTime,
        ) -> Result<(), SendError> {
            if let Some(n) = &mut self.accept_then_down {
                if *n == 0 {
                    self.up = false;
                } else {
                    *n -= 1;
                }
            }
            if !self.up {
                return Err(SendError::Down);
            }
            self.lines
                .push((stream, tag.to_string(), pid, line.to_vec()));
            Ok(())
        }
    }

    fn write_all(fd: &OwnedFd, data: &[u8]) {
        let mut f = std::fs::File::from(fd.try_clone().unwrap());
        std::io::Write::write_all(&mut f, data).unwrap();
    }

    fn split(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut partial = Vec::new();
        let mut lines = Vec::new();
        for c in chunks {
            split_lines(&mut partial, c, |l| lines.push(l.to_vec()));
        }
        (lines, partial)
    }

    const T0: MonoTime = MonoTime::ZERO;

    /// A sink that dies (panics) at its `n`-th line, the way a restarter
    /// killed in the middle of forwarding a chunk stops.
    struct DiesAt(usize, Vec<String>);

    impl LineSink for DiesAt {
        fn send_line(
            &mut self,
            _: Stream,
            _: &str,
            _: u32,
            line: &[u8],
            _: MonoTime,
        ) -> Result<(), SendError> {
            if self.1.len() + 1 == self.0 {
                panic!("killed while forwarding");
            }
            self.1.push(String::from_utf8_lossy(line).into_owned());
            Ok(())
        }
    }

    #[test]
    fn lines_in_hand_when_the_restarter_dies_stay_in_the_pipe_for_the_next() {
        let (out, pipes) = ServiceOutput::new("svc").unwrap();
        write_all(&pipes.child_stdout, b"one\ntwo\nthree\n");
        // The descriptors a next restarter gets back from the fd store.
        let kept: Vec<OwnedFd> = out
            .store_fds()
            .unwrap()
            .iter()
            .map(|fd| fd.try_clone_to_owned().unwrap())
            .collect();
        let mut out = out;
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut first = DiesAt(2, Vec::new());
            out.drain(&mut first, MonoTime::ZERO);
        }));
        assert!(died.is_err());
        drop(out);
        let [a, b, c, d]: [OwnedFd; 4] = kept.try_into().unwrap();
        let mut next = ServiceOutput::from_fds("svc", [a, b, c, d]).unwrap();
        let mut sink = FakeSink::up();
        next.drain(&mut sink, MonoTime::ZERO);
        // "one" was delivered before the death and comes again; nothing is
        // lost.
        assert_eq!(sink.texts(), ["one", "two", "three"]);
        // Once handed on, the bytes are gone from the pipe.
        let mut again = FakeSink::up();
        next.drain(&mut again, MonoTime::ZERO);
        assert!(again.lines.is_empty());
    }

    #[test]
    fn lines_split_at_newlines_across_chunks() {
        let (lines, partial) = split(&[b"one\ntw", b"o\n\nthr", b"ee"]);
        assert_eq!(lines, vec![b"one".to_vec(), b"two".to_vec(), b"".to_vec()]);
        assert_eq!(partial, b"three");
    }

    #[test]
    fn long_lines_are_split_at_max_line() {
        let mut data = vec![b'x'; 2 * MAX_LINE + 452];
        data.push(b'\n');
        let (lines, partial) = split(&[&data[..100], &data[100..]]);
        assert_eq!(
            lines.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 452]
        );
        assert!(partial.is_empty());
        // Exactly MAX_LINE then newline: one piece, then an empty line.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        let (lines, _) = split(&[&exact]);
        assert_eq!(
            lines.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![MAX_LINE, 0]
        );
    }

    #[test]
    fn long_line_split_does_not_cut_a_utf8_character() {
        // 1023 ASCII bytes, then "é" (2 bytes) straddling the 1024 boundary.
        let mut data = vec![b'a'; MAX_LINE - 1];
        data.extend_from_slice("é€\n".as_bytes());
        let (lines, partial) = split(&[&data]);
        assert_eq!(lines[0].len(), MAX_LINE - 1);
        assert_eq!(lines[1], "é€".as_bytes());
        assert!(partial.is_empty());
        assert_eq!(
            utf8_cut(&[0xff; 8]),
            8,
            "non-UTF-8 bytes are cut at the full length"
        );
        assert_eq!(utf8_cut("ab€".as_bytes()), 5);
        assert_eq!(utf8_cut(&"ab€".as_bytes()[..4]), 2);
    }

    #[test]
    fn drain_forwards_stdout_as_stdout_and_stderr_as_stderr_with_tag_and_pid() {
        let (mut out, pipes) = ServiceOutput::new("web").unwrap();
        out.set_pid(1234);
        write_all(&pipes.child_stdout, b"hello\r\nworld\n");
        write_all(&pipes.child_stderr, b"oops\n");
        let mut sink = FakeSink::up();
        assert!(!out.drain(&mut sink, T0));
        assert_eq!(
            sink.lines,
            vec![
                (Stream::Stdout, "web".to_string(), 1234, b"hello".to_vec()),
                (Stream::Stdout, "web".to_string(), 1234, b"world".to_vec()),
                (Stream::Stderr, "web".to_string(), 1234, b"oops".to_vec()),
            ]
        );
        assert_eq!(Stream::Stdout.severity(), Severity::Info);
        assert_eq!(Stream::Stderr.severity(), Severity::Err);
        assert_eq!(out.buffered(), 0);
        assert_eq!(out.dropped(), 0);
    }

    #[test]
    fn descriptors_are_cloexec_read_ends_nonblocking_child_ends_blocking() {
        use nix::fcntl::{fcntl, FcntlArg};
        let (out, pipes) = ServiceOutput::new("svc").unwrap();
        let fl =
            |fd: BorrowedFd<'_>| OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
        let fd_flags = |fd: BorrowedFd<'_>| fcntl(fd, FcntlArg::F_GETFD).unwrap();
        for fd in out.fds() {
            assert!(fl(fd).contains(OFlag::O_NONBLOCK));
            assert_ne!(fd_flags(fd) & libc::FD_CLOEXEC, 0);
        }
        for fd in [pipes.child_stdout.as_fd(), pipes.child_stderr.as_fd()] {
            assert!(!fl(fd).contains(OFlag::O_NONBLOCK));
            assert_ne!(fd_flags(fd) & libc::FD_CLOEXEC, 0);
        }
    }

    #[test]
    fn empty_pipes_drain_without_blocking() {
        let (mut out, _pipes) = ServiceOutput::new("quiet").unwrap();
        let mut sink = FakeSink::up();
        assert!(!out.drain(&mut sink, T0));
        assert!(sink.lines.is_empty());
        assert!(!out.is_closed());
    }

    #[test]
    fn drain_is_bounded_and_reports_more() {
        use nix::fcntl::{fcntl, FcntlArg};
        let (mut out, pipes) = ServiceOutput::new("noisy").unwrap();
        // Room for 2.5 read budgets in the pipe, written before draining.
        let total = 5 * READ_BUDGET / 2;
        fcntl(
            pipes.child_stdout.as_fd(),
            FcntlArg::F_SETPIPE_SZ(total as i32 * 2),
        )
        .unwrap();
        let line = [b"z".repeat(99), b"\n".to_vec()].concat();
        let n = total / line.len();
        write_all(&pipes.child_stdout, &line.repeat(n));
        let mut sink = FakeSink::up();
        assert!(
            out.drain(&mut sink, T0),
            "first budget used up: more waiting"
        );
        assert_eq!(sink.lines.len(), READ_BUDGET / 100);
        assert!(out.drain(&mut sink, T0));
        assert!(!out.drain(&mut sink, T0), "the rest fits in one budget");
        assert_eq!(sink.lines.len(), n);
        assert!(sink.lines.iter().all(|l| l.3.len() == 99));
    }

    #[test]
    fn lines_wait_while_the_sink_is_down_and_flush_in_order() {
        let (mut out, pipes) = ServiceOutput::new("svc").unwrap();
        let mut sink = FakeSink::down();
        write_all(&pipes.child_stdout, b"1\n2\n");
        out.drain(&mut sink, T0);
        write_all(&pipes.child_stderr, b"3\n");
        out.drain(&mut sink, T0);
        assert_eq!(out.buffered(), 3);
        assert_eq!(out.buffered_bytes(), 3);
        assert!(!out.flush(&mut sink, T0));
        sink.up = true;
        // New output while lines wait: the waiting ones go first.
        write_all(&pipes.child_stdout, b"4\n");
        out.drain(&mut sink, T0);
        assert_eq!(sink.texts(), ["1", "2", "3", "4"]);
        assert_eq!(sink.lines[2].0, Stream::Stderr);
        assert!(out.flush(&mut sink, T0));
        assert_eq!(out.buffered(), 0);
        assert_eq!(
            out.backlog.lines.capacity(),
            0,
            "buffer memory is given back"
        );
    }

    #[test]
    fn flush_stops_at_the_first_failure_and_keeps_order() {
        let (mut out, pipes) = ServiceOutput::new("svc").unwrap();
        let mut sink = FakeSink::down();
        write_all(&pipes.child_stdout, b"a\nb\nc\nd\n");
        out.drain(&mut sink, T0);
        assert_eq!(out.buffered(), 4);
        sink.up = true;
        sink.accept_then_down = Some(2);
        assert!(!out.flush(&mut sink, T0));
        assert_eq!(sink.texts(), ["a", "b"]);
        assert_eq!(out.buffered(), 2);
        sink.up = true;
        sink.accept_then_down = None;
        assert!(out.flush(&mut sink, T0));
        assert_eq!(sink.texts(), ["a", "b", "c", "d"]);
    }

    #[test]
    fn lines_beyond_the_line_bound_are_dropped_and_counted() {
        let (mut out, pipes) = ServiceOutput::new("svc").unwrap();
        let mut sink = FakeSink::down();
        let n = BUFFER_MAX_LINES + 44;
        let text: String = (0..n).map(|i| format!("{i}\n")).collect();
        write_all(&pipes.child_stdout, text.as_bytes());
        out.drain(&mut sink, T0);
        assert_eq!(out.buffered(), BUFFER_MAX_LINES);
        assert_eq!(out.dropped(), 44);
        sink.up = true;
        assert!(out.flush(&mut sink, T0));
        let expect: Vec<String> = (0..BUFFER_MAX_LINES).map(|i| i.to_string()).collect();
        assert_eq!(sink.texts(), expect, "the oldest lines are kept, in order");
    }

    #[test]
    fn lines_beyond_the_byte_bound_are_dropped_and_counted() {
        let (mut out, pipes) = ServiceOutput::new("svc").unwrap();
        let mut sink = FakeSink::down();
        // 1000-byte lines: 65 fit in 64 KiB, the rest are dropped.
        let line = [vec![b'q'; 1000], b"\n".to_vec()].concat();
        for _ in 0..60 {
            write_all(&pipes.child_stdout, &line);
        }
        out.drain(&mut sink, T0);
        for _ in 0..40 {
            write_all(&pipes.child_stdout, &line);
        }
        out.drain(&mut sink, T0);
        assert_eq!(out.buffered(), BUFFER_MAX_BYTES / 1000);
        assert_eq!(out.dropped(), 100 - (BUFFER_MAX_BYTES / 1000) as u64);
        assert!(out.buffered_bytes() <= BUFFER_MAX_BYTES);
    }

    #[test]
    fn drop_reports_come_at_most_once_per_interval() {
        let (mut out, pipes) = ServiceOutput::new("svc").unwrap();
        let mut sink = FakeSink::down();
        assert_eq!(out.take_drop_report(T0), None);
        assert_eq!(out.next_drop_report(), None);
        let fill: String = (0..BUFFER_MAX_LINES + 5)
            .map(|i| format!("{i}\n"))
            .collect();
        write_all(&pipes.child_stdout, fill.as_bytes());
        out.drain(&mut sink, T0);
        assert_eq!(out.next_drop_report(), Some(MonoTime::ZERO));
        let t1 = T0 + Duration::from_secs(1);
        assert_eq!(
            out.take_drop_report(t1),
            Some(5),
            "the first drop is reported at once"
        );
        assert_eq!(out.take_drop_report(t1), None);
        write_all(&pipes.child_stdout, b"x\ny\nz\n");
        out.drain(&mut sink, t1);
        assert_eq!(out.next_drop_report(), Some(t1 + DROP_REPORT_INTERVAL));
        assert_eq!(out.take_drop_report(t1 + Duration::from_secs(9)), None);
        assert_eq!(out.take_drop_report(t1 + DROP_REPORT_INTERVAL), Some(3));
        assert_eq!(out.take_drop_report(t1 + Duration::from_secs(60)), None);
        assert_eq!(out.dropped(), 8);
    }

    #[test]
    fn partial_last_line_is_forwarded_at_eof() {
        let (mut out, pipes) = ServiceOutput::new("svc").unwrap();
        let mut sink = FakeSink::up();
        write_all(&pipes.child_stdout, b"done\nno newline");
        write_all(&pipes.child_stderr, b"err tail");
        out.drain(&mut sink, T0);
        assert_eq!(sink.texts(), ["done"]);
        out.close_write_ends();
        assert!(!out.is_closed(), "the child's ends are still open");
        drop(pipes);
        out.drain(&mut sink, T0);
        assert!(out.is_closed());
        assert_eq!(sink.texts(), ["done", "no newline", "err tail"]);
        assert!(out.reopen().is_err());
    }

    #[test]
    fn finish_process_ends_the_partial_line_and_pipes_survive_restarts() {
        let (mut out, first) = ServiceOutput::new("svc").unwrap();
        let mut sink = FakeSink::up();
        out.set_pid(10);
        write_all(&first.child_stdout, b"first process, no newline");
        drop(first); // the process died
        out.finish_process(&mut sink, T0);
        out.set_pid(11);
        let second = out.reopen().unwrap();
        write_all(&second.child_stdout, b"second\n");
        out.drain(&mut sink, T0);
        assert!(!out.is_closed(), "the kept write ends hold the pipes open");
        assert_eq!(
            sink.lines
                .iter()
                .map(|l| (l.2, String::from_utf8_lossy(&l.3).into_owned()))
                .collect::<Vec<_>>(),
            vec![
                (10, "first process, no newline".to_string()),
                (11, "second".to_string())
            ]
        );
    }

    #[test]
    fn buffered_lines_keep_the_pid_they_were_read_with() {
        let (mut out, pipes) = ServiceOutput::new("svc").unwrap();
        let mut sink = FakeSink::down();
        out.set_pid(7);
        write_all(&pipes.child_stdout, b"old\n");
        out.finish_process(&mut sink, T0);
        out.set_pid(8);
        write_all(&pipes.child_stdout, b"new\n");
        out.drain(&mut sink, T0);
        sink.up = true;
        assert!(out.flush(&mut sink, T0));
        assert_eq!(
            sink.lines.iter().map(|l| l.2).collect::<Vec<_>>(),
            vec![7, 8]
        );
    }

    fn scratch(label: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "tether-output-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn recv_all(sock: &UnixDatagram) -> Vec<String> {
        sock.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn real_syslog_down_then_back_receives_buffered_lines_in_order() {
        let dir = scratch("syslog");
        let path = dir.join("log.sock");
        let mut syslog = Syslog::new(&path);
        let (mut out, pipes) = ServiceOutput::new("sensor").unwrap();
        out.set_pid(4321);
        write_all(&pipes.child_stdout, b"line 1\nline 2\n");
        write_all(&pipes.child_stderr, b"line 3\n");
        out.drain(&mut syslog, T0);
        assert_eq!(out.buffered(), 3, "no syslog listening: lines wait");
        let server = UnixDatagram::bind(&path).unwrap();
        // The Syslog reconnects at most once per second.
        let later = T0 + Duration::from_secs(2);
        assert!(out.flush(&mut syslog, later));
        let got = recv_all(&server);
        assert_eq!(got.len(), 3, "{got:?}");
        for (g, want) in got.iter().zip(["line 1", "line 2", "line 3"]) {
            assert!(g.ends_with(want), "{g:?} should end with {want:?}");
            assert!(g.contains("sensor[4321]"), "{g:?} should carry tag and pid");
        }
        // daemon facility (3): info = 3*8+6 = 30, err = 3*8+3 = 27.
        assert!(got[0].starts_with("<30>"), "{:?}", got[0]);
        assert!(got[2].starts_with("<27>"), "{:?}", got[2]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
