//! Notify semantics: what each `sd_notify` message of a running service
//! does (readiness, watchdog pings and timeouts, status text, `MAINPID=`),
//! and which senders are believed.

use super::*;

impl Supervisor {
    pub(super) fn on_notify(
        &mut self,
        id: ServiceId,
        sender_pid: Option<i32>,
        sender_uid: Option<u32>,
        in_group: Option<bool>,
        messages: Vec<NotifyMsg>,
        now: MonoTime,
    ) -> bool {
        let significant = messages.iter().any(|m| {
            !matches!(
                m,
                NotifyMsg::Watchdog | NotifyMsg::Status(_) | NotifyMsg::Other(_)
            )
        });
        let s = self.service_mut(id);
        let name = s.spec.name.clone();
        let from = format!(
            "pid {} uid {}",
            sender_pid.map_or("?".to_string(), |p| p.to_string()),
            sender_uid.map_or("?".to_string(), |u| u.to_string())
        );
        if s.phase.proc_().is_none() {
            self.log(
                Level::Debug,
                format!("service {name}: notify from {from} while not running: ignored"),
            );
            return false;
        }
        if in_group == Some(false) {
            s.stats.notify_rejected += 1;
            self.log(
                Level::Warn,
                format!("service {name}: notify from {from}, not in the service's process group: ignored"),
            );
            return false;
        }
        let mut miss = false;
        let mut persist = false;
        let mut lines = Vec::new();
        {
            let watchdog_mode = s.spec.notify == NotifyMode::Watchdog;
            let stopping = s.phase.stopping();
            let Some(p) = s.phase.proc_mut() else {
                return false;
            };
            for m in messages {
                match m {
                    NotifyMsg::Ready => {
                        if !p.ready {
                            p.ready = true;
                            // Readiness is carried over a restarter crash.
                            persist = true;
                            lines.push((
                                Level::Info,
                                format!("service {name} ready (READY=1 from {from})"),
                            ));
                        }
                    }
                    NotifyMsg::Reloading => lines.push((
                        Level::Info,
                        format!("service {name} reloading (from {from})"),
                    )),
                    NotifyMsg::Stopping => lines.push((
                        Level::Info,
                        format!("service {name} stopping (from {from})"),
                    )),
                    NotifyMsg::Watchdog => {
                        if let (Some(t), false) = (p.watchdog_timeout, stopping) {
                            p.watchdog_deadline = Some(now + t);
                        }
                    }
                    NotifyMsg::WatchdogTrigger => {
                        if watchdog_mode && !stopping {
                            lines.push((
                                Level::Warn,
                                format!("service {name}: WATCHDOG=trigger from {from}"),
                            ));
                            miss = true;
                        }
                    }
                    NotifyMsg::WatchdogUsec(us) => {
                        if watchdog_mode && us > 0 && !stopping {
                            let t = Duration::from_micros(us);
                            p.watchdog_timeout = Some(t);
                            p.watchdog_deadline = Some(now + t);
                            persist = true;
                            lines.push((
                                Level::Info,
                                format!(
                                    "service {name}: watchdog timeout set to {} (from {from})",
                                    fmt_dur(t)
                                ),
                            ));
                        }
                    }
                    NotifyMsg::Status(text) => {
                        lines.push((Level::Debug, format!("service {name} status: {text}")));
                        s.stats.status_text = Some(text);
                    }
                    NotifyMsg::MainPid(pid) => {
                        p.main_pid = Some(pid);
                        lines.push((
                            Level::Info,
                            format!("service {name}: MAINPID={pid} (from {from})"),
                        ));
                    }
                    NotifyMsg::Other(_) => {}
                }
            }
        }
        for (level, line) in lines {
            self.log(level, line);
        }
        if persist {
            self.out.push(Action::WriteState);
        }
        if miss {
            self.watchdog_miss(id, now);
        }
        significant
    }

    /// The service's notify socket was bound again (the runtime directory
    /// had been removed under it): a running watchdog service gets one
    /// fresh `watchdog_timeout` from `now`, since its pings had nowhere to
    /// go meanwhile. Nothing else changes; no action results.
    pub fn notify_socket_restored(&mut self, id: ServiceId, now: MonoTime) {
        let Some(Some(Entry::Valid(s))) = self.slots.get_mut(id.index()) else {
            return;
        };
        let stopping = s.phase.stopping();
        if let Some(p) = s.phase.proc_mut() {
            if let (Some(t), false) = (p.watchdog_timeout, stopping) {
                p.watchdog_deadline = Some(now + t);
            }
        }
        self.rearm(id);
    }
}
