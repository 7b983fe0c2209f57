//! The state record's file (`<pool>/BOOTENV/state`, its format in [`crate::model::state`]):
//! read, and replaced crash-safely, never over a record of a newer format; and the removal of
//! the BE index beside it ([`forget_index`]).

use crate::model::state::{decode, encode, Loaded, State, FILE, VERSION};
use anyhow::{bail, Context};
use std::path::Path;

/// Removes the BE index ([`crate::model::index`]) from the state directory `dir`, durably (the
/// directory synced), before anything changes the BEs it describes: a power cut after that
/// change must not bring it back. No index there is success.
pub fn forget_index(dir: &Path) -> anyhow::Result<()> {
    let file = dir.join(crate::model::index::FILE);
    match std::fs::remove_file(&file) {
        Ok(()) => crate::sys::fsutil::sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing the BE index {}", file.display())),
    }
}

/// Reads the record in `dir`.
pub fn load(dir: &Path) -> anyhow::Result<Loaded> {
    match std::fs::read(dir.join(FILE)) {
        Ok(b) => Ok(decode(&b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Loaded::Missing),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.join(FILE).display())),
    }
}

/// Replaces the record in `dir` with `state`, crash-safely. Refuses to overwrite a newer
/// version; keeps a copy of a corrupt record as `state.corrupt`.
pub fn store(dir: &Path, state: &State) -> anyhow::Result<()> {
    match load(dir)? {
        Loaded::Newer(v) => bail!(
            "the state record in {} has format version {v}, newer than this bootenv ({VERSION}); update bootenv in this boot environment",
            dir.display()
        ),
        Loaded::Corrupt(why) => {
            log::warn!("keeping the unreadable state record as {}/state.corrupt ({why})", dir.display());
            let old = std::fs::read(dir.join(FILE)).context("reading the corrupt state record")?;
            super::fsutil::atomic_write(dir, "state.corrupt", &old)?;
        }
        Loaded::Missing | Loaded::Valid(_) => {}
    }
    super::fsutil::atomic_write(dir, FILE, &encode(state))
}
