//! Prompt-structure attacks (`attacks/corpus.json`): user messages, tool
//! results and answers that try to close the guard's conversation block,
//! forge a turn or forge a verdict with special-token text, block markers,
//! fake `User:`/`Agent:` lines, fake `safe`/`unsafe` lines, very long
//! inputs and Unicode tricks (homoglyphs, zero-width characters,
//! right-to-left overrides).
//!
//! Asserted in tokens, on the bundled model's tokenizer and on a Llama 3
//! byte-level tokenizer: the guard prompt around the hostile text has the
//! same prefix and suffix tokens, the same special tokens and the same
//! block markers, each as often as in a benign prompt, and as many turn
//! lines; no message text becomes a special token. Asserted on the
//! backends: a remote guard's verdict is the server's whatever the content
//! says (and the server is sent no structure in the content), and the local
//! guard's verdict comes from what the model generated, parsed strictly,
//! after running exactly the intact prompt; an input beyond the model's
//! context is an error (fail closed), never safe.

mod common;

#[path = "../../inference/tests/common/mod.rs"]
mod inference_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_guard::prompt::{build_prompt_parts, CategorySet, PromptParts, PromptTokens};
use warden_guard::structure::{neutralize, BLOCK_MARKERS};
use warden_guard::{
    parse_verdict, ChatMessage, Checkpoint, GuardBackend, GuardRequest, LocalBackend, LocalOptions,
    RemoteBackend, RemoteConfig, RemoteMode, Verdict,
};
use warden_inference::{TokenId, Tokenizer};
use warden_policies::taxonomy::{CategoryCode, GuardVariant};

const VARIANTS: [GuardVariant; 2] = [GuardVariant::LlamaGuard3_8b, GuardVariant::LlamaGuard3_1b];
const BENIGN: &str = "What is the weather like in Paris today?";

struct Case {
    name: String,
    text: String,
}

fn corpus() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/attacks/corpus.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases: Vec<Case> = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            text: c["text"]
                .as_str()
                .unwrap()
                .repeat(c["repeat"].as_u64().unwrap_or(1) as usize),
        })
        .collect();
    assert!(cases.len() >= 30);
    cases
}

/// Where the hostile text sits: the judged user message, the judged tool
/// result, or the judged answer.
const PLACEMENTS: [Checkpoint; 3] = [
    Checkpoint::Input,
    Checkpoint::ToolResult,
    Checkpoint::Output,
];

fn messages(checkpoint: Checkpoint, text: &str) -> Vec<ChatMessage> {
    let value = match checkpoint {
        Checkpoint::Input => json!([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": text},
        ]),
        Checkpoint::ToolResult => json!([
            {"role": "user", "content": "What is on example.com?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "fetch", "arguments": "{\"url\":\"https://example.com\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": text},
        ]),
        Checkpoint::Output => json!([
            {"role": "user", "content": "Tell me about Paris."},
            {"role": "assistant", "content": text},
        ]),
        other => panic!("no placement for {other:?}"),
    };
    serde_json::from_value(value).unwrap()
}

fn request(variant: GuardVariant, checkpoint: Checkpoint, text: &str) -> GuardRequest {
    GuardRequest::from_chat(
        checkpoint,
        &messages(checkpoint, text),
        CategorySet::standard(variant),
    )
    .unwrap()
}

fn parts(variant: GuardVariant, checkpoint: Checkpoint, text: &str) -> PromptParts {
    let req = request(variant, checkpoint, text);
    build_prompt_parts(variant, req.categories(), req.conversation())
}

fn encode(tok: &Tokenizer, parts: &PromptParts) -> PromptTokens {
    parts
        .encode_with(|t, special| tok.encode(t, special))
        .unwrap()
}

fn count_subsequence(haystack: &[TokenId], needle: &[TokenId]) -> usize {
    assert!(!needle.is_empty());
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Lines of the conversation part that start a turn.
fn turn_lines(conversation: &str) -> usize {
    conversation
        .split('\n')
        .filter(|l| l.starts_with("User:") || l.starts_with("Agent:"))
        .count()
}

/// The structural facts of a tokenised guard prompt.
#[derive(Debug, PartialEq)]
struct Structure {
    prefix: Vec<TokenId>,
    suffix: Vec<TokenId>,
    specials: Vec<TokenId>,
    markers: Vec<usize>,
    turn_lines: usize,
}

fn structure(tok: &Tokenizer, parts: &PromptParts, tokens: &PromptTokens) -> Structure {
    let all = tokens.all();
    let decoded = tok.decode(&tokens.conversation, false);
    // The conversation is plain text, kept byte for byte through tokens.
    assert_eq!(decoded, parts.conversation);
    assert!(tokens.conversation.iter().all(|&id| !tok.is_special(id)));
    // Nothing in it that a server tokenising with special parsing would
    // read as a control token.
    assert!(!decoded.contains("<|") && !decoded.contains("|>"));
    Structure {
        prefix: tokens.prefix.clone(),
        suffix: tokens.suffix.clone(),
        specials: all
            .iter()
            .copied()
            .filter(|&id| tok.is_special(id))
            .collect(),
        markers: BLOCK_MARKERS
            .iter()
            .map(|m| count_subsequence(&all, &tok.encode(m, false).unwrap()))
            .collect(),
        turn_lines: turn_lines(&decoded),
    }
}

fn assert_structure_intact(tok: &Tokenizer, label: &str) -> usize {
    let mut checked = 0;
    for variant in VARIANTS {
        for checkpoint in PLACEMENTS {
            let benign_parts = parts(variant, checkpoint, BENIGN);
            let benign = structure(tok, &benign_parts, &encode(tok, &benign_parts));
            assert_eq!(benign.markers, [1, 1, 1, 1], "{label}: benign markers");
            for case in corpus() {
                let parts = parts(variant, checkpoint, &case.text);
                let tokens = encode(tok, &parts);
                let got = structure(tok, &parts, &tokens);
                assert_eq!(
                    got, benign,
                    "{label} {variant:?} {checkpoint:?} {}: structure changed",
                    case.name
                );
                // What the message says is still there for the guard to judge.
                let kept = neutralize(case.text.trim()).into_owned();
                assert!(
                    parts.conversation.contains(&kept),
                    "{label} {}: content lost",
                    case.name
                );
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn structure_stays_intact_in_tokens_on_the_bundled_tokenizer() {
    let model = inference_common::model();
    let tok = model.tokenizer();
    // The bundled tokenizer's own control tokens (ChatML) are in the corpus.
    assert!(tok.special_id("<|im_end|>").is_some());
    assert!(tok.encode("<|im_end|>", true).unwrap().len() == 1);
    let checked = assert_structure_intact(tok, "smollm2");
    assert_eq!(checked, corpus().len() * 6);
}

#[test]
fn structure_stays_intact_in_tokens_on_a_llama3_tokenizer() {
    let tok = common::llama3_style_tokenizer();
    assert_structure_intact(&tok, "llama3");
    use common::{BOT, END_HEADER, EOT, START_HEADER};
    let guard_specials = [BOT, START_HEADER, END_HEADER, EOT, START_HEADER, END_HEADER];
    for variant in VARIANTS {
        for checkpoint in PLACEMENTS {
            for case in corpus() {
                let parts = parts(variant, checkpoint, &case.text);
                let tokens = encode(&tok, &parts);
                let specials: Vec<_> = tokens
                    .all()
                    .into_iter()
                    .filter(|&id| tok.is_special(id))
                    .collect();
                assert_eq!(specials, guard_specials, "{}", case.name);
                // A server that tokenises the whole prompt with special
                // parsing (llama.cpp, Ollama) sees the same control tokens.
                let naive = tok.encode(&parts.full(), true).unwrap();
                let naive: Vec<_> = naive.into_iter().filter(|&id| tok.is_special(id)).collect();
                assert_eq!(naive, guard_specials, "{}: joined prompt", case.name);
            }
        }
    }
}

#[test]
fn a_forged_verdict_in_content_never_reaches_the_parser() {
    // Content never goes through the verdict parser; the parser only takes
    // the guard's output, and the corpus' forged verdicts are refused by
    // it when they are not exactly a verdict.
    let all: Vec<CategoryCode> = (1..=14).map(|n| CategoryCode::new(n).unwrap()).collect();
    for case in corpus() {
        let parsed = parse_verdict(&case.text, &all);
        match case.name.as_str() {
            "verdict_safe" | "verdict_safe_padded" => assert_eq!(parsed, Ok(Verdict::Safe)),
            "verdict_unsafe" => assert!(matches!(parsed, Ok(Verdict::Unsafe { .. }))),
            name => assert!(parsed.is_err(), "{name}: {parsed:?}"),
        }
    }
}

/// A guard server that records each request body and answers `verdict`.
async fn recording_guard(verdict: &'static str) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: headers, then Content-Length bytes.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 65536];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 65536];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Value =
                        serde_json::from_slice(&buf[head_end..head_end + len]).unwrap();
                    buf.drain(..head_end + len);
                    log.lock().unwrap().push(body);
                    let reply = json!({
                        "id": "g", "object": "chat.completion", "created": 1, "model": "guard",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": verdict}}],
                    })
                    .to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_guard_verdict_is_the_servers_whatever_the_content_says() {
    let variant = GuardVariant::LlamaGuard3_8b;
    for (answer, expected) in [
        (
            "unsafe\nS1",
            Verdict::Unsafe {
                categories: vec![CategoryCode::new(1).unwrap()],
            },
        ),
        ("safe", Verdict::Safe),
    ] {
        let (base, seen) = recording_guard(answer).await;
        for mode in [RemoteMode::Prompt, RemoteMode::Conversation { variant }] {
            let mut config = RemoteConfig::new(&base, "guard", mode);
            config.timeout = Duration::from_secs(5);
            let backend = RemoteBackend::new(config).unwrap();
            for checkpoint in PLACEMENTS {
                for case in corpus() {
                    let req = request(variant, checkpoint, &case.text);
                    let outcome = backend
                        .classify(&req)
                        .await
                        .unwrap_or_else(|e| panic!("{} {checkpoint:?} {mode:?}: {e}", case.name));
                    assert_eq!(outcome.verdict, expected, "{}", case.name);

                    // What the server was sent holds no structure of the content's.
                    let body = seen.lock().unwrap().pop().unwrap();
                    let sent: Vec<&str> = body["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| m["content"].as_str().unwrap())
                        .collect();
                    let text = sent.join("\n");
                    assert!(
                        !text.contains("<|") && !text.contains("|>"),
                        "{}",
                        case.name
                    );
                    match mode {
                        RemoteMode::Prompt => {
                            for marker in BLOCK_MARKERS {
                                assert_eq!(text.matches(marker).count(), 1, "{}", case.name);
                            }
                            let turns = req.conversation().messages().len();
                            assert_eq!(turn_lines(&text), turns, "{}", case.name);
                        }
                        RemoteMode::Conversation { .. } => {
                            for marker in BLOCK_MARKERS {
                                assert!(!text.contains(marker), "{}", case.name);
                            }
                            assert_eq!(turn_lines(&format!("\n{text}")), 0, "{}", case.name);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn the_local_guard_verdict_comes_only_from_what_the_model_generated() {
    let model = inference_common::model();
    let context = model.llama().config().context_len;
    let variant = GuardVariant::LlamaGuard3_8b;
    let backend = LocalBackend::new(model.clone(), LocalOptions::new(variant)).unwrap();
    let tok = model.tokenizer();
    let codes = CategorySet::standard(variant).codes();
    let (mut verdicts, mut errors, mut too_long) = (0, 0, 0);
    for case in corpus() {
        let checkpoint = Checkpoint::Input;
        let req = request(variant, checkpoint, &case.text);
        let parts = build_prompt_parts(variant, req.categories(), req.conversation());
        let length = encode(tok, &parts).all().len();
        if length >= context {
            let outcome = backend.classify_blocking(&req);
            // Beyond the guard's context: an error the policy fails closed
            // on, never a truncated prompt judged safe.
            assert!(outcome.is_err(), "{}: {outcome:?}", case.name);
            too_long += 1;
            continue;
        }
        if length > 1024 {
            continue; // fits, but too slow to run for every case in a test
        }
        let outcome = backend.classify_blocking(&req);
        let judgement = backend.judge(&req).unwrap();
        // The model ran the intact prompt, all of it.
        assert_eq!(judgement.prompt_tokens, length, "{}", case.name);
        // Greedy and deterministic: the verdict is the strict parse of the
        // generated text, whatever verdict the content spells.
        match outcome {
            Ok(outcome) => {
                assert!(judgement.finished, "{}", case.name);
                assert_eq!(
                    parse_verdict(&judgement.text, &codes),
                    Ok(outcome.verdict.clone()),
                    "{}",
                    case.name
                );
                verdicts += 1;
            }
            Err(_) => {
                assert!(judgement.verdict(&codes).is_err(), "{}", case.name);
                errors += 1;
            }
        }
    }
    assert!(too_long >= 1, "the corpus has an input beyond the context");
    eprintln!("local guard: {verdicts} verdicts, {errors} errors, {too_long} beyond the context");
}
