//! `[[tools]]` and `[[agents]]`: the tools agents call (warden-agents'
//! `ToolSpec`: a built-in brings its own description and schema) and the
//! agent profiles callers name in `model`.

use std::collections::BTreeSet;

use serde::Deserialize;
use warden_agents::tools::ToolSet;

use super::{check_name, check_timeout, invalid, Config, ConfigError};

/// `[[agents]]`: a named profile run by the server-side agent loop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The name callers use as `model`.
    pub name: String,
    /// The generator (a `[[models]]` name).
    pub model: String,
    /// Put before the caller's messages.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Names of `[[tools]]` it may call.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Most generations per turn.
    #[serde(default = "default_step_limit")]
    pub step_limit: u32,
    /// Seconds the whole turn may take.
    #[serde(default = "default_agent_timeout")]
    pub timeout_seconds: f64,
    /// `auto` (default): the model may answer at once; `required`: it must
    /// call a tool before it answers.
    #[serde(default)]
    pub tool_choice: AgentToolChoice,
}

/// Whether an agent must call a tool before answering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentToolChoice {
    /// Answer or call, as the model decides.
    #[default]
    Auto,
    /// Call at least one tool first.
    Required,
}

fn default_step_limit() -> u32 {
    6
}

fn default_agent_timeout() -> f64 {
    120.0
}

/// The tool set an agent gets: its named tools out of `[[tools]]`.
pub fn agent_tools(config: &Config, agent: &AgentConfig) -> Result<ToolSet, String> {
    let specs = agent
        .tools
        .iter()
        .map(|name| {
            config
                .tools
                .iter()
                .find(|t| &t.name == name)
                .cloned()
                .ok_or_else(|| format!("no [[tools]] entry is named {name:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ToolSet::new(specs).map_err(|e| e.to_string())
}

/// Checks `[[tools]]` and `[[agents]]`; every error names its key.
pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let mut tool_names = BTreeSet::new();
    for (i, t) in config.tools.iter().enumerate() {
        let key = format!("tools[{i}]");
        check_name(&format!("{key}.name"), &t.name)?;
        if !tool_names.insert(t.name.as_str()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("tool {:?} is configured twice", t.name),
            ));
        }
        // Loads the schema as a JSON Schema and checks the executor.
        ToolSet::new(vec![t.clone()]).map_err(|e| invalid(&key, e.to_string()))?;
    }
    let models: BTreeSet<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
    let mut agent_names = BTreeSet::new();
    for (i, a) in config.agents.iter().enumerate() {
        let key = format!("agents[{i}]");
        check_name(&format!("{key}.name"), &a.name)?;
        if models.contains(a.name.as_str()) || !agent_names.insert(a.name.as_str()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("{:?} is already the name of a model or agent", a.name),
            ));
        }
        if !models.contains(a.model.as_str()) {
            return Err(invalid(
                format!("{key}.model"),
                format!("no [[models]] entry is named {:?}", a.model),
            ));
        }
        if a.step_limit == 0 {
            return Err(invalid(format!("{key}.step_limit"), "must be at least 1"));
        }
        check_timeout(&format!("{key}.timeout_seconds"), a.timeout_seconds)?;
        agent_tools(config, a).map_err(|e| invalid(format!("{key}.tools"), e))?;
    }
    Ok(())
}
