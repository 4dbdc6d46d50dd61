//! tether-watchdogd against the simulated hardware (`hw::SimWatchdog`), with
//! the test playing init: it holds the heartbeat pipes, beats for the layers,
//! and reads watchdogd's supervision beats.
//!
//! Timings (`Timings::fast`): beat 100 ms, stale 1 s, hardware 2 s. Upper
//! bounds carry generous margins for a loaded 2-core machine.
//!
//! The tests run one at a time (each holds `ONE_AT_A_TIME` for its whole
//! life, as `hostile.rs` does): a 100 ms beat and a 1 s stale timeout are
//! met by one watchdogd on a loaded 2-core machine, not by twelve at once.

use nix::sys::signal::Signal;
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tether_integration::bins;
use tether_integration::hw::{LogSource, RigOptions, Timings, WatchdogdRig};

const ALERT_PRI: &str = "<25>"; // daemon.alert
const SLACK: Duration = Duration::from_millis(600);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A rig that holds the serialising lock until it is dropped (the child is
/// killed first: fields drop in order).
struct Rig {
    r: WatchdogdRig,
    _serial: MutexGuard<'static, ()>,
}

impl Deref for Rig {
    type Target = WatchdogdRig;
    fn deref(&self) -> &WatchdogdRig {
        &self.r
    }
}

impl DerefMut for Rig {
    fn deref_mut(&mut self) -> &mut WatchdogdRig {
        &mut self.r
    }
}

fn rig(label: &str, opts: RigOptions) -> Rig {
    let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    Rig {
        r: WatchdogdRig::start(&bins::bin("tether-watchdogd"), label, opts),
        _serial: serial,
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Waits until the device is being petted.
fn wait_petting(r: &Rig) {
    assert!(
        r.sim().wait_for_pets(3, secs(5.0)),
        "no pets arrived:\n{}",
        r.log.dump()
    );
}

fn alert_lines(r: &Rig) -> Vec<String> {
    r.log
        .texts(LogSource::Syslog)
        .into_iter()
        .filter(|l| l.starts_with(ALERT_PRI))
        .collect()
}

#[test]
fn both_layers_beating_keep_the_device_petted_without_reset() {
    let r = rig("wd-healthy", RigOptions::default());
    wait_petting(&r);
    let start = Instant::now();
    r.pipe("init"); // both layers registered
    r.to_init.drain();
    // Three hardware timeouts' worth of pets (every 100 ms): the event is
    // the 60th pet, not a fixed sleep.
    let pets0 = r.sim().pet_count();
    assert!(
        r.sim().wait_for_pets(pets0 + 60, secs(12.0)),
        "pets stopped:\n{}",
        r.log.dump()
    );
    let now = Instant::now();
    assert!(
        r.sim().resets().is_empty(),
        "unexpected reset:\n{}",
        r.log.dump()
    );
    let span = now.saturating_duration_since(start);
    assert!(
        span >= Timings::fast().hardware_timeout * 2,
        "60 pets came within {span:?}"
    );
    let gap = r.sim().max_gap_between(start, now).unwrap();
    assert!(gap < secs(1.0), "a gap of {gap:?} between pets");
    assert!(!r.sim().saw_magic_close());
    let beats_to_init = r.to_init.drain();
    assert!(
        beats_to_init >= 20,
        "watchdogd beats to init every 100 ms, got {beats_to_init}"
    );
    let live = r.log.wait_for(
        LogSource::Syslog,
        &["liveness: init ok, restarter ok", "last pet"],
        secs(1.0),
    );
    assert!(
        live.is_some(),
        "no healthy liveness line:\n{}",
        r.log.dump()
    );
    assert!(alert_lines(&r).is_empty());
}

#[test]
fn stale_layer_stops_petting_within_its_timeout_and_the_hardware_resets() {
    let r = rig("wd-stale", RigOptions::default());
    wait_petting(&r);
    std::thread::sleep(secs(0.3));
    let last_beat = r.beater.pause("restarter").expect("restarter has beaten");
    let reset = r
        .sim()
        .wait_for_reset(secs(8.0))
        .unwrap_or_else(|| panic!("no reset:\n{}", r.log.dump()));
    let last_pet = r.sim().last_pet().unwrap();
    let gap = last_pet.saturating_duration_since(last_beat);
    let t = Timings::fast();
    assert!(
        gap <= t.stale_timeout + t.beat_interval + SLACK,
        "petting went on {gap:?} after the layer's last beat"
    );
    assert!(
        gap >= secs(0.6),
        "petting stopped too early: {gap:?} after the last beat"
    );
    assert!(reset.silence > t.hardware_timeout);
    // The record names the layer, and was written before the reset.
    let rec = r.reset_reason().expect("reset-reason written");
    assert!(rec.contains("cause=watchdog"), "{rec}");
    assert!(rec.contains("layer=restarter"), "{rec}");
    let silent_ms: u64 = rec
        .lines()
        .find_map(|l| l.strip_prefix("silent_ms="))
        .and_then(|v| v.parse().ok())
        .expect("silent_ms");
    assert!(silent_ms >= 1000, "{rec}");
    // One ALERT line, naming the layer.
    let alerts = alert_lines(&r);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].contains("restarter") && alerts[0].contains("silent"),
        "{alerts:?}"
    );
    // watchdogd itself still beats to init while withholding pets.
    r.to_init.drain();
    let deadline = Instant::now() + secs(2.0);
    while r.to_init.drain() == 0 {
        assert!(
            Instant::now() < deadline,
            "watchdogd must keep beating to init"
        );
        std::thread::sleep(secs(0.02));
    }
}

#[test]
fn layer_back_before_the_hardware_fires_resumes_petting_without_reset() {
    let r = rig("wd-recover", RigOptions::default());
    wait_petting(&r);
    r.beater.pause("restarter");
    let alert = r
        .log
        .wait_for(LogSource::Syslog, &[ALERT_PRI, "restarter"], secs(4.0));
    assert!(alert.is_some(), "no ALERT:\n{}", r.log.dump());
    std::thread::sleep(secs(0.2));
    let resumed_at = Instant::now();
    r.beater.resume("restarter");
    let back = r.log.wait_for(
        LogSource::Syslog,
        &["restarter", "beating again", "resuming petting"],
        secs(2.0),
    );
    assert!(back.is_some(), "recovery not logged:\n{}", r.log.dump());
    assert!(
        r.sim().wait_for_pet_after(resumed_at, secs(1.0)).is_some(),
        "petting did not resume"
    );
    // Well past the hardware timeout counted from the stop: the event is a
    // pet after that moment (the simulator would have reset by then).
    let stop_at = alert.as_ref().map(|l| l.at).unwrap_or(resumed_at);
    assert!(r
        .sim()
        .wait_for_pet_after(
            stop_at + Timings::fast().hardware_timeout + SLACK,
            secs(5.0)
        )
        .is_some());
    assert!(
        r.sim().resets().is_empty(),
        "reset despite recovery:\n{}",
        r.log.dump()
    );
    assert!(r.sim().last_pet_age().unwrap() < secs(1.0));
    let rec = r.reset_reason().unwrap();
    assert!(
        rec.contains("cause=unknown"),
        "a recovered layer is not blamed: {rec}"
    );
    assert_eq!(alert_lines(&r).len(), 1);
}

#[test]
fn kill_9_never_writes_v_and_the_hardware_resets() {
    let mut r = rig("wd-kill9", RigOptions::default());
    wait_petting(&r);
    r.kill9();
    let reset = r.sim().wait_for_reset(secs(6.0));
    assert!(
        reset.is_some(),
        "the armed device must reset after watchdogd died"
    );
    assert!(reset.unwrap().silence > Timings::fast().hardware_timeout);
    assert!(!r.sim().saw_magic_close(), "no V on a crash path");
}

#[test]
fn second_start_reports_how_the_previous_run_ended() {
    let mut r = rig("wd-restart", RigOptions::default());
    wait_petting(&r);
    r.beater.pause("restarter");
    assert!(r
        .log
        .wait_for(LogSource::Syslog, &[ALERT_PRI, "restarter"], secs(4.0))
        .is_some());
    r.kill9();
    r.beater.resume("restarter");
    r.spawn();
    let line = r
        .log
        .wait_for(
            LogSource::Syslog,
            &["previous boot ended: watchdog reset: restarter silent"],
            secs(4.0),
        )
        .unwrap_or_else(|| panic!("previous end not reported:\n{}", r.log.dump()));
    assert!(line.text.contains("(boot 1)"), "{}", line.text);
    // The new run pre-wrote unknown and bumped the boot counter.
    let deadline = Instant::now() + secs(2.0);
    loop {
        let rec = r.reset_reason().unwrap_or_default();
        if rec.contains("boot=2") && rec.contains("cause=unknown") {
            break;
        }
        assert!(Instant::now() < deadline, "record not rewritten: {rec}");
        std::thread::sleep(secs(0.05));
    }
    assert_eq!(
        std::fs::read_to_string(r.state_dir.join("boot-count"))
            .unwrap()
            .trim(),
        "2"
    );
    assert!(r.sim().wait_for_pets(r.sim().pet_count() + 3, secs(3.0)));
}

#[test]
fn sigterm_exits_without_disarming() {
    let mut r = rig("wd-sigterm", RigOptions::default());
    wait_petting(&r);
    r.signal(Signal::SIGTERM);
    let st = r.wait_exit(secs(3.0)).expect("watchdogd exits on SIGTERM");
    assert!(st.success(), "{st:?}");
    assert!(
        r.sim().wait_for_reset(secs(6.0)).is_some(),
        "the device stays armed after SIGTERM"
    );
    assert!(!r.sim().saw_magic_close());
    assert!(r
        .log
        .wait_for(
            LogSource::Syslog,
            &["SIGTERM", "without disarming"],
            secs(1.0)
        )
        .is_some());
}

#[test]
fn sigusr1_with_allow_disarm_writes_v_and_exits() {
    let mut r = rig(
        "wd-disarm",
        RigOptions {
            allow_disarm: true,
            ..RigOptions::default()
        },
    );
    wait_petting(&r);
    r.signal(Signal::SIGUSR1);
    let st = r
        .wait_exit(secs(3.0))
        .expect("watchdogd exits after disarming");
    assert!(st.success(), "{st:?}");
    assert!(
        r.sim().wait_for_disarm(secs(2.0)),
        "V then close must disarm"
    );
    assert!(r.sim().saw_magic_close());
    std::thread::sleep(Timings::fast().hardware_timeout + SLACK);
    assert!(
        r.sim().resets().is_empty(),
        "a disarmed device does not reset"
    );
}

#[test]
fn sigusr1_without_allow_disarm_is_refused_and_petting_goes_on() {
    let mut r = rig("wd-nodisarm", RigOptions::default());
    wait_petting(&r);
    r.signal(Signal::SIGUSR1);
    let refused = r
        .log
        .wait_for(LogSource::Syslog, &["SIGUSR1", "refused"], secs(2.0));
    assert!(refused.is_some(), "no refusal logged:\n{}", r.log.dump());
    let after = Instant::now();
    assert!(
        r.sim().wait_for_pet_after(after, secs(1.0)).is_some(),
        "petting must go on"
    );
    // The event that shows it went on running: its next liveness line.
    let refused_at = refused.as_ref().map(|l| l.at).unwrap_or(after);
    let deadline = Instant::now() + secs(3.0);
    while !r
        .log
        .matching(LogSource::Syslog, &["liveness:"])
        .iter()
        .any(|l| l.at > refused_at)
    {
        assert!(
            Instant::now() < deadline,
            "no liveness line after the refusal"
        );
        std::thread::sleep(secs(0.02));
    }
    assert!(r.running(), "watchdogd must keep running");
    assert!(!r.sim().saw_magic_close());
    assert!(r.sim().resets().is_empty());
}

#[test]
fn absent_device_is_retried_until_it_appears() {
    let mut r = rig(
        "wd-absent",
        RigOptions {
            device_present: false,
            ..RigOptions::default()
        },
    );
    let waiting = r
        .log
        .wait_for(LogSource::Syslog, &["not available yet"], secs(3.0));
    assert!(waiting.is_some(), "absence not logged:\n{}", r.log.dump());
    r.to_init.drain();
    // The event: a liveness line saying the device is still absent (logged
    // every second), after which the absence must still be one line.
    assert!(r
        .log
        .wait_for(
            LogSource::Syslog,
            &["liveness:", "device absent for"],
            secs(3.0)
        )
        .is_some());
    assert_eq!(
        r.log
            .matching(LogSource::Syslog, &["not available yet"])
            .len(),
        1,
        "the absence is logged once:\n{}",
        r.log.dump()
    );
    // Beats to init go on while the device is absent (polled for up to 3 s:
    // this checks that they flow, not their timing, which other tests do).
    let deadline = std::time::Instant::now() + secs(3.0);
    let mut beats = r.to_init.drain();
    while beats == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(secs(0.05));
        beats = r.to_init.drain();
    }
    assert!(beats > 0, "beats to init go on while the device is absent");
    // The layers keep beating; their pipes are drained (they would fill
    // after 64 KiB only, so check the daemon's view instead: no ALERT).
    assert!(
        alert_lines(&r).is_empty(),
        "beats are drained while waiting:\n{}",
        r.log.dump()
    );
    r.create_device();
    assert!(
        r.sim().wait_for_pets(3, secs(3.0)),
        "no pets after the device appeared:\n{}",
        r.log.dump()
    );
    assert!(r
        .log
        .wait_for(LogSource::Syslog, &["appeared after"], secs(1.0))
        .is_some());
}

#[test]
fn bad_config_runs_on_defaults_and_says_so_loudly() {
    let opts = RigOptions {
        timings: Timings::defaults(),
        config_text: Some("[timing\nbeat_interval = 1s\n".into()),
        paths_as_flags: true,
        ..RigOptions::default()
    };
    let r = rig("wd-badconfig", opts);
    let line = r.log.wait_for(
        LogSource::Syslog,
        &["CONFIGURATION ERROR", "built-in defaults"],
        secs(3.0),
    );
    let line = line.unwrap_or_else(|| panic!("no loud config error:\n{}", r.log.dump()));
    assert!(
        line.text.starts_with("<27>"),
        "logged at ERROR: {}",
        line.text
    );
    assert!(
        line.text.contains("tether.toml"),
        "names the file: {}",
        line.text
    );
    assert!(r
        .log
        .wait_for(LogSource::Stderr, &["CONFIGURATION ERROR"], secs(1.0))
        .is_some());
    // Defaults: pets once per second, and the device path from --device.
    assert!(
        r.sim().wait_for_pets(2, secs(4.0)),
        "not petting on defaults:\n{}",
        r.log.dump()
    );
    assert!(
        r.log
            .wait_for(LogSource::Syslog, &["hardware timeout 30s"], secs(1.0))
            .is_some()
            || r.log
                .wait_for(LogSource::Syslog, &["nominal timeout 30s"], secs(1.0))
                .is_some()
    );
}

#[test]
fn unwritable_state_dir_keeps_petting_and_is_retried() {
    let parent = bins::TempDir::new("wd-statedir");
    let blocker = parent.join("blocker");
    std::fs::write(&blocker, "a file where a directory should be").unwrap();
    let opts = RigOptions {
        state_dir: Some(blocker.join("state")),
        ..RigOptions::default()
    };
    let r = rig("wd-unwritable", opts);
    let err = r.log.wait_for(
        LogSource::Syslog,
        &["cannot write records", "petting continues"],
        secs(3.0),
    );
    assert!(err.is_some(), "no loud record error:\n{}", r.log.dump());
    wait_petting(&r);
    std::fs::remove_file(&blocker).unwrap();
    let ok = r
        .log
        .wait_for(LogSource::Syslog, &["writable again"], secs(4.0));
    assert!(ok.is_some(), "records not retried:\n{}", r.log.dump());
    let rec = std::fs::read_to_string(blocker.join("state").join("reset-reason")).unwrap();
    assert!(
        rec.contains("cause=unknown") && rec.contains("boot=1"),
        "{rec}"
    );
    assert!(r.sim().resets().is_empty());
    assert_eq!(
        r.log
            .matching(LogSource::Syslog, &["cannot write records"])
            .len(),
        1,
        "logged once"
    );
}

#[test]
fn sighup_reload_applies_new_stale_timeouts_and_keeps_settings_on_a_bad_file() {
    let r = rig("wd-reload", RigOptions::default());
    wait_petting(&r);
    // A longer stale timeout for the restarter only.
    let text = std::fs::read_to_string(&r.config_path).unwrap();
    let longer = format!("{text}\n[timing.stale_timeout_by_layer]\nrestarter = \"4s\"\n");
    std::fs::write(&r.config_path, longer).unwrap();
    r.signal(Signal::SIGHUP);
    let reloaded = r
        .log
        .wait_for(LogSource::Syslog, &["SIGHUP", "reloaded"], secs(2.0));
    assert!(reloaded.is_some(), "reload not logged:\n{}", r.log.dump());
    // Silent for twice the old 1 s timeout: still petting.
    let paused_at = Instant::now();
    r.beater.pause("restarter");
    // The event: a pet at twice the old timeout after the pause.
    assert!(r
        .sim()
        .wait_for_pet_after(paused_at + secs(2.0), secs(3.0))
        .is_some());
    assert!(
        alert_lines(&r).is_empty(),
        "the reloaded 4 s timeout must apply:\n{}",
        r.log.dump()
    );
    r.beater.resume("restarter");
    // A broken file is refused and the running settings stay.
    std::fs::write(&r.config_path, "[timing]\nbeat_interval = \"soon\"\n").unwrap();
    r.signal(Signal::SIGHUP);
    let refused = r
        .log
        .wait_for(LogSource::Syslog, &["reload failed", "keeping"], secs(2.0));
    assert!(
        refused.is_some(),
        "bad reload not reported:\n{}",
        r.log.dump()
    );
    let after = Instant::now();
    assert!(r.sim().wait_for_pet_after(after, secs(1.0)).is_some());
    assert!(r.sim().resets().is_empty());
}

fn silent_ms(rec: &str) -> u64 {
    rec.lines()
        .find_map(|l| l.strip_prefix("silent_ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no silent_ms in {rec}"))
}

/// Issue 11, item 2: watchdogd stopped (SIGSTOP) from 1.0 s to 2.5 s, init's
/// last beat at 1.1 s, stale_timeout 1 s. The byte init wrote at 1.1 s is
/// found after SIGCONT; it must be credited no later than when the pipe was
/// last seen empty (before the stall), so watchdogd stops petting at once
/// instead of petting for another second, and the record's silence is the
/// real one (about 1.4 s), not 1.0 s. The hardware, petted last before the
/// stall, resets within stale_timeout + hardware_timeout of init's last
/// beat. Figures on stderr: `--nocapture`.
#[test]
fn a_stalled_watchdogd_credits_old_bytes_to_before_the_stall() {
    let r = rig("wd-stall", RigOptions::default());
    wait_petting(&r);
    std::thread::sleep(secs(0.3));
    let t = Timings::fast();
    r.signal(Signal::SIGSTOP);
    let stopped_at = Instant::now();
    // init beats once more while watchdogd is stopped, then is silent.
    let before = r.beater.beats("init");
    while r.beater.beats("init") == before {
        std::thread::sleep(secs(0.01));
    }
    let last_beat = r.beater.pause("init").expect("init has beaten");
    assert!(
        last_beat > stopped_at,
        "the last beat falls inside the stall"
    );
    std::thread::sleep((stopped_at + secs(1.5)).saturating_duration_since(Instant::now()));
    let cont_at = Instant::now();
    r.signal(Signal::SIGCONT);
    let alert = r
        .log
        .wait_for(LogSource::Syslog, &[ALERT_PRI, "layer init"], secs(3.0))
        .unwrap_or_else(|| panic!("no ALERT for init:\n{}", r.log.dump()));
    let alert_delay = alert.at.saturating_duration_since(cont_at);
    let said = r.log.wait_for(
        LogSource::Syslog,
        &["own loop stalled for about 1."],
        secs(2.0),
    );
    assert!(said.is_some(), "the stall is not logged:\n{}", r.log.dump());
    let reset = r
        .sim()
        .wait_for_reset(secs(6.0))
        .unwrap_or_else(|| panic!("no reset:\n{}", r.log.dump()));
    let pets_after: Vec<Instant> = r
        .sim()
        .pets()
        .into_iter()
        .filter(|p| *p >= cont_at)
        .collect();
    let rec = r.reset_reason().expect("reset-reason written");
    let true_silence = cont_at.saturating_duration_since(last_beat);
    let recorded = Duration::from_millis(silent_ms(&rec));
    let at_reset = reset.at.saturating_duration_since(last_beat);
    let bound = t.stale_timeout + t.hardware_timeout;
    eprintln!(
        "FIGURE watchdogd stall 1.5 s, init silent: ALERT {:?} after SIGCONT, {} pets after SIGCONT, \
         record silent_ms={} (true silence at SIGCONT {:?}), init silent {:?} at the reset (bound stale+hardware {:?})",
        alert_delay,
        pets_after.len(),
        recorded.as_millis(),
        true_silence,
        at_reset,
        bound
    );
    assert!(
        pets_after.len() <= 1,
        "petting went on after SIGCONT although init was stale: {} pets\n{}",
        pets_after.len(),
        r.log.dump()
    );
    assert!(rec.contains("layer=init"), "{rec}");
    assert!(
        recorded + secs(0.05) >= true_silence && recorded <= true_silence + secs(0.4),
        "silent_ms {recorded:?} against the true silence {true_silence:?}:\n{rec}"
    );
    assert!(
        at_reset <= bound + SLACK,
        "reset {at_reset:?} after init's last beat, bound {bound:?}"
    );
}

/// Issue 11, item 6: a `TETHER_HEARTBEATS` that is set but unusable (empty,
/// or not UTF-8) means no petting at all and a loud error, never "no layer,
/// pet unconditionally".
#[test]
fn an_unusable_heartbeat_list_never_pets_and_says_so() {
    use std::os::unix::ffi::OsStrExt;
    for (label, value, why) in [
        ("wd-hb-empty", &b""[..], "names no layer"),
        ("wd-hb-utf8", &b"init=3,\xffrestarter=4"[..], "not UTF-8"),
        ("wd-hb-bad", &b"init=three"[..], "malformed"),
    ] {
        let opts = RigOptions {
            heartbeats_env: Some(Some(std::ffi::OsStr::from_bytes(value).to_os_string())),
            ..RigOptions::default()
        };
        let r = rig(label, opts);
        let err = r
            .log
            .wait_for(LogSource::Syslog, &[why, "NOT PETTING"], secs(3.0))
            .unwrap_or_else(|| panic!("{label}: no loud error:\n{}", r.log.dump()));
        assert!(err.text.starts_with("<27>"), "at ERROR: {}", err.text);
        assert!(r
            .log
            .wait_for(LogSource::Syslog, &[ALERT_PRI, "NOT PETTING"], secs(2.0))
            .is_some());
        // The event that shows a whole liveness period went by: its line,
        // still not petting.
        let live = r
            .log
            .wait_for(LogSource::Syslog, &["liveness:", "NOT PETTING"], secs(4.0));
        assert!(
            live.is_some(),
            "{label}: no liveness line:\n{}",
            r.log.dump()
        );
        assert_eq!(r.sim().pet_count(), 0, "{label}: petted:\n{}", r.log.dump());
        let rec = r.reset_reason().unwrap_or_default();
        assert!(rec.contains("cause=watchdog"), "{label}: {rec}");
    }
}

/// Issue 11, item 6: without `TETHER_HEARTBEATS` watchdogd refuses to run
/// unless told `--no-layers`, and then it pets unconditionally, saying so.
#[test]
fn without_heartbeats_it_pets_only_with_no_layers() {
    let opts = RigOptions {
        heartbeats_env: Some(None),
        ..RigOptions::default()
    };
    let mut r = rig("wd-hb-unset", opts.clone());
    let st = r.wait_exit(secs(3.0)).expect("refuses to run");
    assert_eq!(st.code(), Some(2), "{st:?}");
    assert!(r
        .log
        .wait_for(
            LogSource::Stderr,
            &["TETHER_HEARTBEATS is not set", "--no-layers"],
            secs(1.0)
        )
        .is_some());
    assert_eq!(r.sim().pet_count(), 0);
    drop(r);
    let r = rig(
        "wd-hb-nolayers",
        RigOptions {
            args: vec!["--no-layers".into()],
            ..opts
        },
    );
    wait_petting(&r);
    assert!(r
        .log
        .wait_for(
            LogSource::Syslog,
            &["--no-layers given", "unconditional"],
            secs(1.0)
        )
        .is_some());
}

/// Issue 11, item 7: with init's running timings passed in
/// `TETHER_CHAIN_TIMING`, a reload whose stale timeout would not exceed
/// init's hang_timeout + restart_delay + startup_grace is refused with the
/// inequality, and the running stale timeout stays.
#[test]
fn a_reload_that_overlaps_the_running_chain_is_refused() {
    let opts = RigOptions {
        env: vec![(
            "TETHER_CHAIN_TIMING".into(),
            "hang_timeout_ms=600,restart_delay_ms=100,startup_grace_ms=100,beat_interval_ms=100"
                .into(),
        )],
        ..RigOptions::default()
    };
    let r = rig("wd-chain", opts);
    wait_petting(&r);
    // Fine by its own values (hang 300 ms + 100 + max(100, 200) < 700 ms)
    // but not against init's 600 + 100 + max(100, 200) = 900 ms.
    let text = std::fs::read_to_string(&r.config_path).unwrap();
    let shorter = text.replace("stale_timeout = \"1s\"", "stale_timeout = \"700ms\"");
    assert_ne!(text, shorter);
    std::fs::write(&r.config_path, shorter).unwrap();
    r.signal(Signal::SIGHUP);
    let refused = r.log.wait_for(
        LogSource::Syslog,
        &[
            "reload refused",
            "stale_timeout (init) must be > hang_timeout + max(restart_delay, KILL_REAP_MIN 100ms) + max(startup_grace, START_LATENCY_MIN 200ms)",
            // init's 100 ms startup_grace counts as the 200 ms start latency.
            "600ms + 100ms + 200ms = 900ms",
        ],
        secs(3.0),
    );
    assert!(refused.is_some(), "not refused:\n{}", r.log.dump());
    // The running 1 s stays: a pause of 850 ms (over 700 ms) is no stop.
    // The event: petting goes on past that point and the ALERT comes only
    // after the 1 s.
    let paused = r.beater.pause("restarter").unwrap();
    let alert = r
        .log
        .wait_for(LogSource::Syslog, &[ALERT_PRI, "restarter"], secs(4.0))
        .unwrap_or_else(|| panic!("no ALERT:\n{}", r.log.dump()));
    let after = alert.at.saturating_duration_since(paused);
    assert!(
        after >= secs(0.95),
        "stopped after {after:?}: the 700 ms applied"
    );
}

/// A shared object that makes every `fsync`/`fdatasync` of the process it
/// is preloaded into take `TETHER_TEST_FSYNC_MS` milliseconds, as a dying
/// eMMC does: the calling thread blocks in the call (the method for issue
/// 11, item 4, where `dm-delay` is not available: no device-mapper in this
/// kernel). Built with the system C compiler into `dir`.
fn slow_fsync_shim(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("slow_fsync.c");
    let so = dir.join("slow_fsync.so");
    std::fs::write(
        &src,
        r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
static void slow(void) {
    const char *s = getenv("TETHER_TEST_FSYNC_MS");
    long ms = s ? atol(s) : 0;
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&t, &t) != 0) {}
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    slow();
    return real(fd);
}
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    slow();
    return real(fd);
}
"#,
    )
    .unwrap();
    let st = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("run cc (the C compiler builds the slow-fsync shim)");
    assert!(st.success(), "cc failed: {st:?}");
    so
}

/// Issue 11, item 4: with every fsync taking 2 s (as long as the hardware
/// timeout), the start-up records and the record written on a resume never
/// delay a pet: they are written by the record thread, after the pet. The
/// longest pet gap outside the deliberate stop is printed as a figure
/// (`--nocapture`); before the fix the first pet came only after the
/// start-up writes (8 s) and the resume waited for two fsyncs.
#[test]
fn a_slow_state_disk_never_delays_a_pet() {
    let scratch = bins::TempDir::new("wd-slowdisk-shim");
    let shim = slow_fsync_shim(scratch.path());
    let fsync = Duration::from_millis(2000);
    let opts = RigOptions {
        env: vec![
            ("LD_PRELOAD".into(), shim.into_os_string()),
            (
                "TETHER_TEST_FSYNC_MS".into(),
                fsync.as_millis().to_string().into(),
            ),
        ],
        ..RigOptions::default()
    };
    let r = rig("wd-slowdisk", opts);
    assert!(
        r.sim().wait_for_pets(1, secs(20.0)),
        "no pet:\n{}",
        r.log.dump()
    );
    let first = r.sim().pets()[0];
    // From the daemon's own start line (before any record is asked for).
    let spawned = r
        .log
        .wait_for(LogSource::Stderr, &["starting: watching"], secs(2.0))
        .expect("start line")
        .at;
    std::thread::sleep(secs(1.0));
    // A stop and a resume: the resume's record goes to the slow disk.
    let paused = Instant::now();
    r.beater.pause("restarter");
    assert!(r
        .log
        .wait_for(LogSource::Syslog, &[ALERT_PRI, "restarter"], secs(4.0))
        .is_some());
    r.beater.resume("restarter");
    let resumed = r
        .log
        .wait_for(
            LogSource::Syslog,
            &["restarter", "resuming petting"],
            secs(4.0),
        )
        .unwrap_or_else(|| panic!("no resume:\n{}", r.log.dump()))
        .at;
    // The event: the writer says the records asked for at the stop (and
    // the resume, queued behind them) are durable.
    let landed = r.log.wait_for(
        LogSource::Syslog,
        &["the stop record is durable", "after it was asked for"],
        secs(30.0),
    );
    assert!(landed.is_some(), "records never written:\n{}", r.log.dump());
    assert!(
        r.reset_reason()
            .unwrap_or_default()
            .contains("cause=unknown"),
        "the resume's record"
    );
    let end = Instant::now();
    let before = r.sim().max_gap_between(first, paused).unwrap_or_default();
    let after = r.sim().max_gap_between(resumed, end).unwrap_or_default();
    let first_after = first.saturating_duration_since(spawned);
    eprintln!(
        "FIGURE slow state disk (every fsync {fsync:?}): first pet {first_after:?} after its start line; \
         longest pet gap {before:?} before the stop, {after:?} from the resume until its record was durable ({:?})",
        end.saturating_duration_since(resumed)
    );
    assert!(r.sim().resets().is_empty(), "reset:\n{}", r.log.dump());
    assert!(
        first_after < fsync && before < fsync / 2 && after < fsync / 2,
        "a record write delayed a pet: first {first_after:?}, gaps {before:?} / {after:?}"
    );
}
