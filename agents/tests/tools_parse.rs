//! Parsing tool calls: Llama 3.1 JSON and built-in calls, SmolLM2 tags,
//! OpenAI `tool_calls` whole and streamed.

use serde_json::{json, Value};
use warden_agents::tools::{
    parse_openai_tool_calls, parse_output, tool_result_message, OpenAiCallAccumulator, Parsed,
    ToolCall, ToolCallFormat,
};

use ToolCallFormat::{Llama31, SmolLm2};

/// The calls of `text`, as (name, arguments) pairs; fails on anything else.
fn calls(format: ToolCallFormat, text: &str) -> Vec<(String, Value)> {
    match parse_output(format, text) {
        Ok(Parsed::Calls(calls)) => {
            for c in &calls {
                assert_generated_id(&c.id);
            }
            calls.into_iter().map(|c| (c.name, c.arguments)).collect()
        }
        other => panic!("expected calls from {text:?}, got {other:?}"),
    }
}

fn one(name: &str, args: Value) -> Vec<(String, Value)> {
    vec![(name.to_owned(), args)]
}

fn assert_generated_id(id: &str) {
    let hex = id.strip_prefix("call_").expect("id starts with call_");
    assert_eq!(hex.len(), 24, "{id}");
    assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
}

/// The error of a malformed output, which keeps the raw text.
fn malformed(format: ToolCallFormat, text: &str) -> String {
    match parse_output(format, text) {
        Err(e) => {
            assert_eq!(e.raw, text, "raw text kept");
            e.reason
        }
        Ok(other) => panic!("expected a parse error for {text:?}, got {other:?}"),
    }
}

// ---- Llama 3.1 -----------------------------------------------------------

#[test]
fn llama_plain_text_is_text() {
    for text in [
        "The weather is fine.",
        "",
        "  Sure: {\"name\": 1}",
        "Call me {later}",
    ] {
        assert_eq!(
            parse_output(Llama31, text).unwrap(),
            Parsed::Text(text.to_owned())
        );
    }
}

#[test]
fn llama_json_call_with_and_without_wrappers() {
    let want = one("get_weather", json!({"city": "Paris", "days": 3}));
    let body = r#"{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}"#;
    for text in [
        body.to_owned(),
        format!("  {body}\n"),
        format!("<|python_tag|>{body}"),
        format!("{body}<|eom_id|>"),
        format!("{body}<|eot_id|>"),
        format!("<|python_tag|>{body}<|eom_id|>"),
        format!("<|python_tag|> {body} \n<|eot_id|>"),
    ] {
        assert_eq!(calls(Llama31, &text), want, "{text}");
    }
}

#[test]
fn llama_json_call_accepts_arguments_key_and_type() {
    assert_eq!(
        calls(
            Llama31,
            r#"{"type": "function", "name": "f", "arguments": {"x": [1, {"y": null}]}}"#
        ),
        one("f", json!({"x": [1, {"y": null}]}))
    );
}

#[test]
fn llama_several_json_calls() {
    let want = vec![
        ("a".to_owned(), json!({"n": 1})),
        ("b".to_owned(), json!({"s": "x;y\n"})),
    ];
    for sep in [";", "; ", "\n", " ;\n", "\n\n"] {
        let text = format!(
            r#"{{"name": "a", "parameters": {{"n": 1}}}}{sep}{{"name": "b", "parameters": {{"s": "x;y\n"}}}}"#
        );
        assert_eq!(calls(Llama31, &text), want, "{sep:?}");
    }
    // A trailing separator is harmless.
    assert_eq!(
        calls(Llama31, "{\"name\": \"a\", \"parameters\": {\"n\": 1}};"),
        one("a", json!({"n": 1}))
    );
}

#[test]
fn llama_builtin_calls() {
    assert_eq!(
        calls(
            Llama31,
            r#"<|python_tag|>brave_search.call(query="current weather in Menlo Park, California")<|eom_id|>"#
        ),
        one(
            "brave_search",
            json!({"query": "current weather in Menlo Park, California"})
        )
    );
    assert_eq!(
        calls(
            Llama31,
            r#"<|python_tag|>wolfram_alpha.call(query="solve x^3 - 4x^2 + 6x - 24 = 0")"#
        ),
        one(
            "wolfram_alpha",
            json!({"query": "solve x^3 - 4x^2 + 6x - 24 = 0"})
        )
    );
    assert_eq!(
        calls(
            Llama31,
            r#"<|python_tag|>lookup.call(k="v", n=3, f=-2.5, e=1e3, ok=True, no=false, none=None, s='it\'s', )"#
        ),
        one(
            "lookup",
            json!({"k": "v", "n": 3, "f": -2.5, "e": 1000.0, "ok": true, "no": false, "none": null, "s": "it's"})
        )
    );
    assert_eq!(
        calls(Llama31, "<|python_tag|>ping.call()<|eot_id|>"),
        one("ping", json!({}))
    );
}

#[test]
fn llama_builtin_call_string_escapes() {
    let text = r#"<|python_tag|>brave_search.call(query="say \"hi\" \\ back\n\tnow \u00e9\ud83d\ude00 ✓")"#;
    assert_eq!(
        calls(Llama31, text),
        one(
            "brave_search",
            json!({"query": "say \"hi\" \\ back\n\tnow é😀 ✓"})
        )
    );
}

#[test]
fn llama_several_builtin_calls() {
    assert_eq!(
        calls(
            Llama31,
            "<|python_tag|>a.call(x=1); b.call(y=\"2\")\nc.call()"
        ),
        vec![
            ("a".to_owned(), json!({"x": 1})),
            ("b".to_owned(), json!({"y": "2"})),
            ("c".to_owned(), json!({})),
        ]
    );
}

#[test]
fn llama_malformed() {
    for (text, needle) in [
        (r#"{"name": "f", "parameters": {"a": 1}"#, "invalid JSON"),
        (r#"{"answer": 42}"#, "unexpected key `answer`"),
        (r#"{"parameters": {}}"#, "no `name`"),
        (r#"{"name": "f"}"#, "no `parameters`"),
        (
            r#"{"name": "f", "parameters": [1]}"#,
            "must be a JSON object",
        ),
        (
            r#"{"name": "f", "parameters": "{}"}"#,
            "must be a JSON object",
        ),
        (
            r#"{"name": 3, "parameters": {}}"#,
            "`name` must be a string",
        ),
        (
            r#"{"name": "f", "parameters": {}, "arguments": {}}"#,
            "both",
        ),
        (
            r#"{"name": "f", "parameters": {}} and then words"#,
            "unexpected text",
        ),
        (
            r#"{"name": "f", "parameters": {}} {"name": "g", "parameters": {}}"#,
            "separated",
        ),
        ("<|python_tag|>", "nothing follows"),
        ("<|python_tag|><|eom_id|>", "nothing follows"),
        ("<|python_tag|>print(1 + 1)", "expected `print.call(..)`"),
        ("<|python_tag|>import os", "expected `import.call(..)`"),
        ("<|python_tag|>s.call(query=\"open", "never closed"),
        ("<|python_tag|>s.call(query=\"x\"", "expected `,` or `)`"),
        ("<|python_tag|>s.call(\"positional\")", "keyword argument"),
        ("<|python_tag|>s.call(q=\"a\", q=\"b\")", "given twice"),
        ("<|python_tag|>s.call(q=\"\\x41\")", "unknown escape"),
        ("<|python_tag|>s.call(q=\"\\ud83d\")", "unpaired surrogate"),
        (
            "<|python_tag|>s.call(q=bare)",
            "expected a string, number or boolean",
        ),
        ("<|python_tag|>s.call(n=1.)", "invalid number"),
        ("<|python_tag|>s.call() trailing", "unexpected text"),
    ] {
        let reason = malformed(Llama31, text);
        assert!(reason.contains(needle), "{text:?}: {reason}");
    }
}

// ---- SmolLM2 -------------------------------------------------------------

#[test]
fn smollm_text_without_tags() {
    for text in ["Hello there.", "", "{\"name\": \"f\", \"arguments\": {}}"] {
        assert_eq!(
            parse_output(SmolLm2, text).unwrap(),
            Parsed::Text(text.to_owned())
        );
    }
}

#[test]
fn smollm_list_and_single() {
    assert_eq!(
        calls(
            SmolLm2,
            r#"<tool_call>[{"name": "get_weather", "arguments": {"city": "Oslo"}}, {"name": "now", "arguments": {}}]</tool_call>"#
        ),
        vec![
            ("get_weather".to_owned(), json!({"city": "Oslo"})),
            ("now".to_owned(), json!({})),
        ]
    );
    assert_eq!(
        calls(
            SmolLm2,
            "Let me check.\n<tool_call>\n{\"name\": \"now\", \"arguments\": {\"tz\": \"UTC\"}}\n</tool_call><|im_end|>"
        ),
        one("now", json!({"tz": "UTC"}))
    );
    // Several tag pairs, in order.
    assert_eq!(
        calls(
            SmolLm2,
            "<tool_call>[{\"name\": \"a\", \"arguments\": {}}]</tool_call>\n<tool_call>{\"name\": \"b\", \"parameters\": {\"k\": 1}}</tool_call>"
        ),
        vec![("a".to_owned(), json!({})), ("b".to_owned(), json!({"k": 1}))]
    );
}

#[test]
fn smollm_malformed() {
    for (text, needle) in [
        (
            "<tool_call>[{\"name\": \"a\", \"arguments\": {}}]",
            "never closed",
        ),
        ("<tool_call><tool_call>[]</tool_call>", "never closed"),
        (
            "<tool_call>[{\"name\": \"a\", \"arguments\": {]</tool_call>",
            "not valid JSON",
        ),
        ("<tool_call></tool_call>", "not valid JSON"),
        ("<tool_call>[]</tool_call>", "empty list"),
        ("<tool_call>\"a\"</tool_call>", "list of calls or one call"),
        ("<tool_call>[{\"arguments\": {}}]</tool_call>", "no `name`"),
        (
            "<tool_call>[{\"name\": \"a\", \"arguments\": 3}]</tool_call>",
            "JSON object",
        ),
        ("stray </tool_call>", "without"),
        (
            "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call></tool_call>",
            "without",
        ),
    ] {
        let reason = malformed(SmolLm2, text);
        assert!(reason.contains(needle), "{text:?}: {reason}");
    }
}

// ---- OpenAI --------------------------------------------------------------

#[test]
fn openai_whole_message() {
    let tool_calls = vec![
        json!({"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}),
        json!({"type": "function", "function": {"name": "now", "arguments": "{}"}}),
    ];
    let parsed = parse_openai_tool_calls(&tool_calls).unwrap();
    assert_eq!(
        parsed[0],
        ToolCall {
            id: "call_abc".into(),
            name: "get_weather".into(),
            arguments: json!({"city": "Paris"})
        }
    );
    assert_eq!(parsed[1].name, "now");
    assert_eq!(parsed[1].arguments, json!({}));
    assert_generated_id(&parsed[1].id);
    // And back: the OpenAI shape carries arguments as text.
    assert_eq!(parsed[0].to_openai(), tool_calls[0]);
}

#[test]
fn openai_whole_message_malformed() {
    for (entry, needle) in [
        (
            json!({"function": {"name": "f", "arguments": "{\"a\": "}}),
            "not valid JSON",
        ),
        (
            json!({"function": {"name": "f", "arguments": "[1, 2]"}}),
            "must be a JSON object",
        ),
        (
            json!({"function": {"name": "f", "arguments": {"a": 1}}}),
            "must be JSON text",
        ),
        (json!({"function": {"name": "f"}}), "no `arguments`"),
        (
            json!({"function": {"arguments": "{}"}}),
            "no function `name`",
        ),
        (
            json!({"type": "code", "function": {"name": "f", "arguments": "{}"}}),
            "`type`",
        ),
        (
            json!({"id": 7, "function": {"name": "f", "arguments": "{}"}}),
            "`id` must be a string",
        ),
        (json!("f"), "expected an object"),
    ] {
        let tool_calls = vec![entry];
        let e = parse_openai_tool_calls(&tool_calls).unwrap_err();
        assert!(e.reason.contains(needle), "{}", e.reason);
        assert_eq!(e.raw, Value::Array(tool_calls).to_string());
    }
}

/// Streams `args` split at `cut` (a char boundary) for the call at index 0,
/// as upstreams do: id and name first, then argument pieces.
fn stream_once(args: &str, cut: usize) -> Vec<ToolCall> {
    let mut acc = OpenAiCallAccumulator::new();
    acc.push(&json!([{"index": 0, "id": "call_1", "type": "function", "function": {"name": "search", "arguments": ""}}]))
        .unwrap();
    acc.push(&json!([{"index": 0, "function": {"arguments": &args[..cut]}}]))
        .unwrap();
    acc.push(&Value::Null).unwrap();
    acc.push(&json!([{"index": 0, "function": {"arguments": &args[cut..]}}]))
        .unwrap();
    acc.finish().unwrap()
}

#[test]
fn openai_stream_split_at_every_point() {
    // Escapes, a \u escape, a surrogate pair escape and non-ASCII text: the
    // JSON text is cut inside each of them at some point of the loop.
    let args = r#"{"q": "say \"hi\"\\n \u00e9 \ud83d\ude00 é😀", "n": [1, 2.5, true, null], "o": {"k": "v"}}"#;
    let want = json!({"q": "say \"hi\"\\n é 😀 é😀", "n": [1, 2.5, true, null], "o": {"k": "v"}});
    let mut points = 0;
    for cut in 0..=args.len() {
        if !args.is_char_boundary(cut) {
            continue;
        }
        let calls = stream_once(args, cut);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].id, "call_1");
        assert_eq!(calls[0].name, "search");
        assert_eq!(calls[0].arguments, want, "cut at {cut}");
        points += 1;
    }
    assert!(points > 80);
}

#[test]
fn openai_stream_one_char_per_chunk_and_interleaved_calls() {
    let a = r#"{"city": "Zürich"}"#;
    let b = r#"{"expression": "2 * (3 + 4)"}"#;
    let mut acc = OpenAiCallAccumulator::new();
    assert!(acc.is_empty());
    acc.push(&json!([
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}},
        {"index": 1, "type": "function", "function": {"name": "calculator"}}
    ]))
    .unwrap();
    let (mut ia, mut ib) = (a.chars(), b.chars());
    loop {
        let (ca, cb) = (ia.next(), ib.next());
        if ca.is_none() && cb.is_none() {
            break;
        }
        let mut pieces = Vec::new();
        if let Some(c) = cb {
            pieces.push(json!({"index": 1, "function": {"arguments": c.to_string()}}));
        }
        if let Some(c) = ca {
            // Some servers repeat the id on every piece.
            pieces.push(
                json!({"index": 0, "id": "call_a", "function": {"arguments": c.to_string()}}),
            );
        }
        acc.push(&Value::Array(pieces)).unwrap();
    }
    let calls = acc.finish().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (
            calls[0].id.as_str(),
            calls[0].name.as_str(),
            &calls[0].arguments
        ),
        ("call_a", "weather", &json!({"city": "Zürich"}))
    );
    assert_eq!(calls[1].name, "calculator");
    assert_eq!(calls[1].arguments, json!({"expression": "2 * (3 + 4)"}));
    assert_generated_id(&calls[1].id);
}

#[test]
fn openai_stream_malformed() {
    // Bad pieces are refused at once, with the piece as raw.
    let mut acc = OpenAiCallAccumulator::new();
    let piece = json!([{"function": {"arguments": "{"}}]);
    let e = acc.push(&piece).unwrap_err();
    assert!(e.reason.contains("no `index`"), "{}", e.reason);
    assert_eq!(e.raw, piece.to_string());
    assert!(acc.push(&json!({"index": 0})).is_err());
    assert!(acc
        .push(&json!([{"index": 0, "function": {"arguments": 5}}]))
        .is_err());
    let mut acc = OpenAiCallAccumulator::new();
    acc.push(&json!([{"index": 0, "id": "call_1", "function": {"name": "f"}}]))
        .unwrap();
    let e = acc
        .push(&json!([{"index": 0, "id": "call_2"}]))
        .unwrap_err();
    assert!(e.reason.contains("second id"), "{}", e.reason);
    let e = acc
        .push(&json!([{"index": 0, "function": {"name": "g"}}]))
        .unwrap_err();
    assert!(e.reason.contains("second name"), "{}", e.reason);

    // Problems only visible at the end are reported by finish, with what was
    // accumulated as raw.
    for (pieces, needle) in [
        (
            vec![json!([{"index": 0, "function": {"arguments": "{}"}}])],
            "no function name",
        ),
        (
            vec![
                json!([{"index": 0, "function": {"name": "f", "arguments": "{\"a\": "}}]),
                json!([{"index": 0, "function": {"arguments": "1"}}]),
            ],
            "not valid JSON",
        ),
        (
            vec![json!([{"index": 0, "function": {"name": "f"}}])],
            "not valid JSON",
        ),
        (
            vec![json!([{"index": 0, "function": {"name": "f", "arguments": "\"text\""}}])],
            "JSON object",
        ),
    ] {
        let mut acc = OpenAiCallAccumulator::new();
        for p in &pieces {
            acc.push(p).unwrap();
        }
        let e = acc.finish().unwrap_err();
        assert!(e.reason.contains(needle), "{}", e.reason);
        assert!(e.raw.contains("\"index\":0"), "{}", e.raw);
    }
}

#[test]
fn tool_result_message_shape() {
    let call = ToolCall {
        id: "call_9".into(),
        name: "f".into(),
        arguments: json!({}),
    };
    assert_eq!(
        tool_result_message(&call, "{\"ok\":true}"),
        json!({"role": "tool", "tool_call_id": "call_9", "content": "{\"ok\":true}"})
    );
}

#[test]
fn format_names() {
    assert_eq!(serde_json::to_value(Llama31).unwrap(), json!("llama31"));
    assert_eq!(
        serde_json::from_value::<ToolCallFormat>(json!("smollm2")).unwrap(),
        SmolLm2
    );
}
