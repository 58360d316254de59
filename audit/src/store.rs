//! Writing records into PostgreSQL: idempotent binary COPY batches.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
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

/// The event columns in the order the COPY rows carry them.
const EVENT_COLUMNS: &str = "event_id, stream_id, seq, recorded_at, occurred_at, tenant_id, key_id, \
    request_id, model, policy_id, policy_version, trace_id, kind, checkpoint, decision, categories, \
    body, prev_hash, hash";

/// Per-session staging table for batches that may hold already stored
/// events; emptied at every commit.
const CREATE_STAGE: &str = "CREATE TEMP TABLE IF NOT EXISTS audit_events_stage \
    (LIKE audit_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS";

/// Inserts `records` atomically. Every insert is idempotent (events by
/// (stream, seq), streams by id, policies by (id, version)), so a replay
/// after a crash may overlap what is already stored.
///
/// Events go in with one binary `COPY` straight into `audit_events` (the
/// fast path: a live batch never holds stored events). If that trips the
/// primary key, the batch is a replay overlapping what is already stored:
/// it goes again, through a temporary staging table and
/// `INSERT ... ON CONFLICT DO NOTHING`.
pub async fn insert_records(
    conn: &mut PgConnection,
    records: &[Record],
) -> Result<(), sqlx::Error> {
    let events: Vec<&SealedEvent> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(&**e),
            _ => None,
        })
        .collect();
    if events.is_empty() {
        let mut tx = conn.begin().await?;
        insert_meta(&mut tx, records).await?;
        return tx.commit().await;
    }
    let copy = encode_copy(&events)?;
    match copy_direct(conn, records, events.len(), &copy).await {
        Err(e) if is_unique_violation(&e) => insert_staged(conn, records, &copy).await,
        done => done,
    }
}

/// The fast path: `COPY` into `audit_events`, failing on a stored event.
async fn copy_direct(
    conn: &mut PgConnection,
    records: &[Record],
    events: usize,
    copy: &[u8],
) -> Result<(), sqlx::Error> {
    if events == records.len() {
        // Only events (every batch but a stream's first and a new policy's):
        // one COPY is atomic on its own, so no BEGIN and COMMIT round trips.
        copy_in(conn, "audit_events", copy).await?;
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    insert_meta(&mut tx, records).await?;
    copy_in(&mut tx, "audit_events", copy).await?;
    tx.commit().await
}

/// The replay path: events already stored are skipped.
async fn insert_staged(
    conn: &mut PgConnection,
    records: &[Record],
    copy: &[u8],
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    insert_meta(&mut tx, records).await?;
    sqlx::query(CREATE_STAGE).execute(&mut *tx).await?;
    copy_in(&mut tx, "audit_events_stage", copy).await?;
    sqlx::query(
        "INSERT INTO audit_events SELECT * FROM audit_events_stage \
         ON CONFLICT (stream_id, seq, recorded_at) DO NOTHING",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The stream and policy records of a batch (rare: one per writer start or
/// policy version), inserted idempotently.
async fn insert_meta(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    records: &[Record],
) -> Result<(), sqlx::Error> {
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
                .execute(&mut **tx)
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
                .execute(&mut **tx)
                .await?;
            }
            Record::Event(_) => {}
        }
    }
    Ok(())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Streams one binary COPY payload into `table`; returns the rows copied.
async fn copy_in(
    conn: &mut sqlx::PgConnection,
    table: &str,
    payload: &[u8],
) -> Result<u64, sqlx::Error> {
    let statement = format!("COPY {table} ({EVENT_COLUMNS}) FROM STDIN (FORMAT binary)");
    let mut copy = conn.copy_in_raw(&statement).await?;
    // On a send error the drop of `copy` tells the server to fail the COPY.
    copy.send(payload).await?;
    copy.finish().await
}

/// The multi-row `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT DO NOTHING`
/// the writer used before binary COPY; kept as the baseline the writer
/// benchmark compares against. Same guarantees as [`insert_records`].
pub async fn insert_records_multirow(pool: &PgPool, records: &[Record]) -> Result<(), sqlx::Error> {
    let events: Vec<&SealedEvent> = records
        .iter()
        .filter_map(|r| match r {
            Record::Event(e) => Some(&**e),
            _ => None,
        })
        .collect();
    let mut tx = pool.begin().await?;
    insert_meta(&mut tx, records).await?;
    if !events.is_empty() {
        insert_events_multirow(&mut tx, &events).await?;
    }
    tx.commit().await
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

async fn insert_events_multirow(
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

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
/// OID of PostgreSQL's `text` type, for array elements.
const TEXT_OID: i32 = 25;

/// Encodes events as a PostgreSQL binary COPY stream (header, one tuple per
/// event in [`EVENT_COLUMNS`] order, trailer).
pub fn encode_copy(events: &[&SealedEvent]) -> Result<Vec<u8>, sqlx::Error> {
    let mut out = Vec::with_capacity(64 + events.len() * 900);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for e in events {
        out.extend_from_slice(&19i16.to_be_bytes());
        field(&mut out, e.event_id.as_bytes())?;
        field(&mut out, e.stream_id.0.as_bytes())?;
        field(&mut out, &e.seq.to_be_bytes())?;
        field(&mut out, &pg_time(&e.recorded_at))?;
        field(&mut out, &pg_time(&e.occurred_at))?;
        field(&mut out, e.tenant_id.as_str().as_bytes())?;
        opt_field(&mut out, e.key_id.as_ref().map(|k| k.as_str()))?;
        field(&mut out, e.request_id.as_str().as_bytes())?;
        opt_field(&mut out, e.model.as_deref())?;
        opt_field(&mut out, e.policy.as_ref().map(|p| p.id.as_str()))?;
        opt_field(&mut out, e.policy.as_ref().map(|p| p.version.as_str()))?;
        opt_field(&mut out, e.trace_id.as_deref())?;
        field(&mut out, e.index.kind.as_str().as_bytes())?;
        opt_field(&mut out, e.index.checkpoint.map(|c| c.as_str()))?;
        opt_field(&mut out, e.index.decision.map(|d| d.as_str()))?;
        text_array(&mut out, &e.index.categories)?;
        jsonb(&mut out, &e.body)?;
        field(&mut out, &e.prev_hash.0)?;
        field(&mut out, &e.hash.0)?;
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(out)
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), sqlx::Error> {
    out.extend_from_slice(&len_i32(bytes.len())?.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn opt_field(out: &mut Vec<u8>, text: Option<&str>) -> Result<(), sqlx::Error> {
    match text {
        Some(t) => field(out, t.as_bytes()),
        None => {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            Ok(())
        }
    }
}

fn pg_time(t: &DateTime<Utc>) -> [u8; 8] {
    (t.timestamp_micros() - PG_EPOCH_OFFSET_US).to_be_bytes()
}

/// A one-dimensional `text[]` in PostgreSQL's binary array format.
fn text_array(out: &mut Vec<u8>, items: &[String]) -> Result<(), sqlx::Error> {
    let at = out.len();
    out.extend_from_slice(&0i32.to_be_bytes()); // length, patched below
    let ndim = i32::from(!items.is_empty());
    out.extend_from_slice(&ndim.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // no NULL elements
    out.extend_from_slice(&TEXT_OID.to_be_bytes());
    if !items.is_empty() {
        out.extend_from_slice(&len_i32(items.len())?.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        for item in items {
            field(out, item.as_bytes())?;
        }
    }
    patch_len(out, at)
}

/// `jsonb` in binary form: format version 1, then the JSON text.
fn jsonb(out: &mut Vec<u8>, value: &Value) -> Result<(), sqlx::Error> {
    let at = out.len();
    out.extend_from_slice(&0i32.to_be_bytes()); // length, patched below
    out.push(1);
    serde_json::to_writer(&mut *out, value).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    patch_len(out, at)
}

fn patch_len(out: &mut [u8], at: usize) -> Result<(), sqlx::Error> {
    let len = len_i32(out.len() - at - 4)?;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A field length as the wire's i32; PostgreSQL refuses values over 1 GiB anyway.
fn len_i32(n: usize) -> Result<i32, sqlx::Error> {
    i32::try_from(n).map_err(|_| sqlx::Error::Encode("COPY field longer than 2 GiB".into()))
}

use sha2::Digest as _;
