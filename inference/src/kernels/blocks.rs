//! GGML block layouts (bit-compatible with GGUF tensor data), their
//! dequantisation, and the quantisation of activations.

use half::f16;

/// Values per block for every format here.
pub const QK: usize = 32;

/// 4-bit unsigned weights with a scale and a minimum: `x = d * q + m`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Element `j` in the low nibble of byte `j`, element `j + 16` in the high nibble.
    pub qs: [u8; QK / 2],
}

/// 5-bit signed weights: `x = d * (q - 16)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bit of element `j` at bit `j` (little-endian).
    pub qh: [u8; 4],
    /// Low four bits, laid out as in [`BlockQ4_1`].
    pub qs: [u8; QK / 2],
}

/// 5-bit unsigned weights with a minimum: `x = d * q + m`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Fifth bit of element `j` at bit `j` (little-endian).
    pub qh: [u8; 4],
    /// Low four bits, laid out as in [`BlockQ4_1`].
    pub qs: [u8; QK / 2],
}

/// 8-bit signed values with a scale: `x = d * q`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quantised values.
    pub qs: [i8; QK],
}

/// 8-bit activations with a scale and `s = d * sum(qs)`, which lets the
/// minimum of Q4_1/Q5_1 weights be applied once per block.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d` times the sum of `qs`.
    pub s: f16,
    /// Quantised values.
    pub qs: [i8; QK],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

fn f16_at(b: &[u8], at: usize) -> f16 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// A block format that can be parsed from GGUF bytes and expanded to f32.
pub trait Block: Copy + Send + Sync + 'static {
    /// Bytes per block in the file.
    const BYTES: usize;
    /// Parses one block from exactly [`Self::BYTES`] bytes.
    fn parse(bytes: &[u8]) -> Self;
    /// Writes the block's 32 values.
    fn dequantize(&self, out: &mut [f32]);
}

impl Block for BlockQ4_1 {
    const BYTES: usize = 20;
    fn parse(b: &[u8]) -> Self {
        Self {
            d: f16_at(b, 0),
            m: f16_at(b, 2),
            qs: array(b, 4),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = f32::from(q & 0x0F) * d + m;
            out[j + QK / 2] = f32::from(q >> 4) * d + m;
        }
    }
}

/// The 5-bit value of element `j` as `0..=31`.
fn q5(qs: &[u8; QK / 2], qh: u32, j: usize) -> u8 {
    let low = if j < QK / 2 {
        qs[j] & 0x0F
    } else {
        qs[j - QK / 2] >> 4
    };
    low | ((((qh >> j) & 1) as u8) << 4)
}

impl Block for BlockQ5_0 {
    const BYTES: usize = 22;
    fn parse(b: &[u8]) -> Self {
        Self {
            d: f16_at(b, 0),
            qh: array(b, 2),
            qs: array(b, 6),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let qh = u32::from_le_bytes(self.qh);
        for (j, o) in out.iter_mut().enumerate().take(QK) {
            *o = (i32::from(q5(&self.qs, qh, j)) - 16) as f32 * d;
        }
    }
}

impl Block for BlockQ5_1 {
    const BYTES: usize = 24;
    fn parse(b: &[u8]) -> Self {
        Self {
            d: f16_at(b, 0),
            m: f16_at(b, 2),
            qh: array(b, 4),
            qs: array(b, 8),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        let qh = u32::from_le_bytes(self.qh);
        for (j, o) in out.iter_mut().enumerate().take(QK) {
            *o = f32::from(q5(&self.qs, qh, j)) * d + m;
        }
    }
}

impl Block for BlockQ8_0 {
    const BYTES: usize = 34;
    fn parse(b: &[u8]) -> Self {
        Self {
            d: f16_at(b, 0),
            qs: array::<QK>(b, 2).map(|x| x as i8),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }
}

impl Block for BlockQ8_1 {
    const BYTES: usize = 36;
    fn parse(b: &[u8]) -> Self {
        Self {
            d: f16_at(b, 0),
            s: f16_at(b, 2),
            qs: array::<QK>(b, 4).map(|x| x as i8),
        }
    }
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }
}

/// Scale and quantised values of one block the way llama.cpp's reference
/// quantiser does it: `d = amax / 127`, values rounded half away from zero.
fn quantize_i8(x: &[f32]) -> (f32, [i8; QK]) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    (d, qs)
}

/// Quantises a row (length a multiple of 32) to Q8_0 blocks.
pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (block, chunk) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs) = quantize_i8(chunk);
        *block = BlockQ8_0 {
            d: f16::from_f32(d),
            qs,
        };
    }
}

/// Quantises a row (length a multiple of 32) to Q8_1 blocks.
pub fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    for (block, chunk) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs) = quantize_i8(chunk);
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        *block = BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::from_f32(sum as f32 * d),
            qs,
        };
    }
}

/// Parses GGUF tensor bytes into blocks (copied, so they are aligned).
pub fn parse_blocks<B: Block>(bytes: &[u8]) -> Vec<B> {
    bytes.chunks_exact(B::BYTES).map(B::parse).collect()
}
