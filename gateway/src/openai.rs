//! The OpenAI-compatible request and response types (and their OpenAPI schemas).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use warden_agents::agent::StepRecord;

/// `POST /v1/chat/completions` body. Unknown fields are refused so a typo
/// (`max_token`) is an error rather than silently ignored.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    /// A configured model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tool definitions (passed to the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Vec<Value>>,
    /// `none`, `auto`, `required` or a named tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<Value>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Stream options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Most tokens to generate (older name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Most tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature (0-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling (0-1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Seed for reproducible sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop sequences: a string or up to 4 strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// End-user id, recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Free-form metadata; `metadata.warden.extra_categories` adds guard categories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Number of choices; only 1 is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Passed to upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Passed to upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}`,
    /// `{"type": "json_object"}` or `{"type": "text"}`. Local models are
    /// constrained to it while generating (a schema feature they cannot
    /// enforce is a 400 naming it); upstreams get it unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ResponseFormat>)]
    pub response_format: Option<Value>,
    /// Passed to upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Passed to upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// Passed to upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Passed to upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub logit_bias: Option<Value>,
}

/// `response_format` (documentation of the accepted shapes; the request
/// keeps the caller's value as sent so upstreams get it unchanged).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: ResponseFormatKind,
    /// With `json_schema`: the schema the answer must be valid against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaFormat>,
}

/// The kinds of `response_format`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormatKind {
    /// Free text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against `json_schema.schema`.
    JsonSchema,
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct JsonSchemaFormat {
    /// A name for the format.
    pub name: String,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// OpenAI's strict mode; local models are always strict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with token usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    /// One sequence.
    One(String),
    /// Several sequences.
    Many(Vec<String>),
}

impl Stop {
    /// The sequences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// A chat role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// Instructions (OpenAI's newer name).
    Developer,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

/// One message of the conversation.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// A string or a list of content parts (`{"type":"text","text":...}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub content: Option<Value>,
    /// Participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<Vec<Value>>,
    /// Which call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// An assistant's refusal text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

impl Message {
    /// The text of the content: the string, or the text parts joined by `\n`.
    pub fn text(&self) -> String {
        content_text(self.content.as_ref())
    }
}

pub use warden_agents::{content_text, Usage};

/// A non-streamed answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// The model.
    pub model: String,
    /// One choice.
    pub choices: Vec<Choice>,
    /// Token usage.
    pub usage: Usage,
    /// Guard verdicts and the policy that judged.
    pub warden: WardenInfo,
}

/// One choice of an answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Choice {
    /// Always 0.
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// `stop`, `length`, `tool_calls` or `content_filter`.
    pub finish_reason: String,
    /// Not supported: always null.
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<Value>,
}

/// The assistant's answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: Role,
    /// The text.
    pub content: Option<String>,
    /// Tool calls the model made.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<Vec<Value>>,
}

/// One streamed chunk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatCompletionChunk {
    /// The same id on every chunk.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// The model.
    pub model: String,
    /// One choice (empty in the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// Usage, in the last chunk when `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Guard verdicts, on the chunk that carries `finish_reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warden: Option<WardenInfo>,
}

/// The choice of a chunk.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// What is new.
    pub delta: ChunkDelta,
    /// Set on the last content chunk.
    pub finish_reason: Option<String>,
    /// Not supported: always null.
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<Value>,
}

/// The new part of the answer.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ChunkDelta {
    /// `assistant` on the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<Vec<Value>>,
}

/// What Warden's guards said about a request; on every chat response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WardenInfo {
    /// The request id (also the `x-request-id` header).
    pub request_id: String,
    /// The effective policy.
    pub policy: PolicyInfo,
    /// The outcome: `allowed`, `flagged`, `redacted`, `blocked` or `unguarded`.
    pub decision: &'static str,
    /// The checkpoint that blocked or flagged, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<&'static str>,
    /// Categories behind the decision.
    pub categories: Vec<String>,
    /// Every verdict, in order.
    pub verdicts: Vec<VerdictInfo>,
    /// The agent loop's tool calls, in order (tool turns only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<StepRecord>,
}

/// The policy that judged.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyInfo {
    /// Effective policy id (member ids joined by `+`).
    pub id: String,
    /// Its version.
    pub version: String,
}

/// One backend's verdict at one checkpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerdictInfo {
    /// `input`, `output`, ...
    pub checkpoint: &'static str,
    /// The backend's configured name (`rules` for the rules).
    pub backend: String,
    /// `local`, `remote` or `rules`.
    pub kind: &'static str,
    /// The guard model, for model backends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `safe`, `unsafe` or `error`.
    pub verdict: &'static str,
    /// Violated category codes.
    pub categories: Vec<String>,
    /// P(unsafe), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// What the policy did: `block`, `flag` or `redact`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    /// Milliseconds the backend took.
    pub latency_ms: f64,
    /// Why the backend gave no verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The models.
    pub data: Vec<ModelInfo>,
}

/// One model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelInfo {
    /// The name to use in `model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds (gateway start).
    pub created: i64,
    /// `warden-local` or `warden-upstream`.
    pub owned_by: &'static str,
}

/// `POST /v1/moderations` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModerationRequest {
    /// A text or a list of texts.
    pub input: ModerationInput,
    /// Ignored beyond selecting model-scoped policies.
    #[serde(default)]
    pub model: Option<String>,
}

/// Moderation input.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ModerationInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
}

/// `POST /v1/moderations` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModerationResponse {
    /// `modr-...`.
    pub id: String,
    /// The guard backends that judged, joined by `+`.
    pub model: String,
    /// One result per input.
    pub results: Vec<ModerationResult>,
}

/// One moderation result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModerationResult {
    /// Whether any category was violated.
    pub flagged: bool,
    /// OpenAI's categories.
    #[schema(value_type = Object)]
    pub categories: serde_json::Map<String, Value>,
    /// OpenAI's category scores.
    #[schema(value_type = Object)]
    pub category_scores: serde_json::Map<String, Value>,
    /// The Llama Guard codes with their names.
    pub llama_guard: LlamaGuardResult,
}

/// The Llama Guard view of a moderation result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LlamaGuardResult {
    /// `safe`, `unsafe` or `error`.
    pub verdict: &'static str,
    /// Violated codes, e.g. `S1`.
    pub categories: Vec<String>,
    /// Code to name.
    #[schema(value_type = Object)]
    pub category_names: serde_json::Map<String, Value>,
    /// Every backend's verdict.
    pub verdicts: Vec<VerdictInfo>,
}
