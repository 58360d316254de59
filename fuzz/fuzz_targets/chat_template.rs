//! Chat-template rendering of user content: the built-in Llama 3.1 and
//! ChatML templates and a model's own Jinja template (SmolLM2's) render any
//! message text without panicking, and the text is in the prompt.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use warden_inference::template::{BuiltinTemplate, ChatTemplate, RenderInput};

const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Split the input into a user message and a tool result.
    let (user, tool) = text.split_once('\u{0}').unwrap_or((text, "ok"));
    let input = RenderInput {
        messages: vec![
            json!({"role": "system", "content": "You are helpful."}),
            json!({"role": "user", "content": user}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "f", "arguments": {"q": user}}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": tool}),
        ],
        tools: None,
        add_generation_prompt: true,
        template_kwargs: Default::default(),
    };
    let templates = [
        ChatTemplate::builtin(BuiltinTemplate::Llama31),
        ChatTemplate::builtin(BuiltinTemplate::ChatMl),
        ChatTemplate::from_jinja(SMOLLM2, "", "<|im_end|>").unwrap(),
    ];
    for template in &templates {
        if let Ok(prompt) = template.render(&input) {
            // Templates may strip the text as Python's str.strip() does
            // (Unicode whitespace and U+001C-U+001F); nothing else goes.
            let stripped = user
                .trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c));
            assert!(prompt.contains(stripped), "user text lost");
        }
    }
});
