//! Locating the shared golden fixtures from tests.

use std::path::PathBuf;

/// The `fixtures` directory: `WARDEN_FIXTURES`, else `../shared/fixtures`
/// beside the workspace, else the workspace's vendored copy.
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WARDEN_FIXTURES") {
        return PathBuf::from(dir);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits inside the workspace")
        .to_path_buf();
    let shared = workspace.join("../shared/fixtures");
    if shared.is_dir() {
        shared
    } else {
        workspace.join("fixtures")
    }
}

/// The cases of `formats/<file>` as JSON values.
pub fn load_fixture(file: &str) -> Vec<serde_json::Value> {
    let path = fixtures_dir().join("formats").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
