//! Receiving one datagram with the sender's credentials as the kernel gives
//! them: `SCM_CREDENTIALS` (pid, uid, gid, with `SO_PASSCRED`) and, on
//! Linux 6.5 and later, `SCM_PIDFD` (a pidfd of the sender, with
//! `SO_PASSPIDFD`), plus a liveness test on a pidfd.
//!
//! `nix` 0.30 and `libc` 0.2 know neither `SO_PASSPIDFD` nor `SCM_PIDFD`, so
//! the whole `recvmsg` is done here: that way every descriptor the kernel
//! installs (the pidfd, and any `SCM_RIGHTS` a sender attached) is owned or
//! closed in the one function that received it.
//!
//! The numbers come from the kernel's uapi headers:
//! `include/uapi/asm-generic/socket.h` (`SO_PASSPIDFD 76`) and
//! `include/linux/socket.h` (`SCM_PIDFD 0x04`); `SO_PASSPIDFD` has the
//! generic value on x86, arm and riscv (the architectures tether builds for).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `setsockopt(SOL_SOCKET, SO_PASSPIDFD)`: Linux ≥ 6.5.
pub const SO_PASSPIDFD: libc::c_int = 76;
/// The control message type carrying the sender's pidfd.
pub const SCM_PIDFD: libc::c_int = 0x04;

/// The most descriptors the kernel passes in one message (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// Asks the kernel to attach a pidfd of the sender to every datagram.
/// `Ok(false)` when the kernel does not know the option (before 6.5).
pub fn enable_pass_pidfd(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int and its exact size is passed; the kernel
    // only reads it. An unknown option yields ENOPROTOOPT, nothing else.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSPIDFD,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOPROTOOPT) | Some(libc::EINVAL) => Ok(false),
        _ => Err(e),
    }
}

/// What the kernel said about the sender's pidfd.
#[derive(Debug)]
pub enum SenderPidfd {
    /// No `SCM_PIDFD` came (kernel before 6.5, or the option is off).
    NotSent,
    /// The kernel could not make one (it sends `-errno` in place of a
    /// descriptor, e.g. `-ESRCH` when the sender was already reaped).
    Failed(i32),
    /// A pidfd of the sender (close-on-exec).
    Fd(OwnedFd),
}

/// One received datagram.
#[derive(Debug)]
pub struct Datagram {
    /// Bytes the datagram had (may exceed the buffer: see `truncated`).
    pub len: usize,
    /// `MSG_TRUNC`: the datagram was longer than the buffer.
    pub truncated: bool,
    /// `(pid, uid, gid)` from `SCM_CREDENTIALS`.
    pub creds: Option<(i32, u32, u32)>,
    pub pidfd: SenderPidfd,
    /// `SCM_RIGHTS` descriptors that came with it (already closed).
    pub fds_closed: usize,
}

/// Bytes of control buffer for credentials, a pidfd and `SCM_MAX_FD`
/// descriptors.
fn cmsg_space() -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    unsafe {
        libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as u32) as usize
            + libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize
            + libc::CMSG_SPACE((std::mem::size_of::<libc::c_int>() * SCM_MAX_FD) as u32) as usize
    }
}

/// Receives one datagram without blocking (`MSG_DONTWAIT | MSG_TRUNC |
/// MSG_CMSG_CLOEXEC`) into `buf`. Descriptors passed with `SCM_RIGHTS` are
/// closed at once; the pidfd, if any, is returned owned.
pub fn recv_datagram(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Datagram> {
    // u64 elements: aligned for cmsghdr.
    let mut control = vec![0u64; cmsg_space().div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() * 8;
    // SAFETY: msg points at `iov` (describing `buf`) and `control`, all live
    // and exclusively borrowed for the call; the kernel writes at most their
    // stated lengths.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Datagram {
        len: n as usize,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        creds: None,
        pidfd: SenderPidfd::NotSent,
        fds_closed: 0,
    };
    // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR walk the control buffer the kernel
    // filled, within msg_controllen; each header's data is read within its
    // cmsg_len (checked before every read).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let hdr = &*c;
            let data = libc::CMSG_DATA(c);
            let data_len = (hdr.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            if hdr.cmsg_level == libc::SOL_SOCKET {
                match hdr.cmsg_type {
                    libc::SCM_CREDENTIALS if data_len >= std::mem::size_of::<libc::ucred>() => {
                        let uc = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                        out.creds = Some((uc.pid, uc.uid, uc.gid));
                    }
                    SCM_PIDFD if data_len >= std::mem::size_of::<libc::c_int>() => {
                        let v = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                        out.pidfd = if v >= 0 {
                            // The kernel installed this descriptor in our
                            // table for this message; nothing else knows
                            // its number, so this OwnedFd is its only owner.
                            SenderPidfd::Fd(OwnedFd::from_raw_fd(v))
                        } else {
                            SenderPidfd::Failed(-v)
                        };
                    }
                    libc::SCM_RIGHTS => {
                        let count = data_len / std::mem::size_of::<libc::c_int>();
                        for i in 0..count {
                            let v: RawFd =
                                std::ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                            if v >= 0 {
                                // Installed for us by this recvmsg, owned
                                // by nobody else: closed once, here.
                                drop(OwnedFd::from_raw_fd(v));
                                out.fds_closed += 1;
                            }
                        }
                    }
                    _ => {}
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(out)
}

/// Whether the process a pidfd refers to still exists (not yet reaped):
/// `pidfd_send_signal(fd, 0)`. While it exists its pid cannot be reused, so
/// a lookup by pid made before a `true` here was about this process.
pub fn pidfd_alive(pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: pidfd_send_signal with signal 0 and a null siginfo only checks
    // that the target exists and may be signalled; it reads no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ESRCH) => Ok(false),
        // Exists, but we may not signal it (a restarter not run as root).
        Some(libc::EPERM) => Ok(true),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    fn pair() -> (UnixDatagram, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        nix::sys::socket::setsockopt(&b, nix::sys::socket::sockopt::PassCred, &true).unwrap();
        (a, b)
    }

    #[test]
    fn credentials_and_a_live_pidfd_of_the_sender_arrive() {
        let (a, b) = pair();
        let pidfd_supported = enable_pass_pidfd(b.as_fd()).unwrap();
        a.send(b"hello").unwrap();
        let mut buf = [0u8; 16];
        let d = recv_datagram(b.as_fd(), &mut buf).unwrap();
        assert_eq!(d.len, 5);
        assert!(!d.truncated);
        assert_eq!(&buf[..5], b"hello");
        let (pid, uid, _gid) = d.creds.expect("SO_PASSCRED gives credentials");
        assert_eq!(pid, std::process::id() as i32);
        assert_eq!(uid, nix::unistd::geteuid().as_raw());
        match d.pidfd {
            SenderPidfd::Fd(fd) => {
                assert!(pidfd_supported);
                assert!(pidfd_alive(fd.as_fd()).unwrap(), "we are alive");
            }
            other => assert!(!pidfd_supported, "kernel has SO_PASSPIDFD, got {other:?}"),
        }
    }

    #[test]
    fn a_sender_that_was_reaped_has_no_live_pidfd() {
        let dir = std::env::temp_dir().join(format!("tether-creds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let b = UnixDatagram::bind(&path).unwrap();
        nix::sys::socket::setsockopt(&b, nix::sys::socket::sockopt::PassCred, &true).unwrap();
        let supported = enable_pass_pidfd(b.as_fd()).unwrap();
        let st = std::process::Command::new("perl")
            .arg("-MSocket")
            .arg("-e")
            .arg("socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die $!; send($s, 'x', 0, pack_sockaddr_un($ARGV[0])) or die $!;")
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        let mut buf = [0u8; 4];
        let d = recv_datagram(b.as_fd(), &mut buf).unwrap();
        assert!(d.creds.is_some());
        match d.pidfd {
            SenderPidfd::Fd(fd) => assert!(!pidfd_alive(fd.as_fd()).unwrap()),
            SenderPidfd::Failed(e) => assert!(supported && e > 0),
            SenderPidfd::NotSent => assert!(!supported),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn truncation_is_reported_and_passed_descriptors_are_closed() {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::io::IoSlice;
        let (a, b) = pair();
        let (r, w) = nix::unistd::pipe().unwrap();
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"0123456789")],
            &[ControlMessage::ScmRights(&[w.as_raw_fd(); 3])],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        drop(w);
        let mut buf = [0u8; 4];
        let d = recv_datagram(b.as_fd(), &mut buf).unwrap();
        assert!(d.truncated);
        assert_eq!(d.fds_closed, 3);
        let mut one = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut one), Ok(0), "every copy closed");
    }
}
