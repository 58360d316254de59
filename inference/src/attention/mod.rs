//! RoPE and causal attention over the cache, in plain Rust.
//!
//! Each query position is computed by the same code in the same summation
//! order whether it arrives alone (decode) or within a batch (prefill), so
//! the two paths give bit-identical results. With candle's batched matmuls
//! and masked softmax they differed by rounding, which this model's 8-bit
//! activation quantisation amplified into logit differences of up to 0.8.

use rayon::prelude::*;

use crate::kernels::Isa;

#[cfg(target_arch = "x86_64")]
mod avx2;

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
/// cached keys/values `(position, kv_head, dim)` for `0..start + n`, on the
/// instruction set `isa`; writes `(n, query_heads * dim)` to `out`. Query
/// heads share key/value heads in consecutive groups.
pub(crate) fn attend(
    isa: Isa,
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
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() && dim.is_multiple_of(8) && group <= avx2::MAX_GROUP {
        let seen = start + q.len() / (query * dim);
        assert!(keys.len() >= seen * kv * dim && values.len() >= seen * kv * dim);
        // One item per position and KV head: its query heads are adjacent.
        out.par_chunks_mut(group * dim).enumerate().for_each_init(
            Vec::new,
            |scores: &mut Vec<f32>, (item, o)| {
                let (t, kvh) = (item / kv, item % kv);
                let qs = &q[(t * query + kvh * group) * dim..][..group * dim];
                // SAFETY: AVX2, FMA and F16C were detected (`Isa::has_avx2`); keys and
                // values of the `start + t + 1 <= seen` visible positions are
                // there (asserted above); `qs` and `o` are `group * dim` long.
                unsafe {
                    avx2::attend_group(
                        qs,
                        keys,
                        values,
                        dim,
                        kv,
                        kvh,
                        start + t + 1,
                        scale,
                        scores,
                        o,
                    );
                }
            },
        );
        return;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in `-amp..amp`.
    fn values(n: usize, seed: u64, amp: f32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
            })
            .collect()
    }

    const HEADS: Heads = Heads {
        query: 6,
        kv: 2,
        dim: 64,
    };

    /// `n` queries at `start..start + n` over random keys and values.
    fn run(isa: Isa, heads: Heads, start: usize, n: usize, amp: f32, q: &[f32]) -> Vec<f32> {
        let kv_len = (start + n) * heads.kv * heads.dim;
        let (keys, vals) = (values(kv_len, 2, amp), values(kv_len, 3, 1.0));
        let mut out = vec![0f32; n * heads.query * heads.dim];
        attend(isa, q, &keys, &vals, start, heads, &mut out);
        out
    }

    #[test]
    fn simd_attention_matches_the_portable_loop() {
        // Odd lengths (keys not a multiple of 8) and large scores (exp's
        // range); head sizes of 64 (the bundled model's), below 64 and
        // between multiples of 64 (value columns in blocks of 64 and of 8).
        let shapes = [
            HEADS,
            Heads {
                query: 4,
                kv: 2,
                dim: 40,
            },
            Heads {
                query: 3,
                kv: 1,
                dim: 136,
            },
        ];
        for heads in shapes {
            for (start, n, amp) in [(0, 1, 1.0), (5, 13, 1.0), (37, 3, 4.0), (100, 9, 8.0)] {
                let q = values(n * heads.query * heads.dim, 1, amp);
                let portable = run(Isa::Scalar, heads, start, n, amp, &q);
                for isa in Isa::supported() {
                    let fast = run(isa, heads, start, n, amp, &q);
                    for (a, b) in fast.iter().zip(&portable) {
                        assert!(
                            (a - b).abs() <= 2e-5,
                            "{a} vs {b} ({isa:?}, {heads:?}, start {start}, n {n})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_query_gets_the_same_bits_alone_or_in_a_batch() {
        let (start, n) = (11, 10);
        let width = HEADS.query * HEADS.dim;
        let q = values(n * width, 5, 2.0);
        let kv_len = (start + n) * HEADS.kv * HEADS.dim;
        let (keys, vals) = (values(kv_len, 6, 2.0), values(kv_len, 7, 1.0));
        for isa in Isa::supported() {
            let mut batch = vec![0f32; n * width];
            attend(isa, &q, &keys, &vals, start, HEADS, &mut batch);
            for t in 0..n {
                let mut one = vec![0f32; width];
                let qt = &q[t * width..(t + 1) * width];
                attend(isa, qt, &keys, &vals, start + t, HEADS, &mut one);
                assert_eq!(one, batch[t * width..(t + 1) * width], "{isa:?} row {t}");
            }
        }
    }
}
