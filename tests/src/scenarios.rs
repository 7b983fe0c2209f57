//! The VM scenarios. Each boots the real Debian kernel with bootenv's initramfs on its own copy
//! of the golden disk (real ZFS), asserts ordered markers on the serial console and the way the
//! VM ends. The names are a contract: issues and CI refer to them.

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
}

impl<'a> Ctx<'a> {
    /// A context for scenario `name`.
    pub fn new(art: &'a Artifacts, name: &str, echo: bool, cpus: u32) -> anyhow::Result<Ctx<'a>> {
        let dir = art.work.join("scenarios").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Ctx {
            art,
            dir,
            boots: 0,
            echo,
            cpus,
            vm_limit: Duration::from_secs(400),
        })
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
        let vars = self.dir.join("OVMF_VARS.fd");
        if !vars.exists() {
            std::fs::copy(crate::qemu::OVMF_VARS, &vars)?;
        }
        self.firmware(disk, Boot::Uefi { vars })
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

    fn firmware(&mut self, disk: &Path, boot: Boot) -> anyhow::Result<Vm> {
        self.boots += 1;
        let cfg = VmConfig {
            boot,
            disks: vec![disk.to_path_buf()],
            log: self.dir.join(format!("boot-{}.log", self.boots)),
            memory_mb: 1024,
            cpus: self.cpus,
            limit: self.vm_limit,
            echo: self.echo,
            accel: self.art.accel.clone(),
        };
        Vm::start(&cfg)
    }

    /// Boots the kernel and bootenv's initramfs directly on `disk`, with `cmdline` after
    /// the base command line.
    pub fn boot(&mut self, disk: &Path, cmdline: &str) -> anyhow::Result<Vm> {
        self.boot_disks(&[disk], cmdline)
    }

    /// Like [`Ctx::boot`], with several disks (`/dev/vda`, `/dev/vdb`, … in this order).
    pub fn boot_disks(&mut self, disks: &[&Path], cmdline: &str) -> anyhow::Result<Vm> {
        self.boots += 1;
        let append = format!("{BASE_CMDLINE} {cmdline}").trim().to_string();
        let cfg = VmConfig {
            boot: Boot::Direct {
                kernel: self.art.kernel.vmlinuz.clone(),
                initrd: self.art.initrd.clone(),
                append,
            },
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
}

/// Every scenario, in the order `vm-test` runs them.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "boot-default",
            about: "no bootenv= on the command line: the pool's default boots (found by scanning the disks)",
            run: boot_default,
        },
        Scenario {
            name: "boot-select",
            about: "three BEs; bootenv=v2 boots exactly v2, its config, and mounts nothing else",
            run: boot_select,
        },
        Scenario {
            name: "boot-config-mounted",
            about: "the BE's config dataset is mounted writable at /etc/config; a write survives a reboot",
            run: boot_config_mounted,
        },
        Scenario {
            name: "boot-unknown-falls-back",
            about: "bootenv=nosuch: the default boots and can tell that a fallback happened and why",
            run: boot_unknown_falls_back,
        },
        Scenario {
            name: "boot-missing-pool-rescue",
            about: "a disk without the pool: the rescue shell starts naming the missing pool",
            run: boot_missing_pool_rescue,
        },
        Scenario {
            name: "grub-menu-pick",
            about: "OVMF+GRUB: the menu lists every BE; down-arrow and Enter boot the next one; then the default again",
            run: grub_menu_pick,
        },
        Scenario {
            name: "grub-next-once",
            about: "bootenv activate --once v3: the next boot is v3, the one after is the default",
            run: grub_next_once,
        },
        Scenario {
            name: "trial-commit",
            about: "a trial BE boots, marks itself good, and is the default from then on",
            run: trial_commit,
        },
        Scenario {
            name: "trial-panic-rollback",
            about: "a trial BE whose boot panics the kernel: after its tries GRUB boots the known-good BE, which reports it",
            run: trial_panic_rollback,
        },
        Scenario {
            name: "trial-init-fail-rollback",
            about: "a trial BE whose init reboots without marking good: the same rollback",
            run: trial_init_fail_rollback,
        },
        Scenario {
            name: "grubenv-torn-recovers",
            about: "a truncated, then a garbage grubenv: the known-good BE boots; the next write repairs the block",
            run: grubenv_torn_recovers,
        },
        Scenario {
            name: "grub-bios-boot",
            about: "SeaBIOS and grub-pc boot the same disk, a chosen BE included",
            run: grub_bios_boot,
        },
        Scenario {
            name: "reset-config",
            about: "a changed config and a reset request: the config is factory again, the old one kept, data unchanged",
            run: reset_config,
        },
        Scenario {
            name: "reset-full",
            about: "a full reset: config and the data datasets back to factory (or empty), the previous data kept as snapshots",
            run: reset_full,
        },
        Scenario {
            name: "reset-erase",
            about: "a full reset with erase: the previous data is gone, and nothing else is",
            run: reset_erase,
        },
        Scenario {
            name: "reset-powercut-resumes",
            about: "power cut at two points inside a full reset: the next boot ends where an uninterrupted reset ends",
            run: reset_powercut_resumes,
        },
        Scenario {
            name: "reset-per-version-defaults",
            about: "two BEs with different factory defaults: each resets to its own",
            run: reset_per_version_defaults,
        },
        Scenario {
            name: "reset-from-grub-menu",
            about: "the reset chosen with keys in GRUB's advanced menu",
            run: reset_from_grub_menu,
        },
        Scenario {
            name: "cli-create-activate",
            about: "bootenv create --from, then activate: GRUB boots the new BE",
            run: cli_create_activate,
        },
        Scenario {
            name: "cli-upgrade-trial",
            about: "an upgrade whose command changes files boots as a trial; the old BE keeps the old files",
            run: cli_upgrade_trial,
        },
        Scenario {
            name: "cli-upgrade-fails-cleanly",
            about: "an upgrade whose command fails: the running BE is unchanged, nothing half-made is left",
            run: cli_upgrade_fails_cleanly,
        },
        Scenario {
            name: "cli-rollback-walk",
            about: "three upgrades, two rollbacks, one roll forward: each boot is the expected version",
            run: cli_rollback_walk,
        },
        Scenario {
            name: "cli-mount-readonly",
            about: "an old version's files (and a snapshot's) read without booting it; writes refused; diff",
            run: cli_mount_readonly,
        },
        Scenario {
            name: "cli-destroy-safety",
            about: "destroy refuses the running, default, trial, last known-good and depended-on BEs; --dry-run is exact",
            run: cli_destroy_safety,
        },
        Scenario {
            name: "esp-powercut-after-write",
            about: "power cut right after create and activate wrote the ESP: fsck.fat finds no damaged file and GRUB boots the activated BE",
            run: esp_powercut_after_write,
        },
        Scenario {
            name: "esp-shared-kernels",
            about: "23 BEs of one kernel fit a 256 MiB ESP that holds 15 kernel copies: one shared copy, ESP usage flat; GRUB boots the newest; a kernel directory of ESP format 1 boots and stays while its BE boots that kernel",
            run: esp_shared_kernels,
        },
        Scenario {
            name: "cli-export-import",
            about: "a BE exported to a file (and one through a pipe), imported into a fresh pool on another disk, boots from it",
            run: cli_export_import,
        },
        Scenario {
            name: "cli-install",
            about: "a blank disk laid out by bootenv install from a tarball boots through GRUB, under UEFI and BIOS",
            run: cli_install,
        },
        Scenario {
            name: "deb-install-boot",
            about: "Debian bookworm in a BE of a new disk; bootenv, bootenv-grub and the kernel package installed with dpkg; it boots through GRUB and initramfs-tools to systemd and is marked good",
            run: deb_install_boot,
        },
        Scenario {
            name: "deb-upgrade-rollback",
            about: "in the Debian BE, bootenv upgrade installs a newer bootenv package in a new BE whose trial boots and commits; an upgrade without ZFS in its initramfs fails cleanly; an upgrade whose health check fails rolls back by itself",
            run: deb_upgrade_rollback,
        },
    ]
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

/// The packaging scenarios' files: the packages, and the test reporter for Debian BEs.
fn payload_tar(cx: &Ctx) -> anyhow::Result<(PathBuf, PathBuf)> {
    let pk = cx.art.packages.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "the Debian packages were not prepared (xtask prepares them for deb-* scenarios)"
        )
    })?;
    let dir = cx.dir.join("payload");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("debs"))?;
    std::fs::create_dir_all(dir.join("betest"))?;
    for d in pk.debs.iter().chain([&pk.newer]) {
        let sub = if d == &pk.newer { "newer" } else { "debs" };
        std::fs::create_dir_all(dir.join(sub))?;
        std::fs::copy(d, dir.join(sub).join(d.file_name().expect("a file")))?;
    }
    std::fs::write(dir.join("betest/betest-debian"), DEBIAN_REPORT)?;
    std::fs::write(dir.join("betest/betest-debian.service"), DEBIAN_REPORT_UNIT)?;
    std::fs::write(dir.join("betest/betest-health.service"), BROKEN_HEALTH_UNIT)?;
    let tar = cx.dir.join("payload.tar");
    crate::host::run(
        "tar",
        &[
            "-C",
            &dir.to_string_lossy(),
            "-cf",
            &tar.to_string_lossy(),
            ".",
        ],
    )?;
    Ok((tar, pk.debian.clone()))
}

const DEBIAN_REPORT: &str = include_str!("../guest/debian-report.sh");
const DEBIAN_REPORT_UNIT: &str = include_str!("../guest/betest-debian.service");
const BROKEN_HEALTH_UNIT: &str = include_str!("../guest/betest-health.service");

/// The trial deadline of the Debian test BEs (bootenv-trial-watchdog.timer's drop-in): long
/// enough for a good trial to reach mark-good under TCG, short enough to wait out a bad one.
const TRIAL_DEADLINE_SECS: u64 = 300;

/// The kernel command line of the Debian test BEs: the serial console, systemd's progress, and
/// a reboot 5 s after a panic (kernel or initramfs-tools), as an appliance would have.
const DEBIAN_CMDLINE: &str = "--cmdline 'console=ttyS0 systemd.show_status=1 panic=5'";

/// Makes a Debian BE `name` on a new pool `deb` on /dev/vdb from the Debian tree on /dev/vdc,
/// installs the packages from /dev/vdd in it with dpkg (in a chroot), and exports the pool.
/// Runs in the test BE v1. Its initramfs holds only the modules this VM needs
/// (`MODULES=list`, virtio), as an appliance's would: `MODULES=most` takes mkinitramfs over
/// ten minutes under TCG.
fn debian_be(vm: &mut Vm, cx: &Ctx, name: &str) -> anyhow::Result<()> {
    let out = run_long(vm, &format!("bootenv --pool deb install --disk /dev/vdb --from /dev/vdc --name {name} --label 12.0 --esp-mib 256 {DEBIAN_CMDLINE}"), 900)?;
    ensure!(out.contains("has no kernel yet"), "{out}");
    run_in(vm, "zpool import -N -o cachefile=none -d /dev deb")?;
    let d = format!("/run/bootenv/mnt/{name}");
    run_in(vm, &format!("bootenv --pool deb mount {name} --rw"))?;
    run_long(
        vm,
        &format!(
            "mkdir -p {d}/root/payload && tar -xf /dev/vdd -C {d}/root/payload \
&& cp {d}/root/payload/betest/betest-debian {d}/usr/local/sbin/betest-debian && chmod 755 {d}/usr/local/sbin/betest-debian \
&& cp {d}/root/payload/betest/betest-debian.service {d}/etc/systemd/system/ \
&& mkdir -p {d}/etc/systemd/system/multi-user.target.wants {d}/etc/bootenv-test \
&& ln -sf ../betest-debian.service {d}/etc/systemd/system/multi-user.target.wants/betest-debian.service \
&& ln -sf /dev/null {d}/etc/systemd/system/serial-getty@ttyS0.service \
&& echo {name} >{d}/etc/bootenv-test/name \
&& echo MODULES=list >{d}/etc/initramfs-tools/conf.d/bootenv-test \
&& mkdir -p {d}/etc/systemd/system/bootenv-trial-watchdog.timer.d \
&& printf '[Timer]\\nOnBootSec=\\nOnBootSec={TRIAL_DEADLINE_SECS}\\n' >{d}/etc/systemd/system/bootenv-trial-watchdog.timer.d/test.conf \
&& printf 'virtio_pci\\nvirtio_blk\\n' >>{d}/etc/initramfs-tools/modules \
&& mount --bind /dev {d}/dev && mount -t proc proc {d}/proc && mount -t sysfs sysfs {d}/sys"
        ),
        300,
    )?;
    let rel = &cx.art.kernel.release;
    let out = run_long(
        vm,
        &format!("chroot {d} /usr/bin/env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c 'dpkg -i /root/payload/debs/*.deb'"),
        1500,
    )?;
    ensure!(
        out.contains(&format!(
            "update-initramfs: Generating /boot/initrd.img-{rel}"
        )),
        "the kernel package did not make an initramfs:\n{out}"
    );
    ensure!(
        out.contains(&format!("{name}: kernel copied")),
        "bootenv's kernel hook did not copy the kernel to the ESP:\n{out}"
    );
    let out = run_long(vm, &format!("chroot {d} lsinitramfs /boot/initrd.img-{rel} | grep -E 'usr/sbin/(bootenv|zpool)$|scripts/bootenv$|conf.d/zz-bootenv$|/zfs.ko$'"), 300)?;
    for want in [
        "usr/sbin/bootenv",
        "usr/sbin/zpool",
        "scripts/bootenv",
        "conf.d/zz-bootenv",
        "zfs.ko",
    ] {
        ensure!(out.contains(want), "the initramfs lacks {want}:\n{out}");
    }
    let out = run_long(vm, &format!("chroot {d} sh -c 'mkdir -p /boot/grub && update-grub && grep -c bootenv= /boot/grub/grub.cfg'"), 600)?;
    ensure!(
        out.contains("Found linux image") || out.contains("done"),
        "update-grub:\n{out}"
    );
    run_in(vm, &format!("umount {d}/sys {d}/proc {d}/dev && bootenv --pool deb unmount {name} && zpool export deb"))?;
    Ok(())
}

/// Boots the Debian disk alone through OVMF and GRUB; returns once `name` waits for actions.
fn debian_boot(cx: &mut Ctx, disk: &Path, name: &str) -> anyhow::Result<Vm> {
    let mut vm = cx.uefi(disk)?;
    vm.expect(
        r"bootenv \S+ \(initramfs-tools\) starting",
        Duration::from_secs(300),
    )?;
    vm.expect(
        &format!(r"boot environment {name} is mounted at /root"),
        Duration::from_secs(120),
    )?;
    expect_be_within(&mut vm, name, Duration::from_secs(400))?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    Ok(vm)
}

/// A new disk with the Debian BE deb1 installed on it ([`debian_be`], from the test BE v1),
/// booted through GRUB into deb1 as a new machine would: the disk and the running VM.
fn installed_debian(cx: &mut Ctx) -> anyhow::Result<(PathBuf, Vm)> {
    let (payload, debian) = payload_tar(cx)?;
    let disk = cx.golden_copy("disk")?;
    let new = cx.dir.join("debian.img");
    disk::blank(&new, 4096)?;
    let mut vm = cx.boot_disks(
        &[&disk, &new, &debian, &payload],
        "bootenv=v1 bootenv.pool=tank betest.interactive",
    )?;
    expect_ready(&mut vm, "v1")?;
    debian_be(&mut vm, cx, "deb1")?;
    power_off(&mut vm)?;
    cx.new_firmware()?;
    let vm = debian_boot(cx, &new, "deb1")?;
    Ok((new, vm))
}

fn deb_install_boot(cx: &mut Ctx) -> anyhow::Result<()> {
    cx.vm_limit = Duration::from_secs(3000);
    let (_disk, mut vm) = installed_debian(cx)?;
    let text = vm.text();
    ensure!(
        text.contains("BOOTENV-TEST mark-good=active result=success"),
        "bootenv-mark-good.service did not run"
    );
    ensure!(
        text.contains("BOOTENV-TEST status booted: deb1 (deb/ROOT/deb1)"),
        "bootenv status does not report deb1"
    );
    ensure!(
        text.contains("BOOTENV-TEST status last known-good: deb1"),
        "bootenv status does not report deb1 as good"
    );
    let out = run_in(&mut vm, "dpkg-query -W bootenv bootenv-grub && systemctl is-enabled bootenv-mark-good.service bootenv-status.service bootenv-trial-watchdog.timer && bootenv list")?;
    ensure!(
        out.lines().filter(|l| l.trim() == "enabled").count() == 3
            && list_row(&out, "deb1").is_some_and(|r| r[2].contains('N') && r[2].contains('G')),
        "{out}"
    );
    debian_power_off(&mut vm)
}

fn deb_upgrade_rollback(cx: &mut Ctx) -> anyhow::Result<()> {
    cx.vm_limit = Duration::from_secs(3600);
    let (new, mut vm) = installed_debian(cx)?;
    // A newer build of bootenv, installed by dpkg in a new BE; its trigger rebuilds the new
    // BE's initramfs, which the kernel hook copies to the ESP.
    let out = run_long(
        &mut vm,
        "bootenv upgrade deb2 -- sh -c 'echo deb2 >/etc/bootenv-test/name && dpkg -i /root/payload/newer/bootenv_*.deb'",
        1500,
    )?;
    ensure!(out.contains("deb2 is on trial"), "{out}");
    ensure!(
        out.contains("update-initramfs: Generating"),
        "the newer package's trigger did not rebuild deb2's initramfs:\n{out}"
    );
    ensure!(
        !out.contains("could not copy the kernels") && out.contains("deb1: left as it is"),
        "the kernel hook inside the upgrade's chroot did not sync cleanly:\n{out}"
    );
    let out = run_in(&mut vm, "dpkg-query -W -f='${Version}\\n' bootenv")?;
    ensure!(
        out.contains(&format!("{}-1", env!("CARGO_PKG_VERSION"))),
        "the running BE changed: {out}"
    );
    debian_power_off(&mut vm)?;
    let mut vm = debian_boot(cx, &new, "deb2")?;
    let text = vm.text();
    ensure!(
        text.contains("bootenv.trial="),
        "deb2 did not boot as a trial"
    );
    ensure!(
        text.contains("BOOTENV-TEST mark-good=active result=success"),
        "bootenv-mark-good.service did not run in deb2"
    );
    let out = run_in(
        &mut vm,
        "dpkg-query -W -f='${Version}\\n' bootenv; bootenv status; systemctl is-active bootenv-trial-watchdog.timer || true",
    )?;
    ensure!(
        out.contains(&format!("{}-2", env!("CARGO_PKG_VERSION"))),
        "deb2 does not run the newer package: {out}"
    );
    ensure!(
        out.contains("last known-good: deb2")
            && out.contains("trial: this boot was a trial, and it is committed"),
        "deb2's trial was not committed: {out}"
    );
    // An upgrade whose initramfs could not load ZFS fails at upgrade time, not at boot.
    let out = run_fails_within(
        &mut vm,
        "bootenv upgrade deb3 -- sh -c 'find /lib/modules -name zfs.ko -delete && depmod -a $(ls /lib/modules) && update-initramfs -u'",
        Duration::from_secs(900),
    )?;
    ensure!(
        out.contains("has no zfs module"),
        "the initramfs hook did not refuse a kernel without ZFS: {out}"
    );
    let out = run_in(&mut vm, "bootenv list; modinfo -F filename zfs")?;
    ensure!(
        list_row(&out, "deb3").is_none() && out.contains("zfs.ko"),
        "the failed upgrade left something behind: {out}"
    );
    // An upgrade that boots but whose health check fails: the trial is never marked good, the
    // watchdog reboots, GRUB has no tries left and boots the known-good deb2.
    let out = run_long(
        &mut vm,
        "bootenv upgrade deb3 --tries 1 -- sh -c 'echo deb3 >/etc/bootenv-test/name && cp /root/payload/betest/betest-health.service /etc/systemd/system/ && systemctl enable betest-health.service'",
        1500,
    )?;
    ensure!(out.contains("deb3 is on trial"), "{out}");
    debian_power_off(&mut vm)?;
    let mut vm = cx.uefi(&new)?;
    expect_be_within(&mut vm, "deb3", Duration::from_secs(700))?;
    vm.expect(r"BOOTENV-TEST mark-good=inactive", STEP)?;
    vm.expect(
        r"this trial boot was not marked good in time",
        Duration::from_secs(TRIAL_DEADLINE_SECS + 300),
    )?;
    vm.expect_poweroff(Duration::from_secs(300))?;
    let mut vm = debian_boot(cx, &new, "deb2")?;
    let text = vm.text();
    ensure!(
        text.contains("bootenv.rollback=deb3"),
        "GRUB did not fall back with the rollback marker"
    );
    ensure!(
        text.contains("BOOTENV-TEST status ROLLBACK: the trial of deb3 used up its tries"),
        "deb2 does not report the rollback"
    );
    let out = run_in(&mut vm, "bootenv list")?;
    ensure!(
        list_row(&out, "deb3").is_some_and(|r| r[2].contains('F')),
        "deb3 is not marked failed: {out}"
    );
    debian_power_off(&mut vm)
}

/// Powers a Debian test BE off: systemd's shutdown of a full system takes longer under TCG
/// than the test BEs' `poweroff -f`, and longer still on a loaded host.
fn debian_power_off(vm: &mut Vm) -> anyhow::Result<()> {
    vm.send("poweroff\n")?;
    vm.expect(r"BOOTENV-TEST be-done", STEP)?;
    vm.expect_poweroff(Duration::from_secs(300))?;
    vm.refute("Kernel panic")
}

/// The fields of BE `name`'s row in `bootenv list` (name, label, flags, …).
fn list_row(out: &str, name: &str) -> Option<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|r| r.len() > 3 && r[0] == name)
}

/// Copies the running test BE (root and config) to `dir` as BE `name`, labelled `label`.
fn copy_running_be(dir: &str, name: &str, label: &str) -> String {
    format!(
        "rm -rf {dir} && mkdir -p {dir} && for d in /*; do case $d in /proc|/sys|/dev|/run|/tmp|/mnt|/srv) mkdir -p {dir}$d;; \
*) cp -a $d {dir}/ || exit 1;; esac; done \
&& echo {name} >{dir}/etc/bootenv-test/name && echo {label} >{dir}/etc/bootenv-test/label"
    )
}

/// The kernel command line `bootenv install` gives the test systems it lays out.
const INSTALL_CMDLINE: &str = "--esp-mib 256 --cmdline 'console=ttyS0 quiet betest.interactive'";

fn cli_install(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let blank = cx.dir.join("new.img");
    disk::blank(&blank, 1024)?;
    let mut vm = cx.boot_disks(
        &[&disk, &blank],
        "bootenv=v1 bootenv.pool=tank betest.interactive",
    )?;
    expect_ready(&mut vm, "v1")?;
    // A root file system tarball, as a vendor would ship it.
    run_in(
        &mut vm,
        &format!(
            "{} && tar -C /run/r -cf /run/r.tar . && rm -rf /run/r",
            copy_running_be("/run/r", "n1", "9.0")
        ),
    )?;
    // The running system's disk is refused; so is a used disk without --force.
    let out = run_fails(
        &mut vm,
        "bootenv --pool fresh install --disk /dev/vda --from /run/r.tar --force",
    )?;
    ensure!(
        out.contains("in use"),
        "installing over the running system's disk: {out}"
    );
    let out = run_in(&mut vm, &format!("bootenv --pool fresh install --disk /dev/vdb --from /run/r.tar --name n1 --label 9.0 {INSTALL_CMDLINE}"))?;
    ensure!(out.contains("installed"), "{out}");
    let out = run_fails(
        &mut vm,
        "bootenv --pool other install --disk /dev/vdb --from /run/r.tar",
    )?;
    ensure!(
        out.contains("--force"),
        "a second install over a used disk: {out}"
    );
    power_off(&mut vm)?;
    // The new disk alone, on a new machine: UEFI, then BIOS.
    cx.new_firmware()?;
    let mut vm = grub_boot(cx, &blank, "n1")?;
    ensure!(
        vm.text().contains("BOOTENV-TEST config=version=v1;"),
        "n1 does not carry the installed config"
    );
    let out = run_in(
        &mut vm,
        "bootenv list; zfs list -H -t all -o name -r fresh; cat /proc/cmdline",
    )?;
    ensure!(
        list_row(&out, "n1")
            .is_some_and(|r| r[1] == "9.0" && ["N", "R", "G"].iter().all(|f| r[2].contains(f))),
        "{out}"
    );
    ensure!(
        out.contains("fresh/ROOT/n1@factory") && out.contains("fresh/ROOT/n1/config@factory"),
        "no factory snapshot: {out}"
    );
    ensure!(
        out.contains("bootenv.pool=fresh") && !out.contains("bootenv.trial"),
        "{out}"
    );
    let out = run_in(&mut vm, "bootenv status")?;
    ensure!(out.contains("default=n1"), "{out}");
    power_off(&mut vm)?;
    let mut vm = cx.bios(&blank)?;
    vm.expect(r"bootenv: loading ", BOOT)?;
    expect_ready(&mut vm, "n1")?;
    power_off(&mut vm)
}

fn cli_export_import(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let other = cx.dir.join("other.img");
    disk::blank(&other, 1024)?;
    let mut vm = cx.boot_disks(
        &[&disk, &other],
        "bootenv=v1 bootenv.pool=tank betest.interactive",
    )?;
    expect_ready(&mut vm, "v1")?;
    // A machine to recover onto: a fresh pool with one BE of its own.
    run_in(&mut vm, &copy_running_be("/run/r", "base", "0.1"))?;
    run_in(&mut vm, &format!("bootenv --pool fresh install --disk /dev/vdb --from /run/r --name base --label 0.1 {INSTALL_CMDLINE} && rm -rf /run/r"))?;
    run_in(&mut vm, "zpool import -N -o cachefile=none -d /dev fresh")?;
    // One BE through a file, one through a pipe.
    let out = run_in(
        &mut vm,
        "bootenv export v2 /run/v2.stream && ls -l /run/v2.stream",
    )?;
    ensure!(out.contains("exported v2"), "{out}");
    let out = run_in(&mut vm, "bootenv --pool fresh import /run/v2.stream")?;
    ensure!(
        out.contains("imported v2") && out.contains("fresh/ROOT/v2"),
        "{out}"
    );
    let out = run_in(
        &mut vm,
        "bootenv export v3 - | bootenv --pool fresh import - --name v3copy",
    )?;
    ensure!(out.contains("imported v3copy"), "{out}");
    let out = run_fails(&mut vm, "bootenv --pool fresh import /run/v2.stream")?;
    ensure!(out.contains("--name"), "importing v2 twice: {out}");
    run_in(&mut vm, "bootenv --pool fresh activate v2")?;
    let out = run_in(&mut vm, "bootenv --pool fresh list")?;
    ensure!(
        ["base ", "v2 ", "v3copy "]
            .iter()
            .all(|b| out.lines().any(|l| l.starts_with(b))),
        "{out}"
    );
    // The source pool is as it was, apart from the export snapshots.
    let out = run_in(&mut vm, "bootenv list && zpool export fresh")?;
    ensure!(
        out.lines().any(|l| l.starts_with("v2 ")) && !out.contains("v3copy"),
        "{out}"
    );
    power_off(&mut vm)?;
    cx.new_firmware()?;
    let mut vm = grub_boot(cx, &other, "v2")?;
    ensure!(
        vm.text().contains("BOOTENV-TEST config=version=v2;"),
        "v2 does not carry its config"
    );
    let out = run_in(&mut vm, "cat /proc/cmdline; bootenv list")?;
    ensure!(out.contains("bootenv.pool=fresh"), "{out}");
    ensure!(
        list_row(&out, "v2").is_some_and(|r| r[2].contains('N') && r[2].contains('R')),
        "{out}"
    );
    power_off(&mut vm)
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

/// The command an upgrade runs in the new BE: it becomes test BE `name`.
fn becomes(name: &str) -> String {
    format!("sh -c 'echo {name} >/etc/bootenv-test/name && echo {name}.0 >/etc/bootenv-test/label && echo {name} >/etc/upgraded-to'")
}

fn cli_create_activate(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    let out = run_in(&mut vm, "bootenv create v4 --from v2 --label 4.0")?;
    ensure!(out.contains("created boot environment v4"), "{out}");
    // Give the clone its own identity, through a writable mount of it.
    run_in(
        &mut vm,
        "d=$(bootenv mount v4 --rw) && echo v4 >$d/etc/bootenv-test/name && bootenv unmount v4",
    )?;
    let out = run_in(&mut vm, "bootenv list")?;
    ensure!(
        out.lines()
            .any(|l| l.starts_with("v4 ") && l.contains("4.0") && l.contains("v2@bootenv-")),
        "{out}"
    );
    run_in(&mut vm, "bootenv activate v4")?;
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v4")?;
    // The clone of v2 has v2's config.
    ensure!(
        vm.text().contains("BOOTENV-TEST config=version=v2;"),
        "v4 does not carry v2's config"
    );
    let out = run_in(&mut vm, "bootenv list --json")?;
    ensure!(
        out.contains("\"name\": \"v4\"") && out.contains("\"running\": true"),
        "{out}"
    );
    power_off(&mut vm)
}

fn cli_upgrade_trial(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    run_in(&mut vm, "echo carried=1 >>/etc/config/app.conf")?;
    let out = run_in(
        &mut vm,
        &format!("cd /root && bootenv upgrade v4 -- {}", becomes("v4")),
    )?;
    ensure!(out.contains("v4 is on trial"), "{out}");
    run_in(
        &mut vm,
        "test ! -e /etc/upgraded-to && grep -q v1 /etc/bootenv-test/name",
    )?;
    power_off(&mut vm)?;
    let mut vm = cx.uefi(&disk)?;
    expect_be(&mut vm, "v4")?;
    vm.expect(r"BOOTENV-TEST cmdline=[^\r\n]*bootenv\.trial=2", STEP)?;
    vm.expect(
        r"BOOTENV-TEST config=version=v1;greeting=factory default of 1\.0;carried=1;",
        STEP,
    )?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    run_in(&mut vm, "test \"$(cat /etc/upgraded-to)\" = v4")?;
    // The old BE still holds the old files.
    let out = run_in(
        &mut vm,
        "d=$(bootenv mount v1) && cat $d/etc/bootenv-test/name && ls $d/etc; bootenv unmount v1",
    )?;
    ensure!(out.contains("v1") && !out.contains("upgraded-to"), "{out}");
    run_in(&mut vm, "bootenv mark-good")?;
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v4")?;
    let out = run_in(&mut vm, "cat /proc/cmdline")?;
    ensure!(!out.contains("bootenv.trial"), "{out}");
    power_off(&mut vm)
}

fn cli_upgrade_fails_cleanly(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    let before = run_in(
        &mut vm,
        "zfs list -H -t all -o name -r tank | grep -v '@bootenv-export' | sort",
    )?;
    let out = run_fails(
        &mut vm,
        "bootenv upgrade v4 -- sh -c 'echo half >/etc/half; exit 3'",
    )?;
    ensure!(
        out.contains("the running boot environment is unchanged"),
        "{out}"
    );
    let after = run_in(
        &mut vm,
        "zfs list -H -t all -o name -r tank | grep -v '@bootenv-export' | sort",
    )?;
    let strip = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("tank"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    ensure!(
        strip(&before) == strip(&after),
        "the pool changed:\nbefore {before}\nafter {after}"
    );
    run_in(&mut vm, "test ! -e /etc/half")?;
    let out = run_in(&mut vm, "bootenv status")?;
    ensure!(out.contains("grub: default=v1 next=- trial=-"), "{out}");
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    power_off(&mut vm)
}

fn cli_rollback_walk(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    for (from, to) in [("v1", "v4"), ("v4", "v5"), ("v5", "v6")] {
        let _ = from;
        run_in(&mut vm, &format!("bootenv upgrade {to} -- {}", becomes(to)))?;
        power_off(&mut vm)?;
        vm = grub_boot(cx, &disk, to)?;
        run_in(&mut vm, "bootenv mark-good")?;
    }
    for (verb, want) in [
        ("rollback", "v5"),
        ("rollback", "v4"),
        ("rollforward", "v5"),
    ] {
        let out = run_in(&mut vm, &format!("bootenv {verb}"))?;
        ensure!(out.contains(&format!("-> {want}")), "{verb}: {out}");
        power_off(&mut vm)?;
        vm = grub_boot(cx, &disk, want)?;
    }
    power_off(&mut vm)
}

fn cli_mount_readonly(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    let out = run_in(&mut vm, "d=$(bootenv mount v2) && echo dir=$d && cat $d/etc/bootenv-test/name $d/etc/config/app.conf")?;
    ensure!(
        out.contains("dir=/run/bootenv/mnt/v2") && out.contains("version=v2"),
        "{out}"
    );
    let out = run_fails(
        &mut vm,
        "touch /run/bootenv/mnt/v2/written && echo write-went-through",
    )?;
    ensure!(
        !out.lines().any(|l| l.trim() == "write-went-through") && out.contains("Read-only"),
        "{out}"
    );
    run_fails(&mut vm, "echo x >>/run/bootenv/mnt/v2/etc/config/app.conf")?;
    run_in(&mut vm, "bootenv unmount v2")?;
    run_in(&mut vm, "! grep -q /run/bootenv/mnt/v2 /proc/mounts")?;
    // A snapshot: the factory state of v3, at a directory of our choice.
    let out = run_in(&mut vm, "mkdir -p /tmp/f && bootenv mount v3@factory /tmp/f && cat /tmp/f/etc/config/app.conf && bootenv unmount /tmp/f")?;
    ensure!(out.contains("version=v3"), "{out}");
    run_fails(&mut vm, "bootenv mount v3@factory --rw")?;
    let out = run_in(&mut vm, "bootenv diff v1 v2")?;
    ensure!(
        out.contains("M /etc/bootenv-test/name") && out.contains("M /etc/config/app.conf"),
        "{out}"
    );
    power_off(&mut vm)
}

fn esp_powercut_after_write(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    // A new kernel directory (v4's initramfs gets zero padding, which the kernel skips, so that
    // it is a kernel of its own), the menu and the block replaced on the ESP; the power goes the
    // moment the command returns, long before Linux writes dirty inodes back on its own (30 s).
    run_in(
        &mut vm,
        "bootenv create v4 --from v1 && d=$(bootenv mount v4 --rw) && echo v4 >$d/etc/bootenv-test/name \
&& head -c 4096 /dev/zero >>$d/boot/initrd.img && bootenv unmount v4 && bootenv sync-boot v4 | grep 'v4: kernel copied' \
&& bootenv activate v4",
    )?;
    vm.kill();
    let damage = disk::esp_damage(&disk, &cx.dir)?;
    ensure!(
        damage.is_empty(),
        "the power cut left damaged files on the ESP: {}",
        damage.join("; ")
    );
    let mut vm = grub_boot(cx, &disk, "v4")?;
    // Again on an ESP the system mounted at /boot/efi without dirsync, as an fstab line does:
    // the order of bootenv's own syncs must suffice.
    run_in(
        &mut vm,
        "umount /run/bootenv/esp 2>/dev/null; mkdir -p /boot/efi && mount -t vfat -o noatime /dev/vda1 /boot/efi \
&& ! grep ' /boot/efi ' /proc/mounts | grep -q dirsync \
&& bootenv create v5 --from v2 && d=$(bootenv mount v5 --rw) && echo v5 >$d/etc/bootenv-test/name \
&& bootenv unmount v5 && bootenv activate v5 && ls /boot/efi/bootenv/v5 && ! grep -q ' /run/bootenv/esp ' /proc/mounts",
    )?;
    vm.kill();
    let damage = disk::esp_damage(&disk, &cx.dir)?;
    ensure!(
        damage.is_empty(),
        "the power cut left damaged files on the ESP mounted without dirsync: {}",
        damage.join("; ")
    );
    let mut vm = grub_boot(cx, &disk, "v5")?;
    power_off(&mut vm)
}

/// How many BEs `esp-shared-kernels` adds to the golden disk's three.
const SHARED_BES: usize = 20;

fn esp_shared_kernels(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    let e = "/run/bootenv/esp/bootenv";
    let out = run_in(
        &mut vm,
        &format!("bootenv sync-boot && ls {e}/_kernels | wc -l | sed 's/^/store /'"),
    )?;
    ensure!(
        out.contains("v1: kernel up to date") && out.contains("store 1"),
        "the golden BEs do not share one kernel copy:\n{out}"
    );
    // v2's kernel as the earlier bootenv (ESP format 1) left it: a directory of its own.
    run_in(
        &mut vm,
        &format!(
            "h=$(ls {e}/_kernels) && rm {e}/v2/k-* && mkdir {e}/v2/k-0000000001-$h \
&& cp {e}/_kernels/$h/vmlinuz {e}/_kernels/$h/initrd.img {e}/v2/k-0000000001-$h/ && sync \
&& bootenv activate v2 && grep -q \"/bootenv/v2/k-0000000001-$h/vmlinuz bootenv=v2 \" {e}/grub.cfg"
        ),
    )?;
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v2")?;
    let out = run_in(
        &mut vm,
        &format!(
            "bootenv sync-boot v2 && ls {e}/v2 | grep -c k-0000000001- | sed 's/^/old /'; ls {e}/_kernels | wc -l | sed 's/^/store /'"
        ),
    )?;
    ensure!(
        out.contains("v2: kernel up to date (/bootenv/v2/k-0000000001-")
            && out.contains("old 1")
            && out.contains("store 1"),
        "v2's format 1 kernel directory did not stay as it was:\n{out}"
    );
    // Many BEs of one kernel: more than the ESP could hold as copies.
    let used = |vm: &mut Vm| -> anyhow::Result<(u64, u64)> {
        // BusyBox's df: file system, size, used, available (KiB), use%, mount point.
        let out = run_in(vm, "df -P -k /run/bootenv/esp | tail -1")?;
        let n: Vec<u64> = out
            .lines()
            .rfind(|l| l.contains("/run/bootenv/esp"))
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        ensure!(n.len() == 3, "df: {out}");
        Ok((n[1] * 1024, n[0] * 1024))
    };
    let (before, size) = used(&mut vm)?;
    let kernel: u64 = run_in(&mut vm, &format!("cat {e}/_kernels/*/* | wc -c"))?
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .parse()?;
    ensure!(
        kernel * (3 + SHARED_BES as u64) > size,
        "{} copies of the {kernel} B kernel would fit the {size} B ESP: the scenario proves nothing",
        3 + SHARED_BES
    );
    run_long(
        &mut vm,
        &format!("i=1; while [ $i -le {SHARED_BES} ]; do bootenv create s$i --from v1 | grep -q 's'$i': kernel shared' || exit 1; i=$((i+1)); done; \
d=$(bootenv mount s{SHARED_BES} --rw) && echo s{SHARED_BES} >$d/etc/bootenv-test/name && bootenv unmount s{SHARED_BES} && bootenv activate s{SHARED_BES}"),
        1800,
    )?;
    let (after, _) = used(&mut vm)?;
    let out = run_in(
        &mut vm,
        &format!("ls {e}/_kernels | wc -l | sed 's/^/store /'; grep -o 'bootenv=s[0-9]* ' {e}/grub.cfg | sort -u | wc -l | sed 's/^/listed /'"),
    )?;
    ensure!(
        out.contains("store 1") && out.contains(&format!("listed {SHARED_BES}")),
        "{SHARED_BES} new BEs of v1's kernel: {out}"
    );
    ensure!(
        after.saturating_sub(before) < 1 << 20,
        "{SHARED_BES} BEs of one kernel took {} B more of the ESP",
        after.saturating_sub(before)
    );
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, &format!("s{SHARED_BES}"))?;
    // The store's copy stays while a BE uses it and goes with the last one.
    let out = run_long(
        &mut vm,
        &format!("i=1; while [ $i -lt {SHARED_BES} ]; do bootenv destroy s$i >/dev/null || exit 1; i=$((i+1)); done; \
i=1; n=0; while [ $i -lt {SHARED_BES} ]; do test ! -e {e}/s$i || n=$((n+1)); i=$((i+1)); done; echo still $n; \
ls {e} | grep -cx s{SHARED_BES} | sed 's/^/live /'; ls {e}/_kernels | wc -l | sed 's/^/store /'"),
        1800,
    )?;
    ensure!(
        out.contains("store 1") && out.contains("still 0") && out.contains("live 1"),
        "after the destroys: {out}"
    );
    let (end, _) = used(&mut vm)?;
    ensure!(
        end <= before + (64 << 10),
        "the ESP uses {end} B after the destroys, {before} B before the creates"
    );
    power_off(&mut vm)
}

fn cli_destroy_safety(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    let out = run_fails(&mut vm, "bootenv destroy v1")?;
    ensure!(
        out.contains("v1 is running now")
            && out.contains("v1 is the default")
            && out.contains("last known-good"),
        "{out}"
    );
    run_in(&mut vm, "bootenv create v4 --from v2")?;
    let out = run_fails(&mut vm, "bootenv destroy v2")?;
    ensure!(
        out.contains("clones of v2's snapshots") && out.contains("tank/ROOT/v4"),
        "{out}"
    );
    run_in(&mut vm, "bootenv activate --trial=2 v3")?;
    let out = run_fails(&mut vm, "bootenv destroy v3")?;
    ensure!(out.contains("v3 is on trial"), "{out}");
    run_in(&mut vm, "bootenv activate v1")?;
    run_in(&mut vm, "zfs create tank/ROOT/v3/extra")?;
    let out = run_fails(&mut vm, "bootenv destroy v3")?;
    ensure!(out.contains("did not make (tank/ROOT/v3/extra)"), "{out}");
    // The dry run says exactly what goes.
    let dry = run_in(&mut vm, "bootenv destroy v4 --dry-run")?;
    let would: Vec<String> = dry
        .lines()
        .filter_map(|l| l.trim().strip_prefix("destroy "))
        .map(str::to_owned)
        .collect();
    ensure!(!would.is_empty(), "{dry}");
    let before = run_in(&mut vm, "zfs list -H -t all -o name -r tank")?;
    run_in(
        &mut vm,
        "test -d /run/bootenv/esp/bootenv/v4 && bootenv destroy v4",
    )?;
    let after = run_in(&mut vm, "zfs list -H -t all -o name -r tank; test ! -e /run/bootenv/esp/bootenv/v4 && echo esp-clean")?;
    let names = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("tank"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let gone: Vec<String> = names(&before)
        .into_iter()
        .filter(|n| !names(&after).contains(n))
        .collect();
    let mut w = would.clone();
    w.sort();
    let mut g = gone.clone();
    g.sort();
    ensure!(w == g, "the dry run said {w:?}, the destroy removed {g:?}");
    ensure!(
        after.contains("esp-clean"),
        "v4's kernels are still on the ESP: {after}"
    );
    ensure!(
        names(&after).iter().any(|n| n == "tank/ROOT/v3/extra"),
        "a dataset bootenv did not make went"
    );
    power_off(&mut vm)
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

/// Changes v1's config and every shared dataset, so that a reset has something to undo.
const CHANGE_EVERYTHING: &str = "echo changed=1 >>/etc/config/app.conf \
&& mount -t zfs -o zfsutil tank/data /mnt && echo user >/mnt/user.txt && rm /mnt/factory.txt && umount /mnt \
&& mount -t zfs -o zfsutil tank/scratch /mnt && echo more >/mnt/more.txt && umount /mnt \
&& mount -t zfs -o zfsutil tank/keep /mnt && echo user >/mnt/user.txt && umount /mnt";

/// The test BE's description of the pool and its files (`betest-describe`), as lines.
fn describe(vm: &mut Vm) -> anyhow::Result<Vec<String>> {
    let out = run_in(vm, "betest-describe")?;
    Ok(out
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| {
            l.starts_with("dataset ")
                || l.starts_with("snapshot ")
                || l.starts_with("config ")
                || l.starts_with("files ")
        })
        .collect())
}

fn has(lines: &[String], want: &str) -> bool {
    lines.iter().any(|l| l.starts_with(want))
}

/// Requests a reset of v1 in a first boot after changing everything; returns the VM of the
/// boot that carried it out, after checking that v1's config is its factory config again.
fn reset_v1(cx: &mut Ctx, disk: &Path, args: &str) -> anyhow::Result<Vm> {
    let mut vm = direct_ready(cx, disk, "v1", "")?;
    run_in(&mut vm, CHANGE_EVERYTHING)?;
    let out = run_in(&mut vm, &format!("bootenv factory-reset {args}"))?;
    ensure!(out.contains("scheduled for its next boot"), "{out}");
    power_off(&mut vm)?;
    let mut vm = cx.boot(disk, "bootenv=v1 bootenv.pool=tank betest.interactive")?;
    vm.expect(r"bootenv: FACTORY RESET of v1", BOOT)?;
    vm.expect(r"bootenv: factory reset of v1 done", STEP)?;
    expect_be(&mut vm, "v1")?;
    vm.expect(
        r"BOOTENV-TEST config=version=v1;greeting=factory default of 1\.0;\r?\n",
        STEP,
    )?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    Ok(vm)
}

/// The previous content of a kept dataset or snapshot, listed.
fn kept_files(vm: &mut Vm, name_pattern: &str, file: &str) -> anyhow::Result<String> {
    run_in(vm, &format!("ds=$(zfs list -H -t all -o name -r tank | grep -e '{name_pattern}' | head -n1) && mount -t zfs -o zfsutil,ro \"$ds\" /mnt && cat /mnt/{file}; umount /mnt"))
}

fn reset_config(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = reset_v1(cx, &disk, "--mode config")?;
    let d = describe(&mut vm)?;
    ensure!(
        has(&d, "dataset tank/ROOT/v1/config.reset-ID\toff"),
        "the previous config is not kept: {d:#?}"
    );
    ensure!(
        has(
            &d,
            "dataset tank/ROOT/v1/config\tnoauto\t/etc/config\t-\tID"
        ),
        "{d:#?}"
    );
    for want in [
        "files data: user.txt",
        "files scratch: more.txt scratch.txt",
        "files keep: keep.txt user.txt",
    ] {
        ensure!(
            has(&d, want),
            "shared data changed by a config reset ({want} missing): {d:#?}"
        );
    }
    let old = kept_files(&mut vm, "v1/config.reset-", "app.conf")?;
    ensure!(
        old.contains("changed=1"),
        "the kept config is not the changed one: {old}"
    );
    let out = run_in(&mut vm, "bootenv status; bootenv list")?;
    ensure!(out.contains("factory reset (configuration) of v1 done; kept: tank/ROOT/v1/config -> tank/ROOT/v1/config.reset-"), "{out}");
    ensure!(
        out.contains("kept by a factory reset of v1: tank/ROOT/v1/config.reset-"),
        "{out}"
    );
    power_off(&mut vm)
}

fn reset_full(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = reset_v1(cx, &disk, "--mode full")?;
    let d = describe(&mut vm)?;
    for want in [
        "files data: factory.txt",
        "files keep: keep.txt user.txt",
        "dataset tank/ROOT/v1/config.reset-ID\toff",
        "dataset tank/data.reset-ID\toff",
        "dataset tank/scratch.reset-ID\toff",
        "snapshot tank/data.reset-ID@reset-ID",
        "snapshot tank/scratch.reset-ID@reset-ID",
        "snapshot tank/data@factory",
    ] {
        ensure!(has(&d, want), "{want} missing after a full reset: {d:#?}");
    }
    ensure!(
        d.iter().any(|l| l == "files scratch:"),
        "scratch is not empty: {d:#?}"
    );
    let old = kept_files(&mut vm, "tank/data.reset-.*@reset-", "user.txt")?;
    ensure!(
        old.contains("user"),
        "the previous data is not in the kept snapshot: {old}"
    );
    power_off(&mut vm)
}

fn reset_erase(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    let before = describe(&mut vm)?;
    power_off(&mut vm)?;
    let mut vm = reset_v1(cx, &disk, "--mode full --erase")?;
    ensure!(
        vm.text().contains("ERASED the previous tank/data"),
        "the erase was not logged"
    );
    let d = describe(&mut vm)?;
    ensure!(
        !d.iter()
            .any(|l| l.contains("tank/data.reset-") || l.contains("tank/scratch.reset-")),
        "the previous data is still there: {d:#?}"
    );
    ensure!(
        has(&d, "dataset tank/ROOT/v1/config.reset-ID\toff"),
        "the previous config went too: {d:#?}"
    );
    ensure!(
        has(&d, "files keep: keep.txt user.txt") && has(&d, "files data: factory.txt"),
        "{d:#?}"
    );
    // Nothing else changed: the other BEs and the shared dataset a reset does not cover.
    let untouched = |l: &&String| {
        l.contains("tank/ROOT/v2")
            || l.contains("tank/ROOT/v3")
            || l.contains("tank/keep")
            || l.contains("tank/BOOTENV")
    };
    let b: Vec<&String> = before.iter().filter(untouched).collect();
    let a: Vec<&String> = d.iter().filter(untouched).collect();
    ensure!(
        a == b,
        "datasets outside the reset changed:\nbefore {b:#?}\nafter {a:#?}"
    );
    let out = run_in(&mut vm, "bootenv status")?;
    ensure!(out.contains("ERASED: tank/data.reset-"), "{out}");
    power_off(&mut vm)
}

fn reset_powercut_resumes(cx: &mut Ctx) -> anyhow::Result<()> {
    // The end state of an uninterrupted full reset.
    let disk = cx.golden_copy("reference")?;
    let mut vm = reset_v1(cx, &disk, "--mode full")?;
    let reference = describe(&mut vm)?;
    power_off(&mut vm)?;
    for (i, point) in ["reset:parked:config", "reset:installed:data"]
        .iter()
        .enumerate()
    {
        let disk = cx.golden_copy(&format!("cut-{i}"))?;
        let mut vm = direct_ready(cx, &disk, "v1", "")?;
        run_in(&mut vm, CHANGE_EVERYTHING)?;
        run_in(&mut vm, "bootenv factory-reset --mode full")?;
        power_off(&mut vm)?;
        let mut vm = cx.boot(
            &disk,
            &format!("bootenv=v1 bootenv.pool=tank betest.interactive bootenv.failpoint={point}"),
        )?;
        vm.expect(&format!(r"bootenv: FAILPOINT {point}"), BOOT)?;
        vm.kill(); // the power cut
        let mut vm = cx.boot(&disk, "bootenv=v1 bootenv.pool=tank betest.interactive")?;
        vm.expect(r"bootenv: FACTORY RESET of v1", BOOT)?;
        vm.expect(r"bootenv: factory reset of v1 done", STEP)?;
        expect_be(&mut vm, "v1")?;
        vm.expect(
            r"BOOTENV-TEST config=version=v1;greeting=factory default of 1\.0;\r?\n",
            STEP,
        )?;
        vm.expect(r"BOOTENV-TEST ready", STEP)?;
        let got = describe(&mut vm)?;
        ensure!(got == reference, "after a power cut at {point} the end state differs:\nreference {reference:#?}\ngot {got:#?}");
        power_off(&mut vm)?;
    }
    Ok(())
}

fn reset_per_version_defaults(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    run_in(&mut vm, "echo changed=1 >>/etc/config/app.conf")?;
    run_in(&mut vm, "mount -t zfs -o zfsutil tank/ROOT/v2/config /mnt && echo changed=2 >>/mnt/app.conf && umount /mnt")?;
    run_in(&mut vm, "bootenv factory-reset --mode config")?;
    power_off(&mut vm)?;
    let mut vm = cx.boot(&disk, "bootenv=v1 bootenv.pool=tank betest.interactive")?;
    vm.expect(r"bootenv: factory reset of v1 done", BOOT)?;
    expect_be(&mut vm, "v1")?;
    vm.expect(
        r"BOOTENV-TEST config=version=v1;greeting=factory default of 1\.0;\r?\n",
        STEP,
    )?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    run_in(&mut vm, "bootenv factory-reset --mode config --be v2")?;
    power_off(&mut vm)?;
    let mut vm = cx.boot(&disk, "bootenv=v2 bootenv.pool=tank betest.interactive")?;
    vm.expect(r"bootenv: factory reset of v2 done", BOOT)?;
    expect_be(&mut vm, "v2")?;
    vm.expect(
        r"BOOTENV-TEST config=version=v2;greeting=factory default of 2\.0;\r?\n",
        STEP,
    )?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    let old = kept_files(&mut vm, "v2/config.reset-", "app.conf")?;
    ensure!(
        old.contains("changed=2") && old.contains("version=v2"),
        "v2 kept someone else's config: {old}"
    );
    power_off(&mut vm)
}

/// GRUB's Ctrl-N: moves the menu's highlight down one entry, like the down arrow.
const MENU_NEXT: &str = "\x0e";

fn reset_from_grub_menu(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    run_in(&mut vm, "echo changed=1 >>/etc/config/app.conf")?;
    power_off(&mut vm)?;
    let mut vm = cx.uefi(&disk)?;
    vm.expect(r"\*v1: 1\.0 \(default, last known-good\)", BOOT)?;
    // Ctrl-N, GRUB's one-byte "next entry": the arrow key's ESC [ B arrived split on a
    // loaded host once, and a lone ESC sends GRUB back a menu (grub-menu-pick tests the arrow).
    vm.send(MENU_NEXT)?;
    vm.expect(r"\*Advanced: factory reset", STEP)?;
    std::thread::sleep(Duration::from_millis(700));
    vm.send("\r")?;
    vm.expect(r"\*v3: factory reset \(configuration\)", STEP)?;
    for want in [
        "v3: factory reset \\(configuration and data\\)",
        "v2: factory reset \\(configuration\\)",
        "v2: factory reset \\(configuration and data\\)",
        "v1: factory reset \\(configuration\\)",
    ] {
        std::thread::sleep(Duration::from_millis(300));
        vm.send(MENU_NEXT)?;
        vm.expect(&format!(r"\*{want}"), STEP)?;
    }
    std::thread::sleep(Duration::from_millis(700));
    vm.send("\r")?;
    vm.expect(
        r"bootenv: factory reset of v1 requested on the kernel command line",
        BOOT,
    )?;
    vm.expect(r"bootenv: factory reset of v1 done", STEP)?;
    expect_be(&mut vm, "v1")?;
    vm.expect(r"BOOTENV-TEST cmdline=[^\r\n]*bootenv\.reset=config", STEP)?;
    vm.expect(
        r"BOOTENV-TEST config=version=v1;greeting=factory default of 1\.0;\r?\n",
        STEP,
    )?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    let out = run_in(&mut vm, "bootenv status")?;
    ensure!(
        out.contains("factory reset (configuration) of v1 requested (grub)"),
        "{out}"
    );
    power_off(&mut vm)?;
    // The request was used up: the next boot is a plain one.
    let mut vm = grub_boot(cx, &disk, "v1")?;
    ensure!(!vm.text().contains("FACTORY RESET"), "a second reset ran");
    power_off(&mut vm)
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

fn grub_menu_pick(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    // Make v2 the default, so that the menu's default is not its last entry.
    let mut vm = grub_boot(cx, &disk, "v1")?;
    run_in(&mut vm, "bootenv activate v2")?;
    power_off(&mut vm)?;
    let mut vm = cx.uefi(&disk)?;
    // Every BE is listed, newest first, the default marked.
    vm.expect(r"v3: 3\.0", BOOT)?;
    vm.expect(r"\*v2: 2\.0 \(default\)", STEP)?;
    vm.expect(r"v1: 1\.0 \(last known-good\)", STEP)?;
    vm.send("\x1b[B")?;
    vm.expect(r"\*v1: 1\.0", STEP)?;
    std::thread::sleep(Duration::from_millis(700));
    vm.send("\r")?;
    vm.expect(r"bootenv: loading v1", BOOT)?;
    expect_ready(&mut vm, "v1")?;
    let out = run_in(&mut vm, "cat /proc/cmdline")?;
    ensure!(
        out.contains("bootenv=v1 ") && !out.contains("bootenv.trial"),
        "unexpected command line: {out}"
    );
    power_off(&mut vm)?;
    // The pick was for that boot only.
    let mut vm = grub_boot(cx, &disk, "v2")?;
    power_off(&mut vm)
}

fn grub_next_once(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    let out = run_in(&mut vm, "bootenv activate --once v3")?;
    ensure!(out.contains("v3 boots next time only"), "{out}");
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v3")?;
    let out = run_in(&mut vm, "bootenv status")?;
    ensure!(
        out.contains("booted: v3") && out.contains("grub: default=v1 next=- trial=-"),
        "{out}"
    );
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    power_off(&mut vm)
}

fn trial_commit(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    let out = run_in(&mut vm, "bootenv activate --trial=2 v3")?;
    ensure!(out.contains("v3 is on trial"), "{out}");
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v3")?;
    let out = run_in(&mut vm, "cat /proc/cmdline; bootenv status")?;
    ensure!(
        out.contains("bootenv.trial=1"),
        "the trial boot does not say so: {out}"
    );
    ensure!(
        out.contains("trial: this is a trial boot; 1 tries left"),
        "{out}"
    );
    let out = run_in(&mut vm, "bootenv mark-good")?;
    ensure!(out.contains("v3 passed its trial"), "{out}");
    power_off(&mut vm)?;
    for _ in 0..2 {
        let mut vm = grub_boot(cx, &disk, "v3")?;
        let out = run_in(&mut vm, "cat /proc/cmdline; bootenv status; bootenv list")?;
        ensure!(!out.contains("bootenv.trial="), "still a trial boot: {out}");
        ensure!(out.contains("last known-good: v3"), "{out}");
        ensure!(
            out.lines()
                .any(|l| l.starts_with("v3") && l.contains("NRG")),
            "v3 is not running, default and good: {out}"
        );
        power_off(&mut vm)?;
    }
    Ok(())
}

/// A trial of v3 that fails the way `how` says (betest.on-trial=): returns after checking that
/// the known-good BE booted by itself and reported the rollback.
fn trial_rollback(cx: &mut Ctx, how: &str) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    run_in(
        &mut vm,
        &format!("zfs set org.bootenv:cmdline='console=ttyS0 quiet betest.interactive betest.on-trial={how}' tank/ROOT/v3 && bootenv activate --trial=2 v3"),
    )?;
    power_off(&mut vm)?;
    for left in [1, 0] {
        let mut vm = cx.uefi(&disk)?;
        expect_be(&mut vm, "v3")?;
        vm.expect(
            &format!(r"BOOTENV-TEST cmdline=[^\r\n]*bootenv\.trial={left}"),
            STEP,
        )?;
        match how {
            "panic" => {
                vm.expect(r"BOOTENV-TEST panicking", STEP)?;
                let e = vm.wait(STEP)?;
                ensure!(
                    e == crate::qemu::Exit::Panicked,
                    "expected a kernel panic, got {}",
                    crate::qemu::describe(e)
                );
            }
            _ => {
                vm.expect(r"BOOTENV-TEST rebooting without marking good", STEP)?;
                vm.expect_poweroff(STEP)?;
            }
        }
    }
    // No tries left: GRUB boots the known-good BE by itself, with the rollback marker.
    let mut vm = cx.uefi(&disk)?;
    expect_be(&mut vm, "v1")?;
    vm.expect(r"BOOTENV-TEST cmdline=[^\r\n]*bootenv\.rollback=v3", STEP)?;
    vm.expect(r"BOOTENV-TEST report rollback=v3", STEP)?;
    vm.expect(
        r"BOOTENV-TEST status ROLLBACK: the trial of v3 used up its tries",
        STEP,
    )?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    let out = run_in(&mut vm, "bootenv status")?;
    ensure!(out.contains("ROLLBACK: the trial of v3 used up its tries without being marked good; v1 booted instead"), "{out}");
    run_in(&mut vm, "bootenv mark-good")?;
    power_off(&mut vm)?;
    // The rollback is final: the next boot is v1 again, without the marker.
    let mut vm = grub_boot(cx, &disk, "v1")?;
    let out = run_in(&mut vm, "cat /proc/cmdline; bootenv status")?;
    ensure!(
        !out.contains("bootenv.rollback") && out.contains("grub: default=v1 next=- trial=-"),
        "{out}"
    );
    power_off(&mut vm)
}

fn trial_panic_rollback(cx: &mut Ctx) -> anyhow::Result<()> {
    trial_rollback(cx, "panic")
}

fn trial_init_fail_rollback(cx: &mut Ctx) -> anyhow::Result<()> {
    trial_rollback(cx, "reboot")
}

/// The BE list without the space column (which moves as files are written).
fn list_shape(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with('v'))
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect()
}

fn grubenv_torn_recovers(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let env = "/run/bootenv/esp/bootenv/grubenv";
    let damages = [
        (
            "truncated",
            format!("head -c 100 {env} > /tmp/g && cat /tmp/g > {env}"),
        ),
        (
            "garbage",
            format!("dd if=/dev/urandom of={env} bs=1024 count=1 conv=notrunc 2>/dev/null"),
        ),
    ];
    let mut vm = grub_boot(cx, &disk, "v1")?;
    let before = list_shape(&run_in(&mut vm, "bootenv list")?);
    for (what, damage) in &damages {
        // A pending one-shot to v3 that only a readable block would carry out.
        run_in(&mut vm, "bootenv activate --once v3")?;
        run_in(&mut vm, &format!("{damage} && sync"))?;
        power_off(&mut vm)?;
        vm = grub_boot(cx, &disk, "v1")
            .map_err(|e| anyhow::anyhow!("after a {what} block: {e:#}"))?;
        let out = run_in(&mut vm, "bootenv status")?;
        ensure!(
            out.contains("grub: environment block damaged"),
            "{what}: {out}"
        );
        let out = run_in(&mut vm, "bootenv mark-good")?;
        ensure!(
            out.contains("repaired the damaged GRUB environment block"),
            "{what}: {out}"
        );
        let out = run_in(&mut vm, "bootenv status")?;
        ensure!(
            out.contains("grub: default=v1 next=- trial=-"),
            "{what}: {out}"
        );
        let after = list_shape(&run_in(&mut vm, "bootenv list")?);
        ensure!(
            after == before,
            "{what}: the BEs changed: {before:?} -> {after:?}"
        );
    }
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    power_off(&mut vm)
}

fn grub_bios_boot(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = cx.bios(&disk)?;
    vm.expect(r"bootenv: loading v1", BOOT)?;
    expect_ready(&mut vm, "v1")?;
    run_in(&mut vm, "bootenv activate --once v2")?;
    power_off(&mut vm)?;
    let mut vm = cx.bios(&disk)?;
    vm.expect(r"bootenv: loading v2", BOOT)?;
    expect_ready(&mut vm, "v2")?;
    power_off(&mut vm)?;
    // GRUB for BIOS cleared the one-shot in the block on the ESP.
    let mut vm = cx.bios(&disk)?;
    vm.expect(r"bootenv: loading v1", BOOT)?;
    expect_ready(&mut vm, "v1")?;
    power_off(&mut vm)
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

/// Waits for the test init to finish and the VM to power off cleanly.
fn expect_done(vm: &mut Vm, name: &str) -> anyhow::Result<()> {
    vm.expect(&format!("BOOTENV-TEST be-done name={name}"), STEP)?;
    vm.expect_poweroff(STEP)?;
    vm.refute("Kernel panic")
}

fn boot_default(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    // Nothing for bootenv on the command line: no pool, no boot environment.
    let mut vm = cx.boot(&disk, "betest.action=activate:v3")?;
    vm.expect(r"bootenv: no pool named on the kernel command line", BOOT)?;
    vm.expect(
        r"bootenv: booting v1 \(the default, from the pool's bootfs property\)",
        BOOT,
    )?;
    expect_be(&mut vm, "v1")?;
    vm.expect(r"BOOTENV-TEST report choice=default", STEP)?;
    vm.expect(r"BOOTENV-TEST report source=bootfs", STEP)?;
    vm.expect(r"BOOTENV-TEST activated v3", STEP)?;
    expect_done(&mut vm, "v1")?;
    // The default is the pool's, not a fixed name: after `bootenv activate v3`, v3 boots.
    let mut vm = cx.boot(&disk, "")?;
    vm.expect(
        r"bootenv: booting v3 \(the default, from the pool's bootfs property\)",
        BOOT,
    )?;
    expect_be(&mut vm, "v3")?;
    expect_done(&mut vm, "v3")
}

fn zfs_mounts(vm: &mut Vm) -> anyhow::Result<BTreeSet<String>> {
    let m = vm.expect(r"BOOTENV-TEST zfs-mounts=([^\r\n]*)\r?\n", STEP)?;
    Ok(m[1].split_whitespace().map(str::to_owned).collect())
}

fn boot_select(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = cx.boot(&disk, "bootenv=v2 bootenv.pool=tank")?;
    vm.expect(
        r"bootenv: booting v2 \(asked for on the kernel command line\)",
        BOOT,
    )?;
    expect_be(&mut vm, "v2")?;
    vm.expect(r"BOOTENV-TEST cmdline=[^\r\n]*bootenv=v2", STEP)?;
    vm.expect(
        r"BOOTENV-TEST config=version=v2;greeting=factory default of 2\.0;",
        STEP,
    )?;
    let mounts = zfs_mounts(&mut vm)?;
    let want: BTreeSet<String> = [
        "tank/ROOT/v2:/:rw",
        "tank/ROOT/v2/config:/etc/config:rw",
        "tank/BOOTENV:/run/bootenv/state:rw",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ensure!(
        mounts == want,
        "mounted ZFS datasets {mounts:?}, expected exactly {want:?}"
    );
    vm.expect(r"BOOTENV-TEST report choice=requested", STEP)?;
    expect_done(&mut vm, "v2")
}

fn boot_config_mounted(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = cx.boot(
        &disk,
        "bootenv=v3 bootenv.pool=tank betest.action=write-config",
    )?;
    expect_be(&mut vm, "v3")?;
    let mounts = zfs_mounts(&mut vm)?;
    ensure!(
        mounts.contains("tank/ROOT/v3/config:/etc/config:rw"),
        "config not mounted read-write: {mounts:?}"
    );
    let token = vm.expect(r"BOOTENV-TEST wrote-token (\S+)\s", STEP)?[1].clone();
    expect_done(&mut vm, "v3")?;
    // The write is still there on the next boot of the same boot environment...
    let mut vm = cx.boot(&disk, "bootenv=v3 bootenv.pool=tank")?;
    expect_be(&mut vm, "v3")?;
    let seen = vm.expect(r"BOOTENV-TEST token=(\S+)\s", STEP)?[1].clone();
    ensure!(
        seen == token,
        "v3's config holds token {seen}, expected {token}"
    );
    expect_done(&mut vm, "v3")?;
    // ...and only in its own config: v2 has its own.
    let mut vm = cx.boot(&disk, "bootenv=v2 bootenv.pool=tank")?;
    expect_be(&mut vm, "v2")?;
    vm.expect("BOOTENV-TEST zfs-mounts=", STEP)?;
    expect_done(&mut vm, "v2")?;
    if vm.text().contains("BOOTENV-TEST token=") {
        bail!("v3's config write shows in v2's config");
    }
    Ok(())
}

fn boot_unknown_falls_back(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = cx.boot(&disk, "bootenv=nosuch bootenv.pool=tank")?;
    vm.expect(
        r"bootenv: FALLBACK: booting v1 \(the default, from the pool's bootfs property\) instead of nosuch: boot environment nosuch does not exist in pool tank",
        BOOT,
    )?;
    expect_be(&mut vm, "v1")?;
    vm.expect(r"BOOTENV-TEST report choice=fallback", STEP)?;
    vm.expect(r"BOOTENV-TEST report requested=nosuch", STEP)?;
    vm.expect(
        r"BOOTENV-TEST report reason=boot environment nosuch does not exist in pool tank",
        STEP,
    )?;
    vm.expect(r"BOOTENV-TEST fallback-file bootenv: booted v1 instead of nosuch: boot environment nosuch does not exist", STEP)?;
    vm.expect(
        r"BOOTENV-TEST kmsg-fallback bootenv: FALLBACK: booting v1",
        STEP,
    )?;
    vm.expect(
        r"BOOTENV-TEST status chosen: FALLBACK: nosuch was asked for but did not boot",
        STEP,
    )?;
    vm.expect(
        r"BOOTENV-TEST status event @\d+: fallback: booted v1 instead of nosuch",
        STEP,
    )?;
    expect_done(&mut vm, "v1")
}

fn boot_missing_pool_rescue(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.blank_disk("nopool")?;
    let started = Instant::now();
    let mut vm = cx.boot(&disk, "bootenv.pool=tank")?;
    vm.allow(r"bootenv RESCUE");
    vm.expect(r"bootenv RESCUE: the system cannot boot", BOOT)?;
    vm.expect(
        r"Reason: pool tank was not found on any disk \(waited 10 s\)",
        STEP,
    )?;
    vm.expect(r"bootenv.pool=<name>", STEP)?;
    vm.expect(r"bootenv-rescue# ", STEP)?;
    // The shell is live: it runs what is typed.
    vm.send("echo rescue-$((40+2)); ls /dev/vda2 && echo disk-seen\n")?;
    vm.expect(r"rescue-42", STEP)?;
    vm.expect(r"disk-seen", STEP)?;
    vm.send("poweroff -f\n")?;
    vm.expect_poweroff(STEP)?;
    vm.refute("Kernel panic")?;
    ensure!(
        started.elapsed() < Duration::from_secs(300),
        "the rescue path took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Outcome of one scenario.
pub struct Outcome {
    /// Scenario name.
    pub name: String,
    /// `None` when it passed, else the reason.
    pub failure: Option<String>,
    /// Wall time in seconds.
    pub secs: f64,
}

/// Runs the named scenarios (all when `names` is empty), `jobs` at a time, printing PASS/FAIL
/// lines as they end; the outcomes come back in the scenarios' order. Side by side, each VM gets
/// one virtual CPU: a boot keeps one host core busy, so two VMs use two cores better than one
/// VM with two.
pub fn run(
    art: &Artifacts,
    names: &[String],
    echo: bool,
    jobs: usize,
) -> anyhow::Result<Vec<Outcome>> {
    let scenarios = all();
    for n in names {
        if !scenarios.iter().any(|s| s.name == n) {
            bail!("no scenario named {n}; `cargo xtask vm-test --list` lists them");
        }
    }
    let mut chosen: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s.name))
        .collect();
    // The packaging scenarios take several times longer than any other: start them first, so
    // that the others fill the remaining jobs around them instead of one running on alone.
    chosen.sort_by_key(|s| !s.name.starts_with("deb-"));
    let jobs = jobs.clamp(1, chosen.len().max(1));
    let cpus = if jobs > 1 { 1 } else { 2 };
    let next = std::sync::Mutex::new(0usize);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = {
                    let mut n = next.lock().expect("not poisoned");
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(s) = chosen.get(i) else { break };
                println!("--- {}: {}", s.name, s.about);
                let t = Instant::now();
                let result = Ctx::new(art, s.name, echo, cpus).and_then(|mut cx| (s.run)(&mut cx));
                let secs = t.elapsed().as_secs_f64();
                match &result {
                    Ok(()) => println!("PASS {} ({secs:.1} s)", s.name),
                    Err(e) => println!("FAIL {} ({secs:.1} s): {e:#}", s.name),
                }
                let o = Outcome {
                    name: s.name.into(),
                    failure: result.err().map(|e| format!("{e:#}")),
                    secs,
                };
                results.lock().expect("not poisoned").push((i, o));
            });
        }
    });
    let mut r = results.into_inner().expect("not poisoned");
    r.sort_by_key(|(i, _)| *i);
    Ok(r.into_iter().map(|(_, o)| o).collect())
}
