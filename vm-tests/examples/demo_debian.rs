//! The Debian tour (`./demo.sh --debian`, which builds and runs this): the
//! Debian 12 appliance of `vm-tests/src/debian.rs` (Debian's own sshd,
//! rsyslogd, cron, chronyd; tether-init as PID 1; the i6300esb) in QEMU
//! TCG, driven from the host over a real ssh session:
//!
//! 1. boot; the host logs in over ssh (127.0.0.1 only, a key made now);
//! 2. `tetherctl status`: the services, sshd ready through sd_notify;
//! 3. sshd is killed (-9) and restarted;
//! 4. an ssh session stays open while the restarter is killed (-9): the
//!    session goes on, a new restarter re-adopts sshd;
//! 5. rsyslogd holds tether's lines and the services' output;
//! 6. init hangs (ptrace stop of PID 1): the hardware resets the machine,
//!    and the next boot says why (`tetherctl history`).

use std::io::BufRead;
use std::time::{Duration, Instant};
use tether_vm_tests::debian::{self, Guest, Options};
use tether_vm_tests::events::Source;
use tether_vm_tests::image::run_dir;

fn banner(text: &str) {
    println!("\n=== {} ===", text);
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("\ndemo failed: {}", msg);
    std::process::exit(1);
}

fn show(g: &Guest, cmd: &str) -> String {
    println!("guest# {}", cmd);
    match g.ssh(cmd) {
        Ok(out) => {
            for l in out.lines() {
                println!("  {}", l);
            }
            out
        }
        Err(e) => fail(e),
    }
}

fn ssh_pid(g: &Guest) -> Option<u64> {
    let st: serde_json::Value =
        serde_json::from_str(&g.ssh("tetherctl status --json ssh").ok()?).ok()?;
    let s = if st["services"].is_array() {
        st["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "ssh")?
            .clone()
    } else {
        st
    };
    s["pid"].as_u64()
}

fn main() {
    let dir = run_dir("demo-debian");
    banner("Booting Debian 12 with init=/sbin/tether-init (QEMU TCG, i6300esb)");
    println!("(the first run builds the image from the Debian archive: a few minutes)");
    let mut g = debian::boot("demo-debian", &dir, &Options::default()).unwrap_or_else(|e| fail(e));
    let t = g
        .wait_login(Duration::from_secs(300))
        .unwrap_or_else(|e| fail(e));
    println!(
        "ssh root@127.0.0.1 -p {} logged in {:.1} s after QEMU started",
        g.ssh_port,
        t.as_secs_f64()
    );
    show(&g, "cat /etc/debian_version; uname -r; ps -o pid,comm -p 1");

    banner("The services: Debian's own daemons under the restarter");
    show(&g, "tetherctl status");

    banner("sshd is killed (kill -9); the restarter starts it again");
    let old = ssh_pid(&g).unwrap_or_else(|| fail("no sshd pid"));
    let _ = g.ssh(&format!("kill -9 {}", old));
    let t0 = Instant::now();
    loop {
        if let Some(p) = ssh_pid(&g) {
            if p != old {
                println!(
                    "sshd {} -> {}: logged in again {:.1} s after the kill",
                    old,
                    p,
                    t0.elapsed().as_secs_f64()
                );
                break;
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            fail("sshd did not come back");
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    banner("An open ssh session while the restarter is killed (kill -9)");
    let mut session = g
        .ssh_command()
        .arg("while :; do echo \"session alive, uptime $(cut -d' ' -f1 /proc/uptime)\"; sleep 1; done")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(e));
    let out = session.stdout.take().unwrap_or_else(|| fail("no stdout"));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    if let Ok(l) = rx.recv_timeout(Duration::from_secs(30)) {
        println!("session> {}", l);
    }
    show(
        &g,
        "pgrep -a tether-restart; kill -9 $(pgrep -x tether-restarte)",
    );
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(8) {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(l) => println!("session> {}", l),
            Err(_) => fail("the ssh session stopped"),
        }
    }
    show(&g, "pgrep -a tether-restart; tetherctl status");
    let _ = session.kill();
    let _ = session.wait();

    banner("rsyslogd has tether's lines and the services' output");
    show(
        &g,
        "grep -E 'tether-(init|watchdogd|restarter)|sshd' /var/log/syslog | tail -n 8",
    );

    banner("init hangs (ptrace stop of PID 1): the hardware watchdog resets the machine");
    let _ = g.ssh("setsid -f /usr/sbin/tether-fault hold-init >/dev/null 2>&1 </dev/null; sleep 1");
    let held = Instant::now();
    match g
        .vm
        .timeline
        .wait_for("QMP WATCHDOG", Duration::from_secs(60), |e| {
            e.source == Source::Qmp && e.text.starts_with("WATCHDOG")
        }) {
        Ok(e) => println!(
            "QMP: {} ({:.1} s after init was stopped)",
            e.text,
            e.at.saturating_duration_since(held).as_secs_f64()
        ),
        Err(e) => fail(e),
    }
    let t = g
        .wait_login(Duration::from_secs(300))
        .unwrap_or_else(|e| fail(e));
    println!("logged in again {:.1} s later", t.as_secs_f64());
    banner("The next boot says how the previous one ended");
    show(&g, "tetherctl history | head -n 5");
    // -a: the file may hold NULs where the reset cut a write short.
    show(&g, "grep -a 'previous boot' /var/log/syslog | tail -n 2");

    banner("Done: powering off");
    let _ = g.ssh("tetherctl poweroff");
    if g.vm.wait_exit(Duration::from_secs(60)).is_none() {
        g.vm.kill();
    }
}
