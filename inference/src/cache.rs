//! The key/value cache of one sequence, owned by the caller.
//!
//! candle's own quantized llama keeps its cache inside the model, drops it
//! when a pass starts at position 0 and can only grow it. Warden needs more:
//! prefill a fixed prefix once, start many continuations from it (cheap
//! clones), and roll a sequence back to any earlier position (the guard
//! removes its closing instructions between incremental checks).

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Positions added at a time when a cache outgrows its buffers.
const GROW_STEP: usize = 256;

/// Keys and values of every layer for positions `0..len`.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: keys and values, each `(kv_heads, capacity, head_dim)`.
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    capacity: usize,
    max_len: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl KvCache {
    /// An empty cache for a model of this shape; `max_len` is the model's context.
    pub fn new(n_layers: usize, kv_heads: usize, head_dim: usize, max_len: usize) -> Self {
        Self {
            layers: Vec::with_capacity(n_layers),
            len: 0,
            capacity: 0,
            max_len,
            kv_heads,
            head_dim,
        }
        .with_layers(n_layers)
    }

    fn with_layers(mut self, n: usize) -> Self {
        let empty = || Tensor::zeros((self.kv_heads, 0, self.head_dim), DType::F32, &Device::Cpu);
        for _ in 0..n {
            // Zero-sized tensors cannot fail to allocate.
            if let (Ok(k), Ok(v)) = (empty(), empty()) {
                self.layers.push((k, v));
            }
        }
        self
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

    /// Makes room for `extra` more positions, growing every layer's buffers.
    pub(crate) fn reserve(&mut self, extra: usize) -> Result<()> {
        let needed = self.len + extra;
        if needed <= self.capacity {
            return Ok(());
        }
        let capacity = needed.div_ceil(GROW_STEP) * GROW_STEP;
        for (k, v) in &mut self.layers {
            for t in [k, v] {
                let bigger = Tensor::zeros(
                    (self.kv_heads, capacity, self.head_dim),
                    DType::F32,
                    &Device::Cpu,
                )?;
                if self.len > 0 {
                    bigger.slice_set(&t.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
                *t = bigger;
            }
        }
        self.capacity = capacity;
        Ok(())
    }

    /// Writes `k`, `v` (`(kv_heads, n, head_dim)`) of `layer` at positions
    /// `start..start + n` and returns the layer's keys and values for
    /// `0..start + n`. Space must have been reserved.
    pub(crate) fn write(
        &mut self,
        layer: usize,
        start: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        let (kc, vc) = &self.layers[layer];
        kc.slice_set(k, 1, start)?;
        vc.slice_set(v, 1, start)?;
        Ok((kc.narrow(1, 0, start + n)?, vc.narrow(1, 0, start + n)?))
    }

    /// Records that `n` positions were appended by the last pass.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// A deep copy of the first `len` positions, with its own buffers, so the
    /// copy and the original can continue independently.
    pub fn fork(&self) -> Result<Self> {
        let mut copy = Self {
            layers: Vec::with_capacity(self.layers.len()),
            len: 0,
            capacity: 0,
            max_len: self.max_len,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        }
        .with_layers(self.layers.len());
        copy.reserve(self.len)?;
        for ((k, v), (ck, cv)) in self.layers.iter().zip(&copy.layers) {
            if self.len > 0 {
                ck.slice_set(&k.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                cv.slice_set(&v.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
            }
        }
        copy.len = self.len;
        Ok(copy)
    }
}
