//! `tetherctl upgrade` (issue 13): `init` and `watchdogd` are heartbeat
//! codes for init (`U`, `W`; init does the work and logs the outcome);
//! `restarter` is an `execve` of the restarter's own binary in place.
//!
//! The restarter's upgrade: the binary is the path `/proc/self/exe`
//! resolved at start (a package upgrade replaces the file there; the old
//! inode stays ours), checked first (exists, regular, executable, starts
//! with an ELF or `#!` header): a failed check is the request's answer and
//! nothing changes. Then the answer is sent, the state file is written and
//! the fd store made to hold every service's descriptors (compaction); the
//! heartbeat pipes and the store's three descriptors lose close-on-exec and
//! are named in `TETHER_FDS` at their numbers; same arguments. The new
//! image takes everything back by the re-adoption path (docs/ADOPTION.md):
//! the services are still this process's children (the pid does not
//! change), so their exits come from `waitpid` again. An `execve` that
//! fails leaves this process running (descriptors close-on-exec again) and
//! logs why. Without init's fd store (run alone) the upgrade is refused:
//! the services' descriptors would not survive it.
//!
//! Lost over an upgrade, as over a crash: output lines buffered while
//! syslog is down (tried once more first), and the first part of a line
//! half read.

use super::Shell;
use crate::control::{Layer, Response};
use log::{error, info, warn};
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tether_common::clock::MonoTime;
use tether_common::fdlist::ENV_FDS;
use tether_common::heartbeat::{Code, Sent};

/// The binary this process runs, as resolved at start.
pub(super) fn own_binary() -> Option<PathBuf> {
    std::fs::read_link("/proc/self/exe").ok()
}

/// Why `path` cannot be executed in place, if it cannot.
pub fn check_binary(path: &Path) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{}: not executable", path.display()));
    }
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !(n == 4 && &head == b"\x7fELF" || n >= 2 && &head[..2] == b"#!") {
        return Err(format!(
            "{}: not an executable (no ELF or #! header)",
            path.display()
        ));
    }
    Ok(())
}

impl Shell {
    /// Answers `upgrade LAYER`.
    pub(super) fn upgrade(&mut self, layer: Layer, _now: MonoTime) -> Response {
        match layer {
            Layer::Init | Layer::Watchdogd => {
                let (code, what) = match layer {
                    Layer::Init => (Code::Upgrade, "upgrade of init"),
                    _ => (Code::RestartWatchdogd, "restart of watchdogd"),
                };
                let Some(i) = self.init_pipe else {
                    return Response::Error(format!(
                        "{what} not possible: not started by tether-init (no init pipe in {ENV_FDS})"
                    ));
                };
                match self.beats[i].send(code) {
                    Ok(Sent::Written) => {
                        info!("{what} requested from init");
                        Response::Ok(format!("{what} requested (the outcome is in init's log)"))
                    }
                    Ok(Sent::PipeFull) => {
                        self.pending_code = Some(code);
                        Response::Ok(format!(
                            "{what} requested (init pipe full: sent at the next beat)"
                        ))
                    }
                    Err(e) => Response::Error(format!("{what}: init pipe: {e}")),
                }
            }
            Layer::Restarter => {
                if self.store.is_none() {
                    return Response::Error(format!(
                        "upgrade of the restarter not possible: no fd store from init ({ENV_FDS}); the services' descriptors would not survive the exec"
                    ));
                }
                let Some(bin) = self.own_binary.clone() else {
                    return Response::Error("upgrade of the restarter: its own binary was not found at start (/proc/self/exe)".into());
                };
                if let Err(e) = check_binary(&bin) {
                    warn!("upgrade of the restarter refused: {e}");
                    return Response::Error(format!("upgrade of the restarter refused: {e}"));
                }
                self.upgrade_pending = true;
                Response::Ok(format!(
                    "upgrade of the restarter: exec of {}",
                    bin.display()
                ))
            }
        }
    }

    /// Carries out a requested upgrade of the restarter (after the answer
    /// went out); returns only if the `execve` failed.
    pub(super) fn exec_in_place(&mut self) {
        self.upgrade_pending = false;
        let Some(bin) = self.own_binary.clone() else {
            return;
        };
        let now = MonoTime::now();
        for r in self.rt.iter_mut() {
            if let Some(out) = r.output.as_mut() {
                out.drain(&mut self.syslog, now);
                out.flush(&mut self.syslog, now);
            }
        }
        self.write_state();
        self.compact_store();
        // Descriptors handed on, by name and number.
        let mut kept: Vec<(String, std::os::fd::BorrowedFd<'_>)> = Vec::new();
        for w in &self.beats {
            kept.push((w.name().to_string(), w.fd()));
        }
        if let Some(store) = self.store.as_ref() {
            for (name, fd) in store.named_fds() {
                kept.push((name.to_string(), fd));
            }
        }
        let fds: Vec<String> = kept
            .iter()
            .map(|(n, fd)| format!("{n}={}", std::os::fd::AsRawFd::as_raw_fd(fd)))
            .collect();
        let mut ok = true;
        for (name, fd) in &kept {
            if let Err(e) = tether_common::sys::set_cloexec(fd.as_fd(), false) {
                error!("upgrade of the restarter: keeping {name} open: {e}");
                ok = false;
            }
        }
        let result: Result<(), String> = if ok {
            let path = CString::new(bin.as_os_str().as_bytes()).map_err(|e| e.to_string());
            let args: Result<Vec<CString>, String> = std::iter::once(bin.as_os_str().to_owned())
                .chain(std::env::args_os().skip(1))
                .map(|a| CString::new(a.as_bytes()).map_err(|e| e.to_string()))
                .collect();
            let env: Result<Vec<CString>, String> = std::env::vars_os()
                .filter(|(k, _)| k != ENV_FDS)
                .map(|(k, v)| {
                    let mut kv = k.as_bytes().to_vec();
                    kv.push(b'=');
                    kv.extend_from_slice(v.as_bytes());
                    CString::new(kv).map_err(|e| e.to_string())
                })
                .chain(std::iter::once(
                    CString::new(format!("{ENV_FDS}={}", fds.join(","))).map_err(|e| e.to_string()),
                ))
                .collect();
            match (path, args, env) {
                (Ok(p), Ok(a), Ok(e)) => {
                    info!(
                        "upgrade of the restarter: exec of {} ({ENV_FDS}={})",
                        bin.display(),
                        fds.join(",")
                    );
                    logging_flush();
                    match nix::unistd::execve(&p, &a, &e) {
                        Ok(never) => match never {},
                        Err(e) => Err(format!("execve {}: {e}", bin.display())),
                    }
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
            }
        } else {
            Err("descriptors could not be kept".into())
        };
        for (_, fd) in &kept {
            let _ = tether_common::sys::set_cloexec(fd.as_fd(), true);
        }
        if let Err(e) = result {
            error!("upgrade of the restarter failed: {e}; this restarter keeps running");
        }
    }
}

fn logging_flush() {
    tether_common::logging::flush_pending(MonoTime::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_unexecutable_binary_is_refused() {
        let dir = std::env::temp_dir().join(format!("tether-upgrade-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(check_binary(&dir.join("missing"))
            .unwrap_err()
            .contains("No such file"));
        assert!(check_binary(&dir)
            .unwrap_err()
            .contains("not a regular file"));
        let f = dir.join("data");
        std::fs::write(&f, b"hello").unwrap();
        assert!(check_binary(&f).unwrap_err().contains("not executable"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_binary(&f).unwrap_err().contains("no ELF"));
        assert!(check_binary(&own_binary().unwrap()).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
