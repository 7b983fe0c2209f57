//! What the VMs boot: the kernel, bootenv's initramfs, and the golden test disk made by a
//! builder VM with bootenv itself. Kept in the [`Cache`], keyed by the hash of their inputs.

use crate::cache::{Cache, Found};
use crate::disk;
use crate::host::fnv64;
use crate::qemu::{Boot, Vm, VmConfig};
use anyhow::Context;
use bootenv_initramfs::cpio::{Archive, Kind};
use bootenv_initramfs::{self as initramfs, Kernel};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The guest's init for test boot environments.
pub const BE_INIT: &str = include_str!("../guest/be-init.sh");
/// A test BE's description of the pool and its own files, for comparing end states.
pub const BE_DESCRIBE: &str = include_str!("../guest/betest-describe.sh");
/// bootenv's kernel hook (`/etc/kernel/postinst.d/zz-bootenv`), from its package.
pub const KERNEL_HOOK: &str = include_str!("../../debian/bootenv/kernel-hook");
/// The builder VM's init.
pub const BUILDER: &str = include_str!("../guest/builder.sh");
/// The configuration embedded in the test disk's EFI GRUB image.
pub const GRUB_EFI_CFG: &str = include_str!("../../grub/efi-embedded.cfg");
/// The BIOS GRUB's configuration on the ESP.
pub const GRUB_BIOS_CFG: &str = include_str!("../../grub/bios-grub.cfg");
/// Modules the test initramfs carries beyond the standard set: pvpanic, so that a guest
/// kernel panic ends QEMU with a distinct status.
pub const TEST_MODULES: &[&str] = &["pvpanic_pci"];
/// The test boot environments: (name, label).
pub const TEST_BES: &[(&str, &str)] = &[("v1", "1.0"), ("v2", "2.0"), ("v3", "3.0")];
/// The kernel command line every test boot starts with.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 quiet";
/// Size of the golden disk, MiB.
pub const DISK_MIB: u64 = 1024;

/// Everything a scenario needs.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// The guest kernel.
    pub kernel: Kernel,
    /// The static agent.
    pub agent: PathBuf,
    /// bootenv's initramfs, as the tests boot it.
    pub initrd: PathBuf,
    /// The golden disk: a pool `tank` with boot environments v1, v2, v3 (default and last
    /// known-good v1) and a shared dataset `tank/data`; their kernels and bootenv's GRUB menu on
    /// the ESP; GRUB for UEFI and for BIOS.
    pub golden: PathBuf,
    /// The work directory (this checkout's: logs, overlays, scratch).
    pub work: PathBuf,
    /// The artifact cache (outside the checkout).
    pub cache: Cache,
    /// `tcg` or `kvm`.
    pub accel: String,
    /// The Debian packages and the Debian tree the `deb-*` scenarios install (made by xtask
    /// only when one of them runs).
    pub packages: Option<Packages>,
}

/// What the packaging scenarios install.
#[derive(Clone, Debug)]
pub struct Packages {
    /// A debootstrapped Debian bookworm tree, as a tarball ([`crate::debian::rootfs`]).
    pub debian: PathBuf,
    /// bootenv, bootenv-grub and bootenv-kernel-<release>.
    pub debs: Vec<PathBuf>,
    /// A newer build of the bootenv package (an upgrade to install).
    pub newer: PathBuf,
    /// A hash of what the packages hold (every file's path, mode and bytes, the control
    /// fields and scripts), not of the `.deb` files: the same packages built at another commit
    /// time give the same key, so the disks that have them installed are not made again.
    pub key: u64,
}

fn write_if_changed(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    if std::fs::read(path).ok().as_deref() != Some(data) {
        std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Adds a small test system below `dest`: busybox, the test init, bootenv and the ZFS tools,
/// and a config carrying this boot environment's factory defaults.
pub fn add_test_be(
    a: &mut Archive,
    dest: &str,
    name: &str,
    label: &str,
    agent: &[u8],
    grub: &Path,
) -> anyhow::Result<()> {
    let mut be = Archive::new();
    for d in ["proc", "sys", "dev", "run", "tmp", "root", "mnt", "srv"] {
        be.add(d, Kind::Dir, 0o755);
    }
    initramfs::add_busybox(&mut be, Path::new("/bin/busybox"))?;
    be.add("sbin/init", Kind::File(BE_INIT.as_bytes().to_vec()), 0o755);
    be.add("usr/sbin/bootenv", Kind::File(agent.to_vec()), 0o755);
    be.add(
        "usr/sbin/betest-describe",
        Kind::File(BE_DESCRIBE.as_bytes().to_vec()),
        0o755,
    );
    add_install_tools(&mut be, grub)?;
    // The kernel package's hook, as bootenv's package installs it (`concurrent-verbs`).
    be.add(
        "etc/kernel/postinst.d/zz-bootenv",
        Kind::File(KERNEL_HOOK.as_bytes().to_vec()),
        0o755,
    );
    for (d, src) in initramfs::zfs_tool_files()? {
        be.add(&d, Kind::File(std::fs::read(&src)?), 0o755);
    }
    be.add(
        "etc/bootenv-test/name",
        Kind::File(format!("{name}\n").into_bytes()),
        0o644,
    );
    be.add(
        "etc/bootenv-test/label",
        Kind::File(format!("{label}\n").into_bytes()),
        0o644,
    );
    let conf = format!("version={name}\ngreeting=factory default of {label}\n");
    be.add("etc/config/app.conf", Kind::File(conf.into_bytes()), 0o644);
    for p in be.paths().map(str::to_owned).collect::<Vec<_>>() {
        let e = be.get(&p).expect("listed").clone();
        a.add(&format!("{dest}/{p}"), e.kind, e.mode);
    }
    Ok(())
}

/// What `bootenv install` needs besides bootenv: mkfs.vfat (dosfstools) and GRUB's images in
/// /usr/lib/bootenv/grub.
pub fn add_install_tools(a: &mut Archive, grub: &Path) -> anyhow::Result<()> {
    let mkfs = Path::new("/usr/sbin/mkfs.fat");
    anyhow::ensure!(
        mkfs.is_file(),
        "{} is missing (package dosfstools); run `cargo xtask deps`",
        mkfs.display()
    );
    a.add("usr/sbin/mkfs.fat", Kind::File(std::fs::read(mkfs)?), 0o755);
    a.add(
        "usr/sbin/mkfs.vfat",
        Kind::Symlink("mkfs.fat".into()),
        0o777,
    );
    initramfs::add_tree(a, "usr/lib/bootenv/grub", grub)
}

fn log_step(what: &str) {
    println!("==> {what}");
}

impl Artifacts {
    /// Builds the initramfs and the golden disk, or takes them from `cache`.
    pub fn prepare(
        work: &Path,
        cache: &Cache,
        agent: &Path,
        release: Option<&str>,
    ) -> anyhow::Result<Artifacts> {
        std::fs::create_dir_all(work)?;
        let kernel = Kernel::find(release)?;
        let agent_bytes =
            std::fs::read(agent).with_context(|| format!("reading {}", agent.display()))?;
        let opts = initramfs::Options {
            kernel: kernel.clone(),
            agent: agent.to_path_buf(),
            extra_modules: TEST_MODULES.iter().map(|s| s.to_string()).collect(),
        };
        log_step(&format!("initramfs for kernel {}", kernel.release));
        let base = initramfs::base(&opts)?;
        let mut boot = base.clone();
        boot.add("init", Kind::File(agent_bytes.clone()), 0o755);
        let cpio = boot.write(initramfs::epoch());
        let key = fnv64(&[&cpio]);
        let t = Instant::now();
        let (initrd, found) = cache.entry("initrd", key, ".cpio.zst", |tmp| {
            let z = initramfs::compress(&cpio)?;
            std::fs::write(tmp, &z)?;
            Ok(())
        })?;
        println!(
            "    {} ({} bytes{}, in {:.1} s)",
            initrd.display(),
            std::fs::metadata(&initrd)?.len(),
            if found == Found::Hit { ", cached" } else { "" },
            t.elapsed().as_secs_f64()
        );
        let accel = {
            let probe_log = work.join("kvm-probe.log");
            let mut probe = base.clone();
            probe.add(
                "init",
                Kind::File(b"#!/bin/sh\necho KVM-PROBE-OK\n/bin/busybox poweroff -f\n".to_vec()),
                0o755,
            );
            let probe_img = work.join("probe.cpio");
            write_if_changed(&probe_img, &probe.write(0))?;
            crate::qemu::probe_accel(&kernel.vmlinuz, &probe_img, "KVM-PROBE-OK", &probe_log)
        };
        println!("    accelerator: {accel}");
        let mut art = Artifacts {
            kernel,
            agent: agent.to_path_buf(),
            initrd,
            golden: PathBuf::new(),
            work: work.to_path_buf(),
            cache: cache.clone(),
            accel,
            packages: None,
        };
        let initrd_bytes = std::fs::read(&art.initrd)?;
        art.golden = art.golden_disk(&base, &agent_bytes, &initrd_bytes)?;
        Ok(art)
    }

    fn golden_disk(&self, base: &Archive, agent: &[u8], initrd: &[u8]) -> anyhow::Result<PathBuf> {
        let grub = self.work.join("grub-images");
        disk::grub_images(&grub, GRUB_EFI_CFG, GRUB_BIOS_CFG)?;
        let mut builder = base.clone();
        builder.add("init", Kind::File(BUILDER.as_bytes().to_vec()), 0o755);
        builder.add("usr/sbin/bootenv", Kind::File(agent.to_vec()), 0o755);
        add_install_tools(&mut builder, &grub)?;
        let vmlinuz = std::fs::read(&self.kernel.vmlinuz)?;
        builder.add("payload-boot/vmlinuz", Kind::File(vmlinuz), 0o644);
        builder.add(
            "payload-boot/initrd.img",
            Kind::File(initrd.to_vec()),
            0o644,
        );
        for (name, label) in TEST_BES {
            add_test_be(
                &mut builder,
                &format!("payload/{name}"),
                name,
                label,
                agent,
                &grub,
            )?;
        }
        let cpio = builder.write(0);
        let key = fnv64(&[
            &cpio,
            &DISK_MIB.to_le_bytes(),
            GRUB_EFI_CFG.as_bytes(),
            GRUB_BIOS_CFG.as_bytes(),
        ]);
        let t = Instant::now();
        let (golden, found) = self.cache.entry("golden", key, ".img", |tmp| {
            log_step("golden disk: pool and boot environments made by bootenv in a builder VM");
            self.build_golden(&cpio, tmp)
        })?;
        match found {
            Found::Hit => log_step(&format!("golden disk {} (cached)", golden.display())),
            Found::Built => println!(
                "    {} in {:.1} s",
                golden.display(),
                t.elapsed().as_secs_f64()
            ),
        }
        Ok(golden)
    }

    /// Runs the builder VM (its initramfs: `cpio`) on a blank disk at `tmp`.
    fn build_golden(&self, cpio: &[u8], tmp: &Path) -> anyhow::Result<()> {
        let builder_img = self.work.join("builder.cpio");
        std::fs::write(&builder_img, cpio)?;
        disk::blank(tmp, DISK_MIB)?;
        let cfg = VmConfig {
            boot: Boot::Direct {
                kernel: self.kernel.vmlinuz.clone(),
                initrd: builder_img.clone(),
                append: BASE_CMDLINE.into(),
            },
            disks: vec![tmp.to_path_buf()],
            log: self.work.join("builder.log"),
            memory_mb: 2048,
            cpus: 2,
            limit: Duration::from_secs(600),
            echo: false,
            accel: self.accel.clone(),
        };
        let mut vm = Vm::start(&cfg)?;
        vm.expect("BUILDER-OK|BUILDER-FAILED.*", Duration::from_secs(540))
            .and_then(|m| {
                if m[0] == "BUILDER-OK" {
                    Ok(())
                } else {
                    anyhow::bail!("{} (log: {})", m[0], cfg.log.display())
                }
            })?;
        vm.expect_poweroff(Duration::from_secs(60))?;
        let _ = std::fs::remove_file(&builder_img);
        Ok(())
    }
}
