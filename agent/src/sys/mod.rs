//! The seams between bootenv and the system: ZFS ([`zfs::Zfs`]), mounts ([`mounts::Mounter`]),
//! the one command runner ([`run`]), crash-safe file writes ([`fsutil`]), the state record's
//! file ([`statefile`]) and the writers' lock ([`lock`]). Other modules reach the system only through these.

pub mod fsutil;
pub mod lock;
pub mod mounts;
pub mod run;
pub mod statefile;
pub mod zfs;
