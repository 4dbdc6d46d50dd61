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
            other => Code::Unknown(other),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Code::Alive => b'.',
            Code::Reboot => b'R',
            Code::Poweroff => b'P',
            Code::Halt => b'H',
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
    /// Requests (`R`, `P`, `H`) in arrival order, at most a few kept.
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

    /// Reads every available byte without blocking and records `now` as the
    /// last beat if any arrived.
    pub fn drain(&mut self, now: MonoTime) -> std::io::Result<Drained> {
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
            self.last_beat = Some(now);
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
}
