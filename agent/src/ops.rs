//! The operator's verbs on a running system (or in an installer): each is a function over a
//! [`Ctx`], which holds the ZFS and mount boundaries and the root all paths are relative to.

use crate::inventory::Inventory;
use crate::layout::{self, PROP_FACTORY, PROP_LABEL, PROP_LAYOUT, PROP_MEMBER, PROP_SOURCE};
use crate::mounts::Mounter;
use crate::names::{printable, BeName, PoolName};
use crate::report::{self, Report};
use crate::run::Cmd;
use crate::state::{self, EventKind, Loaded};
use crate::zfs::Zfs;
use anyhow::{bail, Context};
use std::fmt::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What the verbs work on.
pub struct Ctx<'a> {
    /// `/` normally; a temporary directory in tests.
    pub root: PathBuf,
    /// ZFS.
    pub zfs: &'a dyn Zfs,
    /// Mounts.
    pub mounter: &'a dyn Mounter,
    /// The pool given with `--pool`.
    pub pool: Option<PoolName>,
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
        let text = std::fs::read_to_string(self.path(report::DIR).join("boot")).ok()?;
        Some(Report::parse(&text))
    }

    /// The pool to work on: `--pool`, else the pool this system booted from, else the one
    /// imported pool that holds a bootenv layout.
    pub fn pool(&self) -> anyhow::Result<PoolName> {
        if let Some(p) = &self.pool {
            return Ok(p.clone());
        }
        if let Some(p) = self.boot_report().and_then(|r| r.get("pool").and_then(|p| PoolName::new(p).ok())) {
            return Ok(p);
        }
        let mut found = Vec::new();
        for p in self.zfs.imported_pools()? {
            let Ok(pool) = PoolName::new(&p) else { continue };
            let l = self.zfs.list(&layout::root_container(&pool))?;
            if l.datasets.iter().any(|d| d.name == layout::root_container(&pool) && d.prop(PROP_LAYOUT).is_some()) {
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
        let dir = self.path(crate::boot::STATE_MOUNT);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let parent = dir.parent().expect("has a parent");
        let mounted = std::fs::metadata(&dir)?.dev() != std::fs::metadata(parent)?.dev();
        if !mounted {
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
    pub fn prepare_pool(&self, pool: &PoolName) -> anyhow::Result<String> {
        let mut out = String::new();
        let root = layout::root_container(pool);
        let existing = self.zfs.list(pool.as_str())?;
        let has = |n: &str| existing.datasets.iter().any(|d| d.name == n);
        if has(&root) {
            let layout_prop = existing.datasets.iter().find(|d| d.name == root).and_then(|d| d.prop(PROP_LAYOUT));
            match layout_prop {
                Some(v) if v == layout::LAYOUT_VERSION => writeln!(out, "{root} exists")?,
                Some(v) => bail!("{root} has layout version {v}; this bootenv knows version {}", layout::LAYOUT_VERSION),
                None => {
                    self.zfs.set(&root, &[(PROP_LAYOUT, layout::LAYOUT_VERSION)])?;
                    writeln!(out, "{root} exists; marked with {PROP_LAYOUT}={}", layout::LAYOUT_VERSION)?;
                }
            }
        } else {
            self.zfs.create(
                &root,
                &[("canmount", "off"), ("mountpoint", "none"), (PROP_LAYOUT, layout::LAYOUT_VERSION)],
            )?;
            writeln!(out, "created {root}")?;
        }
        let st = layout::state_dataset(pool);
        if has(&st) {
            writeln!(out, "{st} exists")?;
        } else {
            self.zfs.create(&st, &[("canmount", "noauto"), ("mountpoint", "legacy")])?;
            writeln!(out, "created {st}")?;
        }
        Ok(out)
    }

    /// `bootenv create --rootfs`: a new boot environment from a directory tree, with a config
    /// member and a factory snapshot taken before it ever runs.
    pub fn create(&self, name: &BeName, opts: &CreateOpts) -> anyhow::Result<String> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        if !inv.has_root {
            bail!("{} does not exist; run `bootenv prepare-pool {pool}` first", layout::root_container(&pool));
        }
        if inv.get(name).is_some() {
            bail!("boot environment {name} exists already; pick another name");
        }
        anyhow::ensure!(opts.rootfs.is_dir(), "--rootfs {} is not a directory", opts.rootfs.display());
        if let Some(c) = &opts.config {
            anyhow::ensure!(c.is_dir(), "--config {} is not a directory", c.display());
        }
        let final_ds = layout::be_dataset(&pool, name);
        let partial = format!("{final_ds}{PARTIAL_SUFFIX}");
        if !self.zfs.list(&partial)?.datasets.is_empty() {
            bail!("{partial} is left from an interrupted create; remove it with `zfs destroy -r {partial}` and try again");
        }
        let label = opts.label.clone().unwrap_or_else(|| name.to_string());
        anyhow::ensure!(
            !label.is_empty() && label != "-" && !label.contains(|c: char| c.is_control()),
            "--label must be one line of text"
        );
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
        Ok(format!(
            "created boot environment {name} ({final_ds}, label {label:?}) with factory snapshot @{}\n",
            layout::FACTORY_SNAPSHOT
        ))
    }

    fn create_partial(&self, partial: &str, label: &str, source: &str, opts: &CreateOpts) -> anyhow::Result<()> {
        self.zfs.create(
            partial,
            &[("canmount", "noauto"), ("mountpoint", "/"), (PROP_LABEL, label), (PROP_SOURCE, source)],
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
        let mnt = self.path("run/bootenv/mnt").join(partial.replace(['/', ':'], "_"));
        std::fs::create_dir_all(&mnt).with_context(|| format!("creating {}", mnt.display()))?;
        self.mounter.mount_zfs(partial, &mnt, false)?;
        let cfg_mnt = mnt.join(opts.config_mountpoint.trim_start_matches('/'));
        let filled = (|| {
            std::fs::create_dir_all(&cfg_mnt).with_context(|| format!("creating {}", cfg_mnt.display()))?;
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
        self.zfs.set(partial, &[(PROP_FACTORY, layout::FACTORY_SNAPSHOT)])?;
        Ok(())
    }

    /// `bootenv activate`: makes a boot environment the default (the pool's `bootfs`).
    pub fn activate(&self, name: &BeName) -> anyhow::Result<String> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let be = inv.get(name).with_context(|| format!("no boot environment {name} in pool {pool}; `bootenv list` shows them"))?;
        if let Some(why) = &be.unbootable {
            bail!("boot environment {name} cannot boot: {why}");
        }
        self.zfs.set_pool_prop(pool.as_str(), "bootfs", &be.dataset)?;
        Ok(format!("{name} is now the default boot environment (bootfs={})\n", be.dataset))
    }

    /// `bootenv mark-good`: records a boot environment (default: the running one) as the last
    /// known-good.
    pub fn mark_good(&self, name: Option<&BeName>, now: u64) -> anyhow::Result<String> {
        let pool = self.pool()?;
        let name = match name {
            Some(n) => n.clone(),
            None => {
                let r = self.boot_report().context(
                    "this system was not booted by bootenv (no /run/bootenv/boot); name the boot environment: `bootenv mark-good <name>`",
                )?;
                BeName::new(r.get("be").unwrap_or(""))?
            }
        };
        let inv = self.inventory(&pool)?;
        inv.get(&name).with_context(|| format!("no boot environment {name} in pool {pool}"))?;
        let dir = self.state_dir(&pool)?;
        let mut st = match state::load(&dir)? {
            Loaded::Newer(v) => bail!("the state record has format version {v}, newer than this bootenv; update bootenv"),
            l => l.state(),
        };
        st.last_good = Some(name.to_string());
        st.push(now, EventKind::MarkedGood { be: name.to_string() });
        state::store(&dir, &st)?;
        Ok(format!("{name} is marked good\n"))
    }

    /// `bootenv list`: a table of boot environments.
    pub fn list(&self) -> anyhow::Result<String> {
        let pool = self.pool()?;
        let inv = self.inventory(&pool)?;
        let booted = self.boot_report().and_then(|r| r.get("be").map(str::to_owned));
        let last_good = self
            .state_dir(&pool)
            .ok()
            .and_then(|d| state::load(&d).ok())
            .and_then(|l| l.state().last_good);
        let mut out = String::new();
        writeln!(out, "{:<20} {:<16} {:<8} {:>10}  {}", "NAME", "LABEL", "FLAGS", "USED", "STATE")?;
        for be in inv.bes.iter().rev() {
            let mut flags = String::new();
            if booted.as_deref() == Some(be.name.as_str()) {
                flags.push('N');
            }
            if inv.bootfs.as_deref() == Some(be.dataset.as_str()) {
                flags.push('R');
            }
            if last_good.as_deref() == Some(be.name.as_str()) {
                flags.push('G');
            }
            let state = be.unbootable.as_deref().map_or("ok".to_string(), |w| format!("cannot boot: {w}"));
            writeln!(
                out,
                "{:<20} {:<16} {:<8} {:>10}  {}",
                be.name.as_str(),
                printable(be.label.as_deref().unwrap_or("-")),
                if flags.is_empty() { "-".into() } else { flags },
                human_bytes(be.used),
                state
            )?;
        }
        for i in &inv.ignored {
            writeln!(out, "note: {i}")?;
        }
        writeln!(out, "flags: N running now, R default at next boot, G last known-good")?;
        Ok(out)
    }

    /// `bootenv status`: how this system booted.
    pub fn status(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        let Some(r) = self.boot_report() else {
            bail!("this system was not booted by the bootenv agent (no /run/bootenv/boot)");
        };
        writeln!(out, "booted: {} ({})", r.get("be").unwrap_or("?"), r.get("dataset").unwrap_or("?"))?;
        match r.get("choice") {
            Some("requested") => writeln!(out, "chosen: asked for on the kernel command line")?,
            Some("default") => writeln!(out, "chosen: the default ({})", r.get("source").unwrap_or("?"))?,
            Some("fallback") => writeln!(
                out,
                "chosen: FALLBACK: {} was asked for but did not boot: {}",
                r.get("requested").unwrap_or("?"),
                r.get("reason").unwrap_or("?")
            )?,
            _ => {}
        }
        if let Some(h) = r.get("hostid") {
            writeln!(out, "hostid: adopted {h} from the pool label")?;
        }
        if let (Some(a), Some(b)) = (r.get("agent-start"), r.get("init-exec")) {
            writeln!(out, "timing: agent started at {a} s, init started at {b} s after the kernel")?;
        }
        for w in r.all("warning") {
            writeln!(out, "warning: {w}")?;
        }
        if let Some(pool) = r.get("pool").and_then(|p| PoolName::new(p).ok()) {
            match self.state_dir(&pool).and_then(|d| state::load(&d)) {
                Ok(l) => {
                    if let Loaded::Corrupt(why) = &l {
                        writeln!(out, "state: unreadable ({why})")?;
                    }
                    let st = l.state();
                    writeln!(out, "last known-good: {}", st.last_good.as_deref().unwrap_or("none recorded"))?;
                    for ev in st.events.iter().rev().take(5) {
                        writeln!(out, "event @{}: {}", ev.time, describe(&ev.kind))?;
                    }
                }
                Err(e) => writeln!(out, "state: {e:#}")?,
            }
        }
        Ok(out)
    }
}

fn describe(k: &EventKind) -> String {
    match k {
        EventKind::Fallback { requested, booted, reason } => {
            format!("fallback: booted {booted} instead of {requested}: {reason}")
        }
        EventKind::MarkedGood { be } => format!("{be} marked good"),
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

/// Copies the contents of `src` into `dst` with `cp -a` (owners, modes, links, devices kept).
fn copy_tree(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let from = format!("{}/.", src.display());
    Cmd::new("cp").args(["-a", &from]).arg(dst.display().to_string()).run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::FakeMounter;
    use crate::zfs::fake::FakeZfs;

    fn setup() -> (tempfile::TempDir, FakeZfs) {
        let d = tempfile::tempdir().unwrap();
        let z = FakeZfs::new();
        z.add_pool("tank");
        z.import("tank").unwrap().unwrap();
        (d, z)
    }

    fn ctx<'a>(d: &Path, z: &'a FakeZfs, m: &'a FakeMounter) -> Ctx<'a> {
        Ctx { root: d.into(), zfs: z, mounter: m, pool: Some(PoolName::new("tank").unwrap()) }
    }

    #[test]
    fn prepare_pool_is_idempotent() {
        let (d, z) = setup();
        let m = FakeMounter::new();
        let c = ctx(d.path(), &z, &m);
        c.prepare_pool(&PoolName::new("tank").unwrap()).unwrap();
        let before = z.changes();
        let out = c.prepare_pool(&PoolName::new("tank").unwrap()).unwrap();
        assert!(out.contains("tank/ROOT exists"));
        assert_eq!(z.changes(), before);
        assert_eq!(z.get("tank/ROOT", "org.bootenv:layout").as_deref(), Some("1"));
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
        let opts = CreateOpts { rootfs, config_mountpoint: "/etc/config".into(), label: Some("1.0".into()), ..Default::default() };
        c.create(&BeName::new("v1").unwrap(), &opts).unwrap();
        assert_eq!(z.get("tank/ROOT/v1", "canmount").as_deref(), Some("noauto"));
        assert_eq!(z.get("tank/ROOT/v1", "org.bootenv:label").as_deref(), Some("1.0"));
        assert_eq!(z.get("tank/ROOT/v1/config", "mountpoint").as_deref(), Some("/etc/config"));
        assert!(z.has_snapshot("tank/ROOT/v1@factory") && z.has_snapshot("tank/ROOT/v1/config@factory"));
        let ch = z.changes();
        assert!(ch.last().unwrap().starts_with("zfs rename tank/ROOT/v1:partial"), "{ch:?}");
        assert!(m.mounted().is_empty(), "everything is unmounted again");
        let inv = c.inventory(&PoolName::new("tank").unwrap()).unwrap();
        assert_eq!(inv.bes.len(), 1);
        assert!(c.create(&BeName::new("v1").unwrap(), &opts).unwrap_err().to_string().contains("exists already"));
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
        let opts = CreateOpts { config: None, ..opts };
        // A failure inside: the config mount fails.
        let m2 = FakeMounter::new().failing("tank/ROOT/v1:partial/config", "boom");
        let c2 = ctx(d.path(), &z, &m2);
        let e = c2.create(&BeName::new("v1").unwrap(), &opts).unwrap_err();
        assert!(format!("{e:#}").contains("boom"));
        assert!(z.list("tank/ROOT/v1:partial").unwrap().datasets.is_empty());
        assert!(m2.mounted().is_empty());
    }

    #[test]
    fn activate_and_mark_good() {
        let (d, z) = setup();
        let m = FakeMounter::new();
        let c = ctx(d.path(), &z, &m);
        c.prepare_pool(&PoolName::new("tank").unwrap()).unwrap();
        z.add_fs("tank/ROOT/v1", &[("canmount", "noauto"), ("mountpoint", "/")]);
        z.add_fs("tank/ROOT/off", &[("canmount", "off"), ("mountpoint", "/")]);
        c.activate(&BeName::new("v1").unwrap()).unwrap();
        assert_eq!(z.pool_prop("tank", "bootfs").unwrap().as_deref(), Some("tank/ROOT/v1"));
        assert!(c.activate(&BeName::new("off").unwrap()).is_err());
        assert!(c.activate(&BeName::new("nosuch").unwrap()).unwrap_err().to_string().contains("bootenv list"));
        assert!(c.mark_good(None, 1).unwrap_err().to_string().contains("not booted by bootenv"));
        c.mark_good(Some(&BeName::new("v1").unwrap()), 7).unwrap();
        let st = state::load(&d.path().join(crate::boot::STATE_MOUNT)).unwrap().state();
        assert_eq!(st.last_good.as_deref(), Some("v1"));
        let listing = c.list().unwrap();
        assert!(listing.lines().any(|l| l.starts_with("v1") && l.contains("RG")), "{listing}");
    }
}
