//! Tenant-scoped queries: event lists with filters and cursors, one
//! request's whole story, and daily statistics.

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

use crate::chain::SealedEvent;
use crate::error::AuditError;
use crate::event::{Checkpoint, Decision, EventKind};
use crate::ids::{KeyId, RequestId, TenantId};
use crate::rows::{event_columns, event_from_row};

/// Most events one page returns.
pub const MAX_PAGE: u32 = 1_000;

/// Filters for event lists and exports; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Events at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Events before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only this kind.
    pub kind: Option<EventKind>,
    /// Only decision events with this decision.
    pub decision: Option<Decision>,
    /// Only events of this guard checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// Only events naming this category.
    pub category: Option<String>,
    /// Only events of requests to this model or agent (matched on each
    /// request's `request` event, where model and key are indexed).
    pub model: Option<String>,
    /// Only events of requests made with this key.
    pub key_id: Option<KeyId>,
    /// Only events of this request.
    pub request_id: Option<RequestId>,
}

/// Where the next page starts (opaque to callers; `Display`/`FromStr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    occurred_at: DateTime<Utc>,
    event_id: Uuid,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}",
            self.occurred_at.timestamp_micros(),
            self.event_id.simple()
        )
    }
}

impl FromStr for Cursor {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, AuditError> {
        let (micros, id) = s.split_once('_').ok_or(AuditError::InvalidCursor)?;
        let micros: i64 = micros.parse().map_err(|_| AuditError::InvalidCursor)?;
        Ok(Cursor {
            occurred_at: DateTime::from_timestamp_micros(micros)
                .ok_or(AuditError::InvalidCursor)?,
            event_id: Uuid::parse_str(id).map_err(|_| AuditError::InvalidCursor)?,
        })
    }
}

/// One page of events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventPage {
    /// The events.
    pub events: Vec<SealedEvent>,
    /// Cursor for the next (older) page, if there is one.
    #[serde(serialize_with = "ser_cursor")]
    pub next_cursor: Option<Cursor>,
}

fn ser_cursor<S: serde::Serializer>(c: &Option<Cursor>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.serialize_some(&c.to_string()),
        None => s.serialize_none(),
    }
}

/// Appends `WHERE tenant_id = … AND <filters>` to `qb`.
pub(crate) fn push_filter(qb: &mut QueryBuilder<Postgres>, tenant: &TenantId, f: &EventFilter) {
    qb.push(" WHERE tenant_id = ").push_bind(tenant.to_string());
    if let Some(from) = f.from {
        qb.push(" AND occurred_at >= ").push_bind(from);
    }
    if let Some(to) = f.to {
        qb.push(" AND occurred_at < ").push_bind(to);
    }
    if let Some(kind) = f.kind {
        qb.push(" AND kind = ").push_bind(kind.as_str());
    }
    if let Some(decision) = f.decision {
        qb.push(" AND decision = ").push_bind(decision.as_str());
    }
    if let Some(checkpoint) = f.checkpoint {
        qb.push(" AND checkpoint = ").push_bind(checkpoint.as_str());
    }
    if let Some(category) = &f.category {
        // The second clause lets the planner use the partial GIN index.
        qb.push(" AND categories @> ARRAY[")
            .push_bind(category.clone())
            .push("]::text[] AND categories <> '{}'");
    }
    if let Some(model) = &f.model {
        qb.push(" AND model = ").push_bind(model.clone());
        push_request_match(qb, tenant, "model", model.clone());
    }
    if let Some(key) = &f.key_id {
        qb.push(" AND key_id = ").push_bind(key.to_string());
        push_request_match(qb, tenant, "key_id", key.to_string());
    }
    if let Some(request) = &f.request_id {
        qb.push(" AND request_id = ").push_bind(request.to_string());
    }
}

/// Narrows to requests whose `request` event has `column = value`: model
/// and key are indexed on request events only (migration
/// `20251129000001`), and every event of a request shares them.
fn push_request_match(
    qb: &mut QueryBuilder<Postgres>,
    tenant: &TenantId,
    column: &'static str,
    value: String,
) {
    qb.push(" AND request_id IN (SELECT r.request_id FROM audit_events r WHERE r.tenant_id = ")
        .push_bind(tenant.to_string())
        .push(" AND r.kind = 'request' AND r.")
        .push(column)
        .push(" = ")
        .push_bind(value)
        .push(")");
}

/// How many of the tenant's events match `filter` (an export's total, for
/// a progress bar).
pub async fn count_events(
    pool: &PgPool,
    tenant: &TenantId,
    filter: &EventFilter,
) -> Result<u64, AuditError> {
    let mut qb = QueryBuilder::new("SELECT count(*) FROM audit_events");
    push_filter(&mut qb, tenant, filter);
    let n: i64 = qb.build_query_scalar().fetch_one(pool).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Lists the tenant's events matching `filter`, newest first, `limit`
/// (at most [`MAX_PAGE`]) per page, continuing after `cursor`.
pub async fn list_events(
    pool: &PgPool,
    tenant: &TenantId,
    filter: &EventFilter,
    cursor: Option<&Cursor>,
    limit: u32,
) -> Result<EventPage, AuditError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut qb = QueryBuilder::new(concat!("SELECT ", event_columns!(), " FROM audit_events"));
    push_filter(&mut qb, tenant, filter);
    if let Some(c) = cursor {
        qb.push(" AND (occurred_at, event_id) < (")
            .push_bind(c.occurred_at)
            .push(", ")
            .push_bind(c.event_id)
            .push(")");
    }
    qb.push(" ORDER BY occurred_at DESC, event_id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let rows = qb.build().fetch_all(pool).await?;
    let mut events = rows
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if events.len() > limit as usize {
        events.truncate(limit as usize);
        events.last().map(|e| Cursor {
            occurred_at: e.occurred_at,
            event_id: e.event_id,
        })
    } else {
        None
    };
    Ok(EventPage {
        events,
        next_cursor,
    })
}

/// The whole story of one request of the tenant, in the order it was
/// recorded; `None` when the tenant has no such request (answer 404, also
/// for other tenants' requests).
pub async fn request_events(
    pool: &PgPool,
    tenant: &TenantId,
    request_id: &RequestId,
) -> Result<Option<Vec<SealedEvent>>, AuditError> {
    let sql = concat!(
        "SELECT ",
        event_columns!(),
        " FROM audit_events WHERE tenant_id = $1 AND request_id = $2 ORDER BY recorded_at, stream_id, seq"
    );
    let events = sqlx::query(sql)
        .bind(tenant.as_str())
        .bind(request_id.as_str())
        .fetch(pool)
        .map_err(AuditError::from)
        .and_then(|row| async move { event_from_row(&row) })
        .try_collect::<Vec<_>>()
        .await?;
    Ok((!events.is_empty()).then_some(events))
}

/// Decisions counted per UTC day; `category` is `None` for the count of
/// all decisions of that kind, `Some` for those naming the category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyCount {
    /// The UTC day.
    pub day: NaiveDate,
    /// The decision.
    pub decision: Decision,
    /// The category, or `None` for the total.
    pub category: Option<String>,
    /// How many.
    pub count: i64,
}

/// Counts of the tenant's decisions by decision and category per day in `[from, to)`.
pub async fn daily_stats(
    pool: &PgPool,
    tenant: &TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DailyCount>, AuditError> {
    let rows = sqlx::query(
        "SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, decision, NULL::text AS category, count(*) AS n \
         FROM audit_events \
         WHERE tenant_id = $1 AND kind = 'decision' AND occurred_at >= $2 AND occurred_at < $3 \
         GROUP BY 1, 2 \
         UNION ALL \
         SELECT (occurred_at AT TIME ZONE 'UTC')::date, decision, c, count(*) \
         FROM audit_events, unnest(categories) AS c \
         WHERE tenant_id = $1 AND kind = 'decision' AND occurred_at >= $2 AND occurred_at < $3 \
         GROUP BY 1, 2, 3 \
         ORDER BY 1, 2, 3 NULLS FIRST",
    )
    .bind(tenant.as_str())
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let decision: String = row.try_get("decision")?;
            Ok(DailyCount {
                day: row.try_get("day")?,
                decision: Decision::parse(&decision).ok_or_else(|| AuditError::Malformed {
                    event_id: Uuid::nil(),
                    reason: format!("decision {decision:?}"),
                })?,
                category: row.try_get("category")?,
                count: row.try_get("n")?,
            })
        })
        .collect()
}
