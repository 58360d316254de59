//! The local engine with the real bundled model (few, short generations:
//! the machine is slow), and its queue limit.

use serde_json::{json, Value};
use warden_tests::*;

fn local_setup(queue: usize) -> Option<Setup> {
    if !model_path().exists() {
        eprintln!("skipping: no model at {}", model_path().display());
        return None;
    }
    let mut setup = Setup::new();
    setup.local_model = true;
    setup.local_queue = queue;
    Some(setup)
}

#[actix_web::test]
async fn local_model_plain_and_streamed() {
    let Some(setup) = local_setup(4) else { return };
    let gw = setup.start().await;
    let req = json!({"model": "local", "max_tokens": 6, "temperature": 0,
                     "messages": [{"role": "user", "content": "Say hello."}]});
    let res = gw.post("/v1/chat/completions", &req).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!content.is_empty());
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(usage["completion_tokens"].as_u64().unwrap() <= 6);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(body["warden"]["decision"], "allowed");

    // Greedy: the stream says exactly the same.
    let mut stream_req = req.clone();
    stream_req["stream"] = true.into();
    stream_req["stream_options"] = json!({"include_usage": true});
    let res = gw.post("/v1/chat/completions", &stream_req).await;
    let payloads = sse_payloads(&res.text().await.unwrap());
    assert_eq!(streamed_text(&payloads), content);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    assert!(payloads.iter().any(|p| p.contains("\"usage\"")));
    gw.stop().await;
}

#[actix_web::test]
async fn a_full_queue_answers_429_with_retry_after() {
    // One running, none waiting: a second request at the same time is refused.
    let Some(setup) = local_setup(0) else { return };
    let gw = setup.start().await;
    let req = json!({"model": "local", "max_tokens": 40, "stream": true,
                     "messages": [{"role": "user", "content": "Count to fifty."}]});
    // Hold the first stream open (read its head only) so the engine stays busy.
    let first = gw.post("/v1/chat/completions", &req).await;
    assert_eq!(first.status(), 200);
    let second = gw.post("/v1/chat/completions", &req).await;
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // Leaving the first stream cancels its generation and frees the engine.
    drop(first);
    let ok = eventually(std::time::Duration::from_secs(20), || async {
        let mut short = req.clone();
        short["max_tokens"] = 2.into();
        short["stream"] = false.into();
        gw.post("/v1/chat/completions", &short).await.status() == 200
    })
    .await;
    assert!(ok, "the engine was not freed after the client left");
    gw.stop().await;
}

#[actix_web::test]
async fn a_windowed_stream_is_checked_window_by_window_on_a_local_guard() {
    let Some(mut setup) = local_setup(4) else {
        return;
    };
    setup.extra.push_str(&format!(
        "[[guards]]\nname = \"local-guard\"\nkind = \"local\"\npath = {:?}\ntimeout_seconds = 300\n",
        model_path().display().to_string()
    ));
    // SmolLM2 rarely writes a verdict: failing open lets every window through
    // (as `unguarded`), so all of them are checked and released.
    setup.policy = "id: default\n\
                    description: Windowed checks on the local guard.\n\
                    applies_to: default\n\
                    checkpoints: [output]\n\
                    backends: [local-guard]\n\
                    categories: {variant: llama-guard-3-8b}\n\
                    actions: {default: block}\n\
                    fail_mode: {output: fail_open}\n\
                    streaming: {mode: windowed, window_tokens: 2}\n"
        .to_owned();
    let gw = setup.start().await;
    let res = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "up", "stream": true,
                    "messages": [{"role": "user", "content": "SAY: one two three four five"}]}),
        )
        .await;
    let payloads = sse_payloads(&res.text().await.unwrap());
    assert_eq!(streamed_text(&payloads), "one two three four five");
    let warden: Value = payloads
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .find(|v| v.get("warden").is_some())
        .expect("a warden chunk")["warden"]
        .clone();
    let verdicts = warden["verdicts"].as_array().unwrap();
    // Five words in windows of two: checks after words 2 and 4, and the last.
    assert_eq!(verdicts.len(), 3, "{warden}");
    assert!(
        verdicts
            .iter()
            .all(|v| v["checkpoint"] == "output" && v["backend"] == "local-guard"),
        "{warden}"
    );
    gw.stop().await;
}
