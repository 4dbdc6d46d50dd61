//! Reading `/proc` (the host's: every pid here is in the benchmark's PID
//! namespace): process trees, memory and CPU counters.
//!
//! - Memory: `VmRSS` from `/proc/PID/status`, `Pss` from
//!   `/proc/PID/smaps_rollup` (proportional: shared pages divided among the
//!   processes mapping them, so the sum over a supervision tree is what the
//!   tree costs the machine).
//! - CPU: on-CPU time from `/proc/PID/schedstat` (nanoseconds, unlike the
//!   clock-tick `utime + stime` of `stat`), context switches as
//!   `voluntary_ctxt_switches + nonvoluntary_ctxt_switches` from `status`:
//!   each voluntary switch is one sleep, i.e. one wake-up when idle.
//! - Children: this kernel may lack `/proc/PID/task/TID/children`, so
//!   children are found by scanning every `/proc/PID/stat` for the parent.

use std::fs;

/// `(pid, ppid, comm)` of every process.
pub fn processes() -> Vec<(i32, i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some((ppid, comm)) = stat_ppid_comm(pid) {
            out.push((pid, ppid, comm));
        }
    }
    out
}

/// The children of `ppid` whose `comm` is `comm` (any name when `None`).
pub fn children(ppid: i32, comm: Option<&str>) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, pp, c)| *pp == ppid && comm.iter().all(|want| c == want))
        .map(|(p, _, _)| p)
        .collect()
}

/// Parent pid and command name from `/proc/PID/stat`.
pub fn stat_ppid_comm(pid: i32) -> Option<(i32, String)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let mut rest = s[close + 1..].split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, comm))
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Memory of a set of processes, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// Processes that could be read.
    pub processes: usize,
}

/// Sums `VmRSS` and `Pss` over `pids` (a pid gone meanwhile is skipped).
pub fn memory(pids: &[i32]) -> Memory {
    let mut m = Memory::default();
    for &pid in pids {
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let Ok(rollup) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        m.rss_kib += status_field(&status, "VmRSS").unwrap_or(0);
        m.pss_kib += status_field(&rollup, "Pss").unwrap_or(0);
        m.processes += 1;
    }
    m
}

/// CPU counters of a set of processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// Time on a CPU, nanoseconds.
    pub run_ns: u64,
    pub voluntary: u64,
    pub involuntary: u64,
}

impl Cpu {
    /// `self - earlier`, field by field (saturating).
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            run_ns: self.run_ns.saturating_sub(earlier.run_ns),
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            involuntary: self.involuntary.saturating_sub(earlier.involuntary),
        }
    }

    pub fn switches(self) -> u64 {
        self.voluntary + self.involuntary
    }
}

/// Sums the counters of every thread of each of `pids`.
pub fn cpu(pids: &[i32]) -> Cpu {
    let mut c = Cpu::default();
    for &pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let dir = t.path();
            if let Some(ns) = fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| {
                    s.split_whitespace()
                        .next()
                        .and_then(|f| f.parse::<u64>().ok())
                })
            {
                c.run_ns += ns;
            }
            if let Ok(status) = fs::read_to_string(dir.join("status")) {
                c.voluntary += status_field(&status, "voluntary_ctxt_switches").unwrap_or(0);
                c.involuntary += status_field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id() as i32;
        let (ppid, comm) = stat_ppid_comm(me).expect("own stat");
        assert!(ppid > 0);
        assert!(!comm.is_empty());
        let m = memory(&[me]);
        assert_eq!(m.processes, 1);
        assert!(m.rss_kib > 0 && m.pss_kib > 0 && m.pss_kib <= m.rss_kib);
        assert!(cpu(&[me]).run_ns > 0);
    }

    #[test]
    fn status_fields_need_the_exact_key() {
        let s = "VmRSS:\t 1234 kB\nvoluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(status_field(s, "VmRSS"), Some(1234));
        assert_eq!(status_field(s, "voluntary_ctxt_switches"), Some(7));
        assert_eq!(status_field(s, "nonvoluntary_ctxt_switches"), Some(3));
        assert_eq!(status_field(s, "Vm"), None);
    }
}
