//! Starting a service's process: [`Spawner`], a `posix_spawn`-style
//! `clone(CLONE_VM | CLONE_VFORK)` whose cost does not grow with the number
//! of descriptors the restarter holds.
//!
//! Why not `std::process::Command`: `fork` copies the whole descriptor
//! table (the restarter holds about five descriptors per service) and the
//! child's `exec` then closes every close-on-exec one, while the parent
//! waits for the `exec`. At 1000 services that made one start cost about
//! 2 ms, nearly all of it in `dup_fd` and `do_close_on_exec` (measured with
//! `perf` in the issue #7 benchmark).
//!
//! How: the child shares the parent's memory and descriptor table
//! (`CLONE_VM | CLONE_FILES | CLONE_VFORK`; the parent is suspended until
//! the child calls `execve` or exits) and runs on a 64 KiB stack of its own
//! with a guard page below it. The child's first act is
//! `close_range(K, ~0, CLOSE_RANGE_UNSHARE)`: the kernel gives it a table
//! of its own holding only descriptors below `K`, without copying or
//! closing the rest. `K` is one above the [`Spawner`]'s six *slots*,
//! descriptors reserved when the spawner is made (early, so their numbers
//! are low): before each start the parent points the slots at the service's
//! stdin (`/dev/null`), stdout, stderr, `cgroup.procs`, the record file
//! ([`Record`]) and the descriptor handed to the program
//! ([`ChildSetup::pass_fd`]) with `dup3`, and the child moves the first
//! three to 0, 1, 2 and clears close-on-exec on the last (in its own table:
//! the parent's stays close-on-exec). The few other descriptors below `K`
//! are close-on-exec. On a kernel without `CLOSE_RANGE_UNSHARE` (before 5.9)
//! the child falls back to `unshare(CLONE_FILES)`, a full copy.
//!
//! Everything the child needs is computed in the parent ([`ChildSetup`],
//! [`ExecSpec`]): the child makes raw system calls on pre-allocated data —
//! no allocation, no lock, no glibc wrapper that consults process state
//! (glibc's `setuid` would signal the parent's other threads). It reports a
//! failed step's errno through the shared memory, then exits with 127; the
//! parent reaps it and returns the error. Signals: the parent blocks every
//! signal around `clone`; the child puts every caught signal back to its
//! default (a handler must not run on the parent's memory), sets `SIGPIPE`
//! to default (Rust ignores it) and unblocks everything before `execve`.
//!
//! Like `posix_spawn` (and `Command::spawn` before it), the caller waits
//! until the child has called `execve` — that is what reports a missing
//! binary's errno synchronously. The wait covers the child's set-up and the
//! kernel's loading of the program: p50 0.09–0.15 ms for a static binary on
//! the benchmark machine whatever the number of services
//! (`integration/src/bin/bench_spawn.rs`), longer on slow storage — and
//! forever on a hung mount, which is why the restarter only ever execs its
//! own binary here, an exec helper that execs the program
//! (`tether_restarter::spawn::exec_status`; [`ChildSetup::pass_fd`] hands it
//! its status pipe). The restarter beats between starts of a long batch
//! (`maybe_beat`).
//!
//! `exec` search: the caller passes the candidate paths (one for a path
//! with a `/`, else one per `PATH` entry); the child tries them in order
//! like `execvp`, skipping `ENOENT`, `ENOTDIR` and `EACCES` (reported only
//! if nothing else was found). Unlike glibc's `execvp` a file without a
//! recognised format (`ENOEXEC`) is a start failure, not run by `/bin/sh`.

use std::ffi::{c_void, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// One resource limit to set in the child (soft and hard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    /// `libc::RLIMIT_*`.
    pub resource: libc::__rlimit_resource_t,
    pub soft: libc::rlim_t,
    pub hard: libc::rlim_t,
}

/// A line the child appends to a file as soon as it leads its own session,
/// before any step that can fail or take time, so that the process is on
/// record even if the parent dies the next instant (an OOM kill in the
/// middle of a batch of starts): `PREFIX PID PID START_TIME SUFFIX`, where
/// `START_TIME` is field 22 of `/proc/self/stat` (`0` when `/proc` cannot
/// be read). One `write(2)` on a file opened with `O_APPEND`, so lines of
/// successive children never interleave. A failed write is ignored (the
/// caller records the pid itself after the start, as before).
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// The file, open for writing with `O_APPEND`; must stay open until
    /// [`Spawner::spawn`] returns.
    pub fd: RawFd,
    pub prefix: Vec<u8>,
    pub suffix: Vec<u8>,
}

/// Longest record line; a longer one is not written.
pub const RECORD_MAX: usize = 512;

/// What the child does before `exec`, in this order: signals back to
/// default and unblocked, new session (and so its own process group), the
/// record line, join the cgroup, resource limits, umask, supplementary
/// groups, gid, uid, working directory.
#[derive(Clone, Debug, Default)]
pub struct ChildSetup {
    /// See [`Record`].
    pub record: Option<Record>,
    /// `cgroup.procs` of the service's cgroup, open for writing in the
    /// parent; the child writes `0` (itself) into it. A failure is ignored:
    /// the process group still bounds the service. Must stay open until
    /// [`Spawner::spawn`] returns.
    pub cgroup_procs: Option<RawFd>,
    pub rlimits: Vec<Rlimit>,
    pub umask: Option<libc::mode_t>,
    /// Supplementary groups (set when a user or group is given).
    pub groups: Option<Vec<libc::gid_t>>,
    pub gid: Option<libc::gid_t>,
    pub uid: Option<libc::uid_t>,
    pub chdir: Option<CString>,
    /// A descriptor the program inherits, at the number
    /// [`Spawner::pass_fd_number`] (the restarter's exec helper gets the
    /// write end of its status pipe so). Must stay open until
    /// [`Spawner::spawn`] returns.
    pub pass_fd: Option<RawFd>,
}

/// The program, its arguments and environment, and its output.
pub struct ExecSpec<'a> {
    /// Paths to try in order (see the module docs); at least one.
    pub candidates: &'a [CString],
    /// `argv`, `argv[0]` included; at least one.
    pub argv: &'a [CString],
    /// `NAME=value` strings.
    pub envp: &'a [CString],
    pub stdout: BorrowedFd<'a>,
    pub stderr: BorrowedFd<'a>,
}

/// Slot indices.
const STDIN: usize = 0;
const STDOUT: usize = 1;
const STDERR: usize = 2;
const CGROUP: usize = 3;
const RECORD: usize = 4;
const PASS: usize = 5;
/// How many slots.
const SLOTS: usize = 6;

/// The child's stack: the child runs only the small function below and raw
/// system calls.
const STACK_SIZE: usize = 64 * 1024;

/// The child's stack: an anonymous mapping with an inaccessible guard page
/// below it, so an overflow faults in the child instead of writing over
/// the parent's memory (which the child shares).
struct ChildStack {
    base: *mut c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        // SAFETY: sysconf takes an integer.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => 4096,
        };
        let len = STACK_SIZE + page;
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of the mapping made above, which nothing
        // uses yet.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The 16-byte aligned top (stacks grow down on the architectures
    /// tether targets).
    fn top(&self) -> *mut c_void {
        ((self.base as usize + self.len) & !15) as *mut c_void
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, used by no one
        // once the spawner is dropped.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

/// Starts services' processes; see the module docs. Make it early, before
/// the descriptors that grow with the number of services.
pub struct Spawner {
    /// Where idle slots point (stdin of every service).
    null: OwnedFd,
    slots: [OwnedFd; SLOTS],
    /// One above the highest slot: the child keeps descriptors below it.
    keep_below: u32,
    stack: ChildStack,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("keep_below", &self.keep_below)
            .finish()
    }
}

/// Everything the child reads, on the parent's stack for the `clone`.
struct ChildCtx<'a> {
    keep_below: u32,
    slots: [RawFd; SLOTS],
    has_cgroup: bool,
    has_record: bool,
    has_pass: bool,
    setup: &'a ChildSetup,
    candidates: &'a [CString],
    /// Null-terminated arrays of pointers into the caller's strings.
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// The errno of the step that failed (0: none; the child exec'd).
    err: AtomicI32,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The `char *const[]` of `execve`: pointers into `strings`, then null.
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// `dup3(src, dst, O_CLOEXEC)`.
fn point(dst: &OwnedFd, src: RawFd) -> io::Result<()> {
    // SAFETY: dup3 takes two integers; `dst` is a descriptor this process
    // owns (a slot), so replacing what it refers to affects no other owner.
    cvt(unsafe { libc::dup3(src, dst.as_raw_fd(), libc::O_CLOEXEC) }).map(drop)
}

impl Spawner {
    /// Reserves the slots: six close-on-exec descriptors numbered 3 or
    /// more, pointing at `/dev/null` (or, without `/dev`, at the read end of
    /// a pipe whose write end is closed — also an empty input).
    pub fn new() -> io::Result<Spawner> {
        let null: OwnedFd = match std::fs::File::open("/dev/null") {
            Ok(f) => f.into(),
            Err(_) => {
                let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                r
            }
        };
        let dup = || -> io::Result<OwnedFd> {
            // SAFETY: fcntl takes integers; F_DUPFD_CLOEXEC opens a new
            // descriptor numbered 3 or more.
            let fd = cvt(unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
            // SAFETY: `fd` was just opened and nothing else owns it; the
            // OwnedFd becomes its sole owner.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let slots = [dup()?, dup()?, dup()?, dup()?, dup()?, dup()?];
        let keep_below = slots.iter().map(|s| s.as_raw_fd()).max().unwrap_or(2) as u32 + 1;
        Ok(Spawner {
            null,
            slots,
            keep_below,
            stack: ChildStack::new()?,
        })
    }

    /// One above the highest descriptor a child starts with before `exec`
    /// (for tests and diagnostics).
    pub fn keep_below(&self) -> u32 {
        self.keep_below
    }

    /// The number at which the program finds [`ChildSetup::pass_fd`] (the
    /// same for every start of this spawner).
    pub fn pass_fd_number(&self) -> RawFd {
        self.slots[PASS].as_raw_fd()
    }

    /// Starts `exec` after `setup` in a new process, a child of this one.
    /// Returns its pid once it has called `execve`; a failed step or
    /// `execve` comes back as the error (with its errno), the child reaped.
    pub fn spawn(&mut self, exec: &ExecSpec<'_>, setup: &ChildSetup) -> io::Result<i32> {
        if exec.candidates.is_empty() || exec.argv.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no program to run",
            ));
        }
        let argv = null_terminated(exec.argv);
        let envp = null_terminated(exec.envp);
        let r = self.point_slots(exec, setup).and_then(|()| {
            let ctx = ChildCtx {
                keep_below: self.keep_below,
                slots: [
                    self.slots[STDIN].as_raw_fd(),
                    self.slots[STDOUT].as_raw_fd(),
                    self.slots[STDERR].as_raw_fd(),
                    self.slots[CGROUP].as_raw_fd(),
                    self.slots[RECORD].as_raw_fd(),
                    self.slots[PASS].as_raw_fd(),
                ],
                has_cgroup: setup.cgroup_procs.is_some(),
                has_record: setup.record.is_some(),
                has_pass: setup.pass_fd.is_some(),
                setup,
                candidates: exec.candidates,
                argv: argv.as_ptr(),
                envp: envp.as_ptr(),
                err: AtomicI32::new(0),
            };
            self.clone_child(&ctx)
        });
        // Idle slots hold nothing of a service's: a removed service's pipes
        // must reach EOF, its cgroup file must not stay open. (The stdin
        // slot always points at `null`.)
        for slot in &self.slots[STDOUT..] {
            let _ = point(slot, self.null.as_raw_fd());
        }
        r
    }

    fn point_slots(&self, exec: &ExecSpec<'_>, setup: &ChildSetup) -> io::Result<()> {
        point(&self.slots[STDOUT], exec.stdout.as_raw_fd())?;
        point(&self.slots[STDERR], exec.stderr.as_raw_fd())?;
        if let Some(fd) = setup.cgroup_procs {
            point(&self.slots[CGROUP], fd)?;
        }
        if let Some(r) = &setup.record {
            point(&self.slots[RECORD], r.fd)?;
        }
        if let Some(fd) = setup.pass_fd {
            point(&self.slots[PASS], fd)?;
        }
        Ok(())
    }

    fn clone_child(&mut self, ctx: &ChildCtx<'_>) -> io::Result<i32> {
        let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset initialises `all` before pthread_sigmask reads
        // it; pthread_sigmask writes the previous mask into `old`.
        let blocked = unsafe {
            libc::sigfillset(all.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr()) == 0
        };
        let top = self.stack.top();
        // SAFETY: `child_main` runs on `self.stack`, which nothing else uses
        // while the child runs: with CLONE_VFORK this thread is suspended
        // until the child calls execve (after which it no longer uses this
        // memory) or exits. `ctx` and everything it points to (argv/envp
        // arrays, the caller's strings, `setup`) outlive the call for the
        // same reason. Every signal is blocked in this thread, so no handler
        // runs on the shared memory before the child resets dispositions.
        let pid = unsafe {
            libc::clone(
                child_main,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
                ctx as *const ChildCtx<'_> as *mut c_void,
            )
        };
        let clone_err = io::Error::last_os_error();
        if blocked {
            // SAFETY: restores the mask saved above (initialised by the
            // successful pthread_sigmask).
            unsafe {
                libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
            }
        }
        if pid < 0 {
            return Err(clone_err);
        }
        let errno = ctx.err.load(Ordering::Acquire);
        if errno == 0 {
            return Ok(pid);
        }
        // The child is exiting (it has released the memory): reap it.
        while let Err(nix::errno::Errno::EINTR) =
            nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)
        {}
        Err(io::Error::from_raw_os_error(errno))
    }
}

/// The errno of the last failed call (in the child: the parent thread's
/// errno variable, shared and unused while the parent is suspended).
fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// A raw system call's result: `Err(errno)` when it failed.
fn sys(r: libc::c_long) -> Result<libc::c_long, i32> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// The child: see the module docs. Never returns on success (execve);
/// otherwise stores the errno and exits with 127.
extern "C" fn child_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildCtx` the suspended parent passed to clone;
    // it stays valid and unchanged until this process execs or exits.
    let ctx = unsafe { &*(arg as *const ChildCtx<'_>) };
    // SAFETY: raw system calls and async-signal-safe libc calls on data
    // prepared by the parent (see child_setup).
    let errno = match unsafe { child_setup(ctx) } {
        Ok(never) => match never {},
        Err(e) => e,
    };
    ctx.err.store(
        if errno == 0 { libc::EIO } else { errno },
        Ordering::Release,
    );
    // SAFETY: _exit ends this process at once (exit_group), running no
    // atexit handler on the shared memory.
    unsafe { libc::_exit(127) }
}

/// Appends `n` in decimal to `buf` at `*len` (false when it does not fit).
fn push_decimal(buf: &mut [u8], len: &mut usize, mut n: u64) -> bool {
    let mut digits = [0u8; 20];
    let mut k = 0;
    loop {
        digits[k] = b'0' + (n % 10) as u8;
        k += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if *len + k > buf.len() {
        return false;
    }
    for d in digits[..k].iter().rev() {
        buf[*len] = *d;
        *len += 1;
    }
    true
}

/// Appends `bytes` to `buf` at `*len` (false when they do not fit).
fn push_bytes(buf: &mut [u8], len: &mut usize, bytes: &[u8]) -> bool {
    if *len + bytes.len() > buf.len() {
        return false;
    }
    buf[*len..*len + bytes.len()].copy_from_slice(bytes);
    *len += bytes.len();
    true
}

/// Field 22 (start time) of a `/proc/PID/stat` text: the 20th field after
/// the last `)`.
pub fn stat_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let field = fields.nth(19)?;
    let mut n: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// The child's record line (see [`Record`]), built on the stack.
///
/// # Safety
/// Only in the child of [`Spawner::clone_child`]: raw system calls on its
/// own stack buffers.
unsafe fn write_record(fd: RawFd, r: &Record) {
    // SAFETY: getpid/openat/read/close/write are raw system calls on
    // buffers of this stack frame; nothing allocates.
    unsafe {
        let pid = libc::syscall(libc::SYS_getpid) as u64;
        let mut stat = [0u8; 1024];
        let mut start = 0;
        let path = b"/proc/self/stat\0";
        let sfd = libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if sfd >= 0 {
            let n = libc::syscall(libc::SYS_read, sfd, stat.as_mut_ptr(), stat.len());
            libc::syscall(libc::SYS_close, sfd);
            if n > 0 {
                start = stat_start_time(&stat[..n as usize]).unwrap_or(0);
            }
        }
        let mut line = [0u8; RECORD_MAX];
        let mut len = 0;
        let fits = push_bytes(&mut line, &mut len, &r.prefix)
            && push_decimal(&mut line, &mut len, pid)
            && push_bytes(&mut line, &mut len, b" ")
            && push_decimal(&mut line, &mut len, pid)
            && push_bytes(&mut line, &mut len, b" ")
            && push_decimal(&mut line, &mut len, start)
            && push_bytes(&mut line, &mut len, &r.suffix);
        if fits {
            libc::syscall(libc::SYS_write, fd, line.as_ptr(), len);
        }
    }
}

/// The child's steps, in order; returns only on failure.
///
/// # Safety
/// Only in the child of [`Spawner::clone_child`], with `ctx` valid.
unsafe fn child_setup(ctx: &ChildCtx<'_>) -> Result<std::convert::Infallible, i32> {
    use libc::{syscall, SYS_close_range, SYS_dup3, SYS_setsid};
    // SAFETY (whole function): each call is a system call or an
    // async-signal-safe libc function taking integers or pointers into
    // `ctx`, which the suspended parent keeps alive; nothing allocates.
    unsafe {
        // A descriptor table of our own with only the descriptors below
        // `keep_below` (before anything touches the shared one).
        let unshare = libc::CLOSE_RANGE_UNSHARE as libc::c_long;
        if sys(syscall(SYS_close_range, ctx.keep_below, u32::MAX, unshare)).is_err() {
            sys(libc::unshare(libc::CLONE_FILES) as libc::c_long)?;
        }
        // Signals: caught ones back to default, SIGPIPE to default, then
        // nothing blocked.
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut act) != 0 {
                continue;
            }
            let caught = act.sa_sigaction != libc::SIG_DFL && act.sa_sigaction != libc::SIG_IGN;
            if caught || sig == libc::SIGPIPE {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        sys(syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const libc::sigset_t,
            std::ptr::null::<libc::sigset_t>(),
            8usize,
        ))?;
        // stdin, stdout, stderr (dup3 clears close-on-exec on the target;
        // slots are ≥ 3, so never equal to it).
        for (target, &slot) in ctx.slots[..3].iter().enumerate() {
            sys(syscall(SYS_dup3, slot, target as libc::c_int, 0))?;
        }
        if ctx.has_pass {
            // Our own table since close_range: the parent's slot stays
            // close-on-exec.
            sys(syscall(libc::SYS_fcntl, ctx.slots[PASS], libc::F_SETFD, 0))?;
        }
        sys(syscall(SYS_setsid))?;
        if let (true, Some(r)) = (ctx.has_record, &ctx.setup.record) {
            write_record(ctx.slots[RECORD], r);
        }
        if ctx.has_cgroup {
            let _ = libc::write(ctx.slots[CGROUP], b"0".as_ptr().cast(), 1);
        }
        let s = ctx.setup;
        for r in &s.rlimits {
            let lim = libc::rlimit64 {
                rlim_cur: r.soft,
                rlim_max: r.hard,
            };
            sys(syscall(
                libc::SYS_prlimit64,
                0,
                r.resource as libc::c_int,
                &lim as *const libc::rlimit64,
                std::ptr::null_mut::<libc::rlimit64>(),
            ))?;
        }
        if let Some(mask) = s.umask {
            syscall(libc::SYS_umask, mask);
        }
        if let Some(g) = &s.groups {
            sys(syscall(libc::SYS_setgroups, g.len(), g.as_ptr()))?;
        }
        if let Some(g) = s.gid {
            sys(syscall(libc::SYS_setgid, g))?;
        }
        if let Some(u) = s.uid {
            sys(syscall(libc::SYS_setuid, u))?;
        }
        if let Some(dir) = &s.chdir {
            sys(syscall(libc::SYS_chdir, dir.as_ptr()))?;
        }
        let mut first = libc::ENOENT;
        let mut eacces = false;
        for path in ctx.candidates {
            let e = match sys(syscall(libc::SYS_execve, path.as_ptr(), ctx.argv, ctx.envp)) {
                Ok(_) => libc::EIO,
                Err(e) => e,
            };
            match e {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => eacces = true,
                other => {
                    first = other;
                    break;
                }
            }
        }
        Err(if first == libc::ENOENT && eacces {
            libc::EACCES
        } else {
            first
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    /// Runs `sh -c script` through a fresh spawner; returns its output and
    /// exit code.
    fn run(spawner: &mut Spawner, script: &str, setup: &ChildSetup) -> io::Result<(String, i32)> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let argv = [c("sh"), c("-c"), c(script)];
        let envp = [c("PATH=/usr/bin:/bin")];
        let candidates = [c("/bin/sh")];
        let exec = ExecSpec {
            candidates: &candidates,
            argv: &argv,
            envp: &envp,
            stdout: w.as_fd(),
            stderr: w.as_fd(),
        };
        let pid = spawner.spawn(&exec, setup);
        drop(w);
        let pid = pid?;
        let mut text = String::new();
        std::fs::File::from(r).read_to_string(&mut text).unwrap();
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        let code = match status {
            nix::sys::wait::WaitStatus::Exited(_, c) => c,
            other => panic!("{other:?}"),
        };
        Ok((text, code))
    }

    #[test]
    fn child_leads_its_own_session_with_limits_and_umask() {
        let mut sp = Spawner::new().unwrap();
        let setup = ChildSetup {
            rlimits: vec![
                Rlimit {
                    resource: libc::RLIMIT_NOFILE,
                    soft: 77,
                    hard: 77,
                },
                Rlimit {
                    resource: libc::RLIMIT_CORE,
                    soft: libc::RLIM_INFINITY,
                    hard: libc::RLIM_INFINITY,
                },
            ],
            umask: Some(0o027),
            chdir: Some(c("/tmp")),
            ..ChildSetup::default()
        };
        let (text, code) = run(
            &mut sp,
            "umask; ulimit -n; ulimit -c; cut -d' ' -f6 /proc/$$/stat; echo $$; pwd",
            &setup,
        )
        .unwrap();
        assert_eq!(code, 0, "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "0027");
        assert_eq!(lines[1], "77");
        assert_eq!(lines[2], "unlimited");
        assert_eq!(
            lines[3], lines[4],
            "session id is the shell's own pid: {text}"
        );
        assert_eq!(lines[5], "/tmp");
    }

    #[test]
    fn child_starts_with_no_signal_blocked_or_ignored_pipe() {
        // Block a signal in this thread, as the restarter blocks its
        // signalfd's: the child must not inherit the mask.
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGTERM);
        let old = set
            .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
            .unwrap();
        let mut sp = Spawner::new().unwrap();
        let r = run(
            &mut sp,
            "grep -E '^Sig(Blk|Ign)' /proc/self/status",
            &ChildSetup::default(),
        );
        old.thread_set_mask().unwrap();
        let (text, _) = r.unwrap();
        assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
        // SIGPIPE (13) is bit 12: not ignored although Rust ignores it here.
        let ign = text
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:\t"))
            .unwrap();
        let mask = u64::from_str_radix(ign.trim(), 16).unwrap();
        assert_eq!(mask & (1 << 12), 0, "{text}");
    }

    #[test]
    fn descriptors_opened_after_the_spawner_never_reach_the_child() {
        // As in the restarter: the spawner first, then many descriptors
        // (close-on-exec or not): none of them reaches the program.
        let mut sp = Spawner::new().unwrap();
        let mut many: Vec<OwnedFd> = Vec::new();
        for i in 0..200 {
            let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
            if i % 2 == 0 {
                crate::sys::set_cloexec(fd.as_fd(), false).unwrap();
            }
            many.push(fd);
        }
        let (text, _) = run(&mut sp, "ls /proc/self/fd", &ChildSetup::default()).unwrap();
        // (Numbers below `keep_below` may have been freed by a test running
        // in parallel and reused here: those are not the point.)
        let k = sp.keep_below() as i32;
        let ours: Vec<i32> = many
            .iter()
            .map(|f| f.as_raw_fd())
            .filter(|&n| n >= k)
            .collect();
        assert!(ours.len() > 150);
        drop(many);
        let fds: Vec<i32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
        for n in [0, 1, 2] {
            assert!(fds.contains(&n), "{text}");
        }
        for fd in &fds {
            assert!(!ours.contains(fd), "fd {fd} reached the child: {text}");
            assert!(*fd < k, "fd {fd} at or above {k}: {text}");
        }
    }

    #[test]
    fn the_passed_descriptor_reaches_the_program_and_nothing_else_does() {
        let mut sp = Spawner::new().unwrap();
        let n = sp.pass_fd_number();
        assert!(n >= 3 && (n as u32) < sp.keep_below());
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let setup = ChildSetup {
            pass_fd: Some(w.as_raw_fd()),
            ..ChildSetup::default()
        };
        let script = format!("echo passed > /proc/self/fd/{n}; echo ok");
        let (text, code) = run(&mut sp, &script, &setup).unwrap();
        assert_eq!((text.as_str(), code), ("ok\n", 0));
        drop(w);
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "passed\n");
        // The parent's slot stays close-on-exec and points at nothing of
        // the service's once the start returned.
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| i64::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        assert_ne!(flags & libc::O_CLOEXEC as i64, 0, "{info}");
        // Without `pass_fd`, the number is closed in the program.
        let script = format!("if [ -e /proc/self/fd/{n} ]; then echo open; else echo closed; fi");
        let (text, _) = run(&mut sp, &script, &ChildSetup::default()).unwrap();
        assert_eq!(text, "closed\n");
    }

    #[test]
    fn a_failing_step_is_reported_with_its_errno() {
        let mut sp = Spawner::new().unwrap();
        let setup = ChildSetup {
            chdir: Some(c("/nonexistent/dir")),
            ..ChildSetup::default()
        };
        let e = run(&mut sp, "true", &setup).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // The spawner still works afterwards.
        let (text, code) = run(&mut sp, "echo ok", &ChildSetup::default()).unwrap();
        assert_eq!((text.as_str(), code), ("ok\n", 0));
    }

    #[test]
    fn the_child_records_its_pid_and_start_time_before_exec() {
        let path = std::env::temp_dir().join(format!("tether-record-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        let mut sp = Spawner::new().unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let argv = [c("sleep"), c("5")];
        let candidates = [c("/bin/sleep")];
        let exec = ExecSpec {
            candidates: &candidates,
            argv: &argv,
            envp: &[],
            stdout: w.as_fd(),
            stderr: w.as_fd(),
        };
        let setup = ChildSetup {
            record: Some(Record {
                fd: file.as_raw_fd(),
                prefix: b"svc ".to_vec(),
                suffix: b" 500\n".to_vec(),
            }),
            ..ChildSetup::default()
        };
        let pid = sp.spawn(&exec, &setup).unwrap();
        drop((r, w));
        let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap();
        let start = stat_start_time(&stat).unwrap();
        let line = std::fs::read_to_string(&path).unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(line, format!("svc {pid} {pid} {start} 500\n"));
    }

    #[test]
    fn start_time_is_field_22_counted_after_the_command_name() {
        let stat = b"42 (a) b) \xff) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        assert_eq!(stat_start_time(stat), Some(123456));
        assert_eq!(stat_start_time(b"42 (x) S 1"), None);
    }

    #[test]
    fn candidates_are_tried_in_order_like_execvp() {
        let mut sp = Spawner::new().unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let argv = [c("echo"), c("found")];
        let candidates = [
            c("/nonexistent/echo"),
            c("/etc/passwd/echo"),
            c("/bin/echo"),
        ];
        let exec = ExecSpec {
            candidates: &candidates,
            argv: &argv,
            envp: &[],
            stdout: w.as_fd(),
            stderr: w.as_fd(),
        };
        let pid = sp.spawn(&exec, &ChildSetup::default()).unwrap();
        drop(w);
        let mut text = String::new();
        std::fs::File::from(r).read_to_string(&mut text).unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        assert_eq!(text, "found\n");
        // Nothing found: ENOENT; only a non-executable file: EACCES.
        let (_r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let none = [c("/nonexistent/a"), c("/nonexistent/b")];
        let exec = ExecSpec {
            candidates: &none,
            argv: &argv,
            envp: &[],
            stdout: w.as_fd(),
            stderr: w.as_fd(),
        };
        let e = sp.spawn(&exec, &ChildSetup::default()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let denied = [c("/nonexistent/a"), c("/etc/passwd")];
        let exec = ExecSpec {
            candidates: &denied,
            ..exec
        };
        let e = sp.spawn(&exec, &ChildSetup::default()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }
}
