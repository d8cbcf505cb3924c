//! # odesens-sensitivity
//!
//! Derivatives of ODE solutions computed by `odesens-solver`'s Runge–Kutta methods (forward
//! sensitivities, the discrete adjoint and gradient checks for explicit and implicit methods alike; the
//! continuous adjoint, H·v and the cost model for explicit ones):
//!
//! - [`forward_sensitivities`] / [`forward_gradient`]: tangents ∂u/∂θ propagated stage by stage
//!   (cost grows with the number of directions);
//! - [`adjoint_gradient`]: the exact discrete adjoint, the gradient of a scalar objective with respect to
//!   every parameter and initial value at a cost independent of their number, with checkpointing
//!   ([`Checkpointing`]: keep-all, uniform, binomial, memory budget);
//! - [`check_gradient`]: any gradient against central finite differences;
//! - [`CostModel`]: which mode is cheaper for a model, from measured kernel costs and the number of
//!   directions.
//!
//! Both methods differentiate the *computed* solution (the accepted step sequence frozen), so they agree
//! with each other to round-off. All model derivatives come from [`derivatives`]: forward-mode AD
//! through the model's generic `rhs` for tangents ([`lanes`]), reverse-mode AD on a tape for the
//! adjoint's vector–Jacobian products ([`tape`]), or the model's hand-written `jvp`/`vjp`.
//!
//! ```
//! use odesens_sensitivity::{Checkpointing, SquaredNormAt, adjoint_gradient, forward_gradient};
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
//! let adjoint = adjoint_gradient(&problem, &options, &objective, Checkpointing::KeepAll).unwrap();
//! let forward = forward_gradient(&problem, &options, &objective).unwrap();
//! let g = 4.0 * (-1.0f64).exp();
//! assert!((adjoint.wrt_params[0] + 2.0 * g).abs() < 1e-8);
//! assert!((adjoint.wrt_params[0] - forward.wrt_params[0]).abs() < 1e-12);
//! ```
#![warn(missing_docs)]

mod adjoint;
mod common;
mod continuous;
pub mod derivatives;
mod error;
mod forward;
mod gradient_check;
mod hessian;
mod implicit;
pub mod lanes;
mod mode;
mod objective;
mod scalar_impls;
pub mod tape;

pub use adjoint::{
    AdjointSettings, AdjointTrajectory, Checkpointing, adjoint_gradient, adjoint_gradient_with,
    binomial_recomputations,
};
pub use common::{Gradient, SensitivityStats};
pub use continuous::{
    BackwardStats, ContinuousGradient, ContinuousSettings, backsolve_adjoint_gradient,
    continuous_adjoint_gradient,
};
pub use error::SensitivityError;
pub use forward::{
    DirectionalDerivatives, Directions, ForwardSensitivities, ForwardSettings,
    forward_directional_derivatives, forward_gradient, forward_sensitivities,
    forward_sensitivities_with,
};
pub use gradient_check::{GradientCheck, check_gradient, objective_value};
pub use hessian::{HessianVectorProduct, hessian_vector_product};
pub use mode::{CostModel, Mode, ModePrediction};
pub use objective::{
    ComponentAt, IntegralOfSquare, LeastSquares, Objective, SquaredNormAt, WeightedSumAt,
};

/// Re-export of the solver crate.
pub use odesens_solver as solver;
