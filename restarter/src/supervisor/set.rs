//! The set of services: a first load (fresh or resuming a previous
//! restarter's state), a reload, a resolved user/group; slots given and
//! taken back.

use super::*;

impl Supervisor {
    /// Installs the services of a first load: valid ones are started (as
    /// their dependencies allow), invalid ones are kept as `config-error`.
    pub fn load(&mut self, set: LoadedSet, now: MonoTime) -> Vec<Action> {
        for (name, error) in set.errors {
            let message = error.to_string();
            self.log(
                Level::Error,
                format!("service {name}: configuration error: {message}"),
            );
            match self.by_name.get(&name).copied() {
                Some(id) => {
                    self.slots[id.index()] = Some(Entry::Broken {
                        name,
                        error: message,
                    })
                }
                None => {
                    self.insert(Entry::Broken {
                        name,
                        error: message,
                    });
                }
            }
        }
        for spec in set.specs {
            match self.by_name.get(&spec.name).copied() {
                Some(id) => {
                    self.slots[id.index()] = Some(Entry::Valid(Box::new(Service::new(spec))));
                    self.provision(id);
                }
                None => {
                    self.insert(Entry::Valid(Box::new(Service::new(spec))));
                }
            }
        }
        self.rebuild_dependents();
        self.mark_all();
        self.reconcile(now);
        self.take()
    }

    /// [`Supervisor::load`], resuming what a previous restarter's state file
    /// says (issue 13): restart counts, sliding windows, operator-stopped,
    /// disabled and failed states; a service with a live process is
    /// adopted (same pid, uptime continuing, readiness as it was) instead of
    /// started, and watched ([`Action::Watch`]). Decision: an adopted
    /// watchdog-mode service gets a fresh `watchdog_timeout` from `now`
    /// (its pings had nowhere to go while no restarter ran; its own
    /// `WATCHDOG_USEC=` is kept). A resume naming no valid service is
    /// ignored (the shell stops such a process as a leftover).
    pub fn load_adopting(
        &mut self,
        set: LoadedSet,
        resumes: HashMap<String, Resume>,
        now: MonoTime,
    ) -> Vec<Action> {
        // Installed first, with nothing reconciled yet.
        let specs: Vec<String> = set.specs.iter().map(|s| s.name.clone()).collect();
        let mut start = set;
        let specs_set: HashSet<String> = specs.into_iter().collect();
        let errors = std::mem::take(&mut start.errors);
        for (name, error) in errors {
            let message = error.to_string();
            self.log(
                Level::Error,
                format!("service {name}: configuration error: {message}"),
            );
            if !self.by_name.contains_key(&name) {
                self.insert(Entry::Broken {
                    name,
                    error: message,
                });
            }
        }
        for spec in std::mem::take(&mut start.specs) {
            if !self.by_name.contains_key(&spec.name) {
                self.insert(Entry::Valid(Box::new(Service::new(spec))));
            }
        }
        for (name, r) in resumes {
            if !specs_set.contains(&name) {
                continue;
            }
            let Some(id) = self.by_name.get(&name).copied() else {
                continue;
            };
            let s = self.service_mut(id);
            s.stats.restarts = r.restarts;
            s.history = r.history;
            s.wanted = r.wanted;
            s.failed = r.failed;
            let Some(pid) = r.pid else {
                continue;
            };
            let started = r.started.unwrap_or(now).min(now);
            let watchdog_timeout = (s.spec.notify == NotifyMode::Watchdog)
                .then(|| r.watchdog_timeout.or(s.spec.watchdog_timeout))
                .flatten();
            s.last_start = Some(started);
            let adopted = Proc {
                pid,
                started,
                ready: r.ready || s.spec.notify == NotifyMode::None,
                watchdog_timeout,
                watchdog_deadline: watchdog_timeout.map(|t| now + t),
                main_pid: None,
            };
            step(&mut s.phase, Input::Started(adopted));
            self.by_pid.insert(pid, id);
            if let Some(status) = r.exited {
                self.log(
                    Level::Warn,
                    format!("service {name}: pid {pid} ended while no restarter ran"),
                );
                self.on_exit(id, pid, status, now);
                // Its group is the sweep's (the shell's leftover stop):
                // the pid is long gone and may be reused.
                self.out
                    .retain(|a| !matches!(a, Action::Kill { pid: p, .. } if *p == pid));
                continue;
            }
            self.out.push(Action::Watch { id, pid });
            self.log(
                Level::Info,
                format!(
                    "service {name} adopted (pid {pid}, up {}, {} restart(s))",
                    fmt_dur(now.saturating_since(started)),
                    r.restarts
                ),
            );
        }
        self.rebuild_dependents();
        self.mark_all();
        self.reconcile(now);
        self.out.push(Action::WriteState);
        self.take()
    }

    /// Applies a reloaded set: new services start, removed ones stop and
    /// go, changed ones restart with their new spec, unchanged ones are
    /// left alone. A set with any error changes nothing: `Err` lists the
    /// errors (file:line:column).
    pub fn reload(&mut self, set: LoadedSet, now: MonoTime) -> Result<Vec<Action>, String> {
        crate::reload::validate(&set)?;
        if self.shutting_down {
            return Err("shutting down".into());
        }
        let new: BTreeMap<String, ServiceSpec> =
            set.specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        let existing: Vec<ServiceId> = self.ids().collect();
        for id in existing {
            let name = self.entry(id).name().to_string();
            if new.contains_key(&name) {
                continue;
            }
            removed += 1;
            match self.slots[id.index()].as_mut() {
                Some(Entry::Valid(s)) => {
                    s.removing = true;
                    s.wanted = false;
                    s.next_spec = None;
                    s.restart_after_stop = false;
                    if !s.phase.active() {
                        self.log(Level::Info, format!("service {name} removed"));
                        self.forget(id);
                    } else {
                        self.log(Level::Info, format!("service {name} removed: stopping it"));
                    }
                }
                _ => self.forget(id),
            }
        }
        for (name, spec) in new {
            let Some(id) = self.by_name.get(&name).copied() else {
                added += 1;
                self.log(Level::Info, format!("service {name} added"));
                self.insert(Entry::Valid(Box::new(Service::new(spec))));
                continue;
            };
            let slot = self.slots[id.index()]
                .as_mut()
                .expect("indexed slot is occupied");
            let s = match slot {
                Entry::Broken { .. } => {
                    added += 1;
                    *slot = Entry::Valid(Box::new(Service::new(spec)));
                    self.out.push(Action::Log {
                        level: Level::Info,
                        message: format!("service {name}: configuration fixed"),
                    });
                    continue;
                }
                Entry::Valid(s) => s,
            };
            let was_removing = std::mem::replace(&mut s.removing, false);
            let pending = s.next_spec.as_ref().unwrap_or(&s.spec);
            if **pending == spec && !was_removing {
                continue;
            }
            changed += 1;
            if s.phase.active() {
                s.next_spec = Some(Spec::new(spec));
                s.restart_after_stop = true;
                let running = s.phase.proc_().is_some() && !s.stopping();
                self.log(
                    Level::Info,
                    format!("service {name} changed: restarting it"),
                );
                if running {
                    self.begin_stop(id, StopReason::Reload, now);
                }
            } else {
                apply_spec(s, Spec::new(spec));
                self.provision(id);
                self.log(Level::Info, format!("service {name} changed"));
            }
        }
        self.log(
            Level::Info,
            format!("reload: {added} added, {changed} changed, {removed} removed"),
        );
        self.rebuild_dependents();
        self.mark_all();
        self.reconcile(now);
        Ok(self.take())
    }

    /// The `user`/`group` pair was looked up (off the loop, see
    /// `resolver.rs`): every service naming it takes the answer (a failure
    /// never replaces a resolved identity). A running service whose
    /// resolved identity changed restarts with the new one, as for a
    /// changed file at a reload.
    pub fn identity_resolved(
        &mut self,
        user: Option<&str>,
        group: Option<&str>,
        answer: &crate::service::Resolution,
        now: MonoTime,
    ) -> Vec<Action> {
        use crate::resolver::merge;
        use crate::service::Resolution;
        let names =
            |spec: &ServiceSpec| spec.user.as_deref() == user && spec.group.as_deref() == group;
        let ids: Vec<ServiceId> = self.ids().collect();
        for id in ids {
            let Some(Some(Entry::Valid(s))) = self.slots.get_mut(id.index()) else {
                continue;
            };
            if let Some(next) = s.next_spec.as_mut().filter(|n| names(n)) {
                next.make_mut().identity = merge(Some(&next.identity), answer.clone());
            }
            if !names(&s.spec) {
                continue;
            }
            let new = merge(Some(&s.spec.identity), answer.clone());
            if new == s.spec.identity {
                continue;
            }
            let restart = matches!(s.spec.identity, Resolution::Resolved(_))
                && s.phase.proc_().is_some()
                && !s.stopping()
                && s.next_spec.is_none();
            if !restart {
                s.spec.make_mut().identity = new;
                // A spec changed: what it needs (a notify socket owned by
                // the resolved user) is made before the held start.
                if s.phase.proc_().is_none() {
                    self.provision(id);
                }
                continue;
            }
            let mut spec = s.spec.clone();
            spec.make_mut().identity = new;
            s.next_spec = Some(spec);
            s.restart_after_stop = true;
            let line = format!(
                "service {}: its user or group changed: restarting it",
                s.spec.name
            );
            self.log(Level::Info, line);
            self.begin_stop(id, StopReason::Reload, now);
            // A stop begun: its `SIGKILL` timer armed, and whoever reads
            // its readiness looked at again.
            self.touch(id);
        }
        self.reconcile(now);
        self.take()
    }

    pub(super) fn insert(&mut self, entry: Entry) -> ServiceId {
        let name = entry.name().to_string();
        let id = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(entry);
                ServiceId(i)
            }
            None => {
                self.slots.push(Some(entry));
                self.meta.push(SlotMeta::default());
                ServiceId((self.slots.len() - 1) as u32)
            }
        };
        if matches!(self.slots[id.index()], Some(Entry::Valid(_))) {
            self.provision(id);
        }
        self.by_name.insert(name, id);
        self.mark_all();
        id
    }

    pub(super) fn forget(&mut self, id: ServiceId) {
        if let Some(entry) = self.slots[id.index()].take() {
            self.by_name.remove(entry.name());
            self.free.push(id.0);
            self.out.push(Action::Release { id });
            // Disarms its timers: the slot may be reused.
            self.rearm(id);
            self.rebuild_dependents();
            self.mark_all();
        }
    }
}
