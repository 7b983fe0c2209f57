//! Loading the kernel modules the initramfs carries, in the order the builder wrote down.
//!
//! `/etc/bootenv/modules` lists one module per line as a path relative to
//! `/lib/modules/<release>/`, optionally followed by parameters; `#` starts a comment. The
//! builder writes it from `modprobe --show-depends`, so dependencies come first. Modules are
//! loaded with finit_module(2); compressed ones (`.xz`, `.zst`, `.gz`) are handed to the kernel
//! to decompress.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The module list inside the initramfs.
pub const LIST: &str = "/etc/bootenv/modules";

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

/// Loads every module of the list; a module that fails is logged and skipped (the boot then
/// fails later with a message about what is missing, e.g. the pool's disk).
pub fn load_all() {
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
    let entries = parse(&text);
    let mut failed = 0;
    for e in &entries {
        match load_one(&base.join(&e.path), &e.params) {
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
}
