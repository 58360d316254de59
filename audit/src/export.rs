//! Streaming exports of a tenant's events as JSON Lines or CSV.

use futures_util::{Stream, TryStreamExt};
use serde_json::Value;
use sqlx::{PgPool, QueryBuilder};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::chain::SealedEvent;
use crate::error::AuditError;
use crate::ids::TenantId;
use crate::query::{push_filter, EventFilter};
use crate::rows::{event_columns, event_from_row};

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line (the stored event, as in the event API).
    JsonLines,
    /// RFC 4180 CSV with a header row; the body is a JSON column.
    Csv,
}

impl ExportFormat {
    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::JsonLines => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// CSV columns, in order.
pub const CSV_HEADER: &str = "event_id,request_id,occurred_at,recorded_at,tenant_id,key_id,model,\
policy_id,policy_version,trace_id,kind,checkpoint,decision,categories,stream_id,seq,prev_hash,hash,body\r\n";

/// Streams the tenant's events matching `filter`, oldest first, one line
/// per item (CSV starts with its header). Rows are fetched with a cursor and
/// handed over through a small queue, so any size exports in bounded memory.
pub fn export(
    pool: PgPool,
    tenant: TenantId,
    filter: EventFilter,
    format: ExportFormat,
) -> impl Stream<Item = Result<String, AuditError>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Result<String, AuditError>>(256);
    tokio::spawn(async move {
        if format == ExportFormat::Csv && tx.send(Ok(CSV_HEADER.to_owned())).await.is_err() {
            return;
        }
        let mut qb = QueryBuilder::new(concat!("SELECT ", event_columns!(), " FROM audit_events"));
        push_filter(&mut qb, &tenant, &filter);
        qb.push(" ORDER BY occurred_at, stream_id, seq");
        let mut rows = qb.build().fetch(&pool);
        loop {
            let item = match rows.try_next().await {
                Ok(Some(row)) => event_from_row(&row).and_then(|e| format_line(&e, format)),
                Ok(None) => break,
                Err(e) => Err(e.into()),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Writes the export to `out`; returns the number of events written.
pub async fn export_to<W: AsyncWrite + Unpin>(
    pool: PgPool,
    tenant: TenantId,
    filter: EventFilter,
    format: ExportFormat,
    out: W,
) -> Result<u64, AuditError> {
    export_to_with_progress(pool, tenant, filter, format, out, |_| {}).await
}

/// [`export_to`] that calls `progress` with the count of events written so
/// far after each one (the CLI's `warden audit export` progress bar).
pub async fn export_to_with_progress<W, F>(
    pool: PgPool,
    tenant: TenantId,
    filter: EventFilter,
    format: ExportFormat,
    mut out: W,
    mut progress: F,
) -> Result<u64, AuditError>
where
    W: AsyncWrite + Unpin,
    F: FnMut(u64),
{
    let stream = export(pool, tenant, filter, format);
    futures_util::pin_mut!(stream);
    let mut count = 0u64;
    let mut header = format == ExportFormat::Csv;
    while let Some(line) = stream.try_next().await? {
        out.write_all(line.as_bytes()).await?;
        if header {
            header = false;
        } else {
            count += 1;
            progress(count);
        }
    }
    out.flush().await?;
    Ok(count)
}

/// One event as a line of the given format (with its line ending).
pub fn format_line(event: &SealedEvent, format: ExportFormat) -> Result<String, AuditError> {
    match format {
        ExportFormat::JsonLines => {
            let mut line = serde_json::to_string(event)?;
            line.push('\n');
            Ok(line)
        }
        ExportFormat::Csv => {
            let opt = |s: Option<&str>| s.unwrap_or_default().to_owned();
            let fields = [
                event.event_id.to_string(),
                event.request_id.to_string(),
                crate::canonical::format_time(&event.occurred_at),
                crate::canonical::format_time(&event.recorded_at),
                event.tenant_id.to_string(),
                opt(event.key_id.as_ref().map(|k| k.as_str())),
                opt(event.model.as_deref()),
                opt(event.policy.as_ref().map(|p| p.id.as_str())),
                opt(event.policy.as_ref().map(|p| p.version.as_str())),
                opt(event.trace_id.as_deref()),
                event.index.kind.as_str().to_owned(),
                opt(event.index.checkpoint.map(|c| c.as_str())),
                opt(event.index.decision.map(|d| d.as_str())),
                event.index.categories.join(";"),
                event.stream_id.to_string(),
                event.seq.to_string(),
                event.prev_hash.to_hex(),
                event.hash.to_hex(),
                Value::to_string(&event.body),
            ];
            let mut line = String::with_capacity(512);
            for (i, field) in fields.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                push_csv_field(&mut line, field);
            }
            line.push_str("\r\n");
            Ok(line)
        }
    }
}

/// Quotes a field when it holds a comma, quote or line break (RFC 4180).
fn push_csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}
