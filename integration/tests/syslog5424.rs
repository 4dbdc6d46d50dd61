//! RFC 5424 syslog for a central collector (issue 16), with the real
//! rsyslogd (Debian's `rsyslog` package; CI installs it):
//!
//! - the shipped snippets (`contrib/rsyslog/*.conf`) pass `rsyslogd -N1`,
//!   and a typo in one does not (the check can fail);
//! - end to end on loopback: watchdogd with `TETHER_LOG_FORMAT=rfc5424`
//!   logs to an rsyslogd (the box's daemon: imuxsock without its special
//!   parser, so RFC 5424 is parsed) that forwards with the shipped snippet
//!   over TCP to a second rsyslogd (the collector, shipped snippet); after a
//!   simulated watchdog reset, the next start's "previous boot ended" line
//!   arrives at the collector with MSGID RESET and the reason as structured
//!   data: fields only rsyslog's RFC 5424 parser fills in.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tether_integration::bins::{self, TempDir};
use tether_integration::hw::{LogSource, RigOptions, WatchdogdRig};

fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib/rsyslog")
        .join(name)
}

fn rsyslogd_check(conf: &Path) -> std::process::Output {
    Command::new("rsyslogd")
        .arg("-N1")
        .arg("-f")
        .arg(conf)
        .output()
        .expect("rsyslogd (Debian package rsyslog) is installed")
}

/// A main config around a drop-in: rsyslog's work directory and imuxsock
/// on `socket` with RFC 5424 parsing.
fn wrap(dir: &Path, name: &str, socket: Option<&Path>, body: &str) -> PathBuf {
    let mut text = format!("global(workDirectory={:?})\n", dir.display().to_string());
    if let Some(s) = socket {
        text.push_str(&format!(
            "module(load=\"imuxsock\" SysSock.Use=\"off\")\ninput(type=\"imuxsock\" Socket={:?} UseSpecialParser=\"off\" ParseHostname=\"on\" IgnoreTimestamp=\"off\")\n",
            s.display().to_string()
        ));
    }
    text.push_str(body);
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_shipped_rsyslog_snippets_are_valid_and_a_typo_is_not() {
    let d = TempDir::new("rsyslog-check");
    for name in ["tether-forward.conf", "tether-collector.conf"] {
        let body = std::fs::read_to_string(contrib(name)).unwrap();
        let sock = d.join("log.sock");
        let conf = wrap(d.path(), &format!("main-{name}"), Some(&sock), &body);
        let out = rsyslogd_check(&conf);
        assert!(out.status.success(), "{name}: {out:?}");
        let bad = body
            .replacen("queue.size=", "queue.sizzze=", 1)
            .replacen("input(", "inptu(", 1);
        let conf = wrap(d.path(), &format!("bad-{name}"), Some(&sock), &bad);
        assert!(
            !rsyslogd_check(&conf).status.success(),
            "{name}: typo accepted"
        );
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rsyslogd(conf: &Path, dir: &Path, name: &str) -> Daemon {
    Daemon(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(conf)
            .arg("-i")
            .arg(dir.join(format!("{name}.pid")))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .expect("start rsyslogd"),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends the datagrams watchdogd sent to the rig's capture socket, byte
/// for byte, to the box's rsyslogd (the rig points `TETHER_SYSLOG_SOCKET`
/// at its own capture, which the test also reads).
struct Relay {
    sock: std::os::unix::net::UnixDatagram,
    sent: usize,
}

impl Relay {
    fn pump(&mut self, r: &WatchdogdRig) {
        let lines = r.log.texts(LogSource::Syslog);
        for l in &lines[self.sent.min(lines.len())..] {
            self.sock
                .send(l.as_bytes())
                .expect("send to the box's rsyslogd");
        }
        self.sent = lines.len();
    }
}

fn wait_file(
    path: &Path,
    what: &str,
    within: Duration,
    relay: &mut Relay,
    r: &WatchdogdRig,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        relay.pump(r);
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| ok(l)) {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{what} not at the collector:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reset_reason_reaches_the_collector_parsed_as_rfc5424() {
    let d = TempDir::new("rsyslog-e2e");
    let port = free_port();
    // The collector: the shipped snippet on a free loopback port, files
    // in the scratch directory.
    let coll_dir = d.join("collector");
    std::fs::create_dir_all(&coll_dir).unwrap();
    let body = std::fs::read_to_string(contrib("tether-collector.conf"))
        .unwrap()
        .replace(
            "port=\"514\"",
            &format!("port=\"{port}\" address=\"127.0.0.1\""),
        )
        .replace("/var/log/remote", &coll_dir.display().to_string());
    let conf = wrap(&coll_dir, "collector.conf", None, &body);
    let _collector = rsyslogd(&conf, &coll_dir, "collector");
    // The box's daemon: the shipped forwarder to 127.0.0.1:port.
    let box_dir = d.join("box");
    std::fs::create_dir_all(&box_dir).unwrap();
    let sock = box_dir.join("log.sock");
    let body = std::fs::read_to_string(contrib("tether-forward.conf"))
        .unwrap()
        .replace("collector.example.net", "127.0.0.1")
        .replace("port=\"514\"", &format!("port=\"{port}\""));
    let conf = wrap(&box_dir, "box.conf", Some(&sock), &body);
    let _boxd = rsyslogd(&conf, &box_dir, "box");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "the box's rsyslogd made no socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let opts = RigOptions {
        env: vec![("TETHER_LOG_FORMAT".into(), "rfc5424".into())],
        ..RigOptions::default()
    };
    let relay_sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
    relay_sock.connect(&sock).unwrap();
    let mut relay = Relay {
        sock: relay_sock,
        sent: 0,
    };
    let mut r = WatchdogdRig::start(&bins::bin("tether-watchdogd"), "rsyslog-wd", opts);
    assert!(r.sim().wait_for_pets(3, Duration::from_secs(5)), "no pets");
    let events = coll_dir.join("tether-events.log");
    // Petting stops: the ALERT arrives with its structured data.
    r.beater.pause("restarter");
    let alert = wait_file(
        &events,
        "the ALERT",
        Duration::from_secs(20),
        &mut relay,
        &r,
        |l| l.contains(" ALERT "),
    );
    assert!(alert.contains("tether-watchdogd ALERT [tether@32473 layer=\"restarter\" state=\"stopped\" silent_ms=\""), "{alert}");
    // The next boot (a new watchdogd on the same state) says why.
    r.kill9();
    r.beater.resume("restarter");
    let t0 = Instant::now();
    r.spawn();
    let reset = wait_file(
        &events,
        "the RESET line",
        Duration::from_secs(20),
        &mut relay,
        &r,
        |l| l.contains(" RESET ") && l.contains("cause=\"watchdog\""),
    );
    eprintln!(
        "reset reason at the collector {:?} after the start: {reset}",
        t0.elapsed()
    );
    assert!(reset.contains("tether-watchdogd RESET [tether@32473 cause=\"watchdog\" layer=\"restarter\" silent_ms=\""), "{reset}");
    assert!(
        reset.contains("previous boot ended: watchdog reset: restarter silent"),
        "{reset}"
    );
    // Every line tether sent is RFC 5424 with a MSGID of the vocabulary.
    for l in r.log.texts(LogSource::Syslog) {
        let msgid = l.split(' ').nth(5).unwrap_or("");
        assert!(
            l.contains(">1 ")
                && ["LOG", "LIVENESS", "RESET", "ALERT", "STATE", "START", "CONFIG"]
                    .contains(&msgid),
            "{l}"
        );
    }
}
