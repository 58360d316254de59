//! Running tools: the built-ins, and the HTTP executor against a local
//! test server, with its SSRF guard. Packets only ever go to 127.0.0.1.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_agents::tools::{
    forbidden_reason, BoxFuture, BuiltinTool, ExecError, ExecutorSpec, HttpExecutor, HttpSpec,
    Rejected, Resolver, ToolCall, ToolOutput, ToolSet, ToolSpec,
};

// ---- built-ins -----------------------------------------------------------

fn builtins() -> ToolSet {
    ToolSet::new(vec![
        ToolSpec::builtin(BuiltinTool::Calculator),
        ToolSpec::builtin(BuiltinTool::CurrentTime),
    ])
    .unwrap()
}

async fn run(set: &ToolSet, name: &str, arguments: Value) -> Result<ToolOutput, ExecError> {
    let valid = set
        .validate(ToolCall::new(name, arguments))
        .expect("valid call");
    set.execute(&valid).await
}

async fn calc(expression: &str) -> Result<Value, ExecError> {
    let out = run(&builtins(), "calculator", json!({"expression": expression})).await?;
    let value: Value = serde_json::from_str(&out.content).unwrap();
    assert_eq!(value["expression"], expression);
    Ok(value["result"].clone())
}

#[tokio::test]
async fn calculator_arithmetic() {
    for (expression, want) in [
        ("1 + 2 * 3", json!(7)),
        ("(1 + 2) * 3", json!(9)),
        ("7 - 2 - 1", json!(4)),
        ("8 / 2 / 2", json!(2)),
        ("10 / 4", json!(2.5)),
        ("10 % 4", json!(2)),
        ("2 ^ 3 ^ 2", json!(512)),
        ("-2 ^ 2", json!(-4)),
        ("(-2) ^ 2", json!(4)),
        ("2 ^ -1", json!(0.5)),
        ("--3", json!(3)),
        ("2 * -3", json!(-6)),
        ("-(2 + 3) * 2", json!(-10)),
        (" 1.5 + .5 ", json!(2)),
        ("((((42))))", json!(42)),
        ("3 * (2 + (4 - 1) * 2) % 5", json!(4)),
    ] {
        assert_eq!(calc(expression).await.unwrap(), want, "{expression}");
    }
}

#[tokio::test]
async fn calculator_errors() {
    // Within the schema's pattern, but not arithmetic the evaluator accepts.
    let too_deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
    for (expression, needle) in [
        ("1 / 0", "division by zero"),
        ("5 % (2 - 2)", "division by zero"),
        ("0 ^ -1", "division by zero"),
        ("10 ^ 400", "too large"),
        ("(-8) ^ 0.5", "not a real number"),
        ("(1 + 2))", "unexpected `)`"),
        ("(2 +)", "unexpected `)`"),
        (too_deep.as_str(), "nested too deeply"),
    ] {
        match calc(expression).await {
            Err(ExecError::Builtin(message)) => {
                assert!(message.contains(needle), "{expression}: {message}")
            }
            other => panic!("{expression}: expected an error, got {other:?}"),
        }
    }
}

#[test]
fn calculator_syntax_is_refused_by_its_schema() {
    // The schema states the expression grammar, so a constrained model
    // cannot write these and a free one is refused before anything runs.
    let too_long = format!("1{}", " + 1".repeat(100));
    let set = builtins();
    for expression in [
        "1e999",
        "2 +",
        "",
        "(1 + 2",
        "1 + 2)",
        ")",
        "%5",
        "abc",
        "x = 3",
        "sqrt(4)",
        "1..2",
        "12 times 7",
        too_long.as_str(),
    ] {
        let call = ToolCall::new("calculator", json!({ "expression": expression }));
        assert!(
            set.validate(call).is_err(),
            "{expression:?} passed the schema"
        );
    }
}

#[tokio::test]
async fn calculator_schema_is_enforced_before_it_runs() {
    let set = builtins();
    for bad in [
        json!({}),
        json!({"expression": 4}),
        json!({"expression": "1", "x": 1}),
    ] {
        assert!(matches!(
            set.validate(ToolCall::new("calculator", bad)),
            Err(Rejected::Invalid { .. })
        ));
    }
}

#[tokio::test]
async fn current_time_is_rfc3339_utc() {
    let set = builtins();
    for args in [json!({}), json!({"timezone": "UTC"})] {
        let out = run(&set, "current_time", args).await.unwrap();
        assert!(out.content.ends_with('Z'), "{}", out.content);
        let t = chrono::DateTime::parse_from_rfc3339(&out.content).unwrap();
        let age = chrono::Utc::now().signed_duration_since(t);
        assert!(age.num_seconds().abs() < 5, "{}", out.content);
    }
    assert!(set
        .validate(ToolCall::new(
            "current_time",
            json!({"timezone": "Europe/Paris"})
        ))
        .is_err());
}

#[tokio::test]
async fn sets_and_executions_can_move_across_tasks() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let set = builtins();
    send_sync(&set);
    let valid = set
        .validate(ToolCall::new("current_time", json!({})))
        .unwrap();
    send(&set.execute(&valid));
    let out = tokio::spawn(async move { set.execute(&valid).await })
        .await
        .unwrap();
    assert!(out.is_ok());
}

// ---- a resolver for tests ------------------------------------------------

/// Resolves a fixed map of names and records every question.
#[derive(Default)]
struct MapResolver {
    names: HashMap<String, Vec<IpAddr>>,
    asked: Mutex<Vec<String>>,
}

impl MapResolver {
    fn new(names: &[(&str, &[&str])]) -> Arc<Self> {
        Arc::new(Self {
            names: names
                .iter()
                .map(|(n, ips)| {
                    (
                        n.to_string(),
                        ips.iter().map(|i| i.parse().unwrap()).collect(),
                    )
                })
                .collect(),
            asked: Mutex::default(),
        })
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Resolver for MapResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move {
            self.asked.lock().unwrap().push(host.to_owned());
            self.names
                .get(host)
                .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown test name"))
        })
    }
}

/// A set with one http tool `remote` whose executor uses `resolver`.
fn http_tool(
    url: &str,
    hosts: &[&str],
    allow_private: bool,
    resolver: Arc<MapResolver>,
) -> ToolSet {
    http_tool_with(url, hosts, resolver, |spec| {
        spec.allow_private = allow_private
    })
}

fn http_tool_with(
    url: &str,
    hosts: &[&str],
    resolver: Arc<MapResolver>,
    adjust: impl FnOnce(&mut HttpSpec),
) -> ToolSet {
    let mut spec = HttpSpec::new(url, hosts.iter().map(|h| h.to_string()).collect());
    adjust(&mut spec);
    let executor = HttpExecutor::new("remote", &spec)
        .unwrap()
        .with_resolver(resolver);
    ToolSet::new(vec![ToolSpec {
        name: "remote".into(),
        description: None,
        parameters: json!({"type": "object"}),
        executor: ExecutorSpec::Http(spec),
    }])
    .unwrap()
    .with_executor("remote", Arc::new(executor))
    .unwrap()
}

async fn call_remote(set: &ToolSet) -> Result<ToolOutput, ExecError> {
    run(set, "remote", json!({"q": "ping", "n": 1})).await
}

fn assert_refused(result: Result<ToolOutput, ExecError>, needle: &str) {
    match result {
        Err(ExecError::Refused { reason }) => assert!(reason.contains(needle), "{reason}"),
        other => panic!("expected a refusal ({needle}), got {other:?}"),
    }
}

/// Whether a connection reached `listener` (it would wait in the backlog).
async fn connection_arrived(listener: &TcpListener) -> bool {
    tokio::time::timeout(Duration::from_millis(200), listener.accept())
        .await
        .is_ok()
}

// ---- SSRF guard ----------------------------------------------------------

#[tokio::test]
async fn refuses_loopback_literal_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let resolver = MapResolver::new(&[]);
    let set = http_tool(
        &format!("http://127.0.0.1:{port}/json"),
        &["127.0.0.1"],
        false,
        resolver.clone(),
    );
    assert_refused(call_remote(&set).await, "loopback");
    assert!(resolver.asked().is_empty());
    assert!(!connection_arrived(&listener).await);
}

#[tokio::test]
async fn refuses_a_name_resolving_to_loopback_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let resolver = MapResolver::new(&[("internal.test", &["127.0.0.1"])]);
    let set = http_tool(
        &format!("http://internal.test:{port}/json"),
        &["internal.test"],
        false,
        resolver.clone(),
    );
    assert_refused(call_remote(&set).await, "127.0.0.1, a loopback address");
    assert_eq!(resolver.asked(), ["internal.test"]);
    assert!(!connection_arrived(&listener).await);
}

#[tokio::test]
async fn refuses_metadata_and_private_addresses() {
    // By name (the resolver is consulted, and its answer refused) ...
    let resolver = MapResolver::new(&[
        ("metadata.test", &["169.254.169.254"]),
        ("corp.test", &["10.0.0.1"]),
        ("cgnat.test", &["100.64.0.1"]),
        ("v6.test", &["fd00::1"]),
        // One private address among public ones refuses the name.
        ("mixed.test", &["93.184.215.14", "192.168.1.1"]),
    ]);
    for (host, kind) in [
        ("metadata.test", "link-local"),
        ("corp.test", "private"),
        ("cgnat.test", "CGNAT"),
        ("v6.test", "unique local"),
        ("mixed.test", "private"),
    ] {
        let set = http_tool(&format!("http://{host}/"), &[host], false, resolver.clone());
        assert_refused(call_remote(&set).await, kind);
    }
    assert_eq!(
        resolver.asked(),
        [
            "metadata.test",
            "corp.test",
            "cgnat.test",
            "v6.test",
            "mixed.test"
        ]
    );

    // ... and as literal IPs (no resolver at all).
    let resolver = MapResolver::new(&[]);
    for (host, kind) in [
        ("169.254.169.254", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.1", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("[::1]", "loopback"),
        ("[::]", "unspecified"),
        ("[fe80::1]", "link-local"),
        ("[fc00::1]", "unique local"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:169.254.169.254]", "link-local"),
        // NAT64, 6to4 and Teredo carry an IPv4 address they deliver to.
        ("[64:ff9b::a9fe:a9fe]", "link-local"),
        ("[64:ff9b::7f00:1]", "loopback"),
        ("[64:ff9b:1::a00:1]", "local-use NAT64"),
        ("[2002:a00:1::1]", "private"),
        ("[2002:7f00:1::]", "loopback"),
        // Teredo's client address is inverted: 10.0.0.1 is f5ff:fffe.
        ("[2001:0:4136:e378:8000:63bf:f5ff:fffe]", "private"),
        ("[2001:db8::1]", "documentation"),
    ] {
        let set = http_tool(
            &format!("http://{host}/latest/meta-data"),
            &[host],
            false,
            resolver.clone(),
        );
        assert_refused(call_remote(&set).await, kind);
    }
    assert!(resolver.asked().is_empty());
}

#[test]
fn public_addresses_are_not_forbidden() {
    for ip in [
        "93.184.215.14",
        "8.8.8.8",
        "100.128.0.1",
        "172.32.0.1",
        "2606:4700::1111",
        // The same translations of a public IPv4 address (8.8.8.8).
        "64:ff9b::808:808",
        "2002:808:808::1",
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
    ] {
        assert_eq!(forbidden_reason(ip.parse().unwrap()), None, "{ip}");
    }
}

#[test]
fn refuses_a_host_outside_the_allow_list() {
    // At load: the URL's own host must be allowed.
    let spec = HttpSpec::new("http://evil.test/", vec!["good.test".into()]);
    assert!(HttpExecutor::new("remote", &spec).is_err());
    // At run time, a redirect elsewhere is refused before any look-up:
    // see `redirect_to_another_host_is_refused`.
}

// ---- a local test server -------------------------------------------------

/// A small HTTP/1.1 server on 127.0.0.1 that answers by path and records
/// each request as "METHOD /path body".
struct TestServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(handle(socket, log.clone()));
            }
        });
        Self { port, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn handle(mut socket: TcpStream, log: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (
        first.next().unwrap_or("").to_owned(),
        first.next().unwrap_or("").to_owned(),
    );
    let mut length = 0;
    let mut host = String::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "host" => host = v.trim().to_owned(),
                _ => {}
            }
        }
    }
    while buf.len() < head_end + length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    log.lock()
        .unwrap()
        .push(format!("{method} {path} {body}").trim_end().to_owned());

    let reply = |status: &str, headers: &[(&str, &str)], body: &str| {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(body);
        out
    };
    let json = [("Content-Type", "application/json")];
    let response = match path.as_str() {
        "/json" => reply(
            "200 OK",
            &json,
            &format!("{{\"method\":\"{method}\",\"got\":{body}}}"),
        ),
        "/problem" => reply(
            "200 OK",
            &[("Content-Type", "application/problem+json")],
            "{}",
        ),
        "/text" => reply(
            "200 OK",
            &[("Content-Type", "text/plain; charset=utf-8")],
            "plain words",
        ),
        "/big" => reply("200 OK", &json, &"a".repeat(5000)),
        "/big-stream" => {
            // No length: the client only learns the size while reading.
            let _ = socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n",
                )
                .await;
            for _ in 0..50 {
                if socket.write_all(&[b'a'; 100]).await.is_err() {
                    return;
                }
            }
            return;
        }
        "/binary" => reply(
            "200 OK",
            &[("Content-Type", "application/octet-stream")],
            "\u{1}\u{2}",
        ),
        "/untyped" => reply("200 OK", &[], "?"),
        "/fail" => reply(
            "500 Internal Server Error",
            &[("Content-Type", "text/plain")],
            "boom",
        ),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            reply("200 OK", &json, "{}")
        }
        "/to-other" => reply("302 Found", &[("Location", "http://other.example/x")], ""),
        "/to-same" => reply("307 Temporary Redirect", &[("Location", "/json")], ""),
        "/to-same-absolute" => {
            let location = format!("http://{host}/text");
            reply("302 Found", &[("Location", location.as_str())], "")
        }
        "/loop" => reply("307 Temporary Redirect", &[("Location", "/loop")], ""),
        _ => reply("404 Not Found", &[("Content-Type", "text/plain")], "no"),
    };
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// A tool posting to `path` of the server, by literal IP, private allowed.
fn local_tool(server: &TestServer, path: &str) -> ToolSet {
    http_tool_with(
        &format!("http://127.0.0.1:{}{path}", server.port),
        &["127.0.0.1"],
        MapResolver::new(&[]),
        |spec| {
            spec.allow_private = true;
            spec.max_response_bytes = 1000;
            spec.timeout_ms = 500;
        },
    )
}

// ---- the http executor against it ----------------------------------------

#[tokio::test]
async fn posts_json_and_returns_json() {
    let server = TestServer::start().await;
    let out = call_remote(&local_tool(&server, "/json")).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out.content).unwrap(),
        json!({"method": "POST", "got": {"q": "ping", "n": 1}})
    );
    assert_eq!(server.requests(), [r#"POST /json {"q":"ping","n":1}"#]);

    let out = call_remote(&local_tool(&server, "/problem")).await.unwrap();
    assert_eq!(out.content, "{}");
}

#[tokio::test]
async fn connects_to_the_checked_address_of_a_name() {
    // `tool.test` exists only in the test resolver: reaching the server
    // proves the connection used the checked (pinned) address.
    let server = TestServer::start().await;
    let resolver = MapResolver::new(&[("tool.test", &["127.0.0.1"])]);
    let set = http_tool(
        &format!("http://tool.test:{}/json", server.port),
        &["tool.test"],
        true,
        resolver.clone(),
    );
    let out = call_remote(&set).await.unwrap();
    assert!(
        out.content.contains("\"got\":{\"q\":\"ping\""),
        "{}",
        out.content
    );
    assert_eq!(resolver.asked(), ["tool.test"]);
}

#[tokio::test]
async fn returns_text() {
    let server = TestServer::start().await;
    let out = call_remote(&local_tool(&server, "/text")).await.unwrap();
    assert_eq!(out.content, "plain words");
}

#[tokio::test]
async fn refuses_a_body_over_the_limit() {
    let server = TestServer::start().await;
    for path in ["/big", "/big-stream"] {
        assert_eq!(
            call_remote(&local_tool(&server, path)).await.unwrap_err(),
            ExecError::TooLarge,
            "{path}"
        );
    }
}

#[tokio::test]
async fn refuses_other_content_types() {
    let server = TestServer::start().await;
    assert_eq!(
        call_remote(&local_tool(&server, "/binary"))
            .await
            .unwrap_err(),
        ExecError::BadContentType("application/octet-stream".into())
    );
    assert!(matches!(
        call_remote(&local_tool(&server, "/untyped"))
            .await
            .unwrap_err(),
        ExecError::BadContentType(_)
    ));
}

#[tokio::test]
async fn reports_error_statuses() {
    let server = TestServer::start().await;
    assert_eq!(
        call_remote(&local_tool(&server, "/fail"))
            .await
            .unwrap_err(),
        ExecError::Status(500)
    );
    assert_eq!(
        call_remote(&local_tool(&server, "/missing"))
            .await
            .unwrap_err(),
        ExecError::Status(404)
    );
}

#[tokio::test]
async fn times_out() {
    let server = TestServer::start().await;
    let started = Instant::now();
    assert_eq!(
        call_remote(&local_tool(&server, "/slow"))
            .await
            .unwrap_err(),
        ExecError::Timeout
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn redirect_to_another_host_is_refused() {
    let server = TestServer::start().await;
    let resolver = MapResolver::new(&[("tool.test", &["127.0.0.1"])]);
    let set = http_tool(
        &format!("http://tool.test:{}/to-other", server.port),
        &["tool.test", "other.example"],
        true,
        resolver.clone(),
    );
    assert_refused(call_remote(&set).await, "another host `other.example`");
    // The other host was never even looked up.
    assert_eq!(resolver.asked(), ["tool.test"]);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn redirects_to_the_same_host_are_followed() {
    let server = TestServer::start().await;
    // 307 keeps the POST and its body.
    let out = call_remote(&local_tool(&server, "/to-same")).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out.content).unwrap(),
        json!({"method": "POST", "got": {"q": "ping", "n": 1}})
    );
    // 302 to an absolute URL on the same host turns into a GET; the name is
    // checked (resolved) again for the new hop.
    let resolver = MapResolver::new(&[("tool.test", &["127.0.0.1"])]);
    let set = http_tool(
        &format!("http://tool.test:{}/to-same-absolute", server.port),
        &["tool.test"],
        true,
        resolver.clone(),
    );
    assert_eq!(call_remote(&set).await.unwrap().content, "plain words");
    assert_eq!(resolver.asked(), ["tool.test", "tool.test"]);
    let requests = server.requests();
    assert_eq!(
        requests,
        [
            r#"POST /to-same {"q":"ping","n":1}"#,
            r#"POST /json {"q":"ping","n":1}"#,
            r#"POST /to-same-absolute {"q":"ping","n":1}"#,
            "GET /text",
        ]
    );
}

#[tokio::test]
async fn at_most_three_redirects() {
    let server = TestServer::start().await;
    assert_refused(
        call_remote(&local_tool(&server, "/loop")).await,
        "more than 3 redirects",
    );
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let set = http_tool(
        &format!("http://127.0.0.1:{port}/"),
        &["127.0.0.1"],
        true,
        MapResolver::new(&[]),
    );
    assert!(matches!(
        call_remote(&set).await.unwrap_err(),
        ExecError::Transport(_)
    ));
    let resolver = MapResolver::new(&[]);
    let set = http_tool(
        "http://nowhere.test/",
        &["nowhere.test"],
        true,
        resolver.clone(),
    );
    let err = call_remote(&set).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::Transport(m) if m.contains("nowhere.test")),
        "{err:?}"
    );
}
