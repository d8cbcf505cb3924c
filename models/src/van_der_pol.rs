use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeSystem, Scalar};

/// The Van der Pol oscillator u1' = u2, u2' = μ (1 − u1²) u2 − u1, p = \[μ\].
///
/// Non-stiff for μ of order 1 (a limit cycle of period ≈ 6.6633 at μ = 1); stiff for large μ.
#[derive(Debug, Clone, Copy, Default)]
pub struct VanDerPol;

impl OdeSystem for VanDerPol {
    fn n_states(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        1
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        du[0] = u[1];
        du[1] = p[0] * (S::one() - u[0] * u[0]) * u[1] - u[0];
    }
}
