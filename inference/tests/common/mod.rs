//! Shared test helpers: where the fixtures and the bundled model are.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use warden_inference::Model;

/// The golden fixtures: `WARDEN_FIXTURES`, else `../shared/fixtures` beside
/// the checkout, else the vendored copy.
pub fn fixtures() -> PathBuf {
    if let Ok(dir) = std::env::var("WARDEN_FIXTURES") {
        return PathBuf::from(dir);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = workspace.join("../shared/fixtures");
    if shared.is_dir() {
        shared
    } else {
        workspace.join("fixtures")
    }
}

/// Reads a fixture file as JSON.
pub fn fixture(rel: &str) -> serde_json::Value {
    let path = fixtures().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The bundled model file: `WARDEN_TEST_MODEL`, else the fetch script's cache.
pub fn model_path() -> PathBuf {
    if let Ok(p) = std::env::var("WARDEN_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let dir = std::env::var("WARDEN_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/warden/models")
        });
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "bundled model missing at {}: run scripts/fetch-model.sh",
        path.display()
    );
    path
}

/// The bundled model, loaded once per test binary.
pub fn model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| Arc::new(Model::load(&model_path()).expect("bundled model loads")))
        .clone()
}
