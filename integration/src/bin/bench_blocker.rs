//! `bench_blocker [INDEX]`: the service every supervisor runs in
//! `bench_supervisors`. It reads `CLOCK_MONOTONIC` first thing, then
//! - when its working directory holds `notification-fd` (an s6 service
//!   directory asking for readiness), writes a newline to that descriptor
//!   (opened again through `/dev/fd/N`: no unsafe descriptor adoption);
//! - when `NOTIFY_SOCKET` is set (tether, `notify = "ready"`), sends
//!   `READY=1` there;
//! - when `BENCH_SOCK` is set, sends `INDEX MONO_NS` (INDEX: the digits of
//!   the argument, or else of the working directory's name) in one datagram to that
//!   unix datagram socket (the benchmark reads the sender's pid from the
//!   kernel's `SCM_CREDENTIALS`, translated into its own PID namespace);
//! - then blocks in `pause()` forever (it dies of a signal only).
//!
//! The same program, built statically (`-C target-feature=+crt-static`), is
//! exec'd by tether, runit and s6, so starting it costs each the same.
//! Failures to send are ignored: a blocker must block whatever happens, and
//! the benchmark notices a missing datagram by its timeout.

use std::os::unix::net::UnixDatagram;

fn main() {
    let started = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128)
        .unwrap_or(0);
    // s6-supervise passes the service name (`svc17`) as the argument of a
    // `run` that is the blocker itself: only its digits count.
    let index: String = match std::env::args().nth(1) {
        Some(a) => a.chars().filter(char::is_ascii_digit).collect(),
        None => index_from_cwd(),
    };
    if let Ok(text) = std::fs::read_to_string("notification-fd") {
        if let Ok(fd) = text.trim().parse::<u32>() {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/dev/fd/{fd}"))
            {
                use std::io::Write;
                let _ = f.write_all(b"\n");
            }
        }
    }
    if let Ok(sock) = UnixDatagram::unbound() {
        if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
            send(&sock, &path, b"READY=1");
        }
        if let Some(path) = std::env::var_os("BENCH_SOCK") {
            send(&sock, &path, format!("{index} {started}").as_bytes());
        }
    }
    loop {
        nix::unistd::pause();
    }
}

/// The digits of the working directory's name (`.../svc17` → `17`): runit
/// and s6 run `./run` in the service directory, and a `run` that is a
/// symlink to the blocker has no argument.
fn index_from_cwd() -> String {
    std::env::current_dir()
        .ok()
        .and_then(|d| {
            d.file_name().map(|n| {
                n.to_string_lossy()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Sends to a path, or to an abstract address (`@name`, as sd_notify allows).
fn send(sock: &UnixDatagram, path: &std::ffi::OsStr, msg: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(msg, &addr);
        }
    } else {
        let _ = sock.send_to(msg, path);
    }
}
