//! The guest side of the VM harness: the fault agent and the "init hung"
//! ptrace helper. Test tooling only; the product carries no fault
//! injection.
//!
//! `tether-fault agent` runs on the guest's second serial port (`ttyS1`),
//! started by the image's boot stage before `tether-init`, so it lives
//! outside the chain it disturbs (its parent is PID 1, no service, no
//! cgroup of the restarter's) and is immune to the OOM killer
//! (`oom_score_adj = -1000`). It writes:
//!
//! - `AGENT ready boot_id=... uptime_ms=...` at start;
//! - `KMSG <message>`: every record of `/dev/kmsg` (kernel and tether's own
//!   messages while syslog is down);
//! - `LOG <line>`: lines appended to `/var/log/messages` after the agent
//!   started (rate-limited to 50 a second, the excess counted in a
//!   `LOG skipped N` line), so the harness sees syslog live;
//! - `RESULT <id> <json>` for each command `<id> <verb> [args]` it reads.
//!
//! Verbs (times `t_ms` are the guest's `CLOCK_MONOTONIC` in ms, so
//! differences within one boot are exact, free of serial latency):
//!
//! | verb | does | returns |
//! |---|---|---|
//! | `now` | | `t_ms` |
//! | `pid TARGET` | | `pid` (0: none) |
//! | `signal TARGET SIG` | `kill(pid, SIG)` | `pid`, `t_ms` |
//! | `await TARGET OLDPID TIMEOUT_MS` | polls every 10 ms for a live TARGET with another pid | `pid`, `t_ms`, `waited_ms` |
//! | `status` | `tetherctl status --json` | `status` (the JSON) |
//! | `wait-chain TIMEOUT_MS` | polls `tetherctl status --json` until every service has been running for 300 ms | `status`, `t_ms`, `waited_ms` |
//! | `exec SHELL-COMMAND` | `sh -c` | `code`, `out` |
//! | `hold-init` | starts `tether-fault hold-init`, waits for it to hold PID 1 | `holder`, `t_ms` |
//! | `oom TARGET` | TARGET's `oom_score_adj` to 1000, then a memory hog until the OOM killer acted | `pid`, `t_ms` (TARGET seen dead), `oom_kills` |
//! | `panic` | `echo c > /proc/sysrq-trigger` (after replying) | `t_ms` |
//! | `seq FROM [FILE...]` | reads the counter's lines (`cseq=N`) in the FILEs (default `/var/log/messages.0` then `/var/log/messages`), in file order, and checks the sequence from the first `FROM` on | `found` (FROM present), `first`, `last`, `lines`, `lost` (numbers missing after FROM), `repeats`, `gaps` (up to 10 `[a, b]` pairs where `b != a + 1`), `t_ms` |
//! | `missing FROM TO [FILE...]` | the counter's numbers in `FROM..=TO` found in none of the FILEs (default as `seq`) | `count`, `first` (up to 10), `last_seen` |
//!
//! TARGET: `init`, `restarter`, `watchdogd`, or `svc:NAME` (pid from the
//! restarter's status).
//!
//! `tether-fault preinit` (also when run as `/tether-inject/init`, the
//! kernel's `rdinit=` of `tether-inject`'s overlay, see
//! `tether_vm_tests::inject::source`): mounts `/proc` and a devtmpfs on
//! `/dev` when they are missing, starts `tether-fault agent` on
//! `/dev/ttyS1` (raw; its own process group; not a service), then
//! `exec`s the image's init named in `/tether-inject/next` (default `/init`)
//! as PID 1. A failure to start the agent is printed on the console and
//! the image's init runs anyway (the harness then times out on the agent
//! with the console transcript to read).
//!
//! `tether-fault counter [INTERVAL_MS]`: the appliance's `counter` service (see
//! `crate::appliance::COUNTER_SERVICE`): writes `cseq=N` (N = 1, 2, ...) on
//! stdout every INTERVAL_MS (default 10) ms on an absolute `CLOCK_MONOTONIC` schedule, each line
//! one blocking `write` (a full pipe holds the writer back, it never drops a
//! line), and after each line its number to `/run/tether-fault-counter`
//! (20 digits). The agent does not stream these lines to the host (`LOG` skips
//! `cseq=`): `seq` reads them where they land, in syslogd's file.
//!
//! `tether-fault hold-init`: `PTRACE_SEIZE` + `PTRACE_INTERRUPT` on PID 1,
//! waits for the stop, prints `held`, and then sleeps forever: PID 1 stays
//! stopped (a hung init as the rest of the system sees it: no beats, no
//! reaping) for as long as the tracer lives.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

type Out = Arc<Mutex<std::io::Stdout>>;

fn say(out: &Out, line: &str) {
    let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = o.write_all(line.as_bytes());
    let _ = o.write_all(b"\n");
    let _ = o.flush();
}

fn preinit() -> ! {
    use nix::mount::{mount, MsFlags};
    use std::os::unix::process::CommandExt;
    let _ = std::fs::create_dir_all("/proc");
    let _ = std::fs::create_dir_all("/dev");
    if !std::path::Path::new("/proc/self").exists() {
        let _ = mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    if !std::path::Path::new("/dev/ttyS1").exists() {
        let _ = mount(
            Some("devtmpfs"),
            "/dev",
            Some("devtmpfs"),
            MsFlags::empty(),
            None::<&str>,
        );
    }
    match start_agent() {
        Ok(pid) => println!("tether-inject: agent started on /dev/ttyS1 (pid {})", pid),
        Err(e) => println!("tether-inject: cannot start the agent: {}", e),
    }
    let next = std::fs::read_to_string("/tether-inject/next")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/init".into());
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "preinit")
        .collect();
    let e = std::process::Command::new(&next).args(args).exec();
    println!("tether-inject: exec {}: {}", next, e);
    // PID 1 must not exit: keep the console readable.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// `tether-fault agent` on `/dev/ttyS1`, raw (no echo; the speed does not
/// matter to QEMU's UART), own process group.
fn start_agent() -> Result<u32, String> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    use nix::sys::termios;
    use std::os::unix::process::CommandExt;
    let fd = open(
        "/dev/ttyS1",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open /dev/ttyS1: {}", e))?;
    if let Ok(mut t) = termios::tcgetattr(&fd) {
        termios::cfmakeraw(&mut t);
        let _ = termios::tcsetattr(&fd, termios::SetArg::TCSANOW, &t);
    }
    let tty = std::fs::File::from(fd);
    let io = |f: &std::fs::File| f.try_clone().map_err(|e| format!("dup tty: {}", e));
    // The overlay's copy by its own name (children named `tether-fault`).
    let exe = std::path::Path::new("/tether-inject/tether-fault");
    let exe = if exe.exists() {
        exe.to_path_buf()
    } else {
        self_exe()
    };
    let child = std::process::Command::new(exe)
        .arg("agent")
        .stdin(io(&tty)?)
        .stdout(io(&tty)?)
        .stderr(io(&tty)?)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("spawn agent: {}", e))?;
    Ok(child.id())
}

/// `tetherctl` of the image: the first found in the usual directories.
fn tetherctl() -> &'static str {
    [
        "/sbin/tetherctl",
        "/usr/sbin/tetherctl",
        "/usr/bin/tetherctl",
        "/bin/tetherctl",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("/sbin/tetherctl")
}

/// Our own binary by its real path (so children are named `tether-fault`).
fn self_exe() -> std::path::PathBuf {
    std::env::current_exe().unwrap_or_else(|_| "/sbin/tether-fault".into())
}

fn mono_ms() -> u64 {
    tether_common::clock::MonoTime::now()
        .as_duration()
        .as_millis() as u64
}

fn main() {
    // Run as the kernel's `rdinit=/tether-inject/init`: argv[0] says so.
    let args: Vec<String> = std::env::args().collect();
    if args
        .first()
        .is_some_and(|a| a.ends_with("/tether-inject/init"))
    {
        preinit();
    }
    match args.get(1).map(|s| s.as_str()) {
        Some("agent") => agent(),
        Some("hold-init") => hold_init(),
        Some("hog") => hog(args.get(2).map(std::path::Path::new)),
        Some("counter") => counter(args.get(2).and_then(|v| v.parse().ok()).unwrap_or(10)),
        Some("preinit") => preinit(),
        _ => {
            eprintln!("usage: tether-fault agent | hold-init | hog | counter");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------- agent

fn agent() {
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    if std::env::var_os("PATH").is_none() {
        std::env::set_var("PATH", "/sbin:/usr/sbin:/bin:/usr/bin");
    }
    let out: Out = Arc::new(Mutex::new(std::io::stdout()));
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    say(
        &out,
        &format!(
            "AGENT ready boot_id={} uptime_ms={}",
            boot_id.trim(),
            mono_ms()
        ),
    );
    {
        let out = out.clone();
        std::thread::spawn(move || stream_kmsg(out));
    }
    {
        let out = out.clone();
        std::thread::spawn(move || stream_log(out, "/var/log/messages"));
    }
    let stdin = std::io::stdin();
    let mut line = String::new();
    let mut r = stdin.lock();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => std::thread::sleep(Duration::from_millis(100)),
            Ok(_) => {
                let l = line.trim().to_string();
                if l.is_empty() {
                    continue;
                }
                let (id, rest) = l.split_once(' ').unwrap_or((l.as_str(), ""));
                let id = id.to_string();
                let rest = rest.to_string();
                let out = out.clone();
                // Commands that wait run on their own thread, so a long
                // `await` does not hold up a `status`.
                std::thread::spawn(move || {
                    let v = command(&rest, &out, &id);
                    say(&out, &format!("RESULT {} {}", id, v));
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn err(msg: impl std::fmt::Display) -> Value {
    json!({"ok": false, "error": msg.to_string()})
}

fn command(line: &str, out: &Out, id: &str) -> Value {
    let words: Vec<&str> = line.split_whitespace().collect();
    let arg = |i: usize| words.get(i).copied().unwrap_or("");
    let num = |i: usize| arg(i).parse::<u64>().unwrap_or(0);
    match arg(0) {
        "now" => json!({"ok": true, "t_ms": mono_ms()}),
        "pid" => json!({"ok": true, "pid": find_target(arg(1)).unwrap_or(0)}),
        "signal" => signal(arg(1), arg(2)),
        "await" => await_target(arg(1), num(2) as i32, Duration::from_millis(num(3))),
        "status" => match ctl_status() {
            Ok(s) => json!({"ok": true, "status": s}),
            Err(e) => err(e),
        },
        "wait-chain" => wait_chain(Duration::from_millis(num(1))),
        "exec" => {
            let cmd = line.trim_start().strip_prefix("exec").unwrap_or("").trim();
            exec(cmd)
        }
        "hold-init" => hold_init_via_helper(),
        "oom" => oom(arg(1)),
        "seq" => seq(num(1), &words[2.min(words.len())..]),
        "missing" => missing(num(1), num(2), &words[3.min(words.len())..]),
        "panic" => {
            // Reply first: nothing runs after the trigger.
            say(
                out,
                &format!("RESULT {} {}", id, json!({"ok": true, "t_ms": mono_ms()})),
            );
            std::thread::sleep(Duration::from_millis(50));
            let _ = std::fs::write("/proc/sysrq-trigger", "c");
            err("still alive after sysrq-trigger c")
        }
        other => err(format!("unknown verb {:?}", other)),
    }
}

fn exec(cmd: &str) -> Value {
    match std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .output()
    {
        Ok(o) => {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            if text.len() > 16384 {
                let mut cut = text.len() - 16384;
                while !text.is_char_boundary(cut) {
                    cut += 1;
                }
                text = text[cut..].to_string();
            }
            json!({"ok": true, "code": o.status.code().unwrap_or(-1), "out": text})
        }
        Err(e) => err(format!("sh: {}", e)),
    }
}

/// `tetherctl status --json`, parsed.
fn ctl_status() -> Result<Value, String> {
    let o = std::process::Command::new(tetherctl())
        .args(["status", "--json"])
        .output()
        .map_err(|e| format!("tetherctl: {}", e))?;
    let text = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(format!(
            "tetherctl status: {} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    // The server's first line is `ok`, then the body (tetherctl may or may
    // not strip it): take the JSON object.
    let start = text
        .find('{')
        .ok_or_else(|| format!("no JSON in {:?}", text))?;
    serde_json::from_str(&text[start..]).map_err(|e| format!("status JSON: {}: {:?}", e, text))
}

fn service_pid(status: &Value, name: &str) -> Option<i32> {
    status
        .get("services")?
        .as_array()?
        .iter()
        .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name))
        .and_then(|s| {
            let state = s.get("state").and_then(|v| v.as_str()).unwrap_or("");
            if matches!(state, "running" | "ready" | "starting") {
                s.get("pid").and_then(|p| p.as_i64()).map(|p| p as i32)
            } else {
                None
            }
        })
}

/// Live (not zombie) processes whose argv[0] ends with `/name` or is `name`.
fn pids_named(name: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{}/cmdline", pid)) else {
            continue;
        };
        let argv0 =
            String::from_utf8_lossy(cmd.split(|&b| b == 0).next().unwrap_or(&[])).into_owned();
        if argv0 != name && !argv0.ends_with(&format!("/{}", name)) {
            continue;
        }
        if proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X') {
            out.push(pid);
        }
    }
    out.sort();
    out
}

fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid)).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    after.chars().next()
}

fn find_target(target: &str) -> Option<i32> {
    match target {
        "init" => Some(1),
        "restarter" => pids_named("tether-restarter").into_iter().next(),
        "watchdogd" => pids_named("tether-watchdogd").into_iter().next(),
        t => {
            let name = t.strip_prefix("svc:")?;
            service_pid(&ctl_status().ok()?, name)
        }
    }
}

fn parse_signal(s: &str) -> Option<nix::sys::signal::Signal> {
    use std::str::FromStr;
    let s = s.trim().to_uppercase();
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let full = if s.starts_with("SIG") {
        s
    } else {
        format!("SIG{}", s)
    };
    nix::sys::signal::Signal::from_str(&full).ok()
}

fn signal(target: &str, sig: &str) -> Value {
    let Some(sig) = parse_signal(sig) else {
        return err(format!("unknown signal {:?}", sig));
    };
    let Some(pid) = find_target(target) else {
        return err(format!("no process for {}", target));
    };
    let t = mono_ms();
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
        Ok(()) => json!({"ok": true, "pid": pid, "t_ms": t}),
        Err(e) => err(format!("kill {} {}: {}", pid, sig, e)),
    }
}

fn await_target(target: &str, old: i32, timeout: Duration) -> Value {
    let begun = Instant::now();
    let t0 = mono_ms();
    loop {
        if let Some(pid) = find_target(target) {
            if pid != old {
                let t = mono_ms();
                return json!({"ok": true, "pid": pid, "t_ms": t, "waited_ms": t - t0});
            }
        }
        if begun.elapsed() >= timeout {
            return err(format!(
                "{} still not replaced (old pid {}) after {:?}",
                target, old, timeout
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_chain(timeout: Duration) -> Value {
    let begun = Instant::now();
    let t0 = mono_ms();
    loop {
        let last = match ctl_status() {
            Ok(s) => {
                let services = s
                    .get("services")
                    .and_then(|v| v.as_array())
                    .cloned()
                    .unwrap_or_default();
                // Up for a moment, not just started: a crash-looping service
                // is "running" between its start and its exit.
                let all_up = !services.is_empty()
                    && services.iter().all(|svc| {
                        matches!(
                            svc.get("state").and_then(|v| v.as_str()),
                            Some("running") | Some("ready")
                        ) && svc.get("uptime_ms").and_then(|v| v.as_u64()).unwrap_or(0) >= 300
                    });
                if all_up {
                    let t = mono_ms();
                    return json!({"ok": true, "status": s, "t_ms": t, "waited_ms": t - t0});
                }
                s.to_string()
            }
            Err(e) => e,
        };
        if begun.elapsed() >= timeout {
            return err(format!("chain not up after {:?}: {}", timeout, last));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hold_init_via_helper() -> Value {
    let child = std::process::Command::new(self_exe())
        .arg("hold-init")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return err(format!("spawn hold-init: {}", e)),
    };
    let pid = child.id();
    let mut line = String::new();
    let mut r = BufReader::new(child.stdout.take().expect("piped"));
    let _ = r.read_line(&mut line);
    if line.starts_with("held") {
        // The helper keeps running (holding PID 1); nobody waits for it.
        std::mem::forget(child);
        json!({"ok": true, "holder": pid, "t_ms": mono_ms()})
    } else {
        let mut e = String::new();
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut e);
        }
        err(format!("hold-init failed: {} {}", line.trim(), e.trim()))
    }
}

/// The kernel's count of OOM kills so far (`oom_kill` in `/proc/vmstat`).
fn oom_kills() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Makes `target` the OOM killer's first choice (`oom_score_adj` 1000)
/// and starts a memory hog (`tether-fault hog`, `oom_score_adj` -500) that
/// takes memory until the kernel's OOM killer has acted. The target's
/// badness (all of the memory in question, from the adjustment, plus its
/// RSS) always beats the hog's (its RSS, at most that memory plus what it
/// mapped before joining the cgroup, less half of it from the adjustment),
/// so the target goes first;
/// if that did not free enough, the hog (then the largest process) is the
/// next victim, never another process of the chain, and the memory comes
/// back either way. Replies when the hog is gone, with the time the target
/// was seen dead.
fn oom(target: &str) -> Value {
    let Some(pid) = find_target(target) else {
        return err(format!("no process for {}", target));
    };
    if let Err(e) = std::fs::write(format!("/proc/{}/oom_score_adj", pid), "1000") {
        return err(format!("oom_score_adj of {}: {}", pid, e));
    }
    let kills = oom_kills();
    let memcg = memcg_for(pid);
    // The hog joins the cgroup itself before it takes any memory: moved
    // from here after its spawn, it could take more than the room outside
    // the cgroup first, and its RSS (which counts those pages too) would
    // then beat the target's badness; CI saw the hog killed and the
    // target survive.
    let mut cmd = std::process::Command::new(self_exe());
    cmd.arg("hog");
    if let Some(g) = &memcg {
        cmd.arg(g.join("cgroup.procs"));
    }
    let mut hog = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return err(format!("spawn hog: {}", e)),
    };
    let begun = Instant::now();
    let mut dead_at = None;
    loop {
        if dead_at.is_none() && !proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X') {
            dead_at = Some(mono_ms());
        }
        if let Ok(Some(_)) = hog.try_wait() {
            break;
        }
        if begun.elapsed() > Duration::from_secs(60) {
            let _ = hog.kill();
            let _ = hog.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let kills = oom_kills() - kills;
    let method = if let Some(g) = &memcg {
        let _ = std::fs::remove_dir(g);
        "memcg"
    } else {
        "global"
    };
    match dead_at {
        Some(t) => {
            json!({"ok": true, "pid": pid, "t_ms": t, "oom_kills": kills, "method": method})
        }
        None => err(format!(
            "{} (pid {}) survived; {} OOM kills",
            target, pid, kills
        )),
    }
}

/// Where the OOM kill happens when the guest has the cgroup v1 memory
/// controller: a memory cgroup holding only the target and the hog, limited
/// to [`MEMCG_ROOM`] (charges made before the move stay outside, so this is
/// the room for the hog). The kill is then the cgroup's own: no global
/// memory pressure stalls the rest of the guest. Without that, a first
/// version of the row saw busybox syslogd stalled for seconds by the
/// global pressure, the restarter holding lines it could not deliver in its
/// backlog, and those lines dying with it (docs/ADOPTION.md names that
/// loss). `None` (the global method) when the controller is missing.
fn memcg_for(pid: i32) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new("/run/tether-fault-memcg");
    if !root.join("memory.limit_in_bytes").exists() {
        std::fs::create_dir_all(root).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "cgroup", "-o", "memory", "memcg"])
            .arg(root)
            .status()
            .ok()?
            .success();
        if !mounted {
            return None;
        }
    }
    let g = root.join("oom");
    let _ = std::fs::create_dir(&g);
    std::fs::write(g.join("memory.limit_in_bytes"), MEMCG_ROOM.to_string()).ok()?;
    std::fs::write(g.join("cgroup.procs"), pid.to_string()).ok()?;
    Some(g)
}

/// Memory the hog may take inside the OOM cgroup before the kernel acts.
const MEMCG_ROOM: u64 = 32 << 20;

/// The memory hog: joins the cgroup whose `cgroup.procs` is `procs`, if
/// given (and exits at once if it cannot), then takes memory in 256 KiB
/// steps (written, so really taken) until the OOM killer has acted once,
/// then exits.
fn hog(procs: Option<&std::path::Path>) {
    let _ = std::fs::write("/proc/self/oom_score_adj", "-500");
    if let Some(p) = procs {
        if let Err(e) = std::fs::write(p, std::process::id().to_string()) {
            eprintln!("hog: joining {}: {}", p.display(), e);
            std::process::exit(1);
        }
    }
    let kills = oom_kills();
    let mut hog: Vec<Vec<u8>> = Vec::new();
    while oom_kills() == kills && hog.len() < 16384 {
        hog.push(vec![0x5a; 256 << 10]);
    }
}

/// Every `/dev/kmsg` record as `KMSG <text>` (one `read` is one record:
/// `prio,seq,usec,flags;text`).
fn stream_kmsg(out: Out) {
    let Ok(mut f) = std::fs::File::open("/dev/kmsg") else {
        say(&out, "KMSG (cannot open /dev/kmsg)");
        return;
    };
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => std::thread::sleep(Duration::from_millis(50)),
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                let first = rec.lines().next().unwrap_or("");
                let text = first.split_once(';').map(|(_, t)| t).unwrap_or(first);
                say(&out, &format!("KMSG {}", text));
            }
            // EPIPE: records were overwritten before we read them.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Follows a log file from its current end (it is on the persistent disk:
/// earlier boots' lines are not repeated), handling truncation and
/// rotation; at most 50 lines a second.
fn stream_log(out: Out, path: &str) {
    use std::io::Seek;
    let mut pos = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut ino = inode(path);
    let mut partial = Vec::new();
    let mut window: VecDeque<Instant> = VecDeque::new();
    let mut skipped = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now_ino = inode(path);
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if now_ino != ino || len < pos {
            ino = now_ino;
            pos = 0;
            partial.clear();
        }
        if len == pos {
            continue;
        }
        let Ok(mut f) = std::fs::File::open(path) else {
            continue;
        };
        if f.seek(std::io::SeekFrom::Start(pos)).is_err() {
            continue;
        }
        let mut chunk = Vec::new();
        let Ok(n) = f.take(1 << 20).read_to_end(&mut chunk) else {
            continue;
        };
        pos += n as u64;
        partial.extend_from_slice(&chunk);
        while let Some(i) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            let now = Instant::now();
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
            {
                window.pop_front();
            }
            // The counter's lines (100 a second) are read by `seq` from
            // the file, not streamed.
            if line.windows(5).any(|w| w == b"cseq=") {
                continue;
            }
            if window.len() >= 50 {
                skipped += 1;
                continue;
            }
            if skipped > 0 {
                say(&out, &format!("LOG skipped {}", skipped));
                skipped = 0;
            }
            window.push_back(now);
            say(
                &out,
                &format!("LOG {}", String::from_utf8_lossy(&line[..line.len() - 1])),
            );
        }
    }
}

// ------------------------------------------------------------- counter

/// The `counter` service: `cseq=N` every 10 ms, for ever.
fn counter(interval_ms: u64) {
    use std::os::unix::fs::FileExt;
    let step = Duration::from_millis(interval_ms.max(1));
    let mut next = Instant::now();
    let mut out = std::io::stdout().lock();
    // Best effort: a counter that cannot publish still counts.
    let published = std::fs::File::create(COUNTER_NOW).ok();
    let mut n = 0u64;
    loop {
        n += 1;
        // One line, one write; a full pipe blocks us (no line dropped).
        if out.write_all(format!("cseq={}\n", n).as_bytes()).is_err() || out.flush().is_err() {
            std::process::exit(1);
        }
        if let Some(f) = &published {
            // Fixed width, one write at offset 0: a reader sees a whole
            // number, never a shorter one over a longer one's tail.
            let _ = f.write_all_at(format!("{:020}\n", n).as_bytes(), 0);
        }
        next += step;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            // Held back (a stopped reader): resume the pace, not a burst.
            next = now;
        }
    }
}

/// Where the syslog daemon's files are when `seq` names none: busybox
/// syslogd's, oldest first.
const SYSLOG_FILES: &[&str] = &["/var/log/messages.0", "/var/log/messages"];

/// Where the counter publishes the last number it wrote (written after
/// each line): a row can tell which lines were written before a moment.
const COUNTER_NOW: &str = "/run/tether-fault-counter";

/// The counter's numbers in what the syslog daemon wrote to `files`
/// (oldest first; [`SYSLOG_FILES`] when empty).
fn counter_numbers(files: &[&str]) -> Vec<u64> {
    let mut out = Vec::new();
    let files = if files.is_empty() {
        SYSLOG_FILES
    } else {
        files
    };
    for path in files {
        let Ok(text) = std::fs::read(path) else {
            continue;
        };
        for line in text.split(|&b| b == b'\n') {
            let Some(i) = line.windows(5).position(|w| w == b"cseq=") else {
                continue;
            };
            let digits: Vec<u8> = line[i + 5..]
                .iter()
                .copied()
                .take_while(|b| b.is_ascii_digit())
                .collect();
            if let Ok(n) = String::from_utf8_lossy(&digits).parse::<u64>() {
                out.push(n);
            }
        }
    }
    out
}

/// The `seq` verb: the sequence from the first `from` on, checked.
fn seq(from: u64, files: &[&str]) -> Value {
    let t = mono_ms();
    let all = counter_numbers(files);
    let (found, start) = match all.iter().position(|&n| n == from) {
        Some(i) => (true, i),
        None => (from == 0, 0),
    };
    let tail = &all[start.min(all.len())..];
    let s = seq_summary(tail);
    json!({"ok": true, "found": found, "first": tail.first().copied().unwrap_or(0),
           "last": tail.last().copied().unwrap_or(0), "lines": tail.len(),
           "lost": s.lost, "repeats": s.repeats, "gaps": s.gaps, "t_ms": t})
}

/// The `missing` verb: the counter's numbers in `from..=to` that are in
/// none of the files.
fn missing(from: u64, to: u64, files: &[&str]) -> Value {
    let seen: std::collections::BTreeSet<u64> = counter_numbers(files).into_iter().collect();
    let gone: Vec<u64> = (from..=to).filter(|n| !seen.contains(n)).collect();
    json!({"ok": true, "count": gone.len(), "first": &gone[..gone.len().min(10)],
           "last_seen": seen.last().copied().unwrap_or(0), "t_ms": mono_ms()})
}

struct SeqSummary {
    lost: u64,
    repeats: u64,
    gaps: Vec<[u64; 2]>,
}

/// Missing numbers (those between the first and the largest seen that
/// never appear), repeats or steps back (a restarter that died while
/// forwarding leaves the lines in hand in the pipe, and the next one sends
/// them again), and the first ten places where `b != a + 1`.
fn seq_summary(n: &[u64]) -> SeqSummary {
    let mut s = SeqSummary {
        lost: 0,
        repeats: 0,
        gaps: Vec::new(),
    };
    let seen: std::collections::BTreeSet<u64> = n.iter().copied().collect();
    if let (Some(&lo), Some(&hi)) = (seen.first(), seen.last()) {
        s.lost = (hi - lo + 1) - seen.len() as u64;
    }
    for w in n.windows(2) {
        if w[1] == w[0] + 1 {
            continue;
        }
        if w[1] <= w[0] {
            s.repeats += 1;
        }
        if s.gaps.len() < 10 {
            s.gaps.push([w[0], w[1]]);
        }
    }
    s
}

fn inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0)
}

// ------------------------------------------------------------ hold-init

fn hold_init() {
    use nix::sys::ptrace;
    use nix::sys::wait::{waitpid, WaitPidFlag};
    use nix::unistd::Pid;
    let init = Pid::from_raw(1);
    if let Err(e) = ptrace::seize(init, ptrace::Options::empty()) {
        eprintln!("PTRACE_SEIZE 1: {}", e);
        std::process::exit(1);
    }
    if let Err(e) = ptrace::interrupt(init) {
        eprintln!("PTRACE_INTERRUPT 1: {}", e);
        std::process::exit(1);
    }
    match waitpid(init, Some(WaitPidFlag::__WALL)) {
        Ok(status) => {
            println!("held {:?}", status);
            let _ = std::io::stdout().flush();
        }
        Err(e) => {
            eprintln!("waitpid 1: {}", e);
            std::process::exit(1);
        }
    }
    // Never resume the tracee; never exit (that would detach it).
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::seq_summary;

    #[test]
    fn a_contiguous_sequence_has_no_loss() {
        let s = seq_summary(&[5, 6, 7, 8]);
        assert_eq!((s.lost, s.repeats, s.gaps.len()), (0, 0, 0));
    }

    #[test]
    fn gaps_and_repeats_are_counted() {
        let s = seq_summary(&[1, 2, 5, 6, 6, 7, 9]);
        assert_eq!(s.lost, 3);
        assert_eq!(s.repeats, 1);
        assert_eq!(s.gaps, vec![[2, 5], [6, 6], [7, 9]]);
    }

    #[test]
    fn lines_sent_again_after_a_restarter_death_are_repeats_not_losses() {
        let s = seq_summary(&[1, 2, 3, 2, 3, 4, 5]);
        assert_eq!((s.lost, s.repeats), (0, 1));
        let s = seq_summary(&[1, 2, 3, 2, 4, 5]);
        assert_eq!((s.lost, s.repeats), (0, 1));
        let s = seq_summary(&[1, 2, 3, 2, 5]);
        assert_eq!((s.lost, s.repeats), (1, 1));
    }
}
