//! The demo appliance: the tether chain as PID 1 of the guest, with a
//! small set of services that exercise every rung of the ladder.
//!
//! | service | what | why |
//! |---|---|---|
//! | `syslogd` | busybox `syslogd -n` writing `/var/log/messages` on the disk | the log sink the restarter forwards service output to; killing it tests the bounded output buffer |
//! | `heartbeat` | `tether-notify-demo` (`notify = "watchdog"`, 2 s) | an sd_notify daemon; can be told to stop `WATCHDOG=1` or to flood stdout |
//! | `ticker` | a shell loop printing a line every 2 s | an ordinary service |
//! | `sensor` | critical: 3 restarts within 30 s, then `on_exhausted = "reboot"`; fails at start while `/run/sensor-fail` exists | the orderly-reboot rung |
//! | `counter` (matrix only, [`Appliance::with_counter`]) | `tether-fault counter`: `cseq=N` on stdout every 10 ms | the "no output line lost" check of the restarter rows: the numbers that reach syslogd's file must have no gap |
//!
//! Timings ([`DEMO_TETHER_TOML`]): beat 250 ms, hang 2 s, restart delay
//! 500 ms, startup grace 1 s, stale 4 s, hardware 5 s: they pass the budget
//! validation of `tether_common::budget` (checked in a test), and a
//! hardware reset follows a hung init within 4 + 5 s.
//!
//! Boot: the preinit ([`crate::image`]) loads the modules and mounts the
//! disk on `/var`; the appliance's stage ([`STAGE`]) starts the fault agent
//! on `ttyS1` and `exec`s `/sbin/tether-init`. All binaries are in `/sbin`
//! (`[paths] bin = ""`: beside tether-init).

use crate::binaries;
use crate::disk::Disk;
use crate::image::{Assets, Image, BASE_MODULES};
use crate::qemu::{Vm, VmConfig};
use std::path::{Path, PathBuf};

/// `/etc/tether/tether.toml` of the demo appliance.
pub const DEMO_TETHER_TOML: &str = r#"# The demo appliance of tether's VM tests (vm-tests/src/appliance.rs).
[timing]
beat_interval = "250ms"
hang_timeout = "2s"
restart_delay = "500ms"
startup_grace = "1s"
stale_timeout = "4s"
hardware_timeout = "5s"
liveness_interval = "30s"

[watchdog]
device = "/dev/watchdog0"

[log]
syslog_socket = "/dev/log"
kmsg = true

[init]
# Shutdown: services have 1 s stop timeouts; the whole stop is bounded.
stop_timeout = "5s"
kill_grace = "1s"

[paths]
services = "/etc/tether/services"
run = "/run/tether"
state = "/var/lib/tether"
bin = ""
"#;

/// The demo's service files, `(name, contents)`.
pub const DEMO_SERVICES: &[(&str, &str)] = &[
    (
        "syslogd",
        r#"# busybox syslogd: /dev/log -> /var/log/messages (on the disk)
exec = ["/sbin/syslogd", "-n", "-O", "/var/log/messages"]
restart_delay = "500ms"
"#,
    ),
    (
        "heartbeat",
        r#"# an sd_notify daemon: READY=1, then WATCHDOG=1 every 500 ms
exec = ["/sbin/tether-notify-demo"]
notify = "watchdog"
watchdog_timeout = "2s"
stop_timeout = "1s"
restart_delay = "500ms"
"#,
    ),
    (
        "ticker",
        r#"# an ordinary service
exec = ["/bin/sh", "-c", "i=0; while :; do i=$((i + 1)); echo \"ticker $i\"; sleep 2; done"]
stop_timeout = "1s"
restart_delay = "500ms"
"#,
    ),
    (
        "sensor",
        r#"# critical: when it cannot run, the appliance reboots
exec = ["/bin/sh", "-c", "if [ -e /run/sensor-fail ]; then echo 'sensor: device not responding'; exit 3; fi; echo 'sensor: reading'; while :; do sleep 3600; done"]
restart_delay = "500ms"
stop_timeout = "1s"
max_restarts = 3
window = "30s"
on_exhausted = "reboot"
"#,
    ),
];

/// An interactive shell on the console, for `demo.sh --interactive`.
pub const SHELL_SERVICE: (&str, &str) = (
    "console-shell",
    r#"# a root shell on the serial console (demo only)
exec = ["/bin/cttyhack", "/bin/sh", "-l"]
restart_delay = "1s"
"#,
);

/// A service writing a numbered line (`cseq=N`) every 10 ms on stdout,
/// for the matrix's "no output line lost" checks.
pub const COUNTER_SERVICE: (&str, &str) = (
    "counter",
    r#"# a numbered line every 10 ms (the matrix checks none is lost)
exec = ["/sbin/tether-fault", "counter"]
stop_timeout = "1s"
restart_delay = "500ms"
"#,
);

/// The appliance's boot stage, `/etc/tether-vm/next`: the agent on
/// `ttyS1` (outside the chain), then tether-init as PID 1.
pub const STAGE: &str = r#"#!/bin/sh
stty -F /dev/ttyS1 raw -echo 115200 2>/dev/null
setsid /sbin/tether-fault agent </dev/ttyS1 >/dev/ttyS1 2>&1 &
echo "tether-vm: exec tether-init"
exec /sbin/tether-init
"#;

/// The boot stage of the image as a user would ship it: no fault agent
/// (`tether-inject` adds it at boot, see `crate::inject::source`).
pub const STAGE_NO_AGENT: &str = r#"#!/bin/sh
echo "tether-vm: exec tether-init"
exec /sbin/tether-init
"#;

/// What goes into an appliance image.
#[derive(Clone, Debug)]
pub struct Appliance {
    pub tether_toml: String,
    pub services: Vec<(String, String)>,
    /// Extra kernel command line (`panic=` etc.).
    pub append: String,
}

impl Appliance {
    /// The demo appliance.
    pub fn demo() -> Appliance {
        Appliance {
            tether_toml: DEMO_TETHER_TOML.to_string(),
            services: DEMO_SERVICES
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect(),
            append: "panic=0 quiet".to_string(),
        }
    }

    /// Adds the console shell (interactive demo).
    pub fn with_shell(mut self) -> Appliance {
        self.services
            .push((SHELL_SERVICE.0.to_string(), SHELL_SERVICE.1.to_string()));
        self
    }

    /// Adds the counter (fault matrix).
    pub fn with_counter(mut self) -> Appliance {
        self.services
            .push((COUNTER_SERVICE.0.to_string(), COUNTER_SERVICE.1.to_string()));
        self
    }

    /// The parsed configuration (checked by the same code the chain uses).
    pub fn config(&self) -> Result<tether_common::config::Config, String> {
        tether_common::config::Config::parse(
            &self.tether_toml,
            Path::new("/etc/tether/tether.toml"),
        )
        .map_err(|e| e.to_string())
    }

    /// Builds the static binaries (once per process) and the initramfs.
    pub fn image(&self, assets: &Assets) -> Result<Image, String> {
        self.image_with_stage(assets, STAGE)
    }

    /// The image without the fault agent ([`STAGE_NO_AGENT`]).
    pub fn user_image(&self, assets: &Assets) -> Result<Image, String> {
        self.image_with_stage(assets, STAGE_NO_AGENT)
    }

    fn image_with_stage(&self, assets: &Assets, stage: &str) -> Result<Image, String> {
        let dir = binaries::build(&[
            "tether-init",
            "tether-restarter",
            "tether-watchdogd",
            "tether-vm-tests",
        ])?;
        let mut image = Image::base(assets, BASE_MODULES, true, stage)?;
        for name in binaries::CHAIN.iter().chain(binaries::TOOLS) {
            let p = binaries::static_binary(&dir, name)?;
            image
                .archive
                .host_file(&format!("/sbin/{}", name), 0o755, &p)
                .map_err(|e| e.to_string())?;
        }
        image
            .archive
            .file("/etc/tether/tether.toml", 0o644, self.tether_toml.clone());
        image.archive.dir("/etc/tether/services");
        for (name, text) in &self.services {
            image.archive.file(
                &format!("/etc/tether/services/{}.toml", name),
                0o644,
                text.clone(),
            );
        }
        image.archive.file(
            "/etc/profile",
            0o644,
            "export PS1='appliance# '\nexport PATH=/sbin:/bin:/usr/sbin:/usr/bin\n",
        );
        Ok(image)
    }
}

/// A booted appliance: the VM, its disk and directory.
pub struct Guest {
    pub vm: Vm,
    pub disk: Disk,
    pub dir: PathBuf,
}

/// Builds the image and disk in `dir` and starts the VM (agent port on).
pub fn boot(name: &str, appliance: &Appliance, dir: &Path) -> Result<Guest, String> {
    let assets = Assets::get()?;
    let image = appliance.image(assets)?;
    let initrd = dir.join("initrd.cpio");
    image.write(&initrd)?;
    let disk = Disk::create(&dir.join("disk.img"), 64).map_err(|e| e.to_string())?;
    let mut cfg = VmConfig::new(name, &assets.boot_image, &initrd, dir);
    cfg.disk = Some(disk.path.clone());
    cfg.agent = true;
    cfg.append = appliance.append.clone();
    cfg.transcript = Some(dir.join("transcript.log"));
    let vm = Vm::start(cfg).map_err(|e| e.to_string())?;
    Ok(Guest {
        vm,
        disk,
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_timings_pass_the_budget_validation() {
        let c = Appliance::demo().config().unwrap();
        tether_common::budget::validate(&c).unwrap();
        assert_eq!(c.timing.hardware_timeout, std::time::Duration::from_secs(5));
        assert_eq!(c.timing.stale_timeout, std::time::Duration::from_secs(4));
    }

    #[test]
    fn demo_services_parse_with_the_restarters_parser() {
        for (name, text) in DEMO_SERVICES
            .iter()
            .chain([&SHELL_SERVICE, &COUNTER_SERVICE])
        {
            let file = PathBuf::from(format!("/etc/tether/services/{}.toml", name));
            let spec = tether_restarter::service::parse(text, &file)
                .unwrap_or_else(|e| panic!("{}: {}", name, e));
            assert_eq!(spec.name, *name);
        }
    }
}
