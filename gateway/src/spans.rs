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
    span.record("warden.guard.decision", report.outcome.word());
    let cats = report.outcome.categories();
    if !cats.is_empty() {
        span.record("warden.guard.categories", join(cats).as_str());
    }
    let backends: Vec<&str> = report.verdicts.iter().map(|v| v.backend.as_str()).collect();
    span.record("warden.guard.backends", backends.join(",").as_str());
    if let Some(s) = report
        .verdicts
        .iter()
        .filter_map(|v| v.score)
        .reduce(f32::max)
    {
        span.record("warden.guard.score", f64::from(s));
    }
    span.record("warden.guard.latency_ms", latency_ms);
    if let Some(rules) = report
        .verdicts
        .iter()
        .find(|v| v.kind == BackendKind::Rules)
    {
        let (verdict, categories) = match &rules.result {
            Ok(Verdict::Safe) => ("safe", None),
            Ok(v) => ("unsafe", Some(join(v.categories()))),
            Err(_) => ("error", None),
        };
        span.record("warden.guard.rules.verdict", verdict);
        if let Some(c) = categories {
            span.record("warden.guard.rules.categories", c.as_str());
        }
        if let Some(a) = rules.action {
            span.record("warden.guard.rules.action", Action::as_str(a));
        }
    }
    if report.outcome.refuses() {
        span.record("otel.status_code", "error");
    }
}

/// One model backend's span (local or remote) within a checkpoint.
pub fn backend() -> Span {
    tracing::info_span!(
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

/// Fills a backend's span from its verdict.
pub fn backend_done(span: &Span, v: &VerdictRecord) {
    if span.is_disabled() {
        return;
    }
    span.record("warden.guard.backend", v.backend.as_str());
    span.record("warden.guard.kind", v.kind.as_str());
    if let Some(m) = &v.model {
        span.record("warden.guard.model", m.as_str());
    }
    match &v.result {
        Ok(Verdict::Safe) => {
            span.record("warden.guard.verdict", "safe");
        }
        Ok(verdict) => {
            span.record("warden.guard.verdict", "unsafe");
            span.record(
                "warden.guard.categories",
                join(verdict.categories()).as_str(),
            );
        }
        Err(e) => {
            span.record("warden.guard.verdict", "error");
            span.record("otel.status_code", "error");
            span.record("otel.status_message", e.as_str());
        }
    }
    if let Some(s) = v.score {
        span.record("warden.guard.score", f64::from(s));
    }
    if let Some(a) = v.action {
        span.record("warden.guard.action", Action::as_str(a));
    }
    span.record("warden.guard.latency_ms", v.latency.as_secs_f64() * 1000.0);
}

/// A generation's span: `chat {model}` as the GenAI conventions name it.
pub fn generation(model: &str, params: Option<&GenParams>, streaming: bool) -> Span {
    let span = tracing::info_span!(
        "generation",
        otel.name = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.request.model = model,
        gen_ai.request.max_tokens = Empty,
        gen_ai.request.temperature = Empty,
        gen_ai.request.top_p = Empty,
        gen_ai.request.seed = Empty,
        gen_ai.request.stream = streaming,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        warden.time_to_first_token_ms = Empty,
    );
    if telemetry::enabled() && !span.is_disabled() {
        span.record("otel.name", format!("chat {model}"));
    }
    if let Some(params) = params.filter(|_| !span.is_disabled()) {
        span.record("gen_ai.request.max_tokens", i64::from(params.max_tokens));
        if let Some(t) = params.temperature {
            span.record("gen_ai.request.temperature", f64::from(t));
        }
        if let Some(p) = params.top_p {
            span.record("gen_ai.request.top_p", f64::from(p));
        }
        if let Some(s) = params.seed {
            span.record("gen_ai.request.seed", s);
        }
    }
    span
}

/// Fills a generation's span: usage and finish reason (and the answer when
/// contents are recorded).
pub fn generation_done(span: &Span, usage: Usage, finish_reason: &str, answer: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    span.record("gen_ai.usage.input_tokens", i64::from(usage.prompt_tokens));
    span.record(
        "gen_ai.usage.output_tokens",
        i64::from(usage.completion_tokens),
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
