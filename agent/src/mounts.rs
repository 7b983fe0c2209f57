//! The mount boundary: mounting ZFS datasets and unmounting them, as a trait with the real
//! mount(2) implementation and a fake that stands files in for a dataset's content.

use anyhow::Context;
use nix::mount::{MntFlags, MsFlags};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Mounts and unmounts datasets.
pub trait Mounter {
    /// Mounts `dataset` at `target` (an existing directory).
    fn mount_zfs(&self, dataset: &str, target: &Path, readonly: bool) -> anyhow::Result<()>;
    /// Unmounts whatever is mounted at `target`.
    fn unmount(&self, target: &Path) -> anyhow::Result<()>;
    /// Whether a file system is mounted at `target` (it is on another device than its parent).
    fn is_mountpoint(&self, target: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let parent = target.parent().unwrap_or(target);
        match (std::fs::metadata(target), std::fs::metadata(parent)) {
            (Ok(a), Ok(b)) => a.dev() != b.dev(),
            _ => false,
        }
    }
}

/// mount(2) and umount(2).
#[derive(Clone, Copy, Debug, Default)]
pub struct SysMounter;

impl Mounter for SysMounter {
    fn mount_zfs(&self, dataset: &str, target: &Path, readonly: bool) -> anyhow::Result<()> {
        log::debug!(
            "mount -t zfs {dataset} {}{}",
            target.display(),
            if readonly { " (read-only)" } else { "" }
        );
        let mut flags = MsFlags::MS_NOATIME;
        if readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        // "zfsutil" tells ZFS that the caller manages the mountpoint itself (as mount.zfs does
        // for `zfs mount`), so datasets with a mountpoint other than legacy mount too.
        nix::mount::mount(Some(dataset), target, Some("zfs"), flags, Some("zfsutil"))
            .with_context(|| format!("mounting {dataset} at {}", target.display()))
    }

    fn unmount(&self, target: &Path) -> anyhow::Result<()> {
        log::debug!("umount {}", target.display());
        nix::mount::umount2(target, MntFlags::empty())
            .with_context(|| format!("unmounting {}", target.display()))
    }
}

/// One line of the mount table (`/proc/self/mounts`), octal escapes decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// What is mounted (a dataset, a device).
    pub source: String,
    /// Where, as an absolute path.
    pub target: String,
    /// The file system type.
    pub fstype: String,
    /// The mount options.
    pub options: String,
}

/// Decodes the kernel's octal escapes (`\040` for a space) in a mount table field.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(c) = u8::try_from(v) {
                out.push(c);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a mount table in `/proc/self/mounts`' format.
pub fn parse_mount_table(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| MountEntry {
                source: unescape(f[0]),
                target: unescape(f[1]),
                fstype: f[2].to_owned(),
                options: f[3].to_owned(),
            })
        })
        .collect()
}

/// The mount table of the system whose root is `root` (`<root>/proc/self/mounts`); empty when
/// it cannot be read.
pub fn mount_table(root: &Path) -> Vec<MountEntry> {
    std::fs::read_to_string(root.join("proc/self/mounts"))
        .map(|t| parse_mount_table(&t))
        .unwrap_or_default()
}

/// A fake [`Mounter`]: "mounting" a dataset writes the files registered for it into the
/// target, plus whatever was in the target when it was last unmounted; unmounting moves the
/// target's content away into the fake dataset and leaves the directory empty.
#[derive(Debug, Default)]
pub struct FakeMounter {
    contents: BTreeMap<String, Vec<(String, Vec<u8>, u32)>>,
    failing: BTreeMap<String, String>,
    mounted: RefCell<Vec<(String, PathBuf)>>,
    /// Per dataset, a directory holding its content while it is not mounted.
    stored: RefCell<BTreeMap<String, tempfile_dir::Dir>>,
}

/// A directory removed when dropped, for the fake's stored dataset contents.
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> std::io::Result<Dir> {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let p =
                std::env::temp_dir().join(format!("bootenv-fake-ds-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p)?;
            Ok(Dir(p))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Moves every entry of `from` into `to`.
fn move_entries(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let e = entry?;
        std::fs::rename(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

impl FakeMounter {
    /// No datasets registered.
    pub fn new() -> FakeMounter {
        FakeMounter::default()
    }

    /// Registers a file (relative path, content, mode) that appears when `dataset` is mounted.
    pub fn file(mut self, dataset: &str, rel: &str, content: &[u8], mode: u32) -> FakeMounter {
        self.contents
            .entry(dataset.into())
            .or_default()
            .push((rel.into(), content.to_vec(), mode));
        self
    }

    /// Makes mounting `dataset` fail with `error`.
    pub fn failing(mut self, dataset: &str, error: &str) -> FakeMounter {
        self.failing.insert(dataset.into(), error.into());
        self
    }

    /// What is mounted now, in mount order.
    pub fn mounted(&self) -> Vec<(String, PathBuf)> {
        self.mounted.borrow().clone()
    }
}

impl Mounter for FakeMounter {
    fn mount_zfs(&self, dataset: &str, target: &Path, _readonly: bool) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        anyhow::ensure!(
            target.is_dir(),
            "mounting {dataset} at {}: no such directory",
            target.display()
        );
        if self.mounted.borrow().iter().any(|(d, _)| d == dataset) {
            // As the kernel answers: a ZFS file system mounts once.
            return Err(
                anyhow::Error::new(nix::errno::Errno::EBUSY).context(format!(
                    "mounting {dataset} at {}: filesystem already mounted",
                    target.display()
                )),
            );
        }
        if let Some(e) = self.failing.get(dataset) {
            anyhow::bail!("mounting {dataset} at {}: {e}", target.display());
        }
        // The registered files are the dataset's content the first time; after that it is
        // whatever was there when it was last unmounted.
        match self.stored.borrow_mut().remove(dataset) {
            Some(dir) => move_entries(dir.path(), target)?,
            None => {
                for (rel, content, mode) in self.contents.get(dataset).into_iter().flatten() {
                    let p = target.join(rel);
                    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
                    std::fs::write(&p, content)?;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
                }
            }
        }
        self.mounted
            .borrow_mut()
            .push((dataset.into(), target.into()));
        Ok(())
    }

    fn is_mountpoint(&self, target: &Path) -> bool {
        self.mounted.borrow().iter().any(|(_, t)| t == target)
    }

    fn unmount(&self, target: &Path) -> anyhow::Result<()> {
        let mut m = self.mounted.borrow_mut();
        let at = m
            .iter()
            .rposition(|(_, t)| t == target)
            .context("not mounted")?;
        let (dataset, _) = m.remove(at);
        let dir = tempfile_dir::Dir::new()?;
        move_entries(target, dir.path())?;
        self.stored.borrow_mut().insert(dataset, dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_table_is_read_with_its_escapes() {
        let t = parse_mount_table(
            "tank/ROOT/v1 / zfs rw,relatime 0 0\n/dev/vda1 /boot/my\\040efi vfat rw 0 0\nbad line\n",
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].source, "tank/ROOT/v1");
        assert_eq!(t[1].target, "/boot/my efi");
        assert_eq!(
            (t[1].fstype.as_str(), t[1].options.as_str()),
            ("vfat", "rw")
        );
    }
}
