//! Requests of an administrator (`tetherctl start|stop|restart|signal`)
//! and the shutdown: each changes what should run, then reconciles.

use super::*;

impl Supervisor {
    pub(super) fn lookup(&self, name: &str) -> Result<ServiceId, String> {
        let id = *self
            .by_name
            .get(name)
            .ok_or_else(|| format!("no service named {name:?}"))?;
        if let Some(Entry::Broken { error, .. }) = self.slots[id.index()].as_ref() {
            return Err(format!("service {name} has a configuration error: {error}"));
        }
        if self.shutting_down {
            return Err("shutting down".into());
        }
        Ok(id)
    }

    /// `tetherctl start NAME`: wanted again, failed cleared, started at once
    /// (when its dependencies allow). `Ok` carries a note for the reply.
    pub fn start(&mut self, name: &str, now: MonoTime) -> Result<(String, Vec<Action>), String> {
        let id = self.lookup(name)?;
        let s = self.service_mut(id);
        let note;
        if s.phase.proc_().is_some() && !s.stopping() {
            note = format!("{name} is already running");
            s.wanted = true;
        } else {
            if s.stopping() {
                s.restart_after_stop = true;
            }
            s.wanted = true;
            s.failed = false;
            s.history.reset();
            s.start_at = None;
            s.last_start = None;
            note = String::new();
            self.log(Level::Info, format!("service {name}: start requested"));
        }
        self.touch_desired(id);
        self.reconcile(now);
        let note = match (note.is_empty(), self.waiting_for(id)) {
            (true, Some(dep)) if self.desired(id, 0) => format!("{name} waits for {dep}"),
            (true, _) if !self.desired(id, 0) => format!("{name} waits for a required service"),
            _ => note,
        };
        Ok((note, self.take()))
    }

    /// `tetherctl stop NAME`: not wanted; stopped (after the services that
    /// require it).
    pub fn stop(&mut self, name: &str, now: MonoTime) -> Result<(String, Vec<Action>), String> {
        let id = self.lookup(name)?;
        let s = self.service_mut(id);
        let was_up = s.phase.proc_().is_some();
        s.wanted = false;
        s.failed = false;
        s.restart_after_stop = false;
        s.start_at = None;
        self.log(Level::Info, format!("service {name}: stop requested"));
        self.touch_desired(id);
        self.reconcile(now);
        let note = if was_up {
            String::new()
        } else {
            format!("{name} was not running")
        };
        Ok((note, self.take()))
    }

    /// `tetherctl restart NAME`: stop (if running), then start at once.
    pub fn restart(&mut self, name: &str, now: MonoTime) -> Result<(String, Vec<Action>), String> {
        let id = self.lookup(name)?;
        let s = self.service_mut(id);
        s.wanted = true;
        s.failed = false;
        s.history.reset();
        s.start_at = None;
        s.last_start = None;
        let running = s.phase.proc_().is_some();
        if running {
            s.restart_after_stop = true;
        }
        self.log(Level::Info, format!("service {name}: restart requested"));
        if running {
            self.begin_stop(id, StopReason::Restart, now);
        }
        self.touch_desired(id);
        self.reconcile(now);
        Ok((String::new(), self.take()))
    }

    /// `tetherctl signal NAME SIG`: the signal to the main process.
    pub fn signal(&mut self, name: &str, signal: i32) -> Result<Vec<Action>, String> {
        let id = self.lookup(name)?;
        let s = self.service_mut(id);
        let Some(p) = s.phase.proc_() else {
            return Err(format!("service {name} is not running"));
        };
        let pid = p.pid;
        self.out.push(Action::Kill {
            id,
            pid,
            group: false,
            signal,
        });
        self.log(
            Level::Info,
            format!(
                "service {name}: SIG{} sent by request (pid {pid})",
                signal_name(signal)
            ),
        );
        Ok(self.take())
    }

    /// Stops everything in reverse dependency order; nothing starts again.
    /// The shell exits once [`is_idle`](Self::is_idle).
    pub fn shutdown(&mut self, now: MonoTime) -> Vec<Action> {
        if !self.shutting_down {
            self.shutting_down = true;
            self.log(
                Level::Info,
                "shutting down: stopping every service".to_string(),
            );
        }
        self.mark_all();
        self.reconcile(now);
        self.take()
    }
}
