//! `POST /v1/moderations`: Llama Guard classification in OpenAI's shape.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde_json::{Map, Value};
use warden_guard::ChatMessage;
use warden_policies::taxonomy::CategoryCode;
use warden_policies::{Checkpoint, Origin};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::openai::{
    LlamaGuardResult, ModerationInput, ModerationRequest, ModerationResponse, ModerationResult,
};
use crate::request_id::RequestIdentity;
use crate::state::AppState;
use crate::turn::Turn;

/// OpenAI's moderation categories, in their order.
const OPENAI_CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// The OpenAI categories a Llama Guard 3 code maps to (none for codes
/// OpenAI has no category for, such as S7 Privacy).
pub fn openai_categories(code: CategoryCode) -> &'static [&'static str] {
    match code.number() {
        1 => &["violence", "illicit/violent"],
        2 => &["illicit"],
        3 => &["sexual"],
        4 => &["sexual/minors"],
        9 => &["illicit/violent", "violence"],
        10 => &["hate"],
        11 => &["self-harm"],
        12 => &["sexual"],
        _ => &[],
    }
}

/// Classify texts.
#[utoipa::path(
    post,
    path = "/v1/moderations",
    request_body = ModerationRequest,
    responses(
        (status = 200, body = ModerationResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 408, description = "Body not received within `limits.body_timeout_seconds`", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as JSON", body = ErrorBody),
        (status = 503, description = "A guard failed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn moderations(
    state: web::Data<AppState>,
    caller: Caller,
    rid: RequestIdentity,
    body: web::Json<ModerationRequest>,
) -> Result<HttpResponse, ApiError> {
    let req = body.into_inner();
    let inputs = match req.input {
        ModerationInput::One(s) => vec![s],
        ModerationInput::Many(v) => v,
    };
    if inputs.is_empty() || inputs.len() > state.config.limits.max_messages {
        return Err(ApiError::invalid(
            "input",
            format!(
                "input must hold 1 to {} texts",
                state.config.limits.max_messages
            ),
        ));
    }
    if let Some((i, _)) = inputs
        .iter()
        .enumerate()
        .find(|(_, t)| t.chars().count() > state.config.limits.max_content_chars)
    {
        return Err(ApiError::invalid(
            format!("input[{i}]"),
            "text longer than limits.max_content_chars",
        ));
    }
    let model = req.model.unwrap_or_else(|| "moderation".into());
    let state: Arc<AppState> = state.into_inner();
    let mut turn = Turn::start(
        Arc::clone(&state),
        &caller,
        rid.0,
        &model,
        None,
        warden_audit::Endpoint::Moderations,
        || (false, serde_json::json!({"inputs": inputs.len()})),
    )?;
    // Moderation always classifies, whether or not the policy guards chat input.
    Arc::make_mut(&mut turn.policy)
        .checkpoints
        .entry(Checkpoint::Input)
        .or_insert_with(|| [Origin::Request].into());
    let names: Map<String, Value> = turn
        .policy
        .categories
        .iter()
        .map(|(c, cat)| (c.to_string(), Value::String(cat.name.clone())))
        .collect();
    let backends = turn
        .policy
        .backends
        .iter()
        .map(|b| b.backend.to_string())
        .collect::<Vec<_>>()
        .join("+");
    let mut results = Vec::with_capacity(inputs.len());
    for text in &inputs {
        let messages = [ChatMessage::user(text.clone())];
        let report = turn.check(Checkpoint::Input, &messages, text).await.clone();
        let mut codes: Vec<CategoryCode> = Vec::new();
        let mut failed = None;
        let mut score: Option<f32> = None;
        for v in &report.verdicts {
            match &v.result {
                Ok(verdict) => {
                    for c in verdict.categories() {
                        if !codes.contains(c) {
                            codes.push(*c);
                        }
                    }
                }
                Err(e) => failed = Some(e.clone()),
            }
            if let Some(s) = v.score {
                score = Some(score.map_or(s, |o: f32| o.max(s)));
            }
        }
        if let (Some(e), true) = (&failed, report.outcome.refuses()) {
            let message = e.clone();
            return Err(ApiError::GuardUnavailable {
                message,
                warden: Box::new(turn.info()),
            });
        }
        let mut categories = Map::new();
        let mut scores = Map::new();
        for name in OPENAI_CATEGORIES {
            let hit = codes.iter().any(|c| openai_categories(*c).contains(&name));
            categories.insert(name.into(), Value::Bool(hit));
            let s = if hit { score.unwrap_or(1.0) } else { 0.0 };
            scores.insert(name.into(), serde_json::json!(s));
        }
        results.push(ModerationResult {
            flagged: !codes.is_empty(),
            categories,
            category_scores: scores,
            llama_guard: LlamaGuardResult {
                verdict: if failed.is_some() && codes.is_empty() {
                    "error"
                } else if codes.is_empty() {
                    "safe"
                } else {
                    "unsafe"
                },
                categories: codes.iter().map(ToString::to_string).collect(),
                category_names: names.clone(),
                verdicts: report
                    .verdicts
                    .iter()
                    .map(|v| v.info(Checkpoint::Input))
                    .collect(),
            },
        });
    }
    turn.finish(200, None, Default::default(), None)
        .stored()
        .await?;
    Ok(HttpResponse::Ok().json(ModerationResponse {
        id: format!("modr-{}", turn.request_id),
        model: if backends.is_empty() {
            "none".into()
        } else {
            backends
        },
        results,
    }))
}
