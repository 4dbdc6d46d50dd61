//! `spawn::spawn` with the real exec helper (this package's
//! `tether-restarter` binary, as the restarter runs itself through
//! `/proc/self/exe`): the program runs, its failures come back through the
//! exec status pipe with the errno and the message a synchronous failure
//! gave, identity and limits are applied.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::AsFd;
use tether_common::sys::child::Spawner;
use tether_restarter::output::ServiceOutput;
use tether_restarter::service::{Identity, Resolution, ServiceSpec};
use tether_restarter::spawn::exec_status::{exit_event, ExecStatus, Failure, Step};
use tether_restarter::spawn::{
    current_nofile, resolve_identity, spawn, SpawnContext, SpawnError, EXIT_CHDIR, EXIT_EXEC,
};
use tether_restarter::supervisor::{Event, ExitStatus};

const HELPER: &str = env!("CARGO_BIN_EXE_tether-restarter");

/// One start of `spec`: its result, its output, and the status pipe (none
/// with `status == false`).
struct Start {
    pid: Result<i32, SpawnError>,
    out: ServiceOutput,
    status: Option<ExecStatus>,
    pass_fd: i32,
}

fn start_with(spec: &ServiceSpec, nofile: (u64, u64), status: bool) -> Start {
    let (out, pipes) = ServiceOutput::new("x").unwrap();
    let exec_status = status.then(|| ExecStatus::new().unwrap());
    let mut spawner = Spawner::new().unwrap();
    let ctx = SpawnContext {
        pipes,
        notify_socket: None,
        cgroup_procs: None,
        base_nofile: nofile,
        journal: None,
        helper: OsStr::new(HELPER),
        exec_status: exec_status.as_ref().map(|s| s.write_end()),
    };
    let pid = spawn(&mut spawner, spec, ctx);
    Start {
        pid,
        out,
        status: exec_status,
        pass_fd: spawner.pass_fd_number(),
    }
}

fn start(spec: &ServiceSpec, nofile: (u64, u64)) -> Start {
    start_with(spec, nofile, true)
}

/// Waits for the process; returns its exit status, everything it wrote to
/// stdout/stderr, and the event the restarter's reap makes of it.
fn run_to_end(spec: &ServiceSpec, mut s: Start) -> (ExitStatus, String, Event) {
    let pid = s.pid.expect("spawned");
    let status = match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap() {
        nix::sys::wait::WaitStatus::Exited(_, c) => ExitStatus::Code(c),
        nix::sys::wait::WaitStatus::Signaled(_, sig, core) => ExitStatus::Signal {
            signal: sig as i32,
            core,
        },
        other => panic!("{other:?}"),
    };
    let failure = s.status.as_mut().and_then(|st| st.take(pid));
    let event = exit_event(pid, status, failure, Some(spec));
    s.out.close_write_ends();
    let mut text = String::new();
    for fd in s.out.fds() {
        let fd = fd.try_clone_to_owned().unwrap();
        tether_common::sys::set_nonblocking(fd.as_fd(), false).unwrap();
        std::fs::File::from(fd).read_to_string(&mut text).unwrap();
    }
    (status, text, event)
}

fn exec_failed(event: &Event) -> (Option<i32>, &str) {
    match event {
        Event::ExecFailed { errno, message, .. } => (*errno, message.as_str()),
        other => panic!("not an exec failure: {other:?}"),
    }
}

#[test]
fn a_bare_name_runs_from_the_services_path() {
    let mut spec = ServiceSpec::new("x", &["echo", "hi"]);
    spec.env.insert("PATH".into(), "/nonexistent:/bin".into());
    let s = start(&spec, current_nofile());
    let (status, text, event) = run_to_end(&spec, s);
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(text, "hi\n");
    assert!(matches!(event, Event::Exited { .. }), "{event:?}");
}

#[test]
fn a_missing_binary_is_a_failed_start_with_its_errno() {
    let spec = ServiceSpec::new("x", &["/nonexistent/binary"]);
    let s = start(&spec, current_nofile());
    let (status, text, event) = run_to_end(&spec, s);
    assert_eq!(status, ExitStatus::Code(EXIT_EXEC));
    assert_eq!(
        exec_failed(&event),
        (
            Some(libc::ENOENT),
            "/nonexistent/binary: No such file or directory"
        )
    );
    // Reported once: the record, not also a line in the output.
    assert_eq!(text, "");
    // A bare name found nowhere in PATH: the same.
    let mut spec = ServiceSpec::new("x", &["no-such-program-tether"]);
    spec.env.insert("PATH".into(), "/nonexistent:/bin".into());
    let (_, _, event) = run_to_end(&spec, start(&spec, current_nofile()));
    assert_eq!(
        exec_failed(&event),
        (
            Some(libc::ENOENT),
            "no-such-program-tether: No such file or directory"
        )
    );
}

#[test]
fn a_file_that_cannot_be_executed_is_eacces_or_enoexec() {
    let dir = std::env::temp_dir().join(format!("tether-spawn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text_file = dir.join("plain");
    std::fs::write(&text_file, "just text\n").unwrap();
    let run = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&text_file, std::fs::Permissions::from_mode(mode)).unwrap();
        let spec = ServiceSpec::new("x", &[text_file.to_str().unwrap()]);
        let (_, _, event) = run_to_end(&spec, start(&spec, current_nofile()));
        exec_failed(&event).0
    };
    assert_eq!(run(0o644), Some(libc::EACCES));
    // Executable but no recognised format: not handed to /bin/sh.
    assert_eq!(run(0o755), Some(libc::ENOEXEC));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_working_directory_is_a_failed_start() {
    let mut spec = ServiceSpec::new("x", &["/bin/true"]);
    spec.working_directory = Some("/nonexistent/tether".into());
    let (status, text, event) = run_to_end(&spec, start(&spec, current_nofile()));
    assert_eq!(status, ExitStatus::Code(EXIT_CHDIR));
    assert_eq!(
        exec_failed(&event),
        (
            Some(libc::ENOENT),
            "working_directory /nonexistent/tether: No such file or directory"
        )
    );
    assert_eq!(text, "");
    // A directory that exists: entered.
    let mut spec = ServiceSpec::new("x", &["/bin/pwd"]);
    spec.working_directory = Some("/usr".into());
    let (status, text, _) = run_to_end(&spec, start(&spec, current_nofile()));
    assert_eq!((status, text.as_str()), (ExitStatus::Code(0), "/usr\n"));
}

#[test]
fn without_a_status_pipe_the_failure_is_a_line_in_the_output() {
    let spec = ServiceSpec::new("x", &["/nonexistent/binary"]);
    let (status, text, event) = run_to_end(&spec, start_with(&spec, current_nofile(), false));
    assert_eq!(status, ExitStatus::Code(EXIT_EXEC));
    assert_eq!(
        text,
        "tether-restarter: /nonexistent/binary: No such file or directory\n"
    );
    assert!(matches!(event, Event::Exited { .. }), "{event:?}");
}

#[test]
fn a_status_pipe_whose_reader_is_gone_falls_back_to_the_output() {
    // The restarter died (or exec'd anew) between the spawn and the
    // failure: the helper gets EPIPE, not SIGPIPE.
    let mut spec = ServiceSpec::new("x", &["/nonexistent/binary"]);
    spec.working_directory = Some("/".into());
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    drop(r);
    let (out, pipes) = ServiceOutput::new("x").unwrap();
    let mut spawner = Spawner::new().unwrap();
    let ctx = SpawnContext {
        pipes,
        notify_socket: None,
        cgroup_procs: None,
        base_nofile: current_nofile(),
        journal: None,
        helper: OsStr::new(HELPER),
        exec_status: Some(w.as_fd()),
    };
    let pid = spawn(&mut spawner, &spec, ctx);
    let s = Start {
        pid,
        out,
        status: None,
        pass_fd: spawner.pass_fd_number(),
    };
    let (status, text, _) = run_to_end(&spec, s);
    assert_eq!(status, ExitStatus::Code(EXIT_EXEC), "not killed by SIGPIPE");
    assert_eq!(
        text,
        "tether-restarter: /nonexistent/binary: No such file or directory\n"
    );
}

#[test]
fn the_program_never_inherits_the_status_pipe() {
    let spec = ServiceSpec::new(
        "x",
        &[
            "/bin/sh",
            "-c",
            "for f in /proc/$$/fd/*; do echo ${f##*/} $(readlink $f); done",
        ],
    );
    let s = start(&spec, current_nofile());
    let ino = nix::sys::stat::fstat(s.status.as_ref().unwrap().write_end())
        .unwrap()
        .st_ino;
    let (pass, pipe) = (s.pass_fd, format!("pipe:[{ino}]"));
    let (status, text, _) = run_to_end(&spec, s);
    assert_eq!(status, ExitStatus::Code(0));
    let fds: Vec<(i32, &str)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.parse().unwrap(), t))
        .collect();
    for n in [0, 1, 2] {
        assert!(fds.iter().any(|&(fd, _)| fd == n), "{text}");
    }
    assert!(
        fds.iter().all(|&(_, target)| target != pipe),
        "the status pipe (slot {pass}) reached the program: {text}"
    );
}

#[test]
fn a_start_uses_the_identity_resolved_at_load_without_asking_nss() {
    // A name NSS does not know, resolved (at "load") to uid/gid 65534:
    // the start must use the stored ids, not look the name up again.
    let mut spec = ServiceSpec::new("x", &["/bin/sh", "-c", "id -u; id -g; echo $USER"]);
    spec.user = Some("no-such-user-tether".into());
    spec.identity = Resolution::Resolved(Identity {
        uid: Some(65534),
        gid: Some(65534),
        groups: Some(vec![65534]),
        home: Some("/nonexistent".into()),
        user: Some("no-such-user-tether".into()),
    });
    let s = start(&spec, current_nofile());
    assert!(s.pid.is_ok(), "no lookup at start: {:?}", s.pid);
    let (status, text, _) = run_to_end(&spec, s);
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(text, "65534\n65534\nno-such-user-tether\n");
    // A lookup that failed (or is not done) is a start failure here,
    // never a lookup (the shell asks the resolver and holds the start).
    spec.identity = Resolution::Failed {
        errno: None,
        message: "down".into(),
    };
    let e = start(&spec, current_nofile()).pid.unwrap_err();
    assert_eq!(e.message, "down");
    spec.identity = Resolution::Pending;
    assert!(start(&spec, current_nofile()).pid.is_err());
}

#[test]
fn child_runs_as_the_given_user_in_its_own_session() {
    let mut spec = ServiceSpec::new(
        "x",
        &[
            "/bin/sh",
            "-c",
            "id -u; id -g; cut -d' ' -f6 /proc/$$/stat; echo $$; ulimit -n; ulimit -Hn",
        ],
    );
    spec.user = Some("nobody".into());
    spec.identity = Resolution::Resolved(resolve_identity(Some("nobody"), None).unwrap());
    let s = start(&spec, (20000, 20000));
    let pid = *s.pid.as_ref().unwrap();
    let (status, text, _) = run_to_end(&spec, s);
    assert_eq!(status, ExitStatus::Code(0), "{text}");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], nobody.uid.to_string());
    assert_eq!(lines[1], nobody.gid.to_string());
    assert_eq!(lines[2], lines[3], "own session: {text}");
    assert_eq!(
        lines[3],
        pid.to_string(),
        "the helper's pid is the program's"
    );
    assert_eq!(lines[4], "1024", "the conventional soft nofile limit");
    assert_eq!(lines[5], "20000", "the hard limit unchanged");
}

#[test]
fn a_failure_record_is_matched_to_its_pid() {
    // Two failing starts on one pipe: each pid gets its own record.
    let mut st = ExecStatus::new().unwrap();
    let mut spawner = Spawner::new().unwrap();
    let mut pids = Vec::new();
    let mut outs = Vec::new();
    for (i, dir) in ["/nonexistent/a", ""].iter().enumerate() {
        let mut spec = ServiceSpec::new("x", &["/nonexistent/binary"]);
        if !dir.is_empty() {
            spec.working_directory = Some(dir.into());
        }
        let (out, pipes) = ServiceOutput::new("x").unwrap();
        let ctx = SpawnContext {
            pipes,
            notify_socket: None,
            cgroup_procs: None,
            base_nofile: current_nofile(),
            journal: None,
            helper: OsStr::new(HELPER),
            exec_status: Some(st.write_end()),
        };
        pids.push((i, spawn(&mut spawner, &spec, ctx).unwrap()));
        outs.push(out);
    }
    for &(_, pid) in &pids {
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    }
    let mut step = |pid| st.take(pid).map(|f: Failure| f.step);
    assert_eq!(step(pids[1].1), Some(Step::Exec));
    assert_eq!(step(pids[0].1), Some(Step::Chdir));
    assert_eq!(st.pending(), 0);
}
