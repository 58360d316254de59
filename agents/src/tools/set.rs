//! A loaded set of tools: specs, compiled schemas and executors.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::call::{kind, ToolCall};
use super::error::{ExecError, ToolError};
use super::exec::builtin::BuiltinExecutor;
use super::exec::http::HttpExecutor;
use super::exec::{Executor, ToolOutput};
use super::spec::{ExecutorSpec, ToolSpec};
use super::validate::{self, Rejected, ValidCall};

/// Each set (and its clones) gets an id so a [`ValidCall`] from another set
/// is checked again before it runs.
static NEXT_SET_ID: AtomicU64 = AtomicU64::new(1);

/// Tools with their schemas compiled once; cheap to clone.
#[derive(Clone)]
pub struct ToolSet {
    id: u64,
    entries: Arc<Vec<Entry>>,
}

#[derive(Clone)]
struct Entry {
    spec: ToolSpec,
    validator: Arc<jsonschema::Validator>,
    /// `None`: a client tool.
    executor: Option<Arc<dyn Executor>>,
}

impl fmt::Debug for ToolSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolSet")
            .field("tools", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl ToolSet {
    /// Loads tools: checks names, schemas (as JSON Schemas) and executor
    /// settings; the error names the tool at fault.
    pub fn new(specs: Vec<ToolSpec>) -> Result<ToolSet, ToolError> {
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(specs.len());
        for spec in specs {
            let spec = spec.completed();
            check_name(&spec.name)?;
            if !seen.insert(spec.name.clone()) {
                return Err(ToolError::Duplicate { tool: spec.name });
            }
            let validator =
                validate::compile(&spec.parameters).map_err(|reason| ToolError::InvalidSchema {
                    tool: spec.name.clone(),
                    reason,
                })?;
            let executor: Option<Arc<dyn Executor>> = match &spec.executor {
                ExecutorSpec::Http(http) => Some(Arc::new(HttpExecutor::new(&spec.name, http)?)),
                ExecutorSpec::Builtin { name } => Some(Arc::new(BuiltinExecutor::new(*name))),
                ExecutorSpec::Client => None,
            };
            entries.push(Entry {
                spec,
                validator: Arc::new(validator),
                executor,
            });
        }
        Ok(ToolSet {
            id: NEXT_SET_ID.fetch_add(1, Ordering::Relaxed),
            entries: Arc::new(entries),
        })
    }

    /// The `tools` of an OpenAI request (`{"type": "function", "function":
    /// {..}}`), all run by the client.
    pub fn from_openai(tools: &[Value]) -> Result<ToolSet, ToolError> {
        let specs = tools
            .iter()
            .enumerate()
            .map(|(i, tool)| openai_spec(i, tool))
            .collect::<Result<Vec<_>, _>>()?;
        ToolSet::new(specs)
    }

    /// A set without tools.
    pub fn empty() -> ToolSet {
        ToolSet {
            id: NEXT_SET_ID.fetch_add(1, Ordering::Relaxed),
            entries: Arc::new(Vec::new()),
        }
    }

    /// Whether the set has no tools.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tools' names, in declaration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.spec.name.as_str())
    }

    /// The specs, in declaration order.
    pub fn specs(&self) -> impl Iterator<Item = &ToolSpec> {
        self.entries.iter().map(|e| &e.spec)
    }

    /// One tool's spec.
    pub fn spec(&self, name: &str) -> Option<&ToolSpec> {
        self.entry(name).map(|e| &e.spec)
    }

    /// The definitions as an OpenAI request's `tools` (for upstream models).
    pub fn to_openai(&self) -> Vec<Value> {
        self.specs().map(openai_definition).collect()
    }

    /// Whether `name` is a tool the caller runs.
    pub fn is_client(&self, name: &str) -> bool {
        self.entry(name).is_some_and(|e| e.executor.is_none())
    }

    /// Checks a call: the tool must exist and the arguments match its
    /// schema. Every issue is reported, each with its JSON pointer.
    // The rejection hands the call back whole (for feedback and the audit);
    // boxing it would only complicate every caller's match.
    #[allow(clippy::result_large_err)]
    pub fn validate(&self, call: ToolCall) -> Result<ValidCall, Rejected> {
        let Some(entry) = self.entry(&call.name) else {
            return Err(Rejected::UnknownTool { call });
        };
        let issues = validate::issues(&entry.validator, &call.arguments);
        if issues.is_empty() {
            Ok(ValidCall::new(call, self.id))
        } else {
            Err(Rejected::Invalid { call, issues })
        }
    }

    /// Replaces the executor of one tool (custom executors, tests).
    pub fn with_executor(
        mut self,
        name: &str,
        exec: Arc<dyn Executor>,
    ) -> Result<ToolSet, ToolError> {
        let entries = Arc::make_mut(&mut self.entries);
        let entry = entries
            .iter_mut()
            .find(|e| e.spec.name == name)
            .ok_or_else(|| ToolError::UnknownTool {
                tool: name.to_owned(),
            })?;
        entry.executor = Some(exec);
        Ok(self)
    }

    /// Runs a checked call with its tool's executor.
    pub async fn execute(&self, call: &ValidCall) -> Result<ToolOutput, ExecError> {
        let name = &call.call().name;
        let entry = self.entry(name).ok_or_else(|| ExecError::Refused {
            reason: format!("no tool named `{name}` in this set"),
        })?;
        // A call checked by another set was checked against another schema.
        if call.set_id != self.id && !entry.validator.is_valid(&call.call().arguments) {
            return Err(ExecError::Refused {
                reason: format!("the arguments do not match the schema of `{name}`"),
            });
        }
        match &entry.executor {
            Some(exec) => exec.execute(call).await,
            None => Err(ExecError::ClientTool),
        }
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.spec.name == name)
    }
}

/// The characters and length OpenAI allows for function names, so every
/// tool can also be sent to an upstream.
fn check_name(name: &str) -> Result<(), ToolError> {
    let bad = |reason: &str| ToolError::InvalidName {
        tool: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > 64 {
        return Err(bad("it is longer than 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(bad("use only letters, digits, `_` and `-`"));
    }
    Ok(())
}

fn openai_spec(index: usize, tool: &Value) -> Result<ToolSpec, ToolError> {
    let function = tool.get("function");
    let label = function
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map_or_else(|| format!("#{index}"), str::to_owned);
    let bad = |reason: String| ToolError::InvalidDefinition {
        tool: label.clone(),
        reason,
    };
    match tool.get("type") {
        Some(t) if t == "function" => {}
        Some(t) => return Err(bad(format!("`type` must be \"function\", got {t}"))),
        None => return Err(bad("`type` is missing".into())),
    }
    let function = function
        .and_then(Value::as_object)
        .ok_or_else(|| bad("`function` must be an object".into()))?;
    let name = match function.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(bad("`function.name` is missing".into())),
    };
    let description = match function.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(bad(format!(
                "`description` must be a string, got {}",
                kind(other)
            )))
        }
    };
    // Left out: any object (filled in by `ToolSet::new`).
    let parameters = function.get("parameters").cloned().unwrap_or(Value::Null);
    Ok(ToolSpec {
        name,
        description,
        parameters,
        executor: ExecutorSpec::Client,
    })
}

/// A spec as an OpenAI function definition.
pub(crate) fn openai_definition(spec: &ToolSpec) -> Value {
    let mut function = json!({"name": spec.name, "parameters": spec.parameters});
    if let Some(d) = &spec.description {
        function["description"] = Value::String(d.clone());
    }
    json!({"type": "function", "function": function})
}
