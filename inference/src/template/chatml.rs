//! Built-in ChatML prompt format: `<|im_start|>{role}\n{content}<|im_end|>\n`
//! per message, `<|im_start|>assistant\n` as the generation prompt, no default
//! system prompt and no trimming.

use super::message_fields::{role, text_content, tool_calls};
use super::{RenderInput, TemplateError};

/// Renders `input` as plain ChatML.
///
/// ChatML has no tool format, so tools and tool calls are refused instead of
/// being silently left out of the prompt.
pub(crate) fn render(input: &RenderInput) -> Result<String, TemplateError> {
    if input.tools.as_ref().is_some_and(|tools| !tools.is_empty()) {
        return Err(TemplateError::Render(
            "the chatml built-in template has no tool format; tools cannot be rendered".to_owned(),
        ));
    }
    let mut out = String::with_capacity(128);
    for (index, message) in input.messages.iter().enumerate() {
        if tool_calls(message).is_some() {
            return Err(TemplateError::Render(format!(
                "messages[{index}]: the chatml built-in template has no tool-call format"
            )));
        }
        out.push_str("<|im_start|>");
        out.push_str(role(index, message)?);
        out.push('\n');
        out.push_str(text_content(index, message)?);
        out.push_str("<|im_end|>\n");
    }
    if input.add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    Ok(out)
}
