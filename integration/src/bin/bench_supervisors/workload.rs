//! The workloads, the same for every supervisor.
//!
//! A [`Session`] is one supervisor with N services in a namespace of its
//! own. [`lifecycle`] measures, in one session: start (launch → every
//! service running; tether also → every service reported ready), memory of
//! the supervision processes once settled, their CPU time and context
//! switches over an idle period, and a storm (every service killed at
//! once → every one running again). [`restarts`] kills one service at a
//! time, round-robin over a pool, each one up for at least `min_up` (so
//! runit's and s6's one-second minimum between two starts never applies),
//! and times each replacement.
//!
//! Times are `CLOCK_MONOTONIC`: the launch and kill times read here just
//! before `unshare`/`kill(2)`, start times read by each blocker first
//! thing in `main`.

use crate::adapter::{service_name, Common, Probes, Supervisor};
use crate::events::BenchSocket;
use crate::ns::Namespace;
use crate::procfs::{self, Cpu, Memory};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;
use tether_common::clock::MonoTime;
use tether_integration::bins::TempDir;

/// How long the tree ages before launch: runsvdir postpones a scan of a
/// directory modified in the current second by one second.
const AGE: Duration = Duration::from_millis(1100);
/// How long `ready` lines may lag behind the last start.
const READY_WAIT: Duration = Duration::from_secs(10);
/// After every service runs, before memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// One supervisor with `n` services, running.
pub struct Session {
    pub n: usize,
    pub label: String,
    sock: BenchSocket,
    probes: Probes,
    ns: Namespace,
    launched: MonoTime,
    // Last: removed once the namespace is gone.
    dir: TempDir,
}

/// Generous: a loaded 2-core machine starting 1000 services.
fn start_timeout(n: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(60 * n as u64)
}

impl Session {
    /// Writes the tree, lets it age, launches the supervisor. Returns once
    /// launched (services may still be starting).
    pub fn launch(sup: &dyn Supervisor, n: usize, common: &Common) -> Result<Session, String> {
        let label = sup.label();
        let dir = TempDir::new(&format!(
            "bench-{}",
            label.split_whitespace().next().unwrap_or("sup")
        ));
        let sock =
            BenchSocket::bind(&dir.join("bench.sock")).map_err(|e| format!("bench socket: {e}"))?;
        let env = vec![("BENCH_SOCK".to_string(), sock.path().display().to_string())];
        let prepared = sup.prepare(dir.path(), n, common, &env)?;
        std::thread::sleep(AGE);
        let launched = MonoTime::now();
        let ns = Namespace::start(prepared.launch)?;
        Ok(Session {
            n,
            label,
            sock,
            probes: prepared.probes,
            ns,
            launched,
            dir,
        })
    }

    fn describe_failure(&mut self, what: &str) -> String {
        let mut s = format!(
            "{} N={}: {what} ({} of {} services started, {} unreadable reports; supervisor {})",
            self.label,
            self.n,
            self.sock.count_after(self.n, MonoTime::ZERO),
            self.n,
            self.sock.malformed(),
            if self.ns.alive() { "alive" } else { "dead" }
        );
        let out = std::fs::read_to_string(self.dir.join("supervisor.out")).unwrap_or_default();
        let tail: Vec<&str> = out.lines().rev().take(5).collect();
        if !tail.is_empty() {
            s.push_str(&format!(
                "; its output ends: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        if let Some(log) = &self.probes.syslog {
            let t = log.tail(5);
            if !t.is_empty() {
                s.push_str(&format!("; syslog ends: {}", t.join(" | ")));
            }
        }
        s
    }

    /// Waits until every service has run once; returns launch → the last
    /// first start.
    pub fn wait_started(&mut self) -> Result<Duration, String> {
        match self
            .sock
            .wait_all_after(self.n, MonoTime::ZERO, start_timeout(self.n))
        {
            Some(t) => Ok(t - self.launched),
            None => Err(self.describe_failure("not every service started")),
        }
    }

    /// tether: launch → the `n`th `ready` line, waiting at most `timeout`
    /// (call it once every service runs). `Ok(None)` for the others; `Err`
    /// when lines are missing (the restarter drops its own lines when the
    /// syslog socket is full: that is reported, not fatal).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Option<Duration>, String> {
        let Some(log) = &self.probes.syslog else {
            return Ok(None);
        };
        let is_ready = |t: &str| t.contains(" ready (READY=1");
        match log.wait_count(self.n, timeout, is_ready) {
            Some(t) => Ok(Some(t - self.launched)),
            None => {
                let got = log.count(is_ready);
                let busy = log.count(|t| t.contains("syslog down") || t.contains("dropped"));
                Err(self.describe_failure(&format!(
                    "only {got} of {} `ready` lines reached the syslog socket \
                     (the restarter drops its own lines when the socket's queue is full; \
                     {busy} of its lines mention syslog down or drops)",
                    self.n
                )))
            }
        }
    }

    pub fn supervision_pids(&self, sup: &dyn Supervisor) -> Vec<i32> {
        sup.supervision_pids(self.ns.root())
    }

    /// Sleeps until service `i` has been up for `min_up`; returns its
    /// current start.
    fn up_for(&mut self, i: usize, min_up: Duration) -> Result<crate::events::Start, String> {
        let Some(st) = self.sock.current(i) else {
            return Err(self.describe_failure(&format!("{} has no known pid", service_name(i))));
        };
        let up = MonoTime::now() - st.at;
        if up < min_up {
            std::thread::sleep(min_up - up);
        }
        Ok(st)
    }

    pub fn stop(mut self) {
        self.ns.stop();
    }
}

fn sigkill(pid: i32) -> Result<(), String> {
    kill(Pid::from_raw(pid), Signal::SIGKILL).map_err(|e| format!("kill({pid}, SIGKILL): {e}"))
}

/// What one lifecycle session measured.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    pub start: Duration,
    /// tether: launch → every service reported ready.
    pub ready: Option<Duration>,
    pub memory: Memory,
    pub idle: Cpu,
    /// Service (re)starts seen during the idle period (0 expected).
    pub idle_restarts: usize,
    pub storm: Duration,
    /// tether: the longest silence on any heartbeat pipe during the storm,
    /// and the beat interval.
    pub storm_beat_gap: Option<(Duration, Duration)>,
    /// What went wrong without spoiling the rest (listed in the report).
    pub notes: Vec<String>,
}

/// Start, memory, idle, storm, in one session.
pub fn lifecycle(
    sup: &dyn Supervisor,
    n: usize,
    common: &Common,
    idle: Duration,
) -> Result<Lifecycle, String> {
    let mut s = Session::launch(sup, n, common)?;
    let start = s.wait_started()?;
    let mut notes = Vec::new();
    let ready = s.wait_ready(READY_WAIT).unwrap_or_else(|e| {
        notes.push(e);
        None
    });
    std::thread::sleep(SETTLE);
    let pids = s.supervision_pids(sup);
    let memory = procfs::memory(&pids);

    let before_starts = s.sock.total_starts();
    let c0 = procfs::cpu(&pids);
    std::thread::sleep(idle);
    let c1 = procfs::cpu(&pids);
    let idle_restarts = s.sock.total_starts() - before_starts;

    // Storm: every service has been up for SETTLE + idle by now (> 1 s).
    let victims: Vec<i32> = (0..n)
        .map(|i| {
            s.sock
                .current(i)
                .map(|st| st.pid)
                .ok_or_else(|| format!("service {i} has no pid"))
        })
        .collect::<Result<_, _>>()?;
    let k0 = MonoTime::now();
    for pid in victims {
        sigkill(pid)?;
    }
    let end = match s.sock.wait_all_after(n, k0, start_timeout(n)) {
        Some(t) => t,
        None => return Err(s.describe_failure("the storm: not every service came back")),
    };
    let storm_beat_gap = s.probes.beat_interval.map(|interval| {
        let gap = s
            .probes
            .beats
            .iter()
            .map(|b| b.longest_gap(k0, end, interval * 3))
            .max()
            .unwrap_or_default();
        (gap, interval)
    });
    s.stop();
    Ok(Lifecycle {
        start,
        ready,
        memory,
        idle: c1.since(c0),
        idle_restarts,
        storm: end - k0,
        storm_beat_gap,
        notes,
    })
}

/// What one restart session measured.
#[derive(Clone, Debug, Default)]
pub struct Restarts {
    /// kill → the replacement's first instruction of `main`.
    pub latencies: Vec<Duration>,
    /// tether: kill → the restarter's `service NAME exited` line queued on
    /// our syslog socket (an upper bound on its detection of the death).
    pub detections: Vec<Duration>,
}

/// How `restarts` kills.
#[derive(Clone, Copy, Debug)]
pub struct KillPlan {
    pub pool: usize,
    pub kills: usize,
    /// Each victim has been up at least this long.
    pub min_up: Duration,
    /// Pause after each replacement, before the next kill.
    pub gap: Duration,
}

/// Kills one service at a time, round-robin over the pool.
pub fn restarts(sup: &dyn Supervisor, common: &Common, plan: KillPlan) -> Result<Restarts, String> {
    let mut s = Session::launch(sup, plan.pool, common)?;
    s.wait_started()?;
    // Readiness is not needed here; a lost line only costs the wait.
    let _ = s.wait_ready(READY_WAIT);
    let mut out = Restarts::default();
    for k in 0..plan.kills {
        let i = k % plan.pool;
        let victim = s.up_for(i, plan.min_up)?;
        if let Some(log) = &s.probes.syslog {
            log.clear();
        }
        let t = MonoTime::now();
        sigkill(victim.pid)?;
        let Some(new) = s
            .sock
            .wait_replacement(i, victim.pid, t, Duration::from_secs(10))
        else {
            return Err(s.describe_failure(&format!(
                "kill {k}: {} was not restarted within 10 s",
                service_name(i)
            )));
        };
        out.latencies.push(new.at - t);
        if let Some(log) = &s.probes.syslog {
            let needle = format!("service {} exited", service_name(i));
            match log.wait_line_after(&needle, t, Duration::from_secs(2)) {
                Some(l) => out.detections.push(l.at - t),
                None => return Err(s.describe_failure(&format!("kill {k}: no {needle:?} line"))),
            }
        }
        std::thread::sleep(plan.gap);
    }
    s.stop();
    Ok(out)
}
