//! One query head's attention in AVX2/FMA.
//!
//! Hand-written because attention over a cached prefix dominated a guard
//! pass with 500 cached tokens: the portable loop (compiled for baseline
//! x86-64, with a libm `exp` per score) cost about 17 ns per key and head,
//! half of such a pass. Here scores come eight keys at a time (one reduction
//! for eight dot products), `exp` is a vectorised polynomial and the value
//! sum runs on fused multiply-adds. The code for a query depends only on its
//! own inputs, so decode and prefill still agree bit for bit.
//!
//! Every function here requires AVX2, FMA and F16C (as the kernels do, whose
//! horizontal sum and maximum it shares); callers check with
//! [`crate::kernels::Isa::detect`] first.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use crate::kernels::avx2::{hmax, hsum};

/// Floats per vector.
const LANES: usize = 8;
/// Vectors of the output accumulated at once (64 dimensions).
const OUT_VECTORS: usize = 8;
/// Most query heads per KV head this code takes (Llama models use up to 8).
pub(super) const MAX_GROUP: usize = 16;

/// Lane `k` is the horizontal sum of `a[k]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sums_of_eight(a: &[__m256; LANES]) -> __m256 {
    let t0 = _mm256_hadd_ps(a[0], a[1]);
    let t1 = _mm256_hadd_ps(a[2], a[3]);
    let t2 = _mm256_hadd_ps(a[4], a[5]);
    let t3 = _mm256_hadd_ps(a[6], a[7]);
    let u0 = _mm256_hadd_ps(t0, t1);
    let u1 = _mm256_hadd_ps(t2, t3);
    let low = _mm256_permute2f128_ps(u0, u1, 0x20);
    let high = _mm256_permute2f128_ps(u0, u1, 0x31);
    _mm256_add_ps(low, high)
}

/// `e^x` for `x <= 0` (softmax arguments), within a few ulp; below about
/// -87 the result is the smallest normal float instead of underflowing,
/// negligible beside the maximum's 1. Range reduction to `x = n ln 2 + r`
/// and Cephes' degree-6 polynomial for `e^r`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let p = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    );
    _mm256_mul_ps(p, _mm256_castsi256_ps(bits))
}

/// Attention of the `out.len() / dim` query heads `q` that share KV head
/// `kvh` (a GQA group, `dim` values each, a multiple of 8) over keys and
/// values `0..visible` (rows of `kv * dim`), into `out`. The heads run side
/// by side over blocks of eight keys, so each key and value row comes from
/// memory once per group and from L1 for the other heads; every head's
/// arithmetic is the same as alone. `scores` is scratch space.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `keys` and `values` must hold
/// `visible * kv * dim` values and `out` as many as `q`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attend_group(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    dim: usize,
    kv: usize,
    kvh: usize,
    visible: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let heads = q.len() / dim;
    assert!(heads <= MAX_GROUP && dim.is_multiple_of(LANES) && out.len() == q.len());
    debug_assert!(keys.len() >= visible * kv * dim && values.len() >= visible * kv * dim);
    let row = kv * dim;
    let (keys, values) = (keys.as_ptr().add(kvh * dim), values.as_ptr().add(kvh * dim));
    let padded = visible.next_multiple_of(LANES);
    scores.clear();
    scores.resize(heads * padded, f32::NEG_INFINITY);
    let s = scores.as_mut_ptr();
    let scale_v = _mm256_set1_ps(scale);
    let mut max = [_mm256_set1_ps(f32::NEG_INFINITY); MAX_GROUP];
    // Scores, eight keys per step: each key its own accumulator, one
    // reduction for all eight. The last step may have fewer keys; it repeats
    // its last key in the missing lanes (then masked to -inf) so every step
    // runs the same fixed-size loops: with a variable key count the compiler
    // branched before every multiply-add.
    for first in (0..visible).step_by(LANES) {
        let count = LANES.min(visible - first);
        let key_rows: [*const f32; LANES] =
            std::array::from_fn(|k| keys.add((first + k.min(count - 1)) * row));
        for (h, max) in max.iter_mut().take(heads).enumerate() {
            let qh = q.as_ptr().add(h * dim);
            let mut acc = [_mm256_setzero_ps(); LANES];
            for c in (0..dim).step_by(LANES) {
                let qc = _mm256_loadu_ps(qh.add(c));
                for (a, key) in acc.iter_mut().zip(key_rows) {
                    *a = _mm256_fmadd_ps(qc, _mm256_loadu_ps(key.add(c)), *a);
                }
            }
            let block = _mm256_mul_ps(sums_of_eight(&acc), scale_v);
            let block = if count == LANES {
                block
            } else {
                // Lanes past the last key are -inf: they add nothing below.
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), lane);
                _mm256_blendv_ps(
                    _mm256_set1_ps(f32::NEG_INFINITY),
                    block,
                    _mm256_castsi256_ps(keep),
                )
            };
            _mm256_storeu_ps(s.add(h * padded + first), block);
            *max = _mm256_max_ps(*max, block);
        }
    }
    let mut inv = [0f32; MAX_GROUP];
    for (h, (inv, max)) in inv.iter_mut().zip(&max).take(heads).enumerate() {
        let sh = s.add(h * padded);
        let max = _mm256_set1_ps(hmax(*max));
        let mut sum = _mm256_setzero_ps();
        for first in (0..visible).step_by(LANES) {
            let score = _mm256_loadu_ps(sh.add(first));
            // Padding lanes (-inf) would give exp's floor, not 0: mask them out.
            let real = _mm256_cmp_ps(score, _mm256_set1_ps(f32::NEG_INFINITY), _CMP_NEQ_OQ);
            let e = _mm256_and_ps(exp(_mm256_sub_ps(score, max)), real);
            _mm256_storeu_ps(sh.add(first), e);
            sum = _mm256_add_ps(sum, e);
        }
        *inv = 1.0 / hsum(sum);
    }
    // Weighted values, accumulated in `out`, a block of keys at a time so
    // the block's value rows stay in L1 while every head uses them.
    out.fill(0.0);
    for first in (0..visible).step_by(LANES) {
        let count = LANES.min(visible - first);
        let v = values.add(first * row);
        for h in 0..heads {
            let (sh, o) = (s.add(h * padded + first), out.as_mut_ptr().add(h * dim));
            let mut c = 0;
            while c + LANES * OUT_VECTORS <= dim {
                weigh::<OUT_VECTORS>(sh, count, v.add(c), row, o.add(c));
                c += LANES * OUT_VECTORS;
            }
            while c < dim {
                weigh::<1>(sh, count, v.add(c), row, o.add(c));
                c += LANES;
            }
        }
    }
    for (h, inv) in inv.iter().take(heads).enumerate() {
        scale_out(out.as_mut_ptr().add(h * dim), dim, *inv);
    }
}

/// Adds `p[k] * v[k * row ..][.. W * 8]` for `k < count` to the `W * 8`
/// values at `o`. `W` is a constant so the accumulators stay in registers
/// (with a variable width the compiler copied them through memory).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weigh<const W: usize>(
    p: *const f32,
    count: usize,
    v: *const f32,
    row: usize,
    o: *mut f32,
) {
    let mut acc = [_mm256_setzero_ps(); W];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_loadu_ps(o.add(i * LANES));
    }
    for k in 0..count {
        let pk = _mm256_set1_ps(*p.add(k));
        let vk = v.add(k * row);
        for (i, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(pk, _mm256_loadu_ps(vk.add(i * LANES)), *a);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(o.add(i * LANES), *a);
    }
}

/// Multiplies `n` values at `p` by `by`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_out(p: *mut f32, n: usize, by: f32) {
    let by = _mm256_set1_ps(by);
    for i in (0..n).step_by(LANES) {
        _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), by));
    }
}
