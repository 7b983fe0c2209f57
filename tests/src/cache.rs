//! The artifact cache: what the suite builds at great cost from inputs that rarely change (the
//! test initramfs, the golden disk, the Debian tree, the kernel package, the installed Debian
//! disk) is kept outside the checkout, so that a fresh clone on the same machine pays for it
//! once.
//!
//! An entry is named `<kind>-<key>` (plus an extension), where `key` is a hash of *everything*
//! that goes into it: a change to any input gives a new name, so a stale entry is never found,
//! only left behind (and pruned). An entry is built under a temporary name and renamed into
//! place only when its build succeeded and its bytes are on disk, so a half-built entry (an
//! interrupted run, a power cut) is never found either. A missing or empty cache only costs
//! time: every entry is rebuilt.
//!
//! Where: `$BOOTENV_TEST_CACHE` when set, else `/var/cache/bootenv-test` when it can be written
//! (root), else `$XDG_CACHE_HOME/bootenv-test` or `~/.cache/bootenv-test`.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How many entries of each kind are kept (the newest by last use): the current one and the
/// one before it (a branch switched back and forth rebuilds nothing).
pub const KEEP_PER_KIND: usize = 2;

/// The cache directory, held by this run (see [`Cache::open`]).
#[derive(Clone, Debug)]
pub struct Cache {
    /// Where the entries live.
    pub dir: PathBuf,
    /// The run's hold on the cache: an exclusive `flock` on `<dir>/.lock`, released when the
    /// last clone of this value is dropped (the end of the run).
    _held: Option<std::sync::Arc<std::fs::File>>,
}

/// Whether an entry was found or had to be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// It was in the cache.
    Hit,
    /// It was built now.
    Built,
}

impl Cache {
    /// The cache of this machine (see the module's doc for where), created when missing, and
    /// held for this run: a second run on the same cache waits until this one ends (two runs
    /// would build the same entry twice, and one's pruning could remove an entry the other's
    /// overlays stand on).
    pub fn open() -> anyhow::Result<Cache> {
        let dir = match std::env::var_os("BOOTENV_TEST_CACHE") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => default_dir(),
        };
        Cache::held_at(&dir)
    }

    /// The cache in `dir`, held for this run (see [`Cache::open`]).
    pub fn held_at(dir: &Path) -> anyhow::Result<Cache> {
        let mut c = Cache::at(dir)?;
        let lock = dir.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .with_context(|| format!("opening {}", lock.display()))?;
        if !try_lock(&f)? {
            println!(
                "==> another test run holds the cache {}; waiting for it to end",
                dir.display()
            );
            lock_wait(&f)?;
        }
        c._held = Some(std::sync::Arc::new(f));
        Ok(c)
    }

    /// A cache in `dir`, created when missing (not held: for tests of the cache itself).
    pub fn at(dir: &Path) -> anyhow::Result<Cache> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the test cache {}", dir.display()))?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            _held: None,
        })
    }

    /// The path of entry `<kind>-<key><ext>` (`ext` with its dot, or empty for a directory).
    pub fn path(&self, kind: &str, key: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{kind}-{key:016x}{ext}"))
    }

    /// The entry `<kind>-<key><ext>`: taken from the cache when it is there, else made by
    /// `make`, which is given a temporary path to write (a file, or a directory when `ext` is
    /// empty) and which the cache renames into place when `make` succeeds. Older entries of the
    /// same kind beyond [`KEEP_PER_KIND`] are removed afterwards.
    pub fn entry(
        &self,
        kind: &str,
        key: u64,
        ext: &str,
        make: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<(PathBuf, Found)> {
        let path = self.path(kind, key, ext);
        if path.exists() {
            touch(&path);
            return Ok((path, Found::Hit));
        }
        let tmp = self.dir.join(format!(
            ".{kind}-{key:016x}{ext}.tmp-{}",
            std::process::id()
        ));
        remove(&tmp);
        let made = make(&tmp).and_then(|()| {
            sync_tree(&tmp)?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("renaming {} into place", tmp.display()))?;
            sync_dir(&self.dir)
        });
        if let Err(e) = made {
            remove(&tmp);
            return Err(e);
        }
        self.prune(kind, &path);
        Ok((path, Found::Built))
    }

    /// Removes the entries of `kind` other than `keep` beyond the newest [`KEEP_PER_KIND`],
    /// and temporary leftovers of `kind` older than a day (an interrupted build).
    pub fn prune(&self, kind: &str, keep: &Path) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let prefix = format!("{kind}-");
        let tmp_prefix = format!(".{kind}-");
        let mut entries: Vec<(SystemTime, PathBuf)> = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let when = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(&tmp_prefix) {
                let old = SystemTime::now()
                    .duration_since(when)
                    .is_ok_and(|d| d > Duration::from_secs(86_400));
                if old {
                    remove(&e.path());
                }
            } else if name.starts_with(&prefix) && is_key_of(&name[prefix.len()..]) {
                entries.push((when, e.path()));
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        for (_, p) in entries
            .into_iter()
            .filter(|(_, p)| p != keep)
            .skip(KEEP_PER_KIND.saturating_sub(1))
        {
            remove(&p);
        }
    }

    /// A small text file of the cache (not an entry: it is rewritten, e.g. the scenarios'
    /// last durations).
    pub fn note(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Whether `rest` (what follows `<kind>-`) starts with a 16-digit key, so that kind `debian`
/// does not claim the entries of kind `debian-disk`.
fn is_key_of(rest: &str) -> bool {
    let key = rest.get(..16).unwrap_or("");
    key.len() == 16
        && key.bytes().all(|b| b.is_ascii_hexdigit())
        && (rest.len() == 16 || rest[16..].starts_with('.'))
}

/// flock(LOCK_EX | LOCK_NB): whether it was taken.
fn try_lock(f: &std::fs::File) -> anyhow::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor this function borrows; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(anyhow::Error::new(e).context("locking the test cache"))
}

/// flock(LOCK_EX), waiting.
fn lock_wait(f: &std::fs::File) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: as in `try_lock`.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
        return Ok(());
    }
    Err(anyhow::Error::new(std::io::Error::last_os_error()).context("locking the test cache"))
}

fn default_dir() -> PathBuf {
    let system = Path::new("/var/cache/bootenv-test");
    let writable = std::fs::create_dir_all(system).is_ok()
        && std::fs::metadata(system).is_ok_and(|m| !m.permissions().readonly())
        && tempfile_probe(system);
    if writable {
        return system.to_path_buf();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("bootenv-test")
}

fn tempfile_probe(dir: &Path) -> bool {
    let p = dir.join(format!(".probe-{}", std::process::id()));
    let ok = std::fs::write(&p, b"").is_ok();
    let _ = std::fs::remove_file(&p);
    ok
}

/// Marks an entry as used now (pruning keeps the most recently used).
fn touch(p: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(p) {
        let _ = f.set_modified(SystemTime::now());
    } else if p.is_dir() {
        // A directory: its time moves when an entry is made in it.
        let probe = p.join(".used");
        let _ = std::fs::write(&probe, b"");
        let _ = std::fs::remove_file(&probe);
    }
}

fn remove(p: &Path) {
    if p.is_dir() {
        let _ = std::fs::remove_dir_all(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}

/// fsyncs a file, or every file of a directory tree and the directories.
fn sync_tree(p: &Path) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(p)
        .with_context(|| format!("the build did not make {}", p.display()))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p)? {
            let e = e?;
            if !e.file_type()?.is_symlink() {
                sync_tree(&e.path())?;
            }
        }
        sync_dir(p)
    } else {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", p.display()))
    }
}

fn sync_dir(p: &Path) -> anyhow::Result<()> {
    std::fs::File::open(p)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_built_once_then_found() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::at(d.path()).unwrap();
        let mut builds = 0;
        for want in [Found::Built, Found::Hit] {
            let (p, found) = c
                .entry("thing", 7, ".txt", |tmp| {
                    builds += 1;
                    std::fs::write(tmp, b"made")?;
                    Ok(())
                })
                .unwrap();
            assert_eq!(found, want);
            assert_eq!(std::fs::read(&p).unwrap(), b"made");
            assert_eq!(p, d.path().join("thing-0000000000000007.txt"));
        }
        assert_eq!(builds, 1);
    }

    #[test]
    fn one_run_at_a_time_holds_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let held = Cache::held_at(d.path()).unwrap();
        let other = std::fs::File::open(d.path().join(".lock")).unwrap();
        assert!(!try_lock(&other).unwrap(), "a second run would not wait");
        let clone = held.clone();
        drop(held);
        assert!(!try_lock(&other).unwrap(), "a clone still holds it");
        drop(clone);
        assert!(try_lock(&other).unwrap(), "the run's end releases it");
    }

    #[test]
    fn a_failed_build_leaves_nothing_that_a_later_run_would_find() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::at(d.path()).unwrap();
        let r = c.entry("thing", 1, ".img", |tmp| {
            std::fs::write(tmp, b"half")?;
            anyhow::bail!("the builder VM failed")
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let (_, found) = c
            .entry("thing", 1, ".img", |tmp| Ok(std::fs::write(tmp, b"whole")?))
            .unwrap();
        assert_eq!(found, Found::Built);
    }

    #[test]
    fn a_directory_entry_and_its_files_are_kept_whole() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::at(d.path()).unwrap();
        let (p, _) = c
            .entry("debs", 3, "", |tmp| {
                std::fs::create_dir_all(tmp)?;
                Ok(std::fs::write(tmp.join("a.deb"), b"deb")?)
            })
            .unwrap();
        assert_eq!(std::fs::read(p.join("a.deb")).unwrap(), b"deb");
    }

    #[test]
    fn pruning_keeps_the_newest_of_a_kind_and_leaves_other_kinds_alone() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::at(d.path()).unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(1000);
        for (i, kind) in [(1u64, "debian"), (2, "debian"), (3, "debian-disk")] {
            let p = c.path(kind, i, ".img");
            std::fs::write(&p, b"x").unwrap();
            let f = std::fs::File::options().append(true).open(&p).unwrap();
            f.set_modified(t0 + Duration::from_secs(i)).unwrap();
        }
        c.entry("debian", 9, ".img", |t| Ok(std::fs::write(t, b"y")?))
            .unwrap();
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "debian-0000000000000002.img",
                "debian-0000000000000009.img",
                "debian-disk-0000000000000003.img"
            ]
        );
    }
}
