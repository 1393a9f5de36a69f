//! CPU kernels of the forward passes (the reference engine's target and the drafters). The matmul streams the weight matrix once per call and applies each
//! block of weight rows to every activation row while it is in cache, so the cost of N rows stays near
//! the cost of one until the arithmetic catches up with memory (docs/performance.md). The same generic code is
//! compiled for AVX-512 and for AVX2 + FMA and chosen at run time ([`Isa`]); the portable build is the
//! fallback.

#![allow(clippy::needless_range_loop)] // index loops over register tiles read clearer

use std::vec::Vec;

use crate::math::exp_nonpositive;

/// Lanes of one accumulator: one AVX-512 register of f32.
const L: usize = 16;
/// Weight rows per register tile.
const TILE_R: usize = 4;
/// Activation rows per register tile (`TILE_R * TILE_C` accumulators).
const TILE_C: usize = 6;
/// A parallel matmul's chunks hold a multiple of this many weight rows: a multiple of every kernel's
/// weight-row tile (4 for f32, `vdpbf16ps` and AVX2 decoding, 3 for split bf16, 2 for AVX2 batches),
/// so only the last chunk ends in a partial tile.
const CHUNK_ROWS_MULTIPLE: usize = 12;

/// Weights of one linear layer, `[out, in]` row-major, in f32 or bf16.
pub enum Matrix {
    /// f32 weights.
    F32(Vec<f32>),
    /// bf16 weights (upper halves of f32), f32 accumulation.
    Bf16(Vec<u16>),
    /// bf16 weights in the packed layout of the broadcast `vdpbf16ps` kernel ([`Matrix::try_pack`]).
    Bf16Packed(super::packed::PackedBf16),
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

    /// Number of weights (`out * k`).
    pub fn elements(&self) -> usize {
        match self {
            Matrix::F32(w) => w.len(),
            Matrix::Bf16(w) => w.len(),
            Matrix::Bf16Packed(p) => p.out() * p.k(),
        }
    }

    /// [`Matrix::convert_to_bf16`], then [`Matrix::try_pack`] as `k` columns (`out = elements / k`).
    /// Packing is an optimisation: where it does not happen (another kernel, `k` not dividing the
    /// weights, or no memory for the packed copy) the row-major bf16 weights give the same results
    /// at the row-major kernel's speed.
    pub fn convert_to_bf16_packed(&mut self, k: usize) {
        self.convert_to_bf16();
        let n = self.elements();
        if k > 0 && n.is_multiple_of(k) {
            let _ = self.try_pack(n / k, k);
        }
    }

    /// Bytes the weights occupy.
    pub fn bytes(&self) -> usize {
        match self {
            Matrix::F32(w) => w.len() * 4,
            Matrix::Bf16(w) => w.len() * 2,
            Matrix::Bf16Packed(p) => p.bytes(),
        }
    }

    /// Repacks `[out, k]` bf16 weights into the layout of the broadcast kernel where that kernel is
    /// the one [`Isa::detect`] runs (AVX512_BF16 pairs); returns whether it did. f32 weights, other
    /// hosts and packed weights stay as they are. An allocation failure leaves the weights unchanged.
    /// `SPECBLOCK_PACKED=0` (read once) turns packing off, for measuring against the row-major kernel.
    ///
    /// Callers opt in because the packed layout no longer hands out rows as a slice: code that reads
    /// the weights itself (the online adapter's trainer) keeps the row-major form.
    ///
    /// # Panics
    /// If bf16 weights do not hold `out * k` values.
    pub fn try_pack(
        &mut self,
        out: usize,
        k: usize,
    ) -> Result<bool, std::collections::TryReserveError> {
        match self {
            Matrix::Bf16(w) if Isa::detect() == Isa::Avx512Bf16 && packing_enabled() => {
                *self = Matrix::Bf16Packed(super::packed::PackedBf16::try_pack(w, out, k)?);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The weights in row-major order, widened to f32 (any storage). Reports an allocation failure
    /// instead of aborting.
    pub fn try_to_f32(&self) -> Result<Vec<f32>, std::collections::TryReserveError> {
        let mut v = Vec::new();
        match self {
            Matrix::F32(w) => {
                v.try_reserve_exact(w.len())?;
                v.extend_from_slice(w);
            }
            Matrix::Bf16(w) => {
                v.try_reserve_exact(w.len())?;
                v.extend(w.iter().map(|&x| bf16_to_f32(x)));
            }
            Matrix::Bf16Packed(p) => {
                v.try_reserve_exact(p.out() * p.k())?;
                v.extend(p.try_to_row_major()?.iter().map(|&x| bf16_to_f32(x)));
            }
        }
        Ok(v)
    }
}

use crate::num::bf16_to_f32;
/// Round-to-nearest-even f32 -> bf16 (NaN stays NaN): [`crate::num::f32_to_bf16`].
pub use crate::num::f32_to_bf16;

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

/// The instruction set the kernels run with, detected once per process (see [`Isa::detect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F/BW with AVX512_BF16: bf16 x bf16 products (`vdpbf16ps`) for bf16 weights.
    Avx512Bf16,
    /// AVX-512F/BW and FMA.
    Avx512,
    /// AVX2 and FMA (x86-64 hosts without AVX-512, e.g. AMD Zen 2/3).
    Avx2,
    /// Portable Rust (any other host).
    Portable,
}

impl Isa {
    /// The fastest instruction set this CPU offers (checked once). [`Isa::Avx512Bf16`] only where its
    /// bf16 pair products are the faster way to multiply bf16 weights: see [`bf16_pairs_are_fast`].
    pub fn detect() -> Isa {
        use std::sync::OnceLock;
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            [Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2]
                .into_iter()
                .filter(|&isa| isa != Isa::Avx512Bf16 || bf16_pairs_are_fast())
                .find(|isa| isa.is_supported())
                .unwrap_or(Isa::Portable)
        })
    }

    /// Every instruction set this CPU can run, best first (tests run each).
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2, Isa::Portable]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// Whether this CPU can run the kernels of `self` (no allocation: matmuls check it).
    pub fn is_supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = || {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("fma")
            };
            match self {
                Isa::Avx512Bf16 => avx512() && std::is_x86_feature_detected!("avx512bf16"),
                Isa::Avx512 => avx512(),
                Isa::Avx2 => {
                    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
                }
                Isa::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Portable
        }
    }

    /// Short name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Bf16 => "avx512-bf16",
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2-fma",
            Isa::Portable => "portable",
        }
    }

    fn has_avx512(self) -> bool {
        matches!(self, Isa::Avx512Bf16 | Isa::Avx512)
    }
}

/// Whether `vdpbf16ps` multiplies bf16 weights faster than widening them to f32 for `vfmadd`.
///
/// AMD Zen 4 issues one 512-bit `vdpbf16ps` (64 FLOP) per cycle against one 512-bit f32 FMA (32 FLOP),
/// so there pairs win. A 2-core Intel Emerald Rapids VM measured the opposite: two 512-bit FMAs per
/// cycle and one `vdpbf16ps` every two (87 against 175 GFLOP/s per core), and the matmul of 16
/// activation rows ran 1.5x faster with widened weights (docs/performance.md). Only AMD is known to
/// gain, so only AMD gets pairs; other vendors widen. Widening also keeps the activations in f32
/// instead of rounding them to bf16. `SPECBLOCK_BF16_PAIRS=1|0` overrides the choice (read when
/// [`Isa::detect`] first runs).
fn bf16_pairs_are_fast() -> bool {
    if let Some(v) = std::env::var_os("SPECBLOCK_BF16_PAIRS") {
        return v != "0";
    }
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID leaf 0 (the vendor string) exists on every x86-64 CPU.
        let id = core::arch::x86_64::__cpuid(0);
        let vendor = [id.ebx, id.edx, id.ecx];
        vendor == [0x6874_7541, 0x6974_6e65, 0x444d_4163] // "AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether [`Matrix::try_pack`] packs: not when `SPECBLOCK_PACKED=0` (checked once).
fn packing_enabled() -> bool {
    use std::sync::OnceLock;
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("SPECBLOCK_PACKED").is_none_or(|v| v != "0"))
}

/// Whether the AVX-512 kernels can run here (checked once).
fn have_avx512() -> bool {
    Isa::detect().has_avx512()
}

/// Whether the AVX2 + FMA kernels are the best this host has (checked once).
fn have_avx2() -> bool {
    Isa::detect() == Isa::Avx2
}

/// Raw pointer that may cross threads: each thread writes disjoint elements.
///
/// Hidden from the documented API: it is support for the reference engine's own kernels
/// (`tools/engine`), which split one output across the pool's threads the way these kernels do; it is
/// not part of what an embedding engine should build on, and may change without notice.
#[doc(hidden)]
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
    matmul_with(Isa::detect(), pool, w, out, k, x, n, y)
}

/// [`matmul`] on a given instruction set, which must be one of [`Isa::available`] (tests compare them).
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    isa: Isa,
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
        Matrix::Bf16Packed(p) => assert!(p.out() == out && p.k() == k, "matmul weight shape"),
    }
    assert!(isa.is_supported(), "{isa:?} is not available on this CPU");
    if let Matrix::Bf16Packed(p) = w {
        return matmul_packed(isa, pool, p, out, k, x, n, y);
    }
    // bf16 weights with AVX-512: the activations are copied once per call into the order the kernel
    // reads, rounded to bf16 for `vdpbf16ps` pairs or split into even and odd columns for widened
    // weights. The copy lives in a per-thread buffer that only grows, so steady-state calls (a
    // drafter session's draft and commit) allocate nothing.
    #[cfg(target_arch = "x86_64")]
    if let Matrix::Bf16(_) = w {
        match isa {
            Isa::Avx512Bf16 => {
                ACTIVATIONS_BF16.with_borrow_mut(|xb| {
                    xb.clear();
                    xb.extend(x[..n * k].iter().map(|&v| f32_to_bf16(v)));
                    matmul_impl(isa, pool, w, out, k, x, n, y, Prepared::Bf16(xb));
                });
                return;
            }
            Isa::Avx512 => {
                ACTIVATIONS_SPLIT.with_borrow_mut(|xs| {
                    super::simd::split_activations(x, n, k, xs);
                    matmul_impl(isa, pool, w, out, k, x, n, y, Prepared::Split(xs));
                });
                return;
            }
            _ => {}
        }
    }
    matmul_impl(isa, pool, w, out, k, x, n, y, Prepared::None);
}

/// [`matmul_with`] for packed weights: the activations are copied once per call into rows of
/// `2 * pairs` values (a zero after an odd `k`), rounded to bf16 for the broadcast kernel on AVX512_BF16,
/// kept in f32 for the portable fallback (any other instruction set, which tests force). Threads split
/// the output rows by tiles of 64.
#[allow(clippy::too_many_arguments)]
fn matmul_packed(
    isa: Isa,
    pool: &super::Pool,
    w: &super::packed::PackedBf16,
    out: usize,
    k: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) {
    let stride = 2 * w.pairs();
    let yp = SendPtr(y.as_mut_ptr());
    let tiles = w.out().div_ceil(super::packed::TILE_ROWS);
    // Several chunks of whole tiles per thread, so a slow thread does not hold up the rest.
    let chunk = tiles.div_ceil(pool.threads() * 8).max(1);
    let chunks = tiles.div_ceil(chunk);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Bf16 {
        ACTIVATIONS_BF16.with_borrow_mut(|xb| {
            xb.clear();
            for row in x[..n * k].chunks_exact(k) {
                xb.extend(row.iter().map(|&v| f32_to_bf16(v)));
                xb.resize(xb.len() + stride - k, 0);
            }
            let xb: &[u16] = xb;
            pool.for_each_chunk(chunks, &|c| {
                let range = c * chunk..((c + 1) * chunk).min(tiles);
                // SAFETY: AVX512_BF16 is available (asserted by matmul_with); xb holds n rows of
                // `stride`; y holds n * out values (asserted); chunks are disjoint tile ranges.
                unsafe { super::packed::avx512::matmul_tiles(w, xb, n, out, range, yp.get()) };
            });
        });
        return;
    }
    ACTIVATIONS_SPLIT.with_borrow_mut(|xf| {
        xf.clear();
        for row in x[..n * k].chunks_exact(k) {
            xf.extend_from_slice(row);
            xf.resize(xf.len() + stride - k, 0.0);
        }
        let xf: &[f32] = xf;
        pool.for_each_chunk(chunks, &|c| {
            let range = c * chunk..((c + 1) * chunk).min(tiles);
            super::packed::matmul_tiles_portable(w, xf, n, out, range, yp.get());
        });
    });
    let _ = isa;
}

/// Activations as a bf16 matmul's kernel reads them (see [`matmul_with`]).
#[derive(Clone, Copy)]
enum Prepared<'a> {
    /// The caller's f32 rows as they are.
    None,
    /// Rounded to bf16, for `vdpbf16ps`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Bf16(&'a [u16]),
    /// In split order (even then odd columns of each 32), for widened bf16 weights.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Split(&'a [f32]),
}

std::thread_local! {
    /// The bf16 copy of a matmul's activations (see [`matmul_with`]).
    static ACTIVATIONS_BF16: core::cell::RefCell<Vec<u16>> = const { core::cell::RefCell::new(Vec::new()) };
    /// The split-order copy of a matmul's activations (see [`matmul_with`]).
    static ACTIVATIONS_SPLIT: core::cell::RefCell<Vec<f32>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// Grows the calling thread's activation buffers of bf16 [`matmul`]s to `elements` (rows x input
/// width) now, so later bf16 matmuls of up to that size on this thread allocate nothing. Drafter
/// sessions call it at creation.
pub fn reserve_bf16_activations(elements: usize) {
    ACTIVATIONS_BF16.with_borrow_mut(|v| {
        if v.capacity() < elements {
            v.reserve_exact(elements - v.len());
        }
    });
    ACTIVATIONS_SPLIT.with_borrow_mut(|v| {
        if v.capacity() < elements {
            v.reserve_exact(elements - v.len());
        }
    });
}

/// [`reserve_bf16_activations`] that reports an allocation failure instead of aborting.
pub fn try_reserve_bf16_activations(
    elements: usize,
) -> Result<(), std::collections::TryReserveError> {
    ACTIVATIONS_BF16.with_borrow_mut(|v| v.try_reserve_exact(elements.saturating_sub(v.len())))?;
    ACTIVATIONS_SPLIT.with_borrow_mut(|v| v.try_reserve_exact(elements.saturating_sub(v.len())))
}

/// One thread's share of a matmul: weight rows `rows` against every activation row, on `isa`.
/// `prepared` is the copy of `x` that the AVX-512 kernels multiply with bf16 weights.
#[allow(clippy::too_many_arguments)]
fn matmul_rows_on(
    isa: Isa,
    w: &Matrix,
    k: usize,
    x: &[f32],
    prepared: Prepared<'_>,
    n: usize,
    out: usize,
    rows: std::ops::Range<usize>,
    y: *mut f32,
) {
    // SAFETY (every arm): the CPU has the arm's features (`isa` is one of Isa::available, asserted
    // by the callers); the callers checked the shapes, and each thread owns disjoint row ranges of y.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        use super::simd::{avx2, avx512};
        match (w, isa, prepared) {
            (Matrix::Bf16(d), Isa::Avx512Bf16, Prepared::Bf16(xb)) => {
                return avx512::matmul_rows_bf16_dot(d, k, xb, n, out, rows, y);
            }
            (Matrix::Bf16(d), Isa::Avx512, Prepared::Split(xs)) => {
                return avx512::matmul_rows_split(d, k, xs, n, out, rows, y);
            }
            (Matrix::F32(d), Isa::Avx512Bf16 | Isa::Avx512, _) => {
                return avx512::matmul_rows::<avx512::F32>(d, k, x, n, out, rows, y);
            }
            (Matrix::F32(d), Isa::Avx2, _) => {
                return avx2::matmul_rows::<avx2::F32>(d, k, x, n, out, rows, y);
            }
            (Matrix::Bf16(d), Isa::Avx2, _) => {
                return avx2::matmul_rows::<avx2::Bf16>(d, k, x, n, out, rows, y);
            }
            _ => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (isa, prepared);
    match w {
        Matrix::F32(d) => matmul_rows(d.as_slice(), k, x, n, out, rows, y),
        Matrix::Bf16(d) => matmul_rows(d.as_slice(), k, x, n, out, rows, y),
        Matrix::Bf16Packed(_) => unreachable!("packed weights go through matmul_packed"),
    }
}

/// [`matmul_with`] after the activations were prepared for the kernel (`prepared`).
#[allow(clippy::too_many_arguments)]
fn matmul_impl(
    isa: Isa,
    pool: &super::Pool,
    w: &Matrix,
    out: usize,
    k: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    prepared: Prepared<'_>,
) {
    let yp = SendPtr(y.as_mut_ptr());
    let threads = pool.threads();
    // Chunks of whole register tiles, several per thread, so a slow thread does not hold up the rest.
    let chunk_rows = (out.div_ceil(threads * 8))
        .max(16)
        .next_multiple_of(CHUNK_ROWS_MULTIPLE);
    let chunks = out.div_ceil(chunk_rows);
    pool.for_each_chunk(chunks, &|c| {
        let rows = c * chunk_rows..((c + 1) * chunk_rows).min(out);
        if !rows.is_empty() {
            matmul_rows_on(isa, w, k, x, prepared, n, out, rows, yp.get());
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn stream_sum_avx2(buf: &[f32]) -> f32 {
    stream_sum_generic(buf)
}

/// Reads every value of `buf` once (see [`stream_sum_generic`]); returns their sum.
pub fn stream_sum(buf: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if have_avx512() {
        // SAFETY: AVX-512F checked.
        return unsafe { stream_sum_avx512(buf) };
    }
    #[cfg(target_arch = "x86_64")]
    if have_avx2() {
        // SAFETY: AVX2 checked.
        return unsafe { stream_sum_avx2(buf) };
    }
    stream_sum_generic(buf)
}

/// The matmul's arithmetic peak on this CPU in GFLOP/s, measured: `threads` threads each run the
/// multiply-add the bf16 matmul uses (`vdpbf16ps` pairs where [`Isa::detect`] picks them, else f32
/// FMAs) on 24 independent accumulators for about `millis` milliseconds. The compute floor of a
/// verification of N tokens is N x 2 x parameters / this. 0 on hosts without AVX2.
pub fn arithmetic_peak_gflops(threads: usize, millis: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        let isa = Isa::detect();
        let (wide, pairs) = (isa.has_avx512(), isa == Isa::Avx512Bf16);
        if !wide && isa != Isa::Avx2 {
            return 0.0;
        }
        let flop_per_round = 24.0
            * if pairs {
                64.0
            } else if wide {
                32.0
            } else {
                16.0
            };
        // SAFETY (both calls): the instructions are those of `isa`, which the CPU has.
        let run = |iters: usize| unsafe { super::simd::peak_probe(iters, wide, pairs) };
        // Calibrate the round count to the time asked for, then time all threads together.
        let t = std::time::Instant::now();
        std::hint::black_box(run(100_000));
        let per_round = t.elapsed().as_secs_f64() / 100_000.0;
        let iters = ((millis as f64 / 1e3) / per_round.max(1e-12)) as usize;
        let t = std::time::Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(move || std::hint::black_box(run(iters)));
            }
        });
        flop_per_round * iters as f64 * threads.max(1) as f64 / t.elapsed().as_secs_f64() / 1e9
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (threads, millis);
        0.0
    }
}

/// Single-threaded `y[n, out] = x[n, k] * w[out, k]^T` (for work already split across threads).
pub fn matmul_local(w: &[f32], out: usize, k: usize, x: &[f32], n: usize, y: &mut [f32]) {
    assert!(
        w.len() >= out * k && x.len() >= n * k && y.len() >= n * out,
        "matmul_local shapes"
    );
    #[cfg(target_arch = "x86_64")]
    {
        use super::simd::{avx2, avx512};
        if have_avx512() {
            // SAFETY: AVX-512 checked; shapes checked above; this thread owns y.
            unsafe { avx512::matmul_rows::<avx512::F32>(w, k, x, n, out, 0..out, y.as_mut_ptr()) };
            return;
        }
        if have_avx2() {
            // SAFETY: AVX2 and FMA checked; as above.
            unsafe { avx2::matmul_rows::<avx2::F32>(w, k, x, n, out, 0..out, y.as_mut_ptr()) };
            return;
        }
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
    #[cfg(target_arch = "x86_64")]
    if have_avx2() {
        // SAFETY: AVX2 and FMA checked.
        return unsafe { softmax_avx2(row) };
    }
    softmax_generic(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_avx2(row: &mut [f32]) {
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
    #[cfg(target_arch = "x86_64")]
    if have_avx2() {
        // SAFETY: AVX2 and FMA checked.
        return unsafe { softmax_by_position_avx2(row, prefix, tail_positions) };
    }
    softmax_by_position_generic(row, prefix, tail_positions)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softmax_by_position_avx2(row: &mut [f32], prefix: usize, tail_positions: &[u32]) {
    softmax_by_position_generic(row, prefix, tail_positions)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn softmax_by_position_avx512(row: &mut [f32], prefix: usize, tail_positions: &[u32]) {
    softmax_by_position_generic(row, prefix, tail_positions)
}

#[inline(always)]
fn softmax_by_position_generic(row: &mut [f32], prefix: usize, tail_positions: &[u32]) {
    let max = row_max(row);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    // 16 partial sums so the prefix loop vectorises; exp_nonpositive is branch-free (and -inf -> 0).
    // Whole chunks go through fixed-size arrays: with a slice of unknown length per chunk the
    // compiler kept this loop scalar (13% of a 16-token verification at a 512-token prefix).
    let mut sums = [0f32; L];
    let (head, tail) = row.split_at_mut(prefix);
    let mut chunks = head.chunks_exact_mut(L);
    for chunk in &mut chunks {
        let chunk: &mut [f32; L] = chunk.try_into().expect("chunks_exact yields L values");
        for i in 0..L {
            chunk[i] = exp_nonpositive(chunk[i] - max);
            sums[i] += chunk[i];
        }
    }
    for (i, x) in chunks.into_remainder().iter_mut().enumerate() {
        *x = exp_nonpositive(*x - max);
        sums[i] += *x;
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

/// The largest value of `row` (NaN ignored, `-inf` for an empty row), over 16 lanes so it vectorises
/// (a single running `f32::max` is a serial chain of compare-and-blend).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; L];
    let mut chunks = row.chunks_exact(L);
    for chunk in &mut chunks {
        for i in 0..L {
            // `>` rather than `f32::max`: the compiler turns it into one vector max per chunk. A NaN
            // never wins the comparison, so NaN entries are skipped as `f32::max` skips them.
            if chunk[i] > lanes[i] {
                lanes[i] = chunk[i];
            }
        }
    }
    for (i, &x) in chunks.remainder().iter().enumerate() {
        if x > lanes[i] {
            lanes[i] = x;
        }
    }
    lanes.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
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
            unsafe { super::simd::avx512::weighted_rows_64(p, m, len, v, acc) };
        } else {
            // SAFETY: as above.
            unsafe { weighted_rows_avx512(p, m, len, v, hd, acc) };
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if have_avx2() {
        // SAFETY: AVX2 and FMA checked; shapes checked above.
        return unsafe { weighted_rows_avx2(p, m, len, v, hd, acc) };
    }
    weighted_rows_generic(p, m, len, v, hd, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn weighted_rows_avx2(p: &[f32], m: usize, len: usize, v: &[f32], hd: usize, acc: &mut [f32]) {
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
    #[cfg(target_arch = "x86_64")]
    if have_avx2() {
        // SAFETY: AVX2 and FMA checked.
        return unsafe { swiglu_avx2(gate, up) };
    }
    swiglu_generic(gate, up)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
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
            (37, 100, 16),
        ] {
            let w: Vec<f32> = (0..out * k).map(|_| rnd()).collect();
            let x: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let want = reference(&w, out, k, &x, n);
            for isa in Isa::available() {
                for bf16 in [false, true] {
                    let m = Matrix::new(w.clone(), bf16);
                    let want = if bf16 {
                        let round = |v: &f32| bf16_to_f32(f32_to_bf16(*v));
                        let wb: Vec<f32> = w.iter().map(round).collect();
                        // With AVX512_BF16 the activations are rounded to bf16 too.
                        let xb: Vec<f32> = if isa == Isa::Avx512Bf16 {
                            x.iter().map(round).collect()
                        } else {
                            x.clone()
                        };
                        reference(&wb, out, k, &xb, n)
                    } else {
                        want.clone()
                    };
                    let mut y = vec![f32::NAN; n * out];
                    matmul_with(isa, &pool, &m, out, k, &x, n, &mut y);
                    for (a, b) in y.iter().zip(&want) {
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{isa:?} {out}x{k} n={n} bf16={bf16}: {a} vs {b}"
                        );
                    }
                    // Batch invariance: each row alone gives the same bits as inside the batch.
                    for c in 0..n {
                        let mut one = vec![f32::NAN; out];
                        matmul_with(isa, &pool, &m, out, k, &x[c * k..(c + 1) * k], 1, &mut one);
                        assert_eq!(one, y[c * out..(c + 1) * out], "{isa:?} row {c} of {n}");
                    }
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

    /// The assembly probes behind [`arithmetic_peak_gflops`] run the multiply-adds they claim: each
    /// round adds 1.0 x 1e-9 to accumulator 0 (the 256-bit probe runs two rounds per iteration). With
    /// `vdpbf16ps` each f32 operand reads as a bf16 pair: the high halves (1.0 and 1e-9 truncated)
    /// multiply, and the low half of 1.0 is zero.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn peak_probes_accumulate_their_products() {
        let iters = 1000;
        let x_bf16 = f32::from_bits(1e-9f32.to_bits() & 0xffff_0000) as f64;
        let mut cases = Vec::new();
        if Isa::Avx2.is_supported() {
            cases.push((false, false, 2.0 * iters as f64 * 1e-9));
        }
        if Isa::Avx512.is_supported() {
            cases.push((true, false, iters as f64 * 1e-9));
        }
        if Isa::Avx512Bf16.is_supported() {
            cases.push((true, true, iters as f64 * x_bf16));
        }
        for (wide, pairs, want) in cases {
            // SAFETY: each case's instructions were checked above.
            let got = unsafe { crate::cpu::simd::peak_probe(iters, wide, pairs) } as f64;
            assert!(
                (got - want).abs() <= 1e-3 * want,
                "wide {wide} pairs {pairs}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 1.0 / 256.0)), 1.0); // tie to even
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }
}
