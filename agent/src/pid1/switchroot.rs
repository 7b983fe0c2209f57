//! Handing over to the boot environment: move the API file systems into the new root, free the
//! initramfs, make the new root `/` (MS_MOVE and chroot: pivot_root cannot leave the initramfs'
//! rootfs), and exec its init with the arguments the kernel gave us.

use anyhow::Context;
use nix::mount::MsFlags;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The API file systems moved into the new root.
const MOVED: [&str; 4] = ["dev", "proc", "sys", "run"];

/// Moves /dev, /proc, /sys and /run below `newroot`.
pub fn move_api_mounts(newroot: &Path) -> anyhow::Result<()> {
    for m in MOVED {
        let target = newroot.join(m);
        if !target.is_dir() {
            std::fs::create_dir_all(&target)
                .with_context(|| format!("creating {}", target.display()))?;
        }
        let src = Path::new("/").join(m);
        nix::mount::mount(
            Some(&src),
            &target,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .with_context(|| format!("moving {} to {}", src.display(), target.display()))?;
    }
    Ok(())
}

/// Deletes the initramfs' files to give their memory back, without crossing into other file
/// systems (the new root and the moved mounts stay untouched).
pub fn free_initramfs(newroot: &Path) {
    let Ok(root_dev) = std::fs::symlink_metadata("/").map(|m| m.dev()) else {
        return;
    };
    fn walk(dir: &Path, dev: u64, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p == keep {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            if m.is_dir() {
                walk(&p, dev, keep);
                let _ = std::fs::remove_dir(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    walk(Path::new("/"), root_dev, newroot);
}

/// Makes `newroot` the root: chdir into it, move it over `/`, chroot.
pub fn enter(newroot: &Path) -> anyhow::Result<()> {
    nix::unistd::chdir(newroot).with_context(|| format!("chdir {}", newroot.display()))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving the new root over /")?;
    nix::unistd::chroot(".").context("chroot into the new root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    Ok(())
}

/// Execs `init` with the arguments and environment the kernel passed to the agent. Returns
/// only on failure.
pub fn exec_init(init: &str) -> anyhow::Error {
    let mut argv: Vec<CString> = Vec::new();
    argv.push(CString::new(init).unwrap_or_default());
    for a in std::env::args_os().skip(1) {
        if let Ok(c) = CString::new(a.into_encoded_bytes()) {
            argv.push(c);
        }
    }
    let path = CString::new(init).unwrap_or_default();
    match nix::unistd::execv(&path, &argv) {
        Ok(never) => match never {},
        Err(e) => anyhow::anyhow!("exec {init}: {e}"),
    }
}
