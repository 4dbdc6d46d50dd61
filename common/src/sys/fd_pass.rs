//! Descriptors over a unix socket (`SCM_RIGHTS`), without blocking: the
//! fd store's two operations (DESIGN.md "Descriptors that outlive the
//! restarter", docs/ADOPTION.md). Received descriptors are owned (and
//! close-on-exec) the moment `recvmsg` returns.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The kernel's limit of descriptors in one message (`SCM_MAX_FD`).
pub const SCM_MAX_FD: usize = 253;

/// Sends `data` with `fds` attached (`MSG_DONTWAIT`): `EAGAIN` when the
/// queue is full, `EINVAL` for more than [`SCM_MAX_FD`] descriptors.
pub fn send_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [io::IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    Ok(sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )?)
}

/// One received message.
#[derive(Debug)]
pub struct Received {
    /// Bytes of data (at most the buffer's length).
    pub len: usize,
    pub fds: Vec<OwnedFd>,
    /// `MSG_CTRUNC`: the kernel dropped descriptors (no room in this
    /// process's table under `RLIMIT_NOFILE`); they are lost for good.
    pub truncated: bool,
}

/// Receives one message into `buf` (`MSG_DONTWAIT | MSG_CMSG_CLOEXEC`);
/// `Ok(None)` when the queue is empty.
pub fn recv_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<Received>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let msg = match recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(m) => m,
        Err(nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let len = msg.bytes;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(list) = c {
            for fd in list {
                // SAFETY: the kernel installed `fd` in this process's table
                // during this recvmsg; no other owner exists yet.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok(Some(Received {
        len,
        fds,
        truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_cross_a_seqpacket_pair() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_fds(a.as_fd(), b"one", &[r.as_fd(), r.as_fd()]).unwrap();
        drop(r);
        let mut buf = [0u8; 16];
        let got = recv_fds(b.as_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(
            (got.len, &buf[..3], got.fds.len(), got.truncated),
            (3, &b"one"[..], 2, false)
        );
        nix::unistd::write(&w, b"x").unwrap();
        let mut one = [0u8; 1];
        assert_eq!(nix::unistd::read(&got.fds[1], &mut one).unwrap(), 1);
        assert!(recv_fds(b.as_fd(), &mut buf).unwrap().is_none());
        let many: Vec<BorrowedFd<'_>> = (0..=SCM_MAX_FD).map(|_| w.as_fd()).collect();
        let e = send_fds(a.as_fd(), b"x", &many).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }
}
