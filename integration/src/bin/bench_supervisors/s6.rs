//! s6: `s6-svscan -c MAX DIR` over `DIR/svcI/run`, one `s6-supervise` per
//! service. Supervision processes: s6-svscan and its `s6-supervise`
//! children. `-c` (the service table size, default 1000 in s6 2.11) is set
//! to N plus a margin so that N = 1000 fits.
//!
//! Readiness: each service directory holds `notification-fd` (3), and the
//! blocker writes its newline there, as tether's services send `READY=1`.
//! s6-supervise waits one second between two starts unless the previous
//! run became ready; with readiness, a service up > 1 s is restarted at
//! once (without it, every restart waited ~1 s in a first trial).

use crate::adapter::{service_name, write_run_dirs, Common, Prepared, Probes, Supervisor};
use crate::ns::Launch;
use crate::procfs;
use std::path::{Path, PathBuf};

pub struct S6 {
    pub svscan: PathBuf,
}

impl Supervisor for S6 {
    fn label(&self) -> String {
        "s6".into()
    }

    fn prepare(
        &self,
        dir: &Path,
        n: usize,
        common: &Common,
        env: &[(String, String)],
    ) -> Result<Prepared, String> {
        let scan = dir.join("scan");
        write_run_dirs(&scan, n, common)?;
        for i in 0..n {
            let f = scan.join(service_name(i)).join("notification-fd");
            std::fs::write(&f, "3\n").map_err(|e| format!("{}: {e}", f.display()))?;
        }
        Ok(Prepared {
            launch: Launch {
                program: self.svscan.clone(),
                args: vec![
                    "-c".into(),
                    (n + 16).to_string().into(),
                    scan.into_os_string(),
                ],
                env: env.to_vec(),
                fds: Vec::new(),
                output: dir.join("supervisor.out"),
            },
            probes: Probes::default(),
        })
    }

    fn supervision_pids(&self, root: i32) -> Vec<i32> {
        let mut pids = vec![root];
        pids.extend(procfs::children(root, Some("s6-supervise")));
        pids
    }
}
