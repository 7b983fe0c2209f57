//! Disk images without loop devices: a GPT with an ESP (FAT32) and a partition for the pool,
//! and qcow2 overlays so that every scenario boots its own copy of the golden image.

use crate::host::run;
use std::path::Path;

/// Size of the ESP, in MiB.
pub const ESP_MIB: u64 = 256;
/// Offset of the ESP, in MiB (sector 2048).
pub const ESP_OFFSET_MIB: u64 = 1;

/// First sector of the BIOS boot partition, where the grub-pc core image goes (right after the
/// GPT's partition entries).
pub const BIOS_BOOT_SECTOR: u64 = 34;

/// Makes a sparse raw disk of `size_mib` with partition 1 the ESP (formatted FAT32, label
/// ESP), partition 2 for ZFS (empty) and partition 3 a BIOS boot partition (sectors 34-2047)
/// for GRUB's core image.
pub fn gpt_disk(path: &Path, size_mib: u64) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let f = std::fs::File::create(path)?;
    f.set_len(size_mib * 1024 * 1024)?;
    drop(f);
    let p = path.to_string_lossy();
    run(
        "sgdisk",
        &[
            "-n",
            &format!("1:2048:+{ESP_MIB}M"),
            "-t",
            "1:EF00",
            "-c",
            "1:ESP",
            "-n",
            "2:0:0",
            "-t",
            "2:BF00",
            "-c",
            "2:bootenv-pool",
            "-n",
            &format!("3:{BIOS_BOOT_SECTOR}:2047"),
            "-t",
            "3:EF02",
            "-c",
            "3:bios-boot",
            &p,
        ],
    )?;
    let esp = path.with_extension("esp.tmp");
    let _ = std::fs::remove_file(&esp);
    let esp_s = esp.to_string_lossy();
    run("mkfs.vfat", &["-F", "32", "-n", "ESP", "-C", &esp_s, &(ESP_MIB * 1024).to_string()])?;
    run(
        "dd",
        &[
            &format!("if={esp_s}"),
            &format!("of={p}"),
            "bs=1M",
            &format!("seek={ESP_OFFSET_MIB}"),
            "conv=notrunc,sparse",
            "status=none",
        ],
    )?;
    std::fs::remove_file(&esp)?;
    Ok(())
}

/// A qcow2 overlay on `base`: writes go to the overlay, the base stays as it is.
pub fn overlay(base: &Path, path: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-F", "raw", "-b", &base.to_string_lossy(), &path.to_string_lossy()],
    )?;
    Ok(())
}

/// Puts GRUB on a disk made by [`gpt_disk`], for UEFI and BIOS, without loop devices:
/// `/EFI/BOOT/BOOTX64.EFI` (a standalone image embedding `efi_cfg`) on the ESP; for BIOS,
/// boot.img in the MBR (partition table kept) pointing at a core image written to the BIOS
/// boot partition, which loads its modules and `bios_cfg` from `/boot/grub` on the ESP.
pub fn install_grub(disk: &Path, work: &Path, efi_cfg: &str, bios_cfg: &str) -> anyhow::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    std::fs::create_dir_all(work)?;
    let embedded = work.join("efi-embedded.cfg");
    std::fs::write(&embedded, efi_cfg)?;
    let efi = work.join("BOOTX64.EFI");
    run(
        "grub-mkstandalone",
        &[
            "-O",
            "x86_64-efi",
            "-o",
            &efi.to_string_lossy(),
            "--modules=part_gpt fat",
            "--locales=",
            "--fonts=",
            "--themes=",
            &format!("boot/grub/grub.cfg={}", embedded.display()),
        ],
    )?;
    let core = work.join("core.img");
    run(
        "grub-mkimage",
        &[
            "-O",
            "i386-pc",
            "-o",
            &core.to_string_lossy(),
            "-p",
            "(hd0,gpt1)/boot/grub",
            "biosdisk",
            "part_gpt",
            "fat",
        ],
    )?;
    let bios_cfg_file = work.join("grub.cfg");
    std::fs::write(&bios_cfg_file, bios_cfg)?;
    let img = format!("{}@@{}M", disk.display(), ESP_OFFSET_MIB);
    run("mmd", &["-i", &img, "::/EFI", "::/EFI/BOOT", "::/boot", "::/boot/grub", "::/boot/grub/i386-pc"])?;
    run("mcopy", &["-i", &img, &efi.to_string_lossy(), "::/EFI/BOOT/BOOTX64.EFI"])?;
    run("mcopy", &["-i", &img, &bios_cfg_file.to_string_lossy(), "::/boot/grub/grub.cfg"])?;
    let mut mods: Vec<String> = std::fs::read_dir("/usr/lib/grub/i386-pc")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "mod" || e == "lst"))
        .map(|p| p.display().to_string())
        .collect();
    mods.sort();
    let mut args = vec!["-i".to_string(), img.clone()];
    args.extend(mods);
    args.push("::/boot/grub/i386-pc/".into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run("mcopy", &a)?;
    // boot.img: the sector of the core image is a 64-bit field at 0x5c; the core image's first
    // sector (diskboot) lists where the rest is: a 64-bit start sector at 0x1f4.
    let mut boot = std::fs::read("/usr/lib/grub/i386-pc/boot.img")?;
    boot[0x5c..0x64].copy_from_slice(&BIOS_BOOT_SECTOR.to_le_bytes());
    let mut core_bytes = std::fs::read(&core)?;
    anyhow::ensure!(core_bytes.len() <= (2048 - BIOS_BOOT_SECTOR as usize) * 512, "the core image does not fit before the ESP");
    core_bytes[0x1f4..0x1fc].copy_from_slice(&(BIOS_BOOT_SECTOR + 1).to_le_bytes());
    let mut f = std::fs::OpenOptions::new().write(true).open(disk)?;
    f.write_all(&boot[..440])?;
    f.seek(SeekFrom::Start(BIOS_BOOT_SECTOR * 512))?;
    f.write_all(&core_bytes)?;
    f.sync_all()?;
    Ok(())
}
