//! The boot path, booted directly (kernel and bootenv's initramfs, no firmware): which BE boots,
//! what it mounts, fallbacks and the rescue shell.

use super::*;

/// The scenarios of this family.
pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "boot-default",
            "no bootenv= on the command line: the pool's default boots (found by scanning the disks)",
            boot_default,
        ),
        Scenario::new(
            "boot-select",
            "three BEs; bootenv=v2 boots exactly v2, its config, and mounts nothing else",
            boot_select,
        ),
        Scenario::new(
            "boot-config-mounted",
            "the BE's config dataset is mounted writable at /etc/config; a write survives a reboot",
            boot_config_mounted,
        ),
        Scenario::new(
            "boot-unknown-falls-back",
            "bootenv=nosuch: the default boots and can tell that a fallback happened and why",
            boot_unknown_falls_back,
        ),
        Scenario::new(
            "module-options-cmdline",
            "module options on the kernel command line (zfs.zfs_arc_max=, spl.spl_hostid=, virtio-blk.queue_depth=) are in effect in the booted BE",
            module_options_cmdline,
        ),
        Scenario::new(
            "boot-missing-pool-rescue",
            "a disk without the pool: the rescue shell starts naming the missing pool",
            boot_missing_pool_rescue,
        ),
    ]
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

fn module_options_cmdline(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = cx.boot(
        &disk,
        "bootenv=v2 bootenv.pool=tank betest.interactive bootenv.debug \
zfs.zfs_arc_max=134217728 spl.spl_hostid=0x00bee5ed virtio-blk.queue_depth=64",
    )?;
    // The agent's debug log names the parameters it loads each module with.
    vm.expect(
        r"module \S*/zfs\.ko\S* parameters: zfs_arc_max=134217728",
        BOOT,
    )?;
    expect_ready(&mut vm, "v2")?;
    let out = run_in(
        &mut vm,
        "cd /sys/module && echo arc=$(cat zfs/parameters/zfs_arc_max) hostid=$(cat spl/parameters/spl_hostid) depth=$(cat virtio_blk/parameters/queue_depth)",
    )?;
    ensure!(
        out.contains("arc=134217728")
            && out.contains(&format!("hostid={}", 0x00bee5edu32))
            && out.contains("depth=64"),
        "module parameters from the command line are not in effect: {out}"
    );
    power_off(&mut vm)
}
