//! The data-pool scenarios: an appliance's customer data in a pool of its own on other disks,
//! imported by the booted Debian system (`bootenv-data-pools.service`) after the switch of root,
//! never by the agent, and never in the way of a boot, a mark-good or a rollback. Each starts
//! from its own overlay of the [`Fixture::DebianDisk`] (systemd is the subject) with blank
//! data disks beside it, and makes the data pool in its first boot.

use super::deb::{debian_boot, debian_boot_with, debian_power_off};
use super::*;
use std::collections::BTreeMap;

/// The scenarios of this family.
pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "data-pool-boot",
            "system and data pools on two disks: the Debian BE boots without waiting for the data pool, which is imported after the switch of root (never by the agent) and before a service that needs it",
            data_pool_boot,
        ).needs(Fixture::DebianDisk),
        Scenario::new(
            "data-pool-missing",
            "the data pool's disks are absent, then one of its two disks: the Debian BE boots, is marked good, reports the data pool missing then unavailable with the fix, the service that needs it fails visibly, and a failed trial still rolls back",
            data_pool_missing,
        ).needs(Fixture::DebianDisk),
        Scenario::new(
            "data-pool-reset-full",
            "a full factory reset covering datasets in a data pool, carried out by the booted system's import of the pool before anything of it is mounted, cut by a power cut at two points, ends where an uninterrupted reset ends",
            data_pool_reset_full,
        ),
    ]
}

/// Installs, in the running Debian BE, a service that needs the data pool
/// (`Requires=`/`After=bootenv-data-pools.service`) and prints what it sees on the console.
const DATA_SERVICE: &str = "printf '%s\\n' '#!/bin/sh' 'echo \"BOOTENV-TEST data-service file=$(cat /srv/data/cust1/file 2>/dev/null) pools=$(zpool list -H -o name | tr \"\\n\" ,)\"' >/usr/local/sbin/betest-data \
&& chmod 755 /usr/local/sbin/betest-data \
&& printf '%s\\n' '[Unit]' 'Requires=bootenv-data-pools.service' 'After=bootenv-data-pools.service' '[Service]' 'Type=oneshot' 'RemainAfterExit=yes' 'StandardOutput=journal+console' 'ExecStart=/usr/local/sbin/betest-data' '[Install]' 'WantedBy=multi-user.target' >/etc/systemd/system/betest-data.service \
&& systemctl enable betest-data.service";

/// Makes pool `data` on `vdevs` with a customer dataset holding a file, names it as the system
/// pool's data pool and installs [`DATA_SERVICE`], as an operator would.
fn make_data_pool(vm: &mut Vm, vdevs: &str) -> anyhow::Result<()> {
    run_long(
        vm,
        &format!("zpool create -f -o cachefile=none -O mountpoint=/srv/data data {vdevs} && zfs create data/cust1 && echo kept >/srv/data/cust1/file && zfs create data/cust2 && {DATA_SERVICE}"),
        300,
    )?;
    let doc = done_json(vm, "data-pools add data")?;
    ensure!(
        doc["changed"] == true && doc["pools"][0]["name"] == "data",
        "{doc:#}"
    );
    // Not exported: the machine is powered off with the pool in use, as an appliance is.
    Ok(())
}

/// `key=value` lines of a command's output.
fn keys(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter(|l| !l.starts_with("run "))
        .filter_map(|l| l.trim().split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// What the booted system says once its start-up has ended: the system's state, when the data
/// pools' unit and the service that needs the data started and ended, and when systemd started
/// in the BE after the switch of root (monotonic µs).
const SETTLED: &str = "echo system=$(systemctl is-system-running --wait); \
for u in bootenv-data-pools betest-data; do echo $u=$(systemctl is-active $u.service); \
echo $u-start=$(systemctl show -p ExecMainStartTimestampMonotonic --value $u.service); \
echo $u-exit=$(systemctl show -p ExecMainExitTimestampMonotonic --value $u.service); done; \
echo systemd-start=$(systemctl show -p UserspaceTimestampMonotonic --value)";

fn micros(k: &BTreeMap<String, String>, key: &str) -> anyhow::Result<u64> {
    k.get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {key} in {k:?}"))
}

fn data_pool_boot(cx: &mut Ctx) -> anyhow::Result<()> {
    cx.vm_limit = Duration::from_secs(3000);
    let disk = cx.fixture_copy(Fixture::DebianDisk, "debian")?;
    let data = cx.dir.join("data.img");
    disk::blank(&data, 512)?;
    let mut vm = debian_boot_with(cx, &[&disk, &data], "deb1")?;
    make_data_pool(&mut vm, "/dev/vdb")?;
    debian_power_off(&mut vm)?;

    let mut vm = debian_boot_with(cx, &[&disk, &data], "deb1")?;
    let k = keys(&run_long(&mut vm, SETTLED, 300)?);
    ensure!(
        k.get("system").map(String::as_str) == Some("running")
            && k.get("bootenv-data-pools").map(String::as_str) == Some("active")
            && k.get("betest-data").map(String::as_str) == Some("active"),
        "the system did not come up whole: {k:?}"
    );
    let text = vm.text();
    ensure!(
        text.contains("BOOTENV-TEST data-service file=kept pools=data,deb,"),
        "the service that needs the data did not find it mounted"
    );
    // The import ran in the booted system, after the switch of root, and ended before the
    // service that needs the data started.
    let systemd = micros(&k, "systemd-start")?;
    let (dp_start, dp_exit) = (
        micros(&k, "bootenv-data-pools-start")?,
        micros(&k, "bootenv-data-pools-exit")?,
    );
    let svc_start = micros(&k, "betest-data-start")?;
    ensure!(
        systemd > 0 && dp_start > systemd && dp_exit <= svc_start,
        "the data pools' unit ran at {dp_start}..{dp_exit} µs, systemd started at {systemd} µs, the service at {svc_start} µs"
    );
    // Nobody imported it before bootenv's unit: not the agent, not an early ZFS service.
    let doc = done_json(&mut vm, "data-pools")?;
    let p = &doc["pools"][0];
    ensure!(
        p["state"] == "imported" && p["imported"] == true && p["health"] == "ONLINE",
        "{doc:#}"
    );
    // What the console shows up to the agent's hand-over to initramfs-tools' switch of root.
    let agent_part = text
        .split("initramfs-tools starts /sbin/init")
        .next()
        .unwrap_or_default();
    ensure!(
        agent_part.contains("importing pool deb") && !agent_part.contains("pool data"),
        "the agent did more than import the system pool:\n{agent_part}"
    );
    let status = done_json(&mut vm, "status")?;
    ensure!(status["data_pools"][0]["state"] == "imported", "{status:#}");
    debian_power_off(&mut vm)
}

fn data_pool_missing(cx: &mut Ctx) -> anyhow::Result<()> {
    cx.vm_limit = Duration::from_secs(3000);
    let disk = cx.fixture_copy(Fixture::DebianDisk, "debian")?;
    let (d1, d2) = (cx.dir.join("data1.img"), cx.dir.join("data2.img"));
    disk::blank(&d1, 256)?;
    disk::blank(&d2, 256)?;
    let mut vm = debian_boot_with(cx, &[&disk, &d1, &d2], "deb1")?;
    // A pool striped over two disks; the unit waits 5 s for disks instead of 30; deb2 is a
    // BE whose init fails, for the trial.
    make_data_pool(&mut vm, "/dev/vdb /dev/vdc")?;
    run_long(
        &mut vm,
        "mkdir -p /etc/systemd/system/bootenv-data-pools.service.d \
&& printf '%s\\n' '[Service]' 'ExecStart=' 'ExecStart=/usr/sbin/bootenv data-pools import --device-wait=5' >/etc/systemd/system/bootenv-data-pools.service.d/test.conf \
&& bootenv create deb2 --from deb1 \
&& zfs set org.bootenv:cmdline='console=ttyS0 panic=5 init=/bin/false' deb/ROOT/deb2 && bootenv sync-boot",
        600,
    )?;
    debian_power_off(&mut vm)?;

    // No disk of the data pool: the system boots and is marked good; the pool is missing.
    let mut vm = debian_boot(cx, &disk, "deb1")?;
    ensure!(
        vm.text()
            .contains("BOOTENV-TEST mark-good=active result=success"),
        "deb1 was not marked good without its data pool"
    );
    let k = keys(&run_long(&mut vm, SETTLED, 300)?);
    ensure!(
        k.get("system").map(String::as_str) == Some("degraded")
            && k.get("bootenv-data-pools").map(String::as_str) == Some("failed")
            && k.get("betest-data").map(String::as_str) != Some("active"),
        "the missing data pool is not reported by systemd: {k:?}"
    );
    ensure!(
        !vm.text().contains("BOOTENV-TEST data-service"),
        "the service that needs the data ran without it"
    );
    let status = done_json(&mut vm, "status")?;
    let p = &status["data_pools"][0];
    ensure!(
        p["state"] == "missing"
            && p["message"]
                .as_str()
                .is_some_and(|m| m.contains("bootenv data-pools remove data")),
        "{status:#}"
    );
    let msg = refused_json(&mut vm, "data-pools import --device-wait=1", "unavailable")?;
    ensure!(msg.contains("data: missing"), "{msg}");
    let doc = done_json(&mut vm, "activate --trial=1 deb2")?;
    ensure!(doc["activated_as"] == "trial", "{doc:#}");
    vm.send("poweroff\n")?;
    vm.expect(r"BOOTENV-TEST be-done", STEP)?;
    vm.expect_poweroff(Duration::from_secs(300))?;

    // One disk of two: the pool is there but cannot be imported. The trial of deb2 fails
    // (its init exits: a kernel panic), and GRUB rolls back to deb1 by itself.
    let mut vm = cx.uefi_disks(&[&disk, &d1])?;
    vm.expect(r"bootenv\.trial=0", Duration::from_secs(400))?;
    vm.expect(r"Kernel panic", Duration::from_secs(400))?;
    vm.wait(STEP)?; // the restart after the panic ends this VM (QEMU runs with -no-reboot)
    let mut vm = debian_boot_with(cx, &[&disk, &d1], "deb1")?;
    let text = vm.text();
    ensure!(
        text.contains("bootenv.rollback=deb2")
            && text.contains("BOOTENV-TEST status ROLLBACK: the trial of deb2 used up its tries")
            && text.contains("BOOTENV-TEST mark-good=active result=success"),
        "deb1 did not roll back and get marked good without its data pool"
    );
    let k = keys(&run_long(&mut vm, SETTLED, 300)?);
    ensure!(
        k.get("bootenv-data-pools").map(String::as_str) == Some("failed"),
        "{k:?}"
    );
    let status = done_json(&mut vm, "status")?;
    let p = &status["data_pools"][0];
    ensure!(
        p["state"] == "unavailable"
            && p["message"]
                .as_str()
                .is_some_and(|m| m.contains("state UNAVAIL")),
        "{status:#}"
    );
    vm.send("poweroff\n")?;
    vm.expect(r"BOOTENV-TEST be-done", STEP)?;
    vm.expect_poweroff(Duration::from_secs(300))
}

/// In test BE v1 (disks: the golden disk, a blank data disk): the system pool's own data is
/// left out of resets (so that only the data pool's swaps meet the `:data` failpoints); data
/// pool `data` holds `cust1` (changed since its factory snapshot), `cust2` (no factory
/// snapshot: a reset empties it), both marked for a full reset, and `keep`, not marked; then a
/// full reset of v1 is asked for.
const RESET_SETUP: &str = "for d in $(zfs get -H -o name -s local org.bootenv:data -r tank); do zfs inherit org.bootenv:data $d; done \
&& zpool create -f -o cachefile=none -O mountpoint=/data data /dev/vdb2 \
&& zfs create -o org.bootenv:data=reset -o org.bootenv:factory=factory data/cust1 && echo factory >/data/cust1/f && zfs snapshot data/cust1@factory \
&& echo changed >/data/cust1/f && echo user >/data/cust1/g \
&& zfs create -o org.bootenv:data=reset data/cust2 && echo user >/data/cust2/f \
&& zfs create data/keep && echo keep >/data/keep/f \
&& bootenv data-pools add data && zpool export data && bootenv factory-reset --mode full";

/// The data pool as the test BE sees it: datasets, snapshots, what is mounted, the files of
/// the datasets in place and of those kept aside; the reset's id written as `ID`.
const DESCRIBE_DATA: &str = "zfs list -H -t all -o name,canmount,origin,org.bootenv:reset -r data | sort; \
grep ' /data' /proc/mounts | cut -d' ' -f1,2 | sort; \
for d in cust1 cust2 keep; do echo \"files $d: $(cd /data/$d && for f in *; do [ -f $f ] && echo $f=$(cat $f); done | tr '\\n' ' ')\"; done; \
for k in $(zfs list -H -o name -r data | grep '[.]reset-'); do mount -t zfs -o zfsutil,ro $k /mnt && echo \"kept $k: $(cat /mnt/* | tr '\\n' ' ')\"; umount /mnt; done";

fn describe_data(vm: &mut Vm) -> anyhow::Result<Vec<String>> {
    let out = run_in(vm, DESCRIBE_DATA)?;
    let id = regex::Regex::new(r"\d{8}T\d{6}Z").expect("a valid pattern");
    Ok(out
        .lines()
        .filter(|l| {
            l.starts_with("data")
                || l.starts_with("/data")
                || l.starts_with("files ")
                || l.starts_with("kept ")
        })
        .map(|l| id.replace_all(l.trim_end(), "ID").into_owned())
        .collect())
}

/// Sets up the data pool and asks for the reset (see [`RESET_SETUP`]) on a copy of the golden
/// disk and a data disk, once; returns a function that makes a fresh pair of overlays of them
/// (system disk, data disk) for each run.
fn reset_disks(
    cx: &mut Ctx,
) -> anyhow::Result<impl Fn(&str) -> anyhow::Result<(PathBuf, PathBuf)>> {
    let disk = cx.golden_copy("setup")?;
    // Partitioned on the host: the test BE has no udev to make the nodes of partitions that
    // `zpool create` of a whole disk writes.
    let data = cx.dir.join("setup-data.img");
    disk::gpt_disk(&data, 512)?;
    let mut vm = cx.boot_disks(
        &[&disk, &data],
        "bootenv=v1 bootenv.pool=tank betest.interactive",
    )?;
    expect_ready(&mut vm, "v1")?;
    let out = run_in(&mut vm, RESET_SETUP)?;
    ensure!(out.contains("scheduled for its next boot"), "{out}");
    power_off(&mut vm)?;
    let dir = cx.dir.clone();
    Ok(move |name: &str| {
        let (d, dd) = (
            dir.join(format!("{name}.qcow2")),
            dir.join(format!("{name}-data.qcow2")),
        );
        disk::overlay(&disk, &d)?;
        disk::overlay(&data, &dd)?;
        Ok((d, dd))
    })
}

fn data_pool_reset_full(cx: &mut Ctx) -> anyhow::Result<()> {
    let copy = reset_disks(cx)?;
    // Uninterrupted: the agent resets v1's config; the import of the data pool resets its data.
    let (disk, data) = copy("reference")?;
    let mut vm = cx.boot_disks(
        &[&disk, &data],
        "bootenv=v1 bootenv.pool=tank betest.interactive",
    )?;
    vm.expect(
        r"bootenv: factory reset of v1: the system pool's part is done",
        BOOT,
    )?;
    expect_ready(&mut vm, "v1")?;
    let out = run_in(&mut vm, "zpool list -H -o name")?;
    ensure!(
        !out.contains("data"),
        "the agent imported the data pool: {out}"
    );
    let doc = done_json(&mut vm, "data-pools import --device-wait=10")?;
    ensure!(
        doc["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("done, data pools included")),
        "{doc:#}"
    );
    let reference = describe_data(&mut vm)?;
    for want in [
        "files cust1: f=factory ",
        "files cust2: ",
        "files keep: f=keep ",
        "kept data/cust1.reset-ID: changed user ",
        "kept data/cust2.reset-ID: user ",
    ] {
        ensure!(
            reference
                .iter()
                .any(|l| l.as_str() == want.trim_end() || l.starts_with(want)),
            "no `{want}` in {reference:#?}"
        );
    }
    let status = done_json(&mut vm, "status")?;
    ensure!(
        status["state"]["reset"].is_null()
            && status["state"]["events"]
                .as_array()
                .and_then(|e| e.last())
                .is_some_and(|e| e["kind"].get("reset-done").is_some()),
        "the reset is not recorded as done: {status:#}"
    );
    power_off(&mut vm)?;

    // Cut twice at `installed` (cust1's swap, then cust2's), then left to finish.
    let (disk, data) = copy("cut")?;
    let point = "reset:installed:data";
    for _ in 0..2 {
        let mut vm = cx.boot_disks(
            &[&disk, &data],
            &format!("bootenv=v1 bootenv.pool=tank betest.interactive bootenv.failpoint={point}"),
        )?;
        expect_ready(&mut vm, "v1")?;
        vm.send("run bootenv data-pools import --device-wait=10\n")?;
        vm.expect(&format!(r"bootenv: FAILPOINT {point}"), STEP)?;
        vm.kill(); // the power cut
    }
    let mut vm = cx.boot_disks(
        &[&disk, &data],
        "bootenv=v1 bootenv.pool=tank betest.interactive",
    )?;
    expect_ready(&mut vm, "v1")?;
    done_json(&mut vm, "data-pools import --device-wait=10")?;
    let got = describe_data(&mut vm)?;
    ensure!(
        got == reference,
        "after two power cuts the end state differs:\nreference {reference:#?}\ngot {got:#?}"
    );
    power_off(&mut vm)
}
