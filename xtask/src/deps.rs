//! `cargo xtask deps`: installs what the VMs need on a Debian bookworm machine, once. Every
//! later run finds it all in place and installs nothing.

use anyhow::{bail, Context};
use std::path::Path;
use std::process::Command;

/// Debian packages the build and the VM tests use.
pub const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-utils",
    "ovmf",
    "grub-efi-amd64-bin",
    "grub-pc-bin",
    "grub-common",
    "grub-emu",
    "mtools",
    "dosfstools",
    "fdisk",
    "gdisk",
    "busybox-static",
    "cpio",
    "zstd",
    "file",
    "kmod",
    "linux-image-amd64",
    "linux-headers-amd64",
    "zfs-dkms",
    "zfsutils-linux",
    "lintian",
    "dpkg-dev",
    "debootstrap",
];

/// Programs that must be on PATH afterwards.
const COMMANDS: &[&str] = &[
    "qemu-system-x86_64",
    "qemu-img",
    "mcopy",
    "mkfs.vfat",
    "sgdisk",
    "cpio",
    "zstd",
    "file",
    "modprobe",
    "grub-mkstandalone",
    "grub-mkimage",
    "grub-editenv",
    "grub-emu",
    "lintian",
    "dpkg-deb",
    "debootstrap",
];

/// Files that must exist afterwards.
const FILES: &[&str] = &[
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_VARS_4M.fd",
    "/usr/lib/grub/i386-pc/boot.img",
    "/usr/lib/grub/x86_64-efi/linux.mod",
    "/bin/busybox",
    "/usr/sbin/zpool",
    "/usr/sbin/zfs",
    "/usr/sbin/mount.zfs",
];

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(cmd).is_file())
}

/// What is missing, in words.
pub fn missing() -> Vec<String> {
    let mut m: Vec<String> = COMMANDS
        .iter()
        .filter(|c| !on_path(c))
        .map(|c| format!("command {c}"))
        .collect();
    m.extend(
        FILES
            .iter()
            .filter(|f| !Path::new(f).exists())
            .map(|f| format!("file {f}")),
    );
    if bootenv_initramfs::Kernel::find(None).is_err() {
        m.push("a kernel with ZFS modules (linux-image-amd64 + zfs-dkms)".into());
    }
    m
}

fn codename() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VERSION_CODENAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| "bookworm".into())
}

/// Whether some apt source already lists the `contrib` component.
fn has_contrib() -> bool {
    let mut files = vec![std::path::PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(rd.flatten().map(|e| e.path()));
    }
    files.iter().any(|f| {
        let ext_ok = f.extension().is_some_and(|e| e == "list" || e == "sources")
            || f.ends_with("sources.list");
        ext_ok
            && std::fs::read_to_string(f).is_ok_and(|s| {
                s.lines().any(|l| {
                    let l = l.trim();
                    !l.starts_with('#')
                        && (l.starts_with("deb ") || l.starts_with("Components:"))
                        && l.split_whitespace().any(|w| w == "contrib")
                })
            })
    })
}

/// Writes a deb822 apt source for Debian's archive: `suites` with `component`.
fn write_source(path: &str, suites: &str, component: &str) -> anyhow::Result<()> {
    let text = format!(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suites}\nComponents: {component}\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    std::fs::write(path, text).with_context(|| format!("writing {path}"))
}

fn apt(args: &[&str]) -> anyhow::Result<()> {
    println!("==> apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Installs what is missing; does nothing when all is there.
pub fn ensure() -> anyhow::Result<()> {
    let m = missing();
    if m.is_empty() {
        return Ok(());
    }
    println!(
        "==> setting up this machine for bootenv's VM tests; missing: {}",
        m.join(", ")
    );
    if !nix_is_root() {
        bail!(
            "installing packages needs root: run `sudo cargo xtask deps` (missing: {})",
            m.join(", ")
        );
    }
    if !has_contrib() {
        let suite = codename();
        let path = "/etc/apt/sources.list.d/bootenv-contrib.sources";
        println!("==> adding Debian's contrib component (zfs-dkms lives there): {path}");
        write_source(path, &format!("{suite} {suite}-updates"), "contrib")?;
    }
    // Some machines come with qemu-utils from backports, which Breaks the release's
    // qemu-system-common: then QEMU's system emulator comes from backports too.
    let backports = installed_version("qemu-utils").is_some_and(|v| v.contains("~bpo"));
    if backports {
        let suite = codename();
        let path = "/etc/apt/sources.list.d/bootenv-backports.sources";
        println!("==> qemu-utils on this machine is from {suite}-backports: taking qemu-system-x86 from there too ({path})");
        write_source(path, &format!("{suite}-backports"), "main")?;
    }
    apt(&["update", "-q"])?;
    let mut args: Vec<String> = ["install", "-y", "-q", "--no-install-recommends"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for p in PACKAGES {
        if backports && *p == "qemu-system-x86" {
            let suite = codename();
            args.extend(
                BACKPORTED_QEMU
                    .iter()
                    .map(|q| format!("{q}/{suite}-backports")),
            );
        } else {
            args.push(p.to_string());
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    println!(
        "==> building the ZFS modules for the guest kernel (DKMS) takes about 8 minutes on 2 cores"
    );
    apt(&args)?;
    let still = missing();
    if !still.is_empty() {
        bail!("after installing, still missing: {}", still.join(", "));
    }
    Ok(())
}

/// QEMU's system emulator and what it needs at the same version, taken from backports when
/// qemu-utils came from there.
const BACKPORTED_QEMU: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
];

/// The installed version of a Debian package, if it is installed.
fn installed_version(pkg: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status} ${Version}", pkg])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.strip_prefix("installed ").map(str::to_owned)
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// What `cargo xtask bench` needs beyond the test dependencies: Debian's stock ZFS initramfs
/// support, to build the anchor initramfs with mkinitramfs.
pub const BENCH_PACKAGES: &[&str] = &["zfs-initramfs", "initramfs-tools"];

/// Installs [`BENCH_PACKAGES`] when missing (after [`ensure`]).
pub fn ensure_bench() -> anyhow::Result<()> {
    ensure()?;
    if Path::new("/usr/share/initramfs-tools/hooks/zfs").exists()
        && Path::new("/usr/sbin/mkinitramfs").exists()
    {
        return Ok(());
    }
    if !nix_is_root() {
        bail!(
            "installing packages needs root: run `sudo apt-get install {}`",
            BENCH_PACKAGES.join(" ")
        );
    }
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(BENCH_PACKAGES);
    apt(&args)
}
