//! bootenv: versioned, self-healing ZFS boot environments.
//!
//! One binary, two roles. As PID 1 of the initramfs ([`initramfs`]) it imports the pool, picks
//! the boot environment GRUB chose (or the default, with the reason), mounts it and execs its
//! init. On a running system ([`cli`]) it is the operator's tool. See ARCHITECTURE.md for the
//! map of the modules and the invariants they keep.

pub mod boot;
pub mod bootfiles;
pub mod cli;
pub mod cmdline;
pub mod core;
pub mod esp;
pub mod fsutil;
pub mod grub;
pub mod grubenv;
pub mod initramfs;
pub mod install;
pub mod inventory;
pub mod layout;
pub mod lifecycle;
pub mod lock;
pub mod mounts;
pub mod names;
pub mod ops;
pub mod report;
pub mod reset;
pub mod run;
pub mod state;
#[cfg(test)]
pub(crate) mod testing;
pub mod treediff;
pub mod zfs;
