//! What the audit keeps of a turn, end to end through the gateway into
//! PostgreSQL: a flagged turn's whole story in order, `store_content:
//! false` keeping digests only, and secrets masked whatever the policy.

use serde_json::Value;
use warden_tests::*;

/// The audit rows of one request in order: (kind, body).
async fn story(db: &TestDb, gw: &Gateway, request_id: &str) -> Vec<(String, Value)> {
    gw.state.audit.as_ref().unwrap().flush().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let rows: Vec<(String, Value)> =
        sqlx::query_as("SELECT kind, body FROM audit_events WHERE request_id = $1 ORDER BY seq")
            .bind(request_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows
}

fn label(kind: &str, body: &Value) -> String {
    match kind {
        "message" => format!("message:{}", body["direction"].as_str().unwrap_or("?")),
        "guard_verdict" => format!("verdict:{}", body["checkpoint"].as_str().unwrap_or("?")),
        "decision" => format!("decision:{}", body["decision"].as_str().unwrap_or("?")),
        other => other.to_owned(),
    }
}

#[actix_web::test]
async fn a_flagged_turn_is_stored_whole_and_in_order() {
    let db = TestDb::create().await;
    let mut setup = Setup::new();
    setup.database_url = Some(db.url.clone());
    let gw = setup.start().await;
    let res = gw.chat("up", "should I call a lawyer?").await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["warden"]["decision"], "flagged");
    let rows = story(&db, &gw, &id).await;
    let labels: Vec<String> = rows.iter().map(|(k, b)| label(k, b)).collect();
    assert_eq!(
        labels,
        [
            "request",
            "message:input",
            "verdict:input",
            "verdict:input",
            "verdict:output",
            "verdict:output",
            "message:output",
            "decision:flagged",
        ],
        "{rows:?}"
    );
    let flag = &rows[2].1;
    assert_eq!(
        flag["result"]["categories"],
        serde_json::json!(["S6"]),
        "{flag}"
    );
    assert_eq!(rows[1].1["content"]["text"], "should I call a lawyer?");
    gw.stop().await;
    db.drop_db().await;
}

#[actix_web::test]
async fn store_content_false_keeps_only_digests_of_messages() {
    let db = TestDb::create().await;
    let mut setup = Setup::new();
    setup.database_url = Some(db.url.clone());
    setup.policy = default_policy("{mode: buffered}") + "store_content: false\n";
    let gw = setup.start().await;
    let res = gw.chat("up", "SAY: the quarterly numbers").await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let rows = story(&db, &gw, &id).await;
    let messages: Vec<&Value> = rows
        .iter()
        .filter(|(k, _)| k == "message")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(messages.len(), 2);
    for m in messages {
        let content = &m["content"];
        assert!(content.get("text").is_none(), "{m}");
        assert_eq!(content["sha256"].as_str().map(str::len), Some(64), "{m}");
    }
    let all = serde_json::to_string(&rows).unwrap();
    assert!(!all.contains("quarterly"), "{all}");
    gw.stop().await;
    db.drop_db().await;
}

#[actix_web::test]
async fn secrets_in_messages_are_masked_in_the_audit() {
    let db = TestDb::create().await;
    let mut setup = Setup::new();
    setup.database_url = Some(db.url.clone());
    let gw = setup.start().await;
    let key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
    let aws = "AKIAIOSFODNN7EXAMPLE";
    let res = gw
        .chat("up", &format!("SAY: my keys are {key} and {aws} thanks"))
        .await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let rows = story(&db, &gw, &id).await;
    let all = serde_json::to_string(&rows).unwrap();
    assert!(!all.contains(key) && !all.contains(aws), "{all}");
    let input = rows
        .iter()
        .find(|(k, b)| k == "message" && b["direction"] == "input")
        .unwrap();
    let text = input.1["content"]["text"].as_str().unwrap();
    assert_eq!(text, "SAY: my keys are [REDACTED] and [REDACTED] thanks");
    gw.stop().await;
    db.drop_db().await;
}
