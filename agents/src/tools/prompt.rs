//! Tool instructions for the system prompt of a local model: the tools'
//! definitions and the call syntax its parser reads.

use super::parse::ToolCallFormat;
use super::set::{openai_definition, ToolSet};

/// The text to add to a local model's system prompt so it knows `tools` and
/// how to call them in `format`; empty for an empty set.
pub fn render_tool_instructions(format: ToolCallFormat, tools: &ToolSet) -> String {
    if tools.is_empty() {
        return String::new();
    }
    let definitions: Vec<String> = tools
        .specs()
        .map(|spec| openai_definition(spec).to_string())
        .collect();
    match format {
        ToolCallFormat::Llama31 => format!(
            "You can call these functions, each given as a JSON definition with a JSON Schema \
             of its parameters:\n\n{}\n\n\
             To call a function, reply with only a JSON object \
             {{\"name\": <function name>, \"parameters\": <object of argument values>}} \
             and nothing else; to call several, write one object per line. \
             Use only the functions and parameters defined above, with values that match \
             their schema. When no function is needed, reply in words.",
            definitions.join("\n\n")
        ),
        ToolCallFormat::SmolLm2 => format!(
            "You can call these tools, each given as a JSON definition with a JSON Schema of \
             its arguments:\n<tools>\n{}\n</tools>\n\n\
             To call tools, reply with a JSON list of calls between <tool_call> and \
             </tool_call>, for example:\n\
             <tool_call>[{{\"name\": \"<tool name>\", \"arguments\": {{\"<argument>\": <value>}}}}]</tool_call>\n\
             Use only the tools and arguments defined above, with values that match their \
             schema. When no tool is needed, reply in words.",
            definitions.join("\n")
        ),
    }
}
