//! Warden's gateway: the OpenAI-compatible HTTP API and the `warden` CLI.

pub mod agent_turn;
pub mod auth;
pub mod body_timeout;
pub mod cli;
pub mod config;
pub mod error;
pub mod guarding;
pub mod metrics;
pub mod openai;
pub mod otlp;
pub mod pg_nodelay;
pub mod policy_cache;
pub mod request_id;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod spans;
pub mod state;
pub mod stream_check;
pub mod telemetry;
pub mod turn;
