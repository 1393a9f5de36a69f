//! bf16 weights packed for a broadcast `vdpbf16ps` kernel, and that kernel.
//!
//! The row-major kernel ([`super::simd`]) takes dot products: each accumulator holds 16 partial sums
//! of one (weight row, activation row) pair, reduced across lanes at the end of each tile. With 576
//! columns that reduction, the tile edges and the dispatch held the matmul of 16 activation rows at
//! 55-73% of the arithmetic peak with the weights in cache (docs/performance.md, "Packed weights").
//!
//! Packed, each lane of an accumulator is one output row: a vector holds 16 weight rows at two
//! adjacent columns (a bf16 pair), `vdpbf16ps` multiplies it with one activation pair broadcast to every
//! lane, and the accumulator ends as 16 finished outputs. No reduction, and a whole tile of weights is
//! one contiguous stream.
//!
//! Layout: rows in tiles of [`TILE_ROWS`] (4 blocks of 16); within a tile, for each column pair, the
//! 4 blocks' 64-byte vectors one after another (lane `i` of block `b` holds row `16 b + i`, its even
//! column in the low half). A tile is `TILE_ROWS * 2 * pairs` values; rows past `out` and the column
//! past an odd `k` are zero. The values start on a cache line, so each block's vector is one line;
//! threads split the rows by whole tiles.
//!
//! Each output is one lane summed over the column pairs in order, whatever the number of activation
//! rows or the split across threads: batch invariance holds as for the row-major kernels.

#![allow(clippy::needless_range_loop)] // index loops over register tiles read clearer

use std::collections::TryReserveError;
use std::vec::Vec;

/// Rows per vector: one AVX-512 register of f32 outputs.
pub(crate) const BLOCK_ROWS: usize = 16;
/// Blocks per tile: the register tile holds 4 weight vectors and 4 x 7 accumulators.
pub(crate) const TILE_BLOCKS: usize = 4;
/// Rows per tile.
pub(crate) const TILE_ROWS: usize = BLOCK_ROWS * TILE_BLOCKS;
/// Alignment of the packed values in bytes: a cache line, so each block's vector is one line.
const ALIGN_BYTES: usize = 64;

/// A `[out, k]` bf16 matrix in the packed layout of this module (see the module docs).
pub struct PackedBf16 {
    /// Backing store; the packed values start at `start` (64-byte aligned).
    data: Vec<u16>,
    start: usize,
    out: usize,
    k: usize,
}

impl PackedBf16 {
    /// Packs a row-major `[out, k]` bf16 matrix. Reports an allocation failure instead of aborting.
    ///
    /// # Panics
    /// If `w.len() != out * k`.
    pub fn try_pack(w: &[u16], out: usize, k: usize) -> Result<Self, TryReserveError> {
        assert_eq!(w.len(), out * k, "packed matrix shape");
        let pairs = k.div_ceil(2);
        let (data, start) = aligned_zeros(out.div_ceil(TILE_ROWS) * TILE_ROWS * 2 * pairs)?;
        let mut p = PackedBf16 {
            data,
            start,
            out,
            k,
        };
        for r in 0..out {
            for c in 0..k {
                let i = p.index(r, c);
                p.data[i] = w[r * k + c];
            }
        }
        Ok(p)
    }

    /// Output rows.
    pub fn out(&self) -> usize {
        self.out
    }

    /// Columns (input width).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Column pairs per row (`k` rounded up to even, halved): the activation row stride is twice this.
    pub fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }

    /// Bytes the packed values occupy (with the zero padding).
    pub fn bytes(&self) -> usize {
        self.len() * 2
    }

    /// Packed values, padding included (`data` less the alignment slack).
    fn len(&self) -> usize {
        self.data.len() - ALIGN_BYTES / 2
    }

    /// Position of row `r`, column `c` in `data`.
    fn index(&self, r: usize, c: usize) -> usize {
        let (tile, block, lane) = (r / TILE_ROWS, r % TILE_ROWS / BLOCK_ROWS, r % BLOCK_ROWS);
        self.start
            + tile * TILE_ROWS * 2 * self.pairs()
            + (c / 2) * TILE_ROWS * 2
            + block * BLOCK_ROWS * 2
            + lane * 2
            + c % 2
    }

    /// The bf16 value at row `r`, column `c`.
    ///
    /// # Panics
    /// If `r >= out` or `c >= k`.
    pub fn get(&self, r: usize, c: usize) -> u16 {
        assert!(r < self.out && c < self.k, "packed matrix index");
        self.data[self.index(r, c)]
    }

    /// The matrix back in row-major order. Reports an allocation failure instead of aborting.
    pub fn try_to_row_major(&self) -> Result<Vec<u16>, TryReserveError> {
        let mut w = Vec::new();
        w.try_reserve_exact(self.out * self.k)?;
        for r in 0..self.out {
            for c in 0..self.k {
                w.push(self.data[self.index(r, c)]);
            }
        }
        Ok(w)
    }

    /// A copy. Reports an allocation failure instead of aborting.
    pub fn try_clone(&self) -> Result<Self, TryReserveError> {
        let len = self.len();
        let (mut data, start) = aligned_zeros(len)?;
        data[start..start + len].copy_from_slice(&self.data[self.start..self.start + len]);
        Ok(PackedBf16 {
            data,
            start,
            out: self.out,
            k: self.k,
        })
    }

    /// The packed values from tile 0 on.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn values(&self) -> &[u16] {
        &self.data[self.start..]
    }
}

/// A zeroed store for `len` values that start on a cache line, and that start: `len` plus the slack
/// alignment may need. Reports an allocation failure instead of aborting.
fn aligned_zeros(len: usize) -> Result<(Vec<u16>, usize), TryReserveError> {
    let mut data = Vec::new();
    data.try_reserve_exact(len + ALIGN_BYTES / 2)?;
    data.resize(len + ALIGN_BYTES / 2, 0);
    let start = data.as_ptr().align_offset(ALIGN_BYTES).min(ALIGN_BYTES / 2);
    Ok((data, start))
}

/// `y[c, r] = w[r] . x[c]` for the rows of tiles `tiles` and activation rows `0..n`, without SIMD
/// (hosts or forced instruction sets other than AVX512_BF16). `x` rows have stride `2 * pairs`.
pub(crate) fn matmul_tiles_portable(
    w: &PackedBf16,
    x: &[f32],
    n: usize,
    out: usize,
    tiles: core::ops::Range<usize>,
    y: *mut f32,
) {
    let stride = 2 * w.pairs();
    let rows = tiles.start * TILE_ROWS..(tiles.end * TILE_ROWS).min(w.out);
    for c in 0..n {
        let xr = &x[c * stride..c * stride + stride];
        for r in rows.clone() {
            let mut s = 0f32;
            for p in 0..w.pairs() {
                let w0 = crate::num::bf16_to_f32(w.data[w.index(r, 2 * p)]);
                let w1 = if 2 * p + 1 < w.k {
                    crate::num::bf16_to_f32(w.data[w.index(r, 2 * p + 1)])
                } else {
                    0.0
                };
                s += w0 * xr[2 * p] + w1 * xr[2 * p + 1];
            }
            // SAFETY: c < n and r < out (the caller's n * out buffer); each (row, column) is written
            // by exactly one thread.
            unsafe { *y.add(c * out + r) = s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    //! The broadcast kernel: a tile's 4 blocks of weights by up to 7 activation rows, 28
    //! accumulators and 4 weight vectors in the 32 registers (the activation pairs are broadcast
    //! from memory).

    use core::arch::x86_64::*;

    use super::{BLOCK_ROWS, PackedBf16, TILE_BLOCKS, TILE_ROWS};

    /// Activation rows per register tile. 7 rather than 6: a 7-row verification (EAGLE-3's
    /// `6:3:2` tree) takes one pass over the weights instead of 6 + 1, 12.8 -> 12.0 ms per iteration
    /// (docs/performance.md, "Packed weights"), with 5-row and one-row forwards unchanged.
    const TILE_C: usize = 7;

    /// How far ahead of the weights being read the first activation tile prefetches, in bf16 values
    /// (3 KB). On AMD Zen 4 (docs/performance.md, "Packed weights"): for one activation row, 2-4 KB
    /// into L2 beat 8 KB and an L1 prefetch, which there again slowed the stream; for several rows a
    /// non-temporal prefetch made 5- and 7-row verifications 2-15% faster over two A/B runs (less
    /// reused data evicted by the weight stream), while for one row it made decoding 9% slower.
    /// Prefetching the next tile over every activation tile instead of the first measured no faster
    /// at 16 rows and 15% slower at one.
    const PREFETCH_AHEAD: usize = 1536;

    /// An unaligned `i32` read (two bf16 values) without `read_unaligned`'s debug-build checks (see
    /// `simd::load`).
    #[repr(C, packed)]
    #[derive(Clone, Copy)]
    struct Unaligned(i32);

    /// One register tile: the 4 blocks of the tile at `w` times activation rows `0..C` from `x`
    /// (stride `stride`), written to `y` (row stride `out`) for the first `valid` rows only. With
    /// `PREFETCH`, prefetches the lines [`PREFETCH_AHEAD`] values ahead.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const C: usize, const PREFETCH: bool>(
        w: *const u16,
        pairs: usize,
        x: *const u16,
        stride: usize,
        y: *mut f32,
        out: usize,
        valid: usize,
    ) {
        const B: usize = TILE_BLOCKS;
        // SAFETY (whole body): the caller guarantees `pairs` column pairs of a whole tile from `w`,
        // C activation rows of `stride >= 2 * pairs` values, and C output rows of `out` values from
        // `y` with `valid` writable columns. Prefetches never fault.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); C]; B];
            for p in 0..pairs {
                let wp = w.add(p * TILE_ROWS * 2);
                let mut wv = [_mm512_setzero_si512(); B];
                for b in 0..B {
                    wv[b] = _mm512_loadu_si512(wp.add(b * BLOCK_ROWS * 2) as *const __m512i);
                }
                if PREFETCH {
                    for b in 0..B {
                        let ahead =
                            wp.wrapping_add(PREFETCH_AHEAD + b * BLOCK_ROWS * 2) as *const i8;
                        // One row (plain decoding) into L2; several rows non-temporally, which
                        // keeps the weights from evicting what the verification and the drafter
                        // reuse (see PREFETCH_AHEAD).
                        if C == 1 {
                            _mm_prefetch::<_MM_HINT_T1>(ahead);
                        } else {
                            _mm_prefetch::<_MM_HINT_NTA>(ahead);
                        }
                    }
                }
                for c in 0..C {
                    let pair = (*(x.add(c * stride + 2 * p) as *const Unaligned)).0;
                    let xb: __m512bh = core::mem::transmute(_mm512_set1_epi32(pair));
                    for b in 0..B {
                        let wb: __m512bh = core::mem::transmute(wv[b]);
                        acc[b][c] = _mm512_dpbf16_ps(acc[b][c], wb, xb);
                    }
                }
            }
            for b in 0..B {
                let rows = valid.saturating_sub(b * BLOCK_ROWS).min(BLOCK_ROWS);
                for c in 0..C {
                    let dst = y.add(c * out + b * BLOCK_ROWS);
                    if rows == BLOCK_ROWS {
                        _mm512_storeu_ps(dst, acc[b][c]);
                    } else if rows > 0 {
                        _mm512_mask_storeu_ps(dst, ((1u32 << rows) - 1) as u16, acc[b][c]);
                    }
                }
            }
        }
    }

    /// `y[c, r] = w[r] . x[c]` for the rows of the tiles `tiles` (of [`TILE_ROWS`]) and activation
    /// rows `0..n`; `x` holds bf16 rows of stride `2 * w.pairs()`. Per tile: activation tiles of
    /// [`TILE_C`] rows, then the remainder; only the first streams the weights from memory (and
    /// prefetches), the later ones find them in L2.
    ///
    /// # Safety
    /// AVX-512F/BW and AVX512_BF16 are available; `x` holds `n` rows; `y` holds `n * out` values with
    /// `w.out() <= out`; no other thread writes the rows of `tiles`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(crate) unsafe fn matmul_tiles(
        w: &PackedBf16,
        x: &[u16],
        n: usize,
        out: usize,
        tiles: core::ops::Range<usize>,
        y: *mut f32,
    ) {
        let (pairs, stride) = (w.pairs(), 2 * w.pairs());
        debug_assert!(x.len() >= n * stride && tiles.end * TILE_ROWS < w.out() + TILE_ROWS);
        let values = w.values().as_ptr();
        for t in tiles {
            let row0 = t * TILE_ROWS;
            // SAFETY: tile t lies inside the packed values (padded to whole tiles); its rows are
            // this call's to write; the caller's contract covers x and y.
            unsafe {
                let wt = values.add(t * TILE_ROWS * stride);
                let yt = y.add(row0);
                let valid = w.out() - row0;
                let mut c = 0;
                while c + TILE_C <= n {
                    let (xc, yc) = (x.as_ptr().add(c * stride), yt.add(c * out));
                    if c == 0 {
                        tile::<TILE_C, true>(wt, pairs, xc, stride, yc, out, valid);
                    } else {
                        tile::<TILE_C, false>(wt, pairs, xc, stride, yc, out, valid);
                    }
                    c += TILE_C;
                }
                let (xc, yc, first) = (x.as_ptr().add(c * stride), yt.add(c * out), c == 0);
                macro_rules! rest {
                    ($($rows:literal)*) => {
                        match (n - c, first) {
                            $(
                                ($rows, true) => tile::<$rows, true>(wt, pairs, xc, stride, yc, out, valid),
                                ($rows, false) => tile::<$rows, false>(wt, pairs, xc, stride, yc, out, valid),
                            )*
                            _ => {}
                        }
                    };
                }
                rest!(1 2 3 4 5 6);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::{Isa, Matrix, f32_to_bf16, matmul_with};
    use crate::cpu::pool::Pool;
    use crate::num::bf16_to_f32;
    use std::vec;

    /// Deterministic bf16 weights in about [-0.5, 0.5).
    fn weights(out: usize, k: usize) -> Vec<u16> {
        (0..out * k)
            .map(|i| f32_to_bf16(((i * 7919 + 13) % 1000) as f32 / 1000.0 - 0.5))
            .collect()
    }

    fn activations(n: usize, k: usize) -> Vec<f32> {
        (0..n * k)
            .map(|i| ((i * 104_729 + 7) % 997) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn packing_keeps_every_value_and_pads_with_zeros() {
        for (out, k) in [(1, 1), (70, 33), (64, 576), (17, 2)] {
            let w = weights(out, k);
            let p = PackedBf16::try_pack(&w, out, k).unwrap();
            assert_eq!(p.try_to_row_major().unwrap(), w, "{out}x{k}");
            assert_eq!(p.get(out - 1, k - 1), w[out * k - 1]);
            assert_eq!(p.values().as_ptr() as usize % ALIGN_BYTES, 0);
            let c = p.try_clone().unwrap();
            assert_eq!(c.try_to_row_major().unwrap(), w);
            assert_eq!(c.values().as_ptr() as usize % ALIGN_BYTES, 0);
            // Padding (rows past out, the column past an odd k) is zero.
            let nonzero = p.values()[..p.bytes() / 2]
                .iter()
                .filter(|&&v| v != 0)
                .count();
            assert_eq!(nonzero, w.iter().filter(|&&v| v != 0).count());
        }
    }

    /// Every instruction set's packed matmul against an f64 reference, for shapes that end in
    /// partial blocks, partial tiles and an odd column, and every row count through two register
    /// tiles of activations.
    #[test]
    fn packed_matmul_matches_a_reference_on_every_instruction_set() {
        let pool = Pool::new(2);
        for (out, k) in [(70, 33), (200, 576), (16, 2), (130, 64)] {
            let w = weights(out, k);
            let m = Matrix::Bf16Packed(PackedBf16::try_pack(&w, out, k).unwrap());
            for n in [1, 2, 5, 6, 7, 12, 13, 17, 30] {
                let x = activations(n, k);
                for isa in Isa::available() {
                    let mut y = vec![f32::NAN; n * out];
                    matmul_with(isa, &pool, &m, out, k, &x, n, &mut y);
                    for c in 0..n {
                        for r in 0..out {
                            let (mut exact, mut scale) = (0f64, 0f64);
                            for j in 0..k {
                                let prod = bf16_to_f32(w[r * k + j]) as f64 * x[c * k + j] as f64;
                                exact += prod;
                                scale += prod.abs();
                            }
                            let got = y[c * out + r] as f64;
                            // bf16 activations on AVX512_BF16: 2^-8 relative per product.
                            assert!(
                                (got - exact).abs() <= 5e-3 * scale + 1e-6,
                                "{isa:?} {out}x{k} n={n} row {r} col {c}: {got} vs {exact}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// An activation row's outputs do not depend on how many rows share the call or on how threads
    /// split the weights: bit for bit.
    #[test]
    fn packed_matmul_is_batch_invariant() {
        let (out, k) = (200, 576);
        let m = Matrix::Bf16Packed(PackedBf16::try_pack(&weights(out, k), out, k).unwrap());
        let x = activations(17, k);
        for isa in Isa::available() {
            let one = Pool::new(1);
            let mut single = vec![0f32; 17 * out];
            for c in 0..17 {
                let row = &mut single[c * out..(c + 1) * out];
                matmul_with(isa, &one, &m, out, k, &x[c * k..(c + 1) * k], 1, row);
            }
            for threads in [1, 2, 3] {
                let pool = Pool::new(threads);
                for n in [2, 6, 7, 16, 17] {
                    let mut y = vec![0f32; n * out];
                    matmul_with(isa, &pool, &m, out, k, &x, n, &mut y);
                    let same = y
                        .iter()
                        .zip(&single)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{isa:?}, {threads} threads, {n} rows");
                }
            }
        }
    }

    #[test]
    fn try_pack_packs_only_bf16_weights_for_the_pair_kernel() {
        let (out, k) = (40, 10);
        let w = weights(out, k);
        let mut m = Matrix::Bf16(w.clone());
        let packed = m.try_pack(out, k).unwrap();
        assert_eq!(packed, Isa::detect() == Isa::Avx512Bf16);
        assert_eq!(matches!(m, Matrix::Bf16Packed(_)), packed);
        let back: Vec<f32> = w.iter().map(|&v| bf16_to_f32(v)).collect();
        assert_eq!(m.try_to_f32().unwrap(), back);
        let mut f = Matrix::F32(back.clone());
        assert!(!f.try_pack(out, k).unwrap());
        assert_eq!(f.try_to_f32().unwrap(), back);
    }
}
