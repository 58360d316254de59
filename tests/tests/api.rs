//! The HTTP API end to end: a real gateway (in-process, real sockets)
//! against a fake upstream and a fake guard server on 127.0.0.1.

use std::time::Duration;

use serde_json::{json, Value};
use warden_tests::*;

fn assert_error_shape(body: &Value) {
    let e = &body["error"];
    assert!(e["message"].is_string(), "{body}");
    assert!(e["type"].is_string(), "{body}");
    assert!(e.get("param").is_some(), "{body}");
    assert!(e.get("code").is_some(), "{body}");
}

async fn error_of(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status);
    assert!(res.headers().get("x-request-id").is_some());
    let body: Value = res.json().await.unwrap();
    assert_error_shape(&body);
    body
}

#[actix_web::test]
async fn plain_completion_through_upstream() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let res = gw.chat("up", "hi there").await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from upstream."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 9);
    let w = &body["warden"];
    assert_eq!(w["decision"], "allowed");
    assert_eq!(w["request_id"], id.as_str());
    assert_eq!(w["policy"]["id"], "default");
    // rules + fake guard at input and at output.
    let verdicts = w["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 4, "{w}");
    assert!(verdicts.iter().all(|v| v["verdict"] == "safe"));
    gw.stop().await;
}

#[actix_web::test]
async fn a_callers_request_id_is_kept_and_bad_ones_replaced() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let res = gw
        .client
        .get(format!("{}/healthz", gw.base))
        .header("x-request-id", "my-trace.123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "my-trace.123");
    let res = gw
        .client
        .get(format!("{}/healthz", gw.base))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(id.len(), 32);
    gw.stop().await;
}

#[actix_web::test]
async fn input_block_is_400_content_filter_with_verdicts() {
    let setup = Setup::new();
    let gw = setup.start().await;
    // Rules block.
    let body = error_of(gw.chat("up", "give me the bombrecipe").await, 400).await;
    let e = &body["error"];
    assert_eq!(e["code"], "content_filter");
    assert_eq!(e["param"], "messages");
    assert_eq!(e["warden"]["decision"], "blocked");
    assert_eq!(e["warden"]["checkpoint"], "input");
    assert_eq!(e["warden"]["categories"], json!(["S9"]));
    assert_eq!(e["warden"]["policy"]["id"], "default");
    let v = &e["warden"]["verdicts"][0];
    assert_eq!(
        (v["backend"].as_str(), v["verdict"].as_str()),
        (Some("rules"), Some("unsafe"))
    );
    assert_eq!(v["action"], "block");
    // The first block ends the check: the model guard did not run.
    assert_eq!(e["warden"]["verdicts"].as_array().unwrap().len(), 1);
    // Model guard block.
    let body = error_of(gw.chat("up", "GUARD-UNSAFE please").await, 400).await;
    assert_eq!(body["error"]["warden"]["categories"], json!(["S1"]));
    let v = &body["error"]["warden"]["verdicts"][1];
    assert_eq!(
        (v["backend"].as_str(), v["kind"].as_str()),
        (Some("fake-guard"), Some("remote"))
    );
    gw.stop().await;
}

#[actix_web::test]
async fn output_block_is_200_content_filter_with_refusal_text() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let res = gw.chat("up", "SAY: here is the bomb|recipe").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "content_filter");
    assert_eq!(choice["message"]["content"], "Refused by test policy.");
    assert_eq!(body["warden"]["decision"], "blocked");
    assert_eq!(body["warden"]["checkpoint"], "output");
    gw.stop().await;
}

#[actix_web::test]
async fn flags_and_redactions_are_served_and_shown() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let res = gw.chat("up", "SAY: ask a lawyer").await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "ask a lawyer");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["warden"]["decision"], "flagged");
    assert_eq!(body["warden"]["categories"], json!(["S6"]));
    let res = gw.chat("up", "SAY: write to jane@example.com").await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "write to [REDACTED]"
    );
    assert_eq!(body["warden"]["decision"], "redacted");
    gw.stop().await;
}

#[actix_web::test]
async fn guard_down_refuses_fail_closed() {
    let mut setup = Setup::new();
    setup.guard = dead_addr();
    let gw = setup.start().await;
    let body = error_of(gw.chat("up", "hello").await, 503).await;
    assert_eq!(body["error"]["code"], "guard_unavailable");
    let verdicts = body["error"]["warden"]["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.last().unwrap()["verdict"], "error");
    gw.stop().await;
}

#[actix_web::test]
async fn guard_down_with_fail_open_serves_unguarded() {
    let mut setup = Setup::new();
    setup.guard = dead_addr();
    setup
        .policy
        .push_str("fail_mode: {input: fail_open, output: fail_open}\n");
    let gw = setup.start().await;
    let res = gw.chat("up", "hello").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["warden"]["decision"], "unguarded");
    gw.stop().await;
}

#[actix_web::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let body = error_of(gw.chat("dead", "hello").await, 502).await;
    assert_eq!(body["error"]["code"], "bad_gateway");
    let body = error_of(gw.chat("up", "FAIL500").await, 502).await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("upstream exploded"));
    let body = error_of(gw.chat("up", "SLEEP:3000 now").await, 504).await;
    assert_eq!(body["error"]["code"], "upstream_timeout");
    gw.stop().await;
}

#[actix_web::test]
async fn auth_failures_are_401() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let body = json!({"model": "up", "messages": [{"role": "user", "content": "hi"}]});
    let res = gw.client.post(&url).json(&body).send().await.unwrap();
    let e = error_of(res, 401).await;
    assert_eq!(e["error"]["code"], "invalid_api_key");
    let res = gw
        .client
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    error_of(res, 401).await;
    let res = gw
        .client
        .post(&url)
        .header("authorization", "Basic abc")
        .json(&body)
        .send()
        .await
        .unwrap();
    error_of(res, 401).await;
    let res = gw
        .client
        .get(format!("{}/v1/models", gw.base))
        .send()
        .await
        .unwrap();
    error_of(res, 401).await;
    // Admin routes need the admin key.
    let reload = format!("{}/v1/admin/policies/reload", gw.base);
    let res = gw
        .client
        .post(&reload)
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    error_of(res, 403).await;
    let res = gw
        .client
        .post(&reload)
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    gw.stop().await;
}

#[actix_web::test]
async fn malformed_requests_get_openai_errors() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let url = format!("{}/v1/chat/completions", gw.base);
    let send = |body: String, ctype: &'static str| {
        gw.client
            .post(&url)
            .bearer_auth(KEY)
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    // Not JSON.
    let e = error_of(
        send("{\"model\":".into(), "application/json")
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(e["error"]["code"], "invalid_json");
    // Wrong content type.
    let e = error_of(send("{}".into(), "text/plain").await.unwrap(), 415).await;
    assert_eq!(e["error"]["code"], "unsupported_media_type");
    // Unknown field.
    let body =
        json!({"model": "up", "messages": [{"role": "user", "content": "hi"}], "max_token": 5});
    let e = error_of(
        send(body.to_string(), "application/json").await.unwrap(),
        400,
    )
    .await;
    assert_eq!(e["error"]["param"], "max_token");
    // Missing field.
    let e = error_of(
        send(json!({"model": "up"}).to_string(), "application/json")
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(e["error"]["param"], "messages");
    // Bad role.
    let body = json!({"model": "up", "messages": [{"role": "wizard", "content": "hi"}]});
    error_of(
        send(body.to_string(), "application/json").await.unwrap(),
        400,
    )
    .await;
    // Too large (the limit is 20000 bytes).
    let big = json!({"model": "up", "messages": [{"role": "user", "content": "x".repeat(30000)}]});
    let e = error_of(
        send(big.to_string(), "application/json").await.unwrap(),
        413,
    )
    .await;
    assert_eq!(e["error"]["code"], "payload_too_large");
    // Too many messages (the limit is 4).
    let many: Vec<Value> = (0..5)
        .map(|_| json!({"role": "user", "content": "hi"}))
        .collect();
    let e = error_of(
        send(
            json!({"model": "up", "messages": many}).to_string(),
            "application/json",
        )
        .await
        .unwrap(),
        400,
    )
    .await;
    assert_eq!(e["error"]["param"], "messages");
    // Empty messages.
    error_of(
        send(
            json!({"model": "up", "messages": []}).to_string(),
            "application/json",
        )
        .await
        .unwrap(),
        400,
    )
    .await;
    // max_tokens over the limit (64).
    let body =
        json!({"model": "up", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 65});
    let e = error_of(
        send(body.to_string(), "application/json").await.unwrap(),
        400,
    )
    .await;
    assert_eq!(e["error"]["param"], "max_tokens");
    let body = json!({"model": "up", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 1000});
    let e = error_of(
        send(body.to_string(), "application/json").await.unwrap(),
        400,
    )
    .await;
    assert_eq!(e["error"]["param"], "max_completion_tokens");
    // Bad temperature.
    let body =
        json!({"model": "up", "messages": [{"role": "user", "content": "hi"}], "temperature": 7});
    let e = error_of(
        send(body.to_string(), "application/json").await.unwrap(),
        400,
    )
    .await;
    assert_eq!(e["error"]["param"], "temperature");
    // Unknown model.
    let body = json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]});
    let e = error_of(
        send(body.to_string(), "application/json").await.unwrap(),
        404,
    )
    .await;
    assert_eq!(e["error"]["code"], "model_not_found");
    assert_eq!(e["error"]["param"], "model");
    // Unknown extra category.
    let body = json!({"model": "up", "messages": [{"role": "user", "content": "hi"}],
                      "metadata": {"warden": {"extra_categories": ["S99"]}}});
    let e = error_of(
        send(body.to_string(), "application/json").await.unwrap(),
        400,
    )
    .await;
    assert_eq!(e["error"]["param"], "metadata.warden.extra_categories");
    // Unknown route and wrong method.
    let res = gw
        .client
        .get(format!("{}/v1/nope", gw.base))
        .send()
        .await
        .unwrap();
    let e = error_of(res, 404).await;
    assert_eq!(e["error"]["code"], "unknown_url");
    let res = gw.client.get(&url).bearer_auth(KEY).send().await.unwrap();
    let e = error_of(res, 405).await;
    assert_eq!(e["error"]["code"], "method_not_allowed");
    gw.stop().await;
}

#[actix_web::test]
async fn buffered_stream_checks_the_whole_answer_first() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let res = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "up", "stream": true, "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "SAY: one two three"}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = res.text().await.unwrap();
    let payloads = sse_payloads(&text);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    assert_eq!(streamed_text(&payloads), "one two three");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert!(chunks.iter().any(|c| c["usage"]["total_tokens"] == 9));
    let warden = chunks.iter().find(|c| c.get("warden").is_some()).unwrap();
    assert_eq!(warden["warden"]["decision"], "allowed");

    // Refused: nothing of the answer, only the refusal.
    let res = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "up", "stream": true,
                    "messages": [{"role": "user", "content": "SAY: secret bomb|recipe here"}]}),
        )
        .await;
    let payloads = sse_payloads(&res.text().await.unwrap());
    let text = streamed_text(&payloads);
    assert_eq!(text, "Refused by test policy.");
    assert!(payloads
        .iter()
        .any(|p| p.contains("\"finish_reason\":\"content_filter\"")));
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    gw.stop().await;
}

#[actix_web::test]
async fn windowed_stream_is_cut_before_the_failing_window() {
    let mut setup = Setup::new();
    setup.policy = default_policy("{mode: windowed, window_tokens: 2}");
    let gw = setup.start().await;
    // Words arrive one per chunk; windows of 2: [a b] [c d] [e bombrecipe] ...
    let res = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "up", "stream": true,
                    "messages": [{"role": "user", "content": "SAY: a b c d e bomb|recipe f g"}]}),
        )
        .await;
    let payloads = sse_payloads(&res.text().await.unwrap());
    let text = streamed_text(&payloads);
    assert!(text.starts_with("a b c d "), "{text}");
    assert!(!text.contains("e "), "the failing window leaked: {text}");
    assert!(!text.contains("bomb"), "{text}");
    assert!(text.ends_with("Refused by test policy."), "{text}");
    assert!(payloads
        .iter()
        .any(|p| p.contains("\"finish_reason\":\"content_filter\"")));
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    // A clean answer streams whole.
    let res = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "up", "stream": true,
                    "messages": [{"role": "user", "content": "SAY: a b c d e"}]}),
        )
        .await;
    let payloads = sse_payloads(&res.text().await.unwrap());
    assert_eq!(streamed_text(&payloads), "a b c d e");
    assert!(payloads
        .iter()
        .any(|p| p.contains("\"finish_reason\":\"stop\"")));
    gw.stop().await;
}

#[actix_web::test]
async fn unguarded_output_streams_through_and_upstream_stalls_end_in_an_error_event() {
    let mut setup = Setup::new();
    setup.policy = setup
        .policy
        .replace("checkpoints: [input, output]", "checkpoints: [input]");
    let gw = setup.start().await;
    let res = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "up", "stream": true,
                    "messages": [{"role": "user", "content": "SAY: passed straight through"}]}),
        )
        .await;
    let payloads = sse_payloads(&res.text().await.unwrap());
    assert_eq!(streamed_text(&payloads), "passed straight through");
    // The upstream's own chunks (its id) are passed through.
    assert!(payloads[0].contains("\"id\":\"up-1\""));
    let res = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "up", "stream": true,
                    "messages": [{"role": "user", "content": "SAY: x STALL"}]}),
        )
        .await;
    let payloads = sse_payloads(&res.text().await.unwrap());
    let err = payloads
        .iter()
        .find(|p| p.contains("\"error\""))
        .expect("an error event");
    assert!(err.contains("upstream_timeout"), "{err}");
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    gw.stop().await;
}

#[actix_web::test]
async fn tools_are_passed_to_the_upstream() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let res = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "up", "messages": [{"role": "user", "content": "CALL the weather tool"}],
                    "tools": [{"type": "function", "function": {"name": "get_weather",
                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                    "tool_choice": "auto"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn tool_calls_nobody_offered_never_reach_the_caller() {
    let mut setup = Setup::new();
    setup.policy = default_policy("{mode: windowed, window_tokens: 2}");
    let gw = setup.start().await;
    let weather = json!([{"type": "function", "function": {"name": "get_weather",
                          "parameters": {"type": "object"}}}]);
    for (extra, stream) in [
        // No tools at all, whole and streamed.
        (json!({}), false),
        (json!({}), true),
        // Tools offered but `tool_choice: "none"`.
        (json!({"tools": weather, "tool_choice": "none"}), false),
        (json!({"tools": weather, "tool_choice": "none"}), true),
    ] {
        let mut req = json!({"model": "up", "stream": stream,
                             "messages": [{"role": "user", "content": "FORCECALL the weather tool"}]});
        req.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let res = gw.post("/v1/chat/completions", &req).await;
        let error = if stream {
            assert_eq!(res.status(), 200);
            let payloads = sse_payloads(&res.text().await.unwrap());
            assert!(
                payloads.iter().all(|p| !p.contains("get_weather")),
                "{payloads:?}"
            );
            assert_eq!(payloads.last().unwrap(), "[DONE]");
            let error: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
            error
        } else {
            let body = error_of(res, 502).await;
            assert!(!body.to_string().contains("get_weather"), "{body}");
            body
        };
        assert_eq!(
            error["error"]["code"], "invalid_tool_call",
            "{req}: {error}"
        );
    }
    gw.stop().await;
}

#[actix_web::test]
async fn models_moderations_health_metrics_openapi() {
    let setup = Setup::new();
    let gw = setup.start().await;
    let res = gw
        .client
        .get(format!("{}/v1/models", gw.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dead", "up"]);

    let res = gw
        .post(
            "/v1/moderations",
            &json!({"input": ["hello", "GUARD-UNSAFE text", "a bombrecipe"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let r = body["results"].as_array().unwrap();
    assert_eq!(r[0]["flagged"], false);
    assert_eq!(r[0]["llama_guard"]["verdict"], "safe");
    assert_eq!(r[1]["flagged"], true);
    assert_eq!(r[1]["categories"]["violence"], true);
    assert_eq!(r[1]["llama_guard"]["categories"], json!(["S1"]));
    assert_eq!(
        r[1]["llama_guard"]["category_names"]["S1"],
        "Violent Crimes"
    );
    assert_eq!(r[2]["flagged"], true);
    assert_eq!(r[2]["llama_guard"]["categories"], json!(["S9"]));
    assert_eq!(r[0]["category_scores"]["hate"], 0.0);

    let res = gw
        .client
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = gw
        .client
        .get(format!("{}/readyz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["database"], "not_configured");
    assert_eq!(body["policies"]["count"], 1);

    gw.chat("up", "hi").await;
    let text = metrics_text(&gw.base).await;
    assert!(
        text.contains(
            "warden_requests_total{route=\"/v1/chat/completions\",status=\"200\",model=\"up\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("warden_guard_checks_total{checkpoint=\"input\",decision=\"allowed\"}"),
        "{text}"
    );

    let doc: Value = gw
        .client
        .get(format!("{}/openapi.json", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/chat/completions",
        "/v1/models",
        "/v1/moderations",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["ChatCompletionRequest"].is_object());
    gw.stop().await;
}

#[actix_web::test]
async fn the_config_is_validated_with_the_key_named() {
    let setup = Setup::new();
    let path = setup.write();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("max_tokens = 64", "max_tokens = 0")).unwrap();
    let err = warden_gateway::config::Config::load(&path, std::iter::empty()).unwrap_err();
    assert!(err.to_string().starts_with("limits.max_tokens"), "{err}");
    let err = warden_gateway::config::Config::load(
        &path,
        [(
            "WARDEN_LIMITS__MAX_TOKENS".to_owned(),
            "\"lots\"".to_owned(),
        )],
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_tokens"), "{err}");
    let _ = Duration::ZERO;
}
