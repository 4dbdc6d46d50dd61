//! The set-up a service's process does between `fork` and `exec`
//! (`Command::pre_exec`), for the restarter's `spawn`.
//!
//! Everything the child needs is computed in the parent ([`ChildSetup`]):
//! between `fork` and `exec` the child only makes async-signal-safe system
//! calls on pre-allocated data — no allocation, no lock, no lookup.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// One resource limit to set in the child (soft and hard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    /// `libc::RLIMIT_*`.
    pub resource: libc::__rlimit_resource_t,
    pub soft: libc::rlim_t,
    pub hard: libc::rlim_t,
}

/// What the child does before `exec`, in this order: no signal blocked
/// and `SIGPIPE` at its default, new session (and so its own process group), join the cgroup, resource limits, umask,
/// supplementary groups, gid, uid, working directory.
#[derive(Clone, Debug, Default)]
pub struct ChildSetup {
    /// `cgroup.procs` of the service's cgroup, open for writing in the
    /// parent (close-on-exec); the child writes `0` (itself) into it. A
    /// failure is ignored: the process group still bounds the service.
    pub cgroup_procs: Option<RawFd>,
    pub rlimits: Vec<Rlimit>,
    pub umask: Option<libc::mode_t>,
    /// Supplementary groups (set when a user or group is given).
    pub groups: Option<Vec<libc::gid_t>>,
    pub gid: Option<libc::gid_t>,
    pub uid: Option<libc::uid_t>,
    pub chdir: Option<CString>,
}

/// Spawns `cmd` after `setup` in the child. An error of a set-up step comes
/// back from `spawn` with its errno, like an `exec` failure.
///
/// The caller must keep `setup.cgroup_procs` open until this returns.
pub fn spawn_with_setup(cmd: &mut Command, setup: ChildSetup) -> io::Result<Child> {
    let ChildSetup {
        cgroup_procs,
        rlimits,
        umask,
        groups,
        gid,
        uid,
        chdir,
    } = setup;
    // SAFETY: the closure runs in the child between fork and exec. It only
    // calls sigemptyset, pthread_sigmask, signal, setsid, write, setrlimit, umask, setgroups, setgid, setuid and
    // chdir — all async-signal-safe — on data moved into the closure and
    // allocated before the fork (`rlimits`, `groups`, `chdir`) or on its own
    // stack (the empty signal set, initialised by sigemptyset before use);
    // it neither allocates nor takes a lock. Every pointer passed is valid for the
    // call: `b"0"` is static, `groups` and `chdir` live in the closure. The
    // cgroup descriptor is open in the parent for the duration of `spawn`
    // (the caller's contract), so it is open in the child.
    unsafe {
        cmd.pre_exec(move || {
            // The restarter blocks the signals its signalfd reads; a
            // service starts with none blocked and SIGPIPE at default.
            super::reset_signals_in_child()?;
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = cgroup_procs {
                let _ = libc::write(fd, b"0".as_ptr().cast(), 1);
            }
            for r in &rlimits {
                let lim = libc::rlimit {
                    rlim_cur: r.soft,
                    rlim_max: r.hard,
                };
                if libc::setrlimit(r.resource, &lim) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(mask) = umask {
                libc::umask(mask);
            }
            if let Some(g) = &groups {
                if libc::setgroups(g.len(), g.as_ptr()) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(g) = gid {
                if libc::setgid(g) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(u) = uid {
                if libc::setuid(u) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(dir) = &chdir {
                if libc::chdir(dir.as_ptr()) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn child_leads_its_own_session_with_limits_and_umask() {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("umask; ulimit -n; ulimit -c; cut -d' ' -f6 /proc/$$/stat; echo $$; pwd")
            .stdout(Stdio::piped());
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
            chdir: Some(CString::new("/tmp").unwrap()),
            ..ChildSetup::default()
        };
        let child = spawn_with_setup(&mut cmd, setup).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
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
    fn child_starts_with_no_signal_blocked() {
        // Block a signal in this thread, as the restarter blocks its
        // signalfd's: the child must not inherit the mask.
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGTERM);
        let old = set
            .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
            .unwrap();
        let mut cmd = Command::new("/bin/grep");
        cmd.args(["^SigBlk", "/proc/self/status"])
            .stdout(Stdio::piped());
        let child = spawn_with_setup(&mut cmd, ChildSetup::default());
        old.thread_set_mask().unwrap();
        let out = child.unwrap().wait_with_output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.trim(), "SigBlk:\t0000000000000000");
    }

    #[test]
    fn a_failing_step_is_reported_with_its_errno() {
        let mut cmd = Command::new("/bin/true");
        let setup = ChildSetup {
            chdir: Some(CString::new("/nonexistent/dir").unwrap()),
            ..ChildSetup::default()
        };
        let e = spawn_with_setup(&mut cmd, setup).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}
