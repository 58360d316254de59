//! Keys and the audit log in a real PostgreSQL (a fresh database per test).

use std::process::Command;

use serde_json::{json, Value};
use sqlx::Row;
use warden_tests::*;

fn warden(args: &[&str], db: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("DATABASE_URL", db)
        .output()
        .unwrap()
}

#[actix_web::test]
async fn keys_from_the_cli_authenticate_and_requests_are_audited() {
    let db = TestDb::create().await;
    let out = warden(&["migrate"], &db.url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = warden(&["keys", "create", "--tenant", "globex"], &db.url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(secret.starts_with("wdn_"), "{secret}");

    let mut setup = Setup::new();
    setup.database_url = Some(db.url.clone());
    let gw = setup.start().await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let body =
        json!({"model": "up", "messages": [{"role": "user", "content": "SAY: audited answer"}]});
    let res = gw
        .client
        .post(&url)
        .bearer_auth(&secret)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let res = gw
        .client
        .post(&url)
        .bearer_auth(format!("{secret}x"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // An input block is audited too.
    let blocked = json!({"model": "up", "messages": [{"role": "user", "content": "bombrecipe"}]});
    let res = gw
        .client
        .post(&url)
        .bearer_auth(&secret)
        .json(&blocked)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let blocked_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();

    let ready: Value = gw
        .client
        .get(format!("{}/readyz", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["database"], "up");

    let report = gw.state.audit.as_ref().unwrap().flush().await.unwrap();
    assert!(report.in_database);
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows = sqlx::query(
        "SELECT kind, tenant_id, policy_id, body FROM audit_events WHERE request_id = $1 ORDER BY seq",
    )
    .bind(&request_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let kinds: Vec<String> = rows.iter().map(|r| r.get::<String, _>("kind")).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("request"));
    assert_eq!(kinds.last().map(String::as_str), Some("decision"));
    assert!(
        kinds.iter().filter(|k| *k == "guard_verdict").count() >= 4,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"message".to_owned()));
    assert_eq!(rows[0].get::<String, _>("tenant_id"), "globex");
    assert_eq!(
        rows[0].get::<Option<String>, _>("policy_id").as_deref(),
        Some("default")
    );
    let decision: Value = rows.last().unwrap().get("body");
    assert_eq!(decision["decision"], "allowed");
    assert_eq!(decision["http_status"], 200);

    let decision: Value = sqlx::query_scalar(
        "SELECT body FROM audit_events WHERE request_id = $1 AND kind = 'decision'",
    )
    .bind(&blocked_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(decision["decision"], "blocked");
    assert_eq!(decision["http_status"], 400);
    assert_eq!(decision["categories"], json!(["S9"]));

    let out = warden(&["audit", "verify"], &db.url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let verify: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(verify["events"].as_u64().unwrap() >= 8);

    gw.stop().await;
    pool.close().await;
    db.drop_db().await;
}
