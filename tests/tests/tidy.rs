//! Rules the code keeps, checked on every `cargo test`: every Rust module starts with a `//!`
//! doc saying what it is for, and no test is switched off or left as a stub.

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
