use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeSystem, Scalar};

/// The double pendulum of MIT 18.063 (*Matrix Calculus*, notes/double-pendulum-sensitivity.ipynb).
///
/// State u = [θ1, θ2, θ̇1, θ̇2] (angles from the downward vertical), parameters p = [l1, l2, m1, m2, g].
/// With Δ = θ1 − θ2,
/// M = [[l1 (m1 + m2), m2 l2 cos Δ], [l1 cos Δ, l2]],
/// r = [−m2 l2 θ̇2² sin Δ − g (m1 + m2) sin θ1, l1 θ̇1² sin Δ − g sin θ2],
/// [θ̈1, θ̈2] = M⁻¹ r (Cramer's rule; det M = l1 l2 (m1 + m2 sin² Δ) > 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct DoublePendulum;

impl DoublePendulum {
    /// Standard gravity used by the course, m/s².
    pub const G: f64 = 9.80665;

    /// The course's parameters: l1 = l2 = 1, m1 = m2 = 0.1, g = 9.80665.
    pub fn course_params() -> Vec<f64> {
        vec![1.0, 1.0, 0.1, 0.1, Self::G]
    }

    /// The benchmark parameters: l1 = l2 = m1 = m2 = 1, g = 9.80665.
    pub fn bench_params() -> Vec<f64> {
        vec![1.0, 1.0, 1.0, 1.0, Self::G]
    }

    /// Total mechanical energy T + V (conserved by the exact flow).
    pub fn energy(u: &[f64], p: &[f64]) -> f64 {
        let (t1, t2, w1, w2) = (u[0], u[1], u[2], u[3]);
        let (l1, l2, m1, m2, g) = (p[0], p[1], p[2], p[3], p[4]);
        let kinetic = 0.5 * (m1 + m2) * l1 * l1 * w1 * w1
            + 0.5 * m2 * l2 * l2 * w2 * w2
            + m2 * l1 * l2 * w1 * w2 * (t1 - t2).cos();
        let potential = -(m1 + m2) * g * l1 * t1.cos() - m2 * g * l2 * t2.cos();
        kinetic + potential
    }

    /// Bob positions (x1, y1, x2, y2) for state u and lengths l1, l2.
    pub fn positions(u: &[f64], l1: f64, l2: f64) -> [f64; 4] {
        let x1 = l1 * u[0].sin();
        let y1 = -l1 * u[0].cos();
        [x1, y1, x1 + l2 * u[1].sin(), y1 - l2 * u[1].cos()]
    }
}

impl OdeSystem for DoublePendulum {
    fn n_states(&self) -> usize {
        4
    }
    fn n_params(&self) -> usize {
        5
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let (t1, t2, w1, w2) = (u[0], u[1], u[2], u[3]);
        let (l1, l2, m1, m2, g) = (p[0], p[1], p[2], p[3], p[4]);
        let (sd, cd) = (t1 - t2).sin_cos();
        let m = m1 + m2;
        // M = [[a, b], [c, d]], r = [r1, r2]
        let a = l1 * m;
        let b = m2 * l2 * cd;
        let c = l1 * cd;
        let d = l2;
        let r1 = -(m2 * l2 * w2 * w2 * sd) - g * m * t1.sin();
        let r2 = l1 * w1 * w1 * sd - g * t2.sin();
        let inv_det = (a * d - b * c).recip();
        du[0] = w1;
        du[1] = w2;
        du[2] = (d * r1 - b * r2) * inv_det;
        du[3] = (a * r2 - c * r1) * inv_det;
    }
}
