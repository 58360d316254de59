//! Generators and agent workflows: the local engine and upstream
//! OpenAI-compatible servers behind one interface that yields whole answers
//! or streamed chunks. Returns what happened as values; the gateway turns
//! them into HTTP responses and audit events.

pub mod agent;
pub mod chat;
pub mod error;
pub mod generate;
pub mod tools;

pub use chat::{
    content_text, ChatRequest, ChunkHeader, GenParams, Generated, RawAnswer, SentChoice,
    StreamItem, Usage,
};
pub use error::GenerateError;
pub use generate::{Generator, LocalGenerator, StreamEvent, UpstreamGenerator};
