//! `tetherctl upgrade init`: init re-executes its own binary in place,
//! keeping its layer children, every heartbeat pipe, the fd store, the exit
//! relay and its restart budget (docs/ADOPTION.md). Pure: the state handed
//! to the new image ([`Resume`], one environment variable) and the steps of
//! an upgrade ([`Upgrade`]); `main.rs` does the system calls.
//!
//! The steps, on heartbeat code `U`:
//! 1. Refused while a shutdown is under way or another upgrade is.
//! 2. A *check*: init starts the binary it is about to become as an
//!    ordinary child, `tether-init --upgrade-check`, with the resume state
//!    it would hand over in [`ENV_RESUME`]. The check decodes it and exits
//!    0, or says why not and exits non-zero. A missing file, a file the
//!    kernel cannot execute, a binary that crashes at start (wrong
//!    architecture, missing library, truncated), or one that cannot read
//!    this init's resume format is found here, while the old init still
//!    runs: an exec that fails after the kernel's point of no return would
//!    kill PID 1. The check's exit is not relayed to the restarter. A check
//!    still running after [`CHECK_TIMEOUT`] is killed, and the upgrade
//!    refused.
//! 3. The exec, with the state encoded afresh at that moment; only the
//!    descriptors named in it lose close-on-exec, and get it back if
//!    `execve` fails (init then keeps running and logs why).
//!
//! The new image finds [`ENV_RESUME`], takes the descriptors back (marking
//! them close-on-exec again), restores the layers from their images, and
//! credits no byte found in a pipe to a moment after the old image last saw
//! the pipes empty (`seen`), so the time the exec took counts as silence.
//! It re-reads its configuration (the same command line): a changed
//! `tether.toml` applies to init from the upgrade on; watchdogd keeps the
//! `TETHER_CHAIN_TIMING` it was started with until it is restarted.

use std::fmt;
use std::os::fd::RawFd;
use std::time::Duration;

use tether_common::clock::MonoTime;

use crate::layers::{Exit, SlotImage, State, WINDOW_CAP};

/// The environment variable holding the state for the new image.
pub const ENV_RESUME: &str = "TETHER_INIT_RESUME";
/// The flag that makes `tether-init` check a resume state and exit.
pub const CHECK_FLAG: &str = "--upgrade-check";
/// How long the check may take before the upgrade is refused.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest resume state accepted (it is about 1 KiB with full windows).
pub const MAX_RESUME: usize = 16 * 1024;
/// The format's version word.
const VERSION: &str = "v1";

/// The descriptors init keeps for life, by role, in the order
/// [`Fds::NAMES`] lists them in the resume state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fds(pub [RawFd; Fds::COUNT]);

impl Fds {
    pub const COUNT: usize = 12;
    /// What each position holds.
    pub const NAMES: [&'static str; Fds::COUNT] = [
        "init->watchdogd read",
        "init->watchdogd write",
        "restarter->watchdogd read",
        "restarter->watchdogd write",
        "restarter->init read",
        "restarter->init write",
        "watchdogd->init read",
        "watchdogd->init write",
        "store_send",
        "store_recv",
        "relay read",
        "relay write",
    ];
}

/// Everything the new image needs beyond its configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub fds: Fds,
    pub watchdogd: SlotImage,
    pub restarter: SlotImage,
    /// When the old image last saw every supervision pipe empty.
    pub seen: MonoTime,
    /// Exit-relay records lost since boot.
    pub relay_lost: u64,
    /// Upgrades done since boot, this one included.
    pub upgrades: u32,
}

/// Why a resume state was refused: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: field `{}`: {}",
            ENV_RESUME, self.field, self.problem
        )
    }
}

impl std::error::Error for DecodeError {}

fn bad(field: &str, problem: impl Into<String>) -> DecodeError {
    DecodeError {
        field: field.to_string(),
        problem: problem.into(),
    }
}

fn nanos(t: MonoTime) -> u128 {
    t.as_duration().as_nanos()
}

fn opt_time(t: Option<MonoTime>) -> String {
    t.map_or_else(|| "-".to_string(), |t| nanos(t).to_string())
}

fn encode_state(s: State) -> String {
    match s {
        State::Waiting { at } => format!("W@{}", nanos(at)),
        State::Spawning => "P".to_string(),
        State::Running {
            pid,
            started,
            last_beat,
        } => format!("R@{}@{}@{}", pid, nanos(started), opt_time(last_beat)),
        State::Killing {
            pid,
            started,
            killed_at,
            last_kill,
        } => format!(
            "K@{}@{}@{}@{}",
            pid,
            nanos(started),
            nanos(killed_at),
            nanos(last_kill)
        ),
        State::Stopped => "S".to_string(),
    }
}

fn encode_slot(s: &SlotImage) -> String {
    let win: Vec<String> = s.restarts.iter().map(|&t| nanos(t).to_string()).collect();
    format!(
        "{};{};{};{};{};{};{}",
        encode_state(s.state),
        u8::from(s.stopping),
        opt_time(s.last_start),
        win.join("/"),
        s.total_restarts,
        s.spawn_failures,
        s.exhausted
            .map_or_else(|| "-".to_string(), |n| n.to_string())
    )
}

impl Resume {
    /// The value of [`ENV_RESUME`]: `v1 fds=A/B/... seen=NS lost=N
    /// upgrades=N wd=SLOT rst=SLOT`, where SLOT is `STATE;stopping;
    /// last_start;restart/times;total;spawn_failures;exhausted` and STATE
    /// `W@at`, `R@pid@started@last_beat`, `K@pid@started@killed@last_kill`
    /// or `S` (times in ns of `CLOCK_MONOTONIC`, `-` for none).
    pub fn encode(&self) -> String {
        let fds: Vec<String> = self.fds.0.iter().map(|fd| fd.to_string()).collect();
        format!(
            "{} fds={} seen={} lost={} upgrades={} wd={} rst={}",
            VERSION,
            fds.join("/"),
            nanos(self.seen),
            self.relay_lost,
            self.upgrades,
            encode_slot(&self.watchdogd),
            encode_slot(&self.restarter)
        )
    }

    /// Parses [`Resume::encode`]'s output; every field is checked.
    pub fn decode(text: &str) -> Result<Resume, DecodeError> {
        if text.len() > MAX_RESUME {
            return Err(bad(
                "(all)",
                format!("{} bytes, more than {}", text.len(), MAX_RESUME),
            ));
        }
        let mut words = text.split(' ');
        match words.next() {
            Some(VERSION) => {}
            Some(v) => {
                return Err(bad(
                    "version",
                    format!(
                        "`{}` is not {} (an older or newer init wrote it)",
                        short(v),
                        VERSION
                    ),
                ))
            }
            None => return Err(bad("version", "empty")),
        }
        let mut fds = None;
        let mut seen = None;
        let mut lost = None;
        let mut upgrades = None;
        let mut wd = None;
        let mut rst = None;
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| bad(short(w).as_str(), "not key=value"))?;
            let dup = |set: bool| {
                if set {
                    Err(bad(k, "appears twice"))
                } else {
                    Ok(())
                }
            };
            match k {
                "fds" => {
                    dup(fds.is_some())?;
                    fds = Some(decode_fds(v)?);
                }
                "seen" => {
                    dup(seen.is_some())?;
                    seen = Some(time(k, v)?);
                }
                "lost" => {
                    dup(lost.is_some())?;
                    lost = Some(num::<u64>(k, v)?);
                }
                "upgrades" => {
                    dup(upgrades.is_some())?;
                    upgrades = Some(num::<u32>(k, v)?);
                }
                "wd" => {
                    dup(wd.is_some())?;
                    wd = Some(decode_slot("wd", v)?);
                }
                "rst" => {
                    dup(rst.is_some())?;
                    rst = Some(decode_slot("rst", v)?);
                }
                other => return Err(bad(short(other).as_str(), "unknown field")),
            }
        }
        let need = |name: &str| bad(name, "missing");
        Ok(Resume {
            fds: fds.ok_or_else(|| need("fds"))?,
            seen: seen.ok_or_else(|| need("seen"))?,
            relay_lost: lost.ok_or_else(|| need("lost"))?,
            upgrades: upgrades.ok_or_else(|| need("upgrades"))?,
            watchdogd: wd.ok_or_else(|| need("wd"))?,
            restarter: rst.ok_or_else(|| need("rst"))?,
        })
    }
}

fn short(s: &str) -> String {
    s.chars().take(32).collect()
}

fn num<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, DecodeError> {
    if v.starts_with('+') {
        return Err(bad(field, format!("`{}` is not a number", short(v))));
    }
    v.parse()
        .map_err(|_| bad(field, format!("`{}` is not a number", short(v))))
}

fn time(field: &str, v: &str) -> Result<MonoTime, DecodeError> {
    let ns: u64 = num(field, v)?;
    Ok(MonoTime::from_duration(Duration::from_nanos(ns)))
}

fn opt(field: &str, v: &str) -> Result<Option<MonoTime>, DecodeError> {
    if v == "-" {
        Ok(None)
    } else {
        time(field, v).map(Some)
    }
}

fn pid(field: &str, v: &str) -> Result<i32, DecodeError> {
    let p: i32 = num(field, v)?;
    if p <= 1 {
        return Err(bad(field, format!("pid {} is not a child's", p)));
    }
    Ok(p)
}

fn decode_fds(v: &str) -> Result<Fds, DecodeError> {
    let mut out = [0; Fds::COUNT];
    let mut n = 0;
    for part in v.split('/') {
        let slot = out
            .get_mut(n)
            .ok_or_else(|| bad("fds", format!("more than {} descriptors", Fds::COUNT)))?;
        let fd: u16 = num("fds", part)?;
        if fd < 3 {
            return Err(bad("fds", format!("descriptor {} is a standard one", fd)));
        }
        *slot = RawFd::from(fd);
        n += 1;
    }
    if n != Fds::COUNT {
        return Err(bad("fds", format!("{} descriptors, not {}", n, Fds::COUNT)));
    }
    let mut sorted = out;
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w.first() == w.get(1)) {
        return Err(bad("fds", "a descriptor appears twice"));
    }
    Ok(Fds(out))
}

fn decode_state(field: &str, v: &str) -> Result<State, DecodeError> {
    let parts: Vec<&str> = v.split('@').collect();
    match parts.as_slice() {
        ["W", at] => Ok(State::Waiting {
            at: time(field, at)?,
        }),
        ["P"] => Ok(State::Spawning),
        ["R", p, started, last] => Ok(State::Running {
            pid: pid(field, p)?,
            started: time(field, started)?,
            last_beat: opt(field, last)?,
        }),
        ["K", p, started, killed, last] => Ok(State::Killing {
            pid: pid(field, p)?,
            started: time(field, started)?,
            killed_at: time(field, killed)?,
            last_kill: time(field, last)?,
        }),
        ["S"] => Ok(State::Stopped),
        _ => Err(bad(field, format!("state `{}` is not W/P/R/K/S", short(v)))),
    }
}

fn decode_slot(layer: &str, v: &str) -> Result<SlotImage, DecodeError> {
    let f = |name: &str| format!("{}.{}", layer, name);
    let parts: Vec<&str> = v.split(';').collect();
    let [state, stopping, last_start, win, total, failures, exhausted] = parts.as_slice() else {
        return Err(bad(layer, format!("{} parts, not 7", parts.len())));
    };
    let stopping = match *stopping {
        "0" => false,
        "1" => true,
        other => {
            return Err(bad(
                &f("stopping"),
                format!("`{}` is not 0 or 1", short(other)),
            ))
        }
    };
    let mut restarts = Vec::new();
    if !win.is_empty() {
        for t in win.split('/') {
            if restarts.len() == WINDOW_CAP {
                return Err(bad(&f("restarts"), format!("more than {}", WINDOW_CAP)));
            }
            restarts.push(time(&f("restarts"), t)?);
        }
    }
    if restarts.windows(2).any(|w| w.first() > w.get(1)) {
        return Err(bad(&f("restarts"), "not oldest first"));
    }
    Ok(SlotImage {
        state: decode_state(&f("state"), state)?,
        stopping,
        last_start: opt(&f("last_start"), last_start)?,
        restarts,
        total_restarts: num(&f("total"), total)?,
        spawn_failures: num(&f("spawn_failures"), failures)?,
        exhausted: if *exhausted == "-" {
            None
        } else {
            Some(num(&f("exhausted"), exhausted)?)
        },
    })
}

/// Why an upgrade did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    ShuttingDown,
    InProgress,
    /// A layer's start is under way (its result would be lost): ask again.
    SpawnOut,
    /// The check could not be started (the shell logs the error).
    CheckNotStarted,
    CheckFailed(Exit),
    CheckTimedOut,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ShuttingDown => f.write_str("a shutdown is under way"),
            Refusal::InProgress => f.write_str("an upgrade is already under way"),
            Refusal::SpawnOut => f.write_str("a layer is being started; ask again"),
            Refusal::CheckNotStarted => f.write_str("the new binary could not be started"),
            Refusal::CheckFailed(how) => write!(
                f,
                "the new binary's `{}` {} (it cannot take over)",
                CHECK_FLAG, how
            ),
            Refusal::CheckTimedOut => write!(
                f,
                "the new binary's `{}` did not finish within {} (killed)",
                CHECK_FLAG,
                crate::layers::Human(CHECK_TIMEOUT)
            ),
        }
    }
}

/// What the shell does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Start the check child (then report [`Upgrade::check_started`] or
    /// [`Upgrade::check_not_started`]).
    StartCheck,
    /// The check passed: exec now (then [`Upgrade::exec_failed`] if it
    /// returns).
    Exec,
    /// SIGKILL the check child.
    KillCheck {
        pid: i32,
    },
    Refuse(Refusal),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Idle,
    Checking { pid: i32, deadline: MonoTime },
}

/// The upgrade's state: at most one check at a time, and the pid of a
/// check killed for its timeout until it is reaped (so its exit is not
/// relayed either).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Upgrade {
    phase: Phase,
    abandoned: Option<i32>,
    /// Whether `StartCheck` is out.
    starting: bool,
}

impl Default for Upgrade {
    fn default() -> Self {
        Upgrade::new()
    }
}

impl Upgrade {
    pub fn new() -> Upgrade {
        Upgrade {
            phase: Phase::Idle,
            abandoned: None,
            starting: false,
        }
    }

    /// Code `U` arrived.
    pub fn request(&mut self, shutting_down: bool) -> Step {
        if shutting_down {
            return Step::Refuse(Refusal::ShuttingDown);
        }
        if self.starting || self.phase != Phase::Idle {
            return Step::Refuse(Refusal::InProgress);
        }
        self.starting = true;
        Step::StartCheck
    }

    pub fn check_started(&mut self, now: MonoTime, pid: i32) {
        self.starting = false;
        self.phase = Phase::Checking {
            pid,
            deadline: now + CHECK_TIMEOUT,
        };
    }

    pub fn check_not_started(&mut self) -> Step {
        self.starting = false;
        Step::Refuse(Refusal::CheckNotStarted)
    }

    /// Whether `pid` is a check child (running or abandoned): its exit is
    /// the upgrade's business, not the relay's ([`Upgrade::reaped`] says
    /// the same when it is reaped).
    #[cfg(test)]
    pub fn owns(&self, pid: i32) -> bool {
        self.abandoned == Some(pid)
            || matches!(self.phase, Phase::Checking { pid: p, .. } if p == pid)
    }

    /// A child was reaped: `None` if it is no check; else what to do.
    pub fn reaped(&mut self, pid: i32, how: Exit, shutting_down: bool) -> Option<Option<Step>> {
        if self.abandoned == Some(pid) {
            self.abandoned = None;
            return Some(None);
        }
        match self.phase {
            Phase::Checking { pid: p, .. } if p == pid => {
                self.phase = Phase::Idle;
                let step = if shutting_down {
                    Step::Refuse(Refusal::ShuttingDown)
                } else if how == Exit::Code(0) {
                    Step::Exec
                } else {
                    Step::Refuse(Refusal::CheckFailed(how))
                };
                Some(Some(step))
            }
            _ => None,
        }
    }

    /// Time passed: a check past its deadline is killed and the upgrade
    /// refused. At most two steps.
    pub fn tick(&mut self, now: MonoTime) -> Option<[Step; 2]> {
        match self.phase {
            Phase::Checking { pid, deadline } if now >= deadline => {
                self.phase = Phase::Idle;
                self.abandoned = Some(pid);
                Some([
                    Step::KillCheck { pid },
                    Step::Refuse(Refusal::CheckTimedOut),
                ])
            }
            _ => None,
        }
    }

    pub fn next_deadline(&self) -> Option<MonoTime> {
        match self.phase {
            Phase::Checking { deadline, .. } => Some(deadline),
            Phase::Idle => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    fn slot(state: State) -> SlotImage {
        SlotImage {
            state,
            stopping: false,
            last_start: Some(t(10)),
            restarts: vec![t(100), t(2_000), t(3_000)],
            total_restarts: 7,
            spawn_failures: 2,
            exhausted: None,
        }
    }

    fn resume() -> Resume {
        Resume {
            fds: Fds([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]),
            watchdogd: slot(State::Running {
                pid: 42,
                started: t(10),
                last_beat: Some(t(5_000)),
            }),
            restarter: SlotImage {
                exhausted: Some(5),
                stopping: true,
                last_start: None,
                restarts: vec![],
                ..slot(State::Killing {
                    pid: 43,
                    started: t(11),
                    killed_at: t(12),
                    last_kill: t(13),
                })
            },
            seen: t(123_456),
            relay_lost: 9,
            upgrades: 2,
        }
    }

    #[test]
    fn resume_state_round_trips() {
        let r = resume();
        let text = r.encode();
        assert_eq!(Resume::decode(&text), Ok(r.clone()));
        for state in [
            State::Waiting { at: t(77) },
            State::Stopped,
            State::Spawning,
            State::Running {
                pid: 9,
                started: t(1),
                last_beat: None,
            },
        ] {
            let mut r = r.clone();
            r.watchdogd.state = state;
            assert_eq!(Resume::decode(&r.encode()), Ok(r));
        }
        let mut full = r.clone();
        full.watchdogd.restarts = (0..WINDOW_CAP as u64).map(t).collect();
        full.restarter.restarts = full.watchdogd.restarts.clone();
        let text = full.encode();
        assert!(text.len() < MAX_RESUME / 4, "{} bytes", text.len());
        assert_eq!(Resume::decode(&text), Ok(full));
    }

    #[test]
    fn bad_resume_states_name_the_field() {
        let good = resume().encode();
        let field = |text: &str| Resume::decode(text).unwrap_err().field;
        assert_eq!(field(""), "version");
        assert_eq!(field(&good.replacen("v1", "v2", 1)), "version");
        assert_eq!(field(&good.replacen(" lost=9", "", 1)), "lost");
        assert_eq!(field(&good.replacen("lost=9", "lost=x", 1)), "lost");
        assert_eq!(field(&good.replacen("lost=9", "lost=+9", 1)), "lost");
        assert_eq!(field(&format!("{} lost=1", good)), "lost");
        assert_eq!(field(&format!("{} bogus=1", good)), "bogus");
        assert_eq!(field(&format!("{} nokey", good)), "nokey");
        assert_eq!(field(&good.replacen("fds=3/", "fds=", 1)), "fds");
        assert_eq!(field(&good.replacen("fds=3/", "fds=1/", 1)), "fds");
        assert_eq!(field(&good.replacen("fds=3/4", "fds=4/4", 1)), "fds");
        assert_eq!(field(&good.replacen("/14 ", "/14/15 ", 1)), "fds");
        assert_eq!(field(&good.replacen("R@42@", "R@1@", 1)), "wd.state");
        assert_eq!(field(&good.replacen("R@42@", "Q@42@", 1)), "wd.state");
        assert_eq!(field(&good.replacen("K@43@", "K@-5@", 1)), "rst.state");
        assert_eq!(field(&good.replacen(";0;", ";2;", 1)), "wd.stopping");
        assert_eq!(
            field(&good.replacen("100000000/2000000000", "2000000000/100000000", 1)),
            "wd.restarts"
        );
        assert_eq!(field(&good.replacen(";7;2;-", ";7;2", 1)), "wd");
        let huge = format!("{} {}", good, "x".repeat(MAX_RESUME));
        assert_eq!(field(&huge), "(all)");
        let e = Resume::decode(&good.replacen("lost=9", "lost=x", 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "TETHER_INIT_RESUME: field `lost`: `x` is not a number"
        );
    }

    #[test]
    fn an_upgrade_checks_then_execs() {
        let mut u = Upgrade::new();
        assert_eq!(u.request(false), Step::StartCheck);
        assert_eq!(u.request(false), Step::Refuse(Refusal::InProgress));
        u.check_started(t(0), 500);
        assert!(u.owns(500) && !u.owns(501));
        assert_eq!(u.request(false), Step::Refuse(Refusal::InProgress));
        assert_eq!(u.next_deadline(), Some(t(0) + CHECK_TIMEOUT));
        assert_eq!(u.reaped(501, Exit::Code(0), false), None);
        assert_eq!(u.reaped(500, Exit::Code(0), false), Some(Some(Step::Exec)));
        assert!(!u.owns(500));
        assert_eq!(u.next_deadline(), None);
        // After a failed exec the next request starts over.
        assert_eq!(u.request(false), Step::StartCheck);
    }

    #[test]
    fn a_failed_or_late_check_refuses_the_upgrade() {
        let mut u = Upgrade::new();
        assert_eq!(u.request(true), Step::Refuse(Refusal::ShuttingDown));
        assert_eq!(u.request(false), Step::StartCheck);
        assert_eq!(
            u.check_not_started(),
            Step::Refuse(Refusal::CheckNotStarted)
        );
        assert_eq!(u.request(false), Step::StartCheck);
        u.check_started(t(0), 600);
        let crash = Exit::Signal {
            signal: 11,
            core: false,
        };
        assert_eq!(
            u.reaped(600, crash, false),
            Some(Some(Step::Refuse(Refusal::CheckFailed(crash))))
        );
        assert_eq!(u.request(false), Step::StartCheck);
        u.check_started(t(1_000), 601);
        assert_eq!(u.tick(t(999) + CHECK_TIMEOUT), None);
        assert_eq!(
            u.tick(t(1_000) + CHECK_TIMEOUT),
            Some([
                Step::KillCheck { pid: 601 },
                Step::Refuse(Refusal::CheckTimedOut)
            ])
        );
        assert!(u.owns(601), "its exit is still ours");
        assert_eq!(u.request(false), Step::StartCheck);
        u.check_started(t(20_000), 602);
        assert_eq!(u.reaped(601, Exit::Code(0), false), Some(None));
        assert!(!u.owns(601));
        // A shutdown that began during the check wins.
        assert_eq!(
            u.reaped(602, Exit::Code(0), true),
            Some(Some(Step::Refuse(Refusal::ShuttingDown)))
        );
    }
}
