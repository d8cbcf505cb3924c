use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeProblem, OdeSystem, Scalar};

use super::DoublePendulum;

/// The course's double pendulum driven at its upper joint by a torque with P Fourier coefficients: the
/// model family whose parameter count can be raised, for the forward-versus-adjoint cost comparison.
///
/// State u = [θ1, θ2, θ̇1, θ̇2] as in [`DoublePendulum`], with the course's fixed l1 = l2 = 1,
/// m1 = m2 = 0.1, g = 9.80665; parameters p = [a_1, …, a_P], the torque
/// τ(t) = Σ_k a_k sin(k ω t) (N·m, ω = 1 rad/s) acting on θ1. It enters the first row of M θ̈ = r (the
/// θ1 Lagrange equation divided by l1) as r1 += τ/l1. The sines come from the Chebyshev recurrence
/// sin((k+1)x) = 2 cos x sin(kx) − sin((k−1)x) in f64 (t is never differentiated), so one rhs costs
/// O(P) operations on the scalar type: a forward-mode tangent block costs O(P) per direction and the
/// forward gradient O(P²), a reverse-mode vjp O(P).
#[derive(Debug, Clone, Copy)]
pub struct DrivenDoublePendulum {
    /// Number of Fourier coefficients P (≥ 1).
    pub terms: usize,
}

impl DrivenDoublePendulum {
    /// Angular frequency of the first harmonic, rad/s.
    pub const OMEGA: f64 = 1.0;

    /// The default coefficients a_k = 0.02/k N·m (a gentle drive).
    pub fn default_params(terms: usize) -> Vec<f64> {
        (1..=terms).map(|k| 0.02 / k as f64).collect()
    }

    /// The course's initial state u0 = [2, 2, 0, 0] on [0, t_end] with [`Self::default_params`].
    ///
    /// # Errors
    /// [`odesens_solver::SolverError::InvalidTimeSpan`] for a bad `t_end`.
    pub fn problem(
        terms: usize,
        t_end: f64,
    ) -> Result<OdeProblem<DrivenDoublePendulum>, odesens_solver::SolverError> {
        OdeProblem::new(
            DrivenDoublePendulum { terms },
            vec![2.0, 2.0, 0.0, 0.0],
            Self::default_params(terms),
            (0.0, t_end),
        )
    }
}

impl OdeSystem for DrivenDoublePendulum {
    fn n_states(&self) -> usize {
        4
    }
    fn n_params(&self) -> usize {
        self.terms
    }
    fn rhs<S: Scalar>(&self, t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let (l1, l2, m1, m2, g) = (1.0, 1.0, 0.1, 0.1, DoublePendulum::G);
        // τ = Σ a_k sin(k ω t).
        let x = Self::OMEGA * t.re();
        let (s1, c1) = x.sin_cos();
        let (mut s_prev, mut s_k) = (0.0, s1);
        let mut tau = S::zero();
        for a in p.iter() {
            tau += *a * s_k;
            let next = 2.0 * c1 * s_k - s_prev;
            s_prev = s_k;
            s_k = next;
        }
        let (t1, t2, w1, w2) = (u[0], u[1], u[2], u[3]);
        let (sd, cd) = (t1 - t2).sin_cos();
        let m = m1 + m2;
        let (a, b, c, d) = (l1 * m, cd * (m2 * l2), cd * l1, l2);
        let r1 = -(w2 * w2 * sd * (m2 * l2)) - t1.sin() * (g * m) + tau * (1.0 / l1);
        let r2 = w1 * w1 * sd * l1 - t2.sin() * g;
        let inv_det = (-(b * c) + a * d).recip();
        du[0] = w1;
        du[1] = w2;
        du[2] = (r1 * d - b * r2) * inv_det;
        du[3] = (r2 * a - c * r1) * inv_det;
    }
}
