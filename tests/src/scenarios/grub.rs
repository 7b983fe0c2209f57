//! GRUB and the trial state machine, through real firmware (OVMF, SeaBIOS) and real GRUB: the
//! menu, one-shots, trials that commit or roll back, a damaged environment block.

use super::*;

/// The scenarios of this family.
pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "grub-menu-pick",
            "OVMF+GRUB: the menu lists every BE; down-arrow and Enter boot the next one; then the default again",
            grub_menu_pick,
        ),
        Scenario::new(
            "grub-next-once",
            "bootenv activate --once v3: the next boot is v3, the one after is the default",
            grub_next_once,
        ),
        Scenario::new(
            "trial-commit",
            "a trial BE boots, marks itself good, and is the default from then on",
            trial_commit,
        ),
        Scenario::new(
            "trial-panic-rollback",
            "a trial BE whose boot panics the kernel: after its tries GRUB boots the known-good BE, which reports it",
            trial_panic_rollback,
        ),
        Scenario::new(
            "trial-bad-kernel-rollback",
            "kernels and initramfs on the ESP that GRUB cannot load or the kernel cannot use: a one-shot falls back to the known-good BE, which reports it; trials under OVMF and SeaBIOS use their tries without a key pressed and roll back",
            trial_bad_kernel_rollback,
        ),
        Scenario::new(
            "trial-init-fail-rollback",
            "a trial BE whose init reboots without marking good: the same rollback",
            trial_init_fail_rollback,
        ),
        Scenario::new(
            "grubenv-torn-recovers",
            "a truncated, then a garbage grubenv: the known-good BE boots; the next write repairs the block",
            grubenv_torn_recovers,
        ),
        Scenario::new(
            "grub-bios-boot",
            "SeaBIOS and grub-pc boot the same disk, a chosen BE included",
            grub_bios_boot,
        ),
    ]
}

fn grub_menu_pick(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    // Make v2 the default, so that the menu's default is not its last entry.
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    menu_timeout(&mut vm, 30)?;
    run_in(&mut vm, "bootenv activate v2")?;
    power_off(&mut vm)?;
    let mut vm = cx.uefi(&disk)?;
    // Every BE is listed, newest first, the default marked.
    vm.expect(r"v3: 3\.0", BOOT)?;
    vm.expect(r"\*v2: 2\.0 \(default\)", STEP)?;
    vm.expect(r"v1: 1\.0 \(last known-good\)", STEP)?;
    // The arrow key itself here (other scenarios use GRUB's one-byte keys).
    choose_in_menu(&mut vm, "\x1b[B", r"v1: 1\.0")?;
    vm.expect(r"bootenv: loading v1", BOOT)?;
    expect_ready(&mut vm, "v1")?;
    let out = run_in(&mut vm, "cat /proc/cmdline")?;
    ensure!(
        out.contains("bootenv=v1 ") && !out.contains("bootenv.trial"),
        "unexpected command line: {out}"
    );
    menu_timeout(&mut vm, 1)?;
    power_off(&mut vm)?;
    // The pick was for that boot only.
    let mut vm = grub_boot(cx, &disk, "v2")?;
    power_off(&mut vm)
}

fn grub_next_once(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
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
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
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
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
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
            "panic" => expect_panic(&mut vm)?,
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
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
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

/// The directory (on the running test BE) of `be`'s kernel and initramfs on the ESP.
fn kernel_dir_of(be: &str) -> String {
    format!("/run/bootenv/esp$(cat /run/bootenv/esp/bootenv/{be}/$(ls /run/bootenv/esp/bootenv/{be} | sort | tail -n1))")
}

/// Overwrites the boot sector signature and the `HdrS` magic of `be`'s kernel on the ESP:
/// GRUB's `linux` refuses it ("invalid magic number").
fn damage_kernel(be: &str) -> String {
    format!(
        "printf 'damaged!' | dd of={}/vmlinuz bs=1 seek=510 conv=notrunc 2>/dev/null && sync",
        kernel_dir_of(be)
    )
}

/// Waits for one failed try of `be`'s trial: GRUB cannot load its kernel and restarts.
fn expect_failed_try(vm: &mut Vm, be: &str) -> anyhow::Result<()> {
    vm.expect(&format!("bootenv: loading {be}"), BOOT)?;
    vm.expect(
        &format!("bootenv: the kernel or initramfs of {be} could not be loaded"),
        STEP,
    )?;
    vm.expect(
        &format!("this try of {be}'s trial failed; restarting"),
        STEP,
    )?;
    // GRUB's reboot ends QEMU (-no-reboot).
    vm.wait(STEP)?;
    ensure!(
        !vm.text().contains("Press any key") && !vm.text().contains("grub> "),
        "GRUB stopped for a key"
    );
    Ok(())
}

/// After a trial of `failed` used up its tries: the known-good v1 boots by itself through
/// `boot` (a fresh VM of the right firmware) and reports the rollback.
fn expect_rollback(vm: &mut Vm, failed: &str) -> anyhow::Result<()> {
    expect_be(vm, "v1")?;
    vm.expect(
        &format!(r"BOOTENV-TEST cmdline=[^\r\n]*bootenv\.rollback={failed}"),
        STEP,
    )?;
    vm.expect(&format!(r"BOOTENV-TEST report rollback={failed}"), STEP)?;
    vm.expect(
        &format!(r"BOOTENV-TEST status ROLLBACK: the trial of {failed} used up its tries"),
        STEP,
    )?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    Ok(())
}

fn trial_bad_kernel_rollback(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    // v2, v3, v4 and v5 each get a kernel copy of their own (zero padding after the initramfs,
    // which the kernel skips, makes it another file), so that damaging one damages no other BE.
    run_long(
        &mut vm,
        "bootenv create v4 --from v1 >/dev/null && bootenv create v5 --from v1 >/dev/null \
&& n=1 && for b in v2 v3 v4 v5; do d=$(bootenv mount $b --rw) && echo $b >$d/etc/bootenv-test/name \
&& head -c $((n*4096)) /dev/zero >>$d/boot/initrd.img && bootenv unmount $b >/dev/null \
&& bootenv sync-boot $b | grep -q \"$b: kernel copied\" || exit 1; n=$((n+1)); done",
        600,
    )?;
    // A one-shot whose kernel GRUB cannot load: the known-good BE boots, told why.
    run_in(
        &mut vm,
        &format!("bootenv activate --once v2 && {}", damage_kernel("v2")),
    )?;
    power_off(&mut vm)?;
    let mut vm = cx.uefi(&disk)?;
    vm.expect(
        "bootenv: the kernel or initramfs of v2 could not be loaded",
        BOOT,
    )?;
    vm.expect("bootenv: loading v1 instead", STEP)?;
    expect_be(&mut vm, "v1")?;
    vm.expect(r"BOOTENV-TEST cmdline=[^\r\n]*bootenv\.unloadable=v2", STEP)?;
    vm.expect(r"BOOTENV-TEST report choice=fallback", STEP)?;
    vm.expect(r"BOOTENV-TEST report source=grub", STEP)?;
    vm.expect(r"BOOTENV-TEST report requested=v2", STEP)?;
    vm.expect(
        r"BOOTENV-TEST status chosen: FALLBACK: v2 was asked for but did not boot: GRUB could not load the kernel or initramfs of v2 from the ESP \(`bootenv sync-boot v2` copies them again\)",
        STEP,
    )?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    // A trial of v3 (2 tries) whose kernel GRUB cannot load, under OVMF: each try restarts,
    // then GRUB boots the known-good BE with the rollback marker.
    run_in(
        &mut vm,
        &format!("bootenv activate --trial=2 v3 && {}", damage_kernel("v3")),
    )?;
    power_off(&mut vm)?;
    for _ in 0..2 {
        let mut vm = cx.uefi(&disk)?;
        expect_failed_try(&mut vm, "v3")?;
    }
    let mut vm = cx.uefi(&disk)?;
    expect_rollback(&mut vm, "v3")?;
    // The same under SeaBIOS and grub-pc (v4, 1 try).
    run_in(
        &mut vm,
        &format!("bootenv activate --trial=1 v4 && {}", damage_kernel("v4")),
    )?;
    power_off(&mut vm)?;
    let mut vm = cx.bios(&disk)?;
    expect_failed_try(&mut vm, "v4")?;
    let mut vm = cx.bios(&disk)?;
    expect_rollback(&mut vm, "v4")?;
    // An initramfs that loads but holds garbage: the kernel cannot start the agent and panics
    // (and restarts, panic=10); the try is used all the same.
    run_in(
        &mut vm,
        &format!(
            "bootenv activate --trial=1 v5 && dd if=/dev/urandom of={}/initrd.img bs=4096 count=256 conv=notrunc 2>/dev/null && sync",
            kernel_dir_of("v5")
        ),
    )?;
    power_off(&mut vm)?;
    let mut vm = cx.uefi(&disk)?;
    vm.expect("bootenv: loading v5", BOOT)?;
    vm.expect(r"Kernel panic", BOOT)?;
    vm.wait(Duration::from_secs(120))?;
    let mut vm = cx.uefi(&disk)?;
    expect_rollback(&mut vm, "v5")?;
    let out = run_in(&mut vm, "bootenv list")?;
    for b in ["v3", "v4", "v5"] {
        ensure!(
            list_row(&out, b).is_some_and(|r| r[2].contains('F')),
            "{b} is not marked failed: {out}"
        );
    }
    power_off(&mut vm)
}
