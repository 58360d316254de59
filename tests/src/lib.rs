//! Test support for Warden's end-to-end tests: a fake upstream and a fake
//! guard server on 127.0.0.1, a gateway started in-process from a real
//! `warden.toml`, and throwaway PostgreSQL databases.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use serde_json::{json, Value};
use warden_gateway::config::Config;
use warden_gateway::server::start;

pub mod faults;

/// The key the test config knows (by hash).
pub const KEY: &str = "sk-test-0123456789abcdef";
/// The admin key of the test config.
pub const ADMIN_KEY: &str = "admin-key-0123456789";

/// The bundled model, or `WARDEN_TEST_MODEL`.
pub fn model_path() -> PathBuf {
    std::env::var_os("WARDEN_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/warden/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned()
}

/// What the fake upstream answers for a user message: the text after
/// `SAY:` with `|` removed (so the input can avoid the words the output
/// holds), else `Hello from upstream.`.
pub fn fake_answer(user: &str) -> String {
    match user.split_once("SAY:") {
        Some((_, rest)) => rest.trim().replace('|', ""),
        None => "Hello from upstream.".into(),
    }
}

async fn fake_chat(req: HttpRequest, body: web::Json<Value>) -> HttpResponse {
    let body = body.into_inner();
    let user = last_user_text(&body);
    if let Some(auth) = req.headers().get("authorization") {
        if auth.to_str().unwrap_or("") != "Bearer upstream-secret" {
            return HttpResponse::Unauthorized()
                .json(json!({"error": {"message": "bad upstream key"}}));
        }
    }
    if let Some(ms) = user
        .split_once("SLEEP:")
        .and_then(|(_, r)| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if user.contains("FAIL500") {
        return HttpResponse::InternalServerError()
            .json(json!({"error": {"message": "upstream exploded", "type": "server_error"}}));
    }
    let model = body["model"].as_str().unwrap_or("fake").to_owned();
    let last = body["messages"].as_array().and_then(|m| m.last());
    if let Some(result) = last.filter(|m| m["role"] == "tool") {
        // The client-tool flow's second request: answer from the tool's result.
        let text = format!(
            "The tool said: {}",
            result["content"].as_str().unwrap_or("")
        );
        return HttpResponse::Ok().json(json!({
            "id": "up-2", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        }));
    }
    // `FORCECALL` calls a tool even when none was offered (a misbehaving model).
    let tool_call =
        (body["tools"].is_array() && user.contains("CALL")) || user.contains("FORCECALL");
    // `ECHOFORMAT` answers with the `response_format` the upstream received.
    let answer = if user.contains("ECHOFORMAT") {
        body["response_format"].to_string()
    } else {
        fake_answer(&user)
    };
    if body["stream"] == true {
        let include_usage = body["stream_options"]["include_usage"] == true;
        let mut frames: Vec<String> = Vec::new();
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
        };
        frames.push(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
        if tool_call {
            frames.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
                Value::Null,
            ));
            frames.push(chunk(json!({}), json!("tool_calls")));
        } else {
            let words: Vec<&str> = answer.split_inclusive(' ').collect();
            for w in words {
                frames.push(chunk(json!({"content": w}), Value::Null));
            }
            frames.push(chunk(json!({}), json!("stop")));
        }
        if include_usage {
            frames.push(
                json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": model,
                       "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})
                .to_string(),
            );
        }
        let stall = user.contains("STALL");
        let stream = async_stream(frames, stall);
        return HttpResponse::Ok()
            .content_type("text/event-stream")
            .streaming(stream);
    }
    let message = if tool_call {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    } else {
        json!({"role": "assistant", "content": answer})
    };
    HttpResponse::Ok().json(json!({
        "id": "up-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": if tool_call { "tool_calls" } else { "stop" }}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }))
}

/// The frames one at a time (10 ms apart), `[DONE]` at the end unless `stall`
/// (then the stream stops sending but stays open).
fn async_stream(
    frames: Vec<String>,
    stall: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    futures_util::stream::unfold((frames, 0usize), move |(frames, i)| async move {
        if i > frames.len() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        if i == frames.len() {
            if stall {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return None;
            }
            return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), (frames, i + 1)));
        }
        let bytes = Bytes::from(format!("data: {}\n\n", frames[i]));
        Some((Ok(bytes), (frames, i + 1)))
    })
}

/// A fake guard model: `unsafe\nS1` when the prompt holds `GUARD-UNSAFE`,
/// else `safe`.
async fn fake_guard(body: web::Json<Value>) -> HttpResponse {
    let text = body.to_string();
    let verdict = if text.contains("GUARD-UNSAFE") {
        "unsafe\nS1"
    } else {
        "safe"
    };
    HttpResponse::Ok().json(json!({
        "id": "g", "object": "chat.completion", "created": 1, "model": "guard",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": verdict}, "finish_reason": "stop"}],
    }))
}

/// Starts the fake upstream; returns its address.
pub fn fake_upstream() -> SocketAddr {
    let server = HttpServer::new(|| {
        App::new()
            .app_data(web::JsonConfig::default().limit(1 << 22))
            .route("/v1/chat/completions", web::post().to(fake_chat))
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    addr
}

/// Starts the fake guard server; returns its address.
pub fn fake_guard_server() -> SocketAddr {
    let server =
        HttpServer::new(|| App::new().route("/v1/chat/completions", web::post().to(fake_guard)))
            .workers(1)
            .disable_signals()
            .bind("127.0.0.1:0")
            .unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    addr
}

/// An address nothing listens on.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The test policy: rules (keyword `bombrecipe` blocks as S9, `lawyer` is
/// flagged as S6, e-mail addresses are redacted as S7) and the fake guard.
pub fn default_policy(streaming: &str) -> String {
    format!(
        "id: default\n\
         description: Test policy.\n\
         applies_to: default\n\
         checkpoints: [input, output]\n\
         backends: [rules, fake-guard]\n\
         categories: {{variant: llama-guard-3-8b}}\n\
         actions: {{default: block, S6: flag, S7: redact}}\n\
         refusal_text: \"Refused by test policy.\"\n\
         streaming: {streaming}\n\
         rules:\n\
         \x20 - {{id: weapons, category: S9, match: {{keywords: [bombrecipe]}}}}\n\
         \x20 - {{id: advice, category: S6, match: {{keywords: [lawyer]}}}}\n\
         \x20 - {{id: email, category: S7, match: {{detector: email}}}}\n"
    )
}

/// A temporary gateway setup.
pub struct Setup {
    /// Holds the config and policies.
    pub dir: tempfile::TempDir,
    /// Extra TOML appended to the config.
    pub extra: String,
    /// The policy file's text.
    pub policy: String,
    /// Upstream address.
    pub upstream: SocketAddr,
    /// Guard address.
    pub guard: SocketAddr,
    /// Upstream timeout in seconds.
    pub upstream_timeout: f64,
    /// Whether a local model is configured.
    pub local_model: bool,
    /// Local queue length.
    pub local_queue: usize,
    /// The `limits.max_tokens` a request may ask for.
    pub max_tokens: u32,
    /// Database URL, if any.
    pub database_url: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

impl Setup {
    /// Fake upstream and fake guard running; buffered streaming.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            extra: String::new(),
            policy: default_policy("{mode: buffered}"),
            upstream: fake_upstream(),
            guard: fake_guard_server(),
            upstream_timeout: 1.0,
            local_model: false,
            local_queue: 8,
            max_tokens: 64,
            database_url: None,
        }
    }

    /// The policy directory.
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// Writes the files and returns the config path.
    pub fn write(&self) -> PathBuf {
        let pdir = self.policy_dir();
        std::fs::create_dir_all(&pdir).unwrap();
        std::fs::write(pdir.join("default.yaml"), &self.policy).unwrap();
        let sha = hex_sha(KEY);
        let mut toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nlog_format = \"text\"\n\
             [limits]\nmax_body_bytes = 20000\nmax_messages = 4\nmax_tokens = {max_tokens}\nlocal_concurrency = 1\nlocal_queue = {queue}\n\
             [auth]\nadmin_key = \"{ADMIN_KEY}\"\ncache_seconds = 0\n\
             [[auth.static_keys]]\nid = \"test-key\"\ntenant = \"acme\"\nsha256 = \"{sha}\"\n\
             [policies]\ndir = \"policies\"\nwatch = true\n\
             [[models]]\nname = \"up\"\nkind = \"upstream\"\nbase_url = \"http://{up}/v1\"\ntimeout_seconds = {timeout}\n\
             [[models]]\nname = \"dead\"\nkind = \"upstream\"\nbase_url = \"http://{dead}\"\n\
             [[guards]]\nname = \"fake-guard\"\nkind = \"remote\"\nbase_url = \"http://{guard}\"\nmodel = \"guard\"\ntimeout_seconds = 2\n",
            queue = self.local_queue,
            max_tokens = self.max_tokens,
            up = self.upstream,
            timeout = self.upstream_timeout,
            dead = dead_addr(),
            guard = self.guard,
        );
        if self.local_model {
            toml.push_str(&format!(
                "[[models]]\nname = \"local\"\nkind = \"local\"\npath = {:?}\n",
                model_path().display().to_string()
            ));
        }
        match &self.database_url {
            Some(url) => toml.push_str(&format!(
                "[database]\nurl = \"{url}\"\n[audit]\nenabled = true\nspool_dir = \"spool\"\n"
            )),
            None => toml.push_str("[audit]\nenabled = false\n"),
        }
        toml.push_str(&self.extra);
        let path = self.dir.path().join("warden.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// Loads the config (no environment overrides) and starts the gateway.
    pub async fn start(&self) -> Gateway {
        Gateway::start_config(&self.write()).await
    }
}

/// A setup with the bundled model as `local` and an agent `local-agent` on
/// it whose built-in calculator is required, every checkpoint guarded;
/// `None` (the caller skips) when the model file is missing.
pub fn local_agent_setup(step_limit: u32) -> Option<Setup> {
    if !model_path().exists() {
        eprintln!("skipping: no model at {}", model_path().display());
        return None;
    }
    let mut setup = Setup::new();
    setup.local_model = true;
    setup.policy = default_policy("{mode: buffered}").replace(
        "checkpoints: [input, output]",
        "checkpoints: [input, output, tool_call, tool_result]",
    );
    setup.extra = format!(
        r#"
[[tools]]
name = "calculator"
executor = {{ kind = "builtin", name = "calculator" }}

[[agents]]
name = "local-agent"
model = "local"
system_prompt = "You are a helpful assistant."
tools = ["calculator"]
tool_choice = "required"
step_limit = {step_limit}
timeout_seconds = 300
"#
    );
    Some(setup)
}

/// An agent turn's steps: in the `warden` object of a 200, else in the
/// error's; empty when there are none.
pub fn agent_steps(status: u16, body: &Value) -> Vec<Value> {
    let warden = if status == 200 {
        &body["warden"]
    } else {
        &body["error"]["warden"]
    };
    warden["steps"].as_array().cloned().unwrap_or_default()
}

/// Runs `python/SCRIPT` of this crate with `WARDEN_PYTHON` (else
/// `python3`) on `args`; whether it succeeded, its stdout and its stderr.
pub async fn run_python(script: &str, args: Vec<String>) -> (bool, String, String) {
    let script = format!("{}/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("WARDEN_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .expect("WARDEN_PYTHON (or python3) must run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// SHA-256 in hex.
pub fn hex_sha(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// A running in-process gateway.
pub struct Gateway {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// A client.
    pub client: reqwest::Client,
    /// Stops it.
    pub handle: actix_web::dev::ServerHandle,
    /// Its state.
    pub state: web::Data<warden_gateway::state::AppState>,
}

impl Gateway {
    /// Loads the config at `path` (no environment overrides) and starts
    /// the gateway in-process.
    pub async fn start_config(path: &std::path::Path) -> Gateway {
        let config = Config::load(path, std::iter::empty()).unwrap();
        let running = start(config).await.unwrap();
        let base = format!("http://{}", running.addr);
        let handle = running.handle.clone();
        let state = running.state.clone();
        actix_web::rt::spawn(running.server);
        Gateway {
            base,
            client: reqwest::Client::new(),
            handle,
            state,
        }
    }

    /// POST JSON with the test key.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A chat request to model `model` with one user message.
    pub async fn chat(&self, model: &str, user: &str) -> reqwest::Response {
        self.post(
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": user}]}),
        )
        .await
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.state.stop_watching();
        self.handle.stop(false).await;
    }
}

/// The Prometheus text that the gateway at `base` serves on `/metrics`.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Reads an SSE body into its `data:` payloads.
pub fn sse_payloads(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|frame| {
            frame
                .trim()
                .strip_prefix("data:")
                .map(|d| d.trim().to_owned())
        })
        .collect()
}

/// The content of every chunk joined.
pub fn streamed_text(payloads: &[String]) -> String {
    payloads
        .iter()
        .filter(|p| p.as_str() != "[DONE]")
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// A uniquely named PostgreSQL database, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    /// Its URL.
    pub url: String,
    /// Its name, until it is dropped.
    name: Option<String>,
}

/// The server's admin URL.
pub fn admin_url() -> String {
    std::env::var("WARDEN_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn drop_database(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

impl TestDb {
    /// Creates a fresh database.
    pub async fn create() -> Self {
        use sqlx::Connection;
        let name = format!("warden_gw_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin_url();
        let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
        Self {
            url,
            name: Some(name),
        }
    }

    /// Drops the database.
    pub async fn drop_db(mut self) {
        if let Some(name) = self.name.take() {
            drop_database(&name).await;
        }
    }
}

impl Drop for TestDb {
    /// A test that failed before `drop_db` still leaves nothing behind. Drop
    /// cannot await, and may run inside a runtime, so a thread of its own
    /// with its own runtime does the work.
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        let worker = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&name));
            }
        });
        let _ = worker.join();
    }
}

/// Waits until `f` holds, up to `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes a file atomically (rename), as editors do.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Parses CSV as RFC 4180 writes it (quoted fields, doubled quotes, CRLF or
/// LF rows): enough to read exports back in tests.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
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
    assert!(field.is_empty() && row.is_empty(), "the CSV ends mid-row");
    rows
}
