//! What each verb did, as a value: the verbs return these, and the CLI renders one as text
//! (its `Display`) or, with `--json`, as a JSON document of schema version [`SCHEMA`]
//! (ARCHITECTURE.md "JSON output"). A verb that runs another keeps the other's outcome as a
//! field (an upgrade holds its sync and its trial) instead of pasting its text.

use crate::bootloader::bootfiles::Installed;
use crate::model::failure::{ErrorKind, Failure};
use crate::model::names::{printable, BeName};
use crate::model::state::State;
use crate::model::state::{self, EventKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The version of every JSON document bootenv prints. Within a version, keys are only added.
pub const SCHEMA: u32 = 1;

/// What a verb did.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "verb", rename_all = "kebab-case")]
pub enum Outcome {
    /// `status`.
    Status(StatusReport),
    /// `list`.
    List(Listing),
    /// `prepare-pool`.
    PreparePool(PoolPrepared),
    /// `create`.
    Create(Created),
    /// `activate`.
    Activate(Activated),
    /// `mark-good`.
    MarkGood(MarkedGood),
    /// `sync-boot`.
    SyncBoot(Synced),
    /// `grub-menu`.
    GrubMenu(MenuScript),
    /// `upgrade`.
    Upgrade(Upgraded),
    /// `rollback`.
    Rollback(Walked),
    /// `rollforward`.
    Rollforward(Walked),
    /// `mount`.
    Mount(Mounted),
    /// `unmount`.
    Unmount(Unmounted),
    /// `diff`.
    Diff(Diffed),
    /// `destroy`.
    Destroy(Destroyed),
    /// `rename`.
    Rename(Renamed),
    /// `export`.
    Export(Exported),
    /// `import`.
    Import(Imported),
    /// `install`.
    Install(InstalledDisk),
    /// `factory-reset`.
    FactoryReset(ResetOutcome),
    /// `data-pools`.
    DataPools(DataPoolsOutcome),
}

impl Outcome {
    /// The JSON document: `{"schema": 1, "verb": ..., <the outcome's keys>}`.
    pub fn json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_else(|e| {
            serde_json::json!({ "verb": null, "error": { "kind": "failed", "message": e.to_string() } })
        });
        if let Some(o) = v.as_object_mut() {
            o.insert("schema".into(), SCHEMA.into());
        }
        format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Status(o) => o.fmt(f),
            Outcome::List(o) => o.fmt(f),
            Outcome::PreparePool(o) => o.fmt(f),
            Outcome::Create(o) => o.fmt(f),
            Outcome::Activate(o) => o.fmt(f),
            Outcome::MarkGood(o) => o.fmt(f),
            Outcome::SyncBoot(o) => o.fmt(f),
            Outcome::GrubMenu(o) => o.fmt(f),
            Outcome::Upgrade(o) => o.fmt(f),
            Outcome::Rollback(o) | Outcome::Rollforward(o) => o.fmt(f),
            Outcome::Mount(o) => o.fmt(f),
            Outcome::Unmount(o) => o.fmt(f),
            Outcome::Diff(o) => o.fmt(f),
            Outcome::Destroy(o) => o.fmt(f),
            Outcome::Rename(o) => o.fmt(f),
            Outcome::Export(o) => o.fmt(f),
            Outcome::Import(o) => o.fmt(f),
            Outcome::Install(o) => o.fmt(f),
            Outcome::FactoryReset(o) => o.fmt(f),
            Outcome::DataPools(o) => o.fmt(f),
        }
    }
}

/// The kind of an error: the first typed error in its chain that names one, else
/// [`ErrorKind::Failed`].
pub fn kind_of(e: &anyhow::Error) -> ErrorKind {
    for c in e.chain() {
        if let Some(f) = c.downcast_ref::<Failure>() {
            return f.kind;
        }
        if c.downcast_ref::<crate::bootloader::esp::NoEsp>().is_some() {
            return ErrorKind::NoEsp;
        }
        if c.downcast_ref::<KernelsMissing>().is_some() {
            return ErrorKind::KernelsMissing;
        }
        if c.downcast_ref::<crate::model::names::NameError>().is_some() {
            return ErrorKind::Invalid;
        }
        if c.downcast_ref::<crate::sys::lock::Busy>().is_some() {
            return ErrorKind::Busy;
        }
    }
    ErrorKind::Failed
}

/// The JSON document of a failed verb: `{"schema": 1, "verb": ..., "error": {"kind", "message"}}`.
pub fn error_json(verb: Option<&str>, kind: ErrorKind, message: &str) -> String {
    let v = serde_json::json!({
        "schema": SCHEMA,
        "verb": verb,
        "error": { "kind": kind, "message": message },
    });
    format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
}

/// What was done to put a BE's own kernel and initramfs on the ESP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelEntry {
    /// The BE.
    pub be: String,
    /// What happened.
    pub result: KernelResult,
    /// The directory its entry names, from the ESP's root (when it has one).
    pub dir: Option<String>,
    /// Why it failed (`result` is `failed`).
    pub error: Option<String>,
}

/// See [`KernelEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelResult {
    /// Copied to the ESP.
    Copied,
    /// Another BE's identical copy is shared.
    Shared,
    /// Its entry already named its own files.
    UpToDate,
    /// Its files cannot be read from here (a chroot of another BE); its entry on the ESP is
    /// what there is.
    OnEsp,
    /// Left as it is: mounted outside this chroot.
    LeftAsIs,
    /// It has no kernel, or copying failed (see `error`).
    Failed,
}

impl KernelEntry {
    /// What [`crate::bootloader::bootfiles::install_kernel`] did.
    pub fn installed(be: &BeName, dir: String, how: Installed) -> KernelEntry {
        let result = match how {
            Installed::Copied => KernelResult::Copied,
            Installed::Shared => KernelResult::Shared,
            Installed::UpToDate => KernelResult::UpToDate,
        };
        KernelEntry {
            be: be.to_string(),
            result,
            dir: Some(dir),
            error: None,
        }
    }
}

impl fmt::Display for KernelEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (be, dir) = (&self.be, self.dir.as_deref().unwrap_or("?"));
        match self.result {
            KernelResult::Copied => write!(f, "{be}: kernel copied to {dir}"),
            KernelResult::Shared => {
                write!(f, "{be}: kernel shared with other boot environments ({dir})")
            }
            KernelResult::UpToDate => write!(f, "{be}: kernel up to date ({dir})"),
            KernelResult::OnEsp => write!(f, "{be}: kernel on the ESP ({dir})"),
            KernelResult::LeftAsIs => write!(f, "{be}: left as it is (mounted outside this chroot; `bootenv sync-boot {be}` on the running system copies its kernel)"),
            KernelResult::Failed => write!(f, "{be}: {}", self.error.as_deref().unwrap_or("failed")),
        }
    }
}

fn lines(f: &mut fmt::Formatter<'_>, notes: &[String]) -> fmt::Result {
    for n in notes {
        writeln!(f, "{n}")?;
    }
    Ok(())
}

// ---- status and list ----

/// `bootenv status`: how this system booted, GRUB's variables, the ESP and the state record.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// The boot report's keys as the agent wrote them, and its warnings.
    pub boot: BootSection,
    /// GRUB's variables, when the environment block can be read.
    pub grub: Option<GrubVars>,
    /// Why GRUB's variables cannot be shown.
    pub grub_problem: Option<String>,
    /// BEs whose kernel entry on the ESP is stale or missing.
    pub esp_problems: Vec<EspProblem>,
    /// BEs that could boot but are left out of the menu, and why.
    pub menu_problems: Vec<MenuProblem>,
    /// Datasets under `<pool>/ROOT` that are not boot environments, and why.
    pub ignored: Vec<String>,
    /// This boot was a trial, and it is committed since.
    pub trial_committed: bool,
    /// The state record, each event with its sentence.
    pub state: Option<StateView>,
    /// Why the state record cannot be shown (or was found unreadable).
    pub state_problem: Option<String>,
    /// The data pools the system pool names, and where each stands.
    pub data_pools: Vec<DataPoolRow>,
    /// Words of `org.bootenv:data-pools` left out, or why the data pools cannot be shown.
    pub data_problems: Vec<String>,
}

/// The boot report (`/run/bootenv/boot`).
#[derive(Clone, Debug, Serialize)]
pub struct BootSection {
    /// Its keys (`be`, `dataset`, `pool`, `choice`, ...), except `warning`.
    #[serde(flatten)]
    pub keys: BTreeMap<String, String>,
    /// Its `warning` lines.
    pub warnings: Vec<String>,
}

impl BootSection {
    fn get(&self, k: &str) -> Option<&str> {
        self.keys.get(k).map(String::as_str)
    }
}

/// GRUB's variables in the environment block (absent or empty as `null`).
#[derive(Clone, Debug, Serialize)]
pub struct GrubVars {
    /// `bootenv_default`.
    pub default: Option<String>,
    /// `bootenv_next`.
    pub next: Option<String>,
    /// `bootenv_trial`.
    pub trial: Option<String>,
    /// `bootenv_tries`.
    pub tries: Option<String>,
}

/// A BE whose kernel entry on the ESP does not let GRUB boot what it holds.
#[derive(Clone, Debug, Serialize)]
pub struct EspProblem {
    /// The BE.
    pub be: String,
    /// `stale` or `missing`.
    pub kernel: EspKernel,
}

/// A BE left out of the menu.
#[derive(Clone, Debug, Serialize)]
pub struct MenuProblem {
    /// The BE.
    pub be: String,
    /// Why.
    pub why: String,
}

/// The state record as `status` shows it: its fields, each event with its sentence.
#[derive(Clone, Debug, Serialize)]
pub struct StateView {
    /// See [`State::last_good`].
    pub last_good: Option<String>,
    /// See [`State::trial`].
    pub trial: Option<crate::model::state::Trial>,
    /// See [`State::reset`].
    pub reset: Option<crate::model::state::ResetRequest>,
    /// See [`State::history`].
    pub history: Vec<String>,
    /// See [`State::events`].
    pub events: Vec<EventView>,
}

/// An event of the state record, with its sentence.
#[derive(Clone, Debug, Serialize)]
pub struct EventView {
    /// The event (`time`, `kind`).
    #[serde(flatten)]
    pub event: crate::model::state::Event,
    /// What it says.
    pub text: String,
}

impl StateView {
    /// The record, with a sentence per event.
    pub fn new(record: State) -> StateView {
        StateView {
            last_good: record.last_good,
            trial: record.trial,
            reset: record.reset,
            history: record.history,
            events: record
                .events
                .into_iter()
                .map(|event| EventView {
                    text: describe(&event.kind),
                    event,
                })
                .collect(),
        }
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.boot;
        writeln!(
            f,
            "booted: {} ({})",
            r.get("be").unwrap_or("?"),
            r.get("dataset").unwrap_or("?")
        )?;
        match r.get("choice") {
            Some("requested") => writeln!(f, "chosen: asked for on the kernel command line")?,
            Some("default") => writeln!(
                f,
                "chosen: the default ({})",
                r.get("source").unwrap_or("?")
            )?,
            Some("fallback") => writeln!(
                f,
                "chosen: FALLBACK: {} was asked for but did not boot: {}",
                r.get("requested").unwrap_or("?"),
                r.get("reason").unwrap_or("?")
            )?,
            _ => {}
        }
        if let Some(failed) = r.get("rollback") {
            writeln!(f, "ROLLBACK: the trial of {failed} used up its tries without being marked good; this boot is the known-good BE")?;
        }
        if let Some(left) = r.get("trial-tries-left") {
            if self.trial_committed {
                writeln!(
                    f,
                    "trial: this boot was a trial, and it is committed (marked good)"
                )?;
            } else {
                writeln!(f, "trial: this is a trial boot; {left} tries left after it; `bootenv mark-good` commits it")?;
            }
        }
        if let Some(reset) = r.get("reset") {
            writeln!(f, "factory reset before this boot: {reset}")?;
        }
        if let Some(h) = r.get("hostid") {
            writeln!(f, "hostid: adopted {h} from the pool label")?;
        }
        if let (Some(a), Some(b)) = (r.get("agent-start"), r.get("init-exec")) {
            writeln!(
                f,
                "timing: agent started at {a} s, init started at {b} s after the kernel"
            )?;
        }
        for w in &r.warnings {
            writeln!(f, "warning: {w}")?;
        }
        match (&self.grub, &self.grub_problem) {
            (Some(g), _) => {
                let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
                writeln!(
                    f,
                    "grub: default={} next={} trial={} tries={}",
                    v(&g.default),
                    v(&g.next),
                    v(&g.trial),
                    v(&g.tries)
                )?;
            }
            (None, Some(p)) => writeln!(f, "grub: {p}")?,
            (None, None) => {}
        }
        for m in &self.menu_problems {
            writeln!(f, "menu: {} is left out of the GRUB menu: {}", m.be, m.why)?;
        }
        for d in &self.data_pools {
            d.fmt(f)?;
        }
        for p in &self.data_problems {
            writeln!(f, "data pools: {p}")?;
        }
        for i in &self.ignored {
            writeln!(f, "note: {i}")?;
        }
        for p in &self.esp_problems {
            let be = &p.be;
            match p.kernel {
                EspKernel::Stale => writeln!(f, "ESP: the kernel or initramfs of {be} on the ESP is STALE: GRUB boots older files than {be} holds; `bootenv sync-boot {be}` copies them")?,
                _ => writeln!(f, "ESP: {be} has no kernel on the ESP and is not in the menu; `bootenv sync-boot {be}` copies it")?,
            }
        }
        if let Some(p) = &self.state_problem {
            writeln!(f, "state: {p}")?;
        }
        if let Some(st) = &self.state {
            writeln!(
                f,
                "last known-good: {}",
                st.last_good.as_deref().unwrap_or("none recorded")
            )?;
            if let Some(t) = &st.trial {
                writeln!(f, "trial pending: {} ({} tries)", t.be, t.tries)?;
            }
            if let Some(r) = &st.reset {
                // Begun at this boot, its system pool's part done: the data pools' part is
                // left to their import.
                let begun =
                    self.boot.get("be") == Some(r.be.as_str()) && self.boot.get("reset").is_some();
                let when = if begun {
                    "its data pools' part is done when they are imported (bootenv data-pools import)"
                } else {
                    "at its next boot"
                };
                writeln!(
                    f,
                    "factory reset pending: {} of {} (id {}), {when}",
                    mode_name(r),
                    r.be,
                    r.id
                )?;
            }
            for ev in st.events.iter().rev().take(5) {
                writeln!(f, "event @{}: {}", ev.event.time, ev.text)?;
            }
        }
        Ok(())
    }
}

/// `bootenv list`: the boot environments, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    /// The pool.
    pub pool: String,
    /// One entry per BE.
    pub boot_environments: Vec<ListEntry>,
    /// Datasets under `<pool>/ROOT` that are not boot environments, and why.
    pub ignored: Vec<String>,
}

/// One line of `bootenv list` (and one object of `bootenv list --json`, schema 1).
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

/// `sync-boot` found no kernel in these BEs (the menu was still written for the others).
#[derive(Debug)]
pub struct KernelsMissing(pub Vec<String>);

impl std::fmt::Display for KernelsMissing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no kernel in {}", self.0.join(", "))
    }
}

impl std::error::Error for KernelsMissing {}

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

// ---- verbs that change things ----

/// `bootenv prepare-pool`.
#[derive(Clone, Debug, Serialize)]
pub struct PoolPrepared {
    /// The pool.
    pub pool: String,
    /// `<pool>/ROOT`.
    pub root: DatasetStep,
    /// `<pool>/BOOTENV`.
    pub state: DatasetStep,
    /// Whether anything was created or marked.
    pub changed: bool,
}

/// What `prepare-pool` did to one dataset.
#[derive(Clone, Debug, Serialize)]
pub struct DatasetStep {
    /// The dataset.
    pub dataset: String,
    /// `exists`, `created` or `marked` (given `org.bootenv:layout`).
    pub action: &'static str,
}

impl fmt::Display for PoolPrepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in [&self.root, &self.state] {
            match s.action {
                "created" => writeln!(f, "created {}", s.dataset)?,
                "marked" => writeln!(
                    f,
                    "{} exists; marked with {}={}",
                    s.dataset,
                    crate::model::layout::PROP_LAYOUT,
                    crate::model::layout::LAYOUT_VERSION
                )?,
                _ => writeln!(f, "{} exists", s.dataset)?,
            }
        }
        Ok(())
    }
}

/// `bootenv create`.
#[derive(Clone, Debug, Serialize)]
pub struct Created {
    /// The new BE.
    pub be: String,
    /// Its root dataset.
    pub dataset: String,
    /// Its label.
    pub label: Option<String>,
    /// `org.bootenv:source`: where it came from.
    pub source: String,
    /// Its factory snapshot, when it was made from a tree.
    pub factory_snapshot: Option<String>,
    /// Its kernel put on the ESP and the menu rewritten (a clone, with an ESP to manage).
    pub boot: Option<Synced>,
    /// What went wrong after it was made (it exists).
    pub warnings: Vec<String>,
    /// Always true.
    pub changed: bool,
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.factory_snapshot {
            Some(s) => writeln!(
                f,
                "created boot environment {} ({}, label {:?}) with factory snapshot @{s}",
                self.be,
                self.dataset,
                self.label.as_deref().unwrap_or_default()
            )?,
            None => writeln!(
                f,
                "created boot environment {} ({}) from {}",
                self.be, self.dataset, self.source
            )?,
        }
        if let Some(b) = &self.boot {
            b.fmt(f)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// How `activate` made a BE boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivatedAs {
    /// The default from now on.
    Default,
    /// The next boot only.
    Once,
    /// On trial.
    Trial,
}

/// `bootenv activate` (and the activation inside `upgrade`, `rollback`, `rollforward`).
#[derive(Clone, Debug, Serialize)]
pub struct Activated {
    /// The BE.
    pub be: String,
    /// Its root dataset.
    pub dataset: String,
    /// How.
    pub activated_as: ActivatedAs,
    /// The trial's tries.
    pub tries: Option<u32>,
    /// It was the default already, with no trial under way, and the last default the state
    /// record's history names: nothing was recorded.
    pub was_default: bool,
    /// Whether anything changed: the default, a one-shot, a trial, or its kernel copied to the
    /// ESP.
    pub changed: bool,
    /// The trial this cancelled.
    pub cancelled_trial: Option<String>,
    /// Its kernel on the ESP (absent without an ESP to manage).
    pub kernel: Option<KernelEntry>,
    /// What rewriting the menu noted.
    pub notes: Vec<String>,
}

impl fmt::Display for Activated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(k) = &self.kernel {
            writeln!(f, "{k}")?;
        }
        if let Some(t) = &self.cancelled_trial {
            writeln!(f, "the trial of {t} is cancelled")?;
        }
        lines(f, &self.notes)?;
        let name = &self.be;
        match self.activated_as {
            ActivatedAs::Default if self.was_default => writeln!(
                f,
                "{name} is the default boot environment already (bootfs={}){}",
                self.dataset,
                if self.changed { "" } else { ": unchanged" }
            ),
            ActivatedAs::Default => writeln!(
                f,
                "{name} is now the default boot environment (bootfs={})",
                self.dataset
            ),
            ActivatedAs::Once => writeln!(
                f,
                "{name} boots next time only; the boot after that is the default again"
            ),
            ActivatedAs::Trial => writeln!(
                f,
                "{name} is on trial from the next boot: {} tries; `bootenv mark-good` in {name} makes it the default, else GRUB goes back to the default",
                self.tries.unwrap_or_default()
            ),
        }
    }
}

/// What `mark-good` found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GoodResult {
    /// Its trial is committed: it is the default and the last known-good.
    TrialCommitted,
    /// The default is the last known-good now (or was already: see `changed`).
    MarkedGood,
    /// Neither the default nor on trial: nothing changes.
    NotDefault,
}

/// `bootenv mark-good`.
#[derive(Clone, Debug, Serialize)]
pub struct MarkedGood {
    /// The BE.
    pub be: String,
    /// What happened.
    pub result: GoodResult,
    /// Whether the state record changed.
    pub changed: bool,
    /// Its kernel on the ESP, when it was checked.
    pub kernel: Option<KernelEntry>,
    /// What rewriting the menu noted.
    pub notes: Vec<String>,
}

impl fmt::Display for MarkedGood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(k) = &self.kernel {
            writeln!(f, "{k}")?;
        }
        lines(f, &self.notes)?;
        let name = &self.be;
        match self.result {
            GoodResult::TrialCommitted => writeln!(
                f,
                "{name} passed its trial: it is the default and the last known-good"
            ),
            GoodResult::MarkedGood if self.changed => writeln!(f, "{name} is marked good"),
            GoodResult::MarkedGood => writeln!(f, "{name} is marked good (it was already: unchanged)"),
            GoodResult::NotDefault => writeln!(
                f,
                "{name} booted fine, but it is neither the default nor on trial: nothing changes (`bootenv activate {name}` makes it the default)"
            ),
        }
    }
}

/// What became of the menu in `sync-boot`.
#[derive(Clone, Debug, Serialize)]
pub struct MenuWrite {
    /// What happened.
    pub result: MenuResult,
    /// The menu's path (written).
    pub path: Option<String>,
    /// Why it was not written.
    pub error: Option<String>,
}

/// See [`MenuWrite`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MenuResult {
    /// Written to `path`.
    Written,
    /// Left to the running system (the state record is mounted outside this chroot).
    LeftToRunningSystem,
    /// Not written (no BE had a kernel on the ESP yet): see `error`.
    NotWritten,
}

/// `bootenv sync-boot`.
#[derive(Clone, Debug, Serialize)]
pub struct Synced {
    /// Each BE's kernel.
    pub kernels: Vec<KernelEntry>,
    /// What rewriting the menu noted.
    pub notes: Vec<String>,
    /// The menu.
    pub menu: MenuWrite,
}

impl fmt::Display for Synced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for k in &self.kernels {
            writeln!(f, "{k}")?;
        }
        lines(f, &self.notes)?;
        let (path, error) = (
            self.menu.path.as_deref().unwrap_or("?"),
            self.menu.error.as_deref().unwrap_or("?"),
        );
        match self.menu.result {
            MenuResult::Written => writeln!(f, "menu written to {path}"),
            MenuResult::LeftToRunningSystem => writeln!(f, "menu left as it is (the state record is mounted outside this chroot; the running system's bootenv writes the menu)"),
            MenuResult::NotWritten => writeln!(f, "menu not written: {error}"),
        }
    }
}

/// `bootenv grub-menu`.
#[derive(Clone, Debug, Serialize)]
pub struct MenuScript {
    /// The script.
    pub script: String,
    /// What building it noted (BEs left out); logged as warnings in text mode.
    pub notes: Vec<String>,
}

impl fmt::Display for MenuScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.script)
    }
}

/// `bootenv upgrade`.
#[derive(Clone, Debug, Serialize)]
pub struct Upgraded {
    /// The new BE.
    pub be: String,
    /// Its root dataset.
    pub dataset: String,
    /// The command run in it.
    pub command: Vec<String>,
    /// Its kernel put on the ESP and the menu.
    pub boot: Synced,
    /// Its trial.
    pub trial: Activated,
    /// Always true.
    pub changed: bool,
}

impl fmt::Display for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "created boot environment {} ({}) and ran `{}` in it",
            self.be,
            self.dataset,
            self.command.join(" ")
        )?;
        self.boot.fmt(f)?;
        self.trial.fmt(f)
    }
}

/// `bootenv rollback` and `bootenv rollforward`.
#[derive(Clone, Debug, Serialize)]
pub struct Walked {
    /// The default before.
    pub from: Option<String>,
    /// The default now.
    pub to: String,
    /// The activation.
    pub activation: Activated,
    /// Whether the default changed.
    pub changed: bool,
    /// Forward (`rollforward`) or back.
    #[serde(skip)]
    pub forward: bool,
}

impl fmt::Display for Walked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {} -> {}",
            if self.forward {
                "rolling forward"
            } else {
                "rolling back"
            },
            self.from.as_deref().unwrap_or("-"),
            self.to
        )?;
        self.activation.fmt(f)
    }
}

/// `bootenv mount`.
#[derive(Clone, Debug, Serialize)]
pub struct Mounted {
    /// What was named: `NAME` or `NAME@SNAP`.
    pub what: String,
    /// The dataset or snapshot mounted.
    pub source: String,
    /// Where.
    pub dir: String,
    /// Read-only.
    pub read_only: bool,
}

impl fmt::Display for Mounted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.dir)
    }
}

/// `bootenv unmount`.
#[derive(Clone, Debug, Serialize)]
pub struct Unmounted {
    /// The directory.
    pub dir: String,
    /// Every mount point unmounted, deepest first.
    pub unmounted: Vec<String>,
}

impl fmt::Display for Unmounted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "unmounted {}", self.dir)
    }
}

/// `bootenv diff`.
#[derive(Clone, Debug, Serialize)]
pub struct Diffed {
    /// The first tree, as named.
    pub a: String,
    /// The second.
    pub b: String,
    /// What differs, by path.
    pub changes: Vec<crate::verbs::treediff::Change>,
}

impl fmt::Display for Diffed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return writeln!(f, "{} and {} hold the same files", self.a, self.b);
        }
        for c in &self.changes {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

/// `bootenv destroy` (and its `--dry-run`).
#[derive(Clone, Debug, Serialize)]
pub struct Destroyed {
    /// The BE.
    pub be: String,
    /// Nothing was destroyed: this is what would be.
    pub dry_run: bool,
    /// Clones promoted first.
    pub promotions: Vec<String>,
    /// Datasets destroyed.
    pub datasets: Vec<String>,
    /// Snapshots destroyed with them.
    pub snapshots: Vec<String>,
    /// Its directory on the ESP, removed.
    pub esp_dir: String,
    /// What rewriting the menu noted.
    pub notes: Vec<String>,
    /// What went wrong after it was destroyed.
    pub warnings: Vec<String>,
    /// Whether anything was destroyed.
    pub changed: bool,
}

impl fmt::Display for Destroyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(f, "dry run: nothing was destroyed")?;
        }
        for p in &self.promotions {
            writeln!(f, "promote {p}")?;
        }
        for d in self.datasets.iter().chain(&self.snapshots) {
            writeln!(f, "destroy {d}")?;
        }
        writeln!(f, "remove {} from the ESP", self.esp_dir)?;
        lines(f, &self.notes)?;
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if !self.dry_run {
            writeln!(f, "destroyed {}", self.be)?;
        }
        Ok(())
    }
}

/// `bootenv rename`.
#[derive(Clone, Debug, Serialize)]
pub struct Renamed {
    /// The old name.
    pub from: String,
    /// The new name.
    pub to: String,
    /// Its root dataset now.
    pub dataset: String,
    /// What rewriting the menu noted.
    pub notes: Vec<String>,
    /// Always true.
    pub changed: bool,
}

impl fmt::Display for Renamed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "renamed {} to {}", self.from, self.to)?;
        lines(f, &self.notes)
    }
}

/// `bootenv export`.
#[derive(Clone, Debug, Serialize)]
pub struct Exported {
    /// The BE.
    pub be: String,
    /// The snapshot the stream was sent from.
    pub snapshot: String,
    /// Bytes written.
    pub bytes: u64,
    /// The file, or `-`.
    pub to: String,
}

impl fmt::Display for Exported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "exported {} ({} bytes) from {}",
            self.be, self.bytes, self.snapshot
        )
    }
}

/// `bootenv import`.
#[derive(Clone, Debug, Serialize)]
pub struct Imported {
    /// The BE made.
    pub be: String,
    /// Its root dataset.
    pub dataset: String,
    /// Bytes read.
    pub bytes: u64,
    /// Its kernel put on the ESP and the menu, when that went well.
    pub boot: Option<Synced>,
    /// Why its kernel was not put on the ESP (it was imported).
    pub notes: Vec<String>,
    /// Always true.
    pub changed: bool,
}

impl fmt::Display for Imported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "imported {} ({} bytes) as {}",
            self.be, self.bytes, self.dataset
        )?;
        if let Some(b) = &self.boot {
            b.fmt(f)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// `bootenv install`.
#[derive(Clone, Debug, Serialize)]
pub struct InstalledDisk {
    /// The disk.
    pub disk: String,
    /// The pool made (exported at the end).
    pub pool: String,
    /// The data pool made, named in the system pool's `org.bootenv:data-pools` (exported too).
    pub data_pool: Option<String>,
    /// Its disks.
    pub data_disks: Vec<String>,
    /// The first BE.
    pub be: String,
    /// Whether its kernel is on the ESP (the disk boots); without, it waits for a kernel.
    pub bootable: bool,
    /// Always true.
    pub changed: bool,
}

impl fmt::Display for InstalledDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (dev, pool, name) = (&self.disk, &self.pool, &self.be);
        if let Some(data) = &self.data_pool {
            writeln!(
                f,
                "data pool {data} made on {}, named in {pool}'s org.bootenv:data-pools: the booted system imports it (bootenv-data-pools.service)",
                self.data_disks.join(" ")
            )?;
        }
        if self.bootable {
            writeln!(
                f,
                "installed: {dev} holds pool {pool} with boot environment {name} (the default and last known-good), its kernel on the ESP, and GRUB for UEFI and BIOS; the pool is exported, the disk can boot"
            )
        } else {
            writeln!(
                f,
                "installed: {dev} holds pool {pool} with boot environment {name} (the default), and GRUB for UEFI and BIOS; the pool is exported.\n\
                 {name} has no kernel yet (no /boot/vmlinuz with its initrd.img): the disk does not boot until it has one. \
                 Import the pool, install a kernel in {name} (`bootenv --pool {pool} mount {name} --rw`, then chroot there and \
                 `dpkg -i bootenv-kernel-<release>.deb`), then run `bootenv --pool {pool} sync-boot`"
            )
        }
    }
}

/// What `factory-reset` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResetAction {
    /// A reset is scheduled for the BE's next boot.
    Scheduled,
    /// The pending reset is cancelled.
    Cancelled,
    /// `--cancel`, and no reset was pending.
    NothingPending,
}

/// One dataset a scheduled reset puts back.
#[derive(Clone, Debug, Serialize)]
pub struct ResetSwap {
    /// The dataset.
    pub dataset: String,
    /// Its factory snapshot, or `null`: it starts empty.
    pub from_snapshot: Option<String>,
    /// Where its previous content is kept, or `null` when it is destroyed (`--erase`).
    pub kept_as: Option<String>,
}

/// `bootenv factory-reset`.
#[derive(Clone, Debug, Serialize)]
pub struct ResetOutcome {
    /// What happened.
    pub action: ResetAction,
    /// The BE.
    pub be: Option<String>,
    /// `config` or `full` (scheduled).
    pub mode: Option<&'static str>,
    /// Previous data destroyed instead of kept (scheduled).
    pub erase: bool,
    /// The request's id (scheduled).
    pub id: Option<String>,
    /// The pending reset this one replaced, by its BE.
    pub replaced: Option<String>,
    /// What goes back (scheduled).
    pub swaps: Vec<ResetSwap>,
    /// Whether the state record changed.
    pub changed: bool,
    /// The mode in words, for the text.
    #[serde(skip)]
    pub mode_text: &'static str,
}

impl fmt::Display for ResetOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let be = self.be.as_deref().unwrap_or("?");
        match self.action {
            ResetAction::NothingPending => writeln!(f, "no factory reset is pending"),
            ResetAction::Cancelled => writeln!(f, "the factory reset of {be} is cancelled"),
            ResetAction::Scheduled => {
                if let Some(r) = &self.replaced {
                    writeln!(f, "replacing the pending factory reset of {r}")?;
                }
                writeln!(
                    f,
                    "factory reset ({}) of {be} scheduled for its next boot (id {}):",
                    self.mode_text,
                    self.id.as_deref().unwrap_or("?")
                )?;
                for s in &self.swaps {
                    let from = match &s.from_snapshot {
                        Some(snap) => format!("its factory snapshot @{snap}"),
                        None => "empty".into(),
                    };
                    let prev = match &s.kept_as {
                        None => "the previous content will be DESTROYED".to_string(),
                        Some(k) => format!("the previous content is kept as {k}"),
                    };
                    writeln!(f, "  {} goes back to {from}; {prev}", s.dataset)?;
                }
                writeln!(
                    f,
                    "cancel with `bootenv factory-reset --cancel` before rebooting"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_carries_the_schema_and_the_verb_and_an_error_its_kind() {
        let o = Outcome::Mount(Mounted {
            what: "v1@factory".into(),
            source: "tank/ROOT/v1@factory".into(),
            dir: "/run/bootenv/mnt/v1@factory".into(),
            read_only: true,
        });
        let v: serde_json::Value = serde_json::from_str(&o.json()).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["verb"], "mount");
        assert_eq!(v["read_only"], true);
        assert_eq!(o.to_string(), "/run/bootenv/mnt/v1@factory\n");
        let e: serde_json::Value =
            serde_json::from_str(&error_json(Some("activate"), ErrorKind::NotFound, "no v9"))
                .unwrap();
        assert_eq!(e["error"]["kind"], "not-found");
        assert_eq!(e["verb"], "activate");
    }

    #[test]
    fn the_kind_of_an_error_is_found_under_its_context() {
        let e = crate::model::failure::fail(ErrorKind::Refused, "no").context("destroying v2");
        assert_eq!(kind_of(&e), ErrorKind::Refused);
        let e = anyhow::Error::new(crate::bootloader::esp::NoEsp).context("sync-boot");
        assert_eq!(kind_of(&e), ErrorKind::NoEsp);
        assert_eq!(kind_of(&anyhow::anyhow!("zfs failed")), ErrorKind::Failed);
        let e: anyhow::Error = BeName::new("a b").unwrap_err().into();
        assert_eq!(kind_of(&e), ErrorKind::Invalid);
    }
}

/// `bootenv data-pools`: the data pools the system pool names, and where each stands.
#[derive(Clone, Debug, Serialize)]
pub struct DataPoolsOutcome {
    /// `list`, `add`, `remove` or `import`.
    pub action: &'static str,
    /// The system pool that names them.
    pub system_pool: String,
    /// Each registered data pool, in import order.
    pub pools: Vec<DataPoolRow>,
    /// Words of `org.bootenv:data-pools` left out, with their reasons.
    pub problems: Vec<String>,
    /// What else to know.
    pub notes: Vec<String>,
    /// Whether the registration changed (`add`, `remove`) or a pool was imported (`import`).
    pub changed: bool,
}

/// One data pool.
#[derive(Clone, Debug, Serialize)]
pub struct DataPoolRow {
    /// Its name.
    pub name: String,
    /// What its import mounts: `all` or `none`.
    pub mount: &'static str,
    /// Imported now.
    pub imported: bool,
    /// Its health when imported (`ONLINE`, `DEGRADED`, ...).
    pub health: Option<String>,
    /// What this boot's import did (`/run/bootenv/data-pools`), `not-tried` when nothing yet.
    pub state: &'static str,
    /// Seconds that import (or the wait for its disks) took.
    pub seconds: Option<f64>,
    /// What happened, and for a pool that is not usable, the fix.
    pub message: Option<String>,
}

impl fmt::Display for DataPoolRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data pool {} (mount {}): ", self.name, self.mount)?;
        match (&self.health, self.imported) {
            (Some(h), true) => write!(f, "imported, {h}")?,
            (None, true) => f.write_str("imported")?,
            (_, false) => f.write_str("not imported")?,
        }
        write!(f, "; this boot: {}", self.state)?;
        if let Some(s) = self.seconds {
            write!(f, " ({s:.1} s)")?;
        }
        if let Some(m) = self.message.as_deref().filter(|m| !m.is_empty()) {
            write!(f, ": {m}")?;
        }
        writeln!(f)
    }
}

impl fmt::Display for DataPoolsOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pools.is_empty() {
            writeln!(
                f,
                "pool {} names no data pools (bootenv data-pools add POOL)",
                self.system_pool
            )?;
        }
        for p in &self.pools {
            p.fmt(f)?;
        }
        for p in &self.problems {
            writeln!(f, "warning: {p}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}
