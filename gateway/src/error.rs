//! Every error the API returns, turned into OpenAI's error shape in one place.

use std::time::Duration;

use actix_web::error::{JsonPayloadError, PayloadError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;
use warden_agents::GenerateError;

use crate::openai::WardenInfo;

/// OpenAI's error body: `{"error": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inner error object.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// For people.
    pub message: String,
    /// OpenAI's error type, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault, if any.
    pub param: Option<String>,
    /// A machine-readable code, if any.
    pub code: Option<&'static str>,
    /// Guard verdicts, for refusals by a guard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warden: Option<Box<WardenInfo>>,
}

/// An API error; its status and body are decided in [`ResponseError`] below.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or breaks a limit.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The field at fault.
        param: Option<String>,
        /// A code, e.g. `invalid_value`.
        code: Option<&'static str>,
    },
    /// The body is larger than `limits.max_body_bytes`.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body did not arrive within `limits.body_timeout_seconds`.
    #[error(
        "the request body was not received within {limit_seconds} s (limits.body_timeout_seconds)"
    )]
    RequestTimeout {
        /// The limit.
        limit_seconds: f64,
    },
    /// The body is not JSON.
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// No key, or a key that is not valid.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid key without the right for this route.
    #[error("this route needs the admin key")]
    Forbidden,
    /// The named model is not configured.
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    /// No such route.
    #[error("no route {method} {path}")]
    RouteNotFound {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// The route exists, not for this method.
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    /// The input guard refused the request.
    #[error("the input was refused by the content filter")]
    ContentFilter(Box<WardenInfo>),
    /// A guard failed and the policy fails closed.
    #[error("the request was refused because a guard failed: {message}")]
    GuardUnavailable {
        /// What failed.
        message: String,
        /// The verdicts so far.
        warden: Box<WardenInfo>,
    },
    /// The local engine's queue is full.
    #[error("the model `{model}` is busy; retry after {} s", retry_after.as_secs())]
    Overloaded {
        /// The model.
        model: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The upstream failed or answered with an error.
    #[error("{0}")]
    BadGateway(String),
    /// The upstream did not answer in time.
    #[error("{0}")]
    GatewayTimeout(String),
    /// The model's tool calls stayed invalid after every retry.
    #[error("the model made no valid tool call after its retries: {}", errors.join("; "))]
    InvalidToolCall {
        /// The last round's errors, each with its JSON pointer.
        errors: Vec<String>,
        /// The steps and verdicts so far.
        warden: Box<WardenInfo>,
    },
    /// The audit cannot take new turns: required and unable to store events, or behind by its queue capacity.
    #[error("the audit log cannot record requests right now; refusing to serve unaudited")]
    AuditUnavailable,
    /// The audit routes need PostgreSQL and this gateway has none.
    #[error("the audit API needs a database and this gateway runs without one (set database.url)")]
    AuditNotConfigured,
    /// PostgreSQL did not answer an audit query.
    #[error("the audit database cannot be reached: {0}")]
    AuditDatabaseUnavailable(String),
    /// The caller's tenant has no audited request with this id.
    #[error("no audited request with id `{0}`")]
    AuditRequestNotFound(String),
    /// Something inside the gateway failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<GenerateError> for ApiError {
    fn from(e: GenerateError) -> Self {
        match e {
            GenerateError::Overloaded { model, retry_after } => {
                Self::Overloaded { model, retry_after }
            }
            GenerateError::InvalidRequest { param, message } => Self::invalid(param, message),
            e @ GenerateError::UnsupportedSchema { param, .. } => Self::BadRequest {
                message: e.to_string(),
                param: Some(param.into()),
                code: Some("unsupported_schema_feature"),
            },
            e @ GenerateError::Unfinished { .. } => Self::BadRequest {
                message: format!("{e}; raise max_tokens"),
                param: Some("max_tokens".into()),
                code: Some("output_unfinished"),
            },
            GenerateError::BadGateway(m) => Self::BadGateway(m),
            GenerateError::Timeout(m) => Self::GatewayTimeout(m),
            GenerateError::Internal(m) => Self::Internal(m),
        }
    }
}

impl ApiError {
    /// A 400 about one field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: Some(param.into()),
            code: Some("invalid_value"),
        }
    }

    fn kind_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::BadRequest { code, .. } => ("invalid_request_error", *code),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", Some("payload_too_large")),
            Self::UnsupportedMediaType => ("invalid_request_error", Some("unsupported_media_type")),
            Self::RequestTimeout { .. } => ("invalid_request_error", Some("request_timeout")),
            Self::Unauthorized(_) => ("invalid_request_error", Some("invalid_api_key")),
            Self::Forbidden => ("invalid_request_error", Some("insufficient_permissions")),
            Self::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            Self::RouteNotFound { .. } => ("invalid_request_error", Some("unknown_url")),
            Self::MethodNotAllowed(_) => ("invalid_request_error", Some("method_not_allowed")),
            Self::ContentFilter(_) => ("invalid_request_error", Some("content_filter")),
            Self::GuardUnavailable { .. } => ("server_error", Some("guard_unavailable")),
            Self::Overloaded { .. } => ("rate_limit_error", Some("model_overloaded")),
            Self::BadGateway(_) => ("upstream_error", Some("bad_gateway")),
            Self::InvalidToolCall { .. } => ("upstream_error", Some("invalid_tool_call")),
            Self::GatewayTimeout(_) => ("upstream_error", Some("upstream_timeout")),
            Self::AuditUnavailable => ("server_error", Some("audit_unavailable")),
            Self::AuditNotConfigured => ("server_error", Some("audit_not_configured")),
            Self::AuditDatabaseUnavailable(_) => {
                ("server_error", Some("audit_database_unavailable"))
            }
            Self::AuditRequestNotFound(_) => ("invalid_request_error", Some("request_not_found")),
            Self::Internal(_) => ("server_error", None),
        }
    }

    fn param(&self) -> Option<String> {
        match self {
            Self::BadRequest { param, .. } => param.clone(),
            Self::ModelNotFound(_) => Some("model".into()),
            Self::ContentFilter(_) => Some("messages".into()),
            _ => None,
        }
    }

    /// The body, as sent (also used inside SSE error events).
    pub fn body(&self) -> ErrorBody {
        let (kind, code) = self.kind_and_code();
        let warden = match self {
            Self::ContentFilter(w)
            | Self::GuardUnavailable { warden: w, .. }
            | Self::InvalidToolCall { warden: w, .. } => Some(w.clone()),
            _ => None,
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind,
                param: self.param(),
                code,
                warden,
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::ContentFilter(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::ModelNotFound(_) | Self::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::GuardUnavailable { .. }
            | Self::AuditUnavailable
            | Self::AuditNotConfigured
            | Self::AuditDatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::AuditRequestNotFound(_) => StatusCode::NOT_FOUND,
            Self::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) | Self::InvalidToolCall { .. } => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let Self::Overloaded { retry_after, .. } = self {
            res.insert_header((
                header::RETRY_AFTER,
                retry_after.as_secs().max(1).to_string(),
            ));
        }
        if let Self::RequestTimeout { .. } = self {
            // The rest of the body may still be on its way: never reuse
            // the connection.
            res.force_close();
        }
        if let Self::Unauthorized(_) = self {
            res.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        res.json(self.body())
    }
}

/// Turns actix's JSON extractor errors into API errors.
pub fn json_error(err: JsonPayloadError, req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Payload(e) if crate::body_timeout::is_timeout(e) => {
            ApiError::RequestTimeout {
                limit_seconds: req
                    .app_data::<actix_web::web::Data<crate::state::AppState>>()
                    .map_or(0.0, |s| s.config.limits.body_timeout_seconds),
            }
        }
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit: *limit },
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) => from_serde(e),
        JsonPayloadError::Payload(PayloadError::Overflow) => ApiError::PayloadTooLarge {
            limit: req
                .app_data::<actix_web::web::Data<crate::state::AppState>>()
                .map_or(0, |s| s.config.limits.max_body_bytes),
        },
        other => ApiError::BadRequest {
            message: format!("cannot read the request body: {other}"),
            param: None,
            code: None,
        },
    };
    api.into()
}

/// Turns query-string errors into API errors.
pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest {
        message: format!("invalid query string: {err}"),
        param: None,
        code: None,
    }
    .into()
}

/// A JSON error as a 400 naming the field where serde can tell.
pub fn from_serde(e: &serde_json::Error) -> ApiError {
    let text = e.to_string();
    let param = field_in_message(&text);
    let message = if e.is_syntax() || e.is_eof() {
        format!("the request body is not valid JSON: {text}")
    } else {
        format!("invalid request: {text}")
    };
    ApiError::BadRequest {
        message,
        param,
        code: Some(if e.is_data() {
            "invalid_value"
        } else {
            "invalid_json"
        }),
    }
}

/// The first back-quoted name in a serde message (`unknown field `x``, `missing field `y``).
fn field_in_message(text: &str) -> Option<String> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    let name = &text[start..start + len];
    let is_field = text.starts_with("unknown field") || text.starts_with("missing field");
    is_field.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let e = serde_json::from_str::<T>(r#"{"a":1,"bogus":2}"#).unwrap_err();
        let ApiError::BadRequest { param, .. } = from_serde(&e) else {
            panic!()
        };
        assert_eq!(param.as_deref(), Some("bogus"));
        let e = serde_json::from_str::<T>("{").unwrap_err();
        let ApiError::BadRequest { param, code, .. } = from_serde(&e) else {
            panic!()
        };
        assert_eq!((param, code), (None, Some("invalid_json")));
    }

    #[test]
    fn statuses() {
        assert_eq!(ApiError::ModelNotFound("x".into()).status_code(), 404);
        assert_eq!(ApiError::BadGateway("x".into()).status_code(), 502);
        assert_eq!(ApiError::GatewayTimeout("x".into()).status_code(), 504);
        let body = serde_json::to_value(ApiError::Unauthorized("no key").body()).unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        assert!(body["error"]["param"].is_null());
    }
}
