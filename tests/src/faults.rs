//! Fault injection for the reliability suite: fake servers that can be
//! killed, slowed down or made to answer garbage, a private PostgreSQL
//! cluster that can be stopped and started, and a steady load from a second
//! process whose every answer is kept for the invariants.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

/// How a [`FaultyServer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// As the fake it wraps.
    None = 0,
    /// After sleeping [`SLOW`].
    Slow = 1,
    /// 200 with a body that is not what the protocol says.
    Garbage = 2,
}

/// How long a slow server sleeps before answering.
pub const SLOW: Duration = Duration::from_secs(3);

impl Fault {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Fault::Slow,
            2 => Fault::Garbage,
            _ => Fault::None,
        }
    }
}

/// Which fake a [`FaultyServer`] wraps.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// The OpenAI-compatible generator (`fake_upstream`).
    Upstream,
    /// The remote guard model (`fake_guard_server`).
    Guard,
}

/// A fake upstream or guard on a fixed port that can be killed (its port
/// then refuses connections), started again, slowed or made to talk garbage.
pub struct FaultyServer {
    /// Where it listens, dead or alive.
    pub addr: SocketAddr,
    role: Role,
    fault: Arc<AtomicU8>,
    handle: Option<ServerHandle>,
}

async fn faulty(
    req: HttpRequest,
    body: web::Json<Value>,
    state: web::Data<(Role, Arc<AtomicU8>)>,
) -> HttpResponse {
    let (role, fault) = state.get_ref();
    match Fault::from_u8(fault.load(Ordering::SeqCst)) {
        Fault::None => {}
        Fault::Slow => tokio::time::sleep(SLOW).await,
        Fault::Garbage => {
            return HttpResponse::Ok()
                .content_type("application/json")
                .body("<html>502 Bad Gateway</html>{\"choices\": [")
        }
    }
    match role {
        Role::Upstream => crate::fake_chat(req, body).await,
        Role::Guard => crate::fake_guard(body).await,
    }
}

impl FaultyServer {
    /// Starts a healthy server on a free port.
    pub fn start(role: Role) -> Self {
        let mut server = Self {
            addr: crate::dead_addr(),
            role,
            fault: Arc::new(AtomicU8::new(Fault::None as u8)),
            handle: None,
        };
        server.revive();
        server
    }

    /// Sets how it answers from now on.
    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    /// Stops it: connections are refused until [`FaultyServer::revive`].
    pub async fn kill(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop(false).await;
        }
    }

    /// Starts it again on the same port, healthy.
    pub fn revive(&mut self) {
        self.set(Fault::None);
        let state = web::Data::new((self.role, self.fault.clone()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::JsonConfig::default().limit(1 << 22))
                .route("/v1/chat/completions", web::post().to(faulty))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(0)
        .bind(self.addr)
        .expect("the port is free again");
        let server = server.run();
        self.handle = Some(server.handle());
        actix_web::rt::spawn(server);
    }
}

/// A PostgreSQL cluster of the test's own (so stopping it disturbs nobody
/// else), on a free port, trust auth, removed on drop.
pub struct PrivatePostgres {
    /// `postgres://postgres@127.0.0.1:port/postgres`.
    pub admin_url: String,
    bindir: PathBuf,
    data: tempfile::TempDir,
    port: u16,
}

fn as_owner(program: &Path) -> Command {
    // initdb and postgres refuse to run as root: run them as `postgres`.
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePostgres {
    /// Initialises and starts a cluster with the newest server binaries
    /// installed under `/usr/lib/postgresql`.
    pub fn start() -> Self {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb");
        // Under /tmp so the `postgres` user can reach it.
        let data = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        if is_root() {
            run_ok(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres"]).arg(data.path());
                    c
                },
                "chown",
            );
        }
        let mut init = as_owner(&bindir.join("initdb"));
        init.arg("-D").arg(data.path().join("db")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]);
        run_ok(init, "initdb");
        let port = crate::dead_addr().port();
        let pg = Self {
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bindir,
            data,
            port,
        };
        pg.resume();
        pg
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = as_owner(&self.bindir.join("pg_ctl"));
        cmd.arg("-D").arg(self.data.path().join("db")).args(args);
        cmd
    }

    /// Stops the server (fast shutdown: sessions are cut).
    pub fn stop(&self) {
        run_ok(self.pg_ctl(&["-m", "fast", "-w", "stop"]), "pg_ctl stop");
    }

    /// Starts the server again.
    pub fn resume(&self) {
        let log = self.data.path().join("server.log");
        let opts = format!(
            "-h 127.0.0.1 -p {} -k {}",
            self.port,
            self.data.path().display()
        );
        let mut cmd = self.pg_ctl(&["-w", "-o", &opts, "-l"]);
        cmd.arg(log).arg("start");
        run_ok(cmd, "pg_ctl start");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl(&["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Seconds since the Unix epoch, as the load script writes them.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One answered (or failed) request of a [`Load`].
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The row the load script wrote.
    pub row: Value,
    /// When it was sent, seconds since the epoch.
    pub sent: f64,
    /// When its answer (or its transport error) came, seconds since the epoch.
    pub done: f64,
}

impl Outcome {
    /// The HTTP status, if a response came.
    pub fn status(&self) -> Option<u16> {
        self.row["status"].as_u64().map(|s| s as u16)
    }

    /// The request id the gateway gave it.
    pub fn request_id(&self) -> Option<&str> {
        self.row["request_id"].as_str()
    }

    /// The gateway made a decision the caller was told: a completion, or a
    /// refusal of the input by the policy.
    pub fn acknowledged(&self) -> bool {
        match self.status() {
            Some(200) => true,
            Some(400) => self.row["error"]["code"] == "content_filter",
            _ => false,
        }
    }
}

/// Steady load on a gateway from a second process (`tests/python/load.py`).
pub struct Load {
    child: Child,
    out: PathBuf,
}

impl Load {
    /// Starts `rate` chat turns a second on `model` for `seconds`, with `key`.
    pub fn start(base: &str, key: &str, model: &str, rate: u32, seconds: u32, dir: &Path) -> Self {
        let python = std::env::var("WARDEN_PYTHON").unwrap_or_else(|_| {
            format!(
                "{}/.cache/warden/venv/bin/python",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/load.py");
        let out = dir.join(format!("load-{}.jsonl", uuid::Uuid::new_v4().simple()));
        let child = Command::new(python)
            .arg(script)
            .args([base, key, model, &rate.to_string(), &seconds.to_string()])
            .arg(&out)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the load script starts");
        Self { child, out }
    }

    /// Waits for the last answer; every request in the order it was sent.
    pub fn finish(mut self) -> Vec<Outcome> {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the load script failed: {status}");
        let text = std::fs::read_to_string(&self.out).unwrap();
        let mut lines = text.lines();
        let start: Value = serde_json::from_str(lines.next().expect("a start line")).unwrap();
        let start = start["start_epoch"].as_f64().expect("start_epoch");
        let mut rows: Vec<Outcome> = lines
            .map(|l| {
                let row: Value = serde_json::from_str(l).unwrap();
                Outcome {
                    sent: start + row["sent"].as_f64().unwrap(),
                    done: start + row["done"].as_f64().unwrap(),
                    row,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.sent.total_cmp(&b.sent));
        rows
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status counts (`"200"`, `"502"`, `"ConnectError"`, ...) of the outcomes
/// sent between `from` and `to`, for the report.
pub fn tally(rows: &[Outcome], from: f64, to: f64) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for r in rows.iter().filter(|r| r.sent >= from && r.sent < to) {
        let key = match r.status() {
            Some(s) => s.to_string(),
            None => r.row["transport_error"].as_str().unwrap_or("?").to_owned(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Seconds from `cleared` until the first request sent after it came back
/// 200 (how long the gateway took to serve normally again), or `None`.
pub fn recovery(rows: &[Outcome], cleared: f64) -> Option<f64> {
    rows.iter()
        .filter(|r| r.sent >= cleared && r.status() == Some(200))
        .map(|r| r.done - cleared)
        .reduce(f64::min)
}

/// The real `warden serve` binary on a fixed port, so it can be killed and
/// started again where its clients expect it.
pub struct WardenProcess {
    /// `http://127.0.0.1:port`.
    pub base: String,
    child: Option<Child>,
    command: (PathBuf, PathBuf, Vec<(String, String)>),
    port: u16,
    logs: Vec<PathBuf>,
}

impl WardenProcess {
    /// Starts binary `bin` on `config` with extra environment `env`; waits
    /// until it answers `/healthz`.
    pub async fn start(bin: &Path, config: &Path, env: &[(&str, &str)]) -> Self {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let port = crate::dead_addr().port();
        let mut gw = Self {
            base: format!("http://127.0.0.1:{port}"),
            child: None,
            command: (bin.to_owned(), config.to_owned(), env),
            port,
            logs: Vec::new(),
        };
        gw.restart().await;
        gw
    }

    /// Starts it again (after [`WardenProcess::kill`]) on the same port.
    pub async fn restart(&mut self) {
        let (bin, config, env) = &self.command;
        let log = config.with_file_name(format!("warden-{}.log", self.logs.len()));
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .env("WARDEN_LISTEN", format!("127.0.0.1:{}", self.port))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.logs.push(log);
        let client = reqwest::Client::new();
        let url = format!("{}/healthz", self.base);
        let up = crate::eventually(Duration::from_secs(60), || async {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(up, "the gateway did not start: {}", self.logs());
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{name}");
    }

    /// SIGTERM and wait: a graceful stop that flushes the audit writer.
    pub fn terminate(&mut self) {
        if self.child.is_some() {
            self.signal("TERM");
            self.child.take().unwrap().wait().unwrap();
        }
    }

    /// Everything every run wrote to stderr.
    pub fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
            .collect::<Vec<_>>()
            .join("\n---- restart ----\n")
    }
}

impl Drop for WardenProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
