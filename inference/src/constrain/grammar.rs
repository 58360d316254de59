//! A [`Constraint`] as an llguidance Lark grammar, and llguidance's compile
//! errors as [`ConstrainError`]s.

use serde_json::{json, Map, Value};

use super::{CallFormat, ConstrainError, Constraint, ToolSpec};

/// JSON layout the grammar enforces: `", "` and `": "` between items, no other
/// whitespace. Flexible whitespace lets a sampled model wander into blank
/// space until it runs out of tokens; this layout is also what models write.
fn layout() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// The Lark grammar (llguidance's dialect) for `constraint`.
pub fn to_lark(constraint: &Constraint) -> Result<String, ConstrainError> {
    Ok(match constraint {
        Constraint::JsonSchema(schema) => format!("start: {}\n", json_rule(schema.clone())?),
        Constraint::JsonObject => format!("start: {}\n", json_rule(json!({"type": "object"}))?),
        Constraint::ToolCall { tools, format } => {
            format!("start: {}\n", call_rule(tools, *format)?)
        }
        Constraint::TextOrToolCall { tools, format } => {
            // TEXT is anything that does not begin a call (nor, for SmolLM2,
            // holds a call tag anywhere: its parser reads calls after a
            // preamble); once the output begins like a call, only the
            // constrained call can follow.
            let call_start = match format {
                CallFormat::Llama31 => r"\s*\{",
                CallFormat::SmolLm2 => r"(?s:.*)<tool_call>",
            };
            format!(
                "start: TEXT | call\n\
                 TEXT: /(?s:.*)/ & ~/{call_start}(?s:.*)/\n\
                 call: {}\n",
                call_rule(tools, *format)?
            )
        }
    })
}

/// `%json {...}` for a schema, with the enforced layout.
fn json_rule(schema: Value) -> Result<String, ConstrainError> {
    let mut schema = match schema {
        Value::Object(o) => o,
        Value::Bool(true) => Map::new(),
        Value::Bool(false) => {
            return Err(ConstrainError::Invalid {
                reason: "the schema `false` accepts nothing".into(),
            })
        }
        other => {
            return Err(ConstrainError::Invalid {
                reason: format!("a JSON Schema must be an object or a boolean, not {other}"),
            })
        }
    };
    // Callers do not choose llguidance's options: the layout is ours.
    schema.insert("x-guidance".into(), layout());
    Ok(format!("%json {}", Value::Object(schema)))
}

/// The call envelope over `tools` in `format`.
fn call_rule(tools: &[ToolSpec], format: CallFormat) -> Result<String, ConstrainError> {
    if tools.is_empty() {
        return Err(ConstrainError::Invalid {
            reason: "a tool-call constraint needs at least one tool".into(),
        });
    }
    let arguments_key = match format {
        CallFormat::Llama31 => "parameters",
        CallFormat::SmolLm2 => "arguments",
    };
    let envelopes = tools
        .iter()
        .map(|t| {
            if !(t.parameters.is_object() || t.parameters.is_boolean()) {
                return Err(ConstrainError::Invalid {
                    reason: format!("the parameters of tool `{}` are not a JSON Schema", t.name),
                });
            }
            // `name` first: the model commits to a tool before its arguments.
            let mut properties = Map::new();
            properties.insert("name".into(), json!({"const": t.name}));
            properties.insert(arguments_key.into(), t.parameters.clone());
            Ok(json!({
                "type": "object",
                "properties": properties,
                "required": ["name", arguments_key],
                "additionalProperties": false,
            }))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let one_call = if envelopes.len() == 1 {
        envelopes.into_iter().next().unwrap_or_default()
    } else {
        json!({"anyOf": envelopes})
    };
    Ok(match format {
        CallFormat::Llama31 => json_rule(one_call)?,
        CallFormat::SmolLm2 => format!(
            "\"<tool_call>\" {} \"</tool_call>\"",
            json_rule(json!({"type": "array", "items": one_call, "minItems": 1, "maxItems": 1}))?
        ),
    })
}

/// Turns llguidance's message for a grammar it refused into our error,
/// naming the schema feature when that is the reason.
pub fn compile_error(message: &str) -> ConstrainError {
    if let Some(rest) = message.split("Unimplemented keys: [").nth(1) {
        let keys = rest.split(']').next().unwrap_or_default();
        let feature = keys
            .split(',')
            .map(|k| k.trim().trim_matches('"'))
            .filter(|k| !k.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        return ConstrainError::Unsupported { feature };
    }
    if let Some(rest) = message.split("Unknown format: ").nth(1) {
        let name = rest.split_whitespace().next().unwrap_or_default();
        return ConstrainError::Unsupported {
            feature: format!("format: {name}"),
        };
    }
    // llguidance appends the whole grammar to some messages: keep the reason.
    let reason = message.lines().next().unwrap_or(message).trim();
    ConstrainError::Invalid {
        reason: reason.chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unimplemented_keys_name_the_feature() {
        let e =
            compile_error("failed to compile JSON schema: Unimplemented keys: [\"uniqueItems\"]");
        assert_eq!(
            e,
            ConstrainError::Unsupported {
                feature: "uniqueItems".into()
            }
        );
        let e = compile_error("Unknown format: ipv9\nmore");
        assert_eq!(
            e,
            ConstrainError::Unsupported {
                feature: "format: ipv9".into()
            }
        );
    }

    #[test]
    fn the_envelope_names_the_tool_first() {
        let tools = vec![ToolSpec {
            name: "calc".into(),
            parameters: json!({"type": "object"}),
        }];
        let lark = to_lark(&Constraint::ToolCall {
            tools,
            format: CallFormat::Llama31,
        })
        .unwrap();
        let name = lark.find("\"name\"").unwrap();
        let params = lark.find("\"parameters\"").unwrap();
        assert!(name < params, "{lark}");
        assert!(to_lark(&Constraint::ToolCall {
            tools: Vec::new(),
            format: CallFormat::Llama31
        })
        .is_err());
    }
}
