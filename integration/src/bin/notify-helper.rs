//! `notify-helper [--repeat N] [--interval-ms MS] MSG...`: sends one
//! sd_notify datagram made of the messages (`READY=1`, `WATCHDOG=1`, ...,
//! joined by newlines) to `$NOTIFY_SOCKET`, N times (default once) MS
//! apart, then exits. A stand-in for `systemd-notify` in restarter tests.
//! Exit status: 0 sent, 1 `NOTIFY_SOCKET` unset, 2 send failed, 3 usage.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut repeat = 1u32;
    let mut interval = Duration::from_millis(100);
    let mut messages = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => repeat = n,
                None => usage(),
            },
            "--interval-ms" => match args.next().and_then(|v| v.parse().ok()) {
                Some(ms) => interval = Duration::from_millis(ms),
                None => usage(),
            },
            _ => messages.push(a),
        }
    }
    if messages.is_empty() {
        usage();
    }
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        eprintln!("notify-helper: NOTIFY_SOCKET is not set");
        std::process::exit(1);
    };
    let sock = match UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => fail(&e),
    };
    let datagram = messages.join("\n");
    for i in 0..repeat {
        if i > 0 {
            std::thread::sleep(interval);
        }
        if let Err(e) = sock.send_to(datagram.as_bytes(), &path) {
            fail(&e);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: notify-helper [--repeat N] [--interval-ms MS] MSG...");
    std::process::exit(3);
}

fn fail(e: &std::io::Error) -> ! {
    eprintln!("notify-helper: {e}");
    std::process::exit(2);
}
