//! The GRUB side of bootenv: the menu script (`bootenv grub-menu`; its fixed text is
//! `grub/menu.cfg.in`, here only what repeats per entry, try and fallback and the values) and a
//! model of what that script does at boot, which the unit tests drive through every transition.
//!
//! GRUB variables (a public interface, version 1), kept in `/bootenv/grubenv` on the ESP:
//!
//! | Variable | Written by | Meaning |
//! |---|---|---|
//! | `bootenv_version` | bootenv | `1` |
//! | `bootenv_default` | bootenv | the default BE |
//! | `bootenv_next` | bootenv (set), GRUB (cleared before booting) | boot this BE once |
//! | `bootenv_trial` | bootenv | the BE on trial |
//! | `bootenv_tries` | bootenv (set), GRUB (counted down before booting) | tries left |
//!
//! GRUB reads only these names (`load_env --file ... <names>`), and only ever compares their
//! values with the BE names baked into the menu: no value from the block reaches a command line
//! or a command. GRUB reads a damaged block as far as it is well-formed (`grubenv::GrubView`);
//! whatever it reads names a BE of the menu or nothing (the default baked into the menu). A trial
//! whose counter cannot be read counts as used up, so it rolls back; a one-shot that cannot be
//! cleared is not carried out. `Menu::model_bytes` is the model on the block's bytes, held to
//! GRUB itself by `tests/tests/grub_emu.rs`.
//!
//! A kernel or initramfs that GRUB cannot load (missing, truncated, damaged, unreadable) never
//! leaves the machine at a prompt: every entry loads its files with `if [ -s initrd ]; then if
//! linux ...; then if initrd ...; then boot; fi; <restart>; fi; fi` (GRUB 2.06 cannot load a
//! second kernel once one is loaded) and otherwise calls `bootenv_fallback <be>`, which reboots when this
//! boot is a counted try of that trial (the failed load uses the try, as a panic would), and
//! else boots the last known-good BE, then each earlier default, with
//! `bootenv.unloadable=<be>` on the kernel line so that the agent reports it. GRUB's own
//! `fallback` variable is not used: GRUB 2.06 takes only entry numbers there, and after a failed
//! entry it unsets `timeout`, leaving a menu without a countdown.

use crate::model::names::BeName;

/// Format version of the menu and of the variables.
pub const VERSION: u32 = 1;
/// The most tries a trial may have.
pub const MAX_TRIES: u32 = 20;
/// Default number of tries of a trial.
pub const DEFAULT_TRIES: u32 = 3;
/// Default `panic=` put on kernel lines when the configured command line has none.
pub const DEFAULT_PANIC: u32 = 10;
/// How many BEs the menu tries, in order, when an entry's kernel cannot be loaded: the last
/// known-good and the earlier defaults.
pub const MAX_FALLBACKS: usize = 4;
/// Seconds GRUB shows why a trial's kernel could not be loaded before it restarts.
pub const FAILED_TRY_PAUSE: u32 = 5;
/// The variables the menu loads.
pub const VARS: [&str; 4] = [
    "bootenv_default",
    "bootenv_next",
    "bootenv_trial",
    "bootenv_tries",
];

/// One menu entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The BE.
    pub be: BeName,
    /// Its label, made safe for a GRUB title.
    pub title: String,
    /// Directory of its kernel and initramfs on the ESP (`/bootenv/_kernels/<hash>`).
    pub kernel_dir: String,
    /// The kernel command line after bootenv's own keys (validated).
    pub cmdline: String,
}

/// Everything the menu is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Menu {
    /// The pool.
    pub pool: String,
    /// The ESP's FAT serial.
    pub esp_uuid: String,
    /// Entries, newest first.
    pub entries: Vec<Entry>,
    /// The default when the block names none (baked in).
    pub default: BeName,
    /// Where a failed trial rolls back to (baked in): the last known-good BE.
    pub good: BeName,
    /// What an entry whose kernel cannot be loaded boots instead, in order: the last
    /// known-good BE, then earlier defaults, newest first (at most [`MAX_FALLBACKS`]; each
    /// listed in the menu).
    pub fallbacks: Vec<BeName>,
    /// Menu timeout in seconds.
    pub timeout: u32,
}

/// What GRUB does at one boot, per the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrubBoot {
    /// The entry booted when nobody touches the menu.
    pub boot: BeName,
    /// Extra kernel arguments per entry, when not empty.
    pub args: Vec<(BeName, String)>,
    /// Variables GRUB writes back before booting.
    pub saves: Vec<(&'static str, String)>,
}

/// How a boot ends when GRUB cannot load some BEs' kernels (per the model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// This BE boots; `unloadable` names the one GRUB could not load first, if any.
    Boots {
        /// The BE that boots.
        be: BeName,
        /// The BE whose kernel or initramfs could not be loaded.
        unloadable: Option<BeName>,
    },
    /// GRUB restarts the machine: a counted try of this trial could not load its kernel.
    Restarts(BeName),
    /// No kernel the menu tries could be loaded: GRUB shows its menu and the errors.
    Stops,
}

/// Characters allowed in a menu title besides ASCII letters and digits.
const TITLE_EXTRA: &str = " ._:+()/,-";

/// Makes a label safe for a single-quoted GRUB title: other characters become `?`, at most
/// 48 characters.
pub fn safe_title(label: &str) -> String {
    label
        .chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || TITLE_EXTRA.contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The longest `org.bootenv:cmdline` bootenv puts on a kernel line, in bytes. With bootenv's
/// own keys and GRUB's `BOOT_IMAGE=` (at most about 480 bytes) the line stays well within the
/// 2048 bytes of x86 Linux's `COMMAND_LINE_SIZE`, past which the kernel cuts the line.
pub const MAX_CMDLINE: usize = 1024;
/// The most words `org.bootenv:cmdline` may hold: the kernel hands words it does not know to
/// init (at most 32 arguments and 32 environment variables, `MAX_INIT_ARGS`/`MAX_INIT_ENVS`, and
/// it panics at boot beyond), and bootenv's line already holds some.
pub const MAX_CMDLINE_WORDS: usize = 16;

/// Checks a kernel command line from a property before it goes on a kernel line after
/// bootenv's own keys: no character GRUB's script syntax gives a meaning to, none of bootenv's
/// own keys, no `--` (everything after it goes to init, bootenv's keys too), no `panic=0` (a
/// trial that panics must restart to be counted), and within [`MAX_CMDLINE`] bytes and
/// [`MAX_CMDLINE_WORDS`] words. Returns the reason when it is refused.
pub fn check_cmdline(s: &str) -> Result<(), String> {
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || " ._,:/=+@%-".contains(*c)))
    {
        return Err(format!(
            "it holds {c:?}, which GRUB's script language would interpret"
        ));
    }
    if s.len() > MAX_CMDLINE {
        return Err(format!(
            "it is {} bytes long, more than the {MAX_CMDLINE} a kernel line has room for",
            s.len()
        ));
    }
    let words = s.split_whitespace().count();
    if words > MAX_CMDLINE_WORDS {
        return Err(format!(
            "it holds {words} words, more than {MAX_CMDLINE_WORDS} (the kernel panics when it has more than 32 to hand to init)"
        ));
    }
    for w in s.split_whitespace() {
        let (key, value) = w.split_once('=').unwrap_or((w, ""));
        if key == "bootenv" || key.starts_with("bootenv.") || key == "root" {
            return Err(format!("it sets {key}, which bootenv sets itself"));
        }
        if w == "--" {
            return Err(
                "it holds --, after which the kernel hands everything to init, bootenv's own keys too"
                    .into(),
            );
        }
        if key == "panic" && value.parse::<i64>().map_or(true, |n| n == 0) {
            return Err(format!(
                "it sets panic={value}: a boot that panics must restart (panic= a number of seconds other than 0) so that GRUB counts a trial's try"
            ));
        }
    }
    Ok(())
}

fn tries_left(tries: Option<&str>) -> Option<u32> {
    let n: u32 = tries?.parse().ok()?;
    (1..=MAX_TRIES).contains(&n).then(|| n - 1)
}

impl Menu {
    fn has(&self, name: Option<&str>) -> Option<BeName> {
        let name = name?;
        self.entries
            .iter()
            .find(|e| e.be.as_str() == name)
            .map(|e| e.be.clone())
    }

    /// The model: what the menu script does with these variables (`None`: the block could not
    /// be read, so nothing is loaded).
    pub fn model(&self, vars: Option<&crate::bootloader::grubenv::EnvBlock>) -> GrubBoot {
        self.model_saving(vars, true)
    }

    /// [`Menu::model`] when GRUB's `save_env` succeeds (`saves`) or fails (a block too small
    /// or on a read-only disk): a one-shot that cannot be cleared is not carried out, and a
    /// trial whose try cannot be counted rolls back, so that neither can repeat forever.
    pub fn model_saving(
        &self,
        vars: Option<&crate::bootloader::grubenv::EnvBlock>,
        can_save: bool,
    ) -> GrubBoot {
        let get = |n: &str| vars.and_then(|v| v.get(n)).map(str::to_owned);
        self.model_with(&get, &mut |_, _| can_save)
    }

    /// The model on the block's bytes as GRUB reads and writes them ([`GrubView`]: a damaged
    /// block is read as far as it is well-formed; `None`, no block at all): what GRUB boots, and
    /// the block it leaves.
    ///
    /// [`GrubView`]: crate::bootloader::grubenv::GrubView
    pub fn model_bytes(&self, block: Option<&[u8]>) -> (GrubBoot, Option<Vec<u8>>) {
        let view = block.and_then(crate::bootloader::grubenv::GrubView::open);
        let mut after = view.clone();
        let get = |n: &str| view.as_ref().and_then(|v| v.get(n));
        let b = self.model_with(&get, &mut |k, v| {
            after.as_mut().is_some_and(|a| a.set(k, v))
        });
        let after = match after {
            Some(a) => Some(a.bytes().to_vec()),
            None => block.map(<[u8]>::to_vec),
        };
        (b, after)
    }

    /// The script's logic: `get` reads what `load_env` loaded, `save` is `save_env` of one
    /// variable (true when it was written).
    fn model_with(
        &self,
        get: &dyn Fn(&str) -> Option<String>,
        save: &mut dyn FnMut(&str, &str) -> bool,
    ) -> GrubBoot {
        let mut boot = self.default.clone();
        let mut args = Vec::new();
        let mut saves = Vec::new();
        if let Some(d) = self.has(get("bootenv_default").as_deref()) {
            boot = d;
        }
        let next = get("bootenv_next").filter(|n| !n.is_empty());
        // The one-shot is cleared first; only one that could be cleared is carried out.
        let cleared = next.is_some() && save("bootenv_next", "");
        if cleared {
            saves.push(("bootenv_next", String::new()));
        }
        if let Some(n) = self.has(next.as_deref()).filter(|_| cleared) {
            boot = n;
        } else if let Some(trial) = self.has(get("bootenv_trial").as_deref()) {
            let counted = tries_left(get("bootenv_tries").as_deref())
                .filter(|left| save("bootenv_tries", &left.to_string()));
            match counted {
                Some(left) => {
                    saves.push(("bootenv_tries", left.to_string()));
                    args.push((trial.clone(), format!("bootenv.trial={left}")));
                    boot = trial;
                }
                None => {
                    boot = self.good.clone();
                    for e in self.entries.iter().filter(|e| e.be != trial) {
                        args.push((e.be.clone(), format!("bootenv.rollback={trial}")));
                    }
                }
            }
        }
        GrubBoot { boot, args, saves }
    }

    /// What ends a boot that [`Menu::model`] chose, when GRUB can load the kernels of only
    /// some BEs (`loads`): the chosen one, a restart for a counted try of a trial, or the first
    /// fallback that loads.
    pub fn outcome(&self, b: &GrubBoot, loads: &dyn Fn(&BeName) -> bool) -> Loaded {
        if loads(&b.boot) {
            return Loaded::Boots {
                be: b.boot.clone(),
                unloadable: None,
            };
        }
        let counted = b
            .args
            .iter()
            .any(|(n, a)| n == &b.boot && a.starts_with("bootenv.trial="));
        if counted {
            return Loaded::Restarts(b.boot.clone());
        }
        match self.fallbacks.iter().find(|f| **f != b.boot && loads(f)) {
            Some(f) => Loaded::Boots {
                be: f.clone(),
                unloadable: Some(b.boot.clone()),
            },
            None => Loaded::Stops,
        }
    }

    /// The menu script: the sections of `grub/menu.cfg.in`, in order, each once or once per
    /// entry, try or fallback.
    pub fn render(&self) -> String {
        let mut w = String::new();
        let w = &mut w;
        put(
            w,
            "head",
            &[
                ("VERSION", &VERSION.to_string()),
                ("ESP_UUID", &self.esp_uuid),
                ("ESP_DIR", crate::bootloader::esp::DIR),
                ("DEFAULT", self.default.as_str()),
            ],
        );
        for (i, _) in self.entries.iter().enumerate() {
            put(w, "arg-reset", &[("I", &i.to_string())]);
        }
        put(w, "default-head", &[]);
        for e in &self.entries {
            put(w, "default-entry", &[("BE", e.be.as_str())]);
        }
        put(w, "once-head", &[]);
        for e in &self.entries {
            put(w, "once-entry", &[("BE", e.be.as_str())]);
        }
        put(w, "once-tail", &[]);
        put(w, "trial-head", &[]);
        for (i, e) in self.entries.iter().enumerate() {
            let be = e.be.as_str();
            put(w, "trial-entry-head", &[("BE", be)]);
            for n in 1..=MAX_TRIES {
                put(
                    w,
                    "trial-try",
                    &[("N", &n.to_string()), ("LEFT", &(n - 1).to_string())],
                );
            }
            put(
                w,
                "trial-entry-count",
                &[
                    ("BE", be),
                    ("I", &i.to_string()),
                    ("GOOD", self.good.as_str()),
                ],
            );
            for (j, o) in self.entries.iter().enumerate() {
                if o.be != e.be {
                    put(
                        w,
                        "trial-rollback-arg",
                        &[("J", &j.to_string()), ("BE", be)],
                    );
                }
            }
            put(w, "trial-entry-tail", &[]);
        }
        put(w, "trial-tail", &[]);
        let mut exports = vec!["bootenv_esp".to_string(), "bootenv_counted".to_string()];
        exports.extend((0..self.entries.len()).map(|i| format!("bootenv_arg_{i}")));
        put(w, "exports", &[("EXPORTS", &exports.join(" "))]);
        self.fallback_function(w);
        put(w, "menu-head", &[("TIMEOUT", &self.timeout.to_string())]);
        for (i, e) in self.entries.iter().enumerate() {
            self.entry(
                w,
                &e.title,
                &format!("bootenv-{}", e.be),
                e,
                &format!("$bootenv_arg_{i}"),
                "",
            );
        }
        // Factory resets, chosen at boot time: the agent records the request first, so that a
        // power cut during the reset resumes it at the next boot.
        put(w, "reset-head", &[]);
        for e in &self.entries {
            for (mode, what) in [
                ("config", "configuration"),
                ("full", "configuration and data"),
            ] {
                let title = format!("{}: factory reset ({what})", e.be);
                self.entry(
                    w,
                    &title,
                    &format!("bootenv-{}-reset-{mode}", e.be),
                    e,
                    "",
                    &format!(" bootenv.reset={mode}"),
                );
            }
        }
        put(w, "reset-tail", &[]);
        w.clone()
    }

    /// `bootenv_fallback <be>`: what an entry does when GRUB cannot load `<be>`'s kernel or
    /// initramfs (see the module's doc).
    fn fallback_function(&self, w: &mut String) {
        put(
            w,
            "fallback-head",
            &[("PAUSE", &FAILED_TRY_PAUSE.to_string())],
        );
        for f in &self.fallbacks {
            let Some((i, e)) = self.entries.iter().enumerate().find(|(_, e)| &e.be == f) else {
                continue;
            };
            put(w, "fallback-entry-head", &[("BE", e.be.as_str())]);
            self.load(
                w,
                "    ",
                e,
                &format!(" bootenv.unloadable=$1 $bootenv_arg_{i}"),
            );
            put(w, "fallback-entry-tail", &[]);
        }
        put(w, "fallback-tail", &[]);
    }

    /// Loads `e`'s kernel (with `extra` after its command line) and initramfs, and boots them;
    /// falls through when the initramfs is missing or empty or the kernel cannot be loaded.
    /// Once a kernel is loaded GRUB cannot load another one in the same boot (2.06's `linux`
    /// frees the new command line when it replaces a loaded kernel), so an initramfs that then
    /// fails to load ends in a restart, never in a second `linux`.
    fn load(&self, w: &mut String, indent: &str, e: &Entry, extra: &str) {
        let cmdline = if e.cmdline.is_empty() {
            String::new()
        } else {
            format!(" {}", e.cmdline)
        };
        let args = format!(
            "bootenv={} bootenv.pool={}{cmdline}{extra}",
            e.be, self.pool
        );
        put(
            w,
            "load",
            &[
                ("IND", indent),
                ("KDIR", &e.kernel_dir),
                ("ARGS", args.trim_end()),
                ("BE", e.be.as_str()),
                ("PAUSE", &FAILED_TRY_PAUSE.to_string()),
            ],
        );
    }

    fn entry(&self, w: &mut String, title: &str, id: &str, e: &Entry, arg: &str, extra: &str) {
        put(
            w,
            "entry-head",
            &[("TITLE", title), ("ID", id), ("BE", e.be.as_str())],
        );
        self.load(w, "  ", e, &format!("{extra} {arg}"));
        put(w, "entry-tail", &[("BE", e.be.as_str())]);
    }
}

/// The menu's fixed text, in sections (see the file's head).
const TEMPLATE: &str = include_str!("../../../grub/menu.cfg.in");

/// The sections of [`TEMPLATE`], by name, each its lines without trailing blank ones; parsed
/// once.
fn sections() -> &'static [(&'static str, String)] {
    static SECTIONS: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();
    SECTIONS.get_or_init(|| {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for l in TEMPLATE.lines() {
            if let Some(marker) = l.strip_prefix("#@ ") {
                out.push((marker.split_whitespace().next().unwrap_or(""), Vec::new()));
            } else if let Some((_, lines)) = out.last_mut() {
                lines.push(l);
            }
        }
        out.into_iter()
            .map(|(name, mut lines)| {
                while lines.last().is_some_and(|l| l.trim().is_empty()) {
                    lines.pop();
                }
                (name, lines.iter().map(|l| format!("{l}\n")).collect())
            })
            .collect()
    })
}

/// Section `name` of [`TEMPLATE`]. Every name the renderer uses exists (the unit tests render
/// every kind of section).
fn section(name: &str) -> &'static str {
    sections()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| panic!("grub/menu.cfg.in has no section {name}"))
}

/// Writes section `name` with each `@KEY@` replaced by its value, in one pass: a value is never
/// read again for keys (a command line may hold `@`).
fn put(w: &mut String, name: &str, vars: &[(&str, &str)]) {
    #[cfg(test)]
    tests::USED.with(|u| u.borrow_mut().insert(name.to_owned()));
    let mut rest = section(name);
    while let Some(at) = rest.find('@') {
        w.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let key = after
            .find('@')
            .map(|end| &after[..end])
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        match key.and_then(|k| vars.iter().find(|(n, _)| *n == k)) {
            Some((k, v)) => {
                w.push_str(v);
                rest = &after[k.len() + 1..];
            }
            None => {
                w.push('@');
                rest = after;
            }
        }
    }
    w.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootloader::grubenv::EnvBlock;

    thread_local! {
        /// The sections `put` wrote on this thread.
        pub(super) static USED: std::cell::RefCell<std::collections::BTreeSet<String>> =
            std::cell::RefCell::default();
    }

    fn be(s: &str) -> BeName {
        BeName::new(s).unwrap()
    }

    fn menu() -> Menu {
        let entry = |n: &str| Entry {
            be: be(n),
            title: format!("{n}: label"),
            kernel_dir: format!("/bootenv/{n}/k-00000000"),
            cmdline: "console=ttyS0 panic=10".into(),
        };
        Menu {
            pool: "tank".into(),
            esp_uuid: "1234-ABCD".into(),
            entries: vec![entry("v3"), entry("v2"), entry("v1")],
            default: be("v1"),
            good: be("v1"),
            fallbacks: vec![be("v1"), be("v2")],
            timeout: 3,
        }
    }

    fn env(vars: &[(&str, &str)]) -> EnvBlock {
        let mut e = EnvBlock::new();
        for (k, v) in vars {
            e.set(k, v).unwrap();
        }
        e
    }

    /// Runs GRUB's logic over boots: applies the saves to the block each time.
    fn boot(m: &Menu, e: &mut EnvBlock) -> GrubBoot {
        let b = m.model(Some(e));
        for (k, v) in &b.saves {
            e.set(k, v).unwrap();
        }
        b
    }

    #[test]
    fn default_from_the_block_or_baked_in() {
        let m = menu();
        assert_eq!(
            m.model(Some(&env(&[("bootenv_default", "v2")]))).boot,
            be("v2")
        );
        assert_eq!(m.model(Some(&env(&[]))).boot, be("v1"));
        // Unreadable block, unknown names, hostile values: the baked default.
        assert_eq!(m.model(None).boot, be("v1"));
        assert_eq!(
            m.model(Some(&env(&[("bootenv_default", "nosuch")]))).boot,
            be("v1")
        );
        assert_eq!(
            m.model(Some(&env(&[("bootenv_default", "v2; reboot")])))
                .boot,
            be("v1")
        );
    }

    #[test]
    fn a_one_shot_is_used_up_by_the_attempt() {
        let m = menu();
        let mut e = env(&[("bootenv_default", "v1"), ("bootenv_next", "v3")]);
        let b = boot(&m, &mut e);
        assert_eq!(b.boot, be("v3"));
        assert_eq!(e.get("bootenv_next"), Some(""));
        assert_eq!(boot(&m, &mut e).boot, be("v1"));
        // A one-shot to an unknown BE is cleared too, and changes nothing.
        let mut e = env(&[("bootenv_next", "gone")]);
        assert_eq!(boot(&m, &mut e).boot, be("v1"));
        assert_eq!(e.get("bootenv_next"), Some(""));
    }

    #[test]
    fn a_trial_counts_down_then_rolls_back() {
        let m = menu();
        let mut e = env(&[
            ("bootenv_default", "v1"),
            ("bootenv_trial", "v3"),
            ("bootenv_tries", "2"),
        ]);
        let b = boot(&m, &mut e);
        assert_eq!(b.boot, be("v3"));
        assert_eq!(b.args, vec![(be("v3"), "bootenv.trial=1".to_string())]);
        assert_eq!(e.get("bootenv_tries"), Some("1"));
        let b = boot(&m, &mut e);
        assert_eq!((b.boot.as_str(), e.get("bootenv_tries")), ("v3", Some("0")));
        // Used up: the known-good BE, with the rollback marker on every other entry.
        let b = boot(&m, &mut e);
        assert_eq!(b.boot, be("v1"));
        assert!(b.saves.is_empty());
        assert!(b
            .args
            .contains(&(be("v1"), "bootenv.rollback=v3".to_string())));
        assert!(!b.args.iter().any(|(n, _)| n.as_str() == "v3"));
        // And it stays rolled back until bootenv rewrites the block.
        assert_eq!(boot(&m, &mut e).boot, be("v1"));
    }

    #[test]
    fn a_trial_of_the_default_rolls_back_to_the_known_good() {
        let mut m = menu();
        m.default = be("v3");
        let mut e = env(&[
            ("bootenv_default", "v3"),
            ("bootenv_trial", "v3"),
            ("bootenv_tries", "0"),
        ]);
        assert_eq!(boot(&m, &mut e).boot, be("v1"));
    }

    #[test]
    fn an_unreadable_counter_means_no_tries_left() {
        let m = menu();
        for tries in ["", "x", "-1", "99", "0"] {
            let e = env(&[("bootenv_trial", "v3"), ("bootenv_tries", tries)]);
            assert_eq!(m.model(Some(&e)).boot, be("v1"), "tries {tries:?}");
        }
    }

    #[test]
    fn a_block_grub_cannot_write_never_repeats_a_one_shot_or_a_try() {
        let m = menu();
        // The one-shot cannot be cleared: it is not carried out (it would repeat forever).
        let e = env(&[("bootenv_next", "v3")]);
        let b = m.model_saving(Some(&e), false);
        assert_eq!((b.boot, b.saves.len()), (be("v1"), 0));
        // The try cannot be counted: no try is made, the trial rolls back.
        let e = env(&[("bootenv_trial", "v3"), ("bootenv_tries", "2")]);
        let b = m.model_saving(Some(&e), false);
        assert_eq!(b.boot, be("v1"));
        assert!(b
            .args
            .contains(&(be("v1"), "bootenv.rollback=v3".to_string())));
        // The script does the same: every save_env is a condition.
        let s = m.render();
        assert_eq!(
            s.matches("save_env").count(),
            s.matches("if save_env").count(),
            "{s}"
        );
    }

    #[test]
    fn a_one_shot_during_a_trial_does_not_use_a_try() {
        let m = menu();
        let mut e = env(&[
            ("bootenv_trial", "v3"),
            ("bootenv_tries", "2"),
            ("bootenv_next", "v2"),
        ]);
        assert_eq!(boot(&m, &mut e).boot, be("v2"));
        assert_eq!(e.get("bootenv_tries"), Some("2"));
        assert_eq!(boot(&m, &mut e).boot, be("v3"));
    }

    #[test]
    fn the_script_bakes_in_only_validated_names() {
        let m = menu();
        let s = m.render();
        assert!(s.contains("load_env --file \"$bootenv_env\" bootenv_default bootenv_next bootenv_trial bootenv_tries"));
        assert!(s.contains("set default=\"bootenv-$bootenv_boot\""));
        assert!(s.contains("unset fallback"));
        assert!(s.contains("menuentry 'v3: label' --id 'bootenv-v3' {"));
        assert!(s.contains("  if [ -s ($bootenv_esp)/bootenv/v3/k-00000000/initrd.img ]; then\n    if linux ($bootenv_esp)/bootenv/v3/k-00000000/vmlinuz bootenv=v3 bootenv.pool=tank console=ttyS0 panic=10 $bootenv_arg_0; then\n      if initrd ($bootenv_esp)/bootenv/v3/k-00000000/initrd.img; then boot; fi\n"), "{s}");
        assert!(
            s.contains("      reboot\n    fi\n  fi\n  bootenv_fallback v3\n}"),
            "{s}"
        );
        // The fallbacks: the known-good, then the earlier default, each with the marker.
        let f = &s[s.find("function bootenv_fallback").unwrap()..];
        let (v1, v2) = (
            f.find("bootenv=v1 bootenv.pool=tank console=ttyS0 panic=10 bootenv.unloadable=$1 $bootenv_arg_2;").unwrap(),
            f.find("bootenv=v2 bootenv.pool=tank console=ttyS0 panic=10 bootenv.unloadable=$1 $bootenv_arg_1;").unwrap(),
        );
        assert!(v1 < v2, "{f}");
        assert!(
            f.contains("if [ \"$bootenv_counted\" = \"$1\" ]; then"),
            "{f}"
        );
        assert!(s.contains("submenu 'Advanced: factory reset' --id 'bootenv-advanced' {"));
        assert!(s.contains(
            "menuentry 'v1: factory reset (configuration and data)' --id 'bootenv-v1-reset-full' {"
        ));
        assert!(s.contains(
            "bootenv=v1 bootenv.pool=tank console=ttyS0 panic=10 bootenv.reset=config; then\n"
        ));
        // Values from the block are only ever compared, never used in a command.
        for line in s.lines().filter(|l| {
            l.contains("$bootenv_default")
                || l.contains("$bootenv_next")
                || l.contains("$bootenv_trial")
        }) {
            let l = line.trim();
            assert!(
                l.starts_with("if [ ") || l.starts_with("if [ -n") || l.starts_with("if [ -z"),
                "{l}"
            );
        }
    }

    #[test]
    fn a_kernel_that_does_not_load_ends_in_the_known_good_never_at_a_prompt() {
        let m = menu();
        let all_but = |bad: &'static [&'static str]| move |b: &BeName| !bad.contains(&b.as_str());
        // The default (v1, also the known-good) does not load: the earlier default, v2.
        let b = m.model(Some(&env(&[])));
        assert_eq!(
            m.outcome(&b, &all_but(&["v1"])),
            Loaded::Boots {
                be: be("v2"),
                unloadable: Some(be("v1"))
            }
        );
        // A one-shot that does not load: the known-good, with the marker.
        let mut e = env(&[("bootenv_next", "v3")]);
        let b = boot(&m, &mut e);
        assert_eq!(
            m.outcome(&b, &all_but(&["v3"])),
            Loaded::Boots {
                be: be("v1"),
                unloadable: Some(be("v3"))
            }
        );
        // A trial that does not load uses its tries as a panic would: each counted try
        // restarts, then the known-good boots with the rollback marker.
        let mut e = env(&[("bootenv_trial", "v3"), ("bootenv_tries", "2")]);
        for _ in 0..2 {
            let b = boot(&m, &mut e);
            assert_eq!(m.outcome(&b, &all_but(&["v3"])), Loaded::Restarts(be("v3")));
        }
        let b = boot(&m, &mut e);
        assert_eq!(
            m.outcome(&b, &all_but(&["v3"])),
            Loaded::Boots {
                be: be("v1"),
                unloadable: None
            }
        );
        assert!(b
            .args
            .contains(&(be("v1"), "bootenv.rollback=v3".to_string())));
        // Nothing loads: GRUB stops with its errors (no restart loop).
        let b = m.model(Some(&env(&[])));
        assert_eq!(m.outcome(&b, &|_| false), Loaded::Stops);
    }

    #[test]
    fn the_template_has_each_section_once_and_the_variables_the_menu_loads() {
        let names: Vec<&str> = sections().iter().map(|(n, _)| *n).collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        // A menu with entries and fallbacks writes every section.
        USED.with(|u| u.borrow_mut().clear());
        menu().render();
        let used = USED.with(|u| u.borrow().clone());
        let all: std::collections::BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(used, all);
        let head = section("head");
        for v in VARS {
            assert!(head.contains(&format!("set {v}=\n")), "{v}");
        }
        assert!(head.contains(&format!(
            "load_env --file \"$bootenv_env\" {}\n",
            VARS.join(" ")
        )));
    }

    #[test]
    fn values_are_not_read_again_for_keys() {
        let mut w = String::new();
        put(&mut w, "default-entry", &[("BE", "@BE@x@I@")]);
        assert_eq!(
            w,
            "if [ \"$bootenv_default\" = @BE@x@I@ ]; then set bootenv_boot=@BE@x@I@; fi\n"
        );
    }

    #[test]
    fn the_script_passes_grub_script_check() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("menu.cfg");
        std::fs::write(&p, menu().render()).unwrap();
        let out = std::process::Command::new("grub-script-check")
            .arg(&p)
            .output();
        let Ok(out) = out else {
            panic!("grub-script-check is missing: run `cargo xtask deps`")
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn titles_and_command_lines_cannot_inject_script() {
        assert_eq!(
            safe_title("2.0 'beta'; reboot\n$x"),
            "2.0 ?beta?? reboot??x"
        );
        assert!(check_cmdline("console=ttyS0,115200 quiet panic=10 zfs.zfs_arc_max=1").is_ok());
        assert!(check_cmdline(&"x ".repeat(16)).is_ok());
        assert!(check_cmdline(&format!("a={}", "b".repeat(MAX_CMDLINE - 2))).is_ok());
        for (bad, why) in [
            ("x -- y", "holds --"),
            ("--", "holds --"),
            ("panic=0", "panic=0"),
            ("panic=never", "panic=never"),
            (&"x ".repeat(17), "17 words"),
            (&format!("a={}", "b".repeat(MAX_CMDLINE - 1)), "1025 bytes"),
        ] {
            let e = check_cmdline(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_cmdline("panic=-1 panic=30 x--y").is_ok());
        for bad in [
            "a;b",
            "a$b",
            "a\"b",
            "a'b",
            "a{b}",
            "a\nb",
            "a\\b",
            "x #c",
            "bootenv=v9",
            "bootenv.pool=x",
            "root=/dev/sda",
        ] {
            assert!(check_cmdline(bad).is_err(), "{bad} accepted");
        }
    }
}
