//! The loop's generation spans, with OpenTelemetry GenAI attribute names
//! (no message contents: the gateway decides whether those are recorded).

use tracing::field::Empty;
use tracing::Span;

use super::run::LoopInput;
use super::streamed::StreamedStep;
use crate::error::GenerateError;

/// The span of one step's generation: `chat {model}`.
pub(super) fn generation(input: &LoopInput<'_>, step: u32) -> Span {
    let model = input
        .body
        .get("model")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let span = tracing::info_span!(
        "generation",
        otel.name = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.request.model = model,
        gen_ai.request.max_tokens = i64::from(input.params.max_tokens),
        gen_ai.request.stream = input.stream.is_some(),
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        warden.agent.step = i64::from(step),
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("chat {model}"));
    }
    span
}

// OpenTelemetry integers are i64: tracing-opentelemetry writes u64 values as strings.
/// Fills a step's span from what the generator gave.
pub(super) fn generation_done(span: &Span, output: &Option<Result<StreamedStep, GenerateError>>) {
    match output {
        Some(Ok(StreamedStep::Whole { usage, .. })) => {
            span.record("gen_ai.usage.input_tokens", i64::from(usage.prompt_tokens));
            span.record(
                "gen_ai.usage.output_tokens",
                i64::from(usage.completion_tokens),
            );
        }
        // A streamed text answer: the gateway's span of the stream carries the rest.
        Some(Ok(StreamedStep::Text { .. })) => {}
        Some(Err(_)) | None => {
            span.record("otel.status_code", "error");
        }
    }
}
