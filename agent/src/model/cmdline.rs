//! The kernel command line: split the way the kernel splits it, then read bootenv's keys.
//!
//! Splitting follows the kernel's `next_arg()` (lib/cmdline.c), on bytes: arguments are
//! separated by the kernel's whitespace (`isspace()`: space, `\t`, `\n`, `\v`, `\f`, `\r` and
//! the byte 0xA0) outside double quotes; every `"` opens or closes a quote; the first `=` after
//! the argument's first byte separates key and value; a leading quote of the argument or of the
//! value, and then a trailing quote, are dropped. Everything after a bare `--` belongs to init
//! and is not read here. Bytes that are not UTF-8 never cost another argument: only the
//! arguments holding them are affected (a bootenv key among them is reported and ignored). The
//! unit tests check the splitter against a line-for-line port of the kernel's function on
//! random byte strings.
//!
//! Reading never fails: a malformed bootenv key becomes a warning and the key is ignored, so a
//! typo on the command line can at worst cost the choice of a boot environment, never the boot.
//! The keys are a public interface (version 1), documented in ARCHITECTURE.md.

use crate::model::names::{printable, BeName, PoolName};
use nom::branch::alt;
use nom::bytes::complete::{tag, take_till, take_while, take_while1};
use nom::combinator::{opt, recognize};
use nom::multi::{many0, many1};
use nom::sequence::preceded;
use nom::{IResult, Parser};

/// The longest time `bootenv.wait=` may ask for, in seconds.
pub const MAX_WAIT_SECS: u32 = 600;

/// One argument of the command line, quotes removed, as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    /// The bytes before the first `=` (not counting one in the first place), or the whole
    /// argument.
    pub key: Vec<u8>,
    /// The bytes after that `=`, if there is one.
    pub value: Option<Vec<u8>>,
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
    pub reset: Option<(crate::model::state::ResetMode, bool)>,
    /// `bootenv.failpoint=<name>`: stop dead at this point of the boot path (tests).
    pub failpoint: Option<String>,
    /// Keys that were present but could not be used, each as a message naming the fix.
    pub warnings: Vec<String>,
}

/// The kernel's `isspace()` (its ctype table marks 0xA0, Latin-1's no-break space, too).
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

/// A quoted piece: `"..."`, possibly unterminated (the kernel then takes the rest of the line).
fn quoted(input: &[u8]) -> IResult<&[u8], &[u8]> {
    recognize((
        tag(&b"\""[..]),
        take_till(|b| b == b'"'),
        opt(tag(&b"\""[..])),
    ))
    .parse(input)
}

/// One argument: a run of quoted and unquoted pieces up to whitespace outside quotes.
fn raw_arg(input: &[u8]) -> IResult<&[u8], &[u8]> {
    recognize(many1(alt((
        quoted,
        take_while1(|b: u8| !is_space(b) && b != b'"'),
    ))))
    .parse(input)
}

fn raw_args(input: &[u8]) -> IResult<&[u8], Vec<&[u8]>> {
    let (rest, args) = many0(preceded(take_while(is_space), raw_arg)).parse(input)?;
    let (rest, _) = take_while(is_space).parse(rest)?;
    Ok((rest, args))
}

/// Removes quotes and finds the key the way the kernel's `next_arg()` does.
fn unquote(raw: &[u8]) -> Arg {
    let (quoted_arg, body) = match raw.strip_prefix(b"\"") {
        Some(b) => (true, b),
        None => (false, raw),
    };
    // The kernel's `ends in a quote`: the argument's last byte (after a leading quote).
    let ends_quote = body.last() == Some(&b'"');
    // An `=` in the first place does not count (the kernel's `equals` is 0 there, which it
    // reads as none).
    let equals = body.iter().skip(1).position(|&b| b == b'=').map(|i| i + 1);
    match equals {
        None => {
            let key = if quoted_arg && ends_quote {
                &body[..body.len() - 1]
            } else {
                body
            };
            Arg {
                key: key.to_vec(),
                value: None,
            }
        }
        Some(e) => {
            let mut v = &body[e + 1..];
            let value_quoted = v.first() == Some(&b'"');
            if value_quoted {
                v = &v[1..];
            }
            // The trailing quote goes when the value or the argument began with one (and it is
            // not the value's own leading quote).
            if (value_quoted || quoted_arg) && ends_quote && !v.is_empty() {
                v = &v[..v.len() - 1];
            }
            Arg {
                key: body[..e].to_vec(),
                value: Some(v.to_vec()),
            }
        }
    }
}

/// Splits a command line into arguments, and the arguments after `--` (for init, as the kernel
/// hands them over: quotes removed, `key=value` joined again).
pub fn split(cmdline: &[u8]) -> (Vec<Arg>, Vec<Vec<u8>>) {
    // The kernel's line is a C string: a NUL ends it.
    let cmdline = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    // `raw_args` accepts every input: pieces are either quoted or free of spaces and quotes.
    let raw = match raw_args(cmdline) {
        Ok((_, raw)) => raw,
        Err(_) => Vec::new(),
    };
    let mut parts = raw.into_iter().map(unquote);
    let is_dashes = |a: &Arg| a.value.is_none() && a.key == b"--";
    let args = parts.by_ref().take_while(|a| !is_dashes(a)).collect();
    // The kernel reads init's arguments with the same splitter, and a second `--` ends them.
    let rest = parts
        .take_while(|a| !is_dashes(a))
        .map(|a| a.joined())
        .collect();
    (args, rest)
}

impl Arg {
    /// `key=value` (or the key), as init sees it.
    fn joined(&self) -> Vec<u8> {
        let mut t = self.key.clone();
        if let Some(v) = &self.value {
            t.push(b'=');
            t.extend_from_slice(v);
        }
        t
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
    /// Reads bootenv's keys from a whole command line (bytes, as `/proc/cmdline` holds them).
    pub fn parse(cmdline: impl AsRef<[u8]>) -> BootArgs {
        let (args, _) = split(cmdline.as_ref());
        let mut out = BootArgs::default();
        let mut from_root: Option<(Option<PoolName>, Option<BeName>)> = None;
        let mut explicit_be = false;
        let mut explicit_pool = false;
        for arg in &args {
            // Ours are all text; an argument with other bytes is read no further (and said so
            // when it is one of ours).
            let Ok(key) = std::str::from_utf8(&arg.key) else {
                if arg.key.starts_with(b"bootenv") {
                    out.warn(format!(
                        "{} ignored: it holds bytes that are not UTF-8",
                        printable(&String::from_utf8_lossy(&arg.key))
                    ));
                }
                continue;
            };
            let value = match arg.value.as_deref().map(std::str::from_utf8) {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err(_)) => {
                    if key == "bootenv"
                        || key.starts_with("bootenv.")
                        || key == "root"
                        || key == "init"
                        || key.contains('.')
                    {
                        out.warn(format!(
                            "{}={} ignored: its value holds bytes that are not UTF-8",
                            printable(key),
                            printable(&String::from_utf8_lossy(
                                arg.value.as_deref().unwrap_or_default()
                            ))
                        ));
                    }
                    continue;
                }
            };
            match key {
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
                    Some("config") => {
                        out.reset = Some((crate::model::state::ResetMode::Config, false))
                    }
                    Some("full") => out.reset = Some((crate::model::state::ResetMode::Full, false)),
                    Some("full-erase") => {
                        out.reset = Some((crate::model::state::ResetMode::Full, true))
                    }
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
            (Some(crate::model::layout::ROOT), Some(name)) => match BeName::new(name) {
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
                    crate::model::layout::ROOT
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
    use crate::testing::Rng;

    fn arg(k: &str, v: Option<&str>) -> Arg {
        Arg {
            key: k.into(),
            value: v.map(Into::into),
        }
    }

    #[test]
    fn splits_like_the_kernel() {
        let (args, rest) =
            split(b"  console=ttyS0  quiet bootenv=v2\tfoo=\"a b\" \"x=y z\" -- single x=1");
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
        assert_eq!(rest, vec![b"single".to_vec(), b"x=1".to_vec()]);
    }

    #[test]
    fn unterminated_quote_takes_the_rest() {
        let (args, _) = split(b"a=\"b c d");
        assert_eq!(args, vec![arg("a", Some("b c d"))]);
    }

    #[test]
    fn empty_and_blank_lines() {
        assert_eq!(split(b""), (vec![], vec![]));
        assert_eq!(split(b" \n"), (vec![], vec![]));
        assert_eq!(BootArgs::parse("\n"), BootArgs::default());
    }

    /// The kernel's `next_arg()` and the loop of `parse_args()` (lib/cmdline.c,
    /// kernel/params.c, Linux 6.1), line for line on a NUL-terminated copy: the peer the
    /// splitter must agree with. Returns the (param, value) pairs before `--` and the
    /// arguments after it, as `parse_args` and `init/main.c` see them.
    #[allow(clippy::type_complexity)]
    fn kernel_split(line: &[u8]) -> (Vec<(Vec<u8>, Option<Vec<u8>>)>, Vec<Vec<u8>>) {
        // The kernel stops at the first NUL; bootenv reads what /proc/cmdline gives.
        let mut buf: Vec<u8> = line.iter().copied().take_while(|&b| b != 0).collect();
        buf.push(0);
        let cstr = |b: &[u8], at: usize| -> Vec<u8> {
            b[at..].iter().copied().take_while(|&c| c != 0).collect()
        };
        let skip_spaces = |b: &[u8], mut at: usize| {
            while is_space(b[at]) {
                at += 1;
            }
            at
        };
        let (mut out, mut rest) = (Vec::new(), Vec::new());
        let mut after_dashes = false;
        let mut at = skip_spaces(&buf, 0);
        while buf[at] != 0 {
            // next_arg(args, &param, &val)
            let mut args = at;
            let (mut equals, mut in_quote, mut quoted) = (0usize, false, false);
            if buf[args] == b'"' {
                args += 1;
                in_quote = true;
                quoted = true;
            }
            let mut i = 0;
            while buf[args + i] != 0 {
                if is_space(buf[args + i]) && !in_quote {
                    break;
                }
                if equals == 0 && buf[args + i] == b'=' {
                    equals = i;
                }
                if buf[args + i] == b'"' {
                    in_quote = !in_quote;
                }
                i += 1;
            }
            let param = args;
            let mut val = None;
            if equals != 0 {
                buf[args + equals] = 0;
                let mut v = args + equals + 1;
                if buf[v] == b'"' {
                    v += 1;
                    if buf[args + i - 1] == b'"' {
                        buf[args + i - 1] = 0;
                    }
                }
                val = Some(v);
            }
            if quoted && i > 0 && buf[args + i - 1] == b'"' {
                buf[args + i - 1] = 0;
            }
            let next = if buf[args + i] != 0 {
                buf[args + i] = 0;
                args + i + 1
            } else {
                args + i
            };
            let p = cstr(&buf, param);
            let v = val.map(|v| cstr(&buf, v));
            at = skip_spaces(&buf, next);
            // parse_args(): a bare "--" ends the parameters. The kernel's own end at the first;
            // init's (parsed again from there, set_init_arg() joining param=value) at the next.
            if v.is_none() && p == b"--" {
                if after_dashes {
                    break;
                }
                after_dashes = true;
                continue;
            }
            if after_dashes {
                let mut joined = p;
                if let Some(v) = v {
                    joined.push(b'=');
                    joined.extend(v);
                }
                rest.push(joined);
            } else {
                out.push((p, v));
            }
        }
        (out, rest)
    }

    #[test]
    fn the_splitter_agrees_with_the_kernels_next_arg_on_random_bytes() {
        // Bytes that matter to the splitter, often; any byte, sometimes.
        const INTERESTING: &[u8] = b"ab=\"\"-- \t\n\x0b\x0c\r.-_";
        let mut rng = Rng(0x5eed_b007_e0f0_1234);
        for case in 0..40_000 {
            let len = (rng.next() % 40) as usize;
            let line: Vec<u8> = (0..len)
                .map(|_| match rng.next() % 10 {
                    0 => 0xa0,
                    1 => (rng.next() & 0xff) as u8,
                    _ => INTERESTING[(rng.next() % INTERESTING.len() as u64) as usize],
                })
                .collect();
            let (want, want_rest) = kernel_split(&line);
            let (got, got_rest) = split(&line);
            let got: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                got.into_iter().map(|a| (a.key, a.value)).collect();
            assert_eq!(
                got,
                want,
                "case {case}: {:?}",
                String::from_utf8_lossy(&line)
            );
            assert_eq!(
                got_rest,
                want_rest,
                "case {case}: {:?}",
                String::from_utf8_lossy(&line)
            );
            // Reading never panics, whatever the bytes.
            let _ = BootArgs::parse(&line);
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_cost_only_their_own_argument() {
        let a = BootArgs::parse(
            b"quiet x=\xff\xfe bootenv=v2 \xc3( bootenv.pool=tank\xa0bootenv.trial=1 bootenv.rollback=\xff bootenv\xff=1",
        );
        assert_eq!(a.be.unwrap().as_str(), "v2");
        assert_eq!(a.pool.unwrap().as_str(), "tank");
        assert_eq!(a.trial, Some(1));
        assert!(a.rollback.is_none());
        assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
        assert!(a
            .warnings
            .iter()
            .any(|w| w.contains("bootenv.rollback=") && w.contains("not UTF-8")));
        assert!(a
            .warnings
            .iter()
            .any(|w| w.starts_with("bootenv") && w.contains("not UTF-8")));
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
        use crate::model::state::ResetMode;
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
