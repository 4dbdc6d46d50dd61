//! The harness itself, proven on a trivial guest (no tether binaries): the
//! Debian kernel boots our initramfs under TCG, the modules resolved from
//! `.modinfo` load (virtio disk, ext4, watchdog core, i6300esb with
//! `nowayout=1`), `/dev/watchdog0` appears, a magic close is ignored, the
//! hardware resets the guest when nobody pets it, the guest boots again in
//! the same QEMU, the disk keeps what the first boot wrote, and the second
//! boot sees the card-reset boot status.
//!
//! Prints boot and reset timings (`cargo test -p tether-vm-tests --test
//! boot -- --nocapture`).

use std::time::Duration;
use tether_vm_tests::disk::Disk;
use tether_vm_tests::events::Source;
use tether_vm_tests::image::{run_dir, Assets, Image};
use tether_vm_tests::qemu::{Vm, VmConfig};

/// i6300esb heartbeat for this probe (module parameter), seconds.
const HEARTBEAT: u64 = 4;

/// `/etc/tether-vm/next` of the probe: counts boots on the disk; on the
/// first, opens the watchdog, writes the magic close character and closes
/// it (ignored with nowayout=1: the timer keeps running) and waits; on the
/// second, reports and powers off.
const PROBE: &str = r#"#!/bin/sh
n=$(cat /var/lib/tether/boot-probe 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > /var/lib/tether/boot-probe
sync
echo "probe: boot=$n bootstatus=$(cat /sys/class/watchdog/watchdog0/bootstatus) timeout=$(cat /sys/class/watchdog/watchdog0/timeout) dev=$(ls /dev/watchdog0)"
if [ "$n" = 1 ]; then
    printf V > /dev/watchdog0
    echo "probe: armed state=$(cat /sys/class/watchdog/watchdog0/state)"
    while :; do sleep 60; done
fi
echo "probe: second boot, powering off"
poweroff -f
"#;

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn unpetted_i6300esb_resets_the_guest_and_the_disk_survives() {
    let assets = Assets::get().unwrap_or_else(|e| panic!("VM assets: {}", e));
    let dir = run_dir("boot-probe");
    let heartbeat = format!("nowayout=1 heartbeat={}", HEARTBEAT);
    let modules = [
        ("virtio_pci", ""),
        ("virtio_blk", ""),
        ("crc32c_generic", ""),
        ("ext4", ""),
        ("watchdog", ""),
        ("i6300esb", heartbeat.as_str()),
    ];
    let image = Image::base(assets, &modules, true, PROBE).unwrap();
    let loaded: Vec<&str> = image
        .modules
        .modules
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    eprintln!("modules in load order: {}", loaded.join(" "));
    let pos = |n: &str| {
        loaded
            .iter()
            .position(|m| *m == n)
            .unwrap_or_else(|| panic!("{} not resolved", n))
    };
    assert!(
        pos("watchdog") < pos("i6300esb"),
        "watchdog core must load before the driver"
    );
    assert!(
        pos("jbd2") < pos("ext4") && pos("mbcache") < pos("ext4"),
        "ext4's dependencies come from .modinfo"
    );
    let initrd = dir.join("initrd.cpio");
    image.write(&initrd).unwrap();
    let disk = Disk::create(&dir.join("disk.img"), 32).unwrap();

    let mut cfg = VmConfig::new("boot-probe", &assets.boot_image, &initrd, &dir);
    cfg.disk = Some(disk.path.clone());
    cfg.append = "panic=0 quiet".into();
    cfg.transcript = Some(dir.join("transcript.log"));
    let mut vm = Vm::start(cfg).unwrap();
    let t = &mut vm.timeline;
    let start = t.start();

    let user1 = t
        .wait_line(
            Source::Console,
            "tether-vm: userspace",
            Duration::from_secs(90),
        )
        .unwrap();
    let done1 = t
        .wait_line(
            Source::Console,
            "tether-vm: preinit done",
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(
        done1.text.contains("watchdog=i6300ESB timer"),
        "watchdog0 is the i6300esb: {}",
        done1.text
    );
    let boot1 = t
        .wait_line(Source::Console, "probe: boot=", Duration::from_secs(30))
        .unwrap();
    assert_eq!(field(&boot1.text, "boot"), Some("1"), "{}", boot1.text);
    assert_eq!(
        field(&boot1.text, "bootstatus"),
        Some("0"),
        "a cold boot has no card reset: {}",
        boot1.text
    );
    assert_eq!(
        field(&boot1.text, "timeout"),
        Some(HEARTBEAT.to_string().as_str()),
        "{}",
        boot1.text
    );
    assert_eq!(
        field(&boot1.text, "dev"),
        Some("/dev/watchdog0"),
        "{}",
        boot1.text
    );
    let armed = t
        .wait_line(Source::Console, "probe: armed", Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        field(&armed.text, "state"),
        Some("active"),
        "nowayout keeps the timer running after a magic close: {}",
        armed.text
    );

    let fired = t
        .wait_line(Source::Qmp, "WATCHDOG", Duration::from_secs(HEARTBEAT + 60))
        .unwrap_or_else(|e| panic!("the hardware watchdog never fired: {}", e));
    assert!(fired.text.contains(r#""action":"reset""#), "{}", fired.text);
    let reset = t
        .wait_line(Source::Qmp, "RESET", Duration::from_secs(10))
        .unwrap();
    let user2 = t
        .wait_line(
            Source::Console,
            "tether-vm: userspace",
            Duration::from_secs(90),
        )
        .unwrap();
    let boot2 = t
        .wait_line(Source::Console, "probe: boot=", Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        field(&boot2.text, "boot"),
        Some("2"),
        "the disk kept the first boot's count: {}",
        boot2.text
    );
    assert_eq!(
        field(&boot2.text, "bootstatus"),
        Some("32"),
        "the second boot sees WDIOF_CARDRESET (0x20): {}",
        boot2.text
    );
    t.wait_line(Source::Console, "powering off", Duration::from_secs(30))
        .unwrap();
    assert!(
        vm.wait_exit(Duration::from_secs(60)).is_some(),
        "QEMU exits on the guest's poweroff"
    );
    assert_eq!(
        disk.read("lib/tether/boot-probe")
            .unwrap()
            .as_deref()
            .map(str::trim),
        Some("2")
    );

    let fire_after = fired.at.duration_since(armed.at);
    let secs = |d: Duration| d.as_secs_f64();
    eprintln!("boot 1: qemu start -> userspace {:.2}s (guest uptime {}s), -> preinit done {:.2}s (uptime {}s)",
        secs(user1.at - start), field(&user1.text, "uptime").unwrap_or("?"),
        secs(done1.at - start), field(&done1.text, "uptime").unwrap_or("?"));
    eprintln!(
        "reset: armed -> WATCHDOG event {:.2}s (heartbeat {}s), WATCHDOG -> RESET {:.3}s",
        secs(fire_after),
        HEARTBEAT,
        secs(reset.at - fired.at)
    );
    eprintln!(
        "boot 2: reset -> userspace {:.2}s (guest uptime {}s)",
        secs(user2.at - reset.at),
        field(&user2.text, "uptime").unwrap_or("?")
    );
    // The device must not fire early (that would be a mis-programmed
    // timeout), and must fire: generous upper bound on a loaded machine.
    assert!(
        fire_after >= Duration::from_millis(HEARTBEAT * 1000 * 3 / 4),
        "fired {:.2}s after arming, before the {}s heartbeat",
        secs(fire_after),
        HEARTBEAT
    );
    assert!(
        fire_after <= Duration::from_secs(HEARTBEAT + 20),
        "fired {:.2}s after arming",
        secs(fire_after)
    );
}
