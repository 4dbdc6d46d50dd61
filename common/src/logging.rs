//! The `log` facade backend every tether binary uses, and the syslog
//! transport the restarter also uses for service output.
//!
//! - [`Syslog`]: a non-blocking, reconnecting sender of RFC 3164-style
//!   datagrams (`<PRI>TAG[PID]: msg`) to a unix datagram socket (`/dev/log`).
//! - [`init`]: installs the global logger. Each record goes to syslog when it
//!   accepts; when syslog is busy, to a backlog sent later in order; when
//!   syslog is down, to `/dev/kmsg` if `[log] kmsg` is set; and a copy to
//!   stderr when `[log] stderr` is set (`tag[pid]: LEVEL msg`).
//! - [`flush_pending`] and [`pending`]: for event loops, to send the backlog
//!   without waiting for the next record. A loop calls `flush_pending(now)`
//!   once per iteration and, when it returns `Some(t)`, wakes by `t` at the
//!   latest (its poll timeout). Without a caller the backlog is still tried
//!   before every new record.
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
//!   `TETHER_SYSLOG_SOCKET=PATH`, `TETHER_KMSG=0|1`, `TETHER_STDERR=0|1`,
//!   `TETHER_LOG_FORMAT=rfc3164|rfc5424`.
//! - `[log] format = "rfc5424"`: lines are RFC 5424 with a MSGID from a
//!   fixed vocabulary ([`MsgId`], chosen by the call site's `log` target)
//!   and the record's key-value pairs as structured data `[tether@32473
//!   ...]` ([`SD_ID`]; 32473 is a documentation PEN, a placeholder), `-`
//!   when it has none. Service output sent by [`Syslog::send`] has MSGID
//!   `OUTPUT` and the service name as APP-NAME. The timestamp is the wall
//!   clock at formatting (UTC, microseconds), the hostname read at start
//!   (and at [`set_settings`]).
//! - Busy syslog (its queue full, e.g. 1000 services starting at once):
//!   tether's own messages matter and must not be silently lost, so a record
//!   syslog refuses as busy joins a backlog: a ring of [`BACKLOG_BYTES`]
//!   (64 KiB) of formatted lines, allocated on the first busy refusal and
//!   never again (no allocation per record). While the backlog is not empty
//!   every new record is appended behind it, after trying to send it: lines
//!   reach syslog in the order they were logged. A backlogged line is not
//!   also written to kmsg (it would appear twice).
//! - Backlog full: the NEWEST line is dropped. The start of a burst usually
//!   carries its cause, the lines already queued stay one contiguous run,
//!   and the gap is a single place in the stream. Drops are counted; the
//!   line `N log line(s) dropped (syslog busy)` (WARNING) takes the gap's
//!   place, queued as soon as it and the next line fit, or sent after the
//!   last queued line when nothing else comes. With `[log] kmsg` on, each
//!   dropped line goes to kmsg at once instead of being lost (the notice
//!   still counts it: it is missing from syslog).
//! - Down syslog (missing socket, refused, or the reconnect not yet due):
//!   as before, a record goes to kmsg when enabled, else it is lost. A
//!   backlog that meets a down syslog goes to kmsg in order (with its drop
//!   notice) when kmsg is on; when kmsg is off it is kept (bounded) for a
//!   restarted daemon, new records joining behind it, and [`flush_pending`]
//!   asks to be called at the next reconnect attempt. A new syslog socket
//!   path from [`set_settings`] inherits the backlog.
//! - [`flush_pending`] never blocks and never sleeps: while syslog is busy it
//!   asks to be called again after [`BACKLOG_RETRY`] (10 ms).
//! - The stderr copy (the console, as PID 1 and for both layers, which
//!   inherit it) never blocks: a console that stops taking output (a serial
//!   line on XOFF or with RTS/CTS pulled, a pipe nobody reads) costs
//!   dropped, counted lines, never a late beat or pet. See "The stderr
//!   copy" below.
//! - A message is capped at [`MAX_MESSAGE`] bytes (after the header); newlines,
//!   carriage returns and NULs inside it become spaces, trailing ones are
//!   dropped. No timestamp: the syslog daemon stamps on receipt.
//! - Formatting a record uses a fixed stack buffer: logging allocates nothing
//!   after the first record (line buffers are reserved once, the backlog
//!   ring on the first busy refusal).
//! - The logger never panics: a poisoned lock is recovered, every I/O error
//!   is swallowed (there is nowhere left to report it).
//!
//! # The stderr copy
//!
//! - Non-blocking without touching anybody else: `O_NONBLOCK` is a flag of
//!   the *open file description*, which fd 2 shares with every process that
//!   inherited it (init, both layers, a shell or `unshare` that started
//!   tether by hand, a terminal's other programs). Setting it on fd 2
//!   (`fcntl(F_SETFL)`) would hand `EAGAIN` to all of them, so it is never
//!   done. Instead, at the first stderr line, the logger opens the same
//!   file again, `/proc/self/fd/2` with `O_WRONLY | O_NONBLOCK | O_NOCTTY |
//!   O_CLOEXEC`: a new open file description of its own (the same pipe,
//!   FIFO, tty or `/dev/console`), non-blocking, never becoming the
//!   controlling tty, and never inherited by a child (services and layers
//!   get fd 2 as it was, unchanged; a service's own stderr is its output
//!   pipe anyway). fd 2 itself is only read (`fstat`), never written while
//!   this open exists. The open is checked to be the same file as fd 2
//!   (device and inode).
//! - Other kinds of fd 2: a socket (run under a service manager) is written
//!   with `send(MSG_DONTWAIT | MSG_NOSIGNAL)`, non-blocking per call, flags
//!   untouched; a regular file or block device is written as it is (a
//!   reopen would have its own offset and overwrite the file, and
//!   `O_NONBLOCK` means nothing there: a file has no reader to wait for);
//!   a closed fd 2 gets no copy at all, ever (a number reused later by some
//!   other descriptor is never written to).
//! - When the reopen fails (no `/proc` mounted yet, a FIFO with no reader,
//!   a tty the user may not open), the line is dropped and counted, and the
//!   reopen is tried again at most once per [`RETRY_INTERVAL`] while fd 2 is
//!   still the same file (device and inode); if fd 2 is another file by
//!   then, the copy stops for good (that descriptor is not stderr). There
//!   is no blocking fall-back to fd 2.
//! - A line that does not fit (`EAGAIN`: pipe full, tty output buffer full
//!   on XOFF) is dropped and counted; there is no queue of console lines
//!   (syslog and kmsg carry the record anyway). The next line that is
//!   written carries the count as a suffix, in the same `write(2)`:
//!   `tag[pid]: LEVEL message (N console lines dropped)`, or
//!   `(1 console line dropped)`, after the message (which keeps its
//!   [`MAX_MESSAGE`] cap). A count with no later line stays untold on the
//!   console (every layer logs at least its liveness line each
//!   `liveness_interval`).
//! - Partial writes: a line is at most [`MAX_STDERR_LINE`] bytes, below
//!   `PIPE_BUF`, so a pipe takes it whole or not at all. A tty may take
//!   part of it: the rest is kept and written before anything else, at the
//!   next line or [`flush_pending`] call; until it is out, new lines are
//!   dropped and counted (their count follows in the next whole line). So
//!   a line of ours is never cut by a later line of ours, and the console
//!   gets whole lines, only later. (Other processes writing the same
//!   console may still land inside a half-written line, as with any shared
//!   console.) [`flush_pending`] does not ask to be called again for it: a
//!   stuck console must not make a loop spin.
//! - The drop-and-count rules are `ConsoleCopy`, a core with no system
//!   calls; the write is passed in.
//! - Panics: [`init`] replaces the default panic hook (a blocking write to
//!   fd 2, which would hold a panicking loop on a stalled console, init's
//!   before it can recover) by one that logs the panic's place and message
//!   as one CRIT record through this logger; see `log_panic`.

use crate::clock::MonoTime;
use crate::config::{LogFormat, LogSettings};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
/// Size of the backlog of tether's own lines that syslog refused as busy:
/// formatted lines plus a 2-byte length each, e.g. about 600 lines of
/// 100 bytes. Allocated on the first busy refusal, never again.
pub const BACKLOG_BYTES: usize = 64 * 1024;
/// How soon [`flush_pending`] asks to be called again while syslog is busy.
pub const BACKLOG_RETRY: Duration = Duration::from_millis(10);

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

/// The private enterprise number in tether's SD-ID (`tether@32473`).
/// 32473 is the PEN RFC 5612 reserves for documentation and examples: a
/// PLACEHOLDER. A vendor shipping tether puts its own PEN here.
pub const PEN: u32 = 32473;
/// The SD-ID of tether's structured data element.
pub const SD_ID: &str = "tether@32473";
/// Longest structured data element sent (bytes); parameters that do not
/// fit whole are left out.
pub const MAX_SD: usize = 512;
/// Longest HOSTNAME sent (RFC 5424 allows 255; a longer one is cut).
pub const MAX_HOST: usize = 64;
/// Longest MSGID (RFC 5424).
pub const MAX_MSGID: usize = 32;
/// Longest APP-NAME (RFC 5424).
pub const MAX_APP_NAME: usize = 48;

/// The MSGID vocabulary of RFC 5424 lines (`[log] format = "rfc5424"`).
///
/// A call site chooses it with the `log` target of the same name in lower
/// case, e.g. `log::info!(target: "liveness", layer = "init", state = "ok";
/// "liveness: ...")`; its key-value pairs become the structured data
/// `[tether@32473 layer="init" state="ok"]`. Records at `Error` with target
/// `alert` are `ALERT`; any other target is `LOG`. The vocabulary is fixed
/// (collectors filter on it): adding a word is an interface change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgId {
    /// A component (layer or service) starting.
    Start,
    /// A component stopping on request.
    Stop,
    /// The periodic liveness summary line of a layer.
    Liveness,
    /// How the previous boot ended, or a reset reason being recorded.
    Reset,
    /// `LOG_ALERT`: petting stopped, a reset is coming.
    Alert,
    /// A service or layer exited (code or signal).
    Exit,
    /// Any other state change (ready, failed, petting resumed).
    State,
    /// Configuration loaded, reloaded or refused.
    Config,
    /// A service's output line (sent by the restarter, APP-NAME = service).
    Output,
    /// `N log line(s) dropped` notices.
    Dropped,
    /// A panic caught by the logger's hook.
    Panic,
    /// Everything else.
    Log,
}

impl MsgId {
    pub fn as_str(self) -> &'static str {
        match self {
            MsgId::Start => "START",
            MsgId::Stop => "STOP",
            MsgId::Liveness => "LIVENESS",
            MsgId::Reset => "RESET",
            MsgId::Alert => "ALERT",
            MsgId::Exit => "EXIT",
            MsgId::State => "STATE",
            MsgId::Config => "CONFIG",
            MsgId::Output => "OUTPUT",
            MsgId::Dropped => "DROPPED",
            MsgId::Panic => "PANIC",
            MsgId::Log => "LOG",
        }
    }

    /// The MSGID of a record with `target` (see the type's docs).
    pub fn of(target: &str, severity: Severity) -> MsgId {
        match target {
            "start" => MsgId::Start,
            "stop" => MsgId::Stop,
            "liveness" => MsgId::Liveness,
            "reset" => MsgId::Reset,
            "exit" => MsgId::Exit,
            "state" => MsgId::State,
            "config" => MsgId::Config,
            _ if severity == Severity::Alert => MsgId::Alert,
            _ => MsgId::Log,
        }
    }
}

static FORMAT_5424: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn set_format(f: LogFormat) {
    FORMAT_5424.store(
        f == LogFormat::Rfc5424,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The process's line format, as last set by [`init`] or [`set_settings`].
pub fn format() -> LogFormat {
    if FORMAT_5424.load(std::sync::atomic::Ordering::Relaxed) {
        LogFormat::Rfc5424
    } else {
        LogFormat::Rfc3164
    }
}

/// This machine's hostname for RFC 5424 (printable US-ASCII, at most
/// [`MAX_HOST`] bytes), `-` when unknown. `uname(2)`: no I/O.
pub fn hostname() -> String {
    let h = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let h: String = h
        .bytes()
        .filter(|b| (33..=126).contains(b))
        .take(MAX_HOST)
        .map(char::from)
        .collect();
    if h.is_empty() {
        "-".into()
    } else {
        h
    }
}

/// A line's format and the fields that do not change per record.
#[derive(Clone, Debug)]
pub struct Framing {
    pub format: LogFormat,
    pub host: String,
}

impl Framing {
    /// `format` with this machine's hostname.
    pub fn new(format: LogFormat) -> Framing {
        Framing {
            format,
            host: if format == LogFormat::Rfc5424 {
                hostname()
            } else {
                String::new()
            },
        }
    }

    /// Appends one line in this format to `buf`; `sd` holds SD-PARAMs as
    /// [`SdBuf`] writes them (RFC 3164 ignores `msgid` and `sd`).
    #[allow(clippy::too_many_arguments)]
    pub fn line(
        &self,
        buf: &mut Vec<u8>,
        severity: Severity,
        tag: &str,
        pid: u32,
        msgid: MsgId,
        sd: &[u8],
        msg: &[u8],
    ) {
        let pri = severity.pri(FACILITY_DAEMON);
        match self.format {
            LogFormat::Rfc3164 => format_line(buf, pri, tag, pid, msg),
            LogFormat::Rfc5424 => format_line_5424(
                buf,
                pri,
                std::time::SystemTime::now(),
                &self.host,
                tag,
                pid,
                msgid,
                sd,
                msg,
            ),
        }
    }
}

/// RFC 5424 `PRINTUSASCII` (`%d33-126`).
fn printusascii(b: u8) -> bool {
    (33..=126).contains(&b)
}

/// Appends an RFC 5424 line: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID
/// MSGID SD [MSG]`. TIMESTAMP is UTC with microseconds (`Z`); APP-NAME is
/// `app` with bytes outside PRINTUSASCII as `_`, cut at [`MAX_APP_NAME`]
/// (`-` when empty); SD is `[tether@32473 PARAMS]` or `-` when `sd` is
/// empty; MSG is sanitised and capped as in [`format_line`] (no BOM: MSG-ANY).
#[allow(clippy::too_many_arguments)]
pub fn format_line_5424(
    buf: &mut Vec<u8>,
    pri: u8,
    wall: std::time::SystemTime,
    host: &str,
    app: &str,
    pid: u32,
    msgid: MsgId,
    sd: &[u8],
    msg: &[u8],
) {
    use std::io::Write;
    let d = wall
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (y, mo, day, h, mi, sec) = crate::record::civil_utc(d.as_secs());
    let _ = write!(
        buf,
        "<{}>1 {:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z ",
        pri,
        y,
        mo,
        day,
        h,
        mi,
        sec,
        d.subsec_micros()
    );
    let host = if host.is_empty() { "-" } else { host };
    for &b in host.as_bytes().iter().take(MAX_HOST) {
        buf.push(if printusascii(b) { b } else { b'_' });
    }
    buf.push(b' ');
    if app.is_empty() {
        buf.push(b'-');
    }
    for &b in app.as_bytes().iter().take(MAX_APP_NAME) {
        buf.push(if printusascii(b) { b } else { b'_' });
    }
    let _ = write!(buf, " {} {} ", pid, msgid.as_str());
    if sd.is_empty() {
        buf.push(b'-');
    } else {
        buf.push(b'[');
        buf.extend_from_slice(SD_ID.as_bytes());
        buf.extend_from_slice(sd);
        buf.push(b']');
    }
    let start = buf.len();
    buf.push(b' ');
    // The body rules of RFC 3164 lines, without their header.
    format_line(buf, 0, "", 0, msg);
    let header = b"<0>[0]: ".len();
    buf.drain(start + 1..start + 1 + header);
    if buf.len() == start + 1 {
        buf.truncate(start); // no MSG: no trailing space
    }
}

/// The SD-PARAMs of one record, ` name="value"` each, in a fixed buffer of
/// [`MAX_SD`] bytes (a parameter that does not fit whole is left out).
/// PARAM-NAME: bytes outside PRINTUSASCII and `=`, `]`, `"` become `_`,
/// cut at 32; PARAM-VALUE: `"`, `\` and `]` escaped with `\` (RFC 5424
/// 6.3.3), control bytes as spaces.
pub struct SdBuf {
    buf: [u8; MAX_SD],
    len: usize,
}

impl Default for SdBuf {
    fn default() -> Self {
        SdBuf::new()
    }
}

impl SdBuf {
    pub fn new() -> SdBuf {
        SdBuf {
            buf: [0; MAX_SD],
            len: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Adds ` name="value"`; false (and nothing added) when it does not fit.
    /// An empty value is left out (an absent field), and counts as added.
    pub fn push(&mut self, name: &str, value: &str) -> bool {
        if value.is_empty() {
            return true;
        }
        let mut tmp = [0u8; MAX_SD];
        let mut n = 0;
        let mut put = |b: u8, n: &mut usize| {
            if *n < MAX_SD {
                tmp[*n] = b;
                *n += 1;
            }
        };
        put(b' ', &mut n);
        for &b in name.as_bytes().iter().take(32) {
            let ok = printusascii(b) && !matches!(b, b'=' | b']' | b'"');
            put(if ok { b } else { b'_' }, &mut n);
        }
        if name.is_empty() {
            put(b'_', &mut n);
        }
        put(b'=', &mut n);
        put(b'"', &mut n);
        for &b in value.as_bytes() {
            if matches!(b, b'"' | b'\\' | b']') {
                put(b'\\', &mut n);
            }
            put(if b.is_ascii_control() { b' ' } else { b }, &mut n);
        }
        put(b'"', &mut n);
        // `n == MAX_SD` may mean cut: refuse rather than send half a param.
        if n >= MAX_SD || self.len + n > MAX_SD - 2 {
            return false;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&tmp[..n]);
        self.len += n;
        true
    }
}

impl<'kvs> log::kv::VisitSource<'kvs> for SdBuf {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let mut v = StackBuf::new();
        let _ = fmt::write(&mut v, format_args!("{}", value));
        let text = String::from_utf8_lossy(v.as_bytes());
        self.push(key.as_str(), &text);
        Ok(())
    }
}

/// A non-blocking, reconnecting sender to a unix datagram syslog socket.
#[derive(Debug)]
pub struct Syslog {
    path: PathBuf,
    sock: Option<UnixDatagram>,
    last_attempt: Option<MonoTime>,
    buf: Vec<u8>,
    /// The hostname for RFC 5424 lines, read once here.
    host: String,
    /// `None`: the process's [`format`].
    format: Option<LogFormat>,
}

impl Syslog {
    /// Does not connect: the first [`send`](Syslog::send) does.
    pub fn new(path: &Path) -> Syslog {
        Syslog {
            path: path.to_path_buf(),
            sock: None,
            last_attempt: None,
            buf: Vec::with_capacity(MAX_LINE),
            host: hostname(),
            format: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fixes this sender's line format (default: the process's [`format`]).
    pub fn set_format(&mut self, format: Option<LogFormat>) {
        self.format = format;
    }

    /// Whether a connection is open (the last send did not find it down).
    pub fn is_up(&self) -> bool {
        self.sock.is_some()
    }

    fn may_attempt(&self, now: MonoTime) -> bool {
        attempt_due(self.last_attempt, now)
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

    /// When the next connection attempt is allowed, while the connection is
    /// down; `None` while it is up (or before the first attempt).
    pub fn retry_at(&self) -> Option<MonoTime> {
        match (&self.sock, self.last_attempt) {
            (None, Some(t)) => Some(t + RETRY_INTERVAL),
            _ => None,
        }
    }

    /// Sends `<PRI>TAG[PID]: msg` with facility `daemon` (in the format of
    /// the process's `[log] format`, [`format`]: RFC 5424 lines carry
    /// MSGID `OUTPUT` and no structured data; `tag` is the APP-NAME). Never
    /// blocks.
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
        // Taken out and put back so the buffer (reserved once) is reused.
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let framing = Framing {
            format: self.format.unwrap_or_else(format),
            host: std::mem::take(&mut self.host),
        };
        framing.line(&mut buf, severity, tag, pid, MsgId::Output, &[], msg);
        self.host = framing.host;
        let r = self.send_line(&buf, now);
        self.buf = buf;
        r
    }

    /// Sends one datagram already formatted (by [`format_line`]) as it is.
    /// Never blocks; reconnects like [`send`](Syslog::send).
    pub fn send_line(&mut self, line: &[u8], now: MonoTime) -> Result<(), SendError> {
        let mut fresh = false;
        if self.sock.is_none() {
            if !self.may_attempt(now) || !self.connect(now) {
                return Err(SendError::Down);
            }
            fresh = true;
        }
        loop {
            let r = match &self.sock {
                Some(s) => s.send(line),
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

/// Longest line [`format_line`] makes (`<255>`, the tag, `[pid]: `, the
/// message), rounded up.
const MAX_LINE: usize = MAX_MESSAGE + MAX_TAG + 32 + RFC5424_HEADER;
/// What RFC 5424 adds to a line at most: version, timestamp, hostname
/// ([`MAX_HOST`]), MSGID, structured data ([`MAX_SD`]) and spaces.
const RFC5424_HEADER: usize = 2 + 27 + MAX_HOST + MAX_MSGID + MAX_SD + 8;
/// Bytes of the length prefix of each record in the backlog ring.
const LEN_PREFIX: usize = 2;

/// The backlog of tether's own formatted lines that syslog refused as busy:
/// a ring of [`BACKLOG_BYTES`] bytes, each record a little-endian `u16`
/// length then the line (a record may wrap around the end of the ring).
/// Allocated once; pushing, sending and dropping never allocate.
struct Backlog {
    /// `len() == BACKLOG_BYTES` for ever.
    ring: Vec<u8>,
    /// Offset of the oldest record's length prefix.
    head: usize,
    /// Bytes in use, prefixes included.
    used: usize,
    records: usize,
    /// Lines refused since the last drop notice was queued: the gap sits
    /// behind the newest record, its notice is queued when room allows.
    dropped: u64,
    /// The front record while it is sent, or a notice being formatted.
    /// Capacity [`MAX_LINE`], reserved once.
    scratch: Vec<u8>,
}

impl fmt::Debug for Backlog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backlog")
            .field("records", &self.records)
            .field("used", &self.used)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

fn ring_write(ring: &mut [u8], at: usize, bytes: &[u8]) {
    let at = at % ring.len();
    let first = bytes.len().min(ring.len() - at);
    ring[at..at + first].copy_from_slice(&bytes[..first]);
    ring[..bytes.len() - first].copy_from_slice(&bytes[first..]);
}

fn ring_read(ring: &[u8], at: usize, out: &mut [u8]) {
    let at = at % ring.len();
    let first = out.len().min(ring.len() - at);
    out[..first].copy_from_slice(&ring[at..at + first]);
    let rest = out.len() - first;
    out[first..].copy_from_slice(&ring[..rest]);
}

impl Backlog {
    fn new() -> Backlog {
        Backlog {
            ring: vec![0; BACKLOG_BYTES],
            head: 0,
            used: 0,
            records: 0,
            dropped: 0,
            scratch: Vec::with_capacity(MAX_LINE),
        }
    }

    /// Records waiting, a queued-to-be drop notice counted as one.
    fn pending(&self) -> usize {
        self.records + usize::from(self.dropped > 0)
    }

    fn free(&self) -> usize {
        self.ring.len() - self.used
    }

    /// Appends `line` (cut at [`MAX_LINE`]) if it fits.
    fn push(&mut self, line: &[u8]) -> bool {
        let line = &line[..line.len().min(MAX_LINE)];
        if LEN_PREFIX + line.len() > self.free() {
            return false;
        }
        let tail = self.head + self.used;
        ring_write(&mut self.ring, tail, &(line.len() as u16).to_le_bytes());
        ring_write(&mut self.ring, tail + LEN_PREFIX, line);
        self.used += LEN_PREFIX + line.len();
        self.records += 1;
        true
    }

    fn front_len(&self) -> usize {
        let mut len = [0u8; LEN_PREFIX];
        ring_read(&self.ring, self.head, &mut len);
        usize::from(u16::from_le_bytes(len))
    }

    /// Copies the oldest record into `scratch`; false when empty.
    fn load_front(&mut self) -> bool {
        if self.records == 0 {
            return false;
        }
        let n = self.front_len();
        self.scratch.clear();
        self.scratch.resize(n, 0);
        ring_read(&self.ring, self.head + LEN_PREFIX, &mut self.scratch);
        true
    }

    fn pop_front(&mut self) {
        if self.records == 0 {
            return;
        }
        let n = LEN_PREFIX + self.front_len();
        self.head = (self.head + n) % self.ring.len();
        self.used -= n;
        self.records -= 1;
        if self.records == 0 {
            self.head = 0;
            self.used = 0;
        }
    }

    /// Formats `N log line(s) dropped (syslog busy)` into `scratch`.
    fn format_notice(&mut self, framing: &Framing, tag: &str, pid: u32) {
        let mut text = StackBuf::new();
        let _ = fmt::write(
            &mut text,
            format_args!("{} log line(s) dropped (syslog busy)", self.dropped),
        );
        self.scratch.clear();
        framing.line(
            &mut self.scratch,
            Severity::Warning,
            tag,
            pid,
            MsgId::Dropped,
            &[],
            text.as_bytes(),
        );
    }

    /// Queues the drop notice behind the newest record and clears the
    /// count. The caller checked that it fits (it always does in an empty
    /// ring).
    fn push_notice(&mut self, framing: &Framing, tag: &str, pid: u32) {
        self.format_notice(framing, tag, pid);
        let notice = std::mem::take(&mut self.scratch);
        if self.push(&notice) {
            self.dropped = 0;
        }
        self.scratch = notice;
    }

    /// Appends `line` behind the backlog, preceded by the drop notice if
    /// lines were dropped since the last one. When it does not fit, the
    /// line is dropped (the newest goes) and counted; returns false.
    fn admit(&mut self, line: &[u8], framing: &Framing, tag: &str, pid: u32) -> bool {
        let need = LEN_PREFIX + line.len().min(MAX_LINE);
        if self.dropped > 0 {
            self.format_notice(framing, tag, pid);
            if LEN_PREFIX + self.scratch.len() + need > self.free() {
                self.dropped = self.dropped.saturating_add(1);
                return false;
            }
            self.push_notice(framing, tag, pid);
        } else if need > self.free() {
            self.dropped = 1;
            return false;
        }
        self.push(line)
    }
}

/// Longest stderr line: `tag[pid]: LEVEL `, the message, the drop count
/// and the newline. Below `PIPE_BUF` (4096), so a pipe takes it whole or
/// not at all.
pub const MAX_STDERR_LINE: usize = MAX_MESSAGE + MAX_TAG + 96;

/// What one non-blocking write of the stderr copy did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wrote {
    /// This many bytes were taken (a tty may take fewer than offered).
    Bytes(usize),
    /// Nothing was taken: the console is full (`EAGAIN`), broken, or there
    /// is no descriptor to write to yet.
    Nothing,
}

/// The drop-and-count rules of the stderr copy (see the module docs): no
/// system calls, the write is a closure. Buffers reserved once.
#[derive(Debug)]
struct ConsoleCopy {
    /// Lines not written since the last one that was (or started to be).
    dropped: u64,
    /// The unwritten end of a line a partial write cut short.
    tail: Vec<u8>,
    /// The line being written: text, drop count, newline.
    buf: Vec<u8>,
}

impl ConsoleCopy {
    fn new() -> ConsoleCopy {
        ConsoleCopy {
            dropped: 0,
            tail: Vec::with_capacity(MAX_STDERR_LINE),
            buf: Vec::with_capacity(MAX_STDERR_LINE),
        }
    }

    /// Writes what is left of a cut line. Returns whether nothing is left.
    fn flush_tail(&mut self, write: &mut dyn FnMut(&[u8]) -> Wrote) -> bool {
        while !self.tail.is_empty() {
            match write(&self.tail) {
                Wrote::Bytes(n) if n > 0 => {
                    self.tail.drain(..n.min(self.tail.len()));
                }
                _ => return false,
            }
        }
        true
    }

    /// Offers one line (`line`: no newline; cut at [`MAX_MESSAGE`] + header
    /// by the caller). The rest of a cut line goes first; if it cannot, or
    /// the line does not fit, the line is dropped and counted. A line
    /// written carries the count of those dropped before it.
    fn offer(&mut self, line: &[u8], write: &mut dyn FnMut(&[u8]) -> Wrote) {
        use std::io::Write;
        if !self.flush_tail(write) {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        self.buf.clear();
        let room = MAX_STDERR_LINE - 48;
        self.buf.extend_from_slice(&line[..line.len().min(room)]);
        match self.dropped {
            0 => {}
            1 => self.buf.extend_from_slice(b" (1 console line dropped)"),
            n => {
                let _ = write!(self.buf, " ({} console lines dropped)", n);
            }
        }
        self.buf.push(b'\n');
        match write(&self.buf) {
            Wrote::Bytes(n) if n > 0 => {
                // Started: the count is on its way (in the tail if cut).
                self.dropped = 0;
                if n < self.buf.len() {
                    self.tail.clear();
                    self.tail.extend_from_slice(&self.buf[n..]);
                }
            }
            _ => self.dropped = self.dropped.saturating_add(1),
        }
    }
}

/// Which descriptor is stderr (a pipe or file of the test's in tests).
#[derive(Debug)]
enum ErrSink {
    Stderr,
    #[cfg(test)]
    Fd(OwnedFd),
}

impl ErrSink {
    fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> R {
        match self {
            ErrSink::Stderr => {
                let e = io::stderr();
                f(e.as_fd())
            }
            #[cfg(test)]
            ErrSink::Fd(fd) => f(fd.as_fd()),
        }
    }

    /// The path that opens the same file again.
    fn proc_path(&self) -> std::borrow::Cow<'static, str> {
        match self {
            ErrSink::Stderr => "/proc/self/fd/2".into(),
            #[cfg(test)]
            ErrSink::Fd(fd) => {
                use std::os::fd::AsRawFd;
                format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
            }
        }
    }
}

/// How the stderr copy is written (see the module docs).
#[derive(Debug)]
enum Console {
    /// Not looked at yet: the first stderr line does.
    Unresolved,
    /// Our own non-blocking open of the same pipe, FIFO, tty or device.
    Own(OwnedFd),
    /// stderr is a socket: `send(MSG_DONTWAIT)` on it.
    Socket,
    /// stderr is a regular file or block device: written as it is.
    File,
    /// The reopen failed at `last`; tried again after [`RETRY_INTERVAL`]
    /// while stderr is still the file `(dev, ino)`.
    Retry { dev: u64, ino: u64, last: MonoTime },
    /// stderr is not open: never written.
    Closed,
}

impl Console {
    /// Looks at stderr as it is now; opens it again where that is the way.
    fn resolve(sink: &ErrSink, now: MonoTime) -> Console {
        use nix::sys::stat::{fstat, SFlag};
        let Ok(st) = sink.with_fd(|fd| fstat(fd)) else {
            return Console::Closed;
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFREG || kind == SFlag::S_IFBLK {
            return Console::File;
        }
        if kind == SFlag::S_IFSOCK {
            return Console::Socket;
        }
        let (dev, ino) = (st.st_dev, st.st_ino);
        use nix::fcntl::OFlag;
        let opened = nix::fcntl::open(
            sink.proc_path().as_ref(),
            OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        );
        match opened {
            Ok(fd) if fstat(&fd).is_ok_and(|o| (o.st_dev, o.st_ino) == (dev, ino)) => {
                Console::Own(fd)
            }
            _ => Console::Retry {
                dev,
                ino,
                last: now,
            },
        }
    }

    /// Resolves stderr at the first line, and tries a failed reopen again
    /// when one is due. Never blocks (`fstat` and a non-blocking `open`).
    fn ready(&mut self, sink: &ErrSink, now: MonoTime) {
        match self {
            Console::Unresolved => *self = Console::resolve(sink, now),
            Console::Retry { dev, ino, last } if attempt_due(Some(*last), now) => {
                // Only the file the reopen was for: a descriptor that took
                // number 2 since (fd 2 closed and reused) is not stderr, and
                // writing to it could be anything (even a pet).
                let same = sink
                    .with_fd(|fd| nix::sys::stat::fstat(fd))
                    .is_ok_and(|st| (st.st_dev, st.st_ino) == (*dev, *ino));
                *self = if same {
                    Console::resolve(sink, now)
                } else {
                    Console::Closed
                };
            }
            _ => {}
        }
    }

    /// One non-blocking write.
    fn write(&self, sink: &ErrSink, buf: &[u8]) -> Wrote {
        let r = match self {
            Console::Own(fd) => nix::unistd::write(fd, buf),
            Console::File => sink.with_fd(|fd| nix::unistd::write(fd, buf)),
            Console::Socket => sink.with_fd(|fd| {
                use nix::sys::socket::{send, MsgFlags};
                use std::os::fd::AsRawFd;
                send(
                    fd.as_raw_fd(),
                    buf,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                )
            }),
            Console::Unresolved | Console::Retry { .. } | Console::Closed => return Wrote::Nothing,
        };
        match r {
            Ok(n) => Wrote::Bytes(n),
            // EAGAIN (full), EINTR (not retried: the next line retries),
            // EPIPE (no reader), EIO (hung-up tty): nothing taken.
            Err(_) => Wrote::Nothing,
        }
    }
}

/// Whether a connection or open may be tried at `now`, the last try having
/// been at `last`: at most one per [`RETRY_INTERVAL`].
fn attempt_due(last: Option<MonoTime>, now: MonoTime) -> bool {
    match last {
        None => true,
        Some(t) => now.saturating_since(t) >= RETRY_INTERVAL,
    }
}

/// `/dev/kmsg`, opened on first use (at most one attempt per
/// [`RETRY_INTERVAL`]), non-blocking.
#[derive(Debug)]
struct Kmsg {
    path: PathBuf,
    fd: Option<OwnedFd>,
    last_attempt: Option<MonoTime>,
    /// The line plus its newline, so that it is one `write(2)` (one kernel
    /// record). Capacity reserved once.
    buf: Vec<u8>,
}

impl Kmsg {
    fn new() -> Kmsg {
        Kmsg {
            path: PathBuf::from(KMSG_PATH),
            fd: None,
            last_attempt: None,
            buf: Vec::with_capacity(MAX_LINE + 1),
        }
    }

    /// Writes one formatted line (see [`format_line`]). Never blocks.
    fn write(&mut self, line: &[u8], now: MonoTime) {
        if self.fd.is_none() {
            if !attempt_due(self.last_attempt, now) {
                return;
            }
            self.last_attempt = Some(now);
            use nix::fcntl::OFlag;
            self.fd = nix::fcntl::open(
                &self.path,
                OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
                nix::sys::stat::Mode::empty(),
            )
            .ok();
        }
        let Some(fd) = &self.fd else { return };
        self.buf.clear();
        self.buf
            .extend_from_slice(&line[..line.len().min(MAX_LINE)]);
        self.buf.push(b'\n');
        match nix::unistd::write(fd, &self.buf) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => self.fd = None,
        }
    }
}

/// The logger's state: targets and their connections.
#[derive(Debug)]
struct Backend {
    tag: &'static str,
    pid: u32,
    settings: LogSettings,
    syslog: Syslog,
    kmsg: Kmsg,
    /// Lines syslog refused as busy, in order; allocated on first use.
    backlog: Option<Backlog>,
    err_sink: ErrSink,
    /// The stderr copy's descriptor, opened at the first stderr line.
    console: Console,
    /// The stderr copy's drop-and-count state.
    copy: ConsoleCopy,
    /// The record being routed, formatted once. Capacity reserved once.
    line: Vec<u8>,
    /// Line format and hostname (`[log] format`).
    framing: Framing,
}

impl Backend {
    fn new(tag: &'static str, pid: u32, settings: LogSettings) -> Backend {
        Backend {
            tag,
            pid,
            syslog: Syslog::new(&settings.syslog_socket),
            kmsg: Kmsg::new(),
            backlog: None,
            err_sink: ErrSink::Stderr,
            console: Console::Unresolved,
            copy: ConsoleCopy::new(),
            line: Vec::with_capacity(MAX_LINE),
            framing: Framing::new(settings.format),
            settings,
        }
    }

    /// A new syslog socket gets the backlog (it holds tether's lines for
    /// whichever syslog is current).
    fn set_settings(&mut self, settings: LogSettings) {
        if settings.syslog_socket != self.settings.syslog_socket {
            self.syslog = Syslog::new(&settings.syslog_socket);
        }
        if !settings.kmsg {
            self.kmsg.fd = None;
        }
        if !settings.stderr {
            // Closed; looked at again when the copy is switched back on.
            self.console = Console::Unresolved;
        }
        self.framing = Framing::new(settings.format);
        self.settings = settings;
    }

    #[cfg(test)]
    fn emit(&mut self, severity: Severity, msg: &[u8], now: MonoTime) {
        self.emit_event(severity, MsgId::of("", severity), &[], msg, now);
    }

    /// `sd`: the structured data's SD-PARAMs as written by [`SdBuf`]
    /// (empty: none).
    fn emit_event(
        &mut self,
        severity: Severity,
        msgid: MsgId,
        sd: &[u8],
        msg: &[u8],
        now: MonoTime,
    ) {
        self.line.clear();
        self.framing
            .line(&mut self.line, severity, self.tag, self.pid, msgid, sd, msg);
        self.route_line(now);
        if self.settings.stderr {
            self.write_stderr(severity, msg, now);
        }
    }

    /// Sends `self.line` to syslog behind the backlog; see the module docs.
    fn route_line(&mut self, now: MonoTime) {
        if self.flush_backlog(now) {
            self.enqueue_line(now);
            return;
        }
        match self.syslog.send_line(&self.line, now) {
            Ok(()) => {}
            Err(SendError::Busy) => self.enqueue_line(now),
            Err(SendError::Down) => {
                if self.settings.kmsg {
                    self.kmsg.write(&self.line, now);
                }
            }
        }
    }

    /// `self.line` joins the backlog; if it overflows, the line goes to
    /// kmsg when enabled.
    fn enqueue_line(&mut self, now: MonoTime) {
        let backlog = self.backlog.get_or_insert_with(Backlog::new);
        if !backlog.admit(&self.line, &self.framing, self.tag, self.pid) && self.settings.kmsg {
            self.kmsg.write(&self.line, now);
        }
    }

    /// Sends the backlog, oldest first, until syslog refuses or it is
    /// empty. Returns whether records (or a drop notice) still wait.
    fn flush_backlog(&mut self, now: MonoTime) -> bool {
        let Some(backlog) = self.backlog.as_mut() else {
            return false;
        };
        loop {
            if backlog.records == 0 {
                if backlog.dropped == 0 {
                    return false;
                }
                // Drained up to the gap: its notice comes next.
                backlog.push_notice(&self.framing, self.tag, self.pid);
            }
            if !backlog.load_front() {
                // Only if the notice did not fit an empty ring (it is far
                // smaller): give it up rather than loop.
                backlog.dropped = 0;
                return false;
            }
            match self.syslog.send_line(&backlog.scratch, now) {
                Ok(()) => backlog.pop_front(),
                Err(SendError::Busy) => return true,
                Err(SendError::Down) => {
                    if !self.settings.kmsg {
                        // Kept, bounded, for when syslog is back.
                        return true;
                    }
                    // As today for a down syslog: everything to kmsg, in
                    // order (these lines never reached syslog nor kmsg).
                    while backlog.load_front() {
                        self.kmsg.write(&backlog.scratch, now);
                        backlog.pop_front();
                    }
                    if backlog.dropped > 0 {
                        backlog.format_notice(&self.framing, self.tag, self.pid);
                        self.kmsg.write(&backlog.scratch, now);
                        backlog.dropped = 0;
                    }
                    return false;
                }
            }
        }
    }

    /// Records waiting in the backlog (a pending drop notice counts as one).
    fn pending(&self) -> usize {
        self.backlog.as_ref().map_or(0, Backlog::pending)
    }

    /// Tries to send the backlog now; `None` when nothing waits, else when
    /// to try again: [`BACKLOG_RETRY`] from `now`, or the next reconnect
    /// attempt if syslog is down and that is later.
    fn flush_pending(&mut self, now: MonoTime) -> Option<MonoTime> {
        self.flush_console_tail();
        self.flush_backlog(now);
        if self.pending() == 0 {
            return None;
        }
        let soon = now + BACKLOG_RETRY;
        Some(match self.syslog.retry_at() {
            Some(t) if t > soon => t,
            _ => soon,
        })
    }

    /// Writes the rest of a stderr line a partial write cut short, if any.
    /// Never blocks; does not ask to be called again.
    fn flush_console_tail(&mut self) {
        if self.copy.tail.is_empty() || !self.settings.stderr {
            return;
        }
        let (console, sink) = (&self.console, &self.err_sink);
        self.copy.flush_tail(&mut |b| console.write(sink, b));
    }

    fn write_stderr(&mut self, severity: Severity, msg: &[u8], now: MonoTime) {
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
        self.console.ready(&self.err_sink, now);
        let (console, sink) = (&self.console, &self.err_sink);
        self.copy.offer(&self.line, &mut |b| console.write(sink, b));
    }
}

/// A fixed-size formatting buffer: text beyond its capacity is cut.
struct StackBuf {
    buf: [u8; MAX_MESSAGE],
    len: usize,
}

impl StackBuf {
    fn new() -> StackBuf {
        StackBuf {
            buf: [0; MAX_MESSAGE],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
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
        let msgid = MsgId::of(record.target(), severity);
        // Formatted before taking the lock, so a Display impl that logs
        // cannot deadlock us.
        let mut text = StackBuf::new();
        let _ = fmt::write(&mut text, *record.args());
        let mut sd = SdBuf::new();
        let _ = record.key_values().visit(&mut sd);
        let now = MonoTime::now();
        let mut guard = self.backend.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = guard.as_mut() {
            b.emit_event(severity, msgid, sd.as_bytes(), text.as_bytes(), now);
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
    match std::env::var("TETHER_LOG_FORMAT").as_deref() {
        Ok("rfc5424") => s.format = LogFormat::Rfc5424,
        Ok("rfc3164") => s.format = LogFormat::Rfc3164,
        _ => {}
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
    set_format(effective_settings(settings).format);
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
        std::panic::set_hook(Box::new(|info| log_panic(info)));
    }
    log::set_max_level(level_from_env());
}

/// The panic hook [`init`] installs: the panic's message and place, as one
/// CRIT record through this logger (syslog, kmsg, the non-blocking stderr
/// copy), instead of the default hook's blocking write to fd 2, which would
/// hold a panicking loop (init's, before it can recover) on a stalled
/// console. When the logger's lock is held (a panic inside the logger, on
/// this thread or while another thread logs), the message is dropped rather
/// than waited for. No backtrace is printed.
fn log_panic(info: &dyn fmt::Display) {
    let mut text = StackBuf::new();
    let _ = fmt::write(&mut text, format_args!("PANIC: {}", info));
    let now = MonoTime::now();
    let mut guard = match LOGGER.backend.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    if let Some(b) = guard.as_mut() {
        b.emit_event(Severity::Crit, MsgId::Panic, &[], text.as_bytes(), now);
    }
}

/// Switches the targets (after a config reload or a fall-back to defaults).
/// Does nothing before [`init`].
pub fn set_settings(settings: &LogSettings) {
    set_format(effective_settings(settings).format);
    let mut guard = LOGGER.backend.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = guard.as_mut() {
        b.set_settings(effective_settings(settings));
    }
}

/// Tries to send the records waiting in the backlog (lines syslog refused
/// as busy). Returns `None` when none wait, else the time at which to call
/// again (put it into the event loop's poll timeout). Never blocks. Does
/// nothing before [`init`].
pub fn flush_pending(now: MonoTime) -> Option<MonoTime> {
    let mut guard = LOGGER.backend.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_mut().and_then(|b| b.flush_pending(now))
}

/// Records waiting in the backlog (a pending drop notice counts as one).
pub fn pending() -> usize {
    let guard = LOGGER.backend.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_ref().map_or(0, Backend::pending)
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
    use std::sync::Arc;

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
            ..LogSettings::default()
        };
        let mut b = Backend::new("tether-test", 9, settings);
        b.kmsg.path = d.join("kmsg");
        std::fs::write(&b.kmsg.path, b"").unwrap();
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

    const FILLER: &str = "<30>filler";

    fn ours(pri: u8, msg: &str) -> String {
        format!("<{pri}>tether-test[9]: {msg}")
    }

    /// Fills the receiver's queue through the backend's own connection until
    /// syslog answers busy.
    fn fill(b: &mut Backend, now: MonoTime) {
        for _ in 0..100_000 {
            match b.syslog.send_line(FILLER.as_bytes(), now) {
                Ok(()) => {}
                Err(SendError::Busy) => return,
                Err(SendError::Down) => panic!("syslog must be up to be filled"),
            }
        }
        panic!("an unread socket must fill up");
    }

    /// Every datagram waiting at the server, fillers left out.
    fn take_all(server: &UnixDatagram) -> Vec<String> {
        server.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        while let Some(l) = recv(server) {
            if l != FILLER {
                out.push(l);
            }
        }
        out
    }

    /// Reads the server and flushes until nothing waits; what arrived.
    fn drain(b: &mut Backend, server: &UnixDatagram, now: MonoTime) -> Vec<String> {
        let mut out = take_all(server);
        for _ in 0..10_000 {
            let next = b.flush_pending(now);
            out.extend(take_all(server));
            if next.is_none() {
                assert_eq!(b.pending(), 0);
                return out;
            }
        }
        panic!("the backlog never drained");
    }

    fn kmsg_lines(d: &Path) -> Vec<String> {
        std::fs::read_to_string(d.join("kmsg"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn busy_syslog_lines_are_sent_in_order_once_drained() {
        let (mut b, d, _err) = backend("inorder", true, false);
        let server = UnixDatagram::bind(d.join("log.sock")).unwrap();
        fill(&mut b, at(0));
        b.emit(Severity::Info, b"one", at(1));
        b.emit(Severity::Err, b"two", at(2));
        b.emit(Severity::Info, b"three", at(3));
        assert_eq!(b.pending(), 3);
        assert_eq!(
            b.flush_pending(at(4)),
            Some(at(4) + BACKLOG_RETRY),
            "still busy: call again soon"
        );
        assert!(
            kmsg_lines(&d).is_empty(),
            "a backlogged line is not also written to kmsg"
        );
        let got = drain(&mut b, &server, at(5));
        assert_eq!(got, [ours(30, "one"), ours(27, "two"), ours(30, "three")]);
        assert_eq!(b.flush_pending(at(6)), None);
        assert!(kmsg_lines(&d).is_empty());
    }

    #[test]
    fn new_records_wait_behind_the_backlog() {
        let (mut b, d, _err) = backend("behind", false, false);
        let server = UnixDatagram::bind(d.join("log.sock")).unwrap();
        fill(&mut b, at(0));
        b.emit(Severity::Info, b"a", at(1));
        b.emit(Severity::Info, b"b", at(1));
        assert_eq!(b.pending(), 2);
        // Room for one datagram: the new record must not take it ahead of
        // the older ones.
        assert_eq!(recv(&server).as_deref(), Some(FILLER));
        b.emit(Severity::Info, b"c", at(2));
        let got = drain(&mut b, &server, at(3));
        assert_eq!(got, [ours(30, "a"), ours(30, "b"), ours(30, "c")]);
        // Once drained, records go straight to syslog again.
        b.emit(Severity::Info, b"d", at(4));
        assert_eq!(b.pending(), 0);
        assert_eq!(take_all(&server), [ours(30, "d")]);
    }

    fn big(i: usize) -> String {
        format!("{i:04} {}", "x".repeat(995))
    }

    /// Lines cut short, to keep a failing assertion readable.
    fn short(lines: &[String]) -> Vec<&str> {
        lines.iter().map(|l| &l[..l.len().min(60)]).collect()
    }

    #[test]
    fn backlog_overflow_is_counted_and_reported() {
        let (mut b, d, _err) = backend("overflow", true, false);
        let server = UnixDatagram::bind(d.join("log.sock")).unwrap();
        const N: usize = 100;
        fill(&mut b, at(0));
        for i in 0..N {
            b.emit(Severity::Info, big(i).as_bytes(), at(1));
        }
        // The newest lines are dropped, each to kmsg instead (kmsg on).
        let spilled = kmsg_lines(&d);
        let dropped = spilled.len();
        assert!(dropped > 0 && dropped < N, "dropped {dropped} of {N}");
        let kept = N - dropped;
        assert!(kept * (1000 + 20) <= BACKLOG_BYTES);
        let want: Vec<String> = (kept..N).map(|i| ours(30, &big(i))).collect();
        assert_eq!(short(&spilled), short(&want));
        assert_eq!(spilled, want);
        assert_eq!(b.pending(), kept + 1, "the kept lines and the drop notice");
        // Syslog has room again; the next record comes behind the kept
        // lines and the notice of the gap.
        assert!(take_all(&server).is_empty());
        b.emit(Severity::Info, b"after", at(2));
        let got = drain(&mut b, &server, at(3));
        let mut want: Vec<String> = (0..kept).map(|i| ours(30, &big(i))).collect();
        want.push(ours(
            28,
            &format!("{dropped} log line(s) dropped (syslog busy)"),
        ));
        want.push(ours(30, "after"));
        assert_eq!(short(&got), short(&want));
        assert_eq!(got, want);
        assert_eq!(kmsg_lines(&d).len(), dropped, "nothing sent twice");

        // Again, drained by flush_pending alone: the notice comes last.
        fill(&mut b, at(4));
        for i in 0..N {
            b.emit(Severity::Info, big(i).as_bytes(), at(5));
        }
        let got = drain(&mut b, &server, at(6));
        assert_eq!(got.len(), kept + 1);
        assert_eq!(
            got.last().unwrap(),
            &ours(28, &format!("{dropped} log line(s) dropped (syslog busy)"))
        );
        assert_eq!(kmsg_lines(&d).len(), 2 * dropped);
    }

    #[test]
    fn backlog_allocates_once() {
        let (mut b, d, _err) = backend("alloc", false, false);
        let server = UnixDatagram::bind(d.join("log.sock")).unwrap();
        fill(&mut b, at(0));
        assert!(b.backlog.is_none(), "allocated on first use only");
        b.emit(Severity::Info, b"first", at(1));
        let snapshot = |b: &Backend| {
            let bl = b.backlog.as_ref().unwrap();
            (
                (bl.ring.as_ptr(), bl.ring.len(), bl.ring.capacity()),
                (bl.scratch.as_ptr(), bl.scratch.capacity()),
                (b.line.as_ptr(), b.line.capacity()),
                (b.syslog.buf.as_ptr(), b.syslog.buf.capacity()),
            )
        };
        let before = snapshot(&b);
        assert_eq!(before.0 .1, BACKLOG_BYTES);
        let body = [b'y'; MAX_MESSAGE + 100];
        for round in 0..3u64 {
            let t = at(10 + round);
            fill(&mut b, t);
            for i in 0..200 {
                b.emit(Severity::Warning, &body[..(i * 37) % body.len()], t);
                assert_eq!(snapshot(&b), before);
            }
            let got = drain(&mut b, &server, t);
            assert!(got.last().unwrap().ends_with("dropped (syslog busy)"));
            assert_eq!(snapshot(&b), before, "round {round}");
        }
    }

    #[test]
    fn backlog_ring_keeps_records_intact_across_the_wrap() {
        let mut bl = Backlog::new();
        let mut model = std::collections::VecDeque::new();
        let mut bytes_through = 0;
        for step in 0..20_000usize {
            let len = (step * 7919) % MAX_LINE + 1;
            let rec: Vec<u8> = (0..len).map(|k| (step + k) as u8).collect();
            let pushed = bl.push(&rec);
            if pushed {
                bytes_through += rec.len();
                model.push_back(rec);
            }
            if !pushed || step % 4 != 0 {
                assert!(bl.load_front());
                assert_eq!(Some(&bl.scratch), model.front());
                bl.pop_front();
                model.pop_front();
            }
            assert_eq!(bl.records, model.len());
        }
        assert!(bytes_through > 50 * BACKLOG_BYTES, "the ring wrapped often");
        while bl.load_front() {
            assert_eq!(Some(&bl.scratch), model.front());
            bl.pop_front();
            model.pop_front();
        }
        assert!(model.is_empty());
        assert_eq!((bl.used, bl.head), (0, 0));
    }

    #[test]
    fn a_backlog_goes_to_kmsg_in_order_when_syslog_goes_down() {
        let (mut b, d, _err) = backend("down-kmsg", true, false);
        let path = d.join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        fill(&mut b, at(0));
        b.emit(Severity::Info, b"a", at(1));
        b.emit(Severity::Info, b"b", at(1));
        assert!(kmsg_lines(&d).is_empty());
        drop(server);
        std::fs::remove_file(&path).unwrap();
        b.emit(Severity::Info, b"c", at(2000));
        assert_eq!(
            kmsg_lines(&d),
            [ours(30, "a"), ours(30, "b"), ours(30, "c")]
        );
        assert_eq!(b.pending(), 0);
        assert_eq!(b.flush_pending(at(2001)), None);
    }

    #[test]
    fn a_backlog_waits_for_syslog_to_return_when_kmsg_is_off() {
        let (mut b, d, _err) = backend("down-wait", false, false);
        let path = d.join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        fill(&mut b, at(0));
        b.emit(Severity::Info, b"a", at(1));
        drop(server);
        std::fs::remove_file(&path).unwrap();
        // Down (refused, reconnect fails): kept, and the new record behind.
        b.emit(Severity::Info, b"b", at(2000));
        assert_eq!(b.pending(), 2);
        assert_eq!(
            b.flush_pending(at(2100)),
            Some(at(3000)),
            "next call at the next reconnect attempt"
        );
        let server = UnixDatagram::bind(&path).unwrap();
        assert_eq!(b.flush_pending(at(3000)), None);
        assert_eq!(take_all(&server), [ours(30, "a"), ours(30, "b")]);
    }

    /// A console that takes `room` more bytes, then nothing.
    struct FakeConsole {
        room: usize,
        out: Vec<u8>,
    }

    impl FakeConsole {
        fn new(room: usize) -> FakeConsole {
            FakeConsole {
                room,
                out: Vec::new(),
            }
        }

        fn write(&mut self, b: &[u8]) -> Wrote {
            let n = b.len().min(self.room);
            if n == 0 {
                return Wrote::Nothing;
            }
            self.room -= n;
            self.out.extend_from_slice(&b[..n]);
            Wrote::Bytes(n)
        }

        fn offer(&mut self, c: &mut ConsoleCopy, line: &str) {
            c.offer(line.as_bytes(), &mut |b| self.write(b));
        }

        fn text(&self) -> &str {
            std::str::from_utf8(&self.out).unwrap()
        }
    }

    #[test]
    fn console_lines_that_do_not_fit_are_dropped_and_counted_on_the_next_line() {
        let mut c = ConsoleCopy::new();
        let mut con = FakeConsole::new(0);
        for l in ["a", "b", "c"] {
            con.offer(&mut c, l);
        }
        assert_eq!(con.text(), "");
        assert_eq!(c.dropped, 3);
        con.room = 1000;
        con.offer(&mut c, "d");
        con.offer(&mut c, "e");
        assert_eq!(con.text(), "d (3 console lines dropped)\ne\n");
        con.room = 0;
        con.offer(&mut c, "f");
        con.room = 1000;
        con.offer(&mut c, "g");
        assert_eq!(
            con.text(),
            "d (3 console lines dropped)\ne\ng (1 console line dropped)\n"
        );
        assert_eq!(c.dropped, 0);
    }

    #[test]
    fn a_line_a_partial_write_cut_is_finished_before_any_other() {
        let mut c = ConsoleCopy::new();
        let mut con = FakeConsole::new(4);
        con.offer(&mut c, "hello world");
        assert_eq!(con.text(), "hell");
        // Still no room: the new line is dropped, the cut one waits.
        con.offer(&mut c, "x");
        assert_eq!((con.text(), c.dropped), ("hell", 1));
        // Some room (a flush): more of the cut line, nothing else.
        con.room = 3;
        assert!(!c.flush_tail(&mut |b| con.write(b)));
        assert_eq!(con.text(), "hello w");
        con.room = 1000;
        con.offer(&mut c, "next");
        assert_eq!(con.text(), "hello world\nnext (1 console line dropped)\n");
        assert!(c.tail.is_empty());
    }

    #[test]
    fn a_cut_line_keeps_its_drop_count() {
        let mut c = ConsoleCopy::new();
        let mut con = FakeConsole::new(0);
        con.offer(&mut c, "a");
        con.offer(&mut c, "b");
        con.room = 5;
        con.offer(&mut c, "abcdefgh");
        assert_eq!(c.dropped, 0, "the count is in the cut line's tail");
        con.room = 1000;
        assert!(c.flush_tail(&mut |b| con.write(b)));
        assert_eq!(con.text(), "abcdefgh (2 console lines dropped)\n");
    }

    /// Parses `L<i>` or `L<i> (N console line(s) dropped)`.
    fn parse_console_line(l: &str) -> (u64, u64) {
        let (i, rest) = match l.split_once(' ') {
            Some((i, rest)) => (i, rest),
            None => (l, ""),
        };
        let i: u64 = i.strip_prefix('L').unwrap().parse().unwrap();
        let n = if rest.is_empty() {
            0
        } else {
            let n = rest.strip_prefix('(').unwrap();
            let n = n
                .strip_suffix(" console lines dropped)")
                .or_else(|| n.strip_suffix(" console line dropped)"))
                .unwrap_or_else(|| panic!("bad suffix in {l:?}"));
            n.parse().unwrap()
        };
        (i, n)
    }

    #[test]
    fn every_line_is_written_whole_once_or_counted_whatever_the_console_takes() {
        let mut c = ConsoleCopy::new();
        let mut con = FakeConsole::new(0);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        const N: u64 = 20_000;
        for i in 0..N {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Mostly full, sometimes a few bytes, sometimes a lot.
            con.room += match seed % 8 {
                0 => (seed >> 8) as usize % 7,
                1 => (seed >> 8) as usize % 60,
                _ => 0,
            };
            con.offer(&mut c, &format!("L{i}"));
            if seed.is_multiple_of(31) {
                c.flush_tail(&mut |b| con.write(b));
            }
        }
        con.room = usize::MAX / 2;
        con.offer(&mut c, &format!("L{N}"));
        let text = con.text().to_owned();
        assert!(text.ends_with('\n'));
        let mut prev: Option<u64> = None;
        let mut written = 0;
        for l in text.lines() {
            let (i, n) = parse_console_line(l);
            let expect = match prev {
                None => i,
                Some(p) => {
                    assert!(i > p, "out of order: {l:?} after L{p}");
                    i - p - 1
                }
            };
            assert_eq!(n, expect, "count on {l:?} (previous {prev:?})");
            prev = Some(i);
            written += 1;
        }
        assert_eq!(prev, Some(N), "the last line got through");
        assert!(written > 100 && written < N / 2, "{written} lines written");
    }

    #[test]
    fn the_console_copy_allocates_once() {
        let mut c = ConsoleCopy::new();
        let snap = |c: &ConsoleCopy| {
            (
                c.tail.as_ptr(),
                c.tail.capacity(),
                c.buf.as_ptr(),
                c.buf.capacity(),
            )
        };
        let before = snap(&c);
        let long = "y".repeat(MAX_STDERR_LINE * 2);
        let mut con = FakeConsole::new(0);
        for i in 0..500usize {
            con.room += (i * 37) % 300;
            c.dropped = if i % 50 == 0 { u64::MAX - 1 } else { c.dropped };
            con.offer(&mut c, &long[..(i * 131) % long.len()]);
            assert_eq!(snap(&c), before, "line {i}");
        }
    }

    fn flags_of(fd: BorrowedFd<'_>) -> nix::fcntl::OFlag {
        let f = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        nix::fcntl::OFlag::from_bits_truncate(f)
    }

    /// Runs `f` on a thread; panics if it has not returned within 10 s
    /// (it blocked).
    fn must_not_block<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{what} blocked"))
    }

    /// Fills a pipe or FIFO through a non-blocking open of its own, leaving
    /// `w`'s flags alone.
    fn fill_pipe(w: &OwnedFd) {
        use nix::fcntl::OFlag;
        use std::os::fd::AsRawFd;
        let nb = nix::fcntl::open(
            format!("/proc/self/fd/{}", w.as_raw_fd()).as_str(),
            OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let chunk = [b'#'; 4096];
        loop {
            match nix::unistd::write(&nb, &chunk) {
                Ok(_) => {}
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => panic!("fill: {e}"),
            }
        }
        // A last byte at a time, until not even one fits.
        while nix::unistd::write(&nb, b"#").is_ok() {}
    }

    /// Reads what waits in a pipe (the read end made non-blocking: the
    /// test's own open file description).
    fn read_pipe(r: &OwnedFd) -> Vec<u8> {
        crate::sys::set_nonblocking(r.as_fd(), true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = nix::unistd::read(r, &mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn stderr_into_a_full_blocking_pipe_never_blocks_and_its_flags_stay() {
        let (mut b, _d, _unused) = backend("fullpipe", false, true);
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let w_dup = w.try_clone().unwrap();
        assert!(!flags_of(w.as_fd()).contains(nix::fcntl::OFlag::O_NONBLOCK));
        fill_pipe(&w);
        b.err_sink = ErrSink::Fd(w);
        let mut b = must_not_block("logging into a full stderr pipe", move || {
            for i in 0..200 {
                b.emit(Severity::Info, format!("line {i}").as_bytes(), at(i));
            }
            b
        });
        assert!(
            !flags_of(w_dup.as_fd()).contains(nix::fcntl::OFlag::O_NONBLOCK),
            "the shared open file description stays blocking"
        );
        match &b.console {
            Console::Own(fd) => {
                let fdf = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
                assert_ne!(fdf & libc::FD_CLOEXEC, 0, "our open is close-on-exec");
                assert!(flags_of(fd.as_fd()).contains(nix::fcntl::OFlag::O_NONBLOCK));
            }
            other => panic!("a pipe is opened again, got {other:?}"),
        }
        let filler = read_pipe(&r);
        assert!(filler.iter().all(|&c| c == b'#'), "nothing of ours got in");
        b.emit(Severity::Warning, b"after", at(300));
        assert_eq!(
            String::from_utf8(read_pipe(&r)).unwrap(),
            "tether-test[9]: WARN after (200 console lines dropped)\n"
        );
        b.emit(Severity::Info, b"again", at(301));
        assert_eq!(
            String::from_utf8(read_pipe(&r)).unwrap(),
            "tether-test[9]: INFO again\n"
        );
    }

    #[test]
    fn stderr_as_a_full_stream_socket_never_blocks() {
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;
        let (mut b, _d, _unused) = backend("fullsock", false, true);
        let (ours, theirs) = UnixStream::pair().unwrap();
        let ours = OwnedFd::from(ours);
        let dup = ours.try_clone().unwrap();
        let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT;
        while nix::sys::socket::send(ours.as_raw_fd(), &[b'#'; 512], flags).is_ok() {}
        while nix::sys::socket::send(ours.as_raw_fd(), b"#", flags).is_ok() {}
        b.err_sink = ErrSink::Fd(ours);
        let mut b = must_not_block("logging into a full stderr socket", move || {
            for i in 0..50 {
                b.emit(Severity::Info, b"lost", at(i));
            }
            b
        });
        assert!(matches!(b.console, Console::Socket));
        assert!(!flags_of(dup.as_fd()).contains(nix::fcntl::OFlag::O_NONBLOCK));
        let theirs = OwnedFd::from(theirs);
        let filler = read_pipe(&theirs);
        assert!(filler.iter().all(|&c| c == b'#'));
        b.emit(Severity::Info, b"after", at(100));
        assert_eq!(
            String::from_utf8(read_pipe(&theirs)).unwrap(),
            "tether-test[9]: INFO after (50 console lines dropped)\n"
        );
    }

    #[test]
    fn stderr_as_a_regular_file_is_written_at_the_files_own_offset() {
        use std::io::Write;
        let (mut b, d, _unused) = backend("file", false, true);
        let path = d.join("stderr.log");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"first\n").unwrap();
        b.err_sink = ErrSink::Fd(OwnedFd::from(f.try_clone().unwrap()));
        b.emit(Severity::Info, b"ours", at(0));
        assert!(matches!(b.console, Console::File));
        f.write_all(b"last\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "first\ntether-test[9]: INFO ours\nlast\n",
            "appended where the shared offset is, nothing overwritten"
        );
    }

    fn fifo_with_writer(d: &Path) -> (PathBuf, OwnedFd) {
        use nix::fcntl::OFlag;
        let path = d.join("console.fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mode = nix::sys::stat::Mode::empty();
        let r = nix::fcntl::open(&path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, mode).unwrap();
        // Blocking, like an inherited stderr; opens because a reader exists.
        let w = nix::fcntl::open(&path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, mode).unwrap();
        drop(r);
        (path, w)
    }

    #[test]
    fn a_failed_reopen_is_retried_once_a_second_and_its_lines_are_counted() {
        use nix::fcntl::OFlag;
        let (mut b, d, _unused) = backend("retry", false, true);
        let (path, w) = fifo_with_writer(&d);
        b.err_sink = ErrSink::Fd(w);
        // No reader: the non-blocking open fails (ENXIO).
        b.emit(Severity::Info, b"a", at(0));
        assert!(
            matches!(b.console, Console::Retry { .. }),
            "{:?}",
            b.console
        );
        let r = nix::fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        b.emit(Severity::Info, b"b", at(500));
        b.emit(Severity::Info, b"c", at(999));
        assert!(
            matches!(b.console, Console::Retry { .. }),
            "not tried again yet"
        );
        b.emit(Severity::Info, b"d", at(1000));
        assert!(matches!(b.console, Console::Own(_)), "{:?}", b.console);
        assert_eq!(
            String::from_utf8(read_pipe(&r)).unwrap(),
            "tether-test[9]: INFO d (3 console lines dropped)\n"
        );
    }

    #[test]
    fn a_descriptor_that_took_stderrs_number_is_never_written() {
        let (mut b, d, _unused) = backend("reused", false, true);
        let (_path, w) = fifo_with_writer(&d);
        let other = d.join("other");
        let f = std::fs::File::create(&other).unwrap();
        b.err_sink = ErrSink::Fd(w);
        b.emit(Severity::Info, b"a", at(0));
        assert!(matches!(b.console, Console::Retry { .. }));
        // The number now names another file (stderr closed, the number
        // reused).
        if let ErrSink::Fd(fd) = &mut b.err_sink {
            nix::unistd::dup2(&f, fd).unwrap();
        }
        b.emit(Severity::Info, b"b", at(1000));
        b.emit(Severity::Info, b"c", at(3000));
        assert!(matches!(b.console, Console::Closed), "{:?}", b.console);
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "");
    }

    #[test]
    fn stderr_on_a_tty_nobody_reads_never_blocks_and_gives_whole_lines() {
        // A pty whose master side is not read stands in for a serial
        // console that takes no more output: the tty's buffers fill, then
        // a non-blocking write takes part of a line or nothing.
        let pty = nix::pty::openpty(None, None).unwrap();
        let (master, slave) = (pty.master, pty.slave);
        let (mut b, _d, _unused) = backend("tty", false, true);
        b.err_sink = ErrSink::Fd(slave);
        const STALLED: u64 = 5000;
        let mut b = must_not_block("logging into a full tty", move || {
            for i in 0..STALLED {
                b.emit(Severity::Info, format!("L{i}").as_bytes(), at(i));
            }
            b
        });
        assert!(matches!(b.console, Console::Own(_)), "{:?}", b.console);
        assert!(b.copy.dropped > 0, "the tty filled up");
        // The terminal reads again.
        let got = Arc::new(Mutex::new(Vec::<u8>::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (got, stop) = (got.clone(), stop.clone());
            std::thread::spawn(move || {
                crate::sys::set_nonblocking(master.as_fd(), true).unwrap();
                let mut buf = [0u8; 4096];
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match nix::unistd::read(&master, &mut buf) {
                        Ok(n) if n > 0 => got.lock().unwrap().extend_from_slice(&buf[..n]),
                        _ => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        // Lines are offered until one is taken whole (room came back).
        let mut i = STALLED;
        let last = loop {
            b.emit(Severity::Info, format!("L{i}").as_bytes(), at(i));
            if b.copy.dropped == 0 && b.copy.tail.is_empty() {
                break i;
            }
            assert!(i < STALLED + 10_000, "the tty never took a line again");
            i += 1;
            std::thread::sleep(Duration::from_millis(2));
        };
        let end = format!("INFO L{last}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let text = loop {
            let t = String::from_utf8_lossy(&got.lock().unwrap()).into_owned();
            if t.lines().any(|l| l.trim_end().contains(&end)) {
                break t;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "L{last} never arrived"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        reader.join().unwrap();
        // Every line whole (ONLCR turns each newline into CR LF), in order,
        // each carrying the count of those dropped since the one before.
        let mut prev: Option<u64> = None;
        for l in text.split("\r\n").filter(|l| !l.is_empty()) {
            let body = l
                .strip_prefix("tether-test[9]: INFO ")
                .unwrap_or_else(|| panic!("not a whole line: {l:?}"));
            let (n, dropped) = parse_console_line(body);
            let expect = prev.map_or(n, |p| n - p - 1);
            assert_eq!(dropped, expect, "count on {l:?} after {prev:?}");
            prev = Some(n);
        }
        assert_eq!(prev, Some(last));
    }

    #[test]
    fn a_panic_is_logged_through_the_logger_and_never_waits_for_its_lock() {
        let d = tmpdir("panic");
        let server = UnixDatagram::bind(d.join("log.sock")).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        init(
            "tether-test",
            &LogSettings {
                syslog_socket: d.join("log.sock"),
                kmsg: false,
                stderr: false,
                ..LogSettings::default()
            },
        );
        // What the hook gets: `panicked at FILE:LINE:COL:` and the message.
        log_panic(&"panicked at src/x.rs:1:2:\nboom");
        let got = recv(&server).unwrap();
        assert!(
            got.starts_with("<26>tether-test[")
                && got.ends_with("]: PANIC: panicked at src/x.rs:1:2: boom"),
            "{got:?}"
        );
        // The lock held (a panic from inside the logger): dropped, at once.
        let guard = LOGGER.backend.lock().unwrap();
        must_not_block("the panic hook with the logger's lock held", || {
            log_panic(&"again")
        });
        drop(guard);
        // The hook init installed is this one.
        let t = std::thread::spawn(|| panic!("from a thread"));
        assert!(t.join().is_err());
        let got = recv(&server).unwrap();
        assert!(
            got.contains("from a thread") && got.starts_with("<26>"),
            "{got:?}"
        );
        // The default hook back, for the other tests' failure messages.
        drop(std::panic::take_hook());
    }

    /// A checker of RFC 5424's grammar (section 6) for what tether sends:
    /// returns (pri, app, procid, msgid, sd params, msg) or why not.
    #[allow(clippy::type_complexity)]
    fn parse_5424(
        line: &str,
    ) -> Result<(u8, String, String, String, Vec<(String, String)>, String), String> {
        let b = line.as_bytes();
        let close = line.find('>').ok_or("no PRI")?;
        if b[0] != b'<' || !(2..=4).contains(&close) {
            return Err("PRI".into());
        }
        let pri: u8 = line[1..close].parse().map_err(|_| "PRI value")?;
        let rest = line[close + 1..].strip_prefix("1 ").ok_or("VERSION")?;
        let mut it = rest.splitn(6, ' ');
        let ts = it.next().ok_or("TIMESTAMP")?;
        // FULL-DATE "T" PARTIAL-TIME with SECFRAC and "Z".
        let tb = ts.as_bytes();
        if ts.len() != 27
            || tb[4] != b'-'
            || tb[7] != b'-'
            || tb[10] != b'T'
            || tb[13] != b':'
            || tb[16] != b':'
            || tb[19] != b'.'
            || tb[26] != b'Z'
        {
            return Err(format!("TIMESTAMP {ts}"));
        }
        let field = |v: Option<&str>, what: &str, max: usize| -> Result<String, String> {
            let v = v.ok_or(format!("{what} missing"))?;
            if v.is_empty() || v.len() > max || !v.bytes().all(printusascii) {
                return Err(format!("{what} {v:?}"));
            }
            Ok(v.to_string())
        };
        field(it.next(), "HOSTNAME", 255)?;
        let app = field(it.next(), "APP-NAME", 48)?;
        let procid = field(it.next(), "PROCID", 128)?;
        let msgid = field(it.next(), "MSGID", 32)?;
        let tail = it.next().ok_or("STRUCTURED-DATA missing")?;
        let mut params = Vec::new();
        let msg;
        if let Some(m) = tail.strip_prefix('-') {
            msg = m;
        } else {
            let tb = tail.as_bytes();
            if tb.first() != Some(&b'[') {
                return Err("SD-ELEMENT".into());
            }
            let mut i = 1;
            let id_end = tail[i..].find([' ', ']']).ok_or("SD-ID")? + i;
            let id = &tail[i..id_end];
            if id.is_empty() || id.len() > 32 || id.bytes().any(|c| matches!(c, b'=' | b'"')) {
                return Err(format!("SD-ID {id}"));
            }
            i = id_end;
            while tb[i] == b' ' {
                i += 1;
                let eq = tail[i..].find('=').ok_or("PARAM-NAME")? + i;
                let name = &tail[i..eq];
                if name.is_empty()
                    || name.len() > 32
                    || !name
                        .bytes()
                        .all(|c| printusascii(c) && !matches!(c, b'=' | b' ' | b']' | b'"'))
                {
                    return Err(format!("PARAM-NAME {name:?}"));
                }
                i = eq + 1;
                if tb[i] != b'"' {
                    return Err("PARAM-VALUE quote".into());
                }
                i += 1;
                let mut v = Vec::new();
                loop {
                    match tb.get(i) {
                        None => return Err("PARAM-VALUE unterminated".into()),
                        Some(b'\\') if matches!(tb.get(i + 1), Some(b'"' | b'\\' | b']')) => {
                            v.push(tb[i + 1]);
                            i += 2;
                        }
                        Some(b'"') => break,
                        Some(b']') => return Err("unescaped ] in PARAM-VALUE".into()),
                        Some(&c) => {
                            v.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
                params.push((name.to_string(), String::from_utf8(v).unwrap()));
            }
            if tb.get(i) != Some(&b']') {
                return Err("SD-ELEMENT close".into());
            }
            assert_eq!(id, SD_ID);
            msg = &tail[i + 1..];
        }
        let msg = match msg.strip_prefix(' ') {
            Some(m) => m,
            None if msg.is_empty() => "",
            None => return Err("SP before MSG".into()),
        };
        Ok((pri, app, procid, msgid, params, msg.to_string()))
    }

    #[test]
    fn rfc5424_lines_follow_the_grammar_and_escape_sd_values() {
        let mut sd = SdBuf::new();
        assert!(sd.push("layer", "init"));
        assert!(sd.push("detail", r#"a "quoted" \path] end"#));
        let mut buf = Vec::new();
        let t = std::time::UNIX_EPOCH + Duration::from_micros(1_796_161_545_000_042);
        format_line_5424(
            &mut buf,
            Severity::Info.pri(FACILITY_DAEMON),
            t,
            "box-17",
            "tether-watchdogd",
            42,
            MsgId::Liveness,
            sd.as_bytes(),
            b"liveness: init ok\n",
        );
        let line = String::from_utf8(buf).unwrap();
        assert_eq!(
            line,
            r#"<30>1 2026-12-01T21:45:45.000042Z box-17 tether-watchdogd 42 LIVENESS [tether@32473 layer="init" detail="a \"quoted\" \\path\] end"] liveness: init ok"#
        );
        let (pri, app, pid, msgid, params, msg) = parse_5424(&line).unwrap();
        assert_eq!(
            (pri, app.as_str(), pid.as_str(), msgid.as_str()),
            (30, "tether-watchdogd", "42", "LIVENESS")
        );
        assert_eq!(
            params[1].1, r#"a "quoted" \path] end"#,
            "escapes undone by a parser"
        );
        assert_eq!(msg, "liveness: init ok");
    }

    #[test]
    fn rfc5424_empty_sd_is_a_dash_and_bad_fields_are_made_legal() {
        let mut buf = Vec::new();
        format_line_5424(
            &mut buf,
            Severity::Warning.pri(FACILITY_DAEMON),
            std::time::SystemTime::now(),
            "",
            "my service:1",
            7,
            MsgId::Output,
            &[],
            b"",
        );
        let line = String::from_utf8(buf).unwrap();
        let (_, app, _, msgid, params, msg) =
            parse_5424(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!((app.as_str(), msgid.as_str()), ("my_service:1", "OUTPUT"));
        assert!(params.is_empty() && msg.is_empty(), "{line}");
        assert!(line.ends_with(" OUTPUT -"), "no trailing space: {line:?}");
        // Names are made legal; a parameter that does not fit is left out whole.
        let mut sd = SdBuf::new();
        assert!(sd.push("a b=\"]", "x"));
        assert!(sd.push("absent", ""));
        assert!(!sd.push("big", &"v".repeat(MAX_SD)));
        assert_eq!(sd.as_bytes(), b" a_b___=\"x\"");
    }

    #[test]
    fn msgids_come_from_the_target_not_the_text() {
        assert_eq!(MsgId::of("liveness", Severity::Info), MsgId::Liveness);
        assert_eq!(MsgId::of("reset", Severity::Warning), MsgId::Reset);
        assert_eq!(MsgId::of(ALERT_TARGET, Severity::Alert), MsgId::Alert);
        assert_eq!(MsgId::of("exit", Severity::Info), MsgId::Exit);
        assert_eq!(
            MsgId::of("tether_watchdogd::main", Severity::Info),
            MsgId::Log
        );
        // key-values of a `log` record become SD-PARAMs.
        let kvs = [("layer", "restarter"), ("silent_ms", "20400")];
        let rec = log::Record::builder()
            .args(format_args!("x"))
            .key_values(&kvs)
            .build();
        let mut sd = SdBuf::new();
        rec.key_values().visit(&mut sd).unwrap();
        assert_eq!(sd.as_bytes(), br#" layer="restarter" silent_ms="20400""#);
    }

    #[test]
    fn rfc5424_backend_and_service_output_lines_reach_the_socket() {
        let d = tmpdir("rfc5424");
        let path = d.join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_nonblocking(true).unwrap();
        let settings = LogSettings {
            syslog_socket: path.clone(),
            kmsg: false,
            stderr: false,
            format: LogFormat::Rfc5424,
        };
        let mut b = Backend::new("tether-test", 9, settings);
        let mut sd = SdBuf::new();
        sd.push("cause", "watchdog");
        b.emit_event(
            Severity::Warning,
            MsgId::Reset,
            sd.as_bytes(),
            b"previous boot ended",
            at(0),
        );
        let line = recv(&server).unwrap();
        let (pri, app, pid, msgid, params, msg) =
            parse_5424(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(
            (pri, app.as_str(), pid.as_str(), msgid.as_str()),
            (28, "tether-test", "9", "RESET")
        );
        assert_eq!(params, [("cause".to_string(), "watchdog".to_string())]);
        assert_eq!(msg, "previous boot ended");
        let mut s = Syslog::new(&path);
        s.set_format(Some(LogFormat::Rfc5424));
        s.send(Severity::Err, "sensor", 77, b"disk full", at(0))
            .unwrap();
        let line = recv(&server).unwrap();
        let (_, app, pid, msgid, params, msg) =
            parse_5424(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(
            (app.as_str(), pid.as_str(), msgid.as_str(), msg.as_str()),
            ("sensor", "77", "OUTPUT", "disk full")
        );
        assert!(params.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}
