//! The last step of an orderly reboot (issue 11, item 9): what happens
//! after init's `reboot(2)`, and whether the hardware watchdog still bounds
//! a reboot that never completes.
//!
//! - [`reboot_that_never_completes_ends_in_a_hardware_reset`] (matrix row
//!   `20-reboot-hang`): the kernel's restart path hangs *after* its reboot
//!   notifiers ran (where the watchdog core stops every watchdog flagged
//!   `WDOG_STOP_ON_REBOOT`, which `i6300esb` sets): a SCSI disk that stops
//!   answering (`scsi_debug` told to ignore every command) holds
//!   `device_shutdown()` in `sd_shutdown` ("Synchronizing SCSI cache") for
//!   minutes of timeouts and error handling, as a dying disk does. The
//!   guest keeps running (QMP `query-status` says `running`), so the
//!   i6300esb's timer, on QEMU's virtual clock, counts: the hardware must
//!   reset the machine within `hardware_timeout` of `reboot(2)`. (A disk
//!   hung on the host side, e.g. a `blkdebug` breakpoint on the flush, was
//!   tried first and does not work: QEMU's own reset drains in-flight I/O
//!   and hangs in turn.)
//!
//!   The row loads `i6300esb` with `nowayout=0`: with `nowayout=1` the
//!   driver sets the 6300ESB's lock bit, which (on the chip and in QEMU's
//!   model) makes the stop in the watchdog core's reboot notifier fail, so
//!   the lock alone would keep the backstop. Most watchdog drivers have no
//!   such bit (their `nowayout` is the core's software flag, which the
//!   notifier bypasses: it calls the driver's `stop` directly); for them
//!   only `watchdog.stop_on_reboot=0` keeps the watchdog running through
//!   the kernel's restart path, and that is what this row checks. It fails
//!   with the module loaded as the kernel ships it (`stop_on_reboot`
//!   unset: the driver's choice, stop).
//! - [`halt_with_the_watchdog_armed_ends_in_a_hardware_reset`]: the other
//!   side of `stop_on_reboot=0`: a halted appliance is reset by the
//!   hardware within `hardware_timeout`.
//! - [`reboot_with_action_shutdown_ends_qemu`]: the hang reported with
//!   `-action reboot=shutdown,watchdog=debug` (QEMU neither reset nor
//!   exited after `reboot: machine restart`), tried again with this
//!   harness: the run passes when QEMU reports `SHUTDOWN guest-reset` and
//!   exits, and says what `query-status` answered meanwhile.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tether_common::config::Config;
use tether_vm_tests::appliance::{Appliance, STAGE};
use tether_vm_tests::disk::Disk;
use tether_vm_tests::events::{Event, Source};
use tether_vm_tests::image::{run_dir, Assets, Image, BASE_MODULES};
use tether_vm_tests::initramfs::Kind;
use tether_vm_tests::qemu::{Vm, VmConfig};
use tether_vm_tests::report::{self, RowResult};

/// Generous deadline for one agent command.
const CMD: Duration = Duration::from_secs(60);
/// Measurement overhead on top of a bound (the serial round trip of the
/// console line that marks `reboot(2)`, QMP under TCG), as in matrix.rs.
const SLACK: Duration = Duration::from_secs(1);

/// One VM at a time, as in matrix.rs: two TCG guests on two cores starve
/// each other's vCPU.
static VM_LOCK: Mutex<()> = Mutex::new(());

fn one_vm_at_a_time() -> MutexGuard<'static, ()> {
    VM_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `scsi_debug` driver's runtime knobs: with `opts` 4 ("timeout")
/// and `every_nth` 1 it ignores every command from then on, as a disk that
/// stopped answering does.
const SCSI_DEBUG: &str = "/sys/bus/pseudo/drivers/scsi_debug";

/// Builds the demo appliance's image with `modules` instead of
/// [`BASE_MODULES`] (same binaries, configuration and stage).
fn image_with(appliance: &Appliance, modules: &[(&str, &str)]) -> Result<Image, String> {
    let assets = Assets::get()?;
    let mut image = appliance.image(assets)?;
    let other = Image::base(assets, modules, true, STAGE)?;
    for path in other.archive.paths() {
        if !(path.starts_with("lib/modules/") || path == "etc/tether-vm/modules") {
            continue;
        }
        if let Some(e) = other.archive.get(path) {
            if let Kind::File(bytes) = &e.kind {
                image.archive.file(path, e.perm, bytes.clone());
            }
        }
    }
    image.modules = other.modules;
    Ok(image)
}

/// Boots `image` with `tweak` applied to QEMU's configuration.
fn boot_with(
    name: &str,
    dir: &Path,
    appliance: &Appliance,
    image: &Image,
    tweak: impl FnOnce(&mut VmConfig),
) -> Result<Vm, String> {
    let assets = Assets::get()?;
    let initrd = dir.join("initrd.cpio");
    image.write(&initrd)?;
    let disk = Disk::create(&dir.join("disk.img"), 64).map_err(|e| e.to_string())?;
    let mut cfg = VmConfig::new(name, &assets.boot_image, &initrd, dir);
    cfg.disk = Some(disk.path.clone());
    cfg.agent = true;
    cfg.append = appliance.append.clone();
    cfg.transcript = Some(dir.join("transcript.log"));
    tweak(&mut cfg);
    Vm::start(cfg).map_err(|e| e.to_string())
}

fn agent_out(vm: &mut Vm, cmd: &str) -> Result<String, String> {
    let r = vm
        .agent(&format!("exec {}", cmd), CMD)
        .map_err(|e| e.to_string())?;
    Ok(r.str("out").trim().to_string())
}

fn wait(vm: &mut Vm, source: Source, needle: &str, timeout: Duration) -> Result<Event, String> {
    vm.timeline
        .wait_line(source, needle, timeout)
        .map_err(|e| e.to_string())
}

/// The row's modules: the image's own ([`BASE_MODULES`], so the fix under
/// test is whatever they say for `watchdog`), `i6300esb` without its lock
/// bit, and a RAM-backed SCSI disk (`scsi_debug`, `sd_mod`).
fn row_modules() -> Vec<(&'static str, &'static str)> {
    let mut m: Vec<(&str, &str)> = BASE_MODULES
        .iter()
        .map(|&(n, p)| {
            if n == "i6300esb" {
                (n, "nowayout=0")
            } else {
                (n, p)
            }
        })
        .collect();
    m.push(("scsi_debug", "dev_size_mb=1"));
    m.push(("sd_mod", ""));
    m
}

#[test]
fn reboot_that_never_completes_ends_in_a_hardware_reset() {
    let _vm = one_vm_at_a_time();
    let slug = "20-reboot-hang";
    let mut result = RowResult::new(
        slug,
        "reboot(2) does not complete (a disk's cache flush hangs in sd_shutdown)",
        "hardware reset within hardware_timeout of reboot(2); next boot: card reset",
    );
    let dir = run_dir(&format!("matrix-{}", slug));
    let outcome = (|| -> Result<(), String> {
        let mut appliance = Appliance::demo();
        // KERN_NOTICE lines of the restart path (`sd ...: Synchronizing
        // SCSI cache`, `reboot: machine restart`) on the console.
        appliance.append.push_str(" loglevel=6");
        let config: Config = appliance.config()?;
        let hardware = config.timing.hardware_timeout;
        let image = image_with(&appliance, &row_modules())?;
        let mut vm = boot_with(slug, &dir, &appliance, &image, |_| {})?;
        vm.wait_agent_ready(Duration::from_secs(120))
            .map_err(|e| e.to_string())?;
        vm.agent("wait-chain 60000", CMD)
            .map_err(|e| e.to_string())?;
        let params = agent_out(
            &mut vm,
            "echo stop_on_reboot=$(cat /sys/module/watchdog/parameters/stop_on_reboot) \
             i6300esb=\"$(grep ^i6300esb /etc/tether-vm/modules)\" \
             sda=$(cat /sys/block/sda/queue/write_cache 2>&1)",
        )?;
        vm.timeline.note(format!("guest: {}", params));
        if !params.contains("sda=write back") {
            return Err(format!(
                "the hanging disk is not there with its write cache on: {}",
                params
            ));
        }
        let out = agent_out(
            &mut vm,
            &format!(
                "echo 4 > {d}/opts && echo 1 > {d}/every_nth && echo opts=$(cat {d}/opts) every_nth=$(cat {d}/every_nth)",
                d = SCSI_DEBUG
            ),
        )?;
        vm.timeline
            .note(format!("scsi_debug ignores every command: {}", out));
        let k = vm
            .agent("exec /sbin/tetherctl reboot", CMD)
            .map_err(|e| e.to_string())?;
        if k.i64("code") != 0 {
            return Err(format!("tetherctl reboot: {}", k.str("out")));
        }
        let reboot = wait(
            &mut vm,
            Source::Console,
            "shutdown: reboot(2)",
            Duration::from_secs(60),
        )?;
        let mark = vm.timeline.mark();
        let stuck = wait(
            &mut vm,
            Source::Console,
            "Synchronizing SCSI cache",
            Duration::from_secs(30),
        )?;
        vm.timeline.seek(mark);
        let fired = vm.timeline.wait_for(
            "the hardware watchdog (QMP WATCHDOG) or a completed reboot",
            hardware + SLACK + Duration::from_secs(10),
            |e| {
                e.source == Source::Qmp
                    && (e.text.starts_with("WATCHDOG") || e.text.starts_with("RESET"))
            },
        );
        let fired = match fired {
            Ok(e) => e,
            Err(e) => {
                let status = vm.query_status(Duration::from_secs(5));
                result.observed = format!(
                    "no hardware reset {:.0}s after reboot(2); QMP status {:?}; {}",
                    reboot.at.elapsed().as_secs_f64(),
                    status,
                    params
                );
                return Err(format!(
                    "the reboot hangs (QMP status {:?}: the guest runs, stuck in the kernel) \
                     and the hardware watchdog never fired: no backstop ({}): {}",
                    status, params, e
                ));
            }
        };
        if !fired.text.starts_with("WATCHDOG") {
            return Err(format!(
                "the machine reset without the watchdog: the injected hang did not hold ({})",
                fired.text
            ));
        }
        let took = fired.at - reboot.at;
        result.time = Some(took);
        result.bound = Some(hardware);
        result.formula = "hardware_timeout".into();
        let preinit = wait(
            &mut vm,
            Source::Console,
            "tether-vm: preinit done",
            Duration::from_secs(120),
        )?;
        let bootstatus = preinit
            .text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("bootstatus="))
            .unwrap_or("")
            .to_string();
        result.cause = format!("card reset (bootstatus {})", bootstatus);
        result.observed = format!(
            "stuck in sd_shutdown {:.1}s after reboot(2); hardware reset {:.1}s after reboot(2) ({})",
            (stuck.at.saturating_duration_since(reboot.at)).as_secs_f64(),
            took.as_secs_f64(),
            params
        );
        if took > hardware + SLACK {
            return Err(format!(
                "the hardware reset came {:.2}s after reboot(2), over hardware_timeout {:.2}s + {:.1}s slack",
                took.as_secs_f64(),
                hardware.as_secs_f64(),
                SLACK.as_secs_f64()
            ));
        }
        if bootstatus != "32" {
            return Err(format!(
                "the next boot's device boot status is {:?}, not a card reset (32)",
                bootstatus
            ));
        }
        Ok(())
    })();
    result.pass = outcome.is_ok();
    if let Err(e) = &outcome {
        if result.observed.is_empty() {
            result.observed = format!("error: {}", e.lines().next().unwrap_or(""));
        }
    }
    let _ = report::record(&result);
    eprintln!("{}", report::render(std::slice::from_ref(&result)));
    if let Err(e) = outcome {
        panic!(
            "{}\n(transcript: {})",
            e,
            dir.join("transcript.log").display()
        );
    }
}

#[test]
fn reboot_with_action_shutdown_ends_qemu() {
    let _vm = one_vm_at_a_time();
    let name = "reboot-action-shutdown";
    let outcome = (|| -> Result<(), String> {
        let mut appliance = Appliance::demo();
        appliance.append.push_str(" loglevel=6");
        let image = image_with(&appliance, BASE_MODULES)?;
        let mut vm = boot_with(name, &run_dir(name), &appliance, &image, |c| {
            c.reboot_action = Some("shutdown".into());
            c.watchdog_action = "debug".into();
        })?;
        vm.wait_agent_ready(Duration::from_secs(120))
            .map_err(|e| e.to_string())?;
        vm.agent("wait-chain 60000", CMD)
            .map_err(|e| e.to_string())?;
        let k = vm
            .agent("exec /sbin/tetherctl reboot", CMD)
            .map_err(|e| e.to_string())?;
        let t0 = k.event.at;
        wait(
            &mut vm,
            Source::Console,
            "machine restart",
            Duration::from_secs(60),
        )?;
        let restart = vm
            .timeline
            .events()
            .iter()
            .rev()
            .find(|e| e.is(Source::Console, "machine restart"))
            .map(|e| e.at)
            .unwrap_or_else(Instant::now);
        // One sample right after the message: QEMU may still answer.
        let first = vm.query_status(Duration::from_secs(2));
        let ended = vm.timeline.wait_for(
            "QEMU's exit (console closed)",
            Duration::from_secs(60),
            |e| e.source == Source::Exit,
        );
        let shutdown = vm
            .timeline
            .events()
            .iter()
            .any(|e| e.is(Source::Qmp, "SHUTDOWN") && e.text.contains("guest-reset"));
        match ended {
            Ok(e) if shutdown => {
                eprintln!(
                    "QEMU exited {:.2}s after `machine restart` ({:.2}s after the request), \
                     after SHUTDOWN guest-reset; query-status right after the message: {:?}",
                    (e.at - restart).as_secs_f64(),
                    (e.at - t0).as_secs_f64(),
                    first
                );
                Ok(())
            }
            other => {
                let status = vm.query_status(Duration::from_secs(5));
                let pid = vm.pid();
                let proc_state = std::fs::read_to_string(format!("/proc/{}/stat", pid))
                    .ok()
                    .and_then(|s| {
                        s.rsplit(')')
                            .next()
                            .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
                    });
                let wchan = std::fs::read_to_string(format!("/proc/{}/wchan", pid)).ok();
                Err(format!(
                    "after `machine restart` QEMU did not end within 60s ({:?}; SHUTDOWN guest-reset seen: {}): \
                     query-status {:?} (right after the message: {:?}), process state {:?}, wchan {:?}",
                    other.map(|e| e.text),
                    shutdown,
                    status,
                    first,
                    proc_state,
                    wchan
                ))
            }
        }
    })();
    if let Err(e) = outcome {
        panic!(
            "{}\n(transcript: {})",
            e,
            tether_vm_tests::image::target_dir()
                .join("vm-runs")
                .join(name)
                .join("transcript.log")
                .display()
        );
    }
}

/// The other side of `stop_on_reboot=0`: the watchdog core's notifier
/// stops watchdogs on `SYS_DOWN` (restart) and `SYS_HALT`, never on
/// `SYS_POWER_OFF`. With it off, a halt (init's `SIGUSR2`,
/// `RB_HALT_SYSTEM`) leaves the armed watchdog running, so a halted
/// appliance resets within `hardware_timeout`, as any other dead
/// appliance would; poweroff is the way to stay off. Same `nowayout=0` as
/// the row above, so that the 6300ESB's lock bit is not what holds.
#[test]
fn halt_with_the_watchdog_armed_ends_in_a_hardware_reset() {
    let _vm = one_vm_at_a_time();
    let name = "reboot-halt";
    let dir = run_dir(name);
    let outcome = (|| -> Result<(), String> {
        let mut appliance = Appliance::demo();
        appliance.append.push_str(" loglevel=6");
        let hardware = appliance.config()?.timing.hardware_timeout;
        let modules: Vec<(&str, &str)> = row_modules()
            .into_iter()
            .filter(|(n, _)| *n != "scsi_debug" && *n != "sd_mod")
            .collect();
        let image = image_with(&appliance, &modules)?;
        let mut vm = boot_with(name, &dir, &appliance, &image, |_| {})?;
        vm.wait_agent_ready(Duration::from_secs(120))
            .map_err(|e| e.to_string())?;
        vm.agent("wait-chain 60000", CMD)
            .map_err(|e| e.to_string())?;
        agent_out(&mut vm, "kill -USR2 1")?;
        let halt = wait(
            &mut vm,
            Source::Console,
            "shutdown: reboot(2) RB_HALT_SYSTEM",
            Duration::from_secs(60),
        )?;
        wait(
            &mut vm,
            Source::Console,
            "reboot: System halted",
            Duration::from_secs(30),
        )?;
        let fired = wait(
            &mut vm,
            Source::Qmp,
            "WATCHDOG",
            hardware + SLACK + Duration::from_secs(10),
        )
        .map_err(|e| {
            format!(
                "halted, and the hardware watchdog never fired (QMP status {:?}): {}",
                vm.query_status(Duration::from_secs(5)),
                e
            )
        })?;
        let took = fired.at - halt.at;
        eprintln!(
            "halt: hardware reset {:.2}s after reboot(2) RB_HALT_SYSTEM (hardware_timeout {:.1}s)",
            took.as_secs_f64(),
            hardware.as_secs_f64()
        );
        if took > hardware + SLACK {
            return Err(format!(
                "the hardware reset came {:.2}s after the halt, over hardware_timeout {:.2}s + {:.1}s slack",
                took.as_secs_f64(),
                hardware.as_secs_f64(),
                SLACK.as_secs_f64()
            ));
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        panic!(
            "{}\n(transcript: {})",
            e,
            dir.join("transcript.log").display()
        );
    }
}
