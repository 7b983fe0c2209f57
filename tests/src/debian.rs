//! A Debian bookworm root file system for the packaging scenarios, made with debootstrap on the
//! host (no ZFS needed there) and cached as a tarball keyed by its package list: systemd, udev,
//! initramfs-tools, zfsutils-linux (contrib) and what bootenv's packages depend on. The
//! scenarios unpack it into a boot environment inside a guest.

use crate::host::{fnv64, run};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The mirror debootstrap fetches from.
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// What the tree holds beyond debootstrap's minbase variant.
pub const INCLUDE: &[&str] = &[
    "systemd-sysv",
    "udev",
    "kmod",
    "initramfs-tools",
    "zstd",
    "busybox",
    "zfsutils-linux",
    "linux-base",
    "grub2-common",
    "grub-efi-amd64-bin",
    "dosfstools",
    "init-system-helpers",
];

/// The cached tarball of the tree, made when missing (about 3 minutes and 100 MB of
/// downloads on a fresh machine).
pub fn rootfs(work: &Path) -> anyhow::Result<PathBuf> {
    let key = fnv64(&[
        MIRROR.as_bytes(),
        INCLUDE.join(",").as_bytes(),
        b"bookworm minbase main,contrib v1",
    ]);
    let tar = work.join(format!("debian-bookworm-{key:016x}.tar"));
    if tar.exists() {
        return Ok(tar);
    }
    println!("==> Debian bookworm tree for the packaging scenarios (debootstrap, cached)");
    let t = Instant::now();
    let dir = work.join("debian-root.tmp");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(work)?;
    let include = format!("--include={}", INCLUDE.join(","));
    run(
        "debootstrap",
        &[
            "--variant=minbase",
            "--components=main,contrib",
            &include,
            "bookworm",
            &dir.to_string_lossy(),
            MIRROR,
        ],
    )
    .context("debootstrap of Debian bookworm (package debootstrap; needs the Debian mirror)")?;
    // What a machine needs that debootstrap leaves out: a host name, an empty fstab (bootenv
    // mounts the root and its members), no apt lists and caches (size).
    std::fs::write(dir.join("etc/hostname"), "bootenv-debian\n")?;
    std::fs::write(
        dir.join("etc/fstab"),
        "# bootenv mounts the boot environment's datasets\n",
    )?;
    for d in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let p = dir.join(d);
        for e in std::fs::read_dir(&p)? {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    let part = work.join("debian.tar.part");
    run(
        "tar",
        &[
            "--numeric-owner",
            "--xattrs",
            "-C",
            &dir.to_string_lossy(),
            "-cf",
            &part.to_string_lossy(),
            ".",
        ],
    )?;
    std::fs::rename(&part, &tar)?;
    std::fs::remove_dir_all(&dir)?;
    println!(
        "    {} ({} MB) in {:.0} s",
        tar.display(),
        std::fs::metadata(&tar)?.len() >> 20,
        t.elapsed().as_secs_f64()
    );
    Ok(tar)
}
