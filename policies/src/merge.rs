//! Merging the documents that apply to a request.
//!
//! Every document is first read on its own with built-in defaults for what it
//! leaves out; the merge then keeps, per setting, the strictest value:
//!
//! - checkpoints, backends, categories and rules: union;
//! - per category: the strictest action (block > redact > flag > not
//!   checked) and the lowest threshold;
//! - per checkpoint: `fail_closed` over `fail_open` (so `fail_open` holds
//!   only when every applicable document says so);
//! - streaming: `buffered` over `windowed`, else the smallest window;
//! - tools: the intersection of the documents' lists (a document without a
//!   list restricts nothing);
//! - `store_content`: `false` over `true`. Not storing content is the
//!   stricter choice because a privacy rule, once broken, cannot be undone,
//!   while the audit trail keeps each message's SHA-256 and stays
//!   verifiable; a tenant that must not have prompts at rest must never be
//!   overruled by a broader document;
//! - `max_tool_retries`: the smallest;
//! - refusal text (not a safety setting): the most specific document's
//!   (key > agent > model > tenant > default, then the lowest id).
//!
//! Every rule is commutative, so the result does not depend on order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::document::{defaults, Action, CategorySelector, Checkpoint, Streaming, Threshold};
use crate::effective::{
    streaming_rank, threshold_rank, EffectiveBackend, EffectiveCategory, EffectivePolicy,
    EffectiveRule, Member, Origin, Origins, Sourced, ToolsAllowed,
};
use crate::load::LoadedPolicy;
use crate::taxonomy::CategoryCode;
use crate::version::Version;

/// Keeps the value with the greatest `key` and the origins of every
/// contribution equal to it; the built-in default when there is none.
fn strictest<T, K, I>(contributions: I, default: T, key: impl Fn(&T) -> K) -> Sourced<T>
where
    T: Clone + PartialEq,
    K: Ord,
    I: IntoIterator<Item = (T, Origin)>,
{
    let contributions: Vec<(T, Origin)> = contributions.into_iter().collect();
    let Some(best) = contributions.iter().map(|(v, _)| v).max_by_key(|v| key(v)) else {
        return Sourced::new(default, Origin::BuiltIn);
    };
    let best = best.clone();
    let from = contributions
        .into_iter()
        .filter(|(v, _)| *v == best)
        .map(|(_, o)| o)
        .collect();
    Sourced { value: best, from }
}

/// The origin of a document's value: itself when it wrote one, the built-in
/// default when it left the setting out.
fn origin_of<T>(p: &LoadedPolicy, written: &Option<T>) -> Origin {
    if written.is_some() {
        Origin::Policy(p.id().clone())
    } else {
        Origin::BuiltIn
    }
}

/// Merges documents into the effective policy; the order of `policies` does
/// not matter.
pub fn merge(policies: &[&LoadedPolicy]) -> EffectivePolicy {
    let mut members: Vec<&LoadedPolicy> = policies.to_vec();
    members.sort_by(|a, b| {
        (a.document.applies_to.specificity(), a.id())
            .cmp(&(b.document.applies_to.specificity(), b.id()))
    });
    members.dedup_by(|a, b| a.id() == b.id() && a.version == b.version);
    let pol = |p: &LoadedPolicy| Origin::Policy(p.id().clone());

    let mut checkpoints: BTreeMap<Checkpoint, Origins> = BTreeMap::new();
    for p in &members {
        for cp in &p.document.checkpoints {
            checkpoints.entry(*cp).or_default().insert(pol(p));
        }
    }

    // Backends run in the order of their earliest position in any document
    // (ties by name), which does not depend on document order.
    let mut backends: BTreeMap<_, (usize, Origins)> = BTreeMap::new();
    for p in &members {
        for (i, b) in p.document.backends.iter().enumerate() {
            let e = backends.entry(b.clone()).or_insert((i, Origins::new()));
            e.0 = e.0.min(i);
            e.1.insert(pol(p));
        }
    }
    let mut backends: Vec<_> = backends.into_iter().collect();
    backends.sort_by(|(a, (ia, _)), (b, (ib, _))| (ia, a).cmp(&(ib, b)));
    let backends = backends
        .into_iter()
        .map(|(backend, (_, from))| EffectiveBackend { backend, from })
        .collect();

    let categories = merge_categories(&members);

    let fail_modes = Checkpoint::ALL
        .into_iter()
        .map(|cp| {
            let c = members.iter().map(|p| {
                let w = p.document.fail_mode.get(cp);
                (w.unwrap_or(defaults::FAIL_MODE), origin_of(p, &w))
            });
            (cp, strictest(c, defaults::FAIL_MODE, |m| *m))
        })
        .collect();

    let streaming = strictest(
        members.iter().map(|p| {
            let w = p.document.streaming;
            (w.unwrap_or(defaults::STREAMING), origin_of(p, &w))
        }),
        defaults::STREAMING,
        |s: &Streaming| streaming_rank(*s),
    );

    let store_content = strictest(
        members.iter().map(|p| {
            let w = p.document.store_content;
            (w.unwrap_or(defaults::STORE_CONTENT), origin_of(p, &w))
        }),
        defaults::STORE_CONTENT,
        |b| !*b,
    );

    let max_tool_retries = strictest(
        members.iter().map(|p| {
            let w = p.document.max_tool_retries;
            (w.unwrap_or(defaults::MAX_TOOL_RETRIES), origin_of(p, &w))
        }),
        defaults::MAX_TOOL_RETRIES,
        |n| Reverse(*n),
    );

    let mut allowed_tools = Sourced::new(ToolsAllowed::Any, Origin::BuiltIn);
    for p in &members {
        if let Some(list) = &p.document.allowed_tools {
            let narrowed = match &allowed_tools.value {
                ToolsAllowed::Any => list.clone(),
                ToolsAllowed::Only(current) => current.intersection(list).cloned().collect(),
            };
            allowed_tools.value = ToolsAllowed::Only(narrowed);
            allowed_tools.from.remove(&Origin::BuiltIn);
            allowed_tools.from.insert(pol(p));
        }
    }

    // The most specific document wins; among equally specific ones, the
    // lowest id, so the choice does not depend on order.
    let refusal_text = members
        .iter()
        .filter_map(|p| p.document.refusal_text.as_ref().map(|t| (*p, t)))
        .max_by(|(a, _), (b, _)| {
            (a.document.applies_to.specificity(), Reverse(a.id()))
                .cmp(&(b.document.applies_to.specificity(), Reverse(b.id())))
        })
        .map(|(p, t)| Sourced::new(t.clone(), pol(p)))
        .unwrap_or_else(|| Sourced::new(defaults::REFUSAL_TEXT.to_owned(), Origin::BuiltIn));

    let mut rules: Vec<EffectiveRule> = members
        .iter()
        .flat_map(|p| {
            p.document.rules.iter().map(|r| EffectiveRule {
                policy: p.id().clone(),
                rule: r.clone(),
            })
        })
        .collect();
    // Stable sort keeps each document's own rule order.
    rules.sort_by(|a, b| a.policy.cmp(&b.policy));

    let member_list: Vec<Member> = members
        .iter()
        .map(|p| Member {
            id: p.id().clone(),
            version: p.version.clone(),
            applies_to: p.document.applies_to.clone(),
        })
        .collect();
    let (id, version) = identify(&member_list, &BTreeSet::new());

    EffectivePolicy {
        id,
        version,
        members: member_list,
        checkpoints,
        backends,
        categories,
        refusal_text,
        fail_modes,
        streaming,
        allowed_tools,
        store_content,
        max_tool_retries,
        rules,
        request_categories: BTreeSet::new(),
    }
}

/// One document's view of one category.
struct CategoryVote {
    origin: Origin,
    action: (Action, Origin),
    threshold: (Option<Threshold>, Origin),
    name: String,
    description: Option<String>,
}

fn merge_categories(members: &[&LoadedPolicy]) -> BTreeMap<CategoryCode, EffectiveCategory> {
    let mut votes: BTreeMap<CategoryCode, Vec<CategoryVote>> = BTreeMap::new();
    for p in members {
        let doc = &p.document;
        let Some(set) = &doc.categories else { continue };
        let me = Origin::Policy(p.id().clone());
        for (code, name) in set.codes() {
            let action = doc
                .actions
                .get(&CategorySelector::Code(code))
                .or_else(|| doc.actions.get(&CategorySelector::Default))
                .copied();
            let threshold = doc
                .thresholds
                .get(&CategorySelector::Code(code))
                .or_else(|| doc.thresholds.get(&CategorySelector::Default))
                .copied();
            votes.entry(code).or_default().push(CategoryVote {
                origin: me.clone(),
                action: (
                    action.unwrap_or(defaults::ACTION),
                    if action.is_some() {
                        me.clone()
                    } else {
                        Origin::BuiltIn
                    },
                ),
                threshold: (
                    threshold,
                    if threshold.is_some() {
                        me.clone()
                    } else {
                        Origin::BuiltIn
                    },
                ),
                name,
                description: set.custom.get(&code).map(|c| c.description.clone()),
            });
        }
    }

    votes
        .into_iter()
        .map(|(code, votes)| {
            // Validation gives a custom code one meaning per directory; pick
            // deterministically anyway so merging stays order-independent.
            let (name, description) = votes
                .iter()
                .map(|v| (v.name.clone(), v.description.clone()))
                .min()
                .unwrap_or_default();
            let action = strictest(
                votes.iter().map(|v| v.action.clone()),
                defaults::ACTION,
                |a| *a,
            );
            let threshold = strictest(votes.iter().map(|v| v.threshold.clone()), None, |t| {
                Reverse(threshold_rank(*t))
            });
            let cat = EffectiveCategory {
                name,
                description,
                from: votes.iter().map(|v| v.origin.clone()).collect(),
                action,
                threshold,
            };
            (code, cat)
        })
        .collect()
}

/// The effective id and version for these members and request additions.
pub(crate) fn identify(members: &[Member], extra: &BTreeSet<CategoryCode>) -> (String, Version) {
    let mut id: Vec<String> = members.iter().map(|m| m.id.to_string()).collect();
    let mut hashed = String::from("warden-effective-policy\n");
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    for m in sorted {
        hashed.push_str(&format!("{} {}\n", m.id, m.version));
    }
    if !extra.is_empty() {
        id.push("request".to_owned());
        let codes: Vec<String> = extra.iter().map(|c| c.to_string()).collect();
        hashed.push_str(&format!("request {}\n", codes.join(",")));
    }
    let id = if id.is_empty() {
        "none".to_owned()
    } else {
        id.join("+")
    };
    (id, Version::of_bytes(hashed.as_bytes()))
}
