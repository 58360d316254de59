//! Tool calls out of a model's output: the text syntaxes of local models
//! and the structured `tool_calls` of OpenAI-compatible upstreams.

mod llama31;
mod openai;
mod smollm;

use serde::{Deserialize, Serialize};

use super::call::{ParseError, Parsed};

pub use openai::{parse_openai_tool_calls, OpenAiCallAccumulator};

/// How a local model writes tool calls in its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ToolCallFormat {
    /// Llama 3.1: JSON `{"name", "parameters"}` or `<|python_tag|>name.call(..)`.
    #[serde(rename = "llama31")]
    Llama31,
    /// SmolLM2: `<tool_call>[{"name", "arguments"}]</tool_call>`.
    #[serde(rename = "smollm2")]
    SmolLm2,
}

/// Reads a whole model output in `format`: words, calls, or a malformed call.
pub fn parse_output(format: ToolCallFormat, text: &str) -> Result<Parsed, ParseError> {
    match format {
        ToolCallFormat::Llama31 => llama31::parse(text),
        ToolCallFormat::SmolLm2 => smollm::parse(text),
    }
}

/// At most this much of a text goes into a message (the whole text is in `raw`).
fn snippet(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}
