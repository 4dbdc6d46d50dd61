//! Requests and signals, one vocabulary (STYLE.md, section 2): a control
//! request and a signal both become a [`Command`], or are refused or
//! ignored with a reason, by the two pure functions below. The shell
//! (`event_loop`) only carries the command out: SIGHUP and `tetherctl
//! reload` are one `Reload`, SIGTERM and SIGINT one `Terminate`.
//!
//! Rules (decisions of the shell as it was, now in one place):
//! - Before the leftover sweep of a previous restarter is over ("not
//!   loaded"), every request but `status` is refused, and SIGHUP is ignored
//!   (the files are read when the sweep ends). SIGTERM is obeyed at any
//!   time (the sweep is abandoned).
//! - A SIGTERM/SIGINT while shutting down is ignored (once is enough).

use super::protocol::{Layer, Request};
use tether_common::heartbeat::Code;

/// What a service request asks of one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Start,
    Stop,
    Restart,
}

/// Something for the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Status {
        name: Option<String>,
        json: bool,
    },
    Service {
        name: String,
        want: Want,
    },
    Signal {
        name: String,
        signal: i32,
    },
    Reload,
    Upgrade(Layer),
    /// Ask init for a reboot, poweroff or halt: the heartbeat code and its
    /// word (`tetherctl WORD`).
    Shutdown {
        code: Code,
        word: &'static str,
    },
    /// Stop every service, then exit (SIGTERM, SIGINT).
    Terminate,
}

/// A request or signal, mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapped {
    Run(Command),
    /// Answered with this error, nothing done.
    Refuse(&'static str),
    /// Logged (info) and dropped.
    Ignore(String),
}

/// What the restarter's state allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// The services are loaded (the leftover sweep is over).
    pub loaded: bool,
    /// A shutdown has begun.
    pub shutting_down: bool,
}

/// Refusal of a state-changing request before the services are loaded.
pub const NOT_LOADED: &str = "starting: stopping leftovers of a previous restarter";

/// A control request → its command.
pub fn request(req: &Request, cx: Context) -> Mapped {
    if !cx.loaded && req.changes_state() {
        return Mapped::Refuse(NOT_LOADED);
    }
    let service = |name: &String, want| Command::Service {
        name: name.clone(),
        want,
    };
    Mapped::Run(match req {
        Request::Status { name, json } => Command::Status {
            name: name.clone(),
            json: *json,
        },
        Request::Start(n) => service(n, Want::Start),
        Request::Stop(n) => service(n, Want::Stop),
        Request::Restart(n) => service(n, Want::Restart),
        Request::Signal(n, sig) => Command::Signal {
            name: n.clone(),
            signal: *sig,
        },
        Request::Reload => Command::Reload,
        Request::Upgrade(layer) => Command::Upgrade(*layer),
        Request::Reboot => Command::Shutdown {
            code: Code::Reboot,
            word: "reboot",
        },
        Request::Poweroff => Command::Shutdown {
            code: Code::Poweroff,
            word: "poweroff",
        },
        Request::Halt => Command::Shutdown {
            code: Code::Halt,
            word: "halt",
        },
    })
}

/// A signal the restarter handles (`SIGCHLD` is not a command: the shell
/// reaps) → its command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    Hup,
    /// SIGTERM or SIGINT, by name for the log.
    Term(&'static str),
}

pub fn signal(sig: Sig, cx: Context) -> Mapped {
    match sig {
        Sig::Hup if !cx.loaded => Mapped::Ignore(
            "SIGHUP before the services were loaded: ignored (they are read when the leftover sweep ends)"
                .into(),
        ),
        Sig::Hup => Mapped::Run(Command::Reload),
        Sig::Term(name) if cx.shutting_down => {
            Mapped::Ignore(format!("{name}: already shutting down"))
        }
        Sig::Term(_) => Mapped::Run(Command::Terminate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOADED: Context = Context {
        loaded: true,
        shutting_down: false,
    };
    const SWEEPING: Context = Context {
        loaded: false,
        shutting_down: false,
    };
    const STOPPING: Context = Context {
        loaded: true,
        shutting_down: true,
    };

    fn run(c: Command) -> Mapped {
        Mapped::Run(c)
    }

    fn svc(name: &str, want: Want) -> Command {
        Command::Service {
            name: name.into(),
            want,
        }
    }

    #[test]
    fn requests_map_to_commands() {
        let status = Request::Status {
            name: Some("a".into()),
            json: true,
        };
        let table: Vec<(Request, Context, Mapped)> = vec![
            (
                status.clone(),
                LOADED,
                run(Command::Status {
                    name: Some("a".into()),
                    json: true,
                }),
            ),
            (
                status,
                SWEEPING,
                run(Command::Status {
                    name: Some("a".into()),
                    json: true,
                }),
            ),
            (
                Request::Start("a".into()),
                LOADED,
                run(svc("a", Want::Start)),
            ),
            (Request::Stop("a".into()), LOADED, run(svc("a", Want::Stop))),
            (
                Request::Restart("a".into()),
                LOADED,
                run(svc("a", Want::Restart)),
            ),
            (
                Request::Signal("a".into(), 10),
                LOADED,
                run(Command::Signal {
                    name: "a".into(),
                    signal: 10,
                }),
            ),
            (Request::Reload, LOADED, run(Command::Reload)),
            (
                Request::Upgrade(Layer::Init),
                LOADED,
                run(Command::Upgrade(Layer::Init)),
            ),
            (
                Request::Reboot,
                LOADED,
                run(Command::Shutdown {
                    code: Code::Reboot,
                    word: "reboot",
                }),
            ),
            (
                Request::Poweroff,
                LOADED,
                run(Command::Shutdown {
                    code: Code::Poweroff,
                    word: "poweroff",
                }),
            ),
            (
                Request::Halt,
                STOPPING,
                run(Command::Shutdown {
                    code: Code::Halt,
                    word: "halt",
                }),
            ),
            (
                Request::Start("a".into()),
                SWEEPING,
                Mapped::Refuse(NOT_LOADED),
            ),
            (Request::Reload, SWEEPING, Mapped::Refuse(NOT_LOADED)),
            (Request::Reboot, SWEEPING, Mapped::Refuse(NOT_LOADED)),
            (
                Request::Upgrade(Layer::Restarter),
                SWEEPING,
                Mapped::Refuse(NOT_LOADED),
            ),
        ];
        for (req, cx, want) in table {
            assert_eq!(request(&req, cx), want, "{req} in {cx:?}");
        }
    }

    #[test]
    fn signals_map_to_the_same_commands() {
        let table = [
            (Sig::Hup, LOADED, run(Command::Reload)),
            (Sig::Hup, STOPPING, run(Command::Reload)),
            (Sig::Term("SIGTERM"), LOADED, run(Command::Terminate)),
            (Sig::Term("SIGINT"), SWEEPING, run(Command::Terminate)),
            (
                Sig::Term("SIGTERM"),
                STOPPING,
                Mapped::Ignore("SIGTERM: already shutting down".into()),
            ),
        ];
        for (sig, cx, want) in table {
            assert_eq!(signal(sig, cx), want, "{sig:?} in {cx:?}");
        }
        assert!(
            matches!(signal(Sig::Hup, SWEEPING), Mapped::Ignore(m) if m.starts_with("SIGHUP before"))
        );
        // SIGHUP and `tetherctl reload` are one command.
        assert_eq!(signal(Sig::Hup, LOADED), request(&Request::Reload, LOADED));
    }
}
