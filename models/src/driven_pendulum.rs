use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeProblem, OdeSystem, Scalar};

use super::DoublePendulum;

/// The course's double pendulum driven at its upper joint by a torque given by P control values: the
/// model family whose parameter count can be raised, for the forward-versus-adjoint cost comparison.
///
/// State u = [θ1, θ2, θ̇1, θ̇2] as in [`DoublePendulum`], with the course's fixed l1 = l2 = 1,
/// m1 = m2 = 0.1, g = 9.80665; parameters p = [a_0, …, a_{P−1}], the torque τ(t) (N·m) at P knots spread
/// evenly over [0, `horizon`], linearly interpolated in between (held constant outside; P = 1: a constant
/// torque). τ acts on θ1: it enters the first row of M θ̈ = r (the θ1 Lagrange equation divided by l1) as
/// r1 += τ/l1.
///
/// This is a control parametrization: each parameter acts only between its neighbouring knots, so the
/// rhs costs the same for any P. The gradient with respect to all P values costs P tangents by forward
/// sensitivities, but one backward pass by the adjoint (whose vjps grow only by an O(P) copy).
#[derive(Debug, Clone, Copy)]
pub struct DrivenDoublePendulum {
    /// Number of control values P (≥ 1).
    pub knots: usize,
    /// Time of the last knot, s (> 0).
    pub horizon: f64,
}

impl DrivenDoublePendulum {
    /// The default control values a_k = 0.02 cos(0.7 k) N·m (a gentle drive).
    pub fn default_params(knots: usize) -> Vec<f64> {
        (0..knots).map(|k| 0.02 * (0.7 * k as f64).cos()).collect()
    }

    /// The course's initial state u0 = [2, 2, 0, 0] on [0, t_end], knots over [0, t_end], with
    /// [`Self::default_params`].
    ///
    /// # Errors
    /// [`odesens_solver::SolverError::InvalidTimeSpan`] for a bad `t_end`.
    pub fn problem(
        knots: usize,
        t_end: f64,
    ) -> Result<OdeProblem<DrivenDoublePendulum>, odesens_solver::SolverError> {
        OdeProblem::new(
            DrivenDoublePendulum {
                knots,
                horizon: t_end,
            },
            vec![2.0, 2.0, 0.0, 0.0],
            Self::default_params(knots),
            (0.0, t_end),
        )
    }

    /// The interior knot times, where τ has kinks: pass them as tstops so that no step straddles one.
    pub fn knot_times(&self) -> Vec<f64> {
        let last = self.knots.saturating_sub(1);
        (1..last)
            .map(|k| self.horizon * k as f64 / last as f64)
            .collect()
    }

    /// The knot interval holding t and the weight of its right end: τ(t) = (1 − w) a_k + w a_{k+1}.
    pub fn interval(&self, t: f64) -> (usize, f64) {
        if self.knots < 2 {
            return (0, 0.0);
        }
        let last = (self.knots - 1) as f64;
        let s = (t / self.horizon * last).clamp(0.0, last);
        let k = (s.floor() as usize).min(self.knots - 2);
        (k, s - k as f64)
    }
}

impl OdeSystem for DrivenDoublePendulum {
    fn n_states(&self) -> usize {
        4
    }
    fn n_params(&self) -> usize {
        self.knots
    }
    fn rhs<S: Scalar>(&self, t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let (l1, l2, m1, m2, g) = (1.0, 1.0, 0.1, 0.1, DoublePendulum::G);
        let tau = if self.knots < 2 {
            p[0]
        } else {
            let (k, w) = self.interval(t.re());
            p[k] * (1.0 - w) + p[k + 1] * w
        };
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
