//! `tetherctl`: the command-line client of the restarter's control socket,
//! and the offline checker of the configuration (`check`).
//!
//! A blocking client is fine here (it is a CLI), but every step is bounded
//! by one overall timeout ([`TIMEOUT`], via `SO_SNDTIMEO`/`SO_RCVTIMEO`,
//! which also bound `connect` on a unix socket whose backlog is full).
//!
//! Decisions where the interface is silent:
//! - Options may come anywhere on the line; `--` ends them.
//! - The request is validated locally with the server's own parser, so a
//!   typo is a usage error (exit 2) without connecting.
//! - Exit 3 covers every failure to get an answer: cannot connect, timed
//!   out, connection closed without an answer, or an answer that is not
//!   `ok`/`error:`.
//! - `check` prints its findings on stdout (it is a report), ends with a
//!   summary line, and exits 1 when anything is wrong. When `tether.toml`
//!   itself is invalid the services are not checked (their directory comes
//!   from it) and no budget is printed.

#![forbid(unsafe_code)] // `unsafe` lives only in tether_common::sys
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tether_restarter::control::{parse_request, Request, MAX_RESPONSE};

#[path = "tetherctl/import.rs"]
mod import;

const DEFAULT_RUN_DIR: &str = "/run/tether";
const SOCKET_NAME: &str = "control.sock";
/// Longest wait for the whole exchange with the restarter.
const TIMEOUT: Duration = Duration::from_secs(10);

const EXIT_OK: u8 = 0;
const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NO_ANSWER: u8 = 3;

const HELP: &str = "\
tetherctl: control the tether restarter and check its configuration

usage:
  tetherctl [--run-dir DIR] COMMAND

commands:
  status [NAME] [--json]   services and their state (anyone may ask)
  start NAME               start a stopped service
  stop NAME                stop a service (it stays stopped)
  restart NAME             stop, then start a service
  signal NAME SIG          send SIG (TERM, SIGTERM or a number) to the service
  reload                   re-read the service files (all or nothing)
  reboot                   orderly reboot of the machine
  poweroff                 orderly poweroff
  halt                     orderly halt
  upgrade restarter        the restarter re-executes its binary in place:
                           services keep running, their pids and state
  upgrade init             init re-executes its binary in place
  upgrade watchdogd        init restarts watchdogd (the hardware stays armed)
  check [--config FILE]    check tether.toml (default /etc/tether/tether.toml)
                           and the service files offline, print the timing budget
  history [--json] [--config FILE | --state-dir DIR]
                           the last boots and how each ended (reset history)
  import FILE|DIR... [--out DIR] [--root DIR] [--force]
                           systemd units, runit/s6 service directories into
                           tether service files in DIR (default .), with a
                           report of every directive; --root: where the
                           units' EnvironmentFile= paths are read

All but status and check need root or the group of [control] group.

options:
  --run-dir DIR   the restarter's runtime directory (default /run/tether);
                  the socket is DIR/control.sock
  --help, -h      this text
  --version       the version

exit codes:
  0  ok
  1  the restarter answered with an error (message on stderr),
     or check found errors
  2  usage error
  3  no answer: cannot connect to the control socket, timed out,
     or the connection closed without an answer
";

#[derive(Debug, PartialEq)]
enum Command {
    Remote(Request),
    Check {
        config: PathBuf,
    },
    /// `history [--json]`: the reset history in the state directory.
    History {
        config: PathBuf,
        state_dir: Option<PathBuf>,
        json: bool,
    },
    Help,
    Version,
}

#[derive(Debug, PartialEq)]
struct Args {
    run_dir: PathBuf,
    command: Command,
}

/// Parses the command line (without the program name).
fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut run_dir = PathBuf::from(DEFAULT_RUN_DIR);
    let mut config = None;
    let mut state_dir: Option<PathBuf> = None;
    let mut json = false;
    let mut words: Vec<&str> = Vec::new();
    let mut it = args.iter();
    let mut options_done = false;
    while let Some(arg) = it.next() {
        let arg = arg.as_str();
        if options_done || !arg.starts_with('-') || arg == "-" {
            words.push(arg);
            continue;
        }
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v)),
            _ => (arg, None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            match inline {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                Some(_) => Err(format!("{key}: empty {what}")),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{key} needs a {what}")),
            }
        };
        match key {
            "--" => options_done = true,
            "--help" | "-h" => {
                return Ok(Args {
                    run_dir,
                    command: Command::Help,
                })
            }
            "--version" => {
                return Ok(Args {
                    run_dir,
                    command: Command::Version,
                })
            }
            "--run-dir" => run_dir = PathBuf::from(value("directory")?),
            "--config" => config = Some(PathBuf::from(value("file")?)),
            "--state-dir" => state_dir = Some(PathBuf::from(value("directory")?)),
            "--json" if inline.is_none() => json = true,
            _ => return Err(format!("unknown option {arg:?}")),
        }
    }
    let Some((&command, rest)) = words.split_first() else {
        return Err("missing command".into());
    };
    if command == "help" {
        return Ok(Args {
            run_dir,
            command: Command::Help,
        });
    }
    if command == "history" {
        if let Some(extra) = rest.first() {
            return Err(format!("history: unexpected argument {extra:?}"));
        }
        let config = config.unwrap_or_else(|| PathBuf::from(tether_common::config::DEFAULT_CONFIG));
        return Ok(Args {
            run_dir,
            command: Command::History {
                config,
                state_dir,
                json,
            },
        });
    }
    if state_dir.is_some() {
        return Err("--state-dir goes with history only".into());
    }
    if command == "check" {
        if let Some(extra) = rest.first() {
            return Err(format!("check: unexpected argument {extra:?}"));
        }
        if json {
            return Err("--json goes with status only".into());
        }
        let config = config.unwrap_or_else(|| PathBuf::from(tether_common::config::DEFAULT_CONFIG));
        return Ok(Args {
            run_dir,
            command: Command::Check { config },
        });
    }
    if config.is_some() {
        return Err("--config goes with check only".into());
    }
    if json && command != "status" {
        return Err("--json goes with status only".into());
    }
    let mut line = words.join(" ");
    if json {
        line.push_str(" --json");
    }
    let request = parse_request(line.as_bytes()).map_err(|e| e.to_string())?;
    Ok(Args {
        run_dir,
        command: Command::Remote(request),
    })
}

/// Why no answer came back.
#[derive(Debug)]
enum TalkError {
    Connect(nix::errno::Errno),
    Io(&'static str, std::io::Error),
    TimedOut,
    TooLarge,
}

impl std::fmt::Display for TalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TalkError::Connect(nix::errno::Errno::EAGAIN) => {
                write!(
                    f,
                    "EAGAIN: timed out after {}s (restarter busy or hung)",
                    TIMEOUT.as_secs()
                )
            }
            TalkError::Connect(
                e @ (nix::errno::Errno::ENOENT | nix::errno::Errno::ECONNREFUSED),
            ) => {
                write!(f, "{e} (is tether-restarter running?)")
            }
            TalkError::Connect(e) => write!(f, "{e}"),
            TalkError::Io(what, e) => write!(f, "{what}: {e}"),
            TalkError::TimedOut => write!(f, "no complete answer within {}s", TIMEOUT.as_secs()),
            TalkError::TooLarge => write!(f, "answer larger than {MAX_RESPONSE} bytes"),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Connects to `socket`, sends `line` and returns everything the server
/// wrote before closing.
fn talk(socket: &Path, line: &str, timeout: Duration) -> Result<Vec<u8>, TalkError> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
    use nix::sys::time::TimeVal;
    let start = Instant::now();
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(TalkError::Connect)?;
    let tv = TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
    socket::setsockopt(&fd, sockopt::SendTimeout, &tv).map_err(TalkError::Connect)?;
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(TalkError::Connect)?;
    let addr = UnixAddr::new(socket).map_err(TalkError::Connect)?;
    loop {
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(TalkError::Connect(e)),
        }
    }
    let mut stream = UnixStream::from(fd);
    let request = format!("{line}\n");
    stream.write_all(request.as_bytes()).map_err(|e| {
        if is_timeout(&e) {
            TalkError::TimedOut
        } else {
            TalkError::Io("sending the request", e)
        }
    })?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let left = timeout
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or(TalkError::TimedOut)?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| TalkError::Io("setting the timeout", e))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(answer),
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() > MAX_RESPONSE + 1024 {
                    return Err(TalkError::TooLarge);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The server closed with our input unread: what came is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !answer.is_empty() => {
                return Ok(answer)
            }
            Err(e) if is_timeout(&e) => return Err(TalkError::TimedOut),
            Err(e) => return Err(TalkError::Io("reading the answer", e)),
        }
    }
}

/// What to do with an answer: print the body (ok) or the message (error).
#[derive(Debug, PartialEq)]
enum Answer<'a> {
    Ok(&'a [u8]),
    Error(String),
    Garbled,
}

fn classify(answer: &[u8]) -> Answer<'_> {
    let (first, body) = match answer.iter().position(|&b| b == b'\n') {
        Some(i) => (&answer[..i], &answer[i + 1..]),
        None => (answer, &[][..]),
    };
    if first == b"ok" {
        Answer::Ok(body)
    } else if let Some(msg) = first.strip_prefix(b"error: ") {
        Answer::Error(String::from_utf8_lossy(msg).into_owned())
    } else {
        Answer::Garbled
    }
}

fn remote(run_dir: &Path, request: &Request) -> u8 {
    let socket = run_dir.join(SOCKET_NAME);
    let answer = match talk(&socket, &request.to_string(), TIMEOUT) {
        Ok(a) => a,
        Err(e @ TalkError::Connect(_)) => {
            eprintln!("tetherctl: cannot connect to {}: {e}", socket.display());
            return EXIT_NO_ANSWER;
        }
        Err(e) => {
            eprintln!("tetherctl: {}: {e}", socket.display());
            return EXIT_NO_ANSWER;
        }
    };
    match classify(&answer) {
        Answer::Ok(body) => {
            // A closed stdout (`| head`) is not an error of ours.
            let _ = std::io::stdout().lock().write_all(body);
            EXIT_OK
        }
        Answer::Error(msg) => {
            eprintln!("tetherctl: {msg}");
            EXIT_ERROR
        }
        Answer::Garbled if answer.is_empty() => {
            eprintln!(
                "tetherctl: {}: connection closed without an answer",
                socket.display()
            );
            EXIT_NO_ANSWER
        }
        Answer::Garbled => {
            let first =
                String::from_utf8_lossy(answer.split(|&b| b == b'\n').next().unwrap_or_default())
                    .into_owned();
            eprintln!(
                "tetherctl: {}: unexpected answer {first:?}",
                socket.display()
            );
            EXIT_NO_ANSWER
        }
    }
}

/// `history`: the reset history, oldest first. The state directory is
/// `--state-dir`, else `[paths] state` of `--config` (default
/// `/etc/tether/tether.toml`; a missing or bad file means the default
/// `/var/lib/tether`, said on stderr).
fn history(
    config_path: &Path,
    state_dir: Option<&Path>,
    json: bool,
    out: &mut impl Write,
) -> std::io::Result<u8> {
    use tether_common::record;
    let dir = match state_dir {
        Some(d) => d.to_path_buf(),
        None => {
            let (c, err) = tether_common::config::Config::load_or_default(config_path);
            if let Some(e) = err {
                eprintln!("tetherctl: {e}; using the default state directory");
            }
            c.paths.state
        }
    };
    let entries = match record::read_history(&dir) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("tetherctl: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    if json {
        out.write_all(history_json(&entries).as_bytes())?;
        return Ok(EXIT_OK);
    }
    if entries.is_empty() {
        writeln!(out, "no reset history in {}", dir.display())?;
        return Ok(EXIT_OK);
    }
    writeln!(
        out,
        "BOOT  ENDED (UTC, recorded)   CAUSE     LAYER      SILENT   DEVICE      DETAIL"
    )?;
    for e in &entries {
        let r = &e.record;
        let when = e.recorded.map_or("-".to_string(), record::format_utc);
        let silent = r
            .silent_ms
            .map_or("-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        let device = match e.boot_status {
            None => "-".to_string(),
            Some(b) if b & tether_common::watchdog_dev::WDIOF_CARDRESET != 0 => {
                "CARDRESET".to_string()
            }
            Some(b) => format!("0x{b:x}"),
        };
        let mut detail = String::new();
        if let Some(by) = &r.by {
            detail.push_str(&format!("by {by}"));
        }
        if let Some(d) = &r.detail {
            if !detail.is_empty() {
                detail.push_str(": ");
            }
            detail.push_str(d);
        }
        writeln!(
            out,
            "{:<5} {:<23} {:<9} {:<10} {:<8} {:<11} {}",
            r.boot.map_or("-".to_string(), |b| b.to_string()),
            when,
            r.cause.as_str(),
            r.layer.as_deref().unwrap_or("-"),
            silent,
            device,
            detail
        )?;
    }
    Ok(EXIT_OK)
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `history --json`: an array, oldest first; absent values are `null`.
fn history_json(entries: &[tether_common::record::HistoryEntry]) -> String {
    let num = |v: Option<u64>| v.map_or("null".to_string(), |n| n.to_string());
    let text = |v: &Option<String>| v.as_deref().map_or("null".to_string(), json_str);
    let mut s = String::from("[");
    for (i, e) in entries.iter().enumerate() {
        let r = &e.record;
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "\n{{\"boot\":{},\"cause\":{},\"layer\":{},\"silent_ms\":{},\"by\":{},\"detail\":{},\"recorded\":{},\"recorded_utc\":{},\"boot_status\":{},\"cardreset\":{},\"seen\":{},\"next_boot\":{}}}",
            num(r.boot),
            json_str(r.cause.as_str()),
            text(&r.layer),
            num(r.silent_ms),
            text(&r.by),
            text(&r.detail),
            num(e.recorded),
            e.recorded.map_or("null".to_string(), |t| json_str(&tether_common::record::format_utc(t))),
            num(e.boot_status.map(u64::from)),
            e.boot_status.map_or("null", |b| if b & tether_common::watchdog_dev::WDIOF_CARDRESET != 0 { "true" } else { "false" }),
            num(e.seen),
            num(e.next_boot),
        ));
    }
    s.push_str("\n]\n");
    s
}

/// `check`: the configuration, the service files, the timing budget.
fn check(config_path: &Path, out: &mut impl Write) -> std::io::Result<u8> {
    use tether_common::budget;
    use tether_common::config::Config;
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            writeln!(out, "error: {e}")?;
            writeln!(
                out,
                "services not checked: their directory is set in {}",
                config_path.display()
            )?;
            writeln!(out, "check failed: {} is invalid", config_path.display())?;
            return Ok(EXIT_ERROR);
        }
    };
    writeln!(out, "{}: ok", config_path.display())?;
    let dir = &config.paths.services;
    let set = tether_restarter::service::load_dir(dir);
    let mut errors = 0;
    if let Some(e) = &set.dir_error {
        writeln!(out, "error: {e}")?;
        errors += 1;
    }
    for (name, e) in &set.errors {
        writeln!(out, "error: service {name}: {e}")?;
        errors += 1;
    }
    for spec in &set.specs {
        writeln!(out, "service {}: ok", spec.name)?;
    }
    writeln!(
        out,
        "{}: {} services ok, {} with errors",
        dir.display(),
        set.specs.len(),
        set.errors.len()
    )?;
    let mut rows = budget::table(&config);
    rows.extend(tether_restarter::supervisor::service_budget_rows(
        &set.specs,
    ));
    writeln!(out, "\ntiming budget (worst case from fault to outcome):")?;
    write!(out, "{}", budget::render_table(&rows))?;
    writeln!(out, "{}", budget::FROM_WHEN)?;
    if errors > 0 {
        writeln!(out, "\ncheck failed: {errors} error(s)")?;
        Ok(EXIT_ERROR)
    } else {
        writeln!(out, "\ncheck passed")?;
        Ok(EXIT_OK)
    }
}

fn main() -> ExitCode {
    // `std::env::args` panics on an argument that is not UTF-8.
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect()
    {
        Ok(a) => a,
        Err(a) => {
            eprintln!("tetherctl: argument {a:?} is not UTF-8 (see tetherctl --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.first().map(String::as_str) == Some("import") {
        return import::main(&args[1..]);
    }
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tetherctl: {e} (see tetherctl --help)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let code = match args.command {
        Command::Help => {
            let _ = std::io::stdout().write_all(HELP.as_bytes());
            EXIT_OK
        }
        Command::History {
            config,
            state_dir,
            json,
        } => history(&config, state_dir.as_deref(), json, &mut std::io::stdout())
            .unwrap_or(EXIT_ERROR),
        Command::Version => {
            println!("tetherctl {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        Command::Remote(request) => remote(&args.run_dir, &request),
        Command::Check { config } => {
            let stdout = std::io::stdout();
            // A closed stdout still leaves the verdict in the exit code.
            check(&config, &mut stdout.lock()).unwrap_or(EXIT_ERROR)
        }
    };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn remote_req(args: &[&str]) -> Request {
        match parse(args).unwrap().command {
            Command::Remote(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_command_becomes_its_request() {
        assert_eq!(
            remote_req(&["status"]),
            Request::Status {
                name: None,
                json: false
            }
        );
        assert_eq!(
            remote_req(&["status", "--json"]),
            Request::Status {
                name: None,
                json: true
            }
        );
        assert_eq!(
            remote_req(&["--json", "status", "web"]),
            Request::Status {
                name: Some("web".into()),
                json: true
            }
        );
        assert_eq!(remote_req(&["start", "web"]), Request::Start("web".into()));
        assert_eq!(remote_req(&["stop", "web"]), Request::Stop("web".into()));
        assert_eq!(
            remote_req(&["restart", "web"]),
            Request::Restart("web".into())
        );
        assert_eq!(
            remote_req(&["signal", "web", "HUP"]),
            Request::Signal("web".into(), libc::SIGHUP)
        );
        for (w, r) in [
            ("reload", Request::Reload),
            ("reboot", Request::Reboot),
            ("poweroff", Request::Poweroff),
            ("halt", Request::Halt),
        ] {
            assert_eq!(remote_req(&[w]), r);
        }
        use tether_restarter::control::Layer;
        for (w, l) in [
            ("init", Layer::Init),
            ("restarter", Layer::Restarter),
            ("watchdogd", Layer::Watchdogd),
        ] {
            assert_eq!(remote_req(&["upgrade", w]), Request::Upgrade(l));
        }
    }

    #[test]
    fn run_dir_and_config_options_anywhere() {
        let a = parse(&["--run-dir", "/tmp/x", "status"]).unwrap();
        assert_eq!(a.run_dir, PathBuf::from("/tmp/x"));
        let a = parse(&["status", "--run-dir=/tmp/y"]).unwrap();
        assert_eq!(a.run_dir, PathBuf::from("/tmp/y"));
        assert_eq!(
            parse(&["status"]).unwrap().run_dir,
            PathBuf::from("/run/tether")
        );
        assert_eq!(
            parse(&["check"]).unwrap().command,
            Command::Check {
                config: "/etc/tether/tether.toml".into()
            }
        );
        assert_eq!(
            parse(&["check", "--config", "/a.toml"]).unwrap().command,
            Command::Check {
                config: "/a.toml".into()
            }
        );
        assert_eq!(parse(&["--help"]).unwrap().command, Command::Help);
        assert_eq!(parse(&["stop", "-h"]).unwrap().command, Command::Help);
        assert_eq!(parse(&["help"]).unwrap().command, Command::Help);
    }

    #[test]
    fn usage_errors_are_refused_before_connecting() {
        for bad in [
            &[][..],
            &["frobnicate"],
            &["stop"],
            &["stop", "a/b"],
            &["stop", "a", "b"],
            &["signal", "web", "NOPE"],
            &["--run-dir"],
            &["--run-dir="],
            &["--bogus", "status"],
            &["stop", "--json", "web"],
            &["status", "--config", "x"],
            &["check", "extra"],
            &["check", "--json"],
            &["--json=1", "status"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse(&["frobnicate"])
            .unwrap_err()
            .contains("unknown command \"frobnicate\""));
    }

    #[test]
    fn answers_are_ok_error_or_garbled() {
        assert_eq!(classify(b"ok\n"), Answer::Ok(b""));
        assert_eq!(classify(b"ok\nbody\n"), Answer::Ok(b"body\n"));
        assert_eq!(classify(b"ok"), Answer::Ok(b""));
        assert_eq!(
            classify(b"error: permission denied\n"),
            Answer::Error("permission denied".into())
        );
        assert_eq!(classify(b""), Answer::Garbled);
        assert_eq!(classify(b"okay\n"), Answer::Garbled);
    }

    /// A control server in a thread answering each request with `answer`
    /// (or never, for `None`), until the returned sender is dropped.
    fn serve(
        dir: &Path,
        answer: Option<tether_restarter::control::Response>,
    ) -> (
        PathBuf,
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<Vec<Request>>,
    ) {
        use tether_common::clock::MonoTime;
        use tether_restarter::control::Server;
        let _ = std::fs::create_dir_all(dir);
        let sock = dir.join(SOCKET_NAME);
        let mut server = Server::bind(&sock, None).unwrap();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while stopped.try_recv() == Err(std::sync::mpsc::TryRecvError::Empty) {
                for inc in server.poll(MonoTime::now()) {
                    seen.push(inc.request.clone());
                    if let Some(a) = &answer {
                        server.reply(inc.client, a.clone());
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        });
        (sock, stop, handle)
    }

    fn scratch(label: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tetherctl-test-{label}-{}", std::process::id()))
    }

    #[test]
    fn talk_returns_the_whole_answer() {
        use tether_restarter::control::Response;
        let dir = scratch("answer");
        let (sock, stop, handle) = serve(&dir, Some(Response::Ok("a\nb".into())));
        let answer = talk(&sock, "stop web", Duration::from_secs(5)).unwrap();
        assert_eq!(answer, b"ok\na\nb\n");
        drop(stop);
        assert_eq!(handle.join().unwrap(), [Request::Stop("web".into())]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn talk_times_out_when_the_server_never_answers() {
        let dir = scratch("silent");
        let (sock, stop, handle) = serve(&dir, None);
        let start = Instant::now();
        let err = talk(&sock, "reload", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, TalkError::TimedOut), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(stop);
        handle.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn talk_names_the_errno_when_nobody_listens() {
        let dir = scratch("none");
        let err = talk(&dir.join(SOCKET_NAME), "status", Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err, TalkError::Connect(nix::errno::Errno::ENOENT)),
            "{err}"
        );
        assert!(err.to_string().starts_with("ENOENT: "), "{err}");
    }

    #[test]
    fn help_documents_every_exit_code() {
        for code in [
            "0  ok",
            "1  the restarter answered with an error",
            "2  usage error",
            "3  no answer",
        ] {
            assert!(HELP.contains(code), "{code}");
        }
    }
}
