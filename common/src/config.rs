//! `tether.toml`: parsing (serde + toml, unknown keys rejected) and the typed
//! settings every binary uses. Errors name file, line, column and field.
//!
//! Interface (DESIGN.md "Interface"): the section and key names are fixed;
//! keys added here beyond DESIGN.md are documented in the README.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default location of the chain's settings.
pub const DEFAULT_CONFIG: &str = "/etc/tether/tether.toml";

/// The whole of `tether.toml`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub timing: Timing,
    pub watchdog: WatchdogSettings,
    pub log: LogSettings,
    pub paths: Paths,
    pub init: InitSettings,
    pub control: ControlSettings,
}

/// `[timing]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// How often each layer beats. Default 1 s.
    pub beat_interval: Duration,
    /// init kills a layer child silent this long. Default 10 s.
    pub hang_timeout: Duration,
    /// Minimum time between two starts of a layer child. Default 1 s.
    pub restart_delay: Duration,
    /// watchdogd stops petting when a layer is silent this long. Default 20 s.
    pub stale_timeout: Duration,
    /// Per-layer overrides of `stale_timeout` (`[timing.stale_timeout_by_layer]`).
    pub stale_timeout_by_layer: BTreeMap<String, Duration>,
    /// Programmed into the device (whole seconds). Default 30 s.
    pub hardware_timeout: Duration,
    /// Period of the one-line liveness summary. Default 60 s.
    pub liveness_interval: Duration,
    /// Time a freshly started layer child has to send its first beat before
    /// its hang and stale timeouts start to count. Default 5 s.
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
#[derive(Clone, Debug, PartialEq)]
pub struct WatchdogSettings {
    /// `None`: `/dev/watchdog0`, then `/dev/watchdog`.
    pub device: Option<PathBuf>,
    /// Whether watchdogd may disarm the device (magic close) on `SIGUSR1`.
    /// Default false.
    pub allow_disarm: bool,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSettings {
    /// Default `/dev/log`.
    pub syslog_socket: PathBuf,
    /// tether's own messages to `/dev/kmsg` while syslog is down. Default true.
    pub kmsg: bool,
}

/// `[paths]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Paths {
    /// Default `/etc/tether/services`.
    pub services: PathBuf,
    /// Default `/run/tether`.
    pub run: PathBuf,
    /// Default `/var/lib/tether`.
    pub state: PathBuf,
    /// Where the other binaries live; `None` (written `""`): beside
    /// `tether-init`'s own executable.
    pub bin: Option<PathBuf>,
}

/// `[init]`: init's supervision of its layer children.
#[derive(Clone, Debug, PartialEq)]
pub struct InitSettings {
    /// Sliding-window restart budget of each layer child: at most
    /// `max_restarts` starts within `window`; exhaustion means an orderly
    /// reboot. Defaults 10 within 300 s.
    pub max_restarts: u32,
    pub window: Duration,
    /// How long init waits for the restarter to stop services at shutdown.
    /// Default 30 s.
    pub stop_timeout: Duration,
    /// Between `kill(-1, SIGTERM)` and `kill(-1, SIGKILL)`. Default 3 s.
    pub kill_grace: Duration,
}

/// `[control]`: the restarter's control socket.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlSettings {
    /// A group whose members may change state (root always may).
    pub group: Option<String>,
}

/// An error in a configuration file: where, which field, what.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Io { file: PathBuf, source: std::io::Error },
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
    Budget { file: PathBuf, error: crate::budget::BudgetError },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { file, source } => write!(f, "{}: {}", file.display(), source),
            ConfigError::Parse { file, line, column, field, message } => {
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
        todo!("common-config helper")
    }
}

impl Config {
    /// Reads, parses and validates (including the budget) `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let _ = path;
        todo!("common-config helper")
    }

    /// Parses and validates `text`; `file` is used in messages only.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let _ = (text, file);
        todo!("common-config helper")
    }

    /// `load`, or on any error the defaults plus the error (for daemons that
    /// must come up anyway and say so loudly).
    pub fn load_or_default(path: &Path) -> (Config, Option<ConfigError>) {
        match Config::load(path) {
            Ok(c) => (c, None),
            Err(e) => (Config::default(), Some(e)),
        }
    }
}

/// Deserializes any TOML document into `T`, mapping errors to
/// [`ConfigError::Parse`] with file, line, column and field. Used for
/// `tether.toml` and for the restarter's service files.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    let _ = (text, file);
    todo!("common-config helper")
}
