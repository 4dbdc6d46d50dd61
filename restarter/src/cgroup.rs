//! cgroup v2 placement: each service's processes in their own cgroup
//! `ROOT/NAME`, so a stop reaches every process the service ever forked —
//! even one that left the process group (`setsid`, double fork).
//!
//! - The root is, by default, `tether/` under the restarter's own cgroup
//!   (from `/proc/self/cgroup`, line `0::PATH`) when `/sys/fs/cgroup` is a
//!   cgroup2 mount; or a directory given with `--cgroup-root` (it must be on
//!   a cgroup2 mount). Without one, services are bounded by their process
//!   group only; the restarter logs that once at start.
//! - A child joins its cgroup itself before `exec` (it writes `0` into
//!   `cgroup.procs`, opened by the parent), so not even its first fork can
//!   escape.
//! - `SIGKILL` goes through `cgroup.kill` (Linux ≥ 5.14); where that file
//!   does not exist, and for other signals, each pid listed in
//!   `cgroup.procs` is signalled.
//! - No controllers are enabled: the cgroups only group processes.
//!   Resource control is left to the limits in the service file.
//! - A service's cgroup is removed when the service is removed (the
//!   directory is left when it still holds processes) and at exit.

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `/sys/fs/cgroup`.
pub const DEFAULT_MOUNT: &str = "/sys/fs/cgroup";

/// Where service cgroups are made.
#[derive(Clone, Debug)]
pub struct Cgroups {
    root: PathBuf,
}

/// Whether `path` is on a cgroup2 filesystem.
pub fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The restarter's own cgroup path (`/...`) from `/proc/self/cgroup`.
pub fn own_cgroup() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    parse_own_cgroup(&text)
}

fn parse_own_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
}

impl Cgroups {
    /// Finds (and creates) the root: `configured`, or `tether/` under the
    /// restarter's own cgroup. `Err` says why cgroups are not used.
    pub fn detect(configured: Option<&Path>) -> Result<Cgroups, String> {
        let root = match configured {
            Some(dir) => dir.to_path_buf(),
            None => {
                let mount = Path::new(DEFAULT_MOUNT);
                if !is_cgroup2(mount) {
                    return Err(format!("{DEFAULT_MOUNT} is not a cgroup2 mount"));
                }
                let own = own_cgroup().ok_or("no cgroup2 entry in /proc/self/cgroup")?;
                mount.join(own.trim_start_matches('/')).join("tether")
            }
        };
        fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        if !is_cgroup2(&root) {
            return Err(format!("{} is not on a cgroup2 mount", root.display()));
        }
        if !root.join("cgroup.procs").exists() {
            return Err(format!("{} is not a cgroup", root.display()));
        }
        Ok(Cgroups { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cgroup of service `name`, created if needed, with its
    /// `cgroup.procs` open for the child to join.
    pub fn prepare(&self, name: &str) -> io::Result<ServiceCgroup> {
        let dir = self.root.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let procs = open_write(&dir.join("cgroup.procs"))?;
        Ok(ServiceCgroup { dir, procs })
    }

    /// The cgroup of service `name` if it exists (at start, to sweep what a
    /// previous restarter left), without creating it.
    pub fn existing(&self, name: &str) -> Option<ServiceCgroup> {
        let dir = self.root.join(name);
        let procs = open_write(&dir.join("cgroup.procs")).ok()?;
        Some(ServiceCgroup { dir, procs })
    }

    /// Names of the service cgroups under the root.
    pub fn children(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

fn open_write(path: &Path) -> io::Result<OwnedFd> {
    let f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    Ok(f.into())
}

/// One service's cgroup.
#[derive(Debug)]
pub struct ServiceCgroup {
    dir: PathBuf,
    procs: OwnedFd,
}

impl ServiceCgroup {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `cgroup.procs`, open for writing (for the child to join).
    pub fn procs_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.procs.as_fd()
    }

    /// The pids in the cgroup now.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether no process is in the cgroup.
    pub fn is_empty(&self) -> bool {
        match fs::read_to_string(self.dir.join("cgroup.events")) {
            Ok(t) => t.lines().any(|l| l.trim() == "populated 0"),
            Err(_) => self.pids().is_empty(),
        }
    }

    /// `SIGKILL` to every process: `cgroup.kill`, or each pid.
    pub fn kill(&self) -> io::Result<()> {
        match fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.kill"))
        {
            Ok(mut f) => f.write_all(b"1"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.signal(libc::SIGKILL);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `signal` to each process listed in `cgroup.procs`.
    pub fn signal(&self, signal: i32) {
        let Ok(sig) = nix::sys::signal::Signal::try_from(signal) else {
            return;
        };
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// Removes the directory (fails while processes remain).
    pub fn remove(self) -> io::Result<()> {
        let ServiceCgroup { dir, procs } = self;
        drop(procs);
        fs::remove_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_is_the_unified_entry() {
        let text = "12:pids:/x\n1:name=systemd:/\n0::/system.slice/tether.service\n";
        assert_eq!(
            parse_own_cgroup(text).as_deref(),
            Some("/system.slice/tether.service")
        );
        assert_eq!(parse_own_cgroup("1:cpu:/\n"), None);
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup_root() {
        let dir = std::env::temp_dir().join(format!("tether-cgroup-test-{}", std::process::id()));
        let e = Cgroups::detect(Some(&dir)).unwrap_err();
        assert!(e.contains("not on a cgroup2 mount"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
