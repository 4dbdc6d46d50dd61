//! Carrying out the supervisor's actions: spawn (with the resources its
//! row holds), kill, provision and release resources, the state file, a
//! reboot request to init. Results go back to the supervisor as events;
//! nothing here chooses what comes next.

use super::*;

impl Shell {
    pub(super) fn execute(&mut self, actions: Vec<Action>, now: MonoTime) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Spawn { id } => {
                    if self.hold_for_identity(id, now) {
                        continue;
                    }
                    queue.extend(self.start_or_queue(id, now));
                    self.maybe_beat();
                }
                Action::Kill {
                    id,
                    pid,
                    group,
                    signal,
                } => self.kill(id, pid, group, signal),
                Action::Log { level, message } => crate::msgid::log(level, &message),
                Action::RequestReboot { reason } => {
                    if let Err(e) = self.request_shutdown(Code::Reboot, &reason) {
                        error!("{e}");
                    }
                }
                Action::WriteState => self.state_dirty = true,
                Action::Watch { id, pid } => self.watch(id, pid, now),
                Action::Provision { id } => {
                    if let Err(Event::SpawnFailed { message, .. }) = self.provision(id) {
                        let name = self.sup.name(id).unwrap_or("?");
                        warn!("service {name}: resources: {message} (tried again at its start)");
                        queue.extend(self.sup.handle(id, Event::ProvisionFailed, now));
                    }
                }
                Action::Release { id } => {
                    self.awaiting.remove(&id);
                    self.forget(id)
                }
            }
        }
    }

    /// `Action::Provision`: makes what service `id`'s spec needs in its
    /// row of the resource table (`resources`): output pipes once per
    /// service (the same for every run), a notify socket owned by the
    /// service's user for a notify service (none otherwise), its cgroup.
    /// A failure is logged and kept in the row; the next start provisions
    /// again and fails with it (retried per policy).
    pub(super) fn provision(&mut self, id: ServiceId) -> Result<(), Event> {
        let Some(spec) = self.sup.spec(id).cloned() else {
            return Ok(());
        };
        let fail = |message: String| Event::SpawnFailed {
            errno: None,
            message,
        };
        // Descriptors new or gone since the store last heard of them.
        let mut stored = false;
        let r = self.provision_rows(id, &spec, &mut stored, fail);
        if stored {
            self.store_service(id);
        }
        let row = self.rt.row(id);
        row.provision_error = match &r {
            Err(Event::SpawnFailed { errno, message }) => Some((*errno, message.clone())),
            _ => None,
        };
        r
    }

    pub(super) fn provision_rows(
        &mut self,
        id: ServiceId,
        spec: &service::ServiceSpec,
        stored: &mut bool,
        fail: impl Fn(String) -> Event,
    ) -> Result<(), Event> {
        if self.rt.row(id).output.is_none() {
            // Never into the descriptors kept for the restarter itself.
            if let Err(e) = spawn::fds_left_for_a_service(self.epoll.0.as_fd(), self.nofile_limit())
            {
                return Err(spawn_failed_io("descriptor reserve of the restarter", &e));
            }
            let out = ServiceOutput::new(&spec.name)
                .map(|(out, _first)| out)
                .map_err(|e| spawn_failed_io("output pipes", &e))?;
            for fd in out.fds() {
                let token = TOKEN_OUTPUT | u64::from(id.0);
                if let Err(e) = self
                    .epoll
                    .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
                {
                    return Err(fail(format!("output pipe: epoll: {e}")));
                }
            }
            self.rt.row(id).output = Some(out);
            *stored = true;
        }
        // The notify socket, for notify services, owned by the service's
        // user.
        if spec.notify != NotifyMode::None {
            let resolved_for = Some(spec.user.clone());
            if self.rt.row(id).notify_user != resolved_for {
                // The uid resolved off the loop (resolver.rs): a start is
                // held until it is known.
                let uid = match notify::service_uid(spec) {
                    Ok(uid) => uid,
                    Err(e) => return Err(fail(format!("notify socket: {e}"))),
                };
                if let Some(sock) = self.rt.row(id).notify.as_mut() {
                    if let Err(e) = sock.set_owner(uid) {
                        return Err(fail(format!(
                            "notify socket {}: {e}",
                            sock.path().display()
                        )));
                    }
                } else {
                    let path = self
                        .run_dir
                        .join("notify")
                        .join(format!("{}.sock", spec.name));
                    match NotifySocket::bind(&path, uid) {
                        Ok(sock) => {
                            let token = TOKEN_NOTIFY | u64::from(id.0);
                            if let Err(e) = self
                                .epoll
                                .add(sock.fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
                            {
                                return Err(fail(format!("notify socket: epoll: {e}")));
                            }
                            self.rt.row(id).notify = Some(sock);
                            *stored = true;
                        }
                        Err(e) => {
                            return Err(spawn_failed_io(
                                &format!("notify socket {}", path.display()),
                                &e,
                            ))
                        }
                    }
                }
                self.rt.row(id).notify_user = resolved_for;
            }
        } else if let Some(sock) = self.rt.row(id).notify.take() {
            self.rt.row(id).notify_user = None;
            let _ = self.epoll.delete(sock.fd());
            *stored = true;
        }
        // The cgroup, when cgroups are in use.
        if self.rt.row(id).cgroup.is_none() {
            if let Some(cg) = &self.cgroups {
                match cg.prepare(&spec.name) {
                    Ok(c) => self.rt.row(id).cgroup = Some(c),
                    Err(e) => {
                        if !self.cgroup_warned {
                            warn!(
                                "cgroup for {}: {e}; services are bounded by their process group",
                                spec.name
                            );
                            self.cgroup_warned = true;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Spawns service `id` and reports the result to the supervisor. A
    /// start that found its resources missing reports
    /// `Event::ProvisionFailed` first, so the next start provisions again.
    pub(super) fn spawn_and_report(&mut self, id: ServiceId, now: MonoTime) -> Vec<Action> {
        let event = self.spawn(id);
        let mut actions = Vec::new();
        if matches!(event, Event::SpawnFailed { .. }) && self.unprovisioned(id) {
            actions.extend(self.sup.handle(id, Event::ProvisionFailed, now));
        }
        actions.extend(self.sup.handle(id, event, now));
        actions
    }

    /// Whether service `id`'s row lacks what its spec needs (or its last
    /// provision failed).
    fn unprovisioned(&self, id: ServiceId) -> bool {
        let Some(spec) = self.sup.spec(id) else {
            return false;
        };
        self.rt.get(id).is_none_or(|r| {
            r.provision_error.is_some()
                || r.output.is_none()
                || (spec.notify != NotifyMode::None) != r.notify.is_some()
        })
    }

    /// `Action::Spawn`: starts the process with what the service's row
    /// holds; it creates nothing (a row left incomplete by a failed
    /// provision fails the start with that provision's error).
    pub(super) fn spawn(&mut self, id: ServiceId) -> Event {
        let Some(spec) = self.sup.spec(id).cloned() else {
            return Event::SpawnFailed {
                errno: None,
                message: "unknown service".into(),
            };
        };
        if self.unprovisioned(id) {
            // The supervisor provisioned again just before (it does after
            // a failed provision): that failed too, or never happened.
            let (errno, message) = self
                .rt
                .get(id)
                .and_then(|r| r.provision_error.clone())
                .unwrap_or((None, "resources not provisioned".into()));
            return Event::SpawnFailed { errno, message };
        }
        let Some(r) = self.rt.get_mut(id) else {
            return Event::SpawnFailed {
                errno: None,
                message: "no resources".into(),
            };
        };
        let pipes = match r.output.as_mut().map(|o| o.reopen()) {
            Some(Ok(p)) => p,
            Some(Err(e)) => return spawn_failed_io("output pipes", &e),
            None => {
                return Event::SpawnFailed {
                    errno: None,
                    message: "no output pipes".into(),
                }
            }
        };
        // Stale datagrams dropped: a READY=1 of a previous run must not
        // make this one ready.
        if let Some(sock) = r.notify.as_mut() {
            let stale = sock.receive(None);
            if !stale.is_empty() {
                debug!(
                    "service {}: {} stale notify datagram(s) dropped",
                    spec.name,
                    stale.len()
                );
            }
        }
        let notify_path = r.notify.as_ref().map(|s| s.path().to_path_buf());
        let r = &self.rt.get(id).expect("checked above");
        let ctx = SpawnContext {
            pipes,
            notify_socket: notify_path.as_deref(),
            cgroup_procs: r.cgroup.as_ref().map(|c| c.procs_fd()),
            base_nofile: self.base_nofile,
            journal: self.journal.fd(),
            helper: spawn::HELPER.as_ref(),
            exec_status: Some(self.exec_status.write_end()),
        };
        match spawn::spawn(&mut self.spawner, &spec, ctx) {
            Ok(pid) => {
                let r = self.rt.row(id);
                r.start_time = spawn::proc_start_time(pid).unwrap_or(0);
                if let Some(out) = r.output.as_mut() {
                    out.set_pid(pid);
                }
                Event::Spawned { pid }
            }
            Err(e) => Event::SpawnFailed {
                errno: e.errno,
                message: e.message,
            },
        }
    }

    pub(super) fn kill(&mut self, id: ServiceId, pid: i32, group: bool, signal: i32) {
        let Ok(sig) = Signal::try_from(signal) else {
            return;
        };
        let target = nix::unistd::Pid::from_raw(if group { -pid } else { pid });
        match nix::sys::signal::kill(target, sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => warn!("kill({}, {}): {e}", target, sig.as_str()),
        }
        if !group {
            return;
        }
        if let Some(cg) = self.rt.get(id).and_then(|r| r.cgroup.as_ref()) {
            if signal == libc::SIGKILL {
                if let Err(e) = cg.kill() {
                    warn!("{}/cgroup.kill: {e}", cg.dir().display());
                }
            } else {
                cg.signal(signal);
            }
        }
    }

    pub(super) fn forget(&mut self, id: ServiceId) {
        self.unwatch(id);
        let Some(r) = self.rt.get_mut(id) else {
            return;
        };
        let r = std::mem::take(r);
        if let Some(mut out) = r.output {
            for fd in out.fds() {
                let _ = self.epoll.delete(fd);
            }
            out.close_write_ends();
            out.finish_process(&mut self.syslog, MonoTime::now());
        }
        if let Some(sock) = r.notify {
            let _ = self.epoll.delete(sock.fd());
        }
        if let Some(cg) = r.cgroup {
            let dir = cg.dir().to_path_buf();
            if let Err(e) = cg.remove() {
                debug!("removing {}: {e}", dir.display());
            }
        }
    }

    pub(super) fn write_state(&mut self) {
        self.state_dirty = false;
        let entries: Vec<state_file::Entry> = self
            .sup
            .resumes()
            .into_iter()
            .map(|(id, name, stop_timeout, r)| {
                let pid = r.pid.unwrap_or(0);
                let (history, level) = r.history.parts();
                state_file::Entry {
                    name: name.to_string(),
                    pid,
                    pgid: pid,
                    start_time: if pid > 0 {
                        self.rt.get(id).map_or(0, |r| r.start_time)
                    } else {
                        0
                    },
                    stop_timeout,
                    saved: Some(state_file::Saved {
                        restarts: r.restarts,
                        started: r.started,
                        ready: r.ready,
                        watchdog_timeout: r.watchdog_timeout,
                        history,
                        level,
                        wanted: r.wanted,
                        failed: r.failed,
                    }),
                }
            })
            .collect();
        let path = self.run_dir.join(state_file::FILE_NAME);
        match state_file::write(&path, &entries) {
            Ok(()) => {
                if let Err(e) = self.journal.clear() {
                    debug!("emptying {}: {e}", state_file::JOURNAL_NAME);
                }
                self.wakes.set(Wake::StateRetry, None);
                if std::mem::take(&mut self.state_failing) {
                    info!("writing {} works again", path.display());
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut self.state_failing, true) {
                    error!(
                        "writing {}: {e} (supervision goes on; retrying every {}s)",
                        path.display(),
                        STATE_RETRY.as_secs()
                    );
                }
                self.wakes
                    .set(Wake::StateRetry, Some(MonoTime::now() + STATE_RETRY));
            }
        }
    }

    /// Writes `RUN/shutdown-request` and sends `code` to init.
    pub(super) fn request_shutdown(&mut self, code: Code, reason: &str) -> Result<(), String> {
        let what = match code {
            Code::Reboot => "reboot",
            Code::Poweroff => "poweroff",
            Code::Halt => "halt",
            _ => "shutdown",
        };
        let Some(i) = self.init_pipe else {
            let msg = format!(
                "{what} requested ({reason}) but not possible: not started by tether-init (no init pipe in {ENV_FDS})"
            );
            return Err(msg);
        };
        let line = format!("{reason}\n");
        if let Err(e) =
            tether_common::record::write_atomic(&self.run_dir, SHUTDOWN_REQUEST, line.as_bytes())
        {
            error!("{e}");
        }
        logging::alert(format_args!(
            "requesting an orderly {what} from init: {reason}"
        ));
        match self.beats[i].send(code) {
            Ok(Sent::Written) => {}
            Ok(Sent::PipeFull) => {
                warn!("init pipe full: the {what} request is retried at the next beat");
                self.pending_code = Some(code);
            }
            Err(e) => {
                self.pending_code = Some(code);
                return Err(format!("{what} request: init pipe: {e}"));
            }
        }
        Ok(())
    }
}
