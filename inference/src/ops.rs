//! The forward pass's element-wise steps on plain row-major rows.
//!
//! Written by hand rather than with candle's tensor ops: those allocate a
//! tensor per step, walk the strided halves of the fused gate/up output
//! element by element, and run large element-wise ops on candle's own
//! spinning thread pool, which ignores the thread count the model is given
//! (a third busy thread on a two-core machine). The arithmetic is candle's,
//! operation for operation, so results are unchanged bit for bit.

use rayon::prelude::*;

/// Rows at and above which a step is split across the pool's workers.
const PARALLEL_ROWS: usize = 32;

/// RMS normalisation of each row of `x` (rows of `alpha.len()` values),
/// scaled by `alpha`, as `candle_nn::ops::rms_norm` computes it.
pub(crate) fn rms_norm(x: &[f32], alpha: &[f32], eps: f32) -> Vec<f32> {
    let dim = alpha.len();
    let mut out = vec![0f32; x.len()];
    let row = |(src, dst): (&[f32], &mut [f32])| {
        let sum2: f32 = src.iter().map(|&v| v * v).sum();
        let m = (sum2 / dim as f32 + eps).sqrt();
        for ((d, &s), &a) in dst.iter_mut().zip(src).zip(alpha) {
            *d = s / m * a;
        }
    };
    if x.len() / dim < PARALLEL_ROWS {
        x.chunks_exact(dim)
            .zip(out.chunks_exact_mut(dim))
            .for_each(row);
    } else {
        x.par_chunks_exact(dim)
            .zip(out.par_chunks_exact_mut(dim))
            .for_each(row);
    }
    out
}

/// The SwiGLU activation of fused rows `[gate | up]` (each half `ffn`
/// values): `silu(gate) * up`, with candle's `silu` (`v / (1 + e^-v)`).
pub(crate) fn silu_mul(gate_up: &[f32], ffn: usize) -> Vec<f32> {
    let mut out = vec![0f32; gate_up.len() / 2];
    let row = |(src, dst): (&[f32], &mut [f32])| {
        let (gate, up) = src.split_at(ffn);
        for ((d, &g), &u) in dst.iter_mut().zip(gate).zip(up) {
            *d = g / (1.0 + (-g).exp()) * u;
        }
    };
    if out.len() / ffn < PARALLEL_ROWS {
        gate_up
            .chunks_exact(2 * ffn)
            .zip(out.chunks_exact_mut(ffn))
            .for_each(row);
    } else {
        gate_up
            .par_chunks_exact(2 * ffn)
            .zip(out.par_chunks_exact_mut(ffn))
            .for_each(row);
    }
    out
}

/// `x += y`, element by element (the residual connections).
pub(crate) fn add_assign(x: &mut [f32], y: &[f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (x, &y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 250.0 - 4.0)
            .collect()
    }

    #[test]
    fn rms_norm_is_candles_bit_for_bit() {
        for rows in [1, 3, 40] {
            let (x, alpha) = (values(rows * 64, 1), values(64, 2));
            let want = candle_nn::ops::rms_norm(
                &Tensor::from_vec(x.clone(), (rows, 64), &Device::Cpu).unwrap(),
                &Tensor::from_vec(alpha.clone(), 64, &Device::Cpu).unwrap(),
                1e-5,
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
            assert_eq!(rms_norm(&x, &alpha, 1e-5), want);
        }
    }

    #[test]
    fn silu_mul_is_candles_bit_for_bit() {
        for rows in [1, 3, 40] {
            let ffn = 48;
            let gate_up = values(rows * 2 * ffn, 3);
            let t = Tensor::from_vec(gate_up.clone(), (rows, 2 * ffn), &Device::Cpu).unwrap();
            let gate = candle_nn::ops::silu(&t.narrow(1, 0, ffn).unwrap()).unwrap();
            let want = (gate * t.narrow(1, ffn, ffn).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(silu_mul(&gate_up, ffn), want);
        }
    }
}
