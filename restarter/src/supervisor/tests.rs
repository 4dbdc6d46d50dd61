//! Scenarios of the supervisor with a fake clock and fake processes: spawns
//! succeed with made-up pids (or fail, for names told to), exits and notify
//! messages are injected, deadlines are fired in order.

use super::*;
use crate::service::{RestartLimit, RestartMode};
use std::collections::BTreeSet;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Sim {
    sup: Supervisor,
    now: MonoTime,
    next_pid: i32,
    /// Names whose spawns fail with ENOENT.
    broken_binaries: BTreeSet<String>,
    /// Every action, in order, with the time it was produced.
    log: Vec<(MonoTime, Action)>,
    /// pid → name of processes alive (spawned, not yet exited).
    alive: BTreeMap<i32, String>,
}

impl Sim {
    fn new(specs: Vec<ServiceSpec>) -> Sim {
        let mut sim = Sim {
            sup: Supervisor::new(),
            now: MonoTime::from_duration(Duration::from_secs(100)),
            next_pid: 1000,
            broken_binaries: BTreeSet::new(),
            log: Vec::new(),
            alive: BTreeMap::new(),
        };
        let set = LoadedSet {
            specs,
            errors: Vec::new(),
            dir_error: None,
        };
        let actions = sim.sup.load(set, sim.now);
        sim.run(actions);
        sim
    }

    fn with_broken(specs: Vec<ServiceSpec>, broken: &[&str]) -> Sim {
        let mut sim = Sim {
            sup: Supervisor::new(),
            now: MonoTime::from_duration(Duration::from_secs(100)),
            next_pid: 1000,
            broken_binaries: broken.iter().map(|s| s.to_string()).collect(),
            log: Vec::new(),
            alive: BTreeMap::new(),
        };
        let set = LoadedSet {
            specs,
            errors: Vec::new(),
            dir_error: None,
        };
        let actions = sim.sup.load(set, sim.now);
        sim.run(actions);
        sim
    }

    /// Carries out actions like the shell: spawns get an immediate result.
    fn run(&mut self, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            self.log.push((self.now, a.clone()));
            if let Action::Spawn { id } = a {
                let name = self.sup.name(id).unwrap().to_string();
                let event = if self.broken_binaries.contains(&name) {
                    Event::SpawnFailed {
                        errno: Some(libc::ENOENT),
                        message: "/bin/x: No such file or directory".into(),
                    }
                } else {
                    self.next_pid += 1;
                    self.alive.insert(self.next_pid, name);
                    Event::Spawned { pid: self.next_pid }
                };
                queue.extend(self.sup.handle(id, event, self.now));
            }
        }
    }

    fn id(&self, name: &str) -> ServiceId {
        self.sup.id(name).unwrap()
    }

    fn pid(&self, name: &str) -> Option<i32> {
        self.sup.pgid(self.id(name))
    }

    fn state(&self, name: &str) -> &'static str {
        self.sup.row(name, self.now).unwrap().state
    }

    /// Moves the clock to `t`, firing every deadline on the way in order.
    fn advance_to(&mut self, t: MonoTime) {
        while let Some(d) = self.sup.next_deadline() {
            if d > t {
                break;
            }
            self.now = self.now.max(d);
            let actions = self.sup.tick(self.now);
            self.run(actions);
        }
        self.now = self.now.max(t);
    }

    fn advance(&mut self, d: Duration) {
        let t = self.now + d;
        self.advance_to(t);
    }

    /// Moves the clock to the next deadline and fires it.
    fn advance_to_next(&mut self) {
        let d = self.sup.next_deadline().expect("a deadline");
        self.advance_to(d);
    }

    fn exit(&mut self, name: &str, status: ExitStatus) {
        let pid = self
            .pid(name)
            .unwrap_or_else(|| panic!("{name} is not running"));
        self.alive.remove(&pid);
        let actions = self
            .sup
            .handle(self.id(name), Event::Exited { pid, status }, self.now);
        self.run(actions);
    }

    fn notify(&mut self, name: &str, messages: Vec<NotifyMsg>) {
        let event = Event::Notify {
            sender_pid: self.pid(name),
            sender_uid: Some(0),
            in_group: Some(true),
            messages,
        };
        let actions = self.sup.handle(self.id(name), event, self.now);
        self.run(actions);
    }

    fn spawn_times(&self, name: &str) -> Vec<MonoTime> {
        let id = self.id(name);
        self.log
            .iter()
            .filter(|(_, a)| matches!(a, Action::Spawn { id: i } if *i == id))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Index in the action log of the first action matching `f`.
    fn position(&self, f: impl Fn(&Action) -> bool) -> Option<usize> {
        self.log.iter().position(|(_, a)| f(a))
    }

    fn kills(&self, name: &str) -> Vec<(MonoTime, i32, bool, i32)> {
        let id = self.id(name);
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Kill {
                    id: i,
                    pid,
                    group,
                    signal,
                } if *i == id => Some((*t, *pid, *group, *signal)),
                _ => None,
            })
            .collect()
    }

    fn logs_containing(&self, needle: &str) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Log { message, .. } if message.contains(needle) => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.log)
            .into_iter()
            .map(|(_, a)| a)
            .collect()
    }
}

fn svc(name: &str) -> ServiceSpec {
    let mut s = ServiceSpec::new(name, &["/bin/true"]);
    s.restart_delay = ms(1000);
    s.stop_timeout = ms(5000);
    s
}

fn crash() -> ExitStatus {
    ExitStatus::Code(1)
}

#[test]
fn services_without_dependencies_start_at_once() {
    let sim = Sim::new(vec![svc("a"), svc("b")]);
    assert_eq!(sim.state("a"), "running");
    assert_eq!(sim.state("b"), "running");
    assert_eq!(
        sim.sup.next_deadline(),
        None,
        "an idle supervisor has no deadline"
    );
}

#[test]
fn crash_after_long_run_restarts_at_once() {
    let mut sim = Sim::new(vec![svc("a")]);
    let first = sim.pid("a").unwrap();
    sim.advance(ms(5000));
    sim.exit("a", crash());
    let second = sim.pid("a").expect("restarted in the same turn");
    assert_ne!(first, second);
    // The group's leftovers were killed before the new start.
    let kill = sim.position(|a| matches!(a, Action::Kill { pid, group: true, signal: libc::SIGKILL, .. } if *pid == first));
    let spawn = sim
        .log
        .iter()
        .rposition(|(_, a)| matches!(a, Action::Spawn { .. }));
    assert!(kill.unwrap() < spawn.unwrap());
    assert_eq!(sim.sup.row("a", sim.now).unwrap().restarts, 1);
    assert_eq!(
        sim.sup.row("a", sim.now).unwrap().last_exit.as_deref(),
        Some("exit 1")
    );
}

#[test]
fn crash_loop_is_throttled_by_restart_delay() {
    let mut sim = Sim::new(vec![svc("a")]);
    for _ in 0..5 {
        sim.advance(ms(10));
        sim.exit("a", crash());
        assert_eq!(sim.state("a"), "backoff");
        assert!(sim.pid("a").is_none());
        sim.advance_to_next();
        assert_eq!(sim.state("a"), "running");
    }
    let starts = sim.spawn_times("a");
    assert_eq!(starts.len(), 6);
    for w in starts.windows(2) {
        assert_eq!(
            w[1] - w[0],
            ms(1000),
            "one start per restart_delay: {starts:?}"
        );
    }
}

#[test]
fn restart_never_leaves_the_service_stopped() {
    let mut a = svc("a");
    a.restart = RestartMode::Never;
    let mut sim = Sim::new(vec![a]);
    sim.advance(ms(5000));
    sim.exit("a", crash());
    sim.advance(ms(60_000));
    assert_eq!(sim.spawn_times("a").len(), 1);
    assert_eq!(sim.state("a"), "stopped");
}

#[test]
fn on_failure_restarts_only_after_failures() {
    let mut a = svc("a");
    a.restart = RestartMode::OnFailure;
    let mut sim = Sim::new(vec![a]);
    sim.advance(ms(5000));
    sim.exit(
        "a",
        ExitStatus::Signal {
            signal: libc::SIGSEGV,
            core: true,
        },
    );
    assert!(sim.pid("a").is_some());
    sim.advance(ms(5000));
    sim.exit("a", ExitStatus::Code(0));
    assert!(sim.pid("a").is_none());
    assert_eq!(sim.state("a"), "stopped");
}

fn limited(name: &str, on: OnExhausted) -> ServiceSpec {
    let mut s = svc(name);
    s.restart_delay = ms(100);
    s.limit = Some(RestartLimit {
        max_restarts: 3,
        window: ms(10_000),
    });
    s.on_exhausted = on;
    s
}

#[test]
fn exhausted_window_with_stop_marks_failed() {
    let mut sim = Sim::new(vec![limited("a", OnExhausted::Stop)]);
    for _ in 0..3 {
        sim.advance(ms(10));
        sim.exit("a", crash());
        sim.advance(ms(200));
        assert!(sim.pid("a").is_some());
    }
    sim.advance(ms(10));
    sim.exit("a", crash());
    sim.advance(ms(60_000));
    assert_eq!(sim.state("a"), "failed");
    assert_eq!(sim.spawn_times("a").len(), 4);
    assert_eq!(sim.logs_containing("exhausted its restart budget").len(), 1);
    assert!(!sim
        .log
        .iter()
        .any(|(_, a)| matches!(a, Action::RequestReboot { .. })));
    // Started by hand, it runs again with a fresh budget.
    let (_, actions) = sim.sup.start("a", sim.now).unwrap();
    sim.run(actions);
    assert_eq!(sim.state("a"), "running");
}

#[test]
fn exhausted_window_with_reboot_requests_reboot() {
    let mut sim = Sim::new(vec![limited("crit", OnExhausted::Reboot)]);
    for _ in 0..4 {
        sim.advance(ms(10));
        sim.exit("crit", crash());
        sim.advance(ms(200));
    }
    let reasons: Vec<String> = sim
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::RequestReboot { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("service crit exhausted its restart budget"),
        "{reasons:?}"
    );
    assert_eq!(sim.state("crit"), "failed");
    assert_eq!(sim.spawn_times("crit").len(), 4);
}

#[test]
fn exhausted_window_with_backoff_keeps_trying_slower() {
    let mut a = limited("a", OnExhausted::Backoff);
    a.max_delay = ms(1000);
    let mut sim = Sim::new(vec![a]);
    for _ in 0..3 {
        sim.advance(ms(10));
        sim.exit("a", crash());
        sim.advance(ms(200));
    }
    sim.advance(ms(10));
    sim.exit("a", crash());
    assert_eq!(sim.state("a"), "backoff");
    assert_eq!(sim.sup.next_deadline(), Some(sim.now + ms(200)));
    sim.advance(ms(200));
    assert_eq!(sim.state("a"), "running");
}

#[test]
fn backoff_doubles_to_max_delay() {
    let mut a = limited("a", OnExhausted::Backoff);
    a.max_delay = ms(1000);
    let mut sim = Sim::new(vec![a]);
    for _ in 0..8 {
        sim.advance(ms(10));
        sim.exit("a", crash());
        sim.advance_to_next();
    }
    let starts = sim.spawn_times("a");
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // Three restarts throttled by restart_delay (100 ms), then 10 ms of
    // running plus 200, 400, 800, 1000, 1000 ms of backoff.
    assert_eq!(gaps, vec![100, 100, 100, 210, 410, 810, 1010, 1010]);
}

#[test]
fn missed_watchdog_sends_abrt_then_kill() {
    let mut a = svc("a");
    a.notify = NotifyMode::Watchdog;
    a.watchdog_timeout = Some(ms(2000));
    a.stop_timeout = ms(3000);
    let mut sim = Sim::new(vec![a]);
    let pid = sim.pid("a").unwrap();
    let t0 = sim.now;
    // Pings keep it alive.
    for _ in 0..5 {
        sim.advance(ms(1500));
        sim.notify("a", vec![NotifyMsg::Watchdog]);
    }
    assert!(sim.kills("a").is_empty());
    let last_ping = sim.now;
    sim.advance(ms(10_000));
    let kills = sim.kills("a");
    assert_eq!(
        kills[..2],
        [
            (last_ping + ms(2000), pid, false, libc::SIGABRT),
            (last_ping + ms(5000), pid, true, libc::SIGKILL),
        ],
        "{kills:?} (started {t0:?})"
    );
    assert_eq!(sim.state("a"), "stopping");
    // It dies; restarted per policy (ran long enough: at once).
    sim.exit(
        "a",
        ExitStatus::Signal {
            signal: libc::SIGKILL,
            core: false,
        },
    );
    assert_ne!(sim.pid("a"), Some(pid));
    assert!(sim.pid("a").is_some());
    assert_eq!(
        sim.sup.row("a", sim.now).unwrap().last_exit.as_deref(),
        Some("signal KILL (watchdog)")
    );
}

#[test]
fn watchdog_is_armed_from_the_start() {
    let mut a = svc("a");
    a.notify = NotifyMode::Watchdog;
    a.watchdog_timeout = Some(ms(2000));
    let mut sim = Sim::new(vec![a]);
    let start = sim.now;
    sim.advance(ms(2500));
    assert_eq!(sim.kills("a")[0].0, start + ms(2000));
}

#[test]
fn watchdog_trigger_and_usec_are_obeyed() {
    let mut a = svc("a");
    a.notify = NotifyMode::Watchdog;
    a.watchdog_timeout = Some(ms(2000));
    let mut sim = Sim::new(vec![a]);
    sim.notify("a", vec![NotifyMsg::WatchdogUsec(10_000_000)]);
    sim.advance(ms(9000));
    assert!(sim.kills("a").is_empty(), "the new timeout (10 s) applies");
    sim.notify("a", vec![NotifyMsg::WatchdogTrigger]);
    assert_eq!(sim.kills("a")[0].3, libc::SIGABRT);
}

#[test]
fn notify_from_outside_the_group_is_ignored_and_counted() {
    let mut a = svc("a");
    a.notify = NotifyMode::Ready;
    let mut sim = Sim::new(vec![a]);
    let event = Event::Notify {
        sender_pid: Some(1),
        sender_uid: Some(0),
        in_group: Some(false),
        messages: vec![NotifyMsg::Ready],
    };
    let actions = sim.sup.handle(sim.id("a"), event, sim.now);
    sim.run(actions);
    let row = sim.sup.row("a", sim.now).unwrap();
    assert_eq!((row.state, row.notify_rejected), ("starting", 1));
    // A sender that is gone (in_group None) counts: attribution by socket.
    let event = Event::Notify {
        sender_pid: Some(99999),
        sender_uid: Some(0),
        in_group: None,
        messages: vec![NotifyMsg::Ready, NotifyMsg::Status("ok".into())],
    };
    let actions = sim.sup.handle(sim.id("a"), event, sim.now);
    sim.run(actions);
    let row = sim.sup.row("a", sim.now).unwrap();
    assert_eq!(
        (row.state, row.ready, row.status_text.as_deref()),
        ("ready", true, Some("ok"))
    );
}

#[test]
fn dependent_waits_for_ready() {
    let mut a = svc("a");
    a.notify = NotifyMode::Ready;
    let mut b = svc("b");
    b.after = vec!["a".into()];
    let mut sim = Sim::new(vec![a, b]);
    assert_eq!(sim.state("a"), "starting");
    assert_eq!(sim.state("b"), "waiting");
    assert!(sim.spawn_times("b").is_empty());
    sim.advance(ms(700));
    sim.notify("a", vec![NotifyMsg::Ready]);
    assert_eq!(sim.state("a"), "ready");
    assert_eq!(sim.spawn_times("b"), vec![sim.now]);
}

#[test]
fn after_does_not_wait_for_a_service_that_will_not_run() {
    let mut a = svc("a");
    a.disabled = true;
    let mut b = svc("b");
    b.after = vec!["a".into()];
    let sim = Sim::new(vec![a, b]);
    assert_eq!(sim.state("a"), "disabled");
    assert_eq!(sim.state("b"), "running");
}

#[test]
fn requires_waits_for_a_service_that_will_not_run() {
    let mut a = svc("a");
    a.disabled = true;
    let mut b = svc("b");
    b.requires = vec!["a".into()];
    let mut sim = Sim::new(vec![a, b]);
    assert_eq!(sim.state("b"), "waiting");
    let (_, actions) = sim.sup.start("a", sim.now).unwrap();
    sim.run(actions);
    assert_eq!(sim.state("a"), "running");
    assert_eq!(sim.state("b"), "running");
}

#[test]
fn stop_of_required_service_stops_dependents() {
    let a = svc("a");
    let mut b = svc("b");
    b.requires = vec!["a".into()];
    let mut c = svc("c");
    c.requires = vec!["b".into()];
    let mut sim = Sim::new(vec![a, b, c]);
    let (pa, pb, pc) = (
        sim.pid("a").unwrap(),
        sim.pid("b").unwrap(),
        sim.pid("c").unwrap(),
    );
    sim.take_actions();
    let (_, actions) = sim.sup.stop("a", sim.now).unwrap();
    sim.run(actions);
    // Reverse order: c first; b waits for c, a waits for b.
    assert_eq!(sim.state("c"), "stopping");
    assert_eq!(sim.state("b"), "running");
    assert_eq!(sim.state("a"), "running");
    assert_eq!(sim.kills("c")[0], (sim.now, pc, true, libc::SIGTERM));
    sim.exit(
        "c",
        ExitStatus::Signal {
            signal: libc::SIGTERM,
            core: false,
        },
    );
    assert_eq!(sim.state("b"), "stopping");
    assert_eq!(sim.kills("b")[0].1, pb);
    sim.exit("b", ExitStatus::Code(0));
    assert_eq!(sim.state("a"), "stopping");
    assert_eq!(sim.kills("a")[0].1, pa);
    sim.exit("a", ExitStatus::Code(0));
    sim.advance(ms(60_000));
    assert_eq!(
        (sim.state("a"), sim.state("b"), sim.state("c")),
        ("stopped", "waiting", "waiting")
    );
    // Starting a again brings the dependents back, in order.
    let (_, actions) = sim.sup.start("a", sim.now).unwrap();
    sim.run(actions);
    assert_eq!(
        (sim.state("a"), sim.state("b"), sim.state("c")),
        ("running", "running", "running")
    );
}

#[test]
fn crash_of_required_service_leaves_dependents_running() {
    let a = svc("a");
    let mut b = svc("b");
    b.requires = vec!["a".into()];
    let mut sim = Sim::new(vec![a, b]);
    let pb = sim.pid("b").unwrap();
    sim.advance(ms(10));
    sim.exit("a", crash());
    assert_eq!(sim.state("a"), "backoff");
    assert_eq!(sim.pid("b"), Some(pb));
    assert!(sim.kills("b").is_empty());
}

#[test]
fn stop_timeout_ends_in_sigkill_to_the_group() {
    let mut sim = Sim::new(vec![svc("a")]);
    let pid = sim.pid("a").unwrap();
    let t = sim.now;
    let (_, actions) = sim.sup.stop("a", sim.now).unwrap();
    sim.run(actions);
    sim.advance(ms(6000));
    assert_eq!(
        sim.kills("a"),
        vec![
            (t, pid, true, libc::SIGTERM),
            (t, pid, true, libc::SIGCONT),
            (t + ms(5000), pid, true, libc::SIGKILL)
        ]
    );
    assert_eq!(
        sim.sup.next_deadline(),
        None,
        "after SIGKILL it only waits for the exit"
    );
    sim.exit(
        "a",
        ExitStatus::Signal {
            signal: libc::SIGKILL,
            core: false,
        },
    );
    assert_eq!(sim.state("a"), "stopped");
    assert!(sim.pid("a").is_none());
}

#[test]
fn shutdown_stops_in_reverse_dependency_order_then_idles() {
    let a = svc("a");
    let mut b = svc("b");
    b.after = vec!["a".into()];
    let c = svc("c");
    let mut sim = Sim::new(vec![a, b, c]);
    let actions = sim.sup.shutdown(sim.now);
    sim.run(actions);
    assert_eq!(
        (sim.state("a"), sim.state("b"), sim.state("c")),
        ("running", "stopping", "stopping")
    );
    sim.exit("c", ExitStatus::Code(0));
    sim.exit("b", ExitStatus::Code(0));
    assert_eq!(sim.state("a"), "stopping");
    assert!(!sim.sup.is_idle());
    sim.exit("a", ExitStatus::Code(0));
    assert!(sim.sup.is_idle());
    sim.advance(ms(60_000));
    assert!(
        sim.spawn_times("a").len() == 1,
        "nothing restarts during shutdown"
    );
    assert!(sim.sup.start("a", sim.now).is_err());
}

#[test]
fn missing_binary_is_reported_and_retried_per_policy() {
    let mut sim = Sim::with_broken(vec![svc("a")], &["a"]);
    assert_eq!(sim.state("a"), "backoff");
    let row = sim.sup.row("a", sim.now).unwrap();
    assert!(row.error.as_deref().unwrap().contains("ENOENT"), "{row:?}");
    sim.advance(ms(3500));
    assert_eq!(sim.spawn_times("a").len(), 4, "retried every restart_delay");
    sim.broken_binaries.clear();
    sim.advance(ms(1000));
    assert_eq!(sim.state("a"), "running");
    assert_eq!(sim.sup.row("a", sim.now).unwrap().error, None);
}

#[test]
fn restart_request_stops_then_starts_at_once() {
    let mut sim = Sim::new(vec![svc("a")]);
    let pid = sim.pid("a").unwrap();
    let (_, actions) = sim.sup.restart("a", sim.now).unwrap();
    sim.run(actions);
    assert_eq!(sim.state("a"), "stopping");
    sim.advance(ms(10));
    sim.exit(
        "a",
        ExitStatus::Signal {
            signal: libc::SIGTERM,
            core: false,
        },
    );
    assert!(
        sim.pid("a").is_some_and(|p| p != pid),
        "started again in the same turn"
    );
}

#[test]
fn signal_request_goes_to_the_main_process() {
    let mut sim = Sim::new(vec![svc("a")]);
    let pid = sim.pid("a").unwrap();
    let actions = sim.sup.signal("a", libc::SIGHUP).unwrap();
    assert!(actions.contains(&Action::Kill {
        id: sim.id("a"),
        pid,
        group: false,
        signal: libc::SIGHUP
    }));
    assert!(sim.sup.signal("nope", libc::SIGHUP).is_err());
}

fn set(specs: Vec<ServiceSpec>) -> LoadedSet {
    LoadedSet {
        specs,
        errors: Vec::new(),
        dir_error: None,
    }
}

#[test]
fn reload_adds_removes_and_restarts_changed_services() {
    let mut sim = Sim::new(vec![svc("keep"), svc("change"), svc("gone")]);
    let (pk, pc, pg) = (
        sim.pid("keep").unwrap(),
        sim.pid("change").unwrap(),
        sim.pid("gone").unwrap(),
    );
    let mut changed = svc("change");
    changed.exec = vec!["/bin/other".into()];
    let actions = sim
        .sup
        .reload(set(vec![svc("keep"), changed, svc("new")]), sim.now)
        .unwrap();
    sim.run(actions);
    assert_eq!(sim.pid("keep"), Some(pk));
    assert_eq!(sim.state("new"), "running");
    assert_eq!(sim.state("change"), "stopping");
    assert_eq!(sim.state("gone"), "stopping");
    sim.exit("change", ExitStatus::Code(0));
    assert!(sim.pid("change").is_some_and(|p| p != pc));
    assert_eq!(
        sim.sup.spec(sim.id("change")).unwrap().exec,
        vec!["/bin/other"]
    );
    let gone = sim.id("gone");
    sim.alive.remove(&pg);
    let actions = sim.sup.handle(
        gone,
        Event::Exited {
            pid: pg,
            status: ExitStatus::Code(0),
        },
        sim.now,
    );
    assert!(actions.contains(&Action::Release { id: gone }));
    assert!(sim.sup.id("gone").is_none());
}

#[test]
fn reload_with_an_error_changes_nothing() {
    let mut sim = Sim::new(vec![svc("a")]);
    let pid = sim.pid("a").unwrap();
    let bad = LoadedSet {
        specs: vec![],
        errors: vec![(
            "b".into(),
            tether_common::config::ConfigError::Parse {
                file: "/s/b.toml".into(),
                line: 2,
                column: 1,
                field: "bogus".into(),
                message: "unknown field".into(),
            },
        )],
        dir_error: None,
    };
    sim.take_actions();
    let err = sim.sup.reload(bad, sim.now).unwrap_err();
    assert!(err.contains("/s/b.toml:2:1"), "{err}");
    assert_eq!(sim.pid("a"), Some(pid));
    assert!(sim.sup.id("b").is_none());
}

#[test]
fn config_errors_at_load_mark_only_that_service() {
    let mut sup = Supervisor::new();
    let loaded = LoadedSet {
        specs: vec![svc("good")],
        errors: vec![(
            "bad".into(),
            tether_common::config::ConfigError::Parse {
                file: "/s/bad.toml".into(),
                line: 3,
                column: 5,
                field: "exec".into(),
                message: "must be a non-empty array".into(),
            },
        )],
        dir_error: None,
    };
    let actions = sup.load(loaded, MonoTime::ZERO);
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::Spawn { .. }))
            .count(),
        1
    );
    let bad = sup.row("bad", MonoTime::ZERO).unwrap();
    assert_eq!(bad.state, "config-error");
    assert!(bad.error.unwrap().contains("/s/bad.toml:3:5"));
    assert!(sup
        .start("bad", MonoTime::ZERO)
        .unwrap_err()
        .contains("configuration error"));
}

#[test]
fn disabled_service_is_not_started_until_asked() {
    let mut a = svc("a");
    a.disabled = true;
    let mut sim = Sim::new(vec![a]);
    assert_eq!(sim.state("a"), "disabled");
    let (_, actions) = sim.sup.start("a", sim.now).unwrap();
    sim.run(actions);
    assert_eq!(sim.state("a"), "running");
}

#[test]
fn summary_counts_up_and_expected() {
    let mut a = svc("a");
    a.notify = NotifyMode::Ready;
    let mut sim = Sim::new(vec![a, svc("b")]);
    assert_eq!(
        sim.sup.summary(),
        Summary {
            expected: 2,
            up: 1,
            failed: 0,
            broken: 0
        }
    );
    sim.notify("a", vec![NotifyMsg::Ready]);
    assert_eq!(sim.sup.summary().up, 2);
}

#[test]
fn budget_rows_cover_crash_and_hang() {
    let mut a = svc("a");
    a.notify = NotifyMode::Watchdog;
    a.watchdog_timeout = Some(ms(10_000));
    let rows = service_budget_rows(&[a, svc("b")]);
    let faults: Vec<&str> = rows.iter().map(|r| r.fault.as_str()).collect();
    assert_eq!(
        faults,
        vec!["service a crash", "service a hang", "service b crash"]
    );
    assert_eq!(rows[1].bound, ms(10_000 + 5000 + 1000));
    assert_eq!(rows[0].bound, ms(1000));
}

#[test]
fn exit_of_an_unknown_pid_is_ignored() {
    let mut sim = Sim::new(vec![svc("a")]);
    let id = sim.id("a");
    let actions = sim.sup.handle(
        id,
        Event::Exited {
            pid: 1,
            status: crash(),
        },
        sim.now,
    );
    assert!(actions
        .iter()
        .all(|a| !matches!(a, Action::Spawn { .. } | Action::Kill { .. })));
    assert_eq!(sim.state("a"), "running");
}

// ---- the dirty set: an event must reach every service it can affect -------

/// `n` independent services named `s0000`…, `notify = "none"`.
fn many(n: usize) -> Vec<ServiceSpec> {
    (0..n).map(|i| svc(&format!("s{i:04}"))).collect()
}

fn spawned_names(sim: &Sim, actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { id } => Some(sim.sup.name(*id).unwrap().to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn dependent_of_dependent_starts_when_root_becomes_ready() {
    let mut a = svc("a");
    a.notify = NotifyMode::Ready;
    let mut b = svc("b");
    b.requires = vec!["a".into()];
    b.notify = NotifyMode::Ready;
    let mut c = svc("c");
    c.requires = vec!["b".into()];
    let mut specs = many(50);
    specs.extend([a, b, c]);
    let mut sim = Sim::new(specs);
    assert_eq!(
        (sim.state("a"), sim.state("b"), sim.state("c")),
        ("starting", "waiting", "waiting")
    );
    sim.take_actions();
    sim.notify("a", vec![NotifyMsg::Ready]);
    let actions = sim.take_actions();
    assert_eq!(spawned_names(&sim, &actions), ["b"], "{actions:?}");
    assert_eq!(sim.state("c"), "waiting");
    sim.notify("b", vec![NotifyMsg::Ready]);
    let actions = sim.take_actions();
    assert_eq!(spawned_names(&sim, &actions), ["c"], "{actions:?}");
    assert_eq!(sim.state("c"), "running");
}

#[test]
fn root_not_restarted_stops_its_dependents_of_dependents_first() {
    // The exit event of `a` alone makes `b` and `c` undesired (transitively
    // through `requires`): `c` stops first, `b` after it, `a` is gone.
    let mut a = svc("a");
    a.restart = RestartMode::Never;
    let mut b = svc("b");
    b.requires = vec!["a".into()];
    let mut c = svc("c");
    c.requires = vec!["b".into()];
    let mut specs = many(50);
    specs.extend([a, b, c]);
    let mut sim = Sim::new(specs);
    let (pb, pc) = (sim.pid("b").unwrap(), sim.pid("c").unwrap());
    sim.advance(ms(5000));
    sim.take_actions();
    sim.exit("a", ExitStatus::Code(0));
    assert_eq!(sim.state("a"), "stopped");
    assert_eq!((sim.state("b"), sim.state("c")), ("running", "stopping"));
    assert_eq!(sim.kills("c")[0], (sim.now, pc, true, libc::SIGTERM));
    assert!(sim.kills("b").is_empty());
    sim.exit("c", ExitStatus::Code(0));
    assert_eq!(sim.state("b"), "stopping");
    assert_eq!(sim.kills("b")[0], (sim.now, pb, true, libc::SIGTERM));
    assert!(
        sim.kills("s0000").is_empty(),
        "unrelated services are left alone"
    );
}

#[test]
fn requirement_stops_after_last_dependent_exits() {
    let a = svc("a");
    let mut b = svc("b");
    b.requires = vec!["a".into()];
    let mut c = svc("c");
    c.after = vec!["a".into()];
    c.requires = vec!["a".into()];
    let mut specs = many(50);
    specs.extend([a, b, c]);
    let mut sim = Sim::new(specs);
    let pa = sim.pid("a").unwrap();
    let (_, actions) = sim.sup.stop("a", sim.now).unwrap();
    sim.run(actions);
    assert_eq!(
        (sim.state("a"), sim.state("b"), sim.state("c")),
        ("running", "stopping", "stopping")
    );
    sim.advance(ms(10));
    sim.exit("b", ExitStatus::Code(0));
    assert_eq!(sim.state("a"), "running", "c still has a process");
    sim.advance(ms(10));
    // Nothing but c's exit event tells the supervisor that a may stop now.
    sim.take_actions();
    sim.exit("c", ExitStatus::Code(0));
    assert_eq!(sim.state("a"), "stopping");
    assert_eq!(sim.kills("a")[0], (sim.now, pa, true, libc::SIGTERM));
}

#[test]
fn requirement_stops_when_the_outstanding_spawn_of_its_dependent_fails() {
    // Driven by hand: the spawn of b is answered only later.
    let a = svc("a");
    let mut b = svc("b");
    b.requires = vec!["a".into()];
    let mut sup = Supervisor::new();
    let now = MonoTime::from_duration(Duration::from_secs(100));
    let actions = sup.load(set(vec![a, b]), now);
    let (ia, ib) = (sup.id("a").unwrap(), sup.id("b").unwrap());
    assert!(actions.contains(&Action::Spawn { id: ia }));
    let actions = sup.handle(ia, Event::Spawned { pid: 10 }, now);
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::Spawn { .. }))
            .collect::<Vec<_>>(),
        [&Action::Spawn { id: ib }]
    );
    // a is stopped while b's spawn is out: a waits for its result.
    let (_, actions) = sup.stop("a", now).unwrap();
    assert!(!actions.iter().any(|a| matches!(a, Action::Kill { .. })));
    let actions = sup.handle(
        ib,
        Event::SpawnFailed {
            errno: Some(libc::ENOENT),
            message: "/bin/true: No such file or directory".into(),
        },
        now,
    );
    assert!(
        actions.contains(&Action::Kill {
            id: ia,
            pid: 10,
            group: true,
            signal: libc::SIGTERM
        }),
        "{actions:?}"
    );
}

#[test]
fn after_only_dependency_releases_waiter_on_ready() {
    let mut a = svc("a");
    a.notify = NotifyMode::Ready;
    let mut b = svc("b");
    b.after = vec!["a".into()];
    let mut c = svc("c");
    c.after = vec!["a".into(), "b".into()];
    let mut specs = many(50);
    specs.extend([a, b, c]);
    let mut sim = Sim::new(specs);
    assert_eq!((sim.state("b"), sim.state("c")), ("waiting", "waiting"));
    sim.take_actions();
    sim.advance(ms(300));
    sim.notify("a", vec![NotifyMsg::Ready]);
    // b starts on a's READY=1; c (notify none: ready once running) right
    // after, on b's spawn result.
    let actions = sim.take_actions();
    assert_eq!(spawned_names(&sim, &actions), ["b", "c"], "{actions:?}");
}

#[test]
fn after_waiter_starts_when_its_target_will_not_run_again() {
    // a never becomes ready and ends with restart = "never": from then on
    // b does not wait for it (an `after` target that will not run).
    let mut a = svc("a");
    a.notify = NotifyMode::Ready;
    a.restart = RestartMode::Never;
    let mut b = svc("b");
    b.after = vec!["a".into()];
    let mut specs = many(50);
    specs.extend([a, b]);
    let mut sim = Sim::new(specs);
    assert_eq!(sim.state("b"), "waiting");
    sim.advance(ms(100));
    sim.take_actions();
    sim.exit("a", ExitStatus::Code(0));
    let actions = sim.take_actions();
    assert_eq!(spawned_names(&sim, &actions), ["b"], "{actions:?}");
    assert_eq!(sim.state("a"), "stopped");
}

#[test]
fn due_restart_fires_from_tick_among_many_idle_services() {
    let mut sim = Sim::new(many(1000));
    assert_eq!(sim.sup.next_deadline(), None);
    sim.advance(ms(10));
    sim.exit("s0500", crash());
    let due = sim.now + ms(990);
    assert_eq!(sim.state("s0500"), "backoff");
    assert_eq!(sim.sup.next_deadline(), Some(due));
    sim.take_actions();
    assert!(
        sim.sup.tick(sim.now + ms(989)).is_empty(),
        "nothing is due yet"
    );
    let actions = sim.sup.tick(due);
    assert_eq!(
        actions,
        vec![Action::Spawn {
            id: sim.id("s0500")
        }]
    );
    sim.now = due;
    sim.run(actions);
    assert_eq!(sim.state("s0500"), "running");
    assert_eq!(sim.sup.next_deadline(), None);
}

#[test]
fn due_restart_fires_on_another_services_event_before_the_tick() {
    // The shell may see an event before it ticks: a start whose time has
    // come happens then, as with a full scan.
    let mut sim = Sim::new(many(100));
    sim.advance(ms(10));
    sim.exit("s0010", crash());
    let due = sim.sup.next_deadline().unwrap();
    sim.now = due + ms(5);
    sim.take_actions();
    sim.exit("s0090", crash());
    // s0090 ran over a second: it restarts at once too, after s0010 (slot
    // order).
    let actions = sim.take_actions();
    assert_eq!(
        spawned_names(&sim, &actions),
        ["s0010", "s0090"],
        "{actions:?}"
    );
}

#[test]
fn one_exit_among_a_thousand_idle_services_acts_on_that_service_only() {
    let mut sim = Sim::new(many(1000));
    sim.advance(ms(10_000));
    let id = sim.id("s0123");
    let pid = sim.pid("s0123").unwrap();
    sim.alive.remove(&pid);
    let actions = sim.sup.handle(
        id,
        Event::Exited {
            pid,
            status: crash(),
        },
        sim.now,
    );
    assert_eq!(
        actions,
        vec![
            Action::Kill {
                id,
                pid,
                group: true,
                signal: libc::SIGKILL
            },
            Action::WriteState,
            Action::Log {
                level: Level::Warn,
                message: "service s0123 exited: exit 1 after 10s".into()
            },
            Action::Spawn { id },
        ]
    );
    sim.run(actions);
    assert_eq!(sim.sup.next_deadline(), None);
}

#[test]
fn thousand_services_start_ready_and_come_back_after_a_storm() {
    // Issue #7's workloads, driven by hand: every spawn result and READY=1
    // arrives as its own event; then every process dies at once.
    let specs: Vec<ServiceSpec> = many(1000)
        .into_iter()
        .map(|mut s| {
            s.notify = NotifyMode::Ready;
            s
        })
        .collect();
    let mut sup = Supervisor::new();
    let mut now = MonoTime::from_duration(Duration::from_secs(100));
    let spawns = |actions: &[Action]| -> Vec<ServiceId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Spawn { id } => Some(*id),
                _ => None,
            })
            .collect()
    };
    let ids = spawns(&sup.load(set(specs), now));
    assert_eq!(ids.len(), 1000);
    let pid_of = |id: ServiceId, round: i32| 10_000 * round + id.0 as i32;
    for &id in &ids {
        let actions = sup.handle(id, Event::Spawned { pid: pid_of(id, 1) }, now);
        assert!(spawns(&actions).is_empty());
    }
    for &id in &ids {
        let event = Event::Notify {
            sender_pid: Some(pid_of(id, 1)),
            sender_uid: Some(0),
            in_group: Some(true),
            messages: vec![NotifyMsg::Ready],
        };
        assert!(spawns(&sup.handle(id, event, now)).is_empty());
    }
    assert_eq!(
        sup.summary(),
        Summary {
            expected: 1000,
            up: 1000,
            failed: 0,
            broken: 0
        }
    );
    now = now + Duration::from_secs(10);
    for &id in &ids {
        let status = ExitStatus::Signal {
            signal: libc::SIGKILL,
            core: false,
        };
        let actions = sup.handle(
            id,
            Event::Exited {
                pid: pid_of(id, 1),
                status,
            },
            now,
        );
        assert_eq!(spawns(&actions), [id], "each restarts on its own exit");
    }
    for &id in &ids {
        sup.handle(id, Event::Spawned { pid: pid_of(id, 2) }, now);
    }
    assert_eq!(sup.running().len(), 1000);
    assert_eq!(sup.next_deadline(), None);
}

#[test]
fn watchdog_ping_moves_the_next_deadline_later() {
    let mut a = svc("a");
    a.notify = NotifyMode::Watchdog;
    a.watchdog_timeout = Some(ms(2000));
    let mut sim = Sim::new(vec![a, svc("b")]);
    assert_eq!(sim.sup.next_deadline(), Some(sim.now + ms(2000)));
    sim.advance(ms(1500));
    sim.notify("a", vec![NotifyMsg::Watchdog]);
    assert_eq!(sim.sup.next_deadline(), Some(sim.now + ms(2000)));
    sim.notify("a", vec![NotifyMsg::WatchdogUsec(500_000)]);
    assert_eq!(sim.sup.next_deadline(), Some(sim.now + ms(500)));
}

#[test]
fn requirement_added_by_reload_orders_the_stop() {
    // b gains `requires = ["a"]` by a reload while running; once restarted
    // with it, stopping a stops b first.
    let mut sim = Sim::new(vec![svc("a"), svc("b")]);
    let mut b = svc("b");
    b.requires = vec!["a".into()];
    let actions = sim.sup.reload(set(vec![svc("a"), b]), sim.now).unwrap();
    sim.run(actions);
    sim.advance(ms(10));
    sim.exit("b", ExitStatus::Code(0));
    assert_eq!(sim.state("b"), "running");
    let (_, actions) = sim.sup.stop("a", sim.now).unwrap();
    sim.run(actions);
    assert_eq!((sim.state("a"), sim.state("b")), ("running", "stopping"));
    sim.exit("b", ExitStatus::Code(0));
    assert_eq!(sim.state("a"), "stopping");
}

#[test]
fn one_tick_fires_every_due_deadline_in_slot_order() {
    let specs: Vec<ServiceSpec> = many(3)
        .into_iter()
        .map(|mut s| {
            s.notify = NotifyMode::Watchdog;
            s.watchdog_timeout = Some(ms(2000));
            s
        })
        .collect();
    let mut sim = Sim::new(specs);
    let due = sim.now + ms(2000);
    assert_eq!(sim.sup.next_deadline(), Some(due));
    let actions = sim.sup.tick(due);
    let aborted: Vec<ServiceId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Kill {
                id,
                signal: libc::SIGABRT,
                ..
            } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(
        aborted,
        vec![sim.id("s0000"), sim.id("s0001"), sim.id("s0002")]
    );
    assert_eq!(sim.sup.next_deadline(), Some(due + ms(5000)));
}

#[test]
fn dependent_waiting_out_its_restart_delay_waits_for_a_requirement_that_hangs() {
    // b (restart_delay 5 s) crashed and waits out its delay; meanwhile a,
    // which b requires, misses its watchdog at a tick: b's wait for a is
    // noted then (it does not start when its delay is over).
    let mut a = svc("a");
    a.notify = NotifyMode::Watchdog;
    a.watchdog_timeout = Some(ms(2000));
    let mut b = svc("b");
    b.requires = vec!["a".into()];
    b.restart_delay = ms(5000);
    let mut sim = Sim::new(vec![a, b]);
    sim.notify("a", vec![NotifyMsg::Ready]);
    assert_eq!(sim.state("b"), "running");
    let start = sim.now;
    sim.advance(ms(10));
    sim.exit("b", crash());
    assert_eq!(sim.state("b"), "backoff");
    sim.advance(ms(2500));
    let waits: Vec<MonoTime> = sim
        .log
        .iter()
        .filter(
            |(_, a)| matches!(a, Action::Log { message, .. } if message == "service b waits for a"),
        )
        .map(|(t, _)| *t)
        .collect();
    // (The first is from the start, before a was ready.)
    assert_eq!(waits, vec![start, start + ms(2000)]);
    assert_eq!(sim.state("b"), "waiting");
    sim.advance(ms(10_000));
    assert_eq!(sim.spawn_times("b").len(), 1, "a is still stopping");
}

#[test]
fn a_restored_notify_socket_gives_one_fresh_watchdog_timeout() {
    let mut a = svc("a");
    a.notify = NotifyMode::Watchdog;
    a.watchdog_timeout = Some(ms(2000));
    a.stop_timeout = ms(3000);
    let mut sim = Sim::new(vec![a]);
    let pid = sim.pid("a").unwrap();
    sim.advance(ms(1500));
    // The socket was gone and is back: the deadline counts from now.
    let id = sim.id("a");
    let back = sim.now;
    sim.sup.notify_socket_restored(id, back);
    sim.advance(ms(1900));
    assert!(sim.kills("a").is_empty(), "killed before the fresh timeout");
    sim.advance(ms(200));
    assert_eq!(
        sim.kills("a")[0],
        (back + ms(2000), pid, false, libc::SIGABRT)
    );
    // While stopping, nothing is re-armed.
    sim.sup.notify_socket_restored(id, sim.now);
    sim.advance(ms(3100));
    assert_eq!(sim.kills("a")[1].3, libc::SIGKILL);
}

// ---- adoption (issue 13) -------------------------------------------------

/// A new supervisor taking over from `old` as the shell does after a
/// restarter crash: each service's state as the state file carried it,
/// processes still running (`gone` lists those that ended meanwhile, with
/// init's relayed status), `later` after the old one's last event.
fn take_over(
    old: &Sim,
    specs: Vec<ServiceSpec>,
    gone: &[(&str, ExitStatus)],
    later: Duration,
) -> Sim {
    let mut resumes: HashMap<String, Resume> = HashMap::new();
    for (_, name, _, mut r) in old.sup.resumes() {
        if let Some((_, st)) = gone.iter().find(|(n, _)| *n == name) {
            r.exited = Some(*st);
        }
        resumes.insert(name.to_string(), r);
    }
    let mut sim = Sim {
        sup: Supervisor::new(),
        now: old.now + later,
        next_pid: old.next_pid + 100,
        broken_binaries: BTreeSet::new(),
        log: Vec::new(),
        alive: old.alive.clone(),
    };
    let actions = sim.sup.load_adopting(set(specs), resumes, sim.now);
    sim.run(actions);
    sim
}

fn watched(sim: &Sim) -> Vec<i32> {
    sim.log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Watch { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect()
}

#[test]
fn adopted_service_keeps_pid_counts_and_uptime_then_exits_with_the_relayed_status() {
    let mut old = Sim::new(vec![svc("a"), svc("b")]);
    old.advance(ms(5000));
    old.exit("a", crash());
    let pid_a = old.pid("a").unwrap();
    let pid_b = old.pid("b").unwrap();
    let started_b = old.sup.row("b", old.now).unwrap().uptime.unwrap();
    let mut sim = take_over(&old, vec![svc("a"), svc("b")], &[], ms(3000));
    assert!(sim.spawn_times("a").is_empty() && sim.spawn_times("b").is_empty());
    assert_eq!(watched(&sim).len(), 2);
    assert_eq!(sim.pid("a"), Some(pid_a));
    assert_eq!(sim.pid("b"), Some(pid_b));
    let row = sim.sup.row("a", sim.now).unwrap();
    assert_eq!((row.state, row.restarts), ("running", 1));
    assert_eq!(
        sim.sup.row("b", sim.now).unwrap().uptime,
        Some(started_b + ms(3000)),
        "uptime continues"
    );
    // It dies; init relays SIGKILL: restarted per policy, shown as such.
    sim.advance(ms(2000));
    sim.exit(
        "a",
        ExitStatus::Signal {
            signal: libc::SIGKILL,
            core: false,
        },
    );
    let row = sim.sup.row("a", sim.now).unwrap();
    assert_eq!(row.last_exit.as_deref(), Some("signal KILL"));
    assert_eq!(row.restarts, 2);
    assert_ne!(sim.pid("a"), Some(pid_a));
    assert_eq!(sim.spawn_times("a").len(), 1);
}

#[test]
fn service_that_ended_while_no_restarter_ran_is_restarted_with_its_status() {
    let mut old = Sim::new(vec![svc("a")]);
    old.advance(ms(5000));
    let pid = old.pid("a").unwrap();
    let sig = ExitStatus::Signal {
        signal: libc::SIGKILL,
        core: false,
    };
    let sim = take_over(&old, vec![svc("a")], &[("a", sig)], ms(1000));
    assert!(watched(&sim).is_empty());
    assert_eq!(sim.spawn_times("a"), vec![sim.now]);
    assert_ne!(sim.pid("a"), Some(pid));
    let row = sim.sup.row("a", sim.now).unwrap();
    assert_eq!(
        (row.restarts, row.last_exit.as_deref()),
        (1, Some("signal KILL"))
    );
    // The long-gone pid's group is not signalled (it may be reused).
    assert!(sim.kills("a").is_empty());
}

#[test]
fn service_whose_pid_was_reused_is_not_adopted() {
    // The shell found another process under the pid (start time differs):
    // adopt::resume_of gives pid + exited Unknown; never watched.
    let mut old = Sim::new(vec![svc("a")]);
    old.advance(ms(5000));
    let pid = old.pid("a").unwrap();
    let sim = take_over(
        &old,
        vec![svc("a")],
        &[("a", ExitStatus::Unknown)],
        ms(1000),
    );
    assert!(watched(&sim).is_empty(), "{:?}", sim.log);
    assert_ne!(sim.pid("a"), Some(pid));
    assert_eq!(sim.spawn_times("a").len(), 1);
    assert_eq!(
        sim.sup.row("a", sim.now).unwrap().last_exit.as_deref(),
        Some("exit status unknown")
    );
    assert!(sim.sup.id_by_pid(pid).is_none() || sim.pid("a") == Some(pid));
}

#[test]
fn adopted_watchdog_service_gets_a_fresh_deadline() {
    let mut a = svc("a");
    a.notify = NotifyMode::Watchdog;
    a.watchdog_timeout = Some(ms(2000));
    let mut old = Sim::new(vec![a.clone()]);
    old.notify("a", vec![NotifyMsg::Ready]);
    old.advance(ms(1500));
    old.notify("a", vec![NotifyMsg::Watchdog]);
    let pid = old.pid("a").unwrap();
    // The restarter was away far longer than the timeout.
    let mut sim = take_over(&old, vec![a], &[], ms(10_000));
    let adopted_at = sim.now;
    assert_eq!(sim.state("a"), "ready", "readiness carried over");
    assert_eq!(
        sim.sup.row("a", sim.now).unwrap().watchdog_left,
        Some(ms(2000))
    );
    sim.advance(ms(1900));
    assert!(sim.kills("a").is_empty());
    sim.notify("a", vec![NotifyMsg::Watchdog]);
    sim.advance(ms(1900));
    assert!(sim.kills("a").is_empty(), "pings after adoption count");
    sim.advance(ms(500));
    assert_eq!(
        sim.kills("a")[0],
        (adopted_at + ms(1900) + ms(2000), pid, false, libc::SIGABRT)
    );
}

#[test]
fn operator_stopped_service_stays_stopped_and_a_started_disabled_one_runs() {
    let mut off = svc("off");
    off.disabled = true;
    let mut old = Sim::new(vec![svc("a"), off.clone(), svc("c")]);
    let (_, actions) = old.sup.stop("a", old.now).unwrap();
    old.run(actions);
    old.exit(
        "a",
        ExitStatus::Signal {
            signal: libc::SIGTERM,
            core: false,
        },
    );
    let (_, actions) = old.sup.start("off", old.now).unwrap();
    old.run(actions);
    let pid_off = old.pid("off").unwrap();
    assert_eq!(old.state("a"), "stopped");
    let sim = take_over(&old, vec![svc("a"), off, svc("c")], &[], ms(1000));
    assert_eq!(sim.state("a"), "stopped");
    assert!(sim.spawn_times("a").is_empty());
    assert_eq!(sim.pid("off"), Some(pid_off), "started by hand: adopted");
    assert_eq!(sim.state("c"), "running");
}

#[test]
fn a_failed_service_stays_failed_and_its_window_carries_over() {
    let mut a = limited("a", OnExhausted::Stop);
    a.restart_delay = ms(0);
    let mut old = Sim::new(vec![a.clone()]);
    // One restart short of exhausting the window.
    let max = a.limit.unwrap().max_restarts;
    for _ in 0..max {
        old.exit("a", crash());
    }
    assert_eq!(old.state("a"), "running");
    let mut sim = take_over(&old, vec![a.clone()], &[], ms(10));
    assert_eq!(sim.sup.row("a", sim.now).unwrap().restarts, u64::from(max));
    sim.exit("a", crash());
    assert_eq!(sim.state("a"), "failed", "the window is the old one");
    let sim2 = take_over(&sim, vec![a], &[], ms(10));
    assert_eq!(sim2.state("a"), "failed");
    assert!(sim2.spawn_times("a").is_empty());
}

#[test]
fn readiness_is_written_to_the_state_file() {
    let mut a = svc("a");
    a.notify = NotifyMode::Ready;
    let mut sim = Sim::new(vec![a]);
    sim.take_actions();
    sim.notify("a", vec![NotifyMsg::Ready]);
    assert!(sim.take_actions().contains(&Action::WriteState));
    let r = sim.sup.resumes();
    assert!(r[0].3.ready);
}

#[test]
fn resources_are_provisioned_before_the_first_spawn_and_on_a_spec_change() {
    let mut sim = Sim::new(vec![svc("a")]);
    let id = sim.id("a");
    let prov = sim.position(|a| *a == Action::Provision { id }).unwrap();
    let spawn = sim.position(|a| *a == Action::Spawn { id }).unwrap();
    assert!(prov < spawn);
    sim.take_actions();
    // A restart provisions nothing new.
    sim.advance(ms(5000));
    sim.exit("a", crash());
    assert!(!sim.take_actions().contains(&Action::Provision { id }));
    // A changed file does, before the start with the new spec.
    let mut changed = svc("a");
    changed.notify = NotifyMode::Ready;
    let actions = sim.sup.reload(set(vec![changed]), sim.now).unwrap();
    sim.run(actions);
    sim.exit(
        "a",
        ExitStatus::Signal {
            signal: libc::SIGTERM,
            core: false,
        },
    );
    let log = sim.take_actions();
    let prov = log.iter().position(|a| *a == Action::Provision { id });
    let spawn = log.iter().rposition(|a| *a == Action::Spawn { id });
    assert!(prov.is_some() && prov < spawn, "{log:?}");
}

// ---- a state a model checker can hash (issue 14) --------------------------

fn hash_of(sup: &Supervisor) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    sup.hash(&mut h);
    h.finish()
}

/// Loads `specs` without carrying out any action: the spawns stay out.
fn loaded(specs: Vec<ServiceSpec>, now: MonoTime) -> (Supervisor, Vec<Action>) {
    let mut sup = Supervisor::new();
    let actions = sup.load(set(specs), now);
    (sup, actions)
}

#[test]
fn two_spawn_orders_converge_to_equal_states() {
    let now = MonoTime::from_duration(Duration::from_secs(100));
    let (mut one, actions) = loaded(vec![svc("a"), svc("b")], now);
    let spawns: Vec<ServiceId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn { id } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(spawns.len(), 2);
    let mut two = one.clone();
    let (a, b) = (spawns[0], spawns[1]);
    one.handle(a, Event::Spawned { pid: 11 }, now);
    assert_ne!(one, two, "a spawn changes the state");
    one.handle(b, Event::Spawned { pid: 12 }, now);
    two.handle(b, Event::Spawned { pid: 12 }, now);
    two.handle(a, Event::Spawned { pid: 11 }, now);
    assert_eq!(one, two);
    assert_eq!(hash_of(&one), hash_of(&two));
    // Different pids are different states.
    let mut three = loaded(vec![svc("a"), svc("b")], now).0;
    three.handle(a, Event::Spawned { pid: 11 }, now);
    three.handle(b, Event::Spawned { pid: 13 }, now);
    assert_ne!(one, three);
}

#[test]
fn status_texts_and_counters_do_not_split_states() {
    let now = MonoTime::from_duration(Duration::from_secs(100));
    let mut a = svc("a");
    a.notify = NotifyMode::Watchdog;
    a.watchdog_timeout = Some(ms(1000));
    let (mut one, actions) = loaded(vec![a], now);
    let id = one.id("a").unwrap();
    assert!(actions.contains(&Action::Spawn { id }));
    one.handle(id, Event::Spawned { pid: 11 }, now);
    let mut two = one.clone();
    let notify = |messages: Vec<NotifyMsg>, in_group: bool| Event::Notify {
        sender_pid: Some(11),
        sender_uid: Some(0),
        in_group: Some(in_group),
        messages,
    };
    // One order: a status text, then a ping; the other: a rejected
    // message (a counter), a ping, another text.
    let t = now + ms(10);
    one.handle(id, notify(vec![NotifyMsg::Status("one".into())], true), t);
    one.handle(id, notify(vec![NotifyMsg::Watchdog], true), t);
    two.handle(id, notify(vec![NotifyMsg::Ready], false), t);
    two.handle(id, notify(vec![NotifyMsg::Watchdog], true), t);
    two.handle(id, notify(vec![NotifyMsg::Status("two".into())], true), t);
    assert_eq!(one.row("a", t).unwrap().status_text.as_deref(), Some("one"));
    assert_eq!(two.row("a", t).unwrap().notify_rejected, 1);
    assert_eq!(one, two);
    assert_eq!(hash_of(&one), hash_of(&two));
    // Readiness and a moved watchdog deadline are state.
    let mut ready = two.clone();
    ready.handle(id, notify(vec![NotifyMsg::Ready], true), t);
    assert_ne!(ready, two);
    let mut later = two.clone();
    later.handle(id, notify(vec![NotifyMsg::Watchdog], true), t + ms(1));
    assert_ne!(later, two);
}

#[test]
fn rebase_shifts_every_deadline_and_keeps_the_decisions() {
    let mut a = svc("a");
    a.restart_delay = ms(2000);
    let mut sim = Sim::new(vec![a]);
    sim.advance(ms(500));
    sim.exit("a", crash());
    let before = sim.sup.next_deadline().expect("a restart is due");
    let by = Duration::from_secs(60);
    let mut shifted = sim.sup.clone();
    let now = MonoTime::from_duration(sim.now.as_duration() - by);
    shifted.rebase(by, now, Duration::from_secs(3600));
    let after = shifted.next_deadline().unwrap();
    assert_eq!(before.saturating_since(after), by);
    let id = sim.id("a");
    let mut original = sim.sup.clone();
    let a1 = original.tick(before);
    let a2 = shifted.tick(after);
    assert!(a1.contains(&Action::Spawn { id }), "{a1:?}");
    assert_eq!(a1, a2);
    // Shifted back once more by the same amount, the original equals the
    // shifted one.
    original.rebase(by, now, Duration::from_secs(3600));
    assert_eq!(original, shifted);
}
