//! The spans of a turn's stages, with OpenTelemetry GenAI attribute names:
//! guard checkpoints and their backends, generation, and the audit hand-off.
//! Message contents go on spans only with `telemetry.record_content`.

use tracing::field::Empty;
use tracing::Span;
use warden_agents::GenParams;
use warden_guard::{BackendKind, Verdict};
use warden_policies::{Action, Checkpoint};

use crate::guarding::{CheckReport, VerdictRecord};
use crate::openai::Usage;
use crate::telemetry;

/// A guard checkpoint's span (its model backends' spans are its children;
/// the rules' verdict is on it).
pub fn checkpoint(cp: Checkpoint) -> Span {
    // Static names: nothing is formatted per request.
    let name = match cp {
        Checkpoint::Input => "guard input",
        Checkpoint::Output => "guard output",
        Checkpoint::ToolCall => "guard tool_call",
        Checkpoint::ToolResult => "guard tool_result",
    };
    tracing::info_span!(
        "guard",
        otel.name = name,
        otel.status_code = Empty,
        warden.guard.checkpoint = cp.as_str(),
        warden.guard.decision = Empty,
        warden.guard.categories = Empty,
        warden.guard.backends = Empty,
        warden.guard.score = Empty,
        warden.guard.latency_ms = Empty,
        warden.guard.rules.verdict = Empty,
        warden.guard.rules.categories = Empty,
        warden.guard.rules.action = Empty,
    )
}

/// Fills a checkpoint's span from its report.
pub fn checkpoint_done(span: &Span, report: &CheckReport, latency_ms: f64) {
    if span.is_disabled() {
        return;
    }
    let cats = report.outcome.categories();
    let categories = (!cats.is_empty()).then(|| join(cats));
    let backends: Vec<&str> = report.verdicts.iter().map(|v| v.backend.as_str()).collect();
    let score = report
        .verdicts
        .iter()
        .filter_map(|v| v.score)
        .reduce(f32::max)
        .map(f64::from);
    let rules = report
        .verdicts
        .iter()
        .find(|v| v.kind == BackendKind::Rules);
    let (rules_verdict, rules_categories) = match rules.map(|r| &r.result) {
        None => (None, None),
        Some(Ok(Verdict::Safe)) => (Some("safe"), None),
        Some(Ok(v)) => (Some("unsafe"), Some(join(v.categories()))),
        Some(Err(_)) => (Some("error"), None),
    };
    // One dispatch for all of them: each `record` is a trip through every
    // layer. `None` values are left out.
    tracing::record_all!(
        span,
        warden.guard.decision = report.outcome.word(),
        warden.guard.categories = categories.as_deref(),
        warden.guard.backends = backends.join(",").as_str(),
        warden.guard.score = score,
        warden.guard.latency_ms = latency_ms,
        warden.guard.rules.verdict = rules_verdict,
        warden.guard.rules.categories = rules_categories.as_deref(),
        warden.guard.rules.action = rules.and_then(|r| r.action).map(Action::as_str),
        otel.status_code = report.outcome.refuses().then_some("error"),
    );
}

/// One model backend's span (local or remote) within a checkpoint.
pub fn backend(checkpoint: &Span) -> Span {
    tracing::info_span!(
        parent: checkpoint,
        "guard.backend",
        otel.status_code = Empty,
        otel.status_message = Empty,
        warden.guard.backend = Empty,
        warden.guard.kind = Empty,
        warden.guard.model = Empty,
        warden.guard.verdict = Empty,
        warden.guard.categories = Empty,
        warden.guard.score = Empty,
        warden.guard.action = Empty,
        warden.guard.latency_ms = Empty,
    )
}

/// Fills a backend's span from its verdict (in one dispatch, as above).
pub fn backend_done(span: &Span, v: &VerdictRecord) {
    if span.is_disabled() {
        return;
    }
    let (verdict, categories, error) = match &v.result {
        Ok(Verdict::Safe) => ("safe", None, None),
        Ok(verdict) => ("unsafe", Some(join(verdict.categories())), None),
        Err(e) => ("error", None, Some(e.as_str())),
    };
    tracing::record_all!(
        span,
        warden.guard.backend = v.backend.as_str(),
        warden.guard.kind = v.kind.as_str(),
        warden.guard.model = v.model.as_deref(),
        warden.guard.verdict = verdict,
        warden.guard.categories = categories.as_deref(),
        warden.guard.score = v.score.map(f64::from),
        warden.guard.action = v.action.map(Action::as_str),
        warden.guard.latency_ms = v.latency.as_secs_f64() * 1000.0,
        otel.status_code = error.map(|_| "error"),
        otel.status_message = error,
    );
}

/// A generation's span: `chat {model}` as the GenAI conventions name it.
pub fn generation(model: &str, params: Option<&GenParams>, streaming: bool) -> Span {
    // What is known now goes in at creation: each later `record` is one
    // more dispatch through every layer. The name is formatted only when
    // spans are exported (a log line has no use for it).
    tracing::info_span!(
        "generation",
        otel.name = telemetry::enabled().then(|| format!("chat {model}")),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.request.model = model,
        gen_ai.request.max_tokens = params.map(|p| i64::from(p.max_tokens)),
        gen_ai.request.temperature = params.and_then(|p| p.temperature).map(f64::from),
        gen_ai.request.top_p = params.and_then(|p| p.top_p).map(f64::from),
        gen_ai.request.seed = params.and_then(|p| p.seed),
        gen_ai.request.stream = streaming,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        warden.time_to_first_token_ms = Empty,
    )
}

/// Fills a generation's span: usage and finish reason (and the answer when
/// contents are recorded).
pub fn generation_done(span: &Span, usage: Usage, finish_reason: &str, answer: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    tracing::record_all!(
        span,
        gen_ai.usage.input_tokens = i64::from(usage.prompt_tokens),
        gen_ai.usage.output_tokens = i64::from(usage.completion_tokens),
    );
    telemetry::set_string_list(span, "gen_ai.response.finish_reasons", &[finish_reason]);
    if let Some(a) = answer.filter(|_| telemetry::record_content()) {
        let out = serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": a}], "finish_reason": finish_reason}]);
        span.record("gen_ai.output.messages", out.to_string().as_str());
    }
}

/// Puts the request's messages on a generation's span, when contents are recorded.
pub fn generation_input<T: serde::Serialize>(span: &Span, messages: &T) {
    if telemetry::record_content() && !span.is_disabled() {
        if let Ok(text) = serde_json::to_string(messages) {
            span.record("gen_ai.input.messages", text.as_str());
        }
    }
}

/// Marks a generation that failed.
pub fn generation_failed(span: &Span) {
    span.record("otel.status_code", "error");
}

/// The hand-off of the request's final audit event to the writer.
pub fn audit_handoff() -> Span {
    tracing::info_span!(
        "audit",
        otel.name = "audit hand-off",
        warden.audit.events = Empty,
        warden.audit.decision = Empty,
    )
}

fn join(cats: &[warden_policies::taxonomy::CategoryCode]) -> String {
    cats.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
