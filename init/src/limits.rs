//! `RLIMIT_NOFILE` for init and its layers (issue 12 item 4).
//!
//! As PID 1 the kernel hands init 1024 (soft) / 4096 (hard) descriptors, and
//! every child inherits that: a restarter holding two output pipes and a
//! notify socket per service tops out near 250 services. So init raises the
//! limit once, at start, before it spawns anything, and the layers inherit
//! it:
//! - hard: `[init] nofile` if set, else `fs.nr_open` (`/proc/sys/fs/nr_open`,
//!   the most the kernel lets any process have); as root (PID 1 is) raising
//!   the hard limit up to `fs.nr_open` works;
//! - soft = hard, for init and the layers (neither uses `select()`). The
//!   restarter gives services the conventional soft limit 1024 back unless
//!   a service's file says otherwise.
//!
//! Decisions: never lowered (a limit already above the target is kept, so a
//! container that was given more keeps it); `[init] nofile` above
//! `fs.nr_open` is cut to `fs.nr_open` (the kernel would refuse it) and
//! logged; without root the hard limit cannot be raised, so init raises the
//! soft limit to the hard one it has. Every failure is logged and init goes
//! on with what it has.

/// What to ask `setrlimit` for: `(soft, hard)`, or `None` if the current
/// limits already meet the target. `configured`: `[init] nofile`;
/// `nr_open`: the kernel's ceiling, if it could be read; `current`: the
/// limits now; `may_raise_hard`: whether the hard limit can be raised (root).
pub fn target(
    configured: Option<u64>,
    nr_open: Option<u64>,
    current: (u64, u64),
    may_raise_hard: bool,
) -> Option<(u64, u64)> {
    let (soft, hard) = current;
    let wanted = match (configured, nr_open) {
        (Some(c), Some(n)) => c.min(n),
        (Some(c), None) => c,
        (None, Some(n)) => n,
        (None, None) => hard,
    };
    let new_hard = if may_raise_hard {
        wanted.max(hard)
    } else {
        hard
    };
    let new_soft = wanted.min(new_hard).max(soft);
    ((new_soft, new_hard) != (soft, hard)).then_some((new_soft, new_hard))
}

/// Parses `/proc/sys/fs/nr_open`.
pub fn parse_nr_open(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID1: (u64, u64) = (1024, 4096);

    #[test]
    fn pid1_defaults_rise_to_nr_open_soft_and_hard() {
        assert_eq!(
            target(None, Some(1_048_576), PID1, true),
            Some((1_048_576, 1_048_576))
        );
    }

    #[test]
    fn the_configured_value_wins_but_never_above_nr_open() {
        assert_eq!(
            target(Some(65_536), Some(1_048_576), PID1, true),
            Some((65_536, 65_536))
        );
        assert_eq!(
            target(Some(4_000_000), Some(1_048_576), PID1, true),
            Some((1_048_576, 1_048_576))
        );
        // nr_open unreadable: the configured value is tried.
        assert_eq!(
            target(Some(65_536), None, PID1, true),
            Some((65_536, 65_536))
        );
    }

    #[test]
    fn limits_are_never_lowered() {
        // A container given more keeps it.
        assert_eq!(
            target(Some(2048), Some(1_048_576), (8192, 8192), true),
            None
        );
        // Hard above the target, soft below: only soft rises.
        assert_eq!(
            target(Some(65_536), Some(1_048_576), (1024, 524_288), true),
            Some((65_536, 524_288))
        );
    }

    #[test]
    fn without_root_soft_rises_to_the_hard_limit() {
        assert_eq!(
            target(None, Some(1_048_576), PID1, false),
            Some((4096, 4096))
        );
        assert_eq!(target(None, None, (4096, 4096), false), None);
    }

    #[test]
    fn nr_open_parsing() {
        assert_eq!(parse_nr_open("1048576\n"), Some(1_048_576));
        assert_eq!(parse_nr_open("0\n"), None);
        assert_eq!(parse_nr_open("lots"), None);
    }
}
