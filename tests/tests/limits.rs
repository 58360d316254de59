//! Limits under hostile input, on the real gateway: very large bodies
//! (413), thousands of messages and deep JSON nesting (400, no stack
//! overflow), slow bodies and slow headers (the connection is cut, other
//! clients are served meanwhile), and many streams abandoned mid-way (the
//! local engine's queue and the audit queue drain to 0, every abandoned
//! turn is still audited, and the gateway serves normally afterwards).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::*;

/// Starts the gateway with `limits` (TOML lines) added to its `[limits]`.
async fn start_with(setup: &Setup, limits: &str) -> Gateway {
    let path = setup.write();
    let mut text = std::fs::read_to_string(&path).unwrap();
    for line in limits.lines() {
        let key = line.split('=').next().unwrap().trim();
        // Replace a key the test config already sets, or add it.
        let existing = text
            .lines()
            .find(|l| l.split('=').next().unwrap().trim() == key)
            .map(str::to_owned);
        match existing {
            Some(old) => text = text.replacen(&old, line, 1),
            None => text = text.replacen("[limits]\n", &format!("[limits]\n{line}\n"), 1),
        }
    }
    std::fs::write(&path, text).unwrap();
    Gateway::start_config(&path).await
}

fn addr(gw: &Gateway) -> String {
    gw.base.trim_start_matches("http://").to_owned()
}

/// Chat bodies carrying the JSON document `deep` where clients nest
/// freely: message content, metadata and a tool's parameter schema.
fn deep_bodies(deep: &str) -> [String; 3] {
    [
        format!(r#"{{"model":"up","messages":[{{"role":"user","content":{deep}}}]}}"#),
        format!(
            r#"{{"model":"up","messages":[{{"role":"user","content":"hi"}}],"metadata":{deep}}}"#
        ),
        format!(
            r#"{{"model":"up","messages":[{{"role":"user","content":"hi"}}],"tools":[{{"type":"function","function":{{"name":"f","parameters":{deep}}}}}]}}"#
        ),
    ]
}

/// An OpenAI-shaped error: `{"error": {"message", "type", "param", "code"}}`.
fn assert_openai_error(body: &Value, code: &str) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
    assert_eq!(error["code"], code, "{body}");
}

/// A raw HTTP/1.1 response read off a socket.
struct RawResponse {
    status: u16,
    body: String,
    /// When the status line arrived, from the start of the exchange.
    after: Duration,
}

/// Reads one response (Content-Length bodies; actix sends those for errors).
fn read_response(stream: &mut TcpStream, start: Instant) -> Option<RawResponse> {
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, after) = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break (i + 4, start.elapsed());
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + len {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    Some(RawResponse {
        status,
        body,
        after,
    })
}

/// Whether the server closes the connection within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                )
            }
        }
    }
}

fn head(path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n{extra}\r\n"
    )
}

#[actix_web::test]
async fn very_large_bodies_are_413_in_openai_shape() {
    let setup = Setup::new(); // max_body_bytes = 20000
    let gw = setup.start().await;
    let big = "x".repeat(200_000);

    // Declared length over the limit: refused at once, nothing buffered.
    let a = addr(&gw);
    let declared = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(a).unwrap();
        let start = Instant::now();
        s.write_all(head("/v1/chat/completions", "Content-Length: 50000000\r\n").as_bytes())
            .unwrap();
        read_response(&mut s, start)
    })
    .await
    .unwrap()
    .expect("a response before any body byte");
    assert_eq!(declared.status, 413);
    assert!(declared.after < Duration::from_secs(3));
    let body: Value = serde_json::from_str(&declared.body).unwrap();
    assert_openai_error(&body, "payload_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("20000"));

    // Chunked, no length: cut off once the limit is passed, the limit named.
    let a = addr(&gw);
    let chunked = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(a).unwrap();
        let start = Instant::now();
        s.write_all(head("/v1/chat/completions", "Transfer-Encoding: chunked\r\n").as_bytes())
            .unwrap();
        let mut writer = s.try_clone().unwrap();
        let feeder = std::thread::spawn(move || {
            let first = r#"{"model":"up","messages":[{"role":"user","content":""#;
            let _ = writer.write_all(format!("{:x}\r\n{first}\r\n", first.len()).as_bytes());
            let piece = "a".repeat(8192);
            // Up to 4 MB: the server must answer long before.
            for _ in 0..512 {
                let frame = format!("{:x}\r\n{piece}\r\n", piece.len());
                if writer.write_all(frame.as_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let response = read_response(&mut s, start);
        drop(s);
        let _ = feeder.join();
        response
    })
    .await
    .unwrap()
    .expect("a response");
    assert_eq!(chunked.status, 413);
    let body: Value = serde_json::from_str(&chunked.body).unwrap();
    assert_openai_error(&body, "payload_too_large");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("20000"),
        "{body}"
    );

    // Through an ordinary client, on both JSON routes.
    for (path, req) in [
        (
            "/v1/chat/completions",
            json!({"model": "up", "messages": [{"role": "user", "content": big}]}),
        ),
        ("/v1/moderations", json!({"input": big})),
    ] {
        let res = gw.post(path, &req).await;
        assert_eq!(res.status(), 413, "{path}");
        assert!(res.headers().contains_key("x-request-id"));
        assert_openai_error(&res.json().await.unwrap(), "payload_too_large");
    }
    // Still serving.
    assert_eq!(gw.chat("up", "hello").await.status(), 200);
    gw.stop().await;
}

#[actix_web::test]
async fn thousands_of_messages_are_a_limit_error() {
    let setup = Setup::new(); // max_messages = 4
    let gw = start_with(&setup, "max_body_bytes = 4000000").await;
    let messages: Vec<Value> = (0..5000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "hi"}))
        .collect();
    let res = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "up", "messages": messages}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_openai_error(&body, "invalid_value");
    assert_eq!(body["error"]["param"], "messages");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("too many messages: 5000 (the limit is 4)"));

    let inputs: Vec<&str> = vec!["hi"; 5000];
    let res = gw.post("/v1/moderations", &json!({"input": inputs})).await;
    assert_eq!(res.status(), 400);
    assert!(res.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .contains('4'));
    assert_eq!(gw.chat("up", "hello").await.status(), 200);
    gw.stop().await;
}

/// `depth` nested arrays or objects around `leaf`.
fn nested(depth: usize, object: bool, leaf: &str) -> String {
    if object {
        format!("{}{leaf}{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
    } else {
        format!("{}{leaf}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

#[actix_web::test]
async fn deep_json_nesting_is_a_clear_400_without_stack_overflow() {
    let setup = Setup::new();
    let gw = start_with(&setup, "max_body_bytes = 4000000").await;
    let chat = format!("{}/v1/chat/completions", gw.base);
    let send = |body: String| {
        gw.client
            .post(&chat)
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Far past serde_json's recursion limit, in each place JSON values go.
    for depth in [200, 100_000, 1_000_000] {
        for object in [false, true] {
            let deep = nested(depth, object, "1");
            for body in deep_bodies(&deep) {
                let res = send(body).await.unwrap();
                let status = res.status().as_u16();
                let text = res.text().await.unwrap();
                if depth == 1_000_000 {
                    // About 2-6 MB: over the body limit before any parsing.
                    assert!(status == 400 || status == 413, "{status} {text}");
                    continue;
                }
                assert_eq!(status, 400, "depth {depth}: {text}");
                let body: Value = serde_json::from_str(&text).unwrap();
                assert_openai_error(&body, "invalid_json");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("recursion limit exceeded"),
                    "{body}"
                );
            }
        }
    }
    // A bare deep document: refused before its depth matters.
    for object in [false, true] {
        let res = send(nested(100_000, object, "1")).await.unwrap();
        assert_eq!(res.status(), 400);
        assert!(res.json::<Value>().await.unwrap()["error"]["message"].is_string());
    }
    // Within the parser's limit, nesting in content, metadata and tool
    // schemas is judged on its merits: never a 5xx.
    for object in [false, true] {
        let deep = nested(100, object, "1");
        for body in deep_bodies(&deep) {
            let res = send(body).await.unwrap();
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            assert!(status < 500, "{status} {text}");
            if status != 200 {
                assert!(
                    serde_json::from_str::<Value>(&text).unwrap()["error"]["message"].is_string()
                );
            }
        }
    }
    // A deeply nested tool schema that parses: 60 levels of properties.
    let mut schema = json!({"type": "string"});
    for _ in 0..60 {
        schema = json!({"type": "object", "properties": {"a": schema}});
    }
    let res = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "up", "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]}),
        )
        .await;
    assert!(res.status().as_u16() < 500, "{}", res.status());
    assert_eq!(gw.chat("up", "hello").await.status(), 200);
    gw.stop().await;
}

/// Sends headers announcing `len` bytes, then one byte every `gap` for up to
/// `total`; returns the response and whether the server then closed.
fn slow_body(
    addr: String,
    len: usize,
    gap: Duration,
    total: Duration,
) -> (Option<RawResponse>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    let start = Instant::now();
    s.write_all(
        head(
            "/v1/chat/completions",
            &format!("Content-Length: {len}\r\n"),
        )
        .as_bytes(),
    )
    .unwrap();
    let mut writer = s.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        let body = r#"{"model":"up","messages":[{"role":"user","content":"hello"}]}"#;
        let body = format!("{body:<len$}");
        for byte in body.as_bytes() {
            if start.elapsed() > total || writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(gap);
        }
    });
    let response = read_response(&mut s, start);
    let closed = response.is_some() && closed_within(&mut s, Duration::from_secs(5));
    drop(s);
    let _ = feeder.join();
    (response, closed)
}

#[actix_web::test]
async fn slow_bodies_and_slow_headers_are_cut_off_while_others_are_served() {
    let setup = Setup::new();
    let gw = start_with(
        &setup,
        "body_timeout_seconds = 1\nheader_timeout_seconds = 1",
    )
    .await;

    // Twenty slow-body clients at once (more than the two workers).
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let a = addr(&gw);
            tokio::task::spawn_blocking(move || {
                slow_body(a, 500, Duration::from_millis(100), Duration::from_secs(30))
            })
        })
        .collect();
    // A slow-headers client: half a request line, then nothing.
    let a = addr(&gw);
    let slow_headers = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(a).unwrap();
        let start = Instant::now();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: local")
            .unwrap();
        let closed = closed_within(&mut s, Duration::from_secs(10));
        (closed, start.elapsed())
    });

    // Meanwhile ordinary clients are served promptly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..10 {
        let t = Instant::now();
        let res = gw.chat("up", "hello").await;
        assert_eq!(res.status(), 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    for task in slow {
        let (response, closed) = task.await.unwrap();
        let response = response.expect("a response to the slow body");
        assert_eq!(response.status, 408, "{}", response.body);
        let body: Value = serde_json::from_str(&response.body).unwrap();
        assert_openai_error(&body, "request_timeout");
        // Cut at the deadline (1 s), not when the body would have ended (50 s).
        assert!(
            response.after >= Duration::from_millis(900) && response.after < Duration::from_secs(5),
            "{:?}",
            response.after
        );
        assert!(closed, "the connection stays open after the 408");
    }
    let (closed, after) = slow_headers.await.unwrap();
    assert!(closed, "a slow-headers connection is not closed");
    assert!(after < Duration::from_secs(5), "{after:?}");

    // A body that arrives in time is unaffected by the deadline.
    assert_eq!(gw.chat("up", "hello").await.status(), 200);
    gw.stop().await;
}

/// A gauge's value (summed over label sets) from `/metrics`.
async fn gauge(gw: &Gateway, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' '])
                .next()
                .is_some_and(|metric| metric == name)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[actix_web::test]
async fn abandoned_streams_leave_no_queued_work_behind() {
    if !model_path().exists() {
        eprintln!("skipping: no model at {}", model_path().display());
        return;
    }
    let db = TestDb::create().await;
    let mut setup = Setup::new();
    setup.local_model = true;
    setup.local_queue = 8;
    setup.database_url = Some(db.url.clone());
    setup.policy = default_policy("{mode: windowed, window_tokens: 2}");
    let gw = setup.start().await;

    // Local streams (one runs, the rest queue) and upstream streams that
    // stall before their end: each client reads at most its first chunk,
    // then leaves.
    let mut tasks = Vec::new();
    for i in 0..14 {
        let (model, content, max_tokens) = if i % 2 == 0 {
            ("local", "Count from one to one hundred.", 64)
        } else {
            ("up", "STALL SAY: one two three four five", 64)
        };
        let req = json!({"model": model, "stream": true, "max_tokens": max_tokens,
                         "messages": [{"role": "user", "content": content}]});
        let client = gw.client.clone();
        let url = format!("{}/v1/chat/completions", gw.base);
        tasks.push(actix_web::rt::spawn(async move {
            let send = client.post(url).bearer_auth(KEY).json(&req).send();
            let Ok(Ok(mut res)) = tokio::time::timeout(Duration::from_secs(3), send).await else {
                return None; // left while queued, before any answer
            };
            let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            let status = res.status().as_u16();
            let _ = tokio::time::timeout(Duration::from_secs(3), res.chunk()).await;
            Some((status, id))
        }));
    }
    let mut answered = Vec::new();
    for task in tasks {
        if let Some(seen) = task.await.unwrap() {
            answered.push(seen);
        }
    }
    assert!(answered.len() >= 7, "{answered:?}");

    // Everything drains: no generation left queued or running, no audit
    // event left waiting, nothing dropped.
    let drained = eventually(Duration::from_secs(90), || async {
        gauge(&gw, "warden_local_queue").await == Some(0.0)
            && gauge(&gw, "warden_audit_queue_depth").await == Some(0.0)
    })
    .await;
    assert!(
        drained,
        "local queue {:?}, audit queue {:?}",
        gauge(&gw, "warden_local_queue").await,
        gauge(&gw, "warden_audit_queue_depth").await
    );
    assert_eq!(gauge(&gw, "warden_audit_dropped_total").await, Some(0.0));

    // Every abandoned turn that was answered is in the audit, finished.
    for (status, id) in &answered {
        assert_eq!(*status, 200, "{id}");
        let found = eventually(Duration::from_secs(20), || async {
            let res = gw
                .client
                .get(format!("{}/v1/audit/requests/{id}", gw.base))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap();
            res.status() == 200
        })
        .await;
        assert!(found, "abandoned request {id} is not audited");
    }

    // And the gateway serves normally: local and upstream.
    let res = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "local", "max_tokens": 2,
                    "messages": [{"role": "user", "content": "Say hi."}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(gw.chat("up", "hello").await.status(), 200);
    gw.stop().await;
    db.drop_db().await;
}
