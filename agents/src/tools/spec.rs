//! How a tool is declared in configuration: name, description, JSON Schema
//! of its arguments, and who runs it.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The calculator's expressions, roughly: operands (numbers with optional
/// signs, or a parenthesised group) joined by operators, spaces allowed. It
/// keeps the schema short (it is rendered into local models' prompts) while
/// stating enough of the evaluator's grammar that a constrained model cannot
/// write words, start with an operator or a stray `)`, or end mid-operation;
/// what is inside parentheses is left to the evaluator.
const CALCULATOR_PATTERN: &str = concat!(
    r"^ *([-+] *)*([0-9]{1,20}(\.[0-9]{1,20})?|\.[0-9]{1,20}|\([-+*/%^.0-9 ()]+\))",
    r"( *[-+*/%^] *([-+] *)*([0-9]{1,20}(\.[0-9]{1,20})?|\.[0-9]{1,20}|\([-+*/%^.0-9 ()]+\)))* *$",
);

/// One tool as configured (TOML/YAML) or built in code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// The name the model calls it by (`[A-Za-z0-9_-]`, at most 64 characters).
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments object. Left out (`null`): a built-in's
    /// own schema, or any object for other tools.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub parameters: Value,
    /// Who runs it.
    pub executor: ExecutorSpec,
}

/// Who runs a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExecutorSpec {
    /// POST the arguments to a URL.
    Http(HttpSpec),
    /// One of Warden's own tools.
    Builtin {
        /// Which one.
        name: BuiltinTool,
    },
    /// The caller runs it: the call is returned as OpenAI `tool_calls`.
    Client,
}

/// An HTTP tool endpoint and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// The endpoint (`http` or `https`).
    pub url: String,
    /// Hosts that may be contacted (the URL's host must be one of them).
    pub allow_hosts: Vec<String>,
    /// Allow loopback, private, link-local and similar addresses (off: SSRF guard).
    #[serde(default)]
    pub allow_private: bool,
    /// Time for the whole exchange, redirects included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response body accepted.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

impl HttpSpec {
    /// A spec for `url` with its own host allowed and the default limits.
    pub fn new(url: impl Into<String>, allow_hosts: Vec<String>) -> Self {
        Self {
            url: url.into(),
            allow_hosts,
            allow_private: false,
            timeout_ms: default_timeout_ms(),
            max_response_bytes: default_max_response_bytes(),
        }
    }
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_max_response_bytes() -> usize {
    1 << 20
}

/// The schema of a tool declared without `parameters`: any object.
pub(crate) fn empty_object_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

/// Warden's own tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinTool {
    /// Arithmetic on numbers.
    Calculator,
    /// The current time in UTC.
    CurrentTime,
}

impl BuiltinTool {
    /// The tool's default name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Calculator => "calculator",
            Self::CurrentTime => "current_time",
        }
    }
}

impl ToolSpec {
    /// The spec with what was left out filled in: a built-in's own schema
    /// and description (under the configured name), else an any-object schema.
    pub(crate) fn completed(mut self) -> ToolSpec {
        if let ExecutorSpec::Builtin { name } = &self.executor {
            let builtin = ToolSpec::builtin(*name);
            if self.parameters.is_null() {
                self.parameters = builtin.parameters;
            }
            if self.description.is_none() {
                self.description = builtin.description;
            }
        } else if self.parameters.is_null() {
            self.parameters = empty_object_schema();
        }
        self
    }

    /// A built-in tool with its name, description and argument schema.
    pub fn builtin(tool: BuiltinTool) -> ToolSpec {
        let (description, parameters) = match tool {
            BuiltinTool::Calculator => (
                "Evaluates an arithmetic expression: numbers, + - * / % ^ and parentheses.",
                json!({
                    "type": "object",
                    "properties": {
                        // The schema states what the evaluator accepts, so a
                        // constrained call cannot wander into words.
                        "expression": {
                            "type": "string",
                            "description": "The expression, e.g. \"(2 + 3) * 4 ^ 2\".",
                            "minLength": 1,
                            "maxLength": super::exec::calc::MAX_LEN,
                            "pattern": CALCULATOR_PATTERN,
                        },
                    },
                    "required": ["expression"],
                    "additionalProperties": false,
                }),
            ),
            BuiltinTool::CurrentTime => (
                "Returns the current date and time in UTC (RFC 3339).",
                json!({
                    "type": "object",
                    "properties": {
                        "timezone": {"type": "string", "enum": ["UTC"]},
                    },
                    "additionalProperties": false,
                }),
            ),
        };
        ToolSpec {
            name: tool.name().to_owned(),
            description: Some(description.to_owned()),
            parameters,
            executor: ExecutorSpec::Builtin { name: tool },
        }
    }
}
