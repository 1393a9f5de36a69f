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
    /// Operand pairs per step: a step's columns may be multiplied in `PARTS` passes, each with its own
    /// weight and activation operands (see [`avx512::Bf16Split`]).
    const PARTS: usize = 1;
    /// # Safety
    /// The target features are available.
    unsafe fn zero() -> Self::Acc;
    /// Part `part` of the weights of the step at `p`.
    ///
    /// # Safety
    /// `p` points to `STEP` readable weights; the target features are available.
    unsafe fn load_w(p: *const Self::W, part: usize) -> Self::V;
    /// Part `part` of the activations of the step at `p`.
    ///
    /// # Safety
    /// `p` points to `STEP` readable activations; the target features are available.
    unsafe fn load_x(p: *const Self::X, part: usize) -> Self::V;
    /// # Safety
    /// The target features are available.
    unsafe fn fma(acc: Self::Acc, w: Self::V, x: Self::V) -> Self::Acc;
    /// # Safety
    /// The target features are available.
    unsafe fn reduce(acc: Self::Acc) -> f32;
    /// Four accumulators reduced at once; each sum bit-identical to [`Kernel::reduce`]'s (same
    /// pairing of lanes), so how a tile groups its accumulators cannot change a result.
    ///
    /// # Safety
    /// The target features are available.
    #[inline(always)]
    unsafe fn reduce4(acc: [Self::Acc; 4]) -> [f32; 4] {
        // SAFETY: caller contract.
        unsafe { acc.map(|a| Self::reduce(a)) }
    }
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

/// How many weight tiles ahead the first activation tile prefetches, into L2 (`_MM_HINT_T1`).
/// On AMD Zen 4 the previous choice, the next tile into L1 (`_MM_HINT_T0`), held one-row decoding at
/// 0.5-0.6 of the bandwidth floor: an L1 prefetch occupies one of the core's few L1 miss buffers, and
/// one tile ahead is issued only tens of nanoseconds before it is needed. Into L2, 2-6 tiles ahead,
/// plain decoding ran 30-40% faster there (docs/performance.md, "AMD Zen 4"); on the Intel host
/// hint and distance made no measurable difference.
const PREFETCH_TILES: usize = 4;

/// One `R x C` tile: `y[c][r] = w[r] . x[c]` over `k` columns. With `PREFETCH`, also pulls the
/// weight rows [`PREFETCH_TILES`] tiles ahead toward L2 while this tile computes, so the memory
/// stream overlaps the arithmetic (used on the first activation tile of each weight tile).
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
        let k_vec = k / K::STEP * K::STEP;
        if k_vec == 0 {
            // No whole step: scalar products only (the same sums as the epilogue below computes
            // from zero accumulators). A separate path, so that below the vector loop runs at least
            // once: otherwise the compiler kept a zeroed copy of the whole tile on the stack for the
            // loop-skipped case (a `memset` per tile call, 7% of an 8-row verification on Zen 4).
            return scalar_tile::<K>(w, x, k, y, out, R, C);
        }
        let mut acc = [[K::zero(); C]; R];
        let mut j = 0;
        while j < k_vec {
            for part in 0..K::PARTS {
                let mut wv = [K::load_w(w.add(j), part); R];
                for r in 1..R {
                    wv[r] = K::load_w(w.add(r * k + j), part);
                }
                // After the loads, as before the split kernel existed: placing the prefetches first
                // made the compiler spill accumulators of the 6-row tiles (1.4x slower at 16 rows).
                if PREFETCH && part == 0 {
                    for r in 0..R {
                        let ahead = (PREFETCH_TILES * R + r) * k + j;
                        _mm_prefetch::<_MM_HINT_T1>(w.wrapping_add(ahead) as *const i8);
                    }
                }
                for c in 0..C {
                    let xv = K::load_x(x.add(c * k + j), part);
                    for r in 0..R {
                        acc[r][c] = K::fma(acc[r][c], wv[r], xv);
                    }
                }
            }
            j += K::STEP;
        }
        // Accumulators four at a time: a batched reduction shares its shuffles (5% at 16 rows; with
        // k = 64, as in attention scores, reducing costs more than the products). Written per weight
        // row without a temporary array: collecting the sums first made the compiler spill.
        for r in 0..R {
            let mut c = 0;
            while c + 4 <= C {
                let s4 = K::reduce4([acc[r][c], acc[r][c + 1], acc[r][c + 2], acc[r][c + 3]]);
                for g in 0..4 {
                    let mut s = s4[g];
                    for jj in k_vec..k {
                        s += K::product(w.add(r * k + jj), x.add((c + g) * k + jj));
                    }
                    *y.add((c + g) * out + r) = s;
                }
                c += 4;
            }
            while c < C {
                let mut s = K::reduce(acc[r][c]);
                for jj in k_vec..k {
                    s += K::product(w.add(r * k + jj), x.add(c * k + jj));
                }
                *y.add(c * out + r) = s;
                c += 1;
            }
        }
    }
}

/// A tile whose `k` is shorter than one vector step: scalar products, summed in the order the vector
/// tile's epilogue sums its tail (from a zero accumulator, so the results are the same). Kept out of
/// line: it is never hot.
///
/// # Safety
/// As [`tile`], with `r_n` weight rows and `c_n` activation rows.
#[cold]
#[inline(never)]
unsafe fn scalar_tile<K: Kernel>(
    w: *const K::W,
    x: *const K::X,
    k: usize,
    y: *mut f32,
    out: usize,
    r_n: usize,
    c_n: usize,
) {
    // SAFETY: caller contract.
    unsafe {
        for c in 0..c_n {
            for r in 0..r_n {
                let mut s = 0.0f32;
                for jj in 0..k {
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

/// Copies `n` rows of `k` activations from `x` into `out` in split order: within each whole step of
/// 32 columns, the 16 even columns, then the 16 odd ones; the columns after the last whole step stay
/// in order. ([`avx512::Bf16Split`] reads this order.)
pub fn split_activations(x: &[f32], n: usize, k: usize, out: &mut std::vec::Vec<f32>) {
    out.clear();
    out.extend_from_slice(&x[..n * k]);
    let whole = k / 32 * 32;
    for (dst, src) in out.chunks_exact_mut(k).zip(x.chunks_exact(k)) {
        for (d, s) in dst[..whole]
            .chunks_exact_mut(32)
            .zip(src[..whole].chunks_exact(32))
        {
            for i in 0..16 {
                d[i] = s[2 * i];
                d[16 + i] = s[2 * i + 1];
            }
        }
    }
}

/// The probe loop of [`peak_probe`] in assembly (compiled from intrinsics, the loop came out with
/// register moves and spills between the multiply-adds): broadcasts 1.0 and 1e-9 into registers `$w`
/// and `$x` of kind `$reg` (`zmm` or `ymm`), zeroes the listed accumulator registers with `$zero` (no
/// subnormals, which take slow paths), then runs `$iters` rounds of `$insn acc, w, x` on each. Returns
/// lane 0 of register 0 (every caller lists it). Every vector register is declared clobbered
/// (`clobber_abi("C")`: on x86-64 all of them are caller-saved).
///
/// Safety: use inside an `unsafe` block of a function whose target features provide `$insn` and
/// `$zero` on `$reg` registers.
macro_rules! peak_loop {
    ($insn:literal, $zero:literal, $reg:literal, $w:literal, $x:literal, $iters:expr,
     $($acc:literal)+) => {{
        let iters: usize = $iters;
        let ops = [1.0f32, 1e-9];
        let mut first = [0f32; 16];
        if iters > 0 {
            core::arch::asm!(
                concat!("vbroadcastss ", $reg, $w, ", dword ptr [{ops}]"),
                concat!("vbroadcastss ", $reg, $x, ", dword ptr [{ops} + 4]"),
                $(concat!($zero, " ", $reg, $acc, ", ", $reg, $acc, ", ", $reg, $acc),)+
                "2:",
                $(concat!($insn, " ", $reg, $acc, ", ", $reg, $w, ", ", $reg, $x),)+
                "dec rcx",
                "jnz 2b",
                concat!("vmovups [{first}], ", $reg, "0"),
                ops = in(reg) ops.as_ptr(),
                first = in(reg) first.as_mut_ptr(),
                inout("rcx") iters => _,
                clobber_abi("C"),
                options(nostack),
            );
        }
        first[0]
    }};
}

/// The arithmetic peak probe: `iters` rounds of 24 independent multiply-adds (the tile's accumulator
/// count) of the kind the matmul runs, `vdpbf16ps` with `pairs`, else f32 `vfmadd` (512-bit where
/// `wide`, else 256-bit), written in assembly so the compiler can neither fold nor spill them. Returns
/// one lane of one accumulator; the caller times the call. FLOP per round: 24 x 64 (pairs), 24 x 32
/// (512-bit FMA), 24 x 16 (256-bit: 12 registers, two passes).
///
/// # Safety
/// The instructions are available: AVX-512F (+ AVX512_BF16 with `pairs`) where `wide`, else AVX2 + FMA.
pub unsafe fn peak_probe(iters: usize, wide: bool, pairs: bool) -> f32 {
    // SAFETY: caller contract.
    unsafe {
        match (wide, pairs) {
            (true, true) => avx512::peak_dot(iters),
            (true, false) => avx512::peak_fma(iters),
            _ => avx2::peak_fma(iters),
        }
    }
}

/// AVX-512 kernels (32 vector registers: 4 x 6 tiles).
pub mod avx512 {
    use super::*;

    /// f32 weights and activations.
    pub struct F32;
    /// bf16 weights widened to f32 (exact) and f32 activations in split order: each step of 32
    /// columns holds the even columns, then the odd ones, so one 64-byte weight load widens to two f32
    /// vectors with one instruction each (`vpslld` for the even weights, `vpandd` for the odd).
    pub struct Bf16Split;
    /// bf16 weights and bf16-rounded activations, products summed in f32 by `vdpbf16ps`.
    pub struct Bf16Dot;

    /// Sum of 16 lanes: lanes `i` and `i + 8` first, then `i + 4`, `i + 2`, `i + 1` ([`reduce512x4`]
    /// pairs them the same way).
    #[inline(always)]
    unsafe fn reduce512(a: __m512) -> f32 {
        // SAFETY: AVX-512F available (caller contract).
        unsafe {
            let h = _mm256_add_ps(
                _mm512_castps512_ps256(a),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a))),
            );
            let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
            let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
            _mm_cvtss_f32(d) + _mm_cvtss_f32(_mm_shuffle_ps::<0b01>(d, d))
        }
    }

    /// [`reduce512`] of four registers with shared shuffles (about 4 instructions each instead of 8).
    #[inline(always)]
    unsafe fn reduce512x4(a: [__m512; 4]) -> [f32; 4] {
        // SAFETY: AVX-512F available (caller contract).
        unsafe {
            // Halves: [a lo8 | b lo8] + [a hi8 | b hi8] gives a's and b's lanes i + (i + 8).
            let pair = |x: __m512, y: __m512| {
                let lo = _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y);
                let hi = _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y);
                _mm512_add_ps(lo, hi)
            };
            let ab = pair(a[0], a[1]);
            let cd = pair(a[2], a[3]);
            // Quarters: 128-bit lanes [a0-3 b0-3 c0-3 d0-3] + [a4-7 b4-7 c4-7 d4-7].
            let lo = _mm512_shuffle_f32x4::<0b10_00_10_00>(ab, cd);
            let hi = _mm512_shuffle_f32x4::<0b11_01_11_01>(ab, cd);
            let q = _mm512_add_ps(lo, hi);
            // Within each 128-bit lane: (q0 + q2, q1 + q3), then their sum in element 0.
            let d = _mm512_add_ps(q, _mm512_permute_ps::<0b01_00_11_10>(q));
            let s = _mm512_add_ps(d, _mm512_permute_ps::<0b10_11_00_01>(d));
            let picked = _mm512_permutexvar_ps(
                _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
                s,
            );
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), _mm512_castps512_ps128(picked));
            out
        }
    }

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
        unsafe fn load_w(p: *const f32, _part: usize) -> __m512 {
            // SAFETY: caller contract.
            unsafe { load(p as *const __m512) }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32, _part: usize) -> __m512 {
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
            unsafe { reduce512(acc) }
        }
        #[inline(always)]
        unsafe fn reduce4(acc: [__m512; 4]) -> [f32; 4] {
            // SAFETY: caller contract.
            unsafe { reduce512x4(acc) }
        }
        #[inline(always)]
        unsafe fn product(w: *const f32, x: *const f32) -> f32 {
            // SAFETY: caller contract.
            unsafe { *w * *x }
        }
    }

    impl Kernel for Bf16Split {
        type W = u16;
        type X = f32;
        type V = __m512;
        type Acc = __m512;
        const STEP: usize = 32;
        const PARTS: usize = 2;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load_w(p: *const u16, part: usize) -> __m512 {
            // SAFETY: caller contract (64 readable bytes). Lane i holds weights 2i (low half) and
            // 2i + 1 (high half); a bf16 is the high half of its f32, so one shift or one mask widens
            // sixteen of them. Both parts load the same line; the compiler keeps one load.
            unsafe {
                let v = load(p as *const __m512i);
                if part == 0 {
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v))
                } else {
                    _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(-65536)))
                }
            }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32, part: usize) -> __m512 {
            // SAFETY: caller contract: a step of split activations is the 16 even columns, then the
            // 16 odd ones (see `split_activations`).
            unsafe { load(p.add(16 * part) as *const __m512) }
        }
        #[inline(always)]
        unsafe fn fma(acc: __m512, w: __m512, x: __m512) -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_fmadd_ps(w, x, acc) }
        }
        #[inline(always)]
        unsafe fn reduce(acc: __m512) -> f32 {
            // SAFETY: caller contract.
            unsafe { reduce512(acc) }
        }
        #[inline(always)]
        unsafe fn reduce4(acc: [__m512; 4]) -> [f32; 4] {
            // SAFETY: caller contract.
            unsafe { reduce512x4(acc) }
        }
        #[inline(always)]
        unsafe fn product(w: *const u16, x: *const f32) -> f32 {
            // SAFETY: caller contract (the columns after the last whole step are not split).
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
        unsafe fn load_w(p: *const u16, _part: usize) -> __m512bh {
            // SAFETY: caller contract (64 readable bytes).
            unsafe { load(p as *const __m512bh) }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const u16, _part: usize) -> __m512bh {
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
            unsafe { reduce512(acc) }
        }
        #[inline(always)]
        unsafe fn reduce4(acc: [__m512; 4]) -> [f32; 4] {
            // SAFETY: caller contract.
            unsafe { reduce512x4(acc) }
        }
        #[inline(always)]
        unsafe fn product(w: *const u16, x: *const u16) -> f32 {
            // SAFETY: caller contract.
            unsafe { bf16(*w) * bf16(*x) }
        }
    }

    /// [`rows_impl`] for f32 weights. # Safety: as `rows_impl`, with AVX-512F/BW and FMA.
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

    /// [`rows_impl`] for [`Bf16Split`]. Decoding (one or two activation rows) takes 4 x 2 tiles: four
    /// weight streams in flight (3 x 6 tiles decoded 5-9% slower). More rows take 3 x 6 tiles: each
    /// raw weight vector stays in a register while its even half multiplies, so 4 x 6 would need 34
    /// registers; 3 x 6 (26) leaves the compiler room and measured within 3% of 4 x 6 at 16 rows.
    /// Every output is the same sum in the same order whatever the tile, so the choice by row count
    /// keeps batch invariance. # Safety: as `rows_impl`, with AVX-512F/BW and FMA, `x` in split order.
    #[target_feature(enable = "avx512f,avx512bw,fma")]
    pub unsafe fn matmul_rows_split(
        w: &[u16],
        k: usize,
        x: &[f32],
        n: usize,
        out: usize,
        rows: core::ops::Range<usize>,
        y: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe {
            if n <= 2 {
                rows_impl::<Bf16Split, 4, 2>(w, k, x, n, out, rows, y)
            } else {
                rows_impl::<Bf16Split, 3, 6>(w, k, x, n, out, rows, y)
            }
        }
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

    /// See [`peak_probe`]: 24 independent `vdpbf16ps` per round.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn peak_dot(iters: usize) -> f32 {
        // SAFETY: AVX-512F and AVX512_BF16 are enabled.
        unsafe {
            peak_loop!("vdpbf16ps", "vpxord", "zmm", 30, 31, iters,
                0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23)
        }
    }

    /// See [`peak_probe`]: 24 independent 512-bit `vfmadd231ps` per round.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn peak_fma(iters: usize) -> f32 {
        // SAFETY: AVX-512F is enabled.
        unsafe {
            peak_loop!("vfmadd231ps", "vpxord", "zmm", 30, 31, iters,
                0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23)
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
        unsafe fn load_w(p: *const f32, _part: usize) -> __m256 {
            // SAFETY: caller contract.
            unsafe { load(p as *const __m256) }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32, _part: usize) -> __m256 {
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
        unsafe fn load_w(p: *const u16, _part: usize) -> __m256 {
            // SAFETY: caller contract; bf16 -> f32 is a 16-bit left shift.
            unsafe {
                let h = load(p as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32, _part: usize) -> __m256 {
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

    /// See [`peak_probe`] (12 accumulators: AVX2 has 16 registers; two rounds per iteration).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn peak_fma(iters: usize) -> f32 {
        // SAFETY: AVX2 and FMA are enabled.
        unsafe {
            peak_loop!("vfmadd231ps", "vpxor", "ymm", 14, 15, iters * 2, 0 1 2 3 4 5 6 7 8 9 10 11)
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
