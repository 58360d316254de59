//! Renders an effective policy with, for every setting, where it came from;
//! `warden policy explain --tenant T --key K --model M` prints this.

use std::fmt::Write as _;

use crate::document::{BackendRef, Checkpoint, Matcher, Streaming};
use crate::effective::{EffectivePolicy, Origins, ToolsAllowed};
use crate::load::PolicySet;
use crate::scope::RequestScope;

fn origins(from: &Origins) -> String {
    from.iter()
        .map(|o| o.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The effective policy as text, one setting per line with its origins.
pub fn explain(eff: &EffectivePolicy) -> String {
    let mut out = String::new();
    // `write!` into a String cannot fail.
    let w = &mut out;
    let _ = writeln!(w, "effective policy {}", eff.id);
    let _ = writeln!(w, "version {}", eff.version);
    let _ = writeln!(w);
    let _ = writeln!(w, "documents (least to most specific):");
    if eff.members.is_empty() {
        let _ = writeln!(w, "  (none apply: built-in defaults only)");
    }
    for m in &eff.members {
        let _ = writeln!(
            w,
            "  {:<24} applies to {:<28} version {}",
            m.id.as_str(),
            m.applies_to.to_string(),
            m.version.short()
        );
    }
    if !eff.request_categories.is_empty() {
        let codes: Vec<String> = eff
            .request_categories
            .iter()
            .map(|c| c.to_string())
            .collect();
        let _ = writeln!(w, "  request adds categories {}", codes.join(", "));
    }

    let _ = writeln!(w);
    let _ = writeln!(w, "checkpoints:");
    for cp in Checkpoint::ALL {
        match eff.checkpoints.get(&cp) {
            Some(from) => {
                let _ = writeln!(w, "  {:<12} on    from {}", cp.as_str(), origins(from));
            }
            None => {
                let _ = writeln!(w, "  {:<12} off   (no document enables it)", cp.as_str());
            }
        }
    }

    let _ = writeln!(w);
    let _ = writeln!(w, "backends, in order:");
    if eff.backends.is_empty() {
        let _ = writeln!(w, "  (none)");
    }
    for (i, b) in eff.backends.iter().enumerate() {
        let kind = match b.backend {
            BackendRef::Rules => " (rules)",
            BackendRef::Named(_) => "",
        };
        let _ = writeln!(
            w,
            "  {}. {}{kind}    from {}",
            i + 1,
            b.backend,
            origins(&b.from)
        );
    }

    let _ = writeln!(w);
    let _ = writeln!(w, "categories:");
    if eff.categories.is_empty() {
        let _ = writeln!(w, "  (none)");
    }
    for (code, c) in &eff.categories {
        let threshold = match c.threshold.value {
            Some(t) => format!("threshold {t} from {}", origins(&c.threshold.from)),
            None => "no threshold (greedy verdict)".to_owned(),
        };
        let _ = writeln!(
            w,
            "  {:<4} {:<26} {:<6} from {}; {threshold}; checked by {}",
            code.to_string(),
            c.name,
            c.action.value.as_str(),
            origins(&c.action.from),
            origins(&c.from)
        );
        if let Some(d) = &c.description {
            let _ = writeln!(w, "       {d}");
        }
    }

    let _ = writeln!(w);
    let _ = writeln!(w, "fail mode:");
    for (cp, m) in &eff.fail_modes {
        let _ = writeln!(
            w,
            "  {:<12} {:<12} from {}",
            cp.as_str(),
            m.value.as_str(),
            origins(&m.from)
        );
    }

    let _ = writeln!(w);
    let streaming = match eff.streaming.value {
        Streaming::Buffered {} => "buffered".to_owned(),
        Streaming::Windowed { window_tokens } => format!("windowed, {window_tokens} tokens"),
    };
    let _ = writeln!(
        w,
        "streaming:        {streaming}    from {}",
        origins(&eff.streaming.from)
    );
    let tools = match &eff.allowed_tools.value {
        ToolsAllowed::Any => "any configured tool".to_owned(),
        ToolsAllowed::Only(set) if set.is_empty() => "none".to_owned(),
        ToolsAllowed::Only(set) => set
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let _ = writeln!(
        w,
        "allowed tools:    {tools}    from {}",
        origins(&eff.allowed_tools.from)
    );
    let _ = writeln!(
        w,
        "store content:    {}    from {}",
        eff.store_content.value,
        origins(&eff.store_content.from)
    );
    let _ = writeln!(
        w,
        "max tool retries: {}    from {}",
        eff.max_tool_retries.value,
        origins(&eff.max_tool_retries.from)
    );
    let _ = writeln!(
        w,
        "refusal text:     {:?}    from {}",
        eff.refusal_text.value,
        origins(&eff.refusal_text.from)
    );

    let _ = writeln!(w);
    let _ = writeln!(w, "rules:");
    if eff.rules.is_empty() {
        let _ = writeln!(w, "  (none)");
    }
    for r in &eff.rules {
        let what = match &r.rule.matcher {
            Matcher::Regex(re) => format!("regex {re:?}"),
            Matcher::Keywords(k) => format!(
                "keywords {k:?}{}",
                if r.rule.case_sensitive {
                    " (case-sensitive)"
                } else {
                    ""
                }
            ),
            Matcher::Detector(d) => format!("detector {}", detector_name(*d)),
        };
        let _ = writeln!(
            w,
            "  {}/{}  {}  {what}",
            r.policy, r.rule.id, r.rule.category
        );
    }
    out
}

fn detector_name(d: crate::document::BuiltinDetector) -> String {
    serde_json::to_value(d)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{d:?}"))
}

/// The text the audit stores once per effective policy version: the
/// explanation, then each member document as the canonical JSON its version
/// is the SHA-256 of, so an auditor can check every version against it.
pub fn record_text(eff: &EffectivePolicy, set: &PolicySet) -> String {
    let mut out = explain(eff);
    for m in &eff.members {
        let _ = writeln!(out, "\ndocument {} version {}", m.id.as_str(), m.version);
        match set.get(m.id.as_str()) {
            Some(doc) if doc.version == m.version => {
                out.push_str(&crate::version::canonical_json(&doc.document));
                out.push('\n');
            }
            // A request keeps the set it started with, so this is only
            // reachable with a set other than the one `eff` came from.
            _ => out.push_str("(not in this set)\n"),
        }
    }
    out
}

impl PolicySet {
    /// The effective policy for `req`, explained.
    pub fn explain(&self, req: &RequestScope<'_>) -> String {
        explain(&self.effective(req))
    }
}
