//! How long starting one process keeps the caller busy, against the number
//! of services whose descriptors the caller holds (as the restarter does:
//! per service two output pipes, both ends kept, and a notify socket, the
//! read ends in an epoll set — five descriptors): tether's `Spawner` beside
//! `std::process::Command`, both as it forks (what the restarter used
//! before: a set-up step between fork and exec forces `fork`; here `uid` is
//! set, which does the same) and through glibc's `posix_spawn` (its
//! default, which still copies the descriptor table and closes every
//! close-on-exec descriptor at `exec`).
//!
//!   bench_spawn PROGRAM [RUNS] [SERVICES...]   defaults: 500 runs; 0 100 1000
//!
//! With `BENCH_RECORD=1` the Spawner's child also writes its record line
//! (the restarter's spawn journal: pid and start time from
//! `/proc/self/stat`) to a file opened with `O_APPEND` under /tmp.
//!
//! PROGRAM is started with the argument `0` and stdout/stderr on /dev/null,
//! then killed and reaped (outside the timed part). Prints p50/p99/max of
//! the time `spawn` took, in microseconds. Figures, not assertions.
//!
//! The restarter starts every service through its exec helper (issue 12
//! item 5: `tether-restarter --exec-in STATUS_FD DIR N CANDIDATE...
//! ARGV...`, which execs the program), so the `Spawner` is measured both
//! ways: exec'ing PROGRAM itself, and exec'ing the helper (the restarter
//! binary named by `BENCH_HELPER`, default `tether-restarter` beside this
//! program) with a status pipe. When PROGRAM is `bench_blocker` (it sends
//! its first `CLOCK_MONOTONIC` reading to `BENCH_SOCK`), the rows also give
//! the time from the call to `spawn` until the program runs.

use nix::fcntl::OFlag;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tether_common::sys::child::{ChildSetup, ExecSpec, Record, Spawner};

fn stop(pid: i32) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)].as_micros();
    format!(
        "p50 {:>5} µs  p99 {:>5} µs  max {:>6} µs",
        at(50),
        at(99),
        v[v.len() - 1].as_micros()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(program) = args.first().cloned() else {
        eprintln!("usage: bench_spawn PROGRAM [RUNS] [HELD...]");
        std::process::exit(2);
    };
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(500);
    let mut services: Vec<usize> = args.iter().skip(2).filter_map(|s| s.parse().ok()).collect();
    if services.is_empty() {
        services = vec![0, 100, 1000];
    }
    let uid = nix::unistd::getuid().as_raw();
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    // As in the restarter: the spawner before the services' descriptors.
    let mut spawner = Spawner::new().expect("spawner");
    let null = std::fs::File::options()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let c = |s: &str| CString::new(s).expect("no NUL");
    let candidates = [c(&program)];
    let argv = [c(&program), c("0")];
    let helper = std::env::var_os("BENCH_HELPER")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.join("tether-restarter"))
        })
        .filter(|p| p.exists());
    // The status pipe of the helpers (the restarter's exec_status): made
    // once, non-blocking, its write end handed to each helper.
    let (_status_r, status_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).expect("status pipe");
    let helper_candidates = helper
        .as_ref()
        .map(|h| [CString::new(h.as_os_str().as_encoded_bytes()).expect("no NUL")]);
    let pass = spawner.pass_fd_number().to_string();
    let helper_argv = [
        c("tether-restarter"),
        c("--exec-in"),
        c(&pass),
        c(""),
        c("1"),
        c(&program),
        c(&program),
        c("0"),
    ];
    // Where bench_blocker says it runs.
    let sock_dir = std::env::temp_dir().join(format!("bench_spawn_sock.{}", std::process::id()));
    std::fs::create_dir_all(&sock_dir).expect("temp dir");
    let sock_path = sock_dir.join("running.sock");
    let running_sock = UnixDatagram::bind(&sock_path).expect("bind");
    running_sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let envp = [CString::new(format!("BENCH_SOCK={}", sock_path.display())).expect("no NUL")];
    match &helper {
        Some(h) => println!("exec helper: {}", h.display()),
        None => println!("exec helper: none found (set BENCH_HELPER): helper rows skipped"),
    }
    println!(
        "starting {program} {runs} times per row (time spent in spawn; and until the program runs)"
    );
    for &n in &services {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
        let mut held: Vec<OwnedFd> = Vec::with_capacity(5 * n);
        let dir = std::env::temp_dir().join(format!("bench_spawn.{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for i in 0..n {
            for _ in 0..2 {
                let (r, w) =
                    nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).expect("pipe");
                epoll
                    .add(&r, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                    .expect("epoll add");
                held.push(r);
                held.push(w);
            }
            let sock = UnixDatagram::bind(dir.join(format!("{i}.sock"))).expect("bind");
            epoll
                .add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                .expect("epoll add");
            held.push(sock.into());
        }
        let exec = ExecSpec {
            candidates: &candidates,
            argv: &argv,
            envp: &envp,
            stdout: null.as_fd(),
            stderr: null.as_fd(),
        };
        let helper_exec = helper_candidates.as_ref().map(|hc| ExecSpec {
            candidates: hc,
            argv: &helper_argv,
            envp: &envp,
            stdout: null.as_fd(),
            stderr: null.as_fd(),
        });
        let record_file = std::env::var_os("BENCH_RECORD").map(|_| {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(
                    std::env::temp_dir().join(format!("bench-spawn-record-{}", std::process::id())),
                )
                .expect("record file")
        });
        let setup = ChildSetup {
            record: record_file.as_ref().map(|f| Record {
                fd: std::os::fd::AsRawFd::as_raw_fd(f),
                prefix: b"bench ".to_vec(),
                suffix: b" 0\n".to_vec(),
            }),
            ..ChildSetup::default()
        };
        let helper_setup = ChildSetup {
            pass_fd: Some(std::os::fd::AsRawFd::as_raw_fd(&status_w)),
            ..setup.clone()
        };
        let mut ours = Vec::with_capacity(runs);
        let mut ours_running = Vec::with_capacity(runs);
        let mut via_helper = Vec::with_capacity(runs);
        let mut via_helper_running = Vec::with_capacity(runs);
        let mut forked = Vec::with_capacity(runs);
        let mut spawned = Vec::with_capacity(runs);
        let command = || {
            let mut cmd = Command::new(&program);
            cmd.arg("0")
                .env_clear()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            cmd
        };
        for _ in 0..runs {
            let t = Instant::now();
            let t0 = mono_ns();
            let pid = spawner.spawn(&exec, &setup).expect("spawn");
            ours.push(t.elapsed());
            if let Some(d) = running_after(&running_sock, t0) {
                ours_running.push(d);
            }
            stop(pid);
            if let Some(hexec) = &helper_exec {
                let t = Instant::now();
                let t0 = mono_ns();
                let pid = spawner.spawn(hexec, &helper_setup).expect("spawn");
                via_helper.push(t.elapsed());
                if let Some(d) = running_after(&running_sock, t0) {
                    via_helper_running.push(d);
                }
                stop(pid);
            }
            let mut cmd = command();
            cmd.uid(uid);
            let t = Instant::now();
            let mut child = cmd.spawn().expect("Command::spawn (fork)");
            forked.push(t.elapsed());
            let _ = child.kill();
            let _ = child.wait();
            let mut cmd = command();
            let t = Instant::now();
            let mut child = cmd.spawn().expect("Command::spawn (posix_spawn)");
            spawned.push(t.elapsed());
            let _ = child.kill();
            let _ = child.wait();
        }
        let fds = held.len();
        if let Some(f) = &record_file {
            let _ = f.set_len(0);
        }
        println!(
            "{n:>5} services ({fds:>4} fds)  Spawner:                     {}",
            summary(ours)
        );
        if !via_helper.is_empty() {
            println!(
                "{n:>5} services ({fds:>4} fds)  Spawner, exec helper:        {}",
                summary(via_helper)
            );
        }
        if !ours_running.is_empty() {
            println!(
                "{n:>5} services ({fds:>4} fds)  until running, direct:       {}",
                summary(ours_running)
            );
        }
        if !via_helper_running.is_empty() {
            println!(
                "{n:>5} services ({fds:>4} fds)  until running, exec helper:  {}",
                summary(via_helper_running)
            );
        }
        println!(
            "{n:>5} services ({fds:>4} fds)  Command::spawn, fork:        {}",
            summary(forked)
        );
        println!(
            "{n:>5} services ({fds:>4} fds)  Command::spawn, posix_spawn: {}",
            summary(spawned)
        );
        drop(held);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&sock_dir);
}

/// `CLOCK_MONOTONIC` in nanoseconds (what bench_blocker reports).
fn mono_ns() -> u128 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128
}

/// The time from `t0` until the program reported it runs (bench_blocker's
/// `INDEX MONO_NS` datagram); `None` when it says nothing within 500 ms.
fn running_after(sock: &UnixDatagram, t0: u128) -> Option<Duration> {
    let mut buf = [0u8; 128];
    let n = sock.recv(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let ns: u128 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns.saturating_sub(t0) as u64))
}
