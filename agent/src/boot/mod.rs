//! The boot path up to the switch of root: import the pool, read the state and the boot
//! environments, decide, mount, check the init, and report. Everything here goes through the
//! [`Zfs`] and [`Mounter`] traits and paths below `Env::root`, so the whole path runs in tests
//! against fakes in a temporary directory; [`crate::pid1`] adds what only PID 1 can do.

pub mod decide;
pub mod reset;

use crate::model::cmdline::BootArgs;
use crate::model::inventory::Inventory;
use crate::model::layout;
use crate::model::names::{printable, BeName, PoolName};
use crate::model::report::{self, Report};
use crate::model::state::{self, EventKind, Loaded};
use crate::sys::mounts::Mounter;
use crate::sys::statefile;
use crate::sys::zfs::{ImportError, Listing, Zfs};
use decide::{BootPlan, Choice, Facts, Plan, Rescue};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Default for `bootenv.wait`: how long to wait for the pool's disks, in seconds.
pub const DEFAULT_WAIT_SECS: u32 = 10;
/// Where the new root is assembled, relative to the root.
pub const STAGING: &str = "sysroot";
/// Where the state dataset is mounted, relative to the root.
pub const STATE_MOUNT: &str = crate::model::paths::STATE_MOUNT;

/// What the boot path works on.
pub struct Env<'a> {
    /// `/` in the initramfs; a temporary directory in tests.
    pub root: &'a Path,
    /// ZFS.
    pub zfs: &'a dyn Zfs,
    /// Mounts.
    pub mounter: &'a dyn Mounter,
    /// Seconds since the kernel started (for the report).
    pub uptime: &'a dyn Fn() -> f64,
    /// Seconds since the epoch (for state events).
    pub now: &'a dyn Fn() -> u64,
    /// Called at every named failpoint; returns true to stop there as a power cut would (the
    /// initramfs never returns: it waits to be killed).
    pub failpoint: &'a dyn Fn(&str) -> bool,
    /// Where the new root is assembled, relative to the root: [`STAGING`] for bootenv's own
    /// initramfs, `root` (initramfs-tools' `${rootmnt}`) under initramfs-tools.
    pub staging: &'a str,
}

/// The pool is imported and read.
#[derive(Debug)]
pub struct Prepared {
    /// The pool.
    pub pool: PoolName,
    /// Its boot environments: those of `scope`, or every one.
    pub inventory: Inventory,
    /// The BEs listed (the one asked for, the default, the last known-good:
    /// [`decide::needed_bes`]); `None` when every BE was.
    pub scope: Option<Vec<BeName>>,
    /// The state record as found.
    pub state: Loaded,
    /// Whether the state dataset is mounted (and the record can be written).
    pub state_mounted: bool,
    /// The hostid adopted from the pool's label, if one was.
    pub hostid: Option<u32>,
    /// Warnings for the report.
    pub warnings: Vec<String>,
    /// Seconds spent importing the pool (ZFS's own time; grows with the pool's datasets).
    pub import_seconds: f64,
}

/// The new root is mounted and ready for the switch.
#[derive(Debug)]
pub struct Ready {
    /// What is being booted and why.
    pub plan: BootPlan,
    /// The staging directory holding the new root.
    pub newroot: PathBuf,
    /// The report written to `/run/bootenv/boot` (without `init-exec`, added at the switch).
    pub report: Report,
}

impl Env<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Imports the pool named on the command line, or the first pool found that holds boot
    /// environments, waiting up to `bootenv.wait` seconds for disks to appear.
    pub fn import(&self, args: &BootArgs) -> Result<(PoolName, Option<u32>), Rescue> {
        let shim = UdevShim::new(&self.path("run/udev/data"), &self.path("sys/class/block"));
        let r = self.import_inner(args, &shim);
        shim.remove();
        r
    }

    fn import_inner(
        &self,
        args: &BootArgs,
        shim: &UdevShim,
    ) -> Result<(PoolName, Option<u32>), Rescue> {
        let wait = args.wait_secs.unwrap_or(DEFAULT_WAIT_SECS);
        let deadline = Instant::now() + Duration::from_secs(wait.into());
        let mut hostid = None;
        let mut first = true;
        loop {
            shim.refresh();
            if first {
                if let Some(p) = &args.pool {
                    log::info!("importing pool {p}");
                }
            }
            first = false;
            let attempt = match &args.pool {
                Some(p) => self.import_one(p, &mut hostid).map(|()| p.clone()),
                None => self.import_any(&mut hostid),
            };
            match attempt {
                Ok(p) => return Ok((p, hostid)),
                Err(ImportError::NotFound) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(decide::import_rescue(args.pool.as_ref(), &e, wait)),
            }
        }
    }

    fn import_one(&self, pool: &PoolName, hostid: &mut Option<u32>) -> Result<(), ImportError> {
        let other = |e: anyhow::Error| ImportError::Other(format!("{e:#}"));
        if self
            .zfs
            .imported_pools()
            .map_err(other)?
            .iter()
            .any(|p| p == pool.as_str())
        {
            log::info!("pool {pool} is already imported");
            return Ok(());
        }
        log::debug!("zpool import {pool}");
        match self.zfs.import(pool.as_str()).map_err(other)? {
            Err(ImportError::Foreign { hostid: h }) => {
                log::warn!(
                    "pool {pool} was last imported by hostid {h:08x} and not exported; adopting that hostid (as ZFSBootMenu does) instead of forcing the import"
                );
                self.adopt_hostid(h).map_err(other)?;
                *hostid = Some(h);
                self.zfs.import(pool.as_str()).map_err(other)?
            }
            r => r,
        }
    }

    fn import_any(&self, hostid: &mut Option<u32>) -> Result<PoolName, ImportError> {
        let other = |e: anyhow::Error| ImportError::Other(format!("{e:#}"));
        // Pools imported already (a retry after the rescue shell) come first.
        for p in self.zfs.imported_pools().map_err(other)? {
            if let Ok(pool) = PoolName::new(&p) {
                if self.holds_bes(&pool) {
                    return Ok(pool);
                }
            }
        }
        log::info!("no pool named on the kernel command line (bootenv.pool=); scanning the disks");
        let found = self.zfs.scan().map_err(other)?;
        let mut last_err = ImportError::NotFound;
        for candidate in found {
            let Ok(pool) = PoolName::new(&candidate.name) else {
                log::warn!(
                    "skipping pool {}: not a name bootenv uses",
                    printable(&candidate.name)
                );
                continue;
            };
            match self.import_one(&pool, hostid) {
                Ok(()) if self.holds_bes(&pool) => return Ok(pool),
                Ok(()) => {
                    log::info!("pool {pool} holds no boot environments; exporting it again");
                    if let Err(e) = self.zfs.export(pool.as_str()) {
                        log::warn!("{e:#}");
                    }
                }
                Err(e) => {
                    log::warn!("pool {pool} could not be imported: {e}");
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    fn holds_bes(&self, pool: &PoolName) -> bool {
        self.zfs
            .list_exact(&[&layout::root_container(pool)])
            .map(|l| {
                l.datasets
                    .iter()
                    .any(|d| d.name == layout::root_container(pool))
            })
            .unwrap_or(false)
    }

    /// Makes `hostid` the system's hostid: `/etc/hostid` and the spl module parameter.
    fn adopt_hostid(&self, hostid: u32) -> anyhow::Result<()> {
        use anyhow::Context;
        let etc = self.path("etc");
        std::fs::create_dir_all(&etc).context("creating /etc")?;
        std::fs::write(etc.join("hostid"), hostid.to_le_bytes()).context("writing /etc/hostid")?;
        let param = self.path("sys/module/spl/parameters/spl_hostid");
        std::fs::write(&param, format!("0x{hostid:08x}\n"))
            .with_context(|| format!("setting {}", param.display()))?;
        Ok(())
    }

    /// Reads the state record and the boot environments of an imported pool.
    pub fn prepare(&self, args: &BootArgs) -> Result<Prepared, Rescue> {
        let started = (self.uptime)();
        let (pool, hostid) = self.import(args)?;
        let import_seconds = (self.uptime)() - started;
        let mut warnings = args.warnings.clone();
        let root = layout::root_container(&pool);
        let state_ds = layout::state_dataset(&pool);
        // <pool>/ROOT (the pool's settings) and the state dataset by name: a lookup by name
        // costs little, a listing costs per dataset listed (a pool may hold a hundred BEs).
        // With them, at once, the pool's bootfs and the subtree of the BE the command line
        // names: none depends on another.
        let asked: Vec<String> = args
            .be
            .iter()
            .map(|b| layout::be_dataset(&pool, b))
            .collect();
        let asked_refs: Vec<&str> = asked.iter().map(String::as_str).collect();
        // Meanwhile the state dataset is mounted: it nearly always exists, and its mount
        // costs as much as the reads (the first ZFS mount of the boot); what the listing says
        // of it decides after.
        let dir = self.path(STATE_MOUNT);
        let mounter = self.mounter;
        let (reads, early) = std::thread::scope(|s| {
            let m = s.spawn(|| {
                std::fs::create_dir_all(&dir)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| mounter.mount_zfs(&state_ds, &dir, false))
            });
            let reads =
                self.zfs
                    .boot_reads(&[&root, &state_ds], pool.as_str(), "bootfs", &asked_refs);
            let early = m.join().unwrap_or_else(|_| {
                Err(anyhow::anyhow!("the thread mounting {state_ds} panicked"))
            });
            (reads, early)
        });
        let top = match reads.exact {
            Ok(l) => l,
            Err(e) => {
                if early.is_ok() {
                    self.release_state();
                }
                return Err(unlisted(&pool, &e));
            }
        };
        let state_exists = top.datasets.iter().any(|d| d.name == state_ds);
        let (state, state_mounted) = self.mount_state(&pool, state_exists, early, &mut warnings);
        let bootfs = match reads.prop {
            Ok(v) => v,
            Err(e) => {
                warnings.push(format!("{e:#}"));
                None
            }
        };
        // Then the other BEs the decision looks at first; every BE only when it needs them.
        let bootfs_be = bootfs
            .as_deref()
            .and_then(|ds| layout::be_of_root(&pool, ds))
            .and_then(Result::ok);
        let last_good = state
            .state()
            .last_good
            .as_deref()
            .and_then(|n| BeName::new(n).ok());
        let needed = decide::needed_bes(args, bootfs_be, last_good);
        let scope = (!needed.is_empty()).then_some(needed);
        // A failed read of the named BE is made again with the others.
        let listed: Vec<BeName> = match &reads.subtrees {
            Ok(_) => args.be.iter().cloned().collect(),
            Err(_) => Vec::new(),
        };
        let already = reads.subtrees.unwrap_or_default();
        let inventory =
            match self.read_bes(&pool, &top, scope.as_deref(), bootfs, (&listed, already)) {
                Ok(i) => i,
                Err(e) => return Err(unlisted(&pool, &e)),
            };
        for i in &inventory.ignored {
            log::warn!("{i}");
            warnings.push(i.clone());
        }
        Ok(Prepared {
            pool,
            inventory,
            scope,
            state,
            state_mounted,
            hostid,
            warnings,
            import_seconds,
        })
    }

    /// The inventory of the BEs in `scope` (every BE when `None`), with the pool's settings
    /// from `<pool>/ROOT` as `top` lists it (by name); `already` holds the subtrees of the BEs
    /// it names, listed before.
    fn read_bes(
        &self,
        pool: &PoolName,
        top: &Listing,
        scope: Option<&[BeName]>,
        bootfs: Option<String>,
        already: (&[BeName], Listing),
    ) -> anyhow::Result<Inventory> {
        let root = layout::root_container(pool);
        let listing = match scope {
            None => self.zfs.list(&root)?,
            Some(bes) => {
                let (listed, before) = already;
                let names: Vec<String> = bes
                    .iter()
                    .filter(|b| !listed.contains(b))
                    .map(|b| layout::be_dataset(pool, b))
                    .collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let mut l = if refs.is_empty() {
                    Listing::default()
                } else {
                    self.zfs.list_many(&refs)?
                };
                // What was listed before is of a BE in scope: `needed_bes` always holds the
                // BE the command line names.
                l.datasets.extend(before.datasets);
                l.tainted.extend(before.tainted);
                l.datasets
                    .extend(top.datasets.iter().filter(|d| d.name == root).cloned());
                l.tainted
                    .extend(top.tainted.iter().filter(|t| **t == root).cloned());
                l
            }
        };
        Ok(Inventory::from_listing(pool, &listing, bootfs))
    }

    /// `read_bes`, with `<pool>/ROOT` read again.
    fn reread_bes(
        &self,
        pool: &PoolName,
        scope: Option<&[BeName]>,
        bootfs: Option<String>,
    ) -> anyhow::Result<Inventory> {
        let top = self.zfs.list_exact(&[&layout::root_container(pool)])?;
        self.read_bes(pool, &top, scope, bootfs, (&[], Listing::default()))
    }

    /// The state record, from the state dataset as `mounted` (the attempt made while the
    /// listing ran) left it and as the listing says it `exists`.
    fn mount_state(
        &self,
        pool: &PoolName,
        exists: bool,
        mounted: anyhow::Result<()>,
        warnings: &mut Vec<String>,
    ) -> (Loaded, bool) {
        let ds = layout::state_dataset(pool);
        let dir = self.path(STATE_MOUNT);
        if !exists {
            if mounted.is_ok() {
                self.release_state();
            }
            let w = format!("{ds} does not exist: no last known-good record (create it with `bootenv prepare-pool {pool}`)");
            log::warn!("{w}");
            warnings.push(w);
            return (Loaded::Missing, false);
        }
        if let Err(e) = mounted {
            let w = format!(
                "state dataset not mounted, booting without the last known-good record: {e:#}"
            );
            log::warn!("{w}");
            warnings.push(w);
            return (Loaded::Missing, false);
        }
        match statefile::load(&dir) {
            Ok(l) => {
                match &l {
                    Loaded::Corrupt(why) => {
                        let w = format!("the state record is unreadable ({why}); booting without the last known-good record; the next write keeps the old record as state.corrupt");
                        log::warn!("{w}");
                        warnings.push(w);
                    }
                    Loaded::Newer(v) => {
                        let w = format!("the state record has format version {v}, newer than this agent; it is read as empty and left as it is");
                        log::warn!("{w}");
                        warnings.push(w);
                    }
                    _ => {}
                }
                (l, true)
            }
            Err(e) => {
                warnings.push(format!("{e:#}"));
                (Loaded::Missing, true)
            }
        }
    }

    /// Unmounts the state dataset (before the rescue shell, so that a retry starts clean).
    pub fn release_state(&self) {
        let dir = self.path(STATE_MOUNT);
        if let Err(e) = self.mounter.unmount(&dir) {
            log::debug!("{e:#}");
        }
    }

    /// Decides, carries out a pending factory reset of the chosen boot environment, mounts it,
    /// checks its init and writes the report. A boot environment that fails is recorded and the
    /// decision is made again without it.
    pub fn mount_chosen(
        &self,
        args: &BootArgs,
        p: &Prepared,
        agent_start: f64,
    ) -> Result<Ready, Rescue> {
        let mut st = p.state.state();
        let writable = p.state_mounted && !matches!(p.state, Loaded::Newer(_));
        let mut inventory = p.inventory.clone();
        let mut scope = p.scope.clone();
        let last_good = st.last_good.as_deref().and_then(|n| BeName::new(n).ok());
        let mut failed: Vec<(BeName, String)> = Vec::new();
        let mut reset_note: Option<(String, f64)> = None;
        loop {
            let facts = Facts {
                args,
                inventory: &inventory,
                last_good: last_good.clone(),
                failed: &failed,
            };
            let plan = decide::decide(&facts);
            if scope.is_some() && decide::needs_every_be(&plan) {
                log::info!(
                    "{}: listing every boot environment",
                    match &plan {
                        Plan::Rescue(_) => "none of the boot environments named so far can boot",
                        Plan::Boot(_) => "the default is the only boot environment that can boot",
                    }
                );
                scope = None;
                inventory = self
                    .reread_bes(&p.pool, None, inventory.bootfs.clone())
                    .map_err(|e| unlisted(&p.pool, &e))?;
                continue;
            }
            let plan = match plan {
                Plan::Rescue(r) => return Err(r),
                Plan::Boot(plan) => plan,
            };
            if reset_note.is_none() {
                let started = (self.uptime)();
                if let Some(note) =
                    self.factory_reset(args, p, &plan, &mut st, writable, &inventory)?
                {
                    // The BE's datasets changed: read them again and decide again.
                    if let Ok(i) =
                        self.reread_bes(&p.pool, scope.as_deref(), inventory.bootfs.clone())
                    {
                        inventory = i;
                    }
                    reset_note = Some((note, (self.uptime)() - started));
                    continue;
                }
            }
            match &plan.choice {
                Choice::Requested => log::info!("booting {} (asked for on the kernel command line)", plan.be),
                Choice::Default(s) => log::info!("booting {} (the default, from {s})", plan.be),
                Choice::Fallback { requested, reason, source } => log::warn!(
                    "FALLBACK: booting {} (the default, from {source}) instead of {requested}: {reason}",
                    plan.be
                ),
            }
            match self.mount_plan(&plan) {
                Ok(newroot) => {
                    let mut report =
                        plan.report(p.pool.as_str(), p.hostid, agent_start, &p.warnings);
                    if let Some(left) = args.trial {
                        log::info!(
                            "trial boot of {}: {left} tries left after this one",
                            plan.be
                        );
                        report.put("trial-tries-left", &left.to_string());
                    }
                    if let Some(failed) = &args.rollback {
                        log::warn!(
                            "ROLLBACK: the trial of {failed} used up its tries without being marked good; booting {}",
                            plan.be
                        );
                        report.put("rollback", failed.as_str());
                    }
                    report.put("import-seconds", &format!("{:.3}", p.import_seconds));
                    if let Some((n, secs)) = &reset_note {
                        report.put("reset", n);
                        report.put("reset-seconds", &format!("{secs:.3}"));
                    }
                    self.write_report(&report);
                    self.record_events(&mut st, writable, &plan, args);
                    return Ok(Ready {
                        plan,
                        newroot,
                        report,
                    });
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    log::error!("boot environment {} cannot start: {why}", plan.be);
                    failed.push((plan.be.clone(), why));
                }
            }
        }
    }

    /// Carries out a factory reset of the BE about to boot, when one is pending in the state
    /// record or asked for on the command line (then first recorded, so that a power cut
    /// resumes it). Returns what was done, `None` when there was nothing to do.
    fn factory_reset(
        &self,
        args: &BootArgs,
        p: &Prepared,
        plan: &BootPlan,
        st: &mut state::State,
        writable: bool,
        inventory: &Inventory,
    ) -> Result<Option<String>, Rescue> {
        let dir = self.path(STATE_MOUNT);
        if let (Some((mode, erase)), Choice::Requested) = (args.reset, &plan.choice) {
            let pending_here = st.reset.as_ref().is_some_and(|r| r.be == plan.be.as_str());
            if !writable {
                log::error!(
                    "bootenv.reset ignored: a factory reset is recorded before it starts, and the state dataset {} is not available",
                    layout::state_dataset(&p.pool)
                );
            } else if !pending_here {
                let id =
                    reset::new_id(self.zfs, p.pool.as_str(), (self.now)()).map_err(|e| Rescue {
                        reason: format!("the factory reset of {} could not start: {e:#}", plan.be),
                        hints: vec![
                            "boot without bootenv.reset to skip it".into(),
                            "type `exit` to try the boot again".into(),
                        ],
                    })?;
                let request = state::ResetRequest {
                    be: plan.be.to_string(),
                    mode,
                    erase,
                    id,
                    origin: "grub".into(),
                };
                log::warn!(
                    "factory reset of {} requested on the kernel command line: recording it first",
                    plan.be
                );
                st.reset = Some(request.clone());
                st.push((self.now)(), EventKind::ResetRequested { request });
                if let Err(e) = statefile::store(&dir, st) {
                    return Err(Rescue {
                        reason: format!(
                            "the factory reset of {} could not be recorded: {e:#}",
                            plan.be
                        ),
                        hints: vec![
                            "boot without bootenv.reset to skip it".into(),
                            "type `exit` to try the boot again".into(),
                        ],
                    });
                }
            }
        }
        let Some(req) = st.reset.clone().filter(|r| r.be == plan.be.as_str()) else {
            return Ok(None);
        };
        if !writable {
            return Ok(None);
        }
        log::warn!(
            "FACTORY RESET of {} ({:?}{}), id {}",
            req.be,
            req.mode,
            if req.erase { ", erase" } else { "" },
            req.id
        );
        // The reset changes the BE's datasets: the BE index no longer describes them.
        let dir = self.path(STATE_MOUNT);
        if let Err(e) = crate::sys::statefile::forget_index(&dir) {
            let index = dir.join(crate::model::index::FILE);
            return Err(Rescue {
                reason: format!("the factory reset of {} cannot start: {e:#}", req.be),
                hints: vec![format!(
                    "remove {} by hand, then type `exit` to try the boot again",
                    index.display()
                )],
            });
        }
        let fp = |name: &str| args.failpoint.as_deref() == Some(name) && (self.failpoint)(name);
        match reset::run(self.zfs, inventory, &req, &fp) {
            Ok(outcome)
                if req.mode == state::ResetMode::Full
                    && !inventory.data_pools().pools.is_empty() =>
            {
                // The data pools are not imported here: their part is carried out by the
                // booted system's import of them (`bootenv data-pools import`), before the
                // data's consumers start; the request stays until it is done.
                let pools = inventory.data_pools().value();
                log::warn!(
                    "factory reset of {}: the system pool's part is done; the data pools' part ({pools}) is carried out when they are imported, before their consumers start",
                    req.be
                );
                Ok(Some(format!(
                    "{:?} id {}; system pool done (kept: {}); data pools pending: {pools}",
                    req.mode,
                    req.id,
                    if outcome.kept.is_empty() {
                        "-".to_string()
                    } else {
                        outcome.kept.join(", ")
                    }
                )))
            }
            Ok(outcome) => {
                st.reset = None;
                let note = format!(
                    "{:?} id {}; kept: {}; erased: {}",
                    req.mode,
                    req.id,
                    if outcome.kept.is_empty() {
                        "-".to_string()
                    } else {
                        outcome.kept.join(", ")
                    },
                    if outcome.erased.is_empty() {
                        "-".to_string()
                    } else {
                        outcome.erased.join(", ")
                    }
                );
                st.push(
                    (self.now)(),
                    EventKind::ResetDone {
                        request: req.clone(),
                        kept: outcome.kept,
                        erased: outcome.erased,
                    },
                );
                if let Err(e) = statefile::store(&dir, st) {
                    log::error!("the factory reset is done but could not be recorded ({e:#}); it will be found done at the next boot");
                }
                log::warn!("factory reset of {} done: {note}", req.be);
                Ok(Some(note))
            }
            Err(reset::Stop::Impossible(why)) => {
                log::error!("factory reset of {} dropped: {why}", req.be);
                st.reset = None;
                st.push(
                    (self.now)(),
                    EventKind::ResetDropped {
                        request: req.clone(),
                        reason: why.clone(),
                    },
                );
                let _ = statefile::store(&dir, st);
                Ok(Some(format!("dropped: {why}")))
            }
            Err(reset::Stop::Failpoint(name)) => Err(Rescue {
                reason: format!("stopped at failpoint {name}"),
                hints: vec!["the factory reset resumes at the next boot".into()],
            }),
            Err(reset::Stop::Failed(e)) => Err(Rescue {
                reason: format!("the factory reset of {} stopped: {e:#}", req.be),
                hints: vec![
                    "the request is kept: the reset resumes where it stopped at the next boot"
                        .into(),
                    format!(
                        "`zfs list -r {}` shows the datasets; nothing was destroyed",
                        p.pool
                    ),
                    "type `exit` to try again now".into(),
                ],
            }),
        }
    }

    /// Mounts the root and members of `plan` at the staging directory and checks its init;
    /// on failure, unmounts what it mounted.
    fn mount_plan(&self, plan: &BootPlan) -> anyhow::Result<PathBuf> {
        let newroot = self.path(self.staging);
        std::fs::create_dir_all(&newroot)?;
        self.mounter.mount_zfs(&plan.root, &newroot, false)?;
        let mut mounted = vec![newroot.clone()];
        let result = (|| {
            for m in &plan.mounts {
                let target = newroot.join(m.mountpoint.trim_start_matches('/'));
                if !target.is_dir() {
                    std::fs::create_dir_all(&target).map_err(|e| {
                        anyhow::anyhow!(
                            "creating the mountpoint {} of {}: {e}",
                            m.mountpoint,
                            m.dataset
                        )
                    })?;
                }
                self.mounter.mount_zfs(&m.dataset, &target, false)?;
                log::info!("mounted {} at {}", m.dataset, m.mountpoint);
                mounted.push(target);
            }
            check_init(&newroot, &plan.init)
        })();
        if result.is_err() {
            for t in mounted.iter().rev() {
                if let Err(e) = self.mounter.unmount(t) {
                    log::warn!("{e:#}");
                }
            }
        }
        result.map(|()| newroot)
    }

    /// Writes `/run/bootenv/boot` and, after a fallback, `/run/bootenv/fallback`.
    pub fn write_report(&self, r: &Report) {
        let dir = self.path(report::DIR);
        let res = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(self.path(crate::model::paths::BOOT_REPORT), r.render()))
            .and_then(|()| match r.fallback_sentence() {
                Some(s) => std::fs::write(self.path(crate::model::paths::FALLBACK), s),
                None => Ok(()),
            });
        if let Err(e) = res {
            log::error!("could not write the boot report in {}: {e}", dir.display());
        }
    }

    /// Records what this boot means for the state record: a fallback, and a rollback from a
    /// failed trial (which clears the trial request: the request is done). Written only when
    /// something changed.
    fn record_events(
        &self,
        st: &mut state::State,
        writable: bool,
        plan: &BootPlan,
        args: &BootArgs,
    ) {
        if !writable {
            return;
        }
        let before = st.clone();
        let now = (self.now)();
        if let Choice::Fallback {
            requested, reason, ..
        } = &plan.choice
        {
            st.push(
                now,
                EventKind::Fallback {
                    requested: requested.clone(),
                    booted: plan.be.to_string(),
                    reason: reason.clone(),
                },
            );
        }
        if let Some(failed) = &args.rollback {
            // GRUB repeats the marker on every boot until bootenv rewrites its block; the
            // pending trial tells the first report from the repeats.
            if st.trial.as_ref().is_some_and(|t| t.be == failed.as_str()) {
                st.trial = None;
                st.push(
                    now,
                    EventKind::Rollback {
                        failed: failed.to_string(),
                        booted: plan.be.to_string(),
                    },
                );
            }
        }
        if *st != before {
            if let Err(e) = statefile::store(&self.path(STATE_MOUNT), st) {
                log::warn!("could not update the state record: {e:#}");
            }
        }
    }
}

/// Stand-in udev database entries for block devices, so that libzfs does not wait 3 s per
/// disk and per import for a udev that does not run in the initramfs: it polls the device's
/// database entry (`/run/udev/data/b<maj>:<min>`) until the device is initialised and has a
/// `DEVLINKS` property (Debian's build checks the property). Each entry made says
/// `I:1` (initialised) and names one link, `disk/by-bootenv/<name>`, that libzfs does not
/// record (it keeps only by-id, by-path and by-vdev links). Only entries that did not exist
/// are made, and they are removed again before the boot environment's udev starts.
pub struct UdevShim {
    data: PathBuf,
    blocks: PathBuf,
    made: std::cell::RefCell<Vec<PathBuf>>,
    active: bool,
}

impl UdevShim {
    /// A shim for the database in `data`, for the block devices listed in `blocks`
    /// (`/sys/class/block`). It does nothing when udev runs (the database directory exists).
    pub fn new(data: &Path, blocks: &Path) -> UdevShim {
        UdevShim {
            data: data.into(),
            blocks: blocks.into(),
            made: Default::default(),
            active: !data.exists(),
        }
    }

    /// Adds entries for block devices that appeared since the last call.
    pub fn refresh(&self) {
        if !self.active {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.blocks) else {
            return;
        };
        if std::fs::create_dir_all(&self.data).is_err() {
            return;
        }
        for e in entries.flatten() {
            let Ok(dev) = std::fs::read_to_string(e.path().join("dev")) else {
                continue;
            };
            let entry = self.data.join(format!("b{}", dev.trim()));
            let name = e.file_name().to_string_lossy().into_owned();
            let db = format!("I:1\nS:disk/by-bootenv/{name}\n");
            if !entry.exists() && std::fs::write(&entry, db).is_ok() {
                self.made.borrow_mut().push(entry);
            }
        }
    }

    /// Removes the entries it made (and the directories, when empty).
    pub fn remove(&self) {
        for p in self.made.borrow_mut().drain(..) {
            let _ = std::fs::remove_file(p);
        }
        if self.active {
            let _ = std::fs::remove_dir(&self.data);
            let _ = self.data.parent().map(std::fs::remove_dir);
        }
    }
}

/// Checks that `init` can be executed in `newroot`: it exists (links followed inside the new
/// root), is an executable file, and its interpreter (`#!` line or ELF `PT_INTERP`) exists too.
pub fn check_init(newroot: &Path, init: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = crate::sys::fsutil::resolve_in_root(newroot, init)?;
    let meta = std::fs::metadata(&path)
        .map_err(|_| anyhow::anyhow!("init {init} does not exist in it"))?;
    anyhow::ensure!(meta.is_file(), "init {init} is not a file");
    anyhow::ensure!(
        meta.permissions().mode() & 0o111 != 0,
        "init {init} is not executable"
    );
    let head = read_head(&path, 4096)?;
    if let Some(interp) = interpreter(&head) {
        let ip = crate::sys::fsutil::resolve_in_root(newroot, &interp)?;
        anyhow::ensure!(
            ip.is_file(),
            "init {init} needs {interp}, which does not exist in it"
        );
    }
    Ok(())
}

fn read_head(path: &Path, n: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(n);
    std::fs::File::open(path)?
        .take(n as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// The interpreter a file asks for: the `#!` line's program, or the ELF64 `PT_INTERP` path.
pub fn interpreter(head: &[u8]) -> Option<String> {
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|b| *b == b'\n').next()?;
        let line = String::from_utf8_lossy(line);
        return line.split_whitespace().next().map(str::to_owned);
    }
    // ELF64, little endian.
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(head.get(o..o + 8)?.try_into().ok()?));
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(head.get(ph..ph + 4)?.try_into().ok()?);
        if p_type == 3 {
            let off = u64_at(ph + 8)? as usize;
            let len = u64_at(ph + 32)? as usize;
            let bytes = head.get(off..off + len)?;
            let s = bytes.split(|b| *b == 0).next()?;
            return Some(String::from_utf8_lossy(s).into_owned());
        }
    }
    None
}

/// The rescue when the pool's datasets cannot be listed.
fn unlisted(pool: &PoolName, e: &anyhow::Error) -> Rescue {
    Rescue {
        reason: format!("the datasets of pool {pool} could not be listed: {e:#}"),
        hints: vec![
            format!("`zfs list -r {pool}` shows the error"),
            "type `exit` to try the boot again".into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mounts::FakeMounter;
    use crate::sys::zfs::fake::FakeZfs;

    fn pool_with_bes(root: &Path) -> FakeZfs {
        let z = FakeZfs::new().with_root(root.into());
        z.add_pool("tank");
        z.add_layout("tank");
        for be in ["v1", "v2", "v3"] {
            z.add_be("tank", be, &[]);
        }
        z.put_pool_prop("tank", "bootfs", "tank/ROOT/v1");
        z
    }

    fn mounter() -> FakeMounter {
        let mut m = FakeMounter::new();
        for be in ["v1", "v2", "v3"] {
            m = m
                .file(
                    &format!("tank/ROOT/{be}"),
                    "sbin/init",
                    b"#!/bin/sh\necho hi\n",
                    0o755,
                )
                .file(&format!("tank/ROOT/{be}"), "bin/sh", b"", 0o755);
        }
        m
    }

    fn env<'a>(root: &'a Path, zfs: &'a FakeZfs, m: &'a FakeMounter) -> Env<'a> {
        Env {
            root,
            zfs,
            mounter: m,
            uptime: &|| 1.0,
            now: &|| 1_700_000_000,
            failpoint: &|_| true,
            staging: STAGING,
        }
    }

    fn boot(e: &Env, cmdline: &str) -> Result<Ready, Rescue> {
        let args = BootArgs::parse(cmdline);
        let p = e.prepare(&args)?;
        e.mount_chosen(&args, &p, 0.5)
    }

    #[test]
    fn boots_the_selected_be_and_mounts_only_its_datasets() {
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        let m = mounter();
        let e = env(d.path(), &z, &m);
        let ready = boot(&e, "bootenv=v2 bootenv.pool=tank").unwrap();
        assert_eq!(ready.plan.be.as_str(), "v2");
        let mounted: Vec<String> = m.mounted().into_iter().map(|(ds, _)| ds).collect();
        assert_eq!(
            mounted,
            vec!["tank/BOOTENV", "tank/ROOT/v2", "tank/ROOT/v2/config"]
        );
        assert_eq!(m.mounted()[2].1, d.path().join("sysroot/etc/config"));
        let r = std::fs::read_to_string(d.path().join("run/bootenv/boot")).unwrap();
        assert!(
            r.contains("be=v2\n") && r.contains("choice=requested\n"),
            "{r}"
        );
        assert!(!d.path().join("run/bootenv/fallback").exists());
        assert!(
            z.changes().is_empty(),
            "booting changed datasets: {:?}",
            z.changes()
        );
    }

    /// The boot path reads `<pool>/ROOT` and the state dataset by name and lists the subtrees
    /// of the BEs it needs only, however many the pool holds; every BE only when those cannot
    /// boot.
    #[test]
    fn the_boot_lists_only_the_bes_it_needs_and_every_be_when_they_fail() {
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        for i in 0..100 {
            z.add_be("tank", &format!("b{i}"), &[]);
        }
        let m = mounter();
        let e = env(d.path(), &z, &m);
        z.take_listed();
        let ready = boot(&e, "bootenv=v2 bootenv.pool=tank").unwrap();
        assert_eq!(ready.plan.be.as_str(), "v2");
        assert_eq!(
            z.take_listed(),
            vec![
                "tank/ROOT",
                "tank/BOOTENV",
                "-r tank/ROOT/v2",
                "-r tank/ROOT/v1"
            ]
        );
        // Requested v3 and the default v1 cannot start (no init): decided from every BE.
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        for i in 0..100 {
            z.add_be("tank", &format!("b{i}"), &[]);
        }
        let m = FakeMounter::new()
            .file("tank/ROOT/v2", "sbin/init", b"#!/bin/sh\n", 0o755)
            .file("tank/ROOT/v2", "bin/sh", b"", 0o755);
        let e = env(d.path(), &z, &m);
        let r = boot(&e, "bootenv=v3 bootenv.pool=tank");
        let listed = z.take_listed();
        assert!(
            listed.contains(&"-r tank/ROOT".to_string()),
            "{listed:?} {r:?}"
        );
        // No default left: the rescue names the BEs that can boot, all of them.
        let r = r.unwrap_err();
        assert!(
            r.hints[0].contains("b99") && r.hints[0].contains("v2"),
            "{r:?}"
        );
    }

    #[test]
    fn an_unknown_be_falls_back_and_says_why() {
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        let m = mounter();
        let e = env(d.path(), &z, &m);
        let ready = boot(&e, "bootenv=nosuch bootenv.pool=tank").unwrap();
        assert_eq!(ready.plan.be.as_str(), "v1");
        let f = std::fs::read_to_string(d.path().join("run/bootenv/fallback")).unwrap();
        assert!(
            f.contains("booted v1 instead of nosuch") && f.contains("does not exist"),
            "{f}"
        );
        let st = statefile::load(&d.path().join(STATE_MOUNT))
            .unwrap()
            .state();
        assert!(
            matches!(&st.events[0].kind, EventKind::Fallback { requested, .. } if requested == "nosuch")
        );
    }

    #[test]
    fn a_rollback_is_recorded_once_and_ends_the_trial_request() {
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        let m = mounter();
        let dir = d.path().join(STATE_MOUNT);
        std::fs::create_dir_all(&dir).unwrap();
        let st = state::State {
            last_good: Some("v1".into()),
            trial: Some(state::Trial {
                be: "v3".into(),
                tries: 2,
            }),
            reset: None,
            history: vec![],
            events: vec![],
        };
        statefile::store(&dir, &st).unwrap();
        let e = env(d.path(), &z, &m);
        let ready = boot(&e, "bootenv=v1 bootenv.pool=tank bootenv.rollback=v3").unwrap();
        assert_eq!(ready.report.get("rollback"), Some("v3"));
        let after = statefile::load(&dir).unwrap().state();
        assert_eq!(after.trial, None);
        assert!(
            matches!(&after.events[..], [state::Event { kind: EventKind::Rollback { failed, booted }, .. }] if failed == "v3" && booted == "v1")
        );
        // GRUB repeats the marker until the block is rewritten: no second event.
        for (_, t) in m.mounted().into_iter().rev() {
            m.unmount(&t).unwrap();
        }
        z.export("tank").unwrap();
        let _ = boot(&e, "bootenv=v1 bootenv.pool=tank bootenv.rollback=v3").unwrap();
        assert_eq!(statefile::load(&dir).unwrap().state().events.len(), 1);
    }

    #[test]
    fn a_reset_from_the_command_line_is_recorded_then_done_before_mounting() {
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        z.import("tank").unwrap().unwrap();
        z.set("tank/ROOT/v2", &[("org.bootenv:factory", "factory")])
            .unwrap();
        z.snapshot("tank/ROOT/v2", "factory", true).unwrap();
        z.export("tank").unwrap();
        let m = mounter();
        let stop_at = std::cell::Cell::new(true);
        let e = Env {
            root: d.path(),
            zfs: &z,
            mounter: &m,
            uptime: &|| 1.0,
            now: &|| 1_795_305_600,
            failpoint: &|_| stop_at.get(),
            staging: STAGING,
        };
        // A power cut at a failpoint in the middle: the request was recorded first.
        let r = boot(&e, "bootenv=v2 bootenv.pool=tank bootenv.reset=config bootenv.failpoint=reset:parked:config").unwrap_err();
        assert!(
            r.reason.contains("failpoint reset:parked:config"),
            "{}",
            r.reason
        );
        assert!(
            m.mounted()
                .iter()
                .all(|(ds, _)| !ds.starts_with("tank/ROOT/")),
            "nothing of the BE was mounted"
        );
        let st = statefile::load(&d.path().join(STATE_MOUNT))
            .unwrap()
            .state();
        assert_eq!(
            st.reset.as_ref().map(|r| r.id.as_str()),
            Some("20261122T000000Z")
        );
        // The next boot has a plain command line; the request resumes and finishes.
        for (_, t) in m.mounted().into_iter().rev() {
            m.unmount(&t).unwrap();
        }
        z.export("tank").unwrap();
        stop_at.set(false);
        let ready = boot(&e, "bootenv=v2 bootenv.pool=tank").unwrap();
        assert!(ready
            .report
            .get("reset")
            .unwrap()
            .contains("tank/ROOT/v2/config -> tank/ROOT/v2/config.reset-20261122T000000Z"));
        for key in ["reset-seconds", "import-seconds"] {
            let secs = ready.report.get(key).expect("the time is reported");
            assert!(secs.parse::<f64>().is_ok_and(|s| s >= 0.0), "{key}={secs}");
        }
        let st = statefile::load(&d.path().join(STATE_MOUNT))
            .unwrap()
            .state();
        assert!(st.reset.is_none());
        assert!(st
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::ResetDone { .. })));
        assert_eq!(
            z.get("tank/ROOT/v2/config", "org.bootenv:reset").as_deref(),
            Some("20261122T000000Z")
        );
        let mounted: Vec<String> = m.mounted().into_iter().map(|(ds, _)| ds).collect();
        assert_eq!(
            mounted,
            vec!["tank/BOOTENV", "tank/ROOT/v2", "tank/ROOT/v2/config"]
        );
    }

    #[test]
    fn a_full_reset_leaves_its_request_for_the_data_pools_and_never_imports_them() {
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        z.import("tank").unwrap().unwrap();
        z.set("tank/ROOT/v2", &[("org.bootenv:factory", "factory")])
            .unwrap();
        z.snapshot("tank/ROOT/v2", "factory", true).unwrap();
        z.set("tank/ROOT", &[(layout::PROP_DATA_POOLS, "store")])
            .unwrap();
        z.export("tank").unwrap();
        z.add_pool("store");
        let m = mounter();
        let e = Env {
            root: d.path(),
            zfs: &z,
            mounter: &m,
            uptime: &|| 1.0,
            now: &|| 1_795_305_600,
            failpoint: &|_| false,
            staging: STAGING,
        };
        let ready = boot(&e, "bootenv=v2 bootenv.pool=tank bootenv.reset=full").unwrap();
        let note = ready.report.get("reset").unwrap();
        assert!(note.contains("data pools pending: store"), "{note}");
        assert!(
            !z.is_imported("store"),
            "the agent never imports a data pool"
        );
        let st = statefile::load(&d.path().join(STATE_MOUNT))
            .unwrap()
            .state();
        assert!(st.reset.is_some(), "the request stays for the data pools");
        assert_eq!(
            z.get("tank/ROOT/v2/config", "org.bootenv:reset").as_deref(),
            Some("20261122T000000Z"),
            "the config was reset before the switch of root"
        );
    }

    #[test]
    fn a_be_that_fails_to_mount_or_lacks_init_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        // v2's config will not mount.
        let m = mounter().failing("tank/ROOT/v2/config", "Input/output error");
        let e = env(d.path(), &z, &m);
        let ready = boot(&e, "bootenv=v2 bootenv.pool=tank").unwrap();
        assert_eq!(ready.plan.be.as_str(), "v1");
        assert!(
            matches!(&ready.plan.choice, Choice::Fallback { reason, .. } if reason.contains("Input/output error"))
        );
        // Everything of v2 was unmounted again; only the state and v1 remain.
        let mounted: Vec<String> = m.mounted().into_iter().map(|(ds, _)| ds).collect();
        assert_eq!(
            mounted,
            vec!["tank/BOOTENV", "tank/ROOT/v1", "tank/ROOT/v1/config"]
        );
    }

    #[test]
    fn missing_init_is_a_failed_be() {
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        let m = FakeMounter::new()
            .file("tank/ROOT/v1", "sbin/init", b"#!/bin/sh\n", 0o755)
            .file("tank/ROOT/v1", "bin/sh", b"", 0o755);
        let e = env(d.path(), &z, &m);
        let ready = boot(&e, "bootenv=v3 bootenv.pool=tank").unwrap();
        assert_eq!(ready.plan.be.as_str(), "v1");
        assert!(
            matches!(&ready.plan.choice, Choice::Fallback { reason, .. } if reason.contains("init /sbin/init does not exist"))
        );
    }

    #[test]
    fn without_the_state_dataset_the_boot_goes_on_and_leaves_nothing_of_it_mounted() {
        let d = tempfile::tempdir().unwrap();
        let z = FakeZfs::new().with_root(d.path().into());
        z.add_pool("tank");
        // <pool>/ROOT only: no state dataset (the fake mounter would mount any name, as the
        // attempt made while the listing runs does).
        z.add_fs(
            "tank/ROOT",
            &[
                ("canmount", "off"),
                ("mountpoint", "none"),
                ("org.bootenv:layout", "1"),
            ],
        );
        z.add_be("tank", "v1", &[]);
        let m = mounter();
        let e = env(d.path(), &z, &m);
        let r = boot(&e, "bootenv=v1 bootenv.pool=tank").unwrap();
        assert_eq!(r.plan.be.as_str(), "v1");
        assert!(
            r.report
                .all("warning")
                .iter()
                .any(|w| w.contains("tank/BOOTENV does not exist")),
            "{}",
            r.report.render()
        );
        let mounted: Vec<String> = m.mounted().into_iter().map(|(ds, _)| ds).collect();
        assert_eq!(mounted, ["tank/ROOT/v1", "tank/ROOT/v1/config"]);
    }

    #[test]
    fn missing_pool_is_rescue_and_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        let m = mounter();
        let e = env(d.path(), &z, &m);
        let r = boot(&e, "bootenv.pool=other bootenv.wait=0").unwrap_err();
        assert!(
            r.reason.contains("pool other was not found"),
            "{}",
            r.reason
        );
        assert!(m.mounted().is_empty());
        assert!(z.changes().is_empty());
        assert!(!z.is_imported("tank"));
    }

    #[test]
    fn without_a_pool_name_the_disks_are_scanned() {
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        z.add_pool("data");
        let m = mounter();
        let e = env(d.path(), &z, &m);
        let ready = boot(&e, "").unwrap();
        assert_eq!(ready.plan.be.as_str(), "v1");
        assert!(z.is_imported("tank"));
        assert!(
            !z.is_imported("data"),
            "a pool without boot environments is exported again"
        );
    }

    #[test]
    fn a_foreign_hostid_is_adopted_not_forced() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sys/module/spl/parameters")).unwrap();
        let z = pool_with_bes(d.path());
        z.set_last_hostid("tank", 0x2d0b6f3f);
        let m = mounter();
        let e = env(d.path(), &z, &m);
        let ready = boot(&e, "bootenv.pool=tank").unwrap();
        assert_eq!(ready.report.get("hostid"), Some("2d0b6f3f"));
        assert_eq!(
            std::fs::read(d.path().join("etc/hostid")).unwrap(),
            0x2d0b6f3fu32.to_le_bytes()
        );
        // A pool in use elsewhere is never forced.
        let d2 = tempfile::tempdir().unwrap();
        let z2 = pool_with_bes(d2.path());
        z2.set_in_use_elsewhere("tank");
        let e2 = env(d2.path(), &z2, &m);
        let r = boot(&e2, "bootenv.pool=tank").unwrap_err();
        assert!(r.reason.contains("in use by another system"));
    }

    #[test]
    fn a_corrupt_state_record_is_survived() {
        let d = tempfile::tempdir().unwrap();
        let z = pool_with_bes(d.path());
        let m = mounter();
        // The fake "mount" of the state dataset does not hide what is in the directory.
        std::fs::create_dir_all(d.path().join(STATE_MOUNT)).unwrap();
        std::fs::write(d.path().join(STATE_MOUNT).join("state"), b"\0\0garbage").unwrap();
        let e = env(d.path(), &z, &m);
        let ready = boot(&e, "bootenv=nosuch bootenv.pool=tank").unwrap();
        assert_eq!(ready.plan.be.as_str(), "v1");
        assert!(ready
            .report
            .all("warning")
            .iter()
            .any(|w| w.contains("state record is unreadable")));
        assert_eq!(
            std::fs::read(d.path().join(STATE_MOUNT).join("state.corrupt")).unwrap(),
            b"\0\0garbage"
        );
    }

    #[test]
    fn the_udev_shim_adds_and_removes_only_its_own_entries() {
        let d = tempfile::tempdir().unwrap();
        let blocks = d.path().join("sys/class/block");
        for (n, dev) in [("vda", "254:0"), ("vda2", "254:2")] {
            std::fs::create_dir_all(blocks.join(n)).unwrap();
            std::fs::write(blocks.join(n).join("dev"), format!("{dev}\n")).unwrap();
        }
        let data = d.path().join("run/udev/data");
        let shim = UdevShim::new(&data, &blocks);
        shim.refresh();
        assert_eq!(
            std::fs::read_to_string(data.join("b254:2")).unwrap(),
            "I:1\nS:disk/by-bootenv/vda2\n"
        );
        assert!(data.join("b254:0").exists());
        shim.remove();
        assert!(!d.path().join("run/udev").exists());
        // With udev running (its database exists), the shim stays out of the way.
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("b254:0"), "I:1\n").unwrap();
        let shim = UdevShim::new(&data, &blocks);
        shim.refresh();
        shim.remove();
        assert!(!data.join("b254:2").exists());
        assert_eq!(
            std::fs::read_to_string(data.join("b254:0")).unwrap(),
            "I:1\n"
        );
    }

    #[test]
    fn interpreters_are_found() {
        assert_eq!(interpreter(b"#!/bin/sh -e\nx").as_deref(), Some("/bin/sh"));
        assert_eq!(
            interpreter(b"#!  /usr/bin/env bash\n").as_deref(),
            Some("/usr/bin/env")
        );
        assert_eq!(interpreter(b"plain"), None);
        // A real dynamic ELF: the test binary itself.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        if let Some(i) = interpreter(&me[..me.len().min(4096)]) {
            assert!(i.contains("ld-linux"), "{i}");
        }
    }
}
