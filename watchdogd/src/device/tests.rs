//! The device core driven with the real gate on a fake clock, against a
//! scripted device ("absent until 1 s", "gone at 1.45 s"). The `Sim` checks
//! on every action that nothing that pings the hardware (open, configure,
//! pet) is emitted while the gate says stop.

use super::*;
use crate::gate::Gate;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn t(n: u64) -> MonoTime {
    MonoTime::from_duration(ms(n))
}

/// The device as the shell would find it.
struct World {
    present_from: MonoTime,
    /// Pets on a descriptor opened before this moment fail with `Gone`
    /// from this moment on.
    gone_at: Option<MonoTime>,
    simulated: bool,
    opened_at: Option<MonoTime>,
    /// Opens fail from `gone_at` to this moment.
    back_at: MonoTime,
}

struct Sim {
    now: MonoTime,
    gate: Gate,
    dev: Device,
    world: World,
    /// Between a Stop and its Resume.
    stopped: bool,
    /// (time, action)
    log: Vec<(MonoTime, Out)>,
    /// Pinging actions emitted while stopped: must stay empty.
    violations: Vec<(MonoTime, Out)>,
}

impl Sim {
    fn new(world: World) -> Sim {
        Sim {
            now: MonoTime::ZERO,
            gate: Gate::new([("init", ms(1000))], MonoTime::ZERO, ms(1000)),
            dev: Device::new(MonoTime::ZERO, 8, ms(100)),
            world,
            stopped: false,
            log: Vec::new(),
            violations: Vec::new(),
        }
    }

    fn present() -> Sim {
        Sim::new(World {
            present_from: MonoTime::ZERO,
            gone_at: None,
            simulated: false,
            opened_at: None,
            back_at: MonoTime::ZERO,
        })
    }

    /// One loop turn: evaluate the gate, tick the device, run the actions.
    fn turn(&mut self) {
        let d = self.gate.evaluate(self.now);
        match d {
            Decision::Stop { .. } => self.stopped = true,
            Decision::Resume { .. } => self.stopped = false,
            Decision::Pet | Decision::Withhold { .. } => {}
        }
        self.inject_with(&d, In::Tick);
    }

    fn inject(&mut self, input: In) {
        let d = self.gate.evaluate(self.now);
        assert!(
            matches!(d, Decision::Pet | Decision::Withhold { .. }),
            "inject between turns only"
        );
        self.inject_with(&d, input);
    }

    fn inject_with(&mut self, d: &Decision, input: In) {
        let outs = self.dev.handle(self.now, d, input);
        for o in outs {
            if self.stopped && matches!(o, Out::TryOpen | Out::Configure { .. } | Out::Pet) {
                self.violations.push((self.now, o.clone()));
            }
            self.log.push((self.now, o.clone()));
            let reply = match o {
                Out::TryOpen
                    if self.now >= self.world.present_from
                        && !self
                            .world
                            .gone_at
                            .is_some_and(|g| self.now >= g && self.now < self.world.back_at) =>
                {
                    self.world.opened_at = Some(self.now);
                    Some(In::Opened {
                        simulated: self.world.simulated,
                    })
                }
                Out::TryOpen => Some(In::OpenFailed(DevErr::Absent)),
                Out::Configure { secs } => Some(In::Configured {
                    armed_secs: Some(secs),
                }),
                Out::Pet => {
                    let gone = match (self.world.gone_at, self.world.opened_at) {
                        (Some(g), Some(o)) => o < g && self.now >= g,
                        _ => false,
                    };
                    Some(if gone {
                        In::PetFailed(DevErr::Gone)
                    } else {
                        In::PetDone
                    })
                }
                Out::Close | Out::MagicClose | Out::WriteRecord(_) | Out::Log(_) => None,
            };
            if let Some(r) = reply {
                self.inject_with(d, r);
            }
        }
    }

    /// Turns every 10 ms up to `end`; `beat` says whether init beats at a
    /// given time (every 100 ms).
    fn advance_to(&mut self, end: MonoTime, beat: impl Fn(MonoTime) -> bool) {
        while self.now < end {
            self.now = self.now + ms(10);
            if self.now.as_duration().as_millis().is_multiple_of(100) && beat(self.now) {
                self.gate.beat("init", self.now);
            }
            self.turn();
        }
    }

    /// Nothing was done since the last `take_actions`.
    fn assert_idle(&mut self) {
        let log = self.take_actions();
        assert!(log.is_empty(), "expected no action, got {log:#?}");
    }

    fn take_actions(&mut self) -> Vec<(MonoTime, Out)> {
        std::mem::take(&mut self.log)
    }

    fn pets_between(&self, log: &[(MonoTime, Out)], from: MonoTime, to: MonoTime) -> usize {
        log.iter()
            .filter(|(at, o)| *o == Out::Pet && *at >= from && *at < to)
            .count()
    }
}

fn position(log: &[(MonoTime, Out)], want: impl Fn(&Out) -> bool) -> usize {
    log.iter()
        .position(|(_, o)| want(o))
        .unwrap_or_else(|| panic!("not found in {log:#?}"))
}

/// DESIGN.md "Who watches whom", init hang: petting stops, and no device
/// operation that pings falls between the Stop and its Resume, although the
/// device vanished just before the stop (and was back during it) and a reload changed the hardware
/// timeout during it (issue 11, item 3).
#[test]
fn no_pet_configure_or_reopen_falls_between_a_stop_and_its_resume() {
    let mut s = Sim::new(World {
        present_from: MonoTime::ZERO,
        gone_at: Some(t(1405)),
        simulated: false,
        opened_at: None,
        back_at: t(2500),
    });
    // init beats until 0.5 s, then is silent: stale at 1.5 s.
    s.advance_to(t(1000), |at| at <= t(500));
    s.take_actions();
    s.advance_to(t(2000), |_| false);
    let stop = s.take_actions();
    let closed = position(&stop, |o| *o == Out::Close);
    assert!(
        matches!(stop[closed + 1].1, Out::Log(Note::Gone)),
        "{stop:#?}"
    );
    let alert = position(&stop, |o| matches!(o, Out::Log(Note::Stopped { .. })));
    assert_eq!(stop[alert].0, t(1500));
    // A reload during the stop: held, no SETTIMEOUT.
    s.inject(In::Reload {
        hardware_secs: 12,
        beat_interval: ms(100),
    });
    assert_eq!(
        s.take_actions(),
        vec![] as Vec<(MonoTime, Out)>,
        "the device is closed: nothing to configure"
    );
    s.advance_to(t(3000), |_| false);
    s.assert_idle(); // withholding: no action at all, the device back or not
                     // init is back: the resume reopens, applies the new timeout, pets.
    s.advance_to(t(3100), |_| true);
    let back = s.take_actions();
    let resumed = position(&back, |o| matches!(o, Out::Log(Note::Resumed { .. })));
    let open = position(&back, |o| *o == Out::TryOpen);
    let configure = position(&back, |o| *o == Out::Configure { secs: 12 });
    let pet = position(&back, |o| *o == Out::Pet);
    let record = position(&back, |o| *o == Out::WriteRecord(Record::Unknown));
    assert!(resumed < open && open < configure && configure < pet && pet < record);
    assert_eq!(s.violations, vec![], "pinging actions while stopped");
}

#[test]
fn a_reload_while_stopped_applies_its_timeout_only_after_the_resume() {
    let mut s = Sim::present();
    s.advance_to(t(1000), |at| at <= t(500));
    s.advance_to(t(1600), |_| false);
    assert!(!s.gate.is_petting());
    s.take_actions();
    s.inject(In::Reload {
        hardware_secs: 20,
        beat_interval: ms(100),
    });
    assert_eq!(
        s.take_actions(),
        vec![(t(1600), Out::Log(Note::ConfigureHeld { secs: 20 }))]
    );
    s.advance_to(t(2000), |at| at >= t(1700));
    let back = s.take_actions();
    assert_eq!(
        back.iter()
            .filter(|(_, o)| matches!(o, Out::Configure { .. }))
            .collect::<Vec<_>>(),
        vec![&(t(1700), Out::Configure { secs: 20 })]
    );
    assert_eq!(s.violations, vec![]);
    // While petting, a reload configures at once.
    s.inject(In::Reload {
        hardware_secs: 24,
        beat_interval: ms(100),
    });
    assert_eq!(
        s.take_actions(),
        vec![(t(2000), Out::Configure { secs: 24 }), (t(2000), Out::Pet)]
    );
}

#[test]
fn an_absent_device_is_tried_every_250ms_and_pets_start_when_it_appears() {
    let mut s = Sim::new(World {
        present_from: t(1000),
        gone_at: None,
        simulated: false,
        opened_at: None,
        back_at: MonoTime::ZERO,
    });
    s.advance_to(t(1200), |_| true);
    let log = s.take_actions();
    let tries: Vec<MonoTime> = log
        .iter()
        .filter(|(_, o)| *o == Out::TryOpen)
        .map(|(at, _)| *at)
        .collect();
    // The first turn is at 10 ms (the device core was created at 0).
    assert_eq!(tries, vec![t(10), t(260), t(510), t(760), t(1010)]);
    let appeared = position(&log, |o| matches!(o, Out::Log(Note::Appeared { .. })));
    assert_eq!(log[appeared].0, t(1010));
    assert_eq!(log[appeared + 1].1, Out::Configure { secs: 8 });
    assert_eq!(log[appeared + 2].1, Out::Pet);
    // min(beat 100 ms, 8 s / 4): every 100 ms from 1.01 s.
    assert_eq!(s.pets_between(&log, t(1000), t(1200)), 2);
}

#[test]
fn the_stop_record_comes_before_the_alert_and_other_records_after_the_pet() {
    let mut s = Sim::present();
    s.advance_to(t(10), |_| true);
    let first = s.take_actions();
    let pet = position(&first, |o| *o == Out::Pet);
    let start = position(&first, |o| *o == Out::WriteRecord(Record::Start));
    assert!(pet < start, "{first:#?}");
    s.advance_to(t(1000), |at| at <= t(500));
    s.take_actions();
    s.advance_to(t(1600), |_| false);
    let stop = s.take_actions();
    let record = position(&stop, |o| {
        matches!(o, Out::WriteRecord(Record::Stopped { .. }))
    });
    let alert = position(&stop, |o| matches!(o, Out::Log(Note::Stopped { .. })));
    assert_eq!(record + 1, alert);
    assert_eq!(
        stop[record].1,
        Out::WriteRecord(Record::Stopped {
            layer: "init".into(),
            silent_for: ms(1000)
        })
    );
}

#[test]
fn a_simulated_device_is_never_configured() {
    let mut s = Sim::new(World {
        present_from: MonoTime::ZERO,
        gone_at: None,
        simulated: true,
        opened_at: None,
        back_at: MonoTime::ZERO,
    });
    s.advance_to(t(500), |_| true);
    s.inject(In::Reload {
        hardware_secs: 30,
        beat_interval: ms(100),
    });
    s.advance_to(t(600), |_| true);
    let log = s.take_actions();
    assert!(!log.iter().any(|(_, o)| matches!(o, Out::Configure { .. })));
    assert!(s.pets_between(&log, t(0), t(600)) >= 6);
}

#[test]
fn disarm_is_a_magic_close_only_when_allowed() {
    let mut s = Sim::present();
    s.advance_to(t(100), |_| true);
    s.take_actions();
    s.inject(In::Disarm { allowed: false });
    assert_eq!(
        s.take_actions(),
        vec![(t(100), Out::Log(Note::DisarmRefused))]
    );
    s.inject(In::Disarm { allowed: true });
    assert_eq!(s.take_actions(), vec![(t(100), Out::MagicClose)]);
    assert_eq!(*s.dev.state(), State::Disarmed);
    s.advance_to(t(300), |_| true);
    s.assert_idle(); // nothing after a disarm
}

#[test]
fn a_failing_pet_is_noted_once_and_its_recovery_once() {
    let mut dev = Device::new(MonoTime::ZERO, 8, ms(100));
    let d = Decision::Pet;
    dev.handle(MonoTime::ZERO, &d, In::Tick);
    dev.handle(MonoTime::ZERO, &d, In::Opened { simulated: true });
    let fail = In::PetFailed(DevErr::Other);
    assert_eq!(dev.handle(t(1), &d, fail), vec![Out::Log(Note::PetFailing)]);
    assert_eq!(dev.handle(t(2), &d, fail), vec![]);
    assert_eq!(
        dev.handle(t(3), &d, In::PetDone),
        vec![Out::Log(Note::PetRecovered)]
    );
}

/// An unusable `TETHER_HEARTBEATS` (issue 11, item 6) is a gate stopped from
/// the first turn: the device is still opened and its timeout programmed
/// (armed, so the hardware resets), but never petted.
#[test]
fn a_gate_stopped_from_the_start_arms_the_device_and_never_pets() {
    let mut s = Sim::new(World {
        present_from: t(300),
        gone_at: None,
        simulated: false,
        opened_at: None,
        back_at: MonoTime::ZERO,
    });
    s.gate = Gate::new([("heartbeats", Duration::ZERO)], MonoTime::ZERO, ms(1000));
    s.advance_to(t(2000), |_| false);
    let log = s.take_actions();
    let tries = log.iter().filter(|(_, o)| *o == Out::TryOpen).count();
    assert_eq!(tries, 3, "tried until it opened: {log:#?}");
    assert!(
        log.contains(&(t(510), Out::Configure { secs: 8 })),
        "{log:#?}"
    );
    assert!(!log.iter().any(|(_, o)| *o == Out::Pet), "{log:#?}");
    assert!(log.contains(&(
        t(10),
        Out::WriteRecord(Record::Stopped {
            layer: "heartbeats".into(),
            silent_for: ms(10)
        })
    )));
}

/// Issue 11, item 2, on the fake clock: the loop (10 ms turns, a
/// `heartbeat::Watch` crediting the bytes) is stopped from 1.0 s to 2.5 s;
/// init's last byte is written at 1.1 s, during the stall. After the stall
/// the byte is credited to the moment the pipe was last seen empty (1.0 s),
/// so the first turn after the stall stops petting, with init's silence
/// right to within one turn; crediting it at the drain (2.5 s) would pet
/// on for another second.
#[test]
fn a_stalled_loop_does_not_restart_a_silent_layers_clock() {
    use tether_common::heartbeat::Watch;
    let mut s = Sim::present();
    let mut watch = Watch::new(MonoTime::ZERO);
    // Bytes in the pipe not yet drained (the times they were written).
    let mut pipe: Vec<MonoTime> = Vec::new();
    let turn = |s: &mut Sim, woke: MonoTime, watch: &mut Watch, pipe: &mut Vec<MonoTime>| {
        s.now = woke;
        if !pipe.is_empty() {
            s.gate.beat("init", watch.credit(woke));
            pipe.clear();
        }
        watch.drained(woke);
        s.turn();
        watch.waiting(woke, ms(10));
    };
    let mut at = ms(0);
    while at < ms(1000) {
        at += ms(10);
        if at.as_millis().is_multiple_of(100) {
            pipe.push(MonoTime::from_duration(at));
        }
        turn(&mut s, MonoTime::from_duration(at), &mut watch, &mut pipe);
    }
    s.take_actions();
    // Stopped at 1.0 s in its wait; init writes at 1.1 s and then hangs.
    pipe.push(t(1100));
    turn(&mut s, t(2500), &mut watch, &mut pipe);
    let after = s.take_actions();
    assert!(!after.iter().any(|(_, o)| *o == Out::Pet), "{after:#?}");
    let stop = after
        .iter()
        .find_map(|(_, o)| match o {
            Out::WriteRecord(Record::Stopped { layer, silent_for }) => {
                Some((layer.clone(), *silent_for))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no stop: {after:#?}"));
    assert_eq!(stop.0, "init");
    // True silence 1.4 s; credited to the last empty sighting (1.0 s).
    assert_eq!(stop.1, ms(1500));
}
