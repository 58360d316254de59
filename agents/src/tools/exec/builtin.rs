//! Warden's own tools: a calculator and the current time.

use chrono::{SecondsFormat, Utc};
use futures_util::future::BoxFuture;
use serde_json::{json, Number, Value};

use super::super::error::ExecError;
use super::super::spec::BuiltinTool;
use super::super::validate::ValidCall;
use super::calc;
use super::{Executor, ToolOutput};

/// Runs one built-in tool.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinExecutor {
    tool: BuiltinTool,
}

impl BuiltinExecutor {
    /// The executor of `tool`.
    pub fn new(tool: BuiltinTool) -> Self {
        Self { tool }
    }

    /// Runs the tool on `arguments` (checked again here: a configured
    /// schema may be looser than the built-in one).
    pub fn run(&self, arguments: &Value) -> Result<ToolOutput, ExecError> {
        match self.tool {
            BuiltinTool::Calculator => calculator(arguments),
            BuiltinTool::CurrentTime => current_time(arguments),
        }
    }
}

impl Executor for BuiltinExecutor {
    fn execute<'a>(&'a self, call: &'a ValidCall) -> BoxFuture<'a, Result<ToolOutput, ExecError>> {
        Box::pin(async move { self.run(&call.call().arguments) })
    }
}

fn calculator(arguments: &Value) -> Result<ToolOutput, ExecError> {
    let expression = arguments
        .get("expression")
        .and_then(Value::as_str)
        .ok_or_else(|| ExecError::Builtin("`expression` must be a string".into()))?;
    let value = calc::evaluate(expression).map_err(ExecError::Builtin)?;
    Ok(ToolOutput::new(
        json!({"expression": expression, "result": number(value)}).to_string(),
    ))
}

/// Whole results print as integers (`4`, not `4.0`) while they are exact.
fn number(value: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() < EXACT {
        Value::Number((value as i64).into())
    } else {
        Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

fn current_time(arguments: &Value) -> Result<ToolOutput, ExecError> {
    match arguments.get("timezone") {
        None | Some(Value::Null) => {}
        Some(Value::String(tz)) if tz == "UTC" => {}
        Some(other) => {
            return Err(ExecError::Builtin(format!(
                "only the timezone \"UTC\" is supported, got {other}"
            )))
        }
    }
    Ok(ToolOutput::new(
        Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    ))
}
