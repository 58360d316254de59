//! What the gateway records: a request context and the typed event bodies.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use uuid::Uuid;

use crate::ids::{KeyId, PolicyRef, RequestId, TenantId};

/// Facts shared by every event of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestContext {
    /// The request id (`x-request-id`).
    pub request_id: RequestId,
    /// The caller's tenant.
    pub tenant: TenantId,
    /// The API key used, by id (never the secret).
    pub key_id: Option<KeyId>,
    /// The model or agent the request named.
    pub model: Option<String>,
    /// The policy that judged the request.
    pub policy: Option<PolicyRef>,
    /// The OpenTelemetry trace id, if traced.
    pub trace_id: Option<String>,
}

impl RequestContext {
    /// Builds an event of this request, stamped now with a fresh id.
    pub fn event(self: &Arc<Self>, body: EventBody) -> AuditEvent {
        AuditEvent {
            event_id: Uuid::now_v7(),
            occurred_at: Utc::now().trunc_subsecs(6),
            context: Arc::clone(self),
            body,
        }
    }
}

/// One thing that happened during a request, as handed to the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// When it happened (microsecond precision, as PostgreSQL stores it).
    pub occurred_at: DateTime<Utc>,
    /// The request it belongs to.
    pub context: Arc<RequestContext>,
    /// What happened.
    pub body: EventBody,
}

/// The kinds of events, as stored in the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A request arrived.
    Request,
    /// A message in or out.
    Message,
    /// A guard checkpoint's verdict.
    GuardVerdict,
    /// A tool call the model made.
    ToolCall,
    /// The final decision with token counts and timings.
    Decision,
}

impl EventKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Request => "request",
            EventKind::Message => "message",
            EventKind::GuardVerdict => "guard_verdict",
            EventKind::ToolCall => "tool_call",
            EventKind::Decision => "decision",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        parse_name(s)
    }
}

/// Parses a snake_case name through the type's serde representation.
fn parse_name<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

/// What happened, by kind. Serialised with a `type` tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A request arrived.
    Request(RequestStarted),
    /// A message in or out.
    Message(MessageRecord),
    /// A guard checkpoint's verdict.
    GuardVerdict(GuardVerdictRecord),
    /// A tool call the model made.
    ToolCall(ToolCallRecord),
    /// The final decision with token counts and timings.
    Decision(DecisionRecord),
}

impl EventBody {
    /// The kind of this body.
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Request(_) => EventKind::Request,
            EventBody::Message(_) => EventKind::Message,
            EventBody::GuardVerdict(_) => EventKind::GuardVerdict,
            EventBody::ToolCall(_) => EventKind::ToolCall,
            EventBody::Decision(_) => EventKind::Decision,
        }
    }

    /// The values the indexed columns hold for this body.
    pub fn index_fields(&self) -> IndexFields {
        match self {
            EventBody::GuardVerdict(v) => IndexFields {
                kind: EventKind::GuardVerdict,
                checkpoint: Some(v.checkpoint),
                decision: None,
                categories: match &v.result {
                    VerdictResult::Unsafe { categories } => categories.clone(),
                    VerdictResult::Safe | VerdictResult::Error { .. } => Vec::new(),
                },
            },
            EventBody::Decision(d) => IndexFields {
                kind: EventKind::Decision,
                checkpoint: d.checkpoint,
                decision: Some(d.decision),
                categories: d.categories.clone(),
            },
            other => IndexFields {
                kind: other.kind(),
                checkpoint: None,
                decision: None,
                categories: Vec::new(),
            },
        }
    }
}

/// The indexed columns derived from an event body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFields {
    /// Event kind.
    pub kind: EventKind,
    /// Guard checkpoint (verdicts; decisions taken at a checkpoint).
    pub checkpoint: Option<Checkpoint>,
    /// Final decision (decision events only).
    pub decision: Option<Decision>,
    /// Violated categories (unsafe verdicts, decisions).
    pub categories: Vec<String>,
}

/// Which API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/moderations`.
    Moderations,
}

/// A request arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestStarted {
    /// Which API.
    pub endpoint: Endpoint,
    /// Whether the caller asked for a stream.
    pub stream: bool,
    /// Request parameters other than the messages (temperature, max_tokens, tools, …).
    pub parameters: serde_json::Value,
}

/// Whether a message went into the model or came out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the caller (or a tool result fed to the model).
    Input,
    /// From the model to the caller.
    Output,
}

/// Chat roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// System prompt.
    System,
    /// Developer prompt (OpenAI's newer name for system).
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

/// Text as stored: the text and its SHA-256, or only the SHA-256 when the
/// policy says `store_content: false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stored", rename_all = "snake_case")]
pub enum Content {
    /// Text kept in full.
    Text {
        /// The text.
        text: String,
        /// Lower-case hex SHA-256 of the UTF-8 text.
        sha256: String,
    },
    /// Only the digest was kept.
    HashOnly {
        /// Lower-case hex SHA-256 of the UTF-8 text.
        sha256: String,
    },
}

impl Content {
    /// Captures `text` in full (`store_content = true`) or as its digest only.
    pub fn capture(text: &str, store_content: bool) -> Self {
        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        if store_content {
            Content::Text {
                text: text.to_owned(),
                sha256,
            }
        } else {
            Content::HashOnly { sha256 }
        }
    }

    /// The lower-case hex SHA-256 of the text.
    pub fn sha256(&self) -> &str {
        match self {
            Content::Text { sha256, .. } | Content::HashOnly { sha256 } => sha256,
        }
    }

    /// The text, when it was stored.
    pub fn text(&self) -> Option<&str> {
        match self {
            Content::Text { text, .. } => Some(text),
            Content::HashOnly { .. } => None,
        }
    }
}

/// A message in or out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Into or out of the model.
    pub direction: Direction,
    /// Position in the conversation (inputs) or choice index (outputs).
    pub index: u32,
    /// Chat role.
    pub role: Role,
    /// Optional participant or tool name.
    pub name: Option<String>,
    /// The content or its digest.
    pub content: Content,
}

/// The guard checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoint {
    /// The caller's last user turn.
    Input,
    /// The model's answer.
    Output,
    /// A tool call before it runs.
    ToolCall,
    /// A tool's result before the model sees it.
    ToolResult,
}

impl Checkpoint {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Checkpoint::Input => "input",
            Checkpoint::Output => "output",
            Checkpoint::ToolCall => "tool_call",
            Checkpoint::ToolResult => "tool_result",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        parse_name(s)
    }
}

/// The guard backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardBackend {
    /// A local model through warden-inference.
    Local,
    /// An OpenAI-compatible server.
    Remote,
    /// Deterministic rules.
    Rules,
}

/// What a guard said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum VerdictResult {
    /// Safe.
    Safe,
    /// Unsafe, with the violated category codes.
    Unsafe {
        /// Category codes (`S1` … `S14` or custom names).
        categories: Vec<String>,
    },
    /// The guard failed (timeout, crash, unparseable output).
    Error {
        /// What failed.
        message: String,
    },
}

/// A guard checkpoint's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardVerdictRecord {
    /// Which checkpoint.
    pub checkpoint: Checkpoint,
    /// Which backend judged.
    pub backend: GuardBackend,
    /// The guard model (for model backends).
    pub guard_model: Option<String>,
    /// The verdict.
    pub result: VerdictResult,
    /// Probability of `unsafe`, when the backend computes one.
    pub score: Option<f64>,
    /// Time the check took, in microseconds.
    pub latency_us: u64,
}

/// Result of validating a tool call's arguments against its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Validation {
    /// The arguments matched the schema.
    Valid,
    /// They did not.
    Invalid {
        /// The validation errors.
        errors: Vec<String>,
    },
}

/// Why a tool call did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotRunReason {
    /// Its arguments failed validation.
    InvalidArguments,
    /// The `tool_call` guard blocked it.
    Blocked,
    /// The policy does not allow this tool.
    NotAllowed,
    /// The agent's step limit was reached.
    StepLimit,
    /// Valid, but not run because of the rest of its step: another call of
    /// the step was refused, or the step's calls went to the client.
    Skipped,
}

/// What happened to a tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ToolOutcome {
    /// It never reached an executor.
    NotRun {
        /// Why.
        reason: NotRunReason,
    },
    /// The executor returned a result.
    Succeeded {
        /// The result or its digest.
        result: Content,
    },
    /// The executor failed.
    Failed {
        /// The error.
        error: String,
    },
    /// It was handed back to the caller as OpenAI `tool_calls`.
    ReturnedToClient,
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// The call id, when the model gave one.
    pub call_id: Option<String>,
    /// The tool's name.
    pub tool: String,
    /// 1 for the first try, higher for retries after validation errors.
    pub attempt: u32,
    /// The arguments (JSON text) or their digest.
    pub arguments: Content,
    /// Schema validation.
    pub validation: Validation,
    /// Executor outcome.
    pub outcome: ToolOutcome,
    /// Executor latency in microseconds, if it ran.
    pub latency_us: Option<u64>,
}

/// Final decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Served, nothing flagged.
    Allowed,
    /// Served, with a flag recorded.
    Flagged,
    /// Refused by a guard.
    Blocked,
    /// Served without a guard (the guard failed and the policy fails open).
    Unguarded,
    /// The request failed.
    Error,
}

impl Decision {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Flagged => "flagged",
            Decision::Blocked => "blocked",
            Decision::Unguarded => "unguarded",
            Decision::Error => "error",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        parse_name(s)
    }
}

/// Token counts of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenCounts {
    /// Prompt tokens.
    pub prompt: u32,
    /// Completion tokens.
    pub completion: u32,
}

/// Where a request's time went, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Whole request.
    pub total_us: u64,
    /// All guard checks.
    pub guard_us: u64,
    /// Generation.
    pub generation_us: u64,
    /// Tool execution.
    pub tools_us: u64,
    /// Time to the first streamed token, when streaming.
    pub first_token_us: Option<u64>,
}

/// The final decision with token counts and timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The decision.
    pub decision: Decision,
    /// The checkpoint that decided it (blocked or flagged), if any.
    pub checkpoint: Option<Checkpoint>,
    /// Categories behind the decision.
    pub categories: Vec<String>,
    /// Free-text reason (error message, refusal reason).
    pub reason: Option<String>,
    /// HTTP status returned.
    pub http_status: u16,
    /// OpenAI `finish_reason`, if a completion was returned.
    pub finish_reason: Option<String>,
    /// Token counts.
    pub tokens: TokenCounts,
    /// Timings.
    pub timings: Timings,
}

/// A policy document, stored once per (id, version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyText {
    /// Id and version.
    pub policy: PolicyRef,
    /// The document as loaded.
    pub body: String,
}
