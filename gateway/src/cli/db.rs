//! `warden migrate`, `warden keys create`, `warden audit verify | export |
//! prune`: thin shims over warden-audit.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::PgPool;
use warden_audit::{EventFilter, ExportFormat, TenantId};

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
    /// Export one tenant's events, oldest first, as JSON Lines or CSV.
    Export(ExportArgs),
    /// Drop whole monthly partitions before a date, recording checkpoints.
    Prune(PruneArgs),
}

/// Arguments of `warden audit export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The tenant whose events are exported.
    #[arg(long)]
    tenant: String,
    /// Events at or after this time (RFC 3339, or YYYY-MM-DD for UTC midnight).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Events before this time (RFC 3339, or YYYY-MM-DD for UTC midnight).
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Write to this file (with a progress bar on stderr) instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    db: DbArgs,
}

/// Export formats on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// JSON Lines: one stored event per line.
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// Arguments of `warden audit prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove events recorded before the start of this date's UTC month
    /// (RFC 3339, or YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    before: DateTime<Utc>,
    #[command(flatten)]
    db: DbArgs,
}

/// An RFC 3339 time, or a date meaning its UTC midnight.
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(NaiveTime::MIN).and_utc())
        .map_err(|_| format!("{s:?} is neither RFC 3339 nor YYYY-MM-DD"))
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
    match cmd {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Export(args) => export(args),
        AuditCommand::Prune(args) => prune(args),
    }
}

/// `warden audit verify`.
fn verify(args: DbArgs) -> anyhow::Result<ExitCode> {
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

/// `warden audit export`.
fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let pool = args.db.pool().await?;
        let tenant = TenantId::new(args.tenant.clone()).context("--tenant")?;
        let filter = EventFilter {
            from: args.since,
            to: args.until,
            ..EventFilter::default()
        };
        let format = match args.format {
            Format::Jsonl => ExportFormat::JsonLines,
            Format::Csv => ExportFormat::Csv,
        };
        let Some(path) = &args.output else {
            let out = tokio::io::BufWriter::new(tokio::io::stdout());
            warden_audit::export_to(pool, tenant, filter, format, out).await?;
            return Ok(ExitCode::SUCCESS);
        };
        let total = warden_audit::count_events(&pool, &tenant, &filter).await?;
        let file = tokio::fs::File::create(path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template(
            "{wide_bar} {pos}/{len} events, {per_sec}, {eta} left",
        )?);
        let out = tokio::io::BufWriter::new(file);
        let written =
            warden_audit::export_to_with_progress(pool, tenant, filter, format, out, |n| {
                bar.set_position(n)
            })
            .await?;
        bar.finish_and_clear();
        eprintln!("exported {written} events to {}", path.display());
        Ok(ExitCode::SUCCESS)
    })
}

/// `warden audit prune`.
fn prune(args: PruneArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let pool = args.db.pool().await?;
        let report = warden_audit::prune(&pool, args.before).await?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(ExitCode::SUCCESS)
    })
}
