//! `warden guard prompt` and `warden guard parse`: the guard prompt and
//! verdict grammar from the command line (formats are a contract).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use warden_guard::{parse_code_list, parse_verdict, render_fixture_input};
use warden_policies::taxonomy::GuardVariant;

use super::read_stdin;

/// `warden guard ...`.
#[derive(Debug, Subcommand)]
pub enum GuardCommand {
    /// Print the exact guard prompt for a fixture-shaped JSON input on stdin.
    Prompt(PromptArgs),
    /// Parse a raw guard model output on stdin; print the verdict as JSON.
    Parse(ParseArgs),
}

/// Arguments of `warden guard prompt`.
#[derive(Debug, Args)]
pub struct PromptArgs {
    /// `llama-guard-3-8b` or `llama-guard-3-1b`.
    #[arg(long)]
    variant: GuardVariant,
}

/// Arguments of `warden guard parse`.
#[derive(Debug, Args)]
pub struct ParseArgs {
    /// The category codes the prompt listed, e.g. `S1,S2,S10`.
    #[arg(long)]
    allowed: String,
}

/// Runs a guard command.
pub fn run(cmd: GuardCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GuardCommand::Prompt(args) => {
            let input: serde_json::Value =
                serde_json::from_str(&read_stdin()?).context("stdin is not JSON")?;
            match render_fixture_input(args.variant, &input) {
                Ok(prompt) => {
                    print!("{prompt}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        GuardCommand::Parse(args) => {
            let allowed = parse_code_list(&args.allowed).context("--allowed")?;
            match parse_verdict(&read_stdin()?, &allowed) {
                Ok(verdict) => {
                    println!("{}", serde_json::to_string(&verdict)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
