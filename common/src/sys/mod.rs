//! The one home of `unsafe` in tether: thin wrappers over the system calls
//! the safe crates do not cover. Every `unsafe` block carries a `SAFETY:`
//! comment.
//!
//! What lives here:
//! - descriptor flags ([`set_nonblocking`], [`set_cloexec`]);
//! - taking ownership of descriptors inherited from the parent
//!   ([`take_inherited_fd`]), once per descriptor;
//! - ioctls whose argument size is checked against the size encoded in the
//!   request number ([`ioctl_read_int`], [`ioctl_readwrite_int`],
//!   [`ioctl_read_bytes`], [`ioctl_none`]) — used by `watchdog_dev`;
//! - spawning a child with chosen descriptors at fixed numbers
//!   ([`spawn_with_fds`]), and a service's process, started by a
//!   `clone(CLONE_VM | CLONE_VFORK)` whose cost does not grow with the
//!   restarter's descriptors ([`child::Spawner`]);
//! - `accept4` returning an owned descriptor ([`accept_cloexec_nonblock`]);
//! - `pidfd_open` and `pidfd_getfd` ([`pidfd`]);
//! - descriptors over a unix socket, without blocking ([`fd_pass`]).
//!
//! Rust's `Command` does not reset the signal mask: every child started
//! here begins with no signal blocked (the parents block the signals their
//! signalfd reads).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};
use std::sync::Mutex;

pub mod child;
pub mod fd_pass;
pub mod notify_creds;
pub mod pidfd;

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

/// In a child between `fork` and `exec`: unblock every signal and put
/// `SIGPIPE` back to its default. Only async-signal-safe calls on the stack.
///
/// # Safety
/// Call only from a `pre_exec` closure (or another single-threaded
/// context where changing the signal state is intended).
pub(crate) unsafe fn reset_signals_in_child() -> io::Result<()> {
    let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set before pthread_sigmask reads
    // it; both only touch this stack variable and the thread's mask.
    unsafe {
        libc::sigemptyset(empty.as_mut_ptr());
        if libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut()) != 0 {
            return Err(io::Error::other("pthread_sigmask"));
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    Ok(())
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let new = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags & !OFlag::O_NONBLOCK
    };
    if new != flags {
        fcntl(fd, FcntlArg::F_SETFL(new))?;
    }
    Ok(())
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(true)` when taken, `Ok(false)` when
/// another open file description holds it. The lock belongs to `fd`'s open
/// file description and lasts until its last descriptor is closed (there
/// is no unlock here: nix's `Flock` unlocks on drop, which would release a
/// lock other descriptors of the same description are meant to keep).
pub fn flock_exclusive_nonblock(fd: BorrowedFd<'_>) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor borrowed for the call; no memory is
    // passed.
    let r = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Sets or clears `FD_CLOEXEC`.
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD)?);
    let new = if on {
        flags | FdFlag::FD_CLOEXEC
    } else {
        flags & !FdFlag::FD_CLOEXEC
    };
    if new != flags {
        fcntl(fd, FcntlArg::F_SETFD(new))?;
    }
    Ok(())
}

/// Descriptors already taken by [`take_inherited_fd`] in this process.
static TAKEN: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// Takes ownership of a descriptor inherited from the parent at a number
/// named in the environment (`TETHER_HEARTBEATS`, `TETHER_FDS`), and marks it
/// close-on-exec so it goes no further.
///
/// Refuses the standard descriptors 0–2, a descriptor that is not open, and
/// a descriptor already taken by an earlier call (so two `OwnedFd`s never
/// own the same number through this function). The caller must not have
/// wrapped the number some other way (e.g. `File::from_raw_fd`): call this
/// at start-up, before opening anything else, as the daemons do.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "descriptor {} is a standard stream, not an inherited pipe",
                fd
            ),
        ));
    }
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    if taken.contains(&fd) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("descriptor {} was already taken", fd),
        ));
    }
    // SAFETY: F_GETFD only reads the descriptor table entry; any integer is
    // a valid argument (an unused number yields EBADF).
    let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked just above), was inherited
    // across exec, and has not been taken before in this process (checked
    // against TAKEN under its lock); from here on this OwnedFd is its only
    // owner, per this function's contract.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    taken.push(fd);
    drop(taken);
    set_cloexec(owned_as_borrowed(&owned), true)?;
    Ok(owned)
}

fn owned_as_borrowed(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

/// An ioctl request number (`_IOR(...)` etc.), the type the C library takes.
pub type IoctlRequest = nix::sys::ioctl::ioctl_num_type;

/// The argument size encoded in an ioctl request number.
pub fn ioctl_size(request: IoctlRequest) -> usize {
    use nix::sys::ioctl::{SIZEMASK, SIZESHIFT};
    ((request >> SIZESHIFT) & SIZEMASK) as usize
}

/// The direction bits (`nix::sys::ioctl::{NONE, READ, WRITE}`) of a request.
pub fn ioctl_dir(request: IoctlRequest) -> u8 {
    use nix::sys::ioctl::{DIRMASK, DIRSHIFT};
    ((request >> DIRSHIFT) & DIRMASK) as u8
}

fn check_request(request: IoctlRequest, dir: u8, size: usize) -> io::Result<()> {
    if ioctl_dir(request) != dir || ioctl_size(request) != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "ioctl request {:#x} does not take a {}-byte argument in direction {}",
                request, size, dir
            ),
        ));
    }
    Ok(())
}

fn ioctl_result(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An ioctl that reads one `int` (`_IOR(type, nr, int)`), e.g.
/// `WDIOC_GETTIMEOUT`. Refuses a request whose encoded size or direction is
/// not that.
pub fn ioctl_read_int(fd: BorrowedFd<'_>, request: IoctlRequest) -> io::Result<libc::c_int> {
    check_request(
        request,
        nix::sys::ioctl::READ,
        std::mem::size_of::<libc::c_int>(),
    )?;
    let mut value: libc::c_int = 0;
    loop {
        // SAFETY: the request is checked to read exactly size_of::<c_int>()
        // bytes, and `value` is a live, aligned c_int the kernel may write.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut value as *mut libc::c_int) };
        match ioctl_result(r) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(value),
        }
    }
}

/// An ioctl that writes and reads back one `int` (`_IOWR(type, nr, int)`),
/// e.g. `WDIOC_SETTIMEOUT`. Returns the value the kernel left in the argument.
pub fn ioctl_readwrite_int(
    fd: BorrowedFd<'_>,
    request: IoctlRequest,
    value: libc::c_int,
) -> io::Result<libc::c_int> {
    check_request(
        request,
        nix::sys::ioctl::READ | nix::sys::ioctl::WRITE,
        std::mem::size_of::<libc::c_int>(),
    )?;
    let mut v = value;
    loop {
        // SAFETY: the request is checked to read and write exactly
        // size_of::<c_int>() bytes, and `v` is a live, aligned c_int.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut v as *mut libc::c_int) };
        match ioctl_result(r) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                v = value;
                continue;
            }
            Err(e) => return Err(e),
            Ok(_) => return Ok(v),
        }
    }
}

/// An ioctl that reads a structure into `buf` (`_IOR(type, nr, struct)`);
/// `buf.len()` must equal the size encoded in the request. The caller
/// decodes the bytes (no `repr(C)` transmutes here).
pub fn ioctl_read_bytes(
    fd: BorrowedFd<'_>,
    request: IoctlRequest,
    buf: &mut [u8],
) -> io::Result<()> {
    check_request(request, nix::sys::ioctl::READ, buf.len())?;
    loop {
        // SAFETY: the request is checked to write exactly buf.len() bytes,
        // and `buf` is a live, writable slice of that length (u8 has no
        // alignment requirement and every bit pattern is valid).
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, buf.as_mut_ptr()) };
        match ioctl_result(r) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
}

/// Spawns `cmd` with each `(source, target)` descriptor pair duplicated to
/// the fixed number `target` in the child (close-on-exec cleared on exactly
/// those), as init hands heartbeat pipes to its children. Every other
/// descriptor of ours stays closed in the child as long as it is
/// close-on-exec (the rule in tether).
///
/// Targets must be distinct. Sources may overlap targets: every source is
/// first duplicated above the highest target, then moved into place, so one
/// pair never clobbers another's source. Runs after `Command`'s own stdio
/// set-up, so a target of 0–2 would replace that stream.
pub fn spawn_with_fds(cmd: &mut Command, fds: &[(BorrowedFd<'_>, RawFd)]) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    for (i, (_, t)) in fds.iter().enumerate() {
        if *t < 0 || fds[..i].iter().any(|(_, u)| u == t) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("target descriptor {} is negative or given twice", t),
            ));
        }
    }
    let pairs: Vec<(RawFd, RawFd)> = fds.iter().map(|(s, t)| (s.as_raw_fd(), *t)).collect();
    let floor = pairs.iter().map(|&(_, t)| t).max().unwrap_or(2).max(2) + 1;
    // Allocated here, in the parent: the child only writes into it.
    let mut tmp: Vec<RawFd> = vec![-1; pairs.len()];
    // SAFETY: the closure runs in the child between fork and exec; it only
    // resets the signal state and calls fcntl(2) and dup2(2), all
    // async-signal-safe, reads the
    // captured vectors and writes into pre-allocated `tmp` (no allocation,
    // no lock). The source descriptors are borrowed for the whole of this
    // function, so they are open at fork time.
    unsafe {
        cmd.pre_exec(move || {
            reset_signals_in_child()?;
            for (i, &(src, _)) in pairs.iter().enumerate() {
                let r = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, floor);
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
                tmp[i] = r;
            }
            for (i, &(_, target)) in pairs.iter().enumerate() {
                // dup2 leaves FD_CLOEXEC clear on `target`: inherited.
                if libc::dup2(tmp[i], target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // The temporaries are close-on-exec and vanish at exec.
            Ok(())
        });
    }
    cmd.spawn()
}

/// Marks every descriptor from `first` up close-on-exec: whatever init
/// inherited from its parent (a test harness, a container runtime) must not
/// reach its children. `close_range(2)` with `CLOSE_RANGE_CLOEXEC` (Linux
/// 5.11); on older kernels, each descriptor listed in `/proc/self/fd`.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range only changes descriptor flags (CLOSE_RANGE_CLOEXEC
    // closes nothing); no memory is passed.
    let r = unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) {
        return Err(err);
    }
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if fd < 0 || (fd as u32) < first {
            continue;
        }
        // SAFETY: F_GETFD/F_SETFD on a plain integer only touch the
        // descriptor table; an unused number (e.g. the directory's own
        // descriptor, closed by now) yields EBADF, which is ignored.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Puts `SIGPIPE` back to its default action. Rust's runtime ignores it at
/// start-up, and an ignored signal stays ignored over `execve`: a process
/// that execs a program for someone else (the restarter's `--exec-in`
/// helper) calls this first.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL installs no handler, so no code of ours can run on
    // the signal; the call only changes this process's disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn inherited_fd_is_taken_once_and_made_cloexec() {
        // pipe() without flags: as inherited across exec, no FD_CLOEXEC.
        let (r, _w) = nix::unistd::pipe().unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(r);
        let owned = take_inherited_fd(raw).unwrap();
        let flags = nix::fcntl::fcntl(owned.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        assert!(
            take_inherited_fd(raw).is_err(),
            "a second take must be refused"
        );
        assert!(
            take_inherited_fd(1).is_err(),
            "stdout is never a heartbeat pipe"
        );
        assert!(
            take_inherited_fd(100_000).is_err(),
            "an unopened number is refused"
        );
    }

    #[test]
    fn ioctl_wrappers_refuse_mismatched_sizes() {
        let f = std::fs::File::open("/dev/null").unwrap();
        // _IOR('W', 0, 40 bytes) with a 4-byte int: refused before any call.
        let req: IoctlRequest = 0x80285700u32 as IoctlRequest;
        let e = ioctl_read_int(f.as_fd(), req).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let mut small = [0u8; 8];
        assert_eq!(
            ioctl_read_bytes(f.as_fd(), req, &mut small)
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
        // Right size, wrong device: the kernel says ENOTTY.
        let mut right = [0u8; 40];
        let e = ioctl_read_bytes(f.as_fd(), req, &mut right).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    }

    #[test]
    fn spawn_with_fds_places_descriptors_at_fixed_numbers() {
        use std::io::Read;
        let (r1, w1) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (r2, w2) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd.as_fd()).unwrap().st_ino;
        let (ino1, ino2) = (ino(&w1), ino(&w2));
        // Swapped relative to creation order, to exercise sources that
        // overlap targets. The shell lists its own descriptors on stdout.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("printf a >&3; printf b >&4; for f in /proc/$$/fd/*; do echo \"${f##*/} $(readlink $f)\"; done")
            .stdout(std::process::Stdio::piped());
        let child = spawn_with_fds(&mut cmd, &[(w2.as_fd(), 3), (w1.as_fd(), 4)]).unwrap();
        drop(w1);
        drop(w2);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let mut s1 = String::new();
        std::fs::File::from(r1).read_to_string(&mut s1).unwrap();
        let mut s2 = String::new();
        std::fs::File::from(r2).read_to_string(&mut s2).unwrap();
        assert_eq!((s1.as_str(), s2.as_str()), ("b", "a"));
        // Each pipe reached the child at its target only: the temporaries
        // above the targets were close-on-exec.
        let listing = String::from_utf8_lossy(&out.stdout);
        let holders = |ino: u64| -> Vec<String> {
            listing
                .lines()
                .filter(|l| l.ends_with(&format!("pipe:[{}]", ino)))
                .map(|l| l.split(' ').next().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(holders(ino2), vec!["3"], "{listing}");
        assert_eq!(holders(ino1), vec!["4"], "{listing}");
    }

    #[test]
    fn spawn_with_fds_refuses_duplicate_targets() {
        let (_r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut cmd = Command::new("/bin/true");
        let e = spawn_with_fds(&mut cmd, &[(w.as_fd(), 3), (w.as_fd(), 3)]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        // A pipe without O_CLOEXEC, as a parent might leave it.
        let (r, _w) = nix::unistd::pipe().unwrap();
        let flags = || nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags() & libc::FD_CLOEXEC, 0);
        cloexec_from(r.as_raw_fd() as u32).unwrap();
        assert_ne!(flags() & libc::FD_CLOEXEC, 0);
    }
}
