//! x86-64 SIMD matmul kernels with compile-time register tiles: `R` weight rows times `C` activation
//! rows, all `R * C` accumulators in registers. Weight-row tiles are the outer loop so each tile is read
//! from memory once and reused from L1 for every activation tile (activations stay in L2).
//!
//! One generic tile loop serves every instruction set; a [`Kernel`] says how one step of the inner
//! product loads and multiplies, and which register accumulates:
//! - AVX-512: f32 x f32, bf16 weights widened to f32, or bf16 x bf16 pairs with `vdpbf16ps`;
//! - AVX2 + FMA (hosts without AVX-512, such as AMD Zen 2/3): f32 x f32 and bf16 weights widened to f32.
//!
//! Each output is one accumulator summed over the columns in order, then reduced, so a row's result
//! does not depend on how many rows were multiplied with it (batch invariance).

#![allow(clippy::needless_range_loop)] // index loops over register tiles read clearer

use core::arch::x86_64::*;

/// One inner-product step over `STEP` columns.
pub trait Kernel {
    /// Weight element.
    type W;
    /// Activation element.
    type X;
    /// Operand register.
    type V: Copy;
    /// Accumulator register.
    type Acc: Copy;
    /// Columns per step.
    const STEP: usize;
    /// # Safety
    /// The target features are available.
    unsafe fn zero() -> Self::Acc;
    /// # Safety
    /// `p` points to `STEP` readable weights; the target features are available.
    unsafe fn load_w(p: *const Self::W) -> Self::V;
    /// # Safety
    /// `p` points to `STEP` readable activations; the target features are available.
    unsafe fn load_x(p: *const Self::X) -> Self::V;
    /// # Safety
    /// The target features are available.
    unsafe fn fma(acc: Self::Acc, w: Self::V, x: Self::V) -> Self::Acc;
    /// # Safety
    /// The target features are available.
    unsafe fn reduce(acc: Self::Acc) -> f32;
    /// # Safety
    /// Both pointers are readable.
    unsafe fn product(w: *const Self::W, x: *const Self::X) -> f32;
}

// The scalar tail's bf16 widening: the same `bits << 16` as the vector loads.
use crate::num::bf16_to_f32 as bf16;

/// A value read through a pointer of alignment 1.
#[repr(C, packed)]
struct Unaligned<T>(T);

/// Unaligned load of one vector (or any `Copy` value) from `p`: one `vmovups` in every profile.
/// The `loadu` intrinsics copy through `ptr::copy_nonoverlapping`, whose precondition check (on in
/// test builds, which keep debug assertions) takes the vector's address and sends every load through
/// the stack: the test profile's matmul ran three times slower than release.
///
/// # Safety
/// `p` points to `size_of::<T>()` readable bytes.
#[inline(always)]
unsafe fn load<T: Copy>(p: *const T) -> T {
    // SAFETY: caller contract; a packed field is read by copy, with no alignment requirement.
    unsafe { (*(p as *const Unaligned<T>)).0 }
}

/// One `R x C` tile: `y[c][r] = w[r] . x[c]` over `k` columns. With `PREFETCH`, also pulls the
/// next `R` weight rows toward L1 while this tile computes, so the memory stream overlaps the
/// arithmetic (used on the first activation tile of each weight tile).
#[inline(always)]
unsafe fn tile<K: Kernel, const R: usize, const C: usize, const PREFETCH: bool>(
    w: *const K::W,
    x: *const K::X,
    k: usize,
    y: *mut f32,
    out: usize,
) {
    // SAFETY (whole body): the caller guarantees R rows of w and C rows of x of k values each, and
    // a y with C rows of stride `out` and R columns from `y`. Prefetches never fault.
    unsafe {
        let mut acc = [[K::zero(); C]; R];
        let k_vec = k / K::STEP * K::STEP;
        let mut j = 0;
        while j < k_vec {
            let mut wv = [K::load_w(w.add(j)); R];
            for r in 1..R {
                wv[r] = K::load_w(w.add(r * k + j));
            }
            if PREFETCH {
                for r in 0..R {
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((R + r) * k + j) as *const i8);
                }
            }
            for c in 0..C {
                let xv = K::load_x(x.add(c * k + j));
                for r in 0..R {
                    acc[r][c] = K::fma(acc[r][c], wv[r], xv);
                }
            }
            j += K::STEP;
        }
        for r in 0..R {
            for c in 0..C {
                let mut s = K::reduce(acc[r][c]);
                for jj in k_vec..k {
                    s += K::product(w.add(r * k + jj), x.add(c * k + jj));
                }
                *y.add(c * out + r) = s;
            }
        }
    }
}

/// One tile of `C` activation rows (`C` < 6, a remainder), with or without the prefetch.
#[inline(always)]
unsafe fn remainder_tile<K: Kernel, const R: usize>(
    c: usize,
    first: bool,
    w: *const K::W,
    x: *const K::X,
    k: usize,
    y: *mut f32,
    out: usize,
) {
    // SAFETY: forwarded caller contract (c rows of x and y).
    unsafe {
        match (c, first) {
            (0, _) => {}
            (1, true) => tile::<K, R, 1, true>(w, x, k, y, out),
            (1, false) => tile::<K, R, 1, false>(w, x, k, y, out),
            (2, true) => tile::<K, R, 2, true>(w, x, k, y, out),
            (2, false) => tile::<K, R, 2, false>(w, x, k, y, out),
            (3, true) => tile::<K, R, 3, true>(w, x, k, y, out),
            (3, false) => tile::<K, R, 3, false>(w, x, k, y, out),
            (4, true) => tile::<K, R, 4, true>(w, x, k, y, out),
            (4, false) => tile::<K, R, 4, false>(w, x, k, y, out),
            (_, true) => tile::<K, R, 5, true>(w, x, k, y, out),
            (_, false) => tile::<K, R, 5, false>(w, x, k, y, out),
        }
    }
}

/// Activation tiles of `C` rows (and the remainder) for one tile of `R` weight rows.
#[inline(always)]
unsafe fn row_tile<K: Kernel, const R: usize, const C: usize>(
    w: *const K::W,
    x: *const K::X,
    n: usize,
    k: usize,
    y: *mut f32,
    out: usize,
) {
    // SAFETY: forwarded caller contract; every tile stays inside the n rows.
    unsafe {
        let mut c = 0;
        while c + C <= n {
            let (xc, yc) = (x.add(c * k), y.add(c * out));
            if c == 0 {
                tile::<K, R, C, true>(w, xc, k, yc, out);
            } else {
                tile::<K, R, C, false>(w, xc, k, yc, out);
            }
            c += C;
        }
        remainder_tile::<K, R>(n - c, c == 0, w, x.add(c * k), k, y.add(c * out), out);
    }
}

/// `y[c, r] = w[r] . x[c]` for `r` in `rows`, `c` in `0..n`, with register tiles of `R` weight rows
/// by `C` activation rows (`R * C` accumulators, and `R * 5` in the remainder tiles, must fit the
/// register file).
///
/// # Safety
/// The kernel's target features are available (the callers below enable them); `w` holds
/// `rows.end * k` elements, `x` holds `n * k`, `y` holds `n * out` with `rows.end <= out`, and no
/// other thread writes these columns.
#[inline(always)]
unsafe fn rows_impl<K: Kernel, const R: usize, const C: usize>(
    w: &[K::W],
    k: usize,
    x: &[K::X],
    n: usize,
    out: usize,
    rows: core::ops::Range<usize>,
    y: *mut f32,
) {
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    // SAFETY: caller contract; tiles stay within `rows`.
    unsafe {
        let mut r = rows.start;
        while r + R <= rows.end {
            row_tile::<K, R, C>(wp.add(r * k), xp, n, k, y.add(r), out);
            r += R;
        }
        while r < rows.end {
            row_tile::<K, 1, C>(wp.add(r * k), xp, n, k, y.add(r), out);
            r += 1;
        }
    }
}

/// AVX-512 kernels (32 vector registers: 4 x 6 tiles).
pub mod avx512 {
    use super::*;

    /// f32 weights and activations.
    pub struct F32;
    /// bf16 weights widened to f32 (exact), f32 activations.
    pub struct Bf16;
    /// bf16 weights and bf16-rounded activations, products summed in f32 by `vdpbf16ps`.
    pub struct Bf16Dot;

    impl Kernel for F32 {
        type W = f32;
        type X = f32;
        type V = __m512;
        type Acc = __m512;
        const STEP: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load_w(p: *const f32) -> __m512 {
            // SAFETY: caller contract.
            unsafe { load(p as *const __m512) }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32) -> __m512 {
            // SAFETY: caller contract.
            unsafe { load(p as *const __m512) }
        }
        #[inline(always)]
        unsafe fn fma(acc: __m512, w: __m512, x: __m512) -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_fmadd_ps(w, x, acc) }
        }
        #[inline(always)]
        unsafe fn reduce(acc: __m512) -> f32 {
            // SAFETY: caller contract.
            unsafe { _mm512_reduce_add_ps(acc) }
        }
        #[inline(always)]
        unsafe fn product(w: *const f32, x: *const f32) -> f32 {
            // SAFETY: caller contract.
            unsafe { *w * *x }
        }
    }

    impl Kernel for Bf16 {
        type W = u16;
        type X = f32;
        type V = __m512;
        type Acc = __m512;
        const STEP: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load_w(p: *const u16) -> __m512 {
            // SAFETY: caller contract; bf16 -> f32 is a 16-bit left shift.
            unsafe {
                let h = load(p as *const __m256i);
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32) -> __m512 {
            // SAFETY: caller contract.
            unsafe { load(p as *const __m512) }
        }
        #[inline(always)]
        unsafe fn fma(acc: __m512, w: __m512, x: __m512) -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_fmadd_ps(w, x, acc) }
        }
        #[inline(always)]
        unsafe fn reduce(acc: __m512) -> f32 {
            // SAFETY: caller contract.
            unsafe { _mm512_reduce_add_ps(acc) }
        }
        #[inline(always)]
        unsafe fn product(w: *const u16, x: *const f32) -> f32 {
            // SAFETY: caller contract.
            unsafe { bf16(*w) * *x }
        }
    }

    impl Kernel for Bf16Dot {
        type W = u16;
        type X = u16;
        type V = __m512bh;
        type Acc = __m512;
        const STEP: usize = 32;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load_w(p: *const u16) -> __m512bh {
            // SAFETY: caller contract (64 readable bytes).
            unsafe { load(p as *const __m512bh) }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const u16) -> __m512bh {
            // SAFETY: as above.
            unsafe { load(p as *const __m512bh) }
        }
        #[inline(always)]
        unsafe fn fma(acc: __m512, w: __m512bh, x: __m512bh) -> __m512 {
            // SAFETY: caller contract (avx512bf16).
            unsafe { _mm512_dpbf16_ps(acc, w, x) }
        }
        #[inline(always)]
        unsafe fn reduce(acc: __m512) -> f32 {
            // SAFETY: caller contract.
            unsafe { _mm512_reduce_add_ps(acc) }
        }
        #[inline(always)]
        unsafe fn product(w: *const u16, x: *const u16) -> f32 {
            // SAFETY: caller contract.
            unsafe { bf16(*w) * bf16(*x) }
        }
    }

    /// [`rows_impl`] for f32 or widened-bf16 kernels. # Safety: as `rows_impl`, with AVX-512F/BW, FMA.
    #[target_feature(enable = "avx512f,avx512bw,fma")]
    pub unsafe fn matmul_rows<K: Kernel>(
        w: &[K::W],
        k: usize,
        x: &[K::X],
        n: usize,
        out: usize,
        rows: core::ops::Range<usize>,
        y: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe { rows_impl::<K, 4, 6>(w, k, x, n, out, rows, y) }
    }

    /// [`rows_impl`] with `vdpbf16ps`. # Safety: as `rows_impl`, with AVX-512F/BW and AVX512_BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn matmul_rows_bf16_dot(
        w: &[u16],
        k: usize,
        x: &[u16],
        n: usize,
        out: usize,
        rows: core::ops::Range<usize>,
        y: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe { rows_impl::<Bf16Dot, 4, 6>(w, k, x, n, out, rows, y) }
    }

    /// `acc[q, 0..64] += sum_j p[q, j] * v[j, 0..64]` for `Q` query rows starting at `q0`: a register
    /// tile of `Q x 4` accumulators, one pass over the value rows.
    #[inline(always)]
    unsafe fn weighted_block_64<const Q: usize>(
        p: *const f32,
        len: usize,
        v: *const f32,
        acc: *mut f32,
    ) {
        // SAFETY: the caller guarantees Q rows of p (len wide), len rows of v (64 wide), Q rows of acc.
        unsafe {
            let mut a = [[_mm512_setzero_ps(); 4]; Q];
            for j in 0..len {
                let vj = [
                    load(v.add(j * 64) as *const __m512),
                    load(v.add(j * 64 + 16) as *const __m512),
                    load(v.add(j * 64 + 32) as *const __m512),
                    load(v.add(j * 64 + 48) as *const __m512),
                ];
                for q in 0..Q {
                    let pb = _mm512_set1_ps(*p.add(q * len + j));
                    for d in 0..4 {
                        a[q][d] = _mm512_fmadd_ps(pb, vj[d], a[q][d]);
                    }
                }
            }
            for q in 0..Q {
                for d in 0..4 {
                    let dst = acc.add(q * 64 + d * 16);
                    _mm512_storeu_ps(dst, _mm512_add_ps(load(dst as *const __m512), a[q][d]));
                }
            }
        }
    }

    /// Attention's weighted sum for head_dim 64. # Safety: AVX-512F and FMA available; `p` holds
    /// `m * len`, `v` holds `len * 64`, `acc` holds `m * 64`.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn weighted_rows_64(p: &[f32], m: usize, len: usize, v: &[f32], acc: &mut [f32]) {
        let (pp, vp, ap) = (p.as_ptr(), v.as_ptr(), acc.as_mut_ptr());
        // SAFETY: caller contract; each block stays within the m rows.
        unsafe {
            let mut q = 0;
            while q + 6 <= m {
                weighted_block_64::<6>(pp.add(q * len), len, vp, ap.add(q * 64));
                q += 6;
            }
            match m - q {
                0 => {}
                1 => weighted_block_64::<1>(pp.add(q * len), len, vp, ap.add(q * 64)),
                2 => weighted_block_64::<2>(pp.add(q * len), len, vp, ap.add(q * 64)),
                3 => weighted_block_64::<3>(pp.add(q * len), len, vp, ap.add(q * 64)),
                4 => weighted_block_64::<4>(pp.add(q * len), len, vp, ap.add(q * 64)),
                _ => weighted_block_64::<5>(pp.add(q * len), len, vp, ap.add(q * 64)),
            }
        }
    }
}

/// AVX2 + FMA kernels (16 vector registers: 4 x 2 or 2 x 6 tiles) for hosts without AVX-512.
pub mod avx2 {
    use super::*;

    /// f32 weights and activations.
    pub struct F32;
    /// bf16 weights widened to f32 (exact), f32 activations.
    pub struct Bf16;

    #[inline(always)]
    unsafe fn reduce256(acc: __m256) -> f32 {
        // SAFETY: AVX available (caller contract).
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s)))
        }
    }

    impl Kernel for F32 {
        type W = f32;
        type X = f32;
        type V = __m256;
        type Acc = __m256;
        const STEP: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            // SAFETY: caller contract.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load_w(p: *const f32) -> __m256 {
            // SAFETY: caller contract.
            unsafe { load(p as *const __m256) }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32) -> __m256 {
            // SAFETY: caller contract.
            unsafe { load(p as *const __m256) }
        }
        #[inline(always)]
        unsafe fn fma(acc: __m256, w: __m256, x: __m256) -> __m256 {
            // SAFETY: caller contract.
            unsafe { _mm256_fmadd_ps(w, x, acc) }
        }
        #[inline(always)]
        unsafe fn reduce(acc: __m256) -> f32 {
            // SAFETY: caller contract.
            unsafe { reduce256(acc) }
        }
        #[inline(always)]
        unsafe fn product(w: *const f32, x: *const f32) -> f32 {
            // SAFETY: caller contract.
            unsafe { *w * *x }
        }
    }

    impl Kernel for Bf16 {
        type W = u16;
        type X = f32;
        type V = __m256;
        type Acc = __m256;
        const STEP: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            // SAFETY: caller contract.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load_w(p: *const u16) -> __m256 {
            // SAFETY: caller contract; bf16 -> f32 is a 16-bit left shift.
            unsafe {
                let h = load(p as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32) -> __m256 {
            // SAFETY: caller contract.
            unsafe { load(p as *const __m256) }
        }
        #[inline(always)]
        unsafe fn fma(acc: __m256, w: __m256, x: __m256) -> __m256 {
            // SAFETY: caller contract.
            unsafe { _mm256_fmadd_ps(w, x, acc) }
        }
        #[inline(always)]
        unsafe fn reduce(acc: __m256) -> f32 {
            // SAFETY: caller contract.
            unsafe { reduce256(acc) }
        }
        #[inline(always)]
        unsafe fn product(w: *const u16, x: *const f32) -> f32 {
            // SAFETY: caller contract.
            unsafe { bf16(*w) * *x }
        }
    }

    /// [`rows_impl`] for f32 or widened-bf16 kernels. One or two activation rows (decoding) take
    /// 4 x 2 tiles: four weight streams in flight. More rows take 2 x 6 tiles, which widen each weight
    /// vector once per 6 FMAs instead of once per 2. # Safety: as `rows_impl`, with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matmul_rows<K: Kernel>(
        w: &[K::W],
        k: usize,
        x: &[K::X],
        n: usize,
        out: usize,
        rows: core::ops::Range<usize>,
        y: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe {
            if n <= 2 {
                rows_impl::<K, 4, 2>(w, k, x, n, out, rows, y)
            } else {
                rows_impl::<K, 2, 6>(w, k, x, n, out, rows, y)
            }
        }
    }
}
