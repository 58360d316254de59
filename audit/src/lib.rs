//! Warden's audit trail in PostgreSQL.
//!
//! - [`event`]: what the gateway records ([`RequestContext`], [`EventBody`] and its records).
//! - [`chain`] and [`canonical`]: the canonical form and per-stream hash chains.
//! - [`writer`]: the batching writer off the request path, with its disk [`spool`].
//! - [`schema`]: migrations and partitions.
//!
//! See `audit/README.md` for the schema, the append-only rules and the canonical form.

pub mod canonical;
pub mod chain;
mod connections;
pub mod error;
pub mod event;
pub mod export;
pub mod ids;
pub mod keys;
pub mod query;
pub mod retention;
pub mod rows;
pub mod schema;
pub mod spool;
pub mod store;
pub mod verify;
pub mod writer;

pub use canonical::Hash32;
pub use chain::{ChainState, SealedEvent};
pub use error::AuditError;
pub use event::{
    AuditEvent, Checkpoint, Content, Decision, DecisionRecord, Direction, Endpoint, EventBody,
    EventKind, GuardBackend, GuardVerdictRecord, IndexFields, MessageRecord, NotRunReason,
    PolicyText, RequestContext, RequestStarted, Role, Timings, TokenCounts, ToolCallRecord,
    ToolOutcome, Validation, VerdictResult,
};
pub use export::{export, export_to, export_to_with_progress, ExportFormat};
pub use ids::{InstanceId, KeyId, PolicyRef, RequestId, StreamId, TenantId};
pub use keys::{
    authenticate, create_api_key, list_api_keys, revoke_api_key, ApiKeyInfo, NewApiKey,
};
pub use query::{
    count_events, daily_stats, list_events, request_events, Cursor, DailyCount, EventFilter,
    EventPage,
};
pub use retention::{prune, PruneReport};
pub use schema::{ensure_partitions, migrate, MIGRATOR};
pub use verify::{verify, ChainBreak, ChainProblem, VerifyReport};
pub use writer::{
    AuditHandle, AuditHealth, AuditWriter, Durable, FlushReport, SpawnedWriter, WriterConfig,
    WriterMetrics,
};
