//! One guarded turn's trace, exported over OTLP/HTTP (protobuf) to a
//! receiver on 127.0.0.1 and decoded with the OpenTelemetry protobuf types
//! (the checks are in `otlp`, shared with the gRPC test).
//!
//! One test in its own binary: the global subscriber is set once per process.

mod otlp;

#[actix_web::test]
async fn a_guarded_turn_is_one_trace_continuing_the_callers() {
    otlp::a_guarded_turn_is_one_trace("http/protobuf").await;
}
