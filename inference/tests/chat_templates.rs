//! Chat templates against the shared golden prompts: the built-in Llama 3.1
//! renderer on `llama31_chat_prompts.json`, the bundled GGUF's own template on
//! `smollm2_chat_prompts.json`, byte for byte, error cases included.

use candle_core::quantized::gguf_file;
use serde::Deserialize;
use std::path::PathBuf;
use warden_inference::template::{
    normalize_tool_call_arguments, BuiltinTemplate, ChatTemplate, RenderInput, TemplateError,
};

/// One prompt case of a fixture file.
#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    input: RenderInput,
    expected_prompt: Option<String>,
    #[serde(default)]
    expected_error: Option<String>,
}

fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("WARDEN_FIXTURES") {
        return PathBuf::from(dir);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate dir has a parent")
        .to_path_buf();
    let shared = workspace.join("../shared/fixtures");
    if shared.is_dir() {
        shared
    } else {
        workspace.join("fixtures")
    }
}

fn model_path() -> PathBuf {
    match std::env::var("WARDEN_TEST_MODEL") {
        Ok(path) => PathBuf::from(path),
        Err(_) => {
            let home = std::env::var("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/warden/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        }
    }
}

fn load_cases(file: &str) -> Vec<Case> {
    let path = fixtures_dir().join("formats").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad fixture {}: {e}", path.display()))
}

/// Renders every case and reports all mismatches at once.
fn check_cases(template: &ChatTemplate, cases: &[Case]) {
    assert!(!cases.is_empty(), "fixture has no cases");
    let mut failures = Vec::new();
    for case in cases {
        let result = template.render(&case.input);
        match (&case.expected_prompt, result) {
            (Some(expected), Ok(actual)) if *expected == actual => {}
            (Some(expected), Ok(actual)) => failures.push(format!(
                "{}: prompt differs\n  expected {expected:?}\n  actual   {actual:?}",
                case.name
            )),
            (Some(_), Err(err)) => {
                failures.push(format!("{}: unexpected error {err:?}", case.name))
            }
            (None, Ok(actual)) => {
                failures.push(format!("{}: expected an error, got {actual:?}", case.name))
            }
            (None, Err(err)) => {
                if let Some(message) = &case.expected_error {
                    let matches = matches!(&err, TemplateError::Raised(m) if m == message);
                    if !matches {
                        failures.push(format!(
                            "{}: expected raised error {message:?}, got {err:?}",
                            case.name
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn builtin_llama31_matches_every_fixture_case() {
    let cases = load_cases("llama31_chat_prompts.json");
    check_cases(&ChatTemplate::builtin(BuiltinTemplate::Llama31), &cases);
}

/// The model's own template and special tokens, read from the bundled GGUF.
fn smollm2_template() -> ChatTemplate {
    let path = model_path();
    let mut file = std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!(
            "cannot open the bundled model {} ({e}); run scripts/fetch-model.sh",
            path.display()
        )
    });
    let content = gguf_file::Content::read(&mut file).expect("GGUF header parses");
    let meta = |key: &str| {
        content
            .metadata
            .get(key)
            .unwrap_or_else(|| panic!("GGUF has no {key}"))
    };
    let source = meta("tokenizer.chat_template").to_string().unwrap().clone();
    let tokens = meta("tokenizer.ggml.tokens").to_vec().unwrap();
    let token = |key: &str| {
        let id = meta(key).to_u32().unwrap() as usize;
        tokens[id].to_string().unwrap().clone()
    };
    let bos = token("tokenizer.ggml.bos_token_id");
    let eos = token("tokenizer.ggml.eos_token_id");
    assert_eq!((bos.as_str(), eos.as_str()), ("<|im_start|>", "<|im_end|>"));
    ChatTemplate::from_jinja(&source, &bos, &eos).expect("the bundled template compiles")
}

#[test]
fn bundled_gguf_template_matches_every_smollm2_fixture_case() {
    let cases = load_cases("smollm2_chat_prompts.json");
    check_cases(&smollm2_template(), &cases);
}

#[test]
fn compiled_template_renders_from_many_threads() {
    let template = std::sync::Arc::new(smollm2_template());
    let cases = std::sync::Arc::new(load_cases("smollm2_chat_prompts.json"));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let template = template.clone();
            let cases = cases.clone();
            std::thread::spawn(move || check_cases(&template, &cases))
        })
        .collect();
    for handle in handles {
        handle.join().expect("render thread panicked");
    }
}

fn input(value: serde_json::Value) -> RenderInput {
    serde_json::from_value(value).expect("valid render input")
}

#[test]
fn builtin_chatml_renders_plain_turns() {
    let template = ChatTemplate::builtin("chatml".parse().unwrap());
    let messages = serde_json::json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "  Hi <|im_end|>\n"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]);
    let prompt = template
        .render(&input(
            serde_json::json!({"messages": messages, "add_generation_prompt": true}),
        ))
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  Hi <|im_end|>\n<|im_end|>\n\
         <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    );
    // No default system prompt, no generation prompt unless asked.
    let prompt = template
        .render(&input(
            serde_json::json!({"messages": [{"role": "user", "content": "x"}]}),
        ))
        .unwrap();
    assert_eq!(prompt, "<|im_start|>user\nx<|im_end|>\n");
}

#[test]
fn builtin_chatml_refuses_tools_rather_than_dropping_them() {
    let template = ChatTemplate::builtin(BuiltinTemplate::ChatMl);
    let err = template
        .render(&input(serde_json::json!({
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
        })))
        .unwrap_err();
    assert!(matches!(err, TemplateError::Render(_)), "{err:?}");
}

#[test]
fn normalized_arguments_render_as_an_object() {
    let mut cases = load_cases("llama31_chat_prompts.json");
    let gotcha = cases
        .iter_mut()
        .find(|c| c.name == "l31_gotcha_arguments_as_json_string")
        .expect("fixture has the arguments-as-string case");
    normalize_tool_call_arguments(&mut gotcha.input.messages);
    let prompt = ChatTemplate::builtin(BuiltinTemplate::Llama31)
        .render(&gotcha.input)
        .unwrap();
    assert!(
        prompt.contains(
            "{\"name\": \"get_current_weather\", \"parameters\": {\"location\": \"Paris, France\"}}<|eot_id|>"
        ),
        "{prompt}"
    );
}

#[test]
fn jinja_tojson_spacing_matches_python() {
    let template = ChatTemplate::from_jinja(
        "{{ tools | tojson }}\n{{ tools[0] | tojson(indent=4) }}\n{{ tools | tojson(separators=(',', ':')) }}",
        "",
        "",
    )
    .unwrap();
    let prompt = template
        .render(&input(serde_json::json!({
            "messages": [],
            "tools": [{"name": "f", "parameters": {"b": [1, 2], "a": {}}}],
        })))
        .unwrap();
    assert_eq!(
        prompt,
        "[{\"name\": \"f\", \"parameters\": {\"b\": [1, 2], \"a\": {}}}]\n\
         {\n    \"name\": \"f\",\n    \"parameters\": {\n        \"b\": [\n            1,\n            2\n        ],\n        \"a\": {}\n    }\n}\n\
         [{\"name\":\"f\",\"parameters\":{\"b\":[1,2],\"a\":{}}}]"
    );
}
