//! Sensitivity algorithms as values, and the one entry point [`gradient`].
//!
//! As SciMLSensitivity's `sensealg = InterpolatingAdjoint(...)` and diffrax's `adjoint=`, the way a
//! gradient is computed is an argument, not a function name:
//!
//! | [`SensitivityAlgorithm`] | computes | cost grows with | memory |
//! |---|---|---|---|
//! | `Forward` | tangents ∂u/∂θ for all n + p directions (exact for the computed solution) | n + p | O(n·(n + p)) |
//! | `DiscreteAdjoint(AdjointSettings)` | the exact discrete adjoint (agrees with `Forward` to round-off) | outputs only | checkpoints ([`Checkpointing`]) |
//! | `InterpolatingAdjoint(ContinuousSettings)` | the adjoint ODE backwards with its own steps, u from recomputed dense output | outputs only | checkpoints + one segment |
//! | `BacksolveAdjoint(ContinuousSettings)` | u integrated backwards beside λ (unstable for chaotic/dissipative flows) | outputs only | O(n + p) |
//! | `Auto` | asks [`CostModel`] which of `Forward` and the keep-all discrete adjoint is faster | | |

use odesens_solver::{OdeProblem, OdeSystem, SolverOptions};

use crate::checkpointing::Checkpointing;
use crate::common::Gradient;
use crate::continuous::{ContinuousSettings, continuous_gradient};
use crate::cost_model::{CostModel, Mode};
use crate::discrete_adjoint::{AdjointSettings, adjoint_gradient};
use crate::error::SensitivityError;
use crate::forward::forward_gradient;
use crate::objective::Objective;
use crate::running;
use crate::step_diff::{Capability, StepFamily};

/// How [`gradient`] differentiates (see the module docs for the trade-offs).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum SensitivityAlgorithm {
    /// Forward sensitivities along every parameter and initial value (np + n tangents, in parallel
    /// blocks). Every method.
    Forward,
    /// The exact discrete adjoint with its checkpointing, vjp route and optional λ(t) record. Every
    /// method.
    DiscreteAdjoint(AdjointSettings),
    /// The continuous adjoint with u(t) interpolated from forward segments recomputed from checkpoints
    /// (CVODES' and SciMLSensitivity's `InterpolatingAdjoint`). Explicit methods (for now).
    InterpolatingAdjoint(ContinuousSettings),
    /// The continuous adjoint with u integrated backwards beside λ (`BacksolveAdjoint`): no storage, but
    /// unreliable for chaotic or dissipative systems. Explicit methods (for now).
    BacksolveAdjoint(ContinuousSettings),
    /// [`CostModel::measure`] decides between `Forward` and the keep-all discrete adjoint for this model,
    /// these settings and n + p directions, measuring each call (about 0.1–0.5 s of timing: to compute
    /// many gradients, measure once and pass [`CostModel::recommend`]'s algorithm). Implicit methods,
    /// which the cost model does not cover yet, take the discrete adjoint. The choice depends on
    /// timings, so near the crossover it can differ between runs (both answers agree to round-off).
    #[default]
    Auto,
}

impl SensitivityAlgorithm {
    /// The discrete adjoint with `checkpointing` and the default vjp route.
    pub fn adjoint(checkpointing: Checkpointing) -> Self {
        SensitivityAlgorithm::DiscreteAdjoint(AdjointSettings {
            checkpointing,
            ..Default::default()
        })
    }

    /// The interpolating continuous adjoint with default settings.
    pub fn interpolating() -> Self {
        SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default())
    }

    /// A short name ("forward", "discrete adjoint", ...).
    pub fn name(&self) -> &'static str {
        match self {
            SensitivityAlgorithm::Forward => "forward",
            SensitivityAlgorithm::DiscreteAdjoint(_) => "discrete adjoint",
            SensitivityAlgorithm::InterpolatingAdjoint(_) => "interpolating adjoint",
            SensitivityAlgorithm::BacksolveAdjoint(_) => "backsolve adjoint",
            SensitivityAlgorithm::Auto => "auto",
        }
    }
}

/// The gradient of `objective` G(p, u0) = Σ_k g_k(t_k, u(t_k), p) + ∫ r(t, u, p) dt with respect to every
/// parameter and initial value, by `algorithm`.
///
/// ```
/// use odesens_sensitivity::{Checkpointing, SensitivityAlgorithm, SquaredNormAt, gradient};
/// use odesens_solver::{OdeProblem, OdeSystem, Scalar, SolverOptions};
/// use ndarray::{ArrayView1, ArrayViewMut1};
///
/// struct Decay; // du/dt = −k u
/// impl OdeSystem for Decay {
///     fn n_states(&self) -> usize { 1 }
///     fn n_params(&self) -> usize { 1 }
///     fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
///         du[0] = -p[0] * u[0];
///     }
/// }
/// let problem = OdeProblem::new(Decay, vec![2.0], vec![0.5], (0.0, 1.0)).unwrap();
/// let options = SolverOptions::default().tol(1e-10);
/// let objective = SquaredNormAt::new(1.0);
/// let binomial = SensitivityAlgorithm::adjoint(Checkpointing::Binomial { snapshots: 4 });
/// let adjoint = gradient(&problem, &options, &objective, &binomial).unwrap();
/// let forward = gradient(&problem, &options, &objective, &SensitivityAlgorithm::Forward).unwrap();
/// assert!((adjoint.wrt_params[0] - forward.wrt_params[0]).abs() < 1e-12);
/// ```
///
/// # Errors
/// Solver errors; objective errors; invalid algorithm settings ([`SensitivityError::InvalidSetting`]);
/// [`SensitivityError::UnsupportedMethod`] where the method cannot be differentiated this way;
/// [`SensitivityError::NonFiniteDerivative`] if a tangent or adjoint becomes NaN/∞.
///
/// # Events and running costs
/// With events, a running cost ∫ r dt is integrated as one more state and differentiated through the
/// events with it (see `running`): the solve takes the same steps with explicit methods, and G's
/// integral is read on the interpolant at each event. Not with an event that stops the integration
/// ([`SensitivityError::Unsupported`]).
pub fn gradient<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    algorithm: &SensitivityAlgorithm,
) -> Result<Gradient, SensitivityError> {
    if running::augments(problem, objective) {
        let n = problem.n_states();
        return running::with_running_cost(problem, options, objective, |p, o, obj| {
            gradient_of(p, o, obj, algorithm)
        })
        .map(|g| running::strip_gradient(g, n));
    }
    gradient_of(problem, options, objective, algorithm)
}

/// [`gradient`] without the augmented path for running costs with events.
fn gradient_of<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    algorithm: &SensitivityAlgorithm,
) -> Result<Gradient, SensitivityError> {
    match algorithm {
        SensitivityAlgorithm::Forward => forward_gradient(problem, options, objective),
        SensitivityAlgorithm::DiscreteAdjoint(settings) => {
            adjoint_gradient(problem, options, objective, settings)
        }
        SensitivityAlgorithm::InterpolatingAdjoint(settings) => {
            continuous_gradient(problem, options, objective, *settings, false)
        }
        SensitivityAlgorithm::BacksolveAdjoint(settings) => {
            continuous_gradient(problem, options, objective, *settings, true)
        }
        SensitivityAlgorithm::Auto => {
            // Without the cost model's measurements (implicit methods for now) the adjoint is the
            // safe choice: its cost does not grow with the number of parameters.
            let chosen = if problem.model().n_events() > 0 {
                // The cost model does not measure events: the adjoint, whose cost does not grow
                // with the number of parameters.
                SensitivityAlgorithm::adjoint(Checkpointing::KeepAll)
            } else if StepFamily::of(options.method).supports(Capability::CostModel) {
                let directions = problem.n_states() + problem.model().n_params();
                CostModel::measure(problem, options, objective)?.recommend(directions)
            } else {
                SensitivityAlgorithm::adjoint(Checkpointing::KeepAll)
            };
            gradient_of(problem, options, objective, &chosen)
        }
    }
}

impl CostModel {
    /// The algorithm this cost model predicts to be faster for `directions` directions: `Forward`, or
    /// the keep-all discrete adjoint.
    pub fn recommend(&self, directions: usize) -> SensitivityAlgorithm {
        match self.predict(directions).recommended {
            Mode::Forward => SensitivityAlgorithm::Forward,
            Mode::Adjoint => SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        }
    }
}
