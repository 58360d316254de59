//! `x-request-id`: honour a caller's well-formed id or make one; put it on
//! every response, in the request's span and in the access log line.

use std::future::{ready, Ready};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use tracing::Instrument;

use crate::state::AppState;
use crate::telemetry;

/// The request's id, as extracted by handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdentity(pub String);

/// The configured model (or agent) a request named, for the request
/// metrics; set by handlers once the name is known to be configured, so
/// callers cannot grow the label set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLabel(pub String);

/// Labels the request's span and metrics with the configured `model` it
/// names, and its GenAI operation.
pub fn label_model(req: &HttpRequest, model: &str, operation: &'static str) {
    req.extensions_mut().insert(ModelLabel(model.to_owned()));
    // One dispatch for both (each `record` is a trip through every layer).
    let span = tracing::Span::current();
    tracing::record_all!(
        span,
        gen_ai.operation.name = operation,
        gen_ai.request.model = model,
    );
}

/// The header name.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a caller's id can be used as is: 1-128 characters of letters,
/// digits and `-_.:`.
pub fn well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// A fresh, time-ordered id.
pub fn fresh() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The middleware.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| well_formed(v))
        .map_or_else(fresh, str::to_owned);
    req.extensions_mut().insert(RequestIdentity(id.clone()));
    // HTTP semantic-convention names, so traces read like any server's;
    // the rest is filled in by the handler and below once known. Values
    // are plain strings: `%` would format each one anew for every layer.
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        request_id = id.as_str(),
        trace_id = tracing::field::Empty,
        http.request.method = req.method().as_str(),
        url.path = req.path(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        gen_ai.operation.name = tracing::field::Empty,
        gen_ai.request.model = tracing::field::Empty,
    );
    if let Some(trace_id) = telemetry::continue_trace(&span, req.headers()) {
        span.record("trace_id", trace_id.as_str());
    }
    let started = Instant::now();
    let method = req.method().clone();
    let result = next.call(req).instrument(span.clone()).await;
    // Holding a clone of the request here would break routing (actix needs
    // the only reference), so an error that escapes the inner services
    // becomes its response here, carrying the id, and is handed on as is.
    let mut res = match result {
        Ok(res) => res.map_into_boxed_body(),
        Err(e) => {
            let mut response = e.error_response();
            if let Ok(v) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(HEADER, v);
            }
            return Err(actix_web::error::InternalError::from_response(e, response).into());
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER, v);
    }
    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let elapsed = started.elapsed();
    if let Some(state) = res.request().app_data::<web::Data<AppState>>() {
        let model = res.request().extensions().get::<ModelLabel>().cloned();
        state.metrics.request(
            &route,
            status,
            model.as_ref().map(|m| m.0.as_str()),
            elapsed,
        );
    }
    let exporting = telemetry::enabled();
    tracing::record_all!(
        span,
        http.response.status_code = i64::from(status),
        http.route = exporting.then_some(route.as_str()),
        otel.status_code = (exporting && status >= 500).then_some("error"),
    );
    if exporting {
        telemetry::rename(&span, format!("{method} {route}"));
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request done"
        );
    });
    Ok(res)
}

impl FromRequest for RequestIdentity {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestIdentity>()
            .cloned()
            .unwrap_or_else(|| RequestIdentity(fresh()));
        ready(Ok(id))
    }
}
