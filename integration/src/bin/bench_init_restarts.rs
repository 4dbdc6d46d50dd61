//! Benchmark (not a test): tether-init's resident memory after start and
//! while it restarts a layer child 10,000 times.
//!
//! init runs as PID 1 of a PID namespace with fake layers: a
//! `tether-watchdogd` that exits at once (a crash loop) and a
//! `tether-restarter` that beats. `restart_delay` is at its minimum (`0s`)
//! and the budget window tiny (`1ms`), so the crash loop never exhausts it.
//! VmRSS and VmHWM of init are printed at start and every 1,000 restarts;
//! DESIGN.md asks for no growth after start-up.
//!
//! Run: `cargo build --workspace --bins && target/debug/bench_init_restarts
//! [RESTARTS]` (as root; release builds: `--release` for both).

use std::time::{Duration, Instant};
use tether_integration::chain::{vm_rss_kib, Chain, ChainOptions, FakeLayer, InitSettings};
use tether_integration::hw::Timings;

fn status_kib(pid: i32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{}/status", pid)).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let target: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let ms = Duration::from_millis;
    let opts = ChainOptions {
        timings: Timings {
            beat_interval: ms(100),
            hang_timeout: ms(1000),
            restart_delay: ms(0),
            startup_grace: ms(500),
            stale_timeout: ms(2000),
            hardware_timeout: ms(3000),
            liveness_interval: ms(60_000),
        },
        init: InitSettings {
            max_restarts: 64,
            window: ms(1),
            ..InitSettings::default()
        },
        fake: Some((FakeLayer::Crasher, FakeLayer::beater(ms(100)))),
        hardware: false,
        ..ChainOptions::default()
    };
    let chain = Chain::start("bench-init-restarts", opts);
    let init = chain.init_pid();
    let t0 = Instant::now();
    let starts = || chain.fake_starts("watchdogd").len();
    // "After start": once the first restarts have happened.
    while starts() < 10 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no crash loop:\n{}",
            chain.dump()
        );
        std::thread::sleep(ms(50));
    }
    let rss0 = vm_rss_kib(init).unwrap_or(0);
    println!(
        "init pid {} (host); restart_delay 0s; target {} restarts",
        init, target
    );
    println!(
        "{:>9} {:>10} {:>10} {:>9}",
        "restarts", "VmRSS kB", "VmHWM kB", "elapsed"
    );
    println!(
        "{:>9} {:>10} {:>10} {:>8.1}s",
        starts() - 1,
        rss0,
        status_kib(init, "VmHWM:").unwrap_or(0),
        t0.elapsed().as_secs_f64()
    );
    let mut next = 1000;
    let mut last = rss0;
    while next <= target {
        let n = starts().saturating_sub(1);
        if n >= next {
            last = vm_rss_kib(init).unwrap_or(0);
            println!(
                "{:>9} {:>10} {:>10} {:>8.1}s",
                n,
                last,
                status_kib(init, "VmHWM:").unwrap_or(0),
                t0.elapsed().as_secs_f64()
            );
            next += 1000;
        } else {
            assert!(
                chain.layer("tether-restarter").is_some(),
                "the restarter died:\n{}",
                chain.dump()
            );
            std::thread::sleep(ms(200));
        }
    }
    let exhausted = chain.syslog(&["exhausted its restart budget"]).len();
    println!(
        "VmRSS after start {} kB, after {} restarts {} kB (growth {} kB); budget exhaustions {}",
        rss0,
        target,
        last,
        last as i64 - rss0 as i64,
        exhausted
    );
}
