//! The floor: the least a supervisor can do, this program itself in
//! `--floor-supervisor N BLOCKER` mode: spawn `BLOCKER I` for `I` in
//! `0..N`, then `waitpid(-1)` forever and spawn the same index again at
//! once. No readiness, no logging, no state: a reference column, not a
//! contender (no ratios are taken against it). With `--floor-fds K` it
//! also holds K close-on-exec pipe descriptors, as the restarter holds 5
//! per service, to isolate that cost.

use crate::adapter::{Common, Prepared, Probes, Supervisor};
use crate::ns::Launch;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Floor {
    /// This program.
    pub exe: PathBuf,
    /// Extra close-on-exec descriptors the floor holds (`--floor-fds`): an
    /// experiment isolating what a large descriptor table costs each spawn
    /// (every child must close them all at exec).
    pub extra_fds: usize,
}

impl Supervisor for Floor {
    fn label(&self) -> String {
        "floor".into()
    }

    fn prepare(
        &self,
        dir: &Path,
        n: usize,
        common: &Common,
        env: &[(String, String)],
    ) -> Result<Prepared, String> {
        Ok(Prepared {
            launch: Launch {
                program: self.exe.clone(),
                args: vec![
                    "--floor-supervisor".into(),
                    n.to_string().into(),
                    common.blocker.clone().into_os_string(),
                    self.extra_fds.to_string().into(),
                ],
                env: env.to_vec(),
                fds: Vec::new(),
                output: dir.join("supervisor.out"),
            },
            probes: Probes::default(),
        })
    }

    fn supervision_pids(&self, root: i32) -> Vec<i32> {
        vec![root]
    }
}

/// The floor supervisor's main loop; never returns while it has children.
pub fn run(n: usize, blocker: &Path, extra_fds: usize) -> i32 {
    // Pipes, both ends close-on-exec, held for the whole run.
    let mut held = Vec::with_capacity(extra_fds);
    while held.len() < extra_fds {
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok((r, w)) => {
                held.push(r);
                if held.len() < extra_fds {
                    held.push(w);
                }
            }
            Err(e) => {
                eprintln!("floor: pipe2: {e}");
                return 1;
            }
        }
    }
    let spawn = |i: usize| -> Option<i32> {
        Command::new(blocker)
            .arg(i.to_string())
            .stdin(Stdio::null())
            .spawn()
            .ok()
            .map(|c| c.id() as i32)
    };
    let mut by_pid: HashMap<i32, usize> = HashMap::with_capacity(n);
    for i in 0..n {
        if let Some(pid) = spawn(i) {
            by_pid.insert(pid, i);
        }
    }
    loop {
        match nix::sys::wait::waitpid(None, None) {
            Ok(st) => {
                let Some(pid) = st.pid() else { continue };
                if let Some(i) = by_pid.remove(&pid.as_raw()) {
                    if let Some(new) = spawn(i) {
                        by_pid.insert(new, i);
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("floor: waitpid: {e}");
                return 1;
            }
        }
    }
}
