//! Records in the state directory (docs/PROTOCOL.md): `reset-reason` (what
//! ended, or will have ended, this boot) and `boot-count`.
//!
//! Both are written atomically: `NAME.tmp`, `fsync`, `rename`, `fsync` of the
//! directory (created if missing). Reading is tolerant of garbage: at most
//! [`MAX_RECORD_BYTES`] are accepted, unknown keys and `#` comments are
//! ignored, and a malformed file is a clear [`RecordError`], never a panic.
//!
//! Decisions:
//! - Values written are single-line: control characters become spaces and
//!   each value is capped at [`MAX_VALUE`] bytes.
//! - A `reset-reason` without `cause=` is malformed; so is an unknown cause
//!   or a non-numeric `boot`/`silent_ms`. A repeated key: the last one wins.
//! - The previous boot is described in one line by [`describe_previous`]:
//!   `previous boot ended: watchdog reset: restarter silent 20.4 s (boot 3)`,
//!   `previous boot ended: unknown (boot 3)`,
//!   `previous boot ended: orderly reboot (requested by tetherctl) (boot 3)`.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const RESET_REASON: &str = "reset-reason";
pub const BOOT_COUNT: &str = "boot-count";
/// Larger record files are refused as malformed.
pub const MAX_RECORD_BYTES: u64 = 4096;
/// Longest value written.
pub const MAX_VALUE: usize = 256;

/// What ended a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    Unknown,
    Watchdog,
    Reboot,
    Poweroff,
    Halt,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Unknown => "unknown",
            Cause::Watchdog => "watchdog",
            Cause::Reboot => "reboot",
            Cause::Poweroff => "poweroff",
            Cause::Halt => "halt",
        }
    }

    fn parse(s: &str) -> Option<Cause> {
        Some(match s {
            "unknown" => Cause::Unknown,
            "watchdog" => Cause::Watchdog,
            "reboot" => Cause::Reboot,
            "poweroff" => Cause::Poweroff,
            "halt" => Cause::Halt,
            _ => return None,
        })
    }
}

/// The `reset-reason` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetRecord {
    pub boot: Option<u64>,
    pub cause: Cause,
    /// The stale layer (`cause=watchdog`).
    pub layer: Option<String>,
    /// How long it had been silent when petting stopped.
    pub silent_ms: Option<u64>,
    /// Who asked (`cause=reboot|poweroff|halt`).
    pub by: Option<String>,
    pub detail: Option<String>,
}

impl ResetRecord {
    /// Pre-written at start: a reset with no other record shows up as unknown.
    pub fn unknown(boot: Option<u64>) -> ResetRecord {
        ResetRecord {
            boot,
            cause: Cause::Unknown,
            layer: None,
            silent_ms: None,
            by: None,
            detail: None,
        }
    }

    /// Written when petting stops.
    pub fn watchdog(boot: Option<u64>, layer: &str, silent: Duration) -> ResetRecord {
        ResetRecord {
            boot,
            cause: Cause::Watchdog,
            layer: Some(layer.to_string()),
            silent_ms: Some(u64::try_from(silent.as_millis()).unwrap_or(u64::MAX)),
            by: None,
            detail: None,
        }
    }

    /// The file's text: one `key=value` per line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let Some(b) = self.boot {
            s.push_str(&format!("boot={}\n", b));
        }
        s.push_str(&format!("cause={}\n", self.cause.as_str()));
        let opt = |s: &mut String, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                s.push_str(&format!("{}={}\n", k, clean(v)));
            }
        };
        opt(&mut s, "layer", &self.layer);
        if let Some(ms) = self.silent_ms {
            s.push_str(&format!("silent_ms={}\n", ms));
        }
        opt(&mut s, "by", &self.by);
        opt(&mut s, "detail", &self.detail);
        s
    }

    /// Parses a record's text (see the module docs for what is tolerated).
    pub fn parse(text: &str) -> Result<ResetRecord, String> {
        let mut rec = ResetRecord::unknown(None);
        let mut cause = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("line {}: not key=value", i + 1));
            };
            let (k, v) = (k.trim(), v.trim());
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("line {}: `{}` is not a number", i + 1, k))
            };
            let text = |v: &str| {
                if v.is_empty() {
                    None
                } else {
                    Some(v.to_string())
                }
            };
            match k {
                "boot" => rec.boot = Some(num(v)?),
                "cause" => {
                    cause = Some(Cause::parse(v).ok_or_else(|| {
                        format!(
                            "line {}: unknown cause `{}`",
                            i + 1,
                            v.chars().take(32).collect::<String>()
                        )
                    })?)
                }
                "layer" => rec.layer = text(v),
                "silent_ms" => rec.silent_ms = Some(num(v)?),
                "by" => rec.by = text(v),
                "detail" => rec.detail = text(v),
                _ => {}
            }
        }
        rec.cause = cause.ok_or_else(|| "no `cause=` line".to_string())?;
        Ok(rec)
    }
}

fn clean(v: &str) -> String {
    let mut out: String = v
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// A record could not be read or written.
#[derive(Debug)]
pub enum RecordError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    TooLarge {
        path: PathBuf,
    },
    Malformed {
        path: PathBuf,
        reason: String,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            RecordError::TooLarge { path } => {
                write!(
                    f,
                    "{}: larger than {} bytes, ignored",
                    path.display(),
                    MAX_RECORD_BYTES
                )
            }
            RecordError::Malformed { path, reason } => {
                write!(f, "{}: malformed: {}", path.display(), reason)
            }
        }
    }
}

impl std::error::Error for RecordError {}

/// Reads `dir/name` as text, bounded; `Ok(None)` when it does not exist.
fn read_bounded(dir: &Path, name: &str) -> Result<Option<String>, RecordError> {
    let path = dir.join(name);
    let io = |source| RecordError::Io {
        path: path.clone(),
        source,
    };
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut bytes = Vec::new();
    f.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge { path });
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| RecordError::Malformed {
            path,
            reason: "not UTF-8 text".into(),
        })
}

/// Reads at most `max` bytes of any small text file (lossy UTF-8): a
/// request file, `/proc/PID/comm`.
pub fn read_text_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max)
        .read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Writes `dir/name` atomically: `name.tmp`, fsync, rename, fsync of `dir`
/// (created first if missing).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RecordError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RecordError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!("{}.tmp", name));
    let path = dir.join(name);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// The previous boot's `reset-reason`; `Ok(None)` when there is none.
pub fn read_reset_reason(dir: &Path) -> Result<Option<ResetRecord>, RecordError> {
    match read_bounded(dir, RESET_REASON)? {
        None => Ok(None),
        Some(text) => {
            ResetRecord::parse(&text)
                .map(Some)
                .map_err(|reason| RecordError::Malformed {
                    path: dir.join(RESET_REASON),
                    reason,
                })
        }
    }
}

pub fn write_reset_reason(dir: &Path, rec: &ResetRecord) -> Result<(), RecordError> {
    write_atomic(dir, RESET_REASON, rec.to_text().as_bytes())
}

/// The stored boot count; `Ok(None)` when there is none.
pub fn read_boot_count(dir: &Path) -> Result<Option<u64>, RecordError> {
    match read_bounded(dir, BOOT_COUNT)? {
        None => Ok(None),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| RecordError::Malformed {
                path: dir.join(BOOT_COUNT),
                reason: "not a number".into(),
            }),
    }
}

pub fn write_boot_count(dir: &Path, n: u64) -> Result<(), RecordError> {
    write_atomic(dir, BOOT_COUNT, format!("{}\n", n).as_bytes())
}

/// Increments the boot counter and returns this boot's number. An
/// unreadable (garbage) counter restarts at 1; an I/O error is returned.
pub fn bump_boot_count(dir: &Path) -> Result<u64, RecordError> {
    let prev = match read_boot_count(dir) {
        Ok(n) => n.unwrap_or(0),
        Err(RecordError::Malformed { .. }) | Err(RecordError::TooLarge { .. }) => 0,
        Err(e) => return Err(e),
    };
    let n = prev.saturating_add(1);
    write_boot_count(dir, n)?;
    Ok(n)
}

/// One line saying how the previous boot ended.
pub fn describe_previous(rec: Option<&ResetRecord>) -> String {
    let Some(r) = rec else {
        return "previous boot ended: no record (first boot with tether, or the state was lost)"
            .into();
    };
    let mut s = String::from("previous boot ended: ");
    match r.cause {
        Cause::Unknown => s.push_str("unknown"),
        Cause::Watchdog => {
            s.push_str("watchdog reset: ");
            s.push_str(r.layer.as_deref().unwrap_or("a layer"));
            match r.silent_ms {
                Some(ms) => s.push_str(&format!(" silent {:.1} s", ms as f64 / 1000.0)),
                None => s.push_str(" silent"),
            }
        }
        Cause::Reboot | Cause::Poweroff | Cause::Halt => {
            s.push_str(match r.cause {
                Cause::Reboot => "orderly reboot",
                Cause::Poweroff => "orderly poweroff",
                _ => "orderly halt",
            });
            match (&r.by, &r.detail) {
                (Some(by), Some(d)) => s.push_str(&format!(" (requested by {}: {})", by, d)),
                (Some(by), None) => s.push_str(&format!(" (requested by {})", by)),
                (None, Some(d)) => s.push_str(&format!(" ({})", d)),
                (None, None) => {}
            }
        }
    }
    if r.cause == Cause::Watchdog {
        if let Some(d) = &r.detail {
            s.push_str(&format!(" ({})", d));
        }
    }
    if let Some(b) = r.boot {
        s.push_str(&format!(" (boot {})", b));
    }
    s
}

// ---------------------------------------------------------------------------
// Reset history
// ---------------------------------------------------------------------------

/// The history file in the state directory: one line per past boot, oldest
/// first.
pub const HISTORY: &str = "history";
/// Default `[state] history`: boots kept.
pub const HISTORY_DEFAULT: usize = 32;
/// Largest `[state] history`.
pub const HISTORY_MAX: usize = 1024;
/// Longest history line accepted when reading (a written line is shorter:
/// each value is capped at [`MAX_VALUE`]).
pub const MAX_HISTORY_LINE: usize = 2048;

/// How one past boot ended, as kept in the history file.
///
/// Line format (docs: README "Reset history"): space-separated `key=value`
/// tokens, values percent-encoded (`%`, space, `=` and control bytes as
/// `%XX`), keys: `boot` (the boot that ended), `cause`, `layer`,
/// `silent_ms`, `by`, `detail` (as in `reset-reason`), `recorded` (wall
/// clock, Unix seconds, when that boot's `reset-reason` was last written:
/// for a watchdog reset when petting stopped, for an orderly end when it
/// was asked for, for `unknown` when that boot started), `boot_status` (the
/// device's `WDIOC_GETBOOTSTATUS` bits read by the next boot, hex), `seen`
/// (wall clock when the next boot read the record) and `next_boot`.
/// Unknown keys are ignored; a line without `cause` is malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub record: ResetRecord,
    pub recorded: Option<u64>,
    pub boot_status: Option<u32>,
    pub seen: Option<u64>,
    pub next_boot: Option<u64>,
}

fn pct_encode(v: &str, out: &mut String) {
    // `clean` has turned control characters into spaces already.
    for c in clean(v).chars() {
        match c {
            '%' | ' ' | '=' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
}

fn pct_decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = v.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl HistoryEntry {
    /// One line, without the newline.
    pub fn to_line(&self) -> String {
        let r = &self.record;
        let mut s = String::new();
        let mut put = |k: &str, v: &str| {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(k);
            s.push('=');
            pct_encode(v, &mut s);
        };
        if let Some(b) = r.boot {
            put("boot", &b.to_string());
        }
        put("cause", r.cause.as_str());
        if let Some(v) = &r.layer {
            put("layer", v);
        }
        if let Some(v) = r.silent_ms {
            put("silent_ms", &v.to_string());
        }
        if let Some(v) = &r.by {
            put("by", v);
        }
        if let Some(v) = &r.detail {
            put("detail", v);
        }
        if let Some(v) = self.recorded {
            put("recorded", &v.to_string());
        }
        if let Some(v) = self.boot_status {
            put("boot_status", &format!("0x{v:x}"));
        }
        if let Some(v) = self.seen {
            put("seen", &v.to_string());
        }
        if let Some(v) = self.next_boot {
            put("next_boot", &v.to_string());
        }
        s
    }

    /// Parses one line; the error says which token is wrong.
    pub fn parse_line(line: &str) -> Result<HistoryEntry, String> {
        let mut e = HistoryEntry {
            record: ResetRecord::unknown(None),
            recorded: None,
            boot_status: None,
            seen: None,
            next_boot: None,
        };
        let mut cause = None;
        for tok in line.split(' ').filter(|t| !t.is_empty()) {
            let Some((k, raw)) = tok.split_once('=') else {
                return Err(format!("`{}` is not key=value", short(tok)));
            };
            let v = pct_decode(raw).ok_or_else(|| format!("`{k}`: bad %-escape"))?;
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("`{k}` is not a number"))
            };
            let text = |v: String| if v.is_empty() { None } else { Some(v) };
            match k {
                "boot" => e.record.boot = Some(num(&v)?),
                "cause" => {
                    cause = Some(
                        Cause::parse(&v).ok_or_else(|| format!("unknown cause `{}`", short(&v)))?,
                    )
                }
                "layer" => e.record.layer = text(v),
                "silent_ms" => e.record.silent_ms = Some(num(&v)?),
                "by" => e.record.by = text(v),
                "detail" => e.record.detail = text(v),
                "recorded" => e.recorded = Some(num(&v)?),
                "seen" => e.seen = Some(num(&v)?),
                "next_boot" => e.next_boot = Some(num(&v)?),
                "boot_status" => {
                    let hex = v.strip_prefix("0x").unwrap_or(&v);
                    e.boot_status = Some(
                        u32::from_str_radix(hex, 16)
                            .map_err(|_| "`boot_status` is not a hex number".to_string())?,
                    )
                }
                _ => {}
            }
        }
        e.record.cause = cause.ok_or_else(|| "no `cause=`".to_string())?;
        Ok(e)
    }
}

fn short(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Parses a whole history file's text, oldest first.
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() > MAX_HISTORY_LINE {
            return Err(format!(
                "line {}: longer than {MAX_HISTORY_LINE} bytes",
                i + 1
            ));
        }
        out.push(HistoryEntry::parse_line(line).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(out)
}

/// The history file's text for `entries` (all of them: trim first).
pub fn history_text(entries: &[HistoryEntry]) -> String {
    let mut s = String::from("# tether reset history: one line per boot, oldest first\n");
    for e in entries {
        s.push_str(&e.to_line());
        s.push('\n');
    }
    s
}

/// Reads `dir/history`, at most `keep` * [`MAX_HISTORY_LINE`] + 4 KiB
/// bytes; empty when the file does not exist. A malformed file is
/// [`RecordError::Malformed`] naming the file and the line.
pub fn read_history(dir: &Path) -> Result<Vec<HistoryEntry>, RecordError> {
    let path = dir.join(HISTORY);
    let io = |source| RecordError::Io {
        path: path.clone(),
        source,
    };
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let max = (HISTORY_MAX * MAX_HISTORY_LINE + 4096) as u64;
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(RecordError::Malformed {
            path,
            reason: format!("larger than {max} bytes"),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| RecordError::Malformed {
        path: path.clone(),
        reason: "not UTF-8 text".into(),
    })?;
    parse_history(&text).map_err(|reason| RecordError::Malformed { path, reason })
}

/// What [`append_history`] did besides appending.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// The entry joined the existing history.
    Kept,
    /// The existing file was malformed: it was renamed to `history.bad`
    /// (kept for a human), and a new history starts with this entry.
    MovedAside(String),
}

/// Appends `entry` to `dir/history`, keeping the newest `keep` entries,
/// written atomically like every record ([`write_atomic`]). `keep == 0`
/// writes nothing.
pub fn append_history(
    dir: &Path,
    entry: HistoryEntry,
    keep: usize,
) -> Result<Appended, RecordError> {
    if keep == 0 {
        return Ok(Appended::Kept);
    }
    let (mut entries, how) = match read_history(dir) {
        Ok(v) => (v, Appended::Kept),
        Err(e @ RecordError::Malformed { .. }) => {
            let bad = dir.join(format!("{HISTORY}.bad"));
            std::fs::rename(dir.join(HISTORY), &bad).map_err(|source| RecordError::Io {
                path: bad.clone(),
                source,
            })?;
            (Vec::new(), Appended::MovedAside(e.to_string()))
        }
        Err(e) => return Err(e),
    };
    entries.push(entry);
    let excess = entries.len().saturating_sub(keep.min(HISTORY_MAX));
    entries.drain(..excess);
    write_atomic(dir, HISTORY, history_text(&entries).as_bytes())?;
    Ok(how)
}

/// Wall clock (Unix seconds) of the last write of `dir/reset-reason`.
pub fn reset_reason_written_at(dir: &Path) -> Option<u64> {
    let m = std::fs::metadata(dir.join(RESET_REASON))
        .ok()?
        .modified()
        .ok()?;
    m.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// Now, wall clock, Unix seconds (for records only; never for deadlines).
pub fn wall_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` UTC of Unix seconds `t` (proleptic Gregorian).
pub fn format_utc(t: u64) -> String {
    let (y, mo, d, h, mi, s) = civil_utc(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// (year, month, day, hour, minute, second) UTC of Unix seconds `t`
/// (Howard Hinnant's days-from-civil inverse).
pub fn civil_utc(t: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (t / 86_400) as i64;
    let rem = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

// ---------------------------------------------------------------------------
// watchdogd's published status (for the restarter's metrics)
// ---------------------------------------------------------------------------

/// watchdogd's status file in the runtime directory (`RUN/watchdog.status`).
pub const WATCHDOG_STATUS: &str = "watchdog.status";

/// What watchdogd publishes each beat interval for the restarter's metrics
/// (it alone knows the device and the layers' beats). Times are
/// `CLOCK_MONOTONIC` milliseconds, the same clock in every process of a
/// boot, so a reader computes ages with its own `MonoTime::now()`: a
/// watchdogd that stops publishing (wedged) shows as growing ages, never
/// as fresh. Written `key=value` per line, atomically (tmp + rename, no
/// fsync: a runtime file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchdogStatus {
    pub written_ms: u64,
    pub petting: bool,
    /// `armed`, `simulated`, `absent` or `disarmed`.
    pub device: String,
    pub timeout_s: Option<u32>,
    pub last_pet_ms: Option<u64>,
    /// `WDIOC_GETBOOTSTATUS` bits read at start.
    pub boot_status: Option<u32>,
    /// This boot's number (the boot counter).
    pub boot: Option<u64>,
    /// How the previous boot ended (`cause`, `layer`), if known.
    pub prev_cause: Option<String>,
    pub prev_layer: Option<String>,
    /// (layer, last beat in ms; `None`: no beat yet).
    pub layers: Vec<(String, Option<u64>)>,
}

impl WatchdogStatus {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "written_ms={}\npetting={}\ndevice={}\n",
            self.written_ms,
            u8::from(self.petting),
            clean(&self.device)
        );
        let mut opt = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                s.push_str(&format!("{k}={}\n", clean(&v)));
            }
        };
        opt("timeout_s", self.timeout_s.map(|v| v.to_string()));
        opt("last_pet_ms", self.last_pet_ms.map(|v| v.to_string()));
        opt("boot_status", self.boot_status.map(|v| format!("0x{v:x}")));
        opt("boot", self.boot.map(|v| v.to_string()));
        opt("prev_cause", self.prev_cause.clone());
        opt("prev_layer", self.prev_layer.clone());
        for (name, beat) in &self.layers {
            let v = beat.map_or("-".to_string(), |b| b.to_string());
            s.push_str(&format!("layer.{}={}\n", clean(name), v));
        }
        s
    }

    /// Parses the file's text; the error names the line.
    pub fn parse(text: &str) -> Result<WatchdogStatus, String> {
        let mut w = WatchdogStatus::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: not key=value", i + 1))?;
            let bad = || format!("line {}: bad `{}`", i + 1, short(k));
            let num = |v: &str| v.parse::<u64>().map_err(|_| bad());
            match k {
                "written_ms" => w.written_ms = num(v)?,
                "petting" => w.petting = v == "1",
                "device" => w.device = v.to_string(),
                "timeout_s" => w.timeout_s = Some(v.parse().map_err(|_| bad())?),
                "last_pet_ms" => w.last_pet_ms = Some(num(v)?),
                "boot_status" => {
                    let h = v.strip_prefix("0x").unwrap_or(v);
                    w.boot_status = Some(u32::from_str_radix(h, 16).map_err(|_| bad())?)
                }
                "boot" => w.boot = Some(num(v)?),
                "prev_cause" => w.prev_cause = Some(v.to_string()),
                "prev_layer" => w.prev_layer = Some(v.to_string()),
                _ => {
                    if let Some(name) = k.strip_prefix("layer.") {
                        let beat = if v == "-" { None } else { Some(num(v)?) };
                        w.layers.push((name.to_string(), beat));
                    }
                }
            }
        }
        Ok(w)
    }
}

/// Writes `dir/name` atomically without fsync (runtime files on tmpfs:
/// `name.tmp` in the same directory, then `rename`).
pub fn write_volatile(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))
}

/// Reads `RUN/watchdog.status`; `Ok(None)` when absent.
pub fn read_watchdog_status(run: &Path) -> Result<Option<WatchdogStatus>, RecordError> {
    match read_bounded(run, WATCHDOG_STATUS)? {
        None => Ok(None),
        Some(t) => WatchdogStatus::parse(&t)
            .map(Some)
            .map_err(|reason| RecordError::Malformed {
                path: run.join(WATCHDOG_STATUS),
                reason,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("tether-rectest-{}-{}", std::process::id(), name));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn records_round_trip_through_the_file() {
        let d = tmpdir("roundtrip");
        let rec = ResetRecord::watchdog(Some(7), "restarter", Duration::from_millis(20_400));
        write_reset_reason(&d, &rec).unwrap();
        let text = std::fs::read_to_string(d.join(RESET_REASON)).unwrap();
        assert_eq!(
            text,
            "boot=7\ncause=watchdog\nlayer=restarter\nsilent_ms=20400\n"
        );
        assert_eq!(read_reset_reason(&d).unwrap(), Some(rec));
        assert!(
            !d.join("reset-reason.tmp").exists(),
            "the temporary is renamed away"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_files_are_none_and_the_counter_starts_at_one() {
        let d = tmpdir("missing");
        assert_eq!(read_reset_reason(&d).unwrap(), None);
        assert_eq!(read_boot_count(&d).unwrap(), None);
        assert_eq!(bump_boot_count(&d).unwrap(), 1, "creates the directory too");
        assert_eq!(bump_boot_count(&d).unwrap(), 2);
        std::fs::write(d.join(BOOT_COUNT), "garbage").unwrap();
        assert_eq!(
            bump_boot_count(&d).unwrap(),
            1,
            "a garbage counter restarts"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn unknown_keys_and_comments_are_ignored() {
        let r = ResetRecord::parse(
            "# written by a newer tether\ncause=reboot\nby=tetherctl\nfuture_key=1\n\n",
        )
        .unwrap();
        assert_eq!(r.cause, Cause::Reboot);
        assert_eq!(r.by.as_deref(), Some("tetherctl"));
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        for (text, why) in [
            ("cause=unknown\nthis line has no equals\n", "not key=value"),
            ("layer=init\n", "no `cause=`"),
            ("cause=exploded\n", "unknown cause"),
            ("cause=watchdog\nsilent_ms=lots\n", "not a number"),
            ("boot=-1\ncause=unknown\n", "not a number"),
        ] {
            let e = ResetRecord::parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let d = tmpdir("malformed");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(RESET_REASON), [0xff, 0xfe, b'\n']).unwrap();
        assert!(matches!(
            read_reset_reason(&d),
            Err(RecordError::Malformed { .. })
        ));
        std::fs::write(d.join(RESET_REASON), vec![b'x'; 10_000]).unwrap();
        let e = read_reset_reason(&d).unwrap_err();
        assert!(matches!(e, RecordError::TooLarge { .. }));
        assert!(e.to_string().contains("larger than 4096"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn written_values_stay_on_one_line() {
        let mut r = ResetRecord::unknown(Some(1));
        r.detail = Some(format!("two\nlines{}", "x".repeat(1000)));
        let text = r.to_text();
        assert_eq!(text.lines().count(), 3);
        let back = ResetRecord::parse(&text).unwrap();
        assert!(back.detail.unwrap().len() <= MAX_VALUE);
    }

    #[test]
    fn an_unwritable_directory_is_an_io_error() {
        let d = tmpdir("unwritable");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("file"), "").unwrap();
        let e = write_reset_reason(&d.join("file").join("state"), &ResetRecord::unknown(None))
            .unwrap_err();
        assert!(matches!(e, RecordError::Io { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn previous_boot_is_described_in_one_line() {
        let w = ResetRecord::watchdog(Some(3), "restarter", Duration::from_millis(20_400));
        assert_eq!(
            describe_previous(Some(&w)),
            "previous boot ended: watchdog reset: restarter silent 20.4 s (boot 3)"
        );
        assert_eq!(
            describe_previous(Some(&ResetRecord::unknown(None))),
            "previous boot ended: unknown"
        );
        let mut r = ResetRecord::unknown(None);
        r.cause = Cause::Reboot;
        r.by = Some("tetherctl".into());
        assert_eq!(
            describe_previous(Some(&r)),
            "previous boot ended: orderly reboot (requested by tetherctl)"
        );
        r.detail = Some("service sensor exhausted its restart budget".into());
        assert_eq!(
            describe_previous(Some(&r)),
            "previous boot ended: orderly reboot (requested by tetherctl: service sensor exhausted its restart budget)"
        );
        assert!(describe_previous(None).contains("no record"));
    }

    fn entry(boot: u64, cause: Cause) -> HistoryEntry {
        let mut r = ResetRecord::unknown(Some(boot));
        r.cause = cause;
        HistoryEntry {
            record: r,
            recorded: Some(1_764_600_000 + boot),
            boot_status: None,
            seen: Some(1_764_600_100 + boot),
            next_boot: Some(boot + 1),
        }
    }

    #[test]
    fn history_lines_round_trip_with_spaces_and_escapes() {
        let mut e = entry(3, Cause::Reboot);
        e.record.by = Some("tetherctl (uid 0)".into());
        e.record.detail = Some("50% = half\nnext".into());
        e.boot_status = Some(0x20);
        let line = e.to_line();
        assert!(!line.contains('\n'));
        assert!(line.contains("by=tetherctl%20(uid%200)"), "{line}");
        assert!(line.contains("boot_status=0x20"), "{line}");
        let back = HistoryEntry::parse_line(&line).unwrap();
        assert_eq!(back.record.detail.as_deref(), Some("50% = half next"));
        assert_eq!(back.record.by, e.record.by);
        assert_eq!(back.boot_status, Some(0x20));
        assert_eq!(
            (back.recorded, back.seen, back.next_boot),
            (e.recorded, e.seen, Some(4))
        );
    }

    #[test]
    fn history_is_a_bounded_ring_oldest_dropped_first() {
        let d = tmpdir("ring");
        for b in 1..=5 {
            assert_eq!(
                append_history(&d, entry(b, Cause::Watchdog), 3).unwrap(),
                Appended::Kept
            );
        }
        let h = read_history(&d).unwrap();
        let boots: Vec<_> = h.iter().map(|e| e.record.boot).collect();
        assert_eq!(boots, [Some(3), Some(4), Some(5)]);
        assert!(!d.join("history.tmp").exists(), "written by rename");
        // keep = 0: nothing written, nothing lost.
        append_history(&d, entry(6, Cause::Unknown), 0).unwrap();
        assert_eq!(read_history(&d).unwrap().len(), 3);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn history_is_kept_across_appends_and_shrinking_keep() {
        let d = tmpdir("kept");
        append_history(&d, entry(1, Cause::Unknown), 32).unwrap();
        append_history(&d, entry(2, Cause::Reboot), 32).unwrap();
        let text = std::fs::read_to_string(d.join(HISTORY)).unwrap();
        assert!(text.starts_with("# tether reset history"));
        assert_eq!(read_history(&d).unwrap()[0], entry(1, Cause::Unknown));
        append_history(&d, entry(3, Cause::Halt), 2).unwrap();
        let h = read_history(&d).unwrap();
        assert_eq!(h, [entry(2, Cause::Reboot), entry(3, Cause::Halt)]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_malformed_history_names_file_and_line_and_is_moved_aside() {
        let d = tmpdir("badhist");
        std::fs::create_dir_all(&d).unwrap();
        let good = entry(1, Cause::Unknown).to_line();
        for (bad, why) in [
            (
                "cause=watchdog silent_ms=lots",
                "`silent_ms` is not a number",
            ),
            ("boot=2 layer=init", "no `cause=`"),
            ("cause=exploded", "unknown cause"),
            ("cause=unknown detail=%zz", "bad %-escape"),
            ("cause=unknown garbage", "not key=value"),
        ] {
            std::fs::write(d.join(HISTORY), format!("# c\n{good}\n{bad}\n")).unwrap();
            let e = read_history(&d).unwrap_err().to_string();
            assert!(e.contains("/history: malformed: line 3: "), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
        std::fs::write(d.join(HISTORY), [0xff, b'\n']).unwrap();
        assert!(read_history(&d)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        std::fs::write(d.join(HISTORY), format!("{good}\ncause=\n")).unwrap();
        let how = append_history(&d, entry(5, Cause::Reboot), 32).unwrap();
        assert!(
            matches!(how, Appended::MovedAside(ref m) if m.contains("line 2")),
            "{how:?}"
        );
        assert!(
            d.join("history.bad").exists(),
            "the bad file is kept for a human"
        );
        assert_eq!(read_history(&d).unwrap(), [entry(5, Cause::Reboot)]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn utc_dates_are_civil() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_796_161_545), "2026-12-01 21:45:45");
        assert_eq!(format_utc(4_107_542_399), "2100-02-28 23:59:59");
    }

    #[test]
    fn watchdog_status_round_trips() {
        let w = WatchdogStatus {
            written_ms: 1000,
            petting: true,
            device: "armed".into(),
            timeout_s: Some(30),
            last_pet_ms: Some(990),
            boot_status: Some(0x20),
            boot: Some(7),
            prev_cause: Some("watchdog".into()),
            prev_layer: Some("restarter".into()),
            layers: vec![("init".into(), Some(995)), ("restarter".into(), None)],
        };
        assert_eq!(WatchdogStatus::parse(&w.to_text()).unwrap(), w);
        assert!(WatchdogStatus::parse("petting=1\nlast_pet_ms=x\n")
            .unwrap_err()
            .contains("line 2"));
    }
}
