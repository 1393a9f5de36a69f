//! The conversions against the hand-written code they replaced or consolidated (kept here, and only
//! here, as the reference) and against `half`: every 16-bit pattern, and f32 -> 16-bit rounding on ties,
//! subnormals, infinities, NaNs, a stride through all 2^32 patterns and random values. Plus the timing
//! that decided which conversions use `half` (`#[ignore]`d; see docs/performance.md, "Crates and
//! hand-written code").

use std::println;
use std::time::Instant;
use std::vec::Vec;

use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use half::{bf16, f16};

use super::*;

/// The former bf16 widening (`drafter::ops`, `cpu::kernels`, `cpu::simd`, `io::safetensors`, the engine).
fn old_bf16_to_f32(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// The former `cpu::kernels::f32_to_bf16`.
fn old_f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// The former `io::safetensors::f16_to_f32`.
fn old_f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // Subnormal: value = man * 2^-24.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// The former `io::safetensors::f32_to_f16`.
fn old_f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rounded = (m + half - 1 + ((m >> shift) & 1)) >> shift;
        return sign | rounded as u16;
    }
    let rounded = man + 0xfff + ((man >> 13) & 1);
    let (e, m) = if rounded & 0x80_0000 != 0 {
        (e + 1, 0)
    } else {
        (e, rounded >> 13)
    };
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    sign | ((e as u16) << 10) | m as u16
}

/// SplitMix64: random f32 bit patterns.
fn random_bits(n: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u32
        })
        .collect()
}

/// f32 bit patterns that exercise both roundings: every upper half with low halves around the bf16
/// tie (bit 15) and the f16 ties (bit 12 for normals; the subnormal ties sit higher and are covered by
/// the upper-half sweep), a stride through all 2^32 patterns, NaN payloads, and random values.
fn f32_cases() -> Vec<u32> {
    let lows: [u32; 16] = [
        0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x5000, 0x7fff, 0x8000,
        0x8001, 0x9000, 0xa000, 0xc000, 0xffff,
    ];
    let mut v: Vec<u32> = (0..=u16::MAX as u32)
        .flat_map(|hi| lows.iter().map(move |&lo| (hi << 16) | lo))
        .collect();
    v.extend((0..=u32::MAX).step_by(4099));
    v.extend(random_bits(1 << 20, 7));
    v.extend([
        f32::NAN.to_bits(),
        (-f32::NAN).to_bits(),
        0x7f80_0001, // signalling NaN, low payload
        0xff80_0001,
        0x7fbf_ffff,
        0x7fc0_0001,
        0x7f80_2000,
        0x7f80_0000,
        0xff80_0000,
        0x7f7f_ffff, // f32::MAX: rounds to infinity in both formats
        0x477f_f000, // 65520: the f16 overflow tie
        0x477f_efff,
        0x3380_0000, // 2^-24: smallest f16 subnormal
        0x3300_0000, // 2^-25: f16 tie to zero
        0x3300_0001,
        0x0000_0001,
        0x8000_0001,
    ]);
    v
}

#[test]
fn bf16_to_f32_is_bit_identical_on_every_pattern() {
    for b in 0..=u16::MAX {
        assert_eq!(
            bf16_to_f32(b).to_bits(),
            old_bf16_to_f32(b).to_bits(),
            "bf16 {b:#06x}"
        );
    }
}

/// Why `bf16_to_f32` is not `half::bf16::to_f32`: half quiets signalling NaNs, and only those.
#[test]
fn half_bf16_to_f32_differs_only_on_signalling_nans() {
    for b in 0..=u16::MAX {
        let ours = bf16_to_f32(b).to_bits();
        let theirs = bf16::from_bits(b).to_f32().to_bits();
        let signalling = b & 0x7f80 == 0x7f80 && b & 0x7f != 0 && b & 0x40 == 0;
        assert_eq!(
            ours != theirs,
            signalling,
            "bf16 {b:#06x}: {ours:#010x} vs {theirs:#010x}"
        );
    }
}

#[test]
fn f16_to_f32_is_bit_identical_on_every_pattern() {
    for h in 0..=u16::MAX {
        assert_eq!(
            f16_to_f32(h).to_bits(),
            old_f16_to_f32(h).to_bits(),
            "f16 {h:#06x}"
        );
    }
}

/// Why `f16_to_f32` keeps its own NaN branch: half quiets signalling NaNs, and only those.
#[test]
fn half_f16_to_f32_differs_only_on_signalling_nans() {
    for h in 0..=u16::MAX {
        let ours = f16_to_f32(h).to_bits();
        let theirs = f16::from_bits(h).to_f32().to_bits();
        let signalling = h & 0x7c00 == 0x7c00 && h & 0x3ff != 0 && h & 0x200 == 0;
        assert_eq!(
            ours != theirs,
            signalling,
            "f16 {h:#06x}: {ours:#010x} vs {theirs:#010x}"
        );
    }
}

#[test]
fn f32_to_bf16_rounds_like_the_old_code() {
    let cases = f32_cases();
    for &b in &cases {
        let x = f32::from_bits(b);
        assert_eq!(f32_to_bf16(x), old_f32_to_bf16(x), "f32 {b:#010x}");
    }
}

/// `f32_to_bf16` stays hand-written for speed only: it is bit-identical to half's, NaNs included.
#[test]
fn f32_to_bf16_is_halfs_conversion() {
    for b in f32_cases() {
        let x = f32::from_bits(b);
        assert_eq!(f32_to_bf16(x), bf16::from_f32(x).to_bits(), "f32 {b:#010x}");
    }
}

#[test]
fn f32_to_f16_rounds_like_the_old_code() {
    for b in f32_cases() {
        let x = f32::from_bits(b);
        assert_eq!(f32_to_f16(x), old_f32_to_f16(x), "f32 {b:#010x}");
        // Non-NaN values: exactly half's conversion.
        if !x.is_nan() {
            assert_eq!(f32_to_f16(x), f16::from_f32(x).to_bits(), "f32 {b:#010x}");
        }
    }
}

/// Median of `runs` timings of `f`, in milliseconds.
fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

/// Bulk conversion of 4M values, old hand-written loops against `half` (median of 11 runs). Run with
/// `cargo test --lib num::tests::conversion_timing -- --ignored --nocapture` on an idle machine (the
/// library and `half` compile at opt-level 3 in test builds).
#[test]
#[ignore = "timing; run on an idle machine"]
fn conversion_timing() {
    use core::hint::black_box;
    const N: usize = 4 << 20;
    const RUNS: usize = 11;
    // Realistic weights/activations: finite values of moderate magnitude, a few exact ties.
    let xs: Vec<f32> = random_bits(N, 11)
        .iter()
        .map(|&b| f32::from_bits((b & 0x807f_ffff) | (((b >> 23) % 24 + 112) << 23)))
        .collect();
    let b16: Vec<u16> = xs.iter().map(|&x| old_f32_to_bf16(x)).collect();
    let h16: Vec<u16> = xs.iter().map(|&x| old_f32_to_f16(x)).collect();
    let mut f = std::vec![0f32; N];
    let mut u = std::vec![0u16; N];
    let mut rows: Vec<(&str, f64)> = Vec::new();

    rows.push((
        "bf16 -> f32, hand-written shift loop (kept)",
        median_ms(RUNS, || {
            for (d, &s) in f.iter_mut().zip(black_box(&b16)) {
                *d = old_bf16_to_f32(s);
            }
            black_box(&f);
        }),
    ));
    rows.push((
        "bf16 -> f32, half convert_to_f32_slice",
        median_ms(RUNS, || {
            black_box(&b16)
                .reinterpret_cast::<bf16>()
                .convert_to_f32_slice(&mut f);
            black_box(&f);
        }),
    ));
    rows.push((
        "f32 -> bf16, hand-written loop (kept)",
        median_ms(RUNS, || {
            for (d, &s) in u.iter_mut().zip(black_box(&xs)) {
                *d = old_f32_to_bf16(s);
            }
            black_box(&u);
        }),
    ));
    rows.push((
        "f32 -> bf16, half convert_from_f32_slice",
        median_ms(RUNS, || {
            u.reinterpret_cast_mut::<bf16>()
                .convert_from_f32_slice(black_box(&xs));
            black_box(&u);
        }),
    ));
    rows.push((
        "f16 -> f32, former hand-written loop",
        median_ms(RUNS, || {
            for (d, &s) in f.iter_mut().zip(black_box(&h16)) {
                *d = old_f16_to_f32(s);
            }
            black_box(&f);
        }),
    ));
    rows.push((
        "f16 -> f32, f16_to_f32 loop (half + NaN branch; used)",
        median_ms(RUNS, || {
            for (d, &s) in f.iter_mut().zip(black_box(&h16)) {
                *d = f16_to_f32(s);
            }
            black_box(&f);
        }),
    ));
    rows.push((
        "f16 -> f32, half convert_to_f32_slice",
        median_ms(RUNS, || {
            black_box(&h16)
                .reinterpret_cast::<f16>()
                .convert_to_f32_slice(&mut f);
            black_box(&f);
        }),
    ));
    rows.push((
        "f32 -> f16, former hand-written loop",
        median_ms(RUNS, || {
            for (d, &s) in u.iter_mut().zip(black_box(&xs)) {
                *d = old_f32_to_f16(s);
            }
            black_box(&u);
        }),
    ));
    rows.push((
        "f32 -> f16, f32_to_f16 loop (half + NaN branch; used)",
        median_ms(RUNS, || {
            for (d, &s) in u.iter_mut().zip(black_box(&xs)) {
                *d = f32_to_f16(s);
            }
            black_box(&u);
        }),
    ));
    rows.push((
        "f32 -> f16, half convert_from_f32_slice",
        median_ms(RUNS, || {
            u.reinterpret_cast_mut::<f16>()
                .convert_from_f32_slice(black_box(&xs));
            black_box(&u);
        }),
    ));
    println!("| conversion of {N} values (median of {RUNS}) | ms |");
    println!("|---|---|");
    for (name, ms) in rows {
        println!("| {name} | {ms:.2} |");
    }
}
