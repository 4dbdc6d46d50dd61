//! tether-restarter against real processes: restart policy, readiness
//! ordering, watchdogs, stops that reach the whole process group, bad
//! files at start and at reload, a restarter killed and started again, a
//! service that cannot start, reboot requests with and without init.
//!
//! Timings are short (restart delays of 100-300 ms); lower bounds are the
//! restarter's own guarantees, upper bounds are generous.

use std::time::{Duration, Instant};
use tether_integration::bins::bin;
use tether_integration::svc::{alive, cmdline, pgid_of, pipe, read_available, Restarter};

const LONG: Duration = Duration::from_secs(10);

fn notify_helper() -> String {
    bin("notify-helper").display().to_string()
}

fn kill(pid: i32, sig: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::try_from(sig).unwrap(),
    )
    .unwrap();
}

/// Arrival times of log lines containing `needle`, as gaps in ms.
fn gaps_ms(r: &Restarter, needle: &str) -> Vec<u128> {
    let lines = r.log.matching(needle);
    lines
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_millis())
        .collect()
}

#[test]
fn crash_after_a_long_run_is_restarted_at_once_with_a_new_pid() {
    let r = Restarter::start(
        "restart-at-once",
        &[(
            "a",
            "exec = [\"/bin/sleep\", \"7101\"]\nrestart_delay = \"1s\"\n",
        )],
    );
    let pid = r.wait_pid("a", LONG);
    // Let it run longer than restart_delay: a crash then restarts at once.
    std::thread::sleep(Duration::from_millis(1200));
    let t0 = Instant::now();
    kill(pid, libc::SIGKILL);
    let new = r.wait_pid_other_than("a", pid, LONG);
    let took = t0.elapsed();
    assert_ne!(new, pid);
    assert!(
        took < Duration::from_millis(700),
        "restart took {took:?}, not at once"
    );
    let exited = r.log.wait_for("service a exited: signal KILL", LONG);
    let started = r
        .log
        .wait_for(&format!("service a started (pid {new})"), LONG);
    assert!(started.at >= exited.at);
    let st = r.wait_state("a", "running", LONG);
    assert_eq!(st["restarts"], 1);
    assert_eq!(st["last_exit"], "signal KILL");
    assert_eq!(r.processes("sleep 7101"), vec![new]);
}

#[test]
fn crash_loop_is_throttled_to_one_start_per_restart_delay() {
    // Each start stamps the time it began running (the log lines' arrival
    // at the test's syslog socket jitters by a scheduling delay or two on a
    // loaded machine; the process's own clock reading does not depend on
    // when its start was logged).
    let stamps = std::env::temp_dir().join(format!("tether-crash-loop-{}", std::process::id()));
    let _ = std::fs::remove_file(&stamps);
    let service = format!(
        "exec = [\"/bin/sh\", \"-c\", \"date +%s%N >> {}; sleep 0.05; exit 1\"]\nrestart_delay = \"300ms\"\n",
        stamps.display()
    );
    let r = Restarter::start("crash-loop", &[("a", service.as_str())]);
    r.log.wait_for_count("service a exited: exit 1", 5, LONG);
    let ns: Vec<u128> = std::fs::read_to_string(&stamps)
        .expect("start stamps")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let _ = std::fs::remove_file(&stamps);
    let gaps: Vec<u128> = ns.windows(2).map(|w| (w[1] - w[0]) / 1_000_000).collect();
    assert!(gaps.len() >= 4, "starts stamped: {ns:?}");
    for g in &gaps[..4] {
        assert!(
            (250..1000).contains(g),
            "gaps between starts {gaps:?} ms, restart_delay 300 ms"
        );
    }
    let exits = r.log.matching("service a exited: exit 1");
    assert!(exits.len() >= 4);
}

#[test]
fn restart_never_leaves_an_exited_service_stopped() {
    let r = Restarter::start(
        "restart-never",
        &[("a", "exec = [\"/bin/sh\", \"-c\", \"exit 3\"]\nrestart = \"never\"\nrestart_delay = \"100ms\"\n")],
    );
    let st = r.wait_state("a", "stopped", LONG);
    assert_eq!(st["last_exit"], "exit 3");
    r.log
        .wait_for("service a: not restarted (restart = \"never\")", LONG);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(r.log.matching("service a started").len(), 1);
}

#[test]
fn exhausted_window_with_stop_marks_the_service_failed() {
    let r = Restarter::start(
        "exhausted-stop",
        &[(
            "a",
            "exec = [\"/bin/sh\", \"-c\", \"exit 1\"]\nrestart_delay = \"100ms\"\nmax_restarts = 2\nwindow = \"30s\"\non_exhausted = \"stop\"\n",
        )],
    );
    let st = r.wait_state("a", "failed", LONG);
    assert_eq!(st["restarts"], 2);
    r.log.wait_for(
        "service a exhausted its restart budget (2 restarts within 30s): failed",
        LONG,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        r.log.matching("service a started").len(),
        3,
        "first start and two restarts, then nothing"
    );
}

#[test]
fn exhausted_window_with_backoff_keeps_trying_slower() {
    let r = Restarter::start(
        "exhausted-backoff",
        &[(
            "a",
            "exec = [\"/bin/sh\", \"-c\", \"exit 1\"]\nrestart_delay = \"100ms\"\nmax_restarts = 2\nwindow = \"30s\"\nmax_delay = \"400ms\"\n",
        )],
    );
    r.log.wait_for_count("service a started", 7, LONG);
    r.log.wait_for("backing off, restarting in 200ms", LONG);
    r.log.wait_for("backing off, restarting in 400ms", LONG);
    let gaps = gaps_ms(&r, "service a started");
    // 100, 100 (restart_delay), then 200, 400, 400, 400 (backoff capped).
    assert!(gaps[2] >= 180 && gaps[2] < 1000, "{gaps:?}");
    for g in &gaps[3..6] {
        assert!(*g >= 370 && *g < 1500, "{gaps:?}");
    }
    // Between two tries (a try runs the exec helper and sh for a few ms).
    r.wait_state("a", "backoff", LONG);
}

#[test]
fn exhausted_window_with_reboot_without_init_is_logged_as_undeliverable() {
    let r = Restarter::start(
        "exhausted-reboot-alone",
        &[(
            "crit",
            "exec = [\"/bin/sh\", \"-c\", \"exit 1\"]\nrestart_delay = \"100ms\"\nmax_restarts = 1\nwindow = \"30s\"\non_exhausted = \"reboot\"\n",
        )],
    );
    let line = r.log.wait_for("reboot requested", LONG);
    assert!(
        line.text
            .contains("service crit exhausted its restart budget"),
        "{}",
        line.text
    );
    assert!(
        line.text
            .contains("not possible: not started by tether-init"),
        "{}",
        line.text
    );
    r.wait_state("crit", "failed", LONG);
    assert!(!r.run.join("shutdown-request").exists());
}

#[test]
fn exhausted_window_with_reboot_asks_init_for_a_reboot() {
    let (init_r, init_w) = pipe();
    let (wd_r, wd_w) = pipe();
    let r = Restarter::builder("exhausted-reboot-init")
        .service(
            "crit",
            "exec = [\"/bin/sh\", \"-c\", \"exit 1\"]\nrestart_delay = \"100ms\"\nmax_restarts = 1\nwindow = \"30s\"\non_exhausted = \"reboot\"\n",
        )
        .env("TETHER_FDS", "init=3,watchdog=4")
        .fd(init_w, 3)
        .fd(wd_w, 4)
        .start();
    let deadline = Instant::now() + LONG;
    let mut init_bytes = Vec::new();
    while !init_bytes.contains(&b'R') {
        assert!(
            Instant::now() < deadline,
            "no R on the init pipe; got {init_bytes:?}\n{}",
            r.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
        init_bytes.extend(read_available(&init_r));
    }
    let request = std::fs::read_to_string(r.run.join("shutdown-request")).unwrap();
    assert_eq!(request.lines().count(), 1, "{request:?}");
    assert!(
        request.contains("service crit exhausted its restart budget"),
        "{request:?}"
    );
    // Heartbeats on both pipes, from the loop.
    assert!(init_bytes.iter().filter(|&&b| b == b'.').count() >= 1);
    std::thread::sleep(Duration::from_millis(300));
    let wd = read_available(&wd_r);
    assert!(wd.iter().filter(|&&b| b == b'.').count() >= 2, "{wd:?}");
    assert!(!wd.contains(&b'R'), "requests go to init only");
    r.wait_state("crit", "failed", LONG);
}

#[test]
fn dependent_starts_only_after_its_dependency_is_ready() {
    let b = Restarter::builder("readiness");
    let script = b.script(
        "a.sh",
        &format!(
            "#!/bin/sh\nsleep 0.5\n{} READY=1 STATUS=up\nexec sleep 7102\n",
            notify_helper()
        ),
    );
    let r = b
        .service(
            "a",
            &format!("exec = [\"{}\"]\nnotify = \"ready\"\n", script.display()),
        )
        .service("b", "exec = [\"/bin/sleep\", \"7103\"]\nafter = [\"a\"]\n")
        .start();
    let a_started = r.log.wait_for("service a started", LONG);
    assert_eq!(r.wait_state("a", "starting", LONG)["ready"], false);
    assert_eq!(r.service_status("b").unwrap()["state"], "waiting");
    let ready = r.log.wait_for("service a ready (READY=1", LONG);
    let b_started = r.log.wait_for("service b started", LONG);
    assert!(b_started.at >= ready.at);
    assert!(b_started.at.duration_since(a_started.at) >= Duration::from_millis(450));
    let a = r.wait_state("a", "ready", LONG);
    assert_eq!(a["status_text"], "up");
    r.wait_state("b", "running", LONG);
}

#[test]
fn missed_watchdog_restarts_the_service_and_pings_keep_it_alive() {
    let b = Restarter::builder("watchdog");
    let hang = b.script(
        "hang.sh",
        &format!(
            "#!/bin/sh\n{} --repeat 3 --interval-ms 100 READY=1 WATCHDOG=1\nexec sleep 7104\n",
            notify_helper()
        ),
    );
    let ping = b.script(
        "ping.sh",
        &format!(
            "#!/bin/sh\n{} READY=1\nwhile :; do {} WATCHDOG=1; sleep 0.1; done\n",
            notify_helper(),
            notify_helper()
        ),
    );
    let wd = "notify = \"watchdog\"\nstop_timeout = \"300ms\"\nrestart_delay = \"100ms\"\n";
    let r = b
        .service(
            "hang",
            &format!(
                "exec = [\"{}\"]\nwatchdog_timeout = \"400ms\"\n{wd}",
                hang.display()
            ),
        )
        .service(
            "ping",
            &format!(
                "exec = [\"{}\"]\nwatchdog_timeout = \"1s\"\n{wd}",
                ping.display()
            ),
        )
        .start();
    let first = r.wait_pid("hang", LONG);
    let ping_pid = r.wait_pid("ping", LONG);
    r.log.wait_for("service hang missed its watchdog", LONG);
    let second = r.wait_pid_other_than("hang", first, LONG);
    assert_ne!(first, second);
    let exit = r.log.wait_for("service hang exited: signal ABRT", LONG);
    assert!(exit.text.contains("(watchdog)"), "{}", exit.text);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        r.state_pid("ping"),
        Some(ping_pid),
        "a pinging service is left alone"
    );
    assert!(r.log.matching("service ping missed").is_empty());
    let st = r.service_status("ping").unwrap();
    assert_eq!(st["state"], "ready");
    assert!(st["watchdog_deadline_ms"].as_u64().unwrap() <= 1000);
}

#[test]
fn a_stop_kills_the_whole_group_even_when_sigterm_is_ignored() {
    let b = Restarter::builder("stop-group");
    let script = b.script(
        "a.sh",
        "#!/bin/sh\ntrap '' TERM\nsleep 7105 &\nsleep 7106 &\nwait\n",
    );
    let r = b
        .service(
            "a",
            &format!(
                "exec = [\"{}\"]\nstop_timeout = \"400ms\"\n",
                script.display()
            ),
        )
        .start();
    let pid = r.wait_pid("a", LONG);
    let deadline = Instant::now() + LONG;
    while r.processes("sleep 710").len() < 2 {
        assert!(Instant::now() < deadline, "children did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in r.processes("sleep 710") {
        assert_eq!(pgid_of(p), Some(pid), "children are in the service's group");
    }
    let t0 = Instant::now();
    let out = r.ctl(&["stop", "a"]);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        alive(pid),
        "SIGTERM is ignored: still there before stop_timeout"
    );
    while !r.processes("sleep 710").is_empty() || alive(pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "group not gone: {:?}",
            r.processes("sleep 710")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(t0.elapsed() >= Duration::from_millis(380));
    r.log.wait_for(
        "service a did not stop within 400ms: SIGKILL to its process group",
        LONG,
    );
    let st = r.wait_state("a", "stopped", LONG);
    assert_eq!(st["last_exit"], "signal KILL");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        r.log.matching("service a started").len(),
        1,
        "a stopped service stays stopped"
    );
}

#[test]
fn a_bad_file_at_start_marks_only_that_service() {
    let r = Restarter::start(
        "bad-at-start",
        &[
            ("good", "exec = [\"/bin/sleep\", \"7107\"]\n"),
            ("bad", "exec = [\"/bin/true\"]\nrestart_delay = 5\n"),
        ],
    );
    r.wait_state("good", "running", LONG);
    let bad = r.wait_state("bad", "config-error", LONG);
    let err = bad["error"].as_str().unwrap();
    assert!(err.contains("bad.toml:2:17"), "{err}");
    assert!(err.contains("restart_delay"), "{err}");
    r.log.wait_for("service bad: configuration error:", LONG);
    assert!(r.status()["config_errors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e.as_str().unwrap().contains("bad.toml:2")));
    let out = r.ctl(&["start", "bad"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration error"));
}

#[test]
fn a_bad_file_at_reload_changes_nothing() {
    let r = Restarter::start(
        "bad-at-reload",
        &[("a", "exec = [\"/bin/sleep\", \"7108\"]\n")],
    );
    let pid = r.wait_pid("a", LONG);
    // a changes, b is added with an error: nothing may happen.
    r.write_service("a", "exec = [\"/bin/sleep\", \"7109\"]\n");
    r.write_service(
        "b",
        "exec = [\"/bin/sleep\", \"7110\"]\n\nnotify = \"sometimes\"\n",
    );
    let out = r.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("b.toml:3:10"), "{err}");
    r.log.wait_for("reload refused, nothing changed", LONG);
    // The same through SIGHUP.
    r.signal(libc::SIGHUP);
    r.log
        .wait_for_count("reload refused, nothing changed", 2, LONG);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.state_pid("a"), Some(pid));
    assert!(alive(pid));
    assert!(r.service_status("b").is_none());
    // Fixed: the reload goes through; a restarts with its new file.
    r.write_service("b", "exec = [\"/bin/sleep\", \"7110\"]\n");
    let out = r.ctl(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let new = r.wait_pid_other_than("a", pid, LONG);
    assert!(r.processes("sleep 7109").contains(&new));
    r.wait_state("b", "running", LONG);
    r.log
        .wait_for("reload: 1 added, 1 changed, 0 removed", LONG);
}

#[test]
fn a_restarter_killed_and_started_again_leaves_no_duplicate() {
    let mut r = Restarter::start(
        "no-duplicate",
        &[("a", "exec = [\"/bin/sh\", \"-c\", \"trap 'sleep 0.2; exit 0' TERM; sleep 7111 & wait\"]\nstop_timeout = \"2s\"\n")],
    );
    let old = r.wait_pid("a", LONG);
    let deadline = Instant::now() + LONG;
    while r.processes("sleep 7111").is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    r.kill9();
    assert!(alive(old), "the service outlives a killed restarter");
    r.start_again();
    // Until the new process exists, never more than one instance.
    let deadline = Instant::now() + LONG;
    let mut max_mains = 0;
    let new = loop {
        let mains: Vec<i32> = r
            .processes("trap")
            .into_iter()
            .filter(|&p| pgid_of(p) == Some(p))
            .collect();
        max_mains = max_mains.max(mains.len());
        if let Some(p) = r.state_pid("a").filter(|&p| p != old && alive(p)) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no new instance; log:\n{}",
            r.log.texts().join("\n")
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(max_mains <= 1, "two instances at once");
    assert!(!alive(old));
    r.log
        .wait_for("still runs: stopping its process group", LONG);
    std::thread::sleep(Duration::from_millis(300));
    let mains: Vec<i32> = r
        .processes("trap")
        .into_iter()
        .filter(|&p| pgid_of(p) == Some(p))
        .collect();
    assert_eq!(mains, vec![new]);
    // The shell's own command line contains "sleep 7111" too.
    let sleeps: Vec<i32> = r
        .processes("sleep 7111")
        .into_iter()
        .filter(|&p| cmdline(p).starts_with("sleep"))
        .collect();
    assert_eq!(sleeps.len(), 1, "{sleeps:?}");
}

#[test]
fn a_missing_binary_is_reported_with_its_errno_and_retried() {
    let b = Restarter::builder("missing-binary");
    let path = b.dir().join("later.sh");
    let r = b
        .service(
            "a",
            &format!(
                "exec = [\"{}\"]\nrestart_delay = \"200ms\"\n",
                path.display()
            ),
        )
        .start();
    let lines = r.log.wait_for_count("service a: cannot start", 3, LONG);
    assert!(
        lines[0]
            .text
            .contains("later.sh: No such file or directory [ENOENT]"),
        "{}",
        lines[0].text
    );
    let gaps = gaps_ms(&r, "service a: cannot start");
    assert!(gaps[0] >= 150, "retried per restart_delay: {gaps:?}");
    let st = r.service_status("a").unwrap();
    assert!(st["error"].as_str().unwrap().contains("ENOENT"), "{st}");
    // The binary appears: the next retry starts it.
    tether_integration::svc::write_script(r.dir(), "later.sh.tmp", "#!/bin/sh\nexec sleep 7112\n");
    std::fs::rename(r.dir().join("later.sh.tmp"), &path).unwrap();
    r.wait_state("a", "running", LONG);
    assert_eq!(
        r.service_status("a").unwrap()["error"],
        serde_json::Value::Null
    );
}

#[test]
fn sigterm_stops_services_in_reverse_order_and_exits_zero() {
    let mut r = Restarter::start(
        "shutdown",
        &[
            ("a", "exec = [\"/bin/sleep\", \"7113\"]\n"),
            ("b", "exec = [\"/bin/sh\", \"-c\", \"trap 'sleep 0.3; exit 0' TERM; sleep 7114 & wait\"]\nafter = [\"a\"]\n"),
        ],
    );
    r.wait_state("a", "running", LONG);
    r.wait_state("b", "running", LONG);
    let status = r.stop(LONG);
    assert_eq!(status.code(), Some(0), "{}", r.stderr());
    let stop_b = r.log.wait_for("stopping service b", LONG);
    let stop_a = r.log.wait_for("stopping service a", LONG);
    let b_gone = r.log.wait_for("service b stopped", LONG);
    assert!(
        stop_a.at >= b_gone.at && b_gone.at >= stop_b.at,
        "a stops after b is gone"
    );
    r.log.wait_for("every service stopped: exiting", LONG);
    assert!(r.processes("sleep 711").is_empty());
    assert!(r.state_entries().is_empty());
}

/// A writable cgroup2 directory for this test, or a panic saying why none.
fn cgroup_root(label: &str) -> std::path::PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let mount = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_string())
        })
        .next()
        .expect("this test needs a cgroup2 mount (none in /proc/self/mounts)");
    let dir =
        std::path::Path::new(&mount).join(format!("tether-test-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
        panic!(
            "this test needs a writable cgroup2 mount: {}: {e}",
            dir.display()
        )
    });
    dir
}

fn remove_cgroup_tree(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[test]
fn cgroup_kill_reaches_a_process_that_left_the_group() {
    let root = cgroup_root("escape");
    let r = Restarter::builder("cgroup")
        .arg("--cgroup-root")
        .arg(root.to_str().unwrap())
        .service(
            "a",
            "exec = [\"/bin/sh\", \"-c\", \"setsid sh -c 'trap \\\"\\\" TERM; exec sleep 7115' & exec sleep 7116\"]\nstop_timeout = \"300ms\"\n",
        )
        .start();
    let pid = r.wait_pid("a", LONG);
    let deadline = Instant::now() + LONG;
    let escaped = loop {
        // Not the service's own shell, whose command line names the child's
        // until it execs `sleep 7116`.
        if let Some(&p) = r.processes("sleep 7115").iter().find(|&&p| p != pid) {
            if pgid_of(p) == Some(p) {
                break p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the escaping child did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_ne!(
        pgid_of(escaped),
        Some(pid),
        "it left the service's process group"
    );
    let cg = std::fs::read_to_string(format!("/proc/{escaped}/cgroup")).unwrap();
    assert!(
        cg.contains("/a\n") || cg.trim_end().ends_with("/a"),
        "in the service's cgroup: {cg}"
    );
    let out = r.ctl(&["stop", "a"]);
    assert!(out.status.success(), "{out:?}");
    let t0 = Instant::now();
    while alive(escaped) || alive(pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "escaped process survived the stop"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(r);
    remove_cgroup_tree(&root);
}

#[test]
fn a_bad_tether_toml_runs_on_defaults_and_says_so() {
    let r = Restarter::builder("bad-tether-toml")
        .raw_config("[timing]\nbeat_interval = 5\n")
        .service("a", "exec = [\"/bin/sleep\", \"7117\"]\n")
        .start();
    let line = r.log.wait_for("running on built-in defaults", LONG);
    assert!(line.text.contains("tether.toml:2:17"), "{}", line.text);
    r.wait_state("a", "running", LONG);
    let errors = r.status()["config_errors"].clone();
    assert!(errors.to_string().contains("beat_interval"), "{errors}");
}

#[test]
fn liveness_line_summarises_the_services() {
    let r = Restarter::builder("liveness")
        .timing("beat_interval = \"100ms\"\nliveness_interval = \"300ms\"")
        .service("a", "exec = [\"/bin/sleep\", \"7118\"]\n")
        .service("b", "exec = [\"/bin/sh\", \"-c\", \"exit 1\"]\nrestart_delay = \"100ms\"\nmax_restarts = 1\nwindow = \"30s\"\non_exhausted = \"stop\"\n")
        .start();
    r.wait_state("b", "failed", LONG);
    let line = r.log.wait_until(LONG, |t| {
        t.contains("liveness: restarter") && t.contains("1 failed")
    });
    let line =
        line.unwrap_or_else(|| panic!("no liveness line; log:\n{}", r.log.texts().join("\n")));
    assert!(
        line.text
            .contains("liveness: restarter degraded 1/1 up, 1 failed, 0 config errors"),
        "{}",
        line.text
    );
}

#[test]
fn stopping_a_required_service_stops_its_dependents_first() {
    let r = Restarter::start(
        "requires",
        &[
            ("a", "exec = [\"/bin/sleep\", \"7119\"]\n"),
            (
                "b",
                "exec = [\"/bin/sleep\", \"7120\"]\nrequires = [\"a\"]\n",
            ),
        ],
    );
    let pa = r.wait_pid("a", LONG);
    r.wait_state("b", "running", LONG);
    let out = r.ctl(&["stop", "a"]);
    assert!(out.status.success(), "{out:?}");
    r.wait_state("a", "stopped", LONG);
    r.wait_state("b", "waiting", LONG);
    let b_stopped = r.log.wait_for("service b stopped", LONG);
    let a_stopping = r.log.wait_for("stopping service a", LONG);
    assert!(
        a_stopping.at >= b_stopped.at,
        "b goes down before a is stopped"
    );
    assert!(!alive(pa));
    // Starting a brings b back once a is up.
    let out = r.ctl(&["start", "a"]);
    assert!(out.status.success(), "{out:?}");
    r.wait_state("a", "running", LONG);
    r.wait_state("b", "running", LONG);
}
