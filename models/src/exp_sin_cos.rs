use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeSystem, Scalar};

/// A nonlinear, non-autonomous system with a closed-form solution (Hairer, Nørsett & Wanner,
/// *Solving ODEs I*, §II.4, eq. (4.7)): y1' = 2t y1 ln y2, y2' = −2t y2 ln y1, no parameters;
/// from y(0) = (1, e) the solution is y1 = exp(sin t²), y2 = exp(cos t²). The convergence tests' problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExpSinCos;

impl ExpSinCos {
    /// The initial value (1, e) at t = 0.
    pub fn u0() -> [f64; 2] {
        [1.0, std::f64::consts::E]
    }

    /// The exact solution at time t.
    pub fn exact(t: f64) -> [f64; 2] {
        let (s, c) = (t * t).sin_cos();
        [s.exp(), c.exp()]
    }
}

impl OdeSystem for ExpSinCos {
    fn n_states(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(&self, t: S, u: ArrayView1<S>, _p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        du[0] = t * u[0] * u[1].ln() * 2.0;
        du[1] = -(t * u[1] * u[0].ln() * 2.0);
    }
}
