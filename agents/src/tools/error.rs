//! What can go wrong when loading tools and when running them.

/// A tool definition that cannot be loaded; the message names the tool.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    /// The name is empty, too long or has characters models cannot write.
    #[error("tool `{tool}`: invalid name: {reason}")]
    InvalidName {
        /// The tool.
        tool: String,
        /// What is wrong.
        reason: String,
    },
    /// Two tools share a name.
    #[error("tool `{tool}` is defined twice")]
    Duplicate {
        /// The tool.
        tool: String,
    },
    /// `parameters` is not a valid JSON Schema.
    #[error("tool `{tool}`: its parameters are not a valid JSON Schema: {reason}")]
    InvalidSchema {
        /// The tool.
        tool: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP executor's settings are unusable.
    #[error("tool `{tool}`: invalid http executor: {reason}")]
    InvalidHttp {
        /// The tool.
        tool: String,
        /// What is wrong.
        reason: String,
    },
    /// A request's `tools` entry is not a function definition.
    #[error("tool `{tool}`: invalid definition: {reason}")]
    InvalidDefinition {
        /// The tool's name, or `#index` when it has none.
        tool: String,
        /// What is wrong.
        reason: String,
    },
    /// An executor was given for a tool the set does not have.
    #[error("tool `{tool}` is not in the tool set")]
    UnknownTool {
        /// The tool.
        tool: String,
    },
}

/// A tool call that ran and failed, or was refused before it ran.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// The call was refused before any connection (address, host or redirect rules).
    #[error("the tool call was refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },
    /// The tool did not answer in time.
    #[error("the tool did not answer in time")]
    Timeout,
    /// The tool's response is larger than allowed.
    #[error("the tool's response is larger than allowed")]
    TooLarge,
    /// The tool answered with a content type that is neither JSON nor text.
    #[error("the tool answered with content type `{0}`, which is neither JSON nor text")]
    BadContentType(String),
    /// The tool answered with a non-success HTTP status.
    #[error("the tool answered with HTTP status {0}")]
    Status(u16),
    /// The tool could not be reached.
    #[error("the tool could not be reached: {0}")]
    Transport(String),
    /// A built-in tool rejected its input.
    #[error("{0}")]
    Builtin(String),
    /// The tool is run by the caller, not by Warden.
    #[error("the tool is run by the client, not by Warden")]
    ClientTool,
}
