//! CPU kernels of the forward pass. The matmul streams the weight matrix once per call and applies each
//! block of weight rows to every activation row while it is in cache, so the cost of N rows stays near
//! the cost of one until the arithmetic catches up with memory (DESIGN.md §7). The same generic code is
//! compiled for AVX-512 and chosen at run time; the portable build is the fallback.

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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn matmul_rows_avx512_f32(
    w: &[f32],
    k: usize,
    x: &[f32],
    n: usize,
    out: usize,
    rows: std::ops::Range<usize>,
    y: *mut f32,
) {
    matmul_rows(w, k, x, n, out, rows, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,fma")]
fn matmul_rows_avx512_bf16(
    w: &[u16],
    k: usize,
    x: &[f32],
    n: usize,
    out: usize,
    rows: std::ops::Range<usize>,
    y: *mut f32,
) {
    matmul_rows(w, k, x, n, out, rows, y)
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
// SAFETY: users write disjoint elements only (see each call site).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// `y[n, out] = x[n, k] * w[out, k]^T`, weight rows split over the pool's threads.
pub fn matmul(
    pool: &super::pool::Pool,
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
    let yp = SendPtr(y.as_mut_ptr());
    let threads = pool.threads();
    let avx512 = have_avx512();
    pool.run(&|t| {
        let yp = yp;
        let rows = super::pool::split(out, t, threads, TILE_R);
        if rows.is_empty() {
            return;
        }
        match w {
            Matrix::F32(d) => {
                #[cfg(target_arch = "x86_64")]
                if avx512 {
                    // SAFETY: the CPU has AVX-512F/BW and FMA (checked by have_avx512).
                    unsafe { matmul_rows_avx512_f32(d, k, x, n, out, rows, yp.0) };
                    return;
                }
                matmul_rows(d.as_slice(), k, x, n, out, rows, yp.0)
            }
            Matrix::Bf16(d) => {
                #[cfg(target_arch = "x86_64")]
                if avx512 {
                    // SAFETY: as above.
                    unsafe { matmul_rows_avx512_bf16(d, k, x, n, out, rows, yp.0) };
                    return;
                }
                matmul_rows(d.as_slice(), k, x, n, out, rows, yp.0)
            }
        }
    });
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
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pool::Pool;

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
                    let wb: Vec<f32> = w.iter().map(|&v| bf16_to_f32(f32_to_bf16(v))).collect();
                    reference(&wb, out, k, &x, n)
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
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 1.0 / 256.0)), 1.0); // tie to even
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }
}
