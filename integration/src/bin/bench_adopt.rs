//! Benchmark (not a test): with N services (default 1000) under the whole
//! chain (`tether-init` as PID 1 of a PID namespace), the restarter is
//! killed (`SIGKILL`) R times (default 5); each time, the time from its
//! death to the new restarter's `adoption done` line (every service
//! adopted and supervised), then checks: every pid unchanged, no service
//! restarted, the hardware never fired, init never found the restarter
//! silent. Prints p50 and max.
//!
//! Run: `cargo build --workspace --bins && target/debug/bench_adopt [N]
//! [RUNS]` (as root).

use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tether_integration::chain::{signal, wait_until, Chain, ChainOptions};
use tether_integration::hw::Timings;

fn pids(chain: &Chain) -> Option<BTreeMap<String, (i64, i64)>> {
    let out = chain.tetherctl(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["services"]
        .as_array()?
        .iter()
        .map(|s| {
            Some((
                s["name"].as_str()?.to_string(),
                (s["pid"].as_i64()?, s["restarts"].as_i64()?),
            ))
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let long = Duration::from_secs(120);
    let services = (0..n)
        .map(|i| {
            (
                format!("s{i:04}"),
                format!(
                    "exec = [\"/bin/sleep\", \"{}\"]\nrestart_delay = \"100ms\"\n",
                    900_000 + i
                ),
            )
        })
        .collect();
    let chain = Chain::start(
        "bench-adopt",
        ChainOptions {
            timings: Timings::chain(),
            services,
            ..ChainOptions::default()
        },
    );
    let before = wait_until(long, || pids(&chain).filter(|m| m.len() == n))
        .unwrap_or_else(|| panic!("{n} services not up:\n{}", chain.dump()));
    let mut took = Vec::new();
    for run in 0..runs {
        let rst = chain
            .wait_layer("tether-restarter", None, long)
            .expect("restarter");
        std::thread::sleep(Duration::from_millis(1500));
        let t0 = Instant::now();
        assert!(signal(rst, Signal::SIGKILL));
        let line = wait_until(long, || {
            chain
                .syslog(&["adoption done"])
                .into_iter()
                .find(|l| l.at >= t0)
        })
        .unwrap_or_else(|| panic!("run {run}: no adoption:\n{}", chain.dump()));
        assert!(
            line.text.contains(&format!("{n} service(s) adopted")),
            "{}",
            line.text
        );
        let d = line.at - t0;
        let after = wait_until(long, || pids(&chain).filter(|m| m.len() == n)).expect("status");
        let changed = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .count();
        eprintln!(
            "run {run}: all {n} adopted {} ms after the restarter's death; {changed} service(s) with another pid or restart count",
            d.as_millis()
        );
        assert_eq!(changed, 0);
        took.push(d);
    }
    let hw = chain.hw.as_ref().expect("hardware");
    let silent = chain.syslog(&["tether-init", "restarter", "silent"]);
    took.sort();
    println!(
        "FIGURE adopt {n} services over {runs} runs: p50 {} ms, max {} ms; services restarted 0; hardware resets {}; init found the restarter silent {} time(s)",
        took[took.len() / 2].as_millis(),
        took[took.len() - 1].as_millis(),
        hw.resets().len(),
        silent.len()
    );
}
