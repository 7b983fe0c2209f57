//! The kernel command line: split the way the kernel splits it, then read bootenv's keys.
//!
//! Splitting follows the kernel's `next_arg()` (lib/cmdline.c): arguments are separated by
//! whitespace outside double quotes, the first `=` separates key and value, and a leading quote
//! of the argument or of the value and a trailing quote are dropped. Everything after a bare `--`
//! belongs to init and is not read here.
//!
//! Reading never fails: a malformed bootenv key becomes a warning and the key is ignored, so a
//! typo on the command line can at worst cost the choice of a boot environment, never the boot.
//! The keys are a public interface (version 1), documented in ARCHITECTURE.md.

use crate::names::{printable, BeName, PoolName};
use nom::branch::alt;
use nom::bytes::complete::{take_till, take_while, take_while1};
use nom::character::complete::char;
use nom::combinator::{opt, recognize};
use nom::multi::{many0, many1};
use nom::sequence::preceded;
use nom::{IResult, Parser};

/// The longest time `bootenv.wait=` may ask for, in seconds.
pub const MAX_WAIT_SECS: u32 = 600;

/// One argument of the command line, quotes removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    /// The text before the first `=`, or the whole argument.
    pub key: String,
    /// The text after the first `=`, if there is one.
    pub value: Option<String>,
}

/// What bootenv reads from the kernel command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootArgs {
    /// `bootenv=<name>`, or the name from `root=ZFS=<pool>/ROOT/<name>`.
    pub be: Option<BeName>,
    /// `bootenv.pool=<pool>`, or the pool from `root=ZFS=<pool>/...`.
    pub pool: Option<PoolName>,
    /// `init=<path>`: the program to exec in the boot environment.
    pub init: Option<String>,
    /// `bootenv.wait=<seconds>`: how long to wait for the pool's disks to appear.
    pub wait_secs: Option<u32>,
    /// `bootenv.rescue`: stop in the rescue shell after importing the pool.
    pub rescue: bool,
    /// `bootenv.debug`: log every command and decision.
    pub debug: bool,
    /// `bootenv.trial=<tries left>`: GRUB boots the named BE as a trial.
    pub trial: Option<u32>,
    /// `bootenv.rollback=<name>`: GRUB rolled back from this BE's failed trial.
    pub rollback: Option<BeName>,
    /// `bootenv.unloadable=<name>`: GRUB could not load this BE's kernel or initramfs and
    /// booted the BE of `bootenv=` instead.
    pub unloadable: Option<BeName>,
    /// `<module>.<parameter>=<value>` arguments for kernel modules, as modprobe applies them:
    /// (module name with `-` read as `_`, `parameter=value`), in command-line order.
    pub module_params: Vec<(String, String)>,
    /// `bootenv.reset=config|full|full-erase`: factory-reset the BE being booted first.
    pub reset: Option<(crate::state::ResetMode, bool)>,
    /// `bootenv.failpoint=<name>`: stop dead at this point of the boot path (tests).
    pub failpoint: Option<String>,
    /// Keys that were present but could not be used, each as a message naming the fix.
    pub warnings: Vec<String>,
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

/// A quoted piece: `"..."`, possibly unterminated (the kernel then takes the rest of the line).
fn quoted(input: &str) -> IResult<&str, &str> {
    recognize((char('"'), take_till(|c| c == '"'), opt(char('"')))).parse(input)
}

/// One argument: a run of quoted and unquoted pieces up to whitespace outside quotes.
fn raw_arg(input: &str) -> IResult<&str, &str> {
    recognize(many1(alt((
        quoted,
        take_while1(|c: char| !is_space(c) && c != '"'),
    ))))
    .parse(input)
}

fn raw_args(input: &str) -> IResult<&str, Vec<&str>> {
    let (rest, args) = many0(preceded(take_while(is_space), raw_arg)).parse(input)?;
    let (rest, _) = take_while(is_space).parse(rest)?;
    Ok((rest, args))
}

/// Removes quotes the way the kernel's `next_arg()` does.
fn unquote(raw: &str) -> Arg {
    let quoted_arg = raw.starts_with('"');
    let body = if quoted_arg { &raw[1..] } else { raw };
    let (key, value) = match body.find('=') {
        None => (body, None),
        Some(i) => (&body[..i], Some(&body[i + 1..])),
    };
    let strip_end = |s: &str| -> String { s.strip_suffix('"').unwrap_or(s).to_owned() };
    match value {
        None => Arg {
            key: if quoted_arg {
                strip_end(key)
            } else {
                key.to_owned()
            },
            value: None,
        },
        Some(v) => {
            let v = v.strip_prefix('"').map(strip_end).unwrap_or_else(|| {
                if quoted_arg {
                    strip_end(v)
                } else {
                    v.to_owned()
                }
            });
            Arg {
                key: key.to_owned(),
                value: Some(v),
            }
        }
    }
}

/// Splits a command line into arguments, and the arguments after `--` (for init).
pub fn split(cmdline: &str) -> (Vec<Arg>, Vec<String>) {
    // `raw_args` accepts every input: pieces are either quoted or free of spaces and quotes.
    let raw = match raw_args(cmdline) {
        Ok((_, raw)) => raw,
        Err(_) => Vec::new(),
    };
    let mut args = Vec::new();
    let mut iter = raw.into_iter();
    for r in iter.by_ref() {
        if r == "--" {
            break;
        }
        args.push(unquote(r));
    }
    let rest = iter.map(|r| unquote(r).key_value_text()).collect();
    (args, rest)
}

impl Arg {
    fn key_value_text(&self) -> String {
        match &self.value {
            None => self.key.clone(),
            Some(v) => format!("{}={}", self.key, v),
        }
    }
}

/// How `root=` names a dataset: `ZFS=<ds>` or `zfs:<ds>` (the forms GRUB's 10_linux and
/// dracut use).
fn root_dataset(value: &str) -> Option<&str> {
    value
        .strip_prefix("ZFS=")
        .or_else(|| value.strip_prefix("zfs:"))
}

/// A module parameter, `<module>.<parameter>[=<value>]`, as modprobe reads it from the kernel
/// command line: the module name with `-` read as `_`, and `parameter=value` as the kernel
/// takes it when loading the module (a value holding spaces is quoted again; a parameter with
/// no value is a boolean set to true). `None` for anything else.
fn module_param(key: &str, value: Option<&str>) -> Option<(String, String)> {
    let (module, param) = key.split_once('.')?;
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !name_ok(module) || !name_ok(param) {
        return None;
    }
    let text = match value {
        None => param.to_owned(),
        Some(v) if v.contains(char::is_whitespace) => format!("{param}=\"{v}\""),
        Some(v) => format!("{param}={v}"),
    };
    Some((module.replace('-', "_"), text))
}

impl BootArgs {
    /// Reads bootenv's keys from a whole command line.
    pub fn parse(cmdline: &str) -> BootArgs {
        let (args, _) = split(cmdline);
        let mut out = BootArgs::default();
        let mut from_root: Option<(Option<PoolName>, Option<BeName>)> = None;
        let mut explicit_be = false;
        let mut explicit_pool = false;
        for arg in &args {
            let value = arg.value.as_deref();
            match arg.key.as_str() {
                "bootenv" => match value {
                    Some(v) if !v.is_empty() => match BeName::new(v) {
                        Ok(be) => {
                            out.be = Some(be);
                            explicit_be = true;
                        }
                        Err(e) => out.warn(format!(
                            "bootenv={} ignored: {e}; the default boot environment boots instead",
                            printable(v)
                        )),
                    },
                    _ => out.warn("bootenv= without a name ignored: write bootenv=<name>".into()),
                },
                "bootenv.pool" => match value.map(PoolName::new) {
                    Some(Ok(p)) => {
                        out.pool = Some(p);
                        explicit_pool = true;
                    }
                    Some(Err(e)) => out.warn(format!(
                        "bootenv.pool={} ignored: {e}",
                        printable(value.unwrap_or(""))
                    )),
                    None => out.warn(
                        "bootenv.pool without a value ignored: write bootenv.pool=<pool>".into(),
                    ),
                },
                "root" => {
                    if let Some(v) = value {
                        from_root = Some(out.read_root(v));
                    }
                }
                "init" => match value {
                    Some(v) if v.starts_with('/') => out.init = Some(v.to_owned()),
                    Some(v) => out.warn(format!(
                        "init={} ignored: init must be an absolute path such as /sbin/init",
                        printable(v)
                    )),
                    None => {}
                },
                "bootenv.wait" => match value.map(str::parse::<u32>) {
                    Some(Ok(n)) if n <= MAX_WAIT_SECS => out.wait_secs = Some(n),
                    _ => out.warn(format!(
                        "bootenv.wait={} ignored: give whole seconds from 0 to {MAX_WAIT_SECS}",
                        printable(value.unwrap_or(""))
                    )),
                },
                "bootenv.trial" => match value.map(str::parse::<u32>) {
                    Some(Ok(n)) => out.trial = Some(n),
                    _ => out.warn(format!(
                        "bootenv.trial={} ignored: not a number",
                        printable(value.unwrap_or(""))
                    )),
                },
                "bootenv.rollback" => match value.map(BeName::new) {
                    Some(Ok(b)) => out.rollback = Some(b),
                    _ => out.warn(format!(
                        "bootenv.rollback={} ignored: not a boot environment name",
                        printable(value.unwrap_or(""))
                    )),
                },
                "bootenv.unloadable" => match value.map(BeName::new) {
                    Some(Ok(b)) => out.unloadable = Some(b),
                    _ => out.warn(format!(
                        "bootenv.unloadable={} ignored: not a boot environment name",
                        printable(value.unwrap_or(""))
                    )),
                },
                "bootenv.reset" => match value {
                    Some("config") => out.reset = Some((crate::state::ResetMode::Config, false)),
                    Some("full") => out.reset = Some((crate::state::ResetMode::Full, false)),
                    Some("full-erase") => out.reset = Some((crate::state::ResetMode::Full, true)),
                    _ => out.warn(format!(
                        "bootenv.reset={} ignored: write bootenv.reset=config, full or full-erase",
                        printable(value.unwrap_or(""))
                    )),
                },
                "bootenv.failpoint" => match value {
                    Some(v)
                        if !v.is_empty()
                            && v.chars()
                                .all(|c| c.is_ascii_alphanumeric() || ":-_.".contains(c)) =>
                    {
                        out.failpoint = Some(v.to_owned())
                    }
                    _ => out.warn(format!(
                        "bootenv.failpoint={} ignored",
                        printable(value.unwrap_or(""))
                    )),
                },
                "bootenv.rescue" => out.rescue = flag(value),
                "bootenv.debug" => out.debug = flag(value),
                k if k.starts_with("bootenv.") => out.warn(format!(
                    "unknown key {} ignored: see ARCHITECTURE.md for the keys bootenv reads",
                    printable(k)
                )),
                k => {
                    if let Some(p) = module_param(k, value) {
                        out.module_params.push(p);
                    }
                }
            }
        }
        if let Some((pool, be)) = from_root {
            if !explicit_pool {
                out.pool = pool;
            }
            if !explicit_be {
                out.be = be;
            }
        }
        out
    }

    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }

    /// Reads `root=`: only `ZFS=<pool>/ROOT/<name>` names a boot environment; `ZFS=<pool>` or
    /// `zfs:AUTO` name just a pool or nothing.
    fn read_root(&mut self, value: &str) -> (Option<PoolName>, Option<BeName>) {
        let Some(ds) = root_dataset(value) else {
            self.warn(format!(
                "root={} ignored: bootenv boots ZFS boot environments (root=ZFS=<pool>/ROOT/<name> or bootenv=<name>)",
                printable(value)
            ));
            return (None, None);
        };
        if ds == "AUTO" || ds.is_empty() {
            return (None, None);
        }
        let mut parts = ds.splitn(3, '/');
        let pool = match PoolName::new(parts.next().unwrap_or("")) {
            Ok(p) => p,
            Err(e) => {
                self.warn(format!("root={} ignored: {e}", printable(value)));
                return (None, None);
            }
        };
        match (parts.next(), parts.next()) {
            (None, _) => (Some(pool), None),
            (Some(crate::layout::ROOT), Some(name)) => match BeName::new(name) {
                Ok(be) => (Some(pool), Some(be)),
                Err(e) => {
                    self.warn(format!(
                        "root={} names no boot environment bootenv can boot: {e}",
                        printable(value)
                    ));
                    (Some(pool), None)
                }
            },
            _ => {
                self.warn(format!(
                    "root={} is not a boot environment (<pool>/{}/<name>): bootenv boots only the datasets it manages",
                    printable(value),
                    crate::layout::ROOT
                ));
                (Some(pool), None)
            }
        }
    }
}

/// A flag key: present without a value, or with 1/yes/on/true, means set.
fn flag(value: Option<&str>) -> bool {
    matches!(value, None | Some("1" | "yes" | "on" | "true" | "y"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(k: &str, v: Option<&str>) -> Arg {
        Arg {
            key: k.into(),
            value: v.map(Into::into),
        }
    }

    #[test]
    fn splits_like_the_kernel() {
        let (args, rest) =
            split("  console=ttyS0  quiet bootenv=v2\tfoo=\"a b\" \"x=y z\" -- single x=1");
        assert_eq!(
            args,
            vec![
                arg("console", Some("ttyS0")),
                arg("quiet", None),
                arg("bootenv", Some("v2")),
                arg("foo", Some("a b")),
                arg("x", Some("y z")),
            ]
        );
        assert_eq!(rest, vec!["single".to_string(), "x=1".to_string()]);
    }

    #[test]
    fn unterminated_quote_takes_the_rest() {
        let (args, _) = split("a=\"b c d");
        assert_eq!(args, vec![arg("a", Some("b c d"))]);
    }

    #[test]
    fn empty_and_blank_lines() {
        assert_eq!(split(""), (vec![], vec![]));
        assert_eq!(split(" \n"), (vec![], vec![]));
        assert_eq!(BootArgs::parse("\n"), BootArgs::default());
    }

    #[test]
    fn reads_bootenv_keys() {
        let a = BootArgs::parse(
            "BOOT_IMAGE=/vmlinuz bootenv=v2 bootenv.pool=tank init=/bin/sh bootenv.wait=3 bootenv.rescue bootenv.debug=0\n",
        );
        assert_eq!(a.be.unwrap().as_str(), "v2");
        assert_eq!(a.pool.unwrap().as_str(), "tank");
        assert_eq!(a.init.as_deref(), Some("/bin/sh"));
        assert_eq!(a.wait_secs, Some(3));
        assert!(a.rescue);
        assert!(!a.debug);
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }

    #[test]
    fn root_zfs_compatibility() {
        let a = BootArgs::parse("root=ZFS=rpool/ROOT/debian ro");
        assert_eq!(a.pool.unwrap().as_str(), "rpool");
        assert_eq!(a.be.unwrap().as_str(), "debian");
        let a = BootArgs::parse("root=zfs:rpool/ROOT/v1");
        assert_eq!(a.be.unwrap().as_str(), "v1");
        let a = BootArgs::parse("root=zfs:AUTO");
        assert!(a.pool.is_none() && a.be.is_none() && a.warnings.is_empty());
        let a = BootArgs::parse("root=ZFS=rpool");
        assert_eq!(a.pool.unwrap().as_str(), "rpool");
        assert!(a.be.is_none());
    }

    #[test]
    fn bootenv_keys_win_over_root() {
        let a = BootArgs::parse("root=ZFS=rpool/ROOT/old bootenv=new bootenv.pool=tank");
        assert_eq!(a.be.unwrap().as_str(), "new");
        assert_eq!(a.pool.unwrap().as_str(), "tank");
        // Order does not matter.
        let a = BootArgs::parse("bootenv=new root=ZFS=rpool/ROOT/old");
        assert_eq!(a.be.unwrap().as_str(), "new");
        assert_eq!(a.pool.unwrap().as_str(), "rpool");
    }

    #[test]
    fn root_outside_the_layout_is_reported() {
        let a = BootArgs::parse("root=ZFS=rpool/data/home");
        assert_eq!(a.pool.unwrap().as_str(), "rpool");
        assert!(a.be.is_none());
        assert!(a.warnings[0].contains("bootenv boots only the datasets it manages"));
        let a = BootArgs::parse("root=/dev/sda1");
        assert!(a.pool.is_none() && a.warnings.len() == 1);
    }

    #[test]
    fn malformed_keys_are_warnings_never_fatal() {
        let a = BootArgs::parse(
            "bootenv=a;reboot bootenv= bootenv.pool=9x bootenv.wait=forever bootenv.wait=9999 init=sbin/init bootenv.colour=red bootenv.pool",
        );
        assert!(a.be.is_none() && a.pool.is_none() && a.init.is_none() && a.wait_secs.is_none());
        assert_eq!(a.warnings.len(), 8, "{:#?}", a.warnings);
        assert!(a.warnings[0].contains("the default boot environment boots instead"));
        for w in &a.warnings {
            assert!(!w.contains('\n'));
        }
    }

    #[test]
    fn grub_markers() {
        let a = BootArgs::parse("bootenv=v3 bootenv.trial=2");
        assert_eq!(a.trial, Some(2));
        let a = BootArgs::parse("bootenv=v1 bootenv.rollback=v3 bootenv.unloadable=v4");
        assert_eq!(a.rollback.unwrap().as_str(), "v3");
        assert_eq!(a.unloadable.unwrap().as_str(), "v4");
        let a = BootArgs::parse("bootenv.unloadable=a;b");
        assert!(a.unloadable.is_none() && a.warnings.len() == 1);
        let a = BootArgs::parse("bootenv.trial=x bootenv.rollback=a;b");
        assert!(a.trial.is_none() && a.rollback.is_none() && a.warnings.len() == 2);
    }

    #[test]
    fn reset_requests() {
        use crate::state::ResetMode;
        assert_eq!(
            BootArgs::parse("bootenv.reset=config").reset,
            Some((ResetMode::Config, false))
        );
        assert_eq!(
            BootArgs::parse("bootenv.reset=full").reset,
            Some((ResetMode::Full, false))
        );
        assert_eq!(
            BootArgs::parse("bootenv.reset=full-erase").reset,
            Some((ResetMode::Full, true))
        );
        let a = BootArgs::parse("bootenv.reset=everything bootenv.failpoint=reset:parked:config");
        assert!(a.reset.is_none() && a.warnings.len() == 1);
        assert_eq!(a.failpoint.as_deref(), Some("reset:parked:config"));
    }

    #[test]
    fn keys_after_double_dash_belong_to_init() {
        let a = BootArgs::parse("quiet -- bootenv=v9");
        assert!(a.be.is_none());
    }

    #[test]
    fn last_occurrence_wins() {
        let a = BootArgs::parse("bootenv=a bootenv=b");
        assert_eq!(a.be.unwrap().as_str(), "b");
    }

    #[test]
    fn hostile_bytes_do_not_panic() {
        for s in [
            "\"",
            "\"\"",
            "=",
            "==",
            "\"=\"",
            "a=\"",
            "\u{0}\u{7f}",
            "bootenv=\"\"",
            "--",
            "-- --",
        ] {
            let _ = BootArgs::parse(s);
        }
    }

    #[test]
    fn module_parameters_are_read_as_modprobe_reads_them() {
        let a = BootArgs::parse(
            "quiet zfs.zfs_arc_max=123 spl.spl_hostid=0x00bee5ed virtio-blk.queue_depth=64 \
             bootenv.debug mod.flag x.y=\"a b\" .bad=1 bad.=1 a.b.c=1 -- init.arg=1",
        );
        assert_eq!(
            a.module_params,
            vec![
                ("zfs".to_string(), "zfs_arc_max=123".to_string()),
                ("spl".to_string(), "spl_hostid=0x00bee5ed".to_string()),
                ("virtio_blk".to_string(), "queue_depth=64".to_string()),
                ("mod".to_string(), "flag".to_string()),
                ("x".to_string(), "y=\"a b\"".to_string()),
            ]
        );
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }
}
