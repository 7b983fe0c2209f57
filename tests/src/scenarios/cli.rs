//! The operator's verbs in a running test BE: create, activate, upgrade, rollback, mount, diff,
//! destroy, export/import and install.

use super::*;

/// The scenarios of this family.
pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "cli-create-activate",
            "bootenv create --from, then activate: GRUB boots the new BE",
            cli_create_activate,
        ),
        Scenario::new(
            "cli-upgrade-trial",
            "an upgrade whose command changes files boots as a trial; the old BE keeps the old files",
            cli_upgrade_trial,
        ),
        Scenario::new(
            "cli-upgrade-fails-cleanly",
            "an upgrade whose command fails: the running BE is unchanged, nothing half-made is left",
            cli_upgrade_fails_cleanly,
        ),
        Scenario::new(
            "cli-rollback-walk",
            "three upgrades committed in turn, two rollbacks, one roll forward: each boot through GRUB is the expected version",
            cli_rollback_walk,
        ),
        Scenario::new(
            "cli-mount-readonly",
            "an old version's files (and a snapshot's) read without booting it; writes refused; diff",
            cli_mount_readonly,
        ),
        Scenario::new(
            "cli-destroy-safety",
            "destroy refuses the running, default, trial, last known-good and depended-on BEs; --dry-run is exact",
            cli_destroy_safety,
        ),
        Scenario::new(
            "cli-export-import",
            "a BE exported to a file (and one through a pipe), imported into a fresh pool on another disk, boots from it",
            cli_export_import,
        ),
        Scenario::new(
            "cli-json",
            "every verb with --json, done and refused: each document parses and has exactly the keys ARCHITECTURE.md documents; a repeated activate is unchanged",
            cli_json,
        ),
        Scenario::new(
            "cli-install",
            "a blank disk laid out by bootenv install from a tarball boots through GRUB, under UEFI and BIOS",
            cli_install,
        ),
        Scenario::new(
            "cli-install-split",
            "bootenv install lays out a system pool and a mirrored data pool on a blank machine with three disks; it boots through GRUB under UEFI and BIOS, the agent imports only the system pool, and the booted system imports the data pool",
            cli_install_split,
        ),
    ]
}

fn cli_json(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    let mut verbs = std::collections::BTreeSet::new();
    // Done: (arguments, what the document must say).
    let done: [(&str, &[(&str, serde_json::Value)]); 29] = [
        ("status", &[("boot", serde_json::json!({}))]),
        ("list", &[("pool", "tank".into())]),
        ("prepare-pool tank", &[("changed", false.into())]),
        ("create v4 --from v2 --label 4.0", &[("be", "v4".into())]),
        ("activate v1", &[("changed", false.into())]),
        (
            "mark-good",
            &[("result", "marked-good".into()), ("changed", false.into())],
        ),
        ("activate --once v2", &[("activated_as", "once".into())]),
        (
            "activate --trial=2 v3",
            &[("activated_as", "trial".into()), ("tries", 2.into())],
        ),
        (
            "activate v1",
            &[("changed", true.into()), ("cancelled_trial", "v3".into())],
        ),
        ("activate v2", &[("changed", true.into())]),
        ("rollback", &[("to", "v1".into())]),
        ("rollforward", &[("to", "v2".into())]),
        ("activate v1", &[("changed", true.into())]),
        ("activate v1", &[("changed", false.into())]),
        ("sync-boot", &[]),
        ("grub-menu", &[]),
        (
            "mount v2",
            &[
                ("dir", "/run/bootenv/mnt/v2".into()),
                ("read_only", true.into()),
            ],
        ),
        ("unmount v2", &[]),
        ("diff v1 v2", &[("a", "v1".into())]),
        (
            "destroy v4 --dry-run",
            &[("dry_run", true.into()), ("changed", false.into())],
        ),
        ("rename v4 v5", &[("to", "v5".into())]),
        ("export v5 /run/v5.stream", &[("be", "v5".into())]),
        ("import /run/v5.stream --name v6", &[("be", "v6".into())]),
        ("destroy v6", &[("changed", true.into())]),
        (
            "factory-reset --mode config --be v2",
            &[("action", "scheduled".into())],
        ),
        ("factory-reset --cancel", &[("action", "cancelled".into())]),
        (
            "data-pools add elsewhere --mount none",
            &[("action", "add".into()), ("changed", true.into())],
        ),
        ("data-pools", &[("action", "list".into())]),
        (
            "data-pools remove elsewhere",
            &[("action", "remove".into()), ("changed", true.into())],
        ),
    ];
    for (args, want) in done {
        let (rc, doc) = bootenv_json(&mut vm, args)?;
        ensure!(
            rc == 0,
            "`bootenv --json {args}` failed (status {rc}): {doc:#}"
        );
        for (k, v) in want {
            // An empty object only asks for the key.
            let ok = match v {
                serde_json::Value::Object(o) if o.is_empty() => doc.get(k).is_some(),
                v => doc.get(k) == Some(v),
            };
            ensure!(ok, "`bootenv --json {args}`: {k} is not {v}: {doc:#}");
        }
        verbs.insert(doc["verb"].as_str().unwrap_or_default().to_owned());
    }
    // The diff names what differs, typed.
    let (_, diff) = bootenv_json(&mut vm, "diff v1 v2")?;
    ensure!(
        diff["changes"].as_array().is_some_and(|c| c
            .iter()
            .any(|x| x["change"] == "modified" && x["path"] == "/etc/bootenv-test/name")),
        "{diff:#}"
    );
    // An upgrade: its sync and its trial as values; then a failing one.
    let (rc, up) = bootenv_json(&mut vm, "upgrade v7 -- true")?;
    ensure!(
        rc == 0 && up["trial"]["activated_as"] == "trial" && up["boot"]["kernels"][0]["be"] == "v7",
        "{up:#}"
    );
    verbs.insert("upgrade".into());
    // Refused, each with its kind and exit status.
    let refused = [
        ("upgrade v8 -- false", "command-failed", 1),
        ("activate nosuch", "not-found", 1),
        ("destroy v1", "refused", 1),
        ("create v2 --from v1", "exists", 1),
        ("import /run/v5.stream", "exists", 1),
        ("mount v3@factory --rw", "invalid", 1),
        (
            "factory-reset --mode full --erase --be nosuch",
            "not-found",
            1,
        ),
        ("install --disk /dev/vda --from /", "refused", 1),
        ("rollforward", "refused", 1),
        ("data-pools add tank", "invalid", 1),
        ("frob", "usage", 2),
        ("activate 'a b'", "usage", 2),
    ];
    for (args, kind, status) in refused {
        let (rc, doc) = bootenv_json(&mut vm, args)?;
        ensure!(
            rc == status && doc["error"]["kind"] == kind,
            "`bootenv --json {args}`: status {rc}, expected {status} and kind {kind}: {doc:#}"
        );
        if let Some(v) = doc["verb"].as_str() {
            verbs.insert(v.to_owned());
        }
    }
    // Nothing pending any more: the same cancel is unchanged.
    let (_, doc) = bootenv_json(&mut vm, "factory-reset --cancel")?;
    ensure!(
        doc["action"] == "nothing-pending" && doc["changed"] == false,
        "{doc:#}"
    );
    be_index(&mut vm)?;
    let every = bootenv::cli::VERBS;
    let missing: Vec<&str> = every
        .iter()
        .copied()
        .filter(|v| !verbs.contains(*v))
        .collect();
    ensure!(missing.is_empty(), "verbs not run with --json: {missing:?}");
    power_off(&mut vm)
}

/// The BE index: a menu writer keeps it, `grub-menu` then builds the menu from it without
/// listing every dataset, and a BE renamed with plain `zfs` is seen at once (the index is stale:
/// every dataset is listed again).
fn be_index(vm: &mut Vm) -> anyhow::Result<()> {
    // The command lines the runner logs with -v: a full listing ends with `-r tank/ROOT`.
    let menu = "bootenv -v grub-menu 2>/run/gm.err >/run/gm.out; echo \"program=$(grep -c '[$] zfs program' /run/gm.err) full=$(grep -c -- '-r tank/ROOT$' /run/gm.err) v2=$(grep -cF \"'bootenv-v2' {\" /run/gm.out) v2b=$(grep -c 'v2b left out of the menu' /run/gm.err)\"";
    let out = run_in(
        vm,
        &format!("bootenv sync-boot >/dev/null && test -s /run/bootenv/state/index && {menu}"),
    )?;
    ensure!(
        out.contains("program=1 full=0 v2=1 v2b=0"),
        "grub-menu did not use the index: {out}"
    );
    let out = run_in(
        vm,
        &format!("zfs rename tank/ROOT/v2 tank/ROOT/v2b && {menu}"),
    )?;
    ensure!(
        out.contains("program=1 full=1 v2=0 v2b=1"),
        "grub-menu after a plain rename: {out}"
    );
    // Back as it was when the index was kept: the index describes the pool again.
    let out = run_in(
        vm,
        &format!("zfs rename tank/ROOT/v2b tank/ROOT/v2 && {menu}"),
    )?;
    ensure!(
        out.contains("program=1 full=0 v2=1 v2b=0"),
        "grub-menu after renaming back: {out}"
    );
    Ok(())
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
    root_tarball(&mut vm)?;
    // The running system's disk is refused; so is a used disk without --force.
    let why = refused_json(
        &mut vm,
        "--pool fresh install --disk /dev/vda --from /run/r.tar --force",
        "refused",
    )?;
    ensure!(
        why.contains("in use"),
        "installing over the running system's disk: {why}"
    );
    let done = done_json(&mut vm, &format!("--pool fresh install --disk /dev/vdb --from /run/r.tar --name n1 --label 9.0 {INSTALL_CMDLINE}"))?;
    ensure!(
        done["be"] == "n1" && done["pool"] == "fresh" && done["bootable"] == true,
        "{done:#}"
    );
    let why = refused_json(
        &mut vm,
        "--pool other install --disk /dev/vdb --from /run/r.tar",
        "refused",
    )?;
    ensure!(
        why.contains("--force"),
        "a second install over a used disk: {why}"
    );
    power_off(&mut vm)?;
    // The new disk alone, on a new machine: UEFI, then BIOS.
    cx.new_firmware()?;
    let mut vm = grub_boot(cx, &blank, "n1")?;
    ensure!(
        vm.text().contains("BOOTENV-TEST config=version=v1;"),
        "n1 does not carry the installed config"
    );
    let list = done_json(&mut vm, "list")?;
    ensure!(
        listed(&list, "n1").is_some_and(|b| b["label"] == "9.0"
            && b["running"] == true
            && b["default"] == true
            && b["last_known_good"] == true),
        "{list:#}"
    );
    let out = run_in(
        &mut vm,
        "zfs list -H -t all -o name -r fresh; cat /proc/cmdline",
    )?;
    ensure!(
        out.contains("fresh/ROOT/n1@factory") && out.contains("fresh/ROOT/n1/config@factory"),
        "no factory snapshot: {out}"
    );
    ensure!(
        out.contains("bootenv.pool=fresh") && !out.contains("bootenv.trial"),
        "{out}"
    );
    let status = done_json(&mut vm, "status")?;
    ensure!(status["grub"]["default"] == "n1", "{status:#}");
    power_off(&mut vm)?;
    let mut vm = cx.bios(&blank)?;
    vm.expect(r"bootenv: loading ", BOOT)?;
    expect_ready(&mut vm, "n1")?;
    power_off(&mut vm)
}

/// A root file system tarball of the running test BE at /run/r.tar (its config says `n1`,
/// label 9.0), as a vendor would ship one.
fn root_tarball(vm: &mut Vm) -> anyhow::Result<()> {
    run_in(
        vm,
        &format!(
            "{} && tar -C /run/r -cf /run/r.tar . && rm -rf /run/r",
            copy_running_be("/run/r", "n1", "9.0")
        ),
    )?;
    Ok(())
}

fn cli_install_split(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let sys = cx.dir.join("system.img");
    let (d1, d2) = (cx.dir.join("data1.img"), cx.dir.join("data2.img"));
    disk::blank(&sys, 1024)?;
    disk::blank(&d1, 256)?;
    disk::blank(&d2, 256)?;
    let mut vm = cx.boot_disks(
        &[&disk, &sys, &d1, &d2],
        "bootenv=v1 bootenv.pool=tank betest.interactive",
    )?;
    expect_ready(&mut vm, "v1")?;
    root_tarball(&mut vm)?;
    // The system's own disk, or one disk twice, is refused before anything is written.
    let why = refused_json(
        &mut vm,
        "--pool fresh install --disk /dev/vdb --from /run/r.tar --data-disk /dev/vdb",
        "invalid",
    )?;
    ensure!(why.contains("named twice"), "{why}");
    let done = done_json(&mut vm, &format!("--pool fresh install --disk /dev/vdb --from /run/r.tar --name n1 --label 9.0 --data-disk /dev/vdc --data-disk /dev/vdd --data-pool store {INSTALL_CMDLINE}"))?;
    ensure!(
        done["pool"] == "fresh"
            && done["data_pool"] == "store"
            && done["data_disks"] == serde_json::json!(["/dev/vdc", "/dev/vdd"])
            && done["bootable"] == true,
        "{done:#}"
    );
    power_off(&mut vm)?;
    // The three disks on a new machine: UEFI. The agent imports the system pool alone; the
    // booted system imports the data pool (as bootenv-data-pools.service does).
    cx.new_firmware()?;
    let mut vm = cx.uefi_disks(&[&sys, &d1, &d2])?;
    vm.expect(r"bootenv: loading ", BOOT)?;
    expect_ready(&mut vm, "n1")?;
    let out = run_in(&mut vm, "zpool list -H -o name")?;
    ensure!(
        out.contains("fresh") && !out.contains("store"),
        "the agent imported more than the system pool: {out}"
    );
    let status = done_json(&mut vm, "status")?;
    let p = &status["data_pools"][0];
    ensure!(
        p["name"] == "store" && p["state"] == "not-tried" && p["imported"] == false,
        "{status:#}"
    );
    let doc = done_json(&mut vm, "data-pools import --device-wait=10")?;
    let p = &doc["pools"][0];
    ensure!(
        doc["changed"] == true && p["state"] == "imported" && p["health"] == "ONLINE",
        "{doc:#}"
    );
    let out = run_in(&mut vm, "zpool status store")?;
    ensure!(
        out.contains("mirror-0") && out.contains("vdb") && out.contains("vdc"),
        "the data pool is not a mirror of the two data disks: {out}"
    );
    power_off(&mut vm)?;
    // BIOS, the data pool imported at power-off: the agent still leaves it alone.
    let mut vm = cx.bios_disks(&[&sys, &d1, &d2])?;
    vm.expect(r"bootenv: loading ", BOOT)?;
    expect_ready(&mut vm, "n1")?;
    let out = run_in(&mut vm, "zpool list -H -o name")?;
    ensure!(
        out.contains("fresh") && !out.contains("store"),
        "the agent imported more than the system pool: {out}"
    );
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
    let sent = done_json(&mut vm, "export v2 /run/v2.stream")?;
    ensure!(
        sent["be"] == "v2" && sent["bytes"].as_u64() > Some(0),
        "{sent:#}"
    );
    let got = done_json(&mut vm, "--pool fresh import /run/v2.stream")?;
    ensure!(
        got["be"] == "v2" && got["dataset"] == "fresh/ROOT/v2" && got["bytes"] == sent["bytes"],
        "{got:#}"
    );
    let (rc, got) = run_json(
        &mut vm,
        "bootenv export v3 - 2>/dev/null | bootenv --json --pool fresh import - --name v3copy 2>/dev/null",
    )?;
    ensure!(rc == 0 && got["be"] == "v3copy", "{got:#}");
    let why = refused_json(&mut vm, "--pool fresh import /run/v2.stream", "exists")?;
    ensure!(why.contains("--name"), "importing v2 twice: {why}");
    run_in(&mut vm, "bootenv --pool fresh activate v2")?;
    let list = done_json(&mut vm, "--pool fresh list")?;
    ensure!(
        ["base", "v2", "v3copy"]
            .iter()
            .all(|b| listed(&list, b).is_some()),
        "{list:#}"
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

/// The command an upgrade runs in the new BE: it becomes test BE `name`.
fn becomes(name: &str) -> String {
    format!("sh -c 'echo {name} >/etc/bootenv-test/name && echo {name}.0 >/etc/bootenv-test/label && echo {name} >/etc/upgraded-to'")
}

fn cli_create_activate(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    let made = done_json(&mut vm, "create v4 --from v2 --label 4.0")?;
    ensure!(
        made["be"] == "v4" && made["label"] == "4.0" && made["changed"] == true,
        "{made:#}"
    );
    // Give the clone its own identity, through a writable mount of it.
    run_in(
        &mut vm,
        "d=$(bootenv mount v4 --rw) && echo v4 >$d/etc/bootenv-test/name && bootenv unmount v4",
    )?;
    let list = done_json(&mut vm, "list")?;
    ensure!(
        listed(&list, "v4").is_some_and(|b| b["label"] == "4.0"
            && b["origin"]
                .as_str()
                .is_some_and(|o| o.starts_with("tank/ROOT/v2@bootenv-"))),
        "{list:#}"
    );
    run_in(&mut vm, "bootenv activate v4")?;
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v4")?;
    // The clone of v2 has v2's config.
    ensure!(
        vm.text().contains("BOOTENV-TEST config=version=v2;"),
        "v4 does not carry v2's config"
    );
    let list = done_json(&mut vm, "list")?;
    ensure!(
        listed(&list, "v4").is_some_and(|b| b["running"] == true && b["default"] == true),
        "{list:#}"
    );
    power_off(&mut vm)
}

fn cli_upgrade_trial(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    run_in(&mut vm, "echo carried=1 >>/etc/config/app.conf")?;
    let (rc, up) = run_json(
        &mut vm,
        &format!(
            "cd /root && bootenv --json upgrade v4 -- {} 2>/dev/null",
            becomes("v4")
        ),
    )?;
    ensure!(
        rc == 0 && up["trial"]["activated_as"] == "trial" && up["trial"]["be"] == "v4",
        "{up:#}"
    );
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
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    let before = run_in(
        &mut vm,
        "zfs list -H -t all -o name -r tank | grep -v '@bootenv-export' | sort",
    )?;
    let why = refused_json(
        &mut vm,
        "upgrade v4 -- sh -c 'echo half >/etc/half; exit 3'",
        "command-failed",
    )?;
    ensure!(
        why.contains("the running boot environment is unchanged"),
        "{why}"
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
    let status = done_json(&mut vm, "status")?;
    let grub = &status["grub"];
    ensure!(
        grub["default"] == "v1" && grub["next"].is_null() && grub["trial"].is_null(),
        "{status:#}"
    );
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    power_off(&mut vm)
}

fn cli_rollback_walk(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    // What the walk goes through is the history of defaults: each upgrade's trial is committed
    // from here (`mark-good NAME`) instead of by booting it (cli-upgrade-trial and trial-commit
    // boot trials through GRUB); the walk's own steps are each booted through GRUB.
    for to in ["v4", "v5", "v6"] {
        let out = run_in(
            &mut vm,
            &format!(
                "bootenv upgrade {to} -- {} && bootenv mark-good {to}",
                becomes(to)
            ),
        )?;
        ensure!(
            out.contains(&format!("{to} is on trial"))
                && out.contains(&format!("{to} passed its trial")),
            "{out}"
        );
    }
    let st = run_in(&mut vm, "bootenv status")?;
    ensure!(st.contains("grub: default=v6 next=- trial=-"), "{st}");
    for (verb, want) in [
        ("rollback", "v5"),
        ("rollback", "v4"),
        ("rollforward", "v5"),
    ] {
        let walked = done_json(&mut vm, verb)?;
        ensure!(
            walked["to"] == want && walked["changed"] == true,
            "{verb}: {walked:#}"
        );
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
    let diff = done_json(&mut vm, "diff v1 v2")?;
    let modified = |p: &str| {
        diff["changes"].as_array().is_some_and(|c| {
            c.iter()
                .any(|x| x["change"] == "modified" && x["path"] == p)
        })
    };
    ensure!(
        modified("/etc/bootenv-test/name") && modified("/etc/config/app.conf"),
        "{diff:#}"
    );
    power_off(&mut vm)
}

fn cli_destroy_safety(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    let why = refused_json(&mut vm, "destroy v1", "refused")?;
    ensure!(
        why.contains("v1 is running now")
            && why.contains("v1 is the default")
            && why.contains("last known-good"),
        "{why}"
    );
    run_in(&mut vm, "bootenv create v4 --from v2")?;
    let why = refused_json(&mut vm, "destroy v2", "refused")?;
    ensure!(
        why.contains("clones of v2's snapshots") && why.contains("tank/ROOT/v4"),
        "{why}"
    );
    run_in(&mut vm, "bootenv activate --trial=2 v3")?;
    let why = refused_json(&mut vm, "destroy v3", "refused")?;
    ensure!(why.contains("v3 is on trial"), "{why}");
    run_in(&mut vm, "bootenv activate v1")?;
    run_in(&mut vm, "zfs create tank/ROOT/v3/extra")?;
    let why = refused_json(&mut vm, "destroy v3", "refused")?;
    ensure!(why.contains("did not make (tank/ROOT/v3/extra)"), "{why}");
    // The dry run says exactly what goes.
    let dry = done_json(&mut vm, "destroy v4 --dry-run")?;
    let would: Vec<String> = ["datasets", "snapshots"]
        .iter()
        .flat_map(|k| dry[k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    ensure!(
        !would.is_empty() && dry["dry_run"] == true && dry["changed"] == false,
        "{dry:#}"
    );
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
