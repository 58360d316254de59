//! Named agent profiles from configuration.

use std::time::Duration;

use crate::tools::ToolSet;

/// An agent callers name in `model`: a generator with a system prompt and tools.
#[derive(Clone)]
pub struct AgentProfile {
    /// The name callers use (listed in `/v1/models`).
    pub name: String,
    /// The generator it runs on.
    pub model: String,
    /// Put before the caller's messages.
    pub system_prompt: Option<String>,
    /// The tools it may call.
    pub tools: ToolSet,
    /// Most generations in one turn.
    pub step_limit: u32,
    /// The whole turn's time budget.
    pub timeout: Duration,
    /// The first step must call a tool (a text answer is fed back as an error).
    pub call_required: bool,
}
