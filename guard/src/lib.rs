//! Llama Guard prompt building, verdict parsing and classifier backends.
//!
//! # Mapping a chat onto the guard's two roles
//!
//! Llama Guard knows two roles, `User` and `Agent`, which must alternate
//! starting with `User`; it judges the last turn. [`to_guard_conversation`]
//! maps an OpenAI-shaped conversation onto them for a [`Checkpoint`]:
//!
//! - `system`/`developer` messages are instructions, not user content: left out.
//! - [`Checkpoint::Input`] judges the last user message as the last `User` turn.
//! - [`Checkpoint::Output`] judges the answer as the last `Agent` turn.
//! - [`Checkpoint::ToolCall`] judges an assistant message's tool calls as an
//!   `Agent` turn holding each call as `{"name":…,"arguments":…}` JSON (the
//!   `arguments` string parsed into JSON when it is valid JSON).
//! - [`Checkpoint::ToolResult`] judges a tool result, which is untrusted
//!   input, as a `User` turn.
//! - Multi-part content is flattened to its text parts (joined by `\n`);
//!   consecutive same-role messages are joined (by `\n\n`) so roles alternate;
//!   a leading `Agent` turn gets an empty `User` turn before it.
//!
//! # Backends
//!
//! [`LocalBackend`] runs a guard model in-process: strict verdicts, P(unsafe)
//! in [`GuardOutcome::unsafe_score`] (see [`score`]), the instruction prefix
//! prefilled once per category set ([`prefix_cache`]), and incremental
//! checks of a streamed answer with [`StreamGuard`]. [`RemoteBackend`] asks
//! an OpenAI-compatible server; [`RulesBackend`] runs regexes and detectors.
//! [`GuardChain`] runs rules first, so a rules block skips the model.
//!
//! # Untrusted text and special tokens
//!
//! Message text goes into the prompt verbatim, except the pieces that spell
//! the prompt's own structure (block markers such as `<END CONVERSATION>`,
//! `User:`/`Agent:` labels starting a line, the `<|`/`|>` of special
//! tokens), which [`structure::neutralize`] rewrites so a message cannot
//! close the conversation block or forge a turn. Tokenise
//! [`PromptParts::conversation`] without special-token parsing so that no
//! message text can become a control token.

pub mod backend;
pub mod chain;
pub mod checkpoint;
pub mod conversation;
pub mod local;
pub mod prefix_cache;
pub mod prompt;
pub mod remote;
pub mod rules;
pub mod score;
pub mod stream;
pub mod structure;
pub mod verdict;

pub use backend::{
    classify_with_timeout, BackendKind, BoxFuture, GuardBackend, GuardError, GuardOutcome,
    GuardRequest, RequestError,
};
pub use chain::{ChainOutcome, ChainStep, GuardChain};
pub use checkpoint::Checkpoint;
pub use conversation::{to_guard_conversation, ChatMessage, ConversationError};
pub use local::{bundled_model_path, Judgement, LocalBackend, LocalOptions};
pub use prefix_cache::{PrefixCache, PrefixCacheStats};
pub use prompt::{
    build_prompt, build_prompt_parts, render_fixture_input, CategorySet, GuardConversation,
    GuardMessage, GuardRole, PromptError, PromptParts, PromptTokens,
};
pub use remote::{RemoteBackend, RemoteConfig, RemoteMode};
pub use rules::{RuleMatch, RulesBackend, RulesConfig};
pub use score::{unsafe_probability, ScoreTokens};
pub use stream::StreamGuard;
pub use verdict::{parse_code_list, parse_verdict, Verdict, VerdictError};

#[cfg(test)]
mod test_fixtures;
