//! Which documents apply to a request, and what a request may add.

use std::collections::BTreeSet;

use crate::document::{Action, AppliesTo};
use crate::effective::{EffectiveCategory, EffectivePolicy, Origin, Sourced};
use crate::load::{LoadedPolicy, PolicySet};
use crate::merge::{identify, merge};
use crate::taxonomy::CategoryCode;

/// Who is asking for what: the scopes policies are selected by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestScope<'a> {
    /// The caller's tenant.
    pub tenant: Option<&'a str>,
    /// The configured id of the caller's API key.
    pub key: Option<&'a str>,
    /// The generator model that runs (for an agent, the agent's model).
    pub model: Option<&'a str>,
    /// The agent, when the request names one.
    pub agent: Option<&'a str>,
}

impl<'a> RequestScope<'a> {
    /// A scope for tenant, key and model.
    pub fn new(tenant: &'a str, key: &'a str, model: &'a str) -> Self {
        Self {
            tenant: Some(tenant),
            key: Some(key),
            model: Some(model),
            agent: None,
        }
    }

    /// The same scope for an agent.
    pub fn with_agent(mut self, agent: &'a str) -> Self {
        self.agent = Some(agent);
        self
    }
}

impl AppliesTo {
    /// Whether a document with this scope applies to `req`.
    pub fn matches(&self, req: &RequestScope<'_>) -> bool {
        let is = |want: &crate::names::ScopeName, got: Option<&str>| got == Some(want.as_str());
        match self {
            Self::Default => true,
            Self::Tenant(t) => is(t, req.tenant),
            Self::Key(k) => is(k, req.key),
            Self::Model(m) => is(m, req.model),
            Self::Agent(a) => is(a, req.agent),
        }
    }
}

/// A category a request asked for that no policy and no standard list knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown category {0:?} in metadata.warden.extra_categories: expected S1-S14 or a custom code of the policy directory")]
pub struct UnknownExtraCategory(pub String);

impl PolicySet {
    /// The documents that apply to `req`, ordered by id.
    pub fn applicable(&self, req: &RequestScope<'_>) -> Vec<&LoadedPolicy> {
        self.policies
            .iter()
            .filter(|p| p.document.applies_to.matches(req))
            .map(|p| p.as_ref())
            .collect()
    }

    /// The effective policy for `req`.
    pub fn effective(&self, req: &RequestScope<'_>) -> EffectivePolicy {
        merge(&self.applicable(req))
    }

    /// The effective policy for `req` with the categories the request asked
    /// for (`metadata.warden.extra_categories`) added. A request can only add
    /// checks: added categories are enforced with `block`, categories already
    /// checked become `block` if they were weaker, and nothing is removed.
    /// Unknown codes are an error, never silently dropped.
    pub fn effective_with_extras(
        &self,
        req: &RequestScope<'_>,
        extra_categories: &[impl AsRef<str>],
    ) -> Result<EffectivePolicy, UnknownExtraCategory> {
        let mut codes = BTreeSet::new();
        for raw in extra_categories {
            let raw = raw.as_ref();
            let code: CategoryCode = raw
                .parse()
                .map_err(|_| UnknownExtraCategory(raw.to_owned()))?;
            if code.standard_name().is_none() && !self.custom.contains_key(&code) {
                return Err(UnknownExtraCategory(raw.to_owned()));
            }
            codes.insert(code);
        }
        let mut eff = self.effective(req);
        if codes.is_empty() {
            return Ok(eff);
        }
        for code in &codes {
            let (name, description) = match self.custom.get(code) {
                Some(c) => (c.name.clone(), Some(c.description.clone())),
                None => (code.standard_name().unwrap_or_default().to_owned(), None),
            };
            let cat = eff
                .categories
                .entry(*code)
                .or_insert_with(|| EffectiveCategory {
                    name,
                    description,
                    from: BTreeSet::new(),
                    action: Sourced::new(Action::Block, Origin::Request),
                    threshold: Sourced::new(None, Origin::BuiltIn),
                });
            cat.from.insert(Origin::Request);
            if cat.action.value < Action::Block {
                cat.action = Sourced::new(Action::Block, Origin::Request);
            } else {
                cat.action.from.insert(Origin::Request);
            }
        }
        eff.request_categories = codes;
        let (id, version) = identify(&eff.members, &eff.request_categories);
        eff.id = id;
        eff.version = version;
        Ok(eff)
    }
}
