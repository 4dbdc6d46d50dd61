//! The runtime directory removed under a running restarter (issue 12):
//! noticed at each check, repaired over several loop turns.

use super::*;

/// A repair of the runtime directory (see `run_dir`), spread over loop
/// turns when many notify sockets are to be bound again.
pub(super) struct RunRepair {
    damage: Damage,
    /// Notify sockets to bind again, in all.
    sockets: usize,
    /// Those not done yet.
    queue: Vec<ServiceId>,
    started: MonoTime,
    /// Time spent repairing, and in how many loop turns.
    work: Duration,
    turns: u32,
}

impl Shell {
    /// Looks for a removed runtime directory, control socket or notify
    /// socket (see `run_dir`), and puts back whatever is missing: the
    /// directory and the control socket at once, notify sockets at most
    /// [`run_dir::REPAIR_BATCH`] per loop turn (the next turn goes on at
    /// once, after the beat), so 10,000 services never stall the loop.
    pub(super) fn check_run_dir(&mut self, now: MonoTime) {
        if self.run_repair.is_none() {
            let Some(rd) = self.run_watch.as_mut() else {
                return;
            };
            let damage = rd.check();
            let look = damage.notify_dir || rd.notify_dir_changed();
            let missing: Vec<ServiceId> = if look {
                self.rt
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.notify.as_ref().is_some_and(|s| !s.in_place()))
                    .map(|(i, _)| ServiceId(i as u32))
                    .collect()
            } else {
                Vec::new()
            };
            if !damage.any() && missing.is_empty() {
                return;
            }
            self.run_repair = Some(RunRepair {
                damage,
                sockets: missing.len(),
                queue: missing,
                started: MonoTime::now(),
                work: Duration::ZERO,
                turns: 0,
            });
        }
        let t0 = MonoTime::now();
        let step = self.repair_run_dir(now);
        if let Some(r) = self.run_repair.as_mut() {
            r.work += MonoTime::now().saturating_since(t0);
            r.turns += 1;
        }
        match step {
            Ok(false) => self.wakes.set(Wake::RunCheck, Some(now)),
            Ok(true) => {
                let Some(done) = self.run_repair.take() else {
                    return;
                };
                let took = MonoTime::now().saturating_since(done.started);
                warn!(
                    "runtime directory {}: {}; recreated{}{} {} notify socket(s) at the same paths in {:.1} ms ({:.1} ms of work in {} loop turn(s)); no service restarted",
                    self.run_dir.display(),
                    done.damage,
                    if done.damage.run { " the directory," } else { "" },
                    if done.damage.control { " the control socket," } else { "" },
                    done.sockets,
                    took.as_secs_f64() * 1000.0,
                    done.work.as_secs_f64() * 1000.0,
                    done.turns
                );
                if self.run_repair_failing {
                    info!("runtime directory {}: repaired", self.run_dir.display());
                }
                self.run_repair_failing = false;
            }
            Err(e) => {
                if !self.run_repair_failing {
                    let damage = self
                        .run_repair
                        .as_ref()
                        .map(|r| r.damage)
                        .unwrap_or_default();
                    error!(
                        "runtime directory {}: {damage}; recreating it failed: {e}; retrying every {:?}",
                        self.run_dir.display(),
                        run_dir::CHECK_INTERVAL
                    );
                }
                self.run_repair_failing = true;
            }
        }
    }

    /// One step of the repair in `run_repair`: `Ok(true)` when it is
    /// complete, `Ok(false)` when notify sockets remain for the next turn.
    pub(super) fn repair_run_dir(&mut self, now: MonoTime) -> Result<bool, String> {
        let run = self.run_dir.display().to_string();
        if let Some(rd) = &self.run_watch {
            rd.recreate().map_err(|e| format!("creating {run}: {e}"))?;
        }
        if let Some(server) = self.control.as_mut() {
            if !server.in_place() {
                server
                    .rebind(now)
                    .map_err(|e| format!("control socket: {e}"))?;
            }
        }
        for _ in 0..run_dir::REPAIR_BATCH {
            let Some(&id) = self.run_repair.as_ref().and_then(|r| r.queue.last()) else {
                break;
            };
            let still_missing = self
                .rt
                .get(id)
                .and_then(|r| r.notify.as_ref())
                .is_some_and(|s| !s.in_place());
            if still_missing {
                // Whatever is still queued on the old socket first.
                self.on_notify(id, now);
            }
            if let Some(sock) = self.rt.get_mut(id).and_then(|r| r.notify.as_mut()) {
                if !sock.in_place() {
                    let old = sock
                        .rebind()
                        .map_err(|e| format!("notify socket {}: {e}", sock.path().display()))?;
                    let _ = self.epoll.delete(&old);
                    drop(old);
                    let token = TOKEN_NOTIFY | u64::from(id.0);
                    self.epoll
                        .add(sock.fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
                        .map_err(|e| format!("notify socket: epoll: {e}"))?;
                    self.sup.notify_socket_restored(id, MonoTime::now());
                    self.store_service(id);
                }
            }
            if let Some(r) = self.run_repair.as_mut() {
                r.queue.pop();
            }
        }
        if self
            .run_repair
            .as_ref()
            .is_some_and(|r| !r.queue.is_empty())
        {
            return Ok(false);
        }
        // restarter.state may have gone with the directory, and the journal
        // with it: children would append to a deleted file no new restarter
        // reads. Reopened at its path before any further start.
        if !self.journal.in_place(&self.run_dir) {
            self.journal = state_file::Journal::open(&self.run_dir)
                .map_err(|e| format!("{}: {e}", state_file::JOURNAL_NAME))?;
        }
        self.state_dirty = true;
        let has_control = self.control.is_some();
        if let Some(rd) = self.run_watch.as_mut() {
            // `remember` leaves notify/'s modification time unseen, so the
            // next check looks at every socket once more. Not taken as seen
            // here: a removal still going on (an `rm -rf` racing a repair
            // that spans loop turns, or removing what this one just bound)
            // would then go unnoticed for good, its sockets missing while
            // the directory's identity and mtime looked settled.
            rd.remember(has_control)
                .map_err(|e| format!("opening {run}: {e}"))?;
        }
        Ok(true)
    }
}
