//! Where init runs, and the API filesystems it mounts there.
//!
//! [`Role`]: PID 1 of the machine, PID 1 of a PID namespace (a test, a
//! container), or not PID 1 at all (run by hand). Only PID 1 of the machine
//! does machine things (mounts, read-only remount, ctrl-alt-del routing);
//! only a PID 1 calls `reboot(2)` and `kill(-1, ...)`.
//!
//! The machine is told from a namespace by the inode of the PID namespace:
//! the initial one is `PROC_PID_INIT_INO` (0xEFFFFFFC), a kernel constant
//! shown by `readlink /proc/self/ns/pid` as `pid:[4026531836]`.
//!
//! Mounts ([`API_FILESYSTEMS`]): `/proc` (proc), `/sys` (sysfs), `/dev`
//! (devtmpfs), `/dev/pts` (devpts, `gid=5,mode=620`: the pseudo-terminals
//! sshd and `script` allocate), `/dev/shm` (tmpfs, mode 1777: POSIX shared
//! memory), `/run` (tmpfs, mode 0755), each only when absent. Absent
//! means: `/proc` and `/sys` do not carry their filesystem's magic number
//! (`statfs`); the others are not a mount point (same device as the
//! directory they sit in), so a container's tmpfs `/dev` counts as present.
//! gid 5 is `tty` in Debian's base-passwd (and systemd's default); a
//! system without that group still gets working terminals, owned by gid 5.
//!
//! Decisions:
//! - [`MountMode::Auto`] (the default) mounts only as PID 1 of the machine,
//!   except `/proc`, which any PID 1 mounts when it is missing: without it
//!   init cannot tell a machine from a namespace. `--mount` mounts what is
//!   absent in any role, `--no-mount` never mounts.
//! - A failed mount is logged and boot goes on: the chain may still work
//!   (e.g. `/run` on the root filesystem).

use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, FsType, PROC_SUPER_MAGIC, SYSFS_MAGIC};

use crate::args::MountMode;

/// `PROC_PID_INIT_INO`: the inode of the initial PID namespace.
pub const INITIAL_PID_NS_INODE: u64 = 0xEFFF_FFFC;

/// Where init runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// PID 1 of the initial PID namespace: the real init.
    Machine,
    /// PID 1 of a PID namespace (test, container): `reboot(2)` ends the
    /// namespace.
    Namespace,
    /// Not PID 1 (run by hand): never signals other processes, never
    /// reboots; the shutdown sequence ends with `exit(0)`.
    NotPid1,
}

impl Role {
    pub fn is_pid1(self) -> bool {
        self != Role::NotPid1
    }

    pub fn describe(self) -> &'static str {
        match self {
            Role::Machine => "PID 1 of the machine",
            Role::Namespace => "PID 1 of a PID namespace",
            Role::NotPid1 => "not PID 1 (run by hand: will not reboot nor signal other processes)",
        }
    }
}

/// Decides the role from the pid and whether the PID namespace is the
/// initial one (`None`: unknown, e.g. no `/proc`).
pub fn decide_role(pid: i32, initial_ns: Option<bool>) -> Role {
    match (pid, initial_ns) {
        (1, Some(true)) => Role::Machine,
        (1, Some(false)) => Role::Namespace,
        // PID 1 that cannot see /proc even after trying to mount it: be
        // careful, act as in a namespace (no superblock remount).
        (1, None) => Role::Namespace,
        _ => Role::NotPid1,
    }
}

/// Parses `pid:[N]` (the link of `/proc/self/ns/pid`) to whether it is the
/// initial namespace.
pub fn is_initial_pid_ns(link: &str) -> Option<bool> {
    let inode: u64 = link
        .strip_prefix("pid:[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    Some(inode == INITIAL_PID_NS_INODE)
}

/// Reads `/proc/self/ns/pid`.
pub fn probe_initial_pid_ns() -> Option<bool> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    is_initial_pid_ns(link.to_str()?)
}

/// How to tell that a filesystem is present at its mount point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// `statfs` reports this magic.
    Magic(FsType),
    /// Anything mounted there (another device than its parent directory).
    MountPoint,
}

/// One API filesystem.
#[derive(Clone, Copy, Debug)]
pub struct ApiFs {
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
    pub presence: Presence,
}

/// `/proc`, `/sys`, `/dev`, `/dev/pts`, `/dev/shm`, `/run`, in mount order.
pub const API_FILESYSTEMS: [ApiFs; 6] = [
    ApiFs {
        target: "/proc",
        fstype: "proc",
        flags: MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        data: None,
        presence: Presence::Magic(PROC_SUPER_MAGIC),
    },
    ApiFs {
        target: "/sys",
        fstype: "sysfs",
        flags: MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        data: None,
        presence: Presence::Magic(SYSFS_MAGIC),
    },
    ApiFs {
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
        presence: Presence::MountPoint,
    },
    ApiFs {
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("gid=5,mode=620,ptmxmode=000"),
        presence: Presence::MountPoint,
    },
    ApiFs {
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
        presence: Presence::MountPoint,
    },
    ApiFs {
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
        presence: Presence::MountPoint,
    },
];

/// What happened to one filesystem.
#[derive(Debug)]
pub enum Outcome {
    Present,
    Mounted,
    Failed(nix::Error),
}

/// Whether `fs` is there.
pub fn is_present(fs: &ApiFs) -> bool {
    match fs.presence {
        Presence::Magic(magic) => statfs(fs.target).is_ok_and(|s| s.filesystem_type() == magic),
        Presence::MountPoint => is_mount_point(Path::new(fs.target)),
    }
}

/// Whether `dir` is on another device than the directory it sits in
/// (`/` for `/dev`, `/dev` for `/dev/pts`).
pub fn is_mount_point(dir: &Path) -> bool {
    let dev = |p: &Path| nix::sys::stat::stat(p).map(|s| s.st_dev);
    let parent = dir.parent().unwrap_or(Path::new("/"));
    match (dev(dir), dev(parent)) {
        (Ok(a), Ok(b)) => a != b,
        _ => false,
    }
}

/// Mounts `fs` unless present.
pub fn ensure(fs: &ApiFs) -> Outcome {
    if is_present(fs) {
        return Outcome::Present;
    }
    if !Path::new(fs.target).is_dir() {
        let _ = std::fs::create_dir_all(fs.target);
    }
    match mount(
        Some(fs.fstype),
        fs.target,
        Some(fs.fstype),
        fs.flags,
        fs.data,
    ) {
        Ok(()) => Outcome::Mounted,
        Err(e) => Outcome::Failed(e),
    }
}

/// Which filesystems to ensure, by mode and role (`/proc` is handled
/// before the role is known, see the module docs).
pub fn wanted(mode: MountMode, role: Role) -> bool {
    match mode {
        MountMode::Never => false,
        MountMode::Always => true,
        MountMode::Auto => role == Role::Machine,
    }
}

/// Whether `/proc` is to be mounted before the role is known.
pub fn wants_proc_first(mode: MountMode, pid: i32) -> bool {
    match mode {
        MountMode::Never => false,
        MountMode::Always => true,
        MountMode::Auto => pid == 1,
    }
}

/// Boot: mounts `/proc` if needed, decides the role, mounts the rest if
/// wanted. Returns the role and one log line per filesystem looked at.
pub fn prepare(mode: MountMode) -> (Role, Vec<String>) {
    let pid = std::process::id() as i32;
    let mut lines = Vec::new();
    let mut report = |fs: &ApiFs, o: Outcome| match o {
        Outcome::Present => lines.push(format!("{} already mounted", fs.target)),
        Outcome::Mounted => lines.push(format!("mounted {} on {}", fs.fstype, fs.target)),
        Outcome::Failed(e) => lines.push(format!(
            "could not mount {} on {}: {}",
            fs.fstype, fs.target, e
        )),
    };
    let [proc_fs, rest @ ..] = &API_FILESYSTEMS;
    if wants_proc_first(mode, pid) {
        report(proc_fs, ensure(proc_fs));
    }
    let role = decide_role(pid, probe_initial_pid_ns());
    if wanted(mode, role) {
        for fs in rest {
            report(fs, ensure(fs));
        }
    } else {
        lines.push(format!(
            "mounts skipped ({}, mount mode {:?})",
            role.describe(),
            mode
        ));
    }
    (role, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_comes_from_pid_and_namespace() {
        assert_eq!(decide_role(1, Some(true)), Role::Machine);
        assert_eq!(decide_role(1, Some(false)), Role::Namespace);
        assert_eq!(decide_role(1, None), Role::Namespace);
        assert_eq!(decide_role(4242, Some(true)), Role::NotPid1);
        assert!(!Role::NotPid1.is_pid1());
    }

    #[test]
    fn initial_namespace_is_recognised_by_its_inode() {
        assert_eq!(is_initial_pid_ns("pid:[4026531836]"), Some(true));
        assert_eq!(is_initial_pid_ns("pid:[4026532290]"), Some(false));
        assert_eq!(is_initial_pid_ns("net:[4026531836x]"), None);
    }

    #[test]
    fn only_the_machine_mounts_by_default() {
        assert!(wanted(MountMode::Auto, Role::Machine));
        assert!(!wanted(MountMode::Auto, Role::Namespace));
        assert!(!wanted(MountMode::Auto, Role::NotPid1));
        assert!(wanted(MountMode::Always, Role::Namespace));
        assert!(!wanted(MountMode::Never, Role::Machine));
        assert!(wants_proc_first(MountMode::Auto, 1));
        assert!(!wants_proc_first(MountMode::Auto, 77));
        assert!(!wants_proc_first(MountMode::Never, 1));
    }

    #[test]
    fn present_filesystems_are_left_alone() {
        // The test host has /proc and /sys; ensure() must not mount over them.
        let [proc_fs, sys_fs, ..] = &API_FILESYSTEMS;
        assert!(is_present(proc_fs));
        assert!(matches!(ensure(proc_fs), Outcome::Present));
        assert!(is_present(sys_fs));
    }

    #[test]
    fn a_mount_point_is_told_from_its_parent_not_from_the_root() {
        // /proc/self sits in /proc (same device): not a mount point, though
        // it is on another device than `/`, which the old check compared.
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/proc/self")));
        let [_, _, dev, pts, shm, run] = &API_FILESYSTEMS;
        assert_eq!(
            [dev.target, pts.target, shm.target, run.target],
            ["/dev", "/dev/pts", "/dev/shm", "/run"]
        );
        assert!(pts.target.starts_with(dev.target) && shm.target.starts_with(dev.target));
    }
}
