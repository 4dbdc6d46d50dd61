//! The command line.

use std::path::PathBuf;

/// Command-line settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub config: PathBuf,
    /// `--run-dir`: overrides `[paths] run`.
    pub run_dir: Option<PathBuf>,
    /// `--services`: overrides `[paths] services`.
    pub services: Option<PathBuf>,
    /// `--cgroup-root`: where service cgroups go (must be cgroup2).
    pub cgroup_root: Option<PathBuf>,
    /// `--no-cgroup`: process groups only.
    pub no_cgroup: bool,
}

pub const USAGE: &str = "usage: tether-restarter [--config FILE] [--run-dir DIR] [--services DIR] [--cgroup-root DIR | --no-cgroup]";

impl Options {
    /// Parses the arguments after the program name: bytes, as the kernel
    /// gave them (a path need not be UTF-8).
    pub fn parse<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<Options, String> {
        let mut o = Options {
            config: PathBuf::from(tether_common::config::DEFAULT_CONFIG),
            ..Options::default()
        };
        let mut it = args.iter().map(|a| a.as_ref());
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match a.to_str().unwrap_or("") {
                "--config" => o.config = value("--config")?,
                "--run-dir" => o.run_dir = Some(value("--run-dir")?),
                "--services" => o.services = Some(value("--services")?),
                "--cgroup-root" => o.cgroup_root = Some(value("--cgroup-root")?),
                "--no-cgroup" => o.no_cgroup = true,
                _ => return Err(format!("unknown argument {a:?}")),
            }
        }
        if o.no_cgroup && o.cgroup_root.is_some() {
            return Err("--cgroup-root and --no-cgroup exclude each other".into());
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_override_the_file() {
        let o = Options::parse(&args(&[
            "--config",
            "/x.toml",
            "--run-dir",
            "/r",
            "--services",
            "/s",
            "--no-cgroup",
        ]))
        .unwrap();
        assert_eq!(o.config, PathBuf::from("/x.toml"));
        assert_eq!(o.run_dir, Some(PathBuf::from("/r")));
        assert_eq!(o.services, Some(PathBuf::from("/s")));
        assert!(o.no_cgroup);
        assert_eq!(
            Options::parse::<String>(&[]).unwrap().config,
            PathBuf::from("/etc/tether/tether.toml")
        );
        assert!(Options::parse(&args(&["--bogus"])).is_err());
        assert!(Options::parse(&args(&["--config"])).is_err());
        assert!(Options::parse(&args(&["--no-cgroup", "--cgroup-root", "/x"])).is_err());
    }
}
