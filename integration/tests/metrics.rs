//! Prometheus metrics for a fleet (issue 16), with the real tools from
//! Debian (CI installs `prometheus` for promtool and
//! `prometheus-node-exporter`):
//!
//! - a whole chain (`tether-init` as PID 1 of a namespace, simulated
//!   watchdog) with `[metrics] textfile_dir` set writes `tether.prom`;
//!   node_exporter's textfile collector reads the directory, the test
//!   fetches `/metrics` over loopback, lints the `tether_` series with
//!   `promtool check metrics` and checks their values; a state change
//!   (a service stopped) reaches the file long before the next periodic
//!   write; `tetherctl metrics` prints the same series;
//! - a metrics file whose write blocks forever (the temporary file is a
//!   FIFO nobody reads) costs stale metrics, never the restarter's loop:
//!   control requests are answered and services start and stop;
//! - the shipped alert rules (`contrib/prometheus/tether.rules.yml`) pass
//!   `promtool check rules` and their unit tests (`promtool test rules
//!   tether.rules.test.yml`), and both checks can fail: a broken rule and a
//!   rule that fires too late are refused.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tether_integration::bins::TempDir;
use tether_integration::chain::{Chain, ChainOptions};
use tether_integration::hw::Timings;
use tether_integration::svc::Restarter;

fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib/prometheus")
        .join(name)
}

fn promtool(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nobody listens on right now (the kernel's choice).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// node_exporter with only the textfile collector, on loopback.
fn node_exporter(dir: &Path, port: u16) -> Daemon {
    Daemon(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter (Debian package) is installed"),
    )
}

/// `GET /metrics` over HTTP/1.0; the body, or why not.
fn scrape(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    Ok(body.to_string())
}

/// The `tether_` families of an exposition text: their HELP/TYPE lines and
/// samples, in order.
fn tether_lines(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let name = l
                .strip_prefix("# HELP ")
                .or_else(|| l.strip_prefix("# TYPE "))
                .unwrap_or(l);
            name.starts_with("tether_")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Sample `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn wait_file(
    path: &Path,
    timeout: Duration,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> String {
    let until = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if ok(&samples(&text)) {
            return text;
        }
        assert!(
            Instant::now() < until,
            "{} never matched:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lint(what: &str, text: &str) {
    let out = promtool(&["check", "metrics"], Some(text));
    assert!(
        out.status.success(),
        "{what}: promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn node_exporter_serves_the_chains_metrics_and_promtool_accepts_them() {
    let textfile = TempDir::new("metrics-textfile");
    let mut timings = Timings::chain();
    // Long enough that only a state change explains a quick rewrite.
    timings.liveness_interval = Duration::from_secs(60);
    let config_text = format!(
        "{}\n[metrics]\ntextfile_dir = {:?}\n",
        timings.toml(),
        textfile.path().display().to_string()
    );
    let mut chain = Chain::start(
        "metrics",
        ChainOptions {
            timings,
            config_text: Some(config_text),
            paths_as_flags: true,
            services: vec![
                ("web".into(), "exec = [\"/bin/sleep\", \"1000\"]\n".into()),
                (
                    "crashy".into(),
                    "exec = [\"/bin/sh\", \"-c\", \"sleep 0.2; exit 3\"]\nrestart_delay = \"200ms\"\n"
                        .into(),
                ),
            ],
            ..ChainOptions::default()
        },
    );
    let file = textfile.join("tether.prom");
    let text = wait_file(&file, Duration::from_secs(20), |s| {
        s.get("tether_service_restarts_total{service=\"crashy\"}")
            .is_some_and(|&n| n >= 2.0)
            && s.get("tether_layer_up{layer=\"init\"}") == Some(&1.0)
            && s.get("tether_layer_up{layer=\"restarter\"}") == Some(&1.0)
            && s.get("tether_service_state{service=\"web\",state=\"running\"}") == Some(&1.0)
    });
    lint("tether.prom", &text);

    let port = free_port();
    let _ne = node_exporter(textfile.path(), port);
    let until = Instant::now() + Duration::from_secs(10);
    let body = loop {
        match scrape(port) {
            Ok(b) if b.contains("tether_build_info") => break b,
            r => assert!(
                Instant::now() < until,
                "node_exporter on 127.0.0.1:{port}: {r:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The textfile collector read it without complaint.
    let s = samples(&body);
    assert_eq!(
        s.get("node_textfile_scrape_error"),
        Some(&0.0),
        "textfile collector error:\n{body}"
    );
    let ours = tether_lines(&body);
    lint("node_exporter's tether_ series", &ours);
    let s = samples(&ours);
    let v = |k: &str| {
        *s.get(k)
            .unwrap_or_else(|| panic!("no {k} in node_exporter's /metrics:\n{ours}"))
    };
    assert_eq!(
        v(&format!(
            "tether_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert_eq!(v("tether_layer_up{layer=\"init\"}"), 1.0);
    assert_eq!(v("tether_layer_up{layer=\"restarter\"}"), 1.0);
    assert!(v("tether_layer_last_beat_age_seconds{layer=\"init\"}") < 2.0);
    assert_eq!(v("tether_watchdog_armed"), 1.0);
    assert_eq!(v("tether_watchdog_petting"), 1.0);
    assert!(v("tether_watchdog_last_pet_age_seconds") < 2.0);
    assert_eq!(v("tether_boots_total"), 1.0);
    // Quiet services: no output line sent, so no connection opened yet.
    assert_eq!(v("tether_output_syslog_connected"), 0.0);
    assert_eq!(v("tether_config_errors"), 0.0);
    assert_eq!(
        v("tether_service_state{service=\"web\",state=\"running\"}"),
        1.0
    );
    assert_eq!(
        v("tether_service_state{service=\"web\",state=\"failed\"}"),
        0.0
    );
    assert_eq!(v("tether_service_restarts_total{service=\"web\"}"), 0.0);
    assert!(v("tether_service_restarts_total{service=\"crashy\"}") >= 2.0);
    assert_eq!(v("tether_service_last_exit_code{service=\"crashy\"}"), 3.0);
    assert_eq!(
        v("tether_service_output_dropped_lines_total{service=\"web\"}"),
        0.0
    );
    assert_eq!(
        v("tether_service_notify_rejected_total{service=\"web\"}"),
        0.0
    );
    // Bounded by the services: each per-service family has one series
    // per service (state: one per state word).
    let per_service = ours
        .lines()
        .filter(|l| l.starts_with("tether_service_restarts_total{"))
        .count();
    assert_eq!(per_service, 2, "{ours}");

    // A state change is written at once (at most 1 s later), not at the
    // next liveness tick 60 s away.
    let stop = chain.tetherctl(&["stop", "web"]);
    assert!(stop.status.success(), "{stop:?}");
    let asked = Instant::now();
    wait_file(&file, Duration::from_secs(5), |s| {
        s.get("tether_service_state{service=\"web\",state=\"stopped\"}") == Some(&1.0)
    });
    let took = asked.elapsed();
    eprintln!("figure: tetherctl stop → tether.prom shows it: {took:?}");

    // tetherctl metrics: the same renderer, the same families.
    let out = chain.tetherctl(&["metrics", "--config", chain.config_path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    lint("tetherctl metrics", &printed);
    let names = |t: &str| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.to_string())
            .collect()
    };
    let file_text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(names(&printed), names(&file_text));
    assert_eq!(
        samples(&printed).get("tether_service_state{service=\"web\",state=\"stopped\"}"),
        Some(&1.0)
    );
    chain.kill();
}

/// `contrib/prometheus` copied to a scratch directory, with `edit` applied
/// to the rules file.
fn rules_copy(d: &TempDir, edit: impl Fn(&str) -> String) -> PathBuf {
    let rules = std::fs::read_to_string(contrib("tether.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(contrib("tether.rules.test.yml")).unwrap();
    std::fs::write(d.join("tether.rules.yml"), edit(&rules)).unwrap();
    let p = d.join("tether.rules.test.yml");
    std::fs::write(&p, tests).unwrap();
    p
}

fn show(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = contrib("tether.rules.yml");
    let out = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", show(&out));
    let out = promtool(
        &[
            "test",
            "rules",
            contrib("tether.rules.test.yml").to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", show(&out));

    // The checks can fail: a syntax error in an expression...
    let d = TempDir::new("rules-broken");
    rules_copy(&d, |r| r.replacen("expr: ", "expr: sum(", 1));
    let out = promtool(
        &[
            "check",
            "rules",
            d.join("tether.rules.yml").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        !out.status.success(),
        "broken rule accepted: {}",
        show(&out)
    );
    // ...and a rule that waits too long before firing fails its unit test.
    let d = TempDir::new("rules-late");
    let tests = rules_copy(&d, |r| {
        assert!(r.contains("for: 2m"), "rules changed: fix this test");
        r.replace("for: 2m", "for: 2h")
    });
    let out = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    assert!(
        !out.status.success(),
        "late rule passed its tests: {}",
        show(&out)
    );
}

#[test]
fn a_metrics_write_that_blocks_forever_never_holds_up_the_loop() {
    let textfile = TempDir::new("metrics-stuck");
    // open(O_WRONLY) of a FIFO without a reader waits for one: forever.
    nix::unistd::mkfifo(
        &textfile.join("tether.prom.tmp"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let r = Restarter::builder("metrics-stuck")
        .toml(&format!(
            "[metrics]\ntextfile_dir = {:?}\n",
            textfile.path().display().to_string()
        ))
        .service("web", "exec = [\"/bin/sleep\", \"1000\"]\n")
        .start();
    let t = Duration::from_secs(10);
    r.log.wait_for("metrics: writing", t);
    r.wait_state("web", "running", t);
    for _ in 0..3 {
        let out = r.ctl(&["stop", "web"]);
        assert!(out.status.success(), "{out:?}");
        r.wait_state("web", "stopped", t);
        let out = r.ctl(&["start", "web"]);
        assert!(out.status.success(), "{out:?}");
        r.wait_state("web", "running", t);
    }
    // The writer thread is still stuck in its first open: no file, the
    // FIFO untouched.
    assert!(!textfile.join("tether.prom").exists());
    assert!(std::fs::metadata(textfile.join("tether.prom.tmp"))
        .unwrap()
        .file_type()
        .is_fifo());
}
