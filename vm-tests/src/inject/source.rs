//! The user's image as `tether-inject` takes it: a kernel and an initramfs
//! (newc cpio, uncompressed or gzip/zstd/xz, possibly several archives
//! concatenated as the kernel accepts them), read here for what the plan
//! checks need, and the overlay that injects the fault agent at boot.
//!
//! Injection (docs/INJECT.md): a second newc archive appended to the
//! user's initramfs holds `/tether-inject/init` (the static `tether-fault`
//! binary, run as `tether-fault preinit`), `/tether-inject/tether-fault`
//! and `/tether-inject/next` (the image's own init, `/init` by default);
//! the kernel command line gets `rdinit=/tether-inject/init`. The preinit
//! mounts `/proc` and `/dev` (devtmpfs) when they are not there, starts the
//! agent on `/dev/ttyS1` (its own process group, outside the chain) and
//! `exec`s the image's init as PID 1. The image is not modified.

use super::plan::{ImageFacts, ServiceFacts};
use crate::initramfs::Initramfs;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The files of an initramfs, by path without the leading `/`.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Reads every archive of an initramfs (decompressing with the host's
/// `gzip`, `zstd` or `xz` as the magic says).
pub fn read_initramfs(path: &Path) -> Result<Files, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {}", path.display(), e))?;
    let mut files = Files::new();
    parse_archives(&bytes, &mut files).map_err(|e| format!("{}: {}", path.display(), e))?;
    Ok(files)
}

fn decompress(tool: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {} to decompress the initramfs: {}", tool, e))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {}", tool, e))?;
    let _ = writer.join();
    // Trailing garbage after the stream (padding) makes some tools exit
    // non-zero while the data is whole: judge by the output.
    if out.stdout.is_empty() {
        return Err(format!("{} -dc gave nothing", tool));
    }
    Ok(out.stdout)
}

/// newc archives one after the other, zero padding between them, a
/// compressed tail decompressed and parsed on.
pub fn parse_archives(mut b: &[u8], files: &mut Files) -> Result<(), String> {
    loop {
        while b.first() == Some(&0) {
            b = &b[1..];
        }
        if b.is_empty() {
            return Ok(());
        }
        let tool = match b {
            [0x1f, 0x8b, ..] => Some("gzip"),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Some("xz"),
            _ => None,
        };
        if let Some(tool) = tool {
            let data = decompress(tool, b)?;
            return parse_archives(&data, files);
        }
        b = parse_newc(b, files)?;
    }
}

/// One newc archive; returns what follows its trailer.
fn parse_newc<'a>(mut b: &'a [u8], files: &mut Files) -> Result<&'a [u8], String> {
    let start_len = b.len();
    loop {
        let at = start_len - b.len();
        if b.len() < 110 || !(b.starts_with(b"070701") || b.starts_with(b"070702")) {
            return Err(format!("not a newc cpio archive at byte {}", at));
        }
        let field = |i: usize| -> Result<usize, String> {
            let s =
                std::str::from_utf8(&b[6 + i * 8..6 + (i + 1) * 8]).map_err(|_| "bad header")?;
            usize::from_str_radix(s, 16).map_err(|_| format!("bad header field at byte {}", at))
        };
        let mode = field(1)?;
        let filesize = field(6)?;
        let namesize = field(11)?;
        let name_end = 110 + namesize;
        if b.len() < name_end {
            return Err(format!("truncated archive at byte {}", at));
        }
        let name = String::from_utf8_lossy(&b[110..name_end.saturating_sub(1)]).into_owned();
        let data_start = (name_end + 3) & !3;
        let data_end = data_start + filesize;
        if b.len() < data_end {
            return Err(format!("truncated archive at byte {}", at));
        }
        let data = &b[data_start..data_end];
        b = &b[((data_end + 3) & !3).min(b.len())..];
        if name == "TRAILER!!!" {
            return Ok(b);
        }
        let name = name
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        // Regular files only (symlinks are recorded as their target text,
        // which no check needs).
        if mode & 0o170000 == 0o100000 {
            files.insert(name, data.to_vec());
        } else {
            files.entry(name).or_default();
        }
    }
}

/// `debugfs -c -R REQUEST DISK` (read-only; `-c`: bitmaps not read, so a
/// disk left by a hard reset with stale bitmap checksums still opens), its
/// stdout.
fn debugfs(disk: &Path, request: &str) -> Result<(bool, Vec<u8>), String> {
    let out = Command::new(crate::disk::sbin_tool("debugfs"))
        .arg("-c")
        .arg("-R")
        .arg(request)
        .arg(disk)
        .output()
        .map_err(|e| format!("cannot run debugfs (e2fsprogs): {}", e))?;
    let err = String::from_utf8_lossy(&out.stderr);
    let missing = err.contains("File not found") || err.contains("not found by ext2_lookup");
    Ok((out.status.success() && !missing, out.stdout))
}

/// The files of an ext4 root disk the plan checks need (read with
/// `debugfs`, the disk untouched): `tether-init` (its presence),
/// `/etc/tether/tether.toml` and the service files of its `[paths]
/// services`.
pub fn disk_files(disk: &Path) -> Result<Files, String> {
    let what = disk.display();
    let mut files = Files::new();
    for p in [
        "sbin/tether-init",
        "usr/sbin/tether-init",
        "bin/tether-init",
        "usr/bin/tether-init",
    ] {
        if debugfs(disk, &format!("stat /{}", p))?.0 {
            files.insert(p.to_string(), Vec::new());
        }
    }
    let (ok, toml) = debugfs(disk, "cat /etc/tether/tether.toml")?;
    if !ok {
        return Ok(files);
    }
    let text = String::from_utf8_lossy(&toml).into_owned();
    files.insert("etc/tether/tether.toml".into(), toml);
    let config = tether_common::config::Config::parse(&text, Path::new("/etc/tether/tether.toml"))
        .map_err(|e| format!("{}: {}", what, e))?;
    let dir = config
        .paths
        .services
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string();
    let (_, ls) = debugfs(disk, &format!("ls -p /{}", dir))?;
    // `ls -p`: `/inode/mode/uid/gid/name/size/` per entry.
    for line in String::from_utf8_lossy(&ls).lines() {
        let f: Vec<&str> = line.split('/').collect();
        let (Some(mode), Some(name)) = (f.get(2), f.get(5)) else {
            continue;
        };
        if !mode.starts_with("100") || !name.ends_with(".toml") {
            continue;
        }
        let (ok, bytes) = debugfs(disk, &format!("cat /{}/{}", dir, name))?;
        if ok {
            files.insert(format!("{}/{}", dir, name), bytes);
        }
    }
    Ok(files)
}

/// Injects the agent into `disk` (a copy of the user's root disk, written
/// with `debugfs -w`): `/tether-inject/{init,tether-fault,next}` as in the
/// initramfs overlay; the kernel's `init=/tether-inject/init` makes the
/// image's own initramfs `switch_root` to it.
pub fn inject_into_disk(
    disk: &Path,
    tether_fault: &Path,
    next_init: &str,
    scratch: &Path,
) -> Result<(), String> {
    let next = scratch.join("next");
    std::fs::write(&next, format!("{}\n", next_init))
        .map_err(|e| format!("{}: {}", next.display(), e))?;
    let script = scratch.join("inject.debugfs");
    let f = tether_fault.display();
    std::fs::write(
        &script,
        format!(
            "mkdir /tether-inject\nwrite {f} /tether-inject/init\nwrite {f} /tether-inject/tether-fault\nwrite {} /tether-inject/next\nsif /tether-inject/init mode 0100755\nsif /tether-inject/tether-fault mode 0100755\nsif /tether-inject/next mode 0100644\n",
            next.display()
        ),
    )
    .map_err(|e| format!("{}: {}", script.display(), e))?;
    // The copy may come from a disk left by a reset: make it consistent
    // first (the copy only; the user's disk is never written).
    let fsck = Command::new(crate::disk::sbin_tool("e2fsck"))
        .args(["-f", "-y"])
        .arg(disk)
        .output()
        .map_err(|e| format!("cannot run e2fsck (e2fsprogs): {}", e))?;
    if fsck.status.code().is_some_and(|c| c >= 4) {
        return Err(format!(
            "{}: e2fsck -f -y of the copy failed ({}): {}",
            disk.display(),
            fsck.status,
            String::from_utf8_lossy(&fsck.stdout).trim()
        ));
    }
    let out = Command::new(crate::disk::sbin_tool("debugfs"))
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(disk)
        .output()
        .map_err(|e| format!("cannot run debugfs (e2fsprogs): {}", e))?;
    if !out.status.success() || !debugfs(disk, "stat /tether-inject/tether-fault")?.0 {
        return Err(format!(
            "{}: injecting the agent with debugfs failed: {}",
            disk.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A root directory, or a tarball of one (unpacked with the host's `tar`
/// into `scratch`), turned into a newc initramfs: directories, regular
/// files and symlinks with their permission bits; device nodes, sockets
/// and FIFOs are left out (the injected preinit mounts a devtmpfs).
pub fn initramfs_from_root(root: &Path, scratch: &Path) -> Result<Vec<u8>, String> {
    let dir = if root.is_dir() {
        root.to_path_buf()
    } else if root.is_file() {
        let d = scratch.join("root");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {}", d.display(), e))?;
        let st = Command::new("tar")
            .arg("-xf")
            .arg(root)
            .arg("-C")
            .arg(&d)
            .status()
            .map_err(|e| format!("cannot run tar: {}", e))?;
        if !st.success() {
            return Err(format!("{}: tar -xf failed ({})", root.display(), st));
        }
        d
    } else {
        return Err(format!("{}: no such directory or tarball", root.display()));
    };
    let mut a = Initramfs::new();
    add_tree(&mut a, &dir, "").map_err(|e| format!("{}: {}", dir.display(), e))?;
    Ok(a.to_bytes())
}

fn add_tree(a: &mut Initramfs, host: &Path, at: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(host)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = format!("{}/{}", at, e.file_name().to_string_lossy());
        let meta = std::fs::symlink_metadata(e.path())?;
        let perm = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let t = std::fs::read_link(e.path())?;
            a.symlink(&name, &t.to_string_lossy());
        } else if ft.is_dir() {
            a.dir(&name);
            add_tree(a, &e.path(), &name)?;
        } else if ft.is_file() {
            a.host_file(&name, perm, &e.path())?;
        }
    }
    Ok(())
}

/// The facts the plan checks need, read from the image's files: tether
/// installed (`tether-init` somewhere), its `tether.toml` and services.
pub fn facts(files: &Files, what: &str) -> Result<ImageFacts, String> {
    if !files
        .keys()
        .any(|p| p == "sbin/tether-init" || p.ends_with("/tether-init"))
    {
        return Err(format!(
            "{}: the image has no tether-init (looked for */tether-init): install tether in it",
            what
        ));
    }
    let toml = files
        .get("etc/tether/tether.toml")
        .ok_or_else(|| format!("{}: the image has no /etc/tether/tether.toml", what))?;
    let text = String::from_utf8_lossy(toml);
    let config = tether_common::config::Config::parse(&text, Path::new("/etc/tether/tether.toml"))
        .map_err(|e| format!("{}: {}", what, e))?;
    let dir = config
        .paths
        .services
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string();
    let mut services = BTreeMap::new();
    let mut specs = Vec::new();
    for (path, bytes) in files {
        let Some(rest) = path.strip_prefix(&format!("{}/", dir)) else {
            continue;
        };
        if rest.contains('/') || !rest.ends_with(".toml") {
            continue;
        }
        let file = PathBuf::from(format!("/{}", path));
        let spec = tether_restarter::service::parse(&String::from_utf8_lossy(bytes), &file)
            .map_err(|e| format!("{}: {}", what, e))?;
        services.insert(
            spec.name.clone(),
            ServiceFacts {
                watchdog: spec.notify == tether_restarter::service::NotifyMode::Watchdog
                    && spec.watchdog_timeout.is_some(),
                reboots: spec.limit.is_some()
                    && spec.on_exhausted == tether_restarter::service::OnExhausted::Reboot,
            },
        );
        specs.push(spec);
    }
    let mut bounds = tether_common::budget::table(&config);
    bounds.extend(tether_restarter::supervisor::service_budget_rows(&specs));
    Ok(ImageFacts {
        config,
        services,
        bounds,
        ssh: false,
    })
}

/// Whether `path` is a Debian package (an `ar` archive).
pub fn is_deb(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"!<arch>\n"
}

/// A Debian kernel package given as `--kernel` (`linux-image-*.deb`):
/// unpacked into `dir/package` with `dpkg-deb -x`; what QEMU boots is its
/// `boot/vmlinuz-*`, or the uncompressed ELF extracted from it into `dir`
/// when the kernel has a PVH entry point (faster under TCG; see
/// `crate::kernel::Kernel::boot_image`).
pub fn kernel_from_package(deb: &Path, dir: &Path) -> Result<PathBuf, String> {
    let root = dir.join("package");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {}", root.display(), e))?;
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(&root)
        .output()
        .map_err(|e| {
            format!(
                "--kernel {}: cannot run dpkg-deb ({}); install dpkg",
                deb.display(),
                e
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "--kernel {}: dpkg-deb -x: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let k = crate::kernel::Kernel::from_root(&root).map_err(|e| {
        format!(
            "--kernel {}: not a kernel package (linux-image-*): {}",
            deb.display(),
            e
        )
    })?;
    Ok(k.boot_image(dir))
}

/// The overlay archive (see the module doc): `tether-fault` as preinit and
/// agent, and the path of the image's own init.
pub fn overlay(tether_fault: &Path, next_init: &str) -> Result<Vec<u8>, String> {
    let mut a = Initramfs::new();
    a.dir("/tether-inject");
    a.host_file("/tether-inject/init", 0o755, tether_fault)
        .map_err(|e| format!("{}: {}", tether_fault.display(), e))?;
    a.host_file("/tether-inject/tether-fault", 0o755, tether_fault)
        .map_err(|e| format!("{}: {}", tether_fault.display(), e))?;
    a.file("/tether-inject/next", 0o644, format!("{}\n", next_init));
    Ok(a.to_bytes())
}

/// The user's initramfs with the overlay appended (4-byte aligned, as
/// the kernel wants the next archive).
pub fn with_overlay(user: &[u8], overlay: &[u8]) -> Vec<u8> {
    let mut out = user.to_vec();
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(overlay);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_and_an_appended_overlay_read_back() {
        let mut a = Initramfs::new();
        a.file("/etc/tether/tether.toml", 0o644, "x");
        a.file("/sbin/tether-init", 0o755, "elf");
        let mut user = a.to_bytes();
        user.push(0); // misaligned on purpose
        let ov = overlay(Path::new("/proc/self/exe"), "/init").unwrap();
        let both = with_overlay(&user, &ov);
        let mut files = Files::new();
        parse_archives(&both, &mut files).unwrap();
        assert_eq!(files["etc/tether/tether.toml"], b"x");
        assert_eq!(files["tether-inject/next"], b"/init\n");
        assert!(files.contains_key("tether-inject/init"));
    }

    #[test]
    fn a_root_directory_and_its_tarball_become_the_same_initramfs() {
        let d = std::env::temp_dir().join(format!("tether-inject-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("root/etc/tether")).unwrap();
        std::fs::create_dir_all(d.join("root/sbin")).unwrap();
        std::fs::write(d.join("root/etc/tether/tether.toml"), "x").unwrap();
        std::fs::write(d.join("root/sbin/tether-init"), "elf").unwrap();
        std::os::unix::fs::symlink("sbin/tether-init", d.join("root/init")).unwrap();
        let from_dir = initramfs_from_root(&d.join("root"), &d).unwrap();
        let st = Command::new("tar")
            .arg("-cf")
            .arg(d.join("root.tar"))
            .arg("-C")
            .arg(d.join("root"))
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let from_tar = initramfs_from_root(&d.join("root.tar"), &d.join("scratch")).unwrap();
        for bytes in [&from_dir, &from_tar] {
            let mut files = Files::new();
            parse_archives(bytes, &mut files).unwrap();
            assert_eq!(files["etc/tether/tether.toml"], b"x");
            assert_eq!(files["sbin/tether-init"], b"elf");
            assert!(files.contains_key("init"));
        }
        let e = initramfs_from_root(&d.join("nothing"), &d).unwrap_err();
        assert!(e.contains("no such directory or tarball"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut files = Files::new();
        let e = parse_archives(b"070701zzzz", &mut files).unwrap_err();
        assert!(e.contains("byte 0"), "{e}");
        let e = parse_archives(b"hello world", &mut files).unwrap_err();
        assert!(e.contains("not a newc"), "{e}");
    }

    #[test]
    fn an_image_without_tether_is_named_as_such() {
        let mut files = Files::new();
        files.insert("bin/sh".into(), vec![]);
        let e = facts(&files, "img.cpio").unwrap_err();
        assert!(e.contains("no tether-init"), "{e}");
        files.insert("sbin/tether-init".into(), vec![]);
        let e = facts(&files, "img.cpio").unwrap_err();
        assert!(e.contains("/etc/tether/tether.toml"), "{e}");
    }
}
