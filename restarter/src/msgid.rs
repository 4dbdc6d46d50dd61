//! MSGIDs and structured data for the supervisor's log lines (issue 16,
//! `[log] format = "rfc5424"`).
//!
//! The supervisor hands the shell finished sentences (`Action::Log`); the
//! MSGID vocabulary (`tether_common::logging::MsgId`) is chosen by the
//! `log` target. Until the supervisor's notes are typed (STYLE.md §6, a
//! `Note` with its own target), this maps the few sentence shapes a
//! collector filters on, all of the form `service NAME ...` (a service
//! name has no space or colon), to a target and key-values:
//!
//! | sentence | MSGID | structured data |
//! |---|---|---|
//! | `service N exited: exit 3 after 2s` | `EXIT` | `service`, `code` or `signal` (+`core`) |
//! | `service N stopped: signal TERM after 5s[; ...]` | `STOP` | the same |
//! | `service N started (pid P)`, `service N adopted (pid P, ...)` | `START` | `service`, `pid` |
//! | `service N ready ...`, `service N: restarting in ...`, `service N: not restarted (...)` | `STATE` | `service` |
//! | `service N: configuration error: ...`, `service N: configuration fixed` | `CONFIG` | `service` |
//!
//! Anything else is `LOG`. The integration test `msgid.rs` runs the real
//! chain and checks the EXIT, START and LIVENESS lines, so a changed
//! sentence fails a test instead of silently losing its MSGID.

use log::Level;

/// What a sentence is, for its MSGID and structured data.
#[derive(Debug, PartialEq, Eq)]
pub struct Kind<'a> {
    /// The `log` target (`exit`, `stop`, `start`, `state`, `config`, or
    /// `""` for `LOG`).
    pub target: &'static str,
    pub service: &'a str,
    pub pid: &'a str,
    pub code: &'a str,
    pub signal: &'a str,
    pub core: bool,
}

/// Classifies one supervisor sentence.
pub fn classify(message: &str) -> Kind<'_> {
    let mut k = Kind {
        target: "",
        service: "",
        pid: "",
        code: "",
        signal: "",
        core: false,
    };
    let Some(rest) = message.strip_prefix("service ") else {
        return k;
    };
    let end = rest.find([' ', ':']).unwrap_or(rest.len());
    let (name, tail) = rest.split_at(end);
    let exit = |how: &'static str| -> Option<&str> { tail.strip_prefix(how) };
    if let Some(how) = exit(" exited: ")
        .map(|h| ("exit", h))
        .or_else(|| exit(" stopped: ").map(|h| ("stop", h)))
    {
        let (target, how) = how;
        k.target = target;
        if let Some(c) = how.strip_prefix("exit ") {
            k.code = c
                .split(' ')
                .next()
                .filter(|c| c.parse::<i32>().is_ok())
                .unwrap_or("");
        } else if let Some(s) = how.strip_prefix("signal ") {
            k.signal = s.split(' ').next().unwrap_or("");
            k.core = s.contains("(core dumped)");
        }
    } else if let Some(p) = tail
        .strip_prefix(" started (pid ")
        .or_else(|| tail.strip_prefix(" adopted (pid "))
    {
        k.target = "start";
        k.pid = p.split([')', ',']).next().unwrap_or("");
    } else if tail.starts_with(" ready ")
        || tail.starts_with(": restarting in ")
        || tail.starts_with(": not restarted ")
    {
        k.target = "state";
    } else if tail.starts_with(": configuration ") {
        k.target = "config";
    } else {
        return k;
    }
    k.service = name;
    k
}

/// Logs a supervisor sentence with its MSGID and structured data.
pub fn log(level: Level, message: &str) {
    let k = classify(message);
    match k.target {
        "exit" | "stop" => log::log!(
            target: k.target,
            level,
            service = k.service,
            code = k.code,
            signal = k.signal,
            core = if k.core { "1" } else { "" };
            "{message}"
        ),
        "start" => log::log!(
            target: "start",
            level,
            service = k.service,
            pid = k.pid;
            "{message}"
        ),
        "state" => log::log!(target: "state", level, service = k.service; "{message}"),
        "config" => log::log!(target: "config", level, service = k.service; "{message}"),
        _ => log::log!(level, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentences_collectors_filter_on_get_their_msgid_and_fields() {
        let k = classify("service web exited: exit 3 after 2.0s");
        assert_eq!(
            (k.target, k.service, k.code, k.signal),
            ("exit", "web", "3", "")
        );
        let k = classify("service db-1 exited: signal SEGV (core dumped) after 10s");
        assert_eq!(
            (k.target, k.service, k.signal, k.core),
            ("exit", "db-1", "SEGV", true)
        );
        let k = classify("service a exited: signal ABRT (watchdog) after 1s");
        assert_eq!((k.signal, k.core), ("ABRT", false));
        let k = classify("service a exited: exit status unknown after 1s");
        assert_eq!((k.target, k.code, k.signal), ("exit", "", ""));
        let k = classify("service a stopped: signal TERM after 5s; removed");
        assert_eq!((k.target, k.signal), ("stop", "TERM"));
        let k = classify("service a started (pid 1234)");
        assert_eq!((k.target, k.service, k.pid), ("start", "a", "1234"));
        let k = classify("service a adopted (pid 77, up 3s, 0 restart(s))");
        assert_eq!((k.target, k.pid), ("start", "77"));
        assert_eq!(
            classify("service a ready (READY=1 from pid 5)").target,
            "state"
        );
        assert_eq!(classify("service a: restarting in 1s").target, "state");
        assert_eq!(
            classify("service a: configuration error: a.toml:1:1: bad").target,
            "config"
        );
        for other in [
            "service a: start requested",
            "service a status: hello",
            "every service stopped: exiting",
            "services loaded",
        ] {
            let k = classify(other);
            assert_eq!((k.target, k.service), ("", ""), "{other}");
        }
    }
}
