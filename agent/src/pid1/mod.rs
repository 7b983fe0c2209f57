//! The agent as PID 1 of the initramfs: set up the API file systems and logging, load modules,
//! run the boot path ([`crate::boot`]), switch root and exec the boot environment's init; or
//! show the rescue shell and try again when it exits.

mod logger;
pub mod modules;
pub mod rescue;
mod switchroot;

use crate::boot::Env;
use crate::model::cmdline::BootArgs;
use crate::sys::mounts::SysMounter;
use crate::sys::zfs::cli::ZfsCli;
use nix::mount::MsFlags;
use std::path::Path;

/// Seconds since the kernel started (CLOCK_BOOTTIME).
pub fn uptime() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mounts /proc, /sys, /dev and /run; one that is mounted already is left as it is.
fn mount_api_filesystems() {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mounts: [(&str, &str, MsFlags, &str); 4] = [
        ("proc", "/proc", nosuid, ""),
        ("sysfs", "/sys", nosuid, ""),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, "mode=0755"),
        (
            "tmpfs",
            "/run",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=0755",
        ),
    ];
    for (fstype, target, flags, data) in mounts {
        let _ = std::fs::create_dir_all(target);
        let data = (!data.is_empty()).then_some(data);
        if let Err(e) = nix::mount::mount(Some(fstype), target, Some(fstype), flags, data) {
            if e != nix::errno::Errno::EBUSY {
                println!("bootenv: mounting {fstype} at {target} failed: {e}");
            }
        }
    }
}

/// Makes sure fds 0, 1 and 2 are the console (the kernel leaves them closed when the
/// initramfs has no /dev/console).
fn ensure_console() {
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFD only asks whether descriptor 1 is open.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0 {
        return;
    }
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, with a valid open source fd.
            unsafe {
                libc::dup2(f.as_raw_fd(), fd);
            }
        }
    }
}

/// A failpoint named on the kernel command line was reached: stop dead, as a power cut would
/// (nothing is synced, nothing more is written), and wait for the machine to be killed.
fn failpoint(name: &str) -> bool {
    log::error!("FAILPOINT {name}: stopping here (bootenv.failpoint); power the machine off");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// The boot path's environment on the real system: `/`, ZFS as given, real mounts, the
/// kernel's clock, failpoints that stop dead; the new root assembled at `staging`.
fn system_env<'a>(zfs: &'a ZfsCli, staging: &'a str) -> Env<'a> {
    Env {
        root: Path::new("/"),
        zfs,
        mounter: &SysMounter,
        uptime: &uptime,
        now: &now,
        failpoint: &failpoint,
        staging,
    }
}

/// `bootenv initramfs-tools-mount <rootmnt>`: the agent's boot path inside a Debian
/// initramfs-tools image (the `bootenv` boot script's `mountroot`). initramfs-tools has mounted
/// the API file systems, started udev and loaded zfs; the agent imports the pool, picks the
/// boot environment, carries out a pending factory reset or records a rollback, mounts the BE's
/// root and members at `rootmnt` and writes `/run/bootenv/boot`. initramfs-tools then switches
/// root (it moves `/run`, and the state dataset's mount with it) and execs init. Returns the
/// exit status: 0 mounted; 1 nothing can boot (the message says why and what to try; the boot
/// script drops to initramfs-tools' shell with it).
pub fn initramfs_tools_mount(rootmnt: &Path) -> i32 {
    let agent_start = uptime();
    let cmdline = std::fs::read("/proc/cmdline").unwrap_or_default();
    let args = BootArgs::parse(&cmdline);
    logger::init(args.debug);
    log::info!(
        "bootenv {} (initramfs-tools) starting at {agent_start:.3} s",
        env!("CARGO_PKG_VERSION")
    );
    for w in &args.warnings {
        log::warn!("{w}");
    }
    let Some(staging) = rootmnt
        .to_str()
        .map(|s| s.trim_start_matches('/'))
        .filter(|s| !s.is_empty())
    else {
        log::error!("bad root mount point {}", rootmnt.display());
        return 1;
    };
    let zfs = ZfsCli::default().with_search_dir("/dev");
    let env = system_env(&zfs, staging);
    let prepared = env.prepare(&args);
    match prepared.and_then(|p| env.mount_chosen(&args, &p, agent_start)) {
        Ok(ready) => {
            log::info!(
                "boot environment {} is mounted at {}; initramfs-tools starts {}",
                ready.plan.be,
                rootmnt.display(),
                ready.plan.init
            );
            0
        }
        Err(r) => {
            env.release_state();
            log::error!("bootenv RESCUE: {}", r.reason);
            for h in &r.hints {
                log::error!("  {h}");
            }
            1
        }
    }
}

/// PID 1's main: never returns.
pub fn main() -> ! {
    let agent_start = uptime();
    mount_api_filesystems();
    ensure_console();
    let cmdline = std::fs::read("/proc/cmdline").unwrap_or_default();
    let args = BootArgs::parse(&cmdline);
    logger::init(args.debug);
    let kmsg_setting = logger::unlimit_kmsg();
    std::panic::set_hook(Box::new(|info| {
        log::error!("internal error: {info}");
        rescue::exec_shell(&format!("the bootenv agent failed: {info}"));
    }));
    log::info!(
        "bootenv {} starting at {agent_start:.3} s",
        env!("CARGO_PKG_VERSION")
    );
    for w in &args.warnings {
        log::warn!("{w}");
    }
    modules::load_all(&args.module_params);

    let zfs = ZfsCli::default()
        .with_programs("/sbin/zpool", "/sbin/zfs")
        .with_search_dir("/dev");
    let env = system_env(&zfs, crate::boot::STAGING);
    loop {
        let args = BootArgs::parse(std::fs::read("/proc/cmdline").unwrap_or_default());
        let prepared = env.prepare(&args);
        let rescue = match prepared.and_then(|p| env.mount_chosen(&args, &p, agent_start)) {
            Ok(ready) => {
                let err = hand_over(&env, ready, kmsg_setting.as_deref());
                // The new root was entered; there is no way back to the initramfs.
                rescue::exec_shell(&format!("{err:#}"));
            }
            Err(r) => r,
        };
        env.release_state();
        rescue::shell(&rescue);
    }
}

/// Switches root and execs init; returns only the error when that fails.
fn hand_over(env: &Env, ready: crate::boot::Ready, kmsg_setting: Option<&str>) -> anyhow::Error {
    let newroot = ready.newroot.as_path();
    if let Err(e) = switchroot::move_api_mounts(newroot) {
        return e;
    }
    switchroot::free_initramfs(newroot);
    if let Err(e) = switchroot::enter(newroot) {
        return e;
    }
    let mut report = ready.report;
    let t = uptime();
    report.put("init-exec", &format!("{t:.3}"));
    let _ = env; // Paths below are now relative to the new root.
    if let Err(e) = std::fs::write(
        Path::new("/").join(crate::model::paths::BOOT_REPORT),
        report.render(),
    ) {
        log::warn!("could not update the boot report: {e}");
    }
    log::info!(
        "starting {} of boot environment {} at {t:.3} s (agent ran {:.3} s)",
        ready.plan.init,
        ready.plan.be,
        t - report
            .get("agent-start")
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    );
    logger::restore_kmsg(kmsg_setting);
    switchroot::exec_init(&ready.plan.init)
}
