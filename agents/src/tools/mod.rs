//! Tools: parsing the calls models write, checking them against each
//! tool's JSON Schema, and running them (built-ins, HTTP endpoints) or
//! handing them to the client.
//!
//! The flow is `parse_output`/`parse_openai_tool_calls` → [`ToolSet::validate`]
//! → [`ToolSet::execute`]; only `validate` makes the [`ValidCall`] that
//! `execute` takes, so an invalid call never reaches an executor.

mod call;
mod error;
pub mod exec;
mod parse;
mod prompt;
mod set;
mod spec;
mod validate;

pub use call::{new_call_id, tool_result_message, ParseError, Parsed, ToolCall};
pub use error::{ExecError, ToolError};
pub use exec::builtin::BuiltinExecutor;
pub use exec::http::HttpExecutor;
pub use exec::resolve::{forbidden_reason, Resolver, SystemResolver};
pub use exec::{Executor, ToolOutput};
pub use futures_util::future::BoxFuture;
pub use parse::{parse_openai_tool_calls, parse_output, OpenAiCallAccumulator, ToolCallFormat};
pub use prompt::render_tool_instructions;
pub use set::ToolSet;
pub use spec::{BuiltinTool, ExecutorSpec, HttpSpec, ToolSpec};
pub use validate::{Rejected, ValidCall, ValidationIssue};
