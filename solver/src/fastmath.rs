//! A cheap, deterministic power for step-size ratios.
//!
//! The PI controller raises error norms to fractional powers once per step. libm's `ln` and `exp` are
//! exact to the last bit and cost about a third of a cheap right-hand side; a step-size ratio needs
//! only about three significant digits (it is multiplied by a safety factor of 0.9 and clamped). This
//! module's `ln2`/`exp2` are short polynomial approximations with relative error below 1e-5 (x^y for the exponents used), written here
//! because no small crate offers one; they are pure functions of their inputs, so solves stay
//! reproducible bit for bit.

/// log2(x) for finite x > 0 (normal or subnormal treated as its raw exponent), to 5e-6 absolute:
/// x = m·2^e with m ∈ [1, 2) and log2 m by a degree-6 polynomial in (m − 1).
#[inline(always)]
pub(crate) fn log2(x: f64) -> f64 {
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000) - 1.0;
    // Least-squares fit of log2(1 + m) on [0, 1] (max error 4.4e-6).
    let p = m
        * (1.442_516_960_3
            + m * (-0.717_897_279_3
                + m * (0.456_888_663_6
                    + m * (-0.277_352_926_0 + m * (0.121_902_014_4 - 0.026_061_797_6 * m)))));
    exponent as f64 + p
}

/// 2^z for |z| ≤ 1000, to 2e-7 relative: 2^z = 2^i · 2^f with i = ⌊z⌋, f ∈ [0, 1), 2^f by a degree-5
/// polynomial.
#[inline(always)]
pub(crate) fn exp2(z: f64) -> f64 {
    let z = z.clamp(-1000.0, 1000.0);
    let i = z as i64 - i64::from(z < 0.0);
    let f = z - i as f64;
    // Least-squares fit of 2^f − 1 on [0, 1] (max relative error 1.4e-7).
    let p = 1.0
        + f * (0.693_152_748_3
            + f * (0.240_153_160_1
                + f * (0.055_828_290_0 + f * (0.008_988_812_8 + f * 0.001_876_708_4))));
    p * f64::from_bits(((i + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::{exp2, log2};

    #[test]
    fn log2_and_exp2_are_accurate_enough_for_step_ratios() {
        let mut worst_log: f64 = 0.0;
        let mut worst_pow: f64 = 0.0;
        for i in 0..20_000 {
            let x = 10f64.powf(-14.0 + 28.0 * f64::from(i) / 20_000.0);
            worst_log = worst_log.max((log2(x) - x.log2()).abs());
            for y in [-1.0, -0.2, -0.14, -1.0 / 9.0, 0.08, 0.04, 0.5] {
                let exact = x.powf(y);
                worst_pow = worst_pow.max(((exp2(y * log2(x)) - exact) / exact).abs());
            }
        }
        assert!(worst_log < 5e-5, "log2 error {worst_log:e}");
        assert!(worst_pow < 1e-3, "x^y relative error {worst_pow:e}");
        for z in [-3.7, -1.0, -0.25, 0.0, 0.5, 2.0, 9.99] {
            assert!((exp2(z) / 2f64.powf(z) - 1.0).abs() < 5e-5, "exp2({z})");
        }
    }
}
