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

/// The request's id, as extracted by handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdentity(pub String);

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
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path()
    );
    let started = Instant::now();
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
    if let Some(state) = res.request().app_data::<web::Data<AppState>>() {
        state.metrics.request(&route, status);
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
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
