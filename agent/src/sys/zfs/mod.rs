//! The ZFS boundary: what bootenv asks of pools and datasets, as a trait.
//!
//! [`cli::ZfsCli`] is the real implementation (it runs `zpool` and `zfs` with `-H -p` and parses
//! their output); `fake::FakeZfs` (compiled for tests only) keeps pools in memory for tests. The parsers live here, next
//! to the types they produce, and are tested on captured output.

pub mod cli;
#[cfg(test)]
pub mod fake;

pub use crate::model::listing::{
    list_columns, parse_list, CanMount, Child, Dataset, Listing, Mountpoint,
};
use std::fmt;

/// Why a pool could not be imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportError {
    /// No disk holding the pool was found.
    NotFound,
    /// The pool was last imported by another host (hostid) and not exported. It is not in use
    /// now as far as ZFS can tell; adopting that hostid makes the import safe and plain.
    Foreign {
        /// The hostid recorded in the pool's label.
        hostid: u32,
    },
    /// The pool is imported and active on another host (multihost protection): never force it.
    InUse(String),
    /// Anything else, with the tool's message.
    Other(String),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::NotFound => f.write_str("no disk holding the pool was found"),
            ImportError::Foreign { hostid } => {
                write!(f, "the pool was last used by another system (hostid {hostid:08x}) and not exported")
            }
            ImportError::InUse(m) => write!(f, "the pool is in use by another system: {m}"),
            ImportError::Other(m) => f.write_str(m),
        }
    }
}

/// A pool that `zpool import` (without arguments) reports as importable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Importable {
    /// Its name.
    pub name: String,
    /// Its state (`ONLINE`, `DEGRADED`, `UNAVAIL`, ...).
    pub state: String,
}

/// What [`Zfs::boot_reads`] read.
pub struct BootReads {
    /// The named datasets ([`Zfs::list_exact`]).
    pub exact: anyhow::Result<Listing>,
    /// The pool property ([`Zfs::pool_prop`]).
    pub prop: anyhow::Result<Option<String>>,
    /// The subtrees ([`Zfs::list_many`]); empty when none were asked for.
    pub subtrees: anyhow::Result<Listing>,
}

/// What bootenv needs from ZFS. Every method names its target in its errors.
pub trait Zfs {
    /// Pools that are imported now.
    fn imported_pools(&self) -> anyhow::Result<Vec<String>>;
    /// Pools that could be imported (a scan of the disks).
    fn scan(&self) -> anyhow::Result<Vec<Importable>>;
    /// Imports `pool` without mounting anything and without a cache file. Never forces.
    fn import(&self, pool: &str) -> anyhow::Result<Result<(), ImportError>>;
    /// Imports a data pool after the switch of root: `zpool import` with the pool's cache file
    /// off (so no early-boot service imports it before bootenv), mounting its datasets with
    /// `canmount=on` when `mount`, none with `-N`. Never forces. No practical time limit: a
    /// large pool takes minutes. A pool that imported but some of whose datasets did not mount
    /// is imported (`Ok`); the mount errors are logged.
    fn import_data(&self, pool: &str, mount: bool) -> anyhow::Result<Result<(), ImportError>>;
    /// Exports `pool`.
    fn export(&self, pool: &str) -> anyhow::Result<()>;
    /// A property of an imported pool (`None` when unset, `-`).
    fn pool_prop(&self, pool: &str, prop: &str) -> anyhow::Result<Option<String>>;
    /// Sets a property of an imported pool.
    fn set_pool_prop(&self, pool: &str, prop: &str, value: &str) -> anyhow::Result<()>;
    /// Lists `dataset` and the filesystems below it; an empty listing when it does not exist.
    fn list(&self, dataset: &str) -> anyhow::Result<Listing>;
    /// [`Zfs::list`] for each of `datasets`, together (one command where that is possible:
    /// each command costs on the boot path); missing ones list nothing.
    fn list_many(&self, datasets: &[&str]) -> anyhow::Result<Listing> {
        let mut all = Listing::default();
        for d in datasets {
            let l = self.list(d)?;
            all.datasets.extend(l.datasets);
            all.tainted.extend(l.tainted);
        }
        Ok(all)
    }
    /// The boot path's first reads after the import, which do not depend on one another: the
    /// datasets `exact` by name, the property `prop` of `pool`, and the subtrees of `subtrees`
    /// (the BE the command line names, read before the state record says which others are
    /// needed). One after another here; at once in the real implementation, where each is a
    /// process start and a trip into the kernel, most of the agent's own time.
    fn boot_reads(&self, exact: &[&str], pool: &str, prop: &str, subtrees: &[&str]) -> BootReads {
        BootReads {
            exact: self.list_exact(exact),
            prop: self.pool_prop(pool, prop),
            subtrees: if subtrees.is_empty() {
                Ok(Listing::default())
            } else {
                self.list_many(subtrees)
            },
        }
    }
    /// The named datasets themselves (no descendants), together; missing ones list nothing.
    /// What a lookup by name costs, against a listing's cost per dataset below: the boot path
    /// reads `<pool>/ROOT` and the state dataset this way, never the BEs it does not need.
    fn list_exact(&self, datasets: &[&str]) -> anyhow::Result<Listing> {
        let mut all = self.list_many(datasets)?;
        all.datasets.retain(|d| datasets.contains(&d.name.as_str()));
        all.tainted.retain(|t| datasets.contains(&t.as_str()));
        Ok(all)
    }
    /// The datasets directly below `dataset`, each with the values of `props` (own or
    /// inherited; unset ones left out), and nothing else of them: a ZFS channel program that
    /// walks the names and reads only those properties, several times cheaper per dataset than
    /// a listing, which reads every property of each.
    fn children(&self, dataset: &str, props: &[&str]) -> anyhow::Result<Vec<Child>>;
    /// Creates a filesystem with the given properties (parents must exist).
    fn create(&self, dataset: &str, props: &[(&str, &str)]) -> anyhow::Result<()>;
    /// Sets properties on a dataset, all in one command.
    fn set(&self, dataset: &str, props: &[(&str, &str)]) -> anyhow::Result<()>;
    /// Takes `<dataset>@<snap>` and, with `recursive`, the same snapshot of every descendant,
    /// atomically.
    fn snapshot(&self, dataset: &str, snap: &str, recursive: bool) -> anyhow::Result<()>;
    /// Renames a filesystem (with its descendants and snapshots), atomically.
    fn rename(&self, from: &str, to: &str) -> anyhow::Result<()>;
    /// Destroys a dataset; with `recursive`, its descendants and snapshots too. Callers
    /// destroy only what bootenv itself made and the operator asked to remove.
    fn destroy(&self, dataset: &str, recursive: bool) -> anyhow::Result<()>;
    /// Clones `snapshot` (`ds@snap`) as `target`, with properties.
    fn clone_snapshot(
        &self,
        snapshot: &str,
        target: &str,
        props: &[(&str, &str)],
    ) -> anyhow::Result<()>;
    /// Promotes a clone: it takes over its origin's snapshots up to the origin.
    fn promote(&self, dataset: &str) -> anyhow::Result<()>;
    /// The snapshots of `dataset` itself (full names), oldest first.
    fn snapshots(&self, dataset: &str) -> anyhow::Result<Vec<String>>;
    /// The clones of the snapshots of `root` and of its descendants, as (clone, origin
    /// snapshot) pairs: what depends on the subtree, found without listing the whole pool.
    fn clones(&self, root: &str) -> anyhow::Result<Vec<(String, String)>>;
    /// Datasets below `root` (itself included) where `prop` is set locally, with the value.
    fn local_prop(&self, root: &str, prop: &str) -> anyhow::Result<Vec<(String, String)>>;
    /// The properties set locally on `dataset` (settable ones, user properties included).
    fn local_props(&self, dataset: &str) -> anyhow::Result<Vec<(String, String)>>;
    /// The device nodes of an imported pool's leaf vdevs (`/dev/vda2`).
    fn vdev_devices(&self, pool: &str) -> anyhow::Result<Vec<String>>;
    /// Writes a replication stream of `snapshot` (`ds@snap`: the dataset, its descendants and
    /// their snapshots up to it, with properties) into `sink`; returns the bytes written.
    fn send(&self, snapshot: &str, sink: &mut dyn std::io::Write) -> anyhow::Result<u64>;
    /// Receives a stream from `src` as `dataset` (which must not exist), mounting nothing;
    /// returns the bytes read. A failed receive leaves nothing.
    fn receive(&self, dataset: &str, src: &mut dyn std::io::Read) -> anyhow::Result<u64>;
    /// Creates pool `pool` on `device` for bootenv: ashift 12, no cache file, nothing mounted,
    /// lz4, no atime.
    fn create_pool(&self, pool: &str, device: &str) -> anyhow::Result<()>;
    /// Creates a data pool on `devices` (whole disks or partitions), mirrored when there are
    /// several, with the same properties as a system pool (its root mounts nothing) and no
    /// cache file; it stays imported.
    fn create_data_pool(&self, pool: &str, devices: &[String]) -> anyhow::Result<()>;
}

/// Parses the human-readable output of `zpool import` (a scan): pool names and states.
pub fn parse_scan(out: &str) -> Vec<Importable> {
    let mut pools = Vec::new();
    let mut name: Option<String> = None;
    for line in out.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("pool:") {
            name = Some(n.trim().to_owned());
        } else if let Some(s) = line.strip_prefix("state:") {
            if let Some(n) = name.take() {
                pools.push(Importable {
                    name: n,
                    state: s.trim().to_owned(),
                });
            }
        }
    }
    pools
}

/// Classifies the stderr of a failed `zpool import <pool>`.
pub fn classify_import_error(stderr: &str) -> ImportError {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("no such pool available") || lower.contains("no pools available") {
        ImportError::NotFound
    } else if lower.contains("is imported on host") || lower.contains("currently imported on") {
        ImportError::InUse(stderr.trim().replace('\n', " "))
    } else if lower.contains("previously in use from another system") {
        match parse_hostid(stderr) {
            Some(hostid) if hostid != 0 => ImportError::Foreign { hostid },
            _ => ImportError::Other(stderr.trim().replace('\n', " ")),
        }
    } else {
        ImportError::Other(stderr.trim().replace('\n', " "))
    }
}

/// Finds `hostid=<hex>` in a message.
fn parse_hostid(s: &str) -> Option<u32> {
    let start = s.find("hostid=")? + "hostid=".len();
    let hex: String = s[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    if hex.is_empty() || hex.len() > 8 {
        return None;
    }
    u32::from_str_radix(&hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_scan() {
        let out = "   pool: tank\n     id: 123\n  state: ONLINE\n action: The pool can be imported.\n config:\n\n\ttank  ONLINE\n\t  vda2  ONLINE\n\n   pool: other\n     id: 9\n  state: UNAVAIL\n";
        assert_eq!(
            parse_scan(out),
            vec![
                Importable {
                    name: "tank".into(),
                    state: "ONLINE".into()
                },
                Importable {
                    name: "other".into(),
                    state: "UNAVAIL".into()
                }
            ]
        );
        assert!(parse_scan("no pools available to import\n").is_empty());
    }

    #[test]
    fn classifies_import_errors() {
        assert_eq!(
            classify_import_error("cannot import 'tank': no such pool available\n"),
            ImportError::NotFound
        );
        let foreign = "cannot import 'tank': pool was previously in use from another system.\nLast accessed by builder (hostid=2d0b6f3f) at Sat Nov 22 05:30:00 2026\nThe pool can be imported, use 'zpool import -f' to import the pool.\n";
        assert_eq!(
            classify_import_error(foreign),
            ImportError::Foreign { hostid: 0x2d0b6f3f }
        );
        let inuse = "cannot import 'tank': pool is imported on host 'other' (hostid=1234abcd).\nExport the pool on the other system, then run 'zpool import'.\n";
        assert!(matches!(
            classify_import_error(inuse),
            ImportError::InUse(_)
        ));
        assert!(matches!(
            classify_import_error("cannot import 'tank': I/O error\n"),
            ImportError::Other(_)
        ));
    }
}
