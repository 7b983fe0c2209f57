//! bootenv's files on the ESP (format 2): the kernel store, one copy of each kernel and
//! initramfs pair named after its content and shared by every BE that boots it; each BE's
//! entry naming its kernel; the GRUB menu; GRUB's environment block. Every file is replaced
//! atomically; a store directory is written completely before an entry names it, an entry
//! before the menu names its kernel, and what the menu stops using is removed only after the new
//! menu is in place, so a power cut at any instant leaves a menu whose entries all load.

use crate::bootloader::esp::Esp;
use crate::bootloader::grub::{self, Entry, Menu};
use crate::bootloader::grubenv::EnvBlock;
use crate::model::inventory::Inventory;
use crate::model::names::{printable, BeName};
use crate::model::state::{State, Trial};
use crate::sys::fsutil::{
    atomic_write, create_dirs_synced, resolve_in_root, sync_dir, sync_renamed, write_if_changed,
};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The menu's file name in bootenv's ESP directory.
pub const MENU: &str = crate::model::paths::ESP_MENU;
/// The environment block's file name in bootenv's ESP directory.
pub const ENV: &str = crate::model::paths::ESP_ENV;
/// Default GRUB menu timeout, seconds.
pub const DEFAULT_TIMEOUT: u32 = 5;

/// A kernel and its initramfs inside a BE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The kernel image, as a path on this system.
    pub vmlinuz: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
}

/// Finds the kernel of the BE whose root is at `root`: `/boot/vmlinuz` and `/boot/initrd.img`
/// (links followed inside the BE), else `/vmlinuz` and `/initrd.img`, else the newest
/// `/boot/vmlinuz-<version>` with its `/boot/initrd.img-<version>`.
pub fn find_kernel(root: &Path) -> anyhow::Result<Kernel> {
    for (k, i) in [
        ("/boot/vmlinuz", "/boot/initrd.img"),
        ("/vmlinuz", "/initrd.img"),
    ] {
        let (k, i) = (resolve_in_root(root, k)?, resolve_in_root(root, i)?);
        if k.is_file() && i.is_file() {
            return Ok(Kernel {
                vmlinuz: k,
                initrd: i,
            });
        }
    }
    let mut versions: Vec<String> = std::fs::read_dir(root.join("boot"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("vmlinuz-"))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|v| {
        v.split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse::<u64>().ok())
            .collect::<Vec<_>>()
    });
    while let Some(v) = versions.pop() {
        let k = root.join(format!("boot/vmlinuz-{v}"));
        let i = root.join(format!("boot/initrd.img-{v}"));
        if i.is_file() {
            return Ok(Kernel {
                vmlinuz: k,
                initrd: i,
            });
        }
    }
    bail!("no kernel with an initramfs in /boot (looked for /boot/vmlinuz and /boot/initrd.img, /vmlinuz, /boot/vmlinuz-<version>)")
}

fn fnv64(h: &mut u64, data: &[u8]) {
    for b in data {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x100000001b3);
    }
}

/// The shared kernel store in bootenv's ESP directory: one directory per kernel and initramfs
/// pair, named by their content, however many BEs boot it. Not a BE name (those start with a
/// letter or a digit), so no BE's directory can take its place.
pub const STORE: &str = crate::model::paths::ESP_STORE;

/// A kernel and initramfs read from a BE, with their content hash.
struct Loaded {
    vmlinuz: Vec<u8>,
    initrd: Vec<u8>,
    hash: String,
}

fn load(k: &Kernel) -> anyhow::Result<Loaded> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let (vmlinuz, initrd) = (read(&k.vmlinuz)?, read(&k.initrd)?);
    let mut h = 0xcbf29ce484222325u64;
    for data in [&vmlinuz, &initrd] {
        fnv64(&mut h, data);
        fnv64(&mut h, &(data.len() as u64).to_le_bytes());
    }
    Ok(Loaded {
        vmlinuz,
        initrd,
        hash: format!("{h:016x}"),
    })
}

/// The content hash of a kernel and initramfs pair, as [`install_kernel`] names its store
/// directory, read in pieces (no whole copy in memory).
pub fn kernel_hash(k: &Kernel) -> anyhow::Result<String> {
    use std::io::Read;
    let mut h = 0xcbf29ce484222325u64;
    let mut buf = vec![0u8; 1 << 20];
    for p in [&k.vmlinuz, &k.initrd] {
        let mut f = std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
        let mut len = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", p.display()))?;
            if n == 0 {
                break;
            }
            fnv64(&mut h, &buf[..n]);
            len += n as u64;
        }
        fnv64(&mut h, &len.to_le_bytes());
    }
    Ok(format!("{h:016x}"))
}

fn is_hash(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn complete(dir: &Path) -> bool {
    dir.join("vmlinuz").is_file() && dir.join("initrd.img").is_file()
}

/// Where a BE's kernel is on the ESP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRef {
    /// The BE's entry, `k-<seconds>-<hash>` in `/bootenv/<be>/`: a file naming a store
    /// directory (format 2), or a directory holding the files itself (format 1).
    pub entry: String,
    /// The content hash.
    pub hash: String,
    /// The directory that holds `vmlinuz` and `initrd.img`, from the ESP's root
    /// (`/bootenv/_kernels/<hash>`; format 1: `/bootenv/<be>/<entry>`).
    pub dir: String,
    /// Whether `dir` is in the shared store.
    pub shared: bool,
}

/// A kernel entry's name, `k-<seconds>-<hash>`, as (seconds, hash); `None` for anything else
/// (unfinished copies, names bootenv did not make: they never reach the menu).
fn parse_entry(name: &str) -> Option<(u64, &str)> {
    let (secs, hash) = name.strip_prefix("k-")?.split_once('-')?;
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || !is_hash(hash) {
        return None;
    }
    Some((secs.parse().ok()?, hash))
}

/// The BE's kernel entries, newest first (by their time, then name). `Ok(empty)` when the BE
/// has no directory on the ESP; an error when it cannot be read.
fn entries_of(esp: &Esp, be: &str) -> std::io::Result<Vec<(u64, String)>> {
    let rd = match std::fs::read_dir(esp.bootenv_dir().join(be)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut v = Vec::new();
    for e in rd {
        let e = e?;
        if let Some(n) = e.file_name().to_str() {
            if let Some((secs, _)) = parse_entry(n) {
                v.push((secs, n.to_owned()));
            }
        }
    }
    v.sort_by(|a, b| b.cmp(a));
    Ok(v)
}

/// The BE's kernel: its newest entry whose files are complete.
pub fn kernel_of(esp: &Esp, be: &str) -> Option<KernelRef> {
    kernel_of_checked(esp, be).ok().flatten()
}

/// [`kernel_of`], with an error when the BE's directory cannot be read.
fn kernel_of_checked(esp: &Esp, be: &str) -> std::io::Result<Option<KernelRef>> {
    let top = esp.bootenv_dir();
    let dir = top.join(be);
    Ok(entries_of(esp, be)?.into_iter().find_map(|(_, entry)| {
        let hash = parse_entry(&entry)?.1.to_owned();
        let path = dir.join(&entry);
        if path.is_file() {
            complete(&top.join(STORE).join(&hash)).then(|| KernelRef {
                dir: format!("/{}/{STORE}/{hash}", crate::bootloader::esp::DIR),
                entry,
                hash,
                shared: true,
            })
        } else {
            complete(&path).then(|| KernelRef {
                dir: format!("/{}/{be}/{entry}", crate::bootloader::esp::DIR),
                entry,
                hash,
                shared: false,
            })
        }
    }))
}

fn write_synced(dst: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut f =
        std::fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {} (is the ESP full?)", dst.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", dst.display()))?;
    Ok(())
}

/// What [`install_kernel`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// The BE already pointed at this kernel.
    UpToDate,
    /// Another BE's copy of the same kernel is shared.
    Shared,
    /// The kernel was copied to the ESP.
    Copied,
}

/// Points the BE at its kernel and initramfs on the ESP, copying them into the shared store
/// unless a copy of the same content is there already (checked byte for byte, not only by its
/// hash). In order, each step durable before the next: the store directory (`<hash>.tmp`,
/// fsync, rename), then the BE's entry naming it (an atomic write). Returns the directory the
/// menu names, from the ESP's root.
pub fn install_kernel(
    esp: &Esp,
    be: &BeName,
    k: &Kernel,
    now: u64,
) -> anyhow::Result<(String, Installed)> {
    let l = load(k)?;
    if let Some(r) = kernel_of(esp, be.as_str()) {
        // A format 1 directory of the same kernel stays as it is: a BE that still runs the
        // bootenv that made it lists only such directories in the menus it writes.
        if r.hash == l.hash {
            return Ok((r.dir, Installed::UpToDate));
        }
    }
    // The new entry must sort after the BE's others even if the clock went back (no RTC).
    let now = newest_entry_time(esp, be.as_str()).map_or(now, |t| now.max(t.saturating_add(1)));
    let store = esp.bootenv_dir().join(STORE);
    let done = store.join(&l.hash);
    let how = if complete(&done) {
        if !same_files(esp, &l) {
            bail!(
                "{}/{} holds a different kernel or initramfs with the same hash as {be}'s; remove that directory (run `bootenv sync-boot` afterwards to copy the kernels again)",
                STORE,
                l.hash
            );
        }
        Installed::Shared
    } else {
        let need = (l.vmlinuz.len() + l.initrd.len()) as u64;
        if let Ok(st) = nix::sys::statvfs::statvfs(&esp.dir) {
            let free = st.blocks_available() * st.fragment_size();
            if free < need + 1024 * 1024 {
                bail!(
                    "the ESP has {} MiB free and the kernel and initramfs of {be} need {} MiB: remove boot environments you no longer need, or enlarge the ESP",
                    free >> 20,
                    (need >> 20) + 1
                );
            }
        }
        create_dirs_synced(&esp.dir, &store)?;
        let tmp = store.join(format!("{}.tmp", l.hash));
        let _ = std::fs::remove_dir_all(&tmp);
        create_dirs_synced(&store, &tmp)?;
        let written = write_synced(&tmp.join("vmlinuz"), &l.vmlinuz)
            .and_then(|()| write_synced(&tmp.join("initrd.img"), &l.initrd))
            .and_then(|()| sync_dir(&tmp));
        if let Err(e) = written {
            // A copy that did not fit (or failed) gives its space back at once.
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if done.exists() {
            // An unfinished directory that lost its files (see `complete`).
            std::fs::remove_dir_all(&done)
                .with_context(|| format!("removing {}", done.display()))?;
            sync_dir(&store)?;
        }
        std::fs::rename(&tmp, &done)
            .with_context(|| format!("renaming {} to {}", tmp.display(), done.display()))?;
        sync_renamed(&done)?;
        Installed::Copied
    };
    let be_dir = esp.bootenv_dir().join(be.as_str());
    create_dirs_synced(&esp.dir, &be_dir)?;
    let dir = format!("/{}/{STORE}/{}", crate::bootloader::esp::DIR, l.hash);
    atomic_write(
        &be_dir,
        &format!("k-{now:010}-{}", l.hash),
        format!("{dir}\n").as_bytes(),
    )?;
    Ok((dir, how))
}

/// The time in the name of the BE's newest kernel entry, complete or not.
fn newest_entry_time(esp: &Esp, be: &str) -> Option<u64> {
    entries_of(esp, be).ok()?.first().map(|(t, _)| *t)
}

/// Whether the store's copy of `l`'s hash holds exactly `l`'s bytes.
fn same_files(esp: &Esp, l: &Loaded) -> bool {
    let d = esp.bootenv_dir().join(STORE).join(&l.hash);
    std::fs::read(d.join("vmlinuz")).is_ok_and(|v| v == l.vmlinuz)
        && std::fs::read(d.join("initrd.img")).is_ok_and(|i| i == l.initrd)
}

/// Gives `new` the kernel `old` has on the ESP (a BE renamed or copied): shares the store's
/// copy, or copies a format 1 directory into the store.
pub fn adopt_kernel(
    esp: &Esp,
    old: &BeName,
    new: &BeName,
    now: u64,
) -> anyhow::Result<Option<String>> {
    let Some(r) = kernel_of(esp, old.as_str()) else {
        return Ok(None);
    };
    let dir = esp.dir.join(r.dir.trim_start_matches('/'));
    let k = Kernel {
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    install_kernel(esp, new, &k, now).map(|(d, _)| Some(d))
}

/// Removes what the menu no longer uses: older kernel entries of listed BEs, unfinished
/// copies, the directories of BEs that no longer exist, and store directories that no BE's
/// kernel (its newest complete entry, as the menu picks it) names. Nothing goes from the store
/// unless every BE's directory could be read. FAT ignores case, so a directory is matched to
/// its BE ignoring case. Only names bootenv makes are touched.
pub fn prune(esp: &Esp, inv: &Inventory) -> Vec<String> {
    let mut removed = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    let mut complete_view = true;
    let mut keep: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for be in &inv.bes {
        let kept = keep
            .entry(be.name.as_str().to_ascii_lowercase())
            .or_default();
        match kernel_of_checked(esp, be.name.as_str()) {
            Ok(Some(k)) => {
                if k.shared {
                    used.insert(k.hash.clone());
                }
                kept.push(k.entry);
            }
            Ok(None) => {}
            Err(_) => complete_view = false,
        }
    }
    let Ok(rd) = std::fs::read_dir(esp.bootenv_dir()) else {
        return removed;
    };
    for e in rd {
        let Ok(e) = e else {
            complete_view = false;
            continue;
        };
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if BeName::new(&name).is_err() || !e.path().is_dir() {
            continue;
        }
        let Some(kept) = keep.get(&name.to_ascii_lowercase()) else {
            if std::fs::remove_dir_all(e.path()).is_ok() {
                removed.push(format!("{}/{name}", crate::bootloader::esp::DIR));
            }
            continue;
        };
        let Ok(inner) = std::fs::read_dir(e.path()) else {
            continue;
        };
        for k in inner.flatten() {
            let kn = k.file_name().to_string_lossy().into_owned();
            let ours = kn.starts_with("k-") || (kn.starts_with(".k-") && kn.ends_with(".tmp"));
            if !ours || kept.contains(&kn) {
                continue;
            }
            let gone = if k.path().is_dir() {
                std::fs::remove_dir_all(k.path())
            } else {
                std::fs::remove_file(k.path())
            };
            if gone.is_ok() {
                removed.push(format!("{}/{name}/{kn}", crate::bootloader::esp::DIR));
            }
        }
    }
    if !complete_view {
        return removed;
    }
    let store = esp.bootenv_dir().join(STORE);
    let Ok(rd) = std::fs::read_dir(&store) else {
        return removed;
    };
    for e in rd.flatten() {
        let kn = e.file_name().to_string_lossy().into_owned();
        let hash = kn.strip_suffix(".tmp").unwrap_or(&kn);
        if !is_hash(hash) || (hash == kn && used.contains(hash)) {
            continue;
        }
        if std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(format!("{}/{STORE}/{kn}", crate::bootloader::esp::DIR));
        }
    }
    removed
}

/// Why `be` cannot have a menu entry whatever its kernel: its `org.bootenv:cmdline` (its own
/// or the pool's, inherited) cannot be placed on a kernel line safely. The message names the fix.
pub fn menu_problem(be: &crate::model::inventory::Be) -> Option<String> {
    let why = grub::check_cmdline(be.cmdline.as_deref().unwrap_or("")).err()?;
    Some(format!(
        "its {} cannot go on a kernel line: {why}; fix it with `zfs set {}=... {}` (or on the pool's ROOT, where it is inherited from)",
        crate::model::layout::PROP_CMDLINE,
        crate::model::layout::PROP_CMDLINE,
        be.dataset
    ))
}

/// Builds the menu from the BEs, their kernels on the ESP and the state. Returns the menu and
/// what was left out, with the fix.
/// `default` overrides the pool's `bootfs` (an activation in progress).
pub fn build_menu(
    inv: &Inventory,
    esp: &Esp,
    st: &State,
    default: Option<&BeName>,
) -> anyhow::Result<(Menu, Vec<String>)> {
    let mut notes = Vec::new();
    let mut entries = Vec::new();
    let default_name = default.cloned().or_else(|| inv.bootfs_be());
    let good = st.last_good.as_deref().and_then(|g| BeName::new(g).ok());
    let trial = st.trial.as_ref().map(|t| t.be.as_str());
    for be in inv.bes.iter().rev() {
        if let Some(why) = &be.unbootable {
            notes.push(format!(
                "{} left out of the menu: it cannot boot: {why}",
                be.name
            ));
            continue;
        }
        let Some(kernel) = kernel_of(esp, be.name.as_str()) else {
            notes.push(format!(
                "{0} left out of the menu: no kernel on the ESP; run `bootenv sync-boot {0}`",
                be.name
            ));
            continue;
        };
        if let Some(why) = menu_problem(be) {
            notes.push(format!("{} left out of the menu: {why}", be.name));
            continue;
        }
        let mut cmdline = be.cmdline.clone().unwrap_or_default();
        if !cmdline.split_whitespace().any(|w| w.starts_with("panic=")) {
            cmdline = format!("{cmdline} panic={}", grub::DEFAULT_PANIC)
                .trim()
                .to_owned();
        }
        let mut flags = Vec::new();
        if default_name.as_ref() == Some(&be.name) {
            flags.push("default");
        }
        if good.as_ref() == Some(&be.name) {
            flags.push("last known-good");
        }
        if trial == Some(be.name.as_str()) {
            flags.push("trial");
        }
        let label = be.label.as_deref().unwrap_or(be.name.as_str());
        let mut title = format!("{}: {}", be.name, grub::safe_title(label));
        if !flags.is_empty() {
            title.push_str(&format!(" ({})", flags.join(", ")));
        }
        entries.push(Entry {
            be: be.name.clone(),
            title,
            kernel_dir: kernel.dir,
            cmdline,
        });
    }
    let listed = |n: &Option<BeName>| {
        n.as_ref()
            .filter(|n| entries.iter().any(|e| &e.be == *n))
            .cloned()
    };
    let Some(first) = entries.first().map(|e| e.be.clone()) else {
        bail!(
            "no boot environment can go into the menu: {}",
            notes.join("; ")
        );
    };
    let default = listed(&default_name)
        .or_else(|| listed(&good))
        .unwrap_or_else(|| first.clone());
    let good = listed(&good).unwrap_or_else(|| default.clone());
    // When an entry's kernel cannot be loaded: the known-good, then earlier defaults.
    let mut fallbacks = vec![good.clone()];
    for h in st.history.iter().rev() {
        let Some(b) = listed(&BeName::new(h).ok()) else {
            continue;
        };
        if fallbacks.len() < grub::MAX_FALLBACKS && !fallbacks.contains(&b) {
            fallbacks.push(b);
        }
    }
    let timeout = inv
        .setting(crate::model::layout::PROP_GRUB_TIMEOUT)
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(600);
    Ok((
        Menu {
            pool: inv.pool.to_string(),
            esp_uuid: esp.uuid.clone(),
            entries,
            default,
            good,
            fallbacks,
            timeout,
        },
        notes,
    ))
}

/// What the environment block should say about the one-shot boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep a pending one-shot (GRUB clears it when it is used).
    Keep,
    /// Boot this BE next time only.
    Set(BeName),
}

/// Reads the current block: `Ok(None)` when there is none, `Err(reason)` when it is damaged.
pub fn read_env(esp: &Esp) -> Result<Option<EnvBlock>, String> {
    match EnvBlock::load(&esp.bootenv_dir().join(ENV)) {
        Ok(Ok(b)) => Ok(Some(b)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The block bootenv writes, from its own state and what GRUB changed in the current block.
///
/// The counter of a trial is GRUB's: it is kept when the block names the same trial, set to the
/// trial's tries when the trial is new (`restart`) or has not reached the block yet, and set to
/// 0 when the block is damaged (GRUB may have counted a try in it: no tries left, so the trial
/// rolls back rather than boots again unchecked).
pub fn compute_env(
    default: &BeName,
    trial: Option<&Trial>,
    restart: bool,
    next: &Next,
    current: &Result<Option<EnvBlock>, String>,
    known: &dyn Fn(&str) -> bool,
) -> EnvBlock {
    let mut e = EnvBlock::new();
    let set =
        |e: &mut EnvBlock, k: &str, v: &str| e.set(k, v).expect("bootenv's variables are short");
    set(&mut e, "bootenv_version", &grub::VERSION.to_string());
    set(&mut e, "bootenv_default", default.as_str());
    let cur = current.as_ref().ok().and_then(|c| c.as_ref());
    let next_value = match next {
        Next::Set(b) => Some(b.to_string()),
        Next::Keep => cur
            .and_then(|c| c.get("bootenv_next"))
            .filter(|n| !n.is_empty() && known(n))
            .map(str::to_owned),
    };
    if let Some(n) = next_value {
        set(&mut e, "bootenv_next", &n);
    }
    if let Some(t) = trial {
        let tries = if restart {
            t.tries
        } else {
            match current {
                Err(_) => 0,
                Ok(Some(c)) if c.get("bootenv_trial") == Some(t.be.as_str()) => c
                    .get("bootenv_tries")
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|n| *n <= grub::MAX_TRIES)
                    .unwrap_or(0),
                Ok(_) => t.tries,
            }
        };
        set(&mut e, "bootenv_trial", &t.be);
        set(&mut e, "bootenv_tries", &tries.to_string());
    }
    e
}

/// Writes the menu and the block; returns notes for the operator.
pub fn write_menu_and_env(
    esp: &Esp,
    menu: &Menu,
    env: &EnvBlock,
    current: &Result<Option<EnvBlock>, String>,
) -> anyhow::Result<Vec<String>> {
    let dir = esp.bootenv_dir();
    create_dirs_synced(&esp.dir, &dir)?;
    let mut notes = Vec::new();
    // Most calls (mark-good at every boot) change nothing: the ESP is written only when the
    // menu or the block differ.
    write_if_changed(&dir, MENU, menu.render().as_bytes())?;
    if let Err(why) = current {
        if let Ok(old) = std::fs::read(dir.join(ENV)) {
            let _ = atomic_write(&dir, crate::model::paths::ESP_ENV_DAMAGED, &old);
        }
        notes.push(format!(
            "repaired the damaged GRUB environment block ({}); the damaged copy is grubenv.damaged",
            printable(why)
        ));
    }
    write_if_changed(&dir, ENV, &env.render())?;
    Ok(notes)
}

/// The kernel directories the menu uses, by BE (for tests and `bootenv list`).
pub fn menu_kernels(menu: &Menu) -> BTreeMap<String, String> {
    menu.entries
        .iter()
        .map(|e| (e.be.to_string(), e.kernel_dir.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(s: &str) -> BeName {
        BeName::new(s).unwrap()
    }

    fn block(vars: &[(&str, &str)]) -> EnvBlock {
        let mut e = EnvBlock::new();
        for (k, v) in vars {
            e.set(k, v).unwrap();
        }
        e
    }

    #[test]
    fn the_block_fits_in_its_first_sector_so_a_tear_between_sectors_changes_nothing() {
        let long = BeName::new(&"x".repeat(crate::model::names::MAX_BE_NAME)).unwrap();
        let t = Trial {
            be: long.to_string(),
            tries: grub::MAX_TRIES,
        };
        let e = compute_env(
            &long,
            Some(&t),
            true,
            &Next::Set(long.clone()),
            &Ok(None),
            &|_| true,
        );
        let bytes = e.render();
        let content = bytes.iter().rposition(|b| *b == b'\n').unwrap() + 1;
        assert!(content <= 512, "{content} bytes of variables");
        assert!(bytes[512..].iter().all(|b| *b == b'#'));
    }

    #[test]
    fn finds_kernels_like_debian_lays_them_out() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        for f in [
            "vmlinuz-6.1.0-9-amd64",
            "initrd.img-6.1.0-9-amd64",
            "vmlinuz-6.1.0-10-amd64",
            "initrd.img-6.1.0-10-amd64",
            "vmlinuz-6.2.0-1-amd64",
        ] {
            std::fs::write(r.join("boot").join(f), f).unwrap();
        }
        // The newest version with an initramfs.
        let k = find_kernel(r).unwrap();
        assert!(k.vmlinuz.ends_with("boot/vmlinuz-6.1.0-10-amd64"), "{k:?}");
        // Links win, and are followed inside the BE.
        std::os::unix::fs::symlink("boot/vmlinuz-6.1.0-9-amd64", r.join("vmlinuz")).unwrap();
        std::os::unix::fs::symlink("/boot/initrd.img-6.1.0-9-amd64", r.join("initrd.img")).unwrap();
        let k = find_kernel(r).unwrap();
        assert_eq!(k.vmlinuz, r.join("boot/vmlinuz-6.1.0-9-amd64"));
        assert_eq!(k.initrd, r.join("boot/initrd.img-6.1.0-9-amd64"));
        assert!(find_kernel(&r.join("nonexistent")).is_err());
    }

    fn esp_in(d: &Path) -> Esp {
        let esp = Esp {
            dir: d.join("esp"),
            uuid: "1234-5678".into(),
        };
        std::fs::create_dir_all(&esp.dir).unwrap();
        esp
    }

    fn kernel_in(d: &Path, k: &str, i: &str) -> Kernel {
        let src = d.join(format!("src-{k}-{i}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("k"), k).unwrap();
        std::fs::write(src.join("i"), i).unwrap();
        Kernel {
            vmlinuz: src.join("k"),
            initrd: src.join("i"),
        }
    }

    fn inv_of(bes: &[&str]) -> Inventory {
        let rows: Vec<(String, &str, &str, &str, &str)> = bes
            .iter()
            .map(|b| (format!("tank/ROOT/{b}"), "noauto", "/", "-", "-"))
            .collect();
        let rows: Vec<(&str, &str, &str, &str, &str)> = rows
            .iter()
            .map(|(a, b, c, d, e)| (a.as_str(), *b, *c, *d, *e))
            .collect();
        let l = crate::model::inventory::tests::listing(&rows);
        Inventory::from_listing(
            &crate::model::names::PoolName::new("tank").unwrap(),
            &l,
            None,
        )
    }

    fn store_entries(esp: &Esp) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(esp.bootenv_dir().join(STORE))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn installs_once_per_content_and_prunes_after() {
        let d = tempfile::tempdir().unwrap();
        let esp = esp_in(d.path());
        let k = kernel_in(d.path(), "kernel 1", "initrd 1");
        let (d1, how) = install_kernel(&esp, &be("v1"), &k, 100).unwrap();
        assert_eq!(how, Installed::Copied);
        assert!(d1.starts_with("/bootenv/_kernels/"), "{d1}");
        assert_eq!(
            std::fs::read(esp.dir.join(&d1[1..]).join("initrd.img")).unwrap(),
            b"initrd 1"
        );
        let (d2, how) = install_kernel(&esp, &be("v1"), &k, 200).unwrap();
        assert_eq!((d2.as_str(), how), (d1.as_str(), Installed::UpToDate));
        // The hash read in pieces is the one the store directory is named by.
        assert_eq!(
            kernel_hash(&k).unwrap(),
            kernel_of(&esp, "v1").unwrap().hash
        );
        // A new initramfs: a new store directory and a newer entry; the old one stays until
        // the prune after the menu.
        let k2 = kernel_in(d.path(), "kernel 1", "initrd 2");
        let (d3, how) = install_kernel(&esp, &be("v1"), &k2, 300).unwrap();
        assert!(how == Installed::Copied && d3 != d1);
        assert_eq!(kernel_of(&esp, "v1").unwrap().dir, d3);
        assert_eq!(store_entries(&esp).len(), 2);
        // A BE that is gone, unfinished copies, and a directory bootenv did not make.
        std::fs::create_dir_all(esp.bootenv_dir().join("gone/k-1")).unwrap();
        std::fs::create_dir_all(esp.bootenv_dir().join("v1/k-0000000400-x.tmp")).unwrap();
        std::fs::create_dir_all(esp.bootenv_dir().join("_kernels/0123456789abcdef.tmp")).unwrap();
        std::fs::create_dir_all(esp.bootenv_dir().join("not a be")).unwrap();
        std::fs::create_dir_all(esp.bootenv_dir().join("_kernels/mine")).unwrap();
        let removed = prune(&esp, &inv_of(&["v1"]));
        assert_eq!(removed.len(), 5, "{removed:?}");
        assert_eq!(kernel_of(&esp, "v1").unwrap().dir, d3);
        let h3 = d3.rsplit('/').next().unwrap();
        assert_eq!(
            store_entries(&esp),
            vec![h3.to_string(), "mine".to_string()]
        );
        assert!(
            esp.bootenv_dir().join("not a be").exists(),
            "only names bootenv makes are touched"
        );
    }

    #[test]
    fn bes_of_one_kernel_share_one_copy_and_it_goes_with_the_last_of_them() {
        let d = tempfile::tempdir().unwrap();
        let esp = esp_in(d.path());
        let k = kernel_in(d.path(), "kernel", "initrd");
        let (d1, how) = install_kernel(&esp, &be("v1"), &k, 100).unwrap();
        assert_eq!(how, Installed::Copied);
        for (i, b) in ["v2", "v3"].iter().enumerate() {
            let (d2, how) = install_kernel(&esp, &be(b), &k, 101 + i as u64).unwrap();
            assert_eq!((d2.as_str(), how), (d1.as_str(), Installed::Shared));
        }
        assert_eq!(store_entries(&esp).len(), 1);
        // v1 and v2 go: v3 still boots the copy.
        prune(&esp, &inv_of(&["v3"]));
        assert_eq!(kernel_of(&esp, "v3").unwrap().dir, d1);
        assert!(!esp.bootenv_dir().join("v1").exists());
        // v3 gets a kernel of its own: the shared copy goes.
        let k2 = kernel_in(d.path(), "kernel 2", "initrd");
        install_kernel(&esp, &be("v3"), &k2, 200).unwrap();
        prune(&esp, &inv_of(&["v3"]));
        assert_eq!(store_entries(&esp).len(), 1);
        assert!(!esp.dir.join(&d1[1..]).exists());
        // A renamed BE gets the entry of the old name; the old name's goes with the prune.
        let before = store_entries(&esp);
        let d4 = adopt_kernel(&esp, &be("v3"), &be("v4"), 300).unwrap();
        assert_eq!(d4, kernel_of(&esp, "v3").map(|r| r.dir));
        assert_eq!(store_entries(&esp), before, "nothing was copied");
        assert_eq!(
            adopt_kernel(&esp, &be("nosuch"), &be("v5"), 300).unwrap(),
            None
        );
        prune(&esp, &inv_of(&["v4"]));
        assert_eq!(kernel_of(&esp, "v4").map(|r| r.dir), d4);
        assert!(!esp.bootenv_dir().join("v3").exists());
    }

    #[test]
    fn a_same_hash_copy_with_other_bytes_is_refused_and_a_bad_entry_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let esp = esp_in(d.path());
        let k = kernel_in(d.path(), "kernel", "initrd");
        let (d1, _) = install_kernel(&esp, &be("v1"), &k, 100).unwrap();
        std::fs::write(esp.dir.join(&d1[1..]).join("vmlinuz"), "tampered").unwrap();
        let e = install_kernel(&esp, &be("v2"), &k, 101).unwrap_err();
        assert!(
            format!("{e:#}").contains("holds a different kernel"),
            "{e:#}"
        );
        assert!(kernel_of(&esp, "v2").is_none());
        // An entry naming no store directory, or something that is not a hash, is no kernel:
        // the BE's older, complete one is used.
        std::fs::write(esp.bootenv_dir().join("v1/k-0000000200-.."), "").unwrap();
        std::fs::write(
            esp.bootenv_dir().join("v1/k-0000000300-0000000000000000"),
            "",
        )
        .unwrap();
        assert_eq!(kernel_of(&esp, "v1").unwrap().dir, d1);
    }

    #[test]
    fn entries_sort_by_their_time_and_odd_names_are_no_kernels() {
        let d = tempfile::tempdir().unwrap();
        let esp = esp_in(d.path());
        let k = kernel_in(d.path(), "kernel", "initrd");
        let (dir, _) = install_kernel(&esp, &be("v1"), &k, 9).unwrap();
        let h = dir.rsplit('/').next().unwrap().to_string();
        // A short time sorts before a long one as text, not as a number.
        std::fs::rename(
            esp.bootenv_dir().join(format!("v1/k-0000000009-{h}")),
            esp.bootenv_dir().join(format!("v1/k-9-{h}")),
        )
        .unwrap();
        let k2 = kernel_in(d.path(), "kernel 2", "initrd");
        let (dir2, _) = install_kernel(&esp, &be("v1"), &k2, 10).unwrap();
        assert_eq!(kernel_of(&esp, "v1").unwrap().dir, dir2);
        // Directories with names bootenv never makes (they would reach GRUB's script) are
        // not kernels, however complete.
        for odd in [
            "k-99999999999-x; reboot",
            "k-99999999999-0123456789ABCDEF",
            "k--0123456789abcdef",
        ] {
            let p = esp.bootenv_dir().join("v1").join(odd);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("vmlinuz"), "k").unwrap();
            std::fs::write(p.join("initrd.img"), "i").unwrap();
        }
        assert_eq!(kernel_of(&esp, "v1").unwrap().dir, dir2);
        // A time at the end of the range does not overflow the next entry's.
        std::fs::write(
            esp.bootenv_dir()
                .join(format!("v1/k-18446744073709551615-{h}")),
            "",
        )
        .unwrap();
        install_kernel(
            &esp,
            &be("v1"),
            &kernel_in(d.path(), "kernel 3", "initrd"),
            11,
        )
        .unwrap();
    }

    #[test]
    fn a_format_1_kernel_directory_stays_until_the_be_gets_another_kernel() {
        let d = tempfile::tempdir().unwrap();
        let esp = esp_in(d.path());
        let k = kernel_in(d.path(), "kernel", "initrd");
        let h = load(&k).unwrap().hash;
        let old = esp.bootenv_dir().join(format!("v1/k-0000000050-{h}"));
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("vmlinuz"), "kernel").unwrap();
        std::fs::write(old.join("initrd.img"), "initrd").unwrap();
        let r = kernel_of(&esp, "v1").unwrap();
        assert!(!r.shared);
        assert_eq!(r.dir, format!("/bootenv/v1/k-0000000050-{h}"));
        let (dir, how) = install_kernel(&esp, &be("v1"), &k, 100).unwrap();
        assert_eq!((dir.as_str(), how), (r.dir.as_str(), Installed::UpToDate));
        assert!(prune(&esp, &inv_of(&["v1"])).is_empty());
        // Another BE of the same kernel gets the store's copy (made from its own files).
        let (shared, how) = install_kernel(&esp, &be("v2"), &k, 100).unwrap();
        assert_eq!(how, Installed::Copied);
        assert!(shared.starts_with("/bootenv/_kernels/"));
        // A new kernel for v1, even with a clock that went back: the store's entry is the
        // newer one, and the format 1 directory goes with the prune.
        let k2 = kernel_in(d.path(), "kernel 2", "initrd");
        let (dir, how) = install_kernel(&esp, &be("v1"), &k2, 10).unwrap();
        assert_eq!(how, Installed::Copied);
        assert_eq!(kernel_of(&esp, "v1").unwrap().dir, dir);
        let removed = prune(&esp, &inv_of(&["v1", "v2"]));
        assert_eq!(removed, vec![format!("bootenv/v1/k-0000000050-{h}")]);
    }

    #[test]
    fn the_env_keeps_grubs_counter_and_is_conservative_when_damaged() {
        let t = Trial {
            be: "v3".into(),
            tries: 3,
        };
        let known = |n: &str| ["v1", "v2", "v3"].contains(&n);
        let cur = Ok(Some(block(&[
            ("bootenv_default", "v1"),
            ("bootenv_trial", "v3"),
            ("bootenv_tries", "1"),
            ("bootenv_next", "v2"),
        ])));
        let e = compute_env(&be("v1"), Some(&t), false, &Next::Keep, &cur, &known);
        assert_eq!(
            (e.get("bootenv_tries"), e.get("bootenv_next")),
            (Some("1"), Some("v2"))
        );
        // A new trial starts from its tries.
        let e = compute_env(&be("v1"), Some(&t), true, &Next::Keep, &cur, &known);
        assert_eq!(e.get("bootenv_tries"), Some("3"));
        // A trial that has not reached the block yet (interrupted activation) resumes.
        let e = compute_env(
            &be("v1"),
            Some(&t),
            false,
            &Next::Keep,
            &Ok(Some(block(&[]))),
            &known,
        );
        assert_eq!(e.get("bootenv_tries"), Some("3"));
        // A damaged block: no tries left, so GRUB rolls back; no one-shot survives.
        let e = compute_env(
            &be("v1"),
            Some(&t),
            false,
            &Next::Keep,
            &Err("torn".into()),
            &known,
        );
        assert_eq!(
            (e.get("bootenv_tries"), e.get("bootenv_next")),
            (Some("0"), None)
        );
        // No trial: none in the block; a one-shot to a BE that is gone is dropped.
        let cur = Ok(Some(block(&[("bootenv_next", "gone")])));
        let e = compute_env(&be("v2"), None, false, &Next::Keep, &cur, &known);
        assert_eq!(
            (
                e.get("bootenv_default"),
                e.get("bootenv_trial"),
                e.get("bootenv_next")
            ),
            (Some("v2"), None, None)
        );
        let e = compute_env(&be("v2"), None, false, &Next::Set(be("v3")), &cur, &known);
        assert_eq!(e.get("bootenv_next"), Some("v3"));
    }
}

/// Randomized menus against GRUB's own parser and the kernel's splitter: whatever the BEs' and
/// the pool's properties hold, the menu parses in `grub-script-check`, keeps every BE whose
/// values are fine, leaves out the others with a reason, and every kernel line it can make fits
/// the x86 `linux` limit and hands the agent exactly bootenv's own keys.
#[cfg(test)]
mod random_menus {
    use super::*;
    use crate::model::names::PoolName;
    use crate::sys::zfs::parse_list;
    use crate::testing::Rng;

    /// Menus generated (each with 1 to 12 BEs): about 22,000 entries and 14,000 BEs left out.
    const CASES: usize = 6_000;
    /// Menus per `grub-script-check` run.
    const BATCH: usize = 300;
    /// The longest command line x86 Linux takes (`COMMAND_LINE_SIZE` 2048, with its NUL), which
    /// GRUB's `linux` fills (it leaves out, silently, the words that do not fit: bootenv's trial
    /// and rollback keys come last).
    const KERNEL_LINE: usize = 2047;
    /// `MAX_INIT_ARGS` and `MAX_INIT_ENVS` of the kernel, less what it puts there itself
    /// (`/init`; `HOME=/`, `TERM=linux`).
    const INIT_ARGS: usize = 31;
    const INIT_ENVS: usize = 30;

    fn names() -> Vec<String> {
        let mut v: Vec<String> = [
            "v1",
            "v2",
            "1",
            "a.b_c-9",
            "rel-2026.12.07",
            "V3x",
            "zz",
            "boot-env.prod_4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push("n".repeat(crate::model::names::MAX_BE_NAME));
        v.push(format!(
            "{}q",
            "m".repeat(crate::model::names::MAX_BE_NAME - 1)
        ));
        v.push("x9".repeat(crate::model::names::MAX_BE_NAME / 2 - 1));
        v.push("last".into());
        v
    }

    /// A word of a command line: mostly one the menu takes, one in ten one it refuses.
    fn word(r: &mut Rng) -> String {
        let names = names();
        if r.below(10) > 0 {
            return match r.below(8) {
                0 => "quiet".into(),
                1 => "console=ttyS0,115200".into(),
                2 => format!("zfs.zfs_arc_max={}", r.next() % 100_000),
                3 => format!("k{}={}", r.below(99), "v".repeat(r.below(400))),
                4 => "panic=30".into(),
                5 => "init=/bin/sh".into(),
                6 => format!("w{}", r.below(1000)),
                _ => "x".repeat(1 + r.below(60)),
            };
        }
        match r.below(14) {
            0 => "panic=0".into(),
            1 => "--".into(),
            2 => format!("bootenv={}", names[r.below(names.len())]),
            3 => "bootenv.trial=9".into(),
            4 => "root=/dev/sda1".into(),
            5 => "a$b".into(),
            6 => "semi;colon".into(),
            7 => "it's".into(),
            8 => "\"q u\"".into(),
            9 => "br{ace}".into(),
            10 => "é".into(),
            11 => "\u{1}ctl".into(),
            12 => "#hash".into(),
            _ => "back\\slash".into(),
        }
    }

    /// A property value: mostly words, sometimes hostile separators; `-` is unset.
    fn cmdline(r: &mut Rng) -> String {
        if r.below(4) == 0 {
            return "-".into();
        }
        if r.below(6) == 0 {
            // At the limits: the most words, the most bytes, or one more.
            let words = grub::MAX_CMDLINE_WORDS + r.below(2);
            let bytes = grub::MAX_CMDLINE - 2 + r.below(4);
            let mut v: Vec<String> = (0..words).map(|i| format!("a{i:02}=")).collect();
            let room = bytes.saturating_sub(v.iter().map(|w| w.len() + 1).sum::<usize>() - 1);
            v[0].push_str(&"z".repeat(room));
            return v.join(" ");
        }
        let n = match r.below(10) {
            0..=5 => r.below(6),
            6..=8 => 10 + r.below(10),
            _ => 15 + r.below(30),
        };
        let mut s = String::new();
        for i in 0..n {
            if i > 0 {
                // A tab or a newline in a value breaks its line of `zfs list -H`: the BE is then
                // ignored (tainted), which other tests cover; here it is rare.
                s.push_str(if r.below(60) == 0 {
                    "\t"
                } else {
                    [" ", " ", "  "][r.below(3)]
                });
            }
            s.push_str(&word(r));
        }
        if s.is_empty() {
            "-".into()
        } else {
            s
        }
    }

    fn label(r: &mut Rng) -> String {
        const CH: &[&str] = &[
            "a", "Z", "0", " ", ".", "'", "\"", "$", ";", "\\", "{", "}", "#", "é", "\u{1}", "(",
            "-", "`", "|", "&", "*", "?", "[", "]", "\u{7f}", "\r", "日",
        ];
        if r.below(5) == 0 {
            return "-".into();
        }
        let n = [1, 8, 48, 49, 300][r.below(5)];
        let s: String = (0..n).map(|_| CH[r.below(CH.len())]).collect();
        if s == "-" {
            "x".into()
        } else {
            s
        }
    }

    /// One `zfs list -H -p -o <list_columns()>` line.
    fn row(name: &str, canmount: &str, mountpoint: &str, label: &str, cmdline: &str) -> String {
        format!("{name}\t{canmount}\t{mountpoint}\t1000\t-\t100\t-\t{label}\t-\t-\t-\t{cmdline}\t-\t-\t-\n")
    }

    /// The kernel line GRUB builds from a `linux` line of the script, with every variable at
    /// its longest, and the BE it boots.
    fn kernel_line(line: &str, longest_be: &str) -> (String, String) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "linux", "{line}");
        let path = words[1].replace("($bootenv_esp)", "(hd31,gpt128)");
        let mut args = vec![format!("BOOT_IMAGE={path}")];
        for w in &words[2..] {
            let w = if w.starts_with("$bootenv_arg_") {
                format!("bootenv.rollback={longest_be}")
            } else if *w == "bootenv.unloadable=$1" {
                format!("bootenv.unloadable={longest_be}")
            } else {
                assert!(!w.contains('$'), "a variable on a kernel line: {line}");
                w.to_string()
            };
            args.push(w);
        }
        let be = words
            .iter()
            .find_map(|w| w.strip_prefix("bootenv="))
            .expect("bootenv= on every kernel line")
            .to_owned();
        (args.join(" "), be)
    }

    fn check_scripts(scripts: &[String], dir: &Path) {
        let all = dir.join("batch.cfg");
        std::fs::write(&all, scripts.concat()).unwrap();
        let ok = |p: &Path| {
            let out = std::process::Command::new("grub-script-check")
                .arg(p)
                .output()
                .expect("grub-script-check is missing: run `cargo xtask deps`");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        if ok(&all).0 {
            return;
        }
        for s in scripts {
            let one = dir.join("one.cfg");
            std::fs::write(&one, s).unwrap();
            let (good, err) = ok(&one);
            assert!(good, "grub-script-check refuses a menu: {err}\n{s}");
        }
        panic!("grub-script-check refuses the batch but no menu of it alone");
    }

    #[test]
    fn any_properties_make_a_menu_that_grub_and_the_kernel_read_as_meant() {
        let d = tempfile::tempdir().unwrap();
        let esp = Esp {
            dir: d.path().join("esp"),
            uuid: "1234-5678".into(),
        };
        std::fs::create_dir_all(&esp.dir).unwrap();
        std::fs::write(d.path().join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(d.path().join("initrd.img"), b"initramfs").unwrap();
        let k = Kernel {
            vmlinuz: d.path().join("vmlinuz"),
            initrd: d.path().join("initrd.img"),
        };
        let names = names();
        for n in &names {
            install_kernel(&esp, &BeName::new(n).unwrap(), &k, 1000).unwrap();
        }
        let longest = names.iter().max_by_key(|n| n.len()).unwrap().clone();
        let pool = PoolName::new("tank").unwrap();
        let mut r = Rng(0x6d65_6e75_2026);
        let (mut scripts, mut entries, mut left_out, mut lines) = (Vec::new(), 0, 0, 0);
        for case in 0..CASES {
            let root_cmdline = cmdline(&mut r);
            let mut text = row("tank/ROOT", "off", "none", "-", &root_cmdline);
            let mut chosen = vec![names[0].clone()];
            for n in &names[1..] {
                if r.below(2) == 0 {
                    chosen.push(n.clone());
                }
            }
            for n in &chosen {
                let (label, cl) = if n == "v1" {
                    ("1.0".to_string(), "console=ttyS0".to_string())
                } else {
                    let own = cmdline(&mut r);
                    (
                        label(&mut r),
                        if own == "-" {
                            root_cmdline.clone()
                        } else {
                            own
                        },
                    )
                };
                text.push_str(&row(&format!("tank/ROOT/{n}"), "noauto", "/", &label, &cl));
            }
            let inv =
                Inventory::from_listing(&pool, &parse_list(&text), Some("tank/ROOT/v1".into()));
            let pick = |r: &mut Rng| chosen[r.below(chosen.len())].clone();
            let st = State {
                last_good: (r.below(3) > 0).then(|| pick(&mut r)),
                trial: (r.below(2) == 0).then(|| Trial {
                    be: pick(&mut r),
                    tries: 3,
                }),
                history: (0..r.below(6)).map(|_| pick(&mut r)).collect(),
                ..State::default()
            };
            let (menu, notes) = build_menu(&inv, &esp, &st, None)
                .unwrap_or_else(|e| panic!("case {case}: no menu: {e:#}\n{text}"));
            // Every BE whose values are fine is in the menu; every other one is in the notes.
            for be in &inv.bes {
                let listed = menu.entries.iter().any(|e| e.be == be.name);
                let fine = be.unbootable.is_none() && menu_problem(be).is_none();
                assert_eq!(
                    listed, fine,
                    "case {case}: {} ({:?})\n{notes:?}",
                    be.name, be.cmdline
                );
                if !fine {
                    left_out += 1;
                    assert!(
                        notes
                            .iter()
                            .any(|n| n.starts_with(&format!("{} left out of the menu: ", be.name))),
                        "case {case}: {} left out silently: {notes:?}",
                        be.name
                    );
                }
            }
            entries += menu.entries.len();
            let script = menu.render();
            for l in script.lines() {
                let l = l.trim();
                let Some(l) = l.strip_prefix("if ").and_then(|l| l.strip_suffix("; then")) else {
                    continue;
                };
                if !l.starts_with("linux ") {
                    continue;
                }
                lines += 1;
                let (kl, be) = kernel_line(l, &longest);
                assert!(
                    kl.len() <= KERNEL_LINE,
                    "case {case}: {} bytes: {kl}",
                    kl.len()
                );
                let (kernel, init) = crate::model::cmdline::split(kl.as_bytes());
                assert!(init.is_empty(), "case {case}: `--` on a kernel line: {kl}");
                let args = crate::model::cmdline::BootArgs::parse(kl.as_bytes());
                assert_eq!(
                    args.be.as_ref().map(|b| b.as_str()),
                    Some(be.as_str()),
                    "{kl}"
                );
                assert_eq!(args.pool.as_ref().map(|p| p.as_str()), Some("tank"), "{kl}");
                let unknown: Vec<_> = kernel.iter().filter(|a| !a.key.contains(&b'.')).collect();
                let argv = unknown.iter().filter(|a| a.value.is_none()).count();
                let envp = unknown.iter().filter(|a| a.value.is_some()).count();
                assert!(
                    argv <= INIT_ARGS && envp <= INIT_ENVS,
                    "case {case}: {argv} arguments and {envp} variables for init: {kl}"
                );
            }
            scripts.push(script);
            if scripts.len() == BATCH || case + 1 == CASES {
                check_scripts(&scripts, d.path());
                scripts.clear();
            }
        }
        // The generator reaches both sides and the limits.
        assert!(
            entries > 20_000 && left_out > 5_000,
            "{entries} entries, {left_out} left out"
        );
        assert!(lines > 50_000, "{lines} kernel lines");
        eprintln!(
            "{CASES} menus, {entries} entries, {left_out} BEs left out, {lines} kernel lines"
        );
    }
}
