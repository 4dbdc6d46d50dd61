//! Wall-clock jumps inside the VM (issue #5): the demo appliance
//! (`vm-tests/src/appliance.rs`) booted once in QEMU/TCG; its clock is set
//! back a day, then forward a year, with busybox `date -s` run by the
//! fault agent. Never on the host: only the guest's clock moves.
//!
//! Every deadline of the chain is on `CLOCK_MONOTONIC`, so the jumps must
//! change nothing:
//! - no restart: the layers' pids stay, no service restarts on its own;
//! - no reset: QMP shows no `WATCHDOG` or `RESET` for `stale_timeout +
//!   hardware_timeout + 2 s` after each jump, and nothing is logged at
//!   `alert` (watchdogd's "STOPPING petting");
//! - no timeout fires late: after the jump back, the `heartbeat` service
//!   (sd_notify watchdog, 2 s) is told to stop pinging and must be killed
//!   and restarted within its budget bound, and not before its 2 s;
//! - no restart delay fires early or late: after the jump forward,
//!   `ticker` is killed and must be running again within its budget bound;
//! - the liveness of the services goes on: `ticker` lines keep reaching
//!   syslog after each jump.
//!
//! One boot, about 30–40 s under TCG.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tether_common::budget::BudgetRow;
use tether_vm_tests::appliance::{boot, Appliance, Guest};
use tether_vm_tests::events::Source;
use tether_vm_tests::image::run_dir;

/// Generous deadline for one agent command.
const CMD: Duration = Duration::from_secs(60);
/// Measurement overhead on top of a bound (agent polling, `tetherctl`
/// under TCG), as in the matrix.
const SLACK: Duration = Duration::from_secs(1);
const DAY: i64 = 86_400;
const YEAR: i64 = 365 * DAY;

struct Clock {
    g: Guest,
    bounds: Vec<BudgetRow>,
    /// `stale_timeout + hardware_timeout + 2 s`: how long to watch for a
    /// reset after a jump.
    reset_window: Duration,
}

/// name → (pid, restarts) of every service, plus the layers' pids.
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    restarter: i64,
    watchdogd: i64,
    services: BTreeMap<String, (i64, u64)>,
}

impl Clock {
    fn agent(&mut self, cmd: &str) -> Result<tether_vm_tests::agent::Reply, String> {
        self.g.vm.agent(cmd, CMD).map_err(|e| e.to_string())
    }

    fn sh(&mut self, cmd: &str) -> Result<String, String> {
        let r = self.agent(&format!("exec {cmd}"))?;
        if r.i64("code") != 0 {
            return Err(format!(
                "`{cmd}` exited {}: {}",
                r.i64("code"),
                r.str("out")
            ));
        }
        Ok(r.str("out").trim().to_string())
    }

    fn wall(&mut self) -> Result<i64, String> {
        self.sh("date +%s")?
            .parse()
            .map_err(|e| format!("date +%s: {e}"))
    }

    fn status(&mut self) -> Result<Value, String> {
        Ok(self.agent("status")?.value["status"].clone())
    }

    fn snapshot(&mut self) -> Result<Snapshot, String> {
        let restarter = self.agent("pid restarter")?.i64("pid");
        let watchdogd = self.agent("pid watchdogd")?.i64("pid");
        let st = self.status()?;
        let services = st["services"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or("").to_string(),
                    (
                        s["pid"].as_i64().unwrap_or(0),
                        s["restarts"].as_u64().unwrap_or(0),
                    ),
                )
            })
            .collect();
        Ok(Snapshot {
            restarter,
            watchdogd,
            services,
        })
    }

    fn bound(&self, fault: &str) -> Result<Duration, String> {
        self.bounds
            .iter()
            .find(|b| b.fault == fault)
            .map(|b| b.bound)
            .ok_or_else(|| format!("no budget row {fault:?}"))
    }

    /// Moves the guest's wall clock by `by` seconds; returns when.
    fn jump(&mut self, by: i64) -> Result<Instant, String> {
        let before = self.wall()?;
        let r = self.agent(&format!(
            "exec date -s @$(( $(date +%s) + ({by}) )) >/dev/null && date +%s"
        ))?;
        let after: i64 = r
            .str("out")
            .trim()
            .parse()
            .map_err(|e| format!("date after the jump: {e}: {:?}", r.str("out")))?;
        let moved = after - before;
        if (moved - by).abs() > 30 {
            return Err(format!("the clock moved by {moved} s, not {by} s"));
        }
        eprintln!("clock: guest wall clock moved by {moved} s");
        Ok(r.event.at)
    }

    /// No `WATCHDOG`/`RESET` on QMP until `from + reset_window`.
    fn no_reset_after(&mut self, from: Instant) -> Result<(), String> {
        let during = (from + self.reset_window).saturating_duration_since(Instant::now());
        self.g
            .vm
            .timeline
            .expect_none("reset", during, |e| {
                e.source == Source::Qmp
                    && (e.text.starts_with("WATCHDOG") || e.text.starts_with("RESET"))
            })
            .map_err(|e| e.to_string())
    }

    /// `ticker N` lines that reached syslog after `from`.
    fn ticker_lines_after(&self, from: Instant) -> usize {
        self.g
            .vm
            .timeline
            .events()
            .iter()
            .filter(|e| e.at > from && e.source == Source::Agent && e.text.contains("ticker "))
            .count()
    }

    /// Kills `service` with `signal` (agent `signal svc:`) and awaits its
    /// new pid; the time between, on the guest's monotonic clock.
    fn kill_and_await(&mut self, service: &str, signal: &str) -> Result<Duration, String> {
        let k = self.agent(&format!("signal svc:{service} {signal}"))?;
        let a = self.agent(&format!("await svc:{service} {} 30000", k.i64("pid")))?;
        if a.i64("pid") == 0 || a.i64("pid") == k.i64("pid") {
            return Err(format!("{service} was not restarted"));
        }
        Ok(Duration::from_millis(a.u64("t_ms") - k.u64("t_ms")))
    }
}

fn no_alert(g: &Guest) -> Result<(), String> {
    let tl = &g.vm.timeline;
    match tl.events().iter().find(|e| {
        matches!(e.source, Source::Agent | Source::Console)
            && (e.text.contains(".alert") || e.text.contains("STOPPING petting"))
    }) {
        Some(e) => Err(format!("logged at alert: {}", tl.format(e))),
        None => Ok(()),
    }
}

fn run(dir: &std::path::Path) -> Result<(), String> {
    let appliance = Appliance::demo();
    let config = appliance.config()?;
    let mut bounds = tether_common::budget::table(&config);
    let specs: Vec<_> = appliance
        .services
        .iter()
        .map(|(n, t)| {
            tether_restarter::service::parse(
                t,
                std::path::Path::new(&format!("/etc/tether/services/{n}.toml")),
            )
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    bounds.extend(tether_restarter::supervisor::service_budget_rows(&specs));
    let t = &config.timing;
    let reset_window = t.stale_timeout_for("init").max(t.stale_timeout)
        + t.hardware_timeout
        + Duration::from_secs(2);
    let g = boot("clock", &appliance, dir)?;
    let mut c = Clock {
        g,
        bounds,
        reset_window,
    };
    c.g.vm
        .wait_agent_ready(Duration::from_secs(120))
        .map_err(|e| e.to_string())?;
    c.agent("wait-chain 60000")?;
    let before = c.snapshot()?;

    // 1. Back a day.
    let j1 = c.jump(-DAY)?;
    c.no_reset_after(j1)?;
    let after_back = c.snapshot()?;
    if after_back != before {
        return Err(format!(
            "the jump back changed something: before {before:?}, after {after_back:?}"
        ));
    }
    if c.ticker_lines_after(j1) < 2 {
        return Err("no ticker lines after the jump back".into());
    }
    // A watchdog timeout is not late: heartbeat stops pinging (SIGUSR1).
    let hang = c.kill_and_await("heartbeat", "USR1")?;
    let hang_bound = c.bound("service heartbeat hang")?;
    eprintln!(
        "clock: heartbeat silenced after the jump back: restarted after {:.2}s (bound {:.2}s)",
        hang.as_secs_f64(),
        hang_bound.as_secs_f64()
    );
    if hang > hang_bound + SLACK {
        return Err(format!("the watchdog timeout fired late: {hang:?}"));
    }
    // Its last ping was at most 500 ms before the signal; 2 s timeout.
    if hang < Duration::from_millis(1400) {
        return Err(format!("the watchdog timeout fired early: {hang:?}"));
    }

    // 2. Forward a year.
    let j2 = c.jump(YEAR)?;
    c.no_reset_after(j2)?;
    let mid = c.snapshot()?;
    // A restart delay is neither early nor late: ticker killed.
    let crash = c.kill_and_await("ticker", "KILL")?;
    let crash_bound = c.bound("service ticker crash")?;
    eprintln!(
        "clock: ticker killed after the jump forward: restarted after {:.2}s (bound {:.2}s)",
        crash.as_secs_f64(),
        crash_bound.as_secs_f64()
    );
    if crash > crash_bound + SLACK {
        return Err(format!("the restart came late: {crash:?}"));
    }
    let after = c.snapshot()?;
    if c.ticker_lines_after(j2) < 2 {
        return Err("no ticker lines after the jump forward".into());
    }
    // Nothing else moved: layers, sensor and syslogd as at boot; heartbeat
    // restarted once (the silencing above) and not again; ticker once.
    if (after.restarter, after.watchdogd) != (before.restarter, before.watchdogd) {
        return Err(format!(
            "a layer restarted: before {before:?}, after {after:?}"
        ));
    }
    for name in ["sensor", "syslogd"] {
        if after.services.get(name) != before.services.get(name) {
            return Err(format!(
                "{name} was disturbed: before {before:?}, after {after:?}"
            ));
        }
    }
    let restarts = |s: &Snapshot, n: &str| s.services.get(n).map_or(0, |v| v.1);
    if restarts(&mid, "heartbeat") != restarts(&before, "heartbeat") + 1
        || mid.services.get("heartbeat") != after.services.get("heartbeat")
    {
        return Err(format!(
            "heartbeat restarted other than once: before {before:?}, mid {mid:?}, after {after:?}"
        ));
    }
    if restarts(&after, "ticker") != restarts(&before, "ticker") + 1 {
        return Err(format!(
            "ticker restarts: before {before:?}, after {after:?}"
        ));
    }
    no_alert(&c.g)?;
    eprintln!("clock: back a day and forward a year: no restart, no reset, no alert");
    Ok(())
}

#[test]
fn wall_clock_back_a_day_and_forward_a_year_changes_nothing() {
    let dir = run_dir("clock");
    if let Err(e) = run(&dir) {
        panic!(
            "{e}\n(transcript: {})",
            dir.join("transcript.log").display()
        );
    }
}
