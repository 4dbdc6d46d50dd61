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
}
