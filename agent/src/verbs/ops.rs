//! The operator's verbs on a running system (or in an installer): each is a function over a
//! [`Ctx`], which holds the ZFS and mount boundaries and the root all paths are relative to.

use crate::bootloader::bootfiles::Next;
use crate::model::layout::{self, PROP_FACTORY, PROP_LABEL, PROP_LAYOUT, PROP_MEMBER, PROP_SOURCE};
use crate::model::names::{BeName, PoolName};
use crate::model::state::{EventKind, ResetMode, ResetRequest, Trial};
use crate::sys::mounts::is_busy;
use crate::sys::run::Cmd;
use crate::sys::statefile;
use crate::verbs::context::{Ctx, Refresh};
use crate::verbs::outcome::{
    mode_name, Activated, ActivatedAs, Created, DatasetStep, GoodResult, KernelEntry, KernelResult,
    KernelsMissing, MarkedGood, MenuResult, MenuWrite, PoolPrepared, ResetAction, ResetOutcome,
    ResetSwap, Synced,
};
use anyhow::Context;
use std::path::{Path, PathBuf};

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
            was_default: false,
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
                    done.was_default = true;
                    done.changed = done
                        .kernel
                        .as_ref()
                        .is_some_and(|k| k.result == KernelResult::Copied);
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
mod tests {
    use super::*;
    use crate::bootloader::bootfiles::build_menu;
    use crate::bootloader::esp::Esp;
    use crate::model::state::State;
    use crate::sys::mounts::{FakeMounter, Mounter};
    use crate::sys::zfs::fake::FakeZfs;
    use crate::sys::zfs::Zfs;
    use crate::verbs::context::EspChoice;
    use crate::verbs::outcome::EspKernel;

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

    /// The BE index: written by a menu writer after a full listing, then used instead of one
    /// until a BE comes, goes or is renamed behind bootenv's back or `<pool>/ROOT`'s settings
    /// change; never written by a reader; removed by a verb that changes datasets; a damaged
    /// one costs a listing, not an error.
    #[test]
    fn the_be_index_serves_the_menu_until_the_bes_change() {
        use crate::verbs::context::{Facts, IndexUse};
        let (d, z) = setup();
        z.add_layout("tank");
        for be in ["v1", "v2", "v3"] {
            z.add_be("tank", be, &[]);
        }
        z.put_pool_prop("tank", "bootfs", "tank/ROOT/v1");
        let m = FakeMounter::new();
        let with = |u| Ctx {
            facts: Facts::with_index(u),
            ..ctx(d.path(), &z, &m)
        };
        let pool = PoolName::new("tank").unwrap();
        let file = d.path().join("run/bootenv/state/index");
        let full = |z: &FakeZfs| z.take_listed().iter().any(|l| l == "-r tank/ROOT");
        let names = |i: &crate::model::inventory::Inventory| {
            i.bes.iter().map(|b| b.name.to_string()).collect::<Vec<_>>()
        };
        // A reader lists and writes nothing.
        let first = with(IndexUse::Read).inventory(&pool).unwrap();
        assert!(full(&z) && !file.exists());
        // A writer lists once and keeps the index; then the index serves.
        let rw = with(IndexUse::ReadWrite);
        assert_eq!(rw.inventory(&pool).unwrap(), first);
        assert!(full(&z) && file.exists());
        assert_eq!(with(IndexUse::Read).inventory(&pool).unwrap(), first);
        assert!(!full(&z));
        // Renamed, destroyed, made with plain zfs; a setting of ROOT changed: listed again.
        z.rename("tank/ROOT/v2", "tank/ROOT/v9").unwrap();
        assert_eq!(names(&rw.inventory(&pool).unwrap()), ["v1", "v9", "v3"]);
        assert!(full(&z));
        z.destroy("tank/ROOT/v3", true).unwrap();
        assert_eq!(names(&rw.inventory(&pool).unwrap()), ["v1", "v9"]);
        assert!(full(&z));
        z.add_be("tank", "v4", &[]);
        assert_eq!(names(&rw.inventory(&pool).unwrap()), ["v1", "v9", "v4"]);
        assert!(full(&z));
        z.set("tank/ROOT", &[("org.bootenv:cmdline", "quiet")])
            .unwrap();
        let i = rw.inventory(&pool).unwrap();
        assert!(full(&z) && i.bes.iter().all(|b| b.cmdline.as_deref() == Some("quiet")));
        assert_eq!(rw.inventory(&pool).unwrap(), i);
        assert!(!full(&z));
        // A BE's kernel command line or label set by hand: listed again.
        z.set("tank/ROOT/v9", &[("org.bootenv:cmdline", "quiet splash")])
            .unwrap();
        let i = rw.inventory(&pool).unwrap();
        assert!(full(&z));
        let v9 = i.bes.iter().find(|b| b.name.as_str() == "v9").unwrap();
        assert_eq!(v9.cmdline.as_deref(), Some("quiet splash"));
        // A label set by hand is not checked: seen once sync-boot (Refresh) keeps the index.
        z.set("tank/ROOT/v1", &[("org.bootenv:label", "renamed")])
            .unwrap();
        assert_eq!(rw.inventory(&pool).unwrap(), i);
        assert!(!full(&z));
        let i = with(IndexUse::Refresh).inventory(&pool).unwrap();
        assert!(full(&z) && i.bes[0].label.as_deref() == Some("renamed"));
        assert_eq!(rw.inventory(&pool).unwrap(), i);
        assert!(!full(&z));
        // Damaged: listed, no error, written again.
        std::fs::write(&file, b"BENVINDX\x01\x00junk").unwrap();
        assert_eq!(rw.inventory(&pool).unwrap(), i);
        assert!(full(&z) && crate::model::index::decode(&std::fs::read(&file).unwrap()).is_ok());
        // A verb that changes datasets removes it first; the others leave it.
        with(IndexUse::ReadWrite).forget_index().unwrap();
        assert!(file.exists());
        with(IndexUse::Forget).forget_index().unwrap();
        assert!(!file.exists());
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
            let data_unavailable;
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
            // A pending reset, as status shows it.
            {
                use crate::model::datapools::MountPolicy;
                use crate::verbs::data::DataAction;
                w.zfs.add_pool("data");
                w.zfs.add_pool("archive");
                w.zfs.set_present("archive", true, Some("UNAVAIL"));
                let data = PoolName::new("data").unwrap();
                let archive = PoolName::new("archive").unwrap();
                ok(Outcome::DataPools(
                    c.data_pools(&DataAction::Add(data, MountPolicy::None))
                        .unwrap(),
                ));
                ok(Outcome::DataPools(
                    c.data_pools(&DataAction::Add(archive, MountPolicy::All))
                        .unwrap(),
                ));
                let e = c
                    .data_pools(&DataAction::Import(std::time::Duration::ZERO))
                    .unwrap_err();
                assert_eq!(kind_of(&e), ErrorKind::Unavailable);
                data_unavailable = Some(e);
                ok(Outcome::DataPools(c.data_pools(&DataAction::List).unwrap()));
            }
            ok(Outcome::Status(c.status().unwrap()));
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
                data_pool: Some("data".into()),
                data_disks: vec!["/dev/vdc".into(), "/dev/vdd".into()],
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
            for e in errors.iter().chain(&data_unavailable) {
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
