//! The orderly shutdown sequence (reboot, poweroff, halt) as a pure state
//! machine, plus the final system calls.
//!
//! The sequence (DESIGN.md "init", docs/PROTOCOL.md "Stopping the chain"):
//! 1. `SIGTERM` to the restarter, which stops every service in reverse
//!    dependency order; wait for it at most `[init] stop_timeout` (then
//!    `SIGKILL` it). The loop keeps running meanwhile: it reaps, beats to
//!    watchdogd, and still restarts watchdogd should it die, so the hardware
//!    is petted for as long as init is healthy.
//! 2. `kill(-1, SIGTERM)`: everything else, watchdogd included. watchdogd
//!    exits without the magic close, so the armed hardware bounds a hung
//!    shutdown from here on.
//! 3. Wait `[init] kill_grace`, or less when no process is left.
//! 4. `kill(-1, SIGKILL)` (skipped when nothing is left), then wait until
//!    `waitpid` says no process is left (`ECHILD`), at most [`REAP_WAIT`]:
//!    a process killed is not gone until the kernel has torn it down and
//!    init has reaped it, and until then it may hold files open for
//!    writing, which makes the read-only remount fail with `EBUSY`. The
//!    wait is a phase with a deadline, like the others: the loop keeps
//!    polling and reaping, nothing sleeps.
//! 5. Write the record, `sync`, remount every mounted filesystem read-only
//!    in reverse mount order (from `/proc/self/mountinfo`, so `/var` before
//!    `/`), logging any that refuse, then `reboot(2)`.
//!
//! Decisions where the design is silent:
//! - The record is written twice: when the sequence starts (so a shutdown
//!   that hangs and ends in a hardware reset still says who asked), and again
//!   after `kill(-1, SIGKILL)`, when watchdogd can no longer overwrite it
//!   (it may have recorded a stale layer meanwhile). It is written before the
//!   read-only remount, since the state directory is usually on `/`.
//! - The first request wins; later ones (another signal, another `R`) are
//!   logged and ignored.
//! - If `reboot(2)` returns (it should not), the failure is logged and the
//!   call retried every [`REBOOT_RETRY`]; the loop keeps reaping.
//! - The read-only remount is done only as PID 1 of the machine: in a mount
//!   namespace, `MS_REMOUNT` would change the host's superblocks.
//! - Remounted: every mount not already read-only whose filesystem keeps
//!   data beyond this boot; filesystems that live in memory or are views of
//!   the kernel (`proc`, `sysfs`, `tmpfs`, `devtmpfs`, `rootfs` of an
//!   initramfs, ... [`VOLATILE`]) are left alone: nothing on them survives
//!   the reboot, and some refuse. A filesystem that refuses is logged and the
//!   rest are still tried; the journal of an ext4 left read-write is
//!   replayed at the next mount.
//! - Processes still there after [`REAP_WAIT`] (stuck in uninterruptible
//!   sleep, e.g. on a dead NFS server) are logged and the sequence goes on:
//!   the remount may then refuse for their filesystem, and the hardware
//!   watchdog (armed, no longer petted) bounds everything anyway.

use std::fmt;
use std::time::Duration;

use tether_common::clock::MonoTime;

use crate::layers::Human;
use tether_common::record;

/// What a shutdown ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Reboot,
    Poweroff,
    Halt,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        self.as_record().as_str()
    }

    /// The `cause=` of the reset-reason record.
    pub fn as_record(self) -> record::Cause {
        match self {
            Cause::Reboot => record::Cause::Reboot,
            Cause::Poweroff => record::Cause::Poweroff,
            Cause::Halt => record::Cause::Halt,
        }
    }
}

/// Interval between two `reboot(2)` attempts should one fail.
pub const REBOOT_RETRY: Duration = Duration::from_secs(5);
/// Longest wait after `kill(-1, SIGKILL)` for every process to be reaped
/// (defined with the budget, whose orderly-reboot bound counts it).
pub use tether_common::budget::REAP_WAIT;
/// Filesystem types the read-only remount leaves alone (see the module doc).
pub const VOLATILE: &[&str] = &[
    "rootfs",
    "ramfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "mqueue",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "binfmt_misc",
    "autofs",
    "nsfs",
    "rpc_pipefs",
    "efivarfs",
    "pstore",
];
/// Most mounts the remount step looks at (a bounded read of mountinfo).
pub const MAX_MOUNTS: usize = 4096;
/// Most steps one call returns.
pub const STEPS_CAP: usize = 6;

/// Who asked for the shutdown and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub cause: Cause,
    /// `restarter`, `signal`, `init`, `watchdogd`.
    pub by: String,
    /// The layer whose budget ran out, if that is why.
    pub layer: Option<String>,
    /// One line: the restarter's reason, the signal and its sender, ...
    pub detail: String,
}

/// `[init] stop_timeout` and `kill_grace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub stop_timeout: Duration,
    pub kill_grace: Duration,
}

/// Where the sequence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `SIGTERM` sent to the restarter; waiting for it until `until`.
    StoppingRestarter { until: MonoTime },
    /// `kill(-1, SIGTERM)` sent; waiting until `until` or until nothing is left.
    Terminating { until: MonoTime },
    /// `kill(-1, SIGKILL)` sent; waiting until nothing is left (`ECHILD`)
    /// or `until`.
    Reaping { until: MonoTime },
    /// The final steps are out; `reboot(2)` is retried at `next_try` should
    /// it fail.
    Finishing { next_try: MonoTime },
}

/// What the loop must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `SIGTERM` to the restarter.
    TermRestarter,
    /// `SIGKILL` to the restarter (it overran `stop_timeout`).
    KillRestarter,
    /// Stop supervising every layer, then `kill(-1, SIGTERM)`.
    TermAll,
    /// `kill(-1, SIGKILL)`, then reap what is there.
    KillAll,
    /// Record, sync, remount read-only, `reboot(2)`.
    Finish,
    Log(Say),
}

/// Log lines of the sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Say {
    AskingRestarter {
        stop_timeout: Duration,
    },
    NoRestarter,
    RestarterStopped {
        took: Duration,
    },
    RestarterOverran {
        stop_timeout: Duration,
    },
    Terminating {
        kill_grace: Duration,
    },
    NothingLeft {
        took: Duration,
    },
    GraceOver {
        kill_grace: Duration,
    },
    /// Every process reaped after `SIGKILL`.
    AllReaped {
        took: Duration,
    },
    /// `REAP_WAIT` over with processes left.
    ReapWaitOver {
        wait: Duration,
    },
    RetryingReboot,
}

impl fmt::Display for Say {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Say::AskingRestarter { stop_timeout } => write!(
                f,
                "asking the restarter to stop the services (SIGTERM), waiting up to {}",
                Human(stop_timeout)
            ),
            Say::NoRestarter => f.write_str("no restarter running: skipping the service stop"),
            Say::RestarterStopped { took } => write!(f, "restarter stopped after {}", Human(took)),
            Say::RestarterOverran { stop_timeout } => {
                write!(
                    f,
                    "restarter still running after stop_timeout {}: SIGKILL",
                    Human(stop_timeout)
                )
            }
            Say::Terminating { kill_grace } => write!(
                f,
                "sending SIGTERM to all processes (watchdogd included, no magic close), grace {}",
                Human(kill_grace)
            ),
            Say::NothingLeft { took } => write!(f, "all processes gone after {}", Human(took)),
            Say::GraceOver { kill_grace } => write!(
                f,
                "kill_grace {} over: SIGKILL to all processes, waiting up to {} until they are reaped",
                Human(kill_grace),
                Human(REAP_WAIT)
            ),
            Say::AllReaped { took } => {
                write!(f, "all processes reaped {} after SIGKILL", Human(took))
            }
            Say::ReapWaitOver { wait } => write!(
                f,
                "processes still there {} after SIGKILL (uninterruptible sleep?): going on; a filesystem they hold may refuse the read-only remount",
                Human(wait)
            ),
            Say::RetryingReboot => f.write_str("retrying reboot(2)"),
        }
    }
}

/// A fixed-capacity list of steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Steps {
    items: [Option<Step>; STEPS_CAP],
    len: usize,
}

impl Steps {
    fn push(&mut self, s: Step) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(s);
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Step> + '_ {
        self.items.iter().take(self.len).filter_map(|s| *s)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A running shutdown.
#[derive(Clone, Debug)]
pub struct Sequence {
    pub request: Request,
    params: Params,
    phase: Phase,
    phase_started: MonoTime,
}

impl Sequence {
    /// Starts the sequence. `restarter_running`: whether there is a
    /// restarter to ask.
    pub fn start(
        now: MonoTime,
        request: Request,
        params: Params,
        restarter_running: bool,
    ) -> (Sequence, Steps) {
        let mut steps = Steps::default();
        let mut seq = Sequence {
            request,
            params,
            phase: Phase::StoppingRestarter {
                until: now + params.stop_timeout,
            },
            phase_started: now,
        };
        if restarter_running {
            steps.push(Step::Log(Say::AskingRestarter {
                stop_timeout: params.stop_timeout,
            }));
            steps.push(Step::TermRestarter);
        } else {
            steps.push(Step::Log(Say::NoRestarter));
            seq.terminate(now, &mut steps);
        }
        (seq, steps)
    }

    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    fn terminate(&mut self, now: MonoTime, steps: &mut Steps) {
        self.phase = Phase::Terminating {
            until: now + self.params.kill_grace,
        };
        self.phase_started = now;
        steps.push(Step::Log(Say::Terminating {
            kill_grace: self.params.kill_grace,
        }));
        steps.push(Step::TermAll);
    }

    fn kill_all(&mut self, now: MonoTime, steps: &mut Steps) {
        self.phase = Phase::Reaping {
            until: now + REAP_WAIT,
        };
        self.phase_started = now;
        steps.push(Step::KillAll);
    }

    fn finish(&mut self, now: MonoTime, steps: &mut Steps) {
        self.phase = Phase::Finishing {
            next_try: now + REBOOT_RETRY,
        };
        self.phase_started = now;
        steps.push(Step::Finish);
    }

    /// The restarter was reaped.
    pub fn restarter_exited(&mut self, now: MonoTime) -> Steps {
        let mut steps = Steps::default();
        if let Phase::StoppingRestarter { .. } = self.phase {
            steps.push(Step::Log(Say::RestarterStopped {
                took: now.saturating_since(self.phase_started),
            }));
            self.terminate(now, &mut steps);
        }
        steps
    }

    /// `waitpid` says init has no child left.
    pub fn nothing_left(&mut self, now: MonoTime) -> Steps {
        let mut steps = Steps::default();
        let took = now.saturating_since(self.phase_started);
        match self.phase {
            Phase::Terminating { .. } => {
                steps.push(Step::Log(Say::NothingLeft { took }));
                self.finish(now, &mut steps);
            }
            Phase::Reaping { .. } => {
                steps.push(Step::Log(Say::AllReaped { took }));
                self.finish(now, &mut steps);
            }
            Phase::StoppingRestarter { .. } | Phase::Finishing { .. } => {}
        }
        steps
    }

    /// Time passed.
    pub fn tick(&mut self, now: MonoTime) -> Steps {
        let mut steps = Steps::default();
        match self.phase {
            Phase::StoppingRestarter { until } if now >= until => {
                steps.push(Step::Log(Say::RestarterOverran {
                    stop_timeout: self.params.stop_timeout,
                }));
                steps.push(Step::KillRestarter);
                self.terminate(now, &mut steps);
            }
            Phase::Terminating { until } if now >= until => {
                steps.push(Step::Log(Say::GraceOver {
                    kill_grace: self.params.kill_grace,
                }));
                self.kill_all(now, &mut steps);
            }
            Phase::Reaping { until } if now >= until => {
                steps.push(Step::Log(Say::ReapWaitOver { wait: REAP_WAIT }));
                self.finish(now, &mut steps);
            }
            Phase::Finishing { next_try } if now >= next_try => {
                steps.push(Step::Log(Say::RetryingReboot));
                self.finish(now, &mut steps);
            }
            _ => {}
        }
        steps
    }

    pub fn next_deadline(&self) -> MonoTime {
        match self.phase {
            Phase::StoppingRestarter { until }
            | Phase::Terminating { until }
            | Phase::Reaping { until } => until,
            Phase::Finishing { next_try } => next_try,
        }
    }
}

/// The `reboot(2)` mode for a cause.
pub fn reboot_mode(cause: Cause) -> nix::sys::reboot::RebootMode {
    use nix::sys::reboot::RebootMode;
    match cause {
        Cause::Reboot => RebootMode::RB_AUTOBOOT,
        Cause::Poweroff => RebootMode::RB_POWER_OFF,
        Cause::Halt => RebootMode::RB_HALT_SYSTEM,
    }
}

/// One line of `/proc/self/mountinfo`, as far as the remount needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The mount point, unescaped (`\040` is a space), as bytes.
    pub point: std::ffi::OsString,
    pub fstype: String,
    /// The per-mount options say `ro`.
    pub read_only: bool,
}

/// Parses `/proc/self/mountinfo` (in mount order); malformed lines are
/// skipped, at most [`MAX_MOUNTS`] kept.
pub fn parse_mountinfo(text: &[u8]) -> Vec<Mount> {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        if out.len() >= MAX_MOUNTS {
            break;
        }
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        // id parent major:minor root point options [optional...] - type source super
        let (Some(point), Some(options)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let Some(dash) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        let Some(fstype) = fields.get(dash + 1) else {
            continue;
        };
        let read_only = options.split(|&b| b == b',').any(|o| o == b"ro");
        out.push(Mount {
            point: std::ffi::OsString::from_vec(unescape(point)),
            fstype: String::from_utf8_lossy(fstype).into_owned(),
            read_only,
        });
    }
    out
}

/// `\ooo` octal escapes of mountinfo (space, tab, newline, backslash).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while let Some(&b) = field.get(i) {
        if b == b'\\' {
            if let Some(d) = field.get(i + 1..i + 4) {
                if d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                    let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                    if let Ok(v) = u8::try_from(v) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The mounts to remount read-only, in the order to do it: reverse mount
/// order (a filesystem mounted on top of another goes first), without
/// read-only ones and [`VOLATILE`] types. A point mounted twice is
/// remounted once, at its last (visible) mount.
pub fn remount_plan(mounts: &[Mount]) -> Vec<Mount> {
    let mut plan: Vec<Mount> = Vec::new();
    for m in mounts.iter().rev() {
        if plan.iter().any(|p| p.point == m.point) {
            continue;
        }
        plan.push(m.clone());
    }
    plan.retain(|m| !m.read_only && !VOLATILE.contains(&m.fstype.as_str()));
    plan
}

/// `mount -o remount,ro POINT`.
pub fn remount_read_only(point: &std::ffi::OsStr) -> nix::Result<()> {
    use nix::mount::{mount, MsFlags};
    mount(
        None::<&str>,
        point,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    fn req() -> Request {
        Request {
            cause: Cause::Reboot,
            by: "restarter".into(),
            layer: None,
            detail: "tetherctl reboot by uid 0".into(),
        }
    }

    fn params() -> Params {
        Params {
            stop_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(3),
        }
    }

    fn actions(s: &Steps) -> Vec<Step> {
        s.iter().filter(|s| !matches!(s, Step::Log(_))).collect()
    }

    #[test]
    fn restarter_is_asked_first_then_everything_else() {
        let (mut seq, s) = Sequence::start(at(0), req(), params(), true);
        assert_eq!(actions(&s), vec![Step::TermRestarter]);
        assert_eq!(seq.next_deadline(), at(30_000));
        assert!(seq.tick(at(29_999)).is_empty());
        let s = seq.restarter_exited(at(1200));
        assert_eq!(actions(&s), vec![Step::TermAll]);
        assert_eq!(seq.phase(), Phase::Terminating { until: at(4200) });
        // A second exit report changes nothing.
        assert!(seq.restarter_exited(at(1300)).is_empty());
    }

    #[test]
    fn restarter_that_overruns_stop_timeout_is_killed() {
        let (mut seq, _) = Sequence::start(at(0), req(), params(), true);
        let s = seq.tick(at(30_000));
        assert_eq!(actions(&s), vec![Step::KillRestarter, Step::TermAll]);
        assert!(s
            .iter()
            .any(|x| matches!(x, Step::Log(Say::RestarterOverran { .. }))));
    }

    #[test]
    fn grace_ends_early_when_nothing_is_left() {
        let (mut seq, s) = Sequence::start(at(0), req(), params(), false);
        assert_eq!(actions(&s), vec![Step::TermAll]);
        assert!(seq.tick(at(2000)).is_empty());
        let s = seq.nothing_left(at(2100));
        assert_eq!(actions(&s), vec![Step::Finish]);
    }

    #[test]
    fn grace_over_means_sigkill_then_finish_once_everything_is_reaped() {
        let (mut seq, _) = Sequence::start(at(0), req(), params(), false);
        // SIGKILL, but no remount yet: the killed may still hold files.
        assert_eq!(actions(&seq.tick(at(3000))), vec![Step::KillAll]);
        assert_eq!(seq.phase(), Phase::Reaping { until: at(5000) });
        assert_eq!(seq.next_deadline(), at(5000));
        assert!(seq.tick(at(4999)).is_empty());
        // ECHILD: every process reaped.
        let s = seq.nothing_left(at(3040));
        assert_eq!(actions(&s), vec![Step::Finish]);
        assert!(s.iter().any(|x| x
            == Step::Log(Say::AllReaped {
                took: Duration::from_millis(40)
            })));
        assert!(seq.nothing_left(at(3050)).is_empty());
        // Finish is repeated only if reboot(2) came back.
        assert!(seq.tick(at(4000)).is_empty());
        assert_eq!(seq.next_deadline(), at(8040));
        let s = seq.tick(at(8040));
        assert_eq!(actions(&s), vec![Step::Finish]);
        assert!(s.iter().any(|x| x == Step::Log(Say::RetryingReboot)));
    }

    #[test]
    fn processes_that_outlive_the_reap_wait_are_logged_and_the_sequence_goes_on() {
        let (mut seq, _) = Sequence::start(at(0), req(), params(), false);
        seq.tick(at(3000));
        let s = seq.tick(at(3000) + REAP_WAIT);
        assert_eq!(actions(&s), vec![Step::Finish]);
        assert!(s
            .iter()
            .any(|x| x == Step::Log(Say::ReapWaitOver { wait: REAP_WAIT })));
    }

    #[test]
    fn nothing_left_after_sigterm_finishes_without_sigkill() {
        let (mut seq, _) = Sequence::start(at(0), req(), params(), false);
        assert_eq!(actions(&seq.nothing_left(at(500))), vec![Step::Finish]);
        assert!(matches!(seq.phase(), Phase::Finishing { .. }));
    }

    const MOUNTINFO: &str = "\
22 1 0:5 / / rw,relatime - rootfs rootfs rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
25 22 0:6 / /dev rw,nosuid,relatime shared:2 - devtmpfs devtmpfs rw,size=10240k
26 22 0:23 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
27 22 254:0 / /var rw,relatime shared:1 - ext4 /dev/vda rw
28 27 254:16 / /var/my\\040data rw - ext4 /dev/vdb rw
29 22 254:32 / /boot ro,relatime - vfat /dev/vdc ro
garbage line
";

    #[test]
    fn mountinfo_lines_are_parsed_with_escapes() {
        let m = parse_mountinfo(MOUNTINFO.as_bytes());
        assert_eq!(m.len(), 8);
        assert_eq!(m[5].point, "/var");
        assert_eq!(m[5].fstype, "ext4");
        assert!(!m[5].read_only);
        assert_eq!(m[6].point, "/var/my data");
        assert!(m[7].read_only);
    }

    #[test]
    fn remount_plan_is_reverse_mount_order_without_volatile_or_read_only_mounts() {
        let plan = remount_plan(&parse_mountinfo(MOUNTINFO.as_bytes()));
        let points: Vec<_> = plan.iter().map(|m| m.point.clone()).collect();
        // The state disk's nested mount first, then /var; rootfs, proc,
        // sysfs, devtmpfs, tmpfs and the read-only /boot are left alone.
        assert_eq!(points, vec!["/var/my data", "/var"]);
        // A disk root is remounted last.
        let text = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:2 / /var rw - xfs /dev/sda2 rw\n";
        let plan = remount_plan(&parse_mountinfo(text.as_bytes()));
        let points: Vec<_> = plan.iter().map(|m| m.point.clone()).collect();
        assert_eq!(points, vec!["/var", "/"]);
    }

    #[test]
    fn a_point_mounted_over_is_remounted_once_at_its_visible_mount() {
        let text = "1 0 8:1 / /data rw - ext4 /dev/sda1 rw\n2 1 0:40 / /data rw - tmpfs tmpfs rw\n";
        // The visible mount is the tmpfs: nothing to remount (the ext4 below
        // cannot be reached by its path).
        assert!(remount_plan(&parse_mountinfo(text.as_bytes())).is_empty());
    }

    #[test]
    fn nothing_left_while_waiting_for_the_restarter_does_not_skip_it() {
        let (mut seq, _) = Sequence::start(at(0), req(), params(), true);
        assert!(seq.nothing_left(at(100)).is_empty());
        assert!(matches!(seq.phase(), Phase::StoppingRestarter { .. }));
    }

    #[test]
    fn reboot_modes_match_causes() {
        use nix::sys::reboot::RebootMode;
        assert_eq!(reboot_mode(Cause::Reboot), RebootMode::RB_AUTOBOOT);
        assert_eq!(reboot_mode(Cause::Poweroff), RebootMode::RB_POWER_OFF);
        assert_eq!(reboot_mode(Cause::Halt), RebootMode::RB_HALT_SYSTEM);
    }
}
