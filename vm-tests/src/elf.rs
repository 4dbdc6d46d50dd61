//! A minimal reader of 64-bit little-endian ELF files: just enough to take
//! the `.modinfo` section out of a kernel module (`key=value\0` records:
//! `depends=`, `softdep=`, `alias=`, `parm=`...) and to tell whether an
//! executable is static (no `PT_INTERP` program header).
//!
//! Decision: a hand-written reader rather than a crate (`goblin`, `object`)
//! or a host tool (`modinfo` from kmod): the format needed here is a few
//! fixed offsets, and the harness should depend on as little of the host as
//! possible. Only ELFCLASS64 / ELFDATA2LSB is accepted (x86-64 guests).

use std::fmt;

/// Why a file could not be read as the ELF we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfError {
    /// Not `\x7fELF`.
    NotElf,
    /// ELF, but not 64-bit little-endian.
    Unsupported { class: u8, data: u8 },
    /// A header or table points outside the file.
    Truncated { what: &'static str },
    /// A module without a `.modinfo` section.
    NoModinfo,
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::NotElf => write!(f, "not an ELF file"),
            ElfError::Unsupported { class, data } => {
                write!(
                    f,
                    "unsupported ELF (class {}, data {}): only 64-bit little-endian",
                    class, data
                )
            }
            ElfError::Truncated { what } => {
                write!(f, "truncated ELF: {} lies outside the file", what)
            }
            ElfError::NoModinfo => write!(f, "no .modinfo section (not a kernel module?)"),
        }
    }
}

impl std::error::Error for ElfError {}

fn u16_at(b: &[u8], off: usize, what: &'static str) -> Result<u16, ElfError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(ElfError::Truncated { what })
}

fn u32_at(b: &[u8], off: usize, what: &'static str) -> Result<u32, ElfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(ElfError::Truncated { what })
}

fn u64_at(b: &[u8], off: usize, what: &'static str) -> Result<u64, ElfError> {
    b.get(off..off + 8)
        .map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        })
        .ok_or(ElfError::Truncated { what })
}

fn check_header(b: &[u8]) -> Result<(), ElfError> {
    if b.len() < 64 || &b[0..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    let (class, data) = (b[4], b[5]);
    if class != 2 || data != 1 {
        return Err(ElfError::Unsupported { class, data });
    }
    Ok(())
}

/// One section header: name, file offset and size.
struct Section {
    name: u32,
    offset: u64,
    size: u64,
}

fn sections(b: &[u8]) -> Result<(Vec<Section>, usize), ElfError> {
    check_header(b)?;
    let shoff = u64_at(b, 0x28, "e_shoff")? as usize;
    let shentsize = u16_at(b, 0x3a, "e_shentsize")? as usize;
    let shnum = u16_at(b, 0x3c, "e_shnum")? as usize;
    let shstrndx = u16_at(b, 0x3e, "e_shstrndx")? as usize;
    if shentsize < 64 {
        return Err(ElfError::Truncated {
            what: "section header entry",
        });
    }
    let mut out = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let h = shoff
            .checked_add(i * shentsize)
            .ok_or(ElfError::Truncated {
                what: "section header table",
            })?;
        out.push(Section {
            name: u32_at(b, h, "section header")?,
            offset: u64_at(b, h + 24, "section header")?,
            size: u64_at(b, h + 32, "section header")?,
        });
    }
    Ok((out, shstrndx))
}

fn section_bytes<'a>(b: &'a [u8], s: &Section, what: &'static str) -> Result<&'a [u8], ElfError> {
    let start = s.offset as usize;
    let end = start
        .checked_add(s.size as usize)
        .ok_or(ElfError::Truncated { what })?;
    b.get(start..end).ok_or(ElfError::Truncated { what })
}

/// The contents of the section named `name`, if present.
pub fn section<'a>(b: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, ElfError> {
    let (secs, shstrndx) = sections(b)?;
    let strtab = secs
        .get(shstrndx)
        .ok_or(ElfError::Truncated { what: "e_shstrndx" })?;
    let strtab = section_bytes(b, strtab, "section name table")?;
    for s in &secs {
        let n = s.name as usize;
        let Some(rest) = strtab.get(n..) else {
            continue;
        };
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        if &rest[..end] == name.as_bytes() {
            return Ok(Some(section_bytes(b, s, "section contents")?));
        }
    }
    Ok(None)
}

/// The `key=value` records of a module's `.modinfo` section, in file order
/// (keys repeat: `alias`, `parm`...).
pub fn modinfo(b: &[u8]) -> Result<Vec<(String, String)>, ElfError> {
    let sec = section(b, ".modinfo")?.ok_or(ElfError::NoModinfo)?;
    Ok(sec
        .split(|&c| c == 0)
        .filter(|r| !r.is_empty())
        .filter_map(|r| {
            let s = String::from_utf8_lossy(r);
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect())
}

/// Whether an executable asks for a dynamic loader (`PT_INTERP`). A static
/// binary (what the initramfs needs: it holds no libc) has none.
pub fn has_interpreter(b: &[u8]) -> Result<bool, ElfError> {
    check_header(b)?;
    let phoff = u64_at(b, 0x20, "e_phoff")? as usize;
    let phentsize = u16_at(b, 0x36, "e_phentsize")? as usize;
    let phnum = u16_at(b, 0x38, "e_phnum")? as usize;
    for i in 0..phnum {
        let h = phoff + i * phentsize;
        if u32_at(b, h, "program header")? == 3 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Builds a tiny ELF64 LE file with a section name table and one
/// `.modinfo` section holding `info` (tests of this crate).
#[cfg(test)]
pub(crate) fn fake_module(info: &[u8]) -> Vec<u8> {
    let shstr = b"\0.shstrtab\0.modinfo\0";
    let mut f = vec![0u8; 64];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    let shstr_off = f.len();
    f.extend_from_slice(shstr);
    let info_off = f.len();
    f.extend_from_slice(info);
    f.resize(f.len().div_ceil(8) * 8, 0);
    let shoff = f.len();
    let mut sh = |name: u32, off: usize, size: usize| {
        let mut h = [0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
        h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
        f.extend_from_slice(&h);
    };
    sh(0, 0, 0);
    sh(1, shstr_off, shstr.len());
    sh(11, info_off, info.len());
    f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
    f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    f[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_records_are_split_on_nul_and_equals() {
        let m =
            fake_module(b"license=GPL\0\0depends=watchdog,crc16\0alias=pci:v8086\0name=i6300esb\0");
        let info = modinfo(&m).unwrap();
        assert_eq!(
            info,
            vec![
                ("license".into(), "GPL".into()),
                ("depends".into(), "watchdog,crc16".into()),
                ("alias".into(), "pci:v8086".into()),
                ("name".into(), "i6300esb".into()),
            ]
        );
    }

    #[test]
    fn non_elf_and_truncated_files_are_errors_not_panics() {
        assert_eq!(modinfo(b"hello").unwrap_err(), ElfError::NotElf);
        let mut m = fake_module(b"depends=\0");
        m[0x28..0x30].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            modinfo(&m).unwrap_err(),
            ElfError::Truncated { .. }
        ));
        let mut m32 = fake_module(b"");
        m32[4] = 1;
        assert_eq!(
            modinfo(&m32).unwrap_err(),
            ElfError::Unsupported { class: 1, data: 1 }
        );
    }

    #[test]
    fn host_dynamic_executable_has_an_interpreter() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(
            has_interpreter(&sh).unwrap(),
            "/bin/sh on Debian is dynamically linked"
        );
    }
}
