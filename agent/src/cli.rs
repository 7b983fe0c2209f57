//! The command line of the operator's CLI (clap), and its dispatch to [`crate::ops`].
//!
//! Exit codes: 0 success; 1 the command failed (the message says why and what to do);
//! 2 the command line is wrong.

use crate::mounts::SysMounter;
use crate::names::{BeName, PoolName};
use crate::state::ResetMode;
use crate::ops::{Activation, CreateOpts, Ctx, EspChoice};
use crate::zfs::cli::ZfsCli;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Versioned, self-healing ZFS boot environments.
///
/// As PID 1 of an initramfs this program boots the boot environment GRUB chose; on a running
/// system it is the operator's tool.
#[derive(Debug, Parser)]
#[command(name = "bootenv", version, about, long_about = None)]
pub struct Cli {
    /// The pool holding the boot environments (default: the pool this system booted from).
    #[arg(long, global = true)]
    pub pool: Option<PoolName>,
    /// The ESP's mount point (default: /boot/efi or /efi when mounted there, else the one
    /// EFI system partition on this machine's disks).
    #[arg(long, global = true)]
    pub esp: Option<PathBuf>,
    /// Log every command bootenv runs.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// How this system booted: which boot environment, why, and what bootenv remembers.
    Status,
    /// List the boot environments.
    List,
    /// Create <pool>/ROOT and <pool>/BOOTENV in an existing pool (idempotent).
    PreparePool {
        /// The pool.
        pool: PoolName,
    },
    /// Create a boot environment from a directory tree, with a config dataset and a factory
    /// snapshot taken before it ever runs.
    Create {
        /// Name of the new boot environment (letters, digits, '.', '_', '-').
        name: BeName,
        /// The tree that becomes its root file system.
        #[arg(long)]
        rootfs: PathBuf,
        /// A tree copied into its config dataset (default: what the rootfs holds there).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A label shown in menus and lists, usually the version (default: the name).
        #[arg(long)]
        label: Option<String>,
        /// Where the config dataset is mounted inside the boot environment.
        #[arg(long, default_value = crate::layout::DEFAULT_CONFIG_MOUNTPOINT)]
        config_mountpoint: String,
    },
    /// Make a boot environment the default, or boot it once, or start a trial of it.
    Activate {
        /// The boot environment.
        name: BeName,
        /// Boot it at the next boot only; the boot after is the default again.
        #[arg(long, conflicts_with = "trial")]
        once: bool,
        /// Try it: GRUB boots it up to N times (default: the pool's org.bootenv:tries, else 3)
        /// until it marks itself good, then goes back to the default by itself.
        #[arg(long, value_name = "N", num_args = 0..=1, require_equals = true, default_missing_value = "0")]
        trial: Option<u32>,
    },
    /// The running boot environment (or NAME) booted fine: commit its trial, or record it as
    /// the last known-good. Run it after boot-complete.target.
    MarkGood {
        /// The boot environment.
        name: Option<BeName>,
    },
    /// Copy boot environments' kernels to the ESP and rewrite the GRUB menu and variables.
    SyncBoot {
        /// The boot environments (default: every one that can boot).
        names: Vec<BeName>,
    },
    /// Print the GRUB menu (for /etc/grub.d/10_bootenv, or to look at it).
    GrubMenu,
    /// Schedule a factory reset of a boot environment (default: the running one) for its next
    /// boot: its config goes back to its factory snapshot (`--mode config`), and with
    /// `--mode full` so do the shared datasets marked org.bootenv:data=reset. What they held is
    /// kept aside, unless `--erase` (full only) destroys the previous data.
    FactoryReset {
        /// config or full.
        #[arg(long, value_parser = parse_mode, required_unless_present = "cancel")]
        mode: Option<ResetMode>,
        /// Destroy the previous data instead of keeping it (with --mode full).
        #[arg(long)]
        erase: bool,
        /// The boot environment (default: the running one).
        #[arg(long)]
        be: Option<BeName>,
        /// Cancel a pending reset that has not started.
        #[arg(long, conflicts_with_all = ["mode", "erase", "be"])]
        cancel: bool,
    },
}

fn parse_mode(s: &str) -> Result<ResetMode, String> {
    match s {
        "config" => Ok(ResetMode::Config),
        "full" => Ok(ResetMode::Full),
        _ => Err("config or full".into()),
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let level = if cli.verbose { log::LevelFilter::Debug } else { log::LevelFilter::Warn };
    let _ = simple_logger::SimpleLogger::new().with_level(level).init();
    let zfs = ZfsCli::default();
    let mounter = SysMounter;
    let ctx = Ctx { root: PathBuf::from("/"), zfs: &zfs, mounter: &mounter, pool: cli.pool.clone(), esp: cli.esp.clone().map(EspChoice::Mounted) };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let result = match &cli.command {
        Command::Status => ctx.status(),
        Command::List => ctx.list(),
        Command::PreparePool { pool } => ctx.prepare_pool(pool),
        Command::Create { name, rootfs, config, label, config_mountpoint } => ctx.create(
            name,
            &CreateOpts {
                rootfs: rootfs.clone(),
                config: config.clone(),
                label: label.clone(),
                config_mountpoint: config_mountpoint.clone(),
            },
        ),
        Command::Activate { name, once, trial } => {
            let how = match (once, trial) {
                (true, _) => Activation::Once,
                (false, Some(0)) => Activation::Trial(None),
                (false, Some(n)) => Activation::Trial(Some(*n)),
                (false, None) => Activation::Default,
            };
            ctx.activate(name, how, now)
        }
        Command::MarkGood { name } => ctx.mark_good(name.as_ref(), now),
        Command::SyncBoot { names } => ctx.sync_boot(names, now),
        Command::GrubMenu => ctx.grub_menu(),
        Command::FactoryReset { mode, erase, be, cancel } => ctx.factory_reset(*mode, *erase, be.as_ref(), *cancel, now),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("bootenv: error: {e:#}");
            1
        }
    }
}
