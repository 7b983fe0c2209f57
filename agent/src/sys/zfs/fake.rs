//! An in-memory [`Zfs`] for tests: pools, filesystems, properties (with ZFS's inheritance of
//! `mountpoint` and user properties), snapshots, and imports that honour the hostid.

use super::{CanMount, Child, Dataset, ImportError, Importable, Listing, Mountpoint, Zfs};
use anyhow::{anyhow, bail};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
struct FakePool {
    /// Whether its disks are attached.
    present: bool,
    imported: bool,
    /// The hostid in the label of a pool that was not exported.
    last_hostid: Option<u32>,
    /// Active on another host (multihost).
    in_use_elsewhere: bool,
    /// What a scan shows other than `ONLINE` (an import then fails).
    scan_state: Option<String>,
    props: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default)]
struct FakeDs {
    /// Local properties only; inheritance is computed on listing.
    props: BTreeMap<String, String>,
    creation: u64,
}

#[derive(Debug, Default)]
struct Inner {
    pools: BTreeMap<String, FakePool>,
    datasets: BTreeMap<String, FakeDs>,
    snapshots: BTreeSet<String>,
    /// Snapshots in creation order (what promote and listings follow).
    snap_order: Vec<String>,
    clock: u64,
    /// Every mutating call, for assertions ("the rescue path changes nothing").
    log: Vec<String>,
    /// Every listing asked for (`-r <dataset>` for a subtree, `<dataset>` for one alone), for
    /// assertions on what a caller reads ("the boot path lists only the BEs it needs").
    listed: Vec<String>,
}

/// In-memory pools and datasets.
#[derive(Debug, Default)]
pub struct FakeZfs {
    inner: RefCell<Inner>,
    /// Where the fake reads the system's hostid (`<root>/sys/module/spl/parameters/spl_hostid`).
    root: Option<PathBuf>,
}

impl FakeZfs {
    /// An empty system.
    pub fn new() -> FakeZfs {
        FakeZfs::default()
    }

    /// What a listing asked for so far (`-r <dataset>` or `<dataset>`), in order; then forgets it.
    pub fn take_listed(&self) -> Vec<String> {
        std::mem::take(&mut self.inner.borrow_mut().listed)
    }

    /// `dataset` and the filesystems below it.
    fn subtree(&self, dataset: &str) -> anyhow::Result<Listing> {
        let i = self.inner.borrow();
        self.check_imported(&i, dataset)?;
        let prefix = format!("{dataset}/");
        let datasets = i
            .datasets
            .iter()
            .filter(|(n, _)| *n == dataset || n.starts_with(&prefix))
            .map(|(n, d)| {
                // canmount is not inherited in ZFS: only a local value counts.
                let canmount = match d.props.get("canmount").map(String::as_str) {
                    Some("off") => CanMount::Off,
                    Some("noauto") => CanMount::NoAuto,
                    _ => CanMount::On,
                };
                let mountpoint = match self.effective(&i, n, "mountpoint").as_deref() {
                    Some("none") => Mountpoint::None,
                    Some("legacy") => Mountpoint::Legacy,
                    Some(p) => Mountpoint::Path(p.to_owned()),
                    None => Mountpoint::None,
                };
                let user = crate::model::layout::LISTED_PROPS
                    .iter()
                    .filter_map(|p| self.effective(&i, n, p).map(|v| (p.to_string(), v)))
                    .collect();
                Dataset {
                    name: n.clone(),
                    canmount,
                    mountpoint,
                    creation: d.creation,
                    origin: d.props.get("origin").cloned(),
                    used: 0,
                    user,
                }
            })
            .collect();
        Ok(Listing {
            datasets,
            tainted: Vec::new(),
        })
    }

    /// Reads the hostid below `root`, as the agent writes it.
    pub fn with_root(mut self, root: PathBuf) -> FakeZfs {
        self.root = Some(root);
        self
    }

    /// Adds an exported pool whose disks are attached, with its root dataset.
    pub fn add_pool(&self, name: &str) {
        let mut i = self.inner.borrow_mut();
        i.pools.insert(
            name.into(),
            FakePool {
                present: true,
                ..Default::default()
            },
        );
        i.clock += 1;
        let creation = i.clock;
        i.datasets.insert(
            name.into(),
            FakeDs {
                props: BTreeMap::new(),
                creation,
            },
        );
    }

    /// Marks `pool` as last imported by `hostid` and not exported.
    pub fn set_last_hostid(&self, pool: &str, hostid: u32) {
        self.inner
            .borrow_mut()
            .pools
            .get_mut(pool)
            .expect("pool")
            .last_hostid = Some(hostid);
    }

    /// Detaches (`false`) or attaches `pool`'s disks; a pool whose disks are there but cannot
    /// be imported shows `state` in a scan (`UNAVAIL`) and fails to import.
    pub fn set_present(&self, pool: &str, present: bool, state: Option<&str>) {
        let mut i = self.inner.borrow_mut();
        let p = i.pools.get_mut(pool).expect("pool");
        p.present = present;
        p.scan_state = state.map(str::to_owned);
    }

    /// Marks `pool` as active on another host.
    pub fn set_in_use_elsewhere(&self, pool: &str) {
        self.inner
            .borrow_mut()
            .pools
            .get_mut(pool)
            .expect("pool")
            .in_use_elsewhere = true;
    }

    /// Adds a filesystem directly (test setup, not logged as a change).
    pub fn add_fs(&self, name: &str, props: &[(&str, &str)]) {
        insert_fs(&mut self.inner.borrow_mut(), name, props);
    }

    /// bootenv's layout in `pool`, as `prepare-pool` makes it (test setup): `<pool>/ROOT` and
    /// the state dataset `<pool>/BOOTENV`.
    pub fn add_layout(&self, pool: &str) {
        self.add_fs(
            &format!("{pool}/ROOT"),
            &[
                ("canmount", "off"),
                ("mountpoint", "none"),
                ("org.bootenv:layout", "1"),
            ],
        );
        self.add_fs(
            &format!("{pool}/BOOTENV"),
            &[("canmount", "noauto"), ("mountpoint", "legacy")],
        );
    }

    /// A boot environment with a config member (test setup): its root with `props` besides
    /// `canmount=noauto` and `mountpoint=/`.
    pub fn add_be(&self, pool: &str, be: &str, props: &[(&str, &str)]) {
        let mut all = vec![("canmount", "noauto"), ("mountpoint", "/")];
        all.extend_from_slice(props);
        self.add_fs(&format!("{pool}/ROOT/{be}"), &all);
        self.add_fs(
            &format!("{pool}/ROOT/{be}/config"),
            &[
                ("canmount", "noauto"),
                ("mountpoint", "/etc/config"),
                ("org.bootenv:member", "config"),
            ],
        );
    }

    /// Sets a pool property directly (test setup).
    pub fn put_pool_prop(&self, pool: &str, k: &str, v: &str) {
        self.inner
            .borrow_mut()
            .pools
            .get_mut(pool)
            .expect("pool")
            .props
            .insert(k.into(), v.into());
    }

    /// Every dataset of `pool` with its origin, local properties and snapshots, one line each
    /// (tests compare pool states with it).
    pub fn dump(&self, pool: &str) -> Vec<String> {
        let mut out = Vec::new();
        for d in self.list(pool).expect("an imported pool").datasets {
            let mut props = self.local_props(&d.name).expect("a dataset");
            props.sort();
            out.push(format!(
                "{} origin={:?} {:?} snaps={:?}",
                d.name,
                d.origin,
                props,
                self.snapshots(&d.name).expect("a dataset")
            ));
        }
        out
    }

    /// Whether `pool` is imported.
    pub fn is_imported(&self, pool: &str) -> bool {
        self.inner
            .borrow()
            .pools
            .get(pool)
            .is_some_and(|p| p.imported)
    }

    /// Whether a snapshot exists.
    pub fn has_snapshot(&self, full: &str) -> bool {
        self.inner.borrow().snapshots.contains(full)
    }

    /// A local or inherited property of a dataset.
    pub fn get(&self, ds: &str, prop: &str) -> Option<String> {
        self.effective(&self.inner.borrow(), ds, prop)
    }

    /// Every change made through the [`Zfs`] trait, in order.
    pub fn changes(&self) -> Vec<String> {
        self.inner.borrow().log.clone()
    }

    fn system_hostid(&self) -> u32 {
        let Some(root) = &self.root else { return 0 };
        let p = root.join("sys/module/spl/parameters/spl_hostid");
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| {
                let s = s.trim();
                match s.strip_prefix("0x") {
                    Some(h) => u32::from_str_radix(h, 16).ok(),
                    None => s.parse().ok(),
                }
            })
            .unwrap_or(0)
    }

    fn effective(&self, i: &Inner, ds: &str, prop: &str) -> Option<String> {
        let mut cur = ds.to_owned();
        let mut suffix = String::new();
        loop {
            if let Some(v) = i.datasets.get(&cur).and_then(|d| d.props.get(prop)) {
                if prop == "mountpoint" && !suffix.is_empty() && v.starts_with('/') {
                    let base = v.trim_end_matches('/');
                    return Some(format!("{base}{suffix}"));
                }
                return Some(v.clone());
            }
            match cur.rfind('/') {
                Some(at) => {
                    suffix = format!("{}{}", &cur[at..], suffix);
                    cur.truncate(at);
                }
                None => {
                    return match prop {
                        "mountpoint" => Some(format!("/{cur}{suffix}")),
                        _ => None,
                    };
                }
            }
        }
    }

    fn pool_of(name: &str) -> &str {
        name.split(['/', '@']).next().unwrap_or(name)
    }

    fn check_imported(&self, i: &Inner, ds: &str) -> anyhow::Result<()> {
        match i.pools.get(Self::pool_of(ds)) {
            Some(p) if p.imported => Ok(()),
            _ => bail!("cannot open '{ds}': pool is not imported"),
        }
    }
}

impl Zfs for FakeZfs {
    fn imported_pools(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .inner
            .borrow()
            .pools
            .iter()
            .filter(|(_, p)| p.imported)
            .map(|(n, _)| n.clone())
            .collect())
    }

    fn scan(&self) -> anyhow::Result<Vec<Importable>> {
        Ok(self
            .inner
            .borrow()
            .pools
            .iter()
            .filter(|(_, p)| p.present && !p.imported)
            .map(|(n, p)| Importable {
                name: n.clone(),
                state: p.scan_state.clone().unwrap_or_else(|| "ONLINE".into()),
            })
            .collect())
    }

    fn import(&self, pool: &str) -> anyhow::Result<Result<(), ImportError>> {
        let hostid = self.system_hostid();
        let mut i = self.inner.borrow_mut();
        let Some(p) = i.pools.get_mut(pool) else {
            return Ok(Err(ImportError::NotFound));
        };
        if !p.present {
            return Ok(Err(ImportError::NotFound));
        }
        if p.imported {
            return Ok(Err(ImportError::Other(format!(
                "cannot import '{pool}': a pool with that name already exists"
            ))));
        }
        if let Some(state) = &p.scan_state {
            return Ok(Err(ImportError::Other(format!(
                "cannot import '{pool}': one or more devices is currently unavailable ({state})"
            ))));
        }
        if p.in_use_elsewhere {
            return Ok(Err(ImportError::InUse(format!(
                "cannot import '{pool}': pool is imported on host 'other'"
            ))));
        }
        if let Some(h) = p.last_hostid {
            if h != 0 && h != hostid {
                return Ok(Err(ImportError::Foreign { hostid: h }));
            }
        }
        p.imported = true;
        p.last_hostid = Some(hostid);
        Ok(Ok(()))
    }

    fn import_data(&self, pool: &str, mount: bool) -> anyhow::Result<Result<(), ImportError>> {
        let r = self.import(pool)?;
        if r.is_ok() {
            self.inner.borrow_mut().log.push(format!(
                "zpool import {}{pool}",
                if mount { "" } else { "-N " }
            ));
        }
        Ok(r)
    }

    fn export(&self, pool: &str) -> anyhow::Result<()> {
        let mut i = self.inner.borrow_mut();
        let p = i
            .pools
            .get_mut(pool)
            .ok_or_else(|| anyhow!("cannot open '{pool}': no such pool"))?;
        p.imported = false;
        p.last_hostid = None;
        Ok(())
    }

    fn pool_prop(&self, pool: &str, prop: &str) -> anyhow::Result<Option<String>> {
        let i = self.inner.borrow();
        self.check_imported(&i, pool)?;
        Ok(i.pools[pool].props.get(prop).cloned())
    }

    fn set_pool_prop(&self, pool: &str, prop: &str, value: &str) -> anyhow::Result<()> {
        let mut i = self.inner.borrow_mut();
        self.check_imported(&i, pool)?;
        if prop == "bootfs" && !i.datasets.contains_key(value) {
            bail!("cannot set property for '{pool}': '{value}' is an invalid name");
        }
        i.pools
            .get_mut(pool)
            .expect("checked")
            .props
            .insert(prop.into(), value.into());
        i.log.push(format!("zpool set {prop}={value} {pool}"));
        Ok(())
    }

    fn list(&self, dataset: &str) -> anyhow::Result<Listing> {
        self.inner.borrow_mut().listed.push(format!("-r {dataset}"));
        self.subtree(dataset)
    }

    fn children(&self, dataset: &str, props: &[&str]) -> anyhow::Result<Vec<Child>> {
        let i = self.inner.borrow();
        self.check_imported(&i, dataset)?;
        let prefix = format!("{dataset}/");
        Ok(i.datasets
            .keys()
            .filter(|n| n.strip_prefix(&prefix).is_some_and(|r| !r.contains('/')))
            .map(|n| Child {
                name: n.clone(),
                props: props
                    .iter()
                    .filter_map(|p| self.effective(&i, n, p).map(|v| (p.to_string(), v)))
                    .collect(),
            })
            .collect())
    }

    fn list_exact(&self, datasets: &[&str]) -> anyhow::Result<Listing> {
        let mut all = Listing::default();
        for d in datasets {
            self.inner.borrow_mut().listed.push(d.to_string());
            let l = self.subtree(d)?;
            all.datasets
                .extend(l.datasets.into_iter().filter(|x| x.name == *d));
        }
        Ok(all)
    }

    fn create(&self, dataset: &str, props: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut i = self.inner.borrow_mut();
        self.check_imported(&i, dataset)?;
        if i.datasets.contains_key(dataset) {
            bail!("cannot create '{dataset}': dataset already exists");
        }
        let parent = dataset.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        if !i.datasets.contains_key(parent) {
            bail!("cannot create '{dataset}': parent does not exist");
        }
        insert_fs(&mut i, dataset, props);
        i.log.push(format!("zfs create {dataset}"));
        Ok(())
    }

    fn set(&self, dataset: &str, props: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut i = self.inner.borrow_mut();
        self.check_imported(&i, dataset)?;
        let d = i
            .datasets
            .get_mut(dataset)
            .ok_or_else(|| anyhow!("cannot open '{dataset}': dataset does not exist"))?;
        for (k, v) in props {
            d.props.insert(k.to_string(), v.to_string());
        }
        let kvs: Vec<String> = props.iter().map(|(k, v)| format!("{k}={v}")).collect();
        i.log.push(format!("zfs set {} {dataset}", kvs.join(" ")));
        Ok(())
    }

    fn snapshot(&self, dataset: &str, snap: &str, recursive: bool) -> anyhow::Result<()> {
        let mut i = self.inner.borrow_mut();
        self.check_imported(&i, dataset)?;
        if !i.datasets.contains_key(dataset) {
            bail!("cannot open '{dataset}': dataset does not exist");
        }
        let prefix = format!("{dataset}/");
        let targets: Vec<String> = i
            .datasets
            .keys()
            .filter(|n| *n == dataset || (recursive && n.starts_with(&prefix)))
            .map(|n| format!("{n}@{snap}"))
            .collect();
        if let Some(t) = targets.iter().find(|t| i.snapshots.contains(*t)) {
            bail!("cannot create snapshot '{t}': dataset already exists");
        }
        i.snap_order.extend(targets.iter().cloned());
        i.snapshots.extend(targets);
        i.log.push(format!(
            "zfs snapshot {}{dataset}@{snap}",
            if recursive { "-r " } else { "" }
        ));
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let mut i = self.inner.borrow_mut();
        self.check_imported(&i, from)?;
        if !i.datasets.contains_key(from) {
            bail!("cannot open '{from}': dataset does not exist");
        }
        if i.datasets.contains_key(to) {
            bail!("cannot rename to '{to}': dataset already exists");
        }
        let prefix = format!("{from}/");
        let moved: Vec<String> = i
            .datasets
            .keys()
            .filter(|n| *n == from || n.starts_with(&prefix))
            .cloned()
            .collect();
        for old in moved {
            let new = format!("{to}{}", &old[from.len()..]);
            let ds = i.datasets.remove(&old).expect("listed");
            i.datasets.insert(new, ds);
        }
        let snaps: Vec<String> = i
            .snapshots
            .iter()
            .filter(|s| s.starts_with(&format!("{from}@")) || s.starts_with(&prefix))
            .cloned()
            .collect();
        for old in snaps {
            let new = format!("{to}{}", &old[from.len()..]);
            i.snapshots.remove(&old);
            i.snapshots.insert(new.clone());
            if let Some(pos) = i.snap_order.iter().position(|x| *x == old) {
                i.snap_order[pos] = new.clone();
            }
            for d in i.datasets.values_mut() {
                if d.props.get("origin") == Some(&old) {
                    d.props.insert("origin".into(), new.clone());
                }
            }
        }
        i.log.push(format!("zfs rename {from} {to}"));
        Ok(())
    }

    fn destroy(&self, dataset: &str, recursive: bool) -> anyhow::Result<()> {
        let mut i = self.inner.borrow_mut();
        self.check_imported(&i, dataset)?;
        if let Some((ds, snap)) = dataset.split_once('@') {
            // A snapshot; with `recursive`, the same snapshot of every descendant.
            let prefix = format!("{ds}/");
            let targets: Vec<String> = i
                .snapshots
                .iter()
                .filter(|s| {
                    let (d, n) = s.split_once('@').expect("snapshot");
                    n == snap && (d == ds || (recursive && d.starts_with(&prefix)))
                })
                .cloned()
                .collect();
            if targets.is_empty() {
                bail!("could not find any snapshots to destroy; check snapshot names");
            }
            if let Some((n, _)) = i
                .datasets
                .iter()
                .find(|(_, d)| d.props.get("origin").is_some_and(|o| targets.contains(o)))
            {
                bail!("cannot destroy '{dataset}': snapshot has dependent clones ({n})");
            }
            for t in &targets {
                i.snapshots.remove(t);
            }
            i.snap_order.retain(|s| !targets.contains(s));
            i.log.push(format!(
                "zfs destroy {}{dataset}",
                if recursive { "-r " } else { "" }
            ));
            return Ok(());
        }
        if !i.datasets.contains_key(dataset) {
            bail!("cannot open '{dataset}': dataset does not exist");
        }
        let prefix = format!("{dataset}/");
        let snap_prefix = format!("{dataset}@");
        let children = i.datasets.keys().any(|n| n.starts_with(&prefix))
            || i.snapshots.iter().any(|s| s.starts_with(&snap_prefix));
        if children && !recursive {
            bail!("cannot destroy '{dataset}': filesystem has children");
        }
        let dependent = i.datasets.iter().find(|(n, d)| {
            !(*n == dataset || n.starts_with(&prefix))
                && d.props
                    .get("origin")
                    .is_some_and(|o| o.starts_with(&snap_prefix) || o.starts_with(&prefix))
        });
        if let Some((n, _)) = dependent {
            bail!("cannot destroy '{dataset}': filesystem has dependent clones ({n}); use 'zfs promote' first");
        }
        i.datasets
            .retain(|n, _| n != dataset && !n.starts_with(&prefix));
        i.snapshots
            .retain(|s| !s.starts_with(&snap_prefix) && !s.starts_with(&prefix));
        i.snap_order
            .retain(|s| !s.starts_with(&snap_prefix) && !s.starts_with(&prefix));
        i.log.push(format!(
            "zfs destroy {}{dataset}",
            if recursive { "-r " } else { "" }
        ));
        Ok(())
    }

    fn clone_snapshot(
        &self,
        snapshot: &str,
        target: &str,
        props: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        {
            let i = self.inner.borrow();
            self.check_imported(&i, target)?;
            if !i.snapshots.contains(snapshot) {
                bail!("cannot open '{snapshot}': dataset does not exist");
            }
        }
        let mut all: Vec<(&str, &str)> = props.to_vec();
        all.push(("origin", snapshot));
        self.create(target, &all)?;
        let mut i = self.inner.borrow_mut();
        i.log.pop();
        i.log.push(format!("zfs clone {snapshot} {target}"));
        Ok(())
    }

    fn promote(&self, dataset: &str) -> anyhow::Result<()> {
        let mut i = self.inner.borrow_mut();
        self.check_imported(&i, dataset)?;
        let origin = i
            .datasets
            .get(dataset)
            .and_then(|d| d.props.get("origin").cloned())
            .ok_or_else(|| anyhow!("cannot promote '{dataset}': not a cloned filesystem"))?;
        let (old, snap) = origin.split_once('@').expect("origin is a snapshot");
        let old = old.to_owned();
        // The origin's snapshots up to the origin move to the promoted dataset; the old dataset
        // becomes a clone of the moved origin snapshot.
        let order: Vec<String> = i
            .snap_order
            .iter()
            .filter(|s| s.starts_with(&format!("{old}@")))
            .cloned()
            .collect();
        let upto = order.iter().position(|s| *s == origin).map_or(0, |p| p + 1);
        for s in &order[..upto] {
            let name = s.split_once('@').expect("snapshot").1;
            let moved = format!("{dataset}@{name}");
            i.snapshots.remove(s);
            i.snapshots.insert(moved.clone());
            if let Some(pos) = i.snap_order.iter().position(|x| x == s) {
                i.snap_order[pos] = moved;
            }
        }
        i.datasets
            .get_mut(dataset)
            .expect("exists")
            .props
            .remove("origin");
        if let Some(d) = i.datasets.get_mut(&old) {
            d.props.insert("origin".into(), format!("{dataset}@{snap}"));
        }
        // Clones of moved snapshots now name the new owner.
        let moved: Vec<String> = order[..upto].to_vec();
        for d in i.datasets.values_mut() {
            if let Some(o) = d.props.get("origin").cloned() {
                if moved.contains(&o) {
                    let name = o.split_once('@').expect("snapshot").1;
                    d.props.insert("origin".into(), format!("{dataset}@{name}"));
                }
            }
        }
        i.log.push(format!("zfs promote {dataset}"));
        Ok(())
    }

    fn snapshots(&self, dataset: &str) -> anyhow::Result<Vec<String>> {
        let i = self.inner.borrow();
        self.check_imported(&i, dataset)?;
        Ok(i.snap_order
            .iter()
            .filter(|s| s.starts_with(&format!("{dataset}@")) && i.snapshots.contains(*s))
            .cloned()
            .collect())
    }

    fn clones(&self, root: &str) -> anyhow::Result<Vec<(String, String)>> {
        let i = self.inner.borrow();
        self.check_imported(&i, root)?;
        let under = |s: &str| {
            let ds = s.split('@').next().unwrap_or("");
            ds == root || ds.starts_with(&format!("{root}/"))
        };
        Ok(i.datasets
            .iter()
            .filter_map(|(n, d)| Some((n.clone(), d.props.get("origin")?.clone())))
            .filter(|(_, o)| under(o) && i.snapshots.contains(o))
            .collect())
    }

    fn local_prop(&self, root: &str, prop: &str) -> anyhow::Result<Vec<(String, String)>> {
        let i = self.inner.borrow();
        self.check_imported(&i, root)?;
        let prefix = format!("{root}/");
        Ok(i.datasets
            .iter()
            .filter(|(n, _)| *n == root || n.starts_with(&prefix))
            .filter_map(|(n, d)| d.props.get(prop).map(|v| (n.clone(), v.clone())))
            .collect())
    }

    fn local_props(&self, dataset: &str) -> anyhow::Result<Vec<(String, String)>> {
        let i = self.inner.borrow();
        self.check_imported(&i, dataset)?;
        let d = i
            .datasets
            .get(dataset)
            .ok_or_else(|| anyhow!("cannot open '{dataset}': dataset does not exist"))?;
        Ok(d.props
            .iter()
            .filter(|(k, _)| *k != "origin")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn vdev_devices(&self, _pool: &str) -> anyhow::Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// The fake's stream: a BEGIN record as ZFS writes it (magic, then the snapshot's name at
    /// byte 56, so that a reader of the real format finds them), then the datasets below the
    /// snapshot's dataset as JSON: name relative to it, local properties, snapshots up to it.
    fn send(&self, snapshot: &str, sink: &mut dyn std::io::Write) -> anyhow::Result<u64> {
        let i = self.inner.borrow();
        let (ds, snap) = snapshot
            .split_once('@')
            .ok_or_else(|| anyhow!("{snapshot} is not a snapshot"))?;
        self.check_imported(&i, ds)?;
        if !i.snapshots.contains(snapshot) {
            bail!("cannot open '{snapshot}': dataset does not exist");
        }
        let prefix = format!("{ds}/");
        let mut body = Vec::new();
        for (n, d) in i
            .datasets
            .iter()
            .filter(|(n, _)| *n == ds || n.starts_with(&prefix))
        {
            let snaps: Vec<&str> = i
                .snap_order
                .iter()
                .filter_map(|s| s.strip_prefix(&format!("{n}@")))
                .collect();
            let upto = snaps.iter().position(|s| *s == snap).map_or(0, |p| p + 1);
            let props: BTreeMap<&String, &String> =
                d.props.iter().filter(|(k, _)| *k != "origin").collect();
            body.push(serde_json::json!({
                "rel": &n[ds.len()..],
                "props": props,
                "snaps": &snaps[..upto],
            }));
        }
        let mut head = vec![0u8; 8 + 48 + 256];
        head[8..16].copy_from_slice(&0x2_f5ba_cbacu64.to_le_bytes());
        let name = snapshot.as_bytes();
        head[56..56 + name.len().min(255)].copy_from_slice(&name[..name.len().min(255)]);
        head.extend(serde_json::to_vec(&body)?);
        sink.write_all(&head)?;
        Ok(head.len() as u64)
    }

    fn receive(&self, dataset: &str, src: &mut dyn std::io::Read) -> anyhow::Result<u64> {
        let mut all = Vec::new();
        src.read_to_end(&mut all)?;
        let body: Vec<serde_json::Value> = all
            .get(8 + 48 + 256..)
            .and_then(|b| serde_json::from_slice(b).ok())
            .ok_or_else(|| anyhow!("cannot receive: invalid stream"))?;
        let mut i = self.inner.borrow_mut();
        self.check_imported(&i, dataset)?;
        if i.datasets.contains_key(dataset) {
            bail!("cannot receive new filesystem stream: destination '{dataset}' exists");
        }
        for d in &body {
            let name = format!("{dataset}{}", d["rel"].as_str().unwrap_or_default());
            i.clock += 1;
            let creation = i.clock;
            let props = d["props"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            for s in d["snaps"].as_array().into_iter().flatten() {
                let full = format!("{name}@{}", s.as_str().unwrap_or_default());
                i.snap_order.push(full.clone());
                i.snapshots.insert(full);
            }
            i.datasets.insert(name, FakeDs { props, creation });
        }
        i.log.push(format!("zfs receive -u {dataset}"));
        Ok(all.len() as u64)
    }

    fn create_data_pool(&self, pool: &str, devices: &[String]) -> anyhow::Result<()> {
        self.create_pool(pool, &devices.join(" "))
    }

    fn create_pool(&self, pool: &str, device: &str) -> anyhow::Result<()> {
        if self.inner.borrow().pools.contains_key(pool) {
            bail!("cannot create '{pool}': pool already exists");
        }
        self.add_pool(pool);
        let mut i = self.inner.borrow_mut();
        let p = i.pools.get_mut(pool).expect("added");
        p.imported = true;
        let root = i.datasets.get_mut(pool).expect("added");
        root.props.insert("mountpoint".into(), "none".into());
        i.log.push(format!("zpool create {pool} {device}"));
        Ok(())
    }
}

/// A new filesystem, created now.
fn insert_fs(i: &mut Inner, name: &str, props: &[(&str, &str)]) {
    i.clock += 1;
    let creation = i.clock;
    let props = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    i.datasets.insert(name.into(), FakeDs { props, creation });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inheritance_follows_zfs() {
        let z = FakeZfs::new();
        z.add_pool("tank");
        z.add_fs(
            "tank/ROOT",
            &[
                ("mountpoint", "none"),
                ("canmount", "off"),
                ("org.bootenv:layout", "1"),
            ],
        );
        z.add_fs(
            "tank/ROOT/v1",
            &[("mountpoint", "/"), ("canmount", "noauto")],
        );
        z.add_fs("tank/ROOT/v1/config", &[("canmount", "noauto")]);
        z.add_fs("tank/ROOT/v1/config/deep", &[]);
        assert_eq!(
            z.get("tank/ROOT/v1/config", "mountpoint").unwrap(),
            "/config"
        );
        assert_eq!(
            z.get("tank/ROOT/v1/config/deep", "mountpoint").unwrap(),
            "/config/deep"
        );
        assert_eq!(z.get("tank/ROOT/v1", "org.bootenv:layout").unwrap(), "1");
        assert_eq!(z.get("tank", "mountpoint").unwrap(), "/tank");
    }

    #[test]
    fn clone_and_promote_follow_zfs() {
        let z = FakeZfs::new();
        z.add_pool("tank");
        z.import("tank").unwrap().unwrap();
        z.add_fs("tank/a", &[]);
        z.snapshot("tank/a", "one", false).unwrap();
        z.snapshot("tank/a", "two", false).unwrap();
        z.clone_snapshot("tank/a@one", "tank/b", &[("canmount", "off")])
            .unwrap();
        assert!(z
            .destroy("tank/a", true)
            .unwrap_err()
            .to_string()
            .contains("dependent clones"));
        z.rename("tank/a", "tank/a.old").unwrap();
        assert_eq!(
            z.list("tank/b").unwrap().datasets[0].origin.as_deref(),
            Some("tank/a.old@one")
        );
        z.promote("tank/b").unwrap();
        assert_eq!(
            z.snapshots("tank/b").unwrap(),
            vec!["tank/b@one".to_string()]
        );
        assert_eq!(
            z.snapshots("tank/a.old").unwrap(),
            vec!["tank/a.old@two".to_string()]
        );
        assert_eq!(
            z.list("tank/a.old").unwrap().datasets[0].origin.as_deref(),
            Some("tank/b@one")
        );
        assert_eq!(z.list("tank/b").unwrap().datasets[0].origin, None);
        z.destroy("tank/a.old", true).unwrap();
    }

    #[test]
    fn import_honours_hostid_and_multihost() {
        let dir = tempfile::tempdir().unwrap();
        let z = FakeZfs::new().with_root(dir.path().into());
        z.add_pool("tank");
        z.set_last_hostid("tank", 0xabc);
        assert_eq!(
            z.import("tank").unwrap(),
            Err(ImportError::Foreign { hostid: 0xabc })
        );
        let p = dir.path().join("sys/module/spl/parameters");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("spl_hostid"), "0xabc\n").unwrap();
        assert_eq!(z.import("tank").unwrap(), Ok(()));
        z.add_pool("busy");
        z.set_in_use_elsewhere("busy");
        assert!(matches!(
            z.import("busy").unwrap(),
            Err(ImportError::InUse(_))
        ));
        assert_eq!(z.import("nosuch").unwrap(), Err(ImportError::NotFound));
    }
}
