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

#[cfg(test)]
mod tests {
    use super::*;

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
