//! Reading the fields of an OpenAI-style message for the built-in renderers,
//! with errors that say which message is malformed.

use super::jinja::is_python_space;
use super::TemplateError;
use serde_json::Value;

/// The message's `role`, which must be a string.
pub(crate) fn role(index: usize, message: &Value) -> Result<&str, TemplateError> {
    match message.get("role") {
        Some(Value::String(role)) => Ok(role),
        Some(other) => Err(TemplateError::Render(format!(
            "messages[{index}].role must be a string, got {other}"
        ))),
        None => Err(TemplateError::Render(format!(
            "messages[{index}] has no role"
        ))),
    }
}

/// The message's text `content`; a missing or null content is empty.
///
/// Content-part arrays are refused rather than printed as Python would print
/// a list: the gateway flattens them before rendering.
pub(crate) fn text_content(index: usize, message: &Value) -> Result<&str, TemplateError> {
    match message.get("content") {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => Ok(""),
        Some(other) => Err(TemplateError::Render(format!(
            "messages[{index}].content must be a string, got {}",
            kind_name(other)
        ))),
    }
}

/// Python's `str.strip()`, which Jinja's `trim` filter applies.
pub(crate) fn py_strip(text: &str) -> &str {
    text.trim_matches(is_python_space)
}

/// The message's `tool_calls` when it has any key of that name; a null
/// `tool_calls` counts as absent (clients send it on plain assistant turns).
pub(crate) fn tool_calls(message: &Value) -> Option<&Value> {
    message.get("tool_calls").filter(|calls| !calls.is_null())
}

/// Python's truthiness of a JSON value.
pub(crate) fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// A short name for a JSON value's type, for error messages.
pub(crate) fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
