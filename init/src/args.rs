//! Command line of `tether-init`.
//!
//! ```text
//! tether-init [--config FILE] [--device PATH] [--state-dir DIR] [--run-dir DIR]
//!             [--services DIR] [--bin-dir DIR] [--syslog-socket PATH] [--no-kmsg]
//!             [--mount | --no-mount]
//! ```
//!
//! The path flags override `tether.toml` (and the built-in defaults when the
//! file is bad), so tests never touch the host: DESIGN.md "Every path is
//! overridable by flag". The children see the same values (see
//! `effective`).
//!
//! - `--mount`: mount `/proc`, `/sys`, `/dev`, `/run` where absent even when
//!   not PID 1 of the machine (a container that wants them).
//! - `--no-mount`: never mount anything.
//!   Default: mount only as PID 1 of the machine (see `mounts`).
//!
//! Decisions where the design is silent:
//! - The kernel passes boot parameters it does not know to init as
//!   arguments (`quiet`, `single`, ...). As PID 1, an unknown or malformed
//!   argument is therefore logged and ignored, never fatal. Run by hand (not
//!   PID 1), it is an error (exit status 2) and `--help` prints the usage.
//! - `--flag=value` and `--flag value` are both accepted.

use std::ffi::OsString;
use std::path::PathBuf;

/// The usage text.
pub const USAGE: &str = "usage: tether-init [--config FILE] [--device PATH] [--state-dir DIR] \
[--run-dir DIR] [--services DIR] [--bin-dir DIR] [--syslog-socket PATH] [--no-kmsg] \
[--mount | --no-mount]";

/// Whether init mounts the API filesystems.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MountMode {
    /// Only as PID 1 of the machine.
    #[default]
    Auto,
    Always,
    Never,
}

/// Settings that override `tether.toml` (also when it is bad).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub device: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub run: Option<PathBuf>,
    pub services: Option<PathBuf>,
    pub bin: Option<PathBuf>,
    pub syslog_socket: Option<PathBuf>,
    pub no_kmsg: bool,
}

impl Overrides {
    pub fn any(&self) -> bool {
        *self != Overrides::default()
    }

    /// Applies the overrides to `config`.
    pub fn apply(&self, config: &mut tether_common::config::Config) {
        if let Some(p) = &self.device {
            config.watchdog.device = Some(p.clone());
        }
        if let Some(p) = &self.state {
            config.paths.state = p.clone();
        }
        if let Some(p) = &self.run {
            config.paths.run = p.clone();
        }
        if let Some(p) = &self.services {
            config.paths.services = p.clone();
        }
        if let Some(p) = &self.bin {
            config.paths.bin = Some(p.clone());
        }
        if let Some(p) = &self.syslog_socket {
            config.log.syslog_socket = p.clone();
        }
        if self.no_kmsg {
            config.log.kmsg = false;
        }
    }
}

/// The parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub config: PathBuf,
    pub overrides: Overrides,
    pub mount: MountMode,
    pub help: bool,
    /// Arguments that were not understood, with why (ignored as PID 1).
    pub rejected: Vec<String>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            config: PathBuf::from(tether_common::config::DEFAULT_CONFIG),
            overrides: Overrides::default(),
            mount: MountMode::Auto,
            help: false,
            rejected: Vec::new(),
        }
    }
}

/// Parses the arguments after the program name. Never fails: what is not
/// understood lands in [`Args::rejected`].
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Args {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(text) = arg.to_str() else {
            out.rejected.push(format!("{:?}: not UTF-8", arg));
            continue;
        };
        let (flag, inline) = match text.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(OsString::from(v))),
            _ => (text, None),
        };
        let takes_value = matches!(
            flag,
            "--config"
                | "--device"
                | "--state-dir"
                | "--run-dir"
                | "--services"
                | "--bin-dir"
                | "--syslog-socket"
        );
        if takes_value {
            let value = match inline {
                Some(v) => Some(v),
                None => it.next(),
            };
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                out.rejected.push(format!("{}: missing value", flag));
                continue;
            };
            let path = PathBuf::from(value);
            let o = &mut out.overrides;
            match flag {
                "--config" => out.config = path,
                "--device" => o.device = Some(path),
                "--state-dir" => o.state = Some(path),
                "--run-dir" => o.run = Some(path),
                "--services" => o.services = Some(path),
                "--bin-dir" => o.bin = Some(path),
                _ => o.syslog_socket = Some(path),
            }
            continue;
        }
        if inline.is_some() {
            out.rejected.push(format!("{}: takes no value", flag));
            continue;
        }
        match flag {
            "--no-kmsg" => out.overrides.no_kmsg = true,
            "--mount" => out.mount = MountMode::Always,
            "--no-mount" => out.mount = MountMode::Never,
            "-h" | "--help" => out.help = true,
            other => out
                .rejected
                .push(format!("{}: unknown argument", shorten(other))),
        }
    }
    out
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
fn os(s: &str) -> OsString {
    OsString::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Args {
        parse(a.iter().map(|s| os(s)))
    }

    #[test]
    fn no_arguments_means_the_default_config() {
        let a = p(&[]);
        assert_eq!(a.config, PathBuf::from("/etc/tether/tether.toml"));
        assert!(!a.overrides.any());
        assert_eq!(a.mount, MountMode::Auto);
        assert!(a.rejected.is_empty());
    }

    #[test]
    fn every_path_is_overridable_in_both_spellings() {
        let a = p(&[
            "--config",
            "/t/tether.toml",
            "--device=/t/wd",
            "--state-dir",
            "/t/state",
            "--run-dir=/t/run",
            "--services",
            "/t/svc",
            "--bin-dir",
            "/t/bin",
            "--syslog-socket",
            "/t/log",
            "--no-kmsg",
            "--no-mount",
        ]);
        assert!(a.rejected.is_empty(), "{:?}", a.rejected);
        assert_eq!(a.config, PathBuf::from("/t/tether.toml"));
        let o = &a.overrides;
        assert_eq!(o.device.as_deref(), Some(std::path::Path::new("/t/wd")));
        assert_eq!(o.state.as_deref(), Some(std::path::Path::new("/t/state")));
        assert_eq!(o.run.as_deref(), Some(std::path::Path::new("/t/run")));
        assert_eq!(o.services.as_deref(), Some(std::path::Path::new("/t/svc")));
        assert_eq!(o.bin.as_deref(), Some(std::path::Path::new("/t/bin")));
        assert_eq!(
            o.syslog_socket.as_deref(),
            Some(std::path::Path::new("/t/log"))
        );
        assert!(o.no_kmsg);
        assert_eq!(a.mount, MountMode::Never);

        let mut c = tether_common::config::Config::default();
        o.apply(&mut c);
        assert_eq!(c.paths.state, PathBuf::from("/t/state"));
        assert_eq!(c.paths.bin, Some(PathBuf::from("/t/bin")));
        assert_eq!(c.watchdog.device, Some(PathBuf::from("/t/wd")));
        assert_eq!(c.log.syslog_socket, PathBuf::from("/t/log"));
        assert!(!c.log.kmsg);
    }

    #[test]
    fn kernel_boot_parameters_are_collected_not_fatal() {
        let a = p(&[
            "quiet",
            "--config",
            "/x.toml",
            "single",
            "--no-kmsg=1",
            "--mount",
        ]);
        assert_eq!(a.config, PathBuf::from("/x.toml"));
        assert_eq!(a.mount, MountMode::Always);
        assert_eq!(
            a.rejected,
            vec![
                "quiet: unknown argument".to_string(),
                "single: unknown argument".to_string(),
                "--no-kmsg: takes no value".to_string()
            ]
        );
        assert!(!a.overrides.no_kmsg);
        let a = p(&["--device"]);
        assert_eq!(a.rejected, vec!["--device: missing value".to_string()]);
        assert_eq!(a.overrides.device, None);
        let a = p(&["--config="]);
        assert_eq!(a.rejected, vec!["--config: missing value".to_string()]);
        assert_eq!(a.config, PathBuf::from("/etc/tether/tether.toml"));
    }
}
