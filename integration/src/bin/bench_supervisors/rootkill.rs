//! Workload "root kill" (issue 13): N services running, the supervisor's
//! root (`tether-restarter`, `runsvdir`, `s6-svscan`) gets `SIGKILL`, and
//! right after it PROBES services spread over the set are killed too
//! (failures that happen while the root is gone). Measured, from the root's
//! `SIGKILL`:
//! - root back: a new root process runs;
//! - whole: every probe runs again (its replacement's first instruction),
//!   i.e. a failure is repaired again — for tether the new restarter has
//!   adopted every service and learnt the probes' exits from init's relay;
//!   for runit and s6 the `runsv`/`s6-supervise` processes never died;
//! - tether only: the restarter's `adoption done` line;
//! - restarted: services other than the probes that started again within
//!   2 s after the probes were back (0 expected from every supervisor).
//!
//! How the root comes back, as on a real system:
//! - tether: the whole chain, `tether-init` as PID 1 of the namespace
//!   (with watchdogd and a simulated watchdog device,
//!   `tether_integration::chain`, timings of the chain tests: beat 100 ms,
//!   `restart_delay` 200 ms, `hang_timeout` 1 s), which restarts the
//!   restarter and hands it the fd store and the exit relay;
//! - runit and s6: PID 1 of the namespace is `/bin/sh -c 'while :; do
//!   "$@"; done'` running the scanner, restarting it at once when it dies,
//!   as runit's stage 2 or an s6-linux-init `rc.init` loop would; the
//!   orphaned `runsv`/`s6-supervise` processes become its children.

use crate::adapter::{service_name, Common, Supervisor};
use crate::events::BenchSocket;
use crate::ns::{Launch, Namespace};
use crate::procfs;
use std::time::{Duration, Instant};
use tether_common::clock::MonoTime;
use tether_integration::bins::TempDir;
use tether_integration::chain::{Chain, ChainOptions};
use tether_integration::hw::Timings;

/// What one root-kill run measured.
#[derive(Clone, Debug, Default)]
pub struct RootKill {
    pub n: usize,
    pub probes: usize,
    pub root_back: Duration,
    pub whole: Duration,
    /// tether: the `adoption done` line.
    pub adopted: Option<Duration>,
    pub restarted: usize,
}

/// Up this long before the kill (beyond runit's and s6's one second).
const UP: Duration = Duration::from_millis(1500);
/// Watched after the probes are back, for restarts of the others.
const AFTER: Duration = Duration::from_secs(2);

fn timeout(n: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(60 * n as u64)
}

fn sigkill(pid: i32) -> Result<(), String> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| format!("kill({pid}, SIGKILL): {e}"))
}

/// Probe indices: `k` spread evenly over `0..n`.
fn probe_indices(n: usize, k: usize) -> Vec<usize> {
    let k = k.clamp(1, n);
    (0..k).map(|j| j * n / k).collect()
}

/// The pids of the probes, killed right after the root; returns them.
fn kill_probes(sock: &BenchSocket, probes: &[usize]) -> Result<Vec<i32>, String> {
    let mut pids = Vec::new();
    for &i in probes {
        let st = sock
            .current(i)
            .ok_or_else(|| format!("{} has no pid", service_name(i)))?;
        pids.push(st.pid);
    }
    Ok(pids)
}

/// Waits for every probe's replacement; returns the latest.
fn wait_probes(
    sock: &BenchSocket,
    probes: &[usize],
    old: &[i32],
    after: MonoTime,
    n: usize,
) -> Result<MonoTime, String> {
    let mut latest = after;
    for (&i, &pid) in probes.iter().zip(old) {
        let st = sock
            .wait_replacement(i, pid, after, timeout(n))
            .ok_or_else(|| format!("{} was not restarted", service_name(i)))?;
        latest = latest.max(st.at);
    }
    Ok(latest)
}

/// `pid`'s children whose command is `comm` (from
/// `/proc/PID/task/*/children`: a whole `/proc` scan takes tens of ms with
/// 2000 processes, which would blur the figure).
fn children_named(pid: i32, comm: &str) -> Vec<i32> {
    tether_integration::chain::children_of(pid)
        .into_iter()
        .filter(|&c| procfs::stat_ppid_comm(c).is_some_and(|(_, name)| name == comm))
        .collect()
}

/// Starts of services since the kill, beyond one per probe.
fn others_restarted(sock: &BenchSocket, before: usize, probes: usize) -> usize {
    std::thread::sleep(AFTER);
    sock.total_starts().saturating_sub(before + probes)
}

/// runit or s6: the scanner under a restart loop.
pub fn scanner(
    sup: &dyn Supervisor,
    comm: &str,
    n: usize,
    k: usize,
    common: &Common,
) -> Result<RootKill, String> {
    let dir = TempDir::new(&format!("bench-rootkill-{comm}"));
    let sock =
        BenchSocket::bind(&dir.join("bench.sock")).map_err(|e| format!("bench socket: {e}"))?;
    let env = vec![("BENCH_SOCK".to_string(), sock.path().display().to_string())];
    let prepared = sup.prepare(dir.path(), n, common, &env)?;
    let inner = prepared.launch;
    let mut args: Vec<std::ffi::OsString> = vec![
        "-c".into(),
        "while :; do \"$@\"; done".into(),
        "sh".into(),
        inner.program.clone().into_os_string(),
    ];
    args.extend(inner.args);
    let launch = Launch {
        program: "/bin/sh".into(),
        args,
        env: inner.env,
        fds: inner.fds,
        output: inner.output,
    };
    std::thread::sleep(Duration::from_millis(1100)); // runsvdir's scan rule
    let mut ns = Namespace::start(launch)?;
    let pid1 = ns.root();
    sock.wait_all_after(n, MonoTime::ZERO, timeout(n))
        .ok_or_else(|| format!("{comm}: not every service started"))?;
    std::thread::sleep(UP);
    let root = *children_named(pid1, comm)
        .first()
        .ok_or_else(|| format!("{comm}: no scanner under PID 1"))?;
    let probes = probe_indices(n, k);
    let old = kill_probes(&sock, &probes)?;
    let before = sock.total_starts();
    let t0 = MonoTime::now();
    sigkill(root)?;
    for &pid in &old {
        sigkill(pid)?;
    }
    let back = loop {
        if children_named(pid1, comm).iter().any(|&p| p != root) {
            break MonoTime::now();
        }
        if MonoTime::now() - t0 > timeout(n) {
            return Err(format!("{comm}: not restarted"));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let whole = wait_probes(&sock, &probes, &old, t0, n)?;
    let restarted = others_restarted(&sock, before, probes.len());
    ns.stop();
    Ok(RootKill {
        n,
        probes: probes.len(),
        root_back: back - t0,
        whole: whole - t0,
        adopted: None,
        restarted,
    })
}

/// tether: the whole chain, the restarter killed.
pub fn tether(n: usize, k: usize, common: &Common) -> Result<RootKill, String> {
    let dir = TempDir::new("bench-rootkill-tether");
    let sock =
        BenchSocket::bind(&dir.join("bench.sock")).map_err(|e| format!("bench socket: {e}"))?;
    let services = (0..n)
        .map(|i| {
            (
                service_name(i),
                format!(
                    "exec = [{:?}, \"{i}\"]\nrestart_delay = \"0s\"\nnotify = \"ready\"\nenv = {{ BENCH_SOCK = {:?} }}\n",
                    common.blocker.display().to_string(),
                    sock.path().display().to_string()
                ),
            )
        })
        .collect();
    let chain = Chain::start(
        "bench-rootkill",
        ChainOptions {
            timings: Timings::chain(),
            services,
            ..ChainOptions::default()
        },
    );
    sock.wait_all_after(n, MonoTime::ZERO, timeout(n))
        .ok_or_else(|| format!("tether: not every service started:\n{}", chain.dump()))?;
    std::thread::sleep(UP);
    let root = chain
        .layer("tether-restarter")
        .ok_or_else(|| format!("tether: no restarter:\n{}", chain.dump()))?;
    let probes = probe_indices(n, k);
    let old = kill_probes(&sock, &probes)?;
    let before = sock.total_starts();
    let (t0, i0) = (MonoTime::now(), Instant::now());
    sigkill(root)?;
    for &pid in &old {
        sigkill(pid)?;
    }
    let back = loop {
        if chain.layer("tether-restarter").is_some_and(|p| p != root) {
            break MonoTime::now();
        }
        if MonoTime::now() - t0 > timeout(n) {
            return Err(format!(
                "tether: restarter not restarted:\n{}",
                chain.dump()
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let whole = wait_probes(&sock, &probes, &old, t0, n)?;
    let adopted = tether_integration::chain::wait_until(timeout(n), || {
        chain
            .syslog(&["adoption done"])
            .into_iter()
            .find(|l| l.at >= i0)
            .map(|l| l.at - i0)
    });
    let restarted = others_restarted(&sock, before, probes.len());
    drop(chain);
    Ok(RootKill {
        n,
        probes: probes.len(),
        root_back: back - t0,
        whole: whole - t0,
        adopted,
        restarted,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// The report section: per supervisor, the median of each figure over the
/// runs, and the largest `restarted`.
pub fn markdown(results: &[(String, Vec<RootKill>)], failures: &[String]) -> String {
    let mut s = String::from(
        "#### Root kill: SIGKILL of the supervisor's root with N services (ms from the kill; median over the runs)\n\n\
         tether: `tether-restarter` under `tether-init` (the chain: init restarts it and hands it the fd store and exit relay); \
         runit: `runsvdir`, s6: `s6-svscan`, each restarted at once by a `sh` loop as PID 1 (their stage 2). \
         Probes: services killed right after the root; *whole* = every probe running again.\n\n\
         | supervisor | N | probes | root back | adoption done | whole | services restarted (besides the probes) | runs |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (label, runs) in results {
        if runs.is_empty() {
            continue;
        }
        let med = |f: &dyn Fn(&RootKill) -> Duration| {
            let mut v: Vec<Duration> = runs.iter().map(f).collect();
            v.sort();
            v[v.len() / 2]
        };
        let adopted: Vec<Duration> = runs.iter().filter_map(|r| r.adopted).collect();
        let adopted = if adopted.is_empty() {
            "—".to_string()
        } else {
            let mut v = adopted;
            v.sort();
            ms(v[v.len() / 2])
        };
        s.push_str(&format!(
            "| {label} | {} | {} | {} | {adopted} | {} | {} | {} |\n",
            runs[0].n,
            runs[0].probes,
            ms(med(&|r| r.root_back)),
            ms(med(&|r| r.whole)),
            runs.iter().map(|r| r.restarted).max().unwrap_or(0),
            runs.len()
        ));
    }
    for f in failures {
        s.push_str(&format!("\nroot kill failed: {f}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_spread_over_the_services() {
        assert_eq!(probe_indices(1000, 10)[..3], [0, 100, 200]);
        assert_eq!(probe_indices(3, 10), vec![0, 1, 2]);
        assert_eq!(probe_indices(1, 0), vec![0]);
    }
}
