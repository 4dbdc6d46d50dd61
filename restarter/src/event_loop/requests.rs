//! The control socket's requests answered, the status report, and the
//! liveness line (`liveness` is the hook of the periodic status tick).

use super::*;
use crate::control::map::{self, Command, Mapped, Want};
use crate::status;

impl Shell {
    pub(super) fn on_control(&mut self, now: MonoTime) {
        let Some(server) = self.control.as_mut() else {
            return;
        };
        let incoming = server.poll(now);
        for req in incoming {
            let response = self.answer(&req, now);
            if let Some(server) = self.control.as_mut() {
                server.reply(req.client, response);
            }
        }
    }

    pub(super) fn answer(&mut self, req: &Incoming, now: MonoTime) -> Response {
        let by = format!("by uid {} (pid {})", req.peer.uid, req.peer.pid);
        if req.request.changes_state() {
            info!("control: {} {by}", req.request);
        }
        match map::request(&req.request, self.context()) {
            Mapped::Run(command) => self.run_command(command, &by, now),
            Mapped::Refuse(e) => Response::Error(e.into()),
            Mapped::Ignore(note) => {
                info!("{note}");
                Response::Ok(String::new())
            }
        }
    }

    /// What the restarter's state allows (`control::map`).
    pub(super) fn context(&self) -> map::Context {
        map::Context {
            loaded: self.loaded,
            shutting_down: self.sup.shutting_down(),
        }
    }

    /// Carries out a command of a request (`by` names its sender) or a
    /// signal.
    pub(super) fn run_command(&mut self, command: Command, by: &str, now: MonoTime) -> Response {
        let done = |r: Result<(String, Vec<Action>), String>, shell: &mut Shell| match r {
            Ok((note, actions)) => {
                shell.execute(actions, now);
                Response::Ok(note)
            }
            Err(e) => Response::Error(e),
        };
        match command {
            Command::Status { name, json } => {
                let mut report = self.status(now);
                if let Some(n) = name {
                    if !report.retain_service(&n) {
                        return Response::Error(format!("no service named {n:?}"));
                    }
                }
                Response::Status(report, json)
            }
            Command::Service { name, want } => {
                let r = match want {
                    Want::Start => self.sup.start(&name, now),
                    Want::Stop => self.sup.stop(&name, now),
                    Want::Restart => self.sup.restart(&name, now),
                };
                done(r, self)
            }
            Command::Signal { name, signal } => match self.sup.signal(&name, signal) {
                Ok(actions) => {
                    self.execute(actions, now);
                    Response::Ok(String::new())
                }
                Err(e) => Response::Error(e),
            },
            Command::Reload => match self.reload(now) {
                Ok(body) => Response::Ok(body),
                Err(e) => {
                    error!("reload refused, nothing changed: {e}");
                    Response::Error(format!(
                        "reload refused, nothing changed: {}",
                        e.replace('\n', "; ")
                    ))
                }
            },
            Command::Upgrade(layer) => self.upgrade(layer, now),
            Command::Shutdown { code, word } => {
                match self.request_shutdown(code, &format!("tetherctl {word} {by}")) {
                    Ok(()) => Response::Ok(String::new()),
                    Err(e) => {
                        error!("{e}");
                        Response::Error(e)
                    }
                }
            }
            Command::Terminate => {
                if self.sweep.take().is_some() {
                    info!("leftover sweep abandoned: shutting down");
                }
                self.loaded = true;
                let actions = self.sup.shutdown(now);
                self.execute(actions, now);
                Response::Ok(String::new())
            }
        }
    }

    pub(super) fn status(&self, now: MonoTime) -> StatusReport {
        let services = self
            .sup
            .rows(now)
            .into_iter()
            .map(|r| {
                let rt = self.rt.get(r.id);
                let sock = rt.and_then(|x| x.notify.as_ref());
                let counters = status::Counters {
                    dropped_lines: rt
                        .and_then(|x| x.output.as_ref())
                        .map_or(0, |o| o.dropped()),
                    socket_rejected: sock.map_or(0, |s| s.rejected()),
                    socket_refused: sock.map_or(0, |s| s.refused()),
                    last_refusal: sock.and_then(|s| s.last_refusal()).map(|r| r.to_string()),
                    resolving: self.awaiting.get(&r.id).map(resolver::describe),
                };
                status::service_status(r, counters)
            })
            .collect::<Vec<_>>();
        let config_errors =
            status::config_errors(&self.config_errors, &services, &self.reload_errors);
        StatusReport {
            restarter_pid: std::process::id() as i32,
            uptime_ms: now.saturating_since(self.started).as_millis() as u64,
            services,
            config_errors,
            syslog_up: self.syslog.is_up(),
            control_rejected: self.control.as_ref().map_or(0, |c| c.rejected()),
        }
    }

    /// The periodic liveness line (`Wake::Liveness`).
    pub(super) fn liveness(&mut self, _now: MonoTime) {
        let line = status::Liveness {
            summary: self.sup.summary(),
            syslog_up: self.syslog.is_up(),
            dropped_lines: self
                .rt
                .iter()
                .filter_map(|r| r.output.as_ref())
                .map(|o| o.dropped())
                .sum(),
        };
        let s = line.summary;
        log::log!(
            target: "liveness",
            Level::Info,
            layer = "restarter",
            state = line.word(),
            up = s.up,
            expected = s.expected,
            failed = s.failed,
            config_errors = s.broken,
            dropped = line.dropped_lines;
            "liveness: {line}"
        );
    }

    /// The metrics hook (metrics_file.rs): a status snapshot for
    /// `tether.prom` when one is due; a state change this turn
    /// (`state_dirty`) makes one due soon.
    pub(super) fn metrics_tick(&mut self, now: MonoTime) {
        if let Some(mut m) = self.metrics.take() {
            m.tick(now, self.state_dirty, || self.status(now));
            self.metrics = Some(m);
        }
    }
}
