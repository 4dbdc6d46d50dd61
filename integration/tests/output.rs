//! Service output through a real `tether-restarter`: lines reach syslog
//! tagged with the service name and the stream's priority, a dying
//! service's last words arrive before its exit is logged, a service never
//! blocks on its output when syslog is gone (dropped lines are counted and
//! shown in status), and lines buffered while syslog is down arrive in order
//! when it returns.

use std::path::Path;
use std::time::{Duration, Instant};
use tether_integration::svc::{LogSink, Restarter};

const T: Duration = Duration::from_secs(10);

/// Lines a service's buffer keeps while syslog is down
/// (`tether_restarter::output::BUFFER_MAX_LINES`; 256 lines of 99 bytes stay
/// under the 64 KiB byte bound).
const BUFFER_MAX_LINES: u64 = 256;

fn service(script: &Path, extra: &str) -> String {
    format!("exec = [\"{}\"]\n{extra}\n", script.display())
}

/// Polls `tetherctl status --json` until `pred` holds for service `name`.
fn wait_status(
    r: &Restarter,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(s) = r.service_status(name) {
            if pred(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(
            Instant::now() < deadline,
            "service {name}: condition not met within {timeout:?}; last status {last:?}\nlog:\n{}\nstderr:\n{}",
            r.log.texts().join("\n"),
            r.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_file(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} not created within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn output_lines_reach_syslog_tagged_with_the_service_and_stream_priority() {
    let b = Restarter::builder("out-prio");
    let script = b.script(
        "talk.sh",
        "#!/bin/sh\necho \"to stdout $$\"\necho \"to stderr $$\" >&2\nprintf 'crlf line\\r\\n'\nexec sleep 1000\n",
    );
    let r = b.service("talker", &service(&script, "")).start();
    let pid = r.wait_pid("talker", T);
    let out = r.log.wait_for("to stdout", T);
    let err = r.log.wait_for("to stderr", T);
    let crlf = r.log.wait_for("crlf line", T);
    // daemon facility (3): info = 3*8+6 = 30, err = 3*8+3 = 27.
    assert_eq!(out.text, format!("<30>talker[{pid}]: to stdout {pid}"));
    assert_eq!(err.text, format!("<27>talker[{pid}]: to stderr {pid}"));
    assert_eq!(crlf.text, format!("<30>talker[{pid}]: crlf line"));
}

#[test]
fn output_long_lines_are_split_into_pieces() {
    let b = Restarter::builder("out-long");
    // 2500 'a' then a newline: pieces of 1024, 1024 and 452 bytes.
    let script = b.script(
        "long.sh",
        "#!/bin/sh\nhead -c 2500 /dev/zero | tr '\\0' a\necho\necho after\nexec sleep 1000\n",
    );
    let r = b.service("longline", &service(&script, "")).start();
    r.log.wait_for("]: after", T);
    let pieces: Vec<usize> = r
        .log
        .matching("longline[")
        .iter()
        .filter_map(|l| l.text.split_once("]: ").map(|(_, m)| m.to_string()))
        .filter(|m| m != "after")
        .map(|m| {
            assert!(m.bytes().all(|c| c == b'a'), "{m:?}");
            m.len()
        })
        .collect();
    assert_eq!(pieces, vec![1024, 1024, 452]);
}

#[test]
fn output_of_a_service_dying_right_after_printing_arrives_before_its_exit_is_logged() {
    let b = Restarter::builder("out-last");
    let script = b.script(
        "die.sh",
        "#!/bin/sh\necho \"last words\"\nprintf 'no newline'\nexit 3\n",
    );
    let r = b
        .service("dier", &service(&script, "restart = \"never\""))
        .start();
    let exit = r.log.wait_for("service dier exited", T);
    let lines = r.log.texts();
    let pos = |needle: &str| lines.iter().position(|l| l.contains(needle));
    let exit_at = pos("service dier exited").expect("exit line");
    let words_at = pos("]: last words")
        .unwrap_or_else(|| panic!("last words lost; lines:\n{}", lines.join("\n")));
    let tail_at = pos("]: no newline")
        .unwrap_or_else(|| panic!("unterminated line lost; lines:\n{}", lines.join("\n")));
    assert!(
        words_at < exit_at && tail_at < exit_at,
        "output after the exit line:\n{}",
        lines.join("\n")
    );
    assert!(exit.text.contains("exit 3"), "{}", exit.text);
}

#[test]
fn output_10mb_with_no_syslog_listening_never_blocks_the_service_and_counts_drops() {
    let b = Restarter::builder("out-flood");
    let dir = b.dir().to_path_buf();
    // 100 000 lines of 99 characters: 10 000 000 bytes.
    let script = b.script(
        "flood.sh",
        &format!(
            "#!/bin/sh\nyes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678 \
             | head -c 10000000\ntouch {}/written\nexit 0\n",
            dir.display()
        ),
    );
    // Nothing listens at the restarter's syslog socket.
    let r = b
        .env(
            "TETHER_SYSLOG_SOCKET",
            &dir.join("nobody.sock").display().to_string(),
        )
        .service("flood", &service(&script, "restart = \"never\""))
        .start();
    let started = Instant::now();
    wait_file(&dir.join("written"), Duration::from_secs(120));
    let s = wait_status(&r, "flood", Duration::from_secs(30), |s| {
        s["last_exit"] == "exit 0"
    });
    eprintln!(
        "10 MB written through the restarter in {:?}",
        started.elapsed()
    );
    assert_eq!(s["pid"], serde_json::Value::Null);
    // Every line was dropped except those the buffer holds.
    assert_eq!(
        s["dropped_lines"],
        100_000 - BUFFER_MAX_LINES,
        "status: {s}"
    );
    let st = r.status();
    assert_eq!(st["syslog_up"], false);
    let deadline = Instant::now() + T;
    while !r.stderr().contains("output line(s) dropped") {
        assert!(
            Instant::now() < deadline,
            "drops not logged; stderr:\n{}",
            r.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn output_buffered_while_syslog_is_down_arrives_in_order_when_it_returns() {
    let b = Restarter::builder("out-down");
    let dir = b.dir().to_path_buf();
    let script = b.script(
        "later.sh",
        &format!(
            "#!/bin/sh\necho hello\nwhile [ ! -e {d}/go ]; do sleep 0.02; done\n\
             i=1; while [ $i -le 50 ]; do echo \"line $i\"; i=$((i+1)); done\n\
             touch {d}/printed\nexec sleep 1000\n",
            d = dir.display()
        ),
    );
    let mut r = b.service("later", &service(&script, "")).start();
    r.log.wait_for("]: hello", T);
    // syslog goes away: the restarter's connection is refused from now on.
    let real = r.log.path().to_path_buf();
    drop(std::mem::replace(
        &mut r.log,
        LogSink::bind(&dir.join("elsewhere.sock")),
    ));
    std::fs::write(dir.join("go"), b"").unwrap();
    wait_file(&dir.join("printed"), T);
    // The restarter found syslog down when it tried to send the lines.
    wait_status(&r, "later", T, |_| r.status()["syslog_up"] == false);
    r.log = LogSink::bind(&real);
    let got = r.log.wait_for_count("later[", 50, T);
    let texts: Vec<String> = got
        .iter()
        .map(|l| l.text.split_once("]: ").unwrap().1.to_string())
        .collect();
    let want: Vec<String> = (1..=50).map(|i| format!("line {i}")).collect();
    assert_eq!(texts, want);
    let s = r.service_status("later").expect("status");
    assert_eq!(s["dropped_lines"], 0);
    assert_eq!(r.status()["syslog_up"], true);
}
