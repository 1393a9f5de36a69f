//! bf16 and IEEE-half (f16) conversions: the one place the library converts between the 16-bit float
//! formats and f32. The f16 conversions are the [`half`] crate's (no_std, no features); the two bf16
//! conversions stay hand-written, each for a measured or bit-level reason.
//!
//! Every conversion is bit-for-bit the one the library has always used: the tests check every 16-bit
//! pattern, and f32 -> 16-bit rounding on ties, subnormals, infinities, NaNs, a stride through all 2^32
//! patterns and random values, against the former hand-written code. Where `half` differs:
//!
//! - [`bf16_to_f32`] is the exact widening `bits << 16` for every pattern: `half::bf16::to_f32` sets the
//!   quiet bit of a signalling NaN (`0x7f81` -> `0x7fc1_0000`), so a checkpoint's bits would not survive
//!   a round trip; the shift is also what the matmul kernels' SIMD loads do (`cpu::simd`), and half's
//!   bulk `convert_to_f32_slice` is no faster (docs/performance.md, "Crates and hand-written code").
//! - [`f32_to_bf16`] gives exactly `half::bf16::from_f32`'s bits (the tests check it) but is written
//!   branch-free so loops over it vectorise: it rounds the bf16 matmul's activations on every call
//!   (`cpu::kernels::matmul`), where half's conversion (a call per element, two branches) measured about
//!   ten times slower on 4M values.
//! - [`f16_to_f32`]: `half`, except NaNs: half quiets signalling NaNs; ours keeps the payload as it is
//!   (`sign | 0x7f80_0000 | man << 13`).
//! - [`f32_to_f16`]: `half`, except NaNs: half keeps the top payload bits of a NaN; ours writes the
//!   canonical quiet NaN `sign | 0x7e00`.
//!
//! The f16 conversions only run when checkpoints are read or training data is written (not per token),
//! where half's slower scalar code (see the performance notes) does not matter.

use half::f16;

/// A bf16 bit pattern widened to f32: exact for every pattern, NaN payloads included.
#[inline(always)]
pub fn bf16_to_f32(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// f32 to bf16 bits, round to nearest even (overflow to infinity; a NaN stays a quiet NaN with the top
/// of its payload: `(bits >> 16) | 0x40`). Bit-identical to `half::bf16::from_f32`, branch-free apart
/// from the NaN select so loops over it vectorise.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// IEEE half bits to f32 (exact: subnormals, infinities and NaN payloads included).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    if h & 0x7c00 == 0x7c00 && h & 0x3ff != 0 {
        // NaN: keep the payload bits as they are (half would set the quiet bit).
        return f32::from_bits(
            ((h as u32 & 0x8000) << 16) | 0x7f80_0000 | ((h as u32 & 0x3ff) << 13),
        );
    }
    f16::from_bits(h).to_f32()
}

/// f32 to IEEE half bits, round to nearest even (overflow to infinity; NaN -> the quiet NaN
/// `sign | 0x7e00`).
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    if x.is_nan() {
        // Canonical quiet NaN (half would keep the payload's top bits).
        return ((x.to_bits() >> 16) & 0x8000) as u16 | 0x7e00;
    }
    f16::from_f32(x).to_bits()
}

#[cfg(test)]
mod tests;
