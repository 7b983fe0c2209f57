//! The VM scenarios. Each boots the real Debian kernel with bootenv's initramfs on its own copy
//! of the golden disk (real ZFS), asserts ordered markers on the serial console and the way the
//! VM ends. The names are a contract: issues and CI refer to them.
//!
//! One file per family (`boot`, `grub`, `reset`, `cli`, `esp`, `deb`, `hardening`; `debian_disk` makes the
//! packaging scenarios' fixture); this one holds
//! what they share: the context a scenario runs in, the helpers that drive a test BE, the
//! [`Fixture`]s several scenarios start from, and the scheduler that runs scenarios side by side
//! in lanes, longest first (by the durations the last runs recorded in the cache).

mod boot;
mod cli;
mod data;
mod deb;
mod debian_disk;
mod esp;
mod grub;
mod hardening;
mod reset;

use crate::disk;
use crate::images::{Artifacts, BASE_CMDLINE};
use crate::qemu::{Boot, Vm, VmConfig};
use anyhow::{bail, ensure};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long one boot may take to reach a marker under TCG.
pub const BOOT: Duration = Duration::from_secs(150);
/// How long a marker may take once the boot environment runs.
pub const STEP: Duration = Duration::from_secs(60);

/// One named scenario.
pub struct Scenario {
    /// The name (`boot-default`).
    pub name: &'static str,
    /// One line on what it shows.
    pub about: &'static str,
    /// The test.
    pub run: fn(&mut Ctx) -> anyhow::Result<()>,
    /// The shared setup it starts from, if any (made before it runs, once per run).
    pub needs: Option<Fixture>,
}

impl Scenario {
    /// A scenario that starts from the golden disk (or from nothing it needs made first).
    pub const fn new(
        name: &'static str,
        about: &'static str,
        run: fn(&mut Ctx) -> anyhow::Result<()>,
    ) -> Scenario {
        Scenario {
            name,
            about,
            run,
            needs: None,
        }
    }

    /// The same, starting from fixture `f`.
    pub const fn needs(self, f: Fixture) -> Scenario {
        Scenario {
            needs: Some(f),
            ..self
        }
    }
}

/// A setup that several scenarios start from: made once per run by the first scenario that
/// needs it (or taken from the cache), while the other lanes go on with scenarios that do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fixture {
    /// A disk with Debian bookworm installed in BE `deb1` of pool `deb`, with bootenv's
    /// packages installed by dpkg, never booted ([`debian_disk`]).
    DebianDisk,
}

impl Fixture {
    /// Its name, in logs and the time summary.
    pub fn name(self) -> &'static str {
        match self {
            Fixture::DebianDisk => "debian-disk",
        }
    }
}

/// How a fixture was made in this run.
#[derive(Clone, Debug)]
pub struct FixtureTime {
    /// [`Fixture::name`].
    pub name: &'static str,
    /// Wall time, seconds.
    pub secs: f64,
    /// Taken from the cache rather than built.
    pub cached: bool,
}

/// Where a fixture is in this run.
#[derive(Clone, Debug)]
enum Slot {
    /// A lane picked a scenario that needs it and will make it.
    Claimed,
    /// Being made.
    Building,
    /// Made (its path) or failed (why).
    Done(Result<PathBuf, String>),
}

/// The fixtures of one run: each made at most once, by the lane that claimed it when it picked
/// a scenario needing it; no other lane picks such a scenario before it is made.
#[derive(Default)]
pub struct Fixtures {
    slots: std::sync::Mutex<std::collections::HashMap<Fixture, Slot>>,
    done: std::sync::Condvar,
    times: std::sync::Mutex<Vec<FixtureTime>>,
}

/// Ends a fixture's build when the builder panics, so that nobody waits for it forever.
struct BuildGuard<'a> {
    fixtures: &'a Fixtures,
    f: Fixture,
    finished: bool,
}

impl Drop for BuildGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let why = format!("fixture {}: its build panicked", self.f.name());
            self.fixtures.finish(self.f, Err(why));
        }
    }
}

impl Fixtures {
    /// Whether a lane may start a scenario needing `f` now: it is made, or nobody makes it yet
    /// (then this lane claims it and will make it). False while another lane makes it.
    fn try_claim(&self, f: Fixture) -> bool {
        let mut slots = self.slots.lock().expect("not poisoned");
        match slots.get(&f) {
            Some(Slot::Done(_)) => true,
            Some(Slot::Claimed | Slot::Building) => false,
            None => {
                slots.insert(f, Slot::Claimed);
                true
            }
        }
    }

    fn finish(&self, f: Fixture, r: Result<PathBuf, String>) {
        self.slots
            .lock()
            .expect("not poisoned")
            .insert(f, Slot::Done(r));
        self.done.notify_all();
    }

    /// The fixture's path: made now by this lane (which claimed it), or waited for.
    fn get(&self, f: Fixture, art: &Artifacts, echo: bool, cpus: u32) -> anyhow::Result<PathBuf> {
        let mut slots = self.slots.lock().expect("not poisoned");
        loop {
            match slots.get(&f) {
                Some(Slot::Done(r)) => return r.clone().map_err(|e| anyhow::anyhow!("{e}")),
                Some(Slot::Building) => slots = self.done.wait(slots).expect("not poisoned"),
                Some(Slot::Claimed) | None => break,
            }
        }
        slots.insert(f, Slot::Building);
        drop(slots);
        let mut guard = BuildGuard {
            fixtures: self,
            f,
            finished: false,
        };
        println!("--- fixture {}", f.name());
        let t = Instant::now();
        let made = match f {
            Fixture::DebianDisk => debian_disk::debian_disk(art, echo, cpus),
        };
        let secs = t.elapsed().as_secs_f64();
        match &made {
            Ok((p, found)) => println!(
                "    fixture {}: {} ({:.0} s{})",
                f.name(),
                p.display(),
                secs,
                if *found == crate::cache::Found::Hit {
                    ", cached"
                } else {
                    ""
                }
            ),
            Err(e) => println!(
                "    fixture {} could not be made ({secs:.0} s): {e:#}",
                f.name()
            ),
        }
        self.times.lock().expect("not poisoned").push(FixtureTime {
            name: f.name(),
            secs,
            cached: matches!(made, Ok((_, crate::cache::Found::Hit))),
        });
        let r = made
            .map(|(p, _)| p)
            .map_err(|e| format!("fixture {}: {e:#}", f.name()));
        guard.finished = true;
        self.finish(f, r.clone());
        r.map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// What a scenario works with.
pub struct Ctx<'a> {
    /// The shared artifacts.
    pub art: &'a Artifacts,
    /// This scenario's directory (disks, logs).
    pub dir: PathBuf,
    boots: usize,
    /// Copy the console to the terminal.
    pub echo: bool,
    /// Virtual CPUs per VM (1 when scenarios run side by side).
    pub cpus: u32,
    /// How long one VM may run before the harness kills it.
    pub vm_limit: Duration,
    fixtures: Option<&'a Fixtures>,
}

impl<'a> Ctx<'a> {
    /// A context for scenario `name`.
    pub fn new(art: &'a Artifacts, name: &str, echo: bool, cpus: u32) -> anyhow::Result<Ctx<'a>> {
        Ctx::at(art, &art.work.join("scenarios").join(name), echo, cpus)
    }

    /// A context working in `dir` (emptied first).
    pub fn at(art: &'a Artifacts, dir: &Path, echo: bool, cpus: u32) -> anyhow::Result<Ctx<'a>> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        Ok(Ctx {
            art,
            dir: dir.to_path_buf(),
            boots: 0,
            echo,
            cpus,
            vm_limit: Duration::from_secs(400),
            fixtures: None,
        })
    }

    /// The fixture `f`'s path (a disk image: boot an overlay of it, never the image itself).
    pub fn fixture(&self, f: Fixture) -> anyhow::Result<PathBuf> {
        match self.fixtures {
            Some(fx) => fx.get(f, self.art, self.echo, self.cpus),
            None => Fixtures::default().get(f, self.art, self.echo, self.cpus),
        }
    }

    /// A fresh copy (overlay) of fixture `f` (a disk image).
    pub fn fixture_copy(&self, f: Fixture, name: &str) -> anyhow::Result<PathBuf> {
        let base = self.fixture(f)?;
        let p = self.dir.join(format!("{name}.qcow2"));
        disk::overlay(&base, &p)?;
        Ok(p)
    }

    /// A fresh copy (overlay) of the golden disk.
    pub fn golden_copy(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.dir.join(format!("{name}.qcow2"));
        disk::overlay(&self.art.golden, &p)?;
        Ok(p)
    }

    /// A disk with the same partitions as the golden one, but no pool.
    pub fn blank_disk(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.dir.join(format!("{name}.img"));
        disk::gpt_disk(&p, 512)?;
        Ok(p)
    }

    /// Powers `disk` on through OVMF (UEFI firmware, this scenario's own variable store) and
    /// the GRUB on its ESP.
    pub fn uefi(&mut self, disk: &Path) -> anyhow::Result<Vm> {
        self.uefi_disks(&[disk])
    }

    /// [`Ctx::uefi`] with more disks after the first (`/dev/vdb`, … in this order).
    pub fn uefi_disks(&mut self, disks: &[&Path]) -> anyhow::Result<Vm> {
        let vars = self.dir.join("OVMF_VARS.fd");
        if !vars.exists() {
            std::fs::copy(crate::qemu::OVMF_VARS, &vars)?;
        }
        self.start(Boot::Uefi { vars }, disks)
    }

    /// Forgets the UEFI variables (boot entries) earlier boots left, as a new machine would.
    pub fn new_firmware(&self) -> anyhow::Result<()> {
        let vars = self.dir.join("OVMF_VARS.fd");
        if vars.exists() {
            std::fs::remove_file(&vars)?;
        }
        Ok(())
    }

    /// Powers `disk` on through SeaBIOS and the grub-pc in its MBR and BIOS boot partition.
    pub fn bios(&mut self, disk: &Path) -> anyhow::Result<Vm> {
        self.firmware(disk, Boot::Bios)
    }

    /// [`Ctx::bios`] with more disks after the first.
    pub fn bios_disks(&mut self, disks: &[&Path]) -> anyhow::Result<Vm> {
        self.start(Boot::Bios, disks)
    }

    fn firmware(&mut self, disk: &Path, boot: Boot) -> anyhow::Result<Vm> {
        self.start(boot, &[disk])
    }

    /// Starts this scenario's next VM (its console in `boot-<n>.log`).
    fn start(&mut self, boot: Boot, disks: &[&Path]) -> anyhow::Result<Vm> {
        self.boots += 1;
        let cfg = VmConfig {
            boot,
            disks: disks.iter().map(|d| d.to_path_buf()).collect(),
            log: self.dir.join(format!("boot-{}.log", self.boots)),
            memory_mb: 1024,
            cpus: self.cpus,
            limit: self.vm_limit,
            echo: self.echo,
            accel: self.art.accel.clone(),
        };
        Vm::start(&cfg)
    }

    /// Boots the kernel and bootenv's initramfs directly on `disk`, with `cmdline` (any bytes)
    /// after the base command line.
    pub fn boot_bytes(&mut self, disk: &Path, cmdline: &[u8]) -> anyhow::Result<Vm> {
        let mut append = BASE_CMDLINE.as_bytes().to_vec();
        append.push(b' ');
        append.extend_from_slice(cmdline);
        let boot = Boot::Direct {
            kernel: self.art.kernel.vmlinuz.clone(),
            initrd: self.art.initrd.clone(),
            append,
        };
        self.start(boot, &[disk])
    }

    /// Boots the kernel and bootenv's initramfs directly on `disk`, with `cmdline` after
    /// the base command line.
    pub fn boot(&mut self, disk: &Path, cmdline: &str) -> anyhow::Result<Vm> {
        self.boot_disks(&[disk], cmdline)
    }

    /// Like [`Ctx::boot`], with several disks (`/dev/vda`, `/dev/vdb`, … in this order).
    pub fn boot_disks(&mut self, disks: &[&Path], cmdline: &str) -> anyhow::Result<Vm> {
        let append = format!("{BASE_CMDLINE} {cmdline}")
            .trim()
            .as_bytes()
            .to_vec();
        let boot = Boot::Direct {
            kernel: self.art.kernel.vmlinuz.clone(),
            initrd: self.art.initrd.clone(),
            append,
        };
        self.start(boot, disks)
    }
}

/// Every scenario, family by family.
pub fn all() -> Vec<Scenario> {
    let mut v = boot::scenarios();
    v.extend(grub::scenarios());
    v.extend(reset::scenarios());
    v.extend(cli::scenarios());
    v.extend(esp::scenarios());
    v.extend(deb::scenarios());
    v.extend(data::scenarios());
    v.extend(hardening::scenarios());
    v
}

/// Runs a shell command in the test BE that may take up to `secs`; returns its output.
pub(crate) fn run_long(vm: &mut Vm, cmd: &str, secs: u64) -> anyhow::Result<String> {
    run_ok(vm, cmd, Duration::from_secs(secs))
}

/// Runs a shell command in the test BE, waiting up to `limit` for it and then for the next
/// prompt; returns its exit status and its output.
fn run_status(vm: &mut Vm, cmd: &str, limit: Duration) -> anyhow::Result<(String, String)> {
    vm.send(&format!("run {cmd}\n"))?;
    let m = vm.expect(r"(?s)(.*?)BOOTENV-TEST done rc=(\d+)\s", limit)?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    Ok((m[2].clone(), m[1].clone()))
}

/// [`run_status`] for a command that must succeed.
fn run_ok(vm: &mut Vm, cmd: &str, limit: Duration) -> anyhow::Result<String> {
    let (rc, out) = run_status(vm, cmd, limit)?;
    ensure!(
        rc == "0",
        "`{cmd}` failed (status {rc}) in the test BE:\n{out}"
    );
    Ok(out)
}

/// The documented JSON schema (ARCHITECTURE.md, "JSON output").
fn json_spec() -> bootenv::verbs::schema::Spec {
    bootenv::verbs::schema::Spec::from_markdown(include_str!("../../../ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md documents the JSON output")
}

/// Runs `bootenv --json <args>` in the test BE; returns its exit status and its document,
/// checked against the documented schema.
fn bootenv_json(vm: &mut Vm, args: &str) -> anyhow::Result<(u32, serde_json::Value)> {
    run_json(vm, &format!("bootenv --json {args} 2>/dev/null"))
}

/// Runs a shell command in the test BE whose standard output is one bootenv JSON document
/// (`bootenv --json ...`, perhaps at the end of a pipe); returns its exit status and the
/// document, checked against the documented schema.
fn run_json(vm: &mut Vm, cmd: &str) -> anyhow::Result<(u32, serde_json::Value)> {
    let (rc, out) = run_status(vm, cmd, STEP)?;
    let (Some(a), Some(b)) = (out.find('{'), out.rfind('}')) else {
        anyhow::bail!("`{cmd}` printed no JSON document:\n{out}");
    };
    let doc: serde_json::Value = serde_json::from_str(&out[a..=b])
        .map_err(|e| anyhow::anyhow!("`{cmd}` printed no valid JSON ({e}):\n{out}"))?;
    json_spec()
        .check(&doc)
        .map_err(|e| anyhow::anyhow!("`{cmd}`: {e}\n{doc:#}"))?;
    Ok((rc.parse()?, doc))
}

/// [`bootenv_json`] for a verb that must succeed: its document.
fn done_json(vm: &mut Vm, args: &str) -> anyhow::Result<serde_json::Value> {
    let (rc, doc) = bootenv_json(vm, args)?;
    ensure!(
        rc == 0,
        "`bootenv --json {args}` failed (status {rc}): {doc:#}"
    );
    Ok(doc)
}

/// [`bootenv_json`] for a verb that must fail with the error kind `kind`: its message.
fn refused_json(vm: &mut Vm, args: &str, kind: &str) -> anyhow::Result<String> {
    let (rc, doc) = bootenv_json(vm, args)?;
    ensure!(
        rc != 0 && doc["error"]["kind"] == kind,
        "`bootenv --json {args}`: status {rc}, expected an error of kind {kind}: {doc:#}"
    );
    Ok(doc["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// BE `name`'s entry in a `bootenv list` document.
fn listed<'a>(list: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    list["boot_environments"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)
}

/// The fields of BE `name`'s row in `bootenv list` (name, label, flags, …).
fn list_row(out: &str, name: &str) -> Option<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|r| r.len() > 3 && r[0] == name)
}

/// Runs a command in the test BE that must fail; returns its output.
fn run_fails(vm: &mut Vm, cmd: &str) -> anyhow::Result<String> {
    run_fails_within(vm, cmd, STEP)
}

/// [`run_fails`] for a command that may take up to `limit`.
fn run_fails_within(vm: &mut Vm, cmd: &str, limit: Duration) -> anyhow::Result<String> {
    let (rc, out) = run_status(vm, cmd, limit)?;
    ensure!(
        rc != "0",
        "`{cmd}` succeeded but should have failed:\n{out}"
    );
    Ok(out)
}

/// Boots `be` directly (kernel and initramfs) with the test BE waiting for actions.
fn direct_ready(cx: &mut Ctx, disk: &Path, be: &str, extra: &str) -> anyhow::Result<Vm> {
    let mut vm = cx.boot(
        disk,
        &format!("bootenv={be} bootenv.pool=tank betest.interactive {extra}"),
    )?;
    expect_ready(&mut vm, be)?;
    Ok(vm)
}

/// Waits for GRUB's menu, then for the test BE `name` to start and wait for actions.
pub(crate) fn expect_ready(vm: &mut Vm, name: &str) -> anyhow::Result<()> {
    expect_ready_within(vm, name, BOOT)
}

/// [`expect_ready`] for a boot that may take up to `limit` (a pool of thousands of datasets).
pub(crate) fn expect_ready_within(vm: &mut Vm, name: &str, limit: Duration) -> anyhow::Result<()> {
    expect_be_within(vm, name, limit)?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    Ok(())
}

/// Runs a shell command in the test BE; returns its output. A nonzero status is an error.
pub(crate) fn run_in(vm: &mut Vm, cmd: &str) -> anyhow::Result<String> {
    run_ok(vm, cmd, STEP)
}

/// Powers the test BE off and checks that it went cleanly.
pub(crate) fn power_off(vm: &mut Vm) -> anyhow::Result<()> {
    vm.send("poweroff\n")?;
    vm.expect(r"BOOTENV-TEST be-done", STEP)?;
    vm.expect_poweroff(STEP)?;
    vm.refute("Kernel panic")
}

/// Boots `disk` through OVMF and GRUB and returns the VM once `name` waits for actions.
fn grub_boot(cx: &mut Ctx, disk: &Path, name: &str) -> anyhow::Result<Vm> {
    let mut vm = cx.uefi(disk)?;
    vm.expect(r"bootenv: loading ", BOOT)?;
    expect_ready(&mut vm, name)?;
    Ok(vm)
}

/// Waits for a test boot environment to start and returns nothing; fails when another starts.
fn expect_be(vm: &mut Vm, name: &str) -> anyhow::Result<()> {
    expect_be_within(vm, name, BOOT)
}

/// [`expect_be`] for a boot that may take up to `limit`.
fn expect_be_within(vm: &mut Vm, name: &str, limit: Duration) -> anyhow::Result<()> {
    let got = vm.expect(r"BOOTENV-TEST be-started name=(\S+)\s", limit)?;
    ensure!(
        got[1] == name,
        "boot environment {} started, expected {name}",
        got[1]
    );
    Ok(())
}

/// GRUB's one-byte keys that move the menu's highlight down and up (Ctrl-N, Ctrl-P), like the
/// arrow keys: an arrow's ESC [ B arrived split on a loaded host once, and a lone ESC sends
/// GRUB back a menu (grub-menu-pick tests the arrow itself).
pub(crate) const MENU_NEXT: &str = "\x0e";
pub(crate) const MENU_PREV: &str = "\x10";

/// Sets the GRUB menu's timeout (`org.bootenv:grub-timeout`) of the golden disk's pool and
/// rewrites the menu, in a running BE. The fixtures keep it at 1 s; a scenario that presses
/// keys in the menu lengthens it first, so that no key races the countdown (the first key
/// stops it), and shortens it again for the unattended boots after.
pub(crate) fn menu_timeout(vm: &mut Vm, secs: u32) -> anyhow::Result<()> {
    run_in(
        vm,
        // sync-boot's status is not the point (hardening's BEs are left out on purpose): the
        // menu it wrote is.
        &format!("zfs set org.bootenv:grub-timeout={secs} tank/ROOT && {{ bootenv sync-boot >/dev/null; true; }} && grep -qx 'set timeout={secs}' /run/bootenv/esp/bootenv/grub.cfg"),
    )?;
    Ok(())
}

/// Presses `key` in GRUB's menu, waits until the entry matching `highlighted` is highlighted,
/// and chooses it with Enter (after a moment for GRUB to finish redrawing).
fn choose_in_menu(vm: &mut Vm, key: &str, highlighted: &str) -> anyhow::Result<()> {
    vm.send(key)?;
    vm.expect(&format!(r"\*{highlighted}"), STEP)?;
    std::thread::sleep(Duration::from_millis(700));
    vm.send("\r")
}

/// Waits for the test BE to say it panics on purpose, and for the kernel panic to end the VM.
fn expect_panic(vm: &mut Vm) -> anyhow::Result<()> {
    vm.expect(r"BOOTENV-TEST panicking", STEP)?;
    let e = vm.wait(STEP)?;
    ensure!(
        e == crate::qemu::Exit::Panicked,
        "expected a kernel panic, got {}",
        crate::qemu::describe(e)
    );
    Ok(())
}

/// Waits for the test init to finish and the VM to power off cleanly.
fn expect_done(vm: &mut Vm, name: &str) -> anyhow::Result<()> {
    vm.expect(&format!("BOOTENV-TEST be-done name={name}"), STEP)?;
    vm.expect_poweroff(STEP)?;
    vm.refute("Kernel panic")
}

/// Outcome of one scenario.
pub struct Outcome {
    /// Scenario name.
    pub name: String,
    /// `None` when it passed, else the reason.
    pub failure: Option<String>,
    /// Wall time in seconds, without the time spent making a fixture.
    pub secs: f64,
    /// The lane it ran in.
    pub lane: usize,
}

/// What a run of scenarios did, for the time summary.
pub struct Report {
    /// Each scenario's outcome, in the order of [`all`].
    pub outcomes: Vec<Outcome>,
    /// The fixtures made or taken from the cache.
    pub fixtures: Vec<FixtureTime>,
    /// Each lane's busy time, seconds (scenarios and fixtures).
    pub lanes: Vec<f64>,
    /// Wall time of the whole run, seconds.
    pub secs: f64,
}

/// A guess for a scenario no earlier run timed: most take one to three minutes; the packaging
/// ones boot a whole Debian.
fn default_estimate(name: &str) -> f64 {
    if name.starts_with("deb-") || name.starts_with("data-") {
        600.0
    } else {
        120.0
    }
}

/// The durations the last runs recorded (`<cache>/scenario-seconds`: `name seconds` lines).
fn load_estimates(path: &Path) -> std::collections::HashMap<String, f64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (n, s) = l.split_once(' ')?;
            Some((n.to_owned(), s.trim().parse().ok()?))
        })
        .collect()
}

/// Records the durations of the scenarios that passed, keeping the others' earlier ones.
fn save_estimates(path: &Path, outcomes: &[Outcome]) {
    let mut all = load_estimates(path);
    for o in outcomes.iter().filter(|o| o.failure.is_none()) {
        all.insert(o.name.clone(), o.secs);
    }
    let mut lines: Vec<String> = all.iter().map(|(n, s)| format!("{n} {s:.1}")).collect();
    lines.sort();
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, lines.join("\n") + "\n").is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// The order in which lanes take scenarios: longest expected first (so that the lanes end
/// together), by the durations earlier runs recorded.
pub fn schedule<'s>(
    chosen: Vec<&'s Scenario>,
    estimates: &std::collections::HashMap<String, f64>,
) -> Vec<&'s Scenario> {
    let est = |s: &Scenario| {
        estimates
            .get(s.name)
            .copied()
            .unwrap_or_else(|| default_estimate(s.name))
    };
    let mut v = chosen;
    v.sort_by(|a, b| est(b).total_cmp(&est(a)));
    v
}

/// Runs the named scenarios (all when `names` is empty) in `jobs` lanes, printing PASS/FAIL
/// lines as they end; the outcomes come back in the scenarios' order. A lane takes the next
/// scenario in [`schedule`]'s order whose fixture is not being made by another lane. Side by
/// side, each VM gets one virtual CPU: a boot keeps one host core busy, so two VMs use two
/// cores better than one VM with two.
pub fn run(art: &Artifacts, names: &[String], echo: bool, jobs: usize) -> anyhow::Result<Report> {
    let scenarios = all();
    for n in names {
        if !scenarios.iter().any(|s| s.name == n) {
            bail!("no scenario named {n}; `cargo xtask vm-test --list` lists them");
        }
    }
    let chosen: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s.name))
        .collect();
    let times = art.cache.note("scenario-seconds");
    let order = schedule(chosen, &load_estimates(&times));
    let jobs = jobs.clamp(1, order.len().max(1));
    let cpus = if jobs > 1 { 1 } else { 2 };
    let fixtures = Fixtures::default();
    let taken = std::sync::Mutex::new(vec![false; order.len()]);
    let results = std::sync::Mutex::new(Vec::new());
    let lanes = std::sync::Mutex::new(vec![0.0f64; jobs]);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for lane in 0..jobs {
            let (order, fixtures, taken, results, lanes) =
                (&order, &fixtures, &taken, &results, &lanes);
            scope.spawn(move || loop {
                let pick = {
                    let mut t = taken.lock().expect("not poisoned");
                    // The first one not taken whose fixture this lane may use or make.
                    let free =
                        |i: usize| !t[i] && order[i].needs.is_none_or(|f| fixtures.try_claim(f));
                    match (0..order.len()).find(|&i| free(i)) {
                        Some(i) => {
                            t[i] = true;
                            Some(i)
                        }
                        None if t.iter().all(|x| *x) => None,
                        // Everything left waits for a fixture another lane is making.
                        None => {
                            drop(t);
                            std::thread::sleep(Duration::from_millis(500));
                            continue;
                        }
                    }
                };
                let Some(i) = pick else { break };
                let s = order[i];
                println!("--- {}: {}", s.name, s.about);
                let t = Instant::now();
                let mut fixture_secs = 0.0;
                let result = Ctx::new(art, s.name, echo, cpus).and_then(|mut cx| {
                    cx.fixtures = Some(fixtures);
                    if let Some(f) = s.needs {
                        let ft = Instant::now();
                        let made = cx.fixture(f);
                        fixture_secs = ft.elapsed().as_secs_f64();
                        made?;
                    }
                    // A scenario that panics fails; the run goes on.
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (s.run)(&mut cx)))
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the scenario panicked")))
                });
                let all_secs = t.elapsed().as_secs_f64();
                let secs = all_secs - fixture_secs;
                match &result {
                    Ok(()) => println!("PASS {} ({secs:.1} s)", s.name),
                    Err(e) => println!("FAIL {} ({secs:.1} s): {e:#}", s.name),
                }
                lanes.lock().expect("not poisoned")[lane] += all_secs;
                let o = Outcome {
                    name: s.name.into(),
                    failure: result.err().map(|e| format!("{e:#}")),
                    secs,
                    lane,
                };
                results.lock().expect("not poisoned").push(o);
            });
        }
    });
    let mut outcomes = results.into_inner().expect("not poisoned");
    save_estimates(&times, &outcomes);
    let pos = |n: &str| scenarios.iter().position(|s| s.name == n);
    outcomes.sort_by_key(|o| pos(&o.name));
    Ok(Report {
        outcomes,
        fixtures: fixtures.times.into_inner().expect("not poisoned"),
        lanes: lanes.into_inner().expect("not poisoned"),
        secs: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nop(_: &mut Ctx) -> anyhow::Result<()> {
        Ok(())
    }

    #[test]
    fn the_longest_scenarios_go_first_and_unknown_ones_by_their_family() {
        let mk = |name| Scenario::new(name, "", nop);
        let s = [mk("boot-a"), mk("deb-b"), mk("cli-c"), mk("esp-d")];
        let est: std::collections::HashMap<String, f64> =
            [("cli-c".to_string(), 900.0), ("boot-a".to_string(), 30.0)]
                .into_iter()
                .collect();
        let order: Vec<&str> = schedule(s.iter().collect(), &est)
            .iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(order, ["cli-c", "deb-b", "esp-d", "boot-a"]);
    }

    #[test]
    fn scenario_names_are_unique_and_every_scenario_has_a_family() {
        let names: Vec<&str> = all().iter().map(|s| s.name).collect();
        let set: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(set.len(), names.len(), "{names:?}");
        for n in names {
            let family = n.split('-').next().unwrap_or("");
            assert!(
                [
                    "boot",
                    "module",
                    "grub",
                    "grubenv",
                    "trial",
                    "reset",
                    "cli",
                    "esp",
                    "deb",
                    "data",
                    "hostile",
                    "cmdline",
                    "fat",
                    "concurrent"
                ]
                .contains(&family),
                "{n}"
            );
        }
    }

    #[test]
    fn one_lane_claims_a_fixture_and_the_others_pass_it_by_until_it_is_made() {
        let fx = Fixtures::default();
        let f = Fixture::DebianDisk;
        assert!(fx.try_claim(f), "the first lane claims it");
        assert!(!fx.try_claim(f), "another lane passes it by");
        // A builder that panics still ends the build, with the reason.
        {
            let _g = BuildGuard {
                fixtures: &fx,
                f,
                finished: false,
            };
        }
        assert!(fx.try_claim(f), "made (or failed): every lane may go on");
        let slots = fx.slots.lock().unwrap();
        assert!(matches!(slots.get(&f), Some(Slot::Done(Err(e))) if e.contains("panicked")));
    }

    #[test]
    fn estimates_round_trip_and_failures_do_not_overwrite_them() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("scenario-seconds");
        let o = |n: &str, s, f: bool| Outcome {
            name: n.into(),
            failure: f.then(|| "x".into()),
            secs: s,
            lane: 0,
        };
        save_estimates(&p, &[o("a", 10.0, false), o("b", 20.0, false)]);
        save_estimates(&p, &[o("a", 99.0, true), o("b", 25.0, false)]);
        let e = load_estimates(&p);
        assert_eq!(e.get("a"), Some(&10.0));
        assert_eq!(e.get("b"), Some(&25.0));
    }
}
