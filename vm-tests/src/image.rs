//! Assembling a guest: the cached assets (kernel, modules, busybox), the
//! base initramfs every guest shares, and the preinit script.
//!
//! Every guest boots the same way: the kernel runs `/init`, a busybox
//! shell script (the preinit, [`PREINIT`]) that mounts `/proc`, `/sys`,
//! `/dev`, loads the modules listed in `/etc/tether-vm/modules` in
//! dependency order (`i6300esb` with `nowayout=1`, the watchdog core with
//! `stop_on_reboot=0`: see [`BASE_MODULES`]), mounts the disk on
//! `/var` when there is one, prints a `tether-vm: userspace` line with the
//! guest's uptime, and then `exec`s `/etc/tether-vm/next`, which stays PID 1:
//! a test script, or the appliance's stage that starts the fault agent and
//! `exec`s `tether-init`.
//!
//! Decision: modules are loaded by the preinit (busybox `insmod`), not by
//! tether-init: the product's init mounts and supervises, and loading
//! drivers is the image's business, as an initramfs does on a real
//! appliance.

use crate::initramfs::Initramfs;
use crate::kernel::{Kernel, ModuleTree, Resolved};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("vm-tests lives in the workspace")
        .to_path_buf()
}

/// The workspace's `target/` (`TETHER_VM_TARGET` overrides): the cache,
/// static binaries, transcripts and the matrix report go under it.
pub fn target_dir() -> PathBuf {
    std::env::var_os("TETHER_VM_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Downloads and unpacked packages (`target/vm-cache`, or `TETHER_VM_CACHE`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("TETHER_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("vm-cache"))
}

/// Modules every guest loads, in the order wanted, with parameters.
/// `crc32c_generic` provides the `crc32c` ext4 asks for by alias.
///
/// `watchdog stop_on_reboot=0`: the watchdog core's reboot notifier
/// (`drivers/watchdog/watchdog_core.c`) otherwise calls the driver's `stop`
/// on restart and halt for every watchdog flagged `WDOG_STOP_ON_REBOOT`
/// (`i6300esb` sets it), bypassing `nowayout`; a driver's shutdown hook
/// that hangs after that leaves no backstop (`tests/reboot.rs`). It is a
/// module option here, not `watchdog.stop_on_reboot=0` on the kernel
/// command line: the kernel applies command-line parameters to built-in
/// code only, and busybox `insmod` (unlike kmod's `modprobe`) does not read
/// them from `/proc/cmdline`. `i6300esb nowayout=1` also sets the chip's
/// lock bit, which alone makes that stop fail on the 6300ESB; most other
/// drivers have no such bit.
pub const BASE_MODULES: &[(&str, &str)] = &[
    ("virtio_pci", ""),
    ("virtio_blk", ""),
    ("crc32c_generic", ""),
    ("ext4", ""),
    ("watchdog", "stop_on_reboot=0"),
    ("i6300esb", "nowayout=1"),
];

/// The things a guest is made of, fetched once per process.
pub struct Assets {
    pub cache: PathBuf,
    pub kernel: Kernel,
    /// What QEMU boots ([`Kernel::boot_image`]).
    pub boot_image: PathBuf,
    pub tree: ModuleTree,
    pub busybox: PathBuf,
}

impl Assets {
    /// Fetches (first call) or returns the assets. The error is a message
    /// saying what is missing and how to get it.
    pub fn get() -> Result<&'static Assets, String> {
        static ASSETS: OnceLock<Result<Assets, String>> = OnceLock::new();
        ASSETS
            .get_or_init(|| {
                let cache = cache_dir();
                let kernel =
                    crate::kernel::Kernel::from_cache(&cache).map_err(|e| e.to_string())?;
                let boot_image = kernel.boot_image(&cache);
                let tree = kernel.module_tree().map_err(|e| e.to_string())?;
                let busybox = crate::fetch::busybox(&cache).map_err(|e| e.to_string())?;
                Ok(Assets {
                    cache,
                    kernel,
                    boot_image,
                    tree,
                    busybox,
                })
            })
            .as_ref()
            .map_err(|e| e.clone())
    }
}

/// The preinit, `/init` of every guest. See the module docs.
pub const PREINIT: &str = r#"#!/bin/sh
# tether-vm preinit (written by vm-tests/src/image.rs): mounts, modules,
# disk, then exec /etc/tether-vm/next as PID 1.
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp /var
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
echo "tether-vm: userspace uptime=$(cut -d' ' -f1 /proc/uptime)"
while read -r mod args; do
    [ -n "$mod" ] || continue
    insmod "/lib/modules/$mod.ko" $args || echo "tether-vm: insmod $mod failed"
done < /etc/tether-vm/modules
if grep -q '^disk=1' /etc/tether-vm/settings; then
    n=0
    while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.05; n=$((n + 1)); done
    if mount -t ext4 -o commit=1 /dev/vda /var; then
        mkdir -p /var/lib/tether /var/log
    else
        echo "tether-vm: disk mount failed"
    fi
fi
echo "tether-vm: preinit done uptime=$(cut -d' ' -f1 /proc/uptime) watchdog=$(cat /sys/class/watchdog/watchdog0/identity 2>/dev/null) bootstatus=$(cat /sys/class/watchdog/watchdog0/bootstatus 2>/dev/null)"
exec /etc/tether-vm/next
"#;

/// A guest image being assembled: the base plus whatever the test adds.
pub struct Image {
    pub archive: Initramfs,
    pub modules: Resolved,
}

/// The parameter names a module accepts (`parm=name:description`).
fn module_params(bytes: &[u8]) -> Vec<String> {
    crate::elf::modinfo(bytes)
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == "parm")
        .filter_map(|(_, v)| v.split(':').next().map(|s| s.to_string()))
        .collect()
}

impl Image {
    /// busybox, the preinit, the modules of `modules` (with their
    /// dependencies), and `/etc/tether-vm/{modules,settings}`. `next` is the
    /// program the preinit execs. Parameters are checked against the
    /// module's declared ones, so a typo fails here, not silently in the
    /// guest.
    pub fn base(
        assets: &Assets,
        modules: &[(&str, &str)],
        disk: bool,
        next: &str,
    ) -> Result<Image, String> {
        let names: Vec<&str> = modules.iter().map(|(n, _)| *n).collect();
        let resolved = assets.tree.resolve(&names).map_err(|e| e.to_string())?;
        let mut a = Initramfs::new();
        a.host_file("/bin/busybox", 0o755, &assets.busybox)
            .map_err(|e| e.to_string())?;
        a.symlink("/bin/sh", "busybox");
        a.char_dev("/dev/console", 0o600, 5, 1);
        for d in [
            "/proc",
            "/sys",
            "/dev",
            "/run",
            "/tmp",
            "/var",
            "/root",
            "/etc",
            "/sbin",
            "/usr/bin",
            "/usr/sbin",
        ] {
            a.dir(d);
        }
        a.file("/init", 0o755, PREINIT);
        a.file("/etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n");
        a.file("/etc/group", 0o644, "root:x:0:\n");
        let mut list = String::new();
        for m in &resolved.modules {
            let params = modules
                .iter()
                .find(|(n, _)| crate::kernel::normalize(n) == m.name)
                .map(|(_, p)| *p)
                .unwrap_or("");
            let known = module_params(&m.bytes);
            for p in params.split_whitespace() {
                let key = p.split('=').next().unwrap_or(p);
                if !known.iter().any(|k| k == key) {
                    return Err(format!(
                        "module {} has no parameter {} (it has: {})",
                        m.name,
                        key,
                        known.join(", ")
                    ));
                }
            }
            a.file(
                &format!("/lib/modules/{}.ko", m.name),
                0o644,
                m.bytes.clone(),
            );
            let _ = writeln!(list, "{} {}", m.name, params);
        }
        a.file("/etc/tether-vm/modules", 0o644, list);
        a.file(
            "/etc/tether-vm/settings",
            0o644,
            format!("disk={}\n", if disk { 1 } else { 0 }),
        );
        a.file("/etc/tether-vm/next", 0o755, next);
        Ok(Image {
            archive: a,
            modules: resolved,
        })
    }

    /// Writes the initramfs to `path`.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        self.archive
            .write_file(path)
            .map_err(|e| format!("write {}: {}", path.display(), e))
    }
}

/// A scratch directory for one VM test under `target/vm-runs/NAME`
/// (kept after the run, for the transcript and the disk; replaced by the
/// next run of the same test).
pub fn run_dir(name: &str) -> PathBuf {
    let d = target_dir().join("vm-runs").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the run directory under target/");
    d
}
