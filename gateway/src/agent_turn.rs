//! Turns with tools: agent profiles, and requests that bring OpenAI `tools`.
//! Both run warden-agents' loop; this module guards each call and result
//! through the request's [`Turn`] and turns the loop's outcome into a response.

use std::sync::Arc;
use std::time::Instant;

use actix_web::HttpResponse;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::Instrument;
use warden_agents::agent::{
    self, AgentProfile, Gate, LoopInput, LoopOutcome, LoopResult, StepRecord, Supervisor,
};
use warden_agents::tools::{ToolCall, ToolCallFormat, ToolSet};
use warden_agents::{ChunkHeader, GenParams, Generated, Generator, StreamEvent, StreamItem, Usage};
use warden_guard::ChatMessage;
use warden_policies::Checkpoint;

use crate::error::ApiError;
use crate::guarding::{redact, Outcome};
use crate::openai::ChatCompletionRequest;
use crate::routes::chat::{
    chat_request, check_output, completion_body, failed, pump, sse, sse_response,
};
use crate::state::AppState;
use crate::turn::Turn;

/// How a tool turn runs.
pub struct ToolPlan {
    generator: Arc<Generator>,
    tools: ToolSet,
    system_prompt: Option<String>,
    format: Option<ToolCallFormat>,
    step_limit: u32,
    call_required: bool,
    timeout: Option<std::time::Duration>,
}

/// The tool plan of a request: always for an agent, and for a model when
/// the request brings `tools` (unless `tool_choice` is `"none"`).
pub fn plan(
    state: &AppState,
    agent: Option<&AgentProfile>,
    generator: Arc<Generator>,
    req: &ChatCompletionRequest,
    max_retries: u8,
) -> Result<Option<ToolPlan>, ApiError> {
    let model = agent.map_or(req.model.as_str(), |a| a.model.as_str());
    let format = state.tool_formats.get(model).copied();
    if let Some(agent) = agent {
        if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::invalid(
                "tools",
                format!("the agent `{}` brings its own tools", agent.name),
            ));
        }
        return Ok(Some(ToolPlan {
            generator,
            tools: agent.tools.clone(),
            system_prompt: agent.system_prompt.clone(),
            format,
            step_limit: agent.step_limit,
            call_required: agent.call_required,
            timeout: Some(agent.timeout),
        }));
    }
    let Some(declared) = req.tools.as_ref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let (call_required, named) = match &req.tool_choice {
        None => (false, None),
        Some(Value::String(s)) if s == "auto" => (false, None),
        Some(Value::String(s)) if s == "none" => return Ok(None),
        Some(Value::String(s)) if s == "required" => (true, None),
        Some(choice) => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => (true, Some(name.to_owned())),
            None => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    "must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                ))
            }
        },
    };
    let tools =
        ToolSet::from_openai(declared).map_err(|e| ApiError::invalid("tools", e.to_string()))?;
    let tools = match named {
        Some(name) => {
            let only: Vec<Value> = declared
                .iter()
                .filter(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(&name))
                .cloned()
                .collect();
            if only.is_empty() {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("no tool named `{name}` is in `tools`"),
                ));
            }
            ToolSet::from_openai(&only).map_err(|e| ApiError::invalid("tools", e.to_string()))?
        }
        None => tools,
    };
    Ok(Some(ToolPlan {
        generator,
        tools,
        system_prompt: None,
        format,
        // Client tools end the loop at the first valid call: one step and the retries.
        step_limit: u32::from(max_retries) + 1,
        call_required,
        timeout: None,
    }))
}

/// Guards the loop's calls and results through the turn and audits each step.
struct TurnSupervisor<'t> {
    turn: &'t mut Turn,
    /// A streaming turn's SSE channel: each step goes out as a comment.
    steps_to: Option<mpsc::Sender<Bytes>>,
}

/// The guard's view of the loop's conversation.
fn guard_view(conversation: &[Value]) -> Result<Vec<ChatMessage>, String> {
    conversation
        .iter()
        .map(|m| {
            serde_json::from_value(m.clone())
                .map_err(|e| format!("the conversation cannot be guarded: {e}"))
        })
        .collect()
}

/// The loop's conversation as the guard judges `call`: a local model's call
/// is its own text in the conversation (the model reads its words again), so
/// the last assistant message is shown to the guard as the call it parsed to.
fn with_judged_call(conversation: &[Value], call: &ToolCall) -> Vec<Value> {
    let mut view = conversation.to_vec();
    if let Some(last) = view.last_mut() {
        let has_calls = last["tool_calls"].as_array().is_some_and(|c| !c.is_empty());
        if last["role"] == "assistant" && !has_calls {
            *last = json!({"role": "assistant", "content": null, "tool_calls": [call.to_openai()]});
        }
    }
    view
}

impl TurnSupervisor<'_> {
    async fn gate(&mut self, cp: Checkpoint, conversation: &[Value], judged: &str) -> Gate {
        let messages = match guard_view(conversation) {
            Ok(m) => m,
            // Unjudgeable means unguarded: fail closed.
            Err(e) => return Gate::Fail(e),
        };
        match &self.turn.check(cp, &messages, judged).await.outcome {
            Outcome::Blocked(_) => Gate::Block,
            Outcome::Failed(m) => Gate::Fail(m.clone()),
            _ => Gate::Pass,
        }
    }
}

impl Supervisor for TurnSupervisor<'_> {
    fn allows(&self, tool: &str) -> bool {
        self.turn.policy.allowed_tools.value.allows(tool)
    }

    async fn check_call(&mut self, conversation: &[Value], call: &ToolCall) -> Gate {
        let judged = json!({"name": call.name, "arguments": call.arguments}).to_string();
        let view = with_judged_call(conversation, call);
        self.gate(Checkpoint::ToolCall, &view, &judged).await
    }

    async fn check_result(
        &mut self,
        conversation: &[Value],
        _call: &ToolCall,
        result: &str,
    ) -> Gate {
        self.gate(Checkpoint::ToolResult, conversation, result)
            .await
    }

    fn record(&mut self, step: &StepRecord) {
        self.turn.record_step(step);
        if let Some(tx) = &self.steps_to {
            let line = serde_json::to_string(step).unwrap_or_default();
            // Informational: a full channel (slow reader) skips the comment.
            let _ = tx.try_send(Bytes::from(format!(": warden.step {line}\n\n")));
        }
    }
}

/// Runs the loop and answers: JSON, or for `stream` an SSE stream that
/// starts at once, carries each step as an SSE comment (`: warden.step
/// {...}`, ignored by OpenAI clients) and the final answer as it is generated.
pub async fn respond(
    turn: Turn,
    plan: ToolPlan,
    req: ChatCompletionRequest,
    params: GenParams,
) -> Result<HttpResponse, ApiError> {
    if req.stream {
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        // The request's span stays open (and the parent) until the stream ends.
        actix_web::rt::spawn(
            stream_turn(turn, plan, req, params, tx).instrument(tracing::Span::current()),
        );
        return Ok(sse_response(rx));
    }
    let (mut turn, result) = run_loop(turn, &plan, &req, params, None, None).await;
    let body = conclude(&mut turn, &plan, &req, result.outcome, result.usage).await?;
    Ok(HttpResponse::Ok().json(body))
}

/// Runs the loop under the turn's policy; the turn comes back with the
/// steps and timings recorded.
async fn run_loop(
    mut turn: Turn,
    plan: &ToolPlan,
    req: &ChatCompletionRequest,
    params: GenParams,
    stream: Option<ChunkHeader>,
    steps_to: Option<mpsc::Sender<Bytes>>,
) -> (Turn, LoopResult) {
    let input = LoopInput {
        generator: &plan.generator,
        body: chat_request(req).body().clone(),
        params,
        tools: plan.tools.clone(),
        system_prompt: plan.system_prompt.clone(),
        format: plan.format,
        step_limit: plan.step_limit,
        max_retries: turn.policy.max_tool_retries.value,
        call_required: plan.call_required,
        deadline: plan.timeout.map(|t| Instant::now() + t),
        stream,
    };
    let mut result = {
        let mut sup = TurnSupervisor {
            turn: &mut turn,
            steps_to,
        };
        agent::run(input, &mut sup).await
    };
    turn.generation_time = result.generation_time;
    turn.tools_time = result.tools_time;
    turn.steps = std::mem::take(&mut result.steps);
    (turn, result)
}

/// A streamed tool turn: steps as SSE comments while the loop runs, then
/// the final answer through the output checkpoint in the policy's
/// streaming mode, or the loop's other ending as chunks or an error event.
async fn stream_turn(
    turn: Turn,
    plan: ToolPlan,
    req: ChatCompletionRequest,
    params: GenParams,
    tx: mpsc::Sender<Bytes>,
) {
    let header = ChunkHeader {
        id: format!("chatcmpl-{}", turn.request_id),
        created: chrono::Utc::now().timestamp(),
        model: req.model.clone(),
    };
    let started = Instant::now();
    let (mut turn, result) = run_loop(
        turn,
        &plan,
        &req,
        params,
        Some(header.clone()),
        Some(tx.clone()),
    )
    .await;
    match result.outcome {
        LoopOutcome::Streaming { held, rest } => {
            let events = resume(held, rest, result.usage);
            pump(turn, req, header, tx, started, events).await;
        }
        outcome => {
            let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
            let chunks = match conclude(&mut turn, &plan, &req, outcome, result.usage).await {
                Ok(body) => as_chunks(&body, include_usage),
                Err(e) => vec![
                    sse(&serde_json::to_string(&e.body()).unwrap_or_default()),
                    Bytes::from_static(b"data: [DONE]\n\n"),
                ],
            };
            for chunk in chunks {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// The chunks already read, then the rest of the stream, with the tokens
/// of the earlier steps added to the usage it reports.
fn resume(
    held: Vec<StreamItem>,
    mut rest: mpsc::Receiver<StreamEvent>,
    before: Usage,
) -> mpsc::Receiver<StreamEvent> {
    let (tx, rx) = mpsc::channel(64);
    let with_before = move |mut item: StreamItem| {
        item.usage = item.usage.map(|u| {
            Usage::new(
                u.prompt_tokens + before.prompt_tokens,
                u.completion_tokens + before.completion_tokens,
            )
        });
        StreamEvent::Item(item)
    };
    actix_web::rt::spawn(async move {
        for item in held {
            if tx.send(with_before(item)).await.is_err() {
                return;
            }
        }
        // Dropping `rest` when the caller leaves cancels the generation.
        while let Some(event) = rest.recv().await {
            let event = match event {
                StreamEvent::Item(item) => with_before(item),
                failed => failed,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The response body of a loop that ended without a stream (or the error),
/// with the end of the turn recorded.
async fn conclude(
    turn: &mut Turn,
    plan: &ToolPlan,
    req: &ChatCompletionRequest,
    outcome: LoopOutcome,
    usage: Usage,
) -> Result<Value, ApiError> {
    let refusal = |turn: &Turn| Generated {
        content: Some(turn.refusal_text().to_owned()),
        tool_calls: None,
        finish_reason: "content_filter".into(),
        usage,
        raw: None,
    };
    let generated = match outcome {
        LoopOutcome::Answer(mut generated) => {
            generated.raw = None;
            generated.tool_calls = None;
            let answer = generated.content.clone().unwrap_or_default();
            match check_output(turn, req, &answer, None).await? {
                Outcome::Blocked(_) | Outcome::Failed(_) => refusal(turn),
                Outcome::Redacted { spans, .. } => Generated {
                    content: Some(redact(&answer, &spans)),
                    ..generated
                },
                _ => generated,
            }
        }
        // Only streaming turns hand on a stream; a whole answer cannot get here.
        LoopOutcome::Streaming { .. } => {
            return Err(failed(
                turn,
                ApiError::Internal("a streamed answer in a whole response".into()),
            ))
        }
        LoopOutcome::ClientCalls { calls, .. } => Generated {
            // Text beside the calls is dropped: it was not judged by the output checkpoint.
            content: None,
            tool_calls: Some(calls.iter().map(ToolCall::to_openai).collect()),
            finish_reason: "tool_calls".into(),
            usage,
            raw: None,
        },
        LoopOutcome::CallBlocked | LoopOutcome::GuardFailed(_) => refusal(turn),
        LoopOutcome::StepLimit => Generated {
            content: Some(format!(
                "The agent stopped after {} steps without a final answer.",
                plan.step_limit
            )),
            tool_calls: None,
            finish_reason: "length".into(),
            usage,
            raw: None,
        },
        LoopOutcome::InvalidToolCall { errors } => {
            let warden = Box::new(turn.info());
            return Err(failed(turn, ApiError::InvalidToolCall { errors, warden }));
        }
        LoopOutcome::Timeout => {
            let secs = plan.timeout.map_or(0.0, |t| t.as_secs_f64());
            return Err(failed(
                turn,
                ApiError::GatewayTimeout(format!("the agent did not finish within {secs} s")),
            ));
        }
        LoopOutcome::Failed(e) => return Err(failed(turn, e.into())),
    };
    turn.record_output(generated.content.as_deref().unwrap_or(""));
    turn.finish(200, Some(&generated.finish_reason), generated.usage, None)
        .stored()
        .await?;
    Ok(completion_body(turn, &req.model, generated))
}

/// A whole completion as the chunks of a stream: the answer (or calls) in
/// one delta, the finish reason, usage when asked, the `warden` object, `[DONE]`.
fn as_chunks(body: &Value, include_usage: bool) -> Vec<Bytes> {
    let message = &body["choices"][0]["message"];
    let frame = |choices: Value, extra: Option<(&str, Value)>| {
        let mut chunk = json!({
            "id": body["id"], "object": "chat.completion.chunk",
            "created": body["created"], "model": body["model"], "choices": choices,
        });
        if let Some((k, v)) = extra {
            chunk[k] = v;
        }
        sse(&chunk.to_string())
    };
    let mut delta = json!({"role": "assistant", "content": message["content"]});
    if let Some(calls) = message["tool_calls"].as_array() {
        let indexed: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                c["index"] = i.into();
                c
            })
            .collect();
        delta["tool_calls"] = Value::Array(indexed);
    }
    let mut out = vec![
        frame(
            json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            None,
        ),
        frame(
            json!([{"index": 0, "delta": {}, "finish_reason": body["choices"][0]["finish_reason"]}]),
            None,
        ),
    ];
    if include_usage {
        out.push(frame(json!([]), Some(("usage", body["usage"].clone()))));
    }
    out.push(frame(json!([]), Some(("warden", body["warden"].clone()))));
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}
