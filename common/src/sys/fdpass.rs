//! Descriptors passed over a unix socket (`SCM_RIGHTS`) and process
//! descriptors (`pidfd_open`): what the restarter needs to hand its
//! services' descriptors to init's fd store and to watch processes that are
//! not its children (DESIGN.md, "Descriptors that outlive the restarter").

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// At most this many descriptors in one message (the kernel's `SCM_MAX_FD`
/// is 253).
pub const MAX_FDS: usize = 64;

/// Sends `payload` with `fds` attached (`SCM_RIGHTS`) in one message on
/// the `SOCK_SEQPACKET` socket `sock`, without blocking (`MSG_DONTWAIT`).
pub fn send_with_fds(
    sock: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [io::IoSlice::new(payload)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, flags, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Receives one message from `sock` without blocking: its bytes (up to
/// `max` of them) and the descriptors it carried, close-on-exec
/// (`MSG_CMSG_CLOEXEC`). `Ok(None)` when nothing is queued.
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    max: usize,
) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; max];
    // CMSG_SPACE(MAX_FDS * sizeof(int)), rounded up generously.
    let mut cbuf = vec![0u8; 64 + MAX_FDS * std::mem::size_of::<libc::c_int>()];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    loop {
        // SAFETY: msghdr is plain data; zeroed is a valid (empty) value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.len() as _;
        // SAFETY: msg points at buffers that live across the call (buf,
        // cbuf, iov), with their true lengths.
        let n = unsafe {
            libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(None),
                _ => return Err(e),
            }
        }
        let mut fds = Vec::new();
        // SAFETY: the CMSG_* macros walk the control buffer the kernel just
        // filled, within msg_controllen; each SCM_RIGHTS payload is an array
        // of descriptors now open in this process and owned by nobody else,
        // read unaligned since the buffer is bytes.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / std::mem::size_of::<libc::c_int>() {
                        let fd = std::ptr::read_unaligned(data.add(i));
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if n == 0 && fds.is_empty() && msg.msg_flags & libc::MSG_CTRUNC == 0 {
            // A zero-length message carries nothing we use; keep going.
            continue;
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            // Descriptors beyond the buffer were closed by the kernel.
            log_truncated();
        }
        buf.truncate(n as usize);
        return Ok(Some((buf, fds)));
    }
}

fn log_truncated() {
    log::warn!("fd store: a message carried more than {MAX_FDS} descriptors: the rest were closed");
}

/// `pidfd_open(pid, 0)`, close-on-exec (as every pidfd): readable
/// (`POLLIN`) once the process has exited.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, touches no memory of ours;
    // on success the result is a new descriptor owned by nobody else.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor just returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `SO_SNDBUFFORCE` (needs `CAP_NET_ADMIN`), else `SO_SNDBUF` (bounded by
/// `net.core.wmem_max`): the send buffer of `sock`, which bounds what one
/// side of a socket pair may have queued. Returns the size then in effect.
pub fn raise_sndbuf(sock: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let v: libc::c_int = bytes.min(i32::MAX as usize) as libc::c_int;
    let set = |opt| {
        // SAFETY: setsockopt reads sizeof(int) bytes from &v, which lives
        // across the call.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_SNDBUFFORCE) < 0 && set(libc::SO_SNDBUF) < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most len bytes into got.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(got.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_queue_in_a_socket_pair_and_come_back() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_with_fds(a.as_fd(), b"svc out", &[r.as_fd(), w.as_fd()]).unwrap();
        drop(r);
        nix::unistd::write(&w, b"x").unwrap();
        drop(w);
        let (bytes, fds) = recv_with_fds(b.as_fd(), 256).unwrap().unwrap();
        assert_eq!(bytes, b"svc out");
        assert_eq!(fds.len(), 2);
        let mut buf = [0u8; 4];
        assert_eq!(nix::unistd::read(&fds[0], &mut buf).unwrap(), 1);
        assert!(recv_with_fds(b.as_fd(), 256).unwrap().is_none());
    }

    #[test]
    fn a_pidfd_of_ourselves_is_open() {
        assert!(pidfd_open(std::process::id() as i32).is_ok());
        assert!(pidfd_open(-5).is_err());
    }
}
