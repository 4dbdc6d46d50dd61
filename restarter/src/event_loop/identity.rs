//! `user`/`group` lookups off the loop (`resolver.rs`): asked at load and
//! reload, a start held until its answer, answers handed to the
//! supervisor.

use super::*;

impl Shell {
    /// Gives each spec of a freshly read set the identity known so far for
    /// its `user`/`group` (a reload keeps the previous one meanwhile) and
    /// asks for a lookup of every pair, off the loop.
    pub(super) fn ask_identities(&mut self, specs: &mut [service::ServiceSpec], now: MonoTime) {
        for spec in specs {
            let Some(key) = Resolver::key(spec.user.as_deref(), spec.group.as_deref()) else {
                continue;
            };
            if let Some(r @ Resolution::Resolved(_)) = self.resolver.known(&key) {
                spec.identity = r.clone();
            }
            self.resolver.ask(&key, now);
        }
    }

    /// Holds a start whose identity is not resolved yet (asking for it
    /// again if the last lookup failed); `true` when held.
    pub(super) fn hold_for_identity(&mut self, id: ServiceId, now: MonoTime) -> bool {
        let Some(spec) = self.sup.spec(id) else {
            return false;
        };
        if matches!(spec.identity, Resolution::Resolved(_)) {
            return false;
        }
        let Some(key) = Resolver::key(spec.user.as_deref(), spec.group.as_deref()) else {
            return false;
        };
        if !self.resolver.asking(&key) {
            self.resolver.ask(&key, now);
        }
        debug!(
            "service {}: start held: resolving {}",
            spec.name,
            resolver::describe(&key)
        );
        self.awaiting.insert(id, key);
        true
    }

    /// Answers of the lookup thread: every service naming the pair takes
    /// the identity, held starts go on (or fail, per policy).
    pub(super) fn on_identities(&mut self, now: MonoTime) {
        for (key, r) in self.resolver.take() {
            if let Resolution::Failed { message, .. } = &r {
                warn!("{}: {message}", resolver::describe(&key));
            }
            let actions = self
                .sup
                .identity_resolved(key.0.as_deref(), key.1.as_deref(), &r, now);
            self.execute(actions, now);
            let held: Vec<ServiceId> = self
                .awaiting
                .iter()
                .filter(|(_, k)| **k == key)
                .map(|(id, _)| *id)
                .collect();
            for id in held {
                self.awaiting.remove(&id);
                let actions = match &r {
                    Resolution::Failed { errno, message } => {
                        let event = Event::SpawnFailed {
                            errno: *errno,
                            message: message.clone(),
                        };
                        self.sup.handle(id, event, now)
                    }
                    _ => self.start_or_queue(id, now),
                };
                self.execute(actions, now);
                self.maybe_beat();
            }
            self.state_dirty = true;
        }
    }

    /// Logs a lookup that takes long (once); at shutdown, held starts end
    /// as failed (a lookup that never returns must not hold it up).
    pub(super) fn identity_timers(&mut self, now: MonoTime) {
        for (key, waited) in self.resolver.newly_slow(now) {
            let held = self.awaiting.values().filter(|k| **k == key).count();
            warn!(
                "looking up {} takes long ({} so far): {held} service(s) wait for it",
                resolver::describe(&key),
                tether_common::duration::format(waited)
            );
        }
        if self.sup.shutting_down() && !self.awaiting.is_empty() {
            for (id, key) in std::mem::take(&mut self.awaiting) {
                let message = format!("shutting down while resolving {}", resolver::describe(&key));
                self.fail_start(id, message, now);
            }
        }
    }
}
