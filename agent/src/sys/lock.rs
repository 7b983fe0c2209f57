//! One writer at a time: every verb that changes the pool, the state record or the ESP holds
//! an exclusive `flock` on `/run/bootenv/lock` while it works, so that two of them (an
//! `activate` and a kernel hook's `sync-boot`, a `destroy` and a `create`) never interleave
//! their writes. Readers (`list`, `status`, `grub-menu`, `mount`, `diff`) take no lock and never
//! wait, and neither does `export`: its one snapshot is atomic, it touches neither the state
//! record nor the ESP, and `export | import` must not stall on it.
//!
//! The lock file names its holder (`pid <n>: bootenv <verb>`), for the message a second writer
//! gets. A second writer fails at once with that message, or waits up to `--wait` seconds. A
//! bootenv started by a command that a lock holder runs (the kernel hook inside `bootenv
//! upgrade`'s chroot) finds [`HELD_ENV`] in its environment and does not lock again: it would
//! wait for its own parent forever. The lock lives on `/run` (a tmpfs): a holder that dies
//! releases it with its file descriptor, and a reboot forgets it.

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The lock file, relative to the root.
pub const LOCK: &str = crate::model::paths::LOCK;
/// Set in the environment of a lock holder (and so of the commands it runs).
pub const HELD_ENV: &str = "BOOTENV_LOCK_HELD";

/// Another writer holds the lock (a type, so that the CLI reports the kind `busy`).
#[derive(Debug)]
pub struct Busy {
    /// The holder's pid and command, as it wrote them.
    pub holder: String,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "another bootenv command is changing the boot environments ({}); run this again when it is done, or with --wait[=SECONDS] to wait for it", self.holder)
    }
}

impl std::error::Error for Busy {}

/// A held lock; released when dropped (or when the process ends).
pub struct WriterLock {
    _file: Flock<std::fs::File>,
}

/// Takes the writers' lock under `root` for `what` (the verb, for the holder's name), waiting
/// up to `wait` for another writer to finish. `Ok(None)` when `nested` (this process runs on
/// behalf of a holder).
pub fn acquire(
    root: &Path,
    what: &str,
    wait: Duration,
    nested: bool,
) -> anyhow::Result<Option<WriterLock>> {
    if nested {
        return Ok(None);
    }
    let path = root.join(LOCK);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let deadline = Instant::now() + wait;
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut f) => {
                f.set_len(0)?;
                f.rewind()?;
                write!(f, "pid {}: bootenv {what}", std::process::id())?;
                f.flush()?;
                return Ok(Some(WriterLock { _file: f }));
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                if Instant::now() >= deadline {
                    // The holder writes its name just after it locks: give it that moment.
                    std::thread::sleep(Duration::from_millis(50));
                    let mut holder = String::new();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut holder);
                    let holder = crate::model::names::printable(holder.trim());
                    return Err(anyhow::Error::new(Busy {
                        holder: if holder.is_empty() {
                            "its name is not known yet".into()
                        } else {
                            holder
                        },
                    }));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err((_, e)) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_or_waits_for_it() {
        let d = tempfile::tempdir().unwrap();
        let first = acquire(d.path(), "activate v3", Duration::ZERO, false)
            .unwrap()
            .expect("taken");
        let e = acquire(d.path(), "destroy v2", Duration::ZERO, false)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains(&format!("pid {}: bootenv activate v3", std::process::id()))
                && e.contains("--wait"),
            "{e}"
        );
        // A nested call (run by the holder) does not lock.
        assert!(acquire(d.path(), "sync-boot", Duration::ZERO, true)
            .unwrap()
            .is_none());
        // Waiting: the holder finishes after a moment.
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let second = acquire(d.path(), "destroy v2", Duration::from_secs(10), false).unwrap();
        assert!(second.is_some());
        t.join().unwrap();
        let holder = std::fs::read_to_string(d.path().join(LOCK)).unwrap();
        assert!(holder.ends_with("bootenv destroy v2"), "{holder}");
    }
}
