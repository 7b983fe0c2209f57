//! The operator's verbs on a running system (or in an installer): each is a function over a
//! [`Ctx`], which holds the ZFS and mount boundaries and the root all paths are relative to.

use crate::bootloader::bootfiles::{
    build_menu, compute_env, find_kernel, install_kernel, kernel_of, prune, read_env,
    write_menu_and_env, Installed, Next,
};
use crate::bootloader::esp::{Esp, NoEsp};
use crate::model::inventory::Inventory;
use crate::model::layout::{self, PROP_FACTORY, PROP_LABEL, PROP_LAYOUT, PROP_MEMBER, PROP_SOURCE};
use crate::model::names::{printable, BeName, PoolName};
use crate::model::report::Report;
use crate::model::state::{self, EventKind, Loaded, ResetMode, ResetRequest, State, Trial};
use crate::sys::mounts::Mounter;
use crate::sys::run::Cmd;
use crate::sys::statefile;
use crate::sys::zfs::Zfs;
use crate::verbs::outcome::{
    Activated, ActivatedAs, BootSection, Created, DatasetStep, EspProblem, GoodResult, GrubVars,
    KernelEntry, KernelResult, Listing, MarkedGood, MenuProblem, MenuResult, MenuScript, MenuWrite,
    PoolPrepared, ResetAction, ResetOutcome, ResetSwap, StateView, StatusReport, Synced,
};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// What the verbs work on.
pub struct Ctx<'a> {
    /// `/` normally; a temporary directory in tests.
    pub root: PathBuf,
    /// ZFS.
    pub zfs: &'a dyn Zfs,
    /// Mounts.
    pub mounter: &'a dyn Mounter,
    /// The operator's commands (`upgrade`'s).
    pub runner: &'a dyn crate::sys::run::Runner,
    /// The pool given with `--pool`.
    pub pool: Option<PoolName>,
    /// The ESP, when not found by looking (`--esp`, or known to an installer or a test).
    pub esp: Option<EspChoice>,
    /// What the run has looked up already.
    pub facts: Facts,
}

/// What a run looks up about the system once, when a verb first needs it, and reuses after:
/// the boot report, the pool worked on and the ESP (each costs files read and commands run).
#[derive(Debug, Default)]
pub struct Facts {
    report: std::cell::OnceCell<Option<Report>>,
    pool: std::cell::OnceCell<PoolName>,
    esp: std::cell::OnceCell<Result<Esp, NoEsp>>,
}

/// An ESP named by the caller.
#[derive(Clone, Debug)]
pub enum EspChoice {
    /// Mounted at this directory (`--esp`).
    Mounted(PathBuf),
    /// Known already, serial included.
    Known(Esp),
}

/// One line of `bootenv list` (and one object of `bootenv list --json`, format 1).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ListEntry {
    /// Its name.
    pub name: String,
    /// `org.bootenv:label`.
    pub label: Option<String>,
    /// Its root dataset.
    pub dataset: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The snapshot it was cloned from.
    pub origin: Option<String>,
    /// Bytes used by its root and members.
    pub used: u64,
    /// Running now.
    pub running: bool,
    /// The default at the next boot.
    pub default: bool,
    /// On trial, with this many tries left.
    pub trial_tries_left: Option<u32>,
    /// The last known-good BE.
    pub last_known_good: bool,
    /// Its last trial rolled back.
    pub failed: bool,
    /// Why it cannot boot.
    pub problem: Option<String>,
    /// Why GRUB's menu leaves it out though it could boot (its kernel command line property).
    pub menu_problem: Option<String>,
    /// Datasets factory resets kept aside.
    pub kept: Vec<String>,
    /// Its kernel entry on the ESP; `None` when this machine's ESP is not managed.
    pub esp_kernel: Option<EspKernel>,
}

/// The state of a BE's kernel entry on the ESP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EspKernel {
    /// The entry names the BE's own kernel and initramfs (checked for the running BE and for
    /// BEs mounted now).
    Current,
    /// The entry names other files than the BE holds now: GRUB boots an older kernel or
    /// initramfs.
    Stale,
    /// No entry: the BE is not in the menu.
    Missing,
    /// An entry, not compared with the BE's files (the BE is not mounted).
    Unchecked,
}

/// What rewriting the menu and the environment block did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// Written; what was noted on the way (BEs left out, files pruned).
    Written(Vec<String>),
    /// Nothing written: no ESP, so GRUB is not bootenv's to manage on this machine.
    Unmanaged,
}

impl Refresh {
    /// The line that says GRUB is not managed, and why.
    fn note(&self) -> String {
        format!("GRUB is not managed on this machine: {NoEsp}")
    }

    /// What to tell the operator.
    fn notes(self) -> Vec<String> {
        match self {
            Refresh::Written(notes) => notes,
            Refresh::Unmanaged => vec![Refresh::Unmanaged.note()],
        }
    }
}

/// How `bootenv activate` activates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The default from now on.
    Default,
    /// The next boot only.
    Once,
    /// A trial with this many tries (default: the pool's `org.bootenv:tries`, else 3).
    Trial(Option<u32>),
    /// The default from now on, chosen by walking the history (`rollback`, `rollforward`):
    /// the history is not extended.
    Walk,
}

/// Options of `bootenv create`.
#[derive(Clone, Debug, Default)]
pub struct CreateOpts {
    /// The tree that becomes the boot environment's root.
    pub rootfs: PathBuf,
    /// A tree copied into the config member (over what the rootfs has there).
    pub config: Option<PathBuf>,
    /// `org.bootenv:label`; the name when absent.
    pub label: Option<String>,
    /// Where the config member is mounted inside the boot environment.
    pub config_mountpoint: String,
}

/// Suffix of a boot environment under construction; never a valid [`BeName`], so the agent
/// never boots one.
pub const PARTIAL_SUFFIX: &str = ":partial";

impl Ctx<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The boot report of the running system, if it was booted by bootenv.
    pub fn boot_report(&self) -> Option<Report> {
        self.facts
            .report
            .get_or_init(|| {
                let text =
                    std::fs::read_to_string(self.path(crate::model::paths::BOOT_REPORT)).ok()?;
                Some(Report::parse(&text))
            })
            .clone()
    }

    /// The state record of `pool`, or an empty one when it cannot be read (for display and
    /// menus, which must not fail on it).
    fn state_or_default(&self, pool: &PoolName) -> State {
        self.state_dir(pool)
            .ok()
            .and_then(|d| statefile::load(&d).ok())
            .map(|l| l.state())
            .unwrap_or_default()
    }

    /// The BE running now, when it is in the pool this command works on: the one the agent
    /// booted, else the BE whose root is mounted at `/` (a system booted another way, or a
    /// chroot into a BE, as during `bootenv upgrade` or a package installation).
    pub fn running_be(&self) -> Option<String> {
        let pool = self.pool().ok()?;
        if let Some(r) = self.boot_report() {
            return (r.get("pool") == Some(pool.as_str()))
                .then(|| r.get("be").map(str::to_owned))
                .flatten();
        }
        let ds = self.root_dataset()?;
        let be = ds.strip_prefix(&format!("{}/", layout::root_container(&pool)))?;
        (!be.contains('/')).then(|| be.to_owned())
    }

    /// The ZFS dataset mounted at `/`, from `/proc/self/mountinfo` (`None` when `/` is not
    /// ZFS).
    pub fn root_dataset(&self) -> Option<String> {
        let info = std::fs::read_to_string(self.path("proc/self/mountinfo")).ok()?;
        root_dataset_of(&info)
    }

    /// Where the state dataset of `pool` is mounted: `/run/bootenv/state` for the pool this
    /// system booted from (the agent mounted it there), `/run/bootenv/state-<pool>` for others.
    pub fn state_mount(&self, pool: &PoolName) -> PathBuf {
        let booted = self
            .boot_report()
            .and_then(|r| r.get("pool").map(str::to_owned));
        match booted {
            Some(b) if b != pool.as_str() => {
                self.path(&format!("{}-{pool}", crate::boot::STATE_MOUNT))
            }
            _ => self.path(crate::boot::STATE_MOUNT),
        }
    }

    /// The pool to work on: `--pool`, else the pool this system booted from, else the pool of
    /// the ZFS file system at `/` (a chroot into a BE), else the one imported pool that holds
    /// a bootenv layout.
    pub fn pool(&self) -> anyhow::Result<PoolName> {
        if let Some(p) = self.facts.pool.get() {
            return Ok(p.clone());
        }
        let p = self.find_pool()?;
        Ok(self.facts.pool.get_or_init(|| p).clone())
    }

    fn find_pool(&self) -> anyhow::Result<PoolName> {
        if let Some(p) = &self.pool {
            return Ok(p.clone());
        }
        if let Some(p) = self
            .boot_report()
            .and_then(|r| r.get("pool").and_then(|p| PoolName::new(p).ok()))
        {
            return Ok(p);
        }
        if let Some(p) = self
            .root_dataset()
            .and_then(|ds| ds.split('/').next().and_then(|p| PoolName::new(p).ok()))
        {
            return Ok(p);
        }
        let mut found = Vec::new();
        for p in self.zfs.imported_pools()? {
            let Ok(pool) = PoolName::new(&p) else {
                continue;
            };
            let l = self.zfs.list(&layout::root_container(&pool))?;
            if l.datasets
                .iter()
                .any(|d| d.name == layout::root_container(&pool) && d.prop(PROP_LAYOUT).is_some())
            {
                found.push(pool);
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => bail!("no imported pool holds boot environments; name one with --pool <pool> (and prepare it with `bootenv prepare-pool <pool>`)"),
            _ => bail!(
                "several pools hold boot environments ({}); name one with --pool <pool>",
                found.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The boot environments of the pool.
    pub fn inventory(&self, pool: &PoolName) -> anyhow::Result<Inventory> {
        let bootfs = self.zfs.pool_prop(pool.as_str(), "bootfs")?;
        let listing = self.zfs.list(&layout::root_container(pool))?;
        Ok(Inventory::from_listing(pool, &listing, bootfs))
    }

    /// The state directory, with the state dataset mounted on it.
    pub fn state_dir(&self, pool: &PoolName) -> anyhow::Result<PathBuf> {
        let dir = self.state_mount(pool);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if !self.mounter.is_mountpoint(&dir) {
            let ds = layout::state_dataset(pool);
            let exists = self.zfs.list(&ds)?.datasets.iter().any(|d| d.name == ds);
            if !exists {
                bail!("{ds} does not exist; create it with `bootenv prepare-pool {pool}`");
            }
            self.mounter.mount_zfs(&ds, &dir, false)?;
        }
        Ok(dir)
    }

    /// `bootenv prepare-pool`: creates `<pool>/ROOT` and `<pool>/BOOTENV` where missing.
    pub fn prepare_pool(&self, pool: &PoolName) -> anyhow::Result<PoolPrepared> {
        let root = layout::root_container(pool);
        let st = layout::state_dataset(pool);
        let existing = self.zfs.list_many(&[&root, &st])?;
        let has = |n: &str| existing.datasets.iter().any(|d| d.name == n);
        let root_action = if has(&root) {
            let layout_prop = existing
                .datasets
                .iter()
                .find(|d| d.name == root)
                .and_then(|d| d.prop(PROP_LAYOUT));
            match layout_prop {
                Some(v) if v == layout::LAYOUT_VERSION => "exists",
                Some(v) => crate::refuse!(
                    Refused,
                    "{root} has layout version {v}; this bootenv knows version {}",
                    layout::LAYOUT_VERSION
                ),
                None => {
                    self.zfs
                        .set(&root, &[(PROP_LAYOUT, layout::LAYOUT_VERSION)])?;
                    "marked"
                }
            }
        } else {
            self.zfs.create(
                &root,
                &[
                    ("canmount", "off"),
                    ("mountpoint", "none"),
                    (PROP_LAYOUT, layout::LAYOUT_VERSION),
                ],
            )?;
            "created"
        };
        let st_action = if has(&st) {
            "exists"
        } else {
            self.zfs
                .create(&st, &[("canmount", "noauto"), ("mountpoint", "legacy")])?;
            "created"
        };
        Ok(PoolPrepared {
            pool: pool.to_string(),
            changed: root_action != "exists" || st_action != "exists",
            root: DatasetStep {
                dataset: root,
                action: root_action,
            },
            state: DatasetStep {
                dataset: st,
                action: st_action,
            },
        })
    }

    /// `bootenv create --rootfs`: a new boot environment from a directory tree, with a config
    /// member and a factory snapshot taken before it ever runs.
    pub fn create(&self, name: &BeName, opts: &CreateOpts) -> anyhow::Result<Created> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        if !inv.has_root {
            crate::refuse!(
                NotFound,
                "{} does not exist; run `bootenv prepare-pool {pool}` first",
                layout::root_container(&pool)
            );
        }
        inv.check_free(name, "; pick another name")?;
        if !opts.rootfs.exists() {
            crate::refuse!(
                Invalid,
                "--rootfs {} does not exist (a directory tree, or a tarball in a file or on a device)",
                opts.rootfs.display()
            );
        }
        if let Some(c) = opts.config.as_ref().filter(|c| !c.is_dir()) {
            crate::refuse!(Invalid, "--config {} is not a directory", c.display());
        }
        let final_ds = layout::be_dataset(&pool, name);
        let partial = format!("{final_ds}{PARTIAL_SUFFIX}");
        if !self.zfs.list(&partial)?.datasets.is_empty() {
            crate::refuse!(Exists, "{partial} is left from an interrupted create; remove it with `zfs destroy -r {partial}` and try again");
        }
        let label = opts.label.clone().unwrap_or_else(|| name.to_string());
        if label.is_empty() || label == "-" || label.contains(|c: char| c.is_control()) {
            crate::refuse!(Invalid, "--label must be one line of text");
        }
        let source = format!("rootfs:{}", opts.rootfs.display());
        let result = self.create_partial(&partial, &label, &source, opts);
        if let Err(e) = result {
            log::warn!("create failed; removing the partial boot environment {partial}");
            if let Err(e2) = self.zfs.destroy(&partial, true) {
                log::warn!("{e2:#}");
            }
            return Err(e);
        }
        self.zfs.rename(&partial, &final_ds)?;
        Ok(Created {
            be: name.to_string(),
            dataset: final_ds,
            label: Some(label),
            source,
            factory_snapshot: Some(layout::FACTORY_SNAPSHOT.into()),
            boot: None,
            warnings: Vec::new(),
            changed: true,
        })
    }

    fn create_partial(
        &self,
        partial: &str,
        label: &str,
        source: &str,
        opts: &CreateOpts,
    ) -> anyhow::Result<()> {
        self.zfs.create(
            partial,
            &[
                ("canmount", "noauto"),
                ("mountpoint", "/"),
                (PROP_LABEL, label),
                (PROP_SOURCE, source),
            ],
        )?;
        let config_ds = format!("{partial}/{}", layout::MEMBER_CONFIG);
        self.zfs.create(
            &config_ds,
            &[
                ("canmount", "noauto"),
                ("mountpoint", &opts.config_mountpoint),
                (PROP_MEMBER, layout::MEMBER_CONFIG),
            ],
        )?;
        let mnt = self
            .path(crate::model::paths::MNT)
            .join(partial.replace(['/', ':'], "_"));
        std::fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
        self.mounter.mount_zfs(partial, &mnt, false)?;
        let cfg_mnt = mnt.join(opts.config_mountpoint.trim_start_matches('/'));
        let filled = (|| {
            std::fs::create_dir_all(&cfg_mnt)
                .with_context(|| format!("creating {}", cfg_mnt.display()))?;
            self.mounter.mount_zfs(&config_ds, &cfg_mnt, false)?;
            let copied = copy_tree(&opts.rootfs, &mnt).and_then(|()| match &opts.config {
                Some(c) => copy_tree(c, &cfg_mnt),
                None => Ok(()),
            });
            let unmounted = self.mounter.unmount(&cfg_mnt);
            copied.and(unmounted)
        })();
        let unmounted = self.mounter.unmount(&mnt);
        let _ = std::fs::remove_dir(&mnt);
        filled?;
        unmounted?;
        self.zfs.snapshot(partial, layout::FACTORY_SNAPSHOT, true)?;
        self.zfs
            .set(partial, &[(PROP_FACTORY, layout::FACTORY_SNAPSHOT)])?;
        Ok(())
    }

    /// The ESP, or [`NoEsp`] when there is none to manage.
    pub(crate) fn esp_found(&self) -> anyhow::Result<Result<Esp, NoEsp>> {
        self.esp()
    }

    /// Rewrites the menu and the block from the state as it is (after a BE came or went);
    /// returns what it noted.
    pub(crate) fn refresh_boot(&self, inv: &Inventory, st: &State) -> anyhow::Result<Vec<String>> {
        self.refresh(inv, st, None, false, &Next::Keep)
            .map(Refresh::notes)
    }

    /// The ESP, or [`NoEsp`] when this machine has none to manage.
    fn esp(&self) -> anyhow::Result<Result<Esp, NoEsp>> {
        if let Some(e) = self.facts.esp.get() {
            return Ok(e.clone());
        }
        let e = self.find_esp()?;
        Ok(self.facts.esp.get_or_init(|| e).clone())
    }

    fn find_esp(&self) -> anyhow::Result<Result<Esp, NoEsp>> {
        let explicit = match &self.esp {
            Some(EspChoice::Known(e)) => return Ok(Ok(e.clone())),
            Some(EspChoice::Mounted(d)) => Some(d.as_path()),
            None => None,
        };
        // The ESP on the disks of the pool this command works on; mounted at
        // /run/bootenv/esp for the booted pool, /run/bootenv/esp-<pool> for another.
        // What bootenv's own mount point holds was found on the pool's disks when bootenv
        // mounted it there: the pool's devices are listed only when it is not mounted yet.
        let (disks, mount_at) = match self.pool() {
            Ok(pool) => {
                let booted = self
                    .boot_report()
                    .and_then(|r| r.get("pool").map(str::to_owned));
                let at = match booted {
                    Some(b) if b != pool.as_str() => {
                        self.path(&format!("{}-{pool}", crate::bootloader::esp::MOUNT))
                    }
                    _ => self.path(crate::bootloader::esp::MOUNT),
                };
                let disks = if explicit.is_none()
                    && crate::bootloader::esp::mounted_at(&self.root, self.mounter, &at).is_some()
                {
                    Vec::new()
                } else {
                    self.zfs
                        .vdev_devices(pool.as_str())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|d| crate::bootloader::esp::disk_of(&self.root, Path::new(d)))
                        .collect::<Vec<_>>()
                };
                (disks, at)
            }
            Err(_) => (Vec::new(), self.path(crate::bootloader::esp::MOUNT)),
        };
        match Esp::open(&self.root, self.mounter, explicit, &disks, &mount_at) {
            Ok(e) => Ok(Ok(e)),
            Err(e) if self.esp.is_none() && crate::bootloader::esp::is_no_esp(&e) => Ok(Err(NoEsp)),
            Err(e) => Err(e),
        }
    }

    /// Loads the state record for changing it (a newer format is refused).
    pub(crate) fn load_state(&self, pool: &PoolName) -> anyhow::Result<(PathBuf, State)> {
        let dir = self.state_dir(pool)?;
        match statefile::load(&dir)? {
            Loaded::Newer(v) => crate::refuse!(StateNewer, "the state record has format version {v}, newer than this bootenv; update bootenv in this boot environment"),
            l => Ok((dir, l.state())),
        }
    }

    /// Rewrites the GRUB menu and environment block on the ESP from `st` (and `default`, when
    /// an activation is under way). Without an ESP, does nothing and says so.
    fn refresh(
        &self,
        inv: &Inventory,
        st: &State,
        default: Option<&BeName>,
        restart_trial: bool,
        next: &Next,
    ) -> anyhow::Result<Refresh> {
        let esp = match self.esp()? {
            Ok(e) => e,
            Err(NoEsp) => return Ok(Refresh::Unmanaged),
        };
        let (menu, mut notes) = build_menu(inv, &esp, st, default)?;
        let current = read_env(&esp);
        let known = |n: &str| menu.entries.iter().any(|e| e.be.as_str() == n);
        let env = compute_env(
            &menu.default,
            st.trial.as_ref(),
            restart_trial,
            next,
            &current,
            &known,
        );
        notes.extend(write_menu_and_env(&esp, &menu, &env, &current)?);
        notes.extend(
            prune(&esp, inv)
                .into_iter()
                .map(|r| format!("removed {r} from the ESP")),
        );
        Ok(Refresh::Written(notes))
    }

    /// Makes `be` the default as `st` (already updated) records it, in the order that keeps
    /// every moment bootable: the boot loader first (menu and block: GRUB boots `be` and stops
    /// counting a trial), then the pool's `bootfs`, then the state record. A run cut short
    /// boots the new default, and the next bootenv write completes the rest.
    /// Returns what rewriting the menu noted.
    fn commit_default(
        &self,
        inv: &Inventory,
        st: &State,
        dir: &Path,
        be: &crate::model::inventory::Be,
    ) -> anyhow::Result<Vec<String>> {
        let notes = self
            .refresh(inv, st, Some(&be.name), false, &Next::Keep)?
            .notes();
        self.zfs
            .set_pool_prop(inv.pool.as_str(), "bootfs", &be.dataset)?;
        statefile::store(dir, st)?;
        Ok(notes)
    }

    fn bootable<'i>(
        &self,
        inv: &'i Inventory,
        name: &BeName,
    ) -> anyhow::Result<&'i crate::model::inventory::Be> {
        let be = inv.require(name)?;
        if let Some(why) = &be.unbootable {
            crate::refuse!(CannotBoot, "boot environment {name} cannot boot: {why}");
        }
        Ok(be)
    }

    /// Puts `be`'s own kernel and initramfs on the ESP (copying them when its entry is missing
    /// or names other files), before anything makes it the default, the one-shot, the trial or
    /// the last known-good: GRUB must boot what the BE holds. Returns what was done (`None`
    /// without an ESP to manage: then bootfs alone says what boots). An error changes nothing
    /// and names the fix.
    fn ensure_kernel(
        &self,
        be: &crate::model::inventory::Be,
        now: u64,
    ) -> anyhow::Result<Option<KernelEntry>> {
        let esp = match self.esp()? {
            Ok(e) => e,
            Err(_) => return Ok(None),
        };
        let name = &be.name;
        match self.install_be_kernel(&esp, be, now).and_then(|r| r.transpose()) {
            Ok(Some((dir, how))) => Ok(Some(KernelEntry::installed(name, dir, how))),
            // Mounted where this process cannot see it (a chroot of another BE): the entry
            // on the ESP is all there is to go by.
            Ok(None) => match kernel_of(&esp, name.as_str()) {
                Some(k) => Ok(Some(KernelEntry {
                    be: name.to_string(),
                    result: KernelResult::OnEsp,
                    dir: Some(k.dir),
                    error: None,
                })),
                None => crate::refuse!(CannotBoot, "{name} has no kernel on the ESP and its files cannot be read from here: run `bootenv sync-boot {name}` on the running system first"),
            },
            Err(e) => Err(e.context(format!(
                "nothing was changed: GRUB would not boot {name}'s own kernel and initramfs (free space on the ESP, then `bootenv sync-boot {name}`)"
            ))),
        }
    }

    /// Puts `be`'s own kernel and initramfs on `esp` (see [`install_kernel`]), reading them
    /// from where the BE is (mounted read-only for the purpose when it is not). The outer error:
    /// the BE could not be reached; `Ok(None)`: its files cannot be read from here (it is
    /// mounted where this process cannot see it: the system's root, seen from a chroot of
    /// another BE); the inner result: what installing did.
    #[allow(clippy::type_complexity)]
    fn install_be_kernel(
        &self,
        esp: &Esp,
        be: &crate::model::inventory::Be,
        now: u64,
    ) -> anyhow::Result<Option<anyhow::Result<(String, Installed)>>> {
        let (tree, unmount) = match self.be_tree(be) {
            Ok(t) => t,
            Err(e) if is_busy(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let result = find_kernel(&tree).and_then(|k| install_kernel(esp, &be.name, &k, now));
        if let Some(d) = unmount {
            self.mounter.unmount(&d)?;
            let _ = std::fs::remove_dir(&d);
        }
        Ok(Some(result))
    }

    /// `bootenv activate`: makes a boot environment the default, or picks it for the next boot
    /// only, or starts a trial of it. Its kernel and initramfs are put on the ESP first; when
    /// they cannot be, nothing changes.
    pub fn activate(&self, name: &BeName, how: Activation, now: u64) -> anyhow::Result<Activated> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let be = self.bootable(&inv, name)?;
        let (dir, mut st) = self.load_state(&pool)?;
        let kernel = self.ensure_kernel(be, now)?;
        let mut done = Activated {
            be: name.to_string(),
            dataset: be.dataset.clone(),
            activated_as: ActivatedAs::Default,
            tries: None,
            changed: true,
            cancelled_trial: None,
            kernel,
            notes: Vec::new(),
        };
        match how {
            Activation::Default | Activation::Walk => {
                // Already the default, with nothing under way: nothing to record. The menu and
                // the block are still rewritten (a repeated activate repairs them).
                let already = inv.bootfs_be().as_ref() == Some(name)
                    && st.trial.is_none()
                    && st.history.last().map(String::as_str) == Some(name.as_str());
                if already {
                    done.changed = false;
                    done.notes = self
                        .refresh(&inv, &st, Some(name), false, &Next::Keep)?
                        .notes();
                    return Ok(done);
                }
                done.cancelled_trial = st.trial.take().map(|t| t.be);
                if how == Activation::Default {
                    st.became_default(name.as_str());
                }
                st.push(
                    now,
                    EventKind::Activated {
                        be: name.to_string(),
                        once: false,
                    },
                );
                done.notes = self.commit_default(&inv, &st, &dir, be)?;
            }
            Activation::Once => {
                done.activated_as = ActivatedAs::Once;
                st.push(
                    now,
                    EventKind::Activated {
                        be: name.to_string(),
                        once: true,
                    },
                );
                done.notes = match self.refresh(&inv, &st, None, false, &Next::Set(name.clone()))? {
                    Refresh::Written(notes) => notes,
                    Refresh::Unmanaged => {
                        crate::refuse!(
                            NoEsp,
                            "a one-shot boot needs GRUB: {}",
                            Refresh::Unmanaged.note()
                        )
                    }
                };
                statefile::store(&dir, &st)?;
            }
            Activation::Trial(tries) => {
                done.activated_as = ActivatedAs::Trial;
                let tries = tries
                    .or_else(|| inv.setting(crate::model::layout::PROP_TRIES))
                    .unwrap_or(crate::bootloader::grub::DEFAULT_TRIES);
                if !(1..=crate::bootloader::grub::MAX_TRIES).contains(&tries) {
                    crate::refuse!(
                        Invalid,
                        "a trial needs 1 to {} tries, not {tries}",
                        crate::bootloader::grub::MAX_TRIES
                    );
                }
                if inv.bootfs_be().as_ref() == Some(name) && st.trial.is_none() {
                    crate::refuse!(
                        Refused,
                        "{name} is the default already: there is nothing to try"
                    );
                }
                done.tries = Some(tries);
                // The request first: an interrupted activation resumes on the next write.
                st.trial = Some(Trial {
                    be: name.to_string(),
                    tries,
                });
                st.push(
                    now,
                    EventKind::TrialStarted {
                        be: name.to_string(),
                        tries,
                    },
                );
                statefile::store(&dir, &st)?;
                done.notes = match self.refresh(&inv, &st, None, true, &Next::Keep)? {
                    Refresh::Written(notes) => notes,
                    Refresh::Unmanaged => crate::refuse!(
                        NoEsp,
                        "a trial needs GRUB to count the boots: {}",
                        Refresh::Unmanaged.note()
                    ),
                };
            }
        }
        Ok(done)
    }

    /// `bootenv mark-good`: the running BE (or `name`) booted fine. A BE on trial becomes the
    /// default and the last known-good; the default becomes the last known-good.
    pub fn mark_good(&self, name: Option<&BeName>, now: u64) -> anyhow::Result<MarkedGood> {
        let pool = self.pool()?;
        let name = match name {
            Some(n) => n.clone(),
            None => {
                let Some(r) = self.boot_report() else {
                    crate::refuse!(NotBootedByBootenv, "this system was not booted by bootenv (no /{}); name the boot environment: `bootenv mark-good <name>`", crate::model::paths::BOOT_REPORT);
                };
                BeName::new(r.get("be").unwrap_or(""))?
            }
        };
        let inv = self.inventory(&pool)?;
        let be = self.bootable(&inv, &name)?;
        let (dir, mut st) = self.load_state(&pool)?;
        let is_trial = st.trial.as_ref().is_some_and(|t| t.be == name.as_str());
        let is_default = inv.bootfs_be().as_ref() == Some(&name);
        let changed = st.last_good.as_deref() != Some(name.as_str())
            || st.history.last().map(String::as_str) != Some(name.as_str());
        let becomes_good = is_trial || ((is_default || inv.bootfs.is_none()) && changed);
        let mut done = MarkedGood {
            be: name.to_string(),
            result: GoodResult::NotDefault,
            changed: false,
            kernel: None,
            notes: Vec::new(),
        };
        if becomes_good {
            done.kernel = self.ensure_kernel(be, now)?;
        }
        if is_trial {
            st.trial = None;
            st.last_good = Some(name.to_string());
            st.became_default(name.as_str());
            st.push(
                now,
                EventKind::TrialCommitted {
                    be: name.to_string(),
                },
            );
            // The boot loader must stop counting first: commit_default writes it first.
            done.notes = self.commit_default(&inv, &st, &dir, be)?;
            done.result = GoodResult::TrialCommitted;
            done.changed = true;
        } else if is_default || inv.bootfs.is_none() {
            st.last_good = Some(name.to_string());
            st.became_default(name.as_str());
            if changed {
                st.push(
                    now,
                    EventKind::MarkedGood {
                        be: name.to_string(),
                    },
                );
            }
            done.notes = self.refresh(&inv, &st, None, false, &Next::Keep)?.notes();
            if changed {
                statefile::store(&dir, &st)?;
            }
            done.result = GoodResult::MarkedGood;
            done.changed = changed;
        } else {
            done.notes = self.refresh(&inv, &st, None, false, &Next::Keep)?.notes();
        }
        Ok(done)
    }

    /// Where the root of `be` can be read: `/` when it is running, an existing mount, or a
    /// read-only mount made for the purpose (returned for unmounting).
    fn be_tree(
        &self,
        be: &crate::model::inventory::Be,
    ) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
        let mounts = self.mounter.table(&self.root);
        if let Some(t) = self.tree_of(be, self.running_be().as_deref(), &mounts) {
            return Ok((t, None));
        }
        let dir = self
            .path(crate::model::paths::MNT)
            .join(format!("{}.ro", be.name));
        std::fs::create_dir_all(&dir)?;
        self.mounter.mount_zfs(&be.dataset, &dir, true)?;
        Ok((dir.clone(), Some(dir)))
    }

    /// Where `be`'s root can be read without mounting it: `/` when it is `running`, else where
    /// `mounts` (the mount table) has it.
    fn tree_of(
        &self,
        be: &crate::model::inventory::Be,
        running: Option<&str>,
        mounts: &[crate::sys::mounts::MountEntry],
    ) -> Option<PathBuf> {
        if running == Some(be.name.as_str()) {
            return Some(self.root.clone());
        }
        mounts
            .iter()
            .find(|m| m.source == be.dataset && m.fstype == "zfs")
            .map(|m| self.root.join(m.target.trim_start_matches('/')))
    }

    /// `bootenv sync-boot`: copies kernels of BEs (default: all that can boot) to the ESP and
    /// rewrites the menu and the block.
    pub fn sync_boot(&self, names: &[BeName], now: u64) -> anyhow::Result<Synced> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let esp = self.esp()??;
        let targets: Vec<&crate::model::inventory::Be> = if names.is_empty() {
            inv.bootable().collect()
        } else {
            names
                .iter()
                .map(|n| self.bootable(&inv, n))
                .collect::<anyhow::Result<_>>()?
        };
        let mut kernels = Vec::new();
        for be in targets {
            kernels.push(match self.install_be_kernel(&esp, be, now)? {
                Some(Ok((dir, how))) => KernelEntry::installed(&be.name, dir, how),
                // Mounted where this process cannot see it: the system's root, seen from a
                // chroot of another BE (the kernel hook inside `bootenv upgrade`).
                None => KernelEntry {
                    be: be.name.to_string(),
                    result: KernelResult::LeftAsIs,
                    dir: None,
                    error: None,
                },
                Some(Err(e)) => KernelEntry {
                    be: be.name.to_string(),
                    result: KernelResult::Failed,
                    dir: None,
                    error: Some(format!("{e:#}")),
                },
            });
        }
        let failures: Vec<String> = kernels
            .iter()
            .filter(|k| k.result == KernelResult::Failed)
            .map(|k| k.be.clone())
            .collect();
        let mut done = Synced {
            kernels,
            notes: Vec::new(),
            menu: MenuWrite {
                result: MenuResult::LeftToRunningSystem,
                path: None,
                error: None,
            },
        };
        // The state record mounted where this process cannot see it: a chroot of a new BE (the
        // kernel hook inside `bootenv upgrade`). The menu and the block belong to the running
        // system then; `bootenv upgrade` rewrites them once the command is done.
        let left_to_running = matches!(self.state_dir(&pool), Err(e) if is_busy(&e));
        if !left_to_running {
            let st = self.state_or_default(&pool);
            match self
                .refresh(&inv, &st, None, false, &Next::Keep)
                .map(Refresh::notes)
            {
                Ok(notes) => {
                    done.notes = notes;
                    done.menu = MenuWrite {
                        result: MenuResult::Written,
                        path: Some(
                            esp.bootenv_dir()
                                .join(crate::bootloader::bootfiles::MENU)
                                .display()
                                .to_string(),
                        ),
                        error: None,
                    };
                }
                // No BE has a kernel on the ESP yet: the menu stays as it was.
                Err(e) if !failures.is_empty() => {
                    done.menu = MenuWrite {
                        result: MenuResult::NotWritten,
                        path: None,
                        error: Some(format!("{e:#}")),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if !failures.is_empty() {
            return Err(
                anyhow::Error::new(KernelsMissing(failures.clone())).context(format!(
                    "{done}kernels missing for: {}",
                    failures.join(", ")
                )),
            );
        }
        Ok(done)
    }

    /// `bootenv factory-reset`: schedules a factory reset of a BE (default: the running one) for
    /// its next boot, or cancels one that has not started.
    pub fn factory_reset(
        &self,
        mode: Option<ResetMode>,
        erase: bool,
        be: Option<&BeName>,
        cancel: bool,
        now: u64,
    ) -> anyhow::Result<ResetOutcome> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let (dir, mut st) = self.load_state(&pool)?;
        let started = |r: &ResetRequest| -> anyhow::Result<bool> {
            let all = self.zfs.list(pool.as_str())?.datasets;
            Ok(all.iter().any(|d| {
                d.name.ends_with(&format!(".reset-{}", r.id))
                    || d.name.ends_with(&format!(".new-{}", r.id))
            }))
        };
        let mut done = ResetOutcome {
            action: ResetAction::NothingPending,
            be: None,
            mode: None,
            erase,
            id: None,
            replaced: None,
            swaps: Vec::new(),
            changed: false,
            mode_text: "",
        };
        if cancel {
            let Some(r) = st.reset.clone() else {
                return Ok(done);
            };
            if started(&r)? {
                crate::refuse!(Refused, "the factory reset of {} (id {}) has started; it completes at the next boot and cannot be cancelled halfway", r.be, r.id);
            }
            st.reset = None;
            st.push(
                now,
                EventKind::ResetDropped {
                    request: r.clone(),
                    reason: "cancelled by the operator".into(),
                },
            );
            statefile::store(&dir, &st)?;
            done.action = ResetAction::Cancelled;
            done.be = Some(r.be);
            done.changed = true;
            return Ok(done);
        }
        let Some(mode) = mode else {
            crate::refuse!(Usage, "say how much to reset: --mode config or --mode full");
        };
        if erase && mode != ResetMode::Full {
            crate::refuse!(
                Invalid,
                "--erase goes with --mode full: it destroys the previous data instead of keeping it"
            );
        }
        let be = match be {
            Some(b) => b.clone(),
            None => {
                let Some(r) = self.running_be() else {
                    crate::refuse!(Usage, "name the boot environment to reset with --be <name>");
                };
                BeName::new(&r)?
            }
        };
        let b = self.bootable(&inv, &be)?;
        if b.factory.is_none() {
            crate::refuse!(
                Refused,
                "{be} has no factory snapshot ({} is not set): it cannot be reset",
                crate::model::layout::PROP_FACTORY
            );
        }
        if let Some(r) = &st.reset {
            if started(r)? {
                crate::refuse!(Refused, "the factory reset of {} (id {}) has started and completes at its next boot; ask again after that", r.be, r.id);
            }
            done.replaced = Some(r.be.clone());
        }
        let id = crate::boot::reset::new_id(self.zfs, pool.as_str(), now)?;
        let request = ResetRequest {
            be: be.to_string(),
            mode,
            erase,
            id: id.clone(),
            origin: "cli".into(),
        };
        let swaps = crate::boot::reset::swaps(self.zfs, &inv, &request)?;
        st.reset = Some(request.clone());
        st.push(
            now,
            EventKind::ResetRequested {
                request: request.clone(),
            },
        );
        statefile::store(&dir, &st)?;
        done.action = ResetAction::Scheduled;
        done.be = Some(be.to_string());
        done.mode = Some(match mode {
            ResetMode::Config => "config",
            ResetMode::Full => "full",
        });
        done.mode_text = mode_name(&request);
        done.swaps = swaps
            .iter()
            .map(|s| ResetSwap {
                dataset: s.target.clone(),
                from_snapshot: match &s.source {
                    crate::boot::reset::Source::Snapshot(snap) => Some(snap.clone()),
                    crate::boot::reset::Source::Empty => None,
                },
                kept_as: (!s.erase).then(|| crate::boot::reset::kept_name(&s.target, &id)),
            })
            .collect();
        done.id = Some(id);
        done.changed = true;
        Ok(done)
    }

    /// `bootenv grub-menu`: the menu script, for /etc/grub.d or for inspection.
    pub fn grub_menu(&self) -> anyhow::Result<MenuScript> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let esp = self.esp()??;
        let st = self.state_or_default(&pool);
        let (menu, notes) = build_menu(&inv, &esp, &st, None)?;
        Ok(MenuScript {
            script: menu.render(),
            notes,
        })
    }

    /// The facts `bootenv list` shows, one entry per BE, newest first.
    pub fn list_entries(&self) -> anyhow::Result<(PoolName, Vec<ListEntry>, Vec<String>)> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let booted = self.running_be();
        let st = self.state_or_default(&pool);
        let tries_left = self
            .esp()
            .ok()
            .and_then(|e| e.ok())
            .and_then(|esp| read_env(&esp).ok().flatten())
            .and_then(|b| {
                Some((
                    b.get("bootenv_trial")?.to_owned(),
                    b.get("bootenv_tries")?.parse::<u32>().ok()?,
                ))
            });
        // A BE is "failed" when its last trial rolled back and it was not committed since.
        let mut failed: Vec<String> = Vec::new();
        for e in &st.events {
            match &e.kind {
                EventKind::Rollback { failed: f, .. } => failed.push(f.clone()),
                EventKind::TrialCommitted { be } | EventKind::TrialStarted { be, .. } => {
                    failed.retain(|f| f != be)
                }
                EventKind::Activated { be, once: false } => failed.retain(|f| f != be),
                _ => {}
            }
        }
        let esp = self.esp().ok().and_then(|e| e.ok());
        let mounts = self.mounter.table(&self.root);
        let mut out = Vec::new();
        for be in inv.bes.iter().rev() {
            let name = be.name.to_string();
            let esp_kernel = esp
                .as_ref()
                .map(|esp| self.esp_kernel(esp, be, booted.as_deref(), &mounts));
            let trial = st
                .trial
                .as_ref()
                .filter(|t| t.be == name)
                .map(|t| match &tries_left {
                    Some((tb, n)) if *tb == name => *n,
                    _ => t.tries,
                });
            out.push(ListEntry {
                name: name.clone(),
                label: be.label.clone(),
                dataset: be.dataset.clone(),
                created: be.creation,
                origin: be.origin.clone(),
                used: be.used,
                running: booted.as_deref() == Some(name.as_str()),
                default: inv.bootfs.as_deref() == Some(be.dataset.as_str()),
                trial_tries_left: trial,
                last_known_good: st.last_good.as_deref() == Some(name.as_str()),
                failed: failed.contains(&name),
                problem: be.unbootable.clone(),
                menu_problem: crate::bootloader::bootfiles::menu_problem(be),
                kept: be.kept.clone(),
                esp_kernel,
            });
        }
        Ok((pool, out, inv.ignored))
    }

    /// Whether `be`'s kernel entry on `esp` names its own kernel and initramfs: compared for
    /// the running BE and for a BE mounted now (reading its files costs a mount otherwise).
    fn esp_kernel(
        &self,
        esp: &Esp,
        be: &crate::model::inventory::Be,
        running: Option<&str>,
        mounts: &[crate::sys::mounts::MountEntry],
    ) -> EspKernel {
        let Some(entry) = kernel_of(esp, be.name.as_str()) else {
            return EspKernel::Missing;
        };
        let Some(tree) = self.tree_of(be, running, mounts) else {
            return EspKernel::Unchecked;
        };
        match find_kernel(&tree).and_then(|k| crate::bootloader::bootfiles::kernel_hash(&k)) {
            Ok(h) if h == entry.hash => EspKernel::Current,
            Ok(_) => EspKernel::Stale,
            Err(_) => EspKernel::Unchecked,
        }
    }

    /// `bootenv list`.
    pub fn list(&self) -> anyhow::Result<Listing> {
        let (pool, entries, ignored) = self.list_entries()?;
        Ok(Listing {
            pool: pool.to_string(),
            boot_environments: entries,
            ignored,
        })
    }
}

impl std::fmt::Display for Listing {
    /// A table of boot environments.
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (entries, ignored) = (&self.boot_environments, &self.ignored);
        writeln!(
            out,
            "{:<16} {:<12} {:<6} {:>8}  {:<16} {:<24} STATE",
            "NAME", "LABEL", "FLAGS", "USED", "CREATED", "ORIGIN"
        )?;
        for e in entries {
            let mut flags = String::new();
            for (on, c) in [
                (e.running, 'N'),
                (e.default, 'R'),
                (e.trial_tries_left.is_some(), 'T'),
                (e.last_known_good, 'G'),
                (e.failed, 'F'),
            ] {
                if on {
                    flags.push(c);
                }
            }
            let mut state = match (&e.problem, e.trial_tries_left) {
                (Some(w), _) => format!("cannot boot: {w}"),
                (None, _) if e.menu_problem.is_some() => format!(
                    "left out of the GRUB menu: {}",
                    e.menu_problem.as_deref().unwrap_or_default()
                ),
                (None, Some(n)) => format!("trial, {n} tries left"),
                (None, None) if e.failed => "its trial failed".to_string(),
                (None, None) => "ok".to_string(),
            };
            match e.esp_kernel {
                Some(EspKernel::Stale) => state.push_str(&format!(
                    "; STALE kernel on the ESP (GRUB boots older files: `bootenv sync-boot {}`)",
                    e.name
                )),
                Some(EspKernel::Missing) if e.problem.is_none() => state.push_str(&format!(
                    "; no kernel on the ESP, not in the menu (`bootenv sync-boot {}`)",
                    e.name
                )),
                _ => {}
            }
            if !e.kept.is_empty() {
                state.push_str(&format!("; {} kept by resets", e.kept.len()));
            }
            let origin = e
                .origin
                .as_deref()
                .map(|o| o.rsplit('/').next().unwrap_or(o))
                .unwrap_or("-");
            writeln!(
                out,
                "{:<16} {:<12} {:<6} {:>8}  {:<16} {:<24} {}",
                e.name,
                printable(e.label.as_deref().unwrap_or("-")),
                if flags.is_empty() { "-".into() } else { flags },
                human_bytes(e.used),
                crate::boot::reset::id_from_time(e.created)
                    .get(..13)
                    .map_or(String::new(), |d| format!(
                        "{}-{}-{} {}:{}",
                        &d[..4],
                        &d[4..6],
                        &d[6..8],
                        &d[9..11],
                        &d[11..13]
                    )),
                printable(origin),
                state
            )?;
        }
        for i in ignored {
            writeln!(out, "note: {i}")?;
        }
        for e in entries {
            for k in &e.kept {
                writeln!(out, "kept by a factory reset of {}: {k}", e.name)?;
            }
        }
        writeln!(out, "flags: N running now, R default at next boot, T on trial, G last known-good, F its trial failed")
    }
}

impl Ctx<'_> {
    /// `bootenv status`: how this system booted, GRUB's variables, the ESP and the state
    /// record.
    pub fn status(&self) -> anyhow::Result<StatusReport> {
        let Some(r) = self.boot_report() else {
            crate::refuse!(
                NotBootedByBootenv,
                "this system was not booted by the bootenv agent (no /{})",
                crate::model::paths::BOOT_REPORT
            );
        };
        let keys = r
            .map()
            .into_iter()
            .filter(|(k, _)| *k != "warning")
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let warnings = r.all("warning").into_iter().map(str::to_owned).collect();
        let (mut grub, mut grub_problem) = (None, None);
        match self.esp() {
            Ok(Ok(esp)) => match read_env(&esp) {
                Ok(Some(b)) => {
                    let v = |k: &str| b.get(k).filter(|v| !v.is_empty()).map(str::to_owned);
                    grub = Some(GrubVars {
                        default: v("bootenv_default"),
                        next: v("bootenv_next"),
                        trial: v("bootenv_trial"),
                        tries: v("bootenv_tries"),
                    });
                }
                Ok(None) => grub_problem = Some("no environment block on the ESP yet".into()),
                Err(why) => {
                    grub_problem = Some(format!(
                        "environment block damaged ({why}); the next bootenv write repairs it"
                    ))
                }
            },
            Ok(Err(why)) => grub_problem = Some(format!("not managed ({why})")),
            Err(e) => grub_problem = Some(format!("{e:#}")),
        }
        let (entries, ignored) = self
            .list_entries()
            .map(|(_, e, i)| (e, i))
            .unwrap_or_default();
        let menu_problems = entries
            .iter()
            .filter(|e| e.problem.is_none())
            .filter_map(|e| {
                Some(MenuProblem {
                    be: e.name.clone(),
                    why: e.menu_problem.clone()?,
                })
            })
            .collect();
        let esp_problems = esp_problems(&entries)
            .into_iter()
            .map(|(be, kernel)| EspProblem { be, kernel })
            .collect();
        let (mut state, mut state_problem) = (None, None);
        if let Some(pool) = r.get("pool").and_then(|p| PoolName::new(p).ok()) {
            match self.state_dir(&pool).and_then(|d| statefile::load(&d)) {
                Ok(l) => {
                    if let Loaded::Corrupt(why) = &l {
                        state_problem = Some(format!("unreadable ({why})"));
                    }
                    state = Some(l.state());
                }
                Err(e) => state_problem = Some(format!("{e:#}")),
            }
        }
        let be = r.get("be").unwrap_or("?");
        let trial_committed = r.get("trial-tries-left").is_some()
            && state.as_ref().is_some_and(|st: &State| {
                !matches!(&st.trial, Some(t) if t.be.as_str() == be)
                    && st.last_good.as_deref() == Some(be)
            });
        Ok(StatusReport {
            boot: BootSection { keys, warnings },
            grub,
            grub_problem,
            esp_problems,
            menu_problems,
            ignored,
            trial_committed,
            state: state.map(StateView::new),
            state_problem,
        })
    }
}

/// The source of the ZFS file system mounted at `/` in a mountinfo text (the last one mounted
/// there wins, as it is the one visible).
pub fn root_dataset_of(mountinfo: &str) -> Option<String> {
    let mut found = None;
    for line in mountinfo.lines() {
        let parsed = line.split_once(" - ").and_then(|(left, right)| {
            let mut r = right.split_whitespace();
            Some((left.split_whitespace().nth(4)?, r.next()?, r.next()?))
        });
        if let Some(("/", fstype, source)) = parsed {
            found = (fstype == "zfs").then(|| source.to_owned());
        }
    }
    found
}

/// `sync-boot` found no kernel in these BEs (the menu was still written for the others).
#[derive(Debug)]
pub struct KernelsMissing(pub Vec<String>);

impl std::fmt::Display for KernelsMissing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no kernel in {}", self.0.join(", "))
    }
}

impl std::error::Error for KernelsMissing {}

/// The BEs of `entries` whose kernel entry on the ESP is stale or missing (bootable ones only),
/// for `status`.
fn esp_problems(entries: &[ListEntry]) -> Vec<(String, EspKernel)> {
    entries
        .iter()
        .filter(|e| e.problem.is_none() && e.menu_problem.is_none())
        .filter_map(|e| match e.esp_kernel {
            Some(k @ (EspKernel::Stale | EspKernel::Missing)) => Some((e.name.clone(), k)),
            _ => None,
        })
        .collect()
}

/// An event in a sentence.
pub(crate) fn describe(k: &EventKind) -> String {
    match k {
        EventKind::Fallback {
            requested,
            booted,
            reason,
        } => {
            format!("fallback: booted {booted} instead of {requested}: {reason}")
        }
        EventKind::MarkedGood { be } => format!("{be} marked good"),
        EventKind::TrialStarted { be, tries } => {
            format!("trial of {be} started with {tries} tries")
        }
        EventKind::TrialCommitted { be } => format!("trial of {be} committed: it is the default"),
        EventKind::Rollback { failed, booted } => {
            format!("ROLLBACK: the trial of {failed} used up its tries without being marked good; {booted} booted instead")
        }
        EventKind::ResetRequested { request: r } => format!(
            "factory reset ({}) of {} requested ({})",
            mode_name(r),
            r.be,
            r.origin
        ),
        EventKind::ResetDone {
            request: r,
            kept,
            erased,
        } => {
            let mut s = format!("factory reset ({}) of {} done", mode_name(r), r.be);
            if !kept.is_empty() {
                s.push_str(&format!("; kept: {}", kept.join(", ")));
            }
            if !erased.is_empty() {
                s.push_str(&format!("; ERASED: {}", erased.join(", ")));
            }
            s
        }
        EventKind::ResetDropped { request: r, reason } => format!(
            "factory reset ({}) of {} dropped: {reason}",
            mode_name(r),
            r.be
        ),
        EventKind::Destroyed { be } => format!("{be} destroyed"),
        EventKind::Renamed { from, to } => format!("{from} renamed to {to}"),
        EventKind::Activated { be, once: false } => format!("{be} made the default"),
        EventKind::Activated { be, once: true } => format!("{be} picked for the next boot only"),
    }
}

/// A reset's mode in words.
pub(crate) fn mode_name(r: &state::ResetRequest) -> &'static str {
    match (r.mode, r.erase) {
        (state::ResetMode::Config, _) => "configuration",
        (state::ResetMode::Full, false) => "configuration and data",
        (state::ResetMode::Full, true) => "configuration and data, previous data erased",
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// Copies the contents of `src` (a directory, or a tarball) into `dst`, keeping owners, modes,
/// links and devices (`cp -a`, `tar -xp`).
fn copy_tree(src: &Path, dst: &Path) -> anyhow::Result<()> {
    if !src.is_dir() {
        Cmd::new("tar")
            .args([
                "-xpf",
                &src.display().to_string(),
                "-C",
                &dst.display().to_string(),
            ])
            .run()?;
        return Ok(());
    }
    let from = format!("{}/.", src.display());
    Cmd::new("cp")
        .args(["-a", &from])
        .arg(dst.display().to_string())
        .run()?;
    Ok(())
}

#[cfg(test)]
mod root_dataset_tests {
    #[test]
    fn the_zfs_file_system_at_root_is_found_in_mountinfo() {
        let info = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
                    40 22 0:35 / /run rw - tmpfs tmpfs rw\n\
                    90 22 0:50 / / rw,noatime - zfs deb/ROOT/deb1 rw,xattr\n\
                    91 90 0:51 / /etc/config rw - zfs deb/ROOT/deb1/config rw\n";
        assert_eq!(
            super::root_dataset_of(info).as_deref(),
            Some("deb/ROOT/deb1")
        );
        assert_eq!(
            super::root_dataset_of("22 1 0:21 / / rw - ext4 /dev/vda1 rw\n"),
            None
        );
        assert_eq!(super::root_dataset_of("garbage\n"), None);
    }
}

/// Whether `e` comes from a mount refused because the file system is mounted already (EBUSY).
fn is_busy(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<nix::errno::Errno>() == Some(&nix::errno::Errno::EBUSY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mounts::FakeMounter;
    use crate::sys::zfs::fake::FakeZfs;

    fn setup() -> (tempfile::TempDir, FakeZfs) {
        let d = tempfile::tempdir().unwrap();
        let z = FakeZfs::new();
        z.add_pool("tank");
        z.import("tank").unwrap().unwrap();
        (d, z)
    }

    fn ctx<'a>(d: &Path, z: &'a FakeZfs, m: &'a FakeMounter) -> Ctx<'a> {
        Ctx {
            root: d.into(),
            zfs: z,
            mounter: m,
            runner: &crate::sys::run::NoRunner,
            pool: Some(PoolName::new("tank").unwrap()),
            esp: None,
            facts: Default::default(),
        }
    }

    #[test]
    fn prepare_pool_is_idempotent() {
        let (d, z) = setup();
        let m = FakeMounter::new();
        let c = ctx(d.path(), &z, &m);
        c.prepare_pool(&PoolName::new("tank").unwrap()).unwrap();
        let before = z.changes();
        let out = c.prepare_pool(&PoolName::new("tank").unwrap()).unwrap();
        assert!(!out.changed);
        assert!(out.to_string().contains("tank/ROOT exists"));
        assert_eq!(z.changes(), before);
        assert_eq!(
            z.get("tank/ROOT", "org.bootenv:layout").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn create_makes_root_config_and_factory_snapshot_then_commits_by_rename() {
        let (d, z) = setup();
        let m = FakeMounter::new();
        let c = ctx(d.path(), &z, &m);
        c.prepare_pool(&PoolName::new("tank").unwrap()).unwrap();
        let rootfs = d.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc/config")).unwrap();
        std::fs::write(rootfs.join("etc/config/app.conf"), "x=1\n").unwrap();
        let opts = CreateOpts {
            rootfs,
            config_mountpoint: "/etc/config".into(),
            label: Some("1.0".into()),
            ..Default::default()
        };
        c.create(&BeName::new("v1").unwrap(), &opts).unwrap();
        assert_eq!(z.get("tank/ROOT/v1", "canmount").as_deref(), Some("noauto"));
        assert_eq!(
            z.get("tank/ROOT/v1", "org.bootenv:label").as_deref(),
            Some("1.0")
        );
        assert_eq!(
            z.get("tank/ROOT/v1/config", "mountpoint").as_deref(),
            Some("/etc/config")
        );
        assert!(
            z.has_snapshot("tank/ROOT/v1@factory") && z.has_snapshot("tank/ROOT/v1/config@factory")
        );
        let ch = z.changes();
        assert!(
            ch.last()
                .unwrap()
                .starts_with("zfs rename tank/ROOT/v1:partial"),
            "{ch:?}"
        );
        assert!(m.mounted().is_empty(), "everything is unmounted again");
        let inv = c.inventory(&PoolName::new("tank").unwrap()).unwrap();
        assert_eq!(inv.bes.len(), 1);
        assert!(c
            .create(&BeName::new("v1").unwrap(), &opts)
            .unwrap_err()
            .to_string()
            .contains("exists already"));
    }

    #[test]
    fn a_failed_create_leaves_nothing_behind() {
        let (d, z) = setup();
        let m = FakeMounter::new();
        let c = ctx(d.path(), &z, &m);
        c.prepare_pool(&PoolName::new("tank").unwrap()).unwrap();
        let rootfs = d.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let opts = CreateOpts {
            rootfs,
            config: Some(d.path().join("no-such-dir")),
            config_mountpoint: "/etc/config".into(),
            ..Default::default()
        };
        assert!(c.create(&BeName::new("v1").unwrap(), &opts).is_err());
        let opts = CreateOpts {
            config: None,
            ..opts
        };
        // A failure inside: the config mount fails.
        let m2 = FakeMounter::new().failing("tank/ROOT/v1:partial/config", "boom");
        let c2 = ctx(d.path(), &z, &m2);
        let e = c2.create(&BeName::new("v1").unwrap(), &opts).unwrap_err();
        assert!(format!("{e:#}").contains("boom"));
        assert!(z.list("tank/ROOT/v1:partial").unwrap().datasets.is_empty());
        assert!(m2.mounted().is_empty());
    }

    #[test]
    fn activate_and_mark_good_without_an_esp() {
        let (d, z) = setup();
        let m = FakeMounter::new();
        let c = ctx(d.path(), &z, &m);
        c.prepare_pool(&PoolName::new("tank").unwrap()).unwrap();
        z.add_fs(
            "tank/ROOT/v1",
            &[("canmount", "noauto"), ("mountpoint", "/")],
        );
        z.add_fs("tank/ROOT/off", &[("canmount", "off"), ("mountpoint", "/")]);
        let out = c
            .activate(&BeName::new("v1").unwrap(), Activation::Default, 1)
            .unwrap();
        assert!(
            out.notes
                .iter()
                .any(|n| n.contains("GRUB is not managed on this machine")),
            "{out}"
        );
        assert!(out.changed && out.kernel.is_none());
        // Again: nothing to record; reported unchanged.
        let again = c
            .activate(&BeName::new("v1").unwrap(), Activation::Default, 2)
            .unwrap();
        assert!(!again.changed, "{again}");
        assert!(again.to_string().contains("unchanged"), "{again}");
        assert_eq!(
            z.pool_prop("tank", "bootfs").unwrap().as_deref(),
            Some("tank/ROOT/v1")
        );
        assert!(c
            .activate(&BeName::new("off").unwrap(), Activation::Default, 1)
            .is_err());
        let kind = crate::verbs::outcome::kind_of;
        use crate::model::failure::ErrorKind;
        let e = c
            .activate(&BeName::new("nosuch").unwrap(), Activation::Default, 1)
            .unwrap_err();
        assert!(e.to_string().contains("bootenv list"));
        assert_eq!(kind(&e), ErrorKind::NotFound);
        let e = c
            .activate(&BeName::new("off").unwrap(), Activation::Default, 1)
            .unwrap_err();
        assert_eq!(kind(&e), ErrorKind::CannotBoot, "{e}");
        let e = c
            .activate(&BeName::new("v1").unwrap(), Activation::Once, 1)
            .unwrap_err();
        assert!(e.to_string().contains("needs GRUB"), "{e}");
        assert_eq!(kind(&e), ErrorKind::NoEsp);
        let e = c.mark_good(None, 1).unwrap_err();
        assert!(e.to_string().contains("not booted by bootenv"));
        assert_eq!(kind(&e), ErrorKind::NotBootedByBootenv);
        c.mark_good(Some(&BeName::new("v1").unwrap()), 7).unwrap();
        let st = statefile::load(&d.path().join(crate::boot::STATE_MOUNT))
            .unwrap()
            .state();
        assert_eq!(st.last_good.as_deref(), Some("v1"));
        let listing = c.list().unwrap();
        let v1 = listing
            .boot_environments
            .iter()
            .find(|e| e.name == "v1")
            .unwrap();
        assert!(v1.default && v1.last_known_good, "{v1:?}");
        assert!(
            listing
                .to_string()
                .lines()
                .any(|l| l.starts_with("v1") && l.contains("RG")),
            "{listing}"
        );
    }

    mod trial {
        use super::*;
        use crate::boot::Env;
        use crate::bootloader::grubenv::EnvBlock;
        use crate::model::cmdline::BootArgs;

        const BES: [&str; 3] = ["v1", "v2", "v3"];

        struct World {
            dir: tempfile::TempDir,
            zfs: FakeZfs,
            mounter: FakeMounter,
        }

        fn world() -> World {
            world_with(|m| m)
        }

        /// [`world`], with more files in the fake datasets.
        fn world_with(files: impl FnOnce(FakeMounter) -> FakeMounter) -> World {
            let dir = tempfile::tempdir().unwrap();
            let zfs = FakeZfs::new().with_root(dir.path().into());
            zfs.add_pool("tank");
            zfs.import("tank").unwrap().unwrap();
            zfs.add_layout("tank");
            let mut mounter = FakeMounter::new();
            for be in BES {
                zfs.add_fs(
                    &format!("tank/ROOT/{be}"),
                    &[("canmount", "noauto"), ("mountpoint", "/")],
                );
                let ds = format!("tank/ROOT/{be}");
                mounter = mounter
                    .file(&ds, "sbin/init", b"#!/bin/sh\n", 0o755)
                    .file(&ds, "bin/sh", b"", 0o755)
                    .file(
                        &ds,
                        "boot/vmlinuz",
                        format!("kernel of {be}").as_bytes(),
                        0o644,
                    )
                    .file(
                        &ds,
                        "boot/initrd.img",
                        format!("initrd of {be}").as_bytes(),
                        0o644,
                    );
            }
            std::fs::create_dir_all(dir.path().join("esp")).unwrap();
            let mounter = files(mounter);
            World { dir, zfs, mounter }
        }

        impl World {
            fn ctx(&self) -> Ctx<'_> {
                let esp = Esp {
                    dir: self.dir.path().join("esp"),
                    uuid: "ABCD-1234".into(),
                };
                Ctx {
                    root: self.dir.path().into(),
                    zfs: &self.zfs,
                    mounter: &self.mounter,
                    runner: &crate::sys::run::NoRunner,
                    pool: Some(PoolName::new("tank").unwrap()),
                    esp: Some(EspChoice::Known(esp)),
                    facts: Default::default(),
                }
            }

            fn esp(&self) -> Esp {
                Esp {
                    dir: self.dir.path().join("esp"),
                    uuid: "ABCD-1234".into(),
                }
            }

            fn env_path(&self) -> PathBuf {
                self.esp()
                    .bootenv_dir()
                    .join(crate::bootloader::bootfiles::ENV)
            }

            fn state(&self) -> State {
                let dir = self
                    .ctx()
                    .state_dir(&PoolName::new("tank").unwrap())
                    .unwrap();
                statefile::load(&dir).unwrap().state()
            }

            /// GRUB at power-on: the model of the menu on the ESP, with its save_env.
            fn grub(&self) -> (String, String) {
                let c = self.ctx();
                let inv = c.inventory(&PoolName::new("tank").unwrap()).unwrap();
                let (menu, _) = build_menu(&inv, &self.esp(), &self.state(), None).unwrap();
                // The model is of the menu on the ESP: the same script but for the titles
                // (which may lag behind the state after an interrupted write).
                let untitled = |s: &str| -> Vec<String> {
                    s.lines()
                        .map(|l| {
                            if l.starts_with("menuentry '") {
                                l[l.find("' --id").unwrap()..].to_owned()
                            } else {
                                l.to_owned()
                            }
                        })
                        .collect()
                };
                let on_disk =
                    std::fs::read_to_string(self.esp().bootenv_dir().join("grub.cfg")).unwrap();
                assert_eq!(untitled(&on_disk), untitled(&menu.render()));
                // The block as GRUB reads and writes it (a damaged one as far as it is
                // well-formed; the grub_emu test holds the model to GRUB itself).
                let block = std::fs::read(self.env_path()).ok();
                let (b, after) = menu.model_bytes(block.as_deref());
                if let (Some(before), Some(after)) = (block, after) {
                    if before != after {
                        std::fs::write(self.env_path(), after).unwrap();
                    }
                }
                let args = b
                    .args
                    .iter()
                    .filter(|(n, _)| n == &b.boot)
                    .map(|(_, a)| a.clone())
                    .collect::<Vec<_>>()
                    .join(" ");
                (b.boot.to_string(), args)
            }

            /// Power off: nothing stays mounted, the pool is not imported.
            fn power_cycle(&self) {
                for (_, t) in self.mounter.mounted().into_iter().rev() {
                    self.mounter.unmount(&t).unwrap();
                }
                let _ = std::fs::remove_file(self.dir.path().join("run/bootenv/boot"));
                let _ = self.zfs.export("tank");
            }

            /// The agent boots what GRUB chose; returns the BE that booted. The system then
            /// runs (its mounts stay) until the next power cycle.
            fn agent(&self, be: &str, args: &str) -> String {
                self.power_cycle();
                let e = Env {
                    root: self.dir.path(),
                    zfs: &self.zfs,
                    mounter: &self.mounter,
                    uptime: &|| 1.0,
                    now: &|| 50,
                    failpoint: &|_| true,
                    staging: crate::boot::STAGING,
                };
                let a = BootArgs::parse(format!("bootenv={be} bootenv.pool=tank {args}"));
                let p = e.prepare(&a).unwrap();
                let r = e.mount_chosen(&a, &p, 0.5).unwrap();
                // What the running system sees at /boot: the booted BE's kernel.
                let booted = r.plan.be.to_string();
                let boot = self.dir.path().join("boot");
                std::fs::create_dir_all(&boot).unwrap();
                std::fs::write(boot.join("vmlinuz"), format!("kernel of {booted}")).unwrap();
                std::fs::write(boot.join("initrd.img"), format!("initrd of {booted}")).unwrap();
                booted
            }

            /// One power-on to the running BE.
            fn boot(&self) -> String {
                let (be, args) = self.grub();
                self.agent(&be, &args)
            }
        }

        fn be(s: &str) -> BeName {
            BeName::new(s).unwrap()
        }

        fn installed(w: &World) {
            let c = w.ctx();
            c.prepare_pool(&PoolName::new("tank").unwrap()).unwrap();
            c.sync_boot(&[], 10).unwrap();
            c.activate(&be("v1"), Activation::Default, 11).unwrap();
            c.mark_good(Some(&be("v1")), 12).unwrap();
        }

        #[test]
        fn an_upgrade_runs_the_command_chrooted_in_a_new_be_and_starts_its_trial() {
            use crate::model::failure::ErrorKind;
            use crate::sys::run::FakeRunner;
            use crate::verbs::lifecycle::CloneOpts;
            // The clone's files as the fake shows them under its final name.
            let w = world_with(|m| {
                m.file("tank/ROOT/v4", "boot/vmlinuz", b"kernel of v4", 0o644)
                    .file("tank/ROOT/v4", "boot/initrd.img", b"initrd of v4", 0o644)
            });
            installed(&w);
            let runner = FakeRunner::with(|argv| {
                let root = Path::new(argv[1]);
                assert_eq!(argv[0], "chroot");
                assert!(root.ends_with("tank_ROOT_v4_partial"), "{argv:?}");
                for api in ["proc", "sys", "dev"] {
                    assert!(root.join(api).is_dir(), "{api} is not there to bind");
                }
                assert_eq!(argv[argv.len() - 2..], ["apt-get", "upgrade"]);
                Ok(())
            });
            let c = Ctx {
                runner: &runner,
                ..w.ctx()
            };
            let cmd = ["apt-get".to_string(), "upgrade".to_string()];
            let up = c
                .upgrade(&be("v4"), &cmd, &CloneOpts::default(), Some(2), 60)
                .unwrap();
            assert_eq!(runner.ran.borrow().len(), 1);
            assert_eq!(
                (up.trial.activated_as, up.trial.tries),
                (ActivatedAs::Trial, Some(2))
            );
            assert_eq!(
                up.boot
                    .kernels
                    .iter()
                    .map(|k| (k.be.as_str(), k.result))
                    .collect::<Vec<_>>(),
                vec![("v4", KernelResult::Copied)]
            );
            assert_eq!(w.state().trial.map(|t| t.be).as_deref(), Some("v4"));
            // Nothing stays mounted: the binds, the new BE and its members are gone.
            assert!(
                w.mounter
                    .mounted()
                    .iter()
                    .all(|(_, t)| !t.to_string_lossy().contains("v4")),
                "{:?}",
                w.mounter.mounted()
            );
            // A failing command leaves no part of the new BE, and no snapshot of the old.
            let snaps_before = w.zfs.snapshots("tank/ROOT/v1").unwrap();
            let failing = FakeRunner::with(|_| Err("failed with exit status 100".into()));
            let c = Ctx {
                runner: &failing,
                ..w.ctx()
            };
            let e = c
                .upgrade(&be("v5"), &cmd, &CloneOpts::default(), None, 70)
                .unwrap_err();
            assert_eq!(
                crate::verbs::outcome::kind_of(&e),
                ErrorKind::CommandFailed,
                "{e:#}"
            );
            assert!(format!("{e:#}").contains("no part of v5 was kept"), "{e:#}");
            assert!(w.zfs.list("tank/ROOT/v5").unwrap().datasets.is_empty());
            assert!(w
                .zfs
                .list("tank/ROOT/v5:partial")
                .unwrap()
                .datasets
                .is_empty());
            assert_eq!(w.zfs.snapshots("tank/ROOT/v1").unwrap(), snaps_before);
            assert_eq!(w.state().trial.map(|t| t.be).as_deref(), Some("v4"));
        }

        #[test]
        fn sync_boot_leaves_a_be_mounted_out_of_sight_as_it_is() {
            let w = world();
            installed(&w);
            // v2 is mounted where this process cannot see it (outside a chroot).
            let outside = tempfile::tempdir().unwrap();
            let elsewhere = outside.path().join("elsewhere");
            std::fs::create_dir_all(&elsewhere).unwrap();
            w.mounter
                .mount_zfs("tank/ROOT/v2", &elsewhere, false)
                .unwrap();
            let out = w.ctx().sync_boot(&[], 30).unwrap();
            let result = |be: &str| out.kernels.iter().find(|k| k.be == be).map(|k| k.result);
            assert_eq!(result("v2"), Some(KernelResult::LeftAsIs), "{out}");
            assert_eq!(result("v1"), Some(KernelResult::UpToDate), "{out}");
            assert!(
                out.to_string()
                    .contains("v2: left as it is (mounted outside this chroot"),
                "{out}"
            );
            let esp = w.esp();
            assert!(
                crate::bootloader::bootfiles::kernel_of(&esp, "v2").is_some(),
                "v2's kernel was kept"
            );
            // The state record mounted out of sight too: kernels are copied, the menu is not
            // written from a partial view.
            let menu = esp.bootenv_dir().join("grub.cfg");
            let before = std::fs::read(&menu).unwrap();
            let c = w.ctx();
            let state = c.state_mount(&PoolName::new("tank").unwrap());
            if w.mounter.is_mountpoint(&state) {
                w.mounter.unmount(&state).unwrap();
            }
            let st2 = w.dir.path().join("state-elsewhere");
            std::fs::create_dir_all(&st2).unwrap();
            w.mounter.mount_zfs("tank/BOOTENV", &st2, false).unwrap();
            w.zfs.destroy("tank/ROOT/v3", true).unwrap();
            let out = c.sync_boot(&[], 40).unwrap();
            assert_eq!(out.menu.result, MenuResult::LeftToRunningSystem, "{out}");
            assert_eq!(
                std::fs::read(&menu).unwrap(),
                before,
                "the menu was rewritten"
            );
        }

        /// Every verb's outcome, and its errors, as JSON: each document has exactly the keys
        /// and types ARCHITECTURE.md documents for it.
        #[test]
        fn every_outcome_matches_its_documented_json_schema() {
            use crate::model::failure::ErrorKind;
            use crate::sys::run::FakeRunner;
            use crate::verbs::lifecycle::CloneOpts;
            use crate::verbs::outcome::{error_json, kind_of, InstalledDisk, Outcome};
            let spec =
                crate::verbs::schema::Spec::from_markdown(include_str!("../../../ARCHITECTURE.md"))
                    .unwrap();
            let w = world_with(|m| {
                m.file("tank/ROOT/v4", "boot/vmlinuz", b"kernel of v4", 0o644)
                    .file("tank/ROOT/v4", "boot/initrd.img", b"initrd of v4", 0o644)
            });
            let mut docs: Vec<(String, String)> = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut ok = |o: Outcome| {
                let v: serde_json::Value = serde_json::from_str(&o.json()).unwrap();
                seen.insert(v["verb"].as_str().unwrap().to_owned());
                docs.push((o.to_string(), o.json()));
            };
            let c = w.ctx();
            let tank = PoolName::new("tank").unwrap();
            ok(Outcome::PreparePool(c.prepare_pool(&tank).unwrap()));
            ok(Outcome::SyncBoot(c.sync_boot(&[], 10).unwrap()));
            ok(Outcome::Activate(
                c.activate(&be("v1"), Activation::Default, 11).unwrap(),
            ));
            ok(Outcome::Activate(
                c.activate(&be("v1"), Activation::Default, 11).unwrap(),
            ));
            ok(Outcome::MarkGood(c.mark_good(Some(&be("v1")), 12).unwrap()));
            assert_eq!(w.boot(), "v1");
            let c = w.ctx();
            ok(Outcome::Status(c.status().unwrap()));
            ok(Outcome::List(c.list().unwrap()));
            ok(Outcome::GrubMenu(c.grub_menu().unwrap()));
            ok(Outcome::Activate(
                c.activate(&be("v2"), Activation::Once, 13).unwrap(),
            ));
            ok(Outcome::Activate(
                c.activate(&be("v3"), Activation::Trial(Some(2)), 14)
                    .unwrap(),
            ));
            ok(Outcome::Activate(
                c.activate(&be("v2"), Activation::Default, 15).unwrap(),
            ));
            ok(Outcome::Rollback(c.walk(None, false, 16).unwrap()));
            ok(Outcome::Rollforward(c.walk(None, true, 17).unwrap()));
            ok(Outcome::MarkGood(c.mark_good(Some(&be("v3")), 18).unwrap()));
            let runner = FakeRunner::default();
            let up = Ctx {
                runner: &runner,
                ..w.ctx()
            };
            let cmd = ["true".to_string()];
            ok(Outcome::Upgrade(
                up.upgrade(&be("v4"), &cmd, &CloneOpts::default(), None, 19)
                    .unwrap(),
            ));
            ok(Outcome::Create(
                c.create_from(
                    &be("v5"),
                    &CloneOpts {
                        from: Some("v1".into()),
                        ..Default::default()
                    },
                    20,
                )
                .unwrap(),
            ));
            let tree = w.dir.path().join("tree");
            std::fs::create_dir_all(tree.join("etc")).unwrap();
            ok(Outcome::Create(
                c.create(
                    &be("v6"),
                    &CreateOpts {
                        rootfs: tree,
                        config_mountpoint: "/etc/config".into(),
                        ..Default::default()
                    },
                )
                .unwrap(),
            ));
            ok(Outcome::FactoryReset(
                c.factory_reset(Some(ResetMode::Full), false, Some(&be("v6")), false, 25)
                    .unwrap(),
            ));
            ok(Outcome::FactoryReset(
                c.factory_reset(None, false, None, true, 26).unwrap(),
            ));
            ok(Outcome::FactoryReset(
                c.factory_reset(None, false, None, true, 27).unwrap(),
            ));
            ok(Outcome::Mount(c.mount_be("v5", None, false).unwrap()));
            ok(Outcome::Unmount(c.unmount_be("v5").unwrap()));
            ok(Outcome::Diff(c.diff("v1", "v5").unwrap()));
            ok(Outcome::Destroy(
                c.destroy_be(&be("v6"), true, false, 21).unwrap(),
            ));
            ok(Outcome::Destroy(
                c.destroy_be(&be("v6"), false, false, 21).unwrap(),
            ));
            ok(Outcome::Rename(
                c.rename_be(&be("v5"), &be("v7"), 22).unwrap(),
            ));
            let stream = w.dir.path().join("v7.stream");
            let to = stream.to_str().unwrap();
            ok(Outcome::Export(c.export_be(&be("v7"), to, 23).unwrap()));
            ok(Outcome::Import(
                c.import_be(to, Some(&be("v8")), 24).unwrap(),
            ));
            ok(Outcome::Install(InstalledDisk {
                disk: "/dev/vdb".into(),
                pool: "rpool".into(),
                be: "v1".into(),
                bootable: true,
                changed: true,
            }));
            let verbs = crate::cli::VERBS;
            assert_eq!(seen, verbs.iter().map(|v| v.to_string()).collect());
            // Failures of several kinds.
            let snap_of_v1 = w.zfs.snapshots("tank/ROOT/v1").unwrap()[0].replace("tank/ROOT/", "");
            let errors = [
                c.activate(&be("nosuch"), Activation::Default, 30)
                    .unwrap_err(),
                c.destroy_be(&be("v1"), false, false, 30).unwrap_err(),
                c.rename_be(&be("v2"), &be("V3"), 30).unwrap_err(),
                c.mount_be(&snap_of_v1, None, true).unwrap_err(),
            ];
            let kinds: Vec<ErrorKind> = errors.iter().map(kind_of).collect();
            assert_eq!(
                kinds,
                [
                    ErrorKind::NotFound,
                    ErrorKind::Refused,
                    ErrorKind::Exists,
                    ErrorKind::Invalid
                ]
            );
            for e in &errors {
                docs.push((
                    e.to_string(),
                    error_json(Some("x"), kind_of(e), &format!("{e:#}")),
                ));
            }
            docs.push((String::new(), error_json(None, ErrorKind::Usage, "bad")));
            for (text, json) in &docs {
                let v: serde_json::Value = serde_json::from_str(json).unwrap();
                if let Err(e) = spec.check(&v) {
                    panic!("{e}\n{json}\n{text}");
                }
            }
            // A repeated activate of the default is reported unchanged.
            let again: Vec<&(String, String)> = docs
                .iter()
                .filter(|(t, _)| t.contains("unchanged"))
                .collect();
            assert_eq!(again.len(), 1, "{docs:?}");
            assert!(again[0].1.contains("\"changed\": false"));
        }

        #[test]
        fn a_committed_trial_becomes_the_default() {
            let w = world();
            installed(&w);
            assert_eq!(w.boot(), "v1");
            w.ctx()
                .activate(&be("v3"), Activation::Trial(Some(2)), 20)
                .unwrap();
            let menu = std::fs::read_to_string(w.esp().bootenv_dir().join("grub.cfg")).unwrap();
            assert!(menu.contains("'v3: v3 (trial)'"), "{menu}");
            assert_eq!(w.boot(), "v3");
            w.ctx().mark_good(None, 21).unwrap();
            assert_eq!(
                w.zfs.pool_prop("tank", "bootfs").unwrap().as_deref(),
                Some("tank/ROOT/v3")
            );
            let st = w.state();
            assert_eq!(
                (st.last_good.as_deref(), st.trial.as_ref()),
                (Some("v3"), None)
            );
            let block = EnvBlock::parse(&std::fs::read(w.env_path()).unwrap()).unwrap();
            assert_eq!(
                (block.get("bootenv_default"), block.get("bootenv_trial")),
                (Some("v3"), None)
            );
            for _ in 0..3 {
                assert_eq!(w.boot(), "v3");
            }
        }

        #[test]
        fn a_failing_trial_rolls_back_and_is_reported_once() {
            let w = world();
            installed(&w);
            w.ctx()
                .activate(&be("v3"), Activation::Trial(Some(2)), 20)
                .unwrap();
            // v3 fails twice (a panic, an init that reboots): nobody marks it good.
            assert_eq!(w.boot(), "v3");
            assert_eq!(w.boot(), "v3");
            assert_eq!(w.grub().0, "v1", "tries used up: GRUB goes back by itself");
            let (boot, args) = w.grub();
            assert_eq!(
                (boot.as_str(), args.as_str()),
                ("v1", "bootenv.rollback=v3")
            );
            assert_eq!(w.agent(&boot, &args), "v1");
            let st = w.state();
            assert!(st.trial.is_none());
            assert!(st.events.iter().any(|e| matches!(&e.kind, EventKind::Rollback { failed, booted } if failed == "v3" && booted == "v1")));
            let report = std::fs::read_to_string(w.dir.path().join("run/bootenv/boot")).unwrap();
            assert!(report.contains("rollback=v3"), "{report}");
            let status = w.ctx().status().unwrap();
            assert!(status.to_string().contains("ROLLBACK"), "{status}");
            let json: serde_json::Value =
                serde_json::from_str(&crate::verbs::outcome::Outcome::Status(status).json())
                    .unwrap();
            assert_eq!(json["verb"], "status", "{json}");
            assert_eq!(json["boot"]["rollback"], "v3", "{json}");
            assert_eq!(json["boot"]["be"], "v1", "{json}");
            assert_eq!(json["grub"]["default"], "v1", "{json}");
            // The block still holds the used-up trial until the next bootenv write.
            assert_eq!(
                (&json["grub"]["trial"], &json["grub"]["tries"]),
                (&serde_json::json!("v3"), &serde_json::json!("0")),
                "{json}"
            );
            let events = json["state"]["events"].as_array().unwrap();
            assert!(
                events
                    .iter()
                    .any(|e| e["text"].as_str().is_some_and(|t| t.contains("v3"))),
                "{json}"
            );
            // v1 marks itself good: the block forgets the trial; the default stays v1.
            w.ctx().mark_good(None, 30).unwrap();
            let block = EnvBlock::parse(&std::fs::read(w.env_path()).unwrap()).unwrap();
            assert_eq!(
                (block.get("bootenv_default"), block.get("bootenv_trial")),
                (Some("v1"), None)
            );
            assert_eq!(w.boot(), "v1");
            let rollbacks = w
                .state()
                .events
                .iter()
                .filter(|e| matches!(e.kind, EventKind::Rollback { .. }))
                .count();
            assert_eq!(rollbacks, 1);
        }

        #[test]
        fn a_one_shot_boots_once() {
            let w = world();
            installed(&w);
            w.ctx().activate(&be("v2"), Activation::Once, 20).unwrap();
            assert_eq!(w.boot(), "v2");
            // v2 marking itself good does not make it the default.
            let out = w.ctx().mark_good(None, 21).unwrap();
            assert_eq!(out.result, GoodResult::NotDefault, "{out}");
            assert!(!out.changed);
            assert_eq!(w.boot(), "v1");
        }

        #[test]
        fn a_torn_block_boots_what_grub_reads_of_it_and_the_next_write_repairs_it() {
            let w = world();
            installed(&w);
            let good = std::fs::read(w.env_path()).unwrap();
            let mut torn = good.clone();
            torn.truncate(300);
            // GRUB reads a damaged block as far as it is well-formed (the default of a block cut
            // after it, nothing of one without its signature): a BE of the menu boots.
            for (garbage, boots) in [
                (torn, "v1"),
                (vec![0xAAu8; 1024], "v1"),
                (
                    b"# GRUB Environment Block\nbootenv_default=v2\nbootenv_tr".to_vec(),
                    "v2",
                ),
            ] {
                std::fs::write(w.env_path(), &garbage).unwrap();
                assert_eq!(w.boot(), boots);
                let out = w.ctx().mark_good(Some(&be("v1")), 40).unwrap();
                assert!(
                    out.notes
                        .iter()
                        .any(|n| n.contains("repaired the damaged GRUB environment block")),
                    "{out}"
                );
                assert_eq!(
                    std::fs::read(w.env_path()).unwrap(),
                    good,
                    "repaired to the same content"
                );
                assert_eq!(
                    std::fs::read(w.esp().bootenv_dir().join("grubenv.damaged")).unwrap(),
                    garbage
                );
            }
            // Nothing else changed.
            assert_eq!(
                w.zfs.pool_prop("tank", "bootfs").unwrap().as_deref(),
                Some("tank/ROOT/v1")
            );
        }

        #[test]
        fn a_torn_block_during_a_trial_rolls_back() {
            let w = world();
            installed(&w);
            w.ctx()
                .activate(&be("v3"), Activation::Trial(Some(3)), 20)
                .unwrap();
            assert_eq!(w.boot(), "v3");
            // GRUB's save_env tears the block at the next power-on.
            std::fs::write(w.env_path(), vec![b'#'; 1024]).unwrap();
            assert_eq!(
                w.boot(),
                "v1",
                "an unreadable block boots the known-good BE"
            );
            // The next write cannot know how many tries GRUB counted: none are left.
            w.ctx().mark_good(None, 30).unwrap();
            let block = EnvBlock::parse(&std::fs::read(w.env_path()).unwrap()).unwrap();
            assert_eq!(
                (block.get("bootenv_trial"), block.get("bootenv_tries")),
                (Some("v3"), Some("0"))
            );
            let (boot, args) = w.grub();
            assert_eq!(
                (boot.as_str(), args.as_str()),
                ("v1", "bootenv.rollback=v3")
            );
        }

        /// Changes a file of BE `name` (not running) through a writable mount of it.
        fn edit_be(w: &World, name: &str, rel: &str, content: Option<&[u8]>) {
            let d = w.dir.path().join("edit");
            std::fs::create_dir_all(&d).unwrap();
            w.mounter
                .mount_zfs(&format!("tank/ROOT/{name}"), &d, false)
                .unwrap();
            match content {
                Some(c) => std::fs::write(d.join(rel), c).unwrap(),
                None => std::fs::remove_file(d.join(rel)).unwrap(),
            }
            w.mounter.unmount(&d).unwrap();
        }

        #[test]
        fn an_activation_that_cannot_put_the_kernel_on_the_esp_changes_nothing() {
            let w = world();
            installed(&w);
            assert_eq!(w.boot(), "v1");
            edit_be(&w, "v2", "boot/vmlinuz", None);
            let files = |w: &World| {
                let b = w.esp().bootenv_dir();
                (
                    std::fs::read(b.join("grub.cfg")).unwrap(),
                    std::fs::read(b.join("grubenv")).unwrap(),
                    w.zfs.pool_prop("tank", "bootfs").unwrap(),
                    w.state(),
                )
            };
            let before = files(&w);
            for how in [
                Activation::Default,
                Activation::Once,
                Activation::Trial(Some(2)),
            ] {
                let e = w.ctx().activate(&be("v2"), how, 30).unwrap_err();
                let msg = format!("{e:#}");
                assert!(
                    msg.contains("nothing was changed") && msg.contains("bootenv sync-boot v2"),
                    "{msg}"
                );
                assert!(files(&w) == before, "{how:?} changed something");
            }
            // Once the BE has a kernel again, the same command works.
            edit_be(&w, "v2", "boot/vmlinuz", Some(b"kernel of v2"));
            w.ctx()
                .activate(&be("v2"), Activation::Default, 31)
                .unwrap();
            assert_eq!(w.boot(), "v2");
        }

        #[test]
        fn list_and_status_flag_stale_and_missing_kernels_on_the_esp() {
            let w = world();
            installed(&w);
            assert_eq!(w.boot(), "v1");
            let flags = |w: &World| -> Vec<(String, Option<EspKernel>)> {
                let (_, e, _) = w.ctx().list_entries().unwrap();
                e.into_iter().map(|e| (e.name, e.esp_kernel)).collect()
            };
            assert_eq!(
                flags(&w),
                vec![
                    ("v3".to_string(), Some(EspKernel::Unchecked)),
                    ("v2".to_string(), Some(EspKernel::Unchecked)),
                    ("v1".to_string(), Some(EspKernel::Current)),
                ]
            );
            // The running BE's initramfs rebuilt without a sync; v3's entry gone.
            std::fs::write(w.dir.path().join("boot/initrd.img"), "rebuilt").unwrap();
            std::fs::remove_dir_all(w.esp().bootenv_dir().join("v3")).unwrap();
            assert_eq!(
                flags(&w),
                vec![
                    ("v3".to_string(), Some(EspKernel::Missing)),
                    ("v2".to_string(), Some(EspKernel::Unchecked)),
                    ("v1".to_string(), Some(EspKernel::Stale)),
                ]
            );
            let out = w.ctx().list().unwrap().to_string();
            assert!(
                out.contains(
                    "STALE kernel on the ESP (GRUB boots older files: `bootenv sync-boot v1`)"
                ),
                "{out}"
            );
            assert!(
                out.contains("no kernel on the ESP, not in the menu (`bootenv sync-boot v3`)"),
                "{out}"
            );
            let status = w.ctx().status().unwrap();
            assert_eq!(status.esp_problems.len(), 2, "{status}");
            let out = status.to_string();
            assert!(
                out.contains("ESP: the kernel or initramfs of v1 on the ESP is STALE"),
                "{out}"
            );
            assert!(out.contains("ESP: v3 has no kernel on the ESP"), "{out}");
            w.ctx().sync_boot(&[], 40).unwrap();
            assert!(flags(&w)
                .iter()
                .all(|(_, k)| *k != Some(EspKernel::Stale) && *k != Some(EspKernel::Missing)));
        }

        #[test]
        fn an_activation_puts_the_bes_current_kernel_on_the_esp() {
            let w = world();
            installed(&w);
            let old = crate::bootloader::bootfiles::kernel_of(&w.esp(), "v2").unwrap();
            // v2's initramfs was rebuilt since its kernel went to the ESP.
            edit_be(&w, "v2", "boot/initrd.img", Some(b"a newer initrd of v2"));
            let out = w.ctx().activate(&be("v2"), Activation::Once, 30).unwrap();
            assert_eq!(
                out.kernel.as_ref().map(|k| k.result),
                Some(KernelResult::Copied),
                "{out}"
            );
            let new = crate::bootloader::bootfiles::kernel_of(&w.esp(), "v2").unwrap();
            assert_ne!(old.hash, new.hash);
            let menu = std::fs::read_to_string(w.esp().bootenv_dir().join("grub.cfg")).unwrap();
            assert!(
                menu.contains(&format!("{}/vmlinuz bootenv=v2 ", new.dir)),
                "{menu}"
            );
        }

        #[test]
        fn an_interrupted_trial_activation_resumes() {
            let w = world();
            installed(&w);
            // The request reached the state record, then the power went: the block has no trial.
            let mut st = w.state();
            let dir = w.dir.path().join(crate::boot::STATE_MOUNT);
            st.trial = Some(Trial {
                be: "v3".into(),
                tries: 2,
            });
            statefile::store(&dir, &st).unwrap();
            assert_eq!(w.boot(), "v1");
            // The next write (here: the default marking itself good) carries the trial to GRUB.
            w.ctx().mark_good(None, 30).unwrap();
            assert_eq!(w.boot(), "v3");
        }

        #[test]
        fn kernels_follow_the_bes() {
            let w = world();
            installed(&w);
            let esp = w.esp();
            let k = crate::bootloader::bootfiles::kernel_of(&esp, "v2").unwrap();
            assert!(k.shared);
            let kdir = esp.dir.join(k.dir.trim_start_matches('/'));
            assert_eq!(
                std::fs::read(kdir.join("vmlinuz")).unwrap(),
                b"kernel of v2"
            );
            // A BE that goes away loses its kernels at the next write.
            w.zfs.destroy("tank/ROOT/v2", true).unwrap();
            w.ctx().sync_boot(&[], 50).unwrap();
            assert!(!esp.bootenv_dir().join("v2").exists());
            let menu = std::fs::read_to_string(esp.bootenv_dir().join("grub.cfg")).unwrap();
            assert!(!menu.contains("bootenv-v2"));
        }
    }
}
