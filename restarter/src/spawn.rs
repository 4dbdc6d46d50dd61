//! Starting a service's process: everything the child needs is prepared
//! here (identity, limits, environment, argv, the `exec` candidates), then
//! `tether_common::sys::child::Spawner` starts it (session, cgroup, limits,
//! umask, groups, user) and reports a failed step's errno synchronously;
//! the child execs the exec helper ([`exec_in_main`]), which enters the
//! working directory and execs the program, and reports a failure of
//! those through the exec status pipe ([`exec_status`]). Its cost does not
//! grow with the number of services (see that module).
//!
//! Decisions where the design is silent:
//! - Environment: the restarter's own, minus what belongs to the chain or
//!   to another supervisor (`TETHER_*`, `NOTIFY_SOCKET`, `WATCHDOG_*`,
//!   `LISTEN_*`), plus `NOTIFY_SOCKET` (notify services),
//!   `WATCHDOG_USEC` (watchdog services), `HOME`/`USER`/`LOGNAME` when a
//!   `user` is given, then the service's `env` (which wins).
//!   `WATCHDOG_PID` is not set (the service may fork before it notifies).
//! - stdin is `/dev/null`; stdout and stderr are the output pipes.
//! - `exec[0]` without a `/` is looked up in the service's `PATH` (its
//!   `env`, else the restarter's), or in
//!   `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` when
//!   neither sets one; an empty `PATH` entry is the working directory. A
//!   file with no recognised executable format is a start failure
//!   (`ENOEXEC`), not handed to `/bin/sh` as `execvp` would.
//! - A `user` without `group` runs with the user's primary group; either
//!   way the supplementary groups are the user's (`getgrouplist`). A
//!   `group` alone sets the gid and drops supplementary groups. Names are
//!   resolved off the loop by `resolver.rs` when the service file is
//!   loaded or reloaded (NSS may block on sss or LDAP); a start waits for
//!   that answer, and one after a failed lookup asks again (an unknown
//!   user is a start failure, retried per policy).
//! - Limits the service does not set: `nofile` gets the conventional soft
//!   limit 1024 ([`SERVICE_NOFILE_SOFT`]; `select()` breaks above it) and
//!   the restarter's hard limit (init raises the layers' limits to serve
//!   many services); the others are inherited.
//! - Environment, argv and paths are bytes (`OsStr`): the restarter's
//!   environment holds whatever init passed on from the kernel command
//!   line.
//! - Nothing here or in the spawner's child can hang on a file system:
//!   the child shares the restarter's memory until `execve`, so the loop
//!   waits for whatever it does. Every start therefore goes through a
//!   helper ([`exec_in_main`]): the child execs the restarter's own binary
//!   (`/proc/self/exe --exec-in STATUS_FD DIR N CANDIDATE... ARGV...`),
//!   which does the `chdir`, the `PATH` search and the program's `execve`
//!   — a program, directory or `PATH` entry on a hung NFS or FUSE mount
//!   hangs that service's process, never the loop. A failure of those
//!   comes back through the exec status pipe when the pid is reaped and is
//!   a failed start as before (`cannot start: PROGRAM: No such file or
//!   directory [ENOENT]`; [`exec_status`] has the mechanism and its
//!   limits). No `stat` is made beforehand. Cost (`bench_spawn
//!   bench_blocker 500 0 1000`, static release build, 2 shared CPUs at load
//!   6-7, two runs, 1000 services held): the loop waits about as long as
//!   before (p50 140 and 167 µs exec'ing the helper, 153 and 141 µs
//!   exec'ing the program); the program runs later, p50 1.5-1.7 ms after
//!   the call instead of 0.75-0.79 ms (the helper's own start-up and second
//!   `execve`, in the service's process, off the loop).
//!   The restarter's binary must be executable by every service's user
//!   (the helper runs after `setuid`): installed mode 0755, as usual.
//! - The child records itself in the spawn journal before `exec`
//!   (`state_file::Journal`).

pub mod exec_status;

use crate::output::OutputPipes;
use crate::service::{Identity, Limit, NotifyMode, Resolution, ServiceSpec};
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use tether_common::sys::child::{ChildSetup, ExecSpec, Record, Rlimit, Spawner};

/// `PATH` when neither the service nor the restarter sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables of the restarter's environment never passed on.
fn is_private(key: &[u8]) -> bool {
    key.starts_with(b"TETHER_")
        || key.starts_with(b"WATCHDOG_")
        || key.starts_with(b"LISTEN_")
        || key == b"NOTIFY_SOCKET"
}

/// Why a start failed: the errno when the system gave one, and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnError {
    pub errno: Option<i32>,
    pub message: String,
}

/// What the shell provides for one start.
pub struct SpawnContext<'a> {
    pub pipes: OutputPipes,
    /// The service's notify socket path (notify services).
    pub notify_socket: Option<&'a Path>,
    /// `cgroup.procs` of the service's cgroup, when there is one.
    pub cgroup_procs: Option<BorrowedFd<'a>>,
    /// The `nofile` limit the restarter was started with (soft, hard).
    pub base_nofile: (u64, u64),
    /// The spawn journal (`state_file::Journal`): the child records itself
    /// there before `exec`.
    pub journal: Option<BorrowedFd<'a>>,
    /// The program the spawner's child runs: the restarter's own binary
    /// ([`HELPER`]; an integration test names the built binary).
    pub helper: &'a OsStr,
    /// The write end of the exec status pipe ([`exec_status::ExecStatus`]),
    /// handed to the helper; `None`: the helper reports a failure only in
    /// the service's output (an exit 127 or 200).
    pub exec_status: Option<BorrowedFd<'a>>,
}

/// Resolves `user`/`group` through NSS (`getpwnam`, `getgrnam`,
/// `getgrouplist`): a blocking call (sss, LDAP, a slow `userdb`), so only
/// the lookup thread of `resolver.rs` makes it, when the service file is
/// loaded or reloaded and when a start follows a failed lookup.
pub fn resolve_identity(user: Option<&str>, group: Option<&str>) -> Result<Identity, SpawnError> {
    use nix::unistd::{Gid, Group, Uid, User};
    #[cfg(feature = "fault-inject")]
    nss_stall(user);
    let fail = |message: String| SpawnError {
        errno: None,
        message,
    };
    let mut id = Identity::default();
    // The name getgrouplist is asked about.
    let mut member: Option<OsString> = None;
    if let Some(name) = user {
        let numeric = name.parse::<u32>().ok();
        let found = match numeric {
            Some(n) => User::from_uid(Uid::from_raw(n)),
            None => User::from_name(name),
        };
        match found {
            Ok(Some(u)) => {
                id.uid = Some(u.uid.as_raw());
                id.gid = Some(u.gid.as_raw());
                id.home = Some(u.dir.into_os_string());
                // By name: the name as written (nix's `name` is lossy).
                let written = match numeric {
                    Some(_) => OsString::from(u.name),
                    None => OsString::from(name),
                };
                id.user = Some(written.clone());
                member = Some(written);
            }
            // A numeric uid without a passwd entry: that uid, and gid = uid
            // unless a group is given.
            Ok(None) if numeric.is_some() => {
                id.uid = numeric;
                id.gid = numeric;
            }
            Ok(None) => return Err(fail(format!("user {name:?} not found"))),
            Err(e) => {
                return Err(SpawnError {
                    errno: Some(e as i32),
                    message: format!("looking up user {name:?}: {e}"),
                })
            }
        }
    }
    if let Some(name) = group {
        let found = match name.parse::<u32>() {
            Ok(n) => {
                Group::from_gid(Gid::from_raw(n)).map(|g| Some(g.map_or(n, |g| g.gid.as_raw())))
            }
            Err(_) => Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())),
        };
        match found {
            Ok(Some(gid)) => id.gid = Some(gid),
            Ok(None) => return Err(fail(format!("group {name:?} not found"))),
            Err(e) => {
                return Err(SpawnError {
                    errno: Some(e as i32),
                    message: format!("looking up group {name:?}: {e}"),
                })
            }
        }
    }
    if let Some(gid) = id.gid {
        let groups = match &member {
            Some(name) => {
                let cname =
                    CString::new(name.as_bytes()).map_err(|_| fail("user name with NUL".into()))?;
                nix::unistd::getgrouplist(&cname, Gid::from_raw(gid))
                    .map_err(|e| SpawnError {
                        errno: Some(e as i32),
                        message: format!("groups of user {}: {e}", name.to_string_lossy()),
                    })?
                    .into_iter()
                    .map(|g| g.as_raw())
                    .collect()
            }
            None => vec![gid],
        };
        id.groups = Some(groups);
    }
    Ok(id)
}

/// The identity a start uses: the one resolved off the loop
/// (`resolver.rs`). No lookup is ever made here: the shell holds a start
/// until the identity is resolved, so anything else is a start failure.
fn identity_for(spec: &ServiceSpec) -> Result<Identity, SpawnError> {
    if spec.user.is_none() && spec.group.is_none() {
        return Ok(Identity::default());
    }
    match &spec.identity {
        Resolution::Resolved(id) => Ok(id.clone()),
        Resolution::Failed { errno, message } => Err(SpawnError {
            errno: *errno,
            message: message.clone(),
        }),
        Resolution::Pending => Err(SpawnError {
            errno: None,
            message: "user/group not resolved yet".into(),
        }),
    }
}

/// Test-only (cargo feature `fault-inject`): with
/// `TETHER_FAULT_NSS_STALL=NAME:SECS`, the lookup of user NAME blocks for
/// SECS seconds first, as one against a hung LDAP server would.
#[cfg(feature = "fault-inject")]
fn nss_stall(user: Option<&str>) {
    let (Some(u), Some(v)) = (user, std::env::var_os("TETHER_FAULT_NSS_STALL")) else {
        return;
    };
    let v = v.to_string_lossy().into_owned();
    if let Some((name, secs)) = v.split_once(':') {
        if let (true, Ok(s)) = (name == u, secs.parse::<u64>()) {
            std::thread::sleep(std::time::Duration::from_secs(s));
        }
    }
}

fn rlimit(resource: libc::__rlimit_resource_t, l: Limit) -> Rlimit {
    let v = match l {
        Limit::Unlimited => libc::RLIM_INFINITY,
        Limit::Value(v) => v as libc::rlim_t,
    };
    Rlimit {
        resource,
        soft: v,
        hard: v,
    }
}

/// The environment of the service's process, as bytes: the restarter's
/// own may hold anything the kernel command line held (`std::env::vars`
/// would panic on a value that is not UTF-8).
pub fn environment(
    spec: &ServiceSpec,
    notify_socket: Option<&Path>,
    home: Option<(&OsStr, &OsStr)>,
) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os()
        .filter(|(k, _)| !is_private(k.as_bytes()))
        .collect();
    if let Some((user, home)) = home {
        env.insert("HOME".into(), home.into());
        env.insert("USER".into(), user.into());
        env.insert("LOGNAME".into(), user.into());
    }
    if spec.notify != NotifyMode::None {
        if let Some(p) = notify_socket {
            env.insert("NOTIFY_SOCKET".into(), p.as_os_str().into());
        }
    }
    if let (NotifyMode::Watchdog, Some(t)) = (spec.notify, spec.watchdog_timeout) {
        env.insert("WATCHDOG_USEC".into(), t.as_micros().to_string().into());
    }
    for (k, v) in &spec.env {
        env.insert(k.into(), v.into());
    }
    env.into_iter().collect()
}

/// The soft `nofile` limit a service gets when its file sets none: the
/// conventional 1024 (a `select()`-based program breaks above it), or the
/// hard limit when that is lower.
pub const SERVICE_NOFILE_SOFT: u64 = 1024;

/// The program the spawner's child runs for every start: this executable
/// again, as [`EXEC_IN`] (see [`exec_in_main`]).
pub const HELPER: &str = "/proc/self/exe";
/// `argv[1]` of the helper run.
pub const EXEC_IN: &str = "--exec-in";
/// The helper's exit status when `chdir` fails (systemd's `EXIT_CHDIR`).
pub const EXIT_CHDIR: i32 = 200;
/// The helper's exit status when no candidate could be executed.
pub const EXIT_EXEC: i32 = 127;
/// The helper's `STATUS_FD` argument when it has no exec status pipe.
pub const NO_STATUS_FD: &str = "-";

/// Starts the service's process; returns its pid (also its process group
/// and session id).
///
/// Nothing here can hang on a file system: names were resolved off the
/// loop (`resolver.rs`), and the `working_directory`, the `PATH` search and
/// the program's `execve` are the helper's (see [`exec_in_main`]), a
/// process of its own by then — the spawner's child shares the restarter's
/// memory until its `execve`, so a `chdir` or an `execve` on a dead NFS
/// mount there would stop the event loop with it. A failure of the helper
/// comes back through the exec status pipe when the pid is reaped
/// ([`exec_status`]).
pub fn spawn(
    spawner: &mut Spawner,
    spec: &ServiceSpec,
    ctx: SpawnContext<'_>,
) -> Result<i32, SpawnError> {
    let identity = identity_for(spec)?;
    let mut rlimits = Vec::new();
    let l = &spec.limits;
    match l.nofile {
        Some(v) => rlimits.push(rlimit(libc::RLIMIT_NOFILE, v)),
        None => rlimits.push(Rlimit {
            resource: libc::RLIMIT_NOFILE,
            soft: SERVICE_NOFILE_SOFT.min(ctx.base_nofile.1) as libc::rlim_t,
            hard: ctx.base_nofile.1 as libc::rlim_t,
        }),
    }
    if let Some(v) = l.core {
        rlimits.push(rlimit(libc::RLIMIT_CORE, v));
    }
    if let Some(v) = l.nproc {
        rlimits.push(rlimit(libc::RLIMIT_NPROC, v));
    }
    if let Some(v) = l.memlock {
        rlimits.push(rlimit(libc::RLIMIT_MEMLOCK, v));
    }
    let home = match (&identity.user, &identity.home) {
        (Some(u), Some(h)) => Some((u.as_os_str(), h.as_os_str())),
        _ => None,
    };
    let env = environment(spec, ctx.notify_socket, home);
    let nul = |what: &str| SpawnError {
        errno: None,
        message: format!("{what} contains a NUL byte"),
    };
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(OsStr::new(DEFAULT_PATH), |(_, v)| v.as_os_str());
    let Some(exec0) = spec.exec.first() else {
        return Err(SpawnError {
            errno: None,
            message: "exec is empty".into(),
        });
    };
    let program = exec_candidates(OsStr::new(exec0), path_var);
    // HELPER --exec-in STATUS_FD DIR N CANDIDATE... ARGV...
    let status_fd = match ctx.exec_status {
        Some(_) => OsString::from(spawner.pass_fd_number().to_string()),
        None => OsString::from(NO_STATUS_FD),
    };
    let dir = spec
        .working_directory
        .as_deref()
        .map_or(OsString::new(), |d| d.as_os_str().to_owned());
    let mut argv: Vec<OsString> = vec![
        OsString::from("tether-restarter"),
        OsString::from(EXEC_IN),
        status_fd,
        dir,
        OsString::from(program.len().to_string()),
    ];
    argv.extend(program);
    argv.extend(spec.exec.iter().map(OsString::from));
    let candidates = vec![ctx.helper.to_owned()];
    let cstrings = |v: Vec<OsString>| -> Result<Vec<CString>, std::ffi::NulError> {
        v.into_iter().map(|s| CString::new(s.into_vec())).collect()
    };
    let candidates = cstrings(candidates).map_err(|_| nul("exec"))?;
    let argv = cstrings(argv).map_err(|_| nul("exec or working_directory"))?;
    let envp: Vec<CString> = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(|_| nul("env"))?;
    let exec = ExecSpec {
        candidates: &candidates,
        argv: &argv,
        envp: &envp,
        stdout: ctx.pipes.child_stdout.as_fd(),
        stderr: ctx.pipes.child_stderr.as_fd(),
    };
    let setup = ChildSetup {
        cgroup_procs: ctx.cgroup_procs.map(|fd| fd.as_raw_fd()),
        rlimits,
        umask: spec.umask.map(|m| m as libc::mode_t),
        groups: identity.groups,
        gid: identity.gid,
        uid: identity.uid,
        chdir: None,
        pass_fd: ctx.exec_status.map(|fd| fd.as_raw_fd()),
        record: ctx.journal.map(|fd| {
            let (prefix, suffix) =
                crate::state_file::Journal::line_parts(&spec.name, spec.stop_timeout);
            Record {
                fd: fd.as_raw_fd(),
                prefix,
                suffix,
            }
        }),
    };
    // The event loop reaps the process. An error here is the helper's
    // (a missing /proc) or a set-up step's (setuid): the program's are
    // reported later, through the exec status pipe.
    spawner.spawn(&exec, &setup).map_err(|e| {
        let errno = e.raw_os_error();
        // Only an execve fails so; the set-up steps (limits, groups, ids)
        // do not.
        let helper = matches!(errno, Some(libc::ENOENT | libc::EACCES | libc::ENOEXEC))
            .then(|| format!(" (the exec helper {})", Path::new(ctx.helper).display()))
            .unwrap_or_default();
        SpawnError {
            errno,
            message: format!("{exec0}: {}{helper}", strip_os_error(&e)),
        }
    })
}

/// The helper every service starts as (`tether-restarter --exec-in
/// STATUS_FD DIR N CANDIDATE... ARGV...`, run by the restarter's own
/// binary through [`HELPER`]): takes the exec status pipe's write end at
/// descriptor STATUS_FD (`-`: none) and marks it close-on-exec,
/// `chdir(DIR)` unless DIR is empty, then `execve` of the candidates in
/// order like the spawner (skipping `ENOENT`, `ENOTDIR`, `EACCES`), with
/// the environment it was given. It is already the service's process
/// (session, limits, user set; pid kept over the `execve`), so a `chdir` or
/// an `execve` that hangs hangs only it — the restarter stops it like any
/// service (`SIGKILL` reaches a process blocked in a FUSE or
/// `soft`/`intr` NFS request). A failure is one record in the status pipe
/// ([`exec_status`]: the restarter reports a failed start, as if the
/// spawner had failed) — or, when that cannot be written, a line on stderr
/// (the service's output) — and ends it with [`EXIT_CHDIR`] or
/// [`EXIT_EXEC`].
pub fn exec_in_main(args: &[OsString]) -> i32 {
    use exec_status::{Failure, Step};
    use std::os::unix::ffi::OsStringExt;
    let usage = || {
        eprintln!(
            "tether-restarter: {EXEC_IN} STATUS_FD DIR N CANDIDATE... ARGV... (used by the restarter itself)"
        );
        2
    };
    let (Some(status_fd), Some(dir), Some(n)) = (args.first(), args.get(1), args.get(2)) else {
        return usage();
    };
    let Some(n) = n.to_str().and_then(|n| n.parse::<usize>().ok()) else {
        return usage();
    };
    if args.len() < 3 + n + 1 || n == 0 {
        return usage();
    }
    // First of all, so no program ever inherits it.
    let status = match status_fd.to_str() {
        Some(NO_STATUS_FD) => None,
        Some(fd) => match fd.parse() {
            Ok(fd) => tether_common::sys::take_inherited_fd(fd).ok(),
            Err(_) => return usage(),
        },
        None => return usage(),
    };
    // Rust ignores SIGPIPE at start-up; an ignored signal survives execve.
    tether_common::sys::default_sigpipe();
    let (candidates, argv) = args[3..].split_at(n);
    let pid = std::process::id() as i32;
    // The record, else a line in the service's output.
    let fail = |step: Step, errno: nix::errno::Errno, line: String| -> i32 {
        let failure = Failure {
            step,
            errno: errno as i32,
        };
        let sent = status
            .as_ref()
            .is_some_and(|fd| exec_status::report(fd.as_fd(), pid, failure).is_ok());
        if !sent {
            eprintln!("tether-restarter: {line}: {}", errno.desc());
        }
        match step {
            Step::Chdir => EXIT_CHDIR,
            Step::Exec => EXIT_EXEC,
        }
    };
    if !dir.is_empty() {
        if let Err(e) = nix::unistd::chdir(Path::new(dir)) {
            let line = format!("working_directory {}", Path::new(dir).display());
            return fail(Step::Chdir, e, line);
        }
    }
    let to_c = |s: &OsString| CString::new(s.clone().into_vec()).ok();
    let Some(argv) = argv.iter().map(to_c).collect::<Option<Vec<CString>>>() else {
        return usage();
    };
    let mut first = nix::errno::Errno::ENOENT;
    let mut eacces = false;
    for c in candidates {
        let Some(path) = to_c(c) else { continue };
        let e = match nix::unistd::execv(&path, &argv) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        match e {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => {}
            nix::errno::Errno::EACCES => eacces = true,
            other => {
                first = other;
                break;
            }
        }
    }
    if first == nix::errno::Errno::ENOENT && eacces {
        first = nix::errno::Errno::EACCES;
    }
    let program = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    fail(Step::Exec, first, program)
}

/// The paths `execve` is tried on for `program`: itself when it holds a
/// `/`, else `DIR/program` for each entry of `path` (empty: `.`).
pub fn exec_candidates(program: &OsStr, path: &OsStr) -> Vec<OsString> {
    let program = program.as_bytes();
    if program.contains(&b'/') {
        return vec![OsStr::from_bytes(program).to_owned()];
    }
    path.as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            let mut dir = if dir.is_empty() { &b"."[..] } else { dir };
            while dir.len() > 1 && dir.ends_with(b"/") {
                dir = &dir[..dir.len() - 1];
            }
            let mut p = dir.to_vec();
            if p != b"/" {
                p.push(b'/');
            }
            p.extend_from_slice(program);
            OsString::from_vec(p)
        })
        .collect()
}

/// `No such file or directory (os error 2)` → `No such file or directory`
/// (the errno is reported separately).
fn strip_os_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Descriptors the restarter holds for each service: the read ends of its
/// two output pipes and a copy of their write ends (kept so no line is
/// lost between two runs; output.rs).
pub const FDS_PER_SERVICE: u64 = 4;
/// Descriptors the restarter keeps for itself whatever the number of
/// services: stdio, heartbeats, epoll, signalfd, the spawner's slots, the
/// journal, syslog, the control socket and up to 256 control clients, and
/// those a loop turn opens for a moment (a start's two pipe copies, the
/// state file, a `/proc` read). Under a small limit, a quarter of it.
pub const FDS_RESERVED: u64 = 300;

/// The descriptors kept for the restarter under `limit` (see
/// [`FDS_RESERVED`]).
pub fn fds_reserved(limit: u64) -> u64 {
    FDS_RESERVED.min(limit / 4)
}

/// Whether a service that holds no descriptors yet may take its own:
/// `false` once the lowest free descriptor number reaches the reserve
/// ([`fds_reserved`]) below `limit`. Descriptors are allocated lowest
/// first, so then at most the reserve is left — kept for the state file,
/// the journal, control clients and the spawner: without it a storm of
/// failing starts would leave the restarter unable to write its state (and
/// a restarter that then died would leave duplicates). A refused start is
/// an `EMFILE` start failure, retried per policy.
pub fn fds_left_for_a_service(probe: BorrowedFd<'_>, limit: u64) -> std::io::Result<()> {
    let emfile = || std::io::Error::from_raw_os_error(libc::EMFILE);
    let lowest = probe.try_clone_to_owned()?;
    if lowest.as_raw_fd() as u64 + fds_reserved(limit) >= limit {
        return Err(emfile());
    }
    Ok(())
}

/// How many of a set of services fit under the restarter's descriptor
/// limit ([`FDS_PER_SERVICE`], one more with a notify socket, one more with
/// a cgroup, [`FDS_RESERVED`] besides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdBudget {
    pub services: usize,
    /// Services that fit, in the set's order.
    pub fit: usize,
    /// Descriptors the whole set needs.
    pub need: u64,
    /// The soft `RLIMIT_NOFILE` of the restarter.
    pub limit: u64,
}

impl FdBudget {
    pub fn fits(&self) -> bool {
        self.fit == self.services
    }
}

impl std::fmt::Display for FdBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.fits() {
            write!(
                f,
                "descriptors: {} service(s) need about {} of RLIMIT_NOFILE {}",
                self.services, self.need, self.limit
            )
        } else {
            write!(
                f,
                "descriptors: RLIMIT_NOFILE {} fits {} of {} service(s) (they need about {}: {FDS_PER_SERVICE} per service, +1 with a notify socket, +1 with a cgroup, {} kept for the restarter); the others fail to start with EMFILE until it is raised ([init] nofile, or prlimit)",
                self.limit, self.fit, self.services, self.need, fds_reserved(self.limit)
            )
        }
    }
}

/// The [`FdBudget`] of `specs` under `limit`.
pub fn fd_budget(specs: &[ServiceSpec], cgroups: bool, limit: u64) -> FdBudget {
    let mut need = fds_reserved(limit);
    let mut fit = 0;
    for spec in specs {
        need += FDS_PER_SERVICE + u64::from(spec.notify != NotifyMode::None) + u64::from(cgroups);
        if need <= limit {
            fit += 1;
        }
    }
    FdBudget {
        services: specs.len(),
        fit,
        need,
        limit,
    }
}

/// The soft and hard `nofile` limits of this process.
pub fn current_nofile() -> (u64, u64) {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((1024, 4096))
}

/// Raises this process's soft `nofile` limit to its hard limit (the
/// restarter holds several descriptors per service).
pub fn raise_nofile() -> std::io::Result<()> {
    let (_, hard) = current_nofile();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`.
pub fn proc_stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    stat_field_bytes(&stat, n)
}

/// [`stat_field`] on the raw bytes: the command name (field 2) is whatever
/// the process set (`prctl(PR_SET_NAME)`, its file name), not necessarily
/// UTF-8; the fields after it are ASCII.
pub fn stat_field_bytes(stat: &[u8], n: usize) -> Option<String> {
    if n < 3 {
        return None;
    }
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(n - 3).map(str::to_string)
}

/// Field `n` (1-based, 3 or more) of a `/proc/PID/stat` line: counted from
/// the last `)`, since the command name may hold spaces and parentheses.
pub fn stat_field(stat: &str, n: usize) -> Option<String> {
    stat_field_bytes(stat.as_bytes(), n)
}

/// The process's start time (`/proc/PID/stat` field 22, clock ticks since
/// boot): with the pid, it names one process for good.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    proc_stat_field(pid, 22)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "42 (a (weird) name) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        assert_eq!(stat_field(line, 3).as_deref(), Some("S"));
        assert_eq!(stat_field(line, 5).as_deref(), Some("42"));
        assert_eq!(stat_field(line, 22).as_deref(), Some("123456"));
        assert!(proc_start_time(std::process::id() as i32).is_some());
        // A command name that is not UTF-8 (a process may set any bytes).
        let raw = b"42 (\xff\xfe) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0";
        assert_eq!(stat_field_bytes(raw, 22).as_deref(), Some("99"));
    }

    #[test]
    fn environment_drops_chain_variables_and_adds_the_services() {
        let mut spec = ServiceSpec::new("w", &["/bin/true"]);
        spec.notify = NotifyMode::Watchdog;
        spec.watchdog_timeout = Some(std::time::Duration::from_millis(1500));
        spec.env.insert("A".into(), "1".into());
        let env = environment(
            &spec,
            Some(Path::new("/run/tether/notify/w.sock")),
            Some((OsStr::new("www"), OsStr::new("/var/www"))),
        );
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .and_then(|(_, v)| v.to_str())
        };
        assert_eq!(get("NOTIFY_SOCKET"), Some("/run/tether/notify/w.sock"));
        assert_eq!(get("WATCHDOG_USEC"), Some("1500000"));
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("HOME"), Some("/var/www"));
        assert!(env
            .iter()
            .all(|(k, _)| !k.as_bytes().starts_with(b"TETHER_")));
    }

    #[test]
    fn the_descriptor_budget_counts_each_services_descriptors() {
        let mut specs: Vec<ServiceSpec> = (0..10)
            .map(|i| ServiceSpec::new(&format!("s{i}"), &["/bin/true"]))
            .collect();
        specs[0].notify = NotifyMode::Ready;
        let b = fd_budget(&specs, false, 20_000);
        assert_eq!(b.need, FDS_RESERVED + 10 * FDS_PER_SERVICE + 1);
        assert!(b.fits(), "{b}");
        // 10,000 services under 20,000: the case of issue 12.
        let many: Vec<ServiceSpec> = (0..10_000)
            .map(|i| ServiceSpec::new(&format!("s{i}"), &["/bin/true"]))
            .collect();
        let b = fd_budget(&many, false, 20_000);
        assert_eq!(b.fit as u64, (20_000 - FDS_RESERVED) / FDS_PER_SERVICE);
        assert!(!b.fits());
        assert!(b.to_string().contains("fits 4925 of 10000"), "{b}");
        // A small limit keeps a quarter for the restarter.
        assert_eq!(fds_reserved(48), 12);
        assert_eq!(fd_budget(&specs, false, 600).need, 150 + 41);
    }

    #[test]
    fn no_service_takes_the_descriptors_kept_for_the_restarter() {
        let probe = std::fs::File::open("/dev/null").unwrap();
        let me = current_nofile().0;
        assert!(fds_left_for_a_service(probe.as_fd(), me).is_ok());
        // A limit whose reserve starts below the lowest free number.
        let lowest = probe.as_fd().try_clone_to_owned().unwrap().as_raw_fd() as u64;
        let e = fds_left_for_a_service(probe.as_fd(), lowest + 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMFILE));
    }

    #[test]
    fn bare_program_names_are_searched_in_path() {
        let c = |p: &str, path: &str| exec_candidates(OsStr::new(p), OsStr::new(path));
        assert_eq!(c("/bin/x", "/a:/b"), vec!["/bin/x"]);
        assert_eq!(c("./x", "/a"), vec!["./x"]);
        assert_eq!(c("x", "/a/::/b"), vec!["/a/x", "./x", "/b/x"]);
        assert_eq!(c("x", "/:///"), vec!["/x", "/x"]);
        // A PATH entry that is not UTF-8 is kept byte for byte.
        let odd = OsStr::from_bytes(b"/\xff");
        assert_eq!(
            exec_candidates(OsStr::new("x"), odd),
            vec![OsStr::from_bytes(b"/\xff/x").to_owned()]
        );
    }

    #[test]
    fn unknown_user_is_a_lookup_failure() {
        let e = resolve_identity(Some("no-such-user-tether"), None).unwrap_err();
        assert!(e.message.contains("not found"), "{e:?}");
    }
}
