//! A guarded turn: input checkpoint, generation, output checkpoint, with
//! the `warden` object and the audit events of the request.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_agents::agent::{StepRecord, StepStatus};
use warden_audit::{
    Content, DecisionRecord, Direction, EventBody, GuardVerdictRecord, KeyId, MessageRecord,
    NotRunReason, PolicyRef, RequestContext, RequestId, RequestStarted, TenantId, Timings,
    TokenCounts, ToolCallRecord, ToolOutcome, Validation, VerdictResult,
};
use warden_guard::{BackendKind, ChatMessage, Verdict};
use warden_policies::{Checkpoint, EffectivePolicy, RequestScope};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::guarding::{CheckReport, Outcome};
use crate::openai::{ChatCompletionRequest, Message, PolicyInfo, Role, Usage, WardenInfo};
use crate::spans;
use crate::state::AppState;
use crate::stream_check::StreamSessions;

/// A turn's recorded decision; [`Decided::stored`] resolves once it is
/// durable, so an answer sent after it cannot be lost to a crash.
#[must_use = "an answer should leave only once its decision is stored"]
#[derive(Debug)]
pub struct Decided(Result<Option<warden_audit::Durable>, warden_audit::AuditError>);

impl Decided {
    /// Waits until the decision is stored (at once when the turn is not
    /// audited or `audit.durable_answers` is off); a writer that stopped
    /// first is `audit_unavailable`.
    pub async fn stored(self) -> Result<(), ApiError> {
        match self.0 {
            Ok(Some(durable)) => durable.wait().await.map_err(|_| ApiError::AuditUnavailable),
            Ok(None) => Ok(()),
            // The writer stopped: the decision was never handed over.
            Err(_) => Err(ApiError::AuditUnavailable),
        }
    }
}

/// The first validation error of an audited step whose constrained output
/// still failed parsing or validation.
pub const CONSTRAINT_BUG: &str =
    "constrained decoding bug: the grammar let through a call that fails validation";

/// The state of one request's guarded turn.
pub struct Turn {
    state: Arc<AppState>,
    /// The request id.
    pub request_id: String,
    /// The effective policy, fixed for the whole request (shared with the
    /// policy cache when the request adds no categories).
    pub policy: Arc<EffectivePolicy>,
    /// The model or agent the caller named.
    pub model: String,
    /// Audit events handed to the writer (for the hand-off span).
    events: AtomicU32,
    ctx: Option<Arc<RequestContext>>,
    started: Instant,
    /// Every checkpoint run so far.
    pub reports: Vec<CheckReport>,
    guard_time: Duration,
    /// Time spent generating.
    pub generation_time: Duration,
    /// Time to the first streamed byte, when streaming.
    pub first_token: Option<Duration>,
    /// Time spent in tool executors.
    pub tools_time: Duration,
    /// The agent loop's steps, for the `warden` object.
    pub steps: Vec<StepRecord>,
}

/// The categories a request adds through `metadata.warden.extra_categories`.
fn extra_categories(metadata: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let Some(extra) = metadata
        .and_then(|m| m.get("warden"))
        .and_then(|w| w.get("extra_categories"))
    else {
        return Ok(Vec::new());
    };
    match extra {
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::invalid(
                        "metadata.warden.extra_categories",
                        "must be a list of category codes such as [\"S1\"]",
                    )
                })
            })
            .collect(),
        // OpenAI metadata values are strings: accept "S1,S2" too.
        Value::String(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        _ => Err(ApiError::invalid(
            "metadata.warden.extra_categories",
            "must be a list of category codes such as [\"S1\"]",
        )),
    }
}

fn audit_checkpoint(cp: Checkpoint) -> warden_audit::Checkpoint {
    match cp {
        Checkpoint::Input => warden_audit::Checkpoint::Input,
        Checkpoint::Output => warden_audit::Checkpoint::Output,
        Checkpoint::ToolCall => warden_audit::Checkpoint::ToolCall,
        Checkpoint::ToolResult => warden_audit::Checkpoint::ToolResult,
    }
}

fn audit_role(role: Role) -> warden_audit::Role {
    match role {
        Role::System => warden_audit::Role::System,
        Role::Developer => warden_audit::Role::Developer,
        Role::User => warden_audit::Role::User,
        Role::Assistant => warden_audit::Role::Assistant,
        Role::Tool => warden_audit::Role::Tool,
    }
}

/// The guard crate's view of the request's messages; 400 naming the message otherwise.
pub fn guard_messages(messages: &[Message]) -> Result<Vec<ChatMessage>, ApiError> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| plain_guard_message(m).map_or_else(|| decoded_guard_message(i, m), Ok))
        .collect()
}

/// One message through the guard crate's deserialiser.
fn decoded_guard_message(i: usize, m: &Message) -> Result<ChatMessage, ApiError> {
    let v = serde_json::to_value(m).map_err(|e| ApiError::Internal(e.to_string()))?;
    serde_json::from_value(v)
        .map_err(|e| ApiError::invalid(format!("messages[{i}]"), format!("invalid message: {e}")))
}

/// The common case of [`guard_messages`] without the round trip through
/// JSON (run twice per turn): string content and no tool calls. Anything
/// else goes through the guard crate's deserialiser, which decides.
fn plain_guard_message(m: &Message) -> Option<ChatMessage> {
    let Some(Value::String(text)) = &m.content else {
        return None;
    };
    Some(match m.role {
        Role::System | Role::Developer => ChatMessage::system(text.clone()),
        Role::User => ChatMessage::user(text.clone()),
        Role::Assistant if m.tool_calls.is_none() => ChatMessage::assistant(text.clone()),
        Role::Assistant => return None,
        Role::Tool => ChatMessage::Tool {
            content: warden_guard::conversation::Content::Text(text.clone()),
            tool_call_id: m.tool_call_id.clone(),
        },
    })
}

impl Turn {
    /// Resolves the policy for the caller and model and opens the audit record.
    pub fn start(
        state: Arc<AppState>,
        caller: &Caller,
        request_id: String,
        model: &str,
        metadata: Option<&Value>,
        endpoint: warden_audit::Endpoint,
        parameters: impl FnOnce() -> (bool, Value),
    ) -> Result<Self, ApiError> {
        let extras = extra_categories(metadata)?;
        let set = state.policies.current();
        let policy = if extras.is_empty() {
            state
                .policy_cache
                .effective(&set, &caller.tenant, &caller.key_id, model)
        } else {
            let scope = RequestScope::new(&caller.tenant, &caller.key_id, model);
            let policy = set.effective_with_extras(&scope, &extras).map_err(|e| {
                ApiError::invalid("metadata.warden.extra_categories", e.to_string())
            })?;
            Arc::new(policy)
        };
        let ctx = if state.audit.is_some() {
            match (
                RequestId::new(request_id.clone()),
                TenantId::new(caller.tenant.clone()),
                KeyId::new(caller.key_id.clone()),
            ) {
                (Ok(request_id), Ok(tenant), Ok(key_id)) => Some(Arc::new(RequestContext {
                    request_id,
                    tenant,
                    key_id: Some(key_id),
                    model: Some(model.to_owned()),
                    policy: Some(PolicyRef {
                        id: policy.id.clone(),
                        version: policy.version.to_string(),
                    }),
                    trace_id: crate::telemetry::current_trace_id(),
                })),
                _ => {
                    tracing::warn!("request not audited: an id is not valid for the audit log");
                    None
                }
            }
        } else {
            None
        };
        let turn = Self {
            state,
            request_id,
            policy,
            model: model.to_owned(),
            events: AtomicU32::new(0),
            ctx,
            started: Instant::now(),
            reports: Vec::new(),
            guard_time: Duration::ZERO,
            generation_time: Duration::ZERO,
            first_token: None,
            tools_time: Duration::ZERO,
            steps: Vec::new(),
        };
        if turn.ctx.is_some() {
            turn.state.register_policy(&set, &turn.policy);
            let (stream, parameters) = parameters();
            turn.record(EventBody::Request(RequestStarted {
                endpoint,
                stream,
                parameters,
            }));
        }
        Ok(turn)
    }

    fn record(&self, body: EventBody) {
        if let Some(ctx) = &self.ctx {
            self.events.fetch_add(1, Ordering::Relaxed);
            self.state.record(ctx.event(body));
        }
    }

    fn record_decision(
        &self,
        body: EventBody,
    ) -> Result<Option<warden_audit::Durable>, warden_audit::AuditError> {
        let Some(ctx) = self.ctx.as_ref() else {
            return Ok(None);
        };
        self.events.fetch_add(1, Ordering::Relaxed);
        self.state.record_decision(ctx.event(body))
    }

    /// Counts a generator's time to its first streamed token.
    pub fn first_token_at(&self, took: Duration) {
        self.state.metrics.first_token(&self.model, took);
    }

    /// Whether the audit records this request.
    pub fn audited(&self) -> bool {
        self.ctx.is_some()
    }

    fn store_content(&self) -> bool {
        self.policy.store_content.value
    }

    /// Records the caller's messages.
    pub fn record_inputs(&self, messages: &[Message]) {
        if !self.audited() {
            return;
        }
        for (i, m) in messages.iter().enumerate() {
            self.record(EventBody::Message(MessageRecord {
                direction: Direction::Input,
                index: i as u32,
                role: audit_role(m.role),
                name: m.name.clone(),
                content: self.capture(&m.text()),
            }));
        }
    }

    /// Records the answer.
    pub fn record_output(&self, text: &str) {
        self.record(EventBody::Message(MessageRecord {
            direction: Direction::Output,
            index: 0,
            role: warden_audit::Role::Assistant,
            name: None,
            content: self.capture(text),
        }));
    }

    /// Content for the audit: secrets masked, then kept or digested per policy.
    fn capture(&self, text: &str) -> Content {
        Content::capture(&self.state.secrets.mask(text), self.store_content())
    }

    /// Runs one checkpoint and records it.
    pub async fn check(
        &mut self,
        cp: Checkpoint,
        messages: &[ChatMessage],
        judged_text: &str,
    ) -> &CheckReport {
        self.check_with(cp, messages, judged_text, None).await
    }

    /// [`Turn::check`] for a window of a stream: local backends continue
    /// the stream's incremental sessions.
    pub async fn check_window(
        &mut self,
        cp: Checkpoint,
        messages: &[ChatMessage],
        judged_text: &str,
        sessions: &mut StreamSessions,
    ) -> &CheckReport {
        self.check_with(cp, messages, judged_text, Some(sessions))
            .await
    }

    async fn check_with(
        &mut self,
        cp: Checkpoint,
        messages: &[ChatMessage],
        judged_text: &str,
        sessions: Option<&mut StreamSessions>,
    ) -> &CheckReport {
        let started = Instant::now();
        // Not entered around the check (that would enter and leave it on
        // every poll); the backends' spans name it as their parent.
        let span = spans::checkpoint(cp);
        let report = self
            .state
            .guards
            .check(&self.policy, cp, messages, judged_text, sessions, &span)
            .await;
        let spent = started.elapsed();
        self.guard_time += spent;
        if report.outcome != Outcome::NotRun {
            spans::checkpoint_done(&span, &report, spent.as_secs_f64() * 1000.0);
            let cats: Vec<String> = report
                .outcome
                .categories()
                .iter()
                .map(ToString::to_string)
                .collect();
            let errors: Vec<&str> = report
                .verdicts
                .iter()
                .filter(|v| v.result.is_err())
                .map(|v| v.backend.as_str())
                .collect();
            self.state.metrics.checkpoint(
                cp.as_str(),
                report.outcome.word(),
                &cats,
                &errors,
                spent,
            );
        }
        for v in &report.verdicts {
            self.record(EventBody::GuardVerdict(GuardVerdictRecord {
                checkpoint: audit_checkpoint(cp),
                backend: match v.kind {
                    BackendKind::Local => warden_audit::GuardBackend::Local,
                    BackendKind::Remote => warden_audit::GuardBackend::Remote,
                    BackendKind::Rules => warden_audit::GuardBackend::Rules,
                },
                guard_model: v.model.clone(),
                result: match &v.result {
                    Ok(Verdict::Safe) => VerdictResult::Safe,
                    Ok(verdict) => VerdictResult::Unsafe {
                        categories: verdict
                            .categories()
                            .iter()
                            .map(ToString::to_string)
                            .collect(),
                    },
                    Err(e) => VerdictResult::Error { message: e.clone() },
                },
                score: v.score.map(f64::from),
                latency_us: v.latency.as_micros() as u64,
            }));
        }
        self.reports.push(report);
        self.reports.last().expect("just pushed")
    }

    /// The strongest outcome so far and its checkpoint.
    fn deciding(&self) -> Option<&CheckReport> {
        self.reports
            .iter()
            .filter(|r| r.outcome.rank() > 0)
            .max_by_key(|r| r.outcome.rank())
    }

    /// The `warden` object for the response.
    pub fn info(&self) -> WardenInfo {
        let deciding = self.deciding();
        WardenInfo {
            request_id: self.request_id.clone(),
            policy: PolicyInfo {
                id: self.policy.id.clone(),
                version: self.policy.version.to_string(),
            },
            decision: deciding.map_or("allowed", |r| r.outcome.word()),
            checkpoint: deciding.map(|r| r.checkpoint.as_str()),
            categories: deciding_categories(deciding),
            verdicts: self
                .reports
                .iter()
                .flat_map(|r| r.verdicts.iter().map(|v| v.info(r.checkpoint)))
                .collect(),
            steps: self.steps.clone(),
        }
    }

    /// Records the final decision and counts tokens; the answer should wait
    /// for the returned [`Decided`] before it leaves.
    pub fn finish(
        &self,
        http_status: u16,
        finish_reason: Option<&str>,
        usage: Usage,
        error: Option<String>,
    ) -> Decided {
        self.state
            .metrics
            .tokens(&self.model, usage.prompt_tokens, usage.completion_tokens);
        if !self.audited() {
            return Decided(Ok(None));
        }
        // Open until the hand-off returns; never entered, as nothing
        // below makes spans of its own.
        let span = spans::audit_handoff();
        let deciding = self.deciding();
        let decision = if error.is_some() && deciding.is_none_or(|r| !r.outcome.refuses()) {
            warden_audit::Decision::Error
        } else {
            match deciding.map(|r| &r.outcome) {
                None | Some(Outcome::NotRun | Outcome::Allowed) => warden_audit::Decision::Allowed,
                Some(Outcome::Flagged(_) | Outcome::Redacted { .. }) => {
                    warden_audit::Decision::Flagged
                }
                Some(Outcome::Blocked(_) | Outcome::Failed(_)) => warden_audit::Decision::Blocked,
                Some(Outcome::Unguarded(_)) => warden_audit::Decision::Unguarded,
            }
        };
        let reason = error.or_else(|| match deciding.map(|r| &r.outcome) {
            Some(Outcome::Failed(e) | Outcome::Unguarded(e)) => Some(e.clone()),
            _ => None,
        });
        let decision_word = decision.as_str();
        let durable = self.record_decision(EventBody::Decision(DecisionRecord {
            decision,
            checkpoint: deciding.map(|r| audit_checkpoint(r.checkpoint)),
            categories: deciding_categories(deciding),
            reason,
            http_status,
            finish_reason: finish_reason.map(str::to_owned),
            tokens: TokenCounts {
                prompt: usage.prompt_tokens,
                completion: usage.completion_tokens,
            },
            timings: Timings {
                total_us: self.started.elapsed().as_micros() as u64,
                guard_us: self.guard_time.as_micros() as u64,
                generation_us: self.generation_time.as_micros() as u64,
                tools_us: self.tools_time.as_micros() as u64,
                first_token_us: self.first_token.map(|d| d.as_micros() as u64),
            },
        }));
        tracing::record_all!(
            span,
            warden.audit.decision = decision_word,
            warden.audit.events = i64::from(self.events.load(Ordering::Relaxed)),
        );
        Decided(durable)
    }

    /// Records one tool call attempt of the agent loop.
    pub fn record_step(&self, step: &StepRecord) {
        let arguments = step
            .arguments
            .as_ref()
            .map(Value::to_string)
            .or_else(|| step.raw.clone())
            .unwrap_or_default();
        let mask = |t: &str| self.state.secrets.mask(t).into_owned();
        let validation = match step.status {
            StepStatus::ParseError | StepStatus::UnknownTool | StepStatus::Invalid => {
                let mut errors: Vec<String> = if step.errors.is_empty() {
                    step.detail.iter().map(|d| mask(d)).collect()
                } else {
                    step.errors
                        .iter()
                        .map(|i| mask(&format!("{}: {}", i.pointer, i.message)))
                        .collect()
                };
                if step.constraint_bug() {
                    // Audited as what it is: the grammar should have made it impossible.
                    errors.insert(0, CONSTRAINT_BUG.to_owned());
                }
                Validation::Invalid { errors }
            }
            _ => Validation::Valid,
        };
        let not_run = |reason| ToolOutcome::NotRun { reason };
        let outcome = match step.status {
            StepStatus::ParseError | StepStatus::UnknownTool | StepStatus::Invalid => {
                not_run(NotRunReason::InvalidArguments)
            }
            StepStatus::Skipped => not_run(NotRunReason::Skipped),
            StepStatus::NotAllowed => not_run(NotRunReason::NotAllowed),
            StepStatus::Blocked | StepStatus::GuardFailed => not_run(NotRunReason::Blocked),
            StepStatus::Failed => ToolOutcome::Failed {
                error: mask(step.detail.as_deref().unwrap_or_default()),
            },
            StepStatus::Executed | StepStatus::ResultBlocked | StepStatus::ResultGuardFailed => {
                ToolOutcome::Succeeded {
                    result: self.capture(step.result.as_deref().unwrap_or("")),
                }
            }
            StepStatus::ReturnedToClient => ToolOutcome::ReturnedToClient,
        };
        self.record(EventBody::ToolCall(ToolCallRecord {
            call_id: step.call_id.clone(),
            tool: step.tool.clone().unwrap_or_default(),
            attempt: step.attempt,
            arguments: self.capture(&arguments),
            validation,
            outcome,
            latency_us: step.latency_us,
        }));
    }

    /// The refusal text of the policy.
    pub fn refusal_text(&self) -> &str {
        &self.policy.refusal_text.value
    }
}

/// Which checkpoint judges the caller's side of `messages`: the last
/// non-system message decides (a user turn: `input`; a tool result:
/// `tool_result`; an assistant prefill: none).
pub fn input_checkpoint(messages: &[Message]) -> Option<(usize, Checkpoint)> {
    let (i, m) = messages
        .iter()
        .enumerate()
        .rev()
        .find(|(_, m)| !matches!(m.role, Role::System | Role::Developer))?;
    match m.role {
        Role::User => Some((i, Checkpoint::Input)),
        Role::Tool => Some((i, Checkpoint::ToolResult)),
        _ => None,
    }
}

/// Request parameters other than the messages, for the audit.
pub fn audit_parameters(req: &ChatCompletionRequest) -> Value {
    let mut v = serde_json::to_value(req).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.remove("messages");
    }
    v
}

/// The categories of the deciding check, as codes.
fn deciding_categories(deciding: Option<&CheckReport>) -> Vec<String> {
    deciding
        .map(|r| {
            r.outcome
                .categories()
                .iter()
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_read_as_the_guard_crate_reads_them() {
        let messages: Vec<Message> = serde_json::from_value(serde_json::json!([
            {"role": "system", "content": "be nice"},
            {"role": "developer", "content": ""},
            {"role": "user", "content": "hi \u{0} é", "name": "bob"},
            {"role": "assistant", "content": "hello", "refusal": "no"},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
            {"role": "tool", "content": "43"},
        ]))
        .unwrap();
        for (i, m) in messages.iter().enumerate() {
            let plain = plain_guard_message(m).expect("plain");
            assert_eq!(plain, decoded_guard_message(i, m).unwrap(), "{i}");
        }
        // Everything else is left to the deserialiser.
        let others: Vec<Message> = serde_json::from_value(serde_json::json!([
            {"role": "user", "content": [{"type": "text", "text": "a"}]},
            {"role": "user"},
            {"role": "assistant", "content": "x", "tool_calls": []},
            {"role": "assistant", "content": null},
        ]))
        .unwrap();
        for m in &others {
            assert!(plain_guard_message(m).is_none(), "{m:?}");
        }
    }
}
