//! init's beat to watchdogd as a pure core: when the next `Alive` byte is
//! due. The shell (`main.rs`, `on_time`) writes the byte when [`Beat::due`]
//! says so; the model checker (`model/`) drives the same rule.
//!
//! The rule: due when `now` has reached the planned time, and the next one
//! is planned one `beat_interval` from `now` (not from the planned time):
//! a late turn delays the following beats rather than bursting to catch up.
//! A beat is never more than one interval plus one loop turn after the
//! previous one while the loop runs; watchdogd's stale timeout for init
//! (more than `hang_timeout`, itself more than `beat_interval`) absorbs the
//! drift.

use std::time::Duration;

use tether_common::clock::MonoTime;

/// When init's next beat is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Beat {
    next: MonoTime,
}

impl Beat {
    /// The first beat is due at once.
    pub fn new(now: MonoTime) -> Beat {
        Beat { next: now }
    }

    /// Whether a beat is due at `now`; if so the next is planned
    /// `interval` from `now`.
    pub fn due(&mut self, now: MonoTime, interval: Duration) -> bool {
        if now >= self.next {
            self.next = now + interval;
            true
        } else {
            false
        }
    }

    /// When the next beat is due (the loop's wake-up).
    pub fn next(&self) -> MonoTime {
        self.next
    }

    /// The planned time moved `by` earlier, clamped at `now` (a due beat
    /// stays due); for the model checker only.
    #[allow(dead_code)] // the model's, through the library target
    pub fn rebase(&mut self, by: Duration, now: MonoTime) {
        self.next = self.next.rebased(by, now, Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    #[test]
    fn due_at_once_then_one_interval_from_the_turn_that_beat() {
        let i = Duration::from_secs(1);
        let mut b = Beat::new(t(0));
        assert!(b.due(t(0), i));
        assert_eq!(b.next(), t(1000));
        assert!(!b.due(t(999), i));
        // A late turn: the next is an interval from it, no burst.
        assert!(b.due(t(1400), i));
        assert_eq!(b.next(), t(2400));
        assert!(!b.due(t(2000), i));
    }
}
