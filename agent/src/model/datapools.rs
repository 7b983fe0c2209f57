//! Data pools: the pools that hold an appliance's customer data beside the system pool, which
//! holds only the boot environments and bootenv's state. The agent never imports them: a data
//! pool's import walks every one of its datasets (ZFS's log checks, `dsl_destroy_inconsistent`,
//! zvol minors), so a boot that waited for it would grow with the customer's data. The booted
//! system imports them (`bootenv data-pools import`, run by `bootenv-data-pools.service`), and
//! a data pool that is missing or fails never stops a boot, a mark-good or a rollback.
//!
//! Two public formats (ARCHITECTURE.md, "Data pools", version 1), parsed and written here:
//!
//! ```text
//! org.bootenv:data-pools on <system pool>/ROOT:   "<pool>[:<mount>] ..."   in import order
//!     <mount>: all (default: every dataset with canmount=on is mounted, as `zpool import`
//!              does) or none (`zpool import -N`: the services mount what they use)
//! /run/bootenv/data-pools, one line per data pool:  <pool> TAB <state> TAB <seconds> TAB <message>
//!     <state>: importing, imported, already-imported, missing, unavailable, failed
//! ```

use crate::model::names::PoolName;
use std::fmt;

/// At most this many data pools are registered.
pub const MAX_DATA_POOLS: usize = 16;

/// What is mounted when a data pool is imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountPolicy {
    /// Every dataset with `canmount=on`, at its mountpoint (as `zpool import` mounts them).
    All,
    /// Nothing (`zpool import -N`): the services that use the data mount what they use.
    None,
}

impl MountPolicy {
    /// Its word in the property and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            MountPolicy::All => "all",
            MountPolicy::None => "none",
        }
    }

    /// Reads its word.
    pub fn parse(s: &str) -> Option<MountPolicy> {
        match s {
            "all" => Some(MountPolicy::All),
            "none" => Some(MountPolicy::None),
            _ => None,
        }
    }
}

/// One registered data pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPool {
    /// Its name.
    pub name: PoolName,
    /// What its import mounts.
    pub mount: MountPolicy,
}

impl fmt::Display for DataPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mount {
            MountPolicy::All => write!(f, "{}", self.name),
            m => write!(f, "{}:{}", self.name, m.as_str()),
        }
    }
}

/// The data pools a system pool names, and what in the property could not be read (each
/// problem leaves out only its own word).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// The data pools, in import order.
    pub pools: Vec<DataPool>,
    /// Words left out, each with its reason and the fix.
    pub problems: Vec<String>,
}

impl Registration {
    /// Reads the value of `org.bootenv:data-pools`; `system` is the system pool (never a data
    /// pool of itself).
    pub fn parse(value: &str, system: &PoolName) -> Registration {
        let mut r = Registration::default();
        for word in value.split_ascii_whitespace() {
            let (name, mount) = match word.split_once(':') {
                Some((n, m)) => (n, MountPolicy::parse(m)),
                None => (word, Some(MountPolicy::All)),
            };
            let Some(mount) = mount else {
                r.problems.push(format!(
                    "data pool entry {word:?} left out: the mount policy after ':' must be all or none"
                ));
                continue;
            };
            let name = match PoolName::new(name) {
                Ok(n) => n,
                Err(e) => {
                    r.problems
                        .push(format!("data pool entry {word:?} left out: {e}"));
                    continue;
                }
            };
            if &name == system {
                r.problems.push(format!(
                    "data pool entry {word:?} left out: it is the system pool"
                ));
            } else if r.pools.iter().any(|p| p.name == name) {
                r.problems.push(format!(
                    "data pool entry {word:?} left out: pool {name} is named twice"
                ));
            } else if r.pools.len() == MAX_DATA_POOLS {
                r.problems.push(format!(
                    "data pool entry {word:?} left out: at most {MAX_DATA_POOLS} data pools"
                ));
            } else {
                r.pools.push(DataPool { name, mount });
            }
        }
        r
    }

    /// The property's value for these pools.
    pub fn value(&self) -> String {
        self.pools
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The registered pool named `name`.
    pub fn get(&self, name: &PoolName) -> Option<&DataPool> {
        self.pools.iter().find(|p| &p.name == name)
    }
}

/// Where a data pool stands after the booted system tried to import it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolState {
    /// Its import has started and not ended (or was cut).
    Importing,
    /// Imported by bootenv.
    Imported,
    /// It was imported already (by the operator, or by another service).
    AlreadyImported,
    /// No disk of it appeared in time.
    Missing,
    /// Its disks are there but ZFS cannot import it (devices missing from its vdevs, damaged).
    Unavailable,
    /// `zpool import` failed (another system's pool, in use elsewhere, ...).
    Failed,
    /// Registered, and this boot has not tried it (no report line).
    NotTried,
}

impl PoolState {
    /// Its word in the report and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Importing => "importing",
            PoolState::Imported => "imported",
            PoolState::AlreadyImported => "already-imported",
            PoolState::Missing => "missing",
            PoolState::Unavailable => "unavailable",
            PoolState::Failed => "failed",
            PoolState::NotTried => "not-tried",
        }
    }

    /// Reads its word.
    pub fn parse(s: &str) -> Option<PoolState> {
        [
            PoolState::Importing,
            PoolState::Imported,
            PoolState::AlreadyImported,
            PoolState::Missing,
            PoolState::Unavailable,
            PoolState::Failed,
            PoolState::NotTried,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// Whether the pool is usable (imported, by whomever).
    pub fn usable(self) -> bool {
        matches!(self, PoolState::Imported | PoolState::AlreadyImported)
    }
}

/// One line of `/run/bootenv/data-pools`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportLine {
    /// The pool's name as registered.
    pub pool: String,
    /// Where it stands.
    pub state: PoolState,
    /// Seconds its import (and mounts) took, or waiting for it took.
    pub seconds: f64,
    /// What happened, and for a pool that is not usable, the fix.
    pub message: String,
}

/// The report file's text.
pub fn render_report(lines: &[ReportLine]) -> String {
    let mut s = String::new();
    for l in lines {
        let msg = l.message.replace(['\t', '\n', '\r'], " ");
        s.push_str(&format!(
            "{}\t{}\t{:.3}\t{}\n",
            l.pool,
            l.state.as_str(),
            l.seconds,
            msg
        ));
    }
    s
}

/// Reads the report file's text; lines it cannot read are skipped.
pub fn parse_report(text: &str) -> Vec<ReportLine> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, '\t');
            let pool = f.next()?.to_owned();
            let state = PoolState::parse(f.next()?)?;
            let seconds = f.next()?.parse().ok()?;
            let message = f.next().unwrap_or("").to_owned();
            Some(ReportLine {
                pool,
                state,
                seconds,
                message,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys() -> PoolName {
        PoolName::new("rpool").unwrap()
    }

    #[test]
    fn the_property_names_pools_in_order_with_their_mount_policy() {
        let r = Registration::parse("  data archive:none\tscratch:all ", &sys());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let names: Vec<_> = r.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["data", "archive", "scratch"]);
        assert_eq!(r.pools[1].mount, MountPolicy::None);
        assert_eq!(r.pools[2].mount, MountPolicy::All);
        assert_eq!(r.value(), "data archive:none scratch");
        assert_eq!(Registration::parse(&r.value(), &sys()), r);
        assert_eq!(Registration::parse("", &sys()), Registration::default());
        assert_eq!(Registration::parse("-", &sys()).pools.len(), 0);
    }

    #[test]
    fn a_bad_word_costs_only_itself() {
        let r = Registration::parse(
            "data x:some rpool data:none -bad $(reboot) ok;x fine",
            &sys(),
        );
        let names: Vec<_> = r.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["data", "fine"]);
        assert_eq!(r.problems.len(), 6, "{:?}", r.problems);
        assert!(r.problems[0].contains("all or none"));
        assert!(r.problems[1].contains("system pool"));
        assert!(r.problems[2].contains("twice"));
        let many: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
        let r = Registration::parse(&many.join(" "), &sys());
        assert_eq!(r.pools.len(), MAX_DATA_POOLS);
        assert_eq!(r.problems.len(), 4);
    }

    #[test]
    fn the_report_reads_back_what_was_written() {
        let lines = vec![
            ReportLine {
                pool: "data".into(),
                state: PoolState::Imported,
                seconds: 1.5,
                message: "imported\twith a tab\nand a newline".into(),
            },
            ReportLine {
                pool: "archive".into(),
                state: PoolState::Missing,
                seconds: 30.0,
                message: String::new(),
            },
        ];
        let back = parse_report(&render_report(&lines));
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].message, "imported with a tab and a newline");
        assert_eq!(back[1].state, PoolState::Missing);
        assert_eq!(back[1].seconds, 30.0);
        assert!(parse_report("x\tbogus\t1\t\nonly-a-name\n").is_empty());
    }
}
