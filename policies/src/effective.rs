//! The effective policy of a request: every setting resolved, with the
//! documents each one came from.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::document::{
    Action, AppliesTo, BackendRef, Checkpoint, FailMode, Rule, Streaming, Threshold,
};
use crate::names::{PolicyId, ToolName};
use crate::taxonomy::CategoryCode;
use crate::version::Version;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// The built-in default, because a document left the setting out.
    BuiltIn,
    /// A policy document.
    Policy(PolicyId),
    /// The request itself (`metadata.warden.extra_categories`).
    Request,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BuiltIn => f.write_str("built-in"),
            Self::Policy(id) => f.write_str(id.as_str()),
            Self::Request => f.write_str("request"),
        }
    }
}

/// A set of origins: every source whose value equals the winning one.
pub type Origins = BTreeSet<Origin>;

/// A resolved value and its origins.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    /// The value in force.
    pub value: T,
    /// Every source that asked for exactly this value.
    pub from: Origins,
}

impl<T> Sourced<T> {
    /// A value with one origin.
    pub fn new(value: T, from: Origin) -> Self {
        Self {
            value,
            from: BTreeSet::from([from]),
        }
    }
}

/// Which tools may be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolsAllowed {
    /// No policy restricts tools.
    Any,
    /// Only these.
    Only(BTreeSet<ToolName>),
}

impl ToolsAllowed {
    /// Whether `tool` may be called.
    pub fn allows(&self, tool: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(set) => set.iter().any(|t| t.as_str() == tool),
        }
    }

    /// True when `self` allows nothing that `other` forbids.
    pub fn within(&self, other: &Self) -> bool {
        match (self, other) {
            (_, Self::Any) => true,
            (Self::Any, Self::Only(_)) => false,
            (Self::Only(a), Self::Only(b)) => a.is_subset(b),
        }
    }
}

/// One category in force.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveCategory {
    /// Name, as written into the guard prompt.
    pub name: String,
    /// Description, for custom categories.
    pub description: Option<String>,
    /// The documents (or the request) that check this category.
    pub from: Origins,
    /// The strictest action any of them asks for.
    pub action: Sourced<Action>,
    /// The lowest threshold any of them sets (`None`: greedy verdict only).
    pub threshold: Sourced<Option<Threshold>>,
}

/// A guard backend in force.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveBackend {
    /// The backend.
    pub backend: BackendRef,
    /// The documents that list it.
    pub from: Origins,
}

/// A rule in force, with the document that defines it.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveRule {
    /// The defining document.
    pub policy: PolicyId,
    /// The rule.
    pub rule: Rule,
}

/// One document that contributed to an effective policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its id.
    pub id: PolicyId,
    /// Its version.
    pub version: Version,
    /// What it applies to.
    pub applies_to: AppliesTo,
}

/// The policy a request runs under: all applicable documents merged so that
/// it is at least as strict as each of them.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivePolicy {
    /// The member ids joined with `+`, ordered from least to most specific
    /// scope (then by id); `+request` is appended when the request added
    /// categories. Recorded in audit events.
    pub id: String,
    /// SHA-256 over the members' ids and versions (and request additions).
    pub version: Version,
    /// The documents merged, in `id` order.
    pub members: Vec<Member>,
    /// Checkpoints that run, with the documents enabling each.
    pub checkpoints: BTreeMap<Checkpoint, Origins>,
    /// Backends in the order they run.
    pub backends: Vec<EffectiveBackend>,
    /// Categories checked, by code.
    pub categories: BTreeMap<CategoryCode, EffectiveCategory>,
    /// Refusal text (from the most specific document that sets one).
    pub refusal_text: Sourced<String>,
    /// Fail mode for every checkpoint.
    pub fail_modes: BTreeMap<Checkpoint, Sourced<FailMode>>,
    /// Streaming mode.
    pub streaming: Sourced<Streaming>,
    /// Tools that may be called.
    pub allowed_tools: Sourced<ToolsAllowed>,
    /// Whether message content is stored in the audit log.
    pub store_content: Sourced<bool>,
    /// Retry limit for invalid tool calls.
    pub max_tool_retries: Sourced<u8>,
    /// Rules the `rules` backend runs.
    pub rules: Vec<EffectiveRule>,
    /// Categories the request added.
    pub request_categories: BTreeSet<CategoryCode>,
}

impl EffectivePolicy {
    /// Whether `cp` runs.
    pub fn runs(&self, cp: Checkpoint) -> bool {
        self.checkpoints.contains_key(&cp)
    }

    /// The fail mode for `cp`.
    pub fn fail_mode(&self, cp: Checkpoint) -> FailMode {
        self.fail_modes
            .get(&cp)
            .map_or(crate::document::defaults::FAIL_MODE, |s| s.value)
    }

    /// The action for a violated category; `None` when it is not checked.
    pub fn action(&self, code: CategoryCode) -> Option<Action> {
        self.categories.get(&code).map(|c| c.action.value)
    }

    /// Every dimension on which `self` is weaker than `other`, described for
    /// people; empty when `self` is at least as strict as `other`.
    pub fn weaker_than(&self, other: &EffectivePolicy) -> Vec<String> {
        let mut out = Vec::new();
        for cp in other.checkpoints.keys() {
            if !self.runs(*cp) {
                out.push(format!("checkpoint {cp} does not run"));
            }
        }
        for b in &other.backends {
            if !self.backends.iter().any(|s| s.backend == b.backend) {
                out.push(format!("backend {} does not run", b.backend));
            }
        }
        for (code, theirs) in &other.categories {
            let Some(ours) = self.categories.get(code) else {
                out.push(format!("category {code} is not checked"));
                continue;
            };
            if ours.action.value < theirs.action.value {
                out.push(format!(
                    "category {code}: {} is weaker than {}",
                    ours.action.value.as_str(),
                    theirs.action.value.as_str()
                ));
            }
            if threshold_rank(ours.threshold.value) > threshold_rank(theirs.threshold.value) {
                out.push(format!("category {code}: threshold is higher"));
            }
        }
        for cp in Checkpoint::ALL {
            if self.fail_mode(cp) < other.fail_mode(cp) {
                out.push(format!("checkpoint {cp} fails open"));
            }
        }
        if streaming_rank(self.streaming.value) < streaming_rank(other.streaming.value) {
            out.push("streaming releases output earlier".to_owned());
        }
        if !self.allowed_tools.value.within(&other.allowed_tools.value) {
            out.push("more tools are allowed".to_owned());
        }
        if self.store_content.value && !other.store_content.value {
            out.push("content is stored".to_owned());
        }
        if self.max_tool_retries.value > other.max_tool_retries.value {
            out.push("more tool retries are allowed".to_owned());
        }
        for r in &other.rules {
            if !self.rules.contains(r) {
                out.push(format!("rule {}/{} does not run", r.policy, r.rule.id));
            }
        }
        out
    }
}

/// Orders thresholds by strictness key: lower is stricter; `None` (greedy
/// verdict only) is the least strict.
pub(crate) fn threshold_rank(t: Option<Threshold>) -> (bool, Option<Threshold>) {
    (t.is_none(), t)
}

/// Orders streaming modes from least to most strict: windowed with larger
/// windows first, buffered last.
pub(crate) fn streaming_rank(s: Streaming) -> (bool, std::cmp::Reverse<u32>) {
    match s {
        Streaming::Buffered {} => (true, std::cmp::Reverse(0)),
        Streaming::Windowed { window_tokens } => (false, std::cmp::Reverse(window_tokens.get())),
    }
}
