//! `pidfd_open(2)` (Linux 5.3) and `pidfd_getfd(2)` (Linux 5.6): a
//! descriptor for a process, and a copy of one of its descriptors. The
//! tests use them to look at the descriptors init hands its layers (the fd
//! store's sockets cannot be reopened through `/proc/PID/fd`); a restarter
//! may use `pidfd_open` to hold its services by something a reused pid
//! cannot fool.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A pidfd for `pid` (close-on-exec: pidfds always are).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or
    // -1; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd =
        RawFd::try_from(r).map_err(|_| io::Error::other("pidfd_open: descriptor out of range"))?;
    // SAFETY: `fd` was just returned by the kernel as a new descriptor of
    // this process; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A copy of descriptor `target` of the process behind `pidfd` (needs
/// ptrace rights over it, e.g. root). The copy is close-on-exec.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, target: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes three integers and returns a new
    // descriptor or -1; no memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            pidfd.as_raw_fd() as libc::c_long,
            target as libc::c_long,
            0 as libc::c_long,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd =
        RawFd::try_from(r).map_err(|_| io::Error::other("pidfd_getfd: descriptor out of range"))?;
    // SAFETY: as above, a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_copy_of_our_own_descriptor_is_the_same_pipe() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let me = pidfd_open(std::process::id() as i32).unwrap();
        let copy = pidfd_getfd(me.as_fd(), w.as_raw_fd()).unwrap();
        drop(w);
        nix::unistd::write(&copy, b"x").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut buf).unwrap(), 1);
        assert_eq!(&buf, b"x");
        assert!(pidfd_getfd(me.as_fd(), 99_999).is_err());
    }
}
