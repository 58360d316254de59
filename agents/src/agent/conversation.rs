//! Building the messages the loop sends to the model between steps.

use serde_json::{json, Map, Value};

use crate::tools::{render_tool_instructions, ToolCall, ToolCallFormat, ToolSet};

/// The assistant message that made `calls`. A local model sees its own
/// words again (`raw`); an upstream sees OpenAI `tool_calls`.
pub fn assistant_calls(calls: &[ToolCall], raw: Option<&str>) -> Value {
    match raw {
        Some(text) => json!({"role": "assistant", "content": text}),
        None => json!({
            "role": "assistant",
            "content": Value::Null,
            "tool_calls": calls.iter().map(ToolCall::to_openai).collect::<Vec<_>>(),
        }),
    }
}

/// Feedback on output that was not a usable call, as a user turn (there is
/// no call id to answer as a tool message).
pub fn feedback(text: String) -> Value {
    json!({"role": "user", "content": text})
}

/// The messages of the first step: the profile's system prompt and, for a
/// local model, the tool instructions, joined into the leading system
/// message (templates expect one).
pub fn initial(
    caller: &[Value],
    system_prompt: Option<&str>,
    instructions: Option<String>,
) -> Vec<Value> {
    let mut system: Vec<String> = Vec::new();
    system.extend(system_prompt.map(str::to_owned));
    let mut rest = caller;
    if let Some(first) = caller.first() {
        if first.get("role").and_then(Value::as_str) == Some("system") {
            system.push(crate::chat::content_text(first.get("content")));
            rest = &caller[1..];
        }
    }
    system.extend(instructions);
    let mut out = Vec::with_capacity(rest.len() + 1);
    if !system.is_empty() {
        out.push(json!({"role": "system", "content": system.join("\n\n")}));
    }
    out.extend(rest.iter().cloned());
    out
}

/// Tool instructions for a local model, when it has tools to call.
pub fn instructions(format: Option<ToolCallFormat>, tools: &ToolSet) -> Option<String> {
    match format {
        Some(f) if !tools.is_empty() => Some(render_tool_instructions(f, tools)),
        _ => None,
    }
}

/// The request body for one step: the caller's settings with the loop's
/// conversation and, for upstreams, the tools in OpenAI's shape.
pub fn step_body(
    base: &Map<String, Value>,
    conversation: &[Value],
    tools: &ToolSet,
    local: bool,
    streaming: bool,
) -> Map<String, Value> {
    let mut body = base.clone();
    body.insert("messages".into(), Value::Array(conversation.to_vec()));
    body.insert("stream".into(), Value::Bool(streaming));
    if streaming {
        // Each step's tokens count, whichever step ends up streamed.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    } else {
        body.remove("stream_options");
    }
    if local || tools.is_empty() {
        // Local models learn the tools from the system prompt.
        body.remove("tools");
        body.remove("tool_choice");
    } else {
        body.insert("tools".into(), Value::Array(tools.to_openai()));
    }
    body
}
