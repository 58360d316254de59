//! `/metrics` after known traffic: parsed with a Prometheus text parser,
//! every counter equals what was sent.

use prometheus_parse::{Scrape, Value};
use serde_json::json;
use warden_tests::{dead_addr, metrics_text, Setup};

/// The value of the sample `metric` whose labels are exactly `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .find(|s| {
            labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                && s.labels.iter().count() == labels.len()
        })
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(b) => b.iter().map(|h| h.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
}

async fn scrape(base: &str) -> (Scrape, String) {
    let text = metrics_text(base).await;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    (Scrape::parse(lines).unwrap(), text)
}

#[actix_web::test]
async fn counters_match_the_traffic() {
    let gw = Setup::new().start().await;
    let chat = "/v1/chat/completions";
    // Two plain turns, one flagged (S6), one blocked (S9), one unknown model,
    // one streamed turn with usage.
    for user in ["hello", "hi there", "ask a lawyer"] {
        assert_eq!(gw.chat("up", user).await.status(), 200);
    }
    assert_eq!(gw.chat("up", "a bombrecipe please").await.status(), 400);
    assert_eq!(gw.chat("no-such-model", "hello").await.status(), 404);
    let streamed = gw
        .post(
            chat,
            &json!({"model": "up", "stream": true, "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "stream please"}]}),
        )
        .await;
    assert_eq!(streamed.status(), 200);
    assert!(streamed.text().await.unwrap().ends_with("data: [DONE]\n\n"));

    let (m, text) = scrape(&gw.base).await;
    let get = |metric: &str, labels: &[(&str, &str)]| {
        value(&m, metric, labels).unwrap_or_else(|| panic!("{metric} {labels:?} in\n{text}"))
    };
    let req = |status: &str, model: &str| {
        get(
            "warden_requests_total",
            &[("route", chat), ("status", status), ("model", model)],
        )
    };
    assert_eq!(req("200", "up"), 4.0);
    assert_eq!(req("400", "up"), 1.0);
    // An unknown model is not a label value (callers cannot grow the set).
    assert_eq!(req("404", ""), 1.0);
    assert_eq!(
        get("warden_request_duration_seconds_count", &[("route", chat)]),
        6.0
    );
    let checks = |cp: &str, decision: &str| {
        get(
            "warden_guard_checks_total",
            &[("checkpoint", cp), ("decision", decision)],
        )
    };
    assert_eq!(checks("input", "allowed"), 3.0);
    assert_eq!(checks("input", "flagged"), 1.0);
    assert_eq!(checks("input", "blocked"), 1.0);
    assert_eq!(checks("output", "allowed"), 4.0);
    assert_eq!(
        value(
            &m,
            "warden_guard_checks_total",
            &[("checkpoint", "output"), ("decision", "blocked")]
        ),
        None
    );
    let cat = |c: &str, action: &str| {
        get(
            "warden_guard_categories_total",
            &[("checkpoint", "input"), ("category", c), ("action", action)],
        )
    };
    assert_eq!(cat("S6", "flag"), 1.0);
    assert_eq!(cat("S9", "block"), 1.0);
    assert_eq!(
        get(
            "warden_guard_duration_seconds_count",
            &[("checkpoint", "input")]
        ),
        5.0
    );
    assert_eq!(
        get("warden_guard_duration_seconds", &[("checkpoint", "input")]),
        5.0,
        "the +Inf bucket holds every observation"
    );
    assert_eq!(
        get(
            "warden_guard_duration_seconds_count",
            &[("checkpoint", "output")]
        ),
        4.0
    );
    assert_eq!(
        get("warden_first_token_seconds_count", &[("model", "up")]),
        1.0
    );
    // The fake upstream reports 5 prompt and 4 completion tokens per answer.
    assert_eq!(
        get(
            "warden_tokens_total",
            &[("model", "up"), ("kind", "prompt")]
        ),
        20.0
    );
    assert_eq!(
        get(
            "warden_tokens_total",
            &[("model", "up"), ("kind", "completion")]
        ),
        16.0
    );
    assert_eq!(
        value(
            &m,
            "warden_guard_errors_total",
            &[("checkpoint", "input"), ("backend", "fake-guard")]
        ),
        None
    );
    assert_eq!(get("warden_policy_reload_failures_total", &[]), 0.0);
    gw.stop().await;
}

#[actix_web::test]
async fn guard_errors_are_counted() {
    let mut setup = Setup::new();
    setup.guard = dead_addr();
    let gw = setup.start().await;
    // The test policy fails closed: the unreachable guard refuses the turn.
    assert_eq!(gw.chat("up", "hello").await.status(), 503);
    assert_eq!(gw.chat("up", "hello again").await.status(), 503);
    let (m, text) = scrape(&gw.base).await;
    assert_eq!(
        value(
            &m,
            "warden_guard_errors_total",
            &[("checkpoint", "input"), ("backend", "fake-guard")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &m,
            "warden_requests_total",
            &[
                ("route", "/v1/chat/completions"),
                ("status", "503"),
                ("model", "up")
            ]
        ),
        Some(2.0)
    );
    gw.stop().await;
}
