//! Running checked calls: the executor interface and Warden's executors.

pub mod builtin;
pub(crate) mod calc;
pub mod http;
pub mod resolve;

use futures_util::future::BoxFuture;

use super::error::ExecError;
use super::validate::ValidCall;

/// Runs calls of one tool. Takes a [`ValidCall`], so it only ever sees
/// arguments that match the tool's schema.
pub trait Executor: Send + Sync {
    /// Runs one call.
    fn execute<'a>(&'a self, call: &'a ValidCall) -> BoxFuture<'a, Result<ToolOutput, ExecError>>;
}

/// What a tool returned, as the model will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    /// JSON text or plain text.
    pub content: String,
}

impl ToolOutput {
    /// An output with this content.
    pub fn new(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
        }
    }
}
