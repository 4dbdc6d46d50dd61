//! The petting gate: the pure core of watchdogd. From each layer's last beat,
//! its stale timeout and the current time it decides whether the device may
//! be petted, and reports the transitions (stop, resume) with their reason.
//! No system calls: tested with a fake clock.
//!
//! Decisions:
//! - A layer is stale when its silence is at least its `stale_timeout`
//!   ("pet only if every last beat is *younger* than its timeout").
//! - Start-up is credited to every layer only for its *first-beat grace*
//!   (`min(stale_timeout, startup_grace + beat_interval)` of the running
//!   chain, passed in by the shell), not for a full stale timeout: a layer
//!   that was already hung when this watchdogd started (init hung just
//!   before watchdogd was restarted) gets its silence restarted by at most
//!   that grace, and a layer that has never beaten since is stale after it.
//!   `startup_grace` covers a freshly forked layer (the restarter at boot),
//!   `beat_interval` a layer that was already running (its next beat). Once
//!   a layer has beaten, its `stale_timeout` applies.
//! - When several layers are stale, the one named is the most overdue
//!   (largest silence beyond its own timeout); on a tie the one registered
//!   first (init before the restarter). Ties are what a stalled watchdogd
//!   sees: every byte found after the stall is credited to the same moment.
//! - [`Decision::Stop`] and [`Decision::Resume`] are returned once per
//!   transition; while stopped, [`Decision::Withhold`] repeats the reason
//!   without asking for a new log line or record.
//! - Liveness words per layer: `ok` while silent for less than three beat
//!   intervals, `late N.Ns` after that, `STALE N.Ns` once stale.

use std::fmt::Write;
use std::time::Duration;
use tether_common::clock::MonoTime;

/// What to do at `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every layer is fresh: pet.
    Pet,
    /// A layer just went stale: stop petting (log at ALERT, write the record
    /// first).
    Stop { layer: String, silent_for: Duration },
    /// Still stopped (already reported).
    Withhold { layer: String, silent_for: Duration },
    /// Every layer is fresh again after a stop: log it and pet.
    Resume {
        /// The layer named when petting stopped.
        layer: String,
        /// How long petting was stopped.
        stopped_for: Duration,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Layer {
    name: String,
    stale_timeout: Duration,
    /// The last beat, or the gate's start while `beaten` is false.
    last_beat: MonoTime,
    /// Whether a beat has been seen since the gate started.
    beaten: bool,
}

impl Layer {
    fn silence(&self, now: MonoTime) -> Duration {
        now.saturating_since(self.last_beat)
    }

    /// The silence after which this layer is stale: its stale timeout, or
    /// the shorter first-beat grace while it has never beaten.
    fn limit(&self, first_beat: Duration) -> Duration {
        if self.beaten {
            self.stale_timeout
        } else {
            self.stale_timeout.min(first_beat)
        }
    }
}

/// `Hash` leaves out `since`, which only words the resume line
/// (STYLE.md 8).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stopped {
    layer: String,
    since: MonoTime,
}

impl std::hash::Hash for Stopped {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.layer.hash(h);
    }
}

/// Deliberately broken guards for the model checker's teeth test
/// (`model/tests/teeth.rs`): compiled only with the `mutants` feature,
/// which only that test enables (in its own target directory), and even
/// then off until it is switched on.
#[cfg(feature = "mutants")]
pub mod mutants {
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Staleness off by one: a layer silent exactly its limit still counts
    /// as fresh (`>` for `>=`), one tick late in a discrete model.
    pub static STALE_OFF_BY_ONE: AtomicBool = AtomicBool::new(false);

    pub fn stale_off_by_one() -> bool {
        STALE_OFF_BY_ONE.load(Ordering::Relaxed)
    }
}

#[cfg(not(feature = "mutants"))]
mod mutants {
    pub fn stale_off_by_one() -> bool {
        false
    }
}

/// Per-layer beat bookkeeping and the petting decision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Gate {
    layers: Vec<Layer>,
    stopped: Option<Stopped>,
    /// How long start-up is credited to a layer that has not beaten yet.
    first_beat: Duration,
}

impl Gate {
    /// Layers with their stale timeouts; `started` is credited to each as a
    /// beat for at most `first_beat` (see the module doc).
    pub fn new<I, S>(layers: I, started: MonoTime, first_beat: Duration) -> Gate
    where
        I: IntoIterator<Item = (S, Duration)>,
        S: Into<String>,
    {
        Gate {
            layers: layers
                .into_iter()
                .map(|(name, stale_timeout)| Layer {
                    name: name.into(),
                    stale_timeout,
                    last_beat: started,
                    beaten: false,
                })
                .collect(),
            stopped: None,
            first_beat,
        }
    }

    /// The first-beat grace (changed on reload with the chain's timing).
    pub fn set_first_beat(&mut self, first_beat: Duration) {
        self.first_beat = first_beat;
    }

    fn is_stale(&self, l: &Layer, now: MonoTime) -> bool {
        if mutants::stale_off_by_one() {
            return l.silence(now) > l.limit(self.first_beat);
        }
        l.silence(now) >= l.limit(self.first_beat)
    }

    /// Every stored time moved `by` earlier, ages beyond each layer's stale
    /// timeout clamped ([`MonoTime::rebased`]); for the model checker,
    /// which keeps its clock at one `now`. Whether to pet at `now` is
    /// unchanged; the layer named and the durations reported may be. Never
    /// called by the shell.
    pub fn rebase(&mut self, by: Duration, now: MonoTime) {
        for l in self.layers.iter_mut() {
            l.last_beat = l.last_beat.rebased(by, now, l.stale_timeout);
        }
        if let Some(s) = &mut self.stopped {
            s.since = s.since.rebased(by, now, Duration::ZERO);
        }
    }

    /// Whether `layer` has beaten since the gate started.
    pub fn has_beaten(&self, layer: &str) -> bool {
        self.layers.iter().any(|l| l.name == layer && l.beaten)
    }

    /// The silence after which `layer` counts as stale right now.
    pub fn limit(&self, layer: &str) -> Option<Duration> {
        self.layers
            .iter()
            .find(|l| l.name == layer)
            .map(|l| l.limit(self.first_beat))
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Names of the registered layers, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|l| l.name.as_str())
    }

    /// A beat from `layer` at `now` (unknown names are ignored).
    pub fn beat(&mut self, layer: &str, now: MonoTime) {
        if let Some(l) = self.layers.iter_mut().find(|l| l.name == layer) {
            if now > l.last_beat || !l.beaten {
                // A first beat credited before the start (bytes found in a
                // pipe last seen empty before it) still counts as a beat.
                l.last_beat = l.last_beat.max(now);
                l.beaten = true;
            }
        }
    }

    /// Changes a layer's stale timeout (config reload).
    pub fn set_stale_timeout(&mut self, layer: &str, timeout: Duration) {
        if let Some(l) = self.layers.iter_mut().find(|l| l.name == layer) {
            l.stale_timeout = timeout;
        }
    }

    /// How long `layer` has been silent at `now`.
    pub fn silence(&self, layer: &str, now: MonoTime) -> Option<Duration> {
        self.layers
            .iter()
            .find(|l| l.name == layer)
            .map(|l| l.silence(now))
    }

    /// Whether the last decision allowed petting.
    pub fn is_petting(&self) -> bool {
        self.stopped.is_none()
    }

    /// The most overdue stale layer at `now`, with its silence.
    fn most_overdue(&self, now: MonoTime) -> Option<&Layer> {
        self.layers
            .iter()
            .filter(|l| self.is_stale(l, now))
            // `max_by_key` keeps the last of equals: reversed, the first.
            .rev()
            .max_by_key(|l| l.silence(now).saturating_sub(l.limit(self.first_beat)))
    }

    /// The decision at `now`, updating the stopped/petting state.
    pub fn evaluate(&mut self, now: MonoTime) -> Decision {
        let stale = self
            .most_overdue(now)
            .map(|l| (l.name.clone(), l.silence(now)));
        match (stale, self.stopped.take()) {
            (None, None) => Decision::Pet,
            (None, Some(s)) => Decision::Resume {
                layer: s.layer,
                stopped_for: now.saturating_since(s.since),
            },
            (Some((layer, silent_for)), None) => {
                self.stopped = Some(Stopped {
                    layer: layer.clone(),
                    since: now,
                });
                Decision::Stop { layer, silent_for }
            }
            (Some(_), Some(s)) => {
                // Keep naming the layer the stop was reported for while it
                // is still stale; otherwise the one stale now.
                let silent = self.silence(&s.layer, now).unwrap_or_default();
                let still = self
                    .layers
                    .iter()
                    .any(|l| l.name == s.layer && self.is_stale(l, now));
                let (layer, silent_for) = if still {
                    (s.layer.clone(), silent)
                } else {
                    let l = self
                        .most_overdue(now)
                        .map(|l| (l.name.clone(), l.silence(now)));
                    l.unwrap_or((s.layer.clone(), silent))
                };
                self.stopped = Some(s);
                Decision::Withhold { layer, silent_for }
            }
        }
    }

    /// The earliest moment a layer that is fresh at `now` turns stale: the
    /// next time [`evaluate`](Gate::evaluate) can change its answer without
    /// a beat arriving. `None` when no layer is fresh (or none exists).
    pub fn next_deadline(&self, now: MonoTime) -> Option<MonoTime> {
        self.layers
            .iter()
            .filter(|l| !self.is_stale(l, now))
            .map(|l| l.last_beat + l.limit(self.first_beat))
            .min()
    }

    /// `init ok, restarter late 3.2s` for the liveness line.
    pub fn summary(&self, now: MonoTime, beat_interval: Duration) -> String {
        if self.layers.is_empty() {
            return "no layers registered".to_string();
        }
        let mut s = String::new();
        for (i, l) in self.layers.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let silence = l.silence(now);
            let _ = if self.is_stale(l, now) {
                write!(s, "{} STALE {}", l.name, secs(silence))
            } else if silence >= beat_interval.saturating_mul(3) {
                write!(s, "{} late {}", l.name, secs(silence))
            } else {
                write!(s, "{} ok", l.name)
            };
        }
        s
    }
}

/// `0.4s`, `20.4s`: seconds with one decimal.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_common::clock::{Clock, FakeClock};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn gate(clock: &FakeClock) -> Gate {
        // A first-beat grace longer than every timeout: start-up counts as
        // a full beat (the rule before the grace, tested on its own below).
        Gate::new(
            [("init", ms(1000)), ("restarter", ms(2000))],
            clock.now(),
            Duration::MAX,
        )
    }

    #[test]
    fn startup_counts_as_a_beat_within_the_first_beat_grace() {
        let c = FakeClock::new(MonoTime::from_duration(Duration::from_secs(100)));
        let mut g = gate(&c);
        c.advance(ms(999));
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Pet,
            "no beat yet, but a full timeout from start"
        );
        assert_eq!(
            g.next_deadline(c.now()),
            Some(MonoTime::from_duration(Duration::from_secs(101)))
        );
    }

    #[test]
    fn stale_layer_stops_petting_once_with_its_name_and_silence() {
        let c = FakeClock::new(MonoTime::ZERO);
        let mut g = gate(&c);
        for _ in 0..3 {
            c.advance(ms(500));
            g.beat("init", c.now());
            assert_eq!(g.evaluate(c.now()), Decision::Pet);
        }
        // restarter has been silent since start (2.01 s >= 2 s).
        c.advance(ms(510));
        g.beat("init", c.now());
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Stop {
                layer: "restarter".into(),
                silent_for: ms(2010)
            }
        );
        assert!(!g.is_petting());
        c.advance(ms(100));
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Withhold {
                layer: "restarter".into(),
                silent_for: ms(2110)
            },
            "the stop is reported once"
        );
    }

    #[test]
    fn each_layer_has_its_own_timeout() {
        let c = FakeClock::new(MonoTime::ZERO);
        let mut g = gate(&c);
        // init (1 s) goes stale first although restarter (2 s) is silent too.
        c.advance(ms(999));
        assert_eq!(g.evaluate(c.now()), Decision::Pet);
        c.advance(ms(1));
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Stop {
                layer: "init".into(),
                silent_for: ms(1000)
            }
        );
        // Per-layer timeout changes on reload.
        let mut g = gate(&c);
        g.set_stale_timeout("init", ms(5000));
        c.advance(ms(2000));
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Stop {
                layer: "restarter".into(),
                silent_for: ms(2000)
            }
        );
    }

    #[test]
    fn the_most_overdue_layer_is_named() {
        let c = FakeClock::new(MonoTime::ZERO);
        let mut g = gate(&c);
        c.advance(ms(5000));
        // init: 4 s overdue, restarter: 3 s overdue.
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Stop {
                layer: "init".into(),
                silent_for: ms(5000)
            }
        );
    }

    #[test]
    fn recovery_resumes_petting() {
        let c = FakeClock::new(MonoTime::ZERO);
        let mut g = gate(&c);
        c.advance(ms(1200));
        g.beat("restarter", c.now());
        assert!(matches!(g.evaluate(c.now()), Decision::Stop { .. }));
        c.advance(ms(300));
        g.beat("init", c.now());
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Resume {
                layer: "init".into(),
                stopped_for: ms(300)
            }
        );
        assert!(g.is_petting());
        assert_eq!(g.evaluate(c.now()), Decision::Pet);
    }

    #[test]
    fn no_resume_while_another_layer_is_still_stale() {
        let c = FakeClock::new(MonoTime::ZERO);
        let mut g = gate(&c);
        c.advance(ms(2500));
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Stop {
                layer: "init".into(),
                silent_for: ms(2500)
            }
        );
        g.beat("init", c.now());
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Withhold {
                layer: "restarter".into(),
                silent_for: ms(2500)
            }
        );
        g.beat("restarter", c.now());
        assert!(matches!(g.evaluate(c.now()), Decision::Resume { .. }));
    }

    #[test]
    fn deadline_is_the_earliest_fresh_layer_to_go_stale() {
        let c = FakeClock::new(MonoTime::ZERO);
        let mut g = gate(&c);
        c.advance(ms(800));
        g.beat("init", c.now());
        // init stale at 1.8 s, restarter at 2.0 s.
        assert_eq!(
            g.next_deadline(c.now()),
            Some(MonoTime::from_duration(ms(1800)))
        );
        c.advance(ms(1000));
        assert_eq!(
            g.next_deadline(c.now()),
            Some(MonoTime::from_duration(ms(2000)))
        );
        c.advance(ms(500));
        assert_eq!(
            g.next_deadline(c.now()),
            None,
            "everyone stale: only a beat can change it"
        );
        assert_eq!(
            Gate::new(Vec::<(String, Duration)>::new(), c.now(), ms(1)).next_deadline(c.now()),
            None
        );
    }

    #[test]
    fn a_gate_without_layers_always_pets() {
        let c = FakeClock::new(MonoTime::ZERO);
        let mut g = Gate::new(Vec::<(String, Duration)>::new(), c.now(), ms(1));
        c.advance(Duration::from_secs(3600));
        assert_eq!(g.evaluate(c.now()), Decision::Pet);
        assert_eq!(g.summary(c.now(), ms(100)), "no layers registered");
    }

    #[test]
    fn a_beat_from_the_past_does_not_move_the_last_beat_back() {
        let c = FakeClock::new(MonoTime::from_duration(ms(5000)));
        let mut g = gate(&c);
        g.beat("init", MonoTime::ZERO);
        assert_eq!(g.silence("init", c.now()), Some(Duration::ZERO));
        g.beat("nobody", c.now());
    }

    #[test]
    fn summary_says_ok_late_or_stale_per_layer() {
        let c = FakeClock::new(MonoTime::ZERO);
        let mut g = gate(&c);
        c.advance(ms(1500));
        g.beat("restarter", c.now());
        assert_eq!(g.summary(c.now(), ms(100)), "init STALE 1.5s, restarter ok");
        c.advance(ms(400));
        assert_eq!(
            g.summary(c.now(), ms(100)),
            "init STALE 1.9s, restarter late 0.4s"
        );
        assert_eq!(secs(ms(20_400)), "20.4s");
    }

    /// DESIGN.md "Who watches whom", init hang, at watchdogd's start: init
    /// hung (stopped beating) 5 s before this watchdogd started. Start-up is
    /// credited to it only for the first-beat grace (here 300 ms), not for
    /// its full 1 s stale timeout: petting stops 300 ms after the start.
    #[test]
    fn a_layer_hung_before_the_start_is_credited_only_its_first_beat_grace() {
        let c = FakeClock::new(MonoTime::from_duration(Duration::from_secs(5)));
        let mut g = Gate::new(
            [("init", ms(1000)), ("restarter", ms(2000))],
            c.now(),
            ms(300),
        );
        c.advance(ms(250));
        g.beat("restarter", c.now());
        assert_eq!(g.evaluate(c.now()), Decision::Pet);
        assert_eq!(g.limit("init"), Some(ms(300)));
        assert_eq!(
            g.next_deadline(c.now()),
            Some(MonoTime::from_duration(ms(5300))),
            "init's deadline is the grace, not the stale timeout"
        );
        c.advance(ms(50));
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Stop {
                layer: "init".into(),
                silent_for: ms(300)
            }
        );
        assert!(!g.has_beaten("init") && g.has_beaten("restarter"));
    }

    #[test]
    fn after_its_first_beat_a_layer_gets_its_full_stale_timeout() {
        let c = FakeClock::new(MonoTime::ZERO);
        let mut g = Gate::new([("init", ms(1000))], c.now(), ms(300));
        c.advance(ms(200));
        g.beat("init", c.now());
        assert_eq!(g.limit("init"), Some(ms(1000)));
        c.advance(ms(999));
        assert_eq!(g.evaluate(c.now()), Decision::Pet);
        c.advance(ms(1));
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Stop {
                layer: "init".into(),
                silent_for: ms(1000)
            }
        );
        // A grace longer than the stale timeout is cut to the timeout.
        let mut g = Gate::new([("init", ms(1000))], c.now(), ms(5000));
        assert_eq!(g.limit("init"), Some(ms(1000)));
        c.advance(ms(1000));
        assert!(matches!(g.evaluate(c.now()), Decision::Stop { .. }));
    }

    #[test]
    fn on_a_tie_the_layer_registered_first_is_named() {
        let c = FakeClock::new(MonoTime::ZERO);
        let mut g = Gate::new(
            [("init", ms(1000)), ("restarter", ms(1000))],
            c.now(),
            Duration::MAX,
        );
        c.advance(ms(1500));
        assert_eq!(
            g.evaluate(c.now()),
            Decision::Stop {
                layer: "init".into(),
                silent_for: ms(1500)
            }
        );
    }
}
