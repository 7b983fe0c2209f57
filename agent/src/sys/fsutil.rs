//! Small file-system helpers shared by the agent and the CLI: crash-safe replacement of a file,
//! and path resolution inside another root.

use anyhow::Context;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Replaces `dir/name` with `data` so that a power cut at any instant leaves either the old or the
/// new content: write `dir/.name.tmp`, fsync it, rename it over `dir/name`, then
/// [`sync_renamed`].
pub fn atomic_write(dir: &Path, name: &str, data: &[u8]) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dest = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    sync_renamed(&dest)
}

/// [`atomic_write`], unless `dir/name` already holds exactly `data`: then nothing is written
/// (every write to the ESP is one more a power cut can meet, and FAT has no journal). Returns
/// whether it wrote. A file that cannot be read is written.
pub fn write_if_changed(dir: &Path, name: &str, data: &[u8]) -> anyhow::Result<bool> {
    if fs::read(dir.join(name)).ok().as_deref() == Some(data) {
        return Ok(false);
    }
    atomic_write(dir, name, data)?;
    Ok(true)
}

/// Makes a rename to `dest` (a file or a directory) durable: syncs `dest` itself, then its
/// directory. Syncing the directory alone is not enough on FAT (the ESP): Linux's vfat writes
/// a renamed file's directory entry (its first cluster and size) only when the renamed inode is
/// written back, up to 30 s later, while the directory's sync already writes the FAT that frees
/// the replaced file's clusters. A power cut in between left `grub.cfg` pointing at freed
/// clusters and a renamed kernel directory at cluster 0 (seen in the benchmark's pool).
pub fn sync_renamed(dest: &Path) -> anyhow::Result<()> {
    File::open(dest)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", dest.display()))?;
    let dir = dest.parent().unwrap_or(Path::new("/"));
    sync_dir(dir)
}

/// Fsyncs a directory: its entries, and on FAT the first cluster of each new subdirectory
/// (Linux's vfat ties a new directory's "." and ".." to its parent).
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// `create_dir_all`, made durable: `dir` and each directory above it up to `top` (included,
/// never created by this) is synced once, so that a power cut cannot leave an entry for a
/// directory whose first cluster was never written (FAT then reports "corrupted directory
/// (invalid entries)" and turns read-only).
pub fn create_dirs_synced(top: &Path, dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for d in dir.ancestors() {
        sync_dir(d)?;
        if d == top {
            break;
        }
    }
    Ok(())
}

/// Resolves `path` (absolute, as seen from inside `root`) to a path on the host, following
/// symbolic links the way they would be followed after a chroot into `root`. Fails on loops
/// and on links that leave nothing to resolve.
pub fn resolve_in_root(root: &Path, path: &str) -> anyhow::Result<PathBuf> {
    let mut pending: Vec<String> = components(path);
    pending.reverse();
    let mut resolved: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(resolved.iter().collect::<PathBuf>()).join(&c);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                anyhow::ensure!(hops <= 40, "too many symbolic links resolving {path}");
                let target = fs::read_link(&candidate)?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                let mut t = components(&target);
                t.reverse();
                pending.extend(t);
            }
            _ => resolved.push(c),
        }
    }
    Ok(root.join(resolved.iter().collect::<PathBuf>()))
}

fn components(p: &str) -> Vec<String> {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn an_unchanged_file_is_not_written_again() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        assert!(write_if_changed(d.path(), "f", b"one").unwrap());
        let before = fs::metadata(d.path().join("f")).unwrap();
        assert!(!write_if_changed(d.path(), "f", b"one").unwrap());
        let after = fs::metadata(d.path().join("f")).unwrap();
        assert_eq!(before.ino(), after.ino(), "replaced by a rename");
        assert!(write_if_changed(d.path(), "f", b"two").unwrap());
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"two");
        fs::write(d.path().join("f"), b"tw").unwrap();
        assert!(
            write_if_changed(d.path(), "f", b"two").unwrap(),
            "a cut file is rewritten"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        atomic_write(d.path(), "f", b"one").unwrap();
        atomic_write(d.path(), "f", b"two").unwrap();
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"two");
        assert!(!d.path().join(".f.tmp").exists());
    }

    #[test]
    fn synced_directories_and_renames_name_what_failed() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("bootenv/v1/k-1");
        create_dirs_synced(d.path(), &deep).unwrap();
        assert!(deep.is_dir());
        // Already there: nothing to create, still fine.
        create_dirs_synced(d.path(), &deep).unwrap();
        sync_renamed(&deep).unwrap();
        let gone = d.path().join("bootenv/v2");
        let e = format!("{:#}", sync_renamed(&gone).unwrap_err());
        assert!(e.contains("bootenv/v2"), "{e}");
    }

    #[test]
    fn resolves_links_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("lib/systemd")).unwrap();
        fs::create_dir_all(r.join("sbin")).unwrap();
        fs::write(r.join("lib/systemd/systemd"), b"").unwrap();
        symlink("/lib/systemd/systemd", r.join("sbin/init")).unwrap();
        symlink("../lib", r.join("sbin/lib")).unwrap();
        assert_eq!(
            resolve_in_root(r, "/sbin/init").unwrap(),
            r.join("lib/systemd/systemd")
        );
        assert_eq!(
            resolve_in_root(r, "/sbin/lib/systemd/systemd").unwrap(),
            r.join("lib/systemd/systemd")
        );
        // ".." never climbs out of the root.
        assert_eq!(
            resolve_in_root(r, "/../../sbin/../lib").unwrap(),
            r.join("lib")
        );
        symlink("/loop", r.join("loop")).unwrap();
        assert!(resolve_in_root(r, "/loop").is_err());
    }
}
