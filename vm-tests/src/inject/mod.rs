//! `tether-inject` (docs/INJECT.md): the fault matrix run on an appliance
//! image from a TOML fault plan. The binary (`src/bin/tether-inject.rs`)
//! and the project's own matrix (`tests/matrix.rs`) both go through
//! [`run_plan`] / [`run_row`]: one fresh boot per row, the agent injected
//! by the overlay of [`source`], the row run by [`rows`].
//!
//! | module | holds |
//! |---|---|
//! | [`plan`] | the plan's parser and its checks against the image |
//! | [`source`] | reading the user's initramfs; the agent overlay |
//! | [`rows`] | the rows: faults injected, outcomes checked |
//! | [`session`] | an ssh session from the host held across a fault |
//! | [`accel`] | KVM when it works here, else TCG |

pub mod accel;
pub mod plan;
pub mod rows;
pub mod session;
pub mod source;

use crate::appliance::Guest;
use crate::disk::Disk;
use crate::qemu::{Vm, VmConfig};
use crate::report::{self, RowResult};
use plan::{ImageFacts, Plan, PlanRow};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One VM at a time in a process: two TCG guests on two cores would starve
/// each other's vCPU and turn 250 ms beats into false hangs.
static VM_LOCK: Mutex<()> = Mutex::new(());

/// What to boot: the user's kernel and initramfs, and how.
#[derive(Clone, Debug)]
pub struct Target {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Extra kernel command line (`rdinit=` is added).
    pub append: String,
    /// The image's own init, exec'd by the injected preinit.
    pub init: String,
    /// A blank disk (`/dev/vda`, ext4) of this size for the image's state
    /// (the demo mounts it on `/var`); 0: none... always one for now.
    pub disk_mib: u64,
    /// The static `tether-fault` binary injected as preinit and agent.
    pub agent: PathBuf,
    /// The user's ext4 root disk (tether installed on it), when the
    /// initramfs only mounts it and `switch_root`s to `init=`: each row
    /// boots a sparse copy with the agent written into it (`debugfs -w`)
    /// and `init=/tether-inject/init`; `init` is then the disk's init.
    pub root_disk: Option<PathBuf>,
    /// Guest memory (MiB).
    pub memory_mib: u32,
    /// The user's ssh private key (`--ssh-key`): the guest's port 22 is
    /// forwarded from 127.0.0.1 and rows with `session = "ssh"` log in.
    pub ssh_key: Option<PathBuf>,
    /// The accelerator asked for (`--accel`, default `auto`).
    pub accel: accel::Accel,
}

/// A setup error (exit code 2): no row could run.
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// QEMU is there and runs.
pub fn check_qemu() -> Result<(), SetupError> {
    let q = crate::qemu::qemu_binary();
    match std::process::Command::new(&q).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(SetupError(format!(
            "{} --version failed ({}): {}",
            q.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(SetupError(format!(
            "QEMU missing: cannot run {} ({}); install qemu-system-x86 (Debian) or set TETHER_VM_QEMU",
            q.display(),
            e
        ))),
    }
}

/// Reads the image: its facts (tether installed, config, services) and
/// the initramfs with the agent overlay appended, written to `dir`.
pub fn prepare(target: &Target, dir: &Path) -> Result<(ImageFacts, PathBuf), SetupError> {
    let (mut facts, initrd) = prepare_image(target, dir)?;
    if let Some(k) = &target.ssh_key {
        session::check_key(k).map_err(SetupError)?;
        facts.ssh = true;
    }
    Ok((facts, initrd))
}

fn prepare_image(target: &Target, dir: &Path) -> Result<(ImageFacts, PathBuf), SetupError> {
    for (what, p) in [("kernel", &target.kernel), ("initramfs", &target.initrd)] {
        if !p.is_file() {
            return Err(SetupError(format!(
                "{} {}: no such file",
                what,
                p.display()
            )));
        }
    }
    if let Some(disk) = &target.root_disk {
        if !disk.is_file() {
            return Err(SetupError(format!(
                "root disk {}: no such file",
                disk.display()
            )));
        }
        let files = source::disk_files(disk).map_err(SetupError)?;
        let facts = source::facts(&files, &disk.display().to_string()).map_err(SetupError)?;
        return Ok((facts, target.initrd.clone()));
    }
    let what = target.initrd.display().to_string();
    let files = source::read_initramfs(&target.initrd).map_err(SetupError)?;
    let facts = source::facts(&files, &what).map_err(SetupError)?;
    if !files.contains_key(target.init.trim_start_matches('/')) {
        return Err(SetupError(format!(
            "{}: the image has no {} to run after the injected preinit (give --init)",
            what, target.init
        )));
    }
    let user = std::fs::read(&target.initrd).map_err(|e| SetupError(format!("{}: {}", what, e)))?;
    let ov = source::overlay(&target.agent, &target.init).map_err(SetupError)?;
    std::fs::create_dir_all(dir).map_err(|e| SetupError(format!("{}: {}", dir.display(), e)))?;
    let out = dir.join("initrd+agent.cpio");
    std::fs::write(&out, source::with_overlay(&user, &ov))
        .map_err(|e| SetupError(format!("{}: {}", out.display(), e)))?;
    Ok((facts, out))
}

/// The outcome of one row: its result, or a setup error found on the way
/// (no i6300esb in the guest).
pub struct RowRun {
    pub result: RowResult,
    pub setup_error: Option<String>,
    pub wall: Duration,
    pub transcript: PathBuf,
}

/// A slug for file names: `04-restarter-kill-9`.
pub fn slug(p: &PlanRow) -> String {
    let mut s = String::new();
    for c in p.name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    format!("{:02}-{}", p.index + 1, s.trim_matches('-'))
}

/// Boots `initrd` (with the overlay) fresh in `dir` and runs one row.
#[allow(clippy::too_many_arguments)]
pub fn run_row(
    target: &Target,
    accel: &str,
    initrd: &Path,
    facts: &ImageFacts,
    p: &PlanRow,
    bound: (Duration, String),
    dir: &Path,
) -> RowRun {
    let _one_vm_at_a_time = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let begun = Instant::now();
    let mut result = RowResult::new(&slug(p), &p.name, &rows::expected_text(p.fault, p.expect));
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::create_dir_all(dir);
    let transcript = dir.join("transcript.log");
    let mut setup_error = None;
    // QEMU's sockets: a short directory (a UNIX socket path has at most
    // 107 bytes; `--out` may be deep).
    let sockets = std::env::temp_dir().join(format!(
        "tether-inject-{}-{}",
        std::process::id(),
        p.index + 1
    ));
    let outcome = (|| -> Result<(), String> {
        let (disk, boot_args) = match &target.root_disk {
            Some(root) => {
                let copy = dir.join("root.img");
                let st = std::process::Command::new("cp")
                    .arg("--sparse=always")
                    .arg(root)
                    .arg(&copy)
                    .status()
                    .map_err(|e| format!("cp: {}", e))?;
                if !st.success() {
                    return Err(format!("copying {}: cp {}", root.display(), st));
                }
                source::inject_into_disk(&copy, &target.agent, &target.init, dir)?;
                (Disk { path: copy }, "init=/tether-inject/init")
            }
            None => (
                Disk::create(&dir.join("disk.img"), target.disk_mib.max(16))
                    .map_err(|e| e.to_string())?,
                "rdinit=/tether-inject/init",
            ),
        };
        let _ = std::fs::remove_dir_all(&sockets);
        std::fs::create_dir_all(&sockets).map_err(|e| format!("{}: {}", sockets.display(), e))?;
        let mut cfg = VmConfig::new(&slug(p), &target.kernel, initrd, &sockets);
        cfg.accel = accel.to_string();
        let ssh = match &target.ssh_key {
            Some(key) => {
                let port = session::free_port()?;
                cfg.extra_args
                    .extend(session::nic_args(session::user_netdev(port)));
                Some(session::SshLogin {
                    port,
                    key: key.clone(),
                    user: "root".into(),
                    dir: dir.to_path_buf(),
                })
            }
            None => None,
        };
        cfg.disk = Some(disk.path.clone());
        cfg.agent = true;
        cfg.memory_mib = target.memory_mib;
        cfg.append = format!("{} {}", target.append, boot_args)
            .trim()
            .to_string();
        cfg.transcript = Some(transcript.clone());
        let vm = Vm::start(cfg).map_err(|e| e.to_string())?;
        let mut row = rows::Row {
            g: Guest {
                vm,
                disk,
                dir: dir.to_path_buf(),
            },
            config: facts.config.clone(),
            bounds: facts.bounds.clone(),
            bound: bound.0,
            formula: bound.1.clone(),
            result: result.clone(),
            syslog_files: p.syslog_files.clone(),
            ssh,
            root_disk: target.root_disk.is_some(),
        };
        row.g
            .vm
            .wait_agent_ready(Duration::from_secs(120))
            .map_err(|e| format!("the injected agent never came up: {}", e))?;
        // The image's init loads drivers first: judge the device once the
        // chain is up (or has given up coming up).
        let up = row.agent("wait-chain 60000");
        let wd = row.agent("exec cat /sys/class/watchdog/watchdog0/identity 2>&1")?;
        if !wd.str("out").contains("i6300ESB") {
            let e = format!(
                "the guest has no i6300esb watchdog (loaded module or built in): /sys/class/watchdog/watchdog0/identity says {:?}",
                wd.str("out").trim()
            );
            setup_error = Some(e.clone());
            return Err(e);
        }
        up?;
        let r = rows::run_fault(&mut row, p);
        result = row.result.clone();
        r
    })();
    let _ = std::fs::remove_dir_all(&sockets);
    result.pass = outcome.is_ok();
    if let Err(e) = &outcome {
        let first = e.lines().next().unwrap_or("");
        if result.observed.is_empty() {
            result.observed = format!("error: {}", first);
        } else if !result.observed.contains(first) {
            result.observed.push_str(&format!("; error: {}", first));
        }
    }
    RowRun {
        result,
        setup_error,
        wall: begun.elapsed(),
        transcript,
    }
}

/// The whole plan: checks, then each row on a fresh boot under `out`,
/// then `report.md` and `report.json`. `Ok(true)` when every row passed.
pub fn run_plan(
    plan: &Plan,
    target: &Target,
    out: &Path,
) -> Result<(bool, Vec<RowRun>), SetupError> {
    check_qemu()?;
    let (facts, initrd) = prepare(target, out)?;
    let bounds = plan.check(&facts).map_err(|e| SetupError(e.to_string()))?;
    let begun = Instant::now();
    let accel = accel::choose(target.accel, &target.kernel, out).map_err(SetupError)?;
    eprintln!("tether-inject: accelerator {}", accel);
    let mut runs: Vec<RowRun> = Vec::new();
    for (p, b) in plan.rows.iter().zip(bounds) {
        if begun.elapsed() > plan.budget {
            let mut r = RowResult::new(&slug(p), &p.name, &rows::expected_text(p.fault, p.expect));
            r.observed = format!(
                "not run: the plan's time budget {} was used up",
                tether_common::duration::format(plan.budget)
            );
            runs.push(RowRun {
                result: r,
                setup_error: None,
                wall: Duration::ZERO,
                transcript: PathBuf::new(),
            });
            continue;
        }
        let run = run_row(
            target,
            accel.name(),
            &initrd,
            &facts,
            p,
            b,
            &out.join("rows").join(slug(p)),
        );
        eprintln!("{}", report::render(std::slice::from_ref(&run.result)));
        let stop = run.setup_error.clone();
        runs.push(run);
        write_report(plan, target, &accel, out, &runs, begun.elapsed())?;
        if let Some(e) = stop {
            return Err(SetupError(e));
        }
    }
    write_report(plan, target, &accel, out, &runs, begun.elapsed())?;
    Ok((runs.iter().all(|r| r.result.pass), runs))
}

fn write_report(
    plan: &Plan,
    target: &Target,
    accel: &accel::Chosen,
    out: &Path,
    runs: &[RowRun],
    wall: Duration,
) -> Result<(), SetupError> {
    let results: Vec<RowResult> = runs.iter().map(|r| r.result.clone()).collect();
    let mut md = format!(
        "# tether-inject report\n\nplan: {}\nkernel: {}\ninitramfs: {}\nQEMU {}, i6300esb; one boot per row; wall time {:.0} s (budget {}).\n\n",
        plan.file.display(),
        target.kernel.display(),
        target.initrd.display(),
        accel,
        wall.as_secs_f64(),
        tether_common::duration::format(plan.budget)
    );
    md.push_str(&report::render(&results));
    md.push_str("\n| row | wall time | transcript |\n|---|---|---|\n");
    for r in runs {
        md.push_str(&format!(
            "| {} | {:.0} s | {} |\n",
            r.result.slug,
            r.wall.as_secs_f64(),
            r.transcript.display()
        ));
    }
    let js = json!({
        "plan": plan.file.display().to_string(),
        "kernel": target.kernel.display().to_string(),
        "initramfs": target.initrd.display().to_string(),
        "accel": accel.name(),
        "accel_note": accel.note.clone(),
        "budget_ms": plan.budget.as_millis() as u64,
        "wall_ms": wall.as_millis() as u64,
        "pass": runs.iter().all(|r| r.result.pass),
        "rows": runs.iter().map(|r| {
            let mut v = r.result.to_json();
            v["wall_ms"] = json!(r.wall.as_millis() as u64);
            v["transcript"] = json!(r.transcript.display().to_string());
            v
        }).collect::<Vec<_>>(),
    });
    let w = |name: &str, text: String| {
        std::fs::write(out.join(name), text)
            .map_err(|e| SetupError(format!("{}: {}", out.join(name).display(), e)))
    };
    w("report.md", md)?;
    w(
        "report.json",
        serde_json::to_string_pretty(&js).unwrap_or_default(),
    )
}

/// The demo appliance as a user would ship it (no agent in it), built into
/// `dir`: the busybox image of the project's own matrix (`Target` for
/// `tests/matrix.rs` and `tether-inject --demo`).
pub fn demo_target(dir: &Path) -> Result<Target, String> {
    let assets = crate::image::Assets::get()?;
    let appliance = crate::appliance::Appliance::demo().with_counter();
    let image = appliance.user_image(assets)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {}", dir.display(), e))?;
    let initrd = dir.join("demo-appliance.cpio");
    image.write(&initrd)?;
    let bins = crate::binaries::build(&["tether-vm-tests"])?;
    Ok(Target {
        kernel: assets.boot_image.clone(),
        initrd,
        append: appliance.append.clone(),
        init: "/init".into(),
        disk_mib: 64,
        agent: crate::binaries::static_binary(&bins, "tether-fault")?,
        root_disk: None,
        memory_mib: 256,
        ssh_key: None,
        accel: accel::Accel::Tcg,
    })
}
