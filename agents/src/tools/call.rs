//! A tool call as Warden sees it, whatever the model's syntax, and what a
//! parser answers.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One call of one tool with its arguments (always a JSON object once parsed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call id (`call_<hex>` when the model's syntax has none).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments.
    pub arguments: Value,
}

impl ToolCall {
    /// A call with a fresh id.
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        Self {
            id: new_call_id(),
            name: name.into(),
            arguments,
        }
    }

    /// The call as an entry of an OpenAI assistant message's `tool_calls`
    /// (arguments as JSON text, as the API defines them).
    pub fn to_openai(&self) -> Value {
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments.to_string()},
        })
    }
}

/// What a model's output turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// An answer in words: no tool call.
    Text(String),
    /// One or more tool calls, in the order the model wrote them.
    Calls(Vec<ToolCall>),
}

/// Output that looks like a tool call but is malformed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed tool call: {reason}")]
pub struct ParseError {
    /// The text (or JSON) as received, kept for the audit.
    pub raw: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ParseError {
    /// An error about `raw`.
    pub fn new(raw: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            raw: raw.into(),
            reason: reason.into(),
        }
    }
}

/// A fresh call id: `call_` and 24 random hex digits, the shape OpenAI uses.
pub fn new_call_id() -> String {
    let n: u128 = rand::random();
    format!("call_{:024x}", n & ((1u128 << 96) - 1))
}

/// The OpenAI message that gives a tool's result back to the model.
pub fn tool_result_message(call: &ToolCall, content: &str) -> Value {
    json!({"role": "tool", "tool_call_id": call.id, "content": content})
}

/// A call from a JSON object `{"name": .., "arguments"|"parameters": {..}}`,
/// the shape local models write. `"type": "function"` and `"id"` are
/// tolerated (some models echo them); anything else is an error, so a
/// misspelt key is never silently dropped.
pub(crate) fn call_from_object(value: &Value) -> Result<ToolCall, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("a call must be a JSON object, got {}", kind(value)))?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "name" | "arguments" | "parameters" | "type" | "id"
        ) {
            return Err(format!("unexpected key `{key}` in a call"));
        }
    }
    if let Some(t) = obj.get("type") {
        if t != "function" {
            return Err(format!("`type` must be \"function\", got {t}"));
        }
    }
    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::String(_)) => return Err("`name` is empty".into()),
        Some(other) => return Err(format!("`name` must be a string, got {}", kind(other))),
        None => return Err("the call has no `name`".into()),
    };
    let arguments = match (obj.get("arguments"), obj.get("parameters")) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "call of `{name}` has both `arguments` and `parameters`"
            ))
        }
        (Some(a), None) | (None, Some(a)) => arguments_object(&name, a)?,
        (None, None) => return Err(format!("call of `{name}` has no `parameters`")),
    };
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None => new_call_id(),
        Some(other) => return Err(format!("`id` must be a string, got {}", kind(other))),
    };
    Ok(ToolCall {
        id,
        name,
        arguments,
    })
}

/// The arguments must be an object: a tool takes named arguments only.
fn arguments_object(name: &str, value: &Value) -> Result<Value, String> {
    match value {
        Value::Object(_) => Ok(value.clone()),
        other => Err(format!(
            "the arguments of `{name}` must be a JSON object, got {}",
            kind(other)
        )),
    }
}

/// Parses the JSON text of an arguments object (OpenAI sends them as text).
pub(crate) fn arguments_from_text(name: &str, text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("the arguments of `{name}` are not valid JSON: {e}"))?;
    arguments_object(name, &value)
}

/// A JSON type's name, for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
