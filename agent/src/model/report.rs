//! What the agent tells the booted system: `/run/bootenv/boot` (always) and
//! `/run/bootenv/fallback` (only after a fallback). A public format, version 1:
//! `key=value` lines, values on one line, unknown keys to be ignored by readers.
//!
//! ```text
//! version=1
//! be=v2                      the boot environment that booted
//! pool=tank
//! dataset=tank/ROOT/v2
//! choice=requested|default|fallback
//! source=bootfs|last-good|only-one|grub (default and fallback; grub: GRUB could not load the
//!                                        requested BE's kernel and booted this one)
//! requested=nosuch                      (fallback)
//! reason=...                            (fallback)
//! hostid=2d0b6f3f                       (when the pool's hostid was adopted)
//! init=/sbin/init
//! agent-start=1.234          seconds since the kernel started, when the agent started
//! import-seconds=0.873       seconds the pool's import took (ZFS's time; grows with datasets)
//! init-exec=3.456            seconds since the kernel started, just before exec of init
//! reset=...                  (after a factory reset) what it kept and erased
//! reset-seconds=0.412        (after a factory reset) its time: recording, datasets, state
//! warning=...                (one line per warning)
//! ```

use std::collections::BTreeMap;
use std::fmt::Write;

/// Format version of the report.
pub const VERSION: &str = "1";
/// The report's directory, relative to the root.
pub const DIR: &str = crate::model::paths::RUN;

/// The boot report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// `key=value` pairs in order; `warning` may repeat.
    pub entries: Vec<(String, String)>,
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

impl Report {
    /// Appends a pair.
    pub fn put(&mut self, k: &str, v: &str) {
        self.entries.push((k.to_owned(), one_line(v)));
    }

    /// The first value of `k`.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `k`.
    pub fn all(&self, k: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.entries {
            let _ = writeln!(s, "{k}={v}");
        }
        s
    }

    /// Reads a report; lines without `=` are skipped.
    pub fn parse(text: &str) -> Report {
        Report {
            entries: text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// The keys as a map (first value wins), for display.
    pub fn map(&self) -> BTreeMap<&str, &str> {
        let mut m = BTreeMap::new();
        for (k, v) in &self.entries {
            m.entry(k.as_str()).or_insert(v.as_str());
        }
        m
    }

    /// The one-line human sentence of `/run/bootenv/fallback`, for a fallback report.
    pub fn fallback_sentence(&self) -> Option<String> {
        if self.get("choice") != Some("fallback") {
            return None;
        }
        Some(format!(
            "bootenv: booted {} instead of {}: {}\n",
            self.get("be").unwrap_or("?"),
            self.get("requested").unwrap_or("?"),
            self.get("reason").unwrap_or("?")
        ))
    }
}
