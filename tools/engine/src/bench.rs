//! `specblock bench`: the engine's speed, each number next to its floor, measured side by side in one
//! run: read bandwidth of this machine, plain decode tokens/s against the bandwidth floor, and the cost
//! of verifying N tokens at once, t(N)/t(1), on top of a 512-token prefix.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::model::{Capture, Llama, Logits, Mask, Segment};

/// Median of `xs` (sorted in place).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    if xs.is_empty() {
        return f64::NAN;
    }
    xs[xs.len() / 2]
}

/// Busy fraction of all CPUs over `window`, from /proc/stat (None where unavailable).
pub fn cpu_busy(window: Duration) -> Option<f64> {
    fn sample() -> Option<(u64, u64)> {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        let line = s.lines().next()?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let idle = v.get(3)? + v.get(4).unwrap_or(&0);
        Some((v.iter().sum(), idle))
    }
    let (t0, i0) = sample()?;
    std::thread::sleep(window);
    let (t1, i1) = sample()?;
    let dt = (t1 - t0).max(1) as f64;
    Some(1.0 - (i1 - i0) as f64 / dt)
}

/// Waits (up to `max_wait`) until other CPU use is under 15% for 3 s; says so if it never is.
pub fn wait_for_idle(max_wait: Duration) {
    let start = Instant::now();
    loop {
        match cpu_busy(Duration::from_secs(3)) {
            None => return,
            Some(b) if b < 0.15 => return,
            Some(b) => {
                if start.elapsed() > max_wait {
                    eprintln!(
                        "warning: the machine is busy ({:.0}% CPU in use); numbers will be low",
                        b * 100.0
                    );
                    return;
                }
                eprintln!(
                    "waiting for an idle machine ({:.0}% CPU in use)...",
                    b * 100.0
                );
            }
        }
    }
}

/// Read bandwidth in GB/s: the best of several passes summing a 1 GiB buffer with `threads` threads,
/// each reading four streams with AVX-512 loads (as the matmul does).
pub fn read_bandwidth(threads: usize) -> f64 {
    let n = 1usize << 28; // 1 GiB of f32
    let buf: Vec<f32> = (0..n).map(|i| (i & 7) as f32).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let total: f32 = std::thread::scope(|s| {
            let chunk = n.div_ceil(threads);
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|c| s.spawn(move || specblock::cpu::kernels::stream_sum(c)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        black_box(total);
        let gbs = (n * 4) as f64 / t.elapsed().as_secs_f64() / 1e9;
        best = best.max(gbs);
    }
    best
}

/// Plain greedy decode speed: tokens/s over `steps` single-token forwards after a short prefill
/// (median of `repeats` runs).
pub fn decode_tokens_per_s(model: &Llama, steps: usize, repeats: usize) -> Result<f64> {
    let prompt: Vec<u32> = (0..16).map(|i| 100 + i * 37).collect();
    let mut rates = Vec::new();
    for _ in 0..repeats {
        let mut kv = model.new_cache(prompt.len() + steps + 1);
        let pos: Vec<u32> = (0..prompt.len() as u32).collect();
        let out = model.forward(
            Segment {
                kv: &mut kv,
                tokens: &prompt,
                positions: &pos,
                mask: Mask::Causal,
                logits: Logits::Last,
            },
            &Capture::default(),
        )?;
        let mut next = argmax(&out.logits);
        let t = Instant::now();
        for _ in 0..steps {
            let p = [kv.len() as u32];
            let out = model.forward(
                Segment {
                    kv: &mut kv,
                    tokens: &[next],
                    positions: &p,
                    mask: Mask::Causal,
                    logits: Logits::Last,
                },
                &Capture::default(),
            )?;
            next = argmax(&out.logits);
        }
        rates.push(steps as f64 / t.elapsed().as_secs_f64());
    }
    Ok(median(&mut rates))
}

/// Median milliseconds of one forward over `n` new tokens (a chain, logits for every row) on top of
/// a cached prefix of `prefix` tokens; the cache is cut back after each pass.
pub fn verify_ms(model: &Llama, prefix: usize, ns: &[usize], repeats: usize) -> Result<Vec<f64>> {
    let max_n = ns.iter().copied().max().unwrap_or(1);
    let mut kv = model.new_cache(prefix + max_n);
    let toks: Vec<u32> = (0..prefix as u32)
        .map(|i| 200 + (i * 7919) % 40000)
        .collect();
    let pos: Vec<u32> = (0..prefix as u32).collect();
    model.forward(
        Segment {
            kv: &mut kv,
            tokens: &toks,
            positions: &pos,
            mask: Mask::Causal,
            logits: Logits::None,
        },
        &Capture::default(),
    )?;
    let mut out = Vec::new();
    for &n in ns {
        let new: Vec<u32> = (0..n as u32).map(|i| 300 + i).collect();
        let p: Vec<u32> = (0..n as u32).map(|i| prefix as u32 + i).collect();
        let mut times = Vec::new();
        for _ in 0..repeats {
            let t = Instant::now();
            model.forward(
                Segment {
                    kv: &mut kv,
                    tokens: &new,
                    positions: &p,
                    mask: Mask::Causal,
                    logits: Logits::All,
                },
                &Capture::default(),
            )?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            kv.truncate(prefix);
        }
        out.push(median(&mut times));
    }
    Ok(out)
}

/// Index of the largest value (ties to the lowest index).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}
