//! Decision: from what the guard backends found to what the policy does.

use std::collections::BTreeMap;

use crate::document::Action;
use crate::effective::EffectivePolicy;
use crate::taxonomy::CategoryCode;

/// What the backends of one checkpoint found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// Categories named by model verdicts (greedy `unsafe` text).
    pub model_categories: Vec<CategoryCode>,
    /// The highest probability of `unsafe` any model backend reported.
    pub unsafe_score: Option<f64>,
    /// Categories of rule matches (which can be redacted).
    pub rule_categories: Vec<CategoryCode>,
}

/// What to do about the findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// The action per violated category.
    pub categories: BTreeMap<CategoryCode, Action>,
}

impl Decision {
    /// The strictest action, or `None` when nothing was violated (allow).
    pub fn action(&self) -> Option<Action> {
        self.categories.values().copied().max()
    }
}

impl EffectivePolicy {
    /// Applies the policy to the findings of one checkpoint.
    ///
    /// - A category named by a model verdict takes its action; `redact`
    ///   becomes `block`, since a model verdict has no span to mask.
    /// - A checked category whose threshold the unsafe score reaches counts
    ///   as named, whatever the greedy text said.
    /// - A rule match takes its category's action, `redact` included.
    /// - A code the policy does not check (a model answering outside its
    ///   prompt) is blocked: an unexpected verdict is never read as safe.
    pub fn decide(&self, findings: &Findings) -> Decision {
        let mut out: BTreeMap<CategoryCode, Action> = BTreeMap::new();
        let mut raise = |code: CategoryCode, action: Action| {
            let e = out.entry(code).or_insert(action);
            *e = (*e).max(action);
        };
        let model_action = |code: CategoryCode| match self.action(code) {
            Some(Action::Redact) | None => Action::Block,
            Some(a) => a,
        };
        for code in &findings.model_categories {
            raise(*code, model_action(*code));
        }
        if let Some(score) = findings.unsafe_score {
            for (code, cat) in &self.categories {
                if cat.threshold.value.is_some_and(|t| score >= t.value()) {
                    raise(*code, model_action(*code));
                }
            }
        }
        for code in &findings.rule_categories {
            raise(*code, self.action(*code).unwrap_or(Action::Block));
        }
        Decision { categories: out }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadedPolicy;
    use crate::merge::merge;

    fn code(s: &str) -> CategoryCode {
        s.parse().unwrap()
    }

    #[test]
    fn decisions_follow_actions_and_thresholds() {
        let doc = crate::load::parse_document(
            std::path::Path::new("p.yaml"),
            "id: p\ndescription: P.\napplies_to: default\ncategories: {variant: llama-guard-3-8b}\n\
             backends: [rules]\nactions: {S6: flag, S7: redact}\nthresholds: {S1: 0.4}\n\
             rules: [{id: mail, category: S7, match: {detector: email}}]\n",
        )
        .unwrap();
        let eff = merge(&[&LoadedPolicy::new(doc, "p.yaml")]);

        assert_eq!(eff.decide(&Findings::default()).action(), None);
        let flag = Findings {
            model_categories: vec![code("S6")],
            ..Findings::default()
        };
        assert_eq!(eff.decide(&flag).action(), Some(Action::Flag));
        let redact = Findings {
            rule_categories: vec![code("S7")],
            ..Findings::default()
        };
        assert_eq!(eff.decide(&redact).action(), Some(Action::Redact));
        // The model cannot redact: S7 from a verdict blocks.
        let model_s7 = Findings {
            model_categories: vec![code("S7")],
            ..Findings::default()
        };
        assert_eq!(eff.decide(&model_s7).action(), Some(Action::Block));
        // Score over S1's threshold blocks even with a `safe` text.
        let scored = Findings {
            unsafe_score: Some(0.45),
            ..Findings::default()
        };
        let d = eff.decide(&scored);
        assert_eq!(d.action(), Some(Action::Block));
        assert_eq!(
            d.categories.keys().copied().collect::<Vec<_>>(),
            [code("S1")]
        );
        let low = Findings {
            unsafe_score: Some(0.39),
            ..Findings::default()
        };
        assert_eq!(eff.decide(&low).action(), None);
        // An unexpected code is never read as safe.
        let odd = Findings {
            model_categories: vec![code("S42")],
            ..Findings::default()
        };
        assert_eq!(eff.decide(&odd).action(), Some(Action::Block));
    }
}
