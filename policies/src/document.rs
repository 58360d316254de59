//! The policy document format: what one YAML file in a policy directory says.
//!
//! Every setting a document leaves out takes a built-in default (see
//! [`defaults`]); merging then keeps, per setting, the strictest value among
//! all documents that apply (see `merge`). Unknown fields are errors.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::names::{BackendName, PolicyId, RuleId, ScopeName, ToolName};
use crate::taxonomy::{CategoryCode, GuardVariant};

/// Built-in values for settings a document leaves out.
pub mod defaults {
    use super::{Action, FailMode, Streaming};

    /// Guard failures refuse the turn unless a policy says otherwise.
    pub const FAIL_MODE: FailMode = FailMode::FailClosed;
    /// Streams are checked whole before anything is sent.
    pub const STREAMING: Streaming = Streaming::Buffered {};
    /// Action for a category that no `actions` entry names.
    pub const ACTION: Action = Action::Block;
    /// How many times an invalid tool call is fed back to the model.
    pub const MAX_TOOL_RETRIES: u8 = 2;
    /// Message content is stored in the audit log unless a policy says not to.
    pub const STORE_CONTENT: bool = true;
    /// What the caller sees when a turn is refused.
    pub const REFUSAL_TEXT: &str = "I can't help with that request.";
}

/// One policy document, as written in a `*.yaml` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Unique id within the policy directory; recorded in audit events.
    pub id: PolicyId,
    /// What this policy is for, for people reading it.
    pub description: String,
    /// Which requests this policy applies to.
    pub applies_to: AppliesTo,
    /// Checkpoints this policy guards. Omitted: none (other policies may add some).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub checkpoints: BTreeSet<Checkpoint>,
    /// Guard backends to run at each checkpoint, in order: `rules` (the
    /// deterministic detectors below) or the name of a guard backend from the
    /// gateway configuration. All listed backends run; the first block ends the check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendRef>,
    /// The Llama Guard categories this policy checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<CategorySet>,
    /// Action per category: `default` for all categories not named, or a code.
    /// Omitted entries use `block`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<CategorySelector, Action>,
    /// Unsafe-probability thresholds per category (`default` or a code): when
    /// the guard's probability of `unsafe` reaches the threshold, the category
    /// counts as violated even if the greedy verdict does not name it.
    /// Lower is stricter. Omitted: the greedy verdict alone decides.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub thresholds: BTreeMap<CategorySelector, Threshold>,
    /// Text the caller sees when a turn is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal_text: Option<String>,
    /// What happens when a guard fails (timeout, crash, unparseable output),
    /// per checkpoint. Omitted checkpoints are `fail_closed`.
    #[serde(default, skip_serializing_if = "FailModes::is_unset")]
    pub fail_mode: FailModes,
    /// How streamed output is guarded. Omitted: `buffered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<Streaming>,
    /// Tools that may be called. Omitted: this policy restricts no tool;
    /// `[]`: no tool may be called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<BTreeSet<ToolName>>,
    /// Whether message content is stored in the audit log (otherwise only its
    /// SHA-256). Omitted: `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_content: Option<bool>,
    /// How many times an invalid tool call is fed back to the model before
    /// the turn ends with an error. Omitted: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_retries: Option<u8>,
    /// Deterministic detectors run by the `rules` backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// Which requests a policy applies to: `default`, or a one-entry mapping
/// such as `{tenant: acme}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AppliesTo {
    /// Every request.
    Default,
    /// Requests from this tenant.
    Tenant(ScopeName),
    /// Requests made with this API key (its configured id, never the secret).
    Key(ScopeName),
    /// Requests for this generator model (including agents that run it).
    Model(ScopeName),
    /// Requests for this agent.
    Agent(ScopeName),
}

impl AppliesTo {
    /// How specific the scope is; used only to pick non-safety settings such
    /// as the refusal text (the most specific policy's text is shown).
    pub fn specificity(&self) -> u8 {
        match self {
            Self::Default => 0,
            Self::Tenant(_) => 1,
            Self::Model(_) => 2,
            Self::Agent(_) => 3,
            Self::Key(_) => 4,
        }
    }
}

impl fmt::Display for AppliesTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::Tenant(n) => write!(f, "tenant {n}"),
            Self::Key(n) => write!(f, "key {n}"),
            Self::Model(n) => write!(f, "model {n}"),
            Self::Agent(n) => write!(f, "agent {n}"),
        }
    }
}

/// A point in a turn where the guard runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoint {
    /// The caller's messages, before the generator sees them.
    Input,
    /// The generator's answer, before the caller sees it.
    Output,
    /// A tool call the model made, before it runs or is returned.
    ToolCall,
    /// A tool's result, before the model sees it.
    ToolResult,
}

impl Checkpoint {
    /// All checkpoints, in turn order.
    pub const ALL: [Checkpoint; 4] = [
        Checkpoint::Input,
        Checkpoint::Output,
        Checkpoint::ToolCall,
        Checkpoint::ToolResult,
    ];

    /// The name used in policy files and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
            Self::ToolCall => "tool_call",
            Self::ToolResult => "tool_result",
        }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A guard backend a policy runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BackendRef {
    /// The built-in deterministic rules of the applicable policies.
    Rules,
    /// A `local` or `remote` guard backend named in the gateway configuration.
    Named(BackendName),
}

/// The reserved backend name for the rules detectors.
pub const RULES_BACKEND: &str = "rules";

impl TryFrom<String> for BackendRef {
    type Error = crate::names::InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s == RULES_BACKEND {
            return Ok(Self::Rules);
        }
        BackendName::new(s).map(Self::Named)
    }
}

impl From<BackendRef> for String {
    fn from(b: BackendRef) -> String {
        match b {
            BackendRef::Rules => RULES_BACKEND.to_owned(),
            BackendRef::Named(n) => n.into(),
        }
    }
}

impl fmt::Display for BackendRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rules => f.write_str(RULES_BACKEND),
            Self::Named(n) => f.write_str(n.as_str()),
        }
    }
}

impl JsonSchema for BackendRef {
    fn schema_name() -> Cow<'static, str> {
        "BackendRef".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "description": "`rules`, or the name of a guard backend from the gateway configuration."
        })
    }
}

/// The categories a policy checks: a variant's standard list, minus
/// exclusions, plus custom categories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CategorySet {
    /// Which standard category list to start from.
    pub variant: GuardVariant,
    /// Standard codes of the variant not to check.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub exclude: BTreeSet<CategoryCode>,
    /// Additional categories, written into the guard prompt; codes above S14.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<CategoryCode, CustomCategory>,
}

impl CategorySet {
    /// The codes this set checks with their names, in code order.
    pub fn codes(&self) -> BTreeMap<CategoryCode, String> {
        let mut out: BTreeMap<CategoryCode, String> = self
            .variant
            .default_categories()
            .filter(|(c, _)| !self.exclude.contains(c))
            .map(|(c, n)| (c, n.to_owned()))
            .collect();
        for (code, custom) in &self.custom {
            out.insert(*code, custom.name.clone());
        }
        out
    }
}

/// A category defined by a policy rather than by the model card.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomCategory {
    /// Short name, as in `S15: <name>.` in the guard prompt.
    pub name: String,
    /// What the category covers, written into the guard prompt.
    pub description: String,
}

/// What to do when a category is violated.
///
/// Ordered from weakest to strictest (`flag < redact < block`); a category a
/// policy does not check at all is weaker still ("allow").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Allow and record the violation.
    Flag,
    /// Replace the text a rule matched; only for categories a rule of the
    /// same policy detects. A model verdict in such a category has no span
    /// to redact and is treated as `block`.
    Redact,
    /// Refuse the turn.
    Block,
}

impl Action {
    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flag => "flag",
            Self::Redact => "redact",
            Self::Block => "block",
        }
    }
}

/// A key of `actions` / `thresholds`: every category, or one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CategorySelector {
    /// Every category without an entry of its own.
    Default,
    /// One category.
    Code(CategoryCode),
}

impl FromStr for CategorySelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "default" {
            return Ok(Self::Default);
        }
        s.parse::<CategoryCode>()
            .map(Self::Code)
            .map_err(|e| format!("{e}, or `default`"))
    }
}

impl fmt::Display for CategorySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::Code(c) => c.fmt(f),
        }
    }
}

impl Serialize for CategorySelector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CategorySelector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for CategorySelector {
    fn schema_name() -> Cow<'static, str> {
        "CategorySelector".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^(default|S[1-9][0-9]*)$"})
    }
}

/// A probability of `unsafe` between 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Threshold(f64);

/// Why a number is not a threshold.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("threshold {0} is not between 0 and 1")]
pub struct InvalidThreshold(pub f64);

impl Threshold {
    /// `p` if it is within `0.0..=1.0`.
    pub fn new(p: f64) -> Result<Self, InvalidThreshold> {
        if (0.0..=1.0).contains(&p) {
            Ok(Self(p))
        } else {
            Err(InvalidThreshold(p))
        }
    }

    /// The probability.
    pub fn value(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Threshold {
    type Error = InvalidThreshold;
    fn try_from(p: f64) -> Result<Self, InvalidThreshold> {
        Self::new(p)
    }
}

impl From<Threshold> for f64 {
    fn from(t: Threshold) -> f64 {
        t.0
    }
}

// NaN is rejected by `new`, so the order is total.
impl Eq for Threshold {}
impl PartialOrd for Threshold {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Threshold {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for Threshold {
    fn schema_name() -> Cow<'static, str> {
        "Threshold".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "minimum": 0.0, "maximum": 1.0})
    }
}

/// What happens when a guard fails.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Allow the turn and audit it as unguarded.
    FailOpen,
    /// Refuse the turn and audit a guard error (stricter).
    FailClosed,
}

impl FailMode {
    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
}

/// Fail mode per checkpoint; omitted checkpoints use `fail_closed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailModes {
    /// For the `input` checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<FailMode>,
    /// For the `output` checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<FailMode>,
    /// For the `tool_call` checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<FailMode>,
    /// For the `tool_result` checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_result: Option<FailMode>,
}

impl FailModes {
    /// The setting for one checkpoint, if the document gives one.
    pub fn get(&self, cp: Checkpoint) -> Option<FailMode> {
        match cp {
            Checkpoint::Input => self.input,
            Checkpoint::Output => self.output,
            Checkpoint::ToolCall => self.tool_call,
            Checkpoint::ToolResult => self.tool_result,
        }
    }

    /// True when no checkpoint has a setting.
    pub fn is_unset(&self) -> bool {
        Checkpoint::ALL.iter().all(|cp| self.get(*cp).is_none())
    }
}

/// How streamed output is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Streaming {
    /// The whole answer is generated and checked before the first chunk
    /// leaves (strictest).
    Buffered {},
    /// Tokens are released in windows, each only after the answer so far
    /// passed the guard.
    Windowed {
        /// Tokens per window; smaller windows are checked more often.
        window_tokens: NonZeroU32,
    },
}

/// A deterministic detector run by the `rules` backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique within the document.
    pub id: RuleId,
    /// The category a match counts as.
    pub category: CategoryCode,
    /// What the rule looks for.
    #[serde(rename = "match")]
    pub matcher: Matcher,
    /// For `keywords`: match case exactly (default: ignore case). Regexes
    /// say `(?i)` themselves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_sensitive: bool,
}

/// What a rule looks for: a one-entry mapping such as `{regex: '...'}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Matcher {
    /// A regular expression (Rust `regex` syntax; use `(?i)` for case-insensitive).
    Regex(String),
    /// Words or phrases, matched on word boundaries (ignoring case unless
    /// the rule says `case_sensitive: true`).
    Keywords(Vec<String>),
    /// A built-in detector of personal data or secrets.
    Detector(BuiltinDetector),
}

/// Built-in detectors of personal data and secrets (the same set the guard
/// crate's rules backend implements).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinDetector {
    /// E-mail addresses.
    Email,
    /// Phone numbers: `+` international, or `(555) 123-4567` style.
    Phone,
    /// Payment card numbers (13–19 digits) that pass the Luhn check.
    CreditCard,
    /// `sk-…` API keys.
    ApiKey,
    /// AWS access key ids.
    AwsAccessKey,
    /// GitHub tokens.
    GithubToken,
    /// Slack tokens.
    SlackToken,
    /// Google API keys.
    GoogleApiKey,
    /// Stripe secret keys.
    StripeKey,
    /// PEM private-key blocks.
    PrivateKey,
}
