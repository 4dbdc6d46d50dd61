//! Service files: one TOML file per service, `SERVICES/NAME.toml`, parsed
//! into a [`ServiceSpec`]; [`load_dir`] reads a whole directory.
//!
//! Errors carry file, line, column and field, as for `tether.toml`
//! (`tether_common::config::parse_toml`, unknown keys rejected). Checks
//! that involve two keys point at the key that is wrong or incomplete.
//!
//! Decisions where DESIGN.md and the issue are silent:
//! - NAME is the file stem; it must be 1-64 of `[A-Za-z0-9_.@-]` starting
//!   with a letter or digit (it becomes a socket path, a cgroup name and a
//!   syslog tag). Only `*.toml` files are read; hidden files are skipped.
//! - `restart_delay` defaults to 1 s for every service (it does not follow
//!   `[timing] restart_delay`, which is for init's layer children).
//! - `max_restarts` and `window` come together or not at all;
//!   `max_restarts` is at least 1 (write `restart = "never"` for none).
//!   `on_exhausted` needs them and defaults to `backoff` (keep trying,
//!   exponentially slower up to `max_delay`, default 60 s): by default the
//!   restarter never gives up silently.
//! - `umask` is an octal string (`"022"`), limits an integer or
//!   `"unlimited"`, `stop_signal` a name with or without `SIG` (`"TERM"`,
//!   `"SIGINT"`) or a number.
//! - `notify = "watchdog"` requires `watchdog_timeout` (> 0), and
//!   `watchdog_timeout` is refused without it.
//! - `after` and `requires` name other services; an unknown name, the
//!   service itself, or a cycle is an error of the service that names it.
//!   A service in `requires` is also waited for (start after it is ready).
//! - `working_directory` must be absolute; it is not checked at load (a
//!   `stat` on a dead NFS mount would hang the restarter): a missing one
//!   ends the started process with exit status 200 and a line in its
//!   output. `user` and `group` are names or numeric ids, resolved off
//!   the event loop when the file is loaded or reloaded ([`Resolution`],
//!   `resolver.rs`); a failed lookup is repeated at the next start (a
//!   missing user is then a start failure, retried per policy, like a
//!   missing binary).

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_common::config::{parse_toml, ConfigError};
use tether_common::duration;

/// Longest service name (it ends up in `RUN/notify/NAME.sock`, whose path
/// must fit `sun_path`).
pub const MAX_NAME: usize = 64;

/// When a service is restarted after its process ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// After every exit (the default: no silent hold-down).
    #[default]
    Always,
    /// Only after an exit with a non-zero status or a signal.
    OnFailure,
    /// Never.
    Never,
}

/// What to do when the sliding-window restart limit is exceeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnExhausted {
    /// Keep trying with delays doubling up to `max_delay`.
    #[default]
    Backoff,
    /// Give up: state `failed` until started by hand.
    Stop,
    /// Critical service: ask init for an orderly reboot.
    Reboot,
}

/// The sd_notify protocol a service speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyMode {
    /// No socket; the service is ready as soon as it runs.
    #[default]
    None,
    /// Ready after `READY=1`.
    Ready,
    /// Ready after `READY=1`; must send `WATCHDOG=1` within every
    /// `watchdog_timeout`.
    Watchdog,
}

/// One resource limit (soft and hard set alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Value(u64),
    Unlimited,
}

/// `nofile`, `core`, `nproc`, `memlock`; `None` keeps the restarter's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub nofile: Option<Limit>,
    pub core: Option<Limit>,
    pub nproc: Option<Limit>,
    pub memlock: Option<Limit>,
}

/// `user`/`group` as resolved through NSS: ids, supplementary groups, and
/// `HOME`/`USER` for the environment (bytes, as the passwd entry has them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub groups: Option<Vec<u32>>,
    pub home: Option<OsString>,
    pub user: Option<OsString>,
}

/// Whether `user`/`group` are resolved. The lookup is a blocking call
/// (NSS: sss, LDAP), so the restarter's lookup thread makes it
/// (`resolver.rs`) after [`load_dir`], never the loop; a start waits for
/// it, and a failed lookup is repeated at the next start (a directory
/// service that was down at boot).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Resolution {
    /// Not looked up yet ([`ServiceSpec::new`], [`parse`], [`load_dir`]).
    #[default]
    Pending,
    Resolved(Identity),
    /// The lookup failed; the next start asks again.
    Failed {
        errno: Option<i32>,
        message: String,
    },
}

/// The sliding-window restart limit: at most `max_restarts` restarts within
/// `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartLimit {
    pub max_restarts: u32,
    pub window: Duration,
}

/// A parsed, checked service file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The file stem.
    pub name: String,
    /// The file it came from (for messages).
    pub file: PathBuf,
    /// argv; `exec[0]` is looked up in `PATH` when it has no `/`.
    pub exec: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_directory: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub umask: Option<u32>,
    pub limits: Limits,
    pub restart: RestartMode,
    /// Minimum time between two starts. Default 1 s.
    pub restart_delay: Duration,
    pub limit: Option<RestartLimit>,
    pub on_exhausted: OnExhausted,
    /// Cap of the exponential backoff. Default 60 s.
    pub max_delay: Duration,
    /// Signal number. Default `SIGTERM`.
    pub stop_signal: i32,
    /// From the stop signal to `SIGKILL` of the whole group. Default 5 s.
    pub stop_timeout: Duration,
    pub notify: NotifyMode,
    /// Set exactly when `notify` is `Watchdog`.
    pub watchdog_timeout: Option<Duration>,
    pub after: Vec<String>,
    pub requires: Vec<String>,
    pub disabled: bool,
    /// `user`/`group` resolved at load (not part of the file's text; a
    /// changed passwd entry makes a reload restart the service).
    pub identity: Resolution,
}

pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(60);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

impl ServiceSpec {
    /// A spec with every default and the given argv (for tests and tools).
    pub fn new(name: &str, exec: &[&str]) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            file: PathBuf::from(format!("{name}.toml")),
            exec: exec.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::new(),
            working_directory: None,
            user: None,
            group: None,
            umask: None,
            limits: Limits::default(),
            restart: RestartMode::Always,
            restart_delay: DEFAULT_RESTART_DELAY,
            limit: None,
            on_exhausted: OnExhausted::Backoff,
            max_delay: DEFAULT_MAX_DELAY,
            stop_signal: libc::SIGTERM,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            notify: NotifyMode::None,
            watchdog_timeout: None,
            after: Vec::new(),
            requires: Vec::new(),
            disabled: false,
            identity: Resolution::Pending,
        }
    }

    /// Every service this one waits for (`after` and `requires`).
    pub fn dependencies(&self) -> impl Iterator<Item = &String> {
        self.after.iter().chain(self.requires.iter())
    }
}

/// The result of reading a services directory.
#[derive(Debug, Default)]
pub struct LoadedSet {
    /// Valid services, sorted by name.
    pub specs: Vec<ServiceSpec>,
    /// Services whose file is invalid (or that name an unknown, circular or
    /// invalid dependency): name and error, sorted by name.
    pub errors: Vec<(String, ConfigError)>,
    /// The directory itself could not be read. Then `specs` and `errors`
    /// are empty; a reload must not take that for "no services".
    pub dir_error: Option<ConfigError>,
}

impl LoadedSet {
    /// Whether anything is wrong (for reload: then nothing changes).
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty() || self.dir_error.is_some()
    }
}

/// Whether `name` may be a service name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

/// Parses one service file's text; the name is `file`'s stem.
pub fn parse(text: &str, file: &Path) -> Result<ServiceSpec, ConfigError> {
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !valid_name(&name) {
        return Err(ConfigError::Parse {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!(
                "{name:?} is not a service name (1-{MAX_NAME} of A-Z a-z 0-9 _ . @ -, starting with a letter or digit)"
            ),
        });
    }
    let raw: RawService = parse_toml(text, file)?;
    let err = |key: &str, message: String| {
        let (line, column) = locate(text, key).unwrap_or((0, 0));
        ConfigError::Parse {
            file: file.to_path_buf(),
            line,
            column,
            field: key.to_string(),
            message,
        }
    };
    let limit = match (raw.max_restarts, raw.window) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(err(
                "max_restarts",
                "needs `window` too (both or neither)".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(err(
                "window",
                "needs `max_restarts` too (both or neither)".into(),
            ))
        }
        (Some(0), Some(_)) => {
            return Err(err(
                "max_restarts",
                "must be at least 1 (write restart = \"never\" to never restart)".into(),
            ))
        }
        (Some(_), Some(w)) if w.is_zero() => {
            return Err(err("window", "must be greater than 0s".into()))
        }
        (Some(max_restarts), Some(window)) => Some(RestartLimit {
            max_restarts,
            window,
        }),
    };
    if raw.on_exhausted.is_some() && limit.is_none() {
        return Err(err(
            "on_exhausted",
            "has no effect without `max_restarts` and `window`".into(),
        ));
    }
    let notify = raw.notify.unwrap_or_default();
    match (notify, raw.watchdog_timeout) {
        (NotifyMode::Watchdog, None) => {
            return Err(err(
                "notify",
                "\"watchdog\" needs `watchdog_timeout`".into(),
            ))
        }
        (NotifyMode::Watchdog, Some(t)) if t.is_zero() => {
            return Err(err("watchdog_timeout", "must be greater than 0s".into()))
        }
        (NotifyMode::None | NotifyMode::Ready, Some(_)) => {
            return Err(err(
                "watchdog_timeout",
                "needs notify = \"watchdog\"".into(),
            ))
        }
        _ => {}
    }
    if let Some(dir) = &raw.working_directory {
        if !dir.is_absolute() {
            return Err(err("working_directory", "must be an absolute path".into()));
        }
    }
    for (key, v) in [("user", &raw.user), ("group", &raw.group)] {
        if v.as_deref()
            .is_some_and(|s| s.is_empty() || s.contains('\0'))
        {
            return Err(err(key, "must be a user/group name or number".into()));
        }
    }
    for (key, list) in [("after", &raw.after), ("requires", &raw.requires)] {
        for dep in list {
            if dep == &name {
                return Err(err(key, format!("{dep:?} is this service itself")));
            }
            if !valid_name(dep) {
                return Err(err(key, format!("{dep:?} is not a service name")));
            }
        }
    }
    Ok(ServiceSpec {
        name,
        file: file.to_path_buf(),
        exec: raw.exec.0,
        env: raw.env,
        working_directory: raw.working_directory,
        user: raw.user,
        group: raw.group,
        umask: raw.umask.map(|u| u.0),
        limits: Limits {
            nofile: raw.nofile,
            core: raw.core,
            nproc: raw.nproc,
            memlock: raw.memlock,
        },
        restart: raw.restart.unwrap_or_default(),
        restart_delay: raw.restart_delay.unwrap_or(DEFAULT_RESTART_DELAY),
        limit,
        on_exhausted: raw.on_exhausted.unwrap_or_default(),
        max_delay: raw.max_delay.unwrap_or(DEFAULT_MAX_DELAY),
        stop_signal: raw.stop_signal.map_or(libc::SIGTERM, |s| s.0),
        stop_timeout: raw.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
        notify,
        watchdog_timeout: raw.watchdog_timeout,
        after: dedup(raw.after),
        requires: dedup(raw.requires),
        disabled: raw.disabled,
        identity: Resolution::Pending,
    })
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    v.into_iter().filter(|s| seen.insert(s.clone())).collect()
}

/// Reads and parses one service file.
pub fn load(file: &Path) -> Result<ServiceSpec, ConfigError> {
    let text = tether_common::config::read_config_text(file)?;
    parse(&text, file)
}

/// Reads every `*.toml` in `dir` (sorted by name), then checks
/// dependencies across the set: unknown targets and cycles make the naming
/// service an error.
pub fn load_dir(dir: &Path) -> LoadedSet {
    let mut set = LoadedSet::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(source) => {
            set.dir_error = Some(ConfigError::Io {
                file: dir.to_path_buf(),
                source,
            });
            return set;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            !name.starts_with('.') && name.ends_with(".toml") && name.len() > ".toml".len()
        })
        .collect();
    files.sort();
    let mut texts = BTreeMap::new();
    for file in files {
        if file.is_dir() {
            continue;
        }
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = match tether_common::config::read_config_text(&file) {
            Ok(t) => t,
            Err(e) => {
                set.errors.push((name, e));
                continue;
            }
        };
        match parse(&text, &file) {
            Ok(spec) => {
                texts.insert(name, text);
                set.specs.push(spec);
            }
            Err(e) => set.errors.push((name, e)),
        }
    }
    check_dependencies(&mut set, &texts);
    set
}

/// Moves services with an unknown dependency, or on a dependency cycle, from
/// `specs` to `errors`. A dependency on a service whose own file is invalid
/// is not an error of the dependent (it waits; see the supervisor).
fn check_dependencies(set: &mut LoadedSet, texts: &BTreeMap<String, String>) {
    let known: BTreeSet<String> = set
        .specs
        .iter()
        .map(|s| s.name.clone())
        .chain(set.errors.iter().map(|(n, _)| n.clone()))
        .collect();
    let mut bad: Vec<(String, ConfigError)> = Vec::new();
    for spec in &set.specs {
        for (key, list) in [("after", &spec.after), ("requires", &spec.requires)] {
            if let Some(dep) = list.iter().find(|d| !known.contains(*d)) {
                bad.push((
                    spec.name.clone(),
                    dep_error(spec, texts, key, format!("unknown service {dep:?}")),
                ));
                break;
            }
        }
    }
    // Cycles among the remaining valid specs.
    let index: BTreeMap<&str, &ServiceSpec> =
        set.specs.iter().map(|s| (s.name.as_str(), s)).collect();
    for spec in &set.specs {
        if bad.iter().any(|(n, _)| n == &spec.name) {
            continue;
        }
        if let Some(cycle) = find_cycle(&spec.name, &index) {
            let key = if spec.requires.iter().any(|d| d == &cycle[1]) {
                "requires"
            } else {
                "after"
            };
            let message = format!("dependency cycle: {}", cycle.join(" -> "));
            bad.push((spec.name.clone(), dep_error(spec, texts, key, message)));
        }
    }
    if bad.is_empty() {
        return;
    }
    set.specs.retain(|s| !bad.iter().any(|(n, _)| n == &s.name));
    set.errors.extend(bad);
    set.errors.sort_by(|a, b| a.0.cmp(&b.0));
}

fn dep_error(
    spec: &ServiceSpec,
    texts: &BTreeMap<String, String>,
    key: &str,
    message: String,
) -> ConfigError {
    let (line, column) = texts
        .get(&spec.name)
        .and_then(|t| locate(t, key))
        .unwrap_or((0, 0));
    ConfigError::Parse {
        file: spec.file.clone(),
        line,
        column,
        field: key.to_string(),
        message,
    }
}

/// A path `start -> ... -> start` through dependencies, if there is one.
fn find_cycle(start: &str, index: &BTreeMap<&str, &ServiceSpec>) -> Option<Vec<String>> {
    // Depth-first search with an explicit stack of (node, next child).
    let mut path: Vec<&str> = vec![start];
    let mut next: Vec<usize> = vec![0];
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while let Some(&node) = path.last() {
        let deps: Vec<&String> = index
            .get(node)
            .map(|s| s.dependencies().collect())
            .unwrap_or_default();
        let i = *next.last().expect("next mirrors path");
        if i >= deps.len() {
            done.insert(node);
            path.pop();
            next.pop();
            continue;
        }
        *next.last_mut().expect("next mirrors path") += 1;
        let dep = deps[i].as_str();
        if dep == start {
            let mut cycle: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            cycle.push(start.to_string());
            return Some(cycle);
        }
        if done.contains(dep) || path.contains(&dep) || !index.contains_key(dep) {
            continue;
        }
        path.push(dep);
        next.push(0);
    }
    None
}

/// 1-based line and column of top-level key `key` in `text`.
fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let (root, _) = toml::de::DeTable::parse_recoverable(text);
    let (k, _) = root.get_ref().get_key_value(key)?;
    let pos = k.span().start.min(text.len());
    let before = text.get(..pos)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some((
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    ))
}

// ---- the file format -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    exec: Exec,
    #[serde(default, deserialize_with = "de_env")]
    env: BTreeMap<String, String>,
    #[serde(default)]
    working_directory: Option<PathBuf>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    umask: Option<Umask>,
    #[serde(default)]
    nofile: Option<Limit>,
    #[serde(default)]
    core: Option<Limit>,
    #[serde(default)]
    nproc: Option<Limit>,
    #[serde(default)]
    memlock: Option<Limit>,
    #[serde(default)]
    restart: Option<RestartMode>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    restart_delay: Option<Duration>,
    #[serde(default)]
    max_restarts: Option<u32>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    window: Option<Duration>,
    #[serde(default)]
    on_exhausted: Option<OnExhausted>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    max_delay: Option<Duration>,
    #[serde(default)]
    stop_signal: Option<SignalNumber>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    stop_timeout: Option<Duration>,
    #[serde(default)]
    notify: Option<NotifyMode>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    watchdog_timeout: Option<Duration>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    disabled: bool,
}

/// A non-empty argv without NUL bytes.
struct Exec(Vec<String>);

impl<'de> Deserialize<'de> for Exec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Exec, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        if v.is_empty() || v[0].is_empty() {
            return Err(de::Error::custom(
                "must be a non-empty array of strings, the program first, e.g. [\"/usr/sbin/sshd\", \"-D\"]",
            ));
        }
        if v.iter().any(|a| a.contains('\0')) {
            return Err(de::Error::custom("an argument contains a NUL byte"));
        }
        Ok(Exec(v))
    }
}

fn de_env<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map: BTreeMap<String, String> = BTreeMap::deserialize(d)?;
    for (k, v) in &map {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(de::Error::custom(format!("{k:?} is not a variable name")));
        }
        if v.contains('\0') {
            return Err(de::Error::custom(format!(
                "the value of {k} contains a NUL byte"
            )));
        }
    }
    Ok(map)
}

struct Umask(u32);

impl<'de> Deserialize<'de> for Umask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Umask, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Umask;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an octal string such as \"022\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Umask, E> {
                let ok =
                    !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
                match u32::from_str_radix(s, 8) {
                    Ok(v) if ok && v <= 0o777 => Ok(Umask(v)),
                    _ => Err(E::custom(format!(
                        "{s:?} is not an octal umask such as \"022\""
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Umask, E> {
                Err(E::custom(format!(
                    "write the umask as an octal string, e.g. \"0{v}\", not the number {v}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or \"unlimited\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Limit, E> {
                u64::try_from(v).map(Limit::Value).map_err(|_| {
                    E::custom(format!(
                        "{v} is negative; write a non-negative integer or \"unlimited\""
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Limit, E> {
                Ok(Limit::Value(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Limit, E> {
                if s == "unlimited" {
                    Ok(Limit::Unlimited)
                } else {
                    Err(E::custom(format!(
                        "{s:?}: write a non-negative integer or \"unlimited\""
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A signal number from `"TERM"`, `"SIGTERM"` or `15`.
struct SignalNumber(i32);

impl<'de> Deserialize<'de> for SignalNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SignalNumber, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SignalNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signal name such as \"TERM\" or a number")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SignalNumber, E> {
                parse_signal(s).map(SignalNumber).ok_or_else(|| {
                    E::custom(format!(
                        "{s:?} is not a signal name (e.g. \"TERM\", \"INT\", \"HUP\")"
                    ))
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SignalNumber, E> {
                i32::try_from(v)
                    .ok()
                    .filter(|n| nix::sys::signal::Signal::try_from(*n).is_ok())
                    .map(SignalNumber)
                    .ok_or_else(|| E::custom(format!("{v} is not a signal number")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `"TERM"`, `"SIGTERM"`, `"term"` or `"15"` to a signal number.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .ok()
            .map(|sig| sig as i32);
    }
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|sig| sig as i32)
}

/// `15` to `"TERM"` (without `SIG`), or the number when unknown.
pub fn signal_name(n: i32) -> String {
    match nix::sys::signal::Signal::try_from(n) {
        Ok(sig) => sig.as_str().trim_start_matches("SIG").to_string(),
        Err(_) => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<ServiceSpec, ConfigError> {
        parse(text, Path::new("/etc/tether/services/web.toml"))
    }

    /// (line, column, field, message) of a parse error.
    fn where_(e: ConfigError) -> (usize, usize, String, String) {
        match e {
            ConfigError::Parse {
                line,
                column,
                field,
                message,
                ..
            } => (line, column, field, message),
            other => panic!("not a parse error: {other}"),
        }
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let s = p("exec = [\"/bin/web\", \"-f\"]\n").unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.exec, vec!["/bin/web", "-f"]);
        assert_eq!(s.restart, RestartMode::Always);
        assert_eq!(s.restart_delay, Duration::from_secs(1));
        assert_eq!(s.limit, None);
        assert_eq!(s.on_exhausted, OnExhausted::Backoff);
        assert_eq!(s.max_delay, Duration::from_secs(60));
        assert_eq!(s.stop_signal, libc::SIGTERM);
        assert_eq!(s.stop_timeout, Duration::from_secs(5));
        assert_eq!(s.notify, NotifyMode::None);
        assert!(!s.disabled);
        assert_eq!(
            s,
            ServiceSpec {
                file: s.file.clone(),
                ..ServiceSpec::new("web", &["/bin/web", "-f"])
            }
        );
    }

    #[test]
    fn full_file_parses_every_key() {
        let s = p(r#"
exec = ["/usr/sbin/dropbear", "-F"]
env = { LANG = "C", X = "1" }
working_directory = "/var/lib/web"
user = "www"
group = "www"
umask = "027"
nofile = 4096
core = "unlimited"
nproc = 100
memlock = 0
restart = "on-failure"
restart_delay = "200ms"
max_restarts = 5
window = "1m"
on_exhausted = "reboot"
max_delay = "30s"
stop_signal = "SIGINT"
stop_timeout = "2s"
notify = "watchdog"
watchdog_timeout = "10s"
after = ["net"]
requires = ["db", "db"]
disabled = true
"#)
        .unwrap();
        assert_eq!(s.env.get("LANG").map(String::as_str), Some("C"));
        assert_eq!(s.umask, Some(0o027));
        assert_eq!(s.limits.nofile, Some(Limit::Value(4096)));
        assert_eq!(s.limits.core, Some(Limit::Unlimited));
        assert_eq!(s.limits.memlock, Some(Limit::Value(0)));
        assert_eq!(s.restart, RestartMode::OnFailure);
        assert_eq!(s.restart_delay, Duration::from_millis(200));
        assert_eq!(
            s.limit,
            Some(RestartLimit {
                max_restarts: 5,
                window: Duration::from_secs(60)
            })
        );
        assert_eq!(s.on_exhausted, OnExhausted::Reboot);
        assert_eq!(s.stop_signal, libc::SIGINT);
        assert_eq!(s.notify, NotifyMode::Watchdog);
        assert_eq!(s.watchdog_timeout, Some(Duration::from_secs(10)));
        assert_eq!(s.requires, vec!["db"]);
        assert!(s.disabled);
    }

    #[test]
    fn unknown_key_is_reported_with_line_column_and_field() {
        let (line, col, field, msg) =
            where_(p("exec = [\"/bin/x\"]\nrestrat = \"never\"\n").unwrap_err());
        assert_eq!((line, col, field.as_str()), (2, 1, "restrat"), "{msg}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("exec = []", "exec", "non-empty"),
            ("exec = [\"/x\"]\nrestart = \"sometimes\"", "restart", ""),
            ("exec = [\"/x\"]\numask = \"099\"", "umask", "octal"),
            ("exec = [\"/x\"]\numask = 22", "umask", "octal string"),
            ("exec = [\"/x\"]\nnofile = \"lots\"", "nofile", "unlimited"),
            ("exec = [\"/x\"]\nnofile = -1", "nofile", "negative"),
            (
                "exec = [\"/x\"]\nstop_signal = \"SIGFOO\"",
                "stop_signal",
                "signal",
            ),
            (
                "exec = [\"/x\"]\nrestart_delay = 1",
                "restart_delay",
                "unit",
            ),
            (
                "exec = [\"/x\"]\nmax_restarts = 3",
                "max_restarts",
                "window",
            ),
            (
                "exec = [\"/x\"]\nwindow = \"10s\"",
                "window",
                "max_restarts",
            ),
            (
                "exec = [\"/x\"]\nmax_restarts = 0\nwindow = \"10s\"",
                "max_restarts",
                "at least 1",
            ),
            (
                "exec = [\"/x\"]\non_exhausted = \"stop\"",
                "on_exhausted",
                "max_restarts",
            ),
            (
                "exec = [\"/x\"]\nnotify = \"watchdog\"",
                "notify",
                "watchdog_timeout",
            ),
            (
                "exec = [\"/x\"]\nwatchdog_timeout = \"1s\"",
                "watchdog_timeout",
                "notify",
            ),
            (
                "exec = [\"/x\"]\nworking_directory = \"rel\"",
                "working_directory",
                "absolute",
            ),
            ("exec = [\"/x\"]\nafter = [\"web\"]", "after", "itself"),
            (
                "exec = [\"/x\"]\nrequires = [\"a b\"]",
                "requires",
                "not a service name",
            ),
            (
                "exec = [\"/x\"]\nenv = { \"A=B\" = \"1\" }",
                "env",
                "variable name",
            ),
        ];
        for (text, field, want) in cases {
            let (line, _, got_field, msg) = where_(p(text).expect_err(text));
            assert!(
                got_field.starts_with(field),
                "{text:?}: field {got_field:?} msg {msg:?}"
            );
            assert!(msg.contains(want), "{text:?}: {msg:?} lacks {want:?}");
            assert!(line >= 1, "{text:?}: no line in {msg:?}");
        }
    }

    #[test]
    fn missing_exec_is_an_error() {
        let (_, _, field, msg) = where_(p("restart = \"never\"\n").unwrap_err());
        assert_eq!(field, "exec", "{msg}");
    }

    #[test]
    fn bad_file_names_are_refused() {
        assert!(parse("exec = [\"/x\"]", Path::new("/s/-x.toml")).is_err());
        assert!(parse("exec = [\"/x\"]", Path::new("/s/a b.toml")).is_err());
        assert!(parse("exec = [\"/x\"]", Path::new("/s/getty@tty1.toml")).is_ok());
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("SIGKILL"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("hup"), Some(libc::SIGHUP));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("FOO"), None);
        assert_eq!(parse_signal("0"), None);
        assert_eq!(signal_name(libc::SIGABRT), "ABRT");
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn scratch(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tether-service-test-{}-{}",
            label,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn load_dir_keeps_good_files_and_reports_bad_ones() {
        let d = scratch("mixed");
        write(&d, "a.toml", "exec = [\"/bin/a\"]\n");
        write(&d, "b.toml", "exec = [\"/bin/b\"]\nbogus = 1\n");
        write(&d, "c.toml", "exec = [\"/bin/c\"]\nafter = [\"b\"]\n");
        write(
            &d,
            "d.toml",
            "exec = [\"/bin/d\"]\n\nrequires = [\"nope\"]\n",
        );
        write(&d, "README", "not a service");
        write(&d, ".hidden.toml", "garbage");
        let set = load_dir(&d);
        let names: Vec<&str> = set.specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["a", "c"],
            "c depends on b, whose file is bad: not c's error"
        );
        let errs: Vec<&str> = set.errors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(errs, vec!["b", "d"]);
        let (line, col, field, msg) = where_(set.errors.into_iter().nth(1).unwrap().1);
        assert_eq!((line, col, field.as_str()), (3, 1, "requires"));
        assert!(msg.contains("unknown service \"nope\""), "{msg}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn load_dir_reports_cycles() {
        let d = scratch("cycle");
        write(&d, "a.toml", "exec = [\"/bin/a\"]\nafter = [\"b\"]\n");
        write(&d, "b.toml", "exec = [\"/bin/b\"]\nrequires = [\"a\"]\n");
        write(&d, "c.toml", "exec = [\"/bin/c\"]\nrequires = [\"a\"]\n");
        let set = load_dir(&d);
        let errs: Vec<String> = set
            .errors
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect();
        assert_eq!(
            set.specs
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            vec!["c"]
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].contains("dependency cycle: a -> b -> a"),
            "{errs:?}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_directory_is_a_directory_error() {
        let set = load_dir(Path::new("/nonexistent/tether/services"));
        assert!(set.dir_error.is_some());
        assert!(set.has_errors());
    }
}
