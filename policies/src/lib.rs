//! Policy documents: loading, validation, merge and reload.
//!
//! A policy directory holds YAML documents ([`document::PolicyDocument`]).
//! [`load::load_dir`] validates a directory as a whole (any error refuses
//! it); [`load::PolicySet::effective`] merges the documents that apply to a
//! request into an [`effective::EffectivePolicy`] at least as strict as each
//! of them; [`store::PolicyStore`] holds the current set and hot-reloads it.

pub mod decide;
pub mod document;
pub mod effective;
pub mod error;
pub mod explain;
pub mod load;
mod locate;
pub mod merge;
pub mod names;
pub mod schema;
pub mod scope;
pub mod store;
mod tagged;
pub mod taxonomy;
pub mod validate;
pub mod version;
pub mod watch;

pub use decide::{Decision, Findings};
pub use document::{
    Action, AppliesTo, BackendRef, BuiltinDetector, CategorySelector, CategorySet, Checkpoint,
    CustomCategory, FailMode, FailModes, Matcher, PolicyDocument, Rule, Streaming, Threshold,
};
pub use effective::{
    EffectiveBackend, EffectiveCategory, EffectivePolicy, EffectiveRule, Member, Origin, Origins,
    Sourced, ToolsAllowed,
};
pub use error::{ErrorKind, FieldPath, Location, PolicyError, PolicyErrors};
pub use explain::{explain, record_text};
pub use load::{check_dir, load_dir, CheckReport, LoadedPolicy, PolicySet};
pub use merge::merge;
pub use names::{BackendName, PolicyId, RuleId, ScopeName, ToolName};
pub use scope::{RequestScope, UnknownExtraCategory};
pub use store::{PolicyStore, ReloadOutcome, StoreStatus};
pub use validate::KnownNames;
pub use version::Version;
pub use watch::{PolicyWatcher, WatchError};
