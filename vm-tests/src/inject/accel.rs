//! The accelerator: KVM when it works on this machine, else TCG
//! (`--accel auto|kvm|tcg`, default `auto`).
//!
//! "Works" is decided by a probe, not by `/dev/kvm` being there: on the
//! machines this project is developed on, `/dev/kvm` opens but a KVM guest
//! hangs. The probe boots the user's kernel under KVM with no initramfs
//! and `panic=-1` (`-no-reboot`): a working KVM reaches the kernel's
//! "cannot mount root" panic and QEMU exits within seconds. No exit within
//! [`PROBE_TIME`] means KVM does not work here; `auto` then uses TCG and
//! the report says why; `kvm` is a setup error.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the probe guest may take to reach its panic under KVM (it
/// takes about 1 s where KVM works; about 4 s even under TCG).
pub const PROBE_TIME: Duration = Duration::from_secs(20);

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn parse(s: &str) -> Result<Accel, String> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!("--accel {:?}: one of auto, kvm, tcg", other)),
        }
    }
}

/// The accelerator the rows run under, and why.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub kvm: bool,
    pub note: String,
}

impl Chosen {
    /// QEMU's `-accel` value.
    pub fn name(&self) -> &'static str {
        if self.kvm {
            "kvm"
        } else {
            "tcg"
        }
    }
}

impl std::fmt::Display for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name().to_uppercase(), self.note)
    }
}

/// Decides the accelerator for a run (one probe per run, not per row).
pub fn choose(asked: Accel, kernel: &Path, dir: &Path) -> Result<Chosen, String> {
    if asked == Accel::Tcg {
        return Ok(Chosen {
            kvm: false,
            note: "--accel tcg".into(),
        });
    }
    match probe_kvm(kernel, dir) {
        Ok(took) => Ok(Chosen {
            kvm: true,
            note: format!("KVM probe booted the kernel in {:.1} s", took.as_secs_f64()),
        }),
        Err(why) if asked == Accel::Auto => Ok(Chosen {
            kvm: false,
            note: format!("KVM does not work here: {}", why),
        }),
        Err(why) => Err(format!("--accel kvm: KVM does not work here: {}", why)),
    }
}

/// Boots `kernel` under KVM to its "no root" panic; the time it took.
pub fn probe_kvm(kernel: &Path, dir: &Path) -> Result<Duration, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {}", e))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {}", dir.display(), e))?;
    let log = dir.join("kvm-probe.log");
    let out = std::fs::File::create(&log).map_err(|e| format!("{}: {}", log.display(), e))?;
    let begun = Instant::now();
    let mut child = Command::new(crate::qemu::qemu_binary())
        .args([
            "-nodefaults",
            "-no-user-config",
            "-accel",
            "kvm",
            "-smp",
            "1",
        ])
        .args([
            "-m",
            "256M",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .args([
            "-append",
            "console=ttyS0 panic=-1 root=/dev/tether-inject-probe",
        ])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting QEMU: {}", e))?;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                let took = begun.elapsed();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Linux version") && text.contains("Kernel panic") {
                    return Ok(took);
                }
                return Err(format!(
                    "the probe guest ended ({}) without reaching the kernel's panic: {} (console in {})",
                    st,
                    err.trim(),
                    log.display()
                ));
            }
            Ok(None) if begun.elapsed() > PROBE_TIME => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "the probe guest did not reach the kernel's panic in {} s ({} bytes of console, in {})",
                    PROBE_TIME.as_secs(),
                    text.len(),
                    log.display()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for QEMU: {}", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accelerator_words_parse_and_tcg_needs_no_probe() {
        assert_eq!(Accel::parse("auto"), Ok(Accel::Auto));
        assert_eq!(Accel::parse("kvm"), Ok(Accel::Kvm));
        assert!(Accel::parse("hvf")
            .unwrap_err()
            .contains("one of auto, kvm, tcg"));
        let c = choose(
            Accel::Tcg,
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(c.name(), "tcg");
    }
}
