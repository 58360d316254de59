//! Command-line interface: one module per command group.

mod inference;

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Warden: a safety-guarded, OpenAI-compatible gateway for Llama models.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tokenize text from stdin; prints a JSON array of token ids.
    Tokenize(inference::TokenizeArgs),
    /// Chat templates.
    #[command(subcommand)]
    Template(inference::TemplateCommand),
    /// Generate a reply to a conversation (or a raw prompt) from stdin.
    Generate(inference::GenerateArgs),
    /// Teacher-forced logits for a JSON array of token ids from stdin.
    Logits(inference::LogitsArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Tokenize(args) => inference::tokenize(args),
        Command::Template(cmd) => inference::template(cmd),
        Command::Generate(args) => inference::generate(args),
        Command::Logits(args) => inference::logits(args),
    }
}

/// All of stdin as a string.
fn read_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading stdin")?;
    Ok(s)
}
