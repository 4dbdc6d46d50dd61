//! The fault plan of `tether-inject` (docs/INJECT.md): a TOML file naming
//! the faults to inject, in order, each with its expected rung and an
//! optional bound, and the plan's time budget.
//!
//! ```toml
//! budget = "20m"            # wall time for the whole plan (boots included)
//!
//! [[row]]
//! fault = "service-kill"    # see `Fault`
//! service = "ticker"        # service faults name a service of the image
//! # expect = "restart"      # default: the fault's rung (see `Fault::rung`)
//! # bound = "2s"            # default: the image's budget table
//! # prepare = "touch /run/x" # shell command run in the guest first
//! ```
//!
//! Parsing is in two steps: the schema (serde, through
//! `tether_common::config::parse_toml`, so errors read
//! `FILE:LINE:COLUMN: field `row.fault`: ...` like every other config),
//! then [`Plan::check`] against what the image holds (its services and its
//! `tether.toml`), whose errors name the row's key by line as well.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_common::budget::BudgetRow;
use tether_common::config::{parse_toml, Config, ConfigError};

/// A fault the tool can inject (the rows of the matrix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    ServiceKill,
    ServiceHang,
    RestarterKill,
    RestarterStop,
    RestarterOom,
    WatchdogdKill,
    WatchdogdStop,
    InitHang,
    KernelPanic,
    CrashLoop,
    TetherctlReboot,
    SyslogFlood,
    SyslogKill,
    Upgrade,
}

/// What a row expects to happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rung {
    /// The faulty service or layer restarted, nothing else touched.
    Restart,
    /// The restarter replaced, every service adopted (same pids).
    Adopt,
    /// An orderly reboot (no hardware watchdog).
    Reboot,
    /// The hardware watchdog resets the machine.
    HardwareReset,
    /// Nothing resets at all (the failing-on-purpose check of a plan).
    NoReset,
}

pub const FAULTS: &[(&str, Fault)] = &[
    ("service-kill", Fault::ServiceKill),
    ("service-hang", Fault::ServiceHang),
    ("restarter-kill", Fault::RestarterKill),
    ("restarter-stop", Fault::RestarterStop),
    ("restarter-oom", Fault::RestarterOom),
    ("watchdogd-kill", Fault::WatchdogdKill),
    ("watchdogd-stop", Fault::WatchdogdStop),
    ("init-hang", Fault::InitHang),
    ("kernel-panic", Fault::KernelPanic),
    ("crash-loop", Fault::CrashLoop),
    ("tetherctl-reboot", Fault::TetherctlReboot),
    ("syslog-flood", Fault::SyslogFlood),
    ("syslog-kill", Fault::SyslogKill),
    ("upgrade", Fault::Upgrade),
];

pub const RUNGS: &[(&str, Rung)] = &[
    ("restart", Rung::Restart),
    ("adopt", Rung::Adopt),
    ("reboot", Rung::Reboot),
    ("hardware-reset", Rung::HardwareReset),
    ("no-reset", Rung::NoReset),
];

impl Fault {
    pub fn word(self) -> &'static str {
        FAULTS.iter().find(|f| f.1 == self).map_or("?", |f| f.0)
    }

    /// Faults aimed at one service (`service` required).
    pub fn needs_service(self) -> bool {
        matches!(
            self,
            Fault::ServiceKill
                | Fault::ServiceHang
                | Fault::CrashLoop
                | Fault::SyslogFlood
                | Fault::SyslogKill
        )
    }

    /// The rung the chain promises for this fault.
    pub fn rung(self) -> Rung {
        match self {
            Fault::ServiceKill
            | Fault::ServiceHang
            | Fault::WatchdogdKill
            | Fault::WatchdogdStop
            | Fault::SyslogFlood
            | Fault::SyslogKill => Rung::Restart,
            Fault::RestarterKill | Fault::RestarterStop | Fault::RestarterOom | Fault::Upgrade => {
                Rung::Adopt
            }
            Fault::InitHang | Fault::KernelPanic => Rung::HardwareReset,
            Fault::CrashLoop | Fault::TetherctlReboot => Rung::Reboot,
        }
    }

    /// The budget row (`tether_common::budget::table` and the services'
    /// rows) that bounds this fault, `None` when the tool computes the
    /// bound itself (reboots, upgrades).
    pub fn budget_row(self, service: &str) -> Option<String> {
        Some(match self {
            Fault::ServiceKill | Fault::SyslogFlood | Fault::SyslogKill => {
                format!("service {} crash", service)
            }
            Fault::ServiceHang => format!("service {} hang", service),
            Fault::CrashLoop => format!("service {} crash loop", service),
            Fault::RestarterKill | Fault::RestarterOom => "restarter crash".into(),
            Fault::RestarterStop => "restarter hang".into(),
            Fault::WatchdogdKill => "watchdogd crash".into(),
            Fault::WatchdogdStop => "watchdogd hang".into(),
            Fault::InitHang => "init hang".into(),
            Fault::KernelPanic => "kernel hang".into(),
            Fault::TetherctlReboot | Fault::Upgrade => return None,
        })
    }
}

impl Rung {
    pub fn word(self) -> &'static str {
        RUNGS.iter().find(|r| r.1 == self).map_or("?", |r| r.0)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    #[serde(deserialize_with = "tether_common::duration::deserialize")]
    budget: Duration,
    #[serde(default)]
    syslog_files: Option<Vec<String>>,
    #[serde(default)]
    row: Vec<RawRow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    fault: String,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default, deserialize_with = "tether_common::duration::deserialize_opt")]
    bound: Option<Duration>,
    #[serde(default)]
    prepare: Vec<String>,
    #[serde(default)]
    signal: Option<String>,
    #[serde(default)]
    flooder: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// One row of a plan, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRow {
    /// 0-based index in the file.
    pub index: usize,
    pub fault: Fault,
    pub service: Option<String>,
    pub expect: Rung,
    /// Whether `expect` was written (else the fault's own rung).
    pub expect_given: bool,
    pub bound: Option<Duration>,
    /// Agent commands run first (`exec SHELL`, `signal svc:NAME SIG`, ...).
    pub prepare: Vec<String>,
    /// The signal of a service kill or hang (default KILL, STOP).
    pub signal: Option<String>,
    /// syslog-flood: the flooding service and the file it writes when done.
    pub flooder: Option<String>,
    pub summary: Option<String>,
    /// `session = "ssh"`: an interactive ssh session from the host is
    /// opened before the fault and must still be running, and answering,
    /// after the row's checks (needs `--ssh-key`).
    pub ssh_session: bool,
    /// The plan's `syslog_files` (the same for every row).
    pub syslog_files: Vec<String>,
    /// A label for the report (default: the fault and service).
    pub name: String,
}

/// A parsed plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub file: PathBuf,
    pub budget: Duration,
    /// Where the image's syslog daemon writes (oldest first), for the
    /// `counter` checks; default busybox syslogd's
    /// `/var/log/messages.0`, `/var/log/messages`.
    pub syslog_files: Vec<String>,
    pub rows: Vec<PlanRow>,
    /// The text, for locating the keys of later checks.
    text: String,
}

/// An error in a plan: file, line, column, field, what.
#[derive(Debug)]
pub struct PlanError(pub ConfigError);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for PlanError {}

/// What the image holds, as the checks need it.
#[derive(Clone, Debug, Default)]
pub struct ImageFacts {
    /// The image's `tether.toml`, parsed.
    pub config: Config,
    /// Service name → its `ServiceSpec` facts the checks use.
    pub services: BTreeMap<String, ServiceFacts>,
    /// The budget rows of the configuration and the services.
    pub bounds: Vec<BudgetRow>,
    /// The run can log in over ssh (`--ssh-key` was given): not a fact of
    /// the image, but what `session = "ssh"` needs.
    pub ssh: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceFacts {
    /// `notify = "watchdog"` with a `watchdog_timeout`.
    pub watchdog: bool,
    /// A restart limit with `on_exhausted = "reboot"`.
    pub reboots: bool,
}

impl Plan {
    /// Parses the plan's text (schema and the values on their own).
    pub fn parse(text: &str, file: &Path) -> Result<Plan, PlanError> {
        let raw: RawPlan = parse_toml(text, file).map_err(PlanError)?;
        let mut plan = Plan {
            file: file.to_path_buf(),
            budget: raw.budget,
            syslog_files: Vec::new(),
            rows: Vec::new(),
            text: text.to_string(),
        };
        match raw.syslog_files {
            None => {
                plan.syslog_files = vec!["/var/log/messages.0".into(), "/var/log/messages".into()]
            }
            Some(f) => {
                if f.is_empty() {
                    return Err(plan.error(
                        &["syslog_files"],
                        "name at least one file (or leave `syslog_files` out for /var/log/messages)".into(),
                    ));
                }
                if let Some(bad) = f
                    .iter()
                    .find(|p| !p.starts_with('/') || p.chars().any(|c| c.is_whitespace()))
                {
                    return Err(plan.error(
                        &["syslog_files"],
                        format!("{:?}: an absolute path without spaces", bad),
                    ));
                }
                plan.syslog_files = f;
            }
        }
        if raw.budget.is_zero() {
            return Err(plan.error(&["budget"], "the time budget must be positive".into()));
        }
        if raw.row.is_empty() {
            return Err(plan.error(&[], "the plan has no [[row]]".into()));
        }
        for (i, r) in raw.row.into_iter().enumerate() {
            let fault = FAULTS
                .iter()
                .find(|f| f.0 == r.fault)
                .map(|f| f.1)
                .ok_or_else(|| {
                    plan.row_error(
                        i,
                        "fault",
                        format!(
                            "unknown fault {:?}; one of: {}",
                            r.fault,
                            FAULTS.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?;
            if fault.needs_service() && r.service.is_none() {
                return Err(plan.row_error(
                    i,
                    "fault",
                    format!("fault {:?} needs `service = \"NAME\"`", r.fault),
                ));
            }
            if !fault.needs_service() && r.service.is_some() {
                return Err(plan.row_error(
                    i,
                    "service",
                    format!("fault {:?} takes no service", r.fault),
                ));
            }
            let expect = match &r.expect {
                None => fault.rung(),
                Some(e) => RUNGS
                    .iter()
                    .find(|x| x.0 == e)
                    .map(|x| x.1)
                    .ok_or_else(|| {
                        plan.row_error(
                            i,
                            "expect",
                            format!(
                                "unknown rung {:?}; one of: {}",
                                e,
                                RUNGS.iter().map(|x| x.0).collect::<Vec<_>>().join(", ")
                            ),
                        )
                    })?,
            };
            if expect != fault.rung() && expect != Rung::NoReset {
                return Err(plan.row_error(
                    i,
                    "expect",
                    format!(
                        "fault {:?} is checked for its own rung {:?} or for \"no-reset\", not {:?}",
                        r.fault,
                        fault.rung().word(),
                        expect.word()
                    ),
                ));
            }
            if fault == Fault::SyslogFlood && (r.flooder.is_none() || r.summary.is_none()) {
                return Err(plan.row_error(
                    i,
                    "fault",
                    "syslog-flood needs `flooder = \"SERVICE\"` and `summary = \"FILE\"` (and a `prepare` that starts the flood)".into(),
                ));
            }
            let ssh_session = match r.session.as_deref() {
                None => false,
                Some("ssh") => true,
                Some(other) => {
                    return Err(plan.row_error(
                        i,
                        "session",
                        format!("unknown session {:?}; the one kind is \"ssh\"", other),
                    ))
                }
            };
            if ssh_session && !matches!(fault.rung(), Rung::Restart | Rung::Adopt) {
                return Err(plan.row_error(
                    i,
                    "session",
                    format!(
                        "a session cannot survive fault {:?} (its rung is {:?})",
                        r.fault,
                        fault.rung().word()
                    ),
                ));
            }
            if r.bound.is_some_and(|b| b.is_zero()) {
                return Err(plan.row_error(i, "bound", "a bound must be positive".into()));
            }
            let name = r.name.clone().unwrap_or_else(|| match &r.service {
                Some(s) => format!("{} {}", r.fault, s),
                None => r.fault.clone(),
            });
            plan.rows.push(PlanRow {
                index: i,
                fault,
                service: r.service,
                expect,
                expect_given: r.expect.is_some(),
                bound: r.bound,
                prepare: r.prepare,
                signal: r.signal,
                flooder: r.flooder,
                summary: r.summary,
                ssh_session,
                syslog_files: plan.syslog_files.clone(),
                name,
            });
        }
        Ok(plan)
    }

    /// Reads and parses `file`.
    pub fn read(file: &Path) -> Result<Plan, PlanError> {
        let text = tether_common::config::read_config_text(file).map_err(PlanError)?;
        Plan::parse(&text, file)
    }

    /// Checks the plan against the image: every service named exists (and
    /// fits its fault), and every row's bound (given or from the image's
    /// budget table) fits in the plan's time budget. Returns each row's
    /// bound and its formula.
    pub fn check(&self, image: &ImageFacts) -> Result<Vec<(Duration, String)>, PlanError> {
        let mut out = Vec::new();
        for r in &self.rows {
            if r.ssh_session && !image.ssh {
                return Err(self.row_error(
                    r.index,
                    "session",
                    "an ssh session needs --ssh-key (the private key whose public half is in the image's authorized_keys)".into(),
                ));
            }
            if r.fault == Fault::SyslogKill && !image.services.contains_key("counter") {
                return Err(self.row_error(
                    r.index,
                    "fault",
                    "syslog-kill checks the lines of a service named `counter` (`tether-fault counter`), and the image has none".into(),
                ));
            }
            if let Some(f) = &r.flooder {
                if !image.services.contains_key(f) {
                    return Err(self.row_error(
                        r.index,
                        "flooder",
                        format!("the image has no service {:?}", f),
                    ));
                }
            }
            if let Some(s) = &r.service {
                let Some(facts) = image.services.get(s) else {
                    return Err(self.row_error(
                        r.index,
                        "service",
                        format!(
                            "the image has no service {:?} (it has: {})",
                            s,
                            image
                                .services
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                };
                if r.fault == Fault::ServiceHang && !facts.watchdog {
                    return Err(self.row_error(
                        r.index,
                        "service",
                        format!(
                            "service {:?} has no notify = \"watchdog\" with a watchdog_timeout: nothing would notice it hang",
                            s
                        ),
                    ));
                }
                if r.fault == Fault::CrashLoop && !facts.reboots {
                    return Err(self.row_error(
                        r.index,
                        "service",
                        format!(
                            "service {:?} has no max_restarts with on_exhausted = \"reboot\": its crash loop reboots nothing",
                            s
                        ),
                    ));
                }
            }
            let (bound, formula) = match (r.bound, self.default_bound(r, image)) {
                (Some(b), _) => (b, "plan".to_string()),
                (None, Some(d)) => d,
                (None, None) => {
                    return Err(self.row_error(
                        r.index,
                        "fault",
                        format!(
                            "no bound for {:?} in the image's budget table; give `bound = \"...\"`",
                            r.name
                        ),
                    ))
                }
            };
            if bound > self.budget {
                let key = if r.bound.is_some() { "bound" } else { "fault" };
                return Err(self.row_error(
                    r.index,
                    key,
                    format!(
                        "the row's bound {} ({}) exceeds the plan's time budget {}",
                        tether_common::duration::format(bound),
                        formula,
                        tether_common::duration::format(self.budget)
                    ),
                ));
            }
            out.push((bound, formula));
        }
        Ok(out)
    }

    /// The image's own bound for a row: its budget row, or for a reboot
    /// the shutdown's bound, for an upgrade the restarter's `hang_timeout`.
    fn default_bound(&self, r: &PlanRow, image: &ImageFacts) -> Option<(Duration, String)> {
        let i = &image.config.init;
        let service = r.service.as_deref().unwrap_or("");
        match r.fault {
            Fault::TetherctlReboot => Some((
                i.stop_timeout + i.kill_grace + tether_common::budget::REAP_WAIT,
                "[init] stop_timeout + kill_grace + REAP_WAIT".into(),
            )),
            Fault::Upgrade => Some((
                image.config.timing.hang_timeout,
                "hang_timeout: init's patience with a silent restarter".into(),
            )),
            Fault::CrashLoop => {
                let b = image
                    .bounds
                    .iter()
                    .find(|b| Some(&b.fault) == r.fault.budget_row(service).as_ref())?;
                Some((
                    b.bound + i.stop_timeout + i.kill_grace,
                    "window + [init] stop_timeout + kill_grace".into(),
                ))
            }
            f => {
                let name = f.budget_row(service)?;
                let b = image.bounds.iter().find(|b| b.fault == name)?;
                Some((b.bound, b.formula.clone()))
            }
        }
    }

    fn error(&self, path: &[&str], message: String) -> PlanError {
        let (line, column) = locate(&self.text, path, None).unwrap_or((1, 1));
        PlanError(ConfigError::Parse {
            file: self.file.clone(),
            line,
            column,
            field: path.join("."),
            message,
        })
    }

    /// An error about key `key` of the `index`-th `[[row]]`.
    fn row_error(&self, index: usize, key: &str, message: String) -> PlanError {
        let (line, column) = locate(&self.text, &["row", key], Some(index))
            .or_else(|| locate(&self.text, &["row"], Some(index)))
            .unwrap_or((1, 1));
        PlanError(ConfigError::Parse {
            file: self.file.clone(),
            line,
            column,
            field: format!("row[{}].{}", index + 1, key),
            message,
        })
    }
}

/// 1-based line and column of a key: `path[0]` at the top; with `index`,
/// `path[0]` is an array of tables and `path[1]` a key of its `index`-th
/// table (the table's own position when `path` has one element).
fn locate(text: &str, path: &[&str], index: Option<usize>) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let (root, _) = DeTable::parse_recoverable(text);
    let root = root.get_ref();
    let first = path.first()?;
    let (k, v) = root.iter().find(|(k, _)| k.get_ref() == first)?;
    let span = match index {
        None => k.span(),
        Some(i) => {
            let DeValue::Array(items) = v.get_ref() else {
                return None;
            };
            let item = items.get(i)?;
            match (path.get(1), item.get_ref()) {
                (Some(key), DeValue::Table(t)) => {
                    t.iter().find(|(k, _)| k.get_ref() == key)?.0.span()
                }
                (None, _) => item.span(),
                _ => return None,
            }
        }
    };
    Some(line_column(text, span.start))
}

fn line_column(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Plan, String> {
        Plan::parse(text, Path::new("plan.toml")).map_err(|e| e.to_string())
    }

    fn facts() -> ImageFacts {
        let config = Config::default();
        let mut bounds = tether_common::budget::table(&config);
        bounds.push(BudgetRow {
            fault: "service ticker crash".into(),
            outcome: tether_common::budget::Outcome::Restart,
            bound: Duration::from_millis(500),
            formula: "restart_delay".into(),
        });
        let mut services = BTreeMap::new();
        services.insert("ticker".to_string(), ServiceFacts::default());
        services.insert(
            "heartbeat".to_string(),
            ServiceFacts {
                watchdog: true,
                reboots: false,
            },
        );
        ImageFacts {
            config,
            services,
            bounds,
            ssh: false,
        }
    }

    const GOOD: &str = r#"budget = "10m"

[[row]]
fault = "service-kill"
service = "ticker"

[[row]]
fault = "init-hang"
expect = "no-reset"
bound = "20s"
"#;

    #[test]
    fn a_plan_parses_with_defaults_from_the_fault() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.budget, Duration::from_secs(600));
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.rows[0].fault, Fault::ServiceKill);
        assert_eq!(p.rows[0].expect, Rung::Restart);
        assert!(!p.rows[0].expect_given);
        assert_eq!(p.rows[0].name, "service-kill ticker");
        assert_eq!(p.rows[1].expect, Rung::NoReset);
        assert_eq!(p.rows[1].bound, Some(Duration::from_secs(20)));
        let bounds = p.check(&facts()).unwrap();
        assert_eq!(
            bounds[0],
            (Duration::from_millis(500), "restart_delay".into())
        );
        assert_eq!(bounds[1], (Duration::from_secs(20), "plan".into()));
    }

    #[test]
    fn an_unknown_fault_names_file_line_and_field() {
        let e = parse("budget = \"1m\"\n\n[[row]]\nfault = \"restarter-explode\"\n").unwrap_err();
        assert!(
            e.starts_with(
                "plan.toml:4:1: field `row[1].fault`: unknown fault \"restarter-explode\""
            ),
            "{e}"
        );
    }

    #[test]
    fn schema_errors_name_the_line_and_field() {
        let e =
            parse("budget = \"1m\"\n[[row]]\nfault = \"init-hang\"\nbonud = \"1s\"\n").unwrap_err();
        assert!(e.starts_with("plan.toml:4:"), "{e}");
        assert!(e.contains("bonud"), "{e}");
        let e = parse("budget = 60\n[[row]]\nfault = \"init-hang\"\n").unwrap_err();
        assert!(e.starts_with("plan.toml:1:"), "{e}");
        assert!(e.contains("budget"), "{e}");
        let e = parse("[[row]]\nfault = \"init-hang\"\n").unwrap_err();
        assert!(e.contains("budget"), "{e}");
    }

    #[test]
    fn a_bad_rung_or_a_missing_service_is_refused_at_its_line() {
        let e = parse("budget = \"1m\"\n[[row]]\nfault = \"init-hang\"\nexpect = \"fine\"\n")
            .unwrap_err();
        assert!(
            e.starts_with("plan.toml:4:1: field `row[1].expect`: unknown rung"),
            "{e}"
        );
        let e = parse(
            "budget = \"1m\"\n[[row]]\nfault = \"init-hang\"\n[[row]]\nfault = \"service-kill\"\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("plan.toml:5:1: field `row[2].fault`: fault \"service-kill\" needs"),
            "{e}"
        );
        let e = parse("budget = \"1m\"\n[[row]]\nfault = \"init-hang\"\nservice = \"x\"\n")
            .unwrap_err();
        assert!(
            e.starts_with(
                "plan.toml:4:1: field `row[1].service`: fault \"init-hang\" takes no service"
            ),
            "{e}"
        );
        assert!(parse("budget = \"1m\"\n")
            .unwrap_err()
            .contains("no [[row]]"));
    }

    #[test]
    fn a_service_the_image_lacks_is_an_error_naming_what_it_has() {
        let p = parse("budget = \"5m\"\n[[row]]\nfault = \"service-kill\"\nservice = \"nginx\"\n")
            .unwrap();
        let e = p.check(&facts()).unwrap_err().to_string();
        assert!(
            e.starts_with("plan.toml:4:1: field `row[1].service`: the image has no service \"nginx\" (it has: heartbeat, ticker)"),
            "{e}"
        );
        let p = parse("budget = \"5m\"\n[[row]]\nfault = \"service-hang\"\nservice = \"ticker\"\n")
            .unwrap();
        let e = p.check(&facts()).unwrap_err().to_string();
        assert!(e.contains("watchdog"), "{e}");
    }

    #[test]
    fn a_bound_over_the_budget_is_an_error() {
        let p = parse("budget = \"10s\"\n[[row]]\nfault = \"restarter-kill\"\n[[row]]\nfault = \"init-hang\"\nbound = \"11s\"\n").unwrap();
        let e = p.check(&facts()).unwrap_err().to_string();
        assert!(
            e.starts_with("plan.toml:6:1: field `row[2].bound`: the row's bound 11s (plan) exceeds the plan's time budget 10s"),
            "{e}"
        );
        // The default bound of the image's table counts as well.
        let p = parse("budget = \"1s\"\n[[row]]\nfault = \"init-hang\"\n").unwrap();
        let e = p.check(&facts()).unwrap_err().to_string();
        assert!(
            e.starts_with("plan.toml:3:1: field `row[1].fault`: the row's bound"),
            "{e}"
        );
        assert!(e.contains("exceeds the plan's time budget 1s"), "{e}");
    }

    #[test]
    fn an_ssh_session_needs_a_key_and_a_fault_it_can_survive() {
        let text = "budget = \"5m\"\n[[row]]\nfault = \"restarter-kill\"\nsession = \"ssh\"\n";
        let p = parse(text).unwrap();
        assert!(p.rows[0].ssh_session);
        let e = p.check(&facts()).unwrap_err().to_string();
        assert!(
            e.starts_with("plan.toml:4:1: field `row[1].session`: an ssh session needs --ssh-key"),
            "{e}"
        );
        let with_key = ImageFacts {
            ssh: true,
            ..facts()
        };
        assert!(p.check(&with_key).is_ok());
        let e = parse("budget = \"5m\"\n[[row]]\nfault = \"init-hang\"\nsession = \"ssh\"\n")
            .unwrap_err();
        assert!(
            e.starts_with("plan.toml:4:1: field `row[1].session`: a session cannot survive fault \"init-hang\""),
            "{e}"
        );
        let e =
            parse("budget = \"5m\"\n[[row]]\nfault = \"restarter-kill\"\nsession = \"telnet\"\n")
                .unwrap_err();
        assert!(e.contains("unknown session \"telnet\""), "{e}");
    }

    #[test]
    fn syslog_kill_needs_the_counter_and_syslog_files_are_absolute() {
        let p = parse("budget = \"5m\"\nsyslog_files = [\"/var/log/syslog\"]\n[[row]]\nfault = \"syslog-kill\"\nservice = \"ticker\"\n")
            .unwrap();
        assert_eq!(p.syslog_files, vec!["/var/log/syslog".to_string()]);
        let e = p.check(&facts()).unwrap_err().to_string();
        assert!(
            e.starts_with("plan.toml:4:1: field `row[1].fault`: syslog-kill checks the lines of a service named `counter`"),
            "{e}"
        );
        let mut f = facts();
        f.services.insert("counter".into(), ServiceFacts::default());
        assert!(p.check(&f).is_ok());
        assert_eq!(
            parse(GOOD).unwrap().syslog_files,
            vec!["/var/log/messages.0", "/var/log/messages"]
        );
        let e = parse("budget = \"5m\"\nsyslog_files = [\"var/log/syslog\"]\n[[row]]\nfault = \"init-hang\"\n")
            .unwrap_err();
        assert!(
            e.starts_with(
                "plan.toml:2:1: field `syslog_files`: \"var/log/syslog\": an absolute path"
            ),
            "{e}"
        );
    }
}
