//! Command-line interface: one module per command group.

mod bench;
mod db;
mod guard;
mod inference;
mod policy;
mod serve;

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
    /// Run the gateway.
    Serve(serve::ServeArgs),
    /// Judge a text or a JSON conversation with the local guard model.
    Classify(guard::ClassifyArgs),
    /// Guard prompts and verdicts.
    #[command(subcommand)]
    Guard(guard::GuardCommand),
    /// Policy directories.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Apply the PostgreSQL migrations.
    Migrate(db::DbArgs),
    /// API keys.
    #[command(subcommand)]
    Keys(db::KeysCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(db::AuditCommand),
    /// Measure inference speed on this machine (prefill, decode, guard pass, streams).
    Bench(bench::BenchArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Tokenize(args) => inference::tokenize(args),
        Command::Template(cmd) => inference::template(cmd),
        Command::Generate(args) => inference::generate(args),
        Command::Logits(args) => inference::logits(args),
        Command::Serve(args) => serve::run(args),
        Command::Classify(args) => guard::classify(args),
        Command::Guard(cmd) => guard::run(cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Migrate(args) => db::migrate(args),
        Command::Keys(cmd) => db::keys(cmd),
        Command::Audit(cmd) => db::audit(cmd),
        Command::Bench(args) => bench::run(args),
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
