//! Constrained decoding on the bundled model: sampled at temperature 1.0,
//! every constrained output parses and validates against its schema (the
//! unconstrained rate on the same prompts is printed, not asserted);
//! unsupported schema features and outputs cut by the token limit are
//! typed errors, never truncated JSON.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use serde_json::{json, Value};
use warden_inference::scheduler::{Request, Scheduler, SchedulerConfig};
use warden_inference::template::RenderInput;
use warden_inference::{
    CallFormat, ConstrainError, Constraint, GenerateOptions, InferenceError, Logits, Model,
    SamplingParams, ToolSpec,
};

/// Constrained samples per schema.
const SAMPLES: u64 = 50;
/// Unconstrained samples per schema, for the printed comparison only.
const BASELINE: u64 = 10;
/// Token limit of every sample (the schemas' bounded outputs fit well within it).
const MAX_TOKENS: usize = 128;

/// Named schemas covering what the issue lists: nested objects, arrays,
/// enums, numbers with bounds, required and optional fields, no extras.
fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "nested object",
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 20},
                    "address": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "maxLength": 20},
                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"}
                        },
                        "required": ["city", "zip"],
                        "additionalProperties": false
                    }
                },
                "required": ["name", "address"],
                "additionalProperties": false
            }),
        ),
        (
            "array of items",
            json!({
                "type": "object",
                "properties": {
                    "tags": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": 12},
                        "minItems": 1,
                        "maxItems": 4
                    }
                },
                "required": ["tags"],
                "additionalProperties": false
            }),
        ),
        (
            "enums",
            json!({
                "type": "object",
                "properties": {
                    "unit": {"enum": ["celsius", "fahrenheit"]},
                    "mood": {"type": "string", "enum": ["happy", "sad", "neutral"]}
                },
                "required": ["unit", "mood"],
                "additionalProperties": false
            }),
        ),
        (
            "bounded numbers",
            json!({
                "type": "object",
                "properties": {
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                    "temperature": {"type": "number", "minimum": -50, "maximum": 60},
                    "count": {"type": "integer", "exclusiveMinimum": 0, "maximum": 100}
                },
                "required": ["days", "temperature", "count"],
                "additionalProperties": false
            }),
        ),
        (
            "optional fields",
            json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string", "maxLength": 20},
                    "done": {"type": "boolean"},
                    "note": {"type": "string", "maxLength": 20},
                    "priority": {"type": "integer", "minimum": 1, "maximum": 5}
                },
                "required": ["title", "done"],
                "additionalProperties": false
            }),
        ),
        (
            "array of objects",
            json!({
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "maxLength": 8},
                        "qty": {"type": "integer", "minimum": 1, "maximum": 9}
                    },
                    "required": ["sku", "qty"],
                    "additionalProperties": false
                },
                "minItems": 1,
                "maxItems": 3
            }),
        ),
    ]
}

/// The chat prompt asking for JSON matching `schema` (the schema is shown,
/// so the unconstrained model has a fair chance).
fn prompt(model: &Model, schema: &Value) -> Vec<u32> {
    let input = RenderInput {
        messages: vec![
            json!({"role": "system", "content": "You reply with JSON only."}),
            json!({"role": "user", "content": format!(
                "Write one example JSON value that matches this JSON Schema:\n{schema}")}),
        ],
        tools: None,
        add_generation_prompt: true,
        template_kwargs: serde_json::Map::new(),
    };
    model.encode_chat(&input).unwrap()
}

fn sampled(seed: u64, max_tokens: usize, constraint: Option<Constraint>) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        stop: Vec::new(),
        constraint,
    }
}

/// Whether `text` parses as JSON and is valid against `schema`.
fn valid(schema: &Value, text: &str) -> bool {
    let validator = jsonschema::validator_for(schema).expect("test schemas are valid");
    serde_json::from_str::<Value>(text).is_ok_and(|v| validator.is_valid(&v))
}

/// Runs `SAMPLES` seeded generations for one schema through the scheduler
/// (batched, so the suite stays quick); the texts, or the failure messages.
fn run_batch(
    model: &Model,
    scheduler: &Scheduler,
    prompt: &[u32],
    samples: u64,
    constraint: Option<Constraint>,
) -> Vec<Result<String, String>> {
    // The prompt is prefilled once; every sample continues from a fork.
    let (last, prefix) = prompt.split_last().unwrap();
    let mut prefilled = model.new_cache();
    model.forward(prefix, &mut prefilled, Logits::Last).unwrap();
    let handles: Vec<_> = (0..samples)
        .map(|seed| {
            let mut request =
                Request::new(vec![*last], sampled(seed, MAX_TOKENS, constraint.clone()));
            request.cache = Some(prefilled.fork().unwrap());
            scheduler.submit(request).unwrap()
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.wait().map(|c| c.text))
        .collect()
}

#[test]
fn sampled_outputs_under_a_schema_all_parse_and_validate() {
    let model = common::model();
    let scheduler = Scheduler::new(
        Arc::clone(&model),
        SchedulerConfig {
            slots: 10,
            queue: SAMPLES as usize,
        },
    );
    let mut report = Vec::new();
    for (name, schema) in schemas() {
        let prompt = prompt(&model, &schema);
        let constrained = run_batch(
            &model,
            &scheduler,
            &prompt,
            SAMPLES,
            Some(Constraint::JsonSchema(schema.clone())),
        );
        for (seed, out) in constrained.iter().enumerate() {
            let text = out
                .as_ref()
                .unwrap_or_else(|e| panic!("{name}, seed {seed}: {e}"));
            assert!(
                valid(&schema, text),
                "{name}, seed {seed}: constrained output is not valid: {text}"
            );
        }
        let free = run_batch(&model, &scheduler, &prompt, BASELINE, None);
        let ok = free
            .iter()
            .filter(|o| o.as_ref().is_ok_and(|t| valid(&schema, t)))
            .count();
        let line = format!(
            "{name}: constrained {SAMPLES}/{SAMPLES} valid; unconstrained {ok}/{BASELINE} valid ({:.0}% fail)",
            100.0 * (BASELINE as f64 - ok as f64) / BASELINE as f64
        );
        eprintln!("{line}");
        report.push(line);
    }
    eprintln!("{}", report.join("\n"));
}

fn expect_constrain_error(model: &Model, options: &GenerateOptions) -> ConstrainError {
    let prompt = prompt(model, &json!({"type": "object"}));
    match model.generate(&prompt, options, |_| ControlFlow::Continue(())) {
        Err(InferenceError::Constrain(e)) => e,
        other => panic!("expected a constraint error, got {other:?}"),
    }
}

#[test]
fn an_unsupported_schema_feature_is_named() {
    let model = common::model();
    let schema = json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true});
    let e = expect_constrain_error(
        &model,
        &sampled(0, 32, Some(Constraint::JsonSchema(schema))),
    );
    assert_eq!(
        e,
        ConstrainError::Unsupported {
            feature: "uniqueItems".into()
        }
    );
    // Nested inside a tool's parameters too.
    let tools = vec![ToolSpec {
        name: "lookup".into(),
        parameters: json!({"type": "object", "properties": {
            "id": {"type": "string", "format": "no-such-format"}}}),
    }];
    let Err(e) = model.constrain(&Constraint::ToolCall {
        tools,
        format: CallFormat::Llama31,
    }) else {
        panic!("an unknown format was accepted");
    };
    assert_eq!(
        e,
        ConstrainError::Unsupported {
            feature: "format: no-such-format".into()
        }
    );
    assert!(e.to_string().contains("no-such-format"), "{e}");
}

#[test]
fn a_token_limit_too_small_for_the_schema_is_unfinished_not_truncated() {
    let model = common::model();
    let schema = schemas().remove(0).1;
    let e = expect_constrain_error(
        &model,
        &sampled(1, 6, Some(Constraint::JsonSchema(schema.clone()))),
    );
    assert_eq!(e, ConstrainError::Unfinished { max_tokens: 6 });
    // The same through the scheduler.
    let scheduler = Scheduler::new(Arc::clone(&model), SchedulerConfig::default());
    let p = prompt(&model, &schema);
    let out = scheduler
        .submit(Request::new(
            p,
            sampled(1, 6, Some(Constraint::JsonSchema(schema))),
        ))
        .unwrap()
        .wait();
    let err = out.expect_err("an unfinished output is not a completion");
    assert!(err.contains("6 tokens"), "{err}");
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_forecast".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1, "maxLength": 30},
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7}
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": false
        }),
    }
}

fn calc_tool() -> ToolSpec {
    ToolSpec {
        name: "calculator".into(),
        parameters: json!({
            "type": "object",
            "properties": {"expression": {"type": "string", "maxLength": 40}},
            "required": ["expression"],
            "additionalProperties": false
        }),
    }
}

fn call_prompt(model: &Model, question: &str) -> Vec<u32> {
    let system = "You can call the function `calculator` with the parameters \
        {\"expression\": <arithmetic expression>}. To call it, reply with only \
        {\"name\": \"calculator\", \"parameters\": {...}}; otherwise reply in words.";
    let input = RenderInput {
        messages: vec![
            json!({"role": "system", "content": system}),
            json!({"role": "user", "content": question}),
        ],
        tools: None,
        add_generation_prompt: true,
        template_kwargs: serde_json::Map::new(),
    };
    model.encode_chat(&input).unwrap()
}

/// Checks one call object `{"name", <arguments_key>}` against the tools.
fn assert_valid_call(call: &Value, arguments_key: &str, tools: &[ToolSpec]) {
    let name = call["name"].as_str().expect("a name");
    let tool = tools
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("unknown tool {name}"));
    let validator = jsonschema::validator_for(&tool.parameters).unwrap();
    assert!(
        validator.is_valid(&call[arguments_key]),
        "invalid arguments: {call}"
    );
    assert_eq!(call.as_object().unwrap().len(), 2, "{call}");
}

#[test]
fn sampled_tool_calls_name_an_offered_tool_with_valid_arguments() {
    let model = common::model();
    let tools = vec![weather_tool(), calc_tool()];
    let prompt = call_prompt(&model, "What is the weather in Paris for the next 3 days?");
    let call = |seed: u64, format: CallFormat| {
        let constraint = Constraint::ToolCall {
            tools: tools.clone(),
            format,
        };
        model
            .generate(&prompt, &sampled(seed, 120, Some(constraint)), |_| {
                ControlFlow::Continue(())
            })
            .unwrap()
            .text
    };
    for seed in 0..10 {
        let llama = call(seed, CallFormat::Llama31);
        let parsed: Value =
            serde_json::from_str(&llama).unwrap_or_else(|e| panic!("seed {seed}: {e}: {llama}"));
        assert_valid_call(&parsed, "parameters", &tools);

        let smol = call(seed, CallFormat::SmolLm2);
        let inner = smol
            .strip_prefix("<tool_call>")
            .and_then(|t| t.strip_suffix("</tool_call>"))
            .unwrap_or_else(|| panic!("seed {seed}: not a SmolLM2 call: {smol}"));
        let calls: Vec<Value> = serde_json::from_str(inner).unwrap();
        assert_eq!(calls.len(), 1);
        assert_valid_call(&calls[0], "arguments", &tools);
    }
}

#[test]
fn text_or_call_is_free_text_or_a_valid_call() {
    let model = common::model();
    let tools = vec![calc_tool()];
    let (mut texts, mut calls) = (0, 0);
    for (seed, question) in [
        "Hello! How are you today?",
        "What is 12 times 7? Use the calculator.",
    ]
    .into_iter()
    .cycle()
    .take(12)
    .enumerate()
    {
        let out = model
            .generate(
                &call_prompt(&model, question),
                &sampled(
                    seed as u64,
                    80,
                    Some(Constraint::TextOrToolCall {
                        tools: tools.clone(),
                        format: CallFormat::Llama31,
                    }),
                ),
                |_| ControlFlow::Continue(()),
            )
            .unwrap();
        if out.text.trim_start().starts_with('{') {
            let call: Value = serde_json::from_str(&out.text)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}: {}", out.text));
            assert_valid_call(&call, "parameters", &tools);
            calls += 1;
        } else {
            texts += 1;
        }
    }
    eprintln!("text answers: {texts}, calls: {calls}");
}
