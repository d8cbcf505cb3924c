//! # odesens-sensitivity
//!
//! Derivatives of ODE solutions computed by `odesens-solver`'s methods (forward sensitivities, the
//! discrete adjoint, the interpolating continuous adjoint (forward segments and backward solve) and
//! gradient checks for explicit and implicit methods alike; the backsolve adjoint's backward solve, H·v
//! and the cost model with explicit methods):
//!
//! - [`gradient`]`(&problem, &options, &objective, &algorithm)`: the one entry point for ∇G with respect
//!   to every parameter and initial value; the [`SensitivityAlgorithm`] is a value — forward
//!   sensitivities, the exact discrete adjoint with its checkpointing ([`Checkpointing`]: keep-all,
//!   uniform, binomial, memory budget), the interpolating or backsolve continuous adjoint, or `Auto`;
//! - [`forward_sensitivities`]: the tangents ∂u(t)/∂θ themselves (cost grows with the number of
//!   directions); [`forward_directional_derivatives`]: dG along chosen directions;
//! - [`hessian_vector_product`]: H·v by forward-over-adjoint;
//! - [`check_gradient`]: any gradient against central finite differences;
//! - [`CostModel`]: which mode is cheaper for a model, from measured kernel costs and the number of
//!   directions.
//!
//! Forward and discrete adjoint differentiate the *computed* solution (the accepted step sequence frozen), so they agree
//! with each other to round-off. Each stepper family differentiates its own step once (the tangent and
//! the adjoint of one step, in `step_diff`: explicit RK, ESDIRK, Radau IIA); the forward, discrete-adjoint
//! and checkpointing drivers are written once over it. All model derivatives come from [`derivatives`]: forward-mode AD
//! through the model's generic `rhs` for tangents ([`lanes`]), reverse-mode AD on a tape for the
//! adjoint's vector–Jacobian products ([`tape`]), or the model's hand-written `jvp`/`vjp`.
//!
//! ```
//! use odesens_sensitivity::{Checkpointing, SquaredNormAt, SensitivityAlgorithm, gradient};
//! use odesens_solver::{OdeProblem, OdeSystem, Scalar, SolverOptions};
//! use ndarray::{ArrayView1, ArrayViewMut1};
//!
//! /// du/dt = −k u.
//! struct Decay;
//! impl OdeSystem for Decay {
//!     fn n_states(&self) -> usize { 1 }
//!     fn n_params(&self) -> usize { 1 }
//!     fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
//!         du[0] = -p[0] * u[0];
//!     }
//! }
//!
//! let problem = OdeProblem::new(Decay, vec![2.0], vec![0.5], (0.0, 1.0)).unwrap();
//! let options = SolverOptions::default().tol(1e-10);
//! // G = u(1)² = 4 e^{−1}: dG/dk = −2·G, dG/du0 = 2 u(1) e^{−k}.
//! let objective = SquaredNormAt::new(1.0);
//! let keep_all = SensitivityAlgorithm::adjoint(Checkpointing::KeepAll);
//! let adjoint = gradient(&problem, &options, &objective, &keep_all).unwrap();
//! let forward = gradient(&problem, &options, &objective, &SensitivityAlgorithm::Forward).unwrap();
//! let g = 4.0 * (-1.0f64).exp();
//! assert!((adjoint.wrt_params[0] + 2.0 * g).abs() < 1e-8);
//! assert!((adjoint.wrt_params[0] - forward.wrt_params[0]).abs() < 1e-12);
//! ```
#![warn(missing_docs)]

pub mod ad;
mod algorithm;
mod checkpointing;
mod common;
mod continuous;
mod cost_model;
mod discrete_adjoint;
mod error;
mod events;
mod forward;
mod gradient_check;
mod hessian;
mod objective;
mod running;
mod step_diff;

pub use ad::derivatives::{self, DerivativeCounts, VjpMode};
pub use ad::{lanes, tape};
pub use algorithm::{SensitivityAlgorithm, gradient};
pub use checkpointing::{Checkpointing, binomial_recomputations};
pub use common::{AdjointTrajectory, Gradient, SensitivityStats};
pub use continuous::{BackwardStats, ContinuousSettings};
pub use cost_model::{CostModel, Mode, ModePrediction};
pub use discrete_adjoint::AdjointSettings;
pub use error::SensitivityError;
pub use forward::{
    DirectionalDerivatives, Directions, ForwardSensitivities, ForwardSettings,
    forward_directional_derivatives, forward_sensitivities,
};
pub use gradient_check::{GradientCheck, check_gradient, objective_value};
pub use hessian::{HessianVectorProduct, hessian_vector_product};
pub use objective::{
    ComponentAt, EventTime, EventTimeMisfit, Firing, IntegralOfSquare, LeastSquares, Objective,
    SquaredNormAt, WeightedSumAt,
};

/// Re-export of the solver crate.
pub use odesens_solver as solver;
