//! The common face of the supervisors under test. Each adapter writes its
//! service tree for N services (every service runs `bench_blocker INDEX`),
//! says what to run as PID 1 of the namespace, and names its supervision
//! processes (what memory and idle cost are measured on). Starting,
//! killing and timing are the same for all and live in `workload`.

use crate::events::{Beats, SyslogSink};
use crate::ns::Launch;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Settings shared by every adapter.
#[derive(Clone, Debug)]
pub struct Common {
    /// The static blocker every service runs.
    pub blocker: PathBuf,
    /// runit and s6 `run` files: a `#!/bin/sh` script exec'ing the blocker
    /// (the baseline) or, with `direct`, a symlink to the blocker
    /// itself (it then reads its index from its working directory).
    pub direct_run: bool,
}

/// What a tether run observes besides the blockers.
#[derive(Default)]
pub struct Probes {
    pub syslog: Option<SyslogSink>,
    /// Heartbeat pipes read by the benchmark, with the beat interval.
    pub beats: Vec<Beats>,
    pub beat_interval: Option<Duration>,
}

/// A supervisor prepared in its directory.
pub struct Prepared {
    pub launch: Launch,
    pub probes: Probes,
}

pub trait Supervisor {
    /// Column label in the report.
    fn label(&self) -> String;
    /// Writes the tree for services `0..n` into `dir` (empty, ours) and
    /// says how to launch. `env` must reach every service.
    fn prepare(
        &self,
        dir: &Path,
        n: usize,
        common: &Common,
        env: &[(String, String)],
    ) -> Result<Prepared, String>;
    /// The supervision processes under `root` (PID 1 of the namespace).
    fn supervision_pids(&self, root: i32) -> Vec<i32>;
}

/// The name of service `i`.
pub fn service_name(i: usize) -> String {
    format!("svc{i}")
}

/// Writes `dir/svcI/run` for services `0..n` (runit and s6 layout).
pub fn write_run_dirs(dir: &Path, n: usize, common: &Common) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for i in 0..n {
        let sv = dir.join(service_name(i));
        std::fs::create_dir(&sv).map_err(|e| format!("{}: {e}", sv.display()))?;
        let run = sv.join("run");
        if common.direct_run {
            std::os::unix::fs::symlink(&common.blocker, &run)
                .map_err(|e| format!("{}: {e}", run.display()))?;
        } else {
            let body = format!("#!/bin/sh\nexec {} {i}\n", common.blocker.display());
            std::fs::write(&run, body).map_err(|e| format!("{}: {e}", run.display()))?;
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", run.display()))?;
        }
    }
    Ok(())
}
