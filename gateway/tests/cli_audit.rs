//! `warden audit export` and `warden audit prune` on the real binary against
//! a seeded PostgreSQL database: JSON Lines and CSV parse back to the stored
//! events of one tenant only, the time range holds, and after pruning whole
//! months `warden audit verify` still passes.

mod cli_support;

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use cli_support::warden;
use serde_json::{json, Value};
use warden_audit::store::{insert_records, Record, StreamRecord};
use warden_audit::*;
use warden_tests::{parse_csv, TestDb};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

/// Runs `warden ARGS --database-url URL`; panics with its output unless it succeeds.
fn ok(args: &[&str], db: &TestDb) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--database-url", db.url.as_str()]);
    let out = warden(&all, "");
    assert!(
        out.status.success(),
        "warden {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Three events of one request of `tenant`, happened and recorded at `when`;
/// the answer holds a comma, a quote and a line break for the CSV.
fn request(tenant: &str, n: usize, when: DateTime<Utc>) -> Vec<AuditEvent> {
    let ctx = Arc::new(RequestContext {
        request_id: RequestId::new(format!("req-{tenant}-{n}")).unwrap(),
        tenant: TenantId::new(tenant).unwrap(),
        key_id: Some(KeyId::new(format!("key-{tenant}")).unwrap()),
        model: Some("up".into()),
        policy: Some(PolicyRef {
            id: "default".into(),
            version: "v1".into(),
        }),
        trace_id: None,
    });
    let bodies = [
        EventBody::Request(RequestStarted {
            endpoint: Endpoint::ChatCompletions,
            stream: false,
            parameters: json!({"temperature": 0.5}),
        }),
        EventBody::Message(MessageRecord {
            direction: Direction::Output,
            index: 0,
            role: Role::Assistant,
            name: None,
            content: Content::capture("Yes, \"quoted\",\nand a second line.", true),
        }),
        EventBody::Decision(DecisionRecord {
            decision: Decision::Allowed,
            checkpoint: None,
            categories: vec![],
            reason: None,
            http_status: 200,
            finish_reason: Some("stop".into()),
            tokens: TokenCounts {
                prompt: 3,
                completion: 4,
            },
            timings: Timings::default(),
        }),
    ];
    bodies
        .into_iter()
        .map(|body| {
            let mut e = ctx.event(body);
            e.occurred_at = when;
            e
        })
        .collect()
}

/// Migrates through the CLI, then stores one stream holding requests of
/// `acme` and `globex` in January and February 2024 and today.
async fn seed(db: &TestDb) -> Vec<SealedEvent> {
    ok(&["migrate"], db);
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    ensure_partitions(&pool, at(2024, 1, 1), 2).await.unwrap();
    let stream = StreamId::new();
    let mut chain = ChainState::new(stream);
    let mut records = vec![Record::Stream(StreamRecord {
        stream_id: stream,
        instance_id: InstanceId::new("cli-test").unwrap(),
        started_at: at(2024, 1, 1),
    })];
    let mut sealed = Vec::new();
    let plan = [
        ("acme", at(2024, 1, 10)),
        ("globex", at(2024, 1, 11)),
        ("acme", at(2024, 2, 10)),
        ("acme", Utc::now()),
        ("globex", Utc::now()),
    ];
    for (n, (tenant, when)) in plan.into_iter().enumerate() {
        for e in request(tenant, n, when) {
            let e = chain.seal_at(e, when).unwrap();
            sealed.push(e.clone());
            records.push(Record::Event(Box::new(e)));
        }
    }
    insert_records(&mut pool.acquire().await.unwrap(), &records)
        .await
        .unwrap();
    pool.close().await;
    sealed
}

fn of_tenant<'a>(events: &'a [SealedEvent], tenant: &str) -> Vec<&'a SealedEvent> {
    events
        .iter()
        .filter(|e| e.tenant_id.as_str() == tenant)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_one_tenants_events_as_json_lines_and_csv() {
    let db = TestDb::create().await;
    let sealed = seed(&db).await;
    let acme = of_tenant(&sealed, "acme");

    // JSON Lines to stdout: acme's events, oldest first, exactly as stored.
    let out = ok(&["audit", "export", "--tenant", "acme"], &db);
    let exported: Vec<SealedEvent> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.iter().collect::<Vec<_>>(), acme);
    for e in &exported {
        assert_eq!(
            e.compute_hash(),
            e.hash,
            "the export carries what was hashed"
        );
    }

    // CSV to a file: header, then the same events; the answer's comma,
    // quotes and line break survive quoting.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.csv");
    let out = ok(
        &[
            "audit",
            "export",
            "--tenant",
            "acme",
            "--format",
            "csv",
            "--output",
            file.to_str().unwrap(),
        ],
        &db,
    );
    assert!(
        text(&out.stderr).contains(&format!("exported {} events", acme.len())),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "the file gets the data, not stdout");
    let rows = parse_csv(&std::fs::read_to_string(&file).unwrap());
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows.len() - 1, acme.len());
    for (row, event) in rows[1..].iter().zip(&acme) {
        assert_eq!(row.len(), header.len());
        assert_eq!(row[col("event_id")], event.event_id.to_string());
        assert_eq!(row[col("tenant_id")], "acme");
        assert_eq!(row[col("hash")], event.hash.to_hex());
        let body: Value = serde_json::from_str(&row[col("body")]).unwrap();
        assert_eq!(body, event.body);
    }

    // Time range: [since, until) on when events happened.
    let out = ok(
        &[
            "audit",
            "export",
            "--tenant",
            "acme",
            "--since",
            "2024-01-01",
            "--until",
            "2024-02-10T12:00:00Z",
        ],
        &db,
    );
    let ids: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event_id"].to_string())
        .collect();
    let january: Vec<String> = acme
        .iter()
        .filter(|e| e.occurred_at < at(2024, 2, 10))
        .map(|e| json!(e.event_id.to_string()).to_string())
        .collect();
    assert_eq!(ids, january);
    assert_eq!(ids.len(), 3);

    // Another tenant sees only its own; an unknown one gets nothing.
    let out = ok(&["audit", "export", "--tenant", "globex"], &db);
    assert_eq!(text(&out.stdout).lines().count(), 6);
    assert!(!text(&out.stdout).contains("\"acme\""));
    let out = ok(&["audit", "export", "--tenant", "nobody"], &db);
    assert!(out.stdout.is_empty());

    // A bad date is refused before touching the database.
    let out = warden(
        &[
            "audit",
            "export",
            "--tenant",
            "acme",
            "--since",
            "yesterday",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("YYYY-MM-DD"),
        "{}",
        text(&out.stderr)
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_drops_whole_months_and_verify_still_passes() {
    let db = TestDb::create().await;
    let sealed = seed(&db).await;
    let out = ok(&["audit", "verify"], &db);
    assert_eq!(
        serde_json::from_str::<Value>(&text(&out.stdout)).unwrap()["events"],
        sealed.len()
    );

    // Mid-March rounds down to March 1st: January and February go.
    let out = ok(&["audit", "prune", "--before", "2024-03-15"], &db);
    let report: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(report["partitions_dropped"], 2, "{report}");
    assert_eq!(report["checkpoints_recorded"], 1, "{report}");
    assert_eq!(report["cutoff"], "2024-03-01T00:00:00Z", "{report}");

    let out = ok(&["audit", "verify"], &db);
    let verified: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(verified["breaks"], json!([]), "{verified}");
    assert_eq!(verified["from_checkpoints"], 1);
    let left = sealed.iter().filter(|e| e.recorded_at >= at(2024, 3, 1));
    assert_eq!(verified["events"], left.count());

    // Only today's acme request is left to export.
    let out = ok(&["audit", "export", "--tenant", "acme"], &db);
    assert_eq!(text(&out.stdout).lines().count(), 3);
    db.drop_db().await;
}
