//! Local model runtime: GGUF loading, tokenizer, chat templates, generation.
