//! Restart decisions, pure: given a service's spec, its restart history, how
//! its process ended and the time, when (or whether) to start it again.
//!
//! - `restart_delay` is the minimum time between two starts (runit's and
//!   s6's one second): a process that ran longer than that is restarted at
//!   once, a crash loop is throttled to one start per `restart_delay`.
//! - The optional sliding window (`max_restarts` within `window`, on the
//!   monotonic clock) counts automatic restarts. When one more restart would
//!   exceed it, `on_exhausted` decides: `stop` (failed), `reboot` (ask init),
//!   or `backoff`: delays `base·2, base·4, ...` capped at `max_delay`, where
//!   `base` is `restart_delay` (at least 100 ms, so `"0s"` still backs off).
//! - Decisions taken where the design is silent: once in backoff, a service
//!   stays in backoff (each failure doubles the delay) until one run lasts a
//!   whole `window`; only then do the level and the count start afresh.
//!   Otherwise a slow backoff would empty the window and the service would
//!   oscillate between bursts of quick restarts and long waits. A start
//!   asked for by hand (`tetherctl start/restart`) clears the history.

use crate::service::{OnExhausted, RestartMode, ServiceSpec};
use std::collections::VecDeque;
use std::time::Duration;
use tether_common::clock::MonoTime;

/// The smallest backoff base, so that `restart_delay = "0s"` still backs off.
pub const MIN_BACKOFF_BASE: Duration = Duration::from_millis(100);

/// What to do after a service's process ended (or could not be started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start again at this time (now, or when `restart_delay` since the
    /// last start has passed).
    RestartAt(MonoTime),
    /// The window is exhausted and `on_exhausted = "backoff"`: start again
    /// at `at`, `delay` after the exit.
    Backoff { at: MonoTime, delay: Duration },
    /// The window is exhausted and `on_exhausted = "stop"`.
    Failed,
    /// The window is exhausted and `on_exhausted = "reboot"`.
    Reboot,
    /// The restart mode says no (`never`, or `on-failure` after a clean exit).
    NoRestart,
}

/// A service's recent automatic restarts and backoff level.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct History {
    /// Planned times of automatic restarts still inside the window (at
    /// most `max_restarts + 1` kept).
    restarts: VecDeque<MonoTime>,
    /// 0: not backing off; n: the last delay was `base·2^n`.
    level: u32,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Forgets everything (a start asked for by hand).
    pub fn reset(&mut self) {
        self.restarts.clear();
        self.level = 0;
    }

    /// Automatic restarts counted in the window ending at `now` (a restart
    /// planned for later counts too).
    pub fn restarts_in_window(&self, window: Duration, now: MonoTime) -> usize {
        self.restarts
            .iter()
            .filter(|&&t| now.saturating_since(t) < window)
            .count()
    }

    pub fn backoff_level(&self) -> u32 {
        self.level
    }

    /// The window's restart times and the backoff level, for the state
    /// file (a re-adopting restarter resumes the same window).
    pub fn parts(&self) -> (Vec<MonoTime>, u32) {
        (self.restarts.iter().copied().collect(), self.level)
    }

    /// Every time moved as [`MonoTime::rebased`] moves one (a model
    /// checker's canonical clock; see `Supervisor::rebase`).
    pub fn rebase(&mut self, by: Duration, now: MonoTime, horizon: Duration) {
        for t in self.restarts.iter_mut() {
            *t = t.rebased(by, now, horizon);
        }
    }

    /// A history saved by [`History::parts`].
    pub fn from_parts(restarts: Vec<MonoTime>, level: u32) -> History {
        History {
            restarts: restarts.into(),
            level,
        }
    }

    /// Decides what follows the end of a process started at `started`
    /// (`failed`: non-zero exit, a signal, a missed watchdog or a start
    /// that did not happen). Records the restart it decides on.
    pub fn decide(
        &mut self,
        spec: &ServiceSpec,
        failed: bool,
        started: MonoTime,
        now: MonoTime,
    ) -> Decision {
        let wanted = match spec.restart {
            RestartMode::Always => true,
            RestartMode::OnFailure => failed,
            RestartMode::Never => false,
        };
        if !wanted {
            return Decision::NoRestart;
        }
        let earliest = (started + spec.restart_delay).max(now);
        let Some(limit) = spec.limit else {
            return Decision::RestartAt(earliest);
        };
        while let Some(&t) = self.restarts.front() {
            if t <= now && now.saturating_since(t) >= limit.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if now.saturating_since(started) >= limit.window {
            // A whole window of good running: start afresh.
            self.level = 0;
            self.restarts.clear();
        }
        let exhausted = self.level > 0 || self.restarts.len() >= limit.max_restarts as usize;
        if !exhausted {
            self.record(earliest, limit.max_restarts);
            return Decision::RestartAt(earliest);
        }
        match spec.on_exhausted {
            OnExhausted::Stop => Decision::Failed,
            OnExhausted::Reboot => Decision::Reboot,
            OnExhausted::Backoff => {
                self.level = self.level.saturating_add(1);
                let delay = backoff_delay(spec, self.level);
                let at = earliest.max(now + delay);
                self.record(at, limit.max_restarts);
                Decision::Backoff { at, delay }
            }
        }
    }

    fn record(&mut self, at: MonoTime, max_restarts: u32) {
        self.restarts.push_back(at);
        while self.restarts.len() > max_restarts as usize + 1 {
            self.restarts.pop_front();
        }
    }
}

/// The delay of backoff level `level` (1, 2, ...): `base·2^level`, capped at
/// `max_delay` (and never below `restart_delay`).
pub fn backoff_delay(spec: &ServiceSpec, level: u32) -> Duration {
    let base = spec.restart_delay.max(MIN_BACKOFF_BASE);
    let factor = 1u32.checked_shl(level.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(spec.max_delay)
        .max(spec.restart_delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::RestartLimit;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(n: u64) -> MonoTime {
        MonoTime::from_duration(ms(n))
    }

    fn spec() -> ServiceSpec {
        let mut s = ServiceSpec::new("svc", &["/bin/svc"]);
        s.restart_delay = ms(1000);
        s
    }

    fn limited(on: OnExhausted) -> ServiceSpec {
        let mut s = spec();
        s.limit = Some(RestartLimit {
            max_restarts: 3,
            window: ms(60_000),
        });
        s.on_exhausted = on;
        s
    }

    #[test]
    fn crash_after_long_run_restarts_at_once() {
        let mut h = History::new();
        assert_eq!(
            h.decide(&spec(), true, at(0), at(5_000)),
            Decision::RestartAt(at(5_000))
        );
    }

    #[test]
    fn crash_loop_is_throttled_by_restart_delay() {
        let mut h = History::new();
        // Ran 100 ms: the next start waits until 1 s after the last one.
        assert_eq!(
            h.decide(&spec(), true, at(0), at(100)),
            Decision::RestartAt(at(1_000))
        );
        assert_eq!(
            h.decide(&spec(), true, at(1_000), at(1_010)),
            Decision::RestartAt(at(2_000))
        );
    }

    #[test]
    fn restart_modes_decide_whether_at_all() {
        let mut h = History::new();
        let mut s = spec();
        s.restart = RestartMode::Never;
        assert_eq!(h.decide(&s, true, at(0), at(5_000)), Decision::NoRestart);
        s.restart = RestartMode::OnFailure;
        assert_eq!(h.decide(&s, false, at(0), at(5_000)), Decision::NoRestart);
        assert_eq!(
            h.decide(&s, true, at(0), at(5_000)),
            Decision::RestartAt(at(5_000))
        );
        s.restart = RestartMode::Always;
        assert_eq!(
            h.decide(&s, false, at(0), at(5_000)),
            Decision::RestartAt(at(5_000))
        );
    }

    #[test]
    fn exhausted_window_with_stop_marks_failed() {
        let s = limited(OnExhausted::Stop);
        let mut h = History::new();
        let mut start = at(0);
        for i in 0..3 {
            let now = start + ms(10);
            match h.decide(&s, true, start, now) {
                Decision::RestartAt(t) => start = t,
                other => panic!("restart {i}: {other:?}"),
            }
        }
        assert_eq!(h.decide(&s, true, start, start + ms(10)), Decision::Failed);
    }

    #[test]
    fn exhausted_window_with_reboot_requests_reboot() {
        let s = limited(OnExhausted::Reboot);
        let mut h = History::new();
        let mut start = at(0);
        for _ in 0..3 {
            let Decision::RestartAt(t) = h.decide(&s, true, start, start + ms(10)) else {
                panic!()
            };
            start = t;
        }
        assert_eq!(h.decide(&s, true, start, start + ms(10)), Decision::Reboot);
    }

    #[test]
    fn restarts_older_than_the_window_no_longer_count() {
        let s = limited(OnExhausted::Stop);
        let mut h = History::new();
        // Three quick restarts, then a crash 61 s after the first one
        // (but after a short run): the first restart has left the window.
        let mut start = at(0);
        for _ in 0..3 {
            let Decision::RestartAt(t) = h.decide(&s, true, start, start + ms(10)) else {
                panic!()
            };
            start = t;
        }
        assert_eq!(start, at(3_000));
        let now = at(61_500);
        let Decision::RestartAt(t) = h.decide(&s, true, at(61_000), now) else {
            panic!()
        };
        assert_eq!(t, at(62_000));
        assert_eq!(h.restarts_in_window(ms(60_000), now), 3);
    }

    #[test]
    fn backoff_doubles_to_max_delay() {
        let mut s = limited(OnExhausted::Backoff);
        s.max_delay = ms(10_000);
        let mut h = History::new();
        let mut start = at(0);
        for _ in 0..3 {
            let Decision::RestartAt(t) = h.decide(&s, true, start, start + ms(10)) else {
                panic!()
            };
            start = t;
        }
        let mut delays = Vec::new();
        for _ in 0..6 {
            let now = start + ms(10);
            match h.decide(&s, true, start, now) {
                Decision::Backoff { at: t, delay } => {
                    assert_eq!(t, now + delay);
                    delays.push(delay.as_millis());
                    start = t;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays, vec![2_000, 4_000, 8_000, 10_000, 10_000, 10_000]);
    }

    #[test]
    fn a_whole_window_of_running_ends_backoff() {
        let s = limited(OnExhausted::Backoff);
        let mut h = History::new();
        let mut start = at(0);
        for _ in 0..3 {
            let Decision::RestartAt(t) = h.decide(&s, true, start, start + ms(10)) else {
                panic!()
            };
            start = t;
        }
        assert!(matches!(
            h.decide(&s, true, start, start + ms(10)),
            Decision::Backoff { .. }
        ));
        assert_eq!(h.backoff_level(), 1);
        // The next run lasts 60 s: back to immediate restarts.
        let now = start + ms(60_000);
        assert_eq!(h.decide(&s, true, start, now), Decision::RestartAt(now));
        assert_eq!(h.backoff_level(), 0);
    }

    #[test]
    fn zero_restart_delay_still_backs_off() {
        let mut s = limited(OnExhausted::Backoff);
        s.restart_delay = Duration::ZERO;
        assert_eq!(backoff_delay(&s, 1), ms(200));
        assert_eq!(backoff_delay(&s, 40), s.max_delay);
    }

    #[test]
    fn reset_forgets_the_history() {
        let s = limited(OnExhausted::Stop);
        let mut h = History::new();
        let mut start = at(0);
        for _ in 0..3 {
            let Decision::RestartAt(t) = h.decide(&s, true, start, start + ms(10)) else {
                panic!()
            };
            start = t;
        }
        h.reset();
        assert!(matches!(
            h.decide(&s, true, start, start + ms(10)),
            Decision::RestartAt(_)
        ));
    }
}
