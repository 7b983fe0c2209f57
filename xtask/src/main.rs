//! `cargo xtask <task>`: the one build entry point of bootenv.
//!
//! - `deps`: install what the VMs need (apt packages, contrib, the ZFS module for the guest kernel)
//! - `build`: the static agent
//! - `initramfs --kernel <release> [--out <file>] [--module <name>]...`: bootenv's initramfs
//! - `vm-test [--list] [SCENARIO...]`: the VM scenarios
//! - `test`: unit and integration tests, then every VM scenario
//! - `demo`: build everything and boot a boot environment, showing the agent at work

mod deps;
mod docs;

use anyhow::{bail, Context};
use bootenv_vmtest::images::Artifacts;
use bootenv_vmtest::qemu::{Boot, Vm, VmConfig};
use bootenv_vmtest::scenarios;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: cargo xtask <deps|build|initramfs|vm-test|test|demo|man> [options]
  deps                          install packages the VMs need (needs root)
  build                         build the static agent
  initramfs --kernel <release>  build bootenv's initramfs [--out FILE] [--module NAME]...
  vm-test [--list] [NAME...]    run VM scenarios (all when none is named)
  test                          unit tests, then every VM scenario
  demo                          boot a boot environment in a VM and show the agent at work
  man                           bootenv's man pages and shell completions, into target/doc-gen";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("deps") => deps::ensure().map(|()| println!("all dependencies are installed")),
        Some("build") => build_agent().map(|p| println!("{}", p.display())),
        Some("initramfs") => initramfs(&args[1..]),
        Some("vm-test") => vm_test(&args[1..]),
        Some("test") => test(),
        Some("demo") => demo(),
        Some("man") => man(),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    match result {
        Ok(()) => {}
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn man() -> anyhow::Result<()> {
    let out = root().join("target/doc-gen");
    let d = docs::generate(&out)?;
    for p in d.man.iter().chain(&d.completions) {
        println!("{}", p.display());
    }
    println!(
        "read one with: man -l {}",
        out.join("man/bootenv.1").display()
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

fn initramfs(args: &[String]) -> anyhow::Result<()> {
    let mut kernel = None;
    let mut out = None;
    let mut extra = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kernel" => kernel = it.next().cloned(),
            "--out" => out = it.next().map(PathBuf::from),
            "--module" => extra.extend(it.next().cloned()),
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    let agent = build_agent()?;
    let kernel = bootenv_initramfs::Kernel::find(kernel.as_deref())?;
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

fn prepare() -> anyhow::Result<Artifacts> {
    deps::ensure()?;
    let agent = build_agent()?;
    Artifacts::prepare(&work_dir(), &agent, None)
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

fn vm_test(args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|a| a == "--list") {
        for s in scenarios::all() {
            println!("{:<28} {}", s.name, s.about);
        }
        return Ok(());
    }
    let names: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .cloned()
        .collect();
    for n in &names {
        if !scenarios::all().iter().any(|s| s.name == n) {
            bail!("no scenario named {n}; `cargo xtask vm-test --list` lists them");
        }
    }
    let art = prepare()?;
    let outcomes = scenarios::run(&art, &names, false, jobs())?;
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    summary(outcomes.len() - failed, failed)
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
    let t = Instant::now();
    deps::ensure()?;
    let (up, uf) = unit_tests()?;
    println!("unit and integration tests: {up} passed, {uf} failed");
    let art = prepare()?;
    let outcomes = scenarios::run(&art, &[], false, jobs())?;
    let vf = outcomes.iter().filter(|o| o.failure.is_some()).count();
    let vp = outcomes.len() - vf;
    println!("VM scenarios: {vp} passed, {vf} failed");
    for o in &outcomes {
        println!(
            "  {:<28} {:>6.1} s  {}",
            o.name,
            o.secs,
            if o.failure.is_some() { "FAIL" } else { "PASS" }
        );
    }
    println!("total time {:.0} s", t.elapsed().as_secs_f64());
    summary(up + vp, uf + vf)
}

fn demo() -> anyhow::Result<()> {
    let art = prepare()?;
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
            append: cmdline,
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
    let be = vm.expect(r"BOOTENV-TEST be-started name=(\S+)", scenarios::BOOT)?[1].clone();
    let config = vm.expect(r"BOOTENV-TEST config=([^\r\n]*)", scenarios::STEP)?[1].clone();
    let dataset = vm.expect(r"BOOTENV-TEST report dataset=(\S+)", scenarios::STEP)?[1].clone();
    let choice = vm.expect(r"BOOTENV-TEST report choice=(\S+)", scenarios::STEP)?[1].clone();
    let start: f64 = vm.expect(
        r"BOOTENV-TEST report agent-start=([0-9.]+)",
        scenarios::STEP,
    )?[1]
        .parse()?;
    let exec: f64 =
        vm.expect(r"BOOTENV-TEST report init-exec=([0-9.]+)", scenarios::STEP)?[1].parse()?;
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
