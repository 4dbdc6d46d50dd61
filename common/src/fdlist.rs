//! `name=fd` lists passed in the environment (`TETHER_HEARTBEATS`,
//! `TETHER_FDS`), e.g. `init=3,restarter=4`.

use std::fmt;
use std::os::fd::RawFd;

/// Read ends watchdogd watches.
pub const ENV_HEARTBEATS: &str = "TETHER_HEARTBEATS";
/// Write ends a layer child beats into.
pub const ENV_FDS: &str = "TETHER_FDS";

/// At most this many entries: the chain has a handful of layers, and a bound
/// keeps hostile input from allocating without limit.
pub const MAX_ENTRIES: usize = 16;
const MAX_NAME: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdList(Vec<(String, RawFd)>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FdListError {
    /// An entry is not `name=fd`.
    Malformed {
        entry: String,
    },
    /// The name is empty, too long, or not `[a-z0-9_-]`.
    BadName {
        entry: String,
    },
    /// The descriptor is not a number in 0..=65535.
    BadFd {
        entry: String,
    },
    DuplicateName {
        name: String,
    },
    TooMany,
}

impl fmt::Display for FdListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdListError::Malformed { entry } => write!(f, "entry `{}` is not name=fd", entry),
            FdListError::BadName { entry } => {
                write!(
                    f,
                    "entry `{}`: name must be 1-{} of [a-z0-9_-]",
                    entry, MAX_NAME
                )
            }
            FdListError::BadFd { entry } => {
                write!(f, "entry `{}`: fd is not a number 0-65535", entry)
            }
            FdListError::DuplicateName { name } => write!(f, "name `{}` appears twice", name),
            FdListError::TooMany => write!(f, "more than {} entries", MAX_ENTRIES),
        }
    }
}

impl std::error::Error for FdListError {}

impl FdList {
    pub fn new() -> Self {
        FdList(Vec::new())
    }

    /// Parses `init=3,restarter=4`. The empty string is the empty list.
    pub fn parse(s: &str) -> Result<FdList, FdListError> {
        let mut out: Vec<(String, RawFd)> = Vec::new();
        if s.is_empty() {
            return Ok(FdList(out));
        }
        for entry in s.split(',') {
            if out.len() == MAX_ENTRIES {
                return Err(FdListError::TooMany);
            }
            let short = || entry.chars().take(64).collect::<String>();
            let (name, fd) = entry
                .split_once('=')
                .ok_or_else(|| FdListError::Malformed { entry: short() })?;
            let name_ok = !name.is_empty()
                && name.len() <= MAX_NAME
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !name_ok {
                return Err(FdListError::BadName { entry: short() });
            }
            let fd: u16 = match fd.parse() {
                Ok(n) if !fd.starts_with('+') => n,
                _ => return Err(FdListError::BadFd { entry: short() }),
            };
            if out.iter().any(|(n, _)| n == name) {
                return Err(FdListError::DuplicateName {
                    name: name.to_string(),
                });
            }
            out.push((name.to_string(), RawFd::from(fd)));
        }
        Ok(FdList(out))
    }

    /// Reads and parses the environment variable `var`; unset is empty.
    pub fn from_env(var: &str) -> Result<FdList, FdListError> {
        match std::env::var(var) {
            Ok(s) => FdList::parse(&s),
            Err(std::env::VarError::NotPresent) => Ok(FdList::new()),
            Err(std::env::VarError::NotUnicode(_)) => Err(FdListError::Malformed {
                entry: "(not UTF-8)".to_string(),
            }),
        }
    }

    pub fn push(&mut self, name: &str, fd: RawFd) {
        self.0.push((name.to_string(), fd));
    }

    pub fn get(&self, name: &str) -> Option<RawFd> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, fd)| *fd)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, RawFd)> {
        self.0.iter().map(|(n, fd)| (n.as_str(), *fd))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for FdList {
    fn default() -> Self {
        FdList::new()
    }
}

impl fmt::Display for FdList {
    /// The environment form, `init=3,restarter=4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, fd)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", name, fd)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let l = FdList::parse("init=3,restarter=4").unwrap();
        assert_eq!(l.get("init"), Some(3));
        assert_eq!(l.get("restarter"), Some(4));
        assert_eq!(l.get("watchdog"), None);
        assert_eq!(l.to_string(), "init=3,restarter=4");
        assert!(FdList::parse("").unwrap().is_empty());
    }

    #[test]
    fn refuses_malformed_entries() {
        assert!(matches!(
            FdList::parse("init"),
            Err(FdListError::Malformed { .. })
        ));
        assert!(matches!(
            FdList::parse("init=3,"),
            Err(FdListError::Malformed { .. })
        ));
        assert!(matches!(
            FdList::parse("=3"),
            Err(FdListError::BadName { .. })
        ));
        assert!(matches!(
            FdList::parse("Init=3"),
            Err(FdListError::BadName { .. })
        ));
        assert!(matches!(
            FdList::parse("init=-1"),
            Err(FdListError::BadFd { .. })
        ));
        assert!(matches!(
            FdList::parse("init=+1"),
            Err(FdListError::BadFd { .. })
        ));
        assert!(matches!(
            FdList::parse("init=70000"),
            Err(FdListError::BadFd { .. })
        ));
        assert!(matches!(
            FdList::parse("init=x"),
            Err(FdListError::BadFd { .. })
        ));
        assert!(matches!(
            FdList::parse("init=3,init=4"),
            Err(FdListError::DuplicateName { .. })
        ));
        let many = (0..17)
            .map(|i| format!("l{}={}", i, i))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(FdList::parse(&many), Err(FdListError::TooMany));
    }
}
