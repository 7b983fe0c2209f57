//! Small file-system helpers shared by the agent and the CLI: crash-safe replacement of a file,
//! and path resolution inside another root.

use anyhow::Context;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Replaces `dir/name` with `data` so that a power cut at any instant leaves either the old or the
/// new content: write `dir/.name.tmp`, fsync it, rename it over `dir/name`, fsync `dir`.
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
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
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
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        atomic_write(d.path(), "f", b"one").unwrap();
        atomic_write(d.path(), "f", b"two").unwrap();
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"two");
        assert!(!d.path().join(".f.tmp").exists());
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
