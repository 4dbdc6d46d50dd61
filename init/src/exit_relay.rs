//! The exit relay's bookkeeping (pure): init writes `(pid, wait status)` of
//! every non-layer child it reaps into a pipe the restarter reads
//! (`tether_common::relay`, docs/ADOPTION.md). The write never blocks: when
//! the pipe is full (no restarter has read it for a while) the record is
//! lost. [`Losses`] counts the losses and says when to log: once when an
//! episode of losses begins, once with its count when a record goes through
//! again. No allocation, no system call.

use std::fmt;

/// What one non-blocking `write(2)` of a record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// `EAGAIN`: the pipe is full.
    Full,
    /// Any other error (the errno, for the log).
    Failed(i32),
}

/// A log line about the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// The first record of an episode was lost.
    Losing { pid: i32, outcome: Outcome },
    /// A record went through after `lost` were lost (`total` since boot).
    Recovered { lost: u64, total: u64 },
}

impl Note {
    pub fn level(&self) -> log::Level {
        match self {
            Note::Losing { .. } => log::Level::Warn,
            Note::Recovered { .. } => log::Level::Warn,
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Note::Losing { pid, outcome } => {
                let why = match outcome {
                    Outcome::Full => "the pipe is full (no restarter reading it)".to_string(),
                    Outcome::Failed(e) => {
                        format!("write failed: {}", nix::errno::Errno::from_raw(e))
                    }
                    Outcome::Written => "written".to_string(),
                };
                write!(
                    f,
                    "exit relay: the status of pid {} is lost, {}; further losses are counted and reported when the relay works again",
                    pid, why
                )
            }
            Note::Recovered { lost, total } => write!(
                f,
                "exit relay working again: {} exit status(es) were lost meanwhile ({} since boot); a restarter sees those services' exits as unknown",
                lost, total
            ),
        }
    }
}

/// Losses of the relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Losses {
    /// Lost in the current episode (0: records go through).
    episode: u64,
    /// Lost since boot (carried across a re-exec in place).
    total: u64,
}

impl Losses {
    pub fn new(total: u64) -> Losses {
        Losses { episode: 0, total }
    }

    /// Records lost since boot.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The write of `pid`'s record did `outcome`: the line to log, if any.
    pub fn record(&mut self, pid: i32, outcome: Outcome) -> Option<Note> {
        match outcome {
            Outcome::Written => {
                if self.episode == 0 {
                    return None;
                }
                let lost = self.episode;
                self.episode = 0;
                Some(Note::Recovered {
                    lost,
                    total: self.total,
                })
            }
            Outcome::Full | Outcome::Failed(_) => {
                self.episode = self.episode.saturating_add(1);
                self.total = self.total.saturating_add(1);
                (self.episode == 1).then_some(Note::Losing { pid, outcome })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_that_go_through_say_nothing() {
        let mut l = Losses::new(0);
        for pid in 1..100 {
            assert_eq!(l.record(pid, Outcome::Written), None);
        }
        assert_eq!(l.total(), 0);
    }

    #[test]
    fn an_episode_is_logged_once_at_its_start_and_once_with_its_count() {
        let mut l = Losses::new(0);
        assert_eq!(
            l.record(10, Outcome::Full),
            Some(Note::Losing {
                pid: 10,
                outcome: Outcome::Full
            })
        );
        for pid in 11..20 {
            assert_eq!(l.record(pid, Outcome::Full), None);
        }
        assert_eq!(l.record(20, Outcome::Failed(9)), None);
        assert_eq!(
            l.record(21, Outcome::Written),
            Some(Note::Recovered {
                lost: 11,
                total: 11
            })
        );
        assert_eq!(l.record(22, Outcome::Written), None);
        // A second episode starts a new count; the total goes on.
        assert!(matches!(
            l.record(23, Outcome::Full),
            Some(Note::Losing { pid: 23, .. })
        ));
        assert_eq!(
            l.record(24, Outcome::Written),
            Some(Note::Recovered { lost: 1, total: 12 })
        );
        assert_eq!(l.total(), 12);
    }

    #[test]
    fn notes_name_the_pid_and_the_count() {
        let s = Note::Losing {
            pid: 77,
            outcome: Outcome::Full,
        }
        .to_string();
        assert!(s.contains("pid 77") && s.contains("full"), "{}", s);
        let s = Note::Recovered { lost: 5, total: 9 }.to_string();
        assert!(
            s.contains("5 exit status") && s.contains("9 since boot"),
            "{}",
            s
        );
    }
}
