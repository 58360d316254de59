//! Reading stored events back from rows.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use crate::canonical::Hash32;
use crate::chain::SealedEvent;
use crate::error::AuditError;
use crate::event::{Checkpoint, Decision, EventKind, IndexFields};
use crate::ids::{KeyId, PolicyRef, RequestId, StreamId, TenantId};

/// The columns every event query selects, as a literal for `concat!`.
macro_rules! event_columns {
    () => {
        "event_id, stream_id, seq, recorded_at, occurred_at, tenant_id, key_id, request_id, model, \
         policy_id, policy_version, trace_id, kind, checkpoint, decision, categories, body, \
         prev_hash, hash"
    };
}
pub(crate) use event_columns;

/// The columns every event query selects, in [`event_from_row`]'s order.
pub const EVENT_COLUMNS: &str = event_columns!();

/// Rebuilds a stored event from a row of [`EVENT_COLUMNS`].
pub fn event_from_row(row: &PgRow) -> Result<SealedEvent, AuditError> {
    let event_id: Uuid = row.try_get("event_id")?;
    let bad = |reason: String| AuditError::Malformed { event_id, reason };
    let kind: String = row.try_get("kind")?;
    let checkpoint: Option<String> = row.try_get("checkpoint")?;
    let decision: Option<String> = row.try_get("decision")?;
    let index = IndexFields {
        kind: EventKind::parse(&kind).ok_or_else(|| bad(format!("kind {kind:?}")))?,
        checkpoint: match checkpoint {
            Some(c) => Some(Checkpoint::parse(&c).ok_or_else(|| bad(format!("checkpoint {c:?}")))?),
            None => None,
        },
        decision: match decision {
            Some(d) => Some(Decision::parse(&d).ok_or_else(|| bad(format!("decision {d:?}")))?),
            None => None,
        },
        categories: row.try_get("categories")?,
    };
    let policy_id: Option<String> = row.try_get("policy_id")?;
    let policy_version: Option<String> = row.try_get("policy_version")?;
    let policy = match (policy_id, policy_version) {
        (Some(id), Some(version)) => Some(PolicyRef { id, version }),
        (None, None) => None,
        _ => return Err(bad("policy id without version".into())),
    };
    let hash = |col: &str| -> Result<Hash32, AuditError> {
        let bytes: Vec<u8> = row.try_get(col)?;
        Hash32::from_slice(&bytes).ok_or_else(|| bad(format!("{col} is not 32 bytes")))
    };
    let id_err = |e: AuditError| bad(e.to_string());
    let key_id: Option<String> = row.try_get("key_id")?;
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
    let occurred_at: DateTime<Utc> = row.try_get("occurred_at")?;
    Ok(SealedEvent {
        event_id,
        stream_id: StreamId(row.try_get("stream_id")?),
        seq: row.try_get("seq")?,
        recorded_at,
        occurred_at,
        tenant_id: TenantId::new(row.try_get::<String, _>("tenant_id")?).map_err(id_err)?,
        key_id: key_id.map(KeyId::new).transpose().map_err(id_err)?,
        request_id: RequestId::new(row.try_get::<String, _>("request_id")?).map_err(id_err)?,
        model: row.try_get("model")?,
        policy,
        trace_id: row.try_get("trace_id")?,
        body: row.try_get("body")?,
        index,
        prev_hash: hash("prev_hash")?,
        hash: hash("hash")?,
    })
}
