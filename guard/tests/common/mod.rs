//! A Llama 3-style byte-level tokenizer for the prompt-structure tests.

#![allow(dead_code)]

use std::io::Write;

use serde_json::{json, Value};
use warden_inference::{TokenId, Tokenizer};

pub const BOT: TokenId = 256;
pub const START_HEADER: TokenId = 258;
pub const END_HEADER: TokenId = 259;
pub const EOT: TokenId = 260;

/// GPT-2's byte-to-character table, which byte-level BPE vocabularies use.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut next = 256;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap()
            }
        })
        .collect()
}

/// A real byte-level BPE `tokenizer.json` (one token per byte, no merges)
/// with Llama 3's special tokens, loaded by `warden-inference`.
pub fn llama3_style_tokenizer() -> Tokenizer {
    let vocab: serde_json::Map<String, Value> = byte_chars()
        .into_iter()
        .enumerate()
        .map(|(id, c)| (c.to_string(), json!(id)))
        .collect();
    let specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ];
    let added: Vec<Value> = specials
        .iter()
        .zip(256u32..)
        .map(|(text, id)| {
            json!({"id": id, "content": text, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let doc = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added, "normalizer": null,
        "pre_tokenizer": byte_level, "post_processor": null, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []},
    });
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(doc.to_string().as_bytes()).unwrap();
    Tokenizer::from_tokenizer_json(file.path(), &[EOT]).unwrap()
}
