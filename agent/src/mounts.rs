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
}

/// mount(2) and umount(2).
#[derive(Clone, Copy, Debug, Default)]
pub struct SysMounter;

impl Mounter for SysMounter {
    fn mount_zfs(&self, dataset: &str, target: &Path, readonly: bool) -> anyhow::Result<()> {
        log::debug!("mount -t zfs {dataset} {}{}", target.display(), if readonly { " (read-only)" } else { "" });
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
        nix::mount::umount2(target, MntFlags::empty()).with_context(|| format!("unmounting {}", target.display()))
    }
}

/// A fake [`Mounter`]: "mounting" a dataset writes the files registered for it into the
/// target; unmounting empties the target again.
#[derive(Debug, Default)]
pub struct FakeMounter {
    contents: BTreeMap<String, Vec<(String, Vec<u8>, u32)>>,
    failing: BTreeMap<String, String>,
    mounted: RefCell<Vec<(String, PathBuf)>>,
}

impl FakeMounter {
    /// No datasets registered.
    pub fn new() -> FakeMounter {
        FakeMounter::default()
    }

    /// Registers a file (relative path, content, mode) that appears when `dataset` is mounted.
    pub fn file(mut self, dataset: &str, rel: &str, content: &[u8], mode: u32) -> FakeMounter {
        self.contents.entry(dataset.into()).or_default().push((rel.into(), content.to_vec(), mode));
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
        anyhow::ensure!(target.is_dir(), "mounting {dataset} at {}: no such directory", target.display());
        if let Some(e) = self.failing.get(dataset) {
            anyhow::bail!("mounting {dataset} at {}: {e}", target.display());
        }
        for (rel, content, mode) in self.contents.get(dataset).into_iter().flatten() {
            let p = target.join(rel);
            std::fs::create_dir_all(p.parent().expect("has a parent"))?;
            std::fs::write(&p, content)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
        }
        self.mounted.borrow_mut().push((dataset.into(), target.into()));
        Ok(())
    }

    fn unmount(&self, target: &Path) -> anyhow::Result<()> {
        let mut m = self.mounted.borrow_mut();
        let at = m.iter().rposition(|(_, t)| t == target).context("not mounted")?;
        m.remove(at);
        for entry in std::fs::read_dir(target)? {
            let p = entry?.path();
            if p.is_dir() {
                std::fs::remove_dir_all(p)?;
            } else {
                std::fs::remove_file(p)?;
            }
        }
        Ok(())
    }
}
