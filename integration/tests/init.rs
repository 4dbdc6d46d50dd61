//! tether-init as PID 1 of a fresh PID + mount namespace, with FAKE layer
//! children (shell scripts named `tether-watchdogd` and `tether-restarter`,
//! see `tether_integration::chain::FakeLayer`), so init's own duties are
//! tested alone: descriptors and environment of the children, beats,
//! restarts, hang kills, the restart budget, shutdown requests and signals,
//! reaping, a bad configuration.
//!
//! Timings: beats 100 ms, hang_timeout 1 s, restart_delay 200 ms,
//! startup_grace 500 ms — loose enough that a shell loop on a loaded 2-core
//! machine is not mistaken for hung.

use nix::sys::signal::Signal;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use tether_integration::chain::{Chain, ChainOptions, End, FakeLayer, InitSettings};
use tether_integration::hw::Timings;

const BEAT: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(15);

fn timings() -> Timings {
    Timings::chain()
}

fn options(wd: FakeLayer, rst: FakeLayer) -> ChainOptions {
    ChainOptions {
        timings: timings(),
        fake: Some((wd, rst)),
        hardware: false,
        ..ChainOptions::default()
    }
}

fn beating() -> ChainOptions {
    options(FakeLayer::beater(BEAT), FakeLayer::beater(BEAT))
}

/// Starts a chain and waits for both fake layers.
fn up(label: &str, opts: ChainOptions) -> (Chain, i32, i32) {
    let chain = Chain::start(label, opts);
    let wd = chain.wait_layer("tether-watchdogd", None, LONG);
    let rst = chain.wait_layer("tether-restarter", None, LONG);
    let (Some(wd), Some(rst)) = (wd, rst) else {
        panic!("layers did not come up:\n{}", chain.dump())
    };
    // Their traps are in place once they said so.
    for (name, pid) in [("watchdogd", wd), ("restarter", rst)] {
        let line = format!("{}: fake started, pid {}", name, ns_pid(pid));
        assert!(
            chain.wait_log(&[&line], LONG).is_some(),
            "{} not started:\n{}",
            name,
            chain.dump()
        );
    }
    (chain, wd, rst)
}

fn ns_pid(host_pid: i32) -> i32 {
    // /proc/PID/status NSpid: host pid, then the pid in the namespace.
    let s = std::fs::read_to_string(format!("/proc/{}/status", host_pid)).expect("status");
    let line = s.lines().find(|l| l.starts_with("NSpid:")).expect("NSpid");
    line.split_whitespace()
        .last()
        .and_then(|p| p.parse().ok())
        .expect("ns pid")
}

fn env_of(pid: i32, key: &str) -> Option<String> {
    tether_integration::chain::environ(pid)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[test]
fn layers_get_exactly_their_descriptors_and_environment() {
    // A descriptor the test leaks into unshare (no close-on-exec): init must
    // keep it from its children.
    let (leak_r, _leak_w) = nix::unistd::pipe().expect("pipe");
    let leak_ino = nix::sys::stat::fstat(leak_r.as_fd()).expect("fstat").st_ino;
    let (chain, wd, rst) = up("init-fds", beating());
    drop(leak_r);

    let fds_of = |name: &str, pid: i32| {
        let ns = ns_pid(pid);
        tether_integration::chain::wait_until(LONG, || {
            let v = chain.fake_fds(name, ns);
            (!v.is_empty()).then_some(v)
        })
        .unwrap_or_else(|| panic!("{} wrote no fd listing", name))
    };
    let wd_fds = fds_of("watchdogd", wd);
    let rst_fds = fds_of("restarter", rst);
    let numbers =
        |v: &Vec<tether_integration::chain::FdEntry>| v.iter().map(|e| e.fd).collect::<Vec<_>>();
    assert_eq!(
        numbers(&wd_fds),
        vec![0, 1, 2, 3, 4, 5],
        "watchdogd: {:?}",
        wd_fds
    );
    assert_eq!(
        numbers(&rst_fds),
        vec![0, 1, 2, 3, 4, 5, 6, 7],
        "restarter: {:?}",
        rst_fds
    );
    let get = |v: &Vec<tether_integration::chain::FdEntry>, fd: i32| {
        v.iter().find(|e| e.fd == fd).cloned().expect("fd")
    };
    // watchdogd reads 3 (init) and 4 (restarter), writes 5 (to init).
    for fd in [3, 4] {
        let e = get(&wd_fds, fd);
        assert!(
            e.target.starts_with("pipe:") && e.readable && !e.writable,
            "watchdogd fd {}: {:?}",
            fd,
            e
        );
    }
    let e = get(&wd_fds, 5);
    assert!(
        e.target.starts_with("pipe:") && e.writable && !e.readable,
        "watchdogd fd 5: {:?}",
        e
    );
    // The restarter writes 3 (init) and 4 (watchdog); its 4 is watchdogd's 4.
    for fd in [3, 4] {
        let e = get(&rst_fds, fd);
        assert!(
            e.target.starts_with("pipe:") && e.writable && !e.readable,
            "restarter fd {}: {:?}",
            fd,
            e
        );
    }
    assert_eq!(
        get(&rst_fds, 4).target,
        get(&wd_fds, 4).target,
        "restarter→watchdog is one pipe"
    );
    // The fd store (5, 6: the two ends of one socket pair) and the exit
    // relay's read end (7).
    for fd in [5, 6] {
        let e = get(&rst_fds, fd);
        assert!(
            e.target.starts_with("socket:"),
            "restarter fd {}: {:?}",
            fd,
            e
        );
    }
    assert_ne!(get(&rst_fds, 5).target, get(&rst_fds, 6).target);
    let e = get(&rst_fds, 7);
    assert!(
        e.target.starts_with("pipe:") && e.readable && !e.writable,
        "restarter fd 7: {:?}",
        e
    );
    let pipes = [
        get(&wd_fds, 3),
        get(&wd_fds, 4),
        get(&wd_fds, 5),
        get(&rst_fds, 3),
        get(&rst_fds, 7),
    ];
    for (i, a) in pipes.iter().enumerate() {
        for b in pipes.iter().skip(i + 1) {
            assert_ne!(a.target, b.target, "distinct pipes expected");
        }
    }
    let leak = format!("pipe:[{}]", leak_ino);
    assert!(
        !wd_fds
            .iter()
            .chain(rst_fds.iter())
            .any(|e| e.target == leak),
        "the descriptor leaked into unshare reached a layer"
    );

    assert_eq!(
        env_of(wd, "TETHER_HEARTBEATS").as_deref(),
        Some("init=3,restarter=4")
    );
    assert_eq!(env_of(wd, "TETHER_FDS").as_deref(), Some("init=5"));
    assert_eq!(
        env_of(rst, "TETHER_FDS").as_deref(),
        Some("init=3,watchdog=4,store_send=5,store_recv=6,relay=7")
    );
    assert_eq!(env_of(rst, "TETHER_HEARTBEATS"), None);
    // init's running timings for watchdogd's reload check (issue 11 item 7).
    assert_eq!(
        env_of(wd, "TETHER_CHAIN_TIMING").as_deref(),
        Some("hang_timeout_ms=1000,restart_delay_ms=200,startup_grace_ms=500,beat_interval_ms=100")
    );
    assert_eq!(env_of(rst, "TETHER_CHAIN_TIMING"), None);
    let config = chain.config_path.display().to_string();
    for pid in [wd, rst] {
        let argv = tether_integration::chain::cmdline(pid);
        assert_eq!(
            &argv[argv.len() - 2..],
            &["--config".to_string(), config.clone()],
            "{:?}",
            argv
        );
    }
    assert!(
        chain
            .wait_log(&["mounts skipped", "PID namespace"], LONG)
            .is_some(),
        "{}",
        chain.dump()
    );
}

#[test]
fn init_beats_to_watchdogd_every_beat_interval() {
    let (chain, wd, _) = up("init-beats", beating());
    // Open the init→watchdog pipe through watchdogd's fd 3 (the fake never
    // reads it) and count init's beats.
    let path = format!("/proc/{}/fd/3", wd);
    let fd = nix::fcntl::open(
        path.as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .expect("open the init→watchdog pipe");
    let drain = || {
        let mut buf = [0u8; 4096];
        let mut n = 0;
        while let Ok(k) = nix::unistd::read(&fd, &mut buf) {
            if k == 0 {
                break;
            }
            assert!(buf[..k].iter().all(|&b| b == b'.'), "init sends only `.`");
            n += k;
        }
        n
    };
    drain();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let n = drain();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "FIGURE init beats: {} in {:.2} s (beat_interval 100 ms)",
        n, secs
    );
    assert!(
        (10..=30).contains(&n),
        "expected about 20 beats in 2 s, got {}\n{}",
        n,
        chain.dump()
    );
}

#[test]
fn killed_restarter_is_restarted_at_once_after_running_long_enough() {
    let (chain, _wd, rst) = up("init-kill9", beating());
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    assert!(tether_integration::chain::signal(rst, Signal::SIGKILL));
    let new = chain
        .wait_layer("tether-restarter", Some(rst), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let took = t0.elapsed();
    chain.figure(
        "init: kill -9 restarter (fake) -> new restarter",
        took,
        "restarter crash",
    );
    assert_ne!(new, rst);
    assert!(took < Duration::from_secs(3), "restart took {:?}", took);
    assert!(chain
        .wait_log(&["restarter", "killed by SIGKILL"], LONG)
        .is_some());
    assert!(chain.wait_log(&["restarted restarter"], LONG).is_some());
    assert_eq!(
        chain.find("tether-restarter").len(),
        1,
        "exactly one restarter: {:?}",
        chain.processes()
    );
    assert_eq!(chain.layer("tether-restarter"), Some(new));
}

#[test]
fn stopped_restarter_is_killed_after_hang_timeout_and_restarted() {
    let (chain, wd, rst) = up("init-hang", beating());
    std::thread::sleep(Duration::from_millis(800));
    let t0 = Instant::now();
    assert!(tether_integration::chain::signal(rst, Signal::SIGSTOP));
    let new = chain
        .wait_layer("tether-restarter", Some(rst), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let took = t0.elapsed();
    chain.figure(
        "init: SIGSTOP restarter (fake) -> new restarter",
        took,
        "restarter hang",
    );
    let hang = timings().hang_timeout;
    assert!(
        took >= hang - BEAT * 2,
        "killed too early: {:?} < hang_timeout {:?}",
        took,
        hang
    );
    assert!(took < hang + Duration::from_secs(3), "took {:?}", took);
    assert!(
        chain
            .wait_log(&["restarter", "silent for", "SIGKILL"], LONG)
            .is_some(),
        "{}",
        chain.dump()
    );
    assert!(
        tether_integration::chain::proc_stat(rst).is_none_or(|(s, _)| s == 'Z' || s == 'X'),
        "the hung one is gone"
    );
    assert_ne!(new, rst);
    // watchdogd was left alone.
    assert_eq!(chain.layer("tether-watchdogd"), Some(wd));
}

#[test]
fn watchdogd_crash_and_hang_are_each_repaired() {
    let (chain, wd, rst) = up("init-wd", beating());
    std::thread::sleep(Duration::from_millis(400));
    assert!(tether_integration::chain::signal(wd, Signal::SIGKILL));
    let wd2 = chain
        .wait_layer("tether-watchdogd", Some(wd), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    std::thread::sleep(Duration::from_millis(800));
    let t0 = Instant::now();
    assert!(tether_integration::chain::signal(wd2, Signal::SIGSTOP));
    let wd3 = chain
        .wait_layer("tether-watchdogd", Some(wd2), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let took = t0.elapsed();
    chain.figure(
        "init: SIGSTOP watchdogd (fake) -> new watchdogd",
        took,
        "watchdogd hang",
    );
    assert!(took >= timings().hang_timeout - BEAT * 2, "{:?}", took);
    assert_ne!(wd3, wd);
    assert_eq!(
        chain.layer("tether-restarter"),
        Some(rst),
        "the restarter was left alone"
    );
}

#[test]
fn crash_loop_exhausts_budget_and_reboots() {
    let mut opts = options(FakeLayer::Crasher, FakeLayer::beater(BEAT));
    opts.init = InitSettings {
        max_restarts: 3,
        window: Duration::from_secs(30),
        ..InitSettings::default()
    };
    let mut chain = Chain::start("init-budget", opts);
    let status = chain
        .wait_end(LONG)
        .unwrap_or_else(|| panic!("no reboot:\n{}", chain.dump()));
    let took = chain.started.elapsed();
    assert_eq!(End::of(status), End::Reboot, "{}", chain.dump());
    let starts = chain.fake_starts("watchdogd");
    assert_eq!(
        starts.len(),
        4,
        "first start + max_restarts restarts: {:?}\n{}",
        starts,
        chain.dump()
    );
    // At most one start per restart_delay (margin for the clock reads).
    let delay = timings().restart_delay;
    for w in starts.windows(2) {
        let gap = w[1].1.saturating_sub(w[0].1);
        assert!(
            gap >= delay / 2,
            "starts {:?} apart, restart_delay {:?}",
            gap,
            delay
        );
    }
    assert_eq!(chain.reset_field("cause").as_deref(), Some("reboot"));
    assert_eq!(chain.reset_field("by").as_deref(), Some("init"));
    assert_eq!(chain.reset_field("layer").as_deref(), Some("watchdogd"));
    let detail = chain.reset_field("detail").unwrap_or_default();
    assert!(
        detail.contains("exhausted its restart budget"),
        "{}",
        detail
    );
    assert!(!chain.logs(&["exhausted its restart budget"]).is_empty());
    eprintln!(
        "FIGURE init: crash loop of 4 starts -> reboot in {} ms",
        took.as_millis()
    );
}

#[test]
fn restarter_request_reboots_with_its_reason() {
    let (mut chain, _, _) = up("init-req-r", beating());
    let reason = "service sensor exhausted its restart budget";
    std::fs::write(
        chain.run_dir.join("shutdown-request"),
        format!("{}\n", reason),
    )
    .expect("write reason");
    let t0 = Instant::now();
    chain.fake_cmd("restarter", "send R");
    let status = chain
        .wait_end(LONG)
        .unwrap_or_else(|| panic!("no reboot:\n{}", chain.dump()));
    eprintln!(
        "FIGURE init: restarter R -> namespace ended in {} ms",
        t0.elapsed().as_millis()
    );
    assert_eq!(End::of(status), End::Reboot);
    assert_eq!(chain.reset_field("cause").as_deref(), Some("reboot"));
    assert_eq!(chain.reset_field("by").as_deref(), Some("restarter"));
    assert_eq!(chain.reset_field("detail").as_deref(), Some(reason));
    assert!(
        !chain.run_dir.join("shutdown-request").exists(),
        "init removes the request"
    );
    // The restarter was asked first.
    assert!(
        !chain.logs(&["restarter: got SIGTERM"]).is_empty(),
        "{}",
        chain.dump()
    );
}

#[test]
fn restarter_poweroff_request_powers_off() {
    let (mut chain, _, _) = up("init-req-p", beating());
    chain.fake_cmd("restarter", "send P");
    let status = chain
        .wait_end(LONG)
        .unwrap_or_else(|| panic!("no poweroff:\n{}", chain.dump()));
    assert_eq!(End::of(status), End::PoweroffOrHalt);
    assert_eq!(chain.reset_field("cause").as_deref(), Some("poweroff"));
    let detail = chain.reset_field("detail").unwrap_or_default();
    assert!(detail.starts_with("no reason given"), "{}", detail);
}

#[test]
fn signals_choose_reboot_poweroff_or_halt() {
    let cases = [
        (Signal::SIGTERM, End::Reboot, "reboot"),
        (Signal::SIGINT, End::Reboot, "reboot"),
        (Signal::SIGUSR1, End::PoweroffOrHalt, "poweroff"),
        (Signal::SIGUSR2, End::PoweroffOrHalt, "halt"),
    ];
    let threads: Vec<_> = cases
        .into_iter()
        .map(|(sig, end, cause)| {
            std::thread::spawn(move || {
                let (mut chain, _, _) = up(&format!("init-sig-{}", sig.as_str()), beating());
                assert!(tether_integration::chain::signal(chain.init_pid(), sig));
                let status = chain
                    .wait_end(LONG)
                    .unwrap_or_else(|| panic!("{}: no end:\n{}", sig, chain.dump()));
                assert_eq!(End::of(status), end, "{}", sig);
                assert_eq!(
                    chain.reset_field("cause").as_deref(),
                    Some(cause),
                    "{}",
                    sig
                );
                assert_eq!(chain.reset_field("by").as_deref(), Some("signal"));
                let detail = chain.reset_field("detail").unwrap_or_default();
                assert!(detail.starts_with(sig.as_str()), "{}", detail);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("signal case");
    }
}

#[test]
fn signal_sent_inside_the_namespace_reaches_init() {
    // PID 1 of a namespace only gets signals it handles: init's signalfd
    // (signals blocked, never SIG_DFL-ignored) must still see them.
    let (mut chain, _, _) = up("init-sig-inside", beating());
    chain.fake_cmd("restarter", "kill1 TERM");
    let status = chain
        .wait_end(LONG)
        .unwrap_or_else(|| panic!("no reboot:\n{}", chain.dump()));
    assert_eq!(End::of(status), End::Reboot);
    let detail = chain.reset_field("detail").unwrap_or_default();
    assert!(
        detail.starts_with("SIGTERM from pid "),
        "the sender inside is named: {}",
        detail
    );
}

#[test]
fn shutdown_waits_for_the_restarter_then_terminates_the_rest() {
    let rst = FakeLayer::Beater {
        interval: BEAT,
        term_delay: Some(Duration::from_millis(600)),
        ignore_term: false,
    };
    let (mut chain, _, _) = up("init-stop-order", options(FakeLayer::beater(BEAT), rst));
    let t0 = Instant::now();
    assert!(tether_integration::chain::signal(
        chain.init_pid(),
        Signal::SIGTERM
    ));
    let status = chain
        .wait_end(LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let took = t0.elapsed();
    eprintln!(
        "FIGURE init: orderly reboot with a restarter taking 600 ms to stop: {} ms",
        took.as_millis()
    );
    assert_eq!(End::of(status), End::Reboot);
    let at = |needle: &str| {
        chain
            .logs(&[needle])
            .first()
            .map(|l| l.at)
            .unwrap_or_else(|| panic!("no `{}`:\n{}", needle, chain.dump()))
    };
    let asked = at("asking the restarter to stop");
    let stopped = at("restarter stopped after");
    let terminating = at("sending SIGTERM to all processes");
    assert!(asked <= stopped && stopped <= terminating);
    assert!(
        stopped.duration_since(asked) >= Duration::from_millis(400),
        "init waited for the restarter"
    );
    assert!(took >= Duration::from_millis(500));
}

#[test]
fn restarter_ignoring_sigterm_is_killed_after_stop_timeout() {
    let rst = FakeLayer::Beater {
        interval: BEAT,
        term_delay: None,
        ignore_term: true,
    };
    let mut opts = options(FakeLayer::beater(BEAT), rst);
    opts.init.stop_timeout = Duration::from_millis(1500);
    let (mut chain, _, _) = up("init-stop-timeout", opts);
    let t0 = Instant::now();
    assert!(tether_integration::chain::signal(
        chain.init_pid(),
        Signal::SIGUSR2
    ));
    let status = chain
        .wait_end(LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let took = t0.elapsed();
    assert_eq!(End::of(status), End::PoweroffOrHalt);
    assert!(
        took >= Duration::from_millis(1400),
        "stop_timeout respected: {:?}",
        took
    );
    assert!(took < Duration::from_secs(6), "{:?}", took);
    assert!(
        !chain.logs(&["still running after stop_timeout"]).is_empty(),
        "{}",
        chain.dump()
    );
    assert!(!chain.logs(&["got SIGTERM, ignoring it"]).is_empty());
    assert_eq!(chain.reset_field("cause").as_deref(), Some("halt"));
}

#[test]
fn orphans_are_reaped() {
    let (chain, _, rst) = up("init-orphans", beating());
    let init = chain.init_pid();
    let cmd = chain.fake_dir.join("restarter.cmd");
    for _ in 0..3 {
        chain.fake_cmd("restarter", "orphan");
        // The fake removes the command file when it has run it.
        let done = tether_integration::chain::wait_until(LONG, || (!cmd.exists()).then_some(()));
        assert!(done.is_some(), "the fake did not take the command");
    }
    // The orphans (`sleep 1` whose parent subshell exited) now belong to init.
    let adopted = tether_integration::chain::wait_until(LONG, || {
        let n = chain
            .processes()
            .into_iter()
            .filter(|p| {
                p.ppid == init
                    && p.cmdline.first().is_some_and(|a| a == "sleep")
                    && p.cmdline.get(1).is_some_and(|a| a == "1")
            })
            .count();
        (n >= 1).then_some(n)
    });
    assert!(
        adopted.is_some(),
        "no orphan adopted by init: {:?}",
        chain.processes()
    );
    // Killing the layer leaves its `sleep 0.1` child orphaned too. Wait for
    // it (and the `sleep 1` orphans) to end; none may stay a zombie.
    assert!(tether_integration::chain::signal(rst, Signal::SIGKILL));
    let gone = tether_integration::chain::wait_until(LONG, || {
        let left = chain
            .processes()
            .into_iter()
            .any(|p| p.ppid == init && p.cmdline.first().is_some_and(|a| a == "sleep"));
        (!left).then_some(())
    });
    assert!(gone.is_some(), "{:?}", chain.processes());
    // A zombie may exist for the instant between its death and init's reap.
    let reaped =
        tether_integration::chain::wait_until(LONG, || chain.zombies().is_empty().then_some(()));
    assert!(reaped.is_some(), "zombies left: {:?}", chain.zombies());
}

#[test]
fn bad_config_means_defaults_and_a_loud_log_line() {
    let mut opts = beating();
    opts.config_text = Some("[timing\nbeat_interval = 100ms\n".into());
    opts.paths_as_flags = true;
    let (chain, wd, rst) = up("init-badcfg", opts);
    let line = chain
        .wait_log(&["BAD CONFIGURATION", "defaults"], LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    assert!(
        line.text.contains("tether.toml"),
        "the log names the file: {}",
        line.text
    );
    // The children get the settings init runs on: defaults + the overrides.
    let effective = chain.run_dir.join("init-effective.toml");
    for pid in [wd, rst] {
        let argv = tether_integration::chain::cmdline(pid);
        assert_eq!(
            argv.last().map(String::as_str),
            Some(effective.to_str().unwrap()),
            "{:?}",
            argv
        );
    }
    let text = std::fs::read_to_string(&effective).expect("effective config");
    let c = tether_common::config::Config::parse(&text, &effective).expect("it parses");
    assert_eq!(c.paths.state, chain.state_dir);
    assert_eq!(c.paths.run, chain.run_dir);
    assert_eq!(c.paths.services, chain.services_dir);
    assert_eq!(
        c.watchdog.device.as_deref(),
        Some(chain.device_path.as_path())
    );
    assert_eq!(c.log.syslog_socket, chain.log.socket_path());
    assert!(!c.log.kmsg);
    assert_eq!(
        c.timing,
        tether_common::config::Config::default().timing,
        "timings are the defaults"
    );
}

#[test]
fn missing_layer_binary_is_retried_with_backoff() {
    let (chain, _, rst) = up("init-missing", beating());
    // Take the restarter away and kill it: the restart fails until it is back.
    let bin = chain.bin_dir.join("tether-restarter");
    let saved = chain.dir.join("restarter.saved");
    std::fs::rename(&bin, &saved).expect("hide the restarter");
    assert!(tether_integration::chain::signal(rst, Signal::SIGKILL));
    assert!(
        chain
            .wait_log(&["starting restarter", "failed"], LONG)
            .is_some(),
        "{}",
        chain.dump()
    );
    assert!(
        chain
            .wait_log(&["could not start restarter", "retrying in"], LONG)
            .is_some(),
        "{}",
        chain.dump()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let failures = chain.syslog(&["could not start restarter"]).len();
    assert!(
        (2..=6).contains(&failures),
        "backoff doubles: {} failures in ~1.5 s",
        failures
    );
    std::fs::rename(&saved, &bin).expect("restore the restarter");
    let back = chain.wait_layer("tether-restarter", Some(rst), LONG);
    assert!(
        back.is_some(),
        "restarter back after the binary returned:\n{}",
        chain.dump()
    );
}

#[test]
fn liveness_line_summarises_the_layers() {
    let (chain, _, _) = up("init-liveness", beating());
    let l = chain
        .wait_log(
            &[
                "liveness: init ok, watchdogd up",
                "(restarts 0), restarter up",
            ],
            LONG,
        )
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    assert!(l.text.contains("(restarts 0)"), "{}", l.text);
}

#[test]
fn closed_standard_input_never_receives_a_heartbeat_pipe() {
    // Rust's runtime puts /dev/null on a closed standard descriptor before
    // main; init (PID 1 of a namespace) keeps it, and its pipes go above 2.
    let mut opts = beating();
    opts.close_stdin = true;
    let (chain, wd, _) = up("init-stdin", opts);
    let fds = chain.fake_fds("watchdogd", ns_pid(wd));
    let stdin = fds
        .iter()
        .find(|e| e.fd == 0)
        .unwrap_or_else(|| panic!("no fd 0: {:?}", fds));
    assert!(
        stdin.target == "/dev/null" || stdin.target == "/dev/console",
        "fd 0 of a layer: {:?}",
        stdin
    );
    assert_eq!(
        fds.iter().map(|e| e.fd).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
    for e in fds.iter().filter(|e| e.fd >= 3) {
        assert!(e.target.starts_with("pipe:"), "{:?}", e);
    }
}

/// init built with the test-only panic injection, `TETHER_INIT_PANIC=spec`.
fn panicking(mut opts: ChainOptions, spec: &str) -> ChainOptions {
    opts.init_bin = Some(tether_integration::chain::fault_inject_init());
    opts.env.push(("TETHER_INIT_PANIC".into(), spec.into()));
    opts
}

#[test]
fn panic_right_after_reaping_a_layer_still_restarts_it() {
    // Issue 11 item 5: a panic between waitpid and the core hearing of the
    // exit left the restarter `Killing` a dead pid forever.
    let (chain, _wd, rst) = up("init-panic-reaped", panicking(beating(), "reaped:1"));
    assert!(tether_integration::chain::signal(rst, Signal::SIGKILL));
    assert!(
        chain
            .wait_log(&["PANIC", "injected panic at reaped"], LONG)
            .is_some(),
        "the injected panic did not happen:\n{}",
        chain.dump()
    );
    let new = chain
        .wait_layer("tether-restarter", Some(rst), LONG)
        .unwrap_or_else(|| panic!("restarter not restarted after the panic:\n{}", chain.dump()));
    assert_ne!(new, rst);
    assert!(
        chain.logs(&["still not dead"]).is_empty(),
        "init kept killing the reaped pid:\n{}",
        chain.dump()
    );
    assert_eq!(
        chain.find("tether-restarter").len(),
        1,
        "{:?}",
        chain.processes()
    );
}

/// `Max open files` of a process: (soft, hard).
fn nofile_of(pid: i32) -> Option<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{}/limits", pid)).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut f = line["Max open files".len()..].split_whitespace();
    Some((f.next()?.to_string(), f.next()?.to_string()))
}

#[test]
fn init_raises_the_descriptor_limit_for_itself_and_its_layers() {
    // Issue 12 item 4: the kernel hands PID 1 1024:4096; init started so
    // (through prlimit, which execs it as PID 1) must hand its layers
    // fs.nr_open for both limits.
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .to_string();
    let wrapper_dir = std::env::temp_dir().join(format!("tether-nofile-{}", std::process::id()));
    std::fs::create_dir_all(&wrapper_dir).unwrap();
    let wrapper = wrapper_dir.join("tether-init");
    tether_integration::chain::write_executable(
        &wrapper,
        &format!(
            "#!/bin/sh\nexec prlimit --nofile=1024:4096 {} \"$@\"\n",
            tether_integration::bins::bin("tether-init").display()
        ),
    );
    let mut opts = beating();
    opts.init_bin = Some(wrapper);
    let (chain, wd, rst) = up("init-nofile", opts);
    // Raising a hard limit takes CAP_SYS_RESOURCE, which some sandboxes
    // withhold even from root: there init can only lift the soft limit to
    // the hard one, and says so.
    let cap_sys_resource = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        // Bit 24: CAP_SYS_RESOURCE.
        .is_some_and(|caps| caps & (1 << 24) != 0);
    let want = if cap_sys_resource {
        (nr_open.clone(), nr_open)
    } else {
        eprintln!("NOTE no CAP_SYS_RESOURCE here: only the soft limit can rise (to 4096)");
        assert!(
            !chain.logs(&["raising the soft limit only"]).is_empty(),
            "{}",
            chain.dump()
        );
        ("4096".to_string(), "4096".to_string())
    };
    for (what, pid) in [
        ("init", chain.init_pid()),
        ("watchdogd", wd),
        ("restarter", rst),
    ] {
        assert_eq!(
            nofile_of(pid),
            Some(want.clone()),
            "{what}:\n{}",
            chain.dump()
        );
    }
    let raised = format!(
        "RLIMIT_NOFILE raised from 1024:4096 to {}:{}",
        want.0, want.1
    );
    assert!(!chain.logs(&[&raised]).is_empty(), "{}", chain.dump());
    let _ = std::fs::remove_dir_all(&wrapper_dir);
}

#[test]
fn after_the_grace_init_sigkills_and_waits_for_every_process_before_the_last_steps() {
    // Issue 11 item 10: the remount came right after one reap, while killed
    // processes could still be exiting.
    let wd = FakeLayer::Beater {
        interval: BEAT,
        term_delay: None,
        ignore_term: true,
    };
    let (mut chain, _, _) = up("init-reap-wait", options(wd, FakeLayer::beater(BEAT)));
    assert!(tether_integration::chain::signal(
        chain.init_pid(),
        Signal::SIGTERM
    ));
    let status = chain
        .wait_end(LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    assert_eq!(End::of(status), End::Reboot);
    let at = |needle: &str| {
        chain
            .logs(&[needle])
            .first()
            .map(|l| l.at)
            .unwrap_or_else(|| panic!("no `{}`:\n{}", needle, chain.dump()))
    };
    assert!(!chain.logs(&["got SIGTERM, ignoring it"]).is_empty());
    let killed = at("over: SIGKILL to all processes");
    let reaped = at("all processes reaped");
    let last = at("read-only remount skipped");
    assert!(killed <= reaped && reaped <= last, "{}", chain.dump());
}

/// Opens a fake layer's descriptor `fd` from outside (a pipe end, through
/// `/proc/PID/fd`), non-blocking, for reading.
fn open_layer_fd(pid: i32, fd: i32) -> std::os::fd::OwnedFd {
    let path = format!("/proc/{}/fd/{}", pid, fd);
    nix::fcntl::open(
        path.as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {}: {}", path, e))
}

/// Reads what is there; appends to `buf`.
fn read_available(fd: &std::os::fd::OwnedFd, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 4096];
    let mut n = 0;
    while let Ok(k) = nix::unistd::read(fd, &mut chunk) {
        if k == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..k]);
        n += k;
    }
    n
}

/// The host pid of an orphan `sleep 1` that init adopted.
fn adopted_sleep(chain: &Chain) -> Option<i32> {
    let init = chain.init_pid();
    chain
        .processes()
        .into_iter()
        .find(|p| {
            p.ppid == init
                && p.state != 'Z'
                && p.cmdline.first().is_some_and(|a| a == "sleep")
                && p.cmdline.get(1).is_some_and(|a| a == "1")
        })
        .map(|p| p.pid)
}

/// Issue 13: a process re-parented to init (a service whose restarter died)
/// is reaped by init, and its `(pid, raw wait status)` reaches the
/// restarter's fd 7 (the exit relay) as one 8-byte record; a layer's own
/// exit is not relayed.
#[test]
fn an_orphan_reaped_by_init_reaches_the_restarter_through_the_exit_relay() {
    let (chain, wd, rst) = up("init-relay", beating());
    let relay = open_layer_fd(rst, 7);
    // A layer's exit is init's own business: kill watchdogd first; its
    // record must never appear (records are written in reap order, so it
    // would come before the orphan's).
    let wd_ns = ns_pid(wd);
    assert!(tether_integration::chain::signal(wd, Signal::SIGKILL));
    chain
        .wait_layer("tether-watchdogd", Some(wd), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    chain.fake_cmd("restarter", "orphan");
    let orphan = tether_integration::chain::wait_until(LONG, || adopted_sleep(&chain))
        .unwrap_or_else(|| panic!("no orphan adopted by init: {:?}", chain.processes()));
    let orphan_ns = ns_pid(orphan);
    assert!(tether_integration::chain::signal(orphan, Signal::SIGKILL));
    let mut buf = Vec::new();
    let records = tether_integration::chain::wait_until(LONG, || {
        read_available(&relay, &mut buf);
        let recs: Vec<(i32, i32)> = tether_common::relay::decode(&buf).collect();
        recs.iter().any(|&(p, _)| p == orphan_ns).then_some(recs)
    })
    .unwrap_or_else(|| {
        panic!(
            "no relay record for pid {} (read {:?})\n{}",
            orphan_ns,
            tether_common::relay::decode(&buf).collect::<Vec<_>>(),
            chain.dump()
        )
    });
    assert_eq!(
        buf.len() % tether_common::relay::RECORD_LEN,
        0,
        "whole records"
    );
    let status = records
        .iter()
        .find(|&&(p, _)| p == orphan_ns)
        .map(|&(_, s)| s)
        .expect("record");
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "raw wait status {:#x} of the orphan killed by SIGKILL",
        status
    );
    assert!(
        !records.iter().any(|&(p, _)| p == wd_ns),
        "a layer's exit was relayed: {:?}",
        records
    );
    assert!(
        !chain.logs(&["exit relay", "bytes"]).is_empty(),
        "the relay's size is logged"
    );
}

/// Parses `Human`'s output (`350ms`, `2.3s`, `12s`).
fn parse_human(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}

/// Issue 13 item 7 (`heartbeat::Watch` on init's own reader): init is
/// stopped longer than `hang_timeout`; watchdogd beats once more during the
/// stop, then falls silent. After SIGCONT the byte it wrote is credited no
/// later than when init last saw the pipe empty, so watchdogd is killed at
/// once, its reported silence covering the whole stop, instead of being
/// credited a fresh beat at the wake-up and killed a `hang_timeout` later
/// (silence reported: `hang_timeout`). watchdogd, because init drains its
/// pipe first: a layer drained later is found overdue by the deadline check
/// of an earlier drain's beat, fix or no fix.
#[test]
fn a_stopped_init_kills_the_layer_silent_since_before_the_stop_at_once_after_sigcont() {
    let (chain, wd, _rst) = up("init-stall", beating());
    let init = chain.init_pid();
    let needle = format!("watchdogd (pid {}) silent for ", ns_pid(wd));
    std::thread::sleep(Duration::from_millis(500));
    assert!(tether_integration::chain::signal(init, Signal::SIGSTOP));
    // watchdogd keeps beating into the pipe init is not reading ...
    std::thread::sleep(Duration::from_millis(300));
    // ... and then goes silent.
    assert!(tether_integration::chain::signal(wd, Signal::SIGSTOP));
    let stop = Duration::from_millis(2500);
    assert!(stop > timings().hang_timeout * 2);
    std::thread::sleep(stop - Duration::from_millis(300));
    assert!(tether_integration::chain::signal(init, Signal::SIGCONT));
    let line = chain
        .wait_log(&[&needle], LONG)
        .unwrap_or_else(|| panic!("watchdogd was not killed\n{}", chain.dump()));
    let silent = line
        .text
        .split(&needle)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(parse_human)
        .unwrap_or_else(|| panic!("no silence in {:?}", line.text));
    eprintln!(
        "FIGURE init stopped {:?}: watchdogd killed as silent for {:?}",
        stop, silent
    );
    assert!(
        silent >= stop - Duration::from_millis(300),
        "silence {:?} < the stop {:?}: the byte found after SIGCONT was credited as a fresh beat\n{}",
        silent,
        stop,
        chain.dump()
    );
    let _ = tether_integration::chain::signal(wd, Signal::SIGCONT);
}

/// Puts the workspace's `tether-init` where an upgrade looks for it
/// (`[paths] bin`, the fake layers' directory in these tests).
fn install_init(chain: &Chain) -> std::path::PathBuf {
    let dest = chain.bin_dir.join("tether-init");
    let tmp = chain.bin_dir.join("tether-init.tmp");
    std::fs::copy(tether_integration::bins::bin("tether-init"), &tmp).expect("copy tether-init");
    std::fs::rename(&tmp, &dest).expect("install tether-init");
    dest
}

/// Sends heartbeat bytes to init as the fake restarter, and waits until it
/// took the command.
fn send_from_restarter(chain: &Chain, bytes: &str) {
    let cmd = chain.fake_dir.join("restarter.cmd");
    chain.fake_cmd("restarter", &format!("send {}", bytes));
    let done = tether_integration::chain::wait_until(LONG, || (!cmd.exists()).then_some(()));
    assert!(done.is_some(), "the fake did not take the command");
}

/// Waits until `n` more beats of init reach watchdogd's fd 3.
fn wait_beats(fd: &std::os::fd::OwnedFd, n: usize) -> bool {
    let mut buf = Vec::new();
    tether_integration::chain::wait_until(LONG, || {
        read_available(fd, &mut buf);
        (buf.len() >= n).then_some(())
    })
    .is_some()
}

/// Issue 13: `tetherctl upgrade init` (code U). init re-execs itself in
/// place: same pid, the same layer processes, beats on, restart counts
/// kept; a second upgrade works; a missing binary, one that cannot start
/// and one that fails its check are refused and init keeps running (and
/// supervising).
#[test]
fn upgrade_init_in_place_keeps_the_layers_and_refuses_a_bad_binary() {
    let (chain, wd, rst) = up("init-upgrade", beating());
    let init = chain.init_pid();
    let beats = open_layer_fd(wd, 3);
    // One restart of the restarter first, to see the budget carried.
    assert!(tether_integration::chain::signal(rst, Signal::SIGKILL));
    let rst = chain
        .wait_layer("tether-restarter", Some(rst), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let started = format!("restarter: fake started, pid {}", ns_pid(rst));
    assert!(chain.wait_log(&[&started], LONG).is_some());
    let exe = install_init(&chain);

    for n in 1..=2 {
        send_from_restarter(&chain, "U");
        let resumed = format!("resumed after upgrade {} of init", n);
        assert!(
            chain.wait_log(&[&resumed], LONG).is_some(),
            "upgrade {}:\n{}",
            n,
            chain.dump()
        );
        assert_eq!(
            tether_integration::chain::proc_stat(init).map(|(s, _)| s != 'Z'),
            Some(true)
        );
        assert_eq!(chain.layer("tether-watchdogd"), Some(wd), "same watchdogd");
        assert_eq!(chain.layer("tether-restarter"), Some(rst), "same restarter");
        assert!(
            wait_beats(&beats, 5),
            "beats to watchdogd go on after upgrade {}",
            n
        );
        // The new image supervises from the carried state: its next
        // liveness line still counts the restarter's restart.
        let before = chain.syslog(&["liveness:"]).len();
        let line = tether_integration::chain::wait_until(LONG, || {
            chain
                .syslog(&["liveness:"])
                .get(before)
                .map(|l| l.text.clone())
        })
        .unwrap_or_else(|| panic!("no liveness line after upgrade {}", n));
        assert!(
            line.contains("restarter up")
                && line.contains("restarter up")
                && line.ends_with("(restarts 1)"),
            "{}",
            line
        );
        assert!(
            chain.logs(&["upgrade of init failed"]).is_empty(),
            "{}",
            chain.dump()
        );
    }
    assert_eq!(
        chain.syslog(&["tether-init", "starting as"]).len(),
        3,
        "boot and two upgrades:\n{}",
        chain.dump()
    );

    // Refusals: missing, not executable by the kernel, fails its check.
    let refusals = [
        ("missing", None),
        ("garbage", Some("\x7fELF garbage, not a program")),
        ("crashes at start", Some("#!/bin/sh\nexit 1\n")),
    ];
    for (i, (what, contents)) in refusals.iter().enumerate() {
        let _ = std::fs::remove_file(&exe);
        if let Some(text) = contents {
            tether_integration::chain::write_executable(&exe, text);
        }
        send_from_restarter(&chain, "U");
        let found = tether_integration::chain::wait_until(LONG, || {
            let n = chain.syslog(&["upgrade of init refused"]).len();
            (n > i).then_some(())
        });
        assert!(
            found.is_some(),
            "{} binary not refused:\n{}",
            what,
            chain.dump()
        );
        assert!(
            wait_beats(&beats, 3),
            "init beats on after a refused upgrade"
        );
        assert_eq!(chain.layer("tether-watchdogd"), Some(wd));
        assert_eq!(chain.layer("tether-restarter"), Some(rst));
    }
    assert!(
        chain.syslog(&["cannot run", "No such file"]).len() == 1,
        "{}",
        chain.dump()
    );
    assert!(
        chain
            .syslog(&["--upgrade-check", "exited with status 1"])
            .len()
            == 1,
        "{}",
        chain.dump()
    );
    assert_eq!(
        chain.syslog(&["tether-init", "starting as"]).len(),
        3,
        "no exec after a refusal"
    );
    // Still supervising: a hang of the restarter is repaired.
    assert!(tether_integration::chain::signal(rst, Signal::SIGSTOP));
    let new = chain.wait_layer("tether-restarter", Some(rst), LONG);
    assert!(new.is_some(), "{}", chain.dump());
    // Nothing is left unreaped: a zombie may exist for the instant between
    // a death and init's reap (CI caught one at the check), so wait.
    let reaped =
        tether_integration::chain::wait_until(LONG, || chain.zombies().is_empty().then_some(()));
    assert!(reaped.is_some(), "{:?}", chain.zombies());
}

/// Issue 13: `tetherctl upgrade watchdogd` (code W): init SIGKILLs
/// watchdogd (no magic close) and starts it again; the restarter is left
/// alone.
#[test]
fn upgrade_watchdogd_restarts_it_by_sigkill() {
    let (chain, wd, rst) = up("init-upgrade-wd", beating());
    std::thread::sleep(Duration::from_millis(300));
    send_from_restarter(&chain, "W");
    let new = chain
        .wait_layer("tether-watchdogd", Some(wd), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    assert_ne!(new, wd);
    assert!(
        chain
            .wait_log(
                &["upgrade of watchdogd requested by restarter", "SIGKILL"],
                LONG
            )
            .is_some(),
        "{}",
        chain.dump()
    );
    assert!(
        chain
            .wait_log(&["watchdogd", "killed by SIGKILL"], LONG)
            .is_some(),
        "{}",
        chain.dump()
    );
    assert_eq!(chain.layer("tether-restarter"), Some(rst));
}

/// A copy of descriptor `fd` of process `pid` (host pid), through
/// `pidfd_getfd`: the fd store's sockets cannot be reopened via /proc.
fn grab_fd(pid: i32, fd: i32) -> std::os::fd::OwnedFd {
    let pidfd = tether_common::sys::pidfd::pidfd_open(pid).expect("pidfd_open");
    tether_common::sys::pidfd::pidfd_getfd(pidfd.as_fd(), fd).expect("pidfd_getfd")
}

/// Sends one message carrying `fds` on the store, without blocking.
fn store_send(
    sock: &std::os::fd::OwnedFd,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<usize, i32> {
    tether_common::sys::fd_pass::send_fds(sock.as_fd(), b"svc", fds)
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// Receives one message from the store without blocking: the descriptors
/// it carried (owned), or `None` when the queue is empty.
fn store_recv(sock: &std::os::fd::OwnedFd) -> Option<Vec<std::os::fd::OwnedFd>> {
    let mut buf = [0u8; 64];
    let got = tether_common::sys::fd_pass::recv_fds(sock.as_fd(), &mut buf)
        .unwrap_or_else(|e| panic!("recvmsg on the store: {}", e))?;
    assert!(!got.truncated, "descriptors cut off");
    Some(got.fds)
}

/// Issue 13, DESIGN.md "Descriptors that outlive the restarter": a pipe
/// read end the restarter put into the fd store (fd 5) stays alive while no
/// restarter runs (init holds both ends of the store), its writer gets no
/// EPIPE, and the next restarter gets it back from fd 6 with every line
/// written meanwhile.
#[test]
fn a_descriptor_in_the_fd_store_outlives_the_restarter() {
    let (chain, _wd, rst) = up("init-store", beating());
    let (r, w) = nix::unistd::pipe().expect("pipe");
    {
        let send = grab_fd(rst, 5);
        store_send(&send, &[r.as_fd()]).expect("send into the store");
    }
    // Only the store's queue references the read end now.
    drop(r);
    assert!(tether_integration::chain::signal(rst, Signal::SIGKILL));
    chain
        .wait_log(&["restarter", "killed by SIGKILL"], LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    // No restarter has read the store: the pipe still has its reader.
    nix::unistd::write(&w, b"written while no restarter ran\n")
        .expect("a pipe whose read end is in the store has a reader");
    let rst2 = chain
        .wait_layer("tether-restarter", Some(rst), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let recv = grab_fd(rst2, 6);
    let fds = store_recv(&recv).expect("the message is still queued");
    assert_eq!(fds.len(), 1);
    tether_common::sys::set_nonblocking(fds[0].as_fd(), true).expect("O_NONBLOCK");
    let mut buf = Vec::new();
    read_available(&fds[0], &mut buf);
    assert_eq!(buf, b"written while no restarter ran\n");
    assert!(store_recv(&recv).is_none(), "one message was queued");
}

/// The figure for docs/ADOPTION.md: what bounds the fd store on this
/// kernel. Messages queue until the sending socket's buffer (`SO_SNDBUF`,
/// `net.core.wmem_default` unless raised) is used up, whatever the number
/// of descriptors each carries (at most `SCM_MAX_FD`, 253).
/// `net.unix.max_dgram_qlen` does not apply between the pair's ends.
#[test]
fn fd_store_capacity_is_bounded_by_the_senders_buffer_not_by_descriptors() {
    let (chain, _wd, rst) = up("init-store-cap", beating());
    let send = grab_fd(rst, 5);
    let recv = grab_fd(rst, 6);
    let (r, _w) = nix::unistd::pipe().expect("pipe");
    let fill = |per: usize| {
        let fds = vec![r.as_fd(); per];
        let mut n = 0usize;
        loop {
            match store_send(&send, &fds) {
                Ok(_) => n += 1,
                Err(libc::EAGAIN) => break,
                Err(e) => panic!("sendmsg with {} descriptors: errno {}", per, e),
            }
            assert!(n < 10_000_000, "no bound");
        }
        let mut drained = 0usize;
        while let Some(fds) = store_recv(&recv) {
            assert_eq!(fds.len(), per);
            drained += 1;
        }
        assert_eq!(drained, n, "every message came back");
        n
    };
    let one = fill(1);
    let max = fill(253);
    let sndbuf: usize =
        nix::sys::socket::getsockopt(&send, nix::sys::socket::sockopt::SndBuf).expect("SO_SNDBUF");
    let qlen = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen").unwrap_or_default();
    eprintln!(
        "FIGURE fd store (kernel {}): SO_SNDBUF {} bytes, max_dgram_qlen {}: {} messages of 1 descriptor, {} messages of 253 ({} descriptors) queued",
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        sndbuf,
        qlen.trim(),
        one,
        max,
        max * 253
    );
    assert!(
        one > qlen.trim().parse().unwrap_or(10),
        "the datagram queue length does not bound the pair"
    );
    assert!(
        max * 10 >= one * 9 && one * 10 >= max * 9,
        "the bound is messages, not descriptors: {} vs {}",
        one,
        max
    );
    // Raised by the restarter (it shares the socket with init, so the
    // setting outlives it): up to net.core.wmem_max without privilege (the
    // kernel doubles the value asked for).
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(212_992);
    nix::sys::socket::setsockopt(&send, nix::sys::socket::sockopt::SndBuf, &wmem_max)
        .expect("SO_SNDBUF");
    let raised_buf: usize =
        nix::sys::socket::getsockopt(&send, nix::sys::socket::sockopt::SndBuf).expect("SO_SNDBUF");
    let raised = fill(3);
    eprintln!(
        "FIGURE fd store with SO_SNDBUF {} (net.core.wmem_max {}): {} messages of 3 descriptors",
        raised_buf, wmem_max, raised
    );
    assert!(raised > one, "a larger buffer holds more messages");
    assert_eq!(
        store_send(&send, &vec![r.as_fd(); 254]),
        Err(libc::EINVAL),
        "SCM_MAX_FD is 253"
    );
    drop(chain);
}

/// Issue 13: an `execve` that fails after the check passed (here the
/// binary removes itself during its check) leaves init running; the
/// descriptors whose close-on-exec it cleared for the exec are close-on-exec
/// again, so the next layer it starts gets exactly its own.
#[test]
fn a_failed_exec_leaves_init_running_with_its_descriptors_close_on_exec_again() {
    let (chain, wd, rst) = up("init-upgrade-execfail", beating());
    let exe = chain.bin_dir.join("tether-init");
    tether_integration::chain::write_executable(&exe, "#!/bin/sh\nrm -f \"$0\"\nexit 0\n");
    send_from_restarter(&chain, "U");
    assert!(
        chain
            .wait_log(&["upgrade of init failed: execve", "keeps running"], LONG)
            .is_some(),
        "{}",
        chain.dump()
    );
    assert!(chain.syslog(&["resumed after upgrade"]).is_empty());
    let beats = open_layer_fd(wd, 3);
    assert!(wait_beats(&beats, 3), "init beats on");
    // A new restarter gets exactly fds 0-7.
    assert!(tether_integration::chain::signal(rst, Signal::SIGKILL));
    let rst2 = chain
        .wait_layer("tether-restarter", Some(rst), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let ns = ns_pid(rst2);
    let fds = tether_integration::chain::wait_until(LONG, || {
        let v = chain.fake_fds("restarter", ns);
        (!v.is_empty()).then_some(v)
    })
    .unwrap_or_else(|| panic!("no fd listing"));
    assert_eq!(
        fds.iter().map(|e| e.fd).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5, 6, 7],
        "{:?}",
        fds
    );
}
