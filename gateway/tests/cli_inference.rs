//! The inference CLI (`tokenize`, `template render`, `generate`, `logits`)
//! against the golden fixtures and the bundled model, through the real binary.

mod cli_support;
use cli_support::warden;

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

fn fixtures() -> PathBuf {
    if let Ok(dir) = std::env::var("WARDEN_FIXTURES") {
        return PathBuf::from(dir);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = workspace.join("../shared/fixtures");
    if shared.is_dir() {
        shared
    } else {
        workspace.join("fixtures")
    }
}

fn fixture(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(rel)).unwrap()).unwrap()
}

fn model() -> String {
    std::env::var("WARDEN_TEST_MODEL").unwrap_or_else(|_| {
        format!(
            "{}/.cache/warden/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            std::env::var("HOME").unwrap()
        )
    })
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "warden failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn tokenize_prints_llama_cpp_ids() {
    let m = model();
    for case in fixture("tokenizer/smollm2_tokens.json").as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        if ![
            "ascii_sentence",
            "chatml_fragment_special",
            "chatml_fragment",
        ]
        .contains(&name)
        {
            continue;
        }
        let mut args = vec!["tokenize", "--model", &m];
        if case["parse_special"].as_bool().unwrap() {
            args.push("--parse-special");
        }
        let ids: Value =
            serde_json::from_str(&stdout(&warden(&args, case["text"].as_str().unwrap()))).unwrap();
        assert_eq!(ids, case["ids"], "{name}");
    }
}

#[test]
fn template_render_prints_exactly_the_fixture_prompt() {
    for case in fixture("formats/llama31_chat_prompts.json")
        .as_array()
        .unwrap()
    {
        let out = warden(
            &["template", "render", "--builtin", "llama3.1"],
            &case["input"].to_string(),
        );
        match case["expected_prompt"].as_str() {
            Some(want) => assert_eq!(stdout(&out), want, "{}", case["name"]),
            None => assert_eq!(out.status.code(), Some(1), "{}", case["name"]),
        }
    }
    let m = model();
    for case in fixture("formats/smollm2_chat_prompts.json")
        .as_array()
        .unwrap()
    {
        let out = warden(
            &["template", "render", "--model", &m],
            &case["input"].to_string(),
        );
        assert_eq!(
            stdout(&out),
            case["expected_prompt"].as_str().unwrap(),
            "{}",
            case["name"]
        );
    }
}

#[test]
fn template_errors_exit_1_with_the_message() {
    // The Llama 3.1 format allows one tool call per assistant turn.
    let input = serde_json::json!({
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [
                {"type": "function", "function": {"name": "a", "arguments": {}}},
                {"type": "function", "function": {"name": "b", "arguments": {}}}
            ]}
        ],
        "add_generation_prompt": true
    });
    let out = warden(
        &["template", "render", "--builtin", "llama3.1"],
        &input.to_string(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(!out.stderr.is_empty());
}

#[test]
fn generate_and_logits_follow_the_fixtures() {
    let m = model();
    let case = &fixture("generation/smollm2_greedy.json")[0];
    // Messages in, the same greedy text as the raw prompt gives.
    let chat = stdout(&warden(
        &["generate", "--model", &m, "--max-tokens", "6"],
        &case["messages"].to_string(),
    ));
    let raw = stdout(&warden(
        &["generate", "--model", &m, "--max-tokens", "6", "--raw"],
        case["prompt"].as_str().unwrap(),
    ));
    assert_eq!(chat, raw);
    assert!(!chat.trim().is_empty());

    let tf = &fixture("generation/smollm2_teacher_forced.json")[0];
    let ids: Vec<u64> = serde_json::from_value(tf["ids"].clone()).unwrap();
    let short = serde_json::to_string(&ids[..12]).unwrap();
    let rows: Value = serde_json::from_str(&stdout(&warden(
        &["logits", "--model", &m, "--top", "5"],
        &short,
    )))
    .unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 12);
    for (row, want) in rows.iter().zip(tf["positions"].as_array().unwrap()) {
        assert_eq!(row["top_ids"].as_array().unwrap().len(), 5);
        let gap = want["top_logits"][0].as_f64().unwrap() - want["top_logits"][1].as_f64().unwrap();
        if gap >= 1.0 {
            assert_eq!(row["top_ids"][0], want["top_ids"][0]);
        }
    }
}
