//! The crate's error type.

use uuid::Uuid;

/// Everything that can go wrong in the audit crate.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A database call failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Reading or writing the spool file failed.
    #[error("spool {path}: {source}")]
    Spool {
        /// The spool file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A value could not be turned into JSON or back.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// An identifier (tenant, key, request, …) is not acceptable.
    #[error("invalid {what}: {reason}")]
    InvalidId {
        /// Which kind of identifier.
        what: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A pagination cursor could not be parsed.
    #[error("invalid cursor")]
    InvalidCursor,
    /// A stored row holds a value this version does not understand.
    #[error("stored event {event_id} is malformed: {reason}")]
    Malformed {
        /// The event.
        event_id: Uuid,
        /// What is wrong with it.
        reason: String,
    },
    /// The writer has shut down; nothing more can be recorded.
    #[error("audit writer is closed")]
    WriterClosed,
    /// An I/O error while writing an export.
    #[error("export i/o: {0}")]
    Io(#[from] std::io::Error),
}
