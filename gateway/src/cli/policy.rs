//! `warden policy check DIR` and `warden policy explain`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use warden_policies::{check_dir, load_dir, KnownNames, RequestScope};

use crate::config::Config;

/// `warden policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory as the gateway would.
    Check(CheckArgs),
    /// Print the effective policy of a request and where each setting came from.
    Explain(ExplainArgs),
}

/// Where the names policies may reference come from.
#[derive(Debug, Args)]
pub struct NameSource {
    /// Gateway configuration whose guard backends and tools policies may name
    /// (default: ./warden.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A guard backend name policies may use (repeatable; added to the config's).
    #[arg(long = "backend")]
    backends: Vec<String>,
    /// A tool name policies may use (repeatable).
    #[arg(long = "tool")]
    tools: Vec<String>,
}

/// Arguments of `warden policy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy directory.
    dir: PathBuf,
    #[command(flatten)]
    names: NameSource,
}

/// Arguments of `warden policy explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The policy directory (default: the config's `policies.dir`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The caller's tenant.
    #[arg(long)]
    tenant: String,
    /// The caller's key id.
    #[arg(long)]
    key: String,
    /// The model.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    names: NameSource,
}

impl NameSource {
    fn resolve(&self) -> anyhow::Result<(KnownNames, Option<PathBuf>)> {
        let path = self.config.clone().or_else(|| {
            let p = PathBuf::from("warden.toml");
            p.exists().then_some(p)
        });
        let mut known = KnownNames::new(self.backends.iter().cloned(), self.tools.iter().cloned());
        let mut dir = None;
        if let Some(path) = path {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let config = Config::parse(&path, &text, std::env::vars())?;
            known
                .backends
                .extend(config.guards.iter().map(|g| g.name.clone()));
            known.tools.extend(config.policies.tools.iter().cloned());
            known
                .tools
                .extend(config.tools.iter().map(|t| t.name.clone()));
            let base = path.parent().unwrap_or(Path::new("."));
            dir = Some(base.join(&config.policies.dir));
        }
        Ok((known, dir))
    }
}

/// Runs a policy command.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check(args) => {
            let (known, _) = args.names.resolve()?;
            let report = check_dir(&args.dir, &known);
            println!("{report}");
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PolicyCommand::Explain(args) => {
            let (known, config_dir) = args.names.resolve()?;
            let dir = args
                .dir
                .or(config_dir)
                .ok_or_else(|| anyhow::anyhow!("give --dir or --config"))?;
            let set = match load_dir(&dir, &known) {
                Ok(set) => set,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let scope = RequestScope::new(&args.tenant, &args.key, &args.model);
            print!("{}", set.explain(&scope));
            Ok(ExitCode::SUCCESS)
        }
    }
}
