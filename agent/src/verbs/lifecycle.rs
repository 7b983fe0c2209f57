//! The life of a boot environment after it exists: made from another (`create --from`,
//! `upgrade`), walked back and forth (`rollback`, `rollforward`), read without booting
//! (`mount`, `unmount`, `diff`), renamed, destroyed safely, exported and imported.
//!
//! Every verb checks what it will do before it changes anything, changes the pool with single
//! ZFS commands, and commits a multi-step change with one final rename; what it cannot finish it
//! removes again, if bootenv made it in the same run.

use crate::model::inventory::{Be, Inventory};
use crate::model::layout::{self, PROP_FACTORY, PROP_LABEL, PROP_MEMBER, PROP_SOURCE};
use crate::model::names::{BeName, BeRef, PoolName};
use crate::model::state::{self, EventKind};
use crate::sys::run::Cmd;
use crate::sys::statefile;
use crate::verbs::context::Ctx;
use crate::verbs::ops::{Activation, PARTIAL_SUFFIX};
use crate::verbs::outcome::{
    Created, Destroyed, Diffed, Exported, Imported, Mounted, Renamed, Unmounted, Upgraded, Walked,
};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// Options of `bootenv create --from` and `bootenv upgrade`.
#[derive(Clone, Debug, Default)]
pub struct CloneOpts {
    /// The source: a BE or `be@snap`; default the running BE, else the default one.
    pub from: Option<String>,
    /// The label; default: the source's label.
    pub label: Option<String>,
    /// Start the config from the source's factory state instead of carrying its current one over.
    pub fresh_config: bool,
}

/// A BE's datasets to clone, parents first, with their names below the BE root.
fn be_datasets(ctx: &Ctx, be: &Be) -> anyhow::Result<Vec<crate::sys::zfs::Dataset>> {
    let mut v: Vec<_> = ctx
        .zfs
        .list(&be.dataset)?
        .datasets
        .into_iter()
        .filter(|d| {
            let last = d.name.rsplit('/').next().unwrap_or("");
            !last.contains(".reset-") && !last.contains(".new-")
        })
        .filter(|d| d.name == be.dataset || d.prop(PROP_MEMBER).is_some())
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

impl Ctx<'_> {
    /// The BE that `from` names (`be` or `be@snap`), and the snapshot to clone, if given.
    fn source<'i>(
        &self,
        inv: &'i Inventory,
        from: Option<&str>,
    ) -> anyhow::Result<(&'i Be, Option<String>)> {
        let r = match from {
            Some(f) => BeRef::parse(f)?,
            None => {
                let running = self.running_be().and_then(|b| BeName::new(&b).ok());
                match running.or_else(|| inv.bootfs_be()) {
                    Some(be) => BeRef { be, snap: None },
                    None => crate::refuse!(Usage, "name the boot environment to start from: --from <name> or --from <name>@<snapshot>"),
                }
            }
        };
        let be = self.resolve(inv, &r)?;
        Ok((be, r.snap))
    }

    /// The BE `r` names, and, when it names a snapshot, that the snapshot exists.
    fn resolve<'i>(&self, inv: &'i Inventory, r: &BeRef) -> anyhow::Result<&'i Be> {
        let be = inv.require(&r.be)?;
        if r.snap.is_some() {
            let full = r.dataset(&be.dataset);
            if !self.zfs.snapshots(&be.dataset)?.contains(&full) {
                crate::refuse!(
                    NotFound,
                    "{full} does not exist; `zfs list -t snapshot -r {}` shows the snapshots",
                    be.dataset
                );
            }
        }
        Ok(be)
    }

    /// Makes `<name>:partial` from a source BE: one atomic recursive snapshot of the source (or
    /// the snapshot named), a clone of its root and of each member. The config is cloned from
    /// the source's factory snapshot when it has one (so the new BE's factory state is a factory
    /// state), and the source's current config is copied over it after `prepare` ran, unless
    /// `fresh_config`. Returns the partial root and the snapshot this run made (to remove on
    /// failure), if any.
    fn clone_partial(
        &self,
        pool: &PoolName,
        inv: &Inventory,
        name: &BeName,
        opts: &CloneOpts,
        now: u64,
        prepare: &dyn Fn(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<(String, String)> {
        inv.check_free(name, "; pick another name")?;
        let (src, snap) = self.source(inv, opts.from.as_deref())?;
        let final_ds = layout::be_dataset(pool, name);
        let partial = format!("{final_ds}{PARTIAL_SUFFIX}");
        if !self.zfs.list(&partial)?.datasets.is_empty() {
            crate::refuse!(Exists, "{partial} is left from an interrupted run; remove it with `zfs destroy -r {partial}` and try again");
        }
        let (snap, made_snap) = match snap {
            Some(s) => (s, String::new()),
            None => {
                let s = format!("bootenv-{}", crate::boot::reset::id_from_time(now));
                self.zfs.snapshot(&src.dataset, &s, true)?;
                (s.clone(), format!("{}@{s}", src.dataset))
            }
        };
        let result = (|| {
            let datasets = be_datasets(self, src)?;
            let factory = src.factory.clone();
            let label = opts
                .label
                .clone()
                .or_else(|| src.label.clone())
                .unwrap_or_else(|| name.to_string());
            let mut config_pair: Option<(String, String)> = None;
            for d in &datasets {
                let rel = &d.name[src.dataset.len()..];
                let target = format!("{partial}{rel}");
                let mut props: Vec<(String, String)> = self
                    .zfs
                    .local_props(&d.name)?
                    .into_iter()
                    .filter(|(k, _)| {
                        crate::model::layout::carried_to_clone(k)
                            && ![PROP_LABEL, PROP_SOURCE, PROP_FACTORY, "mountpoint"]
                                .contains(&k.as_str())
                    })
                    .collect();
                props.push(("canmount".into(), "noauto".into()));
                let mp = match &d.mountpoint {
                    crate::sys::zfs::Mountpoint::Path(p) => p.clone(),
                    crate::sys::zfs::Mountpoint::Legacy => "legacy".into(),
                    crate::sys::zfs::Mountpoint::None => "none".into(),
                };
                props.push(("mountpoint".into(), mp));
                if rel.is_empty() {
                    props.push((PROP_LABEL.into(), label.clone()));
                    props.push((PROP_SOURCE.into(), format!("{}@{snap}", src.dataset)));
                }
                let is_config = d.prop(PROP_MEMBER) == Some(layout::MEMBER_CONFIG);
                let factory_snap = factory.as_ref().map(|f| format!("{}@{f}", d.name));
                let from_factory = is_config
                    && factory_snap.as_ref().is_some_and(|f| {
                        self.zfs
                            .snapshots(&d.name)
                            .map(|s| s.contains(f))
                            .unwrap_or(false)
                    });
                let origin = if from_factory {
                    factory_snap.clone().expect("checked")
                } else {
                    format!("{}@{snap}", d.name)
                };
                let p: Vec<(&str, &str)> = props
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                self.zfs.clone_snapshot(&origin, &target, &p)?;
                if from_factory && !opts.fresh_config {
                    config_pair = Some((format!("{}@{snap}", d.name), target.clone()));
                }
            }
            // The new root mounted with its members, for `prepare` (an upgrade's command).
            self.with_mounted_tree(&partial, false, prepare)?;
            self.zfs
                .snapshot(&partial, layout::FACTORY_SNAPSHOT, true)?;
            self.zfs
                .set(&partial, &[(PROP_FACTORY, layout::FACTORY_SNAPSHOT)])?;
            if let Some((current, target)) = config_pair {
                self.carry_config(&current, &target)?;
            }
            Ok::<_, anyhow::Error>(())
        })();
        if let Err(e) = result {
            self.remove_partial(&partial, &made_snap);
            return Err(e);
        }
        Ok((partial, made_snap))
    }

    /// Removes what a failed run made: the partial BE and the snapshot it took.
    fn remove_partial(&self, partial: &str, made_snap: &str) {
        if !self
            .zfs
            .list(partial)
            .map(|l| l.datasets.is_empty())
            .unwrap_or(true)
        {
            log::warn!("removing the unfinished boot environment {partial}");
            if let Err(e) = self.zfs.destroy(partial, true) {
                log::warn!("{e:#}");
            }
        }
        if !made_snap.is_empty() {
            if let Err(e) = self.zfs.destroy(made_snap, true) {
                log::warn!("{e:#}");
            }
        }
    }

    /// Copies the files of the config snapshot `current` over the config dataset `target`: the
    /// operator's settings win, files only the new factory state has stay.
    fn carry_config(&self, current: &str, target: &str) -> anyhow::Result<()> {
        let base = self.root.join(crate::model::paths::MNT);
        let from = base.join(format!("carry-from-{}", std::process::id()));
        let to = base.join(format!("carry-to-{}", std::process::id()));
        std::fs::create_dir_all(&from)?;
        std::fs::create_dir_all(&to)?;
        self.mounter.mount_zfs(current, &from, true)?;
        let r = self.mounter.mount_zfs(target, &to, false).and_then(|()| {
            let copied = Cmd::new("cp")
                .arg("-a")
                .arg(format!("{}/.", from.display()))
                .arg(to.display().to_string())
                .run();
            let u = self.mounter.unmount(&to);
            copied.map(|_| ()).map_err(anyhow::Error::from).and(u)
        });
        let u = self.mounter.unmount(&from);
        let _ = std::fs::remove_dir(&from);
        let _ = std::fs::remove_dir(&to);
        r.context("carrying the current configuration over")?;
        u
    }

    /// Mounts a BE tree (root and members) at a directory of its own, runs `f` on it, and
    /// unmounts it again, whatever `f` returned.
    pub fn with_mounted_tree(
        &self,
        root_ds: &str,
        readonly: bool,
        f: &dyn Fn(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let dir = self
            .root
            .join(crate::model::paths::MNT)
            .join(root_ds.replace(['/', ':', '@'], "_"));
        let mounted = self.mount_tree(root_ds, &dir, readonly)?;
        let r = f(&dir);
        let u = self.unmount_all(&mounted);
        let _ = std::fs::remove_dir(&dir);
        r.and(u)
    }

    /// Mounts a BE's root (or a snapshot of it) at `dir` and its members below; returns what it
    /// mounted, in order.
    fn mount_tree(
        &self,
        root_ds: &str,
        dir: &Path,
        readonly: bool,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let (ds, snap) = match root_ds.split_once('@') {
            Some((d, s)) => (d.to_owned(), Some(s.to_owned())),
            None => (root_ds.to_owned(), None),
        };
        std::fs::create_dir_all(dir)?;
        self.mounter.mount_zfs(root_ds, dir, readonly)?;
        let mut mounted = vec![dir.to_path_buf()];
        let listing = self.zfs.list(&ds)?;
        let mut members: Vec<_> = listing
            .datasets
            .into_iter()
            .filter(|d| {
                d.name != ds
                    && d.prop(PROP_MEMBER).is_some()
                    && d.canmount != crate::sys::zfs::CanMount::Off
            })
            .filter(|d| !d.name.contains(".reset-") && !d.name.contains(".new-"))
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        for m in members {
            let crate::sys::zfs::Mountpoint::Path(mp) = &m.mountpoint else {
                continue;
            };
            let target = dir.join(mp.trim_start_matches('/'));
            let source = match &snap {
                Some(s) => format!("{}@{s}", m.name),
                None => m.name.clone(),
            };
            if snap.is_some() && !self.zfs.snapshots(&m.name)?.contains(&source) {
                continue;
            }
            if !target.is_dir() {
                if readonly {
                    continue;
                }
                std::fs::create_dir_all(&target)?;
            }
            match self.mounter.mount_zfs(&source, &target, readonly) {
                Ok(()) => mounted.push(target),
                Err(e) => {
                    let _ = self.unmount_all(&mounted);
                    return Err(e);
                }
            }
        }
        Ok(mounted)
    }

    fn unmount_all(&self, mounted: &[PathBuf]) -> anyhow::Result<()> {
        let mut first_err = None;
        for m in mounted.iter().rev() {
            if let Err(e) = self.mounter.unmount(m) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Runs `f` with /proc, /sys and /dev bound into the tree at `root` (a chroot to be);
    /// afterwards unmounts them and whatever `f` left mounted below `root`.
    fn with_api_mounts(
        &self,
        root: &Path,
        f: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        // The mount table names targets from the system's root.
        let rel = Path::new("/").join(root.strip_prefix(&self.root).unwrap_or(root));
        let below = || {
            mounts_below(&self.mounter.table(&self.root), &rel)
                .into_iter()
                .map(|m| self.root.join(m.strip_prefix("/").unwrap_or(&m)))
                .collect::<Vec<_>>()
        };
        let before = below();
        let mut done = Vec::new();
        let mut result = Ok(());
        for d in ["proc", "sys", "dev"] {
            let target = root.join(d);
            if let Err(e) = std::fs::create_dir_all(&target)
                .map_err(anyhow::Error::from)
                .and_then(|()| self.mounter.bind(&self.root.join(d), &target))
            {
                result = Err(e);
                break;
            }
            done.push(target);
        }
        if result.is_ok() {
            result = f();
        }
        // Whatever the command left mounted below the root (the ESP and the state dataset that
        // a kernel hook's `bootenv sync-boot` mounts, say) goes too, deepest first: else the
        // new BE could not be unmounted. What was mounted before (the BE's members) stays.
        let mut left: Vec<PathBuf> = below()
            .into_iter()
            .filter(|m| !before.contains(m))
            .collect();
        left.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for t in left.iter().chain(done.iter().rev()) {
            if let Err(e) = self.mounter.detach(t) {
                log::warn!("{e:#}");
            }
        }
        result
    }

    /// `bootenv create <name> --from <be|be@snap>`.
    pub fn create_from(
        &self,
        name: &BeName,
        opts: &CloneOpts,
        now: u64,
    ) -> anyhow::Result<Created> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let (partial, _) = self.clone_partial(&pool, &inv, name, opts, now, &|_| Ok(()))?;
        let final_ds = layout::be_dataset(&pool, name);
        self.zfs.rename(&partial, &final_ds)?;
        let (label, source) = self.label_and_source(&final_ds);
        let mut done = Created {
            be: name.to_string(),
            dataset: final_ds,
            label,
            source,
            factory_snapshot: None,
            boot: None,
            warnings: Vec::new(),
            changed: true,
        };
        match self.sync_boot(std::slice::from_ref(name), now) {
            Ok(s) => done.boot = Some(s),
            Err(e) if crate::bootloader::esp::is_no_esp(&e) => {}
            Err(e) => done.warnings.push(format!("{e:#}")),
        }
        Ok(done)
    }

    /// `org.bootenv:label` and `org.bootenv:source` of `ds` (`?` when the source is unknown).
    fn label_and_source(&self, ds: &str) -> (Option<String>, String) {
        let d = self
            .zfs
            .list(ds)
            .ok()
            .and_then(|l| l.datasets.into_iter().find(|d| d.name == ds));
        let prop = |p: &str| d.as_ref().and_then(|d| d.prop(p).map(str::to_owned));
        (
            prop(PROP_LABEL),
            prop(PROP_SOURCE).unwrap_or_else(|| "?".into()),
        )
    }

    /// `bootenv upgrade <name> -- <command...>`: a new BE from the running one, the command run
    /// chrooted in it, its kernel copied to the ESP, then a trial of it. A failing command
    /// removes the new BE; the running BE is never changed.
    pub fn upgrade(
        &self,
        name: &BeName,
        command: &[String],
        opts: &CloneOpts,
        tries: Option<u32>,
        now: u64,
    ) -> anyhow::Result<Upgraded> {
        if command.is_empty() {
            crate::refuse!(
                Usage,
                "say what to run in the new boot environment: bootenv upgrade {name} -- <command...>"
            );
        }
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let run = |root: &Path| -> anyhow::Result<()> {
            log::warn!(
                "running `{}` in the new boot environment {name}",
                command.join(" ")
            );
            self.with_api_mounts(root, || {
                let chroot = Cmd::new("chroot")
                    .arg(root.display().to_string())
                    .args([
                        "/bin/sh".to_string(),
                        "-c".into(),
                        format!(
                            "cd {} 2>/dev/null || cd /; exec \"$@\"",
                            shell_quote(&cwd.to_string_lossy())
                        ),
                        "bootenv-upgrade".into(),
                    ])
                    .args(command.iter().cloned());
                if let Err(e) = self.runner.attached(&chroot) {
                    crate::refuse!(
                        CommandFailed,
                        "`{}` failed in the new boot environment ({})",
                        command.join(" "),
                        e.what
                    );
                }
                Ok(())
            })
        };
        let mut opts = opts.clone();
        if opts.from.is_none() {
            opts.from = self.running_be();
        }
        let (partial, _) = self.clone_partial(&pool, &inv, name, &opts, now, &run).map_err(|e| {
            e.context(format!("the upgrade to {name} did not happen; the running boot environment is unchanged and no part of {name} was kept"))
        })?;
        let final_ds = layout::be_dataset(&pool, name);
        self.zfs.rename(&partial, &final_ds)?;
        let boot = self.sync_boot(std::slice::from_ref(name), now)?;
        let trial = self.activate(name, Activation::Trial(tries), now)?;
        Ok(Upgraded {
            be: name.to_string(),
            dataset: final_ds,
            command: command.to_vec(),
            boot,
            trial,
            changed: true,
        })
    }

    /// `bootenv rollback [name]` and `bootenv rollforward`: make the previous (or next) BE in
    /// the history of defaults the default again, or the BE named. Repeated rollbacks walk back.
    pub fn walk(&self, to: Option<&BeName>, forward: bool, now: u64) -> anyhow::Result<Walked> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let (_, st) = self.load_state(&pool)?;
        let current = inv.bootfs_be().map(|b| b.to_string());
        let target = match to {
            Some(n) => n.clone(),
            None => {
                let h = &st.history;
                let at = current
                    .as_ref()
                    .and_then(|c| h.iter().rposition(|x| x == c));
                let exists = |n: &String| {
                    BeName::new(n)
                        .ok()
                        .and_then(|b| inv.get(&b).map(|be| be.unbootable.is_none()))
                        .unwrap_or(false)
                };
                let pick = match (at, forward) {
                    (Some(i), false) => h[..i].iter().rev().find(|n| exists(n)),
                    (Some(i), true) => h[i + 1..].iter().find(|n| exists(n)),
                    (None, false) => h
                        .iter()
                        .rev()
                        .find(|n| Some(*n) != current.as_ref() && exists(n)),
                    (None, true) => None,
                };
                match pick {
                    Some(n) => BeName::new(n)?,
                    None if forward => crate::refuse!(Refused, "there is nothing to roll forward to: {} is the newest default", current.unwrap_or_default()),
                    None => crate::refuse!(Refused, "there is nothing to roll back to: no earlier default is left (history: {})", h.join(" -> ")),
                }
            }
        };
        let activation = self.activate(&target, Activation::Walk, now)?;
        Ok(Walked {
            from: current,
            to: target.to_string(),
            changed: activation.changed,
            activation,
            forward,
        })
    }

    /// `bootenv mount <name|name@snap> [dir]`: a BE's files without booting it, read-only unless
    /// `rw` (a BE, never a snapshot). Returns where.
    pub fn mount_be(&self, what: &str, dir: Option<&Path>, rw: bool) -> anyhow::Result<Mounted> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let r = BeRef::parse(what)?;
        let be = self.resolve(&inv, &r)?;
        if rw && r.snap.is_some() {
            crate::refuse!(Invalid, "a snapshot can only be mounted read-only");
        }
        if r.snap.is_none() && self.running_be().as_deref() == Some(r.be.as_str()) {
            crate::refuse!(
                Refused,
                "{} is the running boot environment: its files are at /",
                r.be
            );
        }
        let source = r.dataset(&be.dataset);
        let dir = dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.join(crate::model::paths::MNT).join(what));
        if self.mounter.is_mountpoint(&dir) {
            crate::refuse!(
                Exists,
                "{} has something mounted on it already; `bootenv unmount {}` first",
                dir.display(),
                dir.display()
            );
        }
        self.mount_tree(&source, &dir, !rw)?;
        Ok(Mounted {
            what: what.to_owned(),
            source,
            dir: dir.display().to_string(),
            read_only: !rw,
        })
    }

    /// `bootenv unmount <name|dir>`: unmounts what `bootenv mount` mounted.
    pub fn unmount_be(&self, what: &str) -> anyhow::Result<Unmounted> {
        let dir = if what.starts_with('/') {
            PathBuf::from(what)
        } else {
            self.root.join(crate::model::paths::MNT).join(what)
        };
        let mut below: Vec<PathBuf> = self
            .mounter
            .table(&self.root)
            .into_iter()
            .map(|m| self.root.join(m.target.trim_start_matches('/')))
            .filter(|m| m.starts_with(&dir))
            .collect();
        if below.is_empty() && self.mounter.is_mountpoint(&dir) {
            below.push(dir.clone());
        }
        if below.is_empty() {
            crate::refuse!(NotFound, "nothing is mounted at {}", dir.display());
        }
        below.sort();
        self.unmount_all(&below)?;
        let _ = std::fs::remove_dir(&dir);
        below.reverse();
        Ok(Unmounted {
            dir: dir.display().to_string(),
            unmounted: below.iter().map(|d| d.display().to_string()).collect(),
        })
    }

    /// `bootenv diff <a> <b>`: which files differ between two BEs (or snapshots), as
    /// `+ path` (only in b), `- path` (only in a), `M path` (changed).
    pub fn diff(&self, a: &str, b: &str) -> anyhow::Result<Diffed> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let resolve = |w: &str| -> anyhow::Result<String> {
            let r = BeRef::parse(w)?;
            Ok(r.dataset(&self.resolve(&inv, &r)?.dataset))
        };
        let (mut da, mut db) = (resolve(a)?, resolve(b)?);
        // A mounted BE (the running one) cannot be mounted twice: compare a snapshot taken now.
        let mounts = self.mounter.table(&self.root);
        let mounted = |ds: &str| mounts.iter().any(|m| m.source == ds);
        let mut temp = Vec::new();
        for d in [&mut da, &mut db] {
            if !d.contains('@') && mounted(d) {
                let snap = format!("bootenv-diff-{}", std::process::id());
                if !temp.iter().any(|t: &String| t == &format!("{d}@{snap}")) {
                    self.zfs.snapshot(d, &snap, true)?;
                    temp.push(format!("{d}@{snap}"));
                }
                *d = format!("{d}@{snap}");
            }
        }
        let r = self.diff_trees(&da, &db);
        for t in temp {
            if let Err(e) = self.zfs.destroy(&t, true) {
                log::warn!("{e:#}");
            }
        }
        Ok(Diffed {
            a: a.to_owned(),
            b: b.to_owned(),
            changes: r?,
        })
    }

    fn diff_trees(
        &self,
        da: &str,
        db: &str,
    ) -> anyhow::Result<Vec<crate::verbs::treediff::Change>> {
        let out = std::cell::RefCell::new(Vec::new());
        self.with_mounted_tree(da, true, &|pa| {
            self.with_mounted_tree(db, true, &|pb| {
                crate::verbs::treediff::diff(pa, pb, &mut out.borrow_mut())?;
                Ok(())
            })
        })?;
        Ok(out.into_inner())
    }

    /// What `destroy` of `name` would remove, or why it must not.
    pub fn destroy_plan(&self, name: &BeName, promote: bool) -> anyhow::Result<DestroyPlan> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let be = inv.require(name)?;
        let (_, st) = self.load_state(&pool)?;
        let mut refuse: Vec<String> = self
            .protected(&inv, &st, name)
            .iter()
            .map(|p| p.reason(name))
            .collect();
        // The BE's subtree and the clones of its snapshots, never the whole pool: a pool may
        // hold thousands of datasets that are none of bootenv's business.
        let all = self.zfs.list(&be.dataset)?.datasets;
        let prefix = format!("{}/", be.dataset);
        let mine: Vec<&crate::sys::zfs::Dataset> = all
            .iter()
            .filter(|d| d.name == be.dataset || d.name.starts_with(&prefix))
            .collect();
        // Only what bootenv made: the root (it carries org.bootenv:source or is a BE root made
        // by bootenv's layout), members, and what resets kept aside.
        let foreign: Vec<String> = mine
            .iter()
            .filter(|d| d.name != be.dataset)
            .filter(|d| {
                d.prop(PROP_MEMBER).is_none()
                    && !d.name.rsplit('/').next().unwrap_or("").contains(".reset-")
            })
            .map(|d| d.name.clone())
            .collect();
        if !foreign.is_empty() {
            refuse.push(format!(
                "{} holds datasets bootenv did not make ({}); move or destroy them yourself first",
                be.dataset,
                foreign.join(", ")
            ));
        }
        // Clones elsewhere whose origin is one of this BE's snapshots.
        let mut dependents: Vec<(String, String)> = self
            .zfs
            .clones(&be.dataset)?
            .into_iter()
            .filter(|(d, _)| !(*d == be.dataset || d.starts_with(&prefix)))
            .collect();
        dependents.sort();
        let mut promotions = Vec::new();
        if !dependents.is_empty() {
            if promote {
                let mut roots: Vec<String> = dependents.iter().map(|(d, _)| d.clone()).collect();
                roots.sort();
                roots.dedup();
                promotions = roots;
            } else {
                refuse.push(format!(
                    "other datasets are clones of {name}'s snapshots ({}); `--promote-dependents` promotes them first, which moves those snapshots to them",
                    dependents.iter().map(|(d, o)| format!("{d} from {o}")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let mut datasets: Vec<String> = mine.iter().map(|d| d.name.clone()).collect();
        datasets.sort();
        let mut snapshots = Vec::new();
        for d in &datasets {
            snapshots.extend(self.zfs.snapshots(d)?);
        }
        Ok(DestroyPlan {
            be: name.clone(),
            root: be.dataset.clone(),
            refuse,
            promotions,
            datasets,
            snapshots,
        })
    }

    /// `bootenv destroy <name> [--dry-run] [--promote-dependents]`.
    pub fn destroy_be(
        &self,
        name: &BeName,
        dry_run: bool,
        promote: bool,
        now: u64,
    ) -> anyhow::Result<Destroyed> {
        let plan = self.destroy_plan(name, promote)?;
        if !plan.refuse.is_empty() {
            crate::refuse!(
                Refused,
                "refusing to destroy {name}:\n  - {}",
                plan.refuse.join("\n  - ")
            );
        }
        let mut done = Destroyed {
            be: name.to_string(),
            dry_run,
            promotions: plan.promotions.clone(),
            datasets: plan.datasets.clone(),
            snapshots: plan.snapshots.clone(),
            esp_dir: format!("/{}/{}", crate::bootloader::esp::DIR, name),
            notes: Vec::new(),
            warnings: Vec::new(),
            changed: !dry_run,
        };
        if dry_run {
            return Ok(done);
        }
        for p in &plan.promotions {
            self.zfs.promote(p)?;
        }
        self.zfs.destroy(&plan.root, true)?;
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let (dir, mut st) = self.load_state(&pool)?;
        st.history.retain(|h| h != name.as_str());
        st.push(
            now,
            EventKind::Destroyed {
                be: name.to_string(),
            },
        );
        statefile::store(&dir, &st)?;
        match self.refresh_boot(&inv, &st) {
            Ok(notes) => done.notes = notes,
            Err(e) => done
                .warnings
                .push(format!("the GRUB menu was not rewritten: {e:#}")),
        }
        Ok(done)
    }

    /// Why GRUB or the state record depend on BE `name`, so that it must not be destroyed or
    /// renamed.
    fn protected(&self, inv: &Inventory, st: &state::State, name: &BeName) -> Vec<Protected> {
        let mut p = Vec::new();
        if self.running_be().as_deref() == Some(name.as_str()) {
            p.push(Protected::Running);
        }
        if inv.bootfs_be().as_ref() == Some(name) {
            p.push(Protected::Default);
        }
        if st.trial.as_ref().is_some_and(|t| t.be == name.as_str()) {
            p.push(Protected::Trial);
        }
        if st.last_good.as_deref() == Some(name.as_str()) {
            p.push(Protected::LastGood);
        }
        if st.reset.as_ref().is_some_and(|r| r.be == name.as_str()) {
            p.push(Protected::ResetPending);
        }
        p
    }

    /// `bootenv rename <old> <new>`.
    pub fn rename_be(&self, old: &BeName, new: &BeName, now: u64) -> anyhow::Result<Renamed> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let be = inv.require(old)?;
        inv.check_free(new, "; pick another name")?;
        let (dir, mut st) = self.load_state(&pool)?;
        let refuse: Vec<&str> = self
            .protected(&inv, &st, old)
            .iter()
            .map(|p| p.short())
            .collect();
        if !refuse.is_empty() {
            crate::refuse!(
                Refused,
                "refusing to rename {old}: {} (GRUB and the state record name it)",
                refuse.join(", ")
            );
        }
        // The new name gets the old one's kernel on the ESP first (a new entry: no rename on
        // FAT), so the menu can name it as soon as the dataset has its new name; the old name's
        // directory goes with the prune after the next menu. When that fails (a format 1 copy
        // on a full ESP), nothing is renamed: the prune would take the only copy.
        if let Ok(Ok(esp)) = self.esp_found() {
            crate::bootloader::bootfiles::adopt_kernel(&esp, old, new, now).with_context(|| {
                format!("giving {new} the kernel of {old} on the ESP; nothing was renamed")
            })?;
        }
        self.zfs
            .rename(&be.dataset, &layout::be_dataset(&pool, new))?;
        for h in st.history.iter_mut().filter(|h| *h == old.as_str()) {
            *h = new.to_string();
        }
        st.push(
            now,
            EventKind::Renamed {
                from: old.to_string(),
                to: new.to_string(),
            },
        );
        statefile::store(&dir, &st)?;
        let mut done = Renamed {
            from: old.to_string(),
            to: new.to_string(),
            dataset: layout::be_dataset(&pool, new),
            notes: Vec::new(),
            changed: true,
        };
        let inv = self.inventory(&pool)?;
        if matches!(self.esp_found(), Ok(Ok(_))) {
            done.notes = self.refresh_boot(&inv, &st)?;
        }
        Ok(done)
    }

    /// `bootenv export <name> <file|->`: a replication stream of the BE (root, members and
    /// their snapshots) from one fresh recursive snapshot.
    pub fn export_be(&self, name: &BeName, to: &str, now: u64) -> anyhow::Result<Exported> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let be = inv.require(name)?;
        let snap = format!("bootenv-export-{}", crate::boot::reset::id_from_time(now));
        self.zfs.snapshot(&be.dataset, &snap, true)?;
        let full = format!("{}@{snap}", be.dataset);
        log::warn!("sending {full} (with its members and snapshots)");
        let mut sink: Box<dyn std::io::Write> = if to == "-" {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(std::fs::File::create(to).with_context(|| format!("creating {to}"))?)
        };
        let bytes = self.zfs.send(&full, &mut sink)?;
        drop(sink);
        if to != "-" {
            std::fs::File::open(to)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {to}"))?;
        }
        Ok(Exported {
            be: name.to_string(),
            snapshot: full,
            bytes,
            to: to.to_owned(),
        })
    }

    /// `bootenv import <file|-> [--name <name>]`: receives a BE stream into `<pool>/ROOT`, never
    /// mounting it, then copies its kernel to the ESP.
    pub fn import_be(
        &self,
        from: &str,
        name: Option<&BeName>,
        now: u64,
    ) -> anyhow::Result<Imported> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        if !inv.has_root {
            crate::refuse!(
                NotFound,
                "{} does not exist; run `bootenv prepare-pool {pool}` first",
                layout::root_container(&pool)
            );
        }
        let before: Vec<String> = inv.bes.iter().map(|b| b.name.to_string()).collect();
        let mut src: Box<dyn std::io::Read> = if from == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(from).with_context(|| format!("opening {from}"))?)
        };
        // The stream's first record names the BE it carries: check it before receiving anything.
        let mut head = vec![0u8; STREAM_HEAD];
        std::io::Read::read_exact(&mut src, &mut head).with_context(|| {
            format!("{from} is not a ZFS send stream (too short); make one with `bootenv export`")
        })?;
        let sent = stream_be_name(&head).map_err(|e| {
            crate::model::failure::fail(
                crate::model::failure::ErrorKind::Invalid,
                format!(
                    "{from} is not a boot environment stream: {e}; make one with `bootenv export`"
                ),
            )
        })?;
        let target = match name {
            Some(n) => n.clone(),
            None => BeName::new(&sent).map_err(|e| crate::model::failure::fail(crate::model::failure::ErrorKind::Invalid, format!("the stream carries {sent:?}, not a valid boot environment name ({e}); import it with --name <name>")))?,
        };
        inv.check_free(
            &target,
            &format!(" in {pool}; import it under another name with --name <name>"),
        )?;
        let dataset = layout::be_dataset(&pool, &target);
        log::info!("receiving {sent} as {dataset}");
        let mut src = std::io::Read::chain(std::io::Cursor::new(head), src);
        let bytes = self
            .zfs
            .receive(&dataset, &mut src)
            .with_context(|| format!("importing {from}; nothing was imported"))?;
        let inv = self.inventory(&pool)?;
        let new: Vec<BeName> = inv
            .bes
            .iter()
            .filter(|b| !before.contains(&b.name.to_string()))
            .map(|b| b.name.clone())
            .collect();
        let [got] = new.as_slice() else {
            bail!(
                "the stream did not make exactly one boot environment in {} (made: {new:?})",
                layout::root_container(&pool)
            );
        };
        let be = inv.get(got).expect("listed");
        self.zfs
            .set(&be.dataset, &[("canmount", "noauto"), ("mountpoint", "/")])?;
        let mut done = Imported {
            be: got.to_string(),
            dataset: be.dataset.clone(),
            bytes,
            boot: None,
            notes: Vec::new(),
            changed: true,
        };
        match self.sync_boot(std::slice::from_ref(got), now) {
            Ok(s) => done.boot = Some(s),
            Err(e) => done.notes.push(format!("{e:#}")),
        }
        Ok(done)
    }
}

/// A role that keeps a BE from being destroyed or renamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protected {
    Running,
    Default,
    Trial,
    LastGood,
    ResetPending,
}

impl Protected {
    /// The refusal, with what to do about it.
    fn reason(self, name: &BeName) -> String {
        match self {
            Protected::Running => format!("{name} is running now"),
            Protected::Default => format!("{name} is the default (make another the default first: `bootenv activate <other>`)"),
            Protected::Trial => format!("{name} is on trial (let the trial end, or `bootenv activate <other>` to cancel it)"),
            Protected::LastGood => format!("{name} is the last known-good boot environment, where a failed trial rolls back to"),
            Protected::ResetPending => format!("a factory reset of {name} is pending (`bootenv factory-reset --cancel`)"),
        }
    }

    /// The refusal in a few words.
    fn short(self) -> &'static str {
        match self {
            Protected::Running => "it is running now",
            Protected::Default => "it is the default",
            Protected::Trial => "it is on trial",
            Protected::LastGood => "it is the last known-good",
            Protected::ResetPending => "a factory reset of it is pending",
        }
    }
}

/// What destroying a BE would do (a dry run's [`Destroyed`] shows it).
#[derive(Clone, Debug)]
pub struct DestroyPlan {
    /// The BE.
    pub be: BeName,
    /// Its root dataset.
    pub root: String,
    /// Why it must not be destroyed; empty when it may.
    pub refuse: Vec<String>,
    /// Clones promoted first.
    pub promotions: Vec<String>,
    /// Datasets destroyed.
    pub datasets: Vec<String>,
    /// Snapshots destroyed with them.
    pub snapshots: Vec<String>,
}

/// How much of a send stream [`stream_be_name`] needs: the first record (header and BEGIN).
const STREAM_HEAD: usize = 8 + 48 + 256;

/// The magic number of a ZFS send stream's BEGIN record (`DMU_BACKUP_MAGIC`).
const DMU_BACKUP_MAGIC: u64 = 0x2_f5ba_cbac;

/// The BE name a ZFS send stream carries: the last component of the dataset in its first
/// BEGIN record (`pool/ROOT/<be>@snap`), as `zfs receive -e` would name it. The record is
/// `drr_type`, `drr_payloadlen` (4 bytes each), then `drr_begin`: magic, version, creation time
/// (8 each), object set type, flags (4 each), two GUIDs (8 each) and the NUL-padded name.
pub fn stream_be_name(head: &[u8]) -> Result<String, String> {
    if head.len() < STREAM_HEAD {
        return Err("too short".into());
    }
    let magic = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
    if magic != DMU_BACKUP_MAGIC && magic.swap_bytes() != DMU_BACKUP_MAGIC {
        return Err("no ZFS stream magic number".into());
    }
    let raw = &head[56..56 + 256];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let full = std::str::from_utf8(&raw[..end])
        .map_err(|_| "its dataset name is not UTF-8".to_string())?;
    let ds = full.split('@').next().unwrap_or_default();
    match ds.rsplit('/').next() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(format!("it names no dataset ({full:?})")),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Binds /proc, /sys and /dev into `root` for `f`, and unbinds them after, with whatever else
/// `f` left mounted below `root`.
/// The mount points strictly below `root` in a mount table.
fn mounts_below(table: &[crate::sys::mounts::MountEntry], root: &Path) -> Vec<PathBuf> {
    table
        .iter()
        .map(|m| PathBuf::from(&m.target))
        .filter(|m| m.starts_with(root) && m != root)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mounts_left_below_a_root_are_found_and_unescaped() {
        let m = "tank/ROOT/v1 / zfs rw 0 0\n\
tank/ROOT/v2:partial /run/bootenv/mnt/p zfs rw 0 0\n\
proc /run/bootenv/mnt/p/proc proc rw 0 0\n\
/dev/vda1 /run/bootenv/mnt/p/run/bootenv/esp vfat rw 0 0\n\
x /run/bootenv/mnt/p/mnt/a\\040b zfs rw 0 0\n\
y /run/bootenv/mnt/px zfs rw 0 0\n";
        let got = super::mounts_below(
            &crate::sys::mounts::parse_mount_table(m),
            std::path::Path::new("/run/bootenv/mnt/p"),
        );
        let want: Vec<std::path::PathBuf> = [
            "/run/bootenv/mnt/p/proc",
            "/run/bootenv/mnt/p/run/bootenv/esp",
            "/run/bootenv/mnt/p/mnt/a b",
        ]
        .iter()
        .map(Into::into)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_send_streams_name_is_read_from_its_begin_record() {
        let mut head = vec![0u8; super::STREAM_HEAD + 100];
        head[8..16].copy_from_slice(&super::DMU_BACKUP_MAGIC.to_le_bytes());
        let name = b"tank/ROOT/v2@bootenv-export-20261122";
        head[56..56 + name.len()].copy_from_slice(name);
        assert_eq!(super::stream_be_name(&head).as_deref(), Ok("v2"));
        head[8..16].copy_from_slice(&super::DMU_BACKUP_MAGIC.to_be_bytes());
        assert_eq!(super::stream_be_name(&head).as_deref(), Ok("v2"));
        head[8] ^= 1;
        assert!(super::stream_be_name(&head).unwrap_err().contains("magic"));
        assert!(super::stream_be_name(&head[..100]).is_err());
        let mut empty = vec![0u8; super::STREAM_HEAD];
        empty[8..16].copy_from_slice(&super::DMU_BACKUP_MAGIC.to_le_bytes());
        assert!(super::stream_be_name(&empty)
            .unwrap_err()
            .contains("no dataset"));
    }

    use super::*;
    use crate::sys::mounts::FakeMounter;
    use crate::sys::zfs::fake::FakeZfs;
    use crate::sys::zfs::Zfs;
    use crate::verbs::context::EspChoice;

    fn world() -> (tempfile::TempDir, FakeZfs, FakeMounter) {
        let d = tempfile::tempdir().unwrap();
        let z = FakeZfs::new();
        z.add_pool("tank");
        z.import("tank").unwrap().unwrap();
        z.add_layout("tank");
        for be in ["v1", "v2"] {
            z.add_be("tank", be, &[(PROP_LABEL, be), ("compression", "lz4")]);
            z.snapshot(&format!("tank/ROOT/{be}"), "factory", true)
                .unwrap();
            z.set(&format!("tank/ROOT/{be}"), &[(PROP_FACTORY, "factory")])
                .unwrap();
        }
        z.set_pool_prop("tank", "bootfs", "tank/ROOT/v1").unwrap();
        (d, z, FakeMounter::new())
    }

    fn ctx<'a>(d: &Path, z: &'a FakeZfs, m: &'a FakeMounter) -> Ctx<'a> {
        Ctx {
            root: d.into(),
            zfs: z,
            mounter: m,
            runner: &crate::sys::run::NoRunner,
            pool: Some(PoolName::new("tank").unwrap()),
            esp: None::<EspChoice>,
            facts: Default::default(),
        }
    }

    fn be(s: &str) -> BeName {
        BeName::new(s).unwrap()
    }

    /// `create --from` options naming the source.
    fn from(src: &str) -> CloneOpts {
        CloneOpts {
            from: Some(src.into()),
            ..Default::default()
        }
    }

    /// The names of every filesystem of the pool.
    fn names(z: &FakeZfs) -> Vec<String> {
        z.list("tank")
            .unwrap()
            .datasets
            .into_iter()
            .map(|d| d.name)
            .collect()
    }

    fn origin(z: &FakeZfs, ds: &str) -> Option<String> {
        z.list(ds)
            .unwrap()
            .datasets
            .into_iter()
            .find(|d| d.name == ds)
            .and_then(|d| d.origin)
    }

    #[test]
    fn create_from_clones_atomically_and_starts_the_config_from_the_factory_state() {
        let (d, z, m) = world();
        let c = ctx(d.path(), &z, &m);
        let now = 1_795_305_600;
        c.create_from(&be("v3"), &from("v2"), now).unwrap();
        let snap = "tank/ROOT/v2@bootenv-20261122T000000Z";
        assert!(
            z.has_snapshot(snap) && z.has_snapshot("tank/ROOT/v2/config@bootenv-20261122T000000Z"),
            "one recursive snapshot"
        );
        assert_eq!(origin(&z, "tank/ROOT/v3").as_deref(), Some(snap));
        assert_eq!(
            origin(&z, "tank/ROOT/v3/config").as_deref(),
            Some("tank/ROOT/v2/config@factory")
        );
        assert_eq!(z.get("tank/ROOT/v3", "canmount").as_deref(), Some("noauto"));
        assert_eq!(
            z.get("tank/ROOT/v3", "compression").as_deref(),
            Some("lz4"),
            "local properties carried over"
        );
        assert_eq!(z.get("tank/ROOT/v3", PROP_LABEL).as_deref(), Some("v2"));
        assert_eq!(z.get("tank/ROOT/v3", PROP_SOURCE).as_deref(), Some(snap));
        assert!(
            z.has_snapshot("tank/ROOT/v3@factory") && z.has_snapshot("tank/ROOT/v3/config@factory")
        );
        assert!(
            z.changes()
                .last()
                .unwrap()
                .starts_with("zfs rename tank/ROOT/v3:partial"),
            "committed by a rename"
        );
        assert!(m.mounted().is_empty());
        // From a named snapshot; an unknown one is refused before anything changes.
        let before = z.changes();
        let e = c
            .create_from(&be("v4"), &from("v2@nosuch"), now)
            .unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert_eq!(z.changes(), before);
        c.create_from(&be("v4"), &from("v1@factory"), now).unwrap();
        assert_eq!(
            origin(&z, "tank/ROOT/v4").as_deref(),
            Some("tank/ROOT/v1@factory")
        );
    }

    #[test]
    fn a_failed_create_from_leaves_nothing_behind() {
        let (d, z, _) = world();
        let m = FakeMounter::new().failing("tank/ROOT/v3:partial", "no space");
        let c = ctx(d.path(), &z, &m);
        let before = names(&z);
        assert!(c.create_from(&be("v3"), &CloneOpts::default(), 1).is_err());
        let after = names(&z);
        assert_eq!(before, after);
        assert!(
            z.snapshots("tank/ROOT/v1")
                .unwrap()
                .iter()
                .all(|s| !s.contains("bootenv-")),
            "the snapshot it took is gone too"
        );
    }

    #[test]
    fn destroy_refuses_what_must_stay_and_the_dry_run_is_what_happens() {
        let (d, z, m) = world();
        let c = ctx(d.path(), &z, &m);
        c.create_from(&be("v3"), &from("v2"), 1).unwrap();
        let e = c
            .destroy_be(&be("v1"), false, false, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("v1 is the default"), "{e}");
        let e = c
            .destroy_be(&be("v2"), false, false, 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("clones of v2's snapshots") && e.contains("tank/ROOT/v3"),
            "{e}"
        );
        // A clone anywhere in the pool counts, not only a BE.
        let snap = z.snapshots("tank/ROOT/v2").unwrap()[0].clone();
        z.add_fs("tank/elsewhere", &[]);
        z.clone_snapshot(&snap, "tank/elsewhere/copy", &[]).unwrap();
        let e = c
            .destroy_be(&be("v2"), false, false, 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("tank/elsewhere/copy from {snap}")),
            "{e}"
        );
        z.destroy("tank/elsewhere", true).unwrap();
        // Datasets bootenv did not make are never destroyed.
        z.add_fs("tank/ROOT/v3/mine", &[]);
        let e = c
            .destroy_be(&be("v3"), false, false, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not make (tank/ROOT/v3/mine)"), "{e}");
        z.destroy("tank/ROOT/v3/mine", false).unwrap();
        let dry = c.destroy_be(&be("v3"), true, false, 2).unwrap();
        assert!(dry.dry_run && !dry.changed);
        assert!(dry.to_string().starts_with("dry run"));
        let would: Vec<String> = dry.datasets.iter().chain(&dry.snapshots).cloned().collect();
        let before = names(&z);
        c.destroy_be(&be("v3"), false, false, 3).unwrap();
        let after = names(&z);
        let gone: Vec<String> = before.into_iter().filter(|n| !after.contains(n)).collect();
        let would_ds: Vec<String> = would.iter().filter(|w| !w.contains('@')).cloned().collect();
        assert_eq!(gone, would_ds);
        for s in would.iter().filter(|w| w.contains('@')) {
            assert!(!z.has_snapshot(s), "{s} should be gone");
        }
        // With dependents promoted, v2 can go; v3's clone keeps the snapshots it needs.
        c.create_from(&be("v5"), &from("v2"), 4).unwrap();
        c.destroy_be(&be("v2"), false, true, 5).unwrap();
        assert!(z.list("tank/ROOT/v2").unwrap().datasets.is_empty());
        assert!(!z.list("tank/ROOT/v5").unwrap().datasets.is_empty());
    }

    #[test]
    fn rollback_walks_back_and_forward_through_the_defaults() {
        let (d, z, m) = world();
        let c = ctx(d.path(), &z, &m);
        c.prepare_pool(&PoolName::new("tank").unwrap()).unwrap();
        for (i, b) in ["v1", "v2", "v3", "v4"].iter().enumerate() {
            if z.list(&format!("tank/ROOT/{b}"))
                .unwrap()
                .datasets
                .is_empty()
            {
                c.create_from(&be(b), &from("v1"), 10 + i as u64).unwrap();
            }
            c.activate(&be(b), Activation::Default, 20 + i as u64)
                .unwrap();
        }
        let default = || z.pool_prop("tank", "bootfs").unwrap().unwrap();
        c.walk(None, false, 30).unwrap();
        assert_eq!(default(), "tank/ROOT/v3");
        c.walk(None, false, 31).unwrap();
        assert_eq!(default(), "tank/ROOT/v2");
        c.walk(None, true, 32).unwrap();
        assert_eq!(default(), "tank/ROOT/v3");
        c.walk(Some(&be("v1")), false, 33).unwrap();
        assert_eq!(default(), "tank/ROOT/v1");
        assert!(c
            .walk(None, false, 34)
            .unwrap_err()
            .to_string()
            .contains("nothing to roll back to"));
    }

    #[test]
    fn mount_unmount_and_diff_read_bes_and_snapshots_without_booting_them() {
        use crate::model::failure::ErrorKind;
        use crate::verbs::outcome::kind_of;
        use crate::verbs::treediff::ChangeKind;
        let (d, z, _) = world();
        let m = FakeMounter::new()
            .file("tank/ROOT/v1", "etc/os-release", b"v1", 0o644)
            .file("tank/ROOT/v1", "usr/bin/old", b"x", 0o755)
            // The config member's mount point in the root (read-only, bootenv makes none).
            .file("tank/ROOT/v1", "etc/config/.mountpoint", b"", 0o644)
            .file("tank/ROOT/v1/config", "hostname", b"box", 0o644)
            .file("tank/ROOT/v2", "etc/os-release", b"v2", 0o644)
            .file("tank/ROOT/v2", "usr/bin/new", b"y", 0o755)
            .file("tank/ROOT/v1@factory", "etc/os-release", b"v1", 0o644)
            .file("tank/ROOT/v2@factory", "etc/os-release", b"v1", 0o644);
        let c = ctx(d.path(), &z, &m);
        let got = c.mount_be("v1", None, false).unwrap();
        let dir = d.path().join("run/bootenv/mnt/v1");
        assert_eq!(
            (got.dir.as_str(), got.read_only, got.source.as_str()),
            (dir.to_str().unwrap(), true, "tank/ROOT/v1")
        );
        assert_eq!(std::fs::read(dir.join("etc/os-release")).unwrap(), b"v1");
        assert_eq!(
            std::fs::read(dir.join("etc/config/hostname")).unwrap(),
            b"box",
            "its config member is mounted in place"
        );
        let e = c.mount_be("v1", None, false).unwrap_err();
        assert_eq!(kind_of(&e), ErrorKind::Exists, "{e}");
        let e = c.mount_be("v1@factory", None, true).unwrap_err();
        assert_eq!(kind_of(&e), ErrorKind::Invalid, "{e}");
        let e = c.mount_be("v1@nosuch", None, false).unwrap_err();
        assert_eq!(kind_of(&e), ErrorKind::NotFound, "{e}");
        let gone = c.unmount_be("v1").unwrap();
        assert_eq!(gone.dir, dir.display().to_string());
        assert!(m.mounted().is_empty(), "{:?}", m.mounted());
        let e = c.unmount_be("v1").unwrap_err();
        assert_eq!(kind_of(&e), ErrorKind::NotFound, "{e}");
        // The differences, as typed changes; the trees are unmounted afterwards.
        let diff = c.diff("v1", "v2").unwrap();
        let changes: Vec<(ChangeKind, &str)> = diff
            .changes
            .iter()
            .map(|c| (c.change, c.path.as_str()))
            .collect();
        assert!(
            changes.contains(&(ChangeKind::Modified, "/etc/os-release")),
            "{diff}"
        );
        assert!(
            changes.contains(&(ChangeKind::Removed, "/usr/bin/old")),
            "{diff}"
        );
        assert!(
            changes.contains(&(ChangeKind::Added, "/usr/bin/new")),
            "{diff}"
        );
        assert!(m.mounted().is_empty(), "{:?}", m.mounted());
        let same = c.diff("v1@factory", "v2@factory").unwrap();
        assert!(same.changes.is_empty());
        assert_eq!(
            same.to_string(),
            "v1@factory and v2@factory hold the same files\n"
        );
    }

    #[test]
    fn an_exported_be_imports_under_another_name_with_its_members_and_snapshots() {
        use crate::model::failure::ErrorKind;
        use crate::verbs::outcome::kind_of;
        let (d, z, m) = world();
        let c = ctx(d.path(), &z, &m);
        let file = d.path().join("v2.zstream");
        let out = c
            .export_be(&be("v2"), file.to_str().unwrap(), 1_795_305_600)
            .unwrap();
        assert_eq!(out.snapshot, "tank/ROOT/v2@bootenv-export-20261122T000000Z");
        assert_eq!(out.bytes, std::fs::metadata(&file).unwrap().len());
        // The stream names v2, which is here already.
        let e = c.import_be(file.to_str().unwrap(), None, 2).unwrap_err();
        assert_eq!(kind_of(&e), ErrorKind::Exists, "{e}");
        let got = c
            .import_be(file.to_str().unwrap(), Some(&be("v9")), 3)
            .unwrap();
        assert_eq!(
            (got.be.as_str(), got.dataset.as_str()),
            ("v9", "tank/ROOT/v9")
        );
        assert!(z.has_snapshot("tank/ROOT/v9@factory"));
        assert!(z.has_snapshot("tank/ROOT/v9/config@factory"));
        assert_eq!(
            z.get("tank/ROOT/v9/config", PROP_MEMBER).as_deref(),
            Some("config")
        );
        assert_eq!(z.get("tank/ROOT/v9", "canmount").as_deref(), Some("noauto"));
        assert_eq!(
            z.get("tank/ROOT/v9", PROP_FACTORY).as_deref(),
            Some("factory")
        );
        // No ESP here: imported all the same, with the reason its kernel was not copied.
        assert!(got.boot.is_none() && got.notes.len() == 1, "{got}");
        // Not a stream at all.
        let junk = d.path().join("junk");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        let e = c.import_be(junk.to_str().unwrap(), None, 4).unwrap_err();
        assert_eq!(kind_of(&e), ErrorKind::Invalid, "{e}");
        let e = c.export_be(&be("nosuch"), "-", 5).unwrap_err();
        assert_eq!(kind_of(&e), ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn rename_refuses_names_grub_and_the_state_use() {
        let (d, z, m) = world();
        let c = ctx(d.path(), &z, &m);
        assert!(c
            .rename_be(&be("v1"), &be("x"), 1)
            .unwrap_err()
            .to_string()
            .contains("it is the default"));
        c.rename_be(&be("v2"), &be("two"), 1).unwrap();
        assert!(!z.list("tank/ROOT/two/config").unwrap().datasets.is_empty());
        assert!(c
            .rename_be(&be("two"), &be("v1"), 1)
            .unwrap_err()
            .to_string()
            .contains("exists already"));
        // The ESP is FAT: names that differ only in case would share a directory there.
        for to in ["TWO", "V1"] {
            let e = c.rename_be(&be("two"), &be(to), 1).unwrap_err().to_string();
            assert!(e.contains("only in case"), "{e}");
        }
    }
}
