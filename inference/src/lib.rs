//! Local model runtime: GGUF and safetensors llama models on candle, the
//! tokenizer, chat templates, sampling, generation and a KV cache the caller
//! owns (prefill a prefix once, fork it, roll it back).

pub mod cache;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod llama;
pub mod model;
pub mod sampling;
pub mod template;
pub mod tokenizer;

pub use cache::KvCache;
pub use error::{InferenceError, Result};
pub use generate::{Completion, Delta, FinishReason, GenerateOptions, StreamEvent};
pub use llama::{argmax, logits_rows, LlamaConfig, Logits};
pub use model::Model;
pub use sampling::{Sampler, SamplingParams};
pub use tokenizer::{protect_content, TokenId, Tokenizer};
