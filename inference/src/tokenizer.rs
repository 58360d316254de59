//! Byte-level BPE tokenizer built from GGUF metadata or a `tokenizer.json`.
//!
//! The BPE itself is the `tokenizers` crate's. Special (control) tokens are
//! matched here rather than registered as added tokens in `tokenizers`,
//! because Warden needs two modes on one vocabulary: template text, where an
//! exact `<|im_end|>` is one control token, and user content, where the same
//! characters must be ordinary text so that nobody can inject a turn boundary.
//! Rendered prompts mix both; [`protect_content`] marks special-token text
//! inside content before rendering so that [`Tokenizer::encode`] in special
//! mode still treats it as plain text.

use std::collections::HashSet;
use std::path::Path;

use serde_json::{json, Value};

use crate::error::{InferenceError, Result};
use crate::gguf::GgufFile;

/// Marks special-token text inside content; a private-use character that
/// never occurs in vocabularies' special tokens. Doubled to stand for itself.
const MARK: char = '\u{E000}';

/// GPT-2's pre-tokenisation pattern, as llama.cpp's `llama-bpe` pre-tokenizer
/// (Llama 3) writes it.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A token id.
pub type TokenId = u32;

/// A byte-level BPE tokenizer with llama.cpp's special-token semantics.
pub struct Tokenizer {
    bpe: tokenizers::Tokenizer,
    /// Raw bytes of every token (byte-level decoding done once at load).
    token_bytes: Vec<Vec<u8>>,
    /// Special tokens as (text, id), longest text first so matching is greedy.
    specials: Vec<(String, TokenId)>,
    special_ids: HashSet<TokenId>,
    stop_ids: Vec<TokenId>,
    bos: Option<TokenId>,
    add_bos: bool,
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(gguf.metadata_error(
                "tokenizer.ggml.model",
                format!("{model:?} is not supported (only byte-level BPE, \"gpt2\")"),
            ));
        }
        let pre = gguf
            .get_str("tokenizer.ggml.pre")
            .unwrap_or("default")
            .to_owned();
        let tokens: Vec<&str> = string_array(gguf, "tokenizer.ggml.tokens")?;
        let merges: Vec<&str> = string_array(gguf, "tokenizer.ggml.merges")?;
        let types = gguf.get_array("tokenizer.ggml.token_type")?;
        if types.len() != tokens.len() {
            return Err(gguf.metadata_error(
                "tokenizer.ggml.token_type",
                format!("{} entries for {} tokens", types.len(), tokens.len()),
            ));
        }
        let (pre_tokenizer, ignore_merges) = match pre.as_str() {
            // SmolLM: every digit on its own, then GPT-2's byte-level rules.
            "smollm" => (
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Digits", "individual_digits": true},
                    byte_level(true),
                ]}),
                false,
            ),
            "llama-bpe" | "llama3" => (
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT},
                     "behavior": "Isolated", "invert": false},
                    byte_level(false),
                ]}),
                true,
            ),
            "default" | "gpt2" => (byte_level(true), false),
            other => {
                return Err(gguf.metadata_error(
                    "tokenizer.ggml.pre",
                    format!("pre-tokenizer {other:?} is not supported (smollm, llama-bpe, gpt2)"),
                ))
            }
        };
        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| ((*t).to_owned(), json!(id)))
            .collect();
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                "vocab": vocab, "merges": merges,
            },
        });
        // Control (3) and user-defined (4) tokens are what llama.cpp matches
        // when parsing special tokens.
        let mut specials = Vec::new();
        for (id, (text, ty)) in tokens.iter().zip(types).enumerate() {
            let ty = ty.to_i32().unwrap_or(1);
            if ty == 3 || ty == 4 {
                specials.push(((*text).to_owned(), id as TokenId));
            }
        }
        let meta_id = |key: &str| gguf.get_usize(key).ok().map(|v| v as TokenId);
        let mut stops: Vec<TokenId> = [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ]
        .into_iter()
        .filter_map(meta_id)
        .collect();
        let bos = meta_id("tokenizer.ggml.bos_token_id");
        let add_bos = gguf
            .get("tokenizer.ggml.add_bos_token")
            .ok()
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        add_named_stops(&mut stops, &specials);
        Self::build(doc, specials, stops, bos, add_bos)
    }

    /// Builds the tokenizer from a Hugging Face `tokenizer.json` (byte-level BPE),
    /// with the end-of-turn tokens taken from `eos_token_ids` when the model's
    /// config lists them.
    pub fn from_tokenizer_json(path: &Path, eos_token_ids: &[TokenId]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| InferenceError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut doc: Value = serde_json::from_str(&text).map_err(|e| {
            InferenceError::Tokenizer(format!("{}: invalid JSON: {e}", path.display()))
        })?;
        if doc["model"]["type"] != "BPE" || doc["decoder"]["type"] != "ByteLevel" {
            return Err(InferenceError::Tokenizer(format!(
                "{}: only byte-level BPE tokenizers are supported",
                path.display()
            )));
        }
        let added = doc
            .get_mut("added_tokens")
            .map(Value::take)
            .unwrap_or(Value::Null);
        doc["added_tokens"] = json!([]);
        let mut specials = Vec::new();
        for token in added.as_array().into_iter().flatten() {
            if let (Some(text), Some(id)) = (token["content"].as_str(), token["id"].as_u64()) {
                specials.push((text.to_owned(), id as TokenId));
            }
        }
        let mut stops = eos_token_ids.to_vec();
        add_named_stops(&mut stops, &specials);
        let bos = ["<|begin_of_text|>", "<s>"]
            .iter()
            .find_map(|b| specials.iter().find(|(t, _)| t == b).map(|(_, id)| *id));
        Self::build(doc, specials, stops, bos, false)
    }

    fn build(
        doc: Value,
        mut specials: Vec<(String, TokenId)>,
        stop_ids: Vec<TokenId>,
        bos: Option<TokenId>,
        add_bos: bool,
    ) -> Result<Self> {
        let bpe = tokenizers::Tokenizer::from_bytes(doc.to_string().as_bytes())
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        let size = bpe.get_vocab_size(true);
        let table = byte_level_table();
        let mut token_bytes = vec![Vec::new(); size];
        for (text, id) in bpe.get_vocab(true) {
            if let Some(slot) = token_bytes.get_mut(id as usize) {
                *slot = byte_level_decode(&table, &text);
            }
        }
        // Specials are stored verbatim, not byte-level encoded.
        for (text, id) in &specials {
            if let Some(slot) = token_bytes.get_mut(*id as usize) {
                *slot = text.as_bytes().to_vec();
            }
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        specials.retain(|(t, _)| !t.is_empty());
        let special_ids = specials.iter().map(|(_, id)| *id).collect();
        Ok(Self {
            bpe,
            token_bytes,
            specials,
            special_ids,
            stop_ids,
            bos,
            add_bos,
        })
    }

    /// Tokenizes `text`. With `parse_special`, exact special-token strings
    /// become their single ids (template text); without, every character is
    /// ordinary text (user content). Nothing is added at either end.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<TokenId>> {
        if !parse_special {
            return self.encode_plain(text);
        }
        let mut ids = Vec::new();
        let mut plain_start = 0;
        let mut pos = 0;
        while pos < text.len() {
            let rest = &text[pos..];
            if let Some((tok, id)) = self.specials.iter().find(|(t, _)| rest.starts_with(t)) {
                self.encode_marked(&text[plain_start..pos], &mut ids)?;
                ids.push(*id);
                pos += tok.len();
                plain_start = pos;
            } else {
                pos += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
        self.encode_marked(&text[plain_start..], &mut ids)?;
        Ok(ids)
    }

    /// Tokenizes a plain stretch that may hold [`protect_content`] marks.
    fn encode_marked(&self, text: &str, out: &mut Vec<TokenId>) -> Result<()> {
        if text.contains(MARK) {
            out.extend(self.encode_plain(&unmark(text))?);
        } else {
            out.extend(self.encode_plain(text)?);
        }
        Ok(())
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<TokenId>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        self.bpe
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))
    }

    /// Decodes ids to text; with `skip_special`, control tokens vanish.
    /// Invalid UTF-8 (a sequence cut inside a character) is replaced by U+FFFD.
    pub fn decode(&self, ids: &[TokenId], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for id in ids {
            if skip_special && self.special_ids.contains(id) {
                continue;
            }
            bytes.extend_from_slice(self.token_bytes(*id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The raw bytes a token stands for (empty for an unknown id).
    pub fn token_bytes(&self, id: TokenId) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The id of a special token given by its exact text.
    pub fn special_id(&self, text: &str) -> Option<TokenId> {
        self.specials
            .iter()
            .find(|(t, _)| t == text)
            .map(|(_, id)| *id)
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: TokenId) -> bool {
        self.special_ids.contains(&id)
    }

    /// Special token texts, longest first.
    pub fn special_texts(&self) -> impl Iterator<Item = &str> {
        self.specials.iter().map(|(t, _)| t.as_str())
    }

    /// Tokens that end generation (end of sequence, turn or message).
    pub fn stop_ids(&self) -> &[TokenId] {
        &self.stop_ids
    }

    /// The beginning-of-sequence token and whether the model wants it prepended.
    pub fn bos(&self) -> (Option<TokenId>, bool) {
        (self.bos, self.add_bos)
    }

    /// Number of ids in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// A `tokenizer.json` document equivalent to this tokenizer, with the
    /// special tokens as added tokens (for exporting a model).
    pub fn to_tokenizer_json(&self) -> Result<String> {
        let mut doc: Value = serde_json::from_str(
            &self
                .bpe
                .to_string(false)
                .map_err(|e| InferenceError::Tokenizer(e.to_string()))?,
        )
        .map_err(|e| InferenceError::Tokenizer(e.to_string()))?;
        let mut added: Vec<_> = self.specials.iter().collect();
        added.sort_by_key(|(_, id)| *id);
        doc["added_tokens"] = added
            .into_iter()
            .map(|(text, id)| {
                json!({"id": id, "content": text, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        Ok(doc.to_string())
    }
}

/// Prepares message content for rendering into a prompt that will be
/// tokenized with special-token parsing: special-token text inside it stays
/// plain text. Apply it to every piece of untrusted content before rendering.
pub fn protect_content<'a>(text: &str, specials: impl IntoIterator<Item = &'a str>) -> String {
    let specials: Vec<&str> = specials.into_iter().collect();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == MARK {
            out.push(MARK);
            out.push(MARK);
        } else {
            // A mark after the first character breaks every special token
            // starting here, and [`unmark`] removes it again.
            if specials.iter().any(|s| rest.starts_with(s)) {
                out.push(c);
                out.push(MARK);
                rest = &rest[c.len_utf8()..];
                continue;
            }
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Undoes [`protect_content`]'s marks.
fn unmark(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == MARK {
            if chars.peek() == Some(&MARK) {
                chars.next();
                out.push(MARK);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn string_array<'a>(gguf: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    gguf.get_array(key)?
        .iter()
        .map(|v| {
            v.to_string()
                .map(String::as_str)
                .map_err(|e| gguf.metadata_error(key, e))
        })
        .collect()
}

/// Templates end turns with these tokens even where the metadata only names
/// one of them; llama.cpp treats them all as end of generation.
fn add_named_stops(stops: &mut Vec<TokenId>, specials: &[(String, TokenId)]) {
    const END_TOKENS: [&str; 6] = [
        "<|eot_id|>",
        "<|eom_id|>",
        "<|im_end|>",
        "<|end_of_text|>",
        "<|endoftext|>",
        "<end_of_turn>",
    ];
    for (text, id) in specials {
        if END_TOKENS.contains(&text.as_str()) && !stops.contains(id) {
            stops.push(*id);
        }
    }
}

/// GPT-2's byte-level alphabet inverted: `table[c]` is the byte that the
/// char with code point `c` stands for. Written here because `tokenizers`
/// keeps its table private, and we need raw bytes per token for streaming.
fn byte_level_table() -> [u8; 0x144] {
    let printable = |b: u8| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = [0u8; 0x144];
    let mut next = 0x100;
    for b in 0u8..=255 {
        if printable(b) {
            table[usize::from(b)] = b;
        } else {
            table[next] = b;
            next += 1;
        }
    }
    table
}

/// The bytes a byte-level BPE token stands for.
fn byte_level_decode(table: &[u8; 0x144], token: &str) -> Vec<u8> {
    token
        .chars()
        .map(|c| table.get(c as usize).copied().unwrap_or(b'?'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_round_trips() {
        let t = byte_level_table();
        assert_eq!(byte_level_decode(&t, "Ġ"), vec![b' ']);
        assert_eq!(byte_level_decode(&t, "Ċ"), vec![b'\n']);
        assert_eq!(byte_level_decode(&t, "ĉ"), vec![b'\t']);
        assert_eq!(byte_level_decode(&t, "Ā"), vec![0u8]);
        assert_eq!(byte_level_decode(&t, "Ń"), vec![0xAD]);
        assert_eq!(byte_level_decode(&t, "a"), vec![b'a']);
    }

    #[test]
    fn protect_and_unmark_round_trip() {
        let specials = ["<|im_end|>", "<|im_start|>"];
        for text in [
            "plain",
            "a<|im_end|>b",
            "\u{E000}x\u{E000}\u{E000}",
            "<|im_start|><|im_end|>",
        ] {
            let p = protect_content(text, specials);
            assert!(!specials.iter().any(|s| p.contains(s)), "{p:?}");
            assert_eq!(unmark(&p), text);
        }
    }
}
