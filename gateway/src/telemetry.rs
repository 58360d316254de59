//! Tracing set-up for `warden serve`: log lines (JSON or text) and, when an
//! OTLP endpoint is configured, spans exported to an OpenTelemetry collector;
//! plus the W3C `traceparent` continuation the request middleware uses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogFormat, OtlpProtocol, ServerConfig, TelemetryConfig};

// Read on every request: a relaxed load is all the "off" path costs.
static ENABLED: AtomicBool = AtomicBool::new(false);
static RECORD_CONTENT: AtomicBool = AtomicBool::new(false);

/// Why logging or tracing cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("log filter {filter:?} (server.log_level or RUST_LOG): {message}")]
    LogFilter {
        /// The filter text.
        filter: String,
        /// What the parser said.
        message: String,
    },
    /// A setting or `OTEL_*` variable cannot be used.
    #[error("{key}: {message}")]
    Invalid {
        /// The setting or variable.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The exporter's runtime did not start.
    #[error("starting the span exporter's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OTLP exporter cannot be built.
    #[error("building the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// Something else installed a global subscriber first.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Where spans go: the configuration with the standard `OTEL_*` variables applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// Full URL of the traces endpoint (HTTP) or the collector (gRPC).
    pub url: String,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// `service.name`.
    pub service_name: String,
    /// Fraction of new traces kept.
    pub sample_ratio: f64,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`).
    pub headers: ExportHeaders,
    /// How long one export may take (`OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`).
    pub timeout: Duration,
}

/// Headers sent with every export; often a collector's credentials, so
/// their values never appear in `Debug` output.
#[derive(Clone, Default, PartialEq)]
pub struct ExportHeaders(pub reqwest::header::HeaderMap);

impl std::fmt::Debug for ExportHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Parses the OTLP headers variable: `name=value` pairs separated by
/// commas, values percent-encoded (the W3C Baggage format).
fn parse_headers(key: &'static str, text: &str) -> Result<ExportHeaders, TelemetryError> {
    let invalid = |message: String| TelemetryError::Invalid { key, message };
    let mut headers = reqwest::header::HeaderMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| invalid(format!("{:?} is not name=value", pair.trim())))?;
        let name = name.trim();
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| invalid(format!("the value of {name:?} is not UTF-8")))?;
        // Checked here so a bad header is a start-up error, not a failed export.
        let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("{name:?} is not a header name")))?;
        let value = reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| invalid(format!("the value of {name:?} is not a header value")))?;
        headers.append(header, value);
    }
    Ok(ExportHeaders(headers))
}

impl Export {
    /// The export settings, or `None` when tracing is off. Variables win
    /// over the file, as `WARDEN_*` overrides do.
    pub fn resolve(
        cfg: &TelemetryConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TelemetryError> {
        let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None => cfg.protocol,
            Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(TelemetryError::Invalid {
                    key: "OTEL_EXPORTER_OTLP_PROTOCOL",
                    message: format!("{other:?} is not supported (http/protobuf or grpc)"),
                })
            }
        };
        // A signal-specific endpoint is used as is; a base URL gets the
        // signal's path (OTLP exporter specification).
        let url = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(url) => url,
            None => {
                let Some(base) = var("OTEL_EXPORTER_OTLP_ENDPOINT").or(cfg.otlp_endpoint.clone())
                else {
                    return Ok(None);
                };
                match protocol {
                    OtlpProtocol::HttpProtobuf => {
                        format!("{}/v1/traces", base.trim_end_matches('/'))
                    }
                    OtlpProtocol::Grpc => base,
                }
            }
        };
        // Signal-specific variables win over the general ones.
        let pick = |traces: &'static str, general: &'static str| {
            var(traces)
                .map(|v| (traces, v))
                .or_else(|| var(general).map(|v| (general, v)))
        };
        let headers = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ) {
            Some((key, text)) => parse_headers(key, &text)?,
            None => ExportHeaders::default(),
        };
        let timeout = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            Some((key, ms)) => match ms.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(TelemetryError::Invalid {
                        key,
                        message: format!("{ms:?} is not a positive number of milliseconds"),
                    })
                }
            },
            None => Duration::from_secs(10),
        };
        Ok(Some(Self {
            url,
            protocol,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| cfg.service_name.clone()),
            sample_ratio: cfg.sample_ratio,
            headers,
            timeout,
        }))
    }
}

/// The installed tracing: flush and shut down through it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    // Exports run on their own small runtime: the batch processor's thread
    // has none, and actix's per-worker runtimes must not carry exports.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports every finished span now (blocks until the collector answered).
    pub fn force_flush(&self) -> bool {
        self.provider
            .as_ref()
            .is_none_or(|p| p.force_flush().is_ok())
    }

    /// Flushes and stops the exporter (blocks; call outside async code).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(p) = self.provider.take() {
            ENABLED.store(false, Ordering::Relaxed);
            if let Err(e) = p.shutdown() {
                eprintln!("warden: flushing spans at shutdown: {e}");
            }
        }
        if let Some(rt) = self.runtime.take() {
            // Dropping a runtime inside async code panics; this does not.
            rt.shutdown_background();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether spans are exported (then `traceparent` is continued).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether message contents may go on spans (`telemetry.record_content`).
pub fn record_content() -> bool {
    RECORD_CONTENT.load(Ordering::Relaxed)
}

/// Installs the global subscriber: logs filtered by `RUST_LOG` (else
/// `server.log_level`), and the OTLP layer when an endpoint is configured.
/// Once per process; `env` reads the environment (a map in tests).
pub fn install(
    server: &ServerConfig,
    cfg: &TelemetryConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Telemetry, TelemetryError> {
    let filter_text = env("RUST_LOG")
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| server.log_level.clone());
    let filter = EnvFilter::try_new(&filter_text).map_err(|e| TelemetryError::LogFilter {
        filter: filter_text.clone(),
        message: e.to_string(),
    })?;
    let logs = log_layer(server.log_format, filter, std::io::stderr);
    let mut layers = vec![logs];
    let mut telemetry = Telemetry {
        provider: None,
        runtime: None,
    };
    if let Some(export) = Export::resolve(cfg, &env)? {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("warden-otlp")
            .enable_all()
            .build()
            .map_err(TelemetryError::Runtime)?;
        let provider = provider(&export, runtime.handle())?;
        let tracer = provider.tracer("warden");
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_level(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                // Nothing reads OpenTelemetry's current context (spans find
                // their parents through tracing's), and activating it cost
                // a context switch on every enter and exit of a span.
                .with_context_activation(false)
                .with_filter(warden_spans())
                .boxed(),
        );
        telemetry.provider = Some(provider);
        telemetry.runtime = Some(runtime);
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    if telemetry.exporting() {
        ENABLED.store(true, Ordering::Relaxed);
        RECORD_CONTENT.store(cfg.record_content, Ordering::Relaxed);
    }
    Ok(telemetry)
}

/// What the OTLP layer sees: Warden's own spans, all at `info`. Events are
/// log lines, and other crates' spans would say nothing about a turn.
///
/// The level bound matters beyond the spans: without it the subscriber's
/// maximum level is `trace`, and every `log` record of the dependencies
/// (reqwest, sqlx, mio, actix) below the log level went through the
/// filters at run time instead of stopping at `log`'s static level check.
fn warden_spans() -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(|m| {
        m.is_span() && *m.level() <= tracing::Level::INFO && m.target().starts_with("warden")
    })
    .with_max_level_hint(tracing::Level::INFO)
}

/// The log lines' layer: JSON objects (or text) written to `writer`.
fn log_layer<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        // The span list carries the request id and trace id into every line.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    }
}

fn provider(
    export: &Export,
    runtime: &tokio::runtime::Handle,
) -> Result<SdkTracerProvider, TelemetryError> {
    let timeout = export.timeout;
    let sampler = if export.sample_ratio >= 1.0 {
        Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
    } else {
        Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(export.sample_ratio)))
    };
    let builder = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_resource(
            Resource::builder()
                .with_service_name(export.service_name.clone())
                .build(),
        );
    let builder = match export.protocol {
        OtlpProtocol::HttpProtobuf => {
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .default_headers(export.headers.0.clone())
                .build()
                .map_err(|e| TelemetryError::Invalid {
                    key: "telemetry.otlp_endpoint",
                    message: e.to_string(),
                })?;
            builder.with_batch_exporter(crate::otlp::HttpExporter::new(
                client,
                export.url.clone(),
                runtime.clone(),
            ))
        }
        OtlpProtocol::Grpc => {
            // tonic spawns its connection tasks on the runtime it is built in.
            let _entered = runtime.enter();
            builder.with_batch_exporter(
                SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(&export.url)
                    .with_timeout(timeout)
                    .build()?,
            )
        }
    };
    Ok(builder.build())
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` (the request's) a child of the caller's `traceparent` when
/// tracing is on; returns the trace id for the logs (the caller's even when
/// tracing is off, so log lines still correlate).
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) -> Option<String> {
    if !enabled() {
        return headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(traceparent_trace_id)
            .map(str::to_owned);
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled; then there is nothing to continue.
        let _ = span.set_parent(parent);
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace id of the current span, when spans are exported (for the audit record).
pub fn current_trace_id() -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace id of a well-formed version-00 `traceparent`.
pub fn traceparent_trace_id(value: &str) -> Option<&str> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    ok.then_some(trace)
}

/// Renames a span that may have started already (its name is known only
/// after routing); `otel.name` applies only before the span starts.
pub fn rename(span: &tracing::Span, name: String) {
    if enabled() {
        span.context().span().update_name(name);
    }
}

/// Sets an attribute of a list of strings (tracing fields cannot be lists).
pub fn set_string_list(span: &tracing::Span, key: &'static str, values: &[&str]) {
    if enabled() {
        let list: Vec<opentelemetry::StringValue> =
            values.iter().map(|v| (*v).to_owned().into()).collect();
        span.set_attribute(key, opentelemetry::Value::Array(list.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn off_without_an_endpoint() {
        let cfg = TelemetryConfig::default();
        assert_eq!(Export::resolve(&cfg, env(&[])).unwrap(), None);
    }

    #[test]
    fn variables_win_over_the_file() {
        let cfg = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:1/".into()),
            ..TelemetryConfig::default()
        };
        let e = Export::resolve(&cfg, env(&[])).unwrap().unwrap();
        assert_eq!(e.url, "http://127.0.0.1:1/v1/traces");
        assert_eq!(e.service_name, "warden");
        let e = Export::resolve(
            &cfg,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:2"),
                ("OTEL_SERVICE_NAME", "gw"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.url, "http://127.0.0.1:2/v1/traces");
        assert_eq!(e.service_name, "gw");
        let e = Export::resolve(
            &cfg,
            env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (e.protocol, e.url.as_str()),
            (OtlpProtocol::Grpc, "http://127.0.0.1:4317")
        );
        let e = Export::resolve(
            &cfg,
            env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:3/t")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.url, "http://127.0.0.1:3/t");
        assert_eq!(
            Export::resolve(&cfg, env(&[("OTEL_SDK_DISABLED", "true")])).unwrap(),
            None
        );
        assert!(
            Export::resolve(&cfg, env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])).is_err()
        );
    }

    #[test]
    fn export_headers_and_timeout_from_the_standard_variables() {
        let cfg = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:1".into()),
            ..TelemetryConfig::default()
        };
        let e = Export::resolve(&cfg, env(&[])).unwrap().unwrap();
        assert_eq!(e.headers, ExportHeaders::default());
        assert_eq!(e.timeout, Duration::from_secs(10));
        let e = Export::resolve(
            &cfg,
            env(&[
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%20s3cret, x-tenant=acme,",
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
        )
        .unwrap()
        .unwrap();
        let pairs = |h: &ExportHeaders| -> Vec<(String, String)> {
            h.0.iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                .collect()
        };
        assert_eq!(
            pairs(&e.headers),
            [
                ("authorization".to_owned(), "Bearer s3cret".to_owned()),
                ("x-tenant".to_owned(), "acme".to_owned())
            ]
        );
        assert_eq!(e.timeout, Duration::from_millis(2500));
        // The values stay out of debug output.
        assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
        // The signal's own variables win.
        let e = Export::resolve(
            &cfg,
            env(&[
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "1"),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "3"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(pairs(&e.headers), [("b".to_owned(), "2".to_owned())]);
        assert_eq!(e.timeout, Duration::from_millis(3));
        for (key, bad) in [
            ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "bad name=1"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x=%0A"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
        ] {
            let e = Export::resolve(&cfg, env(&[(key, bad)])).unwrap_err();
            assert!(e.to_string().starts_with(key), "{bad}: {e}");
        }
    }

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_log_lines_carry_the_request_and_trace_ids() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let layer = log_layer(LogFormat::Json, EnvFilter::new("info"), move || out.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!(
                "request",
                request_id = "r-1",
                trace_id = tracing::field::Empty
            );
            request.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
            let _r = request.enter();
            let guard = tracing::info_span!("guard", warden.guard.checkpoint = "input");
            let _g = guard.enter();
            tracing::warn!(status = 503, "a backend failed");
            tracing::debug!("filtered out");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["fields"]["message"], "a backend failed");
        assert_eq!(line["fields"]["status"], 503);
        assert_eq!(line["spans"][0]["request_id"], "r-1");
        assert_eq!(
            line["spans"][0]["trace_id"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(line["spans"][1]["warden.guard.checkpoint"], "input");
    }

    #[test]
    fn traceparent_parsing() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent_trace_id(t),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(traceparent_trace_id(bad), None, "{bad}");
        }
    }
}
