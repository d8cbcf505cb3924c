//! Relative differences between computed vectors (gradients, states), as the tests report and bound them.

/// max_i |a_i − b_i| / max_i |b_i|: the largest difference relative to the size of the reference `b`
/// (0/0 = NaN for a zero reference).
///
/// ```
/// use odesens_models::compare::rel_diff_max_norm;
/// assert_eq!(rel_diff_max_norm(&[1.0, 2.5], &[1.0, 2.0]), 0.25);
/// ```
pub fn rel_diff_max_norm(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f64::max)
        / scale
}

/// max_i |a_i − b_i| / max(|b_i|, floor): componentwise relative differences to the reference `b`,
/// with components smaller than `floor` compared absolutely (scaled by `floor`).
pub fn rel_diff_componentwise(a: &[f64], b: &[f64], floor: f64) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(floor))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_relative_to_the_reference() {
        assert_eq!(rel_diff_max_norm(&[1.0, 2.5], &[1.0, 2.0]), 0.25);
        assert_eq!(rel_diff_componentwise(&[1.5, 0.0], &[1.0, 1e-9], 1e-3), 0.5);
        assert_eq!(rel_diff_componentwise(&[1.0, 2e-3], &[1.0, 0.0], 1e-3), 2.0);
    }
}
