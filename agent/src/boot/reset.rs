//! Factory reset: a BE's config (and, in a full reset, the shared datasets marked
//! `org.bootenv:data=reset`) goes back to its factory state by swapping in a clone of the
//! factory snapshot. Nothing is copied, and nothing is destroyed unless the request says `erase`:
//! the previous dataset is kept aside, whole, with a snapshot of the moment of the reset.
//!
//! One dataset's swap, for reset id `<id>` (target `T`, kept `T.reset-<id>`, fresh
//! `T.new-<id>`), as single ZFS commands, each checked before it runs:
//!
//! 1. `mark`: snapshot `T@reset-<id>` (the previous content, as it was)
//! 2. `prepare`: clone `T@factory` (or create an empty dataset) as `T.new-<id>`, with T's local
//!    properties, `canmount=off` and `org.bootenv:reset=<id>`
//! 3. `park`: `canmount=off` on T, `org.bootenv:saved=<T>`, rename T to `T.reset-<id>`
//! 4. `install`: rename `T.new-<id>` to T
//! 5. `finish`: T gets its final properties back (`canmount`, ...)
//! 6. `promote`: T takes over the factory snapshot, so the kept dataset can go one day
//! 7. `erase` (only with `erase`, only data): destroy `T.reset-<id>`
//!
//! The plan is computed from what exists ([`plan_swap`], pure): a power cut after any command
//! leaves a state from which the same request plans exactly the remaining steps, and the request
//! stays in the state record until the last one ran. `org.bootenv:reset=<id>` on T tells a swapped
//! T from an untouched one.

use crate::model::layout::{PROP_FACTORY, PROP_MEMBER};
use crate::model::names::printable;
use crate::model::state::{ResetMode, ResetRequest};
use crate::sys::zfs::Zfs;
use anyhow::{bail, Context};

pub use crate::model::layout::{PROP_CANMOUNT, PROP_DATA, PROP_RESET, PROP_SAVED};

/// What a swapped-in dataset starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A clone of this snapshot of the dataset (the name after `@`).
    Snapshot(String),
    /// An empty file system.
    Empty,
}

/// One dataset to reset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swap {
    /// `config` or `data`: names failpoints and reports.
    pub role: &'static str,
    /// The dataset reset.
    pub target: String,
    /// What it starts from again.
    pub source: Source,
    /// Destroy the previous dataset when done.
    pub erase: bool,
}

/// What exists of one swap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwapFacts {
    /// T exists.
    pub target: bool,
    /// T's `org.bootenv:reset`.
    pub target_reset: Option<String>,
    /// T's origin.
    pub target_origin: Option<String>,
    /// `T@reset-<id>` exists.
    pub marked: bool,
    /// `T.reset-<id>` exists.
    pub kept: bool,
    /// `T.new-<id>` exists.
    pub fresh: bool,
}

/// One command of a swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Snapshot the previous content.
    Mark,
    /// Make the fresh dataset.
    Prepare,
    /// Move T aside.
    Park,
    /// Move the fresh dataset to T.
    Install,
    /// Give T its final properties.
    Finish,
    /// Promote T.
    Promote,
    /// Destroy the kept dataset.
    Erase,
}

impl Step {
    /// The step's name in failpoints and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Mark => "marked",
            Step::Prepare => "prepared",
            Step::Park => "parked",
            Step::Install => "installed",
            Step::Finish => "finished",
            Step::Promote => "promoted",
            Step::Erase => "erased",
        }
    }
}

/// Names of a swap's datasets.
pub fn kept_name(target: &str, id: &str) -> String {
    format!("{target}.reset-{id}")
}

fn fresh_name(target: &str, id: &str) -> String {
    format!("{target}.new-{id}")
}

fn mark_name(id: &str) -> String {
    format!("reset-{id}")
}

/// The steps left for one swap, from what exists. `Err` when the pool is in a state no step
/// leads to (a dataset the reset needs has disappeared).
pub fn plan_swap(swap: &Swap, id: &str, f: &SwapFacts) -> Result<Vec<Step>, String> {
    let snapshot_source = matches!(swap.source, Source::Snapshot(_));
    let done_tail = |promote: bool, kept: bool| {
        let mut v = vec![Step::Finish];
        if promote {
            v.push(Step::Promote);
        }
        if swap.erase && kept {
            v.push(Step::Erase);
        }
        v
    };
    let swapped = f.target && f.target_reset.as_deref() == Some(id);
    if swapped {
        let kept_mark = format!("{}@", kept_name(&swap.target, id));
        let still_clone = f
            .target_origin
            .as_deref()
            .is_some_and(|o| o.starts_with(&kept_mark));
        return Ok(done_tail(still_clone, f.kept));
    }
    match (f.target, f.kept) {
        (true, false) => {
            let mut v = Vec::new();
            if !f.marked {
                v.push(Step::Mark);
            }
            if !f.fresh {
                v.push(Step::Prepare);
            }
            v.extend([Step::Park, Step::Install]);
            v.extend(done_tail(snapshot_source, true));
            Ok(v)
        }
        (false, true) => {
            let mut v = Vec::new();
            if !f.fresh {
                v.push(Step::Prepare);
            }
            v.push(Step::Install);
            v.extend(done_tail(snapshot_source, true));
            Ok(v)
        }
        (true, true) => Err(format!(
            "{} and {} both exist and {} was not put there by reset {id}",
            swap.target,
            kept_name(&swap.target, id),
            swap.target
        )),
        (false, false) => Err(format!("{} does not exist", swap.target)),
    }
}

/// Reads what exists of a swap.
pub fn facts(zfs: &dyn Zfs, swap: &Swap, id: &str) -> anyhow::Result<SwapFacts> {
    let exists = |ds: &str| -> anyhow::Result<Option<crate::sys::zfs::Dataset>> {
        Ok(zfs.list(ds)?.datasets.into_iter().find(|d| d.name == ds))
    };
    let t = exists(&swap.target)?;
    let target_reset = match &t {
        Some(_) => zfs
            .local_props(&swap.target)?
            .into_iter()
            .find(|(k, _)| k == PROP_RESET)
            .map(|(_, v)| v),
        None => None,
    };
    let marked = t.is_some()
        && zfs
            .snapshots(&swap.target)?
            .iter()
            .any(|s| s.ends_with(&format!("@{}", mark_name(id))));
    Ok(SwapFacts {
        target: t.is_some(),
        target_reset,
        target_origin: t.and_then(|d| d.origin),
        marked,
        kept: exists(&kept_name(&swap.target, id))?.is_some(),
        fresh: exists(&fresh_name(&swap.target, id))?.is_some(),
    })
}

/// The properties T had before the reset, to give the fresh dataset: from T (untouched, or
/// already swapped: the fresh dataset was given them), else from where T was kept.
fn original_props(
    zfs: &dyn Zfs,
    swap: &Swap,
    id: &str,
    f: &SwapFacts,
) -> anyhow::Result<Vec<(String, String)>> {
    let from = if f.target {
        swap.target.clone()
    } else {
        kept_name(&swap.target, id)
    };
    let mut props = zfs.local_props(&from)?;
    // The canmount it had before any swap step: recorded when a step turned it off.
    let canmount = props
        .iter()
        .find(|(k, _)| k == PROP_CANMOUNT)
        .or_else(|| props.iter().find(|(k, _)| k == "canmount"))
        .map_or_else(|| "on".to_string(), |(_, v)| v.clone());
    props.retain(|(k, _)| crate::model::layout::carried_to_clone(k));
    props.push(("canmount".into(), canmount));
    Ok(props)
}

fn canmount(props: &[(String, String)]) -> &str {
    props
        .iter()
        .find(|(k, _)| k == "canmount")
        .map_or("on", |(_, v)| v.as_str())
}

/// Runs one step. Every step is a single ZFS change (Park: one property change, one rename).
fn run_step(
    zfs: &dyn Zfs,
    swap: &Swap,
    id: &str,
    step: &Step,
    props: &[(String, String)],
) -> anyhow::Result<()> {
    let t = swap.target.as_str();
    let kept = kept_name(t, id);
    let fresh = fresh_name(t, id);
    match step {
        Step::Mark => zfs.snapshot(t, &mark_name(id), false),
        Step::Prepare => {
            let mut p: Vec<(&str, &str)> = props
                .iter()
                .filter(|(k, _)| k != "canmount")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            p.push(("canmount", "off"));
            p.push((PROP_CANMOUNT, canmount(props)));
            p.push((PROP_RESET, id));
            match &swap.source {
                Source::Snapshot(snap) => {
                    // The factory snapshot sits on T, or on the kept dataset once T moved.
                    let owner = if zfs.list(t)?.datasets.iter().any(|d| d.name == t) {
                        t
                    } else {
                        kept.as_str()
                    };
                    zfs.clone_snapshot(&format!("{owner}@{snap}"), &fresh, &p)
                }
                Source::Empty => zfs.create(&fresh, &p),
            }
        }
        Step::Park => {
            zfs.set(
                t,
                &[
                    ("canmount", "off"),
                    (PROP_CANMOUNT, canmount(props)),
                    (PROP_SAVED, t),
                ],
            )?;
            zfs.rename(t, &kept)
        }
        Step::Install => zfs.rename(&fresh, t),
        Step::Finish => zfs.set(t, &[("canmount", canmount(props))]),
        Step::Promote => zfs.promote(t),
        Step::Erase => zfs.destroy(&kept, true),
    }
}

/// The swaps of a request: the BE's config member, and for a full reset every dataset marked
/// `org.bootenv:data=reset` outside the BEs and bootenv's state.
pub fn swaps(
    zfs: &dyn Zfs,
    inv: &crate::model::inventory::Inventory,
    req: &ResetRequest,
) -> anyhow::Result<Vec<Swap>> {
    let be = crate::model::names::BeName::new(&req.be)?;
    let be = inv
        .get(&be)
        .with_context(|| format!("boot environment {} does not exist", req.be))?;
    // The config member, by role; while a reset of it is under way it may be parked as
    // `<config>.reset-<id>`, whose name gives the member's.
    let suffix = format!(".reset-{}", req.id);
    let config = zfs
        .list(&be.dataset)?
        .datasets
        .iter()
        .filter(|d| d.prop(PROP_MEMBER) == Some(crate::model::layout::MEMBER_CONFIG))
        .find_map(|d| match d.name.strip_suffix(&suffix) {
            Some(t) => Some(t.to_owned()),
            None if !d.name.contains(".reset-") && !d.name.contains(".new-") => {
                Some(d.name.clone())
            }
            None => None,
        })
        .with_context(|| {
            format!(
                "boot environment {} has no config dataset ({PROP_MEMBER}=config)",
                req.be
            )
        })?;
    let factory = be
        .factory
        .clone()
        .unwrap_or_else(|| crate::model::layout::FACTORY_SNAPSHOT.to_string());
    let mut out = vec![Swap {
        role: "config",
        target: config,
        source: Source::Snapshot(factory),
        erase: false,
    }];
    if req.mode == ResetMode::Full {
        let root = crate::model::layout::root_container(&inv.pool);
        let state = crate::model::layout::state_dataset(&inv.pool);
        out.extend(data_swaps(zfs, inv.pool.as_str(), &[root, state], req)?);
    }
    Ok(out)
}

/// The data swaps of a full reset in `pool`: every dataset marked `org.bootenv:data=reset`
/// there, outside the datasets named in `exclude` (and their descendants). A data pool's
/// swaps stay in that pool: the factory snapshot of its data lives beside the data.
pub fn data_swaps(
    zfs: &dyn Zfs,
    pool: &str,
    exclude: &[String],
    req: &ResetRequest,
) -> anyhow::Result<Vec<Swap>> {
    let mut out = Vec::new();
    // Targets by name; a swap under way shows as `<T>.reset-<id>` or `<T>.new-<id>`.
    let mut targets: Vec<String> = Vec::new();
    for (ds, v) in zfs.local_prop(pool, PROP_DATA)? {
        let inside = |c: &str| ds == c || ds.starts_with(&format!("{c}/"));
        if v != "reset" || exclude.iter().any(|c| inside(c)) {
            continue;
        }
        let t = match (
            ds.strip_suffix(&format!(".reset-{}", req.id)),
            ds.strip_suffix(&format!(".new-{}", req.id)),
        ) {
            (Some(t), _) | (_, Some(t)) => t.to_owned(),
            _ if ds.contains(".reset-") || ds.contains(".new-") => continue,
            _ => ds,
        };
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    targets.sort();
    for t in targets {
        let kept = kept_name(&t, &req.id);
        let here = if zfs.list(&t)?.datasets.iter().any(|d| d.name == t) {
            t.clone()
        } else {
            kept
        };
        let snap = zfs
            .local_props(&here)?
            .into_iter()
            .find(|(k, _)| k == PROP_FACTORY)
            .map(|(_, v)| v);
        let source = match snap {
            Some(s)
                if zfs
                    .snapshots(&here)?
                    .iter()
                    .any(|x| x.ends_with(&format!("@{s}"))) =>
            {
                Source::Snapshot(s)
            }
            Some(s)
                if zfs
                    .snapshots(&t)
                    .map(|v| v.iter().any(|x| x.ends_with(&format!("@{s}"))))
                    .unwrap_or(false) =>
            {
                Source::Snapshot(s)
            }
            _ => Source::Empty,
        };
        out.push(Swap {
            role: "data",
            target: t,
            source,
            erase: req.erase,
        });
    }
    Ok(out)
}

/// What a finished reset did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `previous -> kept` for every dataset kept aside.
    pub kept: Vec<String>,
    /// Kept datasets destroyed because the request said `erase`.
    pub erased: Vec<String>,
}

/// Why a reset did not finish.
#[derive(Debug)]
pub enum Stop {
    /// A failpoint cut it short (tests): the request stays and resumes.
    Failpoint(String),
    /// It cannot be done at all (no factory snapshot, no config): drop the request.
    Impossible(String),
    /// A step failed: the request stays; the boot must not go on as if it were done.
    Failed(anyhow::Error),
}

/// Carries out (or resumes) a reset. `failpoint(name)` is called after every step and returns
/// true to stop there, as a power cut would.
pub fn run(
    zfs: &dyn Zfs,
    inv: &crate::model::inventory::Inventory,
    req: &ResetRequest,
    failpoint: &dyn Fn(&str) -> bool,
) -> Result<Outcome, Stop> {
    let swaps = swaps(zfs, inv, req).map_err(|e| Stop::Impossible(format!("{e:#}")))?;
    run_swaps(zfs, &swaps, req, failpoint)
}

/// Carries out (or resumes) the part of a full reset that lies in data pool `pool`: its
/// datasets marked `org.bootenv:data=reset`, the same steps with the same failpoints
/// (`reset:<step>:data`).
pub fn run_data_pool(
    zfs: &dyn Zfs,
    pool: &str,
    req: &ResetRequest,
    failpoint: &dyn Fn(&str) -> bool,
) -> Result<Outcome, Stop> {
    let swaps = data_swaps(zfs, pool, &[], req).map_err(Stop::Failed)?;
    run_swaps(zfs, &swaps, req, failpoint)
}

fn run_swaps(
    zfs: &dyn Zfs,
    swaps: &[Swap],
    req: &ResetRequest,
    failpoint: &dyn Fn(&str) -> bool,
) -> Result<Outcome, Stop> {
    let mut outcome = Outcome::default();
    for swap in swaps {
        let f = facts(zfs, swap, &req.id).map_err(Stop::Failed)?;
        if let Source::Snapshot(snap) = &swap.source {
            let owner_has = |ds: &str| {
                zfs.snapshots(ds)
                    .map(|v| v.iter().any(|s| s.ends_with(&format!("@{snap}"))))
            };
            let swapped = f.target && f.target_reset.as_deref() == Some(req.id.as_str());
            if !swapped && !f.fresh {
                let has = owner_has(&swap.target).map_err(Stop::Failed)?
                    || (f.kept
                        && owner_has(&kept_name(&swap.target, &req.id)).map_err(Stop::Failed)?);
                if !has {
                    return Err(Stop::Impossible(format!(
                        "{} has no factory snapshot @{snap} (taken when the boot environment was created)",
                        printable(&swap.target)
                    )));
                }
            }
        }
        let steps = plan_swap(swap, &req.id, &f).map_err(Stop::Impossible)?;
        let props = original_props(zfs, swap, &req.id, &f).map_err(Stop::Failed)?;
        for step in steps {
            log::info!(
                "factory reset of {}: {} ({})",
                swap.target,
                step.name(),
                swap.role
            );
            run_step(zfs, swap, &req.id, &step, &props)
                .with_context(|| format!("factory reset step {} of {}", step.name(), swap.target))
                .map_err(Stop::Failed)?;
            let fp = format!("reset:{}:{}", step.name(), swap.role);
            if failpoint(&fp) {
                return Err(Stop::Failpoint(fp));
            }
        }
        let kept = kept_name(&swap.target, &req.id);
        if swap.erase {
            log::warn!(
                "factory reset: ERASED the previous {} ({kept}) as the request asked",
                swap.target
            );
            outcome.erased.push(kept);
        } else {
            outcome.kept.push(format!("{} -> {kept}", swap.target));
        }
    }
    Ok(outcome)
}

/// A reset id from a time: `YYYYMMDDTHHMMSSZ` (UTC).
pub fn id_from_time(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A new request's id: from the time, made unique among what earlier resets left.
pub fn new_id(zfs: &dyn Zfs, pool: &str, secs: u64) -> anyhow::Result<String> {
    let base = id_from_time(secs);
    let names: Vec<String> = zfs
        .list(pool)?
        .datasets
        .into_iter()
        .map(|d| d.name)
        .collect();
    let taken = |id: &str| {
        names
            .iter()
            .any(|n| n.ends_with(&format!(".reset-{id}")) || n.ends_with(&format!(".new-{id}")))
    };
    let mut id = base.clone();
    let mut n = 1;
    while taken(&id) {
        n += 1;
        id = format!("{base}-{n}");
        if n > 1000 {
            bail!("cannot find a free reset id");
        }
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swap(erase: bool) -> Swap {
        Swap {
            role: "data",
            target: "tank/data".into(),
            source: Source::Snapshot("factory".into()),
            erase,
        }
    }

    #[test]
    fn ids_are_utc_times() {
        assert_eq!(id_from_time(0), "19700101T000000Z");
        assert_eq!(id_from_time(1_795_330_000), "20261122T064640Z");
        assert_eq!(id_from_time(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn a_fresh_reset_plans_every_step() {
        let f = SwapFacts {
            target: true,
            ..Default::default()
        };
        use Step::*;
        assert_eq!(
            plan_swap(&swap(false), "X", &f).unwrap(),
            vec![Mark, Prepare, Park, Install, Finish, Promote]
        );
        assert_eq!(
            plan_swap(&swap(true), "X", &f).unwrap(),
            vec![Mark, Prepare, Park, Install, Finish, Promote, Erase]
        );
        let empty = Swap {
            source: Source::Empty,
            ..swap(false)
        };
        assert_eq!(
            plan_swap(&empty, "X", &f).unwrap(),
            vec![Mark, Prepare, Park, Install, Finish]
        );
    }

    #[test]
    fn every_interrupted_state_plans_only_what_is_left() {
        use Step::*;
        let t = |reset: Option<&str>, origin: Option<&str>, marked, kept, fresh| SwapFacts {
            target: true,
            target_reset: reset.map(Into::into),
            target_origin: origin.map(Into::into),
            marked,
            kept,
            fresh,
        };
        let cases: Vec<(SwapFacts, Vec<Step>)> = vec![
            (
                t(None, None, true, false, false),
                vec![Prepare, Park, Install, Finish, Promote, Erase],
            ),
            (
                t(None, None, true, false, true),
                vec![Park, Install, Finish, Promote, Erase],
            ),
            (
                SwapFacts {
                    target: false,
                    kept: true,
                    fresh: true,
                    ..Default::default()
                },
                vec![Install, Finish, Promote, Erase],
            ),
            (
                t(
                    Some("X"),
                    Some("tank/data.reset-X@factory"),
                    false,
                    true,
                    false,
                ),
                vec![Finish, Promote, Erase],
            ),
            (t(Some("X"), None, false, true, false), vec![Finish, Erase]),
            (t(Some("X"), None, false, false, false), vec![Finish]),
        ];
        for (f, want) in cases {
            assert_eq!(plan_swap(&swap(true), "X", &f).unwrap(), want, "{f:?}");
        }
        // A dataset the reset needs is gone, or a name collides: refuse, do not guess.
        assert!(plan_swap(&swap(false), "X", &SwapFacts::default()).is_err());
        assert!(plan_swap(&swap(false), "X", &t(None, None, false, true, false)).is_err());
    }

    mod on_a_pool {
        use super::super::*;
        use crate::model::inventory::Inventory;
        use crate::model::names::PoolName;
        use crate::model::state::{ResetMode, ResetRequest};
        use crate::sys::zfs::fake::FakeZfs;
        use crate::sys::zfs::Zfs;
        use std::cell::RefCell;

        fn pool() -> FakeZfs {
            let z = FakeZfs::new();
            z.add_pool("tank");
            z.import("tank").unwrap().unwrap();
            z.add_fs("tank/ROOT", &[("canmount", "off"), ("mountpoint", "none")]);
            for be in ["v1", "v2"] {
                z.add_fs(
                    &format!("tank/ROOT/{be}"),
                    &[
                        ("canmount", "noauto"),
                        ("mountpoint", "/"),
                        ("org.bootenv:factory", "factory"),
                    ],
                );
                z.add_fs(
                    &format!("tank/ROOT/{be}/config"),
                    &[
                        ("canmount", "noauto"),
                        ("mountpoint", "/etc/config"),
                        ("org.bootenv:member", "config"),
                        ("compression", "zstd"),
                    ],
                );
                z.snapshot(&format!("tank/ROOT/{be}"), "factory", true)
                    .unwrap();
            }
            z.add_fs(
                "tank/data",
                &[
                    ("canmount", "on"),
                    ("mountpoint", "/srv/data"),
                    (PROP_DATA, "reset"),
                    ("org.bootenv:factory", "factory"),
                ],
            );
            z.snapshot("tank/data", "factory", false).unwrap();
            z.add_fs(
                "tank/scratch",
                &[(PROP_DATA, "reset"), ("mountpoint", "/srv/scratch")],
            );
            z.add_fs("tank/other", &[("mountpoint", "/srv/other")]);
            z
        }

        fn inv(z: &FakeZfs) -> Inventory {
            let p = PoolName::new("tank").unwrap();
            Inventory::from_listing(&p, &z.list("tank/ROOT").unwrap(), None)
        }

        fn req(mode: ResetMode, erase: bool) -> ResetRequest {
            ResetRequest {
                be: "v1".into(),
                mode,
                erase,
                id: "20261122T000000Z".into(),
                origin: "cli".into(),
            }
        }

        /// Everything about the pool that a reset may change, as text.
        /// [`dump`] of what a config reset of v1 must not touch: v2 and the shared datasets.
        fn others(z: &FakeZfs) -> Vec<String> {
            dump(z)
                .into_iter()
                .filter(|l| {
                    l.starts_with("tank/ROOT/v2")
                        || l.starts_with("tank/data")
                        || l.starts_with("tank/other")
                })
                .collect()
        }

        fn dump(z: &FakeZfs) -> Vec<String> {
            z.dump("tank")
        }

        #[test]
        fn a_config_reset_swaps_in_a_clone_of_the_factory_snapshot_and_keeps_the_old() {
            let z = pool();
            let before_v2 = others(&z);
            let out = run(&z, &inv(&z), &req(ResetMode::Config, false), &|_| false).unwrap();
            let id = "20261122T000000Z";
            assert_eq!(
                out.kept,
                vec![format!(
                    "tank/ROOT/v1/config -> tank/ROOT/v1/config.reset-{id}"
                )]
            );
            let new = z
                .list("tank/ROOT/v1/config")
                .unwrap()
                .datasets
                .into_iter()
                .find(|d| d.name == "tank/ROOT/v1/config")
                .unwrap();
            assert_eq!(new.origin, None, "promoted");
            assert_eq!(
                z.get("tank/ROOT/v1/config", PROP_RESET).as_deref(),
                Some(id)
            );
            assert_eq!(
                z.get("tank/ROOT/v1/config", "canmount").as_deref(),
                Some("noauto")
            );
            assert_eq!(
                z.get("tank/ROOT/v1/config", "compression").as_deref(),
                Some("zstd"),
                "local properties carried over"
            );
            assert!(z.has_snapshot("tank/ROOT/v1/config@factory"));
            let kept = format!("tank/ROOT/v1/config.reset-{id}");
            assert_eq!(z.get(&kept, "canmount").as_deref(), Some("off"));
            assert!(z.has_snapshot(&format!("{kept}@reset-{id}")));
            // The BE still boots with one config member; other BEs and shared data are untouched.
            let i = inv(&z);
            let members: Vec<&str> = i
                .bes
                .iter()
                .find(|b| b.name.as_str() == "v1")
                .unwrap()
                .members
                .iter()
                .map(|m| m.dataset.as_str())
                .collect();
            assert_eq!(members, vec!["tank/ROOT/v1/config"]);
            let after_v2 = others(&z);
            assert_eq!(before_v2, after_v2);
        }

        #[test]
        fn a_full_reset_covers_the_marked_data_and_erase_destroys_only_the_previous_data() {
            let z = pool();
            let out = run(&z, &inv(&z), &req(ResetMode::Full, false), &|_| false).unwrap();
            assert_eq!(out.kept.len(), 3, "{out:?}");
            assert!(z.has_snapshot("tank/data@factory"));
            assert!(z.has_snapshot("tank/data.reset-20261122T000000Z@reset-20261122T000000Z"));
            assert_eq!(z.get("tank/data", "canmount").as_deref(), Some("on"));
            assert_eq!(
                z.get("tank/data.reset-20261122T000000Z", "canmount")
                    .as_deref(),
                Some("off")
            );
            // Without a factory snapshot, a data set starts empty.
            assert_eq!(z.snapshots("tank/scratch").unwrap(), Vec::<String>::new());
            assert!(
                z.list("tank/other").unwrap().datasets.len() == 1
                    && z.get("tank/other", PROP_RESET).is_none()
            );

            let z = pool();
            let out = run(&z, &inv(&z), &req(ResetMode::Full, true), &|_| false).unwrap();
            assert_eq!(out.erased.len(), 2);
            assert!(z
                .list("tank/data.reset-20261122T000000Z")
                .unwrap()
                .datasets
                .is_empty());
            assert!(
                !z.list("tank/ROOT/v1/config.reset-20261122T000000Z")
                    .unwrap()
                    .datasets
                    .is_empty(),
                "the previous config stays"
            );
            assert!(
                z.changes()
                    .iter()
                    .all(|c| !c.starts_with("zfs destroy") || c.contains(".reset-")),
                "{:?}",
                z.changes()
            );
        }

        #[test]
        fn a_power_cut_after_any_step_resumes_to_the_same_end() {
            let reference = pool();
            run(
                &reference,
                &inv(&reference),
                &req(ResetMode::Full, true),
                &|_| false,
            )
            .unwrap();
            let want = dump(&reference);
            let names = RefCell::new(Vec::new());
            let probe = pool();
            run(&probe, &inv(&probe), &req(ResetMode::Full, true), &|n| {
                names.borrow_mut().push(n.to_owned());
                false
            })
            .unwrap();
            let names = names.into_inner();
            assert!(names.len() >= 15, "{names:?}");
            for (k, cut) in names.iter().enumerate() {
                let z = pool();
                let seen = RefCell::new(0usize);
                let stopped = run(&z, &inv(&z), &req(ResetMode::Full, true), &|_| {
                    let mut s = seen.borrow_mut();
                    *s += 1;
                    *s == k + 1
                });
                assert!(
                    matches!(stopped, Err(Stop::Failpoint(ref n)) if n == cut),
                    "cut {k} at {cut}"
                );
                // The next boot: the same request, from what the pool holds now.
                run(&z, &inv(&z), &req(ResetMode::Full, true), &|_| false)
                    .unwrap_or_else(|e| panic!("resume after {cut}: {e:?}"));
                assert_eq!(dump(&z), want, "after a cut at {cut}");
            }
        }

        #[test]
        fn without_a_factory_snapshot_the_request_is_dropped_not_guessed() {
            let z = pool();
            z.add_fs(
                "tank/ROOT/v3",
                &[("canmount", "noauto"), ("mountpoint", "/")],
            );
            z.add_fs(
                "tank/ROOT/v3/config",
                &[
                    ("org.bootenv:member", "config"),
                    ("mountpoint", "/etc/config"),
                ],
            );
            let r = ResetRequest {
                be: "v3".into(),
                ..req(ResetMode::Config, false)
            };
            let before = z.changes();
            assert!(
                matches!(run(&z, &inv(&z), &r, &|_| false), Err(Stop::Impossible(ref w)) if w.contains("no factory snapshot"))
            );
            assert_eq!(z.changes(), before);
        }

        #[test]
        fn ids_are_unique_among_earlier_resets() {
            let z = pool();
            run(&z, &inv(&z), &req(ResetMode::Config, false), &|_| false).unwrap();
            let secs = 1_795_305_600; // 20261122T000000Z
            assert_eq!(id_from_time(secs), "20261122T000000Z");
            assert_eq!(new_id(&z, "tank", secs).unwrap(), "20261122T000000Z-2");
        }
    }
}
