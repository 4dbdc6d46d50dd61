//! What init does after its loop panicked: the pure decision (no system
//! call, no clock read), tested with a fake clock.
//!
//! init never exits, so a panic that unwinds out of the loop is caught in
//! `main` and the loop entered again. A caught panic proves the loop is not
//! well, so re-entering it must not look like health to watchdogd:
//!
//! - After a panic, init's beats to watchdogd are withheld until one whole
//!   pass of the loop (timers, `poll`, the events it returned) has run
//!   without panicking. A panic that recurs in every pass, early or late,
//!   therefore stops the beats: watchdogd sees init stale after its
//!   `stale_timeout`, records it and stops petting, and the hardware resets
//!   the machine (the init-hang rung).
//! - [`PANIC_LIMIT`] panics within [`PANIC_WINDOW`] stop the beats for good,
//!   however many clean passes lie between them: an init that keeps hitting
//!   the same bug on some event (each restart of a layer, say) is handed to
//!   the hardware rung rather than limping on. The loop keeps running
//!   meanwhile (it still reaps and restarts what it can); only the beats
//!   stop. An orderly reboot is not attempted: it would be run by the very
//!   loop that keeps failing, and the hardware bounds the outcome anyway.
//! - No sleep: after a panic the loop is entered again once an event is
//!   ready on its descriptors (signalfd, supervision pipes) or
//!   [`PANIC_BACKOFF`] has passed, whichever comes first. That wait is the
//!   loop's own `poll`, so a `SIGCHLD` or a beat ends it at once and
//!   reaping is never held up by it; it only keeps a pass that panics
//!   before reaching its `poll` from spinning. On re-entry the loop first
//!   reaps and drains both pipes, since the panic may have consumed the
//!   signal or readiness that announced them.
//!
//! Decision where the issue is silent: the panic count is a sliding window
//! (monotonic time), not "in a row"; the limit 3 within 60 s tolerates a
//! rare bug on a rare event while catching anything that repeats within a
//! minute, which is also far inside the default `stale_timeout +
//! hardware_timeout` (50 s) that follows.

use std::time::Duration;

use tether_common::clock::MonoTime;

/// Panics within [`PANIC_WINDOW`] after which init stops beating for good.
pub const PANIC_LIMIT: usize = 3;
/// The window of [`PANIC_LIMIT`].
pub const PANIC_WINDOW: Duration = Duration::from_secs(60);
/// Longest wait before the loop is entered again after a panic.
pub const PANIC_BACKOFF: Duration = Duration::from_secs(1);

/// What the shell does after a caught panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Re-enter the loop once an event is ready or at `at`; beats are
    /// withheld until a pass completes. `panics`: within the window,
    /// this one included.
    Resume { at: MonoTime, panics: u32 },
    /// This panic reached the limit: beats stop for good (logged once, at
    /// the error level); the loop is still entered again at `at`.
    GiveUp { at: MonoTime, panics: u32 },
    /// Beats had already stopped for good.
    Down { at: MonoTime },
}

/// Panic bookkeeping: a ring of the last [`PANIC_LIMIT`] panic times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Recovery {
    times: [Option<MonoTime>; PANIC_LIMIT],
    next: usize,
    /// A pass completed since the last panic (true at start).
    proven: bool,
    given_up: bool,
    total: u64,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery::new()
    }
}

impl Recovery {
    pub fn new() -> Recovery {
        Recovery {
            times: [None; PANIC_LIMIT],
            next: 0,
            proven: true,
            given_up: false,
            total: 0,
        }
    }

    /// The loop panicked at `now`.
    pub fn on_panic(&mut self, now: MonoTime) -> Verdict {
        let at = now + PANIC_BACKOFF;
        self.total = self.total.saturating_add(1);
        self.proven = false;
        if let Some(slot) = self.times.get_mut(self.next) {
            *slot = Some(now);
        }
        self.next = (self.next + 1) % PANIC_LIMIT;
        if self.given_up {
            return Verdict::Down { at };
        }
        let panics = self
            .times
            .iter()
            .flatten()
            .filter(|&&t| t <= now && now.saturating_since(t) < PANIC_WINDOW)
            .count();
        if panics >= PANIC_LIMIT {
            self.given_up = true;
            Verdict::GiveUp {
                at,
                panics: panics as u32,
            }
        } else {
            Verdict::Resume {
                at,
                panics: panics as u32,
            }
        }
    }

    /// One whole pass of the loop ran without a panic.
    pub fn pass_completed(&mut self) {
        self.proven = true;
    }

    /// Whether init may beat to watchdogd now.
    pub fn may_beat(&self) -> bool {
        self.proven && !self.given_up
    }

    /// Whether beats stopped for good.
    pub fn given_up(&self) -> bool {
        self.given_up
    }

    /// Panics since start.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    #[test]
    fn a_fresh_init_beats() {
        let r = Recovery::new();
        assert!(r.may_beat());
        assert!(!r.given_up());
    }

    #[test]
    fn after_a_panic_beats_wait_for_a_whole_pass() {
        let mut r = Recovery::new();
        assert_eq!(
            r.on_panic(at(5_000)),
            Verdict::Resume {
                at: at(6_000),
                panics: 1
            }
        );
        // Re-entering the loop is no proof: no beat yet.
        assert!(!r.may_beat());
        r.pass_completed();
        assert!(r.may_beat());
    }

    #[test]
    fn a_panic_in_every_pass_never_beats_and_gives_up_at_the_third() {
        let mut r = Recovery::new();
        // The pass panics late each time: pass_completed is never reached.
        assert!(matches!(
            r.on_panic(at(0)),
            Verdict::Resume { panics: 1, .. }
        ));
        assert!(!r.may_beat());
        assert!(matches!(
            r.on_panic(at(1_000)),
            Verdict::Resume { panics: 2, .. }
        ));
        assert!(!r.may_beat());
        assert_eq!(
            r.on_panic(at(2_000)),
            Verdict::GiveUp {
                at: at(3_000),
                panics: 3
            }
        );
        assert!(r.given_up());
        assert_eq!(r.on_panic(at(3_000)), Verdict::Down { at: at(4_000) });
        assert_eq!(r.total(), 4);
    }

    #[test]
    fn given_up_is_for_good_even_after_clean_passes() {
        let mut r = Recovery::new();
        for t in [0, 10_000, 20_000] {
            r.on_panic(at(t));
            r.pass_completed();
        }
        assert!(r.given_up());
        r.pass_completed();
        assert!(!r.may_beat());
    }

    #[test]
    fn rare_panics_spread_beyond_the_window_keep_the_beats() {
        let mut r = Recovery::new();
        // Every 30 s: at most 2 within any 60 s.
        for i in 0..10u64 {
            let v = r.on_panic(at(i * 30_000));
            assert!(
                matches!(v, Verdict::Resume { panics, .. } if panics <= 2),
                "{v:?}"
            );
            r.pass_completed();
            assert!(r.may_beat());
        }
        // The window is half-open: a panic exactly 60 s after the first of
        // three no longer counts that first one.
        let mut r = Recovery::new();
        r.on_panic(at(0));
        r.on_panic(at(59_000));
        assert!(matches!(
            r.on_panic(at(60_000)),
            Verdict::Resume { panics: 2, .. }
        ));
        assert!(matches!(
            r.on_panic(at(60_001)),
            Verdict::GiveUp { panics: 3, .. }
        ));
    }
}
