//! AVX2/FMA/F16C dot products of quantised weights with quantised activations.
//!
//! Hand-written because candle 0.11 has no SIMD kernel for Q4_1, Q5_0 or
//! Q5_1 on x86: its scalar path decoded the bundled Q4_1 model at about 13
//! tokens/s against llama.cpp's 70–78. The scheme is llama.cpp's: activations
//! are quantised once per row to 8 bits, each block's 32 products are summed
//! in integers (`maddubs`/`madd`) and scaled once per block in f32.
//!
//! Every function here requires AVX2, FMA and F16C; callers check with
//! [`super::Isa::detect`] first.

#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use super::blocks::{BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK};

/// An f16 (raw bits) to f32 with the F16C instruction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16(bits: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(bits as i16)))
}

/// The 32 nibbles of a 4-bit block as bytes `0..=15`, element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(qs: &[u8; QK / 2]) -> __m256i {
    let low = _mm_loadu_si128(qs.as_ptr().cast());
    let high = _mm_srli_epi16(low, 4);
    _mm256_and_si256(_mm256_set_m128i(high, low), _mm256_set1_epi8(0x0F))
}

/// Byte `j` is `0xFF` where bit `j` of `bits` is set, else `0`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits_to_bytes(bits: u32) -> __m256i {
    // Byte j takes byte j/8 of `bits`; ORing every bit but (j % 8) makes it
    // all ones exactly when that bit is set.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1))
}

/// Eight i32 sums of products of unsigned bytes `u` with signed bytes `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(u, s);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// Eight i32 sums of products of signed bytes, via `|x| * (y * sign(x))`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8_i8(x: __m256i, y: __m256i) -> __m256 {
    dot_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// The sum of the eight lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(qs: &[i8; QK]) -> __m256i {
    _mm256_loadu_si256(qs.as_ptr().cast())
}

/// Q4_1 weights against Q8_1 activations.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (w, a) in w.iter().zip(a) {
        let d = f16(w.d.to_bits()) * f16(a.d.to_bits());
        mins += f16(w.m.to_bits()) * f16(a.s.to_bits());
        let products = dot_u8_i8(nibbles(&w.qs), load(&a.qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), products, acc);
    }
    hsum(acc) + mins
}

/// Q5_0 weights against Q8_0 activations.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_0_q8_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (w, a) in w.iter().zip(a) {
        let d = f16(w.d.to_bits()) * f16(a.d.to_bits());
        // q - 16: where the fifth bit is clear, set the high nibble (-16 + q).
        let high = _mm256_andnot_si256(
            bits_to_bytes(u32::from_le_bytes(w.qh)),
            _mm256_set1_epi8(0xF0u8 as i8),
        );
        let q = _mm256_or_si256(nibbles(&w.qs), high);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), dot_i8_i8(q, load(&a.qs)), acc);
    }
    hsum(acc)
}

/// Q5_1 weights against Q8_1 activations.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_1_q8_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (w, a) in w.iter().zip(a) {
        let d = f16(w.d.to_bits()) * f16(a.d.to_bits());
        mins += f16(w.m.to_bits()) * f16(a.s.to_bits());
        let high = _mm256_and_si256(
            bits_to_bytes(u32::from_le_bytes(w.qh)),
            _mm256_set1_epi8(0x10),
        );
        let q = _mm256_or_si256(nibbles(&w.qs), high);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), dot_u8_i8(q, load(&a.qs)), acc);
    }
    hsum(acc) + mins
}

/// Q8_0 weights against Q8_0 activations.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (w, a) in w.iter().zip(a) {
        let d = f16(w.d.to_bits()) * f16(a.d.to_bits());
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), dot_i8_i8(load(&w.qs), load(&a.qs)), acc);
    }
    hsum(acc)
}

/// Dequantisation to f32 for the many-row (GEMM) path, which expands every
/// weight of a layer once per pass: the scalar loop with a software f16
/// conversion was a large share of a short (cached-prefix) prefill. Each
/// value is `q * d + m` with the multiply and add rounded separately, as the
/// scalar code computes it, so results are bit for bit the same.
pub mod dequant {
    use super::*;

    /// The 16 unsigned bytes of `half` as f32, eight per vector.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen_u8(half: __m128i) -> (__m256, __m256) {
        (
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(half)),
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(half, 8))),
        )
    }

    /// Expands Q4_1 blocks into `out` (32 values per block).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_1(w: &[BlockQ4_1], out: &mut [f32]) {
        for (b, dst) in w.iter().zip(out.chunks_exact_mut(QK)) {
            let d = _mm256_set1_ps(f16(b.d.to_bits()));
            let m = _mm256_set1_ps(f16(b.m.to_bits()));
            let q = nibbles(&b.qs);
            let (v0, v1) = widen_u8(_mm256_castsi256_si128(q));
            let (v2, v3) = widen_u8(_mm256_extracti128_si256(q, 1));
            for (i, v) in [v0, v1, v2, v3].into_iter().enumerate() {
                let x = _mm256_add_ps(_mm256_mul_ps(v, d), m);
                _mm256_storeu_ps(dst.as_mut_ptr().add(8 * i), x);
            }
        }
    }

    /// Expands Q8_0 blocks into `out` (32 values per block).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_0(w: &[BlockQ8_0], out: &mut [f32]) {
        for (b, dst) in w.iter().zip(out.chunks_exact_mut(QK)) {
            let d = _mm256_set1_ps(f16(b.d.to_bits()));
            for i in 0..4 {
                let q = _mm_loadl_epi64(b.qs.as_ptr().add(8 * i).cast());
                let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                _mm256_storeu_ps(dst.as_mut_ptr().add(8 * i), _mm256_mul_ps(v, d));
            }
        }
    }
}

/// The same dot products against several activation rows at once (batched
/// decode): each weight block is loaded, unpacked and its scales converted
/// once for up to four rows, each row keeping its own accumulators, so every
/// result is bit for bit the one-row kernel's.
pub mod many {
    use super::*;

    /// Runs `$rows::<R>` on groups of up to four rows of `$acts` into
    /// `$out`; a lone row takes the one-row kernel `$one`.
    macro_rules! in_fours {
        ($w:expr, $acts:expr, $out:expr, $rows:ident, $one:path) => {{
            let kb = $w.len();
            for (out, acts) in $out.chunks_mut(4).zip($acts.chunks(4 * kb)) {
                match out.len() {
                    4 => $rows::<4>($w, acts, out),
                    3 => $rows::<3>($w, acts, out),
                    2 => $rows::<2>($w, acts, out),
                    _ => out[0] = $one($w, acts),
                }
            }
        }};
    }

    /// [`super::dot_q4_1_q8_1`] of `w` against each row of `acts` (rows of
    /// `w.len()` blocks, end to end) into `out`.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_1_q8_1(w: &[BlockQ4_1], acts: &[BlockQ8_1], out: &mut [f32]) {
        in_fours!(w, acts, out, q4_1_rows, super::dot_q4_1_q8_1);
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1_rows<const R: usize>(w: &[BlockQ4_1], acts: &[BlockQ8_1], out: &mut [f32]) {
        let kb = w.len();
        let mut acc = [_mm256_setzero_ps(); R];
        let mut mins = [0f32; R];
        for (i, w) in w.iter().enumerate() {
            let (wd, wm) = (f16(w.d.to_bits()), f16(w.m.to_bits()));
            let q = nibbles(&w.qs);
            for r in 0..R {
                let a = &acts[r * kb + i];
                let d = wd * f16(a.d.to_bits());
                mins[r] += wm * f16(a.s.to_bits());
                let products = dot_u8_i8(q, load(&a.qs));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), products, acc[r]);
            }
        }
        for r in 0..R {
            out[r] = hsum(acc[r]) + mins[r];
        }
    }

    /// [`super::dot_q8_0_q8_0`] of `w` against each row of `acts` into `out`.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0_q8_0(w: &[BlockQ8_0], acts: &[BlockQ8_0], out: &mut [f32]) {
        in_fours!(w, acts, out, q8_0_rows, super::dot_q8_0_q8_0);
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0_rows<const R: usize>(w: &[BlockQ8_0], acts: &[BlockQ8_0], out: &mut [f32]) {
        let kb = w.len();
        let mut acc = [_mm256_setzero_ps(); R];
        for (i, w) in w.iter().enumerate() {
            let wd = f16(w.d.to_bits());
            let x = load(&w.qs);
            // dot_i8_i8's |x| and sign(x), taken once for all rows.
            let abs_x = _mm256_sign_epi8(x, x);
            for r in 0..R {
                let a = &acts[r * kb + i];
                let d = wd * f16(a.d.to_bits());
                let products = dot_u8_i8(abs_x, _mm256_sign_epi8(load(&a.qs), x));
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), products, acc[r]);
            }
        }
        for r in 0..R {
            out[r] = hsum(acc[r]);
        }
    }
}
