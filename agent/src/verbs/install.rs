//! `bootenv install`: lays out a blank disk as a bootenv machine. A GPT with an ESP (FAT32),
//! a BIOS boot partition (for grub-pc's core image) and the pool; GRUB for UEFI and BIOS from a
//! directory of prebuilt images; the pool with bootenv's layout; the first BE from a directory
//! tree or a tarball, with its factory snapshot; its kernel and the menu on the ESP.
//!
//! The GRUB directory (`--grub-dir`, default `/usr/lib/bootenv/grub`) holds `BOOTX64.EFI` (a
//! standalone image whose embedded configuration finds `/bootenv/grub.cfg`), `grub-bios.cfg`,
//! and `i386-pc/` with `boot.img`, `core.img` (prefix `(hd0,gpt1)/boot/grub`) and the modules.

use crate::bootloader::esp::Esp;
use crate::model::names::{BeName, PoolName};
use crate::sys::run::Cmd;
use crate::verbs::context::{Ctx, EspChoice};
use crate::verbs::ops::{Activation, CreateOpts};
use crate::verbs::outcome::InstalledDisk;
use anyhow::{bail, Context};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Sector size the layout assumes.
const SECTOR: u64 = 512;
/// First sector of the BIOS boot partition: right after the GPT's 128 entries.
pub const BIOS_BOOT_FIRST: u64 = 34;
/// First sector of the ESP (1 MiB).
pub const ESP_FIRST: u64 = 2048;
/// Default ESP size, MiB.
pub const DEFAULT_ESP_MIB: u64 = 512;
/// Where the GRUB images come from by default.
pub const DEFAULT_GRUB_DIR: &str = "/usr/lib/bootenv/grub";

/// Partition type GUIDs (as text).
const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const TYPE_BIOS: &str = "21686148-6449-6E6F-744E-656564454649";
const TYPE_ZFS: &str = "6A898CC3-1DD2-11B2-99A6-080020736631";

/// The files of GRUB's images `install` needs in `--grub-dir` (the bootenv-grub package's).
pub const GRUB_FILES: [&str; 5] = [
    "BOOTX64.EFI",
    "grub-bios.cfg",
    "i386-pc/boot.img",
    "i386-pc/core.img",
    "i386-pc/normal.mod",
];

/// What `bootenv install` does.
#[derive(Clone, Debug)]
pub struct InstallOpts {
    /// The disk (`/dev/vdb`).
    pub disk: PathBuf,
    /// A directory tree or a tarball: the first BE's root.
    pub from: PathBuf,
    /// The pool to make.
    pub pool: PoolName,
    /// The first BE's name.
    pub name: BeName,
    /// Its label.
    pub label: Option<String>,
    /// GRUB's images.
    pub grub_dir: PathBuf,
    /// ESP size, MiB.
    pub esp_mib: u64,
    /// Kernel command line for every entry (`org.bootenv:cmdline` on `<pool>/ROOT`).
    pub cmdline: Option<String>,
    /// Lay out a disk that is not blank.
    pub force: bool,
    /// A data pool on other disks.
    pub data: Option<DataInstall>,
}

/// The data pool `bootenv install` makes beside the system pool.
#[derive(Clone, Debug)]
pub struct DataInstall {
    /// Its disks (or partitions), mirrored when there are several.
    pub disks: Vec<PathBuf>,
    /// Its name.
    pub pool: PoolName,
}

/// A GUID's text form to its on-disk bytes (the first three fields little endian).
pub fn guid_bytes(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("a GUID constant");
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

fn random_guid() -> [u8; 16] {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b.copy_from_slice(&t.to_le_bytes());
    }
    b[7] = (b[7] & 0x0f) | 0x40; // version 4 (the field is little endian on disk)
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}

/// One partition: first and last sector, type, name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// First sector.
    pub first: u64,
    /// Last sector (inclusive).
    pub last: u64,
    /// Type GUID, text.
    pub kind: &'static str,
    /// Name.
    pub name: &'static str,
}

/// The layout for a disk of `sectors` sectors: 1 ESP, 2 pool, 3 BIOS boot.
pub fn layout(sectors: u64, esp_mib: u64) -> anyhow::Result<Vec<Part>> {
    let too_small = || {
        crate::model::failure::fail(
            crate::model::failure::ErrorKind::Invalid,
            format!(
                "the disk is too small: it needs at least {} MiB",
                esp_mib.saturating_add(66)
            ),
        )
    };
    let esp_last = esp_mib
        .checked_mul(2048)
        .and_then(|s| s.checked_add(ESP_FIRST - 1))
        .filter(|_| esp_mib > 0)
        .ok_or_else(too_small)?;
    let last_usable = sectors.checked_sub(34).ok_or_else(too_small)?;
    let pool_first = esp_last + 1;
    // Keep the pool's end aligned to 1 MiB.
    let pool_last = ((last_usable + 1) / 2048 * 2048)
        .checked_sub(1)
        .ok_or_else(too_small)?;
    if pool_last <= pool_first.saturating_add(2048 * 64) {
        return Err(too_small());
    }
    Ok(vec![
        Part {
            first: ESP_FIRST,
            last: esp_last,
            kind: TYPE_ESP,
            name: "ESP",
        },
        Part {
            first: pool_first,
            last: pool_last,
            kind: TYPE_ZFS,
            name: "bootenv-pool",
        },
        Part {
            first: BIOS_BOOT_FIRST,
            last: ESP_FIRST - 1,
            kind: TYPE_BIOS,
            name: "bios-boot",
        },
    ])
}

/// The layout of a data disk of `sectors` sectors: one ZFS partition, 1 MiB aligned. bootenv
/// partitions a data disk itself rather than give ZFS the whole disk: ZFS then waits for udev
/// to make the partitions it writes, and an installer (or initramfs) may have none.
pub fn data_layout(sectors: u64) -> anyhow::Result<Vec<Part>> {
    let last_usable = sectors.saturating_sub(34);
    let last = ((last_usable + 1) / 2048 * 2048).saturating_sub(1);
    if last <= ESP_FIRST.saturating_add(2048 * 64) {
        crate::refuse!(
            Invalid,
            "the data disk is too small: it needs at least 66 MiB"
        );
    }
    Ok(vec![Part {
        first: ESP_FIRST,
        last,
        kind: TYPE_ZFS,
        name: "bootenv-data",
    }])
}

/// The bytes of a GPT (protective MBR, primary header and entries at the start; backup
/// entries and header at the end), as (offset, bytes) pieces.
pub fn gpt(sectors: u64, parts: &[Part]) -> Vec<(u64, Vec<u8>)> {
    let mut entries = vec![0u8; 128 * 128];
    for (i, p) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[0..16].copy_from_slice(&guid_bytes(p.kind));
        e[16..32].copy_from_slice(&random_guid());
        e[32..40].copy_from_slice(&p.first.to_le_bytes());
        e[40..48].copy_from_slice(&p.last.to_le_bytes());
        for (j, u) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let entries_crc = crc32fast::hash(&entries);
    let disk_guid = random_guid();
    let header = |current: u64, backup: u64, entries_lba: u64| {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut mbr = vec![0u8; SECTOR as usize];
    // One protective partition of type EE over the whole disk.
    mbr[446 + 1..446 + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
    mbr[446 + 4] = 0xee;
    mbr[446 + 5..446 + 8].copy_from_slice(&[0xff, 0xff, 0xff]);
    mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(
        &(sectors.saturating_sub(1).min(u64::from(u32::MAX)) as u32).to_le_bytes(),
    );
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    vec![
        (0, mbr),
        (SECTOR, header(1, sectors - 1, 2)),
        (2 * SECTOR, entries.clone()),
        ((sectors - 33) * SECTOR, entries),
        ((sectors - 1) * SECTOR, header(sectors - 1, 1, sectors - 33)),
    ]
}

/// Whether `dev` is `disk` or one of its partitions (symbolic links such as /dev/disk/by-id
/// resolved; the kernel's sysfs names the parent of a partition).
fn on_disk(disk: &Path, dev: &Path) -> bool {
    let name = |p: &Path| {
        std::fs::canonicalize(p)
            .ok()
            .and_then(|c| c.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    let (Some(d), Some(v)) = (name(disk), name(dev)) else {
        return false;
    };
    if d == v {
        return true;
    }
    std::fs::canonicalize(Path::new("/sys/class/block").join(&v))
        .ok()
        .and_then(|p| {
            p.parent()
                .and_then(|q| q.file_name())
                .map(|n| n.to_string_lossy() == d.as_str())
        })
        .unwrap_or(false)
}

/// Whether the disk looks used: a partition table or a ZFS label at its start.
fn in_use(disk: &Path) -> anyhow::Result<Option<String>> {
    let mut f = std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let mut head = vec![0u8; 1024 * 1024];
    let n = f.read(&mut head)?;
    let head = &head[..n];
    if head.len() >= 520 && &head[512..520] == b"EFI PART" {
        return Ok(Some("it has a GPT".into()));
    }
    if head.len() >= 512 && head[510..512] == [0x55, 0xaa] && head[446..510].iter().any(|b| *b != 0)
    {
        return Ok(Some("it has an MBR partition table".into()));
    }
    Ok(None)
}

fn write_pieces(disk: &Path, pieces: &[(u64, Vec<u8>)]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {} for writing", disk.display()))?;
    for (off, bytes) in pieces {
        f.seek(SeekFrom::Start(*off))?;
        f.write_all(bytes)?;
    }
    f.sync_all()?;
    Ok(())
}

/// Writes a GPT of `parts` to `disk` of `sectors` sectors and has the kernel read it.
fn write_partitions(disk: &Path, sectors: u64, parts: &[Part]) -> anyhow::Result<()> {
    write_pieces(disk, &gpt(sectors, parts))?;
    let f = std::fs::File::open(disk)?;
    // BLKRRPART: the kernel reads the new partition table.
    // SAFETY: an ioctl without argument on an open block device.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), 0x125f) };
    if rc != 0 {
        log::warn!(
            "the kernel did not re-read the partition table of {}: {}",
            disk.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A disk's size in sectors.
fn sectors_of(disk: &Path) -> anyhow::Result<u64> {
    let mut f = std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    Ok(f.seek(SeekFrom::End(0))? / SECTOR)
}

/// The device node of partition `n` of `disk`, once the kernel has it.
fn partition(disk: &Path, n: u32) -> anyhow::Result<PathBuf> {
    let name = disk
        .file_name()
        .context("a disk path")?
        .to_string_lossy()
        .into_owned();
    let sys = Path::new("/sys/block").join(&name);
    for _ in 0..50 {
        if let Ok(rd) = std::fs::read_dir(&sys) {
            for e in rd.flatten() {
                if std::fs::read_to_string(e.path().join("partition"))
                    .ok()
                    .as_deref()
                    .map(str::trim)
                    == Some(&n.to_string())
                {
                    let dev = Path::new("/dev").join(e.file_name());
                    if dev.exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!("partition {n} of {} did not appear", disk.display())
}

/// Puts grub-pc on the disk: boot.img in the MBR's code area (the partition table is kept)
/// pointing at the core image in the BIOS boot partition; the core image's first sector lists
/// where the rest of it is.
fn install_bios(disk: &Path, grub: &Path) -> anyhow::Result<()> {
    let mut boot =
        std::fs::read(grub.join("i386-pc/boot.img")).context("reading i386-pc/boot.img")?;
    let mut core =
        std::fs::read(grub.join("i386-pc/core.img")).context("reading i386-pc/core.img")?;
    anyhow::ensure!(
        boot.len() >= 512 && core.len() >= 512,
        "boot.img or core.img is too short"
    );
    anyhow::ensure!(
        core.len() as u64 <= (ESP_FIRST - BIOS_BOOT_FIRST) * SECTOR,
        "core.img does not fit in the BIOS boot partition"
    );
    boot[0x5c..0x64].copy_from_slice(&BIOS_BOOT_FIRST.to_le_bytes());
    core[0x1f4..0x1fc].copy_from_slice(&(BIOS_BOOT_FIRST + 1).to_le_bytes());
    write_pieces(
        disk,
        &[(0, boot[..440].to_vec()), (BIOS_BOOT_FIRST * SECTOR, core)],
    )
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    Cmd::new("cp")
        .args([
            "-r",
            &format!("{}/.", from.display()),
            &to.display().to_string(),
        ])
        .run()?;
    Ok(())
}

impl Ctx<'_> {
    /// Refuses a disk that is mounted, swap, a vdev of an imported pool, or (without `force`)
    /// not blank, before anything is written to any disk.
    fn check_disk(&self, disk: &Path, force: bool) -> anyhow::Result<()> {
        let step = |s: &str| eprintln!("bootenv: install: {s}");
        let dev = disk.display().to_string();
        if let Some(m) = self
            .mounter
            .table(&self.root)
            .into_iter()
            .map(|m| m.source)
            .find(|m| on_disk(disk, Path::new(m)))
        {
            crate::refuse!(
                Refused,
                "{dev} is in use: {m} is mounted; pick another disk, or unmount it first"
            );
        }
        let swaps = std::fs::read_to_string(self.root.join("proc/swaps")).unwrap_or_default();
        if let Some(m) = swaps
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .find(|m| on_disk(disk, Path::new(m)))
        {
            crate::refuse!(
                Refused,
                "{dev} is in use: {m} is swap; pick another disk, or swapoff it first"
            );
        }
        for pool in self.zfs.imported_pools()? {
            if let Some(v) = self
                .zfs
                .vdev_devices(&pool)?
                .into_iter()
                .find(|v| on_disk(disk, Path::new(v)))
            {
                crate::refuse!(Refused, "{dev} is in use: {v} belongs to the imported pool {pool}; pick another disk, or export {pool} first");
            }
        }
        if let Some(why) = in_use(disk)? {
            if !force {
                crate::refuse!(Refused, "{dev} is not blank ({why}); everything on it would be lost: add --force if that is what you want");
            }
            step(&format!(
                "{dev} is not blank ({why}); --force: laying it out anew"
            ));
        }
        Ok(())
    }

    /// `bootenv install`.
    pub fn install(&self, o: &InstallOpts, now: u64) -> anyhow::Result<InstalledDisk> {
        let step = |s: &str| eprintln!("bootenv: install: {s}");
        for f in GRUB_FILES {
            if !o.grub_dir.join(f).is_file() {
                crate::refuse!(
                    NotFound,
                    "{} has no {f}: install the bootenv-grub package, or name GRUB's images with --grub-dir",
                    o.grub_dir.display()
                );
            }
        }
        if !o.from.exists() {
            crate::refuse!(Invalid, "--from {} does not exist", o.from.display());
        }
        if self
            .zfs
            .imported_pools()?
            .iter()
            .any(|p| p == o.pool.as_str())
        {
            crate::refuse!(
                Exists,
                "a pool named {} is imported already; pick another name with --pool",
                o.pool
            );
        }
        let dev = o.disk.display().to_string();
        if let Some(d) = &o.data {
            if d.pool == o.pool {
                crate::refuse!(
                    Invalid,
                    "the data pool needs a name of its own (--data-pool), not {}",
                    o.pool
                );
            }
            if self
                .zfs
                .imported_pools()?
                .iter()
                .any(|p| p == d.pool.as_str())
            {
                crate::refuse!(
                    Exists,
                    "a pool named {} is imported already; pick another name with --data-pool",
                    d.pool
                );
            }
            // Compared as the devices they name (a /dev/disk/by-id link is its disk).
            let real = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            let system = real(&o.disk);
            let datas: Vec<PathBuf> = d.disks.iter().map(real).collect();
            for (i, disk) in d.disks.iter().enumerate() {
                if datas[i] == system || datas[..i].contains(&datas[i]) {
                    crate::refuse!(
                        Invalid,
                        "{} is named twice: the data pool's disks are other disks than the system's",
                        disk.display()
                    );
                }
            }
        }
        for disk in std::iter::once(&o.disk).chain(o.data.iter().flat_map(|d| &d.disks)) {
            self.check_disk(disk, o.force)?;
        }
        for disk in o.data.iter().flat_map(|d| &d.disks) {
            data_layout(sectors_of(disk)?)?;
        }
        let size = {
            let mut f = std::fs::File::open(&o.disk)?;
            f.seek(SeekFrom::End(0))?
        };
        let sectors = size / SECTOR;
        let parts = layout(sectors, o.esp_mib)?;
        step(&format!(
            "partitioning {dev} ({} MiB): ESP {} MiB, pool, BIOS boot",
            size >> 20,
            o.esp_mib
        ));
        write_partitions(&o.disk, sectors, &parts)?;
        let esp_dev = partition(&o.disk, 1)?;
        let pool_dev = partition(&o.disk, 2)?;
        step(&format!("formatting the ESP {}", esp_dev.display()));
        Cmd::new("mkfs.vfat")
            .args(["-F", "32", "-n", "ESP"])
            .arg(esp_dev.display().to_string())
            .run()
            .context("making the ESP's FAT file system (package dosfstools)")?;
        step("installing GRUB for UEFI and BIOS");
        install_bios(&o.disk, &o.grub_dir)?;
        let esp_dir = self
            .root
            .join(crate::model::paths::RUN)
            .join(format!("install-esp-{}", std::process::id()));
        std::fs::create_dir_all(&esp_dir)?;
        self.mounter
            .mount_fat(&esp_dev, &esp_dir)
            .context("mounting the new ESP")?;
        let mut no_kernel = false;
        let result = (|| -> anyhow::Result<()> {
            std::fs::create_dir_all(esp_dir.join("EFI/BOOT"))?;
            std::fs::copy(
                o.grub_dir.join("BOOTX64.EFI"),
                esp_dir.join("EFI/BOOT/BOOTX64.EFI"),
            )?;
            std::fs::create_dir_all(esp_dir.join("boot/grub"))?;
            std::fs::copy(
                o.grub_dir.join("grub-bios.cfg"),
                esp_dir.join("boot/grub/grub.cfg"),
            )?;
            copy_dir(
                &o.grub_dir.join("i386-pc"),
                &esp_dir.join("boot/grub/i386-pc"),
            )?;
            let mut sector = vec![0u8; 512];
            std::fs::File::open(&esp_dev)?.read_exact(&mut sector)?;
            let esp = Esp {
                dir: esp_dir.clone(),
                uuid: crate::bootloader::esp::fat_uuid(&sector)
                    .context("the new ESP has no FAT serial")?,
            };
            step(&format!(
                "creating pool {} on {}",
                o.pool,
                pool_dev.display()
            ));
            self.zfs
                .create_pool(o.pool.as_str(), &pool_dev.display().to_string())?;
            let ctx = Ctx {
                root: self.root.clone(),
                zfs: self.zfs,
                mounter: self.mounter,
                runner: self.runner,
                pool: Some(o.pool.clone()),
                esp: Some(EspChoice::Known(esp)),
                facts: Default::default(),
            };
            ctx.prepare_pool(&o.pool)?;
            if let Some(c) = &o.cmdline {
                crate::bootloader::grub::check_cmdline(c)
                    .map_err(|w| anyhow::anyhow!("--cmdline {w}"))?;
                self.zfs.set(
                    &crate::model::layout::root_container(&o.pool),
                    &[(crate::model::layout::PROP_CMDLINE, c)],
                )?;
            }
            if let Some(d) = &o.data {
                let mut devices = Vec::new();
                for disk in &d.disks {
                    let disk = std::fs::canonicalize(disk)
                        .with_context(|| format!("resolving {}", disk.display()))?;
                    write_partitions(&disk, sectors_of(&disk)?, &data_layout(sectors_of(&disk)?)?)?;
                    devices.push(partition(&disk, 1)?.display().to_string());
                }
                step(&format!(
                    "creating data pool {} on {}{}",
                    d.pool,
                    if devices.len() > 1 {
                        "a mirror of "
                    } else {
                        ""
                    },
                    devices.join(" ")
                ));
                self.zfs.create_data_pool(d.pool.as_str(), &devices)?;
                ctx.data_pools(&crate::verbs::data::DataAction::Add(
                    d.pool.clone(),
                    crate::model::datapools::MountPolicy::All,
                ))?;
            }
            step(&format!(
                "creating boot environment {} from {}",
                o.name,
                o.from.display()
            ));
            ctx.create(
                &o.name,
                &CreateOpts {
                    rootfs: o.from.clone(),
                    config: None,
                    label: o.label.clone(),
                    config_mountpoint: crate::model::layout::DEFAULT_CONFIG_MOUNTPOINT.into(),
                },
            )?;
            step("copying its kernel to the ESP and writing the GRUB menu");
            if let Err(e) = ctx.sync_boot(&[], now) {
                if e.downcast_ref::<crate::verbs::outcome::KernelsMissing>()
                    .is_none()
                {
                    return Err(e);
                }
                no_kernel = true;
            }
            if no_kernel {
                // No menu can be written yet: make it the pool's default; the first
                // sync-boot (the kernel package's hook) writes the menu, and its first boot
                // marks it good.
                self.zfs.set_pool_prop(
                    o.pool.as_str(),
                    "bootfs",
                    &crate::model::layout::be_dataset(&o.pool, &o.name),
                )?;
                let _ = self.mounter.unmount(&ctx.state_mount(&o.pool));
                return Ok(());
            }
            ctx.activate(&o.name, Activation::Default, now)?;
            ctx.mark_good(Some(&o.name), now)?;
            // The state dataset was mounted for the record; the pool is exported below.
            let _ = self.mounter.unmount(&ctx.state_mount(&o.pool));
            Ok(())
        })();
        let unmounted = self.mounter.unmount(&esp_dir);
        let _ = std::fs::remove_dir(&esp_dir);
        result?;
        unmounted.context("unmounting the new ESP")?;
        let imported = self.zfs.imported_pools()?;
        for pool in std::iter::once(&o.pool).chain(o.data.as_ref().map(|d| &d.pool)) {
            if imported.iter().any(|p| p == pool.as_str()) {
                self.zfs.export(pool.as_str())?;
            }
        }
        Ok(InstalledDisk {
            disk: dev,
            pool: o.pool.to_string(),
            data_pool: o.data.as_ref().map(|d| d.pool.to_string()),
            data_disks: o
                .data
                .iter()
                .flat_map(|d| &d.disks)
                .map(|p| p.display().to_string())
                .collect(),
            be: o.name.to_string(),
            bootable: !no_kernel,
            changed: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_refuses_a_disk_or_pool_in_use_before_it_writes_anything() {
        use crate::model::failure::ErrorKind;
        use crate::sys::mounts::{FakeMounter, Mounter};
        use crate::sys::zfs::fake::FakeZfs;
        use crate::sys::zfs::Zfs;
        use crate::verbs::outcome::kind_of;
        let d = tempfile::tempdir().unwrap();
        let (z, m) = (FakeZfs::new(), FakeMounter::new());
        let c = Ctx {
            root: d.path().into(),
            zfs: &z,
            mounter: &m,
            runner: &crate::sys::run::NoRunner,
            pool: None,
            esp: None,
            facts: Default::default(),
        };
        let grub = d.path().join("grub");
        let disk = d.path().join("disk.img");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let opts = InstallOpts {
            disk: disk.clone(),
            from: d.path().into(),
            pool: PoolName::new("rpool").unwrap(),
            name: BeName::new("v1").unwrap(),
            label: None,
            grub_dir: grub.clone(),
            esp_mib: 64,
            cmdline: None,
            force: false,
            data: None,
        };
        let kind = |o: &InstallOpts| kind_of(&c.install(o, 1).unwrap_err());
        assert_eq!(kind(&opts), ErrorKind::NotFound, "no GRUB images");
        for f in GRUB_FILES {
            std::fs::create_dir_all(grub.join(f).parent().unwrap()).unwrap();
            std::fs::write(grub.join(f), b"x").unwrap();
        }
        let missing = InstallOpts {
            from: d.path().join("nosuch"),
            ..opts.clone()
        };
        assert_eq!(kind(&missing), ErrorKind::Invalid);
        z.add_pool("rpool");
        z.import("rpool").unwrap().unwrap();
        assert_eq!(kind(&opts), ErrorKind::Exists, "a pool of that name");
        z.export("rpool").unwrap();
        // Mounted (the mount table names the disk itself) or swap: refused.
        let mnt = d.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        m.mount_fat(&disk, &mnt).unwrap();
        let e = c.install(&opts, 1).unwrap_err();
        assert!(e.to_string().contains("is mounted"), "{e}");
        assert_eq!(kind_of(&e), ErrorKind::Refused);
        m.unmount(&mnt).unwrap();
        std::fs::create_dir_all(d.path().join("proc")).unwrap();
        std::fs::write(
            d.path().join("proc/swaps"),
            format!(
                "Filename Type Size Used Priority\n{} partition 1 0 -2\n",
                disk.display()
            ),
        )
        .unwrap();
        let e = c.install(&opts, 1).unwrap_err();
        assert!(e.to_string().contains("is swap"), "{e}");
        std::fs::remove_file(d.path().join("proc/swaps")).unwrap();
        // A disk with a partition table, without --force.
        let mut head = vec![0u8; 1 << 20];
        head[512..520].copy_from_slice(b"EFI PART");
        std::fs::write(&disk, &head).unwrap();
        let e = c.install(&opts, 1).unwrap_err();
        assert!(e.to_string().contains("not blank (it has a GPT)"), "{e}");
        assert_eq!(kind_of(&e), ErrorKind::Refused);
        // Nothing was written: not the disk, not a pool, not a mount.
        assert_eq!(std::fs::read(&disk).unwrap(), head);
        // A data pool: on other disks than the system's, each checked like it, with a name
        // of its own that no imported pool has.
        let data_disk = d.path().join("data.img");
        std::fs::write(&data_disk, vec![0u8; 1 << 20]).unwrap();
        let blank = d.path().join("blank.img");
        std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
        let with = |disks: Vec<PathBuf>, pool: &str| InstallOpts {
            disk: blank.clone(),
            data: Some(DataInstall {
                disks,
                pool: PoolName::new(pool).unwrap(),
            }),
            ..opts.clone()
        };
        assert_eq!(kind(&with(vec![blank.clone()], "data")), ErrorKind::Invalid);
        assert_eq!(
            kind(&with(vec![data_disk.clone(), data_disk.clone()], "data")),
            ErrorKind::Invalid
        );
        assert_eq!(
            kind(&with(vec![data_disk.clone()], "rpool")),
            ErrorKind::Invalid
        );
        z.add_pool("data");
        z.import("data").unwrap().unwrap();
        assert_eq!(
            kind(&with(vec![data_disk.clone()], "data")),
            ErrorKind::Exists
        );
        let e = c
            .install(&with(vec![data_disk.clone(), disk.clone()], "store"), 1)
            .unwrap_err();
        assert!(e.to_string().contains("not blank (it has a GPT)"), "{e}");
        m.mount_fat(&data_disk, &mnt).unwrap();
        let e = c
            .install(&with(vec![data_disk.clone()], "store"), 1)
            .unwrap_err();
        assert!(e.to_string().contains("is mounted"), "{e}");
        m.unmount(&mnt).unwrap();
        assert_eq!(std::fs::read(&blank).unwrap(), vec![0u8; 1 << 20]);
        // A disk too small for the layout is refused with the size it needs, whatever its
        // size (no arithmetic wraps).
        for sectors in [0, 33, 34, 2048, 2082, 64 * 2048] {
            let e = layout(sectors, 64).unwrap_err();
            assert_eq!(kind_of(&e), ErrorKind::Invalid, "{sectors}: {e}");
            assert!(e.to_string().contains("at least 130 MiB"), "{e}");
        }
        assert!(layout(u64::MAX / 4, u64::MAX).is_err());
        assert!(layout(1 << 30, 0).is_err());
        let parts = layout(200 * 2048, 64).unwrap();
        assert_eq!(parts[1].last % 2048, 2047);
        assert!(
            z.changes().iter().all(|c| !c.contains("create")),
            "{:?}",
            z.changes()
        );
        assert!(m.mounted().is_empty());
    }

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(guid_bytes(TYPE_ESP), crate::bootloader::esp::ESP_TYPE);
    }

    #[test]
    fn the_layout_and_gpt_are_what_sgdisk_reads() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("disk.img");
        let size = 1024u64 * 1024 * 1024;
        std::fs::File::create(&img).unwrap().set_len(size).unwrap();
        let parts = layout(size / 512, 256).unwrap();
        write_pieces(&img, &gpt(size / 512, &parts)).unwrap();
        let out = std::process::Command::new("sgdisk")
            .args(["-v"])
            .arg(&img)
            .output();
        let Ok(out) = out else {
            panic!("sgdisk is missing: run `cargo xtask deps`")
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("No problems found"), "{text}");
        let p = String::from_utf8_lossy(
            &std::process::Command::new("sgdisk")
                .arg("-p")
                .arg(&img)
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        assert!(
            p.contains("EF00") && p.contains("EF02") && p.contains("BF01"),
            "{p}"
        );
        assert!(
            p.contains("ESP") && p.contains("bootenv-pool") && p.contains("bios-boot"),
            "{p}"
        );
        // bootenv's own reader finds the ESP in it.
        let found = crate::bootloader::esp::esp_partitions(&img, 512).unwrap();
        assert_eq!(found, vec![1]);
        assert!(in_use(&img).unwrap().is_some());
    }
}
