//! Watching the runtime directory (`RUN`, default `/run/tether`) for being
//! removed under a running restarter (`rm -rf RUN` from a cleanup script, a
//! misconfigured tmpfiles): without it `tetherctl` cannot reach the
//! restarter and every `notify = "watchdog"` service, whose pings go to a
//! socket path that no longer exists, is killed every `watchdog_timeout`.
//!
//! Decisions (issue 12, item 3):
//! - Detection is a check once per [`CHECK_INTERVAL`] (1 s) from the event
//!   loop's own timer, not inotify: inotify watches vanish with the
//!   directory they watch and must be re-armed on a directory that may not
//!   exist yet, and a cleanup that removes and recreates `RUN` between two
//!   events is still caught by an identity check. The check is cheap and
//!   cannot hang: `fstatat(AT_SYMLINK_NOFOLLOW)` of one name relative to an
//!   `O_PATH` descriptor of `RUN`'s parent, then of `control.sock` and
//!   `notify` relative to one of `RUN` (the runtime directory is a local
//!   tmpfs; no path is resolved from `/`). Each result's (dev, ino) is
//!   compared with what the restarter made ([`assess`], pure).
//! - Notify sockets are looked at one by one only when the `notify`
//!   directory's modification time moved since the last look (a removal
//!   changes it; so do the restarter's own binds, after which one pass
//!   finds everything in place): 10,000 services cost nothing per second.
//!   After each repair the next check makes that pass once more whatever
//!   the mtime says, so files removed while the repair ran (an `rm -rf`
//!   racing it) are found and put back too.
//! - Repair (in the event loop): `RUN` and `RUN/notify` are created again
//!   (0755), the control socket is bound again at the same path (open
//!   client connections are kept), every notify socket is bound again at
//!   its path with its owner and mode (datagrams still queued on the old one
//!   are read first; at most [`REPAIR_BATCH`] per loop turn, the next turn
//!   going on at once), `restarter.state` is written again, and each watchdog
//!   service gets one fresh `watchdog_timeout` from that moment. No service
//!   is stopped or started because of it. One warning line says what was
//!   gone and how long the repair took; a repair that fails is logged once
//!   and retried at each check until it succeeds (then logged again).
//! - A service that `connect`ed its notify socket once and keeps sending on
//!   that connection (rather than to the path, as `sd_notify` does) stays
//!   attached to the old, closed socket and gets `ECONNREFUSED`: it must
//!   send to the path again (as `sd_notify` and `systemd-notify` do).

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the runtime directory is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Notify sockets bound again per loop turn during a repair (about 50 µs
/// each here): the beat never waits for more than a few milliseconds.
pub const REPAIR_BATCH: usize = 256;

/// A file's identity: (device, inode).
pub type Id = (u64, u64);

/// What the restarter made, and what a check saw (`None`: missing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ids {
    pub run: Option<Id>,
    pub notify: Option<Id>,
    /// `None` in [`Known`] when the restarter has no control socket.
    pub control: Option<Id>,
}

/// What is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Damage {
    pub run: bool,
    pub notify_dir: bool,
    pub control: bool,
}

impl Damage {
    pub fn any(&self) -> bool {
        self.run || self.notify_dir || self.control
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.run {
            return write!(f, "the directory was removed or replaced");
        }
        let mut parts = Vec::new();
        if self.notify_dir {
            parts.push("notify/ was removed");
        }
        if self.control {
            parts.push("control.sock was removed");
        }
        if parts.is_empty() {
            parts.push("notify sockets were removed");
        }
        write!(f, "{}", parts.join(", "))
    }
}

/// Compares what was seen with what the restarter made. Pure.
///
/// `RUN` missing or replaced damages everything under it; otherwise
/// `notify/` and `control.sock` are judged each by its identity (a control
/// socket the restarter never had is not missed).
pub fn assess(known: &Ids, seen: &Ids) -> Damage {
    if known.run.is_none() || seen.run != known.run {
        return Damage {
            run: true,
            notify_dir: true,
            control: known.control.is_some(),
        };
    }
    Damage {
        run: false,
        notify_dir: seen.notify != known.notify,
        control: known.control.is_some() && seen.control != known.control,
    }
}

/// The runtime directory and the descriptors its checks go through.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// `O_PATH` of `RUN`'s parent and `RUN`'s own name in it.
    parent: OwnedFd,
    name: OsString,
    /// `O_PATH` of `RUN` as made (stale once `RUN` is replaced).
    run: Option<OwnedFd>,
    known: Ids,
    /// mtime (sec, nsec) of `RUN/notify` at the last look at the sockets.
    notify_stamp: Option<(i64, i64)>,
}

fn id_of(st: &nix::sys::stat::FileStat) -> Id {
    (st.st_dev, st.st_ino)
}

fn o_path(path: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

impl RunDir {
    /// Opens the descriptors for `path` (which exists) and records the
    /// current identities as the restarter's.
    pub fn open(path: &Path, has_control: bool) -> std::io::Result<RunDir> {
        let parent_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("/"),
        };
        let Some(name) = path.file_name() else {
            return Err(std::io::Error::other(format!(
                "{}: no directory name",
                path.display()
            )));
        };
        let mut rd = RunDir {
            path: path.to_path_buf(),
            parent: o_path(parent_path)?,
            name: name.to_os_string(),
            run: None,
            known: Ids::default(),
            notify_stamp: None,
        };
        rd.remember(has_control)?;
        Ok(rd)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes what is there now as the restarter's own (after start-up or a
    /// repair). The parent is opened again too, in case it was replaced.
    pub fn remember(&mut self, has_control: bool) -> std::io::Result<()> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.parent = o_path(parent)?;
        }
        let run = o_path(&self.path)?;
        let run_id = id_of(&nix::sys::stat::fstat(&run)?);
        self.known = Ids {
            run: Some(run_id),
            notify: Some(id_of(&nix::sys::stat::fstatat(
                &run,
                "notify",
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?)),
            control: if has_control {
                Some(id_of(&nix::sys::stat::fstatat(
                    &run,
                    crate::event_loop::CONTROL_SOCKET,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?))
            } else {
                None
            },
        };
        self.run = Some(run);
        self.notify_stamp = None;
        Ok(())
    }

    /// What is missing now (three `fstatat` calls, none from `/`).
    pub fn check(&self) -> Damage {
        let at = |fd: &OwnedFd, name: &std::ffi::OsStr| {
            nix::sys::stat::fstatat(fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .ok()
                .map(|st| id_of(&st))
        };
        let run = at(&self.parent, &self.name);
        let seen = match (&self.run, run == self.known.run) {
            (Some(fd), true) => Ids {
                run,
                notify: at(fd, "notify".as_ref()),
                control: at(fd, crate::event_loop::CONTROL_SOCKET.as_ref()),
            },
            _ => Ids {
                run,
                ..Ids::default()
            },
        };
        assess(&self.known, &seen)
    }

    /// Whether the notify sockets should be looked at one by one: true when
    /// `RUN/notify`'s mtime moved since the last call that returned true
    /// (or at the first call).
    pub fn notify_dir_changed(&mut self) -> bool {
        let Some(run) = &self.run else {
            return true;
        };
        let stamp = nix::sys::stat::fstatat(run, "notify", AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()
            .map(|st| (st.st_mtime, st.st_mtime_nsec));
        if stamp.is_some() && stamp == self.notify_stamp {
            return false;
        }
        self.notify_stamp = stamp;
        true
    }

    /// Creates `RUN` (0755) again if it is missing, and `RUN/notify`.
    pub fn recreate(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.path)?;
        crate::notify::prepare_dir(&self.path.join("notify"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assess_judges_each_file_by_its_identity() {
        let known = Ids {
            run: Some((1, 10)),
            notify: Some((1, 11)),
            control: Some((1, 12)),
        };
        let none = Damage::default();
        #[rustfmt::skip]
        let table: &[(Ids, Damage)] = &[
            (known, none),
            // rm -rf RUN
            (Ids::default(), Damage { run: true, notify_dir: true, control: true }),
            // removed and made again by someone else (another inode)
            (Ids { run: Some((1, 20)), ..known }, Damage { run: true, notify_dir: true, control: true }),
            // rm RUN/control.sock
            (Ids { control: None, ..known }, Damage { control: true, ..none }),
            // rm -rf RUN/notify
            (Ids { notify: None, ..known }, Damage { notify_dir: true, ..none }),
            // a foreign socket bound at control.sock
            (Ids { control: Some((1, 30)), ..known }, Damage { control: true, ..none }),
        ];
        for (seen, want) in table {
            assert_eq!(assess(&known, seen), *want, "seen {seen:?}");
        }
        // Without a control socket, its absence is no damage.
        let no_ctl = Ids {
            control: None,
            ..known
        };
        assert_eq!(assess(&no_ctl, &no_ctl), none);
        assert_eq!(
            assess(&no_ctl, &Ids::default()),
            Damage {
                run: true,
                notify_dir: true,
                control: false
            }
        );
    }

    #[test]
    fn damage_reads_as_a_phrase() {
        let all = Damage {
            run: true,
            notify_dir: true,
            control: true,
        };
        assert_eq!(all.to_string(), "the directory was removed or replaced");
        let ctl = Damage {
            control: true,
            ..Damage::default()
        };
        assert_eq!(ctl.to_string(), "control.sock was removed");
        assert_eq!(Damage::default().to_string(), "notify sockets were removed");
        assert!(!Damage::default().any());
    }

    #[test]
    fn check_sees_a_removed_and_recreated_directory() {
        let base = std::env::temp_dir().join(format!("tether-rundir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let run = base.join("run");
        std::fs::create_dir_all(run.join("notify")).unwrap();
        let mut rd = RunDir::open(&run, false).unwrap();
        assert_eq!(rd.check(), Damage::default());
        assert!(rd.notify_dir_changed(), "first look");
        assert!(!rd.notify_dir_changed(), "nothing moved");
        std::fs::write(run.join("notify").join("x"), b"").unwrap();
        assert!(rd.notify_dir_changed(), "a new entry moves the mtime");
        std::fs::remove_dir_all(&run).unwrap();
        assert!(rd.check().run);
        rd.recreate().unwrap();
        assert!(rd.check().run, "a new inode is not ours yet");
        rd.remember(false).unwrap();
        assert_eq!(rd.check(), Damage::default());
        std::fs::remove_dir_all(run.join("notify")).unwrap();
        assert_eq!(
            rd.check(),
            Damage {
                notify_dir: true,
                ..Damage::default()
            }
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
