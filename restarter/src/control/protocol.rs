//! The control protocol, pure: request parsing, responses, status rendering.
//!
//! One request per connection: a single line of UTF-8 text of at most
//! [`MAX_REQUEST`] bytes including its `\n`. The response is `ok` or
//! `error: MESSAGE` on the first line, then the body (status as a text table,
//! or JSON for `--json`); the server closes the connection after it.
//!
//! Decisions where the interface is silent:
//! - Words are separated by spaces or tabs; leading and trailing blanks are
//!   ignored; a final `\r` before the `\n` is accepted (`nc`, `socat crlf`).
//! - A request ended by the client shutting down its side without a `\n` is
//!   complete (what `printf status | socat - UNIX:...` sends).
//! - Bytes after the request line are refused ("one request per
//!   connection"), as is any argument a command does not take.
//! - `status` takes its `NAME` and `--json` in either order.
//! - Signals: a name with or without `SIG`, any case (`TERM`, `SIGTERM`,
//!   `term`), or a number from 1 to `SIGRTMAX` (real-time signals by number
//!   only). Signal 0 is refused: it is not a signal.
//! - Service names are `[A-Za-z0-9_.@-]{1,64}` starting with a letter or
//!   digit, as `service::valid_name` requires of service files (so a name
//!   never looks like an option or a path component such as `..`).
//! - Text from services (`STATUS=`, error messages) is printed with control
//!   characters replaced by `?`, so a service cannot forge lines of the table.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest request, including its `\n`.
pub const MAX_REQUEST: usize = 512;
/// Longest response; a status larger than this is answered with an error.
/// 16 MiB: 10,000 services take about 3.7 MB of JSON when they run, over
/// 4 MiB when their starts fail (a 200-byte error each; seen with
/// `bench_scale 10000` short of descriptors), and a status that fails
/// exactly when services do is the one an operator needs. Two such answers
/// fit the server's 32 MiB of queued responses.
pub const MAX_RESPONSE: usize = 16 << 20;
/// Longest service name.
pub const MAX_NAME: usize = 64;

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Status {
        name: Option<String>,
        json: bool,
    },
    Start(String),
    Stop(String),
    Restart(String),
    /// Service name and signal number.
    Signal(String, i32),
    Reload,
    Reboot,
    Poweroff,
    Halt,
    /// `upgrade init|restarter|watchdogd` (issue 13).
    Upgrade(Layer),
}

/// A layer of the chain, as `tetherctl upgrade` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Init,
    Restarter,
    Watchdogd,
}

impl Layer {
    pub fn name(self) -> &'static str {
        match self {
            Layer::Init => "init",
            Layer::Restarter => "restarter",
            Layer::Watchdogd => "watchdogd",
        }
    }
}

impl Request {
    /// Whether the request changes state (and so needs permission).
    pub fn changes_state(&self) -> bool {
        !matches!(self, Request::Status { .. })
    }
}

impl fmt::Display for Request {
    /// The canonical request line, without the `\n` (what `tetherctl` sends,
    /// and how requests are named in logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Status { name, json } => {
                f.write_str("status")?;
                if let Some(n) = name {
                    write!(f, " {n}")?;
                }
                if *json {
                    f.write_str(" --json")?;
                }
                Ok(())
            }
            Request::Start(n) => write!(f, "start {n}"),
            Request::Stop(n) => write!(f, "stop {n}"),
            Request::Restart(n) => write!(f, "restart {n}"),
            Request::Signal(n, s) => write!(f, "signal {n} {s}"),
            Request::Reload => f.write_str("reload"),
            Request::Reboot => f.write_str("reboot"),
            Request::Poweroff => f.write_str("poweroff"),
            Request::Halt => f.write_str("halt"),
            Request::Upgrade(l) => write!(f, "upgrade {}", l.name()),
        }
    }
}

/// Why a request was refused. `Display` is the message sent after `error: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    Empty,
    /// The line (up to and including its `\n`) or the unterminated data is
    /// longer than [`MAX_REQUEST`].
    TooLong,
    NotUtf8,
    /// Bytes after the request line.
    TrailingData,
    UnknownCommand(String),
    MissingArgument {
        command: &'static str,
        what: &'static str,
    },
    UnexpectedArgument {
        command: &'static str,
        argument: String,
    },
    BadName(String),
    BadSignal(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Empty => f.write_str("empty request"),
            RequestError::TooLong => write!(f, "request longer than {MAX_REQUEST} bytes"),
            RequestError::NotUtf8 => f.write_str("request is not valid UTF-8"),
            RequestError::TrailingData => {
                f.write_str("data after the request line (one request per connection)")
            }
            RequestError::UnknownCommand(c) => write!(f, "unknown command {c:?}"),
            RequestError::MissingArgument { command, what } => {
                write!(f, "{command}: missing {what}")
            }
            RequestError::UnexpectedArgument { command, argument } => {
                write!(f, "{command}: unexpected argument {argument:?}")
            }
            RequestError::BadName(n) => {
                write!(f, "invalid service name {n:?} (1 to {MAX_NAME} of A-Z a-z 0-9 _ . @ -, starting with a letter or digit)")
            }
            RequestError::BadSignal(s) => {
                write!(
                    f,
                    "invalid signal {s:?} (a name like TERM or SIGTERM, or a number from 1 to {})",
                    sigrtmax()
                )
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// Parses one request. `line` is everything the client sent: the line with
/// or without its `\n` (without: the client ended its side).
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    let line = match line.iter().position(|&b| b == b'\n') {
        Some(i) if i + 1 > MAX_REQUEST => return Err(RequestError::TooLong),
        Some(i) if i + 1 < line.len() => return Err(RequestError::TrailingData),
        Some(i) => &line[..i],
        None if line.len() > MAX_REQUEST => return Err(RequestError::TooLong),
        None => line,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)?;
    let mut words = text.split([' ', '\t']).filter(|w| !w.is_empty());
    let Some(command) = words.next() else {
        return Err(RequestError::Empty);
    };
    let rest: Vec<&str> = words.collect();
    match command {
        "status" => parse_status(&rest),
        "start" => one_name("start", &rest).map(Request::Start),
        "stop" => one_name("stop", &rest).map(Request::Stop),
        "restart" => one_name("restart", &rest).map(Request::Restart),
        "signal" => {
            let name = rest.first().ok_or(RequestError::MissingArgument {
                command: "signal",
                what: "service name",
            })?;
            let name = valid_name(name)?;
            let sig = rest.get(1).ok_or(RequestError::MissingArgument {
                command: "signal",
                what: "signal",
            })?;
            let number =
                parse_signal(sig).ok_or_else(|| RequestError::BadSignal(sig.to_string()))?;
            no_more("signal", &rest[2..])?;
            Ok(Request::Signal(name, number))
        }
        "reload" => no_more("reload", &rest).map(|()| Request::Reload),
        "reboot" => no_more("reboot", &rest).map(|()| Request::Reboot),
        "poweroff" => no_more("poweroff", &rest).map(|()| Request::Poweroff),
        "halt" => no_more("halt", &rest).map(|()| Request::Halt),
        "upgrade" => {
            let what = rest.first().ok_or(RequestError::MissingArgument {
                command: "upgrade",
                what: "init, restarter or watchdogd",
            })?;
            let layer = match *what {
                "init" => Layer::Init,
                "restarter" => Layer::Restarter,
                "watchdogd" => Layer::Watchdogd,
                other => return Err(RequestError::UnknownCommand(format!("upgrade {other}"))),
            };
            no_more("upgrade", &rest[1..])?;
            Ok(Request::Upgrade(layer))
        }
        other => Err(RequestError::UnknownCommand(other.to_string())),
    }
}

fn parse_status(args: &[&str]) -> Result<Request, RequestError> {
    let mut name = None;
    let mut json = false;
    for &arg in args {
        if arg == "--json" && !json {
            json = true;
        } else if arg.starts_with("--") || name.is_some() {
            return Err(RequestError::UnexpectedArgument {
                command: "status",
                argument: arg.to_string(),
            });
        } else {
            name = Some(valid_name(arg)?);
        }
    }
    Ok(Request::Status { name, json })
}

fn one_name(command: &'static str, args: &[&str]) -> Result<String, RequestError> {
    let name = args.first().ok_or(RequestError::MissingArgument {
        command,
        what: "service name",
    })?;
    let name = valid_name(name)?;
    no_more(command, &args[1..])?;
    Ok(name)
}

fn no_more(command: &'static str, args: &[&str]) -> Result<(), RequestError> {
    match args.first() {
        None => Ok(()),
        Some(a) => Err(RequestError::UnexpectedArgument {
            command,
            argument: a.to_string(),
        }),
    }
}

/// Whether `name` is a valid service name: `[A-Za-z0-9_.@-]{1,64}`, the
/// first character a letter or digit.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

fn valid_name(name: &str) -> Result<String, RequestError> {
    if is_valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(RequestError::BadName(name.to_string()))
    }
}

fn sigrtmax() -> i32 {
    libc::SIGRTMAX()
}

/// `TERM`, `SIGTERM`, `term`, `15` → 15. `None` for anything else.
pub fn parse_signal(s: &str) -> Option<i32> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: i32 = s.parse().ok()?;
        return (1..=sigrtmax()).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&full)
        .ok()
        .map(|sig| sig as i32)
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    /// `ok`, then the body (may be empty).
    Ok(String),
    /// `error: MESSAGE` (one line; newlines in the message become spaces).
    Error(String),
    /// `ok`, then the status as a table, or as JSON when the flag is set.
    Status(StatusReport, bool),
}

impl Response {
    /// The bytes sent to the client. A rendering longer than
    /// [`MAX_RESPONSE`] is replaced by an error.
    pub fn encode(&self) -> Vec<u8> {
        let out = match self {
            Response::Ok(body) => ok_with(body),
            Response::Error(msg) => return error_line(msg),
            Response::Status(report, true) => ok_with(&report.to_json()),
            Response::Status(report, false) => ok_with(&report.to_text()),
        };
        if out.len() > MAX_RESPONSE {
            return error_line(&format!(
                "response too large ({} bytes, at most {MAX_RESPONSE})",
                out.len()
            ));
        }
        out
    }
}

fn ok_with(body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(b"ok\n");
    out.extend_from_slice(body.as_bytes());
    if !body.is_empty() && !body.ends_with('\n') {
        out.push(b'\n');
    }
    out
}

/// `error: MESSAGE\n`, the message folded onto one line.
pub fn error_line(msg: &str) -> Vec<u8> {
    let one_line: String = msg
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("error: {one_line}\n").into_bytes()
}

/// The restarter's status, assembled by the supervisor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub restarter_pid: i32,
    pub uptime_ms: u64,
    pub services: Vec<ServiceStatus>,
    /// Service files (or tether.toml) that failed to load, `file:line:column: message`.
    pub config_errors: Vec<String>,
    pub syslog_up: bool,
    /// Control requests refused (malformed, denied, busy, timed out).
    pub control_rejected: u64,
}

/// One service in [`StatusReport`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// starting|running|ready|stopping|stopped|failed|backoff|disabled|config-error
    pub state: String,
    pub pid: Option<i32>,
    pub uptime_ms: Option<u64>,
    pub restarts: u64,
    /// `exit 1` or `signal KILL`.
    pub last_exit: Option<String>,
    pub ready: bool,
    /// Milliseconds left before the service's watchdog deadline.
    pub watchdog_deadline_ms: Option<u64>,
    pub dropped_lines: u64,
    /// Notify datagrams that did not count: malformed, or refused for their
    /// sender (`notify_refused` of them).
    pub notify_rejected: u64,
    /// Well-formed notify datagrams refused for their sender: a uid that is
    /// neither root nor the service's, or a live sender outside the
    /// service's process group.
    #[serde(default)]
    pub notify_refused: u64,
    /// Why the latest one was refused (`sender uid 65534 is neither ...`).
    #[serde(default)]
    pub notify_last_refusal: Option<String>,
    pub status_text: Option<String>,
    pub error: Option<String>,
}

impl StatusReport {
    /// Keeps only the service `name`; false (and the report unchanged) if
    /// there is none (for `status NAME`).
    pub fn retain_service(&mut self, name: &str) -> bool {
        if !self.services.iter().any(|s| s.name == name) {
            return false;
        }
        self.services.retain(|s| s.name == name);
        true
    }

    /// Pretty-printed JSON, ending in a newline.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        let mut s = serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
        s.push('\n');
        s
    }

    /// Header lines, the service table, then one line per service note
    /// (error, `STATUS=` text, rejected notify messages).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out += &format!(
            "restarter: pid {}, up {}\n",
            self.restarter_pid,
            format_ms(self.uptime_ms)
        );
        out += &format!(
            "syslog: {}\n",
            if self.syslog_up {
                "up"
            } else {
                "DOWN (service output buffered, then dropped)"
            }
        );
        out += &format!("control: {} requests rejected\n", self.control_rejected);
        if !self.config_errors.is_empty() {
            out += &format!("config errors: {}\n", self.config_errors.len());
            for e in &self.config_errors {
                out += &format!("  {}\n", sanitize(e));
            }
        }
        out.push('\n');
        let header = [
            "NAME",
            "STATE",
            "PID",
            "UPTIME",
            "RESTARTS",
            "LAST-EXIT",
            "READY",
            "WATCHDOG",
            "DROPPED",
        ];
        let rows: Vec<[String; 9]> = self.services.iter().map(service_row).collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        push_row(&mut out, &header.map(String::from), &widths);
        for row in &rows {
            push_row(&mut out, row, &widths);
        }
        for s in &self.services {
            if let Some(e) = &s.error {
                out += &format!("{}: error: {}\n", s.name, sanitize(e));
            }
            if let Some(t) = &s.status_text {
                out += &format!("{}: status: {}\n", s.name, sanitize(t));
            }
            if s.notify_rejected > 0 {
                out += &format!(
                    "{}: {} notify messages rejected\n",
                    s.name, s.notify_rejected
                );
            }
            if s.notify_refused > 0 {
                out += &format!(
                    "{}: {} of them refused for their sender{}\n",
                    s.name,
                    s.notify_refused,
                    s.notify_last_refusal
                        .as_deref()
                        .map(|r| format!(", latest: {}", sanitize(r)))
                        .unwrap_or_default()
                );
            }
        }
        out
    }
}

fn service_row(s: &ServiceStatus) -> [String; 9] {
    let dash = || "-".to_string();
    [
        sanitize(&s.name),
        sanitize(&s.state),
        s.pid.map_or_else(dash, |p| p.to_string()),
        s.uptime_ms.map_or_else(dash, format_ms),
        s.restarts.to_string(),
        s.last_exit.as_deref().map_or_else(dash, sanitize),
        if s.ready { "yes" } else { "no" }.to_string(),
        s.watchdog_deadline_ms.map_or_else(dash, format_ms),
        s.dropped_lines.to_string(),
    ]
}

fn push_row(out: &mut String, cells: &[String; 9], widths: &[usize; 9]) {
    let mut line = String::new();
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(cell);
        line.push_str(&" ".repeat(w.saturating_sub(cell.chars().count())));
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Control characters (including newlines) become `?`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A compact age: `850ms`, `12.3s`, `5m12s`, `3h05m`, `2d03h`.
pub fn format_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, RequestError> {
        parse_request(s.as_bytes())
    }

    fn name(n: &str) -> String {
        n.to_string()
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(
            parse("status\n"),
            Ok(Request::Status {
                name: None,
                json: false
            })
        );
        assert_eq!(
            parse("status --json\n"),
            Ok(Request::Status {
                name: None,
                json: true
            })
        );
        assert_eq!(
            parse("status sshd\n"),
            Ok(Request::Status {
                name: Some(name("sshd")),
                json: false
            })
        );
        assert_eq!(
            parse("status sshd --json\n"),
            Ok(Request::Status {
                name: Some(name("sshd")),
                json: true
            })
        );
        assert_eq!(
            parse("status --json sshd\n"),
            Ok(Request::Status {
                name: Some(name("sshd")),
                json: true
            })
        );
        assert_eq!(parse("start a\n"), Ok(Request::Start(name("a"))));
        assert_eq!(parse("stop a\n"), Ok(Request::Stop(name("a"))));
        assert_eq!(parse("restart a\n"), Ok(Request::Restart(name("a"))));
        assert_eq!(
            parse("signal a HUP\n"),
            Ok(Request::Signal(name("a"), libc::SIGHUP))
        );
        assert_eq!(parse("reload\n"), Ok(Request::Reload));
        assert_eq!(parse("reboot\n"), Ok(Request::Reboot));
        assert_eq!(parse("poweroff\n"), Ok(Request::Poweroff));
        assert_eq!(parse("halt\n"), Ok(Request::Halt));
        assert_eq!(
            parse("upgrade restarter\n"),
            Ok(Request::Upgrade(Layer::Restarter))
        );
        assert!(parse("upgrade\n").is_err());
        assert!(parse("upgrade kernel\n").is_err());
        assert!(parse("upgrade init now\n").is_err());
    }

    #[test]
    fn blanks_crlf_and_missing_final_newline_are_accepted() {
        assert_eq!(parse("  stop \t a  \r\n"), Ok(Request::Stop(name("a"))));
        assert_eq!(parse("reload"), Ok(Request::Reload));
        assert_eq!(parse("reload\r\n"), Ok(Request::Reload));
    }

    #[test]
    fn display_is_the_canonical_line_and_parses_back() {
        let all = [
            Request::Status {
                name: Some(name("x")),
                json: true,
            },
            Request::Status {
                name: None,
                json: false,
            },
            Request::Start(name("x")),
            Request::Stop(name("x")),
            Request::Restart(name("x")),
            Request::Signal(name("x"), 15),
            Request::Reload,
            Request::Reboot,
            Request::Poweroff,
            Request::Halt,
            Request::Upgrade(Layer::Init),
            Request::Upgrade(Layer::Restarter),
            Request::Upgrade(Layer::Watchdogd),
        ];
        for r in all {
            assert_eq!(parse(&format!("{r}\n")), Ok(r.clone()), "{r}");
            assert_eq!(r.changes_state(), !matches!(r, Request::Status { .. }));
        }
    }

    #[test]
    fn names_outside_the_allowed_set_are_refused() {
        let long = "a".repeat(65);
        for bad in [
            "a/b",
            "..",
            ".",
            "-x",
            ".hidden",
            "_a",
            "@a",
            "a b\u{e9}",
            "x\u{0}",
            "na$me",
            "sshd;reboot",
            "é",
            long.as_str(),
        ] {
            let line = format!("stop {bad}\n");
            match parse(&line) {
                Err(RequestError::BadName(_)) | Err(RequestError::UnexpectedArgument { .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(parse("stop a/b"), Err(RequestError::BadName(n)) if n == "a/b"));
        assert!(matches!(
            parse("status ../x"),
            Err(RequestError::BadName(_))
        ));
        let max = "a".repeat(64);
        assert_eq!(
            parse(&format!("start {max}")),
            Ok(Request::Start(max.clone()))
        );
        for good in ["getty@tty1", "a.b-c_D9", "9", "x..", "A-"] {
            assert_eq!(
                parse(&format!("restart {good}")),
                Ok(Request::Restart(name(good))),
                "{good}"
            );
        }
    }

    #[test]
    fn signals_by_name_with_or_without_sig_any_case_or_number() {
        for s in ["TERM", "SIGTERM", "term", "SigTerm", "15"] {
            assert_eq!(
                parse(&format!("signal a {s}")),
                Ok(Request::Signal(name("a"), libc::SIGTERM)),
                "{s}"
            );
        }
        assert_eq!(parse("signal a KILL"), Ok(Request::Signal(name("a"), 9)));
        assert_eq!(
            parse("signal a USR1"),
            Ok(Request::Signal(name("a"), libc::SIGUSR1))
        );
        let rtmax = libc::SIGRTMAX();
        assert_eq!(
            parse(&format!("signal a {rtmax}")),
            Ok(Request::Signal(name("a"), rtmax))
        );
        for bad in [
            "0",
            "-9",
            "+9",
            "FOO",
            "SIG",
            "",
            "99999999999",
            &(rtmax + 1).to_string(),
            "9x",
            "RTMIN",
        ] {
            assert!(parse_signal(bad).is_none(), "{bad:?}");
        }
        assert_eq!(parse("signal a 0"), Err(RequestError::BadSignal(name("0"))));
        assert_eq!(
            parse("signal a"),
            Err(RequestError::MissingArgument {
                command: "signal",
                what: "signal"
            })
        );
        assert_eq!(
            parse("signal"),
            Err(RequestError::MissingArgument {
                command: "signal",
                what: "service name"
            })
        );
    }

    #[test]
    fn unknown_commands_are_named_in_the_error() {
        let e = parse("foo bar\n").unwrap_err();
        assert_eq!(e, RequestError::UnknownCommand(name("foo")));
        assert_eq!(e.to_string(), "unknown command \"foo\"");
        assert_eq!(
            parse("STATUS"),
            Err(RequestError::UnknownCommand(name("STATUS")))
        );
        // Control characters are escaped in the message, not echoed raw.
        assert_eq!(
            parse("\u{1b}[2J").unwrap_err().to_string(),
            "unknown command \"\\u{1b}[2J\""
        );
    }

    #[test]
    fn oversize_requests_are_refused_at_513_bytes() {
        let fits = format!("status {}\n", "a".repeat(MAX_REQUEST - 8));
        assert_eq!(fits.len(), MAX_REQUEST);
        // Fits the size limit; refused for the name only.
        assert!(matches!(parse(&fits), Err(RequestError::BadName(_))));
        let over = format!("status {}\n", "a".repeat(MAX_REQUEST - 7));
        assert_eq!(parse(&over), Err(RequestError::TooLong));
        assert_eq!(
            parse(&"x".repeat(MAX_REQUEST + 1)),
            Err(RequestError::TooLong)
        );
        assert_eq!(parse(&"x".repeat(4096)), Err(RequestError::TooLong));
        assert_eq!(
            RequestError::TooLong.to_string(),
            "request longer than 512 bytes"
        );
    }

    #[test]
    fn non_utf8_is_refused() {
        assert_eq!(
            parse_request(b"stop \xff\xfe\n"),
            Err(RequestError::NotUtf8)
        );
        assert_eq!(parse_request(b"\xc3\n"), Err(RequestError::NotUtf8));
    }

    #[test]
    fn trailing_garbage_and_extra_arguments_are_refused() {
        assert_eq!(parse("status\nstop a\n"), Err(RequestError::TrailingData));
        assert_eq!(parse("reload\nx"), Err(RequestError::TrailingData));
        assert_eq!(
            parse("reload now"),
            Err(RequestError::UnexpectedArgument {
                command: "reload",
                argument: name("now")
            })
        );
        assert!(matches!(
            parse("stop a b"),
            Err(RequestError::UnexpectedArgument {
                command: "stop",
                ..
            })
        ));
        assert!(matches!(
            parse("signal a TERM x"),
            Err(RequestError::UnexpectedArgument {
                command: "signal",
                ..
            })
        ));
        assert!(matches!(
            parse("status a b"),
            Err(RequestError::UnexpectedArgument {
                command: "status",
                ..
            })
        ));
        assert!(matches!(
            parse("status --yaml"),
            Err(RequestError::UnexpectedArgument {
                command: "status",
                ..
            })
        ));
        assert!(matches!(
            parse("status --json --json"),
            Err(RequestError::UnexpectedArgument { .. })
        ));
        assert!(matches!(
            parse("halt -f"),
            Err(RequestError::UnexpectedArgument {
                command: "halt",
                ..
            })
        ));
    }

    #[test]
    fn empty_requests_are_refused() {
        for e in ["", "\n", "   \t\r\n"] {
            assert_eq!(parse(e), Err(RequestError::Empty), "{e:?}");
        }
        assert_eq!(
            parse("stop\n"),
            Err(RequestError::MissingArgument {
                command: "stop",
                what: "service name"
            })
        );
    }

    fn sample() -> StatusReport {
        StatusReport {
            restarter_pid: 42,
            uptime_ms: 3_723_000,
            services: vec![
                ServiceStatus {
                    name: name("sshd"),
                    state: name("ready"),
                    pid: Some(512),
                    uptime_ms: Some(61_000),
                    restarts: 2,
                    last_exit: Some(name("signal KILL")),
                    ready: true,
                    watchdog_deadline_ms: Some(4_500),
                    dropped_lines: 7,
                    notify_rejected: 3,
                    notify_refused: 2,
                    notify_last_refusal: Some(name(
                        "sender uid 65534 is neither root nor the service's uid 0",
                    )),
                    status_text: Some(name("serving\nFAKE LINE")),
                    error: None,
                },
                ServiceStatus {
                    name: name("broken"),
                    state: name("config-error"),
                    error: Some(name("exec: missing")),
                    ..Default::default()
                },
            ],
            config_errors: vec![name(
                "/etc/tether/services/broken.toml:1:1: field `exec`: missing",
            )],
            syslog_up: false,
            control_rejected: 3,
        }
    }

    #[test]
    fn status_text_has_headers_a_table_and_notes() {
        let text = sample().to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "restarter: pid 42, up 1h02m");
        assert!(lines[1].starts_with("syslog: DOWN"));
        assert_eq!(lines[2], "control: 3 requests rejected");
        assert_eq!(lines[3], "config errors: 1");
        assert!(lines[4].contains("broken.toml:1:1"));
        let header = lines.iter().position(|l| l.starts_with("NAME")).unwrap();
        let cols: Vec<&str> = lines[header].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "NAME",
                "STATE",
                "PID",
                "UPTIME",
                "RESTARTS",
                "LAST-EXIT",
                "READY",
                "WATCHDOG",
                "DROPPED"
            ]
        );
        // Columns line up: every field of the row starts where its header does.
        let sshd = lines[header + 1];
        for (h, v) in [
            ("STATE", "ready"),
            ("PID", "512"),
            ("UPTIME", "1m01s"),
            ("WATCHDOG", "4.5s"),
            ("DROPPED", "7"),
        ] {
            assert_eq!(lines[header].find(h), sshd.find(v), "{h}");
        }
        assert!(sshd.contains("signal KILL") && sshd.contains("yes"));
        let broken: Vec<&str> = lines[header + 2].split_whitespace().collect();
        assert_eq!(
            broken,
            ["broken", "config-error", "-", "-", "0", "-", "no", "-", "0"]
        );
        assert!(text.contains("broken: error: exec: missing\n"));
        // A service's STATUS= text cannot add a line to the output.
        assert!(text.contains("sshd: status: serving?FAKE LINE\n"));
        assert!(!text.lines().any(|l| l.starts_with("FAKE")));
        assert!(text.contains("sshd: 3 notify messages rejected\n"));
        assert!(text.contains(
            "sshd: 2 of them refused for their sender, latest: sender uid 65534 is neither root nor the service's uid 0\n"
        ));
        assert!(!text.contains("broken: 0"));
    }

    #[test]
    fn status_json_round_trips() {
        let r = sample();
        let back: StatusReport = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["services"][0]["name"], "sshd");
        assert_eq!(v["services"][1]["pid"], serde_json::Value::Null);
        assert_eq!(v["services"][0]["notify_refused"], 2);
        // A report from a restarter without the refusal fields still reads.
        let old = r#"{"restarter_pid":1,"uptime_ms":0,"services":[{"name":"a","state":"ready",
            "pid":null,"uptime_ms":null,"restarts":0,"last_exit":null,"ready":true,
            "watchdog_deadline_ms":null,"dropped_lines":0,"notify_rejected":0,
            "status_text":null,"error":null}],"config_errors":[],"syslog_up":true,
            "control_rejected":0}"#;
        let back: StatusReport = serde_json::from_str(old).unwrap();
        assert_eq!(back.services[0].notify_refused, 0);
    }

    #[test]
    fn responses_encode_ok_or_one_error_line() {
        assert_eq!(Response::Ok(String::new()).encode(), b"ok\n");
        assert_eq!(
            Response::Ok(name("stopping sshd")).encode(),
            b"ok\nstopping sshd\n"
        );
        assert_eq!(
            Response::Error(name("no such\nservice")).encode(),
            b"error: no such service\n"
        );
        let json = String::from_utf8(Response::Status(sample(), true).encode()).unwrap();
        let body = json.strip_prefix("ok\n").unwrap();
        assert!(serde_json::from_str::<StatusReport>(body).is_ok());
        let text = String::from_utf8(Response::Status(sample(), false).encode()).unwrap();
        assert!(text.starts_with("ok\nrestarter: pid 42"));
    }

    #[test]
    fn oversized_status_becomes_an_error() {
        let mut r = sample();
        r.config_errors = vec!["x".repeat(MAX_RESPONSE)];
        let out = String::from_utf8(Response::Status(r, false).encode()).unwrap();
        assert!(
            out.starts_with("error: response too large"),
            "{}",
            &out[..60]
        );
    }

    #[test]
    fn status_of_a_thousand_services_fits() {
        let mut r = sample();
        r.services = (0..1000)
            .map(|i| ServiceStatus {
                name: format!("service-{i:04}"),
                status_text: Some("x".repeat(200)),
                error: Some("y".repeat(200)),
                ..sample().services[0].clone()
            })
            .collect();
        for json in [true, false] {
            let out = Response::Status(r.clone(), json).encode();
            assert!(out.starts_with(b"ok\n"), "json={json}");
        }
    }

    #[test]
    fn status_of_ten_thousand_failing_services_fits() {
        let mut r = sample();
        r.services = (0..10_000)
            .map(|i| ServiceStatus {
                name: format!("s{i:05}"),
                state: "backoff".into(),
                error: Some(format!(
                    "cannot start: descriptor reserve of the restarter: Too many open files (os error 24) [EMFILE]; {}",
                    "x".repeat(100)
                )),
                status_text: Some("y".repeat(100)),
                ..sample().services[0].clone()
            })
            .collect();
        for json in [true, false] {
            let out = Response::Status(r.clone(), json).encode();
            assert!(
                out.starts_with(b"ok\n"),
                "json={json}: {}",
                String::from_utf8_lossy(&out[..out.len().min(80)])
            );
        }
    }

    #[test]
    fn retain_service_filters_or_reports_absence() {
        let mut r = sample();
        assert!(!r.retain_service("nope"));
        assert_eq!(r.services.len(), 2);
        assert!(r.retain_service("broken"));
        assert_eq!(r.services.len(), 1);
        assert_eq!(r.services[0].name, "broken");
    }

    #[test]
    fn ages_are_compact() {
        assert_eq!(format_ms(0), "0ms");
        assert_eq!(format_ms(850), "850ms");
        assert_eq!(format_ms(12_345), "12.3s");
        assert_eq!(format_ms(312_000), "5m12s");
        assert_eq!(format_ms(3 * 3_600_000 + 5 * 60_000), "3h05m");
        assert_eq!(format_ms(2 * 86_400_000 + 3 * 3_600_000), "2d03h");
    }
}
