//! Loading tools and checking calls against their JSON Schemas.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use warden_agents::tools::{
    render_tool_instructions, BoxFuture, BuiltinTool, ExecError, Executor, ExecutorSpec, HttpSpec,
    Rejected, ToolCall, ToolCallFormat, ToolError, ToolOutput, ToolSet, ToolSpec, ValidCall,
    ValidationIssue,
};

fn client_tool(name: &str, parameters: Value) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: Some(format!("The {name} tool.")),
        parameters,
        executor: ExecutorSpec::Client,
    }
}

/// A booking tool with nested objects, arrays and an enum.
fn booking() -> ToolSet {
    ToolSet::new(vec![client_tool(
        "book",
        json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "nights": {"type": "integer", "minimum": 1},
                "room": {"type": "string", "enum": ["single", "double"]},
                "guest": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                    "required": ["name"],
                    "additionalProperties": false
                },
                "extras": {"type": "array", "items": {"type": "string", "maxLength": 5}}
            },
            "required": ["city", "nights"],
            "additionalProperties": false
        }),
    )])
    .unwrap()
}

fn call(name: &str, arguments: Value) -> ToolCall {
    ToolCall::new(name, arguments)
}

/// The issues of an invalid call, as (pointer, message).
fn issues(set: &ToolSet, arguments: Value) -> Vec<ValidationIssue> {
    match set.validate(call("book", arguments)) {
        Err(Rejected::Invalid { issues, call }) => {
            assert_eq!(call.name, "book");
            issues
        }
        other => panic!("expected invalid, got {other:?}"),
    }
}

fn pointers(issues: &[ValidationIssue]) -> Vec<&str> {
    issues.iter().map(|i| i.pointer.as_str()).collect()
}

#[test]
fn valid_call_passes() {
    let set = booking();
    let args = json!({"city": "Oslo", "nights": 2, "room": "double", "guest": {"name": "Ada", "age": 36}, "extras": ["tea"]});
    let valid = set.validate(call("book", args.clone())).unwrap();
    assert_eq!(valid.call().arguments, args);
    assert!(set.is_client("book"));
}

#[test]
fn missing_required_field() {
    let found = issues(&booking(), json!({"city": "Oslo"}));
    assert_eq!(pointers(&found), [""]);
    assert!(found[0].message.contains("nights"), "{}", found[0].message);
}

#[test]
fn wrong_type() {
    let found = issues(&booking(), json!({"city": 5, "nights": 2}));
    assert_eq!(pointers(&found), ["/city"]);
    assert!(found[0].message.contains("string"), "{}", found[0].message);
}

#[test]
fn extra_property() {
    let found = issues(
        &booking(),
        json!({"city": "Oslo", "nights": 2, "pets": true}),
    );
    assert_eq!(pointers(&found), [""]);
    assert!(found[0].message.contains("pets"), "{}", found[0].message);
}

#[test]
fn enum_violation() {
    let found = issues(
        &booking(),
        json!({"city": "Oslo", "nights": 2, "room": "suite"}),
    );
    assert_eq!(pointers(&found), ["/room"]);
}

#[test]
fn nested_object_and_array_items() {
    let found = issues(
        &booking(),
        json!({"city": "Oslo", "nights": 2, "guest": {"age": "old"}, "extras": ["tea", 7, "breakfast"]}),
    );
    let mut got = pointers(&found);
    got.sort_unstable();
    assert_eq!(got, ["/extras/1", "/extras/2", "/guest", "/guest/age"]);
}

#[test]
fn every_issue_is_reported() {
    let set = booking();
    let found = issues(
        &set,
        json!({"city": ["x"], "nights": 0, "room": 1, "extra": null}),
    );
    let mut got = pointers(&found);
    got.sort_unstable();
    // Missing nothing required, but: extra property (root), city type,
    // nights minimum, room type and enum (one pointer, two issues).
    assert_eq!(got, ["", "/city", "/nights", "/room", "/room"]);

    // The feedback for the model lists each with its pointer.
    let rejected = set
        .validate(call(
            "book",
            json!({"city": ["x"], "nights": 0, "room": 1, "extra": null}),
        ))
        .unwrap_err();
    let feedback = rejected.feedback();
    for needle in [
        "`book`",
        "at (arguments):",
        "at /city:",
        "at /nights:",
        "at /room:",
    ] {
        assert!(feedback.contains(needle), "{needle} in {feedback}");
    }
    assert_eq!(feedback.lines().count(), 1 + found.len() + 1);
}

#[test]
fn unknown_tool() {
    let set = booking();
    let rejected = set.validate(call("cancel", json!({}))).unwrap_err();
    assert!(matches!(rejected, Rejected::UnknownTool { .. }));
    assert_eq!(rejected.call().name, "cancel");
    assert!(rejected.feedback().contains("no tool named `cancel`"));
}

/// Counts the calls it runs.
#[derive(Default)]
struct Recorder {
    runs: AtomicUsize,
}

impl Executor for Recorder {
    fn execute<'a>(&'a self, call: &'a ValidCall) -> BoxFuture<'a, Result<ToolOutput, ExecError>> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            Ok(ToolOutput::new(call.call().arguments.to_string()))
        })
    }
}

#[tokio::test]
async fn invalid_calls_never_reach_the_executor() {
    let recorder = Arc::new(Recorder::default());
    let set = booking().with_executor("book", recorder.clone()).unwrap();
    assert!(!set.is_client("book"));
    // The agent's flow: validate, and only on success execute.
    for bad in [
        json!({"city": "Oslo"}),
        json!({"city": 1, "nights": "x"}),
        json!([]),
    ] {
        match set.validate(call("book", bad)) {
            Ok(valid) => panic!("accepted {:?}", valid.call()),
            Err(rejected) => assert!(!rejected.feedback().is_empty()),
        }
    }
    assert!(set.validate(call("nope", json!({}))).is_err());
    assert_eq!(recorder.runs.load(Ordering::SeqCst), 0);

    let valid = set
        .validate(call("book", json!({"city": "Oslo", "nights": 1})))
        .unwrap();
    let out = set.execute(&valid).await.unwrap();
    assert_eq!(out.content, r#"{"city":"Oslo","nights":1}"#);
    assert_eq!(recorder.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_call_checked_by_another_set_is_checked_again() {
    let loose = ToolSet::new(vec![client_tool("book", json!({"type": "object"}))]).unwrap();
    let recorder = Arc::new(Recorder::default());
    let strict = booking().with_executor("book", recorder.clone()).unwrap();
    let valid_elsewhere = loose.validate(call("book", json!({"city": 1}))).unwrap();
    let err = strict.execute(&valid_elsewhere).await.unwrap_err();
    assert!(matches!(err, ExecError::Refused { .. }), "{err}");
    assert_eq!(recorder.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn client_tools_are_not_executed() {
    let set = booking();
    let valid = set
        .validate(call("book", json!({"city": "Oslo", "nights": 1})))
        .unwrap();
    assert_eq!(
        set.execute(&valid).await.unwrap_err(),
        ExecError::ClientTool
    );
}

#[test]
fn a_non_schema_is_refused_naming_the_tool() {
    for bad in [
        json!({"type": 5}),
        json!({"type": "object", "properties": {"a": {"type": "strin"}}}),
        json!({"type": "object", "required": "a"}),
        json!({"minimum": "zero"}),
        json!("object"),
    ] {
        let err = ToolSet::new(vec![
            client_tool("fine", json!({"type": "object"})),
            client_tool("broken", bad.clone()),
        ])
        .unwrap_err();
        assert!(
            matches!(&err, ToolError::InvalidSchema { tool, .. } if tool == "broken"),
            "{bad}: {err:?}"
        );
        assert!(err.to_string().contains("`broken`"), "{err}");
        if bad["properties"].is_object() {
            // The message says where in the schema the fault is.
            assert!(err.to_string().contains("at /properties/a/type"), "{err}");
        }
    }
}

#[test]
fn other_load_errors_name_the_tool() {
    let dup = ToolSet::new(vec![
        client_tool("a", json!({})),
        client_tool("a", json!({})),
    ])
    .unwrap_err();
    assert_eq!(dup, ToolError::Duplicate { tool: "a".into() });
    let bad_name = ToolSet::new(vec![client_tool("a b", json!({}))]).unwrap_err();
    assert!(bad_name.to_string().contains("`a b`"), "{bad_name}");

    let http = |url: &str, hosts: &[&str]| ToolSpec {
        name: "fetch".into(),
        description: None,
        parameters: json!({"type": "object"}),
        executor: ExecutorSpec::Http(HttpSpec::new(
            url,
            hosts.iter().map(|h| h.to_string()).collect(),
        )),
    };
    for (url, hosts) in [
        ("not a url", &["x"][..]),
        ("ftp://files.example/", &["files.example"][..]),
        ("https://api.example/x", &["other.example"][..]),
        ("https://api.example/x", &[][..]),
    ] {
        let err = ToolSet::new(vec![http(url, hosts)]).unwrap_err();
        assert!(
            matches!(&err, ToolError::InvalidHttp { tool, .. } if tool == "fetch"),
            "{url}: {err:?}"
        );
    }
    assert!(ToolSet::new(vec![http("https://API.example./x", &["api.example"])]).is_ok());

    let err = booking()
        .with_executor("missing", Arc::new(Recorder::default()))
        .unwrap_err();
    assert_eq!(
        err,
        ToolError::UnknownTool {
            tool: "missing".into()
        }
    );
}

#[test]
fn from_openai_tools() {
    let tools = vec![
        json!({"type": "function", "function": {"name": "get_weather", "description": "Weather.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
        json!({"type": "function", "function": {"name": "now"}}),
    ];
    let set = ToolSet::from_openai(&tools).unwrap();
    assert_eq!(set.names().collect::<Vec<_>>(), ["get_weather", "now"]);
    assert!(set.is_client("get_weather") && set.is_client("now"));
    assert_eq!(
        set.spec("get_weather").unwrap().description.as_deref(),
        Some("Weather.")
    );
    assert!(set.validate(call("now", json!({}))).is_ok());
    let rejected = set.validate(call("get_weather", json!({}))).unwrap_err();
    assert!(matches!(rejected, Rejected::Invalid { .. }));
    assert_eq!(set.to_openai()[0], tools[0]);
}

#[test]
fn from_openai_errors_name_the_tool() {
    let err = ToolSet::from_openai(&[
        json!({"type": "function", "function": {"name": "ok"}}),
        json!({"type": "function", "function": {"name": "weather", "parameters": {"type": "objekt"}}}),
    ])
    .unwrap_err();
    assert!(
        matches!(&err, ToolError::InvalidSchema { tool, .. } if tool == "weather"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`weather`"));

    let err = ToolSet::from_openai(&[json!({"type": "retrieval", "function": {"name": "r"}})])
        .unwrap_err();
    assert!(err.to_string().contains("`r`"), "{err}");
    let err = ToolSet::from_openai(&[json!({"type": "function"})]).unwrap_err();
    assert!(err.to_string().contains("`#0`"), "{err}");
}

#[test]
fn empty_set() {
    let set = ToolSet::empty();
    assert!(set.is_empty());
    assert_eq!(set.names().count(), 0);
    assert!(matches!(
        set.validate(call("x", json!({}))),
        Err(Rejected::UnknownTool { .. })
    ));
    assert_eq!(render_tool_instructions(ToolCallFormat::Llama31, &set), "");
}

#[test]
fn specs_from_toml_like_config() {
    // Config files are TOML/YAML; serde_json stands in for their data model.
    let specs: Vec<ToolSpec> = serde_json::from_value(json!([
        {"name": "calc", "executor": {"kind": "builtin", "name": "calculator"},
         "parameters": ToolSpec::builtin(BuiltinTool::Calculator).parameters},
        {"name": "time", "executor": {"kind": "builtin", "name": "current_time"}},
        {"name": "ask_user", "description": "Ask.", "executor": {"kind": "client"}},
        {"name": "lookup", "parameters": {"type": "object"},
         "executor": {"kind": "http", "url": "https://tools.example/lookup", "allow_hosts": ["tools.example"]}}
    ]))
    .unwrap();
    match &specs[3].executor {
        ExecutorSpec::Http(h) => {
            assert_eq!(
                (h.timeout_ms, h.max_response_bytes, h.allow_private),
                (10_000, 1 << 20, false)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(specs[1].parameters, Value::Null);
    let set = ToolSet::new(specs).unwrap();
    assert_eq!(
        set.names().collect::<Vec<_>>(),
        ["calc", "time", "ask_user", "lookup"]
    );
    assert!(set.is_client("ask_user") && !set.is_client("lookup"));
    // A built-in left without a schema or description gets its own.
    let builtin = ToolSpec::builtin(BuiltinTool::CurrentTime);
    let time = set.spec("time").unwrap();
    assert_eq!(time.parameters, builtin.parameters);
    assert_eq!(time.description, builtin.description);
    assert!(set
        .validate(ToolCall::new("time", json!({"timezone": "CET"})))
        .is_err());
    // Other tools left without one take any object.
    assert_eq!(
        set.spec("ask_user").unwrap().parameters,
        json!({"type": "object", "properties": {}})
    );

    for bad in [
        json!({"name": "x", "executor": {"kind": "client"}, "colour": "red"}),
        json!({"name": "x", "executor": {"kind": "builtin", "name": "shell"}}),
        json!({"name": "x", "executor": {"kind": "builtin", "name": "calculator", "extra": 1}}),
        json!({"name": "x", "executor": {"kind": "http", "url": "https://a.example/", "allow_hosts": [], "retries": 3}}),
        json!({"name": "x", "executor": {"kind": "ftp"}}),
    ] {
        assert!(
            serde_json::from_value::<ToolSpec>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn instructions_list_tools_and_syntax() {
    let set = ToolSet::new(vec![
        ToolSpec::builtin(BuiltinTool::Calculator),
        ToolSpec::builtin(BuiltinTool::CurrentTime),
    ])
    .unwrap();
    let llama = render_tool_instructions(ToolCallFormat::Llama31, &set);
    assert!(llama.contains("\"name\":\"calculator\""), "{llama}");
    assert!(llama.contains("\"name\":\"current_time\""));
    assert!(llama.contains("\"parameters\": <object"));
    let smol = render_tool_instructions(ToolCallFormat::SmolLm2, &set);
    assert!(smol.contains("<tools>") && smol.contains("</tools>"));
    assert!(smol.contains("<tool_call>[{\"name\""));
    assert!(smol.contains("\"expression\""));
}
