//! Writer benchmark: events per second into PostgreSQL and the time a
//! request spends handing an event over.
//!
//! `cargo run --release -p warden-audit --example writer_bench [EVENTS]`
//! (uses `DATABASE_URL` or postgres://postgres@127.0.0.1:5432; makes and
//! drops its own database; `BENCH_BATCH` and `BENCH_IN_FLIGHT` override the
//! writer's batch size and pipeline depth). Prints sealing alone, the two store paths (old
//! multi-row INSERT and binary COPY) on the same batches with their ratio,
//! then the whole writer: throughput and hand-over latency.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden_audit::*;

/// Events per store call in the store comparison (the writer's default batch size).
const STORE_BATCH: usize = 2_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: usize = std::env::args().nth(1).map_or(Ok(100_000), |s| s.parse())?;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = PgConnectOptions::from_str(&url)?;
    let name = format!("warden_audit_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&base).await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let result = run(&base, &name, events).await;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    result
}

async fn run(
    base: &PgConnectOptions,
    name: &str,
    events: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(base.clone().database(name))
        .await?;
    migrate(&pool).await?;
    let spool = tempfile::tempdir()?;
    let mut config = WriterConfig::new(InstanceId::new("bench")?, spool.path());
    config.queue_capacity = events + 1;
    config.batch_size = env_or("BENCH_BATCH", config.batch_size);
    config.max_in_flight = env_or("BENCH_IN_FLIGHT", config.max_in_flight);
    config.batch_interval = Duration::from_millis(20);
    let writer = AuditWriter::spawn(pool.clone(), config)?;

    // Build the events first so only the hand-over is timed.
    let mut batch = Vec::with_capacity(events);
    while batch.len() < events {
        let ctx = Arc::new(RequestContext {
            request_id: RequestId::new(format!("req-{}", batch.len()))?,
            tenant: TenantId::new("bench-tenant")?,
            key_id: Some(KeyId::new("key-1")?),
            model: Some("smollm2".into()),
            policy: Some(PolicyRef {
                id: "default".into(),
                version: "v1".into(),
            }),
            trace_id: None,
        });
        batch.push(ctx.event(EventBody::Message(MessageRecord {
            direction: Direction::Input,
            index: 0,
            role: Role::User,
            name: None,
            content: Content::capture(
                "What is the capital of France? Please answer briefly.",
                true,
            ),
        })));
        batch.push(ctx.event(EventBody::GuardVerdict(GuardVerdictRecord {
            checkpoint: Checkpoint::Input,
            backend: GuardBackend::Local,
            guard_model: Some("llama-guard-3-1b".into()),
            result: VerdictResult::Safe,
            score: Some(0.01),
            latency_us: 9_000,
        })));
    }
    batch.truncate(events);

    // Sealing alone (serialise, canonicalise, SHA-256), for comparison.
    let t = Instant::now();
    let mut chain = ChainState::new(StreamId::new());
    let mut sealed = Vec::with_capacity(events);
    for event in &batch {
        sealed.push(chain.seal(event.clone())?);
    }
    println!(
        "sealing alone: {:.0} events/s",
        events as f64 / t.elapsed().as_secs_f64()
    );

    // The store paths alone on the same sealed batches, alternating so the
    // machine's noise falls on both: the old multi-row INSERT ... UNNEST
    // against binary COPY. Each path gets its own stream (fresh ids).
    let mut old_chain = ChainState::new(StreamId::new());
    let old: Vec<SealedEvent> = batch
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.event_id = uuid::Uuid::new_v4();
            old_chain.seal(e)
        })
        .collect::<Result<_, _>>()?;
    let to_records = |events: &[SealedEvent]| -> Vec<store::Record> {
        events
            .iter()
            .map(|e| store::Record::Event(Box::new(e.clone())))
            .collect()
    };
    let (mut old_time, mut copy_time) = (Duration::ZERO, Duration::ZERO);
    for (old_chunk, new_chunk) in old.chunks(STORE_BATCH).zip(sealed.chunks(STORE_BATCH)) {
        let (old_records, new_records) = (to_records(old_chunk), to_records(new_chunk));
        let t = Instant::now();
        store::insert_records_multirow(&pool, &old_records).await?;
        old_time += t.elapsed();
        let t = Instant::now();
        store::insert_records(&mut *pool.acquire().await?, &new_records).await?;
        copy_time += t.elapsed();
    }
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!(
        "store, batches of {STORE_BATCH}: multi-row INSERT {:.0} events/s, COPY {:.0} events/s, ratio {:.2}x",
        rate(old_time),
        rate(copy_time),
        old_time.as_secs_f64() / copy_time.as_secs_f64()
    );
    // Replaying a batch that is already stored takes the staging path and adds nothing.
    let replay = to_records(&sealed[..STORE_BATCH.min(events)]);
    let t = Instant::now();
    store::insert_records(&mut *pool.acquire().await?, &replay).await?;
    println!(
        "replay of {} stored events (staging path): {:.1} ms",
        replay.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&pool)
        .await?;
    assert_eq!(stored as usize, 2 * events, "exactly once");
    drop((old, sealed));

    let mut handover = Vec::with_capacity(events);
    let start = Instant::now();
    for event in batch {
        let t = Instant::now();
        writer.handle.record(event)?;
        handover.push(t.elapsed());
    }
    let report = writer.handle.flush().await?;
    let elapsed = start.elapsed();
    assert!(report.in_database);
    handover.sort();
    let pct = |p: f64| handover[((handover.len() as f64 * p) as usize).min(handover.len() - 1)];
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&pool)
        .await?;
    println!(
        "writer: events: {events}, stored: {}",
        stored as usize - 2 * events
    );
    println!(
        "writer throughput: {:.0} events/s ({:.2} s)",
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "hand-over: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        handover[handover.len() - 1]
    );
    let t = Instant::now();
    let verified = verify(&pool).await?;
    println!(
        "verify: {} events in {:.2} s, intact: {}",
        verified.events,
        t.elapsed().as_secs_f64(),
        verified.is_intact()
    );
    writer.handle.shutdown().await?;
    Ok(())
}

/// A tuning knob from the environment (`BENCH_BATCH`, `BENCH_IN_FLIGHT`), else `default`.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
