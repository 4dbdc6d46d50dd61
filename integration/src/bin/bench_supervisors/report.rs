//! The markdown report: one table per workload, tether beside runit and s6
//! with the ratios tether/runit and tether/s6 (below 1: tether is smaller
//! or faster), then the floor as a reference. Each figure is the median
//! over the runs; a cell is `—` when no run produced it (see the failures
//! listed at the end).

use crate::stats::{median, percentile};
use crate::workload::{Lifecycle, Restarts};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

pub const TETHER: &str = "tether";
pub const RUNIT: &str = "runit";
pub const S6: &str = "s6";
pub const FLOOR: &str = "floor";

/// Everything measured.
#[derive(Default)]
pub struct Results {
    pub lifecycle: BTreeMap<(String, usize), Vec<Lifecycle>>,
    pub restarts: BTreeMap<String, Vec<Restarts>>,
    pub failures: Vec<String>,
}

/// How the figures were produced (printed above the tables).
pub struct Context {
    pub machine: Vec<(String, String)>,
    pub settings: Vec<(String, String)>,
    pub ns: Vec<usize>,
    /// Labels of the restart-only variants (e.g. tether at 1 s delay).
    pub restart_extra: Vec<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) => format!("{x:.decimals$}"),
        None => "—".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "—".into(),
    }
}

/// One row: label, then tether, runit, s6, tether/runit, tether/s6, floor,
/// then extra cells.
fn row(out: &mut String, label: &str, v: [Option<f64>; 4], decimals: usize, extra: &[String]) {
    let [t, r, s, f] = v;
    let _ = write!(
        out,
        "| {label} | {} | {} | {} | {} | {} | {} |",
        fmt_num(t, decimals),
        fmt_num(r, decimals),
        fmt_num(s, decimals),
        ratio(t, r),
        ratio(t, s),
        fmt_num(f, decimals)
    );
    for e in extra {
        let _ = write!(out, " {e} |");
    }
    out.push('\n');
}

fn header(out: &mut String, first: &str, extra: &[&str]) {
    let _ = write!(
        out,
        "| {first} | tether | runit | s6 | tether/runit | tether/s6 | floor |"
    );
    for e in extra {
        let _ = write!(out, " {e} |");
    }
    out.push_str("\n|---|---:|---:|---:|---:|---:|---:|");
    for _ in extra {
        out.push_str("---:|");
    }
    out.push('\n');
}

impl Results {
    fn life(&self, label: &str, n: usize, f: impl Fn(&Lifecycle) -> Option<f64>) -> Option<f64> {
        median(self.lifecycle.get(&(label.to_string(), n))?.iter().map(f))
    }

    fn four_life(
        &self,
        n: usize,
        f: impl Fn(&Lifecycle) -> Option<f64> + Copy,
    ) -> [Option<f64>; 4] {
        [TETHER, RUNIT, S6, FLOOR].map(|l| self.life(l, n, f))
    }

    fn rest(&self, label: &str, f: impl Fn(&Restarts) -> Option<f64>) -> Option<f64> {
        median(self.restarts.get(label)?.iter().map(f))
    }

    fn four_rest(&self, f: impl Fn(&Restarts) -> Option<f64> + Copy) -> [Option<f64>; 4] {
        [TETHER, RUNIT, S6, FLOOR].map(|l| self.rest(l, f))
    }

    fn kills(&self, label: &str) -> String {
        match self.restarts.get(label) {
            Some(v) if !v.is_empty() => {
                let k: Vec<String> = v.iter().map(|r| r.latencies.len().to_string()).collect();
                k.join("+")
            }
            _ => "0".into(),
        }
    }

    pub fn markdown(&self, ctx: &Context) -> String {
        let mut o = String::new();
        o.push_str("# Supervisor benchmark: tether vs runit vs s6\n\n");
        for (k, v) in ctx.machine.iter().chain(ctx.settings.iter()) {
            let _ = writeln!(o, "- {k}: {v}");
        }
        o.push_str(
            "\nEach figure is the median over the runs. Ratios below 1 mean tether is smaller or faster. \
             `floor` is a bare fork/exec/wait loop (a reference, not a contender).\n\n",
        );

        o.push_str("## Start: launch of the supervisor → all N services running (s)\n\n");
        header(&mut o, "N", &["tether, all ready"]);
        for &n in &ctx.ns {
            let v = self.four_life(n, |l| Some(l.start.as_secs_f64()));
            let ready = self.life(TETHER, n, |l| l.ready.map(|d| d.as_secs_f64()));
            row(&mut o, &n.to_string(), v, 3, &[fmt_num(ready, 3)]);
        }

        o.push_str("\n## Memory of the supervision processes: Pss (MiB)\n\n");
        o.push_str("tether: tether-restarter; runit: runsvdir + every runsv; s6: s6-svscan + every s6-supervise.\n\n");
        header(&mut o, "N", &["processes (tether/runit/s6)"]);
        for &n in &ctx.ns {
            let v = self.four_life(n, |l| Some(l.memory.pss_kib as f64 / 1024.0));
            let procs: Vec<String> = [TETHER, RUNIT, S6]
                .iter()
                .map(|l| fmt_num(self.life(l, n, |x| Some(x.memory.processes as f64)), 0))
                .collect();
            row(&mut o, &n.to_string(), v, 2, &[procs.join("/")]);
        }
        o.push_str("\n## Memory of the supervision processes: VmRSS (MiB)\n\n");
        header(&mut o, "N", &[]);
        for &n in &ctx.ns {
            let v = self.four_life(n, |l| Some(l.memory.rss_kib as f64 / 1024.0));
            row(&mut o, &n.to_string(), v, 2, &[]);
        }

        let idle = ctx
            .settings
            .iter()
            .find(|(k, _)| k == "idle period")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "\n## Idle cost over {idle}: CPU time of the supervision processes (ms)\n"
        );
        header(&mut o, "N", &["restarts while idle (tether/runit/s6)"]);
        for &n in &ctx.ns {
            let v = self.four_life(n, |l| Some(l.idle.run_ns as f64 / 1e6));
            let rs: Vec<String> = [TETHER, RUNIT, S6]
                .iter()
                .map(|l| fmt_num(self.life(l, n, |x| Some(x.idle_restarts as f64)), 0))
                .collect();
            row(&mut o, &n.to_string(), v, 2, &[rs.join("/")]);
        }
        let _ = writeln!(
            o,
            "\n## Idle cost over {idle}: context switches (voluntary + involuntary) of the supervision processes\n"
        );
        header(&mut o, "N", &["voluntary only (tether/runit/s6)"]);
        for &n in &ctx.ns {
            let v = self.four_life(n, |l| Some(l.idle.switches() as f64));
            let vol: Vec<String> = [TETHER, RUNIT, S6]
                .iter()
                .map(|l| fmt_num(self.life(l, n, |x| Some(x.idle.voluntary as f64)), 0))
                .collect();
            row(&mut o, &n.to_string(), v, 0, &[vol.join("/")]);
        }

        o.push_str(
            "\n## Restart: SIGKILL of one service (up > 1 s) → its replacement running (ms)\n\n",
        );
        let extra_labels: Vec<&str> = ctx.restart_extra.iter().map(String::as_str).collect();
        header(&mut o, "", &extra_labels);
        for (name, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
            let f = |r: &Restarts| percentile(&r.latencies, p).map(ms);
            let v = self.four_rest(f);
            let extra: Vec<String> = ctx
                .restart_extra
                .iter()
                .map(|l| fmt_num(self.rest(l, f), 3))
                .collect();
            row(&mut o, name, v, 3, &extra);
        }
        let mut kills = vec![format!(
            "kills per run: tether {}, runit {}, s6 {}, floor {}",
            self.kills(TETHER),
            self.kills(RUNIT),
            self.kills(S6),
            self.kills(FLOOR)
        )];
        for l in &ctx.restart_extra {
            kills.push(format!("{l} {}", self.kills(l)));
        }
        let _ = writeln!(o, "\n{}.", kills.join(", "));

        o.push_str(
            "\n### tether: SIGKILL → the restarter's `service NAME exited` line queued on the syslog socket (ms)\n\n\
             An upper bound on death → detection: the restarter logs the exit right after reaping it.\n\n",
        );
        let mut labels = vec![TETHER.to_string()];
        labels.extend(ctx.restart_extra.iter().cloned());
        let _ = write!(o, "| |");
        for l in &labels {
            let _ = write!(o, " {l} |");
        }
        o.push_str("\n|---|");
        for _ in &labels {
            o.push_str("---:|");
        }
        o.push('\n');
        for (name, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
            let _ = write!(o, "| {name} |");
            for l in &labels {
                let v = self.rest(l, |r| percentile(&r.detections, p).map(ms));
                let _ = write!(o, " {} |", fmt_num(v, 3));
            }
            o.push('\n');
        }

        o.push_str("\n## Storm: all N services killed at once → all N running again (s)\n\n");
        header(
            &mut o,
            "N",
            &[
                "tether: longest heartbeat silence (s)",
                "tether: late beat (> 2 × interval)",
            ],
        );
        for &n in &ctx.ns {
            let v = self.four_life(n, |l| Some(l.storm.as_secs_f64()));
            let gap = self.life(TETHER, n, |l| {
                l.storm_beat_gap.map(|(g, _)| g.as_secs_f64())
            });
            let late = self.lifecycle.get(&(TETHER.to_string(), n)).map(|runs| {
                let late = runs
                    .iter()
                    .filter(|l| l.storm_beat_gap.is_some_and(|(g, i)| g > i * 2))
                    .count();
                format!("{late} of {} runs", runs.len())
            });
            row(
                &mut o,
                &n.to_string(),
                v,
                3,
                &[fmt_num(gap, 3), late.unwrap_or_else(|| "—".into())],
            );
        }

        if !self.failures.is_empty() {
            o.push_str("\n## Failures\n\n");
            for f in &self.failures {
                let _ = writeln!(o, "- {f}");
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_missing_cells() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25");
        assert_eq!(ratio(Some(1.0), None), "—");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "—");
        assert_eq!(fmt_num(None, 2), "—");
        assert_eq!(fmt_num(Some(1.23456), 2), "1.23");
    }

    #[test]
    fn report_has_a_row_per_n_with_medians() {
        let mut r = Results::default();
        for (label, secs) in [(TETHER, [1.0, 3.0, 2.0]), (RUNIT, [4.0, 4.0, 4.0])] {
            let runs = secs
                .iter()
                .map(|&s| Lifecycle {
                    start: Duration::from_secs_f64(s),
                    ..Lifecycle::default()
                })
                .collect();
            r.lifecycle.insert((label.to_string(), 10), runs);
        }
        let ctx = Context {
            machine: vec![],
            settings: vec![],
            ns: vec![10],
            restart_extra: vec![],
        };
        let md = r.markdown(&ctx);
        assert!(
            md.contains("| 10 | 2.000 | 4.000 | — | 0.50 | — | — |"),
            "{md}"
        );
    }
}
