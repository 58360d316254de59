//! The audit query API over HTTP against a real PostgreSQL (a fresh database
//! per test): chat requests of two tenants go through the in-process gateway,
//! then `/v1/audit/*` is read back with each tenant's key.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use warden_tests::*;

/// A second key of tenant `acme` (id `acme-2`).
const KEY_A2: &str = "sk-test-acme-second-key-42";
/// The key of tenant `globex` (id `globex-key`).
const KEY_B: &str = "sk-test-globex-key-0042";

/// A gateway with audited traffic of two tenants.
struct Seeded {
    _setup: Setup,
    db: TestDb,
    gw: Gateway,
    pool: PgPool,
    /// acme, key `test-key`, allowed.
    allowed: String,
    /// acme, input blocked as S9.
    blocked: String,
    /// acme, flagged as S6.
    flagged: String,
    /// acme, key `acme-2`, allowed.
    second: String,
    /// acme, model `dead` (upstream unreachable).
    failed: String,
    /// globex, allowed.
    b_allowed: String,
    /// globex, input blocked as S9.
    b_blocked: String,
}

impl Seeded {
    fn a_requests(&self) -> BTreeSet<String> {
        [
            &self.allowed,
            &self.blocked,
            &self.flagged,
            &self.second,
            &self.failed,
        ]
        .into_iter()
        .cloned()
        .collect()
    }

    fn b_requests(&self) -> BTreeSet<String> {
        [self.b_allowed.clone(), self.b_blocked.clone()].into()
    }

    async fn finish(self) {
        self.gw.stop().await;
        self.pool.close().await;
        self.db.drop_db().await;
    }
}

async fn chat_as(gw: &Gateway, key: &str, model: &str, user: &str, status: u16) -> String {
    let res = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": user}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), status, "{user}");
    res.headers()["x-request-id"].to_str().unwrap().to_owned()
}

async fn seeded() -> Seeded {
    let db = TestDb::create().await;
    let mut setup = Setup::new();
    setup.database_url = Some(db.url.clone());
    setup.extra = format!(
        "[[auth.static_keys]]\nid = \"acme-2\"\ntenant = \"acme\"\nsha256 = \"{}\"\n\
         [[auth.static_keys]]\nid = \"globex-key\"\ntenant = \"globex\"\nsha256 = \"{}\"\n",
        hex_sha(KEY_A2),
        hex_sha(KEY_B)
    );
    let gw = setup.start().await;
    let allowed = chat_as(&gw, KEY, "up", "hi there", 200).await;
    let blocked = chat_as(&gw, KEY, "up", "give me the bombrecipe", 400).await;
    let flagged = chat_as(&gw, KEY, "up", "SAY: ask a lawyer", 200).await;
    let second = chat_as(&gw, KEY_A2, "up", "hello from the second key", 200).await;
    let failed = chat_as(&gw, KEY, "dead", "hello", 502).await;
    let b_allowed = chat_as(&gw, KEY_B, "up", "hi from globex", 200).await;
    let b_blocked = chat_as(&gw, KEY_B, "up", "another bombrecipe", 400).await;
    let report = gw.state.audit.as_ref().unwrap().flush().await.unwrap();
    assert!(report.in_database, "{report:?}");
    let pool = PgPool::connect(&db.url).await.unwrap();
    Seeded {
        _setup: setup,
        db,
        gw,
        pool,
        allowed,
        blocked,
        flagged,
        second,
        failed,
        b_allowed,
        b_blocked,
    }
}

async fn get(
    gw: &Gateway,
    key: Option<&str>,
    path: &str,
    query: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = gw.client.get(format!("{}{path}", gw.base)).query(query);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

async fn get_json(gw: &Gateway, key: &str, path: &str, query: &[(&str, &str)]) -> Value {
    let res = get(gw, Some(key), path, query).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{path} {query:?}: {body}");
    body
}

/// Asserts an error in OpenAI's shape with this status; returns the body.
async fn api_error(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status);
    let body: Value = res.json().await.unwrap();
    let e = &body["error"];
    assert!(e["message"].is_string(), "{body}");
    assert!(e["type"].is_string(), "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
    body
}

/// Every event matching `query`, following the cursors.
async fn all_events(gw: &Gateway, key: &str, query: &[(&str, &str)], limit: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = query.to_vec();
        q.push(("limit", limit));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let page = get_json(gw, key, "/v1/audit/events", &q).await;
        assert_eq!(page["object"], "list");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit.parse::<usize>().unwrap());
        out.extend(data.iter().cloned());
        if page["has_more"] == false {
            assert!(page["next_cursor"].is_null(), "{page}");
            return out;
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
    }
}

fn request_ids(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["request_id"].as_str().unwrap().to_owned())
        .collect()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .to_utc()
}

async fn tenant_count(pool: &PgPool, tenant: &str) -> usize {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await
        .unwrap();
    n as usize
}

#[actix_web::test]
async fn events_are_filtered_and_paged_within_the_tenant() {
    let s = seeded().await;
    let gw = &s.gw;

    let all = all_events(gw, KEY, &[], "1000").await;
    assert_eq!(all.len(), tenant_count(&s.pool, "acme").await);
    assert!(all.iter().all(|e| e["tenant_id"] == "acme"));
    assert_eq!(request_ids(&all), s.a_requests());
    let times: Vec<_> = all.iter().map(|e| time(&e["occurred_at"])).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    // Pages of 2 add up to the same list, in the same order, without repeats.
    let paged = all_events(gw, KEY, &[], "2").await;
    let ids = |v: &[Value]| v.iter().map(|e| e["event_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&paged), ids(&all));
    let first = get_json(gw, KEY, "/v1/audit/events", &[("limit", "2")]).await;
    assert_eq!(first["has_more"], true);
    assert!(first["next_cursor"].is_string());

    let only = |q: &'static [(&'static str, &'static str)]| async move {
        let events = all_events(gw, KEY, q, "1000").await;
        assert!(!events.is_empty(), "{q:?} matched nothing");
        events
    };
    let blocked = only(&[("decision", "blocked")]).await;
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0]["request_id"], s.blocked.as_str());
    assert_eq!(blocked[0]["kind"], "decision");

    let decisions = only(&[("kind", "decision")]).await;
    assert_eq!(decisions.len(), 5);
    assert_eq!(request_ids(&decisions), s.a_requests());

    let input = only(&[("checkpoint", "input")]).await;
    assert!(input.iter().all(|e| e["checkpoint"] == "input"));
    assert!(input.iter().any(|e| e["kind"] == "guard_verdict"));
    assert!(request_ids(&input).contains(&s.allowed));

    let s6 = only(&[("category", "S6")]).await;
    assert!(s6
        .iter()
        .all(|e| e["categories"].as_array().unwrap().contains(&json!("S6"))));
    assert_eq!(request_ids(&s6), [s.flagged.clone()].into());
    let s9 = only(&[("category", "S9")]).await;
    assert_eq!(request_ids(&s9), [s.blocked.clone()].into());

    let dead = only(&[("model", "dead")]).await;
    assert!(dead.iter().all(|e| e["model"] == "dead"));
    assert_eq!(request_ids(&dead), [s.failed.clone()].into());

    let second = only(&[("key", "acme-2")]).await;
    assert!(second.iter().all(|e| e["key_id"] == "acme-2"));
    assert_eq!(request_ids(&second), [s.second.clone()].into());

    // Filters combine with AND.
    let combined = only(&[("key", "test-key"), ("decision", "allowed")]).await;
    assert_eq!(request_ids(&combined), [s.allowed.clone()].into());

    // Time range: `since` inclusive, `until` exclusive.
    let oldest = *times.last().unwrap();
    let newest = times[0];
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (since, until) = (fmt(oldest), fmt(newest + chrono::Duration::microseconds(1)));
    let window = all_events(gw, KEY, &[("since", &since), ("until", &until)], "1000").await;
    assert_eq!(window.len(), all.len());
    let before = all_events(gw, KEY, &[("until", &fmt(oldest))], "1000").await;
    assert!(before.is_empty());
    let later = fmt(Utc::now() + chrono::Duration::hours(1));
    assert!(all_events(gw, KEY, &[("since", &later)], "1000")
        .await
        .is_empty());
    let mid = fmt(times[times.len() / 2]);
    let newer = all_events(gw, KEY, &[("since", &mid)], "1000").await;
    assert!(newer
        .iter()
        .all(|e| time(&e["occurred_at"]) >= times[times.len() / 2]));
    assert!(!newer.is_empty() && newer.len() < all.len());

    // Bad parameters are 400s naming the parameter.
    for (q, param) in [
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "1001")], "limit"),
        (vec![("cursor", "not-a-cursor")], "cursor"),
        (vec![("since", "yesterday")], "since"),
        (vec![("decision", "maybe")], "decision"),
        (vec![("checkpoint", "middle")], "checkpoint"),
        (vec![("kind", "thing")], "kind"),
        (
            vec![("since", since.as_str()), ("until", since.as_str())],
            "until",
        ),
    ] {
        let body = api_error(get(gw, Some(KEY), "/v1/audit/events", &q).await, 400).await;
        assert_eq!(body["error"]["param"], param, "{q:?}: {body}");
    }
    // A misspelt filter is refused rather than silently widening the query.
    for (path, param) in [
        ("/v1/audit/events", "categroy"),
        ("/v1/audit/export", "limit"),
        ("/v1/audit/stats", "decision"),
    ] {
        let res = get(gw, Some(KEY), path, &[(param, "S9")]).await;
        let body = api_error(res, 400).await;
        assert_eq!(body["error"]["param"], param, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unknown_parameter", "{path}: {body}");
    }
    s.finish().await;
}

#[actix_web::test]
async fn a_request_story_is_complete_and_in_order() {
    let s = seeded().await;
    let gw = &s.gw;
    let story = get_json(gw, KEY, &format!("/v1/audit/requests/{}", s.allowed), &[]).await;
    assert_eq!(story["object"], "audit.request");
    assert_eq!(story["request_id"], s.allowed.as_str());
    let events = story["data"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let checkpoints: Vec<&str> = events
        .iter()
        .map(|e| e["checkpoint"].as_str().unwrap_or("-"))
        .collect();
    // The request, the message in, the input verdicts (rules, fake guard),
    // the output verdicts, the answer as delivered (after its guard), the decision.
    assert_eq!(
        kinds,
        [
            "request",
            "message",
            "guard_verdict",
            "guard_verdict",
            "guard_verdict",
            "guard_verdict",
            "message",
            "decision"
        ],
        "{story}"
    );
    assert_eq!(&checkpoints[2..6], ["input", "input", "output", "output"]);
    assert_eq!(events[1]["body"]["direction"], "input");
    assert_eq!(events[6]["body"]["direction"], "output");
    assert_eq!(events[6]["body"]["content"]["text"], "Hello from upstream.");
    assert_eq!(events[7]["decision"], "allowed");
    // One writer stream: the sequence numbers climb in story order.
    assert!(events
        .windows(2)
        .all(|w| w[0]["stream_id"] == w[1]["stream_id"]
            && w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE request_id = $1")
        .bind(&s.allowed)
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(events.len() as i64, stored);

    // The policy version the events name is stored once, with its text: the
    // explanation, then each document as the canonical JSON its version
    // hashes, so an auditor can check both.
    let (id, version) = (
        events[0]["policy"]["id"].as_str().unwrap(),
        events[0]["policy"]["version"].as_str().unwrap(),
    );
    assert!(events.iter().all(|e| e["policy"] == events[0]["policy"]));
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT body, body_sha256 FROM audit_policies WHERE policy_id = $1 AND version = $2",
    )
    .bind(id)
    .bind(version)
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "stored once");
    let (body, digest) = &rows[0];
    assert_eq!(
        digest.as_slice(),
        Sha256::digest(body.as_bytes()).as_slice()
    );
    assert!(
        body.starts_with(&format!("effective policy {id}\nversion {version}\n")),
        "{body}"
    );
    let mut documents = 0;
    let mut lines = body.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("document ") {
            let (_, doc_version) = rest.split_once(" version ").unwrap();
            let json = lines.next().unwrap();
            assert_eq!(hex::encode(Sha256::digest(json.as_bytes())), doc_version);
            documents += 1;
        }
    }
    assert!(documents >= 1, "{body}");

    // A refused request stops at the input checkpoint.
    let story = get_json(gw, KEY, &format!("/v1/audit/requests/{}", s.blocked), &[]).await;
    let events = story["data"].as_array().unwrap();
    assert_eq!(events[0]["kind"], "request");
    let last = events.last().unwrap();
    assert_eq!(
        (&last["kind"], &last["decision"]),
        (&json!("decision"), &json!("blocked"))
    );
    assert_eq!(last["categories"], json!(["S9"]));
    assert!(events.iter().all(|e| e["checkpoint"] != "output"));
    assert_eq!(
        events.iter().filter(|e| e["kind"] == "message").count(),
        1,
        "no answer recorded"
    );

    // Unknown ids are 404 in OpenAI's shape.
    let res = get(gw, Some(KEY), "/v1/audit/requests/no-such-request", &[]).await;
    let body = api_error(res, 404).await;
    assert_eq!(body["error"]["code"], "request_not_found");
    s.finish().await;
}

#[actix_web::test]
async fn tenant_b_gets_nothing_of_tenant_a_from_any_route() {
    let s = seeded().await;
    let gw = &s.gw;
    let a = s.a_requests();

    let events = all_events(gw, KEY_B, &[], "1000").await;
    assert_eq!(events.len(), tenant_count(&s.pool, "globex").await);
    assert!(events.iter().all(|e| e["tenant_id"] == "globex"));
    assert_eq!(request_ids(&events), s.b_requests());
    // Filters naming A's key or model find nothing either.
    for q in [
        [("key", "test-key")],
        [("key", "acme-2")],
        [("model", "dead")],
    ] {
        assert!(all_events(gw, KEY_B, &q, "1000").await.is_empty(), "{q:?}");
    }
    let blocked = all_events(gw, KEY_B, &[("decision", "blocked")], "1000").await;
    assert_eq!(request_ids(&blocked), [s.b_blocked.clone()].into());

    // A's request ids are 404 for B (as unknown ids are), and the other way round.
    for id in &a {
        let res = get(gw, Some(KEY_B), &format!("/v1/audit/requests/{id}"), &[]).await;
        let body = api_error(res, 404).await;
        assert_eq!(body["error"]["code"], "request_not_found");
    }
    let res = get(
        gw,
        Some(KEY),
        &format!("/v1/audit/requests/{}", s.b_allowed),
        &[],
    )
    .await;
    api_error(res, 404).await;
    // The other acme key sees acme's requests: the tenant decides, not the key.
    get_json(
        gw,
        KEY_A2,
        &format!("/v1/audit/requests/{}", s.allowed),
        &[],
    )
    .await;

    for format in ["jsonl", "csv"] {
        let res = get(gw, Some(KEY_B), "/v1/audit/export", &[("format", format)]).await;
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        assert!(a.iter().all(|id| !text.contains(id.as_str())), "{format}");
        assert!(!text.contains("acme"), "{format}");
    }

    let stats = get_json(gw, KEY_B, "/v1/audit/stats", &[]).await;
    let total: i64 = stats["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["category"].is_null())
        .map(|c| c["count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 2, "{stats}");
    s.finish().await;
}

#[actix_web::test]
async fn exports_stream_jsonl_and_csv_of_the_tenants_rows() {
    let s = seeded().await;
    let gw = &s.gw;
    let api: HashMap<String, Value> = all_events(gw, KEY, &[], "1000")
        .await
        .into_iter()
        .map(|e| (e["event_id"].as_str().unwrap().to_owned(), e))
        .collect();

    let res = get(gw, Some(KEY), "/v1/audit/export", &[("format", "jsonl")]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let text = res.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), tenant_count(&s.pool, "acme").await);
    let times: Vec<_> = lines.iter().map(|e| time(&e["occurred_at"])).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    for line in &lines {
        assert_eq!(line["tenant_id"], "acme");
        // An exported event reads exactly as the event API shows it.
        assert_eq!(Some(line), api.get(line["event_id"].as_str().unwrap()));
    }

    // JSON Lines is the default.
    let res = get(gw, Some(KEY), "/v1/audit/export", &[]).await;
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    assert_eq!(res.text().await.unwrap(), text);

    let res = get(gw, Some(KEY), "/v1/audit/export", &[("format", "csv")]).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("audit-events.csv"));
    let rows = parse_csv(&res.text().await.unwrap());
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (id, tenant, body, decision) = (
        col("event_id"),
        col("tenant_id"),
        col("body"),
        col("decision"),
    );
    assert_eq!(rows.len() - 1, api.len());
    for row in &rows[1..] {
        assert_eq!(row.len(), header.len());
        assert_eq!(row[tenant], "acme");
        let event = &api[&row[id]];
        let parsed: Value = serde_json::from_str(&row[body]).unwrap();
        assert_eq!(parsed, event["body"]);
        assert_eq!(row[decision], event["decision"].as_str().unwrap_or(""));
    }

    // The event filters apply to exports too.
    let res = get(
        gw,
        Some(KEY),
        "/v1/audit/export",
        &[("format", "csv"), ("decision", "blocked")],
    )
    .await;
    let rows = parse_csv(&res.text().await.unwrap());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][col("request_id")], s.blocked);

    let res = get(gw, Some(KEY), "/v1/audit/export", &[("format", "xml")]).await;
    assert_eq!(api_error(res, 400).await["error"]["param"], "format");
    s.finish().await;
}

#[actix_web::test]
async fn stats_count_decisions_and_categories_per_day() {
    let s = seeded().await;
    let gw = &s.gw;
    let stats = get_json(gw, KEY, "/v1/audit/stats", &[]).await;
    assert_eq!(stats["object"], "list");
    // Summed over days, in case the run straddles UTC midnight.
    let mut counts: BTreeMap<(String, Option<String>), i64> = BTreeMap::new();
    let today = Utc::now().date_naive();
    for c in stats["data"].as_array().unwrap() {
        let day: chrono::NaiveDate = c["day"].as_str().unwrap().parse().unwrap();
        assert!((today - day).num_days() <= 1, "{c}");
        let key = (
            c["decision"].as_str().unwrap().to_owned(),
            c["category"].as_str().map(str::to_owned),
        );
        *counts.entry(key).or_default() += c["count"].as_i64().unwrap();
    }
    let k = |d: &str, c: Option<&str>| (d.to_owned(), c.map(str::to_owned));
    let expected: BTreeMap<_, _> = [
        (k("allowed", None), 2),
        (k("blocked", None), 1),
        (k("blocked", Some("S9")), 1),
        (k("error", None), 1),
        (k("flagged", None), 1),
        (k("flagged", Some("S6")), 1),
    ]
    .into();
    assert_eq!(counts, expected, "{stats}");
    // The totals agree with the stored decisions.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE tenant_id = 'acme' AND kind = 'decision'",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let total: i64 = counts
        .iter()
        .filter(|((_, c), _)| c.is_none())
        .map(|(_, n)| n)
        .sum();
    assert_eq!(total, stored);

    // A range in the future is empty; an empty range is refused.
    let day = |n| {
        (Utc::now() + chrono::Duration::days(n)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let (later, much_later) = (day(1), day(2));
    let stats = get_json(
        gw,
        KEY,
        "/v1/audit/stats",
        &[("since", &later), ("until", &much_later)],
    )
    .await;
    assert_eq!(stats["data"], json!([]), "{stats}");
    let res = get(
        gw,
        Some(KEY),
        "/v1/audit/stats",
        &[("since", &later), ("until", &later)],
    )
    .await;
    assert_eq!(api_error(res, 400).await["error"]["param"], "until");
    s.finish().await;
}

#[actix_web::test]
async fn verify_is_admin_only_and_names_a_tampered_event() {
    let s = seeded().await;
    let gw = &s.gw;
    let body = api_error(get(gw, None, "/v1/audit/verify", &[]).await, 401).await;
    assert_eq!(body["error"]["code"], "invalid_api_key");
    for key in [KEY, KEY_B] {
        let body = api_error(get(gw, Some(key), "/v1/audit/verify", &[]).await, 403).await;
        assert_eq!(body["error"]["code"], "insufficient_permissions");
    }

    let report = get_json(gw, ADMIN_KEY, "/v1/audit/verify", &[]).await;
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["breaks"], json!([]));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(report["events"].as_i64(), Some(stored));
    assert_eq!(report["streams"], 1);

    // As a superuser with the append-only trigger bypassed, edit the text
    // of the allowed request's answer.
    let (victim, seq, stream): (uuid::Uuid, i64, uuid::Uuid) = sqlx::query_as(
        "SELECT event_id, seq, stream_id FROM audit_events \
         WHERE request_id = $1 AND kind = 'message' ORDER BY seq DESC LIMIT 1",
    )
    .bind(&s.allowed)
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let mut tx = s.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    let done = sqlx::query(
        "UPDATE audit_events SET body = jsonb_set(body, '{content,text}', '\"edited\"') \
         WHERE event_id = $1",
    )
    .bind(victim)
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);
    tx.commit().await.unwrap();

    let report = get_json(gw, ADMIN_KEY, "/v1/audit/verify", &[]).await;
    assert_eq!(report["intact"], false, "{report}");
    let breaks = report["breaks"].as_array().unwrap();
    assert_eq!(breaks.len(), 1, "{report}");
    assert_eq!(breaks[0]["problem"], "changed");
    assert_eq!(breaks[0]["event_id"], victim.to_string());
    assert_eq!(breaks[0]["seq"], seq);
    assert_eq!(breaks[0]["stream_id"], stream.to_string());
    s.finish().await;
}

#[actix_web::test]
async fn without_a_database_the_audit_routes_answer_503() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let routes = [
        "/v1/audit/events",
        "/v1/audit/requests/some-id",
        "/v1/audit/export",
        "/v1/audit/stats",
    ];
    for path in routes {
        let body = api_error(get(&gw, Some(KEY), path, &[]).await, 503).await;
        assert_eq!(body["error"]["code"], "audit_not_configured", "{path}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database"));
        // Authentication still comes first.
        api_error(get(&gw, None, path, &[]).await, 401).await;
    }
    let body = api_error(
        get(&gw, Some(ADMIN_KEY), "/v1/audit/verify", &[]).await,
        503,
    )
    .await;
    assert_eq!(body["error"]["code"], "audit_not_configured");
    api_error(get(&gw, Some(KEY), "/v1/audit/verify", &[]).await, 403).await;

    // Other methods are 405 in OpenAI's shape.
    for path in routes.iter().chain(&["/v1/audit/verify"]) {
        let res = gw
            .client
            .post(format!("{}{path}", gw.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let body = api_error(res, 405).await;
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }

    let doc: Value = get(&gw, None, "/openapi.json", &[])
        .await
        .json()
        .await
        .unwrap();
    for path in routes.iter().chain(&["/v1/audit/verify"]) {
        let path = path.replace("some-id", "{id}");
        assert!(doc["paths"][&path]["get"].is_object(), "{path} missing");
    }
    for schema in [
        "AuditEventList",
        "AuditEvent",
        "AuditRequestStory",
        "AuditStats",
        "AuditVerifyReport",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    let params = doc["paths"]["/v1/audit/events"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let names: BTreeSet<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    for name in [
        "since",
        "until",
        "decision",
        "checkpoint",
        "category",
        "model",
        "key",
        "limit",
        "cursor",
    ] {
        assert!(names.contains(name), "{name} not documented");
    }
    gw.stop().await;
}

#[actix_web::test]
async fn with_the_database_down_the_audit_routes_answer_503() {
    let mut setup = Setup::new();
    setup.database_url = Some(format!("postgres://postgres@{}/none", dead_addr()));
    let path = setup.write();
    // Start without migrating: the gateway comes up while PostgreSQL is away.
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[database]\n",
        "[database]\nmigrate_on_start = false\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let config = warden_gateway::config::Config::load(&path, std::iter::empty()).unwrap();
    let running = warden_gateway::server::start(config).await.unwrap();
    let gw = Gateway {
        base: format!("http://{}", running.addr),
        client: reqwest::Client::new(),
        handle: running.handle.clone(),
        state: running.state.clone(),
    };
    actix_web::rt::spawn(running.server);

    let calls = [
        (KEY, "/v1/audit/events", vec![]),
        (KEY, "/v1/audit/requests/some-id", vec![]),
        // The CSV header is ready before the query fails: still an error status.
        (KEY, "/v1/audit/export", vec![("format", "csv")]),
        (KEY, "/v1/audit/export", vec![("format", "jsonl")]),
        (KEY, "/v1/audit/stats", vec![]),
        (ADMIN_KEY, "/v1/audit/verify", vec![]),
    ];
    // Each waits out the pool's acquire timeout, so ask all at once.
    let answers = futures_util::future::join_all(
        calls
            .iter()
            .map(|(key, path, query)| get(&gw, Some(key), path, query)),
    )
    .await;
    for ((_, path, _), res) in calls.iter().zip(answers) {
        let body = api_error(res, 503).await;
        assert_eq!(
            body["error"]["code"], "audit_database_unavailable",
            "{path}: {body}"
        );
    }
    gw.stop().await;
}
