//! Benchmark (not a test; issue #7): tether's restarter against runit and
//! s6 on the same generated services, each supervisor as PID 1 of a PID
//! namespace of its own. Prints figures; asserts no target.
//!
//! Workloads (see `workload`): start time, memory (VmRSS, Pss) and idle cost
//! (CPU time, context switches) of the supervision processes for each N,
//! restart latency after `SIGKILL` (p50/p99/max over KILLS kills,
//! round-robin over a pool of services each up > 1 s), tether's death →
//! detection (its `exited` syslog line), and a storm (all N killed at
//! once; tether's heartbeat pipes are timed meanwhile), and a root kill
//! (`rootkill`: the supervisor's root killed and brought back as its init
//! would, with N services: services restarted, time until supervision is
//! whole again).
//!
//! Every service is the static `bench_blocker`, which reports its start
//! (pid, monotonic time) on a datagram socket: the same cost under every
//! supervisor. Modules: `adapter` (the common trait) with `tether`,
//! `runit`, `s6`, `floor`; `ns` (namespaces); `events` (what is observed);
//! `procfs` (memory, CPU); `workload`; `stats`; `report`.
//!
//! Run as root: `./bench.sh` (installs runit and s6, builds, runs, writes
//! `target/bench/results.md`), or
//! `bench_supervisors --blocker PATH [options]`; `--help` lists them.
//!
//! Decisions:
//! - The benchmark moves itself into a private network namespace at start
//!   and raises `net.unix.max_dgram_qlen` there (host default 10): the
//!   sockets it reads then queue 1000 datagrams without touching the host.
//!   Supervisors inherit it (none needs a network).
//! - Runs interleave the supervisors (run 1 of each, then run 2...), so
//!   slow drifts of a shared machine hit all alike.
//! - tether runs without cgroups (`--no-cgroup`) unless `--tether-cgroups`:
//!   runit and s6 use none.

mod adapter;
mod events;
mod floor;
mod ns;
mod procfs;
mod report;
mod rootkill;
mod runit;
mod s6;
mod stats;
mod tether;
mod workload;

use adapter::{Common, Supervisor};
use report::{Context, Results};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use workload::KillPlan;

const USAGE: &str = "usage: bench_supervisors [options]
  --blocker PATH          the static bench_blocker (default: beside this program)
  --restarter PATH        tether-restarter (default: beside this program)
  --runsvdir PATH         (default: runsvdir in PATH)
  --s6-svscan PATH        (default: s6-svscan in PATH)
  --n LIST                service counts, comma-separated (default 10,100,1000)
  --runs R                runs per figure, the median is reported (default 3)
  --idle SECS             idle period measured (default 30)
  --kills K               kills per restart run (default 500)
  --pool P                services killed round-robin (default 100)
  --min-up-ms MS          a victim has been up at least this long (default 1200)
  --kill-gap-ms MS        pause after each replacement (default 5)
  --beat-interval-ms MS   tether's beat_interval (default 1000)
  --supervisors LIST      of tether,runit,s6,floor,tether-1s (default: all)
  --workloads LIST        of lifecycle,restarts,rootkill (default: all)
  --root-kill-n N         services in the root-kill workload (default: the largest of --n)
  --probes K              services killed right after the root (default 10)
  --floor-fds K           the floor also holds K close-on-exec descriptors (experiment)
  --direct-run            runit/s6 run files are symlinks to the blocker (no /bin/sh)
  --tether-cgroups        let the restarter use cgroup v2 where available
  --no-netns              stay in the host network namespace
  --out FILE              also write the report there";

struct Args {
    blocker: PathBuf,
    restarter: PathBuf,
    runsvdir: PathBuf,
    svscan: PathBuf,
    ns: Vec<usize>,
    runs: usize,
    idle: Duration,
    plan: KillPlan,
    beat_interval: Duration,
    supervisors: Vec<String>,
    direct_run: bool,
    floor_fds: usize,
    tether_cgroups: bool,
    netns: bool,
    out: Option<PathBuf>,
    workloads: Vec<String>,
    root_kill_n: Option<usize>,
    probes: usize,
}

fn beside_me(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        blocker: beside_me("bench_blocker"),
        restarter: beside_me("tether-restarter"),
        runsvdir: PathBuf::from("runsvdir"),
        svscan: PathBuf::from("s6-svscan"),
        ns: vec![10, 100, 1000],
        runs: 3,
        idle: Duration::from_secs(30),
        plan: KillPlan {
            pool: 100,
            kills: 500,
            min_up: Duration::from_millis(1200),
            gap: Duration::from_millis(5),
        },
        beat_interval: Duration::from_secs(1),
        supervisors: ["tether", "runit", "s6", "floor", "tether-1s"]
            .map(String::from)
            .to_vec(),
        direct_run: false,
        floor_fds: 0,
        tether_cgroups: false,
        netns: true,
        out: None,
        workloads: ["lifecycle", "restarts", "rootkill"]
            .map(String::from)
            .to_vec(),
        root_kill_n: None,
        probes: 10,
    };
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        let num = |s: String| {
            s.parse::<u64>()
                .map_err(|_| format!("{arg}: not a number: {s}"))
        };
        match arg.as_str() {
            // Absolute: runit's and s6's run scripts start in the service
            // directory.
            "--blocker" => a.blocker = absolute(val()?)?,
            "--restarter" => a.restarter = absolute(val()?)?,
            "--runsvdir" => a.runsvdir = PathBuf::from(val()?),
            "--s6-svscan" => a.svscan = PathBuf::from(val()?),
            "--n" => {
                a.ns = val()?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<usize>()
                            .map_err(|_| format!("--n: not a number: {s}"))
                    })
                    .collect::<Result<_, _>>()?;
                if a.ns.contains(&0) {
                    return Err("--n: counts must be positive".into());
                }
            }
            "--runs" => a.runs = num(val()?)?.max(1) as usize,
            "--idle" => {
                a.idle =
                    Duration::from_secs_f64(val()?.parse().map_err(|_| "--idle: not a number")?)
            }
            "--kills" => a.plan.kills = num(val()?)? as usize,
            "--pool" => a.plan.pool = num(val()?)?.max(1) as usize,
            "--min-up-ms" => a.plan.min_up = Duration::from_millis(num(val()?)?),
            "--kill-gap-ms" => a.plan.gap = Duration::from_millis(num(val()?)?),
            "--beat-interval-ms" => a.beat_interval = Duration::from_millis(num(val()?)?.max(1)),
            "--supervisors" => {
                a.supervisors = val()?.split(',').map(|s| s.trim().to_string()).collect()
            }
            "--direct-run" => a.direct_run = true,
            "--floor-fds" => a.floor_fds = num(val()?)? as usize,
            "--tether-cgroups" => a.tether_cgroups = true,
            "--no-netns" => a.netns = false,
            "--out" => a.out = Some(PathBuf::from(val()?)),
            "--workloads" => {
                a.workloads = val()?.split(',').map(|s| s.trim().to_string()).collect()
            }
            "--root-kill-n" => a.root_kill_n = Some(num(val()?)?.max(1) as usize),
            "--probes" => a.probes = num(val()?)?.max(1) as usize,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for s in &a.supervisors {
        if !["tether", "runit", "s6", "floor", "tether-1s"].contains(&s.as_str()) {
            return Err(format!("--supervisors: unknown {s:?}"));
        }
    }
    for w in &a.workloads {
        if !["lifecycle", "restarts", "rootkill"].contains(&w.as_str()) {
            return Err(format!("--workloads: unknown {w:?}"));
        }
    }
    Ok(a)
}

/// `PATH` lookup (for the report and to fail early).
fn which(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.exists().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(p))
        .find(|c| c.exists())
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let version = |pkg: &str| {
        command_line("dpkg-query", &["-W", "-f=${Version}", pkg]).unwrap_or_else(|| "?".into())
    };
    let git =
        command_line("git", &["describe", "--always", "--dirty"]).unwrap_or_else(|| "?".into());
    vec![
        (
            "machine".into(),
            format!("{nproc} CPUs, {model}, Linux {kernel}"),
        ),
        ("runit".into(), version("runit")),
        ("s6".into(), version("s6")),
        (
            "tether".into(),
            format!("{} (git {git}), release build", env!("CARGO_PKG_VERSION")),
        ),
    ]
}

/// The first three fields of `/proc/loadavg`: how busy the machine was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--floor-supervisor") {
        let n = argv.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let blocker = PathBuf::from(argv.get(2).cloned().unwrap_or_default());
        let extra = argv.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
        std::process::exit(floor::run(n, &blocker, extra));
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench_supervisors: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let wall = Instant::now();
    let load_before = loadavg();
    let netns = if args.netns {
        match ns::private_network(4096) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("bench_supervisors: {e} (run as root, or pass --no-netns)");
                std::process::exit(1);
            }
        }
    } else {
        "host network namespace".into()
    };
    let common = Common {
        blocker: args.blocker.clone(),
        direct_run: args.direct_run,
    };
    let mut missing = Vec::new();
    let want = |s: &str| args.supervisors.iter().any(|x| x == s);
    for (name, path, needed) in [
        ("blocker", &args.blocker, true),
        (
            "tether-restarter",
            &args.restarter,
            want("tether") || want("tether-1s"),
        ),
        ("runsvdir", &args.runsvdir, want("runit")),
        ("s6-svscan", &args.svscan, want("s6")),
    ] {
        if needed && which(path).is_none() {
            missing.push(format!("{name} ({})", path.display()));
        }
    }
    if !missing.is_empty() {
        eprintln!("bench_supervisors: not found: {}", missing.join(", "));
        std::process::exit(1);
    }
    let runsvdir = which(&args.runsvdir).unwrap_or_default();
    let svscan = which(&args.svscan).unwrap_or_default();
    let tether = |delay: &str| tether::Tether {
        restarter: args.restarter.clone(),
        restart_delay: delay.into(),
        beat_interval: args.beat_interval,
        cgroups: args.tether_cgroups,
    };
    let mut life: Vec<Box<dyn Supervisor>> = Vec::new();
    let mut restart: Vec<Box<dyn Supervisor>> = Vec::new();
    let mut restart_extra = Vec::new();
    for s in &args.supervisors {
        match s.as_str() {
            "tether" => {
                life.push(Box::new(tether("0s")));
                restart.push(Box::new(tether("0s")));
            }
            "tether-1s" => {
                let t = tether("1s");
                restart_extra.push(t.label());
                restart.push(Box::new(t));
            }
            "runit" => {
                life.push(Box::new(runit::Runit {
                    runsvdir: runsvdir.clone(),
                }));
                restart.push(Box::new(runit::Runit {
                    runsvdir: runsvdir.clone(),
                }));
            }
            "s6" => {
                life.push(Box::new(s6::S6 {
                    svscan: svscan.clone(),
                }));
                restart.push(Box::new(s6::S6 {
                    svscan: svscan.clone(),
                }));
            }
            "floor" => {
                let exe = std::env::current_exe().unwrap_or_default();
                let extra_fds = args.floor_fds;
                life.push(Box::new(floor::Floor {
                    exe: exe.clone(),
                    extra_fds,
                }));
                restart.push(Box::new(floor::Floor { exe, extra_fds }));
            }
            _ => {}
        }
    }

    let workload = |w: &str| args.workloads.iter().any(|x| x == w);
    if !workload("lifecycle") {
        life.clear();
    }
    if !workload("restarts") {
        restart.clear();
    }
    let root_kill_n = args
        .root_kill_n
        .unwrap_or_else(|| args.ns.iter().copied().max().unwrap_or(1000));
    let mut root_kills: Vec<(String, Vec<rootkill::RootKill>)> = ["tether", "runit", "s6"]
        .iter()
        .filter(|s| workload("rootkill") && want(s))
        .map(|s| (s.to_string(), Vec::new()))
        .collect();
    let mut root_kill_failures = Vec::new();
    let mut results = Results::default();
    for run in 1..=args.runs {
        for (label, out) in root_kills.iter_mut() {
            let t = Instant::now();
            eprint!(
                "run {run}/{}: {label} N={root_kill_n} root kill ... ",
                args.runs
            );
            let r = match label.as_str() {
                "tether" => rootkill::tether(root_kill_n, args.probes, &common),
                "runit" => rootkill::scanner(
                    &runit::Runit {
                        runsvdir: runsvdir.clone(),
                    },
                    "runsvdir",
                    root_kill_n,
                    args.probes,
                    &common,
                ),
                _ => rootkill::scanner(
                    &s6::S6 {
                        svscan: svscan.clone(),
                    },
                    "s6-svscan",
                    root_kill_n,
                    args.probes,
                    &common,
                ),
            };
            match r {
                Ok(r) => {
                    eprintln!(
                        "root back {:.1} ms, whole {:.1} ms, adoption {}, {} others restarted ({:.0} s)",
                        r.root_back.as_secs_f64() * 1e3,
                        r.whole.as_secs_f64() * 1e3,
                        r.adopted
                            .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
                            .unwrap_or_else(|| "-".into()),
                        r.restarted,
                        t.elapsed().as_secs_f64()
                    );
                    out.push(r);
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    root_kill_failures.push(format!("run {run}: {label}: {e}"));
                }
            }
        }
        for &n in &args.ns {
            for sup in &life {
                let t = Instant::now();
                eprint!(
                    "run {run}/{}: {} N={n} lifecycle ... ",
                    args.runs,
                    sup.label()
                );
                match workload::lifecycle(sup.as_ref(), n, &common, args.idle) {
                    Ok(l) => {
                        eprintln!(
                            "start {:.3} s, Pss {:.2} MiB, idle {:.2} ms CPU / {} switches, storm {:.3} s ({:.0} s)",
                            l.start.as_secs_f64(),
                            l.memory.pss_kib as f64 / 1024.0,
                            l.idle.run_ns as f64 / 1e6,
                            l.idle.switches(),
                            l.storm.as_secs_f64(),
                            t.elapsed().as_secs_f64()
                        );
                        for note in &l.notes {
                            eprintln!("  note: {note}");
                            results.failures.push(format!("run {run}: {note}"));
                        }
                        results
                            .lifecycle
                            .entry((sup.label(), n))
                            .or_default()
                            .push(l);
                    }
                    Err(e) => {
                        eprintln!("FAILED: {e}");
                        results.failures.push(format!("run {run}: {e}"));
                    }
                }
            }
        }
        if args.plan.kills > 0 {
            for sup in &restart {
                let t = Instant::now();
                eprint!("run {run}/{}: {} restarts ... ", args.runs, sup.label());
                match workload::restarts(sup.as_ref(), &common, args.plan) {
                    Ok(r) => {
                        let p = |q| {
                            stats::percentile(&r.latencies, q)
                                .map(|d| d.as_secs_f64() * 1e3)
                                .unwrap_or(f64::NAN)
                        };
                        eprintln!(
                            "{} kills: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({:.0} s)",
                            r.latencies.len(),
                            p(50.0),
                            p(99.0),
                            p(100.0),
                            t.elapsed().as_secs_f64()
                        );
                        results.restarts.entry(sup.label()).or_default().push(r);
                    }
                    Err(e) => {
                        eprintln!("FAILED: {e}");
                        results.failures.push(format!("run {run}: {e}"));
                    }
                }
            }
        }
    }

    let ctx = Context {
        machine: machine(),
        settings: vec![
            ("runs per figure".into(), args.runs.to_string()),
            ("idle period".into(), format!("{} s", args.idle.as_secs_f64())),
            (
                "restart".into(),
                format!(
                    "{} kills per run, round-robin over {} services, each up ≥ {} ms, {} ms pause after each replacement",
                    args.plan.kills,
                    args.plan.pool,
                    args.plan.min_up.as_millis(),
                    args.plan.gap.as_millis()
                ),
            ),
            (
                "services".into(),
                format!(
                    "static bench_blocker; runit/s6 run files {}; tether `restart_delay = \"0s\"`, `notify = \"ready\"`, beat_interval {} ms, cgroups {}",
                    if args.direct_run { "are symlinks to it" } else { "`#!/bin/sh` + `exec`" },
                    args.beat_interval.as_millis(),
                    if args.tether_cgroups { "as detected" } else { "off" }
                ),
            ),
            (
                "floor".into(),
                format!(
                    "this program as a bare spawn/waitpid loop (posix_spawn), holding {} extra descriptors",
                    args.floor_fds
                ),
            ),
            ("isolation".into(), format!("each supervisor PID 1 of its own PID + mount namespace; {netns}")),
            ("wall time".into(), format!("{:.0} s", wall.elapsed().as_secs_f64())),
            ("load average (1, 5, 15 min) before / after".into(), format!("{load_before} / {}", loadavg())),
        ],
        ns: args.ns.clone(),
        restart_extra,
    };
    let mut md = results.markdown(&ctx);
    if !root_kills.is_empty() {
        md.push('\n');
        md.push_str(&rootkill::markdown(&root_kills, &root_kill_failures));
    }
    println!("{md}");
    if let Some(out) = &args.out {
        if let Some(d) = out.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        if let Err(e) = std::fs::write(out, &md) {
            eprintln!("bench_supervisors: {}: {e}", out.display());
            std::process::exit(1);
        }
    }
}

/// `path` made absolute against the working directory (it must exist).
fn absolute(path: String) -> Result<PathBuf, String> {
    std::fs::canonicalize(&path).map_err(|e| format!("{path}: {e}"))
}
