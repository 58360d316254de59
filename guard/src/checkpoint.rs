//! The points in a request's life where the guard judges something.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::prompt::GuardRole;

/// What is being judged, which decides the guard role of the judged turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoint {
    /// The last user message, before the model sees it.
    Input,
    /// The model's answer, before the client sees it.
    Output,
    /// A tool call the model wants to make, before it runs.
    ToolCall,
    /// A tool's result, before the model sees it (untrusted input).
    ToolResult,
}

impl Checkpoint {
    /// The name used in policies and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
            Self::ToolCall => "tool_call",
            Self::ToolResult => "tool_result",
        }
    }

    /// The guard role of the judged turn at this checkpoint.
    pub fn judged_role(self) -> GuardRole {
        match self {
            Self::Input | Self::ToolResult => GuardRole::User,
            Self::Output | Self::ToolCall => GuardRole::Agent,
        }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
