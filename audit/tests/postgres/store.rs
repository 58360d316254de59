//! The binary COPY store path, in a transaction with a stream record and
//! alone for a batch of events only: every column survives the round trip,
//! and a batch overlapping what is already stored (a replay after a crash)
//! adds only the missing events, under the gateway role's privileges.

use crate::support::*;
use chrono::{TimeZone, Utc};
use std::sync::Arc;
use warden_audit::rows::{event_from_row, EVENT_COLUMNS};
use warden_audit::store::{insert_records, Record, StreamRecord};
use warden_audit::*;

/// Events that exercise every column: absent optional fields, categories,
/// checkpoints, decisions, quotes, escapes, non-ASCII and NUL characters.
fn varied_events() -> Vec<AuditEvent> {
    let mut events = Vec::new();
    let full = context("tenant-a", "key-1", "smollm2");
    events.extend(turn(&full, "plain question", false));
    events.extend(turn(&full, "blocked question", true));
    let bare = Arc::new(RequestContext {
        request_id: RequestId::new("req-bare").unwrap(),
        tenant: TenantId::new("tenant \"b\", ünïcode").unwrap(),
        key_id: None,
        model: None,
        policy: None,
        trace_id: None,
    });
    events.push(bare.event(EventBody::Message(MessageRecord {
        direction: Direction::Output,
        index: 3,
        role: Role::Assistant,
        name: Some("tab\there".into()),
        content: Content::capture("quote \" backslash \\ newline \n emoji 😀 nul \0 end", true),
    })));
    events.push(bare.event(EventBody::Decision(DecisionRecord {
        decision: Decision::Flagged,
        checkpoint: Some(Checkpoint::Output),
        categories: vec!["S6".into(), "S10".into(), "with,comma".into()],
        reason: Some("flagged for review".into()),
        http_status: 200,
        finish_reason: Some("stop".into()),
        tokens: TokenCounts {
            prompt: 1,
            completion: 2,
        },
        timings: Timings::default(),
    })));
    events
}

async fn stored_events(pool: &sqlx::PgPool, stream: StreamId) -> Vec<SealedEvent> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE stream_id = $1 ORDER BY seq");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(stream.0)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|row| event_from_row(row).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_round_trips_every_column_and_replays_exactly_once() {
    round_trip_and_replay(Batches::WithStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_only_batches_round_trip_and_replay_exactly_once() {
    round_trip_and_replay(Batches::EventsOnly).await;
}

/// What the batches hold besides events.
#[derive(PartialEq)]
enum Batches {
    /// The stream record rides with the events: one transaction.
    WithStream,
    /// The stream record is stored first: a COPY on its own.
    EventsOnly,
}

async fn round_trip_and_replay(batches: Batches) {
    let db = TestDb::new().await;
    let gateway = db.pool_as_member_of("warden_gateway").await;
    let stream = StreamId::new();
    let mut chain = ChainState::new(stream);
    // Two timestamps a month apart: the batch spans two partitions.
    let months = [
        Utc.with_ymd_and_hms(2024, 1, 31, 23, 59, 59).unwrap(),
        Utc::now(),
    ];
    ensure_partitions(&db.pool, months[0], 1).await.unwrap();
    let sealed: Vec<SealedEvent> = varied_events()
        .into_iter()
        .enumerate()
        .map(|(i, e)| chain.seal_at(e, months[usize::from(i >= 5)]).unwrap())
        .collect();
    let start = Record::Stream(StreamRecord {
        stream_id: stream,
        instance_id: InstanceId::new("store-test").unwrap(),
        started_at: months[0],
    });
    let mut records = Vec::new();
    if batches == Batches::EventsOnly {
        insert_records(&mut gateway.acquire().await.unwrap(), &[start])
            .await
            .unwrap();
    } else {
        records.push(start);
    }
    records.extend(sealed.iter().cloned().map(|e| Record::Event(Box::new(e))));

    // The first half is stored, then the whole batch arrives again, as a
    // replay after a crash between the database's commit and the spool's
    // truncation would send it.
    let half = records.len().div_ceil(2);
    insert_records(&mut gateway.acquire().await.unwrap(), &records[..half])
        .await
        .unwrap();
    insert_records(&mut gateway.acquire().await.unwrap(), &records)
        .await
        .unwrap();
    insert_records(&mut gateway.acquire().await.unwrap(), &records)
        .await
        .unwrap();

    assert_eq!(stored_events(&db.pool, stream).await, sealed);
    let report = verify(&db.pool).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, sealed.len() as u64);
    let nul_free: bool = sqlx::query_scalar(
        "SELECT bool_and(position(U&'\\FFFD' in body::text) > 0) FROM audit_events WHERE request_id = 'req-bare' AND kind = 'message'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(nul_free, "NUL is stored as U+FFFD");
}
