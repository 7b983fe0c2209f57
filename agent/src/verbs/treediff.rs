//! Which files differ between two directory trees (`bootenv diff`): `+ path` only in the
//! second, `- path` only in the first, `M path` in both but different (type, content, link
//! target or mode). Paths are relative, sorted; directories are walked, not followed through
//! symbolic links.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn names(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let na = fa.read(&mut ba)?;
        let mut nb = 0;
        while nb < na {
            let n = fb.read(&mut bb[nb..na])?;
            if n == 0 {
                return Ok(false);
            }
            nb += n;
        }
        if na == 0 {
            return Ok(fb.read(&mut bb[..1])? == 0);
        }
        if ba[..na] != bb[..na] {
            return Ok(false);
        }
    }
}

fn differ(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (ma, mb) = (std::fs::symlink_metadata(a)?, std::fs::symlink_metadata(b)?);
    let (ta, tb) = (ma.file_type(), mb.file_type());
    if ta.is_symlink() || tb.is_symlink() {
        return Ok(!(ta.is_symlink()
            && tb.is_symlink()
            && std::fs::read_link(a)? == std::fs::read_link(b)?));
    }
    if ta.is_dir() != tb.is_dir() || ta.is_file() != tb.is_file() {
        return Ok(true);
    }
    if ma.permissions().mode() != mb.permissions().mode() {
        return Ok(true);
    }
    if ta.is_file() {
        return Ok(ma.len() != mb.len() || !same_content(a, b)?);
    }
    Ok(false)
}

/// How a path differs between two trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the second tree (`+`).
    Added,
    /// Only in the first (`-`).
    Removed,
    /// In both, different (`M`).
    Modified,
}

/// A path that differs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// How.
    pub change: ChangeKind,
    /// The path, from the tree's root (`/etc/hostname`).
    pub path: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = match self.change {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
        };
        write!(f, "{c} {}", self.path)
    }
}

/// Appends the differences between the trees at `a` and `b` to `out`.
pub fn diff(a: &Path, b: &Path, out: &mut Vec<Change>) -> std::io::Result<()> {
    walk(a, b, "", out)
}

fn walk(a: &Path, b: &Path, rel: &str, out: &mut Vec<Change>) -> std::io::Result<()> {
    let (na, nb) = (names(a)?, names(b)?);
    for n in na.union(&nb) {
        let r = if rel.is_empty() {
            format!("/{n}")
        } else {
            format!("{rel}/{n}")
        };
        let (pa, pb) = (a.join(n), b.join(n));
        match (na.contains(n), nb.contains(n)) {
            (true, false) => out.push(Change {
                change: ChangeKind::Removed,
                path: r.clone(),
            }),
            (false, true) => out.push(Change {
                change: ChangeKind::Added,
                path: r.clone(),
            }),
            _ => {
                let both_dirs = std::fs::symlink_metadata(&pa)?.is_dir()
                    && std::fs::symlink_metadata(&pb)?.is_dir();
                if differ(&pa, &pb)? {
                    out.push(Change {
                        change: ChangeKind::Modified,
                        path: r.clone(),
                    });
                }
                if both_dirs {
                    walk(&pa, &pb, &r, out)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_added_removed_and_changed_files() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        for t in [&a, &b] {
            std::fs::create_dir_all(t.join("etc")).unwrap();
            std::fs::write(t.join("etc/same"), "x").unwrap();
            std::os::unix::fs::symlink("target", t.join("link")).unwrap();
        }
        std::fs::write(a.join("etc/changed"), "one").unwrap();
        std::fs::write(b.join("etc/changed"), "two").unwrap();
        std::fs::write(a.join("gone"), "").unwrap();
        std::fs::create_dir_all(b.join("new/dir")).unwrap();
        let mut out = Vec::new();
        diff(&a, &b, &mut out).unwrap();
        let text: Vec<String> = out.iter().map(ToString::to_string).collect();
        assert_eq!(text, vec!["M /etc/changed", "- /gone", "+ /new"]);
        assert_eq!(out[2].change, ChangeKind::Added);
    }
}
