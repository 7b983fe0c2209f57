//! The context every verb runs in ([`Ctx`]): the seams (ZFS, mounts, the command runner), the
//! root all paths are relative to, and the facts a run looks up once ([`Facts`]: the boot
//! report, the pool, the ESP), with what the verbs share on them: the state record loaded for a
//! change, the menu and environment block rewritten ([`Refresh`]), a BE's kernel put on the ESP
//! before anything makes it boot, a BE's files found or mounted for reading.

use crate::bootloader::bootfiles::{
    build_menu, compute_env, find_kernel, install_kernel, kernel_of, prune, read_env,
    write_menu_and_env, Installed, Next,
};
use crate::bootloader::esp::{Esp, NoEsp};
use crate::model::index::{self, Index};
use crate::model::inventory::Inventory;
use crate::model::layout::{self, PROP_LAYOUT};
use crate::model::listing::Listing;
use crate::model::names::{BeName, PoolName};
use crate::model::report::Report;
use crate::model::state::{Loaded, State};
use crate::sys::mounts::Mounter;
use crate::sys::statefile;
use crate::sys::zfs::Zfs;
use crate::verbs::outcome::{KernelEntry, KernelResult};
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
    index: IndexUse,
}

impl Facts {
    /// Facts of a run that uses the BE index as `index` says.
    pub fn with_index(index: IndexUse) -> Facts {
        Facts {
            index,
            ..Facts::default()
        }
    }
}

/// How a run uses the BE index ([`crate::model::index`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IndexUse {
    /// Lists every dataset and leaves the index alone (`list`, `status`, tests).
    #[default]
    Ignore,
    /// Reads the BEs from the index while it is current; a full listing otherwise
    /// (`grub-menu`, which takes no lock, and a writer running on behalf of another).
    Read,
    /// [`IndexUse::Read`], and writes the index after a full listing: a writer that holds the
    /// writers' lock and changes no dataset (`activate`, `mark-good`, `rollback`,
    /// `rollforward`), so no one changes the datasets between its listing and its write.
    ReadWrite,
    /// Lists every dataset and writes the index afresh: `sync-boot` (not nested), the verb
    /// that brings the ESP and the menu in line with the pool, and so the way to make bootenv
    /// see what the index does not check (a label set with `zfs set`).
    Refresh,
    /// Removes the index before anything else: a verb that changes datasets below
    /// `<pool>/ROOT` (`create`, `destroy`, `rename`, `upgrade`, `import`, `factory-reset`,
    /// `install`, `prepare-pool`).
    Forget,
}

/// An ESP named by the caller.
#[derive(Clone, Debug)]
pub enum EspChoice {
    /// Mounted at this directory (`--esp`).
    Mounted(PathBuf),
    /// Known already, serial included.
    Known(Esp),
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
    pub(crate) fn note(&self) -> String {
        format!("GRUB is not managed on this machine: {NoEsp}")
    }

    /// What to tell the operator.
    pub(crate) fn notes(self) -> Vec<String> {
        match self {
            Refresh::Written(notes) => notes,
            Refresh::Unmanaged => vec![Refresh::Unmanaged.note()],
        }
    }
}

impl Ctx<'_> {
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
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
    pub(crate) fn state_or_default(&self, pool: &PoolName) -> State {
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

    pub(crate) fn find_pool(&self) -> anyhow::Result<PoolName> {
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
            0 => crate::refuse!(NotFound, "no imported pool holds boot environments; name one with --pool <pool> (and prepare it with `bootenv prepare-pool <pool>`)"),
            _ => crate::refuse!(
                Usage,
                "several pools hold boot environments ({}); name one with --pool <pool>",
                found.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The boot environments of the pool: from the BE index when this run may use it and it is
    /// current, else from a listing of every dataset below `<pool>/ROOT`.
    pub fn inventory(&self, pool: &PoolName) -> anyhow::Result<Inventory> {
        let bootfs = self.zfs.pool_prop(pool.as_str(), "bootfs")?;
        let root = layout::root_container(pool);
        let listing = match self.facts.index {
            IndexUse::Read | IndexUse::ReadWrite => match self.indexed(pool) {
                Some(l) => l,
                None => {
                    let l = self.zfs.list(&root)?;
                    if self.facts.index == IndexUse::ReadWrite {
                        self.keep_index(pool, &l);
                    }
                    l
                }
            },
            IndexUse::Refresh => {
                let l = self.zfs.list(&root)?;
                self.keep_index(pool, &l);
                l
            }
            IndexUse::Ignore | IndexUse::Forget => self.zfs.list(&root)?,
        };
        Ok(Inventory::from_listing(pool, &listing, bootfs))
    }

    /// The listing the BE index holds, when it still describes the pool.
    fn indexed(&self, pool: &PoolName) -> Option<Listing> {
        let root = layout::root_container(pool);
        let file = self.state_dir(pool).ok()?.join(index::FILE);
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                log::debug!("no BE index ({}: {e})", file.display());
                return None;
            }
        };
        let kept = index::decode(&bytes)
            .map_err(|e| log::info!("the BE index {} is not used: {e}", file.display()))
            .ok()?;
        let now = self
            .zfs
            .children(&root, &index::CHECKED)
            .and_then(|c| Ok((c, self.zfs.list_exact(&[&root])?)))
            .map_err(|e| log::info!("the BE index is not used: {e:#}"))
            .ok()?;
        let (children, top) = now;
        let l = kept.current(
            &root,
            &children,
            top.datasets.iter().find(|d| d.name == root),
        );
        if l.is_none() {
            log::info!("the BE index is stale (a BE came, went or was renamed, or {root}'s properties changed): listing every dataset");
        }
        l
    }

    /// Writes the BE index of a complete listing; a failure costs the next run a listing.
    fn keep_index(&self, pool: &PoolName, listing: &Listing) {
        let root = layout::root_container(pool);
        let written = self.state_dir(pool).and_then(|d| {
            crate::sys::fsutil::atomic_write(
                &d,
                index::FILE,
                &index::encode(&Index::of(&root, listing)),
            )
        });
        if let Err(e) = written {
            log::info!("the BE index was not written: {e:#}");
        }
    }

    /// Removes the BE index of the pool this run works on, before a verb changes datasets
    /// (`IndexUse::Forget`); nothing when the run may not use it. An index that cannot be
    /// removed stops the verb: it would describe datasets that are about to change.
    pub fn forget_index(&self) -> anyhow::Result<()> {
        if self.facts.index != IndexUse::Forget {
            return Ok(());
        }
        let Ok(pool) = self.pool() else {
            return Ok(());
        };
        // Only where the state dataset is mounted already (the booted pool's always is): a
        // mount made here would outlive the run and keep another pool busy. An index left in an
        // unmounted state dataset is caught on reading: every verb that changes datasets
        // makes, renames or destroys a BE, which changes the names below ROOT it checks.
        let dir = self.state_mount(&pool);
        if !self.mounter.is_mountpoint(&dir) {
            return Ok(());
        }
        crate::sys::statefile::forget_index(&dir).with_context(|| {
            format!(
                "the BE index {} must go before the change (remove it by hand)",
                dir.join(index::FILE).display()
            )
        })
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
    pub(crate) fn esp(&self) -> anyhow::Result<Result<Esp, NoEsp>> {
        if let Some(e) = self.facts.esp.get() {
            return Ok(e.clone());
        }
        let e = self.find_esp()?;
        Ok(self.facts.esp.get_or_init(|| e).clone())
    }

    pub(crate) fn find_esp(&self) -> anyhow::Result<Result<Esp, NoEsp>> {
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
    pub(crate) fn refresh(
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
    pub(crate) fn commit_default(
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

    pub(crate) fn bootable<'i>(
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
    pub(crate) fn ensure_kernel(
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
    pub(crate) fn install_be_kernel(
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

    /// Where the root of `be` can be read: `/` when it is running, an existing mount, or a
    /// read-only mount made for the purpose (returned for unmounting).
    pub(crate) fn be_tree(
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
    pub(crate) fn tree_of(
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

use crate::sys::mounts::is_busy;

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
