//! The whole chain — tether-init, tether-watchdogd, tether-restarter, two
//! small services — in a fresh PID + mount namespace with its own
//! `/etc/tether`, run and state directories, and a FIFO watchdog read by the
//! simulated hardware (its reset kills the namespace). The nine scenarios of
//! issue #4; each prints its measured time next to the budget bound
//! (`FIGURE ...`, shown with `--nocapture`).
//!
//! Timings: beats 100 ms, hang_timeout 1 s, restart_delay 200 ms,
//! startup_grace 500 ms, stale_timeout 2 s, hardware 3 s.

use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use tether_integration::chain::{signal, wait_until, Chain, ChainOptions, End, Proc};
use tether_integration::hw::Timings;

const LONG: Duration = Duration::from_secs(20);

fn timings() -> Timings {
    Timings::chain()
}

/// A service script: logs `NAME start PID` and, on SIGTERM, `NAME stop`
/// to `DIR/events`.
fn service_script(name: &str) -> String {
    format!(
        "#!/bin/sh\n\
         trap 'echo \"{name} stop\" >> {{DIR}}/events; exit 0' TERM\n\
         echo \"{name} start $$\" >> {{DIR}}/events\n\
         while :; do sleep 0.1; done\n"
    )
}

fn service_toml(name: &str, extra: &str) -> String {
    format!("exec = [\"{{DIR}}/scripts/{name}\"]\nrestart_delay = \"100ms\"\nstop_timeout = \"2s\"\n{extra}")
}

/// alpha, and beta after alpha.
fn options() -> ChainOptions {
    ChainOptions {
        timings: timings(),
        scripts: vec![
            ("alpha".into(), service_script("alpha")),
            ("beta".into(), service_script("beta")),
        ],
        services: vec![
            ("alpha".into(), service_toml("alpha", "")),
            ("beta".into(), service_toml("beta", "after = [\"alpha\"]\n")),
        ],
        ..ChainOptions::default()
    }
}

fn events(chain: &Chain) -> Vec<String> {
    std::fs::read_to_string(chain.dir.join("events"))
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Live processes of a service script.
fn service(chain: &Chain, name: &str) -> Vec<Proc> {
    chain.find(name)
}

/// Waits until the chain is up: both layers, both services, pets flowing.
fn up(chain: &Chain) -> (i32, i32) {
    let wd = chain
        .wait_layer("tether-watchdogd", None, LONG)
        .unwrap_or_else(|| panic!("no watchdogd:\n{}", chain.dump()));
    let rst = chain
        .wait_layer("tether-restarter", None, LONG)
        .unwrap_or_else(|| panic!("no restarter:\n{}", chain.dump()));
    for name in ["alpha", "beta"] {
        let ok = wait_until(LONG, || (service(chain, name).len() == 1).then_some(()));
        assert!(ok.is_some(), "{} not up:\n{}", name, chain.dump());
    }
    let hw = chain.hw.as_ref().expect("hardware");
    assert!(hw.wait_for_pets(3, LONG), "no pets:\n{}", chain.dump());
    (wd, rst)
}

fn assert_no_reset(chain: &Chain) {
    let hw = chain.hw.as_ref().expect("hardware");
    assert!(
        hw.resets().is_empty(),
        "the hardware fired: {:?}\n{}",
        hw.resets(),
        chain.dump()
    );
}

#[test]
fn boot_brings_up_the_whole_chain() {
    let chain = Chain::start("chain-boot", options());
    let t0 = chain.started;
    up(&chain);
    let hw = chain.hw.as_ref().expect("hardware");
    let first_pet = hw.pets().first().copied().expect("a pet");
    eprintln!(
        "FIGURE chain boot: first pet after {} ms, chain up after {} ms",
        (first_pet - t0).as_millis(),
        t0.elapsed().as_millis()
    );
    // Pets keep flowing at about the beat.
    std::thread::sleep(Duration::from_secs(1));
    let gap = hw
        .max_gap_between(first_pet, Instant::now())
        .unwrap_or_default();
    assert!(gap < Duration::from_secs(1), "pets {:?} apart", gap);
    let out = chain.tetherctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tetherctl status: {:?}\n{}\n{}",
        out.status,
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    // The restarter, then each service running.
    assert!(text.contains("restarter: pid"), "status:\n{}", text);
    for name in ["alpha", "beta"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().take(2).eq([name, "running"])),
            "{} not running in status:\n{}",
            name,
            text
        );
    }
    assert!(chain.wait_log(&["liveness: init ok"], LONG).is_some());
    assert!(chain
        .wait_log(&["tether-watchdogd", "liveness"], LONG)
        .is_some());
    assert_no_reset(&chain);
}

#[test]
fn killed_restarter_is_restarted_without_duplicate_services() {
    let chain = Chain::start("chain-kill-restarter", options());
    let (_, rst) = up(&chain);
    let t0 = Instant::now();
    assert!(signal(rst, Signal::SIGKILL));
    let new = chain
        .wait_layer("tether-restarter", Some(rst), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let took = t0.elapsed();
    chain.figure(
        "chain 2: kill -9 restarter -> new restarter",
        took,
        "restarter crash",
    );
    assert_ne!(new, rst);
    // The services are back, once each, and stay so.
    for name in ["alpha", "beta"] {
        assert!(
            wait_until(LONG, || (service(&chain, name).len() == 1).then_some(())).is_some(),
            "{}:\n{}",
            name,
            chain.dump()
        );
    }
    eprintln!(
        "FIGURE chain 2: services back (one each) {} ms after the kill",
        t0.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_secs(2));
    for name in ["alpha", "beta"] {
        let v = service(&chain, name);
        assert_eq!(v.len(), 1, "{} duplicated or gone: {:?}", name, v);
    }
    assert_eq!(chain.find("tether-restarter").len(), 1);
    assert_no_reset(&chain);
}

#[test]
fn stopped_restarter_is_killed_and_replaced_while_petting_goes_on() {
    let chain = Chain::start("chain-stop-restarter", options());
    let (_, rst) = up(&chain);
    let hw = chain.hw.as_ref().expect("hardware");
    let t0 = Instant::now();
    assert!(signal(rst, Signal::SIGSTOP));
    let new = chain
        .wait_layer("tether-restarter", Some(rst), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let took = t0.elapsed();
    chain.figure(
        "chain 3: SIGSTOP restarter -> new restarter",
        took,
        "restarter hang",
    );
    assert!(
        took >= timings().hang_timeout - Duration::from_millis(200),
        "killed before hang_timeout: {:?}",
        took
    );
    assert_ne!(new, rst);
    for name in ["alpha", "beta"] {
        assert!(
            wait_until(LONG, || (service(&chain, name).len() == 1).then_some(())).is_some(),
            "{}:\n{}",
            name,
            chain.dump()
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let gap = hw.max_gap_between(t0, Instant::now()).unwrap_or_default();
    eprintln!(
        "FIGURE chain 3: longest pet gap {} ms (hardware timeout {} ms)",
        gap.as_millis(),
        timings().hardware_timeout.as_millis()
    );
    assert!(
        gap < timings().hardware_timeout,
        "petting stopped for {:?}",
        gap
    );
    assert_no_reset(&chain);
}

#[test]
fn watchdogd_killed_then_stopped_is_replaced_before_the_hardware_fires() {
    let chain = Chain::start("chain-watchdogd", options());
    let (wd, _) = up(&chain);
    let hw = chain.hw.as_ref().expect("hardware");
    let hw_timeout = timings().hardware_timeout;

    let t0 = Instant::now();
    assert!(signal(wd, Signal::SIGKILL));
    let wd2 = chain
        .wait_layer("tether-watchdogd", Some(wd), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let pet = hw
        .wait_for_pet_after(t0, hw_timeout)
        .unwrap_or_else(|| panic!("no pet after the kill:\n{}", chain.dump()));
    chain.figure(
        "chain 4a: kill -9 watchdogd -> next pet",
        pet - t0,
        "watchdogd crash",
    );

    std::thread::sleep(Duration::from_secs(1));
    let t1 = Instant::now();
    assert!(signal(wd2, Signal::SIGSTOP));
    let wd3 = chain
        .wait_layer("tether-watchdogd", Some(wd2), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    let pet = hw
        .wait_for_pet_after(t1 + Duration::from_millis(200), hw_timeout)
        .unwrap_or_else(|| panic!("no pet after the stop:\n{}", chain.dump()));
    chain.figure(
        "chain 4b: SIGSTOP watchdogd -> next pet",
        pet - t1,
        "watchdogd hang",
    );
    assert_ne!(wd3, wd2);
    std::thread::sleep(Duration::from_secs(1));
    let gap = hw.max_gap_between(t0, Instant::now()).unwrap_or_default();
    eprintln!(
        "FIGURE chain 4: longest pet gap {} ms (hardware timeout {} ms)",
        gap.as_millis(),
        hw_timeout.as_millis()
    );
    assert!(gap < hw_timeout, "{:?}", gap);
    assert_no_reset(&chain);
}

#[test]
fn stopped_init_ends_in_a_hardware_reset_that_names_init() {
    let mut chain = Chain::start("chain-stop-init", options());
    up(&chain);
    let t0 = Instant::now();
    assert!(signal(chain.init_pid(), Signal::SIGSTOP));
    let hw = chain.hw.as_ref().expect("hardware");
    let t = timings();
    let reset = hw
        .wait_for_reset(t.stale_timeout + t.hardware_timeout + LONG)
        .unwrap_or_else(|| panic!("no reset:\n{}", chain.dump()));
    chain.figure(
        "chain 5: SIGSTOP init -> hardware reset",
        reset.at - t0,
        "init hang",
    );
    assert!(
        reset.at - t0 >= t.stale_timeout,
        "watchdogd gave up before init's stale_timeout"
    );
    let status = chain.wait_end(LONG).expect("the namespace ends");
    assert_eq!(End::of(status), End::Killed);
    assert_eq!(
        chain.reset_field("cause").as_deref(),
        Some("watchdog"),
        "{:?}",
        chain.reset_reason()
    );
    assert_eq!(
        chain.reset_field("layer").as_deref(),
        Some("init"),
        "{:?}",
        chain.reset_reason()
    );
    assert!(
        !chain.logs(&["init", "silent"]).is_empty() || !chain.logs(&["init", "STALE"]).is_empty(),
        "{}",
        chain.dump()
    );
}

#[test]
fn crashing_critical_service_means_an_orderly_reboot_naming_it() {
    let mut opts = options();
    opts.scripts.push((
        "sensor".into(),
        "#!/bin/sh\necho \"sensor start $$\" >> {DIR}/events\nexit 1\n".into(),
    ));
    opts.services.push((
        "sensor".into(),
        service_toml(
            "sensor",
            "max_restarts = 2\nwindow = \"30s\"\non_exhausted = \"reboot\"\n",
        ),
    ));
    let mut chain = Chain::start("chain-critical", opts);
    let t0 = chain.started;
    let status = chain
        .wait_end(LONG + LONG)
        .unwrap_or_else(|| panic!("no reboot:\n{}", chain.dump()));
    eprintln!(
        "FIGURE chain 6: critical service crash loop -> namespace ended {} ms after start",
        t0.elapsed().as_millis()
    );
    assert_eq!(End::of(status), End::Reboot, "{}", chain.dump());
    assert_eq!(chain.reset_field("cause").as_deref(), Some("reboot"));
    assert_eq!(chain.reset_field("by").as_deref(), Some("restarter"));
    let detail = chain.reset_field("detail").unwrap_or_default();
    assert!(
        detail.contains("sensor"),
        "the record names the service: {:?}",
        chain.reset_reason()
    );
    let starts = events(&chain)
        .iter()
        .filter(|l| l.starts_with("sensor start"))
        .count();
    assert!(
        starts >= 3,
        "first start + max_restarts: {:?}",
        events(&chain)
    );
    assert_no_reset(&chain);
}

#[test]
fn tetherctl_reboot_stops_services_in_reverse_order_then_reboots() {
    let mut chain = Chain::start("chain-reboot", options());
    up(&chain);
    let t0 = Instant::now();
    let out = chain.tetherctl(&["reboot"]);
    assert!(
        out.status.success(),
        "tetherctl reboot: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let status = chain
        .wait_end(LONG)
        .unwrap_or_else(|| panic!("no reboot:\n{}", chain.dump()));
    eprintln!(
        "FIGURE chain 7: tetherctl reboot -> namespace ended in {} ms",
        t0.elapsed().as_millis()
    );
    assert_eq!(End::of(status), End::Reboot);
    let ev = events(&chain);
    let pos = |needle: &str| {
        ev.iter()
            .position(|l| l == needle)
            .unwrap_or_else(|| panic!("no `{}` in {:?}", needle, ev))
    };
    assert!(
        pos("beta stop") < pos("alpha stop"),
        "reverse dependency order: {:?}",
        ev
    );
    assert_eq!(chain.reset_field("cause").as_deref(), Some("reboot"));
    assert_eq!(chain.reset_field("by").as_deref(), Some("restarter"));
    let detail = chain.reset_field("detail").unwrap_or_default();
    assert!(
        detail.contains("tetherctl"),
        "the record says it was requested: {:?}",
        chain.reset_reason()
    );
    assert_no_reset(&chain);
}

#[test]
fn double_forked_orphans_leave_no_zombie() {
    let mut opts = options();
    opts.scripts.push((
        "forker".into(),
        "#!/bin/sh\nwhile :; do ( sleep 0.3 & ); echo forked >> {DIR}/events; sleep 0.4; done\n"
            .into(),
    ));
    opts.services
        .push(("forker".into(), service_toml("forker", "")));
    let chain = Chain::start("chain-orphans", opts);
    up(&chain);
    assert!(wait_until(LONG, || events(&chain)
        .iter()
        .any(|l| l == "forked")
        .then_some(()))
    .is_some());
    // The orphans exist, adopted by init or a subreaper among the layers.
    let orphan = wait_until(LONG, || {
        chain.processes().into_iter().find(|p| {
            p.cmdline == ["sleep", "0.3"] && !chain.find("forker").iter().any(|f| f.pid == p.ppid)
        })
    });
    assert!(orphan.is_some(), "no orphan seen: {:?}", chain.processes());
    std::thread::sleep(Duration::from_secs(3));
    // A zombie may exist for an instant between exit and reaping: the same
    // pid a zombie twice, 300 ms apart, is a leak.
    let first: Vec<i32> = chain.zombies().iter().map(|p| p.pid).collect();
    std::thread::sleep(Duration::from_millis(300));
    let lasting: Vec<Proc> = chain
        .zombies()
        .into_iter()
        .filter(|p| first.contains(&p.pid))
        .collect();
    assert!(lasting.is_empty(), "zombies: {:?}", lasting);
    assert_no_reset(&chain);
}

#[test]
fn bad_tether_toml_still_brings_the_chain_up_on_defaults() {
    let mut opts = options();
    opts.config_text = Some("[timing]\nbeat_interval = 1\n".into());
    opts.paths_as_flags = true;
    // Defaults: 30 s hardware timeout.
    opts.timings = Timings::defaults();
    let chain = Chain::start("chain-bad-config", opts);
    up(&chain);
    let line = chain
        .wait_log(&["BAD CONFIGURATION", "beat_interval"], LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    eprintln!(
        "FIGURE chain 9: chain up on defaults {} ms after start; log: {}",
        chain.started.elapsed().as_millis(),
        line.text
    );
    let out = chain.tetherctl(&["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_reset(&chain);
}

#[test]
fn init_whose_loop_panics_in_every_pass_stops_beating_and_the_hardware_resets() {
    // Issue 11 item 5: a panic late in every pass used to leave an init that
    // beat once a second after each recovery and did nothing else, so
    // watchdogd kept petting.
    let mut opts = options();
    opts.init_bin = Some(tether_integration::chain::fault_inject_init());
    opts.env.push(("TETHER_INIT_PANIC".into(), "pass".into()));
    let mut chain = Chain::start("chain-init-panics", opts);
    let t = timings();
    let hw = chain.hw.as_ref().expect("hardware");
    let reset = hw
        .wait_for_reset(t.stale_timeout + t.hardware_timeout + LONG)
        .unwrap_or_else(|| panic!("no reset:\n{}", chain.dump()));
    let status = chain.wait_end(LONG).expect("the namespace ends");
    assert_eq!(End::of(status), End::Killed);
    eprintln!(
        "reset {:?} after start; record {:?}",
        reset.at - chain.started,
        chain.reset_reason()
    );
    assert_eq!(
        (
            chain.reset_field("cause").as_deref(),
            chain.reset_field("layer").as_deref()
        ),
        (Some("watchdog"), Some("init")),
        "{:?}\n{}",
        chain.reset_reason(),
        chain.dump()
    );
    assert!(
        !chain
            .logs(&["stops beating to watchdogd for good"])
            .is_empty(),
        "{}",
        chain.dump()
    );
    // No layer was mistaken for hung meanwhile: init's loop still ran.
    assert!(
        chain.logs(&["hang_timeout): killing"]).is_empty(),
        "{}",
        chain.dump()
    );
}

#[test]
fn init_panicking_on_every_layer_exit_gives_up_beating_after_three() {
    // Issue 11 item 5: panics with healthy passes between them (here one
    // at each reap of a layer) still stop the beats at the third within
    // the window; the first two are survived, the layer restarted each time.
    let mut opts = options();
    opts.init_bin = Some(tether_integration::chain::fault_inject_init());
    opts.env.push(("TETHER_INIT_PANIC".into(), "reaped".into()));
    let mut chain = Chain::start("chain-init-panics-reap", opts);
    let (_, mut rst) = up(&chain);
    for n in 1..=3 {
        assert!(signal(rst, Signal::SIGKILL));
        if n < 3 {
            rst = chain
                .wait_layer("tether-restarter", Some(rst), LONG)
                .unwrap_or_else(|| {
                    panic!("restarter not restarted after panic {n}:\n{}", chain.dump())
                });
            assert_no_reset(&chain);
        }
    }
    let t = timings();
    let hw = chain.hw.as_ref().expect("hardware");
    hw.wait_for_reset(t.stale_timeout + t.hardware_timeout + LONG)
        .unwrap_or_else(|| panic!("no reset:\n{}", chain.dump()));
    let status = chain.wait_end(LONG).expect("the namespace ends");
    assert_eq!(End::of(status), End::Killed);
    assert_eq!(chain.reset_field("layer").as_deref(), Some("init"));
    assert!(
        !chain
            .logs(&["panicked 3 times", "stops beating to watchdogd for good"])
            .is_empty(),
        "{}",
        chain.dump()
    );
}

/// Writes heartbeat bytes to init as the restarter would (`tetherctl
/// upgrade init|watchdogd` makes the restarter write `U`/`W`): through the
/// restarter's own fd 3, the restarter→init pipe.
fn send_to_init_as_restarter(rst: i32, bytes: &[u8]) {
    let path = format!("/proc/{}/fd/3", rst);
    let fd = nix::fcntl::open(
        path.as_str(),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {}: {}", path, e));
    nix::unistd::write(&fd, bytes).expect("write to init");
}

fn pids(chain: &Chain, name: &str) -> Vec<i32> {
    service(chain, name).into_iter().map(|p| p.pid).collect()
}

/// Issue 13, init's side of "upgrade init in place": with the real
/// restarter, watchdogd, services and hardware, two upgrades of init (code
/// `U`) keep init's pid and every other process (layers and services), the
/// hardware is petted throughout and never fires; then an upgrade of
/// watchdogd (code `W`) replaces watchdogd only, the hardware staying armed
/// and fed.
#[test]
fn upgrading_init_in_place_keeps_every_process_and_the_hardware_fed() {
    let chain = Chain::start("chain-upgrade-init", options());
    let (wd, rst) = up(&chain);
    let init = chain.init_pid();
    let before: Vec<Vec<i32>> = ["alpha", "beta"].iter().map(|n| pids(&chain, n)).collect();
    let hw = chain.hw.as_ref().expect("hardware");
    for n in 1..=2 {
        let t0 = Instant::now();
        send_to_init_as_restarter(rst, b"U");
        let resumed = format!("resumed after upgrade {} of init", n);
        assert!(
            chain.wait_log(&[&resumed], LONG).is_some(),
            "upgrade {}:\n{}",
            n,
            chain.dump()
        );
        eprintln!(
            "FIGURE chain: upgrade {} of init: resumed {} ms after the request",
            n,
            t0.elapsed().as_millis()
        );
        let pets = hw.pets().len();
        assert!(
            wait_until(LONG, || (hw.pets().len() >= pets + 3).then_some(())).is_some(),
            "pets go on after upgrade {}:\n{}",
            n,
            chain.dump()
        );
        assert_eq!(chain.init_pid(), init);
        assert!(
            chain.logs(&["upgrade of init failed"]).is_empty(),
            "{}",
            chain.dump()
        );
        assert_eq!(chain.layer("tether-watchdogd"), Some(wd), "same watchdogd");
        assert_eq!(chain.layer("tether-restarter"), Some(rst), "same restarter");
        let now: Vec<Vec<i32>> = ["alpha", "beta"].iter().map(|n| pids(&chain, n)).collect();
        assert_eq!(now, before, "services untouched");
        let gap = hw.max_gap_between(t0, Instant::now()).unwrap_or_default();
        assert!(
            gap < Duration::from_secs(1),
            "pets {:?} apart across the upgrade",
            gap
        );
    }
    assert_no_reset(&chain);

    send_to_init_as_restarter(rst, b"W");
    let wd2 = chain
        .wait_layer("tether-watchdogd", Some(wd), LONG)
        .unwrap_or_else(|| panic!("{}", chain.dump()));
    assert_ne!(wd2, wd);
    let pets = hw.pets().len();
    assert!(
        wait_until(LONG, || (hw.pets().len() >= pets + 3).then_some(())).is_some(),
        "the new watchdogd pets:\n{}",
        chain.dump()
    );
    assert_eq!(chain.layer("tether-restarter"), Some(rst));
    let now: Vec<Vec<i32>> = ["alpha", "beta"].iter().map(|n| pids(&chain, n)).collect();
    assert_eq!(now, before, "services untouched");
    assert_no_reset(&chain);
}
