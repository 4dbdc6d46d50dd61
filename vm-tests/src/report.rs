//! The fault matrix report: one JSON file per row under
//! `target/vm-matrix/rows/` (written by the row's test, pass or fail), and
//! the markdown table `target/vm-matrix/matrix.md` regenerated from all of
//! them after each row. Rows are independent tests, possibly run one at a
//! time (`cargo test ... restarter`), so the table is assembled from files
//! rather than kept in memory; each row records when it ran.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The outcome of one matrix row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowResult {
    /// Sort key and file name, e.g. `04-restarter-kill`.
    pub slug: String,
    pub fault: String,
    pub expected: String,
    pub observed: String,
    /// Fault → recovery (or fault → reset → chain up again, as `observed`
    /// says).
    pub time: Option<Duration>,
    /// The budget bound of the same configuration, and its formula.
    pub bound: Option<Duration>,
    pub formula: String,
    /// What the next boot reported (`—` when there was none).
    pub cause: String,
    pub pass: bool,
}

impl RowResult {
    pub fn new(slug: &str, fault: &str, expected: &str) -> RowResult {
        RowResult {
            slug: slug.to_string(),
            fault: fault.to_string(),
            expected: expected.to_string(),
            observed: String::new(),
            time: None,
            bound: None,
            formula: String::new(),
            cause: "—".to_string(),
            pass: false,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "slug": self.slug, "fault": self.fault, "expected": self.expected,
            "observed": self.observed,
            "time_ms": self.time.map(|d| d.as_millis() as u64),
            "bound_ms": self.bound.map(|d| d.as_millis() as u64),
            "formula": self.formula, "cause": self.cause, "pass": self.pass,
            "ran_at_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        })
    }

    pub fn from_json(v: &Value) -> Option<RowResult> {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let ms = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(Duration::from_millis);
        Some(RowResult {
            slug: v.get("slug")?.as_str()?.to_string(),
            fault: s("fault"),
            expected: s("expected"),
            observed: s("observed"),
            time: ms("time_ms"),
            bound: ms("bound_ms"),
            formula: s("formula"),
            cause: s("cause"),
            pass: v.get("pass").and_then(|x| x.as_bool()).unwrap_or(false),
        })
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} s", d.as_secs_f64()))
        .unwrap_or_else(|| "—".into())
}

fn cell(s: &str) -> String {
    let s = s.replace('|', "\\|").replace('\n', " ");
    if s.is_empty() {
        "—".into()
    } else {
        s
    }
}

/// The markdown table of `rows` (in the order given).
pub fn render(rows: &[RowResult]) -> String {
    let mut out = String::from(
        "| fault | expected | observed | time | bound | cause reported on next boot | result |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let bound = match (&r.bound, r.formula.is_empty()) {
            (Some(_), false) => format!("{} ({})", secs(r.bound), r.formula),
            _ => secs(r.bound),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&r.fault),
            cell(&r.expected),
            cell(&r.observed),
            secs(r.time),
            cell(&bound),
            cell(&r.cause),
            if r.pass { "pass" } else { "FAIL" }
        ));
    }
    out
}

/// `target/vm-matrix/`.
pub fn matrix_dir() -> PathBuf {
    crate::image::target_dir().join("vm-matrix")
}

/// Writes the row's file and regenerates `matrix.md`; returns its path.
pub fn record(row: &RowResult) -> std::io::Result<PathBuf> {
    let dir = matrix_dir().join("rows");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join(format!("{}.json", row.slug)),
        row.to_json().to_string(),
    )?;
    let mut rows: Vec<RowResult> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .filter_map(|v| RowResult::from_json(&v))
        .collect();
    rows.sort_by(|a, b| a.slug.cmp(&b.slug));
    let md = matrix_dir().join("matrix.md");
    let text = format!(
        "# tether fault matrix (VM, QEMU TCG, i6300esb)\n\nDemo appliance timings: beat 250 ms, hang 2 s, restart delay 500 ms, startup grace 1 s, stale 4 s, hardware 5 s.\nTimes within one boot are measured in the guest (CLOCK_MONOTONIC); times across a reset on the host (fault reply → hardware `WATCHDOG`/`RESET` event or chain up again).\n\n{}",
        render(&rows)
    );
    std::fs::write(&md, text)?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_json_and_render_as_markdown() {
        let mut r = RowResult::new(
            "04-restarter-kill",
            "restarter kill -9",
            "restarted by init, no reset",
        );
        r.observed = "pid 117 → 131 | services back".into();
        r.time = Some(Duration::from_millis(640));
        r.bound = Some(Duration::from_millis(1500));
        r.formula = "restart_delay + startup_grace".into();
        r.pass = true;
        let back = RowResult::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
        let md = render(&[back]);
        assert!(md.contains("| restarter kill -9 | restarted by init, no reset | pid 117 → 131 \\| services back | 0.64 s | 1.50 s (restart_delay + startup_grace) | — | pass |"), "{}", md);
    }
}
