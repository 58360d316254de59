//! The quantised kernels against the scalar reference and against plain f64
//! arithmetic on dequantised values, on random blocks with edge values.

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use warden_inference::kernels::blocks::{quantize_q8_0, quantize_q8_1};
use warden_inference::kernels::{
    Block, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, Isa, WeightFormat, QK,
};
use warden_inference::linear::QWeight;

/// Scales: ordinary, zero, tiny, large and negative values.
fn scale(rng: &mut StdRng) -> f16 {
    let v = match rng.random_range(0..8) {
        0 => 0.0,
        1 => 6.0e-5,
        2 => 1000.0,
        3 => -rng.random_range(0.0..0.1),
        _ => rng.random_range(0.0..0.1),
    };
    f16::from_f32(v)
}

/// Packed nibbles: random, all zero or all ones.
fn nibbles(rng: &mut StdRng) -> [u8; QK / 2] {
    match rng.random_range(0..6) {
        0 => [0x00; QK / 2],
        1 => [0xFF; QK / 2],
        2 => [0x0F; QK / 2],
        _ => rng.random(),
    }
}

fn high_bits(rng: &mut StdRng) -> [u8; 4] {
    match rng.random_range(0..5) {
        0 => [0; 4],
        1 => [0xFF; 4],
        _ => rng.random(),
    }
}

fn q8_values(rng: &mut StdRng, min: i8) -> [i8; QK] {
    match rng.random_range(0..5) {
        0 => [127; QK],
        1 => [min; QK],
        2 => [0; QK],
        _ => std::array::from_fn(|_| rng.random_range(min..=127)),
    }
}

fn q4_1(rng: &mut StdRng) -> BlockQ4_1 {
    BlockQ4_1 {
        d: scale(rng),
        m: scale(rng),
        qs: nibbles(rng),
    }
}

fn q5_0(rng: &mut StdRng) -> BlockQ5_0 {
    BlockQ5_0 {
        d: scale(rng),
        qh: high_bits(rng),
        qs: nibbles(rng),
    }
}

fn q5_1(rng: &mut StdRng) -> BlockQ5_1 {
    BlockQ5_1 {
        d: scale(rng),
        m: scale(rng),
        qh: high_bits(rng),
        qs: nibbles(rng),
    }
}

fn q8_0(rng: &mut StdRng, min: i8) -> BlockQ8_0 {
    BlockQ8_0 {
        d: scale(rng),
        qs: q8_values(rng, min),
    }
}

fn q8_1(rng: &mut StdRng) -> BlockQ8_1 {
    let qs = q8_values(rng, -127);
    let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
    // `s` is stored in f16: keep `d * sum` finite, as real activations are.
    let d = match scale(rng) {
        d if (d.to_f32() * sum as f32).abs() > 6.0e4 => f16::from_f32(6.0e4 / 4064.0),
        d => d,
    };
    BlockQ8_1 {
        d,
        s: f16::from_f32(d.to_f32() * sum as f32),
        qs,
    }
}

/// The exact value of a weight row times an activation row, in f64 from the
/// dequantised weights and the activations' integer form (with the f16
/// rounding of Q8_1's stored `s` carried over, which the kernels use by
/// design); also the sum of absolute terms, the scale of rounding error.
fn exact<W: Block>(w: &[W], act: &[(f32, f32, [i8; QK])], min: fn(&W) -> f32) -> (f64, f64) {
    let (mut sum, mut mag) = (0f64, 0f64);
    for (w, (d, s, qs)) in w.iter().zip(act) {
        let mut vals = [0f32; QK];
        w.dequantize(&mut vals);
        for (v, &q) in vals.iter().zip(qs) {
            let t = f64::from(*v) * f64::from(*d) * f64::from(q);
            sum += t;
            mag += t.abs();
        }
        let m = f64::from(min(w));
        if m != 0.0 {
            let exact_s = f64::from(*d) * qs.iter().map(|&q| f64::from(q)).sum::<f64>();
            sum += m * (f64::from(*s) - exact_s);
            mag += (m * f64::from(*s)).abs();
        }
    }
    (sum, mag)
}

fn close(a: f64, b: f64, mag: f64) -> bool {
    (a - b).abs() <= 1e-5 * mag + 1e-30
}

/// Runs `check` on many random rows of 1 to 24 blocks.
fn for_random_rows(mut check: impl FnMut(&mut StdRng, usize)) {
    let mut rng = StdRng::seed_from_u64(0x5EED);
    for _ in 0..3000 {
        let blocks = rng.random_range(1..=24);
        check(&mut rng, blocks);
    }
}

/// An activation block as (scale, sum term, quants).
type ActView = (f32, f32, [i8; QK]);

fn check_format<W: WeightFormat>(
    weight: fn(&mut StdRng) -> W,
    act: fn(&mut StdRng) -> W::Act,
    view: fn(&W::Act) -> ActView,
    min: fn(&W) -> f32,
) {
    let isas = Isa::supported();
    for_random_rows(|rng, n| {
        let w: Vec<W> = (0..n).map(|_| weight(rng)).collect();
        let a: Vec<W::Act> = (0..n).map(|_| act(rng)).collect();
        let scalar = W::dot(Isa::Scalar, &w, &a);
        let views: Vec<_> = a.iter().map(view).collect();
        let (want, mag) = exact(&w, &views, min);
        assert!(
            close(f64::from(scalar), want, mag),
            "scalar {scalar} vs exact {want} (magnitude {mag})"
        );
        for &isa in &isas {
            let fast = W::dot(isa, &w, &a);
            assert!(
                close(f64::from(fast), f64::from(scalar), mag),
                "{isa:?} {fast} vs scalar {scalar} (magnitude {mag})"
            );
        }
        // Several weight rows against several activation rows at once
        // (decode, batched decode): each result is the one-row kernel's, bit
        // for bit, on every instruction set.
        let (rows, acts_n) = (rng.random_range(1..=9), rng.random_range(1..=6));
        let ws: Vec<W> = (0..rows * n).map(|_| weight(rng)).collect();
        let acts: Vec<W::Act> = (0..acts_n * n).map(|_| act(rng)).collect();
        for &isa in &isas {
            let mut got = vec![f32::NAN; rows * acts_n];
            W::dot_rows(isa, &ws, &acts, acts_n, &mut got);
            for (r, w) in ws.chunks_exact(n).enumerate() {
                for (t, a) in acts.chunks_exact(n).enumerate() {
                    let one = W::dot(isa, w, a);
                    let got = got[r * acts_n + t];
                    assert_eq!(
                        got.to_bits(),
                        one.to_bits(),
                        "{isa:?} dot_rows ({r}, {t}) of ({rows}, {acts_n}): {got} vs dot {one}"
                    );
                }
            }
        }
        // Expanding to f32 (the many-row path): every instruction set gives
        // each block's own dequantisation, bit for bit.
        let mut want = vec![0f32; n * QK];
        for (b, chunk) in w.iter().zip(want.chunks_exact_mut(QK)) {
            b.dequantize(chunk);
        }
        for &isa in &isas {
            let mut got = vec![f32::NAN; n * QK];
            W::dequantize_row(isa, &w, &mut got);
            let same = got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(
                same,
                "{isa:?} dequantize_row differs from Block::dequantize"
            );
        }
    });
}

fn view_q8_0(a: &BlockQ8_0) -> (f32, f32, [i8; QK]) {
    (a.d.to_f32(), 0.0, a.qs)
}

fn view_q8_1(a: &BlockQ8_1) -> (f32, f32, [i8; QK]) {
    (a.d.to_f32(), a.s.to_f32(), a.qs)
}

#[test]
fn simd_is_detected_on_capable_cpus() {
    let mut want = Vec::new();
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        if is_x86_feature_detected!("avxvnni") {
            want.push(Isa::AvxVnni);
        }
        want.push(Isa::Avx2);
    }
    want.push(Isa::Scalar);
    assert_eq!(Isa::supported(), want);
    assert_eq!(Isa::detect(), want[0]);
}

#[test]
fn q4_1_matches_reference() {
    check_format::<BlockQ4_1>(q4_1, q8_1, view_q8_1, |w| w.m.to_f32());
}

#[test]
fn q5_0_matches_reference() {
    check_format::<BlockQ5_0>(q5_0, |r| q8_0(r, -127), view_q8_0, |_| 0.0);
}

#[test]
fn q5_1_matches_reference() {
    check_format::<BlockQ5_1>(q5_1, q8_1, view_q8_1, |w| w.m.to_f32());
}

#[test]
fn q8_0_matches_reference_including_minus_128_weights() {
    check_format::<BlockQ8_0>(|r| q8_0(r, -128), |r| q8_0(r, -127), view_q8_0, |_| 0.0);
}

#[test]
fn activation_quantisers_round_trip_within_half_a_step() {
    let mut rng = StdRng::seed_from_u64(7);
    for case in 0..200 {
        let x: Vec<f32> = (0..QK * 4)
            .map(|i| match case % 4 {
                0 => 0.0,
                // Large, but with block sums that stay within f16 as `s` needs.
                1 => rng.random_range(-1e3..1e3),
                2 if i % 7 == 0 => 3.0,
                _ => rng.random_range(-1.0..1.0),
            })
            .collect();
        let mut b0 = vec![BlockQ8_0::default(); 4];
        let mut b1 = vec![BlockQ8_1::default(); 4];
        quantize_q8_0(&x, &mut b0);
        quantize_q8_1(&x, &mut b1);
        for ((chunk, a), b) in x.chunks(QK).zip(&b0).zip(&b1) {
            assert_eq!(a.qs, b.qs);
            let d = a.d.to_f32();
            let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
            let s = d * sum as f32;
            assert!(
                (b.s.to_f32() - s).abs() <= s.abs() * 2e-3 + 1e-6,
                "s {} vs {s}",
                b.s
            );
            for (v, &q) in chunk.iter().zip(&a.qs) {
                // f16 rounding of d adds up to 127 * 2^-11 relative error.
                let tol = d * 0.5 + d.abs() * 0.07 + 1e-6;
                assert!((v - f32::from(q) * d).abs() <= tol, "{v} vs {q} * {d}");
            }
        }
    }
}

#[test]
fn activation_quantisers_give_the_scalar_blocks_on_every_instruction_set() {
    let mut rng = StdRng::seed_from_u64(8);
    for case in 0..400 {
        let x: Vec<f32> = (0..QK * 3)
            .map(|i| match case % 5 {
                0 => 0.0,
                // amax 127 makes the scale 1: exact halves test the rounding.
                1 if i % 32 == 0 => 127.0,
                1 => f32::from(rng.random_range(-254i16..=254)) / 2.0,
                2 => -0.0,
                3 => rng.random_range(-1e3..1e3),
                _ => rng.random_range(-1.0..1.0),
            })
            .collect();
        let mut want0 = vec![BlockQ8_0::default(); 3];
        let mut want1 = vec![BlockQ8_1::default(); 3];
        quantize_q8_0(&x, &mut want0);
        quantize_q8_1(&x, &mut want1);
        let mut expanded = vec![0f32; x.len()];
        for (b, chunk) in want1.iter().zip(expanded.chunks_exact_mut(QK)) {
            b.dequantize(chunk);
        }
        for isa in Isa::supported() {
            let mut got0 = vec![BlockQ8_0::default(); 3];
            let mut got1 = vec![BlockQ8_1::default(); 3];
            <BlockQ8_0 as WeightFormat>::quantize_act(isa, &x, &mut got0);
            <BlockQ4_1 as WeightFormat>::quantize_act(isa, &x, &mut got1);
            assert_eq!(got0, want0, "{isa:?} Q8_0, case {case}");
            assert_eq!(got1, want1, "{isa:?} Q8_1, case {case}");
            let mut trip = x.clone();
            BlockQ4_1::round_trip_act(isa, &mut trip);
            let same = trip
                .iter()
                .zip(&expanded)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{isa:?} round trip, case {case}");
        }
    }
}

/// Random GGUF bytes for a `(rows, cols)` matrix of a weight format.
fn random_matrix<W: Block>(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    make: fn(&mut StdRng) -> W,
) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..rows * cols / QK {
        let b = make(rng);
        // SAFETY: blocks are `repr(C)` plain data without padding.
        let raw = unsafe {
            std::slice::from_raw_parts((&b as *const W).cast::<u8>(), std::mem::size_of::<W>())
        };
        bytes.extend_from_slice(raw);
    }
    bytes
}

/// Realistic weights: small scales, so products stay in a sane range.
fn small_q4_1(rng: &mut StdRng) -> BlockQ4_1 {
    BlockQ4_1 {
        d: f16::from_f32(rng.random_range(0.001..0.02)),
        m: f16::from_f32(rng.random_range(-0.15..0.0)),
        qs: rng.random(),
    }
}

#[test]
fn matmul_paths_agree_with_f64_on_dequantised_weights() {
    use candle_core::quantized::GgmlDType;
    let mut rng = StdRng::seed_from_u64(11);
    let (rows, cols) = (150, 96);
    let bytes = random_matrix(&mut rng, rows, cols, small_q4_1);
    let w = QWeight::from_bytes(GgmlDType::Q4_1, &bytes, rows, cols).unwrap();
    let dense = {
        let ids: Vec<u32> = (0..rows as u32).collect();
        w.rows_f32(&ids)
    };
    for n in [1, 3, 8, 37] {
        let x: Vec<f32> = (0..n * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
        let mut want = vec![0f64; n * rows];
        for t in 0..n {
            for r in 0..rows {
                want[t * rows + r] = (0..cols)
                    .map(|k| f64::from(x[t * cols + k]) * f64::from(dense[r * cols + k]))
                    .sum();
            }
        }
        let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
        let mut gemm = vec![0f32; n * rows];
        w.matmul_gemm(Isa::detect(), &x, n, &mut gemm);
        // The tiles expand alike on every instruction set.
        let mut portable = vec![0f32; n * rows];
        w.matmul_gemm(Isa::Scalar, &x, n, &mut portable);
        assert_eq!(gemm, portable, "gemm on scalar-dequantised tiles differs");
        // 8-bit activations: about 1% of the largest output.
        for (g, e) in gemm.iter().zip(&want) {
            assert!((f64::from(*g) - e).abs() <= 0.02 * scale, "gemm {g} vs {e}");
        }
        for isa in Isa::supported() {
            let mut q = vec![0f32; n * rows];
            w.matmul_quantized(isa, &x, n, &mut q);
            // Both paths see the same 8-bit activations: only the summation
            // order (and the f16 rounding of Q8_1's block sums) differs.
            for (q, g) in q.iter().zip(&gemm) {
                assert!(
                    (q - g).abs() <= 2e-3 * scale as f32,
                    "{isa:?} {q} vs gemm {g}"
                );
            }
            let mut auto = vec![0f32; n * rows];
            w.matmul(isa, &x, n, &mut auto);
            assert!(auto.iter().all(|v| v.is_finite()));
        }
    }
}
