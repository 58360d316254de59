//! Policy YAML: any document is parsed and validated (as the loader does
//! for a policy directory) without panicking; a refusal names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_policies::load::{check_dir, parse_document};
use warden_policies::KnownNames;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_document(std::path::Path::new("fuzz.yaml"), text);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fuzz.yaml"), text).unwrap();
    let report = check_dir(
        dir.path(),
        &KnownNames::new(["llama-guard"], ["calculator"]),
    );
    // Every refusal names the file (or, for directory-wide errors, the
    // directory) it is about.
    for error in &report.errors {
        assert!(error.file.starts_with(dir.path()), "{error}");
    }
});
