//! The official `openai` Python package against a running gateway
//! (`pip install openai` first; the test fails without it).

mod common;

use std::process::Command;

use common::*;

#[actix_web::test]
async fn the_openai_python_client_works_unchanged() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/openai_conformance.py"
    );
    let base = gw.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").args([script, &base, KEY]).output()
    })
    .await
    .unwrap()
    .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "conformance failed (is the openai package installed? `pip install openai`)\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok AuthenticationError"), "{stdout}");
    gw.stop().await;
}
