//! The Debian appliance (issue 15) and its syslog end to end (issue 16):
//! Debian 12 from the archive, tether-init as PID 1, Debian's own daemons
//! (sshd, rsyslogd, cron, chronyd) unmodified, under QEMU TCG with the
//! i6300esb. See `vm-tests/src/debian.rs` for the image and the boot.
//!
//! The host talks to the guest with a real OpenSSH client over the
//! forwarded port on 127.0.0.1 (a key made per run).

use std::time::{Duration, Instant};
use tether_vm_tests::debian::{self, Guest, Options};
use tether_vm_tests::image::run_dir;

fn boot(name: &str, opts: &Options) -> Guest {
    let dir = run_dir(name);
    match debian::boot(name, &dir, opts) {
        Ok(g) => g,
        Err(e) => panic!("{}: {}", name, e),
    }
}

fn login(g: &mut Guest) -> Duration {
    match g.wait_login(Duration::from_secs(240)) {
        Ok(t) => t,
        Err(e) => panic!("{}", e),
    }
}

fn ssh(g: &Guest, cmd: &str) -> String {
    g.ssh(cmd)
        .unwrap_or_else(|e| panic!("ssh {:?}: {}", cmd, e))
}

/// `tetherctl status --json` of the guest.
fn status(g: &Guest) -> serde_json::Value {
    let out = ssh(g, "tetherctl status --json");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON: {}: {}", e, out))
}

fn service<'a>(st: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    st["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {} in {}", name, st))
}

fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {:?} waiting for {}", within, what);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn sshd_becomes_ready_through_sd_notify_and_the_host_logs_in() {
    let mut g = boot("debian-ssh", &Options::default());
    let t = login(&mut g);
    eprintln!(
        "debian-ssh: login {:.1} s after QEMU start",
        t.as_secs_f64()
    );
    assert_eq!(ssh(&g, "cat /proc/1/comm").trim(), "tether-init");
    // Debian's sshd, unmodified, said READY=1 (notify = "ready"): the
    // restarter's state is "ready" only after that datagram.
    let st = status(&g);
    for name in ["ssh", "rsyslog"] {
        let s = service(&st, name);
        assert_eq!(s["state"], "ready", "{}: {}", name, s);
    }
    let pid = service(&st, "ssh")["pid"].as_u64().unwrap_or(0);
    let exe = ssh(&g, &format!("readlink /proc/{}/exe", pid));
    assert_eq!(exe.trim(), "/usr/sbin/sshd");
}

fn probe_opts() -> Options {
    Options {
        extra_services: vec![(
            debian::PROBE_SERVICE.0.to_string(),
            debian::PROBE_SERVICE.1.to_string(),
        )],
        ..Options::default()
    }
}

fn pid_of(st: &serde_json::Value, name: &str) -> u64 {
    service(st, name)["pid"].as_u64().unwrap_or(0)
}

/// Waits until `name` runs with a pid other than `old` and is ready.
fn wait_restarted(g: &Guest, name: &str, old: u64) -> u64 {
    wait_until(
        &format!("{} restarted (old pid {})", name, old),
        Duration::from_secs(60),
        || {
            let st: serde_json::Value =
                serde_json::from_str(&g.ssh("tetherctl status --json").ok()?).ok()?;
            let s = service(&st, name);
            let pid = s["pid"].as_u64()?;
            (pid != old && s["ready"] == true).then_some(pid)
        },
    )
}

#[test]
fn rsyslogd_is_the_syslog_daemon_and_gets_tethers_lines_and_service_output() {
    let mut g = boot("debian-rsyslog", &probe_opts());
    login(&mut g);
    let log_owner = ssh(&g, "readlink -f /proc/$(cat /run/rsyslogd.pid 2>/dev/null || pgrep -x rsyslogd)/exe; ls -l /dev/log");
    assert!(log_owner.contains("/usr/sbin/rsyslogd"), "{}", log_owner);
    // /dev/log is rsyslogd's socket: a line sent with logger(1) lands in its file.
    ssh(&g, "logger -t hostprobe hello-from-the-host");
    // watchdogd's liveness line comes every liveness_interval (10 s here):
    // wait for the first one that reaches rsyslogd too (CI once checked
    // before it had come).
    let liveness = |s: &str| {
        s.lines()
            .any(|l| l.contains("tether-watchdogd") && l.contains("liveness"))
    };
    let syslog = wait_until(
        "probe and liveness lines in /var/log/syslog",
        Duration::from_secs(60),
        || {
            let s = g.ssh("cat /var/log/syslog /var/log/auth.log").ok()?;
            (s.contains("hello-from-the-host") && s.contains("probe 5") && liveness(&s))
                .then_some(s)
        },
    );
    // tether's own lines (init, watchdogd, restarter) and the services'
    // (sshd's via its own syslog(3), in Debian's auth.log; probe's stdout
    // via the restarter).
    for needle in [
        "tether-init",
        "tether-watchdogd",
        "tether-restarter",
        "sshd",
        "probe 5",
    ] {
        assert!(
            syslog.contains(needle),
            "no {:?} in /var/log/syslog:\n{}",
            needle,
            syslog
        );
    }
    // RFC 5424 from tether: the liveness line carries its MSGID.
    assert!(
        liveness(&syslog),
        "no liveness line from watchdogd:\n{}",
        syslog
    );
}

#[test]
fn sshd_killed_is_restarted_and_the_host_logs_in_again() {
    let mut g = boot("debian-sshd-kill", &Options::default());
    login(&mut g);
    let old = pid_of(&status(&g), "ssh");
    assert!(old > 0);
    // The kill ends this very session too: sshd's listener is the parent.
    let _ = g.ssh(&format!("kill -9 {}", old));
    let t0 = Instant::now();
    let new = wait_restarted(&g, "ssh", old);
    eprintln!(
        "debian-sshd-kill: sshd {} -> {}, logged in again {:.1} s after the kill",
        old,
        new,
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(service(&status(&g), "ssh")["restarts"].as_u64(), Some(1));
}

/// Lines `probe N` in the text: the numbers seen.
fn probe_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.split("probe ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn rsyslogd_killed_lines_are_buffered_and_delivered_losses_counted() {
    let mut g = boot("debian-rsyslog-kill", &probe_opts());
    login(&mut g);
    let old = pid_of(&status(&g), "rsyslog");
    // n0: the last probe line written before the kill.
    let n0: u64 = ssh(&g, &format!("cat /run/probe.n; kill -9 {}", old))
        .trim()
        .parse()
        .expect("probe number");
    let new = wait_restarted(&g, "rsyslog", old);
    // n1: written by the time rsyslogd was back (ready).
    let n1: u64 = ssh(&g, "cat /run/probe.n")
        .trim()
        .parse()
        .expect("probe number");
    let text = wait_until(
        "probe lines after the restart",
        Duration::from_secs(30),
        || {
            let s = g.ssh("cat /var/log/syslog").ok()?;
            (probe_numbers(&s).iter().any(|n| *n > n1 + 10)).then_some(s)
        },
    );
    let dropped = service(&status(&g), "probe")["dropped_lines"]
        .as_u64()
        .unwrap_or(0);
    let seen: std::collections::BTreeSet<u64> = probe_numbers(&text).into_iter().collect();
    // Lines the dead rsyslogd had already taken (in its socket's queue or
    // its memory) are gone with it and no sender can know: counted here,
    // reported, not asserted. Lines written while it was down (after
    // n0 + 2: one line may be in flight during the kill) must arrive, or
    // be counted as dropped by the restarter.
    let lost_in_daemon = (1..=n0).filter(|n| !seen.contains(n)).count() as u64;
    let missing_while_down: Vec<u64> = (n0 + 3..=n1).filter(|n| !seen.contains(n)).collect();
    eprintln!(
        "debian-rsyslog-kill: rsyslogd {} -> {}; probe lines {}..={} written while it was down: {} missing, restarter counted {} dropped; {} line(s) taken by the killed daemon lost",
        old,
        new,
        n0 + 1,
        n1,
        missing_while_down.len(),
        dropped,
        lost_in_daemon
    );
    assert!(
        n1 > n0 + 3,
        "rsyslogd was back too fast to test anything ({} .. {})",
        n0,
        n1
    );
    assert!(
        missing_while_down.len() as u64 <= dropped,
        "probe lines {:?} (written while rsyslogd was down) never arrived, and only {} were counted as dropped",
        missing_while_down,
        dropped
    );
}

#[test]
fn restarter_killed_the_open_ssh_session_survives() {
    use std::io::BufRead;
    let mut g = boot("debian-restarter-kill", &Options::default());
    login(&mut g);
    let ssh_pid = pid_of(&status(&g), "ssh");
    // An open interactive session: prints a tick every 500 ms.
    let mut session = g
        .ssh_command()
        .arg("while :; do echo tick $(cut -d' ' -f1 /proc/uptime); sleep 0.5; done")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the ssh session");
    let out = session.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("first tick");
    // By its comm, cut to 15 bytes ("tether-restarte"): `pgrep -f` would
    // also match the shell that runs this very command.
    let restarter = ssh(&g, "pgrep -x tether-restarte");
    let restarter: u64 = restarter
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .parse()
        .expect("restarter pid");
    ssh(&g, &format!("kill -9 {}", restarter));
    let killed = Instant::now();
    // The session goes on: ticks keep arriving for 15 s after the kill.
    let mut ticks = 0;
    while killed.elapsed() < Duration::from_secs(15) {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(_) => ticks += 1,
            Err(e) => panic!(
                "the ssh session stopped {:.1} s after the restarter was killed: {:?}",
                killed.elapsed().as_secs_f64(),
                e
            ),
        }
    }
    assert!(ticks >= 20, "only {} ticks in 15 s", ticks);
    assert_eq!(
        session.try_wait().ok().flatten(),
        None,
        "the ssh client exited"
    );
    // A new restarter has re-adopted sshd: same pid, no restart.
    let st = status(&g);
    let new_restarter: u64 = ssh(&g, "pgrep -x tether-restarte")
        .trim()
        .parse()
        .unwrap_or(0);
    assert_ne!(new_restarter, restarter);
    assert_eq!(pid_of(&st, "ssh"), ssh_pid, "sshd was restarted: {}", st);
    let _ = session.kill();
    let _ = session.wait();
    eprintln!(
        "debian-restarter-kill: {} ticks in the 15 s after the kill; sshd {} kept",
        ticks, ssh_pid
    );
}

#[test]
fn tetherctl_reboot_leaves_the_root_filesystem_clean() {
    let mut g = boot(
        "debian-reboot",
        &Options {
            reboot_action: Some("shutdown".into()),
            ..Options::default()
        },
    );
    login(&mut g);
    ssh(&g, "echo written-before-reboot > /root/marker");
    let _ = g.ssh("tetherctl reboot");
    let t0 = Instant::now();
    let st = g.vm.wait_exit(Duration::from_secs(120));
    assert!(st.is_some(), "QEMU did not end after tetherctl reboot");
    eprintln!(
        "debian-reboot: reset {:.1} s after tetherctl reboot",
        t0.elapsed().as_secs_f64()
    );
    match debian::fsck_clean(&g.disk) {
        Ok(_) => {}
        Err(e) => panic!("{}", e),
    }
    let sb = std::process::Command::new(debian::sbin_tool("dumpe2fs"))
        .arg("-h")
        .arg(&g.disk)
        .output()
        .expect("dumpe2fs");
    let sb = String::from_utf8_lossy(&sb.stdout).into_owned();
    let state = tether_vm_tests::disk::parse_super_state(&sb).expect("superblock");
    assert!(state.is_clean(), "root filesystem left {:?}", state);
}

#[test]
fn init_hung_resets_the_machine_and_the_reason_reaches_the_hosts_collector() {
    use tether_vm_tests::events::Source;
    let dir = run_dir("debian-init-hung");
    let collector = debian::Collector::start(&dir).expect("collector");
    let opts = Options {
        collector_port: Some(collector.port),
        ..Options::default()
    };
    let mut g = debian::boot("debian-init-hung", &dir, &opts).expect("boot");
    login(&mut g);
    // The collector shows the guest's liveness lines, parsed as RFC 5424.
    let live = wait_until(
        "a LIVENESS line at the collector",
        Duration::from_secs(60),
        || {
            collector
                .lines()
                .iter()
                .filter_map(|l| debian::parse_rfc5424(l).ok())
                .find(|m| m.msgid == "LIVENESS" && m.hostname == "tether-debian")
        },
    );
    eprintln!("collector: {:?}", live);
    // Hang PID 1 (ptrace stop, as the busybox matrix does).
    let _ = g.ssh("setsid -f /usr/sbin/tether-fault hold-init >/dev/null 2>&1 </dev/null; sleep 1");
    let reset =
        g.vm.timeline
            .wait_for("QMP WATCHDOG", Duration::from_secs(60), |e| {
                e.source == Source::Qmp && e.text.starts_with("WATCHDOG")
            })
            .unwrap_or_else(|e| panic!("{}", e));
    let before = collector.lines().len();
    // The next boot's line saying how this one ended, from watchdogd:
    // logged before rsyslogd runs, it travels through /dev/kmsg and
    // imklog, wrapped in a kernel record (`debian::unwrap_kmsg`), or
    // directly when syslog was already up.
    let (outer, msg, arrived) = wait_until(
        "the previous boot's end, from the next boot, at the collector",
        Duration::from_secs(240),
        || {
            g.vm.timeline.drain();
            let lines = collector.lines();
            lines[before.min(lines.len())..]
                .iter()
                .filter_map(|l| debian::parse_rfc5424(l).ok())
                .find_map(|m| {
                    let inner = debian::unwrap_kmsg(&m).unwrap_or_else(|| m.clone());
                    (inner.app == "tether-watchdogd" && inner.msgid == "RESET")
                        .then(|| (m, inner, Instant::now()))
                })
        },
    );
    let took = arrived.duration_since(reset.at);
    eprintln!(
        "debian-init-hung: reset reason at the collector {:.1} s after the hardware reset (QMP WATCHDOG): {:?} (as received: APP-NAME {:?})",
        took.as_secs_f64(),
        msg,
        outer.app
    );
    assert_eq!(msg.hostname, "tether-debian", "{:?}", msg);
    assert_eq!(outer.hostname, "tether-debian", "{:?}", outer);
    let cause = debian::sd_param(&msg.sd, "tether@", "cause").unwrap_or_default();
    let layer = debian::sd_param(&msg.sd, "tether@", "layer").unwrap_or_default();
    assert!(cause.contains("watchdog"), "cause {:?} in {:?}", cause, msg);
    assert_eq!(layer, "init", "{:?}", msg);
    assert!(msg.msg.contains("previous boot ended"), "{:?}", msg);
    std::fs::write(
        dir.join("reset-to-collector.txt"),
        format!("{:.1}\n", took.as_secs_f64()),
    )
    .ok();
}
