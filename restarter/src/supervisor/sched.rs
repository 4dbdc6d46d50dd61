//! What the next reconcile looks at, and when (see the module
//! documentation of `supervisor`): the dependency index (name → the
//! services naming it), the dirty set with its marking rules (`mark`,
//! `touch`, `touch_desired`), and each service's timer on one
//! [`Deadlines`] table keyed by `(ServiceId, Timer)`. No rules here: only
//! what to look at, and when.

use super::*;

/// Per slot bookkeeping of the incremental reconcile (see the module
/// documentation); kept beside `slots`, same length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct SlotMeta {
    /// The slot is in `Supervisor::dirty`.
    pub(super) queued: bool,
}

/// What a service's deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A service without a process may start (`start_at`).
    Start,
    /// A service with a process: its watchdog deadline, or the `SIGKILL`
    /// of its stop.
    Proc,
}

impl Supervisor {
    pub(super) fn rebuild_dependents(&mut self) {
        self.dependents.clear();
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(Entry::Valid(s)) = slot {
                for dep in s.spec.dependencies() {
                    self.dependents
                        .entry(dep.clone())
                        .or_default()
                        .push(ServiceId(i as u32));
                }
            }
        }
    }

    /// The earliest time [`tick`](Self::tick) has something to do (a
    /// restart, a watchdog deadline, a stop timeout).
    pub fn next_deadline(&self) -> Option<MonoTime> {
        self.timers.first().map(|(t, _)| t)
    }

    /// Moves every stored time `by` earlier, clamping those more than
    /// `horizon` before `now` (as [`MonoTime::rebased`]): for a model
    /// checker that keeps one canonical clock (issue 14). With `horizon`
    /// at least the largest duration of any spec (restart delay and
    /// window, stop and watchdog timeouts), the core decides the same
    /// afterwards at `now` as it did before at `now + by`; only status
    /// figures (uptime) differ. Never used by the shell.
    pub fn rebase(&mut self, by: Duration, now: MonoTime, horizon: Duration) {
        let r = |t: MonoTime| t.rebased(by, now, horizon);
        for slot in self.slots.iter_mut() {
            let Some(Entry::Valid(s)) = slot else {
                continue;
            };
            s.start_at = s.start_at.map(r);
            s.last_start = s.last_start.map(r);
            s.history.rebase(by, now, horizon);
            s.phase.rebase(r);
        }
        self.timers.rebase(by, now, horizon);
    }

    /// Puts service `id`'s timers where its state says (or removes them:
    /// the slot may be empty).
    pub(super) fn rearm(&mut self, id: ServiceId) {
        let (start, proc_) = match self.slots.get(id.index()) {
            Some(Some(Entry::Valid(s))) => match &s.phase {
                Phase::Up(p) => (None, p.watchdog_deadline),
                Phase::Stopping(_, st) => (None, (!st.killed).then_some(st.kill_at)),
                Phase::Down | Phase::Spawning => (s.start_at, None),
            },
            _ => (None, None),
        };
        self.timers.set((id, Timer::Start), start);
        self.timers.set((id, Timer::Proc), proc_);
    }

    /// The next reconcile looks at `id`.
    pub(super) fn mark(&mut self, id: ServiceId) {
        mark_in(&mut self.meta, &mut self.dirty, self.all_dirty, id);
    }

    /// The next reconcile looks at every service.
    pub(super) fn mark_all(&mut self) {
        self.all_dirty = true;
    }

    /// Marks the services that name `id` in `after` or `requires`.
    pub(super) fn mark_dependents(&mut self, id: ServiceId) {
        let Supervisor {
            slots,
            meta,
            dependents,
            dirty,
            all_dirty,
            ..
        } = self;
        let Some(Some(entry)) = slots.get(id.index()) else {
            return;
        };
        for &d in dependents.get(entry.name()).into_iter().flatten() {
            mark_in(meta, dirty, *all_dirty, d);
        }
    }

    /// Service `id`'s process, spawn or readiness changed: marks it, the
    /// services naming it (their start step reads its readiness) and the
    /// services it names (their stop step may wait for it).
    pub(super) fn touch(&mut self, id: ServiceId) {
        self.mark(id);
        self.mark_dependents(id);
        let Supervisor {
            slots,
            meta,
            by_name,
            dirty,
            all_dirty,
            ..
        } = self;
        if let Some(Some(Entry::Valid(s))) = slots.get(id.index()) {
            for dep in s.spec.dependencies() {
                if let Some(&r) = by_name.get(dep) {
                    mark_in(meta, dirty, *all_dirty, r);
                }
            }
        }
    }

    /// Whether service `id` should run may have changed: touches it and
    /// every service that requires it, transitively (their `desired`
    /// follows its own).
    pub(super) fn touch_desired(&mut self, id: ServiceId) {
        if self.all_dirty {
            return;
        }
        let mut seen = HashSet::from([id]);
        let mut stack = vec![id];
        while let Some(x) = stack.pop() {
            self.touch(x);
            let Some(Some(entry)) = self.slots.get(x.index()) else {
                continue;
            };
            let name = entry.name();
            for &d in self.dependents.get(name).into_iter().flatten() {
                let requires = matches!(
                    self.slots.get(d.index()),
                    Some(Some(Entry::Valid(s))) if s.spec.requires.iter().any(|r| r == name)
                );
                if requires && seen.insert(d) {
                    stack.push(d);
                }
            }
        }
    }
}

/// Adds `id` to the dirty set unless it is there already (or everything
/// is dirty).
fn mark_in(meta: &mut [SlotMeta], dirty: &mut Vec<ServiceId>, all: bool, id: ServiceId) {
    if all {
        return;
    }
    if let Some(m) = meta.get_mut(id.index()) {
        if !m.queued {
            m.queued = true;
            dirty.push(id);
        }
    }
}
