//! Disk images without loop devices: blank disks, a GPT with an ESP (FAT32) and an empty pool
//! partition, qcow2 overlays so that every scenario boots its own copy of the golden image, and
//! the GRUB images `bootenv install` puts on a disk.

use crate::host::run;
use anyhow::Context;
use std::path::Path;

/// Size of the ESP, in MiB.
pub const ESP_MIB: u64 = 256;
/// Offset of the ESP, in MiB (sector 2048).
pub const ESP_OFFSET_MIB: u64 = 1;

/// Makes a sparse raw disk of `size_mib` with partition 1 the ESP (formatted FAT32, label
/// ESP), partition 2 for ZFS (empty) and partition 3 a BIOS boot partition: a disk laid out
/// like `bootenv install` does, without a pool.
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
            "3:34:2047",
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
    run(
        "mkfs.vfat",
        &[
            "-F",
            "32",
            "-n",
            "ESP",
            "-C",
            &esp_s,
            &(ESP_MIB * 1024).to_string(),
        ],
    )?;
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

/// A qcow2 overlay on `base` (a raw image, or a qcow2 one when its name ends in `.qcow2`):
/// writes go to the overlay, the base stays as it is.
pub fn overlay(base: &Path, path: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let format = if base.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    };
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            format,
            "-b",
            &base.to_string_lossy(),
            &path.to_string_lossy(),
        ],
    )?;
    Ok(())
}

/// Builds the GRUB images `bootenv install` puts on a disk (see `agent/src/verbs/install.rs`) into
/// `dir`: `BOOTX64.EFI` (standalone, embedding `efi_cfg`), `grub-bios.cfg`, and `i386-pc/` with
/// boot.img, a core image with prefix `(hd0,gpt1)/boot/grub`, and the modules.
pub fn grub_images(dir: &Path, efi_cfg: &str, bios_cfg: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("i386-pc"))?;
    // What grub-mkstandalone does, made reproducible: a memdisk (a tar with fixed times and
    // order) holding the configuration and every x86_64-efi module and list, and an image that
    // mounts it as its prefix. grub-mkstandalone stamps its temporary copies with the time of
    // the build.
    let tree = dir.join("memdisk");
    let platform = Path::new("/usr/lib/grub/x86_64-efi");
    let mods = tree.join("boot/grub/x86_64-efi");
    std::fs::create_dir_all(&mods)?;
    for e in std::fs::read_dir(platform).with_context(|| {
        format!(
            "reading {} (package grub-efi-amd64-bin)",
            platform.display()
        )
    })? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "mod" || x == "lst") {
            std::fs::copy(&p, mods.join(p.file_name().expect("a file")))?;
        }
    }
    std::fs::write(tree.join("boot/grub/grub.cfg"), efi_cfg)?;
    let tar = dir.join("memdisk.tar");
    run(
        "tar",
        &[
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=ustar",
            "-C",
            &tree.to_string_lossy(),
            "-cf",
            &tar.to_string_lossy(),
            "boot",
        ],
    )?;
    run(
        "grub-mkimage",
        &[
            "-O",
            "x86_64-efi",
            "-o",
            &dir.join("BOOTX64.EFI").to_string_lossy(),
            "-m",
            &tar.to_string_lossy(),
            "-p",
            "(memdisk)/boot/grub",
            "memdisk",
            "tar",
            "part_gpt",
            "fat",
        ],
    )?;
    std::fs::remove_dir_all(&tree)?;
    std::fs::remove_file(&tar)?;
    std::fs::write(dir.join("grub-bios.cfg"), bios_cfg)?;
    run(
        "grub-mkimage",
        &[
            "-O",
            "i386-pc",
            "-o",
            &dir.join("i386-pc/core.img").to_string_lossy(),
            "-p",
            "(hd0,gpt1)/boot/grub",
            "biosdisk",
            "part_gpt",
            "fat",
        ],
    )?;
    for e in std::fs::read_dir("/usr/lib/grub/i386-pc")?.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "mod" || x == "lst")
            || p.file_name().is_some_and(|n| n == "boot.img")
        {
            std::fs::copy(&p, dir.join("i386-pc").join(e.file_name()))?;
        }
    }
    Ok(())
}

/// A sparse file of `size_mib`, all zeroes: a blank disk.
pub fn blank(path: &Path, size_mib: u64) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    std::fs::File::create(path)?.set_len(size_mib * 1024 * 1024)?;
    Ok(())
}

/// What `fsck.fat -n` finds wrong with the files of the ESP of `disk` (a qcow2 or raw disk laid
/// out like the golden one: the ESP at [`ESP_OFFSET_MIB`], [`ESP_MIB`] long), checked on a raw
/// copy made in `work`, so nothing changes. Each item is a damaged path with fsck's words on it
/// (a name pointing at freed clusters, a directory without its first cluster, ...). What a power
/// cut always leaves and damages no file is not counted: the dirty bit, a stale free-cluster
/// count, clusters allocated to nothing (an unfinished temporary file).
pub fn esp_damage(disk: &Path, work: &Path) -> anyhow::Result<Vec<String>> {
    let raw = work.join("esp-check.raw");
    let esp = work.join("esp-check.fat");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            &disk.to_string_lossy(),
            &raw.to_string_lossy(),
        ],
    )?;
    run(
        "dd",
        &[
            &format!("if={}", raw.display()),
            &format!("of={}", esp.display()),
            "bs=1M",
            &format!("skip={ESP_OFFSET_MIB}"),
            &format!("count={ESP_MIB}"),
            "status=none",
        ],
    )?;
    let _ = std::fs::remove_file(&raw);
    let out = std::process::Command::new("fsck.fat")
        .args(["-n", &esp.to_string_lossy()])
        .output()
        .context("running fsck.fat (package dosfstools; run `cargo xtask deps`)")?;
    let _ = std::fs::remove_file(&esp);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.code().is_some_and(|c| c <= 1),
        "fsck.fat could not check the ESP ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(fat_damage(&text))
}

/// The damaged paths in `fsck.fat`'s report: a line naming a path, with the indented lines
/// after it.
fn fat_damage(report: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut in_path = false;
    for line in report.lines() {
        // The closing summary names the image: `<image>: N files, M/T clusters`.
        let summary = line.contains(" files, ") && line.ends_with(" clusters");
        if line.starts_with('/') && !summary {
            found.push(line.trim().to_owned());
            in_path = true;
        } else if in_path && line.starts_with(' ') {
            if let Some(last) = found.last_mut() {
                last.push_str(": ");
                last.push_str(line.trim());
            }
        } else {
            in_path = false;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #[test]
    fn fsck_reports_damaged_paths_and_not_the_harmless_leftovers() {
        let report = "fsck.fat 4.2 (2021-01-31)\n/bootenv/grub.cfg\n  Contains a free cluster (103670). Assuming EOF.\n/bootenv/b4/k-1-x\n Start does point to root directory. Deleting dir. \nReclaimed 62533 unused clusters (32016896 bytes).\nDirty bit is set. Fs was not properly unmounted and some data may be corrupt.\n Automatically removing dirty bit.\nFree cluster summary wrong (318756 vs. really 381289)\n  Auto-correcting.\n/tmp/esp.fat: 311 files, 103646/516188 clusters\n";
        assert_eq!(
            super::fat_damage(report),
            vec![
                "/bootenv/grub.cfg: Contains a free cluster (103670). Assuming EOF.".to_string(),
                "/bootenv/b4/k-1-x: Start does point to root directory. Deleting dir.".to_string(),
            ]
        );
        let clean = "fsck.fat 4.2 (2021-01-31)\nDirty bit is set. Fs was not properly unmounted and some data may be corrupt.\n Automatically removing dirty bit.\nReclaimed 3 unused clusters (1536 bytes).\n";
        assert!(super::fat_damage(clean).is_empty());
    }
}
