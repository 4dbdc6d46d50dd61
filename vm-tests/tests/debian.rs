//! The Debian appliance (issue 15) and its syslog end to end (issue 16):
//! Debian 12 from the archive, tether-init as PID 1, Debian's own daemons
//! (sshd, rsyslogd, cron, chronyd) unmodified, under QEMU TCG with the
//! i6300esb. See `vm-tests/src/debian.rs` for the image and the boot.
//!
//! The host talks to the guest with a real OpenSSH client over the
//! forwarded port on 127.0.0.1 (a key made per run).
//!
//! The appliance's fault rows (sshd kill -9, rsyslogd kill -9 with the
//! lines written meanwhile delivered or counted, restarter kill -9 with an
//! open ssh session that survives, init hung, `tetherctl reboot` leaving
//! the root filesystem clean) run through `tether-inject` on this image
//! (`tests/inject.rs`, `the_debian_appliance_image_runs_through_the_tool`,
//! plan `vm-tests/plans/debian.toml`), as issue 17 asks. What stays here is
//! what is not a fault row: sshd ready through sd_notify and a login,
//! rsyslogd as the syslog daemon, and the reset reason at the host's
//! collector (issue 16).

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
