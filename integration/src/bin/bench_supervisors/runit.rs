//! runit: `runsvdir DIR` over `DIR/svcI/run` (plain `runsvdir`, no `-P`),
//! one `runsv` per service. Supervision processes: runsvdir and its `runsv`
//! children.
//!
//! runsvdir serves at most 1000 services, and it waits a second before
//! scanning a directory modified within the current second: the workload
//! lets the tree age before launching (for every supervisor alike).

use crate::adapter::{write_run_dirs, Common, Prepared, Probes, Supervisor};
use crate::ns::Launch;
use crate::procfs;
use std::path::{Path, PathBuf};

pub struct Runit {
    pub runsvdir: PathBuf,
}

impl Supervisor for Runit {
    fn label(&self) -> String {
        "runit".into()
    }

    fn prepare(
        &self,
        dir: &Path,
        n: usize,
        common: &Common,
        env: &[(String, String)],
    ) -> Result<Prepared, String> {
        let sv = dir.join("service");
        write_run_dirs(&sv, n, common)?;
        Ok(Prepared {
            launch: Launch {
                program: self.runsvdir.clone(),
                args: vec![sv.into_os_string()],
                env: env.to_vec(),
                fds: Vec::new(),
                output: dir.join("supervisor.out"),
            },
            probes: Probes::default(),
        })
    }

    fn supervision_pids(&self, root: i32) -> Vec<i32> {
        let mut pids = vec![root];
        pids.extend(procfs::children(root, Some("runsv")));
        pids
    }
}
