//! Constrained decoding: a grammar (a JSON Schema, a tool-call envelope, or
//! free text that turns into a call) restricts every sampled token to those
//! that keep the output valid, using `llguidance` over this crate's tokenizer.
//!
//! [`Constraint`] says what the output must be, [`grammar`] turns it into an
//! llguidance grammar and [`mask`] computes the allowed tokens step by step.

pub mod grammar;
pub mod mask;

use serde_json::Value;

pub use mask::{ConstraintCompiler, TokenMask};

/// What a constrained generation must produce.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// A JSON value valid against this JSON Schema.
    JsonSchema(Value),
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// Exactly one call of one of `tools`, written in `format`.
    ToolCall {
        /// The tools the call may name (at least one).
        tools: Vec<ToolSpec>,
        /// How the model writes calls.
        format: CallFormat,
    },
    /// Free text, or (when the output starts like a call) one call of one of
    /// `tools`: `tool_choice: "auto"`.
    TextOrToolCall {
        /// The tools a call may name (at least one).
        tools: Vec<ToolSpec>,
        /// How the model writes calls.
        format: CallFormat,
    },
}

/// A tool a constrained call may name.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The function name.
    pub name: String,
    /// JSON Schema of its arguments.
    pub parameters: Value,
}

/// The text syntax of a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFormat {
    /// Llama 3.1: `{"name": <tool>, "parameters": <arguments>}`.
    Llama31,
    /// SmolLM2: `<tool_call>[{"name": <tool>, "arguments": <arguments>}]</tool_call>`.
    SmolLm2,
}

/// Why a constraint could not be used or was not met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstrainError {
    /// The schema uses a feature the grammar compiler does not implement.
    #[error("unsupported JSON Schema feature: {feature}")]
    Unsupported {
        /// The keyword (or `format: <name>`) that was refused.
        feature: String,
    },
    /// The schema or constraint is malformed or unsatisfiable.
    #[error("invalid constraint: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// Generation reached its token limit before the output was complete;
    /// the partial output is never returned as if it were valid.
    #[error("the output did not complete the required format within {max_tokens} tokens")]
    Unfinished {
        /// The limit that was reached.
        max_tokens: usize,
    },
    /// The grammar engine failed while running (a bug, not a bad request).
    #[error("constrained decoding failed: {0}")]
    Engine(String),
}
