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
//! - [`admit`]: the pure decision whether a datagram counts, from the
//!   kernel's credentials and where the sender is ([`Origin`]).
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
//! - Who may send (issue 12): a datagram counts only when the uid the kernel
//!   attaches (`SO_PASSCRED`, the sender's effective uid when it sent) is 0
//!   or the service's (its `user`, else the restarter's own), and the sender
//!   is not a process known to be alive outside the service's process group
//!   ([`admit`], a pure function, tested as a table). A sender of the right
//!   uid that has already exited (`systemd-notify` from a script) still
//!   counts: attribution is by socket. Everything else is refused, counted
//!   ([`NotifySocket::refused`], shown in status as `notify_refused` within
//!   `notify_rejected`) and logged at most once per 10 s per service.
//! - Where the sender is: with `SO_PASSPIDFD` (Linux ≥ 6.5) every datagram
//!   brings a pidfd of its sender; `getpgid(pid)` is confirmed by the pidfd
//!   still naming a live process, so a reused pid is never taken for the
//!   sender. Older kernels (the VM's 6.1) give no pidfd: `getpgid(pid)`
//!   alone, which a pid reused in between can fool; only the group check
//!   is affected, never the uid check. No `/proc` is read. (Without cgroup
//!   v2 here, the group is the process group, not the cgroup.)
//! - Who can reach the socket: `RUN/notify` is a directory of the
//!   restarter's uid, mode 0755 (anyone may traverse, no one else may add,
//!   remove or rename); each socket is owned by the service's uid, mode
//!   0600, so only that user and root can send. The socket is bound in
//!   `RUN/notify/.bind` (mode 0700), given its owner and mode there, then
//!   renamed into place, so it is never reachable with the umask's mode.
//!   Services with a `user` can still connect (they own the file); a
//!   service that sends from a helper running as yet another user cannot,
//!   by design.
//! - The service's uid is looked up (`user` name → uid) when its socket is
//!   made and again only when `user` changes on reload.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::AT_FDCWD;
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr,
};
use tether_common::clock::MonoTime;
use tether_common::sys::notify_creds::{self, SenderPidfd};

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

/// Where a datagram's sender is, relative to the service, as far as the
/// kernel can tell without a race.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The sender exists and is in the service's process group.
    InGroup,
    /// The sender exists and is in another process group.
    OutsideGroup { pid: i32 },
    /// The sender no longer exists (`systemd-notify` from a script).
    Gone,
    /// Not known: no pid (another pid namespace), or the service has no
    /// process right now.
    Unknown,
}

/// Why a well-formed datagram did not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `SCM_CREDENTIALS` (cannot happen with `SO_PASSCRED` on; refused
    /// rather than trusted).
    NoCredentials,
    /// The sender's uid is neither 0 nor the service's.
    ForeignUid { uid: u32, service_uid: u32 },
    /// A sender of the right uid that still exists outside the service's
    /// process group.
    OutsideGroup { pid: i32 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoCredentials => write!(f, "no sender credentials"),
            Refusal::ForeignUid { uid, service_uid } => write!(
                f,
                "sender uid {uid} is neither root nor the service's uid {service_uid}"
            ),
            Refusal::OutsideGroup { pid } => {
                write!(f, "sender pid {pid} is not in the service's process group")
            }
        }
    }
}

/// Whether a well-formed datagram counts for its service. Pure.
///
/// It counts when the kernel-reported uid (`SO_PASSCRED`) is 0 or the
/// service's, and the sender is not a process known to be alive outside the
/// service's process group. A sender that has exited counts (attribution
/// is by socket, and the uid is the kernel's, taken when it sent).
pub fn admit(sender_uid: Option<u32>, service_uid: u32, origin: Origin) -> Result<(), Refusal> {
    let uid = sender_uid.ok_or(Refusal::NoCredentials)?;
    if uid != 0 && uid != service_uid {
        return Err(Refusal::ForeignUid { uid, service_uid });
    }
    match origin {
        Origin::OutsideGroup { pid } => Err(Refusal::OutsideGroup { pid }),
        Origin::InGroup | Origin::Gone | Origin::Unknown => Ok(()),
    }
}

/// Locates a sender relative to the service's process group `pgid`.
///
/// With a pidfd from `SCM_PIDFD` (Linux ≥ 6.5): `getpgid(pid)`, then the
/// pidfd is asked whether the process still exists; if it does, its pid
/// was not reused in between, so the answer was about the sender. Without
/// one (older kernels, the VM's 6.1): `getpgid(pid)` alone, which can be
/// wrong if the sender exited and its pid was reused meanwhile — a datagram
/// then counts or not on the group of an unrelated process; the uid check
/// of [`admit`], which comes from the kernel, holds either way.
fn locate(pid: Option<i32>, pidfd: &SenderPidfd, pgid: Option<i32>) -> Origin {
    let (Some(pid), Some(pgid)) = (pid, pgid) else {
        return Origin::Unknown;
    };
    // The main process leads the group (setsid) and its pid cannot be
    // reused before the restarter reaps it.
    if pid == pgid {
        return Origin::InGroup;
    }
    // The kernel could not make a pidfd because the sender is already
    // reaped (EINVAL on 6.5, ESRCH later). Any other failure (EMFILE: our
    // descriptor table is full) says nothing about the sender: `getpgid`
    // alone then, as on an older kernel.
    if let SenderPidfd::Failed(libc::ESRCH | libc::EINVAL) = pidfd {
        return Origin::Gone;
    }
    let group = match nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))) {
        Ok(g) => g.as_raw(),
        Err(Errno::ESRCH) => return Origin::Gone,
        Err(_) => return Origin::Unknown,
    };
    if let SenderPidfd::Fd(fd) = pidfd {
        match notify_creds::pidfd_alive(fd.as_fd()) {
            Ok(true) => {}
            Ok(false) => return Origin::Gone,
            Err(_) => return Origin::Unknown,
        }
    }
    if group == pgid {
        Origin::InGroup
    } else {
        Origin::OutsideGroup { pid }
    }
}

/// One accepted datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender's pid from `SCM_CREDENTIALS` (in the restarter's pid
    /// namespace); `None` when the kernel gave 0 (sender in another pid
    /// namespace). The sender may have exited since.
    pub sender_pid: Option<i32>,
    pub sender_uid: Option<u32>,
    /// Where the sender was when the datagram was read.
    pub origin: Origin,
    pub messages: Vec<NotifyMsg>,
}

/// The notify socket of one service.
pub struct NotifySocket {
    fd: OwnedFd,
    path: PathBuf,
    /// Who may send: the file's owner (mode 0600) and, with root, the only
    /// uid whose datagrams count.
    owner: u32,
    /// (dev, ino) of the socket file we bound, so `Drop` never unlinks a
    /// socket bound at the same path by someone else since.
    identity: Option<(u64, u64)>,
    /// Whether the kernel attaches `SCM_PIDFD` (Linux ≥ 6.5).
    pidfd: bool,
    rejected: u64,
    last_rejection: Option<NotifyError>,
    refused: u64,
    last_refusal: Option<Refusal>,
    /// Refusals already reported by [`NotifySocket::refusal_report`].
    refused_reported: u64,
    next_refusal_report: Option<MonoTime>,
}

/// Refusals of one socket are logged at most once per this period.
pub const REFUSAL_REPORT_PERIOD: Duration = Duration::from_secs(10);

// The receive buffer, shared by every socket of the (single-threaded)
// restarter: one per service would cost 4 KiB each, 4 MiB at 1000
// services. One byte more than the limit is not needed since `MSG_TRUNC`
// reports the real length.
thread_local! {
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; MAX_DATAGRAM].into_boxed_slice());
}

impl fmt::Debug for NotifySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifySocket")
            .field("fd", &self.fd.as_raw_fd())
            .field("path", &self.path)
            .field("owner", &self.owner)
            .field("rejected", &self.rejected)
            .field("refused", &self.refused)
            .finish()
    }
}

/// Name of the staging directory (mode 0700) inside the notify directory
/// where a socket is bound, given its owner and mode, then renamed into
/// place: no one can connect during the moments it has the umask's mode.
const STAGING: &str = ".bind";

/// Creates `dir` if needed and makes it a plain directory owned by the
/// restarter's uid with mode 0755: anyone may traverse it, only its owner
/// may add or remove sockets. A symlink there is refused.
pub fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    // Missing parents (the runtime directory itself, after `rm -rf`) get
    // 0755 less the umask, never more.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        nix::unistd::fchownat(
            AT_FDCWD,
            dir,
            Some(nix::unistd::Uid::from_raw(me)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    if meta.permissions().mode() & 0o7777 != 0o755 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// The uid a service runs as, for its notify socket: the one its `user`
/// resolved to (off the loop, `resolver.rs`: no NSS call here), or the
/// restarter's own when it names none. A start is held until the identity
/// is resolved, so `Err` means a start that should not have happened.
pub fn service_uid(spec: &crate::service::ServiceSpec) -> Result<u32, String> {
    use crate::service::{Identity, Resolution};
    if spec.user.is_none() {
        return Ok(nix::unistd::geteuid().as_raw());
    }
    match &spec.identity {
        Resolution::Resolved(Identity { uid: Some(uid), .. }) => Ok(*uid),
        Resolution::Resolved(Identity { uid: None, .. }) => Ok(nix::unistd::geteuid().as_raw()),
        Resolution::Pending => Err("the service's user is not resolved yet".into()),
        Resolution::Failed { message, .. } => Err(message.clone()),
    }
}

/// A bound notify socket: descriptor, whether `SO_PASSPIDFD` is on, and
/// the (dev, ino) of its file.
type Bound = (OwnedFd, bool, Option<(u64, u64)>);

fn bound_socket(path: &Path, owner: u32) -> std::io::Result<Bound> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if path.file_name().is_none() {
        return Err(std::io::Error::other(format!(
            "{}: no file name",
            path.display()
        )));
    }
    prepare_dir(parent)?;
    let staging = parent.join(STAGING);
    match std::fs::DirBuilder::new().mode(0o700).create(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&staging)?;
    if !meta.file_type().is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            staging.display()
        )));
    }
    if meta.permissions().mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))?;
    }
    // A short name, so the staging path is never longer than the final
    // one (`sun_path` is 108 bytes).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = staging.join(
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    );
    match std::fs::remove_file(&tmp) {
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
    let pidfd = notify_creds::enable_pass_pidfd(fd.as_fd())?;
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        if pidfd {
            log::info!("notify senders are located by SCM_PIDFD");
        } else {
            log::info!(
                "kernel without SO_PASSPIDFD (before 6.5): notify senders are located by pid alone"
            );
        }
    }
    let addr = UnixAddr::new(&tmp)?;
    bind(fd.as_raw_fd(), &addr)?;
    let placed = (|| {
        nix::unistd::fchownat(
            AT_FDCWD,
            &tmp,
            Some(nix::unistd::Uid::from_raw(owner)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        // Atomically replaces a stale socket (or file) at `path`.
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let identity = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    Ok((fd, pidfd, identity))
}

impl NotifySocket {
    /// Binds a datagram socket at `path` (`SOCK_CLOEXEC | SOCK_NONBLOCK`,
    /// `SO_PASSCRED` and, where the kernel has it, `SO_PASSPIDFD` on),
    /// owned by `owner` with mode 0600, so only root and that user can
    /// reach it. Creates the parent directory if needed (mode 0755, see
    /// [`prepare_dir`]) and replaces a stale file at `path`.
    pub fn bind(path: &Path, owner: u32) -> std::io::Result<NotifySocket> {
        let (fd, pidfd, identity) = bound_socket(path, owner)?;
        Ok(NotifySocket::with_counters_at_zero(
            fd, path, owner, identity, pidfd,
        ))
    }

    /// A socket with no datagram counted yet (a new bind, or one adopted
    /// from the fd store).
    fn with_counters_at_zero(
        fd: OwnedFd,
        path: &Path,
        owner: u32,
        identity: Option<(u64, u64)>,
        pidfd: bool,
    ) -> NotifySocket {
        NotifySocket {
            fd,
            path: path.to_path_buf(),
            owner,
            identity,
            pidfd,
            rejected: 0,
            last_rejection: None,
            refused: 0,
            last_refusal: None,
            refused_reported: 0,
            next_refusal_report: None,
        }
    }

    /// A socket bound by a previous restarter, taken back from the fd store
    /// (issue 13): datagrams queued on it meanwhile are still there. The
    /// file now at `path` is taken as its own (it was bound in a staging
    /// directory and renamed, so `getsockname` cannot tell; the runtime
    /// directory check rebinds a socket whose file went away). Socket options
    /// (`SO_PASSCRED`, `SO_PASSPIDFD`) are the socket's and were set at bind;
    /// `SO_PASSPIDFD` is set again to learn whether it is on.
    pub fn adopt(path: &Path, fd: OwnedFd, owner: u32) -> NotifySocket {
        let identity = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let pidfd = notify_creds::enable_pass_pidfd(fd.as_fd()).unwrap_or(false);
        NotifySocket::with_counters_at_zero(fd, path, owner, identity, pidfd)
    }

    /// Binds a fresh socket at the same path and owner (the file was
    /// removed, e.g. with the whole runtime directory); counters are kept.
    /// Returns the old descriptor, for the caller to take out of its epoll
    /// set before dropping it. Datagrams still queued on it are lost:
    /// drain it first.
    pub fn rebind(&mut self) -> std::io::Result<OwnedFd> {
        let (fd, pidfd, identity) = bound_socket(&self.path, self.owner)?;
        self.pidfd = pidfd;
        self.identity = identity;
        Ok(std::mem::replace(&mut self.fd, fd))
    }

    /// Whether the socket file at our path is still the one we bound.
    pub fn in_place(&self) -> bool {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        current.is_some() && current == self.identity
    }

    /// Gives the socket file to another uid (the service's `user`
    /// changed on reload); from then on only its datagrams (and root's)
    /// count.
    pub fn set_owner(&mut self, owner: u32) -> std::io::Result<()> {
        if owner == self.owner {
            return Ok(());
        }
        nix::unistd::fchownat(
            AT_FDCWD,
            &self.path,
            Some(nix::unistd::Uid::from_raw(owner)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        self.owner = owner;
        Ok(())
    }

    /// The uid that owns the socket and whose datagrams count.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// Whether senders are located with `SCM_PIDFD` (Linux ≥ 6.5) rather
    /// than by pid alone.
    pub fn has_pidfd(&self) -> bool {
        self.pidfd
    }

    /// Readable (`EPOLLIN`) when datagrams are waiting.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket's path (the service's `NOTIFY_SOCKET`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Datagrams rejected so far: malformed or oversized, or refused for
    /// their sender ([`NotifySocket::refused`] of them).
    pub fn rejected(&self) -> u64 {
        self.rejected + self.refused
    }

    /// Datagrams refused for their sender so far (see [`admit`]).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Why the latest malformed datagram was rejected (for a log line).
    pub fn last_rejection(&self) -> Option<&NotifyError> {
        self.last_rejection.as_ref()
    }

    /// Why the latest refused datagram was refused.
    pub fn last_refusal(&self) -> Option<Refusal> {
        self.last_refusal
    }

    /// Refusals not reported yet, with the latest reason, at most once per
    /// [`REFUSAL_REPORT_PERIOD`] (a flood from a root process must not
    /// flood the log).
    pub fn refusal_report(&mut self, now: MonoTime) -> Option<(u64, Refusal)> {
        let new = self.refused - self.refused_reported;
        if new == 0 || self.next_refusal_report.is_some_and(|t| now < t) {
            return None;
        }
        self.refused_reported = self.refused;
        self.next_refusal_report = Some(now + REFUSAL_REPORT_PERIOD);
        self.last_refusal.map(|r| (new, r))
    }

    /// Reads up to [`MAX_DATAGRAMS_PER_CALL`] waiting datagrams without
    /// blocking; returns the accepted ones in arrival order and counts the
    /// rejected ones (malformed, or refused by [`admit`] for a service
    /// whose process group is `pgid`). If more are waiting, the socket
    /// stays readable.
    pub fn receive(&mut self, pgid: Option<i32>) -> Vec<Received> {
        self.receive_at_most(MAX_DATAGRAMS_PER_CALL, pgid)
    }

    fn receive_at_most(&mut self, max: usize, pgid: Option<i32>) -> Vec<Received> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < max {
            match self.receive_one(pgid) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(Errno::EINTR) => continue,
                // EAGAIN: nothing left. Any other error on a bound datagram
                // socket is unexpected; stop for this turn rather than spin.
                Err(_) => break,
            }
            i += 1;
        }
        out
    }

    /// One datagram: `Ok(Some)` accepted, `Ok(None)` rejected (counted).
    fn receive_one(&mut self, pgid: Option<i32>) -> Result<Option<Received>, Errno> {
        SCRATCH.with(|scratch| self.receive_into(&mut scratch.borrow_mut(), pgid))
    }

    fn receive_into(
        &mut self,
        buf: &mut [u8],
        pgid: Option<i32>,
    ) -> Result<Option<Received>, Errno> {
        let d = notify_creds::recv_datagram(self.fd.as_fd(), buf)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let len = d.len;
        if d.truncated || len > MAX_DATAGRAM {
            self.reject(NotifyError::Oversize { len });
            return Ok(None);
        }
        let Some(data) = buf.get(..len) else {
            self.reject(NotifyError::Oversize { len });
            return Ok(None);
        };
        let messages = match parse_datagram(data) {
            Ok(m) => m,
            Err(e) => {
                self.reject(e);
                return Ok(None);
            }
        };
        let sender_pid = d.creds.map(|(pid, _, _)| pid).filter(|&p| p > 0);
        let sender_uid = d.creds.map(|(_, uid, _)| uid);
        let origin = locate(sender_pid, &d.pidfd, pgid);
        if let Err(refusal) = admit(sender_uid, self.owner, origin) {
            self.refused += 1;
            self.last_refusal = Some(refusal);
            return Ok(None);
        }
        Ok(Some(Received {
            sender_pid,
            sender_uid,
            origin,
            messages,
        }))
    }

    fn reject(&mut self, e: NotifyError) {
        self.rejected += 1;
        self.last_rejection = Some(e);
    }
}

impl Drop for NotifySocket {
    /// Removes the socket file, unless it has been replaced since.
    fn drop(&mut self) {
        if self.in_place() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::MsgFlags;
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

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn admission_is_by_kernel_uid_then_by_group_of_a_live_sender() {
        use Origin::*;
        let svc = 1000;
        let foreign = |uid| {
            Err(Refusal::ForeignUid {
                uid,
                service_uid: svc,
            })
        };
        let outside = Err(Refusal::OutsideGroup { pid: 77 });
        #[rustfmt::skip]
        let table: &[(Option<u32>, Origin, Result<(), Refusal>)] = &[
            // uid        origin                       verdict
            (Some(1000),  InGroup,                     Ok(())),
            (Some(1000),  Gone,                        Ok(())), // systemd-notify that exited
            (Some(1000),  Unknown,                     Ok(())), // other pid namespace
            (Some(1000),  OutsideGroup { pid: 77 },    outside),
            (Some(0),     InGroup,                     Ok(())),
            (Some(0),     Gone,                        Ok(())),
            (Some(0),     Unknown,                     Ok(())),
            (Some(0),     OutsideGroup { pid: 77 },    outside),
            (Some(65534), InGroup,                     foreign(65534)),
            (Some(65534), Gone,                        foreign(65534)), // the attack of issue 12
            (Some(65534), Unknown,                     foreign(65534)),
            (Some(65534), OutsideGroup { pid: 77 },    foreign(65534)),
            (Some(1001),  Gone,                        foreign(1001)),
            (None,        InGroup,                     Err(Refusal::NoCredentials)),
            (None,        Gone,                        Err(Refusal::NoCredentials)),
        ];
        for (uid, origin, want) in table {
            assert_eq!(
                admit(*uid, svc, *origin),
                *want,
                "uid {uid:?} origin {origin:?}"
            );
        }
        // A root service: only root counts.
        assert_eq!(admit(Some(0), 0, Gone), Ok(()));
        assert_eq!(
            admit(Some(65534), 0, Gone),
            Err(Refusal::ForeignUid {
                uid: 65534,
                service_uid: 0
            })
        );
    }

    #[test]
    fn refusals_read_as_sentences() {
        assert_eq!(
            Refusal::ForeignUid {
                uid: 65534,
                service_uid: 0
            }
            .to_string(),
            "sender uid 65534 is neither root nor the service's uid 0"
        );
        assert_eq!(
            Refusal::OutsideGroup { pid: 9 }.to_string(),
            "sender pid 9 is not in the service's process group"
        );
    }

    #[test]
    fn locate_uses_the_kernel_not_proc() {
        let me = std::process::id() as i32;
        let pgid = nix::unistd::getpgrp().as_raw();
        let none = SenderPidfd::NotSent;
        assert_eq!(locate(Some(me), &none, Some(pgid)), Origin::InGroup);
        assert_eq!(
            locate(Some(me), &none, Some(pgid + 1)),
            Origin::OutsideGroup { pid: me }
        );
        assert_eq!(locate(None, &none, Some(pgid)), Origin::Unknown);
        assert_eq!(locate(Some(me), &none, None), Origin::Unknown);
        assert_eq!(locate(Some(pgid), &none, Some(pgid)), Origin::InGroup);
        assert_eq!(
            locate(Some(me), &SenderPidfd::Failed(libc::ESRCH), Some(pgid + 1)),
            Origin::Gone
        );
        assert_eq!(
            locate(Some(me), &SenderPidfd::Failed(libc::EINVAL), Some(pgid + 1)),
            Origin::Gone
        );
        // No descriptor for the pidfd: the group is asked all the same.
        assert_eq!(
            locate(Some(me), &SenderPidfd::Failed(libc::EMFILE), Some(pgid + 1)),
            Origin::OutsideGroup { pid: me }
        );
        // A reaped child is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert_eq!(locate(Some(pid), &none, Some(pgid + 1)), Origin::Gone);
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
            got.extend(sock.receive(None));
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
        let sock = NotifySocket::bind(&path, me()).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), me());
        let dir_meta = std::fs::symlink_metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dir_meta.permissions().mode() & 0o7777, 0o755);
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
        let old = NotifySocket::bind(&path, me()).unwrap();
        let new = NotifySocket::bind(&path, me()).unwrap();
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
        let mut sock = NotifySocket::bind(&path, me()).unwrap();
        assert!(
            sock.receive(None).is_empty(),
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
        let mut sock = NotifySocket::bind(&path, me()).unwrap();
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
        let mut sock = NotifySocket::bind(&path, me()).unwrap();
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
        let mut sock = NotifySocket::bind(&path, me()).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.set_nonblocking(true).unwrap();
        for _ in 0..8 {
            client.send_to(b"WATCHDOG=1", &path).unwrap();
        }
        assert_eq!(sock.receive_at_most(5, None).len(), 5);
        assert_eq!(sock.receive_at_most(5, None).len(), 3);
        assert!(sock.receive(None).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn passed_descriptors_are_closed_and_messages_still_count() {
        use nix::sys::socket::{sendmsg, ControlMessage};
        use std::io::IoSlice;
        let dir = scratch("fds");
        let path = dir.join("svc.sock");
        let mut sock = NotifySocket::bind(&path, me()).unwrap();
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
        let mut sock = NotifySocket::bind(&path, me()).unwrap();
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
        let mut sock = NotifySocket::bind(&path, me()).unwrap();
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
        assert_eq!(got[0].origin, Origin::Unknown, "no pgid given");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Sends `text` to `path` from a process running as uid/gid 65534
    /// that exits before the restarter reads.
    fn send_as_nobody(path: &Path, text: &str) -> bool {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "perl", "-MSocket", "-e"])
            .arg("socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die $!; send($s, $ARGV[1], 0, pack_sockaddr_un($ARGV[0])) or die $!;")
            .arg(path)
            .arg(text)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("setpriv and perl are needed by this test")
            .success()
    }

    #[test]
    fn other_users_cannot_reach_the_socket_and_are_refused_if_they_do() {
        let dir = scratch("foreign");
        let path = dir.join("notify").join("svc.sock");
        let mut sock = NotifySocket::bind(&path, 0).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            !send_as_nobody(&path, "WATCHDOG=trigger"),
            "mode 0600 must keep uid 65534 out"
        );
        // Were the file reachable (a mode changed by hand), the kernel's uid
        // still decides.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(send_as_nobody(&path, "WATCHDOG=trigger"));
        let pgid = nix::unistd::getpgrp().as_raw();
        let client = UnixDatagram::unbound().unwrap();
        client.send_to(b"READY=1", &path).unwrap();
        let got = receive_n(&mut sock, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].messages,
            vec![NotifyMsg::Ready],
            "root's datagram counts"
        );
        assert!(sock.receive(Some(pgid)).is_empty());
        assert_eq!(sock.refused(), 1);
        assert_eq!(sock.rejected(), 1);
        assert_eq!(
            sock.last_refusal(),
            Some(Refusal::ForeignUid {
                uid: 65534,
                service_uid: 0
            })
        );
        let now = MonoTime::now();
        assert_eq!(
            sock.refusal_report(now),
            Some((
                1,
                Refusal::ForeignUid {
                    uid: 65534,
                    service_uid: 0
                }
            ))
        );
        assert_eq!(sock.refusal_report(now), None, "nothing new");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_services_own_user_may_send_even_after_exiting() {
        let dir = scratch("own-user");
        let path = dir.join("notify").join("svc.sock");
        let mut sock = NotifySocket::bind(&path, 65534).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.permissions().mode() & 0o777),
            (65534, 0o600)
        );
        assert!(send_as_nobody(&path, "READY=1"));
        // The sender has exited and been reaped: its group cannot be asked.
        let pgid = nix::unistd::getpgrp().as_raw();
        let got = sock.receive(Some(pgid + 100_000));
        assert_eq!(got.len(), 1, "refused: {:?}", sock.last_refusal());
        assert_eq!(got[0].origin, Origin::Gone);
        assert_eq!(got[0].sender_uid, Some(65534));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_live_sender_outside_the_group_is_refused_and_the_report_is_rate_limited() {
        let dir = scratch("outside");
        let path = dir.join("svc.sock");
        let mut sock = NotifySocket::bind(&path, me()).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        let pgid = nix::unistd::getpgrp().as_raw();
        let t0 = MonoTime::now();
        client.send_to(b"READY=1", &path).unwrap();
        assert!(sock.receive(Some(pgid + 1)).is_empty());
        assert_eq!(sock.refusal_report(t0).map(|r| r.0), Some(1));
        for _ in 0..3 {
            client.send_to(b"WATCHDOG=1", &path).unwrap();
        }
        assert!(sock.receive(Some(pgid + 1)).is_empty());
        assert_eq!(sock.refused(), 4);
        assert_eq!(sock.refusal_report(t0 + Duration::from_secs(1)), None);
        assert_eq!(
            sock.refusal_report(t0 + REFUSAL_REPORT_PERIOD),
            Some((
                3,
                Refusal::OutsideGroup {
                    pid: std::process::id() as i32
                }
            ))
        );
        // The same sender in the right group counts.
        client.send_to(b"READY=1", &path).unwrap();
        assert_eq!(sock.receive(Some(pgid)).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rebind_puts_a_fresh_socket_at_the_same_path_with_the_same_owner() {
        let dir = scratch("rebind-gone");
        let path = dir.join("notify").join("svc.sock");
        let mut sock = NotifySocket::bind(&path, me()).unwrap();
        assert!(sock.in_place());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!sock.in_place());
        let old = sock.rebind().unwrap();
        drop(old);
        assert!(sock.in_place());
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let client = UnixDatagram::unbound().unwrap();
        client.send_to(b"READY=1", &path).unwrap();
        assert_eq!(receive_n(&mut sock, 1).len(), 1);
        drop(sock);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
