//! An initramfs: a `newc` (SVR4, no CRC) cpio archive written here, without
//! a host `cpio`.
//!
//! Decisions:
//! - Uncompressed: the kernel unpacks plain cpio, so no compressor is
//!   needed on either side; the archive is a few MB and read from the host's
//!   page cache by QEMU.
//! - Entries are kept sorted by path with every parent directory created
//!   implicitly, so a directory always precedes its contents.
//! - Owner root, fixed mtime (0): the same inputs give the same bytes.
//! - Device nodes are plain archive entries, so building needs no root: the
//!   kernel needs `/dev/console` in the archive to give init its console
//!   before anything mounts devtmpfs.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// One archive member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Permission bits (`0o755`...), without the file type.
    pub perm: u32,
    pub kind: Kind,
}

/// An archive being assembled. Paths are absolute-looking (`/sbin/init`) or
/// relative; both are stored relative (`sbin/init`).
#[derive(Clone, Debug, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

fn clean(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl Initramfs {
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    fn parents(&mut self, path: &str) {
        let mut acc = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            self.entries.entry(acc.clone()).or_insert(Entry {
                perm: 0o755,
                kind: Kind::Dir,
            });
        }
    }

    fn put(&mut self, path: &str, entry: Entry) {
        let p = clean(path);
        assert!(!p.is_empty(), "the archive root cannot be replaced");
        self.parents(&p);
        self.entries.insert(p, entry);
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.put(
            path,
            Entry {
                perm: 0o755,
                kind: Kind::Dir,
            },
        );
        self
    }

    pub fn file(&mut self, path: &str, perm: u32, contents: impl Into<Vec<u8>>) -> &mut Self {
        self.put(
            path,
            Entry {
                perm,
                kind: Kind::File(contents.into()),
            },
        );
        self
    }

    /// Adds a host file's contents.
    pub fn host_file(&mut self, path: &str, perm: u32, host: &Path) -> io::Result<&mut Self> {
        let bytes = std::fs::read(host)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {}", host.display(), e)))?;
        Ok(self.file(path, perm, bytes))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.put(
            path,
            Entry {
                perm: 0o777,
                kind: Kind::Symlink(target.to_string()),
            },
        );
        self
    }

    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> &mut Self {
        self.put(
            path,
            Entry {
                perm,
                kind: Kind::CharDev { major, minor },
            },
        );
        self
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(&clean(path))
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|s| s.as_str())
    }

    /// Writes the archive (entries, then the `TRAILER!!!`).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut pos = 0usize;
        for (ino, (path, e)) in (1u32..).zip(self.entries.iter()) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match &e.kind {
                Kind::Dir => (0o040000 | e.perm, &[], (0, 0)),
                Kind::File(b) => (0o100000 | e.perm, b, (0, 0)),
                Kind::Symlink(t) => (0o120000 | e.perm, t.as_bytes(), (0, 0)),
                Kind::CharDev { major, minor } => (0o020000 | e.perm, &[], (*major, *minor)),
            };
            let nlink = if matches!(e.kind, Kind::Dir) { 2 } else { 1 };
            pos += write_member(w, pos, ino, mode, nlink, rdev, path, data)?;
        }
        write_member(w, pos, 0, 0, 1, (0, 0), "TRAILER!!!", &[])?;
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v).expect("writing to a Vec cannot fail");
        v
    }

    /// Writes the archive to `path` (via a temporary file renamed into place).
    pub fn write_file(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = io::BufWriter::new(std::fs::File::create(&tmp)?);
        self.write_to(&mut f)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

fn pad4(w: &mut impl Write, len: usize) -> io::Result<usize> {
    let pad = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..pad])?;
    Ok(pad)
}

/// One `070701` header, the NUL-terminated name and the data, each padded
/// to 4 bytes (relative to the archive start, `pos`). Returns bytes written.
#[allow(clippy::too_many_arguments)]
fn write_member(
    w: &mut impl Write,
    pos: usize,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) -> io::Result<usize> {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len(),
        0,
        0,
        rdev.0,
        rdev.1,
        namesize,
        0
    );
    debug_assert_eq!(header.len(), 110);
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    let mut n = 110 + namesize;
    n += pad4(w, pos + n)?;
    w.write_all(data)?;
    n += data.len();
    n += pad4(w, pos + n)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of what we write, independent of the writer's code paths:
    /// (name, mode, rdev major, rdev minor, data) per member.
    fn parse(b: &[u8]) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let hex = |s: &[u8]| u32::from_str_radix(std::str::from_utf8(s).unwrap(), 16).unwrap();
        let mut out = Vec::new();
        let mut p = 0;
        loop {
            assert_eq!(&b[p..p + 6], b"070701", "magic at {}", p);
            let f = |i: usize| hex(&b[p + 6 + i * 8..p + 14 + i * 8]);
            let (mode, size, rmaj, rmin, namesize) =
                (f(1), f(6) as usize, f(9), f(10), f(11) as usize);
            let name = std::str::from_utf8(&b[p + 110..p + 110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[p + 110 + namesize - 1], 0);
            let mut q = p + 110 + namesize;
            q = q.div_ceil(4) * 4;
            let data = b[q..q + size].to_vec();
            q = (q + size).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                assert_eq!(q, b.len());
                return out;
            }
            out.push((name, mode, rmaj, rmin, data));
            p = q;
        }
    }

    #[test]
    fn newc_archive_lists_parents_before_children_and_ends_with_trailer() {
        let mut a = Initramfs::new();
        a.file("/sbin/init", 0o755, b"#!/bin/sh\n".to_vec())
            .symlink("/bin/sh", "busybox")
            .char_dev("/dev/console", 0o600, 5, 1)
            .file("lib/modules/a.ko", 0o644, vec![7u8; 5]);
        let members = parse(&a.to_bytes());
        let names: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "lib",
                "lib/modules",
                "lib/modules/a.ko",
                "sbin",
                "sbin/init"
            ]
        );
        let get = |n: &str| members.iter().find(|m| m.0 == n).unwrap().clone();
        assert_eq!(get("sbin/init").1, 0o100755);
        assert_eq!(get("sbin/init").4, b"#!/bin/sh\n");
        assert_eq!(get("bin/sh").1, 0o120777);
        assert_eq!(get("bin/sh").4, b"busybox");
        assert_eq!(
            (
                get("dev/console").1,
                get("dev/console").2,
                get("dev/console").3
            ),
            (0o020600, 5, 1)
        );
        assert_eq!(get("lib").1, 0o040755);
        assert_eq!(get("lib/modules/a.ko").4, vec![7u8; 5]);
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        let build = || {
            let mut a = Initramfs::new();
            a.file("b", 0o644, "x").file("a/c", 0o600, "yy");
            a.to_bytes()
        };
        assert_eq!(build(), build());
        assert_eq!(build().len() % 4, 0);
    }
}
