//! Standard streams for PID 1.
//!
//! The kernel starts init with descriptors 0–2 on `/dev/console` when the
//! root filesystem (or initramfs) has that node; when it does not, they are
//! closed. Rust's runtime then opens `/dev/null` on each closed one before
//! `main` (and *aborts* the process if `/dev/null` cannot be opened either:
//! an initramfs for tether-init must hold `/dev/console` and `/dev/null`
//! nodes, or the kernel must mount devtmpfs on `/dev`).
//!
//! [`ensure_std_fds`] runs after the mounts, so `/dev` is there:
//! - any standard descriptor still closed gets `/dev/console` (falling back
//!   to `/dev/null`), so that the first pipe init creates never lands on 0;
//! - as PID 1 of the machine, one that is `/dev/null` (the runtime's
//!   stand-in) is moved to `/dev/console`, so init's and the layers' stderr
//!   reach the console.
//!
//! Valid descriptors elsewhere (a namespace started by a test, a container,
//! a shell) are left alone.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};

use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::{fstat, major, minor, Mode, SFlag};

/// Opens `/dev/console`, else `/dev/null`, read-write, close-on-exec.
fn open_console() -> nix::Result<(OwnedFd, &'static str)> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    match open("/dev/console", flags, Mode::empty()) {
        Ok(fd) => Ok((fd, "/dev/console")),
        Err(_) => open("/dev/null", flags, Mode::empty()).map(|fd| (fd, "/dev/null")),
    }
}

/// What a standard descriptor is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdFd {
    Closed,
    /// `/dev/null` (character device 1:3).
    Null,
    Other,
}

fn probe(fd: BorrowedFd<'_>) -> StdFd {
    if fcntl(fd, FcntlArg::F_GETFD).is_err() {
        return StdFd::Closed;
    }
    match fstat(fd) {
        Ok(st) => {
            let is_chr = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
            if is_chr && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3 {
                StdFd::Null
            } else {
                StdFd::Other
            }
        }
        Err(_) => StdFd::Other,
    }
}

/// Whether to replace a descriptor in this state.
pub fn should_replace(state: StdFd, machine: bool) -> bool {
    match state {
        StdFd::Closed => true,
        StdFd::Null => machine,
        StdFd::Other => false,
    }
}

/// Puts `/dev/console` on each standard descriptor that needs it (see the
/// module docs). Returns log lines (the logger may not be up yet).
pub fn ensure_std_fds(machine: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for target in 0..3 {
        let state = match target {
            0 => probe(std::io::stdin().as_fd()),
            1 => probe(std::io::stdout().as_fd()),
            _ => probe(std::io::stderr().as_fd()),
        };
        if !should_replace(state, machine) {
            continue;
        }
        let (fd, what) = match open_console() {
            Ok(x) => x,
            Err(e) => {
                lines.push(format!(
                    "descriptor {} is {:?} and no console could be opened: {}",
                    target, state, e
                ));
                continue;
            }
        };
        if fd.as_raw_fd() == target {
            // It landed on the closed number itself: keep it, inheritable.
            if let Err(e) = tether_common::sys::set_cloexec(fd.as_fd(), false) {
                lines.push(format!(
                    "descriptor {}: could not clear close-on-exec: {}",
                    target, e
                ));
            }
            let _ = fd.into_raw_fd();
        } else {
            let r = match target {
                0 => nix::unistd::dup2_stdin(&fd),
                1 => nix::unistd::dup2_stdout(&fd),
                _ => nix::unistd::dup2_stderr(&fd),
            };
            if let Err(e) = r {
                lines.push(format!(
                    "descriptor {}: dup2 of {} failed: {}",
                    target, what, e
                ));
                continue;
            }
        }
        lines.push(format!(
            "descriptor {} was {:?}: now {}",
            target, state, what
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_null_is_recognised() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(probe(f.as_fd()), StdFd::Null);
        let z = std::fs::File::open("/dev/zero").unwrap();
        assert_eq!(probe(z.as_fd()), StdFd::Other);
    }

    #[test]
    fn only_the_machine_trades_dev_null_for_the_console() {
        assert!(should_replace(StdFd::Closed, false));
        assert!(should_replace(StdFd::Closed, true));
        assert!(should_replace(StdFd::Null, true));
        assert!(!should_replace(StdFd::Null, false));
        assert!(!should_replace(StdFd::Other, true));
    }
}
