//! What each step of the loop did, for the response's `warden.steps` and the audit.

use serde::Serialize;
use serde_json::Value;

use crate::tools::ValidationIssue;

/// What became of one tool call (or of an output that failed to parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The output looked like a call but could not be parsed.
    ParseError,
    /// The model named a tool it does not have.
    UnknownTool,
    /// The arguments failed schema validation.
    Invalid,
    /// The policy does not allow the tool.
    NotAllowed,
    /// Valid, but another call of the same step was not, so none ran.
    Skipped,
    /// The `tool_call` guard refused it.
    Blocked,
    /// The `tool_call` guard failed and the policy fails closed.
    GuardFailed,
    /// Ran and returned a result the model saw.
    Executed,
    /// Ran and failed; the error went back to the model.
    Failed,
    /// Ran, but the `tool_result` guard refused the result: the model saw a notice.
    ResultBlocked,
    /// Ran, but the `tool_result` guard failed (fail closed).
    ResultGuardFailed,
    /// Handed to the caller as OpenAI `tool_calls`.
    ReturnedToClient,
}

/// One tool call attempt (or unparsable output) within the loop.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// Which generation of the turn produced it (1-based).
    pub step: u32,
    /// 1 for the first try, higher after validation feedback.
    pub attempt: u32,
    /// The call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// The tool's name, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The arguments as the model gave them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// What happened.
    pub status: StepStatus,
    /// Validation errors with their JSON pointers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ValidationIssue>,
    /// A parse or executor error, or the model's raw text for a parse error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The result the tool returned (before the result guard).
    #[serde(skip)]
    pub result: Option<String>,
    /// The model's output, for a parse error (audited as content, not shown).
    #[serde(skip)]
    pub raw: Option<String>,
    /// Executor time in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// The output was generated under a grammar of the tools' schemas.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub constrained: bool,
}

impl StepRecord {
    /// A record for `step`/`attempt` with nothing else set.
    pub(crate) fn new(step: u32, attempt: u32, status: StepStatus) -> Self {
        Self {
            step,
            attempt,
            call_id: None,
            tool: None,
            arguments: None,
            status,
            errors: Vec::new(),
            detail: None,
            result: None,
            raw: None,
            latency_us: None,
            constrained: false,
        }
    }

    /// A constrained output that still failed parsing or validation: the
    /// grammar let through what it should have made impossible (a bug).
    pub fn constraint_bug(&self) -> bool {
        self.constrained
            && matches!(
                self.status,
                StepStatus::ParseError | StepStatus::UnknownTool | StepStatus::Invalid
            )
    }
}
