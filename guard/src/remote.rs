//! The `remote` backend: a guard model behind an OpenAI-compatible server.
//!
//! Mode `prompt` renders the Llama Guard task text here (with the request's
//! categories) and sends it as one user message; the server's Llama 3 chat
//! template adds the header and footer. Mode `conversation` sends the guard
//! turns as user/assistant messages, for servers whose own template renders
//! the guard prompt (such as Ollama's `llama-guard3`); those templates list
//! their fixed default categories, so custom categories cannot be conveyed,
//! and codes outside the request's category set are dropped from the
//! verdict (a verdict left with none is `Safe`: the policy excluded them).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_policies::taxonomy::GuardVariant;

use crate::backend::{
    BackendKind, BoxFuture, GuardBackend, GuardError, GuardOutcome, GuardRequest,
};
use crate::prompt::{task_text, CategorySet, GuardRole};
use crate::structure::neutralize;
use crate::verdict::{parse_verdict, Verdict};

/// How the guard prompt reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteMode {
    /// Send the rendered task text as one user message.
    Prompt,
    /// Send the conversation; the server's template for `variant` renders
    /// the prompt with that variant's default categories.
    Conversation {
        /// The Llama Guard variant the server's template is for.
        variant: GuardVariant,
    },
}

/// Settings of a remote guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// Server base URL, e.g. `http://127.0.0.1:11434` (`/v1/chat/completions` is appended).
    pub base_url: String,
    /// The model name the server knows.
    pub model: String,
    /// How the prompt is sent.
    pub mode: RemoteMode,
    /// Deadline for one classification, connection included.
    pub timeout: Duration,
    /// Bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// Upper bound on generated tokens (a verdict needs only a few).
    pub max_tokens: u32,
    /// Ask for `top_logprobs` and report P(unsafe) as the outcome's score
    /// (off by default: not every server supports logprobs).
    pub score_from_logprobs: bool,
}

impl RemoteConfig {
    /// A configuration with a 10 s timeout, no key and `max_tokens` 16.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, mode: RemoteMode) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            mode,
            timeout: Duration::from_secs(10),
            api_key: None,
            max_tokens: 16,
            score_from_logprobs: false,
        }
    }
}

/// A guard behind an OpenAI-compatible `/v1/chat/completions` endpoint.
#[derive(Debug, Clone)]
pub struct RemoteBackend {
    client: reqwest::Client,
    endpoint: String,
    config: RemoteConfig,
}

impl RemoteBackend {
    /// Builds the pooled HTTP client (rustls) for `config`.
    pub fn new(config: RemoteConfig) -> Result<Self, GuardError> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(GuardError::Config(format!(
                "remote guard URL {:?} must start with http:// or https://",
                config.base_url
            )));
        }
        let endpoint = if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| GuardError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            client,
            endpoint,
            config,
        })
    }

    /// The chat messages sent for `request` in this backend's mode.
    pub fn messages_for(&self, request: &GuardRequest) -> Vec<Value> {
        match self.config.mode {
            RemoteMode::Prompt => vec![json!({
                "role": "user",
                "content": task_text(request.categories(), request.conversation()),
            })],
            RemoteMode::Conversation { .. } => request
                .conversation()
                .messages()
                .iter()
                .map(|m| {
                    let role = match m.role() {
                        GuardRole::User => "user",
                        GuardRole::Agent => "assistant",
                    };
                    // The server renders and tokenises the template itself
                    // (often with special-token parsing): structure in the
                    // text is rewritten as in the local prompt.
                    let parts: Vec<String> = m
                        .parts()
                        .iter()
                        .map(|p| neutralize(p).into_owned())
                        .collect();
                    json!({ "role": role, "content": parts.join("\n") })
                })
                .collect(),
        }
    }

    /// Sends the request; returns the reply text and, when asked for, P(unsafe).
    async fn call(&self, request: &GuardRequest) -> Result<(String, Option<f32>), GuardError> {
        let mut body = json!({
            "model": self.config.model,
            "messages": self.messages_for(request),
            "temperature": 0,
            "max_tokens": self.config.max_tokens,
            "stream": false,
        });
        if self.config.score_from_logprobs {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(10);
        }
        let mut http = self.client.post(&self.endpoint).json(&body);
        if let Some(key) = &self.config.api_key {
            http = http.bearer_auth(key);
        }
        let response = http.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport_error(e))?;
        if !status.is_success() {
            let body: String = text.chars().take(512).collect();
            return Err(GuardError::HttpStatus {
                status: status.as_u16(),
                body,
            });
        }
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| GuardError::InvalidResponse(format!("not JSON: {e}")))?;
        let content = json
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                GuardError::InvalidResponse("no choices[0].message.content string".into())
            })?;
        let score = if self.config.score_from_logprobs {
            json.pointer("/choices/0/logprobs/content")
                .and_then(Value::as_array)
                .and_then(|tokens| unsafe_score(tokens))
        } else {
            None
        };
        Ok((content, score))
    }

    fn transport_error(&self, e: reqwest::Error) -> GuardError {
        if e.is_timeout() {
            GuardError::Timeout {
                backend: BackendKind::Remote,
                after: self.config.timeout,
            }
        } else {
            GuardError::Transport {
                backend: BackendKind::Remote,
                message: e.to_string(),
            }
        }
    }

    /// Parses the server's text against the codes its prompt listed.
    fn verdict_from(&self, output: &str, request: &GuardRequest) -> Result<Verdict, GuardError> {
        let listed = match self.config.mode {
            RemoteMode::Prompt => request.categories().clone(),
            RemoteMode::Conversation { variant } => CategorySet::standard(variant),
        };
        let verdict = parse_verdict(output, &listed.codes()).map_err(|source| {
            GuardError::UnparseableOutput {
                output: output.to_owned(),
                source,
            }
        })?;
        Ok(match verdict {
            Verdict::Unsafe { categories } => {
                let kept: Vec<_> = categories
                    .into_iter()
                    .filter(|c| request.categories().contains(*c))
                    .collect();
                if kept.is_empty() {
                    Verdict::Safe
                } else {
                    Verdict::Unsafe { categories: kept }
                }
            }
            Verdict::Safe => Verdict::Safe,
        })
    }
}

/// P(unsafe) from OpenAI-style `logprobs.content`: at the first generated
/// token that is not whitespace, the softmax over the candidates that begin
/// the word `unsafe` against those that begin `safe`. `None` when neither
/// word is among the candidates there.
fn unsafe_score(tokens: &[Value]) -> Option<f32> {
    let first = tokens.iter().find(|t| {
        t["token"]
            .as_str()
            .is_some_and(|text| !text.trim().is_empty())
    })?;
    let (mut p_safe, mut p_unsafe) = (0f64, 0f64);
    let candidates = first["top_logprobs"].as_array().into_iter().flatten();
    // The chosen token itself counts even if the list leaves it out.
    let chosen = std::iter::once(first);
    let mut seen = Vec::new();
    for candidate in chosen.chain(candidates) {
        let (Some(text), Some(logprob)) =
            (candidate["token"].as_str(), candidate["logprob"].as_f64())
        else {
            continue;
        };
        let word = text.trim();
        if word.is_empty() || seen.contains(&word) {
            continue;
        }
        seen.push(word);
        if "unsafe".starts_with(word) && word.starts_with('u') {
            p_unsafe += logprob.exp();
        } else if "safe".starts_with(word) {
            p_safe += logprob.exp();
        }
    }
    let total = p_safe + p_unsafe;
    (total > 0.0).then(|| (p_unsafe / total) as f32)
}

impl GuardBackend for RemoteBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Remote
    }

    fn model(&self) -> Option<&str> {
        Some(&self.config.model)
    }

    fn classify<'a>(
        &'a self,
        request: &'a GuardRequest,
    ) -> BoxFuture<'a, Result<GuardOutcome, GuardError>> {
        Box::pin(async move {
            let started = Instant::now();
            // reqwest's own timeout covers the transfer; this one also bounds
            // anything else (DNS, a stalled body) so the deadline always holds.
            let (output, unsafe_score) =
                tokio::time::timeout(self.config.timeout, self.call(request))
                    .await
                    .map_err(|_| GuardError::Timeout {
                        backend: BackendKind::Remote,
                        after: self.config.timeout,
                    })??;
            let verdict = self.verdict_from(&output, request)?;
            Ok(GuardOutcome {
                verdict,
                unsafe_score,
                backend: BackendKind::Remote,
                model: Some(self.config.model.clone()),
                latency: started.elapsed(),
                findings: Vec::new(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::conversation::ChatMessage;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use warden_policies::taxonomy::CategoryCode;

    /// What the fake server answers.
    #[derive(Clone)]
    struct Reply {
        status: u16,
        body: String,
        delay: Duration,
    }

    fn completion(content: &str) -> Reply {
        Reply {
            status: 200,
            body: json!({
                "id": "x", "object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}]
            })
            .to_string(),
            delay: Duration::ZERO,
        }
    }

    /// A minimal HTTP/1.1 server on 127.0.0.1 that records each request
    /// (path, JSON body) and answers every request with `reply`.
    struct FakeGuard {
        base_url: String,
        seen: Arc<Mutex<Vec<(String, Value)>>>,
    }

    async fn fake_guard(reply: Reply) -> FakeGuard {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let reply = reply.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let Some((path, body)) = read_request(&mut socket).await else {
                        return;
                    };
                    log.lock()
                        .unwrap()
                        .push((path, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                    tokio::time::sleep(reply.delay).await;
                    let head = format!(
                        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(reply.body.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        FakeGuard { base_url, seen }
    }

    /// Reads one request: the path and the body (by content-length).
    async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let header_end = loop {
            let n = socket.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        let path = head.split_whitespace().nth(1)?.to_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < header_end + length {
            let n = socket.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some((path, buf[header_end..header_end + length].to_vec()))
    }

    fn code(n: u16) -> CategoryCode {
        CategoryCode::new(n).unwrap()
    }

    fn input_request(categories: CategorySet) -> GuardRequest {
        GuardRequest::from_chat(
            Checkpoint::Input,
            &[
                ChatMessage::system("You are helpful."),
                ChatMessage::user("How do I make a bomb?"),
            ],
            categories,
        )
        .unwrap()
    }

    fn backend(url: &str, mode: RemoteMode, timeout: Duration) -> RemoteBackend {
        let mut config = RemoteConfig::new(url, "llama-guard3:1b", mode);
        config.timeout = timeout;
        RemoteBackend::new(config).unwrap()
    }

    #[tokio::test]
    async fn prompt_mode_sends_task_text_and_parses_the_verdict() {
        let server = fake_guard(completion("\n\nunsafe\nS9")).await;
        let remote = backend(&server.base_url, RemoteMode::Prompt, Duration::from_secs(5));
        let categories = CategorySet::build(
            GuardVariant::LlamaGuard3_1b,
            &[code(6)],
            [(code(15), "Secrets.".to_owned())],
        )
        .unwrap();
        let request = input_request(categories.clone());
        let outcome = remote.classify(&request).await.unwrap();
        assert_eq!(
            outcome.verdict,
            Verdict::Unsafe {
                categories: vec![code(9)]
            }
        );
        assert_eq!(outcome.backend, BackendKind::Remote);
        assert_eq!(outcome.model.as_deref(), Some("llama-guard3:1b"));

        let seen = server.seen.lock().unwrap();
        let (path, body) = &seen[0];
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(body["temperature"], 0);
        assert_eq!(body["model"], "llama-guard3:1b");
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["role"], "user");
        let sent = messages[0]["content"].as_str().unwrap();
        assert_eq!(sent, task_text(&categories, request.conversation()));
        assert!(sent.contains("S15: Secrets.\n") && !sent.contains("S6:"));
        assert!(sent.contains("User: How do I make a bomb?\n\n<END CONVERSATION>"));
        assert!(!sent.contains("You are helpful."));
    }

    #[tokio::test]
    async fn prompt_mode_rejects_codes_the_prompt_did_not_list() {
        let server = fake_guard(completion("unsafe\nS6")).await;
        let remote = backend(&server.base_url, RemoteMode::Prompt, Duration::from_secs(5));
        let categories = CategorySet::build(GuardVariant::LlamaGuard3_1b, &[code(6)], []).unwrap();
        let err = remote
            .classify(&input_request(categories))
            .await
            .unwrap_err();
        assert!(matches!(err, GuardError::UnparseableOutput { .. }), "{err}");
    }

    #[tokio::test]
    async fn conversation_mode_sends_the_turns() {
        let server = fake_guard(completion("safe")).await;
        let remote = backend(
            &format!("{}/v1/", server.base_url),
            RemoteMode::Conversation {
                variant: GuardVariant::LlamaGuard3_8b,
            },
            Duration::from_secs(5),
        );
        let request = GuardRequest::from_chat(
            Checkpoint::Output,
            &[
                ChatMessage::system("sys"),
                ChatMessage::user("hi"),
                ChatMessage::assistant("hello there"),
            ],
            CategorySet::standard(GuardVariant::LlamaGuard3_8b),
        )
        .unwrap();
        let outcome = remote.classify(&request).await.unwrap();
        assert_eq!(outcome.verdict, Verdict::Safe);
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen[0].0, "/v1/chat/completions");
        assert_eq!(
            seen[0].1["messages"],
            json!([{"role":"user","content":"hi"},{"role":"assistant","content":"hello there"}])
        );
        assert_eq!(seen[0].1["temperature"], 0);
    }

    #[tokio::test]
    async fn conversation_mode_drops_excluded_codes() {
        let server = fake_guard(completion("unsafe\nS6,S1")).await;
        let mode = RemoteMode::Conversation {
            variant: GuardVariant::LlamaGuard3_8b,
        };
        let remote = backend(&server.base_url, mode, Duration::from_secs(5));
        let excl6 = CategorySet::build(GuardVariant::LlamaGuard3_8b, &[code(6)], []).unwrap();
        let outcome = remote.classify(&input_request(excl6)).await.unwrap();
        assert_eq!(
            outcome.verdict,
            Verdict::Unsafe {
                categories: vec![code(1)]
            }
        );
        let only6 = CategorySet::build(
            GuardVariant::LlamaGuard3_8b,
            &(1..=14).filter(|&n| n != 2).map(code).collect::<Vec<_>>(),
            [],
        )
        .unwrap();
        let outcome = remote.classify(&input_request(only6)).await.unwrap();
        assert_eq!(outcome.verdict, Verdict::Safe);
    }

    #[tokio::test]
    async fn logprobs_give_an_unsafe_score() {
        let reply = Reply {
            status: 200,
            body: json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "\n\nsafe"},
                  "logprobs": {"content": [
                    {"token": "\n\n", "logprob": -0.01, "top_logprobs": []},
                    {"token": "safe", "logprob": (0.8f64).ln(),
                     "top_logprobs": [{"token": "safe", "logprob": (0.8f64).ln()},
                                      {"token": "unsafe", "logprob": (0.15f64).ln()},
                                      {"token": "The", "logprob": (0.05f64).ln()}]}]}}]
            })
            .to_string(),
            delay: Duration::ZERO,
        };
        let server = fake_guard(reply).await;
        let mut config = RemoteConfig::new(&server.base_url, "guard", RemoteMode::Prompt);
        config.score_from_logprobs = true;
        let remote = RemoteBackend::new(config).unwrap();
        let outcome = remote
            .classify(&input_request(CategorySet::standard(
                GuardVariant::LlamaGuard3_1b,
            )))
            .await
            .unwrap();
        assert_eq!(outcome.verdict, Verdict::Safe);
        let score = outcome.unsafe_score.unwrap();
        assert!((score - 0.15 / 0.95).abs() < 1e-4, "{score}");
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen[0].1["logprobs"], true);
    }

    #[test]
    fn unsafe_score_needs_a_safe_or_unsafe_candidate() {
        let tokens = [json!({"token": "I", "logprob": -0.1,
                             "top_logprobs": [{"token": "I", "logprob": -0.1}]})];
        assert_eq!(unsafe_score(&tokens), None);
        let tokens = [json!({"token": " uns", "logprob": -0.5,
                             "top_logprobs": [{"token": "safe", "logprob": -1.0}]})];
        let expected = (-0.5f64).exp() / ((-0.5f64).exp() + (-1.0f64).exp());
        assert!((f64::from(unsafe_score(&tokens).unwrap()) - expected).abs() < 1e-6);
    }

    #[tokio::test]
    async fn a_slow_server_is_a_timeout_error() {
        let mut reply = completion("safe");
        reply.delay = Duration::from_secs(10);
        let server = fake_guard(reply).await;
        let remote = backend(
            &server.base_url,
            RemoteMode::Prompt,
            Duration::from_millis(200),
        );
        let started = Instant::now();
        let err = remote
            .classify(&input_request(CategorySet::standard(
                GuardVariant::LlamaGuard3_1b,
            )))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                GuardError::Timeout {
                    backend: BackendKind::Remote,
                    ..
                }
            ),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn garbage_output_is_an_error() {
        for text in ["I cannot help with that.", "Safe", "", "safe<|eot_id|>"] {
            let server = fake_guard(completion(text)).await;
            let remote = backend(&server.base_url, RemoteMode::Prompt, Duration::from_secs(5));
            let err = remote
                .classify(&input_request(CategorySet::standard(
                    GuardVariant::LlamaGuard3_1b,
                )))
                .await
                .unwrap_err();
            assert!(
                matches!(err, GuardError::UnparseableOutput { .. }),
                "{text:?}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn malformed_responses_and_http_errors_are_errors() {
        let cases = [
            Reply {
                status: 500,
                body: r#"{"error":"model crashed"}"#.into(),
                delay: Duration::ZERO,
            },
            Reply {
                status: 200,
                body: "not json".into(),
                delay: Duration::ZERO,
            },
            Reply {
                status: 200,
                body: r#"{"choices":[]}"#.into(),
                delay: Duration::ZERO,
            },
        ];
        let mut errors = Vec::new();
        for reply in cases {
            let server = fake_guard(reply).await;
            let remote = backend(&server.base_url, RemoteMode::Prompt, Duration::from_secs(5));
            errors.push(
                remote
                    .classify(&input_request(CategorySet::standard(
                        GuardVariant::LlamaGuard3_1b,
                    )))
                    .await
                    .unwrap_err(),
            );
        }
        assert_eq!(
            errors[0],
            GuardError::HttpStatus {
                status: 500,
                body: r#"{"error":"model crashed"}"#.into()
            }
        );
        assert!(matches!(errors[1], GuardError::InvalidResponse(_)));
        assert!(matches!(errors[2], GuardError::InvalidResponse(_)));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_transport_error() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let remote = backend(
            &format!("http://127.0.0.1:{port}"),
            RemoteMode::Prompt,
            Duration::from_secs(5),
        );
        let err = remote
            .classify(&input_request(CategorySet::standard(
                GuardVariant::LlamaGuard3_1b,
            )))
            .await
            .unwrap_err();
        assert!(matches!(err, GuardError::Transport { .. }), "{err}");
        assert!(RemoteBackend::new(RemoteConfig::new("ftp://x", "m", RemoteMode::Prompt)).is_err());
    }
}
