//! Runs the real `warden` binary for the CLI tests.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `warden ARGS` with `stdin` as its standard input.
#[allow(dead_code)] // each test binary includes this module; not all call it
pub fn warden(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `warden ARGS --database-url URL` and asserts that it succeeded.
#[allow(dead_code)] // each test binary includes this module; not all call it
pub fn warden_db(args: &[&str], url: &str) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .args(["--database-url", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "warden {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
