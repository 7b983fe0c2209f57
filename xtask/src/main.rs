//! `cargo xtask <task>`: the one build entry point of bootenv (its command line: `flags.rs`).
//!
//! - `deps`: install what the VMs need (apt packages, contrib, the ZFS module for the guest kernel)
//! - `build`: the static agent
//! - `initramfs --kernel <release> [--out <file>] [--module <name>]...`: bootenv's initramfs
//! - `vm-test [--list] [SCENARIO...]`: the VM scenarios
//! - `test`: unit and integration tests, then every VM scenario
//! - `demo`: build everything and boot a boot environment, showing the agent at work
//! - `bench [--boots N] [NAME...]`: bootenv against its anchors, in the VM (not a test)
//! - `fuzz [--runs N] [--jobs J] [TARGET...]`: the parsers under libFuzzer (not a test)

mod deb;
mod deps;
mod docs;
mod flags;
mod fuzz;
mod timing;

use anyhow::{bail, Context};
use bootenv_vmtest::images::Artifacts;
use bootenv_vmtest::qemu::{Boot, Vm, VmConfig};
use bootenv_vmtest::scenarios;
use clap::Parser;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    use flags::Task;
    let result = match flags::Xtask::parse().task {
        Task::Deps => deps::ensure().map(|()| println!("all dependencies are installed")),
        Task::Build => build_agent().map(|p| println!("{}", p.display())),
        Task::Initramfs {
            kernel,
            out,
            modules,
        } => initramfs(kernel.as_deref(), out, modules),
        Task::VmTest { list, names } => vm_test(list, names),
        Task::Test => test(),
        Task::Demo => demo(),
        Task::Bench {
            boots,
            data_datasets,
            names,
        } => bench(boots, data_datasets as usize, names),
        Task::Fuzz {
            runs,
            jobs,
            targets,
        } => fuzz::run(&root(), runs, jobs as usize, targets),
        Task::Man => man(),
        Task::Deb { check } => deb_cmd(check),
        Task::KernelDeb {
            kernel,
            vmlinuz,
            modules,
            zfs,
        } => kernel_deb_cmd(kernel, vmlinuz, modules, zfs).map(|p| println!("{}", p.display())),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

/// The package version: the workspace's, Debian revision 1, unless BOOTENV_DEB_VERSION says
/// otherwise (a newer build for an upgrade test).
fn deb_version() -> String {
    std::env::var("BOOTENV_DEB_VERSION")
        .unwrap_or_else(|_| format!("{}-1", env!("CARGO_PKG_VERSION")))
}

/// Builds bootenv and bootenv-grub into `out`; returns their paths.
fn build_debs(out: &Path, version: &str) -> anyhow::Result<Vec<PathBuf>> {
    build_debs_keyed(out, version).map(|(debs, _)| debs)
}

/// [`build_debs`], with a hash of what the packages hold ([`deb::digest`]).
fn build_debs_keyed(out: &Path, version: &str) -> anyhow::Result<(Vec<PathBuf>, u64)> {
    let r = root();
    let agent = build_agent()?;
    let work = r.join("target/debian-work");
    let docs = docs::generate(&work.join("docs"))?;
    let grub = work.join("grub-images");
    bootenv_vmtest::disk::grub_images(
        &grub,
        bootenv_vmtest::images::GRUB_EFI_CFG,
        bootenv_vmtest::images::GRUB_BIOS_CFG,
    )?;
    let inputs = deb::Inputs {
        root: &r,
        agent: &agent,
        docs: &docs,
        grub_images: &grub,
        version,
    };
    let epoch = deb::source_date_epoch(&r)?;
    let mut debs = Vec::new();
    let mut key = bootenv_vmtest::host::Fnv::new();
    for p in [deb::bootenv(&inputs)?, deb::bootenv_grub(&inputs)?] {
        key.part(&deb::digest(&p).to_le_bytes());
        debs.push(p.build(&work.join("stage"), out, epoch, "xz")?);
    }
    Ok((debs, key.finish()))
}

/// Runs lintian on `debs`; fails when it reports an error.
fn lintian(debs: &[PathBuf]) -> anyhow::Result<()> {
    let out = Command::new("lintian")
        .args([
            "--no-tag-display-limit",
            "--info",
            "--display-info",
            "--pedantic",
        ])
        .args(debs)
        .output()
        .context("running lintian (cargo xtask deps installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let errors = text.lines().filter(|l| l.starts_with("E: ")).count();
    let warnings = text.lines().filter(|l| l.starts_with("W: ")).count();
    println!("lintian: {errors} errors, {warnings} warnings");
    if errors > 0 {
        bail!("lintian reports {errors} errors");
    }
    Ok(())
}

fn deb_cmd(check: bool) -> anyhow::Result<()> {
    deps::ensure()?;
    let out = root().join("target/debian");
    let debs = build_debs(&out, &deb_version())?;
    if check {
        let again = build_debs(&root().join("target/debian-check"), &deb_version())?;
        for (a, b) in debs.iter().zip(&again) {
            anyhow::ensure!(
                std::fs::read(a)? == std::fs::read(b)?,
                "{} is not reproducible: a second build differs",
                a.display()
            );
        }
        println!("reproducible: a second build made the same bytes");
    }
    for d in &debs {
        println!("{} ({} bytes)", d.display(), std::fs::metadata(d)?.len());
    }
    lintian(&debs)
}

/// `cargo xtask kernel-deb`: builds bootenv-kernel-<release> into target/debian (cached by
/// its inputs' names, sizes and times: packing 400 MB of modules takes a while).
fn kernel_deb_cmd(
    kernel: Option<PathBuf>,
    vmlinuz: Option<PathBuf>,
    modules: Option<PathBuf>,
    zfs: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    let src = kernel_source(kernel, vmlinuz, modules, zfs)?;
    let r = root();
    let work = r.join("target/debian-work/kernel");
    let epoch = deb::source_date_epoch(&r)?;
    let p = deb::kernel(&r, &src)?;
    let out = r.join("target/debian");
    let deb = out.join(format!("{}_{}_{}.deb", p.name, p.version, p.arch));
    // The fingerprint covers every path, size and mode (and small files' contents).
    let key = format!("{epoch}:{:016x}", deb::fingerprint(&p));
    let stamp = work.join(format!("{}.key", p.name));
    if deb.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) {
        println!("    {} is up to date", deb.display());
        return Ok(deb);
    }
    let built = pack_kernel(&p, &work, &out, epoch)?;
    std::fs::write(&stamp, key)?;
    Ok(built)
}

/// Builds the kernel package `p` into `out`, saying how long it took.
fn pack_kernel(p: &deb::Package, work: &Path, out: &Path, epoch: u64) -> anyhow::Result<PathBuf> {
    println!("==> packing {} ({} files)", p.name, p.files.len());
    let t = Instant::now();
    let built = p.build(&work.join("stage"), out, epoch, "xz:1")?;
    println!(
        "    {} ({} bytes) in {:.0} s",
        built.display(),
        std::fs::metadata(&built)?.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(built)
}

/// The kernel package of the tests (the kernel they boot and its ZFS modules), from the test
/// cache, keyed by what it holds; returns it and [`deb::digest`] of it. Its time stamps are the
/// kernel image's own (not the last commit's, as `cargo xtask kernel-deb` gives them), so the
/// same kernel and modules make the same bytes at every commit.
fn test_kernel_deb(cache: &bootenv_vmtest::cache::Cache) -> anyhow::Result<(PathBuf, u64)> {
    let r = root();
    let src = kernel_source(None, None, None, None)?;
    let p = deb::kernel(&r, &src)?;
    let digest = deb::digest(&p);
    let image = src
        .tree
        .join("boot")
        .join(format!("vmlinuz-{}", src.release));
    let epoch = std::fs::metadata(&image)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading the time of {}", image.display()))?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let key = bootenv_vmtest::host::fnv64(&[&digest.to_le_bytes(), &epoch.to_le_bytes()]);
    let work = r.join("target/debian-work/kernel");
    let (dir, found) = cache.entry("kernel-deb", key, "", |tmp| {
        std::fs::create_dir_all(tmp)?;
        pack_kernel(&p, &work, tmp, epoch).map(|_| ())
    })?;
    let deb = dir.join(format!("{}_{}_{}.deb", p.name, p.version, p.arch));
    anyhow::ensure!(
        deb.is_file(),
        "{} is missing from the cache entry",
        deb.display()
    );
    if found == bootenv_vmtest::cache::Found::Hit {
        println!("    {} (cached)", deb.display());
    }
    Ok((deb, digest))
}

/// What `kernel-deb`'s options name: a linux-image .deb, a vmlinuz and modules directory, or
/// (no options) the kernel the tests boot.
fn kernel_source(
    deb_file: Option<PathBuf>,
    vmlinuz: Option<PathBuf>,
    modules: Option<PathBuf>,
    zfs: Option<PathBuf>,
) -> anyhow::Result<deb::KernelSource> {
    let work = root().join("target/debian-work/kernel");
    let src = match (deb_file, vmlinuz, modules) {
        (Some(d), None, None) => {
            let tree = work.join("unpacked");
            let _ = std::fs::remove_dir_all(&tree);
            std::fs::create_dir_all(&tree)?;
            run_ok(Command::new("dpkg-deb").arg("-x").arg(&d).arg(&tree))?;
            let field = |f: &str| -> anyhow::Result<String> {
                let o = Command::new("dpkg-deb").args(["-f"]).arg(&d).arg(f).output()?;
                Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
            };
            let release = std::fs::read_dir(tree.join("lib/modules"))
                .context("the package has no lib/modules")?
                .next()
                .context("the package has no lib/modules/<release>")??
                .file_name()
                .to_string_lossy()
                .into_owned();
            deb::KernelSource { zfs: zfs.clone().unwrap_or_else(|| PathBuf::from(format!("/lib/modules/{release}/updates/dkms"))), release, tree, version: field("Version")? }
        }
        (None, Some(v), Some(m)) => {
            let release = m.file_name().context("--modules names lib/modules/<release>")?.to_string_lossy().into_owned();
            let tree = work.join("tree");
            let _ = std::fs::remove_dir_all(&tree);
            std::fs::create_dir_all(tree.join("boot"))?;
            std::fs::create_dir_all(tree.join("lib/modules"))?;
            std::fs::copy(&v, tree.join(format!("boot/vmlinuz-{release}")))?;
            std::os::unix::fs::symlink(std::fs::canonicalize(&m)?, tree.join("lib/modules").join(&release))?;
            deb::KernelSource { zfs: zfs.clone().unwrap_or_else(|| m.join("updates/dkms")), release, tree, version: "0".into() }
        }
        (None, None, None) => {
            deps::ensure()?;
            let k = bootenv_initramfs::Kernel::find(None)?;
            let o = Command::new("dpkg-query").args(["-W", "-f=${Version}", &format!("linux-image-{}", k.release)]).output()?;
            let version = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            anyhow::ensure!(!version.is_empty(), "linux-image-{} is not installed as a package", k.release);
            deb::KernelSource { zfs: zfs.clone().unwrap_or_else(|| PathBuf::from(format!("/lib/modules/{}/updates/dkms", k.release))), release: k.release, tree: PathBuf::from("/"), version }
        }
        _ => bail!("name a kernel with --kernel <linux-image .deb>, or with --vmlinuz and --modules, or nothing for the tests' kernel"),
    };
    Ok(src)
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(st.success(), "{cmd:?} failed ({st})");
    Ok(())
}

fn man() -> anyhow::Result<()> {
    let out = root().join("target/doc-gen");
    let d = docs::generate(&out)?;
    for p in d.man.iter().chain(&d.completions) {
        println!("{}", p.display());
    }
    println!(
        "read one with: man -l {}",
        out.join("man/bootenv.8").display()
    );
    Ok(())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// The target triple of the static agent.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds the agent: statically linked glibc (crt-static, non-PIE), size-optimised.
fn build_agent() -> anyhow::Result<PathBuf> {
    println!("==> building the static agent");
    let status = cargo()
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "bootenv",
            "--target",
            TARGET,
        ])
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static -C relocation-model=static",
        )
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building the agent failed");
    }
    let bin = root().join("target").join(TARGET).join("release/bootenv");
    let size = std::fs::metadata(&bin)?.len();
    println!("    {} ({size} bytes)", bin.display());
    Ok(bin)
}

fn work_dir() -> PathBuf {
    root().join("target/vmtest")
}

fn initramfs(kernel: Option<&str>, out: Option<PathBuf>, extra: Vec<String>) -> anyhow::Result<()> {
    let agent = build_agent()?;
    let kernel = bootenv_initramfs::Kernel::find(kernel)?;
    let opts = bootenv_initramfs::Options {
        kernel: kernel.clone(),
        agent,
        extra_modules: extra,
    };
    let image = bootenv_initramfs::agent_image(&opts)?;
    let cpio = image.write(bootenv_initramfs::epoch());
    let z = bootenv_initramfs::compress(&cpio)?;
    let out = out.unwrap_or_else(|| {
        root().join(format!(
            "target/bootenv/initramfs-{}.cpio.zst",
            kernel.release
        ))
    });
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&out, &z)?;
    println!(
        "{} ({} bytes compressed, {} bytes of cpio)",
        out.display(),
        z.len(),
        cpio.len()
    );
    Ok(())
}

/// What the `deb-*` scenarios install: the packages of this tree, a newer build of bootenv,
/// the kernel package (cached), and the Debian tree (cached).
fn packages(
    art: &Artifacts,
    t: &mut timing::Phases,
) -> anyhow::Result<bootenv_vmtest::images::Packages> {
    let (mut debs, newer, mut key) =
        t.phase("packages (bootenv, bootenv-grub, a newer bootenv)", || {
            println!("==> Debian packages for the packaging scenarios");
            let (debs, k1) = build_debs_keyed(&root().join("target/debian"), &deb_version())?;
            // The same tree as a later release: what an upgrade installs.
            let (newer, k2) = build_debs_keyed(
                &root().join("target/debian-newer"),
                &format!("{}-2", env!("CARGO_PKG_VERSION")),
            )?;
            let newer = newer
                .into_iter()
                .next()
                .context("the newer bootenv package")?;
            let mut key = bootenv_vmtest::host::Fnv::new();
            key.part(&k1.to_le_bytes());
            key.part(&k2.to_le_bytes());
            Ok((debs, newer, key))
        })?;
    let (kernel, k3) = t.phase("kernel package", || test_kernel_deb(&art.cache))?;
    debs.push(kernel);
    key.part(&k3.to_le_bytes());
    let debian = t.phase("Debian tree (debootstrap)", || {
        bootenv_vmtest::debian::rootfs(&art.cache, &art.work)
    })?;
    Ok(bootenv_vmtest::images::Packages {
        debian,
        debs,
        newer,
        key: key.finish(),
    })
}

/// The agent, the initramfs and the golden disk, each a phase of `t`.
fn prepare(t: &mut timing::Phases) -> anyhow::Result<Artifacts> {
    let agent = t.phase("static agent (cargo build --release)", build_agent)?;
    let cache = bootenv_vmtest::cache::Cache::open()?;
    println!("==> test cache: {}", cache.dir.display());
    t.phase("images (initramfs, golden disk)", || {
        Artifacts::prepare(&work_dir(), &cache, &agent, None)
    })
}

/// How many VM scenarios run side by side: `BOOTENV_VM_JOBS`, else one per host core.
fn jobs() -> usize {
    std::env::var("BOOTENV_VM_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

fn summary(passed: usize, failed: usize) -> anyhow::Result<()> {
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} failed");
    }
    Ok(())
}

fn vm_test(list: bool, names: Vec<String>) -> anyhow::Result<()> {
    if list {
        for s in scenarios::all() {
            println!("{:<28} {}", s.name, s.about);
        }
        return Ok(());
    }
    for n in &names {
        if !scenarios::all().iter().any(|s| s.name == n) {
            bail!("no scenario named {n}; `cargo xtask vm-test --list` lists them");
        }
    }
    let mut t = timing::Phases::new();
    t.phase("set-up (cargo xtask deps)", deps::ensure)?;
    let mut art = prepare(&mut t)?;
    let needs_debian = |n: &String| {
        scenarios::all()
            .iter()
            .any(|s| s.name == n && s.needs == Some(scenarios::Fixture::DebianDisk))
    };
    if names.is_empty() || names.iter().any(needs_debian) {
        art.packages = Some(packages(&art, &mut t)?);
    }
    let report = scenarios::run(&art, &names, false, jobs())?;
    for l in t.summary(Some(&report), &timing::host()) {
        println!("{l}");
    }
    let failed = report
        .outcomes
        .iter()
        .filter(|o| o.failure.is_some())
        .count();
    summary(report.outcomes.len() - failed, failed)
}

/// Runs `cargo test` for the workspace, echoing its output; returns (passed, failed).
fn unit_tests() -> anyhow::Result<(usize, usize)> {
    println!("==> unit and integration tests (cargo test --workspace)");
    let mut child = cargo()
        .args(["test", "--workspace", "--color", "never"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |key: &str| {
                rest.split(';')
                    .find_map(|p| {
                        p.trim().strip_suffix(key).map(|n| {
                            n.trim()
                                .trim_start_matches("ok.")
                                .trim_start_matches("FAILED.")
                                .trim()
                                .parse::<usize>()
                                .unwrap_or(0)
                        })
                    })
                    .unwrap_or(0)
            };
            passed += num("passed");
            failed += num("failed");
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        // It did not get as far as running tests (a build error): count that as a failure.
        failed += 1;
    }
    Ok((passed, failed))
}

fn test() -> anyhow::Result<()> {
    let mut t = timing::Phases::new();
    t.phase("set-up (cargo xtask deps)", deps::ensure)?;
    let (up, uf) = t.phase("unit and integration tests (cargo test)", unit_tests)?;
    println!("unit and integration tests: {up} passed, {uf} failed");
    let prepared = (|| -> anyhow::Result<Artifacts> {
        let mut art = prepare(&mut t)?;
        art.packages = Some(packages(&art, &mut t)?);
        Ok(art)
    })();
    let art = match prepared {
        Ok(a) => a,
        Err(e) => {
            // Where the time went up to the failure, then why it stopped.
            for l in t.summary(None, &timing::host()) {
                println!("{l}");
            }
            return Err(e);
        }
    };
    // The packages: the same bytes from a second build, and lintian without errors.
    let mut checks: Vec<(&str, anyhow::Result<()>)> = Vec::new();
    let pk = art.packages.clone().expect("prepared");
    let again = t.phase("deb-reproducible (a second build)", || {
        build_debs(&root().join("target/debian-check"), &deb_version())
    });
    checks.push((
        "deb-reproducible",
        again.and_then(|again| {
            for (a, b) in pk.debs.iter().zip(&again) {
                anyhow::ensure!(
                    std::fs::read(a)? == std::fs::read(b)?,
                    "{} differs when built again",
                    a.display()
                );
            }
            Ok(())
        }),
    ));
    // Not the kernel package: lintian takes over 10 minutes on its 4,000 modules under load
    // (`lintian target/debian/bootenv-kernel-*.deb` checks it).
    let lint = t.phase("deb-lintian", || lintian(&pk.debs[..2]));
    checks.push(("deb-lintian", lint));
    let (cp, cf) = checks.iter().fold((0, 0), |(p, f), (name, r)| match r {
        Ok(()) => {
            println!("PASS {name}");
            (p + 1, f)
        }
        Err(e) => {
            println!("FAIL {name}: {e:#}");
            (p, f + 1)
        }
    });
    let report = scenarios::run(&art, &[], false, jobs())?;
    let vf = report
        .outcomes
        .iter()
        .filter(|o| o.failure.is_some())
        .count()
        + cf;
    let vp = report.outcomes.len() - (vf - cf) + cp;
    println!("VM scenarios and package checks: {vp} passed, {vf} failed");
    for o in report.outcomes.iter().filter(|o| o.failure.is_some()) {
        println!("  FAILED {}", o.name);
    }
    for l in t.summary(Some(&report), &timing::host()) {
        println!("{l}");
    }
    summary(up + vp, uf + vf)
}

fn demo() -> anyhow::Result<()> {
    deps::ensure()?;
    let art = prepare(&mut timing::Phases::new())?;
    let dir = work_dir().join("demo");
    std::fs::create_dir_all(&dir)?;
    let disk = dir.join("disk.qcow2");
    bootenv_vmtest::disk::overlay(&art.golden, &disk)?;
    let cmdline = format!(
        "{} bootenv=v2 bootenv.pool=tank",
        bootenv_vmtest::images::BASE_CMDLINE
    );
    println!("==> booting the demo disk: pool tank with boot environments v1 (default), v2, v3");
    println!("    kernel command line: {cmdline}");
    println!("------------------------------------------------------------------ guest console");
    let cfg = VmConfig {
        boot: Boot::Direct {
            kernel: art.kernel.vmlinuz.clone(),
            initrd: art.initrd.clone(),
            append: cmdline.into(),
        },
        disks: vec![disk],
        log: dir.join("console.log"),
        memory_mb: 1024,
        cpus: 2,
        limit: Duration::from_secs(400),
        echo: true,
        accel: art.accel.clone(),
    };
    let t = Instant::now();
    let mut vm = Vm::start(&cfg)?;
    let be = vm.expect(r"BOOTENV-TEST be-started name=(\S+)\s", scenarios::BOOT)?[1].clone();
    let config = vm.expect(r"BOOTENV-TEST config=([^\r\n]*)\r?\n", scenarios::STEP)?[1].clone();
    let dataset = vm.expect(r"BOOTENV-TEST report dataset=(\S+)\s", scenarios::STEP)?[1].clone();
    let choice = vm.expect(r"BOOTENV-TEST report choice=(\S+)\s", scenarios::STEP)?[1].clone();
    let start: f64 = vm.expect(
        r"BOOTENV-TEST report agent-start=([0-9.]+)\s",
        scenarios::STEP,
    )?[1]
        .parse()?;
    let exec: f64 = vm.expect(
        r"BOOTENV-TEST report init-exec=([0-9.]+)\s",
        scenarios::STEP,
    )?[1]
        .parse()?;
    vm.expect_poweroff(scenarios::STEP)?;
    println!("------------------------------------------------------------------ summary");
    println!("booted:  {be} ({dataset}), chosen: {choice}");
    println!(
        "config:  {}",
        config.trim_end_matches(';').replace(';', "; ")
    );
    println!("kernel start -> exec of the BE's init: {exec:.2} s (guest clock; the agent started at {start:.2} s and ran {:.2} s)", exec - start);
    println!(
        "VM wall time: {:.1} s under {}; console log: {}",
        t.elapsed().as_secs_f64(),
        art.accel,
        cfg.log.display()
    );
    Ok(())
}

/// `cargo xtask bench`: each benchmark of [`bootenv_vmtest::bench`], one line each, and the
/// table in tests/bench-results.md.
fn bench(boots: usize, data_datasets: usize, mut names: Vec<String>) -> anyhow::Result<()> {
    use bootenv_vmtest::bench::{Bench, NAMES};
    if names.is_empty() {
        names = NAMES.iter().map(|n| n.to_string()).collect();
    }
    deps::ensure_bench()?;
    let art = prepare(&mut timing::Phases::new())?;
    let work = art.work.clone();
    let release = art.kernel.release.clone();
    println!("==> bootenv's initramfs as shipped (xtask initramfs) for {release}");
    let image = bootenv_initramfs::agent_image(&bootenv_initramfs::Options {
        kernel: art.kernel.clone(),
        agent: art.agent.clone(),
        extra_modules: Vec::new(),
    })?;
    let cpio = image.write(bootenv_initramfs::epoch());
    let ours = work.join(format!("bench-bootenv-initrd-{release}.cpio.zst"));
    std::fs::write(&ours, bootenv_initramfs::compress(&cpio)?)?;
    println!("==> Debian's stock initramfs (mkinitramfs with zfs-initramfs) for {release}");
    let stock = work.join(format!("bench-stock-initrd-{release}.img"));
    let st = Command::new("mkinitramfs")
        .args(["-o", &stock.to_string_lossy(), &release])
        .status()
        .context("running mkinitramfs")?;
    if !st.success() {
        bail!("mkinitramfs -o {} {release} failed ({st})", stock.display());
    }
    // What the stock image was made with, for the results: the anchor is as configured here.
    let conf = std::fs::read_to_string("/etc/initramfs-tools/initramfs.conf").unwrap_or_default();
    let setting = |k: &str| {
        conf.lines()
            .rfind(|l| l.trim_start().starts_with(&format!("{k}=")))
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| format!("{k} unset"))
    };
    let hooks = |d: &str| -> String {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.join(" ")
    };
    let listed = Command::new("lsinitramfs")
        .arg(&stock)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let stock_config = format!(
        "mkinitramfs with {}, {}; hooks: {}; local hooks: [{}]; /etc/hostid in the image: {}; 2 vCPUs, 2 GiB, as every side",
        setting("MODULES"),
        setting("COMPRESS"),
        hooks("/usr/share/initramfs-tools/hooks"),
        hooks("/etc/initramfs-tools/hooks"),
        if listed.lines().any(|l| l.trim() == "etc/hostid") { "yes" } else { "no" },
    );
    println!("    {stock_config}");
    println!("==> the floor image (bootenv's, with a busybox /init) for {release}");
    let floor_image = bootenv_initramfs::floor_image(
        &bootenv_initramfs::Options {
            kernel: art.kernel.clone(),
            agent: art.agent.clone(),
            extra_modules: Vec::new(),
        },
        bootenv_vmtest::bench::FLOOR_INIT.as_bytes(),
    )?;
    let floor = work.join(format!("bench-floor-initrd-{release}.cpio.zst"));
    std::fs::write(
        &floor,
        bootenv_initramfs::compress(&floor_image.write(bootenv_initramfs::epoch()))?,
    )?;
    let mut b = Bench::new(&art, ours, (stock, stock_config), floor, boots)?;
    b.data_datasets = data_datasets;
    let results = root().join("tests/bench-results.md");
    let before = std::fs::read_to_string(&results).unwrap_or_default();
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for n in &names {
        println!("==> bench {n}");
        let t = Instant::now();
        let line = match n.as_str() {
            "boot-path" => b.boot_path(),
            "initramfs-size" => b.initramfs_size(),
            "scale-datasets" => b.scale_datasets(),
            "data-ready" => b.data_ready(),
            "grub-menu-100" => b.grub_menu(),
            "reset-cost" => b.reset_cost(),
            _ => unreachable!("checked above"),
        };
        match line {
            Ok(line) => {
                println!("{}", line.render());
                println!("    ({:.0} s)", t.elapsed().as_secs_f64());
                lines.push(line);
                // After each benchmark, so that an interrupted run keeps what it measured.
                std::fs::write(
                    &results,
                    bench_table(&lines, &before, &art.accel, &release, boots),
                )?;
            }
            Err(e) => {
                println!("bench {n}: could not be measured: {e:#}");
                failed.push(n.clone());
            }
        }
    }
    println!();
    for l in &lines {
        println!("{}", l.render());
    }
    println!("table: {}", results.display());
    if !failed.is_empty() {
        bail!("not measured: {}", failed.join(", "));
    }
    Ok(())
}

/// The results file: where and when the numbers came from, the lines, the samples. Rows of
/// benchmarks not run this time are kept from `before` (the file as it was), each row naming
/// the commit and time it was measured at.
fn bench_table(
    lines: &[bootenv_vmtest::bench::Line],
    before: &str,
    accel: &str,
    release: &str,
    boots: usize,
) -> String {
    let sh = |c: &str| {
        Command::new("sh")
            .args(["-c", c])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let when = sh("date -u +%Y-%m-%dT%H:%MZ");
    let commit = sh("git rev-parse --short HEAD");
    // (name, table row, sample line, printed line) of this run, then the kept ones.
    let mut rows: Vec<(String, String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                l.table_row(&format!("{when} {commit}, {boots} runs")),
                format!("- `{}`: {}", l.name, l.detail),
                l.render(),
            )
        })
        .collect();
    let old = |prefix: &str| -> Option<String> {
        before
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned)
    };
    // Rows written when the header named one count of runs for all get it in their own cell.
    let old_runs = before
        .lines()
        .find_map(|l| {
            l.split("; ")
                .nth(1)?
                .strip_suffix(" runs per side, medians")
        })
        .map(str::to_owned);
    for name in bootenv_vmtest::bench::LINE_NAMES {
        if rows.iter().any(|r| r.0 == *name) {
            continue;
        }
        if let (Some(row), Some(sample), Some(printed)) = (
            old(&format!("| {name} |")),
            old(&format!("- `{name}`:")),
            old(&format!("bench {name}:")),
        ) {
            // Rows written before the "measured" column get it as unknown.
            let mut row = if row.matches('|').count() == 8 {
                row
            } else {
                format!("{row} earlier |")
            };
            if let (Some(n), false) = (&old_runs, row.contains(" runs |")) {
                row = format!("{}, {n} runs |", row.trim_end_matches(" |"));
            }
            rows.push((name.to_string(), row, sample, printed));
        }
    }
    let order = |n: &str| {
        bootenv_vmtest::bench::LINE_NAMES
            .iter()
            .position(|x| *x == n)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by_key(|r| order(&r.0));
    let mut t = String::from("# bootenv benchmarks\n\nWritten by `cargo xtask bench`; each line compares bootenv with its anchor measured in the same run, in the same VM setup (see `tests/src/bench.rs`). A run of some benchmarks keeps the others' rows; each row names when and at which commit it was measured.\n\n");
    t += &format!(
        "- host: {} x {}, {} GiB RAM, accelerator {accel}\n- guest: Debian kernel {release}, 2 vCPUs, 2 GiB; medians of the runs per side that each row names\n\n",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("awk '/MemTotal/ {printf \"%.0f\", $2/1048576}' /proc/meminfo"),
    );
    t += "| benchmark | bootenv | anchor | ratio | goal | verdict | measured |\n|---|---|---|---|---|---|---|\n";
    for r in &rows {
        t += &r.1;
        t += "\n";
    }
    t += "\n## Samples\n\n";
    for r in &rows {
        t += &r.2;
        t += "\n";
    }
    t += "\n## Lines as printed\n\n```\n";
    for r in &rows {
        t += &r.3;
        t += "\n";
    }
    t += "```\n";
    t
}
