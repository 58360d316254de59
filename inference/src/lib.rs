//! Local model runtime: GGUF loading, tokenizer, chat templates, generation.

pub mod template;
