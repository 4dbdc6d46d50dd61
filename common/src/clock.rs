//! Monotonic time. Every deadline in tether is a [`MonoTime`]: nanoseconds of
//! `CLOCK_MONOTONIC`, never wall time, so a clock jump changes nothing.
//!
//! Pure cores take `now: MonoTime` as an argument; shells read it from a
//! [`Clock`]. Tests use [`FakeClock`].

use std::cell::Cell;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on the monotonic clock (time since an arbitrary start, usually boot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonoTime(Duration);

impl MonoTime {
    pub const ZERO: MonoTime = MonoTime(Duration::ZERO);

    /// A point `d` after the clock's origin (for fake clocks and tests).
    pub const fn from_duration(d: Duration) -> Self {
        MonoTime(d)
    }

    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// Reads `CLOCK_MONOTONIC`.
    pub fn now() -> Self {
        match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
            Ok(ts) => MonoTime(Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)),
            // CLOCK_MONOTONIC cannot fail on Linux; fall back to std's
            // monotonic clock rather than panicking.
            Err(_) => MonoTime(std_fallback()),
        }
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: MonoTime) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    pub fn checked_add(self, d: Duration) -> Option<MonoTime> {
        self.0.checked_add(d).map(MonoTime)
    }

    /// `self` moved `by` earlier, for a model checker that keeps its clock
    /// at one canonical `now` and shifts every stored time back instead
    /// (`model/`). A time more than `horizon` before `now` afterwards is
    /// clamped to `horizon` plus one nanosecond before `now`: a core whose
    /// every comparison of this time's age is against a threshold of at
    /// most `horizon` behaves the same, and the state space stays finite.
    /// Never used by the shells.
    pub fn rebased(self, by: Duration, now: MonoTime, horizon: Duration) -> MonoTime {
        let t = MonoTime(self.0.saturating_sub(by));
        if now.saturating_since(t) > horizon {
            MonoTime(
                now.0
                    .saturating_sub(horizon.saturating_add(Duration::from_nanos(1))),
            )
        } else {
            t
        }
    }
}

fn std_fallback() -> Duration {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

impl Add<Duration> for MonoTime {
    type Output = MonoTime;
    fn add(self, d: Duration) -> MonoTime {
        MonoTime(self.0.saturating_add(d))
    }
}

impl Sub<MonoTime> for MonoTime {
    type Output = Duration;
    /// Saturating: never panics.
    fn sub(self, earlier: MonoTime) -> Duration {
        self.saturating_since(earlier)
    }
}

/// A source of monotonic time.
pub trait Clock {
    fn now(&self) -> MonoTime;
}

/// The real `CLOCK_MONOTONIC`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> MonoTime {
        MonoTime::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct FakeClock(Cell<MonoTime>);

impl FakeClock {
    pub fn new(start: MonoTime) -> Self {
        FakeClock(Cell::new(start))
    }
    pub fn advance(&self, d: Duration) {
        self.0.set(self.0.get() + d);
    }
    pub fn set(&self, t: MonoTime) {
        self.0.set(t);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> MonoTime {
        self.0.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_clock_does_not_go_backwards() {
        let a = MonoTime::now();
        let b = MonoTime::now();
        assert!(b >= a);
    }

    #[test]
    fn fake_clock_moves_only_when_told() {
        let c = FakeClock::new(MonoTime::ZERO);
        assert_eq!(c.now(), MonoTime::ZERO);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now() - MonoTime::ZERO, Duration::from_millis(1500));
        assert_eq!(MonoTime::ZERO - c.now(), Duration::ZERO);
    }

    #[test]
    fn rebased_shifts_and_clamps_old_times_just_beyond_the_horizon() {
        let s = |n: u64| MonoTime::from_duration(Duration::from_secs(n));
        let now = s(100);
        let h = Duration::from_secs(10);
        // A future deadline and a recent time move back unchanged.
        assert_eq!(s(105).rebased(Duration::from_secs(1), now, h), s(104));
        assert_eq!(s(95).rebased(Duration::from_secs(1), now, h), s(94));
        // Exactly at the horizon: kept.
        assert_eq!(s(91).rebased(Duration::from_secs(1), now, h), s(90));
        // Beyond: clamped to one nanosecond past it, and stays there.
        let old = s(80).rebased(Duration::from_secs(1), now, h);
        assert_eq!(now - old, h + Duration::from_nanos(1));
        assert_eq!(old.rebased(Duration::from_secs(1), now, h), old);
    }
}
