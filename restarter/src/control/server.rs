//! The control socket server: non-blocking, bounded in clients, bytes and
//! time, driven by the restarter's event loop.
//!
//! The listening socket and every client live in the server's own epoll
//! set; the loop registers only [`Server::fd`] (readable while there is work)
//! and calls [`Server::poll`], plus [`Server::expire`] at
//! [`Server::next_deadline`]. Nothing here blocks or sleeps.
//!
//! Decisions where the interface is silent:
//! - At most [`Limits::max_clients`] (256) connections at once; beyond it a
//!   connection is accepted, sent `error: busy` without blocking, and closed.
//! - Each client has [`Limits::request_timeout`] (2 s) to deliver its request
//!   line and [`Limits::total_timeout`] (5 s) for everything, including the
//!   supervisor's answer and writing it. A client late with its request gets
//!   a best-effort `error: ...` line; then it is dropped and counted.
//! - Queued responses are bounded in total ([`Limits::max_queued_bytes`],
//!   32 MiB); a response that would exceed it is replaced by `error: busy`.
//! - Work per [`Server::poll`] is bounded (64 events, 64 accepts); the epoll
//!   fd stays readable while more is pending, so the loop comes back after
//!   its other work (heartbeats first).
//! - When `accept` fails for lack of descriptors or memory, accepting pauses
//!   for 100 ms instead of spinning on a listener that stays readable.
//! - Permission: see [`may_change`]. Supplementary groups are read from
//!   `/proc/PID/status` of the peer's pid (from `SO_PEERCRED`), and only used
//!   when that file's effective uid still matches the peer's: a peer that
//!   exited before the check counts as having no supplementary groups.
//! - Before closing, unread input is drained (bounded) so the peer reads the
//!   response and then end of file rather than a reset.
//! - Refusals are logged, at most 10 lines per 10 s, then a count of the
//!   suppressed ones.

use super::protocol::{error_line, parse_request, Request, Response, MAX_REQUEST};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr,
};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_common::clock::MonoTime;
use tether_common::duration;
use tether_common::sys::accept_cloexec_nonblock;

/// Bounds of the server. [`Limits::default`] are the production values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_clients: usize,
    /// From accept to a complete request line.
    pub request_timeout: Duration,
    /// From accept to the last byte of the response written.
    pub total_timeout: Duration,
    /// Sum of all responses not yet written.
    pub max_queued_bytes: usize,
    /// Events handled, and connections accepted, per [`Server::poll`].
    pub per_poll: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 256,
            request_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(5),
            max_queued_bytes: 32 << 20,
            per_poll: 64,
        }
    }
}

/// Pause of accepting after `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM`.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Unread input drained before a close, at most.
const DRAIN_BEFORE_CLOSE: usize = 8192;
const LISTENER: u64 = u64::MAX;

/// A connection, valid until the server drops it; ids are never reused, so
/// a late [`Server::reply`] to a dropped client goes nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

/// The peer's credentials from `SO_PEERCRED` (at connect time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// A well-formed, permitted request for the supervisor to answer with
/// [`Server::reply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub client: ClientId,
    pub peer: Peer,
    pub may_change: bool,
    pub request: Request,
}

/// What happened to connections so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests handed to the supervisor.
    pub accepted: u64,
    /// Malformed, unknown or oversized requests.
    pub malformed: u64,
    /// State-changing requests from peers without permission.
    pub denied: u64,
    /// Connections refused because `max_clients` were open.
    pub busy: u64,
    /// Clients dropped at their deadline.
    pub timed_out: u64,
}

impl Counters {
    /// Everything refused: what status shows as `control_rejected`.
    pub fn rejected(&self) -> u64 {
        self.malformed + self.denied + self.busy + self.timed_out
    }
}

enum State {
    Reading(Vec<u8>),
    /// Handed out by `poll`; waiting for `reply`. Not in the epoll set.
    Waiting,
    Writing {
        out: Vec<u8>,
        pos: usize,
    },
}

struct Client {
    fd: OwnedFd,
    peer: Peer,
    request_deadline: MonoTime,
    deadline: MonoTime,
    state: State,
    /// Whether `fd` is in the epoll set.
    registered: bool,
}

impl Client {
    fn next_deadline(&self) -> MonoTime {
        match self.state {
            State::Reading(_) => self.request_deadline.min(self.deadline),
            _ => self.deadline,
        }
    }
}

/// The control socket server.
pub struct Server {
    listener: OwnedFd,
    epoll: Epoll,
    path: PathBuf,
    /// (dev, ino) of the socket file we created, so drop removes only ours.
    identity: Option<(u64, u64)>,
    admin_gid: Option<u32>,
    limits: Limits,
    clients: HashMap<u64, Client>,
    next_id: u64,
    queued_bytes: usize,
    accept_paused_until: Option<MonoTime>,
    counters: Counters,
    log_limit: LogLimiter,
}

impl Server {
    /// Binds `path` with the default [`Limits`]. A stale socket at `path` is
    /// removed (anything else there is an error); the socket is mode 0666 —
    /// anyone may ask for status, permission is checked per request.
    pub fn bind(path: &Path, admin_gid: Option<u32>) -> std::io::Result<Server> {
        Server::bind_with(path, admin_gid, Limits::default())
    }

    pub fn bind_with(
        path: &Path,
        admin_gid: Option<u32>,
        limits: Limits,
    ) -> std::io::Result<Server> {
        let (listener, identity) = listen_at(path)?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        Ok(Server {
            listener,
            epoll,
            path: path.to_path_buf(),
            identity,
            admin_gid,
            limits,
            clients: HashMap::new(),
            next_id: 0,
            queued_bytes: 0,
            accept_paused_until: None,
            counters: Counters::default(),
            log_limit: LogLimiter::default(),
        })
    }

    /// Whether the socket file at our path is still the one we bound.
    pub fn in_place(&self) -> bool {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        current.is_some() && current == self.identity
    }

    /// Binds a fresh listening socket at the same path (the file was
    /// removed, e.g. with the whole runtime directory) and puts it in place
    /// of the old one; connected clients and counters are kept. Connections
    /// still in the old listener's backlog are accepted first.
    pub fn rebind(&mut self, now: MonoTime) -> std::io::Result<()> {
        let (listener, identity) = listen_at(&self.path)?;
        self.accept_some(now);
        let _ = self.epoll.delete(&self.listener);
        self.epoll
            .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        self.listener = listener;
        self.identity = identity;
        self.accept_paused_until = None;
        Ok(())
    }

    /// Readable while [`Server::poll`] has work.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Requests refused so far (for `StatusReport::control_rejected`).
    pub fn rejected(&self) -> u64 {
        self.counters.rejected()
    }

    /// Open connections.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Accepts, reads requests, writes responses, drops finished and expired
    /// clients. Returns the requests for the supervisor; malformed and
    /// unpermitted ones are answered here. Never blocks.
    pub fn poll(&mut self, now: MonoTime) -> Vec<Incoming> {
        let mut events = vec![EpollEvent::empty(); self.limits.per_poll.max(1)];
        let n = match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                log::error!("control: epoll_wait: {e}");
                0
            }
        };
        let mut incoming = Vec::new();
        for ev in &events[..n] {
            if ev.data() == LISTENER {
                self.accept_some(now);
            } else {
                self.client_ready(ev.data(), now, &mut incoming);
            }
        }
        self.expire(now);
        incoming
    }

    /// Queues the answer to `client` and writes what the socket takes now;
    /// the rest goes out from [`Server::poll`]. Ignored if the client is gone
    /// or was already answered.
    pub fn reply(&mut self, client: ClientId, response: Response) {
        match self.clients.get(&client.0) {
            Some(Client {
                state: State::Waiting,
                ..
            }) => self.respond(client.0, response.encode()),
            Some(_) => log::warn!("control: second reply to client {} ignored", client.0),
            None => log::debug!("control: reply to client {} which is gone", client.0),
        }
    }

    /// The earliest moment [`Server::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<MonoTime> {
        self.clients
            .values()
            .map(Client::next_deadline)
            .chain(self.accept_paused_until)
            .min()
    }

    /// Drops clients past their deadline; resumes accepting after a pause.
    pub fn expire(&mut self, now: MonoTime) {
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            self.accept_paused_until = None;
            if let Err(e) = self.epoll.add(
                &self.listener,
                EpollEvent::new(EpollFlags::EPOLLIN, LISTENER),
            ) {
                log::error!("control: cannot resume accepting: {e}");
            }
        }
        let expired: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| now >= c.next_deadline())
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let Some(c) = self.clients.get(&id) else {
                continue;
            };
            let what = match &c.state {
                State::Reading(buf) if buf.is_empty() => "sent nothing",
                State::Reading(_) => "sent an incomplete request",
                State::Waiting => "got no answer from the supervisor",
                State::Writing { .. } => "did not read its answer",
            };
            let limit = match c.state {
                State::Reading(_) if now >= c.request_deadline => Some(self.limits.request_timeout),
                State::Reading(_) | State::Waiting => Some(self.limits.total_timeout),
                State::Writing { .. } => None,
            };
            if let Some(limit) = limit {
                let msg = format!("timed out after {} ({what})", duration::format(limit));
                send_best_effort(c.fd.as_fd(), &error_line(&msg));
            }
            self.counters.timed_out += 1;
            let peer = c.peer;
            if self.log_limit.allow(now) {
                log::info!(
                    "control: dropped client pid {} uid {}: {what} in time",
                    peer.pid,
                    peer.uid
                );
            }
            self.close(id);
        }
    }

    fn accept_some(&mut self, now: MonoTime) {
        for _ in 0..self.limits.per_poll.max(1) {
            let fd = match accept_cloexec_nonblock(self.listener.as_fd()) {
                Ok(fd) => fd,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR | Errno::ECONNABORTED | Errno::EPROTO) => continue,
                Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                    log::error!("control: accept: {e}; not accepting for {ACCEPT_PAUSE:?}");
                    if self.epoll.delete(&self.listener).is_ok() {
                        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    }
                    return;
                }
                Err(e) => {
                    log::error!("control: accept: {e}");
                    return;
                }
            };
            if self.clients.len() >= self.limits.max_clients {
                self.counters.busy += 1;
                send_best_effort(fd.as_fd(), &error_line("busy"));
                drain_input(fd.as_fd());
                if self.log_limit.allow(now) {
                    log::warn!(
                        "control: {} clients open, connection refused",
                        self.clients.len()
                    );
                }
                continue;
            }
            let peer = match socket::getsockopt(&fd, sockopt::PeerCredentials) {
                Ok(c) => Peer {
                    pid: c.pid(),
                    uid: c.uid(),
                    gid: c.gid(),
                },
                Err(e) => {
                    log::warn!("control: SO_PEERCRED: {e}; connection closed");
                    continue;
                }
            };
            let id = self.next_id;
            self.next_id += 1;
            if let Err(e) = self
                .epoll
                .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, id))
            {
                log::error!("control: epoll_ctl: {e}; connection closed");
                continue;
            }
            self.clients.insert(
                id,
                Client {
                    fd,
                    peer,
                    request_deadline: now + self.limits.request_timeout,
                    deadline: now + self.limits.total_timeout,
                    state: State::Reading(Vec::with_capacity(128)),
                    registered: true,
                },
            );
        }
    }

    fn client_ready(&mut self, id: u64, now: MonoTime, incoming: &mut Vec<Incoming>) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        match &mut c.state {
            State::Reading(buf) => match read_request(c.fd.as_fd(), buf) {
                ReadOutcome::Pending => {}
                ReadOutcome::Gone => self.close(id),
                ReadOutcome::Complete => {
                    let buf = std::mem::take(buf);
                    self.handle_request(id, &buf, now, incoming);
                }
            },
            State::Writing { .. } => self.write_pending(id),
            State::Waiting => {}
        }
    }

    fn handle_request(&mut self, id: u64, buf: &[u8], now: MonoTime, incoming: &mut Vec<Incoming>) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let peer = c.peer;
        let request = match parse_request(buf) {
            Ok(r) => r,
            Err(e) => {
                self.counters.malformed += 1;
                if self.log_limit.allow(now) {
                    log::info!(
                        "control: refused request from pid {} uid {}: {e}",
                        peer.pid,
                        peer.uid
                    );
                }
                self.respond(id, error_line(&e.to_string()));
                return;
            }
        };
        let may_change = peer_may_change(peer, self.admin_gid);
        if request.changes_state() && !may_change {
            self.counters.denied += 1;
            if self.log_limit.allow(now) {
                log::warn!(
                    "control: permission denied: `{request}` from pid {} uid {} gid {}",
                    peer.pid,
                    peer.uid,
                    peer.gid
                );
            }
            self.respond(id, error_line("permission denied"));
            return;
        }
        if c.registered {
            // Not interested in the socket until there is an answer to write.
            let _ = self.epoll.delete(&c.fd);
            c.registered = false;
        }
        c.state = State::Waiting;
        self.counters.accepted += 1;
        incoming.push(Incoming {
            client: ClientId(id),
            peer,
            may_change,
            request,
        });
    }

    /// Starts writing `bytes` to client `id`, closing it when done.
    fn respond(&mut self, id: u64, mut bytes: Vec<u8>) {
        if self.queued_bytes + bytes.len() > self.limits.max_queued_bytes {
            bytes = error_line("busy (too many answers queued)");
        }
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        self.queued_bytes += bytes.len();
        c.state = State::Writing { out: bytes, pos: 0 };
        self.write_pending(id);
    }

    fn write_pending(&mut self, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let State::Writing { out, pos } = &mut c.state else {
            return;
        };
        loop {
            if *pos == out.len() {
                self.close(id);
                return;
            }
            match socket::send(
                c.fd.as_raw_fd(),
                &out[*pos..],
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => *pos += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.close(id);
                    return;
                }
            }
        }
        let ev = EpollEvent::new(EpollFlags::EPOLLOUT, id);
        let result = if c.registered {
            self.epoll.modify(&c.fd, &mut { ev })
        } else {
            self.epoll.add(&c.fd, ev)
        };
        match result {
            Ok(()) => c.registered = true,
            Err(e) => {
                log::error!("control: epoll_ctl: {e}");
                self.close(id);
            }
        }
    }

    fn close(&mut self, id: u64) {
        let Some(c) = self.clients.remove(&id) else {
            return;
        };
        if let State::Writing { out, .. } = &c.state {
            self.queued_bytes -= out.len();
        }
        drain_input(c.fd.as_fd());
        // Dropping the fd closes it, which also removes it from the epoll set.
    }
}

impl Drop for Server {
    /// Removes the socket file if it is still the one this server created.
    fn drop(&mut self) {
        if self.in_place() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A listening socket bound at `path` (mode 0666: anyone may ask for
/// status, permission is checked per request) and its file's identity. A
/// stale socket at `path` is removed; anything else there is an error.
fn listen_at(path: &Path) -> std::io::Result<(OwnedFd, Option<(u64, u64)>)> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    socket::bind(listener.as_raw_fd(), &addr)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    let identity = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    socket::listen(&listener, Backlog::new(512).unwrap_or(Backlog::MAXCONN))?;
    Ok((listener, identity))
}

enum ReadOutcome {
    Pending,
    Complete,
    /// Closed before sending anything, or a read error.
    Gone,
}

/// Reads what is available, up to one byte beyond [`MAX_REQUEST`] (so an
/// oversized request is recognised without reading it all).
fn read_request(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> ReadOutcome {
    let mut chunk = [0u8; MAX_REQUEST + 1];
    loop {
        let room = MAX_REQUEST + 1 - buf.len();
        match nix::unistd::read(fd, &mut chunk[..room]) {
            Ok(0) if buf.is_empty() => return ReadOutcome::Gone,
            Ok(0) => return ReadOutcome::Complete,
            Ok(n) => {
                let had = buf.len();
                buf.extend_from_slice(&chunk[..n]);
                if buf[had..].contains(&b'\n') || buf.len() > MAX_REQUEST {
                    return ReadOutcome::Complete;
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return ReadOutcome::Pending,
            Err(_) => return ReadOutcome::Gone,
        }
    }
}

/// One non-blocking send; whatever does not fit is lost.
fn send_best_effort(fd: BorrowedFd<'_>, bytes: &[u8]) {
    let _ = socket::send(
        fd.as_raw_fd(),
        bytes,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    );
}

/// Reads and discards pending input (bounded, non-blocking), so closing
/// does not reset the connection under the peer's feet.
fn drain_input(fd: BorrowedFd<'_>) {
    let mut chunk = [0u8; 1024];
    let mut total = 0;
    while total < DRAIN_BEFORE_CLOSE {
        match socket::recv(fd.as_raw_fd(), &mut chunk, MsgFlags::MSG_DONTWAIT) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// Whether a peer may change state: root always; with an admin group, a
/// peer whose group or one of whose supplementary groups it is.
pub fn may_change(uid: u32, gid: u32, groups: &[u32], admin_gid: Option<u32>) -> bool {
    uid == 0 || admin_gid.is_some_and(|admin| gid == admin || groups.contains(&admin))
}

fn peer_may_change(peer: Peer, admin_gid: Option<u32>) -> bool {
    if may_change(peer.uid, peer.gid, &[], admin_gid) {
        return true;
    }
    if admin_gid.is_none() || peer.pid <= 0 {
        return false;
    }
    let groups = std::fs::read_to_string(format!("/proc/{}/status", peer.pid))
        .ok()
        .and_then(|text| proc_status_groups(&text, peer.uid))
        .unwrap_or_default();
    may_change(peer.uid, peer.gid, &groups, admin_gid)
}

/// The `Groups:` of a `/proc/PID/status` text, if its effective uid (second
/// field of `Uid:`) is `uid`; `None` otherwise or when malformed.
pub fn proc_status_groups(text: &str, uid: u32) -> Option<Vec<u32>> {
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key));
    let euid: u32 = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
    if euid != uid {
        return None;
    }
    field("Groups:")?
        .split_whitespace()
        .map(|g| g.parse().ok())
        .collect()
}

/// The gid of `[control] group`: a group name from the group database, or a
/// number.
pub fn resolve_group(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("control group {name:?} does not exist")),
        Err(e) => Err(format!("control group {name:?}: {e}")),
    }
}

/// At most `BURST` log lines per `WINDOW`; the number suppressed is logged
/// when the next window opens.
#[derive(Default)]
struct LogLimiter {
    window_start: Option<MonoTime>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    const BURST: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(10);

    fn allow(&mut self, now: MonoTime) -> bool {
        if self
            .window_start
            .is_none_or(|s| now.saturating_since(s) >= Self::WINDOW)
        {
            if self.suppressed > 0 {
                log::warn!("control: {} more refusals not logged", self.suppressed);
            }
            *self = LogLimiter {
                window_start: Some(now),
                in_window: 0,
                suppressed: 0,
            };
        }
        if self.in_window < Self::BURST {
            self.in_window += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::StatusReport;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    struct Scratch(PathBuf);
    impl Scratch {
        fn new(label: &str) -> Scratch {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::SeqCst);
            let p =
                std::env::temp_dir().join(format!("tether-ctl-{label}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
        fn sock(&self) -> PathBuf {
            self.0.join("control.sock")
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn connect(path: &Path) -> UnixStream {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Polls the server (at real time `now`) until `done` holds, waiting for
    /// its fd between turns; panics after 10 s.
    fn pump(
        server: &mut Server,
        mut done: impl FnMut(&Server, &[Incoming]) -> bool,
    ) -> Vec<Incoming> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let start = Instant::now();
        let mut all = Vec::new();
        loop {
            all.extend(server.poll(MonoTime::now()));
            if done(server, &all) {
                return all;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "server never got there"
            );
            let mut fds = [PollFd::new(server.fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(50u16));
        }
    }

    fn read_all(mut s: UnixStream) -> String {
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty() => {}
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&out)),
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn silent_client_is_dropped_at_its_deadline_while_others_are_served() {
        let dir = Scratch::new("silent");
        let mut server = Server::bind(&dir.sock(), None).unwrap();
        let silent = connect(&dir.sock());
        let mut half = connect(&dir.sock());
        half.write_all(b"stat").unwrap();
        pump(&mut server, |s, _| s.client_count() == 2);
        let accepted_by = MonoTime::now();

        let mut good = connect(&dir.sock());
        good.write_all(b"status --json\n").unwrap();
        let incoming = pump(&mut server, |_, inc| !inc.is_empty());
        assert_eq!(incoming.len(), 1);
        let inc = &incoming[0];
        assert_eq!(
            inc.request,
            Request::Status {
                name: None,
                json: true
            }
        );
        assert_eq!(inc.peer.pid, std::process::id() as i32);
        assert_eq!(inc.peer.uid, nix::unistd::geteuid().as_raw());
        server.reply(
            inc.client,
            Response::Status(
                StatusReport {
                    restarter_pid: 7,
                    ..Default::default()
                },
                true,
            ),
        );
        let answer = read_all(good);
        let body = answer.strip_prefix("ok\n").expect(&answer);
        assert_eq!(
            serde_json::from_str::<StatusReport>(body)
                .unwrap()
                .restarter_pid,
            7
        );

        // The two idle clients are still there, with a deadline 2 s after accept.
        assert_eq!(server.client_count(), 2);
        let deadline = server.next_deadline().unwrap();
        assert!(
            deadline <= accepted_by + Duration::from_secs(2),
            "{deadline:?}"
        );
        server.expire(MonoTime::from_duration(
            deadline.as_duration() - Duration::from_millis(1),
        ));
        assert_eq!(
            server.client_count(),
            2,
            "nobody is dropped before the deadline"
        );
        server.expire(accepted_by + Duration::from_secs(2));
        assert_eq!(server.client_count(), 0);
        assert_eq!(server.counters().timed_out, 2);
        assert_eq!(server.counters().accepted, 1);
        let silent_answer = read_all(silent);
        assert_eq!(silent_answer, "error: timed out after 2s (sent nothing)\n");
        assert!(read_all(half).contains("incomplete request"));
        assert_eq!(server.next_deadline(), None);
    }

    #[test]
    fn client_without_an_answer_is_dropped_after_the_total_timeout() {
        let dir = Scratch::new("noanswer");
        let mut server = Server::bind(&dir.sock(), None).unwrap();
        let t0 = MonoTime::now();
        let mut c = connect(&dir.sock());
        c.write_all(b"reload\n").unwrap();
        let inc = pump(&mut server, |_, inc| !inc.is_empty());
        // Past the request deadline, but the request is in: still waiting.
        server.expire(t0 + Duration::from_millis(2500));
        assert_eq!(server.client_count(), 1);
        server.expire(MonoTime::now() + Duration::from_secs(5));
        assert_eq!(server.client_count(), 0);
        assert!(read_all(c).contains("no answer"));
        // A late reply to the dropped client goes nowhere.
        server.reply(inc[0].client, Response::Ok(String::new()));
        assert_eq!(server.client_count(), 0);
    }

    #[test]
    fn oversized_request_is_refused_without_reaching_the_supervisor() {
        let dir = Scratch::new("oversize");
        let mut server = Server::bind(&dir.sock(), None).unwrap();
        let mut c = connect(&dir.sock());
        c.write_all(&[b'x'; 4000]).unwrap();
        let inc = pump(&mut server, |s, _| s.counters().malformed == 1);
        assert!(inc.is_empty());
        assert_eq!(read_all(c), "error: request longer than 512 bytes\n");
        pump(&mut server, |s, _| s.client_count() == 0);
    }

    #[test]
    fn malformed_requests_are_answered_by_the_server_and_counted() {
        let dir = Scratch::new("malformed");
        let mut server = Server::bind(&dir.sock(), None).unwrap();
        let cases: [(&[u8], &str); 4] = [
            (b"foo\n", "error: unknown command \"foo\"\n"),
            (b"stop a/b\n", "error: invalid service name"),
            (b"status\nstatus\n", "error: data after the request line"),
            (b"\xff\n", "error: request is not valid UTF-8\n"),
        ];
        for (i, (req, want)) in cases.iter().enumerate() {
            let mut c = connect(&dir.sock());
            c.write_all(req).unwrap();
            let inc = pump(&mut server, |s, _| s.counters().malformed == i as u64 + 1);
            assert!(inc.is_empty());
            let got = read_all(c);
            assert!(got.starts_with(want), "{got:?} vs {want:?}");
        }
        assert_eq!(server.rejected(), 4);
    }

    #[test]
    fn request_ended_by_shutdown_without_newline_is_accepted() {
        let dir = Scratch::new("eof");
        let mut server = Server::bind(&dir.sock(), None).unwrap();
        let mut c = connect(&dir.sock());
        c.write_all(b"stop sshd").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let inc = pump(&mut server, |_, inc| !inc.is_empty());
        assert_eq!(inc[0].request, Request::Stop("sshd".into()));
        assert!(inc[0].may_change, "tests run as root");
        server.reply(inc[0].client, Response::Error("no service \"sshd\"".into()));
        assert_eq!(read_all(c), "error: no service \"sshd\"\n");
    }

    #[test]
    fn connections_beyond_the_limit_get_busy_and_are_closed() {
        let dir = Scratch::new("busy");
        let limits = Limits {
            max_clients: 2,
            ..Limits::default()
        };
        let mut server = Server::bind_with(&dir.sock(), None, limits).unwrap();
        let _a = connect(&dir.sock());
        let _b = connect(&dir.sock());
        pump(&mut server, |s, _| s.client_count() == 2);
        let mut c = connect(&dir.sock());
        c.write_all(b"status\n").unwrap();
        pump(&mut server, |s, _| s.counters().busy == 1);
        assert_eq!(read_all(c), "error: busy\n");
        assert_eq!(server.client_count(), 2);
    }

    #[test]
    fn large_answer_to_a_slow_reader_is_written_as_the_socket_drains() {
        let dir = Scratch::new("large");
        let mut server = Server::bind(&dir.sock(), None).unwrap();
        let mut c = connect(&dir.sock());
        c.write_all(b"status\n").unwrap();
        let inc = pump(&mut server, |_, inc| !inc.is_empty());
        let body = "x".repeat(3 << 20);
        server.reply(inc[0].client, Response::Ok(body.clone()));
        // More than a socket buffer: the rest waits for EPOLLOUT.
        assert_eq!(server.client_count(), 1);
        let reader = std::thread::spawn(move || read_all(c));
        pump(&mut server, |s, _| s.client_count() == 0);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 3 + body.len() + 1);
        assert_eq!(server.queued_bytes, 0);
    }

    #[test]
    fn answers_beyond_the_queue_bound_become_busy_errors() {
        let dir = Scratch::new("queue");
        let limits = Limits {
            max_queued_bytes: 1 << 20,
            ..Limits::default()
        };
        let mut server = Server::bind_with(&dir.sock(), None, limits).unwrap();
        let mut a = connect(&dir.sock());
        let mut b = connect(&dir.sock());
        a.write_all(b"status\n").unwrap();
        b.write_all(b"status\n").unwrap();
        let inc = pump(&mut server, |_, inc| inc.len() == 2);
        server.reply(inc[0].client, Response::Ok("y".repeat(900 << 10)));
        server.reply(inc[1].client, Response::Ok("y".repeat(900 << 10)));
        let ra = std::thread::spawn(move || read_all(a));
        let rb = std::thread::spawn(move || read_all(b));
        pump(&mut server, |s, _| s.client_count() == 0);
        let mut answers = [ra.join().unwrap(), rb.join().unwrap()];
        answers.sort_by_key(String::len);
        assert!(
            answers[0].starts_with("error: busy"),
            "{}",
            &answers[0][..20.min(answers[0].len())]
        );
        assert!(answers[1].starts_with("ok\nyyy"));
    }

    #[test]
    fn rebind_after_the_file_was_removed_serves_new_and_old_clients() {
        let dir = Scratch::new("rebind");
        let mut server = Server::bind(&dir.sock(), None).unwrap();
        let mut old = connect(&dir.sock());
        pump(&mut server, |s, _| s.client_count() == 1);
        std::fs::remove_file(dir.sock()).unwrap();
        assert!(!server.in_place());
        assert!(UnixStream::connect(dir.sock()).is_err());
        server.rebind(MonoTime::now()).unwrap();
        assert!(server.in_place());
        let mode = std::fs::metadata(dir.sock()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        let mut new = connect(&dir.sock());
        old.write_all(b"status\n").unwrap();
        new.write_all(b"status\n").unwrap();
        let incoming = pump(&mut server, |_, inc| inc.len() == 2);
        for inc in incoming {
            server.reply(inc.client, Response::Status(StatusReport::default(), false));
        }
        pump(&mut server, |s, _| s.client_count() == 0);
        assert!(read_all(old).starts_with("ok\n"));
        assert!(read_all(new).starts_with("ok\n"));
        drop(server);
        assert!(!dir.sock().exists(), "drop removes the rebound socket");
    }

    #[test]
    fn stale_socket_is_replaced_other_files_are_not_and_drop_removes_ours() {
        let dir = Scratch::new("stale");
        let first = Server::bind(&dir.sock(), None).unwrap();
        std::mem::forget(first); // a crashed restarter leaves its socket behind
        let server = Server::bind(&dir.sock(), None).unwrap();
        let mode = std::fs::metadata(dir.sock()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        drop(server);
        assert!(!dir.sock().exists());

        std::fs::write(dir.sock(), b"not a socket").unwrap();
        let err = Server::bind(&dir.sock(), None).err().unwrap();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(dir.sock()).unwrap(), b"not a socket");
    }

    #[test]
    fn descriptors_are_close_on_exec() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
        let dir = Scratch::new("cloexec");
        let server = Server::bind(&dir.sock(), None).unwrap();
        for fd in [server.fd(), server.listener.as_fd()] {
            let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
            assert!(flags.contains(FdFlag::FD_CLOEXEC));
        }
        let fl =
            OFlag::from_bits_truncate(fcntl(server.listener.as_fd(), FcntlArg::F_GETFL).unwrap());
        assert!(fl.contains(OFlag::O_NONBLOCK));
    }

    #[test]
    fn permission_is_root_or_the_admin_group_primary_or_supplementary() {
        assert!(may_change(0, 0, &[], None));
        assert!(may_change(0, 1000, &[], Some(50)));
        assert!(!may_change(1000, 1000, &[], None));
        assert!(
            !may_change(1000, 1000, &[50], None),
            "no admin group: only root"
        );
        assert!(may_change(1000, 50, &[], Some(50)));
        assert!(may_change(1000, 1000, &[27, 50], Some(50)));
        assert!(!may_change(1000, 1000, &[27, 51], Some(50)));
        assert!(!may_change(65534, 65534, &[], Some(0)));
        assert!(may_change(65534, 65534, &[0], Some(0)));
    }

    #[test]
    fn groups_are_read_from_proc_status_only_for_the_same_user() {
        let text = "Name:\tbash\nUid:\t1000\t1001\t1001\t1001\nGid:\t100\t100\t100\t100\nGroups:\t27 50 100 \n";
        assert_eq!(proc_status_groups(text, 1001), Some(vec![27, 50, 100]));
        assert_eq!(
            proc_status_groups(text, 1000),
            None,
            "effective uid differs: pid reused"
        );
        assert_eq!(
            proc_status_groups("Uid:\t5\t5\t5\t5\nGroups:\t\n", 5),
            Some(vec![])
        );
        assert_eq!(proc_status_groups("Uid:\t5\t5\t5\t5\n", 5), None);
        assert_eq!(
            proc_status_groups("Uid:\t5\t5\t5\t5\nGroups:\tx\n", 5),
            None
        );
        // Our own process parses.
        let me = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(proc_status_groups(&me, nix::unistd::geteuid().as_raw()).is_some());
    }

    #[test]
    fn admin_group_member_by_primary_gid_may_change_without_proc() {
        let peer = Peer {
            pid: -1,
            uid: 1000,
            gid: 50,
        };
        assert!(peer_may_change(peer, Some(50)));
        assert!(!peer_may_change(peer, Some(51)));
        assert!(!peer_may_change(peer, None));
    }

    #[test]
    fn supplementary_groups_of_a_live_peer_come_from_proc() {
        // A real process with uid 1000 and supplementary groups 50 and 60
        // (setpriv from util-linux).
        let mut child = std::process::Command::new("setpriv")
            .args([
                "--reuid=1000",
                "--regid=1000",
                "--groups=50,60",
                "sleep",
                "30",
            ])
            .spawn()
            .expect("setpriv (util-linux) runs");
        let pid = child.id() as i32;
        // Wait until the exec happened (the uid changed).
        let start = Instant::now();
        while !std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .contains("Groups:\t50 60")
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "setpriv did not switch"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let peer = Peer {
            pid,
            uid: 1000,
            gid: 1000,
        };
        let result = (
            peer_may_change(peer, Some(60)),
            peer_may_change(peer, Some(70)),
            peer_may_change(peer, None),
            // The pid now belongs to another user: its groups are not trusted.
            peer_may_change(Peer { uid: 1001, ..peer }, Some(60)),
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(result, (true, false, false, false));
        // The peer is gone: no groups at all.
        assert!(!peer_may_change(peer, Some(60)));
    }

    #[test]
    fn resolve_group_takes_names_and_numbers() {
        assert_eq!(resolve_group("0"), Ok(0));
        assert_eq!(resolve_group("root"), Ok(0));
        assert!(resolve_group("no-such-group-tether")
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn log_limiter_allows_a_burst_per_window() {
        let mut l = LogLimiter::default();
        let t = MonoTime::ZERO;
        assert_eq!((0..15).filter(|_| l.allow(t)).count(), 10);
        assert!(!l.allow(t + Duration::from_secs(9)));
        assert!(l.allow(t + Duration::from_secs(10)));
    }
}
