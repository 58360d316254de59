//! `warden serve --config warden.toml`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::Config;

/// Arguments of `warden serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (`WARDEN_*` variables and `DATABASE_URL` override it).
    #[arg(long, env = "WARDEN_CONFIG", default_value = "warden.toml")]
    config: PathBuf,
}

/// Runs the gateway until SIGINT/SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let telemetry = match crate::telemetry::install(&config.server, &config.telemetry, |k| {
        std::env::var(k).ok()
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let served = actix_web::rt::System::new().block_on(crate::server::serve(config));
    // Outside the runtime: the last spans are flushed with a blocking call.
    telemetry.shutdown();
    served?;
    Ok(ExitCode::SUCCESS)
}
