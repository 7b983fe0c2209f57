//! Loading the kernel modules the initramfs carries, in the order the builder wrote down.
//!
//! `/etc/bootenv/modules` lists one module per line as a path relative to
//! `/lib/modules/<release>/`, optionally followed by parameters; `#` starts a comment. The
//! builder writes it from `modprobe --show-depends`, so dependencies come first.
//! `/etc/bootenv/modules.dep` (optional) says what each module waits for, one `path: dep…` line
//! per module; with it, modules whose waits are over load side by side on a few threads (the
//! ZFS chain while the disk drivers probe), else one after the other in list order. Modules are
//! loaded with finit_module(2); compressed ones (`.xz`, `.zst`, `.gz`) are handed to the kernel
//! to decompress.
//!
//! Parameters given on the kernel command line (`<module>.<param>=<value>`, with `-` and `_`
//! the same in module names) are added after the list's own, as modprobe does, so that they win.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Condvar, Mutex};

/// The module list inside the initramfs.
pub const LIST: &str = "/etc/bootenv/modules";
/// What each module waits for.
pub const DEPS: &str = "/etc/bootenv/modules.dep";
/// Threads that load modules side by side.
const LOADERS: usize = 3;

/// finit_module(2) flag: the file is compressed, the kernel decompresses it.
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

/// One line of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to `/lib/modules/<release>/`.
    pub path: String,
    /// Parameters passed to the module.
    pub params: String,
}

/// Parses the module list.
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((p, params)) => Entry {
                path: p.to_owned(),
                params: params.trim().to_owned(),
            },
            None => Entry {
                path: l.to_owned(),
                params: String::new(),
            },
        })
        .collect()
}

/// A module's name from its path (`kernel/drivers/block/virtio_blk.ko.xz` -> `virtio_blk`),
/// with `-` read as `_`, as the kernel names it.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Adds the command line's parameters (`(module, "param=value")`, from
/// [`crate::model::cmdline::BootArgs::module_params`]) to the entries of their modules, after the
/// list's own.
pub fn add_cmdline_params(entries: &mut [Entry], params: &[(String, String)]) {
    for e in entries.iter_mut() {
        let name = module_name(&e.path);
        for (_, p) in params.iter().filter(|(m, _)| *m == name) {
            if !e.params.is_empty() {
                e.params.push(' ');
            }
            e.params.push_str(p);
        }
    }
}

/// Parses `modules.dep`: module path to the paths it waits for.
pub fn parse_deps(text: &str) -> HashMap<String, Vec<String>> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.trim().to_owned(),
                d.split_whitespace().map(str::to_owned).collect(),
            )
        })
        .collect()
}

/// Runs `load` for every entry, on `threads` threads, starting an entry only once every entry
/// it waits for (per `deps`, restricted to the list) has finished; among the ready ones, the
/// one with the heaviest chain (by `weights`, one per entry) behind it first, then list order.
/// Returns the results in list order. A failed module still counts as finished: what waits for
/// it is tried anyway, as a sequential loader would.
pub fn load_in_parallel<F>(
    entries: &[Entry],
    deps: &HashMap<String, Vec<String>>,
    weights: &[u64],
    threads: usize,
    load: F,
) -> Vec<std::io::Result<()>>
where
    F: Fn(&Entry) -> std::io::Result<()> + Sync,
{
    let listed: HashSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    // Waits on modules later in the list (a malformed file) are dropped: the list's order is
    // always a safe order.
    let waits: Vec<Vec<usize>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            deps.get(&e.path)
                .into_iter()
                .flatten()
                .filter(|d| listed.contains(d.as_str()))
                .filter_map(|d| entries.iter().position(|x| &x.path == d))
                .filter(|&j| j < i)
                .collect()
        })
        .collect();
    // The heaviest chain of modules (by weight: file size, which loading time follows) still
    // to come behind each one, itself included: the ready module with the heaviest chain
    // starts first (the chain that ends in zfs.ko, not the disk drivers before it in the list).
    let weight = |i: usize| weights.get(i).copied().unwrap_or(1).max(1);
    let mut depth: Vec<u64> = (0..entries.len()).map(weight).collect();
    for i in (0..entries.len()).rev() {
        for k in i + 1..entries.len() {
            if waits[k].contains(&i) {
                depth[i] = depth[i].max(depth[k] + weight(i));
            }
        }
    }
    struct Board {
        started: Vec<bool>,
        results: Vec<Option<std::io::Result<()>>>,
    }
    let board = Mutex::new(Board {
        started: vec![false; entries.len()],
        results: entries.iter().map(|_| None).collect(),
    });
    let changed = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
                let next = loop {
                    if b.started.iter().all(|s| *s) {
                        break None;
                    }
                    let ready = (0..entries.len())
                        .filter(|&i| {
                            !b.started[i] && waits[i].iter().all(|&j| b.results[j].is_some())
                        })
                        .max_by_key(|&i| (depth[i], std::cmp::Reverse(i)));
                    match ready {
                        Some(i) => break Some(i),
                        None => b = changed.wait(b).unwrap_or_else(|p| p.into_inner()),
                    }
                };
                let Some(i) = next else {
                    changed.notify_all();
                    return;
                };
                b.started[i] = true;
                drop(b);
                let r = load(&entries[i]);
                board.lock().unwrap_or_else(|p| p.into_inner()).results[i] = Some(r);
                changed.notify_all();
            });
        }
    });
    board
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(std::io::Error::other("not loaded"))))
        .collect()
}

fn load_one(path: &Path, params: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    let params =
        CString::new(params).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let name = path.to_string_lossy();
    let flags = if name.ends_with(".xz") || name.ends_with(".zst") || name.ends_with(".gz") {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: finit_module reads the open file descriptor and the NUL-terminated parameter
    // string, both valid for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(e)
}

/// Loads every module of the list, with the parameters the list and the kernel command line
/// (`cmdline_params`) give it; a module that fails is logged and skipped (the boot then fails
/// later with a message about what is missing, e.g. the pool's disk).
pub fn load_all(cmdline_params: &[(String, String)]) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = Path::new("/lib/modules").join(&release);
    let text = match std::fs::read_to_string(LIST) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("no module list {LIST} ({e}): loading no modules");
            return;
        }
    };
    let started = super::uptime();
    let mut entries = parse(&text);
    add_cmdline_params(&mut entries, cmdline_params);
    for e in entries.iter().filter(|e| !e.params.is_empty()) {
        log::debug!("module {} parameters: {}", e.path, e.params);
    }
    let (deps, threads) = match std::fs::read_to_string(DEPS) {
        Ok(t) => (parse_deps(&t), LOADERS),
        Err(_) => (HashMap::new(), 1),
    };
    let weights: Vec<u64> = entries
        .iter()
        .map(|e| std::fs::metadata(base.join(&e.path)).map_or(1, |m| m.len()))
        .collect();
    let results = load_in_parallel(&entries, &deps, &weights, threads, |e| {
        let t = super::uptime();
        let r = load_one(&base.join(&e.path), &e.params);
        log::debug!(
            "module {} loaded from {t:.3} s in {:.3} s",
            e.path,
            super::uptime() - t
        );
        r
    });
    let mut failed = 0;
    for (e, r) in entries.iter().zip(results) {
        match r {
            Ok(()) => {}
            // A driver for hardware that is not there (a CPU feature, a controller).
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => {
                failed += 1;
                log::debug!("module {} not loaded: {err}", e.path);
            }
            Err(err) => {
                failed += 1;
                log::warn!("module {} not loaded: {err}", e.path);
            }
        }
    }
    log::info!(
        "loaded {} of {} modules for kernel {release} in {:.2} s",
        entries.len() - failed,
        entries.len(),
        super::uptime() - started
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn entries(paths: &[&str]) -> Vec<Entry> {
        paths
            .iter()
            .map(|p| Entry {
                path: p.to_string(),
                params: String::new(),
            })
            .collect()
    }

    #[test]
    fn a_module_starts_only_after_what_it_waits_for_and_chains_overlap() {
        let list = entries(&["a", "b", "c", "x", "y"]);
        let deps = parse_deps("a:\nb: a\nc: a b\nx:\ny: x\n");
        let clock = AtomicUsize::new(0);
        let times: Mutex<HashMap<String, (usize, usize)>> = Mutex::new(HashMap::new());
        let results = load_in_parallel(&list, &deps, &[], 3, |e| {
            let start = clock.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(30));
            let end = clock.fetch_add(1, Ordering::SeqCst);
            times.lock().unwrap().insert(e.path.clone(), (start, end));
            if e.path == "b" {
                Err(std::io::Error::from_raw_os_error(libc::ENODEV))
            } else {
                Ok(())
            }
        });
        let t = times.into_inner().unwrap();
        assert_eq!(t.len(), 5, "every module was tried, also after a failure");
        assert!(t["b"].0 > t["a"].1 && t["c"].0 > t["b"].1 && t["y"].0 > t["x"].1);
        assert!(
            t["x"].0 < t["a"].1,
            "the second chain did not start beside the first: {t:?}"
        );
        assert!(results[1].is_err() && results.iter().filter(|r| r.is_ok()).count() == 4);
    }

    #[test]
    fn the_heaviest_chain_starts_first() {
        let list = entries(&["c1", "c2", "c3", "disk", "spl", "znvpair", "zfs"]);
        let deps = parse_deps("c1:\nc2: c1\nc3: c2\ndisk:\nspl:\nznvpair: spl\nzfs: spl znvpair\n");
        let seen = Mutex::new(Vec::new());
        load_in_parallel(&list, &deps, &[1, 1, 1, 5, 1, 1, 60], 1, |e| {
            seen.lock().unwrap().push(e.path.clone());
            Ok(())
        });
        assert_eq!(
            seen.into_inner().unwrap(),
            ["spl", "znvpair", "zfs", "disk", "c1", "c2", "c3"]
        );
    }

    #[test]
    fn without_waits_one_thread_keeps_the_list_order() {
        let list = entries(&["m1", "m2", "m3"]);
        let seen = Mutex::new(Vec::new());
        load_in_parallel(&list, &HashMap::new(), &[], 1, |e| {
            seen.lock().unwrap().push(e.path.clone());
            Ok(())
        });
        assert_eq!(seen.into_inner().unwrap(), ["m1", "m2", "m3"]);
    }

    #[test]
    fn waits_on_later_or_unknown_modules_are_ignored() {
        let list = entries(&["p", "q"]);
        let deps = parse_deps("p: q ghost\nq:\n");
        let seen = Mutex::new(Vec::new());
        let r = load_in_parallel(&list, &deps, &[], 2, |e| {
            seen.lock().unwrap().push(e.path.clone());
            Ok(())
        });
        assert_eq!(r.len(), 2);
        assert_eq!(seen.into_inner().unwrap().len(), 2);
    }

    #[test]
    fn parses_the_list() {
        let l = parse("# virtio\nkernel/drivers/virtio/virtio.ko\n\nupdates/dkms/zfs.ko zfs_arc_max=1 x=2  # tune\n");
        assert_eq!(
            l,
            vec![
                Entry {
                    path: "kernel/drivers/virtio/virtio.ko".into(),
                    params: String::new()
                },
                Entry {
                    path: "updates/dkms/zfs.ko".into(),
                    params: "zfs_arc_max=1 x=2".into()
                },
            ]
        );
    }

    #[test]
    fn command_line_parameters_follow_the_lists_own() {
        let mut e = parse(
            "updates/dkms/zfs.ko zfs_arc_min=1\nupdates/dkms/spl.ko.xz\nkernel/drivers/block/virtio_blk.ko.zst\n",
        );
        add_cmdline_params(
            &mut e,
            &[
                ("zfs".into(), "zfs_arc_max=123".into()),
                ("spl".into(), "spl_hostid=0x00bee5ed".into()),
                ("virtio_blk".into(), "queue_depth=64".into()),
                ("zfs".into(), "zfs_arc_min=2".into()),
                ("other".into(), "x=1".into()),
            ],
        );
        let params: Vec<&str> = e.iter().map(|e| e.params.as_str()).collect();
        assert_eq!(
            params,
            [
                "zfs_arc_min=1 zfs_arc_max=123 zfs_arc_min=2",
                "spl_hostid=0x00bee5ed",
                "queue_depth=64"
            ]
        );
        assert_eq!(module_name("kernel/fs/fat/vfat.ko"), "vfat");
        assert_eq!(module_name("x/some-mod.ko.gz"), "some_mod");
    }
}
