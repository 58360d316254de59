//! Checks a parsed document against itself and the gateway configuration:
//! everything serde cannot see (codes outside the category set, unknown tools
//! and backends, `redact` without a rule, bad regexes).

use std::collections::{BTreeMap, BTreeSet};

use crate::document::{Action, BackendRef, CategorySelector, Matcher, PolicyDocument};
use crate::error::{ErrorKind, FieldPath};
use crate::locate::Positions;
use crate::taxonomy::{CategoryCode, STANDARD_CATEGORIES};

/// Names declared in the gateway configuration that policies may reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownNames {
    /// Guard backends (`local` and `remote`) by name; `rules` is built in.
    pub backends: BTreeSet<String>,
    /// Tools by name.
    pub tools: BTreeSet<String>,
}

impl KnownNames {
    /// Known names from two lists.
    pub fn new<B, T>(backends: B, tools: T) -> Self
    where
        B: IntoIterator,
        B::Item: Into<String>,
        T: IntoIterator,
        T::Item: Into<String>,
    {
        Self {
            backends: backends.into_iter().map(Into::into).collect(),
            tools: tools.into_iter().map(Into::into).collect(),
        }
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<_> = names.collect();
    if v.is_empty() {
        "(none)".to_owned()
    } else {
        v.join(", ")
    }
}

/// All problems in one document, each with the field it is about.
pub fn check_document(
    doc: &PolicyDocument,
    known: &KnownNames,
    pos: &Positions,
) -> Vec<(FieldPath, ErrorKind)> {
    let root = FieldPath::root();
    let mut errs = Vec::new();

    if doc.description.trim().is_empty() {
        errs.push((root.key("description"), ErrorKind::EmptyText));
    }
    if doc
        .refusal_text
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        errs.push((root.key("refusal_text"), ErrorKind::EmptyText));
    }

    // The category set everything else refers to.
    let codes: BTreeMap<CategoryCode, String> = doc
        .categories
        .as_ref()
        .map(|c| c.codes())
        .unwrap_or_default();
    let available = match &doc.categories {
        None => "this policy has no `categories`".to_owned(),
        Some(c) => format!(
            "this policy's categories are {} (variant {}, after exclusions, plus custom)",
            list(
                codes
                    .keys()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str)
            ),
            c.variant.as_str()
        ),
    };
    let unknown = |code: CategoryCode| ErrorKind::UnknownCategory {
        code,
        available: available.clone(),
    };

    if let Some(cats) = &doc.categories {
        let base = root.key("categories");
        let variant_codes: BTreeSet<CategoryCode> =
            cats.variant.default_categories().map(|(c, _)| c).collect();
        for code in &cats.exclude {
            if !variant_codes.contains(code) {
                let at = pos.item(&base.key("exclude"), &code.to_string());
                errs.push((
                    at,
                    ErrorKind::UnknownCategory {
                        code: *code,
                        available: format!(
                            "only standard codes of {} can be excluded",
                            cats.variant.as_str()
                        ),
                    },
                ));
            }
        }
        for (code, custom) in &cats.custom {
            let at = base.key("custom").key(code.to_string());
            if usize::from(code.number()) <= STANDARD_CATEGORIES.len() {
                errs.push((at.clone(), ErrorKind::CustomCodeIsStandard(*code)));
            }
            if custom.name.trim().is_empty() {
                errs.push((at.key("name"), ErrorKind::EmptyText));
            }
            if custom.description.trim().is_empty() {
                errs.push((at.key("description"), ErrorKind::EmptyText));
            }
        }
    }

    // Rules first: `redact` depends on which categories they detect.
    let mut rule_ids = BTreeSet::new();
    let mut ruled: BTreeSet<CategoryCode> = BTreeSet::new();
    for (i, rule) in doc.rules.iter().enumerate() {
        let at = root.key("rules").index(i);
        if !rule_ids.insert(rule.id.clone()) {
            errs.push((
                at.key("id"),
                ErrorKind::DuplicateRuleId(rule.id.to_string()),
            ));
        }
        if codes.contains_key(&rule.category) {
            ruled.insert(rule.category);
        } else {
            errs.push((at.key("category"), unknown(rule.category)));
        }
        let m = at.key("match");
        match &rule.matcher {
            Matcher::Regex(re) => {
                if let Err(e) = regex::Regex::new(re) {
                    errs.push((m.key("regex"), ErrorKind::InvalidRegex(e.to_string())));
                }
            }
            Matcher::Keywords(words) => {
                if words.is_empty() || words.iter().any(|w| w.trim().is_empty()) {
                    errs.push((m.key("keywords"), ErrorKind::EmptyKeywords));
                }
            }
            Matcher::Detector(_) => {}
        }
        if rule.case_sensitive && !matches!(rule.matcher, Matcher::Keywords(_)) {
            errs.push((
                at.key("case_sensitive"),
                ErrorKind::CaseSensitiveNotKeywords,
            ));
        }
    }

    for (sel, action) in &doc.actions {
        let at = root.key("actions").key(sel.to_string());
        match sel {
            CategorySelector::Default => {
                if *action == Action::Redact {
                    errs.push((at, ErrorKind::RedactAsDefault));
                }
            }
            CategorySelector::Code(code) => {
                if !codes.contains_key(code) {
                    errs.push((at, unknown(*code)));
                } else if *action == Action::Redact && !ruled.contains(code) {
                    errs.push((at, ErrorKind::RedactWithoutRule(*code)));
                }
            }
        }
    }
    for sel in doc.thresholds.keys() {
        if let CategorySelector::Code(code) = sel {
            if !codes.contains_key(code) {
                errs.push((root.key("thresholds").key(sel.to_string()), unknown(*code)));
            }
        }
    }

    let mut seen = BTreeSet::new();
    let known_backends = || {
        list(
            std::iter::once(crate::document::RULES_BACKEND)
                .chain(known.backends.iter().map(String::as_str)),
        )
    };
    for (i, backend) in doc.backends.iter().enumerate() {
        let at = root.key("backends").index(i);
        if !seen.insert(backend) {
            errs.push((at.clone(), ErrorKind::DuplicateBackend(backend.to_string())));
        }
        if let BackendRef::Named(name) = backend {
            if !known.backends.contains(name.as_str()) {
                errs.push((
                    at,
                    ErrorKind::UnknownBackend {
                        name: name.to_string(),
                        known: known_backends(),
                    },
                ));
            }
        }
    }
    if !doc.rules.is_empty() && !doc.backends.contains(&BackendRef::Rules) {
        errs.push((root.key("rules"), ErrorKind::RulesWithoutBackend));
    }

    if let Some(tools) = &doc.allowed_tools {
        for tool in tools {
            if !known.tools.contains(tool.as_str()) {
                errs.push((
                    pos.item(&root.key("allowed_tools"), tool.as_str()),
                    ErrorKind::UnknownTool {
                        name: tool.to_string(),
                        known: list(known.tools.iter().map(String::as_str)),
                    },
                ));
            }
        }
    }

    errs
}
