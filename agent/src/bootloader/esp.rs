//! The EFI system partition (ESP): finding it (GPT partition type), its FAT volume serial (what
//! GRUB's `search --fs-uuid` matches), mounting it, and bootenv's files on it:
//!
//! ```text
//! /bootenv/grub.cfg                  the menu (`bootenv grub-menu`), replaced atomically
//! /bootenv/grubenv                   GRUB's environment block for bootenv's variables
//! /bootenv/_kernels/<hash>/vmlinuz   a kernel and its initramfs, named after their content,
//! /bootenv/_kernels/<hash>/initrd.img stored once for every BE that boots them
//! /bootenv/<be>/k-<secs>-<hash>      a BE's entry naming its kernel (see `bootfiles`)
//! ```

use crate::sys::mounts::Mounter;
use anyhow::{bail, Context};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The ESP's partition type GUID (C12A7328-F81F-11D2-BA4B-00A0C93EC93B) as stored on disk.
pub const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];
/// bootenv's directory on the ESP.
pub const DIR: &str = crate::model::paths::ESP_DIR;
/// Where bootenv mounts the ESP when it is not mounted already, relative to the root.
pub const MOUNT: &str = crate::model::paths::ESP_MOUNT;
/// Places where a system usually mounts its ESP, relative to the root.
pub const USUAL_MOUNTS: [&str; 2] = ["boot/efi", "efi"];

/// Reads the GPT of `disk` and returns the 1-based numbers of its ESP partitions.
pub fn esp_partitions(disk: &Path, block_size: u64) -> anyhow::Result<Vec<u32>> {
    let mut f = std::fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let mut hdr = vec![0u8; block_size as usize];
    f.seek(SeekFrom::Start(block_size))?;
    f.read_exact(&mut hdr)?;
    parse_gpt(&hdr, |lba, len| {
        let mut buf = vec![0u8; len];
        f.seek(SeekFrom::Start(lba * block_size))?;
        f.read_exact(&mut buf)?;
        Ok(buf)
    })
}

/// Finds ESP partitions in a GPT header (LBA 1); `read(lba, len)` reads the entry array.
pub fn parse_gpt(
    hdr: &[u8],
    mut read: impl FnMut(u64, usize) -> std::io::Result<Vec<u8>>,
) -> anyhow::Result<Vec<u32>> {
    if hdr.len() < 92 || &hdr[..8] != b"EFI PART" {
        return Ok(Vec::new());
    }
    let u32_at = |o: usize| u32::from_le_bytes(hdr[o..o + 4].try_into().expect("4 bytes"));
    let entries_lba = u64::from_le_bytes(hdr[72..80].try_into().expect("8 bytes"));
    let count = u32_at(80).min(1024);
    let size = u32_at(84) as usize;
    if size < 128 {
        bail!("GPT entry size {size} is too small");
    }
    let table = read(entries_lba, count as usize * size)?;
    Ok((0..count)
        .filter(|i| table[*i as usize * size..*i as usize * size + 16] == ESP_TYPE)
        .map(|i| i + 1)
        .collect())
}

/// The FAT volume serial as GRUB prints it (`XXXX-XXXX`), from a partition's first sector.
pub fn fat_uuid(boot_sector: &[u8]) -> Option<String> {
    if boot_sector.len() < 512 || boot_sector[510..512] != [0x55, 0xaa] {
        return None;
    }
    let at = if &boot_sector[0x52..0x5a] == b"FAT32   " {
        0x43
    } else if &boot_sector[0x36..0x3b] == b"FAT12" || &boot_sector[0x36..0x3b] == b"FAT16" {
        0x27
    } else {
        return None;
    };
    let id = u32::from_le_bytes(boot_sector[at..at + 4].try_into().ok()?);
    Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff))
}

/// Block devices below `root` that are ESP partitions, as paths of their device nodes.
pub fn find(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(disks) = std::fs::read_dir(root.join("sys/block")) else {
        return found;
    };
    let mut disks: Vec<_> = disks
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    disks.sort();
    for disk in disks {
        if ["loop", "ram", "zram", "zd", "sr", "fd", "dm-", "md"]
            .iter()
            .any(|p| disk.starts_with(p))
        {
            continue;
        }
        let sys = root.join("sys/block").join(&disk);
        let bs = std::fs::read_to_string(sys.join("queue/logical_block_size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(512u64);
        let Ok(parts) = esp_partitions(&root.join("dev").join(&disk), bs) else {
            continue;
        };
        for n in parts {
            // The partition's name in sysfs: the child directory whose `partition` is n.
            let Ok(children) = std::fs::read_dir(&sys) else {
                continue;
            };
            for c in children.flatten() {
                let num = std::fs::read_to_string(c.path().join("partition")).ok();
                if num.as_deref().map(str::trim) == Some(&n.to_string()) {
                    found.push(root.join("dev").join(c.file_name()));
                }
            }
        }
    }
    found
}

/// vfat file systems mounted at the usual places, as (mount point, device).
pub fn mounted(root: &Path, mounter: &dyn Mounter) -> Vec<(PathBuf, PathBuf)> {
    USUAL_MOUNTS
        .iter()
        .flat_map(|want| mounted_at(root, mounter, &root.join(want)))
        .collect()
}

/// The vfat file system mounted at `dir`, as (mount point, device).
pub fn mounted_at(root: &Path, mounter: &dyn Mounter, dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let rel = dir.strip_prefix(root).ok()?;
    let target = format!("/{}", rel.display());
    mounter
        .table(root)
        .into_iter()
        .find(|m| m.target == target && m.fstype == "vfat")
        .map(|m| (dir.to_path_buf(), PathBuf::from(m.source)))
}

/// The disk (`vda`) a partition's device node (`/dev/vda1`) belongs to.
pub fn disk_of(root: &Path, dev: &Path) -> Option<String> {
    let name = dev.file_name()?.to_string_lossy().into_owned();
    let link = std::fs::read_link(root.join("sys/class/block").join(&name)).ok()?;
    let parent = link.parent()?.file_name()?.to_string_lossy().into_owned();
    Some(if parent == "block" { name } else { parent })
}

/// No EFI system partition on the pool's disks: GRUB on this machine is not bootenv's to
/// manage. A type, so that callers tell it from other failures without reading the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoEsp;

impl std::fmt::Display for NoEsp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no EFI system partition found (a GPT partition of type EF00) on the pool's disks; mount it at /boot/efi or name it with --esp <dir>")
    }
}

impl std::error::Error for NoEsp {}

/// Whether `e` is, at its root, [`NoEsp`].
pub fn is_no_esp(e: &anyhow::Error) -> bool {
    e.downcast_ref::<NoEsp>().is_some()
}

/// The ESP, mounted.
#[derive(Clone, Debug)]
pub struct Esp {
    /// Its mount point.
    pub dir: PathBuf,
    /// Its FAT volume serial, as GRUB's `search --fs-uuid` wants it.
    pub uuid: String,
}

impl Esp {
    /// Opens the ESP: `explicit` when given; else, of the ESPs on the disks that hold the pool
    /// (`pool_disks`, names such as `vda`; all disks when empty), one already mounted at
    /// /boot/efi, /efi or `mount_at`, else the one there is, mounted at `mount_at`.
    pub fn open(
        root: &Path,
        mounter: &dyn Mounter,
        explicit: Option<&Path>,
        pool_disks: &[String],
        mount_at: &Path,
    ) -> anyhow::Result<Esp> {
        let dir = match explicit {
            Some(d) => d.to_path_buf(),
            None => {
                let on_pool_disk = |dev: &Path| -> bool {
                    pool_disks.is_empty()
                        || disk_of(root, dev).is_some_and(|d| pool_disks.contains(&d))
                };
                let mounted_here = mounted_at(root, mounter, mount_at)
                    .into_iter()
                    .chain(mounted(root, mounter));
                let mut chosen = None;
                for (dir, dev) in mounted_here {
                    if on_pool_disk(&dev) {
                        chosen = Some(dir);
                        break;
                    }
                }
                match chosen {
                    Some(d) => d,
                    None => {
                        let parts: Vec<PathBuf> =
                            find(root).into_iter().filter(|p| on_pool_disk(p)).collect();
                        let dev = match parts.as_slice() {
                            [one] => one.clone(),
                            [] => return Err(NoEsp.into()),
                            many => bail!(
                                "several EFI system partitions ({}); mount the right one at /boot/efi or name it with --esp <dir>",
                                many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                            ),
                        };
                        std::fs::create_dir_all(mount_at)?;
                        // With dirsync (see mount_fat); bootenv also syncs in that order itself,
                        // for an ESP the system mounted without it.
                        match mounter.mount_fat(&dev, mount_at) {
                            Ok(()) => {}
                            // Another bootenv mounted it there since we looked (at boot,
                            // mark-good and status run side by side): use that mount.
                            Err(e)
                                if crate::sys::mounts::is_busy(&e)
                                    && mounted_at(root, mounter, mount_at)
                                        .is_some_and(|(_, d)| d == dev || on_pool_disk(&d)) => {}
                            Err(e) => {
                                return Err(e.context(format!(
                                    "mounting the ESP {} at {}",
                                    dev.display(),
                                    mount_at.display()
                                )))
                            }
                        }
                        mount_at.to_path_buf()
                    }
                }
            }
        };
        let uuid = uuid_of_mount(root, &dir)?;
        Ok(Esp { dir, uuid })
    }

    /// bootenv's directory on it.
    pub fn bootenv_dir(&self) -> PathBuf {
        self.dir.join(DIR)
    }
}

/// The FAT serial of the file system mounted at `dir`: found through its device number.
fn uuid_of_mount(root: &Path, dir: &Path) -> anyhow::Result<String> {
    let dev = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let node = root.join(format!("sys/dev/block/{major}:{minor}"));
    let name = std::fs::read_link(&node)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .with_context(|| format!("{} is not on a block device", dir.display()))?;
    let mut sector = vec![0u8; 512];
    std::fs::File::open(root.join("dev").join(&name))
        .and_then(|mut f| f.read_exact(&mut sector))
        .with_context(|| format!("reading the boot sector of /dev/{name}"))?;
    fat_uuid(&sector).with_context(|| {
        format!(
            "/dev/{name} (mounted at {}) is not a FAT file system",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mounts::FakeMounter;

    /// A mounter that loses the race: another process mounts the ESP between our look and our
    /// mount, so ours is refused with EBUSY.
    struct Raced(FakeMounter);

    impl Mounter for Raced {
        fn mount_zfs(&self, dataset: &str, target: &Path, readonly: bool) -> anyhow::Result<()> {
            self.0.mount_zfs(dataset, target, readonly)
        }
        fn unmount(&self, target: &Path) -> anyhow::Result<()> {
            self.0.unmount(target)
        }
        fn mount_fat(&self, device: &Path, target: &Path) -> anyhow::Result<()> {
            self.0.mount_fat(device, target)?;
            Err(anyhow::Error::new(nix::errno::Errno::EBUSY))
        }
        fn bind(&self, source: &Path, target: &Path) -> anyhow::Result<()> {
            self.0.bind(source, target)
        }
        fn detach(&self, target: &Path) -> anyhow::Result<()> {
            self.0.detach(target)
        }
        fn table(&self, root: &Path) -> Vec<crate::sys::mounts::MountEntry> {
            self.0.table(root)
        }
    }

    /// A root with disk `vda` whose GPT names partition 1 an ESP, `/dev/vda1` a FAT32 boot
    /// sector of serial C0FF-EE42, and sysfs mapping the device number of `root` itself (where
    /// the fake mounts leave the files) to `vda1`.
    fn root_with_an_esp() -> tempfile::TempDir {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in [
            "sys/block/vda/vda1",
            "sys/block/vda/queue",
            "sys/dev/block",
            "dev",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::write(r.join("sys/block/vda/queue/logical_block_size"), "512\n").unwrap();
        std::fs::write(r.join("sys/block/vda/vda1/partition"), "1\n").unwrap();
        let mut disk = vec![0u8; 512 * 4];
        disk[512..520].copy_from_slice(b"EFI PART");
        disk[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        disk[512 + 80..512 + 84].copy_from_slice(&4u32.to_le_bytes());
        disk[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        disk[1024..1040].copy_from_slice(&ESP_TYPE);
        std::fs::write(r.join("dev/vda"), &disk).unwrap();
        let mut fat = vec![0u8; 512];
        fat[510] = 0x55;
        fat[511] = 0xaa;
        fat[0x52..0x5a].copy_from_slice(b"FAT32   ");
        fat[0x43..0x47].copy_from_slice(&0xc0ffee42u32.to_le_bytes());
        std::fs::write(r.join("dev/vda1"), &fat).unwrap();
        let dev = std::fs::metadata(r).unwrap().dev();
        std::os::unix::fs::symlink(
            "../../block/vda/vda1",
            r.join(format!(
                "sys/dev/block/{}:{}",
                libc::major(dev),
                libc::minor(dev)
            )),
        )
        .unwrap();
        d
    }

    /// At boot, `bootenv mark-good` and `bootenv status` run side by side and both mount the
    /// ESP: the one refused with EBUSY uses the other's mount instead of failing; a refusal
    /// with nothing mounted there stays an error.
    #[test]
    fn an_esp_mounted_by_another_bootenv_meanwhile_is_used() {
        let d = root_with_an_esp();
        let at = d.path().join("run/bootenv/esp");
        let raced = Raced(FakeMounter::new());
        let esp = Esp::open(d.path(), &raced, None, &[], &at).unwrap();
        assert_eq!(esp.dir, at);
        assert_eq!(esp.uuid, "C0FF-EE42");

        struct Refused;
        impl Mounter for Refused {
            fn mount_zfs(&self, _: &str, _: &Path, _: bool) -> anyhow::Result<()> {
                unreachable!()
            }
            fn unmount(&self, _: &Path) -> anyhow::Result<()> {
                unreachable!()
            }
            fn mount_fat(&self, _: &Path, _: &Path) -> anyhow::Result<()> {
                Err(anyhow::Error::new(nix::errno::Errno::EBUSY))
            }
            fn bind(&self, _: &Path, _: &Path) -> anyhow::Result<()> {
                unreachable!()
            }
            fn detach(&self, _: &Path) -> anyhow::Result<()> {
                unreachable!()
            }
            fn table(&self, _: &Path) -> Vec<crate::sys::mounts::MountEntry> {
                Vec::new()
            }
        }
        let e = Esp::open(d.path(), &Refused, None, &[], &at).unwrap_err();
        assert!(format!("{e:#}").contains("mounting the ESP"), "{e:#}");
    }

    #[test]
    fn finds_the_esp_in_a_gpt() {
        let mut hdr = vec![0u8; 512];
        hdr[..8].copy_from_slice(b"EFI PART");
        hdr[72..80].copy_from_slice(&2u64.to_le_bytes());
        hdr[80..84].copy_from_slice(&4u32.to_le_bytes());
        hdr[84..88].copy_from_slice(&128u32.to_le_bytes());
        let mut table = vec![0u8; 4 * 128];
        table[128..144].copy_from_slice(&ESP_TYPE);
        table[256] = 0x42; // some other type
        let parts = parse_gpt(&hdr, |lba, len| {
            assert_eq!((lba, len), (2, 512));
            Ok(table.clone())
        })
        .unwrap();
        assert_eq!(parts, vec![2]);
        assert!(parse_gpt(&[0u8; 512], |_, _| unreachable!())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn reads_fat_serials_like_grub() {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xaa;
        s[0x52..0x5a].copy_from_slice(b"FAT32   ");
        s[0x43..0x47].copy_from_slice(&0x1234abcdu32.to_le_bytes());
        assert_eq!(fat_uuid(&s).as_deref(), Some("1234-ABCD"));
        let mut s16 = vec![0u8; 512];
        s16[510] = 0x55;
        s16[511] = 0xaa;
        s16[0x36..0x3b].copy_from_slice(b"FAT16");
        s16[0x27..0x2b].copy_from_slice(&0x0badf00du32.to_le_bytes());
        assert_eq!(fat_uuid(&s16).as_deref(), Some("0BAD-F00D"));
        assert_eq!(fat_uuid(&[0u8; 512]), None);
    }

    #[test]
    fn a_real_fat32_image_has_the_serial_mkfs_gave_it() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("esp.img");
        let ok = std::process::Command::new("mkfs.vfat")
            .args(["-F", "32", "-i", "c0ffee42", "-C"])
            .arg(&img)
            .arg("34000")
            .output();
        let Ok(out) = ok else {
            panic!("mkfs.vfat is missing: run `cargo xtask deps`")
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let b = std::fs::read(&img).unwrap();
        assert_eq!(fat_uuid(&b[..512]).as_deref(), Some("C0FF-EE42"));
    }
}
