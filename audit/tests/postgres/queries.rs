//! Tenant-scoped queries, filters, pagination and exports.

use crate::support::*;
use futures_util::TryStreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use warden_audit::*;

/// Writes stories for two tenants; returns (A's request ids, B's request ids).
async fn two_tenants(db: &TestDb) -> (Vec<RequestId>, Vec<RequestId>) {
    let dir = tempfile::tempdir().unwrap();
    let w = AuditWriter::spawn(db.pool.clone(), writer_config(dir.path())).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..6 {
        let ca = context(
            "tenant-a",
            if i % 2 == 0 { "key-a1" } else { "key-a2" },
            "smollm2",
        );
        let cb = context("tenant-b", "key-b1", "llama-3.1-8b");
        for e in turn(
            &ca,
            &format!("a{i}, with \"quotes\"\nand a newline"),
            i % 3 == 2,
        ) {
            w.handle.record(e).unwrap();
        }
        for e in turn(&cb, &format!("b{i}"), i % 2 == 0) {
            w.handle.record(e).unwrap();
        }
        a.push(ca.request_id.clone());
        b.push(cb.request_id.clone());
    }
    assert!(w.handle.shutdown().await.unwrap().in_database);
    w.task.await.unwrap();
    (a, b)
}

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_events() {
    let db = TestDb::new().await;
    let (a_reqs, b_reqs) = two_tenants(&db).await;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));

    let page = list_events(&db.pool, &a, &EventFilter::default(), None, 1000)
        .await
        .unwrap();
    assert_eq!(page.events.len(), 6 * 5 - 2);
    assert!(page.events.iter().all(|e| e.tenant_id == a));
    assert!(page.next_cursor.is_none());

    // One request's whole story, in order.
    let story = request_events(&db.pool, &a, &a_reqs[0])
        .await
        .unwrap()
        .expect("found");
    let kinds: Vec<EventKind> = story.iter().map(|e| e.index.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Request,
            EventKind::Message,
            EventKind::GuardVerdict,
            EventKind::Message,
            EventKind::Decision
        ]
    );
    // Another tenant's request is simply not there (404, not 403).
    assert!(request_events(&db.pool, &a, &b_reqs[0])
        .await
        .unwrap()
        .is_none());
    assert!(request_events(&db.pool, &b, &a_reqs[0])
        .await
        .unwrap()
        .is_none());

    let filter = EventFilter {
        request_id: Some(b_reqs[1].clone()),
        ..EventFilter::default()
    };
    assert!(list_events(&db.pool, &a, &filter, None, 100)
        .await
        .unwrap()
        .events
        .is_empty());
    let lines: Vec<String> = export(
        db.pool.clone(),
        a.clone(),
        EventFilter::default(),
        ExportFormat::JsonLines,
    )
    .try_collect()
    .await
    .unwrap();
    assert_eq!(lines.len(), 28);
    assert!(lines.iter().all(|l| !l.contains("tenant-b")));

    let stats = daily_stats(
        &db.pool,
        &b,
        chrono::Utc::now() - chrono::Duration::days(1),
        chrono::Utc::now() + chrono::Duration::days(1),
    )
    .await
    .unwrap();
    let total = |d: Decision, c: Option<&str>| {
        stats
            .iter()
            .filter(|s| s.decision == d && s.category.as_deref() == c)
            .map(|s| s.count)
            .sum::<i64>()
    };
    assert_eq!(total(Decision::Blocked, None), 3);
    assert_eq!(total(Decision::Blocked, Some("S1")), 3);
    assert_eq!(total(Decision::Allowed, None), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_cursor_pagination() {
    let db = TestDb::new().await;
    two_tenants(&db).await;
    let a = tenant("tenant-a");
    let get = |f: EventFilter| {
        let pool = db.pool.clone();
        let a = a.clone();
        async move { list_events(&pool, &a, &f, None, 1000).await.unwrap().events }
    };

    let blocked = get(EventFilter {
        decision: Some(Decision::Blocked),
        ..Default::default()
    })
    .await;
    assert_eq!(blocked.len(), 2);
    assert!(blocked
        .iter()
        .all(|e| e.index.decision == Some(Decision::Blocked)));

    let s1 = get(EventFilter {
        category: Some("S1".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(s1.len(), 4, "two unsafe verdicts and two blocked decisions");
    assert!(get(EventFilter {
        category: Some("S9".into()),
        ..Default::default()
    })
    .await
    .is_empty());

    let inputs = get(EventFilter {
        checkpoint: Some(Checkpoint::Input),
        kind: Some(EventKind::GuardVerdict),
        ..Default::default()
    })
    .await;
    assert_eq!(inputs.len(), 6);

    let key = get(EventFilter {
        key_id: Some(KeyId::new("key-a2").unwrap()),
        ..Default::default()
    })
    .await;
    assert!(
        !key.is_empty()
            && key
                .iter()
                .all(|e| e.key_id.as_ref().map(KeyId::as_str) == Some("key-a2"))
    );
    assert!(get(EventFilter {
        model: Some("llama-3.1-8b".into()),
        ..Default::default()
    })
    .await
    .is_empty());
    assert_eq!(
        get(EventFilter {
            model: Some("smollm2".into()),
            ..Default::default()
        })
        .await
        .len(),
        28
    );

    let all = get(EventFilter::default()).await;
    let middle = all[10].occurred_at;
    let newer = get(EventFilter {
        from: Some(middle),
        ..Default::default()
    })
    .await;
    let older = get(EventFilter {
        to: Some(middle),
        ..Default::default()
    })
    .await;
    assert_eq!(newer.len() + older.len(), all.len());
    assert!(
        newer.iter().all(|e| e.occurred_at >= middle)
            && older.iter().all(|e| e.occurred_at < middle)
    );

    // Pages of 5, newest first, no gaps, no repeats.
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = list_events(&db.pool, &a, &EventFilter::default(), cursor.as_ref(), 5)
            .await
            .unwrap();
        assert!(page.events.len() <= 5);
        seen.extend(page.events.iter().map(|e| e.event_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c.to_string().parse().unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, all.iter().map(|e| e.event_id).collect::<Vec<_>>());
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
    assert!("nonsense".parse::<Cursor>().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_as_json_lines_and_csv() {
    let db = TestDb::new().await;
    two_tenants(&db).await;
    let a = tenant("tenant-a");

    let mut jsonl = Vec::new();
    let n = export_to(
        db.pool.clone(),
        a.clone(),
        EventFilter::default(),
        ExportFormat::JsonLines,
        &mut jsonl,
    )
    .await
    .unwrap();
    assert_eq!(n, 28);
    let text = String::from_utf8(jsonl).unwrap();
    let events: Vec<SealedEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 28);
    // Exported events carry everything needed to re-check their hashes.
    for e in &events {
        assert_eq!(e.compute_hash(), e.hash, "event {}", e.event_id);
    }
    assert!(
        events
            .windows(2)
            .all(|w| w[0].occurred_at <= w[1].occurred_at),
        "oldest first"
    );

    let mut csv = Vec::new();
    let n = export_to(
        db.pool.clone(),
        a,
        EventFilter::default(),
        ExportFormat::Csv,
        &mut csv,
    )
    .await
    .unwrap();
    assert_eq!(n, 28);
    let rows = parse_csv(&String::from_utf8(csv).unwrap());
    assert_eq!(rows.len(), 29);
    assert_eq!(rows[0][0], "event_id");
    assert!(rows.iter().all(|r| r.len() == rows[0].len()));
    let body_col = rows[0].iter().position(|h| h == "body").unwrap();
    let id_col = rows[0].iter().position(|h| h == "event_id").unwrap();
    for (row, event) in rows[1..].iter().zip(&events) {
        assert_eq!(row[id_col], event.event_id.to_string());
        let body: serde_json::Value = serde_json::from_str(&row[body_col]).unwrap();
        assert_eq!(body, event.body);
    }
    // Commas, quotes and line breaks survive the CSV round trip.
    let texts: Vec<String> = rows[1..]
        .iter()
        .filter_map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r[body_col]).ok()?;
            body.pointer("/content/text")?.as_str().map(str::to_owned)
        })
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t == "a0, with \"quotes\"\nand a newline"),
        "{texts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_content_false_keeps_only_digests_and_policies_once() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let w = AuditWriter::spawn(db.pool.clone(), writer_config(dir.path())).unwrap();
    let policy = PolicyText {
        policy: PolicyRef {
            id: "default".into(),
            version: "v1".into(),
        },
        body: "id: default\ncheckpoints: [input, output]\n".into(),
    };
    for _ in 0..3 {
        w.handle.register_policy(policy.clone()).unwrap();
    }
    let ctx: Arc<RequestContext> = context("tenant-a", "key-1", "smollm2");
    let secret = "my card number is 4111 1111 1111 1111";
    w.handle
        .record(ctx.event(EventBody::Message(MessageRecord {
            direction: Direction::Input,
            index: 0,
            role: Role::User,
            name: None,
            content: Content::capture(secret, false),
        })))
        .unwrap();
    assert!(w.handle.shutdown().await.unwrap().in_database);
    w.task.await.unwrap();

    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE body::text LIKE '%4111%'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(leaked, 0);
    let digest: String = sqlx::query_scalar("SELECT content_sha256 FROM audit_messages")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(digest, Content::capture(secret, true).sha256());
    let policies: Vec<(String, String)> =
        sqlx::query_as("SELECT policy_id, body FROM audit_policies")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(policies, vec![("default".to_owned(), policy.body.clone())]);
}
