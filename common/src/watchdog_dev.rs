//! The Linux watchdog device (`/dev/watchdog*`, `linux/watchdog.h`) on an
//! owned descriptor, or a simulated one: a FIFO or plain file where a write is
//! a pet (tests, `integration::hw`).
//!
//! Decisions:
//! - The device is opened `O_WRONLY | O_CLOEXEC | O_NONBLOCK`. On a FIFO with
//!   no reader the open fails with `ENXIO`, which [`is_absent`] classes with
//!   `ENOENT`, `ENODEV` and `EBUSY` as "not there yet, retry".
//! - The ioctl request numbers are computed here (generic `_IOC` layout,
//!   using nix's per-architecture shifts) and checked against the values of
//!   `linux/watchdog.h` in a test; the calls go through the size-checked
//!   wrappers in `sys`.
//! - Any ioctl failing with `ENOTTY` marks the device simulated; from then on
//!   [`WatchdogDev::keepalive`] writes a byte instead of calling the ioctl.
//! - Dropping a `WatchdogDev` closes the descriptor *without* the magic
//!   close: the hardware stays armed. [`WatchdogDev::magic_close`] is the only
//!   path that writes `V`.

use crate::sys::{self, IoctlRequest};
use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `struct watchdog_info` of `linux/watchdog.h`, for its size and layout;
/// decoded from bytes by [`WatchdogDev::get_support`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WatchdogInfoRaw {
    pub options: u32,
    pub firmware_version: u32,
    pub identity: [u8; 32],
}

const WATCHDOG_IOCTL_BASE: u8 = b'W';
const INT: usize = std::mem::size_of::<libc::c_int>();

/// `_IOC(dir, type, nr, size)`, generic layout with nix's per-architecture
/// shifts and direction values.
pub const fn ioc(dir: u8, ty: u8, nr: u8, size: usize) -> IoctlRequest {
    use nix::sys::ioctl::{
        DIRMASK, DIRSHIFT, NRMASK, NRSHIFT, SIZEMASK, SIZESHIFT, TYPEMASK, TYPESHIFT,
    };
    ((dir as IoctlRequest & DIRMASK) << DIRSHIFT)
        | ((ty as IoctlRequest & TYPEMASK) << TYPESHIFT)
        | ((nr as IoctlRequest & NRMASK) << NRSHIFT)
        | ((size as IoctlRequest & SIZEMASK) << SIZESHIFT)
}

const R: u8 = nix::sys::ioctl::READ;
const RW: u8 = nix::sys::ioctl::READ | nix::sys::ioctl::WRITE;

pub const WDIOC_GETSUPPORT: IoctlRequest = ioc(
    R,
    WATCHDOG_IOCTL_BASE,
    0,
    std::mem::size_of::<WatchdogInfoRaw>(),
);
pub const WDIOC_GETSTATUS: IoctlRequest = ioc(R, WATCHDOG_IOCTL_BASE, 1, INT);
pub const WDIOC_GETBOOTSTATUS: IoctlRequest = ioc(R, WATCHDOG_IOCTL_BASE, 2, INT);
pub const WDIOC_GETTEMP: IoctlRequest = ioc(R, WATCHDOG_IOCTL_BASE, 3, INT);
pub const WDIOC_SETOPTIONS: IoctlRequest = ioc(R, WATCHDOG_IOCTL_BASE, 4, INT);
pub const WDIOC_KEEPALIVE: IoctlRequest = ioc(R, WATCHDOG_IOCTL_BASE, 5, INT);
pub const WDIOC_SETTIMEOUT: IoctlRequest = ioc(RW, WATCHDOG_IOCTL_BASE, 6, INT);
pub const WDIOC_GETTIMEOUT: IoctlRequest = ioc(R, WATCHDOG_IOCTL_BASE, 7, INT);
pub const WDIOC_SETPRETIMEOUT: IoctlRequest = ioc(RW, WATCHDOG_IOCTL_BASE, 8, INT);
pub const WDIOC_GETPRETIMEOUT: IoctlRequest = ioc(R, WATCHDOG_IOCTL_BASE, 9, INT);
pub const WDIOC_GETTIMELEFT: IoctlRequest = ioc(R, WATCHDOG_IOCTL_BASE, 10, INT);

// `options` / status bits.
pub const WDIOF_OVERHEAT: u32 = 0x0001;
pub const WDIOF_FANFAULT: u32 = 0x0002;
pub const WDIOF_EXTERN1: u32 = 0x0004;
pub const WDIOF_EXTERN2: u32 = 0x0008;
pub const WDIOF_POWERUNDER: u32 = 0x0010;
pub const WDIOF_CARDRESET: u32 = 0x0020;
pub const WDIOF_POWEROVER: u32 = 0x0040;
pub const WDIOF_SETTIMEOUT: u32 = 0x0080;
pub const WDIOF_MAGICCLOSE: u32 = 0x0100;
pub const WDIOF_PRETIMEOUT: u32 = 0x0200;
pub const WDIOF_ALARMONLY: u32 = 0x0400;
pub const WDIOF_KEEPALIVEPING: u32 = 0x8000;

const FLAG_NAMES: [(u32, &str); 12] = [
    (WDIOF_OVERHEAT, "OVERHEAT"),
    (WDIOF_FANFAULT, "FANFAULT"),
    (WDIOF_EXTERN1, "EXTERN1"),
    (WDIOF_EXTERN2, "EXTERN2"),
    (WDIOF_POWERUNDER, "POWERUNDER"),
    (WDIOF_CARDRESET, "CARDRESET"),
    (WDIOF_POWEROVER, "POWEROVER"),
    (WDIOF_SETTIMEOUT, "SETTIMEOUT"),
    (WDIOF_MAGICCLOSE, "MAGICCLOSE"),
    (WDIOF_PRETIMEOUT, "PRETIMEOUT"),
    (WDIOF_ALARMONLY, "ALARMONLY"),
    (WDIOF_KEEPALIVEPING, "KEEPALIVEPING"),
];

/// `WDIOF_*` bits by name, `|`-separated; unknown bits in hex; `none` for 0.
pub fn describe_flags(bits: u32) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut rest = bits;
    for (bit, name) in FLAG_NAMES {
        if bits & bit != 0 {
            parts.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{:#x}", rest));
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join("|")
    }
}

/// What `WDIOC_GETSUPPORT` says about the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchdogInfo {
    /// `WDIOF_*` bits the driver supports.
    pub options: u32,
    pub firmware_version: u32,
    /// The driver's name, e.g. `i6300ESB timer`.
    pub identity: String,
}

impl WatchdogInfo {
    fn from_bytes(b: &[u8; 40]) -> WatchdogInfo {
        let options = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let firmware_version = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        let id = &b[8..40];
        let end = id.iter().position(|&c| c == 0).unwrap_or(id.len());
        WatchdogInfo {
            options,
            firmware_version,
            identity: String::from_utf8_lossy(&id[..end]).into_owned(),
        }
    }
}

/// Whether an open error means "the device is not there yet, retry": no such
/// file (`ENOENT`), no driver (`ENODEV`), a FIFO with no reader (`ENXIO`), or
/// held by another process (`EBUSY`).
pub fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENXIO) | Some(libc::ENODEV) | Some(libc::EBUSY)
    )
}

/// An open watchdog device. Dropping it closes without disarming.
#[derive(Debug)]
pub struct WatchdogDev {
    fd: OwnedFd,
    path: PathBuf,
    simulated: Cell<bool>,
}

impl WatchdogDev {
    /// Opens `path` `O_WRONLY | O_CLOEXEC | O_NONBLOCK`. Opening a real
    /// device arms it. A FIFO or regular file is marked simulated at once.
    pub fn open(path: &Path) -> io::Result<WatchdogDev> {
        use nix::fcntl::OFlag;
        let fd = nix::fcntl::open(
            path,
            OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            nix::sys::stat::Mode::empty(),
        )?;
        let st = nix::sys::stat::fstat(fd.as_fd())?;
        let fmt = st.st_mode & libc::S_IFMT;
        let simulated = fmt == libc::S_IFIFO || fmt == libc::S_IFREG;
        Ok(WatchdogDev {
            fd,
            path: path.to_path_buf(),
            simulated: Cell::new(simulated),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when this is not a watchdog driver (a FIFO or file, or an ioctl
    /// said `ENOTTY`): a write is a pet, the timeout is not programmable.
    pub fn is_simulated(&self) -> bool {
        self.simulated.get()
    }

    fn note(&self, e: io::Error) -> io::Error {
        if e.raw_os_error() == Some(libc::ENOTTY) {
            self.simulated.set(true);
        }
        e
    }

    fn read_int(&self, request: IoctlRequest) -> io::Result<u32> {
        sys::ioctl_read_int(self.fd.as_fd(), request)
            .map(|v| v as u32)
            .map_err(|e| self.note(e))
    }

    /// `WDIOC_GETSUPPORT`.
    pub fn get_support(&self) -> io::Result<WatchdogInfo> {
        let mut buf = [0u8; 40];
        sys::ioctl_read_bytes(self.fd.as_fd(), WDIOC_GETSUPPORT, &mut buf)
            .map_err(|e| self.note(e))?;
        Ok(WatchdogInfo::from_bytes(&buf))
    }

    /// `WDIOC_SETTIMEOUT`: returns the timeout the driver applied (it may
    /// round or clamp).
    pub fn set_timeout(&self, secs: u32) -> io::Result<u32> {
        let v = libc::c_int::try_from(secs)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "timeout out of range"))?;
        sys::ioctl_readwrite_int(self.fd.as_fd(), WDIOC_SETTIMEOUT, v)
            .map(|v| v as u32)
            .map_err(|e| self.note(e))
    }

    /// `WDIOC_GETTIMEOUT`, in seconds.
    pub fn get_timeout(&self) -> io::Result<u32> {
        self.read_int(WDIOC_GETTIMEOUT)
    }

    /// `WDIOC_GETSTATUS`: `WDIOF_*` bits.
    pub fn get_status(&self) -> io::Result<u32> {
        self.read_int(WDIOC_GETSTATUS)
    }

    /// `WDIOC_GETBOOTSTATUS`: `WDIOF_*` bits describing the last reboot
    /// (`WDIOF_CARDRESET`: the watchdog reset the machine).
    pub fn get_bootstatus(&self) -> io::Result<u32> {
        self.read_int(WDIOC_GETBOOTSTATUS)
    }

    /// `WDIOC_GETTIMELEFT`, in seconds (not every driver supports it).
    pub fn get_timeleft(&self) -> io::Result<u32> {
        self.read_int(WDIOC_GETTIMELEFT)
    }

    /// `WDIOC_KEEPALIVE`; on a simulated device (or when the ioctl says
    /// `ENOTTY`) a one-byte write instead.
    pub fn keepalive(&self) -> io::Result<()> {
        if !self.simulated.get() {
            match self.read_int(WDIOC_KEEPALIVE) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {}
                Err(e) => return Err(e),
            }
        }
        self.pet()
    }

    /// A pet by `write(2)` of one byte that is not `V`. A full FIFO
    /// (`EAGAIN`) counts as petted: unread pets are already waiting.
    pub fn pet(&self) -> io::Result<()> {
        self.write_byte(b'.')
    }

    fn write_byte(&self, b: u8) -> io::Result<()> {
        loop {
            match nix::unistd::write(&self.fd, &[b]) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Disarms: writes the magic `V` and closes. The only path that writes
    /// `V`; the caller decides it is allowed (`[watchdog] allow_disarm`).
    pub fn magic_close(self) -> io::Result<()> {
        // On a FIFO a full pipe must not lose the V: retry EAGAIN briefly
        // by switching to blocking mode for this last write.
        let _ = sys::set_nonblocking(self.fd.as_fd(), false);
        loop {
            match nix::unistd::write(&self.fd, b"V") {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        nix::unistd::close(self.fd).map_err(io::Error::from)
    }
}

impl AsFd for WatchdogDev {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    // `as u64`: the request type is c_ulong with glibc but c_int with musl.
    #[allow(clippy::unnecessary_cast)]
    fn ioctl_numbers_match_linux_watchdog_h() {
        assert_eq!(std::mem::size_of::<WatchdogInfoRaw>(), 40);
        assert_eq!(WDIOC_GETSUPPORT as u64, 0x80285700);
        assert_eq!(WDIOC_GETSTATUS as u64, 0x80045701);
        assert_eq!(WDIOC_GETBOOTSTATUS as u64, 0x80045702);
        assert_eq!(WDIOC_GETTEMP as u64, 0x80045703);
        assert_eq!(WDIOC_SETOPTIONS as u64, 0x80045704);
        assert_eq!(WDIOC_KEEPALIVE as u64, 0x80045705);
        assert_eq!(WDIOC_SETTIMEOUT as u64, 0xC0045706);
        assert_eq!(WDIOC_GETTIMEOUT as u64, 0x80045707);
        assert_eq!(WDIOC_SETPRETIMEOUT as u64, 0xC0045708);
        assert_eq!(WDIOC_GETPRETIMEOUT as u64, 0x80045709);
        assert_eq!(WDIOC_GETTIMELEFT as u64, 0x8004570A);
        assert_eq!(sys::ioctl_size(WDIOC_GETSUPPORT), 40);
    }

    #[test]
    fn option_bits_match_linux_watchdog_h() {
        assert_eq!(WDIOF_OVERHEAT, 0x0001);
        assert_eq!(WDIOF_FANFAULT, 0x0002);
        assert_eq!(WDIOF_EXTERN1, 0x0004);
        assert_eq!(WDIOF_EXTERN2, 0x0008);
        assert_eq!(WDIOF_POWERUNDER, 0x0010);
        assert_eq!(WDIOF_CARDRESET, 0x0020);
        assert_eq!(WDIOF_POWEROVER, 0x0040);
        assert_eq!(WDIOF_SETTIMEOUT, 0x0080);
        assert_eq!(WDIOF_MAGICCLOSE, 0x0100);
        assert_eq!(WDIOF_PRETIMEOUT, 0x0200);
        assert_eq!(WDIOF_ALARMONLY, 0x0400);
        assert_eq!(WDIOF_KEEPALIVEPING, 0x8000);
        assert_eq!(describe_flags(0), "none");
        assert_eq!(
            describe_flags(WDIOF_CARDRESET | WDIOF_SETTIMEOUT | 0x10000),
            "CARDRESET|SETTIMEOUT|0x10000"
        );
    }

    #[test]
    fn watchdog_info_decodes_identity_up_to_nul() {
        let mut b = [0u8; 40];
        b[0..4].copy_from_slice(&(WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE).to_ne_bytes());
        b[4..8].copy_from_slice(&7u32.to_ne_bytes());
        b[8..8 + 15].copy_from_slice(b"i6300ESB timer\0");
        let i = WatchdogInfo::from_bytes(&b);
        assert_eq!(i.options, WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE);
        assert_eq!(i.firmware_version, 7);
        assert_eq!(i.identity, "i6300ESB timer");
    }

    fn fifo(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("tether-wdtest-{}-{}", std::process::id(), name));
        let _ = std::fs::remove_file(&p);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        p
    }

    #[test]
    fn fifo_without_reader_is_absent() {
        let p = fifo("noreader");
        let e = WatchdogDev::open(&p).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENXIO));
        assert!(is_absent(&e));
        let _ = std::fs::remove_file(&p);
        let e = WatchdogDev::open(&p).unwrap_err();
        assert!(is_absent(&e), "a missing path is absent too: {e}");
    }

    #[test]
    fn ioctls_on_a_fifo_fail_with_enotty_and_the_device_is_simulated() {
        let p = fifo("sim");
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&p)
            .unwrap();
        let dev = WatchdogDev::open(&p).unwrap();
        assert!(dev.is_simulated(), "a FIFO is simulated from the start");
        for r in [
            dev.get_support().map(|_| 0),
            dev.set_timeout(30),
            dev.get_timeout(),
            dev.get_bootstatus(),
            dev.get_timeleft(),
            dev.get_status(),
        ] {
            assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOTTY));
        }
        dev.keepalive().unwrap();
        dev.pet().unwrap();
        dev.magic_close().unwrap();
        let mut got = Vec::new();
        (&reader).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"..V", "keepalive and pet write one byte each, then V");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn enotty_marks_a_non_watchdog_character_device_simulated() {
        // /dev/null is a character device, so not simulated until an ioctl
        // says ENOTTY; keepalive then falls back to a write.
        let dev = WatchdogDev::open(Path::new("/dev/null")).unwrap();
        assert!(!dev.is_simulated());
        dev.keepalive().unwrap();
        assert!(dev.is_simulated());
    }

    use std::os::unix::fs::OpenOptionsExt;
}
