//! Policy hot reload in a running gateway: a valid change takes effect for
//! the next request, an invalid one is refused and the old policy keeps
//! serving; a request in flight finishes under the version it started with;
//! by file watcher (in-process) and by SIGHUP (the real binary).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use warden_tests::*;

const SWEAR: &str = "fiddlesticks";

fn with_swear_rule(policy: &str) -> String {
    format!("{policy}\x20 - {{id: swear, category: S12, match: {{keywords: [{SWEAR}]}}}}\n")
}

async fn blocked(gw: &Gateway) -> bool {
    gw.chat("up", &format!("say {SWEAR}")).await.status() == 400
}

#[actix_web::test]
async fn watcher_applies_valid_changes_and_refuses_invalid_ones() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let file = setup.policy_dir().join("default.yaml");
    assert!(!blocked(&gw).await);

    // A valid change: the next requests run under it.
    replace_file(&file, &with_swear_rule(&setup.policy));
    assert!(
        eventually(Duration::from_secs(10), || blocked(&gw)).await,
        "the new rule never took effect"
    );
    let version_after_good = readyz(&gw).await["policies"]["version"].clone();

    // An invalid change (unknown field): refused, the last good set serves.
    replace_file(
        &file,
        &format!("{}bogus_setting: 1\n", with_swear_rule(&setup.policy)),
    );
    let refused = eventually(Duration::from_secs(10), || async {
        readyz(&gw).await["policies"]["reloads_failed"].as_u64() == Some(1)
    })
    .await;
    assert!(refused, "the invalid change was not refused");
    let ready = readyz(&gw).await;
    assert_eq!(ready["policies"]["version"], version_after_good);
    let errors = ready["policies"]["last_reload_errors"].as_array().unwrap();
    assert!(
        errors[0].as_str().unwrap().contains("bogus_setting"),
        "{errors:?}"
    );
    assert!(blocked(&gw).await, "the last good policy must keep serving");
    let metrics = metrics_text(&gw.base).await;
    assert!(
        metrics.contains("warden_policy_reload_failures_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("warden_policy_reload_failing 1"));
    gw.stop().await;
}

#[actix_web::test]
async fn a_request_in_flight_finishes_under_the_policy_it_started_with() {
    let db = TestDb::create().await;
    let mut setup = Setup::new();
    setup.database_url = Some(db.url.clone());
    setup.upstream_timeout = 10.0;
    let gw = setup.start().await;
    let file = setup.policy_dir().join("default.yaml");
    let version_of = |body: &Value| body["warden"]["policy"]["version"].clone();
    let before: Value = gw.chat("up", "hello").await.json().await.unwrap();
    let old = version_of(&before);
    let set_before = readyz(&gw).await["policies"]["version"].clone();

    // The upstream holds this answer for 3 s; the policy changes meanwhile.
    let (slow, reloaded) = tokio::join!(gw.chat("up", "SLEEP:3000 hello"), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        replace_file(&file, &with_swear_rule(&setup.policy));
        eventually(Duration::from_secs(10), || async {
            readyz(&gw).await["policies"]["version"] != set_before
        })
        .await
    });
    assert!(reloaded, "the change was never applied");
    assert_eq!(slow.status(), 200);
    let slow: Value = slow.json().await.unwrap();
    assert_eq!(
        version_of(&slow),
        old,
        "the in-flight request changed policy"
    );
    let after: Value = gw.chat("up", "hello").await.json().await.unwrap();
    assert_ne!(
        version_of(&after),
        old,
        "the next request must use the new policy"
    );

    // The audit trail records the version each request ran under.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let versions = |id: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT DISTINCT policy_version FROM audit_events \
                 WHERE request_id = $1 AND policy_version IS NOT NULL",
            )
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let slow_id = slow["warden"]["request_id"].as_str().unwrap().to_owned();
    let after_id = after["warden"]["request_id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || async {
            !versions(slow_id.clone()).await.is_empty()
                && !versions(after_id.clone()).await.is_empty()
        })
        .await,
        "the requests were never audited"
    );
    assert_eq!(
        versions(slow_id).await,
        vec![old.as_str().unwrap().to_owned()]
    );
    assert_eq!(
        versions(after_id).await,
        vec![version_of(&after).as_str().unwrap().to_owned()]
    );
    pool.close().await;
    gw.stop().await;
    db.drop_db().await;
}

async fn readyz(gw: &Gateway) -> Value {
    gw.client
        .get(format!("{}/readyz", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[actix_web::test]
async fn sighup_reloads_the_real_binary() {
    let setup = Setup::new();
    let mut text = std::fs::read_to_string(setup.write()).unwrap();
    text = text.replace("watch = true", "watch = false");
    let config = setup.dir.path().join("warden.toml");
    std::fs::write(&config, text).unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("WARDEN_LISTEN", format!("127.0.0.1:{port}"))
        // The test script exports DATABASE_URL; this gateway runs without one.
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let process = Process(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let up = eventually(Duration::from_secs(30), || async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up, "the gateway did not start");
    let chat = || async {
        client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&json!({"model": "up", "messages": [{"role": "user", "content": format!("say {SWEAR}")}]}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(chat().await, 200);
    let file = setup.policy_dir().join("default.yaml");
    replace_file(&file, &with_swear_rule(&setup.policy));
    // Without the watcher nothing changes until SIGHUP.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(chat().await, 200);
    let pid = process.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(eventually(Duration::from_secs(10), || async { chat().await == 400 }).await);
    // An invalid file and SIGHUP: refused, still blocking under the old set.
    replace_file(&file, "id: default\nnot yaml: [\n");
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let refused = eventually(Duration::from_secs(10), || async {
        let v: Value = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["policies"]["reloads_failed"].as_u64() == Some(1)
    })
    .await;
    assert!(refused);
    assert_eq!(chat().await, 400);
    drop(process);
}
