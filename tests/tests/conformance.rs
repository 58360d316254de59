//! The official `openai` Python package against a running gateway.
//! `scripts/test.sh` installs it (`scripts/python-env.sh`) and names the
//! interpreter in `WARDEN_PYTHON`; without it the test fails.

use warden_tests::*;

#[actix_web::test]
async fn the_openai_python_client_works_unchanged() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let (ok, stdout, stderr) =
        run_python("openai_conformance.py", vec![gw.base.clone(), KEY.into()]).await;
    assert!(
        ok,
        "conformance failed (run `bash scripts/python-env.sh` and set WARDEN_PYTHON to what it prints)\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok AuthenticationError"), "{stdout}");
    gw.stop().await;
}
