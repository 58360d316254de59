//! `warden bench`: the inference benchmark on this machine (see
//! `warden_inference::bench`), with a progress bar while it runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use warden_inference::bench::{run_with_progress_bar, BenchConfig};

/// Arguments of `warden bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model file (GGUF); default: the bundled SmolLM2-135M in
    /// `$WARDEN_MODEL_DIR` or `~/.cache/warden/models`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Thread counts to measure at, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Concurrent streams for the aggregate figure (0 skips it).
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Repetitions of each measurement; the best is reported.
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// Print the report (with the exact prompt token ids) as JSON.
    #[arg(long)]
    json: bool,
}

fn bundled_model() -> PathBuf {
    let dir = std::env::var_os("WARDEN_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/warden/models")
        });
    dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Runs the benchmark and prints the report.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.threads.is_empty() || args.threads.contains(&0) {
        anyhow::bail!("--threads takes positive counts, e.g. 1,2");
    }
    let mut config = BenchConfig::new(args.model.unwrap_or_else(bundled_model));
    config.threads = args.threads;
    config.streams = args.streams;
    config.repeats = args.repeats.max(1);
    let report = run_with_progress_bar(&config)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
