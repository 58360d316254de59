//! The request a generator answers and the values it returns.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use warden_inference::Constraint;

/// A chat request as the caller sent it (already validated by the gateway).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    body: Map<String, Value>,
}

impl ChatRequest {
    /// Wraps an OpenAI-shaped request body (`messages`, `tools`, ...).
    pub fn new(body: Map<String, Value>) -> Self {
        Self { body }
    }

    /// The conversation as OpenAI message objects.
    pub fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The tool definitions, when given.
    pub fn tools(&self) -> Option<&Vec<Value>> {
        self.body.get("tools").and_then(Value::as_array)
    }

    /// The whole body, forwarded to upstreams with Warden's changes.
    pub fn body(&self) -> &Map<String, Value> {
        &self.body
    }
}

/// Sampling and length settings of one request, already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GenParams {
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Temperature (`None`: the generator's default).
    pub temperature: Option<f32>,
    /// Nucleus threshold.
    pub top_p: Option<f32>,
    /// Seed.
    pub seed: Option<i64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Constrained decoding of a local model's output (the agent loop sets
    /// it for tool calls); upstream generators ignore it.
    pub constraint: Option<Constraint>,
}

/// Token usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

impl Usage {
    /// Usage from the two counts.
    pub fn new(prompt: u32, completion: u32) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The text.
    pub content: Option<String>,
    /// Tool calls (upstream models).
    pub tool_calls: Option<Vec<Value>>,
    /// `stop`, `length`, `tool_calls`, ...
    pub finish_reason: String,
    /// Token counts.
    pub usage: Usage,
    /// The upstream's own response, passed through with Warden's changes.
    pub raw: Option<RawAnswer>,
}

/// An upstream's answer as it came over the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct RawAnswer {
    /// The response body (a JSON object).
    pub body: bytes::Bytes,
    /// What the body's first choice says, when the body can go out as it
    /// is with only a `warden` member added: its `content` (a string or
    /// null), `tool_calls` (absent or a list) and `finish_reason` (a string)
    /// are present in exactly the form Warden writes them, and it has no
    /// `warden` member. `None` when the body has to be rewritten anyway.
    pub sent: Option<SentChoice>,
}

/// The first choice of an upstream's answer, as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SentChoice {
    /// `message.content`.
    pub content: Option<String>,
    /// `message.tool_calls`.
    pub tool_calls: Option<Vec<Value>>,
    /// `finish_reason`.
    pub finish_reason: String,
}

/// One piece of a streamed answer: the SSE `data:` payload to send and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamItem {
    /// The chunk as JSON text (an upstream's own bytes, or ours).
    pub payload: String,
    /// The text this chunk adds to the answer.
    pub text: String,
    /// Whether it carries a model token (counted for windows).
    pub is_content: bool,
    /// Set on the chunk that ends the choice.
    pub finish_reason: Option<String>,
    /// Usage, when the chunk reports it.
    pub usage: Option<Usage>,
}

/// The fields every chunk the gateway writes shares.
#[derive(Debug, Clone)]
pub struct ChunkHeader {
    /// `chatcmpl-...`.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    /// The model name the caller used.
    pub model: String,
}

/// The text of a message's `content`: a string, or the text parts of an
/// array joined by newlines.
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}
