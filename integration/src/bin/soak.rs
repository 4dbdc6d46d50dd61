//! Soak (issue #5; a benchmark-style program that prints figures, not a
//! test): the real chain under `tether-init` as PID 1 of a PID namespace
//! (`chain::Chain`, simulated watchdog hardware on), then
//!
//! 1. a crashing service (`/bin/true`, `restart_delay = "0s"`, no window
//!    limit) restarted SERVICE_RESTARTS times (default 100,000), counted
//!    from `tetherctl status --json`;
//! 2. the restarter killed with `SIGKILL` RESTARTER_KILLS times (default
//!    1,000), each time waiting until init's new restarter answers
//!    `tetherctl status` with a steady `sleep` service running under a new
//!    pid (so every restart is a whole one: the previous restarter's
//!    services swept, then started again). init's budget allows it: `restart_delay`
//!    0 s (the minimum), `max_restarts` 100,000 within a 1 s window.
//!
//! VmRSS and open descriptors (`/proc/PID/fd`) of init, the restarter and
//! watchdogd are printed at the start (after 1,000 restarts of warm-up:
//! DESIGN.md asks for no growth *after start-up*), at every tenth of each phase, and at
//! the end, with the verdict, per process (its first sample against its
//! last under the same pid): descriptor counts must be equal, resident
//! memory must not grow by more than 64 KiB (allocator noise).
//! The hardware must not fire (petting goes on throughout).
//!
//! Run (as root), release build:
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/soak [SERVICE_RESTARTS] [RESTARTER_KILLS] [MAX_MINUTES]
//! ```
//!
//! MAX_MINUTES (default 10) bounds each phase: a phase that has not reached
//! its count by then stops and says how far it got. Exit status 1 when a
//! descriptor count or the resident memory grew, or the hardware fired.

use std::time::{Duration, Instant};
use tether_integration::chain::{vm_rss_kib, Chain, ChainOptions, InitSettings};
use tether_integration::hw::Timings;

/// Resident memory growth tolerated (allocator and page noise).
const RSS_SLACK_KIB: u64 = 64;

#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    pid: i32,
    rss_kib: u64,
    fds: usize,
}

fn figures(pid: Option<i32>) -> Figures {
    let Some(pid) = pid else {
        return Figures::default();
    };
    // The fewest of a few readings: a service being spawned holds two
    // pipe ends for a moment, a control client one socket.
    let fds = (0..10)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(30));
            }
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .min()
        .unwrap_or(0);
    Figures {
        pid,
        rss_kib: vm_rss_kib(pid).unwrap_or(0),
        fds,
    }
}

struct Sample {
    label: String,
    elapsed: Duration,
    init: Figures,
    restarter: Figures,
    watchdogd: Figures,
}

struct Soak {
    chain: Chain,
    t0: Instant,
    samples: Vec<Sample>,
}

impl Soak {
    fn sample(&mut self, label: &str) {
        let s = Sample {
            label: label.to_string(),
            elapsed: self.t0.elapsed(),
            init: figures(Some(self.chain.init_pid())),
            restarter: figures(self.chain.layer("tether-restarter")),
            watchdogd: figures(self.chain.layer("tether-watchdogd")),
        };
        println!(
            "{:<26} {:>8.1}s | init {:>6} kB {:>3} fds | restarter {:>6} kB {:>3} fds | watchdogd {:>6} kB {:>3} fds",
            s.label,
            s.elapsed.as_secs_f64(),
            s.init.rss_kib,
            s.init.fds,
            s.restarter.rss_kib,
            s.restarter.fds,
            s.watchdogd.rss_kib,
            s.watchdogd.fds
        );
        self.samples.push(s);
    }

    fn status(&self) -> Option<serde_json::Value> {
        let out = self.chain.tetherctl(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Restarts of the crashing service, from the current restarter.
    fn crash_restarts(&self) -> Option<u64> {
        self.status()?["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "crasher")?["restarts"]
            .as_u64()
    }

    /// The pid of the steady service while it runs.
    fn steady_pid(&self) -> Option<i64> {
        let st = self.status()?;
        let s = st["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "steady")?
            .clone();
        (s["state"] == "running").then(|| s["pid"].as_i64())?
    }

    fn hardware_fired(&self) -> bool {
        self.chain
            .hw
            .as_ref()
            .is_some_and(|hw| !hw.resets().is_empty())
    }
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `run` owns the chain: it is dropped (the namespace killed) before
    // the process exits.
    std::process::exit(run());
}

/// The soak; its exit status.
fn run() -> i32 {
    let service_restarts = arg(1, 100_000);
    let restarter_kills = arg(2, 1_000);
    let max_phase = Duration::from_secs(arg(3, 10) * 60);
    let ms = Duration::from_millis;
    let opts = ChainOptions {
        timings: Timings {
            beat_interval: ms(100),
            hang_timeout: ms(1000),
            restart_delay: ms(0),
            startup_grace: ms(500),
            stale_timeout: ms(2000),
            hardware_timeout: ms(3000),
            liveness_interval: ms(10_000),
        },
        init: InitSettings {
            max_restarts: 100_000,
            window: ms(1000),
            ..InitSettings::default()
        },
        services: vec![
            (
                "crasher".into(),
                "exec = [\"/bin/true\"]\nrestart_delay = \"0s\"\n".into(),
            ),
            (
                "steady".into(),
                "exec = [\"/bin/sleep\", \"86400\"]\nrestart_delay = \"100ms\"\n".into(),
            ),
        ],
        ..ChainOptions::default()
    };
    let chain = Chain::start("soak", opts);
    let mut soak = Soak {
        chain,
        t0: Instant::now(),
        samples: Vec::new(),
    };
    // Up: both layers, status answering, the crash loop going.
    let up = Instant::now();
    // The baseline is taken after start-up: 1,000 restarts of warm-up
    // (allocator arenas, buffers reaching their working size).
    while soak.crash_restarts().unwrap_or(0) < 1000 {
        if up.elapsed() > Duration::from_secs(60) {
            eprintln!("soak: the chain did not come up:\n{}", soak.chain.dump());
            return 2;
        }
        std::thread::sleep(ms(100));
    }
    println!(
        "soak: crashing service x {service_restarts}, restarter SIGKILL x {restarter_kills}; at most {} min a phase",
        max_phase.as_secs() / 60
    );
    soak.sample("start");

    // Phase 1: the crash loop.
    let p1 = Instant::now();
    let base = soak.crash_restarts().unwrap_or(0);
    let mut next_mark = 1;
    let mut done = 0;
    while done < service_restarts {
        std::thread::sleep(ms(250));
        if let Some(n) = soak.crash_restarts() {
            done = n - base;
        }
        if done * 10 >= next_mark * service_restarts && next_mark < 10 {
            soak.sample(&format!("{done} service restarts"));
            next_mark = done * 10 / service_restarts + 1;
        }
        if p1.elapsed() > max_phase {
            println!("soak: phase 1 stopped at its time limit");
            break;
        }
        if soak.hardware_fired() {
            break;
        }
    }
    let p1_time = p1.elapsed();
    println!(
        "soak: {done} service restarts in {:.1}s ({:.0}/s)",
        p1_time.as_secs_f64(),
        done as f64 / p1_time.as_secs_f64()
    );
    soak.sample(&format!("{done} service restarts"));

    // Phase 2: the restarter killed again and again.
    let p2 = Instant::now();
    let mut kills = 0u64;
    let mut slowest = Duration::ZERO;
    let kill_step = (restarter_kills / 10).max(1);
    let mut next_kill_mark = kill_step;
    while kills < restarter_kills && p2.elapsed() < max_phase && !soak.hardware_fired() {
        let Some(old) = soak.chain.layer("tether-restarter") else {
            std::thread::sleep(ms(10));
            continue;
        };
        let Some(steady) = soak.steady_pid() else {
            std::thread::sleep(ms(10));
            continue;
        };
        let k = Instant::now();
        tether_integration::chain::signal(old, nix::sys::signal::Signal::SIGKILL);
        kills += 1;
        if soak
            .chain
            .wait_layer("tether-restarter", Some(old), Duration::from_secs(30))
            .is_none()
        {
            eprintln!(
                "soak: no new restarter after kill {kills}:\n{}",
                soak.chain.dump()
            );
            return 2;
        }
        // Whole: answering control, the previous services swept and
        // started again (the steady service has a new pid).
        while soak.steady_pid().unwrap_or(steady) == steady {
            if k.elapsed() > Duration::from_secs(30) {
                eprintln!("soak: the new restarter does not answer (kill {kills})");
                return 2;
            }
            std::thread::sleep(ms(5));
        }
        slowest = slowest.max(k.elapsed());
        if kills >= next_kill_mark {
            next_kill_mark += kill_step;
            soak.sample(&format!("{kills} restarter kills"));
        }
    }
    let p2_time = p2.elapsed();
    println!(
        "soak: {kills} restarter kills in {:.1}s ({:.0} ms each, slowest {} ms)",
        p2_time.as_secs_f64(),
        p2_time.as_millis() as f64 / kills.max(1) as f64,
        slowest.as_millis()
    );
    // The last restarter settles, then the final figures.
    std::thread::sleep(Duration::from_secs(2));
    soak.sample("end");

    // Growth is judged per process: each one's first sample against its
    // last sample under the same pid (init and watchdogd live through the
    // whole soak; the restarter of the baseline through phase 1; in phase
    // 2 each restarter is a fresh one, whose figures are shown as a range).
    let mut grew = Vec::new();
    type Pick = fn(&Sample) -> Figures;
    let layers: [(&str, Pick); 3] = [
        ("init", |s| s.init),
        ("restarter", |s| s.restarter),
        ("watchdogd", |s| s.watchdogd),
    ];
    for (name, pick) in layers {
        let a = pick(&soak.samples[0]);
        let same: Vec<&Sample> = soak
            .samples
            .iter()
            .filter(|s| pick(s).pid == a.pid)
            .collect();
        let b = pick(same.last().expect("the first sample"));
        let max_rss = same.iter().map(|s| pick(s).rss_kib).max().unwrap_or(0);
        let max_fds = same.iter().map(|s| pick(s).fds).max().unwrap_or(0);
        println!(
            "{name:<10} pid {} over {} samples ({:.0}s): VmRSS {} -> {} kB (max {max_rss}), fds {} -> {} (max {max_fds})",
            a.pid,
            same.len(),
            (same.last().expect("first").elapsed - soak.samples[0].elapsed).as_secs_f64(),
            a.rss_kib,
            b.rss_kib,
            a.fds,
            b.fds
        );
        if b.fds != a.fds {
            grew.push(format!("{name} descriptors {} -> {}", a.fds, b.fds));
        }
        if b.rss_kib > a.rss_kib + RSS_SLACK_KIB {
            grew.push(format!("{name} VmRSS {} -> {} kB", a.rss_kib, b.rss_kib));
        }
        let later: Vec<Figures> = soak
            .samples
            .iter()
            .map(pick)
            .filter(|f| f.pid != a.pid && f.pid != 0)
            .collect();
        if !later.is_empty() {
            let rss = later.iter().map(|f| f.rss_kib);
            let fds = later.iter().map(|f| f.fds);
            println!(
                "{name:<10} {} later instances: VmRSS {}..{} kB, fds {}..{}",
                later.len(),
                rss.clone().min().unwrap_or(0),
                rss.max().unwrap_or(0),
                fds.clone().min().unwrap_or(0),
                fds.max().unwrap_or(0)
            );
        }
    }
    let fired = soak.hardware_fired();
    println!(
        "soak: {:.1}s in all; hardware {}",
        soak.t0.elapsed().as_secs_f64(),
        if fired { "FIRED" } else { "never fired" }
    );
    if grew.is_empty() && !fired {
        println!("soak: no growth");
        0
    } else {
        println!("soak: FAILED: {}", grew.join("; "));
        1
    }
}
