//! RoPE and causal attention over the cache, in plain Rust.
//!
//! Each query position is computed by the same code in the same summation
//! order whether it arrives alone (decode) or within a batch (prefill), so
//! the two paths give bit-identical results. With candle's batched matmuls
//! and masked softmax they differed by rounding, which this model's 8-bit
//! activation quantisation amplified into logit differences of up to 0.8.

use rayon::prelude::*;

/// How RoPE pairs dimensions: GGUF converters permute Q/K rows so that
/// adjacent dimensions pair up; Hugging Face weights pair dimension i with i + d/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RopeStyle {
    Interleaved,
    Halves,
}

/// Rotation tables for every position the model can hold.
pub(crate) struct Rope {
    /// `(positions, head_dim / 2)` row-major.
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    style: RopeStyle,
}

impl Rope {
    pub(crate) fn new(cos: Vec<f32>, sin: Vec<f32>, half: usize, style: RopeStyle) -> Self {
        Self {
            cos,
            sin,
            half,
            style,
        }
    }

    /// Rotates `x`: `n` rows of `heads` heads each, row `t` at position `start + t`.
    pub(crate) fn apply(&self, x: &mut [f32], heads: usize, start: usize) {
        let hd = self.half * 2;
        for (t, row) in x.chunks_exact_mut(heads * hd).enumerate() {
            let at = (start + t) * self.half;
            let (cos, sin) = (&self.cos[at..at + self.half], &self.sin[at..at + self.half]);
            for head in row.chunks_exact_mut(hd) {
                for i in 0..self.half {
                    let (a, b) = match self.style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::Halves => (i, i + self.half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * cos[i] - x1 * sin[i];
                    head[b] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
    }
}

/// Shape of the attention heads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub(crate) query: usize,
    pub(crate) kv: usize,
    pub(crate) dim: usize,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent partial sums: vectorises, and the order is fixed.
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Causal attention of `n` queries at positions `start..start + n` over
/// cached keys/values `(position, kv_head, dim)` for `0..start + n`; writes
/// `(n, query_heads * dim)` to `out`. Query heads share key/value heads in
/// consecutive groups.
pub(crate) fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    start: usize,
    heads: Heads,
    out: &mut [f32],
) {
    let Heads { query, kv, dim } = heads;
    let group = query / kv;
    let scale = 1.0 / (dim as f32).sqrt();
    out.par_chunks_mut(dim).enumerate().for_each_init(
        Vec::new,
        |scores: &mut Vec<f32>, (item, o)| {
            let (t, h) = (item / query, item % query);
            let kvh = h / group;
            let visible = start + t + 1;
            let qv = &q[(t * query + h) * dim..][..dim];
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for j in 0..visible {
                let s = dot(qv, &keys[(j * kv + kvh) * dim..][..dim]) * scale;
                max = max.max(s);
                scores.push(s);
            }
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            o.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let vj = &values[(j * kv + kvh) * dim..][..dim];
                for (o, &v) in o.iter_mut().zip(vj) {
                    *o += p * v;
                }
            }
            let inv = 1.0 / sum;
            for o in o.iter_mut() {
                *o *= inv;
            }
        },
    );
}
