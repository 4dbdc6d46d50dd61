//! tether: `tether-restarter --config DIR/tether.toml [--no-cgroup]` over
//! `DIR/services/svcI.toml` (`exec = [BLOCKER, "I"]`, `notify = "ready"`,
//! `restart_delay` as asked). Supervision process: the restarter alone.
//!
//! The restarter gets heartbeat pipes at fds 3 and 4
//! (`TETHER_FDS=init=3,watchdog=4`) whose read ends the benchmark times,
//! and a syslog socket of the benchmark's (`kmsg = false`,
//! `stderr = false`): its `exited`/`ready` lines time detection and
//! readiness.
//!
//! Cgroups: off by default (`--no-cgroup`), as runit and s6 use none; the
//! `cgroups` flag leaves the restarter's own detection on (it uses cgroup v2
//! only where `/sys/fs/cgroup` is a cgroup2 mount).

use crate::adapter::{service_name, Common, Prepared, Probes, Supervisor};
use crate::events::{Beats, SyslogSink};
use crate::ns::Launch;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Tether {
    pub restarter: PathBuf,
    /// Per-service `restart_delay` (`"0s"`, `"1s"`).
    pub restart_delay: String,
    pub beat_interval: Duration,
    pub cgroups: bool,
}

impl Supervisor for Tether {
    fn label(&self) -> String {
        if self.restart_delay == "0s" {
            "tether".into()
        } else {
            format!("tether (restart_delay {})", self.restart_delay)
        }
    }

    fn prepare(
        &self,
        dir: &Path,
        n: usize,
        common: &Common,
        env: &[(String, String)],
    ) -> Result<Prepared, String> {
        let services = dir.join("services");
        let run = dir.join("run");
        let state = dir.join("state");
        for d in [&services, &run, &state] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let log = dir.join("log.sock");
        let syslog = SyslogSink::bind(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let config = dir.join("tether.toml");
        let toml = format!(
            "[timing]\nbeat_interval = \"{}ms\"\n\n[log]\nsyslog_socket = {:?}\nkmsg = false\nstderr = false\n\n\
             [paths]\nservices = {:?}\nrun = {:?}\nstate = {:?}\n",
            self.beat_interval.as_millis(),
            log.display().to_string(),
            services.display().to_string(),
            run.display().to_string(),
            state.display().to_string(),
        );
        std::fs::write(&config, toml).map_err(|e| format!("{}: {e}", config.display()))?;
        for i in 0..n {
            let text = format!(
                "exec = [{:?}, \"{i}\"]\nrestart_delay = {:?}\nnotify = \"ready\"\n",
                common.blocker.display().to_string(),
                self.restart_delay
            );
            let path = services.join(format!("{}.toml", service_name(i)));
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let mut fds = Vec::new();
        let mut beats = Vec::new();
        for (name, target) in [("init", 3), ("watchdog", 4)] {
            // Read end blocking (a thread waits on it), write end as init
            // makes it; both close-on-exec until handed over.
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("pipe2: {e}"))?;
            tether_common::sys::set_nonblocking(std::os::fd::AsFd::as_fd(&w), true)
                .map_err(|e| format!("O_NONBLOCK: {e}"))?;
            beats.push(Beats::spawn(name, r));
            fds.push((w, target));
        }
        let mut env = env.to_vec();
        env.push(("TETHER_FDS".into(), "init=3,watchdog=4".into()));
        let mut args = vec!["--config".into(), config.into_os_string()];
        if !self.cgroups {
            args.push("--no-cgroup".into());
        }
        Ok(Prepared {
            launch: Launch {
                program: self.restarter.clone(),
                args,
                env,
                fds,
                output: dir.join("supervisor.out"),
            },
            probes: Probes {
                syslog: Some(syslog),
                beats,
                beat_interval: Some(self.beat_interval),
            },
        })
    }

    fn supervision_pids(&self, root: i32) -> Vec<i32> {
        vec![root]
    }
}
