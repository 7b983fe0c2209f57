//! The command line of the operator's CLI (clap), and its dispatch to [`crate::ops`].
//!
//! Exit codes: 0 success; 1 the command failed (the message says why and what to do);
//! 2 the command line is wrong.

use crate::mounts::SysMounter;
use crate::names::{BeName, PoolName};
use crate::ops::{CreateOpts, Ctx};
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
    /// Make a boot environment the default for the next boots.
    Activate {
        /// The boot environment.
        name: BeName,
    },
    /// Record a boot environment (default: the running one) as the last known-good.
    MarkGood {
        /// The boot environment.
        name: Option<BeName>,
    },
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let level = if cli.verbose { log::LevelFilter::Debug } else { log::LevelFilter::Warn };
    let _ = simple_logger::SimpleLogger::new().with_level(level).init();
    let zfs = ZfsCli::default();
    let mounter = SysMounter;
    let ctx = Ctx { root: PathBuf::from("/"), zfs: &zfs, mounter: &mounter, pool: cli.pool.clone() };
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
        Command::Activate { name } => ctx.activate(name),
        Command::MarkGood { name } => ctx.mark_good(name.as_ref(), now),
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
