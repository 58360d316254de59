//! Built-in Llama 3.1 Instruct prompt format, written in Rust.
//!
//! It produces the same text as the model's Hugging Face chat template:
//! a system header that always carries the knowledge cutoff and a date,
//! custom JSON tools (in the first user turn by default, or in the system
//! turn), built-in tools (`<|python_tag|>name.call(...)` ending in
//! `<|eom_id|>`) and `ipython` tool results passed through `tojson`.

use super::message_fields::{is_truthy, kind_name, py_strip, role, text_content, tool_calls};
use super::python_json::{dumps, DumpOptions};
use super::python_repr::float_repr;
use super::{RenderInput, TemplateError};
use serde_json::Value;

const BEGIN_OF_TEXT: &str = "<|begin_of_text|>";
const END_OF_TURN: &str = "<|eot_id|>";
/// Ends an assistant turn that calls a built-in tool: the model expects a result.
const END_OF_MESSAGE: &str = "<|eom_id|>";
const PYTHON_TAG: &str = "<|python_tag|>";
/// The date the official template writes when none is given.
const DEFAULT_DATE: &str = "26 Jul 2024";
/// Built-in tool that is enabled by `Environment: ipython` alone, never listed.
const CODE_INTERPRETER: &str = "code_interpreter";

const CALL_FORMAT: &str = "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n";
const SYSTEM_TOOLS_INTRO: &str = "You have access to the following functions. To call a function, please respond with JSON for a function call.";
const USER_TOOLS_INTRO: &str = "Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n";

const SINGLE_TOOL_CALL_ERROR: &str = "This model only supports single tool-calls at once!";
const NO_FIRST_USER_MESSAGE_ERROR: &str =
    "Cannot put tools in the first user message when there's no first user message!";

/// The template variables this format reads, resolved from the input.
struct Options<'a> {
    /// Custom (JSON) tools; `custom_tools` in kwargs replaces `tools`.
    tools: Option<&'a [Value]>,
    /// Put the custom tools in the first user turn (default) or the system turn.
    tools_in_user_message: bool,
    date: &'a str,
    /// Names of built-in tools; their presence switches on ipython mode.
    builtin_tools: Option<Vec<&'a str>>,
}

impl<'a> Options<'a> {
    fn from_input(input: &'a RenderInput) -> Result<Self, TemplateError> {
        let kwargs = &input.template_kwargs;
        let tools = match kwargs.get("custom_tools") {
            None => input.tools.as_deref(),
            Some(Value::Null) => None,
            Some(Value::Array(tools)) => Some(tools.as_slice()),
            Some(other) => {
                return Err(TemplateError::Render(format!(
                    "custom_tools must be a list, got {}",
                    kind_name(other)
                )))
            }
        };
        let tools_in_user_message = kwargs.get("tools_in_user_message").is_none_or(is_truthy);
        let date = match kwargs.get("date_string") {
            None => DEFAULT_DATE,
            Some(Value::String(date)) => date,
            Some(other) => {
                return Err(TemplateError::Render(format!(
                    "date_string must be a string, got {}",
                    kind_name(other)
                )))
            }
        };
        let builtin_tools = match kwargs.get("builtin_tools") {
            None => None,
            Some(Value::Array(names)) => Some(
                names
                    .iter()
                    .map(|name| {
                        name.as_str().ok_or_else(|| {
                            TemplateError::Render(format!(
                                "builtin_tools entries must be strings, got {}",
                                kind_name(name)
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(other) => {
                return Err(TemplateError::Render(format!(
                    "builtin_tools must be a list of tool names, got {}",
                    kind_name(other)
                )))
            }
        };
        Ok(Self {
            tools,
            tools_in_user_message,
            date,
            builtin_tools,
        })
    }
}

/// Renders `input` in the Llama 3.1 Instruct format.
pub(crate) fn render(input: &RenderInput) -> Result<String, TemplateError> {
    let options = Options::from_input(input)?;
    let first = input
        .messages
        .first()
        .ok_or_else(|| TemplateError::Render("messages must not be empty".to_owned()))?;

    // A leading system message is folded into the system header.
    let (system_text, mut next) = if first.get("role").and_then(Value::as_str) == Some("system") {
        (py_strip(text_content(0, first)?), 1)
    } else {
        ("", 0)
    };

    let mut out = String::with_capacity(256);
    out.push_str(BEGIN_OF_TEXT);
    push_header(&mut out, "system");
    if options.builtin_tools.is_some() || options.tools.is_some() {
        out.push_str("Environment: ipython\n");
    }
    if let Some(names) = &options.builtin_tools {
        let listed: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| *name != CODE_INTERPRETER)
            .collect();
        out.push_str("Tools: ");
        out.push_str(&listed.join(", "));
        out.push_str("\n\n");
    }
    out.push_str("Cutting Knowledge Date: December 2023\n");
    out.push_str("Today Date: ");
    out.push_str(options.date);
    out.push_str("\n\n");
    if let (Some(tools), false) = (options.tools, options.tools_in_user_message) {
        out.push_str(SYSTEM_TOOLS_INTRO);
        out.push_str(CALL_FORMAT);
        push_tool_definitions(&mut out, tools)?;
    }
    out.push_str(system_text);
    out.push_str(END_OF_TURN);

    if let (Some(tools), true) = (options.tools, options.tools_in_user_message) {
        // The first remaining message, whatever its role, becomes the user turn
        // that carries the tool definitions.
        let message = input
            .messages
            .get(next)
            .ok_or_else(|| TemplateError::Raised(NO_FIRST_USER_MESSAGE_ERROR.to_owned()))?;
        let text = py_strip(text_content(next, message)?);
        next += 1;
        push_header(&mut out, "user");
        out.push_str(USER_TOOLS_INTRO);
        out.push_str(CALL_FORMAT);
        push_tool_definitions(&mut out, tools)?;
        out.push_str(text);
        out.push_str(END_OF_TURN);
    }

    for (index, message) in input.messages.iter().enumerate().skip(next) {
        let message_role = message.get("role").and_then(Value::as_str);
        if let Some(calls) = tool_calls(message) {
            push_tool_call(&mut out, index, calls, &options)?;
        } else if matches!(message_role, Some("ipython" | "tool")) {
            push_tool_result(&mut out, index, message)?;
        } else {
            push_header(&mut out, role(index, message)?);
            out.push_str(py_strip(text_content(index, message)?));
            out.push_str(END_OF_TURN);
        }
    }

    if input.add_generation_prompt {
        push_header(&mut out, "assistant");
    }
    Ok(out)
}

fn push_header(out: &mut String, role: &str) {
    out.push_str("<|start_header_id|>");
    out.push_str(role);
    out.push_str("<|end_header_id|>\n\n");
}

/// Each tool definition as 4-space indented JSON followed by a blank line.
fn push_tool_definitions(out: &mut String, tools: &[Value]) -> Result<(), TemplateError> {
    let options = DumpOptions::new(Some("    ".to_owned()), None);
    for tool in tools {
        out.push_str(&to_json(tool, &options)?);
        out.push_str("\n\n");
    }
    Ok(())
}

/// An assistant turn that calls one tool, custom (JSON) or built-in (python tag).
fn push_tool_call(
    out: &mut String,
    index: usize,
    calls: &Value,
    options: &Options<'_>,
) -> Result<(), TemplateError> {
    let call = match calls {
        Value::Array(calls) if calls.len() == 1 => &calls[0],
        Value::Array(_) => return Err(TemplateError::Raised(SINGLE_TOOL_CALL_ERROR.to_owned())),
        other => {
            return Err(TemplateError::Render(format!(
                "messages[{index}].tool_calls must be a list, got {}",
                kind_name(other)
            )))
        }
    };
    let function = call
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| {
            TemplateError::Render(format!(
                "messages[{index}].tool_calls[0] has no function object"
            ))
        })?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            TemplateError::Render(format!(
                "messages[{index}].tool_calls[0].function.name must be a string"
            ))
        })?;
    let arguments = function.get("arguments").ok_or_else(|| {
        TemplateError::Render(format!(
            "messages[{index}].tool_calls[0].function has no arguments"
        ))
    })?;

    push_header(out, "assistant");
    let builtin = options
        .builtin_tools
        .as_ref()
        .is_some_and(|names| names.contains(&name));
    if builtin {
        push_builtin_call(out, index, name, arguments)?;
    } else {
        out.push_str("{\"name\": \"");
        out.push_str(name);
        out.push_str("\", \"parameters\": ");
        out.push_str(&to_json(arguments, &DumpOptions::default())?);
        out.push('}');
    }
    // With built-in tools the model runs in ipython mode, where a call ends
    // the message rather than the turn.
    out.push_str(if options.builtin_tools.is_some() {
        END_OF_MESSAGE
    } else {
        END_OF_TURN
    });
    Ok(())
}

/// `<|python_tag|>name.call(key="value", ...)`; arguments must be string-valued.
fn push_builtin_call(
    out: &mut String,
    index: usize,
    name: &str,
    arguments: &Value,
) -> Result<(), TemplateError> {
    let Value::Object(arguments) = arguments else {
        return Err(TemplateError::Render(format!(
            "messages[{index}]: built-in tool call arguments must be an object, got {}",
            kind_name(arguments)
        )));
    };
    out.push_str(PYTHON_TAG);
    out.push_str(name);
    out.push_str(".call(");
    for (i, (key, value)) in arguments.iter().enumerate() {
        let Value::String(value) = value else {
            return Err(TemplateError::Render(format!(
                "messages[{index}]: built-in tool call argument {key:?} must be a string, got {}",
                kind_name(value)
            )));
        };
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(key);
        out.push_str("=\"");
        out.push_str(value);
        out.push('"');
    }
    out.push(')');
    Ok(())
}

/// A tool result: strings, lists and objects as JSON (so a string gets
/// quoted), scalars as Python prints them.
fn push_tool_result(out: &mut String, index: usize, message: &Value) -> Result<(), TemplateError> {
    push_header(out, "ipython");
    match message.get("content") {
        None => {
            return Err(TemplateError::Render(format!(
                "messages[{index}]: tool result has no content"
            )))
        }
        Some(content @ (Value::String(_) | Value::Array(_) | Value::Object(_))) => {
            out.push_str(&to_json(content, &DumpOptions::default())?);
        }
        Some(Value::Null) => out.push_str("None"),
        Some(Value::Bool(b)) => out.push_str(if *b { "True" } else { "False" }),
        Some(Value::Number(n)) => match (n.is_f64(), n.as_f64()) {
            (true, Some(f)) => out.push_str(&float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
    }
    out.push_str(END_OF_TURN);
    Ok(())
}

fn to_json(value: &Value, options: &DumpOptions) -> Result<String, TemplateError> {
    dumps(&minijinja::Value::from_serialize(value), options)
        .map_err(|e| TemplateError::Render(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render_json(value: serde_json::Value) -> Result<String, TemplateError> {
        render(&serde_json::from_value(value).unwrap())
    }

    const SYSTEM_PREFIX: &str = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n";

    #[test]
    fn builtin_tool_call_uses_python_tag_and_eom() {
        let out = render_json(json!({
            "messages": [
                {"role": "user", "content": "Gold price?"},
                {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                    "name": "brave_search", "arguments": {"query": "gold price", "n": "3"}}}]},
                {"role": "ipython", "content": "{\"price\": 2400}"},
            ],
            "template_kwargs": {"builtin_tools": ["brave_search", "code_interpreter"]},
        }))
        .unwrap();
        assert_eq!(
            out,
            format!(
                "{SYSTEM_PREFIX}Environment: ipython\nTools: brave_search\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>\
                 <|start_header_id|>user<|end_header_id|>\n\nGold price?<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n<|python_tag|>brave_search.call(query=\"gold price\", n=\"3\")<|eom_id|>\
                 <|start_header_id|>ipython<|end_header_id|>\n\n\"{{\\\"price\\\": 2400}}\"<|eot_id|>"
            )
        );
    }

    #[test]
    fn custom_call_in_ipython_mode_ends_with_eom() {
        let out = render_json(json!({
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            ],
            "template_kwargs": {"builtin_tools": ["wolfram_alpha"]},
        }))
        .unwrap();
        assert!(
            out.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"f\", \"parameters\": {\"a\": 1}}<|eom_id|>"),
            "{out}"
        );
    }

    #[test]
    fn two_tool_calls_raise_the_official_message() {
        let err = render_json(json!({
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [
                    {"function": {"name": "f", "arguments": {}}},
                    {"function": {"name": "g", "arguments": {}}}]},
            ],
        }))
        .unwrap_err();
        assert_eq!(err.to_string(), SINGLE_TOOL_CALL_ERROR);
        assert!(matches!(err, TemplateError::Raised(_)));
    }

    #[test]
    fn tools_without_a_user_message_raise_the_official_message() {
        let err = render_json(json!({
            "messages": [{"role": "system", "content": "sys"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
        }))
        .unwrap_err();
        assert_eq!(err.to_string(), NO_FIRST_USER_MESSAGE_ERROR);
    }

    #[test]
    fn scalar_tool_results_print_like_python() {
        let out = render_json(json!({
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "tool", "content": 18},
                {"role": "tool", "content": 2.0},
                {"role": "tool", "content": true},
            ],
        }))
        .unwrap();
        assert!(out.contains("\n\n18<|eot_id|>"), "{out}");
        assert!(out.contains("\n\n2.0<|eot_id|>"), "{out}");
        assert!(out.contains("\n\nTrue<|eot_id|>"), "{out}");
    }

    #[test]
    fn custom_tools_kwarg_replaces_tools_and_empty_messages_fail() {
        let out = render_json(json!({
            "messages": [{"role": "user", "content": "  q  "}],
            "template_kwargs": {"custom_tools": [{"name": "t"}], "tools_in_user_message": false, "date_string": "1 Jan 2025"},
        }))
        .unwrap();
        assert_eq!(
            out,
            format!(
                "{SYSTEM_PREFIX}Environment: ipython\nCutting Knowledge Date: December 2023\nToday Date: 1 Jan 2025\n\n{SYSTEM_TOOLS_INTRO}{CALL_FORMAT}{{\n    \"name\": \"t\"\n}}\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|>"
            )
        );
        assert!(matches!(
            render_json(json!({"messages": []})),
            Err(TemplateError::Render(_))
        ));
    }

    #[test]
    fn content_parts_are_refused_not_dropped() {
        let err = render_json(json!({
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        }))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("messages[0].content must be a string"),
            "{err}"
        );
    }
}
