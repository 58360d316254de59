//! Linear layers: our own quantised kernels for the block formats candle is
//! slow at on x86, candle's `QMatMul` for everything else.
//!
//! Two paths for our formats:
//! - few rows (decode, small batches): activations quantised once per row to
//!   8 bits and integer dot products against the packed weights, so each
//!   weight byte is read once per step (decode is memory-bound);
//! - many rows (prefill): tiles of weight rows dequantised to f32 in a
//!   cache-sized buffer and multiplied with a fast f32 GEMM, so prefill is
//!   compute-bound and the dequantisation is paid once per tile, not per token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::gguf::GgufFile;
use crate::kernels::blocks::parse_blocks;
use crate::kernels::{Block, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, Isa, WeightFormat, QK};

/// Default for [`gemm_min_rows`].
pub const GEMM_MIN_ROWS: usize = 8;

static GEMM_MIN: AtomicUsize = AtomicUsize::new(GEMM_MIN_ROWS);

/// Rows at and above which a product goes through dequantised tiles and GEMM.
pub fn gemm_min_rows() -> usize {
    GEMM_MIN.load(Ordering::Relaxed)
}

/// Changes [`gemm_min_rows`] process-wide (benchmarks, comparisons of the paths).
pub fn set_gemm_min_rows(rows: usize) {
    GEMM_MIN.store(rows, Ordering::Relaxed)
}

/// f32 values per dequantised tile (256 KiB: stays in L2 while it is used).
const TILE_VALUES: usize = 64 * 1024;

/// A row-major matrix of quantised blocks, `cols / 32` blocks per row.
pub struct QMatrix<B> {
    blocks: Vec<B>,
    rows: usize,
    cols: usize,
}

impl<B: WeightFormat> QMatrix<B> {
    fn from_bytes(bytes: &[u8], rows: usize, cols: usize) -> Self {
        Self {
            blocks: parse_blocks(bytes),
            rows,
            cols,
        }
    }

    /// Tensors `names` of the file, stacked by rows, read straight into the
    /// matrix's blocks (no whole-tensor copy in between).
    fn read(gguf: &mut GgufFile, names: &[String], rows: usize, cols: usize) -> Result<Self> {
        let mut blocks = Vec::with_capacity(rows * cols / QK);
        for name in names {
            gguf.read_tensor_chunks(name, B::BYTES * 16 * 1024, |bytes| {
                blocks.extend(bytes.chunks_exact(B::BYTES).map(B::parse));
            })?;
        }
        Ok(Self { blocks, rows, cols })
    }

    fn row(&self, r: usize) -> &[B] {
        let kb = self.cols / QK;
        &self.blocks[r * kb..(r + 1) * kb]
    }

    fn dequantize_rows(&self, isa: Isa, rows: std::ops::Range<usize>, out: &mut [f32]) {
        for (r, dst) in rows.zip(out.chunks_exact_mut(self.cols)) {
            B::dequantize_row(isa, self.row(r), dst);
        }
    }

    /// `x (n, cols)` times the transpose of this matrix into `out (n, rows)`.
    fn matmul(&self, isa: Isa, x: &[f32], n: usize, out: &mut [f32]) {
        if n >= gemm_min_rows() {
            self.matmul_gemm(isa, x, n, out)
        } else {
            self.matmul_quantized(isa, x, n, out)
        }
    }

    fn matmul_quantized(&self, isa: Isa, x: &[f32], n: usize, out: &mut [f32]) {
        let kb = self.cols / QK;
        let mut acts = vec![B::Act::default(); n * kb];
        for (row, a) in x.chunks_exact(self.cols).zip(acts.chunks_exact_mut(kb)) {
            B::quantize_act(isa, row, a);
        }
        // Results land weight-row major (each worker owns a contiguous range)
        // and are transposed afterwards when there is more than one row.
        let mut by_weight = vec![0f32; self.rows * n];
        let chunk = rows_per_job(self.rows);
        by_weight
            .par_chunks_mut(chunk * n)
            .enumerate()
            .for_each(|(job, dst)| {
                let first = job * chunk * kb;
                let w = &self.blocks[first..first + dst.len() / n * kb];
                B::dot_rows(isa, w, &acts, n, dst);
            });
        if n == 1 {
            out.copy_from_slice(&by_weight);
        } else {
            for (r, vals) in by_weight.chunks_exact(n).enumerate() {
                for (t, &v) in vals.iter().enumerate() {
                    out[t * self.rows + r] = v;
                }
            }
        }
    }

    fn matmul_gemm(&self, isa: Isa, x: &[f32], n: usize, out: &mut [f32]) {
        let k = self.cols;
        let mut rounded = x.to_vec();
        rounded
            .par_chunks_mut(k)
            .for_each(|row| B::round_trip_act(isa, row));
        let x = &rounded[..];
        let tile = (TILE_VALUES / k).clamp(16, 256) / 16 * 16;
        let tiles = self.rows.div_ceil(tile);
        let dst = SendPtr(out.as_mut_ptr());
        (0..tiles).into_par_iter().for_each_init(
            || vec![0f32; tile * k],
            |buf, t| {
                let first = t * tile;
                let count = tile.min(self.rows - first);
                self.dequantize_rows(isa, first..first + count, &mut buf[..count * k]);
                // SAFETY: `out` is `(n, rows)` row-major; this call writes only
                // columns `first..first + count`, which no other tile touches.
                // `x` is `(n, k)` row-major and `buf` holds `count` rows of
                // length `k`, read as the `(k, count)` transpose.
                unsafe {
                    gemm::gemm(
                        n,
                        count,
                        k,
                        dst.at(first),
                        1,
                        self.rows as isize,
                        false,
                        x.as_ptr(),
                        1,
                        k as isize,
                        buf.as_ptr(),
                        k as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            },
        );
    }
}

/// Weight rows per parallel job: a few jobs per worker so uneven progress
/// (a shared, loaded machine) balances out.
fn rows_per_job(rows: usize) -> usize {
    let jobs = rayon::current_num_threads() * 4;
    rows.div_ceil(jobs).max(16)
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint output regions to worker threads.
unsafe impl Send for SendPtr {}
// SAFETY: as above; workers never write the same element.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer `offset` elements in. A method rather than a field read so
    /// closures capture the whole `SendPtr` (which is `Sync`), not the raw
    /// pointer field.
    ///
    /// # Safety
    /// `offset` must stay inside the allocation.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` in bounds.
        unsafe { self.0.add(offset) }
    }
}

/// A quantised weight matrix in one of the formats with our own kernels.
pub enum QWeight {
    /// 4-bit with minimum.
    Q4_1(QMatrix<BlockQ4_1>),
    /// 5-bit symmetric.
    Q5_0(QMatrix<BlockQ5_0>),
    /// 5-bit with minimum.
    Q5_1(QMatrix<BlockQ5_1>),
    /// 8-bit symmetric.
    Q8_0(QMatrix<BlockQ8_0>),
}

macro_rules! each {
    ($w:expr, $m:ident => $body:expr) => {
        match $w {
            QWeight::Q4_1($m) => $body,
            QWeight::Q5_0($m) => $body,
            QWeight::Q5_1($m) => $body,
            QWeight::Q8_0($m) => $body,
        }
    };
}

impl QWeight {
    /// Builds from GGUF block bytes; `None` for formats without our kernels.
    pub fn from_bytes(dtype: GgmlDType, bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if !cols.is_multiple_of(QK) {
            return None;
        }
        let expect = |b: usize| bytes.len() == rows * cols / QK * b;
        Some(match dtype {
            GgmlDType::Q4_1 if expect(BlockQ4_1::BYTES) => {
                Self::Q4_1(QMatrix::from_bytes(bytes, rows, cols))
            }
            GgmlDType::Q5_0 if expect(BlockQ5_0::BYTES) => {
                Self::Q5_0(QMatrix::from_bytes(bytes, rows, cols))
            }
            GgmlDType::Q5_1 if expect(BlockQ5_1::BYTES) => {
                Self::Q5_1(QMatrix::from_bytes(bytes, rows, cols))
            }
            GgmlDType::Q8_0 if expect(BlockQ8_0::BYTES) => {
                Self::Q8_0(QMatrix::from_bytes(bytes, rows, cols))
            }
            _ => return None,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        each!(self, m => m.rows)
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        each!(self, m => m.cols)
    }

    /// `x (n, cols)` times the transpose into `out (n, rows)`.
    pub fn matmul(&self, isa: Isa, x: &[f32], n: usize, out: &mut [f32]) {
        each!(self, m => m.matmul(isa, x, n, out))
    }

    /// The same product forced through the quantised-activation path.
    pub fn matmul_quantized(&self, isa: Isa, x: &[f32], n: usize, out: &mut [f32]) {
        each!(self, m => m.matmul_quantized(isa, x, n, out))
    }

    /// The same product forced through dequantised tiles and GEMM.
    pub fn matmul_gemm(&self, isa: Isa, x: &[f32], n: usize, out: &mut [f32]) {
        each!(self, m => m.matmul_gemm(isa, x, n, out))
    }

    /// Rows `ids` dequantised, `(ids.len(), cols)` row-major.
    pub fn rows_f32(&self, ids: &[u32]) -> Vec<f32> {
        let (cols, isa) = (self.cols(), Isa::detect());
        let mut out = vec![0f32; ids.len() * cols];
        for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(cols)) {
            let id = id as usize;
            each!(self, m => m.dequantize_rows(isa, id..id + 1, dst));
        }
        out
    }
}

/// A linear layer (`y = x W^T`), possibly several weights fused along the
/// output dimension (Q, K and V; gate and up) so one pass reads the input once.
pub(crate) enum Linear {
    /// Our kernels.
    Quant(Arc<QWeight>),
    /// candle's matmuls, one per part; outputs concatenated.
    Candle(Vec<QMatMul>),
}

impl Linear {
    /// One layer from the file's tensors `names`, sharing their input width:
    /// fused into one matrix for our kernels when they all have one of our
    /// formats, else candle's matmuls.
    pub(crate) fn from_gguf(gguf: &mut GgufFile, names: &[String]) -> Result<Self> {
        if let Some(fused) = fuse(gguf, names)? {
            return Ok(Self::Quant(Arc::new(fused)));
        }
        Ok(Self::Candle(
            names
                .iter()
                .map(|n| Ok(QMatMul::from_qtensor(gguf.tensor(n)?)?))
                .collect::<Result<_>>()?,
        ))
    }

    /// One layer from dense tensors `(out, in)`, concatenated along `out`.
    pub(crate) fn from_dense(parts: Vec<Tensor>) -> Result<Self> {
        let t = if parts.len() == 1 {
            parts.into_iter().next().unwrap_or_else(|| unreachable!())
        } else {
            Tensor::cat(&parts, 0)?
        };
        Ok(Self::Candle(vec![QMatMul::Tensor(t)]))
    }

    /// `x`, `n` rows of the input width, to `n` rows of the output width
    /// (row-major).
    pub(crate) fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        match self {
            Self::Quant(w) => {
                debug_assert_eq!(x.len(), n * w.cols());
                let mut out = vec![0f32; n * w.rows()];
                w.matmul(Isa::detect(), x, n, &mut out);
                Ok(out)
            }
            Self::Candle(parts) => {
                let x = Tensor::from_slice(x, (n, x.len() / n), &Device::Cpu)?;
                let out = if let [part] = &parts[..] {
                    part.forward(&x)?
                } else {
                    let outs = parts
                        .iter()
                        .map(|p| p.forward(&x))
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    Tensor::cat(&outs, 1)?
                };
                Ok(out.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }

    /// Rows of the weight selected by token id (embedding lookup).
    pub(crate) fn embedding(&self, ids: &[u32]) -> Result<Tensor> {
        match self {
            Self::Quant(w) => Ok(Tensor::from_vec(
                w.rows_f32(ids),
                (ids.len(), w.cols()),
                &Device::Cpu,
            )?),
            Self::Candle(parts) => {
                let ids = Tensor::new(ids, &Device::Cpu)?;
                Ok(parts[0].embedding(&ids)?)
            }
        }
    }

    /// The same weights behind another handle (tied embeddings).
    pub(crate) fn share(&self) -> Self {
        match self {
            Self::Quant(w) => Self::Quant(w.clone()),
            Self::Candle(parts) => Self::Candle(parts.clone()),
        }
    }
}

/// Reads tensors in one of our formats with equal widths as one matrix,
/// stacked by rows; `None` when they are not all such tensors.
fn fuse(gguf: &mut GgufFile, names: &[String]) -> Result<Option<QWeight>> {
    let mut shapes = Vec::with_capacity(names.len());
    for name in names {
        let Some((dtype, dims)) = gguf.tensor_info(name) else {
            // Missing: let the tensor read report it with the file's name.
            return Ok(None);
        };
        let &[rows, cols] = dims else {
            return Ok(None);
        };
        shapes.push((dtype, rows, cols));
    }
    let Some(&(dtype, _, cols)) = shapes.first() else {
        return Ok(None);
    };
    if shapes
        .iter()
        .any(|&(d, _, c)| d != dtype || c != cols || !c.is_multiple_of(QK))
    {
        return Ok(None);
    }
    let rows = shapes.iter().map(|&(_, r, _)| r).sum();
    Ok(Some(match dtype {
        GgmlDType::Q4_1 => QWeight::Q4_1(QMatrix::read(gguf, names, rows, cols)?),
        GgmlDType::Q5_0 => QWeight::Q5_0(QMatrix::read(gguf, names, rows, cols)?),
        GgmlDType::Q5_1 => QWeight::Q5_1(QMatrix::read(gguf, names, rows, cols)?),
        GgmlDType::Q8_0 => QWeight::Q8_0(QMatrix::read(gguf, names, rows, cols)?),
        _ => return Ok(None),
    }))
}
