//! Quantised dot-product kernels for the weight formats candle computes
//! slowly on x86, chosen at run time by CPU feature rather than at build time
//! (one binary runs at full speed on any x86-64 and correctly everywhere).

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
pub mod blocks;
pub mod scalar;

use std::sync::OnceLock;

pub use blocks::{Block, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK};

/// Which instruction set the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX2, FMA and F16C with AVX-VNNI's byte dot product (Alder Lake,
    /// Zen 4 and later): one instruction where AVX2 needs two.
    AvxVnni,
    /// AVX2 with FMA and F16C (x86-64 since Haswell).
    Avx2,
    /// Portable Rust.
    Scalar,
}

impl Isa {
    /// The best instruction set this CPU supports (checked once).
    pub fn detect() -> Self {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| Self::supported()[0])
    }

    /// Every instruction set this CPU supports, best first (tests run each).
    pub fn supported() -> Vec<Isa> {
        let mut out = Vec::with_capacity(3);
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            if is_x86_feature_detected!("avxvnni") {
                out.push(Isa::AvxVnni);
            }
            out.push(Isa::Avx2);
        }
        out.push(Isa::Scalar);
        out
    }

    /// Whether AVX2, FMA and F16C may be used (true for every x86 SIMD level).
    pub fn has_avx2(self) -> bool {
        matches!(self, Isa::AvxVnni | Isa::Avx2)
    }
}

/// A weight block format with its activation format and dot product.
pub trait WeightFormat: Block {
    /// Block format the activations are quantised to.
    type Act: Block + Default;
    /// Quantises one activation row (length a multiple of 32); the same
    /// blocks on every instruction set.
    fn quantize_act(isa: Isa, x: &[f32], out: &mut [Self::Act]);
    /// Dot product of a weight row with an activation row, both in blocks.
    fn dot(isa: Isa, w: &[Self], a: &[Self::Act]) -> f32;

    /// Dot products of the weight rows laid end to end in `w` with the `n`
    /// activation rows laid end to end in `acts` (all rows `acts.len() / n`
    /// blocks) into `out`, weight-row major (`out[r * n + t]`); every result
    /// equals [`Self::dot`]'s bit for bit. Formats with a kernel for it take
    /// each weight row against up to four activation rows at once, sharing
    /// loads and scale conversions (decode and batched decode).
    fn dot_rows(isa: Isa, w: &[Self], acts: &[Self::Act], n: usize, out: &mut [f32]) {
        dot_each(isa, w, acts, n, out)
    }

    /// Expands weight blocks to f32 into `out` (32 values per block), as
    /// [`Block::dequantize`] does bit for bit; formats with a kernel for it
    /// use SIMD (the many-row path expands every weight once per pass).
    fn dequantize_row(isa: Isa, w: &[Self], out: &mut [f32]) {
        let _ = isa;
        dequantize_each(w, out)
    }

    /// Replaces a row by its quantised-then-dequantised activations, so a
    /// float GEMM on it computes what the integer kernels compute (up to
    /// summation order): batched and one-token passes then agree as
    /// closely as llama.cpp's own two paths do. The same values on every
    /// instruction set (both activation formats expand to `q * d`).
    fn round_trip_act(isa: Isa, x: &mut [f32]) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` and `Isa::AvxVnni` are only produced after
            // detecting AVX2, FMA and F16C.
            Isa::Avx2 | Isa::AvxVnni => unsafe { avx2::quant::round_trip(x) },
            _ => {
                let mut blocks = vec![Self::Act::default(); x.len() / QK];
                Self::quantize_act(isa, x, &mut blocks);
                for (b, chunk) in blocks.iter().zip(x.chunks_exact_mut(QK)) {
                    b.dequantize(chunk);
                }
            }
        }
    }
}

/// [`WeightFormat::dot_rows`] as one [`WeightFormat::dot`] per pair of rows.
fn dot_each<W: WeightFormat>(isa: Isa, w: &[W], acts: &[W::Act], n: usize, out: &mut [f32]) {
    let kb = acts.len() / n;
    for (row, out) in w.chunks_exact(kb).zip(out.chunks_exact_mut(n)) {
        for (o, a) in out.iter_mut().zip(acts.chunks_exact(kb)) {
            *o = W::dot(isa, row, a);
        }
    }
}

impl Default for BlockQ8_0 {
    fn default() -> Self {
        Self {
            d: half::f16::ZERO,
            qs: [0; QK],
        }
    }
}

impl Default for BlockQ8_1 {
    fn default() -> Self {
        Self {
            d: half::f16::ZERO,
            s: half::f16::ZERO,
            qs: [0; QK],
        }
    }
}

/// [`WeightFormat::dequantize_row`] one [`Block::dequantize`] per block.
fn dequantize_each<B: Block>(w: &[B], out: &mut [f32]) {
    for (b, chunk) in w.iter().zip(out.chunks_exact_mut(QK)) {
        b.dequantize(chunk);
    }
}

/// [`WeightFormat::dequantize_row`] through the AVX2 kernel `$name` when
/// `isa` allows it, else block by block.
macro_rules! dispatch_dequant {
    ($isa:expr, $name:ident, $w:expr, $out:expr) => {{
        assert_eq!($out.len(), $w.len() * QK);
        match $isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` and `Isa::AvxVnni` are only produced after
            // detecting AVX2, FMA and F16C; `out` holds 32 values per block
            // (asserted above).
            Isa::Avx2 | Isa::AvxVnni => unsafe { avx2::dequant::$name($w, $out) },
            _ => dequantize_each($w, $out),
        }
    }};
}

/// Quantises activations with the AVX2 quantiser `$name` when `isa` allows
/// it, else with the scalar reference `$scalar`.
macro_rules! dispatch_quant {
    ($isa:expr, $name:ident, $scalar:path, $x:expr, $out:expr) => {{
        assert!($out.len() * QK <= $x.len());
        match $isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` and `Isa::AvxVnni` are only produced after
            // detecting AVX2, FMA and F16C.
            Isa::Avx2 | Isa::AvxVnni => unsafe { avx2::quant::$name($x, $out) },
            _ => $scalar($x, $out),
        }
    }};
}

/// Dispatches to the AVX2 kernel when `isa` allows it, else the scalar one.
macro_rules! dispatch {
    ($isa:expr, $name:ident, $w:expr, $a:expr) => {{
        debug_assert_eq!($w.len(), $a.len());
        match $isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` and `Isa::AvxVnni` are only produced after
            // detecting AVX2, FMA and F16C.
            Isa::Avx2 | Isa::AvxVnni => unsafe { avx2::$name($w, $a) },
            _ => scalar::$name($w, $a),
        }
    }};
}

/// [`WeightFormat::dot_rows`] through the tiled kernel `$name` of the
/// instruction set `isa` names, else one [`WeightFormat::dot`] per pair.
macro_rules! dispatch_rows {
    ($isa:expr, $name:ident, $w:expr, $acts:expr, $n:expr, $out:expr) => {{
        let (w, acts, n, out) = ($w, $acts, $n, $out);
        assert!(n > 0 && acts.len() % n == 0);
        assert_eq!(w.len() / (acts.len() / n) * n, out.len());
        assert_eq!(w.len() % (acts.len() / n), 0);
        match $isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::AvxVnni` is only produced after detecting AVX2,
            // FMA, F16C and AVX-VNNI; the shapes are asserted above.
            Isa::AvxVnni => unsafe { avx2::rows::vnni::$name(w, acts, n, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` is only produced after detecting AVX2, FMA
            // and F16C; the shapes are asserted above.
            Isa::Avx2 => unsafe { avx2::rows::plain::$name(w, acts, n, out) },
            _ => dot_each($isa, w, acts, n, out),
        }
    }};
}

impl WeightFormat for BlockQ4_1 {
    type Act = BlockQ8_1;
    fn quantize_act(isa: Isa, x: &[f32], out: &mut [BlockQ8_1]) {
        dispatch_quant!(isa, q8_1, blocks::quantize_q8_1, x, out)
    }
    fn dot(isa: Isa, w: &[Self], a: &[BlockQ8_1]) -> f32 {
        dispatch!(isa, dot_q4_1_q8_1, w, a)
    }
    fn dot_rows(isa: Isa, w: &[Self], acts: &[BlockQ8_1], n: usize, out: &mut [f32]) {
        dispatch_rows!(isa, q4_1_q8_1, w, acts, n, out)
    }
    fn dequantize_row(isa: Isa, w: &[Self], out: &mut [f32]) {
        dispatch_dequant!(isa, q4_1, w, out)
    }
}

impl WeightFormat for BlockQ5_0 {
    type Act = BlockQ8_0;
    fn quantize_act(isa: Isa, x: &[f32], out: &mut [BlockQ8_0]) {
        dispatch_quant!(isa, q8_0, blocks::quantize_q8_0, x, out)
    }
    fn dot(isa: Isa, w: &[Self], a: &[BlockQ8_0]) -> f32 {
        dispatch!(isa, dot_q5_0_q8_0, w, a)
    }
}

impl WeightFormat for BlockQ5_1 {
    type Act = BlockQ8_1;
    fn quantize_act(isa: Isa, x: &[f32], out: &mut [BlockQ8_1]) {
        dispatch_quant!(isa, q8_1, blocks::quantize_q8_1, x, out)
    }
    fn dot(isa: Isa, w: &[Self], a: &[BlockQ8_1]) -> f32 {
        dispatch!(isa, dot_q5_1_q8_1, w, a)
    }
}

impl WeightFormat for BlockQ8_0 {
    type Act = BlockQ8_0;
    fn quantize_act(isa: Isa, x: &[f32], out: &mut [BlockQ8_0]) {
        dispatch_quant!(isa, q8_0, blocks::quantize_q8_0, x, out)
    }
    fn dot(isa: Isa, w: &[Self], a: &[BlockQ8_0]) -> f32 {
        dispatch!(isa, dot_q8_0_q8_0, w, a)
    }
    fn dot_rows(isa: Isa, w: &[Self], acts: &[BlockQ8_0], n: usize, out: &mut [f32]) {
        dispatch_rows!(isa, q8_0_q8_0, w, acts, n, out)
    }
    fn dequantize_row(isa: Isa, w: &[Self], out: &mut [f32]) {
        dispatch_dequant!(isa, q8_0, w, out)
    }
}
