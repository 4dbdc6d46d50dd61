//! The shell's half of re-adoption (issue 13; the pure half is
//! [`crate::adopt`]): init's fd store and exit relay, taking services back
//! at start, watching adopted processes, keeping the store current.
//!
//! - At start with a store (`store_send`, `store_recv`, `relay` in
//!   `TETHER_FDS`): the state file and journal are read, each pid checked
//!   in `/proc`, the store drained (non-blocking) and the relay read. A
//!   service whose process is the same one (start time, group) and whose
//!   output pipes are in the store is adopted; every other live process the
//!   file names goes to the leftover sweep as before. A process gone
//!   meanwhile is taken back as ended (relay status or unknown) and
//!   restarted per policy; its descriptors are taken back too, so what it
//!   wrote before dying still reaches syslog.
//! - Without a store (run alone, or an init without one) nothing here runs:
//!   leftovers are stopped and services start afresh, as before.
//! - Adopted processes are init's children: each is watched with a pidfd
//!   (readable when it ends) and its status comes from init's relay record
//!   `(pid, wait status)`. A pidfd that says "ended" with no record yet
//!   waits [`RELAY_GRACE`] for it, then the exit is handled with status
//!   unknown (the record was lost: relay pipe full).
//! - The store holds one message per service (format in `adopt`): sent
//!   when its output pipes are made and when its notify socket is bound,
//!   replaced, or dropped. Superseded messages stay queued until the store
//!   is compacted (drained and sent again, one message per service) once
//!   it holds more than twice the services plus [`STORE_SLACK`]. The send
//!   buffer is raised to [`STORE_SNDBUF`] (`SO_SNDBUFFORCE` as root); a
//!   send that still finds it full compacts and retries once, then logs
//!   (that service's descriptors would die with this restarter).

use super::{Shell, TOKEN_NOTIFY, TOKEN_OUTPUT};
use crate::adopt::{self, StoreHeader};
use crate::notify::NotifySocket;
use crate::output::ServiceOutput;
use crate::service::{Identity, LoadedSet, NotifyMode, Resolution};
use crate::spawn;
use crate::state_file::{self, Entry};
use crate::supervisor::{Event, ExitStatus, Resume, ServiceId};
use log::{debug, error, info, warn};
use nix::sys::epoll::{EpollEvent, EpollFlags};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;
use tether_common::clock::MonoTime;
use tether_common::sys::{fd_pass, pidfd};

pub(super) const TOKEN_PIDFD: u64 = 5 << super::TOKEN_KIND_SHIFT;
pub(super) const TOKEN_RELAY: u64 = 6 << super::TOKEN_KIND_SHIFT;

/// How long an adopted process that ended waits for init's relay record.
pub const RELAY_GRACE: Duration = Duration::from_millis(200);
/// Messages the store may hold beyond two per service before compaction.
pub const STORE_SLACK: usize = 64;
/// The store's send buffer: about 1 KiB of kernel memory per queued
/// message, so room for some 16,000 services' messages.
pub const STORE_SNDBUF: usize = 16 << 20;
/// Largest store message read.
const STORE_MSG_MAX: usize = 1024;

/// init's channels (see the module documentation).
pub(super) struct Store {
    send: OwnedFd,
    recv: OwnedFd,
    relay: OwnedFd,
    /// Messages believed queued (ours, since the last drain).
    queued: usize,
    /// A failed send was logged (once per episode).
    failing: bool,
    /// Bytes of an unfinished relay record.
    partial: Vec<u8>,
}

/// An adopted process being watched.
pub(super) struct Watch {
    pid: i32,
    pidfd: Option<OwnedFd>,
    /// The pidfd said it ended (no relay record yet): when.
    ended_at: Option<MonoTime>,
}

/// What start-up found, applied when services are loaded.
#[derive(Default)]
pub(super) struct Pending {
    set: Option<LoadedSet>,
    resumes: HashMap<String, Resume>,
    /// Start time of each adopted pid (for the state file).
    start_times: HashMap<String, u64>,
    fds: HashMap<String, (StoreHeader, Vec<OwnedFd>)>,
}

impl Store {
    /// From the three descriptors of `TETHER_FDS` (already taken).
    pub(super) fn new(send: OwnedFd, recv: OwnedFd, relay: OwnedFd) -> Store {
        for (what, fd) in [
            ("store_send", &send),
            ("store_recv", &recv),
            ("relay", &relay),
        ] {
            if let Err(e) = tether_common::sys::set_nonblocking(fd.as_fd(), true) {
                warn!("{what}: O_NONBLOCK: {e}");
            }
        }
        {
            use nix::sys::socket::{getsockopt, setsockopt, sockopt};
            // SO_SNDBUFFORCE needs CAP_NET_ADMIN; SO_SNDBUF is bounded by
            // net.core.wmem_max.
            if setsockopt(&send, sockopt::SndBufForce, &STORE_SNDBUF).is_err() {
                if let Err(e) = setsockopt(&send, sockopt::SndBuf, &STORE_SNDBUF) {
                    warn!("fd store: raising the send buffer: {e}");
                }
            }
            match getsockopt(&send, sockopt::SndBuf) {
                Ok(n) => debug!("fd store: send buffer {n} bytes"),
                Err(e) => debug!("fd store: SO_SNDBUF: {e}"),
            }
        }
        Store {
            send,
            recv,
            relay,
            queued: 0,
            failing: false,
            partial: Vec::new(),
        }
    }

    /// The three descriptors by their `TETHER_FDS` names.
    pub(super) fn named_fds(&self) -> [(&'static str, std::os::fd::BorrowedFd<'_>); 3] {
        use tether_common::relay::{FD_RELAY, FD_STORE_RECV, FD_STORE_SEND};
        [
            (FD_STORE_SEND, self.send.as_fd()),
            (FD_STORE_RECV, self.recv.as_fd()),
            (FD_RELAY, self.relay.as_fd()),
        ]
    }

    pub(super) fn relay_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.relay.as_fd()
    }

    /// Every message queued, with its descriptors (bad ones dropped).
    fn drain(&mut self) -> Vec<(StoreHeader, Vec<OwnedFd>)> {
        let mut out = Vec::new();
        let mut bad = 0;
        let mut buf = [0u8; STORE_MSG_MAX];
        loop {
            match fd_pass::recv_fds(self.recv.as_fd(), &mut buf) {
                Ok(Some(m)) => match StoreHeader::decode(&buf[..m.len]) {
                    Some(h) if h.fd_count() == m.fds.len() && !m.truncated => out.push((h, m.fds)),
                    _ => bad += 1,
                },
                Ok(None) => break,
                Err(e) => {
                    error!("fd store: {e}");
                    break;
                }
            }
        }
        if bad > 0 {
            warn!("fd store: {bad} message(s) not understood: dropped with their descriptors");
        }
        self.queued = 0;
        out
    }

    /// Empties the store (a clean exit: nothing is to be adopted).
    pub(super) fn drain_all(&mut self) -> usize {
        self.drain().len()
    }

    /// Complete `(pid, wait status)` records queued on the relay.
    fn read_relay(&mut self) -> Vec<(i32, i32)> {
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(&self.relay, &mut buf) {
                Ok(0) => break,
                Ok(n) => self.partial.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => {
                    error!("relay: {e}");
                    break;
                }
            }
        }
        let whole = self.partial.len() / tether_common::relay::RECORD_LEN
            * tether_common::relay::RECORD_LEN;
        let records = tether_common::relay::decode(&self.partial[..whole]).collect();
        self.partial.drain(..whole);
        records
    }
}

/// The three store names of `TETHER_FDS`.
pub(super) fn is_store_name(name: &str) -> bool {
    use tether_common::relay::{FD_RELAY, FD_STORE_RECV, FD_STORE_SEND};
    [FD_STORE_SEND, FD_STORE_RECV, FD_RELAY].contains(&name)
}

impl Shell {
    /// Start-up with a store: decides what is adopted; returns the entries
    /// left to the leftover sweep.
    pub(super) fn prepare_adoption(&mut self, entries: Vec<Entry>) -> Vec<Entry> {
        let Some(store) = self.store.as_mut() else {
            return entries;
        };
        let set = crate::service::load_dir(&self.services_dir);
        let valid: std::collections::HashSet<&str> =
            set.specs.iter().map(|s| s.name.as_str()).collect();
        let (newest, mut sweep) = adopt::newest_by_name(entries);
        // /proc before the relay: a process found gone has its record
        // (if init wrote one) queued by then.
        let observed: HashMap<String, adopt::Observed> = newest
            .iter()
            .map(|(name, (e, _))| {
                let o = spawn::proc_start_time(e.pid)
                    .zip(spawn::proc_stat_field(e.pid, 5).and_then(|s| s.parse::<i32>().ok()));
                (name.clone(), if e.pid > 1 { o } else { None })
            })
            .collect();
        let mut fds: HashMap<String, (StoreHeader, Vec<OwnedFd>)> = HashMap::new();
        for (h, f) in store.drain() {
            // A later message of a service replaces an earlier one.
            fds.insert(h.name.clone(), (h, f));
        }
        fds.retain(|name, _| valid.contains(name.as_str()));
        let relayed: HashMap<i32, i32> = store.read_relay().into_iter().collect();
        let mut pending = Pending::default();
        for (name, (e, saved)) in newest {
            let obs = observed.get(&name).copied().flatten();
            let same = adopt::is_same(&e, obs);
            let has_output = fds.get(&name).is_some_and(|(h, _)| h.output);
            if !valid.contains(name.as_str()) || (same && !has_output) {
                // Not ours to adopt: stopped as a leftover.
                if e.pid > 1 {
                    if same {
                        info!(
                            "service {name}: pid {} cannot be adopted ({}): stopping it",
                            e.pid,
                            if valid.contains(name.as_str()) {
                                "its output pipes are not in the fd store"
                            } else {
                                "no such service now"
                            }
                        );
                    }
                    sweep.push(e);
                }
                continue;
            }
            if e.pid > 1 && !same {
                // Ended meanwhile; what is left of its session is swept.
                sweep.push(e.clone());
            }
            let r = adopt::resume_of(&e, saved.as_ref(), obs, relayed.get(&e.pid).copied());
            if same {
                pending.start_times.insert(name.clone(), e.start_time);
            }
            pending.resumes.insert(name, r);
        }
        info!(
            "adopting: {} service(s) from {}, {} with descriptors in the fd store, {} relay record(s)",
            pending.resumes.len(),
            state_file::FILE_NAME,
            fds.len(),
            relayed.len()
        );
        pending.fds = fds;
        pending.set = Some(set);
        self.pending = Some(pending);
        sweep
    }

    /// Loads the services of start-up with what [`prepare_adoption`]
    /// found; false when there is nothing pending (a plain load follows).
    pub(super) fn load_adopting(&mut self, now: MonoTime) -> bool {
        let Some(mut p) = self.pending.take() else {
            return false;
        };
        let mut set = p.set.take().unwrap_or_default();
        self.ask_identities(&mut set.specs, now);
        self.log_fd_budget(&set.specs);
        // Descriptors first, so a service's output is drained from now on.
        let specs = set.specs.clone();
        let actions_set = set;
        // Ids are assigned by the supervisor at load: install first, then
        // attach by name.
        let actions = self
            .sup
            .load_adopting(actions_set, std::mem::take(&mut p.resumes), now);
        for spec in &specs {
            let Some(id) = self.sup.id(&spec.name) else {
                continue;
            };
            let Some((h, fds)) = p.fds.remove(&spec.name) else {
                continue;
            };
            self.attach(id, spec, h, fds);
            if let Some(st) = p.start_times.get(&spec.name) {
                self.rt.row(id).start_time = *st;
            }
            if let (Some(pid), Some(out)) = (
                self.sup.pgid(id),
                self.rt.get_mut(id).and_then(|r| r.output.as_mut()),
            ) {
                out.set_pid(pid);
            }
        }
        let watched = actions
            .iter()
            .filter(|a| matches!(a, crate::supervisor::Action::Watch { .. }))
            .count();
        self.execute(actions, now);
        // The store now holds nothing (drained): one message per service.
        self.compact_store();
        info!(
            "adoption done: {watched} service(s) adopted, {} ms after start",
            MonoTime::now().saturating_since(self.started).as_millis()
        );
        true
    }

    /// Gives service `id` the descriptors the store kept for it.
    fn attach(
        &mut self,
        id: ServiceId,
        spec: &crate::service::ServiceSpec,
        h: StoreHeader,
        fds: Vec<OwnedFd>,
    ) {
        let mut fds = fds.into_iter();
        if h.output {
            let four: Vec<OwnedFd> = fds.by_ref().take(adopt::OUT_FDS).collect();
            let Ok(four) = <[OwnedFd; 4]>::try_from(four) else {
                return;
            };
            match ServiceOutput::from_fds(&spec.name, four) {
                Ok(out) => {
                    for fd in out.fds() {
                        let token = TOKEN_OUTPUT | u64::from(id.0);
                        if let Err(e) = self
                            .epoll
                            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
                        {
                            error!("service {}: output pipe: epoll: {e}", spec.name);
                        }
                    }
                    self.rt.row(id).output = Some(out);
                }
                Err(e) => error!("service {}: stored output pipes: {e}", spec.name),
            }
        }
        if let (true, Some(fd)) = (h.notify, fds.next()) {
            if spec.notify == NotifyMode::None {
                return; // notify turned off in the file meanwhile
            }
            let uid = match &spec.identity {
                Resolution::Resolved(Identity { uid: Some(uid), .. }) => *uid,
                _ => 0,
            };
            let path = self
                .run_dir
                .join("notify")
                .join(format!("{}.sock", spec.name));
            let sock = NotifySocket::adopt(&path, fd, uid);
            let token = TOKEN_NOTIFY | u64::from(id.0);
            if let Err(e) = self
                .epoll
                .add(sock.fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
            {
                error!("service {}: notify socket: epoll: {e}", spec.name);
            }
            let r = self.rt.row(id);
            r.notify = Some(sock);
            r.notify_user = Some(spec.user.clone());
        }
        if let Some(cg) = &self.cgroups {
            if let Ok(c) = cg.prepare(&spec.name) {
                self.rt.row(id).cgroup = Some(c);
            }
        }
    }

    /// Sends service `id`'s descriptors to the store (after its output
    /// pipes were made, or its notify socket changed).
    pub(super) fn store_service(&mut self, id: ServiceId) {
        if self.store.is_none() {
            return;
        }
        let live = self.rt.iter().filter(|r| r.output.is_some()).count();
        if self
            .store
            .as_ref()
            .is_some_and(|s| s.queued > 2 * live + STORE_SLACK)
        {
            self.compact_store();
            return;
        }
        if !self.send_one(id) {
            // Full: compaction makes room (it resends this one too).
            self.compact_store();
        }
    }

    /// Sends one message; false when the store is full.
    fn send_one(&mut self, id: ServiceId) -> bool {
        let (Some(store), Some(r), Some(name)) =
            (self.store.as_mut(), self.rt.get(id), self.sup.name(id))
        else {
            return true;
        };
        let out = r.output.as_ref().and_then(|o| o.store_fds());
        let h = StoreHeader {
            name: name.to_string(),
            pid: self.sup.pgid(id).unwrap_or(0),
            start_time: r.start_time,
            output: out.is_some(),
            notify: r.notify.is_some(),
        };
        let mut fds: Vec<std::os::fd::BorrowedFd<'_>> = out.map(|o| o.to_vec()).unwrap_or_default();
        if let Some(n) = &r.notify {
            fds.push(n.fd());
        }
        if fds.is_empty() {
            return true;
        }
        match fd_pass::send_fds(store.send.as_fd(), &h.encode(), &fds) {
            Ok(_) => {
                store.queued += 1;
                if store.failing {
                    store.failing = false;
                    info!("fd store: sending works again");
                }
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => false,
            Err(e) => {
                if !store.failing {
                    store.failing = true;
                    error!("fd store: sending {name}'s descriptors: {e} (they would not outlive this restarter)");
                }
                true
            }
        }
    }

    /// Drains the store and sends one message per service holding
    /// descriptors.
    pub(super) fn compact_store(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        drop(store.drain());
        let ids: Vec<ServiceId> = (0..self.rt.len() as u32)
            .map(ServiceId)
            .filter(|id| self.sup.name(*id).is_some())
            .collect();
        for id in ids {
            if !self.send_one(id) {
                if let Some(s) = self.store.as_mut() {
                    if !s.failing {
                        s.failing = true;
                        error!("fd store full (send buffer): some services' descriptors would not outlive this restarter");
                    }
                }
                break;
            }
        }
    }

    /// Starts watching an adopted process (`Action::Watch`).
    pub(super) fn watch(&mut self, id: ServiceId, pid: i32, now: MonoTime) {
        let (pidfd, ended_at) = match pidfd::pidfd_open(pid) {
            Ok(fd) => {
                let token = TOKEN_PIDFD | u64::from(id.0);
                if let Err(e) = self
                    .epoll
                    .add(fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
                {
                    error!("pidfd of {pid}: epoll: {e}");
                }
                (Some(fd), None)
            }
            // Gone already: the relay record decides, or the grace.
            Err(e) => {
                debug!("pidfd_open({pid}): {e}");
                (None, Some(now))
            }
        };
        self.watches.insert(
            id,
            Watch {
                pid,
                pidfd,
                ended_at,
            },
        );
    }

    /// A pidfd became readable: the adopted process ended.
    pub(super) fn on_pidfd(&mut self, id: ServiceId, now: MonoTime) {
        self.on_relay(now);
        if let Some(w) = self.watches.get_mut(&id) {
            if let Some(fd) = w.pidfd.take() {
                let _ = self.epoll.delete(fd.as_fd());
            }
            w.ended_at.get_or_insert(now);
        }
    }

    /// Relay records: the end of adopted processes.
    pub(super) fn on_relay(&mut self, now: MonoTime) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        for (pid, raw) in store.read_relay() {
            let Some(id) = self.sup.id_by_pid(pid) else {
                continue; // not a service's (or already handled)
            };
            if self.watches.get(&id).is_none_or(|w| w.pid != pid) {
                continue;
            }
            let status = ExitStatus::from_raw(raw).unwrap_or(ExitStatus::Unknown);
            self.adopted_ended(id, pid, status, now);
        }
    }

    /// Stops watching service `id`'s adopted process (it ended).
    pub(super) fn unwatch(&mut self, id: ServiceId) {
        if let Some(w) = self.watches.remove(&id) {
            if let Some(fd) = w.pidfd {
                let _ = self.epoll.delete(fd.as_fd());
            }
        }
    }

    fn adopted_ended(&mut self, id: ServiceId, pid: i32, status: ExitStatus, now: MonoTime) {
        self.unwatch(id);
        if let Some(out) = self.rt.get_mut(id).and_then(|r| r.output.as_mut()) {
            out.finish_process(&mut self.syslog, now);
            out.set_pid(0);
        }
        self.note_buffered(id, now);
        let actions = self.sup.handle(id, Event::Exited { pid, status }, now);
        self.execute(actions, now);
    }

    /// The earliest end of a relay grace.
    pub(super) fn watch_deadline(&self) -> Option<MonoTime> {
        self.watches
            .values()
            .filter_map(|w| w.ended_at)
            .min()
            .map(|t| t + RELAY_GRACE)
    }

    /// Ends whose relay record did not come within [`RELAY_GRACE`].
    pub(super) fn expire_watches(&mut self, now: MonoTime) {
        let due: Vec<(ServiceId, i32)> = self
            .watches
            .iter()
            .filter(|(_, w)| {
                w.ended_at
                    .is_some_and(|t| now.saturating_since(t) >= RELAY_GRACE)
            })
            .map(|(id, w)| (*id, w.pid))
            .collect();
        if due.is_empty() {
            return;
        }
        self.on_relay(now);
        for (id, pid) in due {
            if self.watches.contains_key(&id) {
                warn!("pid {pid} ended with no record on init's relay within {} ms: exit status unknown", RELAY_GRACE.as_millis());
                self.adopted_ended(id, pid, ExitStatus::Unknown, now);
            }
        }
    }
}
