//! The decision core: facts in, a plan out. No I/O, no errors: whatever the facts, the answer is
//! a boot environment to boot, with the reason, or a rescue with a message that names the fix.
//!
//! The agent calls [`decide`] in a loop: when carrying out a plan fails (a dataset will not mount,
//! the init is missing), the failure becomes a fact and [`decide`] is asked again. Each round
//! adds a failed boot environment, so the loop ends.

use crate::model::cmdline::BootArgs;
use crate::model::inventory::{Inventory, Member};
use crate::model::names::{BeName, PoolName};
use crate::model::report::{Report, VERSION as REPORT_VERSION};
use crate::sys::zfs::ImportError;
use std::fmt;

/// The init the agent execs when the command line names none.
pub const DEFAULT_INIT: &str = "/sbin/init";

/// Everything the decision depends on.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The kernel command line.
    pub args: &'a BootArgs,
    /// The boot environments of the imported pool.
    pub inventory: &'a Inventory,
    /// The last known-good boot environment from the agent's state, if any.
    pub last_good: Option<BeName>,
    /// Boot environments that failed to mount or start during this boot, with the reason.
    pub failed: &'a [(BeName, String)],
}

/// Where a default boot environment came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultSource {
    /// The pool's `bootfs` property.
    Bootfs,
    /// The agent's record of the last known-good boot environment.
    LastGood,
    /// The only boot environment there is.
    OnlyOne,
    /// GRUB, which booted it because it could not load the kernel or initramfs of the BE it
    /// was meant to boot (`bootenv.unloadable=`).
    Grub,
}

impl fmt::Display for DefaultSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DefaultSource::Bootfs => "the pool's bootfs property",
            DefaultSource::LastGood => "the last known-good record",
            DefaultSource::OnlyOne => "the only boot environment",
            DefaultSource::Grub => "GRUB's fallback",
        })
    }
}

/// Why this boot environment was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The command line named it.
    Requested,
    /// The command line named none: the default.
    Default(DefaultSource),
    /// The command line named another that cannot boot; this is the default instead.
    Fallback {
        /// What the command line asked for.
        requested: String,
        /// Why that one did not boot.
        reason: String,
        /// Where the default came from.
        source: DefaultSource,
    },
}

/// A plan to boot one boot environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPlan {
    /// The boot environment.
    pub be: BeName,
    /// Its root dataset.
    pub root: String,
    /// Members to mount below the root, in order.
    pub mounts: Vec<Member>,
    /// The init to exec, inside the boot environment.
    pub init: String,
    /// Why this one.
    pub choice: Choice,
}

/// Why the agent stops in the rescue shell, and what the operator can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rescue {
    /// One line: what failed.
    pub reason: String,
    /// What to try, one suggestion per line.
    pub hints: Vec<String>,
}

/// What the agent does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Mount and boot a boot environment.
    Boot(BootPlan),
    /// Stop in the rescue shell; nothing is changed.
    Rescue(Rescue),
}

fn retry_hint() -> String {
    "type `exit` to try the boot again".to_string()
}

/// Decides what to boot from the facts.
pub fn decide(f: &Facts) -> Plan {
    let inv = f.inventory;
    let failed = |be: &BeName| {
        f.failed
            .iter()
            .find(|(n, _)| n == be)
            .map(|(_, r)| r.clone())
    };
    // Why `be` cannot boot, if it cannot.
    let why_not = |be: &BeName| -> Option<String> {
        match inv.get(be) {
            None => Some(format!(
                "boot environment {be} does not exist in pool {}",
                inv.pool
            )),
            Some(b) => b
                .unbootable
                .clone()
                .map(|r| format!("boot environment {be} cannot boot: {r}"))
                .or_else(|| {
                    failed(be).map(|r| format!("boot environment {be} failed to start: {r}"))
                }),
        }
    };

    if f.args.rescue {
        return Plan::Rescue(Rescue {
            reason: "the kernel command line asks for the rescue shell (bootenv.rescue)".into(),
            hints: vec![
                format!(
                    "pool {} is imported; `zfs list -r {}/ROOT` shows the boot environments",
                    inv.pool, inv.pool
                ),
                retry_hint(),
            ],
        });
    }

    let plan_for = |be: &BeName, choice: Choice| -> Plan {
        let b = inv.get(be).expect("checked by why_not");
        Plan::Boot(BootPlan {
            be: be.clone(),
            root: b.dataset.clone(),
            mounts: b.members.clone(),
            init: f
                .args
                .init
                .clone()
                .unwrap_or_else(|| DEFAULT_INIT.to_string()),
            choice,
        })
    };

    let mut not_default = Vec::new();
    let default = {
        let mut candidates: Vec<(BeName, DefaultSource)> = Vec::new();
        if let Some(b) = inv.bootfs_be() {
            candidates.push((b, DefaultSource::Bootfs));
        } else if let Some(ds) = &inv.bootfs {
            not_default.push(format!(
                "the pool's bootfs ({ds}) is not a boot environment"
            ));
        }
        if let Some(b) = &f.last_good {
            candidates.push((b.clone(), DefaultSource::LastGood));
        }
        let bootable: Vec<&BeName> = inv.bootable().map(|b| &b.name).collect();
        if let [only] = bootable.as_slice() {
            candidates.push(((*only).clone(), DefaultSource::OnlyOne));
        }
        let mut chosen = None;
        for (be, source) in candidates {
            match why_not(&be) {
                None => {
                    chosen = Some((be, source));
                    break;
                }
                Some(r) => not_default.push(format!("default from {source}: {r}")),
            }
        }
        chosen
    };

    match &f.args.be {
        Some(req) => match why_not(req) {
            // GRUB booted this BE because it could not load the one it was meant to boot.
            None => match &f.args.unloadable {
                Some(x) if x != req => plan_for(
                    req,
                    Choice::Fallback {
                        requested: x.to_string(),
                        reason: format!(
                            "GRUB could not load the kernel or initramfs of {x} from the ESP (`bootenv sync-boot {x}` copies them again)"
                        ),
                        source: DefaultSource::Grub,
                    },
                ),
                _ => plan_for(req, Choice::Requested),
            },
            Some(reason) => match default {
                Some((be, source)) => plan_for(
                    &be,
                    Choice::Fallback {
                        requested: req.to_string(),
                        reason,
                        source,
                    },
                ),
                None => no_bootable(inv, Some(reason), &not_default, f.failed),
            },
        },
        None => match default {
            Some((be, source)) => plan_for(&be, Choice::Default(source)),
            None => no_bootable(inv, None, &not_default, f.failed),
        },
    }
}

/// The BEs a decision looks at first: the one the command line names, the pool's default
/// (`bootfs`) and the last known-good one, in that order, without repeats. The boot path lists
/// these (a listing costs per dataset: a pool may hold a hundred BEs) and lists every BE only
/// when [`needs_every_be`] says the plan made from them might differ.
pub fn needed_bes(
    args: &BootArgs,
    bootfs: Option<BeName>,
    last_good: Option<BeName>,
) -> Vec<BeName> {
    let mut v: Vec<BeName> = Vec::new();
    for b in [args.be.clone(), bootfs, last_good].into_iter().flatten() {
        if !v.contains(&b) {
            v.push(b);
        }
    }
    v
}

/// Whether `plan`, made from an inventory holding only the [`needed_bes`], might differ from the
/// plan the whole inventory gives. [`decide`] looks at a BE other than those three only for the
/// only-one default (after the other defaults failed) and for the rescue's message (which names
/// what can boot); every other plan depends on the three alone, each judged by its own
/// datasets. So those two ask for every BE, and the rest are the plan the whole pool gives.
pub fn needs_every_be(plan: &Plan) -> bool {
    match plan {
        Plan::Rescue(_) => true,
        Plan::Boot(b) => matches!(
            b.choice,
            Choice::Default(DefaultSource::OnlyOne)
                | Choice::Fallback {
                    source: DefaultSource::OnlyOne,
                    ..
                }
        ),
    }
}

fn no_bootable(
    inv: &Inventory,
    requested: Option<String>,
    not_default: &[String],
    failed: &[(BeName, String)],
) -> Plan {
    let pool = &inv.pool;
    let mut reason = match &requested {
        Some(r) => format!("{r}, and there is no default boot environment to boot instead"),
        None if inv.bes.is_empty() && !inv.has_root => {
            format!("pool {pool} holds no boot environments ({pool}/ROOT does not exist)")
        }
        None if inv.bes.is_empty() => format!("pool {pool} holds no boot environments"),
        None => format!("no default boot environment can boot from pool {pool}"),
    };
    if !not_default.is_empty() {
        reason.push_str(&format!(" ({})", not_default.join("; ")));
    }
    let mut hints = Vec::new();
    let bootable: Vec<String> = inv
        .bootable()
        .filter(|b| !failed.iter().any(|(n, _)| n == &b.name))
        .map(|b| b.name.to_string())
        .collect();
    if bootable.is_empty() {
        hints.push(format!("`zfs list -r {pool}/ROOT` shows what the pool holds; a boot environment is {pool}/ROOT/<name> with mountpoint=/ and canmount=noauto"));
    } else {
        hints.push(format!(
            "boot environments that can boot: {}",
            bootable.join(", ")
        ));
        hints.push(format!("boot one now: reboot and add bootenv=<name> to the kernel command line, or set a default with `zpool set bootfs={pool}/ROOT/<name> {pool}`"));
    }
    for b in inv.bes.iter().filter(|b| b.unbootable.is_some()) {
        hints.push(format!(
            "{} cannot boot: {}",
            b.name,
            b.unbootable.as_deref().unwrap_or("")
        ));
    }
    for (n, r) in failed {
        hints.push(format!("{n} failed to start: {r}"));
    }
    hints.push(retry_hint());
    Plan::Rescue(Rescue { reason, hints })
}

/// The rescue for a pool that could not be found or imported.
pub fn import_rescue(pool: Option<&PoolName>, err: &ImportError, waited_secs: u32) -> Rescue {
    let name = pool.map_or("a pool with boot environments".to_string(), |p| {
        format!("pool {p}")
    });
    let mut hints = Vec::new();
    let reason = match err {
        ImportError::NotFound => {
            hints.push("check that the disk holding the pool is attached and its driver is in the initramfs: `cat /proc/partitions`, `ls /dev`".to_string());
            hints.push("`zpool import` lists the pools this initramfs can see".to_string());
            match pool {
                Some(_) => hints.push("if the pool has another name, boot with bootenv.pool=<name> on the kernel command line".into()),
                None => hints.push("name the pool with bootenv.pool=<name> on the kernel command line".into()),
            }
            hints.push("slow disks: add bootenv.wait=<seconds> to wait longer".into());
            format!("{name} was not found on any disk (waited {waited_secs} s)")
        }
        ImportError::InUse(m) => {
            hints.push("the pool is active on another system: export it there first; bootenv never forces an import".into());
            format!("{name} is in use by another system: {m}")
        }
        ImportError::Foreign { hostid } => {
            hints.push(format!("the pool was last used by hostid {hostid:08x}; if no other system uses it, `zpool import -f -N {}` imports it", pool.map_or("<pool>", |p| p.as_str())));
            format!("{name} could not be imported even with the hostid it records ({hostid:08x})")
        }
        ImportError::Other(m) => {
            hints.push("`zpool import` shows the pool's state and what ZFS suggests".into());
            format!("{name} could not be imported: {m}")
        }
    };
    hints.push(retry_hint());
    Rescue { reason, hints }
}

fn source_name(s: DefaultSource) -> &'static str {
    match s {
        DefaultSource::Bootfs => "bootfs",
        DefaultSource::LastGood => "last-good",
        DefaultSource::OnlyOne => "only-one",
        DefaultSource::Grub => "grub",
    }
}

impl BootPlan {
    /// The boot report of this plan, about to be carried out.
    pub fn report(
        &self,
        pool: &str,
        hostid: Option<u32>,
        agent_start: f64,
        warnings: &[String],
    ) -> Report {
        let mut r = Report::default();
        r.put("version", REPORT_VERSION);
        r.put("be", self.be.as_str());
        r.put("pool", pool);
        r.put("dataset", &self.root);
        match &self.choice {
            Choice::Requested => r.put("choice", "requested"),
            Choice::Default(s) => {
                r.put("choice", "default");
                r.put("source", source_name(*s));
            }
            Choice::Fallback {
                requested,
                reason,
                source,
            } => {
                r.put("choice", "fallback");
                r.put("source", source_name(*source));
                r.put("requested", requested);
                r.put("reason", reason);
            }
        }
        if let Some(h) = hostid {
            r.put("hostid", &format!("{h:08x}"));
        }
        r.put("init", &self.init);
        r.put("agent-start", &format!("{agent_start:.3}"));
        for w in warnings {
            r.put("warning", w);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inventory::tests::{config_of, listing, Row};
    use crate::model::listing::Listing;

    fn inv(bootfs: Option<&str>) -> Inventory {
        let l = listing(&[
            ("tank/ROOT", "off", "none", "-", "-"),
            ("tank/ROOT/v1", "noauto", "/", "1.0", "-"),
            config_of("tank/ROOT/v1"),
            ("tank/ROOT/v2", "noauto", "/", "2.0", "-"),
            config_of("tank/ROOT/v2"),
            ("tank/ROOT/v3", "noauto", "/", "3.0", "-"),
            ("tank/ROOT/broken", "off", "/", "-", "-"),
        ]);
        Inventory::from_listing(&PoolName::new("tank").unwrap(), &l, bootfs.map(Into::into))
    }

    fn be(s: &str) -> BeName {
        BeName::new(s).unwrap()
    }

    fn run(
        cmdline: &str,
        inv: &Inventory,
        last_good: Option<&str>,
        failed: &[(BeName, String)],
    ) -> Plan {
        let args = BootArgs::parse(cmdline);
        decide(&Facts {
            args: &args,
            inventory: inv,
            last_good: last_good.map(be),
            failed,
        })
    }

    fn booted(p: &Plan) -> (String, Choice) {
        match p {
            Plan::Boot(b) => (b.be.to_string(), b.choice.clone()),
            Plan::Rescue(r) => panic!("expected a boot, got rescue: {r:?}"),
        }
    }

    /// Every combination of request, default, last known-good and failed BEs, on pools with
    /// and without broken BEs: a plan made from the needed BEs alone is the plan of the whole
    /// pool unless [`needs_every_be`] says so, and that happens only when the whole pool's plan
    /// itself looked past them (the only-one default, the rescue).
    #[test]
    fn a_plan_from_the_needed_bes_is_the_plan_of_the_whole_pool() {
        let pool = PoolName::new("tank").unwrap();
        let layouts: Vec<Vec<Row>> = vec![
            vec![
                ("tank/ROOT", "off", "none", "-", "-"),
                ("tank/ROOT/v1", "noauto", "/", "-", "-"),
                config_of("tank/ROOT/v1"),
                ("tank/ROOT/v2", "noauto", "/", "-", "-"),
                config_of("tank/ROOT/v2"),
                ("tank/ROOT/v3", "noauto", "/", "-", "-"),
                ("tank/ROOT/broken", "off", "/", "-", "-"),
            ],
            vec![
                ("tank/ROOT", "off", "none", "-", "-"),
                ("tank/ROOT/v1", "off", "/", "-", "-"),
                ("tank/ROOT/v2", "noauto", "/", "-", "-"),
                ("tank/ROOT/v2/bad", "noauto", "relative", "-", "-"),
                ("tank/ROOT/v3", "noauto", "/", "-", "-"),
            ],
            vec![
                ("tank/ROOT", "off", "none", "-", "-"),
                ("tank/ROOT/v1", "noauto", "/", "-", "-"),
            ],
        ];
        let names = ["v1", "v2", "v3", "broken", "nosuch"];
        let (mut cases, mut widened) = (0, 0);
        for rows in &layouts {
            let full = listing(rows);
            for bootfs in [None].into_iter().chain(names.iter().map(|n| Some(*n))) {
                let bootfs_ds = bootfs.map(|n| format!("tank/ROOT/{n}"));
                let whole = Inventory::from_listing(&pool, &full, bootfs_ds.clone());
                for req in [None].into_iter().chain(names.iter().map(|n| Some(*n))) {
                    let cmdline = req.map(|r| format!("bootenv={r}")).unwrap_or_default();
                    let args = BootArgs::parse(&cmdline);
                    for good in [None].into_iter().chain(names.iter().map(|n| Some(*n))) {
                        let needed = needed_bes(&args, whole.bootfs_be(), good.map(be));
                        let keep = |n: &str| {
                            n == "tank/ROOT"
                                || needed.iter().any(|b| {
                                    let d = format!("tank/ROOT/{b}");
                                    n == d || n.starts_with(&format!("{d}/"))
                                })
                        };
                        let part = Listing {
                            datasets: full
                                .datasets
                                .iter()
                                .filter(|d| keep(&d.name))
                                .cloned()
                                .collect(),
                            tainted: full.tainted.iter().filter(|t| keep(t)).cloned().collect(),
                        };
                        let partial = Inventory::from_listing(&pool, &part, bootfs_ds.clone());
                        for failed in [
                            vec![],
                            vec!["v1"],
                            vec!["v2"],
                            vec!["v1", "v2"],
                            vec!["v1", "v3"],
                        ] {
                            let failed: Vec<(BeName, String)> = failed
                                .iter()
                                .map(|f| (be(f), "did not start".into()))
                                .collect();
                            let facts = |inventory| Facts {
                                args: &args,
                                inventory,
                                last_good: good.map(be),
                                failed: &failed,
                            };
                            let of_all = decide(&facts(&whole));
                            let of_needed = decide(&facts(&partial));
                            cases += 1;
                            if needs_every_be(&of_needed) {
                                widened += 1;
                                assert!(
                                    needs_every_be(&of_all),
                                    "widened needlessly: {cmdline:?} bootfs {bootfs:?} good {good:?} failed {failed:?}: {of_all:?}"
                                );
                            } else {
                                assert_eq!(
                                    of_needed, of_all,
                                    "{cmdline:?} bootfs {bootfs:?} good {good:?} failed {failed:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
        assert!(
            cases > 1000 && widened > 0 && widened < cases,
            "{widened} of {cases}"
        );
    }

    #[test]
    fn needed_bes_are_the_request_the_default_and_the_last_good_once_each() {
        let args = BootArgs::parse("bootenv=v2");
        assert_eq!(
            needed_bes(&args, Some(be("v1")), Some(be("v2"))),
            vec![be("v2"), be("v1")]
        );
        assert!(needed_bes(&BootArgs::parse(""), None, None).is_empty());
    }

    #[test]
    fn boots_the_requested_be_with_its_members() {
        let i = inv(Some("tank/ROOT/v1"));
        let p = run("bootenv=v2", &i, None, &[]);
        let Plan::Boot(b) = &p else { panic!() };
        assert_eq!(b.be.as_str(), "v2");
        assert_eq!(b.root, "tank/ROOT/v2");
        assert_eq!(b.mounts.len(), 1);
        assert_eq!(b.mounts[0].dataset, "tank/ROOT/v2/config");
        assert_eq!(b.init, "/sbin/init");
        assert_eq!(b.choice, Choice::Requested);
    }

    #[test]
    fn a_be_grub_booted_instead_of_an_unloadable_one_is_reported_as_a_fallback() {
        let i = inv(Some("tank/ROOT/v1"));
        let (be, choice) = booted(&run("bootenv=v1 bootenv.unloadable=v3", &i, None, &[]));
        assert_eq!(be, "v1");
        let Choice::Fallback {
            requested,
            reason,
            source,
        } = choice
        else {
            panic!("{choice:?}")
        };
        assert_eq!((requested.as_str(), source), ("v3", DefaultSource::Grub));
        assert!(reason.contains("bootenv sync-boot v3"), "{reason}");
        // The marker naming the BE that boots says nothing.
        assert_eq!(
            booted(&run("bootenv=v1 bootenv.unloadable=v1", &i, None, &[])).1,
            Choice::Requested
        );
    }

    #[test]
    fn no_request_boots_bootfs_then_last_good() {
        let i = inv(Some("tank/ROOT/v3"));
        assert_eq!(
            booted(&run("", &i, Some("v1"), &[])),
            ("v3".into(), Choice::Default(DefaultSource::Bootfs))
        );
        let i = inv(None);
        assert_eq!(
            booted(&run("", &i, Some("v1"), &[])),
            ("v1".into(), Choice::Default(DefaultSource::LastGood))
        );
    }

    #[test]
    fn unknown_be_falls_back_with_the_reason() {
        let i = inv(Some("tank/ROOT/v1"));
        let p = run("bootenv=nosuch", &i, None, &[]);
        let (name, choice) = booted(&p);
        assert_eq!(name, "v1");
        let Choice::Fallback {
            requested,
            reason,
            source,
        } = choice
        else {
            panic!()
        };
        assert_eq!(requested, "nosuch");
        assert!(reason.contains("does not exist"), "{reason}");
        assert_eq!(source, DefaultSource::Bootfs);
    }

    #[test]
    fn unbootable_or_failed_requests_fall_back() {
        let i = inv(Some("tank/ROOT/v1"));
        let (_, c) = booted(&run("bootenv=broken", &i, None, &[]));
        assert!(matches!(c, Choice::Fallback { reason, .. } if reason.contains("canmount=off")));
        let failed = [(be("v2"), "mount failed: I/O error".to_string())];
        let (n, c) = booted(&run("bootenv=v2", &i, None, &failed));
        assert_eq!(n, "v1");
        assert!(matches!(c, Choice::Fallback { reason, .. } if reason.contains("I/O error")));
    }

    #[test]
    fn a_failed_default_yields_to_last_good() {
        let i = inv(Some("tank/ROOT/v3"));
        let failed = [(be("v3"), "no init".to_string())];
        let (n, c) = booted(&run("", &i, Some("v2"), &failed));
        assert_eq!(n, "v2");
        assert_eq!(c, Choice::Default(DefaultSource::LastGood));
    }

    #[test]
    fn the_only_be_is_the_default() {
        let l = listing(&[
            ("tank/ROOT", "off", "none", "-", "-"),
            ("tank/ROOT/solo", "noauto", "/", "-", "-"),
        ]);
        let i = Inventory::from_listing(&PoolName::new("tank").unwrap(), &l, None);
        assert_eq!(
            booted(&run("", &i, None, &[])),
            ("solo".into(), Choice::Default(DefaultSource::OnlyOne))
        );
    }

    #[test]
    fn init_from_the_command_line() {
        let i = inv(Some("tank/ROOT/v1"));
        let Plan::Boot(b) = run("init=/bin/sh", &i, None, &[]) else {
            panic!()
        };
        assert_eq!(b.init, "/bin/sh");
    }

    #[test]
    fn without_a_default_it_is_rescue_naming_what_can_boot() {
        let i = inv(None);
        let Plan::Rescue(r) = run("", &i, None, &[]) else {
            panic!()
        };
        assert!(
            r.reason.contains("no default boot environment"),
            "{}",
            r.reason
        );
        assert!(
            r.hints.iter().any(|h| h.contains("v1, v2, v3")),
            "{:?}",
            r.hints
        );
        assert!(
            r.hints.iter().any(|h| h.contains("broken cannot boot")),
            "{:?}",
            r.hints
        );
        let Plan::Rescue(r) = run("bootenv=nosuch", &i, None, &[]) else {
            panic!()
        };
        assert!(r.reason.contains("nosuch does not exist"), "{}", r.reason);
    }

    #[test]
    fn every_failure_ends_in_rescue_not_a_loop() {
        let i = inv(Some("tank/ROOT/v1"));
        let mut failed = Vec::new();
        for _ in 0..10 {
            match run("bootenv=v2", &i, Some("v3"), &failed) {
                Plan::Boot(b) => failed.push((b.be, "mount failed".to_string())),
                Plan::Rescue(r) => {
                    assert_eq!(failed.len(), 3, "v2, then v1 (bootfs), then v3 (last good)");
                    assert!(r.hints.iter().any(|h| h.contains("failed to start")));
                    return;
                }
            }
        }
        panic!("decide kept choosing failed boot environments");
    }

    #[test]
    fn empty_pool_and_operator_rescue() {
        let i = Inventory::from_listing(&PoolName::new("tank").unwrap(), &Default::default(), None);
        let Plan::Rescue(r) = run("", &i, None, &[]) else {
            panic!()
        };
        assert!(
            r.reason.contains("tank/ROOT does not exist"),
            "{}",
            r.reason
        );
        let i = inv(Some("tank/ROOT/v1"));
        let Plan::Rescue(r) = run("bootenv.rescue bootenv=v1", &i, None, &[]) else {
            panic!()
        };
        assert!(r.reason.contains("bootenv.rescue"));
    }

    #[test]
    fn bootfs_outside_the_layout_is_not_booted() {
        let i = inv(Some("tank/data"));
        let Plan::Rescue(r) = run("", &i, None, &[]) else {
            panic!()
        };
        assert!(
            r.reason
                .contains("bootfs (tank/data) is not a boot environment"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn import_rescue_names_the_pool_and_the_fix() {
        let p = PoolName::new("tank").unwrap();
        let r = import_rescue(Some(&p), &ImportError::NotFound, 10);
        assert_eq!(
            r.reason,
            "pool tank was not found on any disk (waited 10 s)"
        );
        assert!(r.hints.iter().any(|h| h.contains("bootenv.pool=")));
        let r = import_rescue(Some(&p), &ImportError::InUse("x".into()), 0);
        assert!(r.hints.iter().any(|h| h.contains("never forces")));
    }

    #[test]
    fn fallback_report_round_trips() {
        let plan = BootPlan {
            be: BeName::new("v1").unwrap(),
            root: "tank/ROOT/v1".into(),
            mounts: vec![],
            init: "/sbin/init".into(),
            choice: Choice::Fallback {
                requested: "nosuch".into(),
                reason: "boot environment nosuch does not exist\nin pool tank".into(),
                source: DefaultSource::Bootfs,
            },
        };
        let mut r = plan.report("tank", Some(0xabc), 1.5, &["w1".into(), "w2".into()]);
        r.put("init-exec", "2.000");
        let back = Report::parse(&r.render());
        assert_eq!(back, r);
        assert_eq!(back.get("choice"), Some("fallback"));
        assert_eq!(back.get("hostid"), Some("00000abc"));
        assert_eq!(back.all("warning"), vec!["w1", "w2"]);
        assert!(!back.get("reason").unwrap().contains('\n'));
        assert!(back
            .fallback_sentence()
            .unwrap()
            .contains("booted v1 instead of nosuch"));
    }
}
