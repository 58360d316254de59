//! The writer under outages: spooling, replay in order and exactly once,
//! torn spool tails, and the health flag.

use crate::support::*;
use std::io::Write;
use std::time::Duration;
use warden_audit::spool::SPOOL_FILE;
use warden_audit::*;

async fn record_turns(handle: &AuditHandle, tenant: &str, turns: usize, all: &mut Vec<uuid::Uuid>) {
    for i in 0..turns {
        let ctx = context(tenant, "key-1", "smollm2");
        for e in turn(&ctx, &format!("q{i}"), false) {
            all.push(e.event_id);
            handle.record(e).unwrap();
        }
    }
}

async fn event_ids_in_order(db: &TestDb, stream: StreamId) -> Vec<uuid::Uuid> {
    stream_rows(&db.pool, stream)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

async fn count_events(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_database_spools_then_replays_exactly_once_in_order() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();

    // A writer whose database is a port nothing listens on.
    let dead = AuditWriter::spawn(dead_pool(), writer_config(dir.path())).unwrap();
    let mut ids = Vec::new();
    record_turns(&dead.handle, "tenant-a", 30, &mut ids).await;
    let report = dead.handle.flush().await.unwrap();
    assert!(!report.in_database);
    assert!(
        report.spooled as usize > ids.len(),
        "events plus the stream record are spooled"
    );
    let health = dead.handle.health();
    assert!(!health.database_up);
    assert!(health.can_make_progress(), "the spool still takes events");
    let metrics = dead.handle.metrics();
    assert!(metrics.spool_bytes > 0);
    assert_eq!(metrics.events_spooled as usize, ids.len());
    assert!(metrics.spool_oldest_age.is_some());
    dead.handle.shutdown().await.unwrap();
    dead.task.await.unwrap();
    let stream = dead.handle.stream_id();

    // Keep a copy of the spool to replay it a second time later, as if the
    // process died after the database took the records but before the
    // spool was emptied.
    let copy = std::fs::read(dir.path().join(SPOOL_FILE)).unwrap();

    // The database is back: a new writer replays the spool first.
    let live = AuditWriter::spawn(db.pool.clone(), writer_config(dir.path())).unwrap();
    let report = live.handle.flush().await.unwrap();
    assert!(report.in_database, "{report:?}");
    assert_eq!(live.handle.metrics().spool_records, 0);
    assert_eq!(
        event_ids_in_order(&db, stream).await,
        ids,
        "replayed in order"
    );
    live.handle.shutdown().await.unwrap();
    live.task.await.unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join(SPOOL_FILE))
            .unwrap()
            .len(),
        0
    );

    std::fs::write(dir.path().join(SPOOL_FILE), &copy).unwrap();
    let again = AuditWriter::spawn(db.pool.clone(), writer_config(dir.path())).unwrap();
    assert!(again.handle.flush().await.unwrap().in_database);
    again.handle.shutdown().await.unwrap();
    again.task.await.unwrap();
    assert_eq!(count_events(&db).await, ids.len() as i64, "exactly once");
    let report = verify(&db.pool).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_stream_lose_nothing() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start().await;
    let w = AuditWriter::spawn(proxy.pool(&db), writer_config(dir.path())).unwrap();
    let mut ids = Vec::new();

    record_turns(&w.handle, "tenant-a", 10, &mut ids).await;
    assert!(w.handle.flush().await.unwrap().in_database);

    proxy.cut();
    record_turns(&w.handle, "tenant-a", 20, &mut ids).await;
    let during = w.handle.flush().await.unwrap();
    assert!(!during.in_database, "outage goes to the spool");
    assert!(!w.handle.health().database_up);
    // Requests keep flowing during the outage.
    record_turns(&w.handle, "tenant-a", 10, &mut ids).await;
    w.handle.flush().await.unwrap();

    proxy.restore();
    let mut drained = false;
    for _ in 0..100 {
        record_turns(&w.handle, "tenant-a", 1, &mut ids).await;
        if w.handle.flush().await.unwrap().in_database {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(drained, "spool drained after the database came back");
    assert!(w.handle.health().database_up);
    w.handle.shutdown().await.unwrap();
    w.task.await.unwrap();

    assert_eq!(event_ids_in_order(&db, w.handle.stream_id()).await, ids);
    assert_eq!(count_events(&db).await, ids.len() as i64);
    assert!(verify(&db.pool).await.unwrap().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_spool_tail_is_reported_and_the_rest_replayed() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let dead = AuditWriter::spawn(dead_pool(), writer_config(dir.path())).unwrap();
    let mut ids = Vec::new();
    record_turns(&dead.handle, "tenant-a", 4, &mut ids).await;
    dead.handle.shutdown().await.unwrap();
    dead.task.await.unwrap();

    // Cut the last record in half, as a crash during its write would.
    let path = dir.path().join(SPOOL_FILE);
    let full = std::fs::read(&path).unwrap();
    let torn_len = 37;
    std::fs::write(&path, &full[..full.len() - torn_len]).unwrap();

    let live = AuditWriter::spawn(db.pool.clone(), writer_config(dir.path())).unwrap();
    let torn = live.torn_tail.clone().expect("torn tail detected");
    assert_eq!(live.handle.metrics().torn_tails, 1);
    let quarantined = std::fs::read(&torn.quarantined_to).unwrap();
    assert_eq!(quarantined.len() as u64, torn.bytes);
    assert_eq!(
        &full[torn.offset as usize..full.len() - torn_len],
        &quarantined[..]
    );
    assert!(live.handle.flush().await.unwrap().in_database);
    live.handle.shutdown().await.unwrap();
    live.task.await.unwrap();

    let stored = event_ids_in_order(&db, dead.handle.stream_id()).await;
    assert_eq!(stored, ids[..ids.len() - 1], "all but the torn record");
    assert!(verify(&db.pool).await.unwrap().is_intact());

    // Garbage appended after valid frames is cut off the same way.
    let dead = AuditWriter::spawn(dead_pool(), writer_config(dir.path())).unwrap();
    let mut more = Vec::new();
    record_turns(&dead.handle, "tenant-b", 2, &mut more).await;
    dead.handle.shutdown().await.unwrap();
    dead.task.await.unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&[0xA5, 0x17, 0xff, 0x00, 0x00, 0x00, 1, 2, 3])
        .unwrap();
    drop(f);
    let live = AuditWriter::spawn(db.pool.clone(), writer_config(dir.path())).unwrap();
    assert_eq!(live.torn_tail.as_ref().map(|t| t.bytes), Some(9));
    assert!(live.handle.flush().await.unwrap().in_database);
    live.handle.shutdown().await.unwrap();
    live.task.await.unwrap();
    assert_eq!(event_ids_in_order(&db, dead.handle.stream_id()).await, more);
}

// A single-threaded runtime: the writer cannot run while the burst is
// recorded, so the backlog is certain to pass the capacity.
#[tokio::test]
async fn a_burst_past_capacity_keeps_every_event_and_sheds_new_turns() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = writer_config(dir.path());
    config.queue_capacity = 16;
    assert!(
        !config.required,
        "shedding does not depend on audit.required"
    );
    let w = AuditWriter::spawn(db.pool.clone(), config).unwrap();
    let mut ids = Vec::new();
    record_turns(&w.handle, "tenant-a", 200, &mut ids).await;
    let health = w.handle.health();
    assert_eq!(health.queue_depth, ids.len(), "every event was taken");
    assert!(
        health.backlogged() && health.refuse_new_turns(),
        "{health:?}"
    );
    assert_eq!(w.handle.metrics().events_rejected, 0);

    let report = w.handle.flush().await.unwrap();
    assert!(report.in_database, "{report:?}");
    let health = w.handle.health();
    assert_eq!(health.queue_depth, 0);
    assert!(!health.refuse_new_turns(), "{health:?}");
    assert_eq!(event_ids_in_order(&db, w.handle.stream_id()).await, ids);
    let verified = verify(&db.pool).await.unwrap();
    assert!(verified.is_intact(), "{verified:?}");
    assert_eq!(verified.events as usize, ids.len());
    w.handle.shutdown().await.unwrap();
    w.task.await.unwrap();
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_audit_refuses_turns_when_nothing_can_take_events() {
    let dir = tempfile::tempdir().unwrap();
    // A spool on /dev/full: every write fails with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", dir.path().join(SPOOL_FILE)).unwrap();
    let mut config = writer_config(dir.path());
    config.required = true;
    let w = AuditWriter::spawn(dead_pool(), config).unwrap();
    assert!(
        !w.handle.health().refuse_new_turns(),
        "healthy until something fails"
    );
    let ctx = context("tenant-a", "key-1", "smollm2");
    for e in turn(&ctx, "hello", false) {
        w.handle.record(e).unwrap();
    }
    let mut refused = false;
    for _ in 0..100 {
        if w.handle.health().refuse_new_turns() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "{:?}", w.handle.health());
    let health = w.handle.health();
    assert!(!health.database_up && !health.spool_writable && health.stalled);

    // The same situation without `required` does not refuse turns.
    let dir2 = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", dir2.path().join(SPOOL_FILE)).unwrap();
    let w2 = AuditWriter::spawn(dead_pool(), writer_config(dir2.path())).unwrap();
    for e in turn(&ctx, "hello", false) {
        w2.handle.record(e).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!w2.handle.health().can_make_progress());
    assert!(!w2.handle.health().refuse_new_turns());
    w.task.abort();
    w2.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_event_is_stored_before_its_wait_resolves() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = writer_config(dir.path());
    // Only the group commit (a caller waits) can end a batch before this.
    config.batch_interval = Duration::from_secs(120);
    let live = AuditWriter::spawn(db.pool.clone(), config).unwrap();
    let ctx = context("tenant-a", "key-1", "smollm2");
    let mut events = turn(&ctx, "q", false);
    let decision = events.pop().unwrap();
    let mut ids: Vec<uuid::Uuid> = events.iter().map(|e| e.event_id).collect();
    ids.push(decision.event_id);
    for e in events {
        live.handle.record(e).unwrap();
    }
    let durable = live.handle.record_durable(decision).unwrap();
    tokio::time::timeout(Duration::from_secs(60), durable.wait())
        .await
        .expect("the batch went without waiting for its deadline")
        .unwrap();
    // Stored already, with everything handed over before it, in order.
    assert_eq!(event_ids_in_order(&db, live.handle.stream_id()).await, ids);
    live.handle.shutdown().await.unwrap();

    // PostgreSQL unreachable: the wait resolves once the event is in the
    // fsync'd spool. The pool would retry the refused connect for ten
    // minutes and the call deadline is as long: only the writer's acquire
    // deadline (a second) can end the attempt.
    let spool_dir = tempfile::tempdir().unwrap();
    let patient = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(600))
        .connect_lazy_with(base_options().host("127.0.0.1").port(1));
    let mut config = writer_config(spool_dir.path());
    config.db_timeout = Duration::from_secs(600);
    let dead = AuditWriter::spawn(patient, config).unwrap();
    let event = turn(&ctx, "q2", false).pop().unwrap();
    let id = event.event_id.to_string();
    let durable = dead.handle.record_durable(event).unwrap();
    tokio::time::timeout(Duration::from_secs(60), durable.wait())
        .await
        .expect("the wait outlived the writer's acquire deadline")
        .unwrap();
    let spooled = std::fs::read(spool_dir.path().join(SPOOL_FILE)).unwrap();
    assert!(
        String::from_utf8_lossy(&spooled).contains(&id),
        "the event is in the spool"
    );
    dead.handle.shutdown().await.unwrap();
}
