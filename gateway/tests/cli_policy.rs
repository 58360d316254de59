//! `warden policy check` and `warden policy explain` on the real binary:
//! the shipped examples pass with the documented configuration, one bad file
//! refuses the whole directory with file:line:column and field, and explain
//! names the document behind each setting.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn warden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn the_examples_pass_and_one_bad_file_refuses_the_directory() {
    let out = warden(&[
        "policy",
        "check",
        "policies/examples",
        "--config",
        "warden.toml",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in ["default", "finance", "internal-testing"] {
        assert!(stdout.contains(&format!("{id}.yaml")), "{stdout}");
    }

    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root().join("policies/examples")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("zz.yaml"),
        "id: broken\ndescription: x\napplies_to: default\nbogus: 1\n",
    )
    .unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let out = warden(&["policy", "check", dir_arg, "--config", "warden.toml"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("zz.yaml:4:1: bogus"), "{text}");
    assert!(text.contains("refused"), "{text}");
}

#[test]
fn explain_names_the_document_behind_each_setting() {
    let out = warden(&[
        "policy",
        "explain",
        "--dir",
        "policies/examples",
        "--tenant",
        "finance",
        "--key",
        "k1",
        "--model",
        "m",
        "--config",
        "warden.toml",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("effective policy default+finance"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("llama-guard-remote") && l.contains("from finance")),
        "{stdout}"
    );
}
