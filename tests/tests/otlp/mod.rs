//! What the OTLP trace tests share: receivers on 127.0.0.1 for either
//! transport, keeping every export as its protobuf bytes, and the check of
//! one guarded turn's trace, which is the same whichever way it travelled:
//! the span tree, GenAI and verdict attributes, the caller's `traceparent`
//! continued, and no message content or key anywhere in what was sent.
//!
//! Each test using it is alone in its binary: the global subscriber is set
//! once per process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use warden_gateway::config::Config;
use warden_gateway::telemetry;
use warden_tests::{Setup, TestDb, KEY};

/// Every export received, as the protobuf bytes of its request.
type Received = Arc<Mutex<Vec<Bytes>>>;

/// The header the gateway is told to send (`OTEL_EXPORTER_OTLP_HEADERS`,
/// its value percent-encoded there) and the HTTP receiver requires.
const COLLECTOR_TOKEN: (&str, &str) = ("x-collector-token", "t0k=en");

/// An OTLP/HTTP traces receiver; returns its base URL.
fn http_receiver(received: Received) -> String {
    let server = HttpServer::new(move || {
        let store = Arc::clone(&received);
        App::new().route(
            "/v1/traces",
            web::post().to(move |req: actix_web::HttpRequest, body: Bytes| {
                let store = Arc::clone(&store);
                async move {
                    let (name, value) = COLLECTOR_TOKEN;
                    if req.headers().get(name).and_then(|v| v.to_str().ok()) != Some(value) {
                        return HttpResponse::Unauthorized().finish();
                    }
                    store.lock().unwrap().push(body);
                    // An empty ExportTraceServiceResponse: everything accepted.
                    HttpResponse::Ok()
                        .content_type("application/x-protobuf")
                        .body(Vec::<u8>::new())
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    format!("http://{addr}")
}

/// The collector's `TraceService`, keeping what it is sent.
struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        // Encoded again, so both transports are checked byte for byte alike.
        let bytes = request.into_inner().encode_to_vec();
        self.0.lock().unwrap().push(bytes.into());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC traces receiver (tonic, as a collector would be); returns
/// its URL.
fn grpc_receiver(received: Received) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    actix_web::rt::spawn(
        tonic::transport::Server::builder()
            .serve_with_incoming(TraceServiceServer::new(Collector(received)), incoming),
    );
    format!("http://{addr}")
}

/// An attribute of a span as a comparable value.
#[derive(Debug, Clone, PartialEq)]
enum Attr {
    S(String),
    I(i64),
    F(f64),
    B(bool),
    L(Vec<String>),
}

fn attrs(span: &Span) -> BTreeMap<String, Attr> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) => Attr::S(s.clone()),
                Any::IntValue(i) => Attr::I(*i),
                Any::DoubleValue(f) => Attr::F(*f),
                Any::BoolValue(b) => Attr::B(*b),
                Any::ArrayValue(a) => Attr::L(
                    a.values
                        .iter()
                        .filter_map(|v| match v.value.as_ref()? {
                            Any::StringValue(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => return None,
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

fn s(v: &str) -> Attr {
    Attr::S(v.to_owned())
}

/// Runs one guarded turn through a gateway exporting over `protocol`
/// (`http/protobuf` or `grpc`, as `telemetry.protocol` spells it) to a
/// receiver of that transport, and checks the trace it received.
pub async fn a_guarded_turn_is_one_trace(protocol: &str) {
    let received: Received = Arc::default();
    let endpoint = match protocol {
        "http/protobuf" => http_receiver(Arc::clone(&received)),
        "grpc" => grpc_receiver(Arc::clone(&received)),
        other => panic!("no receiver for {other:?}"),
    };
    let db = TestDb::create().await;
    let mut setup = Setup::new();
    setup.database_url = Some(db.url.clone());
    setup.extra = format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\nprotocol = \"{protocol}\"\nservice_name = \"warden-test\"\n"
    );
    let config = Config::load(&setup.write(), std::iter::empty()).unwrap();
    // gRPC's stock exporter reads this variable from the process itself.
    let env = |k: &str| {
        (k == "OTEL_EXPORTER_OTLP_HEADERS").then(|| format!("{}=t0k%3Den", COLLECTOR_TOKEN.0))
    };
    let tracing = telemetry::install(&config.server, &config.telemetry, env).unwrap();
    assert!(tracing.exporting());
    let gw = setup.start().await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let secret_words = "merger QX81-ZEBRA";
    let res = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(KEY)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"model": "up", "messages": [
            {"role": "user", "content": format!("Ask my lawyer about the {secret_words}")}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["warden"]["decision"], "flagged");
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();

    // The audit record carries the same trace id.
    gw.state.audit.as_ref().unwrap().flush().await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let audited: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT DISTINCT trace_id FROM audit_events WHERE request_id = $1")
            .bind(&request_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(audited, vec![(Some(trace_id.to_owned()),)]);

    // Every finished span leaves now; the receiver has them when this
    // returns (off this thread, which serves the receivers).
    let tracing = actix_web::rt::task::spawn_blocking(move || {
        assert!(tracing.force_flush());
        tracing
    })
    .await
    .unwrap();
    let bodies = received.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "nothing exported");

    // Nothing of the conversation, the key or the upstream's secret left.
    let raw: Vec<u8> = bodies.iter().flat_map(|b| b.to_vec()).collect();
    let raw = String::from_utf8_lossy(&raw);
    for forbidden in [
        "QX81-ZEBRA",
        "merger",
        answer.as_str(),
        KEY,
        "Bearer",
        "upstream-secret",
    ] {
        assert!(!raw.contains(forbidden), "{forbidden:?} was exported");
    }

    let mut spans: Vec<Span> = Vec::new();
    for b in &bodies {
        let req = ExportTraceServiceRequest::decode(b.as_ref()).unwrap();
        for rs in req.resource_spans {
            let resource = rs.resource.unwrap_or_default();
            let service = resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            assert_eq!(service, Some(Any::StringValue("warden-test".into())));
            spans.extend(rs.scope_spans.into_iter().flat_map(|ss| ss.spans));
        }
    }
    let ours: Vec<&Span> = spans
        .iter()
        .filter(|s| hex::encode(&s.trace_id) == trace_id)
        .collect();
    let named =
        |name: &str| -> Vec<&Span> { ours.iter().copied().filter(|s| s.name == name).collect() };
    let one = |name: &str| -> &Span {
        let found = named(name);
        assert_eq!(
            found.len(),
            1,
            "{name}: {:?}",
            ours.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        found[0]
    };

    // The request's span continues the caller's.
    let request = one("POST /v1/chat/completions");
    assert_eq!(hex::encode(&request.parent_span_id), caller_span);
    assert_eq!(request.kind, SpanKind::Server as i32);
    let a = attrs(request);
    assert_eq!(a["gen_ai.operation.name"], s("chat"));
    assert_eq!(a["gen_ai.request.model"], s("up"));
    assert_eq!(a["http.request.method"], s("POST"));
    assert_eq!(a["http.route"], s("/v1/chat/completions"));
    assert_eq!(a["http.response.status_code"], Attr::I(200));
    assert_eq!(a["request_id"], s(&request_id));
    assert_eq!(a["trace_id"], s(trace_id));

    // Checkpoints, generation and the audit hand-off are its children.
    let input = one("guard input");
    let output = one("guard output");
    let generation = one("chat up");
    let audit = one("audit hand-off");
    for child in [input, output, generation, audit] {
        assert_eq!(child.parent_span_id, request.span_id, "{}", child.name);
    }
    assert!(input.end_time_unix_nano <= generation.start_time_unix_nano);
    assert!(generation.end_time_unix_nano <= output.start_time_unix_nano);

    let a = attrs(input);
    assert_eq!(a["warden.guard.checkpoint"], s("input"));
    assert_eq!(a["warden.guard.decision"], s("flagged"));
    assert_eq!(a["warden.guard.categories"], s("S6"));
    assert_eq!(a["warden.guard.backends"], s("rules,fake-guard"));
    assert!(matches!(a["warden.guard.latency_ms"], Attr::F(ms) if ms >= 0.0));
    assert_eq!(attrs(output)["warden.guard.decision"], s("allowed"));

    // The rules' verdict is on the checkpoint's span (they take
    // microseconds); each model backend is a child span with its verdict.
    assert_eq!(a["warden.guard.rules.verdict"], s("unsafe"));
    assert_eq!(a["warden.guard.rules.categories"], s("S6"));
    assert_eq!(a["warden.guard.rules.action"], s("flag"));
    assert_eq!(attrs(output)["warden.guard.rules.verdict"], s("safe"));
    let backends: BTreeMap<String, BTreeMap<String, Attr>> = named("guard.backend")
        .into_iter()
        .filter(|b| b.parent_span_id == input.span_id)
        .map(|b| {
            let a = attrs(b);
            let Attr::S(name) = a["warden.guard.backend"].clone() else {
                panic!("backend name")
            };
            (name, a)
        })
        .collect();
    assert_eq!(backends.len(), 1, "{backends:?}");
    let guard = &backends["fake-guard"];
    assert_eq!(guard["warden.guard.kind"], s("remote"));
    assert_eq!(guard["warden.guard.verdict"], s("safe"));
    assert_eq!(guard["warden.guard.model"], s("guard"));
    assert_eq!(
        named("guard.backend")
            .iter()
            .filter(|b| b.parent_span_id == output.span_id)
            .count(),
        1
    );

    // The generation in GenAI terms.
    assert_eq!(generation.kind, SpanKind::Client as i32);
    let a = attrs(generation);
    assert_eq!(a["gen_ai.operation.name"], s("chat"));
    assert_eq!(a["gen_ai.request.model"], s("up"));
    assert_eq!(a["gen_ai.request.max_tokens"], Attr::I(64));
    assert_eq!(a["gen_ai.usage.input_tokens"], Attr::I(5));
    assert_eq!(a["gen_ai.usage.output_tokens"], Attr::I(4));
    assert_eq!(
        a["gen_ai.response.finish_reasons"],
        Attr::L(vec!["stop".into()])
    );
    assert!(!a.contains_key("gen_ai.input.messages"));
    assert!(!a.contains_key("gen_ai.output.messages"));

    let a = attrs(audit);
    assert_eq!(a["warden.audit.decision"], s("flagged"));
    // The request, its message, four verdicts, the answer and the decision.
    assert!(
        matches!(a["warden.audit.events"], Attr::I(n) if n >= 7),
        "{a:?}"
    );

    gw.stop().await;
    actix_web::rt::task::spawn_blocking(move || tracing.shutdown())
        .await
        .unwrap();
    db.drop_db().await;
}
