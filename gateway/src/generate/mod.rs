//! Generators: the local engine and upstream OpenAI-compatible servers,
//! behind one interface that yields streamed chunks.

pub mod local;
pub mod upstream;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::openai::{ChatCompletionRequest, Usage};

pub use local::LocalGenerator;
pub use upstream::UpstreamGenerator;

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
    pub raw: Option<Value>,
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

/// What a stream receiver gets.
#[derive(Debug)]
pub enum StreamEvent {
    /// A chunk.
    Item(StreamItem),
    /// The generator failed mid-stream.
    Failed(ApiError),
}

/// A configured generator.
pub enum Generator {
    /// In-process model.
    Local(LocalGenerator),
    /// OpenAI-compatible server.
    Upstream(UpstreamGenerator),
}

impl Generator {
    /// `owned_by` in `/v1/models`.
    pub fn owner(&self) -> &'static str {
        match self {
            Self::Local(_) => "warden-local",
            Self::Upstream(_) => "warden-upstream",
        }
    }

    /// Generates a whole answer.
    pub async fn complete(
        &self,
        req: &ChatCompletionRequest,
        params: &GenParams,
    ) -> Result<Generated, ApiError> {
        match self {
            Self::Local(g) => g.complete(req, params).await,
            Self::Upstream(g) => g.complete(req, params).await,
        }
    }

    /// Starts a streamed answer; dropping the receiver cancels the work.
    /// `id`, `created` and `model` go into chunks the gateway writes itself.
    pub async fn stream(
        &self,
        req: &ChatCompletionRequest,
        params: &GenParams,
        chunk: ChunkHeader,
    ) -> Result<mpsc::Receiver<StreamEvent>, ApiError> {
        match self {
            Self::Local(g) => g.stream(req, params, chunk).await,
            Self::Upstream(g) => g.stream(req, params).await,
        }
    }
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
