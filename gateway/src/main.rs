//! The `warden` command: the gateway server and its tools.

use std::process::ExitCode;

use clap::Parser;
use warden_gateway::cli;

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
