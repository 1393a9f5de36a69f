//! The bf16 matmul alone, per weight shape of SmolLM2-135M, against this CPU's arithmetic peak: the
//! numbers behind docs/performance.md ("Intel hosts with AVX-512"). For each shape and row count N,
//! the time of one `matmul` call with the weights in cache (the same matrix every call) and streamed
//! from memory (copies rotated through about 600 MB), as GFLOP/s and weight GB/s.
//!
//! Each case runs twice, with the bf16 weights row-major and packed for the broadcast kernel
//! (`Matrix::try_pack`; where the host does not run that kernel, both rows are row-major).
//!
//! `cargo run --release --example matmul_bench` uses the kernel `Isa::detect` picks;
//! `SPECBLOCK_BF16_PAIRS=1` (or `=0`) forces `vdpbf16ps` pairs (or widened weights) where AVX512_BF16
//! exists. Run it on an idle machine.

use std::time::Instant;

use specblock::cpu::kernels::arithmetic_peak_gflops;
use specblock::cpu::{Isa, Matrix, Pool, matmul};

/// Weight shapes `[out, k]` of one SmolLM2-135M layer and its LM head.
const SHAPES: [(usize, usize, &str); 4] = [
    (960, 576, "q/k/v"),
    (3072, 576, "gate/up"),
    (576, 1536, "down"),
    (49152, 576, "LM head"),
];

/// Bytes of weight copies that the streamed case rotates through (well beyond any L3 here).
const STREAM_BYTES: usize = 600_000_000;

fn main() {
    let threads = 2;
    println!(
        "kernel: {}; arithmetic peak: {:.0} GFLOP/s on 1 thread, {:.0} on {threads}",
        Isa::detect().name(),
        arithmetic_peak_gflops(1, 300),
        arithmetic_peak_gflops(threads, 300)
    );
    let pool = Pool::pinned(threads);
    println!(
        "\n| weights | place | layout | N = 1 | N = 4 | N = 8 | N = 16 |\n|---|---|---|---:|---:|---:|---:|"
    );
    for &(out, k, name) in &SHAPES {
        for streamed in [false, true] {
            let copies = if streamed {
                (STREAM_BYTES / (out * k * 2)).max(2)
            } else {
                1
            };
            for packed in [false, true] {
                let mats: Vec<Matrix> = (0..copies)
                    .map(|c| {
                        let w = (0..out * k)
                            .map(|i| ((i * 7 + c) % 13) as f32 * 0.01 - 0.06)
                            .collect();
                        let mut m = Matrix::new(w, true);
                        if packed {
                            m.try_pack(out, k).expect("memory for the packed copy");
                        }
                        m
                    })
                    .collect();
                let mut line = format!(
                    "| {name} {out} x {k} | {} | {} |",
                    if streamed { "memory" } else { "cache" },
                    if matches!(mats[0], Matrix::Bf16Packed(_)) {
                        "packed"
                    } else {
                        "row-major"
                    }
                );
                for n in [1usize, 4, 8, 16] {
                    let x: Vec<f32> = (0..n * k).map(|i| (i % 11) as f32 * 0.1).collect();
                    let mut y = vec![0f32; n * out];
                    let calls = if streamed {
                        copies * 3
                    } else {
                        (2_000_000_000 / (out * k * n * 2)).clamp(5, 3000)
                    };
                    // One untimed pass over every copy (page faults, first touches).
                    for m in &mats {
                        matmul(&pool, m, out, k, &x, n, &mut y);
                    }
                    let t = Instant::now();
                    for call in 0..calls {
                        matmul(&pool, &mats[call % copies], out, k, &x, n, &mut y);
                    }
                    let secs = t.elapsed().as_secs_f64() / calls as f64;
                    let gflops = 2.0 * (out * k * n) as f64 / secs / 1e9;
                    let gbs = (out * k * 2) as f64 / secs / 1e9;
                    line += &format!(
                        " {:.0} us, {gflops:.0} GFLOP/s, {gbs:.0} GB/s |",
                        secs * 1e6
                    );
                }
                println!("{line}");
            }
        }
    }
}
