//! Figures for docs/FLEET.md (issue 16): what one box sends to syslog and
//! how many series it exposes, at default settings.
//!
//!   cargo build --release -p tether-integration --bin bench_syslog_volume \
//!     && target/release/bench_syslog_volume [--minutes M] [--services N] [--format rfc3164|rfc5424]
//!
//! Runs a whole chain (tether-init as PID 1 of a namespace, the simulated
//! watchdog) with the default timings (beat 1 s, liveness 60 s, ...), N
//! quiet services (`sleep`: they print nothing, so only tether's own lines
//! count) and `[metrics] textfile_dir` set, for M minutes after a warm-up
//! of 10 s (start-up lines are counted separately: once per boot). Prints
//! lines and bytes received on the syslog socket, by MSGID (5424) or
//! per application, extrapolated to one hour, and the series in
//! `tether.prom`. Build the workspace's binaries first (release or debug:
//! the chain uses those beside this one).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tether_integration::bins::TempDir;
use tether_integration::chain::{Chain, ChainOptions};
use tether_integration::hw::Timings;

fn main() {
    let mut minutes = 10.0f64;
    let mut services = 10usize;
    let mut format = "rfc3164".to_string();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--minutes" => minutes = v().parse().expect("--minutes M"),
            "--services" => services = v().parse().expect("--services N"),
            "--format" => format = v(),
            _ => {
                eprintln!("usage: bench_syslog_volume [--minutes M] [--services N] [--format rfc3164|rfc5424]");
                std::process::exit(2);
            }
        }
    }
    let s = Duration::from_secs;
    let timings = Timings {
        beat_interval: s(1),
        hang_timeout: s(10),
        restart_delay: s(1),
        startup_grace: s(5),
        stale_timeout: s(20),
        hardware_timeout: s(30),
        liveness_interval: s(60),
    };
    let textfile = TempDir::new("volume-textfile");
    let config_text = format!(
        "{}\n[log]\nformat = {format:?}\n[metrics]\ntextfile_dir = {:?}\n",
        timings.toml(),
        textfile.path().display().to_string()
    );
    let mut chain = Chain::start(
        "volume",
        ChainOptions {
            timings,
            config_text: Some(config_text),
            paths_as_flags: true,
            env: vec![("TETHER_LOG_FORMAT".into(), format.clone())],
            services: (0..services)
                .map(|i| {
                    (
                        format!("svc{i:02}"),
                        "exec = [\"/bin/sleep\", \"100000\"]\n".to_string(),
                    )
                })
                .collect(),
            ..ChainOptions::default()
        },
    );
    std::thread::sleep(s(10));
    let startup = chain.syslog(&[]);
    let t0 = Instant::now();
    let window = Duration::from_secs_f64(minutes * 60.0);
    std::thread::sleep(window);
    let all = chain.syslog(&[]);
    let took = t0.elapsed();
    let steady = &all[startup.len()..];
    let key = |t: &str| -> String {
        if format == "rfc5424" {
            // <PRI>1 TIME HOST APP PID MSGID
            let f: Vec<&str> = t.splitn(7, ' ').collect();
            format!("{} {}", f.get(3).unwrap_or(&"?"), f.get(5).unwrap_or(&"?"))
        } else {
            t.split_once('>')
                .and_then(|(_, r)| r.split_once('['))
                .map_or("?".to_string(), |(tag, _)| tag.to_string())
        }
    };
    let per_hour = 3600.0 / took.as_secs_f64();
    let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for l in steady {
        let e = by.entry(key(&l.text)).or_default();
        e.0 += 1;
        e.1 += l.text.len();
    }
    let lines: usize = steady.len();
    let bytes: usize = steady.iter().map(|l| l.text.len()).sum();
    let start_bytes: usize = startup.iter().map(|l| l.text.len()).sum();
    println!(
        "format {format}, {services} quiet services, default timings, measured {:.1} min",
        took.as_secs_f64() / 60.0
    );
    println!(
        "start-up (first 10 s, once per boot): {} lines, {} bytes",
        startup.len(),
        start_bytes
    );
    println!(
        "steady: {lines} lines, {bytes} bytes in the window = {:.0} lines/h, {:.0} bytes/h per box (mean line {:.0} bytes)",
        lines as f64 * per_hour,
        bytes as f64 * per_hour,
        if lines > 0 { bytes as f64 / lines as f64 } else { 0.0 }
    );
    for (k, (n, b)) in &by {
        println!(
            "  {k}: {:.0} lines/h, {:.0} bytes/h",
            *n as f64 * per_hour,
            *b as f64 * per_hour
        );
    }
    let prom = std::fs::read_to_string(textfile.join("tether.prom")).unwrap_or_default();
    let series = prom
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    println!(
        "tether.prom: {series} series, {} bytes ({services} services)",
        prom.len()
    );
    chain.kill();
}
