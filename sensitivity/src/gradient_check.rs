//! Checking any gradient against central finite differences, for users' own models too.

use ndarray::Array1;
use odesens_solver::{EventLocator, OdeProblem, OdeSystem, SolverOptions};
use serde::Serialize;

use crate::common::{Gradient, check_objective, derivative_options, forward_pass};
use crate::error::SensitivityError;
use crate::objective::Objective;
use crate::step_diff::{StepDiff, WithStepper, dispatch};

/// Finite-difference estimates and their comparison with a gradient.
#[derive(Debug, Clone, Serialize)]
pub struct GradientCheck {
    /// Central differences of G with respect to each parameter.
    pub fd_params: Array1<f64>,
    /// Central differences of G with respect to each initial value.
    pub fd_u0: Array1<f64>,
    /// |gradient − fd| / max(|gradient|, |fd|, 1e-12 · largest |fd|), per parameter.
    pub rel_error_params: Array1<f64>,
    /// The same per initial value.
    pub rel_error_u0: Array1<f64>,
    /// The largest relative error.
    pub max_rel_error: f64,
    /// The step used per parameter, then per initial value.
    pub steps: Array1<f64>,
}

/// G(p, u0) along a solve with the same settings as the derivative computations (observation times as
/// tstops).
///
/// # Errors
/// Solver and objective errors.
pub fn objective_value<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
) -> Result<f64, SensitivityError> {
    if crate::running::augments(problem, objective) {
        // The same definition of ∫ r dt as the gradients' with events.
        return crate::running::with_running_cost(problem, options, objective, |p, o, obj| {
            value_of(p, o, obj)
        });
    }
    value_of(problem, options, objective)
}

/// [`objective_value`] without the augmented path for running costs with events.
fn value_of<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
) -> Result<f64, SensitivityError> {
    check_objective(problem, objective)?;
    let opts = derivative_options(problem, options, &[objective.observation_times()])?;
    let (p, u0) = (problem.params().to_vec(), problem.u0().to_vec());
    let span = (problem.t0(), &u0[..]);
    dispatch(
        opts.method,
        Value {
            problem,
            options: &opts,
            objective,
            span,
            p: &p,
        },
    )
}

/// G along one forward pass, written once over the steppers.
struct Value<'a, 'j, M: OdeSystem, O: Objective> {
    problem: &'a OdeProblem<M>,
    options: &'j SolverOptions,
    objective: &'j O,
    span: (f64, &'j [f64]),
    p: &'j [f64],
}

impl<'a, M: OdeSystem, O: Objective> WithStepper<'a, M> for Value<'a, '_, M, O> {
    type Out = Result<f64, SensitivityError>;

    fn run<S: StepDiff<'a, M>>(self) -> Self::Out {
        let mut stepper = S::start(self.problem, self.options)?;
        let mut events = EventLocator::new(self.problem, self.options)?;
        let events = (!events.is_empty()).then_some(&mut events);
        let (value, _, _) = forward_pass(
            &mut stepper,
            self.objective,
            self.p,
            self.span,
            events,
            |_, _, _| {},
        )?;
        Ok(value)
    }
}

/// Compares `gradient` with central finite differences (G(θ + δ) − G(θ − δ)) / 2δ, one pair of solves per
/// parameter and initial value, with δ_j = `relative_step` · max(|θ_j|, 1) (`None`: ε^{1/3} ≈ 6e-6, which
/// balances truncation against round-off). The perturbed solves choose their own steps, so the
/// differences carry the solver's error divided by δ: use tight tolerances (rtol ≲ 1e-10) when checking.
///
/// # Errors
/// Solver and objective errors; [`SensitivityError::DimensionMismatch`] if `gradient` does not match
/// the problem.
pub fn check_gradient<M: OdeSystem + Clone, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    gradient: &Gradient,
    relative_step: Option<f64>,
) -> Result<GradientCheck, SensitivityError> {
    let (n, np) = (problem.n_states(), problem.model().n_params());
    if gradient.wrt_params.len() != np {
        return Err(SensitivityError::DimensionMismatch {
            what: "gradient wrt params",
            expected: np,
            got: gradient.wrt_params.len(),
        });
    }
    if gradient.wrt_u0.len() != n {
        return Err(SensitivityError::DimensionMismatch {
            what: "gradient wrt u0",
            expected: n,
            got: gradient.wrt_u0.len(),
        });
    }
    let rel = relative_step.unwrap_or(f64::EPSILON.cbrt());
    let mut fd = vec![0.0; np + n];
    let mut steps = vec![0.0; np + n];
    for j in 0..np + n {
        let (mut plus_p, mut minus_p) = (problem.params().clone(), problem.params().clone());
        let (mut plus_u, mut minus_u) = (problem.u0().clone(), problem.u0().clone());
        let x = if j < np {
            problem.params()[j]
        } else {
            problem.u0()[j - np]
        };
        let delta = rel * x.abs().max(1.0);
        if j < np {
            plus_p[j] += delta;
            minus_p[j] -= delta;
        } else {
            plus_u[j - np] += delta;
            minus_u[j - np] -= delta;
        }
        let span = (problem.t0(), problem.t_end());
        let g_plus = objective_value(
            &OdeProblem::new(problem.model().clone(), plus_u, plus_p, span)?,
            options,
            objective,
        )?;
        let g_minus = objective_value(
            &OdeProblem::new(problem.model().clone(), minus_u, minus_p, span)?,
            options,
            objective,
        )?;
        fd[j] = (g_plus - g_minus) / (2.0 * delta);
        steps[j] = delta;
    }
    let scale = fd.iter().fold(0.0f64, |m, x| m.max(x.abs())) * 1e-12;
    let exact: Vec<f64> = gradient
        .wrt_params
        .iter()
        .chain(gradient.wrt_u0.iter())
        .copied()
        .collect();
    let rel_err: Vec<f64> = exact
        .iter()
        .zip(&fd)
        .map(|(g, f)| (g - f).abs() / g.abs().max(f.abs()).max(scale).max(f64::MIN_POSITIVE))
        .collect();
    let max_rel_error = rel_err.iter().fold(0.0f64, |m, &x| m.max(x));
    Ok(GradientCheck {
        fd_params: Array1::from(fd[..np].to_vec()),
        fd_u0: Array1::from(fd[np..].to_vec()),
        rel_error_params: Array1::from(rel_err[..np].to_vec()),
        rel_error_u0: Array1::from(rel_err[np..].to_vec()),
        max_rel_error,
        steps: Array1::from(steps),
    })
}
