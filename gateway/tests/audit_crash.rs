//! The real `warden serve` binary killed with SIGKILL while audit events sit
//! in its spool (PostgreSQL unreachable), then restarted against the live
//! database: every acknowledged request's events are stored exactly once and
//! the chains verify. The same run checks that no API key, Authorization
//! value or upstream key appears in any audit table, the spool or the logs.

mod cli_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use warden_audit::spool::SPOOL_FILE;
use warden_audit::store::Record;
use warden_audit::SealedEvent;
use warden_tests::*;

/// The upstream key the gateway sends (the fake upstream insists on it).
const UPSTREAM_KEY: &str = "upstream-secret";
/// A key that authenticates nobody.
const WRONG_KEY: &str = "sk-wrong-5f1d7c3a9b2e4d6f";

struct Gateway {
    child: Child,
    base: String,
    logs: (PathBuf, PathBuf),
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `warden serve` on `config` with `database_url`, logging at debug
/// level into files beside the config; waits for /healthz.
async fn serve(config: &Path, database_url: &str, run: &str) -> Gateway {
    let port = free_port();
    let dir = config.parent().unwrap();
    let logs = (
        dir.join(format!("{run}.stdout")),
        dir.join(format!("{run}.stderr")),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["serve", "--config"])
        .arg(config)
        .env("WARDEN_LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database_url)
        // The database is migrated beforehand; at the first start it is unreachable.
        .env("WARDEN_DATABASE__MIGRATE_ON_START", "false")
        .env("UPSTREAM_KEY_FOR_TEST", UPSTREAM_KEY)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(std::fs::File::create(&logs.0).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&logs.1).unwrap()))
        .spawn()
        .unwrap();
    let gw = Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
        logs,
    };
    let client = reqwest::Client::new();
    let up = eventually(Duration::from_secs(30), || async {
        client
            .get(format!("{}/healthz", gw.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up, "the gateway did not start: {}", read_lossy(&gw.logs.1));
    gw
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Sends a chat turn with `key`; returns the status and the request id.
async fn chat(gw: &Gateway, key: &str, user: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(key)
        .json(&json!({"model": "up", "messages": [{"role": "user", "content": user}]}))
        .send()
        .await
        .unwrap();
    let id = res
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (res.status().as_u16(), id)
}

/// The events in the spool file, in order; stops at an incomplete frame
/// (the writer may be appending).
fn spooled_events(path: &Path) -> Vec<SealedEvent> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut events = Vec::new();
    let mut at = 0;
    while at + 10 <= bytes.len() {
        assert_eq!(bytes[at..at + 2], [0xA5, 0x17], "frame magic at {at}");
        let len = u32::from_le_bytes(bytes[at + 2..at + 6].try_into().unwrap()) as usize;
        let Some(payload) = bytes.get(at + 10..at + 10 + len) else {
            break;
        };
        if let Record::Event(e) = serde_json::from_slice(payload).unwrap() {
            events.push(*e);
        }
        at += 10 + len;
    }
    events
}

/// Every audit table as text, one row per line.
async fn audit_tables_text(pool: &sqlx::PgPool) -> String {
    let mut all = String::new();
    for table in [
        "audit_events",
        "audit_policies",
        "audit_streams",
        "audit_checkpoints",
        "api_keys",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {table} t"
        )))
        .fetch_all(pool)
        .await
        .unwrap();
        all.push_str(&rows.join("\n"));
        all.push('\n');
    }
    all
}

fn warden(args: &[&str], db: &TestDb) -> std::process::Output {
    cli_support::warden_db(args, &db.url)
}

#[actix_web::test]
async fn sigkill_with_events_in_the_spool_loses_nothing_and_no_secret_is_stored() {
    let db = TestDb::create().await;
    warden(&["migrate"], &db);
    let out = warden(&["keys", "create", "--tenant", "globex"], &db);
    let db_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let mut setup = Setup::new();
    setup.database_url = Some(db.url.clone());
    let config = setup.write();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[[models]]\nname = \"up\"\n",
        "[[models]]\nname = \"up\"\napi_key_env = \"UPSTREAM_KEY_FOR_TEST\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let spool = setup.dir.path().join("spool").join(SPOOL_FILE);
    let name = db.url.rsplit_once('/').unwrap().1;
    let dead_url = format!("postgres://postgres@127.0.0.1:{}/{name}", free_port());

    // PostgreSQL unreachable: allowed, flagged and blocked turns are served
    // and their events go to the spool.
    let first = serve(&config, &dead_url, "first").await;
    let mut acknowledged = BTreeMap::new();
    for i in 0..12 {
        let user = match i % 3 {
            0 => format!("SAY: answer {i}"),
            1 => format!("ask a lawyer {i}"),
            _ => format!("bombrecipe {i}"),
        };
        let (status, id) = chat(&first, KEY, &user).await;
        assert!(matches!(status, 200 | 400), "{status} for {user}");
        acknowledged.insert(id, status);
    }
    let (status, _) = chat(&first, WRONG_KEY, "hello").await;
    assert!(
        status >= 400,
        "an unknown key is refused while the database is down"
    );
    // Wait until the last event of every acknowledged request (its decision)
    // is in the spool; the writer keeps order, so the rest is too.
    let all_spooled = eventually(Duration::from_secs(30), || async {
        let decided: BTreeSet<String> = spooled_events(&spool)
            .iter()
            .filter(|e| e.index.kind.as_str() == "decision")
            .map(|e| e.request_id.to_string())
            .collect();
        acknowledged.keys().all(|id| decided.contains(id))
    })
    .await;
    assert!(all_spooled, "{}", read_lossy(&first.logs.1));

    let mut first = first;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let spooled = spooled_events(&spool);
    let spool_bytes = std::fs::read(&spool).unwrap();

    // Restarted against the live database: the spool is replayed.
    let second = serve(&config, &db.url, "second").await;
    let drained = eventually(Duration::from_secs(30), || async {
        std::fs::metadata(&spool)
            .map(|m| m.len() == 0)
            .unwrap_or(false)
    })
    .await;
    assert!(drained, "{}", read_lossy(&second.logs.1));
    // Live traffic with the database key, the static key and a wrong key.
    assert_eq!(chat(&second, &db_key, "SAY: live answer").await.0, 200);
    assert_eq!(chat(&second, KEY, "SAY: another").await.0, 200);
    assert_eq!(chat(&second, WRONG_KEY, "hello").await.0, 401);
    // SIGTERM: a graceful stop flushes the writer.
    let mut second = second;
    let pid = second.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    second.child.wait().unwrap();

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let ids: Vec<String> = acknowledged.keys().cloned().collect();
    let stored: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "SELECT event_id, request_id, kind FROM audit_events WHERE request_id = ANY($1) ORDER BY stream_id, seq",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await
    .unwrap();
    let spooled_ids: Vec<uuid::Uuid> = spooled
        .iter()
        .filter(|e| acknowledged.contains_key(e.request_id.as_str()))
        .map(|e| e.event_id)
        .collect();
    let stored_ids: Vec<uuid::Uuid> = stored.iter().map(|r| r.0).collect();
    assert_eq!(
        stored_ids, spooled_ids,
        "exactly once, in the stream's order"
    );
    for (id, status) in &acknowledged {
        let decisions = stored
            .iter()
            .filter(|r| &r.1 == id && r.2 == "decision")
            .count();
        assert_eq!(decisions, 1, "request {id} ({status}) has its decision");
    }
    let live: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT request_id) FROM audit_events WHERE kind = 'decision' AND NOT request_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(live >= 2, "the live turns after the restart are audited");
    let verify = warden(&["audit", "verify"], &db);
    let report: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["breaks"], json!([]), "{report}");
    assert_eq!(report["streams"], 2, "one stream per gateway start");

    // No secret anywhere: audit tables, spool, logs of both runs.
    let mut haystacks = vec![
        ("audit tables", audit_tables_text(&pool).await),
        ("spool", String::from_utf8_lossy(&spool_bytes).into_owned()),
    ];
    for gw in [&first, &second] {
        for log in [&gw.logs.0, &gw.logs.1] {
            haystacks.push(("log", read_lossy(log)));
        }
    }
    assert!(
        haystacks.iter().any(|(_, h)| h.contains("DEBUG")),
        "debug logging was on"
    );
    for (what, text) in &haystacks {
        for secret in [KEY, ADMIN_KEY, db_key.as_str(), UPSTREAM_KEY, WRONG_KEY] {
            assert!(!text.contains(secret), "{what} holds a key: {secret}");
        }
        assert!(
            !text.to_ascii_lowercase().contains("bearer "),
            "{what} holds an Authorization value"
        );
    }
    pool.close().await;
    db.drop_db().await;
}
