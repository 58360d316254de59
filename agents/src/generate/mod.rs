//! Generators: the local engine and upstream OpenAI-compatible servers,
//! behind one interface that yields streamed chunks.

pub mod local;
pub mod upstream;

use tokio::sync::mpsc;
use warden_inference::Constraint;

use crate::chat::{ChatRequest, ChunkHeader, GenParams, Generated, StreamItem};
use crate::error::GenerateError;

pub use local::LocalGenerator;
pub use upstream::UpstreamGenerator;

/// What a stream receiver gets.
#[derive(Debug)]
pub enum StreamEvent {
    /// A chunk.
    Item(StreamItem),
    /// The generator failed mid-stream.
    Failed(GenerateError),
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

    /// Whether this generator applies `constraint` to its output: local
    /// models whose grammar compiler accepts the schemas; never upstreams.
    pub fn can_constrain(&self, constraint: &Constraint) -> bool {
        match self {
            Self::Local(g) => g.can_constrain(constraint).is_ok(),
            Self::Upstream(_) => false,
        }
    }

    /// Generates a whole answer.
    pub async fn complete(
        &self,
        req: &ChatRequest,
        params: &GenParams,
    ) -> Result<Generated, GenerateError> {
        match self {
            Self::Local(g) => g.complete(req, params).await,
            Self::Upstream(g) => g.complete(req, params).await,
        }
    }

    /// Starts a streamed answer; dropping the receiver cancels the work.
    /// `id`, `created` and `model` go into chunks the gateway writes itself.
    pub async fn stream(
        &self,
        req: &ChatRequest,
        params: &GenParams,
        chunk: ChunkHeader,
    ) -> Result<mpsc::Receiver<StreamEvent>, GenerateError> {
        match self {
            Self::Local(g) => g.stream(req, params, chunk).await,
            Self::Upstream(g) => g.stream(req, params).await,
        }
    }
}
