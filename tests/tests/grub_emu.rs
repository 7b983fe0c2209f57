//! The trial state machine in GRUB itself: bootenv's generated menu script runs in `grub-emu`
//! (GRUB 2.06 as a program, from Debian's `grub-emu`, installed by `cargo xtask deps`), reading
//! and writing its environment block on a FAT image as on the ESP, for every transition the
//! unit tests drive through the model (`Menu::model`, `Menu::outcome`): a default, a one-shot, a
//! trial's count-down and rollback, a damaged block, kernels GRUB cannot load. Each case checks
//! that GRUB boots the BE the model says, with the kernel arguments it says, and leaves the
//! block as the model says: the model cannot drift from the script.
//!
//! `grub-emu` has no `linux` or `initrd` command; the harness defines both as functions (GRUB
//! looks a function up when no command has the name): `linux` saves its arguments in a block of
//! its own on the image (the screen wraps long lines), `initrd` ends the run as `boot` would. Everything else is GRUB's: `search`,
//! `load_env`, `save_env` (which writes the block's sectors in place, as on a real ESP),
//! `configfile`, the menu and its default entry.

use bootenv::bootloader::grub::{Entry, GrubBoot, Loaded, Menu};
use bootenv::bootloader::grubenv::EnvBlock;
use bootenv::model::names::BeName;
use std::path::Path;
use std::process::Command;

const EMU_MODULES: &str = "/usr/lib/grub/x86_64-emu";
const SERIAL: &str = "1234-ABCD";

fn be(s: &str) -> BeName {
    BeName::new(s).unwrap()
}

fn menu() -> Menu {
    let entry = |n: &str| Entry {
        be: be(n),
        title: format!("{n}: {n}.0"),
        kernel_dir: format!("/bootenv/_kernels/k{n}"),
        cmdline: "console=ttyS0 quiet".into(),
    };
    Menu {
        pool: "tank".into(),
        esp_uuid: SERIAL.into(),
        entries: vec![entry("v3"), entry("v2"), entry("v1")],
        default: be("v1"),
        good: be("v1"),
        fallbacks: vec![be("v1"), be("v2")],
        timeout: 0,
    }
}

/// One case: the block GRUB finds (`None`: no block; raw bytes: a damaged one), and the BEs
/// whose initramfs is missing (GRUB cannot load them).
struct Case {
    name: &'static str,
    block: Option<Vec<u8>>,
    unloadable: &'static [&'static str],
}

fn block(vars: &[(&str, &str)]) -> Option<Vec<u8>> {
    let mut b = EnvBlock::new();
    for (k, v) in vars {
        b.set(k, v).unwrap();
    }
    Some(b.render())
}

/// A block with no free space left, on trial.
fn full_block() -> Option<Vec<u8>> {
    let mut text = format!(
        "{}bootenv_trial=v2\nbootenv_tries=3\nfill=",
        bootenv::bootloader::grubenv::SIGNATURE
    );
    while text.len() < 1023 {
        text.push('x');
    }
    text.push('\n');
    Some(text.into_bytes())
}

/// A block of `body` after the signature, padded to 1024 bytes.
fn padded(body: &str) -> Vec<u8> {
    let mut text = format!("{}{body}", bootenv::bootloader::grubenv::SIGNATURE);
    while text.len() < 1024 {
        text.push('#');
    }
    text.into_bytes()
}

/// A block naming a one-shot twice.
fn twice() -> Vec<u8> {
    padded("bootenv_next=v3\nbootenv_next=v2\n")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What GRUB did: the `linux` line it ran (its words), the block it left, and all it printed.
struct Ran {
    linux: Option<Vec<String>>,
    block: Vec<u8>,
    text: String,
}

fn run_grub(dir: &Path, m: &Menu, case: &Case, limit: u32) -> Ran {
    let img = dir.join("esp.img");
    let _ = std::fs::remove_file(&img);
    run(Command::new("mkfs.vfat")
        .args([
            "-C",
            "-F",
            "16",
            "-n",
            "ESP",
            "-i",
            &SERIAL.replace('-', ""),
        ])
        .arg(&img)
        .arg("16384"));
    let put = |rel: &str, data: &[u8]| {
        let f = dir.join("file");
        std::fs::write(&f, data).unwrap();
        run(Command::new("mcopy")
            .args(["-o", "-i"])
            .arg(&img)
            .arg(&f)
            .arg(format!("::{rel}")));
    };
    run(Command::new("mmd")
        .arg("-i")
        .arg(&img)
        .args(["::bootenv", "::bootenv/_kernels"]));
    for e in &m.entries {
        run(Command::new("mmd")
            .arg("-i")
            .arg(&img)
            .arg(format!("::{}", e.kernel_dir)));
        put(&format!("{}/vmlinuz", e.kernel_dir), b"kernel");
        if !case.unloadable.contains(&e.be.as_str()) {
            put(&format!("{}/initrd.img", e.kernel_dir), b"initrd");
        }
    }
    put("bootenv/grub.cfg", m.render().as_bytes());
    put("bootenv/emu", &EnvBlock::new().render());
    if let Some(b) = &case.block {
        put("bootenv/grubenv", b);
    }
    // GRUB's modules, and the configuration of bootenv's EFI image, after the stand-ins.
    let mods = dir.join("mods");
    if !mods.exists() {
        std::fs::create_dir_all(&mods).unwrap();
        for f in std::fs::read_dir(EMU_MODULES)
            .unwrap_or_else(|e| panic!("{EMU_MODULES}: {e}: run `cargo xtask deps` (grub-emu)"))
        {
            let f = f.unwrap();
            std::os::unix::fs::symlink(f.path(), mods.join(f.file_name())).unwrap();
        }
    }
    let embedded = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../grub/efi-embedded.cfg"),
    )
    .unwrap();
    std::fs::write(
        mods.join("grub.cfg"),
        format!(
            "function linux {{ set bootenv_emu_linux=; for a in $@; do set bootenv_emu_linux=\"$bootenv_emu_linux $a\"; done; save_env --file ($root)/bootenv/emu bootenv_emu_linux; echo \"BOOTENV-EMU linux $1\"; }}\n\
             function initrd {{ echo \"BOOTENV-EMU initrd $1\"; reboot; }}\n{embedded}"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("device.map"), format!("(hd0) {}\n", img.display())).unwrap();
    let out = Command::new("timeout")
        .args(["-k", "2", &limit.to_string(), "grub-emu", "-d"])
        .arg(&mods)
        .arg("-m")
        .arg(dir.join("device.map"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("grub-emu is missing: run `cargo xtask deps`");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    // The screen's escape sequences out, one line per line.
    let esc = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]|\r").unwrap();
    let text = esc.replace_all(&raw, "\n").into_owned();
    let read = |rel: &str| -> Vec<u8> {
        let f = dir.join("read");
        let _ = std::fs::remove_file(&f);
        let _ = Command::new("mcopy")
            .arg("-i")
            .arg(&img)
            .arg(format!("::{rel}"))
            .arg(&f)
            .output();
        std::fs::read(&f).unwrap_or_default()
    };
    let linux = EnvBlock::parse(&read("bootenv/emu"))
        .ok()
        .and_then(|b| b.get("bootenv_emu_linux").map(str::to_owned))
        .map(|l| l.split_whitespace().map(str::to_owned).collect());
    Ran {
        linux,
        block: read("bootenv/grubenv"),
        text,
    }
}

/// The `linux` words the model expects for `be` booting (`unloadable`: as a fallback).
fn expected_words(m: &Menu, b: &GrubBoot, be: &BeName, unloadable: Option<&BeName>) -> Vec<String> {
    let e = m.entries.iter().find(|e| &e.be == be).unwrap();
    let mut w = vec![
        format!("(hd0){}/vmlinuz", e.kernel_dir),
        format!("bootenv={be}"),
        "bootenv.pool=tank".into(),
    ];
    w.extend(e.cmdline.split_whitespace().map(str::to_owned));
    if let Some(u) = unloadable {
        w.push(format!("bootenv.unloadable={u}"));
    }
    for (n, a) in &b.args {
        if n == be {
            w.extend(a.split_whitespace().map(str::to_owned));
        }
    }
    w
}

#[test]
fn the_generated_script_does_in_grub_what_the_model_says() {
    let cases = [
        Case {
            name: "no block: the baked-in default",
            block: None,
            unloadable: &[],
        },
        Case {
            name: "the default",
            block: block(&[("bootenv_default", "v2")]),
            unloadable: &[],
        },
        Case {
            name: "a default not in the menu",
            block: block(&[("bootenv_default", "v9")]),
            unloadable: &[],
        },
        Case {
            name: "a one-shot, cleared",
            block: block(&[("bootenv_default", "v2"), ("bootenv_next", "v3")]),
            unloadable: &[],
        },
        Case {
            name: "a trial's first try",
            block: block(&[("bootenv_trial", "v2"), ("bootenv_tries", "3")]),
            unloadable: &[],
        },
        Case {
            name: "a trial's last try",
            block: block(&[("bootenv_trial", "v2"), ("bootenv_tries", "1")]),
            unloadable: &[],
        },
        Case {
            name: "a trial with no try left rolls back",
            block: block(&[
                ("bootenv_default", "v1"),
                ("bootenv_trial", "v2"),
                ("bootenv_tries", "0"),
            ]),
            unloadable: &[],
        },
        Case {
            name: "a trial whose counter is garbage rolls back",
            block: block(&[("bootenv_trial", "v3"), ("bootenv_tries", "x9")]),
            unloadable: &[],
        },
        Case {
            name: "a trial with more tries than allowed rolls back",
            block: block(&[("bootenv_trial", "v3"), ("bootenv_tries", "21")]),
            unloadable: &[],
        },
        Case {
            name: "a one-shot during a trial: the trial is not counted",
            block: block(&[
                ("bootenv_next", "v3"),
                ("bootenv_trial", "v2"),
                ("bootenv_tries", "2"),
            ]),
            unloadable: &[],
        },
        Case {
            name: "a damaged block",
            block: Some(vec![0xAA; 1024]),
            unloadable: &[],
        },
        Case {
            name: "a torn block",
            block: block(&[("bootenv_default", "v2"), ("bootenv_trial", "v3")]).map(|mut b| {
                b.truncate(300);
                b
            }),
            unloadable: &[],
        },
        Case {
            name: "a block cut in a line: GRUB keeps the lines before",
            block: Some(b"# GRUB Environment Block\nbootenv_default=v2\nbootenv_tr".to_vec()),
            unloadable: &[],
        },
        Case {
            name: "a block cut after a one-shot: cleared if it fits",
            block: block(&[("bootenv_next", "v3"), ("bootenv_default", "v2")]).map(|mut b| {
                b.truncate(200);
                b
            }),
            unloadable: &[],
        },
        Case {
            name: "a full block: the count fits in place",
            block: full_block(),
            unloadable: &[],
        },
        Case {
            name: "a one-shot set twice: GRUB clears the first, loads the last",
            block: Some(twice()),
            unloadable: &[],
        },
        Case {
            name: "an escaped newline joins two lines: GRUB skips the second",
            block: Some(padded("#c\\\nbootenv_default=v2\n")),
            unloadable: &[],
        },
        Case {
            name: "a NUL ends a name, as in C",
            block: Some(padded("bootenv_next\0x=v3\nbootenv_default=v2\n")),
            unloadable: &[],
        },
        Case {
            name: "a value escaping the last newline breaks the block there",
            block: Some(padded("bootenv_trial=v2\nbootenv_tries=3\\\n")),
            unloadable: &[],
        },
        Case {
            name: "the default cannot be loaded: the known-good boots",
            block: block(&[("bootenv_default", "v2")]),
            unloadable: &["v2"],
        },
        Case {
            name: "a one-shot cannot be loaded",
            block: block(&[("bootenv_next", "v3")]),
            unloadable: &["v3"],
        },
        Case {
            name: "neither the default nor the known-good loads: the next fallback",
            block: block(&[("bootenv_default", "v3")]),
            unloadable: &["v3", "v1"],
        },
        Case {
            name: "a counted try that cannot be loaded restarts",
            block: block(&[("bootenv_trial", "v2"), ("bootenv_tries", "2")]),
            unloadable: &["v2"],
        },
        Case {
            name: "nothing loads",
            block: block(&[("bootenv_default", "v2")]),
            unloadable: &["v1", "v2", "v3"],
        },
    ];
    let m = menu();
    let dir = tempfile::tempdir().unwrap();
    // Each case on an image of its own, all at once (GRUB mostly waits).
    let runs: Vec<Ran> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .enumerate()
            .map(|(i, case)| {
                let d = dir.path().join(i.to_string());
                std::fs::create_dir_all(&d).unwrap();
                let m = &m;
                // Every boot ends GRUB (the stand-in `initrd`, or a restart), but one that ends
                // nowhere leaves GRUB at its menu without a countdown: it is given 6 s to say
                // so, the others a minute.
                let (b, _) = m.model_bytes(case.block.as_deref());
                let loads = |n: &BeName| !case.unloadable.contains(&n.as_str());
                let limit = match m.outcome(&b, &loads) {
                    Loaded::Stops => 6,
                    _ => 60,
                };
                s.spawn(move || run_grub(&d, m, case, limit))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (case, ran) in cases.iter().zip(runs) {
        let (b, want_block) = m.model_bytes(case.block.as_deref());
        let loads = |n: &BeName| !case.unloadable.contains(&n.as_str());
        let (want_linux, want_text) = match m.outcome(&b, &loads) {
            Loaded::Boots { be, unloadable } => {
                (Some(expected_words(&m, &b, &be, unloadable.as_ref())), None)
            }
            Loaded::Restarts(be) => (
                None,
                Some(format!("this try of {be}'s trial failed; restarting")),
            ),
            Loaded::Stops => (
                None,
                Some("no boot environment could be loaded".to_string()),
            ),
        };
        let mut problems = Vec::new();
        if ran.linux != want_linux {
            problems.push(format!(
                "linux: GRUB ran {:?}, the model says {want_linux:?}",
                ran.linux
            ));
        }
        if let Some(t) = &want_text {
            if !ran.text.contains(t.as_str()) {
                problems.push(format!("GRUB did not say {t:?}"));
            }
        }
        // The block afterwards, byte for byte.
        let want_block = want_block.unwrap_or_default();
        if ran.block != want_block {
            problems.push(format!(
                "block: GRUB left {:?}, the model says {:?}",
                String::from_utf8_lossy(&ran.block),
                String::from_utf8_lossy(&want_block)
            ));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}:\n  {}\n--- GRUB printed:\n{}",
                case.name,
                problems.join("\n  "),
                ran.text.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
