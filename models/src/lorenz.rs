use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeSystem, Scalar};

/// The Lorenz system x' = σ(y − x), y' = x(ρ − z) − y, z' = xy − βz, p = [σ, ρ, β]
/// (E. N. Lorenz, J. Atmos. Sci. 20 (1963) 130). Chaotic for the classic σ = 10, ρ = 28, β = 8/3.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lorenz;

impl Lorenz {
    /// The classic parameters [10, 28, 8/3].
    pub fn classic_params() -> Vec<f64> {
        vec![10.0, 28.0, 8.0 / 3.0]
    }
}

impl OdeSystem for Lorenz {
    fn n_states(&self) -> usize {
        3
    }
    fn n_params(&self) -> usize {
        3
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let (x, y, z) = (u[0], u[1], u[2]);
        du[0] = p[0] * (y - x);
        du[1] = x * (p[1] - z) - y;
        du[2] = x * y - p[2] * z;
    }
}
