//! `/v1/audit/*`: the caller's tenant's audit trail (events, one request's
//! story, exports, daily counts) and, for the admin key, chain verification.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};
use warden_audit::query::MAX_PAGE;
use warden_audit::{
    AuditError, ChainBreak, ChainProblem, Checkpoint, Cursor, DailyCount, Decision, EventFilter,
    EventKind, EventPage, ExportFormat, KeyId, RequestId, SealedEvent, TenantId, VerifyReport,
};

use crate::auth::{AdminCaller, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Events per page when the caller does not say.
const DEFAULT_LIMIT: u32 = 100;
/// Days `/v1/audit/stats` covers when the caller gives no `since`.
const DEFAULT_STATS_DAYS: i64 = 30;

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::InvalidCursor => ApiError::invalid(
                "cursor",
                "invalid cursor: pass `next_cursor` from the previous page unchanged",
            ),
            // Connection-level failures are the database being away, not a bug.
            AuditError::Database(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_),
            ) => ApiError::AuditDatabaseUnavailable(e.to_string()),
            other => ApiError::Internal(format!("audit query failed: {other}")),
        }
    }
}

/// Filters of the event list and the export; all optional, combined with AND.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilterQuery {
    /// Events at or after this time (RFC 3339).
    #[param(format = DateTime, example = "2025-01-01T00:00:00Z")]
    pub since: Option<String>,
    /// Events before this time (RFC 3339).
    #[param(format = DateTime, example = "2025-02-01T00:00:00Z")]
    pub until: Option<String>,
    /// Event kind: `request`, `message`, `guard_verdict`, `tool_call` or `decision`.
    pub kind: Option<String>,
    /// Final decision: `allowed`, `flagged`, `blocked`, `unguarded` or `error`.
    pub decision: Option<String>,
    /// Guard checkpoint: `input`, `output`, `tool_call` or `tool_result`.
    pub checkpoint: Option<String>,
    /// A category code the event names, e.g. `S9`.
    pub category: Option<String>,
    /// The model or agent the request named.
    pub model: Option<String>,
    /// The id (not the secret) of the API key the request used.
    pub key: Option<String>,
}

/// Query parameters of [`FilterQuery`].
const FILTER_PARAMS: &[&str] = &[
    "since",
    "until",
    "kind",
    "decision",
    "checkpoint",
    "category",
    "model",
    "key",
];
/// Query parameters of [`PageQuery`].
const PAGE_PARAMS: &[&str] = &["limit", "cursor"];
/// Query parameters of [`ExportQuery`].
const EXPORT_PARAMS: &[&str] = &["format"];
/// Query parameters of [`StatsQuery`].
const STATS_PARAMS: &[&str] = &["since", "until"];

/// Refuses a query parameter the route does not know: a misspelt filter
/// (`categroy=S1`) would otherwise widen an audit query silently. Checked by
/// hand because each route combines several parameter structs, and serde's
/// `deny_unknown_fields` cannot see across them.
fn known_params(req: &HttpRequest, groups: &[&[&str]]) -> Result<(), ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| ApiError::invalid("query", format!("invalid query string: {e}")))?;
    match pairs
        .iter()
        .find(|(name, _)| !groups.iter().any(|g| g.contains(&name.as_str())))
    {
        Some((name, _)) => Err(ApiError::BadRequest {
            message: format!(
                "unknown query parameter `{name}`; this route takes {}",
                groups.concat().join(", ")
            ),
            param: Some(name.clone()),
            code: Some("unknown_parameter"),
        }),
        None => Ok(()),
    }
}

/// Parses one optional query value, naming the parameter when it is wrong.
fn parse_opt<T>(
    param: &str,
    value: &Option<String>,
    parse: impl FnOnce(&str) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            parse(v)
                .ok_or_else(|| ApiError::invalid(param, format!("`{param}` must be {expected}")))
        })
        .transpose()
}

fn parse_time(param: &str, value: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    parse_opt(
        param,
        value,
        |v| DateTime::parse_from_rfc3339(v).ok().map(|t| t.to_utc()),
        "an RFC 3339 time such as 2025-01-01T00:00:00Z",
    )
}

fn check_range(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    match (since, until) {
        (Some(s), Some(u)) if s >= u => {
            Err(ApiError::invalid("until", "`until` must be after `since`"))
        }
        _ => Ok(()),
    }
}

impl FilterQuery {
    /// The audit crate's filter, or a 400 naming the bad parameter.
    fn to_filter(&self) -> Result<EventFilter, ApiError> {
        let from = parse_time("since", &self.since)?;
        let to = parse_time("until", &self.until)?;
        check_range(from, to)?;
        let key_id = parse_opt("key", &self.key, |v| KeyId::new(v).ok(), "a key id")?;
        Ok(EventFilter {
            from,
            to,
            kind: parse_opt(
                "kind",
                &self.kind,
                EventKind::parse,
                "one of request, message, guard_verdict, tool_call, decision",
            )?,
            decision: parse_opt(
                "decision",
                &self.decision,
                Decision::parse,
                "one of allowed, flagged, blocked, unguarded, error",
            )?,
            checkpoint: parse_opt(
                "checkpoint",
                &self.checkpoint,
                Checkpoint::parse,
                "one of input, output, tool_call, tool_result",
            )?,
            category: self.category.clone(),
            model: self.model.clone(),
            key_id,
            request_id: None,
        })
    }
}

/// Paging of the event list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Events per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page, unchanged.
    pub cursor: Option<String>,
}

/// A stored event's policy reference.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPolicy {
    /// Policy id.
    pub id: String,
    /// Policy version (content hash).
    pub version: String,
}

/// One stored audit event, as in the JSON Lines export.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    /// Unique id of the event.
    #[schema(value_type = String)]
    pub event_id: uuid::Uuid,
    /// The writer stream (hash chain) it belongs to.
    #[schema(value_type = String)]
    pub stream_id: uuid::Uuid,
    /// Position in the stream, from 1.
    pub seq: i64,
    /// When the writer sealed it.
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: DateTime<Utc>,
    /// When it happened.
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: DateTime<Utc>,
    /// Tenant.
    pub tenant_id: String,
    /// API key id.
    pub key_id: Option<String>,
    /// Request id (`x-request-id`).
    pub request_id: String,
    /// Model or agent.
    pub model: Option<String>,
    /// Policy that judged the request.
    pub policy: Option<AuditPolicy>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// The event body (tagged by `type`).
    #[schema(value_type = Object)]
    pub body: Value,
    /// `request`, `message`, `guard_verdict`, `tool_call` or `decision`.
    pub kind: &'static str,
    /// Guard checkpoint, if any.
    pub checkpoint: Option<&'static str>,
    /// Final decision (decision events).
    pub decision: Option<&'static str>,
    /// Categories named.
    pub categories: Vec<String>,
    /// Hash of the previous event of the stream (hex).
    pub prev_hash: String,
    /// SHA-256 of this event's canonical form (hex).
    pub hash: String,
}

impl From<SealedEvent> for AuditEvent {
    fn from(e: SealedEvent) -> Self {
        Self {
            event_id: e.event_id,
            stream_id: e.stream_id.0,
            seq: e.seq,
            recorded_at: e.recorded_at,
            occurred_at: e.occurred_at,
            tenant_id: e.tenant_id.into(),
            key_id: e.key_id.map(Into::into),
            request_id: e.request_id.into(),
            model: e.model,
            policy: e.policy.map(|p| AuditPolicy {
                id: p.id,
                version: p.version,
            }),
            trace_id: e.trace_id,
            body: e.body,
            kind: e.index.kind.as_str(),
            checkpoint: e.index.checkpoint.map(Checkpoint::as_str),
            decision: e.index.decision.map(Decision::as_str),
            categories: e.index.categories,
            prev_hash: e.prev_hash.to_hex(),
            hash: e.hash.to_hex(),
        }
    }
}

/// One page of events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventList {
    /// Always `list`.
    pub object: &'static str,
    /// The events.
    pub data: Vec<AuditEvent>,
    /// Pass as `cursor` for the next (older) page.
    pub next_cursor: Option<String>,
    /// Whether there is a next page.
    pub has_more: bool,
}

impl From<EventPage> for AuditEventList {
    fn from(page: EventPage) -> Self {
        Self {
            object: "list",
            data: page.events.into_iter().map(AuditEvent::from).collect(),
            has_more: page.next_cursor.is_some(),
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        }
    }
}

/// Every event of one request, in the order it was recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditRequestStory {
    /// Always `audit.request`.
    pub object: &'static str,
    /// The request id.
    pub request_id: String,
    /// The events.
    pub data: Vec<AuditEvent>,
}

/// Export parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `jsonl` (default) or `csv`.
    pub format: Option<String>,
}

/// Time range of the statistics.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Start (RFC 3339); default 30 days before `until`.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// End, exclusive (RFC 3339); default now.
    #[param(format = DateTime)]
    pub until: Option<String>,
}

/// Decisions of one UTC day; `category` is null for the decision's total.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditDailyCount {
    /// The UTC day.
    #[schema(value_type = String, format = Date)]
    pub day: NaiveDate,
    /// The decision.
    pub decision: &'static str,
    /// The category, or null for all decisions of this kind that day.
    pub category: Option<String>,
    /// How many.
    pub count: i64,
}

impl From<DailyCount> for AuditDailyCount {
    fn from(c: DailyCount) -> Self {
        Self {
            day: c.day,
            decision: c.decision.as_str(),
            category: c.category,
            count: c.count,
        }
    }
}

/// Decision counts per day.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditStats {
    /// Always `list`.
    pub object: &'static str,
    /// Start of the range.
    #[schema(value_type = String, format = DateTime)]
    pub since: DateTime<Utc>,
    /// End of the range (exclusive).
    #[schema(value_type = String, format = DateTime)]
    pub until: DateTime<Utc>,
    /// Counts, by day, decision and category.
    pub data: Vec<AuditDailyCount>,
}

/// The first problem of one broken hash chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditChainBreak {
    /// The writer stream.
    #[schema(value_type = String)]
    pub stream_id: uuid::Uuid,
    /// `changed`, `missing` or `reordered`.
    pub problem: &'static str,
    /// The event at fault: the changed or misplaced event, or for `missing`
    /// the event right after the gap (null when nothing follows it).
    #[schema(value_type = Option<String>)]
    pub event_id: Option<uuid::Uuid>,
    /// Its sequence number.
    pub seq: Option<i64>,
    /// For `missing`: the first sequence number that is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<i64>,
    /// For `changed`: what differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<ChainBreak> for AuditChainBreak {
    fn from(b: ChainBreak) -> Self {
        let stream_id = b.stream_id.0;
        match b.problem {
            ChainProblem::Changed {
                event_id,
                seq,
                detail,
            } => Self {
                stream_id,
                problem: "changed",
                event_id: Some(event_id),
                seq: Some(seq),
                expected_seq: None,
                detail: Some(detail),
            },
            ChainProblem::Missing {
                expected_seq,
                next_event_id,
                next_seq,
            } => Self {
                stream_id,
                problem: "missing",
                event_id: next_event_id,
                seq: next_seq,
                expected_seq: Some(expected_seq),
                detail: None,
            },
            ChainProblem::Reordered { event_id, seq } => Self {
                stream_id,
                problem: "reordered",
                event_id: Some(event_id),
                seq: Some(seq),
                expected_seq: None,
                detail: None,
            },
        }
    }
}

/// The result of recomputing every hash chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerifyReport {
    /// True when every chain is intact.
    pub intact: bool,
    /// Streams checked.
    pub streams: u64,
    /// Events checked.
    pub events: u64,
    /// Streams verified from a retention checkpoint.
    pub from_checkpoints: u64,
    /// The first break of each broken stream.
    pub breaks: Vec<AuditChainBreak>,
}

impl From<VerifyReport> for AuditVerifyReport {
    fn from(r: VerifyReport) -> Self {
        Self {
            intact: r.is_intact(),
            streams: r.streams,
            events: r.events,
            from_checkpoints: r.from_checkpoints,
            breaks: r.breaks.into_iter().map(AuditChainBreak::from).collect(),
        }
    }
}

fn pool(state: &AppState) -> Result<&PgPool, ApiError> {
    state.db.as_ref().ok_or(ApiError::AuditNotConfigured)
}

fn tenant(caller: &Caller) -> Result<TenantId, ApiError> {
    TenantId::new(caller.tenant.clone())
        .map_err(|e| ApiError::Internal(format!("the caller's tenant id: {e}")))
}

/// The caller's tenant's events, newest first, filtered and paged.
#[utoipa::path(get, path = "/v1/audit/events", params(FilterQuery, PageQuery),
    responses((status = 200, body = AuditEventList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    filter: web::Query<FilterQuery>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    known_params(&req, &[FILTER_PARAMS, PAGE_PARAMS])?;
    let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("`limit` must be between 1 and {MAX_PAGE}"),
        ));
    }
    let cursor = page
        .cursor
        .as_deref()
        .map(str::parse::<Cursor>)
        .transpose()?;
    let filter = filter.to_filter()?;
    let pool = pool(&state)?;
    let page =
        warden_audit::list_events(pool, &tenant(&caller)?, &filter, cursor.as_ref(), limit).await?;
    Ok(HttpResponse::Ok().json(AuditEventList::from(page)))
}

/// The whole story of one request of the caller's tenant, in order.
#[utoipa::path(get, path = "/v1/audit/requests/{id}",
    params(("id" = String, Path, description = "The request id (`x-request-id`)")),
    responses((status = 200, body = AuditRequestStory), (status = 401, body = ErrorBody),
        (status = 404, description = "No such request for this tenant", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn request_story(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let pool = pool(&state)?;
    // An id that could never have been stored is just as unknown.
    let Ok(request_id) = RequestId::new(id.clone()) else {
        return Err(ApiError::AuditRequestNotFound(id));
    };
    let events = warden_audit::request_events(pool, &tenant(&caller)?, &request_id)
        .await?
        // Other tenants' requests are indistinguishable from unknown ones.
        .ok_or_else(|| ApiError::AuditRequestNotFound(id.clone()))?;
    Ok(HttpResponse::Ok().json(AuditRequestStory {
        object: "audit.request",
        request_id: id,
        data: events.into_iter().map(AuditEvent::from).collect(),
    }))
}

/// The caller's tenant's events, oldest first, as JSON Lines or CSV, streamed.
#[utoipa::path(get, path = "/v1/audit/export", params(FilterQuery, ExportQuery),
    responses(
        (status = 200, description = "One event per line (CSV: after a header row)",
            content((String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn export(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    filter: web::Query<FilterQuery>,
    export: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    known_params(&req, &[FILTER_PARAMS, EXPORT_PARAMS])?;
    let (format, ext) = match export.format.as_deref() {
        None | Some("jsonl") => (ExportFormat::JsonLines, "jsonl"),
        Some("csv") => (ExportFormat::Csv, "csv"),
        Some(_) => return Err(ApiError::invalid("format", "`format` must be jsonl or csv")),
    };
    let filter = filter.to_filter()?;
    let pool = pool(&state)?.clone();
    // Fused: an empty export ends while the head is read, and the body
    // must not poll the finished stream again (it panics).
    let mut lines = Box::pin(warden_audit::export(pool, tenant(&caller)?, filter, format).fuse());
    // Wait for the first row (after CSV's header) so a failing query is still
    // an error status; once the body streams, an error can only cut it short.
    let mut head = Vec::with_capacity(2);
    let wanted = if format == ExportFormat::Csv { 2 } else { 1 };
    while head.len() < wanted {
        match lines.next().await {
            Some(line) => head.push(Bytes::from(line?)),
            None => break,
        }
    }
    let rest = lines.map_ok(Bytes::from).map_err(|e| {
        // Too late for an error status: ending the stream early cuts the body short.
        tracing::error!(error = %e, "audit export failed mid-stream");
        ApiError::from(e)
    });
    let body = futures_util::stream::iter(head.into_iter().map(Ok)).chain(rest);
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"audit-events.{ext}\""),
        ))
        .streaming(body))
}

/// The caller's tenant's decisions counted by decision and category per UTC day.
#[utoipa::path(get, path = "/v1/audit/stats", params(StatsQuery),
    responses((status = 200, body = AuditStats), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stats(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<StatsQuery>,
) -> Result<HttpResponse, ApiError> {
    known_params(&req, &[STATS_PARAMS])?;
    let until = parse_time("until", &query.until)?.unwrap_or_else(Utc::now);
    let since =
        parse_time("since", &query.since)?.unwrap_or(until - Duration::days(DEFAULT_STATS_DAYS));
    check_range(Some(since), Some(until))?;
    let pool = pool(&state)?;
    let counts = warden_audit::daily_stats(pool, &tenant(&caller)?, since, until).await?;
    Ok(HttpResponse::Ok().json(AuditStats {
        object: "list",
        since,
        until,
        data: counts.into_iter().map(AuditDailyCount::from).collect(),
    }))
}

/// Recomputes every hash chain and reports the first break of each. Admin key only.
#[utoipa::path(get, path = "/v1/audit/verify",
    responses((status = 200, body = AuditVerifyReport), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn verify(
    state: web::Data<AppState>,
    _admin: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let report = warden_audit::verify(pool(&state)?).await?;
    Ok(HttpResponse::Ok().json(AuditVerifyReport::from(report)))
}
