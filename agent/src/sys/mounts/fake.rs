//! A fake [`Mounter`] for tests (not in the shipped binary): "mounting" a dataset materialises
//! registered files in the target directory.

use super::Mounter;
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A fake [`Mounter`]: "mounting" a dataset writes the files registered for it into the
/// target, plus whatever was in the target when it was last unmounted; unmounting moves the
/// target's content away into the fake dataset and leaves the directory empty.
#[derive(Debug, Default)]
pub struct FakeMounter {
    contents: BTreeMap<String, Vec<(String, Vec<u8>, u32)>>,
    failing: BTreeMap<String, String>,
    mounted: Mutex<Vec<(String, PathBuf)>>,
    /// Per dataset, a directory holding its content while it is not mounted.
    stored: Mutex<BTreeMap<String, tempfile_dir::Dir>>,
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
        self.mounted.lock().expect("not poisoned").clone()
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
        if self
            .mounted
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|(d, _)| d == dataset)
        {
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
        match self.stored.lock().expect("not poisoned").remove(dataset) {
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
            .lock()
            .expect("not poisoned")
            .push((dataset.into(), target.into()));
        Ok(())
    }

    fn is_mountpoint(&self, target: &Path) -> bool {
        self.mounted
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|(_, t)| t == target)
    }

    fn unmount(&self, target: &Path) -> anyhow::Result<()> {
        let mut m = self.mounted.lock().expect("not poisoned");
        let at = m
            .iter()
            .rposition(|(_, t)| t == target)
            .context("not mounted")?;
        let (dataset, _) = m.remove(at);
        if dataset.starts_with(OTHER) {
            return Ok(());
        }
        let dir = tempfile_dir::Dir::new()?;
        move_entries(target, dir.path())?;
        self.stored
            .lock()
            .expect("not poisoned")
            .insert(dataset, dir);
        Ok(())
    }

    fn mount_fat(&self, device: &Path, target: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(target.is_dir(), "{} is not a directory", target.display());
        self.mounted
            .lock()
            .expect("not poisoned")
            .push((format!("{OTHER}vfat {}", device.display()), target.into()));
        Ok(())
    }

    fn bind(&self, source: &Path, target: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(target.is_dir(), "{} is not a directory", target.display());
        self.mounted
            .lock()
            .expect("not poisoned")
            .push((format!("{OTHER}bind {}", source.display()), target.into()));
        Ok(())
    }

    fn table(&self, root: &Path) -> Vec<super::MountEntry> {
        self.table_of(root)
    }

    fn detach(&self, target: &Path) -> anyhow::Result<()> {
        if self.is_mountpoint(target) {
            self.unmount(target)?;
        }
        Ok(())
    }
}

impl FakeMounter {
    /// The fake's mounts as a mount table, targets named from `root`; mounts outside `root`
    /// are left out, as the kernel leaves out of a chrooted process's table what it cannot
    /// reach.
    pub fn table_of(&self, root: &Path) -> Vec<super::MountEntry> {
        self.mounted
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|(what, target)| {
                let (fstype, source) = match what.strip_prefix(OTHER) {
                    Some(o) => o.split_once(' ').unwrap_or((o, "")),
                    None => ("zfs", what.as_str()),
                };
                let target = Path::new("/").join(target.strip_prefix(root).ok()?);
                Some(super::MountEntry {
                    source: source.to_owned(),
                    target: target.display().to_string(),
                    fstype: fstype.to_owned(),
                    options: "rw".into(),
                })
            })
            .collect()
    }
}

/// What the fake records for a mount that is not a dataset (a FAT file system, a bind): its
/// content is the real directory's, and unmounting keeps nothing.
const OTHER: &str = "other:";
