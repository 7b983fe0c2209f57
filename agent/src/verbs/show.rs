//! The verbs that only look: `status` (how this system booted, GRUB's variables, the ESP, the
//! state record), `list` (the boot environments, each with its roles and whether its kernel on
//! the ESP is current) and `grub-menu` (the menu script as bootenv would write it).

use crate::bootloader::bootfiles::{build_menu, find_kernel, kernel_of, read_env};
use crate::bootloader::esp::Esp;
use crate::model::names::PoolName;
use crate::model::state::{EventKind, Loaded, State};
use crate::sys::statefile;
use crate::verbs::context::Ctx;
use crate::verbs::outcome::{
    BootSection, EspKernel, EspProblem, GrubVars, ListEntry, Listing, MenuProblem, MenuScript,
    StateView, StatusReport,
};

impl Ctx<'_> {
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
    pub(crate) fn esp_kernel(
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
        let (mut data_pools, mut data_problems) = (Vec::new(), Vec::new());
        if let Some(pool) = r.get("pool").and_then(|p| PoolName::new(p).ok()) {
            match self.data_registration(&pool).and_then(|reg| {
                data_problems = reg.problems.clone();
                self.data_rows(&reg, &self.read_data_report())
            }) {
                Ok(rows) => data_pools = rows,
                Err(e) => data_problems.push(format!("{e:#}")),
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
            data_pools,
            data_problems,
        })
    }
}

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
