use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeSystem, Scalar};

/// The Arenstorf orbit: the restricted three-body problem (Earth, Moon, satellite) in rotating
/// coordinates, p = \[μ\] (Moon's mass fraction), u = [x, y, x', y'] (Hairer, Nørsett & Wanner,
/// *Solving ODEs I*, §II.0, eq. (0.1)):
/// x'' = x + 2y' − μ'(x + μ)/D1 − μ(x − μ')/D2, y'' = y − 2x' − μ' y/D1 − μ y/D2,
/// D1 = ((x + μ)² + y²)^{3/2}, D2 = ((x − μ')² + y²)^{3/2}, μ' = 1 − μ.
/// From [`Arenstorf::U0`] the orbit is periodic with period [`Arenstorf::PERIOD`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Arenstorf;

impl Arenstorf {
    /// μ = 0.012277471.
    pub const MU: f64 = 0.012277471;
    /// The periodic orbit's initial value.
    #[allow(clippy::excessive_precision)]
    pub const U0: [f64; 4] = [0.994, 0.0, 0.0, -2.00158510637908252240537862224];
    /// Its period.
    #[allow(clippy::excessive_precision)]
    pub const PERIOD: f64 = 17.0652165601579625588917206249;
}

impl OdeSystem for Arenstorf {
    fn n_states(&self) -> usize {
        4
    }
    fn n_params(&self) -> usize {
        1
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let mu = p[0];
        let mu1 = S::one() - mu;
        let (x, y, vx, vy) = (u[0], u[1], u[2], u[3]);
        let r1 = (x + mu) * (x + mu) + y * y;
        let r2 = (x - mu1) * (x - mu1) + y * y;
        let d1 = r1 * r1.sqrt();
        let d2 = r2 * r2.sqrt();
        du[0] = vx;
        du[1] = vy;
        du[2] = x + vy * 2.0 - mu1 * (x + mu) / d1 - mu * (x - mu1) / d2;
        du[3] = y - vx * 2.0 - mu1 * y / d1 - mu * y / d2;
    }
}
