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
        if n % self.block_len() != 0 {
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
    let _ = (ty, bytes, out);
    Err(Error::Unsupported("dequantize: not written yet".into()))
}
