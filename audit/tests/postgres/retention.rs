//! Retention drops whole partitions behind checkpoints; verify still passes.

use crate::support::*;
use chrono::{TimeZone, Utc};
use warden_audit::store::{insert_records, Record, StreamRecord};
use warden_audit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_drops_old_partitions_and_verify_resumes_from_checkpoints() {
    let db = TestDb::new().await;
    let jan = Utc.with_ymd_and_hms(2024, 1, 10, 12, 0, 0).unwrap();
    ensure_partitions(&db.pool, jan, 3).await.unwrap(); // Jan..Apr 2024

    // One stream recorded across January, February and March 2024, plus a
    // stream from 2001, which lands in the default partition.
    let stream = StreamId::new();
    let mut chain = ChainState::new(stream);
    let mut records = vec![Record::Stream(StreamRecord {
        stream_id: stream,
        instance_id: InstanceId::new("old-instance").unwrap(),
        started_at: jan,
    })];
    for (month, turns) in [(1, 3), (2, 2), (3, 2)] {
        let at = Utc.with_ymd_and_hms(2024, month, 15, 8, 0, 0).unwrap();
        for _ in 0..turns {
            for e in turn(&context("tenant-a", "key-1", "smollm2"), "hi", false) {
                records.push(Record::Event(Box::new(chain.seal_at(e, at).unwrap())));
            }
        }
    }
    let ancient = StreamId::new();
    let mut old_chain = ChainState::new(ancient);
    let then = Utc.with_ymd_and_hms(2001, 5, 1, 0, 0, 0).unwrap();
    records.push(Record::Stream(StreamRecord {
        stream_id: ancient,
        instance_id: InstanceId::new("older-instance").unwrap(),
        started_at: then,
    }));
    for e in turn(&context("tenant-a", "key-1", "smollm2"), "hi", true) {
        records.push(Record::Event(Box::new(old_chain.seal_at(e, then).unwrap())));
    }
    insert_records(&mut db.pool.acquire().await.unwrap(), &records)
        .await
        .unwrap();
    // And a current stream through the writer.
    let dir = tempfile::tempdir().unwrap();
    let (current, _) = write_turns(&db.pool, dir.path(), "tenant-a", 2).await;
    assert!(verify(&db.pool).await.unwrap().is_intact());

    // Only the retention role may prune.
    let retention = db.pool_as_member_of("warden_retention").await;
    let report = prune(
        &retention,
        Utc.with_ymd_and_hms(2024, 3, 20, 0, 0, 0).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        report.cutoff,
        Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap()
    );
    assert_eq!(report.partitions_dropped, 2, "January and February 2024");
    assert_eq!(
        report.checkpoints_recorded, 2,
        "the 2024 stream and the 2001 stream"
    );
    assert_eq!(report.default_rows_deleted, 4);
    let parts: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_events'::regclass ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(!parts.contains(&"audit_events_y2024m01".to_owned()));
    assert!(!parts.contains(&"audit_events_y2024m02".to_owned()));
    assert!(parts.contains(&"audit_events_y2024m03".to_owned()));

    let remaining = stream_rows(&db.pool, stream).await;
    assert_eq!(remaining.len(), 10, "March's two turns");
    assert_eq!(remaining[0].1, 26, "after 25 pruned events");
    assert!(stream_rows(&db.pool, ancient).await.is_empty());

    let report = verify(&db.pool).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.from_checkpoints, 1);
    assert_eq!(
        report.events,
        10 + stream_rows(&db.pool, current).await.len() as u64
    );

    // Pruning again is a no-op; the checkpoint still anchors the chain.
    let again = prune(
        &retention,
        Utc.with_ymd_and_hms(2024, 3, 20, 0, 0, 0).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        (again.partitions_dropped, again.checkpoints_recorded),
        (0, 0)
    );

    // The first event after the checkpoint is still protected by it.
    let first = remaining[0].0;
    tamper(
        &db.pool,
        "DELETE FROM audit_events WHERE event_id = $1",
        first,
    )
    .await;
    let report = verify(&db.pool).await.unwrap();
    assert_eq!(
        report
            .breaks
            .iter()
            .map(|b| (b.stream_id, b.problem.clone()))
            .collect::<Vec<_>>(),
        vec![(
            stream,
            ChainProblem::Missing {
                expected_seq: 26,
                next_event_id: Some(remaining[1].0),
                next_seq: Some(27)
            }
        )]
    );
}
