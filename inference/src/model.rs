//! A loaded model: weights, tokenizer and chat template, from a GGUF file or
//! a safetensors directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::cache::KvCache;
use crate::constrain::{ConstrainError, Constraint, ConstraintCompiler, TokenMask};
use crate::error::{InferenceError, Result};
use crate::gguf::GgufFile;
use crate::llama::{BatchItem, Llama, LlamaConfig, Logits};
use crate::template::{BuiltinTemplate, ChatTemplate, RenderInput};
use crate::tokenizer::{protect_content, TokenId, Tokenizer};

/// A model ready to run: shareable across threads (`Arc<Model>`).
pub struct Model {
    path: PathBuf,
    llama: Llama,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    /// Built on the first constrained request (the token trie costs memory).
    constraints: OnceLock<Result<ConstraintCompiler, ConstrainError>>,
}

impl Model {
    /// Loads a model: a `.gguf` file, or a directory (or its `config.json`)
    /// holding `config.json`, `tokenizer.json` and `*.safetensors`.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|source| InferenceError::Io {
            path: path.to_owned(),
            source,
        })?;
        if meta.is_dir() {
            return Self::load_safetensors_dir(path);
        }
        if path.file_name().is_some_and(|n| n == "config.json") {
            return Self::load_safetensors_dir(path.parent().unwrap_or(Path::new(".")));
        }
        Self::load_gguf(path)
    }

    /// Loads a GGUF file with its embedded tokenizer and chat template.
    pub fn load_gguf(path: &Path) -> Result<Self> {
        let mut gguf = GgufFile::open(path)?;
        let arch = gguf.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(InferenceError::UnsupportedArchitecture {
                path: path.to_owned(),
                arch: arch.to_owned(),
            });
        }
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        let llama = Llama::from_gguf(&mut gguf)?;
        let template = match gguf.get_str("tokenizer.chat_template") {
            Ok(source) => Some(template_with_tokens(source, &tokenizer, &gguf)?),
            Err(_) => None,
        };
        Ok(Self {
            path: path.to_owned(),
            llama,
            tokenizer,
            template,
            constraints: OnceLock::new(),
        })
    }

    /// Loads Hugging Face llama weights: `config.json`, `tokenizer.json`,
    /// optional `tokenizer_config.json` (chat template) and `*.safetensors`.
    pub fn load_safetensors_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config: Value = read_json(&config_path)?;
        let field = |k: &str| -> Result<usize> {
            config[k]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| InferenceError::Metadata {
                    path: config_path.clone(),
                    key: k.to_owned(),
                    reason: "missing or not a non-negative integer".into(),
                })
        };
        let model_type = config["model_type"].as_str().unwrap_or_default();
        if model_type != "llama" {
            return Err(InferenceError::UnsupportedArchitecture {
                path: config_path,
                arch: model_type.to_owned(),
            });
        }
        let n_heads = field("num_attention_heads")?;
        let head_dim = field("hidden_size")? / n_heads.max(1);
        let llama_config = LlamaConfig {
            n_layers: field("num_hidden_layers")?,
            hidden: field("hidden_size")?,
            n_heads,
            n_kv_heads: field("num_key_value_heads").unwrap_or(n_heads),
            ffn: field("intermediate_size")?,
            vocab: 0,
            rms_eps: config["rms_norm_eps"].as_f64().unwrap_or(1e-5),
            rope_theta: config["rope_theta"].as_f64().unwrap_or(10_000.0),
            context_len: field("max_position_embeddings")?,
        };
        let freq_factors = llama3_freq_factors(&config["rope_scaling"], &llama_config, head_dim);
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| InferenceError::Io {
                path: dir.to_owned(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(InferenceError::InvalidFile {
                path: dir.to_owned(),
                format: "safetensors",
                reason: "no *.safetensors file in the directory".into(),
            });
        }
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for file in &files {
            let loaded = candle_core::safetensors::load(file, &Device::Cpu).map_err(|e| {
                InferenceError::InvalidFile {
                    path: file.clone(),
                    format: "safetensors",
                    reason: e.to_string(),
                }
            })?;
            tensors.extend(loaded);
        }
        let eos: Vec<TokenId> = match &config["eos_token_id"] {
            Value::Number(n) => n.as_u64().map(|v| v as TokenId).into_iter().collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as TokenId)
                .collect(),
            _ => Vec::new(),
        };
        let tokenizer = Tokenizer::from_tokenizer_json(&dir.join("tokenizer.json"), &eos)?;
        let llama = Llama::from_dense(dir, llama_config, tensors, freq_factors)?;
        let template = match read_json(&dir.join("tokenizer_config.json")) {
            Ok(tc) => match tc["chat_template"].as_str() {
                Some(source) => {
                    let tok = |k: &str| match &tc[k] {
                        Value::String(s) => s.clone(),
                        Value::Object(o) => o
                            .get("content")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        _ => String::new(),
                    };
                    Some(
                        ChatTemplate::from_jinja(source, &tok("bos_token"), &tok("eos_token"))
                            .map_err(|e| InferenceError::Metadata {
                                path: dir.join("tokenizer_config.json"),
                                key: "chat_template".into(),
                                reason: e.to_string(),
                            })?,
                    )
                }
                None => None,
            },
            Err(_) => None,
        };
        Ok(Self {
            path: dir.to_owned(),
            llama,
            tokenizer,
            template,
            constraints: OnceLock::new(),
        })
    }

    /// Where the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The network.
    pub fn llama(&self) -> &Llama {
        &self.llama
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Compiles `constraint` against this model's vocabulary: a fresh token
    /// mask for one generation, or why the constraint cannot be used.
    pub fn constrain(&self, constraint: &Constraint) -> Result<TokenMask, ConstrainError> {
        self.constraints
            .get_or_init(|| ConstraintCompiler::new(&self.tokenizer))
            .as_ref()
            .map_err(Clone::clone)?
            .start(constraint)
    }

    /// The model's own chat template, if it ships one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// Replaces the chat template (a built-in one chosen by configuration).
    pub fn set_builtin_template(&mut self, which: BuiltinTemplate) {
        self.template = Some(ChatTemplate::builtin(which));
    }

    /// An empty cache for this model.
    pub fn new_cache(&self) -> KvCache {
        self.llama.new_cache()
    }

    /// Runs `tokens` after what `cache` holds; see [`Llama::forward`].
    pub fn forward(
        &self,
        tokens: &[TokenId],
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor> {
        self.llama.forward(tokens, cache, logits)
    }

    /// Runs several sequences through one pass; see [`Llama::forward_batch`].
    pub fn forward_batch(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Tensor>> {
        self.llama.forward_batch(items)
    }

    /// Worker threads each pass uses.
    pub fn threads(&self) -> usize {
        self.llama.threads()
    }

    /// Sets the worker threads for later passes (default: `WARDEN_THREADS`,
    /// else every core).
    pub fn set_threads(&self, threads: usize) -> Result<()> {
        self.llama.set_threads(threads)
    }

    /// Renders a conversation with the model's template: the exact prompt text.
    pub fn render(&self, input: &RenderInput) -> Result<String> {
        self.template()?
            .render(input)
            .map_err(|e| InferenceError::InvalidRequest(format!("chat template: {e}")))
    }

    /// Renders and tokenizes a conversation. Message contents are protected
    /// before rendering, so special-token text a user wrote stays plain text
    /// while the template's own special tokens become their ids.
    pub fn encode_chat(&self, input: &RenderInput) -> Result<Vec<TokenId>> {
        let mut protected = input.clone();
        for message in &mut protected.messages {
            self.protect_message(message);
        }
        self.encode_prompt(&self.render(&protected)?)
    }

    fn template(&self) -> Result<&ChatTemplate> {
        self.template.as_ref().ok_or_else(|| {
            InferenceError::InvalidRequest(format!(
                "{} has no chat template; configure a built-in one",
                self.path.display()
            ))
        })
    }

    fn protect_message(&self, message: &mut Value) {
        let specials = || self.tokenizer.special_texts();
        match message.get_mut("content") {
            Some(Value::String(s)) => *s = protect_content(s, specials()),
            Some(Value::Array(parts)) => {
                for part in parts {
                    if let Some(Value::String(s)) = part.get_mut("text") {
                        *s = protect_content(s, specials());
                    }
                }
            }
            _ => {}
        }
    }

    /// Tokenizes a rendered prompt: template special tokens become their ids,
    /// protected content stays text; BOS is prepended if the model asks for
    /// it and the prompt lacks it.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<TokenId>> {
        let mut ids = self.tokenizer.encode(prompt, true)?;
        if let (Some(bos), true) = self.tokenizer.bos() {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }
}

/// The template's `bos_token`/`eos_token` are the texts of those token ids.
fn template_with_tokens(
    source: &str,
    tokenizer: &Tokenizer,
    gguf: &GgufFile,
) -> Result<ChatTemplate> {
    let text = |key: &str| {
        gguf.get_usize(key)
            .map(|id| String::from_utf8_lossy(tokenizer.token_bytes(id as TokenId)).into_owned())
            .unwrap_or_default()
    };
    ChatTemplate::from_jinja(
        source,
        &text("tokenizer.ggml.bos_token_id"),
        &text("tokenizer.ggml.eos_token_id"),
    )
    .map_err(|e| gguf.metadata_error("tokenizer.chat_template", e))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| InferenceError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| InferenceError::Metadata {
        path: path.to_owned(),
        key: "(document)".into(),
        reason: format!("invalid JSON: {e}"),
    })
}

/// Llama 3.1's RoPE scaling from `config.json`: the per-frequency divisors
/// that GGUF files store precomputed as `rope_freqs.weight`.
fn llama3_freq_factors(scaling: &Value, config: &LlamaConfig, head_dim: usize) -> Option<Vec<f32>> {
    if scaling["rope_type"].as_str() != Some("llama3") {
        return None;
    }
    let factor = scaling["factor"].as_f64()?;
    let low = scaling["low_freq_factor"].as_f64()?;
    let high = scaling["high_freq_factor"].as_f64()?;
    let original = scaling["original_max_position_embeddings"].as_f64()?;
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    Some(
        (0..head_dim / 2)
            .map(|i| {
                let freq = 1.0 / config.rope_theta.powf(2.0 * i as f64 / head_dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let scaled = if wavelen < high_wavelen {
                    freq
                } else if wavelen > low_wavelen {
                    freq / factor
                } else {
                    let smooth = (original / wavelen - low) / (high - low);
                    (1.0 - smooth) * freq / factor + smooth * freq
                };
                (freq / scaled) as f32
            })
            .collect(),
    )
}
