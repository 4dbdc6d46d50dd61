//! The services directory: the first load (when the leftover sweep is
//! over), a reload, and what they cost in descriptors and cgroups.

use super::*;

impl Shell {
    pub(super) fn load_services(&mut self, now: MonoTime) {
        if self.loaded {
            return;
        }
        self.loaded = true;
        if self.load_adopting(now) {
            self.state_dirty = true;
            return;
        }
        let mut set = service::load_dir(&self.services_dir);
        self.ask_identities(&mut set.specs, now);
        if let Some(e) = &set.dir_error {
            error!("services directory: {e}; no services (fix it, then reload)");
            self.config_errors.push(e.to_string());
        }
        let n = set.specs.len();
        let bad = set.errors.len();
        info!(
            "{n} service(s) from {}{}",
            self.services_dir.display(),
            if bad > 0 {
                format!(", {bad} with errors")
            } else {
                String::new()
            }
        );
        self.log_fd_budget(&set.specs);
        let actions = self.sup.load(set, now);
        self.execute(actions, now);
        self.state_dirty = true;
    }

    /// The restarter's soft `RLIMIT_NOFILE` (after its own raise).
    pub(super) fn nofile_limit(&self) -> u64 {
        spawn::current_nofile().0
    }

    /// Says how many services fit under the descriptor limit (a warning
    /// when some do not).
    pub(super) fn log_fd_budget(&self, specs: &[service::ServiceSpec]) {
        let b = spawn::fd_budget(specs, self.cgroups.is_some(), spawn::current_nofile().0);
        if b.fits() {
            info!("{b}");
        } else {
            warn!("{b}");
        }
    }

    /// Reloads the services directory; `Err` (nothing changed) lists the
    /// errors.
    pub(super) fn reload(&mut self, now: MonoTime) -> Result<String, String> {
        let mut set: LoadedSet = service::load_dir(&self.services_dir);
        if !set.has_errors() {
            self.ask_identities(&mut set.specs, now);
        }
        if !set.has_errors() {
            self.log_fd_budget(&set.specs);
        }
        match self.sup.reload(set, now) {
            Ok(actions) => {
                self.reload_errors.clear();
                self.config_errors
                    .retain(|e| !e.starts_with(&self.services_dir.display().to_string()));
                self.execute(actions, now);
                Ok(String::from("reloaded"))
            }
            Err(e) => {
                self.reload_errors = e.lines().map(str::to_string).collect();
                Err(e)
            }
        }
    }

    /// Kills what is left in service cgroups after the state-file sweep
    /// (processes that had left their process group).
    pub(super) fn sweep_cgroups(&mut self) {
        let Some(cg) = &self.cgroups else { return };
        for name in cg.children() {
            if let Some(c) = cg.existing(&name) {
                if !c.is_empty() {
                    warn!("cgroup of service {name} still has processes of a previous restarter: SIGKILL");
                    if let Err(e) = c.kill() {
                        warn!("{}: {e}", c.dir().display());
                    }
                }
            }
        }
    }
}
