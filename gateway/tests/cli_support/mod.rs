//! Runs the real `warden` binary for the CLI tests.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `warden ARGS` with `stdin` as its standard input.
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
