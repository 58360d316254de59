//! `POST /v1/chat/completions`: plain and streamed, guarded on both sides.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{Instrument, Span};
use warden_guard::ChatMessage;
use warden_policies::{Checkpoint, Streaming};

use crate::agent_turn;
use crate::auth::Caller;
use crate::config::Limits;
use crate::error::{ApiError, ErrorBody};
use crate::guarding::{redact, Outcome};
use crate::openai::{
    AssistantMessage, ChatCompletion, ChatCompletionRequest, Choice, Role, Usage, WardenInfo,
};
use crate::request_id::{label_model, RequestIdentity};
use crate::spans;
use crate::state::AppState;
use crate::stream_check::StreamSessions;
use crate::turn::{audit_parameters, guard_messages, input_checkpoint, Turn};
use warden_agents::{
    ChatRequest, ChunkHeader, GenParams, Generated, Generator, StreamEvent, StreamItem,
};

/// Checks the limits and sampling settings; the generation parameters.
pub fn validate(req: &ChatCompletionRequest, limits: &Limits) -> Result<GenParams, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "messages must not be empty"));
    }
    if req.messages.len() > limits.max_messages {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "too many messages: {} (the limit is {})",
                req.messages.len(),
                limits.max_messages
            ),
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        let chars = m.text().chars().count();
        if chars > limits.max_content_chars {
            return Err(ApiError::invalid(
                format!("messages[{i}].content"),
                format!(
                    "message {i} has {chars} characters (the limit is {})",
                    limits.max_content_chars
                ),
            ));
        }
        match &m.content {
            None | Some(Value::Null) if m.role != Role::Assistant => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].content"),
                    format!("a {:?} message needs content", m.role).to_lowercase(),
                ))
            }
            Some(Value::String(_) | Value::Array(_) | Value::Null) | None => {}
            Some(_) => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].content"),
                    "content must be a string or a list of content parts",
                ))
            }
        }
    }
    let (param, asked) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(n), _) => ("max_completion_tokens", Some(n)),
        (None, Some(n)) => ("max_tokens", Some(n)),
        (None, None) => ("max_tokens", None),
    };
    let max_tokens = asked.unwrap_or(limits.max_tokens);
    if max_tokens == 0 || max_tokens > limits.max_tokens {
        return Err(ApiError::invalid(
            param,
            format!(
                "{param} must be between 1 and {} (got {max_tokens})",
                limits.max_tokens
            ),
        ));
    }
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::invalid(
                "temperature",
                "temperature must be between 0 and 2",
            ));
        }
    }
    if let Some(p) = req.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::invalid("top_p", "top_p must be in (0, 1]"));
        }
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "only n = 1 is supported"));
    }
    let stop = req.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default();
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "stop takes up to 4 non-empty strings",
        ));
    }
    Ok(GenParams {
        max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        stop,
        constraint: None,
    })
}

/// Chat with a model.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The answer (or, with `stream`, server-sent `chat.completion.chunk` events ending with `data: [DONE]`)", body = ChatCompletion),
        (status = 400, description = "Invalid request (`code: unsupported_schema_feature` names a `response_format` schema feature a local model cannot enforce), the input refused (`code: content_filter`), or a local model's constrained output not complete within `max_tokens` (`code: output_unfinished`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong key", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 408, description = "Body not received within `limits.body_timeout_seconds`", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = ErrorBody),
        (status = 429, description = "Local engine queue full", body = ErrorBody),
        (status = 502, description = "Upstream failed", body = ErrorBody),
        (status = 503, description = "A guard failed (fail closed) or the audit is down", body = ErrorBody),
        (status = 504, description = "Upstream timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn chat_completions(
    state: web::Data<AppState>,
    caller: Caller,
    rid: RequestIdentity,
    http: HttpRequest,
    body: web::Json<ChatCompletionRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut req = body.into_inner();
    let params = validate(&req, &state.config.limits)?;
    let agent = state.agents.get(&req.model).cloned();
    let generator = state
        .models
        .get(agent.as_ref().map_or(&req.model, |a| &a.model))
        .cloned()
        .ok_or_else(|| ApiError::ModelNotFound(req.model.clone()))?;
    label_model(&http, &req.model, "chat");
    state.admit_audited_turn().await?;
    let state: Arc<AppState> = state.into_inner();
    let mut turn = Turn::start(
        Arc::clone(&state),
        &caller,
        rid.0,
        &req.model,
        req.metadata.as_ref(),
        warden_audit::Endpoint::ChatCompletions,
        || (req.stream, audit_parameters(&req)),
    )?;
    turn.record_inputs(&req.messages);

    // Input checkpoint.
    if let Some((index, cp)) = input_checkpoint(&req.messages) {
        let messages = guard_messages(&req.messages)?;
        let text = req.messages[index].text();
        let outcome = turn.check(cp, &messages, &text).await.outcome.clone();
        match outcome {
            Outcome::Blocked(_) => {
                let err = ApiError::ContentFilter(Box::new(turn.info()));
                turn.finish(400, None, Usage::default(), None)
                    .stored()
                    .await?;
                return Err(err);
            }
            Outcome::Failed(message) => {
                let err = ApiError::GuardUnavailable {
                    message,
                    warden: Box::new(turn.info()),
                };
                turn.finish(503, None, Usage::default(), None)
                    .stored()
                    .await?;
                return Err(err);
            }
            Outcome::Redacted { spans, .. } => {
                req.messages[index].content = Some(Value::String(redact(&text, &spans)));
            }
            _ => {}
        }
    } else {
        // Still reject malformed messages even when no checkpoint judges them.
        guard_messages(&req.messages)?;
    }

    let max_retries = turn.policy.max_tool_retries.value;
    match agent_turn::plan(
        &state,
        agent.as_deref(),
        Arc::clone(&generator),
        &req,
        max_retries,
    ) {
        Ok(Some(plan)) => return agent_turn::respond(turn, plan, req, params).await,
        Ok(None) => {}
        Err(e) => return Err(failed(&turn, e)),
    }
    if req.stream {
        return stream(state, turn, generator, req, params).await;
    }

    let started = Instant::now();
    // Open around the call but not entered: entering would cost a
    // span switch on every poll of the upstream call.
    let span = spans::generation(&req.model, Some(&params), false);
    spans::generation_input(&span, &req.messages);
    let result = generator
        .complete(&chat_request(&req), &params)
        .await
        .map_err(ApiError::from);
    turn.generation_time = started.elapsed();
    let mut generated = match result {
        Ok(g) => {
            spans::generation_done(&span, g.usage, &g.finish_reason, g.content.as_deref());
            g
        }
        Err(e) => {
            spans::generation_failed(&span);
            return Err(failed(&turn, e));
        }
    };
    drop(span);
    if generated.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(failed(&turn, unoffered_calls(&turn)));
    }

    // Output checkpoint.
    let answer = generated.content.clone().unwrap_or_default();
    let outcome = check_output(&mut turn, &req, &answer, generated.tool_calls.as_ref()).await?;
    match &outcome {
        Outcome::Blocked(_) | Outcome::Failed(_) => {
            generated.content = Some(turn.refusal_text().to_owned());
            generated.tool_calls = None;
            generated.finish_reason = "content_filter".into();
        }
        Outcome::Redacted { spans, .. } => {
            generated.content = Some(redact(&answer, spans));
        }
        _ => {}
    }
    turn.record_output(generated.content.as_deref().unwrap_or(""));
    turn.finish(200, Some(&generated.finish_reason), generated.usage, None)
        .stored()
        .await?;
    Ok(completion_response(&turn, &req.model, generated))
}

/// A whole completion's response: an upstream's body as it came with the
/// `warden` object added when Warden changed nothing else in it (decoding
/// and re-encoding the whole answer cost more than the rest of the turn),
/// else the body [`completion_body`] writes.
fn completion_response(turn: &Turn, model: &str, generated: Generated) -> HttpResponse {
    if let Some(raw) = &generated.raw {
        let unchanged = raw.sent.as_ref().is_some_and(|sent| {
            sent.content == generated.content
                && sent.tool_calls == generated.tool_calls
                && sent.finish_reason == generated.finish_reason
        });
        if let Some(body) = unchanged
            .then(|| with_warden(&raw.body, &turn.info()))
            .flatten()
        {
            return HttpResponse::Ok()
                .content_type(header::ContentType::json())
                .body(body);
        }
    }
    HttpResponse::Ok().json(completion_body(turn, model, generated))
}

/// `object` (the text of a JSON object) with `"warden": info` added as its
/// last member.
fn with_warden(object: &[u8], info: &WardenInfo) -> Option<Vec<u8>> {
    let end = object.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if object[end] != b'}' {
        return None;
    }
    let head = &object[..end];
    let empty = head
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .is_none_or(|i| head[i] == b'{');
    let mut out = Vec::with_capacity(object.len() + 512);
    out.extend_from_slice(head);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(b"\"warden\":");
    serde_json::to_writer(&mut out, info).ok()?;
    out.push(b'}');
    Some(out)
}

/// The checkpoint for an answer: `output`, or `tool_call` for an answer
/// that only calls tools when the policy checks tool calls.
pub(crate) async fn check_output(
    turn: &mut Turn,
    req: &ChatCompletionRequest,
    answer: &str,
    tool_calls: Option<&Vec<Value>>,
) -> Result<Outcome, ApiError> {
    let mut messages = guard_messages(&req.messages)?;
    let assistant = json!({
        "role": "assistant",
        "content": answer,
        "tool_calls": tool_calls.cloned().unwrap_or_default(),
    });
    let assistant: ChatMessage = serde_json::from_value(assistant)
        .map_err(|e| ApiError::BadGateway(format!("the model's tool calls are malformed: {e}")))?;
    messages.push(assistant);
    let only_tools = answer.is_empty() && tool_calls.is_some_and(|t| !t.is_empty());
    let cp = if only_tools && turn.policy.runs(Checkpoint::ToolCall) {
        Checkpoint::ToolCall
    } else {
        Checkpoint::Output
    };
    Ok(turn.check(cp, &messages, answer).await.outcome.clone())
}

pub(crate) fn completion_body(turn: &Turn, model: &str, generated: Generated) -> Value {
    let warden = turn.info();
    // The body parsed when it arrived, so it parses again.
    let raw = generated
        .raw
        .as_ref()
        .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok());
    match raw {
        // An upstream's own answer, with Warden's changes.
        Some(mut raw) => {
            let choice = &mut raw["choices"][0];
            choice["finish_reason"] = generated.finish_reason.into();
            let message = &mut choice["message"];
            if let Some(obj) = message.as_object_mut() {
                obj.insert(
                    "content".into(),
                    generated.content.map_or(Value::Null, Value::String),
                );
                if generated.tool_calls.is_none() {
                    obj.remove("tool_calls");
                }
            }
            raw["warden"] = serde_json::to_value(warden).unwrap_or(Value::Null);
            raw
        }
        None => serde_json::to_value(ChatCompletion {
            id: format!("chatcmpl-{}", turn.request_id),
            object: "chat.completion",
            created: chrono::Utc::now().timestamp(),
            model: model.to_owned(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: Role::Assistant,
                    content: generated.content,
                    tool_calls: generated.tool_calls,
                },
                finish_reason: generated.finish_reason,
                logprobs: None,
            }],
            usage: generated.usage,
            warden,
        })
        .unwrap_or(Value::Null),
    }
}

/// How a stream's output is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// No output checkpoint: chunks go out as they come.
    Immediately,
    /// Everything is held until the whole answer passed.
    Buffered,
    /// Held in windows of this many tokens, each released after the answer so far passed.
    Windowed(usize),
}

pub(crate) fn sse(payload: &str) -> Bytes {
    let mut out = String::with_capacity(payload.len() + 8);
    out.push_str("data: ");
    out.push_str(payload);
    out.push_str("\n\n");
    Bytes::from(out)
}

async fn stream(
    state: Arc<AppState>,
    turn: Turn,
    generator: Arc<Generator>,
    req: ChatCompletionRequest,
    params: GenParams,
) -> Result<HttpResponse, ApiError> {
    let header = ChunkHeader {
        id: format!("chatcmpl-{}", turn.request_id),
        created: chrono::Utc::now().timestamp(),
        model: req.model.clone(),
    };
    let started = Instant::now();
    let events = match generator
        .stream(&chat_request(&req), &params, header.clone())
        .await
        .map_err(ApiError::from)
    {
        Ok(rx) => rx,
        Err(e) => return Err(failed(&turn, e)),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    drop(state);
    // The request's span stays open (and the parent) until the stream ends.
    actix_web::rt::spawn(pump(turn, req, header, tx, started, events).instrument(Span::current()));
    Ok(sse_response(rx))
}

/// Releases a generator's chunks to `tx` through the output checkpoint, in
/// the policy's streaming mode, and ends the stream and the turn.
pub(crate) async fn pump(
    turn: Turn,
    req: ChatCompletionRequest,
    header: ChunkHeader,
    tx: mpsc::Sender<Bytes>,
    started: Instant,
    events: mpsc::Receiver<StreamEvent>,
) {
    let release = if !turn.policy.runs(Checkpoint::Output) {
        Release::Immediately
    } else {
        match turn.policy.streaming.value {
            Streaming::Buffered {} => Release::Buffered,
            Streaming::Windowed { window_tokens } => {
                Release::Windowed(window_tokens.get() as usize)
            }
        }
    };
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let generation = spans::generation(&req.model, None, true);
    spans::generation_input(&generation, &req.messages);
    let mut pump = Pump {
        generation: Some(generation),
        turn,
        req,
        header,
        tx,
        release,
        include_usage,
        started,
        sessions: StreamSessions::default(),
        first_seen: false,
    };
    pump.run(events).await;
}

/// An SSE response whose events come from `rx`.
pub(crate) fn sse_response(rx: mpsc::Receiver<Bytes>) -> HttpResponse {
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, actix_web::Error>(b), rx))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

/// Moves a generator's chunks to the caller, holding them back as the
/// policy's streaming mode says.
struct Pump {
    /// The generation's span, until the generator is done.
    generation: Option<Span>,
    turn: Turn,
    req: ChatCompletionRequest,
    header: ChunkHeader,
    tx: mpsc::Sender<Bytes>,
    release: Release,
    include_usage: bool,
    started: Instant,
    /// Incremental guard sessions of a windowed stream.
    sessions: StreamSessions,
    first_seen: bool,
}

/// The caller went away.
struct Gone;

impl Pump {
    async fn send(&mut self, bytes: Bytes) -> Result<(), Gone> {
        if self.turn.first_token.is_none() {
            self.turn.first_token = Some(self.started.elapsed());
        }
        self.tx.send(bytes).await.map_err(|_| Gone)
    }

    /// The generator's first token: on the span and in the histogram, once.
    fn first_token(&mut self) {
        if self.first_seen {
            return;
        }
        self.first_seen = true;
        let took = self.started.elapsed();
        if let Some(span) = &self.generation {
            span.record("warden.time_to_first_token_ms", took.as_secs_f64() * 1000.0);
        }
        self.turn.first_token_at(took);
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        json!({
            "id": self.header.id, "object": "chat.completion.chunk",
            "created": self.header.created, "model": self.header.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
        .to_string()
    }

    async fn run(&mut self, mut events: mpsc::Receiver<StreamEvent>) {
        let mut held: Vec<StreamItem> = Vec::new();
        let mut answer = String::new();
        let mut tool_calls_seen = false;
        let mut tokens_since_check = 0usize;
        let mut usage = Usage::default();
        let mut finish_reason: Option<String> = None;
        loop {
            let event = events.recv().await;
            let item = match event {
                Some(StreamEvent::Item(item)) => item,
                Some(StreamEvent::Failed(e)) => {
                    if let Some(span) = self.generation.take() {
                        spans::generation_failed(&span);
                    }
                    let _ = self.fail(e.into()).await;
                    return;
                }
                None => break,
            };
            if item.is_content && !item.text.is_empty() {
                self.first_token();
            }
            // A caller that left stops the generator even while output is held back.
            if self.tx.is_closed() {
                return self.left(&answer, usage);
            }
            if let Some(u) = item.usage {
                usage = u;
            }
            if let Some(f) = &item.finish_reason {
                finish_reason = Some(f.clone());
            }
            answer.push_str(&item.text);
            if item.is_content && item.text.is_empty() {
                tool_calls_seen = true;
                if !tools_offered(&self.req) {
                    let _ = self.fail(unoffered_calls(&self.turn)).await;
                    return;
                }
            }
            let is_content = item.is_content;
            // The gateway writes the usage chunk itself, once, at the end.
            let is_usage_only = item.usage.is_some()
                && item.finish_reason.is_none()
                && item.text.is_empty()
                && !is_content;
            if is_usage_only {
                continue;
            }
            match self.release {
                Release::Immediately => {
                    if self.send(sse(&item.payload)).await.is_err() {
                        return self.left(&answer, usage);
                    }
                }
                Release::Buffered => held.push(item),
                Release::Windowed(n) => {
                    held.push(item);
                    if is_content {
                        tokens_since_check += 1;
                    }
                    if tokens_since_check >= n {
                        tokens_since_check = 0;
                        match self.check(&answer, tool_calls_seen).await {
                            Ok(()) => {
                                for item in held.drain(..) {
                                    if self.send(sse(&item.payload)).await.is_err() {
                                        return self.left(&answer, usage);
                                    }
                                }
                            }
                            Err(outcome) => {
                                return self.cut(outcome, &answer, usage).await;
                            }
                        }
                    }
                }
            }
        }
        self.turn.generation_time = self.started.elapsed();
        if let Some(span) = self.generation.take() {
            let finish = finish_reason.as_deref().unwrap_or("stop");
            spans::generation_done(&span, usage, finish, Some(&answer));
        }
        if self.release != Release::Immediately {
            match self.check(&answer, tool_calls_seen).await {
                Ok(()) => {
                    for item in held.drain(..) {
                        if self.send(sse(&item.payload)).await.is_err() {
                            return self.left(&answer, usage);
                        }
                    }
                }
                Err(outcome) => return self.cut(outcome, &answer, usage).await,
            }
        }
        self.turn.record_output(&answer);
        let decided = self.turn.finish(
            200,
            Some(finish_reason.as_deref().unwrap_or("stop")),
            usage,
            None,
        );
        // The stream ends only once its decision is stored.
        match decided.stored().await {
            Ok(()) => {
                let _ = self.end(usage).await;
            }
            Err(e) => {
                let _ = self.error_event(e).await;
            }
        }
    }

    /// Checks the answer so far; the refusing outcome if it does not pass.
    async fn check(&mut self, answer: &str, tool_calls: bool) -> Result<(), Outcome> {
        let mut messages = match guard_messages(&self.req.messages) {
            Ok(m) => m,
            Err(e) => return Err(Outcome::Failed(e.to_string())),
        };
        messages.push(ChatMessage::assistant(answer));
        let cp = if answer.is_empty() && tool_calls && self.turn.policy.runs(Checkpoint::ToolCall) {
            Checkpoint::ToolCall
        } else {
            Checkpoint::Output
        };
        // Only the latest check of a stream counts; earlier passes are kept as verdicts.
        let report = match self.release {
            Release::Windowed(_) => {
                self.turn
                    .check_window(cp, &messages, answer, &mut self.sessions)
                    .await
            }
            _ => self.turn.check(cp, &messages, answer).await,
        };
        let outcome = report.outcome.clone();
        if outcome.refuses() {
            Err(outcome)
        } else {
            Ok(())
        }
    }

    /// Ends the stream with `content_filter`: nothing held is sent.
    async fn cut(&mut self, _outcome: Outcome, answer: &str, usage: Usage) {
        let refusal = self.turn.refusal_text().to_owned();
        let first = self.turn.first_token.is_none();
        let delta = if first {
            json!({"role": "assistant", "content": refusal})
        } else {
            json!({"content": format!("\n\n{refusal}")})
        };
        let chunk = self.chunk(delta, Some("content_filter"));
        self.turn.record_output(answer);
        let decided = self.turn.finish(200, Some("content_filter"), usage, None);
        if self.send(sse(&chunk)).await.is_ok() {
            match decided.stored().await {
                Ok(()) => {
                    let _ = self.end(usage).await;
                }
                Err(e) => {
                    let _ = self.error_event(e).await;
                }
            }
        }
    }

    /// The usage chunk (if asked for), the `warden` chunk and `[DONE]`.
    async fn end(&mut self, usage: Usage) -> Result<(), Gone> {
        if self.include_usage {
            let chunk = json!({
                "id": self.header.id, "object": "chat.completion.chunk",
                "created": self.header.created, "model": self.header.model,
                "choices": [], "usage": usage,
            });
            self.send(sse(&chunk.to_string())).await?;
        }
        let warden = json!({
            "id": self.header.id, "object": "chat.completion.chunk",
            "created": self.header.created, "model": self.header.model,
            "choices": [], "warden": self.turn.info(),
        });
        self.send(sse(&warden.to_string())).await?;
        self.send(Bytes::from_static(b"data: [DONE]\n\n")).await
    }

    /// The generator failed mid-stream: an error event, then `[DONE]`.
    async fn fail(&mut self, e: ApiError) -> Result<(), Gone> {
        // An error is recorded but not waited for: nothing was acknowledged.
        let _ = self.turn.finish(
            e.status_code_u16(),
            None,
            Usage::default(),
            Some(e.to_string()),
        );
        self.error_event(e).await
    }

    /// An error event, then `[DONE]`.
    async fn error_event(&mut self, e: ApiError) -> Result<(), Gone> {
        let body = serde_json::to_string(&e.body()).unwrap_or_default();
        self.send(sse(&body)).await?;
        self.send(Bytes::from_static(b"data: [DONE]\n\n")).await
    }

    /// The caller disconnected; the generator stops when its receiver drops.
    fn left(&self, answer: &str, usage: Usage) {
        self.turn.record_output(answer);
        let _ = self
            .turn
            .finish(499, None, usage, Some("the client disconnected".into()));
    }
}

impl ApiError {
    /// The HTTP status as a number (for the audit).
    pub fn status_code_u16(&self) -> u16 {
        actix_web::ResponseError::status_code(self).as_u16()
    }
}

/// Whether the request lets the model call tools.
fn tools_offered(req: &ChatCompletionRequest) -> bool {
    req.tools.as_ref().is_some_and(|t| !t.is_empty())
        && req.tool_choice.as_ref().and_then(Value::as_str) != Some("none")
}

/// The generator's view of a request: the validated body as JSON.
pub(crate) fn chat_request(req: &ChatCompletionRequest) -> ChatRequest {
    match serde_json::to_value(req) {
        Ok(Value::Object(body)) => ChatRequest::new(body),
        // A struct always serialises to an object.
        _ => ChatRequest::new(serde_json::Map::new()),
    }
}

/// The model called tools although the request offered none (no `tools`,
/// or `tool_choice: "none"`): with no schema to validate them against, the
/// calls must not reach the caller as if valid.
fn unoffered_calls(turn: &Turn) -> ApiError {
    ApiError::InvalidToolCall {
        errors: vec!["the model called a tool, but the request offered none".into()],
        warden: Box::new(turn.info()),
    }
}

/// Records a turn that ended in `e` before any answer, and hands `e` on.
pub(crate) fn failed(turn: &Turn, e: ApiError) -> ApiError {
    // Recorded, not waited for: an error acknowledges no decision.
    let _ = turn.finish(
        e.status_code_u16(),
        None,
        Usage::default(),
        Some(e.to_string()),
    );
    e
}
