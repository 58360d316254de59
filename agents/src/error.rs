//! What can go wrong while generating.

use std::time::Duration;

/// A generator failure; the gateway maps each to an HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GenerateError {
    /// The local engine's queue is full.
    #[error("the model `{model}` is busy; retry after {} s", retry_after.as_secs())]
    Overloaded {
        /// The model.
        model: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The conversation cannot be rendered for this model.
    #[error("{message}")]
    InvalidRequest {
        /// The request field at fault.
        param: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A schema the output must follow uses a feature constrained decoding
    /// does not implement.
    #[error("{param}: unsupported JSON Schema feature `{feature}`")]
    UnsupportedSchema {
        /// The request field holding the schema.
        param: &'static str,
        /// The refused keyword (or `format: <name>`).
        feature: String,
    },
    /// A constrained output was not complete when `max_tokens` ran out; the
    /// partial output is not returned as if it were valid.
    #[error("the output did not complete the required format within max_tokens = {max_tokens}")]
    Unfinished {
        /// The limit that was reached.
        max_tokens: usize,
    },
    /// The upstream could not be reached, answered an error or sent garbage.
    #[error("{0}")]
    BadGateway(String),
    /// The upstream did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The engine failed.
    #[error("{0}")]
    Internal(String),
}
