//! The command line of the operator's CLI (clap), and its dispatch to the verbs
//! ([`crate::verbs`]).
//!
//! Every verb returns a typed outcome ([`crate::verbs::outcome`]); this module prints it as text,
//! or with `--json` as a JSON document, and an error as a message (and a JSON document with its
//! kind). Exit codes: 0 success; 1 the command failed (the message says why and what to do);
//! 2 the command line is wrong.

use crate::model::datapools::MountPolicy;
use crate::model::failure::ErrorKind;
use crate::model::names::{BeName, PoolName};
use crate::model::state::ResetMode;
use crate::sys::mounts::SysMounter;
use crate::sys::zfs::cli::ZfsCli;
use crate::verbs::context::{Ctx, EspChoice, Facts, IndexUse};
use crate::verbs::lifecycle::CloneOpts;
use crate::verbs::ops::{Activation, CreateOpts};
use crate::verbs::outcome::Outcome;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// What `bootenv --help` and the man page say about exit codes.
pub const EXIT_STATUS: &str = "Exit status:
  0  success
  1  the command failed; the message says why and what to do, and nothing was left half-done
  2  the command line is wrong (unknown verb or option, missing argument)";

/// Versioned, self-healing ZFS boot environments.
///
/// As PID 1 of an initramfs this program boots the boot environment GRUB chose; on a running
/// system it is the operator's tool.
#[derive(Debug, Parser)]
#[command(name = "bootenv", version, about, long_about = None, after_long_help = EXIT_STATUS)]
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
    /// Print the outcome (or the error, with its kind) as one JSON document on standard
    /// output, schema version 1 (see ARCHITECTURE.md); progress and warnings go to standard
    /// error.
    #[arg(long, global = true)]
    pub json: bool,
    /// When another bootenv command is changing the boot environments, wait for it, up to
    /// SECONDS (600 when not given), instead of failing at once.
    #[arg(long, global = true, value_name = "SECONDS", num_args = 0..=1, require_equals = true, default_missing_value = "600")]
    pub wait: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// How this system booted: which boot environment, why, and what bootenv remembers.
    Status,
    /// List the boot environments: name, label, creation time, origin, space used and state.
    List,
    /// Create <pool>/ROOT and <pool>/BOOTENV in an existing pool (idempotent).
    PreparePool {
        /// The pool.
        pool: PoolName,
    },
    /// Create a boot environment: from another one (`--from`, default the running one: one
    /// atomic snapshot, then clones) or from a directory tree (`--rootfs`), with a factory
    /// snapshot taken before it ever runs.
    Create {
        /// Name of the new boot environment (letters, digits, '.', '_', '-').
        name: BeName,
        /// Make it from this boot environment, or from one of its snapshots (`be@snap`).
        #[arg(long, conflicts_with = "rootfs")]
        from: Option<String>,
        /// Start its config from the source's factory state instead of the source's current one.
        #[arg(long, requires = "from")]
        fresh_config: bool,
        /// The tree that becomes its root file system.
        #[arg(long)]
        rootfs: Option<PathBuf>,
        /// A tree copied into its config dataset (default: what the rootfs holds there).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A label shown in menus and lists, usually the version (default: the name).
        #[arg(long)]
        label: Option<String>,
        /// Where the config dataset is mounted inside the boot environment.
        #[arg(long, default_value = crate::model::layout::DEFAULT_CONFIG_MOUNTPOINT)]
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
    /// Make a new boot environment from the running one, run a command chrooted in it
    /// (/proc, /sys and /dev bound), copy its kernel to the ESP and start a trial of it. A
    /// failing command leaves nothing behind.
    Upgrade {
        /// Name of the new boot environment.
        name: BeName,
        /// A label for it (default: the running one's).
        #[arg(long)]
        label: Option<String>,
        /// Tries of its trial (default: the pool's org.bootenv:tries, else 3).
        #[arg(long)]
        tries: Option<u32>,
        /// Start its config from the factory state instead of carrying the current one over.
        #[arg(long)]
        fresh_config: bool,
        /// The command, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Make the previous default (or NAME) the default again; repeated, it walks back through
    /// the defaults this machine had.
    Rollback {
        /// The boot environment to go back to.
        name: Option<BeName>,
    },
    /// Walk forward again through the defaults a rollback walked back over.
    Rollforward,
    /// Mount a boot environment's files (or a snapshot's: NAME@SNAP) without booting it,
    /// read-only unless --rw; prints where.
    Mount {
        /// NAME or NAME@SNAPSHOT.
        what: String,
        /// Where (default /run/bootenv/mnt/<what>).
        dir: Option<PathBuf>,
        /// Writable (a boot environment, never a snapshot).
        #[arg(long)]
        rw: bool,
    },
    /// Unmount what `bootenv mount` mounted.
    Unmount {
        /// The name given to mount, or the directory.
        what: String,
    },
    /// Which files differ between two boot environments or snapshots.
    Diff {
        /// NAME or NAME@SNAPSHOT.
        a: String,
        /// NAME or NAME@SNAPSHOT.
        b: String,
    },
    /// Destroy a boot environment. Refuses the running, default, trial and last known-good
    /// ones, and ones whose snapshots other datasets were cloned from (see --promote-dependents);
    /// never destroys a dataset bootenv did not make.
    Destroy {
        /// The boot environment.
        name: BeName,
        /// Only list exactly what would be destroyed.
        #[arg(long)]
        dry_run: bool,
        /// Promote clones of its snapshots first (they take those snapshots over).
        #[arg(long)]
        promote_dependents: bool,
    },
    /// Rename a boot environment (not the running, default, trial or last known-good one).
    Rename {
        /// Its name.
        old: BeName,
        /// Its new name.
        new: BeName,
    },
    /// Write a replication stream of a boot environment (root, members, snapshots) to FILE or
    /// stdout (-), for disaster recovery or support.
    Export {
        /// The boot environment.
        name: BeName,
        /// A file, or - for stdout.
        to: String,
    },
    /// Lay out a blank disk as a bootenv machine: GPT (ESP, pool, BIOS boot), GRUB for UEFI
    /// and BIOS, the pool (named by --pool, default rpool) with bootenv's layout, the first boot
    /// environment (with its factory snapshot) from a directory tree or a tarball, its kernel
    /// and the menu on the ESP.
    Install {
        /// The disk, e.g. /dev/sdb. Everything on it is lost.
        #[arg(long)]
        disk: PathBuf,
        /// A directory tree or a tarball: the first boot environment's root.
        #[arg(long)]
        from: PathBuf,
        /// Name of the first boot environment.
        #[arg(long, default_value = "v1")]
        name: BeName,
        /// Its label.
        #[arg(long)]
        label: Option<String>,
        /// Where GRUB's images are.
        #[arg(long, default_value = crate::verbs::install::DEFAULT_GRUB_DIR)]
        grub_dir: PathBuf,
        /// Size of the ESP, MiB.
        #[arg(long, default_value_t = crate::verbs::install::DEFAULT_ESP_MIB)]
        esp_mib: u64,
        /// Kernel command line for GRUB's entries (org.bootenv:cmdline).
        #[arg(long)]
        cmdline: Option<String>,
        /// Lay out a disk that holds a partition table.
        #[arg(long)]
        force: bool,
        /// Make a data pool on this disk too (bootenv partitions it), named in the new pool's
        /// org.bootenv:data-pools; given more than once, the disks are mirrored. Everything on
        /// them is lost.
        #[arg(long, value_name = "DISK")]
        data_disk: Vec<PathBuf>,
        /// The data pool's name.
        #[arg(long, default_value = "data", requires = "data_disk")]
        data_pool: PoolName,
    },
    /// The data pools: pools of customer data the booted system imports after the switch of
    /// root (never the initramfs), in their order, so that a boot never waits for their
    /// datasets. Without an action, where each stands.
    DataPools {
        /// What to do (default: list).
        #[command(subcommand)]
        action: Option<DataPoolsAction>,
    },
    /// In a Debian initramfs-tools image (the `bootenv` boot script): import the pool, mount
    /// the chosen boot environment at ROOTMNT after any reset or rollback work.
    #[command(hide = true)]
    InitramfsToolsMount {
        /// initramfs-tools' ${rootmnt}.
        rootmnt: PathBuf,
    },
    /// Receive a boot environment stream (from `bootenv export`) into this pool.
    Import {
        /// A file, or - for stdin.
        from: String,
        /// Its name here (default: its name in the stream).
        #[arg(long)]
        name: Option<BeName>,
    },
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

/// What `bootenv data-pools` does.
#[derive(Debug, Subcommand)]
pub enum DataPoolsAction {
    /// Where each data pool stands: imported, its health, what this boot's import did.
    List,
    /// Name a data pool (or change how it is mounted); its disks need not be attached now.
    Add {
        /// The pool (not `--pool`, which names the system pool).
        #[arg(value_name = "POOL")]
        data_pool: PoolName,
        /// What its import mounts: all (its datasets with canmount=on) or none (zpool
        /// import -N; the services mount what they use).
        #[arg(long, default_value = "all", value_parser = parse_mount)]
        mount: MountPolicy,
    },
    /// Stop importing a data pool at boot; the pool and its data are untouched.
    Remove {
        /// The pool.
        #[arg(value_name = "POOL")]
        data_pool: PoolName,
    },
    /// Import the data pools that are not imported (bootenv-data-pools.service runs this after
    /// the switch of root); fails when one is missing or cannot be imported, after importing
    /// the others.
    Import {
        /// How long to wait for a pool's disks to appear, seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        device_wait: u64,
    },
}

fn parse_mount(s: &str) -> Result<MountPolicy, String> {
    MountPolicy::parse(s).ok_or_else(|| "all or none".into())
}

fn parse_mode(s: &str) -> Result<ResetMode, String> {
    match s {
        "config" => Ok(ResetMode::Config),
        "full" => Ok(ResetMode::Full),
        _ => Err("config or full".into()),
    }
}

impl Command {
    /// Whether the verb changes the pool, the state record or the ESP (and so takes the
    /// writers' lock).
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            Command::Status
                | Command::List
                | Command::GrubMenu
                | Command::Mount { .. }
                | Command::Unmount { .. }
                | Command::Diff { .. }
                | Command::InitramfsToolsMount { .. }
                | Command::Destroy { dry_run: true, .. }
                // Imports pools bootenv does not manage the boot of, and writes only its
                // report under /run: a long import must not hold up mark-good.
                | Command::DataPools {
                    action: None | Some(DataPoolsAction::List | DataPoolsAction::Import { .. })
                }
                // Its one snapshot is atomic and it touches neither the state record nor the
                // ESP; holding the lock while it streams would stall `export | import`.
                | Command::Export { .. }
        )
    }
}

impl Command {
    /// How the verb uses the BE index (`nested`: it runs on behalf of a holder of the writers'
    /// lock, which may change datasets after this run's listing).
    pub fn index_use(&self, nested: bool) -> IndexUse {
        match self {
            Command::GrubMenu => IndexUse::Read,
            Command::SyncBoot { .. } => {
                if nested {
                    IndexUse::Ignore
                } else {
                    IndexUse::Refresh
                }
            }
            Command::Activate { .. }
            | Command::MarkGood { .. }
            | Command::Rollback { .. }
            | Command::Rollforward => {
                if nested {
                    IndexUse::Read
                } else {
                    IndexUse::ReadWrite
                }
            }
            Command::Create { .. }
            | Command::Destroy { dry_run: false, .. }
            | Command::Rename { .. }
            | Command::Upgrade { .. }
            | Command::Import { .. } => IndexUse::Forget,
            _ => IndexUse::Ignore,
        }
    }
}

/// Every verb an operator types (`initramfs-tools-mount` is the initramfs's), as JSON's `verb`
/// names it.
pub const VERBS: [&str; 21] = [
    "status",
    "list",
    "prepare-pool",
    "create",
    "activate",
    "mark-good",
    "sync-boot",
    "grub-menu",
    "upgrade",
    "rollback",
    "rollforward",
    "mount",
    "unmount",
    "diff",
    "destroy",
    "rename",
    "export",
    "import",
    "install",
    "factory-reset",
    "data-pools",
];

impl Command {
    /// The verb's name, as typed and as JSON's `verb`.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::List => "list",
            Command::PreparePool { .. } => "prepare-pool",
            Command::Create { .. } => "create",
            Command::Activate { .. } => "activate",
            Command::MarkGood { .. } => "mark-good",
            Command::SyncBoot { .. } => "sync-boot",
            Command::GrubMenu => "grub-menu",
            Command::Upgrade { .. } => "upgrade",
            Command::Rollback { .. } => "rollback",
            Command::Rollforward => "rollforward",
            Command::Mount { .. } => "mount",
            Command::Unmount { .. } => "unmount",
            Command::Diff { .. } => "diff",
            Command::Destroy { .. } => "destroy",
            Command::Rename { .. } => "rename",
            Command::Export { .. } => "export",
            Command::InitramfsToolsMount { .. } => "initramfs-tools-mount",
            Command::Import { .. } => "import",
            Command::Install { .. } => "install",
            Command::FactoryReset { .. } => "factory-reset",
            Command::DataPools { .. } => "data-pools",
        }
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    if let Command::InitramfsToolsMount { rootmnt } = &cli.command {
        // Its own logger: the console and /dev/kmsg, as in bootenv's initramfs.
        return crate::pid1::initramfs_tools_mount(rootmnt);
    }
    let level = if cli.verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Warn
    };
    let _ = simple_logger::SimpleLogger::new().with_level(level).init();
    let zfs = ZfsCli::default();
    let mounter = SysMounter;
    let runner = crate::sys::run::SysRunner;
    let ctx = Ctx {
        root: PathBuf::from("/"),
        zfs: &zfs,
        mounter: &mounter,
        runner: &runner,
        pool: cli.pool.clone(),
        esp: cli.esp.clone().map(EspChoice::Mounted),
        facts: Facts::with_index(
            cli.command
                .index_use(std::env::var_os(crate::sys::lock::HELD_ENV).is_some()),
        ),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // One writer at a time (see `lock`); readers never wait.
    let result = lock(&cli, &ctx).and_then(|_lock| run(&cli, &ctx, now));
    render(&cli, result)
}

/// Takes the writers' lock when the verb writes.
fn lock(cli: &Cli, ctx: &Ctx) -> anyhow::Result<Option<crate::sys::lock::WriterLock>> {
    if !cli.command.writes() {
        return Ok(None);
    }
    let what: Vec<String> = std::env::args().skip(1).collect();
    let nested = std::env::var_os(crate::sys::lock::HELD_ENV).is_some();
    let wait = std::time::Duration::from_secs(cli.wait.unwrap_or(0));
    let l = crate::sys::lock::acquire(&ctx.root, &what.join(" "), wait, nested)?;
    if l.is_some() {
        // What this command runs (an upgrade's chroot, a kernel hook) must not wait for it.
        std::env::set_var(crate::sys::lock::HELD_ENV, "1");
    }
    Ok(l)
}

/// Prints the outcome (text or JSON) or the error; returns the exit code.
fn render(cli: &Cli, result: anyhow::Result<Outcome>) -> i32 {
    // An export's stream owns standard output when it goes there: its document goes to
    // standard error, done or failed.
    let to_stderr = matches!(&cli.command, Command::Export { to, .. } if to == "-");
    match result {
        Ok(out) => {
            let text = if cli.json {
                out.json()
            } else {
                if let Outcome::GrubMenu(m) = &out {
                    for n in &m.notes {
                        log::warn!("{n}");
                    }
                }
                out.to_string()
            };
            if to_stderr {
                eprint!("{text}");
            } else {
                print!("{text}");
            }
            0
        }
        Err(e) => {
            let kind = crate::verbs::outcome::kind_of(&e);
            eprintln!("bootenv: error: {e:#}");
            if cli.json {
                let doc = crate::verbs::outcome::error_json(
                    Some(cli.command.verb()),
                    kind,
                    &format!("{e:#}"),
                );
                if to_stderr {
                    eprint!("{doc}");
                } else {
                    print!("{doc}");
                }
            }
            if kind == ErrorKind::Usage {
                2
            } else {
                1
            }
        }
    }
}

/// A command line clap refused: its message (as JSON with `--json`), exit status 2; help and
/// the version are printed as asked.
fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind as K;
    if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion)
        || !std::env::args().any(|a| a == "--json")
    {
        e.exit();
    }
    let _ = e.print();
    let verb = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .filter(|a| {
            <Cli as clap::CommandFactory>::command()
                .find_subcommand(a)
                .is_some()
        });
    print!(
        "{}",
        crate::verbs::outcome::error_json(
            verb.as_deref(),
            ErrorKind::Usage,
            e.render().to_string().trim()
        )
    );
    2
}

/// Runs the verb.
fn run(cli: &Cli, ctx: &Ctx, now: u64) -> anyhow::Result<Outcome> {
    ctx.forget_index()?;
    Ok(match &cli.command {
        Command::Status => Outcome::Status(ctx.status()?),
        Command::List => Outcome::List(ctx.list()?),
        Command::PreparePool { pool } => Outcome::PreparePool(ctx.prepare_pool(pool)?),
        Command::Create {
            name,
            from,
            fresh_config,
            rootfs,
            config,
            label,
            config_mountpoint,
        } => Outcome::Create(match rootfs {
            Some(rootfs) => ctx.create(
                name,
                &CreateOpts {
                    rootfs: rootfs.clone(),
                    config: config.clone(),
                    label: label.clone(),
                    config_mountpoint: config_mountpoint.clone(),
                },
            )?,
            None => ctx.create_from(
                name,
                &CloneOpts {
                    from: from.clone(),
                    label: label.clone(),
                    fresh_config: *fresh_config,
                },
                now,
            )?,
        }),
        Command::Activate { name, once, trial } => {
            let how = match (once, trial) {
                (true, _) => Activation::Once,
                (false, Some(0)) => Activation::Trial(None),
                (false, Some(n)) => Activation::Trial(Some(*n)),
                (false, None) => Activation::Default,
            };
            Outcome::Activate(ctx.activate(name, how, now)?)
        }
        Command::MarkGood { name } => Outcome::MarkGood(ctx.mark_good(name.as_ref(), now)?),
        Command::SyncBoot { names } => Outcome::SyncBoot(ctx.sync_boot(names, now)?),
        Command::GrubMenu => Outcome::GrubMenu(ctx.grub_menu()?),
        Command::FactoryReset {
            mode,
            erase,
            be,
            cancel,
        } => Outcome::FactoryReset(ctx.factory_reset(*mode, *erase, be.as_ref(), *cancel, now)?),
        Command::Upgrade {
            name,
            label,
            tries,
            fresh_config,
            command,
        } => Outcome::Upgrade(ctx.upgrade(
            name,
            command,
            &CloneOpts {
                from: None,
                label: label.clone(),
                fresh_config: *fresh_config,
            },
            *tries,
            now,
        )?),
        Command::Rollback { name } => Outcome::Rollback(ctx.walk(name.as_ref(), false, now)?),
        Command::Rollforward => Outcome::Rollforward(ctx.walk(None, true, now)?),
        Command::Mount { what, dir, rw } => {
            Outcome::Mount(ctx.mount_be(what, dir.as_deref(), *rw)?)
        }
        Command::Unmount { what } => Outcome::Unmount(ctx.unmount_be(what)?),
        Command::Diff { a, b } => Outcome::Diff(ctx.diff(a, b)?),
        Command::Destroy {
            name,
            dry_run,
            promote_dependents,
        } => Outcome::Destroy(ctx.destroy_be(name, *dry_run, *promote_dependents, now)?),
        Command::Rename { old, new } => Outcome::Rename(ctx.rename_be(old, new, now)?),
        Command::Export { name, to } => Outcome::Export(ctx.export_be(name, to, now)?),
        Command::DataPools { action } => {
            use crate::verbs::data::DataAction;
            // A failpoint named on the kernel command line stops dead, as a power cut would.
            let args = crate::model::cmdline::BootArgs::parse(
                std::fs::read("/proc/cmdline").unwrap_or_default(),
            );
            let failpoint = |name: &str| -> bool {
                if args.failpoint.as_deref() == Some(name) {
                    eprintln!("bootenv: FAILPOINT {name}: stopping here (bootenv.failpoint); power the machine off");
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                }
                false
            };
            Outcome::DataPools(ctx.data_pools_with(
                &match action {
                    None | Some(DataPoolsAction::List) => DataAction::List,
                    Some(DataPoolsAction::Add { data_pool, mount }) => {
                        DataAction::Add(data_pool.clone(), *mount)
                    }
                    Some(DataPoolsAction::Remove { data_pool }) => {
                        DataAction::Remove(data_pool.clone())
                    }
                    Some(DataPoolsAction::Import { device_wait }) => {
                        DataAction::Import(std::time::Duration::from_secs(*device_wait))
                    }
                },
                &failpoint,
            )?)
        }
        Command::InitramfsToolsMount { .. } => unreachable!("handled before the logger is set up"),
        Command::Import { from, name } => {
            Outcome::Import(ctx.import_be(from, name.as_ref(), now)?)
        }
        Command::Install {
            disk,
            from,
            name,
            label,
            grub_dir,
            esp_mib,
            cmdline,
            force,
            data_disk,
            data_pool,
        } => Outcome::Install(
            ctx.install(
                &crate::verbs::install::InstallOpts {
                    disk: disk.clone(),
                    from: from.clone(),
                    pool: cli
                        .pool
                        .clone()
                        .unwrap_or_else(|| PoolName::new("rpool").expect("a valid name")),
                    name: name.clone(),
                    label: label.clone(),
                    grub_dir: grub_dir.clone(),
                    esp_mib: *esp_mib,
                    cmdline: cmdline.clone(),
                    force: *force,
                    data: (!data_disk.is_empty()).then(|| crate::verbs::install::DataInstall {
                        disks: data_disk.clone(),
                        pool: data_pool.clone(),
                    }),
                },
                now,
            )?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_takes_its_seconds_only_after_an_equals_sign() {
        let c = Cli::try_parse_from(["bootenv", "--wait", "sync-boot"]).unwrap();
        assert_eq!(c.wait, Some(600));
        assert!(matches!(c.command, Command::SyncBoot { .. }));
        let c = Cli::try_parse_from(["bootenv", "activate", "v1", "--wait=5"]).unwrap();
        assert_eq!(c.wait, Some(5));
        let c = Cli::try_parse_from(["bootenv", "list"]).unwrap();
        assert_eq!(c.wait, None);
    }

    #[test]
    fn a_data_pool_named_on_the_command_line_is_not_the_system_pool() {
        let c = Cli::try_parse_from(["bootenv", "data-pools", "add", "data", "--mount", "none"])
            .unwrap();
        assert_eq!(c.pool, None);
        assert!(matches!(
            c.command,
            Command::DataPools {
                action: Some(DataPoolsAction::Add { ref data_pool, mount: MountPolicy::None })
            } if data_pool.as_str() == "data"
        ));
        let c = Cli::try_parse_from(["bootenv", "--pool", "rpool", "data-pools", "remove", "data"])
            .unwrap();
        assert_eq!(c.pool.as_ref().map(PoolName::as_str), Some("rpool"));
    }

    #[test]
    fn readers_take_no_lock_and_writers_do() {
        let writes = |args: &[&str]| {
            let mut v = vec!["bootenv"];
            v.extend_from_slice(args);
            Cli::try_parse_from(v).unwrap().command.writes()
        };
        for r in [
            &["list"][..],
            &["status", "--json"],
            &["grub-menu"],
            &["mount", "v1"],
            &["diff", "v1", "v2"],
            &["destroy", "v1", "--dry-run"],
            &["export", "v1", "-"],
        ] {
            assert!(!writes(r), "{r:?}");
        }
        for w in [
            &["activate", "v1"][..],
            &["mark-good"],
            &["sync-boot"],
            &["destroy", "v1"],
            &["rollback"],
            &["create", "v9"],
        ] {
            assert!(writes(w), "{w:?}");
        }
    }
}
