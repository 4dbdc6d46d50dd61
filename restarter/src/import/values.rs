//! systemd's value syntaxes, as systemd.syntax(7), systemd.service(5),
//! systemd.exec(5) and systemd.time(7) define them: command lines (words,
//! quotes, C escapes), specifiers (`%i`, `%n`, ...), `$VAR` and `${VAR}` in
//! command lines, time spans, resource limits and environment files.
//! Errors are plain messages; [`super::map`] adds file, line and field.

use std::collections::BTreeMap;

/// Splits a value into words: whitespace separates, `"..."` and `'...'`
/// quote (a quote must start a word... or continue it, as systemd's
/// `extract_first_word` allows), backslash escapes are C escapes.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '"' | '\'' => {
                in_word = true;
                let q = c;
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated {q} quote")),
                        Some(x) if x == q => break,
                        Some('\\') => cur.push(unescape(&mut chars)?),
                        Some(x) => cur.push(x),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(unescape(&mut chars)?);
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn unescape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let Some(c) = chars.next() else {
        return Err("a backslash ends the value".into());
    };
    let hex = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| {
        let mut v = 0u32;
        for _ in 0..n {
            let d = chars
                .next()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| "bad hexadecimal escape".to_string())?;
            v = v * 16 + d;
        }
        char::from_u32(v)
            .filter(|&c| c != '\0')
            .ok_or_else(|| "escape names no character (or NUL)".to_string())
    };
    Ok(match c {
        'a' => '\u{7}',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\u{b}',
        's' => ' ',
        '\\' | '"' | '\'' | ' ' | ';' | '$' => c,
        'x' => hex(chars, 2)?,
        'u' => hex(chars, 4)?,
        'U' => hex(chars, 8)?,
        '0'..='7' => {
            let mut v = c.to_digit(8).unwrap_or(0);
            for _ in 0..2 {
                let d = chars
                    .next()
                    .and_then(|c| c.to_digit(8))
                    .ok_or_else(|| "bad octal escape".to_string())?;
                v = v * 8 + d;
            }
            char::from_u32(v)
                .filter(|&c| c != '\0')
                .ok_or_else(|| "escape names NUL".to_string())?
        }
        other => return Err(format!("unknown escape \\{other}")),
    })
}

/// What the specifiers of a unit stand for (systemd.unit(5), "Specifiers").
#[derive(Clone, Debug, Default)]
pub struct Specifiers {
    /// Full unit name, `getty@tty1.service`.
    pub unit: String,
    /// `User=` as written, if any.
    pub user: Option<String>,
    pub group: Option<String>,
}

impl Specifiers {
    fn prefix_and_instance(&self) -> (&str, Option<&str>) {
        let stem = self
            .unit
            .rsplit_once('.')
            .map_or(self.unit.as_str(), |(s, _)| s);
        match stem.split_once('@') {
            Some((p, i)) => (p, Some(i)),
            None => (stem, None),
        }
    }

    /// Replaces `%x` in `s`. A specifier whose value is known only on the
    /// running system (`%H` host name, `%b` boot id, ...) is an error that
    /// names it, as is an unknown one.
    pub fn expand(&self, s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars();
        let (prefix, instance) = self.prefix_and_instance();
        let stem = self
            .unit
            .rsplit_once('.')
            .map_or(self.unit.as_str(), |(s, _)| s);
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let Some(x) = chars.next() else {
                return Err("a lone % ends the value (write %% for %)".into());
            };
            let need_instance = || {
                instance.ok_or_else(|| {
                    format!("specifier %{x} (instance) in a unit that is not an instance")
                })
            };
            match x {
                '%' => out.push('%'),
                'n' => out.push_str(&self.unit),
                'N' => out.push_str(stem),
                'p' => out.push_str(prefix),
                'P' => out.push_str(&unescape_name(prefix)),
                'i' => out.push_str(need_instance()?),
                'I' => out.push_str(&unescape_name(need_instance()?)),
                'f' => {
                    let i = match instance {
                        Some(i) => unescape_name(i),
                        None => unescape_name(prefix),
                    };
                    if !i.starts_with('/') {
                        out.push('/');
                    }
                    out.push_str(&i);
                }
                'j' => out.push_str(prefix.rsplit('-').next().unwrap_or(prefix)),
                'J' => out.push_str(&unescape_name(prefix.rsplit('-').next().unwrap_or(prefix))),
                't' => out.push_str("/run"),
                'S' => out.push_str("/var/lib"),
                'C' => out.push_str("/var/cache"),
                'L' => out.push_str("/var/log"),
                'E' => out.push_str("/etc"),
                'T' => out.push_str("/tmp"),
                'V' => out.push_str("/var/tmp"),
                'u' => out.push_str(self.user.as_deref().unwrap_or("root")),
                'g' => out.push_str(self.group.as_deref().unwrap_or("root")),
                'U' | 'G' => match (x, self.user.as_deref(), self.group.as_deref()) {
                    ('U', None, _) | ('G', _, None) => out.push('0'),
                    ('U', Some(v), _) | ('G', _, Some(v)) if v.parse::<u32>().is_ok() => {
                        out.push_str(v)
                    }
                    _ => {
                        return Err(format!(
                            "specifier %{x} (numeric id of a named user or group) is known only on the running system"
                        ))
                    }
                },
                'h' | 's' if self.user.is_none() => {
                    out.push_str(if x == 'h' { "/root" } else { "/bin/sh" })
                }
                'H' | 'l' | 'q' | 'm' | 'b' | 'v' | 'a' | 'o' | 'w' | 'W' | 'B' | 'M' | 'A'
                | 'h' | 's' | 'd' | 'y' | 'Y' => {
                    return Err(format!(
                        "specifier %{x} ({}) is known only on the running system",
                        specifier_meaning(x)
                    ))
                }
                other => return Err(format!("unknown specifier %{other}")),
            }
        }
        Ok(out)
    }
}

fn specifier_meaning(x: char) -> &'static str {
    match x {
        'H' => "host name",
        'l' => "short host name",
        'q' => "pretty host name",
        'm' => "machine id",
        'b' => "boot id",
        'v' => "kernel release",
        'a' => "architecture",
        'o' | 'w' | 'W' | 'B' | 'M' | 'A' => "os-release field",
        'h' => "home directory of User=",
        's' => "shell of User=",
        'd' => "credentials directory",
        'y' | 'Y' => "path of the unit file",
        _ => "unknown",
    }
}

/// systemd's name unescaping (`systemd-escape --unescape`): `-` is `/`,
/// `\xHH` a byte.
fn unescape_name(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            out.push(b'/');
            i += 1;
        } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            match b
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 4;
                }
                None => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Variables systemd sets for a service's command at run time: a command
/// line that uses one cannot be expanded at import.
pub const RUNTIME_VARS: &[&str] = &[
    "MAINPID",
    "MANAGERPID",
    "INVOCATION_ID",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "RUNTIME_DIRECTORY",
    "STATE_DIRECTORY",
    "CACHE_DIRECTORY",
    "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "SERVICE_RESULT",
    "EXIT_CODE",
    "EXIT_STATUS",
    "MONITOR_SERVICE_RESULT",
    "TRIGGER_UNIT",
    "USER",
    "LOGNAME",
    "HOME",
    "SHELL",
    "PIDFILE",
    "JOURNAL_STREAM",
    "SYSTEMD_EXEC_PID",
    "TERM",
];

/// What a `$VAR` expansion did, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Variables expanded from the unit's environment.
    pub used: Vec<String>,
    /// Variables not set by the unit: expanded to nothing, as systemd does
    /// for a variable it does not have.
    pub unset: Vec<String>,
}

/// systemd's expansion of a command line: a word that is exactly `$NAME`
/// becomes the value split at whitespace (zero or more words); `${NAME}`
/// anywhere becomes the value as it is; `$$` is `$`; any other `$` stays.
/// A variable systemd itself sets at run time ([`RUNTIME_VARS`]) is an
/// error naming it.
pub fn expand_vars(
    words: &[String],
    env: &BTreeMap<String, String>,
) -> Result<(Vec<String>, Expansion), String> {
    let mut out = Vec::new();
    let mut ex = Expansion::default();
    let look = |name: &str, ex: &mut Expansion| -> Result<Option<String>, String> {
        if let Some(v) = env.get(name) {
            if !ex.used.iter().any(|u| u == name) {
                ex.used.push(name.to_string());
            }
            return Ok(Some(v.clone()));
        }
        if RUNTIME_VARS.contains(&name) {
            return Err(format!(
                "${name} is set by systemd at run time, not by the unit: cannot be expanded at import"
            ));
        }
        if !ex.unset.iter().any(|u| u == name) {
            ex.unset.push(name.to_string());
        }
        Ok(None)
    };
    for w in words {
        if let Some(name) = w.strip_prefix('$') {
            if is_var_name(name) {
                if let Some(v) = look(name, &mut ex)? {
                    out.extend(v.split_whitespace().map(str::to_string));
                }
                continue;
            }
        }
        let mut s = String::with_capacity(w.len());
        let mut rest = w.as_str();
        while let Some(at) = rest.find('$') {
            s.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(a) = after.strip_prefix('$') {
                s.push('$');
                rest = a;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    return Err(format!("unterminated ${{ in {w:?}"));
                };
                let name = &body[..end];
                if !is_var_name(name) {
                    return Err(format!("${{{name}}} is not a variable name"));
                }
                if let Some(v) = look(name, &mut ex)? {
                    s.push_str(&v);
                }
                rest = &body[end + 1..];
            } else {
                s.push('$');
                rest = after;
            }
        }
        s.push_str(rest);
        out.push(s);
    }
    Ok((out, ex))
}

pub fn is_var_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f == '_' || f.is_ascii_alphabetic())
        && c.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// A time span (systemd.time(7)) in microseconds; `None` is `infinity`.
/// A bare number is seconds.
pub fn timespan(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s == "infinity" {
        return Ok(None);
    }
    if s.is_empty() {
        return Err("empty time span".into());
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("{s:?} is not a time span"));
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("{s:?} is not a time span"))?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic() && c != 'µ' && c != 'μ')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mul: f64 = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1e6,
            "us" | "usec" | "µs" | "μs" => 1.0,
            "ms" | "msec" => 1e3,
            "m" | "min" | "minute" | "minutes" => 60e6,
            "h" | "hr" | "hour" | "hours" => 3600e6,
            "d" | "day" | "days" => 86400e6,
            "w" | "week" | "weeks" => 7.0 * 86400e6,
            "M" | "month" | "months" => 30.44 * 86400e6,
            "y" | "year" | "years" => 365.25 * 86400e6,
            _ => return Err(format!("unknown time unit {unit:?} in {s:?}")),
        };
        total += n * mul;
    }
    if !total.is_finite() || total > 1e18 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(Some(total.round() as u64))
}

/// Microseconds in tether's duration syntax: the largest unit that divides
/// it exactly.
pub fn tether_duration(us: u64) -> String {
    if us.is_multiple_of(3_600_000_000) && us > 0 {
        format!("{}h", us / 3_600_000_000)
    } else if us.is_multiple_of(60_000_000) && us > 0 {
        format!("{}m", us / 60_000_000)
    } else if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// A resource limit (`LimitNOFILE=` and friends): `N`, `infinity`, with a
/// 1024-based suffix for sizes (`K`, `M`, `G`, `T`, `P`, `E`), or
/// `SOFT:HARD`. Returns (soft, hard), `None` for infinity.
pub fn limit(s: &str) -> Result<(Option<u64>, Option<u64>), String> {
    let one = |v: &str| -> Result<Option<u64>, String> {
        let v = v.trim();
        if v == "infinity" {
            return Ok(None);
        }
        let (digits, mul) = match v.char_indices().last() {
            Some((i, c)) if "KMGTPE".contains(c) => {
                let p = "KMGTPE".find(c).unwrap_or(0) as u32 + 1;
                (&v[..i], 1024u64.pow(p))
            }
            _ => (v, 1),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{v:?} is not a limit (a number or infinity)"))?;
        n.checked_mul(mul)
            .map(Some)
            .ok_or_else(|| format!("{v:?} is too large"))
    };
    match s.split_once(':') {
        Some((a, b)) => Ok((one(a)?, one(b)?)),
        None => {
            let v = one(s)?;
            Ok((v, v))
        }
    }
}

/// What [`env_file`] read: the assignments, and the lines it ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvFile {
    pub vars: Vec<(String, String)>,
    pub ignored: Vec<(usize, String)>,
}

/// An environment file (`EnvironmentFile=`, systemd.exec(5)): `KEY=VALUE`
/// lines, `#`/`;` comments, values unquoted (backslash escapes the next
/// character, trailing whitespace removed), `'single'` (literal) or
/// `"double"` quoted (`\"`, `\\`, `\$`, `` \` `` escapes), a backslash at
/// the end of a line continuing it. A line that is not an assignment
/// (`export A=1`, shell code: many `/etc/default` files are written for
/// `/bin/sh`) is ignored, as systemd ignores it, and returned with its line
/// for the report. Errors (not UTF-8, an unterminated quote) carry the
/// 1-based line.
pub fn env_file(bytes: &[u8]) -> Result<EnvFile, (usize, String)> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        (line, "not valid UTF-8".to_string())
    })?;
    let mut out = EnvFile::default();
    let lines: Vec<&str> = text.split('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let mut line = lines[i].trim_end_matches('\r').to_string();
        i += 1;
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        // Join continuations outside quotes (a quoted value may span lines).
        loop {
            let open = open_quote(&line);
            if open.is_some() || (line.ends_with('\\') && !line.ends_with("\\\\")) {
                if i >= lines.len() {
                    if open.is_some() {
                        return Err((lineno, "unterminated quote".into()));
                    }
                    line.pop();
                    break;
                }
                if open.is_none() {
                    line.pop();
                } else {
                    line.push('\n');
                }
                line.push_str(lines[i].trim_end_matches('\r'));
                i += 1;
            } else {
                break;
            }
        }
        let t = line.trim_start();
        let Some((key, raw)) = t.split_once('=').filter(|(k, _)| is_var_name(k.trim())) else {
            let first = t.lines().next().unwrap_or_default();
            out.ignored.push((lineno, first.to_string()));
            continue;
        };
        out.vars
            .push((key.trim().to_string(), env_value(raw.trim_start())));
    }
    Ok(out)
}

fn open_quote(s: &str) -> Option<char> {
    let mut q: Option<char> = None;
    let mut esc = false;
    let after_eq = s.split_once('=').map_or("", |(_, v)| v);
    for c in after_eq.chars() {
        if esc {
            esc = false;
            continue;
        }
        match (q, c) {
            (Some('\''), '\'') => q = None,
            (Some('\''), _) => {}
            (_, '\\') => esc = true,
            (None, '"' | '\'') => q = Some(c),
            (Some('"'), '"') => q = None,
            _ => {}
        }
    }
    q
}

fn env_value(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    let mut trailing_ws = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for x in chars.by_ref() {
                    if x == '\'' {
                        break;
                    }
                    out.push(x);
                }
                trailing_ws = 0;
            }
            '"' => {
                while let Some(x) = chars.next() {
                    match x {
                        '"' => break,
                        '\\' => match chars.peek() {
                            Some('"' | '\\' | '$' | '`') => {
                                if let Some(e) = chars.next() {
                                    out.push(e);
                                }
                            }
                            Some('\n') => {
                                chars.next();
                            }
                            _ => out.push('\\'),
                        },
                        x => out.push(x),
                    }
                }
                trailing_ws = 0;
            }
            '\\' => {
                if let Some(e) = chars.next() {
                    out.push(e);
                }
                trailing_ws = 0;
            }
            c if c.is_whitespace() => {
                out.push(c);
                trailing_ws += c.len_utf8();
            }
            c => {
                out.push(c);
                trailing_ws = 0;
            }
        }
    }
    out.truncate(out.len() - trailing_ws);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn words_quotes_and_escapes() {
        assert_eq!(
            split_words(r#"/usr/sbin/nginx -g 'daemon on; master_process on;'"#).unwrap(),
            w(&["/usr/sbin/nginx", "-g", "daemon on; master_process on;"])
        );
        assert_eq!(
            split_words(r#"a "b c"d \x41\t e\ f"#).unwrap(),
            w(&["a", "b cd", "A\t", "e f"])
        );
        assert!(split_words("a 'b").unwrap_err().contains("unterminated"));
        assert!(split_words(r"a \q").unwrap_err().contains("unknown escape"));
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn specifiers_of_an_instance() {
        let s = Specifiers {
            unit: "getty@tty1.service".into(),
            user: None,
            group: None,
        };
        assert_eq!(
            s.expand("%n %N %p %i %I %f %t %%").unwrap(),
            "getty@tty1.service getty@tty1 getty tty1 tty1 /tty1 /run %"
        );
        assert_eq!(s.expand("%u:%U %h").unwrap(), "root:0 /root");
        assert!(s.expand("%H").unwrap_err().contains("%H (host name)"));
        assert!(s.expand("%z").unwrap_err().contains("unknown specifier %z"));
        let t = Specifiers {
            unit: "ssh.service".into(),
            user: Some("_chrony".into()),
            group: None,
        };
        assert!(t.expand("%i").unwrap_err().contains("not an instance"));
        assert!(t.expand("%h").unwrap_err().contains("home directory"));
        assert!(t.expand("%U").unwrap_err().contains("%U"));
        assert_eq!(t.expand("%u").unwrap(), "_chrony");
        let e = Specifiers {
            unit: "dev-disk-by\\x2duuid.service".into(),
            ..Specifiers::default()
        };
        assert_eq!(e.expand("%P").unwrap(), "dev/disk/by-uuid");
    }

    #[test]
    fn vars_as_systemd_expands_them() {
        let mut env = BTreeMap::new();
        env.insert("OPTS".to_string(), " -a  -b ".to_string());
        env.insert("EMPTY".to_string(), String::new());
        let (v, ex) = expand_vars(
            &w(&[
                "/bin/x",
                "$OPTS",
                "${OPTS}",
                "a${EMPTY}b",
                "$EMPTY",
                "$$HOME",
                "x$OPTS",
                "$NOPE",
            ]),
            &env,
        )
        .unwrap();
        assert_eq!(
            v,
            w(&["/bin/x", "-a", "-b", " -a  -b ", "ab", "$HOME", "x$OPTS"])
        );
        assert_eq!(ex.used, w(&["OPTS", "EMPTY"]));
        assert_eq!(ex.unset, w(&["NOPE"]));
        assert!(expand_vars(&w(&["$MAINPID"]), &env)
            .unwrap_err()
            .contains("$MAINPID is set by systemd at run time"));
        assert!(expand_vars(&w(&["${A"]), &env).is_err());
    }

    #[test]
    fn time_spans() {
        assert_eq!(timespan("5").unwrap(), Some(5_000_000));
        assert_eq!(timespan("1min 30s").unwrap(), Some(90_000_000));
        assert_eq!(timespan("100ms").unwrap(), Some(100_000));
        assert_eq!(timespan("2h").unwrap(), Some(7_200_000_000));
        assert_eq!(timespan("1.5s").unwrap(), Some(1_500_000));
        assert_eq!(timespan("infinity").unwrap(), None);
        assert!(timespan("5 parsecs").is_err());
        assert!(timespan("").is_err());
        assert_eq!(tether_duration(90_000_000), "90s");
        assert_eq!(tether_duration(120_000_000), "2m");
        assert_eq!(tether_duration(100_000), "100ms");
        assert_eq!(tether_duration(0), "0s");
        assert_eq!(tether_duration(1_500_000), "1500ms");
    }

    #[test]
    fn limits() {
        assert_eq!(limit("16384").unwrap(), (Some(16384), Some(16384)));
        assert_eq!(limit("infinity").unwrap(), (None, None));
        assert_eq!(limit("1024:524288").unwrap(), (Some(1024), Some(524288)));
        assert_eq!(limit("64K").unwrap(), (Some(65536), Some(65536)));
        assert!(limit("lots").is_err());
    }

    #[test]
    fn environment_files() {
        let f = b"# c\nSSHD_OPTS=\nDAEMON_OPTS=\"-F 1\"\n  READ_ENV='yes' \nA=x\\ y  \nB=\"multi\nline\"\nC=a\\\nb\n";
        let v = env_file(f).unwrap();
        let got: Vec<(&str, &str)> = v
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("SSHD_OPTS", ""),
                ("DAEMON_OPTS", "-F 1"),
                ("READ_ENV", "yes"),
                ("A", "x y"),
                ("B", "multi\nline"),
                ("C", "ab"),
            ]
        );
        let v = env_file(b"A=1\nexport B=2\nif true; then\n").unwrap();
        assert_eq!(v.vars, vec![("A".to_string(), "1".to_string())]);
        assert_eq!(
            v.ignored,
            vec![
                (2, "export B=2".to_string()),
                (3, "if true; then".to_string())
            ]
        );
        assert_eq!(env_file(b"A=1\nB=\xff\n").unwrap_err().0, 2);
        assert!(env_file(b"A=\"open\n").is_err());
    }
}
