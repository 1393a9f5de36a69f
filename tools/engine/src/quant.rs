//! ggml tensor types and their dequantization to f32.

use crate::error::{Error, Result};

/// The ggml tensor types the engine can read (numbering from ggml.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// 32 values: f16 scale `d`, 16 bytes of 4-bit quants; `x = d * (q - 8)`.
    Q4_0,
    /// 32 values: f16 scale `d`, f16 minimum `m`, 16 bytes of 4-bit quants; `x = d * q + m`.
    Q4_1,
    /// 32 values: f16 scale `d`, 32 signed bytes; `x = d * q`.
    Q8_0,
    /// bfloat16.
    BF16,
}

impl GgmlType {
    /// The type for a ggml type id, or an error naming the id.
    pub fn from_id(id: u32) -> Result<Self> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => {
                return Err(Error::Unsupported(format!(
                    "ggml tensor type {other} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)"
                )));
            }
        })
    }

    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q8_0 => 34,
        }
    }

    /// Bytes that `n` values occupy, or an error if `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Result<usize> {
        if !n.is_multiple_of(self.block_len()) {
            return Err(Error::Format(format!(
                "{n} values of {self:?} are not a whole number of {}-value blocks",
                self.block_len()
            )));
        }
        (n / self.block_len())
            .checked_mul(self.block_bytes())
            .ok_or_else(|| Error::Format(format!("{n} values of {self:?} overflow usize")))
    }
}

/// Dequantizes `n` values of type `ty` from `bytes` (exactly `ty.bytes_for(n)` bytes) into `out`
/// (exactly `n` values).
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let expected = ty.bytes_for(out.len())?;
    if bytes.len() != expected {
        return Err(Error::Format(format!(
            "{} values of {ty:?} need {expected} bytes, got {}",
            out.len(),
            bytes.len()
        )));
    }
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.as_chunks::<4>().0) {
                *o = f32::from_le_bytes(*b);
            }
        }
        GgmlType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.as_chunks::<2>().0) {
                *o = f16_to_f32(u16::from_le_bytes(*b));
            }
        }
        GgmlType::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.as_chunks::<2>().0) {
                *o = bf16_to_f32(u16::from_le_bytes(*b));
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out
                .as_chunks_mut::<32>()
                .0
                .iter_mut()
                .zip(bytes.as_chunks::<34>().0)
            {
                let (d, qs) = split_scale(b);
                for (x, &q) in o.iter_mut().zip(qs) {
                    *x = (q as i8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_0 => {
            for (o, b) in out
                .as_chunks_mut::<32>()
                .0
                .iter_mut()
                .zip(bytes.as_chunks::<18>().0)
            {
                let (d, qs) = split_scale(b);
                let (lo, hi) = o.split_at_mut(16);
                for ((l, h), &q) in lo.iter_mut().zip(hi).zip(qs) {
                    *l = ((q & 0x0f) as i32 - 8) as f32 * d;
                    *h = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (o, b) in out
                .as_chunks_mut::<32>()
                .0
                .iter_mut()
                .zip(bytes.as_chunks::<20>().0)
            {
                let (d, rest) = split_scale(b);
                let (m, qs) = split_scale(rest);
                let (lo, hi) = o.split_at_mut(16);
                for ((l, h), &q) in lo.iter_mut().zip(hi).zip(qs) {
                    *l = (q & 0x0f) as f32 * d + m;
                    *h = (q >> 4) as f32 * d + m;
                }
            }
        }
    }
    Ok(())
}

/// Splits a leading little-endian f16 off a block. Callers pass whole blocks, which always hold one.
fn split_scale(block: &[u8]) -> (f32, &[u8]) {
    match block.split_first_chunk::<2>() {
        Some((d, rest)) => (f16_to_f32(u16::from_le_bytes(*d)), rest),
        None => (0.0, &[]),
    }
}

/// IEEE binary16 bits to f32 (exact): the library's conversion, which its safetensors reader also
/// uses; the tests below check it on every finite f16.
pub use specblock::io::safetensors::f16_to_f32;

/// Converts bfloat16 bits to f32: bfloat16 is the upper half of an f32, so this is exact for every
/// value, subnormals, infinities and NaNs included (the library's conversion).
pub use specblock::num::bf16_to_f32;

#[cfg(test)]
mod tests {
    use super::*;

    fn deq(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; n];
        dequantize(ty, bytes, &mut out).unwrap();
        out
    }

    #[test]
    fn f16_known_values() {
        let cases: [(u16, f32); 12] = [
            (0x0000, 0.0),
            (0x3c00, 1.0),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x7bff, 65504.0),
            (0x0400, 6.103_515_6e-5),        // smallest normal, 2^-14
            (0x0001, 5.960_464_5e-8),        // smallest subnormal, 2^-24
            (0x03ff, 1023.0 / 16_777_216.0), // largest subnormal, 1023 * 2^-24
            (0x8001, -1.0 / 16_777_216.0),
            (0x7c00, f32::INFINITY),
            (0xfc00, f32::NEG_INFINITY),
            (0x3800, 0.5),
        ];
        for (h, want) in cases {
            assert_eq!(f16_to_f32(h), want, "f16 bits {h:#06x}");
        }
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert!(f16_to_f32(0xfd01).is_nan());
        assert!(f16_to_f32(0xfd01).is_sign_negative());
    }

    #[test]
    fn f16_all_finite_values_match_the_formula() {
        for h in 0..=u16::MAX {
            let exp = i32::from((h >> 10) & 0x1f);
            if exp == 0x1f {
                continue;
            }
            let man = f64::from(h & 0x3ff);
            let mag = if exp == 0 {
                man * 2f64.powi(-24)
            } else {
                (1.0 + man / 1024.0) * 2f64.powi(exp - 15)
            };
            let want = if h & 0x8000 != 0 { -mag } else { mag };
            assert_eq!(f64::from(f16_to_f32(h)), want, "f16 bits {h:#06x}");
        }
    }

    #[test]
    fn bf16_known_values() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
        assert_eq!(bf16_to_f32(0x3e80), 0.25);
        assert_eq!(f64::from(bf16_to_f32(0x0001)), 2f64.powi(-133)); // smallest subnormal
        assert_eq!(bf16_to_f32(0x7f80), f32::INFINITY);
        assert_eq!(bf16_to_f32(0xff80), f32::NEG_INFINITY);
        assert!(bf16_to_f32(0x7fc0).is_nan());
    }

    #[test]
    fn f32_f16_bf16_arrays_are_little_endian() {
        let f32_bytes: Vec<u8> = [1.5f32, -2.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(deq(GgmlType::F32, &f32_bytes, 2), [1.5, -2.25]);
        assert_eq!(
            deq(GgmlType::F16, &[0x00, 0x3c, 0x00, 0xc0], 2),
            [1.0, -2.0]
        );
        assert_eq!(
            deq(GgmlType::BF16, &[0x80, 0x3f, 0x40, 0xc0], 2),
            [1.0, -3.0]
        );
    }

    #[test]
    fn q8_0_block() {
        // d = 0.5 (f16 0x3800); q_j = j - 16 except the extremes.
        let mut block = vec![0x00, 0x38];
        let mut want = Vec::new();
        for j in 0..32i32 {
            let q = match j {
                0 => -128,
                31 => 127,
                _ => j - 16,
            };
            block.push(q as i8 as u8);
            want.push(q as f32 * 0.5);
        }
        assert_eq!(want[0], -64.0);
        assert_eq!(want[31], 63.5);
        assert_eq!(deq(GgmlType::Q8_0, &block, 32), want);
    }

    #[test]
    fn q4_0_block_nibble_order() {
        // d = 2.0 (f16 0x4000); byte j holds low nibble j and high nibble 15 - j.
        let mut block = vec![0x00, 0x40];
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = deq(GgmlType::Q4_0, &block, 32);
        for j in 0..16 {
            assert_eq!(got[j], (j as f32 - 8.0) * 2.0, "value {j}");
            assert_eq!(got[j + 16], (7.0 - j as f32) * 2.0, "value {}", j + 16);
        }
        assert_eq!(got[0], -16.0);
        assert_eq!(got[16], 14.0);
    }

    #[test]
    fn q4_1_block_nibble_order() {
        // d = 0.25 (f16 0x3400), m = -1.0 (f16 0xbc00).
        let mut block = vec![0x00, 0x34, 0x00, 0xbc];
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = deq(GgmlType::Q4_1, &block, 32);
        for j in 0..16 {
            assert_eq!(got[j], j as f32 * 0.25 - 1.0, "value {j}");
            assert_eq!(
                got[j + 16],
                (15 - j) as f32 * 0.25 - 1.0,
                "value {}",
                j + 16
            );
        }
        assert_eq!(got[15], 2.75);
        assert_eq!(got[16], 2.75);
    }

    #[test]
    fn several_blocks_are_independent() {
        // Two Q4_0 blocks with different scales: the second must use its own d.
        let mut bytes = vec![0x00, 0x3c];
        bytes.extend([0x99u8; 16]); // every nibble 9 -> 1 * d
        bytes.extend([0x00, 0xc0]);
        bytes.extend([0x00u8; 16]); // every nibble 0 -> -8 * d
        let got = deq(GgmlType::Q4_0, &bytes, 64);
        assert!(got[..32].iter().all(|&x| x == 1.0));
        assert!(got[32..].iter().all(|&x| x == 16.0));
    }

    #[test]
    fn wrong_byte_counts_are_errors() {
        let mut out = vec![0f32; 32];
        let err = dequantize(GgmlType::Q4_1, &[0u8; 19], &mut out).unwrap_err();
        assert!(err.to_string().contains("need 20 bytes, got 19"), "{err}");
        let err = dequantize(GgmlType::F32, &[0u8; 129], &mut out).unwrap_err();
        assert!(err.to_string().contains("need 128 bytes, got 129"), "{err}");
        let mut odd = vec![0f32; 33];
        let err = dequantize(GgmlType::Q8_0, &[0u8; 68], &mut odd).unwrap_err();
        assert!(err.to_string().contains("not a whole number"), "{err}");
        let mut empty: [f32; 0] = [];
        dequantize(GgmlType::Q4_0, &[], &mut empty).unwrap();
        assert!(dequantize(GgmlType::Q4_0, &[0], &mut empty).is_err());
    }
}
