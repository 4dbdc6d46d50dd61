//! sd_notify: readiness and liveness messages from services.
//!
//! A service started with `notify = "ready"` or `"watchdog"` gets
//! `NOTIFY_SOCKET=RUN/notify/NAME.sock` in its environment and sends
//! datagrams such as `READY=1\nSTATUS=listening\n` there, exactly as to
//! systemd, so daemons that already support systemd work unmodified.
//!
//! This module holds:
//! - [`parse_datagram`]: the pure parser of one datagram into
//!   [`NotifyMsg`]s;
//! - [`NotifySocket`]: one datagram socket per notify-enabled service,
//!   drained without blocking from the restarter's event loop;
//! - [`sender_in_group`]: the `/proc` check the supervisor uses to decide
//!   whether a still-living sender belongs to the service's process group.
//!
//! What the messages *mean* (ready, watchdog deadline) is the supervisor's
//! business; this module only receives and parses.
//!
//! Decisions taken where systemd or the design is silent:
//! - A datagram is accepted or rejected as a whole: one malformed line (no
//!   `=`, empty key, a known key with an invalid value) rejects the whole
//!   datagram, which is counted in [`NotifySocket::rejected`]. A sender that
//!   writes garbage is more likely confused than half right. Unknown keys
//!   (`ERRNO=`, `FDSTORE=`, `EXTEND_TIMEOUT_USEC=`, ...) are not errors: they
//!   come back as [`NotifyMsg::Other`] with the key, and the supervisor
//!   ignores them, as systemd ignores what it does not know.
//! - Known keys take only their documented values: `READY`, `RELOADING`,
//!   `STOPPING` only `1`; `WATCHDOG` `1` or `trigger`; `WATCHDOG_USEC` and
//!   `MAINPID` positive integers. Anything else is a [`NotifyError::BadValue`].
//! - `STATUS=` is truncated to [`STATUS_MAX_CHARS`] characters (on a character
//!   boundary) and ASCII control characters in it become `?`, so status text
//!   is always safe to print on a terminal.
//! - Empty lines (a trailing `\n`, `\n\n`) are skipped; a datagram with no
//!   non-empty line at all is rejected as [`NotifyError::Empty`].
//! - Datagrams longer than [`MAX_DATAGRAM`] bytes are rejected (detected with
//!   `MSG_TRUNC`, so an oversized datagram never looks like a shorter valid
//!   one).
//! - Descriptors passed with a datagram (`FDSTORE=1`) are not supported: they
//!   are closed on arrival (received with `MSG_CMSG_CLOEXEC` into a control
//!   buffer large enough for the kernel maximum, so none is ever leaked) and
//!   the messages in the datagram are processed as usual. Closing them at
//!   once is also what completes `sd_notify_barrier()` (`BARRIER=1` with a
//!   pipe's write end, which the sender waits to see closed): so
//!   `systemd-notify` (which sends a barrier after its message unless given
//!   `--no-block`) returns at once instead of timing out.
//! - The socket file is mode 0666: it lives in a root-owned directory, one
//!   per service, and the service may run as any user. Attribution is by
//!   socket, so a message from a sender that has already exited
//!   (`systemd-notify` run from a script) still counts; the sender's pid from
//!   `SCM_CREDENTIALS` is passed along for the supervisor's optional check.

use std::fmt;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr, UnixCredentials,
};

/// The largest datagram accepted, in bytes (as systemd's own limit on
/// notification messages without descriptors is in this range; real
/// messages are tens of bytes).
pub const MAX_DATAGRAM: usize = 4096;

/// `STATUS=` text is truncated to this many characters.
pub const STATUS_MAX_CHARS: usize = 256;

/// Keys of [`NotifyMsg::Other`] and values quoted in errors are truncated to
/// this many characters.
const QUOTE_MAX_CHARS: usize = 64;

/// At most this many datagrams are read per [`NotifySocket::receive`] call,
/// so one chatty service cannot starve the event loop; the socket stays
/// readable and the loop comes back next turn. (The kernel queues at most
/// `net.unix.max_dgram_qlen` datagrams per socket, 10 by default; a sender
/// using a blocking socket waits while the queue is full, a non-blocking one
/// gets `EAGAIN`. So a wedged restarter can block a service in `sd_notify`;
/// the restarter's own supervision by init bounds that.)
pub const MAX_DATAGRAMS_PER_CALL: usize = 64;

/// The most descriptors the kernel passes in one message (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// One message of the sd_notify protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyMsg {
    /// `READY=1`: start-up finished.
    Ready,
    /// `RELOADING=1`: reloading its configuration.
    Reloading,
    /// `STOPPING=1`: shutting down.
    Stopping,
    /// `WATCHDOG=1`: alive, reset the watchdog deadline.
    Watchdog,
    /// `WATCHDOG=trigger`: the service asks to be treated as hung.
    WatchdogTrigger,
    /// `WATCHDOG_USEC=N`: change the watchdog timeout to N microseconds.
    WatchdogUsec(u64),
    /// `STATUS=text` (truncated, control characters replaced).
    Status(String),
    /// `MAINPID=N`: the service's main process is N.
    MainPid(i32),
    /// Any other key (only the key is kept, truncated); ignored.
    Other(String),
}

/// Why a datagram was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyError {
    /// Longer than [`MAX_DATAGRAM`] bytes (`len` is the real length when
    /// known).
    Oversize { len: usize },
    /// No non-empty line.
    Empty,
    /// Not UTF-8; `valid_up_to` bytes were.
    NotUtf8 { valid_up_to: usize },
    /// Line `line` (1-based) has no `=`.
    MissingEquals { line: usize },
    /// Line `line` (1-based) starts with `=`.
    EmptyKey { line: usize },
    /// A known key with a value it does not take.
    BadValue { key: String, value: String },
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyError::Oversize { len } => {
                write!(
                    f,
                    "datagram of {len} bytes is longer than {MAX_DATAGRAM} bytes"
                )
            }
            NotifyError::Empty => write!(f, "empty datagram"),
            NotifyError::NotUtf8 { valid_up_to } => {
                write!(
                    f,
                    "datagram is not UTF-8 (invalid after byte {valid_up_to})"
                )
            }
            NotifyError::MissingEquals { line } => {
                write!(f, "line {line}: expected KEY=VALUE, no '='")
            }
            NotifyError::EmptyKey { line } => write!(f, "line {line}: empty key"),
            NotifyError::BadValue { key, value } => write!(f, "invalid value for {key}: {value:?}"),
        }
    }
}

impl std::error::Error for NotifyError {}

/// Parses one sd_notify datagram: newline-separated `KEY=VALUE` lines. Pure.
pub fn parse_datagram(buf: &[u8]) -> Result<Vec<NotifyMsg>, NotifyError> {
    if buf.len() > MAX_DATAGRAM {
        return Err(NotifyError::Oversize { len: buf.len() });
    }
    let text = std::str::from_utf8(buf).map_err(|e| NotifyError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let lineno = i + 1;
        let (key, value) = line
            .split_once('=')
            .ok_or(NotifyError::MissingEquals { line: lineno })?;
        if key.is_empty() {
            return Err(NotifyError::EmptyKey { line: lineno });
        }
        out.push(parse_line(key, value)?);
    }
    if out.is_empty() {
        return Err(NotifyError::Empty);
    }
    Ok(out)
}

fn parse_line(key: &str, value: &str) -> Result<NotifyMsg, NotifyError> {
    let bad = || NotifyError::BadValue {
        key: key.to_string(),
        value: truncate_chars(value, QUOTE_MAX_CHARS),
    };
    let only_one = |msg: NotifyMsg| if value == "1" { Ok(msg) } else { Err(bad()) };
    match key {
        "READY" => only_one(NotifyMsg::Ready),
        "RELOADING" => only_one(NotifyMsg::Reloading),
        "STOPPING" => only_one(NotifyMsg::Stopping),
        "WATCHDOG" => match value {
            "1" => Ok(NotifyMsg::Watchdog),
            "trigger" => Ok(NotifyMsg::WatchdogTrigger),
            _ => Err(bad()),
        },
        "WATCHDOG_USEC" => match parse_decimal::<u64>(value) {
            Some(n) if n > 0 => Ok(NotifyMsg::WatchdogUsec(n)),
            _ => Err(bad()),
        },
        "MAINPID" => match parse_decimal::<i32>(value) {
            Some(n) if n > 0 => Ok(NotifyMsg::MainPid(n)),
            _ => Err(bad()),
        },
        "STATUS" => Ok(NotifyMsg::Status(sanitize_status(value))),
        _ => Ok(NotifyMsg::Other(truncate_chars(key, QUOTE_MAX_CHARS))),
    }
}

/// Plain ASCII decimal digits only (no sign, no spaces, no `0x`).
fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_string(),
        None => s.to_string(),
    }
}

fn sanitize_status(s: &str) -> String {
    s.chars()
        .take(STATUS_MAX_CHARS)
        .map(|c| if c.is_ascii_control() { '?' } else { c })
        .collect()
}

/// One accepted datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender's pid from `SCM_CREDENTIALS` (in the restarter's pid
    /// namespace); `None` when the kernel gave 0 (sender in another pid
    /// namespace). The sender may have exited since.
    pub sender_pid: Option<i32>,
    pub sender_uid: Option<u32>,
    pub messages: Vec<NotifyMsg>,
}

/// The notify socket of one service.
pub struct NotifySocket {
    fd: OwnedFd,
    path: PathBuf,
    /// (dev, ino) of the socket file we bound, so `Drop` never unlinks a
    /// socket bound at the same path by someone else since.
    identity: Option<(u64, u64)>,
    rejected: u64,
    last_rejection: Option<NotifyError>,
}

/// The receive buffers, shared by every socket of the (single-threaded)
/// restarter: one set per service would cost about 5 KiB each, 5 MiB at
/// 1000 services. One byte more than the limit is not needed since
/// `MSG_TRUNC` reports the real length.
struct Scratch {
    buf: Box<[u8]>,
    cmsg: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch {
        buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
        cmsg: nix::cmsg_space!(UnixCredentials, [std::os::fd::RawFd; SCM_MAX_FD]),
    });
}

impl fmt::Debug for NotifySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifySocket")
            .field("fd", &self.fd.as_raw_fd())
            .field("path", &self.path)
            .field("rejected", &self.rejected)
            .finish()
    }
}

impl NotifySocket {
    /// Binds a datagram socket at `path` (`SOCK_CLOEXEC | SOCK_NONBLOCK`,
    /// `SO_PASSCRED` on, mode 0666). Creates the parent directory if needed
    /// and removes a stale file at `path` first.
    pub fn bind(path: &Path) -> std::io::Result<NotifySocket> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        setsockopt(&fd, sockopt::PassCred, &true)?;
        let addr = UnixAddr::new(path)?;
        bind(fd.as_raw_fd(), &addr)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        let identity = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Ok(NotifySocket {
            fd,
            path: path.to_path_buf(),
            identity,
            rejected: 0,
            last_rejection: None,
        })
    }

    /// Readable (`EPOLLIN`) when datagrams are waiting.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket's path (the service's `NOTIFY_SOCKET`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Datagrams rejected so far (malformed or oversized).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Why the latest datagram was rejected (for a log line).
    pub fn last_rejection(&self) -> Option<&NotifyError> {
        self.last_rejection.as_ref()
    }

    /// Reads up to [`MAX_DATAGRAMS_PER_CALL`] waiting datagrams without
    /// blocking; returns the accepted ones in arrival order and counts the
    /// rejected ones. If more are waiting, the socket stays readable.
    pub fn receive(&mut self) -> Vec<Received> {
        self.receive_at_most(MAX_DATAGRAMS_PER_CALL)
    }

    fn receive_at_most(&mut self, max: usize) -> Vec<Received> {
        let mut out = Vec::new();
        for _ in 0..max {
            match self.receive_one() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(Errno::EINTR) => continue,
                // EAGAIN: nothing left. Any other error on a bound datagram
                // socket is unexpected; stop for this turn rather than spin.
                Err(_) => break,
            }
        }
        out
    }

    /// One datagram: `Ok(Some)` accepted, `Ok(None)` rejected (counted).
    fn receive_one(&mut self) -> Result<Option<Received>, Errno> {
        SCRATCH.with(|scratch| self.receive_into(&mut scratch.borrow_mut()))
    }

    fn receive_into(&mut self, scratch: &mut Scratch) -> Result<Option<Received>, Errno> {
        let Scratch { buf, cmsg } = scratch;
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC | MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let len = msg.bytes;
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
        let mut creds = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::ScmCredentials(uc) => creds = Some((uc.pid(), uc.uid())),
                    ControlMessageOwned::ScmRights(fds) => {
                        for fd in fds {
                            let _ = nix::unistd::close(fd);
                        }
                    }
                    _ => {}
                }
            }
        }
        if truncated || len > MAX_DATAGRAM {
            self.reject(NotifyError::Oversize { len });
            return Ok(None);
        }
        let Some(data) = buf.get(..len) else {
            self.reject(NotifyError::Oversize { len });
            return Ok(None);
        };
        match parse_datagram(data) {
            Ok(messages) => Ok(Some(Received {
                sender_pid: creds.map(|(pid, _)| pid).filter(|&p| p > 0),
                sender_uid: creds.map(|(_, uid)| uid),
                messages,
            })),
            Err(e) => {
                self.reject(e);
                Ok(None)
            }
        }
    }

    fn reject(&mut self, e: NotifyError) {
        self.rejected += 1;
        self.last_rejection = Some(e);
    }
}

impl Drop for NotifySocket {
    /// Removes the socket file, unless it has been replaced since.
    fn drop(&mut self) {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_some() && current == self.identity {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether process `pid` is in process group `pgid`, from `/proc/PID/stat`
/// (field 5, `pgrp`). `None` when the process is gone (or `/proc` cannot
/// tell).
pub fn sender_in_group(pid: i32, pgid: i32) -> Option<bool> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_pgrp(&stat).map(|g| g == pgid)
}

/// The `pgrp` field of a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may itself contain spaces and parentheses, so the
/// fields are counted from the last `)`.
fn stat_pgrp(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state (3), ppid (4), pgrp (5).
    rest.split_ascii_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    fn parse(s: &str) -> Result<Vec<NotifyMsg>, NotifyError> {
        parse_datagram(s.as_bytes())
    }

    #[test]
    fn each_known_message_parses() {
        assert_eq!(parse("READY=1"), Ok(vec![NotifyMsg::Ready]));
        assert_eq!(parse("RELOADING=1"), Ok(vec![NotifyMsg::Reloading]));
        assert_eq!(parse("STOPPING=1"), Ok(vec![NotifyMsg::Stopping]));
        assert_eq!(parse("WATCHDOG=1"), Ok(vec![NotifyMsg::Watchdog]));
        assert_eq!(
            parse("WATCHDOG=trigger"),
            Ok(vec![NotifyMsg::WatchdogTrigger])
        );
        assert_eq!(
            parse("WATCHDOG_USEC=2500000"),
            Ok(vec![NotifyMsg::WatchdogUsec(2_500_000)])
        );
        assert_eq!(parse("MAINPID=4242"), Ok(vec![NotifyMsg::MainPid(4242)]));
        assert_eq!(
            parse("STATUS=serving 3 clients"),
            Ok(vec![NotifyMsg::Status("serving 3 clients".into())])
        );
        assert_eq!(parse("STATUS="), Ok(vec![NotifyMsg::Status(String::new())]));
    }

    #[test]
    fn several_lines_parse_in_order_and_empty_lines_are_skipped() {
        assert_eq!(
            parse("READY=1\nSTATUS=up=and running\n\nWATCHDOG=1\n"),
            Ok(vec![
                NotifyMsg::Ready,
                NotifyMsg::Status("up=and running".into()),
                NotifyMsg::Watchdog
            ])
        );
    }

    #[test]
    fn unknown_keys_are_other_not_errors() {
        assert_eq!(
            parse("ERRNO=2\nREADY=1\nFDSTORE=1"),
            Ok(vec![
                NotifyMsg::Other("ERRNO".into()),
                NotifyMsg::Ready,
                NotifyMsg::Other("FDSTORE".into())
            ])
        );
        let long_key = "K".repeat(1000) + "=v";
        assert_eq!(
            parse(&long_key),
            Ok(vec![NotifyMsg::Other("K".repeat(QUOTE_MAX_CHARS))])
        );
    }

    #[test]
    fn oversize_datagram_is_rejected() {
        let big = "STATUS=".to_string() + &"x".repeat(MAX_DATAGRAM);
        assert_eq!(
            parse(&big),
            Err(NotifyError::Oversize {
                len: MAX_DATAGRAM + 7
            })
        );
        let exact = "STATUS=".to_string() + &"x".repeat(MAX_DATAGRAM - 7);
        assert!(parse(&exact).is_ok());
    }

    #[test]
    fn empty_datagram_is_rejected() {
        assert_eq!(parse(""), Err(NotifyError::Empty));
        assert_eq!(parse("\n\n"), Err(NotifyError::Empty));
    }

    #[test]
    fn non_utf8_is_rejected() {
        assert_eq!(
            parse_datagram(b"READY=1\nSTATUS=\xff"),
            Err(NotifyError::NotUtf8 { valid_up_to: 15 })
        );
    }

    #[test]
    fn line_without_equals_rejects_the_datagram() {
        assert_eq!(
            parse("READY=1\nhello"),
            Err(NotifyError::MissingEquals { line: 2 })
        );
        assert_eq!(parse("=1"), Err(NotifyError::EmptyKey { line: 1 }));
    }

    #[test]
    fn flags_take_only_one() {
        for bad in [
            "READY=0",
            "READY=",
            "READY=yes",
            "STOPPING=2",
            "RELOADING=true",
            "WATCHDOG=0",
            "WATCHDOG=Trigger",
        ] {
            assert!(
                matches!(parse(bad), Err(NotifyError::BadValue { .. })),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn watchdog_usec_must_be_a_positive_integer() {
        for bad in [
            "0",
            "-5",
            "+5",
            " 5",
            "5s",
            "1.5",
            "",
            "99999999999999999999999",
        ] {
            let r = parse(&format!("WATCHDOG_USEC={bad}"));
            assert_eq!(
                r,
                Err(NotifyError::BadValue {
                    key: "WATCHDOG_USEC".into(),
                    value: bad.into()
                }),
                "WATCHDOG_USEC={bad}"
            );
        }
        assert_eq!(
            parse("WATCHDOG_USEC=18446744073709551615"),
            Ok(vec![NotifyMsg::WatchdogUsec(u64::MAX)])
        );
    }

    #[test]
    fn mainpid_must_be_a_positive_integer() {
        for bad in ["0", "-1", "abc", "", "2147483648"] {
            assert!(
                matches!(
                    parse(&format!("MAINPID={bad}")),
                    Err(NotifyError::BadValue { .. })
                ),
                "MAINPID={bad}"
            );
        }
        assert_eq!(
            parse("MAINPID=2147483647"),
            Ok(vec![NotifyMsg::MainPid(i32::MAX)])
        );
    }

    #[test]
    fn status_is_truncated_on_a_char_boundary_and_sanitized() {
        let long = "é".repeat(STATUS_MAX_CHARS + 50);
        match parse(&format!("STATUS={long}")).unwrap().as_slice() {
            [NotifyMsg::Status(s)] => {
                assert_eq!(s.chars().count(), STATUS_MAX_CHARS);
                assert!(s.chars().all(|c| c == 'é'));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            parse("STATUS=a\tb\u{1b}[2Jc\r"),
            Ok(vec![NotifyMsg::Status("a?b?[2Jc?".into())])
        );
    }

    #[test]
    fn bad_value_quote_is_bounded() {
        let v = "x".repeat(500);
        match parse(&format!("MAINPID={v}")) {
            Err(NotifyError::BadValue { value, .. }) => assert_eq!(value.len(), QUOTE_MAX_CHARS),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn stat_pgrp_counts_from_the_last_paren() {
        assert_eq!(stat_pgrp("123 (sh) S 1 456 456 0 -1 4194560 0"), Some(456));
        assert_eq!(stat_pgrp("123 (we ird) (name)) R 1 789 789 0"), Some(789));
        assert_eq!(stat_pgrp("garbage"), None);
        assert_eq!(stat_pgrp("1 (x) S"), None);
    }

    #[test]
    fn sender_in_group_sees_own_process_and_none_for_gone() {
        let me = std::process::id() as i32;
        let pgid = nix::unistd::getpgrp().as_raw();
        assert_eq!(sender_in_group(me, pgid), Some(true));
        assert_eq!(sender_in_group(me, pgid + 1), Some(false));
        // A reaped child is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert_eq!(sender_in_group(pid, pgid), None);
        assert_eq!(sender_in_group(0, pgid), None);
        assert_eq!(sender_in_group(-1, pgid), None);
    }

    fn scratch(label: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "tether-notify-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    /// Receives until `n` datagrams were accepted or 5 s passed (the socket
    /// is non-blocking; delivery on a local socket is immediate, the loop
    /// only guards against a slow child process).
    fn receive_n(sock: &mut NotifySocket, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            got.extend(sock.receive());
            if got.len() < n {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        got
    }

    #[test]
    fn bind_creates_parent_replaces_stale_file_and_sets_mode() {
        let dir = scratch("bind");
        let path = dir.join("notify").join("svc.sock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"stale").unwrap();
        let sock = NotifySocket::bind(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o666);
        assert_eq!(sock.path(), path.as_path());
        let flags = nix::fcntl::fcntl(sock.fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "notify socket must be close-on-exec"
        );
        drop(sock);
        assert!(!path.exists(), "drop removes the socket file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn drop_does_not_remove_a_socket_rebound_at_the_same_path() {
        let dir = scratch("rebind");
        let path = dir.join("svc.sock");
        let old = NotifySocket::bind(&path).unwrap();
        let new = NotifySocket::bind(&path).unwrap();
        drop(old);
        assert!(
            path.exists(),
            "the old socket's drop must not unlink the new one"
        );
        drop(new);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn messages_arrive_with_the_senders_pid() {
        let dir = scratch("recv");
        let path = dir.join("svc.sock");
        let mut sock = NotifySocket::bind(&path).unwrap();
        assert!(
            sock.receive().is_empty(),
            "nothing waiting: returns at once"
        );
        let client = UnixDatagram::unbound().unwrap();
        client.send_to(b"READY=1\nSTATUS=ok\n", &path).unwrap();
        client.send_to(b"WATCHDOG=1", &path).unwrap();
        let got = receive_n(&mut sock, 2);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].sender_pid, Some(std::process::id() as i32));
        assert_eq!(got[0].sender_uid, Some(nix::unistd::getuid().as_raw()));
        assert_eq!(
            got[0].messages,
            vec![NotifyMsg::Ready, NotifyMsg::Status("ok".into())]
        );
        assert_eq!(got[1].messages, vec![NotifyMsg::Watchdog]);
        assert_eq!(sock.rejected(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn oversized_and_malformed_datagrams_are_counted_and_skipped() {
        let dir = scratch("reject");
        let path = dir.join("svc.sock");
        let mut sock = NotifySocket::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        let big = "STATUS=".to_string() + &"x".repeat(MAX_DATAGRAM * 2);
        client.send_to(big.as_bytes(), &path).unwrap();
        client.send_to(b"no equals sign", &path).unwrap();
        client.send_to(b"", &path).unwrap();
        client.send_to(b"READY=1", &path).unwrap();
        let got = receive_n(&mut sock, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].messages, vec![NotifyMsg::Ready]);
        assert_eq!(sock.rejected(), 3);
        assert_eq!(sock.last_rejection(), Some(&NotifyError::Empty));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn exactly_max_size_datagram_is_not_truncated() {
        let dir = scratch("exact");
        let path = dir.join("svc.sock");
        let mut sock = NotifySocket::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        let exact = "STATUS=".to_string() + &"y".repeat(MAX_DATAGRAM - 7);
        client.send_to(exact.as_bytes(), &path).unwrap();
        let got = receive_n(&mut sock, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].messages,
            vec![NotifyMsg::Status("y".repeat(STATUS_MAX_CHARS))]
        );
        assert_eq!(sock.rejected(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn receive_is_bounded_per_call() {
        // The kernel queues few datagrams per socket (net.unix.max_dgram_qlen,
        // 10 by default), so the bound is exercised with a smaller limit.
        let dir = scratch("bounded");
        let path = dir.join("svc.sock");
        let mut sock = NotifySocket::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.set_nonblocking(true).unwrap();
        for _ in 0..8 {
            client.send_to(b"WATCHDOG=1", &path).unwrap();
        }
        assert_eq!(sock.receive_at_most(5).len(), 5);
        assert_eq!(sock.receive_at_most(5).len(), 3);
        assert!(sock.receive().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn passed_descriptors_are_closed_and_messages_still_count() {
        use nix::sys::socket::{sendmsg, ControlMessage};
        use std::io::IoSlice;
        let dir = scratch("fds");
        let path = dir.join("svc.sock");
        let mut sock = NotifySocket::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        // Four copies of a pipe's write end: the read end sees EOF only once
        // every copy the restarter received is closed again.
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .unwrap();
        let addr = UnixAddr::new(&path).unwrap();
        sendmsg(
            client.as_raw_fd(),
            &[IoSlice::new(b"FDSTORE=1\nREADY=1")],
            &[ControlMessage::ScmRights(&[w.as_raw_fd(); 4])],
            MsgFlags::empty(),
            Some(&addr),
        )
        .unwrap();
        drop(w);
        let got = receive_n(&mut sock, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].messages,
            vec![NotifyMsg::Other("FDSTORE".into()), NotifyMsg::Ready]
        );
        let mut b = [0u8; 1];
        assert_eq!(
            nix::unistd::read(&r, &mut b),
            Ok(0),
            "a passed descriptor stayed open"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn barrier_descriptor_is_closed_so_the_sender_sees_eof() {
        use nix::sys::socket::{sendmsg, ControlMessage};
        use std::io::IoSlice;
        let dir = scratch("barrier");
        let path = dir.join("svc.sock");
        let mut sock = NotifySocket::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .unwrap();
        let addr = UnixAddr::new(&path).unwrap();
        sendmsg(
            client.as_raw_fd(),
            &[IoSlice::new(b"BARRIER=1")],
            &[ControlMessage::ScmRights(&[w.as_raw_fd()])],
            MsgFlags::empty(),
            Some(&addr),
        )
        .unwrap();
        drop(w);
        let mut b = [0u8; 1];
        assert_eq!(
            nix::unistd::read(&r, &mut b),
            Err(Errno::EAGAIN),
            "in flight: still open"
        );
        let got = receive_n(&mut sock, 1);
        assert_eq!(got[0].messages, vec![NotifyMsg::Other("BARRIER".into())]);
        assert_eq!(
            nix::unistd::read(&r, &mut b),
            Ok(0),
            "the barrier is released"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn message_from_a_sender_that_already_exited_still_arrives() {
        let dir = scratch("exited");
        let path = dir.join("svc.sock");
        let mut sock = NotifySocket::bind(&path).unwrap();
        // A separate process sends and exits before we read, like
        // `systemd-notify --ready` run from a shell script.
        // perl (perl-base) is Essential on Debian, so always there.
        let status = std::process::Command::new("perl")
            .arg("-MSocket")
            .arg("-e")
            .arg("socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die $!; send($s, 'READY=1', 0, pack_sockaddr_un($ARGV[0])) or die $!;")
            .arg(&path)
            .status()
            .expect("perl is needed by this test");
        assert!(status.success());
        let got = receive_n(&mut sock, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].messages, vec![NotifyMsg::Ready]);
        let pid = got[0].sender_pid.expect("kernel keeps the sender's pid");
        assert_ne!(pid, std::process::id() as i32);
        assert_eq!(
            sender_in_group(pid, nix::unistd::getpgrp().as_raw()),
            None,
            "sender is gone"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
