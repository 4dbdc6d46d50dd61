//! `unsafe` wrappers the control server needs that `tether_common::sys` does
//! not have yet (to be moved there by the lead; each block has a `SAFETY:`
//! comment).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `accept4(listener, SOCK_CLOEXEC | SOCK_NONBLOCK)` returning an owned
/// descriptor.
pub fn accept_cloexec_nonblock(listener: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    use nix::sys::socket::{accept4, SockFlag};
    let fd = accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    // SAFETY: accept4 succeeded, so `fd` is a freshly opened descriptor that
    // nothing else in the process owns; the OwnedFd becomes its sole owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
