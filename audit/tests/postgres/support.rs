//! Test support: a throw-away database per test, sample stories, a
//! cuttable TCP proxy, and a small CSV reader.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use uuid::Uuid;
use warden_audit::*;

/// The server under test: `DATABASE_URL` or the local trust-auth default.
pub fn base_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    PgConnectOptions::from_str(&url).expect("DATABASE_URL parses")
}

/// A uniquely named database with the migrations applied, dropped (with
/// any login roles the test made) when the value goes out of scope.
pub struct TestDb {
    pub name: String,
    pub pool: PgPool,
    roles: Mutex<Vec<String>>,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("warden_audit_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&base_options())
            .await
            .expect("connect to PostgreSQL");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(base_options().database(&name))
            .await
            .expect("connect to test database");
        migrate(&pool).await.expect("migrations apply");
        TestDb {
            name,
            pool,
            roles: Mutex::new(Vec::new()),
        }
    }

    /// Connection options for this database.
    pub fn options(&self) -> PgConnectOptions {
        base_options().database(&self.name)
    }

    /// A pool logged in as a fresh LOGIN role that is a member of `group`.
    pub async fn pool_as_member_of(&self, group: &str) -> PgPool {
        let role = format!("warden_test_{}", &Uuid::new_v4().simple().to_string()[..12]);
        sqlx::query(AssertSqlSafe(format!(
            "CREATE ROLE {role} LOGIN IN ROLE {group}"
        )))
        .execute(&self.pool)
        .await
        .expect("create login role");
        self.roles.lock().unwrap().push(role.clone());
        PgPoolOptions::new()
            .max_connections(3)
            .connect_with(self.options().username(&role))
            .await
            .expect("log in as test role")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let roles = std::mem::take(&mut *self.roles.lock().unwrap());
        // Async drop is not possible; a helper thread with its own runtime
        // drops the database even when the test panicked.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut admin = PgConnection::connect_with(&base_options())
                    .await
                    .expect("connect");
                sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .expect("drop test database");
                for role in roles {
                    sqlx::query(AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
                        .execute(&mut admin)
                        .await
                        .expect("drop test role");
                }
            });
        })
        .join()
        .expect("cleanup thread");
    }
}

/// A writer config with short intervals for tests.
pub fn writer_config(spool_dir: &Path) -> WriterConfig {
    let mut c = WriterConfig::new(InstanceId::new("test-instance").unwrap(), spool_dir);
    c.batch_interval = Duration::from_millis(5);
    c.retry_interval = Duration::from_millis(50);
    c.db_timeout = Duration::from_secs(3);
    c.batch_size = 50;
    c.replay_chunk = 40;
    c
}

/// A pool that points at a port nothing listens on.
pub fn dead_pool() -> PgPool {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(base_options().host("127.0.0.1").port(1))
}

/// A request context of `tenant`.
pub fn context(tenant: &str, key: &str, model: &str) -> Arc<RequestContext> {
    Arc::new(RequestContext {
        request_id: RequestId::new(format!("req-{}", Uuid::new_v4().simple())).unwrap(),
        tenant: TenantId::new(tenant).unwrap(),
        key_id: Some(KeyId::new(key).unwrap()),
        model: Some(model.to_owned()),
        policy: Some(PolicyRef {
            id: "default".into(),
            version: "v1".into(),
        }),
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
    })
}

/// A complete chat turn: request, input message, input verdict, then
/// either a blocked decision or an answer, output verdict and allowed decision.
pub fn turn(ctx: &Arc<RequestContext>, user_text: &str, blocked: bool) -> Vec<AuditEvent> {
    let mut events = vec![
        ctx.event(EventBody::Request(RequestStarted {
            endpoint: Endpoint::ChatCompletions,
            stream: false,
            parameters: serde_json::json!({"temperature": 0.2, "max_tokens": 64}),
        })),
        ctx.event(EventBody::Message(MessageRecord {
            direction: Direction::Input,
            index: 0,
            role: Role::User,
            name: None,
            content: Content::capture(user_text, true),
        })),
    ];
    if blocked {
        events.push(ctx.event(EventBody::GuardVerdict(GuardVerdictRecord {
            checkpoint: Checkpoint::Input,
            backend: GuardBackend::Local,
            guard_model: Some("llama-guard-3-1b".into()),
            result: VerdictResult::Unsafe {
                categories: vec!["S1".into()],
            },
            score: Some(0.93),
            latency_us: 12_000,
        })));
        events.push(ctx.event(EventBody::Decision(DecisionRecord {
            decision: Decision::Blocked,
            checkpoint: Some(Checkpoint::Input),
            categories: vec!["S1".into()],
            reason: None,
            http_status: 400,
            finish_reason: None,
            tokens: TokenCounts {
                prompt: 12,
                completion: 0,
            },
            timings: Timings {
                total_us: 15_000,
                guard_us: 12_000,
                ..Timings::default()
            },
        })));
    } else {
        events.push(ctx.event(EventBody::GuardVerdict(GuardVerdictRecord {
            checkpoint: Checkpoint::Input,
            backend: GuardBackend::Rules,
            guard_model: None,
            result: VerdictResult::Safe,
            score: None,
            latency_us: 40,
        })));
        events.push(ctx.event(EventBody::Message(MessageRecord {
            direction: Direction::Output,
            index: 0,
            role: Role::Assistant,
            name: None,
            content: Content::capture("Hello, how can I help?", true),
        })));
        events.push(ctx.event(EventBody::Decision(DecisionRecord {
            decision: Decision::Allowed,
            checkpoint: None,
            categories: vec![],
            reason: None,
            http_status: 200,
            finish_reason: Some("stop".into()),
            tokens: TokenCounts {
                prompt: 12,
                completion: 7,
            },
            timings: Timings {
                total_us: 90_000,
                guard_us: 40,
                generation_us: 80_000,
                ..Timings::default()
            },
        })));
    }
    events
}

/// Writes `turns` turns of `tenant` through a writer on `pool`; returns the
/// stream id and the events in the order they were handed over.
pub async fn write_turns(
    pool: &PgPool,
    spool: &Path,
    tenant: &str,
    turns: usize,
) -> (StreamId, Vec<AuditEvent>) {
    let spawned = AuditWriter::spawn(pool.clone(), writer_config(spool)).unwrap();
    let mut all = Vec::new();
    for i in 0..turns {
        let ctx = context(tenant, "key-1", "smollm2");
        for e in turn(&ctx, &format!("question {i}"), i % 3 == 2) {
            all.push(e.clone());
            spawned.handle.record(e).unwrap();
        }
    }
    let report = spawned.handle.shutdown().await.unwrap();
    assert!(report.in_database, "everything reached the database");
    spawned.task.await.unwrap();
    (spawned.handle.stream_id(), all)
}

/// (event_id, seq) of a stream, in sequence order.
pub async fn stream_rows(pool: &PgPool, stream: StreamId) -> Vec<(Uuid, i64)> {
    sqlx::query_as("SELECT event_id, seq FROM audit_events WHERE stream_id = $1 ORDER BY seq")
        .bind(stream.0)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Runs `sql` as a superuser with the append-only trigger bypassed, the way
/// an attacker with full database access would.
pub async fn tamper(pool: &PgPool, sql: &'static str, id: Uuid) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    let done = sqlx::query(sql).bind(id).execute(&mut *tx).await.unwrap();
    assert!(
        done.rows_affected() >= 1,
        "tamper statement touched a row: {sql}"
    );
    tx.commit().await.unwrap();
}

/// A TCP proxy to PostgreSQL that can cut every connection and refuse new
/// ones, to simulate an outage without stopping the shared server.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let opts = base_options();
        let target = format!("{}:{}", opts.get_host(), opts.get_port());
        let (up2, conns2) = (Arc::clone(&up), Arc::clone(&conns));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    break;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(task);
            }
        });
        Proxy {
            port,
            up,
            conns,
            accept,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// A pool through the proxy.
    pub fn pool(&self, db: &TestDb) -> PgPool {
        PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy_with(db.options().host("127.0.0.1").port(self.port))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Parses RFC 4180 CSV (quoted fields may hold commas, quotes, line breaks).
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && row.is_empty(),
        "CSV ends with a line break"
    );
    rows
}
