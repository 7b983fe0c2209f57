//! A reproducible cpio "newc" archive, the format the kernel unpacks as the initramfs.
//!
//! Entries are kept sorted by path, parents are added before children, every mtime is the
//! given epoch and every owner is root, so the same inputs give the same bytes. Device nodes
//! are written as entries, so building needs no root privileges.

use std::collections::BTreeMap;
use std::io::Write;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with its content.
    File(Vec<u8>),
    /// A symbolic link to the target.
    Symlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
}

/// One entry: a kind and permission bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// Permission bits (`0o755`).
    pub mode: u32,
}

/// An archive under construction, keyed by path without the leading `/`.
#[derive(Clone, Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds (or replaces) an entry; missing parent directories are added as `0o755`.
    pub fn add(&mut self, path: &str, kind: Kind, mode: u32) {
        let p = clean(path);
        let mut parent = String::new();
        for comp in p
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .take(p.matches('/').count())
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            self.entries.entry(parent.clone()).or_insert(Entry {
                kind: Kind::Dir,
                mode: 0o755,
            });
        }
        self.entries.insert(p, Entry { kind, mode });
    }

    /// Whether `path` is in the archive.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&clean(path))
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(&clean(path))
    }

    /// All paths, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Total size of the file contents.
    pub fn content_bytes(&self) -> usize {
        self.entries
            .values()
            .map(|e| match &e.kind {
                Kind::File(b) => b.len(),
                _ => 0,
            })
            .sum()
    }

    /// Writes the archive with every mtime set to `mtime`.
    pub fn write(&self, mtime: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, e)) in self.entries.iter().enumerate() {
            let (type_bits, data, rdev): (u32, &[u8], (u32, u32)) = match &e.kind {
                Kind::Dir => (0o040000, &[], (0, 0)),
                Kind::File(b) => (0o100000, b, (0, 0)),
                Kind::Symlink(t) => (0o120000, t.as_bytes(), (0, 0)),
                Kind::CharDev(ma, mi) => (0o020000, &[], (*ma, *mi)),
            };
            let nlink = if e.kind == Kind::Dir { 2 } else { 1 };
            header(
                &mut out,
                ino as u32 + 1,
                type_bits | (e.mode & 0o7777),
                nlink,
                mtime,
                data.len() as u32,
                rdev,
                path,
            );
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 1, 0, 0, (0, 0), "TRAILER!!!");
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) {
    let namesize = name.len() as u32 + 1;
    let fields = [
        ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev.0, rdev.1, namesize, 0,
    ];
    let _ = write!(out, "070701");
    for f in fields {
        let _ = write!(out, "{f:08X}");
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_output_is_stable() {
        let mut a = Archive::new();
        a.add("/usr/sbin/zpool", Kind::File(b"ELF".to_vec()), 0o755);
        a.add("/dev/console", Kind::CharDev(5, 1), 0o600);
        a.add("bin/sh", Kind::Symlink("busybox".into()), 0o777);
        let paths: Vec<&str> = a.paths().collect();
        assert_eq!(
            paths,
            vec![
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "usr",
                "usr/sbin",
                "usr/sbin/zpool"
            ]
        );
        assert_eq!(a.write(0), a.clone().write(0));
        assert_eq!(a.write(0).len() % 4, 0);
    }

    #[test]
    fn gnu_cpio_reads_it_back() {
        // The archive must be readable by a standard tool, not only by the kernel.
        if std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .is_err()
        {
            return;
        }
        let mut a = Archive::new();
        a.add("etc/motd", Kind::File(b"hello\n".to_vec()), 0o644);
        a.add("bin/sh", Kind::Symlink("busybox".into()), 0o777);
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&a.write(0)).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read(dir.path().join("etc/motd")).unwrap(),
            b"hello\n"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("bin/sh"))
                .unwrap()
                .to_str(),
            Some("busybox")
        );
    }
}
