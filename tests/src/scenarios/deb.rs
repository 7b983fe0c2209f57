//! The packaging scenarios: Debian bookworm in a BE, bootenv's packages installed with dpkg, booted
//! through GRUB, initramfs-tools and systemd, upgraded and rolled back. Each starts from its own
//! overlay of the [`Fixture::DebianDisk`] (see [`super::debian_disk`]), so the costly install is
//! made once, and the scenarios run side by side.

use super::*;

/// The scenarios of this family.
pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "deb-install-boot",
            "Debian bookworm in a BE of a new disk; bootenv, bootenv-grub and the kernel package installed with dpkg; it boots through GRUB and initramfs-tools to systemd and is marked good",
            deb_install_boot,
        ).needs(Fixture::DebianDisk),
        Scenario::new(
            "deb-upgrade-commit",
            "in the Debian BE, bootenv upgrade installs a newer bootenv package in a new BE (its trigger rebuilds the new BE's initramfs); the running BE is unchanged; the new BE's trial boots and commits",
            deb_upgrade_commit,
        ).needs(Fixture::DebianDisk),
        Scenario::new(
            "deb-upgrade-no-zfs",
            "in the Debian BE, an upgrade whose initramfs could not load ZFS fails at upgrade time and leaves nothing behind",
            deb_upgrade_no_zfs,
        ).needs(Fixture::DebianDisk),
        Scenario::new(
            "deb-upgrade-rollback",
            "in the Debian BE, an upgrade whose health check fails: its trial is never marked good, the trial watchdog reboots, and GRUB rolls back to the known-good BE by itself",
            deb_upgrade_rollback,
        ).needs(Fixture::DebianDisk),
    ]
}

/// Boots the Debian disk alone through OVMF and GRUB; returns once `name` waits for actions.
pub(super) fn debian_boot(cx: &mut Ctx, disk: &Path, name: &str) -> anyhow::Result<Vm> {
    debian_boot_with(cx, &[disk], name)
}

/// [`debian_boot`] with more disks after the Debian disk (`/dev/vdb`, …).
pub(super) fn debian_boot_with(cx: &mut Ctx, disks: &[&Path], name: &str) -> anyhow::Result<Vm> {
    let mut vm = cx.uefi_disks(disks)?;
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

/// A copy of the Debian disk, booted through GRUB into deb1 as a new machine would: the disk
/// and the running VM.
fn installed_debian(cx: &mut Ctx) -> anyhow::Result<(PathBuf, Vm)> {
    cx.vm_limit = Duration::from_secs(3000);
    let disk = cx.fixture_copy(Fixture::DebianDisk, "debian")?;
    let vm = debian_boot(cx, &disk, "deb1")?;
    Ok((disk, vm))
}

fn deb_install_boot(cx: &mut Ctx) -> anyhow::Result<()> {
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
    let out = run_in(&mut vm, "dpkg-query -W bootenv bootenv-grub && systemctl is-enabled bootenv-mark-good.service bootenv-status.service bootenv-trial-watchdog.timer bootenv-data-pools.service && bootenv list")?;
    ensure!(
        out.lines().filter(|l| l.trim() == "enabled").count() == 4
            && list_row(&out, "deb1").is_some_and(|r| r[2].contains('N') && r[2].contains('G')),
        "{out}"
    );
    debian_power_off(&mut vm)
}

fn deb_upgrade_commit(cx: &mut Ctx) -> anyhow::Result<()> {
    let (disk, mut vm) = installed_debian(cx)?;
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
    let mut vm = debian_boot(cx, &disk, "deb2")?;
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
    debian_power_off(&mut vm)
}

fn deb_upgrade_no_zfs(cx: &mut Ctx) -> anyhow::Result<()> {
    let (_disk, mut vm) = installed_debian(cx)?;
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
    let out = run_in(
        &mut vm,
        "bootenv list; modinfo -F filename zfs; zfs list -H -t all -o name -r deb | grep -c -e deb3 -e @bootenv- | sed 's/^/leftovers /'",
    )?;
    ensure!(
        list_row(&out, "deb3").is_none() && out.contains("zfs.ko") && out.contains("leftovers 0"),
        "the failed upgrade left something behind: {out}"
    );
    // Nothing half-made is in the way: the same name upgrades fine.
    let out = run_long(&mut vm, "bootenv upgrade deb3 -- true", 900)?;
    ensure!(out.contains("deb3 is on trial"), "{out}");
    debian_power_off(&mut vm)
}

/// What makes deb3 of `deb-upgrade-rollback` a failed upgrade: a health check that fails
/// (boot-complete.target is never reached, so bootenv-mark-good.service never runs), and a
/// trial deadline of one second after boot for it alone, so the watchdog does not wait out the
/// deadline a good trial needs; the watchdog waits for the test reporter
/// (`betest-watchdog-after-report.conf`), so that the reporter tells what the boot saw first.
const BROKEN_UPGRADE: &str = "echo deb3 >/etc/bootenv-test/name \
&& cp /root/payload/betest/betest-health.service /etc/systemd/system/ && systemctl enable betest-health.service \
&& mkdir -p /etc/systemd/system/bootenv-trial-watchdog.service.d \
&& printf '[Timer]\\nOnBootSec=\\nOnBootSec=1s\\n' >/etc/systemd/system/bootenv-trial-watchdog.timer.d/test.conf \
&& cp /root/payload/betest/watchdog-after-report.conf /etc/systemd/system/bootenv-trial-watchdog.service.d/test.conf";

fn deb_upgrade_rollback(cx: &mut Ctx) -> anyhow::Result<()> {
    let (disk, mut vm) = installed_debian(cx)?;
    // Another BE that is not known-good (so that the rollback must pick the known-good one,
    // not just the other BE), then an upgrade that boots but whose health check fails: the
    // trial is never marked good, the watchdog reboots, GRUB has no tries left and boots the
    // known-good deb1.
    run_long(&mut vm, "bootenv create deb2 --from deb1", 600)?;
    let out = run_long(
        &mut vm,
        &format!("bootenv upgrade deb3 --tries 1 -- sh -c \"{BROKEN_UPGRADE}\""),
        1500,
    )?;
    ensure!(out.contains("deb3 is on trial"), "{out}");
    debian_power_off(&mut vm)?;
    let mut vm = cx.uefi(&disk)?;
    expect_be_within(&mut vm, "deb3", Duration::from_secs(700))?;
    vm.expect(r"BOOTENV-TEST cmdline=[^\r\n]*bootenv\.trial=0", STEP)?;
    vm.expect(r"BOOTENV-TEST mark-good=inactive", STEP)?;
    vm.expect(
        r"this trial boot was not marked good in time",
        Duration::from_secs(300),
    )?;
    vm.expect_poweroff(Duration::from_secs(300))?;
    let mut vm = debian_boot(cx, &disk, "deb1")?;
    let text = vm.text();
    ensure!(
        text.contains("bootenv.rollback=deb3"),
        "GRUB did not fall back with the rollback marker"
    );
    ensure!(
        text.contains("BOOTENV-TEST status ROLLBACK: the trial of deb3 used up its tries"),
        "deb1 does not report the rollback"
    );
    let out = run_in(&mut vm, "bootenv list")?;
    ensure!(
        list_row(&out, "deb3").is_some_and(|r| r[2].contains('F'))
            && list_row(&out, "deb1").is_some_and(|r| r[2].contains('N') && r[2].contains('G')),
        "deb3 is not marked failed, or deb1 is not the running known-good BE: {out}"
    );
    debian_power_off(&mut vm)
}

/// Powers a Debian test BE off: systemd's shutdown of a full system takes longer under TCG
/// than the test BEs' `poweroff -f`, and longer still on a loaded host.
pub(super) fn debian_power_off(vm: &mut Vm) -> anyhow::Result<()> {
    vm.send("poweroff\n")?;
    vm.expect(r"BOOTENV-TEST be-done", STEP)?;
    vm.expect_poweroff(Duration::from_secs(300))?;
    vm.refute("Kernel panic")
}
