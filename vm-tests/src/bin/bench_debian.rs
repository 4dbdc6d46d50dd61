//! Side by side on the same Debian image (issue 15): Debian's systemd as
//! PID 1 against tether-init, same kernel, modules, disk and services
//! (sshd, rsyslogd, cron, chronyd). Prints a table; asserts nothing.
//!
//! Per init system, `TETHER_BENCH_BOOTS` boots (default 3, in alternating
//! rounds): the time from
//! QEMU's start to sshd's banner on the forwarded port (the median is
//! reported, with min and max); after a login, read in the guest
//! (`/proc/PID/smaps_rollup`): Rss and Pss of PID 1 and of the init
//! system's own processes (tether: `/sbin/tether-*`, `/usr/sbin/tether-*`;
//! systemd: every process whose executable is under `/usr/lib/systemd/`,
//! i.e. systemd, journald, udevd, logind, `systemd --user` of the login),
//! their number, every entry of `/proc` (processes and kernel threads), and
//! MemTotal - MemAvailable. A boot where one of sshd, rsyslogd, cron,
//! chronyd is not running fails the benchmark.
//!
//! Run: `cargo run --release -p tether-vm-tests --bin bench_debian`
//! (root, Debian host with mmdebstrap, qemu-system-x86, openssh-client).

use std::time::Duration;
use tether_vm_tests::debian::{self, InitSystem, Options};
use tether_vm_tests::image::run_dir;

/// Lists the init system's processes: `pid exe rss_kb pss_kb` lines, then
/// `total N` (all processes) and `used_kb N`.
const PROBE: &str = r#"n=0
for p in /proc/[0-9]*; do
  n=$((n + 1))
  exe=$(readlink "$p/exe" 2>/dev/null) || continue
  case "$exe" in
    /sbin/tether-*|/usr/sbin/tether-*|/usr/lib/systemd/*|/lib/systemd/*)
      rss=$(awk '/^Rss:/ {print $2}' "$p/smaps_rollup")
      pss=$(awk '/^Pss:/ {print $2}' "$p/smaps_rollup")
      echo "${p#/proc/} $exe $rss $pss" ;;
  esac
done
echo "total $n"
for d in sshd rsyslogd cron chronyd; do pgrep -x "$d" >/dev/null && echo "daemon $d"; done
awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} END {print "used_kb", t - a}' /proc/meminfo
"#;

#[derive(Default, Clone)]
struct Sample {
    ready_s: f64,
    rss_kb: u64,
    pss_kb: u64,
    procs: usize,
    names: Vec<String>,
    total_procs: u64,
    used_kb: u64,
    /// Which of the appliance's daemons run.
    daemons: Vec<String>,
}

fn parse(out: &str) -> Sample {
    let mut s = Sample::default();
    for l in out.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            ["total", n] => s.total_procs = n.parse().unwrap_or(0),
            ["used_kb", n] => s.used_kb = n.parse().unwrap_or(0),
            ["daemon", d] => s.daemons.push(d.to_string()),
            [_pid, exe, rss, pss] => {
                s.rss_kb += rss.parse::<u64>().unwrap_or(0);
                s.pss_kb += pss.parse::<u64>().unwrap_or(0);
                s.procs += 1;
                let name = exe.rsplit('/').next().unwrap_or(exe).to_string();
                if !s.names.contains(&name) {
                    s.names.push(name);
                }
            }
            _ => {}
        }
    }
    s
}

fn one(init: InitSystem, i: usize) -> Result<Sample, String> {
    let name = format!("bench-debian-{:?}-{}", init, i).to_lowercase();
    let dir = run_dir(&name);
    let opts = Options {
        init,
        ..Options::default()
    };
    let mut g = debian::boot(&name, &dir, &opts)?;
    let start = g.vm.timeline.start();
    let deadline = start + Duration::from_secs(300);
    let ready = debian::wait_ssh(g.ssh_port, deadline)
        .ok_or_else(|| format!("{}: sshd never answered", name))?;
    let ready_s = ready.duration_since(start).as_secs_f64();
    g.wait_login(Duration::from_secs(120))?;
    // Let the boot settle (units started after sshd, first liveness).
    std::thread::sleep(Duration::from_secs(10));
    let out = g.ssh(PROBE)?;
    let mut s = parse(&out);
    s.ready_s = ready_s;
    // The same services under both: a faster boot that runs less proves
    // nothing.
    for d in ["sshd", "rsyslogd", "cron", "chronyd"] {
        if !s.daemons.iter().any(|x| x == d) {
            return Err(format!("{}: {} is not running ({:?})", name, d, s.daemons));
        }
    }
    let _ = g.ssh("sync");
    g.vm.kill();
    Ok(s)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn main() {
    let boots: usize = std::env::var("TETHER_BENCH_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3);
    // Rounds alternate the two init systems, so that a change in the
    // machine's load during the run falls on both alike.
    let mut rows: Vec<(InitSystem, Vec<Sample>)> = vec![
        (InitSystem::Systemd, Vec::new()),
        (InitSystem::Tether, Vec::new()),
    ];
    for i in 0..boots {
        for (init, samples) in rows.iter_mut() {
            match one(*init, i) {
                Ok(s) => {
                    eprintln!(
                        "{:?} boot {}: sshd {:.1} s, {} processes, Rss {} kB, Pss {} kB",
                        init, i, s.ready_s, s.procs, s.rss_kb, s.pss_kb
                    );
                    samples.push(s)
                }
                Err(e) => {
                    eprintln!("bench_debian: {:?} boot {} failed: {}", init, i, e);
                    std::process::exit(1);
                }
            }
        }
    }
    println!(
        "| PID 1 | sshd accepting (median of {}, min-max) | init system's processes | Rss | Pss | processes + kernel threads | memory used |",
        boots
    );
    println!("|---|---|---|---|---|---|---|");
    for (init, s) in &rows {
        let times: Vec<f64> = s.iter().map(|x| x.ready_s).collect();
        let min = times.iter().cloned().fold(f64::MAX, f64::min);
        let max = times.iter().cloned().fold(0.0, f64::max);
        let last = s.last().cloned().unwrap_or_default();
        let med = |f: &dyn Fn(&Sample) -> f64| median(s.iter().map(f).collect());
        println!(
            "| {} | {:.1} s ({:.1}-{:.1}) | {} ({}) | {:.0} kB | {:.0} kB | {:.0} | {:.0} MiB |",
            match init {
                InitSystem::Systemd => "systemd (Debian 252)",
                InitSystem::Tether => "tether-init",
            },
            median(times.clone()),
            min,
            max,
            last.procs,
            last.names.join(", "),
            med(&|x| x.rss_kb as f64),
            med(&|x| x.pss_kb as f64),
            med(&|x| x.total_procs as f64),
            med(&|x| x.used_kb as f64 / 1024.0),
        );
    }
}
