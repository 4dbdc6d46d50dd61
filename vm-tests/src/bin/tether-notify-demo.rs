//! A tiny service of the demo appliance that speaks sd_notify, as a daemon
//! written for systemd would: `READY=1` once, then `WATCHDOG=1` every
//! quarter of `WATCHDOG_USEC`, from its one loop; a `tick N` line on stdout
//! every second.
//!
//! Test hooks (signals, so the service needs no extra interface):
//! - `SIGUSR1`: stop sending `WATCHDOG=1` while staying alive (a wedged
//!   main loop as the restarter sees it).
//! - `SIGUSR2`: flood stdout for `FLOOD_SECS` (default 8) seconds as fast as
//!   writes go, still petting from the same loop; then write
//!   `flood done lines=N max_write_ms=M` on stdout and to
//!   `/run/notify-demo.flood`. A blocked stdout would stop the pets (and get
//!   the service killed) and leave `max_write_ms` large.
//!
//! Static (built with the guest binaries), no `unsafe`: signals arrive on a
//! signalfd.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

fn notify(sock: &Option<(UnixDatagram, String)>, msg: &str) {
    if let Some((s, path)) = sock {
        let _ = s.send_to(msg.as_bytes(), path);
    }
}

fn main() {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGUSR1);
    mask.add(Signal::SIGUSR2);
    if let Err(e) = mask.thread_block() {
        eprintln!("notify-demo: cannot block signals: {}", e);
        std::process::exit(1);
    }
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("notify-demo: signalfd: {}", e);
            std::process::exit(1);
        }
    };
    let sock = std::env::var("NOTIFY_SOCKET")
        .ok()
        .and_then(|p| UnixDatagram::unbound().ok().map(|s| (s, p)));
    let wd_usec: u64 = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let pet_every = if wd_usec > 0 {
        Duration::from_micros(wd_usec / 4)
    } else {
        Duration::from_secs(3600)
    };
    let flood_for = Duration::from_secs(
        std::env::var("FLOOD_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8),
    );
    println!(
        "notify-demo: up, NOTIFY_SOCKET={} WATCHDOG_USEC={}",
        sock.as_ref().map(|s| s.1.as_str()).unwrap_or("-"),
        wd_usec
    );
    notify(&sock, "READY=1\nSTATUS=ticking");
    let mut petting = true;
    let mut next_pet = Instant::now();
    let mut next_tick = Instant::now();
    let mut tick = 0u64;
    let mut flood: Option<(Instant, u64, Duration)> = None;
    let mut out = std::io::stdout().lock();
    loop {
        let now = Instant::now();
        if petting && now >= next_pet {
            notify(&sock, "WATCHDOG=1");
            next_pet = now + pet_every;
        }
        if let Some((until, lines, max)) = flood.as_mut() {
            if now < *until {
                let t0 = Instant::now();
                let _ = writeln!(
                    out,
                    "flood line {} xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                    lines
                );
                let _ = out.flush();
                *max = (*max).max(t0.elapsed());
                *lines += 1;
            } else {
                let summary = format!(
                    "flood done lines={} max_write_ms={}",
                    lines,
                    max.as_millis()
                );
                let _ = writeln!(out, "notify-demo: {}", summary);
                let _ = out.flush();
                let _ = std::fs::write("/run/notify-demo.flood", format!("{}\n", summary));
                flood = None;
            }
        }
        if now >= next_tick && flood.is_none() {
            tick += 1;
            let _ = writeln!(out, "tick {}", tick);
            let _ = out.flush();
            next_tick = now + Duration::from_secs(1);
        }
        let wait = if flood.is_some() {
            Duration::ZERO
        } else {
            let mut next = next_tick;
            if petting {
                next = next.min(next_pet);
            }
            next.saturating_duration_since(Instant::now())
        };
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let ms = wait.as_millis().min(60_000) as u16;
        let _ = poll(&mut fds, PollTimeout::from(ms));
        while let Ok(Some(info)) = sfd.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGUSR1) => {
                    petting = false;
                    let _ = writeln!(out, "notify-demo: SIGUSR1: no more WATCHDOG=1");
                    notify(&sock, "STATUS=wedged (test)");
                }
                Ok(Signal::SIGUSR2) => {
                    let _ = std::fs::remove_file("/run/notify-demo.flood");
                    let _ = writeln!(
                        out,
                        "notify-demo: SIGUSR2: flooding stdout for {:?}",
                        flood_for
                    );
                    flood = Some((Instant::now() + flood_for, 0, Duration::ZERO));
                }
                _ => {}
            }
        }
    }
}
