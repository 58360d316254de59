//! Validation errors: each names the file, the line and column, and the
//! field path it is about.

use std::fmt;
use std::path::PathBuf;

use crate::document::RULES_BACKEND;
use crate::taxonomy::CategoryCode;

/// A 1-based line and column in a policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index, from 0.
    Index(usize),
}

/// Where in a document a value sits, e.g. `rules[2].match.regex`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    /// The document root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Key(k.into()));
        p
    }

    /// This path extended by a sequence index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }

    /// True for the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path without its last segment (the root stays the root).
    pub fn parent(&self) -> Self {
        let mut p = self.clone();
        p.0.pop();
        p
    }
}

impl From<&serde_path_to_error::Path> for FieldPath {
    fn from(p: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        Self(
            p.iter()
                .filter_map(|s| match s {
                    S::Seq { index } => Some(Segment::Index(*index)),
                    S::Map { key } => Some(Segment::Key(key.clone())),
                    S::Enum { variant } => Some(Segment::Key(variant.clone())),
                    // Syntax errors happen before a path exists.
                    S::Unknown => None,
                })
                .collect(),
        )
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(".");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Index(n) => write!(f, "[{n}]")?,
                Segment::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
            }
        }
        Ok(())
    }
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The file or directory could not be read.
    #[error("cannot read: {0}")]
    Io(String),
    /// YAML syntax, a wrong type, a missing or unknown field.
    #[error("{0}")]
    Parse(String),
    /// A category code that is neither in the policy's variant nor custom.
    #[error("unknown category code {code}: {available}")]
    UnknownCategory {
        /// The code.
        code: CategoryCode,
        /// What the policy does define, for the message.
        available: String,
    },
    /// A tool the gateway configuration does not declare.
    #[error("unknown tool {name:?}; configured tools: {known}")]
    UnknownTool {
        /// The name.
        name: String,
        /// The configured tools, comma-separated.
        known: String,
    },
    /// A guard backend the gateway configuration does not declare.
    #[error("unknown guard backend {name:?}; configured backends: {known}")]
    UnknownBackend {
        /// The name.
        name: String,
        /// `rules` and the configured backends, comma-separated.
        known: String,
    },
    /// A backend listed twice.
    #[error("backend {0:?} is listed twice")]
    DuplicateBackend(String),
    /// Two documents with one id.
    #[error("duplicate policy id {id:?} (also in {other})")]
    DuplicateId {
        /// The id.
        id: String,
        /// The other file.
        other: String,
    },
    /// Two rules with one id in a document.
    #[error("duplicate rule id {0:?}")]
    DuplicateRuleId(String),
    /// A rule's regular expression does not compile.
    #[error("invalid regular expression: {0}")]
    InvalidRegex(String),
    /// A keyword rule with no keywords or an empty keyword.
    #[error("keywords must be a non-empty list of non-empty words")]
    EmptyKeywords,
    /// `case_sensitive` on a rule that is not a keyword list.
    #[error("`case_sensitive` applies to `keywords` rules only (regexes use `(?i)`)")]
    CaseSensitiveNotKeywords,
    /// Text that must not be empty.
    #[error("must not be empty")]
    EmptyText,
    /// `redact` for a category no rule of the document detects.
    #[error("`redact` is only valid for categories a rule of this policy detects; no rule has category {0}")]
    RedactWithoutRule(CategoryCode),
    /// `redact` as the default action.
    #[error("`redact` cannot be the default action: only rule matches can be redacted; set it per category")]
    RedactAsDefault,
    /// Rules defined without the rules backend.
    #[error("rules are defined but `{RULES_BACKEND}` is not in `backends`")]
    RulesWithoutBackend,
    /// Checkpoints without any backend to run.
    #[error("checkpoints are enabled but no backend is listed here or in a default policy")]
    CheckpointsWithoutBackend,
    /// A model backend with nothing to classify.
    #[error("a guard model backend is listed but neither this policy nor a default policy has `categories`")]
    ModelBackendWithoutCategories,
    /// A custom category that reuses a standard code.
    #[error("custom category {0} reuses a standard code; custom codes start at S15")]
    CustomCodeIsStandard(CategoryCode),
    /// A custom code defined differently in another document.
    #[error("custom category {code} is defined differently in {other}; a code means one thing in the whole directory")]
    CustomCategoryConflict {
        /// The code.
        code: CategoryCode,
        /// The other file.
        other: String,
    },
    /// No document applies to every request.
    #[error("no policy has `applies_to: default`; every request needs a baseline policy")]
    NoDefaultPolicy,
}

/// One validation error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The file (or directory, for directory-wide errors).
    pub file: PathBuf,
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// The field the error is about (the root for whole-file errors).
    pub field: FieldPath,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(loc) = self.location {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        if !self.field.is_root() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.kind)
    }
}

/// All errors found in a policy directory; the directory is refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} policy error(s)", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}
