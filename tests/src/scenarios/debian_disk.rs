//! The fixture of the packaging scenarios: a disk with Debian bookworm installed in BE `deb1`
//! of pool `deb` by `bootenv install`, bootenv's packages and the kernel package installed in it
//! with dpkg (whose scripts built its initramfs and put kernel and menu on the ESP), never
//! booted. Made in the test BE v1 of the golden disk, about 6 to 10 minutes under TCG, and kept
//! in the cache under a key of everything that goes into it: the packages' contents, the Debian
//! tree, the golden disk, the guest scripts and this file's own text (the set-up commands).

use super::*;
use crate::cache::Found;
use crate::host::fnv64;

/// The reporter of the Debian test BEs (`betest-debian`).
pub(super) const DEBIAN_REPORT: &str = include_str!("../../guest/debian-report.sh");
/// Its unit.
pub(super) const DEBIAN_REPORT_UNIT: &str = include_str!("../../guest/betest-debian.service");
/// The failing health check of `deb-upgrade-rollback`.
pub(super) const BROKEN_HEALTH_UNIT: &str = include_str!("../../guest/betest-health.service");
/// The drop-in that makes that trial's watchdog wait for the test reporter.
pub(super) const WATCHDOG_AFTER_REPORT: &str =
    include_str!("../../guest/betest-watchdog-after-report.conf");

/// The trial deadline of the Debian test BEs (bootenv-trial-watchdog.timer's drop-in): long
/// enough for a good trial to reach mark-good under TCG on a loaded host. A trial that is
/// meant to fail gets a deadline of its own (`deb-upgrade-rollback`).
const TRIAL_DEADLINE_SECS: u64 = 300;

/// A drop-in that makes `systemd-udev-settle.service` return at once in the Debian test BEs.
/// Debian's `zfs-load-module.service` requires it, so every unit after local-fs.target waited
/// for udev to process every coldplug event: 12 s of each Debian boot under TCG, spent on
/// Debian's packaging, not on bootenv (whose initramfs loaded ZFS and imported the system pool
/// already, and whose `bootenv-data-pools.service` waits for its pools' disks by itself, which
/// this makes the scenarios exercise).
const UDEV_SETTLE_DROPIN: &str = "[Service]\nExecStart=\nExecStart=/bin/true\n";

/// Units of Debian's that the Debian test BEs mask: the virtual consoles' gettys (nobody logs in
/// on them; the serial getty is masked too, the test reporter owns the console), the ext4
/// scrub's clean-up (no ext4 here) and the periodic jobs' timers (apt, dpkg's backup, fstrim,
/// e2scrub, tmpfiles' clean-up), which could fire in the middle of a scenario. On one virtual
/// CPU under TCG they competed with bootenv's units at boot (the gettys and e2scrub_reap took
/// 10 s of CPU between them) and made no scenario's subject.
const MASKED: &str = "getty@.service getty-static.service e2scrub_reap.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer systemd-tmpfiles-clean.timer";

/// The kernel command line of the Debian test BEs: the serial console, systemd's progress, and
/// a reboot 5 s after a panic (kernel or initramfs-tools), as an appliance would have.
const DEBIAN_CMDLINE: &str = "--cmdline 'console=ttyS0 systemd.show_status=1 panic=5'";

/// The Debian disk, from the cache or made now in a VM of `cpus` virtual CPUs.
pub(super) fn debian_disk(
    art: &Artifacts,
    echo: bool,
    cpus: u32,
) -> anyhow::Result<(PathBuf, Found)> {
    let pk = art.packages.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "the Debian packages were not prepared (xtask prepares them for deb-* scenarios)"
        )
    })?;
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let key = fnv64(&[
        &pk.key.to_le_bytes(),
        name(&pk.debian).as_bytes(),
        name(&art.golden).as_bytes(),
        art.kernel.release.as_bytes(),
        DEBIAN_REPORT.as_bytes(),
        DEBIAN_REPORT_UNIT.as_bytes(),
        BROKEN_HEALTH_UNIT.as_bytes(),
        WATCHDOG_AFTER_REPORT.as_bytes(),
        include_str!("debian_disk.rs").as_bytes(),
    ]);
    art.cache.entry("debian-disk", key, ".img", |tmp| {
        let mut cx = Ctx::at(art, &art.work.join("fixtures/debian-disk"), echo, cpus)?;
        cx.vm_limit = Duration::from_secs(3000);
        let payload = payload_tar(&cx, pk)?;
        let golden = cx.golden_copy("golden")?;
        disk::blank(tmp, 4096)?;
        let mut vm = cx.boot_disks(
            &[&golden, tmp, &pk.debian, &payload],
            "bootenv=v1 bootenv.pool=tank betest.interactive",
        )?;
        expect_ready(&mut vm, "v1")?;
        debian_be(&mut vm, &art.kernel.release, "deb1")?;
        power_off(&mut vm)
    })
}

/// The packaging scenarios' files, as a tarball in `cx.dir`: the packages, and the test
/// reporter and health check for Debian BEs.
fn payload_tar(cx: &Ctx, pk: &crate::images::Packages) -> anyhow::Result<PathBuf> {
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
    std::fs::write(
        dir.join("betest/watchdog-after-report.conf"),
        WATCHDOG_AFTER_REPORT,
    )?;
    let tar = cx.dir.join("payload.tar");
    crate::host::tar_dir(&dir, &tar)?;
    Ok(tar)
}

/// Makes a Debian BE `name` on a new pool `deb` on /dev/vdb from the Debian tree on /dev/vdc,
/// installs the packages from /dev/vdd in it with dpkg (in a chroot), and exports the pool.
/// Runs in the test BE v1. Its initramfs holds only the modules this VM needs
/// (`MODULES=list`, virtio), as an appliance's would: `MODULES=most` takes mkinitramfs over
/// ten minutes under TCG.
fn debian_be(vm: &mut Vm, release: &str, name: &str) -> anyhow::Result<()> {
    let out = run_long(vm, &format!("bootenv --pool deb install --disk /dev/vdb --from /dev/vdc --name {name} --label 12.0 --esp-mib 256 {DEBIAN_CMDLINE}"), 900)?;
    ensure!(out.contains("has no kernel yet"), "{out}");
    // A one-second menu, as on the golden disk (tests/guest/builder.sh).
    run_in(
        vm,
        "zpool import -N -o cachefile=none -d /dev deb && zfs set org.bootenv:grub-timeout=1 deb/ROOT",
    )?;
    let d = format!("/run/bootenv/mnt/{name}");
    let settle = UDEV_SETTLE_DROPIN.replace('\n', "\\n");
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
&& for u in {MASKED}; do ln -sf /dev/null {d}/etc/systemd/system/$u; done \
&& mkdir -p {d}/etc/systemd/system/systemd-udev-settle.service.d \
&& printf '{settle}' >{d}/etc/systemd/system/systemd-udev-settle.service.d/bootenv-test.conf \
&& echo {name} >{d}/etc/bootenv-test/name \
&& echo MODULES=list >{d}/etc/initramfs-tools/conf.d/bootenv-test \
&& mkdir -p {d}/etc/systemd/system/bootenv-trial-watchdog.timer.d \
&& printf '[Timer]\\nOnBootSec=\\nOnBootSec={TRIAL_DEADLINE_SECS}\\n' >{d}/etc/systemd/system/bootenv-trial-watchdog.timer.d/test.conf \
&& printf 'virtio_pci\\nvirtio_blk\\n' >>{d}/etc/initramfs-tools/modules \
&& mount --bind /dev {d}/dev && mount -t proc proc {d}/proc && mount -t sysfs sysfs {d}/sys"
        ),
        300,
    )?;
    let rel = release;
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
