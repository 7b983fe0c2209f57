//! A Debian bookworm root file system for the packaging scenarios, made with debootstrap on the
//! host (no ZFS needed there) and cached as a tarball keyed by its package list, the versions
//! the host's apt lists give those packages (a proxy for the mirror's state: a newer point
//! release the host's lists have not seen yet, or a dependency's update, does not change the
//! key), debootstrap's version and this file's code: systemd, udev, initramfs-tools,
//! zfsutils-linux (contrib) and what bootenv's packages depend on. The scenarios unpack it into
//! a boot environment inside a guest.

use crate::cache::{Cache, Found};
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

/// The versions the host's apt lists give the packages of [`INCLUDE`] (`apt-cache show`), so
/// that a point release of one of them (a new zfsutils-linux, say) makes a new tree. Empty
/// when apt-cache cannot tell.
fn candidate_versions() -> String {
    let out = std::process::Command::new("apt-cache")
        .args(["show", "--no-all-versions"])
        .args(INCLUDE)
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("Package: ") || l.starts_with("Version: "))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The tarball of the tree, from the cache or made (about 1 to 3 minutes and 100 MB of
/// downloads). `work` is scratch space for the unpacked tree.
pub fn rootfs(cache: &Cache, work: &Path) -> anyhow::Result<PathBuf> {
    let debootstrap_version = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "debootstrap"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let key = fnv64(&[
        MIRROR.as_bytes(),
        INCLUDE.join(",").as_bytes(),
        b"bookworm minbase main,contrib v1",
        candidate_versions().as_bytes(),
        &debootstrap_version,
        // How the tree is made and trimmed (this file's code).
        include_str!("debian.rs").as_bytes(),
    ]);
    let t = Instant::now();
    let (tar, found) = cache.entry("debian-bookworm", key, ".tar", |tmp| {
        println!("==> Debian bookworm tree for the packaging scenarios (debootstrap)");
        debootstrap(work, tmp)
    })?;
    if found == Found::Built {
        println!(
            "    {} ({} MB) in {:.0} s",
            tar.display(),
            std::fs::metadata(&tar)?.len() >> 20,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(tar)
}

/// debootstraps the tree in `work` and packs it into the tarball `tar`.
fn debootstrap(work: &Path, tar: &Path) -> anyhow::Result<()> {
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
    crate::host::tar_dir(&dir, tar)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
