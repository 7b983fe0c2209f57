//! bootenv's VM harness: real Debian kernels, real ZFS and (later) real GRUB under QEMU.
//!
//! - [`qemu`]: runs one VM, captures its serial console, waits for ordered markers, types keys,
//!   and tells a clean power-off from a kernel panic or a hang.
//! - [`disk`]: GPT disk images and qcow2 overlays, no loop devices.
//! - [`images`]: the initramfs and the golden test disk (built in a builder VM by bootenv itself).
//! - [`cache`]: where those and the other costly artifacts are kept between runs, by input hash.
//! - [`scenarios`]: the named scenarios `cargo xtask vm-test` runs.
//!
//! The suite is DESTRUCTIVE only to files under its work directory (`target/vmtest`).

pub mod bench;
pub mod cache;
pub mod debian;
pub mod disk;
pub mod host;
pub mod images;
pub mod qemu;
pub mod scenarios;
