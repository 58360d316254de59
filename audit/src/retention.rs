//! Retention: dropping whole monthly partitions behind checkpoints.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::error::AuditError;

/// What [`prune`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Events recorded before this instant (the start of the UTC month of
    /// the requested date) were removed.
    pub cutoff: DateTime<Utc>,
    /// Monthly partitions dropped.
    pub partitions_dropped: i32,
    /// Checkpoints recorded (one per stream with pruned events).
    pub checkpoints_recorded: i32,
    /// Rows removed from the default partition.
    pub default_rows_deleted: i64,
}

/// Removes every event recorded before the start of the UTC month of
/// `before` (`warden audit prune --before DATE`), recording per stream the
/// last pruned link so [`crate::verify`] keeps working. Runs the
/// `audit_prune` database function, so the role needs `warden_retention`
/// (or ownership of the schema).
pub async fn prune(pool: &PgPool, before: DateTime<Utc>) -> Result<PruneReport, AuditError> {
    let row = sqlx::query(
        "SELECT cutoff, partitions_dropped, checkpoints_recorded, default_rows_deleted FROM audit_prune($1)",
    )
    .bind(before)
    .fetch_one(pool)
    .await?;
    Ok(PruneReport {
        cutoff: row.try_get("cutoff")?,
        partitions_dropped: row.try_get("partitions_dropped")?,
        checkpoints_recorded: row.try_get("checkpoints_recorded")?,
        default_rows_deleted: row.try_get("default_rows_deleted")?,
    })
}
