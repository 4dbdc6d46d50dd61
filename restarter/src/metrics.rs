//! Prometheus text exposition for node_exporter's textfile collector
//! (issue 16): a pure renderer, no system calls. Input: the restarter's
//! status report, watchdogd's published status (`RUN/watchdog.status`,
//! see `tether_common::record::WatchdogStatus`), the monotonic time in
//! milliseconds and the layers' stale timeouts. Output: `tether_` metrics
//! without timestamps, base units (seconds), `_total` counters.
//! Cardinality is bounded by the number of services (one series per
//! service per metric, `tether_service_state` one per known state word).

use crate::control::StatusReport;
use std::fmt::Write;
use std::time::Duration;
use tether_common::record::WatchdogStatus;

/// The state words `tether_service_state` always lists (0 or 1 each).
pub const STATES: &[&str] = &[
    "waiting",
    "starting",
    "running",
    "ready",
    "stopping",
    "stopped",
    "failed",
    "backoff",
    "disabled",
    "config-error",
];

pub struct Input<'a> {
    pub version: &'a str,
    pub now_ms: u64,
    pub status: &'a StatusReport,
    pub watchdog: Option<&'a WatchdogStatus>,
    pub stale_timeout: &'a dyn Fn(&str) -> Duration,
}

/// A label value escaped per the exposition format (`\`, `"`, newline).
pub fn label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// The word after `prefix` in a `last_exit` text (`exit 1`, `signal
/// KILL (core dumped)`, `signal ABRT (watchdog)`).
fn exit_word<'t>(last_exit: Option<&'t str>, prefix: &str) -> Option<&'t str> {
    last_exit?.strip_prefix(prefix)?.split(' ').next()
}

pub fn render(i: &Input<'_>) -> String {
    let mut o = String::new();
    head(&mut o, "tether_build_info", "gauge", "tether's version.");
    let _ = writeln!(o, "tether_build_info{{version=\"{}\"}} 1", label(i.version));
    head(
        &mut o,
        "tether_output_syslog_connected",
        "gauge",
        "Whether the restarter's syslog connection for service output is open (0 also before the first line; dropped lines are the signal).",
    );
    let _ = writeln!(
        o,
        "tether_output_syslog_connected {}",
        u8::from(i.status.syslog_up)
    );
    head(
        &mut o,
        "tether_config_errors",
        "gauge",
        "Configuration errors in force (bad tether.toml, bad service files, a refused reload).",
    );
    let _ = writeln!(o, "tether_config_errors {}", i.status.config_errors.len());
    head(
        &mut o,
        "tether_control_rejected_total",
        "counter",
        "Control requests refused (malformed, denied, busy, timed out).",
    );
    let _ = writeln!(
        o,
        "tether_control_rejected_total {}",
        i.status.control_rejected
    );
    if let Some(w) = i.watchdog {
        head(
            &mut o,
            "tether_watchdog_status_age_seconds",
            "gauge",
            "Age of watchdogd's published status (grows when watchdogd is wedged).",
        );
        let _ = writeln!(
            o,
            "tether_watchdog_status_age_seconds {}",
            secs(i.now_ms.saturating_sub(w.written_ms))
        );
        head(
            &mut o,
            "tether_layer_up",
            "gauge",
            "Whether the layer's last beat is younger than its stale timeout.",
        );
        for (name, beat) in &w.layers {
            let up = beat.is_some_and(|b| {
                Duration::from_millis(i.now_ms.saturating_sub(b)) < (i.stale_timeout)(name)
            });
            let _ = writeln!(
                o,
                "tether_layer_up{{layer=\"{}\"}} {}",
                label(name),
                u8::from(up)
            );
        }
        head(
            &mut o,
            "tether_layer_last_beat_age_seconds",
            "gauge",
            "Seconds since the layer's last beat.",
        );
        for (name, beat) in &w.layers {
            if let Some(b) = beat {
                let _ = writeln!(
                    o,
                    "tether_layer_last_beat_age_seconds{{layer=\"{}\"}} {}",
                    label(name),
                    secs(i.now_ms.saturating_sub(*b))
                );
            }
        }
        head(
            &mut o,
            "tether_watchdog_armed",
            "gauge",
            "Whether the watchdog device is open and armed (or simulated).",
        );
        let armed = matches!(w.device.as_str(), "armed" | "simulated");
        let _ = writeln!(o, "tether_watchdog_armed {}", u8::from(armed));
        head(
            &mut o,
            "tether_watchdog_petting",
            "gauge",
            "Whether watchdogd is petting (every layer fresh).",
        );
        let _ = writeln!(o, "tether_watchdog_petting {}", u8::from(w.petting));
        if let Some(t) = w.timeout_s {
            head(
                &mut o,
                "tether_watchdog_timeout_seconds",
                "gauge",
                "The hardware timeout read back from the device.",
            );
            let _ = writeln!(o, "tether_watchdog_timeout_seconds {t}");
        }
        if let Some(p) = w.last_pet_ms {
            head(
                &mut o,
                "tether_watchdog_last_pet_age_seconds",
                "gauge",
                "Seconds since the last pet.",
            );
            let _ = writeln!(
                o,
                "tether_watchdog_last_pet_age_seconds {}",
                secs(i.now_ms.saturating_sub(p))
            );
        }
        if let Some(b) = w.boot_status {
            head(
                &mut o,
                "tether_watchdog_boot_status",
                "gauge",
                "WDIOC_GETBOOTSTATUS bits read at start (0x20: CARDRESET).",
            );
            let _ = writeln!(o, "tether_watchdog_boot_status {b}");
        }
        if let Some(b) = w.boot {
            head(
                &mut o,
                "tether_boots_total",
                "counter",
                "Boots counted in the state directory.",
            );
            let _ = writeln!(o, "tether_boots_total {b}");
        }
        if let Some(c) = &w.prev_cause {
            head(
                &mut o,
                "tether_previous_boot_end_info",
                "gauge",
                "How the previous boot ended.",
            );
            let _ = writeln!(
                o,
                "tether_previous_boot_end_info{{cause=\"{}\",layer=\"{}\"}} 1",
                label(c),
                label(w.prev_layer.as_deref().unwrap_or(""))
            );
        }
    }
    let svc = &i.status.services;
    head(
        &mut o,
        "tether_service_state",
        "gauge",
        "1 for the service's current state.",
    );
    for s in svc {
        for st in STATES {
            let _ = writeln!(
                o,
                "tether_service_state{{service=\"{}\",state=\"{st}\"}} {}",
                label(&s.name),
                u8::from(s.state == *st)
            );
        }
        // A word not listed (a newer restarter): still one series.
        if !STATES.contains(&s.state.as_str()) {
            let _ = writeln!(
                o,
                "tether_service_state{{service=\"{}\",state=\"{}\"}} 1",
                label(&s.name),
                label(&s.state)
            );
        }
    }
    head(
        &mut o,
        "tether_service_ready",
        "gauge",
        "Whether the service is ready.",
    );
    for s in svc {
        let _ = writeln!(
            o,
            "tether_service_ready{{service=\"{}\"}} {}",
            label(&s.name),
            u8::from(s.ready)
        );
    }
    head(
        &mut o,
        "tether_service_restarts_total",
        "counter",
        "Restarts of the service.",
    );
    for s in svc {
        let _ = writeln!(
            o,
            "tether_service_restarts_total{{service=\"{}\"}} {}",
            label(&s.name),
            s.restarts
        );
    }
    head(
        &mut o,
        "tether_service_last_exit_code",
        "gauge",
        "Exit code of the last exit (absent: none, or a signal).",
    );
    for s in svc {
        if let Some(c) =
            exit_word(s.last_exit.as_deref(), "exit ").and_then(|c| c.parse::<i64>().ok())
        {
            let _ = writeln!(
                o,
                "tether_service_last_exit_code{{service=\"{}\"}} {c}",
                label(&s.name)
            );
        }
    }
    head(
        &mut o,
        "tether_service_last_exit_signal",
        "gauge",
        "Signal number of the last exit by signal.",
    );
    for s in svc {
        if let Some(n) =
            exit_word(s.last_exit.as_deref(), "signal ").and_then(crate::control::parse_signal)
        {
            let _ = writeln!(
                o,
                "tether_service_last_exit_signal{{service=\"{}\"}} {n}",
                label(&s.name)
            );
        }
    }
    head(
        &mut o,
        "tether_service_output_dropped_lines_total",
        "counter",
        "Output lines dropped (syslog down or busy beyond the buffer).",
    );
    for s in svc {
        let _ = writeln!(
            o,
            "tether_service_output_dropped_lines_total{{service=\"{}\"}} {}",
            label(&s.name),
            s.dropped_lines
        );
    }
    head(
        &mut o,
        "tether_service_notify_rejected_total",
        "counter",
        "Notify datagrams rejected (malformed or refused).",
    );
    for s in svc {
        let _ = writeln!(
            o,
            "tether_service_notify_rejected_total{{service=\"{}\"}} {}",
            label(&s.name),
            s.notify_rejected
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ServiceStatus;

    #[test]
    fn fixed_inputs_render_the_expected_series() {
        let status = StatusReport {
            services: vec![ServiceStatus {
                name: "we\"ird".into(),
                state: "running".into(),
                restarts: 3,
                last_exit: Some("signal KILL".into()),
                dropped_lines: 5,
                notify_rejected: 2,
                ..Default::default()
            }],
            syslog_up: true,
            ..Default::default()
        };
        let w = WatchdogStatus {
            written_ms: 10_000,
            petting: true,
            device: "armed".into(),
            timeout_s: Some(30),
            last_pet_ms: Some(9_600),
            boot_status: Some(0x20),
            boot: Some(7),
            prev_cause: Some("watchdog".into()),
            prev_layer: Some("restarter".into()),
            layers: vec![("init".into(), Some(9_900)), ("restarter".into(), None)],
        };
        let stale = |_: &str| Duration::from_secs(20);
        let text = render(&Input {
            version: "0.1.0",
            now_ms: 30_500,
            status: &status,
            watchdog: Some(&w),
            stale_timeout: &stale,
        });
        for want in [
            "tether_build_info{version=\"0.1.0\"} 1",
            "tether_layer_up{layer=\"init\"} 0",
            "tether_layer_up{layer=\"restarter\"} 0",
            "tether_layer_last_beat_age_seconds{layer=\"init\"} 20.600",
            "tether_watchdog_last_pet_age_seconds 20.900",
            "tether_watchdog_timeout_seconds 30",
            "tether_boots_total 7",
            "tether_previous_boot_end_info{cause=\"watchdog\",layer=\"restarter\"} 1",
            "tether_service_state{service=\"we\\\"ird\",state=\"running\"} 1",
            "tether_service_state{service=\"we\\\"ird\",state=\"failed\"} 0",
            "tether_service_last_exit_signal{service=\"we\\\"ird\"} 9",
            "tether_service_restarts_total{service=\"we\\\"ird\"} 3",
            "tether_service_output_dropped_lines_total{service=\"we\\\"ird\"} 5",
            "tether_service_notify_rejected_total{service=\"we\\\"ird\"} 2",
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want}:\n{text}");
        }
        assert!(
            !text.contains("tether_service_last_exit_code{"),
            "a signal, not a code"
        );
        let fresh = render(&Input {
            now_ms: 10_000,
            ..Input {
                version: "0.1.0",
                now_ms: 0,
                status: &status,
                watchdog: Some(&w),
                stale_timeout: &stale,
            }
        });
        assert!(
            fresh.contains("tether_layer_up{layer=\"init\"} 1"),
            "{fresh}"
        );
    }

    #[test]
    fn exits_with_notes_and_unlisted_states_still_render() {
        let svc = |name: &str, state: &str, exit: &str| ServiceStatus {
            name: name.into(),
            state: state.into(),
            last_exit: Some(exit.into()),
            ..Default::default()
        };
        let status = StatusReport {
            services: vec![
                svc("a", "waiting", "signal ABRT (watchdog)"),
                svc("b", "adopting", "exit 3 (watchdog)"),
                svc("c", "stopped", "signal SEGV (core dumped)"),
            ],
            config_errors: vec!["x".into()],
            ..Default::default()
        };
        let stale = |_: &str| Duration::from_secs(20);
        let text = render(&Input {
            version: "0.1.0",
            now_ms: 0,
            status: &status,
            watchdog: None,
            stale_timeout: &stale,
        });
        for want in [
            "tether_service_state{service=\"a\",state=\"waiting\"} 1",
            "tether_service_last_exit_signal{service=\"a\"} 6",
            "tether_service_state{service=\"b\",state=\"adopting\"} 1",
            "tether_service_last_exit_code{service=\"b\"} 3",
            "tether_service_last_exit_signal{service=\"c\"} 11",
            "tether_config_errors 1",
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want}:\n{text}");
        }
    }
}
