//! The key/value cache of one sequence, owned by the caller.
//!
//! candle's own quantized llama keeps its cache inside the model, drops it
//! when a pass starts at position 0 and can only grow it. Warden needs more:
//! prefill a fixed prefix once, start many continuations from it (cheap
//! clones), and roll a sequence back to any earlier position (the guard
//! removes its closing instructions between incremental checks).

use crate::error::Result;

/// Positions added at a time when a cache outgrows its buffers.
const GROW_STEP: usize = 256;

/// Keys and values of every layer for positions `0..len`.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: keys and values, position-major `(position, kv_head, head_dim)`,
    /// so appending positions never moves what is cached.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    len: usize,
    max_len: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl KvCache {
    /// An empty cache for a model of this shape; `max_len` is the model's context.
    pub fn new(n_layers: usize, kv_heads: usize, head_dim: usize, max_len: usize) -> Self {
        Self {
            layers: (0..n_layers).map(|_| (Vec::new(), Vec::new())).collect(),
            len: 0,
            max_len,
            kv_heads,
            head_dim,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The longest sequence the model can hold.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Forgets every position from `len` on, so the next pass continues there.
    /// Cheap: the buffers stay allocated.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Makes room for `extra` more positions in every layer.
    pub(crate) fn reserve(&mut self, extra: usize) -> Result<()> {
        let needed = (self.len + extra) * self.width();
        for (k, v) in &mut self.layers {
            for t in [k, v] {
                if t.len() < needed {
                    // Grow in steps, not by doubling: caches are many and long.
                    let step = GROW_STEP * self.kv_heads * self.head_dim;
                    let target = needed.div_ceil(step) * step;
                    t.reserve_exact(target - t.len());
                    t.resize(needed, 0.0);
                }
            }
        }
        Ok(())
    }

    /// Writes keys and values `(n, kv_head, head_dim)` of `layer` at
    /// positions `start..start + n`. Space must have been reserved.
    pub(crate) fn write(&mut self, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        let w = self.width();
        let (kc, vc) = &mut self.layers[layer];
        kc[start * w..start * w + k.len()].copy_from_slice(k);
        vc[start * w..start * w + v.len()].copy_from_slice(v);
    }

    /// Keys and values of `layer` for positions `0..upto`.
    pub(crate) fn layer(&self, layer: usize, upto: usize) -> (&[f32], &[f32]) {
        let w = self.width();
        let (k, v) = &self.layers[layer];
        (&k[..upto * w], &v[..upto * w])
    }

    /// Records that `n` positions were appended by the last pass.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// A deep copy of the first `len` positions, with its own buffers, so the
    /// copy and the original can continue independently.
    pub fn fork(&self) -> Result<Self> {
        let w = self.width();
        Ok(Self {
            layers: self
                .layers
                .iter()
                .map(|(k, v)| (k[..self.len * w].to_vec(), v[..self.len * w].to_vec()))
                .collect(),
            len: self.len,
            max_len: self.max_len,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        })
    }
}
