//! The drafter block forward on the GPU at the Llama-3.1-8B drafter size (H 4096, 2 layers, 32/8 heads,
//! FFN 14336, draft vocab 32000, features 3 x 4096): a context forward of one new entry per sequence and
//! a seed forward of 10 seeds per sequence, batch 1 and 8, over 512 committed entries, timed by CUDA
//! graph replay and by plain launches. The baseline is the floor: the weight bytes the forward must
//! read once, divided by the device-to-device bandwidth measured in the same run. The PyTorch eager
//! number for the same cases comes from tools/cuda/drafter_eager.py, run by the same GPU script.

use crate::report::{Report, Row, median};
use specblock::cuda::blas::Blas;
use specblock::cuda::drafter::{GpuDrafter, GpuDrafterCapacity, GpuDrafterDims, fill_random};
use specblock::cuda::{DeviceBuffer, Gpu, Graph, Stream, Timer};

/// Timed repeats per case (median reported).
const REPEATS: usize = 50;
/// Untimed warm-up runs per case.
const WARMUP: usize = 5;

/// Device-to-device copy bandwidth in bytes/s, counting bytes read and written: the floor's divisor.
fn bandwidth(gpu: &Gpu, stream: &Stream) -> Result<f64, specblock::Error> {
    // 1 GiB each way: far beyond the 50 MB L2, so this is DRAM bandwidth.
    let bytes = 1usize << 30;
    let src = DeviceBuffer::<u8>::new(gpu, bytes)?;
    let dst = DeviceBuffer::<u8>::new(gpu, bytes)?;
    let timer = Timer::new(gpu)?;
    let copy = || -> Result<(), specblock::Error> {
        // SAFETY: both allocations hold `bytes` bytes; the copy is ordered on `stream`.
        let r = unsafe {
            cudarc::driver::sys::cuMemcpyDtoDAsync_v2(
                dst.ptr(),
                src.ptr(),
                bytes,
                stream.raw() as cudarc::driver::sys::CUstream,
            )
        };
        if r == cudarc::driver::sys::CUresult::CUDA_SUCCESS {
            Ok(())
        } else {
            Err(specblock::Error::Device {
                call: "cuMemcpyDtoDAsync",
                code: r as u32,
            })
        }
    };
    for _ in 0..3 {
        copy()?;
    }
    let mut times = Vec::new();
    for _ in 0..20 {
        timer.start(stream)?;
        copy()?;
        times.push(timer.stop_ms(stream)? as f64 * 1e-3);
    }
    Ok(2.0 * bytes as f64 / median(&mut times))
}

/// Median µs of `body` over [`REPEATS`] timed runs after [`WARMUP`] runs.
fn time_us(
    stream: &Stream,
    timer: &Timer,
    mut body: impl FnMut() -> Result<(), specblock::Error>,
) -> Result<f64, specblock::Error> {
    for _ in 0..WARMUP {
        body()?;
    }
    stream.synchronize()?;
    let mut times = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        timer.start(stream)?;
        body()?;
        times.push(timer.stop_ms(stream)? as f64 * 1e3);
    }
    Ok(median(&mut times))
}

/// Each GEMM of the 8B drafter alone (cuBLAS, bf16 -> f32) at 4 and 320 rows, against its weight-read
/// floor: how much of the block's time the GEMMs take and how close cuBLAS gets to bandwidth at
/// skinny shapes. Weights rotate through a 1.2 GB arena so no repeat finds them in L2.
/// Returns the measured bf16 GEMM peak (FLOP/s, an 8192^3 product), the compute floor's divisor.
fn gemms(
    gpu: &Gpu,
    stream: &Stream,
    report: &mut Report,
    bw: f64,
) -> Result<f64, specblock::Error> {
    let blas = Blas::new(gpu, stream)?;
    let peak = {
        let n = 8192usize;
        let mut a = DeviceBuffer::<u16>::new(gpu, n * n)?;
        let mut w = DeviceBuffer::<u16>::new(gpu, n * n)?;
        fill_random(gpu, stream, &mut a, 3, 0.0, 1.0)?;
        fill_random(gpu, stream, &mut w, 4, 0.0, 1.0)?;
        let c = DeviceBuffer::<f32>::new(gpu, n * n)?;
        let timer = Timer::new(gpu)?;
        let mut times = Vec::new();
        for i in 0..8 {
            timer.start(stream)?;
            // SAFETY: three dense n x n buffers.
            unsafe {
                blas.gemm_bf16_raw(stream, n, n, n, a.ptr(), n, w.ptr(), c.ptr(), n, 0.0)?;
            }
            let s = timer.stop_ms(stream)? as f64 * 1e-3;
            if i >= 2 {
                times.push(s); // the first two warm up
            }
        }
        let flop = 2.0 * (n * n * n) as f64;
        let t = median(&mut times);
        report.row(Row {
            group: "drafter GEMM (cuBLAS)",
            case: format!("peak: bf16 {n}x{n}x{n}"),
            median_us: t * 1e6,
            baseline: None,
            note: format!(
                "{:.0} TFLOP/s (bf16 in, f32 out, f32 accumulate)",
                flop / t * 1e-12
            ),
        });
        flop / t
    };
    let arena_len = 600usize << 20; // bf16 elements (1.26 GB)
    let mut arena = DeviceBuffer::<u16>::new(gpu, arena_len)?;
    fill_random(gpu, stream, &mut arena, 5, 0.0, 0.01)?;
    let mut a = DeviceBuffer::<u16>::new(gpu, 320 * 14336)?;
    fill_random(gpu, stream, &mut a, 6, 0.0, 1.0)?;
    let c = DeviceBuffer::<f32>::new(gpu, 320 * 32000)?;
    let timer = Timer::new(gpu)?;
    let shapes: [(&str, usize, usize); 8] = [
        ("W_cond", 4096, 12288),
        ("fuse", 4096, 12288),
        ("qkv", 6144, 4096),
        ("o_proj", 4096, 4096),
        ("gate_up", 28672, 4096),
        ("down", 4096, 14336),
        ("shift", 4096, 8192),
        ("lm_head", 32000, 4096),
    ];
    for rows in [4usize, 320] {
        for &(name, out, inner) in &shapes {
            let size = out * inner;
            let copies = (arena_len / size).max(1);
            let mut rep = 0usize;
            let us = time_us(stream, &timer, || {
                rep += 1;
                // SAFETY: `a`, `c` and the arena slice hold the shapes the call reads and writes.
                unsafe {
                    blas.gemm_bf16_raw(
                        stream,
                        rows,
                        out,
                        inner,
                        a.ptr(),
                        inner,
                        arena.ptr_at((rep % copies) * size),
                        c.ptr(),
                        out,
                        0.0,
                    )
                }
            })?;
            let floor = (2 * size) as f64 / bw * 1e6;
            report.row(Row {
                group: "drafter GEMM (cuBLAS)",
                case: format!("{name} {rows}x{out}x{inner}"),
                median_us: us,
                baseline: Some(("weight-read floor", floor)),
                note: format!("{:.0} GB/s of weights", (2 * size) as f64 / us * 1e-3),
            });
        }
    }
    Ok(peak)
}

/// Runs this family.
pub fn run(gpu: &Gpu, report: &mut Report) {
    if let Err(e) = run_inner(gpu, report) {
        eprintln!("drafter block benchmark failed: {e}");
        report.row(Row {
            group: "drafter block",
            case: "failed".into(),
            median_us: f64::NAN,
            baseline: None,
            note: format!("error: {e}"),
        });
    }
}

fn run_inner(gpu: &Gpu, report: &mut Report) -> Result<(), specblock::Error> {
    let stream = Stream::new(gpu)?;
    let bw = bandwidth(gpu, &stream)?;
    report.row(Row {
        group: "drafter block",
        case: "device-to-device copy, 1 GiB".into(),
        median_us: (2u64 << 30) as f64 / bw * 1e6,
        baseline: None,
        note: format!("{:.0} GB/s (read + written)", bw * 1e-9),
    });
    let peak = gemms(gpu, &stream, report, bw)?;
    let dims = GpuDrafterDims::llama31_8b();
    let contexts = 512;
    let seeds = 10;
    let timer = Timer::new(gpu)?;
    for batch in [1usize, 8] {
        let cap = GpuDrafterCapacity {
            sequences: batch,
            max_groups: batch * seeds,
            context_entries: contexts + 1,
            candidates: 10,
        };
        let mut d = GpuDrafter::random(gpu, &stream, &dims, cap, 0xC0FFEE + batch as u64)?;
        d.fill_random_context(&stream, contexts, 77)?;
        // Inputs: target features for one new entry per sequence, seed hiddens, tokens.
        let mut features = DeviceBuffer::<f32>::new(gpu, batch * 3 * dims.target_hidden)?;
        d.fill_random(&stream, &mut features, 11, 0.0, 1.0)?;
        let mut hidden = DeviceBuffer::<f32>::new(gpu, batch * seeds * dims.hidden)?;
        d.fill_random(&stream, &mut hidden, 12, 0.0, 1.0)?;
        let tokens: Vec<i32> = (0..batch * seeds)
            .map(|i| ((i as u64 * 2_654_435_761) % dims.vocab as u64) as i32)
            .collect();
        let tokens = DeviceBuffer::from_slice(gpu, &tokens)?;
        // The synchronous upload runs on the legacy stream: wait for the whole context.
        // SAFETY: plain driver call; the GPU's context is current on this thread.
        let r = unsafe { cudarc::driver::sys::cuCtxSynchronize() };
        if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
            return Err(specblock::Error::Device {
                call: "cuCtxSynchronize",
                code: r as u32,
            });
        }
        // 512 committed entries (the case), then 1 (attention nearly free: the difference is what the
        // attention over the context costs).
        for (ctx, seed_case) in [(contexts, false), (contexts, true), (1, false), (1, true)] {
            if ctx != d.entries(0) {
                d.fill_random_context(&stream, ctx, 77)?;
            }
            if seed_case {
                let vis: Vec<u32> = (0..batch * seeds)
                    .map(|i| (i % dims.slots) as u32)
                    .collect();
                d.plan_seeds(&stream, &vec![seeds; batch], &vis)?;
            } else {
                // Appends at entry `contexts` of every sequence; replays overwrite the same rows.
                d.plan_context(&stream, &vec![1; batch], &vec![ctx as u32 + 1; batch])?;
            }
            let step = |s: &Stream| -> Result<(), specblock::Error> {
                // SAFETY: the inputs are dense device buffers of the planned sizes, alive throughout.
                unsafe {
                    if seed_case {
                        d.launch_seeds(s, hidden.ptr(), tokens.ptr())
                    } else {
                        d.launch_context(s, features.ptr(), tokens.ptr())
                    }
                }
            };
            let plain = if ctx == contexts {
                time_us(&stream, &timer, || step(&stream))?
            } else {
                f64::NAN
            };
            let graph = Graph::capture(&stream, step)?;
            let replay = time_us(&stream, &timer, || graph.launch(&stream))?;
            d.check_status(&stream)?;
            let wbytes = d.weight_bytes(!seed_case);
            let kv = d.cache_bytes(batch, ctx);
            let (case, rows) = if seed_case {
                ("seed fwd, 10 seeds/seq", batch * seeds * dims.slots)
            } else {
                ("context fwd, 1 entry/seq", batch * dims.slots)
            };
            // Each weight is read once (bandwidth) and multiplies every row (compute): the floor is the
            // larger of the two; at 320 rows compute dominates.
            let flop = 2.0 * rows as f64 * (wbytes / 2) as f64;
            let floor_us = (wbytes as f64 / bw).max(flop / peak) * 1e6;
            for (how, us) in [("graph", replay), ("plain launches", plain)] {
                if us.is_nan() {
                    continue;
                }
                let how = if ctx == contexts {
                    how.to_string()
                } else {
                    format!("{how}, {ctx}-entry context")
                };
                report.row(Row {
                    group: "drafter block 8B",
                    case: format!("{case}, batch {batch} ({rows} rows), {how}"),
                    median_us: us,
                    baseline: Some(("floor: max(weight read, GEMM compute)", floor_us)),
                    note: format!(
                        "goal <= 1.3x; {:.0} MB weights + {:.0} MB f32 KV cache ({:.0} us with it); \
                         PyTorch eager: drafter_eager.py, same GPU script",
                        wbytes as f64 * 1e-6,
                        kv as f64 * 1e-6,
                        (wbytes + kv) as f64 / bw * 1e6
                    ),
                });
            }
        }
    }
    Ok(())
}
