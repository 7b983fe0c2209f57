//! The boot environments of a pool, read from a dataset listing: which exist, which can boot
//! and why not, and what each one mounts. Pure: built from a [`Listing`], no I/O.

use crate::model::layout::{self, PROP_LABEL, PROP_MEMBER};
use crate::model::listing::{CanMount, Dataset, Listing, Mountpoint};
use crate::model::names::{printable, BeName, PoolName};

/// A dataset of a boot environment that the agent mounts below the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Full dataset name.
    pub dataset: String,
    /// Where it is mounted, inside the boot environment (absolute, normalised, not `/`).
    pub mountpoint: String,
    /// `org.bootenv:member`, when set (`config`, ...).
    pub role: Option<String>,
}

/// One boot environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Be {
    /// Its name.
    pub name: BeName,
    /// Its root dataset, `<pool>/ROOT/<name>`.
    pub dataset: String,
    /// `org.bootenv:label`.
    pub label: Option<String>,
    /// Creation time of the root, seconds since the epoch.
    pub creation: u64,
    /// The snapshot the root was cloned from.
    pub origin: Option<String>,
    /// Space used by the root and its members, in bytes.
    pub used: u64,
    /// Members to mount, parents before children.
    pub members: Vec<Member>,
    /// Why it cannot boot, if it cannot.
    pub unbootable: Option<String>,
    /// `org.bootenv:cmdline` (own or inherited).
    pub cmdline: Option<String>,
    /// `org.bootenv:factory`: its factory snapshot.
    pub factory: Option<String>,
    /// Datasets factory resets kept aside (`<member>.reset-<id>`).
    pub kept: Vec<String>,
}

/// The boot environments of one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    /// The pool.
    pub pool: PoolName,
    /// The pool's `bootfs` property.
    pub bootfs: Option<String>,
    /// Boot environments, oldest first.
    pub bes: Vec<Be>,
    /// Datasets under `<pool>/ROOT` that bootenv leaves alone, each with the reason.
    pub ignored: Vec<String>,
    /// Whether `<pool>/ROOT` exists.
    pub has_root: bool,
    /// The `org.bootenv:*` properties of `<pool>/ROOT`: pool-wide settings.
    pub settings: std::collections::BTreeMap<String, String>,
}

impl Inventory {
    /// Reads the boot environments out of a listing of `<pool>/ROOT`.
    pub fn from_listing(pool: &PoolName, listing: &Listing, bootfs: Option<String>) -> Inventory {
        let container = layout::root_container(pool);
        let root_ds = listing.datasets.iter().find(|d| d.name == container);
        let has_root = root_ds.is_some();
        let settings = root_ds.map(|d| d.user.clone()).unwrap_or_default();
        let mut bes = Vec::new();
        let mut ignored = Vec::new();
        for ds in &listing.datasets {
            match layout::be_of_root(pool, &ds.name) {
                None => {}
                Some(Err(e)) => ignored.push(format!("{} ignored: {e}", printable(&ds.name))),
                Some(Ok(name)) => bes.push(read_be(name, ds, listing)),
            }
        }
        for t in &listing.tainted {
            if layout::be_of_root(pool, t).is_some() && !bes.iter().any(|b| b.dataset == *t) {
                ignored.push(format!(
                    "{} ignored: its properties cannot be read unambiguously (a property value holds a tab or a newline)",
                    printable(t)
                ));
            }
        }
        bes.sort_by(|a, b| (a.creation, &a.name).cmp(&(b.creation, &b.name)));
        // Names FAT cannot tell apart share one directory on the ESP: the oldest BE keeps it,
        // later ones (made behind bootenv's back, it refuses such names) are left alone.
        let mut seen: std::collections::BTreeMap<String, BeName> = Default::default();
        bes.retain(|b| match seen.get(&b.name.fat_key()) {
            Some(first) => {
                ignored.push(format!(
                    "{} ignored: its directory on the ESP (FAT ignores case) would be the one of {first}, an older boot environment; give it another name (`zfs rename {} {}/<name>`)",
                    printable(&b.dataset),
                    printable(&b.dataset),
                    layout::root_container(pool)
                ));
                false
            }
            None => {
                seen.insert(b.name.fat_key(), b.name.clone());
                true
            }
        });
        Inventory {
            pool: pool.clone(),
            bootfs,
            bes,
            ignored,
            has_root,
            settings,
        }
    }

    /// The boot environment called `name`.
    pub fn get(&self, name: &BeName) -> Option<&Be> {
        self.bes.iter().find(|b| &b.name == name)
    }

    /// Fails when `name` is taken: by a BE of that name, or of a name that differs from it only
    /// in case (the ESP is FAT, where `/bootenv/V1` and `/bootenv/v1` are one directory).
    /// `fix` ends the message (what to do instead).
    pub fn check_free(&self, name: &BeName, fix: &str) -> anyhow::Result<()> {
        match self
            .bes
            .iter()
            .find(|b| b.name.as_str().eq_ignore_ascii_case(name.as_str()))
        {
            None => Ok(()),
            Some(b) if &b.name == name => {
                crate::refuse!(Exists, "boot environment {name} exists already{fix}")
            }
            Some(b) => crate::refuse!(
                Exists,
                "boot environment {name} differs from {} only in case, which the ESP (FAT) cannot tell apart{fix}",
                b.name
            ),
        }
    }

    /// Boot environment `name`, or a [`Failure`](crate::model::failure::Failure) of kind
    /// `not-found` that says where they are listed.
    pub fn require(&self, name: &BeName) -> anyhow::Result<&Be> {
        match self.get(name) {
            Some(be) => Ok(be),
            None => crate::refuse!(
                NotFound,
                "no boot environment {name} in pool {}; `bootenv list` shows them",
                self.pool
            ),
        }
    }

    /// The boot environment `bootfs` points at, if it is one.
    pub fn bootfs_be(&self) -> Option<BeName> {
        let ds = self.bootfs.as_deref()?;
        layout::be_of_root(&self.pool, ds)?.ok()
    }

    /// A pool-wide setting from `<pool>/ROOT`, parsed; `None` when unset or unparsable.
    pub fn setting<T: std::str::FromStr>(&self, prop: &str) -> Option<T> {
        self.settings.get(prop).and_then(|v| v.trim().parse().ok())
    }

    /// The data pools `<pool>/ROOT` names (`org.bootenv:data-pools`).
    pub fn data_pools(&self) -> crate::model::datapools::Registration {
        crate::model::datapools::Registration::parse(
            self.settings
                .get(crate::model::layout::PROP_DATA_POOLS)
                .map_or("", String::as_str),
            &self.pool,
        )
    }

    /// The default BE: the pool's `bootfs` when it names a BE here.
    pub fn default_be(&self) -> Option<&Be> {
        let name = self.bootfs_be()?;
        self.get(&name)
    }

    /// Names of the boot environments that can boot.
    pub fn bootable(&self) -> impl Iterator<Item = &Be> {
        self.bes.iter().filter(|b| b.unbootable.is_none())
    }
}

/// Checks a member's mountpoint: absolute, no `.`/`..`/empty components, not `/`.
fn clean_mountpoint(p: &str) -> Option<String> {
    let rest = p.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|c| *c == "." || *c == "..") {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

fn read_be(name: BeName, root: &Dataset, listing: &Listing) -> Be {
    let prefix = format!("{}/", root.name);
    let mut problems = Vec::new();
    match root.canmount {
        CanMount::Off => problems.push("its root has canmount=off".to_string()),
        CanMount::On => log::warn!(
            "boot environment {name}: canmount=on lets `zfs mount -a` mount it over /; set canmount=noauto"
        ),
        CanMount::NoAuto => {}
    }
    match &root.mountpoint {
        Mountpoint::Path(p) if p == "/" => {}
        Mountpoint::Legacy => {}
        other => problems.push(format!(
            "its root has mountpoint={} (a boot environment's root has mountpoint=/)",
            match other {
                Mountpoint::Path(p) => printable(p),
                _ => "none".into(),
            }
        )),
    }
    if let Some(t) = listing.tainted.iter().find(|t| t.starts_with(&prefix)) {
        problems.push(format!(
            "the properties of {} cannot be read unambiguously (a value holds a tab or a newline)",
            printable(t)
        ));
    }
    let mut members = Vec::new();
    let mut used = root.used;
    let mut kept = Vec::new();
    for ds in listing
        .datasets
        .iter()
        .filter(|d| d.name.starts_with(&prefix))
    {
        used = used.saturating_add(ds.used);
        if ds
            .name
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(".reset-"))
        {
            kept.push(ds.name.clone());
        }
        if ds.canmount == CanMount::Off {
            continue;
        }
        match &ds.mountpoint {
            Mountpoint::None | Mountpoint::Legacy => continue,
            Mountpoint::Path(p) => match clean_mountpoint(p) {
                Some(mp) => members.push(Member {
                    dataset: ds.name.clone(),
                    mountpoint: mp,
                    role: ds.prop(PROP_MEMBER).map(str::to_owned),
                }),
                None => problems.push(format!(
                    "member {} has mountpoint {} (it must be an absolute path below /)",
                    printable(&ds.name),
                    printable(p)
                )),
            },
        }
    }
    members.sort_by(|a, b| {
        let ka: Vec<&str> = a.mountpoint.split('/').collect();
        let kb: Vec<&str> = b.mountpoint.split('/').collect();
        ka.cmp(&kb)
    });
    for pair in members.windows(2) {
        if pair[0].mountpoint == pair[1].mountpoint {
            problems.push(format!(
                "members {} and {} share the mountpoint {}",
                pair[0].dataset, pair[1].dataset, pair[0].mountpoint
            ));
        }
    }
    Be {
        name,
        dataset: root.name.clone(),
        label: root.prop(PROP_LABEL).map(str::to_owned),
        creation: root.creation,
        origin: root.origin.clone(),
        used,
        members,
        unbootable: (!problems.is_empty()).then(|| problems.join("; ")),
        cmdline: root
            .prop(crate::model::layout::PROP_CMDLINE)
            .map(str::to_owned),
        factory: root
            .prop(crate::model::layout::PROP_FACTORY)
            .map(str::to_owned),
        kept,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::listing::parse_list;

    /// A row of [`listing`] for a BE's config member.
    pub(crate) fn config_of(root: &'static str) -> Row {
        (
            Box::leak(format!("{root}/config").into_boxed_str()),
            "noauto",
            "/etc/config",
            "-",
            "config",
        )
    }

    /// A row of [`listing`]: `(name, canmount, mountpoint, label, member)`.
    pub(crate) type Row = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    );

    /// A listing in `zfs list -H -p -o <list_columns()>` form, from
    /// `(name, canmount, mountpoint, label, member)` rows.
    pub(crate) fn listing(rows: &[(&str, &str, &str, &str, &str)]) -> Listing {
        let mut out = String::new();
        for (i, (n, c, m, label, member)) in rows.iter().enumerate() {
            out.push_str(&format!(
                "{n}\t{c}\t{m}\t{}\t-\t100\t-\t{label}\t{member}{}\n",
                1000 + i,
                "\t-".repeat(crate::model::layout::LISTED_PROPS.len() - 3)
            ));
        }
        parse_list(&out)
    }

    fn pool() -> PoolName {
        PoolName::new("tank").unwrap()
    }

    #[test]
    fn reads_bes_and_members() {
        let l = listing(&[
            ("tank/ROOT", "off", "none", "-", "-"),
            ("tank/ROOT/v1", "noauto", "/", "1.0", "-"),
            config_of("tank/ROOT/v1"),
            ("tank/ROOT/v1/var", "off", "/var", "-", "-"),
            ("tank/ROOT/v1/var/log", "noauto", "/var/log", "-", "-"),
            ("tank/ROOT/v1/legacy", "noauto", "legacy", "-", "-"),
            ("tank/ROOT/v2", "noauto", "/", "2.0", "-"),
        ]);
        let inv = Inventory::from_listing(&pool(), &l, Some("tank/ROOT/v2".into()));
        assert!(inv.has_root);
        assert_eq!(inv.bes.len(), 2);
        let v1 = &inv.bes[0];
        assert_eq!(v1.label.as_deref(), Some("1.0"));
        assert_eq!(v1.unbootable, None);
        let mps: Vec<&str> = v1.members.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(mps, vec!["/etc/config", "/var/log"]);
        assert_eq!(v1.members[0].role.as_deref(), Some("config"));
        assert_eq!(inv.bootfs_be().unwrap().as_str(), "v2");
        assert!(inv.bes[1].members.is_empty());
    }

    #[test]
    fn members_mount_parents_first() {
        let l = listing(&[
            ("tank/ROOT/v1", "noauto", "/", "-", "-"),
            ("tank/ROOT/v1/z", "noauto", "/a/b/c", "-", "-"),
            ("tank/ROOT/v1/y", "noauto", "/a-b", "-", "-"),
            ("tank/ROOT/v1/x", "noauto", "/a", "-", "-"),
        ]);
        let inv = Inventory::from_listing(&pool(), &l, None);
        let mps: Vec<&str> = inv.bes[0]
            .members
            .iter()
            .map(|m| m.mountpoint.as_str())
            .collect();
        assert_eq!(mps, vec!["/a", "/a/b/c", "/a-b"]);
    }

    #[test]
    fn bad_bes_are_reported_not_booted() {
        let l = listing(&[
            ("tank/ROOT/off", "off", "/", "-", "-"),
            ("tank/ROOT/elsewhere", "noauto", "/srv", "-", "-"),
            ("tank/ROOT/escape", "noauto", "/", "-", "-"),
            ("tank/ROOT/escape/c", "noauto", "/etc/../../x", "-", "-"),
            ("tank/ROOT/bad name", "noauto", "/", "-", "-"),
            ("tank/ROOT/ok", "noauto", "legacy", "-", "-"),
        ]);
        let inv = Inventory::from_listing(&pool(), &l, None);
        let reason = |n: &str| {
            inv.bes
                .iter()
                .find(|b| b.name.as_str() == n)
                .unwrap()
                .unbootable
                .clone()
        };
        assert!(reason("off").unwrap().contains("canmount=off"));
        assert!(reason("elsewhere").unwrap().contains("mountpoint=/srv"));
        assert!(reason("escape").unwrap().contains("absolute path below /"));
        assert_eq!(reason("ok"), None);
        assert_eq!(inv.ignored.len(), 1);
        assert!(inv.ignored[0].contains("bad name"));
        assert_eq!(inv.bootable().count(), 1);
    }

    #[test]
    fn names_fat_cannot_tell_apart_leave_the_younger_be_out() {
        // Creation times follow the rows: V1 is younger than v1, v2 older than V2.
        let l = listing(&[
            ("tank/ROOT/v1", "noauto", "/", "-", "-"),
            ("tank/ROOT/v2", "noauto", "/", "-", "-"),
            ("tank/ROOT/V1", "noauto", "/", "-", "-"),
            ("tank/ROOT/V2", "noauto", "/", "-", "-"),
            ("tank/ROOT/con", "noauto", "/", "-", "-"),
            ("tank/ROOT/v3.", "noauto", "/", "-", "-"),
        ]);
        let inv = Inventory::from_listing(&pool(), &l, None);
        let names: Vec<&str> = inv.bes.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["v1", "v2"]);
        assert_eq!(inv.ignored.len(), 4, "{:?}", inv.ignored);
        assert!(inv
            .ignored
            .iter()
            .any(|i| i.starts_with("tank/ROOT/V1 ignored") && i.contains("the one of v1")));
        assert!(inv
            .ignored
            .iter()
            .any(|i| i.starts_with("tank/ROOT/con ignored") && i.contains("device")));
        assert!(inv
            .ignored
            .iter()
            .any(|i| i.starts_with("tank/ROOT/v3. ignored") && i.contains("ends in '.'")));
    }

    #[test]
    fn bootfs_outside_root_is_no_be() {
        let inv = Inventory::from_listing(&pool(), &Listing::default(), Some("tank/data".into()));
        assert!(inv.bootfs_be().is_none());
        assert!(!inv.has_root);
    }
}
