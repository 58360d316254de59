//! Constrained decoding through the gateway on the real bundled model:
//! `response_format` with the official `openai` Python package, and an
//! agent whose tool is required calling it validly on the first attempt.

use serde_json::{json, Value};
use warden_tests::*;

fn local_setup() -> Option<Setup> {
    let mut setup = local_agent_setup(2)?;
    setup.max_tokens = 400;
    Some(setup)
}

#[actix_web::test]
async fn response_format_json_schema_through_the_openai_python_sdk() {
    let Some(setup) = local_setup() else { return };
    let gw = setup.start().await;
    let (ok, stdout, stderr) =
        run_python("structured_output.py", vec![gw.base.clone(), KEY.into()]).await;
    assert!(
        ok,
        "structured output failed (WARDEN_PYTHON needs the openai package)\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ok passed to upstreams unchanged"),
        "{stdout}"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn a_required_tool_is_called_validly_on_the_first_attempt_every_time() {
    let Some(setup) = local_setup() else { return };
    let gw = setup.start().await;
    for seed in 0..10 {
        let res = gw
            .post(
                "/v1/chat/completions",
                &json!({"model": "local-agent", "max_tokens": 128, "temperature": 1.0, "seed": seed,
                        "messages": [{"role": "user", "content": "What is 12 times 7?"}]}),
            )
            .await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        let steps = agent_steps(status, &body);
        let first = steps
            .first()
            .unwrap_or_else(|| panic!("seed {seed}: no step: {body}"));
        assert_eq!(first["step"], 1, "seed {seed}: {first}");
        assert_eq!(first["attempt"], 1, "seed {seed}: {first}");
        assert_eq!(first["tool"], "calculator", "seed {seed}: {first}");
        assert_eq!(first["constrained"], true, "seed {seed}: {first}");
        // Valid means it passed validation and ran: the calculator may still
        // refuse arithmetic that fits the schema (`)*2`), as any tool may fail.
        assert!(
            matches!(first["status"].as_str(), Some("executed" | "failed")),
            "seed {seed}: {first}"
        );
        assert_ne!(
            body["error"]["code"], "invalid_tool_call",
            "seed {seed}: {body}"
        );
        let args = first["arguments"].as_object().unwrap();
        assert!(args["expression"].is_string(), "seed {seed}: {first}");
        assert_eq!(args.len(), 1, "seed {seed}: {first}");
        // No step of the turn was a rejected call.
        for s in &steps {
            assert!(
                !matches!(
                    s["status"].as_str(),
                    Some("parse_error" | "unknown_tool" | "invalid")
                ),
                "seed {seed}: {s}"
            );
        }
    }
    gw.stop().await;
}

#[actix_web::test]
async fn client_tool_calls_from_the_local_model_are_valid_when_required() {
    let Some(setup) = local_setup() else { return };
    let gw = setup.start().await;
    let tools = json!([{"type": "function", "function": {
    "name": "get_forecast", "description": "Weather forecast for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1, "maxLength": 20},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "unit", "days"],
        "additionalProperties": false,
    }}}]);
    for seed in 0..6 {
        let res = gw
            .post(
                "/v1/chat/completions",
                &json!({"model": "local", "max_tokens": 64, "temperature": 1.0, "seed": seed,
                        "tools": tools, "tool_choice": "required",
                        "messages": [{"role": "user", "content": "Forecast for Paris for 3 days in celsius."}]}),
            )
            .await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "seed {seed}: {body}");
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "seed {seed}: {body}");
        let steps = body["warden"]["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 1, "seed {seed}: first attempt: {body}");
        assert_eq!(steps[0]["constrained"], true, "seed {seed}: {body}");
    }
    gw.stop().await;
}
