//! An interactive ssh session held across a fault (`session = "ssh"`): a
//! real OpenSSH client on the host, logged in through QEMU's forwarded
//! port on 127.0.0.1 with the user's key (`--ssh-key`), running a shell
//! loop that prints a tick every 500 ms. The row passes only if the client
//! is still connected after the fault and its recovery and the ticks never
//! paused for longer than [`MAX_GAP`].

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest pause between two ticks a surviving session may show
/// (ticks every 500 ms; TCG and a busy host stretch them).
pub const MAX_GAP: Duration = Duration::from_secs(5);
/// How long after the fault the session is watched at least.
pub const WATCH: Duration = Duration::from_secs(10);

/// How to log in: the forwarded port, the user's key, a scratch directory
/// for `known_hosts`.
#[derive(Clone, Debug)]
pub struct SshLogin {
    pub port: u16,
    pub key: PathBuf,
    pub user: String,
    pub dir: PathBuf,
}

impl SshLogin {
    /// `ssh` with the options of a non-interactive client that notices a
    /// dead peer within a minute.
    pub fn command(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-q", "-i"])
            .arg(&self.key)
            .args(["-p", &self.port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.join("known_hosts").display()
            ))
            .args(["-o", "ConnectTimeout=10"])
            .args([
                "-o",
                "ServerAliveInterval=2",
                "-o",
                "ServerAliveCountMax=30",
            ])
            .arg(format!("{}@127.0.0.1", self.user))
            .stdin(Stdio::null());
        c
    }

    /// Runs `true` over ssh until it works or `within` has passed.
    pub fn wait_login(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let out = self
                .command()
                .arg("true")
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| format!("cannot run ssh (install openssh-client): {}", e))?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no ssh login within {:?} on 127.0.0.1:{} with key {}: {}",
                    within,
                    self.port,
                    self.key.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// An open session and the instants its ticks arrived.
pub struct Session {
    child: Child,
    ticks: Arc<Mutex<Vec<Instant>>>,
}

impl Session {
    /// Logs in and starts the tick loop; returns once the first tick came.
    pub fn open(login: &SshLogin) -> Result<Session, String> {
        login.wait_login(Duration::from_secs(90))?;
        let mut child = login
            .command()
            .arg("while :; do echo tick; sleep 0.5; done")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the ssh session: {}", e))?;
        let out = child.stdout.take().ok_or("ssh: no stdout")?;
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let t = ticks.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                if l.is_err() {
                    break;
                }
                t.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Instant::now());
            }
        });
        let s = Session { child, ticks };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.count() == 0 {
            if Instant::now() > deadline {
                return Err("the ssh session printed nothing in 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(s)
    }

    fn count(&self) -> usize {
        self.ticks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Watches until `since + WATCH` (at least), then checks the client
    /// still runs and no pause between ticks since `since` exceeded
    /// [`MAX_GAP`]. A summary for the report.
    pub fn check_survived(&mut self, since: Instant) -> Result<String, String> {
        let until = since + WATCH;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
        }
        let now = Instant::now();
        let ticks: Vec<Instant> = self
            .ticks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .filter(|t| *t >= since)
            .collect();
        let gap = max_gap(since, &ticks, now);
        if let Ok(Some(st)) = self.child.try_wait() {
            return Err(format!(
                "the ssh session ended ({}) {:.1} s after the fault",
                st,
                ticks
                    .last()
                    .map_or(0.0, |t| t.duration_since(since).as_secs_f64())
            ));
        }
        if gap > MAX_GAP {
            return Err(format!(
                "the ssh session paused {:.1} s (more than {:.0} s) after the fault",
                gap.as_secs_f64(),
                MAX_GAP.as_secs_f64()
            ));
        }
        Ok(format!(
            "the open ssh session survived: {} ticks in the {:.0} s after the fault, longest pause {:.1} s",
            ticks.len(),
            now.duration_since(since).as_secs_f64(),
            gap.as_secs_f64()
        ))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The longest stretch without a tick in `[since, now]` (`ticks` sorted).
pub fn max_gap(since: Instant, ticks: &[Instant], now: Instant) -> Duration {
    let mut prev = since;
    let mut gap = Duration::ZERO;
    for t in ticks.iter().chain(std::iter::once(&now)) {
        gap = gap.max(t.saturating_duration_since(prev));
        prev = prev.max(*t);
    }
    gap
}

/// A free TCP port on 127.0.0.1 for QEMU's forward.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {}", e))
}

/// QEMU's user network (`-netdev` value, id `net0`) with the guest's
/// port 22 forwarded from `127.0.0.1:port` only (`restrict=on`: the guest
/// reaches nothing else; a caller may append more forwards).
pub fn user_netdev(port: u16) -> String {
    format!(
        "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{}-:22",
        port
    )
}

/// The QEMU arguments of a virtio NIC on the `net0` network `netdev`.
pub fn nic_args(netdev: String) -> Vec<String> {
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
    ]
}

/// The key is a readable file (ssh refuses keys others can read: the
/// message says so).
pub fn check_key(key: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(key).map_err(|e| format!("--ssh-key {}: {}", key.display(), e))?;
    if !m.is_file() {
        return Err(format!("--ssh-key {}: not a file", key.display()));
    }
    if m.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "--ssh-key {}: readable by others (mode {:o}); ssh refuses such a key: chmod 600 it",
            key.display(),
            m.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_pause_counts_the_stretch_to_now() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            max_gap(t0, &[s(500), s(1000), s(1500)], s(2000)),
            Duration::from_millis(500)
        );
        // A session that stopped ticking: the pause runs to now.
        assert_eq!(max_gap(t0, &[s(500)], s(9000)), Duration::from_millis(8500));
        assert_eq!(max_gap(t0, &[], s(3000)), Duration::from_millis(3000));
    }

    #[test]
    fn the_forward_listens_on_the_loopback_address_only() {
        let a = nic_args(user_netdev(2222)).join(" ");
        assert!(a.contains("hostfwd=tcp:127.0.0.1:2222-:22"), "{a}");
        assert!(a.contains("restrict=on"), "{a}");
    }
}
