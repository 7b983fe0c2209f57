//! Where bootenv keeps its files on a running system and in the initramfs, relative to the
//! system's root: a public interface (ARCHITECTURE.md, "Boot report", "The writers' lock" and
//! the code map), spelled only here. A tidy test fails on `run/bootenv` written anywhere else in
//! the shipped code, as it does on an `org.bootenv:` property outside `layout.rs`.

/// bootenv's run-time directory.
pub const RUN: &str = "run/bootenv";
/// The boot report the agent writes (`report.rs`).
pub const BOOT_REPORT: &str = "run/bootenv/boot";
/// The fallback sentence of a boot that fell back, for the login banner.
pub const FALLBACK: &str = "run/bootenv/fallback";
/// What the rescue shell says to try.
pub const RESCUE: &str = "run/bootenv/rescue";
/// The state dataset of the booted pool (another pool's: `<STATE_MOUNT>-<pool>`).
pub const STATE_MOUNT: &str = "run/bootenv/state";
/// The ESP of the booted pool, when bootenv mounts it (another pool's: `<ESP_MOUNT>-<pool>`).
pub const ESP_MOUNT: &str = "run/bootenv/esp";
/// What the booted system's import of the data pools did (`model::datapools`).
pub const DATA_POOLS_REPORT: &str = "run/bootenv/data-pools";
/// The writers' lock.
pub const LOCK: &str = "run/bootenv/lock";
/// Where `bootenv mount` and the verbs mount boot environments and their snapshots.
pub const MNT: &str = "run/bootenv/mnt";

/// bootenv's directory on the ESP (`/bootenv`), which holds what follows.
pub const ESP_DIR: &str = "bootenv";
/// The GRUB menu bootenv writes there.
pub const ESP_MENU: &str = "grub.cfg";
/// GRUB's environment block there.
pub const ESP_ENV: &str = "grubenv";
/// A damaged block, kept when bootenv replaces it.
pub const ESP_ENV_DAMAGED: &str = "grubenv.damaged";
/// The shared kernel store there (`_kernels/<hash>/{vmlinuz,initrd.img}`); not a BE name.
pub const ESP_STORE: &str = "_kernels";
