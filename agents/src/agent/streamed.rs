//! A step generated as a stream: read until it is clear whether the model
//! answers in text or calls a tool. A text answer is handed on while it is
//! still being generated; a call is read to its end and parsed.

use serde_json::Value;
use tokio::sync::mpsc;

use crate::chat::{StreamItem, Usage};
use crate::error::GenerateError;
use crate::generate::StreamEvent;
use crate::tools::{parse_output, OpenAiCallAccumulator, ParseError, Parsed, ToolCallFormat};

/// What a streamed step turned out to be.
pub enum StreamedStep {
    /// Text: the items read so far and the rest of the stream.
    Text {
        /// Already read, in order.
        held: Vec<StreamItem>,
        /// The rest.
        rest: mpsc::Receiver<StreamEvent>,
    },
    /// A call (or a text answer read whole because a call is required).
    Whole {
        /// The text of the step.
        text: String,
        /// The parsed output.
        parsed: Result<Parsed, ParseError>,
        /// Token counts, when reported.
        usage: Usage,
    },
}

/// Whether output beginning with `prefix` is a call: `None` while it
/// cannot be told yet. Upstreams announce calls as `tool_calls` deltas.
fn starts_a_call(format: Option<ToolCallFormat>, prefix: &str) -> Option<bool> {
    let p = prefix.trim_start();
    if p.is_empty() {
        return None;
    }
    let markers: &[&str] = match format {
        None => return Some(false),
        Some(ToolCallFormat::SmolLm2) => &["<tool_call>"],
        Some(ToolCallFormat::Llama31) => &["{", "<|python_tag|>"],
    };
    if markers.iter().any(|m| p.starts_with(m)) {
        Some(true)
    } else if markers.iter().any(|m| m.starts_with(p)) {
        None
    } else {
        Some(false)
    }
}

/// Reads `rx` until the step's kind is known. With `text_wanted` false
/// (a call is required, or the set has tools but the model must call) text
/// is read whole too.
pub async fn read_step(
    mut rx: mpsc::Receiver<StreamEvent>,
    format: Option<ToolCallFormat>,
    has_tools: bool,
    text_wanted: bool,
) -> Result<StreamedStep, GenerateError> {
    let mut held: Vec<StreamItem> = Vec::new();
    let mut text = String::new();
    let mut calls = OpenAiCallAccumulator::new();
    let mut call_error: Option<ParseError> = None;
    let mut upstream_calls = false;
    let mut decided: Option<bool> = if has_tools { None } else { Some(false) };
    let mut usage = Usage::default();
    while let Some(event) = rx.recv().await {
        let item = match event {
            StreamEvent::Item(item) => item,
            StreamEvent::Failed(e) => return Err(e),
        };
        if let Some(u) = item.usage {
            usage = u;
        }
        text.push_str(&item.text);
        if format.is_none() {
            if let Some(delta) = tool_call_delta(&item.payload) {
                upstream_calls = true;
                if let Err(e) = calls.push(&delta) {
                    call_error.get_or_insert(e);
                }
            }
        }
        held.push(item);
        if decided.is_none() {
            decided = if upstream_calls {
                Some(true)
            } else if format.is_none() && !text.is_empty() {
                Some(false)
            } else {
                starts_a_call(format, &text)
            };
        }
        if decided == Some(false) && text_wanted {
            return Ok(StreamedStep::Text { held, rest: rx });
        }
    }
    let parsed = match (format, upstream_calls) {
        (None, true) => match call_error {
            Some(e) => Err(e),
            None => calls.finish().map(Parsed::Calls),
        },
        (Some(f), _) if has_tools => parse_output(f, &text),
        _ => Ok(Parsed::Text(text.clone())),
    };
    Ok(StreamedStep::Whole {
        text,
        parsed,
        usage,
    })
}

/// The `delta.tool_calls` of an upstream chunk, if it has any.
fn tool_call_delta(payload: &str) -> Option<Value> {
    if !payload.contains("tool_calls") {
        return None;
    }
    let chunk: Value = serde_json::from_str(payload).ok()?;
    let calls = chunk.pointer("/choices/0/delta/tool_calls")?;
    calls.is_array().then(|| calls.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_told_from_text_as_soon_as_possible() {
        let smol = Some(ToolCallFormat::SmolLm2);
        assert_eq!(starts_a_call(smol, "  "), None);
        assert_eq!(starts_a_call(smol, "<tool"), None);
        assert_eq!(starts_a_call(smol, " <tool_call>[{"), Some(true));
        assert_eq!(starts_a_call(smol, "The answer"), Some(false));
        let llama = Some(ToolCallFormat::Llama31);
        assert_eq!(starts_a_call(llama, "{\"name\""), Some(true));
        assert_eq!(starts_a_call(llama, "<|python"), None);
        assert_eq!(starts_a_call(llama, "Sure"), Some(false));
        assert_eq!(starts_a_call(None, "anything"), Some(false));
    }
}
