//! One service's process lifecycle: spawned, failed to spawn, exited (and
//! the restart policy after it), a stop begun, a stop timeout or watchdog
//! deadline passed.

use super::*;

impl Supervisor {
    /// Acts on every deadline that has passed at `now`.
    pub fn tick(&mut self, now: MonoTime) -> Vec<Action> {
        let mut due: Vec<ServiceId> = self
            .timers
            .take_due_where(now, |&(_, t)| t == Timer::Proc)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        // Slot order, as the full scan this replaces.
        due.sort_unstable();
        for id in due {
            // Rearmed by the reconcile below.
            self.mark(id);
            let Some(Entry::Valid(s)) = self.slots[id.index()].as_mut() else {
                continue;
            };
            let kill_due = matches!(&s.phase, Phase::Stopping(_, st) if st.kill_at <= now);
            let missed = matches!(
                &s.phase,
                Phase::Up(p) if p.watchdog_deadline.is_some_and(|d| d <= now)
            );
            if kill_due {
                if step(&mut s.phase, Input::KillDue) == Step::Changed {
                    let pid = s.phase.proc_().map_or(0, |p| p.pid);
                    let (name, t) = (s.spec.name.clone(), s.spec.stop_timeout);
                    self.out.push(Action::Kill {
                        id,
                        pid,
                        group: true,
                        signal: libc::SIGKILL,
                    });
                    self.log(
                        Level::Warn,
                        format!(
                            "service {name} did not stop within {}: SIGKILL to its process group",
                            fmt_dur(t)
                        ),
                    );
                }
            } else if missed {
                self.watchdog_miss(id, now);
                // No longer ready.
                self.touch(id);
            }
        }
        self.reconcile(now);
        self.take()
    }

    pub(super) fn on_spawned(&mut self, id: ServiceId, pid: i32, now: MonoTime) {
        let s = self.service_mut(id);
        s.last_start = Some(now);
        s.stats.last_error = None;
        s.stats.status_text = None;
        let watchdog_timeout = (s.spec.notify == NotifyMode::Watchdog)
            .then_some(s.spec.watchdog_timeout)
            .flatten();
        let started = Proc {
            pid,
            started: now,
            ready: s.spec.notify == NotifyMode::None,
            watchdog_timeout,
            watchdog_deadline: watchdog_timeout.map(|t| now + t),
            main_pid: None,
        };
        step(&mut s.phase, Input::Started(started));
        let name = s.spec.name.clone();
        self.by_pid.insert(pid, id);
        if let Some(n) = self.descriptors_out.0.take() {
            self.log(
                Level::Warn,
                format!(
                    "descriptors available again ({n} more start(s) had failed with EMFILE/ENFILE)"
                ),
            );
        }
        self.log(Level::Info, format!("service {name} started (pid {pid})"));
        self.out.push(Action::WriteState);
    }

    pub(super) fn on_spawn_failed(
        &mut self,
        id: ServiceId,
        errno: Option<i32>,
        message: String,
        now: MonoTime,
    ) {
        let s = self.service_mut(id);
        step(&mut s.phase, Input::SpawnFailed);
        s.last_start = Some(now);
        let errno_text = errno
            .map(|e| format!(" [{:?}]", nix::errno::Errno::from_raw(e)))
            .unwrap_or_default();
        s.stats.last_error = Some(format!("cannot start: {message}{errno_text}"));
        let line = format!(
            "service {}: cannot start: {message}{errno_text}",
            s.spec.name
        );
        match (out_of_descriptors(errno), self.descriptors_out.0) {
            (true, Some(n)) => {
                self.descriptors_out.0 = Some(n + 1);
                self.log(Level::Debug, line);
            }
            (true, None) => {
                self.descriptors_out.0 = Some(0);
                self.log(
                    Level::Error,
                    format!(
                        "{line}; out of descriptors: further starts failing so are retried per policy but not logged until one succeeds (raise RLIMIT_NOFILE: [init] nofile)"
                    ),
                );
            }
            (false, _) => self.log(Level::Error, line),
        }
        self.after_end(id, true, now, now);
    }

    pub(super) fn on_exit(&mut self, id: ServiceId, pid: i32, status: ExitStatus, now: MonoTime) {
        let Step::Ended { proc_: p, reason } =
            step(&mut self.service_mut(id).phase, Input::Exited { pid })
        else {
            return;
        };
        self.by_pid.remove(&pid);
        // Whatever is left of the group goes with it.
        self.out.push(Action::Kill {
            id,
            pid,
            group: true,
            signal: libc::SIGKILL,
        });
        self.out.push(Action::WriteState);
        let ran = fmt_dur(now.saturating_since(p.started));
        let how = match reason {
            Some(StopReason::Watchdog) => format!("{status} (watchdog)"),
            _ => status.to_string(),
        };
        let s = self.service_mut(id);
        s.stats.last_exit = Some(how.clone());
        let name = s.spec.name.clone();
        if s.removing {
            self.log(
                Level::Info,
                format!("service {name} stopped: {how} after {ran}; removed"),
            );
            self.forget(id);
            return;
        }
        if s.restart_after_stop {
            s.restart_after_stop = false;
            if let Some(spec) = s.next_spec.take() {
                apply_spec(s, spec);
                self.provision(id);
                // Its dependencies may have changed.
                self.rebuild_dependents();
                self.mark_all();
            } else {
                s.wanted = true;
                s.failed = false;
                s.history.reset();
                s.last_start = None;
                s.start_at = None;
            }
            self.log(
                Level::Info,
                format!("service {name} stopped: {how} after {ran}; starting it again"),
            );
            return;
        }
        match reason {
            None => {
                let level = if status.success() {
                    Level::Info
                } else {
                    Level::Warn
                };
                self.log(level, format!("service {name} exited: {how} after {ran}"));
                self.after_end(id, !status.success(), p.started, now);
            }
            Some(StopReason::Watchdog) => {
                self.log(
                    Level::Error,
                    format!("service {name} exited: {how} after {ran}"),
                );
                self.after_end(id, true, p.started, now);
            }
            Some(_) => self.log(
                Level::Info,
                format!("service {name} stopped: {how} after {ran}"),
            ),
        }
    }

    /// The policy after a run that ended on its own (or a start that
    /// failed): restart, back off, fail, or ask for a reboot.
    pub(super) fn after_end(
        &mut self,
        id: ServiceId,
        failed: bool,
        started: MonoTime,
        now: MonoTime,
    ) {
        if !self.desired(id, 0) {
            return;
        }
        let s = self.service_mut(id);
        let name = s.spec.name.clone();
        let decision = s.history.decide(&s.spec, failed, started, now);
        match decision {
            Decision::RestartAt(at) => {
                s.start_at = Some(at);
                s.backoff = false;
                s.stats.restarts += 1;
                let wait = at.saturating_since(now);
                if !wait.is_zero() {
                    self.log(
                        Level::Info,
                        format!("service {name}: restarting in {}", fmt_dur(wait)),
                    );
                }
            }
            Decision::Backoff { at, delay } => {
                s.start_at = Some(at);
                s.backoff = true;
                s.stats.restarts += 1;
                let limit = s.spec.limit.expect("backoff needs a window");
                self.log(
                    Level::Warn,
                    format!(
                        "service {name}: more than {} restarts within {}: backing off, restarting in {}",
                        limit.max_restarts,
                        duration::format(limit.window),
                        fmt_dur(delay)
                    ),
                );
            }
            Decision::Failed | Decision::Reboot => {
                s.failed = true;
                s.wanted = false;
                s.start_at = None;
                let limit = s.spec.limit.expect("exhaustion needs a window");
                let what = format!(
                    "service {name} exhausted its restart budget ({} restarts within {})",
                    limit.max_restarts,
                    duration::format(limit.window)
                );
                if decision == Decision::Reboot {
                    self.log(
                        Level::Error,
                        format!("{what}: requesting an orderly reboot"),
                    );
                    self.out.push(Action::RequestReboot { reason: what });
                } else {
                    self.log(Level::Error, format!("{what}: failed, not restarted"));
                }
            }
            Decision::NoRestart => {
                s.wanted = false;
                s.start_at = None;
                let why = format!("restart = \"{}\"", restart_mode_name(s.spec.restart));
                self.log(
                    Level::Info,
                    format!("service {name}: not restarted ({why})"),
                );
            }
        }
    }

    pub(super) fn watchdog_miss(&mut self, id: ServiceId, now: MonoTime) {
        let s = self.service_mut(id);
        let name = s.spec.name.clone();
        let stop_timeout = s.spec.stop_timeout;
        let Some(p) = s.phase.proc_() else { return };
        let (timeout, pid) = (p.watchdog_timeout.unwrap_or_default(), p.pid);
        let stop = Stopping {
            kill_at: now + stop_timeout,
            killed: false,
            reason: StopReason::Watchdog,
        };
        if step(&mut s.phase, Input::Stop(stop)) != Step::Changed {
            return;
        }
        self.out.push(Action::Kill {
            id,
            pid,
            group: false,
            signal: libc::SIGABRT,
        });
        self.log(
            Level::Error,
            format!(
                "service {name} missed its watchdog (no WATCHDOG=1 within {}): SIGABRT, SIGKILL in {}",
                fmt_dur(timeout),
                fmt_dur(stop_timeout)
            ),
        );
    }

    pub(super) fn begin_stop(&mut self, id: ServiceId, reason: StopReason, now: MonoTime) {
        let s = self.service_mut(id);
        let name = s.spec.name.clone();
        let (signal, timeout) = (s.spec.stop_signal, s.spec.stop_timeout);
        let Some(pid) = s.phase.proc_().map(|p| p.pid) else {
            return;
        };
        let stop = Stopping {
            kill_at: now + timeout,
            killed: false,
            reason,
        };
        if step(&mut s.phase, Input::Stop(stop)) != Step::Changed {
            return;
        }
        self.out.push(Action::Kill {
            id,
            pid,
            group: true,
            signal,
        });
        if signal != libc::SIGKILL && signal != libc::SIGCONT {
            self.out.push(Action::Kill {
                id,
                pid,
                group: true,
                signal: libc::SIGCONT,
            });
        }
        let why = match reason {
            StopReason::Admin => "stopped by request",
            StopReason::Shutdown => "shutting down",
            StopReason::Dependency => "a required service is stopping",
            StopReason::Restart => "restart requested",
            StopReason::Reload => "its file changed",
            StopReason::Removed => "its file was removed",
            StopReason::Watchdog => "watchdog",
        };
        self.log(
            Level::Info,
            format!(
                "stopping service {name} (pid {pid}, {why}): SIG{} to its process group, SIGKILL in {}",
                signal_name(signal),
                fmt_dur(timeout)
            ),
        );
    }
}

/// Whether a start failure is the process or system running out of
/// descriptors.
fn out_of_descriptors(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::EMFILE) | Some(libc::ENFILE))
}

fn restart_mode_name(m: crate::service::RestartMode) -> &'static str {
    match m {
        crate::service::RestartMode::Always => "always",
        crate::service::RestartMode::OnFailure => "on-failure",
        crate::service::RestartMode::Never => "never",
    }
}
