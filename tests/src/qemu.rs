//! The QEMU runner: one VM with its serial console captured to a log file and to memory, the
//! ability to wait for ordered markers and to type on the console, and a verdict at the end
//! (clean power-off, kernel panic through pvpanic, or timeout).

use anyhow::{bail, Context};
use regex::Regex;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the VM starts.
#[derive(Clone, Debug)]
pub enum Boot {
    /// `-kernel/-initrd/-append`: the firmware hands over to the kernel directly.
    Direct {
        /// The kernel image.
        kernel: PathBuf,
        /// The initramfs.
        initrd: PathBuf,
        /// The kernel command line: bytes, as the kernel takes them (not always UTF-8).
        append: Vec<u8>,
    },
    /// UEFI firmware (OVMF) with its own variable store.
    Uefi {
        /// A writable copy of `OVMF_VARS_4M.fd` for this VM.
        vars: PathBuf,
    },
    /// BIOS firmware (SeaBIOS), booting the first disk's MBR.
    Bios,
}

/// One VM to run.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// How it starts.
    pub boot: Boot,
    /// Disks, in order (`vda`, `vdb`, ...); `.qcow2` files are qcow2, others raw.
    pub disks: Vec<PathBuf>,
    /// Where the serial console is logged.
    pub log: PathBuf,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// After this long, QEMU is killed.
    pub limit: Duration,
    /// Also copy the console to this process's stdout.
    pub echo: bool,
    /// The accelerator (`tcg` or `kvm`).
    pub accel: String,
}

/// How a VM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest powered off (QEMU exit status 0).
    PoweredOff,
    /// The guest kernel panicked (pvpanic: QEMU exit status 1).
    Panicked,
    /// QEMU ended otherwise.
    Other(Option<i32>),
}

/// A running VM.
pub struct Vm {
    child: Child,
    stdin: Option<ChildStdin>,
    buf: Arc<Mutex<Vec<u8>>>,
    cursor: usize,
    log: PathBuf,
    started: Instant,
    exit: Option<Exit>,
    /// Output that ends any wait at once: the boot went wrong.
    fatal: Vec<regex::bytes::Regex>,
}

/// What ends a wait at once unless a test says otherwise: GRUB stuck at its prompt or after a
/// failed entry, and bootenv's rescue shell.
pub const FATAL: [&str; 3] = [r"grub> ", r"Press any key to continue", r"bootenv RESCUE"];

/// OVMF's code image (read-only).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF's variable store template.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

fn drive_arg(p: &Path) -> String {
    let fmt = if p.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    };
    // A tarball handed to the guest as a disk is read, never written.
    let ro = if p.extension().is_some_and(|e| e == "tar") {
        ",readonly=on"
    } else {
        ""
    };
    format!("if=virtio,format={fmt}{ro},file={}", p.display())
}

/// The timestamped copy of the console log `log`: `<log>.times`.
fn times_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".times");
    PathBuf::from(p)
}

/// Appends to `line` what `chunk` holds and writes each line it ends to `out`, after `at` in
/// seconds (control sequences stripped, as they would scramble the columns).
fn stamp_lines(out: &mut impl Write, line: &mut Vec<u8>, chunk: &[u8], at: Duration) {
    for &c in chunk {
        if c == b'\n' {
            let text = strip_control(line);
            let _ = writeln!(
                out,
                "{:9.3} {}",
                at.as_secs_f64(),
                String::from_utf8_lossy(&text).trim_end()
            );
            line.clear();
        } else {
            line.push(c);
        }
    }
}

impl VmConfig {
    /// The QEMU command line (without the outer `timeout`).
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        use std::ffi::{OsStr, OsString};
        use std::os::unix::ffi::OsStrExt;
        let mut a: Vec<OsString> = Vec::new();
        macro_rules! push {
            ($s:expr) => {
                a.push(AsRef::<OsStr>::as_ref($s).to_owned())
            };
        }
        push!("-accel");
        push!(&self.accel);
        let machine = match self.boot {
            Boot::Bios => "pc",
            _ => "q35",
        };
        // The default CPU model: `-cpu max` makes TCG emulate wide vector units that ZFS then
        // uses, which is slower, not faster.
        for s in ["-machine", machine, "-smp"] {
            push!(s);
        }
        push!(&self.cpus.to_string());
        push!("-m");
        push!(&self.memory_mb.to_string());
        for s in [
            "-display",
            "none",
            "-monitor",
            "none",
            "-nic",
            "none",
            "-no-reboot",
        ] {
            push!(s);
        }
        for s in [
            "-chardev",
            "stdio,id=ser0,signal=off",
            "-serial",
            "chardev:ser0",
        ] {
            push!(s);
        }
        for s in ["-device", "pvpanic-pci", "-action", "panic=exit-failure"] {
            push!(s);
        }
        match &self.boot {
            Boot::Direct {
                kernel,
                initrd,
                append,
            } => {
                push!("-kernel");
                push!(&kernel.display().to_string());
                push!("-initrd");
                push!(&initrd.display().to_string());
                push!("-append");
                push!(OsStr::from_bytes(append));
            }
            Boot::Uefi { vars } => {
                push!("-drive");
                push!(&format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ));
                push!("-drive");
                push!(&format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
            }
            Boot::Bios => {
                // Keep SeaBIOS's own screen output off the serial console.
                push!("-fw_cfg");
                push!("name=etc/sercon-port,string=0");
            }
        }
        for d in &self.disks {
            push!("-drive");
            push!(&drive_arg(d));
        }
        a
    }
}

impl Vm {
    /// Starts QEMU under `timeout -k`.
    pub fn start(cfg: &VmConfig) -> anyhow::Result<Vm> {
        if let Some(dir) = cfg.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut logfile = std::fs::File::create(&cfg.log)
            .with_context(|| format!("creating {}", cfg.log.display()))?;
        let mut cmd = Command::new("timeout");
        // Its own process group, so that killing the group also kills QEMU below `timeout`.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.args([
            "-k",
            "10",
            &cfg.limit.as_secs().to_string(),
            "qemu-system-x86_64",
        ])
        .args(cfg.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let _ = writeln!(
            logfile,
            "# qemu-system-x86_64 {}",
            cfg.args().join(std::ffi::OsStr::new(" ")).to_string_lossy()
        );
        let mut child = cmd
            .spawn()
            .context("starting qemu-system-x86_64 (run `cargo xtask deps`)")?;
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let b = buf.clone();
        let echo = cfg.echo;
        let started = Instant::now();
        // Where the time goes (firmware, GRUB, kernel, init): each console line again, after
        // the host's seconds since QEMU started when the line ended.
        let mut times = std::fs::File::create(times_path(&cfg.log)).ok();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            let mut line: Vec<u8> = Vec::new();
            loop {
                match stdout.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = logfile.write_all(&chunk[..n]);
                        let _ = logfile.flush();
                        if let Some(t) = times.as_mut() {
                            stamp_lines(t, &mut line, &chunk[..n], started.elapsed());
                        }
                        if echo {
                            let mut o = std::io::stdout().lock();
                            let _ = o.write_all(&strip_control(&chunk[..n]));
                            let _ = o.flush();
                        }
                        b.lock()
                            .expect("not poisoned")
                            .extend_from_slice(&chunk[..n]);
                    }
                }
            }
        });
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            if !s.trim().is_empty() {
                b.lock()
                    .expect("not poisoned")
                    .extend_from_slice(format!("\n[qemu stderr] {s}").as_bytes());
            }
        });
        let fatal = FATAL
            .iter()
            .map(|p| regex::bytes::Regex::new(p).expect("valid"))
            .collect();
        Ok(Vm {
            stdin: child.stdin.take(),
            child,
            buf,
            cursor: 0,
            log: cfg.log.clone(),
            started,
            exit: None,
            fatal,
        })
    }

    /// The console output so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().expect("not poisoned")).into_owned()
    }

    /// The console output after the last match.
    pub fn rest(&self) -> String {
        let b = self.buf.lock().expect("not poisoned");
        String::from_utf8_lossy(&b[self.cursor.min(b.len())..]).into_owned()
    }

    /// Seconds since the VM started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn tail(&self, lines: usize) -> String {
        let t = self.text();
        let all: Vec<&str> = t.lines().collect();
        let start = all.len().saturating_sub(lines);
        all[start..]
            .iter()
            .map(|l| format!("    | {}", l.trim_end()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops treating output matching `pattern` (one of [`FATAL`]) as a failure.
    pub fn allow(&mut self, pattern: &str) {
        self.fatal.retain(|r| r.as_str() != pattern);
    }

    /// Waits until `pattern` appears after the previous match; returns its capture groups
    /// (group 0 first) and moves past it. Output matching a fatal pattern first is an error.
    ///
    /// The console arrives in pieces, so a match can see half a line: a pattern whose capture
    /// runs to the end of a word or line must end in what follows it (`\s`, `\r?\n`), or it
    /// may capture a prefix (`zfs-mounts=tank/ROOT/v2/co` once failed a run that way).
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let re =
            regex::bytes::Regex::new(pattern).with_context(|| format!("bad pattern {pattern}"))?;
        let deadline = Instant::now() + timeout;
        let mut exited = false;
        loop {
            {
                let b = self.buf.lock().expect("not poisoned");
                let hay = &b[self.cursor.min(b.len())..];
                let found = re.captures(hay);
                let limit = found
                    .as_ref()
                    .and_then(|c| c.get(0))
                    .map_or(hay.len(), |m| m.start());
                if let Some(f) = self.fatal.iter().find(|f| f.is_match(&hay[..limit])) {
                    let what = f.as_str().to_owned();
                    drop(b);
                    bail!(
                        "/{what}/ appeared while waiting for /{pattern}/; last console lines:\n{}\n    (log: {})",
                        self.tail(15),
                        self.log.display()
                    );
                }
                if let Some(c) = found {
                    let end = c.get(0).map_or(0, |m| m.end());
                    let groups = c
                        .iter()
                        .map(|m| {
                            m.map_or(String::new(), |m| {
                                String::from_utf8_lossy(m.as_bytes()).into_owned()
                            })
                        })
                        .collect();
                    drop(b);
                    self.cursor += end;
                    return Ok(groups);
                }
            }
            if exited {
                bail!(
                    "the VM ended ({}) before /{pattern}/ appeared; last console lines:\n{}\n    (log: {})",
                    describe(self.exit.expect("set")),
                    self.tail(15),
                    self.log.display()
                );
            }
            if let Some(status) = self.child.try_wait()? {
                // Let the reader drain the pipe, then look once more.
                std::thread::sleep(Duration::from_millis(300));
                self.exit = Some(classify(status.code()));
                exited = true;
                continue;
            }
            if Instant::now() > deadline {
                bail!(
                    "/{pattern}/ did not appear within {} s; last console lines:\n{}\n    (log: {})",
                    timeout.as_secs(),
                    self.tail(15),
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Checks that `pattern` does not appear anywhere in the output so far.
    pub fn refute(&self, pattern: &str) -> anyhow::Result<()> {
        let re = Regex::new(pattern)?;
        if let Some(m) = re.find(&self.text()) {
            bail!(
                "unexpected /{pattern}/ on the console: {:?} (log: {})",
                m.as_str(),
                self.log.display()
            );
        }
        Ok(())
    }

    /// Types on the serial console.
    pub fn send(&mut self, s: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("the console input is closed")?;
        stdin.write_all(s.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for QEMU to end.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<Exit> {
        if let Some(e) = self.exit {
            return Ok(e);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                let e = classify(status.code());
                self.exit = Some(e);
                return Ok(e);
            }
            if Instant::now() > deadline {
                self.kill();
                bail!(
                    "the VM did not power off within {} s; last console lines:\n{}",
                    timeout.as_secs(),
                    self.tail(10)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a clean power-off; a panic or anything else is an error.
    pub fn expect_poweroff(&mut self, timeout: Duration) -> anyhow::Result<()> {
        match self.wait(timeout)? {
            Exit::PoweredOff => Ok(()),
            other => bail!(
                "the VM ended with {} instead of a clean power-off; last console lines:\n{}\n    (log: {})",
                describe(other),
                self.tail(15),
                self.log.display()
            ),
        }
    }

    /// Kills the VM: a power cut.
    pub fn kill(&mut self) {
        // `timeout` leads the process group; QEMU is in it.
        if self.exit.is_some() {
            return;
        }
        let pgid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let status = self.child.wait().ok().and_then(|s| s.code());
        self.exit = Some(Exit::Other(status));
        // QEMU may outlive its parent by a moment, holding the disk's lock: wait until the
        // whole group is gone, so that the disk can be read at once.
        let gone = || {
            !Command::new("kill")
                .args(["-0", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !gone() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill();
        }
    }
}

fn classify(code: Option<i32>) -> Exit {
    match code {
        Some(0) => Exit::PoweredOff,
        Some(1) => Exit::Panicked,
        c => Exit::Other(c),
    }
}

/// Words for an [`Exit`].
pub fn describe(e: Exit) -> String {
    match e {
        Exit::PoweredOff => "a clean power-off".into(),
        Exit::Panicked => "a kernel panic (pvpanic)".into(),
        Exit::Other(Some(124)) | Exit::Other(Some(137)) => "the harness time limit".into(),
        Exit::Other(c) => format!("QEMU exit status {c:?}"),
    }
}

/// Removes terminal control sequences, for echoing GRUB's screen to a log-like terminal.
pub fn strip_control(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0x1b {
            i += 1;
            if i < b.len() && b[i] == b'[' {
                i += 1;
                while i < b.len() && !(0x40..=0x7e).contains(&b[i]) {
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        if b[i] == b'\r' {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Picks the accelerator: KVM if a short real boot of `kernel`+`initrd` under it prints
/// `marker`, else TCG. The existence of /dev/kvm proves nothing on these machines.
pub fn probe_accel(kernel: &Path, initrd: &Path, marker: &str, log: &Path) -> String {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable || std::env::var_os("BOOTENV_NO_KVM").is_some() {
        return "tcg".into();
    }
    let cfg = VmConfig {
        boot: Boot::Direct {
            kernel: kernel.into(),
            initrd: initrd.into(),
            append: "console=ttyS0 panic=-1 quiet".into(),
        },
        disks: vec![],
        log: log.into(),
        memory_mb: 512,
        cpus: 1,
        limit: Duration::from_secs(30),
        echo: false,
        accel: "kvm".into(),
    };
    let ok = Vm::start(&cfg).and_then(|mut vm| {
        vm.expect(marker, Duration::from_secs(20))?;
        vm.wait(Duration::from_secs(10))
    });
    match ok {
        Ok(Exit::PoweredOff) => "kvm".into(),
        _ => "tcg".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_stamped_as_they_end() {
        let (mut out, mut line) = (Vec::new(), Vec::new());
        stamp_lines(
            &mut out,
            &mut line,
            b"BdsDxe: loading\r\nGRU",
            Duration::from_millis(1500),
        );
        stamp_lines(
            &mut out,
            &mut line,
            b"B\x1b[2J menu\n",
            Duration::from_millis(4250),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "    1.500 BdsDxe: loading\n    4.250 GRUB menu\n"
        );
        assert!(line.is_empty());
    }

    #[test]
    fn control_sequences_are_stripped() {
        assert_eq!(strip_control(b"\x1b[2J\x1b[1;1Habc\r\n\x1b[0m"), b"abc\n");
    }

    #[test]
    fn the_command_line_has_the_essentials() {
        let cfg = VmConfig {
            boot: Boot::Direct {
                kernel: "/k".into(),
                initrd: "/i".into(),
                append: "a b".into(),
            },
            disks: vec!["/d.qcow2".into(), "/e.img".into()],
            log: "/l".into(),
            memory_mb: 1024,
            cpus: 2,
            limit: Duration::from_secs(60),
            echo: false,
            accel: "tcg".into(),
        };
        let a = cfg.args().join(std::ffi::OsStr::new(" "));
        let a = a.to_string_lossy();
        for want in [
            "-accel tcg",
            "-no-reboot",
            "panic=exit-failure",
            "-append a b",
            "format=qcow2,file=/d.qcow2",
            "format=raw,file=/e.img",
        ] {
            assert!(a.contains(want), "{want} missing in {a}");
        }
    }
}
