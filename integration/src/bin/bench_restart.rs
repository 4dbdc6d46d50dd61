//! Benchmark (not a test): tether-restarter's restart latency and its cost
//! with many services.
//!
//! Part 1 — restart latency, `restart_delay = "0s"`, KILLS kills (default
//! 1000) of one service. The service is this program in `--service SOCK`
//! mode: at start it sends its pid in one datagram to SOCK, then parks.
//! For each kill, measured from just before `kill(pid, SIGKILL)`:
//! - *running again*: the datagram of the new pid arrives (includes the
//!   kernel's exit, SIGCHLD, the restarter's reap and fork/exec, and the new
//!   process's own start-up until its first system call of its own);
//! - *detected*: the restarter's `service bench exited` syslog line arrives
//!   on the test's syslog socket (the restarter logs right after reaping and
//!   draining the service's output);
//! - *spawned*: the `service bench started (pid N)` line arrives (fork and
//!   exec returned in the restarter).
//!
//! Part 2 — SERVICES services (default 1000) of `sleep infinity`, default
//! timings (`beat_interval = 1s`): time from the restarter's launch until
//! its state file lists every service running; its VmRSS, Pss
//! (`smaps_rollup`) and descriptors; then over IDLE seconds (default 60) of
//! idleness its CPU time (`utime + stime`) and wake-ups (voluntary plus
//! involuntary context switches); then the time a `SIGTERM` takes to stop
//! everything.
//!
//! Run (as root): `cargo build --release --workspace --bins &&
//! target/release/bench_restart [KILLS] [SERVICES] [IDLE_SECONDS]`.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use tether_integration::svc::Restarter;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--service") {
        service(&args[2]);
    }
    let kills: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let services: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let idle: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(60);
    restart_latency(kills);
    many_services(services, idle);
}

/// `--service SOCK`: announce the pid, then do nothing.
fn service(sock: &str) -> ! {
    let s = UnixDatagram::unbound().expect("socket");
    let _ = s.send_to(std::process::id().to_string().as_bytes(), sock);
    loop {
        std::thread::park();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "  {name:<14} n={:<5} p50 {:>8.0} us  p90 {:>8.0} us  p99 {:>8.0} us  max {:>8.0} us",
        v.len(),
        us(percentile(&v, 0.5)),
        us(percentile(&v, 0.9)),
        us(percentile(&v, 0.99)),
        us(*v.last().unwrap())
    );
}

fn restart_latency(kills: usize) {
    let me = std::env::current_exe().expect("current_exe");
    let b = Restarter::builder("bench-restart").timing("beat_interval = \"1s\"");
    let sock_path = b.dir().join("announce.sock");
    let announce = UnixDatagram::bind(&sock_path).expect("bind announce socket");
    announce
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let r = b
        .service(
            "bench",
            &format!(
                "exec = [\"{}\", \"--service\", \"{}\"]\nrestart_delay = \"0s\"\n",
                me.display(),
                sock_path.display()
            ),
        )
        .arg("--no-cgroup")
        .start();
    let mut buf = [0u8; 64];
    let recv_pid = |buf: &mut [u8]| -> i32 {
        let n = announce.recv(buf).expect("announce datagram (timed out?)");
        std::str::from_utf8(&buf[..n]).unwrap().parse().unwrap()
    };
    let mut pid = recv_pid(&mut buf);
    // Let the first start settle.
    std::thread::sleep(Duration::from_millis(200));
    let mut running = Vec::with_capacity(kills);
    let mut kill_times = Vec::with_capacity(kills);
    let mut new_pids = Vec::with_capacity(kills);
    for _ in 0..kills {
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let new = recv_pid(&mut buf);
        running.push(t0.elapsed());
        assert_ne!(new, pid);
        kill_times.push(t0);
        new_pids.push(new);
        pid = new;
        // A little idle time between kills, as a real crash would have.
        std::thread::sleep(Duration::from_millis(2));
    }
    // Pair each kill with its log lines (in order).
    std::thread::sleep(Duration::from_millis(300));
    let exited = r.log.matching("service bench exited");
    let started: Vec<_> = r
        .log
        .matching("service bench started")
        .into_iter()
        .skip(1)
        .collect();
    let mut detected = Vec::new();
    let mut spawned = Vec::new();
    for (i, t0) in kill_times.iter().enumerate() {
        if let Some(l) = exited.get(i) {
            detected.push(l.at.saturating_duration_since(*t0));
        }
        if let Some(l) = started.get(i) {
            if l.text.contains(&format!("(pid {})", new_pids[i])) {
                spawned.push(l.at.saturating_duration_since(*t0));
            }
        }
    }
    println!("restart latency, restart_delay = 0s, {kills} kills (SIGKILL to the service):");
    report("running again", running);
    if detected.len() == kills {
        report("detected", detected);
    } else {
        println!(
            "  detected: {} of {kills} log lines received (syslog drops)",
            detected.len()
        );
    }
    if spawned.len() == kills {
        report("spawned", spawned);
    } else {
        println!("  spawned: {} of {kills} log lines matched", spawned.len());
    }
    drop(r);
}

fn proc_field(pid: i32, file: &str, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
    // utime and stime: fields 14 and 15, i.e. 11 and 12 after the state.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn switches(pid: i32) -> u64 {
    proc_field(pid, "status", "voluntary_ctxt_switches:")
        + proc_field(pid, "status", "nonvoluntary_ctxt_switches:")
}

fn many_services(n: usize, idle: u64) {
    let mut b = Restarter::builder("bench-many").timing("beat_interval = \"1s\"");
    for i in 0..n {
        b = b.service(
            &format!("s{i:04}"),
            "exec = [\"/bin/sleep\", \"infinity\"]\n",
        );
    }
    let t0 = Instant::now();
    let mut r = b.arg("--no-cgroup").start();
    let pid = r.pid();
    let deadline = t0 + Duration::from_secs(120);
    loop {
        if r.state_entries().len() >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all {n} services started within 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let start_all = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let rss = proc_field(pid, "status", "VmRSS:");
    let hwm = proc_field(pid, "status", "VmHWM:");
    let pss = proc_field(pid, "smaps_rollup", "Pss:");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!("{n} services (sleep infinity), beat_interval = 1s:");
    println!(
        "  start all (launch to state file listing all): {:.0} ms",
        start_all.as_secs_f64() * 1e3
    );
    println!("  restarter VmRSS {rss} KiB, VmHWM {hwm} KiB, Pss {pss} KiB, {fds} descriptors");
    let tick = 100.0; // USER_HZ
    let (c0, w0, i0) = (cpu_ticks(pid), switches(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(idle));
    let (c1, w1, secs) = (cpu_ticks(pid), switches(pid), i0.elapsed().as_secs_f64());
    println!(
        "  idle {secs:.0} s: CPU {:.2} s ({:.3} %), {:.2} wake-ups/s",
        (c1 - c0) as f64 / tick,
        (c1 - c0) as f64 / tick / secs * 100.0,
        (w1 - w0) as f64 / secs
    );
    let t = Instant::now();
    let st = r.stop(Duration::from_secs(120));
    println!(
        "  SIGTERM to exit ({st}): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}
