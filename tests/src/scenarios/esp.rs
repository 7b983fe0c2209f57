//! The ESP: power cuts after bootenv's writes, and the shared kernel store.

use super::*;

/// The scenarios of this family.
pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "esp-powercut-after-write",
            "power cut right after create and activate wrote the ESP: fsck.fat finds no damaged file and GRUB boots the activated BE",
            esp_powercut_after_write,
        ),
        Scenario::new(
            "esp-full-activate",
            "with the ESP full, activating a BE whose kernel cannot be copied changes nothing and says why; a stale kernel entry is flagged; the default still boots through GRUB; with space freed the same commands work",
            esp_full_activate,
        ),
        Scenario::new(
            "esp-shared-kernels",
            "17 BEs of one kernel fit a 256 MiB ESP that holds 16 kernel copies: one shared copy, ESP usage flat; GRUB boots the newest; a kernel directory of ESP format 1 boots and stays while its BE boots that kernel",
            esp_shared_kernels,
        ),
    ]
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
const SHARED_BES: usize = 14;

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

/// What `esp-full-activate` compares before and after a refused command: the menu, the block,
/// the state record and the pool's default.
const BOOT_STATE: &str = "md5sum /run/bootenv/esp/bootenv/grub.cfg /run/bootenv/esp/bootenv/grubenv /run/bootenv/state/state | cut -d' ' -f1; zpool get -H -o value bootfs tank";

fn esp_full_activate(cx: &mut Ctx) -> anyhow::Result<()> {
    let disk = cx.golden_copy("disk")?;
    let mut vm = direct_ready(cx, &disk, "v1", "")?;
    // v4: a clone of v1 whose initramfs then changes, so its kernel needs a copy of its own.
    run_in(
        &mut vm,
        "bootenv create v4 --from v1 >/dev/null && d=$(bootenv mount v4 --rw) && echo v4 >$d/etc/bootenv-test/name \
&& head -c 1048576 /dev/zero >>$d/boot/initrd.img && bootenv unmount v4",
    )?;
    // The ESP full: nothing of v4's kernel fits.
    let out = run_long(
        &mut vm,
        "dd if=/dev/zero of=/run/bootenv/esp/filler bs=1M 2>/dev/null; sync; df -k /run/bootenv/esp | tail -n1",
        600,
    )?;
    let free: u64 = out
        .lines()
        .rfind(|l| l.contains("/run/bootenv/esp"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|f| f.parse().ok())
        .unwrap_or(u64::MAX);
    ensure!(free < 1024, "the ESP still has {free} KiB free: {out}");
    let before = run_in(&mut vm, BOOT_STATE)?;
    for how in ["", "--once ", "--trial=2 "] {
        let out = run_fails(&mut vm, &format!("bootenv activate {how}v4"))?;
        ensure!(
            out.contains("nothing was changed")
                && out.contains("the ESP has 0 MiB free")
                && out.contains("bootenv sync-boot v4"),
            "activate {how}v4 on a full ESP: {out}"
        );
        let after = run_in(&mut vm, BOOT_STATE)?;
        ensure!(
            after == before,
            "activate {how}v4 changed the boot state:\nbefore {before}\nafter {after}"
        );
    }
    let out = run_in(&mut vm, "bootenv list; bootenv status")?;
    ensure!(
        list_row(&out, "v1").is_some_and(|r| r[2].contains('R'))
            && out.contains("grub: default=v1 next=- trial=-"),
        "{out}"
    );
    // The running BE's initramfs rebuilt while the ESP is full: its entry is stale, and said so.
    run_in(&mut vm, "head -c 4096 /dev/zero >>/boot/initrd.img")?;
    run_fails(&mut vm, "bootenv sync-boot v1")?;
    let out = run_in(&mut vm, "bootenv list; bootenv status")?;
    ensure!(
        out.contains("STALE kernel on the ESP (GRUB boots older files: `bootenv sync-boot v1`)")
            && out.contains("ESP: the kernel or initramfs of v1 on the ESP is STALE"),
        "{out}"
    );
    power_off(&mut vm)?;
    // The default still boots through GRUB (its older files), and with room the same commands
    // work.
    let mut vm = grub_boot(cx, &disk, "v1")?;
    run_in(
        &mut vm,
        "rm /run/bootenv/esp/filler && bootenv sync-boot v1",
    )?;
    let done = done_json(&mut vm, "activate v4")?;
    ensure!(
        done["kernel"]["result"] == "copied"
            && done["activated_as"] == "default"
            && done["changed"] == true,
        "{done:#}"
    );
    let out = run_in(&mut vm, "bootenv list")?;
    ensure!(
        !out.contains("STALE") && list_row(&out, "v4").is_some_and(|r| r[2].contains('R')),
        "{out}"
    );
    power_off(&mut vm)?;
    let mut vm = grub_boot(cx, &disk, "v4")?;
    power_off(&mut vm)
}
