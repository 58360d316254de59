//! The llama forward pass over candle ops, with the cache outside the model.
//!
//! Written here instead of using `candle_transformers::models::quantized_llama`
//! because that model owns its cache (dropped whenever a pass starts at
//! position 0, never rolled back), returns only the last position's logits and
//! stops its RoPE tables at 4096 positions. The matmuls go through
//! [`Linear`]: our own kernels for Q4_1/Q5_0/Q5_1/Q8_0 weights, candle's
//! `QMatMul` for the formats it already computes fast (K-quants, dense).
//! Several sequences can run through one pass ([`Llama::forward_batch`]), so
//! concurrent requests share each read of the weights.

use std::path::Path;

use std::sync::{Arc, Mutex};

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};

use crate::attention::{attend, Heads, Rope, RopeStyle};
use crate::cache::KvCache;
use crate::error::{InferenceError, Result};
use crate::gguf::GgufFile;
use crate::kernels::Isa;
use crate::linear::Linear;
use crate::ops;
use crate::threads;

/// Shape and numeric settings of a llama model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_heads: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Vocabulary size (rows of the output matrix).
    pub vocab: usize,
    /// RMS norm epsilon.
    pub rms_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Trained context length.
    pub context_len: usize,
}

impl LlamaConfig {
    /// Dimension of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.n_heads
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: &str| InferenceError::Metadata {
            path: path.to_owned(),
            key: "model shape".into(),
            reason: reason.into(),
        };
        if self.n_layers == 0 || self.hidden == 0 || self.n_heads == 0 || self.n_kv_heads == 0 {
            return Err(bad("layer count, width and head counts must be positive"));
        }
        if !self.hidden.is_multiple_of(self.n_heads)
            || !self.n_heads.is_multiple_of(self.n_kv_heads)
        {
            return Err(bad(
                "width must divide into query heads, query heads into key/value heads",
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(bad("head dimension must be even for RoPE"));
        }
        Ok(())
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Q, K and V fused along the output dimension.
    qkv: Linear,
    wo: Linear,
    ffn_norm: Vec<f32>,
    /// Gate and up projections fused along the output dimension.
    gate_up: Linear,
    w_down: Linear,
}

/// Which positions of a pass to compute logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation).
    Last,
    /// Every position of the pass (scoring, teacher forcing).
    All,
}

/// A loaded llama model; immutable and shareable across threads.
pub struct Llama {
    config: LlamaConfig,
    embed: Linear,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Linear,
    rope: Rope,
    pool: Mutex<(usize, Arc<rayon::ThreadPool>)>,
}

/// One sequence of a batched pass: its new tokens, its cache, which logits.
pub struct BatchItem<'a> {
    /// Tokens to run after what the cache holds (not empty).
    pub tokens: &'a [u32],
    /// The sequence's cache; the tokens are appended to it.
    pub cache: &'a mut KvCache,
    /// Which positions get logits.
    pub logits: Logits,
}

impl Llama {
    /// Loads the weights of a GGUF llama model.
    pub(crate) fn from_gguf(gguf: &mut GgufFile) -> Result<Self> {
        let arch = gguf.get_str("general.architecture")?.to_owned();
        if arch != "llama" {
            return Err(InferenceError::UnsupportedArchitecture {
                path: gguf.path().to_owned(),
                arch,
            });
        }
        let key = |k: &str| format!("llama.{k}");
        let n_heads = gguf.get_usize(&key("attention.head_count"))?;
        let config = LlamaConfig {
            n_layers: gguf.get_usize(&key("block_count"))?,
            hidden: gguf.get_usize(&key("embedding_length"))?,
            n_heads,
            n_kv_heads: gguf
                .get_usize(&key("attention.head_count_kv"))
                .unwrap_or(n_heads),
            ffn: gguf.get_usize(&key("feed_forward_length"))?,
            vocab: 0,
            rms_eps: gguf.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: gguf.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0),
            context_len: gguf.get_usize(&key("context_length"))?,
        };
        config.validate(gguf.path())?;
        for name in gguf_tensor_names(config.n_layers) {
            if let Some((dtype, _)) = gguf.tensor_info(&name) {
                check_dtype(gguf.path(), &name, dtype)?;
            }
        }
        let vocab = match gguf.tensor_info("token_embd.weight") {
            Some((_, &[rows, _])) => rows,
            _ => gguf.tensor("token_embd.weight")?.shape().dims2()?.0,
        };
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            let mut linear = |parts: &[&str]| {
                let names: Vec<String> = parts.iter().map(|s| p(s)).collect();
                Linear::from_gguf(gguf, &names)
            };
            let qkv = linear(&["attn_q", "attn_k", "attn_v"])?;
            let wo = linear(&["attn_output"])?;
            let gate_up = linear(&["ffn_gate", "ffn_up"])?;
            let w_down = linear(&["ffn_down"])?;
            layers.push(Layer {
                attn_norm: gguf
                    .tensor(&p("attn_norm"))?
                    .dequantize(&Device::Cpu)?
                    .to_vec1()?,
                qkv,
                wo,
                ffn_norm: gguf
                    .tensor(&p("ffn_norm"))?
                    .dequantize(&Device::Cpu)?
                    .to_vec1()?,
                gate_up,
                w_down,
            });
        }
        let norm = gguf
            .tensor("output_norm.weight")?
            .dequantize(&Device::Cpu)?
            .to_vec1()?;
        let embed = Linear::from_gguf(gguf, &["token_embd.weight".to_owned()])?;
        let output = if gguf.tensor_info("output.weight").is_some() {
            Linear::from_gguf(gguf, &["output.weight".to_owned()])?
        } else {
            // Tied embeddings: the output projection is the embedding matrix.
            embed.share()
        };
        let freq_factors = if gguf.tensor_info("rope_freqs.weight").is_some() {
            Some(
                gguf.tensor("rope_freqs.weight")?
                    .dequantize(&Device::Cpu)?
                    .to_vec1::<f32>()?,
            )
        } else {
            None
        };
        let config = LlamaConfig { vocab, ..config };
        let rope = rope_tables(&config, freq_factors.as_deref(), RopeStyle::Interleaved)?;
        Ok(Self {
            embed,
            layers,
            norm,
            output,
            rope,
            pool: default_pool()?,
            config,
        })
    }

    /// Builds a model from dense weights in Hugging Face naming.
    pub(crate) fn from_dense(
        path: &Path,
        config: LlamaConfig,
        mut tensors: std::collections::HashMap<String, Tensor>,
        freq_factors: Option<Vec<f32>>,
    ) -> Result<Self> {
        config.validate(path)?;
        let mut take = |name: &str| -> Result<Tensor> {
            let t = tensors.remove(name).ok_or_else(|| InferenceError::Tensor {
                path: path.to_owned(),
                tensor: name.to_owned(),
                reason: "missing from the model files".into(),
            })?;
            Ok(t.to_dtype(DType::F32)?)
        };
        let dense = |parts: Vec<Tensor>| Linear::from_dense(parts);
        let embed = take("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let p = |s: &str| format!("model.layers.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: take(&p("input_layernorm"))?.to_vec1()?,
                qkv: dense(vec![
                    take(&p("self_attn.q_proj"))?,
                    take(&p("self_attn.k_proj"))?,
                    take(&p("self_attn.v_proj"))?,
                ])?,
                wo: dense(vec![take(&p("self_attn.o_proj"))?])?,
                ffn_norm: take(&p("post_attention_layernorm"))?.to_vec1()?,
                gate_up: dense(vec![take(&p("mlp.gate_proj"))?, take(&p("mlp.up_proj"))?])?,
                w_down: dense(vec![take(&p("mlp.down_proj"))?])?,
            });
        }
        let norm = take("model.norm.weight")?.to_vec1()?;
        let output = match take("lm_head.weight") {
            Ok(t) => dense(vec![t])?,
            Err(_) => dense(vec![embed.clone()])?,
        };
        let config = LlamaConfig {
            vocab: embed.dim(0)?,
            ..config
        };
        let rope = rope_tables(&config, freq_factors.as_deref(), RopeStyle::Halves)?;
        Ok(Self {
            embed: dense(vec![embed])?,
            layers,
            norm,
            output,
            rope,
            pool: default_pool()?,
            config,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// An empty cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.config.n_layers,
            self.config.n_kv_heads,
            self.config.head_dim(),
            self.config.context_len,
        )
    }

    /// Worker threads used by each pass.
    pub fn threads(&self) -> usize {
        self.lock_pool().0
    }

    /// Sets the worker threads for later passes (a pool shared with every
    /// model using the same count).
    pub fn set_threads(&self, threads: usize) -> Result<()> {
        let pool = threads::pool(threads)?;
        *self.pool.lock().unwrap_or_else(|e| e.into_inner()) = (threads.max(1), pool);
        Ok(())
    }

    fn lock_pool(&self) -> (usize, Arc<rayon::ThreadPool>) {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `tokens` through the model after the positions already in `cache`,
    /// appends their keys and values to it, and returns logits as
    /// `(positions, vocab)`: one row for [`Logits::Last`], one per token for
    /// [`Logits::All`].
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Tensor> {
        let mut items = [BatchItem {
            tokens,
            cache,
            logits,
        }];
        let mut out = self.forward_batch(&mut items)?;
        Ok(out.remove(0))
    }

    /// Runs several sequences through one pass: the linear layers see all
    /// their tokens at once (each weight is read once for the whole batch),
    /// attention stays per sequence. Returns each item's logits as
    /// [`Llama::forward`] would. Nothing is written to any cache unless
    /// every item is valid.
    pub fn forward_batch(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Tensor>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        for item in items.iter() {
            self.check(item.tokens, item.cache)?;
        }
        for item in items.iter_mut() {
            item.cache.reserve(item.tokens.len())?;
        }
        let (_, pool) = self.lock_pool();
        pool.install(|| self.forward_checked(items))
    }

    fn check(&self, tokens: &[u32], cache: &KvCache) -> Result<()> {
        let n = tokens.len();
        if n == 0 {
            return Err(InferenceError::InvalidRequest(
                "no tokens to process".into(),
            ));
        }
        if cache.len() + n > self.config.context_len {
            return Err(InferenceError::InvalidRequest(format!(
                "sequence of {} tokens exceeds the model's context of {}",
                cache.len() + n,
                self.config.context_len
            )));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab) {
            return Err(InferenceError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab
            )));
        }
        Ok(())
    }

    fn forward_checked(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Tensor>> {
        let c = &self.config;
        let all: Vec<u32> = items
            .iter()
            .flat_map(|i| i.tokens.iter().copied())
            .collect();
        let mut x = self
            .embed
            .embedding(&all)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut offsets = Vec::with_capacity(items.len());
        let mut offset = 0;
        for item in items.iter() {
            offsets.push(offset);
            offset += item.tokens.len();
        }
        let total_rows = offset;
        let heads = Heads {
            query: c.n_heads,
            kv: c.n_kv_heads,
            dim: c.head_dim(),
        };
        let (q_width, kv_width) = (c.n_heads * c.head_dim(), c.n_kv_heads * c.head_dim());
        let width = q_width + 2 * kv_width;
        let eps = c.rms_eps as f32;
        let isa = Isa::detect();
        for (index, layer) in self.layers.iter().enumerate() {
            let h = ops::rms_norm(&x, &layer.attn_norm, eps);
            let qkv = layer.qkv.forward(&h, total_rows)?;
            let mut attn = vec![0f32; total_rows * q_width];
            for (item, &offset) in items.iter_mut().zip(&offsets) {
                let (n, start) = (item.tokens.len(), item.cache.len());
                let rows = &qkv[offset * width..(offset + n) * width];
                let mut q = Vec::with_capacity(n * q_width);
                let mut k = Vec::with_capacity(n * kv_width);
                let mut v = Vec::with_capacity(n * kv_width);
                for row in rows.chunks_exact(width) {
                    q.extend_from_slice(&row[..q_width]);
                    k.extend_from_slice(&row[q_width..q_width + kv_width]);
                    v.extend_from_slice(&row[q_width + kv_width..]);
                }
                self.rope.apply(&mut q, c.n_heads, start);
                self.rope.apply(&mut k, c.n_kv_heads, start);
                item.cache.write(index, start, &k, &v);
                let (keys, values) = item.cache.layer(index, start + n);
                let out = &mut attn[offset * q_width..(offset + n) * q_width];
                attend(isa, &q, keys, values, start, heads, out);
            }
            ops::add_assign(&mut x, &layer.wo.forward(&attn, total_rows)?);
            let h = ops::rms_norm(&x, &layer.ffn_norm, eps);
            let gate_up = layer.gate_up.forward(&h, total_rows)?;
            let act = ops::silu_mul(&gate_up, c.ffn);
            ops::add_assign(&mut x, &layer.w_down.forward(&act, total_rows)?);
        }
        for item in items.iter_mut() {
            item.cache.advance(item.tokens.len());
        }
        // Only the rows that need logits go through the (large) output layer.
        let dim = c.hidden;
        let mut picked = Vec::new();
        let mut counts = Vec::with_capacity(items.len());
        for (item, &offset) in items.iter().zip(&offsets) {
            let n = item.tokens.len();
            let rows = match item.logits {
                Logits::Last => offset + n - 1..offset + n,
                Logits::All => offset..offset + n,
            };
            counts.push(rows.len());
            picked.extend_from_slice(&x[rows.start * dim..rows.end * dim]);
        }
        let rows: usize = counts.iter().sum();
        let x = ops::rms_norm(&picked, &self.norm, eps);
        let logits = self.output.forward(&x, rows)?;
        let logits = Tensor::from_vec(logits, (rows, c.vocab), &Device::Cpu)?;
        let mut out = Vec::with_capacity(counts.len());
        let mut at = 0;
        for n in counts {
            out.push(logits.narrow(0, at, n)?);
            at += n;
        }
        Ok(out)
    }
}

/// The shared pool with the default thread count.
fn default_pool() -> Result<Mutex<(usize, Arc<rayon::ThreadPool>)>> {
    let n = threads::default_threads();
    Ok(Mutex::new((n, threads::pool(n)?)))
}

/// Cosine and sine tables `(context_len, head_dim / 2)` for every position the
/// model can hold; `freq_factors` divides each frequency (Llama 3.1 scaling).
fn rope_tables(
    config: &LlamaConfig,
    freq_factors: Option<&[f32]>,
    style: RopeStyle,
) -> Result<Rope> {
    let half = config.head_dim() / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| {
            let f = 1.0
                / config
                    .rope_theta
                    .powf(2.0 * i as f64 / config.head_dim() as f64);
            let factor = freq_factors
                .and_then(|ff| ff.get(i))
                .copied()
                .unwrap_or(1.0);
            (f / f64::from(factor)) as f32
        })
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), &Device::Cpu)?;
    let positions = Tensor::arange(0u32, config.context_len as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((config.context_len, 1))?;
    let angles = positions.broadcast_mul(&freqs)?;
    let flat = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    Ok(Rope::new(
        flat(angles.cos()?)?,
        flat(angles.sin()?)?,
        half,
        style,
    ))
}

/// Names of every tensor a GGUF llama model with `n_layers` blocks uses.
fn gguf_tensor_names(n_layers: usize) -> Vec<String> {
    let mut names: Vec<String> = ["token_embd", "output_norm", "output"]
        .iter()
        .map(|s| format!("{s}.weight"))
        .collect();
    for i in 0..n_layers {
        for s in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            names.push(format!("blk.{i}.{s}.weight"));
        }
    }
    names
}

/// Storage types candle's CPU matmuls implement.
fn check_dtype(path: &Path, tensor: &str, dtype: GgmlDType) -> Result<()> {
    use GgmlDType::*;
    match dtype {
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K | Q8K => {
            Ok(())
        }
        other => Err(InferenceError::UnsupportedQuantization {
            path: path.to_owned(),
            tensor: tensor.to_owned(),
            dtype: format!("{other:?}"),
        }),
    }
}

/// The argmax of a logits row (ties go to the lowest id, as llama.cpp's fixtures do).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Logits as rows of f32, one per position.
pub fn logits_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}
