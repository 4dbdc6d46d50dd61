//! Reload (`SIGHUP` or `tetherctl reload`): the new set of service files is
//! validated as a whole; any error (a bad file, an unknown or circular
//! dependency, an unreadable directory) leaves the running set untouched
//! and is reported as `file:line:column: message`, one per line.
//!
//! [`diff`] names what a valid new set changes; the supervisor applies it:
//! added services start, removed ones stop and go, changed ones (any key
//! differs) restart with the new spec, unchanged ones are left alone — even
//! when stopped or failed by hand.

use crate::service::{LoadedSet, ServiceSpec};
use std::collections::BTreeMap;

/// Every error of `set`, one per line; `Ok` when there is none.
pub fn validate(set: &LoadedSet) -> Result<(), String> {
    if !set.has_errors() {
        return Ok(());
    }
    let mut lines: Vec<String> = Vec::new();
    if let Some(e) = &set.dir_error {
        lines.push(e.to_string());
    }
    lines.extend(set.errors.iter().map(|(_, e)| e.to_string()));
    Err(lines.join("\n"))
}

/// What a new set changes, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// Compares the current specs (`None`: a service whose file had an error)
/// with the new set.
pub fn diff<'a>(
    current: impl IntoIterator<Item = (&'a str, Option<&'a ServiceSpec>)>,
    new: &[ServiceSpec],
) -> Diff {
    let current: BTreeMap<&str, Option<&ServiceSpec>> = current.into_iter().collect();
    let mut d = Diff::default();
    for spec in new {
        match current.get(spec.name.as_str()) {
            None | Some(None) => d.added.push(spec.name.clone()),
            Some(Some(old)) if *old != spec => d.changed.push(spec.name.clone()),
            Some(Some(_)) => {}
        }
    }
    let names: std::collections::BTreeSet<&str> = new.iter().map(|s| s.name.as_str()).collect();
    d.removed = current
        .keys()
        .filter(|n| !names.contains(*n))
        .map(|n| n.to_string())
        .collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_common::config::ConfigError;

    #[test]
    fn diff_names_added_changed_and_removed() {
        let a = ServiceSpec::new("a", &["/bin/a"]);
        let b = ServiceSpec::new("b", &["/bin/b"]);
        let c = ServiceSpec::new("c", &["/bin/c"]);
        let mut b2 = b.clone();
        b2.stop_timeout = std::time::Duration::from_secs(9);
        let d = diff(
            [
                ("a", Some(&a)),
                ("b", Some(&b)),
                ("c", Some(&c)),
                ("x", None),
            ],
            &[a.clone(), b2, ServiceSpec::new("x", &["/x"])],
        );
        assert_eq!(d.added, vec!["x"]);
        assert_eq!(d.changed, vec!["b"]);
        assert_eq!(d.removed, vec!["c"]);
    }

    #[test]
    fn validate_lists_every_error_with_its_location() {
        let set = LoadedSet {
            specs: vec![],
            errors: vec![
                (
                    "a".into(),
                    ConfigError::Parse {
                        file: "/s/a.toml".into(),
                        line: 1,
                        column: 2,
                        field: "exec".into(),
                        message: "bad".into(),
                    },
                ),
                (
                    "b".into(),
                    ConfigError::Parse {
                        file: "/s/b.toml".into(),
                        line: 3,
                        column: 4,
                        field: String::new(),
                        message: "worse".into(),
                    },
                ),
            ],
            dir_error: None,
        };
        let e = validate(&set).unwrap_err();
        assert_eq!(e, "/s/a.toml:1:2: field `exec`: bad\n/s/b.toml:3:4: worse");
        assert!(validate(&LoadedSet::default()).is_ok());
    }
}
