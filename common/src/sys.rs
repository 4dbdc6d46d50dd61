//! The one home of `unsafe` in tether: thin wrappers over the system calls
//! the safe crates do not cover. Every `unsafe` block carries a `SAFETY:`
//! comment.

use std::os::fd::BorrowedFd;

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let new = if on { flags | OFlag::O_NONBLOCK } else { flags & !OFlag::O_NONBLOCK };
    if new != flags {
        fcntl(fd, FcntlArg::F_SETFL(new))?;
    }
    Ok(())
}
