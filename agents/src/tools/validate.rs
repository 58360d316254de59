//! Checking calls against their tool's JSON Schema, and what a check
//! answers: a call that may run, or why it may not.

use serde::Serialize;
use serde_json::Value;

use super::call::ToolCall;

/// A call whose tool exists and whose arguments match its schema. Only
/// [`ToolSet::validate`](super::ToolSet::validate) makes one, so an invalid
/// call cannot reach an executor.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCall {
    call: ToolCall,
    /// The set that checked it; another set re-checks before running it.
    pub(crate) set_id: u64,
}

impl ValidCall {
    pub(crate) fn new(call: ToolCall, set_id: u64) -> Self {
        Self { call, set_id }
    }

    /// The call.
    pub fn call(&self) -> &ToolCall {
        &self.call
    }

    /// The call, giving up the proof of validity.
    pub fn into_call(self) -> ToolCall {
        self.call
    }
}

/// One way the arguments break the schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationIssue {
    /// JSON pointer into the arguments (`""` for the arguments object itself).
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

/// A call that may not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    /// No tool of that name.
    #[error("unknown tool `{}`", call.name)]
    UnknownTool {
        /// The call.
        call: ToolCall,
    },
    /// The arguments do not match the schema.
    #[error("invalid arguments for `{}` ({} issue(s))", call.name, issues.len())]
    Invalid {
        /// The call.
        call: ToolCall,
        /// Every issue found (not just the first).
        issues: Vec<ValidationIssue>,
    },
}

impl Rejected {
    /// The rejected call.
    pub fn call(&self) -> &ToolCall {
        match self {
            Self::UnknownTool { call } | Self::Invalid { call, .. } => call,
        }
    }

    /// A short text for the model saying what to fix, every issue with its
    /// pointer.
    pub fn feedback(&self) -> String {
        match self {
            Self::UnknownTool { call } => format!(
                "There is no tool named `{}`. Call only the tools you were given.",
                call.name
            ),
            Self::Invalid { call, issues } => {
                let mut text = format!(
                    "The arguments of your call to `{}` do not match its schema:",
                    call.name
                );
                for issue in issues {
                    let at = if issue.pointer.is_empty() {
                        "(arguments)"
                    } else {
                        &issue.pointer
                    };
                    text.push_str(&format!("\n- at {at}: {}", issue.message));
                }
                text.push_str("\nFix these and call the tool again.");
                text
            }
        }
    }
}

/// Compiles a tool's schema once. `jsonschema` checks the schema against
/// its meta-schema while building, so a non-schema is refused here.
pub(crate) fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    if !schema.is_object() {
        return Err("the schema must be a JSON object".into());
    }
    // The pointer locates the fault in the schema (the meta-schema's instance).
    jsonschema::options().build(schema).map_err(|e| {
        let at = e.instance_path().as_str();
        if at.is_empty() {
            e.to_string()
        } else {
            format!("{e} (at {at})")
        }
    })
}

/// Every issue of `arguments` under `validator`, in the validator's order.
pub(crate) fn issues(validator: &jsonschema::Validator, arguments: &Value) -> Vec<ValidationIssue> {
    let mut issues: Vec<ValidationIssue> = Vec::new();
    for error in validator.iter_errors(arguments) {
        let issue = ValidationIssue {
            pointer: error.instance_path().as_str().to_owned(),
            message: error.to_string(),
        };
        if !issues.contains(&issue) {
            issues.push(issue);
        }
    }
    issues
}
