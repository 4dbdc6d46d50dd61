//! Re-adoption (issue 13), whole chain: `tether-init` as PID 1 of a PID
//! namespace hands the restarter its fd store and exit relay; the
//! restarter is killed (`SIGKILL`, or `SIGSTOP` so init kills it after
//! `hang_timeout`) and the next one takes every service back: same pids,
//! same restart counts, no output line lost on the way to syslog, a
//! `systemd-notify` watchdog service never restarted; a service killed
//! while no restarter ran is restarted and shows `signal KILL`.
//!
//! `FIGURE adopt ...` lines (with `--nocapture`) give the time from the
//! restarter's death to every service adopted.
//!
//! The OOM kill is the kernel's own, confined to a cgroup v1 memory
//! controller (this machine has no cgroup v2, and a global OOM would pick
//! victims among every session's processes): the running restarter is
//! moved into a fresh memory cgroup limited to 64 MiB, its
//! `oom_score_adj` set to 1000, and a memory hog (`tail /dev/zero`, which
//! buffers forever looking for a newline) started in the same cgroup. The
//! cgroup's OOM killer picks the restarter first (its score is the limit
//! plus its RSS, the hog's at most the limit); the hog, next, is killed the
//! same way or by the test. The cgroup's `oom_kill` counter proves it was
//! the OOM killer. The services stay in init's cgroup (a v1 move takes only
//! the process named), so only the restarter and the hog can be chosen.

use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tether_integration::chain::{signal, wait_until, Chain, ChainOptions};
use tether_integration::hw::Timings;

const LONG: Duration = Duration::from_secs(20);

/// A numbered line every 10 ms on stdout.
const COUNTER: &str =
    "#!/bin/sh\ni=0\nwhile :; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done\n";

fn options() -> ChainOptions {
    let wd = "#!/bin/sh\nsystemd-notify --ready\nwhile :; do systemd-notify WATCHDOG=1; sleep 0.3; done\n";
    ChainOptions {
        timings: Timings::chain(),
        scripts: vec![
            ("counter".into(), COUNTER.into()),
            ("wdsvc".into(), wd.into()),
        ],
        services: vec![
            (
                "counter".into(),
                "exec = [\"{DIR}/scripts/counter\"]\nrestart_delay = \"100ms\"\n".into(),
            ),
            (
                "wdsvc".into(),
                "exec = [\"{DIR}/scripts/wdsvc\"]\nnotify = \"watchdog\"\nwatchdog_timeout = \"2s\"\nrestart_delay = \"100ms\"\n".into(),
            ),
            (
                "sleeper".into(),
                "exec = [\"/bin/sleep\", \"7301\"]\nrestart_delay = \"100ms\"\n".into(),
            ),
        ],
        ..ChainOptions::default()
    }
}

/// `tetherctl status --json` → name → (pid, restarts, state, last_exit).
/// name → (pid, restarts, state, last_exit).
type Rows = BTreeMap<String, (Option<i64>, i64, String, String)>;

fn status(chain: &Chain) -> Option<Rows> {
    let out = chain.tetherctl(&["status", "--json"]);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v["services"]
            .as_array()?
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or("").to_string(),
                    (
                        s["pid"].as_i64(),
                        s["restarts"].as_i64().unwrap_or(-1),
                        s["state"].as_str().unwrap_or("").to_string(),
                        s["last_exit"].as_str().unwrap_or("").to_string(),
                    ),
                )
            })
            .collect(),
    )
}

/// Waits until every service runs (the watchdog one ready).
fn all_up(chain: &Chain) -> Rows {
    wait_until(LONG, || {
        status(chain).filter(|m| {
            m.len() == 3
                && m.values()
                    .all(|(pid, _, st, _)| pid.is_some() && (st == "running" || st == "ready"))
        })
    })
    .unwrap_or_else(|| panic!("services not up:\n{}", chain.dump()))
}

/// The numbers of the counter's lines that reached syslog, in order.
fn counted(chain: &Chain) -> Vec<u64> {
    chain
        .syslog(&["counter[", "line "])
        .iter()
        .filter_map(|l| l.text.rsplit("line ").next()?.trim().parse().ok())
        .collect()
}

/// No number missing or repeated between the first and the last.
fn assert_no_gap(n: &[u64], chain: &Chain) {
    assert!(n.len() > 50, "too few lines: {}\n{}", n.len(), chain.dump());
    // Every number from the first to the largest arrived. A line may come
    // twice: what a restarter had in hand when it died stays in the pipe and
    // the next one sends it again (at-least-once, restarter/src/output.rs).
    let seen: std::collections::BTreeSet<u64> = n.iter().copied().collect();
    let (lo, hi) = (*seen.first().unwrap(), *seen.last().unwrap());
    let missing: Vec<u64> = (lo..=hi).filter(|i| !seen.contains(i)).take(10).collect();
    let again = n.len() - seen.len();
    println!(
        "counter lines {lo}..={hi}: {} received, {again} sent again",
        n.len()
    );
    assert!(
        missing.is_empty(),
        "lines lost from the counter (first missing: {missing:?}; {} lines)",
        n.len()
    );
}

fn adopted_after(chain: &Chain, since: Instant, n: usize) -> Duration {
    let lines = wait_until(LONG, || {
        let l: Vec<_> = chain
            .syslog(&["adopted (pid"])
            .into_iter()
            .filter(|l| l.at >= since)
            .collect();
        (l.len() >= n).then_some(l)
    })
    .unwrap_or_else(|| panic!("not {n} adopted:\n{}", chain.dump()));
    lines.iter().map(|l| l.at).max().unwrap() - since
}

#[test]
fn restarter_kill9_keeps_every_service_and_loses_no_output_line() {
    let chain = Chain::start("adopt-kill9", options());
    let rst = chain
        .wait_layer("tether-restarter", None, LONG)
        .unwrap_or_else(|| panic!("no restarter:\n{}", chain.dump()));
    let before = all_up(&chain);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    assert!(signal(rst, Signal::SIGKILL));
    let new = chain
        .wait_layer("tether-restarter", Some(rst), LONG)
        .unwrap_or_else(|| panic!("no new restarter:\n{}", chain.dump()));
    let after = all_up(&chain);
    for (name, (pid, restarts, _, _)) in &before {
        assert_eq!(after[name].0, *pid, "{name}: pid changed\n{}", chain.dump());
        assert_eq!(after[name].1, *restarts, "{name}: restart count changed");
    }
    let took = adopted_after(&chain, t0, 3);
    eprintln!(
        "FIGURE adopt kill9: 3 services adopted {} ms after the restarter's death",
        took.as_millis()
    );
    // The watchdog service keeps pinging the adopted socket: it is never
    // restarted (longer than its 2 s timeout after adoption).
    std::thread::sleep(Duration::from_millis(2500));
    let later = status(&chain).expect("status");
    assert_eq!(later["wdsvc"].0, before["wdsvc"].0, "{}", chain.dump());
    assert_eq!(later["wdsvc"].2, "ready");
    assert!(
        chain.syslog(&["service wdsvc", "watchdog"]).is_empty(),
        "{}",
        chain.dump()
    );
    assert_eq!(chain.syslog(&["service wdsvc started"]).len(), 1);
    assert_no_gap(&counted(&chain), &chain);
    assert_eq!(chain.layer("tether-restarter"), Some(new));
}

#[test]
fn restarter_stopped_then_killed_by_init_a_service_killed_meanwhile_is_restarted() {
    let chain = Chain::start("adopt-sigstop", options());
    let rst = chain
        .wait_layer("tether-restarter", None, LONG)
        .unwrap_or_else(|| panic!("no restarter:\n{}", chain.dump()));
    let before = all_up(&chain);
    std::thread::sleep(Duration::from_millis(300));
    let sleeper: Vec<_> = chain
        .find("sleep")
        .into_iter()
        .filter(|p| p.cmdline.iter().any(|a| a == "7301"))
        .collect();
    assert_eq!(sleeper.len(), 1, "{}", chain.dump());
    let t0 = Instant::now();
    assert!(signal(rst, Signal::SIGSTOP));
    // Killed while no restarter runs (its restarter is stopped, then gone).
    assert!(signal(sleeper[0].pid, Signal::SIGKILL));
    let new = chain
        .wait_layer("tether-restarter", Some(rst), LONG)
        .unwrap_or_else(|| {
            panic!(
                "init did not replace the stopped restarter:\n{}",
                chain.dump()
            )
        });
    let after = wait_until(LONG, || {
        status(&chain).filter(|m| {
            m.get("sleeper")
                .is_some_and(|s| s.0.is_some() && s.0 != before["sleeper"].0)
        })
    })
    .unwrap_or_else(|| panic!("sleeper not restarted:\n{}", chain.dump()));
    assert_eq!(after["sleeper"].3, "signal KILL", "{}", chain.dump());
    assert_eq!(after["sleeper"].1, before["sleeper"].1 + 1);
    for name in ["counter", "wdsvc"] {
        assert_eq!(
            after[name].0,
            before[name].0,
            "{name}: pid changed\n{}",
            chain.dump()
        );
        assert_eq!(
            after[name].1, before[name].1,
            "{name}: restart count changed"
        );
    }
    let took = adopted_after(&chain, t0, 2);
    eprintln!(
        "FIGURE adopt sigstop: 2 services adopted {} ms after the SIGSTOP (hang_timeout 1 s)",
        took.as_millis()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_no_gap(&counted(&chain), &chain);
    assert_eq!(
        chain.syslog(&["service wdsvc started"]).len(),
        1,
        "{}",
        chain.dump()
    );
    assert_eq!(chain.layer("tether-restarter"), Some(new));
}

/// `tetherctl upgrade restarter`, then `upgrade init`, then `upgrade
/// watchdogd`, under the same load: the restarter keeps its pid (an exec in
/// place) and takes every service back; no service pid or restart count
/// changes, no output line is lost, the watchdog service is never
/// restarted, the hardware never fires.
#[test]
fn upgrades_in_place_under_load_keep_every_service() {
    let chain = Chain::start("adopt-upgrade", options());
    let rst = chain
        .wait_layer("tether-restarter", None, LONG)
        .unwrap_or_else(|| panic!("no restarter:\n{}", chain.dump()));
    let before = all_up(&chain);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let out = chain.tetherctl(&["upgrade", "restarter"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{}", chain.dump());
    assert!(text.contains("exec of"), "{text}");
    let done = wait_until(LONG, || {
        chain
            .syslog(&["adoption done"])
            .into_iter()
            .find(|l| l.at >= t0)
    })
    .unwrap_or_else(|| panic!("no adoption after the upgrade:\n{}", chain.dump()));
    assert!(done.text.contains("3 service(s) adopted"), "{}", done.text);
    eprintln!(
        "FIGURE adopt upgrade restarter: 3 services adopted {} ms after the request",
        (done.at - t0).as_millis()
    );
    assert_eq!(chain.layer("tether-restarter"), Some(rst), "same process");
    let check = |what: &str| {
        let now = all_up(&chain);
        for (name, (pid, restarts, _, _)) in &before {
            assert_eq!(
                now[name].0,
                *pid,
                "{what}: {name}: pid changed\n{}",
                chain.dump()
            );
            assert_eq!(
                now[name].1, *restarts,
                "{what}: {name}: restart count changed"
            );
        }
    };
    check("upgrade restarter");
    // init: same pid 1, same restarter.
    let t1 = Instant::now();
    let out = chain.tetherctl(&["upgrade", "init"]);
    assert!(out.status.success(), "{:?}\n{}", out, chain.dump());
    wait_until(LONG, || {
        chain
            .syslog(&["resumed after upgrade"])
            .into_iter()
            .find(|l| l.at >= t1)
    })
    .unwrap_or_else(|| panic!("init did not resume:\n{}", chain.dump()));
    check("upgrade init");
    assert_eq!(chain.layer("tether-restarter"), Some(rst));
    // watchdogd: restarted by init, nothing else.
    let wd = chain.layer("tether-watchdogd").expect("watchdogd");
    let out = chain.tetherctl(&["upgrade", "watchdogd"]);
    assert!(out.status.success(), "{:?}\n{}", out, chain.dump());
    chain
        .wait_layer("tether-watchdogd", Some(wd), LONG)
        .unwrap_or_else(|| panic!("watchdogd not restarted:\n{}", chain.dump()));
    std::thread::sleep(Duration::from_millis(2500));
    check("upgrade watchdogd");
    assert_eq!(chain.layer("tether-restarter"), Some(rst));
    assert_no_gap(&counted(&chain), &chain);
    assert_eq!(
        chain.syslog(&["service wdsvc started"]).len(),
        1,
        "{}",
        chain.dump()
    );
    let hw = chain.hw.as_ref().expect("hardware");
    assert!(
        hw.resets().is_empty(),
        "the hardware fired:\n{}",
        chain.dump()
    );
}

/// `upgrade restarter` with the test as a fake init (store pair and relay
/// at fds 5-7): a binary replaced by something that is not an executable
/// is refused with the reason and the restarter keeps running, unchanged;
/// a good binary put back is exec'ed in place (same pid) and takes the
/// services back. Run alone (no store), the upgrade is refused.
#[test]
fn a_bad_binary_is_refused_and_a_good_one_execs_in_place() {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;
    use tether_integration::bins::bin;
    use tether_integration::svc::{pipe, Restarter};
    let (send, recv) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let (relay_r, _relay_w) = pipe();
    // Both store ends kept by the "init" (this test) for its whole life.
    let keep = (
        send.as_fd().try_clone_to_owned().unwrap(),
        recv.as_fd().try_clone_to_owned().unwrap(),
    );
    let b = Restarter::builder("adopt-upgrade-alone");
    let exe = b.dir().join("tether-restarter");
    std::fs::copy(bin("tether-restarter"), &exe).unwrap();
    let r = b
        .binary(&exe)
        .service("a", "exec = [\"/bin/sleep\", \"7401\"]\n")
        .env("TETHER_FDS", "store_send=5,store_recv=6,relay=7")
        .fd(send, 5)
        .fd(recv, 6)
        .fd(relay_r, 7)
        .start();
    let pid = r.wait_pid("a", LONG);
    let me = r.pid();
    // A package upgrade replaced the file with garbage.
    let tmp = exe.with_extension("new");
    std::fs::write(&tmp, b"not a binary").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &exe).unwrap();
    let out = r.ctl(&["upgrade", "restarter"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refused") && err.contains("no ELF"), "{err}");
    assert_eq!(r.pid(), me);
    assert_eq!(r.wait_state("a", "running", LONG)["pid"], pid);
    // The real binary again: exec'ed in place.
    std::fs::copy(bin("tether-restarter"), &tmp).unwrap();
    std::fs::rename(&tmp, &exe).unwrap();
    let out = r.ctl(&["upgrade", "restarter"]);
    assert!(out.status.success(), "{:?}", out);
    r.log.wait_for("adoption done: 1 service(s) adopted", LONG);
    assert_eq!(r.pid(), me, "the same process");
    let st = r.wait_state("a", "running", LONG);
    assert_eq!(st["pid"], pid);
    assert_eq!(st["restarts"], 0);
    drop(keep);
    // Run alone: refused, with the reason.
    let alone = Restarter::start(
        "adopt-upgrade-none",
        &[("b", "exec = [\"/bin/sleep\", \"7402\"]\n")],
    );
    alone.wait_pid("b", LONG);
    let out = alone.ctl(&["upgrade", "restarter"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no fd store"), "{err}");
}

/// The test as a fake init that never writes relay records: a restarter
/// killed with `SIGKILL`, a new one handed the same store adopts the
/// service (its output written meanwhile reaches syslog); when the adopted
/// process is killed, its pidfd says so, no record comes, and after the
/// grace the exit is handled as `exit status unknown` and the service
/// restarted.
#[test]
fn an_adopted_exit_without_a_relay_record_is_unknown_and_restarted() {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::{AsFd, OwnedFd};
    use tether_integration::svc::{pipe, Restarter};
    let (send, recv) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let (relay_r, _relay_w) = pipe();
    let fds = |send: &OwnedFd, recv: &OwnedFd, relay: &OwnedFd| {
        vec![
            (send.as_fd().try_clone_to_owned().unwrap(), 5),
            (recv.as_fd().try_clone_to_owned().unwrap(), 6),
            (relay.as_fd().try_clone_to_owned().unwrap(), 7),
        ]
    };
    let b = Restarter::builder("adopt-no-record")
        .env("TETHER_FDS", "store_send=5,store_recv=6,relay=7");
    let script = b.script(
        "talk",
        "#!/bin/sh\ni=0\nwhile :; do echo \"talk $i\"; i=$((i+1)); sleep 0.01; done\n",
    );
    let mut b = b.service(
        "talk",
        &format!(
            "exec = [\"{}\"]\nrestart_delay = \"100ms\"\n",
            script.display()
        ),
    );
    for (fd, n) in fds(&send, &recv, &relay_r) {
        b = b.fd(fd, n);
    }
    let mut r = b.start();
    let pid = r.wait_pid("talk", LONG);
    r.log.wait_for("talk 20", LONG);
    r.kill9();
    std::thread::sleep(Duration::from_millis(300));
    r.start_again_with_fds(fds(&send, &recv, &relay_r));
    r.log.wait_for("adoption done: 1 service(s) adopted", LONG);
    assert_eq!(r.wait_state("talk", "running", LONG)["pid"], pid);
    // What it wrote while no restarter ran arrived, with no gap (a line
    // the killed restarter had in hand may come twice: at-least-once).
    let seen = r.log.wait_for_count("talk ", 80, LONG);
    let n: std::collections::BTreeSet<u64> = seen
        .iter()
        .filter_map(|l| l.text.rsplit("talk ").next()?.trim().parse().ok())
        .collect();
    let (lo, hi) = (*n.first().unwrap(), *n.last().unwrap());
    assert_eq!(n.len() as u64, hi - lo + 1, "gap in the output: {n:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let new = r.wait_pid_other_than("talk", pid, LONG);
    assert_ne!(new, pid);
    r.log
        .wait_for("no record on init's relay within 200 ms", LONG);
    let st = r.wait_state("talk", "running", LONG);
    assert_eq!(st["last_exit"], "exit status unknown");
    assert_eq!(st["restarts"], 1);
}

/// A cgroup v1 memory cgroup of the test's, removed (its tasks killed) on
/// drop.
struct MemCgroup {
    dir: std::path::PathBuf,
    hog: Option<std::process::Child>,
}

impl MemCgroup {
    /// `/sys/fs/cgroup/memory/tether-test-LABEL-PID` limited to `limit`
    /// bytes; `None` when the v1 memory controller is not mounted.
    fn new(label: &str, limit: u64) -> Option<MemCgroup> {
        let root = std::path::Path::new("/sys/fs/cgroup/memory");
        if !root.join("memory.limit_in_bytes").exists() {
            return None;
        }
        let dir = root.join(format!("tether-test-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).expect("create a memory cgroup");
        std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())
            .expect("memory.limit_in_bytes");
        Some(MemCgroup { dir, hog: None })
    }

    fn add(&self, pid: i32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("cgroup.procs");
    }

    /// Starts `tail /dev/zero` inside the cgroup (it joins before it execs).
    fn start_hog(&mut self) {
        let script = format!(
            "echo $$ > {} && exec tail /dev/zero",
            self.dir.join("cgroup.procs").display()
        );
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the memory hog");
        self.hog = Some(child);
    }

    /// The OOM kills in the cgroup so far (`memory.oom_control`).
    fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.oom_control"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    fn tasks(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if let Some(mut hog) = self.hog.take() {
            let _ = hog.kill();
            let _ = hog.wait();
        }
        for pid in self.tasks() {
            signal(pid, Signal::SIGKILL);
        }
        let _ = wait_until(Duration::from_secs(5), || {
            self.tasks().is_empty().then_some(())
        });
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The restarter killed by the kernel's OOM killer (a cgroup v1 memory
/// limit, see the module docs): the services keep their pids and restart
/// counts, no numbered line is lost, the watchdog service is never
/// restarted.
#[test]
fn restarter_oom_killed_keeps_every_service_and_loses_no_output_line() {
    let chain = Chain::start("adopt-oom", options());
    let rst = chain
        .wait_layer("tether-restarter", None, LONG)
        .unwrap_or_else(|| panic!("no restarter:\n{}", chain.dump()));
    let before = all_up(&chain);
    std::thread::sleep(Duration::from_millis(500));
    let mut cg = MemCgroup::new("oom", 64 << 20)
        .expect("the cgroup v1 memory controller at /sys/fs/cgroup/memory");
    std::fs::write(format!("/proc/{rst}/oom_score_adj"), "1000").expect("oom_score_adj");
    cg.add(rst);
    let t0 = Instant::now();
    cg.start_hog();
    let new = chain
        .wait_layer("tether-restarter", Some(rst), LONG)
        .unwrap_or_else(|| panic!("the restarter was not replaced:\n{}", chain.dump()));
    assert!(cg.oom_kills() >= 1, "no OOM kill in the cgroup");
    // init saw it die of the OOM killer's SIGKILL.
    assert!(
        !chain
            .syslog(&["restarter (pid", "killed by SIGKILL"])
            .is_empty(),
        "{}",
        chain.dump()
    );
    // The new restarter is not in the small cgroup.
    assert!(!cg.tasks().contains(&new));
    drop(cg);
    let after = all_up(&chain);
    for (name, (pid, restarts, _, _)) in &before {
        assert_eq!(after[name].0, *pid, "{name}: pid changed\n{}", chain.dump());
        assert_eq!(after[name].1, *restarts, "{name}: restart count changed");
    }
    let took = adopted_after(&chain, t0, 3);
    eprintln!(
        "FIGURE adopt oom: 3 services adopted {} ms after the hog started",
        took.as_millis()
    );
    std::thread::sleep(Duration::from_millis(2500));
    let later = status(&chain).expect("status");
    assert_eq!(later["wdsvc"].0, before["wdsvc"].0, "{}", chain.dump());
    assert_eq!(later["wdsvc"].2, "ready");
    assert_eq!(chain.syslog(&["service wdsvc started"]).len(), 1);
    assert_no_gap(&counted(&chain), &chain);
    assert_eq!(chain.layer("tether-restarter"), Some(new));
}
