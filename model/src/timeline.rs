//! A counterexample as a timeline a person reads: time since boot, the
//! step, and the state that matters after it (init, each layer as init's
//! core and the processes see it, watchdogd's gate, the hardware, the
//! writers' silences). Ticks that change none of that are folded.

use std::fmt::Write;
use std::time::Duration;

use tether_init::layers::{Layer, State as LayerState};

use crate::env::{Chain, Fault, InitProc, Phase, State, Step, WATCHED};
use crate::BASE;

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn core_word(s: LayerState) -> &'static str {
    match s {
        LayerState::Waiting { .. } => "waiting",
        LayerState::Spawning => "spawning",
        LayerState::Running {
            last_beat: None, ..
        } => "running (no beat yet)",
        LayerState::Running { .. } => "running",
        LayerState::Killing { .. } => "KILLING",
        LayerState::Stopped => "stopped",
    }
}

/// The state that matters, in one line.
pub fn summary(m: &Chain, s: &State) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "init {}",
        match (s.kernel_hung, s.init) {
            (true, _) => "(kernel HUNG)",
            (false, InitProc::Up) => "up",
            (false, InitProc::Hung) => "HUNG",
        }
    );
    for layer in Layer::ALL {
        let i = match layer {
            Layer::Watchdogd => 0,
            Layer::Restarter => 1,
        };
        let _ = write!(
            out,
            " | {}: init says {}",
            layer,
            core_word(s.layers.state(layer))
        );
        for p in &s.procs[i] {
            let phase = match p.phase {
                Phase::Starting { .. } => "starting",
                Phase::Running { .. } if p.stalled => "STALLED",
                Phase::Running { .. } if p.broken != 0 => "running (broken)",
                Phase::Running { .. } => "running",
                Phase::Hung => "HUNG",
                Phase::Unkillable => "HUNG in D state",
                Phase::Dead { .. } => "dead, unreaped",
            };
            let _ = write!(out, ", pid {} {}", p.pid, phase);
            if let Some(wd) = &p.wd {
                let _ = write!(
                    out,
                    " (gate {})",
                    if wd.gate.is_petting() {
                        "petting"
                    } else {
                        "WITHHOLDING"
                    }
                );
            }
        }
    }
    let silences: Vec<String> = WATCHED
        .iter()
        .zip(s.last_write)
        .zip(m.stale)
        .map(|((n, t), stale)| {
            let quiet = BASE.saturating_since(t);
            if quiet > stale {
                format!("{n} >{}", secs(stale))
            } else {
                format!("{n} {}", secs(quiet))
            }
        })
        .collect();
    let _ = write!(out, " | silent: {}", silences.join(", "));
    if s.hw.armed {
        let _ = write!(
            out,
            " | hw {}s armed, {} since ping",
            s.hw.secs,
            secs(s.hw.since_ping)
        );
    } else {
        out.push_str(" | hw not armed");
    }
    if let Some((end, at)) = s.end {
        let _ = write!(out, " | END {:?} {} after the fault", end, secs(at));
    }
    out
}

fn step_word(step: &Step) -> String {
    match step {
        Step::Tick => "time passes".into(),
        Step::Ready(l) => format!("{l} starts its loop"),
        Step::Reap(l) => format!("init reaps {l}"),
        Step::Fault(f) => format!("FAULT: {}", Fault::name(*f)),
        Step::Resume => "watchdogd's loop resumes".into(),
    }
}

/// The path as lines: `t=12.00s  step  | state`.
pub fn render(m: &Chain, path: Vec<(State, Option<Step>)>) -> String {
    let mut out = String::new();
    let mut t = Duration::ZERO;
    let mut last = String::new();
    let mut folded = 0u32;
    let Some((first, _)) = path.first() else {
        return out;
    };
    let _ = writeln!(out, "  t=0.00s  boot  | {}", summary(m, first));
    // Each state carries the step taken from it (the last carries none).
    for w in path.windows(2) {
        let (Some(step), next) = (&w[0].1, &w[1].0) else {
            continue;
        };
        if *step == Step::Tick {
            t += m.tick;
        }
        let now = summary(m, next);
        // Ticks that only move the clocks fold into one line.
        let shape: String = now.chars().filter(|c| !c.is_ascii_digit()).collect();
        if *step == Step::Tick && shape == last {
            folded += 1;
            continue;
        }
        if folded > 0 {
            let _ = writeln!(
                out,
                "           ... {folded} more ticks, only the clocks move"
            );
            folded = 0;
        }
        let _ = writeln!(out, "  t={}  {}  | {}", secs(t), step_word(step), now);
        last = shape;
    }
    out
}
