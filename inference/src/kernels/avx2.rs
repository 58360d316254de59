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

/// The largest of the eight lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
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

/// Activation quantisation (8 bits per value, one scale per block of 32):
/// the scalar code's libm `roundf` per value was 6-7% of a prefill. Each
/// step is the scalar one's (`amax / 127`, its reciprocal, the product,
/// rounding half away from zero, done exactly as truncation plus a step
/// where the remainder is at least one half), so the blocks are bit for bit
/// [`super::super::blocks::quantize_q8_1`]'s.
pub mod quant {
    use super::*;

    /// One block's quantised values as four vectors of i32, and its scale.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(x: &[f32]) -> ([__m256i; 4], f32) {
        let sign = _mm256_set1_ps(-0.0);
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let abs = v.map(|v| _mm256_andnot_ps(sign, v));
        let amax = hmax(_mm256_max_ps(
            _mm256_max_ps(abs[0], abs[1]),
            _mm256_max_ps(abs[2], abs[3]),
        ));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let q = v.map(|v| {
            let p = _mm256_mul_ps(v, id);
            let t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            let half = _mm256_cmp_ps(
                _mm256_andnot_ps(sign, _mm256_sub_ps(p, t)),
                _mm256_set1_ps(0.5),
                _CMP_GE_OQ,
            );
            // ±1 with p's sign where the remainder is at least one half.
            let step = _mm256_and_ps(
                half,
                _mm256_or_ps(_mm256_and_ps(p, sign), _mm256_set1_ps(1.0)),
            );
            _mm256_cvttps_epi32(_mm256_add_ps(t, step))
        });
        (q, d)
    }

    /// The 32 values of `q` as bytes, in order.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bytes(q: &[__m256i; 4]) -> [i8; QK] {
        // packs work within 128-bit lanes; the permute restores the order.
        let w = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let w = _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let mut out = [0i8; QK];
        _mm256_storeu_si256(out.as_mut_ptr().cast(), w);
        out
    }

    /// The sum of the 32 values of `q`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sum(q: &[__m256i; 4]) -> i32 {
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
    }

    /// Quantises a row (length a multiple of 32) to Q8_1 blocks.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
        for (o, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
            let (q, d) = block(x);
            *o = BlockQ8_1 {
                d: half::f16::from_f32(d),
                s: half::f16::from_f32(sum(&q) as f32 * d),
                qs: bytes(&q),
            };
        }
    }

    /// Quantises a row (length a multiple of 32) to Q8_0 blocks.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
        for (o, x) in out.iter_mut().zip(x.chunks_exact(QK)) {
            let (q, d) = block(x);
            *o = BlockQ8_0 {
                d: half::f16::from_f32(d),
                qs: bytes(&q),
            };
        }
    }

    /// Replaces a row (length a multiple of 32) by its 8-bit quantisation
    /// dequantised again (`q * d`, `d` rounded to f16), as quantising to
    /// Q8_0 or Q8_1 blocks and expanding them does.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn round_trip(x: &mut [f32]) {
        for x in x.chunks_exact_mut(QK) {
            let (q, d) = block(x);
            let d = _mm256_set1_ps(half::f16::from_f32(d).to_f32());
            for (i, q) in q.iter().enumerate() {
                let v = _mm256_mul_ps(_mm256_cvtepi32_ps(*q), d);
                _mm256_storeu_ps(x.as_mut_ptr().add(8 * i), v);
            }
        }
    }
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

/// Dot products of weight rows with up to four activation rows at once
/// (decode and batched decode). Rows of the bundled model are only 18 blocks
/// long, so per-row costs weighed as much as the blocks: here activation
/// scales are converted once per call rather than once per weight row, a
/// weight block's two f16 scales convert in one instruction, and each weight
/// block is unpacked once for all the activation rows. Weight rows are
/// walked one at a time: interleaving four of them (sharing each activation
/// block) halved decode speed, the reads no longer one sequential stream.
/// Every result is computed exactly as the one-row kernel computes it (same
/// products, same accumulation order), so it equals that kernel's bit for bit.
pub mod rows {
    use super::*;

    /// How a block's bytes are multiplied and summed in groups of four.
    pub trait IntDot {
        /// Eight i32 sums (as f32) of products of unsigned bytes `u` with
        /// signed bytes `s`, four adjacent products per sum.
        ///
        /// # Safety
        /// The CPU must support the implementation's instructions.
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256;
    }

    /// AVX2's `maddubs` then `madd` (products of at most 15 × 127 or
    /// 128 × 127 never saturate the 16-bit pair sums).
    pub struct Madd;

    /// AVX-VNNI's `vpdpbusd`: the same sums in one instruction.
    pub struct Vnni;

    impl IntDot for Madd {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256 {
            dot_u8_i8(u, s)
        }
    }

    impl IntDot for Vnni {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256 {
            _mm256_cvtepi32_ps(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s))
        }
    }

    /// Two f16 values (raw bits) as one 32-bit lane, the first in the low half.
    #[inline]
    fn pair(lo: u16, hi: u16) -> i32 {
        (u32::from(lo) | (u32::from(hi) << 16)) as i32
    }

    /// Each Q8_1 activation block's `[d, s]` as f32, converted once per call
    /// instead of once per weight row.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales_q8_1(acts: &[BlockQ8_1]) -> Vec<[f32; 2]> {
        acts.iter()
            .map(|a| [f16(a.d.to_bits()), f16(a.s.to_bits())])
            .collect()
    }

    /// Each Q8_0 activation block's `d` as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales_q8_0(acts: &[BlockQ8_0]) -> Vec<f32> {
        acts.iter().map(|a| f16(a.d.to_bits())).collect()
    }

    /// Lane 1 of `v`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lane1(v: __m128) -> f32 {
        _mm_cvtss_f32(_mm_movehdup_ps(v))
    }

    /// One Q4_1 weight row (`w`) against `N` Q8_1 activation rows (`acts`,
    /// with their `scales`), every row `kb` blocks, into `out[t]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1_tile<D: IntDot, const N: usize>(
        w: &[BlockQ4_1],
        acts: &[BlockQ8_1],
        scales: &[[f32; 2]],
        kb: usize,
        out: &mut [f32],
    ) {
        debug_assert!(w.len() == kb && acts.len() == N * kb && scales.len() == N * kb);
        let mut acc = [_mm256_setzero_ps(); N];
        // Lane 1 sums the blocks' `m * s` terms in block order, as the
        // one-row kernel's scalar does; lane 0 is unused.
        let mut mins = [_mm_setzero_ps(); N];
        for (i, b) in w.iter().enumerate() {
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(pair(b.d.to_bits(), b.m.to_bits())));
            let q = nibbles(&b.qs);
            for t in 0..N {
                let a = acts.get_unchecked(t * kb + i);
                let ds = _mm_castsi128_ps(_mm_loadl_epi64(scales.as_ptr().add(t * kb + i).cast()));
                // [w.d * a.d, w.m * a.s]
                let p = _mm_mul_ps(dm, ds);
                mins[t] = _mm_add_ps(mins[t], p);
                let products = D::dot(q, load(&a.qs));
                acc[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(p), products, acc[t]);
            }
        }
        for t in 0..N {
            out[t] = hsum(acc[t]) + lane1(mins[t]);
        }
    }

    /// One Q8_0 weight row against `N` Q8_0 activation rows, as
    /// [`q4_1_tile`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0_tile<D: IntDot, const N: usize>(
        w: &[BlockQ8_0],
        acts: &[BlockQ8_0],
        scales: &[f32],
        kb: usize,
        out: &mut [f32],
    ) {
        debug_assert!(w.len() == kb && acts.len() == N * kb && scales.len() == N * kb);
        let mut acc = [_mm256_setzero_ps(); N];
        for (i, b) in w.iter().enumerate() {
            let wd = f16(b.d.to_bits());
            let x = load(&b.qs);
            // dot_i8_i8's |x| and sign(x), taken once for all rows.
            let abs_x = _mm256_sign_epi8(x, x);
            for (t, acc) in acc.iter_mut().enumerate() {
                let a = acts.get_unchecked(t * kb + i);
                let d = wd * *scales.get_unchecked(t * kb + i);
                let products = D::dot(abs_x, _mm256_sign_epi8(load(&a.qs), x));
                *acc = _mm256_fmadd_ps(_mm256_set1_ps(d), products, *acc);
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            *o = hsum(acc);
        }
    }

    /// Runs `$tile` on each weight row of `w` against `acts`' `n` rows, in
    /// groups of up to four, into `out[r * n + t]`.
    macro_rules! tiled {
        ($tile:ident, $dot:ty, $w:expr, $acts:expr, $scales:expr, $n:expr, $out:expr) => {{
            let (w, acts, scales, n, out) = ($w, $acts, $scales, $n, $out);
            let kb = acts.len() / n;
            for (w, out) in w.chunks_exact(kb).zip(out.chunks_exact_mut(n)) {
                for t0 in (0..n).step_by(4) {
                    let nt = (n - t0).min(4);
                    let a = &acts[t0 * kb..(t0 + nt) * kb];
                    let s = &scales[t0 * kb..(t0 + nt) * kb];
                    let o = &mut out[t0..t0 + nt];
                    match nt {
                        4 => $tile::<$dot, 4>(w, a, s, kb, o),
                        3 => $tile::<$dot, 3>(w, a, s, kb, o),
                        2 => $tile::<$dot, 2>(w, a, s, kb, o),
                        _ => $tile::<$dot, 1>(w, a, s, kb, o),
                    }
                }
            }
        }};
    }

    /// The entry points for one instruction set: `$features` enabled, so
    /// the tiles and `$dot` inline into them.
    macro_rules! entries {
        ($module:ident, $features:literal, $dot:ty) => {
            /// [`crate::kernels::WeightFormat::dot_rows`] kernels built for
            #[doc = concat!("`", $features, "`.")]
            pub mod $module {
                use super::*;

                /// Q4_1 weight rows against Q8_1 activation rows.
                ///
                /// # Safety
                #[doc = concat!("The CPU must support `", $features, "`; ")]
                /// `acts` holds `n` rows of equal length and `w` whole rows
                /// of that length, `out` one value per pair of rows.
                #[target_feature(enable = $features)]
                pub unsafe fn q4_1_q8_1(
                    w: &[BlockQ4_1],
                    acts: &[BlockQ8_1],
                    n: usize,
                    out: &mut [f32],
                ) {
                    tiled!(q4_1_tile, $dot, w, acts, &scales_q8_1(acts), n, out)
                }

                /// Q8_0 weight rows against Q8_0 activation rows.
                ///
                /// # Safety
                /// As [`q4_1_q8_1`].
                #[target_feature(enable = $features)]
                pub unsafe fn q8_0_q8_0(
                    w: &[BlockQ8_0],
                    acts: &[BlockQ8_0],
                    n: usize,
                    out: &mut [f32],
                ) {
                    tiled!(q8_0_tile, $dot, w, acts, &scales_q8_0(acts), n, out)
                }
            }
        };
    }

    entries!(plain, "avx2,fma,f16c", Madd);
    entries!(vnni, "avx2,fma,f16c,avxvnni", Vnni);
}
