//! OpenAI `tool_calls`: whole (an upstream's message) and streamed (the
//! `delta.tool_calls` pieces of chunks).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::super::call::{arguments_from_text, kind, new_call_id, ParseError, ToolCall};

/// Reads a whole message's `tool_calls`. Arguments are JSON text that must
/// hold an object.
pub fn parse_openai_tool_calls(tool_calls: &[Value]) -> Result<Vec<ToolCall>, ParseError> {
    tool_calls
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            one_call(entry).map_err(|reason| {
                ParseError::new(
                    Value::Array(tool_calls.to_vec()).to_string(),
                    format!("tool call {i}: {reason}"),
                )
            })
        })
        .collect()
}

fn one_call(entry: &Value) -> Result<ToolCall, String> {
    let obj = entry
        .as_object()
        .ok_or_else(|| format!("expected an object, got {}", kind(entry)))?;
    check_type(obj.get("type"))?;
    let function = obj
        .get("function")
        .and_then(Value::as_object)
        .ok_or("no `function` object")?;
    let name = match function.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err("no function `name`".into()),
    };
    let arguments = match function.get("arguments") {
        Some(Value::String(text)) => arguments_from_text(&name, text)?,
        Some(other) => {
            return Err(format!(
                "the arguments of `{name}` must be JSON text, got {}",
                kind(other)
            ))
        }
        None => return Err(format!("call of `{name}` has no `arguments`")),
    };
    let id = optional_string(obj.get("id"), "id")?.unwrap_or_else(new_call_id);
    Ok(ToolCall {
        id,
        name,
        arguments,
    })
}

fn check_type(value: Option<&Value>) -> Result<(), String> {
    match value {
        None | Some(Value::Null) => Ok(()),
        Some(t) if t == "function" => Ok(()),
        Some(t) => Err(format!("`type` must be \"function\", got {t}")),
    }
}

/// A string field that may be absent, null or empty (all meaning "none").
fn optional_string(value: Option<&Value>, field: &str) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("`{field}` must be a string, got {}", kind(other))),
    }
}

/// Builds the calls of a streamed answer from its `delta.tool_calls`
/// pieces. Pieces are keyed by `index`; the id and name come once (a
/// repeat of the same value is tolerated), the arguments text may be split
/// anywhere and is joined before it is parsed.
#[derive(Debug, Default)]
pub struct OpenAiCallAccumulator {
    calls: BTreeMap<u64, Partial>,
}

#[derive(Debug, Default)]
struct Partial {
    id: Option<String>,
    name: Option<String>,
    arguments: String,
}

impl OpenAiCallAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one chunk's `delta.tool_calls` (an array; `null` adds nothing).
    pub fn push(&mut self, delta_tool_calls: &Value) -> Result<(), ParseError> {
        let err = |reason: String| ParseError::new(delta_tool_calls.to_string(), reason);
        let entries = match delta_tool_calls {
            Value::Null => return Ok(()),
            Value::Array(entries) => entries,
            other => {
                return Err(err(format!(
                    "`tool_calls` must be an array, got {}",
                    kind(other)
                )))
            }
        };
        for entry in entries {
            self.push_entry(entry).map_err(err)?;
        }
        Ok(())
    }

    fn push_entry(&mut self, entry: &Value) -> Result<(), String> {
        let index = entry
            .get("index")
            .and_then(Value::as_u64)
            .ok_or("a tool call piece has no `index`")?;
        check_type(entry.get("type"))?;
        let partial = self.calls.entry(index).or_default();
        if let Some(id) = optional_string(entry.get("id"), "id")? {
            set_once(&mut partial.id, id, "id", index)?;
        }
        let Some(function) = entry.get("function").filter(|f| !f.is_null()) else {
            return Ok(());
        };
        let function = function.as_object().ok_or("`function` must be an object")?;
        if let Some(name) = optional_string(function.get("name"), "name")? {
            set_once(&mut partial.name, name, "name", index)?;
        }
        match function.get("arguments") {
            None | Some(Value::Null) => {}
            Some(Value::String(piece)) => partial.arguments.push_str(piece),
            Some(other) => {
                return Err(format!(
                    "`arguments` must be a string piece, got {}",
                    kind(other)
                ))
            }
        }
        Ok(())
    }

    /// Whether no call has started.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls in `index` order, each with arguments parsed.
    pub fn finish(self) -> Result<Vec<ToolCall>, ParseError> {
        let raw = self.raw();
        self.calls
            .into_iter()
            .map(|(index, p)| {
                let name = p
                    .name
                    .ok_or_else(|| format!("tool call {index} has no function name"))?;
                let arguments = arguments_from_text(&name, &p.arguments)?;
                Ok(ToolCall {
                    id: p.id.unwrap_or_else(new_call_id),
                    name,
                    arguments,
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(|reason| ParseError::new(raw, reason))
    }

    /// What was accumulated, as the audit should see it.
    fn raw(&self) -> String {
        let calls: Vec<Value> = self
            .calls
            .iter()
            .map(|(index, p)| {
                json!({"index": index, "id": p.id, "name": p.name, "arguments": p.arguments})
            })
            .collect();
        Value::Array(calls).to_string()
    }
}

fn set_once(
    slot: &mut Option<String>,
    value: String,
    field: &str,
    index: u64,
) -> Result<(), String> {
    match slot {
        None => {
            *slot = Some(value);
            Ok(())
        }
        Some(old) if *old == value => Ok(()),
        Some(old) => Err(format!(
            "tool call {index} got a second {field}: `{value}` after `{old}`"
        )),
    }
}
