//! Disk images without loop devices: a GPT with an ESP (FAT32) and a partition for the pool,
//! and qcow2 overlays so that every scenario boots its own copy of the golden image.

use crate::host::run;
use std::path::Path;

/// Size of the ESP, in MiB.
pub const ESP_MIB: u64 = 256;
/// Offset of the ESP, in MiB (sector 2048).
pub const ESP_OFFSET_MIB: u64 = 1;

/// Makes a sparse raw disk of `size_mib` with partition 1 the ESP (formatted FAT32, label
/// ESP) and partition 2 for ZFS (empty).
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
