//! `user`/`group` names resolved off the event loop.
//!
//! An NSS lookup (`getpwnam_r`, `getgrnam_r`, `getgrouplist`) can block for
//! as long as sss, LDAP or a slow `userdb` take, so the loop never makes
//! one: a [`Resolver`] owns one thread that does the lookups in order and
//! hands each result back through a channel, waking the loop through a
//! socket pair the loop polls (non-blocking; the loop never waits on it).
//!
//! Decisions where the design is silent:
//! - Every `(user, group)` pair goes through the thread, numeric ones too
//!   (`getpwuid` for `HOME`/the primary group is NSS as well); a service
//!   with neither needs no lookup.
//! - A service whose identity is not resolved yet does not start: its
//!   start is held (status `starting`, status text `resolving user NAME`)
//!   until the answer comes, while every other service starts. A lookup
//!   still unanswered after [`SLOW`] is logged once.
//! - At a reload, each pair is looked up again in the background, and the
//!   new specs keep the identity known so far meanwhile (so an unchanged
//!   file compares equal and nothing restarts). An answer that differs
//!   from the identity a running service started with restarts it (as a
//!   changed file would); a failed answer never replaces a resolved one
//!   (a directory service down for a moment restarts nothing).
//! - A lookup that failed is repeated when the service is started next
//!   (the failure itself is a start failure, retried per policy).
//! - The lookup function is injectable ([`Lookup`]): with the test-only
//!   cargo feature `fault-inject`, `TETHER_FAULT_NSS_STALL=NAME:SECS` makes
//!   the lookup of user NAME block for SECS seconds first, as a hung LDAP
//!   server would (integration test `a_hung_user_lookup_...`).

use crate::service::{Identity, Resolution};
use crate::spawn::SpawnError;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;
use tether_common::clock::MonoTime;

/// What is looked up: a service's `user` and `group` as written.
pub type Key = (Option<String>, Option<String>);

/// The lookup the thread runs (NSS in production).
pub type Lookup = fn(Option<&str>, Option<&str>) -> Result<Identity, SpawnError>;

/// A lookup unanswered this long is logged (once).
pub const SLOW: Duration = Duration::from_secs(2);

/// The lookup used in production: [`crate::spawn::resolve_identity`]
/// (where the `fault-inject` feature's stall sits).
pub fn default_lookup() -> Lookup {
    crate::spawn::resolve_identity
}

/// One result: the pair and what the lookup said.
pub type Answer = (Key, Resolution);

/// The loop's side of the lookup thread, and what is known so far.
pub struct Resolver {
    to_thread: mpsc::Sender<Key>,
    from_thread: mpsc::Receiver<Answer>,
    /// The loop's end of the wake-up pair (non-blocking).
    wake: UnixStream,
    /// Pairs asked and not answered yet: since when, and whether the
    /// slowness was logged.
    asked: BTreeMap<Key, (MonoTime, bool)>,
    known: BTreeMap<Key, Resolution>,
}

impl Resolver {
    /// Starts the lookup thread. Call it with the loop's signals blocked:
    /// the thread inherits the mask, so no signal is ever delivered to it.
    pub fn new(lookup: Lookup) -> std::io::Result<Resolver> {
        let (wake, thread_wake) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        thread_wake.set_nonblocking(true)?;
        let (to_thread, requests) = mpsc::channel::<Key>();
        let (answers, from_thread) = mpsc::channel::<Answer>();
        std::thread::Builder::new()
            .name("nss-lookup".into())
            .spawn(move || {
                let mut thread_wake = thread_wake;
                while let Ok(key) = requests.recv() {
                    let r = match lookup(key.0.as_deref(), key.1.as_deref()) {
                        Ok(id) => Resolution::Resolved(id),
                        Err(e) => Resolution::Failed {
                            errno: e.errno,
                            message: e.message,
                        },
                    };
                    if answers.send((key, r)).is_err() {
                        return;
                    }
                    // A full pair already holds a wake-up: EAGAIN is fine.
                    let _ = thread_wake.write(b"r");
                }
            })?;
        Ok(Resolver {
            to_thread,
            from_thread,
            wake,
            asked: BTreeMap::new(),
            known: BTreeMap::new(),
        })
    }

    /// The descriptor the loop polls for answers.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// The pair of a spec, `None` when it names neither user nor group.
    pub fn key(user: Option<&str>, group: Option<&str>) -> Option<Key> {
        if user.is_none() && group.is_none() {
            return None;
        }
        Some((user.map(str::to_string), group.map(str::to_string)))
    }

    /// Asks for a lookup of `key` unless one is under way.
    pub fn ask(&mut self, key: &Key, now: MonoTime) {
        if self.asked.contains_key(key) {
            return;
        }
        if self.to_thread.send(key.clone()).is_ok() {
            self.asked.insert(key.clone(), (now, false));
        }
    }

    /// Whether a lookup of `key` is under way.
    pub fn asking(&self, key: &Key) -> bool {
        self.asked.contains_key(key)
    }

    /// The last resolved identity of `key`, if any.
    pub fn known(&self, key: &Key) -> Option<&Resolution> {
        self.known.get(key)
    }

    /// Every answer that came in (never blocks). Each is also remembered:
    /// see [`merge`] for what a failure does to a known identity.
    pub fn take(&mut self) -> Vec<Answer> {
        let mut buf = [0u8; 64];
        while matches!(self.wake.read(&mut buf), Ok(n) if n > 0) {}
        let mut out = Vec::new();
        while let Ok((key, r)) = self.from_thread.try_recv() {
            self.asked.remove(&key);
            let kept = merge(self.known.get(&key), r);
            self.known.insert(key.clone(), kept.clone());
            out.push((key, kept));
        }
        out
    }

    /// Lookups unanswered for [`SLOW`], each reported once.
    pub fn newly_slow(&mut self, now: MonoTime) -> Vec<(Key, Duration)> {
        let mut out = Vec::new();
        for (key, (since, said)) in self.asked.iter_mut() {
            let waited = now.saturating_since(*since);
            if !*said && waited >= SLOW {
                *said = true;
                out.push((key.clone(), waited));
            }
        }
        out
    }

    /// When [`Resolver::newly_slow`] next has something to say.
    pub fn next_deadline(&self) -> Option<MonoTime> {
        self.asked
            .values()
            .filter(|(_, said)| !*said)
            .map(|(since, _)| *since + SLOW)
            .min()
    }
}

/// What is kept when `new` answers for a pair known as `old`: a failure
/// never replaces a resolved identity (LDAP down for a moment at a reload
/// must not restart a service into a start failure).
pub fn merge(old: Option<&Resolution>, new: Resolution) -> Resolution {
    match (old, &new) {
        (Some(r @ Resolution::Resolved(_)), Resolution::Failed { .. }) => r.clone(),
        _ => new,
    }
}

/// "user NAME", "group NAME" or "user NAME, group NAME", for status text
/// and log lines.
pub fn describe(key: &Key) -> String {
    match key {
        (Some(u), None) => format!("user {u}"),
        (None, Some(g)) => format!("group {g}"),
        (Some(u), Some(g)) => format!("user {u}, group {g}"),
        (None, None) => String::from("no user"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(user: Option<&str>, _group: Option<&str>) -> Result<Identity, SpawnError> {
        match user {
            Some("slow") => {
                std::thread::sleep(Duration::from_millis(300));
                Ok(Identity {
                    uid: Some(7),
                    ..Identity::default()
                })
            }
            Some("www") => Ok(Identity {
                uid: Some(33),
                ..Identity::default()
            }),
            _ => Err(SpawnError {
                errno: None,
                message: "not found".into(),
            }),
        }
    }

    fn wait_answers(r: &mut Resolver, n: usize) -> Vec<Answer> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.len() < n {
            assert!(std::time::Instant::now() < deadline, "no answer");
            let mut fds = [nix::poll::PollFd::new(r.fd(), nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u8));
            got.extend(r.take());
        }
        got
    }

    #[test]
    fn answers_come_back_through_the_polled_descriptor_and_asking_never_waits() {
        let mut r = Resolver::new(fake).unwrap();
        let now = MonoTime::now();
        let slow = Resolver::key(Some("slow"), None).unwrap();
        let www = Resolver::key(Some("www"), None).unwrap();
        let t = std::time::Instant::now();
        r.ask(&slow, now);
        r.ask(&slow, now); // under way: not asked twice
        r.ask(&www, now);
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "ask returned at once"
        );
        assert!(r.take().is_empty() || r.asking(&www));
        let got = wait_answers(&mut r, 2);
        assert_eq!(got.len(), 2);
        assert!(!r.asking(&slow));
        assert!(matches!(
            r.known(&www),
            Some(Resolution::Resolved(Identity { uid: Some(33), .. }))
        ));
    }

    #[test]
    fn a_failure_never_replaces_a_resolved_identity() {
        let ok = Resolution::Resolved(Identity {
            uid: Some(33),
            ..Identity::default()
        });
        let failed = Resolution::Failed {
            errno: None,
            message: "ldap down".into(),
        };
        assert_eq!(merge(Some(&ok), failed.clone()), ok);
        assert_eq!(merge(None, failed.clone()), failed);
        assert_eq!(merge(Some(&failed), ok.clone()), ok);
    }

    #[test]
    fn a_slow_lookup_is_reported_once() {
        let mut r = Resolver::new(fake).unwrap();
        let t0 = MonoTime::now();
        let slow = Resolver::key(Some("slow"), None).unwrap();
        r.ask(&slow, t0);
        assert_eq!(r.next_deadline(), Some(t0 + SLOW));
        assert!(r.newly_slow(t0).is_empty());
        assert_eq!(r.newly_slow(t0 + SLOW).len(), 1);
        assert!(r.newly_slow(t0 + SLOW * 2).is_empty());
        assert_eq!(r.next_deadline(), None);
    }
}
