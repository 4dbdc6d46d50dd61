//! Running a guest: `qemu-system-x86_64 -accel tcg` with the i6300esb
//! watchdog, the kernel and initramfs given directly, the disk as
//! virtio-blk, and three channels read by threads into one
//! [`Timeline`]:
//!
//! - the first serial port (`ttyS0`, the console) on QEMU's stdin/stdout;
//! - the second serial port (`ttyS1`) on a unix socket, for the fault
//!   agent (commands in, results out, never mixed with console noise);
//! - QMP on a unix socket: the `WATCHDOG` and `RESET` events time the
//!   hardware reset on the host's clock, independent of the guest.
//!
//! Decisions:
//! - TCG, not KVM: on these machines KVM guests hang. One vCPU, 256 MiB.
//! - `-nodefaults`: no VGA, no NIC, no default monitor; boots faster and
//!   the guest sees only what the tests use.
//! - No `-no-reboot`: a watchdog reset or a guest `reboot(2)` restarts the
//!   guest inside the same QEMU process, on the same disk, which is what a
//!   reset of real hardware does. A guest poweroff ends QEMU.
//! - QMP uses `wait=on`: QEMU starts the machine only once the harness is
//!   connected, so no event is missed.
//! - The process is killed when the [`Vm`] is dropped, and (through
//!   `setpriv --pdeathsig KILL` where util-linux has it) when the thread
//!   that started it dies.

use crate::events::{clean_line, Event, Source, Timeline};
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What to boot and how.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// For logs and transcripts.
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel command line (`console=ttyS0` is added when missing).
    pub append: String,
    /// A raw disk image attached as virtio-blk (`/dev/vda`).
    pub disk: Option<PathBuf>,
    pub memory_mib: u32,
    /// Attach an i6300esb whose expiry resets the machine.
    pub watchdog: bool,
    /// QEMU's `-action watchdog=` (what the i6300esb's expiry does):
    /// `reset` by default; `debug` only logs and emits the QMP event.
    pub watchdog_action: String,
    /// QEMU's `-action reboot=` (what a guest reset does), when set:
    /// `shutdown` makes a guest `reboot(2)` end QEMU (the QMP `SHUTDOWN`
    /// event says `guest-reset`) instead of restarting the machine.
    pub reboot_action: Option<String>,
    /// Attach the second serial port (`ttyS1`) for the fault agent.
    pub agent: bool,
    /// Where sockets go (a scratch directory).
    pub work_dir: PathBuf,
    /// Transcript of every event.
    pub transcript: Option<PathBuf>,
    /// Print events on stderr as they arrive.
    pub echo: bool,
    /// More QEMU arguments, appended as given (e.g. a NIC).
    pub extra_args: Vec<String>,
    /// `-accel`: `tcg` (default: KVM guests hang on the machines this is
    /// developed on) or `kvm` (`tether-inject --accel`, after a probe).
    pub accel: String,
}

impl VmConfig {
    pub fn new(name: &str, kernel: &Path, initrd: &Path, work_dir: &Path) -> VmConfig {
        VmConfig {
            name: name.to_string(),
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            append: String::new(),
            disk: None,
            memory_mib: 256,
            watchdog: true,
            watchdog_action: "reset".to_string(),
            reboot_action: None,
            agent: false,
            work_dir: work_dir.to_path_buf(),
            transcript: None,
            echo: std::env::var_os("TETHER_VM_ECHO").is_some(),
            extra_args: Vec::new(),
            accel: "tcg".to_string(),
        }
    }

    /// The full QEMU argument list (without the program).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: &[&str]| a.extend(s.iter().map(|x| x.to_string()));
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-accel",
            &self.accel,
            "-smp",
            "1",
            "-display",
            "none",
        ]);
        push(&["-m", &format!("{}M", self.memory_mib)]);
        push(&[
            "-chardev",
            "stdio,id=con,signal=off",
            "-serial",
            "chardev:con",
        ]);
        if self.agent {
            let sock = self.work_dir.join("agent.sock");
            push(&[
                "-chardev",
                &format!("socket,id=agent,path={},server=on,wait=off", sock.display()),
                "-serial",
                "chardev:agent",
            ]);
        }
        let qmp = self.work_dir.join("qmp.sock");
        push(&["-qmp", &format!("unix:{},server=on,wait=on", qmp.display())]);
        let mut action = Vec::new();
        if self.watchdog {
            push(&["-device", "i6300esb"]);
            action.push(format!("watchdog={}", self.watchdog_action));
        }
        if let Some(r) = &self.reboot_action {
            action.push(format!("reboot={}", r));
        }
        if !action.is_empty() {
            push(&["-action", &action.join(",")]);
        }
        if let Some(d) = &self.disk {
            push(&[
                "-drive",
                &format!("file={},format=raw,if=virtio", d.display()),
            ]);
        }
        let mut append = self.append.clone();
        if !append.split_whitespace().any(|w| w.starts_with("console=")) {
            append = format!("console=ttyS0 {}", append);
        }
        push(&["-kernel", &self.kernel.display().to_string()]);
        push(&["-initrd", &self.initrd.display().to_string()]);
        push(&["-append", append.trim()]);
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// A failure to start or talk to QEMU.
#[derive(Debug)]
pub enum VmError {
    Spawn(std::io::Error),
    /// A socket QEMU should have created did not accept in time.
    Connect {
        socket: PathBuf,
        detail: String,
    },
    /// QEMU exited before the machine started.
    EarlyExit {
        status: String,
        stderr: String,
    },
    Io(std::io::Error),
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::Spawn(e) => write!(
                f,
                "cannot run qemu-system-x86_64: {} (install it: apt-get install qemu-system-x86)",
                e
            ),
            VmError::Connect { socket, detail } => {
                write!(f, "cannot connect to {}: {}", socket.display(), detail)
            }
            VmError::EarlyExit { status, stderr } => {
                write!(f, "qemu exited at start ({}): {}", status, stderr)
            }
            VmError::Io(e) => write!(f, "talking to qemu: {}", e),
        }
    }
}

impl std::error::Error for VmError {}

/// The QEMU binary: `TETHER_VM_QEMU` or `qemu-system-x86_64` on `PATH`.
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("TETHER_VM_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| "qemu-system-x86_64".into())
}

fn setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A running guest.
pub struct Vm {
    pub config: VmConfig,
    child: Child,
    console: Option<ChildStdin>,
    agent: Option<UnixStream>,
    qmp: UnixStream,
    pub timeline: Timeline,
}

fn spawn_line_reader<R: std::io::Read + Send + 'static>(
    r: R,
    source: Source,
    tx: crossbeam_channel::Sender<Event>,
    on_eof: Option<Source>,
) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = clean_line(&buf);
                    if text.trim().is_empty() {
                        continue;
                    }
                    if tx
                        .send(Event {
                            at: Instant::now(),
                            source,
                            text,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        if let Some(s) = on_eof {
            let _ = tx.send(Event {
                at: Instant::now(),
                source: s,
                text: "console closed".into(),
            });
        }
    });
}

/// QMP lines → events: `{"event": "WATCHDOG", "data": {...}}` becomes
/// `WATCHDOG {"action":"reset"}`; replies become `return ...`/`error ...`.
pub fn qmp_event_text(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if let Some(name) = v.get("event").and_then(|e| e.as_str()) {
        let data = v.get("data").map(|d| d.to_string()).unwrap_or_default();
        return Some(format!("{} {}", name, data).trim().to_string());
    }
    if let Some(r) = v.get("return") {
        return Some(format!("return {}", r));
    }
    if let Some(e) = v.get("error") {
        return Some(format!("error {}", e));
    }
    if v.get("QMP").is_some() {
        return Some("greeting".into());
    }
    None
}

fn connect(socket: &Path, child: &mut Child, within: Duration) -> Result<UnixStream, VmError> {
    let deadline = Instant::now() + within;
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            Err(e) => {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut stderr = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
                    }
                    return Err(VmError::EarlyExit {
                        status: status.to_string(),
                        stderr,
                    });
                }
                if Instant::now() >= deadline {
                    return Err(VmError::Connect {
                        socket: socket.to_path_buf(),
                        detail: e.to_string(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Vm {
    /// Starts QEMU and connects every channel; the guest starts running
    /// when this returns.
    pub fn start(config: VmConfig) -> Result<Vm, VmError> {
        std::fs::create_dir_all(&config.work_dir).map_err(VmError::Io)?;
        for s in ["qmp.sock", "agent.sock"] {
            let _ = std::fs::remove_file(config.work_dir.join(s));
        }
        let started = Instant::now();
        let mut timeline = Timeline::new(started);
        if let Some(t) = &config.transcript {
            timeline.set_transcript(t).map_err(VmError::Io)?;
        }
        timeline.set_echo(config.echo);
        let args = config.args();
        timeline.note(format!("{} {}", qemu_binary().display(), args.join(" ")));
        // `setpriv --pdeathsig KILL` (util-linux): QEMU dies with the
        // thread that started it, even when the harness is killed outright
        // and never drops the Vm. setpriv execs QEMU: same pid.
        let mut cmd = match setpriv() {
            Some(sp) => {
                let mut c = Command::new(sp);
                c.args(["--pdeathsig", "KILL", "--"]).arg(qemu_binary());
                c
            }
            None => Command::new(qemu_binary()),
        };
        let mut child = cmd
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(VmError::Spawn)?;
        let qmp = connect(
            &config.work_dir.join("qmp.sock"),
            &mut child,
            Duration::from_secs(30),
        )?;
        let tx = timeline.sender();
        spawn_line_reader(
            child.stdout.take().expect("piped stdout"),
            Source::Console,
            tx.clone(),
            Some(Source::Exit),
        );
        spawn_line_reader(
            child.stderr.take().expect("piped stderr"),
            Source::Qemu,
            tx.clone(),
            None,
        );
        let qmp_read = qmp.try_clone().map_err(VmError::Io)?;
        let qtx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(qmp_read).lines() {
                let Ok(line) = line else { break };
                if let Some(text) = qmp_event_text(&line) {
                    if qtx
                        .send(Event {
                            at: Instant::now(),
                            source: Source::Qmp,
                            text,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        let mut vm = Vm {
            console: child.stdin.take(),
            agent: None,
            qmp,
            timeline,
            child,
            config,
        };
        // Leaves QMP's negotiation mode; from here on events flow, and the
        // machine starts (it was waiting for this connection).
        vm.qmp_command(r#"{"execute":"qmp_capabilities"}"#)
            .map_err(VmError::Io)?;
        if vm.config.agent {
            let s = connect(
                &vm.config.work_dir.join("agent.sock"),
                &mut vm.child,
                Duration::from_secs(30),
            )?;
            spawn_line_reader(s.try_clone().map_err(VmError::Io)?, Source::Agent, tx, None);
            vm.agent = Some(s);
        }
        Ok(vm)
    }

    /// Sends one QMP command (a JSON object); the reply arrives as a
    /// [`Source::Qmp`] event.
    pub fn qmp_command(&mut self, json: &str) -> std::io::Result<()> {
        self.qmp.write_all(json.as_bytes())?;
        self.qmp.write_all(b"\n")
    }

    /// QMP `query-status`: the run state (`running`, `paused`, `shutdown`,
    /// `guest-panicked`, ...), which tells a guest spinning inside its
    /// kernel (`running`: its vCPU runs and the i6300esb's timer, on the
    /// virtual clock, counts) from a machine QEMU has stopped (the virtual
    /// clock stands still, so no emulated watchdog can fire). `None` when
    /// QEMU does not answer within `timeout` (its main loop is stuck, or it
    /// exited). The timeline's cursor is left where it was.
    pub fn query_status(&mut self, timeout: Duration) -> Option<String> {
        let mark = self.timeline.mark();
        self.timeline.skip_to_end();
        let sent = self
            .qmp_command(r#"{"execute":"query-status"}"#)
            .map_err(|e| self.timeline.note(format!("query-status: {}", e)))
            .is_ok();
        let reply = sent
            .then(|| {
                self.timeline
                    .wait_for("the query-status reply", timeout, |e| {
                        e.source == Source::Qmp
                            && e.text.starts_with("return {")
                            && e.text.contains("\"status\"")
                    })
                    .ok()
            })
            .flatten();
        self.timeline.seek(mark);
        let text = reply?.text;
        let v: serde_json::Value = serde_json::from_str(text.strip_prefix("return ")?).ok()?;
        v.get("status")
            .and_then(|s| s.as_str())
            .map(|s| s.to_string())
    }

    /// Types a line on the console (`ttyS0`).
    pub fn send_console(&mut self, line: &str) -> std::io::Result<()> {
        let c = self.console.as_mut().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotConnected, "console input closed")
        })?;
        c.write_all(line.as_bytes())?;
        c.write_all(b"\n")?;
        c.flush()
    }

    /// Sends a line to the fault agent (`ttyS1`).
    pub fn send_agent(&mut self, line: &str) -> std::io::Result<()> {
        self.timeline.note(format!("agent <- {}", line));
        let a = self.agent.as_mut().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "no agent port (config.agent)",
            )
        })?;
        a.write_all(line.as_bytes())?;
        a.write_all(b"\n")?;
        a.flush()
    }

    /// Waits up to `timeout` for QEMU to exit (after a guest poweroff).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.timeline.drain();
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills QEMU (idempotent).
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_lines_become_event_text() {
        assert_eq!(
            qmp_event_text(r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "WATCHDOG", "data": {"action": "reset"}}"#)
                .as_deref(),
            Some(r#"WATCHDOG {"action":"reset"}"#)
        );
        assert_eq!(
            qmp_event_text(r#"{"return": {}}"#).as_deref(),
            Some("return {}")
        );
        assert_eq!(qmp_event_text("not json"), None);
    }

    #[test]
    fn arguments_carry_watchdog_disk_and_console() {
        let mut c = VmConfig::new("t", Path::new("/k"), Path::new("/i"), Path::new("/w"));
        c.disk = Some(PathBuf::from("/w/disk.img"));
        c.append = "panic=0".into();
        let a = c.args().join(" ");
        assert!(a.contains("-accel tcg"), "{}", a);
        assert!(
            a.contains("-device i6300esb -action watchdog=reset"),
            "{}",
            a
        );
        assert!(a.contains("file=/w/disk.img,format=raw,if=virtio"), "{}", a);
        assert!(a.ends_with("-append console=ttyS0 panic=0"), "{}", a);
        assert!(!a.contains("agent"), "{}", a);
        assert!(!a.contains("reboot="), "{}", a);
    }

    #[test]
    fn actions_for_the_watchdog_and_a_guest_reset_share_one_option() {
        let mut c = VmConfig::new("t", Path::new("/k"), Path::new("/i"), Path::new("/w"));
        c.watchdog_action = "debug".into();
        c.reboot_action = Some("shutdown".into());
        let a = c.args().join(" ");
        assert!(
            a.contains("-device i6300esb -action watchdog=debug,reboot=shutdown"),
            "{}",
            a
        );
        c.watchdog = false;
        let a = c.args().join(" ");
        assert!(a.contains("-action reboot=shutdown"), "{}", a);
        assert!(!a.contains("i6300esb"), "{}", a);
    }
}
