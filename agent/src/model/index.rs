//! The BE index (`<pool>/BOOTENV/index`, format version 1): the last complete listing of
//! `<pool>/ROOT`, kept so that the verbs that rewrite the menu need not list every dataset of
//! every BE again (a listing costs per dataset: at 100 BEs, seconds). Pure: the format and the
//! check; [`crate::verbs::context`] reads, checks and writes it.
//!
//! The index is a cache, never a source of truth: a missing, unreadable or stale index costs a
//! full listing, nothing else. It is used only while it still describes the pool:
//! - the names of the datasets directly below `<pool>/ROOT` (the BE roots, read by a channel
//!   program that reads their names and [`CHECKED`] only) are the ones it holds: a BE made,
//!   renamed or destroyed with plain `zfs` commands makes it stale;
//! - so are their kernel command lines (`org.bootenv:cmdline`, own or inherited), which an
//!   operator sets on a BE with `zfs set`;
//! - `<pool>/ROOT`'s own properties (the pool-wide settings, read by name each time) are the
//!   ones it holds.
//!
//! What it cannot see: another property changed with plain `zfs set` on a BE root (the label,
//! `canmount`, `mountpoint`: the agent checks the last two again at boot), a property of a
//! member, or a member made or renamed by hand: `bootenv sync-boot` lists every dataset and
//! keeps the index afresh. bootenv's own verbs that change datasets remove the index before
//! they do; `bootenv list` and `status` always list every dataset.
//!
//! Layout: magic `BENVINDX`, version (u16 LE), payload length (u32 LE), the postcard payload
//! ([`Index`]), CRC-32 (LE) of everything before it.

use crate::model::layout::PROP_CMDLINE;
use crate::model::listing::{Child, Dataset, Listing};
use serde::{Deserialize, Serialize};

/// The file's name in the state directory.
pub const FILE: &str = "index";
/// The file's magic.
pub const MAGIC: &[u8; 8] = b"BENVINDX";
/// The format version this bootenv writes and reads.
pub const VERSION: u16 = 1;
/// The largest index read: a pool of 1,000 BEs with their members takes under 1 MiB.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;

/// The properties of each dataset directly below `<pool>/ROOT` that are read afresh and
/// compared with the index each time: the kernel command line, which an operator sets on a BE
/// with plain `zfs set` and which decides what the BE's menu entry boots. Each costs the
/// channel program about 2.3 ms per BE under TCG (the label too took `grub-menu` at 100 BEs to
/// 1.13 s); anything else set by hand is seen after `bootenv sync-boot`, which lists every
/// dataset and keeps the index afresh.
pub const CHECKED: [&str; 1] = [PROP_CMDLINE];

/// What the index holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// The names of the datasets directly below `<pool>/ROOT`, sorted.
    pub children: Vec<String>,
    /// The complete listing of `<pool>/ROOT` they were read with.
    pub listing: Listing,
}

impl Index {
    /// The index of a complete `listing` of `root` (`<pool>/ROOT`).
    pub fn of(root: &str, listing: &Listing) -> Index {
        let prefix = format!("{root}/");
        let mut children: Vec<String> = listing
            .datasets
            .iter()
            .map(|d| d.name.as_str())
            .chain(listing.tainted.iter().map(String::as_str))
            .filter(|n| n.strip_prefix(&prefix).is_some_and(|r| !r.contains('/')))
            .map(str::to_owned)
            .collect();
        children.sort();
        children.dedup();
        Index {
            children,
            listing: listing.clone(),
        }
    }

    /// The listing, when the index still describes the pool: `children` are the datasets
    /// below `root` now (any order) with the values of [`CHECKED`] they have, and `root_now` is
    /// `root` as it is now (`None`: it does not exist). The listing returned holds `root_now`
    /// itself, so its `used` is current.
    pub fn current(
        &self,
        root: &str,
        children: &[Child],
        root_now: Option<&Dataset>,
    ) -> Option<Listing> {
        let mut now: Vec<&str> = children.iter().map(|c| c.name.as_str()).collect();
        now.sort_unstable();
        now.dedup();
        if now != self.children.iter().map(String::as_str).collect::<Vec<_>>() {
            return None;
        }
        // The properties an operator sets by hand on a BE and the menu shows: as kept. (A
        // dataset the listing could not read one way only is not in it: listed again.)
        for c in children {
            let kept = self.listing.datasets.iter().find(|d| d.name == c.name)?;
            if CHECKED.iter().any(|p| kept.user.get(*p) != c.props.get(*p)) {
                return None;
            }
        }
        let kept = self.listing.datasets.iter().find(|d| d.name == root);
        let same = match (kept, root_now) {
            (None, None) => true,
            (Some(k), Some(n)) => {
                k.user == n.user && k.canmount == n.canmount && k.mountpoint == n.mountpoint
            }
            _ => false,
        };
        if !same || self.listing.tainted.iter().any(|t| t == root) {
            return None;
        }
        let mut l = self.listing.clone();
        l.datasets.retain(|d| d.name != root);
        l.datasets.extend(root_now.cloned());
        Some(l)
    }
}

/// Encodes an index.
pub fn encode(index: &Index) -> Vec<u8> {
    let payload = postcard::to_stdvec(index).expect("serialising to a Vec cannot fail");
    crate::model::state::frame(MAGIC, VERSION, &payload)
}

/// Decodes an index; `Err` says why it cannot be used (then bootenv lists every dataset).
pub fn decode(bytes: &[u8]) -> Result<Index, String> {
    if bytes.len() < 18 || &bytes[..8] != MAGIC {
        return Err(format!("not a bootenv index ({} bytes)", bytes.len()));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(format!("index format version {version}, not {VERSION}"));
    }
    if bytes.len() > MAX_BYTES {
        return Err(format!("{} bytes, more than an index holds", bytes.len()));
    }
    let len = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    if bytes.len() != 18 + len {
        return Err("cut short or too long".into());
    }
    let crc = u32::from_le_bytes(bytes[14 + len..].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..14 + len]) != crc {
        return Err("checksum mismatch".into());
    }
    postcard::from_bytes::<Index>(&bytes[14..14 + len]).map_err(|e| format!("payload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inventory::tests::{config_of, listing};

    fn sample() -> Listing {
        listing(&[
            ("tank/ROOT", "off", "none", "-", "-"),
            ("tank/ROOT/v1", "noauto", "/", "one", "-"),
            config_of("tank/ROOT/v1"),
            ("tank/ROOT/v2", "noauto", "/", "two", "-"),
        ])
    }

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        let i = Index::of("tank/ROOT", &sample());
        assert_eq!(i.children, vec!["tank/ROOT/v1", "tank/ROOT/v2"]);
        let b = encode(&i);
        assert_eq!(decode(&b).unwrap(), i);
        for n in 0..b.len() {
            let mut d = b.clone();
            d[n] ^= 0x41;
            assert!(decode(&d).is_err(), "byte {n} flipped was accepted");
        }
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "cut at {n} was accepted");
        }
    }

    #[test]
    fn stale_when_a_be_came_went_or_was_renamed_or_the_settings_changed() {
        let l = sample();
        let i = Index::of("tank/ROOT", &l);
        let root = l.datasets[0].clone();
        // As the channel program reads them: names, and each command line set (none here).
        let child = |n: &str, cmdline: Option<&str>| Child {
            name: n.to_string(),
            props: cmdline
                .map(|v| [("org.bootenv:cmdline".to_string(), v.to_string())].into())
                .unwrap_or_default(),
        };
        let now = vec![child("tank/ROOT/v2", None), child("tank/ROOT/v1", None)];
        let mut grown = root.clone();
        grown.used += 4096;
        let cur = i.current("tank/ROOT", &now, Some(&grown)).unwrap();
        assert!(cur.datasets.contains(&grown) && !cur.datasets.contains(&root));
        assert_eq!(cur.datasets.len(), l.datasets.len());
        // Renamed, destroyed, made; a command line set on a BE.
        for v in [
            vec![child("tank/ROOT/v1", None), child("tank/ROOT/v3", None)],
            vec![child("tank/ROOT/v1", None)],
            vec![
                child("tank/ROOT/v1", None),
                child("tank/ROOT/v2", None),
                child("tank/ROOT/v3", None),
            ],
            vec![
                child("tank/ROOT/v1", None),
                child("tank/ROOT/v2", Some("quiet")),
            ],
        ] {
            assert!(i.current("tank/ROOT", &v, Some(&root)).is_none(), "{v:?}");
        }
        // A pool-wide setting changed, or ROOT is gone.
        let mut set = root.clone();
        set.user
            .insert("org.bootenv:cmdline".into(), "quiet".into());
        assert!(i.current("tank/ROOT", &now, Some(&set)).is_none());
        assert!(i.current("tank/ROOT", &now, None).is_none());
    }
}
