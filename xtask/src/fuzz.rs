//! `cargo xtask fuzz [--runs N] [--jobs J] [TARGET...]`: the fuzz campaign of bootenv's parsers
//! (not part of `test`).
//!
//! The targets live in `agent/fuzz` (a crate of its own, outside the workspace): `cmdline`,
//! `grubenv`, `state`, `zfs`, `report`. They are built the way cargo-fuzz builds them
//! (libFuzzer through libfuzzer-sys, SanitizerCoverage with 8-bit counters, PC tables and
//! compare tracing, debug assertions and overflow checks; no address sanitizer, which needs a
//! nightly compiler and guards against nothing safe Rust can do), for the host triple so that
//! build scripts stay uninstrumented. Each target starts from seeds made here with bootenv's own
//! writers, runs `-runs=N` inputs (default 10,000,000), and keeps its corpus in
//! `target/fuzz/corpus/<target>`; a crash leaves its input in `target/fuzz/artifacts/<target>/`.
//! The figures (inputs, seconds, inputs per second, crashes, corpus size) go to
//! `tests/fuzz-results.md`, a row per target naming the commit and time of its run.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The targets, in the order of the results table.
pub const TARGETS: [&str; 5] = ["cmdline", "grubenv", "state", "zfs", "report"];

/// The host triple the targets are built for.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// The flags cargo-fuzz passes to rustc, but the sanitizer's.
const RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

/// What one target's run measured.
struct Figures {
    target: String,
    runs: u64,
    secs: f64,
    crashes: usize,
    corpus: usize,
}

/// Runs the campaign.
pub fn run(root: &Path, runs: u64, jobs: usize, mut targets: Vec<String>) -> anyhow::Result<()> {
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    let dir = root.join("target/fuzz");
    // The commit the targets are built from (a run takes minutes; the tree may move meanwhile).
    let commit = sh(root, "git rev-parse --short HEAD")
        + if sh(root, "git status --porcelain -- agent grub xtask").is_empty() {
            ""
        } else {
            "+changes"
        };
    println!("==> building the fuzz targets (agent/fuzz, libFuzzer) at {commit}");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root.join("agent/fuzz"))
        .env("RUSTFLAGS", RUSTFLAGS)
        .args(["build", "--release", "--target", TRIPLE, "--target-dir"])
        .arg(&dir)
        .status()
        .context("running cargo build for agent/fuzz")?;
    if !st.success() {
        bail!("building the fuzz targets failed ({st})");
    }
    for t in &targets {
        seed(&dir.join("corpus").join(t), t)?;
        std::fs::create_dir_all(dir.join("artifacts").join(t))?;
    }
    let results = std::sync::Mutex::new(Vec::new());
    let queue = std::sync::Mutex::new(targets.clone());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(targets.len()) {
            s.spawn(|| loop {
                let Some(t) = queue.lock().expect("not poisoned").pop() else {
                    break;
                };
                let r = fuzz_one(&dir, &t, runs);
                results.lock().expect("not poisoned").push((t, r));
            });
        }
    });
    let mut figures = Vec::new();
    let mut failed = Vec::new();
    for (t, r) in results.into_inner().expect("not poisoned") {
        match r {
            Ok(f) => figures.push(f),
            Err(e) => {
                println!("fuzz {t}: {e:#}");
                failed.push(t);
            }
        }
    }
    figures.sort_by_key(|f| TARGETS.iter().position(|t| *t == f.target));
    for f in &figures {
        let [t, runs, secs, rate, crashes, corpus] = f.cells();
        println!(
            "fuzz {t}: {runs} inputs in {secs} s ({rate}/s), {crashes} crashes, corpus {corpus}"
        );
    }
    let file = root.join("tests/fuzz-results.md");
    let before = std::fs::read_to_string(&file).unwrap_or_default();
    std::fs::write(&file, table(&figures, &before, root, &commit, jobs))?;
    println!("table: {}", file.display());
    let crashed: Vec<_> = figures
        .iter()
        .filter(|f| f.crashes > 0)
        .map(|f| f.target.clone())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "crashes in {}: inputs in {}",
            crashed.join(", "),
            dir.join("artifacts").display()
        );
    }
    if !failed.is_empty() {
        bail!("not run: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs one target for `runs` inputs.
fn fuzz_one(dir: &Path, t: &str, runs: u64) -> anyhow::Result<Figures> {
    let bin = dir.join(TRIPLE).join("release").join(t);
    let corpus = dir.join("corpus").join(t);
    let artifacts = dir.join("artifacts").join(t);
    let log = dir.join(format!("{t}.log"));
    println!("==> fuzz {t}: {runs} inputs (log {})", log.display());
    let start = Instant::now();
    let out = std::fs::File::create(&log)?;
    let st = Command::new(&bin)
        .arg(format!("-runs={runs}"))
        .arg("-max_len=4096")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus)
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // libFuzzer's own word for each input it kept as a failure (a file name repeats when the
    // same input fails again, so files are not counted).
    let crashes = text.matches("Test unit written to ").count();
    // libFuzzer's own count: "stat::number_of_executed_units: N".
    let done = text
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok());
    let Some(done) = done else {
        bail!(
            "{t} stopped ({st}) without its final figures; see {}",
            log.display()
        );
    };
    if !st.success() && crashes == 0 {
        bail!(
            "{t} failed ({st}) without leaving a crash input; see {}",
            log.display()
        );
    }
    Ok(Figures {
        target: t.to_owned(),
        runs: done,
        secs,
        crashes: crashes.max(usize::from(!st.success())),
        corpus: count(&corpus),
    })
}

impl Figures {
    /// Target, inputs, seconds, inputs per second, crashes, corpus: as printed and tabled.
    fn cells(&self) -> [String; 6] {
        [
            self.target.clone(),
            self.runs.to_string(),
            format!("{:.0}", self.secs),
            format!("{:.0}", self.runs as f64 / self.secs.max(0.001)),
            self.crashes.to_string(),
            self.corpus.to_string(),
        ]
    }
}

/// What a shell command prints, trimmed (empty when it fails).
fn sh(root: &Path, c: &str) -> String {
    Command::new("sh")
        .args(["-c", c])
        .current_dir(root)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Writes the seeds of target `t` into `corpus` (kept across runs; seeds are rewritten).
fn seed(corpus: &Path, t: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(corpus)?;
    let put = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let p: PathBuf = corpus.join(format!("seed-{name}"));
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))
    };
    match t {
        "cmdline" => {
            put("plain", b"BOOT_IMAGE=/bootenv/_kernels/ab/vmlinuz bootenv=v2 bootenv.pool=tank console=ttyS0 panic=10 bootenv.trial=1")?;
            put(
                "quoted",
                b"root=ZFS=tank/ROOT/v1 \"a b\" x=\"y z\" zfs.zfs_arc_max=1 -- bootenv=v9 init-arg",
            )?;
            put("bytes", b"bootenv=v1\t\xa0bootenv.reset=full\x0bbootenv.rollback=v3 \xff\xfe bootenv.unloadable=v2")?;
        }
        "grubenv" => {
            let mut b = bootenv::bootloader::grubenv::EnvBlock::new();
            for (k, v) in [
                ("bootenv_version", "1"),
                ("bootenv_default", "v2"),
                ("bootenv_trial", "v3"),
                ("bootenv_tries", "2"),
                ("saved_entry", "x"),
            ] {
                b.set(k, v).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            put("block", &b.render())?;
            put(
                "empty",
                &bootenv::bootloader::grubenv::EnvBlock::new().render(),
            )?;
        }
        "state" => {
            use bootenv::model::state::{encode, Event, EventKind, State, Trial};
            let s = State {
                last_good: Some("v1".into()),
                trial: Some(Trial {
                    be: "v2".into(),
                    tries: 3,
                }),
                reset: None,
                history: vec!["v1".into(), "v2".into()],
                events: vec![Event {
                    time: 1_700_000_000,
                    kind: EventKind::MarkedGood { be: "v1".into() },
                }],
            };
            put("record", &encode(&s))?;
            put("empty", &encode(&State::default()))?;
        }
        "zfs" => {
            let cols = bootenv::sys::zfs::list_columns();
            let mut list = String::new();
            for (n, extra) in [
                ("tank", "-"),
                ("tank/ROOT", "-"),
                ("tank/ROOT/v1", "1.0"),
                ("tank/ROOT/v2", "2.0"),
                ("tank/ROOT/v2/config", "-"),
            ] {
                let fields: Vec<String> = cols
                    .split(',')
                    .enumerate()
                    .map(|(i, c)| match (i, c) {
                        (0, _) => n.to_owned(),
                        (_, "canmount") => "noauto".into(),
                        (_, "mountpoint") => "/".into(),
                        (_, c) if c.contains("label") => extra.into(),
                        (_, c) if c.contains("cmdline") => "console=ttyS0 quiet".into(),
                        (_, "creation" | "used") => "1700000000".into(),
                        _ => "-".into(),
                    })
                    .collect();
                list.push_str(&fields.join("\t"));
                list.push('\n');
            }
            put("list", list.as_bytes())?;
            put("scan", b"   pool: tank\n     id: 123\n  state: ONLINE\n action: The pool can be imported.\n")?;
            put("import-error", b"cannot import 'tank': pool was previously in use from another system.\nLast accessed by host (hostid=0x1234abcd)\n")?;
        }
        "report" => {
            put("report", b"be=v1\nrequested=v2\nchoice=fallback\nreason=boot environment v2 does not exist\npool=tank\nwarning=w1\ninit-exec=2.000\n")?;
        }
        other => bail!("no seeds for {other}"),
    }
    Ok(())
}

/// The results file: this run's rows, then the kept rows of targets not run this time.
fn table(figures: &[Figures], before: &str, root: &Path, commit: &str, jobs: usize) -> String {
    let when = sh(root, "date -u +%Y-%m-%dT%H:%MZ");
    let cpu = sh(root, "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
    let mut rows = Vec::new();
    for t in TARGETS {
        if let Some(f) = figures.iter().find(|f| f.target == t) {
            rows.push(format!(
                "| {} | {when}, built at {commit} |",
                f.cells().join(" | ")
            ));
        } else if let Some(old) = before.lines().find(|l| l.starts_with(&format!("| {t} |"))) {
            rows.push(old.to_owned());
        }
    }
    format!(
        "# bootenv fuzz campaign\n\n\
Written by `cargo xtask fuzz` (see `xtask/src/fuzz.rs` and the targets in `agent/fuzz/fuzz_targets`): \
libFuzzer on each parser of what bootenv reads from outside, with the checks each target \
states besides \"no panic\". Not part of `cargo xtask test`. A run of some targets keeps the \
others' rows; each row names when and at which commit it ran.\n\n\
- host: {cpu}, {} cores; the last run: {jobs} target(s) at a time\n\n\
| target | inputs | seconds | inputs/s | crashes | corpus | measured |\n\
|---|---|---|---|---|---|---|\n{}\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        rows.join("\n")
    )
}
