//! A parsed systemd unit ([`super::unit`]) → a tether service [`Draft`],
//! with one [`Finding`] per directive, or a [`Refusal`].
//!
//! Decisions where the issue is silent (README, "Importing units"):
//! - Only `.service` units. A template (`NAME@.service`) needs an instance
//!   (`NAME@INSTANCE.service`), which is then the tether name.
//! - Absent directives leave tether's defaults, except `Restart=`: systemd's
//!   default is `no`, so a unit without it gets `restart = "never"` (said
//!   in the report).
//! - Specifiers are expanded in `ExecStart=`, `Environment=`,
//!   `EnvironmentFile=`, `User=`, `Group=`, `WorkingDirectory=` and the
//!   directory directives; one known only on the running system (`%H`, `%b`,
//!   `%h` of a named user...) refuses the unit by name.
//! - `$VAR` in `ExecStart=` is expanded at import from `Environment=` and
//!   the `EnvironmentFile=`s as they read now (the shell reads them,
//!   relative to `--root`); their variables also go into `env`. A variable
//!   the unit does not set expands to nothing, as in systemd, and is
//!   reported; one systemd sets at run time (`$MAINPID`) refuses the unit.
//! - `Wants=` needs no key: tether starts every service of its directory.
//!   `Requires=` becomes `requires` (which in tether also orders the
//!   start); `After=` `after`; a unit not imported in the same run is
//!   reported and left out.
//! - `RuntimeDirectory=`, `StateDirectory=`, `CacheDirectory=`,
//!   `LogsDirectory=`: tether has no such keys, so a service running as
//!   root gets a `/bin/sh` prelude that creates them (with the `*Mode=`)
//!   and then `exec`s the command with its argv untouched (`"$0" "$@"`).
//!   For a service with `User=` they are reported, not created.
//! - Limits: tether sets soft = hard; `SOFT:HARD` keeps the soft value.

use super::unit::{Entry, Unit};
use super::values::{self, Specifiers};
use super::{Draft, Failure, Finding, Imported, LimitValue, Malformed, Outcome, Refusal};
use std::collections::BTreeMap;

/// What a unit's mapping needs from outside it, gathered by the shell.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Every unit name (and `[Install] Alias=`) imported in this run → its
    /// tether name.
    pub names: BTreeMap<String, String>,
    /// Tether name → the services of the run whose unit says
    /// `Before=` it: they go into its `after` ([`befores`]).
    pub befores: BTreeMap<String, Vec<String>>,
    /// Environment files by path (as the unit names them, specifiers
    /// expanded): their bytes, or `None` when the file does not exist.
    pub env_files: BTreeMap<String, Option<Vec<u8>>>,
}

/// The tether name of a unit file name: `ssh.service` → `ssh`,
/// `getty@tty1.service` → `getty@tty1`. A template or another unit type
/// is refused.
pub fn tether_name(unit_name: &str, file: &str) -> Result<String, Failure> {
    let refuse = |reason: String| {
        Failure::Refused(Refusal {
            file: file.to_string(),
            line: 0,
            directive: unit_name.to_string(),
            reason,
        })
    };
    let Some(stem) = unit_name.strip_suffix(".service") else {
        let kind = unit_name.rsplit_once('.').map_or("", |(_, k)| k);
        return Err(refuse(format!(
            "not a service unit ({kind:?}): tether imports .service units only (socket activation, timers, mounts and targets have no tether equivalent)"
        )));
    };
    if stem.ends_with('@') {
        return Err(refuse(
            "a template unit: name an instance, e.g. NAME@INSTANCE.service (the file NAME@.service is read)".into(),
        ));
    }
    super::tether_name(stem).ok_or_else(|| {
        refuse(format!(
            "{stem:?} is not a tether service name (1-64 of A-Z a-z 0-9 _ . @ -, starting with a letter or digit)"
        ))
    })
}

/// `Before=` of every unit of the run, turned around: for each target of
/// the run, the services that must start before it. `units` are (tether
/// name, unit); `names` as [`Context::names`].
pub fn befores(
    units: &[(String, &Unit)],
    names: &BTreeMap<String, String>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, unit) in units {
        for e in effective(unit, "Unit", "Before") {
            for target in e.value.split_whitespace() {
                if let Some(t) = names.get(target).filter(|t| *t != name) {
                    let v = out.entry(t.clone()).or_default();
                    if !v.contains(name) {
                        v.push(name.clone());
                    }
                }
            }
        }
    }
    out
}

/// `[Install] Alias=` names of a unit (for [`Context::names`]).
pub fn aliases(unit: &Unit) -> Vec<String> {
    unit.all("Install", "Alias")
        .flat_map(|e| e.value.split_whitespace().map(str::to_string))
        .collect()
}

/// The environment files a unit reads, specifiers expanded, with whether
/// each is optional (`-`); the shell reads them into [`Context::env_files`].
pub fn env_file_paths(unit: &Unit, unit_name: &str) -> Vec<(String, bool)> {
    let sp = specifiers(unit, unit_name);
    effective(unit, "Service", "EnvironmentFile")
        .iter()
        .filter_map(|e| {
            let (path, optional) = match e.value.strip_prefix('-') {
                Some(p) => (p, true),
                None => (e.value.as_str(), false),
            };
            sp.expand(path).ok().map(|p| (p, optional))
        })
        .collect()
}

fn specifiers(unit: &Unit, unit_name: &str) -> Specifiers {
    let last = |k: &str| unit.all("Service", k).last().map(|e| e.value.clone());
    Specifiers {
        unit: unit_name.to_string(),
        user: last("User").filter(|v| !v.is_empty()),
        group: last("Group").filter(|v| !v.is_empty()),
    }
}

/// Keys whose assignments accumulate (an empty one resets the list).
const LISTS: &[&str] = &[
    "ExecStart",
    "Environment",
    "EnvironmentFile",
    "After",
    "Requires",
    "Wants",
    "Before",
    "RuntimeDirectory",
    "StateDirectory",
    "CacheDirectory",
    "LogsDirectory",
];

/// Single-valued keys the mapping reads: the last assignment wins.
const SINGLES: &[&str] = &[
    "Type",
    "Restart",
    "RestartSec",
    "TimeoutStopSec",
    "TimeoutSec",
    "WatchdogSec",
    "KillSignal",
    "WorkingDirectory",
    "UMask",
    "User",
    "Group",
    "LimitNOFILE",
    "LimitCORE",
    "LimitNPROC",
    "LimitMEMLOCK",
    "IgnoreSIGPIPE",
    "RuntimeDirectoryMode",
    "StateDirectoryMode",
    "CacheDirectoryMode",
    "LogsDirectoryMode",
];

/// The assignments of a list key still in force (after the last reset).
fn effective<'a>(unit: &'a Unit, section: &'a str, key: &'a str) -> Vec<&'a Entry> {
    let mut v: Vec<&Entry> = Vec::new();
    for e in unit.all(section, key) {
        if e.value.is_empty() {
            v.clear();
        } else {
            v.push(e);
        }
    }
    v
}

struct Mapper<'a> {
    file: &'a str,
    findings: Vec<Finding>,
}

impl Mapper<'_> {
    fn note(&mut self, e: &Entry, outcome: Outcome) {
        self.note_as(e.line, format!("{}={}", e.key, e.value), outcome);
    }
    fn note_as(&mut self, line: usize, directive: String, outcome: Outcome) {
        self.findings.push(Finding {
            file: self.file.to_string(),
            line,
            directive,
            outcome,
        });
    }
    fn bad(&self, e: &Entry, message: impl Into<String>) -> Failure {
        Failure::Malformed(Malformed::new(self.file, e.line, Some(&e.key), message))
    }
    fn refuse(&self, e: &Entry, reason: impl Into<String>) -> Failure {
        Failure::Refused(Refusal {
            file: self.file.to_string(),
            line: e.line,
            directive: format!("{}={}", e.key, e.value),
            reason: reason.into(),
        })
    }
}

/// Maps one unit. `unit_name` is the unit's full name (`ssh.service`,
/// `getty@tty1.service`), `file` the path shown in the report.
pub fn map(unit: &Unit, unit_name: &str, file: &str, ctx: &Context) -> Result<Imported, Failure> {
    let name = tether_name(unit_name, file)?;
    let sp = specifiers(unit, unit_name);
    let mut m = Mapper {
        file,
        findings: Vec::new(),
    };
    let mut d = Draft {
        comments: vec![format!("Imported from {file} by tetherctl import.")],
        ..Draft::default()
    };

    // Superseded assignments first: single-valued keys keep the last one,
    // lists the ones after the last reset.
    let mut in_force: Vec<&Entry> = Vec::new();
    for (i, e) in unit.entries.iter().enumerate() {
        let later = unit.entries[i + 1..]
            .iter()
            .find(|l| l.section == e.section && l.key == e.key);
        let list = LISTS.contains(&e.key.as_str());
        if list {
            let reset = unit.entries[i + 1..]
                .iter()
                .find(|l| l.section == e.section && l.key == e.key && l.value.is_empty());
            if let Some(r) = reset {
                m.note(
                    e,
                    Outcome::Dropped(format!("reset by the empty {}= at line {}", r.key, r.line)),
                );
                continue;
            }
            if e.value.is_empty() {
                m.note(
                    e,
                    Outcome::Carried("resets the list (nothing before it is kept)".into()),
                );
                continue;
            }
        } else if let Some(l) =
            later.filter(|_| e.section == "Service" && SINGLES.contains(&e.key.as_str()))
        {
            m.note(
                e,
                Outcome::Dropped(format!("overridden by line {}", l.line)),
            );
            continue;
        }
        if e.value.is_empty() && e.section == "Service" && SINGLES.contains(&e.key.as_str()) {
            m.note(e, Outcome::Carried("empty: the default stands".into()));
            continue;
        }
        in_force.push(e);
    }
    let get = |key: &str| {
        in_force
            .iter()
            .copied()
            .find(|e| e.section == "Service" && e.key == key)
    };

    // Type.
    let type_entry = get("Type");
    let kind = type_entry.map_or("simple", |e| e.value.as_str());
    let notify = match kind {
        "simple" | "exec" | "idle" => false,
        "notify" | "notify-reload" => true,
        "forking" => {
            return Err(m.refuse(
                type_entry.unwrap_or(&unit.entries[0]),
                "the daemon forks into the background and its first process exits; tether supervises the process it starts and would take that exit for the end of the service. Run the daemon in the foreground (most have a flag, e.g. nginx -g 'daemon off;', chronyd -n) in a file written by hand",
            ))
        }
        "oneshot" => {
            return Err(m.refuse(
                type_entry.unwrap_or(&unit.entries[0]),
                "a command that runs to completion is not a supervised service: tether has no one-shot services (run it from the appliance's image build or from a service's own script)",
            ))
        }
        "dbus" => {
            return Err(m.refuse(
                type_entry.unwrap_or(&unit.entries[0]),
                "readiness by taking a D-Bus name (BusName=) is not supported; if the daemon speaks sd_notify, Type=notify is",
            ))
        }
        other => {
            let e = type_entry.unwrap_or(&unit.entries[0]);
            return Err(m.bad(e, format!("unknown service type {other:?}")));
        }
    };
    if let Some(e) = type_entry {
        let how = match kind {
            "simple" => Outcome::Carried("ready once started (notify none)".into()),
            "exec" => Outcome::Carried(
                "ready once started; an exec failure is a start failure, as with Type=exec".into(),
            ),
            "idle" => Outcome::Changed(
                "started at once, as Type=simple (idle only delays the start until other jobs are done)".into(),
            ),
            "notify" => Outcome::Carried("notify = \"ready\" (ready after READY=1)".into()),
            _ => Outcome::Changed(
                "notify = \"ready\"; reload by SIGHUP with RELOADING=1 is not carried (tether has no service reload)".into(),
            ),
        };
        m.note(e, how);
    }
    d.notify = notify.then_some("ready");

    // A terminal or socket on standard input: before ExecStart=, whose
    // $TERM would otherwise be the first complaint.
    if let Some(e) = get("StandardInput").filter(|e| e.value != "null") {
        return Err(m.refuse(
            e,
            "tether gives a service /dev/null as standard input, not a terminal or socket; a getty takes its terminal as an argument in a file written by hand, e.g. exec = [\"/sbin/agetty\", \"ttyS0\", \"115200\"]",
        ));
    }

    // User and Group (an ExecStart= with ! drops them, see below).
    let user = get("User");
    let group = get("Group");

    // Environment= then EnvironmentFile= (a file's values win, as in systemd).
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for e in in_force
        .iter()
        .filter(|e| e.section == "Service" && e.key == "Environment")
    {
        let words = values::split_words(&e.value).map_err(|msg| m.bad(e, msg))?;
        let mut keys = Vec::new();
        for w in words {
            let w = sp.expand(&w).map_err(|msg| m.refuse(e, msg))?;
            let Some((k, v)) = w.split_once('=') else {
                return Err(m.bad(e, format!("{w:?} is not VARIABLE=VALUE")));
            };
            if !values::is_var_name(k) {
                return Err(m.bad(e, format!("{k:?} is not a variable name")));
            }
            env.insert(k.to_string(), v.to_string());
            keys.push(k.to_string());
        }
        m.note(e, Outcome::Carried(format!("env ({})", keys.join(", "))));
    }
    for e in in_force
        .iter()
        .filter(|e| e.section == "Service" && e.key == "EnvironmentFile")
    {
        let (raw, optional) = match e.value.strip_prefix('-') {
            Some(p) => (p, true),
            None => (e.value.as_str(), false),
        };
        let path = sp.expand(raw).map_err(|msg| m.refuse(e, msg))?;
        match ctx.env_files.get(&path) {
            Some(Some(bytes)) => {
                let vars = values::env_file(bytes).map_err(|(line, msg)| {
                    Failure::Malformed(Malformed::new(&path, line, None, msg))
                })?;
                for (line, text) in &vars.ignored {
                    m.findings.push(Finding {
                        file: path.clone(),
                        line: *line,
                        directive: text.clone(),
                        outcome: Outcome::Dropped(
                            "not a VARIABLE=VALUE line: ignored, as systemd ignores it".into(),
                        ),
                    });
                }
                let keys: Vec<String> = vars.vars.iter().map(|(k, _)| k.clone()).collect();
                for (k, v) in vars.vars {
                    env.insert(k, v);
                }
                m.note(
                    e,
                    Outcome::Changed(format!(
                        "env ({}) from {path} as it reads at import: tether reads no environment file, import again after changing it",
                        if keys.is_empty() { "no variables".to_string() } else { keys.join(", ") }
                    )),
                );
            }
            _ if optional => m.note(
                e,
                Outcome::Carried(format!(
                    "{path} does not exist here and is optional (-): nothing to carry"
                )),
            ),
            _ => {
                return Err(m.refuse(
                    e,
                    format!(
                        "{path} does not exist (systemd would not start the service without it)"
                    ),
                ))
            }
        }
    }

    // ExecStart.
    let execs: Vec<&Entry> = in_force
        .iter()
        .copied()
        .filter(|e| e.section == "Service" && e.key == "ExecStart")
        .collect();
    let exec_entry =
        match execs.as_slice() {
            [] => {
                return Err(Failure::Refused(Refusal {
                    file: file.to_string(),
                    line: 0,
                    directive: "ExecStart".into(),
                    reason: "the unit has no ExecStart=: nothing to run".into(),
                }))
            }
            [one] => *one,
            [_, second, ..] => return Err(m.refuse(
                second,
                "a second ExecStart= (only Type=oneshot may have several): tether runs one command",
            )),
        };
    let mut rest = exec_entry.value.as_str();
    let mut prefixes = String::new();
    while let Some(c) = rest.chars().next().filter(|c| "-@:+!|".contains(*c)) {
        prefixes.push(c);
        rest = &rest[c.len_utf8()..];
    }
    let mut apply_user = true;
    let mut exec_notes: Vec<String> = Vec::new();
    for c in prefixes.chars() {
        match c {
            '@' => return Err(m.refuse(exec_entry, "the @ prefix gives the program an argv[0] other than its path; tether execs the argv as written")),
            '|' => return Err(m.refuse(exec_entry, "the | prefix (run through the user's shell) is not supported")),
            '-' => exec_notes.push("the - prefix (a failing exit status counts as success) is not carried: tether counts a non-zero exit as a failure".into()),
            ':' => exec_notes.push("no $VARIABLE expansion, as the : prefix asks".into()),
            '+' => {
                if user.is_some() || group.is_some() {
                    return Err(m.refuse(exec_entry, "the + prefix runs the command with full privileges despite User=/Group=; tether applies user and group to the whole service"));
                }
                exec_notes.push("the + prefix (no sandboxing) is what tether does anyway".into());
            }
            '!' if !prefixes.contains('+') => apply_user = false,
            _ => {}
        }
    }
    if prefixes.contains('!') && apply_user {
        exec_notes.push("! is implied by + here".into());
    } else if !apply_user && (user.is_some() || group.is_some()) {
        exec_notes.push(
            "the ! prefix: User=/Group= are not applied (the program changes its own uid), so the service file sets neither".into(),
        );
    }
    let words = values::split_words(rest).map_err(|msg| m.bad(exec_entry, msg))?;
    if words.iter().any(|w| w == ";") {
        return Err(m.refuse(
            exec_entry,
            "several commands separated by ; (only Type=oneshot may have them)",
        ));
    }
    let mut argv = Vec::new();
    for w in &words {
        argv.push(sp.expand(w).map_err(|msg| m.refuse(exec_entry, msg))?);
    }
    if !prefixes.contains(':') {
        let (expanded, ex) =
            values::expand_vars(&argv, &env).map_err(|msg| m.refuse(exec_entry, msg))?;
        argv = expanded;
        if !ex.used.is_empty() {
            exec_notes.push(format!(
                "${} expanded at import as systemd would",
                ex.used.join(", $")
            ));
        }
        if !ex.unset.is_empty() {
            exec_notes.push(format!(
                "${} not set by the unit: expanded to nothing, as systemd does",
                ex.unset.join(", $")
            ));
        }
    }
    if argv.first().is_none_or(|a| a.is_empty()) {
        return Err(m.bad(exec_entry, "the command line is empty"));
    }
    let shown: Vec<String> = argv.iter().map(|a| super::quote(a)).collect();
    let mut how = format!("exec = [{}]", shown.join(", "));
    for n in &exec_notes {
        how.push_str("; ");
        how.push_str(n);
    }
    let changed = exec_notes
        .iter()
        .any(|n| !n.starts_with('$') && !n.starts_with("no $"));
    m.note(
        exec_entry,
        if changed {
            Outcome::Changed(how)
        } else {
            Outcome::Carried(how)
        },
    );
    d.exec = argv;
    d.env = env;

    for (entry, slot, what) in [(user, &mut d.user, "user"), (group, &mut d.group, "group")] {
        let Some(e) = entry else { continue };
        if !apply_user {
            m.note(
                e,
                Outcome::Dropped("not applied: ExecStart= has the ! prefix".into()),
            );
            continue;
        }
        let v = sp.expand(&e.value).map_err(|msg| m.refuse(e, msg))?;
        m.note(
            e,
            Outcome::Carried(format!("{what} = {}", super::quote(&v))),
        );
        *slot = Some(v);
    }

    // The other [Service] directives that map.
    for e in in_force.iter().copied().filter(|e| e.section == "Service") {
        match e.key.as_str() {
            "Type" | "ExecStart" | "Environment" | "EnvironmentFile" | "User" | "Group" => {}
            "Restart" => {
                let (v, out) = match e.value.as_str() {
                    "no" => ("never", Outcome::Carried("restart = \"never\"".into())),
                    "always" => ("always", Outcome::Carried("restart = \"always\"".into())),
                    "on-failure" => ("on-failure", Outcome::Carried("restart = \"on-failure\"".into())),
                    "on-abnormal" | "on-abort" | "on-watchdog" => (
                        "on-failure",
                        Outcome::Changed(format!(
                            "restart = \"on-failure\": tether also restarts after a non-zero exit status, which Restart={} would not",
                            e.value
                        )),
                    ),
                    "on-success" => {
                        return Err(m.refuse(e, "a restart only after a clean exit has no tether equivalent"))
                    }
                    other => return Err(m.bad(e, format!("unknown restart setting {other:?}"))),
                };
                d.restart = Some(v);
                m.note(e, out);
            }
            "RestartSec" => match values::timespan(&e.value).map_err(|msg| m.bad(e, msg))? {
                Some(us) => {
                    let v = values::tether_duration(us);
                    m.note(e, Outcome::Carried(format!("restart_delay = \"{v}\"")));
                    d.restart_delay = Some(v);
                }
                None => m.note(e, Outcome::Dropped("an infinite restart delay: tether needs a finite one; its default stands".into())),
            },
            "TimeoutStopSec" | "TimeoutSec" => {
                match values::timespan(&e.value).map_err(|msg| m.bad(e, msg))? {
                    Some(us) if us > 0 => {
                        let v = values::tether_duration(us);
                        m.note(
                            e,
                            if e.key == "TimeoutSec" {
                                Outcome::Changed(format!("stop_timeout = \"{v}\"; its start part is not carried (tether has no start timeout)"))
                            } else {
                                Outcome::Carried(format!("stop_timeout = \"{v}\""))
                            },
                        );
                        d.stop_timeout = Some(v);
                    }
                    _ => m.note(e, Outcome::Dropped("an infinite stop timeout: tether always ends with SIGKILL; its default 5s stands".into())),
                }
            }
            "WatchdogSec" => match values::timespan(&e.value).map_err(|msg| m.bad(e, msg))? {
                Some(us) if us > 0 && notify => {
                    let v = values::tether_duration(us);
                    m.note(e, Outcome::Carried(format!("notify = \"watchdog\", watchdog_timeout = \"{v}\"")));
                    d.notify = Some("watchdog");
                    d.watchdog_timeout = Some(v);
                }
                Some(us) if us > 0 => m.note(e, Outcome::Dropped(format!(
                    "tether's watchdog mode also waits for READY=1, which a Type={kind} service is not known to send"
                ))),
                _ => m.note(e, Outcome::Carried("no watchdog (0 or infinity turns it off)".into())),
            },
            "KillSignal" => {
                let n = crate::service::parse_signal(&e.value)
                    .ok_or_else(|| m.bad(e, format!("{:?} is not a signal", e.value)))?;
                let v = crate::service::signal_name(n);
                m.note(e, Outcome::Carried(format!("stop_signal = \"{v}\"")));
                d.stop_signal = Some(v);
            }
            "WorkingDirectory" => {
                let (raw, optional) = match e.value.strip_prefix('-') {
                    Some(p) => (p, true),
                    None => (e.value.as_str(), false),
                };
                if raw == "~" {
                    m.note(e, Outcome::Dropped("~ (the home of User=) is known only on the running system; the service starts in /".into()));
                    continue;
                }
                let v = sp.expand(raw).map_err(|msg| m.refuse(e, msg))?;
                if !v.starts_with('/') {
                    return Err(m.bad(e, format!("{v:?} is not an absolute path")));
                }
                m.note(
                    e,
                    if optional {
                        Outcome::Changed(format!("working_directory = \"{v}\"; the - prefix is not carried: a missing directory ends the service with exit status 200"))
                    } else {
                        Outcome::Carried(format!("working_directory = \"{v}\""))
                    },
                );
                d.working_directory = Some(v);
            }
            "UMask" => {
                let n = u32::from_str_radix(&e.value, 8)
                    .ok()
                    .filter(|n| *n <= 0o777)
                    .ok_or_else(|| m.bad(e, format!("{:?} is not an octal umask", e.value)))?;
                let v = format!("{n:03o}");
                m.note(e, Outcome::Carried(format!("umask = \"{v}\"")));
                d.umask = Some(v);
            }
            "LimitNOFILE" | "LimitCORE" | "LimitNPROC" | "LimitMEMLOCK" => {
                let (soft, hard) = values::limit(&e.value).map_err(|msg| m.bad(e, msg))?;
                let key = e.key.trim_start_matches("Limit").to_ascii_lowercase();
                let v = soft.map_or(LimitValue::Unlimited, LimitValue::Value);
                let shown = match v {
                    LimitValue::Value(n) => n.to_string(),
                    LimitValue::Unlimited => "\"unlimited\"".into(),
                };
                m.note(
                    e,
                    if soft != hard {
                        Outcome::Changed(format!("{key} = {shown}: tether sets soft = hard, so the hard limit is the soft one"))
                    } else {
                        Outcome::Carried(format!("{key} = {shown}"))
                    },
                );
                match key.as_str() {
                    "nofile" => d.nofile = Some(v),
                    "core" => d.core = Some(v),
                    "nproc" => d.nproc = Some(v),
                    _ => d.memlock = Some(v),
                }
            }
            "IgnoreSIGPIPE" if matches!(e.value.as_str(), "false" | "no" | "0" | "off") => {
                m.note(e, Outcome::Carried("tether starts services with SIGPIPE at its default action".into()))
            }
            "StandardInput" => m.note(e, Outcome::Carried("tether's services read /dev/null".into())),
            "RuntimeDirectory" | "StateDirectory" | "CacheDirectory" | "LogsDirectory" => {}
            "RuntimeDirectoryMode" | "StateDirectoryMode" | "CacheDirectoryMode" | "LogsDirectoryMode" => {}
            _ => m.note(e, Outcome::Dropped(reason("Service", &e.key).into())),
        }
    }
    if !in_force
        .iter()
        .any(|e| e.section == "Service" && e.key == "Restart")
    {
        d.restart = Some("never");
        m.note_as(
            0,
            "Restart (not set)".into(),
            Outcome::Changed("systemd's default is Restart=no: written as restart = \"never\" (tether's default would be always)".into()),
        );
    }

    directories(&in_force, &sp, user.is_some() && apply_user, &mut d, &mut m)?;

    // [Unit] and [Install].
    let own: Vec<&String> = ctx
        .names
        .iter()
        .filter(|(_, v)| **v == name)
        .map(|(k, _)| k)
        .collect();
    for e in in_force.iter().copied().filter(|e| e.section != "Service") {
        match (e.section.as_str(), e.key.as_str()) {
            ("Unit", "Description") => {
                d.comments.push(format!("Description: {}", e.value));
                m.note(e, Outcome::Carried("a comment in the file".into()));
            }
            ("Unit", "Documentation") => {
                d.comments.push(format!("Documentation: {}", e.value));
                m.note(e, Outcome::Carried("a comment in the file".into()));
            }
            ("Unit", "Before") => {
                for target in e.value.split_whitespace() {
                    let directive = format!("Before={target}");
                    let outcome = match ctx.names.get(target) {
                        Some(t) if *t != name => Outcome::Carried(format!("after = [\"{name}\"] in {t}'s file")),
                        Some(_) => Outcome::Dropped("names this service itself".into()),
                        None => Outcome::Dropped(format!(
                            "{target} is not imported in this run (tether orders by the later service's after)"
                        )),
                    };
                    m.note_as(e.line, directive, outcome);
                }
            }
            ("Unit", key @ ("After" | "Requires" | "Wants")) => {
                for target in e.value.split_whitespace() {
                    let directive = format!("{key}={target}");
                    if own.iter().any(|o| *o == target) {
                        m.note_as(
                            e.line,
                            directive,
                            Outcome::Dropped("names this service itself".into()),
                        );
                        continue;
                    }
                    let Some(t) = ctx.names.get(target) else {
                        let why = if target.ends_with(".socket") {
                            format!("{target} is socket activation: tether hands no listening socket to a service, the daemon must open its own")
                        } else if target.ends_with(".target") {
                            format!("{target} is a target: tether has none (every service starts once its after/requires are ready)")
                        } else {
                            format!("{target} is not imported in this run")
                        };
                        m.note_as(e.line, directive, Outcome::Dropped(why));
                        continue;
                    };
                    let list = match key {
                        "After" => &mut d.after,
                        "Requires" => &mut d.requires,
                        _ => {
                            m.note_as(e.line, directive, Outcome::Carried(format!(
                                "nothing to write: tether starts every service of its directory, {t} included"
                            )));
                            continue;
                        }
                    };
                    if !list.contains(t) {
                        list.push(t.clone());
                    }
                    m.note_as(
                        e.line,
                        directive,
                        if key == "Requires" {
                            Outcome::Changed(format!("requires = [\"{t}\"]: tether's requires also starts this one after {t} is ready"))
                        } else {
                            Outcome::Carried(format!("after = [\"{t}\"]"))
                        },
                    );
                }
            }
            ("Install", "Alias") => m.note(
                e,
                Outcome::Carried(format!(
                    "a name of this service for the other units of the run ({})",
                    e.value
                )),
            ),
            (section, key) => m.note(e, Outcome::Dropped(reason(section, key).into())),
        }
    }
    for b in ctx.befores.get(&name).into_iter().flatten() {
        if !d.after.contains(b) {
            d.after.push(b.clone());
        }
        m.note_as(
            0,
            format!("Before={unit_name} in {b}'s unit"),
            Outcome::Carried(format!("after = [\"{b}\"]")),
        );
    }
    d.requires.retain(|r| !r.is_empty());
    let reqs = d.requires.clone();
    d.after.retain(|a| !reqs.contains(a));
    m.findings.sort_by_key(|f| (f.file != file, f.line));
    Ok(Imported {
        name,
        draft: d,
        findings: m.findings,
    })
}

/// `RuntimeDirectory=` and friends: a `/bin/sh` prelude that creates them
/// for a root service, else a report.
fn directories(
    in_force: &[&Entry],
    sp: &Specifiers,
    has_user: bool,
    d: &mut Draft,
    m: &mut Mapper<'_>,
) -> Result<(), Failure> {
    let mut script = String::new();
    for (key, root) in [
        ("RuntimeDirectory", "/run"),
        ("StateDirectory", "/var/lib"),
        ("CacheDirectory", "/var/cache"),
        ("LogsDirectory", "/var/log"),
    ] {
        let mode_key = format!("{key}Mode");
        let mode_entry = in_force
            .iter()
            .copied()
            .find(|e| e.section == "Service" && e.key == mode_key);
        let mode = match mode_entry {
            Some(e) => {
                let n = u32::from_str_radix(&e.value, 8)
                    .ok()
                    .filter(|n| *n <= 0o7777)
                    .ok_or_else(|| m.bad(e, format!("{:?} is not an octal mode", e.value)))?;
                format!("{n:04o}")
            }
            None => "0755".to_string(),
        };
        let entries: Vec<&Entry> = in_force
            .iter()
            .copied()
            .filter(|e| e.section == "Service" && e.key == key)
            .collect();
        for e in &entries {
            let mut paths = Vec::new();
            for w in e.value.split_whitespace() {
                let w = sp.expand(w).map_err(|msg| m.refuse(e, msg))?;
                // `NAME:SYMLINK` (systemd 250) keeps only NAME here.
                let n = w.split(':').next().unwrap_or_default();
                let safe = !n.is_empty()
                    && !n.starts_with('/')
                    && n.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-/@+".contains(c));
                if !safe {
                    return Err(m.bad(e, format!("{n:?} is not a relative directory name")));
                }
                paths.push(format!("{root}/{n}"));
            }
            if has_user {
                m.note(e, Outcome::Dropped(format!(
                    "tether does not create {}: create it (mode {mode}, owned by User=) before the service starts, e.g. from another service or the image",
                    paths.join(" ")
                )));
                continue;
            }
            for p in &paths {
                script.push_str(&format!("mkdir -p -m {mode} {p} && chmod {mode} {p} && "));
            }
            m.note(e, Outcome::Changed(format!(
                "created (mode {mode}) by a /bin/sh prelude before the command starts; systemd would also remove it at stop, tether leaves it",
            )));
        }
        if let Some(e) = mode_entry {
            if entries.is_empty() {
                m.note(e, Outcome::Dropped(format!("no {key}= to apply it to")));
            } else {
                m.note(
                    e,
                    Outcome::Carried(format!("the mode of the prelude's mkdir ({mode})")),
                );
            }
        }
    }
    if !script.is_empty() {
        script.push_str("exec \"$0\" \"$@\"");
        let mut exec = vec!["/bin/sh".to_string(), "-c".to_string(), script];
        exec.append(&mut d.exec);
        d.exec = exec;
    }
    Ok(())
}

/// Why a directive is not carried over.
fn reason(section: &str, key: &str) -> &'static str {
    let sandbox = [
        "Protect",
        "Private",
        "Restrict",
        "SystemCall",
        "Capability",
        "Ambient",
        "NoNewPrivileges",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "ReadWritePaths",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "ExecPaths",
        "NoExecPaths",
        "TemporaryFileSystem",
        "BindPaths",
        "BindReadOnlyPaths",
        "DevicePolicy",
        "DeviceAllow",
        "SecureBits",
        "DynamicUser",
        "IPAddress",
        "ProcSubset",
        "RemoveIPC",
        "KeyringMode",
        "RootDirectory",
        "RootImage",
        "MountAPIVFS",
        "SELinuxContext",
        "AppArmorProfile",
        "SmackProcessLabel",
        "PAMName",
        "UtmpIdentifier",
        "SupplementaryGroups",
        "NetworkNamespacePath",
        "IPC",
        "LoadCredential",
        "SetCredential",
        "ConfigurationDirectory",
    ];
    let resources = [
        "CPU",
        "Memory",
        "IO",
        "Tasks",
        "Nice",
        "OOM",
        "Delegate",
        "Slice",
        "BlockIO",
        "Startup",
        "ManagedOOM",
        "Limit",
        "Personality",
        "TimerSlack",
        "IgnoreSIGPIPE",
    ];
    match (section, key) {
        ("Service", k) if k.starts_with("Exec") => {
            "tether runs only the main command (ExecStart=): no pre/post, stop or reload commands"
        }
        ("Service", "PIDFile" | "GuessMainPID") => "only for Type=forking, which tether does not import",
        ("Service", "KillMode") => {
            "tether sends stop_signal to the service's whole process group (and cgroup), then SIGKILL after stop_timeout"
        }
        ("Service", "SendSIGKILL" | "SendSIGHUP" | "FinalKillSignal" | "RestartKillSignal") => {
            "tether's stop is stop_signal, then SIGKILL after stop_timeout"
        }
        ("Service", "NotifyAccess") => {
            "tether accepts notify messages from the service's process group and uid (README, \"Who may notify\")"
        }
        ("Service", "SuccessExitStatus" | "RestartPreventExitStatus" | "RestartForceExitStatus") => {
            "tether has no exit-status lists: any non-zero status or signal is a failure"
        }
        ("Service", "TimeoutStartSec" | "TimeoutAbortSec" | "RuntimeMaxSec" | "RuntimeRandomizedExtraSec") => {
            "tether has no start or run-time limit"
        }
        ("Service", k)
            if k.starts_with("Standard") || k.starts_with("Syslog") || k.starts_with("Log") || k == "TTYPath" =>
        {
            "output always goes to syslog tagged with the service name (stdout at info, stderr at err)"
        }
        ("Service", "PAMName" | "UtmpIdentifier" | "UtmpMode") => "tether opens no PAM or utmp session for a service",
        ("Service", "RuntimeDirectoryPreserve") => "tether never removes a runtime directory",
        ("Service", "RemainAfterExit" | "BusName" | "Sockets" | "FileDescriptorStoreMax" | "USBFunctionDescriptors") => {
            "no tether equivalent for this service type"
        }
        ("Service", k) if sandbox.iter().any(|p| k.starts_with(p)) => {
            "sandboxing: tether does not sandbox services (user, group, umask and limits only)"
        }
        ("Service", k) if resources.iter().any(|p| k.starts_with(p)) => {
            "resource control: tether sets only nofile, core, nproc, memlock and its cgroup"
        }
        ("Unit", k) if k.starts_with("Condition") || k.starts_with("Assert") => {
            "conditions are not evaluated: tether starts the service whenever its file is there"
        }
        ("Unit", "Conflicts") => "tether has no conflicts between services",
        ("Unit", "DefaultDependencies") => "tether adds no implicit dependencies",
        ("Unit", "BindsTo" | "PartOf" | "Requisite" | "Upholds" | "PropagatesReloadTo" | "ReloadPropagatedFrom") => {
            "tether's only stop propagation is requires"
        }
        ("Unit", k) if k.starts_with("OnFailure") || k.starts_with("OnSuccess") => {
            "no failure hooks: tether restarts per policy and on_exhausted"
        }
        ("Unit", k) if k.starts_with("StartLimit") => {
            "tether's restart limit is max_restarts within window, not set from the unit"
        }
        ("Install", _) => "tether starts every service file of its directory (disabled = true holds one back)",
        (s, _) if s.starts_with("X-") => "an extension section systemd ignores too",
        _ => "no tether equivalent",
    }
}

#[cfg(test)]
mod tests {
    use super::super::unit;
    use super::*;

    fn ctx(names: &[(&str, &str)], files: &[(&str, Option<&str>)]) -> Context {
        Context {
            names: names
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            env_files: files
                .iter()
                .map(|(p, c)| (p.to_string(), c.map(|c| c.as_bytes().to_vec())))
                .collect(),
            befores: BTreeMap::new(),
        }
    }

    fn imp(text: &str, name: &str, c: &Context) -> Result<Imported, Failure> {
        let u = unit::parse(text.as_bytes(), name).unwrap();
        map(&u, name, name, c)
    }

    fn parses(i: &Imported) -> crate::service::ServiceSpec {
        let text = i.draft.render();
        crate::service::parse(&text, std::path::Path::new(&format!("{}.toml", i.name)))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    const SSH: &str = "[Unit]\nDescription=OpenBSD Secure Shell server\nAfter=network.target auditd.service\nConditionPathExists=!/etc/ssh/sshd_not_to_be_run\n\n[Service]\nEnvironmentFile=-/etc/default/ssh\nExecStartPre=/usr/sbin/sshd -t\nExecStart=/usr/sbin/sshd -D $SSHD_OPTS\nExecReload=/bin/kill -HUP $MAINPID\nKillMode=process\nRestart=on-failure\nRestartPreventExitStatus=255\nType=notify\nRuntimeDirectory=sshd\nRuntimeDirectoryMode=0755\n\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n";

    #[test]
    fn ssh_becomes_a_notify_service_with_every_directive_reported() {
        let c = ctx(
            &[("ssh.service", "ssh"), ("sshd.service", "ssh")],
            &[("/etc/default/ssh", Some("SSHD_OPTS=\n"))],
        );
        let i = imp(SSH, "ssh.service", &c).unwrap();
        assert_eq!(i.name, "ssh");
        let spec = parses(&i);
        assert_eq!(spec.notify, crate::service::NotifyMode::Ready);
        assert_eq!(spec.restart, crate::service::RestartMode::OnFailure);
        assert_eq!(
            spec.exec,
            vec![
                "/bin/sh",
                "-c",
                "mkdir -p -m 0755 /run/sshd && chmod 0755 /run/sshd && exec \"$0\" \"$@\"",
                "/usr/sbin/sshd",
                "-D"
            ]
        );
        assert_eq!(spec.env.get("SSHD_OPTS").map(String::as_str), Some(""));
        // One finding per line of the unit that holds a directive.
        let lines: Vec<usize> = i.findings.iter().map(|f| f.line).collect();
        for l in [2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 19, 20] {
            assert!(
                lines.contains(&l),
                "line {l} not reported: {:#?}",
                i.findings
            );
        }
        let dropped = |d: &str| {
            i.findings
                .iter()
                .any(|f| f.directive.starts_with(d) && matches!(f.outcome, Outcome::Dropped(_)))
        };
        assert!(dropped("ExecStartPre"));
        assert!(dropped("ExecReload"));
        assert!(dropped("KillMode"));
        assert!(dropped("After=network.target"));
        assert!(dropped("ConditionPathExists"));
        assert!(dropped("WantedBy"));
    }

    #[test]
    fn forking_and_oneshot_are_refused_with_the_reason() {
        let c = Context::default();
        let e = imp(
            "[Service]\nType=forking\nExecStart=/usr/sbin/nginx\n",
            "nginx.service",
            &c,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("nginx.service:2: Type=forking: refused: the daemon forks"),
            "{e}"
        );
        let e = imp(
            "[Service]\nType=oneshot\nExecStart=/bin/true\n",
            "x.service",
            &c,
        )
        .unwrap_err();
        assert!(e.to_string().contains("Type=oneshot: refused"), "{e}");
        let e = imp(
            "[Service]\nType=bogus\nExecStart=/bin/true\n",
            "x.service",
            &c,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.service:2: field Type: unknown service type \"bogus\""
        );
        let e = imp("[Service]\nType=simple\n", "x.service", &c).unwrap_err();
        assert!(e.to_string().contains("no ExecStart"), "{e}");
    }

    #[test]
    fn exec_prefixes_are_handled_or_refused_by_name() {
        let c = Context::default();
        let e = imp("[Service]\nExecStart=@/bin/x y\n", "x.service", &c).unwrap_err();
        assert!(e.to_string().contains("the @ prefix"), "{e}");
        let e = imp("[Service]\nExecStart=|echo hi\n", "x.service", &c).unwrap_err();
        assert!(e.to_string().contains("the | prefix"), "{e}");
        let e = imp("[Service]\nUser=a\nExecStart=+/bin/x\n", "x.service", &c).unwrap_err();
        assert!(e.to_string().contains("the + prefix"), "{e}");
        let i = imp(
            "[Service]\nUser=_chrony\nExecStart=!/usr/sbin/chronyd -d\n",
            "x.service",
            &c,
        )
        .unwrap();
        assert_eq!(i.draft.user, None);
        assert!(i
            .findings
            .iter()
            .any(|f| f.directive == "User=_chrony" && matches!(f.outcome, Outcome::Dropped(_))));
        let i = imp(
            "[Service]\nEnvironment=A=1\nExecStart=-:/bin/x $A ${A}\n",
            "x.service",
            &c,
        )
        .unwrap();
        assert_eq!(i.draft.exec, vec!["/bin/x", "$A", "${A}"]);
        assert!(matches!(
            i.findings
                .iter()
                .find(|f| f.directive.starts_with("ExecStart"))
                .map(|f| &f.outcome),
            Some(Outcome::Changed(_))
        ));
        let e = imp("[Service]\nExecStart=/bin/a ; /bin/b\n", "x.service", &c).unwrap_err();
        assert!(e.to_string().contains("several commands"), "{e}");
    }

    #[test]
    fn specifiers_and_variables_in_exec_start() {
        let c = Context::default();
        let i = imp(
            "[Service]\nEnvironment=\"OPTS=-a -b\" 'X=%i'\nExecStart=/sbin/agetty $OPTS %I ${X} $NOTSET\n",
            "getty@tty1.service",
            &c,
        )
        .unwrap();
        assert_eq!(i.name, "getty@tty1");
        assert_eq!(
            i.draft.exec,
            vec!["/sbin/agetty", "-a", "-b", "tty1", "tty1"]
        );
        assert_eq!(i.draft.env.get("X").map(String::as_str), Some("tty1"));
        let f = i
            .findings
            .iter()
            .find(|f| f.directive.starts_with("ExecStart"))
            .unwrap();
        assert!(
            f.outcome.text().contains("$NOTSET not set by the unit"),
            "{f}"
        );
        let e = imp("[Service]\nExecStart=/bin/x %H\n", "x.service", &c).unwrap_err();
        assert!(e.to_string().contains("specifier %H (host name)"), "{e}");
        let e = imp("[Service]\nExecStart=/bin/kill $MAINPID\n", "x.service", &c).unwrap_err();
        assert!(
            e.to_string()
                .contains("$MAINPID is set by systemd at run time"),
            "{e}"
        );
        let e = imp("[Service]\nExecStart=/bin/x\n", "x@.service", &c).unwrap_err();
        assert!(e.to_string().contains("a template unit"), "{e}");
        let e = imp("[Socket]\nListenStream=22\n", "ssh.socket", &c).unwrap_err();
        assert!(
            e.to_string().contains("tether imports .service units only"),
            "{e}"
        );
    }

    #[test]
    fn the_mapped_directives() {
        let c = ctx(
            &[
                ("a.service", "a"),
                ("syslog.service", "rsyslog"),
                ("rsyslog.service", "rsyslog"),
            ],
            &[],
        );
        let i = imp(
            "[Unit]\nAfter=syslog.service b.service\nRequires=syslog.service\nWants=a.service\n[Service]\nType=notify\nExecStart=/bin/a\nRestart=on-abnormal\nRestartSec=1min 30s\nWatchdogSec=30\nUser=nobody\nGroup=nogroup\nWorkingDirectory=-/srv\nUMask=0027\nLimitNOFILE=1024:524288\nLimitCORE=infinity\nLimitAS=1G\nKillSignal=SIGINT\nTimeoutStopSec=90\nProtectSystem=strict\nStateDirectory=a\n",
            "a.service",
            &c,
        )
        .unwrap();
        let s = parses(&i);
        assert_eq!(s.notify, crate::service::NotifyMode::Watchdog);
        assert_eq!(s.watchdog_timeout, Some(std::time::Duration::from_secs(30)));
        assert_eq!(s.restart, crate::service::RestartMode::OnFailure);
        assert_eq!(s.restart_delay, std::time::Duration::from_secs(90));
        assert_eq!(s.user.as_deref(), Some("nobody"));
        assert_eq!(s.group.as_deref(), Some("nogroup"));
        assert_eq!(
            s.working_directory.as_deref(),
            Some(std::path::Path::new("/srv"))
        );
        assert_eq!(s.umask, Some(0o027));
        assert_eq!(s.limits.nofile, Some(crate::service::Limit::Value(1024)));
        assert_eq!(s.limits.core, Some(crate::service::Limit::Unlimited));
        assert_eq!(s.stop_signal, 2);
        assert_eq!(s.stop_timeout, std::time::Duration::from_secs(90));
        assert_eq!(s.requires, vec!["rsyslog"]);
        assert!(s.after.is_empty(), "requires covers after: {:?}", s.after);
        assert_eq!(s.exec, vec!["/bin/a"], "a User= service gets no prelude");
        let out = |d: &str| {
            i.findings
                .iter()
                .find(|f| f.directive == d)
                .map(|f| f.outcome.clone())
        };
        assert!(
            matches!(out("After=b.service"), Some(Outcome::Dropped(t)) if t.contains("not imported"))
        );
        assert!(
            matches!(out("Wants=a.service"), Some(Outcome::Dropped(t)) if t.contains("itself"))
        );
        assert!(matches!(out("LimitAS=1G"), Some(Outcome::Dropped(_))));
        assert!(
            matches!(out("ProtectSystem=strict"), Some(Outcome::Dropped(t)) if t.starts_with("sandboxing"))
        );
        assert!(
            matches!(out("StateDirectory=a"), Some(Outcome::Dropped(t)) if t.contains("/var/lib/a"))
        );
    }

    #[test]
    fn before_is_turned_around_into_the_later_services_after() {
        let names = [("early.service", "early"), ("late.service", "late")];
        let mut c = ctx(&names, &[]);
        let early = unit::parse(
            b"[Unit]\nBefore=late.service gone.target\n[Service]\nExecStart=/bin/e\nType=\n",
            "early.service",
        )
        .unwrap();
        let late = unit::parse(b"[Service]\nExecStart=/bin/l\n", "late.service").unwrap();
        c.befores = befores(
            &[("early".into(), &early), ("late".into(), &late)],
            &c.names,
        );
        let e = map(&early, "early.service", "early.service", &c).unwrap();
        let l = map(&late, "late.service", "late.service", &c).unwrap();
        assert_eq!(l.draft.after, vec!["early"]);
        assert!(e.draft.after.is_empty());
        let f: Vec<String> = e.findings.iter().map(|f| f.to_string()).collect();
        assert!(f.contains(&"early.service:2: Before=late.service: carried: after = [\"early\"] in late's file".to_string()), "{f:#?}");
        assert!(
            f.iter()
                .any(|l| l.starts_with("early.service:2: Before=gone.target: not carried over")),
            "{f:#?}"
        );
        assert!(
            f.contains(&"early.service:5: Type=: carried: empty: the default stands".to_string()),
            "{f:#?}"
        );
    }

    #[test]
    fn a_getty_on_its_terminal_is_refused() {
        let c = Context::default();
        let e = imp(
            "[Service]\nExecStart=-/sbin/agetty -o '-p -- \\\\u' --noclear - linux\nType=idle\nStandardInput=tty\nTTYPath=/dev/%I\n",
            "getty@tty1.service",
            &c,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("getty@tty1.service:4: StandardInput=tty: refused: tether gives a service /dev/null"), "{e}");
        let e = imp(
            "[Service]\nExecStart=/sbin/agetty - $TERM\n",
            "x.service",
            &c,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("$TERM is set by systemd at run time"),
            "{e}"
        );
    }

    #[test]
    fn random_units_never_panic() {
        let pieces: &[&str] = &[
            "[Unit]\n",
            "[Service]\n",
            "[Install]\n",
            "ExecStart=",
            "Type=",
            "notify",
            "forking",
            "Environment=",
            "EnvironmentFile=",
            "-",
            "@",
            "!",
            "+",
            ":",
            "|",
            "%",
            "%i",
            "%H",
            "$",
            "${",
            "}",
            "$A",
            "'",
            "\"",
            "\\",
            "\\x4",
            " ",
            "\n",
            "User=",
            "RuntimeDirectory=",
            "a/../b",
            "LimitNOFILE=",
            "1:2",
            "infinity",
            "RestartSec=",
            "1min",
            "x",
            "=",
            ";",
            "UMask=",
            "0777",
            "Restart=",
            "on-success",
            "WatchdogSec=",
            "KillSignal=",
            "After=",
            "Before=",
            "a.service",
            "/bin/x",
            "Alias=",
            "\u{e9}",
        ];
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..5000 {
            let mut text = String::new();
            for _ in 0..(seed % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                text.push_str(pieces[seed as usize % pieces.len()]);
            }
            let Ok(u) = unit::parse(text.as_bytes(), "r.service") else {
                continue;
            };
            let c = ctx(
                &[("a.service", "a"), ("r.service", "r")],
                &[("/x", Some("A=\"1"))],
            );
            if let Ok(i) = map(&u, "r@i.service", "r.service", &c) {
                let text = i.draft.render();
                crate::service::parse(&text, std::path::Path::new("r@i.toml")).unwrap_or_else(
                    |e| {
                        panic!(
                            "{e}\n{text}\nfrom:\n{}",
                            String::from_utf8_lossy(text.as_bytes())
                        )
                    },
                );
            }
        }
    }

    #[test]
    fn superseded_and_reset_assignments_are_reported() {
        let c = Context::default();
        let i = imp(
            "[Service]\nExecStart=/bin/old\nExecStart=\nExecStart=/bin/new\nRestart=always\nRestart=no\n",
            "x.service",
            &c,
        )
        .unwrap();
        assert_eq!(i.draft.exec, vec!["/bin/new"]);
        assert_eq!(i.draft.restart, Some("never"));
        let f: Vec<String> = i.findings.iter().map(|f| f.to_string()).collect();
        assert!(f.contains(&"x.service:2: ExecStart=/bin/old: not carried over: reset by the empty ExecStart= at line 3".to_string()), "{f:#?}");
        assert!(
            f.contains(
                &"x.service:5: Restart=always: not carried over: overridden by line 6".to_string()
            ),
            "{f:#?}"
        );
    }

    #[test]
    fn environment_files_and_their_errors() {
        let c = ctx(
            &[],
            &[
                ("/etc/default/x", Some("A=1\nB=\"2 3\"\n")),
                ("/etc/default/bad", Some("A=1\nnope\n")),
                ("/etc/default/open", Some("A=\"1\n")),
            ],
        );
        let i = imp(
            "[Service]\nEnvironmentFile=/etc/default/x\nExecStart=/bin/x ${B}\n",
            "x.service",
            &c,
        )
        .unwrap();
        assert_eq!(i.draft.exec, vec!["/bin/x", "2 3"]);
        let e = imp(
            "[Service]\nEnvironmentFile=/etc/default/gone\nExecStart=/bin/x\n",
            "x.service",
            &c,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("/etc/default/gone does not exist"),
            "{e}"
        );
        let i = imp(
            "[Service]\nEnvironmentFile=/etc/default/bad\nExecStart=/bin/x\n",
            "x.service",
            &c,
        )
        .unwrap();
        let f: Vec<String> = i.findings.iter().map(|f| f.to_string()).collect();
        assert!(
            f.contains(&"/etc/default/bad:2: nope: not carried over: not a VARIABLE=VALUE line: ignored, as systemd ignores it".to_string()),
            "{f:#?}"
        );
        let e = imp(
            "[Service]\nEnvironmentFile=/etc/default/open\nExecStart=/bin/x\n",
            "x.service",
            &c,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "/etc/default/open:1: unterminated quote");
        let e = imp(
            "[Service]\nEnvironment=NOEQUALS\nExecStart=/bin/x\n",
            "x.service",
            &c,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.service:2: field Environment: \"NOEQUALS\" is not VARIABLE=VALUE"
        );
    }
}
