//! SmolLM2's syntax: `<tool_call>` tags around a JSON list of calls (or one
//! call object).

use serde_json::Value;

use super::super::call::{call_from_object, kind, ParseError, Parsed, ToolCall};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// Parses one output. Text around the tags (a preamble such as "Let me
/// check.") is not part of any call and is dropped.
pub(super) fn parse(text: &str) -> Result<Parsed, ParseError> {
    let err = |reason: String| ParseError::new(text, reason);
    if !text.contains(OPEN) {
        if text.contains(CLOSE) {
            return Err(err(format!("`{CLOSE}` without `{OPEN}`")));
        }
        return Ok(Parsed::Text(text.to_owned()));
    }
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let end = after
            .find(CLOSE)
            .ok_or_else(|| err(format!("`{OPEN}` is never closed")))?;
        let inner = &after[..end];
        if inner.contains(OPEN) {
            return Err(err(format!("`{OPEN}` is never closed")));
        }
        block(inner.trim(), &mut calls).map_err(err)?;
        rest = &after[end + CLOSE.len()..];
    }
    if rest.contains(CLOSE) {
        return Err(err(format!("`{CLOSE}` without `{OPEN}`")));
    }
    Ok(Parsed::Calls(calls))
}

/// The calls of one tag pair: a list of call objects, or one.
fn block(inner: &str, calls: &mut Vec<ToolCall>) -> Result<(), String> {
    let value: Value = serde_json::from_str(inner)
        .map_err(|e| format!("the content of `{OPEN}` is not valid JSON: {e}"))?;
    match value {
        Value::Array(items) if items.is_empty() => Err(format!("`{OPEN}` holds an empty list")),
        Value::Array(items) => {
            for item in &items {
                calls.push(call_from_object(item)?);
            }
            Ok(())
        }
        obj @ Value::Object(_) => {
            calls.push(call_from_object(&obj)?);
            Ok(())
        }
        other => Err(format!(
            "`{OPEN}` must hold a list of calls or one call, got {}",
            kind(&other)
        )),
    }
}
