//! Debian packages the harness needs on the host side, downloaded with
//! `apt-get download` (no install, no root needed beyond apt's own) and
//! unpacked with `dpkg -x` into the cache (`target/vm-cache/`), once.
//!
//! - the kernel: the package `linux-image-amd64` depends on
//!   (`linux-image-6.1.0-NN-amd64`), resolved with `apt-cache depends`;
//! - `busybox-static`: the shell and tools of the initramfs.
//!
//! Decisions:
//! - Once a package is unpacked in the cache it is used as is: the harness
//!   works offline afterwards and every test of a run sees the same kernel.
//!   Delete `target/vm-cache/` to pick up a newer one.
//! - Overrides for machines without apt: `TETHER_VM_KERNEL_ROOT` (a directory
//!   holding `boot/vmlinuz-*` and `lib/modules/*/`, e.g. an unpacked
//!   package), `TETHER_VM_BUSYBOX` (a static busybox binary).
//! - Concurrent harness processes serialise on an `flock` of
//!   `vm-cache/.lock`; unpacking goes to a temporary directory renamed into
//!   place, so a killed run never leaves a half-unpacked package behind.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A failure to obtain a package or a file from it.
#[derive(Debug)]
pub enum FetchError {
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A host tool ran and failed (or could not be started).
    Tool { command: String, detail: String },
    /// The package was unpacked but lacks what we need.
    Missing { what: String, place: PathBuf },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Io { what, source } => write!(f, "{}: {}", what, source),
            FetchError::Tool { command, detail } => write!(
                f,
                "`{}` failed: {} (the VM tests need Debian's apt: run `apt-get update` first)",
                command, detail
            ),
            FetchError::Missing { what, place } => {
                write!(f, "{} not found in {}", what, place.display())
            }
        }
    }
}

impl std::error::Error for FetchError {}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FetchError {
    let what = what.into();
    move |source| FetchError::Io { what, source }
}

/// Runs a command, returning its stdout; a non-zero exit is an error
/// carrying stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String, FetchError> {
    let command = format!("{:?}", cmd);
    let out = cmd.output().map_err(|e| FetchError::Tool {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(FetchError::Tool {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An exclusive lock on the cache, held while the value lives.
pub struct CacheLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

impl CacheLock {
    pub fn take(cache: &Path) -> Result<CacheLock, FetchError> {
        fs::create_dir_all(cache).map_err(io_err(format!("create {}", cache.display())))?;
        let path = cache.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        let lock =
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
                FetchError::Io {
                    what: format!("flock {}", path.display()),
                    source: e.into(),
                }
            })?;
        Ok(CacheLock { _lock: lock })
    }
}

/// The package `linux-image-amd64` currently depends on, e.g.
/// `linux-image-6.1.0-56-amd64`, from `apt-cache depends` output.
pub fn parse_kernel_dependency(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|p| {
            p.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .find(|p| p.starts_with("linux-image-") && p != "linux-image-amd64")
}

/// Downloads `package` and unpacks it to `cache/pkg/<package>/` unless it
/// is already there; returns that directory.
pub fn unpacked_package(cache: &Path, package: &str) -> Result<PathBuf, FetchError> {
    let dest = cache.join("pkg").join(package);
    if dest.is_dir() {
        return Ok(dest);
    }
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).map_err(io_err(format!("create {}", debs.display())))?;
    let deb = match find_deb(&debs, package) {
        Some(d) => d,
        None => {
            // As root, apt drops to the `_apt` user for downloads, which
            // cannot write into our cache: download as ourselves.
            run(Command::new("apt-get")
                .args(["-q", "-o", "APT::Sandbox::User=root", "download", package])
                .current_dir(&debs))?;
            find_deb(&debs, package).ok_or_else(|| FetchError::Missing {
                what: format!("{}_*.deb", package),
                place: debs.clone(),
            })?
        }
    };
    let tmp = cache.join("pkg").join(format!(".{}.tmp", package));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
    fs::rename(&tmp, &dest).map_err(io_err(format!(
        "rename {} to {}",
        tmp.display(),
        dest.display()
    )))?;
    Ok(dest)
}

/// The unpacked kernel package: `TETHER_VM_KERNEL_ROOT`, or an already
/// unpacked `linux-image-*` in the cache, or the current one downloaded.
pub fn kernel_root(cache: &Path) -> Result<PathBuf, FetchError> {
    if let Some(root) = std::env::var_os("TETHER_VM_KERNEL_ROOT") {
        return Ok(PathBuf::from(root));
    }
    let _lock = CacheLock::take(cache)?;
    let pkgs = cache.join("pkg");
    if let Ok(rd) = fs::read_dir(&pkgs) {
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("linux-image-") && !n.starts_with('.'))
            })
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Ok(p);
        }
    }
    let deps = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let package = parse_kernel_dependency(&deps).ok_or_else(|| FetchError::Tool {
        command: "apt-cache depends linux-image-amd64".into(),
        detail: format!(
            "no linux-image-* dependency in its output: {:?}",
            deps.trim()
        ),
    })?;
    unpacked_package(cache, &package)
}

/// `dir/<package>_*.deb`, if it was downloaded.
fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{}_", package);
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
}

/// The downloaded `.deb` of the cache's kernel (see [`kernel_root`]):
/// what `tether-inject --kernel` is given in the tests that show it takes
/// a kernel package.
pub fn kernel_package(cache: &Path) -> Result<PathBuf, FetchError> {
    let root = kernel_root(cache)?;
    let name = root
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    let debs = cache.join("debs");
    find_deb(&debs, &name).ok_or(FetchError::Missing {
        what: format!("{}_*.deb", name),
        place: debs,
    })
}

/// A static busybox: `TETHER_VM_BUSYBOX`, or `bin/busybox` of the
/// `busybox-static` package in the cache (downloaded when absent). Checked
/// to be static: the initramfs has no C library.
pub fn busybox(cache: &Path) -> Result<PathBuf, FetchError> {
    let path = match std::env::var_os("TETHER_VM_BUSYBOX") {
        Some(p) => PathBuf::from(p),
        None => {
            let _lock = CacheLock::take(cache)?;
            unpacked_package(cache, "busybox-static")?.join("bin/busybox")
        }
    };
    let bytes = fs::read(&path).map_err(io_err(format!("read {}", path.display())))?;
    match crate::elf::has_interpreter(&bytes) {
        Ok(false) => Ok(path),
        Ok(true) => Err(FetchError::Missing {
            what: "a static busybox (this one is dynamic)".into(),
            place: path,
        }),
        Err(e) => Err(FetchError::Missing {
            what: format!("an executable busybox ({})", e),
            place: path,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dependency_is_read_from_apt_cache_output() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_kernel_dependency(out).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        let virt =
            "linux-image-amd64\n  Depends: <linux-image-6.1.0-9-amd64>\n  Recommends: firmware\n";
        assert_eq!(
            parse_kernel_dependency(virt).as_deref(),
            Some("linux-image-6.1.0-9-amd64")
        );
        assert_eq!(parse_kernel_dependency("linux-image-amd64\n"), None);
    }
}
