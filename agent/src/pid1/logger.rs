//! Logging for PID 1: every line goes to `/dev/kmsg` (so `dmesg` and the journal of the booted
//! system keep it) and to the console. When the kernel would echo the kmsg line on the console
//! anyway (its level is below the console log level), the agent does not write it twice.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

struct KmsgLogger {
    kmsg: Mutex<Option<File>>,
    console_level: u8,
}

fn syslog_level(l: Level) -> u8 {
    match l {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for KmsgLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let lvl = syslog_level(record.level());
        let text = record.args().to_string();
        let mut echoed = false;
        if let Ok(mut k) = self.kmsg.lock() {
            if let Some(f) = k.as_mut() {
                // One write per line: /dev/kmsg takes one record per write(2).
                for line in text.lines() {
                    let _ = f.write_all(format!("<{lvl}>bootenv: {line}\n").as_bytes());
                }
                echoed = lvl < self.console_level;
            }
        }
        if !echoed {
            let t = super::uptime();
            let mut out = std::io::stdout().lock();
            for line in text.lines() {
                let _ = writeln!(out, "[{t:9.3}] bootenv: {line}");
            }
            let _ = out.flush();
        }
    }

    fn flush(&self) {}
}

/// Reads the console log level from `/proc/sys/kernel/printk` (its first field).
fn console_level() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/printk")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse().ok()))
        .unwrap_or(7)
}

/// Installs the logger. `debug` also logs every command.
pub fn init(debug: bool) {
    let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    let logger = KmsgLogger {
        kmsg: Mutex::new(kmsg),
        console_level: console_level(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(if debug {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
}

/// Lifts the kernel's rate limit on `/dev/kmsg` writes (10 lines per 5 s by default), which
/// would swallow the agent's log; returns the previous setting to restore before init runs.
pub fn unlimit_kmsg() -> Option<String> {
    let p = "/proc/sys/kernel/printk_devkmsg";
    let old = std::fs::read_to_string(p).ok()?;
    let _ = std::fs::write(p, "on\n");
    Some(old)
}

/// Restores the `/dev/kmsg` rate limit setting saved by [`unlimit_kmsg`].
pub fn restore_kmsg(old: Option<&str>) {
    if let Some(old) = old {
        if let Ok(mut f) = File::options()
            .write(true)
            .open("/proc/sys/kernel/printk_devkmsg")
        {
            let _ = f.write_all(old.as_bytes());
        }
    }
}
