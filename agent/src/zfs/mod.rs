//! The ZFS boundary: what bootenv asks of pools and datasets, as a trait.
//!
//! [`cli::ZfsCli`] is the real implementation (it runs `zpool` and `zfs` with `-H -p` and parses
//! their output); [`fake::FakeZfs`] keeps pools in memory for tests. The parsers live here, next
//! to the types they produce, and are tested on captured output.

pub mod cli;
#[cfg(test)]
pub mod fake;

use crate::names::printable;
use std::collections::BTreeMap;
use std::fmt;

/// `canmount` of a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanMount {
    /// `on`: mounted by `zfs mount -a`.
    On,
    /// `off`: never mounted.
    Off,
    /// `noauto`: mounted only when asked for.
    NoAuto,
}

/// `mountpoint` of a filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mountpoint {
    /// `none`
    None,
    /// `legacy`: mounted by mount(8) and fstab only.
    Legacy,
    /// An absolute path.
    Path(String),
}

/// A filesystem dataset with the properties bootenv reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// Full name, `<pool>/...`.
    pub name: String,
    /// `canmount`
    pub canmount: CanMount,
    /// `mountpoint` (inherited or local)
    pub mountpoint: Mountpoint,
    /// `creation`, seconds since the epoch.
    pub creation: u64,
    /// `origin`: the snapshot it was cloned from.
    pub origin: Option<String>,
    /// `used`, in bytes.
    pub used: u64,
    /// The `org.bootenv:*` properties that are set, by full property name.
    pub user: BTreeMap<String, String>,
}

impl Dataset {
    /// A user property's value, if set.
    pub fn prop(&self, name: &str) -> Option<&str> {
        self.user.get(name).map(String::as_str)
    }
}

/// The result of listing datasets: those that parsed, and lines that did not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Datasets whose line was read unambiguously.
    pub datasets: Vec<Dataset>,
    /// Names whose properties could not be read unambiguously (a value holding a tab or a
    /// newline, or a name listed twice): bootenv acts on none of them.
    pub tainted: Vec<String>,
}

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

/// What bootenv needs from ZFS. Every method names its target in its errors.
pub trait Zfs {
    /// Pools that are imported now.
    fn imported_pools(&self) -> anyhow::Result<Vec<String>>;
    /// Pools that could be imported (a scan of the disks).
    fn scan(&self) -> anyhow::Result<Vec<Importable>>;
    /// Imports `pool` without mounting anything and without a cache file. Never forces.
    fn import(&self, pool: &str) -> anyhow::Result<Result<(), ImportError>>;
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
}

/// The columns of a listing, in the order [`parse_list`] expects.
pub fn list_columns() -> String {
    let mut cols = String::from("name,canmount,mountpoint,creation,origin,used");
    for p in crate::layout::LISTED_PROPS {
        cols.push(',');
        cols.push_str(p);
    }
    cols
}

fn parse_canmount(s: &str) -> Option<CanMount> {
    match s {
        "on" => Some(CanMount::On),
        "off" => Some(CanMount::Off),
        "noauto" => Some(CanMount::NoAuto),
        _ => None,
    }
}

fn parse_mountpoint(s: &str) -> Option<Mountpoint> {
    match s {
        "none" | "-" => Some(Mountpoint::None),
        "legacy" => Some(Mountpoint::Legacy),
        p if p.starts_with('/') => Some(Mountpoint::Path(p.to_owned())),
        _ => None,
    }
}

fn parse_line(line: &str) -> Option<Dataset> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() != 6 + crate::layout::LISTED_PROPS.len() {
        return None;
    }
    let name = fields[0];
    if name.is_empty() || name.contains(['@', '#']) {
        return None;
    }
    let user = crate::layout::LISTED_PROPS
        .iter()
        .zip(&fields[6..])
        .filter(|(_, v)| **v != "-")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Dataset {
        name: name.to_owned(),
        canmount: parse_canmount(fields[1])?,
        mountpoint: parse_mountpoint(fields[2])?,
        creation: fields[3].parse().ok()?,
        origin: (fields[4] != "-").then(|| fields[4].to_owned()),
        used: fields[5].parse().ok()?,
        user,
    })
}

/// Parses `zfs list -H -p -o <list_columns()>` output.
///
/// Property values may hold tabs and newlines, which would let one dataset's value pose as
/// another dataset's line. A line that does not parse taints the dataset it starts with; a name
/// seen twice is tainted; tainted datasets are left out of `datasets`.
pub fn parse_list(out: &str) -> Listing {
    let mut seen: BTreeMap<String, Dataset> = BTreeMap::new();
    let mut order = Vec::new();
    let mut tainted = Vec::new();
    for line in out.split('\n').filter(|l| !l.is_empty()) {
        match parse_line(line) {
            Some(ds) => {
                if seen.contains_key(&ds.name) || tainted.contains(&ds.name) {
                    log::warn!(
                        "dataset {} is listed twice: a property value holds a newline",
                        printable(&ds.name)
                    );
                    seen.remove(&ds.name);
                    if !tainted.contains(&ds.name) {
                        tainted.push(ds.name);
                    }
                } else {
                    order.push(ds.name.clone());
                    seen.insert(ds.name.clone(), ds);
                }
            }
            None => {
                let first = line.split('\t').next().unwrap_or("");
                log::warn!(
                    "unreadable line in the dataset listing: {}",
                    printable(line)
                );
                if !first.is_empty() && !tainted.iter().any(|t| t == first) {
                    seen.remove(first);
                    tainted.push(first.to_owned());
                }
            }
        }
    }
    let datasets = order.into_iter().filter_map(|n| seen.remove(&n)).collect();
    Listing { datasets, tainted }
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

    const LISTING: &str = "tank/ROOT\toff\tnone\t1700000000\t-\t1000\t1\t-\t-\t-\t-\tquiet\t5\t-\n\
tank/ROOT/v1\tnoauto\t/\t1700000001\t-\t2000\t-\t1.0\t-\tfactory\trootfs:/x\tquiet\t5\t-\n\
tank/ROOT/v1/config\tnoauto\t/etc/config\t1700000002\t-\t300\t-\t-\tconfig\t-\t-\tquiet\t5\t-\n\
tank/ROOT/v2\tnoauto\t/\t1700000003\ttank/ROOT/v1@s\t400\t-\t2.0 beta\t-\t-\t-\tquiet\t5\t-\n";

    #[test]
    fn parses_a_listing() {
        let l = parse_list(LISTING);
        assert!(l.tainted.is_empty());
        assert_eq!(l.datasets.len(), 4);
        let v1 = &l.datasets[1];
        assert_eq!(v1.name, "tank/ROOT/v1");
        assert_eq!(v1.canmount, CanMount::NoAuto);
        assert_eq!(v1.mountpoint, Mountpoint::Path("/".into()));
        assert_eq!(v1.prop(crate::layout::PROP_LABEL), Some("1.0"));
        assert_eq!(v1.prop(crate::layout::PROP_MEMBER), None);
        assert_eq!(l.datasets[0].mountpoint, Mountpoint::None);
        assert_eq!(l.datasets[3].origin.as_deref(), Some("tank/ROOT/v1@s"));
        assert_eq!(
            l.datasets[3].prop(crate::layout::PROP_LABEL),
            Some("2.0 beta")
        );
        assert_eq!(l.datasets[2].used, 300);
    }

    #[test]
    fn a_newline_in_a_value_taints_instead_of_injecting() {
        // v2's label holds "x\ntank/ROOT/v1\tnoauto\t/..." trying to pose as v1.
        let evil = "tank/ROOT/v1\tnoauto\t/\t1\t-\t1\t-\tgood\t-\t-\t-\t-\t-\t-\n\
tank/ROOT/v2\tnoauto\t/\t2\t-\t1\t-\tx\n\
tank/ROOT/v1\tnoauto\t/\t3\t-\t1\t-\tevil\t-\t-\t-\t-\t-\t-\n";
        let l = parse_list(evil);
        assert!(l.datasets.is_empty(), "{:?}", l.datasets);
        assert_eq!(
            l.tainted,
            vec!["tank/ROOT/v2".to_string(), "tank/ROOT/v1".to_string()]
        );
    }

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
