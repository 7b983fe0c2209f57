//! xtask's command line, defined once with clap (as the agent's is): `cargo xtask --help` and
//! each task's `--help` come from here.

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The one build entry point of bootenv.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about,
    disable_version_flag = true
)]
pub struct Xtask {
    /// The task.
    #[command(subcommand)]
    pub task: Task,
}

/// The tasks.
#[derive(Debug, Subcommand)]
pub enum Task {
    /// Install the packages the VMs need (QEMU, OVMF, GRUB, ZFS for the guest kernel; needs root).
    Deps,
    /// Build the static agent.
    Build,
    /// Build bootenv's initramfs for a kernel.
    Initramfs {
        /// The kernel release (default: the newest installed).
        #[arg(long)]
        kernel: Option<String>,
        /// Where to write it (default target/bootenv/initramfs-<release>.cpio.zst).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A module to add besides the initramfs's own list (repeatable).
        #[arg(long = "module", value_name = "NAME")]
        modules: Vec<String>,
    },
    /// Run VM scenarios (all when none is named).
    VmTest {
        /// List the scenarios and what each shows.
        #[arg(long)]
        list: bool,
        /// The scenarios to run.
        #[arg(value_name = "SCENARIO")]
        names: Vec<String>,
    },
    /// Unit tests, then every VM scenario; ends with "N passed, N failed".
    Test,
    /// Boot a boot environment in a VM and show the agent at work.
    Demo,
    /// Benchmarks against the anchors, in the VM (not a test); results in
    /// tests/bench-results.md.
    Bench {
        /// Boots per side.
        #[arg(long, default_value_t = 5)]
        boots: usize,
        /// Customer datasets in the data pool that data-ready imports. 10,000 (scale-datasets'
        /// size) takes about 75 min to make and over 12 min per import under TCG.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(100..=100_000))]
        data_datasets: u64,
        /// The benchmarks (default: all).
        #[arg(value_parser = PossibleValuesParser::new(bootenv_vmtest::bench::NAMES))]
        names: Vec<String>,
    },
    /// libFuzzer on the parsers (not a test); figures in tests/fuzz-results.md.
    Fuzz {
        /// Inputs per target.
        #[arg(long, default_value_t = 10_000_000)]
        runs: u64,
        /// Targets run side by side.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        jobs: u32,
        /// The targets (default: all).
        #[arg(value_parser = PossibleValuesParser::new(crate::fuzz::TARGETS))]
        targets: Vec<String>,
    },
    /// bootenv's man pages and shell completions, into target/doc-gen.
    Man,
    /// The bootenv and bootenv-grub packages, into target/debian; lintian.
    Deb {
        /// Build twice and compare the bytes (reproducibility).
        #[arg(long)]
        check: bool,
    },
    /// bootenv-kernel-<release>: a kernel and its ZFS modules (default: the kernel the tests
    /// boot, and the modules DKMS built for it).
    KernelDeb {
        /// A linux-image .deb.
        #[arg(long, conflicts_with_all = ["vmlinuz", "modules"])]
        kernel: Option<PathBuf>,
        /// A kernel image (with --modules).
        #[arg(long, requires = "modules")]
        vmlinuz: Option<PathBuf>,
        /// Its lib/modules/<release> directory (with --vmlinuz).
        #[arg(long, requires = "vmlinuz")]
        modules: Option<PathBuf>,
        /// Where its ZFS modules are (default: DKMS's directory for that release).
        #[arg(long)]
        zfs: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_holds_and_parses_what_the_readme_shows() {
        Xtask::command().debug_assert();
        for line in [
            "xtask test",
            "xtask vm-test --list",
            "xtask vm-test boot-select grub-menu-pick",
            "xtask bench --boots 3 boot-path",
            "xtask fuzz --runs 1000 --jobs 2 cmdline state",
            "xtask deb --check",
            "xtask kernel-deb --vmlinuz /v --modules /m",
            "xtask initramfs --kernel 6.1.0-57-amd64 --module virtio_blk --module e1000",
        ] {
            Xtask::try_parse_from(line.split(' ')).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        for bad in [
            "xtask bench nosuch",
            "xtask fuzz nosuch",
            "xtask fuzz --jobs 0",
            "xtask kernel-deb --vmlinuz /v",
            "xtask kernel-deb --kernel k.deb --vmlinuz /v --modules /m",
            "xtask nosuch",
        ] {
            assert!(Xtask::try_parse_from(bad.split(' ')).is_err(), "{bad}");
        }
    }
}
