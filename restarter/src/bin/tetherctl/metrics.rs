//! `tetherctl metrics [--config FILE]`: the `tether_` series the restarter
//! writes to `[metrics] textfile_dir/tether.prom`, printed to stdout
//! (issue 16), whether or not a textfile directory is configured.
//!
//! The same renderer (`tether_restarter::metrics::render`) over the same
//! inputs: the restarter's status report (asked over the control socket,
//! `status --json`: anyone may ask), `RUN/watchdog.status` as watchdogd
//! publishes it, and the stale timeouts of `--config` (default
//! `/etc/tether/tether.toml`; a missing or bad file means the defaults,
//! said on stderr). Ages are computed at the moment tetherctl renders.
//! A missing `watchdog.status` (no watchdogd) leaves out the layer and
//! watchdog series, as in the file. Exit codes as for `status`.

use super::{classify, talk, Answer, EXIT_ERROR, EXIT_NO_ANSWER, EXIT_OK, SOCKET_NAME, TIMEOUT};
use std::io::Write;
use std::path::Path;
use tether_common::clock::MonoTime;
use tether_common::config::Config;
use tether_common::record;
use tether_restarter::control::StatusReport;
use tether_restarter::metrics;

pub fn run(run_dir: &Path, config_path: &Path, out: &mut impl Write) -> std::io::Result<u8> {
    let (config, err) = Config::load_or_default(config_path);
    if let Some(e) = err {
        eprintln!("tetherctl: {e}; using the default stale timeouts");
    }
    let socket = run_dir.join(SOCKET_NAME);
    let answer = match talk(&socket, "status --json", TIMEOUT) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tetherctl: {}: {e}", socket.display());
            return Ok(EXIT_NO_ANSWER);
        }
    };
    let report: StatusReport = match classify(&answer) {
        Answer::Ok(body) => match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("tetherctl: {}: status is not JSON: {e}", socket.display());
                return Ok(EXIT_NO_ANSWER);
            }
        },
        Answer::Error(msg) => {
            eprintln!("tetherctl: {msg}");
            return Ok(EXIT_ERROR);
        }
        Answer::Garbled => {
            eprintln!("tetherctl: {}: unexpected answer", socket.display());
            return Ok(EXIT_NO_ANSWER);
        }
    };
    let watchdog = match record::read_watchdog_status(run_dir) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("tetherctl: {e}; no layer or watchdog series");
            None
        }
    };
    let stale = |l: &str| config.timing.stale_timeout_for(l);
    let text = metrics::render(&metrics::Input {
        version: env!("CARGO_PKG_VERSION"),
        now_ms: MonoTime::now().as_duration().as_millis() as u64,
        status: &report,
        watchdog: watchdog.as_ref(),
        stale_timeout: &stale,
    });
    out.write_all(text.as_bytes())?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::super::{parse_args, Command};
    use std::path::PathBuf;

    fn parse(args: &[&str]) -> Result<Command, String> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_args(&v).map(|a| a.command)
    }

    #[test]
    fn metrics_takes_a_config_and_nothing_else() {
        assert_eq!(
            parse(&["metrics"]),
            Ok(Command::Metrics {
                config: PathBuf::from(tether_common::config::DEFAULT_CONFIG)
            })
        );
        assert_eq!(
            parse(&["--config", "/x.toml", "metrics"]),
            Ok(Command::Metrics {
                config: PathBuf::from("/x.toml")
            })
        );
        for bad in [&["metrics", "web"][..], &["metrics", "--json"]] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
