//! bootenv: versioned, self-healing ZFS boot environments.
//!
//! One binary, two roles. As PID 1 of the initramfs ([`pid1`]) it imports the pool, picks the
//! boot environment GRUB chose (or the default, with the reason), mounts it and execs its init.
//! On a running system ([`cli`]) it is the operator's tool. The folders say what each part is:
//!
//! - [`model`]: names, the layout, the kernel command line, the inventory of boot environments,
//!   the state record and the boot report: what bootenv reads and writes, parsed and checked;
//! - [`sys`]: the seams to the system (ZFS, mounts, the command runner, crash-safe files, the
//!   writers' lock), each with a fake for the tests where it has state;
//! - [`bootloader`]: GRUB's menu and environment block, the ESP and bootenv's files on it;
//! - [`boot`]: the boot path, its pure decision core and the factory reset;
//! - [`verbs`]: what the operator's commands do;
//! - [`cli`]: the command line; [`pid1`]: what only PID 1 of the initramfs does.
//!
//! See ARCHITECTURE.md for the map of the modules and the invariants they keep.

pub mod boot;
pub mod bootloader;
pub mod cli;
pub mod model;
pub mod pid1;
pub mod sys;
#[cfg(test)]
pub(crate) mod testing;
pub mod verbs;
