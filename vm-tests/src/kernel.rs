//! The guest kernel: `vmlinuz` and the modules of an unpacked Debian
//! `linux-image-*` package, with module dependencies resolved from the
//! modules themselves.
//!
//! Debian's package ships no `modules.dep` (depmod runs at install time), so
//! the dependencies come from each `.ko`'s `.modinfo` section (`depends=`,
//! and the `pre:` part of `softdep=`), read by [`crate::elf`]. Modules built
//! into the kernel (`modules.builtin`) are satisfied without a file.
//!
//! Decisions:
//! - Soft dependencies are followed when they name a module file; a name
//!   that is only an alias (ext4's `softdep=pre: crc32c`, provided by
//!   `crc32c_generic`) is not searched for: callers list such modules
//!   explicitly. Unresolved soft dependencies are reported in
//!   [`Resolved::notes`], hard ones are errors.
//! - Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`, as newer Debian
//!   kernels ship) are decompressed with the matching host tool (`xz`,
//!   `zstd`, `gzip`) when read; the initramfs holds them uncompressed, so the
//!   guest's `insmod` needs no decompressor.
//! - Module names compare with `-` and `_` equal, as the kernel does.

use crate::elf;
use crate::fetch::{io_err, run, FetchError};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A resolution failure.
#[derive(Debug)]
pub enum KernelError {
    Fetch(FetchError),
    /// No module file and not built in.
    UnknownModule {
        name: String,
        needed_by: Option<String>,
    },
    /// A module file that is not a readable module.
    BadModule {
        path: PathBuf,
        error: String,
    },
    /// A dependency cycle (should not happen in a real kernel).
    Cycle {
        names: Vec<String>,
    },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::Fetch(e) => write!(f, "{}", e),
            KernelError::UnknownModule {
                name,
                needed_by: Some(by),
            } => {
                write!(
                    f,
                    "module {} (needed by {}) is neither a file nor built in",
                    name, by
                )
            }
            KernelError::UnknownModule {
                name,
                needed_by: None,
            } => {
                write!(f, "module {} is neither a file nor built in", name)
            }
            KernelError::BadModule { path, error } => write!(f, "{}: {}", path.display(), error),
            KernelError::Cycle { names } => {
                write!(f, "module dependency cycle among {}", names.join(", "))
            }
        }
    }
}

impl std::error::Error for KernelError {}

impl From<FetchError> for KernelError {
    fn from(e: FetchError) -> Self {
        KernelError::Fetch(e)
    }
}

/// `-` and `_` are the same in module names.
pub fn normalize(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// A kernel image and its module tree.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// e.g. `6.1.0-56-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>/`.
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// Finds `boot/vmlinuz-<release>` and `lib/modules/<release>` in an
    /// unpacked package (Debian keeps modules under `lib/`; merged-/usr
    /// packages may use `usr/lib/`).
    pub fn from_root(root: &Path) -> Result<Kernel, KernelError> {
        let boot = root.join("boot");
        let rd = fs::read_dir(&boot).map_err(io_err(format!("read {}", boot.display())))?;
        let mut images: Vec<(String, PathBuf)> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_prefix("vmlinuz-")
                    .map(|r| (r.to_string(), e.path()))
            })
            .collect();
        images.sort();
        let (release, vmlinuz) = images.pop().ok_or_else(|| FetchError::Missing {
            what: "boot/vmlinuz-*".into(),
            place: root.to_path_buf(),
        })?;
        let modules_dir = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| root.join(d).join(&release))
            .find(|p| p.is_dir())
            .ok_or_else(|| FetchError::Missing {
                what: format!("lib/modules/{}", release),
                place: root.to_path_buf(),
            })?;
        Ok(Kernel {
            release,
            vmlinuz,
            modules_dir,
        })
    }

    /// What QEMU should boot: the uncompressed `vmlinux` (an ELF with a PVH
    /// entry point, which QEMU starts directly) when the kernel has
    /// `CONFIG_PVH=y` and its payload can be extracted, else `vmlinuz`.
    ///
    /// Why: the Debian bzImage is XZ-compressed, and decompressing it under
    /// TCG costs about 4 s of every boot; booting the extracted ELF brings a
    /// boot to userspace from about 6 s to 2 s. The ELF is extracted once
    /// into `cache/` (about 65 MB) with the host's decompressor.
    pub fn boot_image(&self, cache: &Path) -> PathBuf {
        match self.extract_vmlinux(cache) {
            Ok(Some(p)) => p,
            _ => self.vmlinuz.clone(),
        }
    }

    fn extract_vmlinux(&self, cache: &Path) -> Result<Option<PathBuf>, KernelError> {
        let config = self
            .vmlinuz
            .with_file_name(format!("config-{}", self.release));
        let pvh = fs::read_to_string(&config)
            .map(|c| c.lines().any(|l| l == "CONFIG_PVH=y"))
            .unwrap_or(false);
        if !pvh {
            return Ok(None);
        }
        let out = cache.join(format!("vmlinux-{}", self.release));
        if out.exists() {
            return Ok(Some(out));
        }
        let _lock = crate::fetch::CacheLock::take(cache)?;
        if out.exists() {
            return Ok(Some(out));
        }
        let image =
            fs::read(&self.vmlinuz).map_err(io_err(format!("read {}", self.vmlinuz.display())))?;
        let Some((offset, tool)) = payload_start(&image) else {
            return Ok(None);
        };
        let tmp = out.with_extension("tmp");
        let payload = tmp.with_extension("payload");
        fs::write(&payload, &image[offset..])
            .map_err(io_err(format!("write {}", payload.display())))?;
        let mut args = vec!["-dc"];
        if tool == "xz" {
            // The bzImage has more bytes after the stream.
            args.push("--single-stream");
        }
        let file = fs::File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
        let status = Command::new(tool)
            .args(&args)
            .arg(&payload)
            .stdout(file)
            .status();
        let _ = fs::remove_file(&payload);
        let ok = matches!(status, Ok(s) if s.success() || tool != "xz");
        let elf_ok = {
            use std::io::Read;
            let mut head = [0u8; 4];
            let big = fs::metadata(&tmp)
                .map(|m| m.len() > 1 << 20)
                .unwrap_or(false);
            big && fs::File::open(&tmp)
                .and_then(|mut f| f.read_exact(&mut head))
                .is_ok()
                && &head == b"\x7fELF"
        };
        if !ok || !elf_ok {
            let _ = fs::remove_file(&tmp);
            return Ok(None);
        }
        fs::rename(&tmp, &out).map_err(io_err(format!("rename {}", tmp.display())))?;
        Ok(Some(out))
    }

    /// The kernel of the cache (see [`crate::fetch::kernel_root`]).
    pub fn from_cache(cache: &Path) -> Result<Kernel, KernelError> {
        Kernel::from_root(&crate::fetch::kernel_root(cache)?)
    }

    /// Indexes the module files (by name) and the built-in modules.
    pub fn module_tree(&self) -> Result<ModuleTree, KernelError> {
        let mut files = BTreeMap::new();
        let mut stack = vec![self.modules_dir.join("kernel")];
        while let Some(dir) = stack.pop() {
            let rd = fs::read_dir(&dir).map_err(io_err(format!("read {}", dir.display())))?;
            for e in rd.filter_map(|e| e.ok()) {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(name) = module_name_of(&p) {
                    files.insert(name, p);
                }
            }
        }
        let builtin = fs::read_to_string(self.modules_dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| module_name_of(Path::new(l.trim())))
            .collect();
        Ok(ModuleTree { files, builtin })
    }
}

/// Where the compressed kernel starts inside a bzImage, and the tool that
/// decompresses it (the first magic found after the setup code).
pub fn payload_start(image: &[u8]) -> Option<(usize, &'static str)> {
    const MAGICS: &[(&[u8], &str)] = &[
        (b"\xfd7zXZ\x00", "xz"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\x1f\x8b\x08", "gzip"),
    ];
    MAGICS
        .iter()
        .filter_map(|(m, tool)| {
            image
                .windows(m.len())
                .position(|w| w == *m)
                .map(|i| (i, *tool))
        })
        .min_by_key(|(i, _)| *i)
}

/// How a module file is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

fn split_module_file(file: &str) -> Option<(&str, Compression)> {
    for (suffix, c) in [
        (".ko", Compression::None),
        (".ko.xz", Compression::Xz),
        (".ko.zst", Compression::Zstd),
        (".ko.gz", Compression::Gzip),
    ] {
        if let Some(stem) = file.strip_suffix(suffix) {
            return Some((stem, c));
        }
    }
    None
}

/// `kernel/fs/ext4/ext4.ko.xz` → `ext4`; `None` if not a module file name.
pub fn module_name_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    split_module_file(file).map(|(stem, _)| normalize(stem))
}

/// Reads a module file, decompressing it with the host tool if needed.
pub fn read_module(path: &Path) -> Result<Vec<u8>, KernelError> {
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let compression = split_module_file(file)
        .map(|(_, c)| c)
        .unwrap_or(Compression::None);
    let tool = match compression {
        Compression::None => {
            return fs::read(path).map_err(|e| KernelError::BadModule {
                path: path.to_path_buf(),
                error: e.to_string(),
            })
        }
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
        Compression::Gzip => "gzip",
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|e| KernelError::BadModule {
            path: path.to_path_buf(),
            error: format!("{} -dc: {}", tool, e),
        })?;
    if !out.status.success() {
        return Err(KernelError::BadModule {
            path: path.to_path_buf(),
            error: format!(
                "{} -dc: {}",
                tool,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

/// A module to load: its name, uncompressed contents and direct
/// dependencies.
#[derive(Clone, Debug)]
pub struct Module {
    pub name: String,
    pub source: PathBuf,
    pub bytes: Vec<u8>,
    pub depends: Vec<String>,
}

/// Modules in load order (every module after its dependencies).
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    pub modules: Vec<Module>,
    /// Dependencies satisfied by the kernel itself.
    pub builtin: Vec<String>,
    /// Soft dependencies that name no module file (see module docs).
    pub notes: Vec<String>,
}

/// The modules of one kernel, by name.
#[derive(Clone, Debug)]
pub struct ModuleTree {
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

/// Parses `depends=` (comma-separated) and `softdep=` (`pre: a b post: c`)
/// into (hard, soft-pre) dependency names.
pub fn dependencies(info: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let mut hard = Vec::new();
    let mut soft = Vec::new();
    for (k, v) in info {
        match k.as_str() {
            "depends" => hard.extend(v.split(',').filter(|s| !s.trim().is_empty()).map(normalize)),
            "softdep" => {
                let mut pre = false;
                for word in v.split_whitespace() {
                    match word {
                        "pre:" => pre = true,
                        "post:" => pre = false,
                        w if pre => soft.push(normalize(w)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (hard, soft)
}

impl ModuleTree {
    /// A tree from explicit parts (tests).
    pub fn from_parts(files: BTreeMap<String, PathBuf>, builtin: BTreeSet<String>) -> ModuleTree {
        ModuleTree { files, builtin }
    }

    pub fn path_of(&self, name: &str) -> Option<&Path> {
        self.files.get(&normalize(name)).map(|p| p.as_path())
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// `wanted` and everything they need, dependencies first. A wanted
    /// module that is built in is skipped (and listed in `builtin`).
    pub fn resolve(&self, wanted: &[&str]) -> Result<Resolved, KernelError> {
        let mut out = Resolved::default();
        let mut loaded: BTreeMap<String, Module> = BTreeMap::new();
        // Collect the closure.
        let mut todo: Vec<(String, Option<String>, bool)> = wanted
            .iter()
            .rev()
            .map(|w| (normalize(w), None, false))
            .collect();
        while let Some((name, by, soft)) = todo.pop() {
            if loaded.contains_key(&name) || out.builtin.contains(&name) {
                continue;
            }
            let Some(path) = self.files.get(&name) else {
                if self.builtin.contains(&name) {
                    out.builtin.push(name);
                    continue;
                }
                if soft {
                    out.notes.push(format!(
                        "soft dependency {} of {} is not a module file (an alias?): list its provider explicitly",
                        name,
                        by.unwrap_or_default()
                    ));
                    continue;
                }
                return Err(KernelError::UnknownModule {
                    name,
                    needed_by: by,
                });
            };
            let bytes = read_module(path)?;
            let info = elf::modinfo(&bytes).map_err(|e| KernelError::BadModule {
                path: path.clone(),
                error: e.to_string(),
            })?;
            let (hard, softs) = dependencies(&info);
            for d in &hard {
                todo.push((d.clone(), Some(name.clone()), false));
            }
            for d in &softs {
                todo.push((d.clone(), Some(name.clone()), true));
            }
            let mut depends = hard;
            depends.extend(softs.into_iter().filter(|s| self.files.contains_key(s)));
            loaded.insert(
                name.clone(),
                Module {
                    name,
                    source: path.clone(),
                    bytes,
                    depends,
                },
            );
        }
        // Dependencies first, in the caller's order where they allow.
        let mut state = BTreeMap::new();
        for w in wanted {
            visit(
                &normalize(w),
                &loaded,
                &mut state,
                &mut Vec::new(),
                &mut out.modules,
            )?;
        }
        Ok(out)
    }
}

/// Depth-first post-order over the dependency graph: every module after its
/// dependencies; `path` is the current chain, for cycle reports.
fn visit(
    name: &str,
    loaded: &BTreeMap<String, Module>,
    state: &mut BTreeMap<String, bool>,
    path: &mut Vec<String>,
    out: &mut Vec<Module>,
) -> Result<(), KernelError> {
    let Some(m) = loaded.get(name) else {
        return Ok(());
    }; // built in, or an unresolved soft dependency
    match state.get(name) {
        Some(true) => return Ok(()),
        Some(false) => {
            let mut names = path.clone();
            names.push(name.to_string());
            return Err(KernelError::Cycle { names });
        }
        None => {}
    }
    state.insert(name.to_string(), false);
    path.push(name.to_string());
    for d in &m.depends {
        visit(d, loaded, state, path, out)?;
    }
    path.pop();
    state.insert(name.to_string(), true);
    out.push(m.clone());
    Ok(())
}

/// `xz` etc. exist on the host (for compressed modules).
pub fn host_tool_works(tool: &str) -> bool {
    run(Command::new(tool).arg("--version")).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_normalise_dashes_and_compression_suffixes() {
        assert_eq!(
            module_name_of(Path::new("kernel/crypto/crc32c-generic.ko.xz")).as_deref(),
            Some("crc32c_generic")
        );
        assert_eq!(
            module_name_of(Path::new("a/ext4.ko")).as_deref(),
            Some("ext4")
        );
        assert_eq!(
            module_name_of(Path::new("a/ext4.ko.zst")).as_deref(),
            Some("ext4")
        );
        assert_eq!(module_name_of(Path::new("a/README")), None);
    }

    #[test]
    fn bzimage_payload_is_found_by_its_magic() {
        let mut img = vec![0u8; 600];
        img.extend_from_slice(b"\x1f\x8b\x08junk");
        img.extend_from_slice(b"\xfd7zXZ\x00stream");
        assert_eq!(payload_start(&img), Some((600, "gzip")));
        assert_eq!(payload_start(&img[601..]).map(|(_, t)| t), Some("xz"));
        assert_eq!(payload_start(b"plain"), None);
    }

    #[test]
    fn depends_and_pre_softdeps_are_parsed() {
        let info = vec![
            ("depends".to_string(), "mbcache,jbd2,crc16".to_string()),
            (
                "softdep".to_string(),
                "pre: crc32c post: foo-bar".to_string(),
            ),
        ];
        let (hard, soft) = dependencies(&info);
        assert_eq!(hard, vec!["mbcache", "jbd2", "crc16"]);
        assert_eq!(soft, vec!["crc32c"]);
        let (hard, soft) = dependencies(&[("depends".to_string(), String::new())]);
        assert!(hard.is_empty() && soft.is_empty());
    }

    fn tree_of(dir: &Path, mods: &[(&str, &str)]) -> ModuleTree {
        let mut files = BTreeMap::new();
        for (name, depends) in mods {
            let p = dir.join(format!("{}.ko", name));
            fs::write(
                &p,
                crate::elf::fake_module(format!("depends={}\0", depends).as_bytes()),
            )
            .unwrap();
            files.insert(normalize(name), p);
        }
        ModuleTree::from_parts(files, ["builtin_one".to_string()].into_iter().collect())
    }

    fn scratch(label: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("tether-vm-kernel-{}-{}", label, std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn modules_come_after_their_dependencies() {
        let d = scratch("order");
        let tree = tree_of(
            &d,
            &[
                ("i6300esb", "watchdog"),
                ("watchdog", ""),
                ("ext4", "mbcache,jbd2,crc16,builtin_one"),
                ("jbd2", ""),
                ("mbcache", ""),
                ("crc16", ""),
            ],
        );
        let r = tree.resolve(&["i6300esb", "ext4"]).unwrap();
        let names: Vec<&str> = r.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["watchdog", "i6300esb", "mbcache", "jbd2", "crc16", "ext4"]
        );
        assert_eq!(r.builtin, vec!["builtin_one"]);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn dependency_cycle_is_reported() {
        let d = scratch("cycle");
        let tree = tree_of(&d, &[("a", "b"), ("b", "a")]);
        assert!(matches!(
            tree.resolve(&["a"]).unwrap_err(),
            KernelError::Cycle { .. }
        ));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn unknown_module_is_an_error_naming_it() {
        let tree = ModuleTree::from_parts(
            BTreeMap::new(),
            ["virtio".to_string()].into_iter().collect(),
        );
        let r = tree.resolve(&["virtio"]).unwrap();
        assert!(r.modules.is_empty());
        assert_eq!(r.builtin, vec!["virtio"]);
        let e = tree.resolve(&["nope"]).unwrap_err();
        assert!(e.to_string().contains("nope"), "{}", e);
    }
}
