//! Scalar functionals of a solution: G(p, u0) = Σ_k g_k(t_k, u(t_k), p) + ∫_{t0}^{T} r(t, u, p) dt.
//!
//! Observation times t_k become tstops of the solve, so u(t_k) is a step value (no interpolation) and the
//! adjoint λ jumps by ∂g_k/∂u there. A terminal cost is an observation at T. The integral is computed
//! with the solve's own stages, q_{n+1} = q_n + h Σ_i b_i r(t_n + c_i h, Y_i, p), so that its gradient is
//! exact for the discrete scheme.

use ndarray::{Array2, ArrayView1};
use odesens_solver::Scalar;

use crate::error::SensitivityError;

/// A scalar objective; generic over the scalar type so that its gradients come by AD.
///
/// # Requirements
/// Observation times sorted in the direction of integration, inside the span (t0 allowed).
pub trait Objective: Sync {
    /// The observation times t_k.
    fn observation_times(&self) -> &[f64];

    /// g_k(t_k, u, p) for observation `k`.
    fn observation<S: Scalar>(&self, k: usize, t: f64, u: ArrayView1<S>, p: ArrayView1<S>) -> S;

    /// Whether the integral term ∫ r dt is present (default: no).
    fn has_running_cost(&self) -> bool {
        false
    }

    /// The integrand r(t, u, p) (default: zero).
    fn running_cost<S: Scalar>(&self, t: f64, u: ArrayView1<S>, p: ArrayView1<S>) -> S {
        let _ = (t, p);
        u[0] * S::from(0.0)
    }

    /// Checks the objective against a system of `n` states (the default accepts any).
    ///
    /// # Errors
    /// [`SensitivityError::DimensionMismatch`] when the objective was built for another size.
    fn check(&self, n: usize) -> Result<(), SensitivityError> {
        let _ = n;
        Ok(())
    }
}

/// One component of the state at time t: G = u_c(t).
#[derive(Debug, Clone)]
pub struct ComponentAt {
    times: [f64; 1],
    component: usize,
}

impl ComponentAt {
    /// G = u_component(t).
    pub fn new(component: usize, t: f64) -> Self {
        Self {
            times: [t],
            component,
        }
    }
}

impl Objective for ComponentAt {
    fn observation_times(&self) -> &[f64] {
        &self.times
    }
    fn observation<S: Scalar>(&self, _k: usize, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        u[self.component]
    }
    fn check(&self, n: usize) -> Result<(), SensitivityError> {
        if self.component >= n {
            return Err(SensitivityError::DimensionMismatch {
                what: "ComponentAt component (must be < n)",
                expected: n,
                got: self.component,
            });
        }
        Ok(())
    }
}

/// A weighted sum of the state at time t: G = wᵀu(t).
#[derive(Debug, Clone)]
pub struct WeightedSumAt {
    times: [f64; 1],
    weights: Vec<f64>,
}

impl WeightedSumAt {
    /// G = Σ_i w_i u_i(t).
    pub fn new(weights: Vec<f64>, t: f64) -> Self {
        Self {
            times: [t],
            weights,
        }
    }
}

impl Objective for WeightedSumAt {
    fn observation_times(&self) -> &[f64] {
        &self.times
    }
    fn observation<S: Scalar>(&self, _k: usize, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        u.iter()
            .zip(&self.weights)
            .fold(S::from(0.0), |acc, (&x, &w)| acc + x * w)
    }
    fn check(&self, n: usize) -> Result<(), SensitivityError> {
        if self.weights.len() != n {
            return Err(SensitivityError::DimensionMismatch {
                what: "WeightedSumAt weights",
                expected: n,
                got: self.weights.len(),
            });
        }
        Ok(())
    }
}

/// The squared norm of the state at time t: G = ‖u(t)‖² (the course's adjoint example).
#[derive(Debug, Clone)]
pub struct SquaredNormAt {
    times: [f64; 1],
}

impl SquaredNormAt {
    /// G = ‖u(t)‖².
    pub fn new(t: f64) -> Self {
        Self { times: [t] }
    }
}

impl Objective for SquaredNormAt {
    fn observation_times(&self) -> &[f64] {
        &self.times
    }
    fn observation<S: Scalar>(&self, _k: usize, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        u.iter().fold(S::from(0.0), |acc, &x| acc + x * x)
    }
}

/// Least squares against data: G = Σ_k ½ Σ_i (u_i(t_k) − d_ki)².
#[derive(Debug, Clone)]
pub struct LeastSquares {
    times: Vec<f64>,
    data: Array2<f64>,
}

impl LeastSquares {
    /// Data `data[[k, i]]` observed at `times[k]`.
    ///
    /// # Errors
    /// [`SensitivityError::DimensionMismatch`] when the data has not one row per time.
    pub fn new(times: Vec<f64>, data: Array2<f64>) -> Result<Self, SensitivityError> {
        if data.nrows() != times.len() {
            return Err(SensitivityError::DimensionMismatch {
                what: "LeastSquares data rows",
                expected: times.len(),
                got: data.nrows(),
            });
        }
        Ok(Self { times, data })
    }
}

impl Objective for LeastSquares {
    fn observation_times(&self) -> &[f64] {
        &self.times
    }
    fn observation<S: Scalar>(&self, k: usize, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        let row = self.data.row(k);
        u.iter()
            .zip(row.iter())
            .fold(S::from(0.0), |acc, (&x, &d)| {
                let r = x - d;
                acc + r * r * 0.5
            })
    }
    fn check(&self, n: usize) -> Result<(), SensitivityError> {
        if self.data.ncols() != n {
            return Err(SensitivityError::DimensionMismatch {
                what: "LeastSquares data columns",
                expected: n,
                got: self.data.ncols(),
            });
        }
        Ok(())
    }
}

/// The integral of one component squared: G = ∫_{t0}^{T} u_c(t)² dt.
#[derive(Debug, Clone)]
pub struct IntegralOfSquare {
    component: usize,
}

impl IntegralOfSquare {
    /// G = ∫ u_component² dt.
    pub fn new(component: usize) -> Self {
        Self { component }
    }
}

impl Objective for IntegralOfSquare {
    fn observation_times(&self) -> &[f64] {
        &[]
    }
    fn observation<S: Scalar>(&self, _k: usize, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        u[0] * S::from(0.0)
    }
    fn has_running_cost(&self) -> bool {
        true
    }
    fn running_cost<S: Scalar>(&self, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        u[self.component] * u[self.component]
    }
    fn check(&self, n: usize) -> Result<(), SensitivityError> {
        if self.component >= n {
            return Err(SensitivityError::DimensionMismatch {
                what: "IntegralOfSquare component (must be < n)",
                expected: n,
                got: self.component,
            });
        }
        Ok(())
    }
}
