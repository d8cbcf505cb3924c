use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeSystem, Scalar};

/// Lotka–Volterra predator–prey: x' = αx − βxy, y' = δxy − γy, p = [α, β, δ, γ].
///
/// The quantity V = δx − γ ln x + βy − α ln y is conserved.
#[derive(Debug, Clone, Copy, Default)]
pub struct LotkaVolterra;

impl LotkaVolterra {
    /// The parameters of the SciML tutorials: [1.5, 1, 3, 1].
    pub fn classic_params() -> Vec<f64> {
        vec![1.5, 1.0, 3.0, 1.0]
    }

    /// The conserved quantity V(x, y).
    pub fn invariant(u: &[f64], p: &[f64]) -> f64 {
        let (x, y) = (u[0], u[1]);
        p[2] * x - p[3] * x.ln() + p[1] * y - p[0] * y.ln()
    }
}

impl OdeSystem for LotkaVolterra {
    fn n_states(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        4
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let (x, y) = (u[0], u[1]);
        du[0] = p[0] * x - p[1] * x * y;
        du[1] = p[2] * x * y - p[3] * y;
    }
}
