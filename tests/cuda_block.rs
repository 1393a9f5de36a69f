#![cfg(feature = "cuda")]
//! GPU drafter block forward: the cuBLAS bf16 GEMM against an f64 CPU reference, and the whole block
//! (`GpuDrafter`) against the CPU `SpecBlockDrafter` on the golden tiny drafter.

mod cuda_common;

use std::path::PathBuf;

use specblock::cuda::blas::Blas;
use specblock::cuda::drafter::{GpuDrafter, GpuDrafterCapacity};
use specblock::cuda::{DeviceBuffer, Gpu, Stream};
use specblock::drafter::{BlockOutput, ContextCache, DrafterConfig, SpecBlockDrafter};
use specblock::error::Error;
use specblock::io::safetensors::{SafeTensors, TensorData, serialize};

/// Waits for all work of the context, the legacy stream included: synchronous uploads and memsets run
/// there and do not order against the non-blocking streams the tests launch on.
fn sync_all(gpu: &Gpu) {
    gpu.bind().unwrap();
    // SAFETY: plain driver call with the context current.
    let r = unsafe { cudarc::driver::sys::cuCtxSynchronize() };
    assert_eq!(
        r,
        cudarc::driver::sys::CUresult::CUDA_SUCCESS,
        "cuCtxSynchronize"
    );
}

/// A tiny xorshift64* generator: fixed seeds, fresh data per case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn bf16(x: f32) -> u16 {
    specblock::cpu::kernels::f32_to_bf16(x)
}

fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// ‖got − want‖ / ‖want‖ in f64.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w) * (g as f64 - w);
        den += w * w;
    }
    (num / den.max(1e-300)).sqrt()
}

/// The cuBLAS handle, or `None` after a skip message (a panic under SPECBLOCK_REQUIRE_GPU=1: a GPU
/// machine without cuBLAS must fail the GPU run, not pass it by skipping).
fn blas(gpu: &Gpu, stream: &Stream) -> Option<Blas> {
    match Blas::new(gpu, stream) {
        Ok(b) => Some(b),
        Err(Error::NoDevice(why)) => {
            if std::env::var("SPECBLOCK_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("SPECBLOCK_REQUIRE_GPU=1 but cuBLAS is missing: {why}");
            }
            eprintln!("skipping: {why}");
            None
        }
        Err(e) => panic!("cuBLAS handle: {e:?}"),
    }
}

/// `c = a · w^T + beta · c0` on the GPU against an f64 reference from the same bf16-rounded inputs:
/// several shapes including odd sizes, strided `a`/`c` rows, and beta = 1 (the residual adds of the
/// block use it). Only accumulation order and f32 rounding differ: expected ~1e-7..1e-6 relative.
#[test]
fn gemm_bf16_matches_f64_reference() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    let Some(blas) = blas(&gpu, &stream) else {
        return;
    };
    // (rows, out, inner, lda pad, ldc pad, beta)
    let cases: [(usize, usize, usize, usize, usize, f32); 7] = [
        (1, 1, 1, 0, 0, 0.0),
        (4, 64, 64, 0, 0, 0.0),
        (7, 129, 65, 3, 5, 0.0),
        (33, 300, 257, 0, 0, 1.0),
        (1, 4096, 4096, 0, 0, 0.0),
        (40, 1000, 4111, 1, 0, 1.0),
        (320, 257, 1024, 0, 7, 0.0),
    ];
    let mut worst = 0f64;
    for (case, &(rows, out, inner, apad, cpad, beta)) in cases.iter().enumerate() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((case as u64 + 1) * 0x1234_5678_9abc));
        let (lda, ldc) = (inner + apad, out + cpad);
        let a: Vec<u16> = (0..rows * lda).map(|_| bf16(rng.uniform())).collect();
        let w: Vec<u16> = (0..out * inner).map(|_| bf16(rng.uniform())).collect();
        let c0: Vec<f32> = (0..rows * ldc).map(|_| rng.uniform()).collect();
        let da = DeviceBuffer::from_slice(&gpu, &a).unwrap();
        let dw = DeviceBuffer::from_slice(&gpu, &w).unwrap();
        let mut dc = DeviceBuffer::from_slice(&gpu, &c0).unwrap();
        if beta == 0.0 {
            dc.fill_bytes(0xFF).unwrap(); // NaN poison: beta = 0 must not read c
        }
        sync_all(&gpu);
        // SAFETY: the buffers hold exactly the strided extents the call reads and writes.
        unsafe {
            blas.gemm_bf16_raw(
                &stream,
                rows,
                out,
                inner,
                da.ptr(),
                lda,
                dw.ptr(),
                dc.ptr(),
                ldc,
                beta,
            )
            .unwrap();
        }
        stream.synchronize().unwrap();
        let got = dc.to_vec().unwrap();
        let (mut g, mut want) = (Vec::new(), Vec::new());
        for r in 0..rows {
            for o in 0..out {
                let mut acc = 0f64;
                for i in 0..inner {
                    acc += from_bf16(a[r * lda + i]) as f64 * from_bf16(w[o * inner + i]) as f64;
                }
                acc += beta as f64 * c0[r * ldc + o] as f64;
                want.push(acc);
                g.push(got[r * ldc + o]);
            }
            if beta == 0.0 {
                // Padding columns of c are not written (still the poison).
                for o in out..ldc {
                    assert!(
                        got[r * ldc + o].is_nan(),
                        "GEMM wrote past `out` in row {r}"
                    );
                }
            }
        }
        let err = rel_err(&g, &want);
        eprintln!(
            "gemm {rows}x{out}x{inner} (lda {lda}, ldc {ldc}, beta {beta}): rel err {err:.2e}"
        );
        worst = worst.max(err);
        assert!(
            err <= 1e-3,
            "GEMM {rows}x{out}x{inner}: relative error {err:.3e} > 1e-3"
        );
    }
    eprintln!("worst GEMM relative error {worst:.2e} (expected ~1e-7..1e-6)");
    // The checked wrapper refuses undersized buffers.
    let small = DeviceBuffer::<u16>::new(&gpu, 3).unwrap();
    let mut c = DeviceBuffer::<f32>::new(&gpu, 4).unwrap();
    assert!(matches!(
        blas.gemm_bf16(&stream, 2, 2, 2, &small, &small, &mut c, 0.0),
        Err(Error::BufferTooSmall { .. })
    ));
}

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/engine/tests/fixtures"
    ))
}

fn f32s(g: &SafeTensors, name: &str) -> Vec<f32> {
    g.f32(name).unwrap_or_else(|e| panic!("{e}")).1
}

fn ids(g: &SafeTensors, name: &str) -> Vec<u32> {
    g.i64(name)
        .unwrap_or_else(|e| panic!("{e}"))
        .1
        .iter()
        .map(|&x| x as u32)
        .collect()
}

fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| from_bf16(bf16(x))).collect()
}

/// The tiny drafter's checkpoint with every float tensor rounded to bf16 (written as BF16; `t2d` is
/// optional and dropped), so the CPU reference and the GPU use identical weights.
fn bf16_checkpoint(dir: &std::path::Path) -> SafeTensors {
    let st = SafeTensors::open(&dir.join("model.safetensors")).unwrap();
    let mut bits: Vec<(String, Vec<usize>, Vec<u16>)> = Vec::new();
    let mut ints: Vec<(String, Vec<usize>, Vec<i64>)> = Vec::new();
    for name in st.entries.keys() {
        if let Ok((shape, v)) = st.f32(name) {
            bits.push((name.clone(), shape, v.iter().map(|&x| bf16(x)).collect()));
        } else if let Ok((shape, v)) = st.i64(name) {
            ints.push((name.clone(), shape, v));
        }
    }
    let mut tensors: Vec<(&str, Vec<usize>, TensorData<'_>)> = Vec::new();
    for (n, s, v) in &bits {
        tensors.push((n, s.clone(), TensorData::BF16(v)));
    }
    for (n, s, v) in &ints {
        tensors.push((n, s.clone(), TensorData::I64(v)));
    }
    SafeTensors::parse(serialize(&tensors).unwrap(), "bf16 tiny drafter").unwrap()
}

/// ‖got − want‖ / ‖want‖ of f32 vectors.
fn rel32(got: &[f32], want: &[f32]) -> f64 {
    let w: Vec<f64> = want.iter().map(|&x| x as f64).collect();
    rel_err(got, &w)
}

/// GPU rows `rows` of a `[*, width]` output.
fn rows_of(buf: &DeviceBuffer<f32>, first: usize, n: usize, width: usize) -> Vec<f32> {
    let all = buf.to_vec().unwrap();
    all[first * width..(first + n) * width].to_vec()
}

/// The block tolerance. The weights are identical (bf16) on both sides; what differs is that the GPU
/// rounds every GEMM *input* activation to bf16 (relative error up to 2^-9 ≈ 2e-3 per element, about
/// 1e-3 r.m.s., mostly averaging out inside each dot product) and sums in another order. Through ~10
/// chained GEMMs with residuals, norms and softmax, the expected output error is a few 1e-3 relative
/// (observed values are printed); 1e-2 leaves margin yet catches any real bug (a wrong index, mask or
/// layout gives O(1) errors). The 1e-3 bar of single kernels cannot hold for the whole block in bf16.
const BLOCK_TOL: f64 = 1e-2;

struct Reference<'a> {
    drafter: &'a SpecBlockDrafter,
    embed: &'a [f32],
}

fn compare(
    what: &str,
    gpu_drafter: &GpuDrafter<'_>,
    want: &[(&BlockOutput, usize)],
    cfg: &DrafterConfig,
    worst: &mut f64,
) {
    let k = cfg.slots;
    let mut first = 0;
    for (seq, &(out, groups)) in want.iter().enumerate() {
        let rows = groups * k;
        let checks: [(&str, &DeviceBuffer<f32>, &Vec<f32>, usize); 4] = [
            ("logits", gpu_drafter.logits(), &out.logits, cfg.draft_vocab),
            (
                "rank logits",
                gpu_drafter.rank_logits(),
                &out.rank_logits,
                cfg.rank_classes,
            ),
            ("hidden", gpu_drafter.hidden(), &out.hidden, cfg.hidden),
            ("normed", gpu_drafter.normed(), &out.normed, cfg.hidden),
        ];
        for (name, buf, reference, width) in checks {
            let got = rows_of(buf, first, rows, width);
            assert!(
                got.iter().all(|x| x.is_finite()),
                "{what} seq {seq} {name}: non-finite (unwritten?)"
            );
            let err = rel32(&got, reference);
            eprintln!("{what} seq {seq} {name}: rel err {err:.2e}");
            *worst = worst.max(err);
            assert!(
                err <= BLOCK_TOL,
                "{what} seq {seq} {name}: relative error {err:.3e} > {BLOCK_TOL}"
            );
        }
        // Candidates: best first, ids mapped to the target vocabulary; the best equals the CPU argmax
        // wherever the CPU's top-2 margin is clear of the bf16 noise.
        let kc = gpu_drafter.capacity().candidates;
        let cand = gpu_drafter.candidate_ids().to_vec().unwrap();
        let lp = gpu_drafter.candidate_logprobs().to_vec().unwrap();
        for r in 0..rows {
            let row = &out.logits[r * cfg.draft_vocab..(r + 1) * cfg.draft_vocab];
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let scale = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let got_lp = &lp[(first + r) * kc..(first + r + 1) * kc];
            assert!(
                got_lp.windows(2).all(|w| w[0] >= w[1]),
                "{what}: candidates not best first"
            );
            if row[order[0]] - row[order[1]] > 0.05 * scale {
                let want_id = gpu_drafter_target(cfg, order[0]);
                assert_eq!(
                    cand[(first + r) * kc],
                    want_id,
                    "{what} seq {seq} row {r}: best candidate"
                );
            }
        }
        first += rows;
    }
}

/// Draft id to target id with the tiny fixture's d2t (read again here to stay independent of the GPU).
fn gpu_drafter_target(_cfg: &DrafterConfig, draft: usize) -> i32 {
    let st = SafeTensors::open(&fixtures().join("drafter_tiny/model.safetensors")).unwrap();
    let d2t = st.i64("d2t").unwrap().1;
    (draft as i64 + d2t[draft]) as i32
}

impl Reference<'_> {
    fn context(&self, cache: &mut ContextCache, f: &[f32], t: &[u32], b: &[u32]) -> BlockOutput {
        self.drafter
            .context_forward(cache, self.embed, f, t, b)
            .unwrap()
    }
}

/// The whole block on the GPU against the CPU drafter with the same (bf16) weights: a batched prefill
/// context forward of two sequences (the golden inputs and fresh random ones, different lengths), a
/// batched commit, and a batched seed forward with mixed visibilities. Every output is poisoned first.
#[test]
fn block_matches_cpu_drafter_on_the_tiny_drafter() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    if blas(&gpu, &stream).is_none() {
        return;
    }
    let dir = fixtures().join("drafter_tiny");
    let cfg = DrafterConfig::from_json(
        &std::fs::read_to_string(dir.join("config.json")).unwrap(),
        "config.json",
    )
    .unwrap();
    let st = bf16_checkpoint(&dir);
    let drafter = SpecBlockDrafter::from_safetensors(cfg.clone(), &st, 1).unwrap();
    let embed = round_bf16(
        &SafeTensors::open(&dir.join("embed.safetensors"))
            .unwrap()
            .f32("model.embed_tokens.weight")
            .unwrap()
            .1,
    );
    let g = SafeTensors::open(&fixtures().join("drafter_golden.safetensors")).unwrap();
    let reference = Reference {
        drafter: &drafter,
        embed: &embed,
    };
    let cap = GpuDrafterCapacity {
        sequences: 2,
        max_groups: 16,
        context_entries: 12,
        candidates: 8,
    };
    let mut gd = GpuDrafter::from_checkpoint(&gpu, &stream, &cfg, &st, &embed, cap).unwrap();
    let fw = 3 * cfg.target_hidden;
    let mut rng = Rng(0xB10C_5EED);
    let mut rand_vec =
        |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| scale * rng.uniform()).collect() };
    let mut worst = 0f64;

    // Prefill: sequence 0 the golden 5 entries, sequence 1 four random entries.
    let (f0, t0, b0) = (
        f32s(&g, "prefill.features"),
        ids(&g, "prefill.tokens"),
        ids(&g, "prefill.bases"),
    );
    let f1 = rand_vec(4 * fw, 2.0);
    let t1: Vec<u32> = vec![7, 123, 299, 0];
    let b1: Vec<u32> = vec![1, 2, 3, 4];
    let mut c0 = drafter.new_cache(12);
    let mut c1 = drafter.new_cache(12);
    let want0 = reference.context(&mut c0, &f0, &t0, &b0);
    let want1 = reference.context(&mut c1, &f1, &t1, &b1);
    let run_context =
        |gd: &mut GpuDrafter<'_>, fa: &[f32], ta: &[u32], fb: &[f32], tb: &[u32], bases: &[u32]| {
            let feats = DeviceBuffer::from_slice(&gpu, &[fa, fb].concat()).unwrap();
            let toks: Vec<i32> = ta.iter().chain(tb).map(|&t| t as i32).collect();
            let toks = DeviceBuffer::from_slice(&gpu, &toks).unwrap();
            gd.poison_outputs().unwrap();
            sync_all(&gpu);
            // SAFETY: dense device buffers of the planned sizes, alive until the synchronisation below.
            unsafe {
                gd.context_forward(
                    &stream,
                    feats.ptr(),
                    toks.ptr(),
                    &[ta.len(), tb.len()],
                    bases,
                )
                .unwrap();
            }
            gd.check_status(&stream).unwrap();
        };
    run_context(
        &mut gd,
        &f0,
        &t0,
        &f1,
        &t1,
        &[b0.clone(), b1.clone()].concat(),
    );
    compare(
        "prefill",
        &gd,
        &[(&want0, 5), (&want1, 4)],
        &cfg,
        &mut worst,
    );
    assert_eq!((gd.entries(0), gd.entries(1)), (5, 4));

    // Commit: golden 3 entries for sequence 0, two random ones for sequence 1.
    let (f0, t0, b0) = (
        f32s(&g, "commit.features"),
        ids(&g, "commit.tokens"),
        ids(&g, "commit.bases"),
    );
    let f1 = rand_vec(2 * fw, 2.0);
    let (t1, b1) = (vec![42u32, 250], vec![5u32, 6]);
    let want0 = reference.context(&mut c0, &f0, &t0, &b0);
    let want1 = reference.context(&mut c1, &f1, &t1, &b1);
    run_context(
        &mut gd,
        &f0,
        &t0,
        &f1,
        &t1,
        &[b0.clone(), b1.clone()].concat(),
    );
    compare("commit", &gd, &[(&want0, 3), (&want1, 2)], &cfg, &mut worst);

    // Seeds: golden 6 for sequence 0, five random ones (all visibilities) for sequence 1.
    let (h0, t0, v0) = (
        f32s(&g, "seed.hidden"),
        ids(&g, "seed.tokens"),
        ids(&g, "seed.visibility"),
    );
    let h1 = rand_vec(5 * cfg.hidden, 1.5);
    let (t1, v1) = (vec![3u32, 9, 27, 81, 243], vec![0u32, 1, 2, 3, 1]);
    let want0 = drafter.seed_forward(&c0, &embed, &h0, &t0, &v0).unwrap();
    let want1 = drafter.seed_forward(&c1, &embed, &h1, &t1, &v1).unwrap();
    let hid = DeviceBuffer::from_slice(&gpu, &[h0, h1].concat()).unwrap();
    let toks: Vec<i32> = t0.iter().chain(&t1).map(|&t| t as i32).collect();
    let toks = DeviceBuffer::from_slice(&gpu, &toks).unwrap();
    gd.poison_outputs().unwrap();
    sync_all(&gpu);
    // SAFETY: dense device buffers of the planned sizes, alive until the synchronisation below.
    unsafe {
        gd.seed_forward(&stream, hid.ptr(), toks.ptr(), &[6, 5], &[v0, v1].concat())
            .unwrap();
    }
    gd.check_status(&stream).unwrap();
    compare("seed", &gd, &[(&want0, 6), (&want1, 5)], &cfg, &mut worst);
    assert_eq!(
        (gd.entries(0), gd.entries(1)),
        (8, 6),
        "a seed forward appends nothing"
    );
    eprintln!("worst block relative error {worst:.2e} (tolerance {BLOCK_TOL:.0e})");

    // Errors before any launch: capacity, shape, visibility, seeds without entries, bad tokens.
    assert!(matches!(
        gd.plan_context(&stream, &[5, 0], &[1; 5]),
        Err(Error::Capacity { .. })
    ));
    assert!(gd.plan_context(&stream, &[1, 1], &[1]).is_err());
    assert!(gd.plan_seeds(&stream, &[1], &[4]).is_err());
    gd.reset(1);
    assert!(matches!(
        gd.plan_seeds(&stream, &[0, 1], &[0]),
        Err(Error::InvalidState(_))
    ));
    let feats = DeviceBuffer::from_slice(&gpu, &rand_vec(fw, 1.0)).unwrap();
    let bad = DeviceBuffer::from_slice(&gpu, &[cfg.vocab as i32]).unwrap();
    sync_all(&gpu);
    // SAFETY: dense device buffers of the planned sizes, alive until the status read synchronises.
    unsafe {
        gd.context_forward(&stream, feats.ptr(), bad.ptr(), &[0, 1], &[1])
            .unwrap();
    }
    assert!(matches!(
        gd.check_status(&stream),
        Err(Error::TokenOutOfRange { .. })
    ));
}
