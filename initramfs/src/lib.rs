//! The initramfs builder: what bootenv's initramfs holds and where it comes from.
//!
//! ```text
//! /init                       the static bootenv agent
//! /bin/busybox, /bin/<applet> busybox-static, for the rescue shell
//! /sbin/{zpool,zfs,mount.zfs} the ZFS tools of the build host, with every library ldd names
//! /lib/modules/<release>/...  the modules of MODULES (and extras), dependencies included
//! /etc/bootenv/modules        their load order (see the agent's initramfs::modules)
//! /etc/bootenv/modules.dep    what each of them waits for, so that chains load side by side
//! /dev/console, /dev/null     device nodes, so that init starts with a console
//! /usr/share/zfs/compatibility.d  feature sets for `zpool create -o compatibility=`
//! ```
//!
//! The archive is built in memory ([`cpio::Archive`]) and is reproducible: the same inputs give
//! the same bytes. `cargo xtask initramfs --kernel <release>` is the entry point.

pub mod cpio;

use anyhow::{bail, Context};
use cpio::{Archive, Kind};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Modules every bootenv initramfs carries: disk drivers for virtual and common real
/// controllers, FAT for the ESP, and ZFS.
pub const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "ahci",
    "nvme",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "zfs",
];

/// The ZFS programs copied in, as (path in the initramfs, path on the build host).
pub const ZFS_TOOLS: &[(&str, &str)] = &[
    ("sbin/zpool", "/usr/sbin/zpool"),
    ("sbin/zfs", "/usr/sbin/zfs"),
    ("sbin/mount.zfs", "/usr/sbin/mount.zfs"),
];

/// A kernel to build for.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// `uname -r` of the kernel.
    pub release: String,
    /// Its image.
    pub vmlinuz: PathBuf,
}

impl Kernel {
    /// The kernel `release`, or the newest installed kernel for which ZFS modules are built.
    pub fn find(release: Option<&str>) -> anyhow::Result<Kernel> {
        let mut candidates = Vec::new();
        for e in std::fs::read_dir("/lib/modules")
            .context("reading /lib/modules (is a kernel installed? run `cargo xtask deps`)")?
        {
            let name = e?.file_name().to_string_lossy().into_owned();
            if release.is_some_and(|r| r != name) {
                continue;
            }
            let vmlinuz = PathBuf::from(format!("/boot/vmlinuz-{name}"));
            let zfs = find_module_file(&name, "zfs");
            if vmlinuz.is_file() && zfs.is_some() {
                candidates.push(Kernel {
                    release: name,
                    vmlinuz,
                });
            }
        }
        candidates.sort_by_key(|c| version_key(&c.release));
        match candidates.pop() {
            Some(k) => Ok(k),
            None => match release {
                Some(r) => bail!("kernel {r} not found with ZFS modules (/boot/vmlinuz-{r}, zfs.ko under /lib/modules/{r}); run `cargo xtask deps`"),
                None => bail!("no installed kernel has ZFS modules (zfs-dkms); run `cargo xtask deps`"),
            },
        }
    }

    /// The files of modules `names` and of everything they need, in load order (each module's
    /// dependencies and soft dependencies first, as `modprobe --show-depends` gives them), as
    /// paths relative to `/lib/modules/<release>/`. Built-in modules are left out.
    pub fn module_order(&self, names: &[String]) -> anyhow::Result<Vec<String>> {
        Ok(self
            .module_chains(names)?
            .into_iter()
            .map(|(m, _)| m)
            .collect())
    }

    /// Like [`Kernel::module_order`], with what each module must wait for: its dependencies
    /// from `modules.dep`, or, for a module with soft dependencies (which `modules.dep` does
    /// not name), every module before it in the `modprobe --show-depends` chain where it first
    /// appears. Modules that do not depend on each other (a disk driver and ZFS, zlua and
    /// zunicode) can then load side by side.
    pub fn module_chains(&self, names: &[String]) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let base = format!("/lib/modules/{}/", self.release);
        let dep_file = format!("{base}modules.dep");
        let hard: std::collections::HashMap<String, Vec<String>> =
            std::fs::read_to_string(&dep_file)
                .with_context(|| format!("reading {dep_file} (run depmod {})", self.release))?
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(m, d)| {
                    (
                        m.trim().to_owned(),
                        d.split_whitespace().map(str::to_owned).collect(),
                    )
                })
                .collect();
        let has_softdeps = |path: &str| -> bool {
            Command::new("modinfo")
                .args(["-k", &self.release, "-F", "softdep", path])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
                .unwrap_or(true)
        };
        let mut order: Vec<(String, Vec<String>)> = Vec::new();
        for m in names {
            let out = Command::new("modprobe")
                .args(["-S", &self.release, "--show-depends", m])
                .output()
                .context("running modprobe (package kmod)")?;
            if !out.status.success() {
                bail!(
                    "module {m} not found for kernel {}: {}",
                    self.release,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let mut chain: Vec<String> = Vec::new();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut w = line.split_whitespace();
                if w.next() != Some("insmod") {
                    continue;
                }
                let Some(path) = w.next() else { continue };
                let rel = path
                    .strip_prefix(&base)
                    .with_context(|| format!("module path {path} outside {base}"))?;
                if !order.iter().any(|(o, _)| o == rel) {
                    let waits = match hard.get(rel) {
                        Some(d) if !has_softdeps(path) => d.clone(),
                        _ => chain.clone(),
                    };
                    order.push((rel.to_owned(), waits));
                }
                chain.push(rel.to_owned());
            }
        }
        Ok(order)
    }
}

fn find_module_file(release: &str, name: &str) -> Option<PathBuf> {
    let out = Command::new("modinfo")
        .args(["-k", release, "-n", name])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && p.is_file()).then_some(p)
}

fn version_key(r: &str) -> Vec<u64> {
    r.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// What goes into an image.
#[derive(Clone, Debug)]
pub struct Options {
    /// The kernel.
    pub kernel: Kernel,
    /// The static agent.
    pub agent: PathBuf,
    /// Modules beyond [`MODULES`] (for example `pvpanic_pci` for tests).
    pub extra_modules: Vec<String>,
}

/// The libraries `ldd` names for `bin`, with the dynamic loader.
pub fn libraries(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// The files of the ZFS tools and their libraries, as (destination, source).
pub fn zfs_tool_files() -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for (dest, src) in ZFS_TOOLS {
        let src = Path::new(src);
        anyhow::ensure!(
            src.is_file(),
            "{} is missing (package zfsutils-linux); run `cargo xtask deps`",
            src.display()
        );
        files.push((dest.to_string(), src.to_path_buf()));
        for lib in libraries(src)? {
            let dest = lib.to_string_lossy().trim_start_matches('/').to_owned();
            if !files.iter().any(|(d, _)| *d == dest) {
                files.push((dest, lib));
            }
        }
    }
    Ok(files)
}

/// Reads a file, following links, for the archive.
fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644)
}

/// Adds busybox and a link for each of its applets below `bin/`.
pub fn add_busybox(a: &mut Archive, busybox: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        busybox.is_file(),
        "{} is missing (package busybox-static); run `cargo xtask deps`",
        busybox.display()
    );
    a.add("bin/busybox", Kind::File(read(busybox)?), 0o755);
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .context("listing busybox applets")?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet.contains('/') || applet == "busybox" {
            continue;
        }
        let p = format!("bin/{applet}");
        if !a.contains(&p) {
            a.add(&p, Kind::Symlink("busybox".into()), 0o777);
        }
    }
    Ok(())
}

/// Everything but `/init`: busybox, the ZFS tools, the modules and their order, device nodes.
pub fn base(opts: &Options) -> anyhow::Result<Archive> {
    let mut a = Archive::new();
    for d in [
        "dev", "proc", "sys", "run", "sysroot", "tmp", "root", "etc", "mnt",
    ] {
        a.add(d, Kind::Dir, 0o755);
    }
    a.add("dev/console", Kind::CharDev(5, 1), 0o600);
    a.add("dev/null", Kind::CharDev(1, 3), 0o666);
    a.add("dev/kmsg", Kind::CharDev(1, 11), 0o644);
    add_busybox(&mut a, Path::new("/bin/busybox"))?;
    for (dest, src) in zfs_tool_files()? {
        a.add(&dest, Kind::File(read(&src)?), mode_of(&src));
    }
    add_tree(
        &mut a,
        "usr/share/zfs/compatibility.d",
        Path::new("/usr/share/zfs/compatibility.d"),
    )?;
    let mut names: Vec<String> = MODULES.iter().map(|s| s.to_string()).collect();
    names.extend(opts.extra_modules.iter().cloned());
    let order = opts.kernel.module_chains(&names)?;
    let base = format!("lib/modules/{}", opts.kernel.release);
    let mut list = String::from(
        "# Load order, written by bootenv's initramfs builder from modprobe --show-depends.\n",
    );
    let mut deps = String::from(
        "# What each module waits for (modules.dep; its modprobe --show-depends chain where it has soft dependencies), written by bootenv's initramfs builder.\n",
    );
    for (rel, after) in &order {
        let src = Path::new("/").join(&base).join(rel);
        a.add(&format!("{base}/{rel}"), Kind::File(read(&src)?), 0o644);
        list.push_str(rel);
        list.push('\n');
        deps.push_str(&format!("{rel}:"));
        for d in after {
            deps.push(' ');
            deps.push_str(d);
        }
        deps.push('\n');
    }
    a.add("etc/bootenv/modules", Kind::File(list.into_bytes()), 0o644);
    a.add(
        "etc/bootenv/modules.dep",
        Kind::File(deps.into_bytes()),
        0o644,
    );
    Ok(a)
}

/// The boot image: [`base`] with the agent as `/init`.
pub fn agent_image(opts: &Options) -> anyhow::Result<Archive> {
    let mut a = base(opts)?;
    a.add("init", Kind::File(read(&opts.agent)?), 0o755);
    Ok(a)
}

/// The modules the boot-path benchmark's floor loads: the test VM's disk driver and ZFS.
pub const FLOOR_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "zfs"];

/// The floor image of `cargo xtask bench boot-path`: [`base`] (the same tools and module
/// files) with the shell script `init` as `/init` and `/etc/floor/modules`, the load order of
/// [`FLOOR_MODULES`] and what they need.
pub fn floor_image(opts: &Options, init: &[u8]) -> anyhow::Result<Archive> {
    let mut a = base(opts)?;
    a.add("init", Kind::File(init.to_vec()), 0o755);
    let names: Vec<String> = FLOOR_MODULES.iter().map(|s| s.to_string()).collect();
    let mut list = String::new();
    for m in opts.kernel.module_order(&names)? {
        list.push_str(&m);
        list.push('\n');
    }
    a.add("etc/floor", Kind::Dir, 0o755);
    a.add("etc/floor/modules", Kind::File(list.into_bytes()), 0o644);
    Ok(a)
}

/// Adds the tree at `src` below `dest`, keeping modes and symbolic links.
pub fn add_tree(a: &mut Archive, dest: &str, src: &Path) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
    if meta.file_type().is_symlink() {
        let t = std::fs::read_link(src)?;
        a.add(dest, Kind::Symlink(t.to_string_lossy().into_owned()), 0o777);
    } else if meta.is_dir() {
        a.add(dest, Kind::Dir, mode_of(src));
        let mut entries: Vec<_> = std::fs::read_dir(src)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            add_tree(a, &format!("{dest}/{name}"), &e.path())?;
        }
    } else if meta.is_file() {
        a.add(dest, Kind::File(read(src)?), mode_of(src));
    }
    Ok(())
}

/// Compresses an archive with zstd (level 19; the kernel decompresses it quickly).
pub fn compress(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    filter("zstd", &["-19", "-q", "-c", "-T0", "--no-progress"], data)
        .context("zstd (package zstd)")
}

/// Runs `prog args` with `data` on its standard input; returns its standard output.
pub fn filter(prog: &str, args: &[&str], data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {prog}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writing to {prog}"))??;
    anyhow::ensure!(out.status.success(), "{prog} failed ({})", out.status);
    Ok(out.stdout)
}

/// The modification time written into archives: `SOURCE_DATE_EPOCH`, else 0.
pub fn epoch() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_order_kernels() {
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
        assert!(version_key("6.10.0-1-amd64") > version_key("6.9.0-1-amd64"));
    }

    #[test]
    fn ldd_lists_the_loader_of_a_dynamic_program() {
        let libs = libraries(Path::new("/bin/sh")).unwrap();
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
    }
}
