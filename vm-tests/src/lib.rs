//! The VM tier of tether's tests: a Debian kernel in QEMU (TCG) with the
//! i6300esb hardware watchdog, an initramfs written here, a persistent
//! disk, and the serial console and QMP read as one timeline of events.
//!
//! | module | holds |
//! |---|---|
//! | [`fetch`] | `apt-get download` + `dpkg -x` of the kernel and busybox-static into `target/vm-cache/` |
//! | [`elf`] | a minimal ELF reader: `.modinfo` of modules, static-ness of binaries |
//! | [`kernel`] | vmlinuz and modules of the package; dependencies resolved from `.modinfo` |
//! | [`initramfs`] | the newc cpio writer |
//! | [`disk`] | the ext4 disk image for `/var` (`/var/lib/tether`, `/var/log`) |
//! | [`image`] | assets, the base initramfs and the preinit every guest boots through |
//! | [`qemu`] | spawning QEMU, the console/agent/QMP channels |
//! | [`events`] | the timeline: timestamped events, waits with deadlines |
//! | [`agent`] | the host side of the fault agent's protocol |
//! | [`binaries`] | static builds of the guest binaries (`target/static/`) |
//! | [`appliance`] | the demo appliance: config, services, boot stage |
//! | [`inject`] | `tether-inject`: fault plans, run on an image (docs/INJECT.md) |
//! | [`report`] | the fault matrix table (`target/vm-matrix/matrix.md`) |
//!
//! Host requirements: `qemu-system-x86` (QEMU), `e2fsprogs` (mkfs.ext4,
//! debugfs), `apt` and `dpkg` with fresh lists (`apt-get update`) on the
//! first run, for the downloads.

pub mod agent;
pub mod appliance;
pub mod binaries;
pub mod debian;
pub mod disk;
pub mod elf;
pub mod events;
pub mod fetch;
pub mod image;
pub mod initramfs;
pub mod inject;
pub mod kernel;
pub mod qemu;
pub mod report;
