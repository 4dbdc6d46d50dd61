//! The rows of the fault matrix as `tether-inject` runs them: one boot per
//! row, the fault injected through the guest's fault agent, the outcome
//! and its time checked against the row's bound (the plan's, or the image's
//! budget table: `tether_common::budget::table` for the layers,
//! `tether_restarter::supervisor::service_budget_rows` for services).
//!
//! Measurement: within one boot, fault and recovery times are the guest's
//! `CLOCK_MONOTONIC` as the agent saw them (the agent polls every 10 ms;
//! service pids come from `tetherctl status`, which costs tens of ms under
//! TCG), so a time is compared with `bound + SLACK`. Across a reset, times
//! are host times: the agent's reply to the fault → QMP `WATCHDOG`/`RESET`.
//! "No reset" is checked by watching QMP for `stale_timeout +
//! hardware_timeout + 2 s` after the fault: any hardware or guest reset in
//! that window fails the row.
//!
//! "No output line lost" (restarter rows, upgrade): the observation point
//! is the guest's syslog daemon's file (the plan's `syslog_files`,
//! busybox syslogd's `/var/log/messages{.0,}` by default), i.e.
//! what reached the syslog socket through the restarter; the row's
//! `counter` service writes `cseq=N` every 10 ms and the agent's `seq`
//! verb checks the numbers from before the fault to after the recovery.

use super::plan::{Fault, PlanRow, Rung};
use crate::agent::Reply;
use crate::appliance::Guest;
use crate::events::{Event, Source};
use crate::report::RowResult;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tether_common::budget::BudgetRow;
use tether_common::config::Config;

/// Measurement overhead allowed on top of a bound (polling, `tetherctl`
/// under TCG).
pub const SLACK: Duration = Duration::from_secs(1);
/// Generous deadline for one agent command.
const CMD: Duration = Duration::from_secs(60);

/// One row being run: the booted guest, its configuration and bounds, and
/// the result being filled in.
pub struct Row {
    pub g: Guest,
    pub config: Config,
    pub bounds: Vec<BudgetRow>,
    /// The row's own bound and its formula (from the plan or the table).
    pub bound: Duration,
    pub formula: String,
    pub result: RowResult,
    /// Where the syslog daemon writes (the plan's `syslog_files`).
    pub syslog_files: Vec<String>,
    /// How to log in over ssh (`--ssh-key`), for `session = "ssh"`.
    pub ssh: Option<super::session::SshLogin>,
    /// The disk is the image's root (`--disk`), not a blank state disk.
    pub root_disk: bool,
}

#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    restarter: i64,
    watchdogd: i64,
    /// name → (pid, restarts)
    services: BTreeMap<String, (i64, u64)>,
}

fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

/// What the report says a row expects.
pub fn expected_text(fault: Fault, rung: Rung) -> String {
    match (rung, fault) {
        (Rung::NoReset, _) => "no reset of any kind".into(),
        (Rung::Restart, Fault::WatchdogdKill | Fault::WatchdogdStop) => {
            "restarted before the hardware fires, no reset".into()
        }
        (Rung::Restart, Fault::SyslogFlood) => {
            "service never blocks; loss counted, reported when syslog is back".into()
        }
        (Rung::Restart, Fault::ServiceHang) => "killed and restarted".into(),
        (Rung::Restart, Fault::SyslogKill) => {
            "restarted; lines written while it was down delivered when it is back, or counted as dropped".into()
        }
        (Rung::Restart, _) => "restarted, nothing else touched".into(),
        (Rung::Adopt, Fault::Upgrade) => {
            "same pids (layers and services), new exec of each, no output line lost, no reset"
                .into()
        }
        (Rung::Adopt, Fault::RestarterStop) => "killed after hang_timeout, restarted; services keep their pids; no output line lost; no reset".into(),
        (Rung::Adopt, _) => {
            "restarted by init; services keep their pids; no output line lost; no reset".into()
        }
        (Rung::Reboot, Fault::TetherctlReboot) => "clean reboot; next boot: requested".into(),
        (Rung::Reboot, _) => "orderly reboot; next boot names the service".into(),
        (Rung::HardwareReset, Fault::InitHang) => {
            "hardware reset; next boot: init silent, card reset".into()
        }
        (Rung::HardwareReset, _) => "hardware reset".into(),
    }
}

/// Runs the plan row's fault on the booted row (the chain is up) and checks
/// its rung.
pub fn run_fault(row: &mut Row, p: &PlanRow) -> Result<(), String> {
    for verb in &p.prepare {
        let r = row.agent(verb)?;
        if r.value
            .get("code")
            .and_then(|c| c.as_i64())
            .is_some_and(|c| c != 0)
        {
            return Err(format!("prepare `{}`: {}", verb, r.str("out")));
        }
    }
    let service = p.service.clone().unwrap_or_default();
    if p.ssh_session {
        let login = row
            .ssh
            .clone()
            .ok_or("session = \"ssh\" without --ssh-key")?;
        let mut session = super::session::Session::open(&login)?;
        let fault = Instant::now();
        let r = run_fault_itself(row, p, &service);
        let survived = session.check_survived(fault);
        match (&r, survived) {
            (Ok(()), Ok(s)) => row.result.observed.push_str(&format!("; {}", s)),
            (Ok(()), Err(e)) => {
                row.result.observed.push_str(&format!("; {}", e));
                return Err(e);
            }
            (Err(_), _) => {}
        }
        return r;
    }
    run_fault_itself(row, p, &service)
}

/// The fault and its checks (after `prepare`; inside the session's watch
/// when there is one).
fn run_fault_itself(row: &mut Row, p: &PlanRow, service: &str) -> Result<(), String> {
    let service = service.to_string();
    if p.expect == Rung::NoReset && p.fault.rung() != Rung::NoReset {
        // The plan claims this fault leaves the machine alone: inject it
        // and watch for any reset.
        let k = row.agent(&inject_verb(p, &service))?;
        row.result.observed = format!("injected ({})", inject_verb(p, &service));
        if let Err(e) = row.no_reset_after(k.event.at) {
            let short = e.split("; last events").next().unwrap_or(&e).to_string();
            row.result.observed = format!("a reset happened: {}", short);
            return Err(e);
        }
        row.result.observed.push_str("; no reset");
        return Ok(());
    }
    match p.fault {
        Fault::ServiceKill => svc_row(row, &service, p.signal.as_deref().unwrap_or("KILL")),
        Fault::ServiceHang => service_hang(row, &service, p.signal.as_deref().unwrap_or("STOP")),
        Fault::RestarterKill => restarter_row(row, "signal {} KILL"),
        Fault::RestarterStop => restarter_row(row, "signal {} STOP"),
        Fault::RestarterOom => restarter_oom(row),
        Fault::WatchdogdKill => layer_row(row, "watchdogd", "signal {} KILL"),
        Fault::WatchdogdStop => layer_row(row, "watchdogd", "signal {} STOP"),
        Fault::InitHang => init_hang(row),
        Fault::KernelPanic => reset_row(row, "panic", Some("Kernel panic")).map(|_| ()),
        Fault::CrashLoop => crash_loop(row, &service),
        Fault::TetherctlReboot => tetherctl_reboot(row),
        Fault::SyslogFlood => syslog_flood(row, &service, p),
        Fault::SyslogKill => syslog_kill(row, &service),
        Fault::Upgrade => upgrade(row),
    }
}

/// The agent verb that injects the fault (for the "no reset" check).
fn inject_verb(p: &PlanRow, service: &str) -> String {
    let sig = |d: &str| p.signal.clone().unwrap_or_else(|| d.to_string());
    match p.fault {
        Fault::ServiceKill | Fault::CrashLoop | Fault::SyslogFlood | Fault::SyslogKill => {
            format!("signal svc:{} {}", service, sig("KILL"))
        }
        Fault::ServiceHang => format!("signal svc:{} {}", service, sig("STOP")),
        Fault::RestarterKill => "signal restarter KILL".into(),
        Fault::RestarterStop => "signal restarter STOP".into(),
        Fault::RestarterOom => "oom restarter".into(),
        Fault::WatchdogdKill => "signal watchdogd KILL".into(),
        Fault::WatchdogdStop => "signal watchdogd STOP".into(),
        Fault::InitHang => "hold-init".into(),
        Fault::KernelPanic => "panic".into(),
        Fault::TetherctlReboot => "exec tetherctl reboot".into(),
        Fault::Upgrade => "exec tetherctl upgrade restarter".into(),
    }
}

impl Row {
    /// The row's own bound, with the usual slack.
    fn check_row_bound(&mut self, time: Duration) -> Result<(), String> {
        let (b, f) = (self.bound, self.formula.clone());
        self.check_bound(time, b, &f, SLACK)
    }

    pub fn agent(&mut self, cmd: &str) -> Result<Reply, String> {
        self.g.vm.agent(cmd, CMD).map_err(|e| e.to_string())
    }

    fn status(&mut self) -> Result<Value, String> {
        Ok(self.agent("status")?.value["status"].clone())
    }

    fn snapshot(&mut self) -> Result<Snapshot, String> {
        let restarter = self.agent("pid restarter")?.i64("pid");
        let watchdogd = self.agent("pid watchdogd")?.i64("pid");
        let mut services = BTreeMap::new();
        let st = self.status()?;
        for s in st["services"].as_array().cloned().unwrap_or_default() {
            let name = s["name"].as_str().unwrap_or("").to_string();
            services.insert(
                name,
                (
                    s["pid"].as_i64().unwrap_or(0),
                    s["restarts"].as_u64().unwrap_or(0),
                ),
            );
        }
        Ok(Snapshot {
            restarter,
            watchdogd,
            services,
        })
    }

    /// The first boot: agent up, then every service running.
    pub fn wait_up(&mut self) -> Result<Reply, String> {
        self.g
            .vm
            .wait_agent_ready(Duration::from_secs(120))
            .map_err(|e| e.to_string())?;
        self.agent("wait-chain 60000")
    }

    /// Records the time and the bound; an error when over `bound + slack`.
    fn check_bound(
        &mut self,
        time: Duration,
        bound: Duration,
        formula: &str,
        slack: Duration,
    ) -> Result<(), String> {
        self.result.time = Some(time);
        self.result.bound = Some(bound);
        self.result.formula = formula.to_string();
        if time > bound + slack {
            return Err(format!(
                "took {:.2}s, over the bound {:.2}s ({}) + {:.1}s slack",
                time.as_secs_f64(),
                bound.as_secs_f64(),
                formula,
                slack.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// No hardware watchdog and no reset of any kind until
    /// `fault + stale_timeout + hardware_timeout + 2 s`.
    fn no_reset_after(&mut self, fault: Instant) -> Result<(), String> {
        let t = &self.config.timing;
        let until = fault
            + t.stale_timeout_for("init").max(t.stale_timeout)
            + t.hardware_timeout
            + Duration::from_secs(2);
        let during = until.saturating_duration_since(Instant::now());
        self.g
            .vm
            .timeline
            .expect_none("reset", during, |e| {
                e.source == Source::Qmp
                    && (e.text.starts_with("WATCHDOG") || e.text.starts_with("RESET"))
            })
            .map_err(|e| e.to_string())
    }

    /// Whether the image runs the `counter` service (`cseq=N` lines).
    fn has_counter(&mut self) -> Result<bool, String> {
        let st = self.status()?;
        Ok(st["services"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["name"] == "counter")))
    }

    /// Waits (host time) without reading the timeline.
    fn pause(&mut self, d: Duration) {
        let _ = self.g.vm.timeline.expect_none("nothing", d, |_| false);
    }

    /// The timeline's length now: events from here on are "after now".
    fn now_index(&self) -> usize {
        self.g.vm.timeline.events().len()
    }

    /// The first guest line (agent or console: an image may log to either)
    /// at or after index `from` whose text contains `needle`; the
    /// timeline's cursor is left where it was.
    fn wait_agent_since(
        &mut self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<Event, String> {
        let tl = &mut self.g.vm.timeline;
        let saved = tl.mark();
        tl.seek(from);
        let r = tl.wait_for(&format!("a line {:?}", needle), timeout, |e| {
            matches!(e.source, Source::Agent | Source::Console) && e.text.contains(needle)
        });
        tl.seek(saved);
        r.map_err(|e| e.to_string())
    }

    fn wait_qmp(&mut self, what: &str, timeout: Duration) -> Result<Event, String> {
        self.g
            .vm
            .timeline
            .wait_line(Source::Qmp, what, timeout)
            .map_err(|e| e.to_string())
    }

    /// After a reset: the next boot's `previous boot ended` line, the
    /// preinit's view of the device boot status, and the chain up again.
    fn next_boot(&mut self) -> Result<NextBoot, String> {
        let tl = &mut self.g.vm.timeline;
        let mark = tl.mark();
        let preinit = tl
            .wait_line(
                Source::Console,
                "tether-vm: preinit done",
                Duration::from_secs(120),
            )
            .map_err(|e| e.to_string())?;
        tl.seek(mark);
        let cause = tl
            .wait_for(
                "the next boot's `previous boot ended` line",
                Duration::from_secs(120),
                |e| {
                    matches!(e.source, Source::Console | Source::Agent)
                        && e.text.contains("previous boot ended")
                },
            )
            .map_err(|e| e.to_string())?;
        tl.seek(mark);
        self.g
            .vm
            .wait_agent_ready(Duration::from_secs(120))
            .map_err(|e| e.to_string())?;
        let up = self.agent("wait-chain 60000")?;
        let text = cause.text;
        let cause = text[text.find("previous boot ended").unwrap_or(0)..].to_string();
        let bootstatus = preinit
            .text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("bootstatus="))
            .unwrap_or("")
            .to_string();
        Ok(NextBoot {
            cause,
            bootstatus,
            up,
        })
    }
}

struct NextBoot {
    cause: String,
    /// `/sys/class/watchdog/watchdog0/bootstatus` (32 = WDIOF_CARDRESET).
    bootstatus: String,
    up: Reply,
}

fn unchanged(
    before: &Snapshot,
    after: &Snapshot,
    except_service: Option<&str>,
) -> Result<(), String> {
    if before.restarter != after.restarter || before.watchdogd != after.watchdogd {
        return Err(format!(
            "a layer was disturbed: before {:?}, after {:?}",
            before, after
        ));
    }
    for (name, (pid, restarts)) in &before.services {
        if Some(name.as_str()) == except_service {
            continue;
        }
        let (p2, r2) = after.services.get(name).copied().unwrap_or((0, 0));
        if (p2, r2) != (*pid, *restarts) {
            return Err(format!(
                "service {} was disturbed: pid {} → {}, restarts {} → {}",
                name, pid, p2, restarts, r2
            ));
        }
    }
    Ok(())
}

fn svc_row(row: &mut Row, service: &str, signal: &str) -> Result<(), String> {
    let before = row.snapshot()?;
    let k = row.agent(&format!("signal svc:{} {}", service, signal))?;
    let a = row.agent(&format!("await svc:{} {} 30000", service, k.i64("pid")))?;
    let took = ms(a.u64("t_ms") - k.u64("t_ms"));
    row.result.observed = format!("{} pid {} → {}", service, k.i64("pid"), a.i64("pid"));
    row.check_row_bound(took)?;
    let after = row.snapshot()?;
    unchanged(&before, &after, Some(service))?;
    row.no_reset_after(k.event.at)?;
    row.result
        .observed
        .push_str("; other services, restarter, watchdogd untouched; no reset");
    Ok(())
}

fn service_hang(row: &mut Row, service: &str, signal: &str) -> Result<(), String> {
    svc_row(row, service, signal)?;
    let st = row.status()?;
    let hb = st["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == service))
        .cloned()
        .unwrap_or_default();
    row.result.observed.push_str(&format!(
        "; last exit: {}",
        hb["last_exit"].as_str().unwrap_or("?")
    ));
    Ok(())
}

fn crash_loop(row: &mut Row, service: &str) -> Result<(), String> {
    let k = row.agent(&format!("signal svc:{} KILL", service))?;
    let reset = row.wait_qmp("RESET", Duration::from_secs(180))?;
    {
        let tl = &row.g.vm.timeline;
        if let Some(w) = tl.events().iter().find(|e| e.is(Source::Qmp, "WATCHDOG")) {
            return Err(format!("the hardware watchdog fired: {}", tl.format(w)));
        }
    }
    let took = reset.at - k.event.at;
    let nb = row.next_boot()?;
    row.result.cause = nb.cause.clone();
    row.result.observed = format!(
        "reboot {:.1}s after the first crash, no watchdog; up again {:.1}s after the fault",
        took.as_secs_f64(),
        (nb.up.event.at - k.event.at).as_secs_f64()
    );
    row.check_row_bound(took)?;
    if !nb.cause.contains(service) {
        return Err(format!(
            "the next boot does not name the service: {}",
            nb.cause
        ));
    }
    Ok(())
}

/// `inject`: the agent command, `{}` standing for the layer.
fn layer_row(row: &mut Row, layer: &str, inject: &str) -> Result<(), String> {
    let before = row.snapshot()?;
    let old = if layer == "restarter" {
        before.restarter
    } else {
        before.watchdogd
    };
    let k = row.agent(&inject.replace("{}", layer))?;
    let fault_t = k.u64("t_ms");
    let a = row.agent(&format!("await {} {} 30000", layer, old))?;
    let took = ms(a.u64("t_ms") - fault_t);
    row.result.observed = format!("{} pid {} → {}", layer, old, a.i64("pid"));
    row.check_row_bound(took)?;
    old_gone(row, layer, old)?;
    if layer == "restarter" {
        let up = row.agent("wait-chain 30000")?;
        row.result.observed.push_str(&format!(
            "; services back {:.2}s after the fault",
            ms(up.u64("t_ms") - fault_t).as_secs_f64()
        ));
    }
    let after = row.snapshot()?;
    let other_same = if layer == "restarter" {
        before.watchdogd == after.watchdogd
    } else {
        before.restarter == after.restarter
    };
    if !other_same {
        return Err(format!(
            "the other layer was disturbed: before {:?}, after {:?}",
            before, after
        ));
    }
    if layer == "watchdogd" {
        unchanged(
            &before,
            &Snapshot {
                watchdogd: before.watchdogd,
                ..after
            },
            None,
        )?;
    }
    row.no_reset_after(k.event.at)?;
    row.result.observed.push_str("; no reset");
    Ok(())
}

/// The counter's last number in syslogd's file now: the start of the
/// window a row checks for lost lines.
fn counter_mark(row: &mut Row) -> Result<u64, String> {
    if !row.has_counter()? {
        return Ok(0);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = row
            .agent(&format!("seq 0 {}", row.syslog_files.join(" ")))?
            .u64("last");
        if last > 0 {
            return Ok(last);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no counter line (cseq=N) in {}",
                row.syslog_files.join(", ")
            ));
        }
        row.pause(ms(500));
    }
}

/// Every counter line from `cseq=from` on reached syslogd's file, none
/// missing, and the counter went on past `cseq=until + 50` (half a second
/// after `until`): the window spans the fault and the recovery. Repeats
/// are allowed and reported: lines a restarter had in hand when it died
/// stay in the pipe and the next one sends them again (at-least-once,
/// `restarter/src/output.rs`).
fn no_line_lost(row: &mut Row, from: u64, until: u64) -> Result<String, String> {
    if !row.has_counter()? {
        return Ok("no `counter` service in the image: output loss not checked".into());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = row.agent(&format!("seq {} {}", from, row.syslog_files.join(" ")))?;
        if !s.value["found"].as_bool().unwrap_or(false) {
            return Err(format!(
                "counter line cseq={} is no longer in {} (rotated away?)",
                from,
                row.syslog_files.join(", ")
            ));
        }
        if s.u64("lost") > 0 {
            return Err(format!(
                "counter lines lost after cseq={}: {} missing, {} repeated; gaps {}",
                from,
                s.u64("lost"),
                s.u64("repeats"),
                s.value["gaps"]
            ));
        }
        if s.u64("last") >= until + 50 {
            return Ok(format!(
                "counter lines cseq={}..{} ({}) in syslog, none lost, {} sent again",
                from,
                s.u64("last"),
                s.u64("lines"),
                s.u64("repeats")
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the counter stopped reaching syslog at cseq={} (wanted past {})",
                s.u64("last"),
                until + 50
            ));
        }
        row.pause(ms(500));
    }
}

/// The `dropped_lines` of a service in the status.
fn dropped_lines(row: &mut Row, service: &str) -> Result<u64, String> {
    let st = row.status()?;
    Ok(st["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == service))
        .and_then(|s| s["dropped_lines"].as_u64())
        .unwrap_or(0))
}

/// The old process is gone (or a zombie nobody reaped yet).
fn old_gone(row: &mut Row, layer: &str, old: i64) -> Result<(), String> {
    let gone = row.agent(&format!(
        "exec cat /proc/{}/stat 2>/dev/null | cut -d' ' -f3 || true",
        old
    ))?;
    let state = gone.str("out").trim().to_string();
    if !state.is_empty() && state != "Z" {
        return Err(format!(
            "the old {} (pid {}) is still there, state {}",
            layer, old, state
        ));
    }
    Ok(())
}

/// `N service(s) adopted` and `X ms after start` of the restarter's
/// `adoption done: ...` line.
fn adoption_figures(text: &str) -> (Option<u64>, Option<u64>) {
    let rest = &text[text.find("adoption done").unwrap_or(0)..];
    let words: Vec<&str> = rest.split_whitespace().collect();
    let before = |w: &str| {
        words
            .iter()
            .position(|x| x.starts_with(w))
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| words[i].parse::<u64>().ok())
    };
    (before("service(s)"), before("ms"))
}

/// Issue 13: the restarter dies (`inject`, `{}` standing for it) and init
/// starts a new one, which adopts every service: same pids, same restart
/// counts, the watchdog-mode `heartbeat` never restarted, no counter line
/// lost on the way to syslog, no reset.
fn restarter_row(row: &mut Row, inject: &str) -> Result<(), String> {
    let before = row.snapshot()?;
    let from = counter_mark(row)?;
    let old = before.restarter;
    let since = row.now_index();
    let k = row.agent(&inject.replace("{}", "restarter"))?;
    let fault_t = k.u64("t_ms");
    let a = row.agent(&format!("await restarter {} 30000", old))?;
    let took = ms(a.u64("t_ms") - fault_t);
    row.result.observed = format!("restarter pid {} → {}", old, a.i64("pid"));
    row.check_row_bound(took)?;
    old_gone(row, "restarter", old)?;
    let done = row.wait_agent_since(since, "adoption done", Duration::from_secs(30))?;
    let (adopted, adopt_ms) = adoption_figures(&done.text);
    let up = row.agent("wait-chain 30000")?;
    let after = row.snapshot()?;
    unchanged(
        &before,
        &Snapshot {
            restarter: before.restarter,
            ..after.clone()
        },
        None,
    )?;
    if adopted != Some(before.services.len() as u64) {
        return Err(format!(
            "{} services ran, the new restarter says: {}",
            before.services.len(),
            done.text
        ));
    }
    let until = counter_mark(row)?;
    let lines = no_line_lost(row, from, until)?;
    let dropped = dropped_lines(row, "counter")?;
    if dropped > 0 {
        return Err(format!(
            "the restarter counts {} dropped counter lines",
            dropped
        ));
    }
    row.result.observed.push_str(&format!(
        "; all {} services adopted ({} ms after the new restarter's start), supervised again {:.2}s after the fault; same pids and restart counts for every service, watchdog-mode ones included; {}",
        before.services.len(),
        adopt_ms.map(|m| m.to_string()).unwrap_or_else(|| "?".into()),
        ms(up.u64("t_ms") - fault_t).as_secs_f64(),
        lines
    ));
    row.no_reset_after(k.event.at)?;
    row.result.observed.push_str("; no reset");
    Ok(())
}

fn restarter_oom(row: &mut Row) -> Result<(), String> {
    restarter_row(row, "oom {}")?;
    // The restarter was the OOM killer's first victim, and no other
    // process of the chain was taken (the hog itself may have been). The
    // kernel says "Out of memory: Killed process" for a global OOM kill
    // and "Memory cgroup out of memory: Killed process" for one inside the
    // agent's memory cgroup (tether-fault `oom`, when the guest has the v1
    // memory controller).
    let kills: Vec<String> = row
        .g
        .vm
        .timeline
        .events()
        .iter()
        .filter(|e| {
            e.source == Source::Agent
                && e.text
                    .to_ascii_lowercase()
                    .contains("out of memory: killed process")
        })
        .map(|e| e.text.clone())
        .collect();
    let first_is_restarter = kills
        .first()
        .is_some_and(|k| k.contains("(tether-restarte"));
    let others_are_hog = kills.iter().skip(1).all(|k| k.contains("(tether-fault)"));
    if !first_is_restarter || !others_are_hog {
        return Err(format!(
            "expected the OOM killer to take the restarter (and at most the hog): {:?}",
            kills
        ));
    }
    row.result.observed.push_str(&format!(
        "; OOM victims: restarter{}",
        if kills.len() > 1 {
            ", then the hog"
        } else {
            ""
        }
    ));
    Ok(())
}

/// Replaces `/sbin/NAME` by a copy (a new inode, as a package upgrade's
/// rename does) and returns `(inode of the running process's exe, inode of
/// the new file)`.
fn replace_binary(row: &mut Row, name: &str, pid: i64) -> Result<(u64, u64), String> {
    let r = row.agent(&format!(
        "exec stat -L -c %i /proc/{pid}/exe && cp /sbin/{name} /sbin/.{name}.new && mv -f /sbin/.{name}.new /sbin/{name} && stat -c %i /sbin/{name}"
    ))?;
    let n: Vec<u64> = r
        .str("out")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match (r.i64("code"), n.as_slice()) {
        (0, [old, new]) if old != new => Ok((*old, *new)),
        _ => Err(format!("replacing /sbin/{}: {:?}", name, r.value)),
    }
}

/// The inode of `/proc/PID/exe`.
fn exe_inode(row: &mut Row, pid: i64) -> Result<u64, String> {
    let r = row.agent(&format!("exec stat -L -c %i /proc/{}/exe", pid))?;
    r.str("out")
        .trim()
        .parse()
        .map_err(|_| format!("stat /proc/{}/exe: {:?}", pid, r.value))
}

fn upgrade(row: &mut Row) -> Result<(), String> {
    let before = row.snapshot()?;
    let from = counter_mark(row)?;
    // The restarter.
    let (old_ino, new_ino) = replace_binary(row, "tether-restarter", before.restarter)?;
    let since = row.now_index();
    let u = row.agent("exec tetherctl upgrade restarter")?;
    if u.i64("code") != 0 || !u.str("out").contains("exec of") {
        return Err(format!("tetherctl upgrade restarter: {:?}", u.value));
    }
    let done = row.wait_agent_since(since, "adoption done", Duration::from_secs(30))?;
    let (adopted, adopt_ms) = adoption_figures(&done.text);
    let rst_took = done.at - u.event.at;
    if adopted != Some(before.services.len() as u64) {
        return Err(format!(
            "{} services ran, the upgraded restarter says: {}",
            before.services.len(),
            done.text
        ));
    }
    let rst_ino = exe_inode(row, before.restarter)?;
    if rst_ino != new_ino {
        return Err(format!(
            "restarter pid {} still runs exe inode {} (old {}, new file {})",
            before.restarter, rst_ino, old_ino, new_ino
        ));
    }
    row.check_row_bound(rst_took)?;
    let mid = row.snapshot()?;
    unchanged(&before, &mid, None)?;
    // init.
    let (iold, inew) = replace_binary(row, "tether-init", 1)?;
    let since = row.now_index();
    let u = row.agent("exec tetherctl upgrade init")?;
    if u.i64("code") != 0 {
        return Err(format!("tetherctl upgrade init: {:?}", u.value));
    }
    let resumed = row.wait_agent_since(since, "resumed after upgrade", Duration::from_secs(30))?;
    let init_took = resumed.at - u.event.at;
    let init_ino = exe_inode(row, 1)?;
    if init_ino != inew {
        return Err(format!(
            "PID 1 still runs exe inode {} (old {}, new file {})",
            init_ino, iold, inew
        ));
    }
    let stale = row.config.timing.stale_timeout_for("init");
    if init_took > stale + SLACK {
        return Err(format!(
            "init resumed {:.2}s after the request, over stale_timeout (init) {:.2}s + slack",
            init_took.as_secs_f64(),
            stale.as_secs_f64()
        ));
    }
    row.pause(Duration::from_secs(2));
    let _ = row.agent("wait-chain 30000")?;
    let after = row.snapshot()?;
    unchanged(&before, &after, None)?;
    let until = counter_mark(row)?;
    let lines = no_line_lost(row, from, until)?;
    let dropped = dropped_lines(row, "counter")?;
    if dropped > 0 {
        return Err(format!(
            "the restarter counts {} dropped counter lines",
            dropped
        ));
    }
    row.result.observed = format!(
        "restarter pid {} exec'd anew (exe inode {} → {}), {} services adopted {:.2}s after the request ({} ms after the new image's start); init pid 1 exec'd anew (exe inode {} → {}), resumed {:.2}s after the request (bound stale_timeout (init) {:.0} s); watchdogd, restarter and service pids and restart counts unchanged for every service, watchdog-mode ones included; {}",
        before.restarter,
        old_ino,
        rst_ino,
        before.services.len(),
        rst_took.as_secs_f64(),
        adopt_ms.map(|m| m.to_string()).unwrap_or_else(|| "?".into()),
        iold,
        init_ino,
        init_took.as_secs_f64(),
        stale.as_secs_f64(),
        lines
    );
    row.no_reset_after(u.event.at)?;
    row.result.observed.push_str("; no reset");
    Ok(())
}

/// `marker`: a console line that marks the fault more precisely than the
/// agent's reply (the kernel's panic message), if any.
fn reset_row(row: &mut Row, inject: &str, marker: Option<&str>) -> Result<NextBoot, String> {
    let k = row.agent(inject)?;
    let mut fault = k.event.at;
    if let Some(m) = marker {
        let mark = row.g.vm.timeline.mark();
        fault = row
            .g
            .vm
            .timeline
            .wait_line(Source::Console, m, Duration::from_secs(30))
            .map_err(|e| e.to_string())?
            .at;
        row.g.vm.timeline.seek(mark);
    }
    let fired = row.wait_qmp("WATCHDOG", Duration::from_secs(120))?;
    let took = fired.at - fault;
    let nb = row.next_boot()?;
    row.result.cause = format!("{} (bootstatus {})", nb.cause, nb.bootstatus);
    row.result.observed = format!(
        "hardware reset {:.1}s after the fault; chain up again {:.1}s after the fault",
        took.as_secs_f64(),
        (nb.up.event.at - fault).as_secs_f64()
    );
    // Host-side times include the serial round trip: same slack.
    row.check_row_bound(took)?;
    if nb.bootstatus != "32" {
        return Err(format!(
            "the next boot's device boot status is {:?}, not a card reset (32)",
            nb.bootstatus
        ));
    }
    Ok(nb)
}

fn init_hang(row: &mut Row) -> Result<(), String> {
    let nb = reset_row(row, "hold-init", None)?;
    if !(nb.cause.contains("watchdog") && nb.cause.contains("init")) {
        return Err(format!(
            "the next boot does not say init went silent: {}",
            nb.cause
        ));
    }
    Ok(())
}

/// Issue 11 item 10: after an orderly shutdown the state disk (ext4 on
/// `/var`) must have been remounted read-only, not left read-write with its
/// journal to replay. Read from the host right after QMP `RESET`, before
/// the next boot mounts it: the superblock's state and `needs_recovery`.
fn state_disk_left_clean(row: &mut Row) -> Result<String, String> {
    let s = row.g.disk.super_state().map_err(|e| e.to_string())?;
    let said = |needle: &str| {
        row.g
            .vm
            .timeline
            .events()
            .iter()
            .any(|e| e.is(Source::Console, needle))
    };
    // The image's root disk (`--disk`, mounted on `/`) or the blank state
    // disk the demo mounts on `/var`.
    let (what, mount) = if row.root_disk {
        ("root filesystem", "/ (ext4) remounted read-only")
    } else {
        ("state disk", "/var (ext4) remounted read-only")
    };
    let remounted = said(mount);
    let reaped = said("all processes reaped");
    if !s.is_clean() {
        return Err(format!(
            "the {} was left mounted read-write: superblock state {:?}, needs_recovery {} (init logged the remount: {})",
            what, s.state, s.needs_recovery, remounted
        ));
    }
    if !reaped {
        return Err("init did not log that every process was reaped after SIGKILL".into());
    }
    Ok(format!(
        "SIGTERM-ignoring holder SIGKILLed and reaped, {} clean (superblock: no journal to replay)",
        what
    ))
}

fn tetherctl_reboot(row: &mut Row) -> Result<(), String> {
    // A process outside the services that ignores SIGTERM and holds
    // a file on the state disk open for writing: only SIGKILL and
    // its reap let /var go read-only (else EBUSY).
    let h = row.agent(
        "exec sh -c 'trap \"\" TERM; exec 3>>/var/log/holder; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &",
    )?;
    if h.i64("code") != 0 {
        return Err(format!("starting the holder: {}", h.str("out")));
    }
    let k = row.agent("exec tetherctl reboot")?;
    if k.i64("code") != 0 {
        return Err(format!("tetherctl reboot: {}", k.str("out")));
    }
    let reset = row.wait_qmp("RESET", Duration::from_secs(120))?;
    // At once, before the next boot mounts it again.
    let disk = state_disk_left_clean(row)?;
    if row
        .g
        .vm
        .timeline
        .events()
        .iter()
        .any(|e| e.is(Source::Qmp, "WATCHDOG"))
    {
        return Err("the hardware watchdog fired during a clean reboot".into());
    }
    let took = reset.at - k.event.at;
    let nb = row.next_boot()?;
    row.result.cause = nb.cause.clone();
    row.result.observed = format!(
        "reboot {:.1}s after the request, no watchdog, {}; chain up again {:.1}s after it",
        took.as_secs_f64(),
        disk,
        (nb.up.event.at - k.event.at).as_secs_f64()
    );
    row.check_row_bound(took)?;
    if !(nb.cause.contains("reboot")
        && (nb.cause.contains("tetherctl") || nb.cause.contains("request")))
    {
        return Err(format!(
            "the next boot does not report a requested reboot: {}",
            nb.cause
        ));
    }
    Ok(())
}

fn syslog_flood(row: &mut Row, syslog: &str, p: &PlanRow) -> Result<(), String> {
    // The plan's `prepare` started the flood (e.g. `signal svc:heartbeat
    // USR2`); `flooder` names the flooding service, `summary` the file it
    // writes when done (`lines=N max_write_ms=M`).
    let flooder = p.flooder.clone().ok_or("syslog-flood needs `flooder`")?;
    let summary_file = p.summary.clone().ok_or("syslog-flood needs `summary`")?;
    let before = row.snapshot()?;
    let hb = before
        .services
        .get(&flooder)
        .copied()
        .ok_or_else(|| format!("no service {}", flooder))?;
    row.pause(Duration::from_secs(1));
    let k = row.agent(&format!("signal svc:{} KILL", syslog))?;
    let a = row.agent(&format!("await svc:{} {} 30000", syslog, k.i64("pid")))?;
    row.check_row_bound(ms(a.u64("t_ms") - k.u64("t_ms")))?;
    let mut summary = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let r = row.agent(&format!("exec cat {} 2>/dev/null || true", summary_file))?;
        summary = r.str("out").trim().to_string();
        if !summary.is_empty() {
            break;
        }
        let _ = row
            .g
            .vm
            .timeline
            .expect_none("nothing", Duration::from_millis(500), |_| false);
    }
    if summary.is_empty() {
        return Err("the flood never finished (the service blocked or was killed)".into());
    }
    let field = |k: &str| {
        summary
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    let (lines, max_write) = (field("lines="), field("max_write_ms="));
    let after = row.snapshot()?;
    let hb2 = after.services.get(&flooder).copied().unwrap_or((0, 0));
    if hb2 != hb {
        return Err(format!(
            "{} was restarted during the flood (pid, restarts) {:?} → {:?}",
            flooder, hb, hb2
        ));
    }
    if max_write > 1000 {
        return Err(format!("a write to stdout blocked {} ms", max_write));
    }
    let dropped = dropped_lines(row, &flooder)?;
    if dropped == 0 {
        return Err(format!("no dropped lines counted for {}", flooder));
    }
    let mut report_line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && report_line.is_empty() {
        let r = row.agent(&format!(
            "exec grep -h -i -m 2 'dropped' {} 2>/dev/null | grep -v 'flood line' || true",
            row.syslog_files.join(" ")
        ))?;
        report_line = r.str("out").lines().next().unwrap_or("").to_string();
        if report_line.is_empty() {
            let _ = row
                .g
                .vm
                .timeline
                .expect_none("nothing", Duration::from_secs(1), |_| false);
        }
    }
    if report_line.is_empty() {
        return Err("the loss was never reported in syslog".into());
    }
    row.result.observed = format!(
        "{} never restarted; {} lines written, longest write {} ms; {} dropped, reported: {}",
        flooder,
        lines,
        max_write,
        dropped,
        report_line.trim()
    );
    row.no_reset_after(k.event.at)?;
    Ok(())
}

/// The counter's last number as it published it (`/run/tether-fault-counter`).
fn counter_now(row: &mut Row) -> Result<u64, String> {
    let r = row.agent("exec cat /run/tether-fault-counter")?;
    r.str("out").trim().parse().map_err(|_| {
        format!(
            "the counter does not publish its number in /run/tether-fault-counter: {:?}",
            r.value
        )
    })
}

/// The syslog daemon killed (issue 15's rsyslogd row): restarted; the
/// counter's lines written while it was down (after the kill, until it is
/// back) reach its file once it is back, or the restarter counts them as
/// dropped. Lines the killed daemon had already taken (in its socket's
/// queue or its memory) die with it and no sender can know: counted and
/// reported, not failed. The window: `n_kill` is the counter's number
/// read right after the kill (lines up to it may have been taken), `n_up`
/// its number once the daemon runs again.
fn syslog_kill(row: &mut Row, syslog: &str) -> Result<(), String> {
    let before = row.snapshot()?;
    let from = counter_mark(row)?;
    let k = row.agent(&format!("signal svc:{} KILL", syslog))?;
    let n_kill = counter_now(row)?;
    let a = row.agent(&format!("await svc:{} {} 30000", syslog, k.i64("pid")))?;
    let took = ms(a.u64("t_ms") - k.u64("t_ms"));
    row.result.observed = format!("{} pid {} → {}", syslog, k.i64("pid"), a.i64("pid"));
    row.check_row_bound(took)?;
    let _ = row.agent("wait-chain 30000")?;
    let n_up = counter_now(row)?;
    if n_up < n_kill + 3 {
        return Err(format!(
            "{} was back too soon to test anything (counter {} at the kill, {} when back)",
            syslog, n_kill, n_up
        ));
    }
    // Until the daemon has written past the window (half a second after).
    let files = row.syslog_files.join(" ");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = row.agent(&format!("missing 1 0 {}", files))?;
        if m.u64("last_seen") > n_up + 50 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the counter's lines stopped reaching {} at cseq={} (wanted past {})",
                files,
                m.u64("last_seen"),
                n_up + 50
            ));
        }
        row.pause(ms(500));
    }
    let taken = row.agent(&format!("missing {} {} {}", from, n_kill, files))?;
    let down = row.agent(&format!("missing {} {} {}", n_kill + 1, n_up, files))?;
    let dropped = dropped_lines(row, "counter")?;
    row.result.observed.push_str(&format!(
        "; counter lines {}..={} written while it was down: {} missing, {} counted as dropped by the restarter; {} line(s) before the kill lost with the killed daemon",
        n_kill + 1,
        n_up,
        down.u64("count"),
        dropped,
        taken.u64("count")
    ));
    if down.u64("count") > dropped {
        return Err(format!(
            "counter lines written while {} was down never arrived ({} missing, first {}), and only {} were counted as dropped",
            syslog,
            down.u64("count"),
            down.value["first"],
            dropped
        ));
    }
    let after = row.snapshot()?;
    unchanged(&before, &after, Some(syslog))?;
    row.no_reset_after(k.event.at)?;
    row.result
        .observed
        .push_str("; other services and layers untouched; no reset");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adoption_figures_are_read_from_the_restarters_line() {
        let l = "LOG Dec  2 00:44:57 (none) daemon.info tether-restarter[144]: adoption done: 5 service(s) adopted, 221 ms after start";
        assert_eq!(adoption_figures(l), (Some(5), Some(221)));
        assert_eq!(adoption_figures("adoption done: soon"), (None, None));
    }

    #[test]
    fn every_fault_has_an_expected_text_for_its_rung_and_for_no_reset() {
        for (_, f) in super::super::plan::FAULTS {
            assert!(!expected_text(*f, f.rung()).is_empty());
            assert_eq!(expected_text(*f, Rung::NoReset), "no reset of any kind");
        }
    }
}
