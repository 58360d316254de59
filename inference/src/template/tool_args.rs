//! OpenAI clients send `tool_calls[].function.arguments` as a JSON string;
//! chat templates expect an object (the Llama 3.1 template double-encodes a
//! string), so the gateway parses them before rendering.

use serde_json::Value;

/// Replaces every string `function.arguments` that parses as a JSON object
/// with that object; other values, and strings that do not parse, are left as they are.
pub fn normalize_tool_call_arguments(messages: &mut [Value]) {
    for message in messages {
        let Some(Value::Array(calls)) = message.get_mut("tool_calls") else {
            continue;
        };
        for call in calls {
            let Some(arguments) = call
                .get_mut("function")
                .and_then(|function| function.get_mut("arguments"))
            else {
                continue;
            };
            if let Value::String(text) = arguments {
                if let Ok(parsed @ Value::Object(_)) = serde_json::from_str::<Value>(text) {
                    *arguments = parsed;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_arguments_become_objects_in_order() {
        let mut messages = vec![
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "tool_calls": [
                {"type": "function", "function": {"name": "f", "arguments": "{\"z\": 1, \"a\": \"b\"}"}},
                {"type": "function", "function": {"name": "g", "arguments": "not json"}},
                {"type": "function", "function": {"name": "h", "arguments": "[1, 2]"}},
                {"type": "function", "function": {"name": "i", "arguments": {"k": "v"}}},
            ]}),
        ];
        normalize_tool_call_arguments(&mut messages);
        let calls = &messages[1]["tool_calls"];
        assert_eq!(calls[0]["function"]["arguments"], json!({"z": 1, "a": "b"}));
        let keys: Vec<&String> = calls[0]["function"]["arguments"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(keys, ["z", "a"]);
        assert_eq!(calls[1]["function"]["arguments"], json!("not json"));
        assert_eq!(calls[2]["function"]["arguments"], json!("[1, 2]"));
        assert_eq!(calls[3]["function"]["arguments"], json!({"k": "v"}));
        assert_eq!(messages[0], json!({"role": "user", "content": "hi"}));
    }
}
