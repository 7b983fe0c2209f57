//! The on-pool layout: where boot environments, their members and bootenv's own state live, and
//! the `org.bootenv:*` user properties. A public interface (layout version 1), documented in
//! ARCHITECTURE.md; change it only together with that document and a new version number.
//!
//! ```text
//! <pool>/ROOT                 container: canmount=off, mountpoint=none, org.bootenv:layout=1
//! <pool>/ROOT/<be>            a boot environment's root: canmount=noauto, mountpoint=/
//! <pool>/ROOT/<be>/<member>   its members (config, ...): canmount=noauto, mountpoint=<path>
//! <pool>/BOOTENV              bootenv's state: canmount=noauto, mountpoint=legacy
//! <pool>/<anything else>      shared datasets: never mounted or changed by the agent
//! ```

use crate::model::names::{BeName, PoolName};

/// Version of this layout, stored in [`PROP_LAYOUT`] on `<pool>/ROOT`.
pub const LAYOUT_VERSION: &str = "1";

/// The container of all boot environments, below the pool.
pub const ROOT: &str = "ROOT";
/// bootenv's state dataset, below the pool.
pub const STATE: &str = "BOOTENV";

/// Prefix of every user property bootenv reads or writes.
pub const PROP_PREFIX: &str = "org.bootenv:";
/// On `<pool>/ROOT`: the layout version.
pub const PROP_LAYOUT: &str = "org.bootenv:layout";
/// On a BE root: the human label, usually the product version ("2.4.1").
pub const PROP_LABEL: &str = "org.bootenv:label";
/// On a member dataset: its role (`config`, ...).
pub const PROP_MEMBER: &str = "org.bootenv:member";
/// On a BE root: the name of the snapshot holding its factory defaults (taken before it ever ran).
pub const PROP_FACTORY: &str = "org.bootenv:factory";
/// On a BE root: where it was made from (`rootfs:<path>`, or the snapshot it was cloned from).
pub const PROP_SOURCE: &str = "org.bootenv:source";

/// On `<pool>/ROOT` (inherited) or a BE root: kernel command line for its GRUB entry.
pub const PROP_CMDLINE: &str = "org.bootenv:cmdline";
/// On `<pool>/ROOT`: GRUB menu timeout in seconds.
pub const PROP_GRUB_TIMEOUT: &str = "org.bootenv:grub-timeout";
/// On `<pool>/ROOT`: tries a trial gets when none are given.
pub const PROP_TRIES: &str = "org.bootenv:tries";
/// On `<pool>/ROOT` of the system pool: the data pools the booted system imports
/// ([`crate::model::datapools`]).
pub const PROP_DATA_POOLS: &str = "org.bootenv:data-pools";

/// The role of the configuration member.
pub const MEMBER_CONFIG: &str = "config";
/// Default mountpoint of the configuration member, inside the BE.
pub const DEFAULT_CONFIG_MOUNTPOINT: &str = "/etc/config";
/// Name of the factory snapshot made by `bootenv create`.
pub const FACTORY_SNAPSHOT: &str = "factory";

/// The user properties bootenv lists with every dataset, in a fixed order.
pub const LISTED_PROPS: [&str; 9] = [
    PROP_LAYOUT,
    PROP_LABEL,
    PROP_MEMBER,
    PROP_FACTORY,
    PROP_SOURCE,
    PROP_CMDLINE,
    PROP_GRUB_TIMEOUT,
    PROP_TRIES,
    PROP_DATA_POOLS,
];

/// On a dataset: a full reset covers it (value `reset`).
pub const PROP_DATA: &str = "org.bootenv:data";
/// On a dataset put in place by a reset: the reset's id.
pub const PROP_RESET: &str = "org.bootenv:reset";
/// On a dataset a reset kept aside: the name it had.
pub const PROP_SAVED: &str = "org.bootenv:saved";
/// On the datasets of a swap: the `canmount` the dataset had, which the swap sets to `off`
/// while it works and gives back at the end.
pub const PROP_CANMOUNT: &str = "org.bootenv:canmount";

/// Properties ZFS gives a clone from its origin and refuses to set on it (encryption is the
/// origin's).
pub const NOT_SETTABLE_ON_CLONE: [&str; 7] = [
    "encryption",
    "keyformat",
    "keylocation",
    "pbkdf2iters",
    "encryptionroot",
    "keystatus",
    "origin",
];

/// Whether a local property of a dataset goes over to a clone that takes its place (a new BE's
/// dataset, a reset's swapped-in one): not what ZFS refuses on a clone, not a reset's own
/// bookkeeping, not `canmount` (each caller sets it).
pub fn carried_to_clone(prop: &str) -> bool {
    !NOT_SETTABLE_ON_CLONE.contains(&prop)
        && ![PROP_RESET, PROP_SAVED, PROP_CANMOUNT, "canmount"].contains(&prop)
}

/// `<pool>/ROOT`
pub fn root_container(pool: &PoolName) -> String {
    format!("{pool}/{ROOT}")
}

/// `<pool>/ROOT/<be>`
pub fn be_dataset(pool: &PoolName, be: &BeName) -> String {
    format!("{pool}/{ROOT}/{be}")
}

/// `<pool>/BOOTENV`
pub fn state_dataset(pool: &PoolName) -> String {
    format!("{pool}/{STATE}")
}

/// If `dataset` is a BE root (`<pool>/ROOT/<name>`), its name; `Err` with the reason when it
/// lies where a BE root would but its name is not one bootenv can use.
pub fn be_of_root(
    pool: &PoolName,
    dataset: &str,
) -> Option<Result<BeName, crate::model::names::NameError>> {
    let rest = dataset
        .strip_prefix(pool.as_str())?
        .strip_prefix('/')?
        .strip_prefix(ROOT)?;
    let name = rest.strip_prefix('/')?;
    if name.contains('/') {
        return None;
    }
    Some(BeName::new(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn be_roots_are_recognised() {
        let p = PoolName::new("tank").unwrap();
        assert_eq!(
            be_of_root(&p, "tank/ROOT/v1").unwrap().unwrap().as_str(),
            "v1"
        );
        assert!(be_of_root(&p, "tank/ROOT/v1/config").is_none());
        assert!(be_of_root(&p, "tank/ROOT").is_none());
        assert!(be_of_root(&p, "tank/ROOTS/v1").is_none());
        assert!(be_of_root(&p, "tanker/ROOT/v1").is_none());
        assert!(be_of_root(&p, "tank/ROOT/bad name").unwrap().is_err());
        assert_eq!(be_dataset(&p, &BeName::new("v2").unwrap()), "tank/ROOT/v2");
    }

    #[test]
    fn a_clone_takes_the_users_properties_not_zfs_own_nor_resets_bookkeeping() {
        for p in [
            "compression",
            "org.bootenv:cmdline",
            "org.example:x",
            "mountpoint",
        ] {
            assert!(carried_to_clone(p), "{p}");
        }
        for p in [
            "encryption",
            "keylocation",
            "origin",
            "canmount",
            PROP_RESET,
            PROP_SAVED,
            PROP_CANMOUNT,
        ] {
            assert!(!carried_to_clone(p), "{p}");
        }
    }
}
