//! `grub/10_bootenv`, the /etc/grub.d script: it prints `bootenv grub-menu`'s menu, and when
//! bootenv cannot make one it says so on stderr and still lets update-grub finish (exit 0).

use std::path::Path;
use std::process::Command;

fn run_with_fake_bootenv(script_body: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("bootenv");
    std::fs::write(&fake, format!("#!/bin/sh\n{script_body}\n")).unwrap();
    Command::new("chmod")
        .args(["755"])
        .arg(&fake)
        .status()
        .unwrap();
    let grub_d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grub/10_bootenv");
    Command::new("sh")
        .arg(grub_d)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .output()
        .unwrap()
}

#[test]
fn prints_the_menu() {
    let out = run_with_fake_bootenv(
        r#"[ "$1" = grub-menu ] && echo "menuentry 'v1: 1.0' --id 'bootenv-v1' {" && echo "}""#,
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "menuentry 'v1: 1.0' --id 'bootenv-v1' {\n}\n"
    );
}

#[test]
fn a_failure_adds_nothing_and_does_not_stop_update_grub() {
    let out = run_with_fake_bootenv("echo 'bootenv: error: no imported pool' >&2; exit 1");
    assert!(out.status.success(), "update-grub would abort");
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no bootenv entries in this menu"));
}
