//! Migrations, the gateway role's privileges and the append-only trigger.

use crate::support::*;
use sqlx::AssertSqlSafe;
use warden_audit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_on_an_empty_database_and_again() {
    let db = TestDb::new().await;
    for table in [
        "audit_events",
        "audit_policies",
        "audit_streams",
        "audit_checkpoints",
        "api_keys",
    ] {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(table)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(exists.as_deref(), Some(table));
    }
    // This month and two ahead, plus the default partition.
    let partitions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_events'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(partitions, 4);
    migrate(&db.pool).await.expect("second run is a no-op");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied, MIGRATOR.iter().count() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_role_writes_and_reads_but_cannot_update_or_delete() {
    let db = TestDb::new().await;
    let gateway = db.pool_as_member_of("warden_gateway").await;
    let spool = tempfile::tempdir().unwrap();
    // The writer works with the gateway's privileges alone.
    let (stream, events) = write_turns(&gateway, spool.path(), "tenant-a", 2).await;
    assert_eq!(stream_rows(&db.pool, stream).await.len(), events.len());

    for sql in [
        "UPDATE audit_events SET model = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_streams SET instance_id = 'x'",
        "DELETE FROM audit_policies",
        "DELETE FROM audit_checkpoints",
        "DELETE FROM api_keys",
        "SELECT * FROM audit_prune(now())",
        "DROP TABLE audit_events",
    ] {
        let err = sqlx::query(sql).execute(&gateway).await.expect_err(sql);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert!(
            matches!(code.as_deref(), Some("42501")),
            "{sql}: expected permission denied, got {err}"
        );
    }
    // Its own partitions can be created ahead through the definer function.
    ensure_partitions(&gateway, chrono::Utc::now(), 4)
        .await
        .unwrap();
    let report = verify(&gateway).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_rejects_update_and_delete_even_for_the_owner() {
    let db = TestDb::new().await;
    let spool = tempfile::tempdir().unwrap();
    let (stream, _) = write_turns(&db.pool, spool.path(), "tenant-a", 1).await;
    sqlx::query("INSERT INTO audit_policies (policy_id, version, body, body_sha256) VALUES ('p', 'v1', 'x', sha256('x'))")
        .execute(&db.pool)
        .await
        .unwrap();
    for sql in [
        "UPDATE audit_events SET model = 'x'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_streams SET instance_id = 'x'",
        "DELETE FROM audit_streams",
        "DELETE FROM audit_policies",
        "UPDATE audit_policies SET body = 'y'",
        "TRUNCATE audit_policies",
    ] {
        let err = sqlx::query(sql).execute(&db.pool).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    // Partitions are protected too (the trigger is cloned onto them).
    let part: String = sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM audit_events WHERE stream_id = $1 LIMIT 1",
    )
    .bind(stream.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let err = sqlx::query(AssertSqlSafe(format!("DELETE FROM {part}")))
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_eq!(stream_rows(&db.pool, stream).await.len(), 5);
}
