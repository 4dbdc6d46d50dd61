//! The configuration init hands its children.
//!
//! Normally a child gets `--config FILE`, the very file init read. When that
//! file is bad (init runs on built-in defaults) or command-line overrides are
//! in force (`--device`, `--state-dir`, ...), the children must see the same
//! settings as init — a child reading the bad file on its own would fall back
//! to the defaults *without* the overrides, and e.g. open the host's
//! `/dev/watchdog0` in a test. So init then writes the settings it runs on to
//! `RUN/init-effective.toml` (atomically) and passes that file instead.
//!
//! Decisions:
//! - Every key of `tether_common::config::Config` is written, so the file is
//!   complete and re-parses to the same `Config` (tested). A key added to
//!   `Config` later must be added here too (the round-trip test catches it).
//! - A path that is not UTF-8 cannot be written to TOML: then, and when the
//!   file cannot be written, init logs it and passes the original file.
//! - A `tetherctl reload` in the restarter re-reads this file, not the
//!   original, while overrides are in force: documented in the README.

use std::path::{Path, PathBuf};

use tether_common::config::{Config, LogFormat};
use tether_common::duration;
use toml::{Table, Value};

/// File name in the run directory.
pub const FILE_NAME: &str = "init-effective.toml";

/// Why the file could not be produced.
#[derive(Debug)]
pub enum EffectiveError {
    NotUtf8 {
        key: &'static str,
        path: PathBuf,
    },
    Write {
        file: PathBuf,
        source: tether_common::record::RecordError,
    },
}

impl std::fmt::Display for EffectiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EffectiveError::NotUtf8 { key, path } => {
                write!(f, "{}: path {:?} is not UTF-8", key, path)
            }
            EffectiveError::Write { file, source } => {
                write!(f, "writing {}: {}", file.display(), source)
            }
        }
    }
}

fn dur(d: std::time::Duration) -> Value {
    Value::String(duration::format(d))
}

fn path(key: &'static str, p: &Path) -> Result<Value, EffectiveError> {
    p.to_str()
        .map(|s| Value::String(s.to_string()))
        .ok_or_else(|| EffectiveError::NotUtf8 {
            key,
            path: p.to_path_buf(),
        })
}

/// `config` as a complete `tether.toml`.
pub fn render(config: &Config) -> Result<String, EffectiveError> {
    let t = &config.timing;
    let mut timing = Table::new();
    timing.insert("beat_interval".into(), dur(t.beat_interval));
    timing.insert("hang_timeout".into(), dur(t.hang_timeout));
    timing.insert("restart_delay".into(), dur(t.restart_delay));
    timing.insert("stale_timeout".into(), dur(t.stale_timeout));
    timing.insert("hardware_timeout".into(), dur(t.hardware_timeout));
    timing.insert("liveness_interval".into(), dur(t.liveness_interval));
    timing.insert("startup_grace".into(), dur(t.startup_grace));
    let mut by_layer = Table::new();
    for (layer, d) in &t.stale_timeout_by_layer {
        by_layer.insert(layer.clone(), dur(*d));
    }
    timing.insert("stale_timeout_by_layer".into(), Value::Table(by_layer));

    let mut watchdog = Table::new();
    let device = match &config.watchdog.device {
        Some(p) => path("watchdog.device", p)?,
        None => Value::String(String::new()),
    };
    watchdog.insert("device".into(), device);
    watchdog.insert(
        "allow_disarm".into(),
        Value::Boolean(config.watchdog.allow_disarm),
    );

    let mut log = Table::new();
    log.insert(
        "syslog_socket".into(),
        path("log.syslog_socket", &config.log.syslog_socket)?,
    );
    log.insert("kmsg".into(), Value::Boolean(config.log.kmsg));
    log.insert("stderr".into(), Value::Boolean(config.log.stderr));
    let format = match config.log.format {
        LogFormat::Rfc3164 => "rfc3164",
        LogFormat::Rfc5424 => "rfc5424",
    };
    log.insert("format".into(), Value::String(format.into()));

    let mut state = Table::new();
    state.insert(
        "history".into(),
        Value::Integer(i64::try_from(config.state.history).unwrap_or(i64::MAX)),
    );

    let mut metrics = Table::new();
    let textfile_dir = match &config.metrics.textfile_dir {
        Some(p) => path("metrics.textfile_dir", p)?,
        None => Value::String(String::new()),
    };
    metrics.insert("textfile_dir".into(), textfile_dir);

    let p = &config.paths;
    let mut paths = Table::new();
    paths.insert("services".into(), path("paths.services", &p.services)?);
    paths.insert("run".into(), path("paths.run", &p.run)?);
    paths.insert("state".into(), path("paths.state", &p.state)?);
    let bin = match &p.bin {
        Some(b) => path("paths.bin", b)?,
        None => Value::String(String::new()),
    };
    paths.insert("bin".into(), bin);

    let i = &config.init;
    let mut init = Table::new();
    init.insert(
        "max_restarts".into(),
        Value::Integer(i64::from(i.max_restarts)),
    );
    init.insert("window".into(), dur(i.window));
    init.insert("stop_timeout".into(), dur(i.stop_timeout));
    init.insert("kill_grace".into(), dur(i.kill_grace));
    // Left out when not set (the kernel's fs.nr_open): TOML has no null.
    if let Some(n) = i.nofile {
        init.insert(
            "nofile".into(),
            Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
        );
    }

    let mut control = Table::new();
    control.insert(
        "group".into(),
        Value::String(config.control.group.clone().unwrap_or_default()),
    );

    let mut root = Table::new();
    root.insert("timing".into(), Value::Table(timing));
    root.insert("watchdog".into(), Value::Table(watchdog));
    root.insert("log".into(), Value::Table(log));
    root.insert("paths".into(), Value::Table(paths));
    root.insert("init".into(), Value::Table(init));
    root.insert("control".into(), Value::Table(control));
    root.insert("state".into(), Value::Table(state));
    root.insert("metrics".into(), Value::Table(metrics));
    let mut text = String::from(
        "# Written by tether-init: the settings it runs on (built-in defaults or\n\
         # command-line overrides in force). Edit tether.toml, not this file.\n",
    );
    text.push_str(&root.to_string());
    Ok(text)
}

/// Writes the file into `config.paths.run`; returns its path.
pub fn write(config: &Config) -> Result<PathBuf, EffectiveError> {
    let text = render(config)?;
    let dir = &config.paths.run;
    let file = dir.join(FILE_NAME);
    tether_common::record::write_atomic(dir, FILE_NAME, text.as_bytes()).map_err(|source| {
        EffectiveError::Write {
            file: file.clone(),
            source,
        }
    })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn defaults_round_trip() {
        let c = Config::default();
        let text = render(&c).unwrap();
        let back = Config::parse(&text, Path::new("effective.toml")).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn every_setting_round_trips() {
        let mut c = Config::default();
        c.timing.beat_interval = Duration::from_millis(100);
        c.timing.hang_timeout = Duration::from_millis(1500);
        c.timing.restart_delay = Duration::from_millis(200);
        c.timing.startup_grace = Duration::from_millis(500);
        c.timing.stale_timeout = Duration::from_secs(3);
        c.timing
            .stale_timeout_by_layer
            .insert("init".into(), Duration::from_millis(2500));
        c.timing.hardware_timeout = Duration::from_secs(4);
        c.timing.liveness_interval = Duration::from_secs(2);
        c.watchdog.device = Some("/tmp/x y/\"wd\"".into());
        c.watchdog.allow_disarm = true;
        c.log.syslog_socket = "/tmp/log.sock".into();
        c.log.kmsg = false;
        c.log.stderr = false;
        c.paths.services = "/tmp/svc".into();
        c.paths.run = "/tmp/run".into();
        c.paths.state = "/tmp/state".into();
        c.paths.bin = Some("/tmp/bin".into());
        c.init.max_restarts = 7;
        c.init.window = Duration::from_secs(42);
        c.init.stop_timeout = Duration::from_millis(2500);
        c.init.kill_grace = Duration::from_millis(300);
        c.init.nofile = Some(65536);
        c.control.group = Some("wheel".into());
        c.log.format = LogFormat::Rfc5424;
        c.state.history = 100;
        c.metrics.textfile_dir = Some("/var/lib/prometheus/node-exporter".into());
        let text = render(&c).unwrap();
        let back = Config::parse(&text, Path::new("effective.toml")).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn non_utf8_paths_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let mut c = Config::default();
        c.paths.state = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/\xff"));
        assert!(matches!(
            render(&c),
            Err(EffectiveError::NotUtf8 {
                key: "paths.state",
                ..
            })
        ));
    }
}
