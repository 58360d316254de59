//! The HTTP routes and the OpenAPI document generated from them.

pub mod audit;
pub mod chat;
pub mod moderations;
pub mod system;

use actix_web::web;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Warden", description = "Safety-guarded OpenAI-compatible gateway"),
    paths(
        chat::chat_completions,
        moderations::moderations,
        system::models,
        system::healthz,
        system::readyz,
        system::metrics,
        system::openapi,
        system::reload_policies,
        audit::events,
        audit::request_story,
        audit::export,
        audit::stats,
        audit::verify,
    ),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// 405 in OpenAI's shape, with the `Allow` header RFC 9110 requires.
async fn method_not_allowed(
    req: actix_web::HttpRequest,
    allow: &'static str,
) -> actix_web::HttpResponse {
    use actix_web::ResponseError;
    let mut res = ApiError::MethodNotAllowed(req.method().to_string()).error_response();
    res.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
    res
}

/// Unknown routes.
pub async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound {
        method: req.method().to_string(),
        path: req.path().to_owned(),
    })
}

/// Registers every route; each answers 405 in OpenAI's shape for other methods.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let wrong = |allow: &'static str| {
        web::to(move |req: actix_web::HttpRequest| method_not_allowed(req, allow))
    };
    cfg.service(
        web::resource("/v1/chat/completions")
            .route(web::post().to(chat::chat_completions))
            .default_service(wrong("POST")),
    )
    .service(
        web::resource("/v1/moderations")
            .route(web::post().to(moderations::moderations))
            .default_service(wrong("POST")),
    )
    .service(
        web::resource("/v1/models")
            .route(web::get().to(system::models))
            .default_service(wrong("GET")),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(system::healthz))
            .default_service(wrong("GET")),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(system::readyz))
            .default_service(wrong("GET")),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(system::metrics))
            .default_service(wrong("GET")),
    )
    .service(
        web::resource("/openapi.json")
            .route(web::get().to(system::openapi))
            .default_service(wrong("GET")),
    )
    .service(
        web::resource("/v1/admin/policies/reload")
            .route(web::post().to(system::reload_policies))
            .default_service(wrong("POST")),
    )
    .service(
        web::resource("/v1/audit/events")
            .route(web::get().to(audit::events))
            .default_service(wrong("GET")),
    )
    .service(
        web::resource("/v1/audit/requests/{id}")
            .route(web::get().to(audit::request_story))
            .default_service(wrong("GET")),
    )
    .service(
        web::resource("/v1/audit/export")
            .route(web::get().to(audit::export))
            .default_service(wrong("GET")),
    )
    .service(
        web::resource("/v1/audit/stats")
            .route(web::get().to(audit::stats))
            .default_service(wrong("GET")),
    )
    .service(
        web::resource("/v1/audit/verify")
            .route(web::get().to(audit::verify))
            .default_service(wrong("GET")),
    );
}
