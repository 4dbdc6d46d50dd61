//! Benchmark (not a test): the cost of an idle tether-watchdogd.
//!
//! Runs watchdogd on the built-in default timings (beat 1 s, hardware 30 s)
//! against the simulated device, with two layers beating once a second, and
//! prints its resident memory (VmRSS, VmHWM), CPU time (utime + stime) and
//! wake-ups per second (voluntary context switches) over the measured span.
//!
//! ```text
//! CARGO_TARGET_DIR=target/wd cargo build --release -p tether-watchdogd \
//!     -p tether-integration --bin tether-watchdogd --bin bench_watchdogd
//! target/wd/release/bench_watchdogd [SECONDS] [PATH-TO-tether-watchdogd]
//! ```
//! (defaults: 60 s, the `tether-watchdogd` beside this binary).

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tether_integration::bins;
use tether_integration::hw::{RigOptions, Timings, WatchdogdRig};

struct Sample {
    rss_kib: u64,
    hwm_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    pss_kib: u64,
    cpu_ns: u64,
    voluntary: u64,
    involuntary: u64,
    cpu_ticks: u64,
}

fn field(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn sample(pid: i32) -> Sample {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", pid)).expect("read /proc/PID/status");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid)).expect("read /proc/PID/stat");
    // Fields after the command name: state is field 3; utime 14, stime 15.
    let after = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", pid)).unwrap_or_default();
    // First field of schedstat: time on CPU in nanoseconds (finer than ticks).
    let cpu_ns = std::fs::read_to_string(format!("/proc/{}/schedstat", pid))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    Sample {
        rss_kib: field(&status, "VmRSS:"),
        hwm_kib: field(&status, "VmHWM:"),
        anon_kib: field(&status, "RssAnon:"),
        file_kib: field(&status, "RssFile:"),
        pss_kib: field(&rollup, "Pss:"),
        cpu_ns,
        voluntary: field(&status, "voluntary_ctxt_switches:"),
        involuntary: field(&status, "nonvoluntary_ctxt_switches:"),
        cpu_ticks: ticks(14) + ticks(15),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let bin = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| bins::bin("tether-watchdogd"));
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;

    let opts = RigOptions {
        timings: Timings::defaults(),
        ..RigOptions::default()
    };
    let r = WatchdogdRig::start(&bin, "bench-watchdogd", opts);
    // Warm up: start-up work (config, device, records) is not idle cost.
    std::thread::sleep(Duration::from_secs(3));
    let pid = r.pid();
    let beats0: usize = ["init", "restarter"]
        .iter()
        .map(|l| r.beater.beats(l))
        .sum();
    let pets0 = r.sim().pet_count();
    let a = sample(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let b = sample(pid);
    let span = t0.elapsed().as_secs_f64();
    let beats: usize = ["init", "restarter"]
        .iter()
        .map(|l| r.beater.beats(l))
        .sum::<usize>()
        - beats0;
    let pets = r.sim().pet_count() - pets0;
    let init_beats = r.to_init.drain();

    let cpu_ms = (b.cpu_ticks - a.cpu_ticks) as f64 * 1000.0 / hz;
    let wakeups = (b.voluntary - a.voluntary) as f64;
    println!(
        "tether-watchdogd idle benchmark: {} ({})",
        bin.display(),
        if cfg!(debug_assertions) {
            "bench built in debug"
        } else {
            "release"
        }
    );
    println!(
        "span                 {:.1} s, 2 layers beating every 1 s, defaults (hardware 30 s)",
        span
    );
    println!(
        "VmRSS                {} KiB (VmHWM {} KiB; anonymous {} KiB, file-backed {} KiB; PSS {} KiB)",
        b.rss_kib, b.hwm_kib, b.anon_kib, b.file_kib, b.pss_kib
    );
    println!(
        "CPU (utime+stime)    {:.0} ms over the span (clock ticks of {:.0} ms)",
        cpu_ms,
        1000.0 / hz
    );
    let run_ms = (b.cpu_ns - a.cpu_ns) as f64 / 1e6;
    println!(
        "CPU (schedstat)      {:.2} ms over the span = {:.4} % of one core",
        run_ms,
        run_ms / span / 10.0
    );
    println!(
        "wake-ups             {:.2}/s (voluntary ctxt switches {}; involuntary {})",
        wakeups / span,
        b.voluntary - a.voluntary,
        b.involuntary - a.involuntary
    );
    println!(
        "beats received       {:.2}/s ({} over the span)",
        beats as f64 / span,
        beats
    );
    println!(
        "pets sent            {:.2}/s ({})",
        pets as f64 / span,
        pets
    );
    println!(
        "beats to init        {} (since start, incl. warm-up)",
        init_beats
    );
    println!(
        "budget               beats received + timer turns = {:.2}/s",
        (beats + pets) as f64 / span
    );
    let resets = r.sim().resets().len();
    if resets > 0 {
        println!("WARNING: the simulated hardware reset {} time(s)", resets);
    }
}
