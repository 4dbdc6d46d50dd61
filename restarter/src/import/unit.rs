//! A systemd unit file, as bytes, into its sections and assignments, each
//! with its line (systemd.syntax(7)): `[Section]` headers, `KEY=VALUE`
//! lines, comments starting with `#` or `;`, and a backslash at the end of
//! a line joining it with the next (a comment line inside a continuation
//! is skipped, as systemd does). Nothing here knows what a key means: that
//! is [`super::map`].
//!
//! Errors name the file, the line and, where there is one, the key: a line
//! that is not UTF-8, an assignment before any section, a line that is
//! neither, a header that does not end in `]`.

use super::Malformed;

/// One `KEY=VALUE` line (after joining continuations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The section it is in, without brackets (`Service`).
    pub section: String,
    pub key: String,
    /// Leading and trailing whitespace removed; may be empty (a reset).
    pub value: String,
    /// 1-based line of the key (the first line of a continued value).
    pub line: usize,
}

/// A parsed unit file: its assignments in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unit {
    pub entries: Vec<Entry>,
}

impl Unit {
    /// Entries of one section with one key, in order.
    pub fn all<'a>(&'a self, section: &'a str, key: &'a str) -> impl Iterator<Item = &'a Entry> {
        self.entries
            .iter()
            .filter(move |e| e.section == section && e.key == key)
    }
}

/// Parses a unit file's bytes. `file` names it in errors.
pub fn parse(bytes: &[u8], file: &str) -> Result<Unit, Malformed> {
    let mut unit = Unit::default();
    let mut section: Option<String> = None;
    // A value being continued: (key, value so far, line of the key).
    let mut pending: Option<(String, String, usize)> = None;
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(text) = std::str::from_utf8(raw) else {
            return Err(Malformed::new(
                file,
                lineno,
                None,
                "line is not valid UTF-8",
            ));
        };
        if text.contains('\0') {
            return Err(Malformed::new(
                file,
                lineno,
                None,
                "line contains a NUL byte",
            ));
        }
        let trimmed = text.trim();
        if let Some((key, mut value, at)) = pending.take() {
            if trimmed.starts_with('#') || trimmed.starts_with(';') {
                // Comment lines inside a continuation are ignored.
                pending = Some((key, value, at));
                continue;
            }
            let (part, more) = continued(text);
            value.push(' ');
            value.push_str(part.trim());
            if more {
                pending = Some((key, value, at));
            } else if let Some(s) = &section {
                push(&mut unit, s, key, value, at);
            }
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(Malformed::new(
                    file,
                    lineno,
                    None,
                    format!("section header {trimmed:?} does not end in ]"),
                ));
            };
            if name.is_empty() || name.contains(['[', ']']) {
                return Err(Malformed::new(
                    file,
                    lineno,
                    None,
                    format!("bad section header {trimmed:?}"),
                ));
            }
            section = Some(name.to_string());
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(Malformed::new(
                file,
                lineno,
                None,
                format!("expected KEY=VALUE or [Section], got {trimmed:?}"),
            ));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c))
        {
            return Err(Malformed::new(
                file,
                lineno,
                Some(key),
                format!("{key:?} is not a directive name"),
            ));
        }
        if section.is_none() {
            return Err(Malformed::new(
                file,
                lineno,
                Some(key),
                "assignment before any [Section] header",
            ));
        }
        let (part, more) = continued(value);
        if more {
            pending = Some((key.to_string(), part.trim().to_string(), lineno));
        } else if let Some(s) = &section {
            push(
                &mut unit,
                s,
                key.to_string(),
                part.trim().to_string(),
                lineno,
            );
        }
    }
    if let (Some((key, value, at)), Some(s)) = (pending, &section) {
        // A continuation at the end of the file: the value ends there.
        push(&mut unit, s, key, value, at);
    }
    Ok(unit)
}

fn push(unit: &mut Unit, section: &str, key: String, value: String, line: usize) {
    unit.entries.push(Entry {
        section: section.to_string(),
        key,
        value: value.trim().to_string(),
        line,
    });
}

/// A line's text without a trailing backslash, and whether it had one.
fn continued(text: &str) -> (&str, bool) {
    let t = text.trim_end();
    match t.strip_suffix('\\') {
        Some(rest) => (rest, true),
        None => (t, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_entries_lines_and_comments() {
        let u = parse(
            b"# c\n[Unit]\nDescription = A B \n; c\n\n[Service]\nExecStart=/bin/x \\\n  -a \\\n# skipped\n  -b\nType=notify\nEnvironment=\n",
            "x.service",
        )
        .unwrap();
        let got: Vec<(&str, &str, &str, usize)> = u
            .entries
            .iter()
            .map(|e| (e.section.as_str(), e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Unit", "Description", "A B", 3),
                ("Service", "ExecStart", "/bin/x -a -b", 7),
                ("Service", "Type", "notify", 11),
                ("Service", "Environment", "", 12),
            ]
        );
    }

    #[test]
    fn malformed_lines_name_file_line_and_field() {
        let e = parse(b"[Service]\nExecStart\n", "a.service").unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.service:2: expected KEY=VALUE or [Section], got \"ExecStart\""
        );
        let e = parse(b"Type=simple\n", "a.service").unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.service:1: field Type: assignment before any [Section] header"
        );
        let e = parse(b"[Service\n", "a.service").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse(b"[Service]\nExecStart=/bin/\xff\n", "a.service").unwrap_err();
        assert_eq!(e.to_string(), "a.service:2: line is not valid UTF-8");
        let e = parse(b"[Service]\nBad Key=1\n", "a.service").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Bad Key"));
    }

    #[test]
    fn crlf_bom_and_a_continuation_at_the_end() {
        let u = parse(b"\xef\xbb\xbf[Service]\r\nExecStart=/bin/a \\", "a.service").unwrap();
        assert_eq!(u.entries[0].value, "/bin/a");
        assert_eq!(u.all("Service", "ExecStart").count(), 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            let mut v = Vec::new();
            for _ in 0..(seed % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let alphabet = b"[]=\\\n#;ab \xff\r";
                v.push(alphabet[seed as usize % alphabet.len()]);
            }
            let _ = parse(&v, "f");
        }
    }
}
