//! `warden migrate`, `warden keys create`, `warden audit verify`: thin
//! shims over warden-audit.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use sqlx::PgPool;
use warden_audit::TenantId;

use crate::config::Config;

/// Where the database is.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// PostgreSQL URL (default: `DATABASE_URL`, else the config's `database.url`).
    #[arg(long)]
    database_url: Option<String>,
    /// Gateway configuration to take `database.url` from.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// `warden keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for a tenant; the key is printed once and never stored.
    Create(CreateKeyArgs),
}

/// Arguments of `warden keys create`.
#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// The tenant the key belongs to.
    #[arg(long)]
    tenant: String,
    /// The key may use admin routes.
    #[arg(long)]
    admin: bool,
    /// A label for people.
    #[arg(long)]
    label: Option<String>,
    #[command(flatten)]
    db: DbArgs,
}

/// `warden audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every hash chain; exit 1 and name the first broken link if any.
    Verify(DbArgs),
}

impl DbArgs {
    fn url(&self) -> anyhow::Result<String> {
        if let Some(u) = &self.database_url {
            return Ok(u.clone());
        }
        if let Ok(u) = std::env::var("DATABASE_URL") {
            return Ok(u);
        }
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from("warden.toml"));
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            let config = Config::parse(&path, &text, std::env::vars())?;
            if let Some(u) = config.database.url {
                return Ok(u);
            }
        }
        anyhow::bail!(
            "no database: give --database-url, set DATABASE_URL or database.url in the config"
        )
    }

    async fn pool(&self) -> anyhow::Result<PgPool> {
        let url = self.url()?;
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .context("connecting to PostgreSQL")
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `warden migrate`.
pub fn migrate(args: DbArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let pool = args.pool().await?;
        warden_audit::migrate(&pool).await?;
        println!("migrations applied");
        Ok(ExitCode::SUCCESS)
    })
}

/// `warden keys ...`.
pub fn keys(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let KeysCommand::Create(args) = cmd;
    runtime()?.block_on(async {
        let pool = args.db.pool().await?;
        let tenant = TenantId::new(args.tenant.clone()).context("--tenant")?;
        let key =
            warden_audit::create_api_key(&pool, &tenant, args.admin, args.label.as_deref()).await?;
        eprintln!(
            "created key {} for tenant {} (shown once; only its SHA-256 is stored)",
            key.key_id.as_str(),
            tenant.as_str()
        );
        println!("{}", key.secret);
        Ok(ExitCode::SUCCESS)
    })
}

/// `warden audit ...`.
pub fn audit(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify(args) = cmd;
    runtime()?.block_on(async {
        let pool = args.pool().await?;
        let report = warden_audit::verify(&pool).await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(if report.is_intact() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
