//! Running programs on the build host, with the command and its stderr in every error.

use anyhow::{bail, Context};
use std::process::Command;

/// Runs `program args...`; fails with its stderr when it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (run `cargo xtask deps`)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Packs the tree `dir` into the tarball `out` (numeric owners, extended attributes kept).
pub fn tar_dir(dir: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    run(
        "tar",
        &[
            "--numeric-owner",
            "--xattrs",
            "-C",
            &dir.to_string_lossy(),
            "-cf",
            &out.to_string_lossy(),
            ".",
        ],
    )
    .map(|_| ())
}

/// A stable 64-bit FNV-1a hash, for cache keys: each part is followed by a 0xff byte, so that
/// moving bytes from one part to the next changes the hash.
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv::new();
    for p in parts {
        h.part(p);
    }
    h.finish()
}

/// [`fnv64`] fed one part at a time.
pub struct Fnv(u64);

impl Fnv {
    /// The empty hash.
    pub fn new() -> Fnv {
        Fnv(0xcbf29ce484222325)
    }

    /// Adds a part.
    pub fn part(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain(&[0xffu8]) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }

    /// The hash of the parts so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv::new()
    }
}
