//! Writing records into PostgreSQL: idempotent multi-row inserts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::chain::SealedEvent;
use crate::event::PolicyText;
use crate::ids::{InstanceId, StreamId};

/// A writer stream's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// The stream.
    pub stream_id: StreamId,
    /// The gateway instance that writes it.
    pub instance_id: InstanceId,
    /// When the writer started.
    pub started_at: DateTime<Utc>,
}

/// One unit the writer persists (to PostgreSQL or to the spool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// A stream started.
    Stream(StreamRecord),
    /// A chained event.
    Event(Box<SealedEvent>),
    /// A policy text.
    Policy(PolicyText),
}

impl Record {
    /// The record's time, for spool age.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        match self {
            Record::Stream(s) => Some(s.started_at),
            Record::Event(e) => Some(e.recorded_at),
            Record::Policy(_) => None,
        }
    }
}

const INSERT_EVENTS: &str = r#"
INSERT INTO audit_events (event_id, stream_id, seq, recorded_at, occurred_at, tenant_id, key_id,
    request_id, model, policy_id, policy_version, trace_id, kind, checkpoint, decision, categories,
    body, prev_hash, hash)
SELECT e, s, q, r, o, t, k, rq, m, pi, pv, tr, kd, cp, d,
       ARRAY(SELECT jsonb_array_elements_text(c::jsonb)), b::jsonb, ph, h
FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::timestamptz[], $5::timestamptz[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::text[], $15::text[], $16::text[], $17::text[], $18::bytea[], $19::bytea[])
     AS x(e, s, q, r, o, t, k, rq, m, pi, pv, tr, kd, cp, d, c, b, ph, h)
ON CONFLICT (stream_id, seq, recorded_at) DO NOTHING
"#;

/// Inserts `records` in one transaction. Every insert is idempotent (events
/// by (stream, seq), streams by id, policies by (id, version)), so a replay
/// after a crash stores each record exactly once.
pub async fn insert_records(pool: &PgPool, records: &[Record]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for record in records {
        match record {
            Record::Stream(s) => {
                sqlx::query(
                    "INSERT INTO audit_streams (stream_id, instance_id, started_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (stream_id) DO NOTHING",
                )
                .bind(s.stream_id.0)
                .bind(s.instance_id.as_str())
                .bind(s.started_at)
                .execute(&mut *tx)
                .await?;
            }
            Record::Policy(p) => {
                let digest = sha2::Sha256::digest(p.body.as_bytes()).to_vec();
                sqlx::query(
                    "INSERT INTO audit_policies (policy_id, version, body, body_sha256) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (policy_id, version) DO NOTHING",
                )
                .bind(&p.policy.id)
                .bind(&p.policy.version)
                .bind(p.body.replace('\0', "\u{FFFD}"))
                .bind(digest)
                .execute(&mut *tx)
                .await?;
            }
            Record::Event(_) => {}
        }
    }
    let events: Vec<&SealedEvent> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(&**e),
            _ => None,
        })
        .collect();
    if !events.is_empty() {
        insert_events(&mut tx, &events).await?;
    }
    tx.commit().await
}

use sha2::Digest as _;

async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    events: &[&SealedEvent],
) -> Result<(), sqlx::Error> {
    let n = events.len();
    let mut event_id: Vec<Uuid> = Vec::with_capacity(n);
    let mut stream_id: Vec<Uuid> = Vec::with_capacity(n);
    let mut seq: Vec<i64> = Vec::with_capacity(n);
    let mut recorded_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut occurred_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut tenant: Vec<String> = Vec::with_capacity(n);
    let mut key: Vec<Option<String>> = Vec::with_capacity(n);
    let mut request: Vec<String> = Vec::with_capacity(n);
    let mut model: Vec<Option<String>> = Vec::with_capacity(n);
    let mut policy_id: Vec<Option<String>> = Vec::with_capacity(n);
    let mut policy_version: Vec<Option<String>> = Vec::with_capacity(n);
    let mut trace: Vec<Option<String>> = Vec::with_capacity(n);
    let mut kind: Vec<String> = Vec::with_capacity(n);
    let mut checkpoint: Vec<Option<String>> = Vec::with_capacity(n);
    let mut decision: Vec<Option<String>> = Vec::with_capacity(n);
    let mut categories: Vec<String> = Vec::with_capacity(n);
    let mut body: Vec<String> = Vec::with_capacity(n);
    let mut prev_hash: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut hash: Vec<Vec<u8>> = Vec::with_capacity(n);
    for e in events {
        event_id.push(e.event_id);
        stream_id.push(e.stream_id.0);
        seq.push(e.seq);
        recorded_at.push(e.recorded_at);
        occurred_at.push(e.occurred_at);
        tenant.push(e.tenant_id.to_string());
        key.push(e.key_id.as_ref().map(ToString::to_string));
        request.push(e.request_id.to_string());
        model.push(e.model.clone());
        policy_id.push(e.policy.as_ref().map(|p| p.id.clone()));
        policy_version.push(e.policy.as_ref().map(|p| p.version.clone()));
        trace.push(e.trace_id.clone());
        kind.push(e.index.kind.as_str().to_owned());
        checkpoint.push(e.index.checkpoint.map(|c| c.as_str().to_owned()));
        decision.push(e.index.decision.map(|d| d.as_str().to_owned()));
        categories.push(serde_json::to_string(&e.index.categories).unwrap_or_else(|_| "[]".into()));
        body.push(e.body.to_string());
        prev_hash.push(e.prev_hash.0.to_vec());
        hash.push(e.hash.0.to_vec());
    }
    sqlx::query(INSERT_EVENTS)
        .bind(event_id)
        .bind(stream_id)
        .bind(seq)
        .bind(recorded_at)
        .bind(occurred_at)
        .bind(tenant)
        .bind(key)
        .bind(request)
        .bind(model)
        .bind(policy_id)
        .bind(policy_version)
        .bind(trace)
        .bind(kind)
        .bind(checkpoint)
        .bind(decision)
        .bind(categories)
        .bind(body)
        .bind(prev_hash)
        .bind(hash)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
