//! CPU kernels of the forward passes (the reference engine's target and the drafters). The matmul streams the weight matrix once per call and applies each
//! block of weight rows to every activation row while it is in cache, so the cost of N rows stays near
//! the cost of one until the arithmetic catches up with memory (DESIGN.md §7). The same generic code is
//! compiled for AVX-512 and chosen at run time; the portable build is the fallback.

#![allow(clippy::needless_range_loop)] // index loops over register tiles read clearer

use std::vec::Vec;

use crate::math::exp_nonpositive;

/// Lanes of one accumulator: one AVX-512 register of f32.
const L: usize = 16;
/// Weight rows per register tile.
const TILE_R: usize = 4;
/// Activation rows per register tile (`TILE_R * TILE_C` accumulators).
const TILE_C: usize = 6;

/// Weights of one linear layer, `[out, in]` row-major, in f32 or bf16.
pub enum Matrix {
    /// f32 weights.
    F32(Vec<f32>),
    /// bf16 weights (upper halves of f32), f32 accumulation.
    Bf16(Vec<u16>),
}

impl Matrix {
    /// Converts f32 weights to the requested storage.
    pub fn new(data: Vec<f32>, bf16: bool) -> Self {
        if bf16 {
            Matrix::Bf16(data.iter().map(|&x| f32_to_bf16(x)).collect())
        } else {
            Matrix::F32(data)
        }
    }

    /// Rounds f32 weights to bf16 in place (round to nearest even); bf16 weights stay as they are.
    pub fn convert_to_bf16(&mut self) {
        if let Matrix::F32(w) = self {
            *self = Matrix::Bf16(w.iter().map(|&x| f32_to_bf16(x)).collect());
        }
    }

    /// Bytes the weights occupy.
    pub fn bytes(&self) -> usize {
        match self {
            Matrix::F32(w) => w.len() * 4,
            Matrix::Bf16(w) => w.len() * 2,
        }
    }
}

/// Round-to-nearest-even f32 -> bf16 (NaN stays NaN).
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

#[inline(always)]
fn bf16_to_f32(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// Weight row access for the generic kernel.
trait Row: Sync {
    fn load(&self, row: usize, k: usize, col: usize) -> [f32; L];
    fn at(&self, row: usize, k: usize, col: usize) -> f32;
}

impl Row for [f32] {
    #[inline(always)]
    fn load(&self, row: usize, k: usize, col: usize) -> [f32; L] {
        let s = &self[row * k + col..row * k + col + L];
        let mut a = [0f32; L];
        a.copy_from_slice(s);
        a
    }
    #[inline(always)]
    fn at(&self, row: usize, k: usize, col: usize) -> f32 {
        self[row * k + col]
    }
}

impl Row for [u16] {
    #[inline(always)]
    fn load(&self, row: usize, k: usize, col: usize) -> [f32; L] {
        let s = &self[row * k + col..row * k + col + L];
        let mut a = [0f32; L];
        for i in 0..L {
            a[i] = bf16_to_f32(s[i]);
        }
        a
    }
    #[inline(always)]
    fn at(&self, row: usize, k: usize, col: usize) -> f32 {
        bf16_to_f32(self[row * k + col])
    }
}

#[inline(always)]
fn hsum(v: [f32; L]) -> f32 {
    let mut s = [0f32; 8];
    for i in 0..8 {
        s[i] = v[i] + v[i + 8];
    }
    ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))
}

/// `y[c, r] = sum_j w[r, j] * x[c, j]` for weight rows `rows` and activation rows `0..n`, with `y` rows
/// of stride `out` (`y` holds all `n * out` values; only columns in `rows` are written).
#[inline(always)]
fn matmul_rows<W: Row + ?Sized>(
    w: &W,
    k: usize,
    x: &[f32],
    n: usize,
    out: usize,
    rows: std::ops::Range<usize>,
    y: *mut f32,
) {
    let k_vec = k / L * L;
    let mut c0 = 0;
    while c0 < n {
        let cn = (n - c0).min(TILE_C);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let rn = (rows.end - r0).min(TILE_R);
            let mut acc = [[[0f32; L]; TILE_C]; TILE_R];
            let mut col = 0;
            while col < k_vec {
                let mut wv = [[0f32; L]; TILE_R];
                for (r, wr) in wv.iter_mut().enumerate().take(rn) {
                    *wr = w.load(r0 + r, k, col);
                }
                for c in 0..cn {
                    let xs = &x[(c0 + c) * k + col..(c0 + c) * k + col + L];
                    for r in 0..rn {
                        for i in 0..L {
                            acc[r][c][i] = wv[r][i].mul_add(xs[i], acc[r][c][i]);
                        }
                    }
                }
                col += L;
            }
            for r in 0..rn {
                for c in 0..cn {
                    let mut s = hsum(acc[r][c]);
                    for j in k_vec..k {
                        s += w.at(r0 + r, k, j) * x[(c0 + c) * k + j];
                    }
                    // SAFETY: (c0 + c) < n and r0 + r < out: inside the caller's n * out buffer, and
                    // each (row, column) is written by exactly one thread.
                    unsafe { *y.add((c0 + c) * out + r0 + r) = s };
                }
            }
            r0 += rn;
        }
        c0 += cn;
    }
}

/// AVX-512 kernels with compile-time register tiles: `R` weight rows times `C` activation rows, all
/// `R * C` accumulators in registers. Weight-row tiles are the outer loop so each tile is read from
/// memory once and reused from L1 for every activation tile (activations stay in L2). A [`Kernel`]
/// says how one step of the inner product loads and multiplies: f32 x f32, bf16 weights widened to f32,
/// or bf16 x bf16 pairs with `vdpbf16ps` (twice the arithmetic per instruction).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::*;

    /// One inner-product step over `STEP` columns.
    pub trait Kernel {
        /// Weight element.
        type W;
        /// Activation element.
        type X;
        /// Operand register.
        type V: Copy;
        /// Columns per step.
        const STEP: usize;
        /// # Safety
        /// `p` points to `STEP` readable weights; the target features are available.
        unsafe fn load_w(p: *const Self::W) -> Self::V;
        /// # Safety
        /// `p` points to `STEP` readable activations; the target features are available.
        unsafe fn load_x(p: *const Self::X) -> Self::V;
        /// # Safety
        /// The target features are available.
        unsafe fn fma(acc: __m512, w: Self::V, x: Self::V) -> __m512;
        /// # Safety
        /// Both pointers are readable.
        unsafe fn product(w: *const Self::W, x: *const Self::X) -> f32;
    }

    /// f32 weights and activations.
    pub struct F32;
    /// bf16 weights widened to f32 (exact), f32 activations.
    pub struct Bf16;
    /// bf16 weights and bf16-rounded activations, products summed in f32 by `vdpbf16ps`.
    pub struct Bf16Dot;

    #[inline(always)]
    fn bf16(x: u16) -> f32 {
        f32::from_bits((x as u32) << 16)
    }

    impl Kernel for F32 {
        type W = f32;
        type X = f32;
        type V = __m512;
        const STEP: usize = 16;
        #[inline(always)]
        unsafe fn load_w(p: *const f32) -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32) -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn fma(acc: __m512, w: __m512, x: __m512) -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_fmadd_ps(w, x, acc) }
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
        const STEP: usize = 16;
        #[inline(always)]
        unsafe fn load_w(p: *const u16) -> __m512 {
            // SAFETY: caller contract; bf16 -> f32 is a 16-bit left shift.
            unsafe {
                let h = _mm256_loadu_si256(p as *const __m256i);
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const f32) -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn fma(acc: __m512, w: __m512, x: __m512) -> __m512 {
            // SAFETY: caller contract.
            unsafe { _mm512_fmadd_ps(w, x, acc) }
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
        const STEP: usize = 32;
        #[inline(always)]
        unsafe fn load_w(p: *const u16) -> __m512bh {
            // SAFETY: caller contract; __m512i and __m512bh have the same size and layout.
            unsafe { core::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p as *const _)) }
        }
        #[inline(always)]
        unsafe fn load_x(p: *const u16) -> __m512bh {
            // SAFETY: as above.
            unsafe { core::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p as *const _)) }
        }
        #[inline(always)]
        unsafe fn fma(acc: __m512, w: __m512bh, x: __m512bh) -> __m512 {
            // SAFETY: caller contract (avx512bf16).
            unsafe { _mm512_dpbf16_ps(acc, w, x) }
        }
        #[inline(always)]
        unsafe fn product(w: *const u16, x: *const u16) -> f32 {
            // SAFETY: caller contract.
            unsafe { bf16(*w) * bf16(*x) }
        }
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
            let mut acc = [[_mm512_setzero_ps(); C]; R];
            let k_vec = k / K::STEP * K::STEP;
            let mut j = 0;
            while j < k_vec {
                let mut wv = [K::load_w(w); R];
                for r in 0..R {
                    wv[r] = K::load_w(w.add(r * k + j));
                    if PREFETCH {
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
                    let mut s = _mm512_reduce_add_ps(acc[r][c]);
                    for jj in k_vec..k {
                        s += K::product(w.add(r * k + jj), x.add(c * k + jj));
                    }
                    *y.add(c * out + r) = s;
                }
            }
        }
    }

    /// Activation tiles of `C` rows (and the remainder) for one tile of `R` weight rows.
    #[inline(always)]
    unsafe fn row_tile<K: Kernel, const R: usize>(
        w: *const K::W,
        x: *const K::X,
        n: usize,
        k: usize,
        y: *mut f32,
        out: usize,
    ) {
        const C: usize = 6;
        // SAFETY: forwarded caller contract; every tile stays inside the n rows.
        unsafe {
            let mut c = 0;
            while c + C <= n {
                if c == 0 {
                    tile::<K, R, C, true>(w, x, k, y, out);
                } else {
                    tile::<K, R, C, false>(w, x.add(c * k), k, y.add(c * out), out);
                }
                c += C;
            }
            let (xr, yr) = (x.add(c * k), y.add(c * out));
            match (n - c, c == 0) {
                (0, _) => {}
                (1, true) => tile::<K, R, 1, true>(w, xr, k, yr, out),
                (1, false) => tile::<K, R, 1, false>(w, xr, k, yr, out),
                (2, true) => tile::<K, R, 2, true>(w, xr, k, yr, out),
                (2, false) => tile::<K, R, 2, false>(w, xr, k, yr, out),
                (3, true) => tile::<K, R, 3, true>(w, xr, k, yr, out),
                (3, false) => tile::<K, R, 3, false>(w, xr, k, yr, out),
                (4, true) => tile::<K, R, 4, true>(w, xr, k, yr, out),
                (4, false) => tile::<K, R, 4, false>(w, xr, k, yr, out),
                (_, true) => tile::<K, R, 5, true>(w, xr, k, yr, out),
                (_, false) => tile::<K, R, 5, false>(w, xr, k, yr, out),
            }
        }
    }

    /// `y[c, r] = w[r] . x[c]` for `r` in `rows`, `c` in `0..n`.
    ///
    /// # Safety
    /// The kernel's target features are available (the callers below enable them); `w` holds
    /// `rows.end * k` elements, `x` holds `n * k`, `y` holds `n * out` with `rows.end <= out`, and no
    /// other thread writes these columns.
    #[inline(always)]
    unsafe fn rows_impl<K: Kernel>(
        w: &[K::W],
        k: usize,
        x: &[K::X],
        n: usize,
        out: usize,
        rows: std::ops::Range<usize>,
        y: *mut f32,
    ) {
        const R: usize = 4;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        // SAFETY: caller contract; tiles stay within `rows`.
        unsafe {
            let mut r = rows.start;
            while r + R <= rows.end {
                row_tile::<K, R>(wp.add(r * k), xp, n, k, y.add(r), out);
                r += R;
            }
            while r < rows.end {
                row_tile::<K, 1>(wp.add(r * k), xp, n, k, y.add(r), out);
                r += 1;
            }
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
        rows: std::ops::Range<usize>,
        y: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe { rows_impl::<K>(w, k, x, n, out, rows, y) }
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
                    _mm512_loadu_ps(v.add(j * 64)),
                    _mm512_loadu_ps(v.add(j * 64 + 16)),
                    _mm512_loadu_ps(v.add(j * 64 + 32)),
                    _mm512_loadu_ps(v.add(j * 64 + 48)),
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
                    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), a[q][d]));
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

    /// [`rows_impl`] with `vdpbf16ps`. # Safety: as `rows_impl`, with AVX-512F/BW and AVX512_BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn matmul_rows_bf16_dot(
        w: &[u16],
        k: usize,
        x: &[u16],
        n: usize,
        out: usize,
        rows: std::ops::Range<usize>,
        y: *mut f32,
    ) {
        // SAFETY: forwarded.
        unsafe { rows_impl::<Bf16Dot>(w, k, x, n, out, rows, y) }
    }
}

/// Whether the AVX512_BF16 dot-product kernel can run here (checked once).
fn have_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAVE: OnceLock<bool> = OnceLock::new();
        *HAVE.get_or_init(|| have_avx512() && std::is_x86_feature_detected!("avx512bf16"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the AVX-512 kernels can run here (checked once).
fn have_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAVE: OnceLock<bool> = OnceLock::new();
        *HAVE.get_or_init(|| {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Raw pointer that may cross threads: each thread writes disjoint elements.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);

impl SendPtr {
    /// The pointer. Closures must call this (not read `.0`) so they capture the `Sync` wrapper.
    #[inline(always)]
    pub fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: users write disjoint elements only (see each call site).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// `y[n, out] = x[n, k] * w[out, k]^T`, weight rows split over the pool's threads.
pub fn matmul(
    pool: &super::Pool,
    w: &Matrix,
    out: usize,
    k: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) {
    assert!(x.len() >= n * k && y.len() >= n * out, "matmul shapes");
    match w {
        Matrix::F32(d) => assert_eq!(d.len(), out * k, "matmul weight shape"),
        Matrix::Bf16(d) => assert_eq!(d.len(), out * k, "matmul weight shape"),
    }
    // bf16 weights on a CPU with AVX512_BF16: round the activations to bf16 once and multiply pairs.
    // The rounded copy lives in a per-thread buffer that only grows, so steady-state calls (a
    // drafter session's draft and commit) allocate nothing.
    if let Matrix::Bf16(_) = w
        && have_avx512_bf16()
    {
        ACTIVATIONS_BF16.with_borrow_mut(|xb| {
            xb.clear();
            xb.extend(x[..n * k].iter().map(|&v| f32_to_bf16(v)));
            matmul_impl(pool, w, out, k, x, n, y, Some(xb));
        });
        return;
    }
    matmul_impl(pool, w, out, k, x, n, y, None);
}

std::thread_local! {
    /// The bf16 copy of a matmul's activations (see [`matmul`]).
    static ACTIVATIONS_BF16: core::cell::RefCell<Vec<u16>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// Grows the calling thread's bf16 activation buffer of [`matmul`] to `elements` (rows x input width)
/// now, so later bf16 matmuls of up to that size on this thread allocate nothing. Drafter sessions call
/// it at creation.
pub fn reserve_bf16_activations(elements: usize) {
    ACTIVATIONS_BF16.with_borrow_mut(|v| {
        if v.capacity() < elements {
            v.reserve_exact(elements - v.len());
        }
    });
}

/// [`matmul`] with the activations already rounded to bf16 when the weights are bf16 and the CPU
/// multiplies bf16 pairs (`x_bf16`), else `None`.
#[allow(clippy::too_many_arguments)]
fn matmul_impl(
    pool: &super::Pool,
    w: &Matrix,
    out: usize,
    k: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    x_bf16: Option<&[u16]>,
) {
    let yp = SendPtr(y.as_mut_ptr());
    let threads = pool.threads();
    let avx512 = have_avx512();
    // Chunks of whole register tiles, several per thread, so a slow thread does not hold up the rest.
    let chunk_rows = (out.div_ceil(threads * 8)).max(16).next_multiple_of(TILE_R);
    let chunks = out.div_ceil(chunk_rows);
    pool.for_each_chunk(chunks, &|c| {
        let rows = c * chunk_rows..((c + 1) * chunk_rows).min(out);
        if rows.is_empty() {
            return;
        }
        match w {
            Matrix::F32(d) => {
                #[cfg(target_arch = "x86_64")]
                if avx512 {
                    // SAFETY: the CPU has AVX-512F/BW and FMA (checked by have_avx512); shapes were
                    // checked above and threads own disjoint row ranges.
                    unsafe { avx512::matmul_rows::<avx512::F32>(d, k, x, n, out, rows, yp.get()) };
                    return;
                }
                matmul_rows(d.as_slice(), k, x, n, out, rows, yp.get())
            }
            Matrix::Bf16(d) => {
                #[cfg(target_arch = "x86_64")]
                if let Some(xb) = x_bf16 {
                    // SAFETY: AVX-512 and AVX512_BF16 checked; as above.
                    unsafe { avx512::matmul_rows_bf16_dot(d, k, xb, n, out, rows, yp.get()) };
                    return;
                }
                #[cfg(target_arch = "x86_64")]
                if avx512 {
                    // SAFETY: as above.
                    unsafe { avx512::matmul_rows::<avx512::Bf16>(d, k, x, n, out, rows, yp.get()) };
                    return;
                }
                matmul_rows(d.as_slice(), k, x, n, out, rows, yp.get())
            }
        }
    });
}

/// Sum of a buffer read as four interleaved streams (like a 4-row weight tile), for measuring read
/// bandwidth the way the matmul reads memory.
#[inline(always)]
fn stream_sum_generic(buf: &[f32]) -> f32 {
    let quarter = buf.len() / 4 / L * L;
    let mut acc = [[0f32; L]; 4];
    let mut j = 0;
    while j < quarter {
        for (s, a) in acc.iter_mut().enumerate() {
            let v = &buf[s * quarter + j..s * quarter + j + L];
            for i in 0..L {
                a[i] += v[i];
            }
        }
        j += L;
    }
    acc.iter().flatten().sum::<f32>() + buf[4 * quarter..].iter().sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn stream_sum_avx512(buf: &[f32]) -> f32 {
    stream_sum_generic(buf)
}

/// Reads every value of `buf` once (see [`stream_sum_generic`]); returns their sum.
pub fn stream_sum(buf: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if have_avx512() {
        // SAFETY: AVX-512F checked.
        return unsafe { stream_sum_avx512(buf) };
    }
    stream_sum_generic(buf)
}

/// Single-threaded `y[n, out] = x[n, k] * w[out, k]^T` (for work already split across threads).
pub fn matmul_local(w: &[f32], out: usize, k: usize, x: &[f32], n: usize, y: &mut [f32]) {
    assert!(
        w.len() >= out * k && x.len() >= n * k && y.len() >= n * out,
        "matmul_local shapes"
    );
    #[cfg(target_arch = "x86_64")]
    if have_avx512() {
        // SAFETY: AVX-512 checked; shapes checked above; this thread owns y.
        unsafe { avx512::matmul_rows::<avx512::F32>(w, k, x, n, out, 0..out, y.as_mut_ptr()) };
        return;
    }
    matmul_rows(w, k, x, n, out, 0..out, y.as_mut_ptr());
}

/// Softmax of one row in place; `-inf` entries get probability 0. A row of only `-inf` becomes 0.
pub fn softmax_in_place(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if have_avx512() {
        // SAFETY: AVX-512F checked.
        return unsafe { softmax_avx512(row) };
    }
    softmax_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn softmax_avx512(row: &mut [f32]) {
    softmax_generic(row)
}

/// Attention's softmax over a row of scores whose keys `0..prefix` sit at positions `0..prefix` and
/// whose other keys sit at `tail_positions` (one per key after the prefix). Key at position `p` adds
/// into partial sum `p % 16`, every partial sum in key order, so a query's result depends only on the
/// positions and scores of the keys it sees, not on where masked keys sit or how the row was split
/// between cache and new tokens: tree verification and one-token decoding of the same path give
/// bit-identical probabilities (masked keys add exact zeros). Same as [`softmax_in_place`] when
/// `tail_positions` continue the prefix.
pub fn softmax_in_place_by_position(row: &mut [f32], prefix: usize, tail_positions: &[u32]) {
    assert_eq!(
        prefix + tail_positions.len(),
        row.len(),
        "softmax: one position per tail key"
    );
    // Positions equal to indices (decoding, causal prefill): the plain softmax's lanes already are
    // the positions' (vectorised over the whole row).
    if tail_positions
        .iter()
        .enumerate()
        .all(|(t, &p)| p as usize == prefix + t)
    {
        return softmax_in_place(row);
    }
    #[cfg(target_arch = "x86_64")]
    if have_avx512() {
        // SAFETY: AVX-512F checked.
        return unsafe { softmax_by_position_avx512(row, prefix, tail_positions) };
    }
    softmax_by_position_generic(row, prefix, tail_positions)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn softmax_by_position_avx512(row: &mut [f32], prefix: usize, tail_positions: &[u32]) {
    softmax_by_position_generic(row, prefix, tail_positions)
}

#[inline(always)]
fn softmax_by_position_generic(row: &mut [f32], prefix: usize, tail_positions: &[u32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    // 16 partial sums so the prefix loop vectorises; exp_nonpositive is branch-free (and -inf -> 0).
    let mut sums = [0f32; L];
    let (head, tail) = row.split_at_mut(prefix);
    for chunk in head.chunks_mut(L) {
        for (i, x) in chunk.iter_mut().enumerate() {
            *x = exp_nonpositive(*x - max);
            sums[i] += *x;
        }
    }
    for x in tail.iter_mut() {
        *x = exp_nonpositive(*x - max);
    }
    for (x, &p) in tail.iter().zip(tail_positions) {
        sums[p as usize % L] += *x;
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// The whole row is prefix: lanes are indices.
#[inline(always)]
fn softmax_generic(row: &mut [f32]) {
    softmax_by_position_generic(row, row.len(), &[])
}

/// `acc[q, d] += sum_j p[q, j] * v[j, d]` for `m` rows of `p` (`len` wide) and `v` of `len x hd`.
#[inline(always)]
fn weighted_rows_generic(p: &[f32], m: usize, len: usize, v: &[f32], hd: usize, acc: &mut [f32]) {
    for j in 0..len {
        let vj = &v[j * hd..(j + 1) * hd];
        for q in 0..m {
            let w = p[q * len + j];
            if w == 0.0 {
                continue;
            }
            for (a, &b) in acc[q * hd..(q + 1) * hd].iter_mut().zip(vj) {
                *a = w.mul_add(b, *a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn weighted_rows_avx512(p: &[f32], m: usize, len: usize, v: &[f32], hd: usize, acc: &mut [f32]) {
    weighted_rows_generic(p, m, len, v, hd, acc)
}

/// `acc[q, d] += sum_j p[q, j] * v[j, d]`: attention's probability-weighted sum of value rows.
pub fn weighted_rows(p: &[f32], m: usize, len: usize, v: &[f32], hd: usize, acc: &mut [f32]) {
    assert!(
        p.len() >= m * len && v.len() >= len * hd && acc.len() >= m * hd,
        "weighted_rows shapes"
    );
    #[cfg(target_arch = "x86_64")]
    if have_avx512() {
        if hd == 64 {
            // SAFETY: AVX-512F and FMA are available (checked); shapes checked above.
            unsafe { avx512::weighted_rows_64(p, m, len, v, acc) };
        } else {
            // SAFETY: as above.
            unsafe { weighted_rows_avx512(p, m, len, v, hd, acc) };
        }
        return;
    }
    weighted_rows_generic(p, m, len, v, hd, acc)
}

/// RMSNorm of each `dim`-row of `x` into `out`: `x / sqrt(mean(x^2) + eps) * weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let ss: f32 = xr.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let inv = 1.0 / (ss + eps).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * w;
        }
    }
}

/// `silu(gate) * up`, in place into `gate`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if have_avx512() {
        // SAFETY: AVX-512F checked.
        return unsafe { swiglu_avx512(gate, up) };
    }
    swiglu_generic(gate, up)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn swiglu_avx512(gate: &mut [f32], up: &[f32]) {
    swiglu_generic(gate, up)
}

/// `silu(g) = g / (1 + e^-g)`, written with `e = exp(-|g|) <= 1` so one branch-free, vectorisable
/// exponential serves both signs: `g / (1 + e)` for `g >= 0`, `g e / (1 + e)` for `g < 0`.
#[inline(always)]
fn swiglu_generic(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        let e = exp_nonpositive(-x.abs());
        let num = if x >= 0.0 { x } else { x * e };
        *g = num / (1.0 + e) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Pool;
    use std::vec;
    use std::vec::Vec;

    fn reference(w: &[f32], out: usize, k: usize, x: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0f32; n * out];
        for c in 0..n {
            for r in 0..out {
                y[c * out + r] = (0..k)
                    .map(|j| w[r * k + j] as f64 * x[c * k + j] as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    #[test]
    fn matmul_matches_reference_for_odd_shapes() {
        let pool = Pool::new(2);
        let mut seed = 1u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for &(out, k, n) in &[
            (1, 1, 1),
            (5, 17, 3),
            (13, 576, 7),
            (64, 33, 1),
            (9, 48, 13),
        ] {
            let w: Vec<f32> = (0..out * k).map(|_| rnd()).collect();
            let x: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let want = reference(&w, out, k, &x, n);
            for bf16 in [false, true] {
                let m = Matrix::new(w.clone(), bf16);
                let want = if bf16 {
                    let round = |v: &f32| bf16_to_f32(f32_to_bf16(*v));
                    let wb: Vec<f32> = w.iter().map(round).collect();
                    // With AVX512_BF16 the activations are rounded to bf16 too.
                    let xb: Vec<f32> = if have_avx512_bf16() {
                        x.iter().map(round).collect()
                    } else {
                        x.clone()
                    };
                    reference(&wb, out, k, &xb, n)
                } else {
                    want.clone()
                };
                let mut y = vec![f32::NAN; n * out];
                matmul(&pool, &m, out, k, &x, n, &mut y);
                for (a, b) in y.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{out}x{k} n={n} bf16={bf16}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn attention_helpers_match_plain_loops() {
        for &(m, len, hd) in &[(1, 1, 64), (7, 33, 64), (24, 520, 64), (5, 9, 8)] {
            let p: Vec<f32> = (0..m * len)
                .map(|i| ((i * 37 % 101) as f32) / 101.0)
                .collect();
            let v: Vec<f32> = (0..len * hd)
                .map(|i| ((i * 53 % 97) as f32) / 97.0 - 0.5)
                .collect();
            let mut got = vec![0.25f32; m * hd];
            weighted_rows(&p, m, len, &v, hd, &mut got);
            for q in 0..m {
                for d in 0..hd {
                    let want: f64 = 0.25
                        + (0..len)
                            .map(|j| p[q * len + j] as f64 * v[j * hd + d] as f64)
                            .sum::<f64>();
                    assert!(
                        (got[q * hd + d] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "m={m} len={len}"
                    );
                }
            }
        }
        // Position-keyed softmax: a masked key anywhere in the tail changes nothing, bit for bit.
        let scores: Vec<f32> = (0..40)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7)
            .collect();
        let mut plain = scores.clone();
        softmax_in_place(&mut plain);
        let mut contiguous = scores.clone();
        let pos: Vec<u32> = (33..40).collect();
        softmax_in_place_by_position(&mut contiguous, 33, &pos);
        assert_eq!(plain, contiguous, "a continuing tail is the plain softmax");
        // The same visible keys as a tree row: prefix 30, then tail slots at positions 30.. with
        // masked siblings interleaved.
        let mut tree = scores[..30].to_vec();
        let mut tree_pos = Vec::new();
        for (t, p) in [(30usize, 30u32), (99, 31), (31, 31), (99, 32), (32, 32)] {
            tree.push(if t == 99 {
                f32::NEG_INFINITY
            } else {
                scores[t]
            });
            tree_pos.push(p);
        }
        softmax_in_place_by_position(&mut tree, 30, &tree_pos);
        let mut path = scores[..33].to_vec();
        softmax_in_place(&mut path);
        let visible: Vec<f32> = tree.iter().copied().filter(|&x| x != 0.0).collect();
        assert_eq!(
            visible, path,
            "tree row equals the decoded path's row bit for bit"
        );
        let mut row = vec![1.0f32, f32::NEG_INFINITY, 3.0, -2.0, 0.5];
        softmax_in_place(&mut row);
        let z: f64 = [1.0f64, 3.0, -2.0, 0.5].iter().map(|x| x.exp()).sum();
        for (got, x) in row.iter().zip([1.0f64, f64::NEG_INFINITY, 3.0, -2.0, 0.5]) {
            assert!((*got as f64 - x.exp() / z).abs() < 1e-6);
        }
        let (mut g, u) = (vec![-30.0f32, -1.5, 0.0, 0.7, 25.0], vec![2.0f32; 5]);
        let want: Vec<f64> = g
            .iter()
            .map(|&x| x as f64 / (1.0 + (-(x as f64)).exp()) * 2.0)
            .collect();
        swiglu(&mut g, &u);
        for (a, b) in g.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 1.0 / 256.0)), 1.0); // tie to even
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }
}
