//! A runit or s6 service directory → a tether service [`Draft`].
//!
//! runsv(8) and s6-supervise(8) run `./run` in the service directory and
//! run it again whenever it ends (at most once a second); so does the
//! import: `exec = ["DIR/run"]`, `working_directory = "DIR"`, `restart =
//! "always"`, `restart_delay = "1s"`. The run script stays where it is (it
//! may read `./env`, `./conf`, `./data` relative to the directory). Every
//! other file of the directory is reported: `down` becomes `disabled`, s6's
//! `timeout-kill` and `down-signal` become `stop_timeout` and
//! `stop_signal`, s6-rc's `dependencies`(`.d`) become `after` for services
//! of the same run; a `finish` script, a `log/` service, s6's readiness
//! descriptor (`notification-fd`) and the rest are not carried over, each
//! said why. s6-rc's `oneshot` and `bundle` types are refused.

use super::{Draft, Failure, Finding, Imported, Malformed, Outcome, Refusal};
use std::collections::BTreeMap;

/// One entry of the service directory, as the shell read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A regular file (at most a few KiB are read: the shell's limit) and
    /// whether it is executable.
    File { bytes: Vec<u8>, executable: bool },
    /// A directory and the names in it.
    Dir(Vec<String>),
    /// A symbolic link that does not resolve, a socket, a FIFO...
    Other,
}

/// A service directory: its absolute path and entries by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceDir {
    pub path: String,
    pub items: BTreeMap<String, Item>,
}

/// Maps one service directory. `names` maps names of other services of
/// the run (their directory names) to tether names, for s6-rc dependencies.
pub fn map(dir: &ServiceDir, names: &BTreeMap<String, String>) -> Result<Imported, Failure> {
    let path = dir.path.trim_end_matches('/');
    let base = path.rsplit('/').next().unwrap_or(path);
    let refuse = |what: &str, line: usize, reason: String| {
        Failure::Refused(Refusal {
            file: format!("{path}/{what}"),
            line,
            directive: what.to_string(),
            reason,
        })
    };
    let name = super::tether_name(base).ok_or_else(|| {
        refuse(
            "",
            0,
            format!("{base:?} is not a tether service name (1-64 of A-Z a-z 0-9 _ . @ -, starting with a letter or digit)"),
        )
    })?;
    if !path.starts_with('/') {
        return Err(refuse(
            "",
            0,
            "the directory's path must be absolute".into(),
        ));
    }
    let mut findings = Vec::new();
    let mut note = |what: &str, line: usize, outcome: Outcome| {
        findings.push(Finding {
            file: format!("{path}/{what}"),
            line,
            directive: what.to_string(),
            outcome,
        })
    };
    let text = |what: &str, bytes: &[u8]| -> Result<String, Failure> {
        std::str::from_utf8(bytes)
            .map(|s| s.trim().to_string())
            .map_err(|_| {
                Failure::Malformed(Malformed::new(
                    &format!("{path}/{what}"),
                    1,
                    None,
                    "not valid UTF-8",
                ))
            })
    };

    if let Some(Item::File { bytes, .. }) = dir.items.get("type") {
        match text("type", bytes)?.as_str() {
            "longrun" => {}
            "oneshot" => {
                return Err(refuse(
                    "type",
                    1,
                    "an s6-rc oneshot runs to completion: tether has no one-shot services".into(),
                ))
            }
            "bundle" => {
                return Err(refuse(
                    "type",
                    1,
                    "an s6-rc bundle names services, it is none: import its services".into(),
                ))
            }
            other => {
                return Err(Failure::Malformed(Malformed::new(
                    &format!("{path}/type"),
                    1,
                    None,
                    format!("unknown s6-rc service type {other:?}"),
                )))
            }
        }
    }
    let run = match dir.items.get("run") {
        Some(Item::File { bytes, executable }) => {
            if !bytes.starts_with(b"#!") {
                return Err(refuse(
                    "run",
                    1,
                    "the run script has no #! line: tether execs it directly (ENOEXEC)".into(),
                ));
            }
            if !executable {
                return Err(refuse(
                    "run",
                    0,
                    "the run script is not executable (runsv would not run it either)".into(),
                ));
            }
            format!("{path}/run")
        }
        _ => {
            return Err(refuse(
                "run",
                0,
                "no run file: not a runit or s6 service directory".into(),
            ))
        }
    };
    let mut d = Draft {
        comments: vec![format!(
            "Imported from the service directory {path} by tetherctl import."
        )],
        exec: vec![run.clone()],
        working_directory: Some(path.to_string()),
        restart: Some("always"),
        restart_delay: Some("1s".into()),
        ..Draft::default()
    };
    note(
        "run",
        1,
        Outcome::Carried(format!(
            "exec = [\"{run}\"] in working_directory = \"{path}\", restart = \"always\", restart_delay = \"1s\" (runsv and s6-supervise restart it whenever it ends, at most once a second)"
        )),
    );

    for (what, item) in &dir.items {
        let file_bytes = match item {
            Item::File { bytes, .. } => Some(bytes.as_slice()),
            _ => None,
        };
        match (what.as_str(), file_bytes) {
            ("run" | "type", _) => {
                if what == "type" {
                    note("type", 1, Outcome::Carried("longrun: a supervised service".into()));
                }
            }
            ("down", _) => {
                d.disabled = true;
                note("down", 0, Outcome::Carried("disabled = true: not started until tetherctl start".into()));
            }
            ("finish", _) => note("finish", 0, Outcome::Dropped("tether runs no finish script after the service ends".into())),
            ("log", _) => note(
                "log",
                0,
                Outcome::Dropped("tether sends the service's output to syslog; the log service (log/run) is not imported".into()),
            ),
            ("notification-fd", Some(b)) => {
                let fd = text(what, b)?;
                note(
                    what,
                    1,
                    Outcome::Dropped(format!(
                        "s6 readiness (a line on descriptor {fd}) is not supported: the service is ready once started"
                    )),
                )
            }
            ("timeout-kill", Some(b)) => {
                let ms: u64 = text(what, b)?.parse().map_err(|_| {
                    Failure::Malformed(Malformed::new(&format!("{path}/{what}"), 1, None, "not a number of milliseconds"))
                })?;
                if ms == 0 {
                    note(what, 1, Outcome::Dropped("0: never SIGKILL; tether always ends a stop with SIGKILL, its default 5s stands".into()));
                } else {
                    let v = super::values::tether_duration(ms * 1000);
                    note(what, 1, Outcome::Carried(format!("stop_timeout = \"{v}\"")));
                    d.stop_timeout = Some(v);
                }
            }
            ("down-signal", Some(b)) => {
                let s = text(what, b)?;
                let n = crate::service::parse_signal(&s).ok_or_else(|| {
                    Failure::Malformed(Malformed::new(&format!("{path}/{what}"), 1, None, format!("{s:?} is not a signal")))
                })?;
                let v = crate::service::signal_name(n);
                note(what, 1, Outcome::Carried(format!("stop_signal = \"{v}\"")));
                d.stop_signal = Some(v);
            }
            ("dependencies" | "dependencies.d", _) => {
                let deps: Vec<String> = match item {
                    Item::File { bytes, .. } => text(what, bytes)?
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_string)
                        .collect(),
                    Item::Dir(names) => names.clone(),
                    Item::Other => Vec::new(),
                };
                for dep in deps {
                    match names.get(&dep) {
                        Some(t) if *t != name => {
                            if !d.after.contains(t) {
                                d.after.push(t.clone());
                            }
                            note(what, 0, Outcome::Carried(format!("after = [\"{t}\"]")));
                        }
                        _ => note(what, 0, Outcome::Dropped(format!("{dep} is not imported in this run"))),
                    }
                }
            }
            ("env" | "data" | "conf", _) => note(
                what,
                0,
                Outcome::Carried("left to the run script, which runs in the service directory".into()),
            ),
            ("supervise" | "event", _) => note(what, 0, Outcome::Carried("runtime state of runsv/s6-supervise: nothing to carry".into())),
            ("control", _) => note(
                what,
                0,
                Outcome::Dropped("runit's control scripts are not run: tether's stop sends stop_signal".into()),
            ),
            ("check", _) => note(what, 0, Outcome::Dropped("sv's readiness check script is not run: the service is ready once started".into())),
            _ => note(what, 0, Outcome::Dropped("unknown file of a service directory: no tether equivalent".into())),
        }
    }
    Ok(Imported {
        name,
        draft: d,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str, x: bool) -> Item {
        Item::File {
            bytes: s.as_bytes().to_vec(),
            executable: x,
        }
    }

    #[test]
    fn a_runit_directory() {
        let mut items = BTreeMap::new();
        items.insert(
            "run".into(),
            file(
                "#!/bin/sh\nexec 2>&1\nexec chpst -u nobody mydaemon -f\n",
                true,
            ),
        );
        items.insert("finish".into(), file("#!/bin/sh\n", true));
        items.insert("log".into(), Item::Dir(vec!["run".into()]));
        items.insert("down".into(), file("", false));
        items.insert("supervise".into(), Item::Dir(vec![]));
        let dir = ServiceDir {
            path: "/etc/sv/mydaemon".into(),
            items,
        };
        let i = map(&dir, &BTreeMap::new()).unwrap();
        assert_eq!(i.name, "mydaemon");
        let spec = crate::service::parse(&i.draft.render(), std::path::Path::new("mydaemon.toml"))
            .unwrap();
        assert_eq!(spec.exec, vec!["/etc/sv/mydaemon/run"]);
        assert_eq!(
            spec.working_directory.as_deref(),
            Some(std::path::Path::new("/etc/sv/mydaemon"))
        );
        assert!(spec.disabled);
        assert_eq!(spec.restart, crate::service::RestartMode::Always);
        let dropped: Vec<&str> = i
            .findings
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::Dropped(_)))
            .map(|f| f.directive.as_str())
            .collect();
        assert_eq!(dropped, vec!["finish", "log"]);
        assert_eq!(i.findings.len(), 5);
    }

    #[test]
    fn an_s6_directory() {
        let mut items = BTreeMap::new();
        items.insert(
            "run".into(),
            file("#!/bin/execlineb -P\nfdmove -c 2 1\nmydaemon\n", true),
        );
        items.insert("notification-fd".into(), file("3\n", false));
        items.insert("timeout-kill".into(), file("2500\n", false));
        items.insert("down-signal".into(), file("SIGINT\n", false));
        items.insert("type".into(), file("longrun\n", false));
        items.insert(
            "dependencies.d".into(),
            Item::Dir(vec!["base".into(), "syslogd".into()]),
        );
        let dir = ServiceDir {
            path: "/etc/s6-rc/source/mydaemon".into(),
            items,
        };
        let mut names = BTreeMap::new();
        names.insert("syslogd".to_string(), "syslogd".to_string());
        let i = map(&dir, &names).unwrap();
        let spec = crate::service::parse(&i.draft.render(), std::path::Path::new("mydaemon.toml"))
            .unwrap();
        assert_eq!(spec.stop_timeout, std::time::Duration::from_millis(2500));
        assert_eq!(spec.stop_signal, 2);
        assert_eq!(spec.after, vec!["syslogd"]);
        let nf = i
            .findings
            .iter()
            .find(|f| f.directive == "notification-fd")
            .unwrap();
        assert!(
            nf.to_string().contains("descriptor 3) is not supported"),
            "{nf}"
        );
        assert!(i
            .findings
            .iter()
            .any(|f| f.outcome.text().contains("base is not imported")));
    }

    #[test]
    fn refusals() {
        let dir = |items: Vec<(&str, Item)>| ServiceDir {
            path: "/etc/sv/x".into(),
            items: items.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        let e = map(&dir(vec![]), &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("no run file"), "{e}");
        let e = map(
            &dir(vec![("run", file("mydaemon\n", true))]),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no #! line"), "{e}");
        let e = map(
            &dir(vec![("run", file("#!/bin/sh\n", false))]),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not executable"), "{e}");
        let e = map(
            &dir(vec![
                ("run", file("#!/bin/sh\n", true)),
                ("type", file("oneshot", false)),
            ]),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("oneshot"), "{e}");
        let e = map(
            &dir(vec![
                ("run", file("#!/bin/sh\n", true)),
                ("timeout-kill", file("soon", false)),
            ]),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/sv/x/timeout-kill:1: not a number of milliseconds"
        );
    }
}
