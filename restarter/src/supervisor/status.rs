//! What the supervisor reports: a row per service for `tetherctl status`,
//! the counts of the liveness line, and what the state file keeps. Reads
//! state, decides nothing.

use super::*;

/// One line of status, before the shell adds output and socket counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRow {
    pub id: ServiceId,
    pub name: String,
    /// starting | running | ready | stopping | stopped | failed | backoff |
    /// waiting | disabled | config-error
    pub state: &'static str,
    pub pid: Option<i32>,
    pub uptime: Option<Duration>,
    pub restarts: u64,
    pub last_exit: Option<String>,
    pub ready: bool,
    pub watchdog_left: Option<Duration>,
    pub status_text: Option<String>,
    pub error: Option<String>,
    pub notify_rejected: u64,
}

/// Counts for the liveness line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Services that should run.
    pub expected: usize,
    /// Of those, up and ready.
    pub up: usize,
    pub failed: usize,
    pub broken: usize,
}

impl Supervisor {
    /// Every running process: (id, name, pid, stop_timeout), for the state
    /// file.
    pub fn running(&self) -> Vec<(ServiceId, &str, i32, Duration)> {
        self.ids()
            .filter_map(|id| match self.slots[id.index()].as_ref() {
                Some(Entry::Valid(s)) => s
                    .phase
                    .proc_()
                    .map(|p| (id, s.spec.name.as_str(), p.pid, s.spec.stop_timeout)),
                _ => None,
            })
            .collect()
    }

    /// Every service, sorted by name.
    pub fn rows(&self, now: MonoTime) -> Vec<ServiceRow> {
        let mut ids: Vec<ServiceId> = self.ids().collect();
        ids.sort_by(|a, b| self.entry(*a).name().cmp(self.entry(*b).name()));
        ids.into_iter().map(|id| self.row_of(id, now)).collect()
    }

    pub fn row(&self, name: &str, now: MonoTime) -> Option<ServiceRow> {
        self.id(name).map(|id| self.row_of(id, now))
    }

    pub(super) fn row_of(&self, id: ServiceId, now: MonoTime) -> ServiceRow {
        match self.entry(id) {
            Entry::Broken { name, error } => ServiceRow {
                id,
                name: name.clone(),
                state: "config-error",
                pid: None,
                uptime: None,
                restarts: 0,
                last_exit: None,
                ready: false,
                watchdog_left: None,
                status_text: None,
                error: Some(error.clone()),
                notify_rejected: 0,
            },
            Entry::Valid(s) => ServiceRow {
                id,
                name: s.spec.name.clone(),
                state: self.state_of(id, s),
                pid: s.phase.proc_().map(|p| p.pid),
                uptime: s.phase.proc_().map(|p| now.saturating_since(p.started)),
                restarts: s.stats.restarts,
                last_exit: s.stats.last_exit.clone(),
                ready: s.ready(),
                watchdog_left: s
                    .phase
                    .proc_()
                    .and_then(|p| p.watchdog_deadline)
                    .map(|d| d.saturating_since(now)),
                status_text: s.stats.status_text.clone(),
                error: s.stats.last_error.clone(),
                notify_rejected: s.stats.notify_rejected,
            },
        }
    }

    pub(super) fn state_of(&self, id: ServiceId, s: &Service) -> &'static str {
        match &s.phase {
            Phase::Stopping(..) => return "stopping",
            Phase::Up(_) if s.spec.notify == NotifyMode::None => return "running",
            Phase::Up(p) if p.ready => return "ready",
            Phase::Up(_) | Phase::Spawning => return "starting",
            Phase::Down => {}
        }
        if s.failed {
            return "failed";
        }
        if self.desired(id, 0) {
            if self.waiting_for(id).is_some() {
                return "waiting";
            }
            return if s.start_at.is_some() {
                "backoff"
            } else {
                "starting"
            };
        }
        if s.wanted && !s.removing && !self.shutting_down {
            return "waiting";
        }
        if s.spec.disabled && !s.wanted {
            return "disabled";
        }
        "stopped"
    }

    /// Counts for the liveness line.
    pub fn summary(&self) -> Summary {
        let mut sum = Summary::default();
        for id in self.ids() {
            match self.entry(id) {
                Entry::Broken { .. } => sum.broken += 1,
                Entry::Valid(s) => {
                    if s.failed {
                        sum.failed += 1;
                    }
                    if self.desired(id, 0) {
                        sum.expected += 1;
                        if s.ready() {
                            sum.up += 1;
                        }
                    }
                }
            }
        }
        sum
    }

    /// What the state file needs of every service worth a line: each with
    /// a process, and each without one whose state is not a fresh
    /// service's (stopped by hand, failed, restarted before).
    pub fn resumes(&self) -> Vec<(ServiceId, &str, Duration, Resume)> {
        self.ids()
            .filter_map(|id| match self.slots[id.index()].as_ref() {
                Some(Entry::Valid(s)) => {
                    let r = Resume {
                        pid: s.phase.proc_().map(|p| p.pid),
                        started: s.phase.proc_().map(|p| p.started),
                        ready: s.phase.proc_().is_some_and(|p| p.ready),
                        watchdog_timeout: s.phase.proc_().and_then(|p| p.watchdog_timeout),
                        restarts: s.stats.restarts,
                        history: s.history.clone(),
                        wanted: s.wanted,
                        failed: s.failed,
                        exited: None,
                    };
                    let plain = r.pid.is_none()
                        && !r.failed
                        && r.wanted != s.spec.disabled
                        && r.restarts == 0
                        && r.history == History::new();
                    (!plain).then_some((id, s.spec.name.as_str(), s.spec.stop_timeout, r))
                }
                _ => None,
            })
            .collect()
    }
}
