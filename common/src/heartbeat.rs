//! The heartbeat protocol (docs/PROTOCOL.md): one byte per beat on a
//! non-blocking pipe, written from the writer's main loop.

use crate::clock::MonoTime;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

/// What a heartbeat byte says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// `.`
    Alive,
    /// `R`: the writer asks the reader for an orderly reboot.
    Reboot,
    /// `P`: poweroff.
    Poweroff,
    /// `H`: halt.
    Halt,
    /// `U`: the restarter asks init to re-exec its own binary in place,
    /// keeping its layer children and descriptors (`tetherctl upgrade init`).
    Upgrade,
    /// `W`: the restarter asks init to restart watchdogd (SIGKILL, no magic
    /// close, so the hardware stays armed): `tetherctl upgrade watchdogd`.
    RestartWatchdogd,
    /// Any other byte: ignored (logged once by the reader), still a sign of life.
    Unknown(u8),
}

impl Code {
    pub fn from_byte(b: u8) -> Code {
        match b {
            b'.' => Code::Alive,
            b'R' => Code::Reboot,
            b'P' => Code::Poweroff,
            b'H' => Code::Halt,
            b'U' => Code::Upgrade,
            b'W' => Code::RestartWatchdogd,
            other => Code::Unknown(other),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Code::Alive => b'.',
            Code::Reboot => b'R',
            Code::Poweroff => b'P',
            Code::Halt => b'H',
            Code::Upgrade => b'U',
            Code::RestartWatchdogd => b'W',
            Code::Unknown(b) => b,
        }
    }
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    Written,
    /// The pipe is full (the reader is slow or stopped); nothing was written
    /// and that is fine: the reader already has unread beats.
    PipeFull,
}

/// The write end of one heartbeat pipe. Never blocks.
#[derive(Debug)]
pub struct Writer {
    name: String,
    fd: OwnedFd,
}

impl Writer {
    /// Takes an `O_NONBLOCK` write end (it is set non-blocking here too).
    pub fn new(name: &str, fd: OwnedFd) -> std::io::Result<Writer> {
        crate::sys::set_nonblocking(fd.as_fd(), true)?;
        Ok(Writer {
            name: name.to_string(),
            fd,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor (to hand it on over an `execve` in place).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Writes one byte. `EAGAIN` is [`Sent::PipeFull`]; `EINTR` is retried;
    /// other errors (e.g. `EPIPE`) are returned for the caller to log.
    pub fn send(&self, code: Code) -> std::io::Result<Sent> {
        let buf = [code.to_byte()];
        loop {
            match nix::unistd::write(&self.fd, &buf) {
                Ok(_) => return Ok(Sent::Written),
                Err(nix::errno::Errno::EAGAIN) => return Ok(Sent::PipeFull),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for Writer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What one drain of a reader found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Bytes read (each is a sign of life).
    pub bytes: usize,
    /// Requests (`R`, `P`, `H`, `U`, `W`) in arrival order, at most a few kept.
    pub requests: Vec<Code>,
    /// Unknown bytes seen for the first time by this reader (to log once).
    pub new_unknown: Vec<u8>,
    /// The write side is gone (EOF). Cannot happen while init holds both
    /// ends, but a reader must not spin on it.
    pub eof: bool,
}

/// The read end of one heartbeat pipe with its bookkeeping.
#[derive(Debug)]
pub struct Reader {
    name: String,
    fd: OwnedFd,
    last_beat: Option<MonoTime>,
    seen_unknown: [bool; 256],
}

/// Bytes read per `read(2)` call while draining.
const DRAIN_CHUNK: usize = 256;
/// Requests kept per drain; more in one drain are redundant.
const MAX_REQUESTS: usize = 8;

impl Reader {
    /// Takes a read end (set non-blocking here). `started` counts as the
    /// first beat, so a layer gets a full timeout to send its first byte.
    pub fn new(name: &str, fd: OwnedFd, started: MonoTime) -> std::io::Result<Reader> {
        crate::sys::set_nonblocking(fd.as_fd(), true)?;
        Ok(Reader {
            name: name.to_string(),
            fd,
            last_beat: Some(started),
            seen_unknown: [false; 256],
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// When the last byte arrived (or the reader was created).
    pub fn last_beat(&self) -> Option<MonoTime> {
        self.last_beat
    }

    /// Sets the last-beat time, e.g. to give a restarted writer a fresh
    /// start.
    pub fn reset(&mut self, now: MonoTime) {
        self.last_beat = Some(now);
    }

    /// How long the writer has been silent at `now`.
    pub fn silence(&self, now: MonoTime) -> Duration {
        match self.last_beat {
            Some(t) => now.saturating_since(t),
            None => now.as_duration(),
        }
    }

    /// Reads every available byte without blocking and records `at` as the
    /// last beat if any arrived.
    ///
    /// `at` is the moment the bytes are *credited*: pass [`Watch::credit`],
    /// not the time of the read, so a reader that stalled never makes a
    /// silent writer look fresh (DESIGN.md "Heartbeats"). Passing the time
    /// of the read is right only for a loop that cannot stall.
    pub fn drain(&mut self, at: MonoTime) -> std::io::Result<Drained> {
        let mut out = Drained::default();
        let mut buf = [0u8; DRAIN_CHUNK];
        loop {
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(0) => {
                    out.eof = true;
                    break;
                }
                Ok(n) => {
                    out.bytes += n;
                    for &b in buf.iter().take(n) {
                        self.account(b, &mut out);
                    }
                    if n < buf.len() {
                        break;
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if out.bytes > 0 {
            self.last_beat = Some(at);
        }
        Ok(out)
    }

    fn account(&mut self, b: u8, out: &mut Drained) {
        match Code::from_byte(b) {
            Code::Alive => {}
            Code::Unknown(u) => {
                let seen = &mut self.seen_unknown[usize::from(u)];
                if !*seen {
                    *seen = true;
                    out.new_unknown.push(u);
                }
            }
            req => {
                if out.requests.len() < MAX_REQUESTS {
                    out.requests.push(req);
                }
            }
        }
    }
}

impl AsFd for Reader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// How long a reader's loop may overrun its planned wait, or spend between
/// the end of one turn and the start of its next wait, and still count as
/// on time. Beyond it the turn is a stall (stopped, paged out, blocked in a
/// write) and bytes found are credited to the start of the turn.
pub const TURN_SLACK: Duration = Duration::from_millis(50);

/// When bytes found after a wake-up were written, at the latest, for a
/// reader whose loop is one `poll(2)` per turn (DESIGN.md "Heartbeats":
/// staleness counts from the writer's last write).
///
/// The loop calls [`Watch::waiting`] just before `poll` with its timeout,
/// [`Watch::credit`] with the time read after `poll` returned (the moment
/// to pass to [`Reader::drain`] for every readable pipe), and
/// [`Watch::drained`] once every readable pipe has been drained.
///
/// The rule: if the turn was on time (the previous turn ended at most
/// [`TURN_SLACK`] before the wait began, and `poll` returned no later than
/// its timeout plus [`TURN_SLACK`]), `poll` was watching the pipes all along
/// and woke for the first byte, so bytes are credited at the wake-up.
/// Otherwise the loop stalled somewhere in the turn and a byte may have
/// been written at any moment of it: bytes are credited to the moment every
/// pipe was last seen empty, the end of the previous turn. Either way a
/// credit is never later than the write it stands for by more than one
/// on-time turn, however long the stall; and never later than the write at
/// all after a stall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Watch {
    seen_empty: MonoTime,
    wait_from: MonoTime,
    wait_for: Duration,
}

impl Watch {
    /// Every pipe is empty (or its bytes are credited) at `now`.
    pub fn new(now: MonoTime) -> Watch {
        Watch {
            seen_empty: now,
            wait_from: now,
            wait_for: Duration::ZERO,
        }
    }

    /// The loop is about to wait at most `timeout` from `now`.
    pub fn waiting(&mut self, now: MonoTime, timeout: Duration) {
        self.wait_from = now;
        self.wait_for = timeout;
    }

    /// Whether the turn that woke at `woke` was on time (see the type doc).
    pub fn on_time(&self, woke: MonoTime) -> bool {
        self.wait_from.saturating_since(self.seen_empty) <= TURN_SLACK
            && woke.saturating_since(self.wait_from) <= self.wait_for.saturating_add(TURN_SLACK)
    }

    /// The moment bytes found in a pipe after the wake-up at `woke` are
    /// credited.
    pub fn credit(&self, woke: MonoTime) -> MonoTime {
        if self.on_time(woke) {
            woke
        } else {
            self.seen_empty
        }
    }

    /// Every readable pipe was drained after the wake-up at `woke`: pipes
    /// were empty then (bytes arriving since will be found next turn).
    pub fn drained(&mut self, woke: MonoTime) {
        self.seen_empty = self.seen_empty.max(woke);
    }

    /// Every stored time moved `by` earlier, ages beyond `horizon` clamped
    /// (see [`MonoTime::rebased`]); for the model checker only. A credit
    /// flows into the gate's beat times, so `horizon` must be at least the
    /// largest stale timeout.
    pub fn rebase(&mut self, by: Duration, now: MonoTime, horizon: Duration) {
        self.seen_empty = self.seen_empty.rebased(by, now, horizon);
        self.wait_from = self.wait_from.rebased(by, now, horizon);
    }
}

/// A heartbeat pipe, both ends `O_CLOEXEC | O_NONBLOCK`.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    Ok((r, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Reader, Writer) {
        let (r, w) = pipe().unwrap();
        (
            Reader::new("layer", r, MonoTime::ZERO).unwrap(),
            Writer::new("layer", w).unwrap(),
        )
    }

    #[test]
    fn codes_round_trip() {
        for b in 0..=255u8 {
            assert_eq!(Code::from_byte(b).to_byte(), b);
        }
    }

    #[test]
    fn upgrade_codes_have_their_bytes() {
        assert_eq!(Code::from_byte(b'U'), Code::Upgrade);
        assert_eq!(Code::from_byte(b'W'), Code::RestartWatchdogd);
        assert_eq!(Code::Upgrade.to_byte(), b'U');
        assert_eq!(Code::RestartWatchdogd.to_byte(), b'W');
        let (mut r, w) = pair();
        w.send(Code::Upgrade).unwrap();
        w.send(Code::Alive).unwrap();
        w.send(Code::RestartWatchdogd).unwrap();
        let d = r.drain(MonoTime::ZERO).unwrap();
        assert_eq!(d.requests, vec![Code::Upgrade, Code::RestartWatchdogd]);
        assert!(d.new_unknown.is_empty());
    }

    #[test]
    fn reader_records_last_beat_and_requests() {
        let (mut r, w) = pair();
        let t = MonoTime::from_duration(Duration::from_secs(5));
        assert_eq!(r.silence(t), Duration::from_secs(5));
        w.send(Code::Alive).unwrap();
        w.send(Code::Reboot).unwrap();
        let d = r.drain(t).unwrap();
        assert_eq!(d.bytes, 2);
        assert_eq!(d.requests, vec![Code::Reboot]);
        assert_eq!(r.last_beat(), Some(t));
        assert_eq!(
            r.silence(t + Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        // Nothing new: the last beat stays where it was.
        let d = r.drain(t + Duration::from_secs(1)).unwrap();
        assert_eq!(d.bytes, 0);
        assert_eq!(r.last_beat(), Some(t));
    }

    #[test]
    fn unknown_bytes_are_reported_once() {
        let (mut r, w) = pair();
        w.send(Code::Unknown(b'x')).unwrap();
        w.send(Code::Unknown(b'x')).unwrap();
        let d = r.drain(MonoTime::ZERO).unwrap();
        assert_eq!(d.new_unknown, vec![b'x']);
        w.send(Code::Unknown(b'x')).unwrap();
        assert!(r.drain(MonoTime::ZERO).unwrap().new_unknown.is_empty());
    }

    #[test]
    fn a_full_pipe_never_blocks_the_writer() {
        let (mut r, w) = pair();
        let mut full = false;
        for _ in 0..1_000_000 {
            if w.send(Code::Alive).unwrap() == Sent::PipeFull {
                full = true;
                break;
            }
        }
        assert!(full, "a pipe must fill up long before a million bytes");
        let d = r.drain(MonoTime::ZERO).unwrap();
        assert!(d.bytes >= 4096);
        assert_eq!(w.send(Code::Alive).unwrap(), Sent::Written);
    }

    #[test]
    fn eof_is_reported_when_the_writer_is_gone() {
        let (mut r, w) = pair();
        drop(w);
        assert!(r.drain(MonoTime::ZERO).unwrap().eof);
    }

    fn t(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    #[test]
    fn an_on_time_turn_credits_bytes_at_the_wake_up() {
        let mut w = Watch::new(t(1000));
        w.waiting(t(1001), Duration::from_millis(100));
        // Woken by the byte after 40 ms of a 100 ms wait.
        assert_eq!(w.credit(t(1041)), t(1041));
        w.drained(t(1041));
        // A wait that ran out on time (scheduling latency within the slack).
        w.waiting(t(1042), Duration::from_millis(100));
        assert_eq!(w.credit(t(1150)), t(1150));
    }

    /// DESIGN.md "Heartbeats", the stalled reader: stopped from 1.0 s to
    /// 2.5 s in the middle of a 100 ms wait, a byte written at 1.1 s is
    /// credited no later than the moment the pipe was last seen empty
    /// (0.95 s), not at the drain (2.5 s).
    #[test]
    fn bytes_found_after_a_stall_are_credited_when_the_pipe_was_last_seen_empty() {
        let mut w = Watch::new(t(950));
        w.waiting(t(951), Duration::from_millis(100));
        assert!(!w.on_time(t(2500)));
        assert_eq!(w.credit(t(2500)), t(950));
        let (r, wr) = pipe().unwrap();
        let mut r = Reader::new("init", r, t(0)).unwrap();
        let wr = Writer::new("init", wr).unwrap();
        wr.send(Code::Alive).unwrap();
        r.drain(w.credit(t(2500))).unwrap();
        assert_eq!(r.last_beat(), Some(t(950)));
        assert_eq!(r.silence(t(2500)), Duration::from_millis(1550));
        // The next turn starts from the wake-up.
        w.drained(t(2500));
        w.waiting(t(2501), Duration::from_millis(100));
        assert_eq!(w.credit(t(2520)), t(2520));
    }

    /// A stall between two waits (a blocking write in the loop) is a stall
    /// too, even when the wait itself is short.
    #[test]
    fn a_stall_before_the_wait_is_a_stall() {
        let mut w = Watch::new(t(1000));
        w.waiting(t(2000), Duration::from_millis(100));
        assert_eq!(w.credit(t(2000)), t(1000));
    }
}
