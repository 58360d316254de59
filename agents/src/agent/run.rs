//! The loop itself.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use tokio::sync::mpsc;
use tracing::Instrument;

use super::conversation::{self, assistant_calls, feedback, step_body};
use super::spans;
use super::step::{StepRecord, StepStatus};
use super::streamed::{read_step, StreamedStep};
use super::supervisor::{Gate, Supervisor};
use crate::chat::{ChatRequest, ChunkHeader, GenParams, Generated, StreamItem, Usage};
use crate::error::GenerateError;
use crate::generate::{Generator, StreamEvent};
use crate::tools::{
    parse_openai_tool_calls, parse_output, tool_result_message, Parsed, Rejected, ToolCall,
    ToolCallFormat, ToolSet, ValidCall, ValidationIssue,
};
use warden_inference::{CallFormat, Constraint, ToolSpec as InferenceToolSpec};

/// The notice a model sees instead of a tool result the guard refused.
pub const RESULT_BLOCKED_NOTICE: &str =
    "The tool's result was withheld because it violated the safety policy. Do not retry the call.";

/// What the loop needs for one turn.
pub struct LoopInput<'a> {
    /// The generator of every step.
    pub generator: &'a Generator,
    /// The caller's request body (its `messages` start the conversation).
    pub body: Map<String, Value>,
    /// Sampling and length settings of each step.
    pub params: GenParams,
    /// The tools the model may call.
    pub tools: ToolSet,
    /// Put before the caller's messages (agent profiles).
    pub system_prompt: Option<String>,
    /// How the model writes calls: `Some` for local models (parsed from the
    /// text), `None` for upstreams (OpenAI `tool_calls`).
    pub format: Option<ToolCallFormat>,
    /// Most generations.
    pub step_limit: u32,
    /// How many rejected outputs are fed back before the turn fails.
    pub max_retries: u8,
    /// A text answer is not acceptable until a call has run (`tool_choice`
    /// required or named).
    pub call_required: bool,
    /// When the whole turn must have ended.
    pub deadline: Option<Instant>,
    /// Stream the steps; a text answer is handed on while it is generated
    /// ([`LoopOutcome::Streaming`]). The header goes into chunks the local
    /// engine writes.
    pub stream: Option<ChunkHeader>,
}

/// How the turn ended.
#[derive(Debug)]
pub enum LoopOutcome {
    /// A final answer; the caller still runs the output checkpoint on it.
    Answer(Generated),
    /// A final answer still being generated (streaming turns); the caller
    /// releases it through the output checkpoint.
    Streaming {
        /// Chunks already read, in order.
        held: Vec<StreamItem>,
        /// The rest of the stream.
        rest: mpsc::Receiver<StreamEvent>,
    },
    /// Valid calls of client tools, to return with `finish_reason: "tool_calls"`.
    ClientCalls {
        /// Text the model wrote beside the calls, if any.
        content: Option<String>,
        /// The calls, each validated and passed by the `tool_call` checkpoint.
        calls: Vec<ToolCall>,
    },
    /// The model kept producing unusable calls after `max_retries` rounds of feedback.
    InvalidToolCall {
        /// The last round's errors, one line each with its JSON pointer.
        errors: Vec<String>,
    },
    /// The `tool_call` checkpoint refused a call.
    CallBlocked,
    /// A checkpoint failed and the policy fails closed.
    GuardFailed(String),
    /// The step limit came before a final answer.
    StepLimit,
    /// The deadline passed.
    Timeout,
    /// A generation failed.
    Failed(GenerateError),
}

/// The outcome with what the loop did on the way.
#[derive(Debug)]
pub struct LoopResult {
    /// How it ended.
    pub outcome: LoopOutcome,
    /// Every call attempt, in order.
    pub steps: Vec<StepRecord>,
    /// Tokens over all generations.
    pub usage: Usage,
    /// Time spent generating.
    pub generation_time: Duration,
    /// Time spent in executors.
    pub tools_time: Duration,
}

/// Runs the loop until a final answer, client calls, the step limit, the
/// deadline or a refusal.
pub async fn run<S: Supervisor>(input: LoopInput<'_>, sup: &mut S) -> LoopResult {
    let mut state = State {
        sup,
        constrained: false,
        answer: None,
        steps: Vec::new(),
        usage: Usage::default(),
        generation_time: Duration::ZERO,
        tools_time: Duration::ZERO,
    };
    let outcome = state.drive(&input).await;
    LoopResult {
        outcome,
        steps: state.steps,
        usage: state.usage,
        generation_time: state.generation_time,
        tools_time: state.tools_time,
    }
}

struct State<'s, S> {
    sup: &'s mut S,
    /// Whether the current step's output was generated under a grammar.
    constrained: bool,
    /// The last whole generation, kept in case it is the final answer.
    answer: Option<Generated>,
    steps: Vec<StepRecord>,
    usage: Usage,
    generation_time: Duration,
    tools_time: Duration,
}

/// Waits for `fut` until `deadline` (forever without one).
async fn until<T>(
    deadline: Option<Instant>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), fut).await.ok(),
        None => Some(fut.await),
    }
}

impl<S: Supervisor> State<'_, S> {
    /// A whole generation as a step: its text, parsed by the set's format.
    fn whole(&mut self, g: Generated, input: &LoopInput<'_>) -> StreamedStep {
        let text = g.content.clone().unwrap_or_default();
        let parsed = match input.format {
            _ if input.tools.is_empty() => Ok(Parsed::Text(text.clone())),
            Some(format) => parse_output(format, &text),
            None => match g.tool_calls.as_deref() {
                Some(calls) if !calls.is_empty() => {
                    parse_openai_tool_calls(calls).map(Parsed::Calls)
                }
                _ => Ok(Parsed::Text(text.clone())),
            },
        };
        let usage = g.usage;
        self.answer = Some(g);
        StreamedStep::Whole {
            text,
            parsed,
            usage,
        }
    }

    fn record(&mut self, mut step: StepRecord) {
        step.constrained = self.constrained;
        if step.constraint_bug() {
            // The grammar should have made this impossible: validation caught
            // it (defence in depth), and the audit records it as a bug.
            tracing::error!(
                step = step.step,
                status = ?step.status,
                tool = step.tool.as_deref().unwrap_or(""),
                "a constrained tool call failed parsing or validation"
            );
        }
        self.sup.record(&step);
        self.steps.push(step);
    }

    /// The generation settings of one step: for a local model with tools,
    /// its calls constrained to the tools' schemas (a call only when one is
    /// required, else text or a call), when the model's grammar compiler
    /// accepts them.
    fn step_params(&mut self, input: &LoopInput<'_>, must_call: bool) -> GenParams {
        let mut params = input.params.clone();
        self.constrained = false;
        let Some(format) = input.format.filter(|_| !input.tools.is_empty()) else {
            return params;
        };
        let tools: Vec<InferenceToolSpec> = input
            .tools
            .specs()
            .map(|s| InferenceToolSpec {
                name: s.name.clone(),
                parameters: s.parameters.clone(),
            })
            .collect();
        let format = match format {
            ToolCallFormat::Llama31 => CallFormat::Llama31,
            ToolCallFormat::SmolLm2 => CallFormat::SmolLm2,
        };
        let constraint = if must_call {
            Constraint::ToolCall { tools, format }
        } else {
            Constraint::TextOrToolCall { tools, format }
        };
        if input.generator.can_constrain(&constraint) {
            params.constraint = Some(constraint);
            self.constrained = true;
        } else {
            tracing::warn!(
                "tool schemas use features constrained decoding lacks: calls are only validated"
            );
        }
        params
    }

    async fn drive(&mut self, input: &LoopInput<'_>) -> LoopOutcome {
        let caller = input
            .body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let mut convo = conversation::initial(
            caller,
            input.system_prompt.as_deref(),
            conversation::instructions(input.format, &input.tools),
        );
        let local = input.format.is_some();
        let mut rejections: u32 = 0;
        let mut must_call = input.call_required;
        for step in 1..=input.step_limit {
            let attempt = rejections + 1;
            let body = ChatRequest::new(step_body(
                &input.body,
                &convo,
                &input.tools,
                local,
                input.stream.is_some(),
            ));
            let params = self.step_params(input, must_call);
            let started = Instant::now();
            let span = spans::generation(input, step);
            let output = match &input.stream {
                Some(header) => {
                    let read = async {
                        let rx = input
                            .generator
                            .stream(&body, &params, header.clone())
                            .await?;
                        read_step(rx, input.format, !input.tools.is_empty(), !must_call).await
                    };
                    until(input.deadline, read).instrument(span.clone()).await
                }
                None => until(input.deadline, input.generator.complete(&body, &params))
                    .instrument(span.clone())
                    .await
                    .map(|r| r.map(|g| self.whole(g, input))),
            };
            self.generation_time += started.elapsed();
            spans::generation_done(&span, &output);
            drop(span);
            let (text, parsed) = match output {
                None => return LoopOutcome::Timeout,
                Some(Err(e)) => return LoopOutcome::Failed(e),
                Some(Ok(StreamedStep::Text { held, rest })) => {
                    return LoopOutcome::Streaming { held, rest };
                }
                Some(Ok(StreamedStep::Whole {
                    text,
                    parsed,
                    usage,
                })) => {
                    self.usage = add(self.usage, usage);
                    if let (Ok(Parsed::Text(_)), false, Some(g)) =
                        (&parsed, must_call, self.answer.take())
                    {
                        return LoopOutcome::Answer(Generated {
                            usage: self.usage,
                            ..g
                        });
                    }
                    (text, parsed)
                }
            };
            let calls = match parsed {
                Ok(Parsed::Text(_)) if !must_call => {
                    // A streamed text answer read whole (no tools to call).
                    return LoopOutcome::Answer(Generated {
                        content: Some(text),
                        tool_calls: None,
                        finish_reason: "stop".into(),
                        usage: self.usage,
                        raw: None,
                    });
                }
                Ok(Parsed::Text(_)) => {
                    let reason = "answered in text, but a tool call is required".to_owned();
                    let mut rec = StepRecord::new(step, attempt, StepStatus::ParseError);
                    rec.detail = Some(reason.clone());
                    rec.raw = Some(text.clone());
                    self.record(rec);
                    rejections += 1;
                    if rejections > u32::from(input.max_retries) {
                        return LoopOutcome::InvalidToolCall {
                            errors: vec![reason],
                        };
                    }
                    convo.push(serde_json::json!({"role": "assistant", "content": text}));
                    convo.push(feedback(format!(
                        "You must call one of the tools ({}). Answer with a tool call only.",
                        input.tools.names().collect::<Vec<_>>().join(", ")
                    )));
                    continue;
                }
                Err(e) => {
                    let mut rec = StepRecord::new(step, attempt, StepStatus::ParseError);
                    rec.detail = Some(e.reason.clone());
                    rec.raw = Some(e.raw.clone());
                    self.record(rec);
                    rejections += 1;
                    if rejections > u32::from(input.max_retries) {
                        return LoopOutcome::InvalidToolCall {
                            errors: vec![format!(
                                "the tool call could not be parsed: {}",
                                e.reason
                            )],
                        };
                    }
                    convo.push(serde_json::json!({"role": "assistant", "content": e.raw}));
                    convo.push(feedback(format!(
                        "Your tool call could not be parsed ({}). Write it again in the required format.",
                        e.reason
                    )));
                    continue;
                }
                Ok(Parsed::Calls(calls)) => calls,
            };
            let raw = local.then_some(text.as_str());

            // Validate every call before anything runs.
            let mut valid: Vec<ValidCall> = Vec::new();
            let mut rejected: Vec<Refusal> = Vec::new();
            for call in calls {
                if !self.sup.allows(&call.name) {
                    let msg = format!("the policy does not allow the tool `{}`", call.name);
                    rejected.push(Refusal {
                        call,
                        status: StepStatus::NotAllowed,
                        issues: Vec::new(),
                        lines: vec![msg.clone()],
                        feedback: msg,
                    });
                    continue;
                }
                let span = tracing::info_span!(
                    "tool.validate",
                    otel.name = "validate_tool",
                    otel.status_code = tracing::field::Empty,
                    gen_ai.tool.name = call.name.as_str(),
                    gen_ai.tool.call.id = call.id.as_str(),
                    warden.tool.validation = tracing::field::Empty,
                );
                match input.tools.validate(call) {
                    Ok(v) => {
                        span.record("warden.tool.validation", "valid");
                        valid.push(v);
                    }
                    Err(r) => {
                        span.record("warden.tool.validation", "invalid");
                        span.record("otel.status_code", "error");
                        rejected.push(Refusal::from(r));
                    }
                }
            }
            if !rejected.is_empty() {
                let mut all_calls: Vec<ToolCall> = Vec::new();
                let mut replies: Vec<Value> = Vec::new();
                let mut errors = Vec::new();
                for r in rejected {
                    let mut rec = StepRecord::new(step, attempt, r.status);
                    rec.call_id = Some(r.call.id.clone());
                    rec.tool = Some(r.call.name.clone());
                    rec.arguments = Some(r.call.arguments.clone());
                    rec.errors = r.issues;
                    rec.detail = Some(r.lines.join("; "));
                    self.record(rec);
                    errors.extend(r.lines);
                    replies.push(tool_result_message(&r.call, &r.feedback));
                    all_calls.push(r.call);
                }
                for v in valid {
                    let call = v.call().clone();
                    let mut rec = StepRecord::new(step, attempt, StepStatus::Skipped);
                    rec.call_id = Some(call.id.clone());
                    rec.tool = Some(call.name.clone());
                    rec.arguments = Some(call.arguments.clone());
                    self.record(rec);
                    replies.push(tool_result_message(
                        &call,
                        "Not run: another call of the same step was invalid. Call it again.",
                    ));
                    all_calls.push(call);
                }
                rejections += 1;
                if rejections > u32::from(input.max_retries) {
                    return LoopOutcome::InvalidToolCall { errors };
                }
                convo.push(assistant_calls(&all_calls, raw));
                if local {
                    // A local template may not know tool messages' ids: one user turn.
                    let text = replies
                        .iter()
                        .filter_map(|r| r.get("content").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n");
                    convo.push(feedback(text));
                } else {
                    convo.extend(replies);
                }
                continue;
            }

            // Guard every call before any runs or is returned.
            let plain: Vec<ToolCall> = valid.iter().map(|v| v.call().clone()).collect();
            convo.push(assistant_calls(&plain, raw));
            for v in &valid {
                let call = v.call();
                let gate = self.sup.check_call(&convo, call).await;
                let status = match gate {
                    Gate::Pass => continue,
                    Gate::Block => StepStatus::Blocked,
                    Gate::Fail(_) => StepStatus::GuardFailed,
                };
                let mut rec = StepRecord::new(step, attempt, status);
                rec.call_id = Some(call.id.clone());
                rec.tool = Some(call.name.clone());
                rec.arguments = Some(call.arguments.clone());
                self.record(rec);
                return match gate {
                    Gate::Fail(m) => LoopOutcome::GuardFailed(m),
                    _ => LoopOutcome::CallBlocked,
                };
            }

            if valid.iter().any(|v| input.tools.is_client(&v.call().name)) {
                // The standard OpenAI flow: the caller runs its tools. Server
                // tools of the same step are not run (their results could not
                // reach the model through the caller's next request).
                let mut calls = Vec::new();
                for v in valid {
                    let call = v.call().clone();
                    let client = input.tools.is_client(&call.name);
                    let mut rec = StepRecord::new(
                        step,
                        attempt,
                        if client {
                            StepStatus::ReturnedToClient
                        } else {
                            StepStatus::Skipped
                        },
                    );
                    rec.call_id = Some(call.id.clone());
                    rec.tool = Some(call.name.clone());
                    rec.arguments = Some(call.arguments.clone());
                    self.record(rec);
                    if client {
                        calls.push(call);
                    }
                }
                let content = (!local).then_some(text).filter(|c| !c.is_empty());
                return LoopOutcome::ClientCalls { content, calls };
            }

            must_call = false;
            for v in valid {
                let call = v.call().clone();
                let started = Instant::now();
                // GenAI conventions' tool span; arguments and results stay off it.
                let span = tracing::info_span!(
                    "tool.execute",
                    otel.name = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                    gen_ai.operation.name = "execute_tool",
                    gen_ai.tool.name = call.name.as_str(),
                    gen_ai.tool.call.id = call.id.as_str(),
                    warden.tool.outcome = tracing::field::Empty,
                );
                if !span.is_disabled() {
                    span.record("otel.name", format!("execute_tool {}", call.name));
                }
                let result = until(input.deadline, input.tools.execute(&v))
                    .instrument(span.clone())
                    .await;
                span.record(
                    "warden.tool.outcome",
                    match &result {
                        None => "timeout",
                        Some(Err(_)) => "failed",
                        Some(Ok(_)) => "executed",
                    },
                );
                if !matches!(result, Some(Ok(_))) {
                    span.record("otel.status_code", "error");
                }
                drop(span);
                let spent = started.elapsed();
                self.tools_time += spent;
                let mut rec = StepRecord::new(step, attempt, StepStatus::Executed);
                rec.call_id = Some(call.id.clone());
                rec.tool = Some(call.name.clone());
                rec.arguments = Some(call.arguments.clone());
                rec.latency_us = Some(spent.as_micros() as u64);
                match result {
                    None => {
                        rec.status = StepStatus::Failed;
                        rec.detail = Some("the turn's deadline passed".into());
                        self.record(rec);
                        return LoopOutcome::Timeout;
                    }
                    Some(Err(e)) => {
                        rec.status = StepStatus::Failed;
                        rec.detail = Some(e.to_string());
                        self.record(rec);
                        convo.push(tool_result_message(&call, &format!("Error: {e}")));
                    }
                    Some(Ok(out)) => {
                        convo.push(tool_result_message(&call, &out.content));
                        rec.result = Some(out.content.clone());
                        // Audited as executed before the result is judged, in
                        // the order things happened; the step's status then
                        // says what the result guard decided.
                        self.record(rec);
                        let gate = self.sup.check_result(&convo, &call, &out.content).await;
                        let status = match &gate {
                            Gate::Pass => continue,
                            Gate::Block => StepStatus::ResultBlocked,
                            Gate::Fail(_) => StepStatus::ResultGuardFailed,
                        };
                        if let Some(last) = self.steps.last_mut() {
                            last.status = status;
                        }
                        if let Gate::Fail(m) = gate {
                            return LoopOutcome::GuardFailed(m);
                        }
                        let last = convo.len() - 1;
                        convo[last] = tool_result_message(&call, RESULT_BLOCKED_NOTICE);
                    }
                }
            }
            if local {
                // Templates without tool roles: results become a user turn.
                local_results(&mut convo, &plain);
            }
        }
        LoopOutcome::StepLimit
    }
}

/// Rewrites the trailing tool messages as one user turn, for local templates.
fn local_results(convo: &mut Vec<Value>, calls: &[ToolCall]) {
    let start = convo
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) != Some("tool"))
        .map_or(0, |i| i + 1);
    let results: Vec<String> = convo
        .drain(start..)
        .map(|m| {
            let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
            let name = calls
                .iter()
                .find(|c| c.id == id)
                .map_or("the tool", |c| c.name.as_str());
            let content = m.get("content").and_then(Value::as_str).unwrap_or("");
            format!("Result of {name}: {content}")
        })
        .collect();
    if !results.is_empty() {
        convo.push(feedback(results.join("\n")));
    }
}

/// A call that will not run, with what the model and the audit are told.
struct Refusal {
    call: ToolCall,
    status: StepStatus,
    issues: Vec<ValidationIssue>,
    /// One line per problem, for the final error.
    lines: Vec<String>,
    /// The text the model gets back.
    feedback: String,
}

impl From<Rejected> for Refusal {
    fn from(r: Rejected) -> Self {
        let feedback = r.feedback();
        match r {
            Rejected::UnknownTool { call } => Self {
                lines: vec![format!("there is no tool named `{}`", call.name)],
                call,
                status: StepStatus::UnknownTool,
                issues: Vec::new(),
                feedback,
            },
            Rejected::Invalid { call, issues } => Self {
                lines: issues
                    .iter()
                    .map(|i| format!("{}: {} at `{}`", call.name, i.message, i.pointer))
                    .collect(),
                call,
                status: StepStatus::Invalid,
                issues,
                feedback,
            },
        }
    }
}

fn add(a: Usage, b: Usage) -> Usage {
    Usage::new(
        a.prompt_tokens + b.prompt_tokens,
        a.completion_tokens + b.completion_tokens,
    )
}
