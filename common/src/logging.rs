//! The `log` facade backend every tether binary uses, and the syslog
//! transport the restarter also uses for service output.
//!
//! - [`Syslog`]: a non-blocking, reconnecting sender of RFC 3164-style
//!   datagrams (`<PRI>TAG[PID]: msg`) to a unix datagram socket (`/dev/log`).
//! - [`init`]: installs the global logger. Each record goes to syslog when it
//!   accepts; otherwise, when `[log] kmsg` is set, to `/dev/kmsg`; and a copy
//!   to stderr when `[log] stderr` is set (`tag[pid]: LEVEL msg`).
//!
//! Decisions where DESIGN.md is silent:
//! - ALERT: the `log` facade has no alert level. A record at `Error` with
//!   target [`ALERT_TARGET`] (`"alert"`) is sent with [`Severity::Alert`];
//!   write it with [`alert!`](crate::alert) or [`alert`].
//! - Levels: `Info` and above by default; the environment variable
//!   `TETHER_LOG` (`error`, `warn`, `info`, `debug`, `trace`) sets the level.
//! - Environment overrides, applied over the settings in [`init`] and
//!   [`set_settings`], so that a binary running on built-in defaults (a bad
//!   `tether.toml`) can still be kept off the host's `/dev/log` in tests:
//!   `TETHER_SYSLOG_SOCKET=PATH`, `TETHER_KMSG=0|1`, `TETHER_STDERR=0|1`.
//! - A record syslog refuses (down, or its queue full) goes to `/dev/kmsg`
//!   when enabled, since tether's own messages are rare and matter.
//! - The stderr copy is one `write(2)` per line and may block if stderr is a
//!   full pipe; it is meant for running by hand and tests, where the reader
//!   drains it. Appliances set `stderr = false` or point stderr at a console.
//! - A message is capped at [`MAX_MESSAGE`] bytes (after the header); newlines,
//!   carriage returns and NULs inside it become spaces, trailing ones are
//!   dropped. No timestamp: the syslog daemon stamps on receipt.
//! - Formatting a record uses a fixed stack buffer: logging allocates nothing
//!   after the first record (the syslog buffer is reserved once).
//! - The logger never panics: a poisoned lock is recovered, every I/O error
//!   is swallowed (there is nowhere left to report it).

use crate::clock::MonoTime;
use crate::config::LogSettings;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use log;

/// syslog facility `daemon`.
pub const FACILITY_DAEMON: u8 = 3;
/// The `log` target that marks an `Error` record as ALERT.
pub const ALERT_TARGET: &str = "alert";
/// Longest message body sent, in bytes, after the `<PRI>TAG[PID]: ` header.
pub const MAX_MESSAGE: usize = 1024;
/// Longest tag kept, in bytes.
pub const MAX_TAG: usize = 64;
/// At most one connection attempt (syslog) or open (kmsg) per this interval.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// The kernel log device.
pub const KMSG_PATH: &str = "/dev/kmsg";

/// syslog severities (RFC 5424 numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Severity {
    Emerg = 0,
    Alert,
    Crit,
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Severity {
    /// The severity of a `log` record: `Error`→Err (Alert with target
    /// [`ALERT_TARGET`]), `Warn`→Warning, `Info`→Info, `Debug`/`Trace`→Debug.
    pub fn of(level: log::Level, target: &str) -> Severity {
        match level {
            log::Level::Error if target == ALERT_TARGET => Severity::Alert,
            log::Level::Error => Severity::Err,
            log::Level::Warn => Severity::Warning,
            log::Level::Info => Severity::Info,
            log::Level::Debug | log::Level::Trace => Severity::Debug,
        }
    }

    /// Upper-case name for the stderr copy.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Emerg => "EMERG",
            Severity::Alert => "ALERT",
            Severity::Crit => "CRIT",
            Severity::Err => "ERROR",
            Severity::Warning => "WARN",
            Severity::Notice => "NOTICE",
            Severity::Info => "INFO",
            Severity::Debug => "DEBUG",
        }
    }

    /// `facility * 8 + severity`.
    pub fn pri(self, facility: u8) -> u8 {
        facility.wrapping_mul(8).wrapping_add(self as u8)
    }
}

/// Why a datagram was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No connection: the socket is missing or refuses, or the last
    /// connection attempt was less than [`RETRY_INTERVAL`] ago.
    Down,
    /// Connected, but the receiver's queue is full (`EAGAIN`/`ENOBUFS`).
    Busy,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Down => f.write_str("syslog socket is down"),
            SendError::Busy => f.write_str("syslog socket is busy (queue full)"),
        }
    }
}

impl std::error::Error for SendError {}

/// Appends `<PRI>TAG[PID]: msg` to `buf`: the tag capped at [`MAX_TAG`]
/// bytes with spaces, `:`, `[`, `]` and control bytes replaced by `_`; the
/// message capped at [`MAX_MESSAGE`] bytes, embedded newlines, CRs and NULs
/// turned into spaces, trailing ones dropped.
pub fn format_line(buf: &mut Vec<u8>, pri: u8, tag: &str, pid: u32, msg: &[u8]) {
    use std::io::Write;
    let _ = write!(buf, "<{}>", pri);
    for &b in tag.as_bytes().iter().take(MAX_TAG) {
        let bad = b.is_ascii_control() || matches!(b, b' ' | b':' | b'[' | b']');
        buf.push(if bad { b'_' } else { b });
    }
    let _ = write!(buf, "[{}]: ", pid);
    let mut body = &msg[..msg.len().min(MAX_MESSAGE)];
    while let Some((&last, rest)) = body.split_last() {
        if matches!(last, b'\n' | b'\r' | 0) {
            body = rest;
        } else {
            break;
        }
    }
    buf.extend(body.iter().map(|&b| {
        if matches!(b, b'\n' | b'\r' | 0) {
            b' '
        } else {
            b
        }
    }));
}

/// A non-blocking, reconnecting sender to a unix datagram syslog socket.
#[derive(Debug)]
pub struct Syslog {
    path: PathBuf,
    sock: Option<UnixDatagram>,
    last_attempt: Option<MonoTime>,
    buf: Vec<u8>,
}

impl Syslog {
    /// Does not connect: the first [`send`](Syslog::send) does.
    pub fn new(path: &Path) -> Syslog {
        Syslog {
            path: path.to_path_buf(),
            sock: None,
            last_attempt: None,
            buf: Vec::with_capacity(MAX_MESSAGE + MAX_TAG + 32),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a connection is open (the last send did not find it down).
    pub fn is_up(&self) -> bool {
        self.sock.is_some()
    }

    fn may_attempt(&self, now: MonoTime) -> bool {
        match self.last_attempt {
            None => true,
            Some(t) => now.saturating_since(t) >= RETRY_INTERVAL,
        }
    }

    /// One connection attempt. `UnixDatagram::unbound` is `SOCK_CLOEXEC`.
    fn connect(&mut self, now: MonoTime) -> bool {
        self.last_attempt = Some(now);
        let sock = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(_) => return false,
        };
        if sock.set_nonblocking(true).is_err() || sock.connect(&self.path).is_err() {
            return false;
        }
        self.sock = Some(sock);
        true
    }

    /// Sends `<PRI>TAG[PID]: msg` with facility `daemon`. Never blocks.
    /// When the connection is down it reconnects, at most once per
    /// [`RETRY_INTERVAL`] (measured on `now`).
    pub fn send(
        &mut self,
        severity: Severity,
        tag: &str,
        pid: u32,
        msg: &[u8],
        now: MonoTime,
    ) -> Result<(), SendError> {
        self.buf.clear();
        format_line(&mut self.buf, severity.pri(FACILITY_DAEMON), tag, pid, msg);
        let mut fresh = false;
        if self.sock.is_none() {
            if !self.may_attempt(now) || !self.connect(now) {
                return Err(SendError::Down);
            }
            fresh = true;
        }
        loop {
            let r = match &self.sock {
                Some(s) => s.send(&self.buf),
                None => return Err(SendError::Down),
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) => return Err(SendError::Busy),
                    _ => {
                        // ECONNREFUSED, ENOENT, ENOTCONN (the daemon went
                        // away or was restarted) and anything unexpected:
                        // drop the connection; one immediate reconnect if
                        // this one was not just made and the rate allows.
                        self.sock = None;
                        if fresh || !self.may_attempt(now) || !self.connect(now) {
                            return Err(SendError::Down);
                        }
                        fresh = true;
                    }
                },
            }
        }
    }
}

/// Where the stderr copy goes (a pipe in tests).
#[derive(Debug)]
enum ErrSink {
    Stderr,
    #[cfg(test)]
    Fd(OwnedFd),
}

/// The logger's state: targets and their connections.
#[derive(Debug)]
struct Backend {
    tag: &'static str,
    pid: u32,
    settings: LogSettings,
    syslog: Syslog,
    kmsg_path: PathBuf,
    kmsg: Option<OwnedFd>,
    kmsg_last_attempt: Option<MonoTime>,
    err_sink: ErrSink,
    line: Vec<u8>,
}

impl Backend {
    fn new(tag: &'static str, pid: u32, settings: LogSettings) -> Backend {
        Backend {
            tag,
            pid,
            syslog: Syslog::new(&settings.syslog_socket),
            settings,
            kmsg_path: PathBuf::from(KMSG_PATH),
            kmsg: None,
            kmsg_last_attempt: None,
            err_sink: ErrSink::Stderr,
            line: Vec::with_capacity(MAX_MESSAGE + MAX_TAG + 32),
        }
    }

    fn set_settings(&mut self, settings: LogSettings) {
        if settings.syslog_socket != self.settings.syslog_socket {
            self.syslog = Syslog::new(&settings.syslog_socket);
        }
        if !settings.kmsg {
            self.kmsg = None;
        }
        self.settings = settings;
    }

    fn emit(&mut self, severity: Severity, msg: &[u8], now: MonoTime) {
        let to_syslog = self.syslog.send(severity, self.tag, self.pid, msg, now);
        if to_syslog.is_err() && self.settings.kmsg {
            self.write_kmsg(severity, msg, now);
        }
        if self.settings.stderr {
            self.write_stderr(severity, msg);
        }
    }

    fn write_kmsg(&mut self, severity: Severity, msg: &[u8], now: MonoTime) {
        if self.kmsg.is_none() {
            let due = match self.kmsg_last_attempt {
                None => true,
                Some(t) => now.saturating_since(t) >= RETRY_INTERVAL,
            };
            if !due {
                return;
            }
            self.kmsg_last_attempt = Some(now);
            use nix::fcntl::OFlag;
            self.kmsg = nix::fcntl::open(
                &self.kmsg_path,
                OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
                nix::sys::stat::Mode::empty(),
            )
            .ok();
        }
        let Some(fd) = &self.kmsg else { return };
        self.line.clear();
        format_line(
            &mut self.line,
            severity.pri(FACILITY_DAEMON),
            self.tag,
            self.pid,
            msg,
        );
        self.line.push(b'\n');
        match nix::unistd::write(fd, &self.line) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => self.kmsg = None,
        }
    }

    fn write_stderr(&mut self, severity: Severity, msg: &[u8]) {
        use std::io::Write;
        self.line.clear();
        let _ = write!(
            self.line,
            "{}[{}]: {} ",
            self.tag,
            self.pid,
            severity.name()
        );
        // The same sanitising as a syslog line, minus the header.
        let start = self.line.len();
        format_line(&mut self.line, 0, "", 0, msg);
        let header = b"<0>[0]: ".len();
        self.line.drain(start..start + header);
        self.line.push(b'\n');
        let stderr;
        let fd = match &self.err_sink {
            ErrSink::Stderr => {
                stderr = io::stderr();
                stderr.as_fd()
            }
            #[cfg(test)]
            ErrSink::Fd(fd) => fd.as_fd(),
        };
        let mut rest: &[u8] = &self.line;
        while !rest.is_empty() {
            match nix::unistd::write(fd, rest) {
                Ok(0) => break,
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }
}

/// A fixed-size formatting buffer: text beyond its capacity is cut.
struct StackBuf {
    buf: [u8; MAX_MESSAGE],
    len: usize,
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MAX_MESSAGE - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

struct Logger {
    backend: Mutex<Option<Backend>>,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let severity = Severity::of(record.level(), record.target());
        // Formatted before taking the lock, so a Display impl that logs
        // cannot deadlock us.
        let mut text = StackBuf {
            buf: [0; MAX_MESSAGE],
            len: 0,
        };
        let _ = fmt::write(&mut text, *record.args());
        let now = MonoTime::now();
        let mut guard = self.backend.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = guard.as_mut() {
            b.emit(severity, &text.buf[..text.len], now);
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger {
    backend: Mutex::new(None),
};
static INSTALLED: OnceLock<()> = OnceLock::new();

fn env_flag(name: &str) -> Option<bool> {
    match std::env::var(name).ok()?.trim() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `settings` with the `TETHER_SYSLOG_SOCKET`, `TETHER_KMSG` and
/// `TETHER_STDERR` overrides applied.
pub fn effective_settings(settings: &LogSettings) -> LogSettings {
    let mut s = settings.clone();
    if let Some(p) = std::env::var_os("TETHER_SYSLOG_SOCKET") {
        if !p.is_empty() {
            s.syslog_socket = PathBuf::from(p);
        }
    }
    if let Some(k) = env_flag("TETHER_KMSG") {
        s.kmsg = k;
    }
    if let Some(e) = env_flag("TETHER_STDERR") {
        s.stderr = e;
    }
    s
}

/// The level `TETHER_LOG` asks for; `Info` when unset or not understood.
pub fn level_from_env() -> log::LevelFilter {
    std::env::var("TETHER_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Info)
}

/// Installs the global logger for a binary tagged `tag` (e.g.
/// `tether-watchdogd`). Calling it again only changes the settings.
pub fn init(tag: &'static str, settings: &LogSettings) {
    {
        let mut guard = LOGGER.backend.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(b) => b.set_settings(effective_settings(settings)),
            None => {
                *guard = Some(Backend::new(
                    tag,
                    std::process::id(),
                    effective_settings(settings),
                ))
            }
        }
    }
    if INSTALLED.set(()).is_ok() {
        let _ = log::set_logger(&LOGGER);
    }
    log::set_max_level(level_from_env());
}

/// Switches the targets (after a config reload or a fall-back to defaults).
/// Does nothing before [`init`].
pub fn set_settings(settings: &LogSettings) {
    let mut guard = LOGGER.backend.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = guard.as_mut() {
        b.set_settings(effective_settings(settings));
    }
}

/// Logs at ALERT (see the module docs).
pub fn alert(args: fmt::Arguments<'_>) {
    log::error!(target: ALERT_TARGET, "{}", args);
}

/// `alert!("...", args)`: like `log::error!` but sent at syslog ALERT.
#[macro_export]
macro_rules! alert {
    ($($arg:tt)+) => {
        $crate::logging::log::error!(target: $crate::logging::ALERT_TARGET, $($arg)+)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tmpdir(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("tether-logtest-{}-{}", std::process::id(), name));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    fn recv(sock: &UnixDatagram) -> Option<String> {
        let mut buf = [0u8; 4096];
        sock.recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[test]
    fn line_has_pri_tag_pid_and_sanitised_body() {
        let mut b = Vec::new();
        format_line(
            &mut b,
            Severity::Err.pri(FACILITY_DAEMON),
            "svc a",
            42,
            b"one\ntwo\0three\r\n\n",
        );
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "<27>svc_a[42]: one two three"
        );
        assert_eq!(Severity::Alert.pri(FACILITY_DAEMON), 25);
        assert_eq!(Severity::Debug.pri(FACILITY_DAEMON), 31);
    }

    #[test]
    fn long_messages_are_capped_after_the_header() {
        let mut b = Vec::new();
        format_line(&mut b, 30, "t", 1, &[b'x'; 5000]);
        assert_eq!(b.len(), "<30>t[1]: ".len() + MAX_MESSAGE);
        let mut b = Vec::new();
        format_line(&mut b, 30, &"y".repeat(500), 1, b"m");
        assert_eq!(b.len(), "<30>".len() + MAX_TAG + "[1]: m".len());
    }

    #[test]
    fn levels_map_to_severities() {
        assert_eq!(Severity::of(log::Level::Error, "x"), Severity::Err);
        assert_eq!(
            Severity::of(log::Level::Error, ALERT_TARGET),
            Severity::Alert
        );
        assert_eq!(
            Severity::of(log::Level::Warn, ALERT_TARGET),
            Severity::Warning
        );
        assert_eq!(Severity::of(log::Level::Info, "x"), Severity::Info);
        assert_eq!(Severity::of(log::Level::Debug, "x"), Severity::Debug);
        assert_eq!(Severity::of(log::Level::Trace, "x"), Severity::Debug);
    }

    #[test]
    fn syslog_sends_datagrams_to_the_socket() {
        let d = tmpdir("send");
        let path = d.join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut s = Syslog::new(&path);
        assert!(!s.is_up(), "connects lazily");
        s.send(Severity::Info, "tether-test", 7, b"hello", at(0))
            .unwrap();
        assert!(s.is_up());
        assert_eq!(recv(&server).as_deref(), Some("<30>tether-test[7]: hello"));
    }

    #[test]
    fn syslog_down_is_reported_and_reconnects_at_most_once_per_second() {
        let d = tmpdir("reconnect");
        let path = d.join("log.sock");
        let mut s = Syslog::new(&path);
        // No socket yet: down.
        assert_eq!(
            s.send(Severity::Info, "t", 1, b"a", at(0)),
            Err(SendError::Down)
        );
        let server = UnixDatagram::bind(&path).unwrap();
        // Within a second of the last attempt: no new attempt, still down.
        assert_eq!(
            s.send(Severity::Info, "t", 1, b"b", at(500)),
            Err(SendError::Down)
        );
        s.send(Severity::Info, "t", 1, b"c", at(1000)).unwrap();
        assert_eq!(recv(&server).as_deref(), Some("<30>t[1]: c"));
        // The daemon goes away: refused, connection dropped.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            s.send(Severity::Info, "t", 1, b"d", at(1500)),
            Err(SendError::Down)
        );
        assert!(!s.is_up());
        // A second later: one attempt, which fails (no socket yet).
        assert_eq!(
            s.send(Severity::Info, "t", 1, b"e", at(2100)),
            Err(SendError::Down)
        );
        // It comes back (a new socket at the same path); the next attempt
        // waits a second after the last one.
        let server = UnixDatagram::bind(&path).unwrap();
        assert_eq!(
            s.send(Severity::Info, "t", 1, b"e", at(2600)),
            Err(SendError::Down)
        );
        s.send(Severity::Info, "t", 1, b"f", at(3100)).unwrap();
        assert_eq!(recv(&server).as_deref(), Some("<30>t[1]: f"));
    }

    #[test]
    fn a_restarted_syslog_daemon_is_reached_again_without_losing_the_message() {
        let d = tmpdir("restart");
        let path = d.join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut s = Syslog::new(&path);
        s.send(Severity::Info, "t", 1, b"a", at(0)).unwrap();
        drop(server);
        std::fs::remove_file(&path).unwrap();
        let server = UnixDatagram::bind(&path).unwrap();
        // More than a second after the last attempt: the send reconnects
        // at once and delivers.
        s.send(Severity::Info, "t", 1, b"b", at(5000)).unwrap();
        assert_eq!(recv(&server).as_deref(), Some("<30>t[1]: b"));
    }

    #[test]
    fn a_full_syslog_queue_is_busy_and_never_blocks() {
        let d = tmpdir("busy");
        let path = d.join("log.sock");
        let _server = UnixDatagram::bind(&path).unwrap();
        let mut s = Syslog::new(&path);
        let mut busy = false;
        for i in 0..100_000 {
            match s.send(Severity::Info, "t", 1, &[b'x'; 512], at(i)) {
                Ok(()) => {}
                Err(SendError::Busy) => {
                    busy = true;
                    break;
                }
                Err(SendError::Down) => panic!("a full queue is not down"),
            }
        }
        assert!(busy, "an unread socket must fill up");
        assert!(s.is_up());
    }

    fn backend(name: &str, kmsg: bool, stderr: bool) -> (Backend, PathBuf, std::fs::File) {
        let d = tmpdir(name);
        let settings = LogSettings {
            syslog_socket: d.join("log.sock"),
            kmsg,
            stderr,
        };
        let mut b = Backend::new("tether-test", 9, settings);
        b.kmsg_path = d.join("kmsg");
        std::fs::write(&b.kmsg_path, b"").unwrap();
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .unwrap();
        b.err_sink = ErrSink::Fd(w);
        (b, d, std::fs::File::from(r))
    }

    fn read_all(mut f: &std::fs::File) -> String {
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        s
    }

    #[test]
    fn records_go_to_kmsg_while_syslog_is_down_and_to_syslog_when_up() {
        let (mut b, d, err) = backend("fallback", true, true);
        b.emit(Severity::Alert, b"layer restarter silent", at(0));
        let kmsg = std::fs::read_to_string(d.join("kmsg")).unwrap();
        assert_eq!(kmsg, "<25>tether-test[9]: layer restarter silent\n");
        assert_eq!(
            read_all(&err),
            "tether-test[9]: ALERT layer restarter silent\n"
        );
        let server = UnixDatagram::bind(d.join("log.sock")).unwrap();
        b.emit(Severity::Info, b"up again", at(2000));
        assert_eq!(
            recv(&server).as_deref(),
            Some("<30>tether-test[9]: up again")
        );
        let kmsg = std::fs::read_to_string(d.join("kmsg")).unwrap();
        assert!(
            !kmsg.contains("up again"),
            "syslog accepted: not duplicated to kmsg"
        );
        assert_eq!(read_all(&err), "tether-test[9]: INFO up again\n");
    }

    #[test]
    fn kmsg_and_stderr_are_off_when_disabled() {
        let (mut b, d, err) = backend("disabled", false, false);
        b.emit(Severity::Err, b"nowhere", at(0));
        assert_eq!(std::fs::read_to_string(d.join("kmsg")).unwrap(), "");
        assert_eq!(read_all(&err), "");
        // Switching settings on takes effect at once.
        let mut s = b.settings.clone();
        s.stderr = true;
        b.set_settings(s);
        b.emit(Severity::Warning, b"now\nvisible", at(10));
        assert_eq!(read_all(&err), "tether-test[9]: WARN now visible\n");
    }
}
