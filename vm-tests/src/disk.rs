//! The guest's persistent disk: a small raw image holding `/var/lib/tether`
//! and `/var/log`, attached as virtio-blk (`/dev/vda`). It lives in the
//! test's scratch directory, so it survives resets and reboots of the guest
//! within one test (QEMU keeps the same file across a guest reset), and each
//! test starts from a blank one.
//!
//! Decision: ext4 made on the host by `mkfs.ext4` (e2fsprogs, installed on
//! every Debian system), journal included, so that a hardware reset in the
//! middle of a write leaves a filesystem the guest mounts without `fsck`.
//! The guest needs `virtio_pci`, `virtio_blk`, `ext4` and their
//! dependencies plus `crc32c_generic` (ext4's metadata checksums), all
//! taken from the kernel package. Alternatives rejected: formatting in the
//! guest with busybox `mke2fs` (ext2 only: no journal), vfat (no journal, no
//! permissions).
//!
//! After the VM has exited, the host reads files back with `debugfs`
//! (e2fsprogs too), without mounting anything.

use crate::fetch::{run, FetchError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A raw ext4 image file.
#[derive(Clone, Debug)]
pub struct Disk {
    pub path: PathBuf,
}

impl Disk {
    /// Creates a sparse `size_mib` image at `path` and formats it ext4,
    /// populated with the directories the appliance uses (`lib/tether`,
    /// `log`: the disk is mounted on `/var`).
    pub fn create(path: &Path, size_mib: u64) -> Result<Disk, FetchError> {
        use crate::fetch::io_err;
        let f =
            std::fs::File::create(path).map_err(io_err(format!("create {}", path.display())))?;
        f.set_len(size_mib << 20)
            .map_err(io_err(format!("size {}", path.display())))?;
        drop(f);
        let stage = path.with_extension("root");
        let _ = std::fs::remove_dir_all(&stage);
        for d in ["lib/tether", "log"] {
            std::fs::create_dir_all(stage.join(d))
                .map_err(io_err(format!("create {}", stage.display())))?;
        }
        let r = run(Command::new(mkfs_ext4())
            .args(["-q", "-F", "-L", "tether-var", "-E", "root_owner=0:0", "-d"])
            .arg(&stage)
            .arg(path));
        let _ = std::fs::remove_dir_all(&stage);
        r?;
        Ok(Disk {
            path: path.to_path_buf(),
        })
    }

    /// Reads a file from the image (path relative to the disk's root, e.g.
    /// `lib/tether/reset-reason`); `None` if it does not exist. Only while
    /// no VM has the disk open.
    pub fn read(&self, path: &str) -> Result<Option<String>, FetchError> {
        let out = Command::new(debugfs())
            .arg("-R")
            .arg(format!("cat /{}", path.trim_start_matches('/')))
            .arg(&self.path)
            .output()
            .map_err(|e| FetchError::Tool {
                command: "debugfs".into(),
                detail: e.to_string(),
            })?;
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("File not found") {
            return Ok(None);
        }
        if !out.status.success() {
            return Err(FetchError::Tool {
                command: format!("debugfs cat {}", path),
                detail: err.into_owned(),
            });
        }
        Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
    }
}

/// What the ext4 superblock says about how the filesystem was left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuperState {
    /// `Filesystem state:` (`clean`, `not clean`, `clean with errors`).
    pub state: String,
    /// The journal still holds transactions to replay: the filesystem was
    /// left mounted read-write (ext4 sets `needs_recovery` at a read-write
    /// mount and clears it at unmount or read-only remount; with a journal
    /// the state word itself stays `clean`).
    pub needs_recovery: bool,
}

impl SuperState {
    /// Left as an unmount or a read-only remount leaves it.
    pub fn is_clean(&self) -> bool {
        self.state == "clean" && !self.needs_recovery
    }
}

impl Disk {
    /// The superblock's state (`dumpe2fs -h`, read-only). Safe while a VM
    /// has the disk open: what the guest wrote through QEMU is in the host's
    /// page cache; read it between the guest's reboot and its next mount
    /// (right after QMP `RESET`) to see how the shutdown left it.
    pub fn super_state(&self) -> Result<SuperState, FetchError> {
        let out = Command::new(sbin_tool("dumpe2fs"))
            .arg("-h")
            .arg(&self.path)
            .output()
            .map_err(|e| FetchError::Tool {
                command: "dumpe2fs".into(),
                detail: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_super_state(&text).ok_or_else(|| FetchError::Tool {
            command: format!("dumpe2fs -h {}", self.path.display()),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Parses `dumpe2fs -h` output.
pub fn parse_super_state(text: &str) -> Option<SuperState> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let state = field("Filesystem state:")?;
    let features = field("Filesystem features:")?;
    Some(SuperState {
        state,
        needs_recovery: features.split_whitespace().any(|f| f == "needs_recovery"),
    })
}

/// e2fsprogs lives in /sbin, which a non-root PATH may lack.
pub fn sbin_tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn mkfs_ext4() -> PathBuf {
    sbin_tool("mkfs.ext4")
}

fn debugfs() -> PathBuf {
    sbin_tool("debugfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_states() {
        let mounted = "Filesystem features:      has_journal ext_attr needs_recovery extent 64bit\nFilesystem state:         clean\n";
        let s = parse_super_state(mounted).unwrap();
        assert!(s.needs_recovery && !s.is_clean());
        let left = "Filesystem features:      has_journal ext_attr extent\nFilesystem state:         clean\n";
        assert!(parse_super_state(left).unwrap().is_clean());
        let nojournal = "Filesystem features:      ext_attr\nFilesystem state:         not clean\n";
        assert!(!parse_super_state(nojournal).unwrap().is_clean());
        assert_eq!(parse_super_state("garbage"), None);
    }
}
