//! One guard checkpoint under the effective policy: run its backends in
//! order, turn their findings into the policy's decision, and apply the
//! fail mode when a backend gives no verdict.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warden_guard::rules::{BuiltinDetector as GuardDetector, DetectorRule, KeywordRule, RegexRule};
use warden_guard::{
    classify_with_timeout, BackendKind, CategorySet, ChatMessage, GuardBackend, GuardRequest,
    LocalBackend, RulesBackend, RulesConfig, Verdict,
};
use warden_policies::document::{BuiltinDetector as PolicyDetector, Matcher};
use warden_policies::taxonomy::CategoryCode;
use warden_policies::{Action, BackendRef, Checkpoint, EffectivePolicy, FailMode, Findings};

use crate::openai::VerdictInfo;
use crate::stream_check::StreamSessions;

/// A configured model backend and its deadline.
#[derive(Clone)]
pub struct NamedGuard {
    /// The backend.
    pub backend: Arc<dyn GuardBackend>,
    /// Deadline of one classification.
    pub timeout: Duration,
    /// The same backend when it runs in-process, for incremental stream checks.
    pub local: Option<LocalBackend>,
}

/// The guard backends of the configuration, and compiled rules per policy.
pub struct Guards {
    named: BTreeMap<String, NamedGuard>,
    // Compiling regexes per request would dominate a request's CPU time;
    // effective policies with the same version have the same rules.
    rules: Mutex<HashMap<String, Arc<RulesBackend>>>,
}

/// What one checkpoint decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The policy does not run this checkpoint (or nothing to judge).
    NotRun,
    /// Nothing violated.
    Allowed,
    /// Violations whose action is `flag`: allowed and recorded.
    Flagged(Vec<CategoryCode>),
    /// Rule matches whose action is `redact`: the spans (byte ranges of the
    /// judged message's text) must be masked.
    Redacted {
        /// The categories.
        categories: Vec<CategoryCode>,
        /// The spans to mask, sorted, not overlapping.
        spans: Vec<Range<usize>>,
    },
    /// A violation whose action is `block`.
    Blocked(Vec<CategoryCode>),
    /// A backend failed and the policy fails open: served unguarded.
    Unguarded(String),
    /// A backend failed and the policy fails closed.
    Failed(String),
}

impl Outcome {
    /// Whether the turn must be refused.
    pub fn refuses(&self) -> bool {
        matches!(self, Self::Blocked(_) | Self::Failed(_))
    }

    /// The decision word used in the `warden` object.
    pub fn word(&self) -> &'static str {
        match self {
            Self::NotRun | Self::Allowed => "allowed",
            Self::Flagged(_) => "flagged",
            Self::Redacted { .. } => "redacted",
            Self::Blocked(_) | Self::Failed(_) => "blocked",
            Self::Unguarded(_) => "unguarded",
        }
    }

    /// The categories behind the outcome.
    pub fn categories(&self) -> &[CategoryCode] {
        match self {
            Self::Flagged(c) | Self::Blocked(c) | Self::Redacted { categories: c, .. } => c,
            _ => &[],
        }
    }

    /// How strongly the outcome counts when several checkpoints ran.
    pub fn rank(&self) -> u8 {
        match self {
            Self::NotRun | Self::Allowed => 0,
            Self::Flagged(_) => 1,
            Self::Redacted { .. } => 2,
            Self::Unguarded(_) => 3,
            Self::Blocked(_) | Self::Failed(_) => 4,
        }
    }
}

/// One checkpoint's result: the outcome and every verdict.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// What was decided.
    pub outcome: Outcome,
    /// Every backend's verdict.
    pub verdicts: Vec<VerdictRecord>,
}

/// One backend's verdict, for the response and the audit.
#[derive(Debug, Clone)]
pub struct VerdictRecord {
    /// Configured name (`rules` for the rules).
    pub backend: String,
    /// Which kind of backend.
    pub kind: BackendKind,
    /// Guard model name.
    pub model: Option<String>,
    /// The verdict, or why there is none.
    pub result: Result<Verdict, String>,
    /// P(unsafe).
    pub score: Option<f32>,
    /// What the policy did with it.
    pub action: Option<Action>,
    /// Time taken.
    pub latency: Duration,
}

impl VerdictRecord {
    /// The response form.
    pub fn info(&self, checkpoint: Checkpoint) -> VerdictInfo {
        let (verdict, categories, error) = match &self.result {
            Ok(Verdict::Safe) => ("safe", Vec::new(), None),
            Ok(v) => (
                "unsafe",
                v.categories().iter().map(ToString::to_string).collect(),
                None,
            ),
            Err(e) => ("error", Vec::new(), Some(e.clone())),
        };
        VerdictInfo {
            checkpoint: checkpoint.as_str(),
            backend: self.backend.clone(),
            kind: self.kind.as_str(),
            model: self.model.clone(),
            verdict,
            categories,
            score: self.score,
            action: self.action.map(Action::as_str),
            latency_ms: self.latency.as_secs_f64() * 1000.0,
            error,
        }
    }
}

/// The guard crate's checkpoint for a policy checkpoint.
pub fn guard_checkpoint(cp: Checkpoint) -> warden_guard::Checkpoint {
    match cp {
        Checkpoint::Input => warden_guard::Checkpoint::Input,
        Checkpoint::Output => warden_guard::Checkpoint::Output,
        Checkpoint::ToolCall => warden_guard::Checkpoint::ToolCall,
        Checkpoint::ToolResult => warden_guard::Checkpoint::ToolResult,
    }
}

fn detector(d: PolicyDetector) -> GuardDetector {
    match d {
        PolicyDetector::Email => GuardDetector::Email,
        PolicyDetector::Phone => GuardDetector::Phone,
        PolicyDetector::CreditCard => GuardDetector::CreditCard,
        PolicyDetector::ApiKey => GuardDetector::ApiKey,
        PolicyDetector::AwsAccessKey => GuardDetector::AwsAccessKey,
        PolicyDetector::GithubToken => GuardDetector::GithubToken,
        PolicyDetector::SlackToken => GuardDetector::SlackToken,
        PolicyDetector::GoogleApiKey => GuardDetector::GoogleApiKey,
        PolicyDetector::StripeKey => GuardDetector::StripeKey,
        PolicyDetector::PrivateKey => GuardDetector::PrivateKey,
    }
}

/// The rules backend configuration of an effective policy.
pub fn rules_config(eff: &EffectivePolicy) -> RulesConfig {
    let mut config = RulesConfig::default();
    for r in &eff.rules {
        let name = format!("{}/{}", r.policy, r.rule.id);
        let category = r.rule.category;
        match &r.rule.matcher {
            Matcher::Regex(pattern) => config.regexes.push(RegexRule {
                name,
                pattern: pattern.clone(),
                category,
            }),
            Matcher::Keywords(words) => config.keywords.push(KeywordRule {
                name,
                words: words.clone(),
                category,
                case_sensitive: r.rule.case_sensitive,
            }),
            Matcher::Detector(d) => config.detectors.push(DetectorRule {
                detector: detector(*d),
                category,
            }),
        }
    }
    config
}

/// The category set the guard prompt lists for an effective policy.
pub fn category_set(eff: &EffectivePolicy) -> Result<CategorySet, String> {
    CategorySet::from_entries(eff.categories.iter().map(|(code, c)| {
        let text = match &c.description {
            Some(d) => CategorySet::custom_text(&c.name, Some(d)),
            None => format!("{}.", c.name),
        };
        (*code, text)
    }))
    .map_err(|e| e.to_string())
}

impl Guards {
    /// The configured model backends by name.
    pub fn new(named: BTreeMap<String, NamedGuard>) -> Self {
        Self {
            named,
            rules: Mutex::new(HashMap::new()),
        }
    }

    /// The configured names (for policy validation).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.keys().map(String::as_str)
    }

    fn rules_for(&self, eff: &EffectivePolicy) -> Result<Arc<RulesBackend>, String> {
        let key = eff.version.to_string();
        if let Some(r) = self.lock_rules().get(&key) {
            return Ok(Arc::clone(r));
        }
        let compiled = Arc::new(RulesBackend::new(&rules_config(eff)).map_err(|e| e.to_string())?);
        let mut cache = self.lock_rules();
        // Policies change rarely; a cache that outgrew them is simply reset.
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&compiled));
        Ok(compiled)
    }

    fn lock_rules(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RulesBackend>>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs checkpoint `cp` on `messages` (whose last message is the one
    /// judged; `judged_text` is its text, which rules scan) under `eff`.
    /// With `sessions`, output checks on local backends continue the
    /// stream's incremental sessions instead of judging the whole answer.
    /// Each model backend's span is a child of `checkpoint_span`.
    pub async fn check(
        &self,
        eff: &EffectivePolicy,
        cp: Checkpoint,
        messages: &[ChatMessage],
        judged_text: &str,
        mut sessions: Option<&mut StreamSessions>,
        checkpoint_span: &tracing::Span,
    ) -> CheckReport {
        let mut report = CheckReport {
            checkpoint: cp,
            outcome: Outcome::NotRun,
            verdicts: Vec::new(),
        };
        if !eff.runs(cp) || eff.backends.is_empty() {
            return report;
        }
        let fail_mode = eff.fail_mode(cp);
        let mut findings = Findings::default();
        let mut rule_spans: Vec<(CategoryCode, Range<usize>)> = Vec::new();
        let mut unguarded: Option<String> = None;
        let mut request: Option<Result<GuardRequest, String>> = None;

        for entry in &eff.backends {
            if matches!(entry.backend, BackendRef::Rules) && eff.rules.is_empty() {
                continue;
            }
            let started = Instant::now();
            // Ends with this iteration; filled in once the verdict is known.
            // Never entered: a span entered around the call is entered and
            // left again on every poll, which cost more than the span.
            // The rules take microseconds: their verdict goes on the
            // checkpoint's span instead of a span of their own.
            let span = match entry.backend {
                BackendRef::Rules => tracing::Span::none(),
                _ => crate::spans::backend(checkpoint_span),
            };
            let (name, result) = match &entry.backend {
                BackendRef::Rules => {
                    let result = self.rules_for(eff).map(|rules| {
                        let matches = rules.scan(judged_text);
                        let verdict = RulesBackend::verdict_for(&matches);
                        for m in &matches {
                            if !findings.rule_categories.contains(&m.category) {
                                findings.rule_categories.push(m.category);
                            }
                            rule_spans.push((m.category, m.span.clone()));
                        }
                        VerdictRecord {
                            backend: "rules".into(),
                            kind: BackendKind::Rules,
                            model: None,
                            result: Ok(verdict),
                            score: None,
                            action: None,
                            latency: started.elapsed(),
                        }
                    });
                    ("rules".to_owned(), result)
                }
                BackendRef::Named(name) => {
                    let name = name.as_str().to_owned();
                    match self.named.get(&name) {
                        // Policies are validated against the configured names,
                        // so this is a configuration race; never read as safe.
                        None => {
                            let err = Err(format!("guard backend {name:?} is not configured"));
                            (name, err)
                        }
                        Some(guard) => {
                            let req = request.get_or_insert_with(|| {
                                let categories = category_set(eff)?;
                                GuardRequest::from_chat(guard_checkpoint(cp), messages, categories)
                                    .map_err(|e| e.to_string())
                            });
                            let result = match req {
                                Err(e) => Err(e.clone()),
                                Ok(req) => {
                                    let classified = match (sessions.as_deref_mut(), &guard.local) {
                                        (Some(sessions), Some(local))
                                            if cp == Checkpoint::Output =>
                                        {
                                            sessions
                                                .classify(&name, local, req, guard.timeout)
                                                .await
                                        }
                                        _ => {
                                            classify_with_timeout(
                                                guard.backend.as_ref(),
                                                req,
                                                guard.timeout,
                                            )
                                            .await
                                        }
                                    };
                                    match classified {
                                        Ok(outcome) => {
                                            for c in outcome.verdict.categories() {
                                                if !findings.model_categories.contains(c) {
                                                    findings.model_categories.push(*c);
                                                }
                                            }
                                            if let Some(s) = outcome.unsafe_score {
                                                let s = f64::from(s);
                                                findings.unsafe_score = Some(
                                                    findings.unsafe_score.map_or(s, |o| o.max(s)),
                                                );
                                            }
                                            Ok(VerdictRecord {
                                                backend: name.clone(),
                                                kind: outcome.backend,
                                                model: outcome.model,
                                                result: Ok(outcome.verdict),
                                                score: outcome.unsafe_score,
                                                action: None,
                                                latency: started.elapsed(),
                                            })
                                        }
                                        Err(e) => Err(e.to_string()),
                                    }
                                }
                            };
                            (name, result)
                        }
                    }
                }
            };
            let mut record = match result {
                Ok(r) => r,
                Err(message) => {
                    let kind = match &entry.backend {
                        BackendRef::Rules => BackendKind::Rules,
                        BackendRef::Named(n) => self
                            .named
                            .get(n.as_str())
                            .map_or(BackendKind::Remote, |g| g.backend.kind()),
                    };
                    let failed = VerdictRecord {
                        backend: name.clone(),
                        kind,
                        model: None,
                        result: Err(message.clone()),
                        score: None,
                        action: None,
                        latency: started.elapsed(),
                    };
                    crate::spans::backend_done(&span, &failed);
                    report.verdicts.push(failed);
                    let message = format!("{name}: {message}");
                    match fail_mode {
                        FailMode::FailClosed => {
                            report.outcome = Outcome::Failed(message);
                            return report;
                        }
                        FailMode::FailOpen => {
                            unguarded.get_or_insert(message);
                            continue;
                        }
                    }
                }
            };
            let decision = eff.decide(&findings);
            record.action = record
                .result
                .as_ref()
                .ok()
                .filter(|v| !v.is_safe())
                .and_then(|v| {
                    v.categories()
                        .iter()
                        .filter_map(|c| decision.categories.get(c).copied())
                        .max()
                });
            crate::spans::backend_done(&span, &record);
            report.verdicts.push(record);
            if decision.action() == Some(Action::Block) {
                break;
            }
        }

        let decision = eff.decide(&findings);
        let cats = |want: Action| -> Vec<CategoryCode> {
            decision
                .categories
                .iter()
                .filter(|(_, a)| **a == want)
                .map(|(c, _)| *c)
                .collect()
        };
        report.outcome = match decision.action() {
            Some(Action::Block) => Outcome::Blocked(cats(Action::Block)),
            Some(Action::Redact) => {
                let categories = cats(Action::Redact);
                let mut spans: Vec<Range<usize>> = rule_spans
                    .into_iter()
                    .filter(|(c, _)| categories.contains(c))
                    .map(|(_, s)| s)
                    .collect();
                spans.sort_by_key(|s| (s.start, s.end));
                Outcome::Redacted {
                    categories,
                    spans: merge_spans(spans),
                }
            }
            Some(Action::Flag) => Outcome::Flagged(cats(Action::Flag)),
            None => match unguarded {
                Some(e) => Outcome::Unguarded(e),
                None => Outcome::Allowed,
            },
        };
        report
    }
}

/// Sorted spans with overlaps joined.
fn merge_spans(spans: Vec<Range<usize>>) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for s in spans {
        match out.last_mut() {
            Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
            _ => out.push(s),
        }
    }
    out
}

/// `text` with every span replaced by `[REDACTED]`.
pub fn redact(text: &str, spans: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for s in spans {
        if s.start < at || s.end > text.len() {
            continue;
        }
        out.push_str(&text[at..s.start]);
        out.push_str("[REDACTED]");
        at = s.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_masks_spans() {
        assert_eq!(
            redact("mail a@b.co or c@d.co now", &[5..11, 15..21]),
            "mail [REDACTED] or [REDACTED] now"
        );
        assert_eq!(merge_spans(vec![1..4, 2..6, 8..9]), vec![1..6, 8..9]);
    }
}
