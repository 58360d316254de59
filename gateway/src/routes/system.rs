//! Models, health, readiness, metrics, the OpenAPI document and admin routes.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::auth::{AdminCaller, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::openai::{ModelInfo, ModelList};
use crate::state::AppState;

/// The configured models.
#[utoipa::path(get, path = "/v1/models",
    responses((status = 200, body = ModelList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn models(state: web::Data<AppState>, _caller: Caller) -> HttpResponse {
    let data = state
        .models
        .iter()
        .map(|(name, g)| ModelInfo {
            id: name.clone(),
            object: "model",
            created: state.started,
            owned_by: g.owner(),
        })
        .chain(state.agents.keys().map(|name| ModelInfo {
            id: name.clone(),
            object: "model",
            created: state.started,
            owned_by: "warden-agent",
        }))
        .collect();
    HttpResponse::Ok().json(ModelList {
        object: "list",
        data,
    })
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Readiness details.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// `up`, `down` or `not_configured`.
    pub database: &'static str,
    /// Loaded models.
    pub models: Vec<String>,
    /// The policy set in force.
    pub policies: PolicyReadiness,
    /// The audit writer, when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditReadiness>,
}

/// Policy reload status.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyReadiness {
    /// Version of the set in force.
    pub version: String,
    /// Documents in force.
    pub count: usize,
    /// Errors of the last reload when it was refused (the old set keeps serving).
    pub last_reload_errors: Vec<String>,
    /// Reloads refused since start.
    pub reloads_failed: u64,
}

/// Audit status.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditReadiness {
    /// Whether PostgreSQL took the last write.
    pub database_up: bool,
    /// Events waiting.
    pub queue_depth: usize,
    /// Whether new turns are refused.
    pub refusing: bool,
}

/// Readiness: the database answers, models are loaded; policy reload status in the details.
#[utoipa::path(get, path = "/readyz",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = match &state.db {
        None => "not_configured",
        Some(pool) => {
            let ping = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                sqlx::query("SELECT 1").execute(pool),
            )
            .await;
            if matches!(ping, Ok(Ok(_))) {
                "up"
            } else {
                "down"
            }
        }
    };
    let status = state.policies.status();
    let audit = state.audit.as_ref().map(|a| {
        let h = a.health();
        AuditReadiness {
            database_up: h.database_up,
            queue_depth: h.queue_depth,
            refusing: h.refuse_new_turns(),
        }
    });
    let ready = database != "down" && audit.as_ref().is_none_or(|a| !a.refusing);
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        database,
        models: state.models.keys().cloned().collect(),
        policies: PolicyReadiness {
            version: status.version.to_string(),
            count: status.policies,
            last_reload_errors: status.last_errors.iter().map(ToString::to_string).collect(),
            reloads_failed: status.reloads_failed,
        },
        audit,
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text", body = String)))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&state.gauges()))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::ApiDoc::openapi())
}

/// A reload's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadResult {
    /// `changed`, `unchanged` or `refused`.
    pub result: &'static str,
    /// The version in force afterwards.
    pub version: String,
    /// Why it was refused.
    pub errors: Vec<String>,
}

/// Re-validates the policy directory now (as SIGHUP does). Admin key only.
#[utoipa::path(post, path = "/v1/admin/policies/reload",
    responses((status = 200, body = ReloadResult), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reload_policies(
    state: web::Data<AppState>,
    _admin: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let store = std::sync::Arc::clone(&state.policies);
    let outcome = web::block(move || store.reload())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (result, errors) = match outcome {
        Ok(warden_policies::ReloadOutcome::Changed { .. }) => ("changed", Vec::new()),
        Ok(warden_policies::ReloadOutcome::Unchanged) => ("unchanged", Vec::new()),
        Err(e) => ("refused", e.0.iter().map(ToString::to_string).collect()),
    };
    Ok(HttpResponse::Ok().json(ReloadResult {
        result,
        version: state.policies.current().version().to_string(),
        errors,
    }))
}
