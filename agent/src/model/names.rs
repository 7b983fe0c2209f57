//! Validated names: boot environments and pools.
//!
//! Every name that reaches a command line, a mount, a GRUB menu or a log line passes through
//! these types first. A dataset name on disk may hold anything ZFS allows (spaces, colons, very
//! long names); bootenv only manages the ones that are safe everywhere it puts them, and reports
//! the others instead of acting on them.

use std::fmt;

/// The longest boot environment name bootenv accepts.
pub const MAX_BE_NAME: usize = 64;

/// The name of a boot environment: the last component of `<pool>/ROOT/<name>`.
///
/// Allowed: ASCII letters, digits, `.`, `_` and `-`; it starts with a letter or digit and is at
/// most [`MAX_BE_NAME`] bytes long. Such a name needs no quoting in a kernel command line, a
/// GRUB script, a shell or a path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BeName(String);

/// The name of a ZFS pool, restricted like [`BeName`] but starting with a letter (a ZFS rule).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolName(String);

/// Why a name was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError {
    /// What kind of name it was meant to be ("boot environment", "pool").
    pub kind: &'static str,
    /// The refused text, made printable.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (extra, most) = if self.kind == SNAPSHOT {
            (", ':'", MAX_SNAP_NAME)
        } else {
            ("", MAX_BE_NAME)
        };
        write!(
            f,
            "invalid {} name {:?}: {} (allowed: letters, digits, '.', '_', '-'{extra}; at most {most} characters)",
            self.kind, self.text, self.why
        )
    }
}

/// The longest snapshot name (after `@`) bootenv accepts.
pub const MAX_SNAP_NAME: usize = 128;
const SNAPSHOT: &str = "snapshot";

/// A boot environment or one of its snapshots, as an operator names it: `NAME` or
/// `NAME@SNAPSHOT` (the one parser of that form). A snapshot name holds letters, digits and
/// `._:-` (bootenv's own are `factory`, `bootenv-<time>` and reset ids), at most
/// [`MAX_SNAP_NAME`] bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeRef {
    /// The boot environment.
    pub be: BeName,
    /// The snapshot's name, after `@`.
    pub snap: Option<String>,
}

impl BeRef {
    /// Parses and validates `NAME` or `NAME@SNAPSHOT`.
    pub fn parse(s: &str) -> Result<BeRef, NameError> {
        let Some((b, snap)) = s.split_once('@') else {
            return Ok(BeRef {
                be: BeName::new(s)?,
                snap: None,
            });
        };
        let be = BeName::new(b)?;
        let err = |why| NameError {
            kind: SNAPSHOT,
            text: printable(snap),
            why,
        };
        if snap.is_empty() {
            return Err(err("it is empty"));
        }
        if snap.len() > MAX_SNAP_NAME {
            return Err(err("it is too long"));
        }
        if !snap
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
        {
            return Err(err("it holds a character that is not allowed"));
        }
        Ok(BeRef {
            be,
            snap: Some(snap.to_owned()),
        })
    }

    /// The dataset or snapshot it names, given the BE's root dataset.
    pub fn dataset(&self, be_dataset: &str) -> String {
        match &self.snap {
            Some(s) => format!("{be_dataset}@{s}"),
            None => be_dataset.to_owned(),
        }
    }
}

impl std::error::Error for NameError {}

fn check(kind: &'static str, s: &str, first_may_be_digit: bool) -> Result<(), NameError> {
    let err = |why| NameError {
        kind,
        text: printable(s),
        why,
    };
    let first = match s.bytes().next() {
        None => return Err(err("it is empty")),
        Some(b) => b,
    };
    if s.len() > MAX_BE_NAME {
        return Err(err("it is too long"));
    }
    let first_ok = first.is_ascii_alphabetic() || (first_may_be_digit && first.is_ascii_digit());
    if !first_ok {
        return Err(err(if first_may_be_digit {
            "it must start with a letter or a digit"
        } else {
            "it must start with a letter"
        }));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(err("it holds a character that is not allowed"));
    }
    Ok(())
}

/// Device names FAT (and Linux's vfat) reserves: no file or directory may have one as its
/// base name (the part before the first `.`), in any case.
const FAT_DEVICES: [&str; 4] = ["aux", "con", "nul", "prn"];

/// The names of bootenv's own files in its directory on the ESP (`/bootenv/`), in lower case.
pub const ESP_FILES: [&str; 3] = [
    crate::model::paths::ESP_MENU,
    crate::model::paths::ESP_ENV,
    crate::model::paths::ESP_ENV_DAMAGED,
];

/// Why a boot environment name cannot be a directory of its own on a FAT ESP, if it cannot.
fn fat_problem(s: &str) -> Option<&'static str> {
    let lower = s.to_ascii_lowercase();
    let base = lower.split('.').next().unwrap_or("");
    if s.ends_with('.') {
        return Some(
            "it ends in '.', which FAT drops (its directory on the ESP would be another name's)",
        );
    }
    let device = FAT_DEVICES.contains(&base)
        || (base.len() == 4
            && (base.starts_with("com") || base.starts_with("lpt"))
            && matches!(base.as_bytes()[3], b'1'..=b'9'));
    if device {
        return Some("FAT reserves it for a device (the ESP cannot hold a directory of that name)");
    }
    if ESP_FILES.contains(&lower.as_str()) {
        return Some("bootenv keeps a file of that name in its directory on the ESP");
    }
    None
}

/// Makes arbitrary text safe to print on one log line: control characters are escaped and very
/// long text is cut.
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push_str("...");
    }
    out
}

impl BeName {
    /// Validates `s` as a boot environment name: the characters above, and a name that is a
    /// directory of its own on a FAT ESP (not ending in `.`, not a FAT device name, not one of
    /// bootenv's own files there).
    pub fn new(s: &str) -> Result<BeName, NameError> {
        check("boot environment", s, true)?;
        if let Some(why) = fat_problem(s) {
            return Err(NameError {
                kind: "boot environment",
                text: printable(s),
                why,
            });
        }
        Ok(BeName(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of its directory as FAT compares names (ASCII case folded): two BEs with the
    /// same key would share one directory on the ESP.
    pub fn fat_key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl PoolName {
    /// Validates `s` as a pool name.
    pub fn new(s: &str) -> Result<PoolName, NameError> {
        check("pool", s, false)?;
        Ok(PoolName(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for BeName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BeName::new(s)
    }
}

impl std::str::FromStr for PoolName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PoolName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["v1", "2024.06-rc1", "factory", "a_b-c.d", &"x".repeat(64)] {
            assert_eq!(BeName::new(ok).unwrap().as_str(), ok);
        }
        assert!(PoolName::new("rpool").is_ok());
        assert!(PoolName::new("tank-2").is_ok());
    }

    #[test]
    fn refuses_hostile_names() {
        let hostile = [
            "",
            "-rf",
            ".hidden",
            "a b",
            "a;reboot",
            "a\nb",
            "a$(x)",
            "a`x`",
            "a\"b",
            "a'b",
            "a/b",
            "a@snap",
            "a:b",
            "a\\b",
            "a{b}",
            "é",
            &"x".repeat(65),
        ];
        for bad in hostile {
            let e = BeName::new(bad).unwrap_err();
            assert!(
                !e.to_string().contains('\n'),
                "message must stay on one line: {e}"
            );
        }
    }

    #[test]
    fn every_name_is_a_directory_of_its_own_on_a_fat_esp() {
        for bad in [
            "v1.",
            "v1..",
            "con",
            "CON",
            "nul.x",
            "Aux.2",
            "prn",
            "com1",
            "LPT9",
            "lpt1.old",
            "grub.cfg",
            "GRUBENV",
            "grubenv.damaged",
        ] {
            let e = BeName::new(bad).unwrap_err().to_string();
            assert!(e.contains("FAT") || e.contains("ESP"), "{bad}: {e}");
        }
        for ok in [
            "com", "com0", "com10", "console", "lpt", "con1", "v1.0", "grub", "aux-1",
        ] {
            assert!(BeName::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(BeName::new("V1.Old").unwrap().fat_key(), "v1.old");
    }

    #[test]
    fn pool_must_start_with_a_letter() {
        assert!(PoolName::new("1pool").is_err());
        assert!(BeName::new("1be").is_ok());
    }

    #[test]
    fn printable_escapes_control_characters_and_cuts() {
        assert_eq!(printable("a\nb\x1b"), "a\\nb\\u{1b}");
        assert!(printable(&"y".repeat(200)).ends_with("..."));
    }

    #[test]
    fn be_and_snapshot_references_parse_once() {
        let r = BeRef::parse("v1@factory").unwrap();
        assert_eq!((r.be.as_str(), r.snap.as_deref()), ("v1", Some("factory")));
        assert_eq!(r.dataset("tank/ROOT/v1"), "tank/ROOT/v1@factory");
        let r = BeRef::parse("v2").unwrap();
        assert_eq!((r.be.as_str(), r.snap), ("v2", None));
        for (bad, why) in [
            ("v1@", "empty"),
            ("v1@a b", "not allowed"),
            ("v1@a@b", "not allowed"),
            ("v 1@x", "not allowed"),
            ("@x", "empty"),
        ] {
            let e = BeRef::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(BeRef::parse(&format!("v1@{}", "s".repeat(MAX_SNAP_NAME))).is_ok());
        assert!(BeRef::parse(&format!("v1@{}", "s".repeat(MAX_SNAP_NAME + 1))).is_err());
    }
}
