//! `tetherctl import`: systemd units and runit/s6 service directories into
//! tether service files (`/etc/tether/services/NAME.toml`, [`crate::service`]).
//!
//! Pure: the shell (`tetherctl`'s `import` module) reads the files and
//! writes the results; everything here takes bytes and returns values.
//! - [`unit`]: a unit file's bytes → sections and `KEY=VALUE` entries with
//!   their lines;
//! - [`values`]: systemd's value syntaxes (command lines, quoting,
//!   specifiers, `$VAR`, time spans, limits, environment files);
//! - [`map`]: a parsed unit → a [`Draft`] and a [`Finding`] for every
//!   directive, or a [`Refusal`];
//! - [`runit`]: a runit or s6 service directory → the same;
//! - [`Draft::render`]: the service file's text.
//!
//! Every directive of the input ends in exactly one finding: carried over,
//! carried over with a difference (said how), or not carried over (said
//! why). Nothing is dropped silently. A unit that cannot run under tether
//! as written (`Type=forking`, `Type=oneshot`, an `ExecStart=` prefix or a
//! specifier tether cannot honour) is refused with the reason.

pub mod map;
pub mod runit;
pub mod unit;
pub mod values;

use std::collections::BTreeMap;
use std::fmt;

/// Bad input: file, line, the directive when there is one, and what is
/// wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub file: String,
    pub line: usize,
    pub field: Option<String>,
    pub message: String,
}

impl Malformed {
    pub fn new(file: &str, line: usize, field: Option<&str>, message: impl Into<String>) -> Self {
        Malformed {
            file: file.to_string(),
            line,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(k) => write!(
                f,
                "{}:{}: field {}: {}",
                self.file, self.line, k, self.message
            ),
            None => write!(f, "{}:{}: {}", self.file, self.line, self.message),
        }
    }
}

/// Why a unit or directory is not imported at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The input does not parse.
    Malformed(Malformed),
    /// It parses, but tether cannot run it as written.
    Refused(Refusal),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Malformed(m) => write!(f, "{m}"),
            Failure::Refused(r) => write!(f, "{r}"),
        }
    }
}

impl From<Malformed> for Failure {
    fn from(m: Malformed) -> Failure {
        Failure::Malformed(m)
    }
}

/// A unit tether cannot run as written, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub file: String,
    pub line: usize,
    /// `Type=forking`, `ExecStart`, ...
    pub directive: String,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: refused: {}",
            self.file, self.line, self.directive, self.reason
        )
    }
}

/// What became of one directive (or file of a service directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Carried over; the text says as what.
    Carried(String),
    /// Carried over with a difference the text explains.
    Changed(String),
    /// Not carried over; the text says why.
    Dropped(String),
}

impl Outcome {
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Carried(_) => "carried",
            Outcome::Changed(_) => "changed",
            Outcome::Dropped(_) => "not carried over",
        }
    }
    pub fn text(&self) -> &str {
        match self {
            Outcome::Carried(t) | Outcome::Changed(t) | Outcome::Dropped(t) => t,
        }
    }
}

/// One line of the import report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    /// 0 when it concerns the whole unit (a default that differs).
    pub line: usize,
    /// `Restart=on-failure`, `finish`, ...
    pub directive: String,
    pub outcome: Outcome,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}: {}",
            self.file,
            self.line,
            self.directive,
            self.outcome.word(),
            self.outcome.text()
        )
    }
}

/// A resource limit value of the service file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitValue {
    Value(u64),
    Unlimited,
}

/// What the service file will say; `None` leaves tether's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draft {
    /// Header comments (where it came from, `Description=`).
    pub comments: Vec<String>,
    pub exec: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_directory: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// Octal digits, e.g. `022`.
    pub umask: Option<String>,
    pub nofile: Option<LimitValue>,
    pub core: Option<LimitValue>,
    pub nproc: Option<LimitValue>,
    pub memlock: Option<LimitValue>,
    /// `always`, `on-failure`, `never`.
    pub restart: Option<&'static str>,
    /// In tether's duration syntax (`100ms`).
    pub restart_delay: Option<String>,
    /// Signal name without `SIG`.
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<String>,
    /// `ready` or `watchdog`.
    pub notify: Option<&'static str>,
    pub watchdog_timeout: Option<String>,
    pub after: Vec<String>,
    pub requires: Vec<String>,
    pub disabled: bool,
}

/// An imported service: its tether name, the draft and the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub name: String,
    pub draft: Draft,
    pub findings: Vec<Finding>,
}

impl Draft {
    /// The service file's text (TOML, keys in the order of the README's
    /// table).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.comments {
            for line in c.lines() {
                out.push_str("# ");
                out.push_str(line);
                out.push('\n');
            }
        }
        let mut kv = |k: &str, v: String| {
            out.push_str(k);
            out.push_str(" = ");
            out.push_str(&v);
            out.push('\n');
        };
        kv("exec", array(&self.exec));
        let opt = |v: &Option<String>| v.as_deref().map(quote);
        if let Some(v) = opt(&self.working_directory) {
            kv("working_directory", v);
        }
        if let Some(v) = opt(&self.user) {
            kv("user", v);
        }
        if let Some(v) = opt(&self.group) {
            kv("group", v);
        }
        if let Some(v) = opt(&self.umask) {
            kv("umask", v);
        }
        for (k, v) in [
            ("nofile", self.nofile),
            ("core", self.core),
            ("nproc", self.nproc),
            ("memlock", self.memlock),
        ] {
            match v {
                Some(LimitValue::Value(n)) => kv(k, n.to_string()),
                Some(LimitValue::Unlimited) => kv(k, quote("unlimited")),
                None => {}
            }
        }
        if let Some(v) = self.restart {
            kv("restart", quote(v));
        }
        if let Some(v) = opt(&self.restart_delay) {
            kv("restart_delay", v);
        }
        if let Some(v) = opt(&self.stop_signal) {
            kv("stop_signal", v);
        }
        if let Some(v) = opt(&self.stop_timeout) {
            kv("stop_timeout", v);
        }
        if let Some(v) = self.notify {
            kv("notify", quote(v));
        }
        if let Some(v) = opt(&self.watchdog_timeout) {
            kv("watchdog_timeout", v);
        }
        if !self.after.is_empty() {
            kv("after", array(&self.after));
        }
        if !self.requires.is_empty() {
            kv("requires", array(&self.requires));
        }
        if self.disabled {
            kv("disabled", "true".to_string());
        }
        if !self.env.is_empty() {
            out.push_str("\n[env]\n");
            for (k, v) in &self.env {
                out.push_str(&quote(k));
                out.push_str(" = ");
                out.push_str(&quote(v));
                out.push('\n');
            }
        }
        out
    }
}

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn array(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
    format!("[{}]", items.join(", "))
}

/// A tether service name from a unit or directory name: the characters
/// tether allows, or `None`.
pub fn tether_name(s: &str) -> Option<String> {
    crate::service::valid_name(s).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_rendered_draft_parses_with_the_restarters_parser() {
        let mut env = BTreeMap::new();
        env.insert("A".to_string(), "x \"y\"\\ \u{1}".to_string());
        let d = Draft {
            comments: vec!["from a.service".into(), "two\nlines".into()],
            exec: vec!["/bin/sh".into(), "-c".into(), "echo \"$0\"".into()],
            env,
            working_directory: Some("/srv".into()),
            user: Some("nobody".into()),
            group: Some("nogroup".into()),
            umask: Some("027".into()),
            nofile: Some(LimitValue::Value(16384)),
            core: Some(LimitValue::Unlimited),
            restart: Some("on-failure"),
            restart_delay: Some("100ms".into()),
            stop_signal: Some("INT".into()),
            stop_timeout: Some("90s".into()),
            notify: Some("watchdog"),
            watchdog_timeout: Some("30s".into()),
            disabled: true,
            ..Draft::default()
        };
        let text = d.render();
        let spec = crate::service::parse(&text, Path::new("a.toml")).unwrap_or_else(|e| {
            panic!("{e}\n{text}");
        });
        assert_eq!(spec.exec, d.exec);
        assert_eq!(
            spec.env.get("A").map(String::as_str),
            Some("x \"y\"\\ \u{1}")
        );
        assert_eq!(spec.umask, Some(0o027));
        assert_eq!(spec.stop_signal, 2);
        assert!(spec.disabled);
        assert_eq!(spec.notify, crate::service::NotifyMode::Watchdog);
    }
}
