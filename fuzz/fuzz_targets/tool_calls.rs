//! The tool-call parsers: Llama 3.1 (JSON and `<|python_tag|>` calls) and
//! SmolLM2 (`<tool_call>`) text, and OpenAI `tool_calls` whole or streamed
//! as deltas. Never panic, whatever the model or upstream wrote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use warden_agents::tools::{
    parse_openai_tool_calls, parse_output, OpenAiCallAccumulator, ToolCallFormat,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for format in [ToolCallFormat::Llama31, ToolCallFormat::SmolLm2] {
            let _ = parse_output(format, text);
        }
    }
    if let Ok(Value::Array(calls)) = serde_json::from_slice::<Value>(data) {
        let _ = parse_openai_tool_calls(&calls);
        // The same values as a stream of deltas, one element per chunk.
        let mut acc = OpenAiCallAccumulator::new();
        for delta in &calls {
            if acc.push(&Value::Array(vec![delta.clone()])).is_err() {
                return;
            }
        }
        let _ = acc.finish();
    }
});
