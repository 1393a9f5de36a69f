//! Scalar math the no_std core needs, written so results are identical on every platform and loops over
//! it vectorise (no libm calls, no fused multiply-add, branch-free selects).

const LOG2E: f32 = core::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const ROUND_MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to an integer

/// `e^x` for `x <= 0` (the only range softmax needs once the maximum is subtracted); about 2 ulp.
/// Returns 0 below about -87 and for `-inf`; the caller excludes NaN.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let clamped = if x < -87.0 { -87.0 } else { x };
    // `shifted`'s low mantissa bits hold n: reading them avoids a (saturating, unvectorisable) cast.
    let shifted = clamped * LOG2E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    // Taylor polynomial of e^r for |r| <= ln2/2, Horner form.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let n_bits = shifted.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if x < -87.0 { 0.0 } else { p * scale }
}

/// Square root of `x >= 0` in f64 (Newton's iteration from a bit-level first guess; exact to about
/// 1 ulp), for the no_std statistics of [`crate::adapt`]. Returns 0 for `x <= 0` and NaN for NaN.
pub fn sqrt_f64(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if x.is_infinite() {
        return x;
    }
    // Halving the exponent gives a guess within a factor of 2; Newton doubles the digits each step.
    let mut y = f64::from_bits((x.to_bits() >> 1) + (1023u64 << 51));
    for _ in 0..6 {
        y = 0.5 * (y + x / y);
    }
    y
}

/// Natural logarithm of `x > 0` in f64 (about 1e-15 relative), for the no_std statistics of
/// [`crate::adapt`]. Returns -inf for 0 and NaN for negative or NaN input.
pub fn ln_f64(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    // x = m * 2^e with m in [sqrt(1/2), sqrt(2)); ln m by the series of atanh: 2 (s + s^3/3 + ...).
    let (mut m, mut e) = (x, 0i32);
    while m >= core::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    while m < core::f64::consts::FRAC_1_SQRT_2 {
        m *= 2.0;
        e -= 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    while k < 60.0 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * core::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqrt_and_ln_match_std() {
        for &x in &[
            1e-300, 1e-9, 0.25, 0.5, 1.0, 2.0, 3.0, 10.0, 12345.678, 1e300,
        ] {
            let (s, l): (f64, f64) = (sqrt_f64(x), ln_f64(x));
            assert!((s - x.sqrt()).abs() <= 2e-16 * x.sqrt(), "sqrt {x}: {s}");
            assert!(
                (l - x.ln()).abs() <= 1e-14 * (1.0 + x.ln().abs()),
                "ln {x}: {l}"
            );
        }
        assert_eq!(sqrt_f64(0.0), 0.0);
        assert!(ln_f64(-1.0).is_nan() && ln_f64(0.0) == f64::NEG_INFINITY);
    }

    #[test]
    fn matches_std_exp_closely() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let got = exp_nonpositive(x) as f64;
            let want = (x as f64).exp();
            let rel = ((got - want) / want).abs();
            assert!(rel < 4e-7, "x={x} got={got} want={want} rel={rel}");
            x += 0.0137;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(-1000.0), 0.0);
    }
}
