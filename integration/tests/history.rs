//! The reset history (issue 16): watchdogd appends the previous boot's end
//! to `STATE/history` at start, and `tetherctl history [--json]` shows it.
//! watchdogd runs against the simulated hardware (`hw::SimWatchdog`) with
//! the test playing init, as in `watchdogd.rs`.

use std::path::Path;
use std::time::{Duration, Instant};
use tether_integration::bins;
use tether_integration::hw::{LogSource, RigOptions, WatchdogdRig};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn tetherctl(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bins::bin("tetherctl"))
        .args(args)
        .output()
        .expect("run tetherctl")
}

fn history_json(state: &Path) -> serde_json::Value {
    let out = tetherctl(&["history", "--json", "--state-dir", state.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("history --json is JSON")
}

#[test]
fn a_watchdog_reset_and_the_next_start_land_in_the_history() {
    let mut r = WatchdogdRig::start(
        &bins::bin("tether-watchdogd"),
        "hist-reset",
        RigOptions::default(),
    );
    assert!(r.sim().wait_for_pets(3, secs(5.0)), "{}", r.log.dump());
    r.beater.pause("restarter");
    assert!(r
        .log
        .wait_for(LogSource::Syslog, &["<25>", "restarter"], secs(4.0))
        .is_some());
    r.kill9();
    r.beater.resume("restarter");
    r.spawn();
    assert!(r
        .log
        .wait_for(
            LogSource::Syslog,
            &["previous boot ended: watchdog reset"],
            secs(4.0)
        )
        .is_some());
    // Appended by the record writer after that line: wait for the file.
    let deadline = Instant::now() + secs(5.0);
    let h = loop {
        let v = history_json(&r.state_dir);
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            break v;
        }
        assert!(Instant::now() < deadline, "history not written: {v}");
        std::thread::sleep(secs(0.05));
    };
    // The first start found no record (nothing to append); the second
    // found boot 1's: ended by a (simulated) watchdog reset, restarter silent.
    assert_eq!(h.as_array().unwrap().len(), 1, "{h}");
    let last = &h[0];
    assert_eq!(last["cause"], "watchdog", "{h}");
    assert_eq!(last["layer"], "restarter", "{h}");
    assert!(last["silent_ms"].as_u64().unwrap() >= 1000, "{h}");
    assert_eq!(
        (last["boot"].as_u64(), last["next_boot"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(
        last["recorded_utc"].as_str().unwrap().starts_with("20"),
        "{h}"
    );
    let text = tetherctl(&["history", "--state-dir", r.state_dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("watchdog") && text.contains("restarter"),
        "{text}"
    );
}

#[test]
fn a_malformed_history_is_a_clear_error_naming_file_and_line() {
    let d = bins::TempDir::new("hist-bad");
    std::fs::write(
        d.join("history"),
        "cause=reboot by=x\ncause=watchdog silent_ms=lots\n",
    )
    .unwrap();
    let out = tetherctl(&["history", "--state-dir", d.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/history: malformed: line 2: `silent_ms` is not a number"),
        "{err}"
    );
}
