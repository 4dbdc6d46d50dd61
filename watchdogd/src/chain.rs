//! The running chain's timings, as init passes them in
//! `TETHER_CHAIN_TIMING=hang_timeout_ms=N,restart_delay_ms=N,startup_grace_ms=N,beat_interval_ms=N`
//! (issue 11, item 7).
//!
//! init never reloads its timings, so a reload of watchdogd's own file must
//! not be checked against the file's `hang_timeout` etc. but against the
//! values init is running with. The budget rules are those of
//! `common::budget`, applied to watchdogd's own config with init's four
//! values put in: the stale timeouts and `hardware_timeout` are
//! watchdogd's, the repair terms init's.
//!
//! Decisions: all four keys are required, each once, with a decimal number
//! of milliseconds; anything else (an unknown key, a missing one, a value
//! that is not a number, bytes that are not UTF-8, the empty string) makes
//! the whole variable malformed: logged at ERROR, and watchdogd's own
//! start-up values stand in for the running ones. Absent (run by hand, or
//! an init that does not pass it yet): the own start-up values, silently.

use std::ffi::OsStr;
use std::fmt;
use std::time::Duration;
use tether_common::budget::{self, BudgetError};
use tether_common::config::{Config, Timing};

pub const ENV_CHAIN_TIMING: &str = "TETHER_CHAIN_TIMING";

const KEYS: [&str; 4] = [
    "hang_timeout_ms",
    "restart_delay_ms",
    "startup_grace_ms",
    "beat_interval_ms",
];

/// init's running repair timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChainTiming {
    pub hang_timeout: Duration,
    pub restart_delay: Duration,
    pub startup_grace: Duration,
    pub beat_interval: Duration,
}

/// Why `TETHER_CHAIN_TIMING` was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is malformed: {}", ENV_CHAIN_TIMING, self.0)
    }
}

impl ChainTiming {
    /// The values of a config (watchdogd's own, standing in for init's).
    pub fn of(t: &Timing) -> ChainTiming {
        ChainTiming {
            hang_timeout: t.hang_timeout,
            restart_delay: t.restart_delay,
            startup_grace: t.startup_grace,
            beat_interval: t.beat_interval,
        }
    }

    /// Parses the variable's value.
    pub fn parse(value: &OsStr) -> Result<ChainTiming, Malformed> {
        let s = value
            .to_str()
            .ok_or_else(|| Malformed("not UTF-8".into()))?;
        if s.len() > 256 {
            return Err(Malformed("longer than 256 bytes".into()));
        }
        let mut got: [Option<Duration>; 4] = [None; 4];
        for entry in s.split(',') {
            let short: String = entry.chars().take(64).collect();
            let (k, v) = entry
                .split_once('=')
                .ok_or_else(|| Malformed(format!("entry `{short}` is not name=number")))?;
            let i = KEYS
                .iter()
                .position(|key| *key == k)
                .ok_or_else(|| Malformed(format!("unknown name in `{short}`")))?;
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Malformed(format!(
                    "entry `{short}`: not a number of milliseconds"
                )));
            }
            let ms: u64 = v
                .parse()
                .map_err(|_| Malformed(format!("entry `{short}`: number too large")))?;
            match got.get_mut(i) {
                Some(slot @ None) => *slot = Some(Duration::from_millis(ms)),
                _ => return Err(Malformed(format!("`{k}` appears twice"))),
            }
        }
        match got {
            [Some(hang_timeout), Some(restart_delay), Some(startup_grace), Some(beat_interval)] => {
                Ok(ChainTiming {
                    hang_timeout,
                    restart_delay,
                    startup_grace,
                    beat_interval,
                })
            }
            _ => {
                let missing: Vec<&str> = KEYS
                    .iter()
                    .zip(got)
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| *k)
                    .collect();
                Err(Malformed(format!("missing {}", missing.join(", "))))
            }
        }
    }

    /// From the environment: `Ok(None)` when absent.
    pub fn from_env() -> Result<Option<ChainTiming>, Malformed> {
        match std::env::var_os(ENV_CHAIN_TIMING) {
            None => Ok(None),
            Some(v) => ChainTiming::parse(&v).map(Some),
        }
    }

    /// `own` with init's repair timings put in: what the budget is checked
    /// on.
    pub fn apply(&self, own: &Config) -> Config {
        let mut c = own.clone();
        c.timing.hang_timeout = self.hang_timeout;
        c.timing.restart_delay = self.restart_delay;
        c.timing.startup_grace = self.startup_grace;
        c.timing.beat_interval = self.beat_interval;
        c
    }

    /// The budget rules (`common::budget`) for watchdogd's `own` settings
    /// against this running chain: e.g. `stale_timeout (init) >
    /// hang_timeout + restart_delay + startup_grace` with init's values on
    /// the right.
    pub fn check(&self, own: &Config) -> Result<(), BudgetError> {
        budget::validate(&self.apply(own))
    }

    /// How long start-up is credited to a layer that has not beaten yet:
    /// `startup_grace` (a freshly forked layer's first beat) plus
    /// `beat_interval` (the next beat of one already running).
    pub fn first_beat(&self) -> Duration {
        self.startup_grace.saturating_add(self.beat_interval)
    }

    /// `hang_timeout=10s restart_delay=1s startup_grace=5s beat_interval=1s`.
    pub fn describe(&self) -> String {
        let f = tether_common::duration::format;
        format!(
            "hang_timeout={} restart_delay={} startup_grace={} beat_interval={}",
            f(self.hang_timeout),
            f(self.restart_delay),
            f(self.startup_grace),
            f(self.beat_interval)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn parse(s: &str) -> Result<ChainTiming, Malformed> {
        ChainTiming::parse(OsStr::new(s))
    }

    #[test]
    fn the_four_values_parse_in_any_order() {
        let c = parse(
            "beat_interval_ms=100,hang_timeout_ms=300,restart_delay_ms=100,startup_grace_ms=200",
        )
        .unwrap();
        assert_eq!(
            c,
            ChainTiming {
                hang_timeout: ms(300),
                restart_delay: ms(100),
                startup_grace: ms(200),
                beat_interval: ms(100),
            }
        );
        assert_eq!(c.first_beat(), ms(300));
    }

    #[test]
    fn anything_else_is_malformed_and_says_why() {
        let full = "hang_timeout_ms=1,restart_delay_ms=1,startup_grace_ms=1,beat_interval_ms=1";
        for (bad, why) in [
            ("", "not name=number"),
            ("hang_timeout_ms=1", "missing restart_delay_ms, startup_grace_ms, beat_interval_ms"),
            (&format!("{full},hang_timeout_ms=2") as &str, "appears twice"),
            (&format!("{full},stale_ms=2"), "unknown name"),
            ("hang_timeout_ms=1s,restart_delay_ms=1,startup_grace_ms=1,beat_interval_ms=1", "not a number"),
            ("hang_timeout_ms=-1,restart_delay_ms=1,startup_grace_ms=1,beat_interval_ms=1", "not a number"),
            ("hang_timeout_ms=99999999999999999999999,restart_delay_ms=1,startup_grace_ms=1,beat_interval_ms=1", "too large"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(e.to_string().starts_with(ENV_CHAIN_TIMING), "{e}");
        }
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            ChainTiming::parse(OsStr::from_bytes(b"hang_timeout_ms=\xff")).unwrap_err(),
            Malformed("not UTF-8".into())
        );
    }

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("tether.toml")).unwrap()
    }

    /// DESIGN.md "Timing budget": a watchdogd file that is fine by itself
    /// (its own hang_timeout is short) but overlaps the running init's
    /// repair (hang 10 s + delay 1 s + grace 5 s) is refused, and the error
    /// names the inequality with init's values.
    #[test]
    fn own_settings_are_checked_against_the_running_chain() {
        let own = config(
            "[timing]\nhang_timeout = \"2s\"\nstartup_grace = \"1s\"\nstale_timeout = \"8s\"\nhardware_timeout = \"30s\"\n",
        );
        let own_values = ChainTiming::of(&own.timing);
        assert!(own_values.check(&own).is_ok(), "fine on its own");
        let running = parse("hang_timeout_ms=10000,restart_delay_ms=1000,startup_grace_ms=5000,beat_interval_ms=1000")
            .unwrap();
        let e = running.check(&own).unwrap_err();
        assert_eq!(e.kind, budget::Rule::StaleAfterRepair);
        let text = e.to_string();
        assert!(
            text.contains(
                "stale_timeout (init) must be > hang_timeout + max(restart_delay, KILL_REAP_MIN 100ms) + max(startup_grace, START_LATENCY_MIN 200ms)"
            ) && text.contains("10s + 1s + 5s = 16s"),
            "{text}"
        );
        // A longer stale timeout fits.
        let own = config("[timing]\nstale_timeout = \"17s\"\nhardware_timeout = \"30s\"\n");
        assert!(running.check(&own).is_ok());
    }
}
