use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeSystem, Scalar};

/// The Kepler two-body problem q'' = −q/‖q‖³ in the plane, u = [q1, q2, q1', q2'], no parameters.
///
/// From [`Kepler::u0`]`(e)` (perihelion of an orbit of eccentricity e, period 2π) the exact solution is
/// q1 = cos E − e, q2 = √(1−e²) sin E, q1' = −sin E/(1 − e cos E), q2' = √(1−e²) cos E/(1 − e cos E), where
/// E solves Kepler's equation E − e sin E = t (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.10).
/// A nonlinear system with a closed-form solution: the convergence tests' problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kepler;

impl Kepler {
    /// Initial value at perihelion for eccentricity `e` (0 ≤ e < 1).
    pub fn u0(e: f64) -> [f64; 4] {
        [1.0 - e, 0.0, 0.0, ((1.0 + e) / (1.0 - e)).sqrt()]
    }

    /// The exact state at time `t` (from [`Kepler::u0`] at t = 0).
    pub fn exact(e: f64, t: f64) -> [f64; 4] {
        // Newton's method on E − e sin E − t = 0 from E = t (converges for e < 1 in a few steps).
        let mut big_e = t;
        for _ in 0..50 {
            let f = big_e - e * big_e.sin() - t;
            let step = f / (1.0 - e * big_e.cos());
            big_e -= step;
            if step.abs() < 1e-16 * big_e.abs().max(1.0) {
                break;
            }
        }
        let (s, c) = big_e.sin_cos();
        let r = (1.0 - e * e).sqrt();
        let d = 1.0 - e * c;
        [c - e, r * s, -s / d, r * c / d]
    }
}

impl OdeSystem for Kepler {
    fn n_states(&self) -> usize {
        4
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, _p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let r2 = u[0] * u[0] + u[1] * u[1];
        let r3 = r2 * r2.sqrt();
        du[0] = u[2];
        du[1] = u[3];
        du[2] = -u[0] / r3;
        du[3] = -u[1] / r3;
    }
}
