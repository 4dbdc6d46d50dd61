//! sd_notify through a real `tether-restarter`: `READY=1` makes a service
//! ready, `WATCHDOG=1` pings keep it alive and their absence restarts it, a
//! sender of the service's uid that has already exited still counts
//! (attribution by socket), another user's datagrams are refused and
//! counted (and cannot reach the socket by path),
//! `systemd-notify` itself works from a script, and malformed or oversized
//! datagrams are counted and ignored without disturbing the service.
//!
//! Senders: `notify-helper` (this crate's stand-in for `systemd-notify`) and,
//! in one test, the real `systemd-notify` (Debian package `systemd`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tether_integration::bins::bin;
use tether_integration::svc::Restarter;

const T: Duration = Duration::from_secs(10);

fn touch(path: &Path) {
    std::fs::write(path, b"").expect("touch");
}

fn helper() -> String {
    bin("notify-helper").display().to_string()
}

#[test]
fn notify_ready_makes_the_service_ready_with_its_status_text() {
    let b = Restarter::builder("ntf-ready");
    let d = b.dir().display().to_string();
    let script = b.script(
        "svc.sh",
        &format!(
            "#!/bin/sh\nwhile [ ! -e {d}/go ]; do sleep 0.02; done\n{h} READY=1 'STATUS=serving 3 clients'\nexec sleep 1000\n",
            h = helper()
        ),
    );
    let r = b
        .service(
            "rdy",
            &format!("exec = [\"{}\"]\nnotify = \"ready\"\n", script.display()),
        )
        .start();
    let pid = r.wait_pid("rdy", T);
    let s = r.service_status("rdy").expect("status");
    assert_eq!(s["ready"], false, "not ready before READY=1: {s}");
    assert_ne!(s["state"], "ready");
    touch(&r.dir().join("go"));
    let s = r.wait_state("rdy", "ready", T);
    assert_eq!(s["ready"], true);
    assert_eq!(s["status_text"], "serving 3 clients");
    assert_eq!(s["pid"], pid);
    assert_eq!(s["notify_rejected"], 0);
    r.log.wait_for("service rdy ready", T);
}

#[test]
fn notify_watchdog_pings_keep_the_service_alive_and_silence_restarts_it() {
    let b = Restarter::builder("ntf-wd");
    let d = b.dir().display().to_string();
    let script = b.script(
        "svc.sh",
        &format!(
            "#!/bin/sh\n{h} READY=1\nwhile [ ! -e {d}/silence ]; do {h} WATCHDOG=1; sleep 0.05; done\nexec sleep 1000\n",
            h = helper()
        ),
    );
    let r = b
        .service(
            "pinger",
            &format!(
                "exec = [\"{}\"]\nnotify = \"watchdog\"\nwatchdog_timeout = \"600ms\"\nstop_timeout = \"1s\"\n",
                script.display()
            ),
        )
        .start();
    let pid = r.wait_pid("pinger", T);
    r.wait_state("pinger", "ready", T);
    // Three timeouts' worth of pings: still the same process.
    std::thread::sleep(Duration::from_millis(1800));
    let s = r.service_status("pinger").expect("status");
    assert_eq!(s["pid"], pid, "pinged service was restarted: {s}");
    assert_eq!(s["restarts"], 0);
    assert_eq!(s["state"], "ready");
    touch(&r.dir().join("silence"));
    let new = r.wait_pid_other_than("pinger", pid, T);
    assert_ne!(new, pid);
    let s = r.service_status("pinger").expect("status");
    assert!(s["restarts"].as_u64().unwrap_or(0) >= 1, "{s}");
}

#[test]
fn notify_from_a_sender_that_exited_before_it_was_read_still_counts() {
    let b = Restarter::builder("ntf-gone");
    // The service runs as nobody, so the sender has the service's uid (not
    // root's); `flags/` is where nobody may write.
    let flags = b.dir().join("flags");
    std::fs::create_dir(&flags).expect("flags dir");
    std::fs::set_permissions(&flags, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let d = flags.display().to_string();
    // The helper sends and exits; the shell reaps it before touching `sent`.
    let script = b.script(
        "svc.sh",
        &format!(
            "#!/bin/sh\nwhile [ ! -e {d}/go ]; do sleep 0.02; done\n{h} READY=1\ntouch {d}/sent\nexec sleep 1000\n",
            h = helper()
        ),
    );
    let r = b
        .service(
            "gone",
            &format!(
                "exec = [\"{}\"]\nnotify = \"ready\"\nuser = \"nobody\"\n",
                script.display()
            ),
        )
        .start();
    r.wait_pid("gone", T);
    // Freeze the restarter so the datagram waits in the socket until the
    // sender is gone.
    r.signal(libc::SIGSTOP);
    touch(&flags.join("go"));
    let sent = flags.join("sent");
    let deadline = Instant::now() + T;
    while !sent.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    r.signal(libc::SIGCONT);
    assert!(sent.exists(), "the service did not send within {T:?}");
    let s = r.wait_state("gone", "ready", T);
    assert_eq!(s["notify_rejected"], 0);
    assert_eq!(s["notify_refused"], 0);
    let line = r.log.wait_for("service gone ready", T);
    assert!(line.text.contains("uid 65534"), "{}", line.text);
}

/// Runs `perl` as uid/gid 65534 (through `setpriv`), sending each of
/// `messages` as one datagram on `sock` (given as descriptor 3, connected
/// by root before the switch: what a daemon that drops privileges after
/// start holds), then exiting. Returns whether every send succeeded.
fn send_as_nobody_on(sock: &std::os::unix::net::UnixDatagram, messages: &[&str]) -> bool {
    use std::os::fd::AsFd;
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "perl",
        "-e",
        "open(my $s, '+<&=', 3) or die \"fd 3: $!\"; for (@ARGV) { send($s, $_, 0) or die \"send: $!\" }",
    ]);
    cmd.args(messages);
    let mut child = tether_common::sys::spawn_with_fds(&mut cmd, &[(sock.as_fd(), 3)])
        .expect("setpriv and perl are needed by this test");
    child.wait().expect("wait").success()
}

/// Sends `message` to `path` as uid/gid 65534, by path (as `sd_notify`
/// does). Returns whether the send succeeded.
fn send_as_nobody_to(path: &Path, message: &str) -> bool {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "perl", "-MSocket", "-e"])
        .arg("socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die $!; send($s, $ARGV[1], 0, pack_sockaddr_un($ARGV[0])) or die \"send: $!\";")
        .arg(path)
        .arg(message)
        .status()
        .expect("setpriv and perl are needed by this test")
        .success()
}

#[test]
fn notify_from_another_user_is_refused_counted_and_leaves_the_service_alone() {
    // Issue 12: uid 65534 forged WATCHDOG=trigger (kills the service),
    // READY=1 (breaks `after` ordering) and WATCHDOG_USEC (hides a hang)
    // for a root service, from processes that exit at once while the
    // restarter is busy.
    let b = Restarter::builder("ntf-foreign");
    let r = b
        .service(
            "victim",
            "exec = [\"/bin/sleep\", \"1000\"]\nnotify = \"watchdog\"\nwatchdog_timeout = \"60s\"\n",
        )
        .start();
    let pid = r.wait_pid("victim", T);
    let path = r.run.join("notify").join("victim.sock");
    // With a socket connected before dropping privileges, the datagrams
    // arrive: the kernel's uid must decide. The restarter is frozen so
    // the sender is gone (reaped) before it reads.
    let sock = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    sock.connect(&path).expect("root connects");
    r.signal(libc::SIGSTOP);
    let sent = send_as_nobody_on(
        &sock,
        &["READY=1", "WATCHDOG_USEC=3600000000", "WATCHDOG=trigger"],
    );
    r.signal(libc::SIGCONT);
    assert!(sent, "setpriv/perl failed to send");
    let deadline = Instant::now() + T;
    let s = loop {
        let s = r.service_status("victim").expect("status");
        if s["notify_refused"] == 3 || Instant::now() >= deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(s["notify_refused"], 3, "{s}");
    assert_eq!(s["notify_rejected"], 3, "{s}");
    assert_eq!(s["pid"], pid, "the service was touched: {s}");
    assert_eq!(s["restarts"], 0, "{s}");
    assert_eq!(s["ready"], false, "a forged READY=1 counted: {s}");
    assert_eq!(s["state"], "starting", "{s}");
    let left = s["watchdog_deadline_ms"]
        .as_u64()
        .expect("watchdog deadline");
    assert!(left <= 60_000, "a forged WATCHDOG_USEC counted: {s}");
    assert!(
        s["notify_last_refusal"]
            .as_str()
            .is_some_and(|t| t.contains("uid 65534")),
        "{s}"
    );
    r.log
        .wait_for("notify datagram(s) refused: sender uid 65534", T);
    // Which attribution this kernel allows (SCM_PIDFD from Linux 6.5).
    println!("{}", r.log.wait_for("notify senders", T).text);
    // By path, as sd_notify and systemd-notify do: the socket is out of
    // uid 65534's reach.
    assert!(
        !send_as_nobody_to(&path, "WATCHDOG=trigger"),
        "uid 65534 could send to {}",
        path.display()
    );
    let text = String::from_utf8_lossy(&r.ctl(&["status"]).stdout).into_owned();
    assert!(
        text.contains("victim: 3 of them refused for their sender"),
        "{text}"
    );
    // Root's own datagram from a process that has exited by the time it
    // is read still counts (a live sender outside the service's process
    // group would not, whatever its uid).
    r.signal(libc::SIGSTOP);
    let st = std::process::Command::new("perl")
        .args(["-MSocket", "-e"])
        .arg("socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die $!; send($s, 'READY=1', 0, pack_sockaddr_un($ARGV[0])) or die $!;")
        .arg(&path)
        .status()
        .expect("perl");
    r.signal(libc::SIGCONT);
    assert!(st.success());
    r.wait_state("victim", "ready", T);
    assert!(tether_integration::svc::alive(pid));
}

#[test]
fn notify_systemd_notify_from_a_script_works_and_returns_at_once() {
    let b = Restarter::builder("ntf-sysd");
    // systemd-notify sends its message, then a barrier (BARRIER=1 with a
    // pipe) and waits up to 5 s for it: rc=0 quickly means the restarter
    // released the barrier.
    let script = b.script(
        "svc.sh",
        "#!/bin/sh\nstart=$(date +%s%N)\nsystemd-notify --ready --status='via systemd-notify'\nrc=$?\n\
         end=$(date +%s%N)\necho \"systemd-notify rc=$rc ms=$(( (end - start) / 1000000 ))\"\nexec sleep 1000\n",
    );
    let r = b
        .service(
            "sysd",
            &format!("exec = [\"{}\"]\nnotify = \"ready\"\n", script.display()),
        )
        .start();
    let s = r.wait_state("sysd", "ready", T);
    assert_eq!(s["status_text"], "via systemd-notify");
    let line = r.log.wait_for("systemd-notify rc=", T);
    assert!(line.text.contains("rc=0"), "{}", line.text);
    let ms: u64 = line
        .text
        .rsplit("ms=")
        .next()
        .and_then(|v| v.trim().parse().ok())
        .expect("ms");
    assert!(
        ms < 4000,
        "systemd-notify waited {ms} ms: the barrier was not released"
    );
}

#[test]
fn notify_malformed_and_oversized_datagrams_are_counted_and_ignored() {
    let b = Restarter::builder("ntf-bad");
    let d = b.dir().display().to_string();
    let big = format!("STATUS={}", "x".repeat(5000));
    let script = b.script(
        "svc.sh",
        &format!(
            "#!/bin/sh\nwhile [ ! -e {d}/go ]; do sleep 0.02; done\n\
             {h} 'no equals sign'\n{h} {big}\n{h} WATCHDOG_USEC=-1\n{h} READY=1\nexec sleep 1000\n",
            h = helper()
        ),
    );
    let r = b
        .service(
            "bad",
            &format!("exec = [\"{}\"]\nnotify = \"ready\"\n", script.display()),
        )
        .start();
    let pid = r.wait_pid("bad", T);
    touch(&r.dir().join("go"));
    let s = r.wait_state("bad", "ready", T);
    assert_eq!(s["notify_rejected"], 3, "{s}");
    assert_eq!(s["pid"], pid);
    assert_eq!(s["restarts"], 0);
    assert_eq!(
        s["status_text"],
        serde_json::Value::Null,
        "the oversized STATUS must not apply: {s}"
    );
    r.log.wait_for("malformed notify datagram", T);
}

#[test]
fn notify_socket_is_private_to_the_service_and_removed_with_it() {
    let b = Restarter::builder("ntf-sock");
    let script = b.script(
        "svc.sh",
        "#!/bin/sh\necho \"socket=$NOTIFY_SOCKET\"\nexec sleep 1000\n",
    );
    let r = b
        .service(
            "sockd",
            &format!("exec = [\"{}\"]\nnotify = \"ready\"\n", script.display()),
        )
        .start();
    let line = r.log.wait_for("socket=", T);
    let path = line
        .text
        .rsplit("socket=")
        .next()
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(Path::new(&path), r.run.join("notify").join("sockd.sock"));
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(&path).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0, "a service without user: root's");
    let dir = std::fs::symlink_metadata(r.run.join("notify")).expect("notify dir");
    assert_eq!(dir.permissions().mode() & 0o7777, 0o755);
    assert_eq!(dir.uid(), 0);
    // A service with a user: its socket is that user's, and it can use it.
    let script = r.script(
        "nobody.sh",
        &format!(
            "#!/bin/sh\n{h} READY=1 STATUS=as-nobody\nexec sleep 1000\n",
            h = helper()
        ),
    );
    r.write_service(
        "asnobody",
        &format!(
            "exec = [\"{}\"]\nnotify = \"ready\"\nuser = \"nobody\"\n",
            script.display()
        ),
    );
    r.signal(libc::SIGHUP);
    let s = r.wait_state("asnobody", "ready", T);
    assert_eq!(s["status_text"], "as-nobody");
    let meta = std::fs::symlink_metadata(r.run.join("notify").join("asnobody.sock")).unwrap();
    assert_eq!(
        (meta.uid(), meta.permissions().mode() & 0o777),
        (65534, 0o600)
    );
    r.remove_service("sockd");
    r.signal(libc::SIGHUP);
    let deadline = Instant::now() + T;
    while Path::new(&path).exists() {
        assert!(
            Instant::now() < deadline,
            "{path} still there after the service was removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
