//! Local model runtime: GGUF and safetensors llama models on candle, the
//! tokenizer, chat templates, sampling, generation and a KV cache the caller
//! owns (prefill a prefix once, fork it, roll it back).

mod attention;
pub mod bench;
pub mod cache;
pub mod constrain;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod kernels;
pub mod linear;
pub mod llama;
pub mod model;
mod ops;
pub mod sampling;
pub mod scheduler;
pub mod template;
pub mod threads;
pub mod tokenizer;

pub use cache::KvCache;
pub use constrain::{CallFormat, ConstrainError, Constraint, ToolSpec};
pub use error::{InferenceError, Result};
pub use generate::{Completion, Delta, FinishReason, GenerateOptions, StreamEvent};
pub use llama::{argmax, logits_rows, BatchItem, LlamaConfig, Logits};
pub use model::Model;
pub use sampling::{Sampler, SamplingParams};
pub use tokenizer::{protect_content, TokenId, Tokenizer};
