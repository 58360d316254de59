//! The server-side agent loop: generate → parse → validate → guard the call
//! → execute → guard the result → generate, until a final answer, the step
//! limit or the deadline. Guarding and auditing belong to the caller (the
//! gateway), reached through [`Supervisor`], so this crate never depends on
//! how verdicts become HTTP responses.

mod conversation;
mod profile;
mod run;
mod spans;
mod step;
mod streamed;
mod supervisor;

pub use profile::AgentProfile;
pub use run::{run, LoopInput, LoopOutcome, LoopResult, RESULT_BLOCKED_NOTICE};
pub use step::{StepRecord, StepStatus};
pub use supervisor::{Gate, Supervisor};
