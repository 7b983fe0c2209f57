//! `bootenv data-pools`: the data pools of an appliance (see [`crate::model::datapools`]).
//! `add` and `remove` change the system pool's `org.bootenv:data-pools`; `import` is what
//! `bootenv-data-pools.service` runs after the switch of root: it waits up to a limit for each
//! registered pool's disks, imports the pools in their order (never forcing), records each
//! outcome in `/run/bootenv/data-pools` as it ends, and fails (kind `unavailable`) when one is
//! not usable, so the services that require the unit fail visibly while the system, its
//! mark-good and its rollbacks go on. Without an action it lists them.

use crate::model::datapools::{
    parse_report, render_report, DataPool, MountPolicy, PoolState, Registration, ReportLine,
};
use crate::model::layout::{self, PROP_DATA_POOLS};
use crate::model::names::PoolName;
use crate::model::paths::DATA_POOLS_REPORT;
use crate::model::state::ResetRequest;
use crate::sys::zfs::ImportError;
use crate::sys::{fsutil, statefile};
use crate::verbs::context::Ctx;
use crate::verbs::outcome::{DataPoolRow, DataPoolsOutcome};
use anyhow::Context;
use std::time::{Duration, Instant};

/// What `data-pools` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataAction {
    /// Show the data pools and where each stands.
    List,
    /// Register a pool (or change its mount policy).
    Add(PoolName, MountPolicy),
    /// Unregister a pool (its data is not touched).
    Remove(PoolName),
    /// Import the registered pools, waiting up to this long for their disks, and carry out
    /// the data pools' part of a full factory reset the agent began at this boot.
    Import(Duration),
}

/// Called after every step of a data reset with the failpoint's name (`reset:<step>:data`);
/// true stops there, as a power cut would (the CLI's stops dead when `bootenv.failpoint=` on
/// the kernel command line names it).
pub type Failpoint<'f> = &'f dyn Fn(&str) -> bool;

impl DataAction {
    fn word(&self) -> &'static str {
        match self {
            DataAction::List => "list",
            DataAction::Add(..) => "add",
            DataAction::Remove(..) => "remove",
            DataAction::Import(..) => "import",
        }
    }
}

/// How often the disks are looked at again while a pool is missing.
const POLL: Duration = Duration::from_millis(500);

impl Ctx<'_> {
    /// The system pool's data pools, read from `<pool>/ROOT`.
    pub fn data_registration(&self, pool: &PoolName) -> anyhow::Result<Registration> {
        let props = self.zfs.local_props(&layout::root_container(pool))?;
        let value = props
            .iter()
            .find(|(k, _)| k == PROP_DATA_POOLS)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        Ok(Registration::parse(value, pool))
    }

    /// `bootenv data-pools [add|remove|import]`.
    pub fn data_pools(&self, action: &DataAction) -> anyhow::Result<DataPoolsOutcome> {
        self.data_pools_with(action, &|_| false)
    }

    /// [`Ctx::data_pools`] with the failpoints of a data reset.
    pub fn data_pools_with(
        &self,
        action: &DataAction,
        failpoint: Failpoint,
    ) -> anyhow::Result<DataPoolsOutcome> {
        let pool = self.pool()?;
        let mut reg = self.data_registration(&pool)?;
        let mut out = DataPoolsOutcome {
            action: action.word(),
            system_pool: pool.to_string(),
            pools: Vec::new(),
            problems: reg.problems.clone(),
            notes: Vec::new(),
            changed: false,
        };
        match action {
            DataAction::List => {}
            DataAction::Add(name, mount) => {
                if name == &pool {
                    crate::refuse!(
                        Invalid,
                        "{name} is the system pool (the one holding the boot environments); a data pool is another pool"
                    );
                }
                match reg.pools.iter_mut().find(|p| &p.name == name) {
                    Some(p) if p.mount == *mount => {}
                    Some(p) => {
                        p.mount = *mount;
                        out.changed = true;
                    }
                    None => {
                        if reg.pools.len() == crate::model::datapools::MAX_DATA_POOLS {
                            crate::refuse!(
                                Invalid,
                                "pool {pool} names {} data pools already, the most bootenv imports; remove one first",
                                reg.pools.len()
                            );
                        }
                        reg.pools.push(DataPool {
                            name: name.clone(),
                            mount: *mount,
                        });
                        out.changed = true;
                    }
                }
                let known = self
                    .zfs
                    .imported_pools()?
                    .iter()
                    .any(|p| p == name.as_str())
                    || self.zfs.scan()?.iter().any(|p| p.name == name.as_str());
                if !known {
                    out.notes.push(format!(
                        "no pool {name} is imported or on this machine's disks now; the booted system will look for it at every boot"
                    ));
                }
            }
            DataAction::Remove(name) => {
                let before = reg.pools.len();
                reg.pools.retain(|p| &p.name != name);
                out.changed = reg.pools.len() != before;
                if !out.changed {
                    crate::refuse!(NotFound, "pool {pool} names no data pool {name}");
                }
                out.notes.push(format!(
                    "pool {name} and its data are untouched; the booted system no longer imports it"
                ));
            }
            DataAction::Import(wait) => {
                // A reset of the data is carried out before anything of it is mounted.
                let reset = self.pending_data_reset(&pool)?;
                let lines = self.import_data_pools(&reg, *wait, reset.is_some())?;
                out.changed = lines.iter().any(|l| l.state == PoolState::Imported);
                let usable: Vec<&str> = lines
                    .iter()
                    .filter(|l| l.state.usable())
                    .map(|l| l.pool.as_str())
                    .collect();
                if let Some(req) = reset {
                    out.changed = true;
                    let already: Vec<&str> = lines
                        .iter()
                        .filter(|l| l.state == PoolState::AlreadyImported)
                        .map(|l| l.pool.as_str())
                        .collect();
                    out.notes
                        .push(self.reset_data(&pool, &reg, &usable, &already, &req, failpoint)?);
                    for (p, l) in reg.pools.iter().zip(&lines) {
                        if p.mount == MountPolicy::All && l.state == PoolState::Imported {
                            self.mount_all(&p.name)?;
                        }
                    }
                }
                out.pools = self.data_rows(&reg, &lines)?;
                let bad: Vec<String> = lines
                    .iter()
                    .filter(|l| !l.state.usable())
                    .map(|l| format!("{}: {} ({})", l.pool, l.state.as_str(), l.message))
                    .collect();
                if !bad.is_empty() {
                    for r in &out.pools {
                        log::info!("{}", r.to_string().trim_end());
                    }
                    crate::refuse!(Unavailable, "{}", bad.join("; "));
                }
                return Ok(out);
            }
        }
        if out.changed {
            let value = match reg.value() {
                v if v.is_empty() => "-".to_owned(),
                v => v,
            };
            self.zfs
                .set(&layout::root_container(&pool), &[(PROP_DATA_POOLS, &value)])?;
        }
        let lines = self.read_data_report();
        out.pools = self.data_rows(&reg, &lines)?;
        Ok(out)
    }

    /// The data pools' part of a full factory reset of the running BE that the agent began at
    /// this boot (the boot report says `reset=`): for each usable data pool in order, its
    /// datasets marked `org.bootenv:data=reset` are swapped as the agent swaps the system
    /// pool's; when every registered pool's part is done, the request is cleared and the reset
    /// recorded as done. A pool that is not usable keeps the request for a later import.
    fn reset_data(
        &self,
        pool: &PoolName,
        reg: &Registration,
        usable: &[&str],
        already: &[&str],
        req: &ResetRequest,
        failpoint: Failpoint,
    ) -> anyhow::Result<String> {
        use crate::boot::reset;
        use crate::model::state::EventKind;
        let req = req.clone();
        // One reset at a time, and no state write of another verb beside it (mark-good).
        let _lock = crate::sys::lock::acquire(
            &self.root,
            "bootenv data-pools import (factory reset)",
            Duration::from_secs(600),
            std::env::var_os(crate::sys::lock::HELD_ENV).is_some(),
        )?;
        let dir = self.state_dir(pool)?;
        let mut kept = Vec::new();
        let mut erased = Vec::new();
        let mut waiting = Vec::new();
        for p in &reg.pools {
            if !usable.contains(&p.name.as_str()) {
                waiting.push(format!("{} (not imported)", p.name));
                continue;
            }
            if already.contains(&p.name.as_str()) {
                // Imported (and perhaps mounted and in use) before bootenv looked: its data is
                // not swapped under its users.
                waiting.push(format!(
                    "{0} (imported before bootenv looked: `zpool export {0}`, then `bootenv data-pools import`)",
                    p.name
                ));
                continue;
            }
            log::warn!(
                "factory reset of {}: the data in pool {} (id {})",
                req.be,
                p.name,
                req.id
            );
            match reset::run_data_pool(self.zfs, p.name.as_str(), &req, failpoint) {
                Ok(o) => {
                    kept.extend(o.kept);
                    erased.extend(o.erased);
                }
                Err(reset::Stop::Failpoint(name)) => {
                    crate::refuse!(Failed, "stopped at failpoint {name}")
                }
                Err(reset::Stop::Impossible(why)) => crate::refuse!(
                    Failed,
                    "the factory reset of the data in pool {0} cannot be done: {why}; the request is kept: fix that and run `bootenv data-pools import`, or leave the pool out of resets with `bootenv data-pools remove {0}` (its data is untouched), after which the reset completes without it",
                    p.name
                ),
                Err(reset::Stop::Failed(e)) => {
                    return Err(e.context(format!(
                        "the factory reset of the data in pool {} stopped; it resumes at the next `bootenv data-pools import` (the next boot)",
                        p.name
                    )))
                }
            }
        }
        if !waiting.is_empty() {
            return Ok(format!(
                "factory reset {} of {}: the data pools' part waits for {}; the request is kept",
                req.id,
                req.be,
                waiting.join(", ")
            ));
        }
        // The system pool's part, done by the agent: what it kept, for the record (names
        // only: nothing is run again).
        let inv = self.inventory(pool)?;
        if let Ok(swaps) = reset::swaps(self.zfs, &inv, &req) {
            for (i, sw) in swaps.iter().enumerate() {
                let k = reset::kept_name(&sw.target, &req.id);
                if sw.erase {
                    erased.insert(i.min(erased.len()), k);
                } else {
                    kept.insert(i.min(kept.len()), format!("{} -> {k}", sw.target));
                }
            }
        }
        let (_, mut st) = self.load_state(pool)?;
        if st.reset.as_ref() == Some(&req) {
            st.reset = None;
            st.push(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                EventKind::ResetDone {
                    request: req.clone(),
                    kept: kept.clone(),
                    erased: erased.clone(),
                },
            );
            statefile::store(&dir, &st)?;
        }
        Ok(format!(
            "factory reset {} of {} done, data pools included; kept: {}; erased: {}",
            req.id,
            req.be,
            if kept.is_empty() {
                "-".into()
            } else {
                kept.join(", ")
            },
            if erased.is_empty() {
                "-".into()
            } else {
                erased.join(", ")
            }
        ))
    }

    /// The full reset of the running BE that the agent began at this boot (its report says
    /// `reset=`) and that is still recorded, so the data pools hold part of it. A request made
    /// in the running system waits for the agent at the next boot.
    fn pending_data_reset(&self, pool: &PoolName) -> anyhow::Result<Option<ResetRequest>> {
        let Some(report) = self.boot_report() else {
            return Ok(None);
        };
        let running = self.running_be();
        if report.get("reset").is_none() || running.is_none() {
            return Ok(None);
        }
        let (_, st) = self.load_state(pool)?;
        Ok(st.reset.filter(|r| {
            r.mode == crate::model::state::ResetMode::Full
                && Some(r.be.as_str()) == running.as_deref()
        }))
    }

    /// Mounts the datasets of `pool` that `zpool import` would have (`canmount=on`, a
    /// mountpoint), parents first, after a reset that needed them unmounted.
    fn mount_all(&self, pool: &PoolName) -> anyhow::Result<()> {
        use crate::model::listing::{CanMount, Mountpoint};
        let mut todo: Vec<(String, String)> = self
            .zfs
            .list(pool.as_str())?
            .datasets
            .into_iter()
            .filter(|d| d.canmount == CanMount::On)
            .filter_map(|d| match d.mountpoint {
                Mountpoint::Path(p) => Some((p, d.name)),
                _ => None,
            })
            .collect();
        todo.sort();
        for (mp, ds) in todo {
            let dir = self.root.join(mp.trim_start_matches('/'));
            if self.mounter.is_mountpoint(&dir) {
                continue;
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("making the mountpoint {}", dir.display()))?;
            self.mounter
                .mount_zfs(&ds, &dir, false)
                .with_context(|| format!("mounting {ds} at {mp}"))?;
        }
        Ok(())
    }

    /// This boot's `/run/bootenv/data-pools`, as far as it can be read.
    pub(crate) fn read_data_report(&self) -> Vec<ReportLine> {
        std::fs::read_to_string(self.path(DATA_POOLS_REPORT))
            .map(|t| parse_report(&t))
            .unwrap_or_default()
    }

    /// Each registered pool, as it stands now, with this boot's report line.
    pub(crate) fn data_rows(
        &self,
        reg: &Registration,
        lines: &[ReportLine],
    ) -> anyhow::Result<Vec<DataPoolRow>> {
        let imported = self.zfs.imported_pools()?;
        let mut rows = Vec::new();
        for p in &reg.pools {
            let is_in = imported.iter().any(|i| i == p.name.as_str());
            let health = if is_in {
                self.zfs.pool_prop(p.name.as_str(), "health").ok().flatten()
            } else {
                None
            };
            let line = lines.iter().find(|l| l.pool == p.name.as_str());
            let mut message = line.map(|l| l.message.clone());
            if let Some(h) = health.as_deref().filter(|h| *h != "ONLINE") {
                message = Some(format!(
                    "{}pool {} is {h}: `zpool status {}` names the device to replace (zpool replace)",
                    message.map(|m| format!("{m}; ")).unwrap_or_default(),
                    p.name,
                    p.name
                ));
            }
            rows.push(DataPoolRow {
                name: p.name.to_string(),
                mount: p.mount.as_str(),
                imported: is_in,
                health,
                state: line.map_or(PoolState::NotTried, |l| l.state).as_str(),
                seconds: line.map(|l| l.seconds),
                message: message.filter(|m| !m.is_empty()),
            });
        }
        Ok(rows)
    }

    /// Imports the registered pools, in order, each as soon as its disks are there, waiting up
    /// to `wait` for those that are not; writes the report as each ends.
    fn import_data_pools(
        &self,
        reg: &Registration,
        wait: Duration,
        unmounted: bool,
    ) -> anyhow::Result<Vec<ReportLine>> {
        let started = Instant::now();
        let already = self.zfs.imported_pools()?;
        let mut lines: Vec<ReportLine> = reg
            .pools
            .iter()
            .map(|p| ReportLine {
                pool: p.name.to_string(),
                state: if already.iter().any(|i| i == p.name.as_str()) {
                    PoolState::AlreadyImported
                } else {
                    PoolState::Importing
                },
                seconds: 0.0,
                message: String::new(),
            })
            .collect();
        for l in lines.iter_mut().filter(|l| l.state.usable()) {
            l.message = "it was imported before bootenv looked (not by bootenv)".into();
        }
        self.write_data_report(&lines);
        loop {
            let pending: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].state == PoolState::Importing)
                .collect();
            if pending.is_empty() {
                break;
            }
            let found = self.zfs.scan()?;
            let out_of_time = started.elapsed() >= wait;
            let mut progressed = false;
            for i in pending {
                let p = &reg.pools[i];
                let seen = found.iter().find(|f| f.name == p.name.as_str());
                match seen {
                    Some(f) if f.state == "ONLINE" || f.state == "DEGRADED" => {
                        let t = Instant::now();
                        log::info!(
                            "importing data pool {} (mount {})",
                            p.name,
                            p.mount.as_str()
                        );
                        let r = self.zfs.import_data(
                            p.name.as_str(),
                            p.mount == MountPolicy::All && !unmounted,
                        )?;
                        let l = &mut lines[i];
                        l.seconds = t.elapsed().as_secs_f64();
                        match r {
                            Ok(()) => {
                                l.state = PoolState::Imported;
                                l.message = match p.mount {
                                    MountPolicy::All => {
                                        "imported; its datasets with canmount=on are mounted".into()
                                    }
                                    MountPolicy::None => {
                                        "imported; nothing mounted (mount none)".into()
                                    }
                                };
                            }
                            Err(e) => {
                                l.state = PoolState::Failed;
                                l.message = format!("{e}; {}", import_fix(&p.name, &e));
                            }
                        }
                        progressed = true;
                    }
                    Some(f) if out_of_time => {
                        let l = &mut lines[i];
                        l.state = PoolState::Unavailable;
                        l.seconds = started.elapsed().as_secs_f64();
                        l.message = format!(
                            "its disks are there but ZFS cannot import it (state {}): `zpool import` shows which devices are missing or damaged; attach them, or restore the pool from its backup",
                            f.state
                        );
                        progressed = true;
                    }
                    None if out_of_time => {
                        let l = &mut lines[i];
                        l.state = PoolState::Missing;
                        l.seconds = started.elapsed().as_secs_f64();
                        l.message = format!(
                            "no disk of it appeared within {} s: attach its disks and run `bootenv data-pools import`, or `bootenv data-pools remove {}` if it is gone for good",
                            wait.as_secs(),
                            p.name
                        );
                        progressed = true;
                    }
                    _ => {}
                }
            }
            if progressed {
                self.write_data_report(&lines);
            } else {
                std::thread::sleep(POLL);
            }
        }
        Ok(lines)
    }

    /// Writes the report; a failure to write it is logged (the import itself went on).
    fn write_data_report(&self, lines: &[ReportLine]) {
        let path = self.path(DATA_POOLS_REPORT);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        let r = std::fs::create_dir_all(dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                fsutil::atomic_write(
                    dir,
                    &name.to_string_lossy(),
                    render_report(lines).as_bytes(),
                )
            });
        if let Err(e) = r {
            log::warn!("writing {}: {e:#}", path.display());
        }
    }
}

/// What to do about a failed import.
fn import_fix(pool: &PoolName, e: &ImportError) -> String {
    match e {
        ImportError::Foreign { .. } => format!(
            "if no other system uses it, import it once by hand with `zpool import -f {pool}` and export it cleanly; bootenv never forces a data pool"
        ),
        ImportError::InUse(_) => {
            "it is active on another system: stop it there first".to_owned()
        }
        ImportError::NotFound => "attach its disks and run `bootenv data-pools import`".to_owned(),
        ImportError::Other(_) => format!(
            "`zpool import` shows what ZFS sees of {pool}; fix that and run `bootenv data-pools import`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mounts::FakeMounter;
    use crate::sys::zfs::fake::FakeZfs;
    use crate::sys::zfs::Zfs;

    fn world() -> (tempfile::TempDir, FakeZfs, FakeMounter) {
        let dir = tempfile::tempdir().unwrap();
        let z = FakeZfs::new();
        z.add_pool("rpool");
        z.import("rpool").unwrap().unwrap();
        z.add_layout("rpool");
        for p in ["data", "archive", "scratch"] {
            z.add_pool(p);
        }
        (dir, z, FakeMounter::new())
    }

    fn ctx<'a>(dir: &tempfile::TempDir, z: &'a FakeZfs, m: &'a FakeMounter) -> Ctx<'a> {
        Ctx {
            root: dir.path().to_owned(),
            zfs: z,
            mounter: m,
            runner: &crate::sys::run::NoRunner,
            pool: Some(PoolName::new("rpool").unwrap()),
            esp: None,
            facts: Default::default(),
        }
    }

    fn pool(s: &str) -> PoolName {
        PoolName::new(s).unwrap()
    }

    #[test]
    fn add_and_remove_change_only_the_property() {
        let (dir, z, m) = world();
        let c = ctx(&dir, &z, &m);
        let o = c
            .data_pools(&DataAction::Add(pool("data"), MountPolicy::All))
            .unwrap();
        assert!(o.changed);
        let o = c
            .data_pools(&DataAction::Add(pool("data"), MountPolicy::All))
            .unwrap();
        assert!(!o.changed, "adding it again changes nothing");
        c.data_pools(&DataAction::Add(pool("archive"), MountPolicy::None))
            .unwrap();
        assert_eq!(
            z.get("rpool/ROOT", PROP_DATA_POOLS).as_deref(),
            Some("data archive:none")
        );
        let o = c
            .data_pools(&DataAction::Add(pool("nowhere"), MountPolicy::All))
            .unwrap();
        assert!(o.notes[0].contains("no pool nowhere"), "{:?}", o.notes);
        let e = c
            .data_pools(&DataAction::Add(pool("rpool"), MountPolicy::All))
            .unwrap_err();
        assert_eq!(
            crate::verbs::outcome::kind_of(&e),
            crate::model::failure::ErrorKind::Invalid
        );
        c.data_pools(&DataAction::Remove(pool("nowhere"))).unwrap();
        let e = c
            .data_pools(&DataAction::Remove(pool("nowhere")))
            .unwrap_err();
        assert_eq!(
            crate::verbs::outcome::kind_of(&e),
            crate::model::failure::ErrorKind::NotFound
        );
        let o = c.data_pools(&DataAction::List).unwrap();
        let names: Vec<_> = o.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["data", "archive"]);
        assert!(o
            .pools
            .iter()
            .all(|p| p.state == "not-tried" && !p.imported));
        assert!(
            !z.is_imported("data") && !z.is_imported("archive"),
            "registering imports nothing"
        );
    }

    #[test]
    fn import_takes_every_pool_it_can_and_reports_the_others_with_their_fix() {
        let (dir, z, m) = world();
        let c = ctx(&dir, &z, &m);
        z.set(
            "rpool/ROOT",
            &[(PROP_DATA_POOLS, "data archive:none scratch gone")],
        )
        .unwrap();
        z.set_present("scratch", true, Some("UNAVAIL"));
        let e = c
            .data_pools(&DataAction::Import(Duration::ZERO))
            .unwrap_err();
        assert_eq!(
            crate::verbs::outcome::kind_of(&e),
            crate::model::failure::ErrorKind::Unavailable
        );
        let msg = format!("{e:#}");
        assert!(
            msg.contains("scratch: unavailable") && msg.contains("gone: missing"),
            "{msg}"
        );
        assert!(z.is_imported("data") && z.is_imported("archive"));
        let log = z.changes();
        assert!(log.contains(&"zpool import data".to_owned()), "{log:?}");
        assert!(
            log.contains(&"zpool import -N archive".to_owned()),
            "{log:?}"
        );
        let o = c.data_pools(&DataAction::List).unwrap();
        let st: Vec<_> = o.pools.iter().map(|p| (p.name.as_str(), p.state)).collect();
        assert_eq!(
            st,
            [
                ("data", "imported"),
                ("archive", "imported"),
                ("scratch", "unavailable"),
                ("gone", "missing")
            ]
        );
        assert!(o.pools[3]
            .message
            .as_deref()
            .unwrap()
            .contains("data-pools remove gone"));
        // The next run finds two imported already and still reports the others.
        z.set_present("scratch", true, None);
        let e = c
            .data_pools(&DataAction::Import(Duration::ZERO))
            .unwrap_err();
        assert!(format!("{e:#}").contains("gone: missing"));
        let o = c.data_pools(&DataAction::List).unwrap();
        assert_eq!(o.pools[0].state, "already-imported");
        assert_eq!(o.pools[2].state, "imported");
    }

    /// A machine booted into v1 by the agent, which did the system pool's part of a full
    /// reset (the boot report says `reset=`), with data pool `data` holding `cust1` (a factory
    /// snapshot) and `cust2` (none: it starts empty), both marked `org.bootenv:data=reset`, and
    /// `keep`, not marked.
    fn reset_world() -> (tempfile::TempDir, FakeZfs, FakeMounter) {
        use crate::model::state::{ResetMode, ResetRequest, State};
        let (dir, z, m) = world();
        z.add_be("rpool", "v1", &[("org.bootenv:factory", "factory")]);
        z.snapshot("rpool/ROOT/v1", "factory", true).unwrap();
        z.set("rpool/ROOT", &[(PROP_DATA_POOLS, "data")]).unwrap();
        z.import("data").unwrap().unwrap();
        z.add_fs(
            "data/cust1",
            &[
                ("org.bootenv:data", "reset"),
                ("org.bootenv:factory", "factory"),
            ],
        );
        z.snapshot("data/cust1", "factory", false).unwrap();
        z.add_fs("data/cust2", &[("org.bootenv:data", "reset")]);
        z.add_fs("data/keep", &[]);
        z.export("data").unwrap();
        let run = dir.path().join("run/bootenv");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join("boot"),
            "version=1\nbe=v1\npool=rpool\ndataset=rpool/ROOT/v1\nreset=Full id 20261207T000000Z; system pool done\n",
        )
        .unwrap();
        let c = ctx(&dir, &z, &m);
        let req = ResetRequest {
            be: "v1".into(),
            mode: ResetMode::Full,
            erase: false,
            id: "20261207T000000Z".into(),
            origin: "grub".into(),
        };
        let st = State {
            reset: Some(req),
            ..Default::default()
        };
        let d = c.state_dir(&pool("rpool")).unwrap();
        statefile::store(&d, &st).unwrap();
        (dir, z, m)
    }

    fn dump(z: &FakeZfs) -> Vec<String> {
        z.dump("data")
    }

    #[test]
    fn a_data_reset_cut_at_any_step_ends_where_an_uninterrupted_one_ends() {
        let (dir, z, m) = reset_world();
        let c = ctx(&dir, &z, &m);
        let o = c.data_pools(&DataAction::Import(Duration::ZERO)).unwrap();
        assert!(
            o.notes[0].contains("done, data pools included"),
            "{:?}",
            o.notes
        );
        let log = z.changes();
        assert!(
            log.contains(&"zpool import -N data".to_owned())
                && !log.contains(&"zpool import data".to_owned()),
            "a pool whose data is reset is imported without mounting: {log:?}"
        );
        let reference = dump(&z);
        assert!(reference
            .iter()
            .any(|l| l.starts_with("data/cust1.reset-20261207T000000Z ")));
        assert!(reference
            .iter()
            .any(|l| l.starts_with("data/cust2.reset-20261207T000000Z ")));
        assert!(!reference.iter().any(|l| l.contains(".new-")));
        let keep: Vec<_> = reference
            .iter()
            .filter(|l| l.starts_with("data/keep "))
            .collect();
        assert_eq!(keep.len(), 1);
        let (_, st) = c.load_state(&pool("rpool")).unwrap();
        assert!(
            st.reset.is_none(),
            "the request is cleared once the data is reset"
        );
        assert!(matches!(
            &st.events.last().unwrap().kind,
            crate::model::state::EventKind::ResetDone { kept, .. } if kept.len() == 3
        ));
        // Every failpoint, each cut followed by imports until the reset is done.
        for step in [
            "marked",
            "prepared",
            "parked",
            "installed",
            "finished",
            "promoted",
        ] {
            let (dir, z, m) = reset_world();
            let cut = format!("reset:{step}:data");
            // Two boots cut at the failpoint (the second one at the other dataset, or at the
            // same step again), then one without it.
            let mut cuts = 0;
            for _ in 0..2 {
                let c = ctx(&dir, &z, &m);
                let r = c.data_pools_with(&DataAction::Import(Duration::ZERO), &|f| f == cut);
                if let Err(e) = r {
                    assert!(format!("{e:#}").contains("failpoint"), "{e:#}");
                    cuts += 1;
                    // The power cut: the pool is imported again at the next boot.
                    z.export("data").unwrap();
                }
            }
            assert!(cuts >= 1, "{cut} never cut");
            ctx(&dir, &z, &m)
                .data_pools(&DataAction::Import(Duration::ZERO))
                .unwrap();
            assert_eq!(dump(&z), reference, "after cuts at {cut}");
            let (_, st) = ctx(&dir, &z, &m).load_state(&pool("rpool")).unwrap();
            assert!(st.reset.is_none());
        }
    }

    #[test]
    fn a_data_reset_waits_for_a_missing_pool_and_is_not_done_without_the_agent() {
        let (dir, z, m) = reset_world();
        z.set("rpool/ROOT", &[(PROP_DATA_POOLS, "data gone")])
            .unwrap();
        let c = ctx(&dir, &z, &m);
        let e = c
            .data_pools(&DataAction::Import(Duration::ZERO))
            .unwrap_err();
        assert!(format!("{e:#}").contains("gone: missing"), "{e:#}");
        let (_, st) = c.load_state(&pool("rpool")).unwrap();
        assert!(
            st.reset.is_some(),
            "kept until every data pool's part is done"
        );
        assert!(
            z.list("data/cust1.reset-20261207T000000Z")
                .unwrap()
                .datasets
                .len()
                == 1
        );
        // A pool imported before bootenv looked is not reset under its users.
        let (dir2, z2, m2) = reset_world();
        z2.import("data").unwrap().unwrap();
        let o = ctx(&dir2, &z2, &m2)
            .data_pools(&DataAction::Import(Duration::ZERO))
            .unwrap();
        assert!(o.notes[0].contains("zpool export data"), "{:?}", o.notes);
        assert!(z2
            .list("data/cust1.reset-20261207T000000Z")
            .unwrap()
            .datasets
            .is_empty());
        let (_, st) = ctx(&dir2, &z2, &m2).load_state(&pool("rpool")).unwrap();
        assert!(st.reset.is_some());
        // A request made in the running system waits for the agent's next boot.
        let (dir, z, m) = reset_world();
        let boot = dir.path().join("run/bootenv/boot");
        let text = std::fs::read_to_string(&boot).unwrap();
        std::fs::write(&boot, text.replace("reset=", "x=")).unwrap();
        ctx(&dir, &z, &m)
            .data_pools(&DataAction::Import(Duration::ZERO))
            .unwrap();
        assert!(z
            .list("data/cust1.reset-20261207T000000Z")
            .unwrap()
            .datasets
            .is_empty());
    }

    #[test]
    fn a_pool_of_another_system_is_never_forced() {
        let (dir, z, m) = world();
        let c = ctx(&dir, &z, &m);
        z.set("rpool/ROOT", &[(PROP_DATA_POOLS, "data")]).unwrap();
        z.set_last_hostid("data", 0x1234_5678);
        let e = c
            .data_pools(&DataAction::Import(Duration::ZERO))
            .unwrap_err();
        assert!(format!("{e:#}").contains("data: failed"), "{e:#}");
        assert!(!z.is_imported("data"));
        let o = c.data_pools(&DataAction::List).unwrap();
        assert!(o.pools[0]
            .message
            .as_deref()
            .unwrap()
            .contains("zpool import -f data"));
        let ok = c.data_pools(&DataAction::Import(Duration::ZERO));
        assert!(ok.is_err(), "still not forced");
    }
}
