//! Static builds of the workspace's binaries for the guest (the initramfs
//! has no C library): `cargo build --bins` with
//! `RUSTFLAGS="-C target-feature=+crt-static"` for the host's GNU target
//! (named with `--target`, see [`host_triple`]), into `target/static/` so
//! the normal build is not invalidated.
//!
//! Decisions:
//! - Profile: `release` by default (what an appliance ships: optimised,
//!   `panic = "abort"`); `TETHER_VM_PROFILE=dev` builds faster while
//!   iterating. The profile is the only knob; the feature set is the
//!   workspace's.
//! - One build per process (the result is memoised) and cargo's own lock
//!   serialises concurrent test processes.
//! - Each binary is checked to be static before it goes into an image.
//! - Not position-independent (`-C relocation-model=static`, an `EXEC`
//!   like Debian's busybox-static), for the emulator's sake: under TCG a
//!   static-PIE binary loaded at a random address (ASLR) is translated
//!   afresh at every `exec`, because QEMU's translation cache is looked up
//!   by guest virtual address. Every service starts as the restarter's own
//!   binary (its exec helper, `restarter/src/spawn.rs`), so this cost was
//!   paid once per start: measured in the guest, 200 runs of
//!   `tether-restarter --exec-in - "" 1 /bin/true /bin/true` took 27.8 ms
//!   each as static-PIE, 10.4 ms with ASLR off (`/bin/true` alone: 5.7
//!   ms); the scale test's 3000 services ran 106 s after boot instead of
//!   23 s before the helper existed, and at 10,000 the guest's one CPU was
//!   so backed up with helpers that init, the restarter and the agent
//!   went unscheduled for seconds (CI: a hardware reset, "restarter silent
//!   20.0 s"). Real hardware has no such cache; the Debian package
//!   (`package.sh`) stays PIE.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The guest binaries of the chain and of this harness.
pub const CHAIN: &[&str] = &[
    "tether-init",
    "tether-restarter",
    "tetherctl",
    "tether-watchdogd",
];
/// Guest tools of the harness (`vm-tests/src/bin/`).
pub const TOOLS: &[&str] = &["tether-fault", "tether-notify-demo"];

/// `release` or `dev` (`TETHER_VM_PROFILE`).
pub fn profile() -> String {
    std::env::var("TETHER_VM_PROFILE").unwrap_or_else(|_| "release".into())
}

/// The host's target triple (`rustc -vV`), e.g. `x86_64-unknown-linux-gnu`.
///
/// The build names it with `--target` although it is the host's: without
/// `--target`, `RUSTFLAGS` also reach proc-macros and build scripts, and a
/// proc-macro cannot be built with `+crt-static`.
pub fn host_triple() -> Result<String, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("rustc -vV: {}", e))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(|h| h.trim().to_string()))
        .ok_or_else(|| "rustc -vV names no host".to_string())
}

/// Where the static binaries land.
pub fn static_dir() -> Result<PathBuf, String> {
    let sub = match profile().as_str() {
        "dev" => "debug".to_string(),
        p => p.to_string(),
    };
    Ok(crate::image::target_dir()
        .join("static")
        .join(host_triple()?)
        .join(sub))
}

/// Builds the packages' binaries statically (once per process) and returns
/// the directory holding them.
pub fn build(packages: &[&str]) -> Result<PathBuf, String> {
    static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !done.iter().any(|d| d == p))
        .collect();
    if !missing.is_empty() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(crate::image::workspace_root())
            .args([
                "build",
                "--bins",
                "--profile",
                &profile(),
                "--target",
                &host_triple()?,
            ])
            .env(
                "CARGO_TARGET_DIR",
                crate::image::target_dir().join("static"),
            )
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C relocation-model=static",
            )
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS");
        for p in &missing {
            cmd.args(["-p", p]);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run cargo: {}", e))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(60).collect();
            return Err(format!(
                "static build of {} failed ({}):\n{}",
                missing.join(", "),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        done.extend(missing.iter().map(|s| s.to_string()));
    }
    static_dir()
}

/// A built static binary's path, checked to be static.
pub fn static_binary(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let p = dir.join(name);
    let bytes = std::fs::read(&p).map_err(|e| format!("{}: {}", p.display(), e))?;
    match crate::elf::has_interpreter(&bytes) {
        Ok(false) => Ok(p),
        Ok(true) => Err(format!(
            "{} is dynamically linked; the guest has no C library",
            p.display()
        )),
        Err(e) => Err(format!("{}: {}", p.display(), e)),
    }
}
