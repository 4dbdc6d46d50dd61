//! tether-restarter: service supervision (DESIGN.md, section restarter).
//!
//! Pure cores, tested with a fake clock and no processes:
//! - [`service`]: service files → [`service::ServiceSpec`];
//! - [`policy`]: restart decisions;
//! - [`supervisor`]: the service state machine (events in, actions out).
//!
//! The shell around them, one thread and one epoll loop ([`event_loop`]):
//! - [`spawn`]: starting a service's process (session, limits, user,
//!   cgroup); [`cgroup`]: cgroup v2 placement and `cgroup.kill`;
//! - [`state_file`]: `RUN/restarter.state` and the leftover sweep at start;
//! - [`reload`]: validating and applying a new set of service files;
//! - [`notify`] (sd_notify sockets), [`output`] (service output → syslog),
//!   [`control`] (the control socket and `tetherctl`'s protocol).
//!
//! The crate has no `unsafe`: the child set-up between `clone` and `exec`
//! is `tether_common::sys::child` (a spawner whose cost does not grow with
//! the number of services).

#![forbid(unsafe_code)] // `unsafe` lives only in tether_common::sys
pub mod adopt;
pub mod cgroup;
pub mod control;
pub mod event_loop;
pub mod import;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod policy;
pub mod reload;
pub mod resolver;
pub mod resources;
pub mod run_dir;
pub mod service;
pub mod spawn;
pub mod state_file;
pub mod supervisor;
