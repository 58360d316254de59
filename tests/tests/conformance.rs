//! The official `openai` Python package against a running gateway.
//! `scripts/test.sh` installs it (`scripts/python-env.sh`) and names the
//! interpreter in `WARDEN_PYTHON`; without it the test fails.

use std::process::Command;

use warden_tests::*;

#[actix_web::test]
async fn the_openai_python_client_works_unchanged() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_conformance.py");
    let base = gw.base.clone();
    let python = std::env::var("WARDEN_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python).args([script, &base, KEY]).output()
    })
    .await
    .unwrap()
    .expect("WARDEN_PYTHON (or python3) must run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "conformance failed (run `bash scripts/python-env.sh` and set WARDEN_PYTHON to what it prints)\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok AuthenticationError"), "{stdout}");
    gw.stop().await;
}
