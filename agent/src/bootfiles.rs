//! bootenv's files on the ESP: each BE's kernel and initramfs, the GRUB menu, and GRUB's
//! environment block. Every file is replaced atomically; a kernel directory is named after its
//! content and written completely before the menu points at it, and old ones are removed only
//! after the new menu is in place, so a power cut at any instant leaves a menu whose entries
//! all load.

use crate::esp::Esp;
use crate::fsutil::{atomic_write, create_dirs_synced, resolve_in_root, sync_dir, sync_renamed};
use crate::grub::{self, Entry, Menu};
use crate::grubenv::EnvBlock;
use crate::inventory::Inventory;
use crate::names::{printable, BeName};
use crate::state::{State, Trial};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The menu's file name in bootenv's ESP directory.
pub const MENU: &str = "grub.cfg";
/// The environment block's file name in bootenv's ESP directory.
pub const ENV: &str = "grubenv";
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

/// The directory name for a kernel: `k-<seconds>-<content hash>`, so that names sort by age.
fn kernel_dir_name(k: &Kernel, now: u64) -> anyhow::Result<(String, String)> {
    let mut h = 0xcbf29ce484222325u64;
    for p in [&k.vmlinuz, &k.initrd] {
        let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        fnv64(&mut h, &data);
        fnv64(&mut h, &(data.len() as u64).to_le_bytes());
    }
    let hash = format!("{h:016x}");
    Ok((format!("k-{now:010}-{hash}"), hash))
}

/// The installed kernel directories of `be`, oldest first (complete ones only).
pub fn kernel_dirs(esp: &Esp, be: &str) -> Vec<String> {
    let dir = esp.bootenv_dir().join(be);
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with("k-") && !n.ends_with(".tmp"))
                .filter(|n| {
                    dir.join(n).join("vmlinuz").is_file()
                        && dir.join(n).join("initrd.img").is_file()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn copy_synced(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let data = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let mut f =
        std::fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    f.write_all(&data)
        .with_context(|| format!("writing {} (is the ESP full?)", dst.display()))?;
    f.sync_all()?;
    Ok(())
}

/// Copies a BE's kernel and initramfs to the ESP unless the newest copy there has the same
/// content. Returns the directory on the ESP, relative to the ESP's root, and whether it copied.
pub fn install_kernel(
    esp: &Esp,
    be: &BeName,
    k: &Kernel,
    now: u64,
) -> anyhow::Result<(String, bool)> {
    let (name, hash) = kernel_dir_name(k, now)?;
    let be_dir = esp.bootenv_dir().join(be.as_str());
    if let Some(newest) = kernel_dirs(esp, be.as_str()).pop() {
        if newest.ends_with(&hash) {
            return Ok((format!("/{}/{be}/{newest}", crate::esp::DIR), false));
        }
    }
    let need = std::fs::metadata(&k.vmlinuz)?.len() + std::fs::metadata(&k.initrd)?.len();
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
    create_dirs_synced(&esp.dir, &be_dir)?;
    let tmp = be_dir.join(format!("{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    create_dirs_synced(&be_dir, &tmp)?;
    copy_synced(&k.vmlinuz, &tmp.join("vmlinuz"))?;
    copy_synced(&k.initrd, &tmp.join("initrd.img"))?;
    sync_dir(&tmp)?;
    let done = be_dir.join(&name);
    std::fs::rename(&tmp, &done)
        .with_context(|| format!("renaming {} to {}", tmp.display(), done.display()))?;
    sync_renamed(&done)?;
    Ok((format!("/{}/{be}/{name}", crate::esp::DIR), true))
}

/// Removes what the menu no longer uses: older kernel directories of listed BEs, unfinished
/// copies, and the directories of BEs that no longer exist. Only names bootenv makes are touched.
pub fn prune(esp: &Esp, inv: &Inventory) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(esp.bootenv_dir()) else {
        return removed;
    };
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(be) = BeName::new(&name) else { continue };
        if !e.path().is_dir() {
            continue;
        }
        if inv.get(&be).is_none() {
            if std::fs::remove_dir_all(e.path()).is_ok() {
                removed.push(format!("{}/{name}", crate::esp::DIR));
            }
            continue;
        }
        let keep = kernel_dirs(esp, &name).pop();
        let Ok(inner) = std::fs::read_dir(e.path()) else {
            continue;
        };
        for k in inner.flatten() {
            let kn = k.file_name().to_string_lossy().into_owned();
            if kn.starts_with("k-")
                && Some(&kn) != keep.as_ref()
                && std::fs::remove_dir_all(k.path()).is_ok()
            {
                removed.push(format!("{}/{name}/{kn}", crate::esp::DIR));
            }
        }
    }
    removed
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
        let Some(dir) = kernel_dirs(esp, be.name.as_str()).pop() else {
            notes.push(format!(
                "{0} left out of the menu: no kernel on the ESP; run `bootenv sync-boot {0}`",
                be.name
            ));
            continue;
        };
        let mut cmdline = be.cmdline.clone().unwrap_or_default();
        if let Err(why) = grub::check_cmdline(&cmdline) {
            notes.push(format!(
                "{} left out of the menu: its {} {}; fix it with `zfs set {}=... {}`",
                be.name,
                crate::layout::PROP_CMDLINE,
                why,
                crate::layout::PROP_CMDLINE,
                be.dataset
            ));
            continue;
        }
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
            kernel_dir: format!("/{}/{}/{dir}", crate::esp::DIR, be.name),
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
    let timeout = inv
        .setting(crate::layout::PROP_GRUB_TIMEOUT)
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(600);
    Ok((
        Menu {
            pool: inv.pool.to_string(),
            esp_uuid: esp.uuid.clone(),
            entries,
            default,
            good,
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
    atomic_write(&dir, MENU, menu.render().as_bytes())?;
    if let Err(why) = current {
        if let Ok(old) = std::fs::read(dir.join(ENV)) {
            let _ = atomic_write(&dir, "grubenv.damaged", &old);
        }
        notes.push(format!(
            "repaired the damaged GRUB environment block ({}); the damaged copy is grubenv.damaged",
            printable(why)
        ));
    }
    let bytes = env.render();
    if std::fs::read(dir.join(ENV)).ok().as_deref() != Some(&bytes[..]) {
        atomic_write(&dir, ENV, &bytes)?;
    }
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
        let long = BeName::new(&"x".repeat(crate::names::MAX_BE_NAME)).unwrap();
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

    #[test]
    fn installs_once_per_content_and_prunes_after() {
        let d = tempfile::tempdir().unwrap();
        let esp = Esp {
            dir: d.path().join("esp"),
            uuid: "1234-5678".into(),
        };
        std::fs::create_dir_all(&esp.dir).unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("k"), "kernel 1").unwrap();
        std::fs::write(src.join("i"), "initrd 1").unwrap();
        let k = Kernel {
            vmlinuz: src.join("k"),
            initrd: src.join("i"),
        };
        let (d1, copied) = install_kernel(&esp, &be("v1"), &k, 100).unwrap();
        assert!(copied && d1.starts_with("/bootenv/v1/k-0000000100-"));
        let (d2, copied) = install_kernel(&esp, &be("v1"), &k, 200).unwrap();
        assert!(!copied);
        assert_eq!(d1, d2);
        std::fs::write(src.join("i"), "initrd 2").unwrap();
        let (d3, copied) = install_kernel(&esp, &be("v1"), &k, 300).unwrap();
        assert!(copied && d3 != d1);
        assert_eq!(kernel_dirs(&esp, "v1").len(), 2);
        // A BE that is gone, and an unfinished copy.
        std::fs::create_dir_all(esp.bootenv_dir().join("gone/k-1")).unwrap();
        std::fs::create_dir_all(esp.bootenv_dir().join("v1/k-0000000400-x.tmp")).unwrap();
        std::fs::create_dir_all(esp.bootenv_dir().join("not a be")).unwrap();
        let l = crate::inventory::tests::listing(&[("tank/ROOT/v1", "noauto", "/", "-", "-")]);
        let inv = Inventory::from_listing(&crate::names::PoolName::new("tank").unwrap(), &l, None);
        let removed = prune(&esp, &inv);
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert_eq!(
            kernel_dirs(&esp, "v1"),
            vec![d3.rsplit('/').next().unwrap().to_string()]
        );
        assert!(
            esp.bootenv_dir().join("not a be").exists(),
            "only names bootenv makes are touched"
        );
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
