use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeSystem, Scalar};

/// Exponential decay du/dt = −k u, p = \[k\]; exact solution u(t) = u0 e^{−k (t − t0)}.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExponentialDecay;

impl ExponentialDecay {
    /// The exact solution at time t from u(t0) = u0.
    pub fn exact(u0: f64, k: f64, t0: f64, t: f64) -> f64 {
        u0 * (-k * (t - t0)).exp()
    }
}

impl OdeSystem for ExponentialDecay {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        1
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        du[0] = -p[0] * u[0];
    }
}

/// The damped linear oscillator x'' + 2ζω x' + ω² x = 0 as a first-order system u = [x, x'], p = [ω, ζ].
///
/// For 0 ≤ ζ < 1 (underdamped), with ω_d = ω √(1 − ζ²):
/// x(t) = e^{−ζω t} (x0 cos ω_d t + (v0 + ζω x0)/ω_d sin ω_d t) (t measured from t0).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinearOscillator;

impl LinearOscillator {
    /// The exact state [x, x'] at time t from u0 = [x0, v0] at t0 (underdamped, ζ < 1).
    pub fn exact(u0: [f64; 2], omega: f64, zeta: f64, t0: f64, t: f64) -> [f64; 2] {
        let tau = t - t0;
        let wd = omega * (1.0 - zeta * zeta).sqrt();
        let sigma = zeta * omega;
        let (x0, v0) = (u0[0], u0[1]);
        let a = x0;
        let b = (v0 + sigma * x0) / wd;
        let e = (-sigma * tau).exp();
        let (s, c) = (wd * tau).sin_cos();
        let x = e * (a * c + b * s);
        let v = e * (-sigma * (a * c + b * s) + (-a * wd * s + b * wd * c));
        [x, v]
    }
}

impl OdeSystem for LinearOscillator {
    fn n_states(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        2
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let (w, z) = (p[0], p[1]);
        du[0] = u[1];
        du[1] = -(w * w) * u[0] - (z * w) * u[1] * 2.0;
    }
}
