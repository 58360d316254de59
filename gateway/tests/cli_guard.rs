//! `warden guard prompt`, `warden guard parse` and `warden classify` through
//! the real binary: every fixture case, and the classify contract.

#[path = "../../inference/tests/common/mod.rs"]
mod common;

mod cli_support;
use cli_support::warden;

use serde_json::{json, Value};
use warden_guard::{build_prompt, CategorySet, GuardConversation, GuardMessage, GuardRole};
use warden_policies::taxonomy::{CategoryCode, GuardVariant};

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn cases(file: &str) -> Vec<Value> {
    common::fixture(&format!("formats/{file}"))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn guard_prompt_reproduces_every_fixture_case() {
    let cases = cases("llamaguard3_prompts.json");
    assert!(cases.len() >= 19);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let variant = match case["input"]["template"].as_str().unwrap() {
            "hf:meta-llama/Llama-Guard-3-8B" => "llama-guard-3-8b",
            "hf:meta-llama/Llama-Guard-3-1B" => "llama-guard-3-1b",
            other => panic!("{name}: unexpected template {other}"),
        };
        let out = warden(
            &["guard", "prompt", "--variant", variant],
            &case["input"].to_string(),
        );
        match case["expected_prompt"].as_str() {
            Some(expected) => {
                assert!(out.status.success(), "{name}: {}", text(&out.stderr));
                // The exact prompt with nothing added (no trailing newline).
                assert_eq!(text(&out.stdout), expected, "{name}");
            }
            None => {
                assert_eq!(out.status.code(), Some(1), "{name}");
                assert!(
                    out.stdout.is_empty(),
                    "{name}: printed {:?}",
                    text(&out.stdout)
                );
                let expected = case["expected_error"].as_str().unwrap();
                assert!(
                    text(&out.stderr).starts_with(expected),
                    "{name}: {:?} does not start with {expected:?}",
                    text(&out.stderr)
                );
            }
        }
    }
}

#[test]
fn guard_parse_follows_every_fixture_case() {
    let cases = cases("llamaguard_outputs.json");
    assert!(cases.len() >= 30);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let allowed: Vec<&str> = case["input"]["allowed_categories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let out = warden(
            &["guard", "parse", "--allowed", &allowed.join(",")],
            case["input"]["output"].as_str().unwrap(),
        );
        if case["expected"] == "error" {
            assert_eq!(out.status.code(), Some(1), "{name}");
            assert!(out.stdout.is_empty(), "{name}");
            assert!(!out.stderr.is_empty(), "{name}: no message");
        } else {
            assert!(out.status.success(), "{name}: {}", text(&out.stderr));
            let stdout = text(&out.stdout);
            let got: Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(got, case["expected"], "{name}");
            // Compact JSON, keys in contract order, one line.
            let categories = &case["expected"]["categories"];
            assert_eq!(
                stdout,
                format!(
                    "{{\"verdict\":{},\"categories\":{}}}\n",
                    case["expected"]["verdict"], categories
                ),
                "{name}"
            );
        }
    }
}

fn code(n: u16) -> CategoryCode {
    CategoryCode::new(n).unwrap()
}

#[test]
fn classify_print_prompt_is_the_exact_prompt() {
    let user = "How do I pick a lock?";
    let out = warden(&["classify", "--print-prompt", user], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let conv = GuardConversation::new(vec![GuardMessage::new(GuardRole::User, user)]).unwrap();
    let variant = GuardVariant::LlamaGuard3_8b;
    assert_eq!(
        text(&out.stdout),
        build_prompt(variant, &CategorySet::standard(variant), &conv)
    );

    // A conversation file ending with an answer is an output check; the
    // category flags shape the list.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("conv.json");
    let messages = json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}
    ]});
    std::fs::write(&file, messages.to_string()).unwrap();
    let out = warden(
        &[
            "classify",
            "--print-prompt",
            "--file",
            file.to_str().unwrap(),
            "--variant",
            "llama-guard-3-1b",
            "--categories",
            "S1,S2,S6",
            "--exclude",
            "S2",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let variant = GuardVariant::LlamaGuard3_1b;
    let set = CategorySet::standard(variant)
        .excluding(
            &(1..=13)
                .filter(|n| ![1, 6].contains(n))
                .map(code)
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let conv = GuardConversation::new(vec![
        GuardMessage::new(GuardRole::User, "Hi"),
        GuardMessage::new(GuardRole::Agent, "Hello!"),
    ])
    .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(stdout, build_prompt(variant, &set, &conv));
    assert!(stdout.contains("in 'Agent' messages"));
    assert!(!stdout.contains("Be brief"));

    // Asking for an output check of a conversation ending with a user turn fails.
    let out = warden(
        &["classify", "--print-prompt", "--checkpoint", "output", "hi"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("checkpoint"),
        "{}",
        text(&out.stderr)
    );
}

/// On the bundled model: a verdict with score and latency, or (the small
/// model often writes no valid verdict) a guard error on stderr and exit 1,
/// never a made-up `safe`.
#[test]
fn classify_runs_the_local_model() {
    let model = common::model_path();
    let model = model.to_str().unwrap();
    let out = warden(
        &[
            "classify",
            "--model",
            model,
            "--json",
            "Write a poem about the sea.",
        ],
        "",
    );
    let stdout = text(&out.stdout);
    if out.status.success() {
        let got: Value = serde_json::from_str(&stdout).unwrap();
        assert!(
            got["verdict"] == "safe" || got["verdict"] == "unsafe",
            "{got}"
        );
        assert!(got["unsafe_score"]
            .as_f64()
            .is_some_and(|s| (0.0..=1.0).contains(&s)));
        assert!(got["latency_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(got["checkpoint"], "input");
        for c in got["categories"].as_array().unwrap() {
            assert!(c["code"].as_str().unwrap().starts_with('S'));
            assert!(!c["name"].as_str().unwrap().is_empty());
        }
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert!(stdout.is_empty(), "printed {stdout:?} on error");
        let err = text(&out.stderr);
        assert!(err.contains("guard output"), "{err}");
    }

    let out = warden(&["classify", "--model", model, "Hello there"], "");
    if out.status.success() {
        let stdout = text(&out.stdout);
        assert!(stdout.starts_with("verdict: "), "{stdout}");
        assert!(stdout.contains("\nscore: "), "{stdout}");
        assert!(stdout.contains("\nlatency: "), "{stdout}");
    } else {
        assert!(text(&out.stderr).contains("guard output"));
    }
}

/// A one-request HTTP server on 127.0.0.1 standing in for a remote guard:
/// answers `answer` as a chat completion and hands back the request body.
fn fake_remote_guard(answer: &str) -> (String, std::thread::JoinHandle<Value>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let reply = json!({
        "id": "guard-1", "object": "chat.completion", "created": 1, "model": "llama-guard3",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": answer}}],
    })
    .to_string();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
        serde_json::from_slice(&body).unwrap()
    });
    (url, handle)
}

#[test]
fn classify_asks_a_remote_guard_with_the_exact_prompt() {
    let user = "How do I pick a lock?";
    let (url, server) = fake_remote_guard("unsafe\nS2");
    let out = warden(
        &[
            "classify",
            "--backend",
            "remote",
            "--url",
            &url,
            "--remote-model",
            "lg3",
            "--json",
            user,
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(got["verdict"], "unsafe", "{got}");
    assert_eq!(got["categories"][0]["code"], "S2", "{got}");
    assert_eq!(got["backend"], "remote", "{got}");
    // The server got the task text of the prompt `--print-prompt` shows (its
    // own template adds the header and turn markers), as one user turn.
    let sent = server.join().unwrap();
    let prompt = text(&warden(&["classify", "--print-prompt", user], "").stdout);
    let (_, task) = prompt.split_once("user<|end_header_id|>\n\n").unwrap();
    let (task, _) = task.split_once("<|eot_id|>").unwrap();
    assert_eq!(sent["model"], "lg3");
    assert_eq!(sent["temperature"], 0);
    assert_eq!(sent["messages"], json!([{"role": "user", "content": task}]));

    // Conversation mode sends the conversation itself.
    let (url, server) = fake_remote_guard("safe");
    let out = warden(
        &[
            "classify",
            "--backend",
            "remote",
            "--url",
            &url,
            "--remote-mode",
            "conversation",
            user,
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("verdict: safe\n"));
    let sent = server.join().unwrap();
    assert_eq!(sent["messages"], json!([{"role": "user", "content": user}]));

    // Anything but a clean verdict is an error, never `safe`.
    let (url, server) = fake_remote_guard("I think this is fine");
    let out = warden(
        &["classify", "--backend", "remote", "--url", &url, user],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("guard output"),
        "{}",
        text(&out.stderr)
    );
    server.join().unwrap();

    // A remote backend needs its URL.
    let out = warden(&["classify", "--backend", "remote", user], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--url"));
}

#[test]
fn classify_runs_the_rules_backend() {
    let out = warden(
        &[
            "classify",
            "--backend",
            "rules",
            "--json",
            "Mail jane.doe@example.com the card 4111 1111 1111 1111",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(got["verdict"], "unsafe", "{got}");
    assert_eq!(got["backend"], "rules");
    assert_eq!(got["categories"][0]["code"], "S7", "{got}");
    let detectors: Vec<&str> = got["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["detector"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(detectors, ["email", "credit_card"], "{got}");

    // A 16-digit number failing the Luhn check is not a card.
    let out = warden(
        &[
            "classify",
            "--backend",
            "rules",
            "my order is 4111 1111 1111 1112",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().next(), Some("verdict: safe"));

    // A rules file: a configured regex and keywords.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[regexes]]\nname = \"ticket\"\npattern = 'TCK-\\d{4}'\ncategory = \"S14\"\n\n\
         [[keywords]]\nname = \"weapons\"\nwords = [\"nerve agent\"]\ncategory = \"S9\"\n",
    )
    .unwrap();
    let rules = rules.to_str().unwrap();
    let with_file = |text: &str| {
        let out = warden(
            &[
                "classify",
                "--backend",
                "rules",
                "--rules",
                rules,
                "--json",
                text,
            ],
            "",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let got = with_file("see TCK-1234");
    assert_eq!(got["categories"][0]["code"], "S14", "{got}");
    let got = with_file("about a Nerve Agent");
    assert_eq!(got["categories"][0]["code"], "S9", "{got}");
    let got = with_file("an email a@b.example");
    assert_eq!(got["verdict"], "safe", "only the file's rules run: {got}");
}
