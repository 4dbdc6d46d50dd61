//! Status reporting, pure: a service's status line from the supervisor's
//! row and the shell's counters (output, notify socket, a held start), the
//! list of configuration errors, and the liveness line. Decides nothing;
//! the shell gathers the figures (`event_loop`, `Shell::status` and
//! `Shell::liveness`).

use crate::control::ServiceStatus;
use crate::supervisor::{ServiceRow, Summary};
use std::fmt;

/// What the shell counts of one service, beside the supervisor's row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Output lines dropped (syslog down or busy).
    pub dropped_lines: u64,
    /// Datagrams the notify socket rejected (bad credentials, too big).
    pub socket_rejected: u64,
    /// Datagrams the notify socket refused (a sender not allowed).
    pub socket_refused: u64,
    pub last_refusal: Option<String>,
    /// The start is held while this identity is looked up.
    pub resolving: Option<String>,
}

/// One service's status line.
pub fn service_status(r: ServiceRow, c: Counters) -> ServiceStatus {
    ServiceStatus {
        name: r.name,
        state: r.state.to_string(),
        pid: r.pid,
        uptime_ms: r.uptime.map(|d| d.as_millis() as u64),
        restarts: r.restarts,
        last_exit: r.last_exit,
        ready: r.ready,
        watchdog_deadline_ms: r.watchdog_left.map(|d| d.as_millis() as u64),
        dropped_lines: c.dropped_lines,
        notify_rejected: r.notify_rejected + c.socket_rejected,
        notify_refused: r.notify_rejected + c.socket_refused,
        notify_last_refusal: c.last_refusal,
        status_text: match c.resolving {
            Some(what) => Some(format!("resolving {what}")),
            None => r.status_text,
        },
        error: r.error,
    }
}

/// Every configuration error to show: `tether.toml`'s and the services
/// directory's, each invalid service file's, the last refused reload's.
pub fn config_errors(
    config: &[String],
    services: &[ServiceStatus],
    reload: &[String],
) -> Vec<String> {
    let mut all = config.to_vec();
    all.extend(
        services
            .iter()
            .filter(|s| s.state == "config-error")
            .filter_map(|s| s.error.clone()),
    );
    all.extend(reload.iter().map(|e| format!("reload refused: {e}")));
    all
}

/// The liveness line's figures; `Display` is the line after `liveness: `.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    pub summary: Summary,
    pub syslog_up: bool,
    pub dropped_lines: u64,
}

impl Liveness {
    /// `degraded` when a service that should run is not up and ready, or
    /// one has failed.
    pub fn word(&self) -> &'static str {
        let s = &self.summary;
        if s.up < s.expected || s.failed > 0 {
            "degraded"
        } else {
            "ok"
        }
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        write!(
            f,
            "restarter {} {}/{} up, {} failed, {} config errors, syslog {}, {} lines dropped",
            self.word(),
            s.up,
            s.expected,
            s.failed,
            s.broken,
            if self.syslog_up { "up" } else { "down" },
            self.dropped_lines
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::ServiceId;
    use std::time::Duration;

    fn row() -> ServiceRow {
        ServiceRow {
            id: ServiceId(0),
            name: "a".into(),
            state: "running",
            pid: Some(7),
            uptime: Some(Duration::from_millis(1500)),
            restarts: 2,
            last_exit: Some("exit 1".into()),
            ready: true,
            watchdog_left: Some(Duration::from_millis(250)),
            status_text: Some("busy".into()),
            error: None,
            notify_rejected: 3,
        }
    }

    #[test]
    fn a_status_line_adds_the_shells_counters_to_the_row() {
        let c = Counters {
            dropped_lines: 5,
            socket_rejected: 10,
            socket_refused: 20,
            last_refusal: Some("uid 0".into()),
            resolving: None,
        };
        let s = service_status(row(), c);
        assert_eq!(s.state, "running");
        assert_eq!(
            (s.uptime_ms, s.watchdog_deadline_ms),
            (Some(1500), Some(250))
        );
        assert_eq!(s.dropped_lines, 5);
        assert_eq!((s.notify_rejected, s.notify_refused), (13, 23));
        assert_eq!(s.notify_last_refusal.as_deref(), Some("uid 0"));
        assert_eq!(s.status_text.as_deref(), Some("busy"));
        let held = Counters {
            resolving: Some("user www".into()),
            ..Counters::default()
        };
        let s = service_status(row(), held);
        assert_eq!(s.status_text.as_deref(), Some("resolving user www"));
    }

    #[test]
    fn config_errors_list_the_file_the_services_and_the_refused_reload() {
        let mut broken = service_status(row(), Counters::default());
        broken.state = "config-error".into();
        broken.error = Some("a.toml:3: bad".into());
        let fine = service_status(row(), Counters::default());
        let all = config_errors(&["tether.toml: x".into()], &[fine, broken], &["b".into()]);
        assert_eq!(
            all,
            ["tether.toml: x", "a.toml:3: bad", "reload refused: b"]
        );
    }

    #[test]
    fn the_liveness_line_is_degraded_when_a_service_is_down_or_failed() {
        let line = |up, expected, failed| Liveness {
            summary: Summary {
                expected,
                up,
                failed,
                broken: 1,
            },
            syslog_up: true,
            dropped_lines: 4,
        };
        assert_eq!(
            line(2, 2, 0).to_string(),
            "restarter ok 2/2 up, 0 failed, 1 config errors, syslog up, 4 lines dropped"
        );
        assert_eq!(line(1, 2, 0).word(), "degraded");
        assert_eq!(line(2, 2, 1).word(), "degraded");
        let down = Liveness {
            syslog_up: false,
            ..line(0, 0, 0)
        };
        assert!(down.to_string().contains("syslog down"));
    }
}
