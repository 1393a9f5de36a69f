#![cfg(feature = "cuda")]
//! Parity of the drafter's GPU ops (`kernels/drafter.cu`) with their CPU twins
//! (`specblock::drafter::ops`, `specblock::cpu::{rms_norm, swiglu}`).
//!
//! Every case draws fresh random inputs, poisons the outputs (0xFF bytes: bf16 0xFFFF is a NaN) and
//! writes into strided buffers whose padding columns must stay poisoned. bf16 outputs are compared
//! with the twin's f32 values rounded to bf16: the only differences come from f32 reductions summed in
//! another order (and cosf/expf vs the host's libm), which can flip a bf16 rounding by one unit in the
//! last place, so elementwise and norm ops assert <= 1 bf16 ulp per element and every bf16 output
//! asserts <= 1e-3 relative norm error. Observed on an H100 (driver 580): every norm, SwiGLU, SiLU
//! and rank-feature output within 1 bf16 ulp; attention 0 to 7e-5 relative (a few isolated 1-ulp
//! flips), one-pass and split alike; RoPE below 1e-5 relative in f32. Integer outputs (candidate ids,
//! exact ties included) and pure copies are exact.

mod cuda_common;

use specblock::cpu::kernels::f32_to_bf16;
use specblock::cpu::{rms_norm, swiglu};
use specblock::cuda::drafter::ops::{
    AddRmsNorm, Attention, CacheAppend, DrafterKernels, Elementwise, FuseInputs, HeadFeatures,
    RANK_FEATURES, RmsNorm, Rope, STATUS_TOKEN_OUT_OF_RANGE, ShiftConcat, Swiglu,
    attention_workspace_len,
};
use specblock::cuda::{DeviceBuffer, DeviceCopy, Gpu, Stream, Timer};
use specblock::drafter::ops::{self, AttentionInputs, CacheShape, FuseNorms, bf16_to_f32};
use specblock::error::Error;

/// xorshift64*: fixed seeds, fresh data per case.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-scale, scale).
    fn f(&mut self, scale: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f(scale)).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn up<T: DeviceCopy>(gpu: &Gpu, v: &[T]) -> DeviceBuffer<T> {
    DeviceBuffer::from_slice(gpu, v).expect("upload")
}

fn poisoned<T: DeviceCopy>(gpu: &Gpu, n: usize) -> DeviceBuffer<T> {
    let mut b = DeviceBuffer::new(gpu, n).expect("alloc");
    b.fill_bytes(0xFF).expect("poison");
    b
}

fn down<T: DeviceCopy>(stream: &Stream, b: &DeviceBuffer<T>) -> Vec<T> {
    stream.synchronize().expect("kernel ran");
    b.to_vec().expect("download")
}

/// ‖got − want‖ / ‖want‖ in f64.
fn rel(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut e, mut n) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        e += (g as f64 - w as f64).powi(2);
        n += (w as f64).powi(2);
    }
    (e / n.max(1e-300)).sqrt()
}

/// bf16 bit pattern on a line where adjacent values differ by one.
fn ord(b: u16) -> i32 {
    if b & 0x8000 != 0 {
        -((b & 0x7FFF) as i32)
    } else {
        b as i32
    }
}

/// Checks the bf16 block at column `col0` (`cols` wide, `rows` rows `stride` apart) of `got` against
/// `want` (`rows x cols` f32) rounded to bf16: relative norm error <= 1e-3 and, with `max_ulps`,
/// per-element distance. Returns (relative error, largest ulp distance).
fn check_bf16(
    what: &str,
    got: &[u16],
    stride: usize,
    col0: usize,
    want: &[f32],
    cols: usize,
    max_ulps: Option<i32>,
) -> (f64, i32) {
    let rows = want.len() / cols;
    let mut g = Vec::with_capacity(want.len());
    let mut w = Vec::with_capacity(want.len());
    let mut worst = 0;
    for r in 0..rows {
        for c in 0..cols {
            let gb = got[r * stride + col0 + c];
            let wb = f32_to_bf16(want[r * cols + c]);
            assert!(
                !bf16_to_f32(gb).is_nan(),
                "{what}: row {r} col {c} not written (still poisoned) or NaN"
            );
            worst = worst.max((ord(gb) - ord(wb)).abs());
            g.push(bf16_to_f32(gb));
            w.push(bf16_to_f32(wb));
        }
    }
    let e = rel(&g, &w);
    assert!(e <= 1e-3, "{what}: relative error {e:e}");
    if let Some(m) = max_ulps {
        assert!(worst <= m, "{what}: {worst} bf16 ulps apart");
    }
    (e, worst)
}

/// Padding columns `[from, stride)` of every row must still hold the poison.
fn assert_padding(what: &str, got: &[u16], stride: usize, from: usize) {
    for (r, row) in got.chunks(stride).enumerate() {
        assert!(
            row[from.min(row.len())..].iter().all(|&b| b == 0xFFFF),
            "{what}: padding of row {r} overwritten"
        );
    }
}

fn setup() -> Option<(Gpu, Stream, DrafterKernels)> {
    let gpu = cuda_common::gpu()?;
    let stream = Stream::new(&gpu).expect("stream");
    let k = DrafterKernels::new(&gpu).expect("drafter kernels");
    Some((gpu, stream, k))
}

#[test]
fn fuse_inputs_matches_twin_and_flags_bad_tokens() {
    let Some((gpu, stream, kern)) = setup() else {
        return;
    };
    // (groups, slots, hidden, vocab, seed); hidden 100 and 4096 are not multiples of the block size.
    for &(groups, slots, h, vocab, seed) in &[
        (3usize, 4usize, 64usize, 300usize, 1u64),
        (5, 1, 576, 1000, 2),
        (2, 4, 4096, 77, 3),
        (7, 3, 100, 33, 4),
    ] {
        for bad in [false, true] {
            let mut rng = Rng::new(seed * 10 + bad as u64);
            let cond_stride = h + 3;
            let cond = rng.vec(groups * cond_stride, 2.0);
            let mut tokens: Vec<i32> = (0..groups).map(|_| rng.below(vocab) as i32).collect();
            if bad {
                tokens[0] = vocab as i32;
                *tokens.last_mut().unwrap() = -1;
            }
            let embed: Vec<u16> = rng
                .vec(vocab * h, 1.0)
                .into_iter()
                .map(f32_to_bf16)
                .collect();
            let queries = rng.vec(slots * h, 1.5);
            let w = [rng.vec(h, 1.0), rng.vec(h, 1.0), rng.vec(h, 1.0)];
            let eps = 1e-6;
            let out_stride = 3 * h + 8;
            let d_cond = up(&gpu, &cond);
            let d_tok = up(&gpu, &tokens);
            let d_embed = up(&gpu, &embed);
            let d_q = up(&gpu, &queries);
            let d_w: Vec<_> = w.iter().map(|x| up(&gpu, x)).collect();
            let d_out = poisoned::<u16>(&gpu, groups * slots * out_stride);
            let d_status = poisoned::<i32>(&gpu, 1);
            // SAFETY: every buffer matches the shapes given.
            unsafe {
                kern.clear_status(&gpu, &stream, d_status.ptr()).unwrap();
                kern.fuse_inputs(
                    &gpu,
                    &stream,
                    &FuseInputs {
                        cond: d_cond.ptr(),
                        cond_stride,
                        tokens: d_tok.ptr(),
                        embed: d_embed.ptr(),
                        vocab,
                        queries: d_q.ptr(),
                        w_cond: d_w[0].ptr(),
                        w_tok: d_w[1].ptr(),
                        w_query: d_w[2].ptr(),
                        eps,
                        groups,
                        slots,
                        hidden: h,
                        out: d_out.ptr(),
                        out_stride,
                        status: d_status.ptr(),
                    },
                )
                .unwrap();
            }
            let got = down(&stream, &d_out);
            let status = down(&stream, &d_status)[0];
            let contiguous: Vec<f32> = cond
                .chunks(cond_stride)
                .flat_map(|r| r[..h].iter().copied())
                .collect();
            let mut want = vec![0f32; groups * slots * 3 * h];
            let norms = FuseNorms {
                queries: &queries,
                w_cond: &w[0],
                w_tok: &w[1],
                w_query: &w[2],
                eps,
            };
            let want_status =
                ops::fuse_inputs(&contiguous, &tokens, &embed, &norms, slots, &mut want);
            let expect = if bad { STATUS_TOKEN_OUT_OF_RANGE } else { 0 };
            assert_eq!(status, expect, "device status");
            assert_eq!(want_status, expect, "twin status");
            check_bf16("fuse_inputs", &got, out_stride, 0, &want, 3 * h, Some(1));
            assert_padding("fuse_inputs", &got, out_stride, 3 * h);
            if bad {
                // The bad groups' token parts are zeros, not a read past the embedding.
                for g in [0, groups - 1] {
                    for k in 0..slots {
                        let row = &got[(g * slots + k) * out_stride..];
                        assert!(row[h..2 * h].iter().all(|&b| b == 0));
                    }
                }
            }
        }
    }
}

#[test]
fn rmsnorm_and_add_rmsnorm_match_twins() {
    let Some((gpu, stream, kern)) = setup() else {
        return;
    };
    for &(rows, n, seed) in &[
        (1usize, 64usize, 11u64),
        (7, 576, 12),
        (33, 4096, 13),
        (5, 100, 14),
    ] {
        let mut rng = Rng::new(seed);
        let eps = 1e-5;
        let x_stride = n + 5;
        let x = rng.vec(rows * x_stride, 3.0);
        let w = rng.vec(n, 1.0);
        let out_stride = n + 7;
        let (d_x, d_w) = (up(&gpu, &x), up(&gpu, &w));
        let d_out = poisoned::<u16>(&gpu, rows * out_stride);
        let d_f = poisoned::<f32>(&gpu, rows * n);
        // SAFETY: shapes match.
        unsafe {
            kern.rmsnorm(
                &gpu,
                &stream,
                &RmsNorm {
                    x: d_x.ptr(),
                    x_stride,
                    w: d_w.ptr(),
                    eps,
                    rows,
                    n,
                    out: d_out.ptr(),
                    out_stride,
                    out_f32: d_f.ptr(),
                    out_f32_stride: n,
                },
            )
            .unwrap();
        }
        let xc: Vec<f32> = x
            .chunks(x_stride)
            .flat_map(|r| r[..n].iter().copied())
            .collect();
        let mut want = vec![0f32; rows * n];
        rms_norm(&xc, &w, eps, &mut want);
        let got_f = down(&stream, &d_f);
        assert!(
            rel(&got_f, &want) < 1e-6,
            "rmsnorm f32 {}",
            rel(&got_f, &want)
        );
        check_bf16(
            "rmsnorm",
            &down(&stream, &d_out),
            out_stride,
            0,
            &want,
            n,
            Some(1),
        );
        assert_padding("rmsnorm", &down(&stream, &d_out), out_stride, n);

        // Residual add fused with the norm; bf16 into a column slice (as for the rank-head input).
        let delta = rng.vec(rows * n, 1.0);
        let d_xa = up(&gpu, &xc);
        let d_delta = up(&gpu, &delta);
        let col0 = 3;
        let d_out2 = poisoned::<u16>(&gpu, rows * out_stride);
        let d_f2 = poisoned::<f32>(&gpu, rows * n);
        // SAFETY: shapes match (the bf16 output starts at column 3 of rows n + 7 wide).
        unsafe {
            kern.add_rmsnorm(
                &gpu,
                &stream,
                &AddRmsNorm {
                    x: d_xa.ptr(),
                    delta: d_delta.ptr(),
                    w: d_w.ptr(),
                    eps,
                    rows,
                    n,
                    out: d_out2.ptr_at(col0),
                    out_stride,
                    out_f32: d_f2.ptr(),
                    out_f32_stride: n,
                },
            )
            .unwrap();
        }
        let mut xw = xc.clone();
        let mut want2 = vec![0f32; rows * n];
        ops::add_rms_norm(&mut xw, &delta, &w, eps, &mut want2);
        assert_eq!(
            down(&stream, &d_xa),
            xw,
            "residual add is one f32 add: exact"
        );
        assert!(rel(&down(&stream, &d_f2), &want2) < 1e-5);
        let got2 = down(&stream, &d_out2);
        check_bf16("add_rmsnorm", &got2, out_stride, col0, &want2, n, Some(1));
        for row in got2.chunks(out_stride) {
            assert!(
                row[..col0]
                    .iter()
                    .chain(&row[col0 + n..])
                    .all(|&b| b == 0xFFFF)
            );
        }
    }
}

#[test]
fn rope_matches_twin_on_a_fused_qkv_buffer() {
    let Some((gpu, stream, kern)) = setup() else {
        return;
    };
    for &(rows, nh, nkv, d, theta, seed) in &[
        (4usize, 4usize, 2usize, 16usize, 10_000f32, 21u64),
        (13, 9, 3, 64, 100_000.0, 22),
        (3, 8, 8, 128, 500_000.0, 23),
    ] {
        let mut rng = Rng::new(seed);
        let stride = (nh + 2 * nkv) * d;
        let qkv = rng.vec(rows * stride, 2.0);
        let positions: Vec<i32> = (0..rows).map(|_| rng.below(5000) as i32).collect();
        let inv = ops::rope_inv_freq(d, theta);
        let d_qkv = up(&gpu, &qkv);
        let d_pos = up(&gpu, &positions);
        let d_inv = up(&gpu, &inv);
        // SAFETY: q at column 0, k at column nh*d of the fused buffer.
        unsafe {
            kern.rope(
                &gpu,
                &stream,
                &Rope {
                    q: d_qkv.ptr(),
                    q_stride: stride,
                    k: d_qkv.ptr_at(nh * d),
                    k_stride: stride,
                    positions: d_pos.ptr(),
                    inv_freq: d_inv.ptr(),
                    rows,
                    n_heads: nh,
                    n_kv: nkv,
                    head_dim: d,
                },
            )
            .unwrap();
        }
        let got = down(&stream, &d_qkv);
        let mut want = qkv.clone();
        ops::rope(&mut want, stride, nh, &positions, &inv);
        ops::rope(&mut want[nh * d..], stride, nkv, &positions, &inv);
        // Only cosf/sinf may differ (by an ulp or two): observed-level error is ~1e-7.
        let e = rel(&got, &want);
        assert!(e < 1e-5, "rope relative error {e:e}");
        for r in 0..rows {
            let v = r * stride + (nh + nkv) * d;
            assert_eq!(&got[v..v + nkv * d], &qkv[v..v + nkv * d], "V untouched");
        }
    }
}

#[test]
fn cache_append_copies_rows_exactly() {
    let Some((gpu, stream, kern)) = setup() else {
        return;
    };
    for &(rows, nkv, d, cap, off, seed) in &[
        (9usize, 3usize, 64usize, 50usize, 17usize, 31u64),
        (1, 1, 16, 4, 3, 32),
        (20, 8, 128, 64, 0, 33),
    ] {
        let mut rng = Rng::new(seed);
        let stride = (4 + 2 * nkv) * d; // K and V inside a fused QKV row
        let src = rng.vec(rows * stride, 1.0);
        let shape = CacheShape {
            n_kv: nkv,
            head_dim: d,
            capacity: cap,
        };
        let init_k = rng.vec(nkv * cap * d, 5.0);
        let init_v = rng.vec(nkv * cap * d, 5.0);
        let d_src = up(&gpu, &src);
        let d_k = up(&gpu, &init_k);
        let d_v = up(&gpu, &init_v);
        let a = CacheAppend {
            k_src: d_src.ptr_at(4 * d),
            v_src: d_src.ptr_at((4 + nkv) * d),
            src_stride: stride,
            rows,
            n_kv: nkv,
            head_dim: d,
            cache_k: d_k.ptr(),
            cache_v: d_v.ptr(),
            capacity: cap,
            row_offset: off,
        };
        // SAFETY: shapes match.
        unsafe { kern.cache_append(&gpu, &stream, &a).unwrap() };
        let (mut wk, mut wv) = (init_k.clone(), init_v.clone());
        ops::cache_append(&src[4 * d..], stride, rows, shape, &mut wk, off);
        ops::cache_append(&src[(4 + nkv) * d..], stride, rows, shape, &mut wv, off);
        assert_eq!(down(&stream, &d_k), wk);
        assert_eq!(down(&stream, &d_v), wv);
        // Past the capacity: rejected before launching.
        let over = CacheAppend {
            row_offset: cap - rows + 1,
            ..a
        };
        // SAFETY: rejected by validation; nothing is launched.
        let err = unsafe { kern.cache_append(&gpu, &stream, &over) };
        assert!(matches!(err, Err(Error::Capacity { .. })), "{err:?}");
    }
}

/// One attention case: `groups` groups of `slots` rows; context groups see a cache prefix ending
/// at their own slot, seed groups see `origin prefix + visibility` plus their own earlier slots.
struct AttnCase {
    groups: usize,
    slots: usize,
    n_heads: usize,
    n_kv: usize,
    d: usize,
    capacity: usize,
    seeds: bool,
    seed: u64,
}

/// Runs one case with the one-pass kernel (`split` false) or the split-key path; returns the relative
/// error against the twin.
fn run_attention(
    gpu: &Gpu,
    stream: &Stream,
    kern: &DrafterKernels,
    c: &AttnCase,
    split: bool,
) -> f64 {
    let mut rng = Rng::new(c.seed);
    let rows = c.groups * c.slots;
    let (qd, kvd) = (c.n_heads * c.d, c.n_kv * c.d);
    let stride = qd + 2 * kvd;
    let qkv = rng.vec(rows * stride, 1.5);
    let cache_k = rng.vec(c.n_kv * c.capacity * c.d, 1.5);
    let cache_v = rng.vec(c.n_kv * c.capacity * c.d, 1.0);
    let mut prefix = vec![0i32; rows];
    let mut own = vec![0i32; rows];
    for g in 0..c.groups {
        // Entry base row in the cache: random, leaving room for the group's slots.
        let base = rng.below(c.capacity - c.slots + 1);
        let vis = rng.below(c.slots);
        for k in 0..c.slots {
            let r = g * c.slots + k;
            if c.seeds {
                prefix[r] = (base + vis + 1) as i32;
                own[r] = k as i32 + 1;
            } else {
                prefix[r] = (base + k + 1) as i32;
            }
        }
    }
    let out_stride = qd + 4;
    let d_qkv = up(gpu, &qkv);
    let d_ck = up(gpu, &cache_k);
    let d_cv = up(gpu, &cache_v);
    let d_prefix = up(gpu, &prefix);
    let d_own = up(gpu, &own);
    let d_out = poisoned::<u16>(gpu, rows * out_stride);
    let scale = 1.0 / (c.d as f32).sqrt();
    let ws_len = attention_workspace_len(rows, c.n_heads, c.d);
    let d_ws = poisoned::<f32>(gpu, ws_len);
    // SAFETY: shapes match; own K/V are the K and V column blocks of the fused buffer.
    unsafe {
        let a = Attention {
            q: d_qkv.ptr(),
            q_stride: stride,
            cache_k: d_ck.ptr(),
            cache_v: d_cv.ptr(),
            capacity: c.capacity,
            prefix_len: d_prefix.ptr(),
            own_k: d_qkv.ptr_at(qd),
            own_v: d_qkv.ptr_at(qd + kvd),
            own_stride: stride,
            own_len: if c.seeds { d_own.ptr() } else { 0 },
            rows,
            n_heads: c.n_heads,
            n_kv: c.n_kv,
            head_dim: c.d,
            scale,
            out: d_out.ptr(),
            out_stride,
        };
        if split {
            kern.attention_split(gpu, stream, &a, d_ws.ptr(), ws_len)
                .unwrap();
        } else {
            kern.attention(gpu, stream, &a).unwrap();
        }
    }
    let got = down(stream, &d_out);
    let mut want = vec![0f32; rows * qd];
    let own_len: &[i32] = if c.seeds { &own } else { &[] };
    ops::attention(
        &AttentionInputs {
            q: &qkv,
            q_stride: stride,
            cache_k: &cache_k,
            cache_v: &cache_v,
            shape: CacheShape {
                n_kv: c.n_kv,
                head_dim: c.d,
                capacity: c.capacity,
            },
            n_heads: c.n_heads,
            prefix_len: &prefix,
            own_k: &qkv[qd..],
            own_v: &qkv[qd + kvd..],
            own_stride: stride,
            own_len,
            scale,
        },
        &mut want,
    );
    assert_padding("attention", &got, out_stride, qd);
    // No per-element ulp bound: outputs near zero come from cancelling sums.
    check_bf16("attention", &got, out_stride, 0, &want, qd, None).0
}

#[test]
fn attention_matches_twin_for_context_and_seed_rows() {
    let Some((gpu, stream, kern)) = setup() else {
        return;
    };
    let cases = [
        // The tiny golden drafter's shape, seeds with own slots.
        AttnCase {
            groups: 5,
            slots: 4,
            n_heads: 4,
            n_kv: 2,
            d: 16,
            capacity: 40,
            seeds: true,
            seed: 41,
        },
        // SmolLM2's drafter shape (9 heads, 3 KV heads, d 64), context rows.
        AttnCase {
            groups: 3,
            slots: 4,
            n_heads: 9,
            n_kv: 3,
            d: 64,
            capacity: 400,
            seeds: false,
            seed: 42,
        },
        // Long prefixes (up to ~3000 keys: many tiles), d 128, no GQA sharing.
        AttnCase {
            groups: 2,
            slots: 4,
            n_heads: 8,
            n_kv: 8,
            d: 128,
            capacity: 3000,
            seeds: true,
            seed: 43,
        },
        // K = 1, d 64, prefixes in 1..=80 (partial tiles).
        AttnCase {
            groups: 7,
            slots: 1,
            n_heads: 6,
            n_kv: 2,
            d: 64,
            capacity: 80,
            seeds: false,
            seed: 44,
        },
        AttnCase {
            groups: 3,
            slots: 4,
            n_heads: 8,
            n_kv: 1,
            d: 128,
            capacity: 2100,
            seeds: false,
            seed: 45,
        },
        // GQA group of 12 heads: two blocks of 6 heads share each KV head; d 32.
        AttnCase {
            groups: 4,
            slots: 4,
            n_heads: 12,
            n_kv: 1,
            d: 32,
            capacity: 700,
            seeds: true,
            seed: 46,
        },
    ];
    for c in &cases {
        for split in [false, true] {
            let e = run_attention(&gpu, &stream, &kern, c, split);
            eprintln!(
                "attention d {} heads {}/{} seeds {} split {split}: relative error {e:e}",
                c.d, c.n_heads, c.n_kv, c.seeds
            );
        }
    }
}

#[test]
fn attention_clamps_lengths_and_empty_rows_are_zero() {
    let Some((gpu, stream, kern)) = setup() else {
        return;
    };
    let (nh, nkv, d, cap, rows) = (2usize, 1usize, 16usize, 8usize, 3usize);
    let mut rng = Rng::new(51);
    let q = rng.vec(rows * nh * d, 1.0);
    let own_kv = rng.vec(rows * nkv * d, 1.0);
    let ck = rng.vec(nkv * cap * d, 1.0);
    let cv = rng.vec(nkv * cap * d, 1.0);
    // Row 0: nothing visible; row 1: prefix far past the capacity; row 2: negative prefix, own_len
    // past the start of the buffer.
    let prefix = [0i32, 1000, -5];
    let own = [0i32, 0, 99];
    let (d_q, d_own) = (up(&gpu, &q), up(&gpu, &own_kv));
    let (d_ck, d_cv) = (up(&gpu, &ck), up(&gpu, &cv));
    let (d_p, d_o) = (up(&gpu, &prefix), up(&gpu, &own));
    let ws_len = attention_workspace_len(rows, nh, d);
    let d_ws = poisoned::<f32>(&gpu, ws_len);
    // Both paths: the split path puts all three rows in one block, masked per row.
    for split in [false, true] {
        let d_out = poisoned::<u16>(&gpu, rows * nh * d);
        // SAFETY: shapes match; the lengths are clamped on the device.
        unsafe {
            let a = Attention {
                q: d_q.ptr(),
                q_stride: nh * d,
                cache_k: d_ck.ptr(),
                cache_v: d_cv.ptr(),
                capacity: cap,
                prefix_len: d_p.ptr(),
                own_k: d_own.ptr(),
                own_v: d_own.ptr(),
                own_stride: nkv * d,
                own_len: d_o.ptr(),
                rows,
                n_heads: nh,
                n_kv: nkv,
                head_dim: d,
                scale: 0.25,
                out: d_out.ptr(),
                out_stride: nh * d,
            };
            if split {
                kern.attention_split(&gpu, &stream, &a, d_ws.ptr(), ws_len)
                    .unwrap();
            } else {
                kern.attention(&gpu, &stream, &a).unwrap();
            }
        }
        let got = down(&stream, &d_out);
        assert!(
            got[..nh * d].iter().all(|&b| b == 0),
            "empty row is zero (split {split})"
        );
        let mut want = vec![0f32; rows * nh * d];
        ops::attention(
            &AttentionInputs {
                q: &q,
                q_stride: nh * d,
                cache_k: &ck,
                cache_v: &cv,
                shape: CacheShape {
                    n_kv: nkv,
                    head_dim: d,
                    capacity: cap,
                },
                n_heads: nh,
                prefix_len: &prefix,
                own_k: &own_kv,
                own_v: &own_kv,
                own_stride: nkv * d,
                own_len: &own,
                scale: 0.25,
            },
            &mut want,
        );
        check_bf16(
            "attention clamped",
            &got[nh * d..],
            nh * d,
            0,
            &want[nh * d..],
            nh * d,
            None,
        );
    }
}

#[test]
fn swiglu_silu_shift_and_cast_match_twins() {
    let Some((gpu, stream, kern)) = setup() else {
        return;
    };
    for &(rows, f, h, slots, seed) in &[
        (1usize, 96usize, 64usize, 1usize, 61u64),
        (12, 1536, 576, 4, 62),
        (9, 100, 4096, 3, 63),
    ] {
        let mut rng = Rng::new(seed);
        // SwiGLU from a fused [rows, 2F] gate-up buffer, gate first.
        let gu = rng.vec(rows * 2 * f, 6.0);
        let d_gu = up(&gpu, &gu);
        let out_stride = f + 3;
        let d_out = poisoned::<u16>(&gpu, rows * out_stride);
        // SAFETY: shapes match.
        unsafe {
            kern.swiglu(
                &gpu,
                &stream,
                &Swiglu {
                    gate: d_gu.ptr(),
                    up: d_gu.ptr_at(f),
                    in_stride: 2 * f,
                    rows,
                    ffn: f,
                    out: d_out.ptr(),
                    out_stride,
                },
            )
            .unwrap();
        }
        let mut want = Vec::with_capacity(rows * f);
        for r in gu.chunks(2 * f) {
            let mut g = r[..f].to_vec();
            swiglu(&mut g, &r[f..]);
            want.extend(g);
        }
        let got = down(&stream, &d_out);
        check_bf16("swiglu", &got, out_stride, 0, &want, f, Some(1));
        assert_padding("swiglu", &got, out_stride, f);

        // SiLU (rank head hidden) from a strided input.
        let x = rng.vec(rows * (f + 1), 8.0);
        let d_x = up(&gpu, &x);
        let d_s = poisoned::<u16>(&gpu, rows * f);
        let e = Elementwise {
            x: d_x.ptr(),
            x_stride: f + 1,
            rows,
            n: f,
            out: d_s.ptr(),
            out_stride: f,
        };
        // SAFETY: shapes match.
        unsafe { kern.silu_bf16(&gpu, &stream, &e).unwrap() };
        let mut want: Vec<f32> = x
            .chunks(f + 1)
            .flat_map(|r| r[..f].iter().copied())
            .collect();
        ops::silu(&mut want);
        check_bf16("silu", &down(&stream, &d_s), f, 0, &want, f, Some(1));

        // Plain cast: exact.
        let d_c = poisoned::<u16>(&gpu, rows * f);
        // SAFETY: shapes match.
        unsafe {
            kern.f32_to_bf16(
                &gpu,
                &stream,
                &Elementwise {
                    out: d_c.ptr(),
                    ..e
                },
            )
            .unwrap()
        };
        let want: Vec<u16> = x
            .chunks(f + 1)
            .flat_map(|r| r[..f].iter().map(|&v| f32_to_bf16(v)))
            .collect();
        assert_eq!(down(&stream, &d_c), want, "cast is exact");

        // Shift concat: a pure copy, exact after rounding.
        let groups = rows.div_ceil(slots);
        let srows = groups * slots;
        let xs = rng.vec(srows * (h + 5), 2.0);
        let d_xs = up(&gpu, &xs);
        let sh_stride = 2 * h + 8;
        let d_sh = poisoned::<u16>(&gpu, srows * sh_stride);
        // SAFETY: shapes match.
        unsafe {
            kern.shift_concat(
                &gpu,
                &stream,
                &ShiftConcat {
                    x: d_xs.ptr(),
                    x_stride: h + 5,
                    groups,
                    slots,
                    hidden: h,
                    out: d_sh.ptr(),
                    out_stride: sh_stride,
                },
            )
            .unwrap();
        }
        let xc: Vec<f32> = xs
            .chunks(h + 5)
            .flat_map(|r| r[..h].iter().copied())
            .collect();
        let mut want = vec![0f32; srows * 2 * h];
        ops::shift_concat(&xc, slots, h, &mut want);
        let got = down(&stream, &d_sh);
        let (e, ulps) = check_bf16("shift_concat", &got, sh_stride, 0, &want, 2 * h, Some(0));
        assert_eq!((e, ulps), (0.0, 0));
        assert_padding("shift_concat", &got, sh_stride, 2 * h);
    }
}

#[test]
fn head_features_match_twin() {
    let Some((gpu, stream, kern)) = setup() else {
        return;
    };
    // (rows, vocab_d, T, kc, hidden, target vocab, with normed, seed)
    for &(rows, vd, t, kc, h, vocab, with_normed, seed) in &[
        (
            3usize, 120usize, 10usize, 4usize, 64usize, 300usize, true, 71u64,
        ),
        (9, 1000, 10, 10, 576, 5000, true, 72),
        (4, 32000, 64, 8, 4096, 50000, false, 73),
        (2, 70, 16, 64, 64, 100, true, 74),
        (5, 4099, 12, 1, 100, 9000, true, 75),
        // Adversarial rows (below): too many candidates, the kernel's full-scan fallback.
        (2, 150_000, 64, 64, 64, 160_000, true, 76),
    ] {
        let mut rng = Rng::new(seed);
        let ls = vd + 3;
        let mut logits = rng.vec(rows * ls, 8.0);
        // Exact ties among the top values: selection must prefer the lower draft id on both sides.
        for r in 0..rows {
            let (a, b) = (rng.below(vd), rng.below(vd));
            logits[r * ls + a] = 9.5;
            logits[r * ls + b] = 9.5;
        }
        if vd == 150_000 {
            // The kernel's thread t (of 1024) scans ids t, t + 1024, ...: make threads 0..63 hold
            // nothing but values above the 64th-largest thread maximum, so ~9000 keys pass the
            // threshold (more than the 2048 candidates it keeps) and it falls back to full scans.
            for r in 0..rows {
                for i in 0..vd {
                    if i % 1024 < 64 {
                        logits[r * ls + i] =
                            20.0 + (i % 1024) as f32 * 1e-2 - (i / 1024) as f32 * 1e-5;
                    }
                }
            }
        }
        let normed = rng.vec(rows * h, 1.0);
        // d2t: target = i + d2t[i] lands inside the target vocabulary.
        let d2t: Vec<i32> = (0..vd).map(|_| rng.below(vocab - vd + 1) as i32).collect();
        let rank_stride = h + RANK_FEATURES + 1; // padded (e.g. for GEMM alignment)
        let d_l = up(&gpu, &logits);
        let d_n = up(&gpu, &normed);
        let d_d2t = up(&gpu, &d2t);
        let d_rank = poisoned::<u16>(&gpu, rows * rank_stride);
        let d_ids = poisoned::<i32>(&gpu, rows * kc);
        let d_lp = poisoned::<f32>(&gpu, rows * kc);
        let d_dids = poisoned::<i32>(&gpu, rows * kc);
        let d_lse = poisoned::<f32>(&gpu, rows);
        // SAFETY: shapes match.
        unsafe {
            kern.head_features(
                &gpu,
                &stream,
                &HeadFeatures {
                    logits: d_l.ptr(),
                    logits_stride: ls,
                    rows,
                    vocab_d: vd,
                    topk_t: t,
                    kc,
                    normed: if with_normed { d_n.ptr() } else { 0 },
                    normed_stride: h,
                    hidden: h,
                    rank_in: d_rank.ptr(),
                    rank_stride,
                    d2t: d_d2t.ptr(),
                    cand_ids: d_ids.ptr(),
                    cand_logprobs: d_lp.ptr(),
                    cand_draft_ids: d_dids.ptr(),
                    row_lse: d_lse.ptr(),
                },
            )
            .unwrap();
        }
        let rank = down(&stream, &d_rank);
        let (ids, lp) = (down(&stream, &d_ids), down(&stream, &d_lp));
        let (dids, lse) = (down(&stream, &d_dids), down(&stream, &d_lse));
        let mut want_feat = Vec::new();
        for r in 0..rows {
            let row = &logits[r * ls..r * ls + vd];
            let tw = ops::head_features(row, t, kc);
            want_feat.extend_from_slice(&tw.features);
            let want_ids: Vec<i32> = tw.candidates.iter().map(|c| c.0 as i32).collect();
            assert_eq!(
                &dids[r * kc..(r + 1) * kc],
                &want_ids[..],
                "draft ids row {r}"
            );
            let want_tgt: Vec<i32> = want_ids.iter().map(|&i| i + d2t[i as usize]).collect();
            assert_eq!(
                &ids[r * kc..(r + 1) * kc],
                &want_tgt[..],
                "target ids row {r}"
            );
            for (i, c) in tw.candidates.iter().enumerate() {
                let g = lp[r * kc + i];
                assert!(
                    (g - c.1).abs() <= 1e-4,
                    "logprob row {r} #{i}: {g} vs {}",
                    c.1
                );
            }
            assert!(
                (lse[r] - tw.lse).abs() <= 1e-5 * tw.lse.abs().max(1.0),
                "lse row {r}"
            );
            let hd = &rank[r * rank_stride..r * rank_stride + h];
            if with_normed {
                let want: Vec<u16> = normed[r * h..(r + 1) * h]
                    .iter()
                    .map(|&v| f32_to_bf16(v))
                    .collect();
                assert_eq!(hd, &want[..], "normed copy row {r}");
            } else {
                assert!(hd.iter().all(|&b| b == 0xFFFF), "normed columns untouched");
            }
        }
        check_bf16(
            "rank features",
            &rank,
            rank_stride,
            h,
            &want_feat,
            RANK_FEATURES,
            Some(1),
        );
        assert_padding("rank_in", &rank, rank_stride, h + RANK_FEATURES);
    }
}

#[test]
fn wrappers_reject_bad_shapes_before_launching() {
    let Some((gpu, stream, kern)) = setup() else {
        return;
    };
    let buf = poisoned::<f32>(&gpu, 64);
    let p = buf.ptr();
    // SAFETY: every call below fails validation; nothing is launched.
    unsafe {
        let a = Attention {
            q: p,
            q_stride: 64,
            cache_k: p,
            cache_v: p,
            capacity: 1,
            prefix_len: p,
            rows: 1,
            n_heads: 3,
            n_kv: 2,
            head_dim: 16,
            out: p,
            out_stride: 64,
            ..Default::default()
        };
        assert!(kern.attention(&gpu, &stream, &a).is_err(), "GQA ratio");
        let a = Attention {
            n_heads: 1,
            n_kv: 1,
            head_dim: 256,
            q_stride: 256,
            out_stride: 256,
            ..a
        };
        assert!(kern.attention(&gpu, &stream, &a).is_err(), "head_dim");
        let r = Rope {
            q: p,
            q_stride: 64,
            k: p,
            k_stride: 64,
            positions: p,
            inv_freq: p,
            rows: 1,
            n_heads: 1,
            n_kv: 1,
            head_dim: 15,
        };
        assert!(kern.rope(&gpu, &stream, &r).is_err(), "odd head_dim");
        let h = HeadFeatures {
            logits: p,
            logits_stride: 64,
            rows: 1,
            vocab_d: 64,
            topk_t: 9,
            rank_in: p,
            rank_stride: 64,
            ..Default::default()
        };
        assert!(kern.head_features(&gpu, &stream, &h).is_err(), "T < 10");
        let f = FuseInputs {
            groups: 1,
            slots: 1,
            hidden: 8,
            vocab: 1,
            cond: p,
            cond_stride: 8,
            tokens: p,
            embed: p,
            queries: p,
            w_cond: p,
            w_tok: p,
            w_query: p,
            out: p,
            out_stride: 20,
            status: p,
            eps: 1e-6,
        };
        assert!(
            matches!(
                kern.fuse_inputs(&gpu, &stream, &f),
                Err(Error::ShapeMismatch { .. })
            ),
            "out stride < 3 hidden"
        );
    }
}

/// Not a benchmark (helper benches compose these with the GEMMs): prints the time of the two heavy
/// kernels at the SmolLM2 drafter's shape so a slow kernel is visible in the GPU log.
#[test]
fn print_heavy_kernel_timings() {
    let Some((gpu, stream, kern)) = setup() else {
        return;
    };
    let mut rng = Rng::new(81);
    let (rows, nh, nkv, d, cap) = (64usize, 9usize, 3usize, 64usize, 4096usize);
    let q = rng.vec(rows * nh * d, 1.0);
    let ck = rng.vec(nkv * cap * d, 1.0);
    let prefix = vec![cap as i32; rows];
    let (d_q, d_ck, d_p) = (up(&gpu, &q), up(&gpu, &ck), up(&gpu, &prefix));
    let d_out = poisoned::<u16>(&gpu, rows * nh * d);
    let a = Attention {
        q: d_q.ptr(),
        q_stride: nh * d,
        cache_k: d_ck.ptr(),
        cache_v: d_ck.ptr(),
        capacity: cap,
        prefix_len: d_p.ptr(),
        rows,
        n_heads: nh,
        n_kv: nkv,
        head_dim: d,
        scale: 0.125,
        out: d_out.ptr(),
        out_stride: nh * d,
        ..Default::default()
    };
    let timer = Timer::new(&gpu).unwrap();
    let time = |f: &dyn Fn()| -> f32 {
        f();
        stream.synchronize().unwrap();
        timer.start(&stream).unwrap();
        for _ in 0..20 {
            f();
        }
        timer.stop_ms(&stream).unwrap() * 1000.0 / 20.0
    };
    // SAFETY: shapes match.
    let us = time(&|| unsafe { kern.attention(&gpu, &stream, &a).unwrap() });
    eprintln!("sb_attention rows {rows} heads {nh}/{nkv} d {d} keys {cap}: {us:.1} us");
    let ws_len = attention_workspace_len(rows, nh, d);
    let d_ws = poisoned::<f32>(&gpu, ws_len);
    for r in [64usize, 16] {
        let a = Attention { rows: r, ..a };
        // SAFETY: shapes match; the workspace is large enough.
        let us = time(&|| unsafe {
            kern.attention_split(&gpu, &stream, &a, d_ws.ptr(), ws_len)
                .unwrap()
        });
        eprintln!("sb_attention split rows {r} heads {nh}/{nkv} d {d} keys {cap}: {us:.1} us");
    }
    let vd = 32000;
    let logits = rng.vec(rows * vd, 8.0);
    let d2t = vec![0i32; vd];
    let (d_l, d_d2t) = (up(&gpu, &logits), up(&gpu, &d2t));
    let h = 576;
    let d_rank = poisoned::<u16>(&gpu, rows * (h + RANK_FEATURES));
    let d_ids = poisoned::<i32>(&gpu, rows * 64);
    let d_lp = poisoned::<f32>(&gpu, rows * 64);
    for (t, kc) in [(10usize, 10usize), (64, 64)] {
        let hf = HeadFeatures {
            logits: d_l.ptr(),
            logits_stride: vd,
            rows,
            vocab_d: vd,
            topk_t: t,
            kc,
            hidden: h,
            rank_in: d_rank.ptr(),
            rank_stride: h + RANK_FEATURES,
            d2t: d_d2t.ptr(),
            cand_ids: d_ids.ptr(),
            cand_logprobs: d_lp.ptr(),
            ..Default::default()
        };
        // SAFETY: shapes match.
        let us = time(&|| unsafe { kern.head_features(&gpu, &stream, &hf).unwrap() });
        eprintln!("sb_head_features rows {rows} vocab_d {vd} T {t} kc {kc}: {us:.1} us");
    }
}
