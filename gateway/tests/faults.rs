//! The fault suite: the real `warden serve` binary under a steady load from
//! a second process (`tests/python/load.py`) while its parts fail —
//! PostgreSQL stopped and started, the gateway SIGKILLed with events in its
//! spool, the upstream generator killed, slow and talking garbage, the remote
//! guard killed, talking garbage and slow, a broken policy file reloaded, the
//! local engine saturated. For each run the invariants are asserted, not
//! eyeballed: every error in OpenAI's shape, every acknowledged turn audited
//! exactly once, the chains verify, no completion without both required
//! guards' verdicts at both checkpoints, and normal service again within
//! seconds of the fault clearing. Each run prints what the clients saw.

mod cli_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use warden_tests::faults::{
    now, recovery, tally, Fault, FaultyServer, Load, Outcome, PrivatePostgres, Role, WardenProcess,
};
use warden_tests::*;

/// Runs one at a time: each puts the 2-core machine under load and times
/// recovery.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Turns a second the load sends.
const RATE: u32 = 25;
/// The longest a fault may keep the gateway from serving after it clears.
const RECOVERY_LIMIT: f64 = 10.0;

/// Runs the `warden` CLI on `url`; its JSON output, if any.
fn warden_cli(args: &[&str], url: &str) -> Value {
    serde_json::from_slice(&cli_support::warden_db(args, url).stdout).unwrap_or(Value::Null)
}

/// A gateway set-up on the fake upstream `upstream` and fake guard `guard`
/// with audit into `url`.
fn setup(upstream: &FaultyServer, guard: &FaultyServer, url: &str) -> Setup {
    let mut setup = Setup::new();
    setup.upstream = upstream.addr;
    setup.guard = guard.addr;
    setup.database_url = Some(url.to_owned());
    setup
}

async fn start(config: &Path, url: &str) -> WardenProcess {
    WardenProcess::start(
        Path::new(env!("CARGO_BIN_EXE_warden")),
        config,
        &[
            ("DATABASE_URL", url),
            ("WARDEN_DATABASE__MIGRATE_ON_START", "false"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await
}

/// A fault run's parts: a fresh migrated database, a healthy fake upstream
/// and guard, and the gateway on them (`adjust` changes the set-up first).
struct Rig {
    db: TestDb,
    upstream: FaultyServer,
    guard: FaultyServer,
    setup: Setup,
    gw: WardenProcess,
}

async fn rig(adjust: impl FnOnce(&mut Setup)) -> Rig {
    let db = TestDb::create().await;
    warden_cli(&["migrate"], &db.url);
    let (upstream, guard) = (
        FaultyServer::start(Role::Upstream),
        FaultyServer::start(Role::Guard),
    );
    let mut setup = setup(&upstream, &guard, &db.url);
    adjust(&mut setup);
    let config = setup.write();
    let gw = start(&config, &db.url).await;
    Rig {
        db,
        upstream,
        guard,
        setup,
        gw,
    }
}

/// Every response is either a completion or an error in OpenAI's shape.
fn assert_openai_shapes(rows: &[Outcome]) {
    for r in rows {
        let Some(status) = r.status() else { continue };
        assert!(
            r.row.get("body_not_json").is_none(),
            "a body that is not JSON: {}",
            r.row
        );
        if status >= 400 {
            let e = &r.row["error"];
            assert!(
                e["message"].is_string() && e["type"].is_string(),
                "not OpenAI's error shape: {}",
                r.row
            );
        }
        assert!(r.request_id().is_some(), "no x-request-id: {}", r.row);
    }
}

/// No completion reached a client without both backends' verdicts, neither
/// of them an error, at both checkpoints.
fn assert_guarded(rows: &[Outcome]) {
    for r in rows.iter().filter(|r| r.status() == Some(200)) {
        let verdicts = r.row["verdicts"].as_array().expect("verdicts");
        for checkpoint in ["input", "output"] {
            for backend in ["rules", "fake-guard"] {
                let judged = verdicts.iter().any(|v| {
                    v[0] == checkpoint
                        && v[1] == backend
                        && matches!(v[2].as_str(), Some("safe" | "unsafe"))
                });
                assert!(judged, "{checkpoint} by {backend} missing: {}", r.row);
            }
        }
    }
}

/// Every acknowledged turn is in PostgreSQL exactly once (one request, at
/// least one verdict, one decision); no request id has two decisions; the
/// chains verify. Returns how many turns were audited.
async fn assert_audited(rows: &[Outcome], url: &str) -> usize {
    let acknowledged: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.acknowledged())
        .map(|r| r.request_id().unwrap().to_owned())
        .collect();
    let answered: Vec<String> = rows
        .iter()
        .filter_map(|r| r.request_id().map(str::to_owned))
        .collect();
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let counts = || async {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT request_id, kind, count(*) FROM audit_events WHERE request_id = ANY($1) GROUP BY 1, 2",
        )
        .bind(&answered)
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut by_id: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for (id, kind, n) in rows {
            by_id.entry(id).or_default().insert(kind, n);
        }
        by_id
    };
    let stored = eventually(Duration::from_secs(60), || async {
        let by_id = counts().await;
        acknowledged
            .iter()
            .all(|id| by_id.get(id).is_some_and(|k| k.contains_key("decision")))
    })
    .await;
    let by_id = counts().await;
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !by_id.get(*id).is_some_and(|k| k.contains_key("decision")))
        .collect();
    assert!(stored, "acknowledged turns never audited: {missing:?}");
    for id in &acknowledged {
        let kinds = &by_id[id];
        assert_eq!(kinds.get("request"), Some(&1), "{id}: {kinds:?}");
        assert!(
            kinds.get("guard_verdict").is_some_and(|n| *n >= 1),
            "{id}: {kinds:?}"
        );
    }
    for (id, kinds) in &by_id {
        assert!(
            kinds.get("decision").is_none_or(|n| *n == 1),
            "{id} decided twice: {kinds:?}"
        );
    }
    pool.close().await;
    let report = warden_cli(&["audit", "verify"], url);
    assert_eq!(report["breaks"], json!([]), "{report}");
    acknowledged.len()
}

/// Statuses seen in a window must be among `allowed` (the statuses the
/// fault may cause, plus the policy's own refusals) and include `expected`.
fn assert_window(rows: &[Outcome], from: f64, to: f64, allowed: &[u16], expected: u16, what: &str) {
    // Half a second either side: turns in flight when the fault changed.
    let inside: Vec<&Outcome> = rows
        .iter()
        .filter(|r| r.sent >= from + 0.5 && r.sent < to - 0.5)
        .collect();
    for r in &inside {
        let status = r.status().unwrap_or(0);
        let refusal = status == 400 && r.row["error"]["code"] == "content_filter";
        assert!(
            refusal || allowed.contains(&status),
            "{what}: unexpected answer {}",
            r.row
        );
    }
    assert!(
        inside.iter().any(|r| r.status() == Some(expected)),
        "{what}: no {expected} seen: {:?}",
        tally(rows, from, to)
    );
}

fn report(what: &str, rows: &[Outcome], phases: &[(&str, f64, f64)], audited: usize) {
    println!(
        "== {what}: {} requests sent, {} acknowledged, {audited} audited, 0 lost",
        rows.len(),
        rows.iter().filter(|r| r.acknowledged()).count()
    );
    for (name, from, to) in phases {
        println!("   {name:<28} {:?}", tally(rows, *from, *to));
    }
}

async fn create_database(admin_url: &str, name: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[actix_web::test]
async fn postgres_stopped_and_the_gateway_killed_under_load_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let pg = PrivatePostgres::start();
    create_database(&pg.admin_url, "warden").await;
    let url = pg.url("warden");
    warden_cli(&["migrate"], &url);
    let (upstream, guard) = (
        FaultyServer::start(Role::Upstream),
        FaultyServer::start(Role::Guard),
    );
    let setup = setup(&upstream, &guard, &url);
    let config = setup.write();
    let mut gw = start(&config, &url).await;

    let load = Load::start(&gw.base, KEY, "up", RATE, 24, setup.dir.path());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pg_down = now();
    pg.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Events of the last seconds sit in the spool: SIGKILL, then start again
    // with the database still down.
    let killed = now();
    gw.kill();
    gw.restart().await;
    let restarted = now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.resume();
    let pg_up = now();
    let rows = load.finish();
    let end = now();

    assert_openai_shapes(&rows);
    assert_guarded(&rows);
    // With the database down the turns are served (events go to the spool);
    // only the seconds the gateway was dead cost answers.
    assert_window(&rows, pg_down, killed, &[200], 200, "postgres down");
    assert_window(
        &rows,
        restarted,
        pg_up,
        &[200],
        200,
        "restarted, postgres down",
    );
    let back = recovery(&rows, restarted).expect("served after the restart");
    assert!(
        back < RECOVERY_LIMIT,
        "{back:.1} s to serve after the restart"
    );
    let audited = assert_audited(&rows, &url).await;
    gw.terminate();
    report(
        "postgres stopped, gateway SIGKILLed",
        &rows,
        &[
            ("before", 0.0, pg_down),
            ("postgres down", pg_down, killed),
            ("gateway killed, restarting", killed, restarted),
            ("restarted, postgres down", restarted, pg_up),
            ("postgres back", pg_up, end),
        ],
        audited,
    );
    println!("   first answer after the restart in {back:.2} s");
}

/// What a fault schedule does to a fake server.
enum Step {
    Kill,
    Revive,
    Set(Fault),
}

/// After 3 s of steady load, applies each step to `server` and holds it for
/// its seconds; the time each step began.
async fn schedule<const N: usize>(server: &mut FaultyServer, steps: [(Step, u64); N]) -> [f64; N] {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut began = [0.0; N];
    for (at, (step, secs)) in began.iter_mut().zip(steps) {
        *at = now();
        match step {
            Step::Kill => server.kill().await,
            Step::Revive => server.revive(),
            Step::Set(fault) => server.set(fault),
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    began
}

#[actix_web::test]
async fn upstream_killed_slow_and_talking_garbage() {
    let _serial = SERIAL.lock().await;
    let Rig {
        db,
        mut upstream,
        guard: _guard,
        setup,
        mut gw,
    } = rig(|_| {}).await;

    let load = Load::start(&gw.base, KEY, "up", RATE, 26, setup.dir.path());
    let mut phases = Vec::new();
    let [t0, t1, t2, t3, t4, t5] = schedule(
        &mut upstream,
        [
            (Step::Kill, 4),
            (Step::Revive, 3),
            (Step::Set(Fault::Slow), 4),
            (Step::Set(Fault::None), 3),
            (Step::Set(Fault::Garbage), 4),
            (Step::Set(Fault::None), 0),
        ],
    )
    .await;
    let rows = load.finish();
    phases.extend([
        ("upstream killed", t0, t1),
        ("upstream back", t1, t2),
        ("upstream slow (3 s > 1 s)", t2, t3),
        ("upstream back", t3, t4),
        ("upstream garbage", t4, t5),
        ("upstream back", t5, now()),
    ]);

    assert_openai_shapes(&rows);
    assert_guarded(&rows);
    assert_window(&rows, t0, t1, &[502], 502, "upstream killed");
    assert_window(&rows, t2, t3, &[504], 504, "upstream slow");
    assert_window(&rows, t4, t5, &[502], 502, "upstream garbage");
    for cleared in [t1, t3, t5] {
        let back = recovery(&rows, cleared).expect("served after the fault");
        assert!(back < RECOVERY_LIMIT, "{back:.1} s to serve again");
    }
    let audited = assert_audited(&rows, &db.url).await;
    gw.terminate();
    report("upstream faults", &rows, &phases, audited);
    db.drop_db().await;
}

#[actix_web::test]
async fn remote_guard_killed_talking_garbage_and_slow_fails_closed() {
    let _serial = SERIAL.lock().await;
    let Rig {
        db,
        upstream: _upstream,
        mut guard,
        setup,
        mut gw,
    } = rig(|_| {}).await;

    let load = Load::start(&gw.base, KEY, "up", RATE, 25, setup.dir.path());
    let [t0, t1, t2, t3, t4, t5] = schedule(
        &mut guard,
        [
            (Step::Kill, 4),
            (Step::Revive, 3),
            (Step::Set(Fault::Garbage), 4),
            (Step::Set(Fault::None), 3),
            (Step::Set(Fault::Slow), 5),
            (Step::Set(Fault::None), 0),
        ],
    )
    .await;
    let rows = load.finish();

    assert_openai_shapes(&rows);
    // Fail closed: no completion while the guard cannot judge.
    assert_guarded(&rows);
    assert_window(&rows, t0, t1, &[503], 503, "guard killed");
    assert_window(&rows, t2, t3, &[503], 503, "guard garbage");
    assert_window(&rows, t4, t5, &[503], 503, "guard slow (3 s > 2 s)");
    for r in rows.iter().filter(|r| r.status() == Some(503)) {
        assert_eq!(r.row["error"]["code"], "guard_unavailable", "{}", r.row);
    }
    for cleared in [t1, t3, t5] {
        let back = recovery(&rows, cleared).expect("served after the fault");
        assert!(back < RECOVERY_LIMIT, "{back:.1} s to serve again");
    }
    let audited = assert_audited(&rows, &db.url).await;
    gw.terminate();
    report(
        "remote guard faults",
        &rows,
        &[
            ("guard killed", t0, t1),
            ("guard back", t1, t2),
            ("guard garbage", t2, t3),
            ("guard back", t3, t4),
            ("guard slow", t4, t5),
            ("guard back", t5, now()),
        ],
        audited,
    );
    db.drop_db().await;
}

#[actix_web::test]
async fn a_broken_policy_reload_is_refused_while_the_old_policy_serves() {
    let _serial = SERIAL.lock().await;
    // The fakes stay bound: they serve until the test ends.
    let Rig {
        db,
        upstream: _upstream,
        guard: _guard,
        setup,
        mut gw,
    } = rig(|_| {}).await;
    let file = setup.policy_dir().join("default.yaml");

    let load = Load::start(&gw.base, KEY, "up", RATE, 15, setup.dir.path());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let broken = now();
    replace_file(&file, "id: default\nactions: {default: [not, an, action\n");
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let fixed = now();
    replace_file(
        &file,
        &setup
            .policy
            .replace("Refused by test policy.", "Refused by the new policy."),
    );
    gw.signal("HUP");
    let rows = load.finish();

    assert_openai_shapes(&rows);
    assert_guarded(&rows);
    // Clients see nothing of the broken file.
    assert_window(&rows, 0.0, f64::MAX, &[200], 200, "policy reloads");
    let version = |r: &&Outcome| r.row["policy_version"].as_str().map(str::to_owned);
    let old: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.sent < fixed)
        .filter_map(|r| version(&r))
        .collect();
    assert_eq!(old.len(), 1, "one version before the fix: {old:?}");
    let new_seen = rows
        .iter()
        .filter(|r| r.sent >= fixed && version(r).is_some_and(|v| !old.contains(&v)))
        .map(|r| r.done - fixed)
        .reduce(f64::min)
        .expect("the fixed policy was applied");
    assert!(
        new_seen < RECOVERY_LIMIT,
        "{new_seen:.1} s to apply the fix"
    );
    let audited = assert_audited(&rows, &db.url).await;
    gw.terminate();
    report(
        "broken policy reload",
        &rows,
        &[
            ("before", 0.0, broken),
            ("broken file", broken, fixed),
            ("fixed file", fixed, now()),
        ],
        audited,
    );
    println!("   fixed policy applied after {new_seen:.2} s");
    db.drop_db().await;
}

#[actix_web::test]
async fn a_saturated_local_engine_answers_429_and_drains() {
    let _serial = SERIAL.lock().await;
    // The fakes stay bound: they serve until the test ends.
    let Rig {
        db,
        upstream: _upstream,
        guard: _guard,
        setup,
        mut gw,
    } = rig(|s| {
        s.local_model = true;
        s.local_queue = 2;
    })
    .await;

    // Far more turns a second than one model on one slot can generate.
    let load = Load::start(&gw.base, KEY, "local", 40, 8, setup.dir.path());
    let rows = load.finish();
    let cleared = now();

    assert_openai_shapes(&rows);
    assert_guarded(&rows);
    assert_window(&rows, 0.0, f64::MAX, &[200, 429], 429, "engine saturated");
    for r in rows.iter().filter(|r| r.status() == Some(429)) {
        assert!(
            r.row["retry_after"].is_string(),
            "429 without Retry-After: {}",
            r.row
        );
    }
    // Drained: the queue is empty and a turn is served at once.
    let metrics = metrics_text(&gw.base).await;
    let queued: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("warden_local_queue"))
        .collect();
    assert!(
        !queued.is_empty() && queued.iter().all(|l| l.ends_with(" 0")),
        "{queued:?}"
    );
    let res = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(KEY)
        .json(&json!({"model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let back = now() - cleared;
    let audited = assert_audited(&rows, &db.url).await;
    gw.terminate();
    report(
        "local engine saturated",
        &rows,
        &[("load", 0.0, cleared)],
        audited,
    );
    println!("   served again {back:.2} s after the load stopped");
    db.drop_db().await;
}
