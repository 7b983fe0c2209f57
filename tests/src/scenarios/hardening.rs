//! No input can brick the boot (issue 16): hostile properties and the real GRUB menu, a kernel
//! command line of unusual bytes, names FAT folds together, and writing verbs run at once.

use super::*;

/// The scenarios of this family.
pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "hostile-properties-menu",
            "OVMF+GRUB with oversized, many-word and --bearing cmdline properties (the pool's too) and a hostile label: the bad BEs are left out with reasons, the others boot by default and by choice, a trial still counts and rolls back",
            hostile_properties_menu,
        ),
        Scenario::new(
            "cmdline-bytes",
            "a command line of non-UTF-8 bytes, unusual whitespace, quotes and --: the agent boots the BE it names, and its init gets exactly the arguments the kernel gave",
            cmdline_bytes,
        ),
        Scenario::new(
            "fat-name-collisions",
            "names FAT cannot tell apart are refused; ones made with plain zfs are ignored with a reason; the ESP stays fsck-clean and every BE boots through GRUB",
            fat_name_collisions,
        ),
        Scenario::new(
            "concurrent-verbs",
            "activate, mark-good, sync-boot, create, destroy and the kernel hook started at once, twice (with --wait, and one without): all done one at a time, state, menu and block agree, fsck-clean, the activated BE boots through GRUB",
            concurrent_verbs,
        ),
    ]
}

/// v2's command line in `hostile-properties-menu`: what the test BE needs, padded to exactly the
/// most bytes and words a property may hold, so that its GRUB entry makes the longest kernel
/// line bootenv writes and the keys after it must still arrive.
fn longest_cmdline() -> String {
    let mut words: Vec<String> = [
        "console=ttyS0",
        "quiet",
        "betest.interactive",
        "betest.on-trial=panic",
    ]
    .iter()
    .map(|w| w.to_string())
    .collect();
    while words.len() < bootenv::bootloader::grub::MAX_CMDLINE_WORDS - 1 {
        words.push(format!("p{}=x", words.len()));
    }
    let used = words.iter().map(|w| w.len() + 1).sum::<usize>() + "pad=".len();
    words.push(format!(
        "pad={}",
        "x".repeat(bootenv::bootloader::grub::MAX_CMDLINE - used)
    ));
    words.join(" ")
}

fn hostile_properties_menu(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let longest = longest_cmdline();
    ensure!(
        longest.len() == bootenv::bootloader::grub::MAX_CMDLINE
            && bootenv::bootloader::grub::check_cmdline(&longest).is_ok(),
        "not a command line at the limits: {longest}"
    );
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    run_long(
        &mut vm,
        "bootenv create v4 --from v1 && bootenv create v5 --from v1",
        240,
    )?;
    // The pool's value (inherited by v3) holds `--`; v4's has 40 words, v5's 1,100 bytes; v1
    // and v2 have values of their own that are fine (v2's at the limits), and v2 a label made
    // to break a script.
    run_in(
        &mut vm,
        &format!("zfs set org.bootenv:cmdline='console=ttyS0 quiet -- bootenv=v3' tank/ROOT \
         && zfs set org.bootenv:cmdline='console=ttyS0 quiet betest.interactive' tank/ROOT/v1 \
         && zfs set org.bootenv:cmdline='{longest}' tank/ROOT/v2 \
         && zfs set org.bootenv:label=\"2.0 'beta'; reboot \\$x {{y}} \\\"q\\\" $(printf '\\001\\033')日本 $(printf '%0300d' 0)\" tank/ROOT/v2 \
         && zfs inherit org.bootenv:cmdline tank/ROOT/v3 \
         && zfs set org.bootenv:cmdline=\"$(for i in $(seq 40); do printf 'w%d ' $i; done)\" tank/ROOT/v4 \
         && zfs set org.bootenv:cmdline=\"console=ttyS0 k=$(printf '%01100d' 0)\" tank/ROOT/v5"),
    )?;
    let out = run_long(
        &mut vm,
        "bootenv sync-boot; bootenv status; bootenv list",
        120,
    )?;
    for (be, why) in [
        ("v3", "holds --"),
        ("v4", "holds 40 words"),
        ("v5", "bytes long"),
    ] {
        ensure!(
            out.lines().any(|l| l
                .starts_with(&format!("menu: {be} is left out of the GRUB menu:"))
                && l.contains(why)
                && l.contains("zfs set org.bootenv:cmdline=")),
            "{be} is not reported as left out ({why}):\n{out}"
        );
    }
    ensure!(
        !out.contains("menu: v1 is left out") && !out.contains("menu: v2 is left out"),
        "{out}"
    );
    power_off(&mut vm)?;

    // By default: GRUB parses the menu, lists v2 (its label made safe) and v1 only, and boots
    // v1 when nobody touches it.
    let mut vm = cx.uefi(&disk)?;
    vm.expect(r"v2: 2\.0 \?beta\?\? reboot \?x \?y\? \?q\?", BOOT)?;
    vm.expect(r"v1: 1\.0 \(default, last known-good\)", STEP)?;
    vm.expect(r"bootenv: loading v1", BOOT)?;
    vm.refute(r"v[345]: ")?;
    vm.refute(r"syntax error")?;
    expect_ready(&mut vm, "v1")?;
    let out = run_in(&mut vm, "cat /proc/cmdline")?;
    ensure!(
        out.contains(
            "bootenv=v1 bootenv.pool=tank console=ttyS0 quiet betest.interactive panic=10"
        ) && !out.contains(" -- "),
        "unexpected command line: {out}"
    );
    menu_timeout(&mut vm, 30)?;
    power_off(&mut vm)?;

    // By choice: up to v2 (the first entry), Enter. Then a trial of v2 with one try.
    let mut vm = cx.uefi(&disk)?;
    vm.expect(r"\*v1: 1\.0", BOOT)?;
    choose_in_menu(&mut vm, MENU_PREV, r"v2: 2\.0")?;
    vm.expect(r"bootenv: loading v2", BOOT)?;
    expect_ready(&mut vm, "v2")?;
    // The longest line bootenv writes arrives whole: nothing cut, nothing after it lost.
    let out = run_in(&mut vm, "cat /proc/cmdline")?;
    ensure!(
        out.contains(&format!("bootenv=v2 bootenv.pool=tank {longest} panic=10"))
            && !out.contains("bootenv.trial"),
        "unexpected command line: {out}"
    );
    menu_timeout(&mut vm, 1)?;
    let out = run_in(&mut vm, "bootenv activate --trial=1 v2")?;
    ensure!(out.contains("v2 is on trial"), "{out}");
    power_off(&mut vm)?;

    // The trial's one try is counted and panics; then GRUB rolls back to v1 by itself.
    let mut vm = cx.uefi(&disk)?;
    expect_be(&mut vm, "v2")?;
    vm.expect(r"BOOTENV-TEST cmdline=[^\r\n]*bootenv\.trial=0", STEP)?;
    expect_panic(&mut vm)?;
    let mut vm = cx.uefi(&disk)?;
    expect_be(&mut vm, "v1")?;
    vm.expect(r"BOOTENV-TEST cmdline=[^\r\n]*bootenv\.rollback=v2", STEP)?;
    vm.expect(
        r"BOOTENV-TEST status ROLLBACK: the trial of v2 used up its tries",
        STEP,
    )?;
    vm.expect(r"BOOTENV-TEST ready", STEP)?;
    // The bad ones are still reported, each with its fix.
    let out = run_in(&mut vm, "bootenv list")?;
    for be in ["v3", "v4", "v5"] {
        ensure!(
            out.lines()
                .any(|l| l.starts_with(be) && l.contains("left out of the GRUB menu")),
            "{be}:\n{out}"
        );
    }
    power_off(&mut vm)
}

/// The command line of `cmdline-bytes` after the base one, and the arguments the kernel hands
/// to init for it (`init/main.c`: before `--`, words without `=` and `.` that the kernel does not
/// know; after it, every word, quotes removed and `key=value` joined again).
const ODD_LINE: &[u8] = b"bootenv=\xff\xfe bootenv.pool=tank\tplain1\x0b\"quoted arg with spaces\"\x0c\xe9t\xe9\r\
raw\x01byte \xa0bootenv.trial=\xff \"x=y z\"\nbootenv=v2 betest.argv plain2 -- after1 \"q u\" bootenv=v3 k=v";
const ODD_ARGV: [&[u8]; 9] = [
    b"plain1",
    b"quoted arg with spaces",
    b"\xe9t\xe9",
    b"raw\x01byte",
    b"plain2",
    b"after1",
    b"q u",
    b"bootenv=v3",
    b"k=v",
];

fn cmdline_bytes(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = cx.boot_bytes(&disk, ODD_LINE)?;
    // v2, the last bootenv= before `--`: not the undecodable first one, not v3 after `--`.
    expect_be(&mut vm, "v2")?;
    let got = vm.expect(r"BOOTENV-TEST argv=([0-9a-f,]*)\s", STEP)?;
    let want: String = ODD_ARGV
        .iter()
        .map(|a| a.iter().map(|b| format!("{b:02x}")).collect::<String>() + ",")
        .collect();
    ensure!(
        got[1] == want,
        "init's arguments differ from the kernel's:\n got {}\nwant {want}",
        got[1]
    );
    // What the agent could not use is reported, not fatal.
    vm.expect(r"BOOTENV-TEST report warning=[^\r\n]*bootenv\.trial", STEP)?;
    vm.expect(r"BOOTENV-TEST status booted: v2", STEP)?;
    expect_done(&mut vm, "v2")
}

fn fat_name_collisions(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    // Refused by bootenv, each with FAT's reason.
    for (cmd, why) in [
        (
            "bootenv create V1 --from v1",
            "differs from v1 only in case, which the ESP (FAT) cannot tell apart",
        ),
        (
            "bootenv create Con --from v1",
            "FAT reserves it for a device",
        ),
        (
            "bootenv create lpt3.x --from v1",
            "FAT reserves it for a device",
        ),
        (
            "bootenv create grub.cfg --from v1",
            "bootenv keeps a file of that name",
        ),
        ("bootenv create v9. --from v1", "FAT drops"),
        (
            "bootenv rename v3 V2",
            "differs from v2 only in case, which the ESP (FAT) cannot tell apart",
        ),
    ] {
        let out = run_fails(&mut vm, cmd)?;
        ensure!(out.contains(why), "`{cmd}`: {out}");
    }
    // Made behind bootenv's back: ignored, each with its reason, and left alone.
    run_long(
        &mut vm,
        "zfs snapshot tank/ROOT/v1@fat \
         && for n in V1 aux grub.cfg; do zfs clone -o canmount=noauto -o mountpoint=/ tank/ROOT/v1@fat tank/ROOT/$n || exit 1; done",
        120,
    )?;
    let out = run_long(
        &mut vm,
        "bootenv sync-boot && bootenv activate v3 && bootenv list && bootenv status",
        180,
    )?;
    for (n, why) in [
        ("V1", "FAT ignores case"),
        ("aux", "FAT reserves it for a device"),
        ("grub.cfg", "bootenv keeps a file of that name"),
    ] {
        ensure!(
            out.lines()
                .any(|l| l.contains(&format!("{n} ignored:")) && l.contains(why)),
            "{n} is not listed as ignored ({why}):\n{out}"
        );
    }
    let out = run_fails(&mut vm, "bootenv destroy V1")?;
    ensure!(!out.contains("destroyed"), "{out}");
    let out = run_in(
        &mut vm,
        "zfs list -H -o name -r tank/ROOT | sort; ls /run/bootenv/esp/bootenv; ls /run/bootenv/esp/bootenv/v1",
    )?;
    for ds in ["tank/ROOT/V1", "tank/ROOT/aux", "tank/ROOT/grub.cfg"] {
        ensure!(out.lines().any(|l| l == ds), "{ds} is gone:\n{out}");
    }
    ensure!(
        out.lines().any(|l| l.starts_with("k-")),
        "v1's kernel entry is gone from the ESP:\n{out}"
    );
    power_off(&mut vm)?;
    // Every BE boots through GRUB: v3 by default, then v1 and v2 once each.
    let mut vm = grub_boot(cx, &disk, "v3")?;
    run_in(&mut vm, "bootenv activate --once v1")?;
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v1")?;
    run_in(&mut vm, "bootenv activate --once v2")?;
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v2")?;
    power_off(&mut vm)?;
    let damage = disk::esp_damage(&disk, &cx.dir)?;
    ensure!(damage.is_empty(), "fsck.fat finds damage: {damage:?}");
    Ok(())
}

/// The writing verbs of one round, all started at once (`{R}`: the round): each is named, and
/// all but the last wait for the lock; the last may be refused.
const VERBS: [(&str, &str); 8] = [
    ("activate", "bootenv --wait activate v2"),
    ("mark-good", "bootenv --wait mark-good"),
    ("sync", "bootenv --wait sync-boot"),
    ("create", "bootenv --wait create c{R} --from v1"),
    ("destroy", "bootenv --wait destroy c{R-1}"),
    (
        "hook",
        "/etc/kernel/postinst.d/zz-bootenv 6.1.0 /boot/vmlinuz",
    ),
    ("activate2", "bootenv --wait activate v2"),
    ("nowait", "bootenv sync-boot"),
];

fn concurrent_verbs(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    run_long(&mut vm, "bootenv create c0 --from v1", 120)?;
    for round in 1..=2 {
        // Each verb's status goes to a file of its own; read after all have ended.
        let mut line = String::from("rm -f /tmp/cv-*; ");
        for (name, cmd) in VERBS {
            let cmd = cmd
                .replace("{R}", &round.to_string())
                .replace("{R-1}", &(round - 1).to_string());
            line.push_str(&format!(
                "( {cmd} >/tmp/cv-{name}.out 2>&1; echo $? >/tmp/cv-{name}.rc ) & "
            ));
        }
        line.push_str(
            "wait; for f in /tmp/cv-*.rc; do n=${f#/tmp/cv-}; echo \"rc ${n%.rc} $(cat $f)\"; done; cat /tmp/cv-nowait.out /tmp/cv-hook.out",
        );
        let out = run_long(&mut vm, &line, 400)?;
        let rcs: std::collections::BTreeMap<&str, &str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("rc "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        let names: Vec<&str> = rcs.keys().copied().collect();
        let mut want: Vec<&str> = VERBS.iter().map(|v| v.0).collect();
        want.sort_unstable();
        ensure!(
            names == want,
            "round {round}: not every verb ended ({names:?}):\n{out}"
        );
        for (name, rc) in &rcs {
            if *name == "nowait" {
                // Without --wait: done, or refused with the message that says what to do.
                ensure!(
                    *rc == "0" || out.contains("--wait[=SECONDS]"),
                    "round {round}: sync-boot without --wait failed otherwise:\n{out}"
                );
            } else {
                ensure!(
                    *rc == "0",
                    "round {round}: {name} failed:\n{}",
                    run_in(&mut vm, &format!("cat /tmp/cv-{name}.out"))?
                );
            }
        }
        // The hook never fails a package operation: it says so instead.
        ensure!(
            !out.contains("could not copy the kernels"),
            "round {round}: the kernel hook's sync-boot failed:\n{out}"
        );
    }
    // State record, menu and block agree: v2 the default, v1 the known-good, c2 made, c0 and c1
    // destroyed (c1 in the second round).
    let out = run_in(
        &mut vm,
        "bootenv status; bootenv list; grep -c . /run/bootenv/esp/bootenv/grub.cfg; grep -E '^set bootenv_boot=|menuentry' /run/bootenv/esp/bootenv/grub.cfg; head -c 1024 /run/bootenv/esp/bootenv/grubenv | grep bootenv_",
    )?;
    ensure!(!out.contains("state: unreadable"), "{out}");
    ensure!(out.contains("grub: default=v2 next=- trial=-"), "{out}");
    ensure!(out.contains("last known-good: v1"), "{out}");
    ensure!(
        out.contains("set bootenv_boot=v2"),
        "the menu's default is not v2:\n{out}"
    );
    ensure!(out.contains("bootenv_default=v2"), "{out}");
    ensure!(
        out.contains("--id 'bootenv-c2'"),
        "c2 is not in the menu:\n{out}"
    );
    for gone in ["c0", "c1"] {
        ensure!(
            list_row(&out, gone).is_none() && !out.contains(&format!("--id 'bootenv-{gone}'")),
            "{gone} was destroyed but is still listed:\n{out}"
        );
    }
    power_off(&mut vm)?;
    let damage = disk::esp_damage(&disk, &cx.dir)?;
    ensure!(damage.is_empty(), "fsck.fat finds damage: {damage:?}");
    // The activated BE boots through GRUB.
    let mut vm = grub_boot(cx, &disk, "v2")?;
    let out = run_in(&mut vm, "bootenv status")?;
    ensure!(out.contains("grub: default=v2 next=- trial=-"), "{out}");
    power_off(&mut vm)
}
