//! The mount boundary: mounting ZFS datasets and FAT file systems, binding the API file systems
//! into a chroot and unmounting them, as a trait with the real mount(2) implementation and a
//! fake that stands files in for a dataset's content; and the one parser of the mount table.

use anyhow::Context;
use nix::mount::{MntFlags, MsFlags};
use std::path::Path;

/// Whether `e` comes from a mount refused because the file system is mounted already (EBUSY).
pub fn is_busy(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<nix::errno::Errno>() == Some(&nix::errno::Errno::EBUSY))
}

/// Mounts and unmounts datasets. `Sync`: the boot path mounts the state dataset while its
/// ZFS reads run.
pub trait Mounter: Sync {
    /// Mounts `dataset` at `target` (an existing directory).
    fn mount_zfs(&self, dataset: &str, target: &Path, readonly: bool) -> anyhow::Result<()>;
    /// Unmounts whatever is mounted at `target`.
    fn unmount(&self, target: &Path) -> anyhow::Result<()>;
    /// Mounts the FAT file system on `device` (an ESP) at `target`, with `dirsync`: FAT has no
    /// journal; with it, Linux writes a new directory's first cluster before its entry, and a
    /// renamed file's entry before freeing what it replaced.
    fn mount_fat(&self, device: &Path, target: &Path) -> anyhow::Result<()>;
    /// Binds `source` (and what is mounted below it) at `target`.
    fn bind(&self, source: &Path, target: &Path) -> anyhow::Result<()>;
    /// Detaches what is mounted at `target` (lazily: it goes when no longer used); nothing
    /// mounted there is not an error.
    fn detach(&self, target: &Path) -> anyhow::Result<()>;
    /// The mount table of the system whose root is `root`, targets named from that root (the
    /// one place verbs learn what is mounted where).
    fn table(&self, root: &Path) -> Vec<MountEntry> {
        mount_table(root)
    }
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

    fn mount_fat(&self, device: &Path, target: &Path) -> anyhow::Result<()> {
        log::debug!("mount -t vfat {} {}", device.display(), target.display());
        nix::mount::mount(
            Some(device),
            target,
            Some("vfat"),
            MsFlags::MS_NOATIME | MsFlags::MS_DIRSYNC,
            None::<&str>,
        )
        .with_context(|| format!("mounting {} at {}", device.display(), target.display()))
    }

    fn bind(&self, source: &Path, target: &Path) -> anyhow::Result<()> {
        log::debug!("mount --rbind {} {}", source.display(), target.display());
        nix::mount::mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("binding {} at {}", source.display(), target.display()))
    }

    fn detach(&self, target: &Path) -> anyhow::Result<()> {
        log::debug!("umount -l {}", target.display());
        match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            // Already gone (a bind listed twice, or unmounted with its parent).
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("detaching {}", target.display())),
        }
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

#[cfg(test)]
mod fake;
#[cfg(test)]
pub use fake::FakeMounter;

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
