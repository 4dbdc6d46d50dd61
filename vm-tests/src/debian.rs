//! The Debian appliance (issue 15): a Debian 12 root filesystem built from
//! the package archive with `mmdebstrap`, turned into an ext4 disk, booted
//! with `init=/sbin/tether-init` (or Debian's systemd, for the comparison)
//! on the Debian kernel the VM tier already uses, with the i6300esb.
//!
//! Layers of the image:
//!
//! 1. the root filesystem tarball, `target/vm-cache/debian/<key>/rootfs.tar`:
//!    `mmdebstrap --variant=minbase` of bookworm with [`PACKAGES`] and the
//!    customize hooks of [`HOOKS`]; `<key>` is a hash of the suite, the
//!    package list and the hooks, so changing any of them builds anew;
//! 2. the base disk, `base.ext4` beside it: the tarball unpacked as root
//!    and `mkfs.ext4 -d` of that tree (owners and modes kept);
//! 3. per run: a sparse copy of the base disk; `debugfs -w` writes the
//!    run's files into it ([`Overlay`]: the run's ssh key in
//!    `/root/.ssh/authorized_keys`, the rsyslog forwarding drop-in, the
//!    fault helper, chrony's hand-written service); then, loop-mounted,
//!    tether is installed from its `.deb` (`./package.sh --no-build` over
//!    the static build, `chroot MNT dpkg -i`) and Debian's own units are
//!    imported with the packaged `tetherctl import` in a chroot
//!    ([`install_tether`]; the report lands in the run directory).
//!
//! Boot: the kernel runs the shared preinit of [`crate::image`] from a small
//! initramfs (it loads the modules by path: Debian's kernel package has no
//! `modules.dep`), whose next stage ([`STAGE`]) configures the NIC
//! (QEMU user networking: 10.0.2.15/24, gateway 10.0.2.2), mounts `/dev/vda`
//! read-write on `/newroot`, moves `/dev` (with `/dev/pts`) and `/run` into
//! it and `switch_root`s to the `init=` of the kernel command line. Both
//! init systems get exactly the same kernel, modules, network and disk.
//!
//! Network: `-netdev user,restrict=on`: the guest reaches nothing outside
//! QEMU except the explicit forwards: ssh from `127.0.0.1:<port>` on the
//! host to the guest's port 22, and the guest's `10.0.2.100:514` to the
//! host's `127.0.0.1:<collector port>` (issue 16's collector), through
//! `socat` started by QEMU for each connection (`guestfwd=...-cmd:`). Not
//! 10.0.2.2: with `restrict=on` the guest cannot reach QEMU's host address,
//! and a `guestfwd` may not take it; the restriction is kept so that no
//! daemon of the image (chronyd's NTP pool, apt) ever sends a packet off
//! this machine.
//!
//! Decisions:
//! - The archive is a hard requirement: when `mmdebstrap` fails (archive
//!   unreachable, tool missing) the build fails with its output; nothing
//!   is skipped.
//! - The host keys of sshd are made by openssh-server's postinst in the
//!   image build, so they are the same for every run of one cached image;
//!   the client key is made per run (`ssh-keygen`), and the client trusts
//!   the host key it first sees in that run (`StrictHostKeyChecking=no`
//!   with a per-run `known_hosts`).
//! - ssh, rsyslog and cron are imported from Debian's units
//!   ([`IMPORTED_UNITS`]); chrony's unit is `Type=forking`, refused by
//!   import, so its service is written by hand ([`CHRONY_SERVICE`]).
//! - dpkg runs in a chroot of the mounted image (`dpkg --root` looks the
//!   image's statoverride users up in the host's NSS and aborts); the packaged `tether.toml` (a conffile) is then
//!   replaced by the tests' timings ([`TETHER_TOML`]), as an operator
//!   edits a conffile.

use crate::fetch::CacheLock;
use crate::image::{Assets, Image};
use crate::inject::session::{self, free_port, SshLogin};
use crate::qemu::{Vm, VmConfig};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Debian suite.
pub const SUITE: &str = "bookworm";

/// Packages on top of minbase: the daemons of the appliance, systemd for
/// the comparison boot, and the few tools the tests use in the guest.
pub const PACKAGES: &[&str] = &[
    "openssh-server",
    "rsyslog",
    "cron",
    "chrony",
    "systemd",
    "systemd-sysv",
    "procps",
    "iproute2",
];

/// `mmdebstrap --customize-hook`s (`$1` is the root).
pub const HOOKS: &[&str] = &[
    "echo tether-debian > \"$1/etc/hostname\"",
    "printf '127.0.0.1 localhost\\n127.0.1.1 tether-debian\\n' > \"$1/etc/hosts\"",
    "mkdir -p -m 0700 \"$1/root/.ssh\"",
    // RFC 5424 lines from /dev/log parsed as such (contrib/rsyslog/tether-forward.conf).
    "sed -i 's|^module(load=\"imuxsock\").*|module(load=\"imuxsock\" SysSock.UseSpecialParser=\"off\" SysSock.ParseHostname=\"on\" SysSock.IgnoreTimestamp=\"off\")|' \"$1/etc/rsyslog.conf\"",
    "grep -q SysSock.UseSpecialParser \"$1/etc/rsyslog.conf\"",
    // tether's lines written to /dev/kmsg while syslog was down (the boot's
    // first lines, among them how the previous boot ended) have facility
    // daemon: imklog drops those unless told not to.
    "sed -i 's|^module(load=\"imklog\").*|module(load=\"imklog\" permitnonkernelfacility=\"on\")|' \"$1/etc/rsyslog.conf\"",
    "grep -q permitnonkernelfacility \"$1/etc/rsyslog.conf\"",
    // No login prompt racing the console; the tests log in over ssh.
    "ln -sf /dev/null \"$1/etc/systemd/system/serial-getty@ttyS0.service\"",
    "ln -sf /dev/null \"$1/etc/systemd/system/getty@tty1.service\"",
    "echo 'UseDNS no' > \"$1/etc/ssh/sshd_config.d/tether-vm.conf\"",
];

/// Size of the root disk.
pub const DISK_MIB: u64 = 1536;

/// Guest memory: enough for systemd's boot too.
pub const MEMORY_MIB: u32 = 512;

/// FNV-1a 64: a stable hash for cache keys.
pub fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The cache key of the root filesystem: suite, packages, hooks.
pub fn rootfs_key() -> String {
    let mut parts = vec![SUITE, "minbase"];
    parts.extend_from_slice(PACKAGES);
    parts.push("--");
    parts.extend_from_slice(HOOKS);
    format!("{}-{:016x}", SUITE, fnv64(&parts))
}

fn run_tool(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{:?}", cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{}` could not start: {}", shown, e))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}):\n{}\n{}",
            shown,
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cached base disk (`target/vm-cache/debian/<key>/base.ext4`), built
/// when absent. Fails loudly when the archive cannot be reached.
pub fn base_disk(cache: &Path) -> Result<PathBuf, String> {
    let dir = cache.join("debian").join(rootfs_key());
    let disk = dir.join("base.ext4");
    if disk.exists() {
        return Ok(disk);
    }
    let _lock = CacheLock::take(cache).map_err(|e| e.to_string())?;
    if disk.exists() {
        return Ok(disk);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {}", dir.display(), e))?;
    let tar = dir.join("rootfs.tar");
    if !tar.exists() {
        let tmp = dir.join("rootfs.tar.tmp");
        let _ = fs::remove_file(&tmp);
        let started = Instant::now();
        eprintln!(
            "debian: building the root filesystem with mmdebstrap ({} + {})",
            SUITE,
            PACKAGES.join(",")
        );
        let mut cmd = Command::new("mmdebstrap");
        cmd.args([
            "--variant=minbase",
            "--mode=root",
            "--format=tar",
            "--quiet",
        ])
        .arg(format!("--include={}", PACKAGES.join(",")));
        for h in HOOKS {
            cmd.arg(format!("--customize-hook={}", h));
        }
        // No mirror argument: mmdebstrap uses the host's apt sources for
        // the suite (Debian's archive), as apt on the host does.
        cmd.arg(SUITE).arg(&tmp);
        run_tool(&mut cmd).map_err(|e| {
            format!(
                "building the Debian image needs the package archive and mmdebstrap (apt-get install mmdebstrap): {}",
                e
            )
        })?;
        fs::rename(&tmp, &tar).map_err(|e| format!("rename {}: {}", tmp.display(), e))?;
        eprintln!(
            "debian: root filesystem built in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    // mke2fs 1.47.0 (bookworm) takes a directory for -d, not a tarball:
    // unpack it (as root: owners and modes kept), make the disk, drop it.
    let tree = dir.join("root.tmp");
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(&tree).map_err(|e| format!("create {}: {}", tree.display(), e))?;
    run_tool(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "-xpf"])
            .arg(&tar)
            .arg("-C")
            .arg(&tree),
    )?;
    let tmp = dir.join("base.ext4.tmp");
    let _ = fs::remove_file(&tmp);
    let made = run_tool(
        Command::new(sbin_tool("mkfs.ext4"))
            .args(["-q", "-F", "-L", "debroot", "-d"])
            .arg(&tree)
            .arg(&tmp)
            .arg(format!("{}M", DISK_MIB)),
    );
    let _ = fs::remove_dir_all(&tree);
    made?;
    fs::rename(&tmp, &disk).map_err(|e| format!("rename {}: {}", tmp.display(), e))?;
    // Images of other inputs are stale: drop them (each is ~2 GB).
    if let Ok(rd) = fs::read_dir(cache.join("debian")) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.path() != dir {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(disk)
}

/// A path as it is stored in a merged-/usr root (bookworm's: `/sbin`,
/// `/bin`, `/lib` are symlinks into `/usr`, which debugfs does not follow):
/// `/sbin/tether-init` is written to `/usr/sbin/tether-init`.
pub fn merged_usr(p: &str) -> String {
    for d in ["/sbin/", "/bin/", "/lib/", "/lib64/"] {
        if p.starts_with(d) {
            return format!("/usr{}", p);
        }
    }
    p.to_string()
}

/// Files written into a copy of the base disk for one run.
#[derive(Default)]
pub struct Overlay {
    /// `(guest path, mode, contents)`.
    pub files: Vec<(String, u32, Vec<u8>)>,
    /// `(guest path, mode, host file)`.
    pub host_files: Vec<(String, u32, PathBuf)>,
    pub dirs: Vec<String>,
}

impl Overlay {
    pub fn file(&mut self, path: &str, mode: u32, text: impl Into<Vec<u8>>) {
        self.files.push((path.to_string(), mode, text.into()));
    }

    pub fn host_file(&mut self, path: &str, mode: u32, from: &Path) {
        self.host_files
            .push((path.to_string(), mode, from.to_path_buf()));
    }

    pub fn dir(&mut self, path: &str) {
        self.dirs.push(path.to_string());
    }

    /// The `debugfs -w` script that writes this overlay; `scratch` holds
    /// the in-memory files.
    pub fn script(&self, scratch: &Path) -> Result<String, String> {
        let mut s = String::new();
        let mut made = std::collections::BTreeSet::new();
        let mut mkdirs = |s: &mut String, p: &str| {
            let mut cur = String::new();
            for part in p.split('/').filter(|x| !x.is_empty()) {
                cur.push('/');
                cur.push_str(part);
                if made.insert(cur.clone()) {
                    let _ = writeln!(s, "mkdir {}", cur);
                }
            }
        };
        for d in &self.dirs {
            mkdirs(&mut s, &merged_usr(d));
        }
        fs::create_dir_all(scratch).map_err(|e| format!("{}: {}", scratch.display(), e))?;
        let mut all: Vec<(String, u32, PathBuf)> = self.host_files.clone();
        for (i, (p, m, data)) in self.files.iter().enumerate() {
            let f = scratch.join(format!("f{}", i));
            fs::write(&f, data).map_err(|e| format!("{}: {}", f.display(), e))?;
            all.push((p.clone(), *m, f));
        }
        for (p, mode, from) in &all {
            let p = &merged_usr(p);
            let (parent, name) = p.rsplit_once('/').ok_or(format!("{}: not absolute", p))?;
            if !parent.is_empty() {
                mkdirs(&mut s, parent);
            }
            let parent = if parent.is_empty() { "/" } else { parent };
            let _ = writeln!(s, "cd {}", parent);
            let _ = writeln!(s, "rm {}", name);
            let _ = writeln!(s, "write {} {}", from.display(), name);
            let _ = writeln!(s, "sif {} mode 0{:o}", name, 0o100000 | mode);
            let _ = writeln!(s, "sif {} uid 0", name);
            let _ = writeln!(s, "sif {} gid 0", name);
        }
        Ok(s)
    }

    /// Copies `base` to `disk` (sparse) and writes the overlay into it.
    pub fn apply(&self, base: &Path, disk: &Path, scratch: &Path) -> Result<(), String> {
        run_tool(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(base)
                .arg(disk),
        )?;
        let script = self.script(scratch)?;
        let sf = scratch.join("debugfs.cmd");
        fs::write(&sf, &script).map_err(|e| format!("{}: {}", sf.display(), e))?;
        run_tool(
            Command::new(sbin_tool("debugfs"))
                .arg("-w")
                .arg("-f")
                .arg(&sf)
                .arg(disk),
        )?;
        // debugfs reports errors on stderr and exits 0: check that every
        // file landed, with its size.
        let mut check = String::new();
        let mut want: Vec<(String, u64)> = Vec::new();
        // The order of `script`: host files, then in-memory ones.
        for (p, _, f) in &self.host_files {
            let len = fs::metadata(f)
                .map_err(|e| format!("{}: {}", f.display(), e))?
                .len();
            want.push((merged_usr(p), len));
        }
        for (p, _, data) in &self.files {
            want.push((merged_usr(p), data.len() as u64));
        }
        for (p, _) in &want {
            let _ = writeln!(check, "stat {}", p);
        }
        let cf = scratch.join("check.cmd");
        fs::write(&cf, &check).map_err(|e| format!("{}: {}", cf.display(), e))?;
        let out = run_tool(
            Command::new(sbin_tool("debugfs"))
                .arg("-f")
                .arg(&cf)
                .arg(disk),
        )?;
        let sizes: Vec<u64> = out
            .lines()
            .filter(|l| l.starts_with("User:"))
            .filter_map(|l| l.split("Size: ").nth(1))
            .filter_map(|r| r.split_whitespace().next()?.parse().ok())
            .collect();
        let got: Vec<u64> = sizes;
        let expect: Vec<u64> = want.iter().map(|(_, n)| *n).collect();
        if got != expect {
            return Err(format!(
                "debugfs did not write the overlay into {} (sizes {:?}, wanted {:?} for {:?}); its script: {}",
                disk.display(),
                got,
                expect,
                want.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
                sf.display()
            ));
        }
        Ok(())
    }
}

pub use crate::disk::sbin_tool;

/// Modules the Debian guest loads (by path, from the initramfs): the
/// shared ones plus the NIC.
pub const MODULES: &[(&str, &str)] = &[
    ("virtio_pci", ""),
    ("virtio_blk", ""),
    ("virtio_net", ""),
    ("crc32c_generic", ""),
    ("ext4", ""),
    ("watchdog", "stop_on_reboot=0"),
    ("i6300esb", "nowayout=1"),
];

/// The initramfs stage after the preinit: network, root, `switch_root` to
/// the `init=` of the kernel command line. See the module docs.
pub const STAGE: &str = r#"#!/bin/sh
# tether-vm Debian stage (vm-tests/src/debian.rs)
n=0
while [ ! -b /dev/vda ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n + 1)); done
mkdir -p /newroot
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "tether-vm: root mount failed"; sleep 2; reboot -f
fi
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 \
    || echo "tether-vm: network setup failed"
# The hostname, as Debian's boot scripts or systemd would set it (tether-init
# does not: the image's business, like the network).
[ -s /newroot/etc/hostname ] && hostname -F /newroot/etc/hostname
init=/sbin/tether-init
for w in $(cat /proc/cmdline); do
    case "$w" in init=*) init="${w#init=}" ;; esac
done
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=000 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
echo "tether-vm: switch_root to $init uptime=$(cut -d' ' -f1 /proc/uptime)"
mount --move /dev /newroot/dev
mount --move /run /newroot/run
umount /sys
umount /proc
exec switch_root /newroot "$init"
"#;

/// `/etc/tether/tether.toml` of the Debian appliance: the demo's timings,
/// RFC 5424 lines to `/dev/log` (rsyslog), the binaries where the `.deb`
/// puts them.
pub const TETHER_TOML: &str = r#"# The Debian appliance of tether's VM tests (vm-tests/src/debian.rs).
[timing]
beat_interval = "250ms"
hang_timeout = "2s"
restart_delay = "500ms"
startup_grace = "1s"
stale_timeout = "4s"
hardware_timeout = "5s"
liveness_interval = "10s"

[watchdog]
device = "/dev/watchdog0"

[log]
syslog_socket = "/dev/log"
kmsg = true
format = "rfc5424"

[init]
stop_timeout = "15s"
kill_grace = "2s"

[paths]
services = "/etc/tether/services"
run = "/run/tether"
state = "/var/lib/tether"
bin = "/usr/sbin"
"#;

/// The guest's address of the host's collector (see the module docs).
pub const COLLECTOR_ADDR: &str = "10.0.2.100";

/// The guest's rsyslog forwarding drop-in: contrib/rsyslog/tether-forward.conf
/// aimed at the host ([`COLLECTOR_ADDR`]:514, forwarded to the collector).
pub fn forward_conf() -> Result<String, String> {
    let p = crate::image::workspace_root().join("contrib/rsyslog/tether-forward.conf");
    let text = fs::read_to_string(&p).map_err(|e| format!("{}: {}", p.display(), e))?;
    let out = text.replace("collector.example.net", COLLECTOR_ADDR);
    if out == text {
        return Err(format!(
            "{}: no target \"collector.example.net\" to replace",
            p.display()
        ));
    }
    // The disk queue in rsyslog's work directory (Debian: /var/spool/rsyslog).
    Ok(format!(
        "global(workDirectory=\"/var/spool/rsyslog\")\n{}",
        out
    ))
}

/// Which init the guest boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitSystem {
    Tether,
    Systemd,
}

impl InitSystem {
    pub fn path(self) -> &'static str {
        match self {
            InitSystem::Tether => "/sbin/tether-init",
            InitSystem::Systemd => "/lib/systemd/systemd",
        }
    }
}

/// Options of one boot.
#[derive(Clone, Debug)]
pub struct Options {
    pub init: InitSystem,
    /// The host port a collector listens on (issue 16): the guest's
    /// rsyslog forwards there.
    pub collector_port: Option<u16>,
    /// Extra kernel command line.
    pub append: String,
    /// More tether services `(name, file)`, for a test.
    pub extra_services: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            init: InitSystem::Tether,
            collector_port: None,
            append: String::new(),
            extra_services: Vec::new(),
        }
    }
}

/// The units imported with `tetherctl import` in the image. chrony's is
/// `Type=forking`, which import refuses (with the reason): its service is
/// written by hand ([`CHRONY_SERVICE`]).
pub const IMPORTED_UNITS: &[&str] = &[
    "/lib/systemd/system/ssh.service",
    "/lib/systemd/system/rsyslog.service",
    "/lib/systemd/system/cron.service",
];

/// chronyd in the foreground (`-n`): Debian's `chrony.service` is
/// `Type=forking`, which `tetherctl import` refuses.
pub const CHRONY_SERVICE: (&str, &str) = (
    "chrony",
    r#"# By hand: Debian's chrony.service is Type=forking (refused by tetherctl import)
exec = ["/bin/sh", "-c", "mkdir -p -m 0750 /run/chrony && chown _chrony:_chrony /run/chrony && exec /usr/sbin/chronyd -n -F 1"]
after = ["rsyslog"]
restart_delay = "1s"
stop_timeout = "5s"
"#,
);

/// The fault tool's `counter` (`tether-fault counter 100`: `cseq=N` ten
/// times a second, under rsyslog's default rate limit of 200 messages per
/// 5 s from one process) for the `tether-inject` rows that check output
/// loss on this image (vm-tests/plans/debian.toml).
pub const COUNTER_SERVICE: (&str, &str) = (
    "counter",
    r#"# test only: a numbered line every 100 ms (tether-inject checks none is lost)
exec = ["/usr/sbin/tether-fault", "counter", "100"]
stop_timeout = "1s"
restart_delay = "500ms"
"#,
);

/// `./package.sh --no-build` over the static binaries just built: the
/// `.deb` (once per process; serialised with other harness processes by
/// the cache lock, since package.sh restages `target/debian/stage`).
pub fn tether_deb(cache: &Path) -> Result<PathBuf, String> {
    static DEB: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    DEB.get_or_init(|| {
        let _lock = CacheLock::take(cache).map_err(|e| e.to_string())?;
        let root = crate::image::workspace_root();
        let out = run_tool(
            Command::new("bash")
                .arg(root.join("package.sh"))
                .arg("--no-build")
                .env("TETHER_VM_TARGET", crate::image::target_dir())
                .current_dir(&root),
        )?;
        let dir = root.join("target/debian");
        let mut debs: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| format!("{}: {}", dir.display(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("tether_") && n.ends_with("_amd64.deb"))
            })
            .collect();
        debs.sort();
        debs.pop()
            .ok_or_else(|| format!("package.sh made no .deb in {}: {}", dir.display(), out))
    })
    .clone()
}

/// A loop mount of a disk image, unmounted when dropped.
struct LoopMount {
    dir: PathBuf,
}

impl LoopMount {
    fn new(disk: &Path, dir: &Path) -> Result<LoopMount, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {}", dir.display(), e))?;
        run_tool(
            Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(disk)
                .arg(dir),
        )
        .map_err(|e| format!("loop mount of the root disk (needs root): {}", e))?;
        Ok(LoopMount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = run_tool(Command::new("umount").arg(&self.dir));
    }
}

/// Installs tether into the run's disk the way an engineer would on a
/// Debian system: `dpkg -i tether_*.deb` (chrooted), then `tetherctl
/// import` (the packaged one, in a chroot) of Debian's own units into
/// `/etc/tether/services`, then the test's `tether.toml` over the
/// conffile. The import report is written to `dir/import-report.txt`.
pub fn install_tether(
    disk: &Path,
    dir: &Path,
    deb: &Path,
    tether_toml: &str,
) -> Result<String, String> {
    let m = LoopMount::new(disk, &dir.join("mnt"))?;
    // dpkg in a chroot: `dpkg --root` resolves the image's statoverride
    // users (`_chrony`) through the host's NSS and aborts.
    let inside = m.dir.join("tmp/tether.deb");
    fs::copy(deb, &inside).map_err(|e| format!("copy {}: {}", deb.display(), e))?;
    let installed =
        run_tool(
            Command::new("chroot")
                .arg(&m.dir)
                .args(["dpkg", "-i", "/tmp/tether.deb"]),
        );
    let _ = fs::remove_file(&inside);
    installed?;
    let report = Command::new("chroot")
        .arg(&m.dir)
        .args(["/usr/bin/tetherctl", "import"])
        .args(IMPORTED_UNITS)
        .args(["--out", "/etc/tether/services"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("chroot tetherctl import: {}", e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&report.stdout),
        String::from_utf8_lossy(&report.stderr)
    );
    let _ = fs::write(dir.join("import-report.txt"), &text);
    if !report.status.success() {
        return Err(format!(
            "tetherctl import {:?} failed ({}): {}",
            IMPORTED_UNITS, report.status, text
        ));
    }
    fs::write(m.dir.join("etc/tether/tether.toml"), tether_toml)
        .map_err(|e| format!("write tether.toml: {}", e))?;
    drop(m);
    Ok(text)
}

/// A booted Debian guest.
pub struct Guest {
    pub vm: Vm,
    pub disk: PathBuf,
    pub dir: PathBuf,
    pub ssh_port: u16,
    pub key: PathBuf,
}

/// The static binaries and the initramfs (built once per process).
fn initramfs(assets: &Assets, dir: &Path) -> Result<PathBuf, String> {
    let image = Image::base(assets, MODULES, false, STAGE)?;
    let p = dir.join("initrd.cpio");
    image.write(&p)?;
    Ok(p)
}

/// The appliance's files for a run, not booted: what `tether-inject`
/// takes (`--kernel`, `--initrd`, `--disk`).
pub struct Prepared {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub disk: PathBuf,
    pub key: PathBuf,
}

/// Builds the run's disk in `dir` (base image + tether + the run's key)
/// and boots it.
pub fn boot(name: &str, dir: &Path, opts: &Options) -> Result<Guest, String> {
    let Prepared {
        kernel,
        initrd,
        disk,
        key,
    } = prepare(dir, opts)?;
    boot_prepared(name, dir, opts, &kernel, &initrd, disk, key)
}

/// Builds the run's disk and initramfs in `dir` (base image, the `.deb`
/// installed, services imported from Debian's units, the run's ssh key).
pub fn prepare(dir: &Path, opts: &Options) -> Result<Prepared, String> {
    let assets = Assets::get()?;
    let base = base_disk(&assets.cache)?;
    let bins = crate::binaries::build(&[
        "tether-init",
        "tether-restarter",
        "tether-watchdogd",
        "tether-vm-tests",
    ])?;
    let key = dir.join("id_ed25519");
    if !key.exists() {
        run_tool(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "tether-vm", "-f"])
                .arg(&key),
        )?;
    }
    let pubkey = fs::read(key.with_extension("pub")).map_err(|e| e.to_string())?;
    let mut o = Overlay::default();
    // Test tooling (not in the .deb): the "init hung" helper.
    o.host_file(
        "/usr/sbin/tether-fault",
        0o755,
        &crate::binaries::static_binary(&bins, "tether-fault")?,
    );
    o.file(
        &format!("/etc/tether/services/{}.toml", CHRONY_SERVICE.0),
        0o644,
        CHRONY_SERVICE.1,
    );
    for (n, text) in &opts.extra_services {
        o.file(
            &format!("/etc/tether/services/{}.toml", n),
            0o644,
            text.as_str(),
        );
    }
    o.file("/root/.ssh/authorized_keys", 0o600, pubkey);
    if opts.collector_port.is_some() {
        o.file(
            "/etc/rsyslog.d/50-tether-forward.conf",
            0o644,
            forward_conf()?,
        );
    }
    let disk = dir.join("root.ext4");
    o.apply(&base, &disk, &dir.join("overlay"))?;
    let deb = tether_deb(&assets.cache)?;
    install_tether(&disk, dir, &deb, TETHER_TOML)?;
    let initrd = initramfs(assets, dir)?;
    Ok(Prepared {
        kernel: assets.boot_image.clone(),
        initrd,
        disk,
        key,
    })
}

fn boot_prepared(
    name: &str,
    dir: &Path,
    opts: &Options,
    kernel: &Path,
    initrd: &Path,
    disk: PathBuf,
    key: PathBuf,
) -> Result<Guest, String> {
    let ssh_port = free_port()?;
    let mut cfg = VmConfig::new(name, kernel, initrd, dir);
    cfg.disk = Some(disk.clone());
    cfg.memory_mib = MEMORY_MIB;
    cfg.append = format!("panic=0 quiet init={} {}", opts.init.path(), opts.append);
    cfg.transcript = Some(dir.join("transcript.log"));
    let mut netdev = session::user_netdev(ssh_port);
    if let Some(p) = opts.collector_port {
        let _ = write!(
            netdev,
            ",guestfwd=tcp:{}:514-cmd:socat - TCP:127.0.0.1:{}",
            COLLECTOR_ADDR, p
        );
    }
    cfg.extra_args = session::nic_args(netdev);
    let vm = Vm::start(cfg).map_err(|e| e.to_string())?;
    Ok(Guest {
        vm,
        disk,
        dir: dir.to_path_buf(),
        ssh_port,
        key,
    })
}

/// A test service that writes a numbered line to stdout every 100 ms
/// (`probe N`) and the last N to `/run/probe.n`: the restarter forwards
/// the lines to syslog, so they show whether output written while rsyslogd
/// was down arrived later.
pub const PROBE_SERVICE: (&str, &str) = (
    "probe",
    r#"# test only: numbered stdout lines, 10 a second
exec = ["/bin/sh", "-c", "i=0; while :; do i=$((i + 1)); echo \"probe $i\"; echo $i > /run/probe.n; sleep 0.1; done"]
restart_delay = "1s"
stop_timeout = "2s"
"#,
);

/// Whether sshd answers on `port`: the `SSH-` banner arrives (QEMU's
/// forward accepts the TCP connection even when nothing listens in the
/// guest, so the banner is the sign).
pub fn ssh_banner(port: u16, timeout: Duration) -> bool {
    use std::io::Read;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}

/// Polls [`ssh_banner`] until `deadline`; the instant the banner came.
pub fn wait_ssh(port: u16, deadline: Instant) -> Option<Instant> {
    while Instant::now() < deadline {
        if ssh_banner(port, Duration::from_millis(1500)) {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

impl Guest {
    /// How to log in to this guest (root, the run's key, the forward).
    pub fn login(&self) -> SshLogin {
        SshLogin {
            port: self.ssh_port,
            key: self.key.clone(),
            user: "root".into(),
            dir: self.dir.clone(),
        }
    }

    /// The ssh client command for this guest (a real OpenSSH client).
    pub fn ssh_command(&self) -> Command {
        self.login().command()
    }

    /// Runs `command` over ssh; its stdout, or an error with stderr.
    pub fn ssh(&self, command: &str) -> Result<String, String> {
        run_tool(self.ssh_command().arg(command))
    }

    /// Waits for the banner, then for a login that runs `true`.
    pub fn wait_login(&mut self, within: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let deadline = start + within;
        loop {
            // Banner polls of 2 s at most, draining the console between
            // them (the transcript is written as events are drained).
            let mut up = false;
            while Instant::now() < deadline {
                self.vm.timeline.drain();
                if self.vm.timeline.ended() {
                    break;
                }
                if wait_ssh(self.ssh_port, Instant::now() + Duration::from_secs(2)).is_some() {
                    up = true;
                    break;
                }
            }
            if !up {
                self.vm.timeline.drain();
                return Err(format!(
                    "sshd did not answer within {:?}; console tail:\n{}",
                    within,
                    self.vm.timeline.tail(40)
                ));
            }
            if self.ssh("true").is_ok() {
                return Ok(start.elapsed());
            }
            if Instant::now() >= deadline {
                self.vm.timeline.drain();
                return Err(format!(
                    "ssh login failed within {:?}: {}; console tail:\n{}",
                    within,
                    self.ssh("true").err().unwrap_or_default(),
                    self.vm.timeline.tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// A syslog collector on the host (issue 16): `rsyslogd -n` with imtcp on
/// 127.0.0.1, writing every message in RFC 5424 to one file.
pub struct Collector {
    pub port: u16,
    pub file: PathBuf,
    child: std::process::Child,
}

impl Collector {
    pub fn start(dir: &Path) -> Result<Collector, String> {
        let port = free_port()?;
        let work = dir.join("collector");
        fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let file = work.join("received.log");
        let conf = work.join("rsyslog.conf");
        fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="remote")
ruleset(name="remote") {{
    action(type="omfile" file="{file}" template="RSYSLOG_SyslogProtocol23Format")
}}
"#,
                work = work.display(),
                port = port,
                file = file.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = Command::new(sbin_tool("rsyslogd"))
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(work.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(fs::File::create(work.join("rsyslogd.out")).map_err(|e| e.to_string())?)
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start rsyslogd (apt-get install rsyslog): {}", e))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "the collector did not listen on 127.0.0.1:{}",
                    port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Collector { port, file, child })
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .map(|s| s.to_string())
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rfc5424 {
    pub pri: u8,
    pub timestamp: String,
    pub hostname: String,
    pub app: String,
    pub procid: String,
    pub msgid: String,
    /// The structured data as written (`-` when none).
    pub sd: String,
    pub msg: String,
}

/// Parses one RFC 5424 line (the SD may hold quoted `]` and spaces).
pub fn parse_rfc5424(line: &str) -> Result<Rfc5424, String> {
    let err = |w: &str| format!("not RFC 5424 ({}): {:?}", w, line);
    let rest = line.strip_prefix('<').ok_or_else(|| err("no <PRI>"))?;
    let (pri, rest) = rest.split_once('>').ok_or_else(|| err("no <PRI>"))?;
    let pri: u8 = pri.parse().map_err(|_| err("PRI"))?;
    if pri > 191 {
        return Err(err("PRI above 191"));
    }
    let rest = rest
        .strip_prefix("1 ")
        .ok_or_else(|| err("VERSION is not 1"))?;
    let mut it = rest.splitn(6, ' ');
    let mut next = |w: &str| it.next().map(|s| s.to_string()).ok_or_else(|| err(w));
    let timestamp = next("TIMESTAMP")?;
    let hostname = next("HOSTNAME")?;
    let app = next("APP-NAME")?;
    let procid = next("PROCID")?;
    let msgid = next("MSGID")?;
    let rest = next("STRUCTURED-DATA")?;
    for (f, v) in [
        ("HOSTNAME", &hostname),
        ("APP-NAME", &app),
        ("PROCID", &procid),
        ("MSGID", &msgid),
    ] {
        if v.is_empty() {
            return Err(err(f));
        }
    }
    let (sd, msg) = if let Some(r) = rest.strip_prefix('-') {
        (
            "-".to_string(),
            r.strip_prefix(' ').unwrap_or(r).to_string(),
        )
    } else if rest.starts_with('[') {
        // Walk the SD elements, honouring quoted values with escapes.
        let b = rest.as_bytes();
        let mut i = 0;
        while i < b.len() && b[i] == b'[' {
            let mut quoted = false;
            i += 1;
            while i < b.len() {
                match b[i] {
                    b'\\' if quoted => i += 1,
                    b'"' => quoted = !quoted,
                    b']' if !quoted => break,
                    _ => {}
                }
                i += 1;
            }
            if i >= b.len() {
                return Err(err("unterminated SD-ELEMENT"));
            }
            i += 1;
        }
        let msg = &rest[i..];
        (
            rest[..i].to_string(),
            msg.strip_prefix(' ').unwrap_or(msg).to_string(),
        )
    } else {
        return Err(err("STRUCTURED-DATA"));
    };
    Ok(Rfc5424 {
        pri,
        timestamp,
        hostname,
        app,
        procid,
        msgid,
        sd,
        msg,
    })
}

/// A tether line that went through `/dev/kmsg` (logged while syslog was
/// down, e.g. at boot before rsyslogd runs) reaches rsyslog by imklog as a
/// record of APP-NAME `kernel` whose text is `[ uptime] ` followed by the
/// RFC 5424 line tether wrote, without its `<PRI>`: that inner line, parsed
/// (with the outer PRI). `None` for any other message.
pub fn unwrap_kmsg(m: &Rfc5424) -> Option<Rfc5424> {
    if m.app != "kernel" {
        return None;
    }
    let rest = m.msg.trim_start();
    let rest = match rest.strip_prefix('[') {
        Some(r) => r.split_once(']')?.1.trim_start(),
        None => rest,
    };
    if !rest.starts_with("1 ") {
        return None;
    }
    parse_rfc5424(&format!("<{}>{}", m.pri, rest)).ok()
}

/// The value of `name` in the SD element `id` of a message.
pub fn sd_param(sd: &str, id: &str, name: &str) -> Option<String> {
    let start = sd.find(&format!("[{}", id))?;
    let el = &sd[start..];
    let key = format!(" {}=\"", name);
    let at = el.find(&key)? + key.len();
    let mut out = String::new();
    let mut chars = el[at..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_passes_the_budget_validation() {
        let c =
            tether_common::config::Config::parse(TETHER_TOML, Path::new("/etc/tether/tether.toml"))
                .unwrap();
        tether_common::budget::validate(&c).unwrap();
    }

    #[test]
    fn rfc5424_lines_parse() {
        let l = r#"<30>1 2026-12-02T01:00:00.123456+00:00 tether-debian tether-init 1 RESET [tether@32473 cause="watchdog" layer="init \"x\""] previous boot ended"#;
        let m = parse_rfc5424(l).unwrap();
        assert_eq!(m.msgid, "RESET");
        assert_eq!(m.app, "tether-init");
        assert_eq!(m.msg, "previous boot ended");
        assert_eq!(
            sd_param(&m.sd, "tether@", "layer").as_deref(),
            Some("init \"x\"")
        );
        let dash = parse_rfc5424("<13>1 - h app - - - hello").unwrap();
        assert_eq!((dash.sd.as_str(), dash.msg.as_str()), ("-", "hello"));
        assert!(parse_rfc5424("<13>Dec  2 01:00:00 h app: hi").is_err());
        // As the collector got it in the VM: through kmsg and imklog.
        let k = parse_rfc5424(r#"<28>1 2026-12-02T01:21:21.801211+00:00 tether-debian kernel - - - [    7.315058] 1 2026-12-02T01:21:19.787654Z tether-debian tether-watchdogd 127 RESET [tether@32473 cause="watchdog" layer="init" silent_ms="4001"] previous boot ended: watchdog reset"#).unwrap();
        let inner = unwrap_kmsg(&k).unwrap();
        assert_eq!(
            (inner.app.as_str(), inner.msgid.as_str()),
            ("tether-watchdogd", "RESET")
        );
        assert_eq!(
            sd_param(&inner.sd, "tether@", "cause").as_deref(),
            Some("watchdog")
        );
        assert_eq!(inner.msg, "previous boot ended: watchdog reset");
        assert!(unwrap_kmsg(&m).is_none());
        assert!(parse_rfc5424("<13>1 t h a p m [x a=\"1\" hi").is_err());
    }

    #[test]
    fn cache_key_follows_the_inputs() {
        assert_ne!(fnv64(&["a", "b"]), fnv64(&["ab"]));
        assert!(rootfs_key().starts_with("bookworm-"));
    }

    #[test]
    fn overlay_script_makes_parents_and_replaces_files() {
        let d = std::env::temp_dir().join(format!("tether-overlay-{}", std::process::id()));
        let mut o = Overlay::default();
        o.file("/etc/tether/services/ssh.toml", 0o644, "x");
        let s = o.script(&d).unwrap();
        assert!(s.contains("mkdir /etc\nmkdir /etc/tether\nmkdir /etc/tether/services\n"));
        assert!(s.contains("cd /etc/tether/services\nrm ssh.toml\nwrite "));
        assert!(s.contains("sif ssh.toml mode 0100644"));
        let mut o = Overlay::default();
        o.file("/sbin/tether-init", 0o755, "x");
        let s = o.script(&d).unwrap();
        assert!(s.contains("cd /usr/sbin\nrm tether-init\n"), "{}", s);
        assert!(!s.contains("mkdir /sbin"), "{}", s);
        let _ = fs::remove_dir_all(&d);
    }
}
