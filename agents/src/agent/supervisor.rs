//! What the loop asks of its caller: guard verdicts and audit records.

use std::future::Future;

use serde_json::Value;

use super::step::StepRecord;
use crate::tools::ToolCall;

/// A checkpoint's answer, already interpreted by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Go on (allowed, flagged, or not checked).
    Pass,
    /// The guard refused it.
    Block,
    /// The guard could not decide and the policy fails closed.
    Fail(String),
}

/// The gateway's side of the loop: it guards calls and results by the
/// request's policy and writes the audit trail.
pub trait Supervisor: Send {
    /// Whether the policy lets `tool` be called at all.
    fn allows(&self, tool: &str) -> bool;

    /// The `tool_call` checkpoint on a valid call; `conversation` ends with
    /// the assistant message holding it.
    fn check_call(
        &mut self,
        conversation: &[Value],
        call: &ToolCall,
    ) -> impl Future<Output = Gate> + Send;

    /// The `tool_result` checkpoint; `conversation` ends with the tool message.
    fn check_result(
        &mut self,
        conversation: &[Value],
        call: &ToolCall,
        result: &str,
    ) -> impl Future<Output = Gate> + Send;

    /// Called once per step as it ends.
    fn record(&mut self, step: &StepRecord);
}
