//! Many services under one restarter (issue 12.4): start time, the
//! restarter's memory, and `tetherctl status --json` latency.
//!
//!   bench_scale [SERVICES] [NOFILE]   defaults: 10000 services, this
//!   process's hard RLIMIT_NOFILE (raising it further needs
//!   CAP_SYS_RESOURCE; the restarter needs about 4 descriptors per
//!   service, see its `descriptors:` line)
//!
//! Starts `tether-restarter --no-cgroup` through `prlimit --nofile=N:N`
//! (what tether-init does for its layers) on SERVICES files running
//! `/bin/sleep`, then prints: the time until the services were loaded and
//! until the state file names every one of them (all started), the
//! restarter's VmRSS/VmHWM, CPU time, descriptors, and p50/max of
//! `tetherctl status --json` over 20 calls with the output size. Figures,
//! not assertions; build the binaries first (`cargo build --workspace
//! --bins`, `--release` for release figures).

use std::time::{Duration, Instant};
use tether_integration::bins::bin;
use tether_integration::svc::Restarter;

fn status_field(pid: i32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l[key.len()..].trim().to_string())
        .unwrap_or_default()
}

/// utime + stime of `pid` in ms (fields 14 and 15 of `/proc/PID/stat`,
/// the 12th and 13th after the command name; USER_HZ 100).
fn cpu_ms(pid: i32) -> u64 {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap_or_default();
    let close = stat.iter().rposition(|&b| b == b')').map_or(0, |i| i + 1);
    let rest = String::from_utf8_lossy(&stat[close..]).into_owned();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(65_536, |(_, h)| h);
    let nofile: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(hard);
    let mut b = Restarter::builder("bench-scale")
        .arg("--no-cgroup")
        .nofile(nofile, nofile)
        .timing("beat_interval = \"1s\"");
    for i in 0..n {
        b = b.service(
            &format!("s{i:05}"),
            &format!("exec = [\"/bin/sleep\", \"{}\"]\n", 8_000_000 + i),
        );
    }
    eprintln!("{n} service files written; starting the restarter (nofile {nofile})");
    let t0 = Instant::now();
    let r = b.start();
    std::thread::sleep(Duration::from_millis(200));
    if !r.stderr().is_empty() && r.log.lines().is_empty() {
        eprintln!("the restarter did not start:\n{}", r.stderr());
        std::process::exit(1);
    }
    let loaded = r
        .log
        .wait_for(&format!("{n} service(s) from"), Duration::from_secs(600));
    let load = loaded.at.duration_since(t0);
    // Until the state file names every service, or (when they do not all
    // fit) stops growing for 10 s (the file is written after each batch).
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut last, mut since) = (0, Instant::now());
    let all = loop {
        let k = r.state_entries().len();
        if k >= n {
            break t0.elapsed();
        }
        if k != last {
            (last, since) = (k, Instant::now());
        } else if k > 0 && since.elapsed() > Duration::from_secs(10) {
            println!("only {k} of {n} started (no growth for 10 s)");
            break since.duration_since(t0);
        }
        if Instant::now() > deadline {
            eprintln!("only {k} of {n} in the state file after 600 s");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = r.pid();
    for l in r.log.matching("descriptors:") {
        println!("{}", l.text);
    }
    println!("services:            {n}");
    println!("loaded after:        {load:?}");
    println!(
        "all started after:   {all:?} ({:?} after the load)",
        all - load
    );
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    println!("restarter fds:       {fds}");
    println!(
        "restarter VmRSS:     {} (peak {})",
        status_field(pid, "VmRSS:"),
        status_field(pid, "VmHWM:")
    );
    let cpu0 = cpu_ms(pid);
    println!("restarter CPU so far: {cpu0} ms");
    let mut lat = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let out = std::process::Command::new(bin("tetherctl"))
            .arg("--run-dir")
            .arg(&r.run)
            .args(["status", "--json"])
            .output()
            .expect("tetherctl");
        lat.push(t.elapsed());
        assert!(out.status.success(), "{out:?}");
        size = out.stdout.len();
    }
    lat.sort();
    println!(
        "status --json:       p50 {:?}  max {:?}  ({size} bytes; includes starting tetherctl)",
        lat[lat.len() / 2],
        lat[lat.len() - 1]
    );
    let idle0 = cpu_ms(pid);
    std::thread::sleep(Duration::from_secs(5));
    println!(
        "idle CPU:            {} ms over 5 s",
        cpu_ms(pid).saturating_sub(idle0)
    );
    let st = r.status();
    let running = st["services"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|s| s["state"] == "running").count());
    println!("running (status):    {running}");
    let errors = r
        .stderr()
        .lines()
        .filter(|l| l.contains("cannot start"))
        .count();
    println!("'cannot start' lines: {errors}");
}
