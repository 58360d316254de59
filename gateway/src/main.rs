//! The `warden` command: the gateway server and its tools.

use std::process::ExitCode;

use clap::Parser;
use warden_gateway::cli;

// Requests allocate many small, short-lived values across worker threads;
// mimalloc serves them with less CPU than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
