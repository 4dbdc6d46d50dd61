//! `tether.toml`: parsing (serde + toml, unknown keys rejected) and the typed
//! settings every binary uses. Errors name file, line, column and field.
//!
//! Interface (DESIGN.md "Interface"): the section and key names are fixed;
//! keys added here beyond DESIGN.md are documented in the README.
//!
//! Decisions where DESIGN.md is silent:
//! - Durations are strings with a unit (`duration`); a bare number is refused.
//! - `[paths] bin = ""`, `[watchdog] device = ""` and `[control] group = ""`
//!   mean "not set", the same as leaving the key out.
//! - Values are checked beyond their type: `beat_interval`,
//!   `liveness_interval` and `[init] window` must be positive,
//!   `hardware_timeout` whole seconds in 1..=65535 (what the device ioctl
//!   takes), `[init] max_restarts` at least 1, and the layer names under
//!   `[timing.stale_timeout_by_layer]` made of `[a-z0-9_-]`.
//! - [`Config::parse`] and [`Config::load`] also check the timing budget;
//!   [`Config::parse_without_budget`] stops before it (for `tetherctl check`,
//!   which prints the budget table next to the broken rule).
//! - Error positions come from the toml error's span; the field path is found
//!   by walking the spanned document (`toml::de::DeTable`) to the key or value
//!   at that span, plus the key a "missing field" message names.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::de::{DeTable, DeValue};

use crate::duration;

/// Largest configuration file read (`tether.toml`, a service file). A
/// larger one is refused without being read whole, so a runaway file (or a
/// symlink to `/dev/zero`) cannot make PID 1 or the restarter allocate
/// without bound.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a configuration file: a regular file of at most
/// [`MAX_CONFIG_BYTES`] of UTF-8. The file is opened with `O_NONBLOCK` and
/// checked to be a regular file before any read, so a FIFO (or a device)
/// put where a configuration file belongs is refused at once instead of
/// blocking the caller's event loop.
pub fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source: std::io::Error| ConfigError::Io {
        file: path.to_path_buf(),
        source,
    };
    let invalid = |msg: String| err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(err)?;
    let meta = f.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(invalid(format!(
            "larger than {} bytes ({} bytes)",
            MAX_CONFIG_BYTES,
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(invalid(format!("larger than {} bytes", MAX_CONFIG_BYTES)));
    }
    String::from_utf8(bytes).map_err(|e| {
        invalid(format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Default location of the chain's settings.
pub const DEFAULT_CONFIG: &str = "/etc/tether/tether.toml";

/// The whole of `tether.toml`, validated.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub timing: Timing,
    pub watchdog: WatchdogSettings,
    pub log: LogSettings,
    pub paths: Paths,
    pub init: InitSettings,
    pub control: ControlSettings,
    pub state: StateSettings,
    pub metrics: MetricsSettings,
}

/// `[timing]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    /// How often each layer beats. Default 1 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub beat_interval: Duration,
    /// init kills a layer child silent this long. Default 10 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub hang_timeout: Duration,
    /// Minimum time between two starts of a layer child. Default 1 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub restart_delay: Duration,
    /// watchdogd stops petting when a layer is silent this long. Default 20 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub stale_timeout: Duration,
    /// Per-layer overrides of `stale_timeout` (`[timing.stale_timeout_by_layer]`).
    #[serde(deserialize_with = "duration::deserialize_map")]
    pub stale_timeout_by_layer: BTreeMap<String, Duration>,
    /// Programmed into the device (whole seconds). Default 30 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub hardware_timeout: Duration,
    /// Period of the one-line liveness summary. Default 60 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub liveness_interval: Duration,
    /// Time a freshly started layer child has to send its first beat before
    /// its hang and stale timeouts start to count. Default 5 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub startup_grace: Duration,
}

impl Timing {
    /// The stale timeout watchdogd applies to `layer`.
    pub fn stale_timeout_for(&self, layer: &str) -> Duration {
        self.stale_timeout_by_layer
            .get(layer)
            .copied()
            .unwrap_or(self.stale_timeout)
    }
}

/// `[watchdog]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchdogSettings {
    /// `None`: `/dev/watchdog0`, then `/dev/watchdog`.
    #[serde(deserialize_with = "empty_is_none")]
    pub device: Option<PathBuf>,
    /// Whether watchdogd may disarm the device (magic close) on `SIGUSR1`.
    /// Default false.
    pub allow_disarm: bool,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Default `/dev/log`.
    pub syslog_socket: PathBuf,
    /// tether's own messages to `/dev/kmsg` while syslog is down. Default true.
    pub kmsg: bool,
    /// Whether tether's own log lines are also copied to stderr. Default true.
    pub stderr: bool,
    /// The syslog line format: `rfc3164` (default, `<PRI>TAG[PID]: msg`) or
    /// `rfc5424` (`<PRI>1 TIME HOST APP PID MSGID [SD] msg`, with a MSGID
    /// and structured data for a central collector; see `logging`).
    pub format: LogFormat,
}

/// `[log] format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Rfc3164,
    Rfc5424,
}

/// `[state]`: the persistent records.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSettings {
    /// Boots kept in the reset history (`STATE/history`), 0 (off) to
    /// [`crate::record::HISTORY_MAX`]. Default 32.
    pub history: usize,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            history: crate::record::HISTORY_DEFAULT,
        }
    }
}

/// `[metrics]`: Prometheus metrics for node_exporter's textfile collector.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Directory the restarter writes `tether.prom` into (node_exporter's
    /// `--collector.textfile.directory`); `None` (unset or `""`): no
    /// metrics file.
    #[serde(deserialize_with = "empty_is_none")]
    pub textfile_dir: Option<PathBuf>,
}

/// `[paths]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Paths {
    /// Default `/etc/tether/services`.
    pub services: PathBuf,
    /// Default `/run/tether`.
    pub run: PathBuf,
    /// Default `/var/lib/tether`.
    pub state: PathBuf,
    /// Where the other binaries live; `None` (written `""`): beside
    /// `tether-init`'s own executable.
    #[serde(deserialize_with = "empty_is_none")]
    pub bin: Option<PathBuf>,
}

/// `[init]`: init's supervision of its layer children.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InitSettings {
    /// Sliding-window restart budget of each layer child: at most
    /// `max_restarts` starts within `window`; exhaustion means an orderly
    /// reboot. Defaults 10 within 300 s.
    pub max_restarts: u32,
    #[serde(deserialize_with = "duration::deserialize")]
    pub window: Duration,
    /// How long init waits for the restarter to stop services at shutdown.
    /// Default 30 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub stop_timeout: Duration,
    /// Between `kill(-1, SIGTERM)` and `kill(-1, SIGKILL)`. Default 3 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub kill_grace: Duration,
    /// `RLIMIT_NOFILE` (soft = hard) init sets for itself and its layer
    /// children, from [`NOFILE_MIN`] to [`NOFILE_MAX`]. `None` (the key
    /// left out): the kernel's `fs.nr_open`, the most a process may have.
    pub nofile: Option<u64>,
}

/// Smallest `[init] nofile`: the conventional soft limit services get, so a
/// lower value would only take descriptors away from the restarter.
pub const NOFILE_MIN: u64 = 1024;
/// Largest `[init] nofile`: the kernel's ceiling for `fs.nr_open` on 64-bit
/// (`INT_MAX` rounded down to a multiple of 64, `fs/file.c`).
pub const NOFILE_MAX: u64 = 2_147_483_584;

/// `[control]`: the restarter's control socket.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlSettings {
    /// A group whose members may change state (root always may).
    #[serde(deserialize_with = "empty_is_none")]
    pub group: Option<String>,
}

/// An error in a configuration file: where, which field, what.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    Parse {
        file: PathBuf,
        /// 1-based; 0 when unknown.
        line: usize,
        /// 1-based; 0 when unknown.
        column: usize,
        /// Dotted path of the offending key, e.g. `timing.hang_timeout`;
        /// empty when the error is not about one field.
        field: String,
        message: String,
    },
    /// The values parse but break the timing budget (see `budget`).
    Budget {
        file: PathBuf,
        /// Boxed: the error carries its terms and assumptions, and would
        /// make every `Result<_, ConfigError>` large.
        error: Box<crate::budget::BudgetError>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { file, source } => write!(f, "{}: {}", file.display(), source),
            ConfigError::Parse {
                file,
                line,
                column,
                field,
                message,
            } => {
                write!(f, "{}:{}:{}: ", file.display(), line, column)?;
                if !field.is_empty() {
                    write!(f, "field `{}`: ", field)?;
                }
                write!(f, "{}", message)
            }
            ConfigError::Budget { file, error } => write!(f, "{}: {}", file.display(), error),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    /// The built-in defaults of DESIGN.md.
    fn default() -> Self {
        Config {
            timing: Timing::default(),
            watchdog: WatchdogSettings::default(),
            log: LogSettings::default(),
            paths: Paths::default(),
            init: InitSettings::default(),
            control: ControlSettings::default(),
            state: StateSettings::default(),
            metrics: MetricsSettings::default(),
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            beat_interval: Duration::from_secs(1),
            hang_timeout: Duration::from_secs(10),
            restart_delay: Duration::from_secs(1),
            stale_timeout: Duration::from_secs(20),
            stale_timeout_by_layer: BTreeMap::new(),
            hardware_timeout: Duration::from_secs(30),
            liveness_interval: Duration::from_secs(60),
            startup_grace: Duration::from_secs(5),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            syslog_socket: "/dev/log".into(),
            kmsg: true,
            stderr: true,
            format: LogFormat::Rfc3164,
        }
    }
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            services: "/etc/tether/services".into(),
            run: "/run/tether".into(),
            state: "/var/lib/tether".into(),
            bin: None,
        }
    }
}

impl Default for InitSettings {
    fn default() -> Self {
        InitSettings {
            max_restarts: 10,
            window: Duration::from_secs(300),
            stop_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(3),
            nofile: None,
        }
    }
}

impl Config {
    /// Reads, parses and validates (including the budget) `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_text(path)?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `file` is used in messages only.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let config = Config::parse_without_budget(text, file)?;
        crate::budget::validate(&config).map_err(|error| ConfigError::Budget {
            file: file.to_path_buf(),
            error: Box::new(error),
        })?;
        Ok(config)
    }

    /// Parses `text` and checks each value on its own, but not the timing
    /// budget (the relations between values).
    pub fn parse_without_budget(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let config: Config = parse_toml(text, file)?;
        config.check_values().map_err(|(path, message)| {
            let (line, column) = locate(text, &path).unwrap_or((0, 0));
            ConfigError::Parse {
                file: file.to_path_buf(),
                line,
                column,
                field: path.join("."),
                message,
            }
        })?;
        Ok(config)
    }

    /// `load`, or on any error the defaults plus the error (for daemons that
    /// must come up anyway and say so loudly).
    pub fn load_or_default(path: &Path) -> (Config, Option<ConfigError>) {
        match Config::load(path) {
            Ok(c) => (c, None),
            Err(e) => (Config::default(), Some(e)),
        }
    }

    /// The checks a single value can fail: the key path and what is wrong.
    fn check_values(&self) -> Result<(), (Vec<&str>, String)> {
        let t = &self.timing;
        let positive = [
            (["timing", "beat_interval"], t.beat_interval),
            (["timing", "liveness_interval"], t.liveness_interval),
            (["init", "window"], self.init.window),
        ];
        for (path, value) in positive {
            if value.is_zero() {
                return Err((path.to_vec(), "must be greater than 0s".into()));
            }
        }
        let hw = t.hardware_timeout;
        if hw.subsec_nanos() != 0 || !(1..=65535).contains(&hw.as_secs()) {
            let message = format!(
                "must be whole seconds from 1s to 65535s (the device is set in seconds), not {}",
                duration::format(hw)
            );
            return Err((vec!["timing", "hardware_timeout"], message));
        }
        if self.init.max_restarts == 0 {
            return Err((vec!["init", "max_restarts"], "must be at least 1".into()));
        }
        if let Some(n) = self.init.nofile {
            if !(NOFILE_MIN..=NOFILE_MAX).contains(&n) {
                let message = format!(
                    "must be from {NOFILE_MIN} (the soft limit services get) to {NOFILE_MAX} (the kernel's ceiling), not {n}"
                );
                return Err((vec!["init", "nofile"], message));
            }
        }
        if self.state.history > crate::record::HISTORY_MAX {
            let message = format!(
                "must be from 0 (no history) to {}, not {}",
                crate::record::HISTORY_MAX,
                self.state.history
            );
            return Err((vec!["state", "history"], message));
        }
        for layer in t.stale_timeout_by_layer.keys() {
            if layer.is_empty()
                || !layer
                    .bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
            {
                let message = format!("{layer:?} is not a layer name (use a-z, 0-9, _ and -)");
                return Err((vec!["timing", "stale_timeout_by_layer", layer], message));
            }
        }
        Ok(())
    }
}

/// `""` and an absent key both mean `None`.
fn empty_is_none<'de, D: Deserializer<'de>, T: From<String>>(d: D) -> Result<Option<T>, D::Error> {
    let s = String::deserialize(d)?;
    Ok(if s.is_empty() { None } else { Some(T::from(s)) })
}

/// Deserializes any TOML document into `T`, mapping errors to
/// [`ConfigError::Parse`] with file, line, column and field. Used for
/// `tether.toml` and for the restarter's service files.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let span = e.span();
        // No span: the error is about the whole document.
        let (line, column) = span.as_ref().map_or((1, 1), |s| line_column(text, s.start));
        let (root, _) = DeTable::parse_recoverable(text);
        // An empty span (0..0) stands for the root table: no path.
        let at = span.filter(|s| !s.is_empty()).map(|s| s.start);
        let mut field = at
            .and_then(|pos| path_at(root.get_ref(), pos))
            .unwrap_or_default();
        if let Some(name) = named_field(e.message()) {
            if field.last() != Some(&name) {
                field.push(name);
            }
        }
        let message = e.message().trim().replace('\n', "; ");
        ConfigError::Parse {
            file: file.to_path_buf(),
            line,
            column,
            field: field.join("."),
            message,
        }
    })
}

/// The key a serde "missing field `x`" or "unknown field `x`" message names.
fn named_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    Some(rest[..rest.find('`')?].to_string())
}

/// 1-based line and column (in characters) of byte offset `pos`.
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

/// The key path of the key or value at byte offset `pos`, deepest first
/// found. Tables are entered even when their span (the header) does not
/// contain `pos`, since their keys live below the header.
fn path_at(table: &DeTable<'_>, pos: usize) -> Option<Vec<String>> {
    let within = |span: std::ops::Range<usize>| span.contains(&pos);
    table.iter().find_map(|(key, value)| {
        let inner = match value.get_ref() {
            DeValue::Table(t) => path_at(t, pos),
            DeValue::Array(items) => items
                .iter()
                .find_map(|item| item.get_ref().as_table().and_then(|t| path_at(t, pos))),
            _ => None,
        };
        let here = within(key.span()) || within(value.span());
        let mut path = inner.or_else(|| here.then(Vec::new))?;
        path.insert(0, key.get_ref().to_string());
        Some(path)
    })
}

/// 1-based line and column of the key at `path` in `text`.
fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let (root, _) = DeTable::parse_recoverable(text);
    let (last, parents) = path.split_last()?;
    let mut table = root.get_ref();
    for name in parents {
        table = table.get(*name)?.get_ref().as_table()?;
    }
    let (key, _) = table.get_key_value(*last)?;
    Some(line_column(text, key.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/tether/tether.toml";

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new(FILE))
    }

    /// `(line, column, field, message)` of a parse error; panics otherwise.
    fn parse_error(text: &str) -> (usize, usize, String, String) {
        match parse(text) {
            Err(ConfigError::Parse {
                line,
                column,
                field,
                message,
                ..
            }) => (line, column, field, message),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_design_values_and_fit_the_budget() {
        let c = Config::default();
        let t = &c.timing;
        assert_eq!(
            (
                t.beat_interval,
                t.hang_timeout,
                t.restart_delay,
                t.stale_timeout,
                t.hardware_timeout
            ),
            (secs(1), secs(10), secs(1), secs(20), secs(30))
        );
        assert_eq!((t.liveness_interval, t.startup_grace), (secs(60), secs(5)));
        assert!(t.stale_timeout_by_layer.is_empty());
        assert_eq!(
            c.watchdog,
            WatchdogSettings {
                device: None,
                allow_disarm: false
            }
        );
        assert_eq!(
            c.log,
            LogSettings {
                syslog_socket: "/dev/log".into(),
                kmsg: true,
                stderr: true,
                format: LogFormat::Rfc3164,
            }
        );
        assert_eq!(c.state.history, 32);
        assert_eq!(c.metrics.textfile_dir, None);
        assert_eq!(c.paths.services, Path::new("/etc/tether/services"));
        assert_eq!(c.paths.run, Path::new("/run/tether"));
        assert_eq!(c.paths.state, Path::new("/var/lib/tether"));
        assert_eq!(c.paths.bin, None);
        assert_eq!(
            c.init,
            InitSettings {
                max_restarts: 10,
                window: secs(300),
                stop_timeout: secs(30),
                kill_grace: secs(3),
                nofile: None,
            }
        );
        assert_eq!(c.control.group, None);
        // An empty file and empty sections mean the defaults.
        assert_eq!(parse("").unwrap(), c);
        assert_eq!(
            parse("[timing]\n[watchdog]\n[log]\n[paths]\n[init]\n[control]\n").unwrap(),
            c
        );
    }

    #[test]
    fn full_example_file_parses() {
        let text = r#"
[timing]
beat_interval = "500ms"
hang_timeout = "8s"
restart_delay = "1.5s"
stale_timeout = "20s"
hardware_timeout = "60s"
liveness_interval = "2m"
startup_grace = "4s"

[timing.stale_timeout_by_layer]
init = "30s"
restarter = "25s"

[watchdog]
device = "/tmp/fake-watchdog"   # a FIFO works as a simulated device
allow_disarm = true

[log]
syslog_socket = "/tmp/t/log.sock"
kmsg = false
stderr = false

[paths]
services = "/tmp/t/services"
run = "/tmp/t/run"
state = "/tmp/t/state"
bin = "/opt/tether/bin"

[init]
max_restarts = 5
window = "1m"
stop_timeout = "10s"
kill_grace = "1s"
nofile = 65536

[control]
group = "tether"

[state]
history = 100

[metrics]
textfile_dir = "/var/lib/node_exporter/textfile_collector"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.state.history, 100);
        assert_eq!(
            c.metrics.textfile_dir.as_deref(),
            Some(Path::new("/var/lib/node_exporter/textfile_collector"))
        );
        let t = &c.timing;
        assert_eq!(t.beat_interval, Duration::from_millis(500));
        assert_eq!(t.restart_delay, Duration::from_millis(1500));
        assert_eq!(
            (t.hang_timeout, t.stale_timeout, t.hardware_timeout),
            (secs(8), secs(20), secs(60))
        );
        assert_eq!((t.liveness_interval, t.startup_grace), (secs(120), secs(4)));
        assert_eq!(t.stale_timeout_for("init"), secs(30));
        assert_eq!(t.stale_timeout_for("restarter"), secs(25));
        assert_eq!(t.stale_timeout_for("other"), secs(20));
        assert_eq!(
            c.watchdog.device.as_deref(),
            Some(Path::new("/tmp/fake-watchdog"))
        );
        assert!(c.watchdog.allow_disarm);
        assert_eq!(
            c.log,
            LogSettings {
                syslog_socket: "/tmp/t/log.sock".into(),
                kmsg: false,
                stderr: false,
                format: LogFormat::Rfc3164,
            }
        );
        assert_eq!(c.paths.bin.as_deref(), Some(Path::new("/opt/tether/bin")));
        assert_eq!(c.paths.state, Path::new("/tmp/t/state"));
        assert_eq!(
            c.init,
            InitSettings {
                max_restarts: 5,
                window: secs(60),
                stop_timeout: secs(10),
                kill_grace: secs(1),
                nofile: Some(65536),
            }
        );
        assert_eq!(c.control.group.as_deref(), Some("tether"));
    }

    #[test]
    fn empty_strings_mean_unset() {
        let c = parse("[paths]\nbin = \"\"\n[watchdog]\ndevice = \"\"\n[control]\ngroup = \"\"\n")
            .unwrap();
        assert_eq!(
            (c.paths.bin, c.watchdog.device, c.control.group),
            (None, None, None)
        );
    }

    #[test]
    fn log_format_history_and_metrics_keys() {
        let c = parse("[log]\nformat = \"rfc5424\"\n[metrics]\ntextfile_dir = \"\"\n").unwrap();
        assert_eq!(c.log.format, LogFormat::Rfc5424);
        assert_eq!(c.metrics.textfile_dir, None, "empty means off");
        let (line, _, field, message) = parse_error("[log]\nformat = \"json\"\n");
        assert_eq!((line, field.as_str()), (2, "log.format"), "{message}");
        assert!(message.contains("rfc5424"), "{message}");
        let (line, _, field, message) = parse_error("[state]\nhistory = 5000\n");
        assert_eq!((line, field.as_str()), (2, "state.history"), "{message}");
        assert!(message.contains("1024"), "{message}");
    }

    #[test]
    fn misspelt_key_is_named_with_position_and_expected_keys() {
        let (line, column, field, message) =
            parse_error("[timing]\nbeat_interval = \"1s\"\n  hang_timout = \"10s\"\n");
        assert_eq!((line, column, field.as_str()), (3, 3, "timing.hang_timout"));
        assert!(message.contains("unknown field `hang_timout`"), "{message}");
        assert!(
            message.contains("hang_timeout"),
            "expected keys listed: {message}"
        );
    }

    #[test]
    fn unknown_section_is_named() {
        let (line, column, field, _) = parse_error("[timing]\n\n[watchdgo]\ndevice = \"x\"\n");
        assert_eq!((line, field.as_str()), (3, "watchdgo"));
        assert!(column >= 1);
    }

    #[test]
    fn bad_durations_name_field_line_and_column() {
        let cases = [
            ("hang_timeout = \"-1s\"", "negative"),
            (
                "hang_timeout = \"10\"",
                "\"10\" has no unit (write e.g. \"10s\")",
            ),
            ("hang_timeout = 10", "string with a unit"),
            ("hang_timeout = 1.5", "string with a unit"),
            ("hang_timeout = \"10 minutes\"", "space"),
        ];
        for (line_text, want) in cases {
            let text = format!("# tether\n[timing]\n{line_text}\n");
            let (line, column, field, message) = parse_error(&text);
            assert_eq!(
                (line, column, field.as_str()),
                (3, 16, "timing.hang_timeout"),
                "{line_text}"
            );
            assert!(message.contains(want), "{line_text}: {message}");
        }
    }

    #[test]
    fn wrong_type_names_field_line_and_column() {
        let (line, column, field, message) =
            parse_error("[log]\nsyslog_socket = \"/x\"\nkmsg = \"yes\"\n");
        assert_eq!((line, column, field.as_str()), (3, 8, "log.kmsg"));
        assert!(message.contains("bool"), "{message}");
    }

    #[test]
    fn bad_per_layer_duration_names_the_layer() {
        let (line, _, field, _) = parse_error("[timing.stale_timeout_by_layer]\ninit = \"30\"\n");
        assert_eq!(
            (line, field.as_str()),
            (2, "timing.stale_timeout_by_layer.init")
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let (line, column, _, message) = parse_error("[timing]\nhang_timeout = \"10s\n");
        assert_eq!(line, 2);
        assert!(column > 1, "{column}");
        assert!(!message.is_empty());
    }

    #[test]
    fn display_shows_file_line_column_and_field() {
        let err = parse("[timing]\nhang_timeout = \"10\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/tether/tether.toml:2:16: field `timing.hang_timeout`: \"10\" has no unit (write e.g. \"10s\")"
        );
    }

    #[test]
    fn values_out_of_range_are_refused_at_their_key() {
        let cases = [
            (
                "[timing]\nhardware_timeout = \"30.5s\"\n",
                "timing.hardware_timeout",
                "whole seconds",
            ),
            (
                "[timing]\nhardware_timeout = \"0s\"\n",
                "timing.hardware_timeout",
                "from 1s to 65535s",
            ),
            (
                "[timing]\nhardware_timeout = \"65536s\"\n",
                "timing.hardware_timeout",
                "from 1s to 65535s",
            ),
            (
                "[timing]\nbeat_interval = \"0s\"\n",
                "timing.beat_interval",
                "greater than 0s",
            ),
            (
                "[timing]\nliveness_interval = \"0ms\"\n",
                "timing.liveness_interval",
                "greater than 0s",
            ),
            (
                "[init]\nmax_restarts = 0\n",
                "init.max_restarts",
                "at least 1",
            ),
            (
                "[init]\nnofile = 1023\n",
                "init.nofile",
                "must be from 1024 (the soft limit services get) to 2147483584",
            ),
            (
                "[init]\nnofile = 2147483585\n",
                "init.nofile",
                "not 2147483585",
            ),
            (
                "[timing.stale_timeout_by_layer]\n\"Init\" = \"30s\"\n",
                "timing.stale_timeout_by_layer.Init",
                "layer name",
            ),
        ];
        for (text, want_field, want) in cases {
            let (line, column, field, message) = parse_error(text);
            assert_eq!((line, column, field.as_str()), (2, 1, want_field), "{text}");
            assert!(message.contains(want), "{text}: {message}");
        }
        assert_eq!(
            parse("[init]\nnofile = 1024\n").unwrap().init.nofile,
            Some(1024)
        );
        // Not a number: a type error naming the key.
        let (line, _, field, _) = parse_error("[init]\nnofile = \"lots\"\n");
        assert_eq!((line, field.as_str()), (2, "init.nofile"));
        assert_eq!(
            parse("[timing]\nhardware_timeout = \"65535s\"\nstale_timeout = \"1h\"\n")
                .unwrap()
                .timing
                .hardware_timeout,
            secs(65535)
        );
    }

    #[test]
    fn budget_is_checked_by_parse_but_not_by_parse_without_budget() {
        let text = "[timing]\nstale_timeout = \"15s\"\n";
        match parse(text) {
            Err(ConfigError::Budget { error, .. }) => {
                assert!(error.rule.starts_with("stale_timeout (init)"))
            }
            other => panic!("expected a budget error, got {other:?}"),
        }
        let c = Config::parse_without_budget(text, Path::new(FILE)).unwrap();
        assert_eq!(c.timing.stale_timeout, secs(15));
    }

    #[test]
    fn per_layer_stale_override_applies() {
        let c = parse("[timing.stale_timeout_by_layer]\nrestarter = \"45s\"\n").unwrap();
        assert_eq!(c.timing.stale_timeout_for("restarter"), secs(45));
        assert_eq!(c.timing.stale_timeout_for("init"), secs(20));
        // The override is what the budget checks: too short for the restarter only.
        let err = parse("[timing.stale_timeout_by_layer]\nrestarter = \"16s\"\n").unwrap_err();
        assert!(
            err.to_string().contains("stale_timeout (restarter)"),
            "{err}"
        );
    }

    #[test]
    fn load_reads_the_file_and_reports_io_errors() {
        let dir = std::env::temp_dir().join(format!("tether-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tether.toml");
        std::fs::write(&path, "[timing]\nstale_timeout = \"25s\"\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().timing.stale_timeout, secs(25));
        std::fs::write(&path, "[timing]\nstale_timeout = \"2s\"\n").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Budget { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}: timing budget: ", path.display())),
            "{err}"
        );
        let (config, err) = Config::load_or_default(&dir.join("missing.toml"));
        assert_eq!(config, Config::default());
        assert!(matches!(err, Some(ConfigError::Io { .. })), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_refuses_a_fifo_an_endless_file_and_an_oversized_one_without_blocking() {
        let dir =
            std::env::temp_dir().join(format!("tether-config-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A FIFO with no writer: a plain read would block forever.
        let fifo = dir.join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = Config::load(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // A symlink to an endless device: refused before any read.
        let zero = dir.join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = Config::load(&zero).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // A regular file over the bound.
        let big = dir.join("big.toml");
        let mut text = "# padding\n".repeat((MAX_CONFIG_BYTES as usize / 10) + 1);
        text.push_str("[timing]\n");
        std::fs::write(&big, text).unwrap();
        let err = Config::load(&big).unwrap_err();
        assert!(
            err.to_string().contains("larger than 1048576 bytes"),
            "{err}"
        );
        // Not UTF-8.
        let bin = dir.join("bin.toml");
        std::fs::write(&bin, b"[timing]\n\xff\n").unwrap();
        let err = Config::load(&bin).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        // Just under the bound still loads.
        let ok = dir.join("ok.toml");
        let mut text = "# padding\n".repeat(MAX_CONFIG_BYTES as usize / 10 - 10);
        text.push_str("[timing]\nstale_timeout = \"25s\"\n");
        std::fs::write(&ok, text).unwrap();
        assert_eq!(Config::load(&ok).unwrap().timing.stale_timeout, secs(25));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Service {
        exec: Vec<String>,
        #[serde(default, deserialize_with = "duration::deserialize_opt")]
        stop_timeout: Option<Duration>,
    }

    #[test]
    fn parse_toml_names_missing_fields_in_other_schemas() {
        let err =
            parse_toml::<Service>("stop_timeout = \"5s\"\n", Path::new("svc.toml")).unwrap_err();
        let ConfigError::Parse { field, message, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(field, "exec");
        assert!(message.contains("missing field `exec`"), "{message}");
        let s: Service = parse_toml(
            "exec = [\"/bin/true\"]\nstop_timeout = \"5s\"\n",
            Path::new("svc.toml"),
        )
        .unwrap();
        assert_eq!(s.stop_timeout, Some(secs(5)));
    }
}
