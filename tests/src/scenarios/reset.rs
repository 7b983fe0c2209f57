//! Factory resets: config, full, erase, per-version defaults, power cuts inside a reset, and a
//! reset chosen in GRUB's menu.

use super::*;

/// The scenarios of this family.
pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "reset-config",
            "a changed config and a reset request: the config is factory again, the old one kept, data unchanged",
            reset_config,
        ),
        Scenario::new(
            "reset-full",
            "a full reset: config and the data datasets back to factory (or empty), the previous data kept as snapshots",
            reset_full,
        ),
        Scenario::new(
            "reset-erase",
            "a full reset with erase: the previous data is gone, and nothing else is",
            reset_erase,
        ),
        Scenario::new(
            "reset-powercut-resumes",
            "power cut at two points inside a full reset: the next boot ends where an uninterrupted reset ends",
            reset_powercut_resumes,
        ),
        Scenario::new(
            "reset-per-version-defaults",
            "two BEs with different factory defaults: each resets to its own",
            reset_per_version_defaults,
        ),
        Scenario::new(
            "reset-from-grub-menu",
            "the reset chosen with keys in GRUB's advanced menu",
            reset_from_grub_menu,
        ),
    ]
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
    expect_factory_ready(&mut vm, "v1")?;
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
        expect_factory_ready(&mut vm, "v1")?;
        let got = describe(&mut vm)?;
        ensure!(got == reference, "after a power cut at {point} the end state differs:\nreference {reference:#?}\ngot {got:#?}");
        power_off(&mut vm)?;
    }
    Ok(())
}

/// Boots test BE `be` (`v<N>`, label `<N>.0`) directly, after a factory reset of it was asked
/// for; returns once the reset is done and the BE waits for actions with its factory config.
fn boot_after_reset(cx: &mut Ctx, disk: &Path, be: &str) -> anyhow::Result<Vm> {
    let mut vm = cx.boot(
        disk,
        &format!("bootenv={be} bootenv.pool=tank betest.interactive"),
    )?;
    vm.expect(&format!(r"bootenv: factory reset of {be} done"), BOOT)?;
    expect_factory_ready(&mut vm, be)?;
    Ok(vm)
}

/// Waits for test BE `be` (`v<N>`, label `<N>.0`) to start with its factory config and wait
/// for actions.
fn expect_factory_ready(vm: &mut Vm, be: &str) -> anyhow::Result<()> {
    expect_be(vm, be)?;
    let n = be.trim_start_matches('v');
    vm.expect(
        &format!(r"BOOTENV-TEST config=version={be};greeting=factory default of {n}\.0;\r?\n"),
        STEP,
    )?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    Ok(())
}

fn reset_per_version_defaults(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    run_in(&mut vm, "echo changed=1 >>/etc/config/app.conf")?;
    run_in(&mut vm, "mount -t zfs -o zfsutil tank/ROOT/v2/config /mnt && echo changed=2 >>/mnt/app.conf && umount /mnt")?;
    run_in(&mut vm, "bootenv factory-reset --mode config")?;
    power_off(&mut vm)?;
    let mut vm = boot_after_reset(cx, &disk, "v1")?;
    run_in(&mut vm, "bootenv factory-reset --mode config --be v2")?;
    power_off(&mut vm)?;
    let mut vm = boot_after_reset(cx, &disk, "v2")?;
    let old = kept_files(&mut vm, "v2/config.reset-", "app.conf")?;
    ensure!(
        old.contains("changed=2") && old.contains("version=v2"),
        "v2 kept someone else's config: {old}"
    );
    power_off(&mut vm)
}

fn reset_from_grub_menu(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    run_in(&mut vm, "echo changed=1 >>/etc/config/app.conf")?;
    menu_timeout(&mut vm, 30)?;
    power_off(&mut vm)?;
    let mut vm = cx.uefi(&disk)?;
    vm.expect(r"\*v1: 1\.0 \(default, last known-good\)", BOOT)?;
    choose_in_menu(&mut vm, MENU_NEXT, r"Advanced: factory reset")?;
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
    menu_timeout(&mut vm, 1)?;
    power_off(&mut vm)?;
    // The request was used up: the next boot is a plain one.
    let mut vm = grub_boot(cx, &disk, "v1")?;
    ensure!(!vm.text().contains("FACTORY RESET"), "a second reset ran");
    power_off(&mut vm)
}
