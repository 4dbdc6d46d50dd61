//! The configurations checked: the defaults, the demo appliance's timings
//! (vm-tests/src/appliance.rs, parsed from its `tether.toml`), and boundary
//! configurations, each inequality of `budget::validate` at its smallest
//! accepted margin on the model's tick. Each is checked against the
//! validator first: the model only explores configurations it accepts.

use std::path::Path;
use std::time::Duration;

use tether_common::budget;
use tether_common::config::Config;

/// A named configuration and the tick it is checked at.
#[derive(Clone, Debug)]
pub struct Named {
    pub name: String,
    pub config: Config,
    pub tick: Duration,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn defaults() -> Config {
    Config::default()
}

pub fn demo() -> Config {
    let path = Path::new("vm-tests/src/appliance.rs (DEMO_TETHER_TOML)");
    match Config::parse(tether_vm_tests::appliance::DEMO_TETHER_TOML, path) {
        Ok(c) => c,
        Err(e) => panic!("the demo appliance's tether.toml does not parse: {e}"),
    }
}

/// The smallest multiple of `tick` for the value `set` writes that the
/// validator accepts (searching upwards from one tick), or `None`.
fn smallest(base: &Config, tick: Duration, set: impl Fn(&mut Config, Duration)) -> Option<Config> {
    (1..=4000u32).find_map(|k| {
        let mut c = base.clone();
        set(&mut c, tick * k);
        budget::validate(&c).is_ok().then_some(c)
    })
}

/// `base` with the largest `max_restarts` whose crash loop before the
/// first beat of `layer` ends in the orderly reboot (`budget::early_loop`).
fn reboot_first(base: &Config, layer: &str) -> Option<Config> {
    (1..=1000u32).rev().find_map(|n| {
        let mut c = base.clone();
        c.init.max_restarts = n;
        (budget::validate(&c).is_ok()
            && budget::early_loop(&c, layer).outcome == budget::Outcome::Reboot)
            .then_some(c)
    })
}

fn stale_all(c: &mut Config, d: Duration) {
    c.timing.stale_timeout = d;
    c.timing.stale_timeout_by_layer.clear();
}

/// Every configuration, in the README's order, at its coarse tick (CI:
/// 1 s for the defaults, 250 ms for the demo) divided by `div`; each
/// boundary is placed one such tick above what it must exceed.
pub fn all(div: u32) -> Vec<Named> {
    let div = div.max(1);
    let mut out = Vec::new();
    let mut push = |name: &str, config: Option<Config>, tick: Duration| {
        if let Some(config) = config {
            out.push(Named {
                name: name.into(),
                config,
                tick,
            });
        }
    };
    let d = defaults();
    let s = ms(1000) / div;
    push("defaults", Some(d.clone()), s);
    let demo = demo();
    let q = ms(250) / div;
    push("demo", Some(demo.clone()), q);
    // Rule 1: hang_timeout one tick above beat_interval.
    push(
        "defaults, hang_timeout at its margin",
        smallest(&d, s, |c, v| c.timing.hang_timeout = v),
        s,
    );
    // Rule 2: stale_timeout one tick above the repair time.
    push(
        "defaults, stale_timeout at its margin",
        smallest(&d, s, stale_all),
        s,
    );
    push(
        "demo, stale_timeout at its margin",
        smallest(&demo, q, stale_all),
        q,
    );
    // Rule 3: hardware_timeout one tick above the repair time.
    push(
        "defaults, hardware_timeout at its margin",
        smallest(&d, s, |c, v| c.timing.hardware_timeout = v),
        s,
    );
    push(
        "demo, hardware_timeout at its margin",
        smallest(&demo, q, |c, v| c.timing.hardware_timeout = v),
        q,
    );
    // Both rungs tight at once.
    push(
        "defaults, stale and hardware at their margins",
        smallest(&d, s, stale_all)
            .and_then(|c| smallest(&c, s, |c, v| c.timing.hardware_timeout = v)),
        s,
    );
    // Rule 4: the window one tick above a crash loop's longest run.
    push(
        "defaults, window at its margin",
        smallest(&d, s, |c, v| c.init.window = v),
        s,
    );
    push(
        "demo, window at its margin",
        smallest(&demo, q, |c, v| c.init.window = v),
        q,
    );
    // A crash loop before the first beat: the largest `max_restarts` for
    // which its row still says the orderly reboot lands first.
    let r = reboot_first(&d, "restarter");
    let w = reboot_first(&d, "watchdogd");
    let same = r.as_ref().map(|c| c.init.max_restarts) == w.as_ref().map(|c| c.init.max_restarts);
    if same {
        push(
            "defaults, max_restarts at the early loops' reboot margin",
            r,
            s,
        );
    } else {
        push(
            "defaults, max_restarts at the restarter early loop's reboot margin",
            r,
            s,
        );
        push(
            "defaults, max_restarts at the watchdogd early loop's reboot margin",
            w,
            s,
        );
    }
    // The minimums standing in: restart_delay and startup_grace zero.
    let mut zero = demo.clone();
    zero.timing.restart_delay = Duration::ZERO;
    zero.timing.startup_grace = Duration::ZERO;
    push(
        "demo, restart_delay and startup_grace 0, stale at its margin",
        smallest(&zero, q, stale_all),
        q,
    );
    out
}
