//! `tether-inject`: runs a fault plan on an appliance image under
//! `qemu-system-x86_64 -accel tcg -device i6300esb` (docs/INJECT.md).
//!
//! ```text
//! tether-inject --plan PLAN.toml --kernel KERNEL --initrd INITRAMFS [--init /init]
//!               [--append "..."] [--agent tether-fault] [--out DIR]
//! tether-inject --plan PLAN.toml --kernel KERNEL --root DIR|TARBALL ...   # made into an initramfs
//! tether-inject --plan PLAN.toml --kernel KERNEL --initrd INITRAMFS --disk ROOT.ext4 [--init /sbin/tether-init] [--memory MIB]
//! tether-inject --plan PLAN.toml --demo [--out DIR]    # the project's busybox image
//! tether-inject --check --plan PLAN.toml (--demo | --kernel K --initrd I)
//! ```
//!
//! `--kernel` also takes a Debian kernel package (`linux-image-*.deb`);
//! `--ssh-key KEY` forwards the guest's port 22 from 127.0.0.1 for rows
//! with `session = "ssh"`; `--accel auto` (default) probes KVM once and
//! falls back to TCG (`inject::accel`).
//!
//! Exit codes: 0 every row passed; 1 a row failed or exceeded its bound
//! (the report marks it `FAIL`); 2 the run could not start (usage, a plan
//! error `FILE:LINE:COL: field ...`, QEMU missing, an image without tether,
//! a guest without the i6300esb).

use std::path::PathBuf;
use std::process::ExitCode;
use tether_vm_tests::inject::{self, plan::Plan, Target};

const USAGE: &str = "usage: tether-inject --plan PLAN.toml (--demo | --kernel KERNEL|linux-image.deb (--initrd INITRAMFS | --root DIR|TARBALL) [--disk ROOT.ext4] [--init PATH] [--memory MIB] [--append ARGS] [--agent TETHER-FAULT]) [--ssh-key KEY] [--accel auto|kvm|tcg] [--out DIR] [--check]";

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tether-inject: {}", msg);
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut plan, mut kernel, mut initrd, mut out) = (None, None, None, None);
    let mut root: Option<PathBuf> = None;
    let mut root_disk: Option<PathBuf> = None;
    let mut init_given = false;
    let mut memory_mib = 256u32;
    let mut ssh_key: Option<PathBuf> = None;
    let mut accel = inject::accel::Accel::Auto;
    let (mut init, mut append, mut agent) = ("/init".to_string(), String::new(), None);
    let (mut demo, mut check) = (false, false);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{} needs a value", name));
        let r = match a.as_str() {
            "--plan" => val("--plan").map(|v| plan = Some(PathBuf::from(v))),
            "--kernel" => val("--kernel").map(|v| kernel = Some(PathBuf::from(v))),
            "--initrd" => val("--initrd").map(|v| initrd = Some(PathBuf::from(v))),
            "--root" => val("--root").map(|v| root = Some(PathBuf::from(v))),
            "--out" => val("--out").map(|v| out = Some(PathBuf::from(v))),
            "--init" => val("--init").map(|v| {
                init = v;
                init_given = true;
            }),
            "--disk" => val("--disk").map(|v| root_disk = Some(PathBuf::from(v))),
            "--memory" => val("--memory").and_then(|v| {
                v.parse()
                    .map(|m| memory_mib = m)
                    .map_err(|_| format!("--memory {:?}: MiB, a number", v))
            }),
            "--append" => val("--append").map(|v| append = v),
            "--ssh-key" => val("--ssh-key").map(|v| ssh_key = Some(PathBuf::from(v))),
            "--accel" => {
                val("--accel").and_then(|v| inject::accel::Accel::parse(&v).map(|a| accel = a))
            }
            "--agent" => val("--agent").map(|v| agent = Some(PathBuf::from(v))),
            "--demo" => {
                demo = true;
                Ok(())
            }
            "--check" => {
                check = true;
                Ok(())
            }
            "-h" | "--help" => {
                println!("{}", USAGE);
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {:?}", other)),
        };
        if let Err(e) = r {
            return fail(format!("{}\n{}", e, USAGE));
        }
    }
    let Some(plan_path) = plan else {
        return fail(format!("--plan is required\n{}", USAGE));
    };
    let plan = match Plan::read(&plan_path) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let out = out.unwrap_or_else(|| {
        tether_vm_tests::image::target_dir()
            .join("inject")
            .join(plan_path.file_stem().unwrap_or_default())
    });
    let target = if demo {
        match inject::demo_target(&out.join("image")) {
            Ok(t) => Target {
                accel,
                ssh_key,
                ..t
            },
            Err(e) => return fail(format!("building the demo image: {}", e)),
        }
    } else {
        let initrd = match (initrd, root) {
            (Some(i), None) => Some(i),
            (None, Some(r)) => {
                let made = out.join("image").join("root.cpio");
                let r = std::fs::create_dir_all(out.join("image"))
                    .map_err(|e| e.to_string())
                    .and_then(|_| {
                        tether_vm_tests::inject::source::initramfs_from_root(&r, &out.join("image"))
                    })
                    .and_then(|b| std::fs::write(&made, b).map_err(|e| e.to_string()));
                if let Err(e) = r {
                    return fail(e);
                }
                Some(made)
            }
            (Some(_), Some(_)) => return fail("give --initrd or --root, not both"),
            (None, None) => None,
        };
        let (Some(mut kernel), Some(initrd)) = (kernel, initrd) else {
            return fail(format!(
                "--kernel and --initrd or --root (or --demo) are required\n{}",
                USAGE
            ));
        };
        if inject::source::is_deb(&kernel) {
            match inject::source::kernel_from_package(&kernel, &out.join("image").join("kernel")) {
                Ok(k) => {
                    eprintln!(
                        "tether-inject: kernel {} from package {}",
                        k.display(),
                        kernel.display()
                    );
                    kernel = k;
                }
                Err(e) => return fail(e),
            }
        }
        let agent = match agent {
            Some(a) => a,
            None => match tether_vm_tests::binaries::build(&["tether-vm-tests"])
                .and_then(|d| tether_vm_tests::binaries::static_binary(&d, "tether-fault"))
            {
                Ok(p) => p,
                Err(e) => return fail(format!("no static tether-fault (give --agent): {}", e)),
            },
        };
        if root_disk.is_some() && !init_given {
            // The disk's init, which the image's initramfs would have run.
            init = "/sbin/tether-init".into();
        }
        Target {
            kernel,
            initrd,
            append,
            init,
            disk_mib: 64,
            agent,
            root_disk,
            memory_mib,
            ssh_key,
            accel,
        }
    };
    if check {
        let r = inject::check_qemu()
            .and_then(|_| inject::prepare(&target, &out))
            .and_then(|(facts, _)| {
                plan.check(&facts)
                    .map_err(|e| inject::SetupError(e.to_string()))
            });
        return match r {
            Ok(bounds) => {
                for (row, (b, f)) in plan.rows.iter().zip(bounds) {
                    println!(
                        "{}: expect {}, bound {} ({})",
                        row.name,
                        row.expect.word(),
                        tether_common::duration::format(b),
                        f
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    match inject::run_plan(&plan, &target, &out) {
        Ok((all_pass, runs)) => {
            let failed: Vec<&str> = runs
                .iter()
                .filter(|r| !r.result.pass)
                .map(|r| r.result.slug.as_str())
                .collect();
            println!("report: {}", out.join("report.md").display());
            if all_pass {
                ExitCode::SUCCESS
            } else {
                eprintln!("tether-inject: FAIL: {}", failed.join(", "));
                ExitCode::from(1)
            }
        }
        Err(e) => fail(e),
    }
}
