//! Portable dot products: the reference the SIMD kernels are tested against
//! and the fallback on CPUs without AVX2/FMA/F16C.

use super::blocks::{BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK};

fn int_dot(w: impl Iterator<Item = i32>, a: &[i8; QK]) -> i32 {
    w.zip(a).map(|(w, &a)| w * i32::from(a)).sum()
}

fn q4_values(qs: &[u8; QK / 2]) -> impl Iterator<Item = i32> + '_ {
    qs.iter()
        .map(|&q| i32::from(q & 0x0F))
        .chain(qs.iter().map(|&q| i32::from(q >> 4)))
}

fn q5_values<'a>(qs: &'a [u8; QK / 2], qh: &[u8; 4]) -> impl Iterator<Item = i32> + 'a {
    let qh = u32::from_le_bytes(*qh);
    q4_values(qs)
        .enumerate()
        .map(move |(j, q)| q | ((((qh >> j) & 1) as i32) << 4))
}

/// Q4_1 weights against Q8_1 activations.
pub fn dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    w.iter()
        .zip(a)
        .map(|(w, a)| {
            let sum = int_dot(q4_values(&w.qs), &a.qs);
            w.d.to_f32() * a.d.to_f32() * sum as f32 + w.m.to_f32() * a.s.to_f32()
        })
        .sum()
}

/// Q5_0 weights against Q8_0 activations.
pub fn dot_q5_0_q8_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    w.iter()
        .zip(a)
        .map(|(w, a)| {
            let sum = int_dot(q5_values(&w.qs, &w.qh).map(|q| q - 16), &a.qs);
            w.d.to_f32() * a.d.to_f32() * sum as f32
        })
        .sum()
}

/// Q5_1 weights against Q8_1 activations.
pub fn dot_q5_1_q8_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    w.iter()
        .zip(a)
        .map(|(w, a)| {
            let sum = int_dot(q5_values(&w.qs, &w.qh), &a.qs);
            w.d.to_f32() * a.d.to_f32() * sum as f32 + w.m.to_f32() * a.s.to_f32()
        })
        .sum()
}

/// Q8_0 weights against Q8_0 activations.
pub fn dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    w.iter()
        .zip(a)
        .map(|(w, a)| {
            let sum = int_dot(w.qs.iter().map(|&q| i32::from(q)), &a.qs);
            w.d.to_f32() * a.d.to_f32() * sum as f32
        })
        .sum()
}
