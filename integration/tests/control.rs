//! The control socket against a real `tether-restarter`: who may change
//! state, how bad requests are answered, and that a storm of clients (and
//! stuck ones) does not delay the restarter's heartbeats.
//!
//! Each test starts its own restarter in a scratch directory with
//! `TETHER_FDS=init=3,watchdog=4` heartbeat pipes held by the test, and
//! talks to it with the real `tetherctl` or raw sockets.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tether_integration::bins::{bin, TempDir};
use tether_integration::svc::{self, Restarter};

/// Half the control request deadline: a heartbeat gap this long means the
/// loop waited on a client.
const STALL: Duration = Duration::from_secs(1);
const NOBODY: u32 = 65534;
const T: Duration = Duration::from_secs(10);
/// Pause between two requests of one storm client.
const PACE: Duration = Duration::from_millis(50);

/// A restarter (`svc::Restarter`, beat interval 100 ms) whose `init`
/// heartbeat pipe is read by a thread recording when each beat arrives.
struct Beating {
    r: Restarter,
    beats: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    recorder: Option<JoinHandle<()>>,
    // The read end of the watchdog pipe stays open, as watchdogd's would.
    _watchdog_read: OwnedFd,
}

impl Beating {
    fn start(label: &str, services: &[(&str, &str)]) -> Beating {
        let (init_read, init_write) = svc::pipe();
        let (watchdog_read, watchdog_write) = svc::pipe();
        let mut b = Restarter::builder(label)
            .env("TETHER_FDS", "init=3,watchdog=4")
            .fd(init_write, 3)
            .fd(watchdog_write, 4);
        for (name, text) in services {
            b = b.service(name, text);
        }
        let r = b.start();
        let beats = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = {
            let (beats, stop) = (beats.clone(), stop.clone());
            std::thread::spawn(move || record_beats(init_read, &beats, &stop))
        };
        Beating {
            r,
            beats,
            stop,
            recorder: Some(recorder),
            _watchdog_read: watchdog_read,
        }
    }

    /// Beats that arrived within `[from, to]`, plus the last one before.
    fn beats_between(&self, from: Instant, to: Instant) -> Vec<Instant> {
        let beats = self.beats.lock().unwrap();
        let before = beats.iter().rev().find(|&&t| t < from).copied();
        before
            .into_iter()
            .chain(beats.iter().copied().filter(|&t| t >= from && t <= to))
            .collect()
    }
}

impl Drop for Beating {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.recorder.take() {
            let _ = t.join();
        }
    }
}

fn socket(r: &Restarter) -> PathBuf {
    r.run.join("control.sock")
}

/// Records the arrival time of every byte on the (non-blocking) pipe.
fn record_beats(read: OwnedFd, beats: &Mutex<Vec<Instant>>, stop: &AtomicBool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(50u16)).unwrap_or(0) == 0 {
            continue;
        }
        let now = Instant::now();
        match nix::unistd::read(&read, &mut buf) {
            // One beat per byte; bytes read together arrived together.
            Ok(n) => {
                let mut beats = beats.lock().unwrap();
                let len = beats.len();
                beats.resize(len + n, now);
            }
            Err(_) => continue,
        }
    }
}

fn tetherctl(run_dir: &Path, args: &[&str], as_nobody: bool) -> Output {
    let mut cmd = Command::new(bin("tetherctl"));
    cmd.arg("--run-dir").arg(run_dir).args(args);
    if as_nobody {
        // std clears the supplementary groups when it changes the uid.
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd.output().expect("run tetherctl")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const SLEEPER: &str = r#"exec = ["/bin/sleep", "1000"]"#;

/// Sends raw bytes, returns everything the server wrote before closing
/// (or what went wrong, as text).
fn ask(sock: &Path, bytes: &[u8]) -> String {
    let mut s = match UnixStream::connect(sock) {
        Ok(s) => s,
        Err(e) => return format!("connect: {e}"),
    };
    s.set_read_timeout(Some(T)).unwrap();
    if let Err(e) = s.write_all(bytes) {
        return format!("write: {e}");
    }
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => {}
        // The server closed with part of our request unread.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !answer.is_empty() => {}
        Err(e) => return format!("read: {e}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn nobody_can_read_status_but_not_change_state_root_can() {
    let r = Restarter::start("ctl-perm", &[("sleeper", SLEEPER)]);
    let first = r.wait_state("sleeper", "running", T)["pid"]
        .as_i64()
        .unwrap();

    let out = tetherctl(&r.run, &["status"], true);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sleeper"));
    let out = tetherctl(&r.run, &["status", "--json"], true);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["services"][0]["name"], "sleeper");

    for args in [
        &["stop", "sleeper"][..],
        &["start", "sleeper"],
        &["restart", "sleeper"],
        &["signal", "sleeper", "KILL"],
        &["reload"],
        &["reboot"],
        &["poweroff"],
        &["halt"],
    ] {
        let out = tetherctl(&r.run, args, true);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "tetherctl: permission denied\n", "{args:?}");
    }
    // Nothing happened to the service.
    let now = r.wait_state("sleeper", "running", T);
    assert_eq!(now["pid"].as_i64(), Some(first));
    assert_eq!(now["restarts"], 0);
    assert!(r.status()["control_rejected"].as_u64().unwrap() >= 8);

    let out = tetherctl(&r.run, &["stop", "sleeper"], false);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    r.wait_state("sleeper", "stopped", T);
    assert!(!svc::alive(first as i32));
    let out = tetherctl(&r.run, &["start", "sleeper"], false);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    r.wait_pid_other_than("sleeper", first as i32, T);
    r.wait_state("sleeper", "running", T);
}

/// `tetherctl` as uid 65534 with the given primary and supplementary
/// groups (util-linux `setpriv`).
fn tetherctl_as(run_dir: &Path, gid: u32, groups: &[u32], args: &[&str]) -> Output {
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={gid}"))
        .arg(groups)
        .arg(bin("tetherctl"))
        .arg("--run-dir")
        .arg(run_dir)
        .args(args)
        .output()
        .expect("run setpriv (util-linux)")
}

#[test]
fn members_of_the_control_group_may_change_state() {
    const ADMIN: u32 = 4242;
    let r = Restarter::builder("ctl-group")
        .service("sleeper", SLEEPER)
        .toml(&format!("[control]\ngroup = \"{ADMIN}\"\n"))
        .start();
    let first = r.wait_state("sleeper", "running", T)["pid"]
        .as_i64()
        .unwrap() as i32;

    // Not a member: refused.
    let out = tetherctl_as(&r.run, NOBODY, &[4243], &["restart", "sleeper"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("permission denied"));
    // A member through a supplementary group (read from /proc/PID/status).
    let out = tetherctl_as(&r.run, NOBODY, &[4243, ADMIN], &["restart", "sleeper"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let second = r.wait_pid_other_than("sleeper", first, T);
    // A member through its primary group.
    let out = tetherctl_as(&r.run, ADMIN, &[], &["stop", "sleeper"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    r.wait_state("sleeper", "stopped", T);
    assert!(!svc::alive(second));
}

#[test]
fn bad_requests_get_a_clear_error_and_the_restarter_keeps_running() {
    let mut r = Restarter::start("ctl-unknown", &[("sleeper", SLEEPER)]);
    r.wait_state("sleeper", "running", T);
    let sock = socket(&r);
    assert_eq!(
        ask(&sock, b"frobnicate now\n"),
        "error: unknown command \"frobnicate\"\n"
    );
    assert_eq!(
        ask(&sock, &[b'x'; 2000]),
        "error: request longer than 512 bytes\n"
    );
    assert_eq!(ask(&sock, b"stop ../etc\n").lines().count(), 1);
    assert!(ask(&sock, b"stop ../etc\n").starts_with("error: invalid service name"));
    assert!(ask(&sock, b"status\x00\xff\n").starts_with("error: request is not valid UTF-8"));
    // A request with no newline, ended by the client closing its side.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"status").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("ok\n"), "{answer}");

    // tetherctl refuses a typo before connecting: a usage error.
    let out = r.ctl(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown command"), "{}", stderr(&out));
    // A service that does not exist: the restarter's own error.
    let out = r.ctl(&["stop", "nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));

    assert!(r.running());
    let status = r.status();
    assert!(
        status["control_rejected"].as_u64().unwrap() >= 4,
        "{status}"
    );
    assert_eq!(status["services"][0]["state"], "running");
}

#[test]
fn tetherctl_without_a_restarter_exits_3_naming_the_socket() {
    let dir = TempDir::new("ctl-none");
    let out = tetherctl(dir.path(), &["status"], false);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains(&dir.join("control.sock").display().to_string()) && err.contains("ENOENT"),
        "{err}"
    );
}

#[test]
fn storm_of_clients_and_stuck_clients_does_not_delay_heartbeats() {
    let mut b = Beating::start("ctl-storm", &[("a", SLEEPER), ("b", SLEEPER)]);
    b.r.wait_state("a", "running", T);
    b.r.wait_state("b", "running", T);
    let sock = socket(&b.r);
    // Beats flow before the storm.
    let start = Instant::now();
    while b.beats.lock().unwrap().len() < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no heartbeats from the restarter"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let storm_start = Instant::now();
    // 20 stuck clients: 10 send nothing, 10 half a line. Each reports when
    // the server dropped it (end of file), measured from its connect.
    let stuck: Vec<JoinHandle<Duration>> = (0..20)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let connected = Instant::now();
                let mut s = UnixStream::connect(&sock).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                if i % 2 == 1 {
                    s.write_all(b"stat").unwrap();
                }
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
                connected.elapsed()
            })
        })
        .collect();
    // 200 clients at once, each asking for status again and again until
    // every stuck client has been dropped, so the load lasts the whole
    // window. Each returns its answers.
    let barrier = Arc::new(Barrier::new(200));
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<JoinHandle<Vec<String>>> = (0..200)
        .map(|_| {
            let (sock, barrier, done) = (sock.clone(), barrier.clone(), done.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut answers = Vec::new();
                loop {
                    answers.push(ask(&sock, b"status\n"));
                    if done.load(Ordering::SeqCst) {
                        return answers;
                    }
                    // Paced, so that the test's own 200 threads do not
                    // starve the restarter of CPU on a small machine: the
                    // test is about the restarter's loop, not the scheduler.
                    std::thread::sleep(PACE);
                }
            })
        })
        .collect();
    let dropped_after: Vec<Duration> = stuck.into_iter().map(|c| c.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    let answers: Vec<Vec<String>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let storm_end = Instant::now();

    let total: usize = answers.iter().map(Vec::len).sum();
    for a in answers.iter().flatten() {
        assert!(
            a.starts_with("ok\n") && a.contains("restarter: pid"),
            "bad answer: {a:?}"
        );
    }
    for d in &dropped_after {
        // The request deadline is 2 s; the drop comes at the next loop turn.
        assert!(
            *d >= Duration::from_millis(1900) && *d < Duration::from_secs(6),
            "stuck client dropped after {d:?}"
        );
    }
    let beats = b.beats_between(storm_start, storm_end);
    let (max_gap, gap_at) = beats
        .windows(2)
        .map(|w| (w[1] - w[0], w[0].saturating_duration_since(storm_start)))
        .max()
        .unwrap_or_default();
    println!(
        "storm: 200 clients got {total} answers in {:?}; stuck dropped after {:?}..{:?}; {} beats, max gap {max_gap:?} at {gap_at:?}",
        storm_end - storm_start,
        dropped_after.iter().min().unwrap(),
        dropped_after.iter().max().unwrap(),
        beats.len()
    );
    assert!(
        beats.len() >= 10,
        "too few beats during {:?}: {}",
        storm_end - storm_start,
        beats.len()
    );
    // The figure is printed above; the bound separates a loop that waited
    // on a client (a stuck client holds for the 2 s request deadline, so
    // such a loop shows a gap of 2 s or more) from scheduler noise on a
    // loaded 2-core machine (a 203 ms gap was seen once against twice the 100 ms beat).
    assert!(
        max_gap < STALL,
        "heartbeat delayed: max gap {max_gap:?}, starting {gap_at:?} into the storm"
    );
    // The gap after the storm, too: the loop did not stall.
    assert!(b.r.running());
    let status = b.r.status();
    let names: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        status["control_rejected"].as_u64().unwrap() >= 20,
        "{status}"
    );
}

#[test]
fn check_reports_service_errors_and_the_budget() {
    let dir = TempDir::new("ctl-check");
    let services = dir.join("services");
    std::fs::create_dir_all(&services).unwrap();
    std::fs::write(
        services.join("web.toml"),
        "exec = [\"/bin/true\"]\nnotify = \"watchdog\"\nwatchdog_timeout = \"3s\"\n",
    )
    .unwrap();
    let config = dir.join("tether.toml");
    std::fs::write(&config, format!("[paths]\nservices = {services:?}\n")).unwrap();
    let out = tetherctl(
        dir.path(),
        &["check", "--config", config.to_str().unwrap()],
        false,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for want in [
        "restarter hang",
        "init hang",
        "service web crash",
        "service web hang",
        "first opens the watchdog device",
        "check passed",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }

    std::fs::write(services.join("bad.toml"), "exec = 5\n").unwrap();
    let out = tetherctl(
        dir.path(),
        &["check", "--config", config.to_str().unwrap()],
        false,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("bad.toml:1:") && text.contains("exec"),
        "{text}"
    );

    std::fs::write(&config, "[timing]\nhang_timeout = 5\n").unwrap();
    let out = tetherctl(
        dir.path(),
        &["check", "--config", config.to_str().unwrap()],
        false,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("tether.toml:2:") && text.contains("hang_timeout"),
        "{text}"
    );
}
