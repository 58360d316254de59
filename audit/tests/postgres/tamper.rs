//! Verification: an untouched log verifies; a changed, deleted or reordered
//! row is reported with its event id.

use crate::support::*;
use warden_audit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_the_first_changed_missing_or_reordered_event() {
    let db = TestDb::new().await;
    let spool = tempfile::tempdir().unwrap();
    // Five streams (five writer starts), four turns each.
    let mut streams = Vec::new();
    for _ in 0..5 {
        let (stream, _) = write_turns(&db.pool, spool.path(), "tenant-a", 4).await;
        streams.push(stream);
    }
    let clean = verify(&db.pool).await.unwrap();
    assert!(clean.is_intact(), "{clean:?}");
    assert_eq!(clean.streams, 5);
    assert_eq!(clean.events, 5 * (5 + 5 + 4 + 5));

    let [changed, deleted, reordered, column, untouched] = streams[..] else {
        unreachable!()
    };

    // 1. Change a message's text.
    let rows = stream_rows(&db.pool, changed).await;
    let (victim, victim_seq) = rows[6];
    tamper(
        &db.pool,
        "UPDATE audit_events SET body = jsonb_set(body, '{content,text}', '\"edited\"') \
         WHERE event_id = $1 AND kind = 'message'",
        victim,
    )
    .await;

    // 2. Delete one event in the middle.
    let rows = stream_rows(&db.pool, deleted).await;
    let (gone, gone_seq) = rows[9];
    let (after_gone, _) = rows[10];
    tamper(
        &db.pool,
        "DELETE FROM audit_events WHERE event_id = $1",
        gone,
    )
    .await;

    // 3. Swap two neighbours' places.
    let rows = stream_rows(&db.pool, reordered).await;
    let (first, first_seq) = rows[3];
    let (second, _) = rows[4];
    tamper(
        &db.pool,
        "UPDATE audit_events SET seq = seq + 1000000 WHERE event_id = $1",
        first,
    )
    .await;
    tamper(
        &db.pool,
        "UPDATE audit_events SET seq = seq - 1 WHERE event_id = $1",
        second,
    )
    .await;
    tamper(
        &db.pool,
        "UPDATE audit_events SET seq = seq - 1000000 + 1 WHERE event_id = $1",
        first,
    )
    .await;

    // 4. Change only an indexed column (turn a block into an allow).
    let blocked: uuid::Uuid = sqlx::query_scalar(
        "SELECT event_id FROM audit_events WHERE stream_id = $1 AND decision = 'blocked' ORDER BY seq LIMIT 1",
    )
    .bind(column.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    tamper(
        &db.pool,
        "UPDATE audit_events SET decision = 'allowed' WHERE event_id = $1",
        blocked,
    )
    .await;

    let report = verify(&db.pool).await.unwrap();
    assert!(!report.is_intact());
    assert_eq!(report.breaks.len(), 4, "{report:#?}");
    let find = |s: StreamId| {
        report
            .breaks
            .iter()
            .find(|b| b.stream_id == s)
            .map(|b| b.problem.clone())
    };

    match find(changed) {
        Some(ChainProblem::Changed { event_id, seq, .. }) => {
            assert_eq!((event_id, seq), (victim, victim_seq));
        }
        other => panic!("changed: {other:?}"),
    }
    match find(deleted) {
        Some(ChainProblem::Missing {
            expected_seq,
            next_event_id,
            ..
        }) => {
            assert_eq!(expected_seq, gone_seq);
            assert_eq!(next_event_id, Some(after_gone));
        }
        other => panic!("deleted: {other:?}"),
    }
    match find(reordered) {
        Some(ChainProblem::Reordered { event_id, seq }) => {
            assert_eq!((event_id, seq), (second, first_seq));
        }
        other => panic!("reordered: {other:?}"),
    }
    match find(column) {
        Some(ChainProblem::Changed {
            event_id, detail, ..
        }) => {
            assert_eq!(event_id, blocked);
            assert!(detail.contains("indexed"), "{detail}");
        }
        other => panic!("column: {other:?}"),
    }
    assert!(find(untouched).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_whole_stream_or_its_last_renumbered_gap_is_reported() {
    let db = TestDb::new().await;
    let spool = tempfile::tempdir().unwrap();
    let (whole, _) = write_turns(&db.pool, spool.path(), "tenant-a", 1).await;
    let (renumbered, _) = write_turns(&db.pool, spool.path(), "tenant-a", 2).await;

    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE stream_id = $1")
        .bind(whole.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    // Remove seq 3 and close the gap, as a careful forger would.
    let third: uuid::Uuid =
        sqlx::query_scalar("SELECT event_id FROM audit_events WHERE stream_id = $1 AND seq = 4")
            .bind(renumbered.0)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE stream_id = $1 AND seq = 3")
        .bind(renumbered.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET seq = seq - 1 WHERE stream_id = $1 AND seq > 3")
        .bind(renumbered.0)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let report = verify(&db.pool).await.unwrap();
    let find = |s: StreamId| {
        report
            .breaks
            .iter()
            .find(|b| b.stream_id == s)
            .map(|b| b.problem.clone())
    };
    assert_eq!(
        find(whole),
        Some(ChainProblem::Missing {
            expected_seq: 1,
            next_event_id: None,
            next_seq: None
        })
    );
    match find(renumbered) {
        // The renumbered event no longer hashes to its stored hash (its seq is
        // part of the canonical form), so it is reported where the gap was.
        Some(ChainProblem::Changed { event_id, seq, .. }) => {
            assert_eq!((event_id, seq), (third, 3))
        }
        other => panic!("renumbered: {other:?}"),
    }
}
