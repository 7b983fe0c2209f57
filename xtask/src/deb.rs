//! `cargo xtask deb` and `cargo xtask kernel-deb`: Debian packages, staged here and built with
//! `dpkg-deb --root-owner-group`, reproducibly (the same bytes twice for the same
//! `SOURCE_DATE_EPOCH`, which defaults to the time of the last commit).
//!
//! - `bootenv`: the static binary, the initramfs-tools hook, boot method and conf.d file, the
//!   systemd units, the kernel and initramfs post-update hooks, `/etc/bootenv/bootenv.conf`,
//!   man pages, completions.
//! - `bootenv-grub`: `/etc/grub.d/10_bootenv`, `/etc/default/grub.d/bootenv.cfg`, and the GRUB
//!   images `bootenv install` writes to a blank disk.
//! - `bootenv-kernel-<release>`: a Debian kernel and the ZFS modules built for it.

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One file of a package.
#[derive(Clone, Debug)]
pub enum Item {
    /// A regular file with its mode.
    File(Vec<u8>, u32),
    /// A symbolic link to the target.
    Link(String),
}

/// A binary package, before it is built.
#[derive(Debug, Default)]
pub struct Package {
    /// `Package:`.
    pub name: String,
    /// `Version:`.
    pub version: String,
    /// `Architecture:`.
    pub arch: String,
    /// `Section:`.
    pub section: String,
    /// Relationship fields in order (`Depends`, `Recommends`, …), empty ones left out.
    pub relations: Vec<(&'static str, String)>,
    /// The synopsis.
    pub synopsis: String,
    /// The extended description, paragraphs separated by empty lines.
    pub description: String,
    /// Files by path (relative, no leading `/`).
    pub files: BTreeMap<String, Item>,
    /// Maintainer scripts and other control files (`postinst`, `triggers`, …) with their modes.
    pub control: BTreeMap<String, (Vec<u8>, u32)>,
}

impl Package {
    /// Adds a file.
    pub fn file(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.files.insert(
            path.trim_start_matches('/').to_owned(),
            Item::File(data.into(), mode),
        );
    }

    /// Adds a symbolic link.
    pub fn link(&mut self, path: &str, target: &str) {
        self.files.insert(
            path.trim_start_matches('/').to_owned(),
            Item::Link(target.to_owned()),
        );
    }

    /// Adds the copyright file and the changelog (gzip -n, as Debian policy asks).
    pub fn docs(&mut self, root: &Path) -> anyhow::Result<()> {
        let doc = format!("usr/share/doc/{}", self.name);
        self.file(
            &format!("{doc}/copyright"),
            std::fs::read(root.join("debian/copyright"))?,
            0o644,
        );
        let changelog = std::fs::read(root.join("debian/changelog"))?;
        self.file(
            &format!("{doc}/changelog.Debian.gz"),
            gzip(&changelog)?,
            0o644,
        );
        Ok(())
    }

    /// The `DEBIAN/control` text.
    fn control_text(&self, installed_kib: u64) -> String {
        let mut c = format!(
            "Package: {}\nSource: bootenv\nVersion: {}\nArchitecture: {}\nMaintainer: bootenv developers <bootenv@example.org>\nInstalled-Size: {installed_kib}\n",
            self.name, self.version, self.arch
        );
        for (k, v) in &self.relations {
            if !v.is_empty() {
                c.push_str(&format!("{k}: {v}\n"));
            }
        }
        c.push_str(&format!(
            "Section: {}\nPriority: optional\nHomepage: https://example.org/bootenv\n",
            self.section
        ));
        c.push_str(&format!("Description: {}\n", self.synopsis));
        for line in self.description.trim().lines() {
            if line.trim().is_empty() {
                c.push_str(" .\n");
            } else {
                c.push_str(&format!(" {line}\n"));
            }
        }
        c
    }

    /// Stages the package under `work` and builds `<out>/<name>_<version>_<arch>.deb`.
    pub fn build(
        &self,
        work: &Path,
        out: &Path,
        epoch: u64,
        compression: &str,
    ) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let stage = work.join(&self.name);
        if stage.exists() {
            std::fs::remove_dir_all(&stage)?;
        }
        std::fs::create_dir_all(stage.join("DEBIAN"))?;
        let mut md5 = String::new();
        let mut conffiles = String::new();
        // Installed-Size as dpkg-gencontrol counts it: each file and link rounded up to 1 KiB,
        // each directory 1 KiB.
        let mut kib = 0u64;
        let mut dirs = std::collections::BTreeSet::new();
        for (path, item) in &self.files {
            let dest = stage.join(path);
            let parent = dest.parent().expect("below the stage");
            std::fs::create_dir_all(parent)?;
            let mut p = Path::new(path).parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(d.to_path_buf());
                p = d.parent();
            }
            match item {
                Item::File(data, mode) => {
                    std::fs::write(&dest, data)?;
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
                    md5.push_str(&format!("{}  {path}\n", md5_hex(data)?));
                    kib += (data.len() as u64).div_ceil(1024).max(1);
                    if path.starts_with("etc/") {
                        conffiles.push_str(&format!("/{path}\n"));
                    }
                }
                Item::Link(target) => {
                    std::os::unix::fs::symlink(target, &dest)?;
                    kib += 1;
                }
            }
        }
        kib += dirs.len() as u64;
        for d in &dirs {
            std::fs::set_permissions(stage.join(d), std::fs::Permissions::from_mode(0o755))?;
        }
        let ctl = stage.join("DEBIAN");
        std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755))?;
        let write_ctl = |name: &str, data: &[u8], mode: u32| -> anyhow::Result<()> {
            std::fs::write(ctl.join(name), data)?;
            std::fs::set_permissions(ctl.join(name), std::fs::Permissions::from_mode(mode))?;
            Ok(())
        };
        write_ctl("control", self.control_text(kib).as_bytes(), 0o644)?;
        write_ctl("md5sums", md5.as_bytes(), 0o644)?;
        if !conffiles.is_empty() {
            write_ctl("conffiles", conffiles.as_bytes(), 0o644)?;
        }
        for (name, (data, mode)) in &self.control {
            write_ctl(name, data, *mode)?;
        }
        std::fs::create_dir_all(out)?;
        let deb = out.join(format!("{}_{}_{}.deb", self.name, self.version, self.arch));
        // `xz` or `xz:1` (a level: 400 MB of kernel modules at xz's default level take minutes).
        let (algo, level) = compression.split_once(':').unwrap_or((compression, ""));
        let mut args = vec!["--root-owner-group".to_owned(), format!("-Z{algo}")];
        if !level.is_empty() {
            args.push(format!("-z{level}"));
        }
        args.push("--build".into());
        let status = Command::new("dpkg-deb")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .args(&args)
            .arg(&stage)
            .arg(&deb)
            .stdout(std::process::Stdio::null())
            .status()
            .context("running dpkg-deb (package dpkg)")?;
        if !status.success() {
            bail!("dpkg-deb --build {} failed", stage.display());
        }
        Ok(deb)
    }
}

/// A cheap fingerprint of a package (FNV-1a over paths, sizes, small files and control files),
/// to tell whether a cached build is still the same.
pub fn fingerprint(p: &Package) -> u64 {
    let mut owned: Vec<Vec<u8>> = vec![p.name.clone().into_bytes(), p.version.clone().into_bytes()];
    for (path, item) in &p.files {
        owned.push(path.clone().into_bytes());
        match item {
            Item::File(d, mode) => {
                owned.push(
                    [
                        (d.len() as u64).to_le_bytes().as_slice(),
                        mode.to_le_bytes().as_slice(),
                    ]
                    .concat(),
                );
                if d.len() < 1 << 16 {
                    owned.push(d.clone());
                }
            }
            Item::Link(t) => owned.push(t.clone().into_bytes()),
        }
    }
    for (name, (d, _)) in &p.control {
        owned.push(name.clone().into_bytes());
        owned.push(d.clone());
    }
    let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    bootenv_vmtest::host::fnv64(&parts)
}

/// A hash of everything a package holds (fields, every file's path, mode and bytes, links,
/// control files), but not of its build time: the test cache's key for what is made from it.
pub fn digest(p: &Package) -> u64 {
    let mut h = bootenv_vmtest::host::Fnv::new();
    // What `Package::build` adds (fixed control fields, conffiles, md5sums, modes) is this
    // file's code: a change to it is a change to the package.
    h.part(include_str!("deb.rs").as_bytes());
    for f in [
        &p.name,
        &p.version,
        &p.arch,
        &p.section,
        &p.synopsis,
        &p.description,
    ] {
        h.part(f.as_bytes());
    }
    for (k, v) in &p.relations {
        h.part(k.as_bytes());
        h.part(v.as_bytes());
    }
    for (path, item) in &p.files {
        h.part(path.as_bytes());
        match item {
            Item::File(d, mode) => {
                h.part(&mode.to_le_bytes());
                h.part(d);
            }
            Item::Link(t) => {
                h.part(b"->");
                h.part(t.as_bytes());
            }
        }
    }
    for (name, (d, mode)) in &p.control {
        h.part(name.as_bytes());
        h.part(&mode.to_le_bytes());
        h.part(d);
    }
    h.finish()
}

/// gzip -n -9: no name, no time stamp.
pub fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    bootenv_initramfs::filter("gzip", &["-n", "-9", "-c"], data)
}

fn md5_hex(data: &[u8]) -> anyhow::Result<String> {
    let out = bootenv_initramfs::filter("md5sum", &[], data)?;
    Ok(String::from_utf8_lossy(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// The time the packages carry: `SOURCE_DATE_EPOCH`, else the last commit's time.
pub fn source_date_epoch(root: &Path) -> anyhow::Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v} is not a number"));
    }
    let out = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output()
        .context("running git")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("the time of the last commit (set SOURCE_DATE_EPOCH outside a git checkout)")
}

/// What the `bootenv` and `bootenv-grub` packages are made of.
pub struct Inputs<'a> {
    /// The repository.
    pub root: &'a Path,
    /// The static agent.
    pub agent: &'a Path,
    /// Man pages (`*.1`) and completions, from [`crate::docs::generate`].
    pub docs: &'a crate::docs::Docs,
    /// The GRUB images for `bootenv install` (see `bootenv_vmtest::disk::grub_images`).
    pub grub_images: &'a Path,
    /// The package version (`0.1.0-1`).
    pub version: &'a str,
}

fn read(root: &Path, rel: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(root.join(rel)).with_context(|| format!("reading {rel}"))
}

/// The `bootenv` package.
pub fn bootenv(i: &Inputs) -> anyhow::Result<Package> {
    let r = i.root;
    let mut p = Package {
        name: "bootenv".into(),
        version: i.version.into(),
        arch: "amd64".into(),
        section: "admin".into(),
        relations: vec![
            (
                "Depends",
                "zfsutils-linux, initramfs-tools, kmod, init-system-helpers (>= 1.54~)".into(),
            ),
            ("Recommends", "bootenv-grub, dosfstools".into()),
            ("Suggests", "zfs-dkms".into()),
        ],
        synopsis: "versioned, self-healing ZFS boot environments".into(),
        description: "Every version of the system is a boot environment: a ZFS root file\n\
system with its own configuration dataset, snapshotted and cloned together.\n\
bootenv boots the one GRUB chose from the initramfs, counts trial boots of a\n\
new version and falls back to the last known-good one by itself, and resets a\n\
version to its factory defaults on request.\n\
\n\
This package holds the static bootenv binary (the operator's CLI: list, create,\n\
upgrade, activate, rollback, mark-good, mount, diff, destroy, export, install),\n\
its initramfs-tools integration (the agent mounts the chosen boot environment\n\
when the kernel command line carries bootenv=), and the systemd units that mark\n\
a boot good, reboot a trial boot that is not marked good in time, and report\n\
how the system booted."
            .into(),
        ..Default::default()
    };
    p.file("usr/sbin/bootenv", std::fs::read(i.agent)?, 0o755);
    p.file(
        "usr/share/initramfs-tools/hooks/bootenv",
        read(r, "debian/bootenv/initramfs-hook")?,
        0o755,
    );
    p.file(
        "usr/share/initramfs-tools/scripts/bootenv",
        read(r, "debian/bootenv/initramfs-script")?,
        0o644,
    );
    p.file(
        "usr/share/initramfs-tools/conf.d/zz-bootenv",
        read(r, "debian/bootenv/initramfs-conf")?,
        0o644,
    );
    for unit in [
        "bootenv-mark-good.service",
        "bootenv-status.service",
        "bootenv-trial-watchdog.service",
        "bootenv-trial-watchdog.timer",
        "bootenv-data-pools.service",
    ] {
        p.file(
            &format!("lib/systemd/system/{unit}"),
            read(r, &format!("debian/bootenv/{unit}"))?,
            0o644,
        );
    }
    let hook = read(r, "debian/bootenv/kernel-hook")?;
    p.file("etc/kernel/postinst.d/zz-bootenv", hook.clone(), 0o755);
    p.file("etc/kernel/postrm.d/zz-bootenv", hook.clone(), 0o755);
    p.file("etc/initramfs/post-update.d/bootenv", hook, 0o755);
    p.file(
        "etc/bootenv/bootenv.conf",
        read(r, "debian/bootenv/bootenv.conf")?,
        0o644,
    );
    for page in &i.docs.man {
        let name = page.file_name().expect("a file").to_string_lossy();
        p.file(
            &format!("usr/share/man/man8/{name}.gz"),
            gzip(&std::fs::read(page)?)?,
            0o644,
        );
    }
    for c in &i.docs.completions {
        let name = c
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .into_owned();
        let dest = match name.as_str() {
            "bootenv.bash" => "usr/share/bash-completion/completions/bootenv".to_owned(),
            "_bootenv" => "usr/share/zsh/vendor-completions/_bootenv".to_owned(),
            "bootenv.fish" => "usr/share/fish/vendor_completions.d/bootenv.fish".to_owned(),
            other => bail!("unexpected completion file {other}"),
        };
        p.file(&dest, std::fs::read(c)?, 0o644);
    }
    p.file(
        "usr/share/lintian/overrides/bootenv",
        read(r, "debian/bootenv/lintian-overrides")?,
        0o644,
    );
    p.docs(r)?;
    p.control.insert(
        "postinst".into(),
        (read(r, "debian/bootenv/postinst")?, 0o755),
    );
    p.control
        .insert("postrm".into(), (read(r, "debian/bootenv/postrm")?, 0o755));
    p.control.insert(
        "triggers".into(),
        (read(r, "debian/bootenv/triggers")?, 0o644),
    );
    Ok(p)
}

/// The `bootenv-grub` package.
pub fn bootenv_grub(i: &Inputs) -> anyhow::Result<Package> {
    let r = i.root;
    let mut p = Package {
        name: "bootenv-grub".into(),
        version: i.version.into(),
        arch: "amd64".into(),
        section: "admin".into(),
        relations: vec![(
            "Depends",
            format!("bootenv (= {}), grub2-common, grub-efi-amd64 | grub-pc | grub-efi-amd64-bin | grub-pc-bin", i.version),
        )],
        synopsis: "GRUB integration of bootenv: a menu entry per boot environment".into(),
        description: "bootenv's entries in the menu update-grub writes: one per boot environment,\n\
newest first, with one-shot selection, trial boots counted before the kernel\n\
loads, the automatic fallback to the last known-good version, and factory\n\
resets in the advanced menu.\n\
\n\
It also holds the GRUB images (UEFI and BIOS) that `bootenv install` puts on a\n\
blank disk."
            .into(),
        ..Default::default()
    };
    p.file("etc/grub.d/10_bootenv", read(r, "grub/10_bootenv")?, 0o755);
    p.file(
        "etc/default/grub.d/bootenv.cfg",
        read(r, "debian/bootenv-grub/grub-default.cfg")?,
        0o644,
    );
    let mut stack = vec![i.grub_images.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(i.grub_images)?
                    .to_string_lossy()
                    .into_owned();
                p.file(
                    &format!("usr/lib/bootenv/grub/{rel}"),
                    std::fs::read(&path)?,
                    0o644,
                );
            }
        }
    }
    p.file(
        "usr/share/lintian/overrides/bootenv-grub",
        read(r, "debian/bootenv-grub/lintian-overrides")?,
        0o644,
    );
    p.docs(r)?;
    p.control.insert(
        "postinst".into(),
        (read(r, "debian/bootenv-grub/postinst")?, 0o755),
    );
    p.control.insert(
        "postrm".into(),
        (read(r, "debian/bootenv-grub/postrm")?, 0o755),
    );
    Ok(p)
}

/// Where a kernel comes from for `cargo xtask kernel-deb`.
pub struct KernelSource {
    /// `uname -r` of the kernel.
    pub release: String,
    /// A tree holding `boot/vmlinuz-<release>` (and config, System.map) and
    /// `lib/modules/<release>/`.
    pub tree: PathBuf,
    /// The Debian version of the kernel it was taken from.
    pub version: String,
    /// The directory holding the ZFS modules (`zfs.ko`, `spl.ko`, …) built for it.
    pub zfs: PathBuf,
}

/// Files under `lib/modules/<release>` that `depmod` writes at installation; a kernel package
/// does not ship them.
fn made_by_depmod(name: &str) -> bool {
    name.starts_with("modules.")
        && !matches!(
            name,
            "modules.order" | "modules.builtin" | "modules.builtin.modinfo"
        )
}

/// The `bootenv-kernel-<release>` package: a Debian kernel and the ZFS modules built for it,
/// with maintainer scripts that follow the Debian kernel handbook (ch. 8): depmod, the
/// /boot/vmlinuz links (linux-update-symlinks), then the /etc/kernel hooks, among them
/// initramfs-tools' (a new initramfs), bootenv's (kernel and initramfs to the ESP) and
/// zz-update-grub (the menu).
pub fn kernel(root: &Path, k: &KernelSource) -> anyhow::Result<Package> {
    let rel = &k.release;
    let mut p = Package {
        name: format!("bootenv-kernel-{rel}"),
        version: format!("{}+bootenv1", k.version),
        arch: "amd64".into(),
        section: "kernel".into(),
        relations: vec![
            (
                "Depends",
                "bootenv-grub, kmod, linux-base (>= 4.3~), initramfs-tools".into(),
            ),
            ("Provides", format!("linux-image-{rel}, zfs-modules")),
            ("Conflicts", format!("linux-image-{rel}")),
            ("Replaces", format!("linux-image-{rel}")),
        ],
        synopsis: format!("Linux {rel} with ZFS modules, for bootenv"),
        description: format!(
            "The Debian kernel {rel} ({})\n\
and the OpenZFS modules built for it, in one package, so that a boot\n\
environment needs no compiler or DKMS to boot from ZFS. Installing it\n\
rebuilds the running boot environment's initramfs, copies kernel and\n\
initramfs to the ESP and regenerates the GRUB menu.",
            k.version
        ),
        ..Default::default()
    };
    for f in [
        format!("vmlinuz-{rel}"),
        format!("config-{rel}"),
        format!("System.map-{rel}"),
    ] {
        let src = k.tree.join("boot").join(&f);
        if src.exists() {
            p.file(&format!("boot/{f}"), std::fs::read(&src)?, 0o644);
        } else if f.starts_with("vmlinuz") {
            bail!("{} is missing", src.display());
        }
    }
    let mods = k.tree.join("lib/modules").join(rel);
    let mut stack = vec![mods.clone()];
    let mut count = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let path = e.path();
            let relpath = path.strip_prefix(&mods)?.to_string_lossy().into_owned();
            let ft = e.file_type()?;
            if relpath == "build" || relpath == "source" {
                continue;
            }
            if ft.is_dir() {
                // ZFS modules come from k.zfs only, under updates/zfs.
                if path == k.zfs || relpath.starts_with("updates/dkms") {
                    continue;
                }
                stack.push(path);
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path)?;
                p.link(
                    &format!("lib/modules/{rel}/{relpath}"),
                    &target.to_string_lossy(),
                );
            } else if !(d == mods && made_by_depmod(&relpath)) {
                p.file(
                    &format!("lib/modules/{rel}/{relpath}"),
                    std::fs::read(&path)?,
                    0o644,
                );
                count += 1;
            }
        }
    }
    anyhow::ensure!(
        count > 100,
        "{} holds only {count} files: not a kernel's modules",
        mods.display()
    );
    let mut zfs = 0;
    for e in std::fs::read_dir(&k.zfs)
        .with_context(|| format!("reading the ZFS modules in {}", k.zfs.display()))?
    {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "ko") {
            let name = path
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            p.file(
                &format!("lib/modules/{rel}/updates/zfs/{name}"),
                std::fs::read(&path)?,
                0o644,
            );
            zfs += 1;
        }
    }
    anyhow::ensure!(
        p.files.contains_key(&format!("lib/modules/{rel}/updates/zfs/zfs.ko")),
        "no zfs.ko in {} ({zfs} modules): build ZFS for {rel} first (apt-get install linux-headers-{rel} zfs-dkms)",
        k.zfs.display()
    );
    p.docs(root)?;
    // kernel-pkg/ holds the templates; @REL@ is the kernel release.
    let q = |f: &str| -> anyhow::Result<Vec<u8>> {
        Ok(String::from_utf8(read(root, &format!("kernel-pkg/{f}"))?)?
            .replace("@REL@", rel)
            .into_bytes())
    };
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        p.control.insert(script.into(), (q(script)?, 0o755));
    }
    p.file(
        &format!("usr/share/lintian/overrides/{}", p.name),
        q("lintian-overrides")?,
        0o644,
    );
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_text_has_the_fields_and_a_folded_description() {
        let p = Package {
            name: "x".into(),
            version: "1.0-1".into(),
            arch: "amd64".into(),
            section: "admin".into(),
            relations: vec![("Depends", "a, b".into()), ("Recommends", String::new())],
            synopsis: "short".into(),
            description: "one\n\ntwo".into(),
            ..Default::default()
        };
        let c = p.control_text(12);
        assert!(
            c.contains("Package: x\nSource: bootenv\nVersion: 1.0-1\nArchitecture: amd64\n"),
            "{c}"
        );
        assert!(
            c.contains("Installed-Size: 12\nDepends: a, b\nSection: admin\n"),
            "{c}"
        );
        assert!(!c.contains("Recommends"), "{c}");
        assert!(c.ends_with("Description: short\n one\n .\n two\n"), "{c}");
    }

    #[test]
    fn a_package_builds_the_same_bytes_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Package {
            name: "bootenv-test".into(),
            version: "1.0-1".into(),
            arch: "all".into(),
            section: "admin".into(),
            synopsis: "s".into(),
            description: "d".into(),
            ..Default::default()
        };
        p.file("usr/share/bootenv-test/a", "hello", 0o644);
        p.file("etc/bootenv-test.conf", "x=1\n", 0o644);
        p.link("usr/share/bootenv-test/b", "a");
        let one = p
            .build(
                &dir.path().join("w1"),
                &dir.path().join("o1"),
                1_700_000_000,
                "xz",
            )
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let two = p
            .build(
                &dir.path().join("w2"),
                &dir.path().join("o2"),
                1_700_000_000,
                "xz",
            )
            .unwrap();
        assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
        let info = Command::new("dpkg-deb")
            .arg("-I")
            .arg(&one)
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(
            info.contains("conffiles") && info.contains("md5sums"),
            "{info}"
        );
        let list = Command::new("dpkg-deb")
            .arg("-c")
            .arg(&one)
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            list.contains("root/root") && list.contains("./usr/share/bootenv-test/b -> a"),
            "{list}"
        );
    }
}
