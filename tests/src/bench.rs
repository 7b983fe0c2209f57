//! `cargo xtask bench`: bootenv against its anchors, measured in the VM in the same run.
//!
//! Each benchmark boots (or runs) bootenv and its anchor side by side, one VM at a time, and
//! reports one [`Line`]: the medians, their ratio and the goal. Times are guest timestamps
//! (`/proc/uptime` read by the BE's init, or the agent's own `init-exec` in the boot report),
//! so the host's load moves both sides alike. Benchmarks are not tests: nothing here runs in CI.
//!
//! - `boot-path`: kernel start to the BE's init, bootenv's initramfs against Debian's stock
//!   initramfs-tools + zfs-initramfs (`root=ZFS=`) and against a floor (a minimal shell /init
//!   in an image with the same tools), the same pool and BE, the three in a shuffled order;
//!   with the agent's own time (init-exec minus its start, module loading and ZFS's import).
//! - `initramfs-size`: the compressed images.
//! - `scale-datasets`: bootenv's boot path on the layout it recommends for an appliance (a
//!   system pool with 100 BEs beside a data pool of 10,000 customer datasets) against the same
//!   layout with 3 BEs and 10 datasets.
//! - `data-ready`: on that layout (1,000 datasets unless `--data-datasets` says otherwise), in
//!   one guest, the time until the data pool is imported and its datasets mounted by `bootenv
//!   data-pools import` (what the boot's unit runs) against a plain `zpool import` of the same
//!   pool, the data pool exported between runs.
//! - `grub-menu-100`: `bootenv grub-menu` for 100 BEs (a system pool beside a data pool, the
//!   layout bootenv recommends) against a grub.d-style scan that mounts every BE
//!   ([`MENU_ANCHOR`]).
//! - `reset-cost`: the extra boot time of a config reset with 1 GiB of changes in the config
//!   against that of a reset of an unchanged config.

use crate::disk;
use crate::images::{Artifacts, BASE_CMDLINE};
use crate::qemu::{Boot, Vm, VmConfig};
use crate::scenarios::{expect_ready_within, power_off, run_in, run_long};
use anyhow::{ensure, Context};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The floor's /init (boot-path).
pub const FLOOR_INIT: &str = include_str!("../guest/floor-init.sh");

/// The grub-menu-100 anchor, run in the guest.
pub const MENU_ANCHOR: &str = include_str!("../guest/menu-scan-anchor.sh");

/// How many `zfs receive` (and later `zfs destroy`) run at once while the scale pool is made:
/// each waits for a txg sync per step, and the syncs of concurrent ones are shared. Four gave
/// about 2 datasets/s under TCG; twelve made 10,000 in 4,341 s (2.3/s: the syncs slow down as
/// the pool grows, from 286 to 400 s per 1,200 datasets).
const RECEIVERS: usize = 12;

/// The fewest runs of `bootenv grub-menu` in grub-menu-100, however few the anchor's.
const BOOTENV_RUNS: usize = 5;

/// The most imports per side in data-ready: importing and mounting thousands of datasets (and
/// the export between) takes minutes each under TCG.
const DATA_READY_RUNS: usize = 3;

/// data-ready's anchor, also its unmeasured first import. The test BE runs no udev: without
/// the variable, libzfs waits 30 s for device links that never come (the agent sets it too;
/// with udev running the links are there and nothing is waited for), which is no cost of ZFS's
/// own: measured without it, the anchor took 107 to 112 s against bootenv's 71 to 86 s (1,000
/// datasets).
const PLAIN_IMPORT: &str = "ZPOOL_IMPORT_UDEV_TIMEOUT_MS=0 zpool import -o cachefile=none data";

/// Where [`Bench::agent_disk`]'s agent is copied to in the guest. Not below /run/bootenv: that
/// is the agent's own directory (its report, the ESP's mount).
const BENCH_AGENT: &str = "/run/bench-bootenv";

/// `b` grown with zeros to a whole number of 512-byte sectors, to be a raw disk.
fn pad(mut b: Vec<u8>) -> Vec<u8> {
    b.resize(b.len().div_ceil(512) * 512, 0);
    b
}

/// The version of the split pools' recipe ([`Bench::split_pool`]): part of their cache key.
const SPLIT_FIXTURE: &str = "split-pool-1";

/// Every benchmark, in the order they run.
pub const NAMES: &[&str] = &[
    "boot-path",
    "initramfs-size",
    "scale-datasets",
    "data-ready",
    "grub-menu-100",
    "reset-cost",
];

/// The lines they print, in the same order (the name carries the unit).
pub const LINE_NAMES: &[&str] = &[
    "boot-path-seconds",
    "initramfs-size-bytes",
    "scale-datasets-seconds",
    "data-ready-seconds",
    "grub-menu-100-seconds",
    "reset-cost-seconds",
];

/// One result: medians of bootenv and its anchor, and the goal for their ratio.
#[derive(Clone, Debug)]
pub struct Line {
    /// The benchmark's name with its unit.
    pub name: String,
    /// bootenv's value.
    pub bootenv: f64,
    /// The anchor's value.
    pub anchor: f64,
    /// The goal: ratio at most this.
    pub goal: f64,
    /// A further absolute limit on bootenv's value, if the goal has one.
    pub limit: Option<f64>,
    /// Further goals of the same line, each `(what, value, at most)`: a second anchor's ratio,
    /// a part of bootenv's own time.
    pub extra: Vec<(String, f64, f64)>,
    /// The samples and what they are, for the results file.
    pub detail: String,
}

impl Line {
    /// bootenv / anchor.
    pub fn ratio(&self) -> f64 {
        if self.anchor == 0.0 {
            f64::INFINITY
        } else {
            self.bootenv / self.anchor
        }
    }

    /// Whether the goal is met.
    pub fn met(&self) -> bool {
        self.ratio() <= self.goal
            && self.limit.is_none_or(|l| self.bootenv < l)
            && self.extra.iter().all(|(_, v, max)| v <= max)
    }

    fn extras(&self, sep: &str, goal: bool) -> String {
        self.extra
            .iter()
            .map(|(what, v, max)| {
                if goal {
                    format!("{sep}{what} <= {max}")
                } else {
                    format!("{sep}{what} {v:.3}")
                }
            })
            .collect()
    }

    /// `met` or `missed`.
    pub fn verdict(&self) -> &'static str {
        if self.met() {
            "met"
        } else {
            "missed"
        }
    }

    /// The line `cargo xtask bench` prints.
    pub fn render(&self) -> String {
        format!(
            "bench {}: bootenv={} anchor={} ratio={:.3} goal={}{}{} {}",
            self.name,
            num(self.bootenv),
            num(self.anchor),
            self.ratio(),
            self.goal,
            self.limit
                .map(|l| format!(" (and bootenv<{l})"))
                .unwrap_or_default(),
            self.extra
                .iter()
                .map(|(what, v, max)| format!(" {what}={v:.3} (goal<={max})"))
                .collect::<String>(),
            self.verdict()
        )
    }

    /// Its row in the results file's table; `measured` says when and at which commit.
    pub fn table_row(&self, measured: &str) -> String {
        format!(
            "| {} | {} | {} | {:.3}{} | <= {}{}{} | {} | {measured} |",
            self.name,
            num(self.bootenv),
            num(self.anchor),
            self.ratio(),
            self.extras("; ", false),
            self.goal,
            self.limit
                .map(|x| format!(", bootenv < {x}"))
                .unwrap_or_default(),
            self.extras("; ", true),
            self.verdict()
        )
    }
}

/// A value as the lines print it: whole numbers from 1000 up, else three decimals.
pub fn num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// `0..n` in an order drawn from `seed` (Fisher-Yates over a 64-bit LCG).
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in (1..n).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = ((x >> 33) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one measured boot saw.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Guest uptime when the BE's init started (its first line).
    pub init: f64,
    /// The agent's `init-exec` from the boot report (bootenv's initramfs only).
    pub exec: Option<f64>,
    /// The agent's `reset-seconds` from the boot report, after a factory reset.
    pub reset: Option<f64>,
    /// The agent's `import-seconds` from the boot report: ZFS's time to import the pool.
    pub import: Option<f64>,
    /// The agent's `agent-start` from the boot report: when the kernel started it.
    pub agent_start: Option<f64>,
    /// The agent's module loading time, from its console line.
    pub modules: Option<f64>,
}

impl Sample {
    /// The agent's own time: init-exec minus its start, module loading and ZFS's import.
    pub fn own(&self) -> Option<f64> {
        Some(self.exec? - self.agent_start? - self.modules? - self.import?)
    }
}

/// The inputs of a bench run.
pub struct Bench<'a> {
    art: &'a Artifacts,
    /// bootenv's initramfs as shipped (`xtask initramfs`): the agent, ZFS, the standard modules.
    pub bootenv_initrd: PathBuf,
    /// Debian's stock initramfs-tools image with zfs-initramfs, for the same kernel.
    pub stock_initrd: PathBuf,
    /// How the stock image was configured (MODULES, COMPRESS, hooks, hostid), for the results.
    pub stock_config: String,
    /// The floor image: bootenv's with [`FLOOR_INIT`] as /init.
    pub floor_initrd: PathBuf,
    /// Boots per side.
    pub boots: usize,
    /// The customer datasets in data-ready's data pool (a multiple of 100).
    pub data_datasets: usize,
    dir: PathBuf,
    vms: usize,
}

impl<'a> Bench<'a> {
    /// A bench run with its files under `<work>/bench`.
    pub fn new(
        art: &'a Artifacts,
        bootenv_initrd: PathBuf,
        (stock_initrd, stock_config): (PathBuf, String),
        floor_initrd: PathBuf,
        boots: usize,
    ) -> anyhow::Result<Bench<'a>> {
        let dir = art.work.join("bench");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Bench {
            art,
            bootenv_initrd,
            stock_initrd,
            stock_config,
            floor_initrd,
            boots,
            data_datasets: 1_000,
            dir,
            vms: 0,
        })
    }

    fn vm(&mut self, disks: &[&Path], initrd: &Path, cmdline: &str) -> anyhow::Result<Vm> {
        self.vms += 1;
        let cfg = VmConfig {
            boot: Boot::Direct {
                kernel: self.art.kernel.vmlinuz.clone(),
                initrd: initrd.to_path_buf(),
                append: format!("{BASE_CMDLINE} {cmdline}").trim().into(),
            },
            disks: disks.iter().map(|d| d.to_path_buf()).collect(),
            log: self.dir.join(format!("vm-{:03}.log", self.vms)),
            memory_mb: 2048,
            cpus: 2,
            // The pool builder's VM runs for hours; each step's own timeout catches a hang.
            limit: Duration::from_secs(12 * 3600),
            echo: false,
            accel: self.art.accel.clone(),
        };
        Vm::start(&cfg)
    }

    /// Boots fresh overlays of `bases` with `initrd`; waits for BE `name`'s init.
    fn measure(
        &mut self,
        bases: &[&Path],
        initrd: &Path,
        cmdline: &str,
        name: &str,
    ) -> anyhow::Result<Sample> {
        let mut disks = Vec::new();
        for (i, b) in bases.iter().enumerate() {
            let d = self.dir.join(format!("boot-{i}.qcow2"));
            disk::overlay(b, &d)?;
            disks.push(d);
        }
        let refs: Vec<&Path> = disks.iter().map(PathBuf::as_path).collect();
        let mut vm = self.vm(&refs, initrd, cmdline)?;
        // Long: ZFS's import of the 10,000-dataset pool visits every dataset (minutes under TCG).
        let m = vm.expect(
            r"BOOTENV-TEST be-started name=(\S+) uptime=([0-9.]+)\s",
            Duration::from_secs(1800),
        )?;
        ensure!(m[1] == name, "{} booted, expected {name}", m[1]);
        let init: f64 = m[2].parse()?;
        let (mut reset, mut import, mut agent_start, mut modules) = (None, None, None, None);
        let exec = if initrd != self.bootenv_initrd {
            None
        } else {
            let e = vm.expect(
                r"(?s)(.*?)BOOTENV-TEST report init-exec=([0-9.]+)\s",
                Duration::from_secs(60),
            )?;
            let key = |k: &str| -> anyhow::Result<Option<f64>> {
                Ok(
                    regex::Regex::new(&format!(r"BOOTENV-TEST report {k}=([0-9.]+)\s"))
                        .expect("valid")
                        .captures(&e[1])
                        .map(|c| c[1].parse())
                        .transpose()?,
                )
            };
            reset = key("reset-seconds")?;
            import = key("import-seconds")?;
            agent_start = key("agent-start")?;
            modules = regex::Regex::new(
                r"bootenv: loaded \d+ of \d+ modules for kernel \S+ in ([0-9.]+) s",
            )
            .expect("valid")
            .captures(&vm.text())
            .map(|c| c[1].parse())
            .transpose()?;
            Some(e[2].parse()?)
        };
        vm.kill();
        for d in &disks {
            let _ = std::fs::remove_file(d);
        }
        Ok(Sample {
            init,
            exec,
            reset,
            import,
            agent_start,
            modules,
        })
    }

    /// `boots` rounds of one measured boot of each side, the sides in a shuffled order in each
    /// round (seeded by the round: the same run order every time), so that drift and a
    /// side's place in the round hit all alike.
    fn rounds(
        &mut self,
        sides: &[(&str, &[&Path], &Path, &str)],
        name: &str,
    ) -> anyhow::Result<Vec<Vec<Sample>>> {
        let mut out: Vec<Vec<Sample>> = sides.iter().map(|_| Vec::new()).collect();
        for i in 0..self.boots {
            let order = shuffled(sides.len(), i as u64);
            println!(
                "    round {}/{}: {}",
                i + 1,
                self.boots,
                order
                    .iter()
                    .map(|&k| sides[k].0)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for k in order {
                let (_, disks, initrd, cmdline) = sides[k];
                out[k].push(self.measure(disks, initrd, cmdline, name)?);
            }
        }
        Ok(out)
    }

    /// `boots` measured boots of each side, alternating, so drift hits both alike.
    fn alternate(
        &mut self,
        a: (&[&Path], &Path, &str),
        b: (&[&Path], &Path, &str),
        name: &str,
    ) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
        let (mut sa, mut sb) = (Vec::new(), Vec::new());
        for i in 0..self.boots {
            println!("    boot {}/{}", i + 1, self.boots);
            sa.push(self.measure(a.0, a.1, a.2, name)?);
            sb.push(self.measure(b.0, b.1, b.2, name)?);
        }
        Ok((sa, sb))
    }

    /// boot-path: bootenv's initramfs against the stock one and against the floor (a minimal
    /// shell /init, [`FLOOR_INIT`]), the same BE on the same pool, the three in a shuffled
    /// order each round.
    pub fn boot_path(&mut self) -> anyhow::Result<Line> {
        let golden = self.art.golden.clone();
        let (be, stock, floor) = (
            self.bootenv_initrd.clone(),
            self.stock_initrd.clone(),
            self.floor_initrd.clone(),
        );
        let r = self.rounds(
            &[
                ("bootenv", &[&golden], &be, "bootenv=v1 bootenv.pool=tank"),
                ("stock", &[&golden], &stock, "root=ZFS=tank/ROOT/v1"),
                ("floor", &[&golden], &floor, "bootenv=v1 bootenv.pool=tank"),
            ],
            "v1",
        )?;
        let init = |v: &[Sample]| v.iter().map(|x| x.init).collect::<Vec<f64>>();
        let (bi, si, fi) = (init(&r[0]), init(&r[1]), init(&r[2]));
        let be_exec: Vec<f64> = r[0].iter().filter_map(|x| x.exec).collect();
        let own: Vec<f64> = r[0].iter().filter_map(Sample::own).collect();
        let part =
            |f: fn(&Sample) -> Option<f64>| -> Vec<f64> { r[0].iter().filter_map(f).collect() };
        Ok(Line {
            name: "boot-path-seconds".into(),
            bootenv: median(&bi),
            anchor: median(&si),
            goal: 0.4,
            limit: None,
            extra: vec![
                ("ratio-floor".into(), median(&bi) / median(&fi), 1.0),
                ("agent-own-seconds".into(), median(&own), 0.1),
            ],
            detail: format!(
                "kernel start to the first line of the BE's /sbin/init (guest uptime, s): bootenv [{}] (agent's init-exec [{}]; of which agent start [{}], module loading [{}], ZFS's import [{}], the agent's own time [{}]); stock initramfs-tools + zfs-initramfs [{}] ({}); floor: a busybox /init loading only virtio_pci, virtio_blk and the ZFS chain one by one, udev stand-ins, zpool import -N, mount, switch_root [{}]",
                list(&bi),
                list(&be_exec),
                list(&part(|x| x.agent_start)),
                list(&part(|x| x.modules)),
                list(&part(|x| x.import)),
                list(&own),
                list(&si),
                self.stock_config,
                list(&fi),
            ),
        })
    }

    /// initramfs-size: the compressed images.
    pub fn initramfs_size(&self) -> anyhow::Result<Line> {
        let size = |p: &Path| -> anyhow::Result<f64> {
            Ok(std::fs::metadata(p)
                .with_context(|| format!("reading {}", p.display()))?
                .len() as f64)
        };
        let (b, s) = (size(&self.bootenv_initrd)?, size(&self.stock_initrd)?);
        Ok(Line {
            name: "initramfs-size-bytes".into(),
            bootenv: b,
            anchor: s,
            goal: 0.25,
            limit: None,
            extra: Vec::new(),
            detail: format!(
                "{} ({b} B) against {} ({s} B)",
                self.bootenv_initrd.display(),
                self.stock_initrd.display()
            ),
        })
    }

    /// Boots `disk` (a pool made from the golden disk) as v1, waiting for actions, with extra
    /// disks. The wait is long: importing a pool of 10,000 datasets that a killed build left
    /// behind takes ZFS minutes under TCG (the agent reports it every 30 s).
    fn session(&mut self, disk: &Path, extra: &[&Path]) -> anyhow::Result<Vm> {
        let mut disks = vec![disk];
        disks.extend_from_slice(extra);
        let initrd = self.art.initrd.clone();
        let mut vm = self.vm(
            &disks,
            &initrd,
            "bootenv=v1 bootenv.pool=tank betest.interactive",
        )?;
        expect_ready_within(&mut vm, "v1", Duration::from_secs(3600))?;
        Ok(vm)
    }

    /// A blank disk of `mib` MiB with one partition (type Solaris /usr, as ZFS uses), to grow
    /// the golden pool with: its 1 GiB holds neither 10,000 datasets nor 1 GiB of changes.
    fn data_disk(path: &Path, mib: u64) -> anyhow::Result<()> {
        disk::blank(path, mib)?;
        crate::host::run(
            "sgdisk",
            &["-n", "1:0:0", "-t", "1:BF00", &path.to_string_lossy()],
        )?;
        Ok(())
    }

    /// The layout bootenv recommends for an appliance: the system pool `tank` (the golden
    /// disk) with `bes` BEs, and a data pool `data` on the second disk with `datasets`
    /// datasets (canmount=on, a mountpoint each, not mounted) and BEs b4… up to `bes` in all,
    /// each with a snapshot of its own besides its origin; the data pool is named in
    /// `org.bootenv:data-pools`. Returns (system disk, data disk). Cached, as standalone images,
    /// by its shape (making 10,000 datasets under TCG takes over an hour; an interrupted build
    /// resumes from its `.tmp` disks): the boot path under test is the initramfs's, and the
    /// verbs measured run the current build.
    fn split_pool(&mut self, datasets: usize, bes: usize) -> anyhow::Result<[PathBuf; 2]> {
        let golden = self.art.golden.clone();
        let key = crate::host::fnv64(&[
            SPLIT_FIXTURE.as_bytes(),
            &(datasets as u64).to_le_bytes(),
            &(bes as u64).to_le_bytes(),
        ]);
        // Where the datasets go, and the template they are received from.
        let (parent, tmpl) = ("data/bench", "data/tmpl");
        let done = [
            self.art.work.join(format!("bench-pool-{key:016x}-a.qcow2")),
            self.art.work.join(format!("bench-pool-{key:016x}-b.qcow2")),
        ];
        if done.iter().all(|d| d.exists()) {
            println!("    pool with {datasets} datasets and {bes} BEs (cached)");
            return Ok(done);
        }
        // The build is resumable: each step below skips what an earlier, interrupted build
        // (a killed VM: a power cut to ZFS) finished, and redoes what it left half done.
        let tmp = [
            self.art
                .work
                .join(format!("bench-pool-{key:016x}.tmp-a.qcow2")),
            self.art
                .work
                .join(format!("bench-pool-{key:016x}.tmp-b.img")),
        ];
        if tmp.iter().all(|t| t.exists()) {
            println!("    resuming the interrupted build of a pool with {datasets} datasets and {bes} BEs");
        } else {
            println!("    making a pool with {datasets} datasets and {bes} BEs");
            disk::overlay(&golden, &tmp[0])?;
            Self::data_disk(&tmp[1], 8192)?;
        }
        let mut vm = self.session(&tmp[0], &[&tmp[1]])?;
        run_in(
            &mut vm,
            "{ zpool list data >/dev/null 2>&1 || zpool import -N -o cachefile=none data 2>/dev/null || \
zpool create -f -o cachefile=none -O canmount=off -O mountpoint=/srv/data data /dev/vdb1; } && \
{ zfs list data/bench >/dev/null 2>&1 || zfs create -o canmount=off -o mountpoint=/srv/bench data/bench; } && \
{ zfs get -H -o value org.bootenv:data-pools tank/ROOT | grep -qw data || bootenv data-pools add data; }",
        )?;
        // One `zfs create` per dataset costs a process start and two txg syncs, about a second
        // under TCG when run one after another: instead, a template of up to 100 datasets, made
        // once, is received over and over, [`RECEIVERS`] groups at a time. Each group's root gets its own mountpoint
        // and canmount=on; the datasets below it inherit their mountpoints (/srv/bench/gN/dK).
        // The received `@s` snapshots go afterwards, one group per `zfs destroy -r`: one destroy
        // of all 10,000 ran for over 30 min without a sign of progress, and a power cut undid it whole.
        // Each group is counted as it is received (and all 10,001 before the template goes); the
        // checks after that are cheap ones, as a `zfs list -r` of 10,000 datasets takes 8 min here.
        let size = datasets.min(100);
        let groups = datasets / size;
        ensure!(
            groups * size == datasets,
            "{datasets} is not a multiple of {size}"
        );
        let t = std::time::Instant::now();
        run_long(
            &mut vm,
            &format!(
                "zfs list {parent}/g{last} >/dev/null 2>&1 && ! zfs list {tmpl} >/dev/null 2>&1 || \
zfs list {tmpl}@s >/dev/null 2>&1 || {{ zfs destroy -r {tmpl} 2>/dev/null; \
zfs create -o canmount=off -o mountpoint=none {tmpl} && i=1; while [ $i -lt {size} ]; do zfs create -u {tmpl}/d$i || exit 1; i=$((i+1)); done; zfs snapshot -r {tmpl}@s; }}",
                last = groups - 1
            ),
            3600,
        )?;
        run_long(
            &mut vm,
            &format!(
                "if zfs list {tmpl} >/dev/null 2>&1; then \
j=0; while [ $j -lt {workers} ]; do (g=$j; while [ $g -lt {groups} ]; do \
n=$(zfs list -H -o name -r {parent}/g$g 2>/dev/null | wc -l); \
if [ $n -ne {size} ]; then [ $n -eq 0 ] || zfs destroy -r {parent}/g$g || exit 1; \
zfs send -R {tmpl}@s | zfs receive -u -o canmount=on -o mountpoint=/srv/bench/g$g {parent}/g$g || {{ touch /run/bench-failed; exit 1; }}; fi; \
echo BENCH-PROGRESS group $g $(cut -d. -f1 /proc/uptime); g=$((g+{workers})); done) & j=$((j+1)); done; wait; \
! test -e /run/bench-failed && echo BENCH-PROGRESS counting $(cut -d. -f1 /proc/uptime) || exit 1; \
test $(zfs list -H -o name -r {parent} | wc -l) -eq {total} || exit 1; zfs destroy -r {tmpl}; fi; \
j=0; while [ $j -lt {workers} ]; do (g=$j; while [ $g -lt {groups} ]; do \
! zfs list {parent}/g$g@s >/dev/null 2>&1 || zfs destroy -r {parent}/g$g@s || {{ touch /run/bench-failed; exit 1; }}; \
echo BENCH-PROGRESS destroyed the snapshots of group $g $(cut -d. -f1 /proc/uptime); g=$((g+{workers})); done) & j=$((j+1)); done; wait; \
! test -e /run/bench-failed && echo BENCH-PROGRESS checking $(cut -d. -f1 /proc/uptime) && \
test $(zfs list -H -o name -d 1 {parent} | wc -l) -eq {top} && test $(zfs list -H -o name -r {parent}/g{last} | wc -l) -eq {size} && \
zfs get -H -o value canmount,mountpoint {parent}/g0/d1",
                total = datasets + 1,
                top = groups + 1,
                workers = RECEIVERS,
                last = groups - 1,
            ),
            6 * 3600,
        )?;
        println!(
            "    {datasets} datasets in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        if bes > 3 {
            let t = std::time::Instant::now();
            run_long(
                &mut vm,
                &format!(
                    "i=4; while [ $i -le {bes} ]; do zfs list tank/ROOT/b$i >/dev/null 2>&1 || {{ zfs destroy -r tank/ROOT/b$i:partial 2>/dev/null; bootenv create b$i >/dev/null; }} || exit 1; echo BENCH-PROGRESS be b$i $(cut -d. -f1 /proc/uptime); i=$((i+1)); done; \
s=$(i=4; while [ $i -le {bes} ]; do zfs list tank/ROOT/b$i@bench >/dev/null 2>&1 || echo tank/ROOT/b$i@bench; i=$((i+1)); done); \
[ -z \"$s\" ] || zfs snapshot $s"
                ),
                7200,
            )?;
            println!(
                "    {} more BEs in {:.0} s",
                bes - 3,
                t.elapsed().as_secs_f64()
            );
        }
        let out = run_long(
            &mut vm,
            &format!("zfs list -H -o name -d 1 {parent} | wc -l; zfs list -H -o name -t filesystem -r tank/ROOT | wc -l; zfs list -H -o name -t snapshot -r tank/ROOT | wc -l; zfs list -H -o name -d 1 tank/ROOT | wc -l"),
            1800,
        )?;
        println!(
            "    dataset groups+1, file systems and snapshots in ROOT, BEs+1: {}",
            out.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        power_off(&mut vm)?;
        // Standalone: later golden disks (a new agent) leave it valid.
        for (t, d) in tmp.iter().zip(&done) {
            let flat = self.art.work.join("bench-pool.flat.qcow2");
            crate::host::run(
                "qemu-img",
                &[
                    "convert",
                    "-O",
                    "qcow2",
                    &t.to_string_lossy(),
                    &flat.to_string_lossy(),
                ],
            )?;
            std::fs::rename(&flat, d)?;
            let _ = std::fs::remove_file(t);
        }
        Ok(done)
    }

    /// scale-datasets: bootenv's boot path on the big split layout against the small one.
    pub fn scale_datasets(&mut self) -> anyhow::Result<Line> {
        let [ba, bb] = self.split_pool(10_000, 100)?;
        let [sa, sb] = self.split_pool(10, 3)?;
        let be = self.bootenv_initrd.clone();
        let cmd = "bootenv=v1 bootenv.pool=tank";
        let (b, s) = self.alternate((&[&ba, &bb], &be, cmd), (&[&sa, &sb], &be, cmd), "v1")?;
        let bx: Vec<f64> = b.iter().filter_map(|x| x.exec).collect();
        let sx: Vec<f64> = s.iter().filter_map(|x| x.exec).collect();
        // The agent imports the system pool only; ZFS's import of it still visits each of its
        // datasets (the 100 BEs' roots, members and snapshots): shown apart, with what is left
        // of the boot path without it.
        let bi: Vec<f64> = b.iter().filter_map(|x| x.import).collect();
        let si: Vec<f64> = s.iter().filter_map(|x| x.import).collect();
        let rest = |v: &[Sample]| -> Vec<f64> {
            v.iter().filter_map(|x| Some(x.exec? - x.import?)).collect()
        };
        let (br, sr) = (rest(&b), rest(&s));
        Ok(Line {
            name: "scale-datasets-seconds".into(),
            bootenv: median(&bx),
            anchor: median(&sx),
            goal: 1.1,
            limit: None,
            extra: Vec::new(),
            detail: format!(
                "kernel start to the exec of init (the agent's init-exec, s), system pool beside a data pool: 100 BEs + 10,000 data datasets [{}]; 3 BEs + 10 data datasets [{}]. Of which ZFS's import of the system pool (import-seconds): [{}] and [{}]; the rest (init-exec minus import), median {} against {} (ratio {})",
                list(&bx),
                list(&sx),
                list(&bi),
                list(&si),
                num(median(&br)),
                num(median(&sr)),
                num(median(&br) / median(&sr)),
            ),
        })
    }

    /// data-ready: `bootenv data-pools import` (this build's agent) against a plain
    /// `zpool import` of the same data pool of [`Bench::data_datasets`] datasets (mount policy
    /// all: each ends with every dataset mounted), in one guest, after one import not
    /// measured, the sides in a shuffled order each round, the pool exported between runs.
    /// Both sides mount every dataset through libzfs: the cost per dataset is ZFS's, the
    /// question is what bootenv adds to it, and the default size (1,000) answers it in minutes
    /// where 10,000 takes hours under TCG.
    pub fn data_ready(&mut self) -> anyhow::Result<Line> {
        let n = self.data_datasets;
        let [a, b] = self.split_pool(n, 3)?;
        let mut disks = Vec::new();
        for (i, base) in [&a, &b].iter().enumerate() {
            let d = self.dir.join(format!("data-ready-{i}.qcow2"));
            disk::overlay(base, &d)?;
            disks.push(d);
        }
        let (agent_disk, copy_agent) = self.agent_disk("/dev/vdc")?;
        let mut vm = self.session(&disks[0], &[&disks[1], &agent_disk])?;
        // Registered with mount policy all by the fixture; nothing imported it at boot (the test
        // BE runs no units).
        let reg = run_in(
            &mut vm,
            &format!(
                "{copy_agent} >&2 && \
zfs get -H -o value org.bootenv:data-pools tank/ROOT; ! zpool list data 2>/dev/null"
            ),
        )?;
        println!("    org.bootenv:data-pools: {}", reg.trim());
        let ours = format!("{BENCH_AGENT} data-pools import");
        let sides: [(&str, &str); 2] = [
            ("bootenv data-pools import", &ours),
            ("zpool import", PLAIN_IMPORT),
        ];
        // One import and export first, not measured: the first import of the session reads
        // the pool's metadata from the disk, the later ones find it in the host's page cache
        // (it cost the side that came first 15 to 20 s more).
        run_long(
            &mut vm,
            &format!("{PLAIN_IMPORT} && zpool export data"),
            4 * 3600,
        )?;
        let runs = DATA_READY_RUNS.min(self.boots).max(1);
        let line = regex::Regex::new(r"DATA-READY ([0-9.]+) ([0-9.]+) (\d+)").expect("valid");
        let mut out: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..runs {
            for k in shuffled(sides.len(), round as u64) {
                let (label, cmd) = sides[k];
                let o = run_long(
                    &mut vm,
                    &format!(
                        "s=$(cut -d' ' -f1 /proc/uptime); {cmd} >/run/data-ready.log 2>&1 || {{ cat /run/data-ready.log; exit 1; }}; \
e=$(cut -d' ' -f1 /proc/uptime); echo DATA-READY $s $e $(grep -c ' /srv/bench/' /proc/mounts); zpool export data"
                    ),
                    4 * 3600,
                )?;
                let c = line
                    .captures(&o)
                    .with_context(|| format!("no DATA-READY line from {label}: {o}"))?;
                let (s, e, mounted): (f64, f64, usize) =
                    (c[1].parse()?, c[2].parse()?, c[3].parse()?);
                ensure!(
                    mounted == n,
                    "{label} left {mounted} of the {n} datasets mounted"
                );
                println!("    round {}/{runs}: {label}: {:.1} s", round + 1, e - s);
                out[k].push(e - s);
            }
        }
        vm.kill();
        for d in &disks {
            let _ = std::fs::remove_file(d);
        }
        Ok(Line {
            name: "data-ready-seconds".into(),
            bootenv: median(&out[0]),
            anchor: median(&out[1]),
            goal: 1.05,
            limit: None,
            extra: Vec::new(),
            detail: format!(
                "guest seconds until the data pool ({n} datasets, canmount=on, mountpoints set) is imported and every dataset mounted, in the same guest, after one import not measured, exported between runs: `bootenv data-pools import` [{}]; `{PLAIN_IMPORT}` [{}]",
                list(&out[0]),
                list(&out[1]),
            ),
        })
    }

    /// This build's agent as a raw disk of its own (the console takes one line; a cached
    /// pool's BEs may hold an older agent), and the guest command that copies it from `dev`
    /// (the disk's name in the guest) to [`BENCH_AGENT`] and prints its version.
    fn agent_disk(&self, dev: &str) -> anyhow::Result<(PathBuf, String)> {
        let agent = std::fs::read(&self.art.agent)?;
        let len = agent.len();
        let path = self.dir.join("agent.img");
        std::fs::write(&path, pad(agent))?;
        let copy = format!(
            "head -c {len} {dev} >{BENCH_AGENT} && chmod 755 {BENCH_AGENT} && {BENCH_AGENT} --version"
        );
        Ok((path, copy))
    }

    /// grub-menu-100: `bootenv grub-menu` for 100 BEs against the grub.d-style scan.
    pub fn grub_menu(&mut self) -> anyhow::Result<Line> {
        // The recommended layout: the customer datasets live in a data pool and cost the menu
        // nothing; the system pool holds the 100 BEs.
        let [ba, bb] = self.split_pool(10, 100)?;
        let d = self.dir.join("menu-a.qcow2");
        disk::overlay(&ba, &d)?;
        let d2 = self.dir.join("menu-b.qcow2");
        disk::overlay(&bb, &d2)?;
        // The anchor script and this build's agent reach the guest as disks of their own
        // ([`Bench::agent_disk`]).
        let script = self.dir.join("menu-scan-anchor.img");
        std::fs::write(&script, pad(MENU_ANCHOR.as_bytes().to_vec()))?;
        let (agent_disk, copy_agent) = self.agent_disk("/dev/vdd")?;
        let mut vm = self.session(&d, &[&d2, &script, &agent_disk])?;
        run_in(
            &mut vm,
            &format!("tr -d '\\000' </dev/vdc >/run/menu-scan-anchor && chmod 755 /run/menu-scan-anchor \
&& {copy_agent}"),
        )?;
        // Every BE's kernel on the ESP, as this build keeps them (one shared copy): the cached
        // pool's BEs were made by the agent of their day.
        let t = std::time::Instant::now();
        let out = run_long(
            &mut vm,
            &format!("{BENCH_AGENT} sync-boot >/run/sync.out; rc=$?; grep -c 'kernel' /run/sync.out; tail -2 /run/sync.out; ls /run/bootenv/esp/bootenv/_kernels | wc -l; df -k /run/bootenv/esp | tail -1; exit $rc"),
            3600,
        )?;
        println!(
            "    kernels on the ESP for every BE in {:.0} s (BEs, last lines, store directories, ESP): {}",
            t.elapsed().as_secs_f64(),
            out.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        // What ZFS logged while the initramfs imported the pool (its debug log keeps the
        // kernel's timestamps of each load step): where the import's minutes go.
        let dbg = run_long(
            &mut vm,
            "grep -c . /proc/spl/kstat/zfs/dbgmsg; grep -vE 'txg|metaslab|spa_history|dsl_scan' /proc/spl/kstat/zfs/dbgmsg | head -60 | cut -c1-200; grep seconds /run/bootenv/boot",
            600,
        )?;
        println!("    ZFS's debug log of the import (first lines):\n{dbg}");
        // Where bootenv's time goes: one run with -v (the runner logs each command it starts
        // and the milliseconds it took), and the cost of a bare process start, of the smallest
        // `zfs` and `zpool` commands, for a floor.
        let prof = run_long(
            &mut vm,
            &format!("s=$(cut -d' ' -f1 /proc/uptime); {BENCH_AGENT} -v grub-menu 2>/run/prof.err >/dev/null; e=$(cut -d' ' -f1 /proc/uptime); \
grep -E '[$] |-> ' /run/prof.err | cut -c1-200; echo BENCH-PROF grub-menu $s $e; \
for c in '{BENCH_AGENT} --version' 'zfs list -H -o name tank' 'zpool list -H -o name'; do \
s=$(cut -d' ' -f1 /proc/uptime); $c >/dev/null; e=$(cut -d' ' -f1 /proc/uptime); echo BENCH-PROF \"$c\" $s $e; done"),
            1800,
        )?;
        println!("    where one `bootenv -v grub-menu` spends its time, and floors (start, end uptime):\n{prof}");
        let timed = |vm: &mut Vm, cmd: &str| -> anyhow::Result<(f64, usize)> {
            let out = run_long(
                vm,
                &format!(
                    "s=$(cut -d' ' -f1 /proc/uptime); {cmd} >/run/menu.out || exit 1; e=$(cut -d' ' -f1 /proc/uptime); echo \"BENCH-TIME $s $e $(grep -c menuentry /run/menu.out)\""
                ),
                1800,
            )?;
            let line = out
                .lines()
                .find_map(|l| l.trim().strip_prefix("BENCH-TIME "))
                .with_context(|| format!("no timing from `{cmd}`: {out}"))?;
            let f: Vec<&str> = line.split_whitespace().collect();
            ensure!(f.len() == 3, "bad timing line {line}");
            Ok((f[1].parse::<f64>()? - f[0].parse::<f64>()?, f[2].parse()?))
        };
        // Without the BE index (a listing of every dataset of every BE), once, for the record.
        run_in(
            &mut vm,
            "test -s /run/bootenv/state/index && mv /run/bootenv/state/index /run/index.kept",
        )?;
        let (unindexed, _) = timed(&mut vm, &format!("{BENCH_AGENT} grub-menu"))?;
        run_in(&mut vm, "mv /run/index.kept /run/bootenv/state/index")?;
        let (mut b, mut a) = (Vec::new(), Vec::new());
        let (mut b_entries, mut a_entries) = (0, 0);
        // bootenv's side takes seconds, the anchor's ten minutes: bootenv runs at least
        // BOOTENV_RUNS times, taking turns with the anchor while it runs too.
        let runs = self.boots.max(BOOTENV_RUNS);
        for i in 0..runs {
            println!("    run {}/{runs}", i + 1);
            let (t, n) = timed(&mut vm, &format!("{BENCH_AGENT} grub-menu"))?;
            b.push(t);
            b_entries = n;
            if i < self.boots {
                let (t, n) = timed(&mut vm, "/run/menu-scan-anchor tank")?;
                a.push(t);
                a_entries = n;
            }
        }
        power_off(&mut vm)?;
        let _ = std::fs::remove_file(&d);
        let _ = std::fs::remove_file(&d2);
        ensure!(
            b_entries >= 100,
            "bootenv grub-menu listed {b_entries} entries for 100 BEs"
        );
        Ok(Line {
            name: "grub-menu-100-seconds".into(),
            bootenv: median(&b),
            anchor: median(&a),
            goal: 0.1,
            limit: Some(1.0),
            extra: Vec::new(),
            detail: format!(
                "in the guest, a system pool with 100 BEs beside a data pool (s): bootenv grub-menu with the BE index that sync-boot kept [{}] ({b_entries} menuentry lines), once without it (a listing of every dataset of every BE) [{unindexed:.2}]; grub.d-style scan mounting each BE [{}] ({a_entries} menuentry lines)",
                list(&b),
                list(&a)
            ),
        })
    }

    /// A pool for reset-cost: the golden one grown by a second 3 GiB vdev, with `mib` MiB of
    /// new data in v1's config. Returns (first disk, second disk).
    fn reset_pool(&mut self, mib: usize) -> anyhow::Result<(PathBuf, PathBuf)> {
        let golden = self.art.golden.clone();
        let a = self.dir.join(format!("reset-{mib}-a.qcow2"));
        let b = self.dir.join(format!("reset-{mib}-b.img"));
        disk::overlay(&golden, &a)?;
        Self::data_disk(&b, 3072)?;
        let mut vm = self.session(&a, &[&b])?;
        run_in(
            &mut vm,
            "zpool add -f tank /dev/vdb1 && zpool list -H -o name,size tank",
        )?;
        if mib > 0 {
            let t = std::time::Instant::now();
            run_long(
                &mut vm,
                &format!(
                    "dd if=/dev/urandom of=/etc/config/changes.bin bs=1M count={mib} 2>&1 && i=0; while [ $i -lt 100 ]; do echo change $i >/etc/config/file-$i; i=$((i+1)); done; sync; zfs list -H -o name,used tank/ROOT/v1/config"
                ),
                3600,
            )?;
            println!(
                "    {mib} MiB written into v1's config in {:.0} s",
                t.elapsed().as_secs_f64()
            );
        }
        power_off(&mut vm)?;
        Ok((a, b))
    }

    /// reset-cost: a config reset's extra boot time with 1 GiB of changes against without.
    /// The agent times the reset itself (`reset-seconds` in the boot report: recording the
    /// request, the datasets, the state); the difference of the medians of reset and plain
    /// boots is printed beside it as a check that the step is all the extra.
    pub fn reset_cost(&mut self) -> anyhow::Result<Line> {
        let (ca, cb) = self.reset_pool(1024)?;
        let (ua, ub) = self.reset_pool(0)?;
        let be = self.bootenv_initrd.clone();
        let plain = "bootenv=v1 bootenv.pool=tank";
        let reset = "bootenv=v1 bootenv.pool=tank bootenv.reset=config";
        let (changed, changed_plain) =
            self.alternate((&[&ca, &cb], &be, reset), (&[&ca, &cb], &be, plain), "v1")?;
        let (same, same_plain) =
            self.alternate((&[&ua, &ub], &be, reset), (&[&ua, &ub], &be, plain), "v1")?;
        for p in [&ca, &cb, &ua, &ub] {
            let _ = std::fs::remove_file(p);
        }
        let ex = |v: &[Sample]| -> Vec<f64> { v.iter().filter_map(|x| x.exec).collect() };
        let step = |v: &[Sample]| -> anyhow::Result<Vec<f64>> {
            v.iter()
                .map(|x| x.reset.context("a reset boot reported no reset-seconds"))
                .collect()
        };
        let (step_changed, step_same) = (step(&changed)?, step(&same)?);
        ensure!(
            changed_plain
                .iter()
                .chain(&same_plain)
                .all(|x| x.reset.is_none()),
            "a plain boot reported a factory reset"
        );
        let diff = |a: &[Sample], b: &[Sample]| median(&ex(a)) - median(&ex(b));
        Ok(Line {
            name: "reset-cost-seconds".into(),
            bootenv: median(&step_changed),
            anchor: median(&step_same),
            goal: 1.2,
            limit: None,
            extra: Vec::new(),
            detail: format!(
                "the config reset's time in the boot (agent's reset-seconds, s): 1 GiB of changes [{}], unchanged config [{}]. \
Check, kernel start to init (init-exec, s): 1 GiB of changes: reset [{}], plain [{}] (extra {:.3}); unchanged: reset [{}], plain [{}] (extra {:.3})",
                list(&step_changed),
                list(&step_same),
                list(&ex(&changed)),
                list(&ex(&changed_plain)),
                diff(&changed, &changed_plain),
                list(&ex(&same)),
                list(&ex(&same_plain)),
                diff(&same, &same_plain),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_benchmark_prints_its_line_under_its_own_name() {
        assert_eq!(NAMES.len(), LINE_NAMES.len());
        for (n, l) in NAMES.iter().zip(LINE_NAMES) {
            assert!(l.starts_with(&format!("{n}-")), "{n} prints {l}");
        }
    }

    #[test]
    fn a_table_row_has_the_seven_columns_the_results_file_keeps() {
        let l = Line {
            name: "x-seconds".into(),
            bootenv: 0.5,
            anchor: 10.0,
            goal: 0.1,
            limit: Some(1.0),
            extra: Vec::new(),
            detail: String::new(),
        };
        assert_eq!(
            l.table_row("2026-11-22T18:00Z abc1234"),
            "| x-seconds | 0.500 | 10.000 | 0.050 | <= 0.1, bootenv < 1 | met | 2026-11-22T18:00Z abc1234 |"
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn a_line_meets_its_goal_only_within_the_ratio_and_the_limit() {
        let mut l = Line {
            name: "x-seconds".into(),
            bootenv: 0.5,
            anchor: 10.0,
            goal: 0.1,
            limit: Some(1.0),
            extra: Vec::new(),
            detail: String::new(),
        };
        assert!(l.met());
        assert!(l.render().ends_with(" met"), "{}", l.render());
        l.bootenv = 1.5;
        l.anchor = 100.0;
        assert!(!l.met(), "over the absolute limit");
        l.limit = None;
        l.bootenv = 2.0;
        l.anchor = 10.0;
        assert!(!l.met());
        assert!(
            l.render().contains("ratio=0.200 goal=0.1 missed"),
            "{}",
            l.render()
        );
    }

    #[test]
    fn a_second_anchor_and_a_part_of_the_time_are_goals_of_the_line_too() {
        let mut l = Line {
            name: "boot-path-seconds".into(),
            bootenv: 4.0,
            anchor: 10.0,
            goal: 0.4,
            limit: None,
            extra: vec![
                ("ratio-floor".into(), 0.9, 1.0),
                ("agent-own-seconds".into(), 0.05, 0.1),
            ],
            detail: String::new(),
        };
        assert!(l.met(), "{}", l.render());
        assert!(
            l.render()
                .contains("ratio-floor=0.900 (goal<=1) agent-own-seconds=0.050 (goal<=0.1) met"),
            "{}",
            l.render()
        );
        let row = l.table_row("now");
        assert_eq!(row.matches('|').count(), 8, "{row}");
        assert!(row.contains("| 0.400; ratio-floor 0.900; agent-own-seconds 0.050 | <= 0.4; ratio-floor <= 1; agent-own-seconds <= 0.1 | met |"), "{row}");
        l.extra[1].1 = 0.25;
        assert!(!l.met());
    }

    #[test]
    fn each_round_shuffles_every_side_once_and_over_rounds_every_order_comes() {
        let mut seen = std::collections::BTreeSet::new();
        for r in 0..60 {
            let o = shuffled(3, r);
            let mut s = o.clone();
            s.sort();
            assert_eq!(s, vec![0, 1, 2]);
            seen.insert(o);
        }
        assert_eq!(seen.len(), 6);
        assert_eq!(shuffled(3, 7), shuffled(3, 7));
    }
}
