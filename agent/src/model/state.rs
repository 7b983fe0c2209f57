//! The agent's state record: what bootenv remembers across boots (the last known-good boot
//! environment, recent events). A public on-disk format, version 1, documented in
//! ARCHITECTURE.md.
//!
//! It lives in the file `state` of the dataset `<pool>/BOOTENV`, which the agent mounts at
//! `/run/bootenv/state`. The file is a header, a postcard payload and a CRC-32:
//!
//! ```text
//! 0   8   magic "BENVSTAT"
//! 8   2   format version, little endian (1)
//! 10  4   payload length n, little endian
//! 14  n   payload: postcard encoding of `State`
//! 14+n 4  CRC-32 (IEEE) of bytes 0 .. 14+n, little endian
//! ```
//!
//! Writes replace the file atomically (`sys::statefile::store`, through `sys::fsutil::atomic_write`). A record that does not
//! verify is never silently dropped: it is copied to `state.corrupt` before being replaced. A
//! record of a newer version (written by a newer bootenv in another boot environment) is read
//! as empty and never overwritten.

use serde::{Deserialize, Serialize};

/// Magic bytes at the start of the record.
pub const MAGIC: &[u8; 8] = b"BENVSTAT";
/// The format version this build reads and writes.
pub const VERSION: u16 = 1;
/// File name inside the state directory.
pub const FILE: &str = "state";
/// How many events the record keeps.
pub const MAX_EVENTS: usize = 32;
/// How many defaults the history keeps.
pub const MAX_HISTORY: usize = 32;

/// The state record, version 1. Fields are only ever appended in a new version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The last boot environment known to be good (marked good after a boot).
    pub last_good: Option<String>,
    /// A trial in progress: the request stays here until the trial is committed
    /// (`bootenv mark-good` in the trial BE) or rolled back (recorded by the agent).
    pub trial: Option<Trial>,
    /// A factory reset to carry out (or resume) when its BE boots; cleared only when done.
    pub reset: Option<ResetRequest>,
    /// The BEs that became the default, oldest first, at most [`MAX_HISTORY`]: what
    /// `bootenv rollback` walks back through and `bootenv rollforward` forward.
    pub history: Vec<String>,
    /// Recent events, oldest first, at most [`MAX_EVENTS`].
    pub events: Vec<Event>,
}

/// How much a factory reset resets. (Named in lower case in JSON; postcard encodes variants
/// by their index, so names never reach the record.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetMode {
    /// The BE's config dataset goes back to its factory snapshot.
    Config,
    /// The config, and the shared datasets marked `org.bootenv:data=reset`.
    Full,
}

/// A factory reset request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetRequest {
    /// The BE whose config is reset (the reset runs when it boots).
    pub be: String,
    /// How much.
    pub mode: ResetMode,
    /// Destroy the previous data instead of keeping it (full resets only).
    pub erase: bool,
    /// The reset's id (a UTC time, `20261122T061500Z`): names what it keeps aside.
    pub id: String,
    /// Who asked: `grub` (the boot menu) or `cli`.
    pub origin: String,
}

/// A trial request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    /// The BE on trial.
    pub be: String,
    /// How many boots it was given.
    pub tries: u32,
}

/// Something bootenv did that an operator may want to know about later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the epoch (the machine's clock, which may be wrong early in boot).
    pub time: u64,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of [`Event`]. (In JSON `{"<kind-in-kebab-case>": {fields}}`; postcard encodes
/// variants by their index, so names never reach the record.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The agent booted another boot environment than the one asked for.
    Fallback {
        /// What the command line asked for.
        requested: String,
        /// What booted instead.
        booted: String,
        /// Why.
        reason: String,
    },
    /// A boot environment was marked good.
    MarkedGood {
        /// Which.
        be: String,
    },
    /// A trial started (`bootenv activate --trial`).
    TrialStarted {
        /// The BE on trial.
        be: String,
        /// Its tries.
        tries: u32,
    },
    /// A trial BE marked itself good and became the default.
    TrialCommitted {
        /// Which.
        be: String,
    },
    /// A trial used up its tries without being marked good; GRUB booted another BE.
    Rollback {
        /// The BE whose trial failed.
        failed: String,
        /// What booted instead.
        booted: String,
    },
    /// A factory reset was requested.
    ResetRequested {
        /// The request.
        request: ResetRequest,
    },
    /// A factory reset was carried out.
    ResetDone {
        /// The request.
        request: ResetRequest,
        /// Where each previous dataset went (`tank/ROOT/v1/config -> tank/ROOT/v1/config.reset-<id>`).
        kept: Vec<String>,
        /// Previous datasets destroyed (`erase`).
        erased: Vec<String>,
    },
    /// A factory reset could not be carried out and was dropped, with the reason.
    ResetDropped {
        /// The request.
        request: ResetRequest,
        /// Why.
        reason: String,
    },
    /// A BE was destroyed.
    Destroyed {
        /// Which.
        be: String,
    },
    /// A BE was renamed.
    Renamed {
        /// Its old name.
        from: String,
        /// Its new name.
        to: String,
    },
    /// A BE was made the default (`bootenv activate`) or picked for the next boot only
    /// (`bootenv activate --once`).
    Activated {
        /// Which.
        be: String,
        /// For the next boot only.
        once: bool,
    },
}

/// What reading the record found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// No record yet.
    Missing,
    /// A valid record.
    Valid(State),
    /// A record that does not verify, with the reason.
    Corrupt(String),
    /// A record of a newer format version.
    Newer(u16),
}

impl Loaded {
    /// The state to act on: empty unless the record is valid.
    pub fn state(&self) -> State {
        match self {
            Loaded::Valid(s) => s.clone(),
            _ => State::default(),
        }
    }
}

impl State {
    /// Notes that `be` became the default (unless it already is the newest entry).
    pub fn became_default(&mut self, be: &str) {
        if self.history.last().map(String::as_str) != Some(be) {
            self.history.push(be.to_owned());
        }
        let extra = self.history.len().saturating_sub(MAX_HISTORY);
        self.history.drain(..extra);
    }

    /// Appends an event, dropping the oldest beyond [`MAX_EVENTS`].
    pub fn push(&mut self, time: u64, kind: EventKind) {
        self.events.push(Event { time, kind });
        let extra = self.events.len().saturating_sub(MAX_EVENTS);
        self.events.drain(..extra);
    }
}

/// Encodes a record.
pub fn encode(state: &State) -> Vec<u8> {
    let payload = postcard::to_stdvec(state).expect("serialising to a Vec cannot fail");
    frame(MAGIC, VERSION, &payload)
}

/// The framing of bootenv's files on the state dataset (the state record, the BE index): the
/// magic, the version (u16 LE), the payload's length (u32 LE), the payload, and the CRC-32 (LE)
/// of everything before it.
pub fn frame(magic: &[u8; 8], version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The largest record bootenv reads: one it wrote holds at most a few KiB (32 events, 32
/// names of history); a larger one, however it verifies, is not decoded (it could hold
/// anything, and the initramfs has little memory).
pub const MAX_RECORD: usize = 256 * 1024;

/// Decodes a record. A record of a newer format is recognised by its magic and version alone,
/// whatever follows (a newer bootenv may frame it otherwise), so that it is never overwritten.
/// A valid record is bounded on the way in: history and events beyond their limits are dropped
/// (the oldest first), as bootenv itself would have.
pub fn decode(bytes: &[u8]) -> Loaded {
    if bytes.len() < 10 || &bytes[..8] != MAGIC {
        return Loaded::Corrupt(format!(
            "not a bootenv state record ({} bytes, bad magic)",
            bytes.len()
        ));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version > VERSION {
        return Loaded::Newer(version);
    }
    if bytes.len() < 18 {
        return Loaded::Corrupt(format!("a record of {} bytes is cut short", bytes.len()));
    }
    if bytes.len() > MAX_RECORD {
        return Loaded::Corrupt(format!(
            "{} bytes, more than a bootenv record ever holds ({MAX_RECORD})",
            bytes.len()
        ));
    }
    let len = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    if bytes.len() != 18 + len {
        return Loaded::Corrupt(format!(
            "length {} does not match the header ({})",
            bytes.len(),
            18 + len
        ));
    }
    let crc = u32::from_le_bytes(bytes[14 + len..].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..14 + len]) != crc {
        return Loaded::Corrupt("checksum mismatch".into());
    }
    if version != VERSION {
        return Loaded::Corrupt(format!("unknown format version {version}"));
    }
    match postcard::from_bytes::<State>(&bytes[14..14 + len]) {
        Ok(mut s) => {
            let extra = s.history.len().saturating_sub(MAX_HISTORY);
            s.history.drain(..extra);
            let extra = s.events.len().saturating_sub(MAX_EVENTS);
            s.events.drain(..extra);
            Loaded::Valid(s)
        }
        Err(e) => Loaded::Corrupt(format!("payload does not decode: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::statefile::{load, store};

    fn sample() -> State {
        let mut s = State {
            last_good: Some("v1".into()),
            trial: Some(Trial {
                be: "v2".into(),
                tries: 3,
            }),
            reset: Some(ResetRequest {
                be: "v1".into(),
                mode: ResetMode::Full,
                erase: true,
                id: "20261122T000000Z".into(),
                origin: "cli".into(),
            }),
            history: vec!["v1".into()],
            events: vec![],
        };
        s.push(
            5,
            EventKind::Fallback {
                requested: "x".into(),
                booted: "v1".into(),
                reason: "gone".into(),
            },
        );
        s
    }

    #[test]
    fn round_trips() {
        assert_eq!(decode(&encode(&sample())), Loaded::Valid(sample()));
        assert_eq!(
            decode(&encode(&State::default())),
            Loaded::Valid(State::default())
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let good = encode(&sample());
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                assert!(
                    !matches!(decode(&b), Loaded::Valid(_)),
                    "flip at byte {i} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let good = encode(&sample());
        for n in 0..good.len() {
            assert!(
                matches!(decode(&good[..n]), Loaded::Corrupt(_)),
                "truncation to {n} bytes"
            );
        }
    }

    #[test]
    fn newer_versions_are_recognised_and_never_overwritten() {
        let mut b = encode(&sample());
        b[8] = 9;
        let n = b.len() - 4;
        let crc = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&b), Loaded::Newer(9));
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), &b).unwrap();
        assert!(store(d.path(), &State::default())
            .unwrap_err()
            .to_string()
            .contains("newer"));
        assert_eq!(std::fs::read(d.path().join(FILE)).unwrap(), b);
    }

    #[test]
    fn corrupt_records_are_kept_aside() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()).unwrap(), Loaded::Missing);
        std::fs::write(d.path().join(FILE), b"garbage").unwrap();
        assert!(matches!(load(d.path()).unwrap(), Loaded::Corrupt(_)));
        store(d.path(), &sample()).unwrap();
        assert_eq!(load(d.path()).unwrap(), Loaded::Valid(sample()));
        assert_eq!(
            std::fs::read(d.path().join("state.corrupt")).unwrap(),
            b"garbage"
        );
    }

    #[test]
    fn events_are_bounded() {
        let mut s = State::default();
        for i in 0..100 {
            s.push(
                i,
                EventKind::MarkedGood {
                    be: format!("b{i}"),
                },
            );
        }
        assert_eq!(s.events.len(), MAX_EVENTS);
        assert_eq!(s.events[0].time, 100 - MAX_EVENTS as u64);
    }

    #[test]
    fn a_newer_record_is_never_overwritten_whatever_its_framing() {
        let d = tempfile::tempdir().unwrap();
        // Magic and a newer version, then anything: another header, no checksum.
        let mut newer = MAGIC.to_vec();
        newer.extend_from_slice(&(VERSION + 1).to_le_bytes());
        newer.extend_from_slice(b"a longer header of a later bootenv, and no crc");
        std::fs::write(d.path().join(FILE), &newer).unwrap();
        assert_eq!(load(d.path()).unwrap(), Loaded::Newer(VERSION + 1));
        assert!(store(d.path(), &State::default()).is_err());
        assert_eq!(std::fs::read(d.path().join(FILE)).unwrap(), newer);
    }

    #[test]
    fn absurd_records_that_verify_are_bounded_or_refused() {
        // Endless events and history, huge names: read back within the limits.
        let mut s = State::default();
        for i in 0..10_000u64 {
            s.events.push(Event {
                time: i,
                kind: EventKind::MarkedGood {
                    be: "x".repeat(100),
                },
            });
            s.history.push(format!("h{i}"));
        }
        s.last_good = Some("n".repeat(200_000));
        let b = encode(&s);
        assert!(b.len() > MAX_RECORD);
        assert!(matches!(decode(&b), Loaded::Corrupt(w) if w.contains("more than")));
        s.last_good = Some("n".repeat(5_000));
        s.events.truncate(1_000);
        s.history.truncate(1_000);
        let Loaded::Valid(back) = decode(&encode(&s)) else {
            panic!("a record within the size limit is read")
        };
        assert_eq!(
            (back.events.len(), back.history.len()),
            (MAX_EVENTS, MAX_HISTORY)
        );
        assert_eq!(back.events.last().unwrap().time, 999);
        assert_eq!(back.history.last().map(String::as_str), Some("h999"));
    }
}
