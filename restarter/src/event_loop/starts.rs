//! Starts spread over loop turns: at most [`START_BATCH`] processes are
//! spawned per turn, the rest wait here in order and the next turn goes on
//! at once (`Wake::StartQueue`, due now), so a boot of 10,000 services
//! never holds the loop: control requests, notify datagrams, output and
//! exits are served between batches. Until then a queued service is
//! `starting` (its spawn is out, as for a start held for its identity).
//!
//! Decisions: a queued service that is no longer spawning when its turn
//! comes (its spawn failed or was taken back meanwhile) is skipped; at
//! shutdown queued starts end as failed starts, as held ones do (nothing
//! is started only to be stopped). Measured under TCG with 10,000
//! services (`vm-tests/tests/scale.rs`): see the README's scale figures.

use super::*;

/// Processes spawned per loop turn at most (one spawn costs the loop about
/// 150 µs on this host, some 2.5 ms under TCG: a batch is ~10 ms here,
/// ~160 ms in the emulator).
pub const START_BATCH: usize = 64;

#[derive(Default)]
pub(super) struct StartQueue {
    queue: VecDeque<ServiceId>,
    queued: BTreeSet<ServiceId>,
    /// Spawns this turn may still make.
    budget: usize,
}

impl StartQueue {
    pub(super) fn new_turn(&mut self) {
        self.budget = START_BATCH;
    }

    /// Takes one start of this turn's budget: false when it is spent, or
    /// when earlier starts wait (order is kept).
    fn take(&mut self) -> bool {
        if self.budget == 0 || !self.queue.is_empty() {
            return false;
        }
        self.budget -= 1;
        true
    }

    fn push(&mut self, id: ServiceId) {
        if self.queued.insert(id) {
            self.queue.push_back(id);
        }
    }

    /// The oldest queued start, when this turn's budget allows one.
    fn pop(&mut self) -> Option<ServiceId> {
        if self.budget == 0 {
            return None;
        }
        let id = self.queue.pop_front()?;
        self.queued.remove(&id);
        Some(id)
    }

    /// Every queued start, emptying the queue.
    fn drain(&mut self) -> VecDeque<ServiceId> {
        self.queued.clear();
        std::mem::take(&mut self.queue)
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

impl Shell {
    /// `Action::Spawn` of `id`: spawned now if this turn's batch allows,
    /// else queued for the next turn. Returns what the spawn's result asks.
    pub(super) fn start_or_queue(&mut self, id: ServiceId, now: MonoTime) -> Vec<Action> {
        if self.starts.take() {
            return self.spawn_and_report(id, now);
        }
        self.starts.push(id);
        self.wakes.set(Wake::StartQueue, Some(now));
        Vec::new()
    }

    /// The next batch of queued starts (`Wake::StartQueue`).
    pub(super) fn run_start_queue(&mut self, now: MonoTime) {
        if self.sup.shutting_down() {
            for id in self.starts.drain() {
                self.fail_start(id, "shutting down before its start".into(), now);
            }
            return;
        }
        while let Some(id) = self.starts.pop() {
            if !self.sup.is_spawning(id) {
                continue;
            }
            self.starts.budget -= 1;
            let actions = self.spawn_and_report(id, now);
            self.execute(actions, now);
            self.maybe_beat();
        }
        if !self.starts.is_empty() {
            self.wakes.set(Wake::StartQueue, Some(now));
        }
    }

    /// A start that was held or queued and will not happen: a failed start
    /// with `message`, handled per policy.
    pub(super) fn fail_start(&mut self, id: ServiceId, message: String, now: MonoTime) {
        let event = Event::SpawnFailed {
            errno: None,
            message,
        };
        let actions = self.sup.handle(id, event, now);
        self.execute(actions, now);
    }
}
