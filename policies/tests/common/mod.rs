//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use warden_policies::KnownNames;

/// The names the gateway configuration of the tests declares.
pub fn known() -> KnownNames {
    KnownNames::new(
        ["llama-guard-local", "llama-guard-remote"],
        ["calculator", "current_time", "get_weather"],
    )
}

/// A minimal valid default policy.
pub const DEFAULT: &str = "\
id: default
description: Baseline.
applies_to: default
checkpoints: [input, output]
backends: [rules, llama-guard-local]
categories:
  variant: llama-guard-3-8b
";

/// A temporary policy directory holding `files`.
pub fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    dir
}

/// Writes one file (atomically, so a watcher never sees half a file).
pub fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}
