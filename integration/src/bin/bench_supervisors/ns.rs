//! Running a supervisor as PID 1 of a PID (and mount) namespace of its own:
//! `setpriv --pdeathsig SIGKILL -- unshare --pid --fork --mount
//! --mount-proc --kill-child=SIGKILL PROGRAM ARGS` (all util-linux).
//! Killing that PID 1 ends the namespace: the kernel kills every process
//! left in it before `unshare` sees its child exit, so nothing leaks
//! between runs.
//!
//! Also [`private_network`]: the benchmark's own network namespace, where
//! `net.unix.max_dgram_qlen` can be raised without touching the host (the
//! kernel default, 10, would make 1000 blockers and the restarter's syslog
//! lines queue on our sockets).

use crate::procfs;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tether_common::clock::MonoTime;

/// The variable marking the re-executed benchmark.
const NETNS_MARK: &str = "BENCH_SUPERVISORS_NETNS";

/// Puts the benchmark into a new network namespace (by re-executing it
/// under `unshare --net`; the first call does not return on success) and
/// raises `max_dgram_qlen` there. Returns what was done.
pub fn private_network(qlen: u32) -> Result<String, String> {
    if std::env::var_os(NETNS_MARK).is_none() {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let err = Command::new("unshare")
            .arg("--net")
            .arg("--")
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(NETNS_MARK, "1")
            .exec();
        return Err(format!("exec unshare --net: {err}"));
    }
    std::fs::write("/proc/sys/net/unix/max_dgram_qlen", format!("{qlen}\n"))
        .map_err(|e| format!("net.unix.max_dgram_qlen: {e}"))?;
    Ok(format!(
        "private network namespace, net.unix.max_dgram_qlen = {qlen}"
    ))
}

/// What to run as PID 1 of the namespace.
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// Descriptors handed over at fixed numbers (write ends of heartbeat
    /// pipes); our copies are closed once the child has them.
    pub fds: Vec<(OwnedFd, RawFd)>,
    /// Where the supervisor's stdout and stderr go.
    pub output: PathBuf,
}

/// A running namespace.
pub struct Namespace {
    unshare: Option<Child>,
    root: i32,
}

impl Namespace {
    /// Starts `launch` in a fresh namespace; returns once its PID 1 has
    /// exec'd the program.
    pub fn start(launch: Launch) -> Result<Namespace, String> {
        let out = std::fs::File::create(&launch.output)
            .map_err(|e| format!("{}: {e}", launch.output.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        // setpriv: unshare gets SIGKILL if the benchmark dies, and its
        // --kill-child passes that on to PID 1 of the namespace.
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--pdeathsig",
            "SIGKILL",
            "--",
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--mount-proc",
            "--kill-child=SIGKILL",
            "--",
        ])
        .arg(&launch.program)
        .args(&launch.args)
        .env_remove("TETHER_FDS")
        .env_remove("TETHER_SYSLOG_SOCKET")
        .env_remove("TETHER_KMSG")
        .env_remove("TETHER_STDERR")
        .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
        let child = if launch.fds.is_empty() {
            cmd.spawn()
        } else {
            let pairs: Vec<(BorrowedFd<'_>, RawFd)> =
                launch.fds.iter().map(|(f, t)| (f.as_fd(), *t)).collect();
            tether_common::sys::spawn_with_fds(&mut cmd, &pairs)
        }
        .map_err(|e| format!("spawn setpriv/unshare: {e}"))?;
        drop(launch.fds);
        let mut ns = Namespace {
            unshare: Some(child),
            root: 0,
        };
        let want = comm_of(&launch.program);
        let deadline = MonoTime::now() + Duration::from_secs(10);
        let upid = ns.unshare.as_ref().map(|c| c.id() as i32).unwrap_or(0);
        loop {
            if let Some(&pid) = procfs::children(upid, Some(&want)).first() {
                ns.root = pid;
                return Ok(ns);
            }
            if let Some(c) = ns.unshare.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    ns.unshare = None;
                    return Err(format!(
                        "unshare exited ({st}) before {} ran; its output: {}",
                        launch.program.display(),
                        std::fs::read_to_string(&launch.output).unwrap_or_default()
                    ));
                }
            }
            if MonoTime::now() >= deadline {
                return Err(format!(
                    "{} did not start within 10 s",
                    launch.program.display()
                ));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// PID 1 of the namespace (the supervisor), as a pid of ours.
    pub fn root(&self) -> i32 {
        self.root
    }

    /// Whether the supervisor still runs.
    pub fn alive(&mut self) -> bool {
        match self.unshare.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills PID 1 (and with it everything in the namespace) and waits.
    pub fn stop(&mut self) {
        if self.root > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.root),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut c) = self.unshare.take() {
            let _ = c.wait();
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `comm` the kernel gives a process running `program` (the file name,
/// cut at 15 bytes).
pub fn comm_of(program: &Path) -> String {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.chars().take(15).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_is_the_file_name_cut_at_15_bytes() {
        assert_eq!(comm_of(Path::new("/usr/bin/runsvdir")), "runsvdir");
        assert_eq!(comm_of(Path::new("/x/tether-restarter")), "tether-restarte");
    }
}
