//! What `zfs list -H -p -o <list_columns()>` says, as types: datasets with the properties
//! bootenv reads, parsed so that no property value can pose as another dataset's line. Pure: the
//! [`crate::sys::zfs::Zfs`] seam runs the command, this module reads its output.

use crate::model::names::printable;
use std::collections::BTreeMap;

/// `canmount` of a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CanMount {
    /// `on`: mounted by `zfs mount -a`.
    On,
    /// `off`: never mounted.
    Off,
    /// `noauto`: mounted only when asked for.
    NoAuto,
}

/// `mountpoint` of a filesystem.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mountpoint {
    /// `none`
    None,
    /// `legacy`: mounted by mount(8) and fstab only.
    Legacy,
    /// An absolute path.
    Path(String),
}

/// A filesystem dataset with the properties bootenv reads.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// A dataset as a walk of names reads it (`Zfs::children`): its name and the values of the
/// few properties asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    /// Its full name.
    pub name: String,
    /// The properties asked for that have a value (own or inherited).
    pub props: BTreeMap<String, String>,
}

/// The result of listing datasets: those that parsed, and lines that did not.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listing {
    /// Datasets whose line was read unambiguously.
    pub datasets: Vec<Dataset>,
    /// Names whose properties could not be read unambiguously (a value holding a tab or a
    /// newline, or a name listed twice): bootenv acts on none of them.
    pub tainted: Vec<String>,
}

/// The columns of a listing, in the order [`parse_list`] expects.
pub fn list_columns() -> String {
    let mut cols = String::from("name,canmount,mountpoint,creation,origin,used");
    for p in crate::model::layout::LISTED_PROPS {
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
    if fields.len() != 6 + crate::model::layout::LISTED_PROPS.len() {
        return None;
    }
    let name = fields[0];
    if name.is_empty() || name.contains(['@', '#']) {
        return None;
    }
    let user = crate::model::layout::LISTED_PROPS
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

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str =
        "tank/ROOT\toff\tnone\t1700000000\t-\t1000\t1\t-\t-\t-\t-\tquiet\t5\t-\t-\n\
tank/ROOT/v1\tnoauto\t/\t1700000001\t-\t2000\t-\t1.0\t-\tfactory\trootfs:/x\tquiet\t5\t-\t-\n\
tank/ROOT/v1/config\tnoauto\t/etc/config\t1700000002\t-\t300\t-\t-\tconfig\t-\t-\tquiet\t5\t-\t-\n\
tank/ROOT/v2\tnoauto\t/\t1700000003\ttank/ROOT/v1@s\t400\t-\t2.0 beta\t-\t-\t-\tquiet\t5\t-\t-\n";

    #[test]
    fn parses_a_listing() {
        let l = parse_list(LISTING);
        assert!(l.tainted.is_empty());
        assert_eq!(l.datasets.len(), 4);
        let v1 = &l.datasets[1];
        assert_eq!(v1.name, "tank/ROOT/v1");
        assert_eq!(v1.canmount, CanMount::NoAuto);
        assert_eq!(v1.mountpoint, Mountpoint::Path("/".into()));
        assert_eq!(v1.prop(crate::model::layout::PROP_LABEL), Some("1.0"));
        assert_eq!(v1.prop(crate::model::layout::PROP_MEMBER), None);
        assert_eq!(l.datasets[0].mountpoint, Mountpoint::None);
        assert_eq!(l.datasets[3].origin.as_deref(), Some("tank/ROOT/v1@s"));
        assert_eq!(
            l.datasets[3].prop(crate::model::layout::PROP_LABEL),
            Some("2.0 beta")
        );
        assert_eq!(l.datasets[2].used, 300);
    }

    #[test]
    fn a_newline_in_a_value_taints_instead_of_injecting() {
        // v2's label holds "x\ntank/ROOT/v1\tnoauto\t/..." trying to pose as v1.
        let evil = "tank/ROOT/v1\tnoauto\t/\t1\t-\t1\t-\tgood\t-\t-\t-\t-\t-\t-\t-\n\
tank/ROOT/v2\tnoauto\t/\t2\t-\t1\t-\tx\n\
tank/ROOT/v1\tnoauto\t/\t3\t-\t1\t-\tevil\t-\t-\t-\t-\t-\t-\t-\n";
        let l = parse_list(evil);
        assert!(l.datasets.is_empty(), "{:?}", l.datasets);
        assert_eq!(
            l.tainted,
            vec!["tank/ROOT/v2".to_string(), "tank/ROOT/v1".to_string()]
        );
    }
}
