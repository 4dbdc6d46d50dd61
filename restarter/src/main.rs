//! `tether-restarter [--config FILE] [--run-dir DIR] [--services DIR]
//! [--cgroup-root DIR | --no-cgroup]`: supervises the services of the
//! services directory. Started by tether-init (heartbeat pipes in
//! `TETHER_FDS`) or alone. See `tether_restarter::event_loop`.

#![forbid(unsafe_code)] // `unsafe` lives only in tether_common::sys
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
