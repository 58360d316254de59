//! The llama forward pass over candle ops, with the cache outside the model.
//!
//! Written here instead of using `candle_transformers::models::quantized_llama`
//! because that model owns its cache (dropped whenever a pass starts at
//! position 0, never rolled back), returns only the last position's logits and
//! stops its RoPE tables at 4096 positions. The matmuls are still candle's
//! (`QMatMul`: quantised kernels for GGUF, dense for safetensors).

use std::path::Path;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::cache::KvCache;
use crate::error::{InferenceError, Result};
use crate::gguf::GgufFile;

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

/// How RoPE pairs dimensions: GGUF converters permute Q/K rows so that
/// adjacent dimensions pair up; Hugging Face weights pair dimension i with i + d/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RopeStyle {
    Interleaved,
    Halves,
}

struct Layer {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: Tensor,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
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
    embed: QMatMul,
    layers: Vec<Layer>,
    norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    rope: RopeStyle,
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
        let mut q = |name: &str| -> Result<QTensor> { gguf.tensor(name) };
        let embed_q = q("token_embd.weight")?;
        let vocab = embed_q.shape().dims2()?.0;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: q(&p("attn_norm"))?.dequantize(&Device::Cpu)?,
                wq: QMatMul::from_qtensor(q(&p("attn_q"))?)?,
                wk: QMatMul::from_qtensor(q(&p("attn_k"))?)?,
                wv: QMatMul::from_qtensor(q(&p("attn_v"))?)?,
                wo: QMatMul::from_qtensor(q(&p("attn_output"))?)?,
                ffn_norm: q(&p("ffn_norm"))?.dequantize(&Device::Cpu)?,
                w_gate: QMatMul::from_qtensor(q(&p("ffn_gate"))?)?,
                w_up: QMatMul::from_qtensor(q(&p("ffn_up"))?)?,
                w_down: QMatMul::from_qtensor(q(&p("ffn_down"))?)?,
            });
        }
        let norm = q("output_norm.weight")?.dequantize(&Device::Cpu)?;
        let embed_arc = std::sync::Arc::new(embed_q);
        let output = if gguf.tensor_info("output.weight").is_some() {
            QMatMul::from_qtensor(gguf.tensor("output.weight")?)?
        } else {
            // Tied embeddings: the output projection is the embedding matrix.
            QMatMul::from_arc(embed_arc.clone())?
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
        let (cos, sin) = rope_tables(&config, freq_factors.as_deref())?;
        Ok(Self {
            embed: QMatMul::from_arc(embed_arc)?,
            layers,
            norm,
            output,
            cos,
            sin,
            rope: RopeStyle::Interleaved,
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
        let dense = |t: Tensor| QMatMul::Tensor(t);
        let embed = take("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let p = |s: &str| format!("model.layers.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: take(&p("input_layernorm"))?,
                wq: dense(take(&p("self_attn.q_proj"))?),
                wk: dense(take(&p("self_attn.k_proj"))?),
                wv: dense(take(&p("self_attn.v_proj"))?),
                wo: dense(take(&p("self_attn.o_proj"))?),
                ffn_norm: take(&p("post_attention_layernorm"))?,
                w_gate: dense(take(&p("mlp.gate_proj"))?),
                w_up: dense(take(&p("mlp.up_proj"))?),
                w_down: dense(take(&p("mlp.down_proj"))?),
            });
        }
        let norm = take("model.norm.weight")?;
        let output = match take("lm_head.weight") {
            Ok(t) => dense(t),
            Err(_) => dense(embed.clone()),
        };
        let config = LlamaConfig {
            vocab: embed.dim(0)?,
            ..config
        };
        let (cos, sin) = rope_tables(&config, freq_factors.as_deref())?;
        Ok(Self {
            embed: dense(embed),
            layers,
            norm,
            output,
            cos,
            sin,
            rope: RopeStyle::Halves,
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

    /// Runs `tokens` through the model after the positions already in `cache`,
    /// appends their keys and values to it, and returns logits as
    /// `(positions, vocab)`: one row for [`Logits::Last`], one per token for
    /// [`Logits::All`].
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Tensor> {
        let n = tokens.len();
        if n == 0 {
            return Err(InferenceError::InvalidRequest(
                "no tokens to process".into(),
            ));
        }
        let start = cache.len();
        if start + n > self.config.context_len {
            return Err(InferenceError::InvalidRequest(format!(
                "sequence of {} tokens exceeds the model's context of {}",
                start + n,
                self.config.context_len
            )));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab) {
            return Err(InferenceError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab
            )));
        }
        cache.reserve(n)?;
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embed.embedding(&ids)?;
        let cos = self.cos.narrow(0, start, n)?;
        let sin = self.sin.narrow(0, start, n)?;
        let mask = causal_mask(n, start)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, self.config.rms_eps as f32)?;
            let attn = self.attention(i, layer, &h, &cos, &sin, mask.as_ref(), cache, start)?;
            x = (x + attn)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, self.config.rms_eps as f32)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
            let up = layer.w_up.forward(&h)?;
            x = (x + layer.w_down.forward(&(gate * up)?)?)?;
        }
        cache.advance(n);
        let x = match logits {
            Logits::Last => x.narrow(0, n - 1, 1)?,
            Logits::All => x,
        };
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.config.rms_eps as f32)?;
        Ok(self.output.forward(&x)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        index: usize,
        layer: &Layer,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        start: usize,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (n, hd) = (h.dim(0)?, c.head_dim());
        let heads = |t: Tensor, count: usize| -> Result<Tensor> {
            Ok(t.reshape((1, n, count, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = heads(layer.wq.forward(h)?, c.n_heads)?;
        let k = heads(layer.wk.forward(h)?, c.n_kv_heads)?;
        let v = heads(layer.wv.forward(h)?, c.n_kv_heads)?;
        let (q, k) = match self.rope {
            RopeStyle::Interleaved => (
                candle_nn::rotary_emb::rope_i(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_i(&k, cos, sin)?,
            ),
            RopeStyle::Halves => (
                candle_nn::rotary_emb::rope(&q, cos, sin)?,
                candle_nn::rotary_emb::rope(&k, cos, sin)?,
            ),
        };
        let (k_all, v_all) = cache.write(index, start, &k.squeeze(0)?, &v.squeeze(0)?)?;
        let total = start + n;
        // Grouped-query attention without copying keys: the query heads that
        // share a key/value head are stacked along the position axis.
        let group = c.n_heads / c.n_kv_heads;
        let q = q
            .squeeze(0)?
            .reshape((c.n_kv_heads, group * n, hd))?
            .affine(1.0 / (hd as f64).sqrt(), 0.0)?;
        let scores = q.matmul(&k_all.t()?)?;
        let scores = match mask {
            Some(m) => scores
                .reshape((c.n_kv_heads, group, n, total))?
                .broadcast_add(m)?
                .reshape((c.n_kv_heads, group * n, total))?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v_all.contiguous()?)?;
        let out = out
            .reshape((c.n_heads, n, hd))?
            .transpose(0, 1)?
            .reshape((n, c.n_heads * hd))?;
        Ok(layer.wo.forward(&out)?)
    }
}

/// `-inf` above the diagonal for `n` new positions after `start` cached ones;
/// `None` for a single new position, which may see everything.
fn causal_mask(n: usize, start: usize) -> Result<Option<Tensor>> {
    if n == 1 {
        return Ok(None);
    }
    let total = start + n;
    let mask: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > start + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(mask, (n, total), &Device::Cpu)?))
}

/// Cosine and sine tables `(context_len, head_dim / 2)` for every position the
/// model can hold; `freq_factors` divides each frequency (Llama 3.1 scaling).
fn rope_tables(config: &LlamaConfig, freq_factors: Option<&[f32]>) -> Result<(Tensor, Tensor)> {
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
    Ok((angles.cos()?, angles.sin()?))
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
