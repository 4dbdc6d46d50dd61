//! `tether-restarter [--config FILE] [--run-dir DIR] [--services DIR]
//! [--cgroup-root DIR | --no-cgroup]`: supervises the services of the
//! services directory. Started by tether-init (heartbeat pipes in
//! `TETHER_FDS`) or alone. See `tether_restarter::event_loop`.

#![forbid(unsafe_code)] // `unsafe` lives only in tether_common::sys
fn main() {
    // Bytes: an argument that is not UTF-8 must not panic.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // The helper a service with a working_directory starts as (spawn.rs).
    if args
        .first()
        .is_some_and(|a| a == tether_restarter::spawn::EXEC_IN)
    {
        std::process::exit(tether_restarter::spawn::exec_in_main(&args[1..]));
    }
    let opts = match tether_restarter::event_loop::Options::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "tether-restarter: {e}\n{}",
                tether_restarter::event_loop::USAGE
            );
            std::process::exit(2);
        }
    };
    std::process::exit(tether_restarter::event_loop::run(opts));
}
