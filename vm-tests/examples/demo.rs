//! The demo (`./demo.sh`, which builds and runs this): boots the demo
//! appliance in QEMU (TCG, i6300esb watchdog) and walks through the ladder
//! with a readable timeline:
//!
//! 1. boot: kernel, tether-init as PID 1, watchdogd arms the hardware, the
//!    restarter starts the services;
//! 2. a service crashes (`kill -9`) and is restarted, nothing else moves;
//! 3. the restarter hangs (`SIGSTOP`): init kills and replaces it after
//!    `hang_timeout`, the services come back;
//! 4. init hangs (ptrace stop of PID 1): watchdogd stops petting, the
//!    hardware resets the machine, and the second boot says why.
//!
//! `--interactive` then keeps the VM running with a shell on its console
//! (lines typed here go to the guest; Ctrl-C quits). Without it, the
//! appliance is powered off at the end.

use serde_json::Value;
use std::io::BufRead;
use std::time::{Duration, Instant};
use tether_vm_tests::appliance::{boot, Appliance};
use tether_vm_tests::events::{Event, Source};
use tether_vm_tests::image::{run_dir, Assets};
use tether_vm_tests::qemu::Vm;

const CMD: Duration = Duration::from_secs(60);

fn banner(text: &str) {
    println!("\n=== {} ===", text);
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("\ndemo failed: {}", msg);
    std::process::exit(1);
}

/// What of an event is worth a line in the demo, and under which name.
fn describe(e: &Event, interactive: bool) -> Option<(String, String)> {
    let strip_level = |t: &str| {
        let mut t = t.to_string();
        for lvl in [
            "INFO ", "WARN ", "ERROR ", "NOTICE ", "ALERT ", "CRIT ", "DEBUG ",
        ] {
            if let Some(i) = t.find(lvl) {
                if i < 40 {
                    t.replace_range(i..i + lvl.len(), "");
                }
            }
        }
        t
    };
    match e.source {
        Source::Console => {
            let t = e.text.as_str();
            if let Some(rest) = t.strip_prefix("tether-vm: ") {
                if rest.starts_with("userspace") {
                    return Some(("kernel".into(), "booted to userspace".into()));
                }
                if rest.starts_with("preinit done") {
                    let bs = rest
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("bootstatus="))
                        .unwrap_or("?");
                    let why = if bs == "32" {
                        " (device boot status: CARDRESET, the last reset was the watchdog)"
                    } else {
                        ""
                    };
                    return Some((
                        "preinit".into(),
                        format!("modules loaded, disk mounted{}", why),
                    ));
                }
                return None;
            }
            // The kernel echoes high-priority /dev/kmsg records on the
            // console ("[    3.51] tether-restarter[115]: ..."); the
            // binary's own stderr copy of that line is shown instead.
            if t.trim_start().starts_with('[')
                && t.split_once("] ")
                    .is_some_and(|(_, r)| r.starts_with("tether-"))
            {
                return None;
            }
            for who in ["tether-init[", "tether-watchdogd[", "tether-restarter["] {
                if let Some(i) = t.find(who) {
                    let name = who
                        .trim_end_matches('[')
                        .trim_start_matches("tether-")
                        .to_string();
                    let msg = t[i..].split_once("]: ").map(|(_, m)| m).unwrap_or(&t[i..]);
                    return Some((name, strip_level(msg)));
                }
            }
            if t.contains("Kernel panic")
                || t.contains("watchdog did not stop")
                || t.contains("reboot: ")
            {
                let msg = t.split_once("] ").map(|(_, m)| m).unwrap_or(t);
                return Some(("kernel".into(), msg.to_string()));
            }
            if interactive {
                return Some(("console".into(), t.to_string()));
            }
            None
        }
        // The agent's KMSG/LOG streams repeat what the layers also write
        // on the console: the console alone keeps the timeline readable.
        Source::Qmp => {
            if e.text.starts_with("WATCHDOG") {
                Some((
                    "HARDWARE".into(),
                    "*** i6300esb expired: the watchdog resets the machine ***".into(),
                ))
            } else if e.text.starts_with("SHUTDOWN") {
                Some(("qemu".into(), "powered off".into()))
            } else {
                None
            }
        }
        _ => None,
    }
}

fn agent(vm: &mut Vm, cmd: &str) -> tether_vm_tests::agent::Reply {
    vm.agent(cmd, CMD).unwrap_or_else(|e| fail(e))
}

fn print_status(status: &Value) {
    println!(
        "      {:<14} {:<10} {:>6} {:>9}",
        "service", "state", "pid", "restarts"
    );
    for s in status["services"].as_array().cloned().unwrap_or_default() {
        println!(
            "      {:<14} {:<10} {:>6} {:>9}",
            s["name"].as_str().unwrap_or("?"),
            s["state"].as_str().unwrap_or("?"),
            s["pid"]
                .as_i64()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            s["restarts"].as_u64().unwrap_or(0)
        );
    }
}

fn main() {
    let interactive = std::env::args().any(|a| a == "--interactive");
    let begun = Instant::now();
    // Ctrl-C / SIGTERM: kill QEMU, then leave (a signal would otherwise end
    // us without dropping the VM, leaving QEMU running).
    let mut mask = nix::sys::signal::SigSet::empty();
    mask.add(nix::sys::signal::Signal::SIGINT);
    mask.add(nix::sys::signal::Signal::SIGTERM);
    if let Err(e) = mask.thread_block() {
        fail(format!("blocking signals: {}", e));
    }
    let qemu_pid = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    {
        let qemu_pid = qemu_pid.clone();
        std::thread::spawn(move || {
            let _ = mask.wait();
            let pid = qemu_pid.load(std::sync::atomic::Ordering::SeqCst);
            if pid > 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            eprintln!("\ninterrupted: VM stopped");
            std::process::exit(130);
        });
    }

    banner("Preparing the appliance");
    println!("  kernel, busybox-static (apt-get download, cached in target/vm-cache), static tether binaries...");
    let t0 = Instant::now();
    let assets = Assets::get().unwrap_or_else(|e| fail(e));
    println!(
        "  kernel {} ({}), busybox {}",
        assets.kernel.release,
        assets.boot_image.display(),
        assets.busybox.display()
    );
    let appliance = if interactive {
        Appliance::demo().with_shell()
    } else {
        Appliance::demo()
    };
    let config = appliance.config().unwrap_or_else(|e| fail(e));
    println!("  timings: beat {:?}, hang_timeout {:?}, restart_delay {:?}, stale_timeout {:?}, hardware_timeout {:?}",
        config.timing.beat_interval, config.timing.hang_timeout, config.timing.restart_delay,
        config.timing.stale_timeout, config.timing.hardware_timeout);
    let dir = run_dir("demo");
    let mut g = boot("demo", &appliance, &dir).unwrap_or_else(|e| fail(e));
    println!(
        "  ready in {:.1}s; full transcript: {}",
        t0.elapsed().as_secs_f64(),
        dir.join("transcript.log").display()
    );
    qemu_pid.store(g.vm.pid() as i32, std::sync::atomic::Ordering::SeqCst);
    let vm = &mut g.vm;
    vm.timeline.set_printer(Some(Box::new(move |at, e| {
        if let Some((who, msg)) = describe(e, interactive) {
            println!("  [{:7.2}s] {:<10} {}", at, who, msg);
        }
    })));

    banner("1. Boot: kernel, tether-init as PID 1, watchdogd, restarter, services");
    vm.wait_agent_ready(Duration::from_secs(120))
        .unwrap_or_else(|e| fail(e));
    let up = agent(vm, "wait-chain 60000");
    println!(
        "  -> all services up {:.1}s after QEMU started:",
        vm.timeline.offset(up.event.at)
    );
    print_status(&up.value["status"]);

    banner("2. A service crashes: kill -9 ticker");
    let k = agent(vm, "signal svc:ticker KILL");
    let a = agent(vm, &format!("await svc:ticker {} 30000", k.i64("pid")));
    println!(
        "  -> ticker restarted by the restarter in {} ms (pid {} -> {}); nothing else touched",
        a.u64("t_ms") - k.u64("t_ms"),
        k.i64("pid"),
        a.i64("pid")
    );

    banner("3. The restarter hangs: kill -STOP tether-restarter");
    let k = agent(vm, "signal restarter STOP");
    let a = agent(vm, &format!("await restarter {} 30000", k.i64("pid")));
    println!("  -> init killed the silent restarter and started a new one after {:.2}s (hang_timeout {:?})",
        (a.u64("t_ms") - k.u64("t_ms")) as f64 / 1000.0, config.timing.hang_timeout);
    let up = agent(vm, "wait-chain 30000");
    println!(
        "  -> services back {:.2}s after the hang; no reset",
        (up.u64("t_ms") - k.u64("t_ms")) as f64 / 1000.0
    );

    banner("4. init hangs: PID 1 stopped with ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT)");
    let k = agent(vm, "hold-init");
    let fired = vm
        .timeline
        .wait_line(Source::Qmp, "WATCHDOG", Duration::from_secs(60))
        .unwrap_or_else(|e| fail(e));
    println!("  -> watchdogd stopped petting; the hardware reset the machine {:.1}s after init stopped (bound: stale_timeout + hardware_timeout = {:?})",
        (fired.at - k.event.at).as_secs_f64(), config.timing.stale_timeout + config.timing.hardware_timeout);
    banner("5. The second boot says why");
    let mark = vm.timeline.mark();
    let cause = vm
        .timeline
        .wait_for("previous boot ended", Duration::from_secs(120), |e| {
            e.text.contains("previous boot ended")
        })
        .unwrap_or_else(|e| fail(e));
    vm.timeline.seek(mark);
    vm.wait_agent_ready(Duration::from_secs(120))
        .unwrap_or_else(|e| fail(e));
    let up = agent(vm, "wait-chain 60000");
    let text = &cause.text[cause.text.find("previous boot ended").unwrap_or(0)..];
    println!("  -> {}", text);
    println!(
        "  -> chain up again {:.1}s after the hang",
        (up.event.at - k.event.at).as_secs_f64()
    );
    print_status(&up.value["status"]);

    println!("\nDemo done in {:.0}s.", begun.elapsed().as_secs_f64());
    if interactive {
        banner("Interactive: a shell on the appliance's console");
        println!("  Type commands (e.g. `tetherctl status`, `kill -9 $(pidof tether-restarter)`, `cat /var/log/messages`). Ctrl-C stops the VM.");
        let _ = vm.send_console("");
        let stdin = std::io::stdin();
        let (tx, rx) = crossbeam_channel::unbounded::<String>();
        std::thread::spawn(move || {
            for line in stdin.lock().lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        loop {
            while let Ok(l) = rx.try_recv() {
                let _ = vm.send_console(&l);
            }
            let _ = vm
                .timeline
                .expect_none("nothing", Duration::from_millis(100), |_| false);
            if vm.timeline.ended() {
                println!("VM ended");
                return;
            }
        }
    }
    let _ = agent(vm, "exec /sbin/tetherctl poweroff");
    if vm.wait_exit(Duration::from_secs(30)).is_none() {
        vm.kill();
    }
}
