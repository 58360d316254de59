//! Applying the migrations and keeping monthly partitions ahead.

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::PgPool;

use crate::error::AuditError;

/// The embedded migrations of `migrations/` (the gateway's `warden migrate`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Months of partitions created ahead of the current one.
pub const DEFAULT_PARTITIONS_AHEAD: u32 = 2;

/// Applies every pending migration, then creates the partitions for this
/// month and the next [`DEFAULT_PARTITIONS_AHEAD`]. Needs a role that may
/// create tables and, on first run, roles (`CREATEROLE`).
pub async fn migrate(pool: &PgPool) -> Result<(), AuditError> {
    MIGRATOR.run(pool).await?;
    ensure_partitions(pool, Utc::now(), DEFAULT_PARTITIONS_AHEAD).await?;
    Ok(())
}

/// Creates the monthly partitions from the month of `from` to `months_ahead`
/// months later (those missing); returns how many were created.
pub async fn ensure_partitions<'c>(
    db: impl sqlx::PgExecutor<'c>,
    from: DateTime<Utc>,
    months_ahead: u32,
) -> Result<i32, AuditError> {
    let months = i32::try_from(months_ahead).unwrap_or(i32::MAX);
    let created: i32 = sqlx::query_scalar("SELECT audit_ensure_partitions($1, $2)")
        .bind(from)
        .bind(months)
        .fetch_one(db)
        .await?;
    Ok(created)
}
