//! One guarded turn's trace, exported over OTLP/gRPC to a tonic
//! `TraceService` on 127.0.0.1 (the checks are in `otlp`, shared with the
//! HTTP test).
//!
//! One test in its own binary: the global subscriber is set once per process.

mod otlp;

#[actix_web::test]
async fn a_guarded_turn_travels_over_grpc_as_one_trace() {
    otlp::a_guarded_turn_is_one_trace("grpc").await;
}
