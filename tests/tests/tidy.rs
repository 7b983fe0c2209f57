//! Rules the code keeps, checked on every `cargo test`: every Rust module starts with a `//!`
//! doc saying what it is for, no test is switched off or left as a stub, the agent runs
//! commands, mounts and reads the mount table only through its seams, and its layers use only
//! the layers below them.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut files = Vec::new();
    for d in [
        "agent/src",
        "initramfs/src",
        "tests/src",
        "tests/tests",
        "xtask/src",
        "agent/fuzz/fuzz_targets",
    ] {
        rust_files(&root.join(d), &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    files
}

#[test]
fn every_module_says_what_it_is_for() {
    let missing: Vec<_> = sources()
        .into_iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
        .collect();
    assert!(missing.is_empty(), "modules without a //! doc: {missing:?}");
}

#[test]
fn no_test_is_switched_off_or_a_stub() {
    let banned = [
        concat!("#[", "ignore"),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("should", "_panic"),
    ];
    for p in sources() {
        let text = std::fs::read_to_string(&p).unwrap();
        for b in banned {
            assert!(!text.contains(b), "{} contains {b}", p.display());
        }
    }
}

/// The agent's code outside its tests: up to the first inline `#[cfg(test)]` module (they come
/// last in a file; `#[cfg(test)] mod fake;` declaring a file is not one).
fn shipped(text: &str) -> &str {
    let mut at = 0;
    const MARK: &str = "\n#[cfg(test)]\n";
    while let Some(i) = text[at..].find(MARK) {
        let start = at + i;
        let next = text[start + MARK.len()..].lines().next().unwrap_or("");
        let inline = next.trim_end().ends_with('{')
            && next.trim_start_matches("pub(crate) ").starts_with("mod ");
        if inline {
            return &text[..start];
        }
        at = start + 1;
    }
    text
}

#[test]
fn commands_and_mounts_go_through_their_seams() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rust_files(&root.join("agent/src"), &mut files);
    let mut found = Vec::new();
    for p in files {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        // The seams themselves, and PID 1 (which runs before anything else exists).
        if rel == "agent/src/sys/run.rs"
            || rel.starts_with("agent/src/sys/mounts")
            || rel.starts_with("agent/src/pid1/")
        {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let code = shipped(&text);
        let commands = code.matches(concat!("Command", "::new(")).count();
        let mounts = code.matches(concat!("nix::mount::", "mount(")).count()
            + code.matches(concat!("nix::mount::", "umount")).count();
        if code.contains(concat!("proc/self/", "mounts")) {
            found.push(format!(
                "{rel} reads the mount table itself: use crate::sys::mounts::mount_table"
            ));
        }
        if commands + mounts > 0 {
            found.push(format!(
                "{rel}: {commands} raw commands, {mounts} raw mounts"
            ));
        }
    }
    assert!(
        found.is_empty(),
        "run commands with crate::sys::run::Cmd and mount through crate::sys::mounts::Mounter: {found:#?}"
    );
}

#[test]
fn public_names_are_spelled_in_their_module() {
    // Each public name is written once, in its module; everything else uses the constant.
    let owners: [(&str, &[&str]); 2] = [
        (
            "agent/src/model/paths.rs",
            &[
                "\"run/bootenv",
                "\"/run/bootenv",
                "\"grub.cfg\"",
                "\"grubenv",
                "\"_kernels",
            ],
        ),
        ("agent/src/model/layout.rs", &["\"org.bootenv:"]),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rust_files(&root.join("agent/src"), &mut files);
    let mut found = Vec::new();
    for p in files {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        // The fakes are test code; tests spell public names to check their values.
        if rel.contains("fake") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let code = shipped(&text);
        for (owner, names) in owners {
            if rel == owner {
                continue;
            }
            for n in names.iter().filter(|n| code.contains(**n)) {
                found.push(format!("{rel} spells {n}…: use the constant of {owner}"));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// The agent's layers, bottom up: a module may use the layers below its own, never a peer's or
/// one above (ARCHITECTURE.md, code map). `model` does no I/O at all.
const LAYERS: [(&str, usize); 7] = [
    ("model", 0),
    ("sys", 1),
    ("bootloader", 2),
    ("boot", 2),
    ("verbs", 3),
    ("pid1", 3),
    ("cli", 4),
];

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let src = root.join("agent/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let level = |top: &str| LAYERS.iter().find(|l| l.0 == top).map(|l| l.1);
    let mut found = Vec::new();
    let mut checked = 0;
    for p in files {
        let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        let top = rel.split(['/', '.']).next().unwrap_or("").to_owned();
        let Some(mine) = level(&top) else { continue };
        checked += 1;
        let text = std::fs::read_to_string(&p).unwrap();
        // Code, not what the docs mention.
        let code: String = shipped(&text)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (other, theirs) in LAYERS {
            if other != top && theirs >= mine && code.contains(&format!("crate::{other}::")) {
                found.push(format!("{rel} uses crate::{other}"));
            }
        }
        if top == "model" {
            for io in ["nix::", "libc::", "std::fs", "std::process", "std::net"] {
                if code.contains(io) {
                    found.push(format!("{rel} (model) uses {io}"));
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} files checked");
    assert!(found.is_empty(), "layering broken: {found:#?}");
}
