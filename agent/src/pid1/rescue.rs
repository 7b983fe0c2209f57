//! The rescue shell: when nothing can boot, say what failed and what to try, then give the
//! operator busybox's shell on the console. When the shell exits, the agent tries the boot again.
//! Nothing on this path changes a dataset.

use crate::boot::decide::Rescue;
use crate::model::paths::RESCUE;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// busybox in the initramfs.
pub const BUSYBOX: &str = "/bin/busybox";

/// The text shown on the console, also written to `/run/bootenv/rescue`.
pub fn banner(r: &Rescue) -> String {
    let mut s = String::new();
    s.push_str("================================================================\n");
    s.push_str("bootenv RESCUE: the system cannot boot.\n");
    s.push_str(&format!("Reason: {}\n", r.reason));
    s.push_str("What to try:\n");
    for h in &r.hints {
        s.push_str(&format!("  - {h}\n"));
    }
    s.push_str("================================================================\n");
    s
}

/// Shows the reason and runs the shell until it exits.
pub fn shell(r: &Rescue) {
    log::error!("RESCUE: {} (what to try: /{RESCUE})", r.reason);
    let text = banner(r);
    let _ = std::fs::create_dir_all(Path::new("/").join(crate::model::paths::RUN));
    let _ = std::fs::write(Path::new("/").join(RESCUE), &text);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    drop(out);
    let status = Command::new(BUSYBOX)
        .args(["setsid", "-c", BUSYBOX, "sh"])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("PS1", "bootenv-rescue# ")
        .env("HOME", "/")
        .env("TERM", "vt100")
        .env("ZPOOL_IMPORT_UDEV_TIMEOUT_MS", "0")
        .status();
    match status {
        Ok(s) => log::info!("rescue shell ended ({s}); trying the boot again"),
        Err(e) => {
            log::error!(
                "cannot start the rescue shell {BUSYBOX}: {e}; trying the boot again in 10 s"
            );
            std::thread::sleep(Duration::from_secs(10));
        }
    }
}

/// The last resort when the agent itself fails (a bug): replace it with a shell, keeping PID 1.
pub fn exec_shell(reason: &str) -> ! {
    let _ = writeln!(
        std::io::stdout(),
        "bootenv RESCUE: {reason}\nbootenv: starting a shell; the boot cannot continue by itself."
    );
    let sh = std::ffi::CString::new(BUSYBOX).unwrap_or_default();
    let argv = [sh.clone(), std::ffi::CString::new("sh").unwrap_or_default()];
    let _ = nix::unistd::execv(&sh, &argv);
    loop {
        let _ = writeln!(
            std::io::stdout(),
            "bootenv: no shell at {BUSYBOX}; halted: {reason}"
        );
        std::thread::sleep(Duration::from_secs(60));
    }
}
